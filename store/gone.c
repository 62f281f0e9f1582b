/* Packs another node's gc deleted, as one node sees them (docs/s3.md, "gc across nodes").
 *
 * A node's index may name a pack gc has since deleted (its copy of a rewritten pack, or a
 * fossil nobody resurrected). The node notices from the bucket's deletion records (listed
 * at the first lookup of a handle) or from a 404 on a read, and then, per handle:
 *   - lookups of chunks whose entry is in a deleted pack are answered from the packs that
 *     received the deleted packs' live chunks (the records name them; their footers are
 *     read once), else from a scan of every pack footer in the bucket (once per handle);
 *   - a writer never deduplicates against a deleted pack, nor against a pack that was a
 *     fossil when it opened (gone_writer_*): such a chunk is written again.
 * Nothing is written to the index here: the view lives in the handle (a reader cannot
 * write the index), and costs one LIST per handle when nothing was deleted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"

typedef struct {
    store_id id;
    store_loc loc;
} moved_slot;

struct gone_view {
    int loaded, scanned;
    u64vec gone;               /* deleted packs, sorted */
    u64vec read;               /* packs whose footers are in `where`, sorted */
    store_gc_record *recs;     /* deletion records */
    size_t nrecs;
    moved_slot *slot;          /* id -> where it lives now; open addressing */
    size_t cap, n;
};

/* ---- small sorted sets of pack numbers ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int u64vec_has(const u64vec *v, uint64_t x)
{
    return v->n && bsearch(&x, v->v, v->n, sizeof x, cmp_u64) != NULL;
}

int u64vec_add(u64vec *v, const uint64_t *x, size_t n)
{
    /* Nothing to add may come as (NULL, 0), and so may an empty v: memcpy of NULL is
     * undefined even for 0 bytes (UBSan, every S3 ingest with no deletion records). */
    if (n == 0) return 0;
    if (v->n + n > v->cap) {
        size_t nc = (v->n + n) * 2;
        uint64_t *nv = realloc(v->v, nc * sizeof *nv);
        if (!nv) return -ENOMEM;
        v->v = nv;
        v->cap = nc;
    }
    memcpy(v->v + v->n, x, n * sizeof *x);
    v->n += n;
    qsort(v->v, v->n, sizeof *v->v, cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < v->n; i++)
        if (!k || v->v[k - 1] != v->v[i]) v->v[k++] = v->v[i];
    v->n = k;
    return 0;
}

