/* Materialized templates for rebuild.
 *
 * Restoring a template's disk from chunks costs what a wake costs (decompress and verify
 * every page); a rebuild should cost what its important files cost. So the first rebuild
 * from a template version writes its disk once to DIR/cache/tpl-<snapshot id>.img (the id
 * names the exact bytes: a new `template add` makes a new id), and every rebuild starts
 * from a clone of it: FICLONE where the filesystem shares blocks (XFS, btrfs: instant),
 * else copy_file_range extent by extent (in-kernel, holes kept).
 *
 * The cache is derived data: deleting it is always safe; gc removes the files of template
 * versions that no longer exist. A cache file is trusted only when complete (it appears by
 * rename) and only as long as its size matches the template blob.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "restore/restore.h"

static int cache_path(store_t *s, const store_snapshot *tmpl, char *out, size_t cap)
{
    return snprintf(out, cap, "%s/cache/tpl-%s.img", store_dir(s), tmpl->id) >= (int)cap ? -ENAMETOOLONG : 0;
}

/* Copies src to dst (both open), keeping holes. */
static int clone_or_copy(int src, int dst, uint64_t size)
{
    if (ioctl(dst, FICLONE, src) == 0) return 0;
    if (ftruncate(dst, (off_t)size) < 0) return -errno;
    for (off_t pos = 0; pos < (off_t)size;) {
        off_t ds = lseek(src, pos, SEEK_DATA);
        if (ds < 0) return errno == ENXIO ? 0 : -errno;
        off_t de = lseek(src, ds, SEEK_HOLE);
        if (de < 0) de = (off_t)size;
        for (off_t in = ds, out = ds; in < de;) {
            ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(de - in), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return n < 0 ? -errno : -EIO;
        }
        pos = de;
    }
    return 0;
}

/* Opens the materialized template, making it first if it is missing or of the wrong size. */
static int open_materialized(store_t *s, const store_snapshot *tmpl, const store_blob *disk, store_err *e)
{
    char path[4096], dir[4096];
    if (cache_path(s, tmpl, path, sizeof path)) return store_errf(e, -ENAMETOOLONG, "store path too long");
    snprintf(dir, sizeof dir, "%s/cache", store_dir(s));
    struct stat st;
    int src = open(path, O_RDONLY | O_CLOEXEC);
    if (src >= 0 && (fstat(src, &st) < 0 || (uint64_t)st.st_size != disk->size)) {
        close(src);                   /* not what this template's disk is: make it again */
        src = -1;
    }
    if (src >= 0) return src;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return store_errf(e, -errno, "%s: %s", dir, strerror(errno));
    /* A name of its own, so two makers at once never write one file; restore_blob checks
     * every page against its id, so the cache starts from verified bytes. */
    char mine[4200];
    snprintf(mine, sizeof mine, "%s.%d", path, (int)getpid());
    int rc = restore_blob(s, tmpl, disk, mine, e);
    if (!rc && rename(mine, path) < 0) rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
    if (rc) {
        unlink(mine);
        return rc;
    }
    src = open(path, O_RDONLY | O_CLOEXEC);
    return src >= 0 ? src : store_errf(e, -errno, "%s: %s", path, strerror(errno));
}

int restore_template_prepare(store_t *s, const store_snapshot *tmpl, store_err *e)
{
    const store_blob *disk = store_blob_find(tmpl, "disk");
    if (!disk) return store_errf(e, -ENOENT, "template snapshot %s has no disk", tmpl->id);
    int fd = open_materialized(s, tmpl, disk, e);
    if (fd < 0) return fd;
    close(fd);
    return 0;
}

int restore_template_disk(store_t *s, const store_snapshot *tmpl, int dst, const char *shown, store_err *e)
{
    const store_blob *disk = store_blob_find(tmpl, "disk");
    if (!disk) return store_errf(e, -ENOENT, "template snapshot %s has no disk", tmpl->id);
    int src = open_materialized(s, tmpl, disk, e);
    if (src < 0) return src;
    int rc = clone_or_copy(src, dst, disk->size);
    close(src);
    if (rc) return store_errf(e, rc, "%s: copying the template disk: %s", shown, strerror(-rc));
    return 0;
}
