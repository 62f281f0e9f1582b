/* The route table (docs/api.yaml describes the same routes; tests/integration/api_spec.sh
 * checks they agree) and the small routes: health, metrics, gc, audit. */
#include <errno.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "api/routes.h"
#include "store/toolbox.h"

#define ORCH API_ROLE_ORCH
#define SUPPORT API_ROLE_SUPPORT

const api_route api_routes[] = {
    {"GET", "/healthz", 0, API_RUN_INLINE, r_healthz, NULL, NULL},
    {"GET", "/metrics", 0, API_RUN_SHORT, r_metrics, NULL, NULL},
    {"POST", "/v1/snapshots", ORCH, API_RUN_LONG, r_snapshot_create, "tenant sandbox tier template memory vmstate disk classes", NULL},
    {"GET", "/v1/snapshots/{id}", ORCH | SUPPORT, API_RUN_SHORT, r_snapshot_get, NULL, NULL},
    {"POST", "/v1/snapshots/{id}/restore", ORCH, API_RUN_LONG, r_snapshot_restore, "out_dir", NULL},
    {"POST", "/v1/snapshots/{id}/wake", ORCH, API_RUN_LONG, r_snapshot_wake, "mode socket", NULL},
    {"POST", "/v1/snapshots/{id}/pin", ORCH, API_RUN_SHORT, r_snapshot_pin, NULL, NULL},
    {"DELETE", "/v1/snapshots/{id}/pin", ORCH, API_RUN_SHORT, r_snapshot_unpin, NULL, NULL},
    {"GET", "/v1/snapshots/{id}/files", SUPPORT, API_RUN_SHORT, r_snapshot_files, NULL, "path recursive"},
    {"GET", "/v1/snapshots/{id}/content", SUPPORT, API_RUN_LONG, r_snapshot_content, NULL, "path reason"},
    {"GET", "/v1/snapshots/{id}/archive", SUPPORT, API_RUN_LONG, r_snapshot_archive, NULL, "path"},
    {"GET", "/v1/sandboxes", ORCH | SUPPORT, API_RUN_SHORT, r_sandboxes, NULL, "tenant"},
    {"GET", "/v1/sandboxes/{id}", ORCH | SUPPORT, API_RUN_SHORT, r_sandbox_get, NULL, NULL},
    {"DELETE", "/v1/sandboxes/{id}", ORCH, API_RUN_SHORT, r_sandbox_delete, NULL, NULL},
    {"POST", "/v1/sandboxes/{id}/touch", ORCH, API_RUN_SHORT, r_sandbox_touch, NULL, NULL},
    {"POST", "/v1/sandboxes/{id}/rebuild", ORCH, API_RUN_LONG, r_sandbox_rebuild, "out template", NULL},
    {"POST", "/v1/sandboxes/{id}/shares", ORCH, API_RUN_SHORT, r_sandbox_share, "expires_in", NULL},
    {"GET", "/v1/sandboxes/{id}/shares", ORCH, API_RUN_SHORT, r_sandbox_shares, NULL, NULL},
    {"DELETE", "/v1/sandboxes/{id}/shares/{share}", ORCH, API_RUN_SHORT, r_sandbox_unshare, NULL, NULL},
    {"PUT", "/v1/tenants/{id}/tier", ORCH, API_RUN_SHORT, r_tenant_tier, "tier", NULL},
    {"GET", "/v1/shared/files", API_ROLE_SHARE, API_RUN_SHORT, r_shared_files, NULL, NULL},
    {"GET", "/v1/shared/content", API_ROLE_SHARE, API_RUN_LONG, r_shared_content, NULL, "path"},
    {"POST", "/v1/gc", API_ROLE_GC, API_RUN_LONG, r_gc, "dry_run now", NULL},
    {"GET", "/v1/audit", API_ROLE_ADMIN, API_RUN_SHORT, r_audit, NULL, "actor sandbox limit"},
    {"GET", "/console", 0, API_RUN_INLINE, r_console_redirect, NULL, NULL},
    {"GET", "/console/", 0, API_RUN_INLINE, r_console, NULL, NULL},
    {"GET", "/console/{id}", 0, API_RUN_INLINE, r_console, NULL, NULL},
};
const int api_nroutes = (int)(sizeof api_routes / sizeof *api_routes);

void r_healthz(api_req *r)
{
    api_ok(r, 200, json_pack("{s:b}", "ok", 1));
}

