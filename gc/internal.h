/* Internals shared by gc's files. */
#ifndef CAIRN_GC_INTERNAL_H
#define CAIRN_GC_INTERNAL_H

#include "gc/gc.h"
#include "store/maint.h"
#include "store/toolbox.h"

typedef struct {
    store_snaprec r;                /* the store's record (r.json not kept) */
    int64_t eff_ms;                 /* its time for lifecycle rules: a files-only snapshot
                                       stands for the full one it came from */
} gc_snap;

/* What the lifecycle rules read: loaded from a store (gc_state_load) or built by hand (the
 * rules below are pure functions of it: tests/unit/test_lifecycle.c). */
typedef struct {
    gc_snap *snaps;                 /* the store's order (id = time) */
    size_t nsnaps, scap;
    store_event *events;            /* log order */
    size_t nevents, ecap;
} gc_state;

STORE_MUST_USE int gc_state_load(store_t *s, gc_state *st, store_err *e);
void gc_state_free(gc_state *st);
/* Appends to st (copies); -ENOMEM. eff_ms is derived from the record. */
STORE_MUST_USE int gc_state_add_snap(gc_state *st, const store_snaprec *r);
STORE_MUST_USE int gc_state_add_event(gc_state *st, const store_event *ev);

/* The per-sandbox view (state, tier, last activity, latest snapshot), sorted by name;
 * sandboxes of Cairn itself (reserved names) are left out; tenant NULL: all. */
STORE_MUST_USE int gc_view(const gc_state *st, const char *tenant, gc_sandbox **out, size_t *n, store_err *e);
/* 1 when the last pin/unpin event of snapshot id is a pin. */
STORE_MUST_USE int gc_pinned(const gc_state *st, const char *id);
/* The tenant's tier: the latest `cairn tier` event, else the tier of its latest snapshot
 * that recorded one, else FREE (a tenant never given a tier). */
store_tier gc_tenant_tier(const gc_state *st, const char *tenant);
/* 1 when a hibernated sandbox has been idle past its tier's window at now_ms. */
STORE_MUST_USE int gc_idle_past_window(const gc_sandbox *x, int64_t now_ms);

/* strmap.c: string -> index (gc's lookups by sandbox, tenant, snapshot id). Keys are not
 * copied: each must stay valid, unmoved, as long as the map. */
#define GC_NONE ((size_t)-1)
typedef struct {
    const char **keys;
    size_t *vals;
    size_t cap, n;
} gc_strmap;
size_t gc_strmap_get(const gc_strmap *m, const char *key);   /* GC_NONE if absent */
STORE_MUST_USE int gc_strmap_put(gc_strmap *m, const char *key, size_t val);  /* -ENOMEM */
void gc_strmap_free(gc_strmap *m);

/* reclaim.c: the files-only snapshot of src (not committed): its important entries and
 * the disk pages they use. */
STORE_MUST_USE int gc_files_only(store_t *s, const store_snapshot *src, store_snapshot **out, store_err *e);

/* Adds to live the chunk ids of every manifest in the store not yet in seen (seen may be
 * NULL: every manifest) and not named in skip; each manifest marked goes into seen and
 * counts in *added. A manifest dropped since the listing is skipped; an unreadable one
 * fails the mark (nothing may be swept while we cannot know what it needs). */
STORE_MUST_USE int gc_mark_live(store_t *s, store_idset *live, store_idset *seen, const char *const *skip,
                                size_t nskip, size_t *added, store_err *e);

/* sweep.c */
typedef struct {
    int dry_run;
    const uint64_t *packs;          /* the packs that existed when gc planned */
    size_t npacks;
    const uint32_t *refs;           /* per pack: index entries that pointed into it */
    store_idset *extra_live;        /* dry run: ids the planned files-only snapshots keep */
    const char *const *skip_manifests; /* dry run: manifests planned to be dropped */
    size_t nskip;
    gc_log_fn log;
    void *log_arg;
} gc_sweep_opts;
STORE_MUST_USE int gc_sweep(const char *dir, const gc_sweep_opts *o, gc_result *r, store_err *e);
/* fossil.c: the sweep of a store on S3 (two-step fossil collection), under the lease. */
STORE_MUST_USE int gc_sweep_remote(const char *dir, store_gc_lease *lease, const gc_sweep_opts *o, gc_result *r,
                                   store_err *e);

void gc_yield_lock(void);
void gc_logf(gc_log_fn fn, void *arg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
