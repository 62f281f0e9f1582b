/* Unit tests of restore/'s extraction (select.c, filedata.c, folder.c, tar.c): cat, extract
 * to a folder, extract to tar, on a real store holding a real disk blob, with a file index built here (good files and hostile
 * entries). Nothing may appear outside the output folder. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "restore/restore.h"
#include "snapshotter/snapshotter.h"

#include "tests/unit/check.h"
#include "tests/unit/scratch.h"

#define PAGES 64
static uint8_t disk[PAGES * 4096];

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- the index ------------------------------------------------------------------------ */

static store_findex *fi;

static store_fentry *add(const char *path, int type, unsigned perm, int cls)
{
    fi->e = realloc(fi->e, (fi->n + 1) * sizeof *fi->e);
    store_fentry *f = &fi->e[fi->n++];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    f->path_len = (uint32_t)strlen(path);
    f->type = (uint8_t)type;
    f->cls = (uint8_t)cls;
    static const unsigned fmt[] = {0, S_IFREG, S_IFDIR, S_IFLNK, S_IFREG, S_IFCHR, S_IFBLK,
                                   S_IFIFO, S_IFSOCK};
    f->mode = fmt[type] | perm;
    f->uid = 1000 + (uint32_t)fi->n;
    f->gid = 2000 + (uint32_t)fi->n;
    f->mtime_ns = 1600000000123456789LL + (int64_t)fi->n * 1000000007LL;
    f->atime_ns = 1650000000987654321LL + (int64_t)fi->n;
    f->nlink = 1;
    return f;
}

static store_fentry *add_file(const char *path, unsigned perm, int cls, uint64_t size)
{
    store_fentry *f = add(path, STORE_FT_FILE, perm, cls);
    f->size = size;
    return f;
}

static void add_ext(store_fentry *f, uint64_t file_off, uint64_t disk_off, uint64_t len)
{
    f->ext = realloc(f->ext, (f->next + 1) * sizeof *f->ext);
    f->ext[f->next++] = (store_extent){file_off, disk_off, len};
}

static store_fentry *add_link(const char *path, int type, const char *target, int cls)
{
    store_fentry *f = add(path, type, type == STORE_FT_SYMLINK ? 0777 : 0644, cls);
    f->target = strdup(target);
    f->size = type == STORE_FT_SYMLINK ? strlen(target) : 0;
    return f;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const store_fentry *)a)->path, ((const store_fentry *)b)->path);
}

static char long_name[201], huge_name[301], long_target[151];

