/* The S3 side of a store: init and open of a node over a bucket, pack upload, reads of
 * packs the local cache lacks, the bounded local pack cache.
 *
 * A node's folder (`cairn init --backend s3`) holds only caches: cairn.conf (where the
 * bucket is, this node's tag, the cache bound: no keys, no secret), the RocksDB index,
 * packs/ (the packs this node wrote or read whole, least recently used dropped past
 * cache_bytes), manifests/ (copies) and cache/. The bucket holds the truth:
 *   cairn.conf             format and the chunk-id secret (docs/s3.md says why there)
 *   nodes/TAG              one per node ever initialised (tags are unique per bucket)
 *   packs/%016x.pack       immutable packs; the top bits of the number are the writer's tag
 *   manifests/ID.cmf       the commit point of a snapshot; ID.files its file index
 *   events/…, audit/…      one object per lifecycle event / audited read
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"
#include "store/s3.h"

#define CONF_NAME "cairn.conf"
#define DEFAULT_CACHE (4ULL << 30)
#define NODE_MAX ((1u << 22) - 1) /* node << 40 stays below 2^62: manifests keep pack numbers as JSON integers */

void remote_pack_name(uint64_t pack, char out[40])
{
    snprintf(out, 40, "packs/%016llx.pack", (unsigned long long)pack);
}

static int conf_value(const char *conf, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    for (const char *p = conf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            const char *v = p + kl + 1;
            size_t n = strcspn(v, "\n");
            if (n >= cap) return -1;
            memcpy(out, v, n);
            out[n] = 0;
            return 0;
        }
    }
    return -1;
}

/* Reads the store's secret from the bucket's cairn.conf; the messages name the three ways a
 * bucket can be wrong: missing, refusing us, not a store. */
