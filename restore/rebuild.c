/* Rebuild: a fresh VM disk = the template's disk + the sandbox's important files.
 *
 * The template's disk is a copy of a materialized template kept in the store's cache
 * (restore/tcache.c: the first rebuild from a template version restores it from chunks,
 * later ones clone or copy it in the kernel), sparse, so it costs its data, not its size. libext2fs then opens that image in place and only the important entries
 * of the snapshot's file index are touched. File data goes in by runs of blocks: one
 * ext2fs_fallocate maps a run (contiguous where free space allows) and one io write per
 * physical extent fills it, so a file costs a few extent-tree updates, not an allocation
 * and a 4 KiB write per block.
 *
 * Trust: the template is the operator's; the file index describes a tenant's image, so
 * every path, target, size and extent is checked before use. An entry that cannot be
 * placed is skipped (counted, reported through st->warn) and the rest goes on; a store
 * read error or a full image fails the whole rebuild, and nothing is left at out_path.
 * Links made by this rebuild are never followed and inodes it made are never removed, so
 * no entry of the index can redirect another one.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <ext2fs/ext2fs.h>

#include "restore/restore.h"
#include "restore/tmpfile.h"
#include "store/toolbox.h"

#define RUN_BYTES (8u << 20)     /* file data is read from the store and written in runs */
#define READ_PIECE (1u << 20)    /* a run's reads go to the store's workers in pieces */
#define MAX_PIECES 1024          /* pending reads; more (tiny extents) are read at once */

typedef struct {
    uint64_t disk_off;
    uint8_t *dst;
    size_t len;
} piece;

typedef struct {
    ext2_ino_t ino;
    const store_fentry *f;
} dirmeta;

typedef struct {
    store_t *s;
    const store_snapshot *snap;
    const store_findex *fi;
    ext2_filsys fs;
    restore_rebuild_stats *st;
    store_err *e;
    uint64_t disk_size;          /* the snapshot's disk blob: every extent must lie inside */
    uint8_t *buf;                /* RUN_BYTES, zero outside the run being filled */
    uint8_t *mine;               /* bitmap of inodes this rebuild made */
    ext2_ino_t *ino_of;          /* per index entry: the inode its data went to, or 0 */
    uint8_t *secret;             /* per index entry: a file one of whose names is secret */
    dirmeta *dirs;               /* directories whose metadata is set last */
    size_t ndirs, capdirs;
    int64_t now_ns;
    piece *pieces;               /* reads that fill the run buffer, done before each flush */
    size_t npieces;
    const char *path;            /* the file they belong to, for messages */
    pthread_mutex_t mu;
    int read_rc;
} rb;

static pthread_once_t err_once = PTHREAD_ONCE_INIT;
static void init_errors(void) { initialize_ext2_error_table(); }

static void skip(rb *r, const char *path, const char *why)
{
    char p[300];
    r->st->skipped++;
    store_path_printable(path, p, sizeof p);
    if (!r->st->first_skip[0]) snprintf(r->st->first_skip, sizeof r->st->first_skip, "%s: %s", p, why);
    if (r->st->warn) r->st->warn(r->st->warn_arg, p, why);
}

static int is_nospace(errcode_t err)
{
    return err == EXT2_ET_BLOCK_ALLOC_FAIL || err == EXT2_ET_INODE_ALLOC_FAIL ||
           err == EXT2_ET_DIR_NO_SPACE || err == ENOSPC;
}

/* A libext2fs error on path as a negative errno and a message. */
static int fail(rb *r, errcode_t err, const char *what, const char *path)
{
    char p[300];
    store_path_printable(path, p, sizeof p);
    if (is_nospace(err))
        return store_errf(r->e, -ENOSPC, "rebuild: %s: no room left in the image while %s (the "
                          "template's disk is too small for the sandbox's important files)", p, what);
    int code = err > 0 && err < 4096 ? -(int)err : -EIO;
    return store_errf(r->e, code, "rebuild: %s: %s: %s", p, what, error_message(err));
}

static void set_mine(rb *r, ext2_ino_t ino) { r->mine[ino / 8] |= (uint8_t)(1u << (ino % 8)); }
static int is_mine(const rb *r, ext2_ino_t ino) { return r->mine[ino / 8] >> (ino % 8) & 1; }

/* ext2fs_link neither checks for duplicates (callers look up first) nor grows a full
 * linear directory: expand once and retry. */
static errcode_t add_link(rb *r, ext2_ino_t dir, const char *name, ext2_ino_t ino, int ftype)
{
    errcode_t err = ext2fs_link(r->fs, dir, name, ino, ftype);
    if (err == EXT2_ET_DIR_NO_SPACE) {
        err = ext2fs_expand_dir(r->fs, dir);
        if (!err) err = ext2fs_link(r->fs, dir, name, ino, ftype);
    }
    return err;
}

