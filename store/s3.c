/* The S3 client's common part: keys from the environment, retries with backoff, errors
 * that name endpoint, bucket, operation and key. The transports do one request each. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "store/s3.h"

struct s3_client {
    s3_config cfg;
    const s3_transport_ops *ops;
    void *t;
    int attempts;         /* tries per request ($CAIRN_S3_RETRIES + 1) */
    int base_ms;          /* first backoff ($CAIRN_S3_BACKOFF_MS) */
};

int s3_buf_append(s3_buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        if (b->fixed) return -1;
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n) nc *= 2;
        uint8_t *p = realloc(b->p, nc);
        if (!p) return -1;
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

int s3_sig_parse(const char *s)
{
    if (!strcmp(s, "v4")) return S3_SIG_V4;
    if (!strcmp(s, "v2")) return S3_SIG_V2;
    return -1;
}

static int env_int(const char *name, int dflt, int lo, int hi)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    int x = atoi(v);
    return x < lo ? lo : x > hi ? hi : x;
}

int s3_open(const s3_config *cfg, s3_client **out, store_err *e)
{
    *out = NULL;
    const char *access = getenv("CAIRN_S3_ACCESS_KEY"), *secret = getenv("CAIRN_S3_SECRET_KEY");
    if (!access || !*access || !secret || !*secret)
        return store_errf(e, -EINVAL, "s3://%s at %s: set $CAIRN_S3_ACCESS_KEY and $CAIRN_S3_SECRET_KEY "
                          "(keys are never taken from the command line or a file)", cfg->bucket, cfg->endpoint);
    s3_client *c = calloc(1, sizeof *c);
    if (!c) return store_errf(e, -ENOMEM, "out of memory");
    c->cfg = *cfg;
    c->attempts = env_int("CAIRN_S3_RETRIES", 6, 0, 50) + 1;
    c->base_ms = env_int("CAIRN_S3_BACKOFF_MS", 100, 1, 60000);
    int rc;
    if (cfg->sig == S3_SIG_V2) {
        c->ops = &s3_libs3_ops;
        rc = s3_libs3_new(cfg, access, secret, &c->t, e);
    } else {
        c->ops = &s3_curl_ops;
        rc = s3_curl_new(cfg, access, secret, &c->t, e);
    }
    if (rc) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void s3_close(s3_client *c)
{
    if (!c) return;
    c->ops->free(c->t);
    free(c);
}

const s3_config *s3_cfg(const s3_client *c) { return &c->cfg; }

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* Backoff before attempt k (k >= 1): base * 2^(k-1), capped at 5 s, with +-25% jitter so
 * many nodes retrying after one outage do not come back in step. */
static void backoff(const s3_client *c, int k)
{
    long ms = (long)c->base_ms << (k - 1 < 12 ? k - 1 : 12);
    if (ms > 5000) ms = 5000;
    uint16_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) r = (uint16_t)k * 7919u;
    ms = ms * 3 / 4 + (long)(r % (uint16_t)(ms / 2 + 1));
    sleep_ms(ms);
}

static int fail(const s3_client *c, const char *op, const char *key, const s3_res *r, int tries,
                store_err *e)
{
    const s3_config *g = &c->cfg;
    char http[24] = "";
    if (r->http) snprintf(http, sizeof http, "HTTP %d ", r->http);
    switch (r->kind) {
    case S3R_NOTFOUND:
        return store_errf(e, -ENOENT, "s3://%s/%s at %s: no such object", g->bucket, key, g->endpoint);
    case S3R_NOBUCKET:
        return store_errf(e, -ENXIO, "s3://%s at %s: the bucket does not exist", g->bucket, g->endpoint);
    case S3R_AUTH:
        return store_errf(e, -EACCES, "s3://%s at %s: %s %s refused: %s%s (check $CAIRN_S3_ACCESS_KEY and "
                          "$CAIRN_S3_SECRET_KEY)", g->bucket, g->endpoint, op, key, http, r->msg);
    case S3R_TRANSIENT:
        return store_errf(e, -EIO, "s3://%s at %s: %s %s failed %d times: %s%s", g->bucket, g->endpoint,
                          op, key, tries, http, r->msg);
    default:
        return store_errf(e, -EIO, "s3://%s at %s: %s %s failed: %s%s", g->bucket, g->endpoint, op, key,
                          http, r->msg);
    }
}

