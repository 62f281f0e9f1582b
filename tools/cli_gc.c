/* Lifecycle commands: touch, tier, sandboxes, delete, pin, unpin, gc. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gc/gc.h"
#include "store/toolbox.h"
#include "tools/cli.h"

/* touch, delete, pin, unpin, tier: one event each. */
static int one_event(const char *cmd, store_event_kind kind, const char *name, store_tier tier,
                     int64_t at, const cli_common *c)
{
    store_t *s = cli_open(cmd, c, STORE_READ);
    if (!s) return EXIT_FAIL;
    store_err e;
    int rc = gc_event(s, kind, name, tier, at, &e);
    const char *value = kind == STORE_EV_TIER ? store_tier_name(tier) : NULL;
    store_close(s);
    if (rc) return cli_fail(rc == -EINVAL ? EXIT_USAGE : EXIT_FAIL, cmd, "%s", e.msg);
    char when[32];
    store_rfc3339(at, when);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:s}", "event", store_event_kind_name(kind), "name", name,
                                 "value", value ? value : "", "at", when));
    else fprintf(stderr, "%s %s%s%s at %s\n", store_event_kind_name(kind), name, value ? " " : "",
                 value ? value : "", when);
    return EXIT_OK;
}

int cmd_touch(int argc, char **argv)
{
    const char *sandbox = NULL, *at = NULL;
    cli_opt opts[] = {{"sandbox", &sandbox, NULL}, {"at", &at, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("touch", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    if (!sandbox) return cli_usage(cli_find("touch"), "--sandbox is required");
    int64_t ms = store_now_ms();
    if (at && gc_parse_time(at, &ms)) return cli_usage(cli_find("touch"), "--at %s: not a time that exists (RFC 3339 or unix seconds, years 1970-9999)", at);
    return one_event("touch", STORE_EV_TOUCH, sandbox, STORE_TIER_NONE, ms, &c);
}

int cmd_delete(int argc, char **argv)
{
    const char *sandbox = NULL;
    cli_opt opts[] = {{"sandbox", &sandbox, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("delete", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    if (!sandbox) return cli_usage(cli_find("delete"), "--sandbox is required");
    return one_event("delete", STORE_EV_DELETE, sandbox, STORE_TIER_NONE, store_now_ms(), &c);
}

static int pin_common(const char *cmd, store_event_kind kind, int argc, char **argv)
{
    const char *id = NULL;
    cli_opt opts[] = {{"snapshot", &id, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse(cmd, argc, argv, opts, &c, NULL);
    if (rc) return rc;
    if (!id) return cli_usage(cli_find(cmd), "--snapshot is required");
    return one_event(cmd, kind, id, STORE_TIER_NONE, store_now_ms(), &c);
}

int cmd_pin(int argc, char **argv) { return pin_common("pin", STORE_EV_PIN, argc, argv); }
int cmd_unpin(int argc, char **argv) { return pin_common("unpin", STORE_EV_UNPIN, argc, argv); }

int cmd_tier(int argc, char **argv)
{
    const char *tenant = NULL;
    cli_opt opts[] = {{"tenant", &tenant, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    cli_args pos;
    int rc = cli_parse("tier", argc, argv, opts, &c, &pos);
    if (rc) return rc;
    const char *tier = pos.n == 1 ? pos.v[0] : NULL;
    store_tier t = STORE_TIER_NONE;
    int bad = !tenant || !tier || store_tier_parse(tier, &t) || t == STORE_TIER_NONE;
    free(pos.v);
    if (bad) return cli_usage(cli_find("tier"), "--tenant T and one of free, pro");
    return one_event("tier", STORE_EV_TIER, tenant, t, store_now_ms(), &c);
}

int cmd_sandboxes(int argc, char **argv)
{
    const char *tenant = NULL;
    cli_opt opts[] = {{"tenant", &tenant, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("sandboxes", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    store_t *s = cli_open("sandboxes", &c, STORE_READ);
    if (!s) return EXIT_FAIL;
    gc_sandbox *v = NULL;
    size_t n = 0;
    store_err e;
    rc = gc_sandboxes(s, tenant, &v, &n, &e);
    store_close(s);
    if (rc) return cli_fail(EXIT_FAIL, "sandboxes", "%s", e.msg);
    json_t *list = json_array();
    if (!c.json) printf("%-24s %-16s %-5s %-11s %-20s %10s %s\n", "SANDBOX", "TENANT", "TIER", "STATE",
                        "LAST ACTIVITY", "BYTES", "SNAPSHOTS");
    for (size_t i = 0; i < n; i++) {
        char when[32], b[32];
        store_rfc3339(v[i].last_activity_ms, when);
        cli_human(v[i].bytes, b);
        if (c.json) json_array_append_new(list, gc_sandbox_json(&v[i]));
        else
            printf("%-24s %-16s %-5s %-11s %-20s %10s %u\n", v[i].sandbox, v[i].tenant,
                   store_tier_name(v[i].tier), gc_state_name(v[i].state),
                   when, b, v[i].snapshots);
    }
    free(v);
    if (c.json) cli_print_json(json_pack("{s:o}", "sandboxes", list));
    else json_decref(list);
    return EXIT_OK;
}

/* One line per action, on stderr, so a cron mail or the journal shows what gc did. */
static void log_line(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "gc: %s\n", line);
}

int cmd_gc(int argc, char **argv)
{
    const char *now = NULL;
    int dry = 0;
    cli_opt opts[] = {{"now", &now, NULL}, {"dry-run", NULL, &dry}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("gc", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    gc_options o = {.now_ms = store_now_ms(), .dry_run = dry, .log = log_line};
    if (now && gc_parse_time(now, &o.now_ms)) return cli_usage(cli_find("gc"), "--now %s: not a time that exists (RFC 3339 or unix seconds, years 1970-9999)", now);
    gc_result r;
    store_err e;
    rc = gc_run(c.store, &o, &r, &e);
    if (c.json) {
        json_t *j = gc_result_json(&r, rc == 0, dry);
        if (rc) json_object_set_new(j, "error", json_string(e.msg));
        cli_print_json(j);
    } else {
        char f[32];
        cli_human(r.freed_bytes, f);
        fprintf(stderr, "gc%s: %llu reclaimed, %llu snapshots dropped, %llu packs deleted, %llu rewritten, "
                "%s %s, %.2f s\n", dry ? " (dry run: nothing changed)" : "", (unsigned long long)r.reclaimed,
                (unsigned long long)r.dropped_snapshots, (unsigned long long)r.packs_deleted,
                (unsigned long long)r.packs_rewritten, f, dry ? "would be freed" : "freed", r.seconds);
    }
    gc_result_free(&r);
    if (rc) return cli_fail(EXIT_FAIL, "gc", "%s (what is listed above was done; the next run resumes)", e.msg);
    return EXIT_OK;
}