static void build_index(void)
{
    fi = calloc(1, sizeof *fi);
    add("/", STORE_FT_DIR, 0755, STORE_CLASS_RUNTIME);
    /* good tree */
    add("/t", STORE_FT_DIR, 0751, STORE_CLASS_ARTIFACT);
    store_fentry *f = add_file("/t/a.txt", 0640, STORE_CLASS_ARTIFACT, 10000);
    add_ext(f, 0, 3 * 4096, 12288);   /* runs past the size: block granularity */
    f->nlink = 2;
    f->xattrs = calloc(2, sizeof *f->xattrs);
    f->nxattrs = 2;
    f->xattrs[0] = (store_xattr){strdup("user.origin"), malloc(6), 6};
    memcpy(f->xattrs[0].value, "cai\0rn", 6);   /* binary values are kept */
    f->xattrs[1] = (store_xattr){strdup("security.capability"), (uint8_t *)strdup("x"), 1};
    add_ext(add_file("/t/bad\xff\xfe", 0600, STORE_CLASS_ARTIFACT, 4096), 0, 7 * 4096, 4096);
    add_file("/t/empty", 0644, STORE_CLASS_ARTIFACT, 0);
    add_link("/t/hl", STORE_FT_HARDLINK, "/t/a.txt", STORE_CLASS_ARTIFACT);
    add_link("/t/hl2", STORE_FT_HARDLINK, "/u/first", STORE_CLASS_ARTIFACT);
    f = add_file("/t/inline", 0644, STORE_CLASS_ARTIFACT, 13);
    f->inline_data = (uint8_t *)strdup("hello inline\n");
    f->inline_len = 13;
    add_link("/t/abs", STORE_FT_SYMLINK, "/etc/passwd", STORE_CLASS_ARTIFACT);
    add_link("/t/dangling", STORE_FT_SYMLINK, "nope/none", STORE_CLASS_ARTIFACT);
    add("/t/fifo", STORE_FT_FIFO, 0644, STORE_CLASS_ARTIFACT);
    add_link("/t/longsym", STORE_FT_SYMLINK, long_target, STORE_CLASS_ARTIFACT);
    f = add_file("/t/name\nwith newline", 0640, STORE_CLASS_ARTIFACT, 5000);
    add_ext(f, 0, 20 * 4096, 4096);
    add_ext(f, 4096, 21 * 4096 + 100, 904);   /* unaligned in the disk */
    add("/t/ro", STORE_FT_DIR, 0555, STORE_CLASS_ARTIFACT);
    add_ext(add_file("/t/ro/f", 0444, STORE_CLASS_ARTIFACT, 100), 0, 30 * 4096, 100);
    add_ext(add_file("/t/setuid", 04755, STORE_CLASS_ARTIFACT, 4096), 0, 31 * 4096, 4096);
    f = add_file("/t/sparse", 0644, STORE_CLASS_ARTIFACT, 8 << 20);
    add_ext(f, 0, 40 * 4096, 4096);
    add_ext(f, 1 << 20, 41 * 4096, 8192);
    add_ext(f, 2 << 20, 10 * 4096, 8192);   /* zero pages of the disk: stay holes */
    add("/t/sub", STORE_FT_DIR, 0700, STORE_CLASS_ARTIFACT);
    add("/t/sub/deep", STORE_FT_DIR, 0755, STORE_CLASS_PROJECT);
    add_ext(add_file("/t/sub/deep/f", 0644, STORE_CLASS_PROJECT, 4096), 0, 50 * 4096, 4096);
    char p[512];
    snprintf(p, sizeof p, "/t/sub/deep/%s", long_name);
    add_ext(add_file(p, 0644, STORE_CLASS_PROJECT, 3000), 0, 51 * 4096, 3000);
    add_link("/t/sym", STORE_FT_SYMLINK, "a.txt", STORE_CLASS_ARTIFACT);
    add("/u", STORE_FT_DIR, 0755, STORE_CLASS_RUNTIME);
    f = add_file("/u/first", 0644, STORE_CLASS_RUNTIME, 4096);
    add_ext(f, 0, 52 * 4096, 4096);
    f->nlink = 2;
    /* hostile */
    add_ext(add_file("/../../cairn-esc1", 0644, 0, 10), 0, 0, 10);
    add_ext(add_file("/a/../../cairn-esc2", 0644, 0, 10), 0, 0, 10);
    add("/h", STORE_FT_DIR, 0755, 0);
    add_ext(add_file("/h/./x", 0644, 0, 10), 0, 0, 10);
    add_ext(add_file("/h//x", 0644, 0, 10), 0, 0, 10);
    snprintf(p, sizeof p, "/h/%s", huge_name);
    add_ext(add_file(p, 0644, 0, 10), 0, 0, 10);
    add_ext(add_file("/h/badext", 0644, 0, 8192), 0, (PAGES - 1) * 4096, 8192);
    add_link("/h/c1", STORE_FT_SYMLINK, "c2", 0);
    add_ext(add_file("/h/c1/esc", 0644, 0, 10), 0, 0, 10);
    add_link("/h/c2", STORE_FT_SYMLINK, "c3", 0);
    add_link("/h/c3", STORE_FT_SYMLINK, "../../../../../../../..", 0);
    add_link("/h/hl-bad", STORE_FT_HARDLINK, "/h/c1", 0);
    add_link("/h/hl-dots", STORE_FT_HARDLINK, "/../../cairn-esc1", 0);
    add_link("/h/link", STORE_FT_SYMLINK, "/", 0);
    add_ext(add_file("/h/link/cairn-esc3", 0644, 0, 10), 0, 0, 10);
    add_ext(add_file("/h/link/tmp/cairn-esc4", 0644, 0, 10), 0, 0, 10);
    add_link("/h/up", STORE_FT_SYMLINK, "../../..", 0);
    add_ext(add_file("/h/up/cairn-esc5", 0644, 0, 10), 0, 0, 10);
    /* secrets */
    add("/s", STORE_FT_DIR, 0755, 0);
    add("/s/.ssh", STORE_FT_DIR, 0700, STORE_CLASS_SECRET);
    add_ext(add_file("/s/.ssh/id_rsa", 0600, STORE_CLASS_SECRET, 100), 0, 60 * 4096, 100);
    add_ext(add_file("/s/.ssh/known", 0644, 0, 100), 0, 61 * 4096, 100);
    add_link("/s/keylink", STORE_FT_HARDLINK, "/s/.ssh/id_rsa", 0);
    add_ext(add_file("/s/ok", 0644, 0, 100), 0, 62 * 4096, 100);
    qsort(fi->e, fi->n, sizeof *fi->e, by_path);
}

