/* The commit protocol: what makes invariant I1 of store.h true.
 *
 * A snapshot is acknowledged only in this order, each step durable before the next:
 *   1. its packs: sealed, fsynced, renamed from .tmp, the packs folder fsynced;
 *   2. its chunks' locations in the index, with a "pending:<id>" key (one synced batch);
 *   3. its file index (manifests/ID.files), then its manifest (manifests/ID.cmf): the
 *      manifest's rename is the commit point;
 *   4. its index record, deleting the pending key.
 * A crash before 3 leaves garbage only (packs nobody names, index entries that point at
 * durable packs); a crash between 3 and 4 is finished by the next writer's open
 * (commit_recover_pending). The index never names a chunk of a pack that is not durable.
 * Snapshot ids come from a per-store hybrid logical clock, so they sort in commit order.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/internal.h"
#include "store/upload.h"

static int new_snapshot_id(char out[STORE_SNAPID_LEN], int64_t ms)
{
    uint32_t r;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&r, sizeof r, 1, f) != 1) {
        if (f) fclose(f);
        return -EIO;
    }
    fclose(f);
    snprintf(out, STORE_SNAPID_LEN, "%012llx%08x", (unsigned long long)ms & 0xffffffffffffULL, r);
    return 0;
}

/* The time part of a new snapshot id: the wall clock, but always past every id this store
 * handed out before (a hybrid logical clock). Ids sort in commit order whatever the clock
 * does, and every order in the store (a sandbox's snapshots, "latest", gc's superseded) is
 * id order: a clock stepped back can no longer make the newest snapshot look older than
 * its parent. After a forward step that is later undone, ids run ahead of the wall clock by
 * up to the step until it catches up; the order stays right. The newest id is the last key
 * of the snapshots family (the next writer open finished any pending commit first). */
static int commit_sequence(store_t *s, int64_t now, int64_t *seq, store_err *e)
{
    if (!s->last_id_ms) {
        rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_SNAPSHOTS]);
        rocksdb_iter_seek_to_last(it);
        if (rocksdb_iter_valid(it)) {
            size_t kl;
            const char *k = rocksdb_iter_key(it, &kl);
            char hex[13] = "";
            if (kl == 20) {
                memcpy(hex, k, 12);
                s->last_id_ms = (int64_t)strtoll(hex, NULL, 16);
            }
        }
        /* A failed read must not restart the clock at the wall time (ids out of order). */
        int rc = index_iter_status(it, e, "finding the newest snapshot id");
        rocksdb_iter_destroy(it);
        if (rc) return rc;
    }
    /* On S3 not below the bucket's clock either (as last read, plus the time since by the
     * monotonic clock: a lower bound), so a writer whose clock is behind still names its
     * manifests within the other nodes' refresh window (refresh.c). */
    if (s->bucket_mono_ms) {
        int64_t b = s->bucket_ms + (store_mono_ms() - s->bucket_mono_ms);
        if (b > now) now = b;
    }
    int64_t t = now & 0xffffffffffffLL;
    if (t <= s->last_id_ms) t = s->last_id_ms + 1;
    s->last_id_ms = t;
    *seq = t;
    return 0;
}

/* Packs durable: seal, fsync each, rename, then one fsync of the folder. With S3, durable
 * means in the bucket: the new packs are queued for upload (in the background, a few at
 * once), and with wait set this returns once every one is stored. */
