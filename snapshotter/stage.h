/* snapshotter-internal: an ingest's compression pipeline. New pages are staged in groups of
 * STORE_GROUP_PAGES; a full group is compressed by worker threads while the ingest goes on
 * hashing and classifying, and compressed groups are appended to the writer's packs
 * strictly in staging order, by the thread that stages (the writer is not thread-safe).
 *
 * Ownership: the stage belongs to one ingest thread; every function is called from it. It
 * borrows the writer, which must outlive it. Memory is bounded: a fixed ring of groups
 * (pages and their compressed frames); staging into a full ring first appends what is
 * done, else compresses a waiting group itself, else waits for a worker.
 *
 * A staged page is in the index only once its group is appended and its pack indexed
 * (store_writer_generation changes). Right after an append that changed the generation,
 * before any later group goes into the next pack, the stage calls the caller's indexed
 * callback: snap_stage_pending then lists the staged pages not appended yet (the page
 * being staged by the call that appends is not among them yet). On a local store those
 * are exactly the pages not in the index; on S3 the packs still uploading are not indexed
 * either (store_writer_add_group), and forgetting their pages costs only missed dedups. */
#ifndef CAIRN_SNAPSHOTTER_STAGE_H
#define CAIRN_SNAPSHOTTER_STAGE_H

#include "store/store.h"

typedef struct snap_stage snap_stage;

/* indexed(arg): see above; its non-zero return (a negative errno, with e set by it) fails
 * the staging call that appended. Workers start at the first full group (an ingest with
 * nothing new starts none). */
typedef int (*snap_stage_indexed_fn)(void *arg, store_err *e);
STORE_MUST_USE int snap_stage_new(store_t *s, store_writer *w, snap_stage_indexed_fn indexed, void *arg,
                                  snap_stage **out, store_err *e);

/* Copies one page (STORE_PAGE bytes) into the stage; may append finished groups. An error
 * (a compression or a pack write that failed) leaves the stage usable only for free. */
STORE_MUST_USE int snap_stage_page(snap_stage *st, const store_id *id, const void *page, store_err *e);

/* Every staged page compressed and appended, in order; the writer may then commit. */
STORE_MUST_USE int snap_stage_finish(snap_stage *st, store_err *e);

/* Calls fn for every page staged and not appended yet, in staging order; stops at and
 * returns fn's first non-zero return. */
typedef int (*snap_stage_fn)(void *arg, const store_id *id, const uint8_t *page);
STORE_MUST_USE int snap_stage_pending(snap_stage *st, snap_stage_fn fn, void *arg);

/* Stops the workers; groups not appended are dropped (the writer is aborted or committed
 * by the caller). NULL is fine. */
void snap_stage_free(snap_stage *st);

#endif
