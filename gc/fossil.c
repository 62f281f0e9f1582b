/* The sweep of a store on S3: two-step fossil collection under the gc lease (docs/s3.md,
 * "gc across nodes"). Other nodes ingest meanwhile and deduplicate against what their
 * indexes know, so nothing is deleted the run it is found unused:
 *
 *   epoch 2 (first, for records older than the commit bound + the clock margin): a fossil
 *     pack is deleted unless a chunk of it that a manifest names now has no copy in a pack
 *     that stays (a writer deduplicated against it before it became a fossil and committed
 *     since: resurrected, kept). The deletion record is written before the deletes, the
 *     fossil records removed after them.
 *   epoch 1: packs no fossil record names are classified as in the local sweep (no live
 *     chunk: fossil; live share under half: its live chunks copied into new packs, then
 *     fossil); one fossil record names them with the time and the new packs.
 *
 * Writers (store/gone.c) never deduplicate against a fossil recorded before they opened,
 * and commit within the bound of their open or not at all: so a fossil recorded after a
 * writer opened is deleted only after that writer's manifest is visible to epoch 2.
 * Ages are the bucket's clock (a record's Last-Modified against store_bucket_now), never a
 * node's wall clock and never --now (which only moves retention).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc/internal.h"

#define REWRITE_BELOW 0.5

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    uint64_t *v;
    size_t n, cap;
} vec;

static int vec_push(vec *v, uint64_t x)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? 2 * v->cap : 64;
        uint64_t *nv = realloc(v->v, nc * sizeof *nv);
        if (!nv) return -ENOMEM;
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = x;
    return 0;
}

static void vec_sort(vec *v)
{
    if (v->n) qsort(v->v, v->n, sizeof *v->v, cmp_u64);
}

static int vec_has(const vec *v, uint64_t x)
{
    return v->n && bsearch(&x, v->v, v->n, sizeof x, cmp_u64) != NULL;
}

/* The chunk ids every manifest in the bucket names now. */
static int mark_all(store_t *s, store_idset *live, store_err *e)
{
    size_t added;
    return gc_mark_live(s, live, NULL, NULL, 0, &added, e);
}

static void footers_free(store_footer *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i].groups);
        free(v[i].ids);
    }
    free(v);
}

/* Copies the chunks the packs marked in `rw` hold for the store (own[i][k]) into new packs
 * of this node (uploaded when sealed); *moved gets their numbers. */