static int sync_packs(store_writer *w, int wait, store_err *e)
{
    store_t *s = w->s;
    int rc = pack_seal(w, e);
    size_t first = w->synced;
    for (size_t i = first; !rc && i < w->npacks; i++) {
        if (fsync(w->fds[i]) < 0) {
            rc = store_errf(e, -errno, "%s/packs: fsync: %s", s->dir, strerror(errno));
            break;
        }
        close(w->fds[i]);
        w->fds[i] = -1;
        char *tmp = pack_path(s, w->packs[i], 1), *fin = pack_path(s, w->packs[i], 0);
        if (!tmp || !fin || rename(tmp, fin) < 0)
            rc = store_errf(e, -errno, "%s/packs: rename: %s", s->dir, strerror(errno));
        free(tmp);
        free(fin);
    }
    char *packdir = util_path(s->dir, "packs");
    if (!rc && w->npacks > first && (rc = util_fsync_dir(packdir)))
        store_errf(e, rc, "%s: fsync: %s", packdir, strerror(-rc));
    free(packdir);
    /* With S3 nothing indexes these chunks before their PUT succeeded (uploader_done). */
    if (!rc && s->be->remote && !w->up) rc = uploader_new(s, &w->up, e);
    for (size_t i = first; !rc && s->be->remote && i < w->npacks; i++) rc = uploader_add(w->up, w->packs[i], e);
    if (!rc) w->synced = w->npacks;
    if (!rc && wait && w->up) rc = uploader_wait(w->up, e);
    return rc;
}

/* The order in which to put ids[0..n) into a batch: ascending by their first 8 bytes (the
 * index's byte order), so that RocksDB's memtable inserts them one after the other instead
 * of searching its skip list from the top for each random id (a first snapshot's 24k
 * chunks: 38 ms of CPU unsorted, 10 sorted). A radix sort, stable: a repeated id keeps its
 * order. NULL when out of memory: the caller then puts them as they come (only slower). */
struct sort_key { uint64_t k; uint32_t i; };

static struct sort_key *sorted_order(const store_id *ids, size_t n)
{
    struct sort_key *a = malloc((n ? n : 1) * sizeof *a), *t = malloc((n ? n : 1) * sizeof *t);
    if (!a || !t || n > UINT32_MAX) {
        free(a);
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t k = 0;
        for (int j = 0; j < 8; j++) k = k << 8 | ids[i].b[j];
        a[i] = (struct sort_key){k, (uint32_t)i};
    }
    for (int shift = 0; shift < 64; shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++) count[(a[i].k >> shift & 0xff) + 1]++;
        for (int d = 0; d < 256; d++) count[d + 1] += count[d];
        for (size_t i = 0; i < n; i++) t[count[a[i].k >> shift & 0xff]++] = a[i];
        struct sort_key *x = a;
        a = t;
        t = x;
    }
    free(t);
    return a;
}

/* Puts the locations of the first n chunks not indexed yet into batch b, with the chunk
 * counter, and forgets them (memory stays bounded by the packs in flight). */
static int batch_chunks(store_writer *w, rocksdb_writebatch_t *b, size_t n, store_err *e)
{
    store_t *s = w->s;
    uint64_t chunks = 0;
    int rc = index_get_counter(s, "chunks", &chunks, e);
    if (rc) return rc;
    struct sort_key *order = sorted_order(w->all_ids, n);
    for (size_t j = 0; j < n; j++) {
        size_t i = order ? order[j].i : j;
        uint8_t v[40];
        size_t vl;
        index_encode_loc(&w->all_locs[i], v, &vl);
        rocksdb_writebatch_put_cf(b, s->cf[CF_CHUNKS], (const char *)w->all_ids[i].b, 16, (const char *)v, vl);
    }
    free(order);
    char num[32];
    int nl = snprintf(num, sizeof num, "%llu", (unsigned long long)(chunks + n));
    rocksdb_writebatch_put(b, "chunks", 6, num, (size_t)nl);
    w->total_chunks += n;
    if (w->nall > n) {    /* else nothing stays, and the arrays may be NULL: memmove of NULL is UB */
        memmove(w->all_ids, w->all_ids + n, (w->nall - n) * sizeof *w->all_ids);
        memmove(w->all_locs, w->all_locs + n, (w->nall - n) * sizeof *w->all_locs);
    }
    w->nall -= n;
    w->generation++;
    return 0;
}

/* A sealed pack is made durable and its chunks indexed at once (not synced: the commit's
 * synced write covers them). The index still never names a chunk of a pack that is not
 * durable (I1), and a crash before the commit leaves these entries as garbage that points
 * at valid packs. */
