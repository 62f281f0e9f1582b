/*
 * Leases: a reader that keeps a snapshot open for a long time (a lazy wake: the FUSE view,
 * the page server) tells gc, on every node, not to drop it (docs/lazy-wake.md, "Keeping a
 * snapshot while it is read"; docs/s3.md, "Leases of lazy readers").
 *
 * On this node a lease is a shared flock(2) on DIR/leases/ID, held while the reader uses
 * the snapshot; the kernel drops it when the reader dies. gc takes the same file's lock
 * exclusively and without waiting, inside its exclusive section, just before it drops the
 * snapshot: if a reader holds it the drop is skipped (the next gc retries).
 *
 * On S3 the lease is also an object leases/ID/NODE-NONCE in the bucket ("node=…
 * ttl_ms=…": valid for ttl_ms after its Last-Modified), renewed by a thread of the lease
 * every third of its life ($CAIRN_S3_READ_LEASE_MS, 5 min) and deleted at release; a dead
 * holder's expires. gc on any node, before it drops a snapshot, PUTs leases/ID/drop (the
 * drop intent), then lists leases/ID/: an unexpired lease (by more than the clock margin,
 * on the bucket's clock: the intent's Last-Modified is "now") keeps the snapshot. A
 * reader PUTs its lease, then lists leases/ID/ (a fresh intent: it gives up) and asks the
 * bucket for the manifest (gone: it gives up): so either gc's listing saw the lease or the
 * reader saw the intent or the missing manifest; never a reader of a dropped snapshot.
 * A holder that cannot renew keeps serving (every page is verified, a deleted pack reads
 * as EIO, never as wrong bytes) and says so on stderr at every failed renewal.
 *
 * Either way a reader takes the lease first and loads the manifest second.
 */
#ifndef CAIRN_STORE_LEASE_H
#define CAIRN_STORE_LEASE_H

#include "store/store.h"

typedef struct store_lease store_lease;

/* Takes a lease on snapshot id for a reader of store s (any mode; s must outlive the
 * lease, and is used by the lease's renewal thread: store handles are thread-safe).
 * -ENOENT when the snapshot is gone or being dropped (S3). Load the manifest after. */
STORE_MUST_USE int store_lease_take(store_t *s, const char *id, store_lease **out, store_err *e);
/* Releases it (stops the renewal, deletes the object, drops the lock); NULL is a no-op. */
void store_lease_free(store_lease *l);

/* For gc, around the drop of one snapshot. */
typedef struct {
    int fd;                 /* the lease file locked exclusively, or -1 */
    int intent;             /* S3: leases/ID/drop was PUT */
    int64_t t0_mono_ms;     /* when the intent was PUT (its age bounds the drop) */
    char id[STORE_SNAPID_LEN];
} store_lease_guard;

/* 1 if a reader holds a lease on id (do not drop it; e says whose and until when); 0 if
 * none does, with *g keeping new readers out until store_lease_release. Negative on error
 * (nothing held). s: the store gc drops from. */
STORE_MUST_USE int store_lease_busy(store_t *s, const char *id, store_lease_guard *g, store_err *e);
/* Call just before deleting the manifest: -ETIMEDOUT when the intent is more than a
 * minute old (readers ignore one older than 10 min + the clock margin: it was left by a
 * gc that died; the gap covers the DELETE's retries). */
STORE_MUST_USE int store_lease_guard_fresh(const store_lease_guard *g, store_err *e);
/* Ends the guard: dropped = the manifest is gone (then every lease object of the snapshot
 * goes too). Returns the first error of the deletes (the guard is released anyway). */
STORE_MUST_USE int store_lease_release(store_t *s, store_lease_guard *g, int dropped, store_err *e);

#endif
