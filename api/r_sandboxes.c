/* Sandboxes (list, get, touch, rebuild, delete, shares) and a tenant's tier. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/routes.h"
#include "restore/restore.h"
#include "store/toolbox.h"

#define SHARE_DEFAULT_S (7 * 24 * 3600)
#define SHARE_MAX_S (90 * 24 * 3600)

int api_find_sandbox(api_req *r, store_t *s, const char *name, gc_sandbox *out)
{
    gc_sandbox *v = NULL;
    size_t n = 0;
    store_err e;
    int rc = api_sandboxes(r, s, NULL, &v, &n, &e);
    if (rc) {
        api_fail_store(r, rc, &e);
        return -1;
    }
    size_t i = 0;
    while (i < n && strcmp(v[i].sandbox, name)) i++;
    if (i < n) *out = v[i];
    free(v);
    if (i == n || (r->tok.tenant[0] && strcmp(r->tok.tenant, out->tenant))) {
        api_fail(r, 404, "not_found", "no sandbox %s", name);
        return -1;
    }
    return 0;
}

void r_sandboxes(api_req *r)
{
    char *tenant = api_query(r, "tenant");
    if (tenant && store_name_valid(tenant)) {
        free(tenant);
        return api_fail(r, 400, "invalid", "tenant: not a tenant name");
    }
    if (r->tok.tenant[0] && tenant && strcmp(tenant, r->tok.tenant)) {
        free(tenant);
        return api_fail(r, 404, "not_found", "no such tenant");
    }
    const char *want = r->tok.tenant[0] ? r->tok.tenant : tenant;
    store_t *s = api_store(r, API_VIEW);
    if (!s) {
        free(tenant);
        return;
    }
    gc_sandbox *v = NULL;
    size_t n = 0;
    store_err e;
    int rc = api_sandboxes(r, s, want, &v, &n, &e);
    api_store_done(r, API_VIEW);
    free(tenant);
    if (rc) return api_fail_store(r, rc, &e);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) json_array_append_new(list, gc_sandbox_json(&v[i]));
    free(v);
    api_ok(r, 200, json_pack("{s:o}", "sandboxes", list));
}

static int add_record(void *arg, const store_snaprec *rec)
{
    json_t *list = arg, *j = json_loads(rec->json, 0, NULL);   /* the store's record as is */
    return j ? json_array_append_new(list, j) : -ENOMEM;
}

void r_sandbox_get(api_req *r)
{
    store_t *s = api_store(r, API_VIEW);
    if (!s) return;
    gc_sandbox sb;
    if (api_find_sandbox(r, s, r->param, &sb)) {
        api_store_done(r, API_VIEW);
        return;
    }
    /* The list is the view's alone (the index's records): kept with it as JSON text, as
     * reading every record of a long-lived sandbox again for each call was most of the
     * call, and then copying and encoding the list (on the event loop) was. The answer is
     * the sandbox's record with the list's text spliced in as "snapshot_list", its last key. */
    char key[sizeof r->param + 2];
    snprintf(key, sizeof key, "t:%s", r->param);
    api_text *lt = r->view ? api_view_cached_text(r->view, key) : NULL;
    store_err e;
    int rc = 0;
    if (!lt) {
        json_t *list = json_array();
        rc = list ? store_snapshot_records(s, r->param, add_record, list, &e) : store_errf(&e, -ENOMEM, "out of memory");
        char *text = rc ? NULL : json_dumps(list, JSON_COMPACT);
        if (!rc && !(text && (lt = api_text_new(text, strlen(text))))) rc = store_errf(&e, -ENOMEM, "out of memory");
        free(text);
        json_decref(list);
        if (!rc && r->view) api_view_keep_text(r->view, key, lt);
    }
    api_store_done(r, API_VIEW);
    if (rc) return api_fail_store(r, rc, &e);
    json_t *j = gc_sandbox_json(&sb);
    char *head = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    size_t hlen = head ? strlen(head) : 0;
    static const char mid[] = ",\"snapshot_list\":";
    char *body = hlen >= 2 ? malloc(hlen + sizeof mid) : NULL;
    if (!body) {
        free(head);
        api_text_unref(lt);
        return api_fail(r, 500, "internal", "out of memory");
    }
    /* head is "{...}": its '}' goes after the list (an empty record takes no comma); the
     * list itself is sent by reference (server.c), never copied per call. */
    size_t n = hlen - 1;
    memcpy(body, head, n);
    const char *m = hlen == 2 ? mid + 1 : mid;
    memcpy(body + n, m, strlen(m));
    n += strlen(m);
    free(head);
    r->raw = body;
    r->raw_len = n;
    r->raw_ref = lt;
    r->raw_tail = "}\n";
    r->raw_type = "application/json";
    r->status = 200;
}