static const store_fentry *get(const char *path)
{
    return store_findex_get(fi, path);
}

/* The bytes a file entry must have, from the disk image this test wrote. */
static uint8_t *expected(const store_fentry *f)
{
    uint8_t *b = calloc(1, f->size + 1);
    if (f->inline_data) memcpy(b, f->inline_data, f->inline_len);
    for (uint32_t k = 0; k < f->next; k++) {
        uint64_t n = f->ext[k].len;
        if (f->ext[k].file_off + n > f->size) n = f->size - f->ext[k].file_off;
        memcpy(b + f->ext[k].file_off, disk + f->ext[k].disk_off, n);
    }
    return b;
}

static int file_equals(const char *path, const uint8_t *want, uint64_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    uint8_t *got = malloc(size + 1);
    ssize_t n = read(fd, got, size + 1);
    close(fd);
    int ok = n == (ssize_t)size && !memcmp(got, want, size);
    free(got);
    return ok;
}

/* ---- the checks ------------------------------------------------------------------------ */

static void test_cat(store_t *s, store_snapshot *snap)
{
    const char *names[] = {"/t/a.txt", "/t/hl", "/t/sparse", "/t/inline", "/t/empty",
                           "/t/name\nwith newline"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const store_fentry *f = get(names[i]);
        const store_fentry *d = f->type == STORE_FT_HARDLINK ? get(f->target) : f;
        int fd = open(scratch_path("cat.out"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        store_err e;
        int rc = restore_cat(s, snap, fi, f, fd, &e);
        close(fd);
        if (rc) fprintf(stderr, "cat %s: %s\n", names[i], e.msg);
        CHECK(rc == 0);
        uint8_t *want = expected(d);
        CHECK(file_equals(scratch_path("cat.out"), want, d->size));
        free(want);
    }
    CHECK(restore_is_secret(fi, get("/s/.ssh/id_rsa")) && restore_is_secret(fi, get("/s/keylink")));
    CHECK(restore_is_secret(fi, get("/s/.ssh/known")) && !restore_is_secret(fi, get("/s/ok")));
    store_err e;
    CHECK(restore_cat(s, snap, fi, get("/t/sub"), 1, &e) == -EINVAL);
    CHECK(restore_cat(s, snap, fi, get("/h/badext"), 1, &e) < 0);
    CHECK(strstr(e.msg, "outside the disk") != NULL);
}

static int count_fn(void *arg, const store_fentry *f)
{
    (void)f;
    (*(int *)arg)++;
    return 0;
}

static void test_select(void)
{
    int n = 0;
    restore_extract_stats st = {0};
    store_err e;
    const char *deep[] = {"/t//sub/"};
    CHECK(restore_select(fi, deep, 1, 0, 0, count_fn, &n, &st, &e) == 0);
    CHECK(n == 4);   /* sub, deep, deep/f, deep/long */
    n = 0;
    const char *t[] = {"/t"};
    CHECK(restore_select(fi, t, 1, 1u << STORE_CLASS_PROJECT, 0, count_fn, &n, &st, &e) == 0);
    CHECK(n == 3);
    const char *missing[] = {"/t/nope"};
    CHECK(restore_select(fi, missing, 1, 0, 0, count_fn, &n, &st, &e) == -ENOENT);
    memset(&st, 0, sizeof st);
    n = 0;
    const char *sec[] = {"/s"};
    CHECK(restore_select(fi, sec, 1, 0, 0, count_fn, &n, &st, &e) == 0);
    CHECK(n == 2 && st.secrets_skipped == 4);   /* .ssh, id_rsa, known below it, keylink */
    n = 0;
    CHECK(restore_select(fi, sec, 1, 0, 1, count_fn, &n, &st, &e) == 0 && n == 6);
    /* A path twice (a folder, then a symlink of the same name) is a damaged index. */
    store_findex dup = *fi;
    dup.e = malloc((fi->n + 1) * sizeof *dup.e);
    size_t k = 0;
    for (size_t i = 0; i < fi->n; i++) {
        dup.e[k++] = fi->e[i];
        if (!strcmp(fi->e[i].path, "/t/sub")) dup.e[k++] = *get("/t/sym"), dup.e[k - 1].path = "/t/sub";
    }
    dup.n = k;
    CHECK(restore_select(&dup, NULL, 0, 0, 0, count_fn, &n, &st, &e) == -EINVAL);
    free(dup.e);
}

/* Checks a good tree below dir (from extract or tar) against the index. */
static void check_tree(const char *dir, int check_atime)
{
    char p[1024];
    const char *names[] = {"/t", "/t/a.txt", "/t/bad\xff\xfe", "/t/empty", "/t/inline",
                           "/t/name\nwith newline", "/t/ro", "/t/ro/f", "/t/setuid",
                           "/t/sparse", "/t/sub", "/t/sub/deep", "/t/sub/deep/f", "/u/first"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const store_fentry *f = get(names[i]);
        struct stat sb;
        snprintf(p, sizeof p, "%s%s", dir, names[i]);
        if (lstat(p, &sb)) {
            fprintf(stderr, "missing %s\n", p);
            failures++;
            continue;
        }
        CHECK((sb.st_mode & S_IFMT) == (f->mode & S_IFMT));
        CHECK((sb.st_mode & 07777) == (f->mode & 07777 & ~(unsigned)(S_ISUID | S_ISGID)));
        CHECK(sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec == f->mtime_ns);
        if (check_atime)
            CHECK(sb.st_atim.tv_sec * 1000000000LL + sb.st_atim.tv_nsec == f->atime_ns);
        if (geteuid() == 0) CHECK(sb.st_uid == f->uid && sb.st_gid == f->gid);
        if (f->type == STORE_FT_FILE) {
            uint8_t *want = expected(f);
            CHECK(file_equals(p, want, f->size));
            free(want);
        }
    }
    struct stat a, b, c;
    snprintf(p, sizeof p, "%s/t/sparse", dir);
    CHECK(stat(p, &a) == 0 && a.st_size == 8 << 20 && a.st_blocks * 512 <= 64 * 1024);
    snprintf(p, sizeof p, "%s/t/a.txt", dir);
    CHECK(stat(p, &a) == 0);
    snprintf(p, sizeof p, "%s/t/hl", dir);
    CHECK(lstat(p, &b) == 0 && S_ISREG(b.st_mode) && a.st_ino == b.st_ino);
    char v[16];
    snprintf(p, sizeof p, "%s/t/a.txt", dir);
    CHECK(getxattr(p, "user.origin", v, sizeof v) == 6 && !memcmp(v, "cai\0rn", 6));
    CHECK(getxattr(p, "security.capability", v, sizeof v) < 0);
    snprintf(p, sizeof p, "%s/t/hl2", dir);
    CHECK(lstat(p, &b) == 0);
    snprintf(p, sizeof p, "%s/u/first", dir);
    CHECK(lstat(p, &c) == 0 && b.st_ino == c.st_ino && c.st_nlink == 2);
    const char *links[][2] = {{"/t/sym", "a.txt"}, {"/t/abs", "/etc/passwd"},
                              {"/t/dangling", "nope/none"}, {"/t/longsym", long_target}};
    for (size_t i = 0; i < 4; i++) {
        char t[256] = {0};
        snprintf(p, sizeof p, "%s%s", dir, links[i][0]);
        CHECK(lstat(p, &a) == 0 && S_ISLNK(a.st_mode));
        CHECK(readlink(p, t, sizeof t - 1) == (ssize_t)strlen(links[i][1]) && !strcmp(t, links[i][1]));
    }
    snprintf(p, sizeof p, "%s/t/sub/deep/%s", dir, long_name);
    CHECK(access(p, F_OK) == 0);
    snprintf(p, sizeof p, "%s/t/fifo", dir);
    CHECK(lstat(p, &a) != 0);
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted listing of a folder, names joined by newlines. */
static char *listing(const char *dir)
{
    char *names[1024];
    size_t n = 0, len = 1;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) && n < 1024)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            names[n++] = strdup(de->d_name);
            len += strlen(de->d_name) + 1;
        }
    if (d) closedir(d);
    qsort(names, n, sizeof *names, by_str);
    char *s = calloc(1, len);
    for (size_t i = 0; i < n; i++) {
        strcat(s, names[i]);
        strcat(s, "\n");
        free(names[i]);
    }
    return s;
}

