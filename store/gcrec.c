/* The objects of gc across the nodes of a bucket (store/maint.h, "gc across nodes";
 * docs/s3.md): the lease gc/lease, fossil records gc/fossils/…, deletion records
 * gc/deleted/…. This file is their one encoder and parser.
 *
 *   gc/lease                     node=%06x expires_ms=… nonce=%016llx (one per line)
 *   gc/fossils/<13 ms>-<node>-<rand>.json  {"at_ms":…, "boot":"…", "boot_ms":…,
 *                                "packs":["%016llx",…], "moved":["%016llx",…]}: the wall
 *                                clock, the boot id and CLOCK_BOOTTIME of the writer (boot
 *                                fields absent in older records), packs made fossils, and the packs
 *                                that hold the live chunks of the rewritten ones
 *   gc/deleted/<13 ms>-<node>-<rand>.json  the same shape: packs deleted (written before they
 *                                are deleted), and where their live chunks went
 * Records never change once written (unique names), so nodes keep copies of what they read
 * in DIR/cache/ and fetch each one once. */
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

/* ---- the lease ------------------------------------------------------------------------ */

static int lease_parse(const uint8_t *buf, size_t len, store_gc_lease *l)
{
    char text[256];
    if (len >= sizeof text) return -1;
    memcpy(text, buf, len);
    text[len] = 0;
    unsigned node = 0;
    long long exp = 0;
    unsigned long long nonce = 0;
    if (sscanf(text, "node=%x\nexpires_ms=%lld\nnonce=%llx", &node, &exp, &nonce) != 3) return -1;
    *l = (store_gc_lease){.node = node, .expires_ms = exp, .nonce = nonce};
    return 0;
}

static int lease_get(store_t *s, store_gc_lease *l, int *exists, store_err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = s->be->ops->get_all(s->be, LEASE_NAME, &buf, &len, e);
    *exists = 0;
    if (rc == -ENOENT) return 0;
    if (rc) return rc;
    if (lease_parse(buf, len, l)) rc = store_errf(e, -EBADMSG, "%s: %s is not a gc lease", s->be->where, LEASE_NAME);
    else *exists = 1;
    free(buf);
    return rc;
}

static int lease_put(store_t *s, const store_gc_lease *l, store_err *e)
{
    char text[128];
    int n = snprintf(text, sizeof text, "node=%06x\nexpires_ms=%lld\nnonce=%016llx\n", l->node,
                     (long long)l->expires_ms, (unsigned long long)l->nonce);
    return s->be->ops->put(s->be, LEASE_NAME, text, (size_t)n, e);
}

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int store_gc_lease_take(store_t *s, store_gc_lease *mine, store_gc_lease *other, store_err *e)
{
    if (!s->be->remote) return store_errf(e, -EINVAL, "a gc lease is for a store on S3");
    uint64_t ours = 0;              /* our PUT of a slow attempt: not another node's */
    for (int attempt = 0; attempt < 3; attempt++) {
        int64_t m0 = mono_ms();
        store_gc_lease cur;
        int exists = 0;
        int rc = lease_get(s, &cur, &exists, e);
        if (rc) return rc;
        if (exists && cur.nonce != ours && cur.expires_ms + store_clock_margin_ms() > store_now_ms()) {
            *other = cur;
            return store_errf(e, -EBUSY, "node %06x holds the gc lease of %s until %lld (unix ms)",
                              cur.node, s->be->where, (long long)cur.expires_ms);
        }
        if (exists && cur.nonce != ours) *other = cur;
        else if (!ours) memset(other, 0, sizeof *other);
        uint64_t nonce = 0;
        if (getrandom(&nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce) return store_errf(e, -EIO, "getrandom failed");
        *mine = (store_gc_lease){.node = s->node, .expires_ms = store_now_ms() + store_gc_lease_ttl_ms(),
                                 .nonce = nonce | 1};
        if ((rc = lease_put(s, mine, e))) return rc;
        ours = mine->nonce;
        int64_t settle = LEASE_SETTLE_MS;
        if (mono_ms() - m0 > settle / 2) continue;   /* too slow to be sure: again */
        nanosleep(&(struct timespec){settle / 1000, (settle % 1000) * 1000000L}, NULL);
        if ((rc = lease_get(s, &cur, &exists, e))) return rc;
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
    int rc = lease_get(s, &cur, &exists, e);
    if (rc) return rc;
    /* A holder that stalled past its expiry may have been replaced: it must stop. */
    if (!exists || cur.nonce != mine->nonce || cur.expires_ms <= store_now_ms() + store_clock_margin_ms())
        return store_errf(e, -ESTALE, "%s: this gc lost its lease (taken over or expired); it stops",
                          s->be->where);
    store_gc_lease next = *mine;
    next.expires_ms = store_now_ms() + store_gc_lease_ttl_ms();
    if ((rc = lease_put(s, &next, e))) return rc;
    *mine = next;
    return 0;
}

int store_gc_lease_release(store_t *s, const store_gc_lease *mine, store_err *e)
{
    store_gc_lease cur;
    int exists = 0;
    int rc = lease_get(s, &cur, &exists, e);
    if (rc || !exists || cur.nonce != mine->nonce) return rc;
    return s->be->ops->del(s->be, LEASE_NAME, e);
}

/* ---- fossil and deletion records ------------------------------------------------------ */

typedef struct {
    char **names;
    size_t n, cap;
    int nomem;
} names;

static int note_name(void *arg, const char *name, uint64_t size)
{
    (void)size;
    names *l = arg;
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 16;
        char **nv = realloc(l->names, nc * sizeof *nv);
        if (!nv) return l->nomem = 1;
        l->names = nv;
        l->cap = nc;
    }
    if (!(l->names[l->n] = strdup(name))) return l->nomem = 1;
    l->n++;
    return 0;
}

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

static int64_t boot_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_BOOTTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* This boot's id ("" when unreadable: then only the wall clock judges). */
static void boot_id(char out[40])
{
    out[0] = 0;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f) return;
    if (!fgets(out, 40, f)) out[0] = 0;
    fclose(f);
    out[strcspn(out, "\n")] = 0;
}

