/* restore_pages: one blob of a snapshot, page by page, for lazy wakes (restore/lazy.h).
 *
 * Why locations are learned from groups: looking a chunk's location up costs a RocksDB
 * get, and its key is a content hash, so each lookup lands in an index block of its own
 * (cold after a wake: a disk read). Looking the whole recipe up at open would cost time
 * in proportion to the VM's size, which a lazy wake must not pay. But a snapshot's pages
 * were packed in recipe order, so the group that holds page pg usually holds its
 * neighbours too: when a group is decompressed, each of its pages whose id matches the
 * recipe's id at the same distance from pg gets its location from the group, with no
 * index lookup. Only a page no decompressed group explained is looked up, alone (a batch
 * of ids reads a block per id: batches cost random faults more than they save).
 * Locations are kept per page in windows of WIN, allocated on first use.
 *
 * Why a set-associative group cache: a guest touches neighbouring pages, which share a
 * compressed group; keeping decompressed groups makes every page after the first a copy.
 *
 * Locks: windows and cache sets are guarded by striped mutexes (stripe = window or set
 * number modulo STRIPES), so threads serving different pages rarely meet; mu guards only
 * the index views and the pool of decompression contexts.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "restore/lazy.h"
#include "store/lease.h"

#define WIN 64u
#define WAYS 16u                /* 4 ways lost a third of a cache as large as the data to
                                   set conflicts (random faults over 1 GiB: 16k groups
                                   decompressed for 1.1k groups; 16 ways: ~6k) */
#define STRIPES 64u
#define CACHE_MIN (64ull << 20)         /* the default: the blob's data pages, within these */
#define CACHE_MAX (256ull << 20)
#define MAX_STORES 8            /* index reopens kept alive (readers may still use them) */

enum { LOC_UNKNOWN, LOC_FOUND, LOC_MISSING };

typedef struct {
    store_loc loc[WIN];
    uint8_t st[WIN];            /* LOC_* */
} window;

typedef struct {
    uint64_t pack, offset, used;
    uint16_t npages;
    uint8_t *pages;             /* NULL: empty way */
} way;

/* What one decompression needs, pooled so a fault allocates nothing. */
typedef struct {
    store_dctx *d;
    uint8_t *frame;             /* store_group_bound(STORE_GROUP_PAGES) bytes */
} worker;

struct restore_pages {
    char *dir;
    store_lease *lease;
    store_manifest *m;          /* its snapshot is snap; b->ids filled by the expander */
    const store_snapshot *snap;
    const store_blob *b;
    /* The recipe is expanded (and the cache sized from it) by a thread of its own, so an
     * open costs the manifest's read and checksum, not its decode: see recipe_wait. */
    pthread_t expander;
    int expanding;              /* the thread was started (joined by close) */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    _Atomic int ready;          /* 0: expanding; 1: ids, cache and nsets set; < 0: failed */
    store_err rerr;             /* why, when ready < 0 (written before ready) */
    uint64_t cache_bytes;       /* as asked: 0 is the default */
    pthread_mutex_t mu;         /* stores (appends), worker pool */
    pthread_mutex_t wmu[STRIPES], cmu[STRIPES];
    window **win;
    uint64_t nwin;
    way *cache;
    uint64_t nsets;
    _Atomic uint64_t clock;
    store_t *stores[MAX_STORES];/* stores[nstores - 1] is current */
    _Atomic int nstores;
    worker *wfree;
    size_t nwfree, wcap;
    _Atomic uint64_t pages_data, pages_zero, groups_read, bytes_read, cache_hits, reopens, lookups;
};

/* A cache that holds every group of the blob decompresses each once; one that holds a
 * quarter of them, faulted in random order, decompresses most groups again for a fault in
 * three of four (measured: 60k groups for 79k data faults over 1 GiB with 64 MiB). So the
 * default is the blob's data (its non-zero pages, plus a quarter for set conflicts),
 * bounded: a page server lives as long as its VM and the cache fills only as groups are
 * read. */
