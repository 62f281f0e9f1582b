/* The RocksDB index: a cache of packs and manifests (invariant I3 of store.h).
 *
 * Column families and their records
 *   default    counters ("chunks", "snapshots", "logical_bytes", "next_pack"), "complete"
 *              (1 once init or a rebuild finished), "pending:<snapshot id>" (a commit
 *              between its manifest and its index record; see recover_pending)
 *   chunks     id (16 bytes) -> varints pack, offset, clen, npages, slot   (~10 bytes)
 *   snapshots  snapshot id -> JSON record (what `cairn snapshots` prints)
 *   sandboxes  sandbox '\0' snapshot id -> "" (a sandbox's snapshots, time ordered)
 *
 * Chunk keys are random, so the chunks family is tuned for point lookups: a bloom filter
 * (in memory, ahead of any block read: most lookups of fresh data are misses) and
 * zstd on the bottommost level, where the zeroed sequence numbers compress away.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

static const char *cf_names[CF_COUNT] = {"default", "chunks", "snapshots", "sandboxes"};

/* Table files one of the small families may keep after a writer closes (compact_small_families). */
#define INDEX_MAX_TABLES 6

static int rdb_err(store_err *e, char *err, const char *what)
{
    int rc = store_errf(e, -EIO, "index: %s: %s", what, err ? err : "unknown error");
    free(err);
    return rc;
}

int index_recover_swap(store_t *s, store_err *e)
{
    char *cur = util_path(s->dir, "index"), *nw = util_path(s->dir, "index.new");
    int rc = cur && nw ? 0 : store_errf(e, -ENOMEM, "out of memory");
    struct stat st;
    if (!rc && stat(cur, &st) < 0 && errno == ENOENT && stat(nw, &st) == 0) {
        /* Another reader may have done it first (ENOENT). */
        if (rename(nw, cur) < 0 && errno != ENOENT)
            rc = store_errf(e, -errno, "%s: cannot put the rebuilt index in place: %s", s->dir, strerror(errno));
        int drc;
        if (!rc && (drc = util_fsync_dir(s->dir))) rc = store_errf(e, drc, "%s: fsync: %s", s->dir, strerror(-drc));
    }
    free(cur);
    free(nw);
    return rc;
}

int index_open(store_t *s, int create, store_err *e)
{
    char *path = util_path(s->dir, s->index_name ? s->index_name : "index");
    if (!path) return store_errf(e, -ENOMEM, "out of memory");
    /* RocksDB would make the folder 0755 & ~umask: tenant data stays private. */
    if (create && mkdir(path, 0700) < 0 && errno != EEXIST) {
        int err = errno;
        free(path);
        return store_errf(e, -err, "%s/index: %s", s->dir, strerror(err));
    }
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, create);
    rocksdb_options_set_create_missing_column_families(o, create);
    rocksdb_options_set_info_log_level(o, 3 /* ERROR: keep LOG small */);
    rocksdb_options_set_keep_log_file_num(o, 1);
    rocksdb_options_set_max_log_file_size(o, 1 << 20);
    rocksdb_options_set_write_buffer_size(o, 16 << 20);
    rocksdb_options_set_max_background_jobs(o, 2);
    /* Every table file opened at open: a lock-free reader (STORE_PEEK) then keeps reading
     * files a writer's compaction unlinks meanwhile. */
    rocksdb_options_set_max_open_files(o, -1);
    rocksdb_options_set_compression(o, rocksdb_lz4_compression);
    rocksdb_options_set_bottommost_compression(o, rocksdb_zstd_compression);
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_block_based_options_set_block_size(t, 16 << 10);
    rocksdb_block_based_options_set_format_version(t, 5);
    /* A hash inside each data block: a point lookup skips the binary search. */
    rocksdb_block_based_options_set_data_block_index_type(
        t, rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
    rocksdb_block_based_options_set_data_block_hash_ratio(t, 0.75);
    rocksdb_options_set_block_based_table_factory(o, t);
    s->opts = o;
    s->topts = t;

    const rocksdb_options_t *cfo[CF_COUNT];
    for (int i = 0; i < CF_COUNT; i++) cfo[i] = o;
    char *err = NULL;
    /* A writable open writes (its LOG, the WAL it replays): not on a full disk. */
    if (s->mode == STORE_WRITE || create) {
        int rc = space_reserve_init(s, 0, e);
        if (!rc) rc = space_check(s, e);
        if (rc) {
            free(path);
            return rc;
        }
    }
    if (s->mode == STORE_WRITE || create)
        s->db = rocksdb_open_column_families(o, path, CF_COUNT, cf_names, cfo, s->cf, &err);
    else
        s->db = rocksdb_open_for_read_only_column_families(o, path, CF_COUNT, cf_names, cfo,
                                                           s->cf, 0, &err);
    free(path);
    if (!s->db) {
        int rc = store_errf(e, -EIO, "%s/index: cannot open (%s); if it is lost or damaged, "
                            "`cairn fsck --rebuild-index` recreates it from the packs",
                            s->dir, err ? err : "?");
        free(err);
        return rc;
    }
    if (s->mode == STORE_WRITE || create) {
        int rc = space_reserve_init(s, 1, e);
        if (rc) {
            index_close(s);
            return rc;
        }
    }
    s->ro = rocksdb_readoptions_create();
    s->wo = rocksdb_writeoptions_create();
    s->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wo_sync, 1);
    return 0;
}

