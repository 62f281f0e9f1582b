/* The core commands: init, snapshot, restore, snapshots, stats, fsck. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "restore/restore.h"
#include "restore/lazy.h"
#include "snapshotter/snapshotter.h"
#include "store/toolbox.h"
#include "tools/cli.h"

int cmd_init(int argc, char **argv)
{
    const char *backend = NULL, *endpoint = NULL, *bucket = NULL, *region = NULL, *sig = NULL, *cache = NULL;
    int http = 0;
    cli_opt opts[] = {{"backend", &backend, NULL},       {"s3-endpoint", &endpoint, NULL},
                      {"s3-bucket", &bucket, NULL},      {"s3-region", &region, NULL},
                      {"s3-signature", &sig, NULL},      {"s3-http", NULL, &http},
                      {"cache-mib", &cache, NULL},       {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("init", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    const cli_command *cc = cli_find("init");
    store_err e;
    int s3 = backend && !strcmp(backend, "s3");
    if (backend && !s3 && strcmp(backend, "local"))
        return cli_usage(cc, "--backend is local or s3, not '%s'", backend);
    if (!s3 && (endpoint || bucket || region || sig || http || cache))
        return cli_usage(cc, "the --s3-* and --cache-mib options need --backend s3");
    if (s3) {
        if (!endpoint || !bucket) return cli_usage(cc, "--backend s3 needs --s3-endpoint and --s3-bucket");
        if (sig && strcmp(sig, "v2") && strcmp(sig, "v4"))
            return cli_usage(cc, "--s3-signature is v2 or v4, not '%s'", sig);
        char *end = NULL;
        unsigned long long mib = cache ? strtoull(cache, &end, 10) : 0;
        if (cache && (!*cache || *end || mib < 1 || mib > (1ULL << 30)))
            return cli_usage(cc, "--cache-mib is a number of MiB (1..2^30), not '%s'", cache);
        store_s3_opts o = {.endpoint = endpoint, .bucket = bucket, .region = region, .http = http,
                           .sig_v2 = sig && !strcmp(sig, "v2"), .cache_bytes = (uint64_t)mib << 20};
        if (store_init_s3(c.store, &o, &e)) return cli_fail(EXIT_FAIL, "init", "%s", e.msg);
        if (c.json)
            cli_print_json(json_pack("{s:s, s:b, s:s, s:s, s:s}", "store", c.store, "created", 1, "backend", "s3",
                                     "endpoint", endpoint, "bucket", bucket));
        else printf("%s is a node of s3://%s at %s\n", c.store, bucket, endpoint);
        return EXIT_OK;
    }
    if (store_init(c.store, &e)) return cli_fail(EXIT_FAIL, "init", "%s", e.msg);
    if (c.json) cli_print_json(json_pack("{s:s, s:b, s:s}", "store", c.store, "created", 1, "backend", "local"));
    else printf("created an empty store in %s\n", c.store);
    return EXIT_OK;
}

int cmd_snapshot(int argc, char **argv)
{
    const char *tenant = NULL, *sandbox = NULL, *tier = NULL, *mem = NULL, *vms = NULL, *disk = NULL;
    const char *tmpl = NULL, *policy = NULL, *classes = NULL;
    int no_index = 0;
    cli_opt opts[] = {{"tenant", &tenant, NULL},  {"sandbox", &sandbox, NULL}, {"tier", &tier, NULL},
                  {"memory", &mem, NULL},     {"vmstate", &vms, NULL},     {"disk", &disk, NULL},
                  {"template", &tmpl, NULL},  {"policy", &policy, NULL},   {"classes", &classes, NULL},
                  {"no-file-index", NULL, &no_index}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("snapshot", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    const cli_command *cc = cli_find("snapshot");
    if (!tenant || !sandbox) return cli_usage(cc, "--tenant and --sandbox are required");
    if (store_name_valid(tenant) || store_name_valid(sandbox) || store_name_reserved(tenant) ||
        store_name_reserved(sandbox))
        return cli_usage(cc, "tenant and sandbox names are 1-128 of [A-Za-z0-9._-], not starting with "
                         "'.', '-' or '_' (reserved)");
    store_tier t = STORE_TIER_NONE;
    if (tier && (store_tier_parse(tier, &t) || t == STORE_TIER_NONE))
        return cli_usage(cc, "--tier is free or pro, not '%s'", tier);
    snap_request req = {.tenant = tenant, .sandbox = sandbox, .tier = t,
                        .progress = cli_progress, .progress_arg = "snapshot"};
    const char *names[] = {"memory", "vmstate", "disk"}, *paths[] = {mem, vms, disk};
    for (int i = 0; i < 3; i++)
        if (paths[i]) {
            req.blob_name[req.nblobs] = names[i];
            req.blob_path[req.nblobs++] = paths[i];
        }
    if (!req.nblobs) return cli_usage(cc, "give at least one of --memory, --vmstate, --disk");
    if (tmpl && store_name_valid(tmpl)) return cli_usage(cc, "bad template name '%s'", tmpl);
    req.template_name = tmpl;
    snap_policy *pol = NULL;
    store_err pe;
    if (disk && !no_index && snap_policy_load(c.store, policy, classes, &pol, &pe))
        return cli_fail(EXIT_USAGE, "snapshot", "%s", pe.msg);
    req.policy = pol;
    snap_index_start(&req);              /* beside the store's open and the ingest (snapshotter.h) */

    double t0 = cli_seconds();
    store_t *s = cli_open("snapshot", &c, STORE_WRITE);
    store_snapshot *snap = NULL;
    store_err e;
    rc = s ? snap_ingest(s, &req, &snap, &e) : 0;
    if (rc == -EINPROGRESS) {            /* a slow walk finishes without the store's lock */
        store_close(s);
        snap_index_wait(&req);
        s = cli_open("snapshot", &c, STORE_WRITE);
        rc = s ? snap_ingest(s, &req, &snap, &e) : 0;
    }
    store_close(s);
    snap_index_wait(&req);               /* the walk reads the policy */
    store_findex_free(req.files);
    snap_policy_free(pol);
    if (!s) return EXIT_FAIL;
    cli_progress_end();
    if (req.warning[0]) fprintf(stderr, "cairn snapshot: warning: %s\n", req.warning);
    if (rc) return cli_fail(EXIT_FAIL, "snapshot", "%s; nothing was stored", e.msg);
    /* A lazy wake of this sandbox recorded the pages it touched first: they belong with
     * the snapshot it just produced (its next wake prefetches them). */
    if (restore_wset_adopt(c.store, snap->sandbox, snap->id, &e))
        fprintf(stderr, "cairn snapshot: warning: working set not kept: %s\n", e.msg);
    double secs = cli_seconds() - t0;
    if (c.json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "snapshot", snap->id,
                              "tenant", snap->tenant, "sandbox", snap->sandbox,
                              "logical_bytes", (json_int_t)snap->logical_bytes,
                              "new_bytes", (json_int_t)snap->new_bytes,
                              "new_chunks", (json_int_t)snap->new_chunks, "seconds", secs);
        if (snap->files) json_object_set_new(j, "files", json_integer((json_int_t)snap->files->n));
        if (req.warning[0]) json_object_set_new(j, "warning", json_string(req.warning));
        cli_print_json(j);
    } else {
        char l[32], n[32];
        cli_human(snap->logical_bytes, l);
        cli_human(snap->new_bytes, n);
        fprintf(stderr, "snapshot of %s: %s, %s new, %.2f s\n", snap->sandbox, l, n, secs);
        printf("%s\n", snap->id);
    }
    store_snapshot_free(snap);
    return EXIT_OK;
}