static int no_escape_files(void)
{
    const char *esc[] = {"/cairn-esc3", "/tmp/cairn-esc4", "/cairn-esc1", "/cairn-esc2",
                         "/cairn-esc5"};
    int ok = 1;
    for (size_t i = 0; i < 5; i++)
        if (access(esc[i], F_OK) == 0) ok = 0;
    return ok;
}

static void test_extract(store_t *s, store_snapshot *snap)
{
    CHECK(no_escape_files());
    mkdir(scratch_path("par"), 0755);
    char *before_root = listing(scratch_root), *before_par = listing(scratch_path("par"));
    restore_extract_stats st = {0};
    store_err e;
    int rc = restore_extract_dir(s, snap, fi, NULL, 0, 0, 0, scratch_path("par/out"), &st, &e);
    CHECK(rc == -EIO);   /* /h/badext failed; the rest was refused or extracted */
    fprintf(stderr, "extract all: %s\n", e.msg);
    CHECK(st.refused == 10 && st.failed == 1 && st.specials == 1 && st.secrets_skipped == 4);
    CHECK(st.hardlinks == 2);   /* hl, u/first -> t/hl2 (hl2 and h/hl-dots are copies) */
    CHECK(st.symlinks == 9);
    check_tree(scratch_path("par/out"), 1);
    CHECK(access(scratch_path("par/out/h/badext"), F_OK) != 0);   /* no file with wrong bytes */
    char *after_root = listing(scratch_root), *after_par = listing(scratch_path("par"));
    CHECK(!strcmp(after_par, "out\n") && !strcmp(before_par, ""));
    if (strcmp(before_root, after_root)) fprintf(stderr, "%s--\n%s", before_root, after_root);
    CHECK(!strcmp(before_root, after_root));
    CHECK(no_escape_files());
    free(before_root);
    free(after_root);
    free(before_par);
    free(after_par);

    /* Again into the same folder: nothing is overwritten. */
    const char *t[] = {"/t"};
    CHECK(restore_extract_dir(s, snap, fi, t, 1, 0, 0, scratch_path("out2"), NULL, &e) == 0);
    int fd = open(scratch_path("out2/t/empty"), O_WRONLY);
    CHECK(write(fd, "changed", 7) == 7);
    close(fd);
    memset(&st, 0, sizeof st);
    CHECK(restore_extract_dir(s, snap, fi, t, 1, 0, 0, scratch_path("out2"), &st, &e) == -EPERM);
    CHECK(st.files == 0 && st.refused == 16 && strstr(e.msg, "already exists"));
    CHECK(file_equals(scratch_path("out2/t/empty"), (const uint8_t *)"changed", 7));

    /* A symlink planted in the output is never followed. */
    mkdir(scratch_path("victim"), 0755);
    mkdir(scratch_path("out3"), 0755);
    CHECK(symlink(scratch_path("victim"), scratch_path("out3/t")) == 0);
    memset(&st, 0, sizeof st);
    CHECK(restore_extract_dir(s, snap, fi, t, 1, 0, 0, scratch_path("out3"), &st, &e) == -EPERM);
    char *v = listing(scratch_path("victim"));
    CHECK(!strcmp(v, ""));
    free(v);

    /* Only the project class: its folders are made around it. */
    memset(&st, 0, sizeof st);
    CHECK(restore_extract_dir(s, snap, fi, t, 1, 1u << STORE_CLASS_PROJECT, 0, scratch_path("out4"),
                              &st, &e) == 0);
    CHECK(st.files == 2 && st.dirs == 1 && access(scratch_path("out4/t/sub/deep/f"), F_OK) == 0);
    CHECK(access(scratch_path("out4/t/a.txt"), F_OK) != 0);

    /* Secrets only when asked. */
    memset(&st, 0, sizeof st);
    const char *sp[] = {"/s"};
    CHECK(restore_extract_dir(s, snap, fi, sp, 1, 0, 1, scratch_path("out5"), &st, &e) == 0);
    CHECK(st.secrets_skipped == 0 && access(scratch_path("out5/s/.ssh/id_rsa"), F_OK) == 0);
}

