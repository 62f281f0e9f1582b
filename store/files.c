/* File index of a snapshot's disk: classes, encoding, loading, and reading file bytes
 * through the disk's recipe.
 *
 * manifests/ID.files: "CAIRNFI1", u64 raw length, zstd(raw). The manifest records the
 * XXH3-64 of the whole file (files_hash), so a damaged or swapped index is refused.
 * raw: varint count, varint warning length + 1 (0 = none) and bytes, then per entry:
 *   varint path length, path, u8 type, u8 class, varints mode uid gid, zigzag atime mtime
 *   ctime, varints size nlink rdev, varint target length + 1 (0 = none) and bytes,
 *   varint inline length + 1 and bytes, varint extent count, per extent varints file_off
 *   disk_off len, varint xattr count, per xattr varint name length, name, varint value
 *   length, value.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "store/internal.h"

#define FILES_MAGIC "CAIRNFI1"

static const char *class_names[STORE_CLASS_COUNT] = {"runtime", "artifact", "upload", "project",
                                                     "secret", "cache", "temp"};

const char *store_class_name(store_class c)
{
    return (unsigned)c < STORE_CLASS_COUNT ? class_names[c] : "?";
}

int store_class_parse(const char *name)
{
    for (int i = 0; i < STORE_CLASS_COUNT; i++)
        if (!strcmp(name, class_names[i])) return i;
    return -1;
}

int store_class_important(store_class c)
{
    return c == STORE_CLASS_ARTIFACT || c == STORE_CLASS_UPLOAD || c == STORE_CLASS_PROJECT;
}

void store_fentry_clear(store_fentry *f)
{
    free(f->path);
    free(f->target);
    free(f->inline_data);
    free(f->ext);
    for (uint32_t k = 0; k < f->nxattrs; k++) {
        free(f->xattrs[k].name);
        free(f->xattrs[k].value);
    }
    free(f->xattrs);
    memset(f, 0, sizeof *f);
}

void store_findex_free(store_findex *fi)
{
    if (!fi) return;
    for (size_t i = 0; i < fi->n; i++) store_fentry_clear(&fi->e[i]);
    free(fi->e);
    free(fi->warning);
    free(fi);
}

static int path_cmp(const char *a, size_t la, const char *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    return c ? c : (la < lb ? -1 : la > lb);
}

size_t store_findex_lower_bound(const store_findex *fi, const char *p, size_t len)
{
    size_t lo = 0, hi = fi->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (path_cmp(fi->e[mid].path, fi->e[mid].path_len, p, len) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

const store_fentry *store_findex_find(const store_findex *fi, const char *p, size_t len)
{
    size_t i = store_findex_lower_bound(fi, p, len);
    return i < fi->n && !path_cmp(fi->e[i].path, fi->e[i].path_len, p, len) ? &fi->e[i] : NULL;
}

const store_fentry *store_findex_get(const store_findex *fi, const char *path)
{
    return store_findex_find(fi, path, strlen(path));
}

int store_findex_sorted(const store_findex *fi)
{
    for (size_t i = 0; i < fi->n; i++) {
        const store_fentry *b = &fi->e[i];
        if (!b->path || strlen(b->path) != b->path_len) return 0;
        if (i && path_cmp(fi->e[i - 1].path, fi->e[i - 1].path_len, b->path, b->path_len) >= 0) return 0;
    }
    return 1;
}

const char *store_path_problem(const char *p)
{
    if (p[0] != '/') return "not an absolute path";
    if (!p[1]) return NULL;
    for (const char *c = p + 1;;) {
        const char *end = strchr(c, '/');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        if (n == 0) return "empty path component";
        if (n == 1 && c[0] == '.') return "'.' path component";
        if (n == 2 && c[0] == '.' && c[1] == '.') return "'..' path component";
        if (n > 255) return "path component longer than 255 bytes";
        if (!end) return NULL;
        c = end + 1;
    }
}

const char *store_path_printable(const char *p, char *out, size_t cap)
{
    size_t o = 0;
    const unsigned char *c = (const unsigned char *)p;
    for (; *c && o + 8 < cap; c++) {
        if (*c >= 0x20 && *c < 0x7f && *c != '\\') out[o++] = (char)*c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *c);
    }
    if (*c) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = 0;
    return out;
}

/* ---- encoding ---------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} wbuf;

static void wb_need(wbuf *w, size_t more)
{
    if (w->oom || w->n + more <= w->cap) return;
    size_t nc = w->cap ? w->cap * 2 : 4096;
    while (nc < w->n + more) nc *= 2;
    uint8_t *q = realloc(w->p, nc);
    if (!q) {
        w->oom = 1;
        return;
    }
    w->p = q;
    w->cap = nc;
}

static void wb_var(wbuf *w, uint64_t v)
{
    wb_need(w, 10);
    if (!w->oom) w->n += util_put_varint(w->p + w->n, v);
}

static void wb_bytes(wbuf *w, const void *b, size_t n)
{
    wb_need(w, n);
    if (!w->oom && n) memcpy(w->p + w->n, b, n);
    if (!w->oom) w->n += n;
}

static void wb_opt(wbuf *w, const void *b, size_t n)   /* length + 1, 0 = absent */
{
    wb_var(w, b ? n + 1 : 0);
    if (b) wb_bytes(w, b, n);
}