void u64vec_free(u64vec *v)
{
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* ---- the id -> location map ---- */

static size_t mslot(const store_id *id, size_t mask)
{
    uint64_t h;
    memcpy(&h, id->b, 8);
    return (size_t)h & mask;
}

static moved_slot *where_find(struct gone_view *g, const store_id *id)
{
    if (!g->cap) return NULL;
    for (size_t i = mslot(id, g->cap - 1);; i = (i + 1) & (g->cap - 1)) {
        if (store_id_is_zero(&g->slot[i].id)) return NULL;
        if (!memcmp(&g->slot[i].id, id, 16)) return &g->slot[i];
    }
}

static int where_put(struct gone_view *g, const store_id *id, const store_loc *loc)
{
    if (store_id_is_zero(id) || where_find(g, id)) return 0;
    if ((g->n + 1) * 2 > g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 4096;
        moved_slot *ns = calloc(nc, sizeof *ns);
        if (!ns) return -ENOMEM;
        for (size_t i = 0; i < g->cap; i++) {
            if (store_id_is_zero(&g->slot[i].id)) continue;
            size_t j = mslot(&g->slot[i].id, nc - 1);
            while (!store_id_is_zero(&ns[j].id)) j = (j + 1) & (nc - 1);
            ns[j] = g->slot[i];
        }
        free(g->slot);
        g->slot = ns;
        g->cap = nc;
    }
    size_t i = mslot(id, g->cap - 1);
    while (!store_id_is_zero(&g->slot[i].id)) i = (i + 1) & (g->cap - 1);
    g->slot[i] = (moved_slot){.id = *id, .loc = *loc};
    g->n++;
    return 0;
}

void gone_free(store_t *s)
{
    struct gone_view *g = s->gone;
    if (!g) return;
    u64vec_free(&g->gone);
    u64vec_free(&g->read);
    store_gc_records_free(g->recs, g->nrecs);
    free(g->slot);
    free(g);
    s->gone = NULL;
}

/* (Re)reads the deletion records. Under gone_mu. */
static int load_records(store_t *s, store_err *e)
{
    struct gone_view *g = s->gone;
    store_gc_record *v = NULL;
    size_t n = 0;
    int rc = store_gc_records(s, STORE_GC_DELETED, &v, &n, e);
    if (rc) return rc;
    store_gc_records_free(g->recs, g->nrecs);
    g->recs = v;
    g->nrecs = n;
    for (size_t i = 0; !rc && i < n; i++)
        if (u64vec_add(&g->gone, v[i].packs, v[i].npacks)) rc = store_errf(e, -ENOMEM, "out of memory");
    g->loaded = 1;
    return rc;
}

static int ensure(store_t *s, store_err *e)
{
    if (!s->gone && !(s->gone = calloc(1, sizeof *s->gone))) return store_errf(e, -ENOMEM, "out of memory");
    return s->gone->loaded ? 0 : load_records(s, e);
}

/* Footers of packs into `where` (the packs not read yet and not deleted). */
static int read_footers(store_t *s, const uint64_t *packs, const uint64_t *sizes, size_t n, store_err *e)
{
    struct gone_view *g = s->gone;
    store_footer *v = calloc(n ? n : 1, sizeof *v);
    if (!v) return store_errf(e, -ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!u64vec_has(&g->read, packs[i]) && !u64vec_has(&g->gone, packs[i]))
            v[k++] = (store_footer){.pack = packs[i], .size = sizes ? sizes[i] : UINT64_MAX};
    store_pack_footers(s, v, k);
    int rc = 0;
    uint64_t *done = malloc((k ? k : 1) * sizeof *done);
    size_t nd = 0;
    if (!done) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; i < k; i++) {
        store_footer *f = &v[i];
        if (!rc && f->rc == -ENOENT) {
            /* Deleted too since (a later gc): nothing of it can be used. */
            if (u64vec_add(&g->gone, &f->pack, 1)) rc = store_errf(e, -ENOMEM, "out of memory");
        } else if (!rc && f->rc) {
            rc = store_errf(e, f->rc, "%s", f->e.msg);
        } else if (!rc) {
            for (uint32_t gi = 0; !rc && gi < f->ngroups; gi++)
                for (unsigned k2 = 0; !rc && k2 < f->groups[gi].npages; k2++) {
                    store_loc l = {.pack = f->pack, .offset = f->groups[gi].offset, .clen = f->groups[gi].clen,
                                   .npages = f->groups[gi].npages, .slot = (uint16_t)k2};
                    if (where_put(g, &f->ids[f->groups[gi].first + k2], &l)) rc = store_errf(e, -ENOMEM, "out of memory");
                }
            if (!rc) done[nd++] = f->pack;
        }
        free(f->groups);
        free(f->ids);
    }
    /* One sorted insert for all of them (a scan of a whole bucket adds thousands). */
    if (!rc && u64vec_add(&g->read, done, nd)) rc = store_errf(e, -ENOMEM, "out of memory");
    free(done);
    free(v);
    return rc;
}

/* Where the live chunks of deleted packs went, by the records' word. */
static int read_moved(store_t *s, store_err *e)
{
    struct gone_view *g = s->gone;
    int rc = 0;
    for (size_t i = 0; !rc && i < g->nrecs; i++)
        if (g->recs[i].nmoved) rc = read_footers(s, g->recs[i].moved, NULL, g->recs[i].nmoved, e);
    return rc;
}

/* Every pack of the bucket: for a chunk the records do not place (a fossil's chunk that a
 * writer deduplicated elsewhere). Once per handle. */
static int scan_all(store_t *s, store_err *e)
{
    uint64_t *packs = NULL, *sizes = NULL;
    size_t n = 0;
    int rc = remote_list_packs(s, NULL, NULL, &packs, &sizes, &n, e);
    if (!rc) rc = read_footers(s, packs, sizes, n, e);
    free(packs);
    free(sizes);
    if (!rc) s->gone->scanned = 1;
    return rc;
}

static int local_copy(store_t *s, uint64_t pack)
{
    char *p = pack_path(s, pack, 0);
    int yes = p && access(p, R_OK) == 0;
    free(p);
    return yes;
}

int gone_fix_lookup(store_t *s, const store_id *ids, size_t n, uint8_t *found, store_loc *locs, store_err *e)
{
    pthread_mutex_lock(&s->gone_mu);
    int rc = ensure(s, e);
    struct gone_view *g = s->gone;
    int moved_read = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        if (!found[i] || !u64vec_has(&g->gone, locs[i].pack)) continue;
        moved_slot *m = where_find(g, &ids[i]);
        if (!m && !moved_read) {
            moved_read = 1;
            rc = read_moved(s, e);
            m = rc ? NULL : where_find(g, &ids[i]);
        }
        if (!rc && !m && !g->scanned && !local_copy(s, locs[i].pack)) {
            rc = scan_all(s, e);
            m = rc ? NULL : where_find(g, &ids[i]);
        }
        if (m) locs[i] = m->loc;
        else if (!local_copy(s, locs[i].pack)) found[i] = 0;   /* no copy left anywhere we know */
    }
    pthread_mutex_unlock(&s->gone_mu);
    return rc;
}