/* Compares two extracted trees: names, types, modes, owners, mtimes, bytes, links. */
static void same_tree(const char *a, const char *b)
{
    DIR *d = opendir(a);
    CHECK(d != NULL);
    if (!d) return;
    char *la = listing(a), *lb = listing(b);
    if (strcmp(la, lb)) fprintf(stderr, "%s vs %s:\n%s--\n%s", a, b, la, lb);
    CHECK(!strcmp(la, lb));
    free(la);
    free(lb);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char pa[2048], pb[2048];
        snprintf(pa, sizeof pa, "%s/%s", a, de->d_name);
        snprintf(pb, sizeof pb, "%s/%s", b, de->d_name);
        struct stat sa, sb;
        if (lstat(pa, &sa) || lstat(pb, &sb)) continue;
        CHECK(sa.st_mode == sb.st_mode && sa.st_uid == sb.st_uid && sa.st_gid == sb.st_gid);
        CHECK(sa.st_nlink == sb.st_nlink);
        if (!S_ISLNK(sa.st_mode))
            CHECK(sa.st_mtim.tv_sec == sb.st_mtim.tv_sec && sa.st_mtim.tv_nsec == sb.st_mtim.tv_nsec);
        if (S_ISDIR(sa.st_mode)) {
            same_tree(pa, pb);
        } else if (S_ISREG(sa.st_mode)) {
            CHECK(sa.st_size == sb.st_size && sb.st_blocks <= sa.st_blocks + 32);
            uint8_t *want = malloc((size_t)sa.st_size + 1);
            int fd = open(pa, O_RDONLY);
            CHECK(read(fd, want, (size_t)sa.st_size + 1) == sa.st_size);
            close(fd);
            CHECK(file_equals(pb, want, (uint64_t)sa.st_size));
            free(want);
        } else if (S_ISLNK(sa.st_mode)) {
            char ta[256] = {0}, tb[256] = {0};
            CHECK(readlink(pa, ta, 255) > 0 && readlink(pb, tb, 255) > 0 && !strcmp(ta, tb));
        }
    }
    closedir(d);
}

