/* Rebuild into a fresh VM disk, on real images: a template and a sandbox disk made with
 * mke2fs -d from trees built here, stored with snap_ingest (the sandbox's file index by
 * the real walker and the default policy), rebuilt with restore_rebuild, then checked
 * with e2fsck -fn and read back with debugfs: every important file byte-exact with its
 * mode, owner and times, nothing of class secret/cache/temp/runtime, the template intact
 * where the snapshot had nothing to say. Then a hostile copy of the index (escapes through
 * "..", through a symlink the index itself makes, extents outside the disk, an unsorted
 * index) and a template too small for the files (ENOSPC). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "restore/restore.h"
#include "snapshotter/snapshotter.h"

#include "tests/unit/check.h"
#include "tests/unit/scratch.h"


static int run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* The one mke2fs of these tests: an image of type (ext3, ext4) with block size bs of the
 * tree dir, size as mke2fs takes it ("64M"). */
static int mkfs(const char *type, int bs, const char *dir, const char *img, const char *size)
{
    return run("mke2fs -q -F -t %s -b %d -d %s %s %s", type, bs, dir, img, size);
}

/* The image img stored as sandbox `sandbox` of tenant t, as a template's disk is: no
 * template, no policy. NULL (a failed check, said why) if the ingest fails. */
static store_snapshot *ingest_disk(store_t *s, const char *sandbox, const char *img)
{
    snap_request rq = {.tenant = "t", .sandbox = sandbox, .tier = STORE_TIER_FREE, .nblobs = 1,
                       .blob_name = {"disk"}, .blob_path = {img}};
    store_snapshot *snap = NULL;
    store_err e = {{0}};
    int rc = snap_ingest(s, &rq, &snap, &e);
    if (rc) fprintf(stderr, "ingest of %s: %s\n", img, e.msg);
    CHECK(rc == 0);
    return snap;
}

/* debugfs exits 0 whatever happened: its output is what tells. */
static char *debugfs(const char *img, const char *fmt, ...)
{
    char c[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c, sizeof c, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "debugfs -R '%s' '%s' 2>&1", c, img);
    FILE *p = popen(cmd, "r");
    size_t n = 0, cap = 1 << 16;
    char *out = calloc(1, cap);
    if (!p || !out) abort();
    for (size_t got; (got = fread(out + n, 1, cap - 1 - n, p)) > 0;) {
        n += got;
        if (n + 1 == cap && !(out = realloc(out, cap *= 2))) abort();
    }
    out[n] = 0;
    pclose(p);
    return out;
}

static void put(const char *path, const void *data, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0 || (n && write(fd, data, n) != (ssize_t)n) || fchmod(fd, mode) || close(fd)) {
        perror(path);
        exit(1);
    }
}

static void put_rand(const char *path, size_t n, uint64_t seed)
{
    uint8_t *b = malloc(n + 8);
    for (size_t i = 0; i < n; i += 8) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        memcpy(b + i, &seed, 8);
    }
    put(path, b, n, 0644);
    free(b);
}

static void pwrite_at(const char *path, off_t off, const char *s)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, s, strlen(s), off) != (ssize_t)strlen(s) || close(fd)) abort();
}

/* ---- the trees ------------------------------------------------------------------------ */

static void make_template(void)
{
    char t[1500];
    snprintf(t, sizeof t, "%s", scratch_path("template"));
    CHECK(run("mkdir -p %s/etc %s/usr/bin %s/home/ubuntu/output %s/home/ubuntu/project "
              "%s/home/ubuntu/artifacts && ln -s usr/bin %s/bin", t, t, t, t, t, t) == 0);
    char p[1600];
#define T(rel) (snprintf(p, sizeof p, "%s/%s", t, rel), p)
    put(T("etc/hostname"), "template\n", 9, 0644);
    put(T("etc/passwd"), "root:x:0:0::/root:/bin/sh\n", 26, 0644);
    put_rand(T("usr/bin/tool"), 1 << 20, 1);
    put(T("home/ubuntu/.bashrc"), "# template\n", 11, 0644);
    put(T("home/ubuntu/output/report.txt"), "old report\n", 11, 0644);
    put(T("home/ubuntu/upload"), "a file where the sandbox has a folder\n", 38, 0644);
    put(T("home/ubuntu/artifacts/keep.txt"), "keep\n", 5, 0644);
#undef T
    CHECK(run("chown -R 1000:1000 %s/home/ubuntu", t) == 0);
}

