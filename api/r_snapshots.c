/* POST /v1/snapshots, GET /v1/snapshots/{id}, restore, pin, unpin. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api/routes.h"
#include "gc/gc.h"
#include "restore/restore.h"
#include "snapshotter/snapshotter.h"
#include "store/toolbox.h"

static double secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The orchestrator's {path: class} as "CLASS<TAB>/path" lines; NULL after api_fail. */
static char *classes_text(api_req *r, json_t *c)
{
    if (!json_is_object(c)) {
        api_fail(r, 400, "wrong_type", "\"classes\" must be an object {\"/path\": \"class\"}");
        return NULL;
    }
    size_t cap = 1, n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(c, k, v) cap += strlen(k) + 16;
    char *t = malloc(cap);
    if (!t) {
        api_fail(r, 500, "internal", "out of memory");
        return NULL;
    }
    json_object_foreach(c, k, v) {
        const char *cls = json_string_value(v);
        if (!cls || store_class_parse(cls) < 0 || k[0] != '/' || strpbrk(k, "\t\n")) {
            free(t);
            api_fail(r, 400, "invalid", "classes: each key is an absolute path (no tab or newline) and each "
                     "value one of artifact, upload, project, secret, cache, temp, runtime");
            return NULL;
        }
        n += (size_t)snprintf(t + n, cap - n, "%s\t%s\n", cls, k);
    }
    t[n] = 0;
    return t;
}

/* A sandbox name is one tenant's (snap_ingest refuses another's, naming the owner, which
 * is for the store's own operator only). Checked under the write handle, so no ingest can
 * slip in between: a tenant-bound token learns nothing of the name (404, as for anything
 * of another tenant's), an unbound one learns only that it is taken (409). -1 after
 * api_fail. */
static int owner_check(api_req *r, store_t *s, const char *tenant, const char *sandbox)
{
    char id[STORE_SNAPID_LEN];
    store_snapshot *last = NULL;
    store_err e;
    int rc = store_snapshot_latest(s, sandbox, id, &e);
    if (rc == -ENOENT) return 0;
    if (!rc) rc = store_snapshot_load(s, id, &last, &e);
    if (rc) {
        fprintf(stderr, "cairn serve: rid=%s: owner of sandbox %s: %s\n", r->rid, sandbox, e.msg);
        api_fail(r, 500, "internal", "cannot read sandbox %s (request %s); nothing was stored", sandbox, r->rid);
        return -1;
    }
    int other = strcmp(last->tenant, tenant) != 0;
    store_snapshot_free(last);
    if (!other) return 0;
    if (r->tok.tenant[0]) api_fail(r, 404, "not_found", "no sandbox %s", sandbox);
    else api_fail(r, 409, "conflict", "sandbox %s belongs to another tenant; nothing was stored", sandbox);
    return -1;
}

