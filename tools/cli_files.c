/* Support and rebuild commands: ls, cat, extract (audited), audit, template, rebuild,
 * policy. Names starting with '_' are Cairn's own (templates live in sandbox _tpl.NAME of
 * tenant _cairn). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "restore/restore.h"
#include "snapshotter/snapshotter.h"
#include "tools/cli.h"

#define TEMPLATE_TENANT "_cairn"
#define TEMPLATE_PREFIX "_tpl."

/* ID, or SANDBOX@latest. */
static int resolve_snapshot(store_t *s, const char *spec, store_snapshot **snap, store_err *e)
{
    char id[STORE_SNAPID_LEN];
    const char *at = strrchr(spec, '@');
    if (at && !strcmp(at, "@latest")) {
        char sb[STORE_NAME_MAX + 1];
        size_t n = (size_t)(at - spec);
        if (n > STORE_NAME_MAX) return store_errf(e, -EINVAL, "sandbox name too long");
        memcpy(sb, spec, n);
        sb[n] = 0;
        if (store_name_valid(sb)) return store_errf(e, -EINVAL, "'%s' is not a sandbox name", sb);
        int rc = store_snapshot_latest(s, sb, id, e);
        if (rc) return rc;
        spec = id;
    }
    return store_snapshot_load(s, spec, snap, e);
}

/* Printable form of raw path bytes: anything outside printable ASCII as \xNN. */
static void put_path(FILE *f, const char *p)
{
    for (const unsigned char *c = (const unsigned char *)p; *c; c++) {
        if (*c >= 0x20 && *c < 0x7f && *c != '\\') fputc(*c, f);
        else fprintf(f, "\\x%02x", *c);
    }
}

/* A JSON string for raw bytes: as is when valid UTF-8; else with U+FFFD for bad bytes and
 * the exact bytes in "<key>_hex". */