/* The sandbox: the template plus what a session left behind, of every class. */
static void make_sandbox(void)
{
    char s[1500];
    snprintf(s, sizeof s, "%s", scratch_path("sandbox"));
    char p[1600];
#define S(rel) scratch_path("sandbox/home/ubuntu/%s", rel)
    CHECK(run("rm -rf %s/home/ubuntu/upload %s/home/ubuntu/artifacts && mkdir -p "
              "%s/home/ubuntu/output/deep/a/b/c/d %s/home/ubuntu/upload %s/home/ubuntu/.ssh "
              "%s/home/ubuntu/project/app %s/home/ubuntu/project/node_modules/x %s/tmp",
              s, s, s, s, s, s, s, s) == 0);
    put_rand(S("output/report.txt"), 100000, 2);
    CHECK(chmod(S("output/report.txt"), 0640) == 0);
    CHECK(link(S("output/report.txt"), S("output/hard")) == 0);
    CHECK(symlink("report.txt", S("output/link")) == 0);
    char longt[200];
    memset(longt, 'l', sizeof longt - 1);
    longt[sizeof longt - 1] = 0;
    CHECK(symlink(longt, S("output/longlink")) == 0);
    put_rand(S("output/deep/a/b/c/d/e.bin"), 5000, 3);
    put_rand(S("output/big.bin"), 10 << 20, 4);        /* more than one write run */
    put(S("output/sparse.img"), "", 0, 0644);
    CHECK(truncate(S("output/sparse.img"), 64 << 20) == 0);
    pwrite_at(S("output/sparse.img"), 0, "head");
    pwrite_at(S("output/sparse.img"), (1 << 20) + 7, "a hole on each side, close by");
    pwrite_at(S("output/sparse.img"), (20 << 20) + 100, "middle, not block aligned");
    pwrite_at(S("output/sparse.img"), (64 << 20) - 1, "!");
    put(S("output/empty"), "", 0, 0644);
    put(S("output/tiny.txt"), "hi\n", 3, 0600);
    put(S("output/owned.txt"), "owner above 65535\n", 18, 0644);
    put(S("output/caf\xe9.txt"), "latin-1 name\n", 13, 0644);
    CHECK(mkfifo(S("output/fifo"), 0640) == 0);
    CHECK(mknod(S("output/null-dev"), S_IFCHR | 0666, makedev(1, 3)) == 0);
    put(S("output/.env"), "TOKEN=secret\n", 13, 0600);
    put(S("output/notes.txt.swp"), "swap\n", 5, 0644);
    put(S(".ssh/id_ed25519"), "PRIVATE KEY\n", 12, 0600);
    CHECK(link(S(".ssh/id_ed25519"), S("output/key-copy")) == 0);
    put(S("a-runtime.txt"), "one inode, a runtime and an artifact name\n", 42, 0644);
    CHECK(link(S("a-runtime.txt"), S("output/shared.txt")) == 0);
    put(S("upload/data.csv"), "a,b\n1,2\n", 8, 0644);
    put(S("project/app/index.html"), "<html></html>\n", 14, 0644);
    CHECK(setxattr(S("project/app/index.html"), "user.origin", "agent", 5, 0) == 0);
    CHECK(setxattr(S("project/app"), "user.dir", "yes", 3, 0) == 0);
    CHECK(chmod(S("project/app"), 0750) == 0);
    CHECK(chmod(S("output/deep"), 0700) == 0);
    put(S("project/node_modules/x/index.js"), "cache\n", 6, 0644);
    put(S("artifacts"), "a file where the template has a full folder\n", 44, 0644);
    put(S(".bashrc_sandbox"), "runtime\n", 8, 0644);
    snprintf(p, sizeof p, "%s/tmp/scratch.txt", s);
    put(p, "temp\n", 5, 0644);
    snprintf(p, sizeof p, "%s/usr/bin/newtool", s);
    put(p, "runtime\n", 8, 0755);
    CHECK(run("chown -R 1000:1000 %s/home/ubuntu", s) == 0);
    CHECK(chown(S("output/owned.txt"), 70000, 70001) == 0);
    CHECK(run("touch -h -d '2021-03-04 05:06:07' %s/home/ubuntu/output/link", s) == 0);
#undef S
}

