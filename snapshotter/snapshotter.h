/*
 * snapshotter: ingest of VM files (memory, vmstate, disk) into the store.
 *
 * Cost grows with changed pages, not VM size: holes are skipped without reading
 * (SEEK_DATA/SEEK_HOLE), zero pages are recognised by a fast test, each page's id is
 * compared with the parent snapshot's id at the same offset before any index lookup,
 * the rest are looked up in batches, and only new pages are compressed (on all cores).
 *
 * Memory: the recipes (16 bytes per page) plus fixed buffers (~16 MiB) plus 32 bytes per
 * new page (the set that dedups new pages within this ingest).
 *
 * The store must be open for writing. Inputs must be regular files; anything else is
 * refused before a byte is stored.
 */
#ifndef CAIRN_SNAPSHOTTER_H
#define CAIRN_SNAPSHOTTER_H

#include "store/store.h"

typedef void (*snap_progress_fn)(void *arg, uint64_t done, uint64_t total);

typedef struct {
    const char *tenant;
    const char *sandbox;
    const char *tier;                 /* "free" or "pro" */
    const char *blob_name[STORE_MAX_BLOBS];
    const char *blob_path[STORE_MAX_BLOBS];
    int nblobs;
    snap_progress_fn progress;        /* may be NULL */
    void *progress_arg;
} snap_request;

/* Ingests the request's files and commits one snapshot. On success *out is the committed
 * snapshot (free with store_snapshot_free); on failure nothing is acknowledged and only
 * garbage that fsck reports may remain (after a crash), never a half snapshot. */
int snap_ingest(store_t *s, const snap_request *req, store_snapshot **out, store_err *e);

#endif