/* ---- metadata ---------------------------------------------------------------------- */

/* ext4 keeps seconds as a signed 32-bit value plus two epoch bits in the extra field.
 * e2fsck reads epoch 3 with the sign bit as a mis-encoded pre-1970 date, so the range
 * stops below that. */
static void put_time(__u32 *lo, __u32 *extra, int64_t ns)
{
    int64_t sec = ns / 1000000000, nsec = ns % 1000000000;
    if (nsec < 0) {
        nsec += 1000000000;
        sec--;
    }
    int64_t min = INT32_MIN, max = extra ? (2LL << 32) + INT32_MAX : INT32_MAX;
    if (sec < min) sec = min, nsec = 0;
    if (sec > max) sec = max, nsec = 999999999;
    *lo = (__u32)sec;
    if (extra) *extra = (__u32)(((sec - (int32_t)(__u32)sec) >> 32) & 3) | (__u32)nsec << 2;
}

/* Mode bits, owner and times from f (ctime: now, as any real copy would have). */
static int set_meta(rb *r, ext2_ino_t ino, const store_fentry *f, const char *path)
{
    struct ext2_inode_large in;
    errcode_t err = ext2fs_read_inode_full(r->fs, ino, (struct ext2_inode *)&in, sizeof in);
    if (err) return fail(r, err, "reading its inode", path);
    in.i_mode = (__u16)((in.i_mode & LINUX_S_IFMT) | (f->mode & 07777));
    in.i_uid = (__u16)f->uid;
    ext2fs_set_i_uid_high(in, f->uid >> 16);
    in.i_gid = (__u16)f->gid;
    ext2fs_set_i_gid_high(in, f->gid >> 16);
    int x = EXT2_INODE_SIZE(r->fs->super) > EXT2_GOOD_OLD_INODE_SIZE && in.i_extra_isize >= 16;
    put_time(&in.i_atime, x ? &in.i_atime_extra : NULL, f->atime_ns);
    put_time(&in.i_mtime, x ? &in.i_mtime_extra : NULL, f->mtime_ns);
    put_time(&in.i_ctime, x ? &in.i_ctime_extra : NULL, r->now_ns);
    err = ext2fs_write_inode_full(r->fs, ino, (struct ext2_inode *)&in, sizeof in);
    return err ? fail(r, err, "writing its inode", path) : 0;
}

/* An xattr the image cannot take (no room, a bad name or ACL) is dropped and reported:
 * the file itself is still worth having. */
static void set_xattrs(rb *r, ext2_ino_t ino, const store_fentry *f, const char *path)
{
    if (!f->nxattrs || !f->xattrs) return;
    struct ext2_xattr_handle *h = NULL;
    errcode_t err = ext2fs_xattrs_open(r->fs, ino, &h);
    if (!err) err = ext2fs_xattrs_read(h);
    for (uint32_t i = 0; i < f->nxattrs; i++) {
        const store_xattr *x = &f->xattrs[i];
        char why[400];
        errcode_t xe = err;
        /* system.data is where ext4 keeps inline file data, not an attribute */
        if (!xe && (!x->name || !x->name[0] || !strcmp(x->name, "system.data") ||
                    (x->len && !x->value)))
            xe = EXT2_ET_EA_BAD_NAME_LEN;
        if (!xe) xe = ext2fs_xattr_set(h, x->name, x->value, x->len);
        if (xe) {
            r->st->xattrs_dropped++;
            char n[200];
            snprintf(why, sizeof why, "xattr %s not kept: %s", store_path_printable(x->name ? x->name : "", n, sizeof n),
                     error_message(xe));
            if (r->st->warn) {
                char p[300];
                r->st->warn(r->st->warn_arg, store_path_printable(path, p, sizeof p), why);
            }
        }
    }
    if (h) ext2fs_xattrs_close(&h);
}

/* ---- names ------------------------------------------------------------------------- */

/* "/a/b": absolute, no empty, "." or ".." component, none over 255 bytes, no NUL inside. */
static int path_ok(const store_fentry *f)
{
    return f->path && strlen(f->path) == f->path_len && f->path_len >= 2 &&
           !store_path_problem(f->path);
}

static int count_entry(ext2_ino_t dir, int entry, struct ext2_dir_entry *d, int off, int bs,
                       char *buf, void *arg)
{
    (void)dir, (void)entry, (void)off, (void)bs, (void)buf;
    int n = ext2fs_dirent_name_len(d);
    if (d->inode && !(n == 1 && d->name[0] == '.') && !(n == 2 && d->name[0] == '.' && d->name[1] == '.')) {
        *(int *)arg = 1;
        return DIRENT_ABORT;
    }
    return 0;
}

/* Removes the template's entry name (inode ino) from dir, freeing the inode when its last
 * link goes. Returns 1 (and removes nothing) for a directory that is not empty. */
