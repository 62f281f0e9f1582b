/* Mark and sweep (docs/gc.md): mark the ids of every manifest, without any lock; classify
 * the packs that existed when gc planned; write the live pages of sparse packs into new
 * packs (numbers reserved in the index); then, pack by pack in short exclusive sections,
 * re-mark manifests that appeared meanwhile, skip any pack they revived, re-point or
 * delete its index entries (only those still naming it), and delete it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc/internal.h"

#define REWRITE_BELOW 0.5           /* live share under which a pack is rewritten */
#define EDITS_PER_SECTION 50000

enum { KEEP, DELETE, REWRITE, ORPHAN };

typedef struct {
    uint64_t pack, bytes;
    store_group *groups;
    uint32_t ngroups;
    store_id *ids;
    uint32_t nchunks, live;
    int action;
    size_t move0, nmoves;           /* its slice of the moves array */
} cand;

typedef struct {
    store_id id;
    store_loc from, to;
} move;

/* Snapshot ids as set members: the 20 hex digits packed into an id's first 10 bytes (the
 * last byte set, so no key is the zero id a set ignores). Sets, not lists: a sweep over
 * 100k manifests asks 100k times whether it saw one. */
static store_id snap_key(const char *id)
{
    store_id k;
    memset(&k, 0, sizeof k);
    for (int i = 0; i < 20 && id[i]; i++) {
        int c = id[i], v = c >= 'a' ? c - 'a' + 10 : c >= 'A' ? c - 'A' + 10 : c - '0';
        k.b[i / 2] |= (uint8_t)((v & 15) << (i % 2 ? 0 : 4));
    }
    k.b[15] = 1;
    return k;
}

int gc_mark_live(store_t *s, store_idset *live, store_idset *seen, const char *const *skip, size_t nskip,
                size_t *added, store_err *e)
{
    char (*ids)[STORE_SNAPID_LEN] = NULL;
    size_t n = 0;
    *added = 0;
    store_idset *skipset = nskip ? store_idset_new() : NULL;
    int rc = nskip && !skipset ? store_errf(e, -ENOMEM, "out of memory") : 0;
    for (size_t k = 0; !rc && k < nskip; k++) {
        store_id key = snap_key(skip[k]);
        if (store_idset_add(skipset, &key)) rc = store_errf(e, -ENOMEM, "out of memory");
    }
    if (!rc) rc = store_manifest_list(s, &ids, &n, NULL, NULL, e);
    for (size_t i = 0; !rc && i < n; i++) {
        store_id key = snap_key(ids[i]);
        if ((seen && store_idset_has(seen, &key)) || (skipset && store_idset_has(skipset, &key))) continue;
        store_snapshot *snap = NULL;
        store_err le;
        int lr = store_snapshot_load(s, ids[i], &snap, &le);
        if (lr == -ENOENT) continue;                  /* dropped meanwhile */
        if (lr) {
            /* An unreadable manifest: we cannot know what it needs, so nothing may go. */
            rc = store_errf(e, lr, "%s; gc will not sweep until fsck is clean", le.msg);
            break;
        }
        for (int b = 0; !rc && b < snap->nblobs; b++)
            for (uint64_t k = 0; !rc && k < snap->blobs[b].npages; k++)
                if (store_idset_add(live, &snap->blobs[b].ids[k])) rc = store_errf(e, -ENOMEM, "out of memory");
        store_snapshot_free(snap);
        if (!rc && seen && store_idset_add(seen, &key)) rc = store_errf(e, -ENOMEM, "out of memory");
        (*added)++;
    }
    free(ids);
    store_idset_free(skipset);
    return rc;
}

static store_loc loc_of(const cand *c, uint32_t g, unsigned slot)
{
    return (store_loc){.pack = c->pack, .offset = c->groups[g].offset, .clen = c->groups[g].clen,
                       .npages = c->groups[g].npages, .slot = (uint16_t)slot};
}

/* Copies the live pages of the REWRITE candidates into new packs (no lock held). Every
 * live page of a candidate is copied, even one another pack also holds: then a live id
 * without a copy can only be one a new manifest revived (commit_cand keeps that pack). */
