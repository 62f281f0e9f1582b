/* Ingest pipeline, one batch of BATCH_PAGES at a time:
 *   1. parallel: read a slice (a long extent mapped, short ones by pread, several extents
 *                to a batch), zero-test and hash each page; drop the pages the parent
 *                holds: at this offset, or anywhere once its ids are in a set (held)  (all cores)
 *   2. serial:   seen in this ingest? in the parent's set built since?  (no I/O)
 *   3. serial:   the rest looked up in the index in one multi_get; the parent's set is
 *                built once the lookups that found their id have cost as much as it
 *   4. misses are staged (stage.c): full groups are compressed by worker threads while the
 *      next batches are hashed and classified, and appended to packs in staging order
 * Holes are never read: SEEK_DATA/SEEK_HOLE give the data extents and the recipe's
 * ids start zeroed (a zero id is a zero page). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <linux/magic.h>
#include <unistd.h>
#include <xxhash.h>

#include "snapshotter/snapshotter.h"
#include "snapshotter/stage.h"
#include "store/toolbox.h"

#define BATCH_PAGES 2048u             /* 8 MiB read per batch */
#define SLICE_PAGES 128u              /* one parallel task */

typedef struct {
    store_t *s;
    store_writer *w;
    store_idset *seen;               /* ids this ingest stored: a repeat needs no lookup */
    const store_snapshot *reusable;  /* the parent, when its chunks may be named unlooked-up */
    store_idset *held;               /* every id of reusable's recipe, once built (held_build) */
    uint64_t found_total;            /* lookups so far that found their id */
    int verify;                      /* store_verify_dedup: every dedup hit is checked */
    struct h2 { store_id id; uint64_t h; } *h2;   /* verify: second hash of each id in seen */
    size_t h2n, h2cap;               /* open addressing, h2cap a power of two */
    /* current batch */
    int fd;
    uint64_t fsize;
    uint64_t *pg, npages;            /* the batch's pages: page numbers in the blob, ascending */
    store_blob *blob;
    const store_blob *parent;        /* the same blob in the parent snapshot, or NULL */
    uint8_t *buf;                    /* BATCH_PAGES pages; only candidates are filled */
    uint8_t *need;                   /* per page of the batch: 1 if it may be new */
    const uint8_t *map;              /* the batch's pages mapped read-only, or NULL */
    int read_err;                    /* first -errno of a slice, 0 if none */
    const char *path;                /* the blob's input file, for messages */
    snap_stage *stage;               /* new pages on their way to the packs */
    /* lookups */
    store_id *look_ids;
    uint32_t *look_pos;
    store_loc *look_locs;            /* verify: where each found id is stored */
    uint8_t *found;
    uint64_t done_bytes, total_bytes;
} ingest;

/* A mapped input that shrinks under us raises SIGBUS on access: the worker that touches
 * it jumps back to its slice and reports the file as changed, instead of the process
 * dying. Outside a mapped read the signal keeps its default action. */
static _Thread_local sigjmp_buf *bus_jmp;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (bus_jmp) siglongjmp(*bus_jmp, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_sigbus(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGBUS, &sa, NULL);
}

/* Zero-tests and hashes one page; pages the parent holds (at this offset, or anywhere in
 * its recipe once held is built) are done, the others are copied out as candidates. */
static void hash_page(ingest *g, uint64_t i, const uint8_t *p)
{
    uint64_t pg = g->pg[i];
    store_id *id = &g->blob->ids[pg];
    g->need[i] = 0;
    if (store_page_is_zero(p)) {
        memset(id, 0, sizeof *id);
        return;
    }
    store_chunk_id(g->s, p, id);
    if (store_id_is_zero(id)) g->read_err = -EILSEQ;   /* 2^-128: refuse, never guess */
    if (!g->verify && g->parent && pg < g->parent->npages && !memcmp(&g->parent->ids[pg], id, 16)) return;
    if (g->held && store_idset_has(g->held, id)) return;
    g->need[i] = 1;
    memcpy(g->buf + i * STORE_PAGE, p, STORE_PAGE);
}

/* Step 1 for one slice. With the batch mapped (a long extent) pages are hashed where
 * they sit in the page cache: no copy, which is what `cat` pays for. Without a mapping
 * (short extents, several to a batch), pread goes through a small buffer that stays in L2. */
