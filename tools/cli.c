/* `cairn`: dispatch, help, and the helpers every command shares. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "snapshotter/snapshotter.h"
#include "store/toolbox.h"
#include "tools/cli.h"

#define COMMON_OPTS \
    "  --store DIR   the store (default: $CAIRN_STORE, else ./cairn-data)\n" \
    "  --json        print one JSON object on stdout\n" \
    "  --help        this help\n"

static const cli_command commands[] = {
    {"init", "create an empty store",
     "usage: cairn init [--store DIR] [--json]\n"
     "       cairn init --store DIR --backend s3 --s3-endpoint HOST:PORT --s3-bucket B [--s3-http]\n"
     "                  [--s3-region R] [--s3-signature v2|v4] [--cache-mib N]\n\n"
     "Creates an empty store in DIR. With --backend s3 the store is the bucket (made if missing;\n"
     "an existing Cairn bucket is joined, so many nodes share one store) and DIR holds only\n"
     "caches. Keys come from $CAIRN_S3_ACCESS_KEY and $CAIRN_S3_SECRET_KEY, never from the\n"
     "command line. --s3-signature v4 (default) signs with libcurl (AWS SigV4); v2 uses libs3.\n"
     "--s3-http talks plain HTTP (a loopback endpoint); --cache-mib bounds the local cache of packs\n"
     "and read frames (default 4096).\n\n" COMMON_OPTS,
     cmd_init},
    {"snapshot", "store a sandbox's memory, vmstate and disk files",
     "usage: cairn snapshot --tenant T --sandbox S [--tier free|pro] [--memory F] [--vmstate F]\n"
     "                      [--disk F] [--template NAME] [--policy FILE] [--classes FILE]\n"
     "                      [--no-file-index] [--store DIR] [--json]\n\n"
     "Stores the given files as one snapshot of sandbox S and prints its id (last line of\n"
     "stdout) once it is durable. At least one file is needed. Names: 1-128 of [A-Za-z0-9._-].\n"
     "A disk (raw ext4) is also indexed file by file, each file classed (artifact, upload,\n"
     "project, secret, cache, temp, runtime) by the rules of --policy FILE (\"GLOB CLASS\"\n"
     "lines, first match wins), then the store's `policy` file, then the defaults\n"
     "(`cairn policy` prints them); --classes FILE gives explicit \"CLASS<TAB>/path\" lines.\n"
     "An image that cannot be indexed is still stored, with a warning.\n"
     "--template NAME records the template the sandbox booted from (used by rebuild).\n"
     "JSON: snapshot, sandbox, tenant, logical_bytes, new_bytes, new_chunks, files, warning,\n"
     "seconds.\n\n" COMMON_OPTS,
     cmd_snapshot},
    {"restore", "write a snapshot's files back, byte-exact",
     "usage: cairn restore --snapshot ID|SANDBOX@latest --out DIR [--store DIR] [--json]\n\n"
     "Writes DIR/memory, DIR/vmstate, DIR/disk (those the snapshot has), sparse.\n"
     "A damaged or missing page fails the restore; no file with wrong bytes is left.\n\n" COMMON_OPTS,
     cmd_restore},
    {"snapshots", "list a sandbox's snapshots, newest first",
     "usage: cairn snapshots --sandbox S [--store DIR] [--json]\n\n"
     "JSON: {\"snapshots\": [{\"snapshot\", \"time\", \"tenant\", \"logical_bytes\", \"new_bytes\", ...}]}\n\n"
     COMMON_OPTS,
     cmd_snapshots},
    {"stats", "sizes of the store",
     "usage: cairn stats [--store DIR] [--json]\n\n"
     "JSON: snapshots, logical_bytes, stored_bytes (pack bytes on disk), chunks, index_bytes,\n"
     "manifest_bytes, packs, dedup_ratio.\n\n" COMMON_OPTS,
     cmd_stats},
    {"refresh", "learn other nodes' new snapshots from the bucket (S3)",
     "usage: cairn refresh [--store DIR] [--json]\n\n"
     "A node over an S3 bucket reads what other nodes stored since its last refresh: only\n"
     "the manifests and packs that are new (listed from where the last one stopped). Every\n"
     "open of the store does this by itself (a reading command's when no other process of\n"
     "this node holds the store); this command does it now and says what it found. A local\n"
     "store has nothing to refresh (exit 0). JSON: remote, snapshots, packs, chunks,\n"
     "requests, seconds.\n\n" COMMON_OPTS,
     cmd_refresh},
    {"fsck", "check the store; rebuild its index",
     "usage: cairn fsck [--verify-data] [--rebuild-index] [--store DIR] [--json]\n\n"
     "Checks packs, index and manifests. --verify-data also decompresses every page and checks\n"
     "it against its id. --rebuild-index recreates the index from packs and manifests first.\n"
     "Exit 0 when no problem was found (garbage from interrupted work is not a problem),\n"
     "1 otherwise. JSON: ok, problems, garbage.\n\n" COMMON_OPTS,
     cmd_fsck},
    {"ls", "list a snapshot's files, with their classes (audited)",
     "usage: cairn ls --snapshot ID|SANDBOX@latest [PATH] [--recursive] --actor NAME [--json]\n\n"
     "Lists PATH (default /) of the snapshot's disk from its file index: a folder's entries\n"
     "(all below it with --recursive) or the file itself. Each entry shows its type, mode,\n"
     "owner, size, time and class. Bytes outside printable ASCII are shown as \\xNN; in JSON a\n"
     "path that is not UTF-8 also comes exactly as \"path_hex\". Audited: --actor NAME or\n"
     "$CAIRN_ACTOR is required. JSON: {\"entries\": [{\"path\", \"type\", \"size\", \"class\",\n"
     "\"mode\", \"uid\", \"gid\", \"mtime\", \"target\"}]}.\n\n" COMMON_OPTS,
     cmd_ls},
    {"cat", "print a file of a snapshot (audited)",
     "usage: cairn cat --snapshot ID|SANDBOX@latest PATH --actor NAME [--include-secrets]\n\n"
     "Writes the file's bytes to stdout. Files of class secret are refused unless\n"
     "--include-secrets is given (recorded in the audit log).\n\n" COMMON_OPTS,
     cmd_cat},
    {"extract", "copy files of a snapshot out, to a folder or a tar (audited)",
     "usage: cairn extract --snapshot ID|SANDBOX@latest [PATH...] (--out DIR | --tar FILE|-)\n"
     "                     [--class C,...] [--include-secrets] --actor NAME [--json]\n\n"
     "Extracts the PATHs (default /) and everything below them, keeping modes, times and\n"
     "symlinks (as symlinks), only below DIR: no name, \"..\" or symlink in the image can make\n"
     "it write or follow a link outside. --class keeps only those classes. Secrets are skipped\n"
     "unless --include-secrets. Refused entries are named on stderr; the rest is extracted\n"
     "and the exit code is 1.\n\n" COMMON_OPTS,
     cmd_extract},
    {"audit", "the log of support reads",
     "usage: cairn audit [--store DIR] [--json]\n\n"
     "Every ls, cat and extract: when, who, which sandbox and snapshot, which paths, whether\n"
     "secrets were included. JSON: {\"entries\": [...]}.\n\n" COMMON_OPTS,
     cmd_audit},
    {"template", "store a template's disk (and memory) for rebuilds",
     "usage: cairn template add --name NAME --disk IMG [--memory F --vmstate F] [--json]\n\n"
     "Stores the template like a snapshot (deduplicated with everything else).\n\n" COMMON_OPTS,
     cmd_template},
    {"rebuild", "a fresh VM disk: the template + the sandbox's important files",
     "usage: cairn rebuild --sandbox S [--template NAME] --out IMG [--json]\n\n"
     "Writes a raw ext4 image: the template's disk with the important files (artifact, upload,\n"
     "project) of the sandbox's latest snapshot written in (modes, owners, times, xattrs,\n"
     "symlinks kept). The template defaults to the one recorded at snapshot time.\n\n" COMMON_OPTS,
     cmd_rebuild},
    {"policy", "print the file-class rules",
     "usage: cairn policy [--store DIR] [--json]\n\n"
     "Prints the store's policy file (if any) and the built-in rules, in the order they apply.\n\n"
     COMMON_OPTS,
     cmd_policy},
    {"touch", "record activity of a sandbox (retention counts from it)",
     "usage: cairn touch --sandbox S [--at TIME] [--json]\n\n"
     "TIME is RFC 3339 (2026-11-21T10:00:00Z) or unix seconds; default now.\n\n" COMMON_OPTS,
     cmd_touch},
    {"tier", "set a tenant's tier (applies to all its sandboxes at the next gc)",
     "usage: cairn tier --tenant T free|pro [--json]\n\n"
     "free: sandboxes are reclaimed after 7 idle days; pro: after 21.\n\n" COMMON_OPTS,
     cmd_tier},
    {"sandboxes", "sandboxes with tier, state, last activity",
     "usage: cairn sandboxes [--tenant T] [--json]\n\n"
     "JSON: {\"sandboxes\": [{\"sandbox\", \"tenant\", \"tier\", \"state\", \"last_activity\",\n"
     "\"bytes\", \"snapshots\", \"latest\", \"template\"}]}; state is hibernated, reclaimed or\n"
     "deleted; bytes are the pack bytes its snapshots added.\n\n" COMMON_OPTS,
     cmd_sandboxes},
    {"delete", "the user deleted a sandbox: everything goes at the next gc",
     "usage: cairn delete --sandbox S [--json]\n\n" COMMON_OPTS,
     cmd_delete},
    {"pin", "keep a snapshot through gc", "usage: cairn pin --snapshot ID [--json]\n\n" COMMON_OPTS, cmd_pin},
    {"unpin", "undo pin", "usage: cairn unpin --snapshot ID [--json]\n\n" COMMON_OPTS, cmd_unpin},
    {"gc", "retention and garbage collection (what the cron runs)",
     "usage: cairn gc [--now TIME] [--dry-run] [--json]\n\n"
     "Reclaims hibernated sandboxes idle past their tier's window (free 7 days, pro 21, from\n"
     "the last activity to --now, default the clock): a files-only snapshot of the important\n"
     "files first, then their full snapshots go. Drops superseded snapshots (all but the\n"
     "latest and pinned ones) and deleted sandboxes, then sweeps unreferenced chunks and\n"
     "rewrites packs that became mostly garbage. Safe beside running snapshots (docs/gc.md).\n"
     "--dry-run reports and changes nothing. One line per action on stderr. Exit 1 only if\n"
     "it failed; the next run resumes. JSON: reclaimed, dropped_snapshots, freed_bytes,\n"
     "seconds, reclaimed_sandboxes, packs_deleted, packs_rewritten, chunks_removed,\n"
     "kept_leased (drops skipped: the snapshot is in use by a lazy wake; the next gc retries).\n"
     "On an S3 store (docs/s3.md, gc across nodes) one node at a time sweeps, under a lease in\n"
     "the bucket, and a pack found unused is deleted by a later run (fossils); while another\n"
     "node holds the lease a run does retention only (exit 0). JSON adds fossils_recorded,\n"
     "fossils_resurrected, sweep_skipped, lease_holder.\n\n" COMMON_OPTS,
     cmd_gc},
    {"serve", "the HTTP API (docs/api.md)",
     "usage: cairn serve [--store DIR] [--listen HOST:PORT] [--config FILE]\n\n"
     "Serves the HTTP API of docs/api.md and docs/api.yaml on HOST:PORT (default: the config's\n"
     "listen, else 127.0.0.1:7420) until SIGTERM or SIGINT, then stops accepting, lets running\n"
     "requests finish (limits.shutdown_timeout_s) and exits 0. The config is FILE, default\n"
     "DIR/serve.json (keys: listen, snapshot_roots, restore_roots, limits, tokens). One log\n"
     "line per request on stderr (never a token). Every CLI command keeps working beside it.\n\n"
     COMMON_OPTS,
     cmd_serve},
    {"token", "API tokens: add, list, revoke",
     "usage: cairn token add --role ROLE [--tenant T] --name NAME [--config FILE] [--json]\n"
     "       cairn token list [--config FILE] [--json]\n"
     "       cairn token revoke --name NAME [--config FILE] [--json]\n\n"
     "add prints a new token once (stdout) and stores only its SHA-256 in the config\n"
     "(default DIR/serve.json). ROLE: orchestrator, gc, support, admin (admin may use every\n"
     "route). A token with --tenant sees only that tenant's sandboxes and snapshots.\n"
     "A running server picks up added and revoked tokens at its next request.\n"
     "JSON (add): name, role, token, tenant, config; (list): {\"tokens\": [{name, role, tenant,\n"
     "created}]}.\n\n" COMMON_OPTS,
     cmd_token},
    {"uffd-serve", "serve a snapshot's memory to a VM on demand (Firecracker's UFFD protocol)",
     "usage: cairn uffd-serve --snapshot ID --socket PATH [--record SECONDS] [--no-prefetch]\n"
     "                        [--fault-around PAGES] [--cache-mib N] [--accept-timeout SECONDS]\n"
     "                        [--threads N] [--store DIR] [--json]\n\n"
     "A page server for Firecracker's mem_backend {\"backend_type\": \"Uffd\"}: listens on PATH\n"
     "(the socket file appears once it listens), takes the VM's userfaultfd and region list,\n"
     "and answers each page fault with the snapshot's page (verified against its id) or\n"
     "zeros; pages the balloon removed read as zeros. Exits 0 when the VM goes away.\n"
     "Connections that send anything else are refused; the server keeps waiting (a client\n"
     "that connects and stays silent delays no other).\n"
     "--threads: threads answering faults (default 2).\n"
     "Records the pages touched in the first --record seconds (default 10; 0: off) for the\n"
     "sandbox's next snapshot; installs this snapshot's recorded pages first, in the\n"
     "background, unless --no-prefetch. --cache-mib: decompressed groups kept (default: the\n"
     "snapshot's data pages, 64..256 MiB).\n"
     "--fault-around PAGES: a fault also installs the pages after it that are at hand (a\n"
     "run of at most PAGES from the last faulted page on, that one included: data pages\n"
     "whose group is decompressed already, or zero pages; never over a present or removed\n"
     "page, never past the region; default 16, 0 or 1: off).\n"
     "--accept-timeout: no VM within this many seconds (default 60; 0: wait for ever) and\n"
     "it exits 0 (JSON timed_out: true). The socket file is removed on every exit, SIGTERM,\n"
     "SIGINT and SIGHUP included. Numbers are decimal integers: --record 0..86400,\n"
     "--cache-mib 1..1048576, --fault-around 0..64, --accept-timeout 0..86400, --threads 1..16.\n"
     "Holds a lease on the snapshot (gc keeps it; on S3 gc on every node) while serving.\n"
     "Counts as activity.\n"
     "JSON (at exit): faults, faults_zero, removes, removed_bytes, prefetched, recorded,\n"
     "refused, groups_read, bytes_read, pages_data, cache_hits, lookups, seconds, around,\n"
     "batched, timed_out.\n\n" COMMON_OPTS,
     cmd_uffd_serve},
    {"mount", "a read-only FUSE view of the store's snapshots, read on demand",
     "usage: cairn mount [--foreground] [--cache-mib N] [--open-rw] [--debug] [--store DIR] [--json]\n"
     "                   MOUNTPOINT\n\n"
     "Mounts MOUNTPOINT/snapshots/ID/{memory,vmstate,disk} and MOUNTPOINT/sandboxes/S/latest\n"
     "(a symlink to the newest snapshot): files whose bytes are read from the packs on first\n"
     "read, verified against their ids (a page that fails reads as EIO, never wrong bytes).\n"
     "Point Firecracker's File memory backend (or QEMU's memory-backend-file,share=off) at a\n"
     "memory file: it maps it MAP_PRIVATE and pages come in as the guest touches them.\n"
     "A file open (or mapped) holds a lease: gc keeps its snapshot (on S3: on every node).\n"
     "Returns once mounted (the server goes to the background) unless --foreground.\n"
     "`fusermount3 -u MOUNTPOINT` ends it.\n"
     "--cache-mib: decompressed groups kept per open file (default: the file's data pages,\n"
     "64..256 MiB). --open-rw accepts\n"
     "read-write opens (writes still fail): QEMU 7.2 opens its memory file so even when it\n"
     "maps it private (share=off).\n\n" COMMON_OPTS,
     cmd_mount},
};

static const char *main_usage =
    "usage: cairn [--help] COMMAND [ARGS]\n\n"
    "Cairn stores microVM snapshots (memory, device state, root disk), deduplicated by\n"
    "4 KiB page, and gives them back byte-exact.\n\ncommands:\n";

static const char *exit_codes =
    "\nexit codes: 0 success, 1 the operation failed (message on stderr), 2 bad usage.\n"
    "`cairn COMMAND --help` describes a command.\n";

const cli_command *cli_find(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

int cli_fail(int code, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cairn %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int cli_usage(const cli_command *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cairn %s: ", c->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", c->usage);
    va_end(ap);
    return EXIT_USAGE;
}

void cli_human(uint64_t bytes, char out[32])
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0) snprintf(out, 32, "%llu B", (unsigned long long)bytes);
    else snprintf(out, 32, "%.1f %s", v, unit[u]);
}

void cli_print_json(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    if (s) puts(s);
    free(s);
    json_decref(obj);
}

store_t *cli_open(const char *cmd, const cli_common *c, int mode)
{
    store_t *s = NULL;
    store_err e;
    if (store_open(c->store, mode, &s, &e)) {
        cli_fail(EXIT_FAIL, cmd, "%s", e.msg);
        return NULL;
    }
    /* CAIRN_VERIFY_DEDUP=1: compare bytes on every dedup hit (docs/design.md, "Chunk ids"). */
    const char *v = getenv("CAIRN_VERIFY_DEDUP");
    if (v && !strcmp(v, "1")) store_set_verify_dedup(s, 1);
    return s;
}

