/* The disk's file index: a confined child process walks the ext4 image with libext2fs.
 *
 * The image is tenant-controlled: every byte of it may be hostile. The child
 *   - opens the image read-only, then confines itself: no new privileges, dies with its
 *     parent, chroot to an empty folder and the nobody user when root, memory (RLIMIT_AS),
 *     CPU time and file-size (0: it can write no file) limits;
 *   - walks from the root, never visiting a directory inode twice (loops), bounding depth,
 *     entries, extents and xattrs, refusing names with '/' or NUL and "."/"..";
 *   - reads extents with the extent API (whole extents, never block by block, so a hostile
 *     "1 TiB" extent costs nothing) and refuses those past the end of the disk;
 *   - counts what the index costs in memory (entries, paths, hard-link targets, extents,
 *     xattrs, inline bytes) and stops, with a warning, at a budget: INDEX_BUDGET, and never
 *     more than half the disk. Names are cheap in an image (a hard link is a 12-byte
 *     directory entry, yet costs the index its path and its target's, 8 KiB deep in a tree)
 *     so without the budget a 128 MiB image made the walker 1.5 GiB;
 *   - for a disk whose journal was replayed into a private copy, compares the copy with the
 *     disk and keeps the changed files' bytes (jdiff.c), within the same budget;
 *   - sends the result as the store's own file-index encoding through a pipe.
 * The parent refuses more bytes than the budget allows, then parses them with the
 * bounds-checked decoder, under a wall-clock timeout. So a disk snapshot's peak RSS stays
 * under 256 MiB whatever the image says (tests/integration/index_rss.sh measures it).
 * A child that crashes or times out costs the snapshot its index, never the snapshot.
 * The child is a fork, or, in cairn (snap_walker_exec), a fresh process of the same binary
 * spawned with the pipe and the images as its fds 3-5: a fork of a server with busy threads
 * made every thread take copy-on-write faults and TLB shootdowns while the walk ran.
 */
#include <sys/types.h>

#include <errno.h>
#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "snapshotter/jdiff.h"
#include "store/toolbox.h"

#define MAX_ENTRIES 2000000
#define MAX_DEPTH 256
#define MAX_PATH 4096
#define MAX_EXTENTS 65536
#define MAX_XATTRS 64
#define MAX_XATTR_BYTES 65536
/* Memory of the index (and the journal's kept bytes) in the walker; the encoding and the
 * parent's decoded copy each cost about as much again: 64 MiB keeps both processes under
 * 256 MiB (index_rss.sh) and holds ~250 000 files with short paths. */
#define INDEX_BUDGET (64ull << 20)
#define MIN_BUDGET (1ull << 20)
/* Address space the walker may add to what it inherits: a backstop for what libext2fs
 * allocates by the image's word (bitmaps, group tables), which the budget does not see. */
#define CHILD_HEAP (256ULL << 20)
#define WARN_MAX 1024
#define CHILD_CPU_SECONDS 60
#define WALL_SECONDS 120

/* (inode, index entry) pairs: a directory's subdirectories, the first name of linked inodes. */
typedef struct {
    ext2_ino_t *ino;
    size_t *entry;
    size_t n, cap;
} ino_list;

static int ino_list_push(ino_list *l, ext2_ino_t ino, size_t entry)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        ext2_ino_t *a = realloc(l->ino, nc * sizeof *a);
        if (a) l->ino = a;
        size_t *b = realloc(l->entry, nc * sizeof *b);
        if (b) l->entry = b;
        if (!a || !b) return -1;
        l->cap = nc;
    }
    l->ino[l->n] = ino;
    l->entry[l->n++] = entry;
    return 0;
}

static void ino_list_free(ino_list *l)
{
    free(l->ino);
    free(l->entry);
}

/* inode -> index entry of its first name, for inodes with nlink > 1 (open addressing,
 * cap a power of two, inode 0 free): a tree of hard links (pnpm, git clones with
 * --local) has as many as files. */
typedef struct {
    ext2_ino_t *ino;
    size_t *entry;
    size_t n, cap;
} link_map;

typedef struct {
    ext2_filsys fs;
    store_findex *fi;
    size_t cap;
    uint64_t disk_bytes;
    unsigned blocksize;
    link_map links;
    ext2fs_inode_bitmap seen_dirs;
    uint64_t budget, used;      /* bytes of memory the index may cost, and costs */
    int truncated, refused, bad_inodes;
} walk;

/* Counts n bytes against the budget; -1 (and the index truncated) past it. */
static int charge(walk *w, uint64_t n)
{
    if (n > w->budget - w->used) {
        w->truncated = 1;
        return -1;
    }
    w->used += n;
    return 0;
}

/* malloc's own cost of a block, roughly: what RSS sees beyond the bytes asked for. */
#define BLOCK_COST(n) ((uint64_t)(n) + 16)

static size_t link_slot(const link_map *m, ext2_ino_t ino)
{
    size_t i = (size_t)(ino * 0x9e3779b1u) & (m->cap - 1);
    while (m->ino[i] && m->ino[i] != ino) i = (i + 1) & (m->cap - 1);
    return i;
}