/* The table files of one column family, all levels; -1 when RocksDB does not say. */
static int cf_tables(store_t *s, int cf)
{
    int total = 0;
    for (int level = 0; level < 7; level++) {
        char prop[48];
        snprintf(prop, sizeof prop, "rocksdb.num-files-at-level%d", level);
        char *v = rocksdb_property_value_cf(s->db, s->cf[cf], prop);
        if (!v) return -1;
        total += atoi(v);
        free(v);
    }
    return total;
}

/* Snapshot ids grow in commit order, and so do a sandbox's keys: each flush makes a table
 * file that overlaps no other, which RocksDB moves down a level as it is (a "trivial
 * move") instead of merging it. With writers that live for one snapshot (each CLI or API
 * ingest flushes at close), these families became one small table file per commit, and
 * every reader's open (the server's read view is reopened after each commit) and memory
 * grew with them: 145 files after ~300 API ingests. So a writer that leaves a family with
 * more than INDEX_MAX_TABLES files merges it into one: a few ms, as these families hold
 * ~120 bytes per snapshot compressed (100,000 snapshots: ~12 MB, merged once per ~6 commits).
 * The chunks family is not among them: its keys are random, so level compaction merges
 * its files already, and it is the one large family. */
static void compact_small_families(store_t *s)
{
    static const int fams[] = {CF_DEFAULT, CF_SNAPSHOTS, CF_SANDBOXES};
    for (size_t i = 0; i < sizeof fams / sizeof *fams; i++) {
        int cf = fams[i], n = cf_tables(s, cf);
        if (n >= 0 && n <= INDEX_MAX_TABLES) continue;
        rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
        /* The last level too: that is where the moved files sit. */
        rocksdb_compactoptions_set_bottommost_level_compaction(co, 2 /* kForce */);
        rocksdb_compact_range_cf_opt(s->db, s->cf[cf], co, NULL, 0, NULL, 0);
        rocksdb_compactoptions_destroy(co);
        /* RocksDB's C call reports no error: the count tells whether it worked. Only
         * speed is lost when it did not (the next writer tries again). */
        int after = cf_tables(s, cf);
        if (after < 0 || after > INDEX_MAX_TABLES)
            fprintf(stderr, "cairn: warning: %s/index: the %s family still has %d table files after "
                    "a compaction (was %d)\n", s->dir, cf_names[cf], after, n);
    }
}

void index_close(store_t *s)
{
    if (s->db) {
        if (s->mode == STORE_WRITE && space_check(s, NULL) == 0) {
            /* Flush so the index on disk is SST files, not a WAL that grows per snapshot.
             * Not on a nearly full disk (space.c): the WAL keeps what the flush would have
             * written, and the next open replays it. */
            rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
            char *err = NULL;
            int flushed = 1;
            for (int i = 0; i < CF_COUNT; i++) {
                rocksdb_flush_cf(s->db, fo, s->cf[i], &err);
                if (err) {
                    fprintf(stderr, "cairn: warning: %s/index: flush at close: %s (the next open "
                            "replays the log)\n", s->dir, err);
                    flushed = 0;
                }
                free(err);
                err = NULL;
            }
            rocksdb_flushoptions_destroy(fo);
            if (flushed) compact_small_families(s);
        }
        for (int i = 0; i < CF_COUNT; i++)
            if (s->cf[i]) rocksdb_column_family_handle_destroy(s->cf[i]);
        rocksdb_close(s->db);
        s->db = NULL;
    }
    if (s->ro) rocksdb_readoptions_destroy(s->ro);
    if (s->wo) rocksdb_writeoptions_destroy(s->wo);
    if (s->wo_sync) rocksdb_writeoptions_destroy(s->wo_sync);
    if (s->opts) rocksdb_options_destroy(s->opts);
    if (s->topts) rocksdb_block_based_options_destroy(s->topts);
    s->ro = NULL;
    s->wo = s->wo_sync = NULL;
    s->opts = NULL;
    s->topts = NULL;
    memset(s->cf, 0, sizeof s->cf);
}

