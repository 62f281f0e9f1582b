/* libFuzzer target: damaged packs into the footer parser (what gc, fsck and an index
 * rebuild trust to find chunks). An accepted footer must describe groups that tile the
 * file in order. Seeds: tests/fuzz/corpus/pack/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "store/internal.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("pack", 0)) < 0) abort();
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    /* Give most inputs a footer checksum that holds, so the checks behind it are reached. */
    if (size >= PACK_HEADER_LEN + PACK_TRAILER_LEN && !(data[size - 1] & 1)) {
        uint64_t foff = util_get_le64(buf + size - PACK_TRAILER_LEN);
        if (foff <= size - PACK_TRAILER_LEN)
            util_put_le64(buf + size - 16, XXH3_64bits(buf + foff, size - PACK_TRAILER_LEN - foff));
    }
    if (ftruncate(fd, 0) || pwrite(fd, buf, size, 0) != (ssize_t)size) abort();
    free(buf);
    pack_group *g = NULL;
    store_id *ids = NULL;
    uint32_t ng = 0, nc = 0;
    if (pack_read_footer(fd, size, &g, &ng, &ids, &nc, NULL, "fuzz") == 0) {
        uint64_t pos = PACK_HEADER_LEN, n = 0;
        for (uint32_t i = 0; i < ng; i++) {
            if (g[i].offset != pos || g[i].first != n || !g[i].npages) abort();
            pos += g[i].clen;
            n += g[i].npages;
        }
        if (n != nc || pos > size) abort();
        free(g);
        free(ids);
    }
    return 0;
}
