/* cairn-corpus: a reproducible corpus of microVM snapshots that looks like the real thing.
 *
 * The numbers it imitates were measured on real QEMU microVMs (docs: /work/shared/notes/vm-harness.md):
 * ~70% of guest pages are zero (mostly holes of a share=on memory file), ~55% of a sandbox's non-zero
 * pages also occur in other sandboxes (kernel, initramfs, page cache of the template disk), about half
 * of those at the same offset, and two snapshots of one sandbox differ in ~1.5% of their pages.
 * Page bytes come from real files under /usr so that compressors see real code and text, not noise.
 * Everything is a function of --seed (and of this machine's /usr): same seed, same bytes. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define PAGE 4096u
#define T0 1704067200LL /* 2024-01-01: every timestamp in the disks derives from it */
#define FORMAT 2        /* bump when the output for a given seed changes */

/* A page map entry: what one guest page holds. */
enum { K_HOLE, K_ZERO, K_TPL, K_PRIV };
#define ENT(k, i) ((uint32_t)(k) << 30 | (uint32_t)(i))
#define KIND(e) ((e) >> 30)
#define IDX(e) ((e)&0x3fffffffu)
#define FREE_SLOT ENT(K_HOLE, 1)

enum { TAG_DISKSET = 1, TAG_TPLPOOL, TAG_PRIVPOOL, TAG_FIXED, TAG_LAYOUT, TAG_EVOLVE, TAG_PRIV,
       TAG_VMS, TAG_VMSK, TAG_FW, TAG_FILES, TAG_NPM, TAG_LOG, TAG_PIP, TAG_UUID };

static struct {
    const char *out;
    int sandboxes, snapshots;
    uint64_t mem_size, disk_size, seed;
    bool disk, json;
} O = {NULL, 3, 3, 256ull << 20, 256ull << 20, 1, true, false};

static bool tty;

/* ---------- small utilities ---------- */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (tty) fputs("\n", stderr);
    fputs("cairn-corpus: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory (%zu bytes)", n);
    return p;
}
static void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) die("out of memory");
    return p;
}

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s;
    if (vasprintf(&s, fmt, ap) < 0) die("out of memory");
    va_end(ap);
    return s;
}

static void progress(const char *fmt, ...)
{
    if (!tty) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("\r\033[Kcairn-corpus: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

typedef struct { uint8_t *p; size_t n, cap; } buf_t;

static void bput(buf_t *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bbyte(buf_t *b, uint8_t v) { bput(b, &v, 1); }
static void bbe32(buf_t *b, uint32_t v)
{
    uint8_t x[4] = {v >> 24, v >> 16, v >> 8, v};
    bput(b, x, 4);
}
static void bbe64(buf_t *b, uint64_t v) { bbe32(b, v >> 32), bbe32(b, (uint32_t)v); }
static void bprintf(buf_t *b, const char *fmt, ...)
{
    va_list ap, aq;
    va_start(ap, fmt);
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    vsnprintf((char *)b->p + b->n, n + 1, fmt, aq);
    va_end(aq);
    b->n += n;
}

static void pwrite_all(int fd, const void *p, size_t n, off_t off, const char *path)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("write %s: %s", path, strerror(errno));
        p = (const uint8_t *)p + w, n -= w, off += w;
    }
}

static void write_file(const char *path, const void *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) die("create %s: %s", path, strerror(errno));
    pwrite_all(fd, p, n, 0, path);
    if (fchmod(fd, mode) || close(fd)) die("close %s: %s", path, strerror(errno));
}

static void mkdirs(const char *path)
{
    char *p = xasprintf("%s", path);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST) die("mkdir %s: %s", p, strerror(errno));
        if (!(*s = c)) break;
    }
    free(p);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)f;
    return (flag == FTW_DP ? rmdir(p) : unlink(p)) ? -1 : 0;
}
static void rm_rf(const char *path)
{
    if (access(path, F_OK)) return;
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS)) die("remove %s: %s", path, strerror(errno));
}

static bool is_zero(const uint8_t *p, size_t n)
{
    static const uint8_t z[PAGE];
    for (; n >= PAGE; p += PAGE, n -= PAGE)
        if (memcmp(p, z, PAGE)) return false;
    return !n || !memcmp(p, z, n);
}

/* mke2fs and debugfs live in sbin, which a non-root PATH may lack. */
static const char *tool(const char *name)
{
    static char buf[2][64];
    static const char *dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
    char *slot = buf[name[0] == 'd'];
    for (size_t i = 0; i < 4; i++) {
        snprintf(slot, 64, "%s/%s", dirs[i], name);
        if (!access(slot, X_OK)) return slot;
    }
    die("%s not found (install e2fsprogs)", name);
    return NULL;
}

/* Runs argv with stdout/stderr into files; debugfs reports errors only on stderr and exits 0. */
static int run(char *const argv[], const char *cwd, const char *outp, const char *errp,
               const char *fake_time)
{
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        if (cwd && chdir(cwd)) _exit(126);
        if (fake_time) setenv("E2FSPROGS_FAKE_TIME", fake_time, 1);
        int in = open("/dev/null", O_RDONLY);
        int o = open(outp ? outp : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(errp ? errp : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || o < 0 || e < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) die("waitpid: %s", strerror(errno));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path, size_t *len)
{
    buf_t b = {0};
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        char tmp[65536];
        ssize_t r;
        while ((r = read(fd, tmp, sizeof tmp)) > 0) bput(&b, tmp, r);
        close(fd);
    }
    bbyte(&b, 0);
    if (len) *len = b.n - 1;
    return (char *)b.p;
}

/* ---------- deterministic randomness ---------- */

typedef struct { uint64_t s; } rng_t;
static uint64_t rnext(rng_t *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint64_t rbelow(rng_t *r, uint64_t n) { return n ? rnext(r) % n : 0; }
static uint64_t rrange(rng_t *r, uint64_t lo, uint64_t hi) { return lo + rbelow(r, hi - lo + 1); }
static double runit(rng_t *r) { return (double)(rnext(r) >> 11) * 0x1.0p-53; }
/* Independent streams, so adding a sandbox or a snapshot never shifts the bytes of another one. */
static rng_t rstream(uint64_t tag, uint64_t a, uint64_t b)
{
    uint64_t v[4] = {O.seed, tag, a, b};
    return (rng_t){XXH3_64bits(v, sizeof v)};
}
static void rfill(rng_t *r, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rnext(r);
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* ---------- the source catalog: regular files of this machine's /usr ---------- */

typedef struct { char *path; uint64_t size; } src_t;
static src_t *cat;
static size_t ncat, capcat;

/* debugfs splits its commands on blanks and has no quoting we can rely on. */
static bool plain_name(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-+@,=:%~", *s)) return false;
    return true;
}

static void scan(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d || depth > 24) {
        if (d) closedir(d);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !plain_name(e->d_name)) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW)) continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        if (S_ISDIR(st.st_mode)) {
            scan(p, depth + 1);
            free(p);
        } else if (S_ISREG(st.st_mode) && st.st_size > 0 && (st.st_mode & 0444)) {
            if (ncat == capcat) cat = xrealloc(cat, (capcat = capcat * 2 + 1024) * sizeof *cat);
            cat[ncat++] = (src_t){p, (uint64_t)st.st_size};
        } else {
            free(p); /* symlinks, devices, sockets: not file content */
        }
    }
    closedir(d);
}

static int src_cmp(const void *a, const void *b)
{
    return strcmp(((const src_t *)a)->path, ((const src_t *)b)->path);
}

/* Reads pages [first, first+n) of a file; returns how many full pages it got (0 if unreadable). */
static size_t read_pages(const char *path, uint64_t first, size_t n, uint8_t *dst)
{
    int fd = open(path, O_RDONLY | O_NOATIME);
    if (fd < 0) fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t r = pread(fd, dst, (size_t)n * PAGE, (off_t)(first * PAGE));
    close(fd);
    return r > 0 ? (size_t)r / PAGE : 0;
}

/* Already-compressed pages (.gz, images) would make memory look less compressible than it is. */
static bool low_entropy(const uint8_t *p)
{
    unsigned h[256] = {0};
    for (unsigned i = 0; i < PAGE; i++) h[p[i]]++;
    double e = 0;
    for (int i = 0; i < 256; i++)
        if (h[i]) e -= h[i] / (double)PAGE * log2(h[i] / (double)PAGE);
    return e < 7.0;
}

/* Fills want pages with runs of consecutive file pages (page cache holds file ranges, not
 * scattered pages), preferring the template disk's files with probability p_disk. */
static void fill_pool(uint8_t *pool, size_t want, rng_t *r, const size_t *dset, size_t ndset,
                      double p_disk)
{
    uint8_t *tmp = xcalloc(64, PAGE);
    size_t have = 0, tries = 0;
    while (have < want) {
        if (++tries > want * 50 + 10000) die("not enough usable file pages under /usr");
        const src_t *f = ndset && runit(r) < p_disk ? &cat[dset[rbelow(r, ndset)]] : &cat[rbelow(r, ncat)];
        uint64_t npages = f->size / PAGE;
        if (!npages) continue;
        uint64_t first = rbelow(r, npages);
        size_t n = (size_t)rrange(r, 1, 64);
        if (n > npages - first) n = (size_t)(npages - first);
        n = read_pages(f->path, first, n, tmp);
        for (size_t i = 0; i < n && have < want; i++)
            if (!is_zero(tmp + i * PAGE, PAGE) && low_entropy(tmp + i * PAGE))
                memcpy(pool + have++ * PAGE, tmp + i * PAGE, PAGE);
    }
    free(tmp);
}

/* ---------- statistics over every 4 KiB page of the corpus ---------- */

