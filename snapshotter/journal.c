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
 * Steps 3 and 4 run in the confined walker (jdiff.c): this process only copies bytes it
 * does not interpret and decodes the walker's bounded output.
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

#include "snapshotter/jdiff.h"

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
        if (ds < 0 && errno != ENXIO) rc = store_errf(e, -errno, "seeking %s: %s", src, strerror(errno));
        if (ds < 0) break;                       /* ENXIO: only a hole remains */
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
    rc = snap_index_disk_journal(copy, image, disk_bytes, out, warn, wcap, e);
    unlink(copy);
    rmdir(dir);
    return rc;
}
