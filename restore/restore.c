/* Full restore: recipe -> index locations -> groups in pack order -> parallel
 * decompress + verify -> pwrite runs into a sparse temp file -> rename. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "restore/restore.h"
#include "restore/tmpfile.h"
#include "store/events.h"
#include "store/toolbox.h"

typedef struct {
    uint64_t pack, offset, page;
    uint32_t clen;
    uint16_t npages, slot;
} ref;

typedef struct {
    store_t *s;
    const store_snapshot *snap;
    const store_blob *b;
    int fd;
    ref *refs;
    size_t *gstart;          /* refs[gstart[g] .. gstart[g+1]) share one group */
    /* Buffers per running task: a task borrows a free slot (at most `threads` run at once). */
    int *free_slots;
    unsigned nfree;
    uint8_t **frame, **pages;
    store_dctx **dctx;
    size_t fcap;
    pthread_mutex_t mu;
    int rc;
    store_err err;
} job;

static int cmp_ref(const void *x, const void *y)
{
    const ref *a = x, *b = y;
    if (a->pack != b->pack) return a->pack < b->pack ? -1 : 1;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    return a->page < b->page ? -1 : a->page > b->page;
}

/* qsort has no context argument: the recipe being sorted is set just before the call.
 * Restores of one process run one blob at a time per thread. */
static _Thread_local const store_id *idsort_ids;

static int cmp_page_by_id(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    int c = memcmp(&idsort_ids[a], &idsort_ids[b], 16);
    return c ? c : (a < b ? -1 : a > b);
}

static void fail(job *j, int rc, const char *fmt, const ref *r, const char *detail)
{
    pthread_mutex_lock(&j->mu);
    if (!j->rc) {
        j->rc = rc;
        char what[256];
        snprintf(what, sizeof what, fmt, detail);
        store_errf(&j->err, rc, "snapshot %s: %s: page at offset %llu (pack %016llx, group at %llu): %s",
                   j->snap->id, j->b->name, (unsigned long long)r->page * STORE_PAGE,
                   (unsigned long long)r->pack, (unsigned long long)r->offset, what);
    }
    pthread_mutex_unlock(&j->mu);
}

static void do_group_in(job *j, size_t g, unsigned t);

static void do_group(void *arg, size_t g)
{
    job *j = arg;
    if (j->rc) return;
    pthread_mutex_lock(&j->mu);
    unsigned t = (unsigned)j->free_slots[--j->nfree];
    pthread_mutex_unlock(&j->mu);
    do_group_in(j, g, t);
    pthread_mutex_lock(&j->mu);
    j->free_slots[j->nfree++] = (int)t;
    pthread_mutex_unlock(&j->mu);
}

