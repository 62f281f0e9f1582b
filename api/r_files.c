/* Support reads of a snapshot's files (audited, with the token's name as the actor) and
 * the share token's view: the artifact files of the sandbox's latest snapshot only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/routes.h"
#include "restore/restore.h"

typedef struct {
    store_t *s;
    store_snapshot *snap;
    store_findex *fi;
} files_ctx;

static void ctx_free(api_req *r, files_ctx *c)
{
    store_findex_free(c->fi);
    store_snapshot_free(c->snap);
    if (c->s) api_store_done(r, STORE_READ);
}

/* A share's failures name nothing of the store (snapshot ids, paths): the details go to
 * the server log under the request id, the holder of the link gets the id only. */
static void share_fail(api_req *r, int status, const char *why)
{
    fprintf(stderr, "cairn serve: rid=%s: share of %s/%s: %s\n", r->rid, r->tok.tenant, r->tok.sandbox, why);
    if (status == 404) api_fail(r, 404, "not_found", "not found (request %s)", r->rid);
    else api_fail(r, 500, "internal", "internal error (request %s)", r->rid);
}

/* A share is bound to its tenant and to the sandbox as it was when the share was made: a
 * sandbox of that name now owned by another tenant, deleted, or deleted since (and made
 * again under the same name) is gone for the share. The delete is ordered by snapshot ids
 * (commit order) when the share recorded one, and by the wall clock in any case, so a
 * stepped clock can only revoke a share, never revive one. 0, or -1 after share_fail. */
static int share_live(api_req *r, store_t *s)
{
    gc_sandbox *v = NULL;
    size_t n = 0, i = 0;
    store_err e;
    int rc = api_sandboxes(r, s, NULL, &v, &n, &e);
    if (rc) {
        share_fail(r, 500, e.msg);
        return -1;
    }
    while (i < n && strcmp(v[i].sandbox, r->tok.sandbox)) i++;
    const char *why = i == n                                ? "no such sandbox"
                      : strcmp(v[i].tenant, r->tok.tenant)  ? "the sandbox belongs to another tenant"
                      : v[i].state == GC_DELETED            ? "the sandbox is deleted"
                      : v[i].delete_ms && v[i].delete_ms >= r->tok.created_ms ? "the sandbox was deleted after the share was made"
                      : r->tok.at[0] && v[i].delete_after[0] && strcmp(v[i].delete_after, r->tok.at) >= 0
                          ? "the sandbox was deleted after the share was made"
                          : NULL;
    free(v);
    if (why) share_fail(r, 404, why);
    return why ? -1 : 0;
}

/* Opens the store, the snapshot (the {id}, or the shared sandbox's latest) and its file
 * index; -1 after api_fail. */
static int open_files(api_req *r, files_ctx *c, int shared)
{
    memset(c, 0, sizeof *c);
    if (!(c->s = api_store(r, STORE_READ))) {
        if (shared) share_fail(r, 500, r->msg);
        return -1;
    }
    store_err e;
    int rc = 0;
    if (shared) {
        char id[STORE_SNAPID_LEN];
        if (share_live(r, c->s)) rc = -1;
        else if ((rc = store_snapshot_latest(c->s, r->tok.sandbox, id, &e)) ||
                 (rc = store_snapshot_load(c->s, id, &c->snap, &e)))
            share_fail(r, rc == -ENOENT ? 404 : 500, e.msg);
        else if (strcmp(c->snap->tenant, r->tok.tenant)) {
            share_fail(r, 404, "the newest snapshot belongs to another tenant");
            rc = -1;
        }
    } else if (!(c->snap = api_load_snapshot(r, c->s))) {
        rc = -1;
    }
    if (!rc && (rc = store_findex_load(c->s, c->snap, &c->fi, &e))) {
        if (shared) share_fail(r, rc == -ENOENT ? 404 : 500, rc == -ENOENT ? "the snapshot has no file index" : e.msg);
        else if (rc == -ENOENT) api_fail(r, 404, "no_file_index", "snapshot %s has no file index", c->snap->id);
        else api_fail_store(r, rc, &e);
    }
    if (rc) ctx_free(r, c);
    return rc ? -1 : 0;
}