int gone_active(store_t *s, store_err *e)
{
    pthread_mutex_lock(&s->gone_mu);
    int rc = ensure(s, e);
    if (!rc) rc = s->gone->gone.n > 0;
    pthread_mutex_unlock(&s->gone_mu);
    return rc;
}

int gone_pack_missing(store_t *s, uint64_t pack, store_err *e)
{
    pthread_mutex_lock(&s->gone_mu);
    int rc = ensure(s, e);
    /* The records are read again (the deletion may be newer than this handle), and the
     * pack counts as gone whatever they say: the bucket answered 404. */
    if (!rc && s->gone->loaded) rc = load_records(s, e);
    if (!rc && u64vec_add(&s->gone->gone, &pack, 1)) rc = store_errf(e, -ENOMEM, "out of memory");
    pthread_mutex_unlock(&s->gone_mu);
    return rc;
}

int gone_is_gone(store_t *s, uint64_t pack)
{
    pthread_mutex_lock(&s->gone_mu);
    int yes = s->gone && u64vec_has(&s->gone->gone, pack);
    pthread_mutex_unlock(&s->gone_mu);
    return yes;
}

/* ---- writers ---------------------------------------------------------------------------- */

int gone_writer_open(store_writer *w, store_err *e)
{
    store_t *s = w->s;
    /* The clock starts before the fossils are listed: a fossil this listing misses was
     * recorded after it began, so gc deletes it only after this writer's bound ran out. */
    w->opened_mono_ms = store_mono_ms();
    store_gc_record *v = NULL;
    size_t n = 0;
    int rc = store_gc_records(s, STORE_GC_FOSSILS, &v, &n, e);
    for (size_t i = 0; !rc && i < n; i++)
        if (u64vec_add(&w->avoid, v[i].packs, v[i].npacks)) rc = store_errf(e, -ENOMEM, "out of memory");
    w->fossils_pending = n > 0;
    store_gc_records_free(v, n);
    /* Deletion records after the fossils: a record removed between the two listings had its
     * deletion record written first. Re-read, so a long-lived handle learns of new ones. */
    pthread_mutex_lock(&s->gone_mu);
    if (!rc) rc = ensure(s, e);
    if (!rc && s->gone->loaded) rc = load_records(s, e);
    if (!rc && u64vec_add(&w->avoid, s->gone->gone.v, s->gone->gone.n)) rc = store_errf(e, -ENOMEM, "out of memory");
    pthread_mutex_unlock(&s->gone_mu);
    return rc;
}

int gone_writer_in_time(const store_writer *w, store_err *e)
{
    int64_t took = store_mono_ms() - w->opened_mono_ms, bound = store_commit_bound_ms();
    if (took <= bound) return 0;
    return store_errf(e, -ETIMEDOUT, "%s: the snapshot took %lld ms from start to its commit point, past the "
                      "bound of %lld ms that gc across nodes relies on (docs/s3.md); it is not acknowledged: "
                      "take it again", w->s->be->where, (long long)took, (long long)bound);
}

int store_writer_lookup(store_writer *w, const store_id *ids, size_t n, uint8_t *found, store_loc *locs,
                        store_err *e)
{
    store_t *s = w->s;
    if (!s->be->remote || (!w->avoid.n)) return store_lookup(s, ids, n, found, locs, e);
    store_loc *own = NULL;
    if (!locs && n && !(locs = own = malloc(n * sizeof *own))) return store_errf(e, -ENOMEM, "out of memory");
    int rc = store_lookup(s, ids, n, found, locs, e);
    for (size_t i = 0; !rc && i < n; i++)
        if (found[i] && u64vec_has(&w->avoid, locs[i].pack)) found[i] = 0;   /* stored again */
    free(own);
    return rc;
}