int index_get(store_t *s, int cf, const char *key, size_t klen, char **val, size_t *vlen,
              store_err *e)
{
    char *err = NULL;
    *val = rocksdb_get_cf(s->db, s->ro, s->cf[cf], key, klen, vlen, &err);
    if (err) {
        *val = NULL;
        return rdb_err(e, err, "read");
    }
    return *val ? 0 : -ENOENT;
}

int index_get_u64(store_t *s, const char *key, uint64_t *v, store_err *e)
{
    char *val;
    size_t len = 0;
    int rc = index_get(s, CF_DEFAULT, key, strlen(key), &val, &len, e);
    if (rc == -ENOENT) return store_errf(e, rc, "index: no record '%s'", key);
    if (rc) return rc;
    char buf[32], *end;
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    memcpy(buf, val, n);
    buf[n] = 0;
    rocksdb_free(val);
    errno = 0;
    *v = strtoull(buf, &end, 10);
    if (!n || *end || errno)
        return store_errf(e, -EUCLEAN, "index: record '%s' is not a number: run "
                          "`cairn fsck --rebuild-index`", key);
    return 0;
}

int index_get_counter(store_t *s, const char *key, uint64_t *v, store_err *e)
{
    int rc = index_get_u64(s, key, v, e);
    if (rc == -ENOENT) {
        *v = 0;     /* a counter nothing has counted yet */
        return 0;
    }
    return rc;
}

int index_iter_status(rocksdb_iterator_t *it, store_err *e, const char *what)
{
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    return err ? rdb_err(e, err, what) : 0;
}

void index_encode_loc(const store_loc *l, uint8_t *buf, size_t *len)
{
    size_t n = 0;
    n += util_put_varint(buf + n, l->pack);
    n += util_put_varint(buf + n, l->offset);
    n += util_put_varint(buf + n, l->clen);
    n += util_put_varint(buf + n, l->npages);
    n += util_put_varint(buf + n, l->slot);
    *len = n;
}

int index_decode_loc(const uint8_t *buf, size_t len, store_loc *l)
{
    const uint8_t *p = buf, *end = buf + len;
    uint64_t v[5];
    for (int i = 0; i < 5; i++)
        if (util_get_varint(&p, end, &v[i])) return -EINVAL;
    if (v[2] > UINT32_MAX || v[3] == 0 || v[3] > STORE_GROUP_PAGES || v[4] >= v[3]) return -EINVAL;
    *l = (store_loc){.pack = v[0], .offset = v[1], .clen = (uint32_t)v[2],
                     .npages = (uint16_t)v[3], .slot = (uint16_t)v[4]};
    return 0;
}

typedef struct {
    store_t *s;
    const store_id *ids;
    size_t n;
    uint8_t *found;
    store_loc *locs;
    int rc;
    store_err err;
    pthread_mutex_t mu;
} lookup_job;

enum { LOOKUP_BATCH = 1024 };

/* One multi_get of up to LOOKUP_BATCH ids: ids[t * LOOKUP_BATCH ...]. */
static void lookup_batch(void *arg, size_t t)
{
    lookup_job *j = arg;
    size_t base = t * LOOKUP_BATCH;
    size_t m = j->n - base < LOOKUP_BATCH ? j->n - base : LOOKUP_BATCH;
    if (base >= j->n) return;
    const char *keys[LOOKUP_BATCH];
    size_t klens[LOOKUP_BATCH];
    char *vals[LOOKUP_BATCH];
    size_t vlens[LOOKUP_BATCH];
    char *errs[LOOKUP_BATCH];
    const rocksdb_column_family_handle_t *cfs[LOOKUP_BATCH];
    for (size_t i = 0; i < m; i++) {
        keys[i] = (const char *)j->ids[base + i].b;
        klens[i] = 16;
        cfs[i] = j->s->cf[CF_CHUNKS];
    }
    rocksdb_multi_get_cf(j->s->db, j->s->ro, cfs, m, keys, klens, vals, vlens, errs);
    for (size_t i = 0; i < m; i++) {
        j->found[base + i] = 0;
        if (errs[i]) {
            pthread_mutex_lock(&j->mu);
            if (!j->rc) j->rc = store_errf(&j->err, -EIO, "index lookup: %s", errs[i]);
            pthread_mutex_unlock(&j->mu);
            free(errs[i]);
        } else if (vals[i]) {
            store_loc l;
            if (index_decode_loc((const uint8_t *)vals[i], vlens[i], &l) == 0) {
                j->found[base + i] = 1;
                if (j->locs) j->locs[base + i] = l;
            } else {
                pthread_mutex_lock(&j->mu);
                if (!j->rc)
                    j->rc = store_errf(&j->err, -EUCLEAN, "index: damaged chunk record: run "
                                       "`cairn fsck --rebuild-index`");
                pthread_mutex_unlock(&j->mu);
            }
        }
        free(vals[i]);
    }
}

