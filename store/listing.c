/* The folders as lists, for gc and fsck: the manifests' snapshot ids, the pack numbers,
 * one pack's footer; and deleting a pack gc no longer needs. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/internal.h"

int store_manifest_list(store_t *s, char (**ids)[STORE_SNAPID_LEN], size_t *n,
                        store_report_fn report, void *arg, store_err *e)
{
    if (s->be->remote) return remote_manifest_list(s, ids, n, report, arg, e);
    *ids = NULL;
    *n = 0;
    char *dir = util_path(s->dir, "manifests");
    if (!dir) return store_errf(e, -ENOMEM, "out of memory");
    DIR *d = opendir(dir);
    if (!d) {
        int rc = store_errf(e, -errno, "%s: %s", dir, strerror(errno));
        free(dir);
        return rc;
    }
    size_t cap = 0;
    struct dirent *de;
    int rc;
    while ((rc = util_next_entry(d, &de)) > 0) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.') continue;
        if (len == 24 && !strcmp(de->d_name + 20, ".cmf")) {
            char id[STORE_SNAPID_LEN];
            memcpy(id, de->d_name, 20);
            id[20] = 0;
            if (!store_snapid_valid(id)) {
                if (*n == cap) {
                    size_t nc = cap ? cap * 2 : 64;
                    void *v = realloc(*ids, nc * sizeof **ids);
                    if (!v) {
                        rc = -ENOMEM;
                        break;
                    }
                    *ids = v;
                    cap = nc;
                }
                memcpy((*ids)[(*n)++], id, STORE_SNAPID_LEN);
                continue;
            }
        }
        if (len == 26 && !strcmp(de->d_name + 20, ".files")) continue;   /* checked per manifest */
        util_reportf(report, arg, 0, "manifests/%s: not a manifest (leftover of an interrupted commit?)",
                de->d_name);
    }
    closedir(d);
    if (rc) {
        /* A partial list would make the missing manifests' chunks look unused. */
        free(*ids);
        *ids = NULL;
        *n = 0;
        store_errf(e, rc, "%s: cannot list: %s", dir, strerror(-rc));
    }
    free(dir);
    return rc;
}

int store_pack_list(store_t *s, uint64_t **packs, size_t *n, store_err *e)
{
    if (s->be->remote) {
        uint64_t *sizes = NULL;
        int rc = remote_list_packs(s, NULL, NULL, packs, &sizes, n, e);
        free(sizes);
        return rc;
    }
    *packs = NULL;
    *n = 0;
    char *dir = util_path(s->dir, "packs");
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    if (!d) return store_errf(e, -errno, "%s/packs: %s", s->dir, strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    int rc;
    while ((rc = util_next_entry(d, &de)) > 0) {
        uint64_t p;
        if (pack_parse_name(de->d_name, &p)) continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            uint64_t *v = realloc(*packs, nc * sizeof *v);
            if (!v) {
                rc = -ENOMEM;
                break;
            }
            *packs = v;
            cap = nc;
        }
        (*packs)[(*n)++] = p;
    }
    closedir(d);
    if (rc) {
        free(*packs);
        *packs = NULL;
        *n = 0;
        return store_errf(e, rc, "%s/packs: cannot list: %s", s->dir, strerror(-rc));
    }
    for (size_t i = 1; i < *n; i++)          /* insertion sort: the list is nearly sorted */
        for (size_t j = i; j > 0 && (*packs)[j - 1] > (*packs)[j]; j--) {
            uint64_t t = (*packs)[j];
            (*packs)[j] = (*packs)[j - 1];
            (*packs)[j - 1] = t;
        }
    return 0;
}

