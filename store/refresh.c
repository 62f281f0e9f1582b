/* The incremental refresh of a node over a bucket (store.h, "refresh"; docs/s3.md).
 *
 * What the index remembers between refreshes (default family):
 *   refresh:ms        when the last refresh (or rebuild) started listing manifests, on the
 *                     bucket's clock (store_bucket_now: a fresh PUT's Last-Modified)
 *   rpack:%016x       a pack of another node whose footer is in the index
 *   rhi:%06x          the highest pack number of that node read so far
 * Why listing from there is enough:
 *   - Manifest keys are "manifests/ID.cmf" and ids start with 12 hex digits of the writer's
 *     clock at its commit, never below the bucket's clock as that writer last read it (at
 *     its open's refresh) plus the time since by its monotonic clock (commit.c), so the
 *     listing starts after "manifests/<refresh:ms - MARGIN>" whatever the nodes' wall
 *     clocks say (docs/s3.md, "Whose clock"). A manifest is PUT within seconds of its id
 *     being taken (retries included); MARGIN covers that with room to spare.
 *   - Pack keys are "packs/<node tag><counter>" and a node numbers its packs upwards; they
 *     are uploaded a few at a time, so one may land after a higher one: the listing starts
 *     PACK_WINDOW numbers below the highest read, and rpack: keys skip the ones known.
 *   - Manifests are listed before packs: every pack a listed manifest needs was uploaded
 *     before that manifest, so before the pack listing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

#define MARGIN_MS (10LL * 60 * 1000)
#define PACK_WINDOW 64
#define KEY_MS "refresh:ms"

typedef struct {
    store_footer *v;
    size_t n, cap;
    int nomem;
} pack_todo;

static int push_pack(pack_todo *t, uint64_t p, uint64_t size)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? 2 * t->cap : 64;
        store_footer *nv = realloc(t->v, nc * sizeof *nv);
        if (!nv) return t->nomem = 1;
        t->v = nv;
        t->cap = nc;
    }
    t->v[t->n++] = (store_footer){.pack = p, .size = size};
    return 0;
}

static int known(store_t *s, int cf, const char *key, size_t klen, int *yes, store_err *e)
{
    char *v = NULL;
    size_t vl = 0;
    int rc = index_get(s, cf, key, klen, &v, &vl, e);
    rocksdb_free(v);
    *yes = rc == 0;
    return rc == -ENOENT ? 0 : rc;
}

static void put_u64(rocksdb_writebatch_t *b, const char *key, uint64_t v)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    rocksdb_writebatch_put(b, key, strlen(key), num, (size_t)n);
}

static void mark_pack(rocksdb_writebatch_t *b, uint64_t pack)
{
    char key[32];
    int n = snprintf(key, sizeof key, "rpack:%016llx", (unsigned long long)pack);
    rocksdb_writebatch_put(b, key, (size_t)n, "", 0);
}

static void hi_key(uint32_t tag, char key[32])
{
    snprintf(key, 32, "rhi:%06x", tag);
}

/* One new pack: its chunks the index lacks go in (a chunk may already be known from a pack
 * of this node: that location stays, it may be in the local cache). */
static int index_pack(store_t *s, store_footer *f, uint64_t *chunks, store_err *e)
{
    uint8_t *found = malloc(f->nchunks ? f->nchunks : 1);
    if (!found) return store_errf(e, -ENOMEM, "out of memory");
    int rc = store_lookup(s, f->ids, f->nchunks, found, NULL, e);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    uint64_t added = 0;
    for (uint32_t g = 0; !rc && g < f->ngroups; g++)
        for (unsigned k = 0; k < f->groups[g].npages; k++) {
            uint32_t i = f->groups[g].first + k;
            if (found[i]) continue;
            found[i] = 1;   /* twice in one pack: once */
            store_loc l = {.pack = f->pack, .offset = f->groups[g].offset, .clen = f->groups[g].clen,
                           .npages = f->groups[g].npages, .slot = (uint16_t)k};
            uint8_t v[40];
            size_t vl;
            index_encode_loc(&l, v, &vl);
            rocksdb_writebatch_put_cf(b, s->cf[CF_CHUNKS], (const char *)f->ids[i].b, 16, (const char *)v, vl);
            added++;
        }
    free(found);
    uint64_t total = 0;
    if (!rc) rc = index_get_counter(s, "chunks", &total, e);
    if (!rc) {
        put_u64(b, "chunks", total + added);
        mark_pack(b, f->pack);
        uint64_t hi = 0;
        char key[32];
        hi_key((uint32_t)(f->pack >> NODE_SHIFT), key);
        rc = index_get_u64(s, key, &hi, e);
        if (rc == -ENOENT) rc = 0;
        if (!rc && f->pack > hi) put_u64(b, key, f->pack);
    }
    if (!rc) rc = index_write(s, b, 0, e);
    rocksdb_writebatch_destroy(b);
    if (!rc) *chunks += added;
    return rc;
}