static void do_group_in(job *j, size_t g, unsigned t)
{
    const ref *r0 = &j->refs[j->gstart[g]], *rend = &j->refs[j->gstart[g + 1]];
    store_loc loc = {.pack = r0->pack, .offset = r0->offset, .clen = r0->clen, .npages = r0->npages};
    store_err e;
    int rr = store_read_frame(j->s, &loc, j->frame[t], j->fcap, &e);
    if (rr) {
        /* -ESTALE: the pack is gone from the bucket (another node's gc): write_blob looks up
         * again and retries once. */
        fail(j, rr == -ENOENT ? -ESTALE : -EIO, "%s", r0, e.msg);
        return;
    }
    uint8_t *pages = j->pages[t];
    unsigned want = 0;
    for (const ref *r = r0; r < rend; r++)
        if (r->slot + 1u > want) want = r->slot + 1u;
    if (store_group_decompress_prefix(j->dctx[t], j->frame[t], r0->clen, pages, r0->npages, want, &e)) {
        fail(j, -EBADMSG, "%s: the pack is damaged; no wrong byte was written", r0, e.msg);
        return;
    }
    uint64_t verified = 0;
    for (const ref *r = r0; r < rend; r++) {
        if (r->slot >= r0->npages) {
            fail(j, -EUCLEAN, "%s", r, "the index points past its group (run fsck --rebuild-index)");
            return;
        }
        if (verified >> r->slot & 1) continue;
        store_id id;
        store_chunk_id(j->s, pages + (size_t)r->slot * STORE_PAGE, &id);
        /* The wanted id is the recipe's: look it up through the page index. */
        if (memcmp(&id, &j->b->ids[r->page], 16)) {
            fail(j, -EBADMSG, "%s", r, "the stored page does not match its id (corrupt pack); "
                 "no wrong byte was written");
            return;
        }
        verified |= 1ULL << r->slot;
    }
    /* Write runs: consecutive slots going to consecutive pages are one pwrite. */
    for (const ref *r = r0; r < rend;) {
        const ref *q = r + 1;
        while (q < rend && q->slot == q[-1].slot + 1 && q->page == q[-1].page + 1) q++;
        uint64_t off = r->page * STORE_PAGE;
        uint64_t len = (uint64_t)(q - r) * STORE_PAGE;
        if (off + len > j->b->size) len = j->b->size - off;   /* the partial last page */
        ssize_t w = 0;
        for (uint64_t done = 0; done < len; done += (uint64_t)w) {
            w = pwrite(j->fd, pages + (size_t)r->slot * STORE_PAGE + done, len - done, (off_t)(off + done));
            if (w < 0 && errno == EINTR) {
                w = 0;
                continue;
            }
            if (w <= 0) {
                fail(j, -errno, "writing: %s", r, strerror(errno));
                return;
            }
        }
        r = q;
    }
}

/* Writes b into the folder open at dirfd (>= 0, shown as dir) under name, or (dirfd < 0)
 * at path. */
