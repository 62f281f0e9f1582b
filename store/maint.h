/*
 * store/maint.h: the store's maintenance face. Only gc, fsck tooling and tests include it;
 * the rest of Cairn uses store/store.h. These calls can break the store's invariants (I1,
 * I2 of store.h) when used out of order; gc's order is in gc/sweep.c and docs/gc.md.
 *
 * Which handle each call needs
 *   STORE_WRITE (the exclusive lock): store_reserve_packs, store_snapshot_drop,
 *     store_remove_temps, store_pack_delete, store_index_apply.
 *   Any handle: store_writer_open_range and store_writer_seal (gc writes new packs under
 *     STORE_SCAN, without the lock: only numbers reserved before can be used), the lists
 *     and the footers. store_pack_refs needs the index (not SCAN).
 *   See store.h, "Concurrency", for which handles may be open at once.
 *
 * Errors and ownership as in store.h: a list that fails part way is an error, never a
 * shorter list (gc decides what to delete from these).
 */
#ifndef CAIRN_STORE_MAINT_H
#define CAIRN_STORE_MAINT_H

#include "store/store.h"

/* ---- pack numbers and writers without a snapshot ---------------------------------- */

/* Reserves n pack numbers in the index (STORE_WRITE), so a writer opened later without
 * the lock (gc's heavy phase, STORE_SCAN) can never reuse a number: a reader holding a
 * deleted pack open must not mistake a new pack for it. */
STORE_MUST_USE int store_reserve_packs(store_t *s, uint64_t n, uint64_t *first, store_err *e);
/* A writer that takes pack numbers from [first, first + n) only (then fails -ENOSPC). */
STORE_MUST_USE int store_writer_open_range(store_t *s, uint64_t first, uint64_t n, store_writer **out, store_err *e);

/* Seals and syncs the writer's packs (fsync, rename, folder fsync) without committing a
 * snapshot: for gc, which re-points the index at them itself. ids and locs (n entries, owned
 * by the writer) say where each chunk went. Free the writer with store_writer_abort. */
STORE_MUST_USE int store_writer_seal(store_writer *w, const store_id **ids, const store_loc **locs, size_t *n,
                      store_err *e);

/* ---- snapshots, packs and index edits for gc ------------------------------------- */

/* Removes an acknowledged snapshot (manifest, file index, index records). Needs
 * STORE_WRITE. The caller logs why (a "drop" event) first. -ENOENT if it is not there. */
STORE_MUST_USE int store_snapshot_drop(store_t *s, const char *id, store_err *e);

/* Opens a pack's footer: its groups and ids (malloc'd; free both). */
typedef struct { uint64_t offset; uint32_t clen; uint16_t npages; uint32_t first; } store_group;
STORE_MUST_USE int store_pack_footer(store_t *s, uint64_t pack, store_group **groups, uint32_t *ngroups,
                      store_id **ids, uint32_t *nchunks, uint64_t *bytes, store_err *e);
/* Removes the .tmp leftovers of interrupted writers, and derived files in DIR/cache/ whose
 * snapshot is gone. Only under the exclusive lock (STORE_WRITE), where no writer can be
 * running. */
STORE_MUST_USE int store_remove_temps(store_t *s, store_err *e);
/* Lists pack numbers (malloc'd, ascending). */
STORE_MUST_USE int store_pack_list(store_t *s, uint64_t **packs, size_t *n, store_err *e);
/* refs[i] = how many index entries point into packs[i] (packs ascending). Reads the whole
 * chunk family: for gc's plan, to find packs nothing or little uses (a killed rewrite
 * leaves both copies of what it moved). */
STORE_MUST_USE int store_pack_refs(store_t *s, const uint64_t *packs, size_t n, uint32_t *refs, store_err *e);
/* Deletes a pack file (after the index stopped naming it) and syncs the folder. */
STORE_MUST_USE int store_pack_delete(store_t *s, uint64_t pack, store_err *e);
/* Index edits for gc, applied as one synced batch: re-point or delete chunk entries. Each
 * edit applies only if the entry still points at `expect` (pack and offset and slot). */
typedef struct { store_id id; store_loc expect; int del; store_loc to; } store_index_edit;
STORE_MUST_USE int store_index_apply(store_t *s, const store_index_edit *ed, size_t n, size_t *applied, store_err *e);

/* ---- gc across the nodes of a bucket (docs/s3.md, "gc across nodes"; store/gcrec.c) -- */

