/* Unit tests of pure logic: the policy glob matcher (snapshotter/policy.c), the lifecycle
 * rules (gc/lifecycle.c: last activity, tier, state, window, pins) on hand-built states,
 * and events.log's one encoder and parser (store/events.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gc/internal.h"
#include "snapshotter/snapshotter.h"
#include "store/events.h"
#include "tests/unit/check.h"
#include "tests/unit/scratch.h"


static int gm(const char *glob, const char *path)
{
    return snap_glob_match(glob, path, strlen(path));
}

static void test_glob(void)
{
    /* '*' stays inside one component. */
    CHECK(gm("/home/*/x", "/home/ubuntu/x"));
    CHECK(!gm("/home/*/x", "/home/a/b/x"));
    CHECK(gm("/home/*", "/home/"));            /* '*' may match nothing */
    CHECK(gm("*.txt", "notes.txt") && !gm("*.txt", "a/notes.txt"));
    /* '?' is one byte, never '/'. */
    CHECK(gm("/a?c", "/abc") && !gm("/a?c", "/a/c") && !gm("/a?c", "/ac") && !gm("/a?c", "/abbc"));
    /* "**" crosses components, and "**" "/" matches no component too. */
    CHECK(gm("**/.env", "/.env") && gm("**/.env", "/srv/app/.env"));
    CHECK(!gm("**/.env", "/srv/app/.env.local") && !gm("**/.env", "/srv/app/x.env"));
    CHECK(gm("/a/**/z", "/a/z") && gm("/a/**/z", "/a/b/c/z") && !gm("/a/**/z", "/a/bz"));
    CHECK(gm("/a/**", "/a/b/c"));
    /* A trailing "/" "**" also matches the folder itself, not a sibling with that prefix. */
    CHECK(gm("/home/*/.ssh/**", "/home/u/.ssh") && gm("/home/*/.ssh/**", "/home/u/.ssh/id"));
    CHECK(!gm("/home/*/.ssh/**", "/home/u/.sshx") && !gm("/home/*/.ssh/**", "/home/u/x/.ssh"));
    CHECK(gm("**/node_modules/**", "/w/node_modules") && gm("**/node_modules/**", "/w/node_modules/a/b"));
    CHECK(!gm("**/node_modules/**", "/w/node_modulesx/a"));
    /* Raw bytes: no escaping, no case folding, a NUL-free non-UTF-8 name is just bytes. */
    CHECK(gm("/d/*", "/d/\xff\xfe") && !gm("/D/*", "/d/x"));
    /* Long globs are not cut (the folder form copied the glob into a fixed buffer). */
    char lg[1400], lp[1400];
    memset(lg, 'a', sizeof lg);
    lg[0] = '/';
    memcpy(lg + 1300, "/**", 4);
    memcpy(lp, lg, 1300);
    lp[1300] = 0;
    CHECK(gm(lg, lp));

    /* The policy's fast paths (exact, folder, name, dirname) agree with the matcher. */
    const char *globs[] = {"/srv/exact", "/srv/dir/**", "**/name.txt", "**/cachedir/**", "/srv/*/g?b"};
    const char *paths[] = {"/srv/exact", "/srv/exactx", "/srv/dir", "/srv/dir/a/b", "/srv/dirx",
                           "/srv/q/name.txt", "/name.txt", "/srv/name.txt.bak", "/srv/cachedir",
                           "/srv/x/cachedir/y", "/srv/cachedirx/y", "/srv/a/gob", "/srv/a/b/gob"};
    for (size_t g = 0; g < sizeof globs / sizeof *globs; g++) {
        FILE *f = fopen(scratch_path("policy"), "w");
        if (!f) continue;
        fprintf(f, "%s artifact\n", globs[g]);
        fclose(f);
        snap_policy *p = NULL;
        store_err e;
        CHECK(snap_policy_load(NULL, scratch_path("policy"), NULL, &p, &e) == 0);
        for (size_t i = 0; p && i < sizeof paths / sizeof *paths; i++) {
            store_class want = gm(globs[g], paths[i]) ? STORE_CLASS_ARTIFACT : STORE_CLASS_RUNTIME;
            if (snap_policy_classify(p, paths[i], strlen(paths[i])) != want) {
                fprintf(stderr, "glob %s, path %s: classify disagrees with the matcher\n", globs[g], paths[i]);
                CHECK(0);
            }
        }
        snap_policy_free(p);
    }
}