static int write_blob(store_t *s, const store_snapshot *snap, const store_blob *b, int dirfd, const char *dir,
                      const char *name, const char *path, store_err *e)
{
    size_t n = 0;
    for (uint64_t i = 0; i < b->npages; i++) n += !store_id_is_zero(&b->ids[i]);
    store_id *ids = malloc((n ? n : 1) * sizeof *ids);
    uint64_t *pg = malloc((n ? n : 1) * sizeof *pg);
    store_loc *locs = malloc((n ? n : 1) * sizeof *locs);
    uint8_t *found = malloc(n ? n : 1);
    ref *refs = malloc((n ? n : 1) * sizeof *refs);
    size_t *gstart = malloc((n + 2) * sizeof *gstart);
    int rc = ids && pg && locs && found && refs && gstart ? 0 : store_errf(e, -ENOMEM, "out of memory");
    size_t k = 0;
    for (uint64_t i = 0; !rc && i < b->npages; i++)
        if (!store_id_is_zero(&b->ids[i])) pg[k++] = i;
    /* Look each distinct id up once: sort the pages by id, then one lookup per run. */
    idsort_ids = b->ids;
    if (!rc) qsort(pg, n, sizeof *pg, cmp_page_by_id);
    size_t nd = 0;
    for (size_t i = 0; !rc && i < n; i++)
        if (!nd || memcmp(&ids[nd - 1], &b->ids[pg[i]], 16)) ids[nd++] = b->ids[pg[i]];
    if (!rc) rc = store_lookup(s, ids, nd, found, locs, e);
    for (size_t i = 0, d = 0; !rc && i < n; i++) {
        if (i && memcmp(&b->ids[pg[i - 1]], &b->ids[pg[i]], 16)) d++;
        if (!found[d]) {
            char hex[STORE_ID_HEX];
            store_id_hex(&ids[d], hex);
            rc = store_errf(e, -ENOENT, "snapshot %s: %s: page at offset %llu: chunk %s is not in "
                            "the store", snap->id, b->name, (unsigned long long)pg[i] * STORE_PAGE, hex);
            break;
        }
        refs[i] = (ref){.pack = locs[d].pack, .offset = locs[d].offset, .page = pg[i],
                        .clen = locs[d].clen, .npages = locs[d].npages, .slot = locs[d].slot};
    }
    free(ids);
    free(pg);
    free(locs);
    free(found);
    size_t ngroups = 0;
    if (!rc) {
        qsort(refs, n, sizeof *refs, cmp_ref);
        for (size_t i = 0; i < n; i++)
            if (!i || refs[i].pack != refs[i - 1].pack || refs[i].offset != refs[i - 1].offset)
                gstart[ngroups++] = i;
        gstart[ngroups] = n;
    }

    /* The temp file sits beside the target so the final rename is atomic (tmpfile.h). */
    restore_tmpfile t = {.dirfd = -1, .fd = -1};
    int fd = -1;
    if (!rc) {
        rc = dirfd >= 0 ? restore_tmp_openat(&t, dirfd, dir, name, e) : restore_tmp_open(&t, path, e);
        fd = t.fd;
        if (!rc && ftruncate(fd, (off_t)b->size) < 0)
            rc = store_errf(e, -errno, "%s/%s: cannot size to %llu bytes: %s", t.dir, t.tmp,
                            (unsigned long long)b->size, strerror(errno));
    }

    /* One parallel pass over all groups (no waves, so no worker idles behind a slow one). */
    unsigned nslots = store_threads(s);
    job j = {.s = s, .snap = snap, .b = b, .fd = fd, .refs = refs, .gstart = gstart,
             .fcap = store_group_bound(STORE_GROUP_PAGES)};
    pthread_mutex_init(&j.mu, NULL);
    j.frame = calloc(nslots, sizeof *j.frame);
    j.pages = calloc(nslots, sizeof *j.pages);
    j.dctx = calloc(nslots, sizeof *j.dctx);
    j.free_slots = calloc(nslots, sizeof *j.free_slots);
    for (unsigned i = 0; !rc && i < nslots; i++) {
        if (j.frame) j.frame[i] = malloc(j.fcap);
        if (j.pages) j.pages[i] = malloc((size_t)STORE_GROUP_PAGES * STORE_PAGE);
        if (j.dctx) j.dctx[i] = store_dctx_new();
        if (j.free_slots) j.free_slots[j.nfree++] = (int)i;
        if (!j.frame || !j.pages || !j.dctx || !j.free_slots || !j.frame[i] || !j.pages[i] || !j.dctx[i])
            rc = store_errf(e, -ENOMEM, "out of memory");
    }
    if (!rc) {
        store_parallel(s, ngroups, do_group, &j);
        if (j.rc) {
            rc = j.rc;
            *e = j.err;
        }
    }
    if (!rc) rc = restore_tmp_commit(&t, e);
    else restore_tmp_abort(&t);
    for (unsigned i = 0; i < nslots; i++) {
        if (j.frame) free(j.frame[i]);
        if (j.pages) free(j.pages[i]);
        if (j.dctx) store_dctx_free(j.dctx[i]);
    }
    free(j.frame);
    free(j.pages);
    free(j.dctx);
    free(j.free_slots);
    pthread_mutex_destroy(&j.mu);
    free(refs);
    free(gstart);
    return rc;
}

/* A pack removed by another node's gc under a running restore: the store now knows where its
 * chunks went, so the blob is written once more from a fresh lookup (the temp file of the
 * first try is gone; nothing partial is left). */
static int write_blob_retry(store_t *s, const store_snapshot *snap, const store_blob *b, int dirfd,
                            const char *dir, const char *name, const char *path, store_err *e)
{
    int rc = write_blob(s, snap, b, dirfd, dir, name, path, e);
    if (rc == -ESTALE) rc = write_blob(s, snap, b, dirfd, dir, name, path, e);
    return rc == -ESTALE ? -EIO : rc;
}

int restore_blob(store_t *s, const store_snapshot *snap, const store_blob *b, const char *path,
                 store_err *e)
{
    return write_blob_retry(s, snap, b, -1, NULL, NULL, path, e);
}

