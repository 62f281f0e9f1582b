/* `cairn uffd-serve` and `cairn mount`: lazy wakes (restore/lazy.h, docs/lazy-wake.md). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "restore/lazy.h"
#include "tools/cli.h"

typedef struct {
    const char *store;
    const char *sock;
} serve_ctx;

/* The socket to remove if a signal ends us: a file left behind would make the next wake on
 * that path fail (409). Set once it exists; only async-signal-safe calls read it. */
static const char *volatile listening_on;

static void on_signal(int sig)
{
    const char *p = listening_on;
    if (p) unlink(p);
    /* The lease is a flock: the kernel drops it as we die. Die of the signal itself so
     * whoever waits for us sees why. */
    signal(sig, SIG_DFL);
    raise(sig);
}

static void say_listening(void *arg)
{
    listening_on = ((const serve_ctx *)arg)->sock;
    fprintf(stderr, "cairn uffd-serve: listening on %s\n", ((const serve_ctx *)arg)->sock);
}

static void warn_line(void *arg, const char *why)
{
    (void)arg;
    fprintf(stderr, "cairn uffd-serve: %s\n", why);
}

/* Counts the wake as activity of the sandbox (gc measures idleness from it). The page
 * server hands over the snapshot it loaded: a second load of the manifest would cost
 * time proportional to the VM's size before the server listens. */
static void note_activity(void *arg, const store_snapshot *snap)
{
    store_t *s = NULL;
    store_err e;
    if (store_open(((const serve_ctx *)arg)->store, STORE_PEEK, &s, &e))
        fprintf(stderr, "cairn uffd-serve: warning: activity not recorded: %s\n", e.msg);
    else
        cli_activity(s, STORE_EV_RESTORE, snap->sandbox);
    store_close(s);
}

/* The page cache's bound: 1 MiB .. 1 TiB. */
#define CACHE_MIB_MAX (1u << 20)

int cmd_uffd_serve(int argc, char **argv)
{
    const char *id = NULL, *sock = NULL, *record = NULL, *cache = NULL, *around = NULL, *acc = NULL,
               *threads = NULL;
    int no_prefetch = 0;
    cli_opt opts[] = {{"snapshot", &id, NULL}, {"socket", &sock, NULL}, {"record", &record, NULL},
                      {"fault-around", &around, NULL},
                      {"cache-mib", &cache, NULL}, {"no-prefetch", NULL, &no_prefetch},
                      {"accept-timeout", &acc, NULL}, {"threads", &threads, NULL}, {NULL, NULL, NULL}};
    cli_common c;
    int rc = cli_parse("uffd-serve", argc, argv, opts, &c, NULL);
    if (rc) return rc;
    const cli_command *cc = cli_find("uffd-serve");
    if (!id || !sock) return cli_usage(cc, "--snapshot and --socket are required");
    if (store_snapid_valid(id)) return cli_usage(cc, "'%s' is not a snapshot id (20 hex digits)", id);
    uint64_t rec = 10, cmib = 0, fa = 16, wait_s = 60, nth = 0;
    if (record && cli_uint(record, 0, 86400, &rec))
        return cli_usage(cc, "--record takes whole seconds, 0..86400, not '%s'", record);
    if (cache && cli_uint(cache, 1, CACHE_MIB_MAX, &cmib))
        return cli_usage(cc, "--cache-mib takes a whole number of MiB, 1..%u, not '%s'", CACHE_MIB_MAX, cache);
    if (around && cli_uint(around, 0, 64, &fa))
        return cli_usage(cc, "--fault-around takes a number of pages, 0..64, not '%s'", around);
    if (acc && cli_uint(acc, 0, 86400, &wait_s))
        return cli_usage(cc, "--accept-timeout takes whole seconds, 0..86400, not '%s'", acc);
    if (threads && cli_uint(threads, 1, 16, &nth))
        return cli_usage(cc, "--threads takes a number of threads, 1..16, not '%s'", threads);
    /* The VM closing its end must not kill us before we report. */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    if (sigemptyset(&sa.sa_mask) || sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) ||
        sigaction(SIGHUP, &sa, NULL))
        return cli_fail(EXIT_FAIL, "uffd-serve", "sigaction: %s", strerror(errno));
    serve_ctx ctx = {.store = c.store, .sock = sock};
    restore_uffd_opts o = {.store_dir = c.store, .snapshot = id, .socket_path = sock,
                           .cache_bytes = cmib << 20, .prefetch = !no_prefetch,
                           .record_seconds = (double)rec, .wait_ms = (int)(wait_s * 1000),
                           .fault_around = (unsigned)fa, .threads = (unsigned)nth, .on_open = note_activity,
                           .on_listen = say_listening, .warn = warn_line, .arg = &ctx};
    restore_uffd_result r;
    store_err e;
    rc = restore_uffd_serve(&o, &r, &e);
    listening_on = NULL;      /* removed by now: a later signal must not remove someone else's */
    if (c.json) {
        json_t *j = json_pack("{s:b, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
                              "ok", rc == 0, "snapshot", id, "faults", (json_int_t)r.faults,
                              "faults_zero", (json_int_t)r.faults_zero, "removes", (json_int_t)r.removes,
                              "removed_bytes", (json_int_t)r.removed_bytes,
                              "prefetched", (json_int_t)r.prefetched, "recorded", (json_int_t)r.recorded,
                              "refused", (json_int_t)r.refused,
                              "groups_read", (json_int_t)r.pages.groups_read,
                              "bytes_read", (json_int_t)r.pages.bytes_read,
                              "pages_data", (json_int_t)r.pages.pages_data,
                              "cache_hits", (json_int_t)r.pages.cache_hits, "seconds", r.serve_seconds);
        json_object_set_new(j, "around", json_integer((json_int_t)r.around));
        json_object_set_new(j, "lookups", json_integer((json_int_t)r.pages.lookups));
        json_object_set_new(j, "batched", json_integer((json_int_t)r.batched));
        json_object_set_new(j, "timed_out", json_boolean(r.timed_out));
        if (rc) json_object_set_new(j, "error", json_string(e.msg));
        cli_print_json(j);
    } else if (!rc && r.timed_out) {
        fprintf(stderr, "cairn uffd-serve: no VM connected within %llu s: socket removed, exiting\n",
                (unsigned long long)wait_s);
    } else if (!rc) {
        char b[32];
        cli_human(r.pages.bytes_read, b);
        fprintf(stderr, "cairn uffd-serve: VM gone after %.2f s: %llu faults (%llu zero), %llu prefetched, "
                "%s read from packs, %llu removes\n", r.serve_seconds, (unsigned long long)r.faults,
                (unsigned long long)r.faults_zero, (unsigned long long)r.prefetched, b,
                (unsigned long long)r.removes);
    }
    if (rc) return cli_fail(EXIT_FAIL, "uffd-serve", "%s", e.msg);
    return EXIT_OK;
}

