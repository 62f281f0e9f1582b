/* The lifecycle view: snapshot records + events.log -> per-sandbox state, tier, last
 * activity, pins. Everything but gc_state_load and gc_event is a pure function of a
 * gc_state. See docs/gc.md for the rules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc/internal.h"

int64_t gc_window_ms(store_tier t)
{
    return t == STORE_TIER_PRO ? GC_PRO_WINDOW_MS : GC_FREE_WINDOW_MS;
}

const char *gc_state_name(gc_sandbox_state st)
{
    switch (st) {
    case GC_HIBERNATED: return "hibernated";
    case GC_RECLAIMED: return "reclaimed";
    case GC_DELETED: return "deleted";
    }
    return "?";
}

int gc_state_add_snap(gc_state *st, const store_snaprec *r)
{
    if (st->nsnaps == st->scap) {
        size_t nc = st->scap ? st->scap * 2 : 256;
        gc_snap *ns = realloc(st->snaps, nc * sizeof *ns);
        if (!ns) return -ENOMEM;
        st->snaps = ns;
        st->scap = nc;
    }
    gc_snap *g = &st->snaps[st->nsnaps++];
    g->r = *r;
    g->r.json = NULL;
    g->eff_ms = r->kind == STORE_KIND_FILES && r->parent_time_ms ? r->parent_time_ms : r->time_ms;
    return 0;
}

int gc_state_add_event(gc_state *st, const store_event *ev)
{
    if (st->nevents == st->ecap) {
        size_t nc = st->ecap ? st->ecap * 2 : 256;
        store_event *ne = realloc(st->events, nc * sizeof *ne);
        if (!ne) return -ENOMEM;
        st->events = ne;
        st->ecap = nc;
    }
    st->events[st->nevents++] = *ev;
    return 0;
}

typedef struct {
    gc_state *st;
    int rc;
} loader;

static int add_snap(void *arg, const store_snaprec *r)
{
    loader *l = arg;
    return (l->rc = gc_state_add_snap(l->st, r)) != 0;
}

static int add_event(void *arg, const store_event *ev)
{
    loader *l = arg;
    return (l->rc = gc_state_add_event(l->st, ev)) != 0;
}

int gc_state_load(store_t *s, gc_state *st, store_err *e)
{
    memset(st, 0, sizeof *st);
    loader l = {.st = st};
    int rc = store_snapshot_records(s, NULL, add_snap, &l, e);
    if (!rc && !l.rc) rc = store_event_each(s, add_event, &l, e);
    if (!rc && l.rc) rc = store_errf(e, l.rc, "out of memory");
    return rc;
}

void gc_state_free(gc_state *st)
{
    free(st->snaps);
    free(st->events);
    memset(st, 0, sizeof *st);
}

int gc_pinned(const gc_state *st, const char *id)
{
    int pinned = 0;
    for (size_t i = 0; i < st->nevents; i++) {
        const store_event *v = &st->events[i];
        if ((v->kind == STORE_EV_PIN || v->kind == STORE_EV_UNPIN) && !strcmp(v->snapshot, id))
            pinned = v->kind == STORE_EV_PIN;
    }
    return pinned;
}

/* "Last" is commit order (log order, id order), never the wall clock, which may have
 * stepped. */
store_tier gc_tenant_tier(const gc_state *st, const char *tenant)
{
    store_tier t = STORE_TIER_FREE;
    for (size_t i = 0; i < st->nsnaps; i++) {
        const store_snaprec *r = &st->snaps[i].r;
        if (r->tier != STORE_TIER_NONE && !strcmp(r->tenant, tenant)) t = r->tier;
    }
    for (size_t i = 0; i < st->nevents; i++) {
        const store_event *v = &st->events[i];
        if (v->kind == STORE_EV_TIER && !strcmp(v->tenant, tenant)) t = v->tier;
    }
    return t;
}

int gc_idle_past_window(const gc_sandbox *x, int64_t now_ms)
{
    return x->state == GC_HIBERNATED && now_ms - x->last_activity_ms > gc_window_ms(x->tier);
}

