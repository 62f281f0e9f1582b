/* S3 transport on libcurl with AWS Signature V4 (CURLOPT_AWS_SIGV4), path-style URLs.
 * One request per call; easy handles are pooled so connections are reused. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3.h"
#include "store/toolbox.h"

#define POOL 32

typedef struct {
    s3_config cfg;
    char userpwd[512];
    char sigv4[128];
    char base[400];              /* http[s]://endpoint/bucket */
    pthread_mutex_t mu;
    CURL *idle[POOL];
    int nidle;
} ct;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static CURLcode init_rc;
static void global_init(void) { init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int s3_curl_new(const s3_config *c, const char *access, const char *secret, void **out, store_err *e)
{
    pthread_once(&once, global_init);
    if (init_rc != CURLE_OK) return store_errf(e, -EIO, "libcurl: %s", curl_easy_strerror(init_rc));
    ct *t = calloc(1, sizeof *t);
    if (!t) return store_errf(e, -ENOMEM, "out of memory");
    t->cfg = *c;
    if ((size_t)snprintf(t->userpwd, sizeof t->userpwd, "%s:%s", access, secret) >= sizeof t->userpwd) {
        free(t);
        return store_errf(e, -EINVAL, "$CAIRN_S3_ACCESS_KEY / $CAIRN_S3_SECRET_KEY are too long");
    }
    snprintf(t->sigv4, sizeof t->sigv4, "aws:amz:%s:s3", c->region[0] ? c->region : "us-east-1");
    snprintf(t->base, sizeof t->base, "%s://%s/%s", c->http ? "http" : "https", c->endpoint, c->bucket);
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return 0;
}

static void ct_free(void *p)
{
    ct *t = p;
    if (!t) return;
    for (int i = 0; i < t->nidle; i++) curl_easy_cleanup(t->idle[i]);
    pthread_mutex_destroy(&t->mu);
    memset(t->userpwd, 0, sizeof t->userpwd);
    free(t);
}

static CURL *take(ct *t)
{
    CURL *h = NULL;
    pthread_mutex_lock(&t->mu);
    if (t->nidle) h = t->idle[--t->nidle];
    pthread_mutex_unlock(&t->mu);
    if (h) curl_easy_reset(h);
    else h = curl_easy_init();
    return h;
}

static void give(ct *t, CURL *h)
{
    pthread_mutex_lock(&t->mu);
    if (t->nidle < POOL) {
        t->idle[t->nidle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    if (h) curl_easy_cleanup(h);
}

typedef struct {
    CURL *h;
    s3_buf *out;          /* the 2xx body goes here (may be NULL) */
    char err[1024];       /* the start of any other body (the service's XML error) */
    size_t elen;
    int overflow;
    const uint8_t *src;   /* upload */
    uint64_t slen, spos;
} xfer;

static size_t on_write(char *data, size_t sz, size_t n, void *arg)
{
    xfer *x = arg;
    size_t len = sz * n;
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200 && code < 300) {
        if (x->out && s3_buf_append(x->out, data, len)) {
            x->overflow = 1;
            return 0;   /* aborts the transfer: CURLE_WRITE_ERROR */
        }
        return len;
    }
    size_t k = len < sizeof x->err - 1 - x->elen ? len : sizeof x->err - 1 - x->elen;
    memcpy(x->err + x->elen, data, k);
    x->elen += k;
    x->err[x->elen] = 0;
    return len;
}

static size_t on_read(char *buf, size_t sz, size_t n, void *arg)
{
    xfer *x = arg;
    uint64_t k = sz * n;
    if (k > x->slen - x->spos) k = x->slen - x->spos;
    memcpy(buf, x->src + x->spos, (size_t)k);
    x->spos += k;
    return (size_t)k;
}

/* curl may rewind an upload (a redirect, an auth retry): start the body again. */
static int on_seek(void *arg, curl_off_t off, int origin)
{
    xfer *x = arg;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > x->slen) return CURL_SEEKFUNC_FAIL;
    x->spos = (uint64_t)off;
    return CURL_SEEKFUNC_OK;
}

/* The text of <TAG>..</TAG> in xml into out ("" if absent). */
static void xml_text(const char *xml, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    out[0] = 0;
    const char *a = strstr(xml, open);
    if (!a) return;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b) return;
    size_t n = (size_t)(b - a) < cap - 1 ? (size_t)(b - a) : cap - 1;
    memcpy(out, a, n);
    out[n] = 0;
}