int cmd_restore(int argc, char **argv)
{
    const char *id = NULL, *out = NULL;
    cli_opt opts[] = {{"snapshot", &id, NULL}, {"out", &out, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("restore", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    if (!id || !out) return cli_usage(cli_find("restore"), "--snapshot and --out are required");
    double t0 = cli_seconds();
    store_t *s = cli_open("restore", &c, STORE_READ);
    if (!s) return EXIT_FAIL;
    store_err e;
    char rid[STORE_SNAPID_LEN];
    rc = restore_resolve_id(s, id, rid, &e);         /* an id or SANDBOX@latest */
    if (!rc) id = rid;
    if (!rc) rc = restore_snapshot(s, id, out, cli_progress, "restore", &e);
    if (!rc) {
        store_snapshot *snap = NULL;
        if (store_snapshot_load(s, id, &snap, NULL) == 0) cli_activity(s, STORE_EV_RESTORE, snap->sandbox);
        store_snapshot_free(snap);
    }
    store_close(s);
    cli_progress_end();
    if (rc) return cli_fail(EXIT_FAIL, "restore", "%s", e.msg);
    double secs = cli_seconds() - t0;
    if (c.json) cli_print_json(json_pack("{s:s, s:s, s:f}", "snapshot", id, "out", out, "seconds", secs));
    else fprintf(stderr, "restored snapshot %s into %s in %.2f s\n", id, out, secs);
    return EXIT_OK;
}

static int print_snapshot(void *arg, const store_snaprec *r)
{
    cli_listing *l = arg;
    if (l->json) {   /* the store's record is the documented output */
        json_t *j = json_loads(r->json, 0, NULL);
        if (!j) return 1;
        json_array_append_new(l->list, j);
        return 0;
    }
    char lb[32], nb[32], when[32];
    cli_human(r->logical_bytes, lb);
    cli_human(r->new_bytes, nb);
    store_rfc3339(r->time_ms, when);
    printf("%-20s  %-20s  %10s  %10s\n", r->id, when, lb, nb);
    return 0;
}

int cmd_snapshots(int argc, char **argv)
{
    const char *sandbox = NULL;
    cli_opt opts[] = {{"sandbox", &sandbox, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("snapshots", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    if (!sandbox) return cli_usage(cli_find("snapshots"), "--sandbox is required");
    store_t *s = cli_open("snapshots", &c, STORE_READ);
    if (!s) return EXIT_FAIL;
    cli_listing l = {.list = json_array(), .json = c.json};
    if (!c.json) printf("%-20s  %-20s  %10s  %10s\n", "SNAPSHOT", "TIME", "LOGICAL", "NEW");
    store_err e;
    rc = store_snapshot_records(s, sandbox, print_snapshot, &l, &e);
    store_close(s);
    if (rc) {
        json_decref(l.list);
        return cli_fail(EXIT_FAIL, "snapshots", "%s", e.msg);
    }
    if (c.json) cli_print_json(json_pack("{s:s, s:o}", "sandbox", sandbox, "snapshots", l.list));
    else json_decref(l.list);
    return EXIT_OK;
}

int cmd_stats(int argc, char **argv)
{
    cli_common c;
    int rc = cli_parse("stats", argc, argv, NULL, &c, NULL);
    if (rc) return rc;
    store_t *s = cli_open("stats", &c, STORE_READ);
    if (!s) return EXIT_FAIL;
    store_stats st;
    store_err e;
    rc = store_get_stats(s, &st, &e);
    store_close(s);
    if (rc) return cli_fail(EXIT_FAIL, "stats", "%s", e.msg);
    double ratio = st.stored_bytes ? (double)st.logical_bytes / (double)st.stored_bytes : 0;
    if (c.json) {
        cli_print_json(json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                                 "snapshots", (json_int_t)st.snapshots,
                                 "logical_bytes", (json_int_t)st.logical_bytes,
                                 "stored_bytes", (json_int_t)st.stored_bytes,
                                 "chunks", (json_int_t)st.chunks, "packs", (json_int_t)st.packs,
                                 "index_bytes", (json_int_t)st.index_bytes,
                                 "manifest_bytes", (json_int_t)st.manifest_bytes,
                                 "dedup_ratio", ratio));
        return EXIT_OK;
    }
    char lb[32], sb[32], ib[32], mb[32];
    cli_human(st.logical_bytes, lb);
    cli_human(st.stored_bytes, sb);
    cli_human(st.index_bytes, ib);
    cli_human(st.manifest_bytes, mb);
    printf("snapshots       %llu\nlogical         %s\nstored (packs)  %s in %llu packs\n"
           "ratio           %.1fx\nchunks          %llu\nindex           %s (%.1f bytes/chunk)\n"
           "manifests       %s\n",
           (unsigned long long)st.snapshots, lb, sb, (unsigned long long)st.packs, ratio,
           (unsigned long long)st.chunks, ib, st.chunks ? (double)st.index_bytes / (double)st.chunks : 0.0, mb);
    return EXIT_OK;
}

static void refresh_report(void *arg, int problem, const char *text)
{
    (void)arg;
    fprintf(stderr, "%s: %s\n", problem ? "PROBLEM" : "garbage", text);
}

int cmd_refresh(int argc, char **argv)
{
    cli_common c;
    int rc = cli_parse("refresh", argc, argv, NULL, &c, NULL);
    if (rc) return rc;
    /* The open refreshes (a writer's always); a second pass finds what landed meanwhile. */
    store_t *s = cli_open("refresh", &c, STORE_WRITE);
    if (!s) return EXIT_FAIL;
    store_err e;
    rc = store_refresh(s, refresh_report, NULL, &e);
    store_refresh_stats st;
    store_refresh_totals(s, &st);
    store_close(s);
    if (rc) return cli_fail(EXIT_FAIL, "refresh", "%s", e.msg);
    if (c.json) {
        cli_print_json(json_pack("{s:b, s:I, s:I, s:I, s:I, s:f}", "remote", st.runs > 0,
                                 "snapshots", (json_int_t)st.snapshots, "packs", (json_int_t)st.packs,
                                 "chunks", (json_int_t)st.chunks, "requests", (json_int_t)st.requests,
                                 "seconds", (double)st.ms / 1000.0));
        return EXIT_OK;
    }
    if (!st.runs) printf("a local store: nothing to refresh\n");
    else
        printf("refreshed: %llu new snapshots, %llu new packs (%llu chunks), %llu requests, %.3f s\n",
               (unsigned long long)st.snapshots, (unsigned long long)st.packs, (unsigned long long)st.chunks,
               (unsigned long long)st.requests, (double)st.ms / 1000.0);
    return EXIT_OK;
}

typedef struct {
    json_t *problems, *garbage;
    int json;
} fsck_ctx;

static void fsck_report(void *arg, int problem, const char *text)
{
    fsck_ctx *f = arg;
    json_array_append_new(problem ? f->problems : f->garbage, json_string(text));
    if (!f->json) printf("%s: %s\n", problem ? "PROBLEM" : "garbage", text);
}

int cmd_fsck(int argc, char **argv)
{
    int verify = 0, rebuild = 0;
    cli_opt opts[] = {{"verify-data", NULL, &verify}, {"rebuild-index", NULL, &rebuild}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("fsck", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    store_t *s = cli_open("fsck", &c, rebuild ? STORE_REPAIR : STORE_READ);
    if (!s) return EXIT_FAIL;
    fsck_ctx f = {.problems = json_array(), .garbage = json_array(), .json = c.json};
    store_err e;
    if (rebuild) {
        rc = store_rebuild_index(s, fsck_report, &f, &e);
        if (rc) {
            store_close(s);
            json_decref(f.problems);
            json_decref(f.garbage);
            return cli_fail(EXIT_FAIL, "fsck", "rebuilding the index: %s", e.msg);
        }
        if (!c.json) printf("index rebuilt from packs and manifests\n");
        json_array_clear(f.problems);
        json_array_clear(f.garbage);
    }
    rc = store_fsck(s, verify ? STORE_FSCK_VERIFY_DATA : 0, fsck_report, &f, &e);
    store_close(s);
    if (rc) {
        json_decref(f.problems);
        json_decref(f.garbage);
        return cli_fail(EXIT_FAIL, "fsck", "%s", e.msg);
    }
    int ok = json_array_size(f.problems) == 0;
    if (c.json)
        cli_print_json(json_pack("{s:b, s:O, s:O, s:b, s:b}", "ok", ok, "problems", f.problems,
                                 "garbage", f.garbage, "verified_data", verify, "rebuilt_index", rebuild));
    else
        printf("%s: %zu problems, %zu garbage items\n", ok ? "ok" : "NOT OK", json_array_size(f.problems),
               json_array_size(f.garbage));
    json_decref(f.problems);
    json_decref(f.garbage);
    return ok ? EXIT_OK : EXIT_FAIL;
}