static int cmp_sb(const void *a, const void *b)
{
    return strcmp(((const gc_sandbox *)a)->sandbox, ((const gc_sandbox *)b)->sandbox);
}

/* Lookups, not scans: one pass over the snapshots, one over the events, each name found
 * by hash (a fleet of 100k sandboxes is O(n)). */
int gc_view(const gc_state *st, const char *tenant, gc_sandbox **out, size_t *n, store_err *e)
{
    size_t cap = 64, k = 0;
    gc_sandbox *v = calloc(cap, sizeof *v);
    size_t *latest_i = calloc(cap, sizeof *latest_i);     /* per sandbox: its latest snapshot */
    uint8_t *deleted = calloc(cap, 1);
    gc_strmap by_name = {0}, tiers = {0};
    int rc = v && latest_i && deleted ? 0 : -ENOMEM;
    /* Snapshots come in id (= time) order, so the last one seen is a sandbox's latest. */
    for (size_t i = 0; !rc && i < st->nsnaps; i++) {
        const gc_snap *g = &st->snaps[i];
        const store_snaprec *r = &g->r;
        /* The tenant's tier: the latest snapshot that recorded one (events override below). */
        if (r->tier != STORE_TIER_NONE && (rc = gc_strmap_put(&tiers, r->tenant, (size_t)r->tier))) break;
        if (store_name_reserved(r->sandbox) || (tenant && strcmp(r->tenant, tenant))) continue;
        size_t j = gc_strmap_get(&by_name, r->sandbox);
        if (j == GC_NONE) {
            if (k == cap) {
                cap *= 2;
                gc_sandbox *nv = realloc(v, cap * sizeof *nv);
                if (nv) v = nv;
                size_t *nl = realloc(latest_i, cap * sizeof *nl);
                if (nl) latest_i = nl;
                uint8_t *nd = realloc(deleted, cap);
                if (nd) deleted = nd;
                if (!nv || !nl || !nd) {
                    rc = -ENOMEM;
                    break;
                }
            }
            j = k++;
            if ((rc = gc_strmap_put(&by_name, r->sandbox, j))) break;   /* key lives in st */
            memset(&v[j], 0, sizeof v[j]);
            deleted[j] = 0;
            snprintf(v[j].sandbox, sizeof v[j].sandbox, "%s", r->sandbox);
            snprintf(v[j].tenant, sizeof v[j].tenant, "%s", r->tenant);
        }
        gc_sandbox *x = &v[j];
        latest_i[j] = i;
        x->snapshots++;
        x->bytes += r->new_bytes;
        snprintf(x->latest, sizeof x->latest, "%s", r->id);
        snprintf(x->latest_parent, sizeof x->latest_parent, "%s", r->parent);
        x->latest_files_only = r->kind == STORE_KIND_FILES;
        x->latest_indexed = r->indexed;
        x->latest_has_disk = r->has_disk;
        if (r->template_name[0])
            snprintf(x->template_name, sizeof x->template_name, "%s", r->template_name);
        /* A reclaim's files-only snapshot is not activity; the snapshot it was made from was. */
        if (g->eff_ms > x->last_activity_ms) x->last_activity_ms = g->eff_ms;
    }
    /* Events in log order, each applied to its sandbox. */
    for (size_t i = 0; !rc && i < st->nevents; i++) {
        const store_event *ev = &st->events[i];
        if (ev->kind == STORE_EV_TIER) {
            rc = gc_strmap_put(&tiers, ev->tenant, (size_t)ev->tier);
            continue;
        }
        size_t j = gc_strmap_get(&by_name, ev->sandbox);
        if (j == GC_NONE) continue;
        gc_sandbox *x = &v[j];
        if ((ev->kind == STORE_EV_TOUCH || ev->kind == STORE_EV_RESTORE ||
             ev->kind == STORE_EV_REBUILD) && ev->at_ms > x->last_activity_ms)
            x->last_activity_ms = ev->at_ms;
        if (ev->kind != STORE_EV_DELETE) continue;
        if (ev->at_ms > x->delete_ms) x->delete_ms = ev->at_ms;
        if (strcmp(ev->after, x->delete_after) > 0)
            snprintf(x->delete_after, sizeof x->delete_after, "%s", ev->after);
        /* A delete races a reclaim's files-only snapshot: that one stands for its source,
         * so a delete after the source still deletes the sandbox. Did the delete come
         * after the newest snapshot? Ids are in commit order, so the snapshot it saw
         * tells, whatever the clock did; only a log from before "after" existed falls
         * back to comparing times. */
        const char *ref = x->latest_files_only && x->latest_parent[0] ? x->latest_parent : x->latest;
        int64_t latest_time = st->snaps[latest_i[j]].eff_ms;
        if (ev->after[0] ? strcmp(ev->after, ref) >= 0 : ev->at_ms >= latest_time) deleted[j] = 1;
    }
    for (size_t j = 0; !rc && j < k; j++) {
        gc_sandbox *x = &v[j];
        size_t t = gc_strmap_get(&tiers, x->tenant);
        x->tier = t == GC_NONE ? STORE_TIER_FREE : (store_tier)t;
        if (deleted[j]) x->state = GC_DELETED;
        else if (x->latest_files_only) x->state = GC_RECLAIMED;
        else x->state = GC_HIBERNATED;
    }
    gc_strmap_free(&by_name);
    gc_strmap_free(&tiers);
    free(latest_i);
    free(deleted);
    if (rc) {
        free(v);
        return store_errf(e, rc, "out of memory");
    }
    qsort(v, k, sizeof *v, cmp_sb);
    *out = v;
    *n = k;
    return 0;
}