/* ---- checks on a rebuilt image ------------------------------------------------------ */

typedef struct {
    unsigned ino, mode, uid, gid, links;
    unsigned long long size, blockcount;
    int64_t atime_ns, mtime_ns;
    char type[16];
    int found;
} dstat;

static int64_t xtime(const char *out, const char *key)
{
    const char *p = strstr(out, key);
    unsigned lo = 0, extra = 0;
    if (!p || sscanf(p + strlen(key), " 0x%x:%x", &lo, &extra) < 1) return INT64_MIN;
    int64_t sec = (int32_t)lo + ((int64_t)(extra & 3) << 32);
    return sec * 1000000000 + (extra >> 2);
}

static dstat dstat_of(const char *img, const char *path)
{
    dstat d = {0};
    char *o = debugfs(img, "stat %s", path);
    const char *p;
    if (!strstr(o, "not found") && (p = strstr(o, "Inode:"))) {
        d.found = 1;
        sscanf(p, "Inode: %u Type: %15s Mode: %o", &d.ino, d.type, &d.mode);
        if ((p = strstr(o, "User:"))) sscanf(p, "User: %u Group: %u", &d.uid, &d.gid);
        if ((p = strstr(o, "Size: "))) sscanf(p, "Size: %llu", &d.size);
        if ((p = strstr(o, "Links:"))) sscanf(p, "Links: %u Blockcount: %llu", &d.links, &d.blockcount);
        d.atime_ns = xtime(o, " atime:");
        d.mtime_ns = xtime(o, " mtime:");
    }
    free(o);
    return d;
}

/* The image's file at path equals the host file want (dump -p keeps nothing but bytes). */
static int same_bytes(const char *img, const char *path, const char *want)
{
    char out[1500];
    snprintf(out, sizeof out, "%s", scratch_path("dump.out"));
    unlink(out);
    free(debugfs(img, "dump %s %s", path, out));
    struct stat st;
    if (stat(out, &st) < 0) return 0;
    return run("cmp -s '%s' '%s'", out, want) == 0;
}

static const store_fentry *entry(const store_findex *fi, const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "/home/ubuntu/%s", rel);
    const store_fentry *f = store_findex_get(fi, p);
    if (!f) fprintf(stderr, "not in the index: %s\n", p);
    return f;
}

/* Present in img with the index's mode, owner and times (and bytes, if a file). */
static void check_kept(const char *img, const store_findex *fi, const char *rel, const char *tree)
{
    const store_fentry *f = entry(fi, rel);
    char path[512];
    snprintf(path, sizeof path, "/home/ubuntu/%s", rel);
    dstat d = dstat_of(img, path);
    CHECK(f && d.found);
    if (!f || !d.found) {
        fprintf(stderr, "  missing: %s\n", path);
        return;
    }
    if (!store_class_important((store_class)f->cls)) fprintf(stderr, "  not important: %s\n", path);
    CHECK(store_class_important((store_class)f->cls));
    CHECK(d.mode == (f->mode & 07777));
    CHECK(d.uid == f->uid && d.gid == f->gid);
    CHECK(d.mtime_ns == f->mtime_ns);
    CHECK(d.atime_ns == f->atime_ns);
    if (f->type == STORE_FT_FILE || f->type == STORE_FT_HARDLINK) {
        CHECK(!strcmp(d.type, "regular"));
        CHECK(same_bytes(img, path, scratch_path("%s/home/ubuntu/%s", tree, rel)));
    }
}

static void check_absent(const char *img, const char *path)
{
    dstat d = dstat_of(img, path);
    if (d.found) fprintf(stderr, "  should be absent: %s\n", path);
    CHECK(!d.found);
}

