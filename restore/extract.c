/* Support engineers' file recovery: cat, extract to a folder, extract to a tar stream.
 *
 * The index is the tenant's: any path, name, target, size or extent may be hostile. So
 *  - every path is checked before use (no empty, ".", ".." or over-long component, nothing
 *    below an entry that is not a directory), and the index must be strictly sorted, so a
 *    path cannot appear twice (a dir, then a symlink of the same name);
 *  - the folder writer resolves every name with openat2(RESOLVE_BENEATH |
 *    RESOLVE_NO_SYMLINKS) from a descriptor of the output folder and creates with O_EXCL:
 *    even a check missed above cannot write, or follow a link, outside the output;
 *  - extents are clipped to the file's size and must lie inside the disk, so a crafted
 *    extent can neither make a huge file nor read another blob;
 *  - a secret's bytes are not given out through a hard link or a secret folder's child.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "restore/restore.h"

#define COMPONENT_MAX 255
#define IOBUF (1u << 20)
#define SAFE_MODE(m) ((m) & 07777 & ~(unsigned)(S_ISUID | S_ISGID))

/* ---- shared: reporting, lookups, path checks ------------------------------------------ */

static void printable(const char *p, char *out, size_t cap)
{
    size_t o = 0;
    const unsigned char *c = (const unsigned char *)p;
    for (; *c && o + 8 < cap; c++) {
        if (*c >= 0x20 && *c < 0x7f && *c != '\\') out[o++] = (char)*c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *c);
    }
    if (*c) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = 0;
}

