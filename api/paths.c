/* Request paths are host paths the server will read or write as itself, so each must
 * stay inside a configured root: resolved with realpath (symlinks anywhere on the way
 * followed), then compared with the roots, which were realpath'd at load. A path with a
 * ".." component is refused outright, even when it would land inside. An output path must
 * lie strictly inside a root: the root itself is refused. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/internal.h"

static int has_dotdot(const char *p)
{
    for (const char *c = p; (c = strstr(c, "..")); c += 2)
        if ((c == p || c[-1] == '/') && (c[2] == 0 || c[2] == '/')) return 1;
    return 0;
}

/* strict: the root itself does not count (an output path names something made inside a
 * root; what is written beside it, like a temp file, must be inside too). */
static int below_(char *const *roots, size_t n, const char *real, int strict)
{
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(roots[i]);
        if (l == 1 && roots[i][0] == '/') {
            if (real[0] == '/' && (!strict || real[1])) return 1;
        } else if (!strncmp(real, roots[i], l) && (real[l] == '/' || (!strict && real[l] == 0))) {
            return 1;
        }
    }
    return 0;
}

/* path without its trailing slashes (malloc'd), or NULL (out of memory, e set). */
static char *trimmed(const char *path, store_err *e)
{
    char *dup = strdup(path);
    if (!dup) {
        store_errf(e, -ENOMEM, "out of memory");
        return NULL;
    }
    size_t l = strlen(dup);
    while (l > 1 && dup[l - 1] == '/') dup[--l] = 0;
    return dup;
}

static int below(char *const *roots, size_t n, const char *real)
{
    return below_(roots, n, real, 0);
}

static int basic(const char *path, const char *what, store_err *e)
{
    if (path[0] != '/') return store_errf(e, -EINVAL, "%s must be an absolute path", what);
    if (strlen(path) >= PATH_MAX) return store_errf(e, -EINVAL, "%s is too long", what);
    if (has_dotdot(path)) return store_errf(e, -EACCES, "%s may not contain '..'", what);
    return 0;
}

int api_path_input(char *const *roots, size_t n, const char *path, char **resolved, store_err *e)
{
    int rc = basic(path, "an input path", e);
    if (rc) return rc;
    char *real = realpath(path, NULL);
    if (!real) {
        if (errno == ENOENT || errno == ENOTDIR) {
            /* Say "not allowed" rather than "missing" for places outside the roots. */
            return below(roots, n, path) ? store_errf(e, -ENOENT, "%s does not exist", path)
                                         : store_errf(e, -EACCES, "%s is outside the snapshot_roots", path);
        }
        return store_errf(e, -EACCES, "%s: %s", path, strerror(errno));
    }
    struct stat sb;
    if (!below(roots, n, real)) rc = store_errf(e, -EACCES, "%s is outside the snapshot_roots", path);
    else if (stat(real, &sb) < 0) rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode)) rc = store_errf(e, -EINVAL, "%s is not a regular file", path);
    if (rc) free(real);
    else *resolved = real;
    return rc;
}

int api_path_output(char *const *roots, size_t n, const char *path, char **resolved, store_err *e)
{
    int rc = basic(path, "an output path", e);
    if (rc) return rc;
    char *dup = trimmed(path, e);
    if (!dup) return -ENOMEM;
    char *slash = strrchr(dup, '/'), *base = slash + 1;
    if (!*base) {
        free(dup);
        return store_errf(e, -EACCES, "%s is not a place below the restore_roots", path);
    }
    *slash = 0;
    char *parent = realpath(slash == dup ? "/" : dup, NULL);
    if (!parent) {
        rc = below(roots, n, dup) ? store_errf(e, -ENOENT, "%s: the folder %s does not exist", path, dup)
                                  : store_errf(e, -EACCES, "%s is outside the restore_roots", path);
        free(dup);
        return rc;
    }
    size_t need = strlen(parent) + strlen(base) + 2;
    char *full = malloc(need);
    struct stat sb;
    if (!full) rc = store_errf(e, -ENOMEM, "out of memory");
    else {
        snprintf(full, need, "%s/%s", strcmp(parent, "/") ? parent : "", base);
        if (!below(roots, n, full) || !strcmp(base, "."))
            rc = store_errf(e, -EACCES, "%s is outside the restore_roots", path);
        else if (!below_(roots, n, full, 1))
            rc = store_errf(e, -EACCES, "%s is a restore root itself: name a place inside it", path);
        else if (lstat(full, &sb) == 0 && S_ISLNK(sb.st_mode))
            rc = store_errf(e, -EACCES, "%s is a symlink: not written through", path);
    }
    free(parent);
    free(dup);
    if (rc) free(full);
    else *resolved = full;
    return rc;
}

/* ---- opened once -----------------------------------------------------------------------
 * A path checked by name and opened by name later can be swapped in between (a symlink
 * out of the root planted after the check). So a request's path is opened once, here, by
 * openat2 from a descriptor of its root with RESOLVE_BENEATH: the kernel refuses any step
 * out of the root (by "..", by a symlink, by an absolute link) during that one lookup, and
 * the work is then done on the descriptor (or its /proc/self/fd name, which reopens the
 * same file or folder whatever the name now points to). The path must lie below a root
 * as written: one reaching a root through a symlink outside it is refused. */