static void test_rebuild(store_t *s, const store_snapshot *tmpl, const store_snapshot *snap)
{
    const store_findex *fi = snap->files;
    char img[1500];
    const char *S = "sandbox";
    snprintf(img, sizeof img, "%s", scratch_path("rebuilt.img"));
    restore_rebuild_stats st = {0};
    store_err e = {{0}};
    int rc = restore_rebuild(s, tmpl, snap, img, &st, &e);
    if (rc) fprintf(stderr, "restore_rebuild: %s\n", e.msg);
    CHECK(rc == 0);
    printf("rebuild: %llu files, %llu dirs, %llu symlinks, %llu hard links, %llu bytes, %llu "
           "replaced, %llu skipped (first: %s) in %.3f s\n", (unsigned long long)st.files,
           (unsigned long long)st.dirs, (unsigned long long)st.symlinks,
           (unsigned long long)st.hardlinks, (unsigned long long)st.bytes,
           (unsigned long long)st.replaced, (unsigned long long)st.skipped, st.first_skip, st.seconds);
    CHECK(access(scratch_path("rebuilt.img.tmp"), F_OK) < 0);
    CHECK(run("e2fsck -fn %s > %s 2>&1", img, scratch_path("fsck.log")) == 0);

    /* every important file, byte-exact, with its metadata */
    const char *kept[] = {"output/report.txt", "output/hard", "output/deep/a/b/c/d/e.bin",
                          "output/big.bin", "output/sparse.img", "output/empty", "output/tiny.txt",
                          "output/owned.txt", "output/caf\xe9.txt", "output/shared.txt",
                          "upload/data.csv", "project/app/index.html", "output/deep",
                          "output/deep/a/b", "project/app", "output/link", "output/longlink",
                          "output/fifo"};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) check_kept(img, fi, kept[i], S);

    dstat d = dstat_of(img, "/home/ubuntu/output/owned.txt");
    CHECK(d.uid == 70000 && d.gid == 70001);
    d = dstat_of(img, "/home/ubuntu/output/deep");
    CHECK(d.mode == 0700 && d.uid == 1000 && !strcmp(d.type, "directory"));
    /* one inode, two names */
    dstat a = dstat_of(img, "/home/ubuntu/output/report.txt");
    dstat b = dstat_of(img, "/home/ubuntu/output/hard");
    CHECK(a.ino == b.ino && a.links == 2 && a.mode == 0640);
    /* the runtime name of a shared inode is not copied, its important name is */
    CHECK(dstat_of(img, "/home/ubuntu/output/shared.txt").links == 1);
    /* holes stay holes: 64 MiB file, four written blocks (8 sectors each) */
    d = dstat_of(img, "/home/ubuntu/output/sparse.img");
    CHECK(d.size == 64 << 20 && d.blockcount <= 5 * 8 && d.blockcount >= 4 * 8);
    char *o = debugfs(img, "stat /home/ubuntu/output/link");
    CHECK(strstr(o, "Fast link dest: \"report.txt\"") != NULL);
    free(o);
    CHECK(same_bytes(img, "/home/ubuntu/output/longlink", scratch_path("longlink.want")));
    CHECK(!strcmp(dstat_of(img, "/home/ubuntu/output/fifo").type, "FIFO"));
    o = debugfs(img, "ea_list /home/ubuntu/project/app/index.html");
    CHECK(strstr(o, "user.origin (5) = \"agent\"") != NULL);
    free(o);
    o = debugfs(img, "ea_list /home/ubuntu/project/app");
    CHECK(strstr(o, "user.dir (3) = \"yes\"") != NULL);
    free(o);
    /* a template file became the sandbox's folder; a template folder with content stays */
    CHECK(!strcmp(dstat_of(img, "/home/ubuntu/upload").type, "directory"));
    CHECK(!strcmp(dstat_of(img, "/home/ubuntu/artifacts").type, "directory"));
    CHECK(same_bytes(img, "/home/ubuntu/artifacts/keep.txt", scratch_path("template/home/ubuntu/artifacts/keep.txt")));
    CHECK(st.replaced >= 2 && st.skipped >= 2 && st.hardlinks == 1 && st.symlinks == 2);
    CHECK(st.files == 11 && st.bytes > (10 << 20));

    /* nothing of class secret, cache, temp or runtime */
    const char *absent[] = {"/home/ubuntu/output/.env", "/home/ubuntu/output/notes.txt.swp",
                            "/home/ubuntu/output/key-copy", "/home/ubuntu/.ssh",
                            "/home/ubuntu/project/node_modules", "/tmp/scratch.txt",
                            "/usr/bin/newtool", "/home/ubuntu/a-runtime.txt",
                            "/home/ubuntu/.bashrc_sandbox", "/home/ubuntu/output/null-dev"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++) check_absent(img, absent[i]);
    /* the template where the snapshot had nothing important to say */
    CHECK(same_bytes(img, "/etc/hostname", scratch_path("template/etc/hostname")));
    CHECK(same_bytes(img, "/usr/bin/tool", scratch_path("template/usr/bin/tool")));
    CHECK(same_bytes(img, "/home/ubuntu/.bashrc", scratch_path("template/home/ubuntu/.bashrc")));
}