static int remove_entry(rb *r, ext2_ino_t dir, const char *name, ext2_ino_t ino, const char *path)
{
    struct ext2_inode_large in;
    errcode_t err = ext2fs_read_inode_full(r->fs, ino, (struct ext2_inode *)&in, sizeof in);
    if (err) return fail(r, err, "reading the template's inode there", path);
    int isdir = LINUX_S_ISDIR(in.i_mode);
    if (isdir) {
        int used = 0;
        err = ext2fs_dir_iterate2(r->fs, ino, 0, NULL, count_entry, &used);
        if (err) return fail(r, err, "reading the template's directory there", path);
        if (used) return 1;
    }
    err = ext2fs_unlink(r->fs, dir, name, ino, 0);
    if (err) return fail(r, err, "removing the template's entry", path);
    if (isdir || in.i_links_count <= 1) {
        in.i_links_count = 0;
        in.i_dtime = (__u32)(r->now_ns / 1000000000);
        err = ext2fs_write_inode_full(r->fs, ino, (struct ext2_inode *)&in, sizeof in);
        if (!err) err = ext2fs_free_ext_attr(r->fs, ino, &in);
        if (!err && ext2fs_inode_has_valid_blocks2(r->fs, (struct ext2_inode *)&in))
            err = ext2fs_punch(r->fs, ino, (struct ext2_inode *)&in, NULL, 0, ~0ULL);
        if (!err) {
            ext2fs_inode_alloc_stats2(r->fs, ino, -1, isdir);
            err = ext2fs_write_inode_full(r->fs, ino, (struct ext2_inode *)&in, sizeof in);
        }
        if (!err && isdir) {   /* its ".." was a link to dir */
            struct ext2_inode d;
            err = ext2fs_read_inode(r->fs, dir, &d);
            if (!err && d.i_links_count > 1) {
                d.i_links_count--;
                err = ext2fs_write_inode(r->fs, dir, &d);
            }
        }
    } else {
        in.i_links_count--;
        err = ext2fs_write_inode_full(r->fs, ino, (struct ext2_inode *)&in, sizeof in);
    }
    if (err) return fail(r, err, "freeing the template's inode", path);
    r->st->replaced++;
    return 0;
}

/* Makes name in dir free for a new entry. Returns 0 (free), 1 (want_dir and a directory
 * is there: *ino set, merge into it), 2 (skipped) or < 0. */
static int free_slot(rb *r, ext2_ino_t dir, const char *name, int want_dir, const char *path,
                     ext2_ino_t *ino)
{
    errcode_t err = ext2fs_lookup(r->fs, dir, name, (int)strlen(name), NULL, ino);
    if (err == EXT2_ET_FILE_NOT_FOUND) return 0;
    if (err) return fail(r, err, "looking it up", path);
    struct ext2_inode in;
    err = ext2fs_read_inode(r->fs, *ino, &in);
    if (err) return fail(r, err, "reading the template's inode there", path);
    if (want_dir && LINUX_S_ISDIR(in.i_mode)) return 1;
    if (is_mine(r, *ino)) {
        skip(r, path, "another entry of the index is already there");
        return 2;
    }
    int rc = remove_entry(r, dir, name, *ino, path);
    if (rc == 1) skip(r, path, "the template has a non-empty directory there");
    return rc == 1 ? 2 : rc;
}

static int new_dir(rb *r, ext2_ino_t parent, const char *name, const char *path, ext2_ino_t *out)
{
    ext2_ino_t ino;
    errcode_t err = ext2fs_new_inode(r->fs, parent, LINUX_S_IFDIR | 0755, NULL, &ino);
    /* unnamed, then linked here: ext2fs_mkdir with a name allocates before it can fail */
    if (!err) err = ext2fs_mkdir(r->fs, parent, ino, NULL);
    if (!err) {
        set_mine(r, ino);
        err = add_link(r, parent, name, ino, EXT2_FT_DIR);
    }
    if (err) return fail(r, err, "making the directory", path);
    r->st->dirs++;
    *out = ino;
    return 0;
}

static int note_dir(rb *r, ext2_ino_t ino, const store_fentry *f)
{
    if (r->ndirs == r->capdirs) {
        size_t cap = r->capdirs ? r->capdirs * 2 : 64;
        dirmeta *d = realloc(r->dirs, cap * sizeof *d);
        if (!d) return store_errf(r->e, -ENOMEM, "out of memory");
        r->dirs = d;
        r->capdirs = cap;
    }
    r->dirs[r->ndirs++] = (dirmeta){ino, f};
    return 0;
}

/* Finds or makes the directories above f->path. *parent is the last one; *leaf points
 * into buf (a copy of the path). Returns 0, 2 (skipped) or < 0. */