/* The root path lies below as written (strictly), and the rest of path after it. */
static const char *root_of(char *const *roots, size_t n, const char *path, const char **rest)
{
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(roots[i]);
        const char *r = NULL;
        if (l == 1 && roots[i][0] == '/') r = path + 1;
        else if (!strncmp(path, roots[i], l) && path[l] == '/') r = path + l + 1;
        if (!r) continue;
        r += strspn(r, "/");
        if (!*r) continue;
        *rest = r;
        return roots[i];
    }
    return NULL;
}

/* openat2(root, rel, flags) beneath root; a descriptor, or a negative code with e set. */
static int beneath(const char *root, const char *rel, int flags, const char *path, const char *roots_name,
                   store_err *e)
{
    int rfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0) return store_errf(e, -errno, "the root %s: %s", root, strerror(errno));
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC | O_NOCTTY),
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, rfd, rel, &how, sizeof how);
    int err = errno;
    close(rfd);
    if (fd >= 0) return fd;
    switch (err) {
    case EXDEV: case ELOOP:
        return store_errf(e, -EACCES, "%s leads out of the %s (a symlink or '..' on the way)", path, roots_name);
    case ENOENT: return store_errf(e, -ENOENT, "%s does not exist", path);
    case ENOTDIR: return store_errf(e, -ENOENT, "%s: a part of it is not a folder", path);
    case ENOSYS: return store_errf(e, -ENOSYS, "%s: openat2 is missing (Linux 5.6 or later is needed)", path);
    default: return store_errf(e, -EACCES, "%s: %s", path, strerror(err));
    }
}

int api_path_open_input(char *const *roots, size_t n, const char *path, int *fd, store_err *e)
{
    int rc = basic(path, "an input path", e);
    if (rc) return rc;
    const char *rest, *root = root_of(roots, n, path, &rest);
    if (!root) return store_errf(e, -EACCES, "%s is outside the snapshot_roots", path);
    int f = beneath(root, rest, O_RDONLY | O_NONBLOCK, path, "snapshot_roots", e);   /* a FIFO must not block */
    if (f < 0) return f;
    struct stat sb;
    if (fstat(f, &sb) < 0) rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode)) rc = store_errf(e, -EINVAL, "%s is not a regular file", path);
    if (rc) close(f);
    else *fd = f;
    return rc;
}

int api_path_open_output(char *const *roots, size_t n, const char *path, int *dirfd, char **name, char **shown,
                         store_err *e)
{
    int rc = basic(path, "an output path", e);
    if (rc) return rc;
    char *dup = trimmed(path, e);
    if (!dup) return -ENOMEM;
    const char *rest, *root = root_of(roots, n, dup, &rest);
    if (!root) {
        int inside = 0;
        for (size_t i = 0; i < n; i++) inside |= !strcmp(roots[i], dup);
        rc = inside ? store_errf(e, -EACCES, "%s is a restore root itself: name a place inside it", path)
                    : store_errf(e, -EACCES, "%s is outside the restore_roots", path);
        free(dup);
        return rc;
    }
    char *base = strrchr(dup, '/') + 1;
    if (!strcmp(base, ".")) {
        free(dup);
        return store_errf(e, -EACCES, "%s is not a place below the restore_roots", path);
    }
    /* The folder: the rest up to its last component ("." when it is right in the root). */
    char *parent = strndup(rest, (size_t)(base - rest));
    if (!parent) {
        free(dup);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    int d = beneath(root, parent[0] ? parent : ".", O_RDONLY | O_DIRECTORY, path, "restore_roots", e);
    free(parent);
    if (d < 0) {
        if (d == -ENOENT) store_errf(e, -ENOENT, "%s: its folder does not exist", path);
        free(dup);
        return d;
    }
    struct stat sb;
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", d);
    ssize_t rl = readlink(link, real, sizeof real - 1);
    if (fstatat(d, base, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
        rc = store_errf(e, -EACCES, "%s is a symlink: not written through", path);
    else if (rl < 0) rc = store_errf(e, -errno, "%s: %s", link, strerror(errno));
    else {
        real[rl] = 0;
        size_t need = (size_t)rl + strlen(base) + 2;
        *shown = malloc(need);
        *name = strdup(base);
        if (!*shown || !*name) {
            free(*shown);
            free(*name);
            rc = store_errf(e, -ENOMEM, "out of memory");
        } else {
            snprintf(*shown, need, "%s/%s", strcmp(real, "/") ? real : "", base);
        }
    }
    free(dup);
    if (rc) close(d);
    else *dirfd = d;
    return rc;
}

void api_path_unproc(char *msg, size_t cap, const char *proc, const char *shown)
{
    size_t pl = strlen(proc), sl = strlen(shown);
    if (!pl) return;
    char *at = msg;
    while ((at = strstr(at, proc))) {
        /* Only a whole name: /proc/self/fd/1 is not the start of /proc/self/fd/12. */
        if (at[pl] >= '0' && at[pl] <= '9') {
            at += pl;
            continue;
        }
        size_t tail = strlen(at + pl);
        if ((size_t)(at - msg) + sl + tail + 1 > cap) return;    /* would not fit: keep it as is */
        memmove(at + sl, at + pl, tail + 1);
        memcpy(at, shown, sl);
        at += sl;
    }
}