static void classify(CURLcode cc, long code, xfer *x, s3_res *r)
{
    r->http = (int)code;
    if (cc != CURLE_OK) {
        if (x->overflow) {
            r->kind = S3R_FAIL;
            snprintf(r->msg, sizeof r->msg, "the response is larger than asked for");
            return;
        }
        /* No answer (refused, reset, timed out, cut short): worth another try. */
        r->kind = S3R_TRANSIENT;
        r->http = 0;
        snprintf(r->msg, sizeof r->msg, "%s", curl_easy_strerror(cc));
        return;
    }
    char scode[96];
    xml_text(x->err, "Code", scode, sizeof scode);
    snprintf(r->msg, sizeof r->msg, "%s", scode[0] ? scode : "no error code in the answer");
    if (code >= 200 && code < 300) r->kind = S3R_OK;
    else if (code == 404) r->kind = !strcmp(scode, "NoSuchBucket") ? S3R_NOBUCKET : S3R_NOTFOUND;
    else if (code == 403 || code == 401) r->kind = S3R_AUTH;
    else if (code >= 500 || code == 408 || code == 429) r->kind = S3R_TRANSIENT;
    else r->kind = S3R_FAIL;
}

/* One request. method: "GET", "PUT", "DELETE". */
static void request(ct *t, const char *method, const char *url, const void *body, uint64_t blen,
                    const char *range, s3_buf *out, s3_res *r)
{
    CURL *h = take(t);
    if (!h) {
        r->kind = S3R_FAIL;
        snprintf(r->msg, sizeof r->msg, "curl_easy_init failed");
        return;
    }
    xfer x = {.h = h, .out = out, .src = body, .slen = blen};
    /* No "Expect:" line to suppress 100-continue: libcurl 7.88 would sign the empty header
     * it then drops, and RGW refuses the signature. */
    struct curl_slist *hd = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD"), *h2 = hd;
    char rh[96];
    if (range && hd) {
        snprintf(rh, sizeof rh, "Range: bytes=%s", range);
        if ((h2 = curl_slist_append(hd, rh))) hd = h2;
    }
    if (!hd || !h2) {
        curl_slist_free_all(hd);
        give(t, h);
        r->kind = S3R_FAIL;
        snprintf(r->msg, sizeof r->msg, "out of memory");
        return;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (getenv("CAIRN_S3_TRACE")) curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, t->sigv4);
    curl_easy_setopt(h, CURLOPT_USERPWD, t->userpwd);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    /* A stalled transfer (a server that stopped answering) is a timeout, not a hang. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
    if (!strcmp(method, "PUT")) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &x);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, &x);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)blen);
    } else if (!strcmp(method, "DELETE")) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    classify(cc, code, &x, r);
    curl_slist_free_all(hd);
    give(t, h);
}

static void url_of(ct *t, const char *key, char *out, size_t cap)
{
    /* Keys are Cairn's own names ([A-Za-z0-9._/-]): nothing to escape. */
    snprintf(out, cap, "%s/%s", t->base, key);
}

static void ct_put(void *p, const char *key, const void *buf, uint64_t len, s3_res *r)
{
    char url[1024];
    url_of(p, key, url, sizeof url);
    request(p, "PUT", url, buf, len, NULL, NULL, r);
}

static void ct_get(void *p, const char *key, uint64_t off, uint64_t len, s3_buf *out, s3_res *r)
{
    char url[1024], range[64];
    url_of(p, key, url, sizeof url);
    if (len) snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)off, (unsigned long long)(off + len - 1));
    else snprintf(range, sizeof range, "%llu-", (unsigned long long)off);
    request(p, "GET", url, NULL, 0, off || len ? range : NULL, out, r);
    if (r->kind == S3R_OK && r->http == 200 && (off || len) && out->len > len && len) {
        r->kind = S3R_FAIL;
        snprintf(r->msg, sizeof r->msg, "the server ignored the byte range");
    }
}