#define READ_PAGES 32u
static void hash_slice(void *arg, size_t t)
{
    ingest *g = arg;
    uint64_t lo = t * SLICE_PAGES, hi = lo + SLICE_PAGES;
    if (hi > g->npages) hi = g->npages;
    if (g->map) {
        sigjmp_buf jb;
        if (sigsetjmp(jb, 0)) {
            bus_jmp = NULL;
            g->read_err = -ESTALE;
            return;
        }
        bus_jmp = &jb;
        for (uint64_t i = lo; i < hi; i++) hash_page(g, i, g->map + i * STORE_PAGE);
        bus_jmp = NULL;
        return;
    }
    _Alignas(64) uint8_t local[READ_PAGES * STORE_PAGE];
    for (uint64_t c = lo, ce; c < hi; c = ce) {
        for (ce = c + 1; ce < hi && ce - c < READ_PAGES && g->pg[ce] == g->pg[c] + (ce - c); ce++) {}
        uint64_t off = g->pg[c] * STORE_PAGE;
        size_t want = (size_t)(ce - c) * STORE_PAGE;
        size_t avail = off + want <= g->fsize ? want : (size_t)(g->fsize - off);
        size_t got = 0;
        while (got < avail) {
            ssize_t r = pread(g->fd, local + got, avail - got, (off_t)(off + got));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                g->read_err = r < 0 ? -errno : -ESTALE;   /* ESTALE: the file shrank under us */
                return;
            }
            got += (size_t)r;
        }
        memset(local + avail, 0, want - avail);           /* the last page may be partial */
        for (uint64_t i = c; i < ce; i++) hash_page(g, i, local + (i - c) * STORE_PAGE);
    }
}

/* A second hash, independent of the chunk id (unkeyed, other seed), for pages repeated
 * inside one ingest: their first copy is still staged or in a pack not yet indexed. */
static uint64_t second_hash(const uint8_t *page) { return XXH3_64bits_withSeed(page, STORE_PAGE, 0x9e3779b97f4a7c15ULL); }

static struct h2 *h2_slot(ingest *g, const store_id *id)
{
    uint64_t k;
    memcpy(&k, id->b, 8);
    for (size_t i = (size_t)(k * 0x9e3779b97f4a7c15ULL >> 20) & (g->h2cap - 1);; i = (i + 1) & (g->h2cap - 1))
        if (store_id_is_zero(&g->h2[i].id) || !memcmp(&g->h2[i].id, id, 16)) return &g->h2[i];
}

static int h2_add(ingest *g, const store_id *id, const uint8_t *page, store_err *e)
{
    if (2 * (g->h2n + 1) > g->h2cap) {
        size_t ncap = g->h2cap ? 2 * g->h2cap : 1024;
        struct h2 *old = g->h2;
        size_t ocap = g->h2cap;
        g->h2 = calloc(ncap, sizeof *g->h2);
        if (!g->h2) {
            g->h2 = old;
            return store_errf(e, -ENOMEM, "out of memory");
        }
        g->h2cap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (!store_id_is_zero(&old[i].id)) *h2_slot(g, &old[i].id) = old[i];
        free(old);
    }
    struct h2 *x = h2_slot(g, id);
    if (store_id_is_zero(&x->id)) g->h2n++;
    x->id = *id;
    x->h = second_hash(page);
    return 0;
}

static int collision(ingest *g, const store_id *id, uint64_t i, store_err *e)
{
    char hex[STORE_ID_HEX];
    store_id_hex(id, hex);
    return store_errf(e, -EEXIST, "%s: the page at offset %llu has chunk id %s, which names other "
                      "bytes already (a hash collision): snapshot refused, nothing stored",
                      g->path, (unsigned long long)(g->pg[i] * STORE_PAGE), hex);
}

/* verify: a repeat of a page this ingest stored must have its bytes (second hash). */
static int check_repeat(ingest *g, const store_id *id, uint64_t i, store_err *e)
{
    if (!g->verify) return 0;
    struct h2 *x = g->h2cap ? h2_slot(g, id) : NULL;
    if (!x || store_id_is_zero(&x->id)) return store_errf(e, -EIO, "internal: repeat of an id not staged");
    return x->h == second_hash(g->buf + i * STORE_PAGE) ? 0 : collision(g, id, i, e);
}

