/* Background uploads of a writer's sealed packs (store/upload.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/upload.h"

enum { QUEUED, RUNNING, DONE, FAILED };

struct uploader {
    store_t *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* any change of state */
    struct item { uint64_t pack; int state; } *v;
    size_t n, cap, next;        /* items; next: the first not yet taken by a worker */
    size_t busy;                /* queued + running */
    size_t done_prefix;         /* items [0, done_prefix) are DONE */
    int rc, quit;
    store_err e;
    pthread_t th[UPLOADS];
    size_t nth;
};

static void *worker(void *arg)
{
    uploader *u = arg;
    pthread_mutex_lock(&u->mu);
    for (;;) {
        while (!u->quit && u->next == u->n) pthread_cond_wait(&u->cv, &u->mu);
        if (u->next == u->n) break;   /* quit, nothing queued */
        size_t i = u->next++;
        int rc = u->rc;
        store_err e;
        if (!rc) {
            u->v[i].state = RUNNING;
            uint64_t pack = u->v[i].pack;
            pthread_mutex_unlock(&u->mu);
            rc = remote_put_pack(u->s, pack, &e);
            pthread_mutex_lock(&u->mu);
        }
        /* After a failure the rest is not sent: the snapshot fails anyway. */
        u->v[i].state = rc ? FAILED : DONE;
        if (rc && !u->rc) {
            u->rc = rc;
            u->e = e;
        }
        u->busy--;
        while (u->done_prefix < u->n && u->v[u->done_prefix].state == DONE) u->done_prefix++;
        pthread_cond_broadcast(&u->cv);
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

int uploader_new(store_t *s, uploader **out, store_err *e)
{
    uploader *u = calloc(1, sizeof *u);
    if (!u) return store_errf(e, -ENOMEM, "out of memory");
    u->s = s;
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    *out = u;
    return 0;
}

int uploader_add(uploader *u, uint64_t pack, store_err *e)
{
    pthread_mutex_lock(&u->mu);
    /* At most UPLOADS at once: the writer waits (its memory and the requests stay bounded). */
    while (!u->rc && u->busy >= UPLOADS) pthread_cond_wait(&u->cv, &u->mu);
    int rc = u->rc;
    if (rc) store_errf(e, rc, "%s", u->e.msg);
    if (!rc && u->n == u->cap) {
        size_t nc = u->cap ? 2 * u->cap : 16;
        struct item *nv = realloc(u->v, nc * sizeof *nv);
        if (!nv) rc = store_errf(e, -ENOMEM, "out of memory");
        else {
            u->v = nv;
            u->cap = nc;
        }
    }
    if (!rc) {
        u->v[u->n++] = (struct item){pack, QUEUED};
        u->busy++;
        /* One more worker while fewer than UPLOADS run (a thread that cannot start only
         * means fewer requests at once). */
        if (u->nth < UPLOADS && u->nth < u->busy && pthread_create(&u->th[u->nth], NULL, worker, u) == 0) u->nth++;
        if (!u->nth) {
            u->n--;
            u->busy--;
            rc = store_errf(e, -EAGAIN, "cannot start an upload thread");
        }
        pthread_cond_broadcast(&u->cv);
    }
    pthread_mutex_unlock(&u->mu);
    return rc;
}

int uploader_done(uploader *u, size_t *n, store_err *e)
{
    pthread_mutex_lock(&u->mu);
    *n = u->done_prefix;
    int rc = u->rc;
    if (rc) store_errf(e, rc, "%s", u->e.msg);
    pthread_mutex_unlock(&u->mu);
    return rc;
}

int uploader_wait(uploader *u, store_err *e)
{
    pthread_mutex_lock(&u->mu);
    while (u->busy) pthread_cond_wait(&u->cv, &u->mu);
    int rc = u->rc;
    if (rc) store_errf(e, rc, "%s", u->e.msg);
    pthread_mutex_unlock(&u->mu);
    return rc;
}

void uploader_free(uploader *u)
{
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    u->quit = 1;
    /* Queued items are dropped (an abort); running PUTs finish (a request is not cut). */
    if (!u->rc) {
        u->rc = -ECANCELED;
        snprintf(u->e.msg, sizeof u->e.msg, "upload cancelled");
    }
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
    for (size_t i = 0; i < u->nth; i++) pthread_join(u->th[i], NULL);
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u->v);
    free(u);
}