STORE_MUST_USE int store_is_remote(const store_t *s);
uint32_t store_node_tag(const store_t *s);
/* The bounds every node of a bucket must agree on (environment, for tests; defaults in
 * docs/s3.md): the longest a writer may take from its open to its commit point
 * ($CAIRN_S3_COMMIT_BOUND_MS, 20 min), the clock difference tolerated between nodes
 * ($CAIRN_S3_CLOCK_MARGIN_MS, 2 min), and the gc lease's life ($CAIRN_GC_LEASE_MS, 10 min).
 * A lazy reader's lease (store/lease.h) lives $CAIRN_S3_READ_LEASE_MS (5 min) past its last
 * renewal. */
int64_t store_commit_bound_ms(void);
int64_t store_clock_margin_ms(void);
int64_t store_gc_lease_ttl_ms(void);
int64_t store_read_lease_ttl_ms(void);

/* The gc lease (object gc/lease): one node deletes at a time. take: 0 when this node holds
 * it now (the PUT-wait-GET check: RGW 16 has no conditional PUT); -EBUSY when another node
 * holds an unexpired one (*other says which, until when). renew: extends it, or -ESTALE
 * when it is no longer ours (the caller must stop deleting). release: deletes it if ours.
 * Another node's lease is judged on the bucket's clock (its Last-Modified + its life
 * against store_bucket_now), this node's own by its monotonic clock: no wall clock. */
typedef struct {
    uint32_t node;
    int64_t expires_ms;             /* another node's: when it ends, on the bucket's clock */
    uint64_t nonce;
    int64_t put_mono_ms;            /* ours: CLOCK_MONOTONIC when its last PUT began */
} store_gc_lease;
STORE_MUST_USE int store_gc_lease_take(store_t *s, store_gc_lease *mine, store_gc_lease *other, store_err *e);
STORE_MUST_USE int store_gc_lease_renew(store_t *s, store_gc_lease *mine, store_err *e);
STORE_MUST_USE int store_gc_lease_release(store_t *s, const store_gc_lease *mine, store_err *e);

/* Fossil records (epoch 1: packs that may be deleted at a later run) and deletion records
 * (epoch 2: packs deleted, written before they are). moved: packs holding the live chunks
 * of rewritten ones. A local store has none (0, n = 0). */
enum { STORE_GC_FOSSILS = 1, STORE_GC_DELETED };
typedef struct {
    char name[96];                  /* the object's name */
    int64_t at_ms;                  /* wall clock of the writing node (a hint: never judged) */
    int64_t mtime_ms;               /* its Last-Modified: the bucket's clock at its PUT */
    uint64_t *packs, *moved;
    size_t npacks, nmoved;
} store_gc_record;
/* The bucket's clock now (S3: the Last-Modified of a fresh PUT of clock/TAG, listed; a
 * lower bound of the bucket's time at every later step of the caller). A local store: the
 * wall clock. */
STORE_MUST_USE int store_bucket_now(store_t *s, int64_t *now_ms, store_err *e);
/* 1 when record r is at least wait_ms old on the bucket's clock: its Last-Modified (less
 * the listing's rounding) against bucket_now_ms (store_bucket_now, taken after the records
 * were listed). No node's wall clock counts, so no step of one ripens a record early. */
int store_gc_record_ripe(const store_gc_record *r, int64_t bucket_now_ms, int64_t wait_ms);
STORE_MUST_USE int store_gc_records(store_t *s, int kind, store_gc_record **out, size_t *n, store_err *e);
void store_gc_records_free(store_gc_record *v, size_t n);
/* Writes one; *at_ms is the time it counts from. */
STORE_MUST_USE int store_gc_record_put(store_t *s, int kind, const uint64_t *packs, size_t npacks,
                                       const uint64_t *moved, size_t nmoved, int64_t *at_ms, store_err *e);
STORE_MUST_USE int store_gc_record_del(store_t *s, const char *name, store_err *e);

/* Footers of many packs at once (S3: ranged GETs on the store's workers). v[i].pack in;
 * v[i].rc, groups, ids out (free both); sizes may be NULL. */
typedef struct {
    uint64_t pack, size;            /* size UINT64_MAX: unknown */
    int rc;
    store_group *groups;
    uint32_t ngroups, nchunks;
    store_id *ids;
    store_err e;
} store_footer;
void store_pack_footers(store_t *s, store_footer *v, size_t n);
/* The bucket's packs with their sizes (a local store: its folder's). */
STORE_MUST_USE int store_pack_list_sizes(store_t *s, uint64_t **packs, uint64_t **sizes, size_t *n, store_err *e);

#endif