/* seen holds an id from its staging until its pack is indexed (the stage's indexed
 * callback, seen_forget), so it is added after snap_stage_page, whose appends may call
 * that back. */
static int seen_add(void *arg, const store_id *id, const uint8_t *page)
{
    ingest *g = arg;
    if (g->verify && h2_add(g, id, page, NULL)) return -ENOMEM;
    return store_idset_add(g->seen, id) ? -ENOMEM : 0;
}

/* A pack's chunks are in the index now: lookups find them, the set can forget them, and
 * memory stays bounded by one pack whatever the size of the input. What is staged and not
 * in a pack yet stays. */
static int seen_forget(void *arg, store_err *e)
{
    ingest *g = arg;
    store_idset_clear(g->seen);
    if (g->h2) memset(g->h2, 0, g->h2cap * sizeof *g->h2);
    g->h2n = 0;
    return snap_stage_pending(g->stage, seen_add, g) ? store_errf(e, -ENOMEM, "out of memory") : 0;
}

static int stage_page(ingest *g, const store_id *id, const uint8_t *page, store_err *e)
{
    int rc = snap_stage_page(g->stage, id, page, e);
    if (!rc && seen_add(g, id, page)) rc = store_errf(e, -ENOMEM, "out of memory");
    return rc;
}

/* Every id of the parent's recipe, whatever the blob or offset: a page found in it needs no
 * lookup, for the reasons the same-offset shortcut needs none, none of which is about the
 * offset. The id is the keyed hash of the page, so the page has that chunk's bytes (the
 * verify mode, which doubts exactly that, takes neither shortcut). And the chunk stays
 * stored until this snapshot is committed: locally, gc keeps every id that any manifest
 * names, in any blob at any offset (gc/sweep.c), and its exclusive section re-reads the
 * manifests that appeared meanwhile, the parent's among them; on S3, g->reusable is set
 * only when store_writer_may_reuse said the parent's manifest is in the bucket and no
 * fossil was pending, so each chunk it names has a copy that outlives this writer
 * (docs/s3.md, rule 4). It pays when a guest moved pages (its page cache and heap do):
 * each such page is found by a lookup otherwise, ~1.2 us of RocksDB multi_get. */
static int held_build(ingest *g, store_err *e)
{
    const store_snapshot *p = g->reusable;
    size_t n = 0;
    for (int b = 0; b < p->nblobs; b++)
        for (uint64_t k = 0; k < p->blobs[b].npages; k++) n += !store_id_is_zero(&p->blobs[b].ids[k]);
    g->held = store_idset_new();
    int rc = g->held ? store_idset_reserve(g->held, n) : -ENOMEM;
    for (int b = 0; !rc && b < p->nblobs; b++)
        for (uint64_t k = 0; !rc && k < p->blobs[b].npages; k++) rc = store_idset_add(g->held, &p->blobs[b].ids[k]);
    return rc ? store_errf(e, -ENOMEM, "out of memory for the ids of the parent %s", p->id) : 0;
}

/* The set costs ~15 ns per page of the parent's recipe, each lookup that it would spare
 * ~1.2 us: it is built once the lookups that found their id have cost about as much, so
 * a second snapshot whose pages stayed in place (the usual case) never pays for it and
 * one whose pages moved pays at most twice the best choice. */
static int held_due(ingest *g, store_err *e)
{
    if (g->held || !g->reusable) return 0;
    uint64_t pages = 0;
    for (int b = 0; b < g->reusable->nblobs; b++) pages += g->reusable->blobs[b].npages;
    return g->found_total >= pages / 64 ? held_build(g, e) : 0;
}

