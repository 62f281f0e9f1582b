/* libFuzzer target: a damaged or forged events.log (any local process that can write the
 * store appends to it; a crash tears its last line) through the log reader and the event
 * parser into the lifecycle view gc decides from. Seeds: tests/fuzz/corpus/events/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gc/internal.h"
#include "store/internal.h"

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
    struct store s;
    memset(&s, 0, sizeof s);
    s.dir = dir;
    gc_state st;
    memset(&st, 0, sizeof st);
    /* Two sandboxes for the events to name, one of them reclaimed. */
    gc_state_add_snapshot(&st, "0000000000010000000a",
        "{\"sandbox\":\"box\",\"tenant\":\"acme\",\"tier\":\"free\",\"time_ms\":65536,\"kind\":\"full\","
        "\"parent\":\"\",\"new_bytes\":4096,\"blobs\":{\"disk\":4096}}");
    gc_state_add_snapshot(&st, "0000000000020000000b",
        "{\"sandbox\":\"b2\",\"tenant\":\"acme\",\"time_ms\":131072,\"kind\":\"files\","
        "\"parent\":\"0000000000010000000a\",\"files_hash\":\"0123456789abcdef\"}");
    if (store_event_read(&s, gc_state_add_event, &st, NULL) == 0) {
        gc_sandbox *v = NULL;
        size_t n = 0;
        if (gc_view(&st, NULL, &v, &n, NULL) == 0) {
            if (n != 2) abort();
            for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].state, "deleted") && strcmp(v[i].state, "reclaimed") &&
                    strcmp(v[i].state, "hibernated"))
                    abort();
            free(v);
        }
        (void)gc_pinned(&st, "0000000000010000000a");
    }
    gc_state_free(&st);
    return 0;
}