static int link_add(walk *w, ext2_ino_t ino, size_t entry)
{
    link_map *m = &w->links;
    if (2 * (m->n + 1) > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 256;
        if (charge(w, BLOCK_COST(nc * (sizeof *m->ino + sizeof *m->entry)))) return -1;
        link_map g = {calloc(nc, sizeof *m->ino), calloc(nc, sizeof *m->entry), m->n, nc};
        if (!g.ino || !g.entry) {
            free(g.ino);
            free(g.entry);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->ino[i]) {
                size_t k = link_slot(&g, m->ino[i]);
                g.ino[k] = m->ino[i];
                g.entry[k] = m->entry[i];
            }
        free(m->ino);
        free(m->entry);
        *m = g;
    }
    size_t k = link_slot(m, ino);
    if (!m->ino[k]) m->n++;
    m->ino[k] = ino;
    m->entry[k] = entry;
    return 0;
}

static int64_t ts_ns(uint32_t sec, uint32_t extra, int has_extra)
{
    int64_t s = (int32_t)sec;
    if (!has_extra) return s * 1000000000LL;
    s += (int64_t)(extra & 3) << 32;            /* epoch bits extend the seconds */
    /* ext4 dates reach the year 2446; nanoseconds in 64 bits end in 2262: a later date
     * (only a crafted image has one) is kept as the last one we can say. */
    if (s > INT64_MAX / 1000000000LL - 1) return INT64_MAX / 1000000000LL * 1000000000LL;
    return s * 1000000000LL + (extra >> 2);
}

static store_fentry *new_entry(walk *w, const char *path, size_t plen)
{
    /* The entry array grows by doubling, but realloc moves a large block by remapping it:
     * only the entries in use are resident. */
    if (w->fi->n >= MAX_ENTRIES || charge(w, sizeof(store_fentry) + BLOCK_COST(plen + 1))) {
        w->truncated = 1;
        return NULL;
    }
    if (w->fi->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 1024;
        store_fentry *ne = realloc(w->fi->e, nc * sizeof *ne);
        if (!ne) {
            w->truncated = 1;
            return NULL;
        }
        w->fi->e = ne;
        w->cap = nc;
    }
    store_fentry *f = &w->fi->e[w->fi->n];
    memset(f, 0, sizeof *f);
    f->path = malloc(plen + 1);
    if (!f->path) {
        w->truncated = 1;
        return NULL;
    }
    memcpy(f->path, path, plen);
    f->path[plen] = 0;
    f->path_len = (uint32_t)plen;
    w->fi->n++;
    return f;
}

typedef struct {
    walk *w;
    store_fentry *f;
    size_t max, bytes;
} xattr_ctx;

static int xattr_cb(char *name, char *value, size_t vlen, void *data)
{
    xattr_ctx *c = data;
    if (c->f->nxattrs >= c->max || c->bytes + vlen > MAX_XATTR_BYTES) return XATTR_ABORT;
    if (charge(c->w, BLOCK_COST(strlen(name) + 1) + BLOCK_COST(vlen))) return XATTR_ABORT;
    store_xattr *x = &c->f->xattrs[c->f->nxattrs];
    x->name = strdup(name);
    x->value = malloc(vlen ? vlen : 1);
    if (!x->name || !x->value) {
        free(x->name);
        free(x->value);
        return XATTR_ABORT;
    }
    memcpy(x->value, value, vlen);
    x->len = (uint32_t)vlen;
    c->f->nxattrs++;
    c->bytes += vlen;
    return 0;
}

static void read_xattrs(walk *w, ext2_ino_t ino, store_fentry *f)
{
    struct ext2_xattr_handle *h = NULL;
    if (ext2fs_xattrs_open(w->fs, ino, &h)) return;
    size_t count = 0;
    if (ext2fs_xattrs_read(h) == 0 && ext2fs_xattrs_count(h, &count) == 0 && count) {
        if (count > MAX_XATTRS) count = MAX_XATTRS;
        f->xattrs = charge(w, BLOCK_COST(count * sizeof *f->xattrs)) ? NULL : calloc(count, sizeof *f->xattrs);
        xattr_ctx c = {w, f, f->xattrs ? count : 0, 0};
        if (f->xattrs) ext2fs_xattrs_iterate(h, xattr_cb, &c);
    }
    ext2fs_xattrs_close(&h);
}

/* Data extents of an extent-mapped file, as disk byte ranges. Uninitialised extents read
 * as zeros: they are holes. Extents outside the disk or past the file size are refused. */