/* Steps 2-4 for the candidates of the batch (g->need). */
static int classify_batch(ingest *g, store_err *e)
{
    size_t nlook = 0;
    for (uint64_t i = 0; i < g->npages; i++) {
        if (!g->need[i]) continue;
        const store_id *id = &g->blob->ids[g->pg[i]];
        if (store_idset_has(g->seen, id)) {
            int rc = check_repeat(g, id, i, e);
            if (rc) return rc;
            continue;
        }
        if (g->held && store_idset_has(g->held, id)) continue;   /* hashed before held was built */
        g->look_ids[nlook] = *id;
        g->look_pos[nlook++] = (uint32_t)i;
    }
    if (!nlook) return 0;
    int rc = store_writer_lookup(g->w, g->look_ids, nlook, g->found, g->verify ? g->look_locs : NULL, e);
    if (rc) return rc;
    for (size_t k = 0; k < nlook; k++) g->found_total += g->found[k];
    for (size_t k = 0; k < nlook; k++) {
        if (g->found[k] && g->verify) {
            rc = store_chunk_verify(g->s, &g->look_ids[k], &g->look_locs[k],
                                    g->buf + (size_t)g->look_pos[k] * STORE_PAGE, e);
            if (rc == 1) return collision(g, &g->look_ids[k], g->look_pos[k], e);
            if (rc) return rc;
        }
        if (g->found[k]) continue;
        if (store_idset_has(g->seen, &g->look_ids[k])) {
            rc = check_repeat(g, &g->look_ids[k], g->look_pos[k], e);
            if (rc) return rc;
            continue;
        }
        rc = stage_page(g, &g->look_ids[k], g->buf + (size_t)g->look_pos[k] * STORE_PAGE, e);
        if (rc) return rc;
    }
    return 0;
}

/* Extents shorter than this share batches, read with pread: a sparse guest memory has
 * ~1 000 short extents (sb01/2: 1 183, 714 of them <= 16 pages), and as a batch each
 * cost a mapping, a parallel round and an unmapping whose TLB shootdown reaches every core.
 * A mapping pays for itself over longer runs, which keep batches of their own. */
#define SHORT_RUN 64u

/* Steps 1-4 for the batch g->pg[0..npages), which then is empty again. */
static int run_batch(ingest *g, snap_progress_fn progress, void *parg, store_err *e)
{
    if (!g->npages) return 0;
    g->read_err = 0;
    size_t mlen = (size_t)g->npages * STORE_PAGE;
    if (g->npages >= SHORT_RUN && g->pg[g->npages - 1] - g->pg[0] == g->npages - 1) {   /* one run */
        /* Bytes past EOF in the last page read as zeros in a mapping, as in the pread path. */
        void *m = mmap(NULL, mlen, PROT_READ, MAP_SHARED | MAP_POPULATE, g->fd, (off_t)(g->pg[0] * STORE_PAGE));
        g->map = m == MAP_FAILED ? NULL : m;
    }
    store_parallel(g->s, (g->npages + SLICE_PAGES - 1) / SLICE_PAGES, hash_slice, g);
    if (g->map) munmap((void *)g->map, mlen);   /* keeps RSS flat whatever the file size */
    g->map = NULL;
    if (g->read_err)
        return store_errf(e, g->read_err, "%s: %s", g->path,
                          g->read_err == -ESTALE   ? "the file changed size while it was read"
                          : g->read_err == -EILSEQ ? "a page hashed to the reserved zero id"
                                                   : strerror(-g->read_err));
    int rc = held_due(g, e);
    if (!rc) rc = classify_batch(g, e);
    if (rc) return rc;
    if (progress) progress(parg, g->done_bytes + (g->pg[g->npages - 1] + 1) * STORE_PAGE, g->total_bytes);
    g->npages = 0;
    return 0;
}

