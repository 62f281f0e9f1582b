/* Internals shared by the store's files. Not part of the public face (store.h). */
#ifndef CAIRN_STORE_INTERNAL_H
#define CAIRN_STORE_INTERNAL_H

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <rocksdb/c.h>

#include "store/backend.h"
#include "store/maint.h"
#include "store/store.h"
#include "store/toolbox.h"

#define STORE_FORMAT 1
#define SECRET_LEN 192                    /* XXH3_SECRET_DEFAULT_SIZE */
#define PACK_TARGET_BYTES (64u << 20)     /* a pack is sealed past this size */
#define PACK_HEADER "CAIRNPK1"
#define PACK_TRAILER "CAIRNPKE"
#define PACK_HEADER_LEN 16
#define PACK_TRAILER_LEN 32
#define MANIFEST_MAGIC "CAIRNMF1"
#define MANIFEST_END "CAIRNMFE"
#define GROUP_CACHE 16                    /* decompressed groups kept per store (4 MiB) */

/* Column families of the index. */
enum { CF_DEFAULT, CF_CHUNKS, CF_SNAPSHOTS, CF_SANDBOXES, CF_COUNT };

struct pool;
struct gone_view;

/* A sorted set of pack numbers (gone.c). */
typedef struct {
    uint64_t *v;
    size_t n, cap;
} u64vec;
STORE_MUST_USE int u64vec_has(const u64vec *v, uint64_t x);
STORE_MUST_USE int u64vec_add(u64vec *v, const uint64_t *x, size_t n);   /* -ENOMEM */
void u64vec_free(u64vec *v);

struct store {
    char *dir;
    int mode;
    const char *index_name;            /* folder of the index: "index", or NULL for it;
                                          "index.new" while store_rebuild_index builds */
    int verify_dedup;                  /* compare bytes on every dedup hit (store_set_verify_dedup) */
    pthread_mutex_t verify_mu;         /* guards the two buffers of store_chunk_verify */
    uint8_t *verify_frame;
    store_dctx *verify_dctx;
    int lock_fd;
    uint8_t secret[SECRET_LEN];
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_block_based_table_options_t *topts;
    rocksdb_column_family_handle_t *cf[CF_COUNT];
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo_sync;
    rocksdb_writeoptions_t *wo;
    pthread_mutex_t mu;                /* pack numbers, counters, pack fd cache */
    uint64_t next_pack;
    uint64_t space_reserve;            /* free bytes the index needs to be written (space.c) */
    int64_t last_id_ms;                /* time part of the newest snapshot id handed out
                                          (0: not read from the index yet); under mu */
    int64_t bucket_ms, bucket_mono_ms; /* S3: the bucket's clock at CLOCK_MONOTONIC
                                          bucket_mono_ms (0: not read; store_bucket_now) */
    struct pack_fd_slot { uint64_t pack; int fd; } *pack_fds;  /* open read fds by pack number:
                                          open addressing, fd 0 = empty (a cache) */
    uint64_t npack_fds, used_pack_fds;   /* capacity (a power of two), slots in use */
    store_backend *be;                 /* where the truth is: this folder, or a bucket */
    uint32_t node;                     /* S3: this node's tag, the top bits of its pack numbers */
    uint64_t cache_bytes;              /* S3: bound of the local pack cache (packs/) */
    struct pool *pool;
    /* Recently decompressed groups, for small reads (cat, extract): many files share a
     * group, and decompressing 256 KiB per 4 KiB read dominated. Guarded by cache_mu. */
    pthread_mutex_t cache_mu;
    struct cached_group {
        uint64_t pack, offset, used;
        uint16_t npages;
        uint8_t *pages;
    } cache[GROUP_CACHE];
    uint64_t cache_clock;
    store_refresh_stats refreshed;     /* S3: what this handle's refreshes found (refresh.c) */
    /* S3: packs other nodes' gc deleted and where their chunks went (gone.c), loaded at
     * the first lookup; guarded by gone_mu. */
    struct gone_view *gone;
    pthread_mutex_t gone_mu;
    atomic_int frames_added;           /* S3: this handle kept read frames (framecache.c) */
    atomic_int frames_warned;          /* S3: ... or said once why it could not */
};

/* store.c */
/* The layout of a new store folder (locks, packs/, manifests/, an empty index), not its
 * cairn.conf. */
