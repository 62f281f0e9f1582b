/*
 * store/upload: a writer's sealed packs go to the bucket in the background, UPLOADS PUTs
 * at once, while the writer goes on filling the next pack. Internal to store/ (commit.c).
 *
 * Invariant kept by the caller (commit.c): a pack's chunks enter the index only once its PUT
 * succeeded (uploader_done counts those, in the order the packs were added), and the
 * manifest PUT (the commit point) comes after uploader_wait returned 0.
 *
 * Threads: one writer thread calls add/done/wait/free; the uploader's own threads run the
 * PUTs (the S3 client may be used by many threads). Lifetime: uploader_new .. uploader_free,
 * which drops what is still queued and waits for the PUTs in flight.
 */
#ifndef CAIRN_STORE_UPLOAD_H
#define CAIRN_STORE_UPLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define UPLOADS 4   /* PUTs at once (RGW and the hashing share the cores: more did not help) */

typedef struct uploader uploader;

STORE_MUST_USE int uploader_new(store_t *s, uploader **out, store_err *e);
/* Queues pack (sealed, renamed, in the local cache); waits while UPLOADS are in flight.
 * Fails with the first failed upload's error, if any. */
STORE_MUST_USE int uploader_add(uploader *u, uint64_t pack, store_err *e);
/* *n: how many of the packs, from the first added, are stored (a prefix). Fails like add. */
STORE_MUST_USE int uploader_done(uploader *u, size_t *n, store_err *e);
/* Waits for every queued pack: 0 when all are stored. */
STORE_MUST_USE int uploader_wait(uploader *u, store_err *e);
void uploader_free(uploader *u);

#endif