/* ---- lifecycle --------------------------------------------------------------------- */

#define DAY (24LL * 3600 * 1000)
#define T0 (1700000000000LL)

static store_snaprec rec(const char *id, const char *tenant, const char *sandbox, store_tier tier,
                         store_kind kind, int64_t t, const char *parent, int64_t parent_t)
{
    store_snaprec r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.tenant, sizeof r.tenant, "%s", tenant);
    snprintf(r.sandbox, sizeof r.sandbox, "%s", sandbox);
    snprintf(r.parent, sizeof r.parent, "%s", parent ? parent : "");
    r.tier = tier;
    r.kind = kind;
    r.time_ms = t;
    r.parent_time_ms = parent_t;
    r.indexed = r.has_disk = 1;
    return r;
}

static store_event ev(store_event_kind k, const char *name, int64_t at)
{
    store_event v;
    memset(&v, 0, sizeof v);
    v.kind = k;
    v.at_ms = at;
    if (k == STORE_EV_TIER) snprintf(v.tenant, sizeof v.tenant, "%s", name);
    else snprintf(v.sandbox, sizeof v.sandbox, "%s", name);
    return v;
}

static const gc_sandbox *find_sb(const gc_sandbox *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(v[i].sandbox, name)) return &v[i];
    return NULL;
}

static void add(gc_state *st, store_snaprec r)
{
    CHECK(gc_state_add_snap(st, &r) == 0);
}

static void add_ev(gc_state *st, store_event v)
{
    CHECK(gc_state_add_event(st, &v) == 0);
}

