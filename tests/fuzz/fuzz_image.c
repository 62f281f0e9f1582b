/* libFuzzer target: mutated ext4 images into the disk walker (the code the confined child
 * runs), in process so the fuzzer sees crashes, leaks and hangs. Seeds: small images made
 * by tools/fuzz.sh with mke2fs -d, and the regression inputs in tests/fuzz/corpus/image/. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "snapshotter/snapshotter.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/cairn-fuzz-%d.img", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    store_findex *fi = NULL;
    store_err e;
    if (snap_index_disk_unconfined(path, size, &fi, &e) == 0) {
        /* The index must survive its own encoding: what the parent would parse. */
        uint8_t *buf;
        size_t len;
        store_findex *back = NULL;
        if (store_findex_encode(fi, &buf, &len, NULL) == 0) {
            if (store_findex_decode(buf, len, &back, NULL) != 0) abort();
            if (back->n != fi->n) abort();
            free(buf);
        }
        store_findex_free(back);
        store_findex_free(fi);
    }
    return 0;
}
