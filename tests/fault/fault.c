/* LD_PRELOAD shim for the fault and crash-point tests (tests/integration/faults.slow.sh,
 * crashpoints.slow.sh): counts the calls that change files (write family, fsync family,
 * rename, unlink, truncate, link, mkdir, copy_file_range), whoever makes them (Cairn or
 * RocksDB, any thread), and makes the N-th one fail or stops the process there.
 *
 *   CAIRN_FAULT_AT=N        the N-th counted call (1-based); unset or 0: count only
 *   CAIRN_FAULT_MODE=       eio | enospc | short (a write does half its bytes) |
 *                           kill (SIGKILL before the call, as a power cut or kill -9 would)
 *   CAIRN_FAULT_STICKY=1    every counted call from the N-th on fails (a disk that stays full)
 *   CAIRN_FAULT_COUNT=FILE  at exit, write "CALLS INJECTED" to FILE
 *   CAIRN_FAULT_LOG=FILE    append "N OP FILE" for each injected fault (which I/O point it
 *                           was; FILE as given for a path call, else the fd's file)
 *   CAIRN_FAULT_SKIP=TEXT   calls on files whose path contains TEXT are neither counted nor
 *                           failed (faults.slow.sh: "/index", RocksDB's files; see there)
 *   CAIRN_FAULT_ONLY=TEXT   the opposite: only calls on files whose path contains TEXT count
 *                           (faults.slow.sh's index/ pass: RocksDB's own files)
 *   CAIRN_FAULT_RSS=FILE    at exit, write "SELF CHILDREN": the peak RSS in KiB of cairn
 *                           itself and of its largest waited-for child (the confined disk
 *                           walker, e2fsck), as getrusage says (index_rss.sh)
 *
 * Only the process image named cairn counts (not `timeout` around it, not a forked child
 * such as the confined disk walker, whose pid differs). Writes to fds 0-2 are not counted:
 * they are the user's terminal, not the store. In short mode only the write family counts.
 * sync_file_range is left alone: RocksDB calls it only as a probe with no flags (a no-op
 * the kernel does not fail) and asserts that it succeeds. Test tooling, never linked into
 * cairn. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

enum { M_COUNT, M_EIO, M_ENOSPC, M_SHORT, M_KILL };

static int mode = M_COUNT, sticky, active;
static long at;
static pid_t owner;
static atomic_long calls, injected;
static const char *count_file, *log_file, *skip, *only, *rss_file;

__attribute__((constructor)) static void fault_init(void)
{
    const char *m = getenv("CAIRN_FAULT_MODE"), *a = getenv("CAIRN_FAULT_AT");
    extern char *program_invocation_short_name;
    active = !strcmp(program_invocation_short_name, "cairn");
    owner = getpid();
    at = a ? atol(a) : 0;
    sticky = getenv("CAIRN_FAULT_STICKY") && !strcmp(getenv("CAIRN_FAULT_STICKY"), "1");
    count_file = getenv("CAIRN_FAULT_COUNT");
    log_file = getenv("CAIRN_FAULT_LOG");
    skip = getenv("CAIRN_FAULT_SKIP");
    rss_file = getenv("CAIRN_FAULT_RSS");
    if (skip && !*skip) skip = NULL;
    only = getenv("CAIRN_FAULT_ONLY");
    if (only && !*only) only = NULL;
    if (m && !strcmp(m, "eio")) mode = M_EIO;
    else if (m && !strcmp(m, "enospc")) mode = M_ENOSPC;
    else if (m && !strcmp(m, "short")) mode = M_SHORT;
    else if (m && !strcmp(m, "kill")) mode = M_KILL;
}

__attribute__((destructor)) static void fault_fini(void)
{
    if (!active || getpid() != owner) return;
    if (rss_file) {
        struct rusage self, kids;
        FILE *r = fopen(rss_file, "w");
        if (r && getrusage(RUSAGE_SELF, &self) == 0 && getrusage(RUSAGE_CHILDREN, &kids) == 0)
            fprintf(r, "%ld %ld\n", self.ru_maxrss, kids.ru_maxrss);
        if (r) fclose(r);
    }
    if (!count_file) return;
    FILE *f = fopen(count_file, "w");
    if (!f) return;
    fprintf(f, "%ld %ld\n", (long)atomic_load(&calls), (long)atomic_load(&injected));
    fclose(f);
}

#define REAL(name) static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static void note(long n, const char *op, int fd, const char *path)
{
    atomic_fetch_add(&injected, 1);
    if (!log_file) return;
    char line[600], file[512] = "?", link[64];
    if (path) {
        snprintf(file, sizeof file, "%s", path);
    } else if (fd >= 0) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(link, file, sizeof file - 1);
        file[k > 0 ? k : 0] = 0;
    }
    int len = snprintf(line, sizeof line, "%ld %s %s\n", n, op, file);
    REAL(write);
    int lfd = open(log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (lfd < 0) return;
    if (real_write(lfd, line, (size_t)len) < 0) { /* best effort: a test log */ }
    close(lfd);
}

