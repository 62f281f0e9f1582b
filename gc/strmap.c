/* A string -> index map (open addressing, linear probing, XXH3 of the key): gc's lookups
 * by sandbox, tenant and snapshot id, so a fleet of 100k sandboxes costs O(n), not
 * O(n^2) string compares. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "gc/internal.h"

static size_t slot_of(const gc_strmap *m, const char *key)
{
    size_t mask = m->cap - 1, i = (size_t)XXH3_64bits(key, strlen(key)) & mask;
    while (m->keys[i] && strcmp(m->keys[i], key)) i = (i + 1) & mask;
    return i;
}

static int grow(gc_strmap *m)
{
    gc_strmap n = {.cap = m->cap ? m->cap * 2 : 64};
    n.keys = calloc(n.cap, sizeof *n.keys);
    n.vals = calloc(n.cap, sizeof *n.vals);
    if (!n.keys || !n.vals) {
        free(n.keys);
        free(n.vals);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) {
            size_t j = slot_of(&n, m->keys[i]);
            n.keys[j] = m->keys[i];
            n.vals[j] = m->vals[i];
        }
    n.n = m->n;
    free(m->keys);
    free(m->vals);
    *m = n;
    return 0;
}

size_t gc_strmap_get(const gc_strmap *m, const char *key)
{
    if (!m->cap) return GC_NONE;
    size_t i = slot_of(m, key);
    return m->keys[i] ? m->vals[i] : GC_NONE;
}

int gc_strmap_put(gc_strmap *m, const char *key, size_t val)
{
    if (2 * (m->n + 1) > m->cap && grow(m)) return -ENOMEM;
    size_t i = slot_of(m, key);
    if (!m->keys[i]) {
        m->keys[i] = key;
        m->n++;
    }
    m->vals[i] = val;
    return 0;
}

void gc_strmap_free(gc_strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}