static int fetch_secret(store_backend *be, uint8_t *secret, store_err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    store_err ge;
    int rc = be->ops->get_all(be, CONF_NAME, &buf, &len, &ge);
    if (rc == -ENOENT)
        return store_errf(e, -ENOENT, "%s is not a Cairn store (no %s in the bucket; `cairn init "
                          "--backend s3` makes one)", be->where, CONF_NAME);
    if (rc) return store_errf(e, rc, "%s", ge.msg);
    char *text = realloc(buf, len + 1);
    if (!text) {
        free(buf);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    text[len] = 0;
    rc = conf_parse_secret(text, secret);
    free(text);
    if (rc)
        return store_errf(e, -EINVAL, "%s: its %s is not of format %d or its secret is damaged",
                          be->where, CONF_NAME, STORE_FORMAT);
    return 0;
}

static int open_be(const s3_config *cfg, uint32_t node, const char *dir, int make_bucket,
                   store_backend **be, store_err *e)
{
    s3_client *c = NULL;
    int rc = s3_open(cfg, &c, e);
    if (rc) return rc;
    if (make_bucket && (rc = s3_make_bucket(c, e))) {
        s3_close(c);
        return rc;
    }
    char *cache = util_path(dir, "cache");
    if (!cache) {
        s3_close(c);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    /* Copies of log objects and gc records go there (a cache: failing to make it only
     * costs GETs, and the first copy says so). */
    if (mkdir(cache, 0700) < 0 && errno != EEXIST && errno != ENOENT)
        fprintf(stderr, "cairn: warning: %s: %s\n", cache, strerror(errno));
    rc = backend_s3_open(c, node, cache, be, e);
    free(cache);
    return rc;
}

int remote_open(store_t *s, const char *conf, store_err *e)
{
    s3_config cfg = {0};
    char v[64], sig[8] = "v4";
    if (conf_value(conf, "s3_endpoint", cfg.endpoint, sizeof cfg.endpoint) ||
        conf_value(conf, "s3_bucket", cfg.bucket, sizeof cfg.bucket) ||
        conf_value(conf, "node", v, sizeof v))
        return store_errf(e, -EINVAL, "%s/%s: an S3 node's config needs s3_endpoint, s3_bucket and node",
                          s->dir, CONF_NAME);
    s->node = (uint32_t)strtoul(v, NULL, 16);
    if (conf_value(conf, "s3_region", cfg.region, sizeof cfg.region)) snprintf(cfg.region, sizeof cfg.region, "us-east-1");
    cfg.http = conf_value(conf, "s3_http", v, sizeof v) == 0 && !strcmp(v, "1");
    (void)conf_value(conf, "s3_signature", sig, sizeof sig);
    if ((cfg.sig = s3_sig_parse(sig)) < 0)
        return store_errf(e, -EINVAL, "%s/%s: s3_signature is v2 or v4, not '%s'", s->dir, CONF_NAME, sig);
    s->cache_bytes = conf_value(conf, "cache_bytes", v, sizeof v) == 0 ? strtoull(v, NULL, 10) : DEFAULT_CACHE;
    if (!s->node || s->node > NODE_MAX)
        return store_errf(e, -EINVAL, "%s/%s: bad node tag", s->dir, CONF_NAME);
    int rc = open_be(&cfg, s->node, s->dir, 0, &s->be, e);
    if (!rc) rc = fetch_secret(s->be, s->secret, e);
    return rc;
}

typedef struct {
    int any;
    char first[256];
} any_ctx;

static int note_any(void *arg, const char *name, uint64_t size, int64_t mtime_ms)
{
    (void)mtime_ms;
    (void)size;
    any_ctx *a = arg;
    a->any = 1;
    snprintf(a->first, sizeof a->first, "%s", name);
    return 1;
}

/* A tag no other node of the bucket has: nodes/TAG is listed first (a tag taken by an init
 * racing this one is the one case left, 1 in 4 million per pair of simultaneous inits). */
static int claim_node(store_backend *be, uint32_t *node, store_err *e)
{
    for (int tries = 0; tries < 16; tries++) {
        uint32_t r;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) return store_errf(e, -EIO, "getrandom failed");
        r &= NODE_MAX;
        if (!r) continue;
        char name[32];
        snprintf(name, sizeof name, "nodes/%06x", r);
        any_ctx a = {0};
        int rc = be->ops->list(be, name, note_any, &a, e);
        if (rc) return rc;
        if (a.any) continue;
        char body[64];
        int n = snprintf(body, sizeof body, "created_ms=%lld\n", (long long)store_now_ms());
        if ((rc = be->ops->put(be, name, body, (size_t)n, e))) return rc;
        *node = r;
        return 0;
    }
    return store_errf(e, -EAGAIN, "%s: no free node tag found", be->where);
}

int store_init_s3(const char *dir, const store_s3_opts *o, store_err *e)
{
    s3_config cfg = {0};
    if (!o->endpoint || !*o->endpoint || strlen(o->endpoint) >= sizeof cfg.endpoint)
        return store_errf(e, -EINVAL, "an S3 store needs an endpoint (HOST:PORT)");
    if (!o->bucket || strlen(o->bucket) < 3 || strlen(o->bucket) > 63 ||
        strspn(o->bucket, "abcdefghijklmnopqrstuvwxyz0123456789.-") != strlen(o->bucket))
        return store_errf(e, -EINVAL, "bad bucket name '%s' (3-63 of [a-z0-9.-])", o->bucket ? o->bucket : "");
    snprintf(cfg.endpoint, sizeof cfg.endpoint, "%s", o->endpoint);
    snprintf(cfg.bucket, sizeof cfg.bucket, "%s", o->bucket);
    snprintf(cfg.region, sizeof cfg.region, "%s", o->region && *o->region ? o->region : "us-east-1");
    cfg.http = o->http;
    cfg.sig = o->sig_v2 ? S3_SIG_V2 : S3_SIG_V4;

    struct stat st;
    char *conf = util_path(dir, CONF_NAME);
    int exists = conf && stat(conf, &st) == 0;
    free(conf);
    if (exists) return store_errf(e, -EEXIST, "%s is already a Cairn store", dir);
    int rc = store_init_layout(dir, e);
    store_backend *be = NULL;
    if (!rc) rc = open_be(&cfg, 0, dir, 0, &be, e);
    uint8_t secret[SECRET_LEN];
    if (!rc) {
        store_err fe;
        rc = fetch_secret(be, secret, &fe);
        if (rc == -ENXIO) {
            /* An existing bucket is used as it is (one an operator made, with its own
             * policies); a missing one is made. */
            backend_close(be);
            be = NULL;
            rc = open_be(&cfg, 0, dir, 1, &be, e);
            if (!rc) rc = -ENOENT;
            else fe = *e;
        }
        if (rc == -ENOENT) {
            /* A new store, unless the bucket holds something else. */
            any_ctx a = {0};
            rc = be->ops->list(be, "", note_any, &a, e);
            if (!rc && a.any)
                rc = store_errf(e, -EEXIST, "%s is not a Cairn store: it holds other objects (%s) and no %s; "
                                "give Cairn a bucket of its own", be->where, a.first, CONF_NAME);
            if (!rc && getrandom(secret, sizeof secret, 0) != (ssize_t)sizeof secret)
                rc = store_errf(e, -EIO, "cannot read random bytes for the store secret");
            char text[1024];
            int n = rc ? 0 : conf_text(secret, text, sizeof text);
            if (!rc) rc = be->ops->put(be, CONF_NAME, text, (size_t)n, e);
            memset(text, 0, sizeof text);
        } else if (rc) {
            store_errf(e, rc, "%s", fe.msg);
        }
    }
    uint32_t node = 0;
    if (!rc) rc = claim_node(be, &node, e);
    backend_close(be);
    memset(secret, 0, sizeof secret);
    if (rc) return rc;
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "# A Cairn node over an S3 bucket: the bucket holds the store; this folder holds\n"
                     "# caches. Keys come from $CAIRN_S3_ACCESS_KEY / $CAIRN_S3_SECRET_KEY.\n"
                     "format=%d\ncreated_ms=%lld\nbackend=s3\ns3_endpoint=%s\ns3_bucket=%s\ns3_region=%s\n"
                     "s3_http=%d\ns3_signature=%s\nnode=%06x\ncache_bytes=%llu\n",
                     STORE_FORMAT, (long long)store_now_ms(), cfg.endpoint, cfg.bucket, cfg.region, cfg.http,
                     cfg.sig == S3_SIG_V2 ? "v2" : "v4", node,
                     (unsigned long long)(o->cache_bytes ? o->cache_bytes : DEFAULT_CACHE));
    rc = util_write_file_durable(dir, CONF_NAME, text, (size_t)n);
    if (rc) return store_errf(e, rc, "%s/%s: cannot write: %s", dir, CONF_NAME, strerror(-rc));
    return 0;
}