static void set_path(json_t *o, const char *key, const char *p)
{
    size_t n = strlen(p);
    json_t *v = json_stringn(p, n);
    if (v) {
        json_object_set_new(o, key, v);
        return;
    }
    char *lossy = malloc(3 * n + 1), *hex = malloc(2 * n + 1);
    if (!lossy || !hex) {
        free(lossy);
        free(hex);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x80) lossy[k++] = (char)c;
        else {
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
        snprintf(hex + 2 * i, 3, "%02x", c);
    }
    for (size_t i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", (unsigned char)p[i]);
    json_object_set_new(o, key, json_stringn(lossy, k));
    char hk[64];
    snprintf(hk, sizeof hk, "%s_hex", key);
    json_object_set_new(o, hk, json_string(hex));
    free(lossy);
    free(hex);
}

static const char *type_name(uint8_t t)
{
    static const char *n[] = {"?", "file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "socket"};
    return t <= STORE_FT_SOCK ? n[t] : "?";
}

static const char *actor_of(const char *flag)
{
    const char *a = flag ? flag : getenv("CAIRN_ACTOR");
    return a && *a ? a : NULL;
}

/* Records the read before it happens; a read whose record cannot be written is refused. */
static int audit(store_t *s, const char *cmd, const char *actor, const store_snapshot *snap,
                 const char *const *paths, size_t npaths, int include_secrets, const char *out)
{
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *jp = json_array();
    for (size_t i = 0; i < npaths; i++) {
        json_t *o = json_object();
        set_path(o, "p", paths[i]);
        json_array_append(jp, json_object_get(o, "p"));
        json_decref(o);
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:b}", "time", when, "actor", actor,
                          "command", cmd, "tenant", snap->tenant, "sandbox", snap->sandbox,
                          "snapshot", snap->id, "paths", jp, "include_secrets", include_secrets);
    if (out) set_path(j, "out", out);
    char *line = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    store_err e;
    int rc = line ? store_audit_append(s, line, &e) : store_errf(&e, -ENOMEM, "out of memory");
    free(line);
    if (rc) cli_fail(EXIT_FAIL, cmd, "%s", e.msg);
    return rc;
}

/* The checks ls, cat and extract share: the snapshot is named and the reader is known
 * (support reads are audited). Frees pos->v on failure. */
static int support_preamble(const char *cmd, const char *spec, const char **actor, cli_args *pos,
                            int paths_ok, const char *paths_rule)
{
    const cli_command *cc = cli_find(cmd);
    int rc = 0;
    if (!spec || !paths_ok) rc = cli_usage(cc, "--snapshot and %s", paths_rule);
    else if (!(*actor = actor_of(*actor)))
        rc = cli_usage(cc, "support reads are audited: give --actor NAME or set CAIRN_ACTOR");
    if (rc) free(pos->v);
    return rc;
}

/* Opens the store and the snapshot with its file index; prints errors. */
static int open_files(const char *cmd, const cli_common *c, const char *spec, store_t **s,
                      store_snapshot **snap, store_findex **fi)
{
    *s = cli_open(cmd, c, STORE_READ);
    if (!*s) return EXIT_FAIL;
    store_err e;
    if (resolve_snapshot(*s, spec, snap, &e) || store_findex_load(*s, *snap, fi, &e)) {
        store_snapshot_free(*snap);
        store_close(*s);
        return cli_fail(EXIT_FAIL, cmd, "%s", e.msg);
    }
    return 0;
}

/* First index of an entry whose path starts with prefix (entries are sorted). */
static size_t lower_bound(const store_findex *fi, const char *prefix, size_t pl)
{
    size_t lo = 0, hi = fi->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const store_fentry *f = &fi->e[mid];
        int c = memcmp(f->path, prefix, f->path_len < pl ? f->path_len : pl);
        if (c < 0 || (c == 0 && f->path_len < pl)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static json_t *entry_json(const store_fentry *f)
{
    json_t *o = json_object();
    set_path(o, "path", f->path);
    json_object_set_new(o, "type", json_string(type_name(f->type)));
    json_object_set_new(o, "size", json_integer((json_int_t)f->size));
    json_object_set_new(o, "class", json_string(store_class_name((store_class)f->cls)));
    json_object_set_new(o, "mode", json_integer(f->mode & 07777));
    json_object_set_new(o, "uid", json_integer(f->uid));
    json_object_set_new(o, "gid", json_integer(f->gid));
    json_object_set_new(o, "mtime", json_real((double)f->mtime_ns / 1e9));
    if (f->target) set_path(o, "target", f->target);
    return o;
}

static void entry_line(const store_fentry *f)
{
    char when[32];
    time_t t = (time_t)(f->mtime_ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
    printf("%-8s %04o %5u %5u %12llu %s %-8s ", type_name(f->type), f->mode & 07777, f->uid, f->gid,
           (unsigned long long)f->size, when, store_class_name((store_class)f->cls));
    put_path(stdout, f->path);
    if (f->target) {
        fputs(f->type == STORE_FT_SYMLINK ? " -> " : " => ", stdout);
        put_path(stdout, f->target);
    }
    fputc('\n', stdout);
}

int cmd_ls(int argc, char **argv)
{
    const char *spec = NULL, *actor = NULL;
    int recursive = 0;
    cli_opt opts[] = {{"snapshot", &spec, NULL}, {"actor", &actor, NULL}, {"recursive", NULL, &recursive},
                      {NULL, NULL, NULL}};
    cli_common c;
    cli_args pos;
    int rc = cli_parse("ls", argc, argv, opts, &c, &pos);
    if (rc) return rc;
    if ((rc = support_preamble("ls", spec, &actor, &pos, pos.n <= 1, "at most one PATH"))) return rc;
    const char *path = pos.n ? pos.v[0] : "/";
    store_t *s;
    store_snapshot *snap = NULL;
    store_findex *fi = NULL;
    if ((rc = open_files("ls", &c, spec, &s, &snap, &fi))) {
        free(pos.v);
        return rc;
    }
    size_t pl = strlen(path);
    while (pl > 1 && path[pl - 1] == '/') pl--;
    char *p = strndup(path, pl);
    const store_fentry *top = p ? store_findex_get(fi, p) : NULL;
    if (!top) rc = cli_fail(EXIT_FAIL, "ls", "%s: no such path in snapshot %s", path, snap->id);
    else rc = audit(s, "ls", actor, snap, (const char *const *)&p, 1, 0, NULL) ? EXIT_FAIL : 0;
    json_t *list = json_array();
    if (!rc) {
        if (fi->warning) fprintf(stderr, "cairn ls: warning: the file index is partial: %s\n", fi->warning);
        if (top->type != STORE_FT_DIR) {
            if (c.json) json_array_append_new(list, entry_json(top));
            else entry_line(top);
        } else {
            /* Children of p: entries under "p/" ("/" itself for the root). */
            char *pre = malloc(pl + 2);
            size_t prl = pl == 1 ? 1 : pl + 1;
            memcpy(pre, p, pl);
            pre[pl] = '/';
            pre[prl] = 0;
            for (size_t i = lower_bound(fi, pre, prl); i < fi->n; i++) {
                const store_fentry *f = &fi->e[i];
                if (f->path_len < prl || memcmp(f->path, pre, prl)) break;
                if (f->path_len == prl) continue;
                if (!recursive && memchr(f->path + prl, '/', f->path_len - prl)) continue;
                if (c.json) json_array_append_new(list, entry_json(f));
                else entry_line(f);
            }
            free(pre);
        }
        if (c.json) {
            json_t *j = json_pack("{s:s, s:s, s:O}", "snapshot", snap->id, "sandbox", snap->sandbox, "entries", list);
            if (fi->warning) json_object_set_new(j, "warning", json_string(fi->warning));
            cli_print_json(j);
        }
    }
    json_decref(list);
    free(p);
    free(pos.v);
    store_findex_free(fi);
    store_snapshot_free(snap);
    store_close(s);
    return rc;
}

/* A hard link's bytes and class are its target's. */
static const store_fentry *resolve_link(const store_findex *fi, const store_fentry *f)
{
    if (f->type != STORE_FT_HARDLINK) return f;
    const store_fentry *t = f->target ? store_findex_get(fi, f->target) : NULL;
    return t && t->type == STORE_FT_FILE ? t : NULL;
}

int cmd_cat(int argc, char **argv)
{
    const char *spec = NULL, *actor = NULL;
    int secrets = 0;
    cli_opt opts[] = {{"snapshot", &spec, NULL}, {"actor", &actor, NULL},
                      {"include-secrets", NULL, &secrets}, {NULL, NULL, NULL}};
    cli_common c;
    cli_args pos;
    int rc = cli_parse("cat", argc, argv, opts, &c, &pos);
    if (rc) return rc;
    if ((rc = support_preamble("cat", spec, &actor, &pos, pos.n == 1, "exactly one PATH"))) return rc;
    store_t *s;
    store_snapshot *snap = NULL;
    store_findex *fi = NULL;
    if ((rc = open_files("cat", &c, spec, &s, &snap, &fi))) {
        free(pos.v);
        return rc;
    }
    /* "/a//b/" names /a/b, as in extract. */
    char *path = malloc(strlen(pos.v[0]) + 2);
    size_t k = 0;
    for (const char *q = pos.v[0]; path && *q; q++)
        if (*q != '/' || (k && path[k - 1] != '/') || !k) path[k++] = *q;
    if (path && k > 1 && path[k - 1] == '/') k--;
    if (path) path[k] = 0;
    const store_fentry *f = path ? store_findex_get(fi, path) : NULL, *data = f ? resolve_link(fi, f) : NULL;
    if (!f) rc = cli_fail(EXIT_FAIL, "cat", "%s: no such path in snapshot %s", pos.v[0], snap->id);
    else if (!data) rc = cli_fail(EXIT_FAIL, "cat", "%s: not a regular file (%s)", path, type_name(f->type));
    else if (!secrets && (restore_is_secret(fi, f) || restore_is_secret(fi, data)))
        rc = cli_fail(EXIT_FAIL, "cat", "%s is a secret: it is not printed without --include-secrets "
                      "(which is audited)", path);
    else if (audit(s, "cat", actor, snap, (const char *const *)&path, 1, secrets, NULL)) rc = EXIT_FAIL;
    else {
        store_err e;
        if (restore_cat(s, snap, fi, data, 1, &e)) rc = cli_fail(EXIT_FAIL, "cat", "%s", e.msg);
    }
    free(path);
    free(pos.v);
    store_findex_free(fi);
    store_snapshot_free(snap);
    store_close(s);
    return rc;
}

/* arg: the command's name. */
static void warn_entry(void *arg, const char *path, const char *why)
{
    fprintf(stderr, "cairn %s: %s: %s\n", (const char *)arg, path, why);
}

static int parse_classes(const char *list, unsigned *mask)
{
    *mask = 0;
    if (!list) return 0;
    char *dup = strdup(list), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int c = store_class_parse(t);
        if (c < 0) rc = -1;
        else *mask |= 1u << c;
    }
    free(dup);
    return rc;
}

int cmd_extract(int argc, char **argv)
{
    const char *spec = NULL, *actor = NULL, *out = NULL, *tar = NULL, *classes = NULL;
    int secrets = 0;
    cli_opt opts[] = {{"snapshot", &spec, NULL}, {"actor", &actor, NULL},   {"out", &out, NULL},
                      {"tar", &tar, NULL},       {"class", &classes, NULL}, {"include-secrets", NULL, &secrets},
                      {NULL, NULL, NULL}};
    cli_common c;
    cli_args pos;
    int rc = cli_parse("extract", argc, argv, opts, &c, &pos);
    if (rc) return rc;
    unsigned mask = 0;
    if ((rc = support_preamble("extract", spec, &actor, &pos, !out != !tar, "one of --out DIR or --tar FILE")))
        return rc;
    if (parse_classes(classes, &mask)) {
        free(pos.v);
        return cli_usage(cli_find("extract"),
                         "--class takes a comma list of artifact, upload, project, secret, cache, temp, runtime");
    }
    store_t *s;
    store_snapshot *snap = NULL;
    store_findex *fi = NULL;
    if ((rc = open_files("extract", &c, spec, &s, &snap, &fi))) {
        free(pos.v);
        return rc;
    }
    static const char *root[] = {"/"};
    const char *const *paths = pos.n ? pos.v : root;
    size_t np = pos.n ? pos.n : 1;
    restore_extract_stats st = {.warn = warn_entry, .warn_arg = "extract"};
    store_err e;
    double t0 = cli_seconds();
    if (audit(s, "extract", actor, snap, paths, np, secrets, out ? out : tar)) {
        rc = EXIT_FAIL;
    } else if (out) {
        rc = restore_extract_dir(s, snap, fi, paths, np, mask, secrets, out, &st, &e);
    } else {
        int fd = strcmp(tar, "-") ? open(tar, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : 1;
        if (fd < 0) rc = store_errf(&e, -errno, "%s: %s", tar, strerror(errno));
        else {
            rc = restore_extract_tar(s, snap, fi, paths, np, mask, secrets, fd, &st, &e);
            if (fd != 1 && close(fd) < 0 && !rc) rc = store_errf(&e, -errno, "%s: %s", tar, strerror(errno));
            if (rc && fd != 1) unlink(tar);
        }
    }
    if (rc < 0) rc = cli_fail(EXIT_FAIL, "extract", "%s", e.msg);
    if (rc == 0 || rc == EXIT_FAIL) {
        char b[32];
        cli_human(st.bytes, b);
        if (c.json)
            cli_print_json(json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "snapshot", snap->id,
                                     "ok", rc == 0, "failed", (json_int_t)st.failed,
                                     "files", (json_int_t)st.files, "dirs", (json_int_t)st.dirs,
                                     "symlinks", (json_int_t)st.symlinks, "bytes", (json_int_t)st.bytes,
                                     "refused", (json_int_t)st.refused,
                                     "secrets_skipped", (json_int_t)st.secrets_skipped,
                                     "specials_skipped", (json_int_t)st.specials, "seconds", cli_seconds() - t0));
        else
            fprintf(stderr, "extracted %llu files, %llu dirs, %llu symlinks (%s) from %s; %llu refused, "
                    "%llu unreadable, %llu secrets skipped\n", (unsigned long long)st.files,
                    (unsigned long long)st.dirs, (unsigned long long)st.symlinks, b, snap->id,
                    (unsigned long long)st.refused, (unsigned long long)st.failed,
                    (unsigned long long)st.secrets_skipped);
    }
    free(pos.v);
    store_findex_free(fi);
    store_snapshot_free(snap);
    store_close(s);
    return rc;
}

typedef struct {
    json_t *list;
    int json;
} audit_ctx;

static int audit_line(void *arg, const char *line)
{
    audit_ctx *a = arg;
    json_t *j = json_loads(line, 0, NULL);
    if (!j) return 0;
    if (a->json) {
        json_array_append_new(a->list, j);
        return 0;
    }
    printf("%s  %-12s %-8s %s/%s %s", json_string_value(json_object_get(j, "time")),
           json_string_value(json_object_get(j, "actor")), json_string_value(json_object_get(j, "command")),
           json_string_value(json_object_get(j, "tenant")), json_string_value(json_object_get(j, "sandbox")),
           json_string_value(json_object_get(j, "snapshot")));
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(j, "paths"), i, p) printf(" %s", json_string_value(p));
    if (json_is_true(json_object_get(j, "include_secrets"))) printf("  [secrets included]");
    printf("\n");
    json_decref(j);
    return 0;
}

int cmd_audit(int argc, char **argv)
{
    cli_common c;
    int rc = cli_parse("audit", argc, argv, NULL, &c, NULL);
    if (rc) return rc;
    store_t *s = cli_open("audit", &c, STORE_READ);
    if (!s) return EXIT_FAIL;
    audit_ctx a = {.list = json_array(), .json = c.json};
    store_err e;
    rc = store_audit_read(s, audit_line, &a, &e);
    store_close(s);
    if (rc) {
        json_decref(a.list);
        return cli_fail(EXIT_FAIL, "audit", "%s", e.msg);
    }
    if (c.json) cli_print_json(json_pack("{s:o}", "entries", a.list));
    else json_decref(a.list);
    return EXIT_OK;
}

int cmd_template(int argc, char **argv)
{
    const cli_command *cc = cli_find("template");
    if (argc < 2 || strcmp(argv[1], "add")) return cli_usage(cc, "the subcommand is `add`");
    const char *name = NULL, *disk = NULL, *mem = NULL, *vms = NULL;
    cli_opt opts[] = {{"name", &name, NULL}, {"disk", &disk, NULL}, {"memory", &mem, NULL},
                      {"vmstate", &vms, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("template", argc - 1, argv + 1, opts, &c, NULL);
    if (rc) return rc;
    if (!name || !disk) return cli_usage(cc, "--name and --disk are required");
    char sandbox[STORE_NAME_MAX + 1];
    if (store_name_valid(name) || strlen(name) + strlen(TEMPLATE_PREFIX) > STORE_NAME_MAX)
        return cli_usage(cc, "bad template name '%s'", name);
    snprintf(sandbox, sizeof sandbox, "%s%s", TEMPLATE_PREFIX, name);
    snap_request req = {.tenant = TEMPLATE_TENANT, .sandbox = sandbox, .tier = "pro",
                        .progress = cli_progress, .progress_arg = "template"};
    const char *names[] = {"memory", "vmstate", "disk"}, *paths[] = {mem, vms, disk};
    for (int i = 0; i < 3; i++)
        if (paths[i]) {
            req.blob_name[req.nblobs] = names[i];
            req.blob_path[req.nblobs++] = paths[i];
        }
    store_t *s = cli_open("template", &c, STORE_WRITE);
    if (!s) return EXIT_FAIL;
    store_snapshot *snap = NULL;
    store_err e;
    rc = snap_ingest(s, &req, &snap, &e);
    store_close(s);
    cli_progress_end();
    if (rc) return cli_fail(EXIT_FAIL, "template", "%s; nothing was stored", e.msg);
    /* The disk materialized once now, so rebuilds copy it instead of restoring it. */
    s = cli_open("template", &c, STORE_READ);
    if (s && restore_template_prepare(s, snap, &e))
        fprintf(stderr, "cairn template: warning: %s (rebuilds will make it)\n", e.msg);
    store_close(s);
    if (c.json)
        cli_print_json(json_pack("{s:s, s:s, s:I, s:I}", "template", name, "snapshot", snap->id,
                                 "logical_bytes", (json_int_t)snap->logical_bytes, "new_bytes",
                                 (json_int_t)snap->new_bytes));
    else printf("%s\n", snap->id);
    store_snapshot_free(snap);
    return EXIT_OK;
}

int cmd_rebuild(int argc, char **argv)
{
    const char *sandbox = NULL, *tmpl = NULL, *out = NULL;
    cli_opt opts[] = {{"sandbox", &sandbox, NULL}, {"template", &tmpl, NULL}, {"out", &out, NULL},
                      {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("rebuild", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    const cli_command *cc = cli_find("rebuild");
    if (!sandbox || !out) return cli_usage(cc, "--sandbox and --out are required");
    double t0 = cli_seconds();
    store_t *s = cli_open("rebuild", &c, STORE_READ);
    if (!s) return EXIT_FAIL;
    store_err e;
    store_snapshot *snap = NULL, *ts = NULL;
    char id[STORE_SNAPID_LEN], tsb[STORE_NAME_MAX + 8];
    rc = store_snapshot_latest(s, sandbox, id, &e);
    if (!rc) rc = store_snapshot_load(s, id, &snap, &e);
    if (!rc && !tmpl && !snap->template_name[0])
        rc = store_errf(&e, -EINVAL, "sandbox %s has no template recorded: pass --template NAME", sandbox);
    if (!rc) {
        snprintf(tsb, sizeof tsb, "%s%s", TEMPLATE_PREFIX, tmpl ? tmpl : snap->template_name);
        char tid[STORE_SNAPID_LEN];
        rc = store_snapshot_latest(s, tsb, tid, &e);
        if (rc == -ENOENT)
            store_errf(&e, rc, "no template '%s' (add it with `cairn template add`)", tsb + strlen(TEMPLATE_PREFIX));
        if (!rc) rc = store_snapshot_load(s, tid, &ts, &e);
    }
    restore_rebuild_stats st = {.warn = warn_entry, .warn_arg = "rebuild"};
    if (!rc) rc = restore_rebuild(s, ts, snap, out, &st, &e);
    if (!rc) cli_activity(s, "rebuild", sandbox);
    store_close(s);
    if (rc) {
        store_snapshot_free(snap);
        store_snapshot_free(ts);
        return cli_fail(EXIT_FAIL, "rebuild", "%s", e.msg);
    }
    double secs = cli_seconds() - t0;
    if (c.json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "sandbox",
                                 sandbox, "snapshot", snap->id, "template", ts->sandbox + strlen(TEMPLATE_PREFIX),
                                 "out", out, "files", (json_int_t)st.files, "dirs", (json_int_t)st.dirs,
                                 "symlinks", (json_int_t)st.symlinks, "hardlinks", (json_int_t)st.hardlinks,
                                 "bytes", (json_int_t)st.bytes, "replaced", (json_int_t)st.replaced,
                                 "skipped", (json_int_t)st.skipped, "xattrs_dropped", (json_int_t)st.xattrs_dropped,
                                 "seconds", secs));
    else {
        char b[32];
        cli_human(st.bytes, b);
        fprintf(stderr, "rebuilt %s from template %s + %llu important files (%s) of snapshot %s in %.2f s\n",
                out, ts->sandbox + strlen(TEMPLATE_PREFIX), (unsigned long long)st.files, b, snap->id, secs);
    }
    store_snapshot_free(snap);
    store_snapshot_free(ts);
    return EXIT_OK;
}

int cmd_policy(int argc, char **argv)
{
    cli_common c;
    int rc = cli_parse("policy", argc, argv, NULL, &c, NULL);
    if (rc) return rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/policy", c.store);
    FILE *f = fopen(path, "r");
    if (c.json) {
        json_t *j = json_pack("{s:s}", "defaults", snap_policy_defaults());
        if (f) {
            char buf[65536];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            json_object_set_new(j, "store_policy", json_string(buf));
        }
        cli_print_json(j);
    } else {
        if (f) {
            printf("# %s (checked first)\n", path);
            char buf[4096];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
        }
        printf("# built-in defaults (first match wins; unmatched paths are runtime)\n%s",
               snap_policy_defaults());
    }
    if (f) fclose(f);
    return EXIT_OK;
}