static void footers_free(pack_todo *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].groups);
        free(t->v[i].ids);
    }
    free(t->v);
}

/* The packs of node tag this node has not read, from PACK_WINDOW below the highest read. */
static int list_new_packs(store_t *s, uint32_t tag, pack_todo *t, store_refresh_stats *st, store_err *e)
{
    char key[32], prefix[32], after[48] = "";
    hi_key(tag, key);
    uint64_t hi = 0;
    int rc = index_get_u64(s, key, &hi, e);
    if (rc && rc != -ENOENT) return rc;
    if (!rc) {
        uint64_t lo = (uint64_t)tag << NODE_SHIFT, from = hi - lo > PACK_WINDOW ? hi - PACK_WINDOW : lo;
        snprintf(after, sizeof after, "packs/%016llx.pack", (unsigned long long)from);
    }
    snprintf(prefix, sizeof prefix, "packs/%06x", tag);
    uint64_t *packs = NULL, *sizes = NULL;
    size_t np = 0;
    rc = remote_list_packs(s, prefix, after[0] ? after : NULL, &packs, &sizes, &np, e);
    st->requests++;
    for (size_t i = 0; !rc && i < np; i++) {
        char pk[32];
        int n = snprintf(pk, sizeof pk, "rpack:%016llx", (unsigned long long)packs[i]);
        int yes = 0;
        if ((rc = known(s, CF_DEFAULT, pk, (size_t)n, &yes, e)) || yes) continue;
        if (push_pack(t, packs[i], sizes[i])) rc = store_errf(e, -ENOMEM, "out of memory");
    }
    free(packs);
    free(sizes);
    return rc;
}

/* A new snapshot's manifest (kept in the folder too). A damaged one is reported and left out (*out NULL), as a rebuild does; one deleted since
 * the listing is skipped. */
static int load_new(store_t *s, const char *id, store_snapshot **out, store_report_fn report, void *arg,
                    store_err *e)
{
    int damaged = 0;
    store_err le;
    int rc = manifest_load(s, id, out, &damaged, &le);
    if (rc == -ENOENT) return 0;                     /* dropped since the listing */
    if (rc && damaged) {
        util_reportf(report, arg, 1, "%s (left out of the index)", le.msg);
        return 0;
    }
    return rc ? store_errf(e, rc, "%s", le.msg) : 0;
}