enum { IN_MEM = 1, IN_VMS = 2, IN_DISK = 4 };
typedef struct { XXH128_hash_t h; uint16_t sb; uint8_t in, multi; } ent_t;
static ent_t *tab;
static size_t tcap, tcount;
static const XXH128_hash_t ZERO_ID = {0, 0};

static struct {
    uint64_t mem_pages, mem_holes, mem_wzero, mem_nonzero;
    uint64_t mem_changed, mem_compared, same_off, same_off_base;
    uint64_t vms_chunks, vms_zero, disk_blocks, disk_nonzero;
    uint64_t distinct[8]; /* by IN_* mask */
} S;

static ent_t *tab_slot(ent_t *t, size_t cap, XXH128_hash_t h)
{
    size_t i = (size_t)h.low64 & (cap - 1);
    while (t[i].in && !XXH128_isEqual(t[i].h, h)) i = (i + 1) & (cap - 1);
    return &t[i];
}

static ent_t *account(const uint8_t *p, size_t n, int in, int sb, XXH128_hash_t *id)
{
    XXH128_hash_t h = XXH3_128bits(p, n);
    if (id) *id = h;
    if (tcount * 2 >= tcap) {
        size_t ncap = tcap ? tcap * 2 : 1 << 16;
        ent_t *nt = xcalloc(ncap, sizeof *nt);
        for (size_t i = 0; i < tcap; i++)
            if (tab[i].in) *tab_slot(nt, ncap, tab[i].h) = tab[i];
        free(tab);
        tab = nt, tcap = ncap;
    }
    ent_t *e = tab_slot(tab, tcap, h);
    if (!e->in) *e = (ent_t){h, (uint16_t)sb, 0, 0}, tcount++;
    if (in == IN_MEM && (e->in & IN_MEM) && e->sb != sb) e->multi = 1;
    if (in == IN_MEM && !(e->in & IN_MEM)) e->sb = (uint16_t)sb;
    e->in |= in;
    return e;
}

/* ---------- guest memory ---------- */

static size_t N;           /* pages per memory file */
static uint8_t *tpl_pool;  /* pages every sandbox shares: kernel, initramfs, template page cache */
static uint8_t *priv_pool; /* raw material for per-sandbox pages */
static size_t ntpl, ntfix, npriv_pool;
static uint32_t *fixed_map; /* where the shared pages sit at the same offset in every sandbox */

static uint64_t fake_ptr(rng_t *r)
{
    return rbelow(r, 2) ? 0xffff888000000000ull | (rnext(r) & 0x3ffffff8ull)  /* kernel direct map */
                        : 0x00007f0000000000ull | (rnext(r) & 0xfffffff8ull); /* user mmap area */
}
static void sprinkle(uint8_t *pg, size_t len, rng_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = fake_ptr(r);
        memcpy(pg + rbelow(r, len / 8) * 8, &v, 8);
    }
}

/* A per-sandbox page: never equal to another sandbox's, compressing 2-4x like heap and page cache. */
static void priv_page(uint8_t *pg, int sb, uint32_t cid)
{
    rng_t r = rstream(TAG_PRIV, (uint64_t)sb, cid);
    uint64_t t = rbelow(&r, 100);
    if (t < 50) { /* a cached file page, or a heap page holding file data, with pointers in it */
        memcpy(pg, priv_pool + rbelow(&r, npriv_pool) * PAGE, PAGE);
        sprinkle(pg, PAGE, &r, rrange(&r, 4, 16));
    } else if (t < 72) { /* slab of small structs: list pointers, ids, flags, refcounts */
        size_t rs = 32u << rbelow(&r, 3), id = rbelow(&r, 1 << 20);
        uint64_t base = fake_ptr(&r) & ~0xfffull, key = rnext(&r) & 0xffffff;
        memset(pg, 0, PAGE);
        for (size_t o = 0; o + rs <= PAGE; o += rs) {
            uint64_t f[4] = {base + rbelow(&r, 4096) * rs, base + rbelow(&r, 4096) * rs,
                             (uint64_t)id++ | rrange(&r, 1, 4) << 32 | (uint64_t)(1u << rbelow(&r, 6)) << 48,
                             key += rbelow(&r, 64)};
            memcpy(pg + o, f, 32);
            if (rs > 32) snprintf((char *)pg + o + 32, rs - 32, "%s_%s", "obj", rbelow(&r, 2) ? "task" : "file");
        }
    } else if (t < 84) { /* partly used page: data at the front, zeros behind */
        size_t len = (size_t)rrange(&r, 32, 256) * 8;
        memcpy(pg, priv_pool + rbelow(&r, npriv_pool) * PAGE, len);
        memset(pg + len, 0, PAGE - len);
        sprinkle(pg, len, &r, 2);
    } else if (t < 95) { /* page table: mostly consecutive frames with the same flags */
        uint64_t frame = rbelow(&r, 1 << 22), flags = rbelow(&r, 2) ? 0x63 : 0x8000000000000067ull;
        double dens = 0.3 + 0.6 * runit(&r);
        memset(pg, 0, PAGE);
        for (size_t i = 0; i < PAGE / 8; i++, frame++)
            if (i == 0 || runit(&r) < dens) {
                uint64_t v = (frame + (rbelow(&r, 8) == 0 ? rbelow(&r, 1 << 20) : 0)) << 12 | flags;
                memcpy(pg + i * 8, &v, 8);
            }
    } else { /* keys, compressed buffers, random state */
        rfill(&r, pg, PAGE);
    }
}

static void gen_page(uint8_t *pg, uint32_t e, int sb)
{
    switch (KIND(e)) {
    case K_TPL: memcpy(pg, tpl_pool + (size_t)IDX(e) * PAGE, PAGE); break;
    case K_PRIV: priv_page(pg, sb, IDX(e)); break;
    default: memset(pg, 0, PAGE);
    }
}

typedef struct { uint32_t first, len; uint8_t kind; } run_t;

/* Cuts total pages into runs; big > 0 makes the first run that fraction (a kernel image). */
static size_t split_runs(run_t *out, int kind, uint32_t first, size_t total, size_t maxlen, double big, rng_t *r)
{
    size_t n = 0, done = 0;
    while (done < total) {
        size_t len = n == 0 && big > 0 ? (size_t)(total * big) : (size_t)rrange(r, 1, maxlen);
        if (!len) len = 1;
        if (len > total - done) len = total - done;
        out[n++] = (run_t){first + (uint32_t)done, (uint32_t)len, (uint8_t)kind};
        done += len;
    }
    return n;
}

/* Shuffles the runs into a space of `space` pages with random gaps (holes) between them;
 * slots maps the space onto physical pages (NULL: identity). */
static void place(run_t *it, size_t n, size_t space, const uint32_t *slots, uint32_t *map,
                  uint32_t *next_cid, rng_t *r)
{
    size_t used = 0;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rbelow(r, i);
        run_t t = it[i - 1];
        it[i - 1] = it[j], it[j] = t;
    }
    for (size_t i = 0; i < n; i++) used += it[i].len;
    double *w = xcalloc(n + 1, sizeof *w), wsum = 0;
    for (size_t i = 0; i <= n; i++) wsum += (w[i] = runit(r) * runit(r) + 1e-9);
    size_t holes = space - used, v = 0, given = 0;
    for (size_t i = 0; i < n; i++) {
        size_t gap = (size_t)(holes * (w[i] / wsum));
        if (given + gap > holes) gap = holes - given;
        given += gap, v += gap;
        for (uint32_t j = 0; j < it[i].len; j++, v++) {
            uint32_t idx = it[i].kind == K_TPL ? it[i].first + j : it[i].kind == K_PRIV ? (*next_cid)++ : 0;
            map[slots ? slots[v] : v] = ENT(it[i].kind, idx);
        }
    }
    free(w);
}

static size_t n_nonzero(void) { return (size_t)llround(N * 0.302); }

static void layout_fixed(void)
{
    rng_t r = rstream(TAG_FIXED, 0, 0);
    run_t *it = xcalloc(ntfix + 1, sizeof *it);
    size_t n = split_runs(it, K_TPL, 0, ntfix, 48, 0.3, &r);
    fixed_map = xcalloc(N, sizeof *fixed_map);
    for (size_t i = 0; i < N; i++) fixed_map[i] = FREE_SLOT;
    uint32_t none = 0;
    place(it, n, N, NULL, fixed_map, &none, &r);
    free(it);
}

/* One sandbox at its first snapshot: fixed shared pages, then the shifted shared pages,
 * private pages and guest-zeroed pages shuffled into the free space. */
static void layout_sandbox(uint32_t *map, int sb, uint32_t *next_cid)
{
    size_t nz = n_nonzero(), npriv = nz - ntpl, nwz = (size_t)llround(N * 0.05), nfree = 0;
    uint32_t *slots = xcalloc(N, sizeof *slots);
    for (size_t i = 0; i < N; i++) {
        map[i] = fixed_map[i];
        if (map[i] == FREE_SLOT) slots[nfree++] = (uint32_t)i, map[i] = ENT(K_HOLE, 0);
    }
    run_t *it = xcalloc(N + 1, sizeof *it);
    rng_t rs = rstream(TAG_FIXED, 1, 0); /* the shifted runs are the same runs everywhere... */
    size_t n = split_runs(it, K_TPL, (uint32_t)ntfix, ntpl - ntfix, 48, 0.3, &rs);
    rng_t r = rstream(TAG_LAYOUT, (uint64_t)sb, 0); /* ...placed differently in each sandbox */
    n += split_runs(it + n, K_PRIV, 0, npriv, 32, 0, &r);
    if (ntpl - ntfix + npriv + nwz > nfree) nwz = nfree - (ntpl - ntfix + npriv);
    n += split_runs(it + n, K_ZERO, 0, nwz, 16, 0, &r);
    place(it, n, nfree, slots, map, next_cid, &r);
    free(it);
    free(slots);
}

