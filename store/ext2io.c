/* An I/O manager for libext2fs that is plain pread/pwrite on an image file.
 *
 * libext2fs 1.47's unix io manager fsyncs the image when it opens it: for the disk walker
 * that is a wait for a tenant's disk file to reach stable storage before reading it
 * (50 ms per snapshot measured), for rebuild a wait for the whole template copy (seconds
 * per GiB). Neither needs it: the walker only reads, and rebuild syncs nothing by design
 * (its caller decides). The page cache is the cache. Shared by snapshotter/ and restore/,
 * which may not call each other. */
#include <sys/types.h>

#include <errno.h>
#include <ext2fs/ext2fs.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

static struct struct_io_manager plain_io;

static errcode_t plain_open(const char *name, int flags, io_channel *out)
{
    io_channel io = calloc(1, sizeof *io);
    int *fd = malloc(sizeof *fd);
    char *nm = strdup(name);
    if (!io || !fd || !nm) {
        free(io), free(fd), free(nm);
        return EXT2_ET_NO_MEMORY;
    }
    *fd = open(name, (flags & IO_FLAG_RW ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (*fd < 0) {
        errcode_t err = (errcode_t)errno;
        free(io), free(fd), free(nm);
        return err;
    }
    io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    io->manager = &plain_io;
    io->name = nm;
    io->block_size = 1024;
    io->refcount = 1;
    io->private_data = fd;
    *out = io;
    return 0;
}

static errcode_t plain_close(io_channel io)
{
    if (--io->refcount > 0) return 0;
    int *fd = io->private_data;
    errcode_t err = close(*fd) < 0 ? (errcode_t)errno : 0;
    free(fd);
    free(io->name);
    free(io);
    return err;
}

static errcode_t plain_set_blksize(io_channel io, int bs)
{
    io->block_size = bs;
    return 0;
}

/* count < 0 means -count bytes, as libext2fs reads the superblock */
static errcode_t plain_rw(io_channel io, off_t off, size_t n, void *buf, int wr)
{
    int fd = *(int *)io->private_data;
    for (size_t done = 0; done < n;) {
        ssize_t k = wr ? pwrite(fd, (char *)buf + done, n - done, off + (off_t)done)
                       : pread(fd, (char *)buf + done, n - done, off + (off_t)done);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return (errcode_t)errno;
        if (k == 0) {
            if (wr) return EXT2_ET_SHORT_WRITE;
            memset((char *)buf + done, 0, n - done);
            return EXT2_ET_SHORT_READ;
        }
        done += (size_t)k;
    }
    return 0;
}

static size_t plain_len(io_channel io, int count)
{
    return count < 0 ? (size_t)-(ssize_t)count : (size_t)count * (size_t)io->block_size;
}

static errcode_t plain_read64(io_channel io, unsigned long long b, int count, void *buf)
{
    return plain_rw(io, (off_t)(b * (unsigned)io->block_size), plain_len(io, count), buf, 0);
}

static errcode_t plain_write64(io_channel io, unsigned long long b, int count, const void *buf)
{
    return plain_rw(io, (off_t)(b * (unsigned)io->block_size), plain_len(io, count), (void *)buf, 1);
}

static errcode_t plain_read(io_channel io, unsigned long b, int count, void *buf)
{
    return plain_read64(io, b, count, buf);
}

static errcode_t plain_write(io_channel io, unsigned long b, int count, const void *buf)
{
    return plain_write64(io, b, count, buf);
}

static errcode_t plain_write_byte(io_channel io, unsigned long off, int n, const void *buf)
{
    return n < 0 ? EXT2_ET_INVALID_ARGUMENT : plain_rw(io, (off_t)off, (size_t)n, (void *)buf, 1);
}

static errcode_t plain_flush(io_channel io)
{
    (void)io;
    return 0;
}

static errcode_t plain_set_option(io_channel io, const char *opt, const char *arg)
{
    (void)io, (void)opt, (void)arg;
    return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager plain_io = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "cairn plain I/O",
    .open = plain_open,
    .close = plain_close,
    .set_blksize = plain_set_blksize,
    .read_blk = plain_read,
    .write_blk = plain_write,
    .flush = plain_flush,
    .write_byte = plain_write_byte,
    .set_option = plain_set_option,
    .read_blk64 = plain_read64,
    .write_blk64 = plain_write64,
};

void *store_ext2_io_manager(void) { return &plain_io; }