/* Counts nothing: tells the caller's warn function and remembers the first problem. */
static void note(restore_extract_stats *st, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(restore_extract_stats *st, const char *path, const char *fmt, ...)
{
    char p[256], why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    printable(path ? path : "(null)", p, sizeof p);
    if (!st->first_problem[0])
        snprintf(st->first_problem, sizeof st->first_problem, "%s: %s", p, why);
    if (st->warn) st->warn(st->warn_arg, p, why);
}

static int cmp_len(const char *a, size_t la, const char *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    return c ? c : (la < lb ? -1 : la > lb);
}

/* First entry whose path is >= p (length len): the index is sorted (checked by select). */
static size_t lower_bound(const store_findex *fi, const char *p, size_t len)
{
    size_t lo = 0, hi = fi->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_len(fi->e[mid].path, strlen(fi->e[mid].path), p, len) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static const store_fentry *find(const store_findex *fi, const char *p, size_t len)
{
    size_t i = lower_bound(fi, p, len);
    if (i < fi->n && !cmp_len(fi->e[i].path, strlen(fi->e[i].path), p, len)) return &fi->e[i];
    return NULL;
}

/* Why a path cannot be written below a folder, or NULL if it can. "/" is the folder itself. */
static const char *path_problem(const char *p)
{
    if (p[0] != '/') return "not an absolute path";
    if (!p[1]) return NULL;
    for (const char *c = p + 1;;) {
        const char *end = strchr(c, '/');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        if (n == 0) return "empty path component";
        if (n == 1 && c[0] == '.') return "'.' path component";
        if (n == 2 && c[0] == '.' && c[1] == '.') return "'..' path component";
        if (n > COMPONENT_MAX) return "path component longer than 255 bytes";
        if (!end) return NULL;
        c = end + 1;
    }
}

/* A secret is not given out: its own class, a secret folder above it, or a hard link
 * whose target (the inode's bytes) is secret. */
static int is_secret_entry(const store_findex *fi, const store_fentry *f)
{
    if (f->cls == STORE_CLASS_SECRET) return 1;
    if (f->type == STORE_FT_HARDLINK && f->target) {
        const store_fentry *t = find(fi, f->target, strlen(f->target));
        if (t && t->cls == STORE_CLASS_SECRET) return 1;
    }
    return 0;
}

int restore_is_secret(const store_findex *fi, const store_fentry *f)
{
    if (is_secret_entry(fi, f)) return 1;
    const char *p = f->path ? f->path : "";
    for (size_t i = 1, n = strlen(p); i < n; i++) {
        const store_fentry *a = p[i] == '/' ? find(fi, p, i) : NULL;
        if (a && a->cls == STORE_CLASS_SECRET) return 1;
    }
    return 0;
}

/* ---- selection ---------------------------------------------------------------------- */

typedef struct {
    char *parent;              /* the last parent checked ("/a/b"), and its verdict */
    size_t plen;
    const char *refuse;        /* why entries below it are refused, or NULL */
    int secret;                /* a secret folder is above */
} parent_cache;

static int check_parent(const store_findex *fi, parent_cache *pc, const char *p, size_t plen)
{
    if (pc->parent && pc->plen == plen && !memcmp(pc->parent, p, plen)) return 0;
    char *copy = malloc(plen + 1);
    if (!copy) return -ENOMEM;
    memcpy(copy, p, plen);
    copy[plen] = 0;
    free(pc->parent);
    pc->parent = copy;
    pc->plen = plen;
    pc->refuse = NULL;
    pc->secret = 0;
    for (size_t i = 1; i <= plen; i++) {
        if (i < plen && p[i] != '/') continue;
        const store_fentry *a = find(fi, p, i);
        if (!a) continue;   /* a missing folder is made; it cannot be anything else */
        if (a->type != STORE_FT_DIR) {
            pc->refuse = "below an entry that is not a directory";
            return 0;
        }
        if (a->cls == STORE_CLASS_SECRET) pc->secret = 1;
    }
    return 0;
}

/* Requested paths: absolute, without repeated or trailing slashes. */
static char *normalize(const char *p)
{
    size_t n = strlen(p), o = 0;
    char *q = malloc(n + 2);
    if (!q) return NULL;
    q[o++] = '/';
    for (size_t i = 0; i < n; i++)
        if (p[i] != '/' || q[o - 1] != '/') q[o++] = p[i];
    if (o > 1 && q[o - 1] == '/') o--;
    q[o] = 0;
    return q;
}

static int under(const char *path, size_t len, const char *req, size_t rlen)
{
    if (rlen == 1) return 1;   /* "/" */
    return len >= rlen && !memcmp(path, req, rlen) && (len == rlen || path[rlen] == '/');
}

int restore_select(const store_findex *fi, const char *const *paths, size_t npaths,
                   unsigned class_mask, int include_secrets, restore_select_fn fn, void *arg,
                   restore_extract_stats *st, store_err *e)
{
    restore_extract_stats dummy;
    if (!st) {
        memset(&dummy, 0, sizeof dummy);
        st = &dummy;
    }
    for (size_t i = 0; i < fi->n; i++) {
        if (!fi->e[i].path) return store_errf(e, -EINVAL, "file index: entry without a path");
        if (i && strcmp(fi->e[i - 1].path, fi->e[i].path) >= 0)
            return store_errf(e, -EINVAL, "file index is not sorted (damaged): refusing it");
    }
    static const char *const all[] = {"/"};
    if (!npaths) {
        paths = all;
        npaths = 1;
    }
    char **req = calloc(npaths, sizeof *req);
    size_t *rlen = calloc(npaths, sizeof *rlen);
    int rc = req && rlen ? 0 : store_errf(e, -ENOMEM, "out of memory");
    for (size_t k = 0; !rc && k < npaths; k++) {
        if (paths[k][0] != '/') {
            rc = store_errf(e, -EINVAL, "%s: paths in a snapshot start with '/'", paths[k]);
            break;
        }
        req[k] = normalize(paths[k]);
        if (!req[k]) {
            rc = store_errf(e, -ENOMEM, "out of memory");
            break;
        }
        rlen[k] = strlen(req[k]);
        size_t i = lower_bound(fi, req[k], rlen[k]);
        if (rlen[k] > 1 && !(i < fi->n && under(fi->e[i].path, strlen(fi->e[i].path), req[k],
                                                  rlen[k])))
            rc = store_errf(e, -ENOENT, "%s: no such path in the snapshot", paths[k]);
    }
    parent_cache pc = {0};
    for (size_t i = 0; !rc && i < fi->n; i++) {
        const store_fentry *f = &fi->e[i];
        size_t len = strlen(f->path);
        int sel = 0;
        for (size_t k = 0; k < npaths && !sel; k++) sel = under(f->path, len, req[k], rlen[k]);
        if (!sel || !strcmp(f->path, "/")) continue;
        if (f->cls >= STORE_CLASS_COUNT) {
            st->refused++;
            note(st, f->path, "unknown class %u", f->cls);
            continue;
        }
        if (class_mask && !(class_mask & (1u << f->cls))) continue;
        const char *why = path_problem(f->path);
        if (!why) {
            const char *slash = strrchr(f->path, '/');
            rc = check_parent(fi, &pc, f->path, (size_t)(slash - f->path));
            if (rc) {
                rc = store_errf(e, rc, "out of memory");
                break;
            }
            why = pc.refuse;
        }
        if (why) {
            st->refused++;
            note(st, f->path, "%s", why);
            continue;
        }
        if (!include_secrets && (pc.secret || is_secret_entry(fi, f))) {
            st->secrets_skipped++;
            continue;
        }
        rc = fn(arg, f);
    }
    free(pc.parent);
    for (size_t k = 0; req && k < npaths; k++) free(req[k]);
    free(req);
    free(rlen);
    return rc;
}

/* ---- file bytes --------------------------------------------------------------------- */

static uint64_t disk_size(const store_snapshot *snap)
{
    for (int i = 0; i < snap->nblobs; i++)
        if (!strcmp(snap->blobs[i].name, "disk")) return snap->blobs[i].size;
    return 0;
}

/* Bytes of extent k inside the file (extents may run past the size: block granularity). */
static uint64_t ext_len(const store_fentry *f, uint32_t k)
{
    const store_extent *x = &f->ext[k];
    if (x->file_off >= f->size) return 0;
    return x->len < f->size - x->file_off ? x->len : f->size - x->file_off;
}

/* Why the entry's data cannot be read, or NULL. */
static const char *data_problem(const store_snapshot *snap, const store_fentry *f)
{
    if (f->type != STORE_FT_FILE) return "not a regular file";
    if (f->inline_data) {
        if (f->next) return "damaged index entry: inline data and extents";
        if (f->inline_len > f->size) return "damaged index entry: inline data past its size";
        return NULL;
    }
    if (f->next && !f->ext) return "damaged index entry: no extents";
    uint64_t end = 0, dsize = disk_size(snap);
    for (uint32_t k = 0; k < f->next; k++) {
        const store_extent *x = &f->ext[k];
        uint64_t n = ext_len(f, k);
        if (!n) continue;
        if (x->file_off < end) return "damaged index entry: extents overlap or go backwards";
        if (x->disk_off > dsize || n > dsize - x->disk_off) return "extent outside the disk";
        end = x->file_off + n;
    }
    return NULL;
}

/* Receives the file's bytes at off; buf NULL means len zero bytes (a hole). */
typedef int (*feed_fn)(void *arg, uint64_t off, const uint8_t *buf, size_t len);

/* Feeds a checked entry's bytes in file order. Holes are fed only when `holes`.
 * *read_err tells a store read failure from a failure of put. */
static int feed(store_t *s, const store_snapshot *snap, const store_fentry *f, uint8_t *buf,
                int holes, feed_fn put, void *arg, int *read_err, store_err *e)
{
    *read_err = 0;
    uint64_t pos = 0;
    int rc = 0;
    if (f->inline_data) {
        if (f->inline_len) rc = put(arg, 0, f->inline_data, f->inline_len);
        pos = f->inline_len;
    }
    for (uint32_t k = 0; !rc && !f->inline_data && k < f->next; k++) {
        uint64_t n = ext_len(f, k), off = f->ext[k].file_off;
        if (!n) continue;
        if (holes && off > pos) rc = put(arg, pos, NULL, off - pos);
        for (uint64_t done = 0; !rc && done < n;) {
            size_t chunk = n - done < IOBUF ? (size_t)(n - done) : IOBUF;
            rc = store_blob_read(s, snap, "disk", f->ext[k].disk_off + done, buf, chunk, e);
            if (rc) {
                *read_err = 1;
                break;
            }
            rc = put(arg, off + done, buf, chunk);
            done += chunk;
        }
        pos = off + n;
    }
    if (!rc && holes && f->size > pos) rc = put(arg, pos, NULL, f->size - pos);
    return rc;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static const uint8_t zeros[65536];

static int put_stream(void *arg, uint64_t off, const uint8_t *buf, size_t len)
{
    (void)off;
    int fd = *(int *)arg, rc = 0;
    if (buf) return write_all(fd, buf, len);
    for (size_t done = 0; !rc && done < len; done += sizeof zeros)
        rc = write_all(fd, zeros, len - done < sizeof zeros ? len - done : sizeof zeros);
    return rc;
}

int restore_cat(store_t *s, const store_snapshot *snap, const store_findex *fi,
                const store_fentry *f, int fd, store_err *e)
{
    char p[256];
    printable(f->path ? f->path : "", p, sizeof p);
    if (f->type == STORE_FT_HARDLINK) {
        const store_fentry *t = f->target ? find(fi, f->target, strlen(f->target)) : NULL;
        if (!t || t->type != STORE_FT_FILE)
            return store_errf(e, -EINVAL, "%s: hard link to something not a regular file", p);
        f = t;
    }
    const char *why = data_problem(snap, f);
    if (why) return store_errf(e, f->type == STORE_FT_FILE ? -EIO : -EINVAL, "%s: %s", p, why);
    uint8_t *buf = malloc(IOBUF);
    if (!buf) return store_errf(e, -ENOMEM, "out of memory");
    int read_err, rc = feed(s, snap, f, buf, 1, put_stream, &fd, &read_err, e);
    free(buf);
    if (rc && !read_err) rc = store_errf(e, rc, "%s: writing: %s", p, strerror(-rc));
    return rc;
}

static int summary(restore_extract_stats *st, int rc, int fail_code, store_err *e)
{
    if (rc) return rc;
    if (st->failed)
        return store_errf(e, fail_code ? fail_code : -EIO, "%llu entries failed, %llu refused "
                          "(first: %s)", (unsigned long long)st->failed,
                          (unsigned long long)st->refused, st->first_problem);
    if (st->refused)
        return store_errf(e, -EPERM, "%llu entries refused (first: %s)",
                          (unsigned long long)st->refused, st->first_problem);
    return 0;
}

static int64_t *first_table(size_t n)
{
    int64_t *t = malloc((n ? n : 1) * sizeof *t);
    for (size_t i = 0; t && i < n; i++) t[i] = -1;
    return t;
}

static struct timespec ts_of(int64_t ns)
{
    struct timespec t;
    t.tv_sec = (time_t)(ns / 1000000000);
    t.tv_nsec = (long)(ns % 1000000000);
    if (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000;
        t.tv_sec--;
    }
    return t;
}

/* ---- extract to a folder ------------------------------------------------------------ */

typedef struct {
    store_t *s;
    const store_snapshot *snap;
    const store_findex *fi;
    restore_extract_stats *st;
    store_err *e;
    int outfd, root, fail_code;
    int64_t *first;           /* per entry: the entry whose output file holds its inode */
    size_t *dirs, ndirs, capdirs; /* directories made, for their modes and times at the end */
    char *cur;                /* cached parent folder (relative) and its O_PATH fd */
    int curfd;
    uint8_t *buf;
    int fd;                   /* file being written */
} xdir;

static int beneath(int dfd, const char *rel, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC | ((flags & O_CREAT) ? O_NOFOLLOW : 0)),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    for (int tries = 0;; tries++) {
        long fd = syscall(SYS_openat2, dfd, rel, &how, sizeof how);
        if (fd >= 0) return (int)fd;
        if ((errno != EAGAIN && errno != EINTR) || tries > 8) return -errno;
    }
}

/* Opens folder rel below outfd, making missing folders (0755) when mk. Long paths go one
 * component at a time. */
static int open_dir(xdir *x, const char *rel, int flags, int mk)
{
    int fd = beneath(x->outfd, rel, flags | O_DIRECTORY, 0);
    if (fd >= 0 || (fd != -ENOENT && fd != -ENAMETOOLONG) || (fd == -ENOENT && !mk)) return fd;
    int dfd = dup(x->outfd);
    if (dfd < 0) return -errno;
    char name[COMPONENT_MAX + 1];
    for (const char *c = rel; *c;) {
        const char *end = strchr(c, '/');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        memcpy(name, c, n);   /* components were checked: n <= 255 */
        name[n] = 0;
        int last = !end;
        int nfd = beneath(dfd, name, last ? flags | O_DIRECTORY : O_PATH | O_DIRECTORY, 0);
        if (nfd == -ENOENT && mk) {
            if (mkdirat(dfd, name, 0755) && errno != EEXIST) nfd = -errno;
            else nfd = beneath(dfd, name, last ? flags | O_DIRECTORY : O_PATH | O_DIRECTORY, 0);
        }
        close(dfd);
        if (nfd < 0) return nfd;
        dfd = nfd;
        c = last ? c + n : end + 1;
    }
    return dfd;
}

static int parent_fd(xdir *x, const char *rel, size_t plen)
{
    if (!plen) return x->outfd;
    if (x->cur && strlen(x->cur) == plen && !memcmp(x->cur, rel, plen)) return x->curfd;
    if (x->cur) {
        close(x->curfd);
        free(x->cur);
        x->cur = NULL;
    }
    char *p = malloc(plen + 1);
    if (!p) return -ENOMEM;
    memcpy(p, rel, plen);
    p[plen] = 0;
    int fd = open_dir(x, p, O_PATH, 1);
    if (fd < 0) {
        free(p);
        return fd;
    }
    x->cur = p;
    x->curfd = fd;
    return fd;
}

static int fatal_errno(int err)
{
    return err == -ENOSPC || err == -EDQUOT || err == -EIO || err == -EROFS || err == -ENOMEM ||
           err == -EMFILE || err == -ENFILE;
}

/* A refusal, or the end of the run if the cause is the output's (disk full, ...). */
static int refuse(xdir *x, const char *path, int err, const char *why)
{
    if (err && fatal_errno(err)) {
        char p[256];
        printable(path, p, sizeof p);
        return store_errf(x->e, err, "extracting %s: %s", p, strerror(-err));
    }
    x->st->refused++;
    if (why) note(x->st, path, "%s", why);
    else note(x->st, path, "%s", strerror(-err));
    return 0;
}

static int put_file(void *arg, uint64_t off, const uint8_t *buf, size_t len)
{
    int fd = *(int *)arg;
    /* Zero blocks stay holes: the file was sized with ftruncate. */
    for (size_t pos = 0; pos < len;) {
        size_t run = 0;
        while (pos + run < len) {
            size_t blk = STORE_PAGE - (size_t)((off + pos + run) % STORE_PAGE);
            if (blk > len - pos - run) blk = len - pos - run;
            if (blk == STORE_PAGE && store_page_is_zero(buf + pos + run)) break;
            run += blk;
        }
        for (size_t done = 0; done < run;) {
            ssize_t w = pwrite(fd, buf + pos + done, run - done, (off_t)(off + pos + done));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) return -errno;
            done += (size_t)w;
        }
        pos += run;
        if (pos < len) pos += STORE_PAGE;   /* the zero block */
    }
    return 0;
}

static void set_xattrs(int fd, const store_fentry *f)
{
    /* user.* only: security.* and trusted.* (file capabilities, SELinux labels) would
     * grant what setuid bits would, so they are not copied out of a tenant's image. */
    for (uint32_t k = 0; f->xattrs && k < f->nxattrs; k++) {
        const store_xattr *a = &f->xattrs[k];
        if (a->name && !strncmp(a->name, "user.", 5) && (a->value || !a->len))
            (void)fsetxattr(fd, a->name, a->value ? (const void *)a->value : "", a->len, 0);
    }
}

/* Owner, mode, xattrs, then times (last: the other calls would not change them, but a
 * write would). */
static int set_meta(xdir *x, int fd, const store_fentry *m)
{
    if (x->root && fchown(fd, m->uid, m->gid)) return -errno;
    if (fchmod(fd, SAFE_MODE(m->mode))) return -errno;
    set_xattrs(fd, m);
    struct timespec t[2] = {ts_of(m->atime_ns), ts_of(m->mtime_ns)};
    if (futimens(fd, t)) return -errno;
    return 0;
}

/* Writes the bytes and metadata of regular-file entry d as name in pfd. */
static int write_file(xdir *x, const store_fentry *f, int pfd, const char *name,
                      const store_fentry *d)
{
    const char *why = data_problem(x->snap, d);
    if (why) {
        x->st->failed++;
        note(x->st, f->path, "%s", why);
        return 0;
    }
    int fd = beneath(pfd, name, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return refuse(x, f->path, fd, fd == -EEXIST ? "already exists in the output" : NULL);
    int rc = ftruncate(fd, (off_t)d->size) ? -errno : 0, read_err = 0;
    store_err re;
    if (!rc) rc = feed(x->s, x->snap, d, x->buf, 0, put_file, &fd, &read_err, &re);
    if (!rc) rc = set_meta(x, fd, d);
    if (close(fd) && !rc) rc = -errno;
    if (rc) {
        (void)unlinkat(pfd, name, 0);   /* never leave a file with wrong bytes */
        if (!read_err) return refuse(x, f->path, rc, NULL);
        x->st->failed++;
        if (!x->fail_code) x->fail_code = rc;
        note(x->st, f->path, "%s", re.msg);
        return 0;
    }
    x->st->files++;
    x->st->bytes += d->size;
    return 1;
}

static int link_to(xdir *x, const store_fentry *f, int pfd, const char *name, int64_t from)
{
    const char *op = x->fi->e[from].path + 1, *slash = strrchr(op, '/');
    int ofd = x->outfd, rc = 0;
    char *oparent = NULL;
    if (slash) {
        oparent = strndup(op, (size_t)(slash - op));
        if (!oparent) return store_errf(x->e, -ENOMEM, "out of memory");
        ofd = open_dir(x, oparent, O_PATH, 0);
    }
    if (ofd < 0) rc = ofd;
    else if (linkat(ofd, slash ? slash + 1 : op, pfd, name, 0)) rc = -errno;
    if (slash && ofd >= 0) close(ofd);
    free(oparent);
    if (rc) return refuse(x, f->path, rc, rc == -EEXIST ? "already exists in the output" : NULL);
    x->st->files++;
    x->st->hardlinks++;
    return 0;
}

static int xdir_entry(void *arg, const store_fentry *f)
{
    xdir *x = arg;
    size_t idx = (size_t)(f - x->fi->e);
    const char *rel = f->path + 1, *slash = strrchr(rel, '/');
    const char *name = slash ? slash + 1 : rel;
    if (f->type >= STORE_FT_CHR && f->type <= STORE_FT_SOCK) {
        x->st->specials++;
        return 0;
    }
    if (f->type < STORE_FT_FILE || f->type > STORE_FT_SOCK)
        return refuse(x, f->path, 0, "unknown file type");
    int pfd = parent_fd(x, rel, slash ? (size_t)(slash - rel) : 0);
    if (pfd < 0)
        return refuse(x, f->path, pfd, pfd == -ELOOP || pfd == -ENOTDIR || pfd == -EXDEV
                                           ? "a symlink or non-directory is in the way" : NULL);
    switch (f->type) {
    case STORE_FT_DIR: {
        if (mkdirat(pfd, name, 0700)) {
            int err = -errno, fd;
            if (err == -EEXIST && (fd = beneath(pfd, name, O_PATH | O_DIRECTORY, 0)) >= 0) {
                close(fd);   /* a folder that was there: files go into it, it stays as is */
                return 0;
            }
            return refuse(x, f->path, err, err == -EEXIST ? "already exists in the output" : NULL);
        }
        if (x->ndirs == x->capdirs) {
            size_t nc = x->capdirs ? x->capdirs * 2 : 256;
            size_t *d = realloc(x->dirs, nc * sizeof *d);
            if (!d) return store_errf(x->e, -ENOMEM, "out of memory");
            x->dirs = d;
            x->capdirs = nc;
        }
        x->dirs[x->ndirs++] = idx;
        x->st->dirs++;
        return 0;
    }
    case STORE_FT_SYMLINK: {
        if (!f->target || !f->target[0]) return refuse(x, f->path, 0, "symlink without a target");
        /* Made as it is, whatever it points at: nothing here ever resolves through it. */
        if (symlinkat(f->target, pfd, name))
            return refuse(x, f->path, -errno, errno == EEXIST ? "already exists in the output" : NULL);
        if (x->root && fchownat(pfd, name, f->uid, f->gid, AT_SYMLINK_NOFOLLOW))
            return refuse(x, f->path, -errno, NULL);
        struct timespec t[2] = {ts_of(f->atime_ns), ts_of(f->mtime_ns)};
        if (utimensat(pfd, name, t, AT_SYMLINK_NOFOLLOW)) return refuse(x, f->path, -errno, NULL);
        x->st->symlinks++;
        return 0;
    }
    case STORE_FT_FILE: {
        if (x->first[idx] >= 0) return link_to(x, f, pfd, name, x->first[idx]);
        int rc = write_file(x, f, pfd, name, f);
        if (rc == 1) x->first[idx] = (int64_t)idx;
        return rc < 0 ? rc : 0;
    }
    default: {   /* hard link: to the inode's first name if this run wrote it, else a copy */
        const store_fentry *t = f->target ? find(x->fi, f->target, strlen(f->target)) : NULL;
        if (!t || t->type != STORE_FT_FILE)
            return refuse(x, f->path, 0, "hard link to something not a regular file");
        size_t ti = (size_t)(t - x->fi->e);
        if (x->first[ti] >= 0) return link_to(x, f, pfd, name, x->first[ti]);
        int rc = write_file(x, f, pfd, name, t);
        if (rc == 1) x->first[ti] = (int64_t)idx;
        return rc < 0 ? rc : 0;
    }
    }
}

/* Directories' modes and times, children first (reverse path order), so neither a
 * read-only mode nor a child's creation undoes them. */
static int finish_dirs(xdir *x)
{
    for (size_t k = x->ndirs; k-- > 0;) {
        const store_fentry *f = &x->fi->e[x->dirs[k]];
        int fd = open_dir(x, f->path + 1, O_RDONLY, 0), rc = fd < 0 ? fd : set_meta(x, fd, f);
        if (fd >= 0) close(fd);
        if (rc && (rc = refuse(x, f->path, rc, NULL))) return rc;
    }
    return 0;
}

static int mkdir_p(const char *dir)
{
    char *p = strdup(dir);
    if (!p) return -ENOMEM;
    int rc = 0;
    for (char *c = p + 1;; c++) {
        if (*c && *c != '/') continue;
        char save = *c;
        *c = 0;
        if (mkdir(p, 0755) && errno != EEXIST) rc = -errno;
        *c = save;
        if (rc || !save) break;
    }
    free(p);
    return rc;
}

int restore_extract_dir(store_t *s, const store_snapshot *snap, const store_findex *fi,
                        const char *const *paths, size_t npaths, unsigned class_mask,
                        int include_secrets, const char *outdir, restore_extract_stats *st,
                        store_err *e)
{
    restore_extract_stats dummy;
    if (!st) {
        memset(&dummy, 0, sizeof dummy);
        st = &dummy;
    }
    xdir x = {.s = s, .snap = snap, .fi = fi, .st = st, .e = e, .root = geteuid() == 0,
              .curfd = -1};
    int rc = mkdir_p(outdir);
    if (rc) return store_errf(e, rc, "%s: %s", outdir, strerror(-rc));
    x.outfd = open(outdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (x.outfd < 0) return store_errf(e, -errno, "%s: %s", outdir, strerror(errno));
    x.first = first_table(fi->n);
    x.buf = malloc(IOBUF);
    rc = x.first && x.buf ? 0 : store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = restore_select(fi, paths, npaths, class_mask, include_secrets, xdir_entry, &x,
                                 st, e);
    if (x.cur) close(x.curfd);
    if (!rc) rc = finish_dirs(&x);
    free(x.cur);
    free(x.dirs);
    free(x.first);
    free(x.buf);
    close(x.outfd);
    return summary(st, rc, x.fail_code, e);
}

/* ---- extract to a tar stream -------------------------------------------------------- */

typedef struct {
    store_t *s;
    const store_snapshot *snap;
    const store_findex *fi;
    restore_extract_stats *st;
    store_err *e;
    int fd;
    int64_t *first;           /* per entry: the member (entry) that holds its inode */
    uint8_t *buf;             /* file data */
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
    int rc = write_all(t->fd, t->out, t->nout);
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
        if (ext_len(f, k)) {
            count++;
            end = f->ext[k].file_off + ext_len(f, k);
        }
    int tail = end < f->size || !count;
    n += (size_t)snprintf(p + n, cap - n, "%zu\n", count + (size_t)tail);
    for (uint32_t k = 0; k < f->next; k++)
        if (ext_len(f, k))
            n += (size_t)snprintf(p + n, cap - n, "%llu\n%llu\n",
                                  (unsigned long long)f->ext[k].file_off,
                                  (unsigned long long)ext_len(f, k));
    if (tail) n += (size_t)snprintf(p + n, cap - n, "%llu\n0\n", (unsigned long long)f->size);
    *out = p;
    *len = n;
    return 0;
}

static int t_file(xtar *t, const store_fentry *f, const char *name, const store_fentry *d)
{
    const char *why = data_problem(t->snap, d);
    if (why) {
        t->st->failed++;
        note(t->st, f->path, "%s", why);
        return 0;
    }
    uint64_t data = 0;
    if (d->inline_data) data = d->size;
    for (uint32_t k = 0; !d->inline_data && k < d->next; k++) data += ext_len(d, k);
    int sparse = data < d->size, rc;
    char *map = NULL;
    size_t maplen = 0;
    if (sparse && (rc = sparse_map(d, &map, &maplen))) return store_errf(t->e, rc, "out of memory");
    uint64_t stored = sparse ? (maplen + 511) / 512 * 512 + data : d->size;
    rc = t_header(t, d, name, '0', NULL, stored, sparse, d->size);
    if (!rc && sparse) rc = t_put(t, map, maplen);
    if (!rc && sparse) rc = t_pad(t, maplen);
    free(map);
    t->member_bytes = 0;
    int read_err = 0;
    if (!rc) rc = feed(t->s, t->snap, d, t->buf, !sparse, put_tar, t, &read_err, t->e);
    if (!rc) rc = t_pad(t, t->member_bytes);
    if (rc && read_err) return rc;   /* the header promised bytes the store cannot give */
    if (rc) return store_errf(t->e, rc, "writing the tar stream: %s", strerror(-rc));
    t->st->files++;
    t->st->bytes += d->size;
    return 1;
}

static int xtar_entry(void *arg, const store_fentry *f)
{
    xtar *t = arg;
    size_t idx = (size_t)(f - t->fi->e);
    const char *name = f->path + 1;
    int rc = 0;
    if (strlen(name) > TAR_NAME_MAX) {
        t->st->refused++;
        note(t->st, f->path, "path too long");
        return 0;
    }
    switch (f->type) {
    case STORE_FT_DIR:
        if (!(rc = t_header(t, f, name, '5', NULL, 0, 0, 0))) t->st->dirs++;
        break;
    case STORE_FT_SYMLINK:
        if (!f->target || !f->target[0]) {
            t->st->refused++;
            note(t->st, f->path, "symlink without a target");
            return 0;
        }
        if (!(rc = t_header(t, f, name, '2', f->target, 0, 0, 0))) t->st->symlinks++;
        break;
    case STORE_FT_FILE:
    case STORE_FT_HARDLINK: {
        const store_fentry *d = f;
        if (f->type == STORE_FT_HARDLINK)
            d = f->target ? find(t->fi, f->target, strlen(f->target)) : NULL;
        if (!d || d->type != STORE_FT_FILE) {
            t->st->refused++;
            note(t->st, f->path, "hard link to something not a regular file");
            return 0;
        }
        size_t di = (size_t)(d - t->fi->e);
        if (t->first[di] >= 0) {
            /* Links only to a member this stream holds, so the link is always resolvable. */
            if (!(rc = t_header(t, d, name, '1', t->fi->e[t->first[di]].path + 1, 0, 0, 0))) {
                t->st->files++;
                t->st->hardlinks++;
            }
            break;
        }
        rc = t_file(t, f, name, d);
        if (rc == 1) t->first[di] = (int64_t)idx;
        return rc < 0 ? rc : 0;
    }
    case STORE_FT_CHR: case STORE_FT_BLK: case STORE_FT_FIFO: case STORE_FT_SOCK:
        t->st->specials++;
        return 0;
    default:
        t->st->refused++;
        note(t->st, f->path, "unknown file type");
        return 0;
    }
    return rc ? store_errf(t->e, rc, "writing the tar stream: %s", strerror(-rc)) : 0;
}

int restore_extract_tar(store_t *s, const store_snapshot *snap, const store_findex *fi,
                        const char *const *paths, size_t npaths, unsigned class_mask,
                        int include_secrets, int fd, restore_extract_stats *st, store_err *e)
{
    restore_extract_stats dummy;
    if (!st) {
        memset(&dummy, 0, sizeof dummy);
        st = &dummy;
    }
    xtar t = {.s = s, .snap = snap, .fi = fi, .st = st, .e = e, .fd = fd};
    t.first = first_table(fi->n);
    t.buf = malloc(IOBUF);
    t.out = malloc(OUTBUF);
    int rc = t.first && t.buf && t.out ? 0 : store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = restore_select(fi, paths, npaths, class_mask, include_secrets, xtar_entry, &t,
                                 st, e);
    if (!rc && ((rc = t_put(&t, NULL, 1024)) || (rc = t_flush(&t))))   /* two zero blocks */
        rc = store_errf(e, rc, "writing the tar stream: %s", strerror(-rc));
    free(t.first);
    free(t.buf);
    free(t.out);
    free(t.pax);
    return summary(st, rc, 0, e);
}