int store_lookup(store_t *s, const store_id *ids, size_t n, uint8_t *found, store_loc *locs,
                 store_err *e)
{
    /* On S3 the location matters even to a caller that asks only "is it there": an entry
     * may name a pack another node's gc deleted (gone.c). */
    store_loc *own = NULL;
    if (s->be->remote && !locs && n && !(locs = own = malloc(n * sizeof *own)))
        return store_errf(e, -ENOMEM, "out of memory");
    lookup_job j = {.s = s, .ids = ids, .n = n, .found = found, .locs = locs};
    pthread_mutex_init(&j.mu, NULL);
    /* Big lookups (a restore's recipe, fsck) use every core; RocksDB reads are thread-safe. */
    store_parallel(s, (n + LOOKUP_BATCH - 1) / LOOKUP_BATCH, lookup_batch, &j);
    pthread_mutex_destroy(&j.mu);
    if (j.rc && e) *e = j.err;
    int rc = j.rc;
    if (!rc && s->be->remote && n) rc = gone_fix_lookup(s, ids, n, found, locs, e);
    free(own);
    return rc;
}

/* A failed read of the counter fails the batch: rewriting it as 0 plus the change would
 * silently reset it. */
static int put_counter(store_t *s, rocksdb_writebatch_t *b, const char *key, int64_t delta,
                       store_err *e)
{
    uint64_t v = 0;
    int rc = index_get_counter(s, key, &v, e);
    if (rc) return rc;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)(v + (uint64_t)delta));
    rocksdb_writebatch_put_cf(b, s->cf[CF_DEFAULT], key, strlen(key), buf, (size_t)n);
    return 0;
}

int index_put_snapshot(store_t *s, rocksdb_writebatch_t *b, const store_snapshot *snap,
                       store_err *e)
{
    char *json = manifest_record_json(snap);
    if (!json) return store_errf(e, -ENOMEM, "out of memory");
    size_t idl = strlen(snap->id), sbl = strlen(snap->sandbox);
    char key[STORE_NAME_MAX + STORE_SNAPID_LEN + 2];
    memcpy(key, snap->sandbox, sbl);
    key[sbl] = 0;
    memcpy(key + sbl + 1, snap->id, idl);
    rocksdb_writebatch_put_cf(b, s->cf[CF_SNAPSHOTS], snap->id, idl, json, strlen(json));
    rocksdb_writebatch_put_cf(b, s->cf[CF_SANDBOXES], key, sbl + 1 + idl, "", 0);
    free(json);
    int rc = put_counter(s, b, "snapshots", 1, e);
    if (!rc) rc = put_counter(s, b, "logical_bytes", (int64_t)snap->logical_bytes, e);
    return rc;
}

int index_write(store_t *s, rocksdb_writebatch_t *b, int sync, store_err *e)
{
    char *err = NULL;
    int rc = space_check(s, e);
    if (rc) return rc;
    rocksdb_write(s->db, sync ? s->wo_sync : s->wo, b, &err);
    return err ? rdb_err(e, err, "write") : 0;
}

