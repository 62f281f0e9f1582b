/* fsck: the read-only check of a store (stats.c, rebuild.c, listing.c and temps.c hold the
 * other maintenance jobs).
 *
 * fsck's word for the two kinds of findings:
 *   problem  something an acknowledged snapshot needs is missing or damaged
 *   garbage  leftovers of an interrupted ingest (.tmp files, packs nothing references);
 *            harmless, removed by gc
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/events.h"
#include "store/internal.h"

static int verify_pack_data(store_t *s, pack_info *pi, store_report_fn report, void *arg)
{
    /* With S3, frames come through store_read_frame: the local cache or the bucket's ranges. */
    int fd = -1;
    if (!s->be->remote) {
        char *path = pack_path(s, pi->pack, 0);
        fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        free(path);
        if (fd < 0) return -errno;
    }
    store_dctx *d = store_dctx_new();
    uint8_t *frame = NULL, *pages = malloc((size_t)STORE_GROUP_PAGES * STORE_PAGE);
    size_t fcap = 0;
    int bad = 0;
    for (uint32_t g = 0; g < pi->ngroups && pages && d; g++) {
        pack_group *gr = &pi->groups[g];
        if (gr->clen > fcap) {
            fcap = gr->clen;
            free(frame);
            frame = malloc(fcap);
            if (!frame) break;
        }
        store_err e;
        store_loc loc = {.pack = pi->pack, .offset = gr->offset, .clen = gr->clen, .npages = gr->npages};
        int rc = fd >= 0 ? util_pread_all(fd, frame, gr->clen, (off_t)gr->offset)
                         : store_read_frame(s, &loc, frame, fcap, &e);
        if (!rc) rc = store_group_decompress(d, frame, gr->clen, pages, gr->npages, &e);
        else if (fd >= 0) store_errf(&e, rc, "read error");
        if (rc) {
            util_reportf(report, arg, 1, "pack %016llx: group at offset %llu: %s",
                    (unsigned long long)pi->pack, (unsigned long long)gr->offset, e.msg);
            bad++;
            continue;
        }
        for (unsigned i = 0; i < gr->npages; i++) {
            store_id id;
            store_chunk_id(s, pages + (size_t)i * STORE_PAGE, &id);
            if (memcmp(&id, &pi->ids[gr->first + i], 16)) {
                char hex[STORE_ID_HEX];
                store_id_hex(&pi->ids[gr->first + i], hex);
                util_reportf(report, arg, 1, "pack %016llx: group at offset %llu: page %u does not "
                        "match its id %s (corrupt data)", (unsigned long long)pi->pack,
                        (unsigned long long)gr->offset, i, hex);
                bad++;
            }
        }
    }
    free(frame);
    free(pages);
    store_dctx_free(d);
    if (fd >= 0) close(fd);
    return bad;
}

typedef struct {
    const char *id;
    int found;
} drop_probe;

static int find_drop_event(void *arg, const store_event *ev)
{
    drop_probe *p = arg;
    p->found = ev->kind == STORE_EV_DROP && !strcmp(ev->snapshot, p->id);
    return p->found;   /* stop at the first */
}

/* Did gc log a drop of this snapshot (so a missing manifest is its interrupted work)?
 * 1 or 0, or a negative code when events.log cannot be read. */
static int drop_logged(store_t *s, const char *id, store_err *e)
{
    drop_probe p = {id, 0};
    int rc = store_event_each(s, find_drop_event, &p, e);
    return rc ? rc : p.found;
}

