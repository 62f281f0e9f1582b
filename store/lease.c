/* Leases on snapshots (store/lease.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"
#include "store/lease.h"

/* gc starts deleting the manifest within INTENT_MS of the intent's PUT (its monotonic
 * clock: store_lease_guard_fresh) or not at all; a reader ignores an intent older than
 * STALE_MS + the clock margin on the bucket's clock (a gc died and left it): the rest covers
 * that DELETE's retries. */
#define INTENT_MS 60000
#define STALE_MS (10 * 60000)
#define INTENT_NAME "drop"

struct store_lease {
    store_t *s;
    int fd;
    char id[STORE_SNAPID_LEN];
    char name[96];                  /* S3: leases/ID/NODE-NONCE */
    int64_t expires_ms;             /* S3: the expiry of the last successful PUT (for messages) */
    int64_t put_mono_ms;            /* S3: CLOCK_MONOTONIC when that PUT began (lapse is judged by it) */
    pthread_t th;
    int th_started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static int lease_path(const char *dir, const char *id, char *out, size_t cap, store_err *e)
{
    if (store_snapid_valid(id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", id);
    if (snprintf(out, cap, "%s/leases/%s", dir, id) >= (int)cap)
        return store_errf(e, -ENAMETOOLONG, "%s: store path too long", dir);
    return 0;
}

/* ---- the objects (their text: store_kv_text / store_kv_parse in gcrec.c) ------------------
 *
 *   leases/ID/NODE-NONCE   node=%06x ttl_ms=…: valid for ttl_ms after its Last-Modified
 *   leases/ID/drop         node=%06x stale_ms=…: ignored once that old (a gc died)
 * Both are judged on the bucket's clock: their Last-Modified in a listing against the
 * Last-Modified of the judge's own fresh PUT in the same listing (the reader's lease, gc's
 * intent), never a node's wall clock (docs/s3.md, "Whose clock"). */

enum { OBJ_LEASE, OBJ_INTENT };

static const char *obj_field(int kind) { return kind == OBJ_LEASE ? "ttl_ms" : "stale_ms"; }

static int lease_obj_get(store_t *s, const char *name, int kind, uint32_t *node, int64_t *ms, store_err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = s->be->ops->get_all(s->be, name, &buf, &len, e);
    if (rc) return rc;
    if (store_kv_parse(buf, len, obj_field(kind), node, ms, NULL))
        rc = store_errf(e, -EBADMSG, "%s: %s is not a %s", s->be->where, name, kind == OBJ_LEASE ? "lease" : "drop intent");
    free(buf);
    return rc;
}

static int lease_obj_put(store_t *s, const char *name, int kind, int64_t ms, store_err *e)
{
    char text[128];
    int n = store_kv_text(text, sizeof text, s->node, obj_field(kind), ms, NULL);
    if (n < 0) return store_errf(e, -EINVAL, "%s: record text too long", name);
    return s->be->ops->put(s->be, name, text, (size_t)n, e);
}

static int list_leases(store_t *s, const char *id, remote_objs *out, store_err *e)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "leases/%s/", id);
    return remote_list(s, prefix, NULL, out, e);
}

/* The bucket's time of the listing l: the Last-Modified of `mine`, PUT just before it. */
static int listed_now(store_t *s, const remote_objs *l, const char *mine, int64_t *now, store_err *e)
{
    const remote_obj *o = remote_objs_find(l, mine);
    if (!o) return store_errf(e, -EIO, "%s: %s is not listed right after its PUT", s->be->where, mine);
    *now = o->mtime_ms;
    return 0;
}

static int is_intent(const char *name)
{
    size_t n = strlen(name), k = strlen("/" INTENT_NAME);
    return n >= k && !strcmp(name + n - k, "/" INTENT_NAME);
}

/* A reader's check after its lease `mine` is in the bucket: 0 when no gc is dropping id and
 * its manifest is in the bucket (not a local copy, which outlives another node's drop). */
static int still_there(store_t *s, const char *id, const char *mine, store_err *e)
{
    remote_objs l = {0};
    int64_t now = 0;
    int rc = list_leases(s, id, &l, e);
    if (!rc) rc = listed_now(s, &l, mine, &now, e);
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (!is_intent(l.v[i].name)) continue;
        uint32_t node;
        int64_t stale;
        store_err ge;
        int g = lease_obj_get(s, l.v[i].name, OBJ_INTENT, &node, &stale, &ge);
        if (g == -ENOENT) continue;                        /* that gc is done: the manifest says */
        if (g) rc = store_errf(e, g, "%s", ge.msg);
        else if (now - (l.v[i].mtime_ms + BACKEND_MTIME_SLACK_MS) < stale + store_clock_margin_ms())
            rc = store_errf(e, -ENOENT, "snapshot %s is being dropped by the gc of node %06x", id, node);
    }
    remote_objs_free(&l);
    if (rc) return rc;
    char name[64];
    snprintf(name, sizeof name, "manifests/%s.cmf", id);
    rc = remote_list(s, name, NULL, &l, e);
    if (!rc && !remote_objs_find(&l, name)) rc = store_errf(e, -ENOENT, "no snapshot %s in %s", id, s->be->where);
    remote_objs_free(&l);
    return rc;
}