int store_snapshot_list(store_t *s, const char *sandbox, store_snapshot_fn fn, void *arg,
                        store_err *e)
{
    size_t sbl = strlen(sandbox);
    char prefix[STORE_NAME_MAX + 2];
    if (sbl > STORE_NAME_MAX) return store_errf(e, -EINVAL, "sandbox name too long");
    memcpy(prefix, sandbox, sbl);
    prefix[sbl] = 0;
    /* Newest first: seek past the prefix ("\1" sorts after every "\0<id>"), walk back. */
    char end[STORE_NAME_MAX + 2];
    memcpy(end, sandbox, sbl);
    end[sbl] = 1;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_SANDBOXES]);
    int rc = 0;
    rocksdb_iter_seek_for_prev(it, end, sbl + 1);
    for (; rocksdb_iter_valid(it); rocksdb_iter_prev(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen <= sbl + 1 || memcmp(k, prefix, sbl + 1)) break;
        char id[STORE_SNAPID_LEN] = "";
        if (klen - sbl - 1 >= sizeof id) continue;
        memcpy(id, k + sbl + 1, klen - sbl - 1);
        char *val;
        size_t vlen = 0;
        rc = index_get(s, CF_SNAPSHOTS, id, strlen(id), &val, &vlen, e);
        if (rc == -ENOENT) {      /* a drop between the two families' reads */
            rc = 0;
            continue;
        }
        if (rc) break;
        char *json = malloc(vlen + 1);
        if (json) {
            memcpy(json, val, vlen);
            json[vlen] = 0;
        }
        rocksdb_free(val);
        if (!json) {
            rc = store_errf(e, -ENOMEM, "out of memory");
            break;
        }
        int stop = fn(arg, id, json);
        free(json);
        if (stop) break;
    }
    if (!rc) rc = index_iter_status(it, e, "listing a sandbox's snapshots");
    rocksdb_iter_destroy(it);
    return rc;
}

static int first_id(void *arg, const char *id, const char *json)
{
    (void)json;
    snprintf(arg, STORE_SNAPID_LEN, "%s", id);
    return 1;
}

int store_snapshot_latest(store_t *s, const char *sandbox, char id_out[STORE_SNAPID_LEN],
                          store_err *e)
{
    id_out[0] = 0;
    int rc = store_snapshot_list(s, sandbox, first_id, id_out, e);
    if (rc) return rc;
    if (!id_out[0]) return store_errf(e, -ENOENT, "sandbox %s has no snapshots", sandbox);
    return 0;
}

int store_snapshot_all(store_t *s, store_snapshot_fn fn, void *arg, store_err *e)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_SNAPSHOTS]);
    int rc = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        char id[STORE_SNAPID_LEN];
        if (kl >= sizeof id) {
            rc = store_errf(e, -EUCLEAN, "index: snapshot key of %zu bytes: run "
                            "`cairn fsck --rebuild-index`", kl);
            break;
        }
        char *json = malloc(vl + 1);
        if (!json) {
            rc = store_errf(e, -ENOMEM, "out of memory");
            break;
        }
        memcpy(id, k, kl);
        id[kl] = 0;
        memcpy(json, v, vl);
        json[vl] = 0;
        int stop = fn(arg, id, json);
        free(json);
        if (stop) break;
    }
    if (!rc) rc = index_iter_status(it, e, "listing snapshots");
    rocksdb_iter_destroy(it);
    return rc;
}