/* reason: why an admin opens a secret (NULL for other reads); it goes into the record. */
static int audit_why(api_req *r, files_ctx *c, const char *cmd, const char *path, const char *reason)
{
    store_err e;
    if (restore_audit_reason(c->s, cmd, api_actor(r), c->snap, &path, 1, reason != NULL, NULL, reason, &e) == 0)
        return 0;
    if (r->tok.role == API_ROLE_SHARE) share_fail(r, 500, e.msg);
    else api_fail(r, 500, "audit_failed", "the read was not done: %s", e.msg);
    return -1;
}

static int audit(api_req *r, files_ctx *c, const char *cmd, const char *path)
{
    return audit_why(r, c, cmd, path, NULL);
}

/* The reason an admin gives to open a secret: 4 to 500 bytes of text with no control
 * character (it is shown in the audit log and the console). -1 after api_fail. */
static int secret_reason(api_req *r, const char *norm, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    int ctl = 0;
    for (size_t i = 0; i < n; i++) ctl |= (unsigned char)reason[i] < 0x20 || reason[i] == 0x7f;
    if (r->tok.role != API_ROLE_ADMIN)
        api_fail(r, 403, "secret", "%s is a secret: only an admin may open one, with a reason", norm);
    else if (!reason)
        api_fail(r, 403, "secret", "%s is a secret: an admin opens one with reason=WHY, which is audited", norm);
    else if (ctl)
        api_fail(r, 400, "invalid", "the reason holds a control character");
    else if (n < 4 || n > 500)
        api_fail(r, 400, "invalid", "the reason is 4 to 500 bytes");
    else
        return 0;
    return -1;
}

static int add_entry(void *arg, const store_fentry *f)
{
    json_t *o = restore_entry_json(f);
    return !o || json_array_append_new(arg, o) ? -ENOMEM : 0;
}

static json_t *listing(const files_ctx *c, json_t *entries)
{
    json_t *j = json_pack("{s:s, s:s, s:o}", "snapshot", c->snap->id, "sandbox", c->snap->sandbox, "entries", entries);
    if (j && c->fi->warning) json_object_set_new(j, "warning", json_string(c->fi->warning));
    return j;
}

void r_snapshot_files(api_req *r)
{
    char *path = api_query(r, "path"), *rec = api_query(r, "recursive");
    int recursive = rec && (!strcmp(rec, "1") || !strcmp(rec, "true"));
    if (rec && !recursive && strcmp(rec, "0") && strcmp(rec, "false")) {
        api_fail(r, 400, "invalid", "recursive is 1 or 0");
    } else {
        files_ctx c;
        char *norm = restore_norm_path(path ? path : "/");
        if (!norm) api_fail(r, 500, "internal", "out of memory");
        else if (open_files(r, &c, 0) == 0) {
            store_err e;
            json_t *list = json_array();
            if (!store_findex_get(c.fi, norm)) api_fail(r, 404, "no_such_path", "%s: not in snapshot %s", norm, c.snap->id);
            else if (audit(r, &c, "ls", norm) == 0) {
                int rc = list ? restore_list(c.fi, norm, recursive, add_entry, list, &e) : -ENOMEM;
                if (rc) api_fail(r, 500, "internal", "listing failed (%d)", rc);
                else {
                    api_ok(r, 200, listing(&c, list));
                    list = NULL;
                }
            }
            json_decref(list);
            ctx_free(r, &c);
        }
        free(norm);
    }
    free(path);
    free(rec);
}

/* Streams one regular file's bytes (after the checks: nothing is sent before them). */
static void send_file(api_req *r, files_ctx *c, const store_fentry *data)
{
    if (api_stream_begin(r, "application/octet-stream")) return;
    store_err e;
    r->stream_rc = restore_cat(c->s, c->snap, c->fi, data, r->pipe_wr, &e);
    if (r->stream_rc) snprintf(r->msg, sizeof r->msg, "%s", e.msg);
}

