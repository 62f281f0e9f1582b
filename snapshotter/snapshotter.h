/*
 * snapshotter: ingest of VM files (memory, vmstate, disk) into the store.
 *
 * Cost grows with changed pages, not VM size: holes are skipped without reading
 * (SEEK_DATA/SEEK_HOLE), zero pages are recognised by a fast test, each page's id is
 * compared with the parent snapshot's id at the same offset (and, once many pages turn
 * out to have moved, with a set of all the parent's ids) before any index lookup,
 * the rest are looked up in batches, and only new pages are compressed (on all cores).
 *
 * Memory: the recipes (16 bytes per page) plus fixed buffers (~16 MiB) plus 32 bytes per
 * new page (the set that dedups new pages within this ingest), plus 32-64 bytes per
 * distinct chunk of the parent when its set is built.
 *
 * The store must be open for writing. Inputs must be regular files; anything else is
 * refused before a byte is stored.
 */
#ifndef CAIRN_SNAPSHOTTER_H
#define CAIRN_SNAPSHOTTER_H

#include "store/store.h"

typedef void (*snap_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* ---- classes (policy.c) --------------------------------------------------------------
 * A policy classifies paths: explicit per-path classes (a "class<TAB>path" file from the
 * orchestrator; a folder's class covers everything below it), then rules "GLOB CLASS" of
 * a policy file, then of the store's `policy` file, then the built-in defaults; the first
 * match wins. Unmatched paths are runtime. */
typedef struct snap_policy snap_policy;
/* store_dir, policy_file and classes_file may each be NULL. */
STORE_MUST_USE int snap_policy_load(const char *store_dir, const char *policy_file, const char *classes_file,
                     snap_policy **out, store_err *e);
void snap_policy_free(snap_policy *p);
/* Adds explicit classes ("CLASS<TAB>/path" lines, as in a classes file) to a loaded policy:
 * the API passes the orchestrator's classes this way, without a file. */
int snap_policy_add_classes(snap_policy *p, const char *text, const char *origin, store_err *e);
store_class snap_policy_classify(const snap_policy *p, const char *path, size_t len);
/* Classes every entry, then store_findex_mark_secrets: 0 or -ENOMEM. */
int snap_policy_apply(const snap_policy *p, store_findex *fi);
const char *snap_policy_defaults(void);   /* the built-in rules, as text */
/* The rules' glob over a path's raw bytes (len of them): '*' and '?' stay inside one
 * component, "**" crosses components (and "**" "/" also matches no component), and a glob
 * ending in "/" "**" also matches the folder itself. Pure; 1 on a match. */
int snap_glob_match(const char *glob, const char *path, size_t len);

/* ---- file index of a disk image (ext4walk.c) -----------------------------------------
 * Walks an ext4 image in a confined child process (see ext4walk.c) and returns its file
 * index, sorted, classes unset (runtime). disk_bytes bounds every extent. The process must
 * be able to fork; the child never touches the store. On error (not ext4, corrupt beyond
 * use, the parser crashed or timed out) *out is NULL and e says why. A partial index
 * (loops, refused names, truncated) comes back with fi->warning set. */
STORE_MUST_USE int snap_index_disk(const char *image, uint64_t disk_bytes, store_findex **out, store_err *e);
/* As snap_index_disk, but when the image's journal needs recovery (a paused VM's disk
 * usually does) the index is built from a private copy with the journal replayed, and
 * files whose bytes differ from the stored image keep them in the index (journal.c).
 * warn (wcap bytes) says what could not be done; "" when all went well. */
STORE_MUST_USE int snap_index_disk_replayed(const char *image, uint64_t disk_bytes, store_findex **out, char *warn,
                             size_t wcap, store_err *e);
STORE_MUST_USE int snap_journal_needs_recovery(const char *image);

/* How the walker is started. By default it is fork()ed: a copy of this process. A process
 * with busy threads (`cairn serve`) pays for that: until the child exits, the first write
 * to each page it shares takes a copy-on-write fault and a TLB shootdown of every thread
 * (the API's p99 doubled beside back-to-back ingests). After snap_walker_exec(EXE) the
 * walker is a fresh process instead: EXE (a binary whose main calls snap_walker_main
 * first, e.g. "/proc/self/exe" of cairn) is spawned with the pipe and the images as fds.
 * Call it once, before any walk, with a string that outlives them. */
void snap_walker_exec(const char *exe);
/* In a binary that may be EXE above: when argv says it was spawned as the walker, walks
 * and never returns (it _exits); else returns 0 and main goes on. */
int snap_walker_main(int argc, char **argv);

/* The same parse in this process, with no confinement: for the fuzzer and tests only. */
STORE_MUST_USE int snap_index_disk_unconfined(const char *image, uint64_t disk_bytes, store_findex **out,
                               store_err *e);

typedef struct {
    const char *tenant;
    const char *sandbox;
    store_tier tier;                  /* NONE: the tenant's tier as it is */
    const char *blob_name[STORE_MAX_BLOBS];
    const char *blob_path[STORE_MAX_BLOBS];
    int nblobs;
    snap_progress_fn progress;        /* may be NULL */
    void *progress_arg;
    const char *template_name;        /* may be NULL: the template the sandbox booted from */
    const snap_policy *policy;        /* classes for the disk's file index; NULL: no index */
    char warning[768];                /* out: why the file index is missing or partial */
    store_findex *files;              /* the disk's index, if built ahead (snap_prepare_index);
                                         snap_ingest takes ownership and frees or keeps it */
    int index_tried;                  /* set by snap_prepare_index: not tried twice */
    struct snap_index_job *index_job; /* snap_index_start's walk until joined; while it is set,
                                         files, warning and index_tried are the walk's */
    int template_add;                 /* storing a template: tenant STORE_TEMPLATE_TENANT,
                                         sandbox from store_template_sandbox. Only then are
                                         reserved names ('_...') accepted. */
} snap_request;

/* Builds the request's disk file index now (needs no store): call it before opening the
 * store for writing, so the walk and any journal replay do not hold the store's lock.
 * Does nothing without a policy or a disk. Problems become req->warning. */
void snap_prepare_index(snap_request *req);

/* snap_prepare_index on a thread of its own (or now, when no thread can be made), so that
 * the walk overlaps the store's open and the ingest's hashing. Call it before taking the
 * store's lock; snap_ingest joins it before its commit, waiting for it at most as long as
 * the ingest itself took (>= 100 ms), so that a slow image holds the lock at most that much
 * longer. Past that snap_ingest returns -EINPROGRESS, having stored nothing: the caller
 * lets the store go, calls snap_index_wait, takes the store again and calls snap_ingest
 * again. After snap_ingest, whatever it returned, the caller calls snap_index_wait and
 * frees req->files (NULL when the snapshot took it). */
void snap_index_start(snap_request *req);
/* Waits for snap_index_start's walk; a no-op when none runs. */
void snap_index_wait(snap_request *req);

/* Ingests the request's files and commits one snapshot. On success *out is the committed
 * snapshot (free with store_snapshot_free); on failure nothing is acknowledged and only
 * garbage that fsck reports may remain (after a crash), never a half snapshot. */
STORE_MUST_USE int snap_ingest(store_t *s, snap_request *req, store_snapshot **out, store_err *e);

#endif