void r_snapshot_create(api_req *r)
{
    const char *tenant = NULL, *sandbox = NULL, *tier = NULL, *tmpl = NULL, *in[3] = {NULL, NULL, NULL};
    static const char *names[] = {"memory", "vmstate", "disk"};
    if (api_body_str(r, "tenant", 1, &tenant) || api_body_str(r, "sandbox", 1, &sandbox) ||
        api_body_str(r, "tier", 0, &tier) || api_body_str(r, "template", 0, &tmpl) ||
        api_body_str(r, "memory", 0, &in[0]) || api_body_str(r, "vmstate", 0, &in[1]) ||
        api_body_str(r, "disk", 0, &in[2]))
        return;
    if (store_name_valid(tenant) || store_name_valid(sandbox) || store_name_reserved(tenant) ||
        store_name_reserved(sandbox))
        return api_fail(r, 400, "invalid", "tenant and sandbox names are 1-128 of [A-Za-z0-9._-], not starting "
                        "with '.', '-' or '_'");
    store_tier t = STORE_TIER_NONE;
    if (tier && (store_tier_parse(tier, &t) || t == STORE_TIER_NONE))
        return api_fail(r, 400, "invalid", "tier is free or pro");
    if (tmpl && store_name_valid(tmpl)) return api_fail(r, 400, "invalid", "bad template name");
    if (!in[0] && !in[1] && !in[2]) return api_fail(r, 400, "missing_field", "give at least one of memory, vmstate, disk");
    if (api_tenant_ok(r, tenant, "tenant")) return;
    char *classes = NULL;
    json_t *cj = json_object_get(r->body, "classes");
    if (cj && !json_is_null(cj) && !(classes = classes_text(r, cj))) return;

    const api_config *cfg = api_cfg(r);
    /* Each input is opened once, beneath its root (paths.c), and the snapshotter reads it by
     * the descriptor's /proc name: a symlink swapped in at the path later is never followed. */
    int fds[3] = {-1, -1, -1};
    char real[3][40];
    snap_request req = {.tenant = tenant, .sandbox = sandbox, .tier = t, .template_name = tmpl};
    store_err e;
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (!in[i]) continue;
        rc = api_path_open_input(cfg->snapshot_roots, cfg->nsnapshot_roots, in[i], &fds[i], &e);
        if (rc) api_fail_store(r, rc, &e);
        else {
            snprintf(real[i], sizeof real[i], "/proc/self/fd/%d", fds[i]);
            req.blob_name[req.nblobs] = names[i];
            req.blob_path[req.nblobs++] = real[i];
        }
    }
    snap_policy *pol = NULL;
    if (!rc && in[2]) {
        rc = snap_policy_load(api_store_dir(r), NULL, NULL, &pol, &e);
        if (!rc && classes) rc = snap_policy_add_classes(pol, classes, "classes", &e);
        if (rc) api_fail_store(r, rc, &e);
        req.policy = pol;
    }
    if (!rc) {
        double t0 = secs();
        snap_index_start(&req);          /* beside the ingest (snapshotter.h) */
        store_t *s = api_store(r, STORE_WRITE);
        store_snapshot *snap = NULL;
        if (s && !(rc = owner_check(r, s, tenant, sandbox))) {
            rc = snap_ingest(s, &req, &snap, &e);
            if (rc == -EINPROGRESS) {    /* a slow walk finishes without the store's lock */
                api_store_done(r, STORE_WRITE);
                snap_index_wait(&req);
                s = api_store(r, STORE_WRITE);
                rc = s ? snap_ingest(s, &req, &snap, &e) : 0;
            }
            if (rc) {
                for (int i = 0; i < 3; i++)
                    if (fds[i] >= 0) api_path_unproc(e.msg, sizeof e.msg, real[i], in[i]);
                api_fail(r, 500, "ingest_failed", "%s; nothing was stored", e.msg);
            }
        }
        if (s) {
            if (rc) api_store_failed(r);
            api_store_done(r, STORE_WRITE);
        }
        snap_index_wait(&req);
        store_findex_free(req.files);    /* NULL when the snapshot took it */
        if (snap) {
            json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "snapshot", snap->id, "tenant", snap->tenant,
                                  "sandbox", snap->sandbox, "logical_bytes", (json_int_t)snap->logical_bytes,
                                  "new_bytes", (json_int_t)snap->new_bytes, "new_chunks",
                                  (json_int_t)snap->new_chunks, "seconds", secs() - t0);
            if (j && snap->files) json_object_set_new(j, "files", json_integer((json_int_t)snap->files->n));
            if (j && req.warning[0]) json_object_set_new(j, "warning", json_string(req.warning));
            api_metrics_add("ingested_bytes", snap->logical_bytes);
            api_metrics_add("snapshots_created", 1);
            api_ok(r, 201, j);
            store_snapshot_free(snap);
        }
    }
    snap_policy_free(pol);
    free(classes);
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0) close(fds[i]);
}

/* Loads the {id} (an id or SANDBOX@latest) the caller may see; NULL after api_fail. */
store_snapshot *api_load_snapshot(api_req *r, store_t *s)
{
    store_snapshot *snap = NULL;
    store_err e;
    int rc = restore_resolve(s, r->param, &snap, &e);
    if (rc == -EINVAL || rc == -ENOENT) {
        api_fail(r, 404, "not_found", "no snapshot %s", r->param);
        return NULL;
    }
    if (rc) {
        api_fail_store(r, rc, &e);
        return NULL;
    }
    if (api_tenant_ok(r, snap->tenant, "snapshot")) {
        store_snapshot_free(snap);
        return NULL;
    }
    return snap;
}

/* GET's answer: the store's one encoder of a snapshot (as in snapshot_list and `cairn
 * snapshots --json`), and whether it has a file index. */
static json_t *snapshot_json(const store_snapshot *snap)
{
    json_t *j = store_snapshot_json(snap);
    if (j) json_object_set_new(j, "file_index", json_boolean(snap->files_hash[0] != 0));
    return j;
}