int store_fsck(store_t *s, int flags, store_report_fn report, void *arg, store_err *e)
{
    int rc = store_check_private(s, report, arg, e);
    if (rc) return rc;
    pack_list pl = {0};
    rc = packscan_read(s, &pl, report, arg, NULL);
    if (rc) return store_errf(e, rc, "%s/packs: %s", s->dir, strerror(-rc));

    /* Every index entry must point at a footer slot holding the same id. */
    uint64_t nchunks = 0, bad_entries = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_CHUNKS]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        store_loc l;
        nchunks++;
        pack_info *pi = NULL;
        pack_group *g = NULL;
        int ok = kl == 16 && index_decode_loc((const uint8_t *)v, vl, &l) == 0 &&
                 (pi = packscan_find(&pl, l.pack)) && (g = packscan_group(pi, l.offset)) &&
                 g->clen == l.clen && g->npages == l.npages && l.slot < g->npages &&
                 !memcmp(&pi->ids[g->first + l.slot], k, 16);
        if (ok) pi->referenced++;
        else if (bad_entries++ < 20) {
            char hex[STORE_ID_HEX] = "?";
            if (kl == 16) store_id_hex((const store_id *)k, hex);
            util_reportf(report, arg, 1, "index: chunk %s points to a place that does not hold it%s",
                    hex, pi ? "" : " (pack missing)");
        }
    }
    rc = index_iter_status(it, e, "reading chunk records");
    rocksdb_iter_destroy(it);
    if (rc) {
        packscan_free(&pl);
        return rc;
    }
    if (bad_entries > 20)
        util_reportf(report, arg, 1, "index: %llu bad chunk entries in all (run `cairn fsck --rebuild-index`)",
                (unsigned long long)bad_entries);
    uint64_t counted = 0;
    if ((rc = index_get_counter(s, "chunks", &counted, e))) {
        packscan_free(&pl);
        return rc;
    }
    if (counted != nchunks)
        util_reportf(report, arg, 0, "index: chunk counter says %llu, the index holds %llu",
                (unsigned long long)counted, (unsigned long long)nchunks);
    for (size_t i = 0; i < pl.n; i++)
        if (!pl.v[i].referenced && pl.v[i].nchunks)
            util_reportf(report, arg, 0, "pack %016llx: no index entry uses it (%llu bytes, from an "
                    "interrupted ingest)", (unsigned long long)pl.v[i].pack,
                    (unsigned long long)pl.v[i].size);
    if (flags & STORE_FSCK_VERIFY_DATA)
        for (size_t i = 0; !rc && i < pl.n; i++) {
            int vr = verify_pack_data(s, &pl.v[i], report, arg);
            if (vr < 0)
                rc = store_errf(e, vr, "pack %016llx: cannot verify: %s",
                                (unsigned long long)pl.v[i].pack, strerror(-vr));
        }
    if (rc) {
        packscan_free(&pl);
        return rc;
    }

    /* Every manifest must parse, be indexed, and name only chunks the index can find. */
    char (*ids)[STORE_SNAPID_LEN] = NULL;
    size_t nm = 0;
    rc = store_manifest_list(s, &ids, &nm, report, arg, e);
    for (size_t m = 0; !rc && m < nm; m++) {
        store_snapshot *snap = NULL;
        store_err me;
        int lr = store_snapshot_load(s, ids[m], &snap, &me);
        if (lr == -ENOENT) continue;               /* dropped since the listing */
        if (lr) {
            util_reportf(report, arg, 1, "%s", me.msg);
            continue;
        }
        if (snap->files_hash[0]) {
            store_findex *fi = NULL;
            if (store_findex_load(s, snap, &fi, &me)) util_reportf(report, arg, 1, "%s", me.msg);
            store_findex_free(fi);
        }
        char *rec = NULL;
        size_t vl = 0;
        rc = index_get(s, CF_SNAPSHOTS, ids[m], strlen(ids[m]), &rec, &vl, e);
        if (rc == -ENOENT) {
            char *pend = NULL;
            char key[64];
            int n = snprintf(key, sizeof key, "pending:%s", ids[m]);
            rc = index_get(s, CF_DEFAULT, key, (size_t)n, &pend, &vl, e);
            if (!rc)
                util_reportf(report, arg, 0, "snapshot %s: its commit was interrupted after the manifest; "
                        "the next writer finishes it", ids[m]);
            else if (rc == -ENOENT && s->be->remote) {
                /* Another node's snapshot this node has not refreshed yet (docs/s3.md): its
                 * chunks are checked by a node that knows them. */
                util_reportf(report, arg, 0, "snapshot %s: in %s but not yet in this node's index "
                             "(`cairn fsck --rebuild-index` refreshes)", ids[m], s->be->where);
                rocksdb_free(pend);
                store_snapshot_free(snap);
                rc = 0;
                continue;
            } else if (rc == -ENOENT)
                util_reportf(report, arg, 1, "snapshot %s: has a manifest but no index record", ids[m]);
            if (rc == -ENOENT) rc = 0;
            rocksdb_free(pend);
        }
        rocksdb_free(rec);
        for (int b = 0; !rc && b < snap->nblobs; b++) {
            store_blob *bl = &snap->blobs[b];
            uint8_t *found = malloc(bl->npages ? bl->npages : 1);
            if (!found) {
                rc = store_errf(e, -ENOMEM, "out of memory");
                break;
            }
            if ((rc = store_lookup(s, bl->ids, bl->npages, found, NULL, e))) {
                free(found);
                break;
            }
            uint64_t missing = 0;
            for (uint64_t i = 0; i < bl->npages; i++) {
                if (found[i] || store_id_is_zero(&bl->ids[i])) continue;
                if (missing++ < 5)
                    util_reportf(report, arg, 1, "snapshot %s: %s: page at offset %llu: chunk not in "
                            "the store", snap->id, bl->name, (unsigned long long)i * STORE_PAGE);
            }
            if (missing > 5)
                util_reportf(report, arg, 1, "snapshot %s: %s: %llu pages missing in all", snap->id,
                        bl->name, (unsigned long long)missing);
            free(found);
        }
        store_snapshot_free(snap);
    }
    /* And every index record must have its manifest. */
    if (!rc) {
        it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_SNAPSHOTS]);
        for (rocksdb_iter_seek_to_first(it); !rc && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
            size_t kl;
            const char *k = rocksdb_iter_key(it, &kl);
            int have = 0;
            for (size_t m = 0; m < nm && !have; m++) have = kl == 20 && !memcmp(ids[m], k, 20);
            if (have) continue;
            char id[STORE_SNAPID_LEN] = "";
            if (kl < sizeof id) memcpy(id, k, kl);
            int dropping = drop_logged(s, id, e);
            if (dropping < 0) {
                rc = dropping;
                break;
            }
            util_reportf(report, arg, !dropping, dropping ? "snapshot %.*s: gc's drop of it was interrupted; the next "
                    "gc finishes it" : "snapshot %.*s: indexed but its manifest is missing", (int)kl, k);
        }
        if (!rc) rc = index_iter_status(it, e, "reading snapshot records");
        rocksdb_iter_destroy(it);
    }
    free(ids);
    packscan_free(&pl);
    return rc;
}