static void test_lifecycle(void)
{
    gc_state st;
    memset(&st, 0, sizeof st);
    /* a: two full snapshots, then a touch later than both. */
    add(&st, rec("00000000000100000001", "acme", "a", STORE_TIER_NONE, STORE_KIND_FULL, T0, NULL, 0));
    add(&st, rec("00000000000200000001", "acme", "a", STORE_TIER_NONE, STORE_KIND_FULL, T0 + DAY, NULL, 0));
    add_ev(&st, ev(STORE_EV_TOUCH, "a", T0 + 2 * DAY));
    add_ev(&st, ev(STORE_EV_TOUCH, "a", T0 + DAY / 2));          /* older: does not count */
    /* b (tenant pro by event): reclaimed; its files-only snapshot stands for its source's time. */
    add(&st, rec("00000000000300000001", "bee", "b", STORE_TIER_FREE, STORE_KIND_FULL, T0, NULL, 0));
    add(&st, rec("00000000000400000001", "bee", "b", STORE_TIER_FREE, STORE_KIND_FILES, T0 + 30 * DAY,
                 "00000000000300000001", T0));
    add_ev(&st, ev(STORE_EV_TIER, "bee", T0));
    st.events[st.nevents - 1].tier = STORE_TIER_PRO;
    /* c: deleted after its latest snapshot; d: deleted, then a newer snapshot (it lives on). */
    add(&st, rec("00000000000500000001", "acme", "c", STORE_TIER_NONE, STORE_KIND_FULL, T0, NULL, 0));
    add_ev(&st, ev(STORE_EV_DELETE, "c", T0 + DAY));
    snprintf(st.events[st.nevents - 1].after, STORE_SNAPID_LEN, "00000000000500000001");
    add(&st, rec("00000000000600000001", "acme", "d", STORE_TIER_NONE, STORE_KIND_FULL, T0, NULL, 0));
    add_ev(&st, ev(STORE_EV_DELETE, "d", T0 + DAY));
    snprintf(st.events[st.nevents - 1].after, STORE_SNAPID_LEN, "00000000000600000001");
    add(&st, rec("00000000000700000001", "acme", "d", STORE_TIER_NONE, STORE_KIND_FULL, T0 + 2 * DAY, NULL, 0));
    /* A template (reserved name): not a sandbox of the view. */
    add(&st, rec("00000000000800000001", "_cairn", "_tpl.base", STORE_TIER_PRO, STORE_KIND_FULL, T0, NULL, 0));
    /* e: a restore and a rebuild are activity too; a pin then an unpin. */
    add(&st, rec("00000000000900000001", "solo", "e", STORE_TIER_PRO, STORE_KIND_FULL, T0, NULL, 0));
    add_ev(&st, ev(STORE_EV_RESTORE, "e", T0 + 3 * DAY));
    add_ev(&st, ev(STORE_EV_REBUILD, "e", T0 + 4 * DAY));
    store_event pin = ev(STORE_EV_PIN, "e", T0);
    snprintf(pin.snapshot, sizeof pin.snapshot, "00000000000900000001");
    add_ev(&st, pin);
    CHECK(gc_pinned(&st, "00000000000900000001"));
    pin.kind = STORE_EV_UNPIN;
    add_ev(&st, pin);
    CHECK(!gc_pinned(&st, "00000000000900000001"));
    CHECK(!gc_pinned(&st, "00000000000100000001"));

    gc_sandbox *v = NULL;
    size_t n = 0;
    store_err e;
    CHECK(gc_view(&st, NULL, &v, &n, &e) == 0);
    CHECK(n == 5);
    CHECK(find_sb(v, n, "_tpl.base") == NULL);
    const gc_sandbox *a = find_sb(v, n, "a"), *b = find_sb(v, n, "b"), *c = find_sb(v, n, "c"),
                     *d = find_sb(v, n, "d"), *x = find_sb(v, n, "e");
    CHECK(a && b && c && d && x);
    if (a && b && c && d && x) {
        /* last activity */
        CHECK(a->last_activity_ms == T0 + 2 * DAY && a->snapshots == 2);
        CHECK(!strcmp(a->latest, "00000000000200000001"));
        CHECK(b->last_activity_ms == T0);                      /* not the reclaim's time */
        CHECK(x->last_activity_ms == T0 + 4 * DAY);
        /* tier: never given = free; an event beats the snapshots' --tier; --tier counts */
        CHECK(a->tier == STORE_TIER_FREE && b->tier == STORE_TIER_PRO && x->tier == STORE_TIER_PRO);
        /* state */
        CHECK(a->state == GC_HIBERNATED && b->state == GC_RECLAIMED && c->state == GC_DELETED);
        CHECK(d->state == GC_HIBERNATED);
        /* window: free 7 days, pro 21, strictly past, only for hibernated sandboxes */
        CHECK(!gc_idle_past_window(a, a->last_activity_ms + 7 * DAY));
        CHECK(gc_idle_past_window(a, a->last_activity_ms + 7 * DAY + 1));
        CHECK(!gc_idle_past_window(x, x->last_activity_ms + 20 * DAY));
        CHECK(gc_idle_past_window(x, x->last_activity_ms + 21 * DAY + 1));
        CHECK(!gc_idle_past_window(b, T0 + 400 * DAY));        /* reclaimed already */
        CHECK(!gc_idle_past_window(c, T0 + 400 * DAY));        /* deleted: not a reclaim */
    }
    free(v);
    /* tenant filter */
    CHECK(gc_view(&st, "acme", &v, &n, &e) == 0 && n == 3);
    free(v);
    CHECK(gc_tenant_tier(&st, "nobody") == STORE_TIER_FREE);
    CHECK(gc_window_ms(STORE_TIER_PRO) == GC_PRO_WINDOW_MS && gc_window_ms(STORE_TIER_FREE) == GC_FREE_WINDOW_MS);
    gc_state_free(&st);
}

/* ---- events.log --------------------------------------------------------------------- */

static int count_ev(void *arg, const store_event *v)
{
    (void)v;
    (*(int *)arg)++;
    return 0;
}