static int ingest_blob(ingest *g, store_blob *b, int fd, const store_blob *parent, const char *path,
                       snap_progress_fn progress, void *parg, store_err *e)
{
    g->fd = fd;
    g->path = path;
    g->fsize = b->size;
    g->blob = b;
    g->parent = parent;
    g->npages = 0;
    uint64_t pos = 0;
    int rc = 0;
    while (!rc && pos < b->size) {
        off_t ds = lseek(fd, (off_t)pos, SEEK_DATA);
        if (ds < 0 && errno == ENXIO) break;                /* only a hole remains */
        if (ds < 0) ds = (off_t)pos;                        /* no SEEK_DATA here: read all */
        off_t de = lseek(fd, ds, SEEK_HOLE);
        if (de < 0 || (uint64_t)de > b->size) de = (off_t)b->size;
        uint64_t p0 = (uint64_t)ds / STORE_PAGE, p1 = ((uint64_t)de + STORE_PAGE - 1) / STORE_PAGE;
        int own = p1 - p0 >= SHORT_RUN;                     /* a long run: batches of its own */
        if (own) rc = run_batch(g, progress, parg, e);
        for (uint64_t p = p0; !rc && p < p1; p++) {
            g->pg[g->npages++] = p;
            if (g->npages == BATCH_PAGES) rc = run_batch(g, progress, parg, e);
        }
        if (!rc && own) rc = run_batch(g, progress, parg, e);
        pos = (uint64_t)de > pos ? (uint64_t)de : b->size;
        if (pos % STORE_PAGE) pos = (pos / STORE_PAGE + 1) * STORE_PAGE;
    }
    if (!rc) rc = run_batch(g, progress, parg, e);
    if (!rc) g->done_bytes += b->size;
    return rc;
}

static int open_input(const char *path, int *fd, uint64_t *size, store_err *e)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; we refuse it below. */
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(*fd, &st) < 0) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return store_errf(e, -EINVAL, "%s: not a regular file (%s)", path,
                          S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                          : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "special");
    /* A pseudo file (/proc, /sys) says nothing true with its size: /proc/self/status is
     * "0 bytes" with content, a sysfs attribute "4096 bytes" with less. Storing what its size
     * says would acknowledge wrong bytes, so such files are refused. */
    struct statfs fs;
    if (fstatfs(*fd, &fs) < 0) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    if (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC || fs.f_type == DEBUGFS_MAGIC)
        return store_errf(e, -EINVAL, "%s: a /proc, /sys or debugfs file, whose size is not its "
                          "content: copy it to a regular file first", path);
    if (st.st_size == 0) {
        char probe;
        ssize_t n = pread(*fd, &probe, 1, 0);
        if (n < 0) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
        if (n > 0)
            return store_errf(e, -EINVAL, "%s: its size is 0 but it has content (a pseudo file): copy "
                              "it to a regular file first", path);
    }
    *size = (uint64_t)st.st_size;
    posix_fadvise(*fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return 0;
}

static void ingest_free(ingest *g)
{
    store_idset_free(g->seen);
    store_idset_free(g->held);
    free(g->h2);
    snap_stage_free(g->stage);   /* first: its workers read the pages it holds */
    free(g->buf);
    free(g->look_ids);
    free(g->look_pos);
    free(g->look_locs);
    free(g->found);
    free(g->need);
    free(g->pg);
}

void snap_prepare_index(snap_request *req)
{
    /* A hostile image can cost the index, never the snapshot (a hibernated VM must come
     * back whatever its filesystem holds): failures become req->warning. */
    req->warning[0] = 0;
    req->index_tried = 1;
    for (int i = 0; req->policy && !req->files && i < req->nblobs; i++) {
        if (strcmp(req->blob_name[i], "disk")) continue;
        struct stat st;
        if (stat(req->blob_path[i], &st) < 0 || !S_ISREG(st.st_mode)) return;   /* ingest says why */
        store_err ie;
        char jwarn[256];
        if (snap_index_disk_replayed(req->blob_path[i], (uint64_t)st.st_size, &req->files, jwarn,
                                     sizeof jwarn, &ie)) {
            snprintf(req->warning, sizeof req->warning, "no file index for the disk: %s", ie.msg);
            return;
        }
        if (snap_policy_apply(req->policy, req->files)) {
            store_findex_free(req->files);
            req->files = NULL;
            snprintf(req->warning, sizeof req->warning, "no file index for the disk: out of memory "
                     "while classing its files");
            return;
        }
        if (req->files->warning)
            snprintf(req->warning, sizeof req->warning, "partial file index: %s", req->files->warning);
        else if (jwarn[0])
            snprintf(req->warning, sizeof req->warning, "file index: %s", jwarn);
    }
}

struct snap_index_job {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;               /* CLOCK_MONOTONIC */
    int done;
};