static uint64_t zz(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzz(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

int store_findex_encode(const store_findex *fi, uint8_t **out, size_t *len, store_err *e)
{
    wbuf w = {0};
    wb_var(&w, fi->n);
    wb_opt(&w, fi->warning, fi->warning ? strlen(fi->warning) : 0);
    for (size_t i = 0; i < fi->n; i++) {
        const store_fentry *f = &fi->e[i];
        wb_var(&w, f->path_len);
        wb_bytes(&w, f->path, f->path_len);
        uint8_t tc[2] = {f->type, f->cls};
        wb_bytes(&w, tc, 2);
        wb_var(&w, f->mode);
        wb_var(&w, f->uid);
        wb_var(&w, f->gid);
        wb_var(&w, zz(f->atime_ns));
        wb_var(&w, zz(f->mtime_ns));
        wb_var(&w, zz(f->ctime_ns));
        wb_var(&w, f->size);
        wb_var(&w, f->nlink);
        wb_var(&w, f->rdev);
        wb_opt(&w, f->target, f->target ? strlen(f->target) : 0);
        wb_opt(&w, f->inline_data, f->inline_len);
        wb_var(&w, f->next);
        for (uint32_t k = 0; k < f->next; k++) {
            wb_var(&w, f->ext[k].file_off);
            wb_var(&w, f->ext[k].disk_off);
            wb_var(&w, f->ext[k].len);
        }
        wb_var(&w, f->nxattrs);
        for (uint32_t k = 0; k < f->nxattrs; k++) {
            size_t nl = strlen(f->xattrs[k].name);
            wb_var(&w, nl);
            wb_bytes(&w, f->xattrs[k].name, nl);
            wb_var(&w, f->xattrs[k].len);
            wb_bytes(&w, f->xattrs[k].value, f->xattrs[k].len);
        }
    }
    if (w.oom) {
        free(w.p);
        return store_errf(e, -ENOMEM, "out of memory encoding the file index");
    }
    size_t cap = 16 + ZSTD_compressBound(w.n);
    uint8_t *buf = malloc(cap);
    if (!buf) {
        free(w.p);
        return store_errf(e, -ENOMEM, "out of memory encoding the file index");
    }
    memcpy(buf, FILES_MAGIC, 8);
    util_put_le64(buf + 8, w.n);
    size_t z = ZSTD_compress(buf + 16, cap - 16, w.p, w.n, 3);
    free(w.p);
    if (ZSTD_isError(z)) {
        free(buf);
        return store_errf(e, -EIO, "compressing the file index: %s", ZSTD_getErrorName(z));
    }
    *out = buf;
    *len = 16 + z;
    return 0;
}

typedef struct {
    const uint8_t *p, *end;
    int bad;
} rbuf;

static uint64_t rb_var(rbuf *r)
{
    uint64_t v = 0;
    if (!r->bad && util_get_varint(&r->p, r->end, &v)) r->bad = 1;
    return r->bad ? 0 : v;
}

/* A malloc'd copy of the next n bytes, NUL-terminated; NULL (and bad) past the end. */
static uint8_t *rb_copy(rbuf *r, uint64_t n)
{
    if (r->bad || n > (uint64_t)(r->end - r->p)) {
        r->bad = 1;
        return NULL;
    }
    uint8_t *c = malloc(n + 1);
    if (!c) {
        r->bad = 1;
        return NULL;
    }
    memcpy(c, r->p, n);
    c[n] = 0;
    r->p += n;
    return c;
}

static uint8_t *rb_opt(rbuf *r, uint32_t *len)
{
    uint64_t n = rb_var(r);
    if (len) *len = 0;
    if (!n) return NULL;
    if (len) *len = (uint32_t)(n - 1);
    return rb_copy(r, n - 1);
}

/* Bounds a count by the bytes left, so a hostile count cannot make us allocate wildly. */
static int rb_count(rbuf *r, uint64_t n, size_t min_bytes)
{
    if (r->bad || n > (uint64_t)(r->end - r->p) / min_bytes) r->bad = 1;
    return !r->bad;
}

uint64_t store_findex_raw_len(const uint8_t *buf, size_t len)
{
    return len < 16 || memcmp(buf, FILES_MAGIC, 8) ? UINT64_MAX : util_get_le64(buf + 8);
}

int store_findex_decode(const uint8_t *buf, size_t len, store_findex **out, store_err *e)
{
    *out = NULL;
    if (len < 16 || memcmp(buf, FILES_MAGIC, 8))
        return store_errf(e, -EBADMSG, "file index: bad magic");
    uint64_t rawlen = util_get_le64(buf + 8);
    unsigned long long fsz = ZSTD_getFrameContentSize(buf + 16, len - 16);
    if (rawlen > (1ULL << 34) || fsz != rawlen)
        return store_errf(e, -EBADMSG, "file index: bad length");
    uint8_t *raw = malloc(rawlen ? rawlen : 1);
    if (!raw) return store_errf(e, -ENOMEM, "out of memory");
    if (ZSTD_decompress(raw, rawlen, buf + 16, len - 16) != rawlen) {
        free(raw);
        return store_errf(e, -EBADMSG, "file index: corrupt");
    }
    rbuf r = {raw, raw + rawlen, 0};
    store_findex *fi = calloc(1, sizeof *fi);
    uint64_t n = rb_var(&r);
    if (fi && rb_count(&r, n, 8)) fi->e = calloc(n ? n : 1, sizeof *fi->e);
    if (!fi || !fi->e) r.bad = 1;
    if (!r.bad) fi->warning = (char *)rb_opt(&r, NULL);
    for (uint64_t i = 0; !r.bad && i < n; i++) {
        store_fentry *f = &fi->e[i];
        fi->n = i + 1;
        uint64_t pl = rb_var(&r);
        if (pl == 0 || pl > 65535) r.bad = 1;
        f->path = (char *)rb_copy(&r, pl);
        f->path_len = (uint32_t)pl;
        if (r.bad || (uint64_t)(r.end - r.p) < 2) {
            r.bad = 1;
            break;
        }
        f->type = r.p[0];
        f->cls = r.p[1];
        r.p += 2;
        f->mode = (uint32_t)rb_var(&r);
        f->uid = (uint32_t)rb_var(&r);
        f->gid = (uint32_t)rb_var(&r);
        f->atime_ns = unzz(rb_var(&r));
        f->mtime_ns = unzz(rb_var(&r));
        f->ctime_ns = unzz(rb_var(&r));
        f->size = rb_var(&r);
        f->nlink = (uint32_t)rb_var(&r);
        f->rdev = rb_var(&r);
        f->target = (char *)rb_opt(&r, NULL);
        f->inline_data = rb_opt(&r, &f->inline_len);
        uint64_t ne = rb_var(&r);
        if (rb_count(&r, ne, 3) && ne) f->ext = calloc(ne, sizeof *f->ext);
        if (ne && !f->ext) r.bad = 1;
        for (uint64_t k = 0; !r.bad && k < ne; k++) {
            f->ext[k].file_off = rb_var(&r);
            f->ext[k].disk_off = rb_var(&r);
            f->ext[k].len = rb_var(&r);
            f->next = (uint32_t)k + 1;
        }
        uint64_t nx = rb_var(&r);
        if (rb_count(&r, nx, 2) && nx) f->xattrs = calloc(nx, sizeof *f->xattrs);
        if (nx && !f->xattrs) r.bad = 1;
        for (uint64_t k = 0; !r.bad && k < nx; k++) {
            f->xattrs[k].name = (char *)rb_copy(&r, rb_var(&r));
            uint64_t vl = rb_var(&r);
            f->xattrs[k].value = rb_copy(&r, vl);
            f->xattrs[k].len = (uint32_t)vl;
            f->nxattrs = (uint32_t)k + 1;
        }
        if (f->type < STORE_FT_FILE || f->type > STORE_FT_SOCK || f->cls >= STORE_CLASS_COUNT ||
            f->path[0] != '/' || strlen(f->path) != pl)
            r.bad = 1;
        if (i && path_cmp(fi->e[i - 1].path, fi->e[i - 1].path_len, f->path, f->path_len) >= 0)
            r.bad = 1;   /* must be sorted and unique: lookups bisect */
    }
    if (!r.bad && r.p != r.end) r.bad = 1;
    free(raw);
    if (r.bad) {
        store_findex_free(fi);
        return store_errf(e, -EBADMSG, "file index: malformed");
    }
    *out = fi;
    return 0;
}

/* Writes manifests/ID.files durably and records its hash in snap (called by commit). */
int files_write(store_t *s, store_snapshot *snap, store_err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = store_findex_encode(snap->files, &buf, &len, e);
    if (rc) return rc;
    snprintf(snap->files_hash, sizeof snap->files_hash, "%016llx",
             (unsigned long long)XXH3_64bits(buf, len));
    char name[64];
    snprintf(name, sizeof name, "manifests/%s.files", snap->id);
    rc = obj_put(s, name, buf, len, e);
    free(buf);
    return rc;
}

int store_findex_load(store_t *s, const store_snapshot *snap, store_findex **out, store_err *e)
{
    *out = NULL;
    if (!snap->files_hash[0])
        return store_errf(e, -ENOENT, "snapshot %s has no file index (no disk, or taken without one)",
                          snap->id);
    char name[64];
    snprintf(name, sizeof name, "manifests/%s.files", snap->id);
    uint8_t *buf = NULL;
    size_t len = 0;
    store_err ge;
    int rc = obj_get(s, name, &buf, &len, &ge);
    if (rc) return store_errf(e, rc, "snapshot %s: its file index: %s", snap->id, ge.msg);
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)XXH3_64bits(buf, len));
    if (strcmp(hash, snap->files_hash)) {
        free(buf);
        return store_errf(e, -EBADMSG, "snapshot %s: its file index is damaged (checksum)", snap->id);
    }
    store_err de;
    rc = store_findex_decode(buf, len, out, &de);
    free(buf);
    if (rc) return store_errf(e, rc, "snapshot %s: %s", snap->id, de.msg);
    /* Indexes written before the rule are read under it (a secret through a hard link). */
    if (store_findex_mark_secrets(*out, NULL)) {
        store_findex_free(*out);
        *out = NULL;
        return store_errf(e, -ENOMEM, "snapshot %s: its file index: out of memory", snap->id);
    }
    return 0;
}