/* ---- the reader's side ------------------------------------------------------------------ */

/* Renews every third of the lease's life; after a failure every ninth, and says so each
 * time: past the expiry another node's gc may drop the snapshot. */
static void *renewer(void *arg)
{
    store_lease *l = arg;
    int64_t ttl = store_read_lease_ttl_ms(), every = ttl / 3 > 0 ? ttl / 3 : 1, wait = every;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t ns = t.tv_nsec + (wait % 1000) * 1000000;
        t.tv_sec += wait / 1000 + ns / 1000000000;
        t.tv_nsec = ns % 1000000000;
        while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &t) == 0) {}   /* till the time, or stop */
        if (l->stop) break;
        pthread_mutex_unlock(&l->mu);
        int64_t now = store_now_ms(), exp = now + ttl, m0 = store_mono_ms();
        store_err e;
        int rc = lease_obj_put(l->s, l->name, OBJ_LEASE, ttl, &e);
        char when[40];
        if (rc) {
            store_rfc3339(l->expires_ms, when);
            fprintf(stderr, "cairn: WARNING: snapshot %s: cannot renew its lease (%s): it %s at %s; past that "
                    "another node's gc may drop the snapshot and delete its packs, and a page not read yet would "
                    "then fail (EIO). Still serving; retrying.\n", l->id, e.msg,
                    m0 - l->put_mono_ms < ttl ? "expires" : "expired", when);
            wait = every / 3 > 0 ? every / 3 : 1;
        } else {
            /* Another node's gc counts the last lease from its Last-Modified, which is later
             * than when its PUT began here: so by this clock, never sooner. */
            int lapsed = m0 - l->put_mono_ms >= ttl;
            l->expires_ms = exp;
            l->put_mono_ms = m0;
            wait = every;
            if (lapsed) {
                /* The lease was void for a while: a gc may have dropped the snapshot meanwhile. */
                rc = still_there(l->s, l->id, l->name, &e);
                if (rc == -ENOENT)
                    fprintf(stderr, "cairn: WARNING: snapshot %s was dropped while its lease had lapsed (%s): "
                            "pages not read yet will fail (EIO) once gc deletes its packs\n", l->id, e.msg);
                else if (rc)
                    fprintf(stderr, "cairn: WARNING: snapshot %s: its lease is renewed after it had lapsed, but "
                            "whether gc dropped the snapshot meanwhile is unknown: %s\n", l->id, e.msg);
                else
                    fprintf(stderr, "cairn: snapshot %s: its lease is renewed again after it had lapsed; the "
                            "snapshot is still there\n", l->id);
            }
        }
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int store_lease_take(store_t *s, const char *id, store_lease **out, store_err *e)
{
    *out = NULL;
    char path[4096], ldir[4096];
    int rc = lease_path(s->dir, id, path, sizeof path, e);
    if (rc) return rc;
    snprintf(ldir, sizeof ldir, "%s/leases", s->dir);
    if (mkdir(ldir, 0700) < 0 && errno != EEXIST) return store_errf(e, -errno, "%s: %s", ldir, strerror(errno));
    store_lease *l = calloc(1, sizeof *l);
    if (!l) return store_errf(e, -ENOMEM, "out of memory");
    l->s = s;
    snprintf(l->id, sizeof l->id, "%s", id);
    l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->fd < 0) rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
    while (!rc && flock(l->fd, LOCK_SH) < 0) {
        if (errno == EINTR) continue;
        rc = store_errf(e, -errno, "%s: flock: %s", path, strerror(errno));
    }
    if (rc || !s->be->remote) {
        if (rc) store_lease_free(l);
        else *out = l;
        return rc;
    }
    uint32_t nonce;
    if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce) rc = store_errf(e, -EIO, "getrandom failed");
    snprintf(l->name, sizeof l->name, "leases/%s/%06x-%08x", id, s->node, nonce);
    l->expires_ms = store_now_ms() + store_read_lease_ttl_ms();
    l->put_mono_ms = store_mono_ms();
    store_err pe;
    if (!rc && (rc = lease_obj_put(s, l->name, OBJ_LEASE, store_read_lease_ttl_ms(), &pe)))
        rc = store_errf(e, rc, "snapshot %s: cannot take a lease on it: %s", id, pe.msg);
    if (rc) l->name[0] = 0;
    if (!rc) rc = still_there(s, id, l->name, e);
    if (!rc) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cv, &ca);
        pthread_condattr_destroy(&ca);
        int pr = pthread_create(&l->th, NULL, renewer, l);
        if (pr) rc = store_errf(e, -pr, "snapshot %s: cannot start the lease's renewal: %s", id, strerror(pr));
        else l->th_started = 1;
        if (pr) {
            pthread_cond_destroy(&l->cv);
            pthread_mutex_destroy(&l->mu);
        }
    }
    if (rc) {
        store_lease_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void store_lease_free(store_lease *l)
{
    if (!l) return;
    if (l->th_started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->th, NULL);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
    }
    if (l->name[0]) {
        store_err e;
        if (l->s->be->ops->del(l->s->be, l->name, &e))
            fprintf(stderr, "cairn: warning: snapshot %s: could not delete its lease %s (%s): gc keeps the "
                    "snapshot until the lease expires\n", l->id, l->name, e.msg);
    }
    if (l->fd >= 0) close(l->fd);                          /* releases the flock */
    free(l);
}

