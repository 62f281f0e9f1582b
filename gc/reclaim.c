/* The files-only snapshot a reclaim leaves: the important entries of the latest full
 * snapshot's file index (artifact, upload, project), the folders above them and the
 * targets of their hard links, and a disk recipe that keeps only the pages their extents
 * cover (every other page reads as zero: nothing else is listed, so nothing reads it). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc/internal.h"

static void keep_ancestors(const store_findex *fi, uint8_t *keep, const char *path)
{
    size_t len = strlen(path);
    char *p = strndup(path, len);
    if (!p) return;
    for (char *slash = strrchr(p, '/'); slash; slash = strrchr(p, '/')) {
        *slash = 0;
        const store_fentry *d = store_findex_get(fi, slash == p ? "/" : p);
        if (d) keep[d - fi->e] = 1;
        if (slash == p) break;
    }
    free(p);
}

int gc_files_only(store_t *s, const store_snapshot *src, store_snapshot **out, store_err *e)
{
    *out = NULL;
    store_findex *fi = NULL;
    int rc = 0;
    if (src->files_hash[0]) rc = store_findex_load(s, src, &fi, e);
    if (rc) return rc;
    store_snapshot *snap = calloc(1, sizeof *snap);
    if (!snap) {
        store_findex_free(fi);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    snprintf(snap->tenant, sizeof snap->tenant, "%s", src->tenant);
    snprintf(snap->sandbox, sizeof snap->sandbox, "%s", src->sandbox);
    snap->tier = src->tier;
    snprintf(snap->template_name, sizeof snap->template_name, "%s", src->template_name);
    snprintf(snap->parent, sizeof snap->parent, "%s", src->id);
    snap->kind = STORE_KIND_FILES;
    const store_blob *disk = store_blob_find(src, "disk");
    if (!fi || !disk) {            /* nothing to keep: no disk, so no files */
        *out = snap;
        store_findex_free(fi);
        return 0;
    }
    uint8_t *keep = calloc(fi->n ? fi->n : 1, 1);
    store_blob *b = &snap->blobs[0];
    snap->nblobs = 1;
    snprintf(b->name, sizeof b->name, "disk");
    b->size = disk->size;
    b->npages = disk->npages;
    b->ids = calloc(b->npages ? b->npages : 1, sizeof *b->ids);
    if (!keep || !b->ids) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < fi->n; i++) {
        const store_fentry *f = &fi->e[i];
        if (!store_class_important((store_class)f->cls)) continue;
        keep[i] = 1;
        keep_ancestors(fi, keep, f->path);
        if (f->type == STORE_FT_HARDLINK && f->target) {
            const store_fentry *t = store_findex_get(fi, f->target);
            /* The loaded index has every name of a secret inode secret already
             * (store_findex_mark_secrets); this check keeps it so if that ever changes. */
            if (t && t->cls == STORE_CLASS_SECRET) keep[i] = 0;
            else if (t) {
                keep[t - fi->e] = 1;
                keep_ancestors(fi, keep, t->path);
            }
        }
    }
    /* Keep the pages of every kept file's extents (bounded by the disk: the index is
     * tenant data, and a page outside the recipe does not exist). */
    store_findex view = {0};
    view.e = calloc(fi->n ? fi->n : 1, sizeof *view.e);
    if (!rc && !view.e) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < fi->n; i++) {
        if (!keep[i]) continue;
        const store_fentry *f = &fi->e[i];
        view.e[view.n++] = *f;               /* shallow: re-encoded below into a deep copy */
        for (uint32_t k = 0; k < f->next; k++) {
            const store_extent *x = &f->ext[k];
            if (x->disk_off >= disk->size || x->len == 0) continue;
            uint64_t end = x->disk_off + (x->len < disk->size - x->disk_off ? x->len : disk->size - x->disk_off);
            for (uint64_t p = x->disk_off / STORE_PAGE; p < (end + STORE_PAGE - 1) / STORE_PAGE; p++)
                b->ids[p] = disk->ids[p];
            snap->logical_bytes += end - x->disk_off;
        }
        if (f->type == STORE_FT_FILE) snap->logical_bytes += f->inline_len;
    }
    uint8_t *enc = NULL;
    size_t len = 0;
    if (!rc) rc = store_findex_encode(&view, &enc, &len, e);
    if (!rc) rc = store_findex_decode(enc, len, &snap->files, e);
    free(enc);
    free(view.e);
    free(keep);
    store_findex_free(fi);
    if (rc) {
        store_snapshot_free(snap);
        return rc;
    }
    *out = snap;
    return 0;
}
