/* A paused VM's ext4 disk usually has a journal that was not replayed: files written in the
 * last seconds exist only as journal records. The stored disk must stay byte-exact (the VM
 * resumes on it), so the index is built from a private copy with the journal replayed:
 *   1. the superblock says "needs recovery" (a 4-byte check of bytes we read ourselves);
 *   2. the image is copied sparsely to a private folder and `e2fsck -E journal_only -y`
 *      replays it there (a child with memory/CPU limits and a timeout);
 *   3. the walker indexes the copy;
 *   4. pages where the copy differs from the stored image are found, and a file whose data
 *      touches one keeps its bytes in the index itself (inline_data), since the stored
 *      disk holds older bytes there. With ext4's default data=ordered, file data is on disk
 *      before its metadata commits, so this is rare (data=journal, inline files).
 * A fresh VM disk that was not synced may also have data only in the guest's page cache:
 * no disk format can hold that; the orchestrator should sync the guest before pausing.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "snapshotter/snapshotter.h"

#define INLINE_MAX (4u << 20)       /* bytes of a journal-changed file kept in the index */
#define INLINE_BUDGET (64ull << 20) /* bytes of all of them (and never more than the disk) */
#define E2FSCK_SECONDS 60

int snap_journal_needs_recovery(const char *image)
{
    uint8_t sb[1024];
    int fd = open(image, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = pread(fd, sb, sizeof sb, 1024);
    close(fd);
    if (n != (ssize_t)sizeof sb || sb[0x38] != 0x53 || sb[0x39] != 0xef) return 0;
    uint32_t compat = (uint32_t)sb[0x5c] | (uint32_t)sb[0x5d] << 8 | (uint32_t)sb[0x5e] << 16 | (uint32_t)sb[0x5f] << 24;
    uint32_t incompat = (uint32_t)sb[0x60] | (uint32_t)sb[0x61] << 8 | (uint32_t)sb[0x62] << 16 | (uint32_t)sb[0x63] << 24;
    return (compat & 0x4) && (incompat & 0x4);   /* has_journal && needs_recovery */
}

/* Copies src to dst keeping holes. */
static int sparse_copy(const char *src, const char *dst, store_err *e)
{
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;
    struct stat st;
    char *buf = malloc(1 << 20);
    if (in < 0 || fstat(in, &st) < 0) rc = store_errf(e, -errno, "%s: %s", src, strerror(errno));
    if (!rc && (out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        rc = store_errf(e, -errno, "%s: %s", dst, strerror(errno));
    if (!rc && (!buf || ftruncate(out, st.st_size) < 0)) rc = store_errf(e, -ENOSPC, "%s: cannot size the copy", dst);
    for (off_t pos = 0; !rc && pos < st.st_size;) {
        off_t ds = lseek(in, pos, SEEK_DATA);
        if (ds < 0) break;
        off_t de = lseek(in, ds, SEEK_HOLE);
        if (de < 0) de = st.st_size;
        for (off_t o = ds; !rc && o < de;) {
            size_t want = (size_t)(de - o < (1 << 20) ? de - o : (1 << 20));
            ssize_t r = pread(in, buf, want, o);
            if (r <= 0 || pwrite(out, buf, (size_t)r, o) != r) rc = store_errf(e, -EIO, "copying %s: %s", src, strerror(errno));
            o += r > 0 ? r : 0;
        }
        pos = de;
    }
    free(buf);
    if (in >= 0) close(in);
    if (out >= 0 && close(out) < 0 && !rc) rc = store_errf(e, -errno, "%s: %s", dst, strerror(errno));
    return rc;
}

/* e2fsck -E journal_only -y copy, confined and timed. */
static int replay(const char *copy, store_err *e)
{
    pid_t pid = fork();
    if (pid < 0) return store_errf(e, -errno, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct rlimit mem = {1ULL << 30, 1ULL << 30}, cpu = {E2FSCK_SECONDS, E2FSCK_SECONDS};
        setrlimit(RLIMIT_AS, &mem);
        setrlimit(RLIMIT_CPU, &cpu);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("e2fsck", "e2fsck", "-E", "journal_only", "-y", copy, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) break;
        if (waited > E2FSCK_SECONDS * 2000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return store_errf(e, -ETIMEDOUT, "journal replay timed out");
        }
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    }
    /* e2fsck: 0 clean, 1 corrected, 2 reboot needed: all leave a usable copy. */
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 2)
        return store_errf(e, -EBADMSG, "journal replay failed (e2fsck status %d)",
                          WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}

/* Pages (by index) where the replayed copy differs from the stored image. */
static uint8_t *diff_pages(const char *image, const char *copy, uint64_t *npages, store_err *e)
{
    int a = open(image, O_RDONLY | O_CLOEXEC), b = open(copy, O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t *bits = NULL, *ba = malloc(1 << 20), *bb = malloc(1 << 20);
    if (a < 0 || b < 0 || fstat(b, &st) < 0 || !ba || !bb) {
        store_errf(e, -EIO, "comparing the replayed copy: %s", strerror(errno));
        goto out;
    }
    *npages = ((uint64_t)st.st_size + STORE_PAGE - 1) / STORE_PAGE;
    bits = calloc((*npages + 7) / 8 + 1, 1);
    /* Replay only writes blocks, so the copy's data regions cover every difference. */
    for (off_t pos = 0; bits && pos < st.st_size;) {
        off_t ds = lseek(b, pos, SEEK_DATA);
        if (ds < 0) break;
        off_t de = lseek(b, ds, SEEK_HOLE);
        if (de < 0) de = st.st_size;
        for (off_t o = ds; o < de;) {
            size_t want = (size_t)(de - o < (1 << 20) ? de - o : (1 << 20));
            ssize_t ra = pread(a, ba, want, o), rb = pread(b, bb, want, o);
            if (ra < 0 || rb <= 0) break;
            if (ra < rb) memset(ba + ra, 0, (size_t)(rb - ra));
            for (ssize_t k = 0; k < rb; k += STORE_PAGE) {
                size_t len = (size_t)(rb - k < STORE_PAGE ? rb - k : STORE_PAGE);
                if (memcmp(ba + k, bb + k, len)) {
                    uint64_t pg = ((uint64_t)o + (uint64_t)k) / STORE_PAGE;
                    bits[pg / 8] |= (uint8_t)(1u << (pg % 8));
                }
            }
            o += rb;
        }
        pos = de;
    }
out:
    if (a >= 0) close(a);
    if (b >= 0) close(b);
    free(ba);
    free(bb);
    return bits;
}

/* Files whose data touches a changed page keep their (replayed) bytes in the index, each
 * changed page for one file only and within a budget, so that the index stays bounded by
 * the disk whatever the image says. ext4 never gives a block to two files: a file whose
 * extents reach a changed page another kept file already claimed was crafted to share it
 * (hundreds of such files used to copy the same region once each: 3.6 GiB of memory and
 * 1.2 GiB of index for a 128 MiB disk). Such a file, or one past the budget, is listed
 * without its bytes (and counted for the warning). */
typedef struct { int kept, lost, shared, over; } inline_counts;

static int extent_pages(const store_extent *x, uint64_t npages, uint64_t *first, uint64_t *end)
{
    if (x->len == 0 || x->disk_off / STORE_PAGE >= npages) return 0;
    *first = x->disk_off / STORE_PAGE;
    uint64_t last = x->len > UINT64_MAX - x->disk_off ? UINT64_MAX : x->disk_off + x->len;
    *end = (last + STORE_PAGE - 1) / STORE_PAGE;
    if (*end > npages) *end = npages;
    return 1;
}

static void drop_bytes(store_fentry *f)
{
    free(f->ext);
    f->ext = NULL;
    f->next = 0;
    f->size = 0;     /* listed, but its bytes are not where the stored disk has them */
}

static void inline_changed(store_findex *fi, const char *copy, const uint8_t *bits, uint64_t npages,
                           uint64_t budget, inline_counts *c)
{
    int fd = open(copy, O_RDONLY | O_CLOEXEC);
    uint8_t *claimed = calloc((npages + 7) / 8 + 1, 1);
    uint64_t spent = 0;
    for (size_t i = 0; fd >= 0 && claimed && i < fi->n; i++) {
        store_fentry *f = &fi->e[i];
        int touched = 0, shared = 0;
        for (uint32_t k = 0; k < f->next; k++) {
            uint64_t p, end;
            if (!extent_pages(&f->ext[k], npages, &p, &end)) continue;
            for (; p < end; p++)
                if (bits[p / 8] >> (p % 8) & 1) {
                    touched = 1;
                    shared |= claimed[p / 8] >> (p % 8) & 1;
                }
        }
        if (!touched) continue;
        int fits = f->size <= INLINE_MAX && f->size <= budget - spent;
        for (uint32_t k = 0; fits && k < f->next; k++)
            fits = f->ext[k].file_off <= f->size && f->ext[k].len <= f->size - f->ext[k].file_off;
        uint8_t *data = !shared && fits ? calloc(f->size ? f->size : 1, 1) : NULL;
        for (uint32_t k = 0; data && k < f->next; k++)
            if (pread(fd, data + f->ext[k].file_off, f->ext[k].len, (off_t)f->ext[k].disk_off) != (ssize_t)f->ext[k].len) {
                free(data);
                data = NULL;
            }
        if (!data) {
            if (shared) c->shared++;
            else if (f->size <= INLINE_MAX && f->size > budget - spent) c->over++;
            else c->lost++;
            drop_bytes(f);
            continue;
        }
        for (uint32_t k = 0; k < f->next; k++) {
            uint64_t p, end;
            if (!extent_pages(&f->ext[k], npages, &p, &end)) continue;
            for (; p < end; p++)
                if (bits[p / 8] >> (p % 8) & 1) claimed[p / 8] |= (uint8_t)(1u << (p % 8));
        }
        free(f->ext);
        f->ext = NULL;
        f->next = 0;
        free(f->inline_data);
        f->inline_data = data;
        f->inline_len = (uint32_t)f->size;
        spent += f->size;
        c->kept++;
    }
    free(claimed);
    if (fd >= 0) close(fd);
}

int snap_index_disk_replayed(const char *image, uint64_t disk_bytes, store_findex **out, char *warn,
                             size_t wcap, store_err *e)
{
    warn[0] = 0;
    if (!snap_journal_needs_recovery(image)) return snap_index_disk(image, disk_bytes, out, e);
    const char *tmpdir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[4096], copy[4200];
    snprintf(dir, sizeof dir, "%s/cairn-journal-XXXXXX", tmpdir);
    if (!mkdtemp(dir)) return store_errf(e, -errno, "%s: %s", dir, strerror(errno));
    snprintf(copy, sizeof copy, "%s/disk", dir);
    store_err re;
    int rc = sparse_copy(image, copy, &re);
    if (!rc) rc = replay(copy, &re);
    if (rc) {
        /* Without a replay the index misses what only the journal holds: say so. */
        snprintf(warn, wcap, "journal not replayed (%s): files written just before the pause may be missing",
                 re.msg);
        unlink(copy);
        rmdir(dir);
        return snap_index_disk(image, disk_bytes, out, e);
    }
    rc = snap_index_disk(copy, disk_bytes, out, e);
    if (!rc) {
        uint64_t np = 0;
        uint8_t *bits = diff_pages(image, copy, &np, &re);
        inline_counts c = {0};
        uint64_t budget = disk_bytes < INLINE_BUDGET ? disk_bytes : INLINE_BUDGET;
        if (bits) inline_changed(*out, copy, bits, np, budget, &c);
        else snprintf(warn, wcap, "journal replayed, but comparing it failed: %s", re.msg);
        if (c.shared)
            snprintf(warn, wcap, "%d files claim blocks the journal changed that another file holds (a "
                     "crafted image: ext4 never shares blocks): listed without their bytes", c.shared);
        else if (c.lost || c.over)
            snprintf(warn, wcap, "%d files written just before the pause exist only in the journal and are "
                     "larger than %u MiB or past the %llu MiB kept for such files: listed without their "
                     "bytes", c.lost + c.over, INLINE_MAX >> 20, (unsigned long long)(budget >> 20));
        free(bits);
    }
    unlink(copy);
    rmdir(dir);
    return rc;
}
