/* restore_pages: one blob of a snapshot, page by page, for lazy wakes (restore/lazy.h).
 *
 * Why windows: looking chunk locations up one page at a time costs a RocksDB get per
 * fault; looking the whole recipe up at open costs time proportional to the VM's size,
 * which is what a lazy wake must not pay. So locations are looked up in batches of
 * WIN pages the first time any page of the batch is asked for. WIN is small (8, not a
 * group's 64) because the keys are content hashes: each one of a batch lands in its own
 * index block, so a batch of 64 reads ~64 blocks to serve one random fault, and with a
 * bigger VM's bigger index fewer of those blocks are cached. 8 measured as fast as 64
 * for in-order faults and about halved the lookup time of random ones on a 1 GiB guest
 * (docs/lazy-wake.md).
 *
 * Why a set-associative group cache: a guest touches neighbouring pages, which share a
 * compressed group; keeping decompressed groups makes every page after the first a copy.
 * Ways per set are few so a lookup is a handful of compares under one mutex.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "restore/lazy.h"
#include "store/lease.h"

#define WIN 8u
#define WAYS 4u
#define DEFAULT_CACHE (64ull << 20)
#define MAX_STORES 8            /* index reopens kept alive (readers may still use them) */

typedef struct {
    store_loc loc[WIN];
    uint8_t found[WIN];
} window;

typedef struct {
    uint64_t pack, offset, used;
    uint16_t npages;
    uint8_t *pages;             /* NULL: empty way */
} way;

struct restore_pages {
    char *dir;
    int lease_fd;
    store_snapshot *snap;
    const store_blob *b;
    pthread_mutex_t mu;         /* windows, cache, stores, dctx pool */
    window **win;
    uint64_t nwin;
    way *cache;
    uint64_t nsets, clock;
    store_t *stores[MAX_STORES];/* stores[nstores - 1] is current */
    int nstores;
    store_dctx **dfree;
    size_t ndfree, dcap;
    _Atomic uint64_t pages_data, pages_zero, groups_read, bytes_read, cache_hits, reopens;
};

int restore_pages_open(const char *dir, const char *id, const char *blob, uint64_t cache_bytes,
                       restore_pages **out, store_err *e)
{
    *out = NULL;
    if (store_snapid_valid(id)) return store_errf(e, -EINVAL, "'%s' is not a snapshot id", id);
    restore_pages *p = calloc(1, sizeof *p);
    if (!p) return store_errf(e, -ENOMEM, "out of memory");
    p->lease_fd = -1;
    pthread_mutex_init(&p->mu, NULL);
    p->dir = strdup(dir);
    int rc = p->dir ? 0 : store_errf(e, -ENOMEM, "out of memory");
    if (!rc) {
        int fd = store_lease_take(dir, id, e);
        if (fd < 0) rc = fd;
        else p->lease_fd = fd;
    }
    if (!rc) rc = store_open(dir, STORE_PEEK, &p->stores[0], e);
    if (!rc) p->nstores = 1;
    if (!rc) rc = store_snapshot_load(p->stores[0], id, &p->snap, e);
    if (!rc) {
        p->b = store_blob_find(p->snap, blob);
        if (!p->b) rc = store_errf(e, -ENOENT, "snapshot %s has no %s", id, blob);
        else if (p->snap->kind == STORE_KIND_FILES && strcmp(blob, "disk"))
            rc = store_errf(e, -ENOENT, "snapshot %s is files-only (reclaimed): no %s", id, blob);
    }
    if (!rc) {
        p->nwin = (p->b->npages + WIN - 1) / WIN;
        p->win = calloc(p->nwin ? p->nwin : 1, sizeof *p->win);
        uint64_t groups = (cache_bytes ? cache_bytes : DEFAULT_CACHE) / ((uint64_t)STORE_GROUP_PAGES * STORE_PAGE);
        p->nsets = groups / WAYS ? groups / WAYS : 1;
        p->cache = calloc(p->nsets * WAYS, sizeof *p->cache);
        if (!p->win || !p->cache) rc = store_errf(e, -ENOMEM, "out of memory");
    }
    if (rc) {
        restore_pages_close(p);
        return rc;
    }
    *out = p;
    return 0;
}

void restore_pages_close(restore_pages *p)
{
    if (!p) return;
    for (uint64_t i = 0; p->win && i < p->nwin; i++) free(p->win[i]);
    free(p->win);
    for (uint64_t i = 0; p->cache && i < p->nsets * WAYS; i++) free(p->cache[i].pages);
    free(p->cache);
    for (size_t i = 0; i < p->ndfree; i++) store_dctx_free(p->dfree[i]);
    free(p->dfree);
    store_snapshot_free(p->snap);
    for (int i = 0; i < p->nstores; i++) store_close(p->stores[i]);
    if (p->lease_fd >= 0) close(p->lease_fd);
    pthread_mutex_destroy(&p->mu);
    free(p->dir);
    free(p);
}

