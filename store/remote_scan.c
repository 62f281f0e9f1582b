/* Listings of a bucket's store for fsck, rebuild, stats and gc: its packs (with footers read
 * by ranged GETs) and its manifests. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

static int parse_pack_key(const char *name, uint64_t *n)
{
    if (strncmp(name, "packs/", 6) || strlen(name) != 27 || strcmp(name + 22, ".pack")) return -1;
    char *end;
    *n = strtoull(name + 6, &end, 16);
    return end == name + 22 ? 0 : -1;
}

typedef struct {
    uint64_t *packs, *sizes;
    size_t n, cap;
    int nomem;
} pack_acc;

static int note_pack(void *arg, const char *name, uint64_t size)
{
    pack_acc *r = arg;
    uint64_t p;
    if (parse_pack_key(name, &p)) return 0;
    if (r->n == r->cap) {
        size_t nc = r->cap ? 2 * r->cap : 64;
        uint64_t *np = realloc(r->packs, nc * sizeof *np);
        if (np) r->packs = np;
        uint64_t *ns = np ? realloc(r->sizes, nc * sizeof *ns) : NULL;
        if (ns) r->sizes = ns;
        if (!np || !ns) return r->nomem = 1;
        r->cap = nc;
    }
    r->packs[r->n] = p;
    r->sizes[r->n++] = size;
    return 0;
}

int remote_list_packs(store_t *s, const char *prefix, uint64_t **packs, uint64_t **sizes, size_t *n,
                      store_err *e)
{
    pack_acc r = {0};
    int rc = s->be->ops->list(s->be, prefix ? prefix : "packs/", note_pack, &r, e);
    if (!rc && r.nomem) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc && !r.packs && (!(r.packs = malloc(8)) || !(r.sizes = malloc(8))))
        rc = store_errf(e, -ENOMEM, "out of memory");
    if (rc) {
        free(r.packs);
        free(r.sizes);
        return rc;
    }
    /* The listing is in name order, which is number order (fixed-width hex). */
    *packs = r.packs;
    *sizes = r.sizes;
    *n = r.n;
    return 0;
}

typedef struct {
    store_t *s;
    const char *name;
} obj_reader;

static int read_obj(void *ctx, void *buf, size_t len, uint64_t off)
{
    obj_reader *r = ctx;
    store_err e;
    return r->s->be->ops->get(r->s->be, r->name, off, buf, len, &e);
}

int remote_pack_footer(store_t *s, uint64_t pack, uint64_t size, store_group **groups, uint32_t *ngroups,
                       store_id **ids, uint32_t *nchunks, store_err *e)
{
    char name[40], short_name[32];
    remote_pack_name(pack, name);
    snprintf(short_name, sizeof short_name, "%016llx", (unsigned long long)pack);
    if (size == UINT64_MAX) {
        /* The size from a listing of this one name. */
        uint64_t *p = NULL, *sz = NULL;
        size_t n = 0;
        int rc = remote_list_packs(s, name, &p, &sz, &n, e);
        if (!rc && !n) rc = store_errf(e, -ENOENT, "pack %s: not in %s", short_name, s->be->where);
        if (!rc) size = sz[0];
        free(p);
        free(sz);
        if (rc) return rc;
    }
    obj_reader r = {s, name};
    return pack_read_footer_with(read_obj, &r, size, groups, ngroups, ids, nchunks, e, short_name);
}

typedef struct {
    store_t *s;
    remote_footer *v;
} footer_job;

static void footer_task(void *arg, size_t i)
{
    footer_job *j = arg;
    remote_footer *f = &j->v[i];
    f->rc = remote_pack_footer(j->s, f->pack, f->size, &f->groups, &f->ngroups, &f->ids, &f->nchunks, &f->e);
}

void remote_scan_footers(store_t *s, remote_footer *v, size_t n)
{
    /* One request each, latency-bound: on the store's workers. */
    footer_job j = {s, v};
    store_parallel(s, n, footer_task, &j);
}

int remote_ids_push(remote_ids *l, const char *id)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        char (*nv)[STORE_SNAPID_LEN] = realloc(l->ids, nc * sizeof *nv);
        if (!nv) return l->nomem = 1;
        l->ids = nv;
        l->cap = nc;
    }
    memcpy(l->ids[l->n++], id, STORE_SNAPID_LEN);
    return 0;
}

int remote_manifest_id(const char *name, char id[STORE_SNAPID_LEN])
{
    if (strncmp(name, "manifests/", 10) || strlen(name) != 34 || strcmp(name + 30, ".cmf")) return 0;
    memset(id, 0, STORE_SNAPID_LEN);
    memcpy(id, name + 10, 20);
    return !store_snapid_valid(id);
}

typedef struct {
    remote_ids l;
    store_report_fn report;
    void *arg;
} id_acc;

static int note_manifest(void *arg, const char *name, uint64_t size)
{
    (void)size;
    id_acc *a = arg;
    char id[STORE_SNAPID_LEN];
    if (remote_manifest_id(name, id)) return remote_ids_push(&a->l, id);
    size_t len = strlen(name);
    /* A file index is checked per manifest. */
    if (!strncmp(name, "manifests/", 10) && len == 36 && !strcmp(name + 30, ".files")) return 0;
    if (a->report) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: not a manifest", name);
        a->report(a->arg, 0, msg);
    }
    return 0;
}

int remote_manifest_list(store_t *s, char (**ids)[STORE_SNAPID_LEN], size_t *n, store_report_fn report,
                         void *arg, store_err *e)
{
    id_acc a = {.report = report, .arg = arg};
    int rc = s->be->ops->list(s->be, "manifests/", note_manifest, &a, e);
    if (!rc && a.l.nomem) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc && !a.l.ids && !(a.l.ids = malloc(STORE_SNAPID_LEN))) rc = store_errf(e, -ENOMEM, "out of memory");
    if (rc) {
        free(a.l.ids);
        return rc;
    }
    *ids = a.l.ids;
    *n = a.l.n;
    return 0;
}
