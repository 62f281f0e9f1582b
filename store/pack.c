/* Packs: immutable files of compressed page groups, and the writer that makes them.
 *
 * Layout (little-endian)
 *   header   16 B   "CAIRNPK1", u32 format, u32 0
 *   frames          one zstd frame (with its content checksum) per group of <= 64 pages
 *   footer          per group: u64 offset, u32 clen, u16 npages, u16 0;
 *                   then every chunk id, group by group, in slot order
 *   trailer  32 B   u64 footer offset, u32 groups, u32 chunks, u64 XXH3-64(footer), "CAIRNPKE"
 * The footer alone says which chunk sits where, so the index is rebuildable (I3).
 *
 * Writer states: no pack open -> pack open (.tmp, appending) -> sealed (footer written,
 * still .tmp) -> committed (fsynced, renamed to .pack: commit.c). Abort unlinks every .tmp.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "store/internal.h"
#include "store/upload.h"

#define ZSTD_LEVEL 3
#define ZSTD_HASH_LOG 13
#define ZSTD_CHAIN_LOG 12
#define WRITEBACK_BYTES (4u << 20)

char *pack_path(const store_t *s, uint64_t pack, int tmp)
{
    char name[64];
    snprintf(name, sizeof name, "packs/%016llx.pack%s", (unsigned long long)pack, tmp ? ".tmp" : "");
    return util_path(s->dir, name);
}

/* ---- compression ----------------------------------------------------------------- */

struct store_cctx { ZSTD_CCtx *z; };
struct store_dctx { ZSTD_DCtx *z; };

store_cctx *store_cctx_new(void)
{
    store_cctx *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->z = ZSTD_createCCtx();
    /* Level 3's match finder with tables that fit a core's L1 cache: for a 256 KiB group
     * level 3 picks 2^16-entry hash and chain tables (512 KiB), which every group resets
     * and then misses in. On the API bench's distinct pages (35k): 31% less compression
     * CPU, 0.9% larger frames (ratio 2.910 against 2.937), decompression unchanged; level
     * 2 is both slower and larger (docs/performance.md, Stored bytes). */
    if (!c->z || ZSTD_isError(ZSTD_CCtx_setParameter(c->z, ZSTD_c_compressionLevel, ZSTD_LEVEL)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c->z, ZSTD_c_hashLog, ZSTD_HASH_LOG)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c->z, ZSTD_c_chainLog, ZSTD_CHAIN_LOG)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(c->z, ZSTD_c_checksumFlag, 1))) {
        store_cctx_free(c);
        return NULL;
    }
    return c;
}

void store_cctx_free(store_cctx *c)
{
    if (!c) return;
    ZSTD_freeCCtx(c->z);
    free(c);
}

size_t store_group_bound(unsigned n) { return ZSTD_compressBound((size_t)n * STORE_PAGE); }

ssize_t store_group_compress(store_cctx *c, const void *pages, unsigned n, void *dst, size_t cap)
{
    size_t r = ZSTD_compress2(c->z, dst, cap, pages, (size_t)n * STORE_PAGE);
    return ZSTD_isError(r) ? -EIO : (ssize_t)r;
}

store_dctx *store_dctx_new(void)
{
    store_dctx *d = malloc(sizeof *d);
    if (!d) return NULL;
    d->z = ZSTD_createDCtx();
    if (!d->z) {
        free(d);
        return NULL;
    }
    return d;
}

void store_dctx_free(store_dctx *d)
{
    if (!d) return;
    ZSTD_freeDCtx(d->z);
    free(d);
}