static int read_extents(walk *w, ext2_ino_t ino, struct ext2_inode *inode, store_fentry *f)
{
    ext2_extent_handle_t h;
    if (ext2fs_extent_open2(w->fs, ino, inode, &h)) return -1;
    struct ext2fs_extent ex;
    size_t cap = 0;
    int rc = 0;
    errcode_t err = ext2fs_extent_get(h, EXT2_EXTENT_ROOT, &ex);
    for (unsigned steps = 0; !err && steps < 4 * MAX_EXTENTS; steps++) {
        if ((ex.e_flags & EXT2_EXTENT_FLAGS_LEAF) && !(ex.e_flags & EXT2_EXTENT_FLAGS_UNINIT) &&
            ex.e_len) {
            uint64_t boff = (uint64_t)ex.e_lblk * w->blocksize;
            uint64_t doff = (uint64_t)ex.e_pblk * w->blocksize;
            uint64_t len = (uint64_t)ex.e_len * w->blocksize;
            if (doff >= w->disk_bytes || len > w->disk_bytes - doff) {
                rc = -1;                         /* points outside the disk: hostile/corrupt */
                break;
            }
            if (boff < f->size) {
                if (len > f->size - boff) len = f->size - boff;
                if (f->next && f->ext[f->next - 1].file_off + f->ext[f->next - 1].len > boff) {
                    rc = -1;                     /* overlapping or unordered: corrupt */
                    break;
                }
                if (f->next == MAX_EXTENTS) {
                    rc = -1;
                    break;
                }
                if (f->next == cap) {
                    cap = cap ? cap * 2 : 8;
                    store_extent *ne = charge(w, BLOCK_COST(cap * sizeof *ne) / 2) ? NULL
                                                                                   : realloc(f->ext, cap * sizeof *ne);
                    if (!ne) {
                        rc = -1;
                        break;
                    }
                    f->ext = ne;
                }
                store_extent *last = f->next ? &f->ext[f->next - 1] : NULL;
                if (last && last->file_off + last->len == boff && last->disk_off + last->len == doff)
                    last->len += len;            /* physically contiguous: one range */
                else
                    f->ext[f->next++] = (store_extent){boff, doff, len};
            }
        }
        err = ext2fs_extent_get(h, EXT2_EXTENT_NEXT_LEAF, &ex);
    }
    ext2fs_extent_free(h);
    return rc;
}

/* Old-style (ext2/3) block-mapped files: iterate blocks, bounded by the disk size. */
typedef struct {
    walk *w;
    store_fentry *f;
    size_t cap;
    int bad;
} blk_ctx;

static int blk_cb(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt, blk64_t ref_blk,
                  int ref_offset, void *priv)
{
    (void)fs;
    (void)ref_blk;
    (void)ref_offset;
    blk_ctx *c = priv;
    if (blockcnt < 0) return 0;                  /* metadata (indirect) blocks */
    uint64_t boff = (uint64_t)blockcnt * c->w->blocksize, doff = *blocknr * c->w->blocksize;
    if (doff >= c->w->disk_bytes || c->f->next >= MAX_EXTENTS) {
        c->bad = 1;
        return BLOCK_ABORT;
    }
    if (boff >= c->f->size) return 0;
    uint64_t len = c->w->blocksize;
    if (len > c->f->size - boff) len = c->f->size - boff;
    store_extent *last = c->f->next ? &c->f->ext[c->f->next - 1] : NULL;
    if (last && last->file_off + last->len == boff && last->disk_off + last->len == doff) {
        last->len += len;
        return 0;
    }
    if (c->f->next == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 8;
        store_extent *ne = charge(c->w, BLOCK_COST(c->cap * sizeof *ne) / 2) ? NULL
                                                                            : realloc(c->f->ext, c->cap * sizeof *ne);
        if (!ne) {
            c->bad = 1;
            return BLOCK_ABORT;
        }
        c->f->ext = ne;
    }
    c->f->ext[c->f->next++] = (store_extent){boff, doff, len};
    return 0;
}

static void read_data(walk *w, ext2_ino_t ino, struct ext2_inode *inode, store_fentry *f)
{
    int bad = 0;
    if (inode->i_flags & EXT4_INLINE_DATA_FL) {
        size_t sz = 0;
        if (ext2fs_inline_data_size(w->fs, ino, &sz) || sz > 65536) bad = 1;
        else if (charge(w, BLOCK_COST(sz)) || (f->inline_data = malloc(sz ? sz : 1)) == NULL) bad = 1;
        else if (ext2fs_inline_data_get(w->fs, ino, inode, f->inline_data, &sz)) bad = 1;
        else f->inline_len = (uint32_t)(sz < f->size ? sz : f->size);
    } else if (inode->i_flags & EXT4_EXTENTS_FL) {
        bad = read_extents(w, ino, inode, f) != 0;
    } else if (ext2fs_inode_has_valid_blocks2(w->fs, inode)) {
        blk_ctx c = {w, f, 0, 0};
        if (ext2fs_block_iterate3(w->fs, ino, BLOCK_FLAG_READ_ONLY | BLOCK_FLAG_DATA_ONLY, NULL,
                                  blk_cb, &c) || c.bad)
            bad = 1;
    }
    if (bad) {
        /* Keep the entry (its metadata is real) but with no bytes we could trust. */
        free(f->ext);
        f->ext = NULL;
        f->next = 0;
        free(f->inline_data);
        f->inline_data = NULL;
        f->inline_len = 0;
        f->size = 0;
        w->bad_inodes++;
    }
}

