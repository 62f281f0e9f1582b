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
 * The read views (metadata routes: the index's snapshot and sandbox records and the
 * manifests; no pack reads, nothing written). Readers of the handle above would wait
 * whenever it changes hands, i.e. around every ingest, which under load was most of the
 * metadata calls' latency. So a call takes a view, of one of two kinds:
 *   - the W-view: while this server keeps its writer handle, the view is that handle
 *     itself (store_t is thread-safe for reads, and the handle's own reads beside a job
 *     were relied on above already). Nobody else can commit or drop while it holds the
 *     exclusive flock, and its own changes are visible on it at once, so it is fresh by
 *     construction: no stamp, no open. A commit shows at its commit point (store/commit.c:
 *     the manifest's rename, after its packs and chunk records are durable; the index
 *     record, which listings and "latest" read, comes after the manifest), so a call
 *     during a job may see the job's snapshot a moment before its 201, never half of one;
 *   - the PEEK view: a STORE_PEEK handle of its own, no flock, so it stays open across
 *     ingests and the CLI's writers and never waits for them. It is what calls use when
 *     the writer is not kept (CAIRN_SERVE_KEEP_MS=0, the first ingest, after the keeper
 *     let go); see "The PEEK view" below.
 * States of the kept writer handle (r->s, mode STORE_WRITE), all under r->mu:
 *   OFFERED   r->wview set: calls take it (a reference on the view object). Each W-view
 *             object pins the handle while it lives (r->wpins: the current one, and retired
 *             ones until their last call puts them), and jobs and readers take it as before
 *             (r->refs). A job's end (write_end, before its answer) makes a new W-view
 *             object, a new generation whose caches (api_view_cached/_keep/_text, the
 *             server's sandbox summary) start empty, and retires the old one: microseconds.
 *             The PEEK view, if any, is retired at that moment: it lacks the commits made
 *             on the W-view and is never used again.
 *   CLOSING   r->closing set: the keeper decided to let go (idle for GRACE_MS, a waiter in
 *             lock.wait, spoiled) at a moment no job or reader held the handle, or a job
 *             that will not leave it kept (a waiter, spoiled) ended as its last user. No
 *             one takes the handle any more (api_store_get waits), and the keeper closes it
 *             once r->refs and r->wpins are 0. The W-view is withdrawn, so the calls in
 *             flight drain in a ms or two whatever the load; the calls after it use a PEEK
 *             view that lacks none of its commits: when idle, one the keeper opened before
 *             withdrawing it (no job could start meanwhile, so it is as fresh; the calls
 *             kept the W-view during that open and wait for nothing); else, so that a
 *             waiter gets the lock sooner, one the keeper opens right after the close
 *             (r->reopen, with view_opening set: calls wait for it), cheap then as the
 *             close flushed the index's log.
 *   NOT KEPT  a job's end on a handle that will not be kept (spoiled, a waiter, keep off,
 *             no keeper thread, no memory for a W-view), other than the CLOSING case above
 *             (readers still on the handle, or no W-view), withdraws the W-view, if any,
 *             and replaces the PEEK view before its answer, while it still holds the lock.
 * Invariants (check_state: a broken one is logged, "invariant broken", which the tests
 * look for): a current W-view implies the handle open in STORE_WRITE, not busy, pinned
 * (wpins >= 1), and not closing unless the keeper's PEEK open is under way; no pin
 * outlives the handle; the handle is closed only with refs and wpins 0; a reopen is
 * pending only while closing, with view_opening set and no PEEK view, so no call uses a
 * PEEK view from before a W-view's commits. The heap is trimmed by the keeper beside a
 * job's answer, not before it.
 *
 * The PEEK view: what it may serve, the index's records and the manifests, a commit
 * makes visible atomically (the manifest last), so it is never half a snapshot; it does
 * not read packs (gc may move chunks under a lock-free reader). It is as fresh as a
 * locked read:
 *   - this server's own commits when the writer is not kept: the ingest replaces the view
 *     after its commit and before its answer (write_end), while it still holds the store's
 *     lock; calls made meanwhile keep the current view, which lacks only that
 *     unacknowledged commit (no one else can commit while the lock is held);
 *   - anyone else's commit or drop (the CLI, gc) changes manifests/'s mtime; each get
 *     compares it with the view's stamp (taken before the view opened) and, when it moved,
 *     opens a new view and waits for it (one opener; the others wait for the same open),
 *     so a call that starts after a commit sees it, whoever made it;
 *   - mtimes tick coarsely: a change in the same tick as the stamp would not move it. The
 *     opener waits until the coarse clock is past the stamp (a ms or two, open_stamp);
 *     where the file system's granularity is coarser, a view whose stamp was younger than
 *     SETTLE_MS at open is replaced once more after that, by one call (the others keep the
 *     current view);
 *   - a replaced view is closed (its RocksDB instance freed) by the next opener or the
 *     keeper once its last call let go, so no call pays for a close;
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
static int view_open(api_storeref *r, store_err *e);

