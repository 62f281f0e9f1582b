/* The local backend: a store's objects are the files of its folder. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/backend.h"
#include "store/internal.h"

typedef struct {
    store_backend b;
    char *dir;
} local_be;

static int lb_put(store_backend *b, const char *name, const void *buf, size_t len, store_err *e)
{
    local_be *l = (local_be *)b;
    char *path = util_path(l->dir, name);
    if (!path) return store_errf(e, -ENOMEM, "out of memory");
    char *slash = strrchr(path, '/');
    *slash = 0;
    int rc = util_write_file_durable(path, slash + 1, buf, len);
    *slash = '/';
    if (rc) store_errf(e, rc, "%s: %s", path, strerror(-rc));
    free(path);
    return rc;
}

static int lb_get(store_backend *b, const char *name, uint64_t off, void *buf, size_t len, store_err *e)
{
    local_be *l = (local_be *)b;
    char *path = util_path(l->dir, name);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    int rc = fd < 0 ? -errno : util_pread_all(fd, buf, len, (off_t)off);
    if (fd >= 0) close(fd);
    if (rc) store_errf(e, rc, "%s: %s", path ? path : name, rc == -EIO ? "too short" : strerror(-rc));
    free(path);
    return rc;
}

static int lb_get_all(store_backend *b, const char *name, uint8_t **out, size_t *len, store_err *e)
{
    local_be *l = (local_be *)b;
    char *path = util_path(l->dir, name);
    int rc = path ? util_read_file(path, out, len) : -ENOMEM;
    if (rc) store_errf(e, rc, "%s: %s", path ? path : name, strerror(-rc));
    free(path);
    return rc;
}

typedef struct {
    char *name;
    uint64_t size;
    int64_t mtime_ms;
} entry;

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* Files of the prefix's folder whose names start with the rest of the prefix; .tmp files
 * (unfinished writes) are not objects. */
static int lb_list(store_backend *b, const char *prefix, backend_list_fn fn, void *arg, store_err *e)
{
    local_be *l = (local_be *)b;
    const char *slash = strrchr(prefix, '/');
    char sub[256];
    snprintf(sub, sizeof sub, "%.*s", slash ? (int)(slash - prefix) : 0, prefix);
    const char *base = slash ? slash + 1 : prefix;
    char *dir = sub[0] ? util_path(l->dir, sub) : strdup(l->dir);
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        int rc = dir ? -errno : -ENOMEM;
        free(dir);
        return rc == -ENOENT ? 0 : store_errf(e, rc, "%s/%s: %s", l->dir, sub, strerror(-rc));
    }
    entry *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    for (errno = 0; (de = readdir(d)); errno = 0) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || strncmp(de->d_name, base, strlen(base))) continue;
        if (len > 4 && !strcmp(de->d_name + len - 4, ".tmp")) continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
            if (errno == ENOENT) continue;   /* removed meanwhile */
            rc = -errno;
            break;
        }
        if (!S_ISREG(st.st_mode)) continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            entry *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        char full[512];
        snprintf(full, sizeof full, "%s%s%s", sub, sub[0] ? "/" : "", de->d_name);
        if (!(v[n].name = strdup(full))) {
            rc = -ENOMEM;
            break;
        }
        v[n].mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        v[n++].size = (uint64_t)st.st_size;
    }
    if (!rc && errno) rc = -errno;
    closedir(d);
    if (rc) store_errf(e, rc, "%s: listing: %s", dir, strerror(-rc));
    free(dir);
    if (!rc) qsort(v, n, sizeof *v, cmp_entry);
    for (size_t i = 0; i < n; i++) {
        if (!rc && fn(arg, v[i].name, v[i].size, v[i].mtime_ms)) rc = 1;
        free(v[i].name);
    }
    free(v);
    return rc > 0 ? 0 : rc;
}

typedef struct {
    const char *after;
    backend_list_fn fn;
    void *arg;
} after_ctx;

static int after_one(void *arg, const char *name, uint64_t size, int64_t mtime_ms)
{
    after_ctx *a = arg;
    return strcmp(name, a->after) > 0 ? a->fn(a->arg, name, size, mtime_ms) : 0;
}

/* A folder lists whole anyway: the names up to `after` are only skipped. */
static int lb_list_after(store_backend *b, const char *prefix, const char *after, backend_list_fn fn, void *arg,
                         store_err *e)
{
    after_ctx a = {after ? after : "", fn, arg};
    return lb_list(b, prefix, after_one, &a, e);
}