static void read_symlink(walk *w, ext2_ino_t ino, struct ext2_inode *inode, store_fentry *f)
{
    uint64_t sz = EXT2_I_SIZE(inode);
    if (sz == 0 || sz >= MAX_PATH) {
        w->bad_inodes++;
        return;
    }
    if (charge(w, BLOCK_COST(sz + 1))) return;
    char *t = calloc(1, sz + 1);
    if (!t) return;
    if (ext2fs_is_fast_symlink(inode)) {
        memcpy(t, (char *)inode->i_block, sz < sizeof inode->i_block ? sz : sizeof inode->i_block);
    } else if (inode->i_flags & EXT4_INLINE_DATA_FL) {
        size_t got = sz;
        char *tmp = malloc(65536);
        if (tmp && ext2fs_inline_data_get(w->fs, ino, inode, tmp, &got) == 0)
            memcpy(t, tmp, got < sz ? got : sz);
        free(tmp);
    } else {
        ext2_file_t file;
        unsigned got = 0;
        if (ext2fs_file_open2(w->fs, ino, inode, 0, &file) == 0) {
            ext2fs_file_read(file, t, (unsigned)sz, &got);
            ext2fs_file_close(file);
        }
    }
    if (memchr(t, 0, sz)) {     /* a NUL inside a target: corrupt; keep what precedes */
        w->bad_inodes++;
    }
    f->target = t;
}

static int link_lookup(walk *w, ext2_ino_t ino, size_t *entry)
{
    if (!w->links.cap) return 0;
    size_t k = link_slot(&w->links, ino);
    if (!w->links.ino[k]) return 0;
    *entry = w->links.entry[k];
    return 1;
}

typedef struct {
    walk *w;
    char *path;
    size_t plen;
    int depth;
    ino_list sub;               /* subdirectories, visited after this directory's iteration */
} dir_ctx;

static void visit_dir(walk *w, ext2_ino_t dir, char *path, size_t plen, int depth);

static int dir_cb(ext2_ino_t dir, int entry, struct ext2_dir_entry *dirent, int offset,
                  int blocksize, char *buf, void *priv)
{
    (void)dir;
    (void)entry;
    (void)offset;
    (void)blocksize;
    (void)buf;
    dir_ctx *c = priv;
    walk *w = c->w;
    unsigned nlen = ext2fs_dirent_name_len(dirent);
    const char *name = dirent->name;
    ext2_ino_t ino = dirent->inode;
    if (!ino) return 0;
    if ((nlen == 1 && name[0] == '.') || (nlen == 2 && name[0] == '.' && name[1] == '.')) return 0;
    if (nlen == 0 || memchr(name, '/', nlen) || memchr(name, 0, nlen) || c->plen + 1 + nlen >= MAX_PATH) {
        w->refused++;
        return 0;
    }
    if (ino > w->fs->super->s_inodes_count || w->truncated) {
        if (!w->truncated) w->refused++;
        return w->truncated ? DIRENT_ABORT : 0;
    }
    size_t base = c->plen;
    if (!(base == 1 && c->path[0] == '/')) c->path[base++] = '/';
    else base = 1;
    memcpy(c->path + base, name, nlen);
    size_t plen = base + nlen;
    struct ext2_inode_large in;
    memset(&in, 0, sizeof in);
    if (ext2fs_read_inode_full(w->fs, ino, (struct ext2_inode *)&in, sizeof in)) {
        w->bad_inodes++;
        return 0;
    }
    struct ext2_inode *inode = (struct ext2_inode *)&in;
    store_fentry *f = new_entry(w, c->path, plen);
    if (!f) return DIRENT_ABORT;
    size_t me = w->fi->n - 1;
    int has_extra = EXT2_INODE_SIZE(w->fs->super) > EXT2_GOOD_OLD_INODE_SIZE &&
                    in.i_extra_isize >= 24;
    f->mode = inode->i_mode;
    f->uid = inode_uid(*inode);
    f->gid = inode_gid(*inode);
    f->atime_ns = ts_ns(inode->i_atime, in.i_atime_extra, has_extra);
    f->mtime_ns = ts_ns(inode->i_mtime, in.i_mtime_extra, has_extra);
    f->ctime_ns = ts_ns(inode->i_ctime, in.i_ctime_extra, has_extra);
    f->nlink = inode->i_links_count;
    f->size = EXT2_I_SIZE(inode);
    switch (inode->i_mode & S_IFMT) {
    case S_IFDIR:
        f->type = STORE_FT_DIR;
        f->size = 0;
        break;
    case S_IFLNK:
        f->type = STORE_FT_SYMLINK;
        read_symlink(w, ino, inode, f);
        break;
    case S_IFCHR:
    case S_IFBLK:
        f->type = S_ISCHR(inode->i_mode) ? STORE_FT_CHR : STORE_FT_BLK;
        f->rdev = inode->i_block[0] ? makedev((inode->i_block[0] >> 8) & 0xff, inode->i_block[0] & 0xff)
                                    : makedev((inode->i_block[1] & 0xfff00) >> 8,
                                              (inode->i_block[1] & 0xff) | ((inode->i_block[1] >> 12) & 0xfff00));
        f->size = 0;
        break;
    case S_IFIFO:
        f->type = STORE_FT_FIFO;
        f->size = 0;
        break;
    case S_IFSOCK:
        f->type = STORE_FT_SOCK;
        f->size = 0;
        break;
    case S_IFREG: {
        size_t first;
        if (inode->i_links_count > 1 && link_lookup(w, ino, &first)) {
            f->type = STORE_FT_HARDLINK;
            if (!charge(w, BLOCK_COST(w->fi->e[first].path_len + 1))) f->target = strdup(w->fi->e[first].path);
            break;
        }
        f->type = STORE_FT_FILE;
        if (inode->i_links_count > 1) link_add(w, ino, me);   /* no room: the next name is a copy */
        read_data(w, ino, inode, f);
        break;
    }
    default:
        w->bad_inodes++;
        f->type = STORE_FT_FILE;
        f->size = 0;
        f->mode = (f->mode & 07777) | S_IFREG;
        break;
    }
    if (f->type != STORE_FT_HARDLINK) read_xattrs(w, ino, f);
    if (w->truncated) {
        /* Past the budget in the middle of this entry: it goes, whole, and the walk stops. */
        store_fentry_clear(f);
        w->fi->n--;
        return DIRENT_ABORT;
    }
    if (f->type == STORE_FT_DIR) {
        /* Recurse after this directory's iteration: libext2fs keeps state per call. */
        if (ino_list_push(&c->sub, ino, me)) return DIRENT_ABORT;
    }
    return 0;
}

