/* Leftovers of interrupted work removed under the exclusive lock: .tmp packs and
 * manifests, and derived files in DIR/cache/ (restore's materialized templates) whose
 * snapshot is gone. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

/* DIR/cache/ holds derived files named NAME-<snapshot id>.EXT (materialized templates);
 * one whose snapshot is gone is dropped with the temps. */
static int remove_stale_cache(store_t *s, store_err *e)
{
    char *dir = util_path(s->dir, "cache");
    if (!dir) return store_errf(e, -ENOMEM, "out of memory");
    DIR *d = opendir(dir);
    int rc = d || errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    while (d && (rc = util_next_entry(d, &de)) > 0) {
        const char *dash = strrchr(de->d_name, '-'), *dot = strrchr(de->d_name, '.');
        if (!dash || !dot || dot - dash != 21) continue;
        char id[STORE_SNAPID_LEN], name[64];
        memcpy(id, dash + 1, 20);
        id[20] = 0;
        if (store_snapid_valid(id)) continue;
        snprintf(name, sizeof name, "manifests/%s.cmf", id);
        char *m = util_path(s->dir, name);
        struct stat st;
        if (!m) rc = -ENOMEM;
        else if (stat(m, &st) == 0) rc = 1;
        else if (errno != ENOENT) rc = -errno;
        else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) rc = -errno;
        else rc = 1;
        free(m);
        if (rc < 0) break;
    }
    if (d) closedir(d);
    if (rc) store_errf(e, rc, "%s: %s", dir, strerror(-rc));
    free(dir);
    return rc;
}

int store_remove_temps(store_t *s, store_err *e)
{
    if (s->mode != STORE_WRITE) return store_errf(e, -EROFS, "removing temps needs the store opened for writing");
    int rc = remove_stale_cache(s, e);
    static const char *dirs[] = {"packs", "manifests"};
    for (size_t k = 0; !rc && k < 2; k++) {
        char *dir = util_path(s->dir, dirs[k]);
        if (!dir) return store_errf(e, -ENOMEM, "out of memory");
        DIR *d = opendir(dir);
        if (!d) rc = -errno;
        struct dirent *de;
        while (d && (rc = util_next_entry(d, &de)) > 0) {
            size_t len = strlen(de->d_name);
            if (len > 4 && !strcmp(de->d_name + len - 4, ".tmp") &&
                unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
                rc = -errno;
                break;
            }
        }
        if (d) closedir(d);
        if (!rc) rc = util_fsync_dir(dir);
        if (rc) store_errf(e, rc, "%s: %s", dir, strerror(-rc));
        free(dir);
    }
    return rc;
}
