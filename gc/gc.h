/*
 * gc: the sandbox lifecycle, retention by tier, reclaim, and mark-and-sweep of the store.
 *
 * The protocol (why a concurrent ingest never loses a chunk, why a crash leaves only
 * garbage) is written down in docs/gc.md; the short of it: heavy work without any lock,
 * changes in short exclusive sections that first re-read every manifest that appeared.
 *
 * State lives in manifests (snapshots) and in the store's events.log (activity, tiers,
 * deletions, pins, drops); nothing here depends on the index surviving.
 */
#ifndef CAIRN_GC_H
#define CAIRN_GC_H

#include <jansson.h>

#include "store/events.h"
#include "store/store.h"

#define GC_FREE_WINDOW_MS (7LL * 24 * 3600 * 1000)
#define GC_PRO_WINDOW_MS (21LL * 24 * 3600 * 1000)

/* How long a sandbox of this tier may stay idle before gc reclaims it. */
int64_t gc_window_ms(store_tier t);

typedef enum { GC_HIBERNATED = 1, GC_RECLAIMED, GC_DELETED } gc_sandbox_state;
/* "hibernated", "reclaimed", "deleted": for JSON and humans only. */
const char *gc_state_name(gc_sandbox_state st);

typedef struct {
    char sandbox[STORE_NAME_MAX + 1];
    char tenant[STORE_NAME_MAX + 1];
    store_tier tier;                /* FREE or PRO (the tenant's, as gc will apply it) */
    gc_sandbox_state state;
    char template_name[STORE_NAME_MAX + 1];
    char latest[STORE_SNAPID_LEN];  /* newest snapshot, "" if none */
    char latest_parent[STORE_SNAPID_LEN]; /* its parent (a files-only one's source) */
    int64_t last_activity_ms;
    int64_t delete_ms;              /* 0 unless deleted */
    char delete_after[STORE_SNAPID_LEN]; /* the newest snapshot a delete saw ("" if none, or
                                       only deletes logged before this was recorded) */
    uint32_t snapshots;
    uint64_t bytes;                 /* pack bytes its snapshots added (new_bytes) */
    int latest_files_only;          /* latest snapshot is files-only */
    int latest_indexed;             /* latest has a file index */
    int latest_has_disk;
} gc_sandbox;

/* The lifecycle view of every sandbox (store open for reading). tenant may be NULL (all).
 * *out is malloc'd (free it); sandboxes of Cairn itself (names starting '_') are left out. */
STORE_MUST_USE int gc_sandboxes(store_t *s, const char *tenant, gc_sandbox **out, size_t *n, store_err *e);

/* Appends a lifecycle event after checking it makes sense (the sandbox, snapshot exists).
 * name is the sandbox for touch, delete, restore, rebuild; the tenant for tier (with tier
 * FREE or PRO); the snapshot id for pin and unpin. Drops are gc's own (not taken here).
 * -EINVAL for a bad name, -ENOENT for a sandbox or snapshot the store does not have. */
STORE_MUST_USE int gc_event(store_t *s, store_event_kind kind, const char *name, store_tier tier,
             int64_t at_ms, store_err *e);

typedef void (*gc_log_fn)(void *arg, const char *line);

typedef struct {
    int64_t now_ms;                 /* the clock retention is measured against */
    int dry_run;                    /* compute and report; change nothing */
    gc_log_fn log;                  /* one line per action; may be NULL */
    void *log_arg;
} gc_options;

typedef struct {
    uint64_t reclaimed, dropped_snapshots, not_reclaimed;
    uint64_t leased;                /* drops skipped: a reader holds a lease (store/lease.h) */
    uint64_t packs_deleted, packs_rewritten, chunks_removed;
    uint64_t freed_bytes;           /* pack + manifest bytes removed, minus bytes rewritten */
    uint64_t bytes_before, bytes_after;
    /* S3 (gc across nodes, docs/s3.md) */
    uint64_t fossils_recorded;      /* packs made fossils by this run (epoch 1) */
    uint64_t fossils_resurrected;   /* fossils kept: a snapshot committed since names them */
    int sweep_skipped;              /* another node holds the gc lease: retention only */
    char lease_holder[16];          /* that node's tag ("" if none) */
    int64_t lease_until_ms;
    char **reclaimed_list;          /* sandbox names */
    size_t nreclaimed_list;
    double seconds;
} gc_result;

/* Runs retention and sweep on the store at dir (gc opens it as it needs: see docs/gc.md).
 * Returns 0 when everything planned was done, or a negative code; r says what was done
 * either way (a failed run is resumed safely by the next). */
STORE_MUST_USE int gc_run(const char *dir, const gc_options *o, gc_result *r, store_err *e);
void gc_result_free(gc_result *r);

/* ---- edges (json.c): the same JSON and times for the CLI and the API ---------------- */
/* RFC 3339 ("2026-11-21T10:00:00Z", offsets, fractions) or unix seconds -> unix ms.
 * Strict: a time that does not exist is -1, never normalised. Years 1970-9999. */
STORE_MUST_USE int gc_parse_time(const char *s, int64_t *ms);
/* {sandbox, tenant, tier, state, last_activity, last_activity_ms, bytes, snapshots, latest,
 * template}; NULL when out of memory. */
json_t *gc_sandbox_json(const gc_sandbox *v);
/* {ok, dry_run, reclaimed, dropped_snapshots, not_reclaimed, packs_deleted, packs_rewritten,
 * chunks_removed, freed_bytes, stored_bytes_after, seconds, reclaimed_sandboxes, kept_leased,
 * fossils_recorded, fossils_resurrected, sweep_skipped, lease_holder}. */
json_t *gc_result_json(const gc_result *r, int ok, int dry_run);

#endif