uint64_t restore_pages_size(const restore_pages *p) { return p->b->size; }
uint64_t restore_pages_count(const restore_pages *p) { return p->b->npages; }
const store_snapshot *restore_pages_snapshot(const restore_pages *p) { return p->snap; }

int restore_pages_is_zero(const restore_pages *p, uint64_t pg)
{
    return store_id_is_zero(&p->b->ids[pg]);
}

void restore_pages_get_stats(restore_pages *p, restore_pages_stats *st)
{
    st->pages_data = p->pages_data;
    st->pages_zero = p->pages_zero;
    st->groups_read = p->groups_read;
    st->bytes_read = p->bytes_read;
    st->cache_hits = p->cache_hits;
    st->reopens = p->reopens;
}

static store_t *current_store(restore_pages *p)
{
    pthread_mutex_lock(&p->mu);
    store_t *s = p->stores[p->nstores - 1];
    pthread_mutex_unlock(&p->mu);
    return s;
}

/* The location of page pg: from its window, looking the window up if it is new. */
static int locate(restore_pages *p, uint64_t pg, store_loc *loc, int *found, store_err *e)
{
    uint64_t w = pg / WIN;
    pthread_mutex_lock(&p->mu);
    window *wp = p->win[w];
    if (wp) {
        *loc = wp->loc[pg % WIN];
        *found = wp->found[pg % WIN];
    }
    store_t *s = p->stores[p->nstores - 1];
    pthread_mutex_unlock(&p->mu);
    if (wp) return 0;
    window *nw = malloc(sizeof *nw);
    if (!nw) return store_errf(e, -ENOMEM, "out of memory");
    uint64_t first = w * WIN, n = p->b->npages - first < WIN ? p->b->npages - first : WIN;
    memset(nw->found, 0, sizeof nw->found);
    int rc = store_lookup(s, p->b->ids + first, n, nw->found, nw->loc, e);
    if (rc) {
        free(nw);
        return rc;
    }
    *loc = nw->loc[pg % WIN];
    *found = nw->found[pg % WIN];
    pthread_mutex_lock(&p->mu);
    if (!p->win[w]) p->win[w] = nw;
    else free(nw);               /* another thread looked it up at the same time */
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static uint64_t set_of(const restore_pages *p, const store_loc *l)
{
    uint64_t h = (l->pack * 0x9E3779B97F4A7C15ull) ^ (l->offset * 0xC2B2AE3D27D4EB4Full);
    return (h >> 17) % p->nsets;
}

/* Copies the page at l out of the cache; 1 if it was there. */
static int cache_copy(restore_pages *p, const store_loc *l, void *out)
{
    way *set = &p->cache[set_of(p, l) * WAYS];
    int hit = 0;
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < WAYS; i++)
        if (set[i].pages && set[i].pack == l->pack && set[i].offset == l->offset &&
            set[i].npages == l->npages && l->slot < l->npages) {
            set[i].used = ++p->clock;
            memcpy(out, set[i].pages + (size_t)l->slot * STORE_PAGE, STORE_PAGE);
            hit = 1;
            break;
        }
    pthread_mutex_unlock(&p->mu);
    return hit;
}

static void cache_put(restore_pages *p, const store_loc *l, uint8_t *pages)
{
    way *set = &p->cache[set_of(p, l) * WAYS], *victim = &set[0];
    pthread_mutex_lock(&p->mu);
    for (unsigned i = 0; i < WAYS; i++) {
        if (set[i].pages && set[i].pack == l->pack && set[i].offset == l->offset) {
            pthread_mutex_unlock(&p->mu);      /* another thread decompressed it too */
            free(pages);
            return;
        }
        if (!set[i].pages || set[i].used < victim->used) victim = &set[i];
        if (!set[i].pages) break;
    }
    free(victim->pages);
    *victim = (way){.pack = l->pack, .offset = l->offset, .npages = l->npages, .pages = pages,
                    .used = ++p->clock};
    pthread_mutex_unlock(&p->mu);
}

static store_dctx *dctx_get(restore_pages *p)
{
    pthread_mutex_lock(&p->mu);
    store_dctx *d = p->ndfree ? p->dfree[--p->ndfree] : NULL;
    pthread_mutex_unlock(&p->mu);
    return d ? d : store_dctx_new();
}

