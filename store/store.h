/*
 * store: Cairn's content-addressed store of 4 KiB pages.
 *
 * What it owns
 *   A store is a directory:
 *     cairn.conf          marker, format version, the chunk-id key (never leaves the store)
 *     lock                flock(2): exclusive for writers, shared for readers
 *     gc.lock             flock(2) held by a gc for its whole run (one gc at a time)
 *     lock.wait           flock(2), shared, held by whoever waits in store_open for `lock`
 *                         (a holder that keeps the lock across calls lets go when it sees one)
 *     packs/P.pack        immutable packs: zstd frames of page groups + a self-describing
 *                         footer (ids and locations), so the index can be rebuilt from them
 *     manifests/ID.cmf    one per acknowledged snapshot: metadata + a complete recipe per
 *                         blob (no diff chains); its presence is the commit point
 *     index/              RocksDB: a cache of what packs and manifests say
 *   Every folder is 0700 and every file 0600: they hold tenant bytes (store_check_private).
 *
 * Invariants
 *   I1  A manifest exists only after every pack it needs is durable and every chunk it
 *       names is in the index (store_writer_commit orders the fsyncs to make this so).
 *   I2  Packs are never modified after rename from .tmp; a .tmp pack or a pack that no
 *       manifest references is garbage: fsck reports it, gc removes it.
 *   I3  The index can be deleted at any time and rebuilt from packs + manifests.
 *   I4  A page leaves the store only after its keyed hash matched its id (restore and
 *       fsck --verify-data check it), so a flipped bit is an error, never wrong bytes.
 *   I5  All-zero pages are never stored; recipes record them as zero runs.
 *
 * Identity
 *   A chunk id is XXH3-128 of the page keyed with a 192-byte secret made at `init`.
 *   Dedup is global across tenants; the secret keeps a tenant from crafting a page whose
 *   id collides with another tenant's (see docs/design.md, "Chunk ids").
 *
 * Faces
 *   store/store.h    this file: what every module uses (open, ingest, read, check)
 *   store/maint.h    what only gc, fsck tooling and tests use: pack numbers, sealing
 *                    without a snapshot, index edits, pack lists and references, drops
 *   store/toolbox.h  the worker pool, the clock, the ext2 I/O manager
 *   store/lease.h    leases that keep a snapshot from gc while a reader serves it
 *   store/internal.h the store's own files only
 *
 * Concurrency: which handles may coexist
 *   Between processes: one writer (STORE_WRITE or STORE_REPAIR: the exclusive lock, from
 *   open to close) or any number of readers (STORE_READ: the shared lock). STORE_SCAN and
 *   STORE_PEEK take no lock and coexist with everything (what they may do without it is
 *   said at store_open).
 *   Within one process the same holds, handle by handle: flock(2) locks of two handles
 *   conflict even in one process. So a thread that holds a locked handle of a store must
 *   not open a conflicting one of the same store (a STORE_WRITE beside anything locked, a
 *   STORE_READ beside a STORE_WRITE): it would wait for itself forever. Another thread
 *   may wait for it, as another process would. Safe and used:
 *     gc's sweep: one STORE_SCAN + one STORE_PEEK for its whole heavy phase, and one
 *       STORE_WRITE at a time for each short section (closed before the next);
 *     the API server: one shared handle, never two at once (api/storeref.c).
 *   Within a handle: store_t is thread-safe for lookups and reads; each store_writer
 *   belongs to one thread at a time.
 *
 * Errors
 *   Functions return 0 or a negative errno-style code and, when `e` is not NULL, write a
 *   message with context into it. Nothing here calls exit() or abort(). An index
 *   iteration or a folder listing that fails part way is an error, never a short answer.
 *
 * Ownership
 *   Every *_open/_load has a matching *_close/_free; every free accepts NULL.
 */
#ifndef CAIRN_STORE_H
#define CAIRN_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STORE_PAGE 4096u
#define STORE_GROUP_PAGES 64u          /* pages compressed together in one zstd frame */
#define STORE_ID_HEX 33                /* 32 hex digits + NUL */
#define STORE_SNAPID_LEN 24            /* snapshot ids: 20 hex digits + NUL, padded */
#define STORE_NAME_MAX 128             /* tenant / sandbox names */