static bool kind_in(uint32_t e, int from)
{
    int k = KIND(e);
    return from == K_HOLE ? k == K_HOLE || k == K_ZERO : k == from;
}

/* Snapshot k from k-1: ~1.5% of pages change, in short runs, as a running guest changes them. */
static void evolve(uint32_t *map, int sb, int k, uint32_t *next_cid)
{
    rng_t r = rstream(TAG_EVOLVE, (uint64_t)sb, (uint64_t)k);
    size_t budget = (size_t)(N * (0.012 + 0.006 * runit(&r))) + 1, changed = 0;
    for (size_t guard = 0; changed < budget && guard < budget * 64; guard++) {
        uint64_t t = rbelow(&r, 100);
        size_t i = (size_t)rbelow(&r, N), len = (size_t)rrange(&r, 1, 8);
        int from = t < 75 ? K_PRIV : t < 87 ? K_HOLE : t < 97 ? K_PRIV : K_TPL;
        int to = t >= 87 && t < 97 ? K_ZERO : K_PRIV;
        /* a uniform pick among pages of that kind (scanning forward would favour run starts) */
        for (int tries = 0; tries < 256 && !kind_in(map[i], from); tries++) i = (size_t)rbelow(&r, N);
        for (; i < N && len && kind_in(map[i], from); i++, len--, changed++)
            map[i] = ENT(to, to == K_PRIV ? (*next_cid)++ : 0);
    }
}

static void write_memory(const char *path, const uint32_t *map, int sb, XXH128_hash_t *ids)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)O.mem_size)) die("create %s: %s", path, strerror(errno));
    enum { RUN = 256 };
    uint8_t *buf = xcalloc(RUN, PAGE);
    size_t start = 0, nb = 0;
    for (size_t i = 0; i <= N; i++) {
        if (nb && (i == N || KIND(map[i]) == K_HOLE || nb == RUN)) {
            pwrite_all(fd, buf, nb * PAGE, (off_t)start * PAGE, path);
            nb = 0;
        }
        if (i == N) break;
        S.mem_pages++;
        ids[i] = ZERO_ID;
        if (KIND(map[i]) == K_HOLE) {
            S.mem_holes++;
            continue;
        }
        if (!nb) start = i;
        uint8_t *pg = buf + nb++ * PAGE;
        gen_page(pg, map[i], sb);
        if (is_zero(pg, PAGE)) S.mem_wzero++;
        else S.mem_nonzero++, account(pg, PAGE, IN_MEM, sb, &ids[i]);
    }
    if (close(fd)) die("close %s: %s", path, strerror(errno));
    free(buf);
}

/* ---------- vmstate: a QEMU migration stream of the devices (guest RAM stays in the memory file) ---------- */

static uint8_t fw_pages[64 * PAGE];

static void load_firmware(void)
{
    rng_t r = rstream(TAG_FW, 0, 0);
    for (int tries = 0; tries < 100000; tries++) {
        const src_t *f = &cat[rbelow(&r, ncat)];
        if (f->size >= sizeof fw_pages && read_pages(f->path, 0, 64, fw_pages) == 64) return;
    }
    die("no file of 256 KiB under /usr to stand in for firmware");
}

typedef struct { buf_t *b, *desc; uint32_t sid; bool first_dev, first_field; } vms_t;

static void vm_section(vms_t *v, const char *name, uint32_t inst, uint32_t ver)
{
    bbyte(v->b, 0x04); /* QEMU_VM_SECTION_FULL */
    bbe32(v->b, ++v->sid);
    bbyte(v->b, (uint8_t)strlen(name));
    bput(v->b, name, strlen(name));
    bbe32(v->b, inst), bbe32(v->b, ver);
    bprintf(v->desc, "%s\n  {\"name\": \"%s\", \"instance_id\": %u, \"vmsd_name\": \"%s\", \"version\": %u, \"fields\": [",
            v->first_dev ? "" : ",", name, inst, name, ver);
    v->first_dev = false, v->first_field = true;
}
static void vm_field(vms_t *v, const char *name, const char *type, const void *p, size_t n)
{
    bput(v->b, p, n);
    bprintf(v->desc, "%s{\"name\": \"%s\", \"type\": \"%s\", \"size\": %zu}", v->first_field ? "" : ", ", name, type, n);
    v->first_field = false;
}
static void vm_u64s(vms_t *v, const char *name, const uint64_t *x, size_t n)
{
    buf_t t = {0};
    for (size_t i = 0; i < n; i++) bbe64(&t, x[i]);
    vm_field(v, name, "uint64", t.p, t.n);
    free(t.p);
}
static void vm_end(vms_t *v)
{
    bbyte(v->b, 0x7e); /* QEMU_VM_SECTION_FOOTER */
    bbe32(v->b, v->sid);
    bprintf(v->desc, "]}");
}

static void gen_vmstate(buf_t *b, int sb, int k)
{
    rng_t st = rstream(TAG_VMS, (uint64_t)sb, 0), dy = rstream(TAG_VMSK, (uint64_t)sb, (uint64_t)k);
    rng_t fw = rstream(TAG_FW, 1, 0);
    buf_t desc = {0};
    vms_t v = {b, &desc, 0, true, true};
    bput(b, "QEVM", 4), bbe32(b, 3);
    bbyte(b, 0x07), bbe32(b, 7), bput(b, "microvm", 7); /* configuration section */
    bprintf(&desc, "{\"page_size\": 4096, \"devices\": [");

    /* RAM: the share=on guest memory is skipped (x-ignore-shared); firmware and ACPI blobs travel. */
    bbyte(b, 0x01), bbe32(b, ++v.sid), bbyte(b, 3), bput(b, "ram", 3), bbe32(b, 0), bbe32(b, 4);
    static const char *blk[] = {"mem", "microvm.bios", "etc/acpi/tables", "etc/table-loader"};
    uint64_t bsz[] = {O.mem_size, 64 * PAGE, 32 * PAGE, PAGE};
    bbe64(b, (O.mem_size + 97 * PAGE) | 0x04); /* RAM_SAVE_FLAG_MEM_SIZE */
    for (int i = 0; i < 4; i++) bbyte(b, (uint8_t)strlen(blk[i])), bput(b, blk[i], strlen(blk[i])), bbe64(b, bsz[i]);
    uint8_t pg[PAGE];
    for (int bi = 1; bi < 4; bi++)
        for (uint64_t p = 0; p < bsz[bi] / PAGE; p++) {
            if (bi == 1) memcpy(pg, fw_pages + p * PAGE, PAGE);
            else if (bi == 2 && p >= 6) memset(pg, 0, PAGE);
            else { /* table headers followed by AML-ish byte code */
                memset(pg, 0, PAGE);
                for (size_t o = 0; o + 48 <= PAGE; o += 48) {
                    memcpy(pg + o, (const char *[]){"DSDT", "FACP", "APIC", "HPET", "SSDT"}[rbelow(&fw, 5)], 4);
                    memcpy(pg + o + 10, "CAIRN MICROVM ", 14);
                    pg[o + 8] = 1 + (uint8_t)rbelow(&fw, 5), pg[o + 9] = (uint8_t)rnext(&fw);
                    for (int j = 24; j < 48; j++) pg[o + j] = rbelow(&fw, 3) ? (uint8_t)(0x5b + rbelow(&fw, 6)) : (uint8_t)'_';
                }
            }
            bool z = is_zero(pg, PAGE);
            bbe64(b, p * PAGE | (p ? 0x20 : 0) | (z ? 0x02 : 0x08)); /* CONTINUE, ZERO / PAGE */
            if (!p) bbyte(b, (uint8_t)strlen(blk[bi])), bput(b, blk[bi], strlen(blk[bi]));
            if (z) bbyte(b, 0);
            else bput(b, pg, PAGE);
        }
    bbe64(b, 0x10); /* RAM_SAVE_FLAG_EOS */
    bbyte(b, 0x7e), bbe32(b, v.sid);

    for (uint32_t cpu = 0; cpu < 2; cpu++) {
        vm_section(&v, "cpu", cpu, 12);
        uint64_t regs[18];
        for (int i = 0; i < 16; i++)
            regs[i] = rbelow(&dy, 3) ? 0xffffffff81000000ull + (rnext(&dy) & 0xffffff) : rbelow(&dy, 4096);
        regs[16] = 0xffffffff81000000ull + (rnext(&dy) & 0xfffff0), regs[17] = 0x246;
        vm_u64s(&v, "env.regs", regs, 18);
        uint64_t segs[24], cr[6] = {0x80050033, 0, 0, (rnext(&st) & 0xffff000), 0x3506f0, 0xd01};
        for (int i = 0; i < 24; i++) segs[i] = i % 4 == 0 ? 0x10u + 8u * (unsigned)(i / 4) : i % 4 == 2 ? 0xffffffff : i % 4 == 3 ? 0xa09b : 0;
        vm_u64s(&v, "env.segs", segs, 24);
        vm_u64s(&v, "env.cr", cr, 6);
        buf_t msr = {0};
        for (uint32_t i = 0; i < 80; i++) {
            uint32_t idx = i < 40 ? 0xc0000080 + i : 0x4b564d00 + i;
            bbe32(&msr, idx);
            bbe64(&msr, i == 0 ? (uint64_t)k * 2500000000ull + rbelow(&dy, 1 << 20) : i % 3 ? 0 : rnext(&st) & 0xffffffff);
        }
        vm_field(&v, "env.msrs", "struct", msr.p, msr.n);
        free(msr.p);
        uint8_t xs[4096] = {0};
        xs[0] = 0x7f, xs[1] = 0x03, xs[24] = 0x80, xs[25] = 0x1f;
        for (int i = 0; i < 16; i++)
            if (rbelow(&dy, 2)) rfill(&dy, xs + 160 + 16 * i, 16);
        xs[512] = 7;
        vm_field(&v, "env.xsave", "buffer", xs, sizeof xs);
        uint8_t apic[1024] = {0};
        uint32_t ar[] = {cpu << 24, 0x50014, 0, 0, 0, 0, 0, 1u << cpu, 0xffffffff, 0x1ff};
        for (int i = 0; i < 10; i++) memcpy(apic + 16 * (i + 2), &ar[i], 4);
        uint32_t cnt = (uint32_t)rnext(&dy);
        memcpy(apic + 0x390, &cnt, 4);
        vm_field(&v, "apic.regs", "buffer", apic, sizeof apic);
        vm_end(&v);
    }
    uint64_t clock = (uint64_t)(T0 + 86400LL * sb) * 1000000000ull + (uint64_t)k * 600000000000ull + rbelow(&dy, 1000000);
    vm_section(&v, "kvmclock", 0, 1), vm_u64s(&v, "clock", &clock, 1), vm_end(&v);
    uint8_t cmos[128];
    rng_t cm = rstream(TAG_VMS, (uint64_t)sb, 1);
    rfill(&cm, cmos, sizeof cmos);
    for (int i = 14; i < 128; i++) cmos[i] &= 0x0f;
    cmos[0] = (uint8_t)k, cmos[2] = (uint8_t)(k * 7);
    vm_section(&v, "mc146818rtc", 0, 3), vm_field(&v, "cmos_data", "buffer", cmos, sizeof cmos), vm_end(&v);
    uint64_t redir[24];
    for (int i = 0; i < 24; i++) redir[i] = i < 16 ? 0x10000ull | (0x20 + i) : 0x10000;
    vm_section(&v, "ioapic", 0, 2), vm_u64s(&v, "ioredtbl", redir, 24), vm_end(&v);
    uint64_t pit[6] = {0xffff, rbelow(&dy, 0x10000), 0x12, rbelow(&dy, 0x10000), 0x1234dd, 3};
    vm_section(&v, "i8254", 0, 3), vm_u64s(&v, "channels", pit, 6), vm_end(&v);
    for (uint32_t i = 0; i < 4; i++) {
        uint64_t q[12] = {0x1af4, 2 + i, 1, 0x1000 * (i + 1),
                          (rnext(&st) & 0xfffff000), (rnext(&st) & 0xfffff000), (rnext(&st) & 0xfffff000),
                          256, (uint64_t)k * 97 + i, (uint64_t)k * 97 + i, 0, 0x130000000ull};
        vm_section(&v, "virtio-mmio", i, 1), vm_u64s(&v, "proxy", q, 12), vm_end(&v);
    }
    uint64_t ser[4] = {0x60, 0x03, 0xc1, (uint64_t)k};
    vm_section(&v, "serial", 0, 3), vm_u64s(&v, "regs", ser, 4), vm_end(&v);
    bbyte(b, 0x01); /* QEMU_VM_EOF */
    bprintf(&desc, "\n]}\n");
    if ((b->n + 5 + desc.n) % PAGE == 0) bbyte(&desc, '\n'); /* real vmstate sizes are not page multiples */
    bbyte(b, 0x06), bbe32(b, (uint32_t)desc.n), bput(b, desc.p, desc.n); /* QEMU_VM_VMDESCRIPTION */
    free(desc.p);
}