/* Records kind for name (a sandbox, whose record goes into *sb, unless tenant_check: a
 * tenant's tier). */
static void event(api_req *r, store_event_kind kind, const char *name, store_tier tier, const char *tenant_check,
                  gc_sandbox *sb)
{
    store_t *s = api_store(r, STORE_READ);
    if (!s) return;
    if (!tenant_check && api_find_sandbox(r, s, name, sb)) {
        api_store_done(r, STORE_READ);
        return;
    }
    store_err e;
    int64_t at = store_now_ms();
    int rc = gc_event(s, kind, name, tier, at, &e);
    const char *value = kind == STORE_EV_TIER ? store_tier_name(tier) : NULL;
    api_store_done(r, STORE_READ);
    if (rc) return api_fail_store(r, rc, &e);
    char when[32];
    store_rfc3339(at, when);
    api_ok(r, 200, json_pack("{s:s, s:s, s:s, s:s}", "event", store_event_kind_name(kind), "name", name, "value", value ? value : "", "at",
                             when));
}

void r_sandbox_touch(api_req *r)
{
    gc_sandbox sb;
    event(r, STORE_EV_TOUCH, r->param, STORE_TIER_NONE, NULL, &sb);
}
void r_sandbox_delete(api_req *r)
{
    gc_sandbox sb;
    event(r, STORE_EV_DELETE, r->param, STORE_TIER_NONE, NULL, &sb);
    if (r->status != 200) return;
    /* The shares die with the sandbox. They are refused already (a share checks the
     * sandbox at each use), so a failure here only leaves their lines for a later rewrite. */
    size_t n = 0;
    store_err e;
    if (api_share_revoke(api_shares_of(r), sb.tenant, sb.sandbox, NULL, &n, &e))
        fprintf(stderr, "cairn serve: rid=%s: shares of deleted %s not revoked: %s\n", r->rid, r->param, e.msg);
    if (r->resp) json_object_set_new(r->resp, "shares_revoked", json_integer((json_int_t)n));
}

void r_tenant_tier(api_req *r)
{
    const char *tier = NULL;
    if (api_body_str(r, "tier", 1, &tier)) return;
    store_tier t;
    if (store_tier_parse(tier, &t) || t == STORE_TIER_NONE) return api_fail(r, 400, "invalid", "tier is free or pro");
    if (store_name_valid(r->param) || store_name_reserved(r->param))
        return api_fail(r, 404, "not_found", "no tenant %s", r->param);
    if (api_tenant_ok(r, r->param, "tenant")) return;
    event(r, STORE_EV_TIER, r->param, t, r->param, NULL);
}

static void warn_entry(void *arg, const char *path, const char *why)
{
    fprintf(stderr, "cairn serve: rid=%s: rebuild: %s: %s\n", (const char *)arg, path, why);
}

void r_sandbox_rebuild(api_req *r)
{
    const char *out = NULL, *tmpl = NULL;
    if (api_body_str(r, "out", 1, &out) || api_body_str(r, "template", 0, &tmpl)) return;
    if (tmpl && store_name_valid(tmpl)) return api_fail(r, 400, "invalid", "bad template name");
    const api_config *cfg = api_cfg(r);
    char *real = NULL, *name = NULL, via[300];
    int dirfd = -1;
    store_err e;
    /* The image's folder is opened once, beneath its root (paths.c); the rebuild writes by
     * that descriptor's /proc name (its temp file and rename both go into that folder). */
    int rc = api_path_open_output(cfg->restore_roots, cfg->nrestore_roots, out, &dirfd, &name, &real, &e);
    if (rc) return api_fail_store(r, rc, &e);
    snprintf(via, sizeof via, "/proc/self/fd/%d/%s", dirfd, name);
    store_t *s = api_store(r, STORE_READ);
    gc_sandbox sb;
    if (!s || api_find_sandbox(r, s, r->param, &sb)) {
        if (s) api_store_done(r, STORE_READ);
        close(dirfd);
        free(name);
        free(real);
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    store_snapshot *snap = NULL, *ts = NULL;
    restore_rebuild_stats st = {.warn = warn_entry, .warn_arg = r->rid};
    if (api_activity(r, s, STORE_EV_REBUILD, r->param)) {
        api_store_done(r, STORE_READ);
        close(dirfd);
        free(name);
        free(real);
        return;
    }
    rc = restore_rebuild_sandbox(s, r->param, tmpl, via, &st, &snap, &ts, &e);
    if (rc) {
        char dir[300];
        snprintf(dir, sizeof dir, "/proc/self/fd/%d", dirfd);
        size_t rl = strlen(real) - strlen(name) - 1;    /* real is its folder's real path + "/" + name */
        char *shown_dir = strndup(real, rl ? rl : 1);
        if (shown_dir) api_path_unproc(e.msg, sizeof e.msg, dir, shown_dir);
        free(shown_dir);
    }
    api_store_done(r, STORE_READ);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc == -EINVAL || rc == -ENOENT) api_fail(r, 409, "cannot_rebuild", "%s", e.msg);
    else if (rc) api_fail(r, 500, "rebuild_failed", "%s", e.msg);
    else
        api_ok(r, 200, restore_rebuild_json(r->param, snap, ts, real, &st,
                                            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9));
    store_snapshot_free(snap);
    store_snapshot_free(ts);
    close(dirfd);
    free(name);
    free(real);
}

