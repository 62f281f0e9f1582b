/* Integrity: stats, fsck (read-only check) and rebuild of the index from packs+manifests.
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

typedef struct {
    uint64_t pack;
    uint64_t size;
    pack_group *groups;
    uint32_t ngroups;
    store_id *ids;
    uint32_t nchunks;
    uint64_t referenced;   /* index entries that point into it */
} pack_info;

typedef struct {
    pack_info *v;
    size_t n, cap;
} pack_list;

static void reportf(store_report_fn fn, void *arg, int problem, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reportf(store_report_fn fn, void *arg, int problem, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (fn) fn(arg, problem, buf);
}

static int parse_pack_name(const char *name, uint64_t *n)
{
    if (strlen(name) != 21 || strcmp(name + 16, ".pack")) return -1;
    char *end;
    *n = strtoull(name, &end, 16);
    return end == name + 16 ? 0 : -1;
}

static int cmp_pack(const void *a, const void *b)
{
    uint64_t x = ((const pack_info *)a)->pack, y = ((const pack_info *)b)->pack;
    return x < y ? -1 : x > y;
}

/* Reads every pack footer; damaged packs are reported and left out of the list. */
static int scan_packs(store_t *s, pack_list *pl, store_report_fn report, void *arg,
                      uint64_t *tmp_bytes)
{
    char *dir = util_path(s->dir, "packs");
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        free(dir);
        return -errno;
    }
    struct dirent *de;
    int rc;
    while ((rc = util_next_entry(d, &de)) > 0) {
        if (de->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
            if (errno == ENOENT) continue;      /* a .tmp renamed or removed meanwhile */
            rc = -errno;
            break;
        }
        if (!S_ISREG(st.st_mode)) continue;
        uint64_t n;
        size_t len = strlen(de->d_name);
        if (len > 4 && !strcmp(de->d_name + len - 4, ".tmp")) {
            reportf(report, arg, 0, "packs/%s: unfinished pack of an interrupted ingest (%lld bytes)",
                    de->d_name, (long long)st.st_size);
            if (tmp_bytes) *tmp_bytes += (uint64_t)st.st_size;
            continue;
        }
        if (parse_pack_name(de->d_name, &n)) {
            reportf(report, arg, 0, "packs/%s: not a pack file", de->d_name);
            continue;
        }
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
        pack_info pi = {.pack = n, .size = (uint64_t)st.st_size};
        store_err e;
        int rc = fd < 0 ? store_errf(&e, -errno, "pack %s: %s", de->d_name, strerror(errno))
                        : pack_read_footer(fd, pi.size, &pi.groups, &pi.ngroups, &pi.ids,
                                           &pi.nchunks, &e, de->d_name);
        if (fd >= 0) close(fd);
        if (rc) {
            reportf(report, arg, 1, "%s", e.msg);
            continue;
        }
        if (pl->n == pl->cap) {
            size_t cap = pl->cap ? pl->cap * 2 : 64;
            pack_info *v = realloc(pl->v, cap * sizeof *v);
            if (!v) {
                free(pi.groups);
                free(pi.ids);
                rc = -ENOMEM;
                break;
            }
            pl->v = v;
            pl->cap = cap;
        }
        pl->v[pl->n++] = pi;
    }
    closedir(d);
    free(dir);
    if (pl->n) qsort(pl->v, pl->n, sizeof *pl->v, cmp_pack);
    return rc;
}

static void free_packs(pack_list *pl)
{
    for (size_t i = 0; i < pl->n; i++) {
        free(pl->v[i].groups);
        free(pl->v[i].ids);
    }
    free(pl->v);
}

static pack_info *find_pack(pack_list *pl, uint64_t n)
{
    pack_info key = {.pack = n};
    return bsearch(&key, pl->v, pl->n, sizeof *pl->v, cmp_pack);
}

static pack_group *find_group(pack_info *pi, uint64_t off)
{
    size_t lo = 0, hi = pi->ngroups;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pi->groups[mid].offset < off) lo = mid + 1;
        else hi = mid;
    }
    return lo < pi->ngroups && pi->groups[lo].offset == off ? &pi->groups[lo] : NULL;
}