/* ---------- disks ---------- */

static size_t *dset;
static size_t ndset;

/* The template disk's files: a seed-chosen slice of /usr filling about half the disk. */
static void choose_disk_set(void)
{
    rng_t r = rstream(TAG_DISKSET, 0, 0);
    uint64_t budget = O.disk_size * 44 / 100, cap = budget / 32 > 65536 ? budget / 32 : 65536, elig = 0, used = 0;
    for (size_t i = 0; i < ncat; i++)
        if (cat[i].size <= cap) elig += cat[i].size;
    double p = elig ? 1.3 * (double)budget / (double)elig : 1;
    dset = xcalloc(ncat, sizeof *dset);
    size_t start = (size_t)rbelow(&r, ncat);
    for (size_t n = 0; n < ncat && used < budget * 98 / 100; n++) {
        size_t i = (start + n) % ncat;
        uint64_t sz = (cat[i].size + PAGE - 1) / PAGE * PAGE;
        if (cat[i].size > cap || runit(&r) >= p || used + sz > budget) continue;
        dset[ndset++] = i, used += sz;
    }
}

static const char *T0_STR = "@1704067200";
static char *uuid_str;

static void make_uuid(void)
{
    rng_t r = rstream(TAG_UUID, 0, 0);
    uint8_t u[16];
    rfill(&r, u, 16);
    u[6] = (u[6] & 0x0f) | 0x40, u[8] = (u[8] & 0x3f) | 0x80;
    uuid_str = xasprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                         u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* Runs a debugfs -w script; debugfs exits 0 even when a command fails, so its stderr decides. */
static void debugfs(const char *disk, const char *script, const char *cwd)
{
    char *errp = xasprintf("%s.err", script);
    char *argv[] = {(char *)tool("debugfs"), "-w", "-f", (char *)script, (char *)disk, NULL};
    int rc = run(argv, cwd, NULL, errp, NULL);
    char *err = slurp(errp, NULL), *p = err;
    if (!strncmp(p, "debugfs ", 8)) p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p); /* its banner */
    if (rc || *p) die("debugfs on %s failed (exit %d): %.400s", disk, rc, p);
    free(err);
    unlink(errp);
    free(errp);
}

static buf_t *tree_fix;
static size_t tree_root_len;

static int tree_visit(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)flag, (void)f;
    struct timespec ts[2] = {{T0, 0}, {T0, 0}};
    utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW);
    const char *ip = p[tree_root_len] ? p + tree_root_len : "/";
    /* mke2fs -d copies the tree's times, and a ctime cannot be set on the host: set it in the image */
    bprintf(tree_fix, "sif %s ctime %s\nsif %s atime %s\n", ip, T0_STR, ip, T0_STR);
    if (!strncmp(ip, "/home/ubuntu", 12)) bprintf(tree_fix, "sif %s uid 1000\nsif %s gid 1000\n", ip, ip);
    (void)st;
    return 0;
}

static void copy_into_tree(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_NOATIME);
    if (in < 0) in = open(src, O_RDONLY);
    if (in < 0) return; /* unreadable: skip it, the disk just holds one file less */
    struct stat st;
    if (fstat(in, &st) || !S_ISREG(st.st_mode)) {
        close(in);
        return;
    }
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 0755);
    if (out < 0 && errno == ENOENT) {
        char *dir = xasprintf("%s", dst);
        *strrchr(dir, '/') = 0;
        mkdirs(dir);
        free(dir);
        out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, st.st_mode & 0755);
    }
    if (out < 0) die("create %s: %s", dst, strerror(errno));
    ssize_t r;
    off_t off = 0;
    while ((r = copy_file_range(in, NULL, out, NULL, 1 << 30, 0)) > 0) off += r;
    if (r < 0) { /* a filesystem without in-kernel copy */
        static uint8_t buf[1 << 20];
        while ((r = pread(in, buf, sizeof buf, off)) > 0) pwrite_all(out, buf, (size_t)r, off, dst), off += r;
    }
    close(in);
    if (fchmod(out, (st.st_mode & 0755) | 0444) || close(out)) die("close %s: %s", dst, strerror(errno));
}

static void build_template_disk(const char *work, const char *disk)
{
    char *tree = xasprintf("%s/tree", work);
    static const char *dirs[] = {"usr/bin", "usr/sbin", "usr/lib", "usr/share", "etc", "root", "tmp", "var/log",
                                 "var/tmp", "var/cache", "home/ubuntu/.config", "dev", "proc", "sys", "run"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        char *p = xasprintf("%s/%s", tree, dirs[i]);
        mkdirs(p);
        free(p);
    }
    static const char *links[][2] = {{"bin", "usr/bin"}, {"sbin", "usr/sbin"}, {"lib", "usr/lib"}, {"lib64", "usr/lib64"}};
    for (int i = 0; i < 4; i++) {
        char *p = xasprintf("%s/%s", tree, links[i][0]);
        if (symlink(links[i][1], p) && errno != EEXIST) die("symlink %s: %s", p, strerror(errno));
        free(p);
    }
    static const char *files[][2] = {
        {"etc/hostname", "sandbox\n"},
        {"etc/passwd", "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n"},
        {"etc/group", "root:x:0:\nsudo:x:27:ubuntu\nubuntu:x:1000:\n"},
        {"etc/fstab", "/dev/vda / ext4 defaults,noatime 0 1\n"},
        {"etc/os-release", "PRETTY_NAME=\"Cairn sandbox template\"\nID=debian\nVERSION_ID=\"12\"\n"},
        {"home/ubuntu/.bashrc", "export PATH=$HOME/.local/bin:$PATH\nalias ll='ls -l'\n"},
        {"home/ubuntu/.profile", "[ -f ~/.bashrc ] && . ~/.bashrc\n"},
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *p = xasprintf("%s/%s", tree, files[i][0]);
        write_file(p, files[i][1], strlen(files[i][1]), 0644);
        free(p);
    }
    char *tmpd = xasprintf("%s/tmp", tree);
    chmod(tmpd, 01777);
    free(tmpd);
    for (size_t i = 0; i < ndset; i++) {
        if (i % 256 == 0) progress("template tree %zu/%zu files", i, ndset);
        char *dst = xasprintf("%s%s", tree, cat[dset[i]].path);
        copy_into_tree(cat[dset[i]].path, dst);
        free(dst);
    }

    buf_t fix = {0};
    bprintf(&fix, "set_current_time %s\nsif / atime %s\nsif / mtime %s\n", T0_STR, T0_STR, T0_STR);
    tree_fix = &fix, tree_root_len = strlen(tree);
    if (nftw(tree, tree_visit, 32, FTW_PHYS)) die("walk %s: %s", tree, strerror(errno));
    char *fixp = xasprintf("%s/template-fix.cmds", work);
    write_file(fixp, fix.p, fix.n, 0644);
    free(fix.p);

    progress("mke2fs template disk");
    int fd = open(disk, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)O.disk_size) || close(fd)) die("create %s: %s", disk, strerror(errno));
    char *hs = xasprintf("hash_seed=%s", uuid_str), *errp = xasprintf("%s/mke2fs.err", work);
    char *fake = xasprintf("%lld", T0);
    char *argv[] = {(char *)tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "cairn-root", "-U", uuid_str,
                    "-E", hs, "-d", tree, (char *)disk, NULL};
    int rc = run(argv, NULL, NULL, errp, fake);
    if (rc) {
        char *e = slurp(errp, NULL);
        die("mke2fs failed (exit %d): %.400s", rc, e);
    }
    progress("fixing template timestamps");
    debugfs(disk, fixp, NULL);
    rm_rf(tree);
    unlink(fixp), unlink(errp);
    free(tree), free(hs), free(errp), free(fake), free(fixp);
}

