/* libFuzzer target: damaged or forged manifests (manifests/ID.cmf) into the one manifest
 * parser. A decoded manifest must encode again and decode to the same recipes, so the
 * parser never accepts what the encoder cannot say. Seeds: tests/fuzz/corpus/manifest/. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "store/internal.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    /* Half the inputs get a valid checksum, or the fuzzer would never pass the check. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    if (size >= 32 && (data[size - 17] & 1)) util_put_le64(buf + size - 16, XXH3_64bits(buf, size - 16));
    store_snapshot *snap = NULL;
    uint64_t *packs = NULL;
    size_t npacks = 0;
    if (manifest_decode(buf, size, &snap, &packs, &npacks, NULL) == 0) {
        uint8_t *enc = NULL;
        size_t len = 0;
        store_snapshot *back = NULL;
        if (manifest_encode(snap, packs, npacks, &enc, &len, NULL) != 0) abort();
        if (manifest_decode(enc, len, &back, NULL, NULL, NULL) != 0) abort();
        if (back->nblobs != snap->nblobs) abort();
        for (int i = 0; i < snap->nblobs; i++)
            if (back->blobs[i].npages != snap->blobs[i].npages ||
                memcmp(back->blobs[i].ids, snap->blobs[i].ids, snap->blobs[i].npages * 16))
                abort();
        store_snapshot_free(back);
        free(enc);
        free(packs);
        store_snapshot_free(snap);
    }
    free(buf);
    return 0;
}