void store_gc_clock_now(store_gc_clock *c)
{
    boot_id(c->boot);
    c->boot_ms = boot_ms();
    c->wall_ms = store_now_ms();
}

int store_gc_record_ripe(const store_gc_record *r, const store_gc_clock *c, int64_t wait_ms)
{
    if (r->at_ms > c->wall_ms - wait_ms) return 0;
    return !r->boot[0] || strcmp(r->boot, c->boot) || r->boot_ms <= c->boot_ms - wait_ms;
}

static int record_parse(const char *name, const uint8_t *buf, size_t len, store_gc_record *r, store_err *e)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)buf, len, 0, &je);
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    json_t *at = j ? json_object_get(j, "at_ms") : NULL;
    int bad = !j || !json_is_integer(at);
    if (!bad) r->at_ms = json_integer_value(at);
    json_t *bt = j ? json_object_get(j, "boot") : NULL, *bm = j ? json_object_get(j, "boot_ms") : NULL;
    if (!bad && (bt || bm)) {
        const char *b = json_string_value(bt);
        if (!b || strlen(b) >= sizeof r->boot || !json_is_integer(bm)) bad = 1;
        else {
            snprintf(r->boot, sizeof r->boot, "%s", b);
            r->boot_ms = json_integer_value(bm);
        }
    }
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
    names l = {0};
    int rc = s->be->ops->list(s->be, prefix_of(kind), note_name, &l, e);
    if (!rc && l.nomem) rc = store_errf(e, -ENOMEM, "out of memory");
    store_gc_record *v = rc ? NULL : calloc(l.n ? l.n : 1, sizeof *v);
    if (!rc && !v) rc = store_errf(e, -ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        rc = record_bytes(s, kind, l.names[i], &buf, &len, e);
        if (rc == -ENOENT) {          /* removed since the listing (an epoch that finished) */
            rc = 0;
            continue;
        }
        if (!rc && !(rc = record_parse(l.names[i], buf, len, &v[k], e))) k++;
        free(buf);
    }
    for (size_t i = 0; i < l.n; i++) free(l.names[i]);
    free(l.names);
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
    /* The time is taken before the PUT and the record counts from it; a PUT slower than
     * the clock margin is made again with a fresh time, so a node that listed the records
     * just before this one appeared cannot be more than the margin ahead of it. */
    for (int attempt = 0; attempt < 4; attempt++) {
        store_gc_clock c;
        store_gc_clock_now(&c);
        int64_t t = c.wall_ms, m0 = mono_ms();
        char name[96];
        snprintf(name, sizeof name, "%s%013lld-%06x-%08x.json", prefix_of(kind), (long long)t, s->node, r);
        json_t *j = json_object();
        json_t *pa = hex_json(packs, npacks), *ma = hex_json(moved, nmoved);
        int bad = !j || !pa || !ma || json_object_set_new(j, "at_ms", json_integer(t)) ||
                  json_object_set_new(j, "packs", pa) || json_object_set_new(j, "moved", ma) ||
                  (c.boot[0] && (json_object_set_new(j, "boot", json_string(c.boot)) ||
                                 json_object_set_new(j, "boot_ms", json_integer(c.boot_ms))));
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
        if (mono_ms() - m0 <= store_clock_margin_ms() / 2) {
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