static int make_parents(rb *r, const store_fentry *f, char *buf, ext2_ino_t *parent,
                        const char **leaf)
{
    memcpy(buf, f->path, f->path_len + 1);
    ext2_ino_t cur = EXT2_ROOT_INO;
    char *c = buf + 1;
    for (char *slash; (slash = strchr(c, '/'));) {
        *slash = 0;
        ext2_ino_t ino;
        errcode_t err = ext2fs_lookup(r->fs, cur, c, (int)strlen(c), NULL, &ino);
        struct ext2_inode in;
        if (!err) err = ext2fs_read_inode(r->fs, ino, &in);
        if (!err && LINUX_S_ISLNK(in.i_mode) && !is_mine(r, ino)) {
            /* The template's own link (e.g. /bin -> usr/bin): where the VM would go. */
            ext2_ino_t to;
            if (!ext2fs_follow_link(r->fs, EXT2_ROOT_INO, cur, ino, &to) &&
                !ext2fs_read_inode(r->fs, to, &in) && LINUX_S_ISDIR(in.i_mode)) {
                cur = to;
            } else {
                char why[400], p[300];
                snprintf(why, sizeof why, "%s is a symlink of the template that leads to no "
                         "directory", store_path_printable(buf, p, sizeof p));
                skip(r, f->path, why);
                return 2;
            }
        } else if (!err && LINUX_S_ISDIR(in.i_mode)) {
            cur = ino;
        } else if (err && err != EXT2_ET_FILE_NOT_FOUND) {
            return fail(r, err, "looking up its parent directories", f->path);
        } else {
            if (!err) {   /* a non-directory where the snapshot had a directory */
                int rc = free_slot(r, cur, c, 1, buf, &ino);
                if (rc) return rc;   /* 2: skipped, reported under the parent's path */
            }
            ext2_ino_t made;
            int rc = new_dir(r, cur, c, buf, &made);
            if (rc) return rc;
            /* The index's own record of this directory, when it has one, gives its metadata. */
            const store_fentry *d = store_findex_get(r->fi, buf);
            if (d && d->type == STORE_FT_DIR && (rc = note_dir(r, made, d))) return rc;
            cur = made;
        }
        *slash = '/';
        c = slash + 1;
    }
    *parent = cur;
    *leaf = c;
    return 0;
}

/* ---- file data --------------------------------------------------------------------- */

/* Why f's data cannot be trusted, or NULL. Extents must be ascending, disjoint and inside
 * the snapshot's disk; the size must fit an ext4 file of the image's block size. */
static const char *check_data(const rb *r, const store_fentry *f)
{
    uint64_t bs = r->fs->blocksize;
    if (f->size / bs >= (1ULL << 32) - 1) return "larger than an ext4 file of this image can be";
    if (f->inline_data) return NULL;
    if (f->next && !f->ext) return "its extent list is missing";
    uint64_t end = 0;
    for (uint32_t i = 0; i < f->next; i++) {
        const store_extent *x = &f->ext[i];
        if (!x->len || x->file_off < end || x->file_off + x->len < x->file_off)
            return "its extents overlap or are out of order";
        if (x->disk_off > r->disk_size || x->len > r->disk_size - x->disk_off)
            return "an extent points outside the snapshot's disk";
        end = x->file_off + x->len;
    }
    return NULL;
}

/* The physical run behind logical block lblk: *pblk and up to max blocks in *n. */
static errcode_t map_run(rb *r, ext2_ino_t ino, struct ext2_inode_large *in,
                         ext2_extent_handle_t h, blk64_t lblk, blk64_t max, blk64_t *pblk,
                         blk64_t *n)
{
    errcode_t err;
    if (h) {
        struct ext2fs_extent ex;
        err = ext2fs_extent_goto(h, lblk);
        if (!err) err = ext2fs_extent_get(h, EXT2_EXTENT_CURRENT, &ex);
        if (err) return err;
        if (ex.e_lblk > lblk || ex.e_lblk + ex.e_len <= lblk || !ex.e_pblk) return EXT2_ET_EXTENT_NOT_FOUND;
        *pblk = ex.e_pblk + (lblk - ex.e_lblk);
        *n = ex.e_lblk + ex.e_len - lblk;
        if (*n > max) *n = max;
        return 0;
    }
    /* block-mapped (ext2/ext3 template): one lookup per block */
    err = ext2fs_bmap2(r->fs, ino, (struct ext2_inode *)in, NULL, 0, lblk, NULL, pblk);
    if (!err && !*pblk) err = EXT2_ET_BLOCK_ALLOC_FAIL;
    for (*n = 1; !err && *n < max; ++*n) {
        blk64_t p;
        if (ext2fs_bmap2(r->fs, ino, (struct ext2_inode *)in, NULL, 0, lblk + *n, NULL, &p) ||
            p != *pblk + *n)
            break;
    }
    return err;
}