/* Runs one request kind with retries. */
enum { OP_PUT, OP_GET, OP_DEL, OP_MKB };
static int run(s3_client *c, int op, const char *key, const void *buf, uint64_t len, uint64_t off,
               s3_buf *out, store_err *e)
{
    static const char *names[] = {"PUT", "GET", "DELETE", "create bucket"};
    s3_res r = {.kind = S3R_FAIL};
    int k;
    for (k = 0; k < c->attempts; k++) {
        if (k) backoff(c, k);
        memset(&r, 0, sizeof r);
        if (out) out->len = 0;
        switch (op) {
        case OP_PUT: c->ops->put(c->t, key, buf, len, &r); break;
        case OP_GET: c->ops->get(c->t, key, off, len, out, &r); break;
        case OP_DEL: c->ops->del(c->t, key, &r); break;
        default: c->ops->mkbucket(c->t, &r); break;
        }
        if (r.kind != S3R_TRANSIENT) break;
    }
    if (r.kind == S3R_OK) return 0;
    if (op == OP_DEL && r.kind == S3R_NOTFOUND) return 0;
    if (op == OP_MKB && r.kind == S3R_FAIL && r.http == 409 && strstr(r.msg, "BucketAlreadyOwnedByYou")) return 0;
    return fail(c, names[op], key, &r, k, e);
}

int s3_put(s3_client *c, const char *key, const void *buf, uint64_t len, store_err *e)
{
    return run(c, OP_PUT, key, buf, len, 0, NULL, e);
}

int s3_get_range(s3_client *c, const char *key, uint64_t off, void *buf, size_t len, store_err *e)
{
    if (!len) return 0;
    s3_buf b = {.p = buf, .cap = len, .fixed = 1};
    int rc = run(c, OP_GET, key, NULL, len, off, &b, e);
    if (!rc && b.len != len)
        rc = store_errf(e, -EIO, "s3://%s/%s at %s: asked for %zu bytes at %llu, got %zu (object too short)",
                        c->cfg.bucket, key, c->cfg.endpoint, len, (unsigned long long)off, b.len);
    return rc;
}

int s3_get_all(s3_client *c, const char *key, uint8_t **out, size_t *len, store_err *e)
{
    s3_buf b = {0};
    int rc = run(c, OP_GET, key, NULL, 0, 0, &b, e);
    if (rc) {
        free(b.p);
        return rc;
    }
    if (!b.p && !(b.p = malloc(1))) return store_errf(e, -ENOMEM, "out of memory");
    *out = b.p;
    *len = b.len;
    return 0;
}

int s3_delete(s3_client *c, const char *key, store_err *e)
{
    return run(c, OP_DEL, key, NULL, 0, 0, NULL, e);
}

int s3_make_bucket(s3_client *c, store_err *e)
{
    return run(c, OP_MKB, "", NULL, 0, 0, NULL, e);
}

typedef struct {
    s3_list_fn fn;
    void *arg;
    int stopped;
    char last[1024];
} list_ctx;

static int list_one(void *arg, const char *key, uint64_t size, int64_t mtime_ms)
{
    list_ctx *l = arg;
    snprintf(l->last, sizeof l->last, "%s", key);
    if (l->fn(l->arg, key, size, mtime_ms)) return l->stopped = 1;
    return 0;
}

int s3_list(s3_client *c, const char *prefix, s3_list_fn fn, void *arg, store_err *e)
{
    return s3_list_after(c, prefix, NULL, fn, arg, e);
}

int s3_list_after(s3_client *c, const char *prefix, const char *start, s3_list_fn fn, void *arg, store_err *e)
{
    char after[1024] = "", next[1024];
    if (start) snprintf(after, sizeof after, "%s", start);
    list_ctx l = {.fn = fn, .arg = arg};
    for (;;) {
        s3_res r = {.kind = S3R_FAIL};
        int k;
        /* A page that failed half-way is asked again from the same point; keys already
         * delivered are not delivered twice (the page restarts after `after`, and fn only
         * saw keys of the failed page if the transport called it, which it does only once
         * the whole page parsed). */
        for (k = 0; k < c->attempts; k++) {
            if (k) backoff(c, k);
            memset(&r, 0, sizeof r);
            next[0] = 0;
            c->ops->list(c->t, prefix, after[0] ? after : NULL, list_one, &l, next, sizeof next, &r);
            if (r.kind != S3R_TRANSIENT) break;
        }
        if (r.kind != S3R_OK) return fail(c, "LIST", prefix, &r, k, e);
        if (l.stopped || !next[0]) return 0;
        snprintf(after, sizeof after, "%s", next);
    }
}