/* ---- a hostile index ---------------------------------------------------------------- */

static int cmp_entry(const void *x, const void *y)
{
    const store_fentry *a = x, *b = y;
    int c = memcmp(a->path, b->path, a->path_len < b->path_len ? a->path_len : b->path_len);
    return c ? c : (a->path_len > b->path_len) - (a->path_len < b->path_len);
}

static store_fentry mk(const char *path, int type, const store_fentry *like)
{
    store_fentry f = *like;
    f.path = (char *)path;
    f.path_len = (uint32_t)strlen(path);
    f.type = (uint8_t)type;
    f.cls = STORE_CLASS_ARTIFACT;
    return f;
}

static void test_hostile(store_t *s, const store_snapshot *tmpl, const store_snapshot *snap)
{
    const store_findex *fi = snap->files;
    /* the name of report.txt's inode that carries its data (the walker's first) */
    const store_fentry *rep = entry(fi, "output/report.txt");
    if (rep && rep->type == STORE_FT_HARDLINK) rep = store_findex_get(fi, rep->target);
    if (!rep) return;
    char rep_path[600];
    snprintf(rep_path, sizeof rep_path, "%s", rep->path);
    store_extent outside = {.file_off = 0, .disk_off = snap->blobs[0].size, .len = 4096};
    for (int i = 0; i < snap->nblobs; i++)
        if (!strcmp(snap->blobs[i].name, "disk")) outside.disk_off = snap->blobs[i].size - 100;
    store_xattr xs[] = {{"system.data", (uint8_t *)"x", 1}, {"user.ok", (uint8_t *)"1", 1}};
    store_fentry extra[10];
    int n = 0;
    extra[n] = mk("/home/ubuntu/output/evil", STORE_FT_SYMLINK, rep);
    extra[n].target = "/etc";
    extra[n].ext = NULL, extra[n].next = 0, n++;
    extra[n++] = mk("/home/ubuntu/output/evil/passwd", STORE_FT_FILE, rep);   /* through it */
    extra[n++] = mk("/home/ubuntu/output/x/../../../../etc/hostname", STORE_FT_FILE, rep);
    extra[n++] = mk("/home/ubuntu/output//double", STORE_FT_FILE, rep);
    extra[n] = mk("/home/ubuntu/output/outside", STORE_FT_FILE, rep);
    extra[n].ext = &outside, extra[n].next = 1, n++;
    extra[n] = mk("/home/ubuntu/output/inline", STORE_FT_FILE, rep);
    extra[n].ext = NULL, extra[n].next = 0, extra[n].size = 3;
    extra[n].inline_data = (uint8_t *)"abc", extra[n].inline_len = 3;
    extra[n].xattrs = xs, extra[n].nxattrs = 2, n++;
    extra[n++] = mk("/bin/agent-tool", STORE_FT_FILE, rep);    /* the template's /bin link */
    /* 3000 one-byte extents: more pending reads than a run takes at once, many per block */
    enum { NTINY = 3000 };
    store_extent *tiny = calloc(NTINY, sizeof *tiny);
    for (int i = 0; i < NTINY; i++)
        tiny[i] = (store_extent){.file_off = (uint64_t)i, .disk_off = rep->ext[0].disk_off + (uint64_t)i, .len = 1};
    extra[n] = mk("/home/ubuntu/output/tiny-extents", STORE_FT_FILE, rep);
    extra[n].ext = tiny, extra[n].next = NTINY, extra[n].size = NTINY, n++;

    store_fentry *all = malloc((fi->n + n) * sizeof *all);
    memcpy(all, fi->e, fi->n * sizeof *all);
    memcpy(all + fi->n, extra, n * sizeof *all);
    store_findex h = {.e = all, .n = fi->n + n};
    qsort(all, h.n, sizeof *all, cmp_entry);
    /* nanoseconds and a pre-1970 time survive */
    store_fentry *r = (store_fentry *)store_findex_get(&h, rep_path);
    r->mtime_ns = 1700000000123456789LL;
    r->atime_ns = -999999995LL;

    store_snapshot s2 = *snap;
    s2.files = &h;
    char img[1500];
    snprintf(img, sizeof img, "%s", scratch_path("hostile.img"));
    restore_rebuild_stats st = {0};
    store_err e = {{0}};
    int rc = restore_rebuild(s, tmpl, &s2, img, &st, &e);
    if (rc) fprintf(stderr, "restore_rebuild (hostile): %s\n", e.msg);
    CHECK(rc == 0);
    CHECK(run("e2fsck -fn %s > %s 2>&1", img, scratch_path("fsck2.log")) == 0);
    CHECK(same_bytes(img, "/etc/passwd", scratch_path("template/etc/passwd")));
    CHECK(same_bytes(img, "/etc/hostname", scratch_path("template/etc/hostname")));
    char *o = debugfs(img, "stat /home/ubuntu/output/evil");
    CHECK(strstr(o, "Fast link dest: \"/etc\"") != NULL);
    free(o);
    check_absent(img, "/home/ubuntu/output/outside");
    check_absent(img, "/home/ubuntu/output/double");
    CHECK(same_bytes(img, "/usr/bin/agent-tool", scratch_path("sandbox/home/ubuntu/output/report.txt")));
    o = debugfs(img, "stat /bin");
    CHECK(strstr(o, "Fast link dest: \"usr/bin\"") != NULL);
    free(o);
    put(scratch_path("abc.want"), "abc", 3, 0644);
    CHECK(same_bytes(img, "/home/ubuntu/output/inline", scratch_path("abc.want")));
    o = debugfs(img, "ea_list /home/ubuntu/output/inline");
    CHECK(strstr(o, "user.ok (1) = \"1\"") != NULL && !strstr(o, "system.data (1)"));
    free(o);
    CHECK(st.xattrs_dropped == 1);
    CHECK(run("head -c %d %s > %s", NTINY, scratch_path("sandbox/home/ubuntu/output/report.txt"), scratch_path("head.want")) == 0);
    CHECK(same_bytes(img, "/home/ubuntu/output/tiny-extents", scratch_path("head.want")));
    CHECK(st.skipped >= 4 + 2);
    dstat d = dstat_of(img, rep_path);
    CHECK(d.mtime_ns == 1700000000123456789LL && d.atime_ns == -999999995LL);

    /* an index out of order is refused whole, and nothing is left behind */
    char img3[1500];
    snprintf(img3, sizeof img3, "%s", scratch_path("unsorted.img"));
    store_fentry t = all[h.n - 1];
    all[h.n - 1] = all[1];
    all[1] = t;
    rc = restore_rebuild(s, tmpl, &s2, img3, &st, &e);
    CHECK(rc == -EUCLEAN);
    CHECK(access(img3, F_OK) < 0 && access(scratch_path("unsorted.img.tmp"), F_OK) < 0);
    free(all);
    free(tiny);
}

