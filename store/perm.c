/* The store is private to its owner: packs, manifests and file indexes hold tenant bytes
 * (small files inline, `.env` included), so a folder readable by others would let any
 * local user read around the audit. Cairn creates folders 0700 and files 0600 (and the CLI
 * runs with umask 077, because RocksDB creates its files 0644 & ~umask); this walk finds a
 * store whose modes were loosened afterwards, for fsck. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

#define PERM_REPORT_MAX 20     /* findings named one by one; the rest are counted */

typedef struct {
    store_report_fn report;
    void *arg;
    uint64_t loose;
} perm_walk;

static void note(perm_walk *w, const char *path, mode_t mode)
{
    if (w->loose++ >= PERM_REPORT_MAX) return;
    char text[4400];
    snprintf(text, sizeof text, "%s: mode %04o opens tenant data to %s (chmod %s)", path,
             (unsigned)(mode & 07777), (mode & 0070) ? "its group" : "other users",
             S_ISDIR(mode) ? "700" : "600");
    w->report(w->arg, 1, text);
}

/* depth bounds the recursion: the store's layout is at most three folders deep (index/
 * holds RocksDB's files, cache/ the materialized templates). */
static int walk(perm_walk *w, int dfd, const char *path, int depth, store_err *e)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        int err = errno;
        close(dfd);
        return store_errf(e, -err, "%s: %s", path, strerror(err));
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char sub[4096];
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, de->d_name) >= sizeof sub) continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT) continue;             /* removed meanwhile: a temp file */
            rc = store_errf(e, -errno, "%s: %s", sub, strerror(errno));
            break;
        }
        if (S_ISLNK(st.st_mode)) continue;             /* its mode means nothing */
        /* `policy` is the operator's own rules file, not tenant data: any mode will do. */
        int operator_file = depth == 0 && !strcmp(de->d_name, "policy");
        if ((st.st_mode & 0077) && !operator_file) note(w, sub, st.st_mode);
        if (S_ISDIR(st.st_mode) && depth < 4) {
            int sfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sfd < 0) {
                if (errno == ENOENT) continue;
                rc = store_errf(e, -errno, "%s: %s", sub, strerror(errno));
                break;
            }
            if ((rc = walk(w, sfd, sub, depth + 1, e))) break;
        }
    }
    closedir(d);
    return rc;
}

int store_check_private(store_t *s, store_report_fn report, void *arg, store_err *e)
{
    perm_walk w = {.report = report, .arg = arg};
    struct stat st;
    if (stat(s->dir, &st) < 0) return store_errf(e, -errno, "%s: %s", s->dir, strerror(errno));
    if (st.st_mode & 0077) note(&w, s->dir, st.st_mode);
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return store_errf(e, -errno, "%s: %s", s->dir, strerror(errno));
    int rc = walk(&w, dfd, s->dir, 0, e);
    if (!rc && w.loose > PERM_REPORT_MAX) {
        char text[4400];
        snprintf(text, sizeof text, "%llu files and folders of the store are open to others in all "
                 "(chmod -R go-rwx %s)", (unsigned long long)w.loose, s->dir);
        report(arg, 1, text);
    }
    return rc;
}
