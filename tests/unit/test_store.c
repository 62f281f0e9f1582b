/* Unit tests of store/: ids, packs, manifests, index, commit and recovery, on a real
 * store in a temporary folder (real RocksDB, real files). */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "restore/restore.h"
#include "snapshotter/snapshotter.h"
#include "store/internal.h"

#include "tests/unit/check.h"
#include "tests/unit/scratch.h"

extern char **environ;


static void fill_page(uint8_t *p, uint64_t seed)
{
    for (size_t i = 0; i < STORE_PAGE; i += 8) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        memcpy(p + i, &seed, 8);
    }
}

static void test_varint(void)
{
    uint64_t vals[] = {0, 1, 127, 128, 300, 1ULL << 35, UINT64_MAX};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        uint8_t buf[16];
        size_t n = util_put_varint(buf, vals[i]);
        const uint8_t *p = buf;
        uint64_t v;
        CHECK(util_get_varint(&p, buf + n, &v) == 0 && v == vals[i] && p == buf + n);
        p = buf;
        CHECK(n == 1 || util_get_varint(&p, buf + n - 1, &v) == -EINVAL);   /* truncated */
    }
}

static void test_zero_and_ids(store_t *a, store_t *b)
{
    uint8_t page[STORE_PAGE] = {0};
    CHECK(store_page_is_zero(page));
    page[STORE_PAGE - 1] = 1;   /* a difference only in the last byte */
    CHECK(!store_page_is_zero(page));
    page[STORE_PAGE - 1] = 0;
    page[2000] = 1;
    CHECK(!store_page_is_zero(page));
    store_id x, y, z;
    store_chunk_id(a, page, &x);
    store_chunk_id(a, page, &y);
    store_chunk_id(b, page, &z);
    CHECK(!memcmp(&x, &y, 16));
    /* Keyed: another store's secret gives another id, so ids cannot be precomputed. */
    CHECK(memcmp(&x, &z, 16) != 0);
    CHECK(!store_id_is_zero(&x));
}

static void test_names(void)
{
    CHECK(store_name_valid("sb-01.a_b") == 0);
    CHECK(store_name_valid("") != 0);
    CHECK(store_name_valid("../x") != 0);
    CHECK(store_name_valid(".hidden") != 0);
    CHECK(store_name_valid("a/b") != 0);
    CHECK(store_name_valid("a\nb") != 0);
    CHECK(store_snapid_valid("0123456789abcdef0123") == 0);
    CHECK(store_snapid_valid("0123456789abcdef012") != 0);
    CHECK(store_snapid_valid("../../../../etc/pass") != 0);
}

static void write_file(const char *path, const uint8_t *buf, size_t len, off_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, size) == 0);
    CHECK(pwrite(fd, buf, len, 0) == (ssize_t)len);
    close(fd);
}

static int files_equal(const char *x, const char *y)
{
    uint8_t *a, *b;
    size_t la, lb;
    if (util_read_file(x, &a, &la) || util_read_file(y, &b, &lb)) return 0;
    int eq = la == lb && !memcmp(a, b, la);
    free(a);
    free(b);
    return eq;
}