STORE_MUST_USE int store_init_layout(const char *dir, store_err *e);
/* cairn.conf's text for a secret (format, created_ms, secret); returns its length. */
STORE_MUST_USE int conf_text(const uint8_t *secret, char *buf, size_t cap);
/* Parses format= and secret= of a cairn.conf text (which it modifies): 0 when both are valid. */
STORE_MUST_USE int conf_parse_secret(char *text, uint8_t secret[SECRET_LEN]);

/* util.c */
STORE_MUST_USE int util_write_all(int fd, const void *buf, size_t n);
STORE_MUST_USE int util_pwrite_all(int fd, const void *buf, size_t n, off_t off);
STORE_MUST_USE int util_pread_all(int fd, void *buf, size_t n, off_t off);   /* -EIO on short read */
STORE_MUST_USE int util_fsync_dir(const char *dir);
STORE_MUST_USE int util_read_file(const char *path, uint8_t **out, size_t *len);
/* Writes path atomically: path.tmp, fsync, rename, fsync of the directory. */
STORE_MUST_USE int util_write_file_durable(const char *dir, const char *name, const void *buf, size_t n);
char *util_path(const char *a, const char *b);   /* malloc'd "a/b" */
/* The next entry of d: 1 with *de set, 0 at the end, or a negative errno when the listing
 * failed (readdir answers NULL for both; only errno tells them apart). */
STORE_MUST_USE int util_next_entry(DIR *d, struct dirent **de);
/* Sums the sizes of the regular files in dir into *bytes. */
STORE_MUST_USE int util_dir_bytes(const char *dir, uint64_t *bytes);
size_t util_put_varint(uint8_t *p, uint64_t v);
STORE_MUST_USE int util_get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);
void util_put_le64(uint8_t *p, uint64_t v);
uint64_t util_get_le64(const uint8_t *p);
void util_put_le32(uint8_t *p, uint32_t v);
uint32_t util_get_le32(const uint8_t *p);

/* index.c */
STORE_MUST_USE int index_open(store_t *s, int create, store_err *e);
void index_close(store_t *s);
/* A rebuild killed between its two renames left no index/ but a complete index.new/: put
 * it in place. Only under the store's lock. */
STORE_MUST_USE int index_recover_swap(store_t *s, store_err *e);
/* Reads one record: 0 (*val is the caller's, rocksdb_free it), -ENOENT (absent; e not
 * set), or -EIO with e set when the read failed. */
STORE_MUST_USE int index_get(store_t *s, int cf, const char *key, size_t klen, char **val,
                             size_t *vlen, store_err *e);
/* A numeric record of the default family: -ENOENT if absent, -EIO if unreadable,
 * -EUCLEAN if not a number. */
STORE_MUST_USE int index_get_u64(store_t *s, const char *key, uint64_t *v, store_err *e);
/* A counter: absent reads as 0 (nothing counted yet); a failed read is an error. */
STORE_MUST_USE int index_get_counter(store_t *s, const char *key, uint64_t *v, store_err *e);
/* After an iteration: an I/O error ends it like the end of the data would, so every loop
 * asks whether it ended or failed. */
STORE_MUST_USE int index_iter_status(rocksdb_iterator_t *it, store_err *e, const char *what);
void index_encode_loc(const store_loc *l, uint8_t *buf, size_t *len);
STORE_MUST_USE int index_decode_loc(const uint8_t *buf, size_t len, store_loc *l);
/* Index records for a manifest's snapshot (snapshot CF + sandbox CF) into batch. */
STORE_MUST_USE int index_put_snapshot(store_t *s, rocksdb_writebatch_t *b,
                                      const store_snapshot *snap, store_err *e);
STORE_MUST_USE int index_write(store_t *s, rocksdb_writebatch_t *b, int sync, store_err *e);

typedef store_group pack_group;

