/*
 * restore: gives a snapshot's files back, byte-exact (the "wake" path).
 *
 * Each file is written to DIR/.NAME.cairn-tmp and renamed to DIR/NAME only when every
 * page was read, decompressed and matched its id: a restore that meets a damaged or
 * missing chunk fails with the snapshot, file and offset in the message and leaves no
 * file with wrong bytes behind. Output is sparse: the file is sized with ftruncate and
 * zero pages stay holes. Groups are decompressed in parallel and runs of pages written
 * with one pwrite each.
 *
 * Store: open for reading (or writing). Outputs are not fsynced: a wake hands them to a
 * VM at once; a caller that needs durability syncs them itself.
 */
#ifndef CAIRN_RESTORE_H
#define CAIRN_RESTORE_H

#include "store/store.h"

typedef void (*restore_progress_fn)(void *arg, uint64_t done, uint64_t total);

/* Restores every blob of snapshot `id` into outdir (created if missing) as outdir/NAME. */
int restore_snapshot(store_t *s, const char *id, const char *outdir,
                     restore_progress_fn progress, void *arg, store_err *e);

/* Restores one blob of a loaded snapshot to path (via a temp file beside it). */
int restore_blob(store_t *s, const store_snapshot *snap, const store_blob *b, const char *path,
                 store_err *e);

#endif