/* Ingest, dedup within a file and against the parent, restore byte-exact. */
static void test_ingest_restore(store_t *s)
{
    size_t n = 300;
    uint8_t *buf = calloc(n, STORE_PAGE);
    for (size_t i = 0; i < n; i++)
        if (i % 3 == 0) fill_page(buf + i * STORE_PAGE, i % 30);   /* 10 distinct pages */
    write_file(scratch_path("mem"), buf, n * STORE_PAGE - 100, (off_t)(n * STORE_PAGE - 100));
    snap_request r = {.tenant = "t", .sandbox = "sb", .tier = STORE_TIER_FREE, .nblobs = 1,
                      .blob_name = {"memory"}, .blob_path = {scratch_path("mem")}};
    store_snapshot *snap = NULL;
    store_err e;
    CHECK(snap_ingest(s, &r, &snap, &e) == 0);
    if (!snap) {
        fprintf(stderr, "ingest: %s\n", e.msg);
        free(buf);
        return;
    }
    CHECK(snap->new_chunks == 10);
    char id1[STORE_SNAPID_LEN];
    memcpy(id1, snap->id, sizeof id1);
    store_snapshot_free(snap);
    /* The same file again: nothing new. */
    CHECK(snap_ingest(s, &r, &snap, &e) == 0);
    CHECK(snap && snap->new_chunks == 0 && snap->new_bytes == 0 && !strcmp(snap->parent, id1));
    store_snapshot_free(snap);
    /* Two-step load (lazy readers): metadata first, recipes not expanded; then one blob's,
     * the same ids as a full load. */
    store_snapshot *full = NULL;
    store_manifest *m = NULL;
    CHECK(store_snapshot_load(s, id1, &full, &e) == 0);
    CHECK(store_manifest_open(s, id1, &m, &e) == 0);
    if (full && m) {
        const store_snapshot *ms = store_manifest_snapshot(m);
        CHECK(ms->nblobs == 1 && ms->blobs[0].ids == NULL && ms->blobs[0].size == full->blobs[0].size &&
              !strcmp(ms->sandbox, "sb"));
        CHECK(store_manifest_expand(m, "disk", &e) == -ENOENT);
        /* A dup shares the checked bytes: it expands on its own, after the original let
         * go of them; the original then cannot expand or dup any more. */
        store_manifest *d = NULL;
        CHECK(store_manifest_dup(m, &d, &e) == 0 && d);
        store_manifest *m2 = NULL;
        CHECK(store_manifest_open(s, id1, &m2, &e) == 0);
        if (m2) {
            store_manifest_drop_bytes(m2);
            CHECK(store_manifest_expand(m2, "memory", &e) == -ENODATA);
            CHECK(store_manifest_dup(m2, &(store_manifest *){NULL}, &e) == -ENODATA);
            store_manifest_free(m2);
        }
        if (d) {
            store_manifest *keep = m;
            m = d;                         /* expand the dup below; free the original now */
            store_manifest_free(keep);
            ms = store_manifest_snapshot(m);
            CHECK(ms->blobs[0].ids == NULL && !strcmp(ms->id, id1));
        }
        CHECK(store_manifest_expand(m, "memory", &e) == 0);
        CHECK(ms->blobs[0].ids && !memcmp(ms->blobs[0].ids, full->blobs[0].ids, full->blobs[0].npages * 16));
        store_snapshot *taken = store_manifest_take(m);
        m = NULL;
        CHECK(taken && taken->blobs[0].ids);
        store_snapshot_free(taken);
    }
    store_manifest_free(m);
    store_snapshot_free(full);
    CHECK(store_manifest_open(s, "0123456789abcdef0123", &m, &e) == -ENOENT && !m);
    CHECK(restore_snapshot(s, id1, scratch_path("out"), NULL, NULL, &e) == 0);
    CHECK(files_equal(scratch_path("mem"), scratch_path("out/memory")));
    struct stat st;
    CHECK(stat(scratch_path("out/memory"), &st) == 0 && st.st_size == (off_t)(n * STORE_PAGE - 100));
    /* Sparse: the zero pages are holes. */
    CHECK((uint64_t)st.st_blocks * 512 < n * STORE_PAGE / 2);
    char latest[STORE_SNAPID_LEN];
    CHECK(store_snapshot_latest(s, "sb", latest, &e) == 0 && strcmp(latest, id1) != 0);
    CHECK(store_snapshot_latest(s, "nobody", latest, &e) == -ENOENT);
    /* Reserved names ('_') are refused at ingest, whoever calls it; only a template
     * request may use them, and then only the template's own names. */
    snap_request rs = r;
    rs.sandbox = "_tpl.x";
    CHECK(snap_ingest(s, &rs, &snap, &e) == -EINVAL && !snap && strstr(e.msg, "reserved"));
    rs.sandbox = "sb";
    rs.tenant = "_cairn";
    CHECK(snap_ingest(s, &rs, &snap, &e) == -EINVAL && !snap);
    rs.template_add = 1;
    CHECK(snap_ingest(s, &rs, &snap, &e) == -EINVAL && !snap);
    char tsb[STORE_NAME_MAX + 1];
    CHECK(store_template_sandbox("base", tsb) == 0 && !strcmp(store_template_name(tsb), "base"));
    rs.sandbox = tsb;
    CHECK(snap_ingest(s, &rs, &snap, &e) == 0 && snap);
    store_snapshot_free(snap);
    free(buf);
}