static void *index_main(void *arg)
{
    snap_request *req = arg;
    snap_prepare_index(req);
    struct snap_index_job *j = req->index_job;
    pthread_mutex_lock(&j->mu);
    j->done = 1;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

void snap_index_start(snap_request *req)
{
    struct snap_index_job *j = calloc(1, sizeof *j);
    pthread_condattr_t ca;
    int ok = j && !pthread_condattr_init(&ca);
    if (ok) {
        ok = !pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) && !pthread_cond_init(&j->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (ok && pthread_mutex_init(&j->mu, NULL)) {
        pthread_cond_destroy(&j->cv);
        ok = 0;
    }
    if (ok) {
        req->index_job = j;
        if (!pthread_create(&j->thread, NULL, index_main, req)) return;
        req->index_job = NULL;
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
    }
    free(j);
    snap_prepare_index(req);         /* no thread: the walk costs its time here, as before */
}

/* The walk is done, or ms have passed: 1 if it is done (and joined). */
static int index_join(snap_request *req, int64_t ms)
{
    struct snap_index_job *j = req->index_job;
    if (!j) return 1;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&j->mu);
    int w = 0;
    while (!j->done && w != ETIMEDOUT)
        w = ms < 0 ? pthread_cond_wait(&j->cv, &j->mu) : pthread_cond_timedwait(&j->cv, &j->mu, &until);
    int done = j->done;
    pthread_mutex_unlock(&j->mu);
    if (!done) return 0;
    pthread_join(j->thread, NULL);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
    req->index_job = NULL;
    return 1;
}

void snap_index_wait(snap_request *req) { (void)index_join(req, -1); }

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

#define INDEX_WAIT_MIN_MS 100

int snap_ingest(store_t *s, snap_request *req, store_snapshot **out, store_err *e)
{
    int64_t t0 = mono_ms();
    *out = NULL;
    if (store_name_valid(req->tenant) || store_name_valid(req->sandbox))
        return store_errf(e, -EINVAL, "tenant and sandbox names are 1-128 of [A-Za-z0-9._-], "
                          "not starting with '.' or '-'");
    int is_template = !strcmp(req->tenant, STORE_TEMPLATE_TENANT) && store_template_name(req->sandbox);
    if (req->template_add ? !is_template
                          : store_name_reserved(req->tenant) || store_name_reserved(req->sandbox))
        return store_errf(e, -EINVAL, req->template_add
                          ? "a template is stored as sandbox _tpl.NAME of tenant " STORE_TEMPLATE_TENANT
                          : "names starting with '_' are reserved for Cairn's own snapshots "
                            "(templates): tenant '%s', sandbox '%s'", req->tenant, req->sandbox);
    if (req->nblobs < 1 || req->nblobs > STORE_MAX_BLOBS)
        return store_errf(e, -EINVAL, "a snapshot needs at least one file");
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_sigbus);
    int fds[STORE_MAX_BLOBS];
    for (int i = 0; i < STORE_MAX_BLOBS; i++) fds[i] = -1;
    store_snapshot *snap = calloc(1, sizeof *snap), *parent = NULL;
    ingest g = {.s = s, .verify = store_verify_dedup(s)};
    int rc = snap ? 0 : store_errf(e, -ENOMEM, "out of memory");
    /* Check every input before storing anything. */
    for (int i = 0; !rc && i < req->nblobs; i++) {
        store_blob *b = &snap->blobs[i];
        snprintf(b->name, sizeof b->name, "%s", req->blob_name[i]);
        rc = open_input(req->blob_path[i], &fds[i], &b->size, e);
        if (rc) break;
        snap->nblobs = i + 1;
        b->npages = (b->size + STORE_PAGE - 1) / STORE_PAGE;
        b->ids = calloc(b->npages ? b->npages : 1, sizeof *b->ids);
        if (!b->ids) rc = store_errf(e, -ENOMEM, "%s: out of memory for its recipe", req->blob_path[i]);
        snap->logical_bytes += b->size;
    }
    /* The disk's file index, unless the caller built it before taking the store's lock or
     * started it (joined before the commit). */
    if (!rc && !req->index_job && !req->index_tried) snap_prepare_index(req);
    if (!rc) {
        if (req->template_name) snprintf(snap->template_name, sizeof snap->template_name, "%s", req->template_name);
        snprintf(snap->tenant, sizeof snap->tenant, "%s", req->tenant);
        snprintf(snap->sandbox, sizeof snap->sandbox, "%s", req->sandbox);
        snap->tier = req->tier;
        snap->kind = STORE_KIND_FULL;
        char pid[STORE_SNAPID_LEN];
        if (store_snapshot_latest(s, req->sandbox, pid, NULL) == 0 &&
            store_snapshot_load(s, pid, &parent, NULL) == 0) {
            if (strcmp(parent->tenant, req->tenant))
                rc = store_errf(e, -EPERM, "sandbox %s belongs to tenant %s, not %s", req->sandbox,
                                parent->tenant, req->tenant);
            snprintf(snap->parent, sizeof snap->parent, "%s", pid);
        }
    }
    g.buf = malloc((size_t)BATCH_PAGES * STORE_PAGE);
    g.look_ids = malloc(BATCH_PAGES * sizeof *g.look_ids);
    g.look_pos = malloc(BATCH_PAGES * sizeof *g.look_pos);
    g.found = malloc(BATCH_PAGES);
    g.need = malloc(BATCH_PAGES);
    g.pg = malloc(BATCH_PAGES * sizeof *g.pg);
    g.seen = store_idset_new();
    if (g.verify) g.look_locs = malloc(BATCH_PAGES * sizeof *g.look_locs);
    int nomem = (g.verify && !g.look_locs) || !g.seen || !g.need || !g.pg || !g.buf || !g.look_ids || !g.look_pos || !g.found;
    if (!rc && nomem) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = store_writer_open(s, &g.w, e);
    if (!rc) rc = snap_stage_new(s, g.w, seen_forget, &g, &g.stage, e);
    /* The parent's recipe spares lookups only where the store says its chunks will stay
     * (on S3, gc across nodes: docs/s3.md); else every page is looked up. */
    int reuse = 1;
    if (!rc && parent && (reuse = store_writer_may_reuse(g.w, parent->id, 0, e)) < 0) rc = reuse;
    if (parent && reuse == 1 && !g.verify) g.reusable = parent;
    g.total_bytes = snap ? snap->logical_bytes : 0;
    for (int i = 0; !rc && i < snap->nblobs; i++) {
        const store_blob *pb = NULL;
        for (int k = 0; parent && reuse == 1 && k < parent->nblobs; k++)
            if (!strcmp(parent->blobs[k].name, snap->blobs[i].name)) pb = &parent->blobs[k];
        rc = ingest_blob(&g, &snap->blobs[i], fds[i], pb, req->blob_path[i], req->progress,
                         req->progress_arg, e);
    }
    if (!rc) rc = snap_stage_finish(g.stage, e);
    snap_stage_free(g.stage);                     /* before the writer it borrows */
    g.stage = NULL;
    /* A walk still running may hold the store's lock only as long again as the ingest took:
     * past that the caller lets the store go while it finishes, and takes the snapshot again
     * (so a slow image costs the lock little, and neither the snapshot nor its index). On S3
     * the writer's commit bound (20 min, docs/s3.md) is not at stake: the wait is also cut
     * by the walk's own limits (a few minutes with a journal replay), started before. */
    if (!rc && req->index_job) {
        int64_t took = mono_ms() - t0;
        if (!index_join(req, took > INDEX_WAIT_MIN_MS ? took : INDEX_WAIT_MIN_MS))
            rc = store_errf(e, -EINPROGRESS, "the disk's file index is still being built after %lld ms "
                            "of ingest: take the snapshot again once it is", (long long)(mono_ms() - t0));
    }
    if (!rc && req->files) {
        snap->files = req->files;          /* the snapshot owns it now */
        req->files = NULL;
    }
    if (!rc) {
        rc = store_writer_commit(g.w, snap, e);   /* frees the writer either way */
        g.w = NULL;
    }
    if (g.w) store_writer_abort(g.w);
    for (int i = 0; i < STORE_MAX_BLOBS; i++)
        if (fds[i] >= 0) close(fds[i]);
    ingest_free(&g);
    store_snapshot_free(parent);
    if (!req->index_job) {                 /* else the walk's, for the caller after snap_index_wait */
        store_findex_free(req->files);     /* not moved into a snapshot: an early error */
        req->files = NULL;
    }
    if (rc) {
        store_snapshot_free(snap);
        return rc;
    }
    *out = snap;
    return 0;
}