static uint64_t default_cache(const store_blob *b)
{
    uint64_t data = 0;
    for (uint64_t i = 0; i < b->npages; i++) data += !store_id_is_zero(&b->ids[i]);
    uint64_t bytes = data * STORE_PAGE / 4 * 5;
    return bytes < CACHE_MIN ? CACHE_MIN : bytes > CACHE_MAX ? CACHE_MAX : bytes;
}

/* Expands the blob's recipe and sizes the cache; then wakes whoever waits. */
static void *expand_main(void *arg)
{
    restore_pages *p = arg;
    store_err e;
    int rc = store_manifest_expand(p->m, p->b->name, &e);
    store_manifest_drop_bytes(p->m);    /* the file's bytes: not needed once expanded */
    if (!rc) {
        uint64_t groups = (p->cache_bytes ? p->cache_bytes : default_cache(p->b)) /
                          ((uint64_t)STORE_GROUP_PAGES * STORE_PAGE);
        p->nsets = groups / WAYS ? groups / WAYS : 1;
        p->cache = calloc(p->nsets * WAYS, sizeof *p->cache);
        if (!p->cache) rc = store_errf(&e, -ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&p->rmu);
    if (rc) p->rerr = e;
    atomic_store_explicit(&p->ready, rc ? rc : 1, memory_order_release);
    pthread_cond_broadcast(&p->rcv);
    pthread_mutex_unlock(&p->rmu);
    return NULL;
}

/* Waits until the recipe is expanded (at once after the first time). A recipe that does
 * not decode (a crafted manifest whose checksum holds) fails every page with its reason. */
static int recipe_wait(restore_pages *p, store_err *e)
{
    int r = atomic_load_explicit(&p->ready, memory_order_acquire);
    if (r == 0) {
        pthread_mutex_lock(&p->rmu);
        while ((r = atomic_load_explicit(&p->ready, memory_order_acquire)) == 0)
            pthread_cond_wait(&p->rcv, &p->rmu);
        pthread_mutex_unlock(&p->rmu);
    }
    if (r > 0) return 0;
    if (e) *e = p->rerr;
    return r;
}

int restore_pages_open(const char *dir, const char *id, const char *blob, uint64_t cache_bytes,
                       restore_pages **out, store_err *e)
{
    return restore_pages_open_from(dir, id, blob, cache_bytes, NULL, out, e);
}

/* 0 if manifests/ID.cmf is in the store's folder (remote stores keep a copy there). */
static int manifest_here(const char *dir, const char *id)
{
    char path[4200];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/manifests/%s.cmf", dir, id) >= (int)sizeof path) return -ENAMETOOLONG;
    return stat(path, &st) == 0 ? 0 : -errno;
}

int restore_pages_open_from(const char *dir, const char *id, const char *blob, uint64_t cache_bytes,
                            store_manifest *have, restore_pages **out, store_err *e)
{
    *out = NULL;
    if (store_snapid_valid(id) || (have && strcmp(store_manifest_snapshot(have)->id, id))) {
        store_manifest_free(have);
        return store_errf(e, -EINVAL, "'%s' is not a snapshot id", id);
    }
    restore_pages *p = calloc(1, sizeof *p);
    if (!p) {
        store_manifest_free(have);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    p->cache_bytes = cache_bytes;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->rmu, NULL);
    pthread_cond_init(&p->rcv, NULL);
    for (unsigned i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&p->wmu[i], NULL);
        pthread_mutex_init(&p->cmu[i], NULL);
    }
    p->dir = strdup(dir);
    int rc = p->dir ? 0 : store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = store_open(dir, STORE_PEEK, &p->stores[0], e);
    if (!rc) p->nstores = 1;
    if (!rc) rc = store_lease_take(p->stores[0], id, &p->lease, e);
    /* The manifest is read and checked here (a damaged one is refused at open); only this
     * blob's recipe is expanded, later: the others (the memory's, when a view opens the
     * disk) would cost time in proportion to the VM's size for nothing. */
    /* A manifest read before the lease is used only if it is still there now that the
     * lease is held (gc drops nothing leased; manifests never change). */
    if (!rc && have && manifest_here(dir, id) == 0) {
        p->m = have;
        have = NULL;
    }
    if (!rc && !p->m) rc = store_manifest_open(p->stores[0], id, &p->m, e);
    store_manifest_free(have);
    if (!rc) {
        p->snap = store_manifest_snapshot(p->m);
        p->b = store_blob_find(p->snap, blob);
        if (!p->b) rc = store_errf(e, -ENOENT, "snapshot %s has no %s", id, blob);
        else if (p->snap->kind == STORE_KIND_FILES && strcmp(blob, "disk"))
            rc = store_errf(e, -ENOENT, "snapshot %s is files-only (reclaimed): no %s", id, blob);
    }
    if (!rc) {
        p->nwin = (p->b->npages + WIN - 1) / WIN;
        p->win = calloc(p->nwin ? p->nwin : 1, sizeof *p->win);
        if (!p->win) rc = store_errf(e, -ENOMEM, "out of memory");
    }
    if (!rc) {
        p->expanding = pthread_create(&p->expander, NULL, expand_main, p) == 0;
        if (!p->expanding) expand_main(p);      /* no thread: expanded before returning */
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
    if (p->expanding) pthread_join(p->expander, NULL);
    for (uint64_t i = 0; p->win && i < p->nwin; i++) free(p->win[i]);
    free(p->win);
    for (uint64_t i = 0; p->cache && i < p->nsets * WAYS; i++) free(p->cache[i].pages);
    free(p->cache);
    for (size_t i = 0; i < p->nwfree; i++) {
        store_dctx_free(p->wfree[i].d);
        free(p->wfree[i].frame);
    }
    free(p->wfree);
    store_manifest_free(p->m);
    store_lease_free(p->lease);         /* before stores[0], which it uses */
    for (int i = 0; i < p->nstores; i++) store_close(p->stores[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->rmu);
    pthread_cond_destroy(&p->rcv);
    for (unsigned i = 0; i < STRIPES; i++) {
        pthread_mutex_destroy(&p->wmu[i]);
        pthread_mutex_destroy(&p->cmu[i]);
    }
    free(p->dir);
    free(p);
}

uint64_t restore_pages_size(const restore_pages *p) { return p->b->size; }
uint64_t restore_pages_count(const restore_pages *p) { return p->b->npages; }
const store_snapshot *restore_pages_snapshot(const restore_pages *p) { return p->snap; }

int restore_pages_is_zero(restore_pages *p, uint64_t pg)
{
    if (recipe_wait(p, NULL)) return 0;     /* not known: restore_pages_get says why */
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
    st->lookups = p->lookups;
}

/* The current index view: views are only appended (reopen), each published by the
 * release of nstores after its slot was written. */
static store_t *current_store(restore_pages *p)
{
    return p->stores[atomic_load_explicit(&p->nstores, memory_order_acquire) - 1];
}

/* Records page pg's location (or its absence) unless it is known already. */
static int set_loc(restore_pages *p, uint64_t pg, const store_loc *l, int st, store_err *e)
{
    uint64_t w = pg / WIN;
    pthread_mutex_t *m = &p->wmu[w % STRIPES];
    window *nw = NULL;
    pthread_mutex_lock(m);
    if (!p->win[w]) {
        pthread_mutex_unlock(m);
        if (!(nw = calloc(1, sizeof *nw))) return store_errf(e, -ENOMEM, "out of memory");
        pthread_mutex_lock(m);
        if (!p->win[w]) {
            p->win[w] = nw;
            nw = NULL;
        }
    }
    window *wp = p->win[w];
    if (wp->st[pg % WIN] == LOC_UNKNOWN) {
        if (l) wp->loc[pg % WIN] = *l;
        wp->st[pg % WIN] = (uint8_t)st;
    }
    pthread_mutex_unlock(m);
    free(nw);                    /* another thread made the window first */
    return 0;
}

/* The location of page pg: known (from a lookup or a decompressed group), else looked up. */
static int locate(restore_pages *p, uint64_t pg, store_loc *loc, int *found, store_err *e)
{
    uint64_t w = pg / WIN;
    pthread_mutex_t *m = &p->wmu[w % STRIPES];
    pthread_mutex_lock(m);
    window *wp = p->win[w];
    int st = wp ? wp->st[pg % WIN] : LOC_UNKNOWN;
    if (st != LOC_UNKNOWN) *loc = wp->loc[pg % WIN];
    pthread_mutex_unlock(m);
    if (st != LOC_UNKNOWN) {
        *found = st == LOC_FOUND;
        return 0;
    }
    uint8_t f = 0;
    int rc = store_lookup(current_store(p), &p->b->ids[pg], 1, &f, loc, e);
    if (rc) return rc;
    p->lookups++;
    *found = f != 0;
    return set_loc(p, pg, f ? loc : NULL, f ? LOC_FOUND : LOC_MISSING, e);
}

static uint64_t set_of(const restore_pages *p, const store_loc *l)
{
    uint64_t h = (l->pack * 0x9E3779B97F4A7C15ull) ^ (l->offset * 0xC2B2AE3D27D4EB4Full);
    return (h >> 17) % p->nsets;
}

/* Copies the page at l out of the cache; 1 if it was there. */
static int cache_copy(restore_pages *p, const store_loc *l, void *out)
{
    uint64_t si = set_of(p, l);
    way *set = &p->cache[si * WAYS];
    pthread_mutex_t *m = &p->cmu[si % STRIPES];
    int hit = 0;
    pthread_mutex_lock(m);
    for (unsigned i = 0; i < WAYS; i++)
        if (set[i].pages && set[i].pack == l->pack && set[i].offset == l->offset &&
            set[i].npages == l->npages && l->slot < l->npages) {
            set[i].used = atomic_fetch_add_explicit(&p->clock, 1, memory_order_relaxed);
            memcpy(out, set[i].pages + (size_t)l->slot * STORE_PAGE, STORE_PAGE);
            hit = 1;
            break;
        }
    pthread_mutex_unlock(m);
    return hit;
}

static void cache_put(restore_pages *p, const store_loc *l, uint8_t *pages)
{
    uint64_t si = set_of(p, l);
    way *set = &p->cache[si * WAYS], *victim = &set[0];
    pthread_mutex_t *m = &p->cmu[si % STRIPES];
    pthread_mutex_lock(m);
    for (unsigned i = 0; i < WAYS; i++) {
        if (set[i].pages && set[i].pack == l->pack && set[i].offset == l->offset) {
            pthread_mutex_unlock(m);           /* another thread decompressed it too */
            free(pages);
            return;
        }
        if (!set[i].pages || set[i].used < victim->used) victim = &set[i];
        if (!set[i].pages) break;
    }
    uint8_t *old = victim->pages;
    *victim = (way){.pack = l->pack, .offset = l->offset, .npages = l->npages, .pages = pages,
                    .used = atomic_fetch_add_explicit(&p->clock, 1, memory_order_relaxed)};
    pthread_mutex_unlock(m);
    free(old);
}

static int worker_get(restore_pages *p, worker *w, store_err *e)
{
    pthread_mutex_lock(&p->mu);
    int have = p->nwfree > 0;
    if (have) *w = p->wfree[--p->nwfree];
    pthread_mutex_unlock(&p->mu);
    if (have) return 0;
    w->d = store_dctx_new();
    w->frame = malloc(store_group_bound(STORE_GROUP_PAGES));
    if (w->d && w->frame) return 0;
    store_dctx_free(w->d);
    free(w->frame);
    return store_errf(e, -ENOMEM, "out of memory");
}

static void worker_put(restore_pages *p, worker *w)
{
    pthread_mutex_lock(&p->mu);
    if (p->nwfree == p->wcap) {
        size_t nc = p->wcap ? p->wcap * 2 : 8;
        worker *n = realloc(p->wfree, nc * sizeof *n);
        if (n) {
            p->wfree = n;
            p->wcap = nc;
        }
    }
    int kept = p->nwfree < p->wcap;
    if (kept) p->wfree[p->nwfree++] = *w;
    pthread_mutex_unlock(&p->mu);
    if (!kept) {                         /* no room to keep it: only a lost reuse */
        store_dctx_free(w->d);
        free(w->frame);
    }
}

/* The recipe pages near pg whose ids are ids of pages in a just decompressed group get
 * their locations from it (see the top). Near: within LEARN_SPAN pages either side,
 * because zero pages are not stored (a group's neighbours are further apart in the recipe
 * than in the group) and pages deduplicated elsewhere leave gaps. */
#define LEARN_SPAN (4u * STORE_GROUP_PAGES)
#define LEARN_TAB 256u                          /* > 2x a group: short probe chains */

static void learn(restore_pages *p, store_t *s, uint64_t pg, const store_loc *l, const uint8_t *pages)
{
    store_id ids[STORE_GROUP_PAGES];
    int16_t tab[LEARN_TAB];
    memset(tab, -1, sizeof tab);
    for (unsigned k = 0; k < l->npages; k++) {
        store_chunk_id(s, pages + (size_t)k * STORE_PAGE, &ids[k]);
        uint64_t h;
        memcpy(&h, ids[k].b, sizeof h);
        unsigned i = (unsigned)(h % LEARN_TAB);
        while (tab[i] >= 0) i = (i + 1) % LEARN_TAB;
        tab[i] = (int16_t)k;
    }
    uint64_t lo = pg > LEARN_SPAN ? pg - LEARN_SPAN : 0;
    uint64_t hi = p->b->npages - pg > LEARN_SPAN ? pg + LEARN_SPAN : p->b->npages;
    for (uint64_t q = lo; q < hi; q++) {
        const store_id *want = &p->b->ids[q];
        if (q == pg || store_id_is_zero(want)) continue;
        uint64_t h;
        memcpy(&h, want->b, sizeof h);
        int k = -1;
        for (unsigned i = (unsigned)(h % LEARN_TAB); tab[i] >= 0; i = (i + 1) % LEARN_TAB)
            if (!memcmp(&ids[tab[i]], want, sizeof *want)) {
                k = tab[i];
                break;
            }
        if (k < 0) continue;
        store_loc nl = *l;
        nl.slot = (uint16_t)k;
        store_err e;
        if (set_loc(p, q, &nl, LOC_FOUND, &e)) return;   /* only a hint: looked up later */
    }
}

/* Reads and decompresses the group at l (holding page pg), keeps it in the cache, copies
 * page slot out. */
static int load_group(restore_pages *p, store_t *s, uint64_t pg, const store_loc *l, void *out, store_err *e)
{
    if (l->npages == 0 || l->npages > STORE_GROUP_PAGES || l->slot >= l->npages)
        return store_errf(e, -EBADMSG, "index entry names slot %u of a %u-page group", l->slot, l->npages);
    worker w;
    int rc = worker_get(p, &w, e);
    if (rc) return rc;
    uint8_t *pages = malloc((size_t)l->npages * STORE_PAGE);
    if (!pages) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc) rc = store_read_frame(s, l, w.frame, store_group_bound(STORE_GROUP_PAGES), e);
    if (!rc) rc = store_group_decompress(w.d, w.frame, l->clen, pages, l->npages, e);
    worker_put(p, &w);
    if (rc) {
        free(pages);
        return rc;
    }
    p->groups_read++;
    p->bytes_read += l->clen;
    memcpy(out, pages + (size_t)l->slot * STORE_PAGE, STORE_PAGE);
    learn(p, s, pg, l, pages);
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
    store_t *s = current_store(p);
    if (cache_copy(p, &loc, out)) p->cache_hits++;
    else if ((rc = load_group(p, s, pg, &loc, out, e))) return rc;
    store_id id;
    store_chunk_id(s, out, &id);
    /* Verified on every page served, cached or not: the cache holds bytes, not trust. */
    if (memcmp(&id, &p->b->ids[pg], sizeof id))
        return store_errf(e, -EBADMSG, "snapshot %s: %s: page at offset %llu is corrupt in pack %016llx",
                          p->snap->id, p->b->name, (unsigned long long)pg * STORE_PAGE,
                          (unsigned long long)loc.pack);
    return 0;
}

/* gc may have moved chunks since the index was opened (a rewrite deletes the old pack):
 * open a fresh view, forget every known location, try again. Old views stay open:
 * another thread may be reading through one. */
static int reopen(restore_pages *p, store_err *e)
{
    store_t *s = NULL;
    if (p->nstores == MAX_STORES) return store_errf(e, -EAGAIN, "index reopened %d times already", MAX_STORES - 1);
    int rc = store_open(p->dir, STORE_PEEK, &s, e);
    if (rc) return rc;
    pthread_mutex_lock(&p->mu);
    int n = p->nstores;
    if (n < MAX_STORES) {
        p->stores[n] = s;
        s = NULL;
        atomic_store_explicit(&p->nstores, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&p->mu);
    store_close(s);
    for (unsigned k = 0; k < STRIPES; k++) {
        pthread_mutex_lock(&p->wmu[k]);
        for (uint64_t i = k; i < p->nwin; i += STRIPES) {
            free(p->win[i]);
            p->win[i] = NULL;
        }
        pthread_mutex_unlock(&p->wmu[k]);
    }
    p->reopens++;
    return 0;
}

int restore_pages_get(restore_pages *p, uint64_t pg, void *out, store_err *e)
{
    int rc = recipe_wait(p, e);
    if (rc) return rc;
    if (pg >= p->b->npages)
        return store_errf(e, -ERANGE, "snapshot %s: %s: page %llu is past its end", p->snap->id,
                          p->b->name, (unsigned long long)pg);
    if (store_id_is_zero(&p->b->ids[pg])) {
        memset(out, 0, STORE_PAGE);
        p->pages_zero++;
        return 0;
    }
    rc = get_once(p, pg, out, e);
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

int restore_pages_get_cached(restore_pages *p, uint64_t pg, void *out, store_err *e)
{
    int rc = recipe_wait(p, e);
    if (rc) return rc;
    if (pg >= p->b->npages || store_id_is_zero(&p->b->ids[pg])) return 1;
    uint64_t w = pg / WIN;
    pthread_mutex_t *m = &p->wmu[w % STRIPES];
    store_loc loc;
    pthread_mutex_lock(m);
    window *wp = p->win[w];
    int st = wp ? wp->st[pg % WIN] : LOC_UNKNOWN;
    if (st == LOC_FOUND) loc = wp->loc[pg % WIN];
    pthread_mutex_unlock(m);
    if (st != LOC_FOUND || !cache_copy(p, &loc, out)) return 1;
    p->cache_hits++;
    store_id id;
    store_chunk_id(current_store(p), out, &id);
    if (memcmp(&id, &p->b->ids[pg], sizeof id))
        return store_errf(e, -EBADMSG, "snapshot %s: %s: cached page at offset %llu does not match its id",
                          p->snap->id, p->b->name, (unsigned long long)pg * STORE_PAGE);
    p->pages_data++;
    return 0;
}