int cmd_mount(int argc, char **argv)
{
    const char *cache = NULL;
    int fg = 0, debug = 0, open_rw = 0;
    cli_opt opts[] = {{"cache-mib", &cache, NULL}, {"foreground", NULL, &fg}, {"debug", NULL, &debug},
                      {"open-rw", NULL, &open_rw}, {NULL, NULL, NULL}};
    cli_common c;
    cli_args pos = {0};
    int rc = cli_parse("mount", argc, argv, opts, &c, &pos);
    if (rc) return rc;
    const cli_command *cc = cli_find("mount");
    if (pos.n != 1) {
        free(pos.v);
        return cli_usage(cc, "one MOUNTPOINT is needed");
    }
    const char *mnt = pos.v[0];
    free(pos.v);
    uint64_t cmib = 0;
    if (cache && cli_uint(cache, 1, CACHE_MIB_MAX, &cmib))
        return cli_usage(cc, "--cache-mib takes a whole number of MiB, 1..%u, not '%s'", CACHE_MIB_MAX, cache);
    /* Fail early and clearly on a path that is not a store (fuse_main would mount first). */
    store_t *s = cli_open("mount", &c, STORE_PEEK);
    if (!s) return EXIT_FAIL;
    store_close(s);
    /* In the background the server's folder is /: a relative store path would break. */
    char *abs = realpath(c.store, NULL);
    if (!abs) return cli_fail(EXIT_FAIL, "mount", "%s: %s", c.store, strerror(errno));
    restore_mount_opts o = {.store_dir = abs, .mountpoint = mnt,
                            .cache_bytes = cmib << 20, .foreground = fg, .debug = debug, .open_rw = open_rw};
    store_err e;
    if (c.json && !fg) cli_print_json(json_pack("{s:b, s:s}", "ok", 1, "mountpoint", mnt));
    rc = restore_mount(&o, &e);
    free(abs);
    if (rc) return cli_fail(EXIT_FAIL, "mount", "%s", e.msg);
    return EXIT_OK;
}
