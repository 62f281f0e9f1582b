/* The lifecycle view: snapshots (from the index) + events.log -> per-sandbox state, tier,
 * last activity, pins. See docs/gc.md for the rules. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gc/internal.h"

static void copy_json_str(char *dst, size_t cap, json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    snprintf(dst, cap, "%s", v ? v : "");
}

int gc_state_add_snapshot(void *arg, const char *id, const char *json)
{
    gc_state *st = arg;
    json_t *j = json_loads(json, 0, NULL);
    if (!j) return 0;
    if (st->nsnaps == st->scap) {
        st->scap = st->scap ? st->scap * 2 : 256;
        gc_snap *ns = realloc(st->snaps, st->scap * sizeof *ns);
        if (!ns) {
            json_decref(j);
            return 1;
        }
        st->snaps = ns;
    }
    gc_snap *g = &st->snaps[st->nsnaps++];
    memset(g, 0, sizeof *g);
    snprintf(g->id, sizeof g->id, "%s", id);
    copy_json_str(g->sandbox, sizeof g->sandbox, j, "sandbox");
    copy_json_str(g->tenant, sizeof g->tenant, j, "tenant");
    copy_json_str(g->tier, sizeof g->tier, j, "tier");
    copy_json_str(g->template_name, sizeof g->template_name, j, "template");
    const char *kind = json_string_value(json_object_get(j, "kind"));
    g->files_only = kind && !strcmp(kind, "files");
    g->indexed = json_object_get(j, "files_hash") != NULL;
    g->has_disk = json_object_get(json_object_get(j, "blobs"), "disk") != NULL;
    g->time_ms = json_integer_value(json_object_get(j, "time_ms"));
    g->new_bytes = (uint64_t)json_integer_value(json_object_get(j, "new_bytes"));
    const char *parent = json_string_value(json_object_get(j, "parent"));
    if (parent && strlen(parent) == 20) {
        char hex[13];
        memcpy(hex, parent, 12);
        hex[12] = 0;
        g->parent_ms = (int64_t)strtoll(hex, NULL, 16);
        snprintf(g->parent, sizeof g->parent, "%s", parent);
    }
    g->eff_ms = g->files_only && g->parent_ms ? g->parent_ms : g->time_ms;
    json_decref(j);
    return 0;
}

int gc_state_add_event(void *arg, const char *line)
{
    gc_state *st = arg;
    json_t *j = json_loads(line, 0, NULL);
    if (!j) return 0;   /* a torn last line of a crashed append: ignore it */
    if (st->nevents == st->ecap) {
        st->ecap = st->ecap ? st->ecap * 2 : 256;
        gc_ev *ne = realloc(st->events, st->ecap * sizeof *ne);
        if (!ne) {
            json_decref(j);
            return 1;
        }
        st->events = ne;
    }
    gc_ev *v = &st->events[st->nevents++];
    memset(v, 0, sizeof *v);
    copy_json_str(v->kind, sizeof v->kind, j, "event");
    copy_json_str(v->name, sizeof v->name, j, "sandbox");
    if (!v->name[0]) copy_json_str(v->name, sizeof v->name, j, "tenant");
    copy_json_str(v->snapshot, sizeof v->snapshot, j, "snapshot");
    copy_json_str(v->after, sizeof v->after, j, "after");
    copy_json_str(v->value, sizeof v->value, j, "tier");
    if (!v->value[0]) copy_json_str(v->value, sizeof v->value, j, "reason");
    v->at_ms = json_integer_value(json_object_get(j, "at"));
    json_decref(j);
    return 0;
}

int gc_state_load(store_t *s, gc_state *st, store_err *e)
{
    memset(st, 0, sizeof *st);
    int rc = store_snapshot_all(s, gc_state_add_snapshot, st, e);
    if (!rc) rc = store_event_read(s, gc_state_add_event, st, e);
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
    for (size_t i = 0; i < st->nevents; i++)
        if (!strcmp(st->events[i].snapshot, id)) {
            if (!strcmp(st->events[i].kind, "pin")) pinned = 1;
            if (!strcmp(st->events[i].kind, "unpin")) pinned = 0;
        }
    return pinned;
}

/* The tenant's tier: the last `cairn tier`, else the --tier of its newest snapshot. "Last"
 * is commit order (log order, id order), never the wall clock, which may have stepped. */
static void tenant_tier(const gc_state *st, const char *tenant, char out[8])
{
    snprintf(out, 8, "free");
    for (size_t i = 0; i < st->nsnaps; i++) {
        const gc_snap *g = &st->snaps[i];
        if (g->tier[0] && !strcmp(g->tenant, tenant)) snprintf(out, 8, "%.7s", g->tier);
    }
    for (size_t i = 0; i < st->nevents; i++) {
        const gc_ev *v = &st->events[i];
        if (!strcmp(v->kind, "tier") && !strcmp(v->name, tenant)) snprintf(out, 8, "%.7s", v->value);
    }
}

static int cmp_sb(const void *a, const void *b)
{
    return strcmp(((const gc_sandbox *)a)->sandbox, ((const gc_sandbox *)b)->sandbox);
}