static void read_piece(void *arg, size_t i)
{
    rb *r = arg;
    if (r->read_rc) return;
    store_err e2;
    const piece *p = &r->pieces[i];
    int rc = store_blob_read(r->s, r->snap, "disk", p->disk_off, p->dst, p->len, &e2);
    if (rc) {
        pthread_mutex_lock(&r->mu);
        if (!r->read_rc) {
            char path[300];
            r->read_rc = store_errf(r->e, rc, "rebuild: %s: %s", store_path_printable(r->path, path, sizeof path), e2.msg);
        }
        pthread_mutex_unlock(&r->mu);
    }
}

/* Reads the run's pieces from the snapshot's disk, on the store's workers. */
static int read_pieces(rb *r)
{
    if (r->npieces == 1) read_piece(r, 0);
    else store_parallel(r->s, r->npieces, read_piece, r);
    r->npieces = 0;
    return r->read_rc;
}

/* Maps blocks [b0, b0 + nb) of the file and writes the run buffer into them. */
static int flush_run(rb *r, ext2_ino_t ino, struct ext2_inode_large *in, blk64_t b0, blk64_t nb,
                     const char *path)
{
    uint64_t bs = r->fs->blocksize;
    int rc = read_pieces(r);
    if (rc) return rc;
    errcode_t err = ext2fs_fallocate(r->fs, EXT2_FALLOCATE_FORCE_INIT | EXT2_FALLOCATE_INIT_BEYOND_EOF,
                                     ino, (struct ext2_inode *)in, ~0ULL, b0, nb);
    ext2_extent_handle_t h = NULL;
    if (!err && (in->i_flags & EXT4_EXTENTS_FL))
        err = ext2fs_extent_open2(r->fs, ino, (struct ext2_inode *)in, &h);
    for (blk64_t b = 0; !err && b < nb;) {
        blk64_t pblk = 0, n = 0;
        err = map_run(r, ino, in, h, b0 + b, nb - b, &pblk, &n);
        if (!err) err = io_channel_write_blk64(r->fs->io, pblk, (int)n, r->buf + b * bs);
        b += n;
    }
    if (h) ext2fs_extent_free(h);
    memset(r->buf, 0, nb * bs);
    return err ? fail(r, err, "writing its data", path) : 0;
}

/* Writes f's bytes into inode ino: inline data or each extent, read from the snapshot's
 * disk; holes stay holes (unmapped). Partial blocks are zero-filled. */
static int write_data(rb *r, const store_fentry *f, ext2_ino_t ino, struct ext2_inode_large *in,
                      const char *path)
{
    r->path = path;
    r->npieces = 0;
    const uint64_t bs = r->fs->blocksize, capb = RUN_BYTES / bs;
    uint64_t b0 = 0, nb = 0;     /* the run being filled: blocks [b0, b0 + nb) */
    size_t nx = f->inline_data ? 1 : f->next;
    int rc = 0;
    for (size_t x = 0; !rc && x < nx; x++) {
        uint64_t fo = f->inline_data ? 0 : f->ext[x].file_off;
        uint64_t len = f->inline_data ? f->inline_len : f->ext[x].len;
        if (fo >= f->size) continue;          /* blocks past EOF: never visible */
        if (len > f->size - fo) len = f->size - fo;
        for (uint64_t done = 0; !rc && done < len;) {
            uint64_t pos = fo + done, b = pos / bs;
            if (nb && (b > b0 + nb || b >= b0 + capb)) {
                rc = flush_run(r, ino, in, b0, nb, path);
                nb = 0;
            }
            if (!nb) b0 = b;
            if (rc) break;
            uint64_t n = (b0 + capb) * bs - pos;
            if (n > len - done) n = len - done;
            uint8_t *dst = r->buf + (pos - b0 * bs);
            if (f->inline_data) memcpy(dst, f->inline_data + done, n);
            for (uint64_t k = 0; !rc && !f->inline_data && k < n; k += READ_PIECE) {
                r->pieces[r->npieces++] = (piece){f->ext[x].disk_off + done + k, dst + k,
                                                  n - k < READ_PIECE ? n - k : READ_PIECE};
                if (r->npieces == MAX_PIECES) rc = read_pieces(r);
            }
            uint64_t last = (pos + n + bs - 1) / bs - b0;
            if (last > nb) nb = last;
            r->st->bytes += n;
            done += n;
        }
    }
    if (!rc && nb) rc = flush_run(r, ino, in, b0, nb, path);
    if (nb && rc) memset(r->buf, 0, RUN_BYTES);
    return rc;
}

/* ---- entries ----------------------------------------------------------------------- */

