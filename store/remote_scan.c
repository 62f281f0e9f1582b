/* Listings of a bucket's store for fsck, rebuild, stats and gc: its packs (with footers read
 * by ranged GETs) and its manifests. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"

int remote_objs_note(void *arg, const char *name, uint64_t size, int64_t mtime_ms)
{
    remote_objs *l = arg;
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 16;
        remote_obj *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return l->nomem = 1;
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n].name = strdup(name))) return l->nomem = 1;
    l->v[l->n].size = size;
    l->v[l->n++].mtime_ms = mtime_ms;
    return 0;
}

int remote_list(store_t *s, const char *prefix, const char *after, remote_objs *out, store_err *e)
{
    *out = (remote_objs){0};
    int rc = after ? s->be->ops->list_after(s->be, prefix, after, remote_objs_note, out, e)
                   : s->be->ops->list(s->be, prefix, remote_objs_note, out, e);
    if (!rc && out->nomem) rc = store_errf(e, -ENOMEM, "out of memory");
    if (rc) remote_objs_free(out);
    return rc;
}

void remote_objs_free(remote_objs *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].name);
    free(l->v);
    *l = (remote_objs){0};
}

const remote_obj *remote_objs_find(const remote_objs *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].name, name)) return &l->v[i];
    return NULL;
}

int remote_list_packs(store_t *s, const char *prefix, const char *after, uint64_t **packs, uint64_t **sizes,
                      size_t *n, store_err *e)
{
    remote_objs l;
    int rc = remote_list(s, prefix ? prefix : "packs/", after, &l, e);
    if (rc) return rc;
    uint64_t *p = malloc((l.n ? l.n : 1) * sizeof *p), *z = malloc((l.n ? l.n : 1) * sizeof *z);
    size_t k = 0;
    if (!p || !z) rc = store_errf(e, -ENOMEM, "out of memory");
    /* The listing is in name order, which is number order (fixed-width hex). */
    for (size_t i = 0; !rc && i < l.n; i++)
        if (!strncmp(l.v[i].name, "packs/", 6) && !pack_parse_name(l.v[i].name + 6, &p[k])) z[k++] = l.v[i].size;
    remote_objs_free(&l);
    if (rc) {
        free(p);
        free(z);
        return rc;
    }
    *packs = p;
    *sizes = z;
    *n = k;
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
        int rc = remote_list_packs(s, name, NULL, &p, &sz, &n, e);
        if (!rc && !n) rc = store_errf(e, -ENOENT, "pack %s: not in %s", short_name, s->be->where);
        if (!rc) size = sz[0];
        free(p);
        free(sz);
        if (rc) return rc;
    }
    obj_reader r = {s, name};
    return pack_read_footer_with(read_obj, &r, size, groups, ngroups, ids, nchunks, e, short_name);
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

int remote_manifest_list(store_t *s, char (**ids)[STORE_SNAPID_LEN], size_t *n, store_report_fn report,
                         void *arg, store_err *e)
{
    remote_objs o;
    int rc = remote_list(s, "manifests/", NULL, &o, e);
    if (rc) return rc;
    remote_ids l = {0};
    for (size_t i = 0; !l.nomem && i < o.n; i++) {
        const char *name = o.v[i].name;
        char id[STORE_SNAPID_LEN];
        if (remote_manifest_id(name, id)) {
            if (remote_ids_push(&l, id)) break;
            continue;
        }
        /* A file index is checked per manifest. */
        if (strlen(name) == 36 && !strcmp(name + 30, ".files")) continue;
        util_reportf(report, arg, 0, "%s: not a manifest", name);
    }
    remote_objs_free(&o);
    if (!l.nomem && !l.ids && !(l.ids = malloc(STORE_SNAPID_LEN))) l.nomem = 1;
    if (l.nomem) {
        free(l.ids);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    *ids = l.ids;
    *n = l.n;
    return 0;
}
