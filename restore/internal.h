/*
 * restore/ internals shared by the extraction files (not for other modules):
 *   select.c    which entries of a hostile file index may be given out; problem reports
 *   filedata.c  a regular file entry's bytes (checks, reads) and cat
 *   folder.c    extraction to a folder
 *   tar.c       extraction to a tar stream
 * A store_findex passed to these must have passed restore_select's sortedness check (or be
 * known sorted): lookups are binary searches.
 */
#ifndef CAIRN_RESTORE_INTERNAL_H
#define CAIRN_RESTORE_INTERNAL_H

#include <sys/stat.h>

#include "restore/restore.h"

#define COMPONENT_MAX 255
#define IOBUF (1u << 20)
/* Extracted files never get setuid/setgid bits from a tenant's image. */
#define SAFE_MODE(m) ((m) & 07777 & ~(unsigned)(S_ISUID | S_ISGID))

/* Counts nothing: tells the caller's warn function and remembers the first problem. */
void restore_note(restore_extract_stats *st, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The run's result from its counters: rc when set, else the first failure's code (or
 * fail_code) when entries failed, -EPERM when some were refused, 0. */
STORE_MUST_USE int restore_summary(restore_extract_stats *st, int rc, int fail_code, store_err *e);

/* Bytes of extent k inside the file (extents may run past the size: block granularity). */
uint64_t restore_ext_len(const store_fentry *f, uint32_t k);

/* Why the entry's data cannot be read (a static string), or NULL. */
const char *restore_data_problem(const store_snapshot *snap, const store_fentry *f);

/* Receives the file's bytes at off; buf NULL means len zero bytes (a hole). */
typedef int (*restore_feed_fn)(void *arg, uint64_t off, const uint8_t *buf, size_t len);

/* Feeds a checked entry's (restore_data_problem == NULL) bytes in file order, through buf
 * (IOBUF bytes). Holes are fed only when `holes`. *read_err tells a store read failure
 * (message in e) from a failure of put (its code returned, e untouched). */
STORE_MUST_USE int restore_feed(store_t *s, const store_snapshot *snap, const store_fentry *f, uint8_t *buf,
                 int holes, restore_feed_fn put, void *arg, int *read_err, store_err *e);

/* What one extraction (folder or tar) reads from and counts into; the writer's own context
 * embeds it. restore_xrun_init points st at a private counter when the caller gave none and
 * allocates first (per entry: the entry whose output holds its inode) and an IOBUF buffer;
 * restore_xrun_free frees them (safe after a failed init). */
typedef struct {
    store_t *s;
    const store_snapshot *snap;
    const store_findex *fi;
    restore_extract_stats *st;
    store_err *e;
    int64_t *first;
    uint8_t *buf;
    restore_extract_stats own;
} restore_xrun;

STORE_MUST_USE int restore_xrun_init(restore_xrun *r, store_t *s, const store_snapshot *snap,
                                     const store_findex *fi, restore_extract_stats *st,
                                     store_err *e);
void restore_xrun_free(restore_xrun *r);

/* write(2) until done; 0 or -errno. */
STORE_MUST_USE int restore_write_all(int fd, const void *buf, size_t n);

#endif