int store_writer_may_reuse(store_writer *w, const char *id, int deleter, store_err *e)
{
    store_t *s = w->s;
    if (!s->be->remote) return 1;
    /* A fossil listed at the open may be deleted while this writer runs (by a gc that has
     * not seen this writer's manifest); only the lease holder itself is exempt. */
    if (w->fossils_pending && !deleter) return 0;
    if (store_snapid_valid(id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", id);
    /* The local copy of a manifest outlives a drop by another node: ask the bucket. A
     * manifest there after this writer's open keeps every chunk it names until the
     * writer's bound runs out. */
    char name[64];
    snprintf(name, sizeof name, "manifests/%s.cmf", id);
    remote_objs l;
    int rc = remote_list(s, name, NULL, &l, e);
    if (rc) return rc;
    int there = remote_objs_find(&l, name) != NULL;
    remote_objs_free(&l);
    return there;
}

/* ---- the index catches up (at a refresh) --------------------------------------------- */

#define APPLIED_KEY "gcapplied:"

static int applied(store_t *s, const char *name, int *yes, store_err *e)
{
    char key[160];
    int n = snprintf(key, sizeof key, APPLIED_KEY "%s", name);
    char *v = NULL;
    size_t vl = 0;
    int rc = index_get(s, CF_DEFAULT, key, (size_t)n, &v, &vl, e);
    rocksdb_free(v);
    *yes = rc == 0;
    return rc == -ENOENT ? 0 : rc;
}

int gone_apply_index(store_t *s, store_err *e)
{
    if (!s->be->remote || s->mode != STORE_WRITE) return 0;
    pthread_mutex_lock(&s->gone_mu);
    int rc = ensure(s, e);
    struct gone_view *g = s->gone;
    if (!rc) rc = load_records(s, e);
    /* The packs of the records this index has not applied yet. */
    u64vec dead = {0};
    size_t fresh = 0;
    for (size_t i = 0; !rc && i < g->nrecs; i++) {
        int yes = 0;
        if ((rc = applied(s, g->recs[i].name, &yes, e)) || yes) continue;
        fresh++;
        if (u64vec_add(&dead, g->recs[i].packs, g->recs[i].npacks)) rc = store_errf(e, -ENOMEM, "out of memory");
    }
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    uint64_t dropped = 0;
    if (!rc && dead.n) {
        /* Entries into those packs are found by a pass over the chunk family (the index is
         * keyed by chunk, not by pack): once per new deletion record batch. */
        store_id *ids = NULL;
        size_t n = 0, cap = 0;
        rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_CHUNKS]);
        for (rocksdb_iter_seek_to_first(it); !rc && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
            size_t kl, vl;
            const char *k = rocksdb_iter_key(it, &kl);
            const char *v = rocksdb_iter_value(it, &vl);
            store_loc l;
            if (kl != 16 || index_decode_loc((const uint8_t *)v, vl, &l) || !u64vec_has(&dead, l.pack)) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                store_id *nv = realloc(ids, cap * sizeof *nv);
                if (!nv) {
                    rc = store_errf(e, -ENOMEM, "out of memory");
                    break;
                }
                ids = nv;
            }
            memcpy(ids[n++].b, k, 16);
        }
        if (!rc) rc = index_iter_status(it, e, "finding chunks in packs gc deleted");
        rocksdb_iter_destroy(it);
        int moved_read = 0;
        for (size_t i = 0; !rc && i < n; i++) {
            moved_slot *m = where_find(g, &ids[i]);
            if (!m && !moved_read) {
                moved_read = 1;
                rc = read_moved(s, e);
                m = rc ? NULL : where_find(g, &ids[i]);
            }
            if (rc) break;
            /* The record names every pack that keeps a live chunk of the packs it deleted
             * (gc/fossil.c): a chunk found in none of them is dead. */
            if (m) {
                uint8_t v[40];
                size_t vl;
                index_encode_loc(&m->loc, v, &vl);
                rocksdb_writebatch_put_cf(b, s->cf[CF_CHUNKS], (const char *)ids[i].b, 16, (const char *)v, vl);
            } else {
                /* No copy anywhere: a dead chunk; the entry would only mislead dedup. */
                rocksdb_writebatch_delete_cf(b, s->cf[CF_CHUNKS], (const char *)ids[i].b, 16);
                dropped++;
            }
        }
        free(ids);
    }
    if (!rc && dropped) {
        uint64_t chunks = 0;
        if (!(rc = index_get_counter(s, "chunks", &chunks, e))) {
            char num[32];
            int nl = snprintf(num, sizeof num, "%llu", (unsigned long long)(chunks > dropped ? chunks - dropped : 0));
            rocksdb_writebatch_put(b, "chunks", 6, num, (size_t)nl);
        }
    }
    for (size_t i = 0; !rc && fresh && i < g->nrecs; i++) {
        char key[160];
        int kn = snprintf(key, sizeof key, APPLIED_KEY "%s", g->recs[i].name);
        rocksdb_writebatch_put(b, key, (size_t)kn, "", 0);
    }
    if (!rc && fresh) rc = index_write(s, b, 1, e);
    rocksdb_writebatch_destroy(b);
    u64vec_free(&dead);
    pthread_mutex_unlock(&s->gone_mu);
    return rc;
}