int commit_index_sealed(store_writer *w, store_err *e)
{
    int rc = sync_packs(w, 0, e);
    if (rc) return rc;
    size_t n = w->nall;
    if (w->up) {
        /* Only the packs already stored, in order: the others' chunks wait for a later
         * seal or the commit (a pack still in flight costs at most a missed dedup). */
        size_t k = 0;
        if ((rc = uploader_done(w->up, &k, e))) return rc;
        if (k <= w->indexed) return 0;
        n = (size_t)(w->pack_end[k - 1] - w->total_chunks);
        w->indexed = k;
    }
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    pthread_mutex_lock(&w->s->mu);
    rc = batch_chunks(w, b, n, e);
    if (!rc) rc = index_write(w->s, b, 0, e);
    pthread_mutex_unlock(&w->s->mu);
    rocksdb_writebatch_destroy(b);
    return rc;
}

int store_writer_seal(store_writer *w, const store_id **ids, const store_loc **locs, size_t *n,
                      store_err *e)
{
    int rc = sync_packs(w, 1, e);
    *ids = w->all_ids;
    *locs = w->all_locs;
    *n = rc ? 0 : w->nall;
    return rc;
}

int store_writer_commit(store_writer *w, store_snapshot *snap, store_err *e)
{
    store_t *s = w->s;
    /* 1. Packs durable (with S3: every upload done). */
    int rc = sync_packs(w, 1, e);

    int64_t now = store_now_ms();
    if (!rc) {
        pthread_mutex_lock(&s->mu);
        int64_t seq = 0;
        rc = commit_sequence(s, now, &seq, e);
        pthread_mutex_unlock(&s->mu);
        if (!rc && new_snapshot_id(snap->id, seq)) rc = store_errf(e, -EIO, "cannot read /dev/urandom");
    }
    snap->time_ms = now;
    snap->new_bytes = w->bytes;

    /* 2. The chunks into the index, with a pending marker for this snapshot. */
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    char key[64];
    int klen = snprintf(key, sizeof key, "pending:%s", snap->id);
    if (!rc) {
        pthread_mutex_lock(&s->mu);
        rc = batch_chunks(w, b, w->nall, e);
        snap->new_chunks = w->total_chunks;
        char num[32];
        int nl = snprintf(num, sizeof num, "%llu", (unsigned long long)s->next_pack);
        rocksdb_writebatch_put(b, "next_pack", 9, num, (size_t)nl);
        rocksdb_writebatch_put(b, key, (size_t)klen, "", 0);
        if (!rc) rc = index_write(s, b, 1, e);
        pthread_mutex_unlock(&s->mu);
    }
    rocksdb_writebatch_clear(b);

    /* 3. The file index, then the manifest (the commit point), which records its hash. */
    if (!rc && snap->files) rc = files_write(s, snap, e);
    if (!rc) {
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = manifest_encode(snap, w->packs, w->npacks, &buf, &len, e);
        char name[64];
        snprintf(name, sizeof name, "manifests/%s.cmf", snap->id);
        /* With S3 the bucket's manifest is the commit point (the local copy follows it), and
         * it must be there within the commit bound of the writer's open (docs/s3.md, gc
         * across nodes): too late, and gc may have deleted a fossil this snapshot names. */
        int timed = s->be->remote && !w->range_end;
        if (!rc && timed) rc = gone_writer_in_time(w, e);
        if (!rc) rc = obj_put(s, name, buf, len, e);
        if (!rc && timed && (rc = gone_writer_in_time(w, e))) {
            store_err de;
            char fname[64];
            snprintf(fname, sizeof fname, "manifests/%s.files", snap->id);
            int d1 = s->be->ops->del(s->be, name, &de);
            if (!d1) d1 = s->be->ops->del(s->be, fname, &de);
            /* The local copy too: the next writer's open must not finish this commit. */
            char *local = util_path(s->dir, name);
            if (!local) fprintf(stderr, "cairn: %s: out of memory removing the late manifest's copy\n", snap->id);
            else if (unlink(local) < 0 && errno != ENOENT)
                fprintf(stderr, "cairn: %s: could not remove %s: %s\n", snap->id, local, strerror(errno));
            free(local);
            /* The bucket refused the delete: the manifest stays, unacknowledged; fsck and
             * gc see it like any other (it may name a chunk gc deleted: fsck says so). */
            if (d1) fprintf(stderr, "cairn: %s: could not delete the late manifest: %s\n", snap->id, de.msg);
        }
        free(buf);
    }

    /* 4. The index record; a crash before it is finished by recover_pending. */
    if (!rc) {
        pthread_mutex_lock(&s->mu);
        store_err le;
        int ir = index_put_snapshot(s, b, snap, &le);
        rocksdb_writebatch_delete(b, key, (size_t)klen);
        if (!ir) ir = index_write(s, b, 1, &le);
        pthread_mutex_unlock(&s->mu);
        /* Not a failure of the commit: the manifest made the snapshot durable, and the
         * "pending:" key makes the next writer's open finish the record. */
        if (ir) fprintf(stderr, "cairn: snapshot %s: index record deferred to the next writer: %s\n",
                        snap->id, le.msg);
    }
    rocksdb_writebatch_destroy(b);
    /* Renamed packs stay on failure: garbage that gc removes (I2); only .tmp goes now. */
    writer_free(w, 1);
    /* The snapshot is durable: a cache that could not be trimmed is only too big, and
     * the next commit tries again. */
    store_err te;
    if (!rc && s->be->remote && remote_trim_cache(s, &te))
        fprintf(stderr, "cairn: %s\n", te.msg);
    return rc;
}

