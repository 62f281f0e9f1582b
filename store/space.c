/* The free space RocksDB needs. On a full disk RocksDB 7.8 does not fail cleanly: its
 * writers assert (abort, exit 134) on the write after the one that failed with ENOSPC (the
 * info LOG at open, a WAL or table file later), which would kill a snapshot or a gc with
 * no message. So the index is never written when its filesystem is nearly full: the
 * operation fails first, with ENOSPC and a message, before RocksDB is asked to write, and
 * works again once space is freed. The margin is the index's own size (a compaction may
 * rewrite all of it) plus a slack: 8 MiB to open (RocksDB preallocates a 4 MiB WAL, writes
 * its LOG, MANIFEST and OPTIONS), 4 MiB for each write once open (the WAL's preallocation
 * is already taken; a memtable flush, MANIFEST and LOG lines remain). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "store/internal.h"

#define SPACE_SLACK_OPEN (8ull << 20)
#define SPACE_SLACK_WRITE (4ull << 20)

int space_reserve_init(store_t *s, int opened, store_err *e)
{
    char *path = util_path(s->dir, "index");
    uint64_t bytes = 0;
    int rc = path ? util_dir_bytes(path, &bytes) : -ENOMEM;
    free(path);
    if (rc) return store_errf(e, rc, "%s/index: %s", s->dir, strerror(-rc));
    s->space_reserve = (opened ? SPACE_SLACK_WRITE : SPACE_SLACK_OPEN) + bytes;
    return 0;
}

int space_check(store_t *s, store_err *e)
{
    struct statvfs v;
    if (statvfs(s->dir, &v) < 0) return store_errf(e, -errno, "%s: %s", s->dir, strerror(errno));
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
    uint64_t need = s->space_reserve ? s->space_reserve : SPACE_SLACK_OPEN;
    if (avail >= need) return 0;
    return store_errf(e, -ENOSPC, "%s: no space left: %llu KiB free on its filesystem, and its index "
                      "needs %llu KiB free to be written safely (RocksDB cannot survive a full disk); free some "
                      "space on it and retry", s->dir, (unsigned long long)(avail >> 10),
                      (unsigned long long)(need >> 10));
}
