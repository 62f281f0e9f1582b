/* The one store handle the server's requests share.
 *
 * Why not keep the store open for good: a writer (STORE_WRITE) holds the store's exclusive
 * flock and a reader the shared one, so a server that kept either until it exits would make
 * every CLI snapshot, or every CLI read, wait for it. Yet opening the index for writing and
 * closing it (a flush of every column family, with its fsyncs) cost an ingest more than
 * its own work. So:
 *   - readers share one STORE_READ handle; a handle older than REUSE_MS takes no new
 *     readers, so under constant load it still closes and a waiting CLI writer gets in;
 *   - one writer job at a time uses a STORE_WRITE handle, opened once no handle is open and
 *     kept after the job: the next ingest finds it open. Readers use it too (store_t is
 *     thread-safe for reads), so metadata calls do not wait for an ingest. A keeper thread
 *     closes it once it has been idle GRACE_MS (or $CAIRN_SERVE_KEEP_MS), and at once (after the jobs using it) when
 *     anyone waits for the store's lock: store_open registers its waiters in lock.wait
 *     (store_lock_waiters), this process's own gc_run included. Until that waiter got the
 *     lock (at most YIELD_MS), the next ingest does not reopen: flock is not first come,
 *     first served. So a CLI command waits for the job in flight, never for the server;
 *   - a handle an ingest failed on is closed, never reused (api_store_spoil), and so is one
 *     with an unfinished commit: the next writer's open finishes it;
 *   - everything a snapshot needs is durable before its 201 (store_writer_commit), so a
 *     server killed with the handle open loses nothing acknowledged: the next open replays
 *     the index's log;
 *   - an S3 node's handle is not kept: its writer's open refreshes from the bucket;
 *   - a second flock from this process would wait on the first, so two handles are never
 *     open at once.
 * gc_run opens the store itself: it waits for these handles like any other process.
 *
 * The read view (metadata routes): readers of the handle above wait whenever it changes
 * hands, i.e. around every ingest (the writer waits for readers to leave, opens, closes;
 * readers then reopen), which under load was most of the metadata calls' latency. The
 * view is a STORE_PEEK handle: no flock, so it stays open across ingests and the CLI's
 * writers and never waits for them. What it may serve: the index's snapshot and sandbox
 * records and the manifests, which a commit makes visible atomically (the manifest last),
 * so it is never half a snapshot; it does not read packs (gc may move chunks under a
 * lock-free reader) and writes nothing. It is as fresh as a locked read:
 *   - this server's own commits: the ingest replaces the view after its commit and before
 *     its answer (api_view_write_end), while it still holds the store's lock; calls made
 *     meanwhile keep the current view, which lacks only that unacknowledged commit (no
 *     one else can commit while the lock is held). So calls never wait for a view to open
 *     because of the server's own ingests, and one that starts after a 201 sees it;
 *   - anyone else's commit or drop (the CLI, gc) changes manifests/'s mtime; each get
 *     compares it with the view's stamp (taken before the view opened) and, when it moved,
 *     opens a new view and waits for it (one opener; the others wait for the same open),
 *     so a call that starts after a commit sees it, whoever made it;
 *   - mtimes tick coarsely: a change in the same tick as the stamp would not move it. The
 *     opener waits until the coarse clock is past the stamp (a ms or two, open_stamp);
 *     where the file system's granularity is coarser, a view whose stamp was younger than
 *     SETTLE_MS at open is replaced once more after that, by one call (the others keep the
 *     current view);
 *   - a replaced view is closed (its RocksDB instance freed) by the next opener once its
 *     last call let go, so no call pays for a close and at most the views in use and the
 *     ones retired since the last open exist;
 *   - an S3 node's folder holds caches only (other nodes commit into the bucket): no view,
 *     its routes use STORE_READ. */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <stdio.h>

#include "api/internal.h"
#include "store/toolbox.h"

#define REUSE_MS 1000
#define SETTLE_MS 1000
#define GRACE_MS 2000     /* an idle writer handle waits this long for the next ingest
                             * ($CAIRN_SERVE_KEEP_MS; 0: never kept) */