static int rewrite(store_t *s, store_t *peek, cand *cs, size_t nc, store_idset *live, uint64_t first,
                   uint64_t nnum, move **moves_out, size_t *nmoves_out, store_err *e)
{
    uint8_t pfound[STORE_GROUP_PAGES];
    store_loc plocs[STORE_GROUP_PAGES];
    store_writer *w = NULL;
    int rc = store_writer_open_range(s, first, nnum, &w, e);
    store_cctx *cc = store_cctx_new();
    store_dctx *dc = store_dctx_new();
    uint8_t *frame = malloc(store_group_bound(STORE_GROUP_PAGES));
    uint8_t *pages = malloc((size_t)STORE_GROUP_PAGES * STORE_PAGE);
    uint8_t *stage = malloc((size_t)STORE_GROUP_PAGES * STORE_PAGE);
    uint8_t *out = malloc(store_group_bound(STORE_GROUP_PAGES));
    store_id sids[STORE_GROUP_PAGES];
    unsigned ns = 0;
    move *mv = NULL;
    size_t nm = 0, mcap = 0;
    if (!rc && (!cc || !dc || !frame || !pages || !stage || !out)) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nc; i++) {
        cand *c = &cs[i];
        if (c->action != REWRITE) continue;
        c->move0 = nm;
        for (uint32_t g = 0; !rc && g < c->ngroups; g++) {
            store_loc l = loc_of(c, g, 0);
            rc = store_read_frame(s, &l, frame, store_group_bound(STORE_GROUP_PAGES), e);
            if (!rc) rc = store_group_decompress(dc, frame, l.clen, pages, l.npages, e);
            /* Where the index points now (a hint): a copy it does not use needs no copy. */
            int hint = peek && !store_lookup(peek, &c->ids[c->groups[g].first], l.npages, pfound, plocs, NULL);
            for (unsigned k = 0; !rc && k < l.npages; k++) {
                const store_id *id = &c->ids[c->groups[g].first + k];
                if (!store_idset_has(live, id)) continue;
                if (hint && pfound[k] && (plocs[k].pack != c->pack || plocs[k].offset != l.offset ||
                                          plocs[k].slot != k))
                    continue;
                store_id chk;
                store_chunk_id(s, pages + (size_t)k * STORE_PAGE, &chk);
                if (memcmp(&chk, id, 16)) {
                    rc = store_errf(e, -EBADMSG, "pack %016llx: a live page is corrupt (group at %llu, "
                                    "slot %u): gc stops; run `cairn fsck --verify-data`",
                                    (unsigned long long)c->pack, (unsigned long long)l.offset, k);
                    break;
                }
                if (nm == mcap) {
                    mcap = mcap ? mcap * 2 : 4096;
                    move *nmv = realloc(mv, mcap * sizeof *nmv);
                    if (!nmv) {
                        rc = store_errf(e, -ENOMEM, "out of memory");
                        break;
                    }
                    mv = nmv;
                }
                mv[nm++] = (move){.id = *id, .from = loc_of(c, g, k)};
                memcpy(stage + (size_t)ns * STORE_PAGE, pages + (size_t)k * STORE_PAGE, STORE_PAGE);
                sids[ns++] = *id;
                if (ns == STORE_GROUP_PAGES) {
                    ssize_t cl = store_group_compress(cc, stage, ns, out, store_group_bound(STORE_GROUP_PAGES));
                    rc = cl < 0 ? store_errf(e, -EIO, "compression failed") : store_writer_add_group(w, sids, ns, out, (size_t)cl, e);
                    ns = 0;
                }
            }
        }
        c->nmoves = nm - c->move0;
    }
    if (!rc && ns) {
        ssize_t cl = store_group_compress(cc, stage, ns, out, store_group_bound(STORE_GROUP_PAGES));
        rc = cl < 0 ? store_errf(e, -EIO, "compression failed") : store_writer_add_group(w, sids, ns, out, (size_t)cl, e);
    }
    const store_id *wids;
    const store_loc *wlocs;
    size_t wn = 0;
    if (!rc) rc = store_writer_seal(w, &wids, &wlocs, &wn, e);
    /* The writer appended in move order: its i-th chunk is the i-th move. */
    for (size_t i = 0; !rc && i < nm; i++) {
        if (i >= wn || memcmp(&wids[i], &mv[i].id, 16)) {
            rc = store_errf(e, -EIO, "gc: rewritten chunks out of order (bug)");
            break;
        }
        mv[i].to = wlocs[i];
    }
    store_writer_abort(w);     /* frees; the sealed packs stay (renamed, durable) */
    store_cctx_free(cc);
    store_dctx_free(dc);
    free(frame);
    free(pages);
    free(stage);
    free(out);
    if (rc) {
        free(mv);
        return rc;
    }
    *moves_out = mv;
    *nmoves_out = nm;
    return 0;
}

