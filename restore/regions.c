/* The one parser of Firecracker's guest region list (restore/lazy.h).
 *
 * Every number is the client's: the page server writes into the VM's memory at
 * base + k and reads the snapshot at offset + k, so a region is accepted only when both
 * ranges are aligned, cannot wrap around, and the file range lies inside the snapshot's
 * memory. A region list that passes can make the server write only inside the ranges the
 * client registered with its own uffd (the kernel refuses the rest: ENOENT/EINVAL).
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "restore/lazy.h"

static int get_u64(json_t *o, const char *key, int required, uint64_t *v, size_t i, store_err *e)
{
    json_t *x = json_object_get(o, key);
    if (!x) {
        if (required) return store_errf(e, -EINVAL, "region %zu: no %s", i, key);
        return 1;
    }
    if (!json_is_integer(x) || json_integer_value(x) < 0)
        return store_errf(e, -EINVAL, "region %zu: %s is not a non-negative integer", i, key);
    *v = (uint64_t)json_integer_value(x);
    return 0;
}

static int cmp_base(const void *a, const void *b)
{
    const restore_region *x = a, *y = b;
    return x->base < y->base ? -1 : x->base > y->base;
}

int restore_regions_parse(const char *text, size_t len, uint64_t mem_size, restore_region **out,
                          size_t *n, store_err *e)
{
    *out = NULL;
    *n = 0;
    json_error_t je;
    /* JSON_INTEGER numbers above INT64_MAX fail to parse: an address that large is
     * refused with the rest. */
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return store_errf(e, json_error_code(&je) == json_error_premature_end_of_input ? -ENODATA : -EINVAL,
                          "region list is not JSON: %s", je.text);
    int rc = 0;
    size_t cnt = json_is_array(j) ? json_array_size(j) : 0;
    if (!json_is_array(j)) rc = store_errf(e, -EINVAL, "region list is not a JSON array");
    else if (cnt == 0) rc = store_errf(e, -EINVAL, "region list is empty");
    else if (cnt > RESTORE_MAX_REGIONS)
        rc = store_errf(e, -EINVAL, "region list has %zu regions (at most %d)", cnt, RESTORE_MAX_REGIONS);
    restore_region *r = rc ? NULL : calloc(cnt, sizeof *r);
    if (!rc && !r) rc = store_errf(e, -ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < cnt; i++) {
        json_t *o = json_array_get(j, i);
        if (!json_is_object(o)) {
            rc = store_errf(e, -EINVAL, "region %zu is not an object", i);
            break;
        }
        restore_region *g = &r[i];
        if ((rc = get_u64(o, "base_host_virt_addr", 1, &g->base, i, e)) ||
            (rc = get_u64(o, "size", 1, &g->size, i, e)) ||
            (rc = get_u64(o, "offset", 1, &g->offset, i, e)))
            break;
        /* page_size (v1.12+) wins over page_size_kib (v1.7+, bytes despite its name). */
        int r1 = get_u64(o, "page_size", 0, &g->page_size, i, e);
        if (r1 < 0) { rc = r1; break; }
        if (r1 == 1) {
            int r2 = get_u64(o, "page_size_kib", 0, &g->page_size, i, e);
            if (r2 < 0) { rc = r2; break; }
            if (r2 == 1) g->page_size = STORE_PAGE;
        }
        uint64_t ps = g->page_size;
        if (ps < STORE_PAGE || ps > (2ull << 20) || (ps & (ps - 1))) {
            rc = store_errf(e, -EINVAL, "region %zu: page size %llu is not a power of two of 4 KiB..2 MiB",
                            i, (unsigned long long)ps);
            break;
        }
        if (g->size == 0 || g->base % ps || g->size % ps || g->offset % ps) {
            rc = store_errf(e, -EINVAL, "region %zu: empty, or base/size/offset not aligned to its "
                            "page size %llu", i, (unsigned long long)ps);
            break;
        }
        if (g->base + g->size < g->base || g->offset + g->size < g->offset) {
            rc = store_errf(e, -EINVAL, "region %zu: base+size or offset+size overflows", i);
            break;
        }
        /* The last huge page may reach past a file that is not a multiple of it. */
        uint64_t limit = mem_size % ps ? mem_size + (ps - mem_size % ps) : mem_size;
        if (limit < mem_size || g->offset + g->size > limit) {
            rc = store_errf(e, -EINVAL, "region %zu: file range %llu+%llu is outside the snapshot's "
                            "memory (%llu bytes)", i, (unsigned long long)g->offset,
                            (unsigned long long)g->size, (unsigned long long)mem_size);
            break;
        }
    }
    json_decref(j);
    if (!rc) {
        qsort(r, cnt, sizeof *r, cmp_base);
        for (size_t i = 1; i < cnt && !rc; i++)
            if (r[i - 1].base + r[i - 1].size > r[i].base)
                rc = store_errf(e, -EINVAL, "regions at %#llx and %#llx overlap",
                                (unsigned long long)r[i - 1].base, (unsigned long long)r[i].base);
    }
    if (rc) {
        free(r);
        return rc;
    }
    *out = r;
    *n = cnt;
    return 0;
}
