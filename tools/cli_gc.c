/* Lifecycle commands: touch, tier, sandboxes, delete, pin, unpin, gc. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gc/gc.h"
#include "tools/cli.h"

/* n decimal digits at *p into *v; advances *p. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9') return -1;
        *v = *v * 10 + (**p - '0');
    }
    return 0;
}

/* Strict: a date that does not exist (2030-02-30), a field out of range, or a number that
 * does not fit is refused, never normalised or wrapped into another time. Years 1970-9999. */
int cli_parse_time(const char *s, int64_t *ms)
{
    static const int64_t max_seconds = 253402300799;      /* 9999-12-31T23:59:59Z */
    if (*s && strspn(s, "0123456789") == strlen(s)) {
        if (strlen(s) > 12) return -1;                     /* past max_seconds for sure */
        long long v = strtoll(s, NULL, 10);
        if (v > max_seconds) return -1;
        *ms = (int64_t)v * 1000;
        return 0;
    }
    const char *p = s;
    int Y, M, D, h, m, sec;
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' || digits(&p, 2, &D) ||
        (*p != 'T' && *p != 't') || (p++, digits(&p, 2, &h)) || *p++ != ':' || digits(&p, 2, &m) ||
        *p++ != ':' || digits(&p, 2, &sec))
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] + (M == 2 && leap) || h > 23 ||
        m > 59 || sec > 60)
        return -1;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int nd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, nd++)
            if (nd < 3) frac_ms = frac_ms * 10 + (*p - '0');
        if (!nd) return -1;
        for (; nd < 3; nd++) frac_ms *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') p++;
    else if (*p == '+' || *p == '-') {
        int sign = *p++ == '+' ? 1 : -1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59) return -1;
        off = (int64_t)(oh * 60 + om) * 60 * sign;
    } else return -1;
    if (*p) return -1;
    struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m,
                    .tm_sec = sec};
    int64_t t = (int64_t)timegm(&tm) - off;
    if (t < 0 || t > max_seconds) return -1;
    *ms = t * 1000 + frac_ms;
    return 0;
}

static void rfc3339(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* touch, delete, pin, unpin, tier: one event each. */
static int one_event(const char *cmd, const char *kind, const char *name, const char *value, int64_t at,
                     const cli_common *c)
{
    store_t *s = cli_open(cmd, c, STORE_READ);
    if (!s) return EXIT_FAIL;
    store_err e;
    int rc = gc_event(s, kind, name, value, at, &e);
    store_close(s);
    if (rc) return cli_fail(rc == -EINVAL ? EXIT_USAGE : EXIT_FAIL, cmd, "%s", e.msg);
    char when[32];
    rfc3339(at, when);
    if (c->json)
        cli_print_json(json_pack("{s:s, s:s, s:s, s:s}", "event", kind, "name", name, "value", value ? value : "",
                                 "at", when));
    else fprintf(stderr, "%s %s%s%s at %s\n", kind, name, value ? " " : "", value ? value : "", when);
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
    if (at && cli_parse_time(at, &ms)) return cli_usage(cli_find("touch"), "--at %s: not a time that exists (RFC 3339 or unix seconds, years 1970-9999)", at);
    return one_event("touch", "touch", sandbox, NULL, ms, &c);
}

int cmd_delete(int argc, char **argv)
{
    const char *sandbox = NULL;
    cli_opt opts[] = {{"sandbox", &sandbox, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("delete", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    if (!sandbox) return cli_usage(cli_find("delete"), "--sandbox is required");
    return one_event("delete", "delete", sandbox, NULL, store_now_ms(), &c);
}

static int pin_common(const char *cmd, int argc, char **argv)
{
    const char *id = NULL;
    cli_opt opts[] = {{"snapshot", &id, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse(cmd, argc, argv, opts, &c, NULL);
    if (rc) return rc;
    if (!id) return cli_usage(cli_find(cmd), "--snapshot is required");
    return one_event(cmd, cmd, id, NULL, store_now_ms(), &c);
}

int cmd_pin(int argc, char **argv) { return pin_common("pin", argc, argv); }
int cmd_unpin(int argc, char **argv) { return pin_common("unpin", argc, argv); }

int cmd_tier(int argc, char **argv)
{
    const char *tenant = NULL;
    cli_opt opts[] = {{"tenant", &tenant, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    cli_args pos;
    int rc = cli_parse("tier", argc, argv, opts, &c, &pos);
    if (rc) return rc;
    const char *tier = pos.n == 1 ? pos.v[0] : NULL;
    free(pos.v);
    if (!tenant || !tier || (strcmp(tier, "free") && strcmp(tier, "pro")))
        return cli_usage(cli_find("tier"), "--tenant T and one of free, pro");
    return one_event("tier", "tier", tenant, tier, store_now_ms(), &c);
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
        rfc3339(v[i].last_activity_ms, when);
        cli_human(v[i].bytes, b);
        if (c.json)
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}",
                                                  "sandbox", v[i].sandbox, "tenant", v[i].tenant, "tier", v[i].tier,
                                                  "state", v[i].state, "last_activity", when,
                                                  "last_activity_ms", (json_int_t)v[i].last_activity_ms,
                                                  "bytes", (json_int_t)v[i].bytes,
                                                  "snapshots", (json_int_t)v[i].snapshots, "latest", v[i].latest,
                                                  "template", v[i].template_name));
        else
            printf("%-24s %-16s %-5s %-11s %-20s %10s %u\n", v[i].sandbox, v[i].tenant, v[i].tier, v[i].state,
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
    if (now && cli_parse_time(now, &o.now_ms)) return cli_usage(cli_find("gc"), "--now %s: not a time that exists (RFC 3339 or unix seconds, years 1970-9999)", now);
    gc_result r;
    store_err e;
    rc = gc_run(c.store, &o, &r, &e);
    if (c.json) {
        json_t *list = json_array();
        for (size_t i = 0; i < r.nreclaimed_list; i++) json_array_append_new(list, json_string(r.reclaimed_list[i]));
        json_t *j = json_pack("{s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o}", "ok", rc == 0,
                              "dry_run", dry, "reclaimed", (json_int_t)r.reclaimed,
                              "dropped_snapshots", (json_int_t)r.dropped_snapshots,
                              "not_reclaimed", (json_int_t)r.not_reclaimed,
                              "packs_deleted", (json_int_t)r.packs_deleted,
                              "packs_rewritten", (json_int_t)r.packs_rewritten,
                              "chunks_removed", (json_int_t)r.chunks_removed,
                              "freed_bytes", (json_int_t)r.freed_bytes, "stored_bytes_after",
                              (json_int_t)r.bytes_after, "seconds", r.seconds, "reclaimed_sandboxes", list);
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
