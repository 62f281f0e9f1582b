/* libFuzzer target: a damaged or forged events.log (any local process that can write the
 * store appends to it; a crash tears its last line) through the one event parser
 * (store/events.c) into the lifecycle view gc decides from. Seeds: tests/fuzz/corpus/events/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gc/internal.h"
#include "store/backend.h"
#include "store/internal.h"

static int add_event(void *arg, const store_event *ev)
{
    return gc_state_add_event(arg, ev) != 0;
}

static void add_record(gc_state *st, const char *json)
{
    store_snaprec r;
    if (manifest_record_parse(json, &r, NULL) || gc_state_add_snap(st, &r)) abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static char dir[64], path[96];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/cairn-fuzz-events-%d", (int)getpid());
        snprintf(path, sizeof path, "%s/events.log", dir);
        mkdir(dir, 0700);
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    /* Only what the log reader needs of a store: its folder, through the local backend. */
    struct store s;
    memset(&s, 0, sizeof s);
    s.dir = dir;
    if (backend_local_open(dir, &s.be, NULL)) abort();
    gc_state st;
    memset(&st, 0, sizeof st);
    /* Two sandboxes for the events to name, one of them reclaimed. */
    add_record(&st, "{\"snapshot\":\"0000000000010000000a\",\"sandbox\":\"box\",\"tenant\":\"acme\","
               "\"tier\":\"free\",\"time_ms\":65536,\"kind\":\"full\",\"parent\":\"\",\"new_bytes\":4096,"
               "\"blobs\":{\"disk\":4096}}");
    add_record(&st, "{\"snapshot\":\"0000000000020000000b\",\"sandbox\":\"b2\",\"tenant\":\"acme\","
               "\"tier\":\"\",\"time_ms\":131072,\"kind\":\"files\",\"parent\":\"0000000000010000000a\","
               "\"files_hash\":\"0123456789abcdef\",\"blobs\":{}}");
    if (store_event_each(&s, add_event, &st, NULL) == 0) {
        gc_sandbox *v = NULL;
        size_t n = 0;
        if (gc_view(&st, NULL, &v, &n, NULL) == 0) {
            if (n != 2) abort();
            for (size_t i = 0; i < n; i++)
                if (v[i].state != GC_DELETED && v[i].state != GC_RECLAIMED && v[i].state != GC_HIBERNATED)
                    abort();
                else if (v[i].tier != STORE_TIER_FREE && v[i].tier != STORE_TIER_PRO)
                    abort();   /* an unknown tier never gets this far */
            free(v);
        }
        (void)gc_pinned(&st, "0000000000010000000a");
    }
    gc_state_free(&st);
    backend_close(s.be);
    return 0;
}