void r_sandbox_share(api_req *r)
{
    int64_t expires_in = SHARE_DEFAULT_S;
    if (api_body_int(r, "expires_in", &expires_in)) return;
    if (expires_in < 60 || expires_in > SHARE_MAX_S)
        return api_fail(r, 400, "invalid", "expires_in is seconds, from 60 to %d", SHARE_MAX_S);
    store_t *s = api_store(r, STORE_READ);
    if (!s) return;
    gc_sandbox sb;
    int rc = api_find_sandbox(r, s, r->param, &sb);
    api_store_done(r, STORE_READ);
    if (rc) return;
    /* A share is of the sandbox as it is now: a deleted one has nothing to share. */
    if (sb.state == GC_DELETED || !sb.latest[0]) return api_fail(r, 404, "not_found", "no sandbox %s", r->param);
    char token[API_TOKEN_MAX], id[API_SHARE_ID_LEN + 1];
    store_err e;
    int64_t exp = store_now_ms() + expires_in * 1000;
    if ((rc = api_share_add(api_shares_of(r), sb.tenant, sb.sandbox, sb.latest, exp, api_actor(r),
                            (size_t)api_cfg(r)->max_shares, token, id, &e)))
        return rc == -EDQUOT ? api_fail(r, 409, "too_many_shares", "%s", e.msg) : api_fail(r, 500, "internal", "%s", e.msg);
    char when[32];
    store_rfc3339(exp, when);
    api_ok(r, 201, json_pack("{s:s, s:s, s:s, s:s, s:I}", "token", token, "id", id, "sandbox", sb.sandbox, "expires",
                             when, "expires_ms", (json_int_t)exp));
    memset(token, 0, sizeof token);
}

/* A share as listed: never its token (which is not kept) nor its whole hash. */
static json_t *share_json(const api_token *t)
{
    char id[API_SHARE_ID_LEN + 1], exp[32], made[32] = "";
    api_share_id(t, id);
    store_rfc3339(t->expires_ms, exp);
    if (t->created_ms) store_rfc3339(t->created_ms, made);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", id, "sandbox", t->sandbox, "by",
                          strncmp(t->name, "share:", 6) ? t->name : t->name + 6, "expires", exp, "expires_ms",
                          (json_int_t)t->expires_ms);
    if (j && made[0]) json_object_set_new(j, "created", json_string(made));
    return j;
}

/* The {id} sandbox the caller may see, into *sb; -1 after api_fail. */
static int the_sandbox(api_req *r, gc_sandbox *sb)
{
    store_t *s = api_store(r, STORE_READ);
    if (!s) return -1;
    int rc = api_find_sandbox(r, s, r->param, sb);
    api_store_done(r, STORE_READ);
    return rc;
}

void r_sandbox_shares(api_req *r)
{
    gc_sandbox sb;
    if (the_sandbox(r, &sb)) return;
    int rc;
    api_token *v = NULL;
    size_t n = 0;
    store_err e;
    if ((rc = api_share_list(api_shares_of(r), sb.tenant, sb.sandbox, &v, &n, &e))) return api_fail_store(r, rc, &e);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) json_array_append_new(list, share_json(&v[i]));
    free(v);
    api_ok(r, 200, json_pack("{s:s, s:o}", "sandbox", sb.sandbox, "shares", list));
}

void r_sandbox_unshare(api_req *r)
{
    gc_sandbox sb;
    int rc;
    if (the_sandbox(r, &sb)) return;
    store_err e;
    if ((rc = api_share_revoke(api_shares_of(r), sb.tenant, sb.sandbox, r->param2, NULL, &e)))
        return api_fail_store(r, rc, &e);
    api_ok(r, 200, json_pack("{s:s, s:s, s:b}", "sandbox", sb.sandbox, "share", r->param2, "revoked", 1));
}