int store_group_decompress_prefix(store_dctx *d, const void *frame, size_t flen, void *pages,
                                  unsigned npages, unsigned want, store_err *e)
{
    if (want >= npages) return store_group_decompress(d, frame, flen, pages, npages, e);
    /* Stream until the first `want` pages are out, then drop the rest of the frame. The
     * frame checksum is not reached; every page is checked against its id by the caller. */
    ZSTD_DCtx_reset(d->z, ZSTD_reset_session_only);
    ZSTD_inBuffer in = {frame, flen, 0};
    ZSTD_outBuffer out = {pages, (size_t)want * STORE_PAGE, 0};
    while (out.pos < out.size) {
        size_t r = ZSTD_decompressStream(d->z, &out, &in);
        if (ZSTD_isError(r)) {
            ZSTD_DCtx_reset(d->z, ZSTD_reset_session_only);
            return store_errf(e, -EBADMSG, "corrupt group: %s", ZSTD_getErrorName(r));
        }
        if (r == 0 || (in.pos == in.size && out.pos < out.size)) break;
    }
    ZSTD_DCtx_reset(d->z, ZSTD_reset_session_only);
    if (out.pos < out.size) return store_errf(e, -EBADMSG, "corrupt group: ends early");
    return 0;
}

int store_group_decompress(store_dctx *d, const void *frame, size_t flen, void *pages,
                           unsigned npages, store_err *e)
{
    size_t want = (size_t)npages * STORE_PAGE;
    size_t r = ZSTD_decompressDCtx(d->z, pages, want, frame, flen);
    if (ZSTD_isError(r)) return store_errf(e, -EBADMSG, "corrupt group: %s", ZSTD_getErrorName(r));
    if (r != want) return store_errf(e, -EBADMSG, "corrupt group: %zu bytes, expected %zu", r, want);
    return 0;
}

/* ---- writer ---------------------------------------------------------------------- */


static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

int store_reserve_packs(store_t *s, uint64_t n, uint64_t *first, store_err *e)
{
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "store opened read-only");
    pthread_mutex_lock(&s->mu);
    *first = s->next_pack;
    s->next_pack += n;
    char num[32];
    int nl = snprintf(num, sizeof num, "%llu", (unsigned long long)s->next_pack);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put(b, "next_pack", 9, num, (size_t)nl);
    int rc = index_write(s, b, 1, e);
    rocksdb_writebatch_destroy(b);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int store_writer_open_range(store_t *s, uint64_t first, uint64_t n, store_writer **out, store_err *e)
{
    if (s->mode == STORE_READ) return store_errf(e, -EROFS, "store opened read-only");
    store_writer *w = calloc(1, sizeof *w);
    if (!w) return store_errf(e, -ENOMEM, "out of memory");
    w->s = s;
    w->fd = -1;
    w->range_next = first;
    w->range_end = first + n;
    *out = w;
    return 0;
}

int store_writer_open(store_t *s, store_writer **out, store_err *e)
{
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "store opened read-only");
    store_writer *w = calloc(1, sizeof *w);
    if (!w) return store_errf(e, -ENOMEM, "out of memory");
    w->s = s;
    w->fd = -1;
    w->index_early = 1;
    int rc = s->be->remote ? gone_writer_open(w, e) : 0;
    if (rc) {
        writer_free(w, 1);
        return rc;
    }
    *out = w;
    return 0;
}

uint64_t store_writer_generation(const store_writer *w) { return w->generation; }

uint64_t store_writer_bytes(const store_writer *w) { return w->bytes; }