/* ---- packs -------------------------------------------------------------------------- */

int remote_put_pack(store_t *s, uint64_t pack, store_err *e)
{
    char *path = pack_path(s, pack, 0);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    int rc = 0;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) rc = store_errf(e, -errno, "%s: %s", path ? path : "pack", strerror(errno));
    void *m = MAP_FAILED;
    if (!rc && (m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
        rc = store_errf(e, -errno, "%s: mmap: %s", path, strerror(errno));
    char name[40];
    remote_pack_name(pack, name);
    if (!rc) rc = s->be->ops->put(s->be, name, m, (size_t)st.st_size, e);
    if (m != MAP_FAILED) munmap(m, (size_t)st.st_size);
    if (fd >= 0) close(fd);
    free(path);
    return rc;
}

void remote_keep_copy(store_t *s, const char *name, const void *buf, size_t len)
{
    char *path = util_path(s->dir, name);
    if (!path) return;
    char *slash = strrchr(path, '/');
    *slash = 0;
    int rc = mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -errno;
    if (!rc) rc = util_write_file_durable(path, slash + 1, buf, len);
    /* Only a cache: the caller goes on, but nobody is left unaware. */
    if (rc) fprintf(stderr, "cairn: warning: cannot keep a copy of %s in %s: %s\n", name, path, strerror(-rc));
    free(path);
}

typedef struct {
    char name[48];          /* under DIR: packs/N.pack or cache/frames/N-OFF */
    uint64_t size;
    struct timespec used;
} cached;

static int older(const void *a, const void *b)
{
    const struct timespec *x = &((const cached *)a)->used, *y = &((const cached *)b)->used;
    if (x->tv_sec != y->tv_sec) return x->tv_sec < y->tv_sec ? -1 : 1;
    return x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec;
}

typedef struct {
    cached *v;
    size_t n, cap;
    uint64_t total;
} cache_list;

/* The files of one cache folder (packs: only N.pack; frames: all, torn .tmp ones too). A
 * missing folder is empty. */
static int cache_scan(const char *root, const char *sub, int packs_only, cache_list *l)
{
    char *dir = util_path(root, sub);
    if (!dir) return -ENOMEM;
    DIR *d = opendir(dir);
    free(dir);
    if (!d) return errno == ENOENT ? 0 : -errno;
    int rc;
    struct dirent *de;
    while ((rc = util_next_entry(d, &de)) > 0) {
        size_t len = strlen(de->d_name);
        struct stat st;
        if (de->d_name[0] == '.') continue;
        if (packs_only && (len != 21 || strcmp(de->d_name + 16, ".pack"))) continue;
        if (len + strlen(sub) + 2 > sizeof l->v->name) continue;   /* not one of ours */
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
            if (errno == ENOENT) continue;
            rc = -errno;
            break;
        }
        if (!S_ISREG(st.st_mode)) continue;
        if (l->n == l->cap) {
            size_t nc = l->cap ? 2 * l->cap : 64;
            cached *nv = realloc(l->v, nc * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            l->v = nv;
            l->cap = nc;
        }
        int w = snprintf(l->v[l->n].name, sizeof l->v->name, "%s/%s", sub, de->d_name);
        if (w < 0 || (size_t)w >= sizeof l->v->name) continue;   /* checked above */
        l->v[l->n].size = (uint64_t)st.st_size;
        l->v[l->n].used = older(&(cached){.used = st.st_atim}, &(cached){.used = st.st_mtim}) > 0 ? st.st_atim
                                                                                                  : st.st_mtim;
        l->total += l->v[l->n].size;
        l->n++;
    }
    closedir(d);
    return rc;
}

/* Every pack in packs/ is in the bucket (a pack is indexed only after its upload), and
 * every frame in cache/frames/ is a copy of part of one, so any may go; the last use is the
 * file's atime or mtime, whichever is later. One bound covers both. */
int remote_trim_cache(store_t *s, store_err *e)
{
    cache_list l = {0};
    int rc = cache_scan(s->dir, "packs", 1, &l);
    if (!rc) rc = cache_scan(s->dir, "cache/frames", 0, &l);
    if (!rc && l.total > s->cache_bytes) {
        qsort(l.v, l.n, sizeof *l.v, older);
        for (size_t i = 0; !rc && i < l.n && l.total > s->cache_bytes; i++) {
            char *path = util_path(s->dir, l.v[i].name);
            if (!path) rc = -ENOMEM;
            else if (unlink(path) == 0) l.total -= l.v[i].size;
            else if (errno != ENOENT) rc = -errno;
            free(path);
        }
    }
    free(l.v);
    if (rc) store_errf(e, rc, "%s: trimming the local cache: %s", s->dir, strerror(-rc));
    return rc;
}

/* ---- small objects (manifests, file indexes) ------------------------------------------ */

int obj_put(store_t *s, const char *name, const void *buf, size_t len, store_err *e)
{
    int rc = s->be->ops->put(s->be, name, buf, len, e);
    if (!rc && s->be->remote) remote_keep_copy(s, name, buf, len);
    return rc;
}

int obj_get(store_t *s, const char *name, uint8_t **buf, size_t *len, store_err *e)
{
    char *path = util_path(s->dir, name);
    if (!path) return store_errf(e, -ENOMEM, "out of memory");
    int rc = util_read_file(path, buf, len);
    if (rc == -ENOENT && s->be->remote) {
        rc = s->be->ops->get_all(s->be, name, buf, len, e);
        if (!rc) remote_keep_copy(s, name, *buf, *len);
    } else if (rc) {
        store_errf(e, rc, "%s: %s", path, strerror(-rc));
    }
    free(path);
    return rc;
}