int gc_sandboxes(store_t *s, const char *tenant, gc_sandbox **out, size_t *n, store_err *e)
{
    gc_state st;
    int rc = gc_state_load(s, &st, e);
    if (!rc) rc = gc_view(&st, tenant, out, n, e);
    gc_state_free(&st);
    return rc;
}

static int found_one(void *arg, const store_snaprec *r)
{
    (void)r;
    *(int *)arg = 1;
    return 1;
}

int gc_event(store_t *s, store_event_kind kind, const char *name, store_tier tier,
             int64_t at_ms, store_err *e)
{
    store_event ev = {.kind = kind, .at_ms = at_ms};
    int rc = 0;
    switch (kind) {
    case STORE_EV_TOUCH: case STORE_EV_DELETE: case STORE_EV_RESTORE: case STORE_EV_REBUILD: {
        int exists = 0;
        if (store_name_valid(name)) return store_errf(e, -EINVAL, "'%s' is not a sandbox name", name);
        if ((rc = store_snapshot_records(s, name, found_one, &exists, e))) return rc;
        if (!exists) return store_errf(e, -ENOENT, "no sandbox %s in this store", name);
        snprintf(ev.sandbox, sizeof ev.sandbox, "%s", name);
        /* What the delete saw: snapshots committed after it are not deleted (gc_view). */
        if (kind == STORE_EV_DELETE && (rc = store_snapshot_latest(s, name, ev.after, e))) return rc;
        break;
    }
    case STORE_EV_TIER:
        if (store_name_valid(name)) return store_errf(e, -EINVAL, "'%s' is not a tenant name", name);
        if (tier != STORE_TIER_FREE && tier != STORE_TIER_PRO)
            return store_errf(e, -EINVAL, "a tier is free or pro");
        snprintf(ev.tenant, sizeof ev.tenant, "%s", name);
        ev.tier = tier;
        break;
    case STORE_EV_PIN: case STORE_EV_UNPIN: {
        store_snapshot *snap = NULL;
        if ((rc = store_snapshot_load(s, name, &snap, e))) return rc;
        snprintf(ev.sandbox, sizeof ev.sandbox, "%s", snap->sandbox);
        snprintf(ev.snapshot, sizeof ev.snapshot, "%s", name);
        store_snapshot_free(snap);
        break;
    }
    default:
        return store_errf(e, -EINVAL, "gc_event: %s events are gc's own",
                          store_event_kind_name(kind));
    }
    return store_event_log(s, &ev, e);
}