static int open_pack(store_writer *w, store_err *e)
{
    store_t *s = w->s;
    for (;;) {
        uint64_t n;
        if (w->range_end) {
            if (w->range_next >= w->range_end)
                return store_errf(e, -ENOSPC, "out of reserved pack numbers");
            n = w->range_next++;
        } else {
            pthread_mutex_lock(&s->mu);
            n = s->next_pack++;
            pthread_mutex_unlock(&s->mu);
        }
        /* Nodes of one bucket number their packs in their own range (top bits: the tag). */
        if (s->be->remote) n = (uint64_t)s->node << NODE_SHIFT | (n & ((1ULL << NODE_SHIFT) - 1));
        /* The counter is only a hint (it may lag after a crash): never reuse a name. */
        char *final = pack_path(s, n, 0), *tmp = pack_path(s, n, 1);
        struct stat st;
        int taken = final && stat(final, &st) == 0;
        int fd = -1;
        if (!taken && tmp) fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        int err = errno;
        free(final);
        free(tmp);
        if (taken || (fd < 0 && err == EEXIST)) continue;
        if (fd < 0) return store_errf(e, -err, "%s/packs: cannot create a pack: %s", s->dir, strerror(err));
        uint8_t hdr[PACK_HEADER_LEN] = {0};
        memcpy(hdr, PACK_HEADER, 8);
        util_put_le32(hdr + 8, STORE_FORMAT);
        int rc = util_write_all(fd, hdr, sizeof hdr);
        if (rc) {
            close(fd);
            char *t = pack_path(s, n, 1);
            if (t) unlink(t);
            free(t);
            return store_errf(e, rc, "%s/packs: writing a pack: %s", s->dir, strerror(-rc));
        }
        w->fd = fd;
        w->pack = n;
        w->off = PACK_HEADER_LEN;
        w->written_back = 0;
        w->ngroups = w->nids = 0;
        return 0;
    }
}

int pack_seal(store_writer *w, store_err *e)
{
    if (w->fd < 0) return 0;
    size_t flen = (size_t)w->ngroups * 16 + (size_t)w->nids * 16;
    uint8_t *f = malloc(flen + PACK_TRAILER_LEN);
    if (!f) return store_errf(e, -ENOMEM, "out of memory");
    uint8_t *p = f;
    for (uint32_t g = 0; g < w->ngroups; g++, p += 16) {
        util_put_le64(p, w->groups[g].offset);
        util_put_le32(p + 8, w->groups[g].clen);
        p[12] = (uint8_t)w->groups[g].npages;
        p[13] = (uint8_t)(w->groups[g].npages >> 8);
        p[14] = p[15] = 0;
    }
    memcpy(p, w->ids, (size_t)w->nids * 16);
    p += (size_t)w->nids * 16;
    util_put_le64(p, w->off);
    util_put_le32(p + 8, w->ngroups);
    util_put_le32(p + 12, w->nids);
    util_put_le64(p + 16, XXH3_64bits(f, flen));
    memcpy(p + 24, PACK_TRAILER, 8);
    int rc = util_pwrite_all(w->fd, f, flen + PACK_TRAILER_LEN, (off_t)w->off);
    free(f);
    if (rc) return store_errf(e, rc, "%s/packs: writing a pack footer: %s", w->s->dir, strerror(-rc));
    w->bytes += flen + PACK_TRAILER_LEN + PACK_HEADER_LEN;
    if (w->npacks == w->pcap) {
        size_t nc = w->pcap ? 2 * w->pcap : 8;
        uint64_t *np = realloc(w->packs, nc * sizeof *np);
        if (np) w->packs = np;
        int *nf = realloc(w->fds, nc * sizeof *nf);
        if (nf) w->fds = nf;
        uint64_t *ne = realloc(w->pack_end, nc * sizeof *ne);
        if (ne) w->pack_end = ne;
        if (!np || !nf || !ne) return store_errf(e, -ENOMEM, "out of memory");
        w->pcap = nc;
    }
    w->packs[w->npacks] = w->pack;
    w->fds[w->npacks] = w->fd;
    w->pack_end[w->npacks] = w->total_chunks + w->nall;
    w->npacks++;
    w->fd = -1;
    return 0;
}