/* An ext3 template with 1 KiB blocks: block-mapped files (no extents), another block size. */
static void test_ext3(store_t *s, const store_snapshot *snap)
{
    CHECK(mkfs("ext3", 1024, scratch_path("template"), scratch_path("ext3.img"), "64M") == 0);
    store_snapshot *t3 = ingest_disk(s, "tmpl-ext3", scratch_path("ext3.img"));
    if (!t3) return;
    store_err e = {{0}};
    char img[1500];
    snprintf(img, sizeof img, "%s", scratch_path("rebuilt3.img"));
    restore_rebuild_stats st = {0};
    int rc = restore_rebuild(s, t3, snap, img, &st, &e);
    if (rc) fprintf(stderr, "restore_rebuild (ext3): %s\n", e.msg);
    CHECK(rc == 0 && st.files == 11);
    CHECK(run("e2fsck -fn %s > %s 2>&1", img, scratch_path("fsck4.log")) == 0);
    const char *files[] = {"output/big.bin", "output/sparse.img", "output/report.txt",
                           "output/deep/a/b/c/d/e.bin", "upload/data.csv"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[600];
        snprintf(path, sizeof path, "/home/ubuntu/%s", files[i]);
        CHECK(same_bytes(img, path, scratch_path("sandbox/home/ubuntu/%s", files[i])));
    }
    dstat d = dstat_of(img, "/home/ubuntu/output/sparse.img");
    CHECK(d.size == 64 << 20 && d.blockcount < 64 * 2);   /* a few 1 KiB blocks + map blocks */
    store_snapshot_free(t3);
}

