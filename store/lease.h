/*
 * Leases: a reader that keeps a snapshot open for a long time (a lazy wake: the FUSE view,
 * the page server) tells gc not to drop it.
 *
 * A lease is a shared flock(2) on DIR/leases/ID, held for as long as the reader uses the
 * snapshot; the kernel drops it when the reader dies, so a crashed reader never pins a
 * snapshot forever. gc takes the same file's lock exclusively and without waiting, inside
 * its exclusive section, just before it drops the snapshot: if a reader holds a lease the
 * drop is skipped (the next gc retries). A reader takes the lease first and loads the
 * manifest second, so either gc saw the lease, or the manifest was already gone and the
 * reader fails cleanly (-ENOENT): never a reader of a snapshot whose chunks are swept.
 */
#ifndef CAIRN_STORE_LEASE_H
#define CAIRN_STORE_LEASE_H

#include "store/store.h"

/* Takes a lease on snapshot id: returns an fd (>= 0) that holds it until closed, or a
 * negative code. Does not check that the snapshot exists: load it after. */
STORE_MUST_USE int store_lease_take(const char *dir, const char *id, store_err *e);

/* For gc: 1 if a reader holds a lease on id (do not drop it); 0 if none does, with *fd
 * set to a descriptor holding the lease file exclusively (or -1 if there is no such file)
 * until store_lease_release, which also removes the file. Negative on error. */
STORE_MUST_USE int store_lease_busy(const char *dir, const char *id, int *fd, store_err *e);
void store_lease_release(const char *dir, const char *id, int fd);

#endif
