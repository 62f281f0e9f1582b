/* An ingest's compression pipeline (stage.h says what it promises).
 *
 * A ring of NSLOTS groups, numbered by a running sequence number (slot = seq % NSLOTS):
 *   head <= claim <= filled <= tail <= head + NSLOTS
 *   [head, filled)   full groups, not appended yet; those below claim are taken by a
 *                    compressor (a worker, or the staging thread helping), done once
 *                    compressed
 *   [filled, tail)   the group being filled, if any (at most one)
 * Workers take the group at claim; the staging thread appends the group at head once it
 * is done, so groups reach the packs in staging order whatever order they finish in.
 * claim, filled, done and quit are under mu; head and tail belong to the staging thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "snapshotter/stage.h"
#include "store/toolbox.h"

#define NSLOTS 16u          /* 4 MiB of pages in flight: both cores busy, memory bounded */
#define MAX_WORKERS 8u

struct slot {
    uint8_t *pages;         /* STORE_GROUP_PAGES pages */
    uint8_t *frame;         /* the compressed group, bound bytes */
    ssize_t flen;           /* its length, or a negative code */
    unsigned n;             /* pages staged */
    int done;               /* compressed */
    store_id ids[STORE_GROUP_PAGES];
};

struct worker {
    snap_stage *st;
    store_cctx *c;
    pthread_t t;
};

struct snap_stage {
    store_t *s;
    store_writer *w;
    snap_stage_indexed_fn indexed;
    void *arg;
    size_t bound;
    uint8_t *pages, *frames;
    struct slot slot[NSLOTS];
    uint64_t head, claim, filled, tail;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    int quit, started;
    store_cctx *own;        /* the staging thread's, when it helps */
    struct worker workers[MAX_WORKERS];
    unsigned nworkers;
};

static void compress(snap_stage *st, struct slot *sl, store_cctx *c)
{
    sl->flen = store_group_compress(c, sl->pages, sl->n, sl->frame, st->bound);
}

static void *work(void *arg)
{
    struct worker *k = arg;
    snap_stage *st = k->st;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->quit && st->claim == st->filled) pthread_cond_wait(&st->work, &st->mu);
        if (st->quit) break;
        struct slot *sl = &st->slot[st->claim++ % NSLOTS];
        pthread_mutex_unlock(&st->mu);
        compress(st, sl, k->c);
        pthread_mutex_lock(&st->mu);
        sl->done = 1;
        pthread_cond_signal(&st->done);    /* only the staging thread waits on it */
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* One worker fewer than the store has threads (at least one): the staging thread is the
 * other compressor whenever the ring is full, and on two cores a second worker measured no
 * faster, only more CPU. A worker that cannot start only costs speed: the staging thread
 * compresses what no worker took, so zero workers still ingest. */
static void start_workers(snap_stage *st)
{
    st->started = 1;
    unsigned want = store_threads(st->s) > 1 ? store_threads(st->s) - 1 : 1;
    if (want > MAX_WORKERS) want = MAX_WORKERS;
    while (st->nworkers < want) {
        struct worker *k = &st->workers[st->nworkers];
        k->st = st;
        k->c = store_cctx_new();
        if (!k->c) break;
        if (pthread_create(&k->t, NULL, work, k)) {
            store_cctx_free(k->c);
            break;
        }
        st->nworkers++;
    }
}

int snap_stage_new(store_t *s, store_writer *w, snap_stage_indexed_fn indexed, void *arg,
                   snap_stage **out, store_err *e)
{
    *out = NULL;
    snap_stage *st = calloc(1, sizeof *st);
    if (!st) return store_errf(e, -ENOMEM, "out of memory");
    st->s = s;
    st->w = w;
    st->indexed = indexed;
    st->arg = arg;
    st->bound = store_group_bound(STORE_GROUP_PAGES);
    st->pages = malloc((size_t)NSLOTS * STORE_GROUP_PAGES * STORE_PAGE);
    st->frames = malloc(NSLOTS * st->bound);
    st->own = store_cctx_new();
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->work, NULL);
    pthread_cond_init(&st->done, NULL);
    if (!st->pages || !st->frames || !st->own) {
        snap_stage_free(st);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < NSLOTS; i++) {
        st->slot[i].pages = st->pages + (size_t)i * STORE_GROUP_PAGES * STORE_PAGE;
        st->slot[i].frame = st->frames + i * st->bound;
    }
    *out = st;
    return 0;
}