static void ct_del(void *p, const char *key, s3_res *r)
{
    char url[1024];
    url_of(p, key, url, sizeof url);
    request(p, "DELETE", url, NULL, 0, NULL, NULL, r);
}

static void ct_mkbucket(void *p, s3_res *r)
{
    ct *t = p;
    request(t, "PUT", t->base, "", 0, NULL, NULL, r);
    if (r->kind == S3R_FAIL && r->http == 409 && !strcmp(r->msg, "BucketAlreadyOwnedByYou")) r->kind = S3R_OK;
}

static void xml_unescape(char *s)
{
    static const struct { const char *e; char c; } ents[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    char *w = s;
    for (char *p = s; *p;) {
        size_t i;
        for (i = 0; i < 5; i++)
            if (!strncmp(p, ents[i].e, strlen(ents[i].e))) break;
        if (i < 5) {
            *w++ = ents[i].c;
            p += strlen(ents[i].e);
        } else *w++ = *p++;
    }
    *w = 0;
}

static void ct_list(void *p, const char *prefix, const char *after, s3_list_fn fn, void *arg,
                    char *next, size_t ncap, s3_res *r)
{
    ct *t = p;
    CURL *h = curl_easy_init();
    char *ep = h ? curl_easy_escape(h, prefix, 0) : NULL;
    char *ea = h && after ? curl_easy_escape(h, after, 0) : NULL;
    char url[3072];
    if (ep) snprintf(url, sizeof url, "%s?list-type=2&max-keys=1000&prefix=%s%s%s", t->base, ep,
                     ea ? "&start-after=" : "", ea ? ea : "");
    curl_free(ep);
    curl_free(ea);
    if (h) curl_easy_cleanup(h);
    if (!ep) {
        r->kind = S3R_FAIL;
        snprintf(r->msg, sizeof r->msg, "out of memory");
        return;
    }
    s3_buf body = {0};
    request(t, "GET", url, NULL, 0, NULL, &body, r);
    if (r->kind != S3R_OK || s3_buf_append(&body, "", 1)) {
        if (r->kind == S3R_OK) {
            r->kind = S3R_FAIL;
            snprintf(r->msg, sizeof r->msg, "out of memory");
        }
        free(body.p);
        return;
    }
    const char *xml = (const char *)body.p;
    char trunc[16], key[1024] = "", size[32], when[64];
    xml_text(xml, "IsTruncated", trunc, sizeof trunc);
    if (!strstr(xml, "<ListBucketResult")) {
        r->kind = S3R_FAIL;
        snprintf(r->msg, sizeof r->msg, "the listing is not a ListBucketResult");
        free(body.p);
        return;
    }
    for (const char *c = strstr(xml, "<Contents>"); c; c = strstr(c + 1, "<Contents>")) {
        const char *end = strstr(c, "</Contents>");
        if (!end) break;
        char one[2048];
        size_t n = (size_t)(end - c) < sizeof one - 1 ? (size_t)(end - c) : sizeof one - 1;
        memcpy(one, c, n);
        one[n] = 0;
        xml_text(one, "Key", key, sizeof key);
        xml_text(one, "Size", size, sizeof size);
        xml_text(one, "LastModified", when, sizeof when);
        xml_unescape(key);
        int64_t mtime = 0;
        if (store_rfc3339_parse(when, &mtime)) {
            /* Ages of gc records and leases are judged by it: no guess. */
            r->kind = S3R_FAIL;
            snprintf(r->msg, sizeof r->msg, "the listing gives %.120s no LastModified time", key);
            next[0] = 0;
            free(body.p);
            return;
        }
        if (fn(arg, key, strtoull(size, NULL, 10), mtime)) {
            next[0] = 0;
            free(body.p);
            return;
        }
    }
    snprintf(next, ncap, "%s", !strcmp(trunc, "true") ? key : "");
    free(body.p);
}

const s3_transport_ops s3_curl_ops = {ct_put, ct_get, ct_list, ct_del, ct_mkbucket, ct_free};