int store_pack_footer(store_t *s, uint64_t pack, store_group **groups, uint32_t *ngroups,
                      store_id **ids, uint32_t *nchunks, uint64_t *bytes, store_err *e)
{
    char *path = pack_path(s, pack, 0);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    char name[32];
    snprintf(name, sizeof name, "%016llx", (unsigned long long)pack);
    free(path);
    if (fd < 0 && errno == ENOENT && s->be->remote)   /* not in the local cache */
        return remote_pack_footer(s, pack, UINT64_MAX, groups, ngroups, ids, nchunks, e);
    if (fd < 0) return store_errf(e, -errno, "pack %s: %s", name, strerror(errno));
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? store_errf(e, -errno, "pack %s: %s", name, strerror(errno))
                                : pack_read_footer(fd, (uint64_t)st.st_size, groups, ngroups, ids, nchunks, e, name);
    if (!rc && bytes) *bytes = (uint64_t)st.st_size;
    close(fd);
    return rc;
}

int store_pack_delete(store_t *s, uint64_t pack, store_err *e)
{
    if (s->be->remote) {
        char name[40];
        remote_pack_name(pack, name);
        int rc = s->be->ops->del(s->be, name, e);
        if (rc) return rc;
    }
    char *path = pack_path(s, pack, 0);
    int rc = path && unlink(path) < 0 && errno != ENOENT ? -errno : 0;
    free(path);
    pthread_mutex_lock(&s->mu);           /* a cached read fd of it is stale now */
    pack_fd_forget_locked(s, pack);
    pthread_mutex_unlock(&s->mu);
    char *dir = util_path(s->dir, "packs");
    if (!rc && dir) rc = util_fsync_dir(dir);
    free(dir);
    if (rc) return store_errf(e, rc, "pack %016llx: cannot delete: %s", (unsigned long long)pack, strerror(-rc));
    return 0;
}

int store_pack_list_sizes(store_t *s, uint64_t **packs, uint64_t **sizes, size_t *n, store_err *e)
{
    if (s->be->remote) return remote_list_packs(s, NULL, NULL, packs, sizes, n, e);
    int rc = store_pack_list(s, packs, n, e);
    if (rc) return rc;
    *sizes = malloc((*n ? *n : 1) * sizeof **sizes);
    if (!*sizes) {
        free(*packs);
        *packs = NULL;
        return store_errf(e, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < *n; i++) (*sizes)[i] = UINT64_MAX;
    return 0;
}

typedef struct {
    store_t *s;
    store_footer *v;
} footers_job;

static void footer_one(void *arg, size_t i)
{
    footers_job *j = arg;
    store_footer *f = &j->v[i];
    uint64_t bytes = 0;
    if (j->s->be->remote) {
        f->rc = remote_pack_footer(j->s, f->pack, f->size, &f->groups, &f->ngroups, &f->ids, &f->nchunks, &f->e);
        return;
    }
    f->rc = store_pack_footer(j->s, f->pack, &f->groups, &f->ngroups, &f->ids, &f->nchunks, &bytes, &f->e);
    if (!f->rc) f->size = bytes;
}

typedef struct {
    footers_job *j;
    size_t n;
    atomic_size_t next;
} footers_fan;

static void *footer_thread(void *arg)
{
    footers_fan *f = arg;
    for (size_t i; (i = atomic_fetch_add(&f->next, 1)) < f->n;) footer_one(f->j, i);
    return NULL;
}

/* On S3 each footer is two ranged GETs that wait on the network, not on a core: more at
 * once than the store has workers (gc reads every footer of the bucket each run). */
#define REMOTE_FOOTER_THREADS 8

void store_pack_footers(store_t *s, store_footer *v, size_t n)
{
    footers_job j = {s, v};
    if (!s->be->remote || n < 2) {
        store_parallel(s, n, footer_one, &j);
        return;
    }
    footers_fan f = {.j = &j, .n = n};
    atomic_init(&f.next, 0);
    pthread_t th[REMOTE_FOOTER_THREADS];
    size_t started = 0;
    for (; started < REMOTE_FOOTER_THREADS - 1 && started + 1 < n; started++)
        if (pthread_create(&th[started], NULL, footer_thread, &f)) break;
    footer_thread(&f);
    for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
}
