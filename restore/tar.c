/* Extraction to a POSIX tar stream: ustar headers, pax records (long or non-ASCII names,
 * big numbers, nanosecond times, SCHILY.xattr.*) and GNU sparse 1.0 members.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "restore/internal.h"

typedef struct {
    restore_xrun r;
    int fd;
    uint8_t *out;             /* output buffer */
    size_t nout;
    uint64_t member_bytes;    /* data bytes of the current member, for its padding */
    char *pax;                /* pax records of the current member */
    size_t npax, cappax;
} xtar;

#define OUTBUF (1u << 20)
#define TAR_NAME_MAX 8190

static int t_flush(xtar *t)
{
    int rc = restore_write_all(t->fd, t->out, t->nout);
    t->nout = 0;
    return rc;
}

static int t_put(xtar *t, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        if (t->nout == OUTBUF) {
            int rc = t_flush(t);
            if (rc) return rc;
        }
        size_t k = OUTBUF - t->nout < n ? OUTBUF - t->nout : n;
        if (b) memcpy(t->out + t->nout, b, k);
        else memset(t->out + t->nout, 0, k);
        t->nout += k;
        n -= k;
        if (b) b += k;
    }
    return 0;
}

static int t_pad(xtar *t, uint64_t n)
{
    return n % 512 ? t_put(t, NULL, 512 - n % 512) : 0;
}

static int put_tar(void *arg, uint64_t off, const uint8_t *buf, size_t len)
{
    (void)off;
    xtar *t = arg;
    t->member_bytes += len;
    return t_put(t, buf, len);   /* buf NULL: zeros */
}

static int ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

/* Appends the pax record "LEN key=value\n"; LEN counts itself. */
static int pax_add(xtar *t, const char *key, const void *val, size_t vlen)
{
    size_t body = strlen(key) + vlen + 3, n = body + 1;
    while (snprintf(NULL, 0, "%zu", n) + body != n) n++;
    if (t->npax + n + 1 > t->cappax) {
        size_t nc = (t->cappax ? t->cappax : 1024) * 2;
        while (nc < t->npax + n + 1) nc *= 2;
        char *p = realloc(t->pax, nc);
        if (!p) return -ENOMEM;
        t->pax = p;
        t->cappax = nc;
    }
    int h = snprintf(t->pax + t->npax, t->cappax - t->npax, "%zu %s=", n, key);
    memcpy(t->pax + t->npax + h, val, vlen);
    t->pax[t->npax + n - 1] = '\n';
    t->npax += n;
    return 0;
}

static int pax_str(xtar *t, const char *key, const char *val)
{
    return pax_add(t, key, val, strlen(val));
}

static int pax_num(xtar *t, const char *key, uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return pax_str(t, key, b);
}

static int pax_time(xtar *t, const char *key, int64_t ns)
{
    char b[48];
    uint64_t a = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    snprintf(b, sizeof b, "%s%llu.%09llu", ns < 0 ? "-" : "", (unsigned long long)(a / 1000000000),
             (unsigned long long)(a % 1000000000));
    return pax_str(t, key, b);
}

/* Writes v as octal into a field of w bytes (w-1 digits + NUL); 0 if it does not fit. */
static int octal(char *field, size_t w, uint64_t v)
{
    int fits = (w - 1) * 3 >= 64 || v >> ((w - 1) * 3) == 0;
    if (!fits) v = 0;
    field[w - 1] = 0;
    for (size_t i = w - 1; i-- > 0; v >>= 3) field[i] = (char)('0' + (v & 7));
    return fits;
}

/* Puts name into the ustar name/prefix fields when it fits there exactly. */
static int ustar_name(char *hdr, const char *name)
{
    size_t n = strlen(name);
    if (n <= 100) {
        memcpy(hdr, name, n);
        return 1;
    }
    for (const char *s = strchr(name, '/'); s; s = strchr(s + 1, '/')) {
        size_t pl = (size_t)(s - name);
        if (pl <= 155 && n - pl - 1 <= 100 && n - pl - 1 > 0) {
            memcpy(hdr + 345, name, pl);
            memcpy(hdr, s + 1, n - pl - 1);
            return 1;
        }
        if (pl > 155) break;
    }
    memcpy(hdr, name, 100);   /* truncated; the pax path record is the name */
    return 0;
}

static void header_fill(char *h, const char *name_field, const store_fentry *m, uint64_t size,
                        char type, const char *link)
{
    memset(h, 0, 512);
    if (name_field) snprintf(h, 100, "%s", name_field);
    octal(h + 100, 8, SAFE_MODE(m->mode));
    octal(h + 108, 8, m->uid);
    octal(h + 116, 8, m->gid);
    octal(h + 124, 12, size);
    octal(h + 136, 12, m->mtime_ns < 0 ? 0 : (uint64_t)(m->mtime_ns / 1000000000));
    h[156] = type;
    if (link) memcpy(h + 157, link, strlen(link) < 100 ? strlen(link) : 100);
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
}