/* pack.c: the writer's state (its packs, and every chunk it wrote, for the commit). */
struct store_writer {
    store_t *s;
    int fd;                     /* open .tmp pack, -1 if none */
    uint64_t pack;
    uint64_t off;
    uint64_t written_back;      /* bytes of the open pack already handed to writeback */
    pack_group *groups;
    uint32_t ngroups, gcap;
    store_id *ids;              /* ids of the open pack, in group/slot order */
    uint32_t nids, icap;
    /* Sealed packs of this writer, waiting for commit. */
    uint64_t *packs;
    int *fds;
    uint64_t *pack_end;         /* S3: chunks written (total_chunks + nall) when packs[i] sealed */
    size_t npacks, pcap;
    /* Every chunk written, for the index batch at commit. */
    store_id *all_ids;
    store_loc *all_locs;
    size_t nall, acap;
    uint64_t bytes;
    uint64_t range_next, range_end;   /* pack numbers of its own (range writer), else 0 */
    size_t synced;                    /* packs[0..synced) are fsynced and renamed */
    int index_early;                  /* index each pack's chunks once it is durable */
    struct uploader *up;              /* S3: packs[0..) go to the bucket in the background */
    size_t indexed;                   /* S3, index_early: packs[0..indexed) have their chunks
                                         in the index (their PUT succeeded) */
    uint64_t total_chunks, generation;
    /* S3 (gone.c): when it opened (monotonic ms), and the packs it must not deduplicate
     * against: fossils at its open, packs gc deleted. */
    int64_t opened_mono_ms;
    u64vec avoid;
    int fossils_pending;
};
STORE_MUST_USE int pack_seal(store_writer *w, store_err *e);
void writer_free(store_writer *w, int unlink_tmp);

/* commit.c: the commit protocol (I1). */
STORE_MUST_USE int commit_index_sealed(store_writer *w, store_err *e);
STORE_MUST_USE int commit_recover_pending(store_t *s, store_err *e);

/* pack.c */
char *pack_path(const store_t *s, uint64_t pack, int tmp);
/* Parses and checks a pack's footer. On success *groups (n entries) and *ids (nchunks)
 * are malloc'd: group g holds ids[first[g] .. first[g]+npages). */
STORE_MUST_USE int pack_read_footer(int fd, uint64_t fsize, pack_group **groups, uint32_t *ngroups,
                     store_id **ids, uint32_t *nchunks, store_err *e, const char *name);
STORE_MUST_USE int pack_fd(store_t *s, uint64_t pack, store_err *e);
/* Closes and forgets the cached read fd of a pack (after it was deleted); under s->mu. */
void pack_fd_forget_locked(store_t *s, uint64_t pack);
void pack_fds_close(store_t *s);
/* Like pack_read_footer, reading through rd(ctx, buf, len, off) (a file or an object). */
typedef int (*pack_reader)(void *ctx, void *buf, size_t len, uint64_t off);
STORE_MUST_USE int pack_read_footer_with(pack_reader rd, void *ctx, uint64_t fsize, pack_group **groups,
                                         uint32_t *ngroups, store_id **ids, uint32_t *nchunks,
                                         store_err *e, const char *name);

/* remote.c: the S3 side of a store (s->be->remote). */
/* Opens the bucket named by a node's cairn.conf text and reads the store's secret from it. */
STORE_MUST_USE int remote_open(store_t *s, const char *conf, store_err *e);
#define NODE_SHIFT 40                     /* pack number = node << 40 | counter */
/* The name of pack n in the bucket, "packs/%016llx.pack". */
void remote_pack_name(uint64_t pack, char out[40]);
/* Uploads one sealed pack file (already renamed to .pack); 0 when it is stored. Several
 * at once in the background: upload.h. */
STORE_MUST_USE int remote_put_pack(store_t *s, uint64_t pack, store_err *e);
/* Reads a frame of a pack the local pack cache does not have: the node's copy of the frame
 * (cache/frames/), else a ranged GET, then kept (framecache.c). */
STORE_MUST_USE int remote_read_frame(store_t *s, const store_loc *loc, void *buf, store_err *e);
/* Drops the least recently used packs and frame copies of the local cache beyond
 * s->cache_bytes. */
STORE_MUST_USE int remote_trim_cache(store_t *s, store_err *e);
/* Writes a local copy of an object already stored in the bucket (a cache: failure only
 * costs a later GET). */
void remote_keep_copy(store_t *s, const char *name, const void *buf, size_t len);
/* Stores a small object (a manifest, a file index) in the backend; with S3 a local copy is
 * kept too. */
STORE_MUST_USE int obj_put(store_t *s, const char *name, const void *buf, size_t len, store_err *e);
/* Reads one: the local file, else (S3) the bucket's object, then kept. -ENOENT if neither. */
STORE_MUST_USE int obj_get(store_t *s, const char *name, uint8_t **buf, size_t *len, store_err *e);