typedef struct { char msg[640]; } store_err;

/* On every function whose result says whether it worked: ignoring it is a build error
 * (-Werror), so no failure goes unseen. */
#define STORE_MUST_USE __attribute__((warn_unused_result))

/* Sets e->msg (if e) from a printf format and returns `code` (a negative errno). */
int store_errf(store_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

typedef struct { uint8_t b[16]; } store_id;

/* A finding of fsck or gc: problems threaten a snapshot; the rest is garbage or notes. */
typedef void (*store_report_fn)(void *arg, int is_problem, const char *text);

/* Where a chunk lives: a page slot inside a compressed group of a pack. */
typedef struct {
    uint64_t pack;      /* pack number: packs/%016llx.pack */
    uint64_t offset;    /* byte offset of the group's zstd frame in the pack */
    uint32_t clen;      /* compressed length of the frame */
    uint16_t npages;    /* pages in the group */
    uint16_t slot;      /* this chunk's page index inside the group */
} store_loc;

typedef struct store store_t;

enum { STORE_READ = 0, STORE_WRITE = 1, STORE_REPAIR = 2, STORE_SCAN = 3, STORE_PEEK = 4 };

/* Creates an empty store in dir (made if missing; must be empty or absent). */
STORE_MUST_USE int store_init(const char *dir, store_err *e);

/* A store over an S3 bucket (issue 11): DIR becomes a node whose folder holds only caches;
 * the bucket (made if missing; an existing Cairn bucket is joined) holds everything. Keys
 * come from $CAIRN_S3_ACCESS_KEY / $CAIRN_S3_SECRET_KEY only. See docs/s3.md. */
typedef struct {
    const char *endpoint;     /* HOST:PORT */
    const char *bucket;
    const char *region;       /* NULL: us-east-1 (Signature V4 signs it) */
    int http;                 /* plain HTTP (a loopback endpoint), else HTTPS */
    int sig_v2;               /* libs3 with Signature V2, else libcurl with Signature V4 */
    uint64_t cache_bytes;     /* bound of the local pack cache; 0: 4 GiB */
} store_s3_opts;
STORE_MUST_USE int store_init_s3(const char *dir, const store_s3_opts *o, store_err *e);

/* Opens a store. STORE_WRITE takes the exclusive lock (waiting, with one message on
 * stderr, while another process holds it) and finishes any commit a crash interrupted;
 * STORE_READ takes the shared lock and opens the index read-only. STORE_REPAIR takes the
 * exclusive lock and does not open the index (it may be lost): only for
 * store_rebuild_index, after which the store is open as for STORE_WRITE. STORE_SCAN takes
 * no lock and opens no index: for gc's heavy phase, which reads only manifests and packs
 * (files that appear atomically) and writes only new packs (see docs/gc.md). STORE_PEEK
 * opens the index read-only without the lock: what it says may be stale, so it only serves
 * as a hint (gc skips copying chunks the index already finds elsewhere). */
STORE_MUST_USE int store_open(const char *dir, int mode, store_t **out, store_err *e);
void store_close(store_t *s);
const char *store_dir(const store_t *s);
/* 1 when a process or thread waits in store_open for the store's lock, 0 when none, else a
 * negative errno. For a holder that keeps the lock between calls (the API server's writer,
 * api/storeref.c): it lets go when someone waits, so no command waits for it to exit. A
 * waiter holds a shared flock on DIR/lock.wait while it waits; this probes it with an
 * exclusive one, let go at once. *fd is the probe's descriptor: -1 before the first call,
 * the caller's to close. */
STORE_MUST_USE int store_lock_waiters(const char *dir, int *fd, store_err *e);
/* *any = 1 when a commit is past its pack step and before its index record (running in
 * another handle, or cut there by a crash): a lock-free reader (STORE_PEEK) opened now may
 * see its manifest and lack its record (api/storeref.c waits for the index to move). */
STORE_MUST_USE int store_commit_pending(store_t *s, int *any, store_err *e);

/* ---- chunks ------------------------------------------------------------------------ */

/* 1 if the page (STORE_PAGE bytes) is all zero. */
STORE_MUST_USE int store_page_is_zero(const void *page);
void store_chunk_id(const store_t *s, const void *page, store_id *out);
STORE_MUST_USE int store_id_is_zero(const store_id *id);   /* the recipe's marker for a zero page */
void store_id_hex(const store_id *id, char out[STORE_ID_HEX]);

/* Collisions (docs/design.md, "Chunk ids"). With verification on, an ingest compares the
 * bytes of every page it would deduplicate with the stored page of the same id (and with a
 * second, independent hash for repeats inside one ingest) and refuses the snapshot on a
 * mismatch, so one id never names two contents. Off by default: it reads and decompresses
 * a group per hit, which is what dedup saves. Always on in a build with
 * -DCAIRN_TEST_SHORT_HASH, where chunk ids keep only 16 bits and collisions are common. */
void store_set_verify_dedup(store_t *s, int on);
STORE_MUST_USE int store_verify_dedup(const store_t *s);
/* 0 if the stored chunk `id` (at `at`, or looked up when at is NULL) has exactly the bytes
 * of page, 1 if it has others (a collision: e says where), negative if it cannot be read. */
STORE_MUST_USE int store_chunk_verify(store_t *s, const store_id *id, const store_loc *at, const void *page,
                       store_err *e);

/* Looks up n ids in one batch. found[i] is 1 and locs[i] set when the chunk is stored.
 * locs may be NULL when only presence matters. */
STORE_MUST_USE int store_lookup(store_t *s, const store_id *ids, size_t n, uint8_t *found,
                 store_loc *locs, store_err *e);

/* A set of ids (32 bytes per id at most). add ignores the zero id and duplicates; it
 * returns -ENOMEM when it cannot grow. */
typedef struct store_idset store_idset;
store_idset *store_idset_new(void);
void store_idset_free(store_idset *s);
STORE_MUST_USE int store_idset_add(store_idset *s, const store_id *id);
/* Room for n more ids without growing (one allocation instead of a chain of them). */
STORE_MUST_USE int store_idset_reserve(store_idset *s, size_t n);
STORE_MUST_USE int store_idset_has(const store_idset *s, const store_id *id);
size_t store_idset_count(const store_idset *s);
void store_idset_clear(store_idset *s);

/* ---- recipes and snapshots --------------------------------------------------------- */

/* A blob's recipe: one id per page, all-zero id = zero page (I5). */
typedef struct {
    char name[16];          /* "memory", "vmstate", "disk" */
    uint64_t size;          /* exact byte size; the last page may be partial */
    uint64_t npages;
    store_id *ids;          /* npages entries, owned by the snapshot */
} store_blob;

#define STORE_MAX_BLOBS 8

/* A tenant's tier as a snapshot recorded it (--tier), NONE when it was not given. The
 * names ("free", "pro") exist only at JSON and CLI edges: parse returns -EINVAL for any
 * other name and takes "" for NONE. */
typedef enum { STORE_TIER_NONE = 0, STORE_TIER_FREE, STORE_TIER_PRO } store_tier;
const char *store_tier_name(store_tier t);
STORE_MUST_USE int store_tier_parse(const char *name, store_tier *out);

/* FULL: what was given (memory, vmstate, disk). FILES: a reclaim's files-only snapshot
 * (only the important files' pages; not restorable as a VM). Names "full", "files". */
typedef enum { STORE_KIND_FULL = 0, STORE_KIND_FILES } store_kind;
const char *store_kind_name(store_kind k);
STORE_MUST_USE int store_kind_parse(const char *name, store_kind *out);

typedef struct {
    char id[STORE_SNAPID_LEN];
    char tenant[STORE_NAME_MAX + 1];
    char sandbox[STORE_NAME_MAX + 1];
    store_tier tier;
    int64_t time_ms;              /* acknowledged at, unix ms */
    uint64_t logical_bytes;       /* sum of blob sizes */
    uint64_t new_bytes;           /* pack bytes this snapshot added */
    uint64_t new_chunks;
    char parent[STORE_SNAPID_LEN];/* "" if none; informational only (no chains) */
    char template_name[STORE_NAME_MAX + 1]; /* "" if none: the template it was booted from */
    struct store_findex *files;   /* file index of the disk, or NULL; owned by the snapshot */
    char files_hash[17];          /* hex XXH3-64 of manifests/ID.files, "" if none */
    store_kind kind;
    int nblobs;
    store_blob blobs[STORE_MAX_BLOBS];
} store_snapshot;

void store_snapshot_free(store_snapshot *snap);   /* frees blobs' ids and snap itself */

/* 0 if s is a well-formed snapshot id (and so safe to use in a path). */
STORE_MUST_USE int store_snapid_valid(const char *s);
/* 0 if s is a valid tenant or sandbox name: [A-Za-z0-9._-], 1..128, not starting '.'. */
STORE_MUST_USE int store_name_valid(const char *s);

/* Names starting with '_' are Cairn's own: a template is stored as sandbox "_tpl.NAME" of
 * tenant "_cairn". snap_ingest refuses a reserved tenant or sandbox name unless the request
 * is a template's (snap_request.template_add); gc and the lifecycle view leave them out. */
#define STORE_TEMPLATE_TENANT "_cairn"
STORE_MUST_USE int store_name_reserved(const char *name);
/* The sandbox that holds template `name` (-EINVAL: not a valid template name). */
STORE_MUST_USE int store_template_sandbox(const char *name, char out[STORE_NAME_MAX + 1]);
/* The template name of such a sandbox, or NULL if it is not a template's. */
const char *store_template_name(const char *sandbox);

/* Loads a snapshot's manifest (checksum verified). -ENOENT if there is no such snapshot. */
STORE_MUST_USE int store_snapshot_load(store_t *s, const char *id, store_snapshot **out, store_err *e);

/* A manifest loaded in two steps, for readers that need one blob's recipe or none (a lazy
 * wake: expanding every recipe costs time in proportion to the VM's size). open reads the
 * file and checks its magic, checksum and metadata, as store_snapshot_load does; the
 * snapshot it shows has every blob's ids NULL until expand(blob) fills that blob's (the
 * same checks as a full load: a malformed recipe is -EBADMSG). take hands the snapshot
 * over (the caller frees it with store_snapshot_free) and frees the rest; free drops all.
 * dup makes a manifest of its own that shares the checked bytes (nothing read again, no
 * recipe expanded); drop_bytes lets go of them (keep the metadata and expanded recipes:
 * a later expand or dup is -ENODATA). One manifest is not thread-safe; dups of it may be
 * used by other threads (the shared bytes are read-only, counted atomically). */
typedef struct store_manifest store_manifest;
STORE_MUST_USE int store_manifest_open(store_t *s, const char *id, store_manifest **out, store_err *e);
const store_snapshot *store_manifest_snapshot(const store_manifest *m);
STORE_MUST_USE int store_manifest_expand(store_manifest *m, const char *blob, store_err *e);
store_snapshot *store_manifest_take(store_manifest *m);
STORE_MUST_USE int store_manifest_dup(const store_manifest *m, store_manifest **out, store_err *e);
void store_manifest_drop_bytes(store_manifest *m);
void store_manifest_free(store_manifest *m);

/* The newest snapshot of a sandbox into id_out; -ENOENT if it has none. */
STORE_MUST_USE int store_snapshot_latest(store_t *s, const char *sandbox, char id_out[STORE_SNAPID_LEN],
                          store_err *e);

/* Calls fn for each snapshot of sandbox, newest first, with its index record (JSON text,
 * valid during the call). Stops early if fn returns non-zero. */
typedef int (*store_snapshot_fn)(void *arg, const char *id, const char *json);
STORE_MUST_USE int store_snapshot_list(store_t *s, const char *sandbox, store_snapshot_fn fn, void *arg,
                        store_err *e);

/* A snapshot's index record, typed: what gc and the CLI list without loading manifests.
 * Order: ids sort in commit order (store/pack.c makes them from a per-store hybrid logical
 * clock), so comparing ids compares commits; time_ms is the wall clock, for humans and idle
 * time. A sequence field of its own, if ever needed, belongs here, not in the callers. */
typedef struct {
    char id[STORE_SNAPID_LEN];
    char tenant[STORE_NAME_MAX + 1];
    char sandbox[STORE_NAME_MAX + 1];
    char template_name[STORE_NAME_MAX + 1];   /* "" if none */
    char parent[STORE_SNAPID_LEN];            /* "" if none */
    store_tier tier;
    store_kind kind;
    int64_t time_ms;
    int64_t parent_time_ms;       /* when the parent was taken; 0 without a parent */
    uint64_t logical_bytes, new_bytes, new_chunks;
    int indexed;                  /* has a file index */
    int has_disk;                 /* has a "disk" blob */
    const char *json;             /* the record as stored (what `cairn snapshots --json`
                                     prints); valid during the callback only */
} store_snaprec;

/* Calls fn for each snapshot record of sandbox (newest first), or of every sandbox when
 * sandbox is NULL (in id order). A record the store cannot read is an error (-EBADMSG,
 * "run fsck --rebuild-index"), never skipped. Stops early, without error, when fn returns
 * non-zero. */
typedef int (*store_snaprec_fn)(void *arg, const store_snaprec *r);
/* The one JSON form of a snapshot record (the index's record, `cairn snapshots --json`, the
 * API's GET /v1/snapshots/{id} and snapshot_list): snapshot, tenant, sandbox, tier, time,
 * time_ms, logical_bytes, new_bytes, new_chunks, parent, blobs {NAME: size}, kind,
 * template? files_hash? files?. NULL when out of memory; the caller owns it. */
struct json_t *store_snapshot_json(const store_snapshot *snap);
STORE_MUST_USE int store_snapshot_records(store_t *s, const char *sandbox, store_snaprec_fn fn, void *arg,
                           store_err *e);

/* Calls fn for every snapshot's index record (JSON), in id (time) order. */
STORE_MUST_USE int store_snapshot_all(store_t *s, store_snapshot_fn fn, void *arg, store_err *e);
/* Lists the manifests' snapshot ids (malloc'd); other files are reported as garbage when
 * report is not NULL. A listing that fails part way is an error, never a shorter list
 * (gc marks live chunks from it). */
STORE_MUST_USE int store_manifest_list(store_t *s, char (**ids)[STORE_SNAPID_LEN], size_t *n,
                        store_report_fn report, void *arg, store_err *e);

/* ---- file index (issue 3) -----------------------------------------------------------
 *
 * A snapshot with a disk carries an index of the disk's files, written with the snapshot
 * (manifests/ID.files, checksummed, written before the manifest, which records its hash).
 * It is what `ls`, `cat`, `extract` and `rebuild` read: a file's bytes come from the
 * disk's chunks through its extents, never from re-parsing the image.
 *
 * Paths are the raw bytes of the image's names joined by '/', starting with '/'. They may
 * hold any byte but NUL and '/' inside a component (the walker refuses those names and
 * "." / ".." entries). They are not necessarily UTF-8. Entries are sorted by path
 * (memcmp order), so a directory's children follow it.
 */
typedef enum {
    STORE_FT_FILE = 1, STORE_FT_DIR, STORE_FT_SYMLINK, STORE_FT_HARDLINK,
    STORE_FT_CHR, STORE_FT_BLK, STORE_FT_FIFO, STORE_FT_SOCK
} store_ftype;

typedef enum {
    STORE_CLASS_RUNTIME = 0, STORE_CLASS_ARTIFACT, STORE_CLASS_UPLOAD, STORE_CLASS_PROJECT,
    STORE_CLASS_SECRET, STORE_CLASS_CACHE, STORE_CLASS_TEMP, STORE_CLASS_COUNT
} store_class;

/* "artifact", "upload", ...; -1 if unknown. Important = artifact, upload, project. */
const char *store_class_name(store_class c);
STORE_MUST_USE int store_class_parse(const char *name);
STORE_MUST_USE int store_class_important(store_class c);

typedef struct {
    uint64_t file_off;      /* offset in the file */
    uint64_t disk_off;      /* byte offset in the snapshot's disk blob */
    uint64_t len;           /* bytes; the extent is data (holes are absent) */
} store_extent;

typedef struct {
    char *name;             /* "user.foo", "security.selinux", ... (NUL-terminated) */
    uint8_t *value;
    uint32_t len;
} store_xattr;

typedef struct {
    char *path;             /* NUL-terminated; see the rules above */
    uint32_t path_len;      /* strlen(path) */
    uint8_t type;           /* store_ftype */
    uint8_t cls;            /* store_class */
    uint32_t mode;          /* permission bits + S_IFMT, as in st_mode */
    uint32_t uid, gid;
    int64_t atime_ns, mtime_ns, ctime_ns;
    uint64_t size;
    uint32_t nlink;
    uint64_t rdev;          /* devices: makedev(major, minor) */
    char *target;           /* symlink: its target (raw bytes); hardlink: the path of the
                               first name of the inode (an entry of type FILE); else NULL */
    uint8_t *inline_data;   /* file bytes kept in the inode (ext4 inline_data), or NULL */
    uint32_t inline_len;
    store_extent *ext;      /* file data as disk ranges, file_off ascending; none if inline */
    uint32_t next;
    store_xattr *xattrs;
    uint32_t nxattrs;
} store_fentry;

typedef struct store_findex {
    store_fentry *e;        /* sorted by path */
    size_t n;
    char *warning;          /* non-NULL when the index is truncated or names were refused */
} store_findex;

void store_findex_free(store_findex *fi);          /* frees entries and fi itself */
void store_fentry_clear(store_fentry *f);          /* frees one entry's allocations */
/* Finds the entry of exactly this path, or NULL (binary search). */
const store_fentry *store_findex_get(const store_findex *fi, const char *path);
/* The same for len bytes of p (a prefix of a longer path, say), and the index of the first
 * entry whose path sorts >= them (memcmp order): the file index's one lookup. */
const store_fentry *store_findex_find(const store_findex *fi, const char *p, size_t len);
size_t store_findex_lower_bound(const store_findex *fi, const char *p, size_t len);
/* 1 when every entry has a path (path_len its length) and the paths strictly ascend: what
 * the lookups need, and what a damaged or hostile index may not give. */
int store_findex_sorted(const store_findex *fi);
/* Why p cannot name a file of an image (not absolute; an empty, "." or ".." component; a
 * component over 255 bytes), or NULL when it can. "/" is fine. */
const char *store_path_problem(const char *p);
/* p for messages and logs: bytes outside printable ASCII (and backslash) as \xNN, cut with
 * "..." to fit cap (>= 8). Returns out. */
const char *store_path_printable(const char *p, char *out, size_t cap);
/* Serialises / parses the index (format of manifests/ID.files). Parsing checks every
 * length against the buffer: a damaged file is an error, never an overread. */
STORE_MUST_USE int store_findex_encode(const store_findex *fi, uint8_t **out, size_t *len, store_err *e);
STORE_MUST_USE int store_findex_decode(const uint8_t *buf, size_t len, store_findex **out, store_err *e);
/* The decoded size an encoding's header announces (what decode will allocate), or
 * UINT64_MAX when buf is no file index: lets a caller refuse one too big to decode. */
uint64_t store_findex_raw_len(const uint8_t *buf, size_t len);

/* The file index of a snapshot: -ENOENT if it has none (no disk, or not indexed). Loaded
 * indexes have store_findex_mark_secrets applied. */
STORE_MUST_USE int store_findex_load(store_t *s, const store_snapshot *snap, store_findex **out, store_err *e);
/* An inode is secret if any of its names is: marks secret every entry below a secret
 * folder, every name of an inode one of whose names is secret (a FILE and the HARDLINKs
 * naming it), and every file whose extents overlap a secret file's (a crafted image can
 * share blocks). Idempotent. *marked (may be NULL) = entries changed. 0 or -ENOMEM. */
STORE_MUST_USE int store_findex_mark_secrets(store_findex *fi, uint64_t *marked);

/* The snapshot's blob called name ("disk", ...), or NULL. */
const store_blob *store_blob_find(const store_snapshot *snap, const char *name);

/* Reads len bytes of the snapshot's blob `name` at offset into buf, through its recipe;
 * each page read is verified against its id. Zero pages read as zeros. */
STORE_MUST_USE int store_blob_read(store_t *s, const store_snapshot *snap, const char *name, uint64_t off,
                    void *buf, size_t len, store_err *e);

/* ---- audit log ---------------------------------------------------------------------
 * DIR/audit.log: one JSON object per line, appended and fsynced before an audited read
 * runs (if the append fails, the read must not run). */
STORE_MUST_USE int store_audit_append(store_t *s, const char *json_line, store_err *e);
/* Calls fn with each entry, oldest first (j is borrowed: json_incref to keep it). fn
 * returns 0 to go on or a negative errno, which ends the read and is returned. A line that
 * is not a JSON object is a torn append when it is the last one (skipped: its read never
 * ran), and damage otherwise (-EBADMSG naming the line): never skipped in silence. */
STORE_MUST_USE int store_audit_read(store_t *s, int (*fn)(void *arg, struct json_t *j), void *arg, store_err *e);
/* DIR/events.log (lifecycle events): store/events.h. */

/* ---- writing ----------------------------------------------------------------------- */

/* A writer appends new chunks to packs of its own, then commits one snapshot. Until
 * commit nothing it wrote is visible; abort (or a crash) leaves only garbage (I2). */
typedef struct store_writer store_writer;

STORE_MUST_USE int store_writer_open(store_t *s, store_writer **out, store_err *e);

/* Compresses n (<= STORE_GROUP_PAGES) pages into dst; thread-safe given its own cctx.
 * Returns the compressed length or a negative code. dst needs store_group_bound(n). */
typedef struct store_cctx store_cctx;
store_cctx *store_cctx_new(void);
void store_cctx_free(store_cctx *c);
size_t store_group_bound(unsigned n);
STORE_MUST_USE ssize_t store_group_compress(store_cctx *c, const void *pages, unsigned n, void *dst,
                             size_t cap);

/* Appends one compressed group holding the chunks ids[0..n) (all new, distinct). */
STORE_MUST_USE int store_writer_add_group(store_writer *w, const store_id *ids, unsigned n,
                           const void *frame, size_t flen, store_err *e);

/* Changes each time chunks of this writer reached the index (a full pack is made durable
 * and indexed at once): from then on lookups find them, so a caller may forget them. */
uint64_t store_writer_generation(const store_writer *w);

/* Bytes appended to packs so far by this writer. */
uint64_t store_writer_bytes(const store_writer *w);

/* Lookups for deduplication by this writer: like store_lookup, but on S3 a chunk counts as
 * stored only where the writer may rely on it: not in a pack another node's gc had made a
 * fossil when the writer opened, nor in one gc deleted (such a chunk is written again). */
STORE_MUST_USE int store_writer_lookup(store_writer *w, const store_id *ids, size_t n, uint8_t *found,
                                       store_loc *locs, store_err *e);
/* 1 when the writer may name the chunks of snapshot `id` without looking them up (an
 * ingest's parent recipe, a reclaim's source); 0 when it must look them up (or cannot use
 * them); negative on error. Always 1 on a local store. On S3: only when the manifest is in
 * the bucket now, and no fossil awaited deletion at the writer's open unless `deleter` (the
 * caller holds the gc lease, so nobody else deletes). docs/s3.md says why. */
STORE_MUST_USE int store_writer_may_reuse(store_writer *w, const char *id, int deleter, store_err *e);

/* Makes snap durable: seals and syncs packs, indexes their chunks, writes the manifest
 * (the commit point), then records the snapshot in the index. Fills snap->id, time_ms,
 * new_bytes. On error nothing is acknowledged. The writer is freed either way. */
STORE_MUST_USE int store_writer_commit(store_writer *w, store_snapshot *snap, store_err *e);
void store_writer_abort(store_writer *w);

/* ---- reading ----------------------------------------------------------------------- */

/* Reads the compressed frame at loc into buf (cap >= loc->clen). Thread-safe. */
STORE_MUST_USE int store_read_frame(store_t *s, const store_loc *loc, void *buf, size_t cap, store_err *e);

/* Decompresses a frame of npages pages into pages (npages * STORE_PAGE bytes). */
typedef struct store_dctx store_dctx;
store_dctx *store_dctx_new(void);
void store_dctx_free(store_dctx *d);
STORE_MUST_USE int store_group_decompress(store_dctx *d, const void *frame, size_t flen, void *pages,
                           unsigned npages, store_err *e);
/* Only the first `want` pages of the group (restore needs no page past its last one). The
 * frame's checksum is then not checked: callers verify each page against its id. */
STORE_MUST_USE int store_group_decompress_prefix(store_dctx *d, const void *frame, size_t flen, void *pages,
                                  unsigned npages, unsigned want, store_err *e);

/* ---- checking and repair ----------------------------------------------------------- */

typedef struct {
    uint64_t snapshots, logical_bytes, stored_bytes, packs, chunks, index_bytes;
    uint64_t manifest_bytes;
} store_stats;
STORE_MUST_USE int store_get_stats(store_t *s, store_stats *st, store_err *e);

enum { STORE_FSCK_VERIFY_DATA = 1 };
/* Checks the store; calls report(arg, is_problem, text) for each finding. Problems
 * threaten a snapshot; garbage (is_problem = 0) is leftovers gc will remove.
 * Returns 0 when the check ran (whatever it found), < 0 when it could not run. */
STORE_MUST_USE int store_fsck(store_t *s, int flags, store_report_fn report, void *arg, store_err *e);
/* Reports (as problems) every file or folder of the store that its group or other users
 * may open: the store is private to its owner (folders 0700, files 0600). store_fsck runs
 * it. A process that opens a store for writing must run with umask 077: RocksDB creates
 * its files 0644 & ~umask (the CLI sets it). */
STORE_MUST_USE int store_check_private(store_t *s, store_report_fn report, void *arg, store_err *e);

/* ---- refresh (a node of a bucket learns what other nodes wrote: docs/s3.md) ----------
 * Reads only what is new since the node's last refresh or rebuild: manifests listed from
 * the last refresh's time (less a margin for commits in flight and clock skew), and each
 * other node's packs listed from the highest one read (less a window for uploads that
 * finish out of order). New packs' footers give the chunks' locations, new manifests the
 * snapshot records. Runs by itself at every open of a store on S3 (a writer's always; a
 * reader's when no other process of this node holds the store at that moment). Needs
 * STORE_WRITE; a local store has nothing to refresh (0, counts 0). Damaged manifests are
 * reported (report may be NULL) and left out, like a rebuild does. */
typedef struct {
    uint64_t snapshots;     /* new snapshot records */
    uint64_t packs;         /* new packs whose footers were read */
    uint64_t chunks;        /* new chunk records */
    uint64_t requests;      /* LISTs and GETs sent */
    int64_t ms;             /* time taken */
    int runs;               /* refreshes done by this handle (0: none, e.g. a local store) */
} store_refresh_stats;
STORE_MUST_USE int store_refresh(store_t *s, store_report_fn report, void *arg, store_err *e);
/* The sum of the refreshes this handle did (at open and by store_refresh). */
void store_refresh_totals(const store_t *s, store_refresh_stats *out);

/* Deletes and recreates the index from packs and manifests. Needs STORE_WRITE. */
STORE_MUST_USE int store_rebuild_index(store_t *s, store_report_fn report, void *arg, store_err *e);

#endif