/* A broken invariant of this file is a bug: said once, loudly, never an abort (the house
 * rule); the tests fail on the line in the server's log. */
static void check(int ok, const char *what)
{
    static int said;
    if (!ok && !said++) fprintf(stderr, "cairn serve: internal error: storeref invariant broken: %s\n", what);
}

/* The invariants of the state under r->mu (see the comment at the top). */
static void check_state(api_storeref *r)
{
    check(!r->wview || (r->s && r->mode == STORE_WRITE && !r->busy), "a W-view without its kept writer");
    check(!r->wview || !r->closing || r->view_opening, "a W-view offered while closing, no view opening");
    check(!r->wview || r->wpins >= 1, "a current W-view holds no pin");
    check(!r->wpins || r->s, "a W-view outlived its handle");
    check(!r->reopen || (r->closing && r->view_opening && !r->view), "a reopen nobody waits for");
}

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
    check(!r->refs && !r->wpins && !r->wview, "closing a handle in use");
    store_t *s = r->s;
    r->s = NULL;
    r->busy = 1;
    if (r->yielding) r->yield_ms = store_now_ms();
    r->yielding = r->spoiled = 0;
    pthread_mutex_unlock(&r->mu);
    store_close(s);
    pthread_mutex_lock(&r->mu);
    r->busy = r->closing = 0;
    pthread_cond_broadcast(&r->cv);
}

/* Drops one reference (r->mu held); the view to close when it was the last. A W-view's
 * last reference is its pin on the writer handle: the keeper may be waiting for it. */
static api_view *unref(api_storeref *r, api_view *v)
{
    if (!v || --v->refs) return NULL;
    if (v->wview && --r->wpins == 0) pthread_cond_broadcast(&r->kcv);
    return v;
}

/* Closes views (mu not held): a W-view frees its caches only, a PEEK view its instance. */
static void close_list(api_view *v)
{
    while (v) {
        api_view *next = v->next;
        view_close(v);
        v = next;
    }
}

/* The keeper lets the handle go, its W-views done (r->mu held, closing): then, when calls
 * wait for it (reopen), opens the PEEK view, cheap now that the close flushed the index's
 * log, and trims the heap the handle's close freed into. */
static void let_go(api_storeref *r)
{
    int reopen = r->reopen;
    r->reopen = 0;
    close_locked(r);
    check_state(r);
    pthread_mutex_unlock(&r->mu);
    store_err e;
    if (reopen && view_open(r, &e))
        fprintf(stderr, "cairn serve: opening the read view after letting the store go: %s (calls retry)\n", e.msg);
    malloc_trim(0);
    pthread_mutex_lock(&r->mu);
    r->trim_due = 0;
}

/* The keeper's chores off the calls' path (r->mu held; 1 when it let go of r->mu): closing
 * replaced PEEK views, and trimming the heap after a job (see write_end). */
static int tidy(api_storeref *r)
{
    if (r->retired) {
        api_view *v = r->retired;
        r->retired = NULL;
        pthread_mutex_unlock(&r->mu);
        close_list(v);
        pthread_mutex_lock(&r->mu);
        return 1;
    }
    if (r->trim_due && !r->writer_active) {
        r->trim_due = 0;
        pthread_mutex_unlock(&r->mu);
        malloc_trim(0);
        pthread_mutex_lock(&r->mu);
        return 1;
    }
    return 0;
}

