/* S3 transport on libs3 (AWS Signature V2), path-style URLs, synchronous requests (libs3
 * is thread-safe for requests made without a request context). */
#include <errno.h>
#include <libs3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3.h"

typedef struct {
    s3_config cfg;
    char access[256], secret[256];
    S3BucketContext ctx;
} lt;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static S3Status init_st;
/* The default host is never used: every request names its endpoint. */
static void global_init(void) { init_st = S3_initialize("cairn", S3_INIT_ALL, NULL); }

int s3_libs3_new(const s3_config *c, const char *access, const char *secret, void **out, store_err *e)
{
    pthread_once(&once, global_init);
    if (init_st != S3StatusOK) return store_errf(e, -EIO, "libs3: %s", S3_get_status_name(init_st));
    if (strlen(access) >= 256 || strlen(secret) >= 256)
        return store_errf(e, -EINVAL, "$CAIRN_S3_ACCESS_KEY / $CAIRN_S3_SECRET_KEY are too long");
    lt *t = calloc(1, sizeof *t);
    if (!t) return store_errf(e, -ENOMEM, "out of memory");
    t->cfg = *c;
    snprintf(t->access, sizeof t->access, "%s", access);
    snprintf(t->secret, sizeof t->secret, "%s", secret);
    t->ctx = (S3BucketContext){.hostName = t->cfg.endpoint, .bucketName = t->cfg.bucket,
                               .protocol = c->http ? S3ProtocolHTTP : S3ProtocolHTTPS,
                               .uriStyle = S3UriStylePath, .accessKeyId = t->access,
                               .secretAccessKey = t->secret};
    *out = t;
    return 0;
}

static void lt_free(void *p)
{
    lt *t = p;
    if (!t) return;
    memset(t->secret, 0, sizeof t->secret);
    free(t);
}

typedef struct {
    S3Status st;
    char msg[160];
    const uint8_t *src;        /* put */
    uint64_t slen, spos;
    s3_buf *out;               /* get */
    int overflow;
    /* list: one page is collected, then delivered (a failed page delivers nothing) */
    char **keys;
    uint64_t *sizes;
    int64_t *mtimes;
    size_t nkeys, kcap;
    int truncated, nomem;
    char marker[1024];
} cb;

static S3Status on_props(const S3ResponseProperties *p, void *arg)
{
    (void)p;
    (void)arg;
    return S3StatusOK;
}

static void on_done(S3Status st, const S3ErrorDetails *d, void *arg)
{
    cb *c = arg;
    c->st = st;
    snprintf(c->msg, sizeof c->msg, "%s%s%s", S3_get_status_name(st), d && d->message ? ": " : "",
             d && d->message ? d->message : "");
}

static int on_put(int n, char *buf, void *arg)
{
    cb *c = arg;
    uint64_t k = (uint64_t)n;
    if (k > c->slen - c->spos) k = c->slen - c->spos;
    memcpy(buf, c->src + c->spos, (size_t)k);
    c->spos += k;
    return (int)k;
}

static S3Status on_get(int n, const char *buf, void *arg)
{
    cb *c = arg;
    if (s3_buf_append(c->out, buf, (size_t)n)) {
        c->overflow = 1;
        return S3StatusAbortedByCallback;
    }
    return S3StatusOK;
}

static void classify(cb *c, s3_res *r)
{
    snprintf(r->msg, sizeof r->msg, "%s", c->msg);
    switch (c->st) {
    case S3StatusOK: r->kind = S3R_OK; return;
    case S3StatusErrorNoSuchBucket: r->kind = S3R_NOBUCKET; r->http = 404; return;
    case S3StatusErrorNoSuchKey:
    case S3StatusHttpErrorNotFound: r->kind = S3R_NOTFOUND; r->http = 404; return;
    case S3StatusErrorSignatureDoesNotMatch:
    case S3StatusErrorInvalidAccessKeyId:
    case S3StatusErrorAccessDenied:
    case S3StatusHttpErrorForbidden: r->kind = S3R_AUTH; r->http = 403; return;
    case S3StatusErrorInternalError:
    case S3StatusErrorSlowDown:
    case S3StatusErrorRequestTimeout:
    case S3StatusErrorOperationAborted:
    case S3StatusErrorIncompleteBody:
    case S3StatusHttpErrorUnknown:     /* 5xx without a body libs3 knows */
    case S3StatusErrorUnknown:
        r->kind = S3R_TRANSIENT;
        return;
    case S3StatusAbortedByCallback:
        r->kind = S3R_FAIL;
        if (c->overflow) snprintf(r->msg, sizeof r->msg, "the response is larger than asked for");
        return;
    default:
        r->kind = S3_status_is_retryable(c->st) ? S3R_TRANSIENT : S3R_FAIL;
    }
}