/* A second snapshot whose pages moved: the parent's pages at other offsets (and one that
 * the parent has in another blob) are named without a lookup once the parent's ids are
 * in a set (snapshotter/ingest.c, held_build); the pages new to the store must still be
 * stored, and every page restore byte-exact, with the byte check on or off. */
static void test_moved_pages(store_t *s)
{
    enum { NP = 5000, NNEW = 100, NDISK = 10 };
    uint8_t *mem = calloc(NP, STORE_PAGE), *disk = calloc(NDISK, STORE_PAGE);
    char pm[1500], pd[1500], pm2[1500], pm3[1500], out[1500];   /* scratch_path's buffers rotate */
    snprintf(pm, sizeof pm, "%s", scratch_path("mv-mem"));
    snprintf(pd, sizeof pd, "%s", scratch_path("mv-disk"));
    snprintf(pm2, sizeof pm2, "%s", scratch_path("mv-mem2"));
    snprintf(pm3, sizeof pm3, "%s", scratch_path("mv-mem3"));
    snprintf(out, sizeof out, "%s", scratch_path("mv-out"));
    for (size_t i = 0; i < NP; i++) fill_page(mem + i * STORE_PAGE, 1000 + i);
    for (size_t i = 0; i < NDISK; i++) fill_page(disk + i * STORE_PAGE, 9000 + i);
    write_file(pm, mem, (size_t)NP * STORE_PAGE, (off_t)NP * STORE_PAGE);
    write_file(pd, disk, (size_t)NDISK * STORE_PAGE, (off_t)NDISK * STORE_PAGE);
    snap_request r = {.tenant = "t", .sandbox = "mv", .tier = STORE_TIER_FREE, .nblobs = 2,
                      .blob_name = {"memory", "disk"}, .blob_path = {pm, pd}};
    store_snapshot *snap = NULL;
    store_err e;
    CHECK(snap_ingest(s, &r, &snap, &e) == 0 && snap && snap->new_chunks == NP + NDISK);
    store_snapshot_free(snap);
    /* Page i of the parent goes to (7 i + 13) mod NP, never its own offset, over three
     * batches; then new pages, a hole, and the parent's disk page 3. */
    uint8_t *moved = calloc(NP + NNEW + 1, STORE_PAGE);
    for (size_t i = 0; i < NP; i++) memcpy(moved + (i * 7 + 13) % NP * STORE_PAGE, mem + i * STORE_PAGE, STORE_PAGE);
    for (size_t i = 0; i < NNEW; i++) fill_page(moved + (NP + i) * STORE_PAGE, 50000 + i);
    write_file(pm2, moved, (size_t)(NP + NNEW) * STORE_PAGE, (off_t)(NP + NNEW + 300) * STORE_PAGE);
    int fd = open(pm2, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, disk + 3 * STORE_PAGE, STORE_PAGE, (off_t)(NP + NNEW + 200) * STORE_PAGE) == STORE_PAGE);
    if (fd >= 0) close(fd);
    for (int verify = 0; verify < 2; verify++) {
        store_set_verify_dedup(s, verify);
        r.blob_path[0] = pm2;
        if (verify) {   /* moved once more: the parent is the moved one now */
            write_file(pm3, mem, (size_t)NP * STORE_PAGE, (off_t)NP * STORE_PAGE);
            r.blob_path[0] = pm3;
        }
        CHECK(snap_ingest(s, &r, &snap, &e) == 0 && snap);
        if (!snap) {
            fprintf(stderr, "ingest of moved pages (verify %d): %s\n", verify, e.msg);
            continue;
        }
        CHECK(snap->new_chunks == (verify ? 0 : NNEW));
        char id[STORE_SNAPID_LEN];
        memcpy(id, snap->id, sizeof id);
        store_snapshot_free(snap);
        CHECK(restore_snapshot(s, id, out, NULL, NULL, &e) == 0);
        CHECK(files_equal(r.blob_path[0], scratch_path("mv-out/memory")));
        CHECK(files_equal(pd, scratch_path("mv-out/disk")));
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
        CHECK(system(cmd) == 0);
    }
    store_set_verify_dedup(s, 0);
    free(mem);
    free(moved);
    free(disk);
}

