/* Byte verification of dedup hits: the defence against chunk id collisions for stores that
 * ask for it (store.h, docs/design.md "Chunk ids"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

void store_set_verify_dedup(store_t *s, int on)
{
#ifdef CAIRN_TEST_SHORT_HASH
    on = 1;                       /* a short-hash build cannot go without it */
#endif
    s->verify_dedup = on != 0;
}

int store_verify_dedup(const store_t *s) { return s->verify_dedup; }

int store_chunk_verify(store_t *s, const store_id *id, const store_loc *at, const void *page,
                       store_err *e)
{
    uint8_t found = 1;
    store_loc l;
    int rc = 0;
    if (at) l = *at;
    else rc = store_lookup(s, id, 1, &found, &l, e);
    if (rc) return rc;
    char hex[STORE_ID_HEX];
    store_id_hex(id, hex);
    if (!found) return store_errf(e, -ENOENT, "chunk %s: not in the index", hex);
    pthread_mutex_lock(&s->verify_mu);
    if (!s->verify_frame) s->verify_frame = malloc(store_group_bound(STORE_GROUP_PAGES));
    if (!s->verify_dctx) s->verify_dctx = store_dctx_new();
    uint8_t stored[STORE_PAGE];
    rc = s->verify_frame && s->verify_dctx ? 0 : store_errf(e, -ENOMEM, "out of memory");
    /* Through the group cache: an ingest's hits come in runs from the same groups. */
    if (!rc) rc = cached_page(s, &l, s->verify_dctx, s->verify_frame, stored, e);
    pthread_mutex_unlock(&s->verify_mu);
    if (!rc && memcmp(stored, page, STORE_PAGE)) {
        /* Same id, other bytes: a collision, unless the stored page is damaged. */
        store_id got;
        store_chunk_id(s, stored, &got);
        rc = memcmp(&got, id, sizeof got)
                 ? store_errf(e, -EBADMSG, "chunk %s is corrupt in pack %016llx", hex,
                              (unsigned long long)l.pack)
                 : (store_errf(e, -EEXIST, "chunk id %s collides: the store holds other bytes "
                               "under it (pack %016llx)", hex, (unsigned long long)l.pack), 1);
    }
    return rc;
}
