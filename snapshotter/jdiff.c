/* The journal diff (journal.c says why it exists). It runs inside the confined walker
 * (ext4walk.c), after the walk of the replayed copy: it reads tenant bytes and keeps some
 * of them, so it gets the walker's memory limits, and the parent only ever decodes the
 * walker's bounded output.
 *
 * Files whose data touches a changed page keep their (replayed) bytes in the index, each
 * changed page for one file only and within the walker's budget, so that the index stays
 * bounded by the disk whatever the image says. ext4 never gives a block to two files: a
 * file whose extents reach a changed page another kept file already claimed was crafted to
 * share it (hundreds of such files used to copy the same region once each: 3.6 GiB of
 * memory and 1.2 GiB of index for a 128 MiB disk). Such a file, or one past the budget, is
 * listed without its bytes (and counted for the warning). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshotter/jdiff.h"

#define INLINE_MAX (4u << 20)       /* bytes of one journal-changed file kept in the index */
#define CMP_BYTES (1u << 20)

/* Pages (a bitmap, by page index) where the copy differs from the image; NULL and why. */
static uint8_t *diff_pages(int a, int b, uint64_t *npages, char *why, size_t wcap)
{
    struct stat st;
    uint8_t *bits = NULL, *ba = malloc(CMP_BYTES), *bb = malloc(CMP_BYTES);
    if (fstat(b, &st) < 0 || !ba || !bb) {
        snprintf(why, wcap, "%s", !ba || !bb ? "out of memory" : strerror(errno));
        goto fail;
    }
    *npages = ((uint64_t)st.st_size + STORE_PAGE - 1) / STORE_PAGE;
    if (!(bits = calloc((*npages + 7) / 8 + 1, 1))) {
        snprintf(why, wcap, "out of memory for %llu pages", (unsigned long long)*npages);
        goto fail;
    }
    /* Replay only writes blocks, so the copy's data regions cover every difference. */
    for (off_t pos = 0; pos < st.st_size;) {
        off_t ds = lseek(b, pos, SEEK_DATA);
        if (ds < 0 && errno == ENXIO) break;            /* only a hole remains */
        if (ds < 0) {
            snprintf(why, wcap, "seeking the copy: %s", strerror(errno));
            goto fail;
        }
        off_t de = lseek(b, ds, SEEK_HOLE);
        if (de < 0) de = st.st_size;
        for (off_t o = ds; o < de;) {
            size_t want = (size_t)(de - o < CMP_BYTES ? de - o : CMP_BYTES);
            ssize_t ra = pread(a, ba, want, o), rb = pread(b, bb, want, o);
            if (ra < 0 || rb <= 0) {
                snprintf(why, wcap, "reading at %lld: %s", (long long)o, rb == 0 ? "the copy shrank" : strerror(errno));
                goto fail;
            }
            if (ra < rb) memset(ba + ra, 0, (size_t)(rb - ra));   /* the image ends earlier */
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
    free(ba);
    free(bb);
    return bits;
fail:
    free(bits);
    free(ba);
    free(bb);
    return NULL;
}

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

/* The changed pages in ascending order, and which of them a kept file claimed, counted by
 * a Fenwick tree over their ranks: whether an extent touches a changed page, or a claimed
 * one, costs two binary searches and two prefix sums, whatever its length. Testing each
 * page of each extent cost files x pages: an inode holds 4 inline extents of 32768 blocks,
 * so 20 000 inodes each claiming a 512 MiB disk cost 2.6e9 bit tests (100 000 inodes on a
 * larger disk reach the walker's CPU limit, a core burnt per attempt). Now the work is
 * bounded by the disk (the diff), the index (two searches per extent) and the bytes kept
 * (a page is claimed once, by a file whose extents are disjoint and within its size). */
typedef struct {
    uint64_t *pg;        /* changed pages, ascending */
    uint32_t *fen;       /* Fenwick tree, 1-based: claimed pages among ranks */
    uint8_t *taken;      /* by rank: claimed */
    size_t n;
} changed_set;

static size_t rank_of(const changed_set *cs, uint64_t p)     /* first rank with pg >= p */
{
    size_t lo = 0, hi = cs->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cs->pg[mid] < p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static uint64_t claimed_below(const changed_set *cs, size_t r)     /* claimed ranks < r */
{
    uint64_t sum = 0;
    for (; r > 0; r &= r - 1) sum += cs->fen[r];
    return sum;
}

static void claim(changed_set *cs, size_t r)
{
    if (cs->taken[r / 8] >> (r % 8) & 1) return;
    cs->taken[r / 8] |= (uint8_t)(1u << (r % 8));
    for (size_t i = r + 1; i <= cs->n; i += i & (~i + 1)) cs->fen[i]++;
}

static int changed_set_init(changed_set *cs, const uint8_t *bits, uint64_t npages)
{
    size_t n = 0;
    for (uint64_t w = 0; w < (npages + 7) / 8; w++)
        n += (size_t)__builtin_popcount(bits[w]);
    *cs = (changed_set){malloc((n ? n : 1) * sizeof *cs->pg), calloc(n + 1, sizeof *cs->fen),
                        calloc(n / 8 + 1, 1), n};
    if (!cs->pg || !cs->fen || !cs->taken || n > UINT32_MAX) return -1;
    size_t k = 0;
    for (uint64_t w = 0; w < (npages + 7) / 8; w++)
        for (unsigned b = 0; bits[w] >> b; b++)
            if (bits[w] >> b & 1) cs->pg[k++] = w * 8 + b;
    return 0;
}

static void changed_set_free(changed_set *cs)
{
    free(cs->pg);
    free(cs->fen);
    free(cs->taken);
}

/* -1: out of memory (nothing changed in fi). */
static int inline_changed(store_findex *fi, int fd, const uint8_t *bits, uint64_t npages, uint64_t budget,
                          inline_counts *c)
{
    changed_set cs;
    if (changed_set_init(&cs, bits, npages)) {
        changed_set_free(&cs);
        return -1;
    }
    uint64_t spent = 0;
    for (size_t i = 0; i < fi->n; i++) {
        store_fentry *f = &fi->e[i];
        int touched = 0, shared = 0;
        for (uint32_t k = 0; k < f->next && !shared; k++) {
            uint64_t p, end;
            if (!extent_pages(&f->ext[k], npages, &p, &end)) continue;
            size_t lo = rank_of(&cs, p), hi = rank_of(&cs, end);
            if (lo == hi) continue;
            touched = 1;
            shared = claimed_below(&cs, hi) > claimed_below(&cs, lo);
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
        /* The walker's extents are ordered and disjoint within the size, so the pages
         * walked here stay within the bytes kept. */
        for (uint32_t k = 0; k < f->next; k++) {
            uint64_t p, end;
            if (!extent_pages(&f->ext[k], npages, &p, &end)) continue;
            for (size_t r = rank_of(&cs, p), hi = rank_of(&cs, end); r < hi; r++) claim(&cs, r);
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
    changed_set_free(&cs);
    return 0;
}

void snap_jdiff_apply(store_findex *fi, int image_fd, int copy_fd, uint64_t budget, char *warn, size_t wcap)
{
    warn[0] = 0;
    uint64_t np = 0;
    char why[160];
    uint8_t *bits = diff_pages(image_fd, copy_fd, &np, why, sizeof why);
    if (!bits) {
        snprintf(warn, wcap, "journal replayed, but comparing it with the disk failed: %s", why);
        return;
    }
    inline_counts c = {0};
    int rc = inline_changed(fi, copy_fd, bits, np, budget, &c);
    free(bits);
    if (rc < 0) {
        snprintf(warn, wcap, "journal replayed, but comparing it with the disk failed: out of memory "
                 "for its changed pages");
        return;
    }
    if (c.shared)
        snprintf(warn, wcap, "%d files claim blocks the journal changed that another file holds (a "
                 "crafted image: ext4 never shares blocks): listed without their bytes", c.shared);
    else if (c.lost || c.over)
        snprintf(warn, wcap, "%d files written just before the pause exist only in the journal and are "
                 "larger than %u MiB or past the %llu MiB kept for such files: listed without their "
                 "bytes", c.lost + c.over, INLINE_MAX >> 20, (unsigned long long)(budget >> 20));
}
