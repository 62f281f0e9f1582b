/*
 * restore/lazy: wake a snapshot without writing its memory first (issue 12).
 *
 * Three ways to hand a snapshot's bytes to a VM on demand, all reading through one page
 * source (restore_pages):
 *   - restore_uffd_serve: a page server speaking Firecracker's userfaultfd protocol;
 *   - restore_mount: a read-only FUSE view of snapshots (restore/mount.c);
 *   - the working-set list (restore_wset_*): pages a wake touched first, kept beside the
 *     sandbox's next snapshot so its next wake installs them before they are asked for.
 *
 * Trust: every page that leaves a restore_pages matched its id (I4); a page that does not
 * is an error (-EBADMSG), never wrong bytes. Everything a client sends (region lists,
 * socket bytes) is hostile and is checked before use.
 *
 * Store access: a lazy reader lives as long as its VM, so it never holds the store's lock
 * (that would stop every ingest): it opens the store with STORE_PEEK and takes a lease on
 * the snapshot (store_lease_take) before loading its manifest, so gc keeps the snapshot
 * (docs/lazy-wake.md says why this is enough). If gc moved chunks since the reader opened
 * the index, the first read that misses reopens the index once and tries again.
 */
#ifndef CAIRN_RESTORE_LAZY_H
#define CAIRN_RESTORE_LAZY_H

#include <stdint.h>

#include "store/store.h"

/* ---- page source ------------------------------------------------------------------- */

/* One blob of one snapshot, served by page. Thread-safe: any number of threads may call
 * get/read at once. Decompressed groups stay in a bounded cache (cache_bytes), so the
 * pages after the first of a group cost a copy and a hash, not a decompression. */
typedef struct restore_pages restore_pages;

typedef struct {
    uint64_t pages_data;        /* pages served from the store (verified) */
    uint64_t pages_zero;        /* zero pages served (no store access) */
    uint64_t groups_read;       /* zstd frames read and decompressed */
    uint64_t bytes_read;        /* compressed bytes read from packs */
    uint64_t cache_hits;        /* data pages found in the group cache */
    uint64_t reopens;           /* times the index was reopened after a miss */
    uint64_t lookups;           /* index lookups (pages no decompressed group explained) */
} restore_pages_stats;

/* Opens blob `blob` of snapshot `id` in the store at dir. Takes a lease on the snapshot
 * (released by close), reads the manifest and checks it (checksum, metadata: a damaged
 * one fails here), and returns: the blob's recipe is expanded by a thread of its own
 * (its cost grows with the blob's size), which the first is_zero/get/get_cached waits
 * for; a recipe that does not decode fails them all with its reason. cache_bytes 0 means
 * the default: the blob's data pages (x 1.25), at least 64 MiB, at most 256 MiB. */
int restore_pages_open(const char *dir, const char *id, const char *blob, uint64_t cache_bytes,
                       restore_pages **out, store_err *e);
/* The same with the manifest already read and checked (a store_manifest_dup; owned by the
 * call, freed on failure too): used if the file is still there once the lease is held,
 * else read again. A view stats a file before opening it: one read serves both. */
int restore_pages_open_from(const char *dir, const char *id, const char *blob, uint64_t cache_bytes,
                            store_manifest *have, restore_pages **out, store_err *e);
void restore_pages_close(restore_pages *p);
uint64_t restore_pages_size(const restore_pages *p);        /* the blob's byte size */
uint64_t restore_pages_count(const restore_pages *p);       /* its pages (last one padded) */
/* The snapshot's metadata. Its blobs' ids are not for callers: only this blob's recipe
 * is expanded, and in the background. */
const store_snapshot *restore_pages_snapshot(const restore_pages *p);
/* 1 if page pg is a zero page (from the recipe; no store access). pg < count. 0 too if
 * the recipe did not decode (get then fails with the reason). */
int restore_pages_is_zero(restore_pages *p, uint64_t pg);
/* Copies page pg (STORE_PAGE bytes, the last one zero-padded) into out. */
int restore_pages_get(restore_pages *p, uint64_t pg, void *out, store_err *e);
/* Copies page pg into out only if that costs no I/O: its location is known and its group
 * is in the cache (verified as restore_pages_get verifies). 0: copied; 1: not at hand (or
 * a zero page, or past the end): nothing read; negative: the cached bytes fail their id
 * (or the recipe did not decode).
 * For fault-around: a neighbour is worth a copy, not a decompression or a lookup. */
int restore_pages_get_cached(restore_pages *p, uint64_t pg, void *out, store_err *e);
/* Reads len bytes at off (clamped to the blob's end: *got says how many). */
int restore_pages_read(restore_pages *p, uint64_t off, void *buf, size_t len, size_t *got,
                       store_err *e);
void restore_pages_get_stats(restore_pages *p, restore_pages_stats *st);

/* ---- Firecracker's region list ----------------------------------------------------- */

/* One guest memory region as Firecracker sends it (GuestRegionUffdMapping). */
typedef struct {
    uint64_t base;              /* base_host_virt_addr */
    uint64_t size;
    uint64_t offset;            /* offset in the memory file */
    uint64_t page_size;         /* bytes: page_size, else page_size_kib (bytes despite its
                                   name), else 4096 */
} restore_region;