/* A new regular file name in parent with src's data, mode, owner, times and xattrs. */
static int new_file(rb *r, const store_fentry *src, ext2_ino_t parent, const char *name,
                    const char *path, ext2_ino_t *out)
{
    ext2_filsys fs = r->fs;
    ext2_ino_t ino;
    struct ext2_inode_large in;
    errcode_t err = ext2fs_new_inode(fs, parent, LINUX_S_IFREG | 0644, NULL, &ino);
    if (!err) err = add_link(r, parent, name, ino, EXT2_FT_REG_FILE);
    if (err) return fail(r, err, "making the file", path);
    ext2fs_inode_alloc_stats2(fs, ino, +1, 0);
    set_mine(r, ino);
    memset(&in, 0, sizeof in);
    in.i_mode = (__u16)(LINUX_S_IFREG | (src->mode & 07777));
    in.i_links_count = 1;
    err = ext2fs_inode_size_set(fs, (struct ext2_inode *)&in, src->size);
    if (!err && ext2fs_has_feature_extents(fs->super)) {
        ext2_extent_handle_t h;
        in.i_flags |= EXT4_EXTENTS_FL;
        err = ext2fs_extent_open2(fs, ino, (struct ext2_inode *)&in, &h);   /* empty tree */
        if (!err) ext2fs_extent_free(h);
    }
    if (!err) err = ext2fs_write_new_inode(fs, ino, (struct ext2_inode *)&in);
    /* read back whole: write_new_inode filled the large inode's extra fields on disk */
    if (!err) err = ext2fs_read_inode_full(fs, ino, (struct ext2_inode *)&in, sizeof in);
    if (err) return fail(r, err, "making its inode", path);
    int rc = write_data(r, src, ino, &in, path);
    if (rc) return rc;
    err = ext2fs_write_inode_full(fs, ino, (struct ext2_inode *)&in, sizeof in);
    if (err) return fail(r, err, "writing its inode", path);
    set_xattrs(r, ino, src, path);
    rc = set_meta(r, ino, src, path);
    if (!rc) {
        r->st->files++;
        *out = ino;
    }
    return rc;
}

static int new_symlink(rb *r, const store_fentry *f, ext2_ino_t parent, const char *name)
{
    size_t tl = f->target ? strlen(f->target) : 0;
    if (!tl || tl >= r->fs->blocksize || tl >= 4096) {
        skip(r, f->path, "its target is empty or too long for a symlink");
        return 0;
    }
    char *target = strdup(f->target);    /* ext2fs_symlink takes a char * */
    if (!target) return store_errf(r->e, -ENOMEM, "out of memory");
    ext2_ino_t ino;
    errcode_t err = ext2fs_new_inode(r->fs, parent, LINUX_S_IFLNK | 0777, NULL, &ino);
    if (!err) err = ext2fs_symlink(r->fs, parent, ino, NULL, target);
    free(target);
    if (!err) {
        set_mine(r, ino);
        err = add_link(r, parent, name, ino, EXT2_FT_SYMLINK);
    }
    if (err) return fail(r, err, "making the symlink", f->path);
    set_xattrs(r, ino, f, f->path);
    int rc = set_meta(r, ino, f, f->path);
    if (!rc) r->st->symlinks++;
    return rc;
}

static int new_fifo(rb *r, const store_fentry *f, ext2_ino_t parent, const char *name)
{
    ext2_ino_t ino;
    struct ext2_inode in;
    errcode_t err = ext2fs_new_inode(r->fs, parent, LINUX_S_IFIFO | 0644, NULL, &ino);
    if (!err) err = add_link(r, parent, name, ino, EXT2_FT_FIFO);
    if (err) return fail(r, err, "making the FIFO", f->path);
    ext2fs_inode_alloc_stats2(r->fs, ino, +1, 0);
    set_mine(r, ino);
    memset(&in, 0, sizeof in);
    in.i_mode = LINUX_S_IFIFO;
    in.i_links_count = 1;
    err = ext2fs_write_new_inode(r->fs, ino, &in);
    if (err) return fail(r, err, "making its inode", f->path);
    set_xattrs(r, ino, f, f->path);
    return set_meta(r, ino, f, f->path);
}

static int add_hardlink(rb *r, ext2_ino_t parent, const char *name, ext2_ino_t ino, const char *path)
{
    struct ext2_inode in;
    errcode_t err = add_link(r, parent, name, ino, EXT2_FT_REG_FILE);
    if (!err) err = ext2fs_read_inode(r->fs, ino, &in);
    if (!err && in.i_links_count >= 65000) err = EXT2_ET_INVALID_ARGUMENT;
    if (!err) {
        in.i_links_count++;
        err = ext2fs_write_inode(r->fs, ino, &in);
    }
    if (err) return fail(r, err, "making the hard link", path);
    r->st->hardlinks++;
    return 0;
}

/* Places one important entry (hard links come in a second pass, once their targets are
 * written). Returns 0 when done or skipped, < 0 on a fatal error. */
