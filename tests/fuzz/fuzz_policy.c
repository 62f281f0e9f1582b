/* libFuzzer target: the policy file (rules "GLOB CLASS", store's `policy` or --policy) and
 * the classes file ("class<TAB>path", from the orchestrator) into the policy loader, then
 * the classifier over paths taken from the input. Input: CLASSES NUL POLICY NUL PATHS.
 * Seeds: tests/fuzz/corpus/policy/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapshotter/snapshotter.h"

static void put(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(p, 1, n, f) != n) abort();
    fclose(f);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static char cpath[64], ppath[64];
    if (!cpath[0]) {
        snprintf(cpath, sizeof cpath, "/tmp/cairn-fuzz-%d.classes", (int)getpid());
        snprintf(ppath, sizeof ppath, "/tmp/cairn-fuzz-%d.policy", (int)getpid());
    }
    const unsigned char *end = data + size, *z1 = memchr(data, 0, size);
    const unsigned char *pol = z1 ? z1 + 1 : end;
    const unsigned char *z2 = memchr(pol, 0, (size_t)(end - pol));
    const unsigned char *paths = z2 ? z2 + 1 : end;
    put(cpath, data, (size_t)((z1 ? z1 : end) - data));
    put(ppath, pol, (size_t)((z2 ? z2 : end) - pol));
    snap_policy *p = NULL;
    if (snap_policy_load(NULL, ppath, cpath, &p, NULL) != 0) return 0;
    static const char *fixed[] = {"/", "/home/ubuntu/.env", "/home/ubuntu/output/a/b.md",
                                  "/tmp/x", "/a/node_modules/b/c.js"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if ((unsigned)snap_policy_classify(p, fixed[i], strlen(fixed[i])) >= STORE_CLASS_COUNT) abort();
    for (const unsigned char *q = paths; q < end;) {
        const unsigned char *nl = memchr(q, '\n', (size_t)(end - q));
        size_t n = (size_t)((nl ? nl : end) - q);
        if ((unsigned)snap_policy_classify(p, (const char *)q, n) >= STORE_CLASS_COUNT) abort();
        q += n + 1;
    }
    snap_policy_free(p);
    return 0;
}
