/* A regular file's bytes from a file index entry: checks, reads, cat.
 *
 * Extents are the tenant's: they are clipped to the file's size and must lie inside the
 * disk blob, so a crafted extent can neither make a huge file nor read another blob.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "restore/internal.h"

static uint64_t disk_size(const store_snapshot *snap)
{
    const store_blob *b = store_blob_find(snap, "disk");
    return b ? b->size : 0;
}

/* Bytes of extent k inside the file (extents may run past the size: block granularity). */
uint64_t restore_ext_len(const store_fentry *f, uint32_t k)
{
    const store_extent *x = &f->ext[k];
    if (x->file_off >= f->size) return 0;
    return x->len < f->size - x->file_off ? x->len : f->size - x->file_off;
}

/* Why the entry's data cannot be read, or NULL. */
const char *restore_data_problem(const store_snapshot *snap, const store_fentry *f)
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
        uint64_t n = restore_ext_len(f, k);
        if (!n) continue;
        if (x->file_off < end) return "damaged index entry: extents overlap or go backwards";
        if (x->disk_off > dsize || n > dsize - x->disk_off) return "extent outside the disk";
        end = x->file_off + n;
    }
    return NULL;
}




/* Feeds a checked entry's bytes in file order. Holes are fed only when `holes`.
 * *read_err tells a store read failure from a failure of put. */
int restore_feed(store_t *s, const store_snapshot *snap, const store_fentry *f, uint8_t *buf,
                int holes, restore_feed_fn put, void *arg, int *read_err, store_err *e)
{
    *read_err = 0;
    uint64_t pos = 0;
    int rc = 0;
    if (f->inline_data) {
        if (f->inline_len) rc = put(arg, 0, f->inline_data, f->inline_len);
        pos = f->inline_len;
    }
    for (uint32_t k = 0; !rc && !f->inline_data && k < f->next; k++) {
        uint64_t n = restore_ext_len(f, k), off = f->ext[k].file_off;
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

int restore_write_all(int fd, const void *buf, size_t n)
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
    if (buf) return restore_write_all(fd, buf, len);
    for (size_t done = 0; !rc && done < len; done += sizeof zeros)
        rc = restore_write_all(fd, zeros, len - done < sizeof zeros ? len - done : sizeof zeros);
    return rc;
}

int restore_cat(store_t *s, const store_snapshot *snap, const store_findex *fi,
                const store_fentry *f, int fd, store_err *e)
{
    char p[256];
    store_path_printable(f->path ? f->path : "", p, sizeof p);
    if (f->type == STORE_FT_HARDLINK) {
        const store_fentry *t = f->target ? store_findex_find(fi, f->target, strlen(f->target)) : NULL;
        if (!t || t->type != STORE_FT_FILE)
            return store_errf(e, -EINVAL, "%s: hard link to something not a regular file", p);
        f = t;
    }
    const char *why = restore_data_problem(snap, f);
    if (why) return store_errf(e, f->type == STORE_FT_FILE ? -EIO : -EINVAL, "%s: %s", p, why);
    uint8_t *buf = malloc(IOBUF);
    if (!buf) return store_errf(e, -ENOMEM, "out of memory");
    int read_err, rc = restore_feed(s, snap, f, buf, 1, put_stream, &fd, &read_err, e);
    free(buf);
    if (rc && !read_err) rc = store_errf(e, rc, "%s: writing: %s", p, strerror(-rc));
    return rc;
}