int store_writer_add_group(store_writer *w, const store_id *ids, unsigned n, const void *frame,
                           size_t flen, store_err *e)
{
    if (n == 0 || n > STORE_GROUP_PAGES) return store_errf(e, -EINVAL, "bad group size %u", n);
    int rc;
    if (w->fd < 0 && (rc = open_pack(w, e))) return rc;
    size_t gcap = w->gcap, icap = w->icap, acap = w->acap;
    int nomem = grow((void **)&w->groups, &gcap, w->ngroups + 1, sizeof *w->groups) ||
                grow((void **)&w->ids, &icap, (size_t)w->nids + n, sizeof *w->ids) ||
                grow((void **)&w->all_ids, &acap, w->nall + n, sizeof *w->all_ids);
    w->gcap = (uint32_t)gcap;
    w->icap = (uint32_t)icap;
    /* all_ids and all_locs share one capacity: raise it only once both have grown. */
    if (!nomem && acap != w->acap) {
        store_loc *nl = realloc(w->all_locs, acap * sizeof *nl);
        if (nl) {
            w->all_locs = nl;
            w->acap = acap;
        } else nomem = 1;
    }
    if (nomem) return store_errf(e, -ENOMEM, "out of memory");
    rc = util_pwrite_all(w->fd, frame, flen, (off_t)w->off);
    if (rc)
        return store_errf(e, rc, "%s/packs: writing pack %016llx: %s", w->s->dir,
                          (unsigned long long)w->pack, strerror(-rc));
    w->groups[w->ngroups++] = (pack_group){.offset = w->off, .clen = (uint32_t)flen,
                                           .npages = (uint16_t)n, .first = w->nids};
    memcpy(w->ids + w->nids, ids, (size_t)n * sizeof *ids);
    w->nids += n;
    for (unsigned i = 0; i < n; i++) {
        w->all_ids[w->nall] = ids[i];
        w->all_locs[w->nall++] = (store_loc){.pack = w->pack, .offset = w->off,
                                             .clen = (uint32_t)flen, .npages = (uint16_t)n,
                                             .slot = (uint16_t)i};
    }
    w->off += flen;
    w->bytes += flen;
    /* Writeback starts now, in the background, instead of all at the fsync that makes the
     * pack durable (a first snapshot's 32 MB pack: that fsync took 20 ms). Only a hint:
     * the fsync still comes, and reports any write error. */
    if (w->off - w->written_back >= WRITEBACK_BYTES) {
        (void)sync_file_range(w->fd, (off_t)w->written_back, (off_t)(w->off - w->written_back),
                              SYNC_FILE_RANGE_WRITE);
        w->written_back = w->off;
    }
    if (w->off >= PACK_TARGET_BYTES) return w->index_early ? commit_index_sealed(w, e) : pack_seal(w, e);
    return 0;
}

void writer_free(store_writer *w, int unlink_tmp)
{
    if (!w) return;
    uploader_free(w->up);   /* first: its PUTs read the packs */
    if (w->fd >= 0) {
        close(w->fd);
        if (unlink_tmp) {
            char *t = pack_path(w->s, w->pack, 1);
            if (t) unlink(t);
            free(t);
        }
    }
    for (size_t i = 0; i < w->npacks; i++) {
        if (w->fds[i] >= 0) close(w->fds[i]);
        if (unlink_tmp) {
            char *t = pack_path(w->s, w->packs[i], 1);
            if (t) unlink(t);
            free(t);
        }
    }
    free(w->groups);
    free(w->ids);
    free(w->packs);
    free(w->fds);
    free(w->pack_end);
    free(w->all_ids);
    free(w->all_locs);
    u64vec_free(&w->avoid);
    free(w);
}

void store_writer_abort(store_writer *w) { writer_free(w, 1); }

/* ---- reading --------------------------------------------------------------------- */

static uint64_t slot_of(uint64_t pack, uint64_t cap)
{
    return (pack * 0x9E3779B97F4A7C15ULL >> 20) & (cap - 1);
}

static int fds_grow_locked(store_t *s)
{
    uint64_t cap = s->npack_fds ? 2 * s->npack_fds : 256;
    struct pack_fd_slot *t = calloc(cap, sizeof *t);
    if (!t) return -ENOMEM;
    for (uint64_t i = 0; i < s->npack_fds; i++) {
        if (!s->pack_fds[i].fd) continue;
        uint64_t j = slot_of(s->pack_fds[i].pack, cap);
        while (t[j].fd) j = (j + 1) & (cap - 1);
        t[j] = s->pack_fds[i];
    }
    free(s->pack_fds);
    s->pack_fds = t;
    s->npack_fds = cap;
    return 0;
}

