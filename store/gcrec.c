/* The objects of gc across the nodes of a bucket (store/maint.h, "gc across nodes";
 * docs/s3.md): the lease gc/lease, fossil records gc/fossils/…, deletion records
 * gc/deleted/…. This file is their one encoder and parser.
 *
 *   gc/lease                     node=%06x ttl_ms=… nonce=%016llx (one per line): it
 *                                ends ttl_ms after its Last-Modified, on the bucket's clock
 *   gc/fossils/<13 ms>-<node>-<rand>.json  {"at_ms":…, "packs":["%016llx",…],
 *                                "moved":["%016llx",…]}: the writer's wall clock (a name and a
 *                                hint only: age is the object's Last-Modified on the bucket's
 *                                clock; older records also carry "boot", "boot_ms": ignored),
 *                                packs made fossils, and the packs that hold the live chunks
 *                                of the rewritten ones
 *   gc/deleted/<13 ms>-<node>-<rand>.json  the same shape: packs deleted (written before they
 *                                are deleted), and where their live chunks went
 *   clock/<node>                 empty: PUT and listed to read the bucket's clock
 * and the one text encoder and parser of the small key=value records (the gc lease, a
 * reader's lease, a drop intent: store_kv_text / store_kv_parse).
 * Records never change once written (unique names), so nodes keep copies of what they read
 * in DIR/cache/ and fetch each one once.
 *
 * Whose clock (docs/s3.md): no node's wall clock decides when another node's record is old
 * enough. Ages are the bucket's: a record's Last-Modified against the Last-Modified of this
 * node's own fresh PUT (store_bucket_now), less BACKEND_MTIME_SLACK_MS; a node judges its
 * own records' lives by its monotonic clock. Assumed: the bucket's clock runs forward at
 * the rate of real time (a step of it is covered only up to the clock margin). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "store/internal.h"

#define LEASE_NAME "gc/lease"
#define FOSSIL_PREFIX "gc/fossils/"
#define DELETED_PREFIX "gc/deleted/"
/* The take-over check: a lease PUT is read back after this long (2 s; tests shorten it with
 * $CAIRN_GC_LEASE_SETTLE_MS); it is ours only if no other node's PUT replaced it meanwhile,
 * and only if the GET that found the lease free and our PUT took less than half of it
 * (docs/s3.md says why that excludes two winners). */
static int64_t env_ms(const char *name, int64_t dflt);
#define LEASE_SETTLE_MS env_ms("CAIRN_GC_LEASE_SETTLE_MS", 2000)

int store_is_remote(const store_t *s) { return s->be->remote; }

uint32_t store_node_tag(const store_t *s) { return s->node; }

static int64_t env_ms(const char *name, int64_t dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end;
    long long x = strtoll(v, &end, 10);
    return *end || x < 0 ? dflt : (int64_t)x;
}

int64_t store_commit_bound_ms(void) { return env_ms("CAIRN_S3_COMMIT_BOUND_MS", 20LL * 60 * 1000); }
int64_t store_clock_margin_ms(void) { return env_ms("CAIRN_S3_CLOCK_MARGIN_MS", 2LL * 60 * 1000); }
int64_t store_gc_lease_ttl_ms(void) { return env_ms("CAIRN_GC_LEASE_MS", 10LL * 60 * 1000); }
int64_t store_read_lease_ttl_ms(void) { return env_ms("CAIRN_S3_READ_LEASE_MS", 5LL * 60 * 1000); }

/* ---- small key=value records: the gc lease, a reader's lease, a drop intent ----------- */