static void write_log(const char *dir, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/events.log", dir);
    FILE *f = fopen(p, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_events(void)
{
    store_err e;
    store_event in = ev(STORE_EV_DROP, "sb1", 1234), out;
    snprintf(in.snapshot, sizeof in.snapshot, "0123456789abcdef0123");
    in.reason = STORE_DROP_RECLAIMED;
    char *line = NULL;
    CHECK(store_event_encode(&in, &line, &e) == 0 && line);
    CHECK(line && store_event_parse(line, &out, &e) == 0 && out.kind == STORE_EV_DROP &&
          out.reason == STORE_DROP_RECLAIMED && out.at_ms == 1234 && !strcmp(out.sandbox, "sb1") &&
          !strcmp(out.snapshot, in.snapshot));
    free(line);
    /* What the encoder refuses: a tier that is not free or pro, a bad name. */
    store_event t = ev(STORE_EV_TIER, "acme", 1);
    CHECK(store_event_encode(&t, &line, &e) == -EINVAL);       /* tier NONE */
    store_event bad = ev(STORE_EV_TOUCH, "../x", 1);
    CHECK(store_event_encode(&bad, &line, &e) == -EINVAL);
    /* What the parser refuses: an unknown kind, tier or reason is an error, not a default. */
    CHECK(store_event_parse("{\"event\":\"tier\",\"tenant\":\"acme\",\"tier\":\"gold\",\"at\":1}", &out, &e) == -EBADMSG);
    CHECK(store_event_parse("{\"event\":\"tier\",\"tenant\":\"acme\",\"tier\":\"pro\",\"at\":1}", &out, &e) == 0 &&
          out.tier == STORE_TIER_PRO);
    CHECK(store_event_parse("{\"event\":\"nap\",\"sandbox\":\"a\",\"at\":1}", &out, &e) == -EBADMSG);
    CHECK(store_event_parse("{\"event\":\"touch\",\"sandbox\":\"a\"}", &out, &e) == -EBADMSG);
    CHECK(store_event_parse("{\"event\":\"drop\",\"sandbox\":\"a\",\"snapshot\":\"0123456789abcdef0123\","
                            "\"reason\":\"bored\",\"at\":1}", &out, &e) == -EBADMSG);

    /* The log: a torn last line (a crash mid-append) is skipped; a damaged line with
     * lines after it, or an unknown tier anywhere, fails the read with its line number. */
    const char *dir = scratch_path("s");
    CHECK(store_init(dir, &e) == 0);
    store_t *s = NULL;
    CHECK(store_open(dir, STORE_READ, &s, &e) == 0);
    if (!s) return;
    int n = 0;
    CHECK(store_event_each(s, count_ev, &n, &e) == 0 && n == 0);    /* no log yet */
    write_log(dir, "{\"event\":\"touch\",\"sandbox\":\"a\",\"at\":1}\n{\"event\":\"tou");
    n = 0;
    CHECK(store_event_each(s, count_ev, &n, &e) == 0 && n == 1);
    write_log(dir, "{\"event\":\"tou\n{\"event\":\"touch\",\"sandbox\":\"a\",\"at\":1}\n");
    CHECK(store_event_each(s, count_ev, &n, &e) == -EBADMSG && strstr(e.msg, "line 1"));
    write_log(dir, "{\"event\":\"touch\",\"sandbox\":\"a\",\"at\":1}\n"
                   "{\"event\":\"tier\",\"tenant\":\"acme\",\"tier\":\"gold\",\"at\":2}\n");
    CHECK(store_event_each(s, count_ev, &n, &e) == -EBADMSG && strstr(e.msg, "line 2") &&
          strstr(e.msg, "gold"));
    store_close(s);
    CHECK(store_open(dir, STORE_WRITE, &s, &e) == 0);
    if (!s) return;
    write_log(dir, "");
    store_event d = ev(STORE_EV_DELETE, "a", 5);
    snprintf(d.after, sizeof d.after, "0123456789abcdef0123");
    CHECK(store_event_log(s, &d, &e) == 0);
    n = 0;
    CHECK(store_event_each(s, count_ev, &n, &e) == 0 && n == 1);
    store_close(s);
}

int main(void)
{
    if (scratch_make("cairn-unit-")) return 1;
    test_glob();
    test_lifecycle();
    test_events();
    scratch_done(failures);
    if (failures) fprintf(stderr, "%d checks failed\n", failures);
    return failures ? 1 : 0;
}