/* Copies src to dst writing only non-zero blocks: a disk copy that stays sparse. */
static void sparse_copy(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    struct stat st;
    if (in < 0 || out < 0 || fstat(in, &st) || ftruncate(out, st.st_size)) die("copy %s: %s", src, strerror(errno));
    enum { CH = 1 << 20 };
    uint8_t *buf = xcalloc(1, CH);
    off_t off = 0;
    while (off < st.st_size) {
        off_t d = lseek(in, off, SEEK_DATA);
        if (d < 0) break;
        off_t h = lseek(in, d, SEEK_HOLE);
        if (h < 0) h = st.st_size;
        d &= ~(off_t)(PAGE - 1);
        for (off_t p = d; p < h; p += CH) {
            size_t n = (size_t)(h - p < CH ? h - p : CH);
            ssize_t r = pread(in, buf, n, p);
            if (r != (ssize_t)n) die("read %s: %s", src, strerror(errno));
            for (size_t i = 0; i < n;) {
                size_t len = n - i < PAGE ? n - i : PAGE;
                if (is_zero(buf + i, len)) { i += len; continue; }
                size_t j = i + len;
                while (j < n && !is_zero(buf + j, n - j < PAGE ? n - j : PAGE)) j += n - j < PAGE ? n - j : PAGE;
                pwrite_all(out, buf + i, j - i, p + (off_t)i, dst);
                i = j;
            }
        }
        off = h;
    }
    free(buf);
    close(in);
    if (close(out)) die("close %s: %s", dst, strerror(errno));
}

/* ---------- a sandbox's own files ---------- */

static const char *const WORDS[] = {
    "the", "agent", "report", "data", "user", "sandbox", "model", "result", "value", "table", "chart", "revenue",
    "quarter", "growth", "server", "request", "response", "file", "upload", "output", "project", "build", "test",
    "error", "retry", "cache", "token", "query", "index", "summary", "analysis", "customer", "region", "north",
    "south", "east", "west", "total", "average", "metric", "latency", "deploy", "review", "draft", "final", "update",
    "config", "module", "render", "state", "props", "style", "layout", "header", "footer", "button", "event",
    "handler", "list", "item", "count", "price", "order", "invoice", "payment", "status", "pending", "complete",
    "failed", "success", "memory", "disk", "network", "page", "slide", "title", "section", "figure", "note", "and",
    "of", "to", "in", "for", "with", "on", "by", "from", "is", "was", "are", "this", "that", "it", "as", "or", "a"};
#define NWORDS (sizeof WORDS / sizeof *WORDS)
static const char *word(rng_t *r) { return WORDS[rbelow(r, NWORDS)]; }

static void gen_text(buf_t *b, rng_t *r, size_t n, bool md)
{
    size_t end = b->n + n;
    while (b->n < end) {
        if (md && rbelow(r, 8) == 0) bprintf(b, "\n## %s %s\n\n", word(r), word(r));
        if (md && rbelow(r, 12) == 0) {
            bprintf(b, "| %s | %s | %s |\n|---|---|---|\n", word(r), word(r), word(r));
            for (int i = (int)rrange(r, 2, 8); i > 0; i--)
                bprintf(b, "| %s | %llu | %.2f |\n", word(r), (unsigned long long)rbelow(r, 100000), runit(r) * 100);
        }
        for (size_t i = 0, nw = (size_t)rrange(r, 6, 18); i < nw; i++) {
            const char *w = word(r);
            if (i) bprintf(b, " %s", w);
            else bprintf(b, "%c%s", toupper((unsigned char)w[0]), w + 1);
            if (i && rbelow(r, 12) == 0) bprintf(b, " %llu", (unsigned long long)rbelow(r, 10000));
        }
        bprintf(b, rbelow(r, 5) ? ". " : ".\n\n");
    }
    b->n = end;
}

static void gen_csv(buf_t *b, rng_t *r, size_t n)
{
    size_t end = b->n + n;
    bprintf(b, "id,date,region,product,units,unit_price,revenue\n");
    for (unsigned id = 1; b->n < end; id++) {
        unsigned units = (unsigned)rrange(r, 1, 500);
        double price = 1 + runit(r) * 200;
        bprintf(b, "%u,2024-%02u-%02u,%s,SKU-%04u,%u,%.2f,%.2f\n", id, (unsigned)rrange(r, 1, 12),
                (unsigned)rrange(r, 1, 28), word(r), (unsigned)rbelow(r, 10000), units, price, units * price);
    }
}

static void gen_js(buf_t *b, rng_t *r, size_t n)
{
    size_t end = b->n + n;
    bprintf(b, "import { %s } from './%s.js';\n\n", word(r), word(r));
    while (b->n < end) {
        const char *f = word(r), *g = word(r);
        bprintf(b, "export %sfunction %s%c%s(%s, opts = {}) {\n", rbelow(r, 3) ? "" : "async ", f,
                toupper((unsigned char)g[0]), g + 1, word(r));
        for (int i = (int)rrange(r, 2, 8); i > 0; i--) {
            switch (rbelow(r, 4)) {
            case 0: bprintf(b, "  const %s = opts.%s ?? %llu;\n", word(r), word(r), (unsigned long long)rbelow(r, 1000)); break;
            case 1: bprintf(b, "  if (%s.%s > %llu) return null;\n", f, word(r), (unsigned long long)rbelow(r, 100)); break;
            case 2: bprintf(b, "  const res = await fetch(`/api/%s/${%s}`);\n", word(r), word(r)); break;
            default: bprintf(b, "  // %s %s %s\n", word(r), word(r), word(r));
            }
        }
        bprintf(b, "  return { %s, %s };\n}\n\n", word(r), word(r));
    }
    b->n = end;
}

/* Binary formats: a real header, structure text, and incompressible payload (compressed streams). */
static void gen_binary(buf_t *b, rng_t *r, size_t n, const char *kind)
{
    size_t end = b->n + n;
    uint8_t chunk[8192];
    if (!strcmp(kind, "pdf")) bprintf(b, "%%PDF-1.7\n%%\xe2\xe3\xcf\xd3\n");
    else if (!strcmp(kind, "png")) bput(b, "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x04\0\0\0\x03\0\x08\x06\0\0\0", 29);
    else if (!strcmp(kind, "jpg")) bput(b, "\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0", 20);
    else bput(b, "PK\x03\x04\x14\0\0\0\x08\0", 10);
    for (int obj = 1; b->n < end; obj++) {
        size_t len = (size_t)rrange(r, 1024, sizeof chunk);
        if (!strcmp(kind, "pdf"))
            bprintf(b, "%d 0 obj\n<< /Type /Page /Font << /F1 %d 0 R >> /Length %zu /Filter /FlateDecode >>\nstream\n", obj, obj + 1, len);
        else if (!strcmp(kind, "pptx"))
            bprintf(b, "ppt/slides/slide%d.xml<p:sld><p:txBody><a:t>%s %s %s</a:t></p:txBody></p:sld>", obj, word(r), word(r), word(r));
        rfill(r, chunk, len);
        bput(b, chunk, len);
        if (!strcmp(kind, "pdf")) bprintf(b, "\nendstream\nendobj\n");
    }
    b->n = end;
    if (!strcmp(kind, "pdf")) bprintf(b, "\ntrailer\n<< /Root 1 0 R >>\n%%%%EOF\n");
}

/* A debugfs script. set_current_time before each change makes debugfs stamp inodes (and the
 * superblock, and a deleted inode's dtime) with our clock instead of the machine's. */
typedef struct {
    buf_t cmd;
    const char *work;
    int nhost;
    long long t;
} step_t;