static struct pack_fd_slot *fds_find_locked(store_t *s, uint64_t pack)
{
    if (!s->npack_fds) return NULL;
    for (uint64_t j = slot_of(pack, s->npack_fds);; j = (j + 1) & (s->npack_fds - 1)) {
        if (!s->pack_fds[j].fd) return NULL;
        if (s->pack_fds[j].pack == pack) return &s->pack_fds[j];
    }
}

void pack_fd_forget_locked(store_t *s, uint64_t pack)
{
    struct pack_fd_slot *f = fds_find_locked(s, pack);
    if (!f) return;
    close(f->fd);
    /* Re-insert the rest of the cluster so lookups past the hole still find theirs. */
    uint64_t cap = s->npack_fds, j = (uint64_t)(f - s->pack_fds);
    f->fd = 0;
    s->used_pack_fds--;
    for (j = (j + 1) & (cap - 1); s->pack_fds[j].fd; j = (j + 1) & (cap - 1)) {
        struct pack_fd_slot v = s->pack_fds[j];
        s->pack_fds[j].fd = 0;
        uint64_t k = slot_of(v.pack, cap);
        while (s->pack_fds[k].fd) k = (k + 1) & (cap - 1);
        s->pack_fds[k] = v;
    }
}

void pack_fds_close(store_t *s)
{
    for (uint64_t i = 0; i < s->npack_fds; i++)
        if (s->pack_fds[i].fd > 0) close(s->pack_fds[i].fd);
    free(s->pack_fds);
    s->pack_fds = NULL;
    s->npack_fds = s->used_pack_fds = 0;
}

/* -ENOENT (with no message) when the pack is not in this folder and the store is on S3:
 * the caller then reads the bucket. Pack numbers are sparse there (a node's tag in the top
 * bits), so the cache of fds is a hash table, not an array. */
int pack_fd(store_t *s, uint64_t pack, store_err *e)
{
    pthread_mutex_lock(&s->mu);
    struct pack_fd_slot *f = fds_find_locked(s, pack);
    if (f) {
        int fd = f->fd;
        pthread_mutex_unlock(&s->mu);
        return fd;
    }
    int rc = 0;
    if (2 * (s->used_pack_fds + 1) > s->npack_fds) rc = fds_grow_locked(s);
    char *path = rc ? NULL : pack_path(s, pack, 0);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (rc) rc = store_errf(e, rc, "out of memory");
    else if (fd < 0 && errno == ENOENT && s->be->remote) rc = -ENOENT;
    else if (fd < 0) rc = store_errf(e, -errno, "pack %016llx: %s", (unsigned long long)pack, strerror(errno));
    else {
        uint64_t j = slot_of(pack, s->npack_fds);
        while (s->pack_fds[j].fd) j = (j + 1) & (s->npack_fds - 1);
        s->pack_fds[j] = (struct pack_fd_slot){pack, fd};
        s->used_pack_fds++;
    }
    free(path);
    pthread_mutex_unlock(&s->mu);
    return rc ? rc : fd;
}

int store_read_frame(store_t *s, const store_loc *loc, void *buf, size_t cap, store_err *e)
{
    if (loc->clen > cap) return store_errf(e, -EINVAL, "frame larger than buffer");
    int fd = pack_fd(s, loc->pack, e);
    if (fd == -ENOENT && s->be->remote) return remote_read_frame(s, loc, buf, e);
    if (fd < 0) return fd;
    int rc = util_pread_all(fd, buf, loc->clen, (off_t)loc->offset);
    if (rc)
        return store_errf(e, rc, "pack %016llx: reading %u bytes at %llu: %s",
                          (unsigned long long)loc->pack, loc->clen,
                          (unsigned long long)loc->offset, rc == -EIO ? "truncated pack" : strerror(-rc));
    return 0;
}

