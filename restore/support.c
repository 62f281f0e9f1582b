/* Support reads shared by the CLI and the API: naming a snapshot, listing a folder of its
 * file index, the JSON of an entry, the audit record, and rebuilding a sandbox by name. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "restore/restore.h"
#include "store/toolbox.h"

int restore_resolve(store_t *s, const char *spec, store_snapshot **snap, store_err *e)
{
    *snap = NULL;
    char id[STORE_SNAPID_LEN];
    int rc = restore_resolve_id(s, spec, id, e);
    return rc ? rc : store_snapshot_load(s, id, snap, e);
}

int restore_resolve_id(store_t *s, const char *spec, char id[STORE_SNAPID_LEN], store_err *e)
{
    const char *at = strrchr(spec, '@');
    if (at && !strcmp(at, "@latest")) {
        char sb[STORE_NAME_MAX + 1];
        size_t n = (size_t)(at - spec);
        if (n > STORE_NAME_MAX) return store_errf(e, -EINVAL, "sandbox name too long");
        memcpy(sb, spec, n);
        sb[n] = 0;
        if (store_name_valid(sb)) return store_errf(e, -EINVAL, "'%s' is not a sandbox name", sb);
        return store_snapshot_latest(s, sb, id, e);
    }
    if (store_snapid_valid(spec))
        return store_errf(e, -ENOENT, "'%s' is not a snapshot id (20 hex digits) or SANDBOX@latest", spec);
    memcpy(id, spec, STORE_SNAPID_LEN - 1);
    id[STORE_SNAPID_LEN - 1] = 0;
    return 0;
}

int restore_json_path(json_t *o, const char *key, const char *p)
{
    size_t n = strlen(p);
    json_t *v = json_stringn(p, n);
    if (v) return json_object_set_new(o, key, v) ? -ENOMEM : 0;
    char *lossy = malloc(3 * n + 1), *hex = malloc(2 * n + 1);
    if (!lossy || !hex) {
        free(lossy);
        free(hex);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x80) {
            lossy[k++] = (char)c;
            continue;
        }
        /* Keep a well-formed multi-byte sequence, replace anything else. */
        size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len && i + len <= n;
        for (size_t j = 1; ok && j < len; j++) ok = ((unsigned char)p[i + j] & 0xc0) == 0x80;
        json_t *t = ok ? json_stringn(p + i, len) : NULL;
        if (t) {
            memcpy(lossy + k, p + i, len);
            k += len;
            i += len - 1;
            json_decref(t);
        } else {
            memcpy(lossy + k, "\xef\xbf\xbd", 3);
            k += 3;
        }
    }
    for (size_t i = 0; i < n; i++) {
        static const char hx[] = "0123456789abcdef";
        hex[2 * i] = hx[(unsigned char)p[i] >> 4];
        hex[2 * i + 1] = hx[(unsigned char)p[i] & 15];
    }
    hex[2 * n] = 0;
    char hk[64];
    snprintf(hk, sizeof hk, "%s_hex", key);
    int rc = json_object_set_new(o, key, json_stringn(lossy, k)) || json_object_set_new(o, hk, json_string(hex));
    free(lossy);
    free(hex);
    return rc ? -ENOMEM : 0;
}