static void visit_dir(walk *w, ext2_ino_t dir, char *path, size_t plen, int depth)
{
    if (depth > MAX_DEPTH) {
        w->refused++;
        return;
    }
    if (ext2fs_test_inode_bitmap2(w->seen_dirs, dir)) {   /* a loop or a second link */
        w->refused++;
        return;
    }
    ext2fs_mark_inode_bitmap2(w->seen_dirs, dir);
    dir_ctx c = {.w = w, .path = path, .plen = plen, .depth = depth};
    if (ext2fs_dir_iterate2(w->fs, dir, 0, NULL, dir_cb, &c)) w->bad_inodes++;
    for (size_t i = 0; i < c.sub.n && !w->truncated; i++) {
        const store_fentry *f = &w->fi->e[c.sub.entry[i]];
        size_t l = f->path_len;
        memcpy(path, f->path, l);
        visit_dir(w, c.sub.ino[i], path, l, depth + 1);
    }
    ino_list_free(&c.sub);
}

static int cmp_entry(const void *a, const void *b)
{
    const store_fentry *x = a, *y = b;
    int c = memcmp(x->path, y->path, x->path_len < y->path_len ? x->path_len : y->path_len);
    return c ? c : (x->path_len < y->path_len ? -1 : x->path_len > y->path_len);
}

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static void confine(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    /* Nothing the parser says is for anyone: libext2fs may print about a hostile image,
     * and with a file-size limit of 0 a write to a file would kill the child (SIGXFSZ). */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 1);
        dup2(devnull, 2);
        close(devnull);
    }
    /* What it inherits (the parent's libraries, a server's thread stacks) plus CHILD_HEAP. */
    unsigned long long vm_pages = 0;
    FILE *statm = fopen("/proc/self/statm", "re");
    if (!statm || fscanf(statm, "%llu", &vm_pages) != 1) vm_pages = 0;
    if (statm) fclose(statm);
    rlim_t as = (rlim_t)vm_pages * (rlim_t)sysconf(_SC_PAGESIZE) + CHILD_HEAP;
    if (!vm_pages) as = 4 * CHILD_HEAP;          /* no /proc: a fixed backstop */
    struct rlimit mem = {as, as}, cpu = {CHILD_CPU_SECONDS, CHILD_CPU_SECONDS + 1}, zero = {0, 0};
#ifndef UNDER_ASAN
    setrlimit(RLIMIT_AS, &mem);   /* AddressSanitizer's shadow memory cannot live under it */
#else
    (void)mem;
#endif
    setrlimit(RLIMIT_CPU, &cpu);
    setrlimit(RLIMIT_FSIZE, &zero);
    setrlimit(RLIMIT_CORE, &zero);
}

static int drop_root(const char *empty)
{
    if (geteuid() != 0) return 0;
    if (chroot(empty) < 0 || chdir("/") < 0) return -1;
    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0) return -1;
    return 0;
}

/* The bytes of memory a disk's index may cost: INDEX_BUDGET, at most half the disk. */
static uint64_t index_budget(uint64_t disk_bytes)
{
    uint64_t b = disk_bytes / 2;
    return b < MIN_BUDGET ? MIN_BUDGET : b > INDEX_BUDGET ? INDEX_BUDGET : b;
}