/* Parses the JSON array and checks it against a memory file of mem_size bytes: every
 * field a non-negative integer that fits, page_size a power of two of 4 KiB..2 MiB (Firecracker's huge pages),
 * base/size/offset aligned to it, no overflow of base+size or offset+size, offset+size
 * within the file (rounded up to page_size), regions not overlapping in address space,
 * at most RESTORE_MAX_REGIONS. On success *out (malloc'd) holds n regions sorted by base.
 * -ENODATA: the text is a valid beginning of JSON that ends too soon (read more). */
#define RESTORE_MAX_REGIONS 64
int restore_regions_parse(const char *json, size_t len, uint64_t mem_size, restore_region **out,
                          size_t *n, store_err *e);

/* ---- working set ------------------------------------------------------------------- */

/* The pages (indexes into the memory blob) a wake touched first, in order. Stored at
 * DIR/cache/wset-<snapshot id>.bin: derived data, removed with its snapshot (I3 holds:
 * losing it costs only speed). Format: "CAIRNWS1", u32 count, u32 reserved, count u64
 * page numbers (LE), XXH3-64 of everything before it. */
int restore_wset_save(const char *dir, const char *snap_id, const uint64_t *pages, size_t n,
                      store_err *e);
/* -ENOENT if there is none; -EBADMSG if damaged. */
int restore_wset_load(const char *dir, const char *snap_id, uint64_t **pages, size_t *n,
                      store_err *e);
/* A wake's recording waits in DIR/cache/wset-pending-<sandbox>.bin until the sandbox's
 * next snapshot commits; then restore_wset_adopt renames it to that snapshot's name. */
int restore_wset_save_pending(const char *dir, const char *sandbox, const uint64_t *pages,
                              size_t n, store_err *e);
int restore_wset_adopt(const char *dir, const char *sandbox, const char *snap_id, store_err *e);

/* ---- the page server --------------------------------------------------------------- */

typedef struct {
    const char *store_dir;
    const char *snapshot;
    const char *socket_path;
    uint64_t cache_bytes;       /* 0: default */
    int prefetch;               /* install the snapshot's working set first (if it has one) */
    unsigned fault_around;      /* a fault also installs the pages after it that are at
                                   hand, up to this many from the last faulted one on, that
                                   one included (0 or 1: none; restore/uffd.c says which) */
    double record_seconds;      /* record touched pages for this long after the handshake;
                                   0: do not record */
    int accept_timeout_ms;      /* a connection that sends no handshake within this is
                                   dropped (0: 5000); others are served meanwhile */
    unsigned threads;           /* threads reading and answering the uffd (0: 2; max 16) */
    /* Called once the snapshot is leased and its manifest loaded, before listening: a
     * caller that needs the snapshot (its sandbox, to record activity) gets it here
     * rather than loading the manifest a second time. snap lives until the call returns. */
    void (*on_open)(void *arg, const store_snapshot *snap);
    int wait_ms;                /* no VM handshake within this after listening: return 0
                                   with timed_out set (0: wait for ever) */
    /* Called once the socket listens (so a caller can report readiness). */
    void (*on_listen)(void *arg);
    void *arg;
    /* Called for each refused connection or ignored event, with a reason. */
    void (*warn)(void *arg, const char *why);
} restore_uffd_opts;

typedef struct {
    uint64_t faults;            /* page faults answered */
    uint64_t faults_zero;       /* of which answered with zeros (zero page or removed) */
    uint64_t removes;           /* UFFD_EVENT_REMOVE events */
    uint64_t removed_bytes;
    uint64_t prefetched;        /* pages installed by the prefetch thread */
    uint64_t around;            /* pages installed beside a faulted one (fault-around) */
    uint64_t batched;           /* faults answered by a copy of several consecutive faulted
                                   pages read in one batch (counted in faults too) */
    uint64_t recorded;          /* pages in the working set recorded */
    uint64_t refused;           /* connections refused (garbage, bad regions) */
    double serve_seconds;       /* from the handshake to the VM's exit */
    int timed_out;              /* no VM came within wait_ms: nothing was served */
    restore_pages_stats pages;
} restore_uffd_result;

/* Listens on socket_path, waits for a VM's handshake (uffd + region list), serves its
 * faults until it goes away (its socket closes), then returns 0. Connections that send
 * garbage or an invalid region list are refused (closed) and the server goes on waiting.
 * The socket file is removed on return (and the lease released), also after wait_ms
 * without a VM. */
int restore_uffd_serve(const restore_uffd_opts *o, restore_uffd_result *r, store_err *e);

/* ---- the FUSE view ------------------------------------------------------------------ */

typedef struct {
    const char *store_dir;
    const char *mountpoint;
    uint64_t cache_bytes;       /* per open blob; 0: default */
    int foreground;             /* else daemonize after the mount is up */
    int open_rw;                /* accept O_RDWR opens (writes still fail with EROFS): QEMU
                                   7.2 opens a memory-backend-file O_RDWR even with
                                   share=off, and maps it MAP_PRIVATE */
    int debug;
} restore_mount_opts;

/* Mounts the view and serves it until unmounted (fusermount3 -u). */
int restore_mount(const restore_mount_opts *o, store_err *e);

#endif