/* A sparse file of many short extents (read by pread, several to a batch), a long one
 * among them (mapped) and a partial last page: byte-exact, and its second snapshot finds
 * every page at its offset in the parent. */
static void test_short_extents(store_t *s)
{
    char path[1500], out[1500];
    snprintf(path, sizeof path, "%s", scratch_path("short-mem"));
    snprintf(out, sizeof out, "%s", scratch_path("short-out"));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    uint8_t page[STORE_PAGE];
    uint64_t at = 0, pages = 0;
    for (int x = 0; fd >= 0 && x < 600; x++) {
        int run = x == 300 ? 3000 : 1 + x % 5;         /* extent 300 is a long one */
        for (int k = 0; k < run; k++, pages++) {
            fill_page(page, 70000 + pages);
            CHECK(pwrite(fd, page, STORE_PAGE, (off_t)((at + k) * STORE_PAGE)) == STORE_PAGE);
        }
        at += run + 16;                               /* a hole of 64 KiB */
    }
    fill_page(page, 1);
    CHECK(fd >= 0 && pwrite(fd, page, 1000, (off_t)(at * STORE_PAGE)) == 1000);
    if (fd >= 0) close(fd);
    snap_request r = {.tenant = "t", .sandbox = "short", .tier = STORE_TIER_FREE, .nblobs = 1,
                      .blob_name = {"memory"}, .blob_path = {path}};
    for (int round = 0; round < 2; round++) {
        store_snapshot *snap = NULL;
        store_err e;
        CHECK(snap_ingest(s, &r, &snap, &e) == 0 && snap);
        if (!snap) {
            fprintf(stderr, "ingest of short extents: %s\n", e.msg);
            return;
        }
        CHECK(snap->new_chunks == (round ? 0 : pages + 1));
        char id[STORE_SNAPID_LEN];
        memcpy(id, snap->id, sizeof id);
        store_snapshot_free(snap);
        CHECK(restore_snapshot(s, id, out, NULL, NULL, &e) == 0);
        CHECK(files_equal(path, scratch_path("short-out/memory")));
        char cmd[1600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
        CHECK(system(cmd) == 0);
    }
}

/* A manifest survives encode/decode; any flipped byte is detected. */
static void test_manifest(void)
{
    store_snapshot snap = {.id = "0123456789abcdef0123", .tenant = "t", .sandbox = "s", .tier = STORE_TIER_PRO,
                           .nblobs = 1};
    store_blob *b = &snap.blobs[0];
    strcpy(b->name, "disk");
    b->size = 10 * STORE_PAGE + 5;
    b->npages = 11;
    b->ids = calloc(11, sizeof *b->ids);
    for (int i = 0; i < 11; i++)
        if (i != 3 && i != 4) memset(&b->ids[i], i + 1, 16);
    uint64_t packs[] = {7, 9};
    uint8_t *buf;
    size_t len;
    CHECK(manifest_encode(&snap, packs, 2, &buf, &len, NULL) == 0);
    store_snapshot *out = NULL;
    uint64_t *op = NULL;
    size_t np = 0;
    CHECK(manifest_decode(buf, len, &out, &op, &np, NULL) == 0);
    CHECK(out && out->nblobs == 1 && out->blobs[0].size == b->size && np == 2 && op[1] == 9);
    CHECK(out && !memcmp(out->blobs[0].ids, b->ids, 11 * 16));
    CHECK(out && out->tier == STORE_TIER_PRO);
    store_snapshot_free(out);
    free(op);
    for (size_t i = 0; i < len; i += 7) {
        buf[i] ^= 0x10;
        store_snapshot *bad = NULL;
        CHECK(manifest_decode(buf, len, &bad, NULL, NULL, NULL) != 0);
        store_snapshot_free(bad);
        buf[i] ^= 0x10;
    }
    free(buf);
    free(b->ids);
}

/* Pack footers: a damaged footer or truncated pack is refused, not misread. */
static void test_pack_footer(store_t *s)
{
    int fd = -1;
    for (uint64_t p = 0; p < 64 && fd < 0; p++) {
        char *path = pack_path(s, p, 0);
        fd = open(path, O_RDONLY);
        free(path);
    }
    CHECK(fd >= 0);
    if (fd < 0) return;
    struct stat st;
    fstat(fd, &st);
    uint8_t *data = malloc((size_t)st.st_size);
    CHECK(pread(fd, data, (size_t)st.st_size, 0) == st.st_size);
    close(fd);
    pack_group *g;
    store_id *ids;
    uint32_t ng, nc;
    const char *copy = scratch_path("pack-copy");
    write_file(copy, data, (size_t)st.st_size, st.st_size);
    fd = open(copy, O_RDONLY);
    CHECK(pack_read_footer(fd, (uint64_t)st.st_size, &g, &ng, &ids, &nc, NULL, "x") == 0);
    free(g);
    free(ids);
    close(fd);
    /* Flip a byte of the footer (just before the trailer). */
    data[st.st_size - PACK_TRAILER_LEN - 3] ^= 1;
    write_file(copy, data, (size_t)st.st_size, st.st_size);
    fd = open(copy, O_RDONLY);
    CHECK(pack_read_footer(fd, (uint64_t)st.st_size, &g, &ng, &ids, &nc, NULL, "x") == -EBADMSG);
    close(fd);
    /* Truncate. */
    write_file(copy, data, (size_t)st.st_size - 1, st.st_size - 1);
    fd = open(copy, O_RDONLY);
    CHECK(pack_read_footer(fd, (uint64_t)st.st_size - 1, &g, &ng, &ids, &nc, NULL, "x") == -EBADMSG);
    close(fd);
    free(data);
}

/* A crash after the manifest but before the index record is finished at the next open. */
static void test_pending_recovery(const char *dir)
{
    store_t *s = NULL;
    store_err e;
    CHECK(store_open(dir, STORE_WRITE, &s, &e) == 0);
    if (!s) return;
    uint64_t before = 0;
    CHECK(index_get_u64(s, "snapshots", &before, NULL) == 0);
    /* Take an existing manifest, give it a new id, and mark it pending as a commit would. */
    char latest[STORE_SNAPID_LEN];
    CHECK(store_snapshot_latest(s, "sb", latest, &e) == 0);
    store_snapshot *snap = NULL;
    CHECK(store_snapshot_load(s, latest, &snap, &e) == 0);
    if (!snap) return;
    strcpy(snap->id, "ffffffffffff00000001");
    uint8_t *buf;
    size_t len;
    CHECK(manifest_encode(snap, NULL, 0, &buf, &len, NULL) == 0);
    char *mdir = util_path(dir, "manifests");
    CHECK(util_write_file_durable(mdir, "ffffffffffff00000001.cmf", buf, len) == 0);
    free(mdir);
    free(buf);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put(b, "pending:ffffffffffff00000001", 28, "", 0);
    rocksdb_writebatch_put(b, "pending:ffffffffffff00000002", 28, "", 0);   /* never made it */
    CHECK(index_write(s, b, 1, NULL) == 0);
    rocksdb_writebatch_destroy(b);
    store_snapshot_free(snap);
    store_close(s);

    CHECK(store_open(dir, STORE_WRITE, &s, &e) == 0);
    if (!s) return;
    uint64_t after = 0, pend = 0;
    CHECK(index_get_u64(s, "snapshots", &after, NULL) == 0);
    CHECK(after == before + 1);
    CHECK(index_get_u64(s, "pending:ffffffffffff00000002", &pend, NULL) == -ENOENT);
    CHECK(store_snapshot_latest(s, "sb", latest, &e) == 0 && !strcmp(latest, "ffffffffffff00000001"));
    store_close(s);
}

/* Waits up to ms for pid; 1 and its exit status in *status when it ended. */
static int wait_for(pid_t pid, int ms, int *status)
{
    for (int t = 0; t < ms; t += 20) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 1;
        usleep(20000);
    }
    return 0;
}