/* The keeper means to let the handle go (r->mu held; refs 0, or 1: the last job's end):
 * no one takes it from now on (closing), and the W-view is withdrawn. Calls then use a
 * PEEK view that lacks none of the W-view's commits: with open_first (idle: nobody waits
 * for the lock), one opened here before the close, with the lock still held and no job
 * able to start, while calls keep the W-view, so none waits; it replays the writer's log
 * (tens of ms) on this thread. Else the one the keeper opens right after the close, which
 * calls wait for (view_opening, reopen): a waiter gets the lock sooner. The current PEEK
 * view, if any, predates the W-view's commits: retired. 1 when r->mu was let go (the
 * caller looks again). */
static int close_begin(api_storeref *r, int open_first)
{
    if (r->wview && r->view_opening) {
        /* A PEEK open begun before the W-view: it ends first (it would publish over ours). */
        pthread_cond_wait(&r->cv, &r->mu);
        return 1;
    }
    r->closing = 1;
    if (!r->wview) return 0;
    api_view *old = unref(r, r->view);
    r->view = NULL;
    if (old) old->next = r->retired, r->retired = old;
    r->view_opening = 1;
    store_err e;
    if (open_first) {
        pthread_mutex_unlock(&r->mu);
        int rc = view_open(r, &e);
        if (rc) fprintf(stderr, "cairn serve: opening the read view before letting the store go: %s (again after)\n", e.msg);
        pthread_mutex_lock(&r->mu);
        if (rc) r->view_opening = 1;
    }
    r->reopen = r->view_opening;
    api_view *dead = unref(r, r->wview);
    r->wview = NULL;
    check_state(r);
    if (!dead) return 0;
    pthread_mutex_unlock(&r->mu);
    view_close(dead);
    pthread_mutex_lock(&r->mu);
    return 1;
}