static void dctx_put(restore_pages *p, store_dctx *d)
{
    if (!d) return;
    pthread_mutex_lock(&p->mu);
    if (p->ndfree == p->dcap) {
        size_t nc = p->dcap ? p->dcap * 2 : 8;
        store_dctx **n = realloc(p->dfree, nc * sizeof *n);
        if (n) {
            p->dfree = n;
            p->dcap = nc;
        }
    }
    if (p->ndfree < p->dcap) {
        p->dfree[p->ndfree++] = d;
        d = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    store_dctx_free(d);                  /* no room to keep it: only a lost reuse */
}

/* Reads and decompresses the group at l, keeps it in the cache, copies page slot out. */
static int load_group(restore_pages *p, store_t *s, const store_loc *l, void *out, store_err *e)
{
    if (l->npages == 0 || l->npages > STORE_GROUP_PAGES || l->slot >= l->npages)
        return store_errf(e, -EBADMSG, "index entry names slot %u of a %u-page group", l->slot, l->npages);
    size_t cap = store_group_bound(STORE_GROUP_PAGES);
    uint8_t *frame = malloc(cap), *pages = malloc((size_t)l->npages * STORE_PAGE);
    store_dctx *d = dctx_get(p);
    int rc = frame && pages && d ? 0 : store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = store_read_frame(s, l, frame, cap, e);
    if (!rc) rc = store_group_decompress(d, frame, l->clen, pages, l->npages, e);
    free(frame);
    dctx_put(p, d);
    if (rc) {
        free(pages);
        return rc;
    }
    p->groups_read++;
    p->bytes_read += l->clen;
    memcpy(out, pages + (size_t)l->slot * STORE_PAGE, STORE_PAGE);
    cache_put(p, l, pages);
    return 0;
}

/* One attempt at page pg from the current index view. */
static int get_once(restore_pages *p, uint64_t pg, void *out, store_err *e)
{
    store_loc loc;
    int found = 0;
    int rc = locate(p, pg, &loc, &found, e);
    if (rc) return rc;
    if (!found)
        return store_errf(e, -ENOENT, "snapshot %s: %s: page at offset %llu is not in the store",
                          p->snap->id, p->b->name, (unsigned long long)pg * STORE_PAGE);
    if (cache_copy(p, &loc, out)) p->cache_hits++;
    else if ((rc = load_group(p, current_store(p), &loc, out, e))) return rc;
    store_id id;
    store_chunk_id(current_store(p), out, &id);
    /* Verified on every page served, cached or not: the cache holds bytes, not trust. */
    if (memcmp(&id, &p->b->ids[pg], sizeof id))
        return store_errf(e, -EBADMSG, "snapshot %s: %s: page at offset %llu is corrupt in pack %016llx",
                          p->snap->id, p->b->name, (unsigned long long)pg * STORE_PAGE,
                          (unsigned long long)loc.pack);
    return 0;
}

/* gc may have moved chunks since the index was opened (a rewrite deletes the old pack):
 * open a fresh view, forget the windows, try again. Old views stay open: another thread
 * may be reading through one. */
static int reopen(restore_pages *p, store_err *e)
{
    store_t *s = NULL;
    pthread_mutex_lock(&p->mu);
    int full = p->nstores == MAX_STORES;
    pthread_mutex_unlock(&p->mu);
    if (full) return store_errf(e, -EAGAIN, "index reopened %d times already", MAX_STORES - 1);
    int rc = store_open(p->dir, STORE_PEEK, &s, e);
    if (rc) return rc;
    pthread_mutex_lock(&p->mu);
    if (p->nstores < MAX_STORES) {
        p->stores[p->nstores++] = s;
        s = NULL;
        for (uint64_t i = 0; i < p->nwin; i++) {
            free(p->win[i]);
            p->win[i] = NULL;
        }
    }
    pthread_mutex_unlock(&p->mu);
    store_close(s);
    p->reopens++;
    return 0;
}

int restore_pages_get(restore_pages *p, uint64_t pg, void *out, store_err *e)
{
    if (pg >= p->b->npages)
        return store_errf(e, -ERANGE, "snapshot %s: %s: page %llu is past its end", p->snap->id,
                          p->b->name, (unsigned long long)pg);
    if (store_id_is_zero(&p->b->ids[pg])) {
        memset(out, 0, STORE_PAGE);
        p->pages_zero++;
        return 0;
    }
    int rc = get_once(p, pg, out, e);
    if (rc == -ENOENT || rc == -EBADMSG) {
        store_err e2;
        if (reopen(p, &e2) == 0) rc = get_once(p, pg, out, e);
    }
    if (!rc) p->pages_data++;
    return rc;
}

int restore_pages_read(restore_pages *p, uint64_t off, void *buf, size_t len, size_t *got,
                       store_err *e)
{
    *got = 0;
    if (off >= p->b->size) return 0;
    if (len > p->b->size - off) len = (size_t)(p->b->size - off);
    uint8_t page[STORE_PAGE];
    uint8_t *dst = buf;
    while (*got < len) {
        uint64_t pos = off + *got, pg = pos / STORE_PAGE, in = pos % STORE_PAGE;
        size_t n = STORE_PAGE - in < len - *got ? STORE_PAGE - in : len - *got;
        if (in == 0 && n == STORE_PAGE) {
            int rc = restore_pages_get(p, pg, dst + *got, e);
            if (rc) return rc;
        } else {
            int rc = restore_pages_get(p, pg, page, e);
            if (rc) return rc;
            memcpy(dst + *got, page + in, n);
        }
        *got += n;
    }
    return 0;
}