int store_kv_text(char *buf, size_t cap, uint32_t node, const char *field, int64_t v, const uint64_t *nonce)
{
    int n = nonce ? snprintf(buf, cap, "node=%06x\n%s=%lld\nnonce=%016llx\n", node, field, (long long)v,
                             (unsigned long long)*nonce)
                  : snprintf(buf, cap, "node=%06x\n%s=%lld\n", node, field, (long long)v);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int store_kv_parse(const uint8_t *buf, size_t len, const char *field, uint32_t *node, int64_t *v, uint64_t *nonce)
{
    char text[256], fmt[96];
    if (len >= sizeof text || strlen(field) > 32) return -1;
    memcpy(text, buf, len);
    text[len] = 0;
    snprintf(fmt, sizeof fmt, "node=%%x\n%s=%%lld\nnonce=%%llx", field);
    unsigned n = 0;
    long long x = 0;
    unsigned long long nc = 0;
    if (sscanf(text, fmt, &n, &x, &nc) != (nonce ? 3 : 2)) return -1;
    *node = n;
    *v = x;
    if (nonce) *nonce = nc;
    return 0;
}

/* ---- the bucket's clock ---------------------------------------------------------------- */

/* Every time another node's record is judged by (docs/s3.md, "Whose clock"): a node PUTs
 * clock/TAG and lists it; its Last-Modified is the bucket's clock at a moment during this
 * call, so a lower bound of the bucket's time at any later step of the caller. */
int store_bucket_now(store_t *s, int64_t *now_ms, store_err *e)
{
    if (!s->be->remote) {
        *now_ms = store_now_ms();
        return 0;
    }
    char name[32];
    snprintf(name, sizeof name, "clock/%06x", s->node);
    int rc = s->be->ops->put(s->be, name, "", 0, e);
    remote_objs l = {0};
    if (!rc) rc = remote_list(s, name, NULL, &l, e);
    const remote_obj *o = rc ? NULL : remote_objs_find(&l, name);
    if (!rc && !o) rc = store_errf(e, -EIO, "%s: %s is not listed right after its PUT", s->be->where, name);
    if (!rc) {
        *now_ms = o->mtime_ms;
        int64_t m = store_mono_ms();
        pthread_mutex_lock(&s->mu);
        s->bucket_ms = o->mtime_ms;
        s->bucket_mono_ms = m ? m : 1;
        pthread_mutex_unlock(&s->mu);
    }
    remote_objs_free(&l);
    return rc;
}

/* ---- the lease ------------------------------------------------------------------------ */

/* gc/lease holds its life (ttl_ms), not an end time: it ends ttl_ms after its Last-Modified,
 * on the bucket's clock. with_time: also list it for that time (l->expires_ms); without,
 * only its holder and nonce are read (a renewal judges its own lease by its own monotonic
 * clock). The listing follows the GET: a lease replaced in between shows a later time, so
 * it is judged younger, never older, than the one read. */
static int lease_get(store_t *s, store_gc_lease *l, int *exists, int with_time, store_err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = s->be->ops->get_all(s->be, LEASE_NAME, &buf, &len, e);
    *exists = 0;
    if (rc == -ENOENT) return 0;
    if (rc) return rc;
    int64_t ttl = 0;
    *l = (store_gc_lease){0};
    if (store_kv_parse(buf, len, "ttl_ms", &l->node, &ttl, &l->nonce))
        rc = store_errf(e, -EBADMSG, "%s: %s is not a gc lease", s->be->where, LEASE_NAME);
    free(buf);
    if (rc || !with_time) {
        *exists = !rc;
        return rc;
    }
    remote_objs o = {0};
    if ((rc = remote_list(s, LEASE_NAME, NULL, &o, e))) return rc;
    const remote_obj *lo = remote_objs_find(&o, LEASE_NAME);
    if (lo) {                               /* else released since the GET */
        l->expires_ms = lo->mtime_ms + BACKEND_MTIME_SLACK_MS + ttl;
        *exists = 1;
    }
    remote_objs_free(&o);
    return 0;
}

static int lease_put(store_t *s, store_gc_lease *l, store_err *e)
{
    char text[128];
    int n = store_kv_text(text, sizeof text, l->node, "ttl_ms", store_gc_lease_ttl_ms(), &l->nonce);
    if (n < 0) return store_errf(e, -EINVAL, "gc lease text too long");
    l->put_mono_ms = store_mono_ms();
    return s->be->ops->put(s->be, LEASE_NAME, text, (size_t)n, e);
}

int store_gc_lease_take(store_t *s, store_gc_lease *mine, store_gc_lease *other, store_err *e)
{
    if (!s->be->remote) return store_errf(e, -EINVAL, "a gc lease is for a store on S3");
    uint64_t ours = 0;              /* our PUT of a slow attempt: not another node's */
    for (int attempt = 0; attempt < 3; attempt++) {
        /* The bucket's time before the GET: a holder renews only while its lease has more
         * than the margin left by its own monotonic clock (store_gc_lease_renew), so a
         * renewal it counts on was PUT before this moment and the GET sees it. */
        int64_t now = 0;
        int rc = store_bucket_now(s, &now, e);
        if (rc) return rc;
        int64_t m0 = store_mono_ms();
        store_gc_lease cur;
        int exists = 0;
        if ((rc = lease_get(s, &cur, &exists, 1, e))) return rc;
        if (exists && cur.nonce != ours && cur.expires_ms + store_clock_margin_ms() > now) {
            *other = cur;
            return store_errf(e, -EBUSY, "node %06x holds the gc lease of %s until %lld (unix ms, the bucket's clock)",
                              cur.node, s->be->where, (long long)cur.expires_ms);
        }
        if (exists && cur.nonce != ours) *other = cur;
        else if (!ours) memset(other, 0, sizeof *other);
        uint64_t nonce = 0;
        if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce) return store_errf(e, -EIO, "getrandom failed");
        *mine = (store_gc_lease){.node = s->node, .nonce = nonce | 1};
        if ((rc = lease_put(s, mine, e))) return rc;
        ours = mine->nonce;
        int64_t settle = LEASE_SETTLE_MS;
        if (store_mono_ms() - m0 > settle / 2) continue;   /* too slow to be sure: again */
        nanosleep(&(struct timespec){settle / 1000, (settle % 1000) * 1000000L}, NULL);
        if ((rc = lease_get(s, &cur, &exists, 0, e))) return rc;
        if (exists && cur.nonce == mine->nonce) return 0;
        if (exists) *other = cur;
        return store_errf(e, -EBUSY, "node %06x took the gc lease of %s at the same time; it holds it",
                          exists ? cur.node : 0, s->be->where);
    }
    return store_errf(e, -EBUSY, "%s: the bucket answered too slowly to take the gc lease safely", s->be->where);
}

