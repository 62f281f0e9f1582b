/* store_get_stats: counters from the index, sizes from the folders. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

int store_get_stats(store_t *s, store_stats *st, store_err *e)
{
    memset(st, 0, sizeof *st);
    int rc = index_get_counter(s, "snapshots", &st->snapshots, e);
    if (!rc) rc = index_get_counter(s, "logical_bytes", &st->logical_bytes, e);
    if (!rc) rc = index_get_counter(s, "chunks", &st->chunks, e);
    if (rc) return rc;
    if (s->be->remote) {
        /* The bucket's packs, not the local cache's. */
        uint64_t *packs = NULL, *sizes = NULL;
        size_t n = 0;
        if ((rc = remote_list_packs(s, NULL, NULL, &packs, &sizes, &n, e))) return rc;
        for (size_t i = 0; i < n; i++) st->stored_bytes += sizes[i];
        st->packs = n;
        free(packs);
        free(sizes);
    }
    char *dir = util_path(s->dir, "packs");
    if (!dir) return store_errf(e, -ENOMEM, "out of memory");
    DIR *d = s->be->remote ? NULL : opendir(dir);
    if (!d && !s->be->remote) rc = -errno;
    struct dirent *de;
    while (d && (rc = util_next_entry(d, &de)) > 0) {
        struct stat sb;
        if (de->d_name[0] == '.') continue;
        if (fstatat(dirfd(d), de->d_name, &sb, 0) < 0) {
            if (errno == ENOENT) continue;     /* deleted by a gc meanwhile */
            rc = -errno;
            break;
        }
        st->stored_bytes += (uint64_t)sb.st_size;
        st->packs++;
    }
    if (d) closedir(d);
    if (rc) store_errf(e, rc, "%s: %s", dir, strerror(-rc));
    free(dir);
    static const char *const sub[] = {"index", "manifests"};
    uint64_t *out[] = {&st->index_bytes, &st->manifest_bytes};
    for (int i = 0; !rc && i < 2; i++) {
        dir = util_path(s->dir, sub[i]);
        rc = dir ? util_dir_bytes(dir, out[i]) : -ENOMEM;
        if (rc) store_errf(e, rc, "%s/%s: %s", s->dir, sub[i], strerror(-rc));
        free(dir);
    }
    return rc;
}
