/* The S3 backend: a store's objects in one bucket (store/s3.h does the requests). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "store/backend.h"
#include "store/internal.h"
#include "store/s3.h"

typedef struct {
    store_backend b;
    s3_client *c;
    uint32_t node;
    char *cache;          /* folder for copies of log objects (immutable), or NULL */
} s3_be;

static int sb_put(store_backend *b, const char *name, const void *buf, size_t len, store_err *e)
{
    return s3_put(((s3_be *)b)->c, name, buf, len, e);
}

static int sb_get(store_backend *b, const char *name, uint64_t off, void *buf, size_t len, store_err *e)
{
    return s3_get_range(((s3_be *)b)->c, name, off, buf, len, e);
}

static int sb_get_all(store_backend *b, const char *name, uint8_t **out, size_t *len, store_err *e)
{
    return s3_get_all(((s3_be *)b)->c, name, out, len, e);
}

static int sb_list(store_backend *b, const char *prefix, backend_list_fn fn, void *arg, store_err *e)
{
    return s3_list(((s3_be *)b)->c, prefix, fn, arg, e);
}

static int sb_list_after(store_backend *b, const char *prefix, const char *after, backend_list_fn fn, void *arg,
                         store_err *e)
{
    return s3_list_after(((s3_be *)b)->c, prefix, after, fn, arg, e);
}

static int sb_del(store_backend *b, const char *name, store_err *e)
{
    return s3_delete(((s3_be *)b)->c, name, e);
}

static int sb_log_append(store_backend *b, const char *log, const char *line, store_err *e)
{
    s3_be *s = (s3_be *)b;
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) return store_errf(e, -EIO, "getrandom failed");
    char name[128];
    snprintf(name, sizeof name, "%s/%013lld-%06x-%08x.json", log, (long long)store_now_ms(), s->node, r);
    return s3_put(s->c, name, line, strlen(line), e);
}

/* Log order is the order the bucket stored the lines in (Last-Modified), not the order of
 * their names, which carry each writer's wall clock: a node hours behind would otherwise
 * put its "unpin" before a "pin" another node logged before it. Names break ties (the
 * listing's times may be whole seconds). */
static int cmp_log(const void *a, const void *b)
{
    const remote_obj *x = a, *y = b;
    if (x->mtime_ms != y->mtime_ms) return x->mtime_ms < y->mtime_ms ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* A log object's text: the local copy when there is one (objects never change), else the
 * bucket's, then kept. A copy that cannot be written costs only a later GET. */
static int log_object(s3_be *s, const char *name, uint8_t **buf, size_t *len, store_err *e)
{
    char *path = s->cache ? util_path(s->cache, name) : NULL;
    if (path && util_read_file(path, buf, len) == 0) {
        free(path);
        return 0;
    }
    int rc = s3_get_all(s->c, name, buf, len, e);
    if (!rc && path) {
        char *slash = strrchr(path, '/');
        *slash = 0;
        int wr = mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -errno;
        if (!wr) wr = util_write_file_durable(path, slash + 1, *buf, *len);
        /* Only a cache: the read goes on, but nobody is left unaware. */
        if (wr) fprintf(stderr, "cairn: warning: cannot keep a copy of %s in %s: %s\n", name, path, strerror(-wr));
    }
    free(path);
    return rc;
}

static int sb_log_read(store_backend *b, const char *log, int (*fn)(void *arg, const char *line),
                       void *arg, store_err *e)
{
    s3_be *s = (s3_be *)b;
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s/", log);
    remote_objs l = {0};
    int rc = s3_list(s->c, prefix, remote_objs_note, &l, e);
    if (!rc && l.nomem) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc && l.n) qsort(l.v, l.n, sizeof *l.v, cmp_log);
    int stop = 0;
    for (size_t i = 0; i < l.n; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (!rc && !stop && !(rc = log_object(s, l.v[i].name, &buf, &len, e))) {
            char *line = malloc(len + 1);
            if (!line) rc = store_errf(e, -ENOMEM, "out of memory");
            else {
                memcpy(line, buf, len);
                line[len] = 0;
                line[strcspn(line, "\n")] = 0;
                if (line[0] && fn(arg, line)) stop = 1;
                free(line);
            }
        }
        free(buf);
    }
    remote_objs_free(&l);
    return rc;
}

static void sb_close(store_backend *b)
{
    s3_be *s = (s3_be *)b;
    s3_close(s->c);
    free(s->cache);
    free(s);
}

static const backend_ops s3_ops = {sb_put, sb_get, sb_get_all, sb_list, sb_del,
                                   sb_log_append, sb_log_read, sb_close, sb_list_after};

int backend_s3_open(s3_client *c, uint32_t node, const char *cache, store_backend **out, store_err *e)
{
    s3_be *s = calloc(1, sizeof *s);
    if (!s || (cache && !(s->cache = strdup(cache)))) {
        free(s);
        s3_close(c);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    s->b.ops = &s3_ops;
    s->b.remote = 1;
    s->c = c;
    s->node = node;
    const s3_config *g = s3_cfg(c);
    snprintf(s->b.where, sizeof s->b.where, "s3://%s at %s", g->bucket, g->endpoint);
    *out = &s->b;
    return 0;
}
