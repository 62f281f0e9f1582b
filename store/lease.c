/* Leases on snapshots (store/lease.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/lease.h"

static int lease_path(const char *dir, const char *id, char *out, size_t cap, store_err *e)
{
    if (store_snapid_valid(id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", id);
    if (snprintf(out, cap, "%s/leases/%s", dir, id) >= (int)cap)
        return store_errf(e, -ENAMETOOLONG, "%s: store path too long", dir);
    return 0;
}

int store_lease_take(const char *dir, const char *id, store_err *e)
{
    char path[4096], ldir[4096];
    int rc = lease_path(dir, id, path, sizeof path, e);
    if (rc) return rc;
    snprintf(ldir, sizeof ldir, "%s/leases", dir);
    if (mkdir(ldir, 0700) < 0 && errno != EEXIST) return store_errf(e, -errno, "%s: %s", ldir, strerror(errno));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    while (flock(fd, LOCK_SH) < 0) {
        if (errno == EINTR) continue;
        rc = -errno;
        close(fd);
        return store_errf(e, rc, "%s: flock: %s", path, strerror(-rc));
    }
    return fd;
}

int store_lease_busy(const char *dir, const char *id, int *fd, store_err *e)
{
    char path[4096];
    *fd = -1;
    int rc = lease_path(dir, id, path, sizeof path, e);
    if (rc) return rc;
    int f = open(path, O_RDWR | O_CLOEXEC);
    if (f < 0) return errno == ENOENT ? 0 : store_errf(e, -errno, "%s: %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? 1 : store_errf(e, -errno, "%s: flock: %s", path, strerror(errno));
        close(f);
        return rc;
    }
    *fd = f;
    return 0;
}

void store_lease_release(const char *dir, const char *id, int fd)
{
    char path[4096];
    if (fd < 0) return;
    /* Unlinked while still locked: a reader that opened the old file before this gets its
     * lock after the drop, finds no manifest and fails; one that opens after makes a new
     * file. Either way no reader serves a dropped snapshot. */
    if (!lease_path(dir, id, path, sizeof path, NULL)) unlink(path);
    close(fd);
}