static void s_at(step_t *d) { bprintf(&d->cmd, "set_current_time @%lld\n", d->t += 1 + d->nhost % 7); }
static void s_own(step_t *d, const char *ip, unsigned mode)
{
    bprintf(&d->cmd, "sif %s mode 0%o\nsif %s uid 1000\nsif %s gid 1000\n", ip, mode, ip, ip);
}
static void s_mkdir(step_t *d, const char *ip, unsigned perm)
{
    s_at(d);
    bprintf(&d->cmd, "mkdir %s\n", ip);
    s_own(d, ip, 040000 | perm);
}
static void s_file(step_t *d, const char *ip, const buf_t *c, unsigned perm)
{
    char *host = xasprintf("%s/f%04d", d->work, d->nhost++);
    write_file(host, c->p, c->n, 0644);
    s_at(d);
    bprintf(&d->cmd, "write %s %s\n", strrchr(host, '/') + 1, ip);
    s_own(d, ip, 0100000 | perm);
    free(host);
}
static void s_rm(step_t *d, const char *ip)
{
    s_at(d);
    bprintf(&d->cmd, "rm %s\n", ip);
}
static void s_gen(step_t *d, const char *ip, unsigned perm, void (*gen)(buf_t *, rng_t *, size_t), rng_t *r, size_t lo, size_t hi)
{
    buf_t b = {0};
    gen(&b, r, (size_t)rrange(r, lo, hi));
    s_file(d, ip, &b, perm);
    free(b.p);
}
static void g_md(buf_t *b, rng_t *r, size_t n) { bprintf(b, "# %s %s\n\n", word(r), word(r)), gen_text(b, r, n, true); }
static void g_txt(buf_t *b, rng_t *r, size_t n) { gen_text(b, r, n, false); }
static void g_pdf(buf_t *b, rng_t *r, size_t n) { gen_binary(b, r, n, "pdf"); }
static void g_png(buf_t *b, rng_t *r, size_t n) { gen_binary(b, r, n, "png"); }
static void g_jpg(buf_t *b, rng_t *r, size_t n) { gen_binary(b, r, n, "jpg"); }
static void g_pptx(buf_t *b, rng_t *r, size_t n) { gen_binary(b, r, n, "pptx"); }

static void gen_log(buf_t *b, int sb, int lines)
{
    rng_t r = rstream(TAG_LOG, (uint64_t)sb, 0); /* same stream: a later log extends the earlier one */
    for (int i = 0; i < lines; i++)
        bprintf(b, "2024-01-%02d %02llu:%02llu:%02llu %s agent: %s %s %s (%llu ms)\n", 1 + sb % 28, rbelow(&r, 24),
                rbelow(&r, 60), rbelow(&r, 60), rbelow(&r, 5) ? "INFO" : "WARN", word(&r), word(&r), word(&r),
                (unsigned long long)rbelow(&r, 5000));
}

static void sandbox_files_first(step_t *d, int sb, rng_t *r)
{
    const char *H = "/home/ubuntu";
    static const char *dirs[] = {"upload", "output", "project", "project/src", "project/src/components", "project/public",
                                 "project/slides", "project/node_modules", "project/node_modules/.cache",
                                 ".cache", ".cache/pip", ".cache/pip/http"};
    char ip[256];
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) snprintf(ip, sizeof ip, "%s/%s", H, dirs[i]), s_mkdir(d, ip, 0755);
    s_mkdir(d, "/home/ubuntu/.ssh", 0700);

    s_gen(d, "/home/ubuntu/upload/quarterly-report.pdf", 0644, g_pdf, r, 200 << 10, 1 << 20);
    s_gen(d, "/home/ubuntu/upload/sales.csv", 0644, gen_csv, r, 40 << 10, 300 << 10);
    s_gen(d, "/home/ubuntu/upload/photo.jpg", 0644, g_jpg, r, 80 << 10, 500 << 10);
    bprintf(&d->cmd, "ln /home/ubuntu/upload/sales.csv /home/ubuntu/upload/sales-latest.csv\n"
                     "sif /home/ubuntu/upload/sales.csv links_count 2\n"); /* debugfs ln does not count */
    s_gen(d, "/home/ubuntu/output/report.md", 0644, g_md, r, 4 << 10, 20 << 10);
    s_gen(d, "/home/ubuntu/output/chart.png", 0644, g_png, r, 30 << 10, 200 << 10);
    s_gen(d, "/home/ubuntu/output/results.json", 0644, g_txt, r, 2 << 10, 20 << 10);
    buf_t empty = {0};
    s_file(d, "/home/ubuntu/output/.done", &empty, 0644);
    s_at(d);
    bprintf(&d->cmd, "symlink /home/ubuntu/latest-report output/report.md\n");
    s_own(d, "/home/ubuntu/latest-report", 0120777);

    buf_t b = {0};
    bprintf(&b, "{\n  \"name\": \"%s-%s\",\n  \"version\": \"1.%d.0\",\n  \"type\": \"module\",\n  \"dependencies\": {\n"
                "    \"chart-lite\": \"^2.1.0\",\n    \"tiny-router\": \"^0.9.3\",\n    \"left-pad\": \"^1.3.0\"\n  }\n}\n",
            word(r), word(r), sb);
    s_file(d, "/home/ubuntu/project/package.json", &b, 0644);
    b.n = 0;
    bprintf(&b, "<!doctype html>\n<html><head><title>%s %s</title><link rel=stylesheet href=public/style.css></head>\n"
                "<body><div id=app></div><script type=module src=src/app.js></script></body></html>\n", word(r), word(r));
    s_file(d, "/home/ubuntu/project/index.html", &b, 0644);
    free(b.p);
    s_gen(d, "/home/ubuntu/project/src/app.js", 0644, gen_js, r, 3 << 10, 15 << 10);
    s_gen(d, "/home/ubuntu/project/src/util.js", 0644, gen_js, r, 2 << 10, 8 << 10);
    static const char *comp[] = {"Chart", "Table", "Header"};
    for (int i = 0; i < 3; i++) snprintf(ip, sizeof ip, "%s/project/src/components/%s.js", H, comp[i]), s_gen(d, ip, 0644, gen_js, r, 1 << 10, 6 << 10);
    s_gen(d, "/home/ubuntu/project/public/style.css", 0644, g_txt, r, 1 << 10, 4 << 10);
    s_gen(d, "/home/ubuntu/project/slides/deck.pptx", 0644, g_pptx, r, 150 << 10, 800 << 10);
    s_gen(d, "/home/ubuntu/project/slides/notes.md", 0644, g_md, r, 2 << 10, 10 << 10);

    /* node_modules: the same package versions in every sandbox, so their blocks dedup across sandboxes */
    static const char *pkgs[] = {"chart-lite", "tiny-router", "left-pad", "dayjs-mini"};
    for (int p = 0; p < 4; p++) {
        if (rbelow(r, 4) == 0) continue;
        snprintf(ip, sizeof ip, "%s/project/node_modules/%s", H, pkgs[p]), s_mkdir(d, ip, 0755);
        snprintf(ip, sizeof ip, "%s/project/node_modules/%s/lib", H, pkgs[p]), s_mkdir(d, ip, 0755);
        for (int f = 0; f < 4; f++) {
            rng_t pr = rstream(TAG_NPM, (uint64_t)p, (uint64_t)f);
            snprintf(ip, sizeof ip, "%s/project/node_modules/%s/%s%s.js", H, pkgs[p], f ? "lib/" : "", f ? word(&pr) : "index");
            s_gen(d, ip, 0644, gen_js, &pr, 2 << 10, 40 << 10);
        }
    }
    snprintf(ip, sizeof ip, "%s/project/node_modules/.cache/%016llx.json", H, (unsigned long long)rnext(r));
    s_gen(d, ip, 0644, g_txt, r, 1 << 10, 30 << 10);

    /* pip's http cache: real Python sources of this machine */
    rng_t pr = rstream(TAG_PIP, (uint64_t)sb, 0);
    for (int i = 0, n = (int)rrange(r, 4, 8), tries = 0; i < n && tries < 10000; tries++) {
        const src_t *f = &cat[rbelow(&pr, ncat)];
        if (strncmp(f->path, "/usr/lib/python3", 16) && tries < 5000) continue;
        if (f->size > (1 << 20)) continue;
        buf_t c = {0};
        uint8_t *tmp = xcalloc(1, (size_t)f->size);
        int fd = open(f->path, O_RDONLY);
        ssize_t got = fd >= 0 ? read(fd, tmp, (size_t)f->size) : -1;
        if (fd >= 0) close(fd);
        if (got > 0) {
            bput(&c, tmp, (size_t)got);
            snprintf(ip, sizeof ip, "%s/.cache/pip/http/%016llx", H, (unsigned long long)XXH3_64bits(f->path, strlen(f->path)));
            s_file(d, ip, &c, 0644);
            i++;
        }
        free(tmp), free(c.p);
    }

    b = (buf_t){0};
    bprintf(&b, "OPENAI_API_KEY=sk-fake-%016llx%016llx\nGITHUB_TOKEN=ghp_fake%016llx\nDATABASE_URL=postgres://app:%08llx@db/app\n",
            (unsigned long long)rnext(r), (unsigned long long)rnext(r), (unsigned long long)rnext(r), (unsigned long long)rbelow(r, 1ull << 32));
    s_file(d, "/home/ubuntu/.env", &b, 0600);
    b.n = 0;
    uint8_t key[160];
    rfill(r, key, sizeof key);
    bprintf(&b, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for (size_t i = 0; i < sizeof key; i++) bprintf(&b, "%c%s", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[key[i] & 63], i % 70 == 69 ? "\n" : "");
    bprintf(&b, "\n-----END OPENSSH PRIVATE KEY-----\n");
    s_file(d, "/home/ubuntu/.ssh/id_ed25519", &b, 0600);
    b.n = 0;
    bprintf(&b, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI%016llx ubuntu@sandbox\n", (unsigned long long)rnext(r));
    s_file(d, "/home/ubuntu/.ssh/id_ed25519.pub", &b, 0644);
    free(b.p);

    s_gen(d, "/tmp/scratch-1.txt", 0644, g_txt, r, 1 << 10, 64 << 10);
    b = (buf_t){0};
    gen_log(&b, sb, 200);
    s_file(d, "/tmp/agent.log", &b, 0644);
    free(b.p);
    /* a sparse file: 16 MiB, a few blocks of data */
    char *host = xasprintf("%s/f%04d", d->work, d->nhost++);
    int fd = open(host, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint8_t blk[PAGE];
    if (fd < 0 || ftruncate(fd, 16 << 20)) die("create %s: %s", host, strerror(errno));
    for (int i = 0; i < 4; i++) rfill(r, blk, PAGE), pwrite_all(fd, blk, PAGE, (off_t)rbelow(r, 4096) * PAGE, host);
    close(fd);
    s_at(d);
    bprintf(&d->cmd, "write %s /tmp/vector-cache.bin\n", strrchr(host, '/') + 1);
    s_own(d, "/tmp/vector-cache.bin", 0100644);
    free(host);
}

static void sandbox_files_next(step_t *d, int sb, int k, rng_t *r)
{
    char ip[256];
    snprintf(ip, sizeof ip, "/home/ubuntu/output/report-v%d.md", k), s_gen(d, ip, 0644, g_md, r, 4 << 10, 30 << 10);
    snprintf(ip, sizeof ip, "/home/ubuntu/upload/data-%d.csv", k), s_gen(d, ip, 0644, gen_csv, r, 10 << 10, 100 << 10);
    s_rm(d, "/home/ubuntu/project/src/app.js"); /* edited: rewritten as editors do */
    s_gen(d, "/home/ubuntu/project/src/app.js", 0644, gen_js, r, 3 << 10, 15 << 10);
    s_rm(d, "/tmp/agent.log");
    buf_t b = {0};
    gen_log(&b, sb, 200 * k);
    s_file(d, "/tmp/agent.log", &b, 0644);
    free(b.p);
    snprintf(ip, sizeof ip, "/tmp/scratch-%d.txt", k - 1), s_rm(d, ip);
    snprintf(ip, sizeof ip, "/tmp/scratch-%d.txt", k), s_gen(d, ip, 0644, g_txt, r, 1 << 10, 64 << 10);
}

static void sandbox_disk(const char *work, const char *prev, const char *disk, int sb, int k)
{
    char *dir = xasprintf("%s/sb%02d-%d", work, sb + 1, k);
    mkdirs(dir);
    sparse_copy(prev, disk);
    step_t d = {.work = dir, .t = T0 + 86400LL * (sb + 1) + 3600LL * k};
    rng_t r = rstream(TAG_FILES, (uint64_t)sb, (uint64_t)k);
    if (k == 1) sandbox_files_first(&d, sb, &r);
    else sandbox_files_next(&d, sb, k, &r);

    char *sp = xasprintf("%s/step.cmds", dir);
    write_file(sp, d.cmd.p, d.cmd.n, 0644);
    debugfs(disk, sp, dir);
    rm_rf(dir);
    free(d.cmd.p), free(sp), free(dir);
}

static void account_file(const char *path, int in, uint64_t *chunks, uint64_t *nonzero)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) die("open %s: %s", path, strerror(errno));
    *chunks += ((uint64_t)st.st_size + PAGE - 1) / PAGE;
    enum { CH = 1 << 20 };
    uint8_t *buf = xcalloc(1, CH);
    for (off_t off = 0; off < st.st_size;) {
        off_t d = lseek(fd, off, SEEK_DATA);
        if (d < 0) break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        d &= ~(off_t)(PAGE - 1);
        for (off_t p = d; p < h; p += CH) {
            size_t n = (size_t)(h - p < CH ? h - p : CH);
            if (pread(fd, buf, n, p) != (ssize_t)n) die("read %s: %s", path, strerror(errno));
            for (size_t i = 0; i < n; i += PAGE) {
                size_t len = n - i < PAGE ? n - i : PAGE;
                if (!is_zero(buf + i, len)) (*nonzero)++, account(buf + i, len, in, 0, NULL);
            }
        }
        off = h;
    }
    free(buf);
    close(fd);
}