int gc_view(const gc_state *st, const char *tenant, gc_sandbox **out, size_t *n, store_err *e)
{
    size_t cap = 64, k = 0;
    gc_sandbox *v = calloc(cap, sizeof *v);
    if (!v) return store_errf(e, -ENOMEM, "out of memory");
    /* Snapshots come in id (= time) order, so the last one seen is a sandbox's latest. */
    for (size_t i = 0; i < st->nsnaps; i++) {
        const gc_snap *g = &st->snaps[i];
        if (g->sandbox[0] == '_' || (tenant && strcmp(g->tenant, tenant))) continue;
        gc_sandbox *x = NULL;
        for (size_t j = 0; j < k && !x; j++)
            if (!strcmp(v[j].sandbox, g->sandbox)) x = &v[j];
        if (!x) {
            if (k == cap) {
                gc_sandbox *nv = realloc(v, (cap *= 2) * sizeof *nv);
                if (!nv) {
                    free(v);
                    return store_errf(e, -ENOMEM, "out of memory");
                }
                v = nv;
            }
            x = &v[k++];
            memset(x, 0, sizeof *x);
            snprintf(x->sandbox, sizeof x->sandbox, "%s", g->sandbox);
            snprintf(x->tenant, sizeof x->tenant, "%s", g->tenant);
        }
        x->snapshots++;
        x->bytes += g->new_bytes;
        snprintf(x->latest, sizeof x->latest, "%s", g->id);
        snprintf(x->latest_parent, sizeof x->latest_parent, "%s", g->parent);
        x->latest_files_only = g->files_only;
        x->latest_indexed = g->indexed;
        x->latest_has_disk = g->has_disk;
        if (g->template_name[0]) snprintf(x->template_name, sizeof x->template_name, "%s", g->template_name);
        /* A reclaim's files-only snapshot is not activity; the snapshot it was made from was. */
        if (g->eff_ms > x->last_activity_ms) x->last_activity_ms = g->eff_ms;
    }
    for (size_t j = 0; j < k; j++) {
        gc_sandbox *x = &v[j];
        int64_t latest_time = 0;
        /* A delete races a reclaim's files-only snapshot: that one stands for its source,
         * so a delete after the source still deletes the sandbox. */
        for (size_t i = 0; i < st->nsnaps; i++)
            if (!strcmp(st->snaps[i].id, x->latest)) latest_time = st->snaps[i].eff_ms;
        const char *ref = x->latest_files_only && x->latest_parent[0] ? x->latest_parent : x->latest;
        int deleted = 0;
        for (size_t i = 0; i < st->nevents; i++) {
            const gc_ev *ev = &st->events[i];
            if (strcmp(ev->name, x->sandbox)) continue;
            if ((!strcmp(ev->kind, "touch") || !strcmp(ev->kind, "restore") || !strcmp(ev->kind, "rebuild")) &&
                ev->at_ms > x->last_activity_ms)
                x->last_activity_ms = ev->at_ms;
            if (strcmp(ev->kind, "delete")) continue;
            if (ev->at_ms > x->delete_ms) x->delete_ms = ev->at_ms;
            if (strcmp(ev->after, x->delete_after) > 0)
                snprintf(x->delete_after, sizeof x->delete_after, "%s", ev->after);
            /* Did the delete come after the newest snapshot? Ids are in commit order, so
             * the snapshot it saw tells, whatever the clock did; only a log from before
             * "after" existed falls back to comparing times. */
            if (ev->after[0] ? strcmp(ev->after, ref) >= 0 : ev->at_ms >= latest_time) deleted = 1;
        }
        tenant_tier(st, x->tenant, x->tier);
        if (deleted) snprintf(x->state, sizeof x->state, "deleted");
        else if (x->latest_files_only) snprintf(x->state, sizeof x->state, "reclaimed");
        else snprintf(x->state, sizeof x->state, "hibernated");
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

static int find_record(void *arg, const char *id, const char *json)
{
    (void)id;
    (void)json;
    *(int *)arg = 1;
    return 1;
}

int gc_event(store_t *s, const char *kind, const char *name, const char *value, int64_t at_ms,
             store_err *e)
{
    json_t *j = json_pack("{s:s, s:I}", "event", kind, "at", (json_int_t)at_ms);
    int rc = 0;
    if (!strcmp(kind, "touch") || !strcmp(kind, "delete") || !strcmp(kind, "restore") ||
        !strcmp(kind, "rebuild")) {
        int exists = 0;
        if (store_name_valid(name)) rc = store_errf(e, -EINVAL, "'%s' is not a sandbox name", name);
        else if (store_snapshot_list(s, name, find_record, &exists, e) == 0 && !exists)
            rc = store_errf(e, -ENOENT, "no sandbox %s in this store", name);
        json_object_set_new(j, "sandbox", json_string(name));
        char latest[STORE_SNAPID_LEN];
        /* What the delete saw: snapshots committed after it are not deleted (lifecycle.c). */
        if (!rc && !strcmp(kind, "delete") && !(rc = store_snapshot_latest(s, name, latest, e)))
            json_object_set_new(j, "after", json_string(latest));
    } else if (!strcmp(kind, "tier")) {
        if (store_name_valid(name)) rc = store_errf(e, -EINVAL, "'%s' is not a tenant name", name);
        else if (strcmp(value, "free") && strcmp(value, "pro"))
            rc = store_errf(e, -EINVAL, "a tier is free or pro, not '%s'", value);
        json_object_set_new(j, "tenant", json_string(name));
        json_object_set_new(j, "tier", json_string(value));
    } else if (!strcmp(kind, "pin") || !strcmp(kind, "unpin")) {
        store_snapshot *snap = NULL;
        rc = store_snapshot_load(s, name, &snap, e);
        if (!rc) json_object_set_new(j, "sandbox", json_string(snap->sandbox));
        store_snapshot_free(snap);
        json_object_set_new(j, "snapshot", json_string(name));
    } else {
        rc = store_errf(e, -EINVAL, "unknown event '%s'", kind);
    }
    char *line = rc ? NULL : json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!rc) rc = line ? store_event_append(s, line, e) : store_errf(e, -ENOMEM, "out of memory");
    free(line);
    return rc;
}