/* ---- gc's side -------------------------------------------------------------------------- */

int store_lease_busy(store_t *s, const char *id, store_lease_guard *g, store_err *e)
{
    char path[4096];
    *g = (store_lease_guard){.fd = -1};
    int rc = lease_path(s->dir, id, path, sizeof path, e);
    if (rc) return rc;
    snprintf(g->id, sizeof g->id, "%s", id);
    int f = open(path, O_RDWR | O_CLOEXEC);
    if (f < 0 && errno != ENOENT) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    if (f >= 0 && flock(f, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? 1 : -errno;
        close(f);
        if (rc == 1) store_errf(e, 1, "a reader on this node holds a lease on it");
        else store_errf(e, rc, "%s: flock: %s", path, strerror(-rc));
        return rc;
    }
    g->fd = f;
    if (!s->be->remote) return 0;
    /* The intent first, the listing second: a reader whose lease this listing misses PUT it
     * after the intent, so its own listing sees the intent (or, once we are done, the
     * manifest gone). */
    char name[96];
    snprintf(name, sizeof name, "leases/%s/" INTENT_NAME, id);
    g->t0_mono_ms = store_mono_ms();
    rc = lease_obj_put(s, name, OBJ_INTENT, STALE_MS, e);
    if (!rc) g->intent = 1;
    remote_objs l = {0};
    int64_t now = 0, margin = store_clock_margin_ms();
    if (!rc) rc = list_leases(s, id, &l, e);
    if (!rc) rc = listed_now(s, &l, name, &now, e);
    int busy = 0;
    for (size_t i = 0; !rc && !busy && i < l.n; i++) {
        if (is_intent(l.v[i].name)) continue;
        uint32_t node;
        int64_t ttl;
        store_err ge;
        int r = lease_obj_get(s, l.v[i].name, OBJ_LEASE, &node, &ttl, &ge);
        /* It ends ttl after its Last-Modified (rounded up), on the bucket's clock. */
        int64_t exp = l.v[i].mtime_ms + BACKEND_MTIME_SLACK_MS + ttl;
        if (r == -ENOENT) continue;                        /* released since the listing */
        if (r == -EBADMSG) {
            busy = 1;                                      /* not ours to judge: keep the snapshot */
            store_errf(e, 1, "%s (kept while it is there)", ge.msg);
        } else if (r) {
            rc = store_errf(e, r, "%s", ge.msg);
        } else if (now < exp + margin) {
            busy = 1;
            char when[40];
            store_rfc3339(exp, when);
            store_errf(e, 1, "node %06x holds a lease on it until %s (the bucket's clock)", node, when);
        }
    }
    remote_objs_free(&l);
    if (rc || busy) {
        store_err re;
        int r2 = store_lease_release(s, g, 0, &re);
        if (!rc && r2) rc = store_errf(e, r2, "%s", re.msg);
    }
    return rc ? rc : busy;
}

int store_lease_guard_fresh(const store_lease_guard *g, store_err *e)
{
    if (!g->intent || store_mono_ms() - g->t0_mono_ms < INTENT_MS) return 0;
    return store_errf(e, -ETIMEDOUT, "snapshot %s: gc took longer than %d s from its drop intent to the drop; "
                      "kept for the next run", g->id, INTENT_MS / 1000);
}

int store_lease_release(store_t *s, store_lease_guard *g, int dropped, store_err *e)
{
    int rc = 0;
    if (g->intent) {
        /* After a drop every lease of the snapshot goes: their readers have failed (they
         * found the intent or no manifest) or are dead. The intent goes last. */
        remote_objs l = {0};
        if (dropped) rc = list_leases(s, g->id, &l, e);
        for (size_t i = 0; !rc && i < l.n; i++)
            if (!is_intent(l.v[i].name)) rc = s->be->ops->del(s->be, l.v[i].name, e);
        remote_objs_free(&l);
        char name[96];
        snprintf(name, sizeof name, "leases/%s/" INTENT_NAME, g->id);
        store_err de;
        int d = s->be->ops->del(s->be, name, &de);
        if (!rc && d) rc = store_errf(e, d, "%s", de.msg);
        g->intent = 0;
    }
    if (g->fd >= 0) {
        /* Unlinked while still locked: a reader that opened the old file before this gets
         * its lock after the drop, finds no manifest and fails; one that opens after makes
         * a new file. Either way no reader serves a dropped snapshot. */
        char path[4096];
        if (dropped && !lease_path(s->dir, g->id, path, sizeof path, NULL)) unlink(path);
        close(g->fd);
        g->fd = -1;
    }
    return rc;
}