static void header_sum(char *h)
{
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

/* One member: pax header (when needed), ustar header. `name` is relative, without a
 * trailing '/' (added for directories). Sparse members get the GNU 1.0 records and their
 * stored size in `size`. */
static int t_header(xtar *t, const store_fentry *m, const char *name, char type,
                    const char *link, uint64_t size, int sparse, uint64_t realsize)
{
    char h[512], full[TAR_NAME_MAX + 2];
    size_t nl = strlen(name);
    if (nl > TAR_NAME_MAX) return -ENAMETOOLONG;
    memcpy(full, name, nl + 1);
    if (type == '5') memcpy(full + nl, "/", 2);
    t->npax = 0;
    /* Names are the image's raw bytes, UTF-8 or not, as GNU tar writes them (it warns
     * about and ignores "hdrcharset", so that record is not written). */
    int rc = 0;
    memset(h, 0, 512);
    int fits = ustar_name(h, full) && ascii(full);
    for (int i = 0; i < 500; i++)   /* the pax path is the name: keep these plain ASCII */
        if ((unsigned char)h[i] >= 0x80) h[i] = '_';
    char name100[101] = {0}, prefix[156] = {0};
    memcpy(name100, h, 100);
    memcpy(prefix, h + 345, 155);
    if (sparse) {
        /* GNU sparse 1.0: the real name and size are pax records, the map leads the data. */
        const char *base = strrchr(full, '/');
        snprintf(name100, sizeof name100, "GNUSparseFile.0/%.80s", base ? base + 1 : full);
        for (char *c = name100; *c; c++)
            if ((unsigned char)*c >= 0x80) *c = '_';
        prefix[0] = 0;
        if (!rc) rc = pax_str(t, "GNU.sparse.major", "1");
        if (!rc) rc = pax_str(t, "GNU.sparse.minor", "0");
        if (!rc) rc = pax_str(t, "GNU.sparse.name", full);
        if (!rc) rc = pax_num(t, "GNU.sparse.realsize", realsize);
    } else if (!fits && !rc) {
        rc = pax_str(t, "path", full);
    }
    if (!rc && link && (strlen(link) > 100 || !ascii(link))) rc = pax_str(t, "linkpath", link);
    char tmp[12];
    if (!rc && !octal(tmp, 12, size)) rc = pax_num(t, "size", size);
    if (!rc && !octal(tmp, 8, m->uid)) rc = pax_num(t, "uid", m->uid);
    if (!rc && !octal(tmp, 8, m->gid)) rc = pax_num(t, "gid", m->gid);
    if (!rc && (m->mtime_ns % 1000000000 || m->mtime_ns < 0 ||
                !octal(tmp, 12, (uint64_t)(m->mtime_ns / 1000000000)))) {
        rc = pax_time(t, "mtime", m->mtime_ns);
        if (!rc) rc = pax_time(t, "atime", m->atime_ns);
    }
    for (uint32_t k = 0; !rc && m->xattrs && k < m->nxattrs; k++) {
        const store_xattr *a = &m->xattrs[k];
        if (!a->name || strchr(a->name, '=') || strchr(a->name, '\n') || (!a->value && a->len))
            continue;   /* cannot be a pax keyword */
        if (!strcmp(a->name, "security.capability")) continue;   /* as setuid bits */
        char key[300];
        snprintf(key, sizeof key, "SCHILY.xattr.%s", a->name);
        rc = pax_add(t, key, a->value, a->len);
    }
    if (rc) return rc;
    if (t->npax) {
        char pname[101];
        const char *base = strrchr(full, '/');
        snprintf(pname, sizeof pname, "PaxHeaders/%.80s", base && base[1] ? base + 1 : full);
        for (char *c = pname; *c; c++)
            if ((unsigned char)*c >= 0x80 || *c < 0x20) *c = '_';
        header_fill(h, pname, m, t->npax, 'x', NULL);
        header_sum(h);
        if ((rc = t_put(t, h, 512)) || (rc = t_put(t, t->pax, t->npax)) ||
            (rc = t_pad(t, t->npax)))
            return rc;
    }
    header_fill(h, NULL, m, size, type, link && ascii(link) ? link : NULL);
    memcpy(h, name100, 100);
    memcpy(h + 345, prefix, 155);
    header_sum(h);
    return t_put(t, h, 512);
}

/* Sparse map of a checked entry (GNU 1.0): "count\n" then "offset\nsize\n" pairs, with a
 * final empty extent at the real size when the file ends in a hole (tar then extends it). */
static int sparse_map(const store_fentry *f, char **out, size_t *len)
{
    size_t cap = 32 + (size_t)(f->next + 1) * 42, n = 0, count = 0;
    char *p = malloc(cap);
    if (!p) return -ENOMEM;
    uint64_t end = 0;
    for (uint32_t k = 0; k < f->next; k++)
        if (restore_ext_len(f, k)) {
            count++;
            end = f->ext[k].file_off + restore_ext_len(f, k);
        }
    int tail = end < f->size || !count;
    n += (size_t)snprintf(p + n, cap - n, "%zu\n", count + (size_t)tail);
    for (uint32_t k = 0; k < f->next; k++)
        if (restore_ext_len(f, k))
            n += (size_t)snprintf(p + n, cap - n, "%llu\n%llu\n",
                                  (unsigned long long)f->ext[k].file_off,
                                  (unsigned long long)restore_ext_len(f, k));
    if (tail) n += (size_t)snprintf(p + n, cap - n, "%llu\n0\n", (unsigned long long)f->size);
    *out = p;
    *len = n;
    return 0;
}

static int t_file(xtar *t, const store_fentry *f, const char *name, const store_fentry *d)
{
    const char *why = restore_data_problem(t->r.snap, d);
    if (why) {
        t->r.st->failed++;
        restore_note(t->r.st, f->path, "%s", why);
        return 0;
    }
    uint64_t data = 0;
    if (d->inline_data) data = d->size;
    for (uint32_t k = 0; !d->inline_data && k < d->next; k++) data += restore_ext_len(d, k);
    int sparse = data < d->size, rc;
    char *map = NULL;
    size_t maplen = 0;
    if (sparse && (rc = sparse_map(d, &map, &maplen))) return store_errf(t->r.e, rc, "out of memory");
    uint64_t stored = sparse ? (maplen + 511) / 512 * 512 + data : d->size;
    rc = t_header(t, d, name, '0', NULL, stored, sparse, d->size);
    if (!rc && sparse) rc = t_put(t, map, maplen);
    if (!rc && sparse) rc = t_pad(t, maplen);
    free(map);
    t->member_bytes = 0;
    int read_err = 0;
    if (!rc) rc = restore_feed(t->r.s, t->r.snap, d, t->r.buf, !sparse, put_tar, t, &read_err, t->r.e);
    if (!rc) rc = t_pad(t, t->member_bytes);
    if (rc && read_err) return rc;   /* the header promised bytes the store cannot give */
    if (rc) return store_errf(t->r.e, rc, "writing the tar stream: %s", strerror(-rc));
    t->r.st->files++;
    t->r.st->bytes += d->size;
    return 1;
}

static int xtar_entry(void *arg, const store_fentry *f)
{
    xtar *t = arg;
    size_t idx = (size_t)(f - t->r.fi->e);
    const char *name = f->path + 1;
    int rc = 0;
    if (strlen(name) > TAR_NAME_MAX) {
        t->r.st->refused++;
        restore_note(t->r.st, f->path, "path too long");
        return 0;
    }
    switch (f->type) {
    case STORE_FT_DIR:
        if (!(rc = t_header(t, f, name, '5', NULL, 0, 0, 0))) t->r.st->dirs++;
        break;
    case STORE_FT_SYMLINK:
        if (!f->target || !f->target[0]) {
            t->r.st->refused++;
            restore_note(t->r.st, f->path, "symlink without a target");
            return 0;
        }
        if (!(rc = t_header(t, f, name, '2', f->target, 0, 0, 0))) t->r.st->symlinks++;
        break;
    case STORE_FT_FILE:
    case STORE_FT_HARDLINK: {
        const store_fentry *d = f;
        if (f->type == STORE_FT_HARDLINK)
            d = f->target ? store_findex_find(t->r.fi, f->target, strlen(f->target)) : NULL;
        if (!d || d->type != STORE_FT_FILE) {
            t->r.st->refused++;
            restore_note(t->r.st, f->path, "hard link to something not a regular file");
            return 0;
        }
        size_t di = (size_t)(d - t->r.fi->e);
        if (t->r.first[di] >= 0) {
            /* Links only to a member this stream holds, so the link is always resolvable. */
            if (!(rc = t_header(t, d, name, '1', t->r.fi->e[t->r.first[di]].path + 1, 0, 0, 0))) {
                t->r.st->files++;
                t->r.st->hardlinks++;
            }
            break;
        }
        rc = t_file(t, f, name, d);
        if (rc == 1) t->r.first[di] = (int64_t)idx;
        return rc < 0 ? rc : 0;
    }
    case STORE_FT_CHR: case STORE_FT_BLK: case STORE_FT_FIFO: case STORE_FT_SOCK:
        t->r.st->specials++;
        return 0;
    default:
        t->r.st->refused++;
        restore_note(t->r.st, f->path, "unknown file type");
        return 0;
    }
    return rc ? store_errf(t->r.e, rc, "writing the tar stream: %s", strerror(-rc)) : 0;
}

int restore_extract_tar(store_t *s, const store_snapshot *snap, const store_findex *fi,
                        const char *const *paths, size_t npaths, unsigned class_mask,
                        int include_secrets, int fd, restore_extract_stats *st, store_err *e)
{
    xtar t = {.fd = fd};
    int rc = restore_xrun_init(&t.r, s, snap, fi, st, e);
    if (!rc && !(t.out = malloc(OUTBUF))) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = restore_select(fi, paths, npaths, class_mask, include_secrets, xtar_entry, &t,
                                 t.r.st, e);
    if (!rc && ((rc = t_put(&t, NULL, 1024)) || (rc = t_flush(&t))))   /* two zero blocks */
        rc = store_errf(e, rc, "writing the tar stream: %s", strerror(-rc));
    restore_xrun_free(&t.r);
    free(t.out);
    free(t.pax);
    return restore_summary(t.r.st, rc, 0, e);
}
