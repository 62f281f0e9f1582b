/* An inode is secret if any of its names is: the class belongs to the bytes, not to the
 * name the walker met first. Run where a file index gets its classes (snapshot) and where
 * one is loaded (every consumer: ls, cat, extract, reclaim, rebuild), so an index written
 * before this rule existed is read under it too. See docs/classes.md. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

static int set_secret(store_fentry *f, uint64_t *marked)
{
    if (f->cls == STORE_CLASS_SECRET) return 0;
    f->cls = STORE_CLASS_SECRET;
    (*marked)++;
    return 1;
}

/* Everything below a secret folder. Children do not follow their folder directly in memcmp
 * order ("/a/b-c" sorts between "/a/b" and "/a/b/x"), so each folder's range is searched. */
static int mark_below_folders(store_findex *fi, uint64_t *marked)
{
    for (size_t i = 0; i < fi->n; i++) {
        const store_fentry *d = &fi->e[i];
        if (d->type != STORE_FT_DIR || d->cls != STORE_CLASS_SECRET) continue;
        size_t pl = d->path_len;
        int root = pl == 1 && d->path[0] == '/';
        char *pre = malloc(pl + 2);
        if (!pre) return -ENOMEM;
        memcpy(pre, d->path, pl);
        size_t plen = root ? 1 : pl + 1;
        pre[plen - 1] = '/';
        for (size_t k = store_findex_lower_bound(fi, pre, plen); k < fi->n; k++) {
            store_fentry *c = &fi->e[k];
            if (c->path_len <= plen || memcmp(c->path, pre, plen)) break;
            set_secret(c, marked);
        }
        free(pre);
    }
    return 0;
}

/* The names of one inode: a FILE entry and the HARDLINK entries whose target is its path.
 * Returns how many entries changed. */
static uint64_t mark_link_groups(store_findex *fi, uint64_t *marked)
{
    uint64_t before = *marked;
    for (size_t i = 0; i < fi->n; i++) {
        store_fentry *h = &fi->e[i];
        if (h->type != STORE_FT_HARDLINK || !h->target) continue;
        store_fentry *t = (store_fentry *)store_findex_get(fi, h->target);
        if (!t) continue;
        if (h->cls == STORE_CLASS_SECRET) set_secret(t, marked);
    }
    for (size_t i = 0; i < fi->n; i++) {
        store_fentry *h = &fi->e[i];
        if (h->type != STORE_FT_HARDLINK || !h->target) continue;
        const store_fentry *t = store_findex_get(fi, h->target);
        if (t && t->cls == STORE_CLASS_SECRET) set_secret(h, marked);
    }
    return *marked - before;
}

typedef struct { uint64_t start, end; } range;

static int cmp_range(const void *a, const void *b)
{
    const range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* A crafted image can point a harmless-looking file's extents at a secret's blocks: the
 * bytes are the secret's whatever the name. Any file whose extents overlap a secret file's
 * is secret too. */
static int mark_shared_blocks(store_findex *fi, uint64_t *marked)
{
    size_t n = 0;
    for (size_t i = 0; i < fi->n; i++)
        if (fi->e[i].type == STORE_FT_FILE && fi->e[i].cls == STORE_CLASS_SECRET) n += fi->e[i].next;
    if (!n) return 0;
    range *r = malloc(n * sizeof *r);
    if (!r) return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < fi->n; i++) {
        const store_fentry *f = &fi->e[i];
        if (f->type != STORE_FT_FILE || f->cls != STORE_CLASS_SECRET) continue;
        for (uint32_t x = 0; x < f->next; x++) {
            uint64_t s = f->ext[x].disk_off, len = f->ext[x].len;
            if (!len) continue;
            r[k].start = s;
            r[k].end = len > UINT64_MAX - s ? UINT64_MAX : s + len;
            k++;
        }
    }
    qsort(r, k, sizeof *r, cmp_range);
    /* Merged, so that "the range starting at or before x" also covers x when any does. */
    size_t m = 0;
    for (size_t i = 0; i < k; i++) {
        if (m && r[i].start <= r[m - 1].end) {
            if (r[i].end > r[m - 1].end) r[m - 1].end = r[i].end;
        } else r[m++] = r[i];
    }
    for (size_t i = 0; i < fi->n; i++) {
        store_fentry *f = &fi->e[i];
        if (f->type != STORE_FT_FILE || f->cls == STORE_CLASS_SECRET) continue;
        for (uint32_t x = 0; x < f->next; x++) {
            uint64_t s = f->ext[x].disk_off, len = f->ext[x].len;
            if (!len) continue;
            uint64_t end = len > UINT64_MAX - s ? UINT64_MAX : s + len;
            /* last merged range starting before end */
            size_t lo = 0, hi = m;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (r[mid].start < end) lo = mid + 1;
                else hi = mid;
            }
            if (lo && r[lo - 1].end > s) {
                set_secret(f, marked);
                break;
            }
        }
    }
    free(r);
    return 0;
}

int store_findex_mark_secrets(store_findex *fi, uint64_t *marked)
{
    uint64_t dummy = 0;
    if (!marked) marked = &dummy;
    *marked = 0;
    int rc = mark_below_folders(fi, marked);
    if (!rc) {
        mark_link_groups(fi, marked);
        rc = mark_shared_blocks(fi, marked);
    }
    /* A file made secret by shared blocks makes its other names secret; no new folder
     * can become secret here (folders are secret only by their own name). */
    if (!rc) mark_link_groups(fi, marked);
    return rc;
}