/* Walks an open filesystem into a sorted, duplicate-free index (NULL when out of memory);
 * *used: bytes of the budget it cost. */
static store_findex *walk_fs(ext2_filsys fs, uint64_t disk_bytes, uint64_t *used)
{
    walk w = {.fs = fs, .disk_bytes = disk_bytes, .blocksize = fs->blocksize, .budget = index_budget(disk_bytes)};
    w.fi = calloc(1, sizeof *w.fi);
    char *path = malloc(MAX_PATH + 256);
    if (!w.fi || !path || ext2fs_allocate_inode_bitmap(fs, "seen", &w.seen_dirs)) {
        free(path);
        store_findex_free(w.fi);
        return NULL;
    }
    struct ext2_inode root;
    store_fentry *r = new_entry(&w, "/", 1);
    if (r && ext2fs_read_inode(fs, EXT2_ROOT_INO, &root) == 0) {
        r->type = STORE_FT_DIR;
        r->mode = root.i_mode;
        r->uid = inode_uid(root);
        r->gid = inode_gid(root);
        r->mtime_ns = (int64_t)(int32_t)root.i_mtime * 1000000000LL;
        r->atime_ns = (int64_t)(int32_t)root.i_atime * 1000000000LL;
        r->ctime_ns = (int64_t)(int32_t)root.i_ctime * 1000000000LL;
        r->nlink = root.i_links_count;
    } else if (r) {
        r->type = STORE_FT_DIR;
        r->mode = S_IFDIR | 0755;
    }
    path[0] = '/';
    visit_dir(&w, EXT2_ROOT_INO, path, 1, 0);
    free(path);
    ext2fs_free_inode_bitmap(w.seen_dirs);
    free(w.links.ino);
    free(w.links.entry);
    qsort(w.fi->e, w.fi->n, sizeof *w.fi->e, cmp_entry);
    /* Duplicate names in one directory (a corrupt image) would break lookups: drop them. */
    size_t k = 0;
    for (size_t i = 0; i < w.fi->n; i++) {
        if (k && !cmp_entry(&w.fi->e[k - 1], &w.fi->e[i])) {
            store_fentry_clear(&w.fi->e[i]);
            w.refused++;
            continue;
        }
        w.fi->e[k++] = w.fi->e[i];
    }
    w.fi->n = k;
    char warn[400] = "", trunc[200] = "";
    if (w.truncated)
        snprintf(trunc, sizeof trunc, "index truncated at %zu entries (a disk's index may hold %d "
                 "entries and cost %llu MiB of memory, at most half the disk); ", w.fi->n, MAX_ENTRIES,
                 (unsigned long long)(w.budget >> 20));
    if (w.truncated || w.refused || w.bad_inodes)
        snprintf(warn, sizeof warn, "%s%d names refused (loops, '/', '..', too deep), %d inodes "
                 "unreadable or corrupt", trunc, w.refused, w.bad_inodes);
    if (warn[0]) w.fi->warning = strdup(warn);
    *used = w.used;
    return w.fi;
}

static errcode_t open_image(const char *image, ext2_filsys *fs)
{
    initialize_ext2_error_table();
    /* Not unix_io_manager: it fsyncs the tenant's image at open (store/ext2io.c). */
    return ext2fs_open2(image, NULL, EXT2_FLAG_64BITS | EXT2_FLAG_IGNORE_CSUM_ERRORS, 0, 0,
                        (io_manager)store_ext2_io_manager(), fs);
}

int snap_index_disk_unconfined(const char *image, uint64_t disk_bytes, store_findex **out, store_err *e)
{
    *out = NULL;
    ext2_filsys fs = NULL;
    errcode_t err = open_image(image, &fs);
    if (err) return store_errf(e, -EBADMSG, "not a readable ext4 image: %s", error_message(err));
    uint64_t used;
    *out = walk_fs(fs, disk_bytes, &used);
    ext2fs_close_free(&fs);
    return *out ? 0 : store_errf(e, -ENOMEM, "out of memory walking the image");
}

static int write_all(int fd, const void *p, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, (const char *)p + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        off += (size_t)n;
    }
    return 0;
}

/* The child: never returns. Walks image; with stored (the disk as it will be stored, image
 * being its replayed copy) applies the journal diff. Exit 0 after writing to fd
 *   'I', the warning's length (2 bytes, little-endian), the warning, the encoded index
 * or 'E' and libext2fs's message when the image cannot be opened. */