static int lb_del(store_backend *b, const char *name, store_err *e)
{
    local_be *l = (local_be *)b;
    char *path = util_path(l->dir, name);
    if (!path) return store_errf(e, -ENOMEM, "out of memory");
    int rc = unlink(path) < 0 && errno != ENOENT ? -errno : 0;
    char *slash = strrchr(path, '/');
    *slash = 0;
    if (!rc) rc = util_fsync_dir(path);
    *slash = '/';
    if (rc) store_errf(e, rc, "%s: cannot delete: %s", path, strerror(-rc));
    free(path);
    return rc;
}

/* A line that did not make it whole (a failed write, a process killed mid-write) is cut
 * off before the next append, so it never glues onto the next line: the reader tolerates
 * a torn last line, not a damaged one in the middle. The cut needs the file's own flock,
 * held for the append, so no other appender's line is cut. */
static int cut_torn_tail(int fd, off_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    off_t end = st.st_size;
    char tail[512];
    while (end > 0) {
        size_t want = end < (off_t)sizeof tail ? (size_t)end : sizeof tail;
        int rc = util_pread_all(fd, tail, want, end - (off_t)want);
        if (rc) return rc;
        size_t i = want;
        while (i > 0 && tail[i - 1] != '\n') i--;
        if (i > 0) {
            end = end - (off_t)want + (off_t)i;
            break;
        }
        end -= (off_t)want;
    }
    if (end != st.st_size && ftruncate(fd, end) < 0) return -errno;
    *size = end;
    return 0;
}

/* A line is appended with O_APPEND under the file's flock and fdatasynced before the caller
 * goes on. Any process may append, with or without the store's lock. A short write goes on
 * with the rest; a line that fails is cut off again (the next append cuts it otherwise). */
static int lb_log_append(store_backend *b, const char *log, const char *line, store_err *e)
{
    local_be *l = (local_be *)b;
    char name[64];
    snprintf(name, sizeof name, "%s.log", log);
    char *path = util_path(l->dir, name);
    if (!path) return store_errf(e, -ENOMEM, "out of memory");
    size_t n = strlen(line);
    char *buf = malloc(n + 1);
    int rc = 0;
    int fd = buf ? open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    if (!buf) rc = -ENOMEM;
    else if (fd < 0) rc = -errno;
    off_t start = 0;
    if (!rc && flock(fd, LOCK_EX) < 0) rc = -errno;
    if (!rc) rc = cut_torn_tail(fd, &start);
    if (!rc) {
        memcpy(buf, line, n);
        buf[n] = '\n';
        rc = util_write_all(fd, buf, n + 1);
        if (!rc && fdatasync(fd) < 0) rc = -errno;
        if (rc && ftruncate(fd, start) == 0) (void)fdatasync(fd);
    }
    if (fd >= 0) close(fd);                       /* releases the flock */
    free(buf);
    if (rc) store_errf(e, rc, "%s: cannot append (%s)", path, strerror(-rc));
    free(path);
    return rc;
}

static int lb_log_read(store_backend *b, const char *log, int (*fn)(void *arg, const char *line),
                       void *arg, store_err *e)
{
    local_be *l = (local_be *)b;
    char name[64];
    snprintf(name, sizeof name, "%s.log", log);
    char *path = util_path(l->dir, name);
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) {
        int rc = !path ? -ENOMEM : errno == ENOENT ? 0 : -errno;
        if (rc) store_errf(e, rc, "%s: %s", path ? path : name, strerror(-rc));
        free(path);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    errno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') line[n - 1] = 0;
        if (line[0] && fn(arg, line)) break;
        errno = 0;
    }
    int rc = n < 0 && ferror(f) ? -(errno ? errno : EIO) : 0;
    free(line);
    fclose(f);
    if (rc) store_errf(e, rc, "%s: reading: %s", path, strerror(-rc));
    free(path);
    return rc;
}

static void lb_close(store_backend *b)
{
    local_be *l = (local_be *)b;
    free(l->dir);
    free(l);
}

static const backend_ops local_ops = {lb_put, lb_get, lb_get_all, lb_list, lb_del,
                                      lb_log_append, lb_log_read, lb_close, lb_list_after};

int backend_local_open(const char *dir, store_backend **out, store_err *e)
{
    local_be *l = calloc(1, sizeof *l);
    if (!l || !(l->dir = strdup(dir))) {
        free(l);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    l->b.ops = &local_ops;
    l->b.remote = 0;
    snprintf(l->b.where, sizeof l->b.where, "%s", dir);
    *out = &l->b;
    return 0;
}