/* Does the call's file (fd, or path relative to dirfd) contain text in its path? */
static int path_has(int fd, int dirfd, const char *path, const char *text)
{
    char buf[4096], link[64];
    ssize_t n = 0;
    if (path && path[0] == '/') return strstr(path, text) != NULL;
    int at = path ? dirfd : fd;
    if (at == AT_FDCWD) {
        if (!getcwd(buf, sizeof buf - 1)) return 0;
        n = (ssize_t)strlen(buf);
    } else {
        snprintf(link, sizeof link, "/proc/self/fd/%d", at);
        n = readlink(link, buf, sizeof buf - 1);
        if (n < 0) return 0;
    }
    buf[n] = 0;
    if (path) snprintf(buf + n, sizeof buf - (size_t)n, "/%s", path);
    return strstr(buf, text) != NULL;
}

/* Is the call one CAIRN_FAULT_SKIP / CAIRN_FAULT_ONLY leaves alone? */
static int skipped(int fd, int dirfd, const char *path)
{
    if (skip && path_has(fd, dirfd, path, skip)) return 1;
    return only && !path_has(fd, dirfd, path, only);
}

/* 0: do the call; -1: fail it with errno set; 1: do a short write. Kill mode never returns.
 * fd: the file written or synced, or dirfd for a path call (path not NULL). */
static int hit_at(const char *op, int is_write, int fd, const char *path)
{
    if (!active || (mode == M_COUNT && !count_file)) return 0;
    if (!path && fd >= 0 && fd <= 2) return 0;
    if (skipped(path ? -1 : fd, path ? fd : -1, path)) return 0;
    if (mode == M_SHORT && !is_write) return 0;
    if (getpid() != owner) return 0;
    long n = atomic_fetch_add(&calls, 1) + 1;
    if (mode == M_COUNT || at <= 0 || (sticky ? n < at : n != at)) return 0;
    note(n, op, fd, path);
    switch (mode) {
    case M_KILL:
        kill(getpid(), SIGKILL);
        for (;;) pause();
    case M_SHORT:
        return 1;
    case M_ENOSPC:
        errno = ENOSPC;
        return -1;
    default:
        errno = EIO;
        return -1;
    }
}

static int hit(const char *op, int is_write, int fd) { return hit_at(op, is_write, fd, NULL); }

