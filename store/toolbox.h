/*
 * store/toolbox.h: small shared utilities of the store that other modules use too: the
 * worker pool (one per open store), the clock, and the ext2 I/O manager. Nothing here
 * knows packs, manifests or the index; it depends on nothing of Cairn but the store
 * handle that owns the pool.
 */
#ifndef CAIRN_STORE_TOOLBOX_H
#define CAIRN_STORE_TOOLBOX_H

#include <stddef.h>
#include <stdint.h>

typedef struct store store_t;

/* Runs fn(arg, i) for i in [0, n) on the store's worker threads and the caller. */
typedef void (*store_task_fn)(void *arg, size_t i);
void store_parallel(store_t *s, size_t n, store_task_fn fn, void *arg);
unsigned store_threads(const store_t *s);

int64_t store_now_ms(void);
/* CLOCK_MONOTONIC in ms: durations no clock step moves. */
int64_t store_mono_ms(void);
/* Unix ms as RFC 3339 UTC to the second ("2026-11-21T10:00:00Z"), for JSON and humans. */
void store_rfc3339(int64_t ms, char out[32]);
/* The one parser of RFC 3339 times ("2026-11-21T10:00:00Z", "…T10:00:00.123+02:00": a
 * fraction to the ms, Z or an offset), strict: a date that does not exist (2030-02-30), a
 * field out of range or a time outside 1970..9999 is refused (-1), never normalised. The
 * CLI's --now and the S3 listings' LastModified use it. */
int store_rfc3339_parse(const char *s, int64_t *ms);
#define STORE_TIME_MAX_S 253402300799LL      /* 9999-12-31T23:59:59Z */

/* libext2fs's io_manager (returned as void * to keep ext2fs out of this header): plain
 * pread/pwrite, never fsyncs (store/ext2io.c says why). */
void *store_ext2_io_manager(void);

#endif