int store_manifest_list(store_t *s, char (**ids)[STORE_SNAPID_LEN], size_t *n,
                        store_report_fn report, void *arg, store_err *e)
{
    *ids = NULL;
    *n = 0;
    char *dir = util_path(s->dir, "manifests");
    if (!dir) return store_errf(e, -ENOMEM, "out of memory");
    DIR *d = opendir(dir);
    if (!d) {
        int rc = store_errf(e, -errno, "%s: %s", dir, strerror(errno));
        free(dir);
        return rc;
    }
    size_t cap = 0;
    struct dirent *de;
    int rc;
    while ((rc = util_next_entry(d, &de)) > 0) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.') continue;
        if (len == 24 && !strcmp(de->d_name + 20, ".cmf")) {
            char id[STORE_SNAPID_LEN];
            memcpy(id, de->d_name, 20);
            id[20] = 0;
            if (!store_snapid_valid(id)) {
                if (*n == cap) {
                    size_t nc = cap ? cap * 2 : 64;
                    void *v = realloc(*ids, nc * sizeof **ids);
                    if (!v) {
                        rc = -ENOMEM;
                        break;
                    }
                    *ids = v;
                    cap = nc;
                }
                memcpy((*ids)[(*n)++], id, STORE_SNAPID_LEN);
                continue;
            }
        }
        if (len == 26 && !strcmp(de->d_name + 20, ".files")) continue;   /* checked per manifest */
        reportf(report, arg, 0, "manifests/%s: not a manifest (leftover of an interrupted commit?)",
                de->d_name);
    }
    closedir(d);
    if (rc) {
        /* A partial list would make the missing manifests' chunks look unused. */
        free(*ids);
        *ids = NULL;
        *n = 0;
        store_errf(e, rc, "%s: cannot list: %s", dir, strerror(-rc));
    }
    free(dir);
    return rc;
}

static int verify_pack_data(store_t *s, pack_info *pi, store_report_fn report, void *arg)
{
    char *path = pack_path(s, pi->pack, 0);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0) return -errno;
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
        int rc = util_pread_all(fd, frame, gr->clen, (off_t)gr->offset);
        if (!rc) rc = store_group_decompress(d, frame, gr->clen, pages, gr->npages, &e);
        else store_errf(&e, rc, "read error");
        if (rc) {
            reportf(report, arg, 1, "pack %016llx: group at offset %llu: %s",
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
                reportf(report, arg, 1, "pack %016llx: group at offset %llu: page %u does not "
                        "match its id %s (corrupt data)", (unsigned long long)pi->pack,
                        (unsigned long long)gr->offset, i, hex);
                bad++;
            }
        }
    }
    free(frame);
    free(pages);
    store_dctx_free(d);
    close(fd);
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
    rc = scan_packs(s, &pl, report, arg, NULL);
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
                 (pi = find_pack(&pl, l.pack)) && (g = find_group(pi, l.offset)) &&
                 g->clen == l.clen && g->npages == l.npages && l.slot < g->npages &&
                 !memcmp(&pi->ids[g->first + l.slot], k, 16);
        if (ok) pi->referenced++;
        else if (bad_entries++ < 20) {
            char hex[STORE_ID_HEX] = "?";
            if (kl == 16) store_id_hex((const store_id *)k, hex);
            reportf(report, arg, 1, "index: chunk %s points to a place that does not hold it%s",
                    hex, pi ? "" : " (pack missing)");
        }
    }
    rc = index_iter_status(it, e, "reading chunk records");
    rocksdb_iter_destroy(it);
    if (rc) {
        free_packs(&pl);
        return rc;
    }
    if (bad_entries > 20)
        reportf(report, arg, 1, "index: %llu bad chunk entries in all (run `cairn fsck --rebuild-index`)",
                (unsigned long long)bad_entries);
    uint64_t counted = 0;
    if ((rc = index_get_counter(s, "chunks", &counted, e))) {
        free_packs(&pl);
        return rc;
    }
    if (counted != nchunks)
        reportf(report, arg, 0, "index: chunk counter says %llu, the index holds %llu",
                (unsigned long long)counted, (unsigned long long)nchunks);
    for (size_t i = 0; i < pl.n; i++)
        if (!pl.v[i].referenced && pl.v[i].nchunks)
            reportf(report, arg, 0, "pack %016llx: no index entry uses it (%llu bytes, from an "
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
        free_packs(&pl);
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
            reportf(report, arg, 1, "%s", me.msg);
            continue;
        }
        if (snap->files_hash[0]) {
            store_findex *fi = NULL;
            if (store_findex_load(s, snap, &fi, &me)) reportf(report, arg, 1, "%s", me.msg);
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
                reportf(report, arg, 0, "snapshot %s: its commit was interrupted after the manifest; "
                        "the next writer finishes it", ids[m]);
            else if (rc == -ENOENT)
                reportf(report, arg, 1, "snapshot %s: has a manifest but no index record", ids[m]);
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
                    reportf(report, arg, 1, "snapshot %s: %s: page at offset %llu: chunk not in "
                            "the store", snap->id, bl->name, (unsigned long long)i * STORE_PAGE);
            }
            if (missing > 5)
                reportf(report, arg, 1, "snapshot %s: %s: %llu pages missing in all", snap->id,
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
            reportf(report, arg, !dropping, dropping ? "snapshot %.*s: gc's drop of it was interrupted; the next "
                    "gc finishes it" : "snapshot %.*s: indexed but its manifest is missing", (int)kl, k);
        }
        if (!rc) rc = index_iter_status(it, e, "reading snapshot records");
        rocksdb_iter_destroy(it);
    }
    free(ids);
    free_packs(&pl);
    return rc;
}