int store_commit_pending(store_t *s, int *any, store_err *e)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_DEFAULT]);
    rocksdb_iter_seek(it, "pending:", 8);
    size_t klen = 0;
    const char *k = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &klen) : NULL;
    *any = k && klen >= 8 && !memcmp(k, "pending:", 8);
    int rc = index_iter_status(it, e, "looking for unfinished commits");
    rocksdb_iter_destroy(it);
    return rc;
}

/* A crash between the manifest's rename and the index record leaves a "pending:" key;
 * finish that commit if the manifest made it, else drop the key (the snapshot was never
 * acknowledged). */
int commit_recover_pending(store_t *s, store_err *e)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_DEFAULT]);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    int rc = 0;
    for (rocksdb_iter_seek(it, "pending:", 8); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < 8 || memcmp(k, "pending:", 8)) break;
        char id[STORE_SNAPID_LEN] = "";
        if (klen - 8 < sizeof id) memcpy(id, k + 8, klen - 8);
        rocksdb_writebatch_delete(b, k, klen);
        if (store_snapid_valid(id) == 0) {
            store_snapshot *snap = NULL;
            store_err le;
            /* (the folder's manifest, else the bucket's: with S3 the local copy is written
             * only once the bucket has it) */
            int lr = store_snapshot_load(s, id, &snap, &le);
            /* No manifest: the commit never reached its commit point, so the snapshot was
             * never acknowledged. A damaged one is left for fsck to report (it has a
             * manifest and no index record); a failed read must not lose an acknowledged
             * snapshot, so it stops the open. */
            if (lr == -ENOENT || lr == -EBADMSG) lr = 0;
            else if (lr) store_errf(e, lr, "finishing an interrupted commit: %s", le.msg);
            else lr = index_put_snapshot(s, b, snap, e);   /* reads counters: one batch per record */
            store_snapshot_free(snap);
            if ((rc = lr)) break;
        }
        if ((rc = index_write(s, b, 1, e))) break;
        rocksdb_writebatch_clear(b);
    }
    if (!rc) rc = index_iter_status(it, e, "finding interrupted commits");
    rocksdb_iter_destroy(it);
    rocksdb_writebatch_destroy(b);
    return rc;
}