const char *restore_type_name(uint8_t t)
{
    static const char *n[] = {"?", "file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "socket"};
    return t <= STORE_FT_SOCK ? n[t] : "?";
}

json_t *restore_entry_json(const store_fentry *f)
{
    json_t *o = json_object();
    if (!o) return NULL;
    int bad = restore_json_path(o, "path", f->path);
    bad |= json_object_set_new(o, "type", json_string(restore_type_name(f->type)));
    bad |= json_object_set_new(o, "size", json_integer((json_int_t)f->size));
    bad |= json_object_set_new(o, "class", json_string(store_class_name((store_class)f->cls)));
    bad |= json_object_set_new(o, "mode", json_integer(f->mode & 07777));
    bad |= json_object_set_new(o, "uid", json_integer(f->uid));
    bad |= json_object_set_new(o, "gid", json_integer(f->gid));
    bad |= json_object_set_new(o, "mtime", json_real((double)f->mtime_ns / 1e9));
    if (f->target) bad |= restore_json_path(o, "target", f->target);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *restore_norm_path(const char *in)
{
    char *path = malloc(strlen(in) + 2);
    if (!path) return NULL;
    size_t k = 0;
    if (in[0] != '/') path[k++] = '/';
    for (const char *q = in; *q; q++)
        if (*q != '/' || !k || path[k - 1] != '/') path[k++] = *q;
    if (k > 1 && path[k - 1] == '/') k--;
    path[k] = 0;
    return path;
}

int restore_list(const store_findex *fi, const char *path, int recursive,
                 int (*fn)(void *arg, const store_fentry *f), void *arg, store_err *e)
{
    char *p = restore_norm_path(path);
    if (!p) return store_errf(e, -ENOMEM, "out of memory");
    size_t pl = strlen(p);
    const store_fentry *top = store_findex_get(fi, p);
    int rc = 0;
    if (!top) rc = store_errf(e, -ENOENT, "%s: no such path in the snapshot", path);
    else if (top->type != STORE_FT_DIR) rc = fn(arg, top);
    else {
        /* Children of p: entries under "p/" ("/" itself for the root). */
        char *pre = malloc(pl + 2);
        size_t prl = pl == 1 ? 1 : pl + 1;
        if (!pre) rc = store_errf(e, -ENOMEM, "out of memory");
        else {
            memcpy(pre, p, pl);
            pre[pl] = '/';
            pre[prl] = 0;
        }
        for (size_t i = pre ? store_findex_lower_bound(fi, pre, prl) : fi->n; !rc && i < fi->n; i++) {
            const store_fentry *f = &fi->e[i];
            if (f->path_len < prl || memcmp(f->path, pre, prl)) break;
            if (f->path_len == prl) continue;
            if (!recursive && memchr(f->path + prl, '/', f->path_len - prl)) continue;
            rc = fn(arg, f);
        }
        free(pre);
    }
    free(p);
    return rc;
}

const store_fentry *restore_file_data(const store_findex *fi, const store_fentry *f)
{
    if (f->type == STORE_FT_FILE) return f;
    if (f->type != STORE_FT_HARDLINK) return NULL;
    const store_fentry *t = f->target ? store_findex_get(fi, f->target) : NULL;
    return t && t->type == STORE_FT_FILE ? t : NULL;
}

int restore_audit(store_t *s, const char *cmd, const char *actor, const store_snapshot *snap,
                  const char *const *paths, size_t npaths, int include_secrets, const char *out,
                  store_err *e)
{
    return restore_audit_reason(s, cmd, actor, snap, paths, npaths, include_secrets, out, NULL, e);
}

int restore_audit_reason(store_t *s, const char *cmd, const char *actor, const store_snapshot *snap,
                         const char *const *paths, size_t npaths, int include_secrets, const char *out,
                         const char *reason, store_err *e)
{
    char when[32];
    store_rfc3339(store_now_ms(), when);
    json_t *jp = json_array();
    int bad = !jp;
    for (size_t i = 0; !bad && i < npaths; i++) {
        json_t *o = json_object();
        bad = !o || restore_json_path(o, "p", paths[i]) || json_array_append(jp, json_object_get(o, "p"));
        json_decref(o);
    }
    json_t *j = bad ? NULL : json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:b}", "time", when, "actor", actor,
                                       "command", cmd, "tenant", snap->tenant, "sandbox", snap->sandbox,
                                       "snapshot", snap->id, "paths", jp, "include_secrets", include_secrets);
    json_decref(jp);
    if (j && reason && restore_json_path(j, "reason", reason)) {
        json_decref(j);
        j = NULL;
    }
    if (j && out && restore_json_path(j, "out", out)) {
        json_decref(j);
        j = NULL;
    }
    char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    int rc = line ? store_audit_append(s, line, e) : store_errf(e, -ENOMEM, "out of memory");
    free(line);
    return rc;
}

int restore_rebuild_sandbox(store_t *s, const char *sandbox, const char *tmpl, const char *out,
                            restore_rebuild_stats *st, store_snapshot **snap_out,
                            store_snapshot **tmpl_out, store_err *e)
{
    store_snapshot *snap = NULL, *ts = NULL;
    char id[STORE_SNAPID_LEN], tsb[STORE_NAME_MAX + 1];
    *snap_out = *tmpl_out = NULL;
    int rc = store_snapshot_latest(s, sandbox, id, e);
    if (!rc) rc = store_snapshot_load(s, id, &snap, e);
    if (!rc && !tmpl && !snap->template_name[0])
        rc = store_errf(e, -EINVAL, "sandbox %s has no template recorded: name one", sandbox);
    if (!rc) {
        const char *name = tmpl ? tmpl : snap->template_name;
        if (store_template_sandbox(name, tsb))
            rc = store_errf(e, -EINVAL, "'%s' is not a template name", name);
    }
    if (!rc) {
        char tid[STORE_SNAPID_LEN];
        rc = store_snapshot_latest(s, tsb, tid, e);
        if (rc == -ENOENT)
            store_errf(e, rc, "no template '%s' (add it with `cairn template add`)",
                       store_template_name(tsb));
        if (!rc) rc = store_snapshot_load(s, tid, &ts, e);
    }
    if (!rc) rc = restore_rebuild(s, ts, snap, out, st, e);
    if (rc) {
        store_snapshot_free(snap);
        store_snapshot_free(ts);
        return rc;
    }
    *snap_out = snap;
    *tmpl_out = ts;
    return 0;
}
