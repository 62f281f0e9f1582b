/*
 * store/s3: a small S3 client for the store's S3 backend (store/be_s3.c). Internal to store/.
 *
 * Two transports behind one table of operations:
 *   v2  libs3 (AWS Signature V2; Ceph RGW and MinIO accept it)
 *   v4  libcurl with CURLOPT_AWS_SIGV4 (what AWS S3 requires in most regions). libcurl
 *       7.88 signs a request RGW refuses unless it carries x-amz-content-sha256, so every
 *       request sends "x-amz-content-sha256: UNSIGNED-PAYLOAD" (the body is then not part of
 *       the signature; objects carry their own checksums: packs, manifests, file indexes).
 * s3.c adds what both need: retries with exponential backoff and jitter for transient
 * failures (5xx, 408, 429, connection refused/reset, timeouts), and error messages that name
 * the endpoint, the bucket, the operation and the key (never a key or secret).
 *
 * Keys (credentials) come only from $CAIRN_S3_ACCESS_KEY / $CAIRN_S3_SECRET_KEY; they are
 * never written anywhere by Cairn.
 *
 * Thread-safety: an s3_client may be used by many threads at once (the transports keep a
 * pool of connections). Lifetime: s3_open .. s3_close; nothing returned borrows from it.
 */
#ifndef CAIRN_STORE_S3_H
#define CAIRN_STORE_S3_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

enum { S3_SIG_V4 = 0, S3_SIG_V2 = 1 };

typedef struct {
    char endpoint[256];     /* HOST:PORT (or HOST) */
    char bucket[64];
    char region[64];        /* for V4; "us-east-1" by default */
    int http;               /* 1: plain HTTP (a loopback test endpoint), 0: HTTPS */
    int sig;                /* S3_SIG_V4 or S3_SIG_V2 */
} s3_config;

/* The outcome of one request (filled by a transport). */
enum { S3R_OK = 0, S3R_NOTFOUND, S3R_NOBUCKET, S3R_AUTH, S3R_TRANSIENT, S3R_FAIL };
typedef struct {
    int kind;               /* S3R_* */
    int http;               /* HTTP status when known, else 0 */
    char msg[200];          /* the service's error code or the transport's error */
} s3_res;

/* A response body: growable (fixed = 0) or a caller's buffer of cap bytes (fixed = 1). */
typedef struct {
    uint8_t *p;
    size_t len, cap;
    int fixed;
} s3_buf;
int s3_buf_append(s3_buf *b, const void *data, size_t n);   /* -1 when full / no memory */

/* One listed object: its key, size and Last-Modified on the bucket's clock (unix ms; the
 * XML listing gives milliseconds, libs3 whole seconds: backend.h's BACKEND_MTIME_SLACK_MS). */
typedef int (*s3_list_fn)(void *arg, const char *key, uint64_t size, int64_t mtime_ms);

typedef struct {
    void (*put)(void *t, const char *key, const void *buf, uint64_t len, s3_res *r);
    /* len 0: the whole object from off. */
    void (*get)(void *t, const char *key, uint64_t off, uint64_t len, s3_buf *out, s3_res *r);
    /* One page of keys after `after` (NULL: from the start); next gets the key to continue
     * after, or "" when this was the last page. fn returning non-zero stops (kind S3R_OK). */
    void (*list)(void *t, const char *prefix, const char *after, s3_list_fn fn, void *arg,
                 char *next, size_t ncap, s3_res *r);
    void (*del)(void *t, const char *key, s3_res *r);
    void (*mkbucket)(void *t, s3_res *r);
    void (*free)(void *t);
} s3_transport_ops;

/* Transports: credentials are copied. */
STORE_MUST_USE int s3_libs3_new(const s3_config *c, const char *access, const char *secret, void **t, store_err *e);
STORE_MUST_USE int s3_curl_new(const s3_config *c, const char *access, const char *secret, void **t, store_err *e);
extern const s3_transport_ops s3_libs3_ops, s3_curl_ops;

typedef struct s3_client s3_client;

/* Reads the keys from the environment; -EINVAL with a message naming the variables when
 * they are missing. */
STORE_MUST_USE int s3_open(const s3_config *c, s3_client **out, store_err *e);
void s3_close(s3_client *c);
const s3_config *s3_cfg(const s3_client *c);

/* Every call retries transient failures. Return 0 or a negative errno: -ENOENT (no such
 * key), -ENXIO (no such bucket), -EACCES (refused: bad keys), -EIO. */
STORE_MUST_USE int s3_put(s3_client *c, const char *key, const void *buf, uint64_t len, store_err *e);
STORE_MUST_USE int s3_get_range(s3_client *c, const char *key, uint64_t off, void *buf, size_t len, store_err *e);
STORE_MUST_USE int s3_get_all(s3_client *c, const char *key, uint8_t **out, size_t *len, store_err *e);
STORE_MUST_USE int s3_list(s3_client *c, const char *prefix, s3_list_fn fn, void *arg, store_err *e);
/* Like s3_list, only the keys that sort after `after` (S3's start-after / marker): a
 * listing that resumes where an earlier one stopped costs a request per 1000 new keys. */
STORE_MUST_USE int s3_list_after(s3_client *c, const char *prefix, const char *after, s3_list_fn fn, void *arg,
                                 store_err *e);
STORE_MUST_USE int s3_delete(s3_client *c, const char *key, store_err *e);   /* a missing key is fine */
STORE_MUST_USE int s3_make_bucket(s3_client *c, store_err *e);               /* an existing one of ours is fine */

/* Parses "v2"/"v4"; -1 if neither. */
int s3_sig_parse(const char *s);

#endif