int store_gc_lease_renew(store_t *s, store_gc_lease *mine, store_err *e)
{
    store_gc_lease cur;
    int exists = 0;
    int rc = lease_get(s, &cur, &exists, 0, e);
    if (rc) return rc;
    /* A holder that stalled past its expiry may have been replaced: it must stop. Its
     * lease ends no sooner than its life after its last PUT began (that PUT's Last-Modified
     * is later), so its monotonic clock tells, whatever the wall clock did. */
    if (!exists || cur.nonce != mine->nonce ||
        store_mono_ms() - mine->put_mono_ms >= store_gc_lease_ttl_ms() - store_clock_margin_ms())
        return store_errf(e, -ESTALE, "%s: this gc lost its lease (taken over or expired); it stops",
                          s->be->where);
    store_gc_lease next = *mine;
    if ((rc = lease_put(s, &next, e))) return rc;
    *mine = next;
    return 0;
}

int store_gc_lease_release(store_t *s, const store_gc_lease *mine, store_err *e)
{
    store_gc_lease cur;
    int exists = 0;
    int rc = lease_get(s, &cur, &exists, 0, e);
    if (rc || !exists || cur.nonce != mine->nonce) return rc;
    return s->be->ops->del(s->be, LEASE_NAME, e);
}

/* ---- fossil and deletion records ------------------------------------------------------ */

static const char *prefix_of(int kind) { return kind == STORE_GC_FOSSILS ? FOSSIL_PREFIX : DELETED_PREFIX; }

static int hex_array(json_t *a, uint64_t **out, size_t *n)
{
    if (!json_is_array(a)) return -1;
    size_t k = json_array_size(a);
    uint64_t *v = malloc((k ? k : 1) * sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < k; i++) {
        const char *t = json_string_value(json_array_get(a, i));
        char *end;
        if (!t || strlen(t) != 16 || (v[i] = strtoull(t, &end, 16), *end)) {
            free(v);
            return -1;
        }
    }
    *out = v;
    *n = k;
    return 0;
}

int store_gc_record_ripe(const store_gc_record *r, int64_t bucket_now_ms, int64_t wait_ms)
{
    return bucket_now_ms - (r->mtime_ms + BACKEND_MTIME_SLACK_MS) >= wait_ms;
}

/* Older records carry "boot" and "boot_ms" too (the writer's boot clock, judged before the
 * bucket's clock was): ignored. */
static int record_parse(const char *name, int64_t mtime_ms, const uint8_t *buf, size_t len, store_gc_record *r,
                        store_err *e)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)buf, len, 0, &je);
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->mtime_ms = mtime_ms;
    json_t *at = j ? json_object_get(j, "at_ms") : NULL;
    int bad = !j || !json_is_integer(at);
    if (!bad) r->at_ms = json_integer_value(at);
    if (!bad && hex_array(json_object_get(j, "packs"), &r->packs, &r->npacks)) bad = 1;
    if (!bad && hex_array(json_object_get(j, "moved"), &r->moved, &r->nmoved)) bad = 1;
    json_decref(j);
    if (bad) {
        free(r->packs);
        free(r->moved);
        r->packs = r->moved = NULL;
        return store_errf(e, -EBADMSG, "%s: gc record %s is damaged", name, name);
    }
    return 0;
}