/* Readers share the store; a writer locks them out (another process here: flock is per
 * open file, and this is what two cairn processes do) until it closes, and then the
 * waiting reader gets in. */
static void test_locked_out_reader(const char *dir)
{
    store_t *r1 = NULL, *r2 = NULL, *w = NULL;
    store_err e;
    CHECK(store_open(dir, STORE_READ, &r1, &e) == 0);
    CHECK(store_open(dir, STORE_READ, &r2, &e) == 0);
    store_close(r1);
    store_close(r2);
    CHECK(store_open(dir, STORE_WRITE, &w, &e) == 0);
    if (!w) return;
    /* The reader is this binary again (exec: no fork of a process with RocksDB's threads). */
    char *argv[] = {"test_store", "--open-reader", (char *)dir, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);   /* its "waiting" line */
    pid_t pid;
    int status = 0;
    CHECK(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    CHECK(!wait_for(pid, 600, &status));                  /* locked out while w is open */
    store_close(w);
    CHECK(wait_for(pid, 20000, &status) && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--open-reader")) {   /* test_locked_out_reader's child */
        store_t *r = NULL;
        store_err e;
        int rc = store_open(argv[2], STORE_READ, &r, &e);
        store_close(r);
        return rc ? 1 : 0;
    }
    if (scratch_make("cairn-unit-")) return 1;
    store_err e;
    CHECK(store_init(scratch_path("a"), &e) == 0);
    CHECK(store_init(scratch_path("b"), &e) == 0);
    CHECK(store_init(scratch_path("a"), &e) == -EEXIST);
    store_t *a = NULL, *b = NULL;
    CHECK(store_open(scratch_path("a"), STORE_WRITE, &a, &e) == 0);
    CHECK(store_open(scratch_path("b"), STORE_READ, &b, &e) == 0);
    CHECK(store_open(scratch_path("nope"), STORE_READ, &(store_t *){NULL}, &e) == -ENOENT);
    if (!a || !b) return 1;
    test_varint();
    test_names();
    test_zero_and_ids(a, b);
    test_manifest();
    test_ingest_restore(a);
    test_moved_pages(a);
    test_short_extents(a);
    test_pack_footer(a);
    store_close(a);
    store_close(b);
    test_pending_recovery(scratch_path("a"));
    test_locked_out_reader(scratch_path("a"));
    scratch_done(failures);
    if (failures) fprintf(stderr, "%d checks failed\n", failures);
    return failures ? 1 : 0;
}
