/* Request paths are host paths the server will read or write as itself, so each must
 * stay inside a configured root: resolved with realpath (symlinks anywhere on the way
 * followed), then compared with the roots, which were realpath'd at load. A path with a
 * ".." component is refused outright, even when it would land inside. An output path must
 * lie strictly inside a root: the root itself is refused. */
#include <errno.h>
#include <limits.h>
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
    char *dup = strdup(path);
    if (!dup) return store_errf(e, -ENOMEM, "out of memory");
    size_t l = strlen(dup);
    while (l > 1 && dup[l - 1] == '/') dup[--l] = 0;
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