static int place(rb *r, size_t i, char *buf)
{
    const store_fentry *f = &r->fi->e[i];
    if (f->path && !strcmp(f->path, "/")) return 0;     /* the template's root stays */
    if (!path_ok(f)) {
        skip(r, f->path ? f->path : "", "its path is not a clean absolute path");
        return 0;
    }
    switch (f->type) {
    case STORE_FT_FILE: case STORE_FT_DIR: case STORE_FT_SYMLINK: case STORE_FT_FIFO:
    case STORE_FT_HARDLINK:
        break;
    case STORE_FT_CHR: case STORE_FT_BLK:
        skip(r, f->path, "device nodes are not copied into a fresh VM");
        return 0;
    default:
        skip(r, f->path, "sockets and unknown types are not copied");
        return 0;
    }
    const store_fentry *src = f;
    if (f->type == STORE_FT_HARDLINK) {
        src = f->target ? store_findex_get(r->fi, f->target) : NULL;
        if (!src || src->type != STORE_FT_FILE) {
            skip(r, f->path, "a hard link whose target is not a file of the index");
            return 0;
        }
    }
    /* The same bytes under a secret name are a secret, whichever name the walker met first. */
    if (src->type == STORE_FT_FILE && (src->cls == STORE_CLASS_SECRET || r->secret[src - r->fi->e])) {
        skip(r, f->path, "a hard link of a secret file");
        return 0;
    }
    const char *why = src->type == STORE_FT_FILE ? check_data(r, src) : NULL;
    if (why) {
        skip(r, f->path, why);
        return 0;
    }
    ext2_ino_t parent = 0, ino = 0;
    const char *leaf = NULL;
    int rc = make_parents(r, f, buf, &parent, &leaf);
    if (rc) return rc < 0 ? rc : 0;
    rc = free_slot(r, parent, leaf, f->type == STORE_FT_DIR, f->path, &ino);
    if (rc < 0) return rc;
    if (rc == 2) return 0;
    switch (f->type) {
    case STORE_FT_DIR:
        if (rc == 0 && (rc = new_dir(r, parent, leaf, f->path, &ino))) return rc;
        if (rc == 1) r->st->dirs++;    /* merged into the template's directory */
        return note_dir(r, ino, f);
    case STORE_FT_SYMLINK:
        return new_symlink(r, f, parent, leaf);
    case STORE_FT_FIFO:
        return new_fifo(r, f, parent, leaf);
    case STORE_FT_HARDLINK: {
        ext2_ino_t *t = &r->ino_of[src - r->fi->e];
        if (*t) return add_hardlink(r, parent, leaf, *t, f->path);
        /* its first name was not copied: this name carries the data */
        return new_file(r, src, parent, leaf, f->path, t);
    }
    default:
        return new_file(r, f, parent, leaf, f->path, &r->ino_of[i]);
    }
}

/* ---- the whole rebuild ------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int fill_image(rb *r, const char *image)
{
    errcode_t err = ext2fs_open2(image, NULL, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0,
                                 (io_manager)store_ext2_io_manager(), &r->fs);
    if (err) {
        r->fs = NULL;
        return store_errf(r->e, -EIO, "rebuild: the template's disk is not an ext4 image "
                          "libext2fs can open: %s", error_message(err));
    }
    ext2_filsys fs = r->fs;
    if (ext2fs_has_feature_journal_needs_recovery(fs->super) || (fs->super->s_state & EXT2_ERROR_FS))
        return store_errf(r->e, -EUCLEAN, "rebuild: the template's disk needs e2fsck first "
                          "(unrecovered journal or errors recorded)");
    err = ext2fs_read_bitmaps(fs);
    if (err) return store_errf(r->e, -EIO, "rebuild: reading the template's bitmaps: %s",
                               error_message(err));
    r->mine = calloc(fs->super->s_inodes_count / 8 + 1, 1);
    r->ino_of = calloc(r->fi->n ? r->fi->n : 1, sizeof *r->ino_of);
    r->secret = calloc(r->fi->n ? r->fi->n : 1, 1);
    r->buf = calloc(1, RUN_BYTES);
    r->pieces = malloc(MAX_PIECES * sizeof *r->pieces);
    if (!r->pieces) return store_errf(r->e, -ENOMEM, "out of memory");
    if (!r->mine || !r->ino_of || !r->secret || !r->buf)
        return store_errf(r->e, -ENOMEM, "out of memory");
    for (size_t i = 0; i < r->fi->n; i++) {
        const store_fentry *f = &r->fi->e[i], *t;
        if (f->type == STORE_FT_HARDLINK && f->cls == STORE_CLASS_SECRET && f->target &&
            (t = store_findex_get(r->fi, f->target)))
            r->secret[t - r->fi->e] = 1;
    }
    char *buf = malloc(65536);
    if (!buf) return store_errf(r->e, -ENOMEM, "out of memory");
    int rc = 0;
    for (int pass = 0; !rc && pass < 2; pass++)
        for (size_t i = 0; !rc && i < r->fi->n; i++) {
            const store_fentry *f = &r->fi->e[i];
            if (!store_class_important((store_class)f->cls) || (f->type == STORE_FT_HARDLINK) != pass)
                continue;
            if (f->path_len >= 65536) skip(r, "(a path over 64 KiB)", "too long");
            else rc = place(r, i, buf);
        }
    free(buf);
    /* Directories last: their times as the snapshot had them, after every child went in. */
    for (size_t i = 0; !rc && i < r->ndirs; i++) {
        set_xattrs(r, r->dirs[i].ino, r->dirs[i].f, r->dirs[i].f->path);
        rc = set_meta(r, r->dirs[i].ino, r->dirs[i].f, r->dirs[i].f->path);
    }
    if (rc) return rc;
    /* Writes the bitmaps, group descriptors and superblock. No fsync (plain_io), as for a
     * wake: the image goes to a VM at once; a caller that needs it durable syncs it. */
    r->fs = NULL;
    err = ext2fs_close_free(&fs);
    if (err)
        return store_errf(r->e, is_nospace(err) ? -ENOSPC : -EIO, "rebuild: writing the image: %s",
                          error_message(err));
    return 0;
}