/* Does the index (under the lock: current) use this copy of id? */
static int points_here(store_t *s, const store_id *id, const store_loc *here)
{
    uint8_t found = 0;
    store_loc l;
    if (store_lookup(s, id, 1, &found, &l, NULL)) return 1;   /* unsure: keep */
    return found && l.pack == here->pack && l.offset == here->offset && l.slot == here->slot;
}

/* An orphan goes only if, now under the lock, still no index entry points into it. */
static int commit_orphan(store_t *s, cand *c, const gc_sweep_opts *o, gc_result *r, store_err *e)
{
    uint32_t ref = 0;
    int rc = store_pack_refs(s, &c->pack, 1, &ref, e);
    if (rc) return rc;
    if (ref) {
        gc_logf(o->log, o->log_arg, "kept pack %016llx: the index uses it now", (unsigned long long)c->pack);
        return 0;
    }
    rc = store_pack_delete(s, c->pack, e);
    if (!rc) {
        r->packs_deleted++;
        gc_logf(o->log, o->log_arg, "deleted pack %016llx: nothing used it (left by an interrupted run)",
                (unsigned long long)c->pack);
    }
    return rc;
}

/* One candidate's index edits and deletion, inside an exclusive section. */
static int commit_cand(store_t *s, cand *c, const move *mv, store_idset *live, const gc_sweep_opts *o,
                       gc_result *r, store_err *e)
{
    if (c->action == ORPHAN) return commit_orphan(s, c, o, r, e);
    store_index_edit *ed = calloc(c->nchunks ? c->nchunks : 1, sizeof *ed);
    if (!ed) return store_errf(e, -ENOMEM, "out of memory");
    size_t n = 0, dead = 0;
    int revived = 0;
    for (uint32_t g = 0; g < c->ngroups && !revived; g++)
        for (unsigned k = 0; k < c->groups[g].npages; k++) {
            const store_id *id = &c->ids[c->groups[g].first + k];
            store_loc here = loc_of(c, g, k);
            const move *found = NULL;
            for (size_t j = c->move0; j < c->move0 + c->nmoves && !found; j++)
                if (mv[j].from.offset == here.offset && mv[j].from.slot == here.slot) found = &mv[j];
            if (found) {
                ed[n++] = (store_index_edit){.id = *id, .expect = here, .to = found->to};
            } else if (store_idset_has(live, id) && points_here(s, id, &here)) {
                revived = 1;         /* live, uncopied, and the index uses this copy */
                break;
            } else {
                ed[n++] = (store_index_edit){.id = *id, .expect = here, .del = 1};
                dead++;
            }
        }
    int rc = 0;
    if (revived) {
        gc_logf(o->log, o->log_arg, "kept pack %016llx: a snapshot committed during gc uses it",
                (unsigned long long)c->pack);
    } else {
        size_t applied = 0;
        rc = store_index_apply(s, ed, n, &applied, e);
        if (!rc) rc = store_pack_delete(s, c->pack, e);
        if (!rc) {
            if (c->action == DELETE) r->packs_deleted++;
            else r->packs_rewritten++;
            r->chunks_removed += dead;
        }
    }
    free(ed);
    return rc;
}