static void child_main(const char *image, const char *stored, uint64_t disk_bytes, const char *empty, int fd)
{
    confine();
    ext2_filsys fs = NULL;
    errcode_t err = open_image(image, &fs);
    if (err) {
        dprintf(fd, "E%s", error_message(err));
        _exit(3);
    }
    int stored_fd = -1, copy_fd = -1;
    if (stored && ((stored_fd = open(stored, O_RDONLY | O_CLOEXEC)) < 0 ||
                   (copy_fd = open(image, O_RDONLY | O_CLOEXEC)) < 0)) {
        dprintf(fd, "E%s: %s", stored_fd < 0 ? "the disk" : "its replayed copy", strerror(errno));
        _exit(3);
    }
    if (drop_root(empty) < 0) _exit(4);
    uint64_t used = 0;
    store_findex *fi = walk_fs(fs, disk_bytes, &used);
    if (!fi) _exit(5);
    char warn[WARN_MAX] = "";
    if (stored) snap_jdiff_apply(fi, stored_fd, copy_fd, index_budget(disk_bytes) - used, warn, sizeof warn);
    uint8_t *buf;
    size_t len;
    if (store_findex_encode(fi, &buf, &len, NULL)) _exit(6);
    store_findex_free(fi);        /* the encoding alone from here: half the peak */
    size_t wl = strlen(warn);
    uint8_t head[3] = {'I', (uint8_t)(wl & 0xff), (uint8_t)(wl >> 8)};
    if (write_all(fd, head, 3) || write_all(fd, warn, wl) || write_all(fd, buf, len)) _exit(7);
    _exit(0);
}

/* ---- starting the walker: fork, or spawn a fresh process (snap_walker_exec) ---------- */

static const char *walker_exe;
#define WALK_ARG "__cairn_walk"      /* argv[1] of a spawned walker */
enum { WALK_PIPE_FD = 3, WALK_IMAGE_FD = 4, WALK_STORED_FD = 5 };

void snap_walker_exec(const char *exe) { walker_exe = exe; }

int snap_walker_main(int argc, char **argv)
{
    if (argc != 6 || strcmp(argv[1], WALK_ARG)) return 0;
    char *end;
    unsigned long long disk_bytes = strtoull(argv[4], &end, 10);
    if (*end) _exit(2);
    child_main(argv[2], strcmp(argv[3], "-") ? argv[3] : NULL, disk_bytes, argv[5], WALK_PIPE_FD);
    return 0;   /* not reached: child_main exits */
}

/* Spawns walker_exe as the walker: its fds 3 (the pipe), 4 (the image) and 5 (the stored
 * disk, for a replayed copy) are ours; nothing else of this process is shared. Its name
 * (argv[0], cairn-walk) tells the tests' fault shim it is not the cairn it counts. */
static int walker_spawn(const char *image, const char *stored, uint64_t disk_bytes, const char *empty, int wfd,
                        pid_t *pid, store_err *e)
{
    int fds[3] = {-1, -1, -1}, rc = 0;
    const char *what[3] = {"the parser's pipe", image, stored};
    /* Copies at 10 and up: a dup2 onto a target it already is would keep close-on-exec. */
    fds[0] = fcntl(wfd, F_DUPFD_CLOEXEC, 10);
    if (fds[0] >= 0) fds[1] = open(image, O_RDONLY | O_CLOEXEC);
    if (fds[1] >= 0 && fds[1] < 10) {
        int hi = fcntl(fds[1], F_DUPFD_CLOEXEC, 10);
        close(fds[1]);
        fds[1] = hi;
    }
    if (fds[1] >= 0 && stored) fds[2] = open(stored, O_RDONLY | O_CLOEXEC);
    if (fds[2] >= 0 && fds[2] < 10) {
        int hi = fcntl(fds[2], F_DUPFD_CLOEXEC, 10);
        close(fds[2]);
        fds[2] = hi;
    }
    for (int i = 0; i < (stored ? 3 : 2) && !rc; i++)
        if (fds[i] < 0) rc = store_errf(e, -errno, "%s: %s", what[i], strerror(errno));
    char bytes[24];
    snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)disk_bytes);
    char *argv[] = {"cairn-walk", WALK_ARG, "/proc/self/fd/4", stored ? "/proc/self/fd/5" : "-", bytes,
                    (char *)empty, NULL};
    posix_spawn_file_actions_t fa;
    int fa_ok = !rc && posix_spawn_file_actions_init(&fa) == 0;
    if (!rc && !fa_ok) rc = store_errf(e, -ENOMEM, "out of memory");
    int sr = 0;
    if (fa_ok && ((sr = posix_spawn_file_actions_adddup2(&fa, fds[0], WALK_PIPE_FD)) ||
                  (sr = posix_spawn_file_actions_adddup2(&fa, fds[1], WALK_IMAGE_FD)) ||
                  (stored && (sr = posix_spawn_file_actions_adddup2(&fa, fds[2], WALK_STORED_FD)))))
        rc = store_errf(e, -sr, "spawning the disk image parser: %s", strerror(sr));
    extern char **environ;
    if (!rc && (sr = posix_spawn(pid, walker_exe, &fa, NULL, argv, environ)))
        rc = store_errf(e, -sr, "spawning the disk image parser (%s): %s", walker_exe, strerror(sr));
    if (fa_ok) posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0) close(fds[i]);
    return rc;
}