static int read_fd(void *ctx, void *buf, size_t len, uint64_t off)
{
    return util_pread_all(*(int *)ctx, buf, len, (off_t)off);
}

int pack_read_footer(int fd, uint64_t fsize, pack_group **groups, uint32_t *ngroups,
                     store_id **ids, uint32_t *nchunks, store_err *e, const char *name)
{
    return pack_read_footer_with(read_fd, &fd, fsize, groups, ngroups, ids, nchunks, e, name);
}

int pack_read_footer_with(pack_reader rd, void *ctx, uint64_t fsize, pack_group **groups,
                          uint32_t *ngroups, store_id **ids, uint32_t *nchunks, store_err *e,
                          const char *name)
{
    uint8_t hdr[PACK_HEADER_LEN], tr[PACK_TRAILER_LEN];
    if (fsize < PACK_HEADER_LEN + PACK_TRAILER_LEN ||
        rd(ctx, hdr, sizeof hdr, 0) || rd(ctx, tr, sizeof tr, fsize - PACK_TRAILER_LEN))
        return store_errf(e, -EBADMSG, "pack %s: too short or unreadable", name);
    if (memcmp(hdr, PACK_HEADER, 8) || memcmp(tr + 24, PACK_TRAILER, 8))
        return store_errf(e, -EBADMSG, "pack %s: bad header or trailer magic", name);
    uint64_t foff = util_get_le64(tr);
    uint32_t ng = util_get_le32(tr + 8), nc = util_get_le32(tr + 12);
    uint64_t flen = (uint64_t)ng * 16 + (uint64_t)nc * 16;
    if (foff < PACK_HEADER_LEN || foff + flen + PACK_TRAILER_LEN != fsize ||
        nc > (uint64_t)ng * STORE_GROUP_PAGES)
        return store_errf(e, -EBADMSG, "pack %s: footer does not fit the file", name);
    uint8_t *f = malloc(flen ? flen : 1);
    pack_group *g = malloc(((size_t)ng + 1) * sizeof *g);
    store_id *id = malloc(((size_t)nc + 1) * sizeof *id);
    int rc = 0;
    if (!f || !g || !id) rc = store_errf(e, -ENOMEM, "out of memory");
    else if (rd(ctx, f, flen, foff))
        rc = store_errf(e, -EBADMSG, "pack %s: cannot read footer", name);
    else if (XXH3_64bits(f, flen) != util_get_le64(tr + 16))
        rc = store_errf(e, -EBADMSG, "pack %s: footer checksum mismatch", name);
    uint64_t pos = PACK_HEADER_LEN;
    uint32_t first = 0;
    for (uint32_t i = 0; !rc && i < ng; i++) {
        const uint8_t *p = f + (size_t)i * 16;
        g[i] = (pack_group){.offset = util_get_le64(p), .clen = util_get_le32(p + 8),
                            .npages = (uint16_t)(p[12] | p[13] << 8), .first = first};
        /* Groups tile the data region in order: anything else is a damaged footer. */
        if (g[i].offset != pos || g[i].npages == 0 || g[i].npages > STORE_GROUP_PAGES ||
            g[i].clen == 0 || pos + g[i].clen > foff)
            rc = store_errf(e, -EBADMSG, "pack %s: group %u is malformed", name, i);
        pos += g[i].clen;
        first += g[i].npages;
    }
    if (!rc && (first != nc || pos != foff))
        rc = store_errf(e, -EBADMSG, "pack %s: footer counts disagree", name);
    if (!rc) memcpy(id, f + (size_t)ng * 16, (size_t)nc * 16);
    free(f);
    if (rc) {
        free(g);
        free(id);
        return rc;
    }
    *groups = g;
    *ngroups = ng;
    *ids = id;
    *nchunks = nc;
    return 0;
}