/* gcrec.c: the one encoder and parser of the small records "node=%06x\n<field>=%lld\n"
 * [+ "nonce=%016llx\n"] (the gc lease, a reader's lease, a drop intent). text: the
 * length, or -1 when cap is too small. parse: 0, or -1 when buf is not such a record
 * (nonce NULL: none expected). */
int store_kv_text(char *buf, size_t cap, uint32_t node, const char *field, int64_t v, const uint64_t *nonce);
int store_kv_parse(const uint8_t *buf, size_t len, const char *field, uint32_t *node, int64_t *v, uint64_t *nonce);

/* remote_scan.c */
/* A listing collected whole: every object under prefix after `after` (NULL: from the
 * start), in name order, with its size and its time on the backend's clock (backend.h). */
typedef struct {
    char *name;
    uint64_t size;
    int64_t mtime_ms;
} remote_obj;
typedef struct {
    remote_obj *v;
    size_t n, cap;
    int nomem;
} remote_objs;
STORE_MUST_USE int remote_list(store_t *s, const char *prefix, const char *after, remote_objs *out, store_err *e);
void remote_objs_free(remote_objs *l);
/* The listing callback (backend_list_fn) remote_list collects with, for a listing made
 * below store_t (be_s3.c's logs); out of memory sets l->nomem and stops the listing. */
int remote_objs_note(void *arg, const char *name, uint64_t size, int64_t mtime_ms);
/* The object name's entry in l, or NULL. */
const remote_obj *remote_objs_find(const remote_objs *l, const char *name);
/* The bucket's packs under prefix (NULL: all) after the key `after` (NULL: from the start),
 * ascending, with their sizes (both malloc'd). */
STORE_MUST_USE int remote_list_packs(store_t *s, const char *prefix, const char *after, uint64_t **packs,
                                     uint64_t **sizes, size_t *n, store_err *e);
/* A pack's footer by ranged GETs; size UINT64_MAX: looked up first. */
STORE_MUST_USE int remote_pack_footer(store_t *s, uint64_t pack, uint64_t size, store_group **groups,
                                      uint32_t *ngroups, store_id **ids, uint32_t *nchunks, store_err *e);
/* A list of snapshot ids, grown by remote_ids_push (nomem set, and 1 returned, when it
 * cannot grow: a listing callback returns that to stop). */
typedef struct {
    char (*ids)[STORE_SNAPID_LEN];
    size_t n, cap;
    int nomem;
} remote_ids;
STORE_MUST_USE int remote_ids_push(remote_ids *l, const char *id);
/* 1 with id set when name is a manifest's object, manifests/<valid id>.cmf; else 0. */
STORE_MUST_USE int remote_manifest_id(const char *name, char id[STORE_SNAPID_LEN]);
/* The manifests' ids in the bucket; other names reported as garbage. */
STORE_MUST_USE int remote_manifest_list(store_t *s, char (**ids)[STORE_SNAPID_LEN], size_t *n,
                                        store_report_fn report, void *arg, store_err *e);

/* refresh.c: marks a rebuilt index as refreshed up to now for every pack in pl (rebuild.c;
 * t0: when the rebuild started listing). */
struct pack_list;
STORE_MUST_USE int refresh_mark_rebuilt(store_t *s, rocksdb_writebatch_t *b, const struct pack_list *pl,
                                        int64_t t0, store_err *e);
/* gone.c: lookups past packs another node's gc deleted (docs/s3.md). */
/* Repoints found entries in deleted packs to where their chunks are now, or clears found
 * when no copy is known; called by store_lookup on a store on S3 (locs required). */
STORE_MUST_USE int gone_fix_lookup(store_t *s, const store_id *ids, size_t n, uint8_t *found, store_loc *locs,
                                   store_err *e);
/* A read of the pack answered 404: the deletion records are read again and the pack counts
 * as deleted from now on. */
STORE_MUST_USE int gone_pack_missing(store_t *s, uint64_t pack, store_err *e);
void gone_free(store_t *s);
/* The index catches up with the deletion records it has not applied (STORE_WRITE; a
 * refresh calls it): entries into deleted packs re-pointed to a copy, or removed. */
STORE_MUST_USE int gone_apply_index(store_t *s, store_err *e);
/* The writer's view at its open: fossils and deleted packs (avoid), its start time. */
STORE_MUST_USE int gone_writer_open(store_writer *w, store_err *e);
/* Before and after the commit point: -ETIMEDOUT when the writer has been open longer than
 * the commit bound (gc may have deleted a fossil it relied on). */