static int rewrite(const char *dir, store_t *s, store_footer *fs, const uint8_t *rw, uint8_t **own, size_t nf,
                   uint64_t bytes, vec *moved, store_err *e)
{
    store_t *w0 = NULL;
    uint64_t first = 0, nnum = bytes / (32u << 20) + 8;
    int rc = store_open(dir, STORE_WRITE, &w0, e);
    if (!rc) rc = store_reserve_packs(w0, nnum, &first, e);
    store_close(w0);
    store_writer *w = NULL;
    if (!rc) rc = store_writer_open_range(s, first, nnum, &w, e);
    store_cctx *cc = store_cctx_new();
    store_dctx *dc = store_dctx_new();
    uint8_t *frame = malloc(store_group_bound(STORE_GROUP_PAGES));
    uint8_t *pages = malloc((size_t)STORE_GROUP_PAGES * STORE_PAGE);
    uint8_t *stage = malloc((size_t)STORE_GROUP_PAGES * STORE_PAGE);
    uint8_t *out = malloc(store_group_bound(STORE_GROUP_PAGES));
    store_id sids[STORE_GROUP_PAGES];
    unsigned ns = 0;
    store_idset *copied = store_idset_new();
    if (!rc && (!cc || !dc || !frame || !pages || !stage || !out || !copied)) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nf; i++) {
        if (!rw[i]) continue;
        store_footer *f = &fs[i];
        for (uint32_t g = 0; !rc && g < f->ngroups; g++) {
            store_loc l = {.pack = f->pack, .offset = f->groups[g].offset, .clen = f->groups[g].clen,
                           .npages = f->groups[g].npages};
            int want = 0;
            for (unsigned k = 0; k < l.npages; k++) want |= own[i][f->groups[g].first + k];
            if (!want) continue;
            rc = store_read_frame(s, &l, frame, store_group_bound(STORE_GROUP_PAGES), e);
            if (!rc) rc = store_group_decompress(dc, frame, l.clen, pages, l.npages, e);
            for (unsigned k = 0; !rc && k < l.npages; k++) {
                const store_id *id = &f->ids[f->groups[g].first + k];
                if (!own[i][f->groups[g].first + k] || store_idset_has(copied, id)) continue;
                store_id chk;
                store_chunk_id(s, pages + (size_t)k * STORE_PAGE, &chk);
                if (memcmp(&chk, id, 16)) {
                    rc = store_errf(e, -EBADMSG, "pack %016llx: a live page is corrupt (group at %llu, slot %u): "
                                    "gc stops; run `cairn fsck --verify-data`", (unsigned long long)f->pack,
                                    (unsigned long long)l.offset, k);
                    break;
                }
                if (store_idset_add(copied, id)) {
                    rc = store_errf(e, -ENOMEM, "out of memory");
                    break;
                }
                memcpy(stage + (size_t)ns * STORE_PAGE, pages + (size_t)k * STORE_PAGE, STORE_PAGE);
                sids[ns++] = *id;
                if (ns == STORE_GROUP_PAGES) {
                    ssize_t cl = store_group_compress(cc, stage, ns, out, store_group_bound(STORE_GROUP_PAGES));
                    rc = cl < 0 ? store_errf(e, -EIO, "compression failed")
                                : store_writer_add_group(w, sids, ns, out, (size_t)cl, e);
                    ns = 0;
                }
            }
        }
    }
    if (!rc && ns) {
        ssize_t cl = store_group_compress(cc, stage, ns, out, store_group_bound(STORE_GROUP_PAGES));
        rc = cl < 0 ? store_errf(e, -EIO, "compression failed") : store_writer_add_group(w, sids, ns, out, (size_t)cl, e);
    }
    const store_id *wids;
    const store_loc *wlocs;
    size_t wn = 0;
    /* Sealed = durable in the bucket (store_writer_seal uploads on S3). */
    if (!rc && w) rc = store_writer_seal(w, &wids, &wlocs, &wn, e);
    for (size_t i = 0; !rc && i < wn; i++)
        if ((!moved->n || moved->v[moved->n - 1] != wlocs[i].pack) && vec_push(moved, wlocs[i].pack))
            rc = store_errf(e, -ENOMEM, "out of memory");
    if (w) store_writer_abort(w);
    store_idset_free(copied);
    store_cctx_free(cc);
    store_dctx_free(dc);
    free(frame);
    free(pages);
    free(stage);
    free(out);
    return rc;
}

