/* Reading every pack's footer (fsck and the index rebuild): the list of packs as their
 * files say, with what each holds. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

int pack_parse_name(const char *name, uint64_t *n)
{
    if (strlen(name) != 21 || strcmp(name + 16, ".pack")) return -1;
    char *end;
    *n = strtoull(name, &end, 16);
    return end == name + 16 ? 0 : -1;
}

static int cmp_pack(const void *a, const void *b)
{
    uint64_t x = ((const pack_info *)a)->pack, y = ((const pack_info *)b)->pack;
    return x < y ? -1 : x > y;
}

/* Reads every pack footer; damaged packs are reported and left out of the list. */
/* The bucket's packs and their footers (a store on S3). */
static int scan_remote(store_t *s, pack_list *pl, store_report_fn report, void *arg)
{
    uint64_t *packs = NULL, *sizes = NULL;
    size_t n = 0;
    store_err e;
    int rc = remote_list_packs(s, NULL, NULL, &packs, &sizes, &n, &e);
    if (rc) {
        if (report) report(arg, 1, e.msg);
        return rc;
    }
    store_footer *v = calloc(n ? n : 1, sizeof *v);
    pack_info *pv = calloc(n ? n : 1, sizeof *pv);
    if (!v || !pv) rc = -ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) v[i] = (store_footer){.pack = packs[i], .size = sizes[i]};
    if (!rc) store_pack_footers(s, v, n);
    size_t k = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        if (v[i].rc) {
            if (report) report(arg, 1, v[i].e.msg);
            continue;
        }
        pv[k++] = (pack_info){.pack = v[i].pack, .size = v[i].size, .groups = v[i].groups,
                              .ngroups = v[i].ngroups, .ids = v[i].ids, .nchunks = v[i].nchunks};
    }
    if (!rc) {
        pl->v = pv;
        pl->n = pl->cap = k;
        pv = NULL;
    }
    free(pv);
    free(v);
    free(packs);
    free(sizes);
    return rc;
}

int packscan_read(store_t *s, pack_list *pl, store_report_fn report, void *arg,
                      uint64_t *tmp_bytes)
{
    if (s->be->remote) return scan_remote(s, pl, report, arg);
    char *dir = util_path(s->dir, "packs");
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) {
        free(dir);
        return -errno;
    }
    struct dirent *de;
    int rc;
    while ((rc = util_next_entry(d, &de)) > 0) {
        if (de->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
            if (errno == ENOENT) continue;      /* a .tmp renamed or removed meanwhile */
            rc = -errno;
            break;
        }
        if (!S_ISREG(st.st_mode)) continue;
        uint64_t n;
        size_t len = strlen(de->d_name);
        if (len > 4 && !strcmp(de->d_name + len - 4, ".tmp")) {
            util_reportf(report, arg, 0, "packs/%s: unfinished pack of an interrupted ingest (%lld bytes)",
                    de->d_name, (long long)st.st_size);
            if (tmp_bytes) *tmp_bytes += (uint64_t)st.st_size;
            continue;
        }
        if (pack_parse_name(de->d_name, &n)) {
            util_reportf(report, arg, 0, "packs/%s: not a pack file", de->d_name);
            continue;
        }
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC);
        pack_info pi = {.pack = n, .size = (uint64_t)st.st_size};
        store_err e;
        int rc = fd < 0 ? store_errf(&e, -errno, "pack %s: %s", de->d_name, strerror(errno))
                        : pack_read_footer(fd, pi.size, &pi.groups, &pi.ngroups, &pi.ids,
                                           &pi.nchunks, &e, de->d_name);
        if (fd >= 0) close(fd);
        if (rc) {
            util_reportf(report, arg, 1, "%s", e.msg);
            continue;
        }
        if (pl->n == pl->cap) {
            size_t cap = pl->cap ? pl->cap * 2 : 64;
            pack_info *v = realloc(pl->v, cap * sizeof *v);
            if (!v) {
                free(pi.groups);
                free(pi.ids);
                rc = -ENOMEM;
                break;
            }
            pl->v = v;
            pl->cap = cap;
        }
        pl->v[pl->n++] = pi;
    }
    closedir(d);
    free(dir);
    if (pl->n) qsort(pl->v, pl->n, sizeof *pl->v, cmp_pack);
    return rc;
}

void packscan_free(pack_list *pl)
{
    for (size_t i = 0; i < pl->n; i++) {
        free(pl->v[i].groups);
        free(pl->v[i].ids);
    }
    free(pl->v);
}

pack_info *packscan_find(pack_list *pl, uint64_t n)
{
    pack_info key = {.pack = n};
    return bsearch(&key, pl->v, pl->n, sizeof *pl->v, cmp_pack);
}

pack_group *packscan_group(pack_info *pi, uint64_t off)
{
    size_t lo = 0, hi = pi->ngroups;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pi->groups[mid].offset < off) lo = mid + 1;
        else hi = mid;
    }
    return lo < pi->ngroups && pi->groups[lo].offset == off ? &pi->groups[lo] : NULL;
}
