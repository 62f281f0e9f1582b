/* failio: an LD_PRELOAD library for tests that makes chosen reads fail with EIO, so a test
 * can prove that an I/O error in the middle of a listing or an index scan stops the
 * command instead of looking like the end of the data. Test-only: never linked into cairn.
 *
 *   FAILIO_DIR=SUFFIX       readdir of a folder whose path ends with SUFFIX fails (EIO)
 *                           after FAILIO_DIR_AFTER entries (default 2), from the
 *                           FAILIO_DIR_NTH-th opendir of it on (default 1)
 *   FAILIO_PREAD=SUFFIX     pread at offset 0 of a file whose path ends with SUFFIX fails
 *                           (EIO) when it reads less than the whole file: at open RocksDB
 *                           reads a table's footer, then its whole tail (the whole file
 *                           when small); while iterating it reads single blocks, the first
 *                           at 0. So the open succeeds and the scan fails.
 *   FAILIO_WRITE=SUFFIX     write to a file whose path ends with SUFFIX fails (EIO), while
 *                           the file FAILIO_WRITE_WHILE names exists (always when unset):
 *                           a long-running server can be given the fault and have it lifted
 *   FAILIO_LOG=1            one line on stderr per failure injected
 *   FAILIO_SLOW_EXT2FS_MS=N ext2fs_open2 sleeps N ms first (not a failure): a disk whose file
 *                           index takes long, for the tests of the walk beside the ingest
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <ext2fs/ext2fs.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { MAXDIRS = 64 };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct { DIR *d; long left; } marked[MAXDIRS];
static long opens;

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return m && n >= m && !strcmp(s + n - m, suffix);
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? atol(v) : dflt;
}

static void note(const char *what, const char *path)
{
    if (getenv("FAILIO_LOG")) fprintf(stderr, "failio: %s %s: EIO\n", what, path);
}

DIR *opendir(const char *name)
{
    static DIR *(*real)(const char *);
    if (!real) real = (DIR * (*)(const char *)) dlsym(RTLD_NEXT, "opendir");
    DIR *d = real(name);
    const char *want = getenv("FAILIO_DIR");
    if (!d || !want || !ends_with(name, want)) return d;
    pthread_mutex_lock(&mu);
    if (++opens >= env_long("FAILIO_DIR_NTH", 1))
        for (int i = 0; i < MAXDIRS; i++)
            if (!marked[i].d) {
                marked[i].d = d;
                marked[i].left = env_long("FAILIO_DIR_AFTER", 2);
                note("readdir", name);
                break;
            }
    pthread_mutex_unlock(&mu);
    return d;
}

/* 1 if this listing must fail now. */
static int dir_fails(DIR *d)
{
    int fail = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAXDIRS; i++)
        if (marked[i].d == d) {
            if (marked[i].left > 0) marked[i].left--;
            else fail = 1;
            break;
        }
    pthread_mutex_unlock(&mu);
    return fail;
}

struct dirent *readdir(DIR *d)
{
    static struct dirent *(*real)(DIR *);
    if (!real) real = (struct dirent * (*)(DIR *)) dlsym(RTLD_NEXT, "readdir");
    if (dir_fails(d)) {
        errno = EIO;
        return NULL;
    }
    return real(d);
}

struct dirent64 *readdir64(DIR *d)
{
    static struct dirent64 *(*real)(DIR *);
    if (!real) real = (struct dirent64 * (*)(DIR *)) dlsym(RTLD_NEXT, "readdir64");
    if (dir_fails(d)) {
        errno = EIO;
        return NULL;
    }
    return real(d);
}

int closedir(DIR *d)
{
    static int (*real)(DIR *);
    if (!real) real = (int (*)(DIR *))dlsym(RTLD_NEXT, "closedir");
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAXDIRS; i++)
        if (marked[i].d == d) marked[i].d = NULL;
    pthread_mutex_unlock(&mu);
    return real(d);
}

/* The path fd was opened by, into path (4096 bytes); 0, or -1 when it cannot be read. */
static int fd_path(int fd, char *path)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t l = readlink(link, path, 4095);
    if (l <= 0) return -1;
    path[l] = 0;
    return 0;
}

static int pread_fails(int fd, size_t n, off_t off)
{
    const char *want = getenv("FAILIO_PREAD");
    char path[4096];
    if (!want || off != 0 || fd_path(fd, path)) return 0;
    struct stat st;
    if (!ends_with(path, want) || fstat(fd, &st) < 0 || n >= (size_t)st.st_size) return 0;
    note("pread", path);
    return 1;
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (!real) real = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread");
    if (pread_fails(fd, n, off)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, void *, size_t, off_t);
    if (!real) real = (ssize_t(*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread64");
    if (pread_fails(fd, n, off)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, n, off);
}

static int write_fails(int fd)
{
    const char *want = getenv("FAILIO_WRITE"), *flag = getenv("FAILIO_WRITE_WHILE");
    char path[4096];
    if (!want || fd_path(fd, path)) return 0;
    struct stat st;
    if (!ends_with(path, want) || (flag && *flag && stat(flag, &st) < 0)) return 0;
    note("write", path);
    return 1;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real) real = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (write_fails(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, n);
}

errcode_t ext2fs_open2(const char *name, const char *io_options, int flags, int superblock,
                       unsigned int block_size, io_manager manager, ext2_filsys *ret_fs)
{
    static errcode_t (*real)(const char *, const char *, int, int, unsigned int, io_manager, ext2_filsys *);
    if (!real) real = (errcode_t(*)(const char *, const char *, int, int, unsigned int, io_manager,
                                    ext2_filsys *))dlsym(RTLD_NEXT, "ext2fs_open2");
    long ms = env_long("FAILIO_SLOW_EXT2FS_MS", 0);
    struct timespec t = {ms / 1000, ms % 1000 * 1000000L};
    while (ms > 0 && nanosleep(&t, &t) < 0) {}
    return real(name, io_options, flags, superblock, block_size, manager, ret_fs);
}