int store_get_stats(store_t *s, store_stats *st, store_err *e)
{
    memset(st, 0, sizeof *st);
    int rc = index_get_counter(s, "snapshots", &st->snapshots, e);
    if (!rc) rc = index_get_counter(s, "logical_bytes", &st->logical_bytes, e);
    if (!rc) rc = index_get_counter(s, "chunks", &st->chunks, e);
    if (rc) return rc;
    char *dir = util_path(s->dir, "packs");
    if (!dir) return store_errf(e, -ENOMEM, "out of memory");
    DIR *d = opendir(dir);
    if (!d) rc = -errno;
    struct dirent *de;
    while (d && (rc = util_next_entry(d, &de)) > 0) {
        struct stat sb;
        if (de->d_name[0] == '.') continue;
        if (fstatat(dirfd(d), de->d_name, &sb, 0) < 0) {
            if (errno == ENOENT) continue;     /* deleted by a gc meanwhile */
            rc = -errno;
            break;
        }
        st->stored_bytes += (uint64_t)sb.st_size;
        st->packs++;
    }
    if (d) closedir(d);
    if (rc) store_errf(e, rc, "%s: %s", dir, strerror(-rc));
    free(dir);
    static const char *const sub[] = {"index", "manifests"};
    uint64_t *out[] = {&st->index_bytes, &st->manifest_bytes};
    for (int i = 0; !rc && i < 2; i++) {
        dir = util_path(s->dir, sub[i]);
        rc = dir ? util_dir_bytes(dir, out[i]) : -ENOMEM;
        if (rc) store_errf(e, rc, "%s/%s: %s", s->dir, sub[i], strerror(-rc));
        free(dir);
    }
    return rc;
}

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