/* ---- reading bytes of a blob ------------------------------------------------------- */

/* Copies page `slot` of the group at l into out, through the store's group cache. */
int cached_page(store_t *s, const store_loc *l, store_dctx *d, uint8_t *frame, void *out, store_err *e)
{
    pthread_mutex_lock(&s->cache_mu);
    for (int i = 0; i < GROUP_CACHE; i++) {
        struct cached_group *c = &s->cache[i];
        if (c->pages && c->pack == l->pack && c->offset == l->offset && c->npages == l->npages) {
            c->used = ++s->cache_clock;
            memcpy(out, c->pages + (size_t)l->slot * STORE_PAGE, STORE_PAGE);
            pthread_mutex_unlock(&s->cache_mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&s->cache_mu);
    uint8_t *pages = malloc((size_t)STORE_GROUP_PAGES * STORE_PAGE);
    if (!pages) return store_errf(e, -ENOMEM, "out of memory");
    int rc = store_read_frame(s, l, frame, store_group_bound(STORE_GROUP_PAGES), e);
    if (!rc) rc = store_group_decompress(d, frame, l->clen, pages, l->npages, e);
    if (rc) {
        free(pages);
        return rc;
    }
    memcpy(out, pages + (size_t)l->slot * STORE_PAGE, STORE_PAGE);
    pthread_mutex_lock(&s->cache_mu);
    struct cached_group *victim = &s->cache[0];   /* the least recently used */
    for (int i = 1; i < GROUP_CACHE; i++)
        if (s->cache[i].used < victim->used) victim = &s->cache[i];
    free(victim->pages);
    *victim = (struct cached_group){.pack = l->pack, .offset = l->offset, .npages = l->npages,
                                    .pages = pages, .used = ++s->cache_clock};
    pthread_mutex_unlock(&s->cache_mu);
    return 0;
}

const store_blob *store_blob_find(const store_snapshot *snap, const char *name)
{
    for (int i = 0; i < snap->nblobs; i++)
        if (!strcmp(snap->blobs[i].name, name)) return &snap->blobs[i];
    return NULL;
}

int store_blob_read(store_t *s, const store_snapshot *snap, const char *name, uint64_t off,
                    void *buf, size_t len, store_err *e)
{
    const store_blob *b = store_blob_find(snap, name);
    if (!b) return store_errf(e, -ENOENT, "snapshot %s has no %s", snap->id, name);
    if (off > b->size || len > b->size - off)
        return store_errf(e, -ERANGE, "snapshot %s: %s: range %llu+%zu is past its end (%llu)",
                          snap->id, name, (unsigned long long)off, len, (unsigned long long)b->size);
    if (!len) return 0;
    uint64_t p0 = off / STORE_PAGE, p1 = (off + len - 1) / STORE_PAGE + 1;
    size_t np = (size_t)(p1 - p0);
    uint8_t *found = malloc(np);
    store_loc *locs = malloc(np * sizeof *locs);
    uint8_t *frame = malloc(store_group_bound(STORE_GROUP_PAGES));
    uint8_t page[STORE_PAGE];
    store_dctx *d = store_dctx_new();
    int rc = found && locs && frame && d ? 0 : store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = store_lookup(s, b->ids + p0, np, found, locs, e);
    uint8_t *dst = buf;
    for (size_t i = 0; !rc && i < np; i++) {
        uint64_t pg = p0 + i, pstart = pg * STORE_PAGE;
        uint64_t from = off > pstart ? off - pstart : 0;
        uint64_t to = off + len < pstart + STORE_PAGE ? off + len - pstart : STORE_PAGE;
        if (store_id_is_zero(&b->ids[pg])) {
            memset(dst, 0, to - from);
        } else if (!found[i]) {
            rc = store_errf(e, -ENOENT, "snapshot %s: %s: page at offset %llu is not in the store",
                            snap->id, name, (unsigned long long)pstart);
        } else {
            store_id id;
            rc = cached_page(s, &locs[i], d, frame, page, e);
            /* S3: the pack went (another node's gc) after the lookup: once more, where the
             * chunk is now (store_read_frame taught the handle). */
            if (rc == -ENOENT && s->be->remote && !(rc = store_lookup(s, &b->ids[pg], 1, &found[i], &locs[i], e)))
                rc = found[i] ? cached_page(s, &locs[i], d, frame, page, e)
                              : store_errf(e, -ENOENT, "snapshot %s: %s: page at offset %llu is not in the store",
                                           snap->id, name, (unsigned long long)pstart);
            if (!rc) store_chunk_id(s, page, &id);
            /* Verified on every read, cached or not: the cache holds bytes, not trust. */
            if (!rc && memcmp(&id, &b->ids[pg], 16))
                rc = store_errf(e, -EBADMSG, "snapshot %s: %s: page at offset %llu is corrupt in "
                                "pack %016llx", snap->id, name, (unsigned long long)pstart,
                                (unsigned long long)locs[i].pack);
            if (!rc) memcpy(dst, page + from, to - from);
        }
        dst += to - from;
    }
    free(found);
    free(locs);
    free(frame);
    store_dctx_free(d);
    return rc;
}