/* ---------- driver ---------- */

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') return -1;
    int sh = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': sh = 10; break;
    case 'M': sh = 20; break;
    case 'G': sh = 30; break;
    case 'T': sh = 40; break;
    case 0: break;
    default: return -1;
    }
    if (*end) end++;
    if (!strcasecmp(end, "ib") || !strcasecmp(end, "b")) end += strlen(end);
    if (*end || v > (UINT64_MAX >> sh)) return -1;
    *out = (uint64_t)v << sh;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cairn-corpus --out DIR [--sandboxes N] [--snapshots M] [--memory-size SIZE]\n"
               "                    [--disk-size SIZE] [--no-disk] [--seed N] [--json]\n"
               "Writes DIR/template/disk, DIR/sbNN/K/{memory,vmstate,disk} and DIR/corpus.json.\n"
               "  --sandboxes N      sandboxes (1-99, default 3)\n"
               "  --snapshots M      snapshots per sandbox (1-99, default 3)\n"
               "  --memory-size SIZE guest memory per snapshot, K/M/G suffixes (default 256M)\n"
               "  --disk-size SIZE   ext4 root disk size (default 256M, at least 32M)\n"
               "  --no-disk          memory and vmstate only\n"
               "  --seed N           same seed, same bytes (default 1)\n"
               "  --json             print corpus.json on stdout\n"
               "Re-running with the same parameters on DIR reuses it.\n");
}

static void bad_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "cairn-corpus: %s%s%s (see --help)\n", msg, arg ? ": " : "", arg ? arg : "");
    exit(2);
}

static buf_t files; /* corpus.json's file list */

static void add_file(const char *tmp, const char *rel, const char *kind)
{
    struct stat st;
    char *p = xasprintf("%s/%s", tmp, rel);
    if (stat(p, &st)) die("stat %s: %s", p, strerror(errno));
    bprintf(&files, "%s\n    {\"path\": \"%s\", \"kind\": \"%s\", \"bytes\": %lld}", files.n ? "," : "", rel, kind,
            (long long)st.st_size);
    free(p);
}

static double pct(uint64_t a, uint64_t b) { return b ? 100.0 * (double)a / (double)b : 0; }

/* Per-offset page ids, to measure change between snapshots and same-offset sharing between sandboxes. */
static XXH128_hash_t *ids, *prev_ids, *prev_sb_ids, **first_ids;
static size_t *nfirst;

static void snapshot(const char *tmp, const char *work, uint32_t *map, int sb, int k, char **prev_disk)
{
    char *rel = xasprintf("sb%02d/%d", sb + 1, k), *dir = xasprintf("%s/%s", tmp, rel), *p, *sub;
    mkdirs(dir);
    write_memory((p = xasprintf("%s/memory", dir)), map, sb, ids), free(p);
    if (k > 1)
        for (size_t i = 0; i < N; i++) S.mem_compared++, S.mem_changed += !XXH128_isEqual(ids[i], prev_ids[i]);
    if (k == 1) {
        first_ids[sb] = xcalloc(N, sizeof **first_ids);
        for (size_t i = 0; i < N; i++) {
            if (XXH128_isEqual(ids[i], ZERO_ID)) continue;
            first_ids[sb][nfirst[sb]++] = ids[i];
            if (sb > 0) S.same_off_base++, S.same_off += XXH128_isEqual(ids[i], prev_sb_ids[i]);
        }
        memcpy(prev_sb_ids, ids, N * sizeof *ids);
    }
    XXH128_hash_t *t = prev_ids;
    prev_ids = ids, ids = t;

    buf_t vm = {0};
    gen_vmstate(&vm, sb, k);
    write_file((p = xasprintf("%s/vmstate", dir)), vm.p, vm.n, 0644), free(p);
    for (size_t o = 0; o < vm.n; o += PAGE) {
        size_t len = vm.n - o < PAGE ? vm.n - o : PAGE;
        S.vms_chunks++;
        if (is_zero(vm.p + o, len)) S.vms_zero++;
        else account(vm.p + o, len, IN_VMS, sb, NULL);
    }
    free(vm.p);
    add_file(tmp, (sub = xasprintf("%s/memory", rel)), "memory"), free(sub);
    add_file(tmp, (sub = xasprintf("%s/vmstate", rel)), "vmstate"), free(sub);
    if (O.disk) { /* snapshot k's disk is snapshot k-1's disk plus what the sandbox did since */
        char *disk = xasprintf("%s/disk", dir);
        sandbox_disk(work, *prev_disk, disk, sb, k);
        account_file(disk, IN_DISK, &S.disk_blocks, &S.disk_nonzero);
        add_file(tmp, (sub = xasprintf("%s/disk", rel)), "disk"), free(sub);
        free(*prev_disk);
        *prev_disk = disk;
    }
    free(rel), free(dir);
}