static void test_tar(store_t *s, store_snapshot *snap)
{
    restore_extract_stats st = {0};
    store_err e;
    int fd = open(scratch_path("all.tar"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int rc = restore_extract_tar(s, snap, fi, NULL, 0, 0, 0, fd, &st, &e);
    close(fd);
    CHECK(rc == -EIO);   /* /h/badext, as in the folder */
    CHECK(st.refused == 10 && st.failed == 1 && st.specials == 1 && st.secrets_skipped == 4);
    CHECK(st.hardlinks == 2 && st.symlinks == 9);

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "tar -tvf %s > %s 2>&1", scratch_path("all.tar"), scratch_path("list"));
    CHECK(run(cmd) == 0);
    uint8_t *text = NULL;
    FILE *lf = fopen(scratch_path("list"), "r");
    text = calloc(1, 1 << 16);
    CHECK(fread(text, 1, (1 << 16) - 1, lf) > 0);
    fclose(lf);
    char subdir[64];
    snprintf(subdir, sizeof subdir, "drwx------ %u/%u ", get("/t/sub")->uid, get("/t/sub")->gid);
    const char *want[] = {"t/hl link to t/a.txt", "u/first link to t/hl2", "t/sym -> a.txt",
                          "t/abs -> /etc/passwd", " 8388608 ", "t/sparse\n",
                          "t/name\\nwith newline", subdir, "t/sub/deep/LLLL"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        if (!strstr((char *)text, want[i])) fprintf(stderr, "tar -tv lacks '%s'\n", want[i]);
        CHECK(strstr((char *)text, want[i]) != NULL);
    }
    CHECK(!strstr((char *)text, "esc") && !strstr((char *)text, "GNUSparse") &&
          !strstr((char *)text, "PaxHeader"));
    free(text);
    /* No member name is absolute or goes up. */
    snprintf(cmd, sizeof cmd, "tar -tf %s > %s", scratch_path("all.tar"), scratch_path("names"));
    CHECK(run(cmd) == 0);
    lf = fopen(scratch_path("names"), "r");
    char line[1024];
    int members = 0;
    while (lf && fgets(line, sizeof line, lf)) {
        members++;
        line[strcspn(line, "\n")] = 0;
        CHECK(line[0] != '/' && strcmp(line, "..") && !strstr(line, "../") &&
              !(strlen(line) >= 3 && !strcmp(line + strlen(line) - 3, "/..")));
    }
    if (lf) fclose(lf);
    CHECK(members == 31);

    mkdir(scratch_path("par2"), 0755);
    mkdir(scratch_path("par2/tx"), 0755);
    char *before_root = listing(scratch_root);
    snprintf(cmd, sizeof cmd, "cd %s && tar --xattrs --xattrs-include='user.*' -xpf %s",
             scratch_path("par2/tx"), scratch_path("all.tar"));
    CHECK(run(cmd) == 0);
    check_tree(scratch_path("par2/tx"), 0);
    same_tree(scratch_path("par/out"), scratch_path("par2/tx"));
    char *after_root = listing(scratch_root), *par2 = listing(scratch_path("par2"));
    CHECK(!strcmp(before_root, after_root) && !strcmp(par2, "tx\n"));
    CHECK(no_escape_files());
    free(before_root);
    free(after_root);
    free(par2);

    /* Only /t: hl2's inode (/u/first) is not in the stream, so hl2 is a copy. */
    const char *t[] = {"/t"};
    memset(&st, 0, sizeof st);
    fd = open(scratch_path("t.tar"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(restore_extract_tar(s, snap, fi, t, 1, 0, 0, fd, &st, &e) == 0);
    close(fd);
    CHECK(st.hardlinks == 1 && st.specials == 1);
    mkdir(scratch_path("tx2"), 0755);
    snprintf(cmd, sizeof cmd, "cd %s && tar -xf %s", scratch_path("tx2"), scratch_path("t.tar"));
    CHECK(run(cmd) == 0);
    CHECK(file_equals(scratch_path("tx2/t/hl2"), disk + 52 * 4096, 4096));
}

int main(void)
{
    if (scratch_make("cairn-extract.")) return 1;
    memset(long_name, 'L', 200);
    memset(huge_name, 'H', 300);
    for (int i = 0; i < 150; i++) long_target[i] = "abcdefghij/"[i % 11];
    for (uint64_t pg = 0; pg < PAGES; pg++) {
        uint64_t x = pg * 0x9e3779b97f4a7c15ULL + 1;
        for (size_t i = 0; i < 4096; i += 8) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            memcpy(disk + pg * 4096 + i, &x, 8);
        }
    }
    memset(disk + 10 * 4096, 0, 2 * 4096);
    int fd = open(scratch_path("disk.img"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && write(fd, disk, sizeof disk) == (ssize_t)sizeof disk);
    close(fd);

    store_err e;
    store_t *s = NULL;
    store_snapshot *snap = NULL;
    if (store_init(scratch_path("store"), &e) || store_open(scratch_path("store"), STORE_WRITE, &s, &e)) {
        fprintf(stderr, "store: %s\n", e.msg);
        return 1;
    }
    snap_request req = {.tenant = "t1", .sandbox = "sb1", .tier = STORE_TIER_FREE, .nblobs = 1};
    req.blob_name[0] = "disk";
    req.blob_path[0] = scratch_path("disk.img");
    if (snap_ingest(s, &req, &snap, &e)) {
        fprintf(stderr, "ingest: %s\n", e.msg);
        return 1;
    }
    build_index();
    test_cat(s, snap);
    test_select();
    test_extract(s, snap);
    test_tar(s, snap);

    store_findex_free(fi);
    store_snapshot_free(snap);
    store_close(s);
    scratch_done(failures);
    printf("%s: %d failures\n", __FILE__, failures);
    return failures != 0;
}