#define TICK_MS 10        /* how often the keeper looks for a waiter */
#define YIELD_MS 1000     /* how long an ingest lets a waiter take the lock first */

static void view_close(api_view *v);

void api_storeref_init(api_storeref *r, const char *dir)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->write_mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->kcv, &ca);
    pthread_condattr_destroy(&ca);
    r->wait_fd = -1;
    r->dir = dir;
    /* An S3 node's cairn.conf says backend=s3 (store/store.c reads it the same way). A
     * conf that cannot be read turns views off: the locked handle reports the error. */
    char p[4200], text[4096];
    FILE *f = snprintf(p, sizeof p, "%s/cairn.conf", dir) < (int)sizeof p ? fopen(p, "re") : NULL;
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (!f || ferror(f)) r->view_off = 1;
    text[n] = 0;
    if (strstr(text, "\nbackend=s3\n")) r->view_off = 1;
    if (f) fclose(f);
    const char *k = getenv("CAIRN_SERVE_KEEP_MS");
    r->keep_ms = k && *k ? atoll(k) : GRACE_MS;
    r->keep_off = r->view_off || r->keep_ms <= 0;
}

/* Closes the open handle (r->mu held, refs 0): nobody opens until its flock is let go. */
static void close_locked(api_storeref *r)
{
    store_t *s = r->s;
    r->s = NULL;
    r->busy = 1;
    if (r->yielding) r->yield_ms = store_now_ms();
    r->yielding = r->spoiled = 0;
    pthread_mutex_unlock(&r->mu);
    store_close(s);
    pthread_mutex_lock(&r->mu);
    r->busy = 0;
    pthread_cond_broadcast(&r->cv);
}

