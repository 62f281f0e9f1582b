/* gcfleet: fills a fresh store with N sandboxes of one small snapshot each, in one
 * process, for the gc benchmark (tools/bench_gc.sh): the many-sandbox shape of a real
 * fleet without the cost of N `cairn snapshot` processes. Each snapshot's vmstate is one
 * page of its own (so every sandbox owns a chunk); one sandbox in 100 gets a second
 * snapshot (gc drops the first: superseded). Benchmark tooling, not the product.
 *   cairn-gcfleet STORE N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static int one(store_t *s, store_cctx *c, long i, int version, store_err *e)
{
    uint8_t page[STORE_PAGE], frame[8192];
    memset(page, 0, sizeof page);
    snprintf((char *)page, sizeof page, "sandbox %ld version %d", i, version);
    store_snapshot snap;
    memset(&snap, 0, sizeof snap);
    store_id id;
    store_chunk_id(s, page, &id);
    snprintf(snap.tenant, sizeof snap.tenant, "t%ld", i % 1000);
    snprintf(snap.sandbox, sizeof snap.sandbox, "sb%06ld", i);
    snap.tier = STORE_TIER_FREE;
    snap.nblobs = 1;
    snprintf(snap.blobs[0].name, sizeof snap.blobs[0].name, "vmstate");
    snap.blobs[0].size = STORE_PAGE;
    snap.blobs[0].npages = 1;
    snap.blobs[0].ids = &id;
    snap.logical_bytes = STORE_PAGE;
    store_writer *w = NULL;
    int rc = store_writer_open(s, &w, e);
    if (rc) return rc;
    ssize_t n = store_group_compress(c, page, 1, frame, sizeof frame);
    if (n < 0) {
        store_writer_abort(w);
        return store_errf(e, (int)n, "compress failed");
    }
    rc = store_writer_add_group(w, &id, 1, frame, (size_t)n, e);
    if (rc) {
        store_writer_abort(w);
        return rc;
    }
    snap.blobs[0].ids = &id;
    return store_writer_commit(w, &snap, e);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: cairn-gcfleet STORE N\n");
        return 2;
    }
    long n = atol(argv[2]);
    store_err e;
    store_t *s = NULL;
    if (store_init(argv[1], &e) || store_open(argv[1], STORE_WRITE, &s, &e)) {
        fprintf(stderr, "cairn-gcfleet: %s\n", e.msg);
        return 1;
    }
    store_cctx *c = store_cctx_new();
    int rc = c ? 0 : -ENOMEM;
    for (long i = 0; !rc && i < n; i++) {
        rc = one(s, c, i, 1, &e);
        if (!rc && i % 100 == 0) rc = one(s, c, i, 2, &e);
    }
    store_cctx_free(c);
    store_close(s);
    if (rc) {
        fprintf(stderr, "cairn-gcfleet: %s\n", e.msg);
        return 1;
    }
    return 0;
}