static void write_json(buf_t *j, const char *params)
{
    /* shared: a sandbox's non-zero pages that also occur in another sandbox's memory */
    uint64_t shared = 0, shared_base = 0, d_mem = 0, d_disk = 0, d_vms = 0;
    for (int sb = 0; sb < O.sandboxes; sb++) {
        for (size_t i = 0; i < nfirst[sb]; i++) shared += tab_slot(tab, tcap, first_ids[sb][i])->multi;
        shared_base += nfirst[sb];
    }
    for (size_t i = 0; i < tcap; i++)
        if (tab[i].in) S.distinct[tab[i].in]++;
    for (int m = 1; m < 8; m++) {
        d_mem += m & IN_MEM ? S.distinct[m] : 0;
        d_disk += m & IN_DISK ? S.distinct[m] : 0;
        d_vms += m & IN_VMS ? S.distinct[m] : 0;
    }
    uint64_t mem_zero = S.mem_holes + S.mem_wzero, disk_zero = S.disk_blocks - S.disk_nonzero;
    uint64_t total = S.mem_pages + S.vms_chunks + S.disk_blocks, zero = mem_zero + S.vms_zero + disk_zero;
    typedef unsigned long long ull;
    bbyte(&files, 0);
    bprintf(j, "{\n  \"generator\": \"cairn-corpus\",\n  %s,\n  \"page_size\": 4096,\n", params);
    bprintf(j, "  \"files\": [%s\n  ],\n", (char *)files.p);
    bprintf(j, "  \"pages\": {\n    \"total\": %llu, \"zero\": %llu, \"nonzero\": %llu, \"distinct_nonzero\": %llu,\n",
            (ull)total, (ull)zero, (ull)(total - zero), (ull)tcount);
    bprintf(j, "    \"memory\": {\"total\": %llu, \"zero\": %llu, \"holes\": %llu, \"written_zero\": %llu, \"nonzero\": %llu, "
               "\"distinct_nonzero\": %llu, \"zero_pct\": %.2f, \"shared_pct\": %.2f, \"same_offset_pct\": %.2f, "
               "\"change_pct\": %.2f},\n",
            (ull)S.mem_pages, (ull)mem_zero, (ull)S.mem_holes, (ull)S.mem_wzero, (ull)S.mem_nonzero, (ull)d_mem,
            pct(mem_zero, S.mem_pages), pct(shared, shared_base), pct(S.same_off, S.same_off_base),
            pct(S.mem_changed, S.mem_compared));
    bprintf(j, "    \"vmstate\": {\"total\": %llu, \"zero\": %llu, \"distinct_nonzero\": %llu},\n", (ull)S.vms_chunks,
            (ull)S.vms_zero, (ull)d_vms);
    bprintf(j, "    \"disk\": {\"total\": %llu, \"zero\": %llu, \"distinct_nonzero\": %llu}\n  }\n}\n", (ull)S.disk_blocks,
            (ull)disk_zero, (ull)d_disk);
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {{"out", 1, 0, 'o'}, {"sandboxes", 1, 0, 's'}, {"snapshots", 1, 0, 'm'},
                                       {"memory-size", 1, 0, 'M'}, {"disk-size", 1, 0, 'D'}, {"no-disk", 0, 0, 'n'},
                                       {"seed", 1, 0, 'S'}, {"json", 0, 0, 'j'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        long v;
        uint64_t *dst;
        switch (c) {
        case 'o': O.out = optarg; break;
        case 's': case 'm':
            v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 99) bad_usage("expected a count from 1 to 99", optarg);
            *(c == 's' ? &O.sandboxes : &O.snapshots) = (int)v;
            break;
        case 'M': case 'D':
            dst = c == 'M' ? &O.mem_size : &O.disk_size;
            if (parse_size(optarg, dst) || *dst % PAGE || *dst > (64ull << 30) || *dst < (c == 'M' ? 1ull << 20 : 32ull << 20))
                bad_usage(c == 'M' ? "memory size must be a multiple of 4K from 1M to 64G"
                                   : "disk size must be a multiple of 4K from 32M to 64G", optarg);
            break;
        case 'n': O.disk = false; break;
        case 'S':
            errno = 0;
            O.seed = strtoull(optarg, &end, 0);
            if (errno || *end || !*optarg || *optarg == '-') bad_usage("bad seed", optarg);
            break;
        case 'j': O.json = true; break;
        case 'h': usage(stdout); exit(0);
        default: bad_usage("bad option", NULL);
        }
    }
    if (optind < argc) bad_usage("unexpected argument", argv[optind]);
    if (!O.out || !*O.out) bad_usage("--out DIR is required", NULL);
    /* absolute, because debugfs runs in a work directory; no trailing slash, because DIR.tmp is a sibling */
    char cwd[4096], *out = O.out[0] == '/' ? xasprintf("%s", O.out)
                                           : xasprintf("%s/%s", getcwd(cwd, sizeof cwd) ? cwd : ".", O.out);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = 0;
    if (!strcmp(out, "/")) bad_usage("--out cannot be /", NULL);
    O.out = out;
}

/* Returns true if DIR already holds a corpus with these parameters; dies if DIR is someone else's. */
static bool reusable(const char *params, bool *replace)
{
    char *json_path = xasprintf("%s/corpus.json", O.out);
    struct stat st;
    *replace = false;
    if (!stat(json_path, &st)) {
        char *old = slurp(json_path, NULL);
        if (strstr(old, params)) {
            if (O.json) fputs(old, stdout);
            fprintf(O.json ? stderr : stdout, "reusing %s\n", O.out);
            return true;
        }
        if (!strstr(old, "\"generator\": \"cairn-corpus\"")) die("%s/corpus.json was not written by cairn-corpus; not touching %s", O.out, O.out);
        *replace = true; /* ours, with other parameters */
        free(old);
    } else if (!stat(O.out, &st)) {
        DIR *d = opendir(O.out);
        int n = 0;
        while (d && readdir(d)) n++;
        if (d) closedir(d);
        if (n > 2 || !S_ISDIR(st.st_mode)) die("%s exists and is not a corpus (no corpus.json); not touching it", O.out);
        if (rmdir(O.out)) die("rmdir %s: %s", O.out, strerror(errno));
    }
    free(json_path);
    return false;
}

int main(int argc, char **argv)
{
    tty = isatty(2);
    parse_args(argc, argv);
    char *params = xasprintf("\"params\": {\"format\": %d, \"sandboxes\": %d, \"snapshots\": %d, \"memory_size\": %llu, "
                             "\"disk_size\": %llu, \"disk\": %s, \"seed\": %llu}",
                             FORMAT, O.sandboxes, O.snapshots, (unsigned long long)O.mem_size,
                             (unsigned long long)O.disk_size, O.disk ? "true" : "false", (unsigned long long)O.seed);
    bool replace;
    if (reusable(params, &replace)) return 0;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* build in DIR.tmp, marked as partial, so an interrupted run is never mistaken for a corpus */
    struct stat st;
    char *tmp = xasprintf("%s.tmp", O.out), *marker = xasprintf("%s.tmp/.cairn-corpus-partial", O.out);
    if (!stat(tmp, &st)) {
        if (access(marker, F_OK)) die("%s exists and was not made by cairn-corpus; not touching it", tmp);
        rm_rf(tmp);
    }
    mkdirs(tmp);
    write_file(marker, "", 0, 0644);
    char *work = xasprintf("%s/.work", tmp);
    mkdirs(work);

    progress("scanning /usr");
    static const char *roots[] = {"/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib/python3", "/usr/share"};
    for (int i = 0; i < 4; i++) scan(roots[i], 0);
    if (ncat < 64) die("found only %zu readable files under /usr; need real files to build the corpus", ncat);
    qsort(cat, ncat, sizeof *cat, src_cmp);
    choose_disk_set();
    make_uuid();

    N = (size_t)(O.mem_size / PAGE);
    ntpl = (size_t)llround((double)n_nonzero() * 0.55), ntfix = ntpl / 2;
    npriv_pool = 2 * (n_nonzero() - ntpl);
    npriv_pool = npriv_pool < 64 ? 64 : npriv_pool > 16384 ? 16384 : npriv_pool;
    progress("reading %zu shared and %zu private source pages", ntpl, npriv_pool);
    tpl_pool = xcalloc(ntpl + 1, PAGE);
    priv_pool = xcalloc(npriv_pool, PAGE);
    rng_t r1 = rstream(TAG_TPLPOOL, 0, 0), r2 = rstream(TAG_PRIVPOOL, 0, 0);
    fill_pool(tpl_pool, ntpl, &r1, dset, ndset, 0.4);
    fill_pool(priv_pool, npriv_pool, &r2, NULL, 0, 0);
    load_firmware();
    layout_fixed();

    char *tdisk = xasprintf("%s/template/disk", tmp);
    if (O.disk) {
        char *d = xasprintf("%s/template", tmp);
        mkdirs(d);
        free(d);
        build_template_disk(work, tdisk);
        add_file(tmp, "template/disk", "disk");
        account_file(tdisk, IN_DISK, &S.disk_blocks, &S.disk_nonzero);
    }

    uint32_t *map = xcalloc(N, sizeof *map);
    ids = xcalloc(N, sizeof *ids), prev_ids = xcalloc(N, sizeof *ids), prev_sb_ids = xcalloc(N, sizeof *ids);
    first_ids = xcalloc((size_t)O.sandboxes, sizeof *first_ids);
    nfirst = xcalloc((size_t)O.sandboxes, sizeof *nfirst);
    for (int sb = 0; sb < O.sandboxes; sb++) {
        uint32_t next_cid = 0;
        char *prev_disk = xasprintf("%s", tdisk);
        layout_sandbox(map, sb, &next_cid);
        for (int k = 1; k <= O.snapshots; k++) {
            progress("sb%02d snapshot %d/%d", sb + 1, k, O.snapshots);
            if (k > 1) evolve(map, sb, k, &next_cid);
            snapshot(tmp, work, map, sb, k, &prev_disk);
        }
        free(prev_disk);
    }

    buf_t j = {0};
    write_json(&j, params);
    char *tjson = xasprintf("%s/corpus.json", tmp);
    write_file(tjson, j.p, j.n, 0644);
    rm_rf(work);
    unlink(marker);
    if (replace) { /* an older corpus of ours with other parameters */
        char *old = xasprintf("%s.old-%ld", O.out, (long)getpid());
        if (rename(O.out, old)) die("rename %s: %s", O.out, strerror(errno));
        rm_rf(old);
        free(old);
    }
    if (rename(tmp, O.out)) die("rename %s to %s: %s", tmp, O.out, strerror(errno));

    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (tty) fputs("\r\033[K", stderr);
    if (O.json) fwrite(j.p, 1, j.n, stdout);
    else
        printf("wrote %s in %.1f s: %llu pages, %.1f%% zero, %llu distinct non-zero\n", O.out,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
               (unsigned long long)(S.mem_pages + S.vms_chunks + S.disk_blocks),
               pct(S.mem_holes + S.mem_wzero + S.vms_zero + S.disk_blocks - S.disk_nonzero,
                   S.mem_pages + S.vms_chunks + S.disk_blocks),
               (unsigned long long)tcount);
    return 0;
}