int store_snapshot_drop(store_t *s, const char *id, store_err *e)
{
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "store opened read-only");
    if (store_snapid_valid(id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", id);
    /* The index record names the sandbox and size: it serves even when a crash already
     * took the manifest (a drop interrupted between its two steps is finished here). */
    char *rec = NULL;
    size_t vl = 0;
    int grc = index_get(s, CF_SNAPSHOTS, id, strlen(id), &rec, &vl, e);
    if (grc && grc != -ENOENT) return grc;
    char sandbox[STORE_NAME_MAX + 1] = "";
    uint64_t logical = 0;
    if (rec) {
        json_t *j = json_loadb(rec, vl, 0, NULL);
        const char *sb = json_string_value(json_object_get(j, "sandbox"));
        if (sb) snprintf(sandbox, sizeof sandbox, "%s", sb);
        logical = (uint64_t)json_integer_value(json_object_get(j, "logical_bytes"));
        json_decref(j);
        rocksdb_free(rec);
    }
    /* Manifest first (the truth), then the index records (a cache). */
    char name[64];
    if (s->be->remote) {
        /* The bucket's copy is the truth: it goes first; the file index after it. */
        snprintf(name, sizeof name, "manifests/%s.cmf", id);
        int rrc = s->be->ops->del(s->be, name, e);
        snprintf(name, sizeof name, "manifests/%s.files", id);
        if (!rrc) rrc = s->be->ops->del(s->be, name, e);
        if (rrc) return rrc;
    }
    char *mdir = util_path(s->dir, "manifests");
    if (!mdir) return store_errf(e, -ENOMEM, "out of memory");
    snprintf(name, sizeof name, "%s.cmf", id);
    char *path = util_path(mdir, name);
    int rc = 0, had_manifest = 0;
    if (!path) rc = store_errf(e, -ENOMEM, "out of memory");
    else if (unlink(path) == 0) had_manifest = 1;
    else if (errno != ENOENT) rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
    free(path);
    snprintf(name, sizeof name, "%s.files", id);
    path = !rc ? util_path(mdir, name) : NULL;
    if (path && unlink(path) < 0 && errno != ENOENT)
        rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
    free(path);
    if (!rc && (rc = util_fsync_dir(mdir))) store_errf(e, rc, "%s: fsync: %s", mdir, strerror(-rc));
    free(mdir);
    if (!rc && !had_manifest && !sandbox[0])
        return store_errf(e, -ENOENT, "no snapshot %s in %s", id, s->dir);
    if (!rc && sandbox[0]) {
        rocksdb_writebatch_t *b = rocksdb_writebatch_create();
        size_t sbl = strlen(sandbox), idl = strlen(id);
        char key[STORE_NAME_MAX + STORE_SNAPID_LEN + 2];
        memcpy(key, sandbox, sbl);
        key[sbl] = 0;
        memcpy(key + sbl + 1, id, idl);
        rocksdb_writebatch_delete_cf(b, s->cf[CF_SNAPSHOTS], id, idl);
        rocksdb_writebatch_delete_cf(b, s->cf[CF_SANDBOXES], key, sbl + 1 + idl);
        pthread_mutex_lock(&s->mu);
        rc = put_counter(s, b, "snapshots", -1, e);
        if (!rc) rc = put_counter(s, b, "logical_bytes", -(int64_t)logical, e);
        if (!rc) rc = index_write(s, b, 1, e);
        pthread_mutex_unlock(&s->mu);
        rocksdb_writebatch_destroy(b);
    }
    return rc;
}

int store_index_apply(store_t *s, const store_index_edit *ed, size_t n, size_t *applied, store_err *e)
{
    *applied = 0;
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "store opened read-only");
    store_id *ids = calloc(n ? n : 1, sizeof *ids);
    store_loc *locs = calloc(n ? n : 1, sizeof *locs);
    uint8_t *found = calloc(n ? n : 1, 1);
    int rc = ids && locs && found ? 0 : store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) ids[i] = ed[i].id;
    if (!rc) rc = store_lookup(s, ids, n, found, locs, e);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    int64_t deleted = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const store_loc *c = &locs[i], *x = &ed[i].expect;
        /* Only an entry that still names the copy gc planned for may change. */
        if (!found[i] || c->pack != x->pack || c->offset != x->offset || c->slot != x->slot) continue;
        if (ed[i].del) {
            rocksdb_writebatch_delete_cf(b, s->cf[CF_CHUNKS], (const char *)ed[i].id.b, 16);
            deleted++;
        } else {
            uint8_t v[40];
            size_t vl;
            index_encode_loc(&ed[i].to, v, &vl);
            rocksdb_writebatch_put_cf(b, s->cf[CF_CHUNKS], (const char *)ed[i].id.b, 16, (const char *)v, vl);
        }
        (*applied)++;
    }
    if (!rc) {
        pthread_mutex_lock(&s->mu);
        rc = put_counter(s, b, "chunks", -deleted, e);
        if (!rc) rc = index_write(s, b, 1, e);
        pthread_mutex_unlock(&s->mu);
    }
    rocksdb_writebatch_destroy(b);
    free(ids);
    free(locs);
    free(found);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int store_pack_refs(store_t *s, const uint64_t *packs, size_t n, uint32_t *refs, store_err *e)
{
    memset(refs, 0, n * sizeof *refs);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_CHUNKS]);
    int rc = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t vl;
        const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
        const uint8_t *p = v;
        uint64_t pack;
        /* An entry we cannot read may point into any pack: counting it nowhere could let
         * gc delete a pack still in use. */
        if (util_get_varint(&p, v + vl, &pack)) {
            rc = store_errf(e, -EUCLEAN, "index: damaged chunk record: run "
                            "`cairn fsck --rebuild-index`");
            break;
        }
        const uint64_t *hit = bsearch(&pack, packs, n, sizeof *packs, cmp_u64);
        if (hit) refs[hit - packs]++;
    }
    if (!rc) rc = index_iter_status(it, e, "counting pack references");
    rocksdb_iter_destroy(it);
    return rc;
}