STORE_MUST_USE int gone_writer_in_time(const store_writer *w, store_err *e);

/* manifest.c */
STORE_MUST_USE int manifest_encode(const store_snapshot *snap, const uint64_t *packs, size_t npacks,
                    uint8_t **out, size_t *len, store_err *e);
STORE_MUST_USE int manifest_decode(const uint8_t *buf, size_t len, store_snapshot **out, uint64_t **packs,
                    size_t *npacks, store_err *e);
char *manifest_record_json(const store_snapshot *snap);
STORE_MUST_USE int manifest_load_path(const char *path, store_snapshot **out, store_err *e);
/* Snapshot id's manifest (the local copy, else the bucket's) decoded: -ENOENT when there is
 * none; *damaged (may be NULL) set when it was read but is not a valid manifest of id (the
 * callers differ only there: a refresh leaves it out, a load fails); -EINVAL: not an id. */
STORE_MUST_USE int manifest_load(store_t *s, const char *id, store_snapshot **out, int *damaged, store_err *e);

/* files.c */
STORE_MUST_USE int files_write(store_t *s, store_snapshot *snap, store_err *e);
/* Copies page l->slot of the group at l into out (STORE_PAGE bytes), through the store's
 * cache of decompressed groups; frame holds store_group_bound(STORE_GROUP_PAGES) bytes. */
STORE_MUST_USE int cached_page(store_t *s, const store_loc *l, store_dctx *d, uint8_t *frame, void *out,
                               store_err *e);

/* store.c: the unix ms at which a well-formed snapshot id was made (its first 12 hex
 * digits); only the store reads that prefix. */
int64_t snapid_time_ms(const char *id);

/* packscan.c: every pack's footer, for fsck (fsck.c) and the index rebuild (rebuild.c). */
typedef struct {
    uint64_t pack;
    uint64_t size;
    pack_group *groups;
    uint32_t ngroups;
    store_id *ids;
    uint32_t nchunks;
    uint64_t referenced;   /* index entries that point into it */
} pack_info;

typedef struct pack_list {
    pack_info *v;
    size_t n, cap;
} pack_list;
/* Reads every pack footer into pl (sorted by number); damaged packs are reported as
 * problems and left out, .tmp packs reported as garbage (their bytes added to tmp_bytes
 * when not NULL). 0 or a negative errno (the folder could not be listed). */
STORE_MUST_USE int packscan_read(store_t *s, pack_list *pl, store_report_fn report, void *arg,
                  uint64_t *tmp_bytes);
void packscan_free(pack_list *pl);
pack_info *packscan_find(pack_list *pl, uint64_t n);
pack_group *packscan_group(pack_info *pi, uint64_t off);
/* 0 and *n when name is a pack file's name (16 hex digits + ".pack"), else -1. */
STORE_MUST_USE int pack_parse_name(const char *name, uint64_t *n);

/* util.c: one finding to a report callback (NULL: dropped), printf-style. */
void util_reportf(store_report_fn fn, void *arg, int problem, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* audit.c: events.log's raw lines, for store/events.c only (which owns their format). */
STORE_MUST_USE int events_append_line(store_t *s, const char *line, store_err *e);
STORE_MUST_USE int events_read_lines(store_t *s, int (*fn)(void *arg, const char *line), void *arg,
                      store_err *e);

/* manifest.c: the one parser of manifest_record_json's output (the index's snapshot
 * record); -EBADMSG, with the reason in e, for a record it does not understand. */
STORE_MUST_USE int manifest_record_parse(const char *json, store_snaprec *out, store_err *e);

/* space.c: the index is written only with this much free (RocksDB aborts on a full disk). */
/* opened: 0 before RocksDB's open (which writes more), 1 after. */
STORE_MUST_USE int space_reserve_init(store_t *s, int opened, store_err *e);
STORE_MUST_USE int space_check(store_t *s, store_err *e);     /* 0 or -ENOSPC with a message */

/* util.c: copies a JSON string value into dst; -1 when v is not a string or does not fit
 * (a parser's "bad field", never a silent cut). */
struct json_t;
int util_json_str(char *dst, size_t cap, const struct json_t *v);

/* pool.c */
struct pool *pool_new(unsigned threads);
void pool_free(struct pool *p);

#endif