void r_snapshot_content(api_req *r)
{
    char *path = api_query(r, "path"), *reason = api_query(r, "reason");
    char *norm = path ? restore_norm_path(path) : NULL;
    files_ctx c;
    if (!path) api_fail(r, 400, "missing_field", "the query needs path=P");
    else if (!norm) api_fail(r, 500, "internal", "out of memory");
    else if (open_files(r, &c, 0) == 0) {
        const store_fentry *f = store_findex_get(c.fi, norm), *data = f ? restore_file_data(c.fi, f) : NULL;
        if (!f) api_fail(r, 404, "no_such_path", "%s: not in snapshot %s", norm, c.snap->id);
        else if (!data) api_fail(r, 400, "not_a_file", "%s is a %s, not a regular file", norm, restore_type_name(f->type));
        else if (restore_cat_is_secret(c.fi, f)) {
            /* The record, with its reason, is written before a byte of the secret is sent. */
            if (secret_reason(r, norm, reason) == 0 && audit_why(r, &c, "cat", norm, reason) == 0)
                send_file(r, &c, data);
        } else if (audit(r, &c, "cat", norm) == 0) send_file(r, &c, data);
        ctx_free(r, &c);
    }
    free(norm);
    free(path);
    free(reason);
}

void r_snapshot_archive(api_req *r)
{
    char *path = api_query(r, "path");
    char *norm = restore_norm_path(path ? path : "/");
    files_ctx c;
    if (!norm) api_fail(r, 500, "internal", "out of memory");
    else if (open_files(r, &c, 0) == 0) {
        const store_fentry *f = store_findex_get(c.fi, norm);
        if (!f) api_fail(r, 404, "no_such_path", "%s: not in snapshot %s", norm, c.snap->id);
        else if (restore_is_secret(c.fi, f)) api_fail(r, 403, "secret", "%s is a secret", norm);
        else if (audit(r, &c, "extract", norm) == 0 && api_stream_begin(r, "application/x-tar") == 0) {
            restore_extract_stats st = {0};
            store_err e;
            const char *paths[] = {norm};
            int rc = restore_extract_tar(c.s, c.snap, c.fi, paths, 1, 0, 0, r->pipe_wr, &st, &e);
            /* Entries refused as hostile are left out of a tar that is otherwise whole. */
            if (rc == -EPERM && !st.failed) rc = 0;
            r->stream_rc = rc;
            if (rc) snprintf(r->msg, sizeof r->msg, "%s", e.msg);
        }
        ctx_free(r, &c);
    }
    free(norm);
    free(path);
}

/* A share sees an entry only when it and the file holding its bytes are artifacts. */
static int shared_visible(const store_findex *fi, const store_fentry *f)
{
    const store_fentry *d = restore_file_data(fi, f);
    return d && f->cls == STORE_CLASS_ARTIFACT && d->cls == STORE_CLASS_ARTIFACT && !restore_cat_is_secret(fi, f);
}

void r_shared_files(api_req *r)
{
    files_ctx c;
    if (open_files(r, &c, 1)) return;
    json_t *list = json_array();
    int bad = !list;
    for (size_t i = 0; !bad && i < c.fi->n; i++)
        if (shared_visible(c.fi, &c.fi->e[i])) bad = add_entry(list, &c.fi->e[i]);
    if (bad) {
        json_decref(list);
        api_fail(r, 500, "internal", "out of memory");
    } else if (audit(r, &c, "shared-ls", "/") == 0) {
        json_t *j = json_pack("{s:s, s:o}", "sandbox", c.snap->sandbox, "entries", list);
        list = NULL;
        api_ok(r, 200, j);
    }
    json_decref(list);
    ctx_free(r, &c);
}

void r_shared_content(api_req *r)
{
    char *path = api_query(r, "path");
    char *norm = path ? restore_norm_path(path) : NULL;
    files_ctx c;
    if (!path) api_fail(r, 400, "missing_field", "the query needs path=P");
    else if (!norm) api_fail(r, 500, "internal", "out of memory");
    else if (open_files(r, &c, 1) == 0) {
        const store_fentry *f = store_findex_get(c.fi, norm);
        /* Anything but a shared artifact is "not found": a share learns nothing else exists. */
        if (!f || !shared_visible(c.fi, f)) api_fail(r, 404, "not_found", "no shared file %s", norm);
        else if (audit(r, &c, "shared-cat", norm) == 0) send_file(r, &c, restore_file_data(c.fi, f));
        ctx_free(r, &c);
    }
    free(norm);
    free(path);
}
