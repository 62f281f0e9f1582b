/* libFuzzer target: damaged file indexes (manifests/ID.files, written by a confined child
 * from tenant bytes) into the one decoder. Whatever it accepts must encode and decode to
 * the same entries, with sorted paths and extents inside their file. Seeds:
 * tests/fuzz/corpus/findex/. */
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "store/internal.h"

static void check(const uint8_t *data, size_t size);

/* The file is a header and one zstd frame: the input is fed as it is (the header and the
 * frame damaged) and, so mutations reach the entry parser, as the frame's content. */
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    check(data, size);
    size_t cap = 16 + ZSTD_compressBound(size);
    uint8_t *buf = malloc(cap);
    if (!buf) return 0;
    size_t z = ZSTD_compress(buf + 16, cap - 16, data, size, 1);
    if (ZSTD_isError(z)) abort();
    memcpy(buf, "CAIRNFI1", 8);   /* FILES_MAGIC of store/files.c */
    util_put_le64(buf + 8, size);
    check(buf, 16 + z);
    free(buf);
    return 0;
}

static void check(const uint8_t *data, size_t size)
{
    store_findex *fi = NULL;
    if (store_findex_decode(data, size, &fi, NULL) != 0) return;
    for (size_t i = 0; i < fi->n; i++) {
        const store_fentry *f = &fi->e[i];
        if (!f->path || strlen(f->path) != f->path_len) abort();
        if (store_findex_get(fi, f->path) == NULL) abort();
        for (uint32_t k = 0; k < f->next; k++) (void)f->ext[k].disk_off;
        for (uint32_t k = 0; k < f->nxattrs; k++)
            if (!f->xattrs[k].name) abort();
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    store_findex *back = NULL;
    if (store_findex_encode(fi, &buf, &len, NULL) == 0) {
        if (store_findex_decode(buf, len, &back, NULL) != 0) abort();
        if (back->n != fi->n) abort();
        for (size_t i = 0; i < fi->n; i++)
            if (strcmp(back->e[i].path, fi->e[i].path) || back->e[i].size != fi->e[i].size ||
                back->e[i].next != fi->e[i].next || back->e[i].inline_len != fi->e[i].inline_len)
                abort();
        free(buf);
        store_findex_free(back);
    }
    store_findex_free(fi);
}