static void lt_put(void *p, const char *key, const void *buf, uint64_t len, s3_res *r)
{
    lt *t = p;
    cb c = {.st = S3StatusInternalError, .src = buf, .slen = len};
    S3PutObjectHandler h = {{on_props, on_done}, on_put};
    S3_put_object(&t->ctx, key, len, NULL, NULL, &h, &c);
    classify(&c, r);
}

static void lt_get(void *p, const char *key, uint64_t off, uint64_t len, s3_buf *out, s3_res *r)
{
    lt *t = p;
    cb c = {.st = S3StatusInternalError, .out = out};
    S3GetObjectHandler h = {{on_props, on_done}, on_get};
    S3_get_object(&t->ctx, key, NULL, off, len, NULL, &h, &c);
    classify(&c, r);
}

static void lt_del(void *p, const char *key, s3_res *r)
{
    lt *t = p;
    cb c = {.st = S3StatusInternalError};
    S3ResponseHandler h = {on_props, on_done};
    S3_delete_object(&t->ctx, key, NULL, &h, &c);
    classify(&c, r);
}

static void lt_mkbucket(void *p, s3_res *r)
{
    lt *t = p;
    cb c = {.st = S3StatusInternalError};
    S3ResponseHandler h = {on_props, on_done};
    S3_create_bucket(t->ctx.protocol, t->access, t->secret, t->cfg.endpoint, t->cfg.bucket,
                     S3CannedAclPrivate, NULL, NULL, &h, &c);
    if (c.st == S3StatusErrorBucketAlreadyOwnedByYou) c.st = S3StatusOK;
    classify(&c, r);
}

static S3Status on_list(int truncated, const char *next_marker, int n, const S3ListBucketContent *v,
                        int nprefixes, const char **prefixes, void *arg)
{
    (void)nprefixes;
    (void)prefixes;
    cb *c = arg;
    c->truncated = truncated;
    for (int i = 0; i < n; i++) {
        if (c->nkeys == c->kcap) {
            size_t nc = c->kcap ? 2 * c->kcap : 256;
            char **k = realloc(c->keys, nc * sizeof *k);
            if (k) c->keys = k;
            uint64_t *s = realloc(c->sizes, nc * sizeof *s);
            if (s) c->sizes = s;
            int64_t *m = realloc(c->mtimes, nc * sizeof *m);
            if (m) c->mtimes = m;
            if (!k || !s || !m) {
                c->nomem = 1;
                return S3StatusAbortedByCallback;
            }
            c->kcap = nc;
        }
        if (!(c->keys[c->nkeys] = strdup(v[i].key))) {
            c->nomem = 1;
            return S3StatusAbortedByCallback;
        }
        /* libs3 parses LastModified to whole seconds (S3_MTIME_SLACK_MS covers it). */
        c->mtimes[c->nkeys] = v[i].lastModified * 1000;
        c->sizes[c->nkeys++] = v[i].size;
        snprintf(c->marker, sizeof c->marker, "%s", v[i].key);
    }
    if (next_marker && *next_marker) snprintf(c->marker, sizeof c->marker, "%s", next_marker);
    return S3StatusOK;
}

static void lt_list(void *p, const char *prefix, const char *after, s3_list_fn fn, void *arg,
                    char *next, size_t ncap, s3_res *r)
{
    lt *t = p;
    cb c = {.st = S3StatusInternalError};
    S3ListBucketHandler h = {{on_props, on_done}, on_list};
    S3_list_bucket(&t->ctx, prefix, after, NULL, 1000, NULL, &h, &c);
    classify(&c, r);
    if (c.nomem) {
        r->kind = S3R_FAIL;
        snprintf(r->msg, sizeof r->msg, "out of memory");
    }
    next[0] = 0;
    int stopped = 0;
    for (size_t i = 0; i < c.nkeys; i++) {
        if (r->kind == S3R_OK && !stopped) stopped = fn(arg, c.keys[i], c.sizes[i], c.mtimes[i]);
        free(c.keys[i]);
    }
    free(c.keys);
    free(c.sizes);
    free(c.mtimes);
    if (r->kind == S3R_OK && !stopped && c.truncated) snprintf(next, ncap, "%s", c.marker);
}

const s3_transport_ops s3_libs3_ops = {lt_put, lt_get, lt_list, lt_del, lt_mkbucket, lt_free};
