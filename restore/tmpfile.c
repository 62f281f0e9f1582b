/* Temp files beside a target: see tmpfile.h for why random names and O_EXCL|O_NOFOLLOW. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "restore/tmpfile.h"

static int create(restore_tmpfile *t, store_err *e);

int restore_tmp_open(restore_tmpfile *t, const char *path, store_err *e)
{
    t->dirfd = t->fd = -1;
    t->tmp[0] = 0;
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    if (dlen >= sizeof t->dir) return store_errf(e, -ENAMETOOLONG, "%s: the path is too long", path);
    if (!slash) snprintf(t->dir, sizeof t->dir, ".");
    else if (!dlen) snprintf(t->dir, sizeof t->dir, "/");
    else snprintf(t->dir, sizeof t->dir, "%.*s", (int)dlen, path);
    int dirfd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return store_errf(e, -errno, "%s: %s", t->dir, strerror(errno));
    int rc = restore_tmp_openat(t, dirfd, t->dir, base, e);
    close(dirfd);
    return rc;
}

int restore_tmp_openat(restore_tmpfile *t, int dirfd, const char *dir, const char *name, store_err *e)
{
    t->dirfd = t->fd = -1;
    t->tmp[0] = 0;
    if (dir != t->dir) snprintf(t->dir, sizeof t->dir, "%s", dir);
    if (!*name || !strcmp(name, ".") || !strcmp(name, "..") || strchr(name, '/'))
        return store_errf(e, -EINVAL, "%s/%s: not a file name", dir, name);
    if (strlen(name) > 200) return store_errf(e, -ENAMETOOLONG, "%s/%s: the file name is too long", dir, name);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (t->dirfd < 0) return store_errf(e, -errno, "%s: %s", t->dir, strerror(errno));
    return create(t, e);
}

static int create(restore_tmpfile *t, store_err *e)
{
    /* A guessed or planted name only costs a retry: O_EXCL never opens what exists. */
    for (int tries = 0; tries < 100; tries++) {
        unsigned char r[8];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
            int err = errno ? errno : EIO;
            restore_tmp_abort(t);
            return store_errf(e, -err, "getrandom: %s", strerror(err));
        }
        snprintf(t->tmp, sizeof t->tmp, ".%s.%02x%02x%02x%02x%02x%02x%02x%02x.cairn-tmp", t->name,
                 r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
        t->fd = openat(t->dirfd, t->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (t->fd >= 0) return 0;
        if (errno != EEXIST) break;
    }
    int err = errno;
    int rc = store_errf(e, -err, "%s/%s: %s", t->dir, t->tmp, strerror(err));
    t->tmp[0] = 0;
    restore_tmp_abort(t);
    return rc;
}

void restore_tmp_abort(restore_tmpfile *t)
{
    if (t->fd >= 0) close(t->fd);
    t->fd = -1;
    if (t->dirfd >= 0 && t->tmp[0]) unlinkat(t->dirfd, t->tmp, 0);
    t->tmp[0] = 0;
    if (t->dirfd >= 0) close(t->dirfd);
    t->dirfd = -1;
}

int restore_tmp_commit(restore_tmpfile *t, store_err *e)
{
    int rc = 0;
    if (fsync(t->fd) < 0) rc = store_errf(e, -errno, "%s/%s: fsync: %s", t->dir, t->tmp, strerror(errno));
    int fd = t->fd;
    t->fd = -1;
    if (close(fd) < 0 && !rc) rc = store_errf(e, -errno, "%s/%s: %s", t->dir, t->tmp, strerror(errno));
    if (!rc && renameat(t->dirfd, t->tmp, t->dirfd, t->name) < 0)
        rc = store_errf(e, -errno, "%s/%s: %s", t->dir, t->name, strerror(errno));
    if (rc) {
        restore_tmp_abort(t);
        return rc;
    }
    t->tmp[0] = 0;     /* renamed: nothing to remove any more */
    if (fsync(t->dirfd) < 0) rc = store_errf(e, -errno, "%s: fsync: %s", t->dir, strerror(errno));
    restore_tmp_abort(t);
    return rc;
}
