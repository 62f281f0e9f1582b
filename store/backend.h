/*
 * store/backend: where a store's truth lives. Internal to store/ (nothing above store/ knows
 * which backend runs; the CLI only passes `store_init_s3` its options).
 *
 * Like Redis's rio, a handful of operations on named, immutable objects:
 *   put        store an object (whole); durable when it returns 0
 *   get        exact byte range of an object (-ENOENT if it does not exist)
 *   get_all    a whole object (malloc'd)
 *   list       names under a prefix, with sizes and times written, in name order
 *   list_after the same, only names after a given one (S3: start-after, so it costs per new name)
 *   del        remove an object (a missing one is not an error)
 * plus what lifecycle events and the audit trail need:
 *   log_append one line appended to a named log, durable when it returns 0
 *   log_read   every line of a log, oldest first
 *
 * Names: "cairn.conf", "packs/%016x.pack", "manifests/ID.cmf", "manifests/ID.files";
 * logs "events", "audit".
 *
 * Implementations
 *   be_local.c  the store folder itself (objects are its files; logs are events.log and
 *               audit.log, appended with O_APPEND + fdatasync)
 *   be_s3.c     one S3 bucket (store/s3.h: libs3 V2 or libcurl V4). Log lines are objects
 *               LOG/<13-digit ms>-<node>-<random>.json, so appends from many nodes never
 *               contend and never overwrite; read lists them and reads them in the order
 *               the bucket stored them (Last-Modified, then name), not by the writers'
 *               clocks in their names.
 *
 * Thread-safety: every operation may be called from many threads at once.
 * Lifetime: backend_close frees it; nothing returned borrows from it.
 */
#ifndef CAIRN_STORE_BACKEND_H
#define CAIRN_STORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct store_backend store_backend;
/* mtime_ms: when the object was last written, on the clock of whoever keeps the truth (the
 * bucket's Last-Modified; a folder's mtime): ages of other nodes' records are judged on it,
 * never on this node's clock (docs/s3.md, "Whose clock"). */
typedef int (*backend_list_fn)(void *arg, const char *name, uint64_t size, int64_t mtime_ms);
/* How far a listed time may be below the true one: libs3 truncates to whole seconds. */
#define BACKEND_MTIME_SLACK_MS 1000

typedef struct {
    int (*put)(store_backend *b, const char *name, const void *buf, size_t len, store_err *e);
    int (*get)(store_backend *b, const char *name, uint64_t off, void *buf, size_t len, store_err *e);
    int (*get_all)(store_backend *b, const char *name, uint8_t **out, size_t *len, store_err *e);
    int (*list)(store_backend *b, const char *prefix, backend_list_fn fn, void *arg, store_err *e);
    int (*del)(store_backend *b, const char *name, store_err *e);
    int (*log_append)(store_backend *b, const char *log, const char *line, store_err *e);
    int (*log_read)(store_backend *b, const char *log, int (*fn)(void *arg, const char *line),
                    void *arg, store_err *e);
    void (*close)(store_backend *b);
    /* list, only the names that sort after `after` (a refresh resumes where it stopped) */
    int (*list_after)(store_backend *b, const char *prefix, const char *after, backend_list_fn fn, void *arg,
                      store_err *e);
} backend_ops;

struct store_backend {
    const backend_ops *ops;
    int remote;             /* 1: the truth is elsewhere; the store folder is only a cache */
    char where[400];        /* for messages: the folder, or "s3://BUCKET at ENDPOINT" */
};

STORE_MUST_USE int backend_local_open(const char *dir, store_backend **out, store_err *e);

struct s3_client;
/* Takes ownership of the client (closed on failure too). node: this node's tag (names its
 * log objects); cache: a folder for copies of log objects, or NULL. */
STORE_MUST_USE int backend_s3_open(struct s3_client *c, uint32_t node, const char *cache, store_backend **out,
                    store_err *e);

static inline void backend_close(store_backend *b)
{
    if (b) b->ops->close(b);
}

#endif