int restore_rebuild(store_t *s, const store_snapshot *tmpl, const store_snapshot *snap,
                    const char *out_path, restore_rebuild_stats *st, store_err *e)
{
    pthread_once(&err_once, init_errors);
    restore_rebuild_stats dummy;
    if (!st) {
        memset(&dummy, 0, sizeof dummy);
        st = &dummy;
    }
    void (*warn)(void *, const char *, const char *) = st->warn;
    void *warn_arg = st->warn_arg;
    memset(st, 0, sizeof *st);
    st->warn = warn;
    st->warn_arg = warn_arg;
    int64_t t0 = now_ns();

    const store_blob *tdisk = store_blob_find(tmpl, "disk"), *sdisk = store_blob_find(snap, "disk");
    if (!tdisk) return store_errf(e, -ENOENT, "rebuild: template snapshot %s has no disk", tmpl->id);
    if (!sdisk) return store_errf(e, -ENOENT, "rebuild: snapshot %s has no disk", snap->id);

    store_findex *loaded = NULL;
    const store_findex *fi = snap->files;
    if (!fi) {
        int rc = store_findex_load(s, snap, &loaded, e);
        if (rc) return rc;
        fi = loaded;
    }
    if (!store_findex_sorted(fi)) {
        store_findex_free(loaded);
        return store_errf(e, -EUCLEAN, "rebuild: the file index of snapshot %s is not sorted "
                          "by path (damaged)", snap->id);
    }

    /* The image is made under a temp name beside out (tmpfile.h); libext2fs opens it by
     * name, so it gets the descriptor's /proc name: whatever is renamed over the temp name
     * meanwhile, the bytes go into the file made here. */
    restore_tmpfile t;
    int rc = restore_tmp_open(&t, out_path, e);
    if (rc) {
        store_findex_free(loaded);
        return rc;
    }
    char shown[4500], image[64];
    snprintf(shown, sizeof shown, "rebuild: %s/%s", t.dir, t.tmp);
    snprintf(image, sizeof image, "/proc/self/fd/%d", t.fd);
    rb r = {.s = s, .snap = snap, .fi = fi, .st = st, .e = e, .disk_size = sdisk->size,
            .now_ns = t0};
    pthread_mutex_init(&r.mu, NULL);
    (void)tdisk;
    rc = restore_template_disk(s, tmpl, t.fd, shown, e);   /* a materialized copy: tcache.c */
    if (!rc) rc = fill_image(&r, image);
    if (r.fs) ext2fs_free(r.fs);     /* an error: drop what libext2fs still holds */
    if (!rc) rc = restore_tmp_commit(&t, e);
    else restore_tmp_abort(&t);
    free(r.buf);
    free(r.mine);
    free(r.ino_of);
    free(r.secret);
    free(r.pieces);
    pthread_mutex_destroy(&r.mu);
    free(r.dirs);
    store_findex_free(loaded);
    st->seconds = (double)(now_ns() - t0) / 1e9;
    return rc;
}

json_t *restore_rebuild_json(const char *sandbox, const store_snapshot *snap, const store_snapshot *tmpl,
                             const char *out, const restore_rebuild_stats *st, double seconds)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "sandbox", sandbox,
                     "snapshot", snap->id, "template", store_template_name(tmpl->sandbox), "out", out, "files",
                     (json_int_t)st->files, "dirs", (json_int_t)st->dirs, "symlinks", (json_int_t)st->symlinks,
                     "hardlinks", (json_int_t)st->hardlinks, "bytes", (json_int_t)st->bytes, "replaced",
                     (json_int_t)st->replaced, "skipped", (json_int_t)st->skipped, "xattrs_dropped",
                     (json_int_t)st->xattrs_dropped, "seconds", seconds);
}