/* Lets the kept writer handle go when idle, spoiled, or wanted by a waiter (see above). */
static void *keeper(void *arg)
{
    api_storeref *r = arg;
    int warned = 0;
    pthread_mutex_lock(&r->mu);
    while (!r->quit) {
        check_state(r);
        if (r->closing) {
            /* W-view calls take a ms or two, and new ones wait: this ends under any load. */
            if (r->refs || r->wpins || r->busy) pthread_cond_wait(&r->kcv, &r->mu);
            else let_go(r);
            continue;
        }
        if (tidy(r)) continue;
        if (!r->s || r->busy || r->mode != STORE_WRITE) {
            pthread_cond_wait(&r->kcv, &r->mu);
            continue;
        }
        store_err e;
        int w = store_lock_waiters(r->dir, &r->wait_fd, &e);
        if (w < 0 && !warned++) fprintf(stderr, "cairn serve: %s: not keeping the store open\n", e.msg);
        if (w) r->yielding = 1;           /* unknown: as if someone waited */
        if (!r->refs && (r->yielding || r->spoiled || store_now_ms() - r->idle_ms >= r->keep_ms)) {
            close_begin(r, !r->yielding && !r->spoiled);
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
    /* Every request has ended: the current views' own references are the last. */
    view_close(unref(r, r->wview));
    view_close(r->view);
    close_list(r->retired);
    check(!r->wpins, "a W-view is alive at the end");
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
        int kept = r->s && !r->busy && r->mode == STORE_WRITE && !r->yielding && !r->spoiled && !r->closing;
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

static void write_end(api_storeref *r);

void api_store_put(api_storeref *r, int mode)
{
    if (mode == STORE_WRITE) write_end(r);
    pthread_mutex_lock(&r->mu);
    if (--r->refs == 0) {
        if (r->mode != STORE_WRITE || r->keep_off || r->quit || r->spoiled || r->yielding) {
            /* W-views alive or closing begun (only while the keeper runs): the keeper
             * withdraws them and closes once they are done. */
            if (r->wview || r->wpins || r->closing) pthread_cond_broadcast(&r->kcv);
            else close_locked(r);
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

/* Closing a view closes its RocksDB instance (a few ms): done by whoever opens the next
 * one, never by a call that merely let go of it (api_view_put). */
static void view_close(api_view *v)
{
    if (!v) return;
    for (int i = 0; i < API_VIEW_CACHE; i++) {
        json_decref(v->cache[i].j);
        api_text_unref(v->cache[i].text);
    }
    pthread_mutex_destroy(&v->cache_mu);
    if (!v->wview) store_close(v->s);
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
    api_text_unref(v->cache[k].text);
    v->cache[k].text = NULL;
    v->cache[k].j = c;
    snprintf(v->cache[k].id, sizeof v->cache[k].id, "%s", id);
    snprintf(v->cache[k].tenant, sizeof v->cache[k].tenant, "%s", tenant);
    pthread_mutex_unlock(&v->cache_mu);
}

api_text *api_text_new(const char *s, size_t len)
{
    api_text *t = malloc(sizeof *t + len + 1);
    if (!t) return NULL;
    atomic_init(&t->refs, 1);
    t->len = len;
    memcpy(t->data, s, len);
    t->data[len] = 0;
    return t;
}

api_text *api_text_ref(api_text *t)
{
    atomic_fetch_add(&t->refs, 1);
    return t;
}

void api_text_unref(api_text *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1) free(t);
}

api_text *api_view_cached_text(api_view *v, const char *id)
{
    api_text *out = NULL;
    pthread_mutex_lock(&v->cache_mu);
    for (int i = 0; i < API_VIEW_CACHE && !out; i++)
        if (v->cache[i].text && !strcmp(v->cache[i].id, id)) out = api_text_ref(v->cache[i].text);
    pthread_mutex_unlock(&v->cache_mu);
    return out;
}

void api_view_keep_text(api_view *v, const char *id, api_text *t)
{
    pthread_mutex_lock(&v->cache_mu);
    unsigned k = v->cache_next++ % API_VIEW_CACHE;
    json_decref(v->cache[k].j);
    api_text_unref(v->cache[k].text);
    v->cache[k].j = NULL;
    v->cache[k].text = api_text_ref(t);
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
        old = unref(r, r->view);
        r->view = v;
    }
    r->view_opening = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    view_close(old);
    close_list(retired);
    return rc;
}

/* The current W-view with a reference for the caller, or NULL (r->mu held). */
static api_view *wview_get(api_storeref *r)
{
    api_view *v = r->wview;
    if (v) v->refs++;
    return v;
}

int api_view_get(api_storeref *r, api_view **out, store_err *e)
{
    *out = NULL;
    if (r->view_off) return 0;
    /* The W-view is fresh by construction: nobody else can commit while it is offered. */
    pthread_mutex_lock(&r->mu);
    *out = wview_get(r);
    pthread_mutex_unlock(&r->mu);
    if (*out) return 0;
    struct timespec now;
    if (manifests_stamp(r->dir, &now))
        return store_errf(e, -errno, "%s/manifests: %s", r->dir, strerror(errno));
    pthread_mutex_lock(&r->mu);
    for (;;) {
        if ((*out = wview_get(r))) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
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
            /* Opened after this call began (or a newer one since): fresh enough for it.
             * A job's end may have retired it for a W-view meanwhile: that one, then. */
            pthread_mutex_lock(&r->mu);
            if (!(*out = wview_get(r)) && (*out = r->view)) r->view->refs++;
            if (*out) {
                pthread_mutex_unlock(&r->mu);
                return 0;
            }
            continue;          /* no view at all now (a W-view came and went): again */
        }
        pthread_cond_wait(&r->cv, &r->mu);
    }
}

void api_view_put(api_storeref *r, api_view *v)
{
    pthread_mutex_lock(&r->mu);
    api_view *dead = unref(r, v);
    if (dead && !dead->wview) {
        /* Replaced, and this was its last user: the next opener or the keeper closes it. */
        dead->next = r->retired;
        r->retired = dead;
        dead = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    view_close(dead);          /* a W-view: its caches only, microseconds */
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

/* A new W-view over the writer handle s (mu not held), or NULL when out of memory. */
static api_view *wview_new(store_t *s)
{
    api_view *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    pthread_mutex_init(&v->cache_mu, NULL);
    v->s = s;
    v->wview = 1;
    return v;
}

/* The end of a writer job (its reference still held, so r->s is its handle), before its
 * answer: its changes become the views'. */
static void write_end(api_storeref *r)
{
    /* A commit whose index record was deferred (store/commit.c): the next open finishes
     * it, so this handle is not kept. */
    int any = 0;
    store_err e;
    int pend = store_commit_pending(r->s, &any, &e) || any;
    api_view *nv = NULL, *dead = NULL;
    pthread_mutex_lock(&r->mu);
    r->writer_active = 0;
    if (pend) r->spoiled = 1;
    int keep = !r->view_off && !r->keep_off && !r->quit && !r->spoiled && !r->yielding;
    if (keep && !r->keeper_on) r->keeper_on = pthread_create(&r->keeper, NULL, keeper, r) == 0;
    pthread_mutex_unlock(&r->mu);
    if (r->view_off) return;
    if (keep && r->keeper_on) nv = wview_new(r->s);
    pthread_mutex_lock(&r->mu);
    check(!r->closing, "a writer job ended on a handle being let go");
    if (nv) {
        /* The handle stays this server's: the view is a new W-view (a new generation:
         * empty caches), no open. The PEEK view, from before, is retired for good. */
        dead = unref(r, r->wview);
        api_view *old = unref(r, r->view);
        if (old) old->next = r->retired, r->retired = old;
        r->view = NULL;
        nv->refs = 1;
        nv->gen = ++r->view_gen;
        r->wview = nv;
        r->wpins++;
        r->own_writing = 0;
        /* The job's buffers were freed into the arenas of the threads that used them, and
         * glibc hands little of an arena back (RSS grew ~20 MiB per round of the API bench
         * while ~4 MiB were in use): the keeper trims now, beside the answer (~0.5 ms of
         * CPU since no view is replaced; the replaced view made it ~7 ms), so the RSS read
         * right after a 201 is mostly the trimmed one. */
        r->trim_due = 1;
        pthread_cond_broadcast(&r->kcv);
        check_state(r);
        pthread_mutex_unlock(&r->mu);
        view_close(dead);
        return;
    }
    if (r->wview && r->refs == 1) {
        /* Not kept, and this job is the handle's last user: closing begins now (nobody
         * takes the handle), and the keeper closes it after the answer and opens the
         * PEEK view the calls wait for, as when it lets go of an idle handle. */
        while (close_begin(r, 0)) {}
        r->own_writing = 0;
        check_state(r);
        pthread_mutex_unlock(&r->mu);
        return;
    }
    /* Not kept (or no memory for a W-view): the PEEK view is replaced while this job still
     * holds the lock, as before W-views. One that began during a W-view's time is stale. */
    while (r->view_opening) pthread_cond_wait(&r->cv, &r->mu);
    dead = unref(r, r->wview);
    int was_w = r->wview != NULL;
    r->wview = NULL;
    struct timespec now;
    api_view *v = r->view;
    /* Unreadable: replaced, and calls then find out for themselves. */
    int stale = was_w || !v || v->pending || manifests_stamp(r->dir, &now) || !same_time(&v->stamp, &now);
    if (stale) r->view_opening = 1;
    check_state(r);
    pthread_mutex_unlock(&r->mu);
    view_close(dead);
    if (stale && view_open(r, &e))
        fprintf(stderr, "cairn serve: replacing the read view after a commit: %s (calls reopen it)\n", e.msg);
    /* The replaced view's RocksDB instance and the job's buffers: as above, but no keeper
     * may be running to trim. */
    if (stale) malloc_trim(0);
    pthread_mutex_lock(&r->mu);
    r->own_writing = 0;
    pthread_mutex_unlock(&r->mu);
}