void r_metrics(api_req *r)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) return api_fail(r, 500, "internal", "out of memory");
    const char *names[sizeof api_routes / sizeof *api_routes];
    char keys[sizeof api_routes / sizeof *api_routes][96];
    for (int i = 0; i < api_nroutes; i++) {
        snprintf(keys[i], sizeof keys[i], "%s %s", api_routes[i].method, api_routes[i].path);
        names[i] = keys[i];
    }
    api_metrics_text(b, names, api_nroutes);
    /* The store's own numbers: a scrape costs one short read handle. */
    store_t *s = api_store(r, API_VIEW);
    if (s) {
        store_stats st;
        store_err e;
        gc_sandbox *v = NULL;
        size_t n = 0;
        int rc = store_get_stats(s, &st, &e);
        if (!rc) rc = api_sandboxes(r, s, NULL, &v, &n, &e);
        api_store_done(r, API_VIEW);
        if (rc) {
            evbuffer_free(b);
            return api_fail_store(r, rc, &e);
        }
        evbuffer_add_printf(b, "# TYPE cairn_store_stored_bytes gauge\ncairn_store_stored_bytes %llu\n"
                               "# TYPE cairn_store_logical_bytes gauge\ncairn_store_logical_bytes %llu\n"
                               "# TYPE cairn_store_chunks gauge\ncairn_store_chunks %llu\n"
                               "# TYPE cairn_store_snapshots gauge\ncairn_store_snapshots %llu\n"
                               "# TYPE cairn_store_packs gauge\ncairn_store_packs %llu\n",
                            (unsigned long long)st.stored_bytes, (unsigned long long)st.logical_bytes,
                            (unsigned long long)st.chunks, (unsigned long long)st.snapshots,
                            (unsigned long long)st.packs);
        static const gc_sandbox_state states[] = {GC_HIBERNATED, GC_RECLAIMED, GC_DELETED};
        evbuffer_add_printf(b, "# HELP cairn_sandboxes Sandboxes by state.\n# TYPE cairn_sandboxes gauge\n");
        for (int k = 0; k < 3; k++) {
            size_t c = 0;
            for (size_t i = 0; i < n; i++) c += v[i].state == states[k];
            evbuffer_add_printf(b, "cairn_sandboxes{state=\"%s\"} %zu\n", gc_state_name(states[k]), c);
        }
        free(v);
    } else {
        evbuffer_free(b);
        return;
    }
    size_t len = evbuffer_get_length(b);
    r->raw = malloc(len + 1);
    if (!r->raw) {
        evbuffer_free(b);
        return api_fail(r, 500, "internal", "out of memory");
    }
    evbuffer_copyout(b, r->raw, len);
    evbuffer_free(b);
    r->raw_len = len;
    r->raw_type = "text/plain; version=0.0.4";
    r->status = 200;
}

static void gc_log(void *arg, const char *line)
{
    fprintf(stderr, "cairn serve: rid=%s: gc: %s\n", (const char *)arg, line);
}

void r_gc(api_req *r)
{
    int dry = 0;
    gc_options o = {.now_ms = store_now_ms(), .log = gc_log, .log_arg = r->rid};
    if (api_body_bool(r, "dry_run", &dry)) return;
    json_t *now = r->body ? json_object_get(r->body, "now") : NULL;
    if (json_is_integer(now) || json_is_string(now)) {
        /* The CLI's parser and limits (years 1970-9999), so no "now" overflows the *1000. */
        char num[32];
        const char *text = num;
        if (json_is_integer(now)) snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(now));
        else if (memchr(json_string_value(now), 0, json_string_length(now))) text = "";
        else text = json_string_value(now);
        if (gc_parse_time(text, &o.now_ms))
            return api_fail(r, 400, "invalid", "\"now\": not a time that exists (RFC 3339 or unix seconds, "
                            "years 1970-9999)");
    } else if (now && !json_is_null(now)) {
        return api_fail(r, 400, "wrong_type", "\"now\" must be a string (RFC 3339) or an integer (unix seconds)");
    }
    o.dry_run = dry;
    gc_result res;
    store_err e;
    int rc = gc_run(api_store_dir(r), &o, &res, &e);
    if (rc) api_fail(r, 500, "gc_failed", "%s (what was done stays done; the next run resumes)", e.msg);
    else {
        if (!dry) {
            api_metrics_add("gc_runs", 1);
            api_metrics_add("gc_freed_bytes", res.freed_bytes);
            api_metrics_add("gc_reclaimed_sandboxes", res.reclaimed);
        }
        api_ok(r, 200, gc_result_json(&res, 1, dry));
    }
    gc_result_free(&res);
}

typedef struct {
    json_t *list;
    const char *actor, *sandbox;     /* NULL: any */
} audit_filter;

static int audit_line(void *arg, json_t *j)
{
    audit_filter *f = arg;
    const char *a = json_string_value(json_object_get(j, "actor")), *sb = json_string_value(json_object_get(j, "sandbox"));
    if ((f->actor && (!a || strcmp(a, f->actor))) || (f->sandbox && (!sb || strcmp(sb, f->sandbox)))) return 0;
    return json_array_append(f->list, j) ? -ENOMEM : 0;
}

/* ?actor=NAME&sandbox=NAME keep the entries of that actor / sandbox; ?limit=N the newest N. */
void r_audit(api_req *r)
{
    char *actor = api_query(r, "actor"), *sandbox = api_query(r, "sandbox"), *limit = api_query(r, "limit");
    long lim = -1;
    if (limit) {
        char *end;
        lim = strtol(limit, &end, 10);
        if (!*limit || *end || lim < 1 || lim > 1000000) lim = 0;
    }
    store_t *s = NULL;
    if (lim == 0) api_fail(r, 400, "invalid", "limit is a whole number from 1 to 1000000");
    else s = api_store(r, STORE_READ);
    if (s) {
        audit_filter f = {json_array(), actor, sandbox};
        store_err e;
        int rc = f.list ? store_audit_read(s, audit_line, &f, &e) : store_errf(&e, -ENOMEM, "out of memory");
        api_store_done(r, STORE_READ);
        if (!rc && lim > 0 && json_array_size(f.list) > (size_t)lim)
            while (json_array_size(f.list) > (size_t)lim) json_array_remove(f.list, 0);
        if (rc) {
            json_decref(f.list);
            api_fail_store(r, rc, &e);
        } else {
            api_ok(r, 200, json_pack("{s:o}", "entries", f.list));
        }
    }
    free(actor);
    free(sandbox);
    free(limit);
}
