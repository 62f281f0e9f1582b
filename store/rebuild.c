/* store_rebuild_index: the index made again from packs and manifests (invariant I3). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

static int rm_index_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    int rc;
    while ((rc = util_next_entry(d, &de)) > 0)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
            rc = -errno;
            break;
        }
    closedir(d);
    if (rc) return rc;
    return rmdir(path) < 0 ? -errno : 0;
}

static int rm_index_named(store_t *s, const char *name, store_err *e)
{
    char *path = util_path(s->dir, name);
    int rc = path ? rm_index_dir(path) : -ENOMEM;
    free(path);
    return rc ? store_errf(e, rc, "%s/%s: cannot remove: %s", s->dir, name, strerror(-rc)) : 0;
}

static int rebuild_into(store_t *s, store_report_fn report, void *arg, store_err *e);

/* The new index is built beside the old one (index.new) and swapped in by two renames, so a
 * rebuild killed at any point leaves a usable index: the old one, or the new one complete.
 * Killed between the renames, there is no index/ but a complete index.new/, which the next
 * store_open renames into place (index_recover_swap). */
int store_rebuild_index(store_t *s, store_report_fn report, void *arg, store_err *e)
{
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "rebuild needs the store opened for writing");
    index_close(s);
    int rc = rm_index_named(s, "index.new", e);
    if (!rc) rc = rm_index_named(s, "index.old", e);
    if (!rc) {
        s->index_name = "index.new";
        rc = index_open(s, 1, e);
        if (!rc) rc = rebuild_into(s, report, arg, e);
        index_close(s);
        s->index_name = NULL;
    }
    char *cur = util_path(s->dir, "index"), *old = util_path(s->dir, "index.old"),
         *nw = util_path(s->dir, "index.new");
    if (!rc && (!cur || !old || !nw)) rc = store_errf(e, -ENOMEM, "out of memory");
    int moved = 0, keep_new = 0;
    if (!rc && rename(cur, old) == 0)
        moved = 1;
    else if (!rc && errno != ENOENT)
        rc = store_errf(e, -errno, "%s: cannot move the old index aside: %s", s->dir, strerror(errno));
    if (!rc && rename(nw, cur) < 0) {
        rc = store_errf(e, -errno, "%s: cannot put the new index in place: %s", s->dir, strerror(errno));
        /* Never leave the store without an index (a failed rename found by the fault test
         * left only index.old): the old one goes back, or else the complete new one stays
         * for the next open (index_recover_swap). */
        if (moved && rename(old, cur) < 0) keep_new = 1;
    }
    int drc;
    if (!rc && (drc = util_fsync_dir(s->dir))) rc = store_errf(e, drc, "%s: fsync: %s", s->dir, strerror(-drc));
    if (!rc) rc = rm_index_named(s, "index.old", e);
    else if (nw && !keep_new) rm_index_dir(nw);   /* best effort: the next rebuild removes it anyway */
    free(cur);
    free(old);
    free(nw);
    /* Back to the index in place (the old one if this failed before the swap). */
    store_err oe;
    int orc = index_open(s, 0, &oe);
    if (!rc && orc) rc = store_errf(e, orc, "%s", oe.msg);
    return rc;
}

static int rebuild_into(store_t *s, store_report_fn report, void *arg, store_err *e)
{
    int64_t t0 = 0;
    int rc = store_bucket_now(s, &t0, e);      /* the refresh window counts from it */
    if (rc) return rc;
    pack_list pl = {0};
    if ((rc = packscan_read(s, &pl, report, arg, NULL)))
        return store_errf(e, rc, "%s/packs: %s", s->dir, strerror(-rc));
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    uint64_t chunks = 0, next_pack = 0;
    for (size_t i = 0; !rc && i < pl.n; i++) {
        pack_info *pi = &pl.v[i];
        /* A node counts only in its own range (remote.c: the top bits are its tag). */
        uint64_t num = s->be->remote ? pi->pack & ((1ULL << NODE_SHIFT) - 1) : pi->pack;
        if ((!s->be->remote || pi->pack >> NODE_SHIFT == s->node) && num >= next_pack) next_pack = num + 1;
        for (uint32_t g = 0; g < pi->ngroups; g++)
            for (unsigned k = 0; k < pi->groups[g].npages; k++) {
                store_loc l = {.pack = pi->pack, .offset = pi->groups[g].offset,
                               .clen = pi->groups[g].clen, .npages = pi->groups[g].npages,
                               .slot = (uint16_t)k};
                uint8_t v[40];
                size_t vl;
                index_encode_loc(&l, v, &vl);
                rocksdb_writebatch_put_cf(b, s->cf[CF_CHUNKS],
                                          (const char *)pi->ids[pi->groups[g].first + k].b, 16,
                                          (const char *)v, vl);
                chunks++;
            }
        if (rocksdb_writebatch_count(b) > 100000) {
            rc = index_write(s, b, 0, e);
            rocksdb_writebatch_clear(b);
        }
    }
    /* What a later refresh (refresh.c) need not read again. */
    if (!rc) rc = refresh_mark_rebuilt(s, b, &pl, t0, e);
    packscan_free(&pl);
    if (!rc) rc = index_write(s, b, 0, e);
    rocksdb_writebatch_clear(b);
    /* A chunk stored twice (two packs) was counted twice above: count distinct keys. */
    if (!rc) {
        chunks = 0;
        rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf[CF_CHUNKS]);
        for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) chunks++;
        rc = index_iter_status(it, e, "counting chunk records");
        rocksdb_iter_destroy(it);
    }
    char (*ids)[STORE_SNAPID_LEN] = NULL;
    size_t nm = 0;
    if (!rc) rc = store_manifest_list(s, &ids, &nm, report, arg, e);
    for (size_t m = 0; !rc && m < nm; m++) {
        store_snapshot *snap = NULL;
        store_err me;
        if (store_snapshot_load(s, ids[m], &snap, &me)) {
            util_reportf(report, arg, 1, "%s (left out of the index)", me.msg);
            continue;
        }
        rc = index_put_snapshot(s, b, snap, e);
        store_snapshot_free(snap);
        if (!rc) rc = index_write(s, b, 0, e);
        rocksdb_writebatch_clear(b);
    }
    free(ids);
    if (!rc) {
        char num[32];
        int n = snprintf(num, sizeof num, "%llu", (unsigned long long)chunks);
        rocksdb_writebatch_put(b, "chunks", 6, num, (size_t)n);
        n = snprintf(num, sizeof num, "%llu", (unsigned long long)next_pack);
        rocksdb_writebatch_put(b, "next_pack", 9, num, (size_t)n);
        rocksdb_writebatch_put(b, "complete", 8, "1", 1);
        rc = index_write(s, b, 1, e);
        s->next_pack = next_pack;
    }
    rocksdb_writebatch_destroy(b);
    return rc;
}