/* A record's bytes. Deletion records (they stay) are kept in DIR/cache/ and read from
 * there; fossil records are few and go away at the next epoch, so they are always fetched. */
static int record_bytes(store_t *s, int kind, const char *name, uint8_t **buf, size_t *len, store_err *e)
{
    if (kind == STORE_GC_FOSSILS) return s->be->ops->get_all(s->be, name, buf, len, e);
    char flat[160];
    snprintf(flat, sizeof flat, "cache/%s", name);
    for (char *p = flat + 6; *p; p++)
        if (*p == '/') *p = '_';
    char *path = util_path(s->dir, flat);
    if (!path) return store_errf(e, -ENOMEM, "out of memory");
    if (util_read_file(path, buf, len) == 0) {
        free(path);
        return 0;
    }
    int rc = s->be->ops->get_all(s->be, name, buf, len, e);
    if (!rc) remote_keep_copy(s, flat, *buf, *len);
    free(path);
    return rc;
}

int store_gc_records(store_t *s, int kind, store_gc_record **out, size_t *n, store_err *e)
{
    *out = NULL;
    *n = 0;
    if (!s->be->remote) return 0;
    remote_objs l = {0};
    int rc = remote_list(s, prefix_of(kind), NULL, &l, e);
    store_gc_record *v = rc ? NULL : calloc(l.n ? l.n : 1, sizeof *v);
    if (!rc && !v) rc = store_errf(e, -ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = record_bytes(s, kind, l.v[i].name, &buf, &len, e);
        if (rc == -ENOENT) {          /* removed since the listing (an epoch that finished) */
            rc = 0;
            continue;
        }
        if (!rc && !(rc = record_parse(l.v[i].name, l.v[i].mtime_ms, buf, len, &v[k], e))) k++;
        free(buf);
    }
    remote_objs_free(&l);
    if (rc) {
        store_gc_records_free(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

void store_gc_records_free(store_gc_record *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].packs);
        free(v[i].moved);
    }
    free(v);
}

static json_t *hex_json(const uint64_t *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        char h[17];
        snprintf(h, sizeof h, "%016llx", (unsigned long long)v[i]);
        if (json_array_append_new(a, json_string(h))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

int store_gc_record_put(store_t *s, int kind, const uint64_t *packs, size_t npacks, const uint64_t *moved,
                        size_t nmoved, int64_t *at_ms, store_err *e)
{
    if (!s->be->remote) return store_errf(e, -EINVAL, "gc records are for a store on S3");
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) return store_errf(e, -EIO, "getrandom failed");
    /* The record counts from its Last-Modified (the bucket's clock, during the PUT); a PUT
     * slower than half the clock margin is made again, so a writer whose listing just
     * missed it did not list it more than that after the time it counts from. at_ms (this
     * node's clock) only names it and tells a reader when. */
    for (int attempt = 0; attempt < 4; attempt++) {
        int64_t t = store_now_ms(), m0 = store_mono_ms();
        char name[96];
        snprintf(name, sizeof name, "%s%013lld-%06x-%08x.json", prefix_of(kind), (long long)t, s->node, r);
        json_t *j = json_object();
        json_t *pa = hex_json(packs, npacks), *ma = hex_json(moved, nmoved);
        int bad = !j || !pa || !ma || json_object_set_new(j, "at_ms", json_integer(t)) ||
                  json_object_set_new(j, "packs", pa) || json_object_set_new(j, "moved", ma);
        if (bad) {
            if (!j || !pa) json_decref(pa);
            if (!j || !ma) json_decref(ma);
            json_decref(j);
            return store_errf(e, -ENOMEM, "out of memory");
        }
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!text) return store_errf(e, -ENOMEM, "out of memory");
        int rc = s->be->ops->put(s->be, name, text, strlen(text), e);
        free(text);
        if (rc) return rc;
        if (store_mono_ms() - m0 <= store_clock_margin_ms() / 2) {
            *at_ms = t;
            return 0;
        }
        store_err de;
        if ((rc = s->be->ops->del(s->be, name, &de))) return store_errf(e, rc, "%s", de.msg);
    }
    return store_errf(e, -ETIMEDOUT, "%s: writing a gc record took longer than the clock margin every time",
                      s->be->where);
}

int store_gc_record_del(store_t *s, const char *name, store_err *e)
{
    if (strncmp(name, "gc/", 3)) return store_errf(e, -EINVAL, "'%s' is not a gc record", name);
    return s->be->ops->del(s->be, name, e);
}