/* A template with no room for the important files: ENOSPC naming a file, no image. */
static void test_enospc(store_t *s, const store_snapshot *snap)
{
    CHECK(run("mkdir -p %s && head -c 9000000 /dev/urandom > %s/filler", scratch_path("small"), scratch_path("small")) == 0);
    CHECK(mkfs("ext4", 4096, scratch_path("small"), scratch_path("small.img"), "16M") == 0);
    store_snapshot *small = ingest_disk(s, "tmpl-small", scratch_path("small.img"));
    if (!small) return;
    store_err e = {{0}};
    restore_rebuild_stats st = {0};
    int rc = restore_rebuild(s, small, snap, scratch_path("full.img"), &st, &e);
    fprintf(stderr, "expected ENOSPC: %s\n", e.msg);
    CHECK(rc == -ENOSPC && strstr(e.msg, "/home/ubuntu/") != NULL);
    CHECK(access(scratch_path("full.img"), F_OK) < 0 && access(scratch_path("full.img.tmp"), F_OK) < 0);
    store_snapshot_free(small);
}

int main(void)
{
    if (scratch_make("rebuild.")) return 1;
    make_template();
    CHECK(run("cp -a %s %s", scratch_path("template"), scratch_path("sandbox")) == 0);
    make_sandbox();
    char longt[200];
    memset(longt, 'l', sizeof longt - 1);
    put(scratch_path("longlink.want"), longt, sizeof longt - 1, 0644);
    CHECK(mkfs("ext4", 4096, scratch_path("template"), scratch_path("template.img"), "64M") == 0);
    CHECK(mkfs("ext4", 4096, scratch_path("sandbox"), scratch_path("sandbox.img"), "160M") == 0);

    store_err e = {{0}};
    store_t *s = NULL;
    snap_policy *pol = NULL;
    CHECK(store_init(scratch_path("store"), &e) == 0);
    CHECK(store_open(scratch_path("store"), STORE_WRITE, &s, &e) == 0);
    CHECK(snap_policy_load(store_dir(s), NULL, NULL, &pol, &e) == 0);
    store_snapshot *tmpl = ingest_disk(s, "tmpl-base", scratch_path("template.img")), *snap = NULL;
    snap_request sq = {.tenant = "t", .sandbox = "sb1", .tier = STORE_TIER_FREE, .nblobs = 1,
                       .blob_name = {"disk"}, .blob_path = {scratch_path("sandbox.img")},
                       .template_name = "base", .policy = pol};
    CHECK(snap_ingest(s, &sq, &snap, &e) == 0);
    if (sq.warning[0]) fprintf(stderr, "walker: %s\n", sq.warning);
    CHECK(snap && snap->files);
    if (tmpl && snap && snap->files) {
        test_rebuild(s, tmpl, snap);
        test_hostile(s, tmpl, snap);
        test_ext3(s, snap);
        test_enospc(s, snap);
    } else {
        fprintf(stderr, "setup failed: %s\n", e.msg);
    }
    store_snapshot_free(tmpl);
    store_snapshot_free(snap);
    snap_policy_free(pol);
    store_close(s);
    scratch_done(failures);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