int gc_sweep(const char *dir, const gc_sweep_opts *o, gc_result *r, store_err *e)
{
    store_t *s = NULL;
    int rc = store_open(dir, STORE_SCAN, &s, e);
    if (rc) return rc;
    store_idset *live = store_idset_new(), *seen = store_idset_new();
    size_t added = 0;
    if (!live || !seen) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = gc_mark_live(s, live, seen, o->skip_manifests, o->nskip, &added, e);
    cand *cs = calloc(o->npacks ? o->npacks : 1, sizeof *cs);
    size_t nc = 0;
    uint64_t rewrite_bytes = 0;
    if (!rc && !cs) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < o->npacks; i++) {
        cand *c = &cs[nc];
        c->pack = o->packs[i];
        store_err fe;
        if (store_pack_footer(s, c->pack, &c->groups, &c->ngroups, &c->ids, &c->nchunks, &c->bytes, &fe)) {
            gc_logf(o->log, o->log_arg, "skipping %s", fe.msg);   /* fsck's business */
            continue;
        }
        nc++;
        for (uint32_t k = 0; k < c->nchunks; k++)
            if (store_idset_has(live, &c->ids[k]) || (o->extra_live && store_idset_has(o->extra_live, &c->ids[k])))
                c->live++;
        /* A live id counts for this pack only if the index points here: a killed rewrite
         * leaves two copies of what it moved, and only one is in use. */
        if (o->refs && o->refs[i] < c->live) c->live = o->refs[i];
        c->action = c->live == 0 ? DELETE : (double)c->live < REWRITE_BELOW * c->nchunks ? REWRITE : KEEP;
        /* No index entry uses it (a killed rewrite's output, a crashed ingest's pack): its
         * ids may be live, but their index entries point at other copies. */
        if (o->refs && !o->refs[i]) c->action = ORPHAN;
        if (c->action == REWRITE) rewrite_bytes += c->bytes;
    }
    if (!rc && o->dry_run) {
        for (size_t i = 0; i < nc; i++) {
            if (cs[i].action == KEEP) continue;
            uint64_t freed = cs[i].action != REWRITE ? cs[i].bytes
                             : (uint64_t)((double)cs[i].bytes * (1.0 - (double)cs[i].live / cs[i].nchunks));
            r->freed_bytes += freed;
            if (cs[i].action != REWRITE) r->packs_deleted++;
            else r->packs_rewritten++;
            r->chunks_removed += cs[i].nchunks - cs[i].live;
            gc_logf(o->log, o->log_arg, "would %s pack %016llx (%u of %u chunks live, ~%llu bytes freed)",
                    cs[i].action != REWRITE ? "delete" : "rewrite", (unsigned long long)cs[i].pack, cs[i].live,
                    cs[i].nchunks, (unsigned long long)freed);
        }
    }
    move *mv = NULL;
    size_t nmv = 0;
    int any = 0;
    for (size_t i = 0; i < nc; i++) any |= cs[i].action != KEEP;
    if (!rc && !o->dry_run && any) {
        /* Pack numbers for the rewrite, reserved under the lock; then the copy without it. */
        uint64_t first = 0, nnum = rewrite_bytes / (32u << 20) + 8;
        store_t *w = NULL;
        if (rewrite_bytes && !(rc = store_open(dir, STORE_WRITE, &w, e))) {
            rc = store_reserve_packs(w, nnum, &first, e);
            store_close(w);
        }
        store_t *peek = NULL;
        if (!rc && rewrite_bytes && store_open(dir, STORE_PEEK, &peek, NULL)) peek = NULL;
        if (!rc && rewrite_bytes) rc = rewrite(s, peek, cs, nc, live, first, nnum, &mv, &nmv, e);
        store_close(peek);
        /* Sections: re-mark, then commit candidates until the edit budget is spent. */
        size_t i = 0;
        int first_section = 1;
        while (!rc && i < nc) {
            if (cs[i].action == KEEP) {
                i++;
                continue;
            }
            store_t *w2 = NULL;
            if ((rc = store_open(dir, STORE_WRITE, &w2, e))) break;
            rc = gc_mark_live(w2, live, seen, NULL, 0, &added, e);
            if (!rc && first_section) rc = store_remove_temps(w2, e);
            first_section = 0;
            size_t budget = 0;
            while (!rc && i < nc && budget < EDITS_PER_SECTION) {
                if (cs[i].action != KEEP) {
                    rc = commit_cand(w2, &cs[i], mv, live, o, r, e);
                    budget += cs[i].nchunks;
                }
                i++;
            }
            store_close(w2);
            gc_yield_lock();
        }
    }
    if (!rc && !o->dry_run && !any) {
        /* No pack to touch: still clear what interrupted writers and old templates left. */
        store_t *w3 = NULL;
        if (!(rc = store_open(dir, STORE_WRITE, &w3, e))) {
            rc = store_remove_temps(w3, e);
            store_close(w3);
        }
    }
    for (size_t i = 0; i < nc; i++) {
        free(cs[i].groups);
        free(cs[i].ids);
    }
    free(cs);
    free(mv);
    store_idset_free(seen);
    store_idset_free(live);
    store_close(s);
    return rc;
}