/* Starts the walker (child_main: forked, or spawned) and decodes what it sends. */
static int index_child(const char *image, const char *stored, uint64_t disk_bytes, store_findex **out,
                       char *warn, size_t wcap, store_err *e)
{
    *out = NULL;
    if (wcap) warn[0] = 0;
    char empty[] = "/tmp/cairn-walk-XXXXXX";
    if (!mkdtemp(empty)) return store_errf(e, -errno, "cannot make a folder for the image parser: %s", strerror(errno));
    if (chmod(empty, 0555) < 0) {
        int err = errno;
        rmdir(empty);
        return store_errf(e, -err, "%s: %s", empty, strerror(err));
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        int err = errno;
        rmdir(empty);
        return store_errf(e, -err, "pipe: %s", strerror(err));
    }
    pid_t pid = -1;
    int src = walker_exe ? walker_spawn(image, stored, disk_bytes, empty, p[1], &pid, e) : 0;
    if (!walker_exe) {
        fflush(NULL);
        pid = fork();
        if (pid < 0) src = store_errf(e, -errno, "fork: %s", strerror(errno));
        if (pid == 0) {
            close(p[0]);
            child_main(image, stored, disk_bytes, empty, p[1]);
        }
    }
    close(p[1]);
    if (src) {
        close(p[0]);
        rmdir(empty);
        return src;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    /* The walker's index cost it at most the budget in memory; its encoding is smaller
     * (compressed), so more than that is a walker gone wrong: refused, never decoded. */
    uint64_t limit = index_budget(disk_bytes) + 3 + WARN_MAX;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = WALL_SECONDS * 1000L - ((now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L);
        struct pollfd pf = {p[0], POLLIN, 0};
        int pr = left > 0 ? poll(&pf, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr < 0) {
            rc = store_errf(e, -errno, "waiting for the disk image parser: %s", strerror(errno));
            break;
        }
        if (pr == 0) {
            rc = store_errf(e, -ETIMEDOUT, "the disk image parser took more than %d s (killed)", WALL_SECONDS);
            break;
        }
        if (len == cap) {
            if (cap >= limit) {
                rc = store_errf(e, -EFBIG, "the disk image parser sent more than %llu MiB for a %llu MiB "
                                "disk (a file index costs at most %llu MiB)", (unsigned long long)(limit >> 20),
                                (unsigned long long)(disk_bytes >> 20),
                                (unsigned long long)(index_budget(disk_bytes) >> 20));
                break;
            }
            cap = cap ? cap * 2 : 1 << 16;
            if (cap > limit) cap = (size_t)limit;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                rc = store_errf(e, -ENOMEM, "out of memory");
                break;
            }
            buf = nb;
        }
        ssize_t n = read(p[0], buf + len, cap - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = store_errf(e, -errno, "reading from the disk image parser: %s", strerror(errno));
            break;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(p[0]);
    kill(pid, SIGKILL);   /* no-op when it already exited */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    rmdir(empty);
    size_t wl = len >= 3 ? (size_t)buf[1] | (size_t)buf[2] << 8 : 0;
    if (!rc && WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
        rc = store_errf(e, -EBADMSG, "the disk image parser died (signal %d): the image is corrupt "
                        "or hostile", WTERMSIG(status));
    else if (!rc && WIFSIGNALED(status))
        rc = store_errf(e, -EBADMSG, "the disk image parser was killed (out of memory or CPU time): the "
                        "image is corrupt or hostile");
    else if (!rc && len > 0 && buf[0] == 'E')
        rc = store_errf(e, -EBADMSG, "not a readable ext4 image: %.*s", (int)(len - 1 > 200 ? 200 : len - 1),
                        (const char *)buf + 1);
    else if (!rc && (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || len < 3 || buf[0] != 'I'))
        rc = store_errf(e, -EBADMSG, "the disk image parser failed (status %d)",
                        WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    else if (!rc && (wl >= WARN_MAX || wl > len - 3))
        rc = store_errf(e, -EBADMSG, "the disk image parser's output: a warning of %zu bytes", wl);
    else if (!rc && store_findex_raw_len(buf + 3 + wl, len - 3 - wl) > limit)
        rc = store_errf(e, -EBADMSG, "the disk image parser's output: an index of more than %llu MiB",
                        (unsigned long long)(limit >> 20));
    if (!rc) {
        store_err de;
        rc = store_findex_decode(buf + 3 + wl, len - 3 - wl, out, &de);
        if (rc) store_errf(e, rc, "the disk image parser's output: %s", de.msg);
    }
    if (!rc && wcap) {
        /* Text for a terminal and a log: whatever the walker says, printable bytes only. */
        size_t k = 0;
        for (size_t i = 0; i < wl && k + 1 < wcap; i++) {
            uint8_t ch = buf[3 + i];
            warn[k++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
        }
        warn[k] = 0;
    }
    free(buf);
    return rc;
}

int snap_index_disk(const char *image, uint64_t disk_bytes, store_findex **out, store_err *e)
{
    return index_child(image, NULL, disk_bytes, out, NULL, 0, e);
}

int snap_index_disk_journal(const char *copy, const char *image, uint64_t disk_bytes, store_findex **out,
                            char *warn, size_t wcap, store_err *e)
{
    return index_child(copy, image, disk_bytes, out, warn, wcap, e);
}