/* Lets the kept writer handle go when idle, spoiled, or wanted by a waiter (see above). */
static void *keeper(void *arg)
{
    api_storeref *r = arg;
    int warned = 0;
    pthread_mutex_lock(&r->mu);
    while (!r->quit) {
        if (!r->s || r->busy || r->mode != STORE_WRITE) {
            pthread_cond_wait(&r->kcv, &r->mu);
            continue;
        }
        store_err e;
        int w = store_lock_waiters(r->dir, &r->wait_fd, &e);
        if (w < 0 && !warned++) fprintf(stderr, "cairn serve: %s: not keeping the store open\n", e.msg);
        if (w) r->yielding = 1;           /* unknown: as if someone waited */
        if (!r->refs && (r->yielding || r->spoiled || store_now_ms() - r->idle_ms >= r->keep_ms)) {
            close_locked(r);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&r->kcv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

void api_storeref_destroy(api_storeref *r)
{
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_broadcast(&r->kcv);
    pthread_mutex_unlock(&r->mu);
    if (r->keeper_on) pthread_join(r->keeper, NULL);
    /* Every request has ended: the current view's own reference is the last. */
    view_close(r->view);
    while (r->retired) {
        api_view *v = r->retired;
        r->retired = v->next;
        view_close(v);
    }
    if (r->s) store_close(r->s);
    if (r->wait_fd >= 0) close(r->wait_fd);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->write_mu);
    pthread_cond_destroy(&r->cv);
    pthread_cond_destroy(&r->kcv);
}

/* After the handle was let go for a waiter: 1 while that waiter has not taken the lock yet
 * (for at most YIELD_MS), so this process does not take it back first (r->mu held). */
static int waiter_first(api_storeref *r)
{
    if (!r->yield_ms) return 0;
    if (store_now_ms() - r->yield_ms >= YIELD_MS) return r->yield_ms = 0;
    store_err e;
    int w = store_lock_waiters(r->dir, &r->wait_fd, &e);
    if (w <= 0) return r->yield_ms = 0;
    pthread_mutex_unlock(&r->mu);
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&r->mu);
    return 1;
}

int api_store_get(api_storeref *r, int mode, store_t **out, store_err *e)
{
    if (mode == STORE_WRITE) pthread_mutex_lock(&r->write_mu);
    pthread_mutex_lock(&r->mu);
    if (mode == STORE_WRITE) r->writers_waiting++;
    for (;;) {
        int kept = r->s && !r->busy && r->mode == STORE_WRITE && !r->yielding && !r->spoiled;
        if (kept || (mode != STORE_WRITE && r->s && !r->busy && r->mode != STORE_WRITE &&
                     !r->writers_waiting && store_now_ms() - r->opened_ms < REUSE_MS)) {
            if (mode == STORE_WRITE) r->writers_waiting--, r->writer_active = 1;
            r->refs++;
            *out = r->s;
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        if (!r->s && !r->busy && (mode == STORE_WRITE || !r->writers_waiting)) {
            if (waiter_first(r)) continue;
            break;
        }
        pthread_cond_wait(&r->cv, &r->mu);
    }
    if (mode == STORE_WRITE) r->writers_waiting--;
    r->busy = 1;
    pthread_mutex_unlock(&r->mu);
    store_t *s = NULL;
    int rc = store_open(r->dir, mode, &s, e);
    pthread_mutex_lock(&r->mu);
    r->busy = 0;
    if (!rc) {
        r->s = s;
        r->mode = mode;
        r->refs = 1;
        r->writer_active = mode == STORE_WRITE;
        r->opened_ms = store_now_ms();
        *out = s;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (rc && mode == STORE_WRITE) pthread_mutex_unlock(&r->write_mu);
    return rc;
}

void api_store_spoil(api_storeref *r)
{
    pthread_mutex_lock(&r->mu);
    if (r->s && r->mode == STORE_WRITE) r->spoiled = 1;
    pthread_mutex_unlock(&r->mu);
}

void api_store_put(api_storeref *r, int mode)
{
    pthread_mutex_lock(&r->mu);
    if (mode == STORE_WRITE) {
        r->writer_active = 0;
        /* A commit whose index record was deferred (store/commit.c): the next open
         * finishes it, so this handle is not kept. */
        int any = 0;
        store_err e;
        if (store_commit_pending(r->s, &any, &e) || any) r->spoiled = 1;
    }
    if (--r->refs == 0) {
        if (r->mode != STORE_WRITE || r->keep_off || r->quit || r->spoiled || r->yielding) {
            close_locked(r);
        } else {
            r->idle_ms = store_now_ms();
            if (!r->keeper_on) r->keeper_on = pthread_create(&r->keeper, NULL, keeper, r) == 0;
            if (!r->keeper_on) close_locked(r);     /* no thread to let it go: not kept */
            pthread_cond_broadcast(&r->kcv);
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (mode == STORE_WRITE) pthread_mutex_unlock(&r->write_mu);
}

/* ---- the read view ---------------------------------------------------------------------- */

static int manifests_stamp(const char *dir, struct timespec *out)
{
    char p[4200];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/manifests", dir) >= (int)sizeof p || stat(p, &st) < 0) return -1;
    *out = st.st_mtim;
    return 0;
}

/* The index's newest write-ahead log (RocksDB's NNNNNN.log) and its size: every index
 * write appends to it, or starts a newer one. -1 when the folder cannot be read. */
static int wal_stamp(const char *dir, unsigned long long *no, unsigned long long *size)
{
    char p[4200];
    if (snprintf(p, sizeof p, "%s/index", dir) >= (int)sizeof p) return -1;
    DIR *d = opendir(p);
    if (!d) return -1;
    *no = *size = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        unsigned long long n;
        char tail[8];
        if (sscanf(de->d_name, "%llu.%7s", &n, tail) == 2 && !strcmp(tail, "log") && n >= *no) *no = n;
        errno = 0;
    }
    int rc = errno ? -1 : 0;
    closedir(d);
    struct stat st;
    if (!rc && *no) {
        snprintf(p, sizeof p, "%s/index/%06llu.log", dir, *no);
        if (stat(p, &st) < 0) rc = -1;
        else *size = (unsigned long long)st.st_size;
    }
    return rc;
}

/* The names in the index's folder, as one order-free hash: a flush or a compaction by a
 * writer (the CLI's close flushes) adds and deletes files. A read-only open that overlaps
 * one may read the old file list and then miss the log the flush deleted: its view would
 * lack the last commits while manifests/ says it is fresh. -1 when unreadable. */
static int index_names(const char *dir, uint64_t *h)
{
    char p[4200];
    if (snprintf(p, sizeof p, "%s/index", dir) >= (int)sizeof p) return -1;
    DIR *d = opendir(p);
    if (!d) return -1;
    uint64_t sum = 0, n = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        uint64_t x = 1469598103934665603ull;
        for (const char *c = de->d_name; *c; c++) x = (x ^ (unsigned char)*c) * 1099511628211ull;
        sum += x * 0x9e3779b97f4a7c15ull;
        n++;
        errno = 0;
    }
    int rc = errno ? -1 : 0;
    closedir(d);
    *h = sum ^ n;
    return rc;
}

static int same_time(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static int64_t age_ns(const struct timespec *now, const struct timespec *t)
{
    return (int64_t)(now->tv_sec - t->tv_sec) * 1000000000 + (now->tv_nsec - t->tv_nsec);
}

static int settled(const struct timespec *stamp)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return age_ns(&now, stamp) > (int64_t)SETTLE_MS * 1000000;
}

/* manifests/'s mtime for a view about to open, and whether it is settled already. A file's
 * times are the kernel's coarse clock (CLOCK_REALTIME_COARSE, or a finer reading, never
 * earlier) cut to the file system's granularity. A stamp that is not a whole millisecond
 * shows a granularity under 1 ms, so once the coarse clock is 1 ms past it, any later
 * change has a later mtime: the view is settled at open, after waiting a tick or two
 * here, instead of being replaced once more a second later. -1 when it cannot be read. */
static int open_stamp(const char *dir, struct timespec *st, int *is_settled)
{
    for (int i = 0;; i++) {
        if (manifests_stamp(dir, st)) return -1;
        struct timespec c;
        clock_gettime(CLOCK_REALTIME_COARSE, &c);
        if (st->tv_nsec % 1000000 && age_ns(&c, st) >= 1000000) {
            *is_settled = 1;
            return 0;
        }
        if (i == 20 || st->tv_nsec % 1000000 == 0) {
            *is_settled = settled(st);
            return 0;
        }
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

/* Drops one reference (r->mu held); the view to close when it was the last. */
static api_view *unref(api_view *v)
{
    return --v->refs == 0 ? v : NULL;
}

/* Closing a view closes its RocksDB instance (a few ms): done by whoever opens the next
 * one, never by a call that merely let go of it (api_view_put). */
static void view_close(api_view *v)
{
    if (!v) return;
    for (int i = 0; i < API_VIEW_CACHE; i++) {
        json_decref(v->cache[i].j);
        free(v->cache[i].text);
    }
    pthread_mutex_destroy(&v->cache_mu);
    store_close(v->s);
    free(v);
}

json_t *api_view_cached(api_view *v, const char *id, char tenant[STORE_NAME_MAX + 1])
{
    json_t *out = NULL;
    pthread_mutex_lock(&v->cache_mu);
    for (int i = 0; i < API_VIEW_CACHE && !out; i++)
        if (v->cache[i].j && !strcmp(v->cache[i].id, id)) {
            out = json_deep_copy(v->cache[i].j);
            memcpy(tenant, v->cache[i].tenant, STORE_NAME_MAX + 1);
        }
    pthread_mutex_unlock(&v->cache_mu);
    return out;
}

void api_view_keep(api_view *v, const char *id, const char *tenant, const json_t *j)
{
    json_t *c = json_deep_copy(j);
    if (!c) return;
    pthread_mutex_lock(&v->cache_mu);
    unsigned k = v->cache_next++ % API_VIEW_CACHE;
    json_decref(v->cache[k].j);
    free(v->cache[k].text);
    v->cache[k].text = NULL;
    v->cache[k].j = c;
    snprintf(v->cache[k].id, sizeof v->cache[k].id, "%s", id);
    snprintf(v->cache[k].tenant, sizeof v->cache[k].tenant, "%s", tenant);
    pthread_mutex_unlock(&v->cache_mu);
}

char *api_view_cached_text(api_view *v, const char *id, size_t *len)
{
    char *out = NULL;
    pthread_mutex_lock(&v->cache_mu);
    for (int i = 0; i < API_VIEW_CACHE && !out; i++)
        if (v->cache[i].text && !strcmp(v->cache[i].id, id) && (out = malloc(v->cache[i].len + 1))) {
            memcpy(out, v->cache[i].text, v->cache[i].len + 1);
            *len = v->cache[i].len;
        }
    pthread_mutex_unlock(&v->cache_mu);
    return out;
}

void api_view_keep_text(api_view *v, const char *id, const char *text, size_t len)
{
    char *c = malloc(len + 1);
    if (!c) return;
    memcpy(c, text, len);
    c[len] = 0;
    pthread_mutex_lock(&v->cache_mu);
    unsigned k = v->cache_next++ % API_VIEW_CACHE;
    json_decref(v->cache[k].j);
    free(v->cache[k].text);
    v->cache[k].j = NULL;
    v->cache[k].text = c;
    v->cache[k].len = len;
    snprintf(v->cache[k].id, sizeof v->cache[k].id, "%s", id);
    v->cache[k].tenant[0] = 0;
    pthread_mutex_unlock(&v->cache_mu);
}

/* Opens a view and makes it current (r->view_opening set by the caller, mu not held). */
static int view_open(api_storeref *r, store_err *e)
{
    api_view *v = calloc(1, sizeof *v);
    int rc = v ? 0 : store_errf(e, -ENOMEM, "out of memory");
    if (!rc && open_stamp(r->dir, &v->stamp, &v->settled))
        rc = store_errf(e, -errno, "%s/manifests: %s", r->dir, strerror(errno));
    /* Unreadable: ~0, which no later stamp equals, so such a view with a pending commit
     * is replaced at each call rather than trusted. */
    if (!rc && wal_stamp(r->dir, &v->wal_no, &v->wal_size)) v->wal_no = v->wal_size = ~0ull;
    if (!rc) {
        /* A read-only open lists the index's files and then opens them: a writer's flush
         * or compaction may delete one in between (-EIO "No such file"), or the log it
         * should replay (no error, a view without the last commits). So an open during
         * which the folder's names changed is done again. */
        for (int tries = 0; tries < 20; tries++) {
            uint64_t h0 = 0, h1 = 1;
            int lr = index_names(r->dir, &h0);
            rc = store_open(r->dir, STORE_PEEK, &v->s, e);
            if (rc == -EIO) continue;
            if (!rc && (rc = store_commit_pending(v->s, &v->pending, e))) store_close(v->s);
            if (rc || (!lr && !index_names(r->dir, &h1) && h0 == h1)) break;
            store_close(v->s);   /* the index's files changed during the open: again */
            v->s = NULL;
            rc = store_errf(e, -EAGAIN, "%s/index kept changing while a read view opened", r->dir);
        }
    }
    if (rc) free(v), v = NULL;
    else pthread_mutex_init(&v->cache_mu, NULL);
    pthread_mutex_lock(&r->mu);
    api_view *old = NULL, *retired = r->retired;
    r->retired = NULL;
    if (v) {
        v->refs = 1;
        v->gen = ++r->view_gen;
        if (r->view) old = unref(r->view);
        r->view = v;
    }
    r->view_opening = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    view_close(old);
    while (retired) {
        api_view *next = retired->next;
        view_close(retired);
        retired = next;
    }
    return rc;
}

int api_view_get(api_storeref *r, api_view **out, store_err *e)
{
    *out = NULL;
    if (r->view_off) return 0;
    struct timespec now;
    if (manifests_stamp(r->dir, &now))
        return store_errf(e, -errno, "%s/manifests: %s", r->dir, strerror(errno));
    pthread_mutex_lock(&r->mu);
    for (;;) {
        api_view *v = r->view;
        /* Changed since, but only by this server's writer job still running: its changes
         * are not acknowledged yet, so the view is as fresh as a locked read. */
        int fresh = v && (same_time(&v->stamp, &now) || (r->own_writing && same_time(&v->stamp, &r->own_base)));
        if (v && v->pending) {
            /* Opened mid-commit: it may show a manifest without its record. The record's
             * write moves the index's log, and so does every commit's (and drop's) first
             * index write: until the log moves, no commit was acknowledged since this view
             * opened, whatever manifests/ says (the rest of this commit's files), so it is
             * as fresh as a locked read. One open per commit fewer for the calls to wait on. */
            unsigned long long no, size;
            pthread_mutex_unlock(&r->mu);
            int wr = wal_stamp(r->dir, &no, &size);
            pthread_mutex_lock(&r->mu);
            if (r->view != v) continue;
            fresh = !wr && no == v->wal_no && size == v->wal_size;
        }
        if (fresh && (v->settled || r->view_opening || !settled(&v->stamp))) {
            v->refs++;
            *out = v;
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        if (fresh) {
            /* Settled since it opened: replace it once, still answering from it. */
            v->refs++;
            r->view_opening = 1;
            pthread_mutex_unlock(&r->mu);
            store_err ie;
            if (view_open(r, &ie)) fprintf(stderr, "cairn serve: reopening the read view: %s\n", ie.msg);
            *out = v;
            return 0;
        }
        if (!r->view_opening) {
            r->view_opening = 1;
            pthread_mutex_unlock(&r->mu);
            int rc = view_open(r, e);
            if (rc) return rc;
            /* Opened after this call began (or a newer one since): fresh enough for it. */
            pthread_mutex_lock(&r->mu);
            r->view->refs++;
            *out = r->view;
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        pthread_cond_wait(&r->cv, &r->mu);
    }
}

void api_view_put(api_storeref *r, api_view *v)
{
    pthread_mutex_lock(&r->mu);
    if (unref(v)) {
        /* Replaced, and this was its last user: the next opener closes it. */
        v->next = r->retired;
        r->retired = v;
    }
    pthread_mutex_unlock(&r->mu);
}

void api_view_write_begin(api_storeref *r)
{
    struct timespec now;
    if (r->view_off) return;
    int ok = manifests_stamp(r->dir, &now) == 0;
    pthread_mutex_lock(&r->mu);
    r->own_writing = ok;
    if (ok) r->own_base = now;
    pthread_mutex_unlock(&r->mu);
}

void api_view_write_end(api_storeref *r)
{
    if (r->view_off) return;
    pthread_mutex_lock(&r->mu);
    while (r->view_opening) pthread_cond_wait(&r->cv, &r->mu);
    struct timespec now;
    api_view *v = r->view;
    /* Unreadable: replaced, and calls then find out for themselves. */
    int stale = !v || v->pending || manifests_stamp(r->dir, &now) || !same_time(&v->stamp, &now);
    if (stale) r->view_opening = 1;
    pthread_mutex_unlock(&r->mu);
    store_err e;
    if (stale && view_open(r, &e))
        fprintf(stderr, "cairn serve: replacing the read view after a commit: %s (calls reopen it)\n", e.msg);
    /* The replaced view's RocksDB instance and the job's buffers were freed into the
     * arenas of the threads that used them, and glibc hands little of an arena back: the
     * server's RSS grew ~20 MiB per round of the API bench while ~4 MiB were in use
     * (malloc_stats). This returns every arena's free pages; ~7 ms once per commit. */
    if (stale) malloc_trim(0);
    pthread_mutex_lock(&r->mu);
    r->own_writing = 0;
    pthread_mutex_unlock(&r->mu);
}
