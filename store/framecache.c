/* Reads of frames (compressed groups) of packs the node's pack cache lacks: one ranged GET
 * each, then a copy in DIR/cache/frames/PACK-OFFSET, so a second read of the same group on
 * this node (a second restore, a wake after a restore) is a file read, not another GET.
 *
 * A copy is a 16-byte header (magic "CFR1", frame length, XXH3-64 of the frame) and the
 * frame. It is written beside and renamed in, not fsynced: a copy torn by a crash fails its
 * check, is removed and read from the bucket again, so a cache file never fails a read.
 * The copies count against the node's cache bound (cache_bytes) with packs/, least recently
 * used dropped first (remote_trim_cache, after each commit and when a handle that added
 * copies closes).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "store/internal.h"

#define FRAMES "cache/frames"
#define HDR 16

static void frame_name(const store_loc *loc, char out[48])
{
    snprintf(out, 48, "%016llx-%016llx", (unsigned long long)loc->pack, (unsigned long long)loc->offset);
}

/* 0 when the copy is there and whole; else the caller reads the bucket. */
static int read_copy(int dfd, const char *name, const store_loc *loc, void *buf)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    uint8_t h[HDR];
    int rc = util_pread_all(fd, h, HDR, 0);
    if (!rc && (memcmp(h, "CFR1", 4) || util_get_le32(h + 4) != loc->clen)) rc = -EBADMSG;
    if (!rc) rc = util_pread_all(fd, buf, loc->clen, HDR);
    if (!rc && XXH3_64bits(buf, loc->clen) != util_get_le64(h + 8)) rc = -EBADMSG;
    /* Its last use, for the LRU trim (relatime would not move atime). */
    if (!rc) (void)futimens(fd, NULL);
    close(fd);
    if (rc == -EBADMSG || rc == -EIO) (void)unlinkat(dfd, name, 0);   /* torn: read again */
    return rc;
}

static int write_copy(int dfd, const char *name, const store_loc *loc, const void *buf)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) r = (uint32_t)getpid();
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.%08x.tmp", name, r);
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    uint8_t h[HDR];
    memcpy(h, "CFR1", 4);
    util_put_le32(h + 4, loc->clen);
    util_put_le64(h + 8, XXH3_64bits(buf, loc->clen));
    int rc = util_write_all(fd, h, HDR);
    if (!rc) rc = util_write_all(fd, buf, loc->clen);
    if (close(fd) < 0 && !rc) rc = -errno;
    if (!rc && renameat(dfd, tmp, dfd, name) < 0) rc = -errno;
    if (rc) (void)unlinkat(dfd, tmp, 0);
    return rc;
}

static int frames_dir(store_t *s)
{
    char *cache = util_path(s->dir, "cache"), *frames = util_path(s->dir, FRAMES);
    int fd = -1;
    if (cache && frames && (mkdir(cache, 0700) == 0 || errno == EEXIST) && (mkdir(frames, 0700) == 0 || errno == EEXIST))
        fd = open(frames, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 ? fd : cache && frames ? -errno : -ENOMEM;
    free(cache);
    free(frames);
    return rc;
}

int remote_read_frame(store_t *s, const store_loc *loc, void *buf, store_err *e)
{
    char name[48];
    frame_name(loc, name);
    int dfd = frames_dir(s);
    if (dfd >= 0 && read_copy(dfd, name, loc, buf) == 0) {
        close(dfd);
        return 0;
    }
    char key[40];
    remote_pack_name(loc->pack, key);
    int rc = s->be->ops->get(s->be, key, loc->offset, buf, loc->clen, e);
    if (rc == -ENOENT) {
        /* Another node's gc deleted it since this node's index learnt of it: from now on
         * lookups find its chunks where they are now (gone.c); the caller looks up again. */
        store_err ge;
        if ((rc = gone_pack_missing(s, loc->pack, &ge))) store_errf(e, rc, "%s", ge.msg);
        else rc = store_errf(e, -ENOENT, "pack %016llx is no longer in %s (a gc deleted it); look the chunks "
                             "up again", (unsigned long long)loc->pack, s->be->where);
    }
    int wr = rc || dfd < 0 ? dfd : write_copy(dfd, name, loc, buf);
    if (!rc && wr == 0) atomic_store(&s->frames_added, 1);
    /* Only a cache: the read goes on; one warning per handle says why the next is a GET. */
    if (!rc && wr < 0 && !atomic_exchange(&s->frames_warned, 1))
        fprintf(stderr, "cairn: warning: %s/%s: cannot keep read frames: %s\n", s->dir, FRAMES, strerror(-wr));
    if (dfd >= 0) close(dfd);
    return rc;
}