ssize_t write(int fd, const void *buf, size_t n)
{
    REAL(write);
    int h = hit("write", 1, fd);
    if (h < 0) return -1;
    return real_write(fd, buf, h && n > 1 ? n / 2 : n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    REAL(pwrite);
    int h = hit("pwrite", 1, fd);
    if (h < 0) return -1;
    return real_pwrite(fd, buf, h && n > 1 ? n / 2 : n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    REAL(pwrite64);
    int h = hit("pwrite", 1, fd);
    if (h < 0) return -1;
    return real_pwrite64(fd, buf, h && n > 1 ? n / 2 : n, off);
}

/* A short vectored write writes only the first buffer (or half of it, if it is alone). */
static int short_iov(const struct iovec *iov, int cnt, struct iovec *one)
{
    *one = iov[0];
    if (cnt == 1 && one->iov_len > 1) one->iov_len /= 2;
    return 1;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    REAL(writev);
    int h = hit("writev", 1, fd);
    if (h < 0) return -1;
    struct iovec one;
    return h && cnt > 0 ? real_writev(fd, &one, short_iov(iov, cnt, &one)) : real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    REAL(pwritev);
    int h = hit("pwritev", 1, fd);
    if (h < 0) return -1;
    struct iovec one;
    return h && cnt > 0 ? real_pwritev(fd, &one, short_iov(iov, cnt, &one), off) : real_pwritev(fd, iov, cnt, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    REAL(pwritev2);
    int h = hit("pwritev", 1, fd);
    if (h < 0) return -1;
    struct iovec one;
    return h && cnt > 0 ? real_pwritev2(fd, &one, short_iov(iov, cnt, &one), off, flags)
                        : real_pwritev2(fd, iov, cnt, off, flags);
}

ssize_t copy_file_range(int in, off64_t *oin, int out, off64_t *oout, size_t n, unsigned flags)
{
    REAL(copy_file_range);
    int h = hit("copy_file_range", 1, out);
    if (h < 0) return -1;
    return real_copy_file_range(in, oin, out, oout, h && n > 1 ? n / 2 : n, flags);
}

#define PLAIN(ret, name, op, fdexpr, params, args) \
    ret name params                                \
    {                                              \
        REAL(name);                                \
        if (hit(op, 0, fdexpr) < 0) return -1;     \
        return real_##name args;                   \
    }
/* Calls on a path (relative to dirfd, AT_FDCWD for the plain ones). */
#define PATHCALL(ret, name, op, direxpr, pathexpr, params, args)  \
    ret name params                                               \
    {                                                             \
        REAL(name);                                               \
        if (hit_at(op, 0, direxpr, pathexpr) < 0) return -1;      \
        return real_##name args;                                  \
    }

PLAIN(int, fsync, "fsync", fd, (int fd), (fd))
PLAIN(int, fdatasync, "fdatasync", fd, (int fd), (fd))
PATHCALL(int, rename, "rename", AT_FDCWD, a, (const char *a, const char *b), (a, b))
PATHCALL(int, renameat, "rename", da, a, (int da, const char *a, int db, const char *b), (da, a, db, b))
PATHCALL(int, renameat2, "rename", da, a, (int da, const char *a, int db, const char *b, unsigned f), (da, a, db, b, f))
PATHCALL(int, unlink, "unlink", AT_FDCWD, p, (const char *p), (p))
PATHCALL(int, unlinkat, "unlink", d, p, (int d, const char *p, int f), (d, p, f))
PATHCALL(int, rmdir, "rmdir", AT_FDCWD, p, (const char *p), (p))
PLAIN(int, ftruncate, "ftruncate", fd, (int fd, off_t n), (fd, n))
PLAIN(int, ftruncate64, "ftruncate", fd, (int fd, off64_t n), (fd, n))
PATHCALL(int, truncate, "truncate", AT_FDCWD, p, (const char *p, off_t n), (p, n))
PLAIN(int, fallocate, "fallocate", fd, (int fd, int m, off_t o, off_t n), (fd, m, o, n))
PLAIN(int, fallocate64, "fallocate", fd, (int fd, int m, off64_t o, off64_t n), (fd, m, o, n))
PLAIN(int, posix_fallocate, "fallocate", fd, (int fd, off_t o, off_t n), (fd, o, n))
PATHCALL(int, link, "link", AT_FDCWD, a, (const char *a, const char *b), (a, b))
PATHCALL(int, linkat, "link", da, a, (int da, const char *a, int db, const char *b, int f), (da, a, db, b, f))
PATHCALL(int, mkdir, "mkdir", AT_FDCWD, p, (const char *p, mode_t m), (p, m))
PATHCALL(int, mkdirat, "mkdir", d, p, (int d, const char *p, mode_t m), (d, p, m))