static int progress_shown;

void cli_progress(void *arg, uint64_t done, uint64_t total)
{
    const char *what = arg;
    if (!isatty(2)) return;
    char d[32], t[32];
    cli_human(done, d);
    cli_human(total, t);
    fprintf(stderr, "\r%s %s / %s (%.0f%%)   ", what, d, t, total ? 100.0 * (double)done / (double)total : 100.0);
    progress_shown = 1;
}

void cli_progress_end(void)
{
    if (progress_shown) fprintf(stderr, "\r\033[K");
    progress_shown = 0;
}

void cli_activity(store_t *s, store_event_kind kind, const char *sandbox)
{
    store_event ev = {.kind = kind, .at_ms = store_now_ms()};
    snprintf(ev.sandbox, sizeof ev.sandbox, "%s", sandbox);
    store_err e;
    if (store_event_log(s, &ev, &e))
        fprintf(stderr, "cairn %s: warning: activity not recorded: %s\n", store_event_kind_name(kind),
                e.msg);
}

double cli_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cli_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t v = 0;
    if (!s || !*s) return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, cli_common *c, cli_args *pos)
{
    const cli_command *cc = cli_find(cmd);
    c->store = getenv("CAIRN_STORE");
    if (!c->store || !*c->store) c->store = "./cairn-data";
    c->json = 0;
    if (pos) {
        pos->n = 0;
        pos->v = calloc((size_t)argc + 1, sizeof *pos->v);
        if (!pos->v) return cli_fail(EXIT_FAIL, cmd, "out of memory");
    }
    /* Which options were given: one given twice is a usage error, never a silent choice
     * (`--memory A --memory B` stored only B). Bit 0 --store, 1 --json, 2.. opts[]. */
    uint64_t seen = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !strcmp(a, "--")) {
            if (!pos) return cli_usage(cc, "unexpected argument '%s'", a);
            if (!strcmp(a, "--")) {                  /* the rest are paths, even "--x" */
                while (++i < argc) pos->v[pos->n++] = argv[i];
                break;
            }
            pos->v[pos->n++] = a;
            continue;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const char **dst = NULL;
        int *flag = NULL;
        unsigned bit = 0;
        if (len == 5 && !strncmp(a, "store", 5)) dst = &c->store;
        else if (len == 4 && !strncmp(a, "json", 4)) flag = &c->json, bit = 1;
        for (cli_opt *o = opts; o && o->name && !dst && !flag; o++)
            if (strlen(o->name) == len && !strncmp(a, o->name, len)) {
                dst = o->value;
                flag = o->flag;
                bit = 2 + (unsigned)(o - opts);
            }
        if (!dst && !flag) return cli_usage(cc, "unknown option '%s'", argv[i]);
        if (bit < 64 && (seen & (1ull << bit)))
            return cli_usage(cc, "option '--%.*s' given twice", (int)len, a);
        if (bit < 64) seen |= 1ull << bit;
        if (flag) {
            if (eq) return cli_usage(cc, "option '--%.*s' takes no value", (int)len, a);
            *flag = 1;
        } else if (eq) {
            *dst = eq + 1;
        } else {
            if (i + 1 >= argc) return cli_usage(cc, "option '%s' needs a value", argv[i]);
            *dst = argv[++i];
        }
    }
    if (!*c->store) return cli_usage(cc, "--store needs a folder");
    /* Every --tenant and --sandbox is a name: '../x' or 's1@latest' is refused here with
     * the store's one rule, not looked up and answered with an empty list. */
    for (cli_opt *o = opts; o && o->name; o++)
        if (o->value && *o->value && (!strcmp(o->name, "tenant") || !strcmp(o->name, "sandbox")) &&
            store_name_valid(*o->value))
            return cli_usage(cc, "'%s' is not a %s name (1-128 of [A-Za-z0-9._-], not starting with '.')",
                             *o->value, o->name);
    return 0;
}

int main(int argc, char **argv)
{
    /* Everything Cairn writes holds tenant bytes: private whatever the caller's umask.
     * RocksDB creates the index's files 0644 & ~umask, so the mask is what keeps them 0600;
     * restores and extracts are made private too (extract then sets each file's own mode). */
    umask(077);
    /* Spawned as the confined disk walker (snapshotter.h): it never comes back. */
    snap_walker_main(argc, argv);
    snap_walker_exec("/proc/self/exe");
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        FILE *out = argc < 2 ? stderr : stdout;
        fputs(main_usage, out);
        for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
            fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fputs(exit_codes, out);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    const cli_command *c = cli_find(argv[1]);
    if (!c) {
        fprintf(stderr, "cairn: unknown command '%s' (see `cairn --help`)\n", argv[1]);
        return EXIT_USAGE;
    }
    /* After "--" every word is an argument: `cairn ls -- -h` lists the path "-h". */
    for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(c->usage, stdout);
            return EXIT_OK;
        }
    return c->run(argc - 1, argv + 1);
}
