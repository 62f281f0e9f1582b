/* Extraction to a folder.
 *
 * Every name is resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) from a
 * descriptor of the output folder and created with O_EXCL|O_NOFOLLOW: even a check missed
 * by the selection cannot write, or follow a link, outside the output.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "restore/internal.h"

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

typedef struct {
    restore_xrun r;
    int outfd, root, fail_code;
    size_t *dirs, ndirs, capdirs; /* directories made, for their modes and times at the end */
    char *cur;                /* cached parent folder (relative) and its O_PATH fd */
    int curfd;
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
        store_path_printable(path, p, sizeof p);
        return store_errf(x->r.e, err, "extracting %s: %s", p, strerror(-err));
    }
    x->r.st->refused++;
    if (why) restore_note(x->r.st, path, "%s", why);
    else restore_note(x->r.st, path, "%s", strerror(-err));
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
    const char *why = restore_data_problem(x->r.snap, d);
    if (why) {
        x->r.st->failed++;
        restore_note(x->r.st, f->path, "%s", why);
        return 0;
    }
    int fd = beneath(pfd, name, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return refuse(x, f->path, fd, fd == -EEXIST ? "already exists in the output" : NULL);
    int rc = ftruncate(fd, (off_t)d->size) ? -errno : 0, read_err = 0;
    store_err re;
    if (!rc) rc = restore_feed(x->r.s, x->r.snap, d, x->r.buf, 0, put_file, &fd, &read_err, &re);
    if (!rc) rc = set_meta(x, fd, d);
    if (close(fd) && !rc) rc = -errno;
    if (rc) {
        (void)unlinkat(pfd, name, 0);   /* never leave a file with wrong bytes */
        if (!read_err) return refuse(x, f->path, rc, NULL);
        x->r.st->failed++;
        if (!x->fail_code) x->fail_code = rc;
        restore_note(x->r.st, f->path, "%s", re.msg);
        return 0;
    }
    x->r.st->files++;
    x->r.st->bytes += d->size;
    return 1;
}

static int link_to(xdir *x, const store_fentry *f, int pfd, const char *name, int64_t from)
{
    const char *op = x->r.fi->e[from].path + 1, *slash = strrchr(op, '/');
    int ofd = x->outfd, rc = 0;
    char *oparent = NULL;
    if (slash) {
        oparent = strndup(op, (size_t)(slash - op));
        if (!oparent) return store_errf(x->r.e, -ENOMEM, "out of memory");
        ofd = open_dir(x, oparent, O_PATH, 0);
    }
    if (ofd < 0) rc = ofd;
    else if (linkat(ofd, slash ? slash + 1 : op, pfd, name, 0)) rc = -errno;
    if (slash && ofd >= 0) close(ofd);
    free(oparent);
    if (rc) return refuse(x, f->path, rc, rc == -EEXIST ? "already exists in the output" : NULL);
    x->r.st->files++;
    x->r.st->hardlinks++;
    return 0;
}

static int xdir_entry(void *arg, const store_fentry *f)
{
    xdir *x = arg;
    size_t idx = (size_t)(f - x->r.fi->e);
    const char *rel = f->path + 1, *slash = strrchr(rel, '/');
    const char *name = slash ? slash + 1 : rel;
    if (f->type >= STORE_FT_CHR && f->type <= STORE_FT_SOCK) {
        x->r.st->specials++;
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
            if (!d) return store_errf(x->r.e, -ENOMEM, "out of memory");
            x->dirs = d;
            x->capdirs = nc;
        }
        x->dirs[x->ndirs++] = idx;
        x->r.st->dirs++;
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
        x->r.st->symlinks++;
        return 0;
    }
    case STORE_FT_FILE: {
        if (x->r.first[idx] >= 0) return link_to(x, f, pfd, name, x->r.first[idx]);
        int rc = write_file(x, f, pfd, name, f);
        if (rc == 1) x->r.first[idx] = (int64_t)idx;
        return rc < 0 ? rc : 0;
    }
    default: {   /* hard link: to the inode's first name if this run wrote it, else a copy */
        const store_fentry *t = f->target ? store_findex_find(x->r.fi, f->target, strlen(f->target)) : NULL;
        if (!t || t->type != STORE_FT_FILE)
            return refuse(x, f->path, 0, "hard link to something not a regular file");
        size_t ti = (size_t)(t - x->r.fi->e);
        if (x->r.first[ti] >= 0) return link_to(x, f, pfd, name, x->r.first[ti]);
        int rc = write_file(x, f, pfd, name, t);
        if (rc == 1) x->r.first[ti] = (int64_t)idx;
        return rc < 0 ? rc : 0;
    }
    }
}

/* Directories' modes and times, children first (reverse path order), so neither a
 * read-only mode nor a child's creation undoes them. */
static int finish_dirs(xdir *x)
{
    for (size_t k = x->ndirs; k-- > 0;) {
        const store_fentry *f = &x->r.fi->e[x->dirs[k]];
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
    xdir x = {.root = geteuid() == 0, .curfd = -1, .outfd = -1};
    int rc = restore_xrun_init(&x.r, s, snap, fi, st, e);
    if (!rc && (rc = mkdir_p(outdir))) rc = store_errf(e, rc, "%s: %s", outdir, strerror(-rc));
    if (!rc && (x.outfd = open(outdir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = store_errf(e, -errno, "%s: %s", outdir, strerror(errno));
    if (!rc) rc = restore_select(fi, paths, npaths, class_mask, include_secrets, xdir_entry, &x,
                                 x.r.st, e);
    if (x.cur) close(x.curfd);
    if (!rc) rc = finish_dirs(&x);
    free(x.cur);
    free(x.dirs);
    if (x.outfd >= 0) close(x.outfd);
    restore_xrun_free(&x.r);
    return restore_summary(x.r.st, rc, x.fail_code, e);
}