int store_refresh(store_t *s, store_report_fn report, void *arg, store_err *e)
{
    if (!s->be->remote) return 0;
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "a refresh needs the store opened for writing");
    store_refresh_stats st = {0};
    int64_t t0 = 0, m0 = store_mono_ms();
    int rc = store_bucket_now(s, &t0, e);
    st.requests += 2;
    uint64_t last = 0;
    if (!rc) rc = index_get_u64(s, KEY_MS, &last, e);
    if (rc == -ENOENT) rc = 0;
    if (rc) return rc;

    /* 1. Manifests (before packs: see the top of this file), the new ones read. */
    remote_ids ids = {0};
    char after[48] = "";
    if (last > (uint64_t)MARGIN_MS)
        snprintf(after, sizeof after, "manifests/%012llx", (unsigned long long)(last - (uint64_t)MARGIN_MS));
    remote_objs objs = {0};
    rc = remote_list(s, "manifests/", after[0] ? after : NULL, &objs, e);
    st.requests++;
    for (size_t i = 0; !rc && i < objs.n; i++) {
        char id[STORE_SNAPID_LEN];
        if (remote_manifest_id(objs.v[i].name, id) && remote_ids_push(&ids, id))
            rc = store_errf(e, -ENOMEM, "out of memory");
    }
    remote_objs_free(&objs);
    store_snapshot **snaps = calloc(ids.n + 1, sizeof *snaps);
    if (!rc && !snaps) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < ids.n; i++) {
        int yes = 0;
        if ((rc = known(s, CF_SNAPSHOTS, ids.ids[i], 20, &yes, e)) || yes) continue;
        st.requests++;
        rc = load_new(s, ids.ids[i], &snaps[i], report, arg, e);
    }

    /* 2. Every other node's new packs (nodes/ lists them: writers, and gc, whose rewritten
     * packs no manifest names): footers in parallel, then into the index one by one (a
     * chunk in two new packs counted once). One LIST per node: docs/scale.md says where
     * that stops scaling. */
    if (!rc) rc = remote_list(s, "nodes/", NULL, &objs, e);
    st.requests++;
    pack_todo t = {0};
    for (size_t i = 0; !rc && i < objs.n; i++) {
        const char *name = objs.v[i].name;
        char *end;
        if (strlen(name) != 12) continue;              /* nodes/TAG: 6 hex digits */
        unsigned long tag = strtoul(name + 6, &end, 16);
        if (!*end && tag && tag != s->node) rc = list_new_packs(s, (uint32_t)tag, &t, &st, e);
    }
    remote_objs_free(&objs);
    if (!rc && t.n) {
        store_pack_footers(s, t.v, t.n);
        st.requests += 3 * t.n;
    }
    for (size_t i = 0; !rc && i < t.n; i++) {
        store_footer *f = &t.v[i];
        if (f->rc == -ENOENT) continue;   /* deleted since the listing */
        if (f->rc == -EBADMSG) {
            util_reportf(report, arg, 1, "%s (left out of the index)", f->e.msg);
            continue;
        }
        if (f->rc) rc = store_errf(e, f->rc, "%s", f->e.msg);
        else if (!(rc = index_pack(s, f, &st.chunks, e))) st.packs++;
    }
    footers_free(&t);

    /* 3. The new snapshots' records. */
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    for (size_t m = 0; !rc && m < ids.n; m++) {
        if (!snaps[m]) continue;
        rc = index_put_snapshot(s, b, snaps[m], e);   /* reads counters: one batch each */
        if (!rc) rc = index_write(s, b, 0, e);
        rocksdb_writebatch_clear(b);
        if (!rc) st.snapshots++;
    }
    for (size_t m = 0; snaps && m < ids.n; m++) store_snapshot_free(snaps[m]);
    free(snaps);
    if (!rc) {
        put_u64(b, KEY_MS, (uint64_t)t0);
        rc = index_write(s, b, 1, e);
    }
    rocksdb_writebatch_destroy(b);
    free(ids.ids);
    /* Entries into packs another node's gc deleted (gone.c). */
    if (!rc) rc = gone_apply_index(s, e);
    if (rc) return rc;
    st.ms = store_mono_ms() - m0;
    s->refreshed.snapshots += st.snapshots;
    s->refreshed.packs += st.packs;
    s->refreshed.chunks += st.chunks;
    s->refreshed.requests += st.requests;
    s->refreshed.ms += st.ms;
    s->refreshed.runs++;
    return 0;
}

void store_refresh_totals(const store_t *s, store_refresh_stats *out)
{
    *out = s->refreshed;
}

int refresh_mark_rebuilt(store_t *s, rocksdb_writebatch_t *b, const pack_list *pl, int64_t t0, store_err *e)
{
    (void)e;
    if (!s->be->remote) return 0;
    for (size_t i = 0; i < pl->n; i++) {
        uint64_t p = pl->v[i].pack;
        if (p >> NODE_SHIFT == s->node) continue;
        mark_pack(b, p);
        /* pl is sorted: the last pack of a node is its highest. */
        if (i + 1 == pl->n || pl->v[i + 1].pack >> NODE_SHIFT != p >> NODE_SHIFT) {
            char key[32];
            hi_key((uint32_t)(p >> NODE_SHIFT), key);
            put_u64(b, key, p);
        }
    }
    put_u64(b, KEY_MS, (uint64_t)t0);
    return 0;
}