int store_rebuild_index(store_t *s, store_report_fn report, void *arg, store_err *e)
{
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "rebuild needs the store opened for writing");
    index_close(s);
    char *path = util_path(s->dir, "index");
    int rc = path ? rm_index_dir(path) : -ENOMEM;
    free(path);
    if (rc) return store_errf(e, rc, "%s/index: cannot remove: %s", s->dir, strerror(-rc));
    if ((rc = index_open(s, 1, e))) return rc;

    pack_list pl = {0};
    if ((rc = scan_packs(s, &pl, report, arg, NULL)))
        return store_errf(e, rc, "%s/packs: %s", s->dir, strerror(-rc));
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    uint64_t chunks = 0, next_pack = 0;
    for (size_t i = 0; !rc && i < pl.n; i++) {
        pack_info *pi = &pl.v[i];
        if (pi->pack >= next_pack) next_pack = pi->pack + 1;
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
    free_packs(&pl);
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
            reportf(report, arg, 1, "%s (left out of the index)", me.msg);
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

int store_pack_list(store_t *s, uint64_t **packs, size_t *n, store_err *e)
{
    *packs = NULL;
    *n = 0;
    char *dir = util_path(s->dir, "packs");
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    if (!d) return store_errf(e, -errno, "%s/packs: %s", s->dir, strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    int rc;
    while ((rc = util_next_entry(d, &de)) > 0) {
        uint64_t p;
        if (parse_pack_name(de->d_name, &p)) continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            uint64_t *v = realloc(*packs, nc * sizeof *v);
            if (!v) {
                rc = -ENOMEM;
                break;
            }
            *packs = v;
            cap = nc;
        }
        (*packs)[(*n)++] = p;
    }
    closedir(d);
    if (rc) {
        free(*packs);
        *packs = NULL;
        *n = 0;
        return store_errf(e, rc, "%s/packs: cannot list: %s", s->dir, strerror(-rc));
    }
    for (size_t i = 1; i < *n; i++)          /* insertion sort: the list is nearly sorted */
        for (size_t j = i; j > 0 && (*packs)[j - 1] > (*packs)[j]; j--) {
            uint64_t t = (*packs)[j];
            (*packs)[j] = (*packs)[j - 1];
            (*packs)[j - 1] = t;
        }
    return 0;
}

int store_pack_footer(store_t *s, uint64_t pack, store_group **groups, uint32_t *ngroups,
                      store_id **ids, uint32_t *nchunks, uint64_t *bytes, store_err *e)
{
    char *path = pack_path(s, pack, 0);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    char name[32];
    snprintf(name, sizeof name, "%016llx", (unsigned long long)pack);
    free(path);
    if (fd < 0) return store_errf(e, -errno, "pack %s: %s", name, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? store_errf(e, -errno, "pack %s: %s", name, strerror(errno))
                                : pack_read_footer(fd, (uint64_t)st.st_size, groups, ngroups, ids, nchunks, e, name);
    if (!rc && bytes) *bytes = (uint64_t)st.st_size;
    close(fd);
    return rc;
}

int store_pack_delete(store_t *s, uint64_t pack, store_err *e)
{
    char *path = pack_path(s, pack, 0);
    int rc = path && unlink(path) < 0 && errno != ENOENT ? -errno : 0;
    free(path);
    pthread_mutex_lock(&s->mu);           /* a cached read fd of it is stale now */
    if (pack < s->npack_fds && s->pack_fds[pack] > 0) {
        close(s->pack_fds[pack]);
        s->pack_fds[pack] = 0;
    }
    pthread_mutex_unlock(&s->mu);
    char *dir = util_path(s->dir, "packs");
    if (!rc && dir) rc = util_fsync_dir(dir);
    free(dir);
    if (rc) return store_errf(e, rc, "pack %016llx: cannot delete: %s", (unsigned long long)pack, strerror(-rc));
    return 0;
}

/* DIR/cache/ holds derived files named NAME-<snapshot id>.EXT (materialized templates);
 * one whose snapshot is gone is dropped with the temps. */
static int remove_stale_cache(store_t *s, store_err *e)
{
    char *dir = util_path(s->dir, "cache");
    if (!dir) return store_errf(e, -ENOMEM, "out of memory");
    DIR *d = opendir(dir);
    int rc = d || errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    while (d && (rc = util_next_entry(d, &de)) > 0) {
        const char *dash = strrchr(de->d_name, '-'), *dot = strrchr(de->d_name, '.');
        if (!dash || !dot || dot - dash != 21) continue;
        char id[STORE_SNAPID_LEN], name[64];
        memcpy(id, dash + 1, 20);
        id[20] = 0;
        if (store_snapid_valid(id)) continue;
        snprintf(name, sizeof name, "manifests/%s.cmf", id);
        char *m = util_path(s->dir, name);
        struct stat st;
        if (!m) rc = -ENOMEM;
        else if (stat(m, &st) == 0) rc = 1;
        else if (errno != ENOENT) rc = -errno;
        else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) rc = -errno;
        else rc = 1;
        free(m);
        if (rc < 0) break;
    }
    if (d) closedir(d);
    if (rc) store_errf(e, rc, "%s: %s", dir, strerror(-rc));
    free(dir);
    return rc;
}

int store_remove_temps(store_t *s, store_err *e)
{
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "removing temps needs the store opened for writing");
    int rc = remove_stale_cache(s, e);
    static const char *dirs[] = {"packs", "manifests"};
    for (size_t k = 0; !rc && k < 2; k++) {
        char *dir = util_path(s->dir, dirs[k]);
        if (!dir) return store_errf(e, -ENOMEM, "out of memory");
        DIR *d = opendir(dir);
        if (!d) rc = -errno;
        struct dirent *de;
        while (d && (rc = util_next_entry(d, &de)) > 0) {
            size_t len = strlen(de->d_name);
            if (len > 4 && !strcmp(de->d_name + len - 4, ".tmp") &&
                unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
                rc = -errno;
                break;
            }
        }
        if (d) closedir(d);
        if (!rc) rc = util_fsync_dir(dir);
        if (rc) store_errf(e, rc, "%s: %s", dir, strerror(-rc));
        free(dir);
    }
    return rc;
}