int gc_sweep_remote(const char *dir, store_gc_lease *lease, const gc_sweep_opts *o, gc_result *r, store_err *e)
{
    store_t *s = NULL;
    int rc = store_open(dir, STORE_SCAN, &s, e);
    if (rc) return rc;
    int64_t wait = store_commit_bound_ms() + store_clock_margin_ms();
    store_gc_record *recs = NULL;
    size_t nrecs = 0;
    uint64_t *packs = NULL, *sizes = NULL;
    size_t npacks = 0;
    store_idset *live = store_idset_new(), *kept = store_idset_new();
    store_footer *fs = NULL;
    uint8_t *rw = NULL;
    vec ripe = {0}, young = {0}, moved = {0}, del = {0}, fossil = {0}, newmoved = {0};
    if (!live || !kept) rc = store_errf(e, -ENOMEM, "out of memory");
    /* Records first, then manifests, then packs: a pack uploaded after the manifest
     * listing is not in the candidate set of this run unless the pack listing saw it, and
     * then it is only made a fossil (its writer's manifest resurrects it at epoch 2). */
    if (!rc) rc = store_gc_records(s, STORE_GC_FOSSILS, &recs, &nrecs, e);
    /* The bucket's time after the records' listing and before the manifests': a record
     * ripe by it was PUT more than the bound before the manifests are listed, on the
     * bucket's clock (docs/s3.md, "Whose clock"). */
    int64_t now = 0;
    if (!rc) rc = store_bucket_now(s, &now, e);
    for (size_t i = 0; !rc && i < nrecs; i++) {
        vec *to = store_gc_record_ripe(&recs[i], now, wait) ? &ripe : &young;
        for (size_t k = 0; !rc && k < recs[i].npacks; k++)
            if (vec_push(to, recs[i].packs[k])) rc = store_errf(e, -ENOMEM, "out of memory");
        for (size_t k = 0; !rc && to == &ripe && k < recs[i].nmoved; k++)
            if (vec_push(&moved, recs[i].moved[k])) rc = store_errf(e, -ENOMEM, "out of memory");
    }
    vec_sort(&ripe);
    vec_sort(&young);
    if (!rc) rc = mark_all(s, live, e);
    if (!rc) rc = store_pack_list_sizes(s, &packs, &sizes, &npacks, e);
    if (!rc && !(fs = calloc(npacks ? npacks : 1, sizeof *fs))) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc && !(rw = calloc(npacks ? npacks : 1, 1))) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < npacks; i++) fs[i] = (store_footer){.pack = packs[i], .size = sizes[i]};
    if (!rc) store_pack_footers(s, fs, npacks);
    for (size_t i = 0; !rc && i < npacks; i++) {
        if (fs[i].rc == -ENOENT) continue;                      /* deleted since the listing */
        if (fs[i].rc) {
            /* A damaged pack is fsck's business; it stays, and so does every chunk in it. */
            gc_logf(o->log, o->log_arg, "skipping %s", fs[i].e.msg);
            continue;
        }
        if (vec_has(&ripe, fs[i].pack)) continue;
        for (uint32_t k = 0; !rc && k < fs[i].nchunks; k++)
            if (store_idset_add(kept, &fs[i].ids[k])) rc = store_errf(e, -ENOMEM, "out of memory");
    }

    /* Epoch 2. */
    uint64_t del_bytes = 0;
    for (size_t i = 0; !rc && i < npacks; i++) {
        if (fs[i].rc || !vec_has(&ripe, fs[i].pack)) continue;
        uint32_t need = 0;
        for (uint32_t k = 0; k < fs[i].nchunks; k++)
            need += store_idset_has(live, &fs[i].ids[k]) && !store_idset_has(kept, &fs[i].ids[k]);
        if (need) {
            r->fossils_resurrected++;
            gc_logf(o->log, o->log_arg, "kept fossil pack %016llx: %u of its chunks are named by a snapshot "
                    "committed since it became a fossil", (unsigned long long)fs[i].pack, need);
            continue;
        }
        if (vec_push(&del, fs[i].pack)) rc = store_errf(e, -ENOMEM, "out of memory");
        del_bytes += fs[i].size;
    }
    /* Where the live chunks of the packs to delete are now: every pack that stays and holds
     * one goes in the deletion record, so a node's index finds them without a scan of the
     * bucket (store/gone.c), and an entry the record does not place is a dead chunk's. */
    store_idset *carried = store_idset_new();
    if (!rc && !carried) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < npacks; i++) {
        if (fs[i].rc || !vec_has(&del, fs[i].pack)) continue;
        for (uint32_t k = 0; !rc && k < fs[i].nchunks; k++)
            if (store_idset_has(live, &fs[i].ids[k]) && store_idset_add(carried, &fs[i].ids[k]))
                rc = store_errf(e, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; !rc && carried && store_idset_count(carried) && i < npacks; i++) {
        if (fs[i].rc || vec_has(&ripe, fs[i].pack)) continue;
        for (uint32_t k = 0; k < fs[i].nchunks; k++)
            if (store_idset_has(carried, &fs[i].ids[k])) {
                if (vec_push(&moved, fs[i].pack)) rc = store_errf(e, -ENOMEM, "out of memory");
                break;
            }
    }
    store_idset_free(carried);
    vec_sort(&moved);
    size_t um = 0;
    for (size_t i = 0; i < moved.n; i++)
        if (!um || moved.v[um - 1] != moved.v[i]) moved.v[um++] = moved.v[i];
    moved.n = um;
    if (!rc && (del.n || ripe.n)) rc = store_gc_lease_renew(s, lease, e);
    int64_t at = 0;
    if (!rc && del.n) rc = store_gc_record_put(s, STORE_GC_DELETED, del.v, del.n, moved.v, moved.n, &at, e);
    for (size_t i = 0; !rc && i < del.n; i++) {
        /* A stalled run must not delete past its lease: renewed every 64 packs. */
        if (i && i % 64 == 0) rc = store_gc_lease_renew(s, lease, e);
        if (!rc) rc = store_pack_delete(s, del.v[i], e);
        if (!rc) {
            r->packs_deleted++;
            gc_logf(o->log, o->log_arg, "deleted fossil pack %016llx", (unsigned long long)del.v[i]);
        }
    }
    if (!rc) r->freed_bytes += del_bytes;
    for (size_t i = 0; !rc && i < nrecs; i++)
        if (store_gc_record_ripe(&recs[i], now, wait)) rc = store_gc_record_del(s, recs[i].name, e);

    /* Epoch 1: what no fossil record names yet. Each live chunk is held by one pack only
     * (the lowest-numbered that has it): other copies (two nodes that stored the same page
     * at once, writers that stored a fossil's chunk again) count as dead where they are. */
    uint64_t rw_bytes = 0;
    size_t nfossil = 0;
    store_idset *claimed = store_idset_new();
    uint8_t **own = calloc(npacks ? npacks : 1, sizeof *own);
    if (!rc && (!claimed || !own)) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < npacks; i++) {
        if (fs[i].rc || vec_has(&ripe, fs[i].pack) || vec_has(&young, fs[i].pack)) continue;
        if (!(own[i] = calloc(fs[i].nchunks ? fs[i].nchunks : 1, 1))) {
            rc = store_errf(e, -ENOMEM, "out of memory");
            break;
        }
        uint32_t lv = 0;
        for (uint32_t k = 0; !rc && k < fs[i].nchunks; k++) {
            const store_id *id = &fs[i].ids[k];
            if (!store_idset_has(live, id) || store_idset_has(claimed, id)) continue;
            if (store_idset_add(claimed, id)) rc = store_errf(e, -ENOMEM, "out of memory");
            own[i][k] = 1;
            lv++;
        }
        if (lv == 0 || (double)lv < REWRITE_BELOW * fs[i].nchunks) {
            if (vec_push(&fossil, fs[i].pack)) rc = store_errf(e, -ENOMEM, "out of memory");
            nfossil++;
            if (lv) {
                rw[i] = 1;
                rw_bytes += fs[i].size;
                r->packs_rewritten++;
            }
            r->chunks_removed += fs[i].nchunks - lv;
            gc_logf(o->log, o->log_arg, "pack %016llx is a fossil now (%u of %u chunks live%s)",
                    (unsigned long long)fs[i].pack, lv, fs[i].nchunks, lv ? ", live ones copied" : "");
        }
    }
    if (!rc && rw_bytes) rc = rewrite(dir, s, fs, rw, own, npacks, rw_bytes, &newmoved, e);
    for (size_t i = 0; own && i < npacks; i++) free(own[i]);
    free(own);
    store_idset_free(claimed);
    if (!rc && fossil.n) rc = store_gc_lease_renew(s, lease, e);
    if (!rc && fossil.n) rc = store_gc_record_put(s, STORE_GC_FOSSILS, fossil.v, fossil.n, newmoved.v, newmoved.n, &at, e);
    if (!rc) r->fossils_recorded += nfossil;

    store_gc_records_free(recs, nrecs);
    footers_free(fs, npacks);
    free(rw);
    free(packs);
    free(sizes);
    free(ripe.v);
    free(young.v);
    free(moved.v);
    free(del.v);
    free(fossil.v);
    free(newmoved.v);
    store_idset_free(live);
    store_idset_free(kept);
    store_close(s);
    return rc;
}
