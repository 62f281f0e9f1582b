/* An open-addressing set of chunk ids (the all-zero id is the empty slot; it is never a
 * stored chunk's id). Ids are keyed hashes already, so their first 8 bytes index it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

struct store_idset {
    store_id *slot;
    size_t cap, n;
};

store_idset *store_idset_new(void) { return calloc(1, sizeof(store_idset)); }

void store_idset_free(store_idset *s)
{
    if (!s) return;
    free(s->slot);
    free(s);
}

size_t store_idset_count(const store_idset *s) { return s->n; }

static size_t slot_of(const store_id *id, size_t mask)
{
    uint64_t h;
    memcpy(&h, id->b, 8);
    return (size_t)h & mask;
}

int store_idset_has(const store_idset *s, const store_id *id)
{
    if (!s->cap) return 0;
    for (size_t i = slot_of(id, s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (store_id_is_zero(&s->slot[i])) return 0;
        if (!memcmp(&s->slot[i], id, 16)) return 1;
    }
}

static int grow(store_idset *s, size_t nc)
{
    store_id *ns = calloc(nc, sizeof *ns);
    if (!ns) return -ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        if (store_id_is_zero(&s->slot[i])) continue;
        size_t j = slot_of(&s->slot[i], nc - 1);
        while (!store_id_is_zero(&ns[j])) j = (j + 1) & (nc - 1);
        ns[j] = s->slot[i];
    }
    free(s->slot);
    s->slot = ns;
    s->cap = nc;
    return 0;
}

int store_idset_reserve(store_idset *s, size_t n)
{
    size_t nc = s->cap ? s->cap : 1024;
    while (nc < 2 * (s->n + n)) nc *= 2;
    return nc == s->cap ? 0 : grow(s, nc);
}

int store_idset_add(store_idset *s, const store_id *id)
{
    if (store_id_is_zero(id)) return 0;
    if ((s->n + 1) * 2 > s->cap && !store_idset_has(s, id) && grow(s, s->cap ? s->cap * 2 : 1024))
        return -ENOMEM;
    size_t i = slot_of(id, s->cap - 1);
    for (; !store_id_is_zero(&s->slot[i]); i = (i + 1) & (s->cap - 1))
        if (!memcmp(&s->slot[i], id, 16)) return 0;   /* there already */
    s->slot[i] = *id;
    s->n++;
    return 0;
}

void store_idset_clear(store_idset *s)
{
    free(s->slot);
    s->slot = NULL;
    s->cap = s->n = 0;
}