typedef struct {
    const char *id;
    store_event drop;       /* the last drop event of id; kind 0 if none */
} why_dropped;

static int find_drop(void *arg, const store_event *ev)
{
    why_dropped *w = arg;
    if (ev->kind == STORE_EV_DROP && !strcmp(ev->snapshot, w->id)) w->drop = *ev;
    return 0;
}

int restore_snapshot(store_t *s, const char *id, const char *outdir,
                     restore_progress_fn progress, void *arg, store_err *e)
{
    return restore_snapshot_at(s, id, AT_FDCWD, outdir, outdir, progress, arg, e);
}

int restore_snapshot_at(store_t *s, const char *id, int dirfd, const char *name, const char *outdir,
                        restore_progress_fn progress, void *arg, store_err *e)
{
    store_snapshot *snap = NULL;
    int rc = store_snapshot_load(s, id, &snap, e);
    if (rc == -ENOENT) {
        /* Dropped by gc? events.log says why, and what brings the files back. */
        why_dropped w = {.id = id};
        store_err le;
        if (store_event_each(s, find_drop, &w, &le))
            return store_errf(e, -ENOENT, "no snapshot %s in %s (and events.log, which would say "
                              "why, cannot be read: %s)", id, store_dir(s), le.msg);
        char when[32];
        store_rfc3339(w.drop.at_ms, when);
        if (w.drop.kind == STORE_EV_DROP)
            return store_errf(e, -ENOENT, "snapshot %s was dropped by gc (%s) on %s; %s", id,
                              store_drop_reason_name(w.drop.reason), when,
                              w.drop.reason == STORE_DROP_RECLAIMED
                                  ? "its sandbox was reclaimed: `cairn rebuild --sandbox` brings its important "
                                    "files back in a fresh disk"
                                  : "it cannot be restored");
    }
    if (rc) return rc;
    if (snap->kind == STORE_KIND_FILES) {
        rc = store_errf(e, -ENOENT, "snapshot %s holds only the important files of reclaimed sandbox %s, not a "
                        "VM: `cairn rebuild --sandbox %s` makes a fresh disk with them", id, snap->sandbox,
                        snap->sandbox);
        store_snapshot_free(snap);
        return rc;
    }
    if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
        rc = store_errf(e, -errno, "%s: %s", outdir, strerror(errno));
    /* Two restores into one folder would each rename their files in, and each could say
     * "done" over a mix of both snapshots: the second is refused while the first runs. */
    /* Given a folder's descriptor, name is not followed if it is a symlink: the caller
     * checked that folder, and a link planted at name since must not lead elsewhere. */
    int lockfd = rc ? -1 : openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (dirfd == AT_FDCWD ? 0 : O_NOFOLLOW));
    if (!rc && lockfd < 0) rc = store_errf(e, -errno, "%s: %s", outdir, strerror(errno));
    if (!rc && flock(lockfd, LOCK_EX | LOCK_NB) < 0)
        rc = errno == EWOULDBLOCK ? store_errf(e, -EBUSY, "%s: another restore is writing into this "
                                               "folder now; try again when it is done", outdir)
                                  : store_errf(e, -errno, "%s: flock: %s", outdir, strerror(errno));
    uint64_t done = 0;
    /* Every file goes into the folder locked above, by its descriptor: the folder is
     * resolved once, whatever is renamed over its path meanwhile. */
    for (int i = 0; !rc && i < snap->nblobs; i++) {
        rc = write_blob_retry(s, snap, &snap->blobs[i], lockfd, outdir, snap->blobs[i].name, NULL, e);
        done += snap->blobs[i].size;
        if (progress) progress(arg, done, snap->logical_bytes);
    }
    if (lockfd >= 0) close(lockfd);     /* the lock goes with it */
    store_snapshot_free(snap);
    return rc;
}
