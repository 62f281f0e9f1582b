/* Extraction's path selection: which entries of a (hostile) file index may be given out.
 *
 * The index is the tenant's: any path may be hostile. Every path is checked before use (no
 * empty, ".", ".." or over-long component, nothing below an entry that is not a directory),
 * and the index must be strictly sorted, so a path cannot appear twice (a dir, then a
 * symlink of the same name). A secret's bytes are not given out through a hard link or a
 * secret folder's child. The writers (folder.c, tar.c) rely on what passes here.
 */
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "restore/internal.h"

/* Counts nothing: tells the caller's warn function and remembers the first problem. */
void restore_note(restore_extract_stats *st, const char *path, const char *fmt, ...)
{
    char p[256], why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    store_path_printable(path ? path : "(null)", p, sizeof p);
    if (!st->first_problem[0])
        snprintf(st->first_problem, sizeof st->first_problem, "%s: %s", p, why);
    if (st->warn) st->warn(st->warn_arg, p, why);
}

/* A secret is not given out: its own class, a secret folder above it, or a hard link
 * whose target (the inode's bytes) is secret. */
static int is_secret_entry(const store_findex *fi, const store_fentry *f)
{
    if (f->cls == STORE_CLASS_SECRET) return 1;
    if (f->type == STORE_FT_HARDLINK && f->target) {
        const store_fentry *t = store_findex_find(fi, f->target, strlen(f->target));
        if (t && t->cls == STORE_CLASS_SECRET) return 1;
    }
    return 0;
}

int restore_is_secret(const store_findex *fi, const store_fentry *f)
{
    if (is_secret_entry(fi, f)) return 1;
    const char *p = f->path ? f->path : "";
    for (size_t i = 1, n = strlen(p); i < n; i++) {
        const store_fentry *a = p[i] == '/' ? store_findex_find(fi, p, i) : NULL;
        if (a && a->cls == STORE_CLASS_SECRET) return 1;
    }
    return 0;
}

int restore_cat_is_secret(const store_findex *fi, const store_fentry *f)
{
    const store_fentry *data = restore_file_data(fi, f);
    return restore_is_secret(fi, f) || (data && restore_is_secret(fi, data));
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
        const store_fentry *a = store_findex_find(fi, p, i);
        if (!a) continue;   /* a missing folder is made; it cannot be anything else */
        if (a->type != STORE_FT_DIR) {
            pc->refuse = "below an entry that is not a directory";
            return 0;
        }
        if (a->cls == STORE_CLASS_SECRET) pc->secret = 1;
    }
    return 0;
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
    if (!store_findex_sorted(fi))
        return store_errf(e, -EINVAL, "file index is not sorted or has an entry without a path "
                          "(damaged): refusing it");
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
        req[k] = restore_norm_path(paths[k]);
        if (!req[k]) {
            rc = store_errf(e, -ENOMEM, "out of memory");
            break;
        }
        rlen[k] = strlen(req[k]);
        size_t i = store_findex_lower_bound(fi, req[k], rlen[k]);
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
            restore_note(st, f->path, "unknown class %u", f->cls);
            continue;
        }
        if (class_mask && !(class_mask & (1u << f->cls))) continue;
        const char *why = store_path_problem(f->path);
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
            restore_note(st, f->path, "%s", why);
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

int restore_summary(restore_extract_stats *st, int rc, int fail_code, store_err *e)
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

int restore_xrun_init(restore_xrun *r, store_t *s, const store_snapshot *snap,
                      const store_findex *fi, restore_extract_stats *st, store_err *e)
{
    memset(r, 0, sizeof *r);
    r->s = s;
    r->snap = snap;
    r->fi = fi;
    r->st = st ? st : &r->own;
    r->e = e;
    r->first = malloc((fi->n ? fi->n : 1) * sizeof *r->first);
    r->buf = malloc(IOBUF);
    if (!r->first || !r->buf) return store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; i < fi->n; i++) r->first[i] = -1;
    return 0;
}

void restore_xrun_free(restore_xrun *r)
{
    free(r->first);
    free(r->buf);
    r->first = NULL;
    r->buf = NULL;
}