/* Appends the compressed groups at the head, in order. */
static int append_done(snap_stage *st, store_err *e)
{
    for (;;) {
        struct slot *sl = &st->slot[st->head % NSLOTS];
        pthread_mutex_lock(&st->mu);
        int ready = st->head < st->filled && sl->done;
        pthread_mutex_unlock(&st->mu);
        if (!ready) return 0;
        if (sl->flen < 0) return store_errf(e, (int)sl->flen, "compressing a group of new pages failed");
        uint64_t gen = store_writer_generation(st->w);
        int rc = store_writer_add_group(st->w, sl->ids, sl->n, sl->frame, (size_t)sl->flen, e);
        if (rc) return rc;
        sl->n = 0;
        sl->done = 0;      /* no worker looks at it again before filled passes it (under mu) */
        st->head++;
        if (store_writer_generation(st->w) != gen && (rc = st->indexed(st->arg, e))) return rc;
    }
}

/* One step towards a done head (head < filled): the staging thread compresses a group no
 * worker took, or else waits for a worker to finish one. */
static void progress(snap_stage *st)
{
    pthread_mutex_lock(&st->mu);
    if (st->slot[st->head % NSLOTS].done) {
        pthread_mutex_unlock(&st->mu);
        return;
    }
    if (st->claim < st->filled) {
        struct slot *sl = &st->slot[st->claim++ % NSLOTS];
        pthread_mutex_unlock(&st->mu);
        compress(st, sl, st->own);
        pthread_mutex_lock(&st->mu);
        sl->done = 1;
    } else {
        pthread_cond_wait(&st->done, &st->mu);   /* head is a worker's: it signals */
    }
    pthread_mutex_unlock(&st->mu);
}

static void group_full(snap_stage *st)
{
    pthread_mutex_lock(&st->mu);
    st->filled++;
    pthread_cond_signal(&st->work);
    pthread_mutex_unlock(&st->mu);
    if (!st->started) start_workers(st);
}

int snap_stage_page(snap_stage *st, const store_id *id, const void *page, store_err *e)
{
    if (st->tail == st->filled) {                  /* open the next group */
        while (st->tail - st->head == NSLOTS) {
            int rc = append_done(st, e);
            if (rc) return rc;
            if (st->tail - st->head == NSLOTS) progress(st);
        }
        st->tail++;
    }
    struct slot *sl = &st->slot[(st->tail - 1) % NSLOTS];
    memcpy(sl->pages + (size_t)sl->n * STORE_PAGE, page, STORE_PAGE);
    sl->ids[sl->n++] = *id;
    if (sl->n < STORE_GROUP_PAGES) return 0;
    group_full(st);
    return append_done(st, e);
}

int snap_stage_finish(snap_stage *st, store_err *e)
{
    if (st->tail > st->filled) group_full(st);     /* the last, partial group */
    while (st->head < st->filled) {
        int rc = append_done(st, e);
        if (rc) return rc;
        if (st->head < st->filled) progress(st);
    }
    return 0;
}

int snap_stage_pending(snap_stage *st, snap_stage_fn fn, void *arg)
{
    for (uint64_t q = st->head; q < st->tail; q++) {
        const struct slot *sl = &st->slot[q % NSLOTS];
        for (unsigned i = 0; i < sl->n; i++) {
            int rc = fn(arg, &sl->ids[i], sl->pages + (size_t)i * STORE_PAGE);
            if (rc) return rc;
        }
    }
    return 0;
}

void snap_stage_free(snap_stage *st)
{
    if (!st) return;
    pthread_mutex_lock(&st->mu);
    st->quit = 1;
    pthread_cond_broadcast(&st->work);
    pthread_mutex_unlock(&st->mu);
    for (unsigned i = 0; i < st->nworkers; i++) {
        pthread_join(st->workers[i].t, NULL);
        store_cctx_free(st->workers[i].c);
    }
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->work);
    pthread_cond_destroy(&st->done);
    store_cctx_free(st->own);
    free(st->pages);
    free(st->frames);
    free(st);
}
