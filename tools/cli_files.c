/* Support and rebuild commands: ls, cat, extract (audited), audit, template, rebuild,
 * policy. Template naming and the reserved '_' prefix are the store's rule (store.h). */
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

/* Printable form of raw path bytes (store_path_printable), never cut. */
static void put_path(FILE *f, const char *p)
{
    size_t cap = 4 * strlen(p) + 8;
    char small[1024], *buf = cap <= sizeof small ? small : malloc(cap);
    fputs(buf ? store_path_printable(p, buf, cap) : "(out of memory)", f);
    if (buf != small) free(buf);
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
    store_err e;
    int rc = restore_audit(s, cmd, actor, snap, paths, npaths, include_secrets, out, &e);
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
    if (restore_resolve(*s, spec, snap, &e) || store_findex_load(*s, *snap, fi, &e)) {
        store_snapshot_free(*snap);
        store_close(*s);
        return cli_fail(EXIT_FAIL, cmd, "%s", e.msg);
    }
    return 0;
}

static void entry_line(const store_fentry *f)
{
    char when[32];
    time_t t = (time_t)(f->mtime_ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
    printf("%-8s %04o %5u %5u %12llu %s %-8s ", restore_type_name(f->type), f->mode & 07777, f->uid, f->gid,
           (unsigned long long)f->size, when, store_class_name((store_class)f->cls));
    put_path(stdout, f->path);
    if (f->target) {
        fputs(f->type == STORE_FT_SYMLINK ? " -> " : " => ", stdout);
        put_path(stdout, f->target);
    }
    fputc('\n', stdout);
}

static int ls_entry(void *arg, const store_fentry *f)
{
    cli_listing *l = arg;
    if (!l->json) {
        entry_line(f);
        return 0;
    }
    json_t *o = restore_entry_json(f);
    return !o || json_array_append_new(l->list, o) ? -ENOMEM : 0;
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
    char *p = restore_norm_path(path);
    if (!p || !store_findex_get(fi, p)) rc = cli_fail(EXIT_FAIL, "ls", "%s: no such path in snapshot %s", path, snap->id);
    else rc = audit(s, "ls", actor, snap, (const char *const *)&p, 1, 0, NULL) ? EXIT_FAIL : 0;
    cli_listing l = {.list = json_array(), .json = c.json};
    if (!rc) {
        if (fi->warning) fprintf(stderr, "cairn ls: warning: the file index is partial: %s\n", fi->warning);
        store_err e;
        if (!l.list || restore_list(fi, p, recursive, ls_entry, &l, &e))
            rc = cli_fail(EXIT_FAIL, "ls", "out of memory");
        else if (c.json) {
            json_t *j = json_pack("{s:s, s:s, s:O}", "snapshot", snap->id, "sandbox", snap->sandbox, "entries", l.list);
            if (fi->warning) json_object_set_new(j, "warning", json_string(fi->warning));
            cli_print_json(j);
        }
    }
    json_decref(l.list);
    free(p);
    free(pos.v);
    store_findex_free(fi);
    store_snapshot_free(snap);
    store_close(s);
    return rc;
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
    char *path = restore_norm_path(pos.v[0]);   /* "/a//b/" names /a/b, as in extract */
    const store_fentry *f = path ? store_findex_get(fi, path) : NULL, *data = f ? restore_file_data(fi, f) : NULL;
    if (!f) rc = cli_fail(EXIT_FAIL, "cat", "%s: no such path in snapshot %s", pos.v[0], snap->id);
    else if (!data) rc = cli_fail(EXIT_FAIL, "cat", "%s: not a regular file (%s)", path, restore_type_name(f->type));
    else if (!secrets && restore_cat_is_secret(fi, f))
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

static int audit_line(void *arg, json_t *j)
{
    cli_listing *a = arg;
    if (a->json) return json_array_append(a->list, j) ? -ENOMEM : 0;
    /* Every field as escaped text: an actor or path holding a newline must not print as a
     * line of its own (a forged entry). */
    static const char *const field[] = {"time", "actor", "command", "tenant", "sandbox", "snapshot"};
    static const char *const sep[] = {"", "  ", " ", " ", "/", " "};
    for (size_t f = 0; f < sizeof field / sizeof *field; f++) {
        const char *v = json_string_value(json_object_get(j, field[f]));
        fputs(sep[f], stdout);
        put_path(stdout, v ? v : "?");
    }
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(j, "paths"), i, p) {
        const char *v = json_string_value(p);
        putchar(' ');
        put_path(stdout, v ? v : "?");
    }
    if (json_is_true(json_object_get(j, "include_secrets"))) printf("  [secrets included]");
    const char *why = json_string_value(json_object_get(j, "reason"));
    if (why) {
        fputs("  reason: ", stdout);
        put_path(stdout, why);
    }
    printf("\n");
    return 0;
}

int cmd_audit(int argc, char **argv)
{
    cli_common c;
    int rc = cli_parse("audit", argc, argv, NULL, &c, NULL);
    if (rc) return rc;
    store_t *s = cli_open("audit", &c, STORE_READ);
    if (!s) return EXIT_FAIL;
    cli_listing a = {.list = json_array(), .json = c.json};
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
    if (store_template_sandbox(name, sandbox)) return cli_usage(cc, "bad template name '%s'", name);
    snap_request req = {.tenant = STORE_TEMPLATE_TENANT, .sandbox = sandbox, .tier = STORE_TIER_PRO,
                        .template_add = 1,
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
    restore_rebuild_stats st = {.warn = warn_entry, .warn_arg = "rebuild"};
    rc = restore_rebuild_sandbox(s, sandbox, tmpl, out, &st, &snap, &ts, &e);
    if (!rc) cli_activity(s, STORE_EV_REBUILD, sandbox);
    store_close(s);
    if (rc) {
        store_snapshot_free(snap);
        store_snapshot_free(ts);
        return cli_fail(EXIT_FAIL, "rebuild", "%s", e.msg);
    }
    double secs = cli_seconds() - t0;
    if (c.json)
        cli_print_json(restore_rebuild_json(sandbox, snap, ts, out, &st, secs));
    else {
        char b[32];
        cli_human(st.bytes, b);
        fprintf(stderr, "rebuilt %s from template %s + %llu important files (%s) of snapshot %s in %.2f s\n",
                out, store_template_name(ts->sandbox), (unsigned long long)st.files, b, snap->id, secs);
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