void r_snapshot_get(api_req *r)
{
    store_t *s = api_store(r, API_VIEW);
    if (!s) return;
    /* From the view's cache when it has the answer: loading the manifest reads and decodes
     * the whole recipe (a page id per 4 KiB), which the answer does not show. */
    char id[STORE_SNAPID_LEN], key[STORE_SNAPID_LEN + 2], tenant[STORE_NAME_MAX + 1];
    store_err e;
    json_t *j = NULL;
    if (r->view && restore_resolve_id(s, r->param, id, &e) == 0) {
        snprintf(key, sizeof key, "s:%s", id);
        j = api_view_cached(r->view, key, tenant);
    }
    if (j) {
        api_store_done(r, API_VIEW);
        if (api_tenant_ok(r, tenant, "snapshot")) json_decref(j);
        else api_ok(r, 200, j);
        return;
    }
    store_snapshot *snap = api_load_snapshot(r, s);
    if (snap) j = snapshot_json(snap);
    if (j && r->view) {
        snprintf(key, sizeof key, "s:%s", snap->id);
        api_view_keep(r->view, key, snap->tenant, j);
    }
    api_store_done(r, API_VIEW);
    if (!snap) return;
    if (j) api_ok(r, 200, j);
    else api_fail(r, 500, "internal", "out of memory");
    store_snapshot_free(snap);
}

void r_snapshot_restore(api_req *r)
{
    const char *out = NULL;
    if (api_body_str(r, "out_dir", 1, &out)) return;
    const api_config *cfg = api_cfg(r);
    char *real = NULL, *name = NULL;
    int dirfd = -1;
    store_err e;
    /* The out folder's parent is opened once, beneath its root, and the restore goes in by
     * that descriptor (paths.c): whatever is renamed over the path meanwhile. */
    int rc = api_path_open_output(cfg->restore_roots, cfg->nrestore_roots, out, &dirfd, &name, &real, &e);
    if (rc) return api_fail_store(r, rc, &e);
    store_t *s = api_store(r, STORE_READ);
    if (!s) {
        close(dirfd);
        free(name);
        free(real);
        return;
    }
    store_snapshot *snap = api_load_snapshot(r, s);
    if (snap && snap->kind == STORE_KIND_FILES) {
        api_fail(r, 410, "reclaimed", "snapshot %s was reclaimed: only its important files are kept (rebuild the "
                 "sandbox instead)", snap->id);
    } else if (snap && api_activity(r, s, STORE_EV_RESTORE, snap->sandbox) == 0) {
        double t0 = secs();
        rc = restore_snapshot_at(s, snap->id, dirfd, name, real, NULL, NULL, &e);
        if (rc == -EBUSY) api_fail(r, 409, "conflict", "%s", e.msg);   /* another restore into out_dir */
        else if (rc) api_fail(r, 500, "restore_failed", "%s", e.msg);
        else {
            api_metrics_add("restored_bytes", snap->logical_bytes);
            api_ok(r, 200, json_pack("{s:s, s:s, s:s, s:I, s:f}", "snapshot", snap->id, "sandbox", snap->sandbox,
                                     "out_dir", real, "bytes", (json_int_t)snap->logical_bytes, "seconds",
                                     secs() - t0));
        }
    }
    api_store_done(r, STORE_READ);
    store_snapshot_free(snap);
    close(dirfd);
    free(name);
    free(real);
}

/* The orchestrator counts on a restore, wake or rebuild to keep the sandbox from being
 * reclaimed: an answer of 200 whose activity was not recorded would let gc take the
 * sandbox it just woke. So the activity is recorded first and a failure is a 500 with
 * nothing done; a restore that then fails still counted as activity, which errs on keeping. */
int api_activity(api_req *r, store_t *s, store_event_kind kind, const char *sandbox)
{
    store_err e;
    if (gc_event(s, kind, sandbox, STORE_TIER_NONE, store_now_ms(), &e) == 0) return 0;
    fprintf(stderr, "cairn serve: rid=%s: activity of %s not recorded: %s\n", r->rid, sandbox, e.msg);
    api_fail(r, 500, "activity_failed", "the activity of sandbox %s could not be recorded, so nothing was done "
             "(it would not count against retention): %s", sandbox, e.msg);
    return -1;
}

static void pin(api_req *r, store_event_kind kind)
{
    store_t *s = api_store(r, STORE_READ);
    if (!s) return;
    store_snapshot *snap = api_load_snapshot(r, s);
    store_err e;
    int64_t at = store_now_ms();
    int rc = snap ? gc_event(s, kind, snap->id, STORE_TIER_NONE, at, &e) : 0;
    api_store_done(r, STORE_READ);
    if (snap && rc) api_fail_store(r, rc, &e);
    else if (snap) {
        char when[32];
        store_rfc3339(at, when);
        api_ok(r, 200, json_pack("{s:s, s:s, s:s, s:s}", "event", store_event_kind_name(kind), "snapshot", snap->id, "sandbox",
                                 snap->sandbox, "at", when));
    }
    store_snapshot_free(snap);
}

void r_snapshot_pin(api_req *r) { pin(r, STORE_EV_PIN); }
void r_snapshot_unpin(api_req *r) { pin(r, STORE_EV_UNPIN); }
