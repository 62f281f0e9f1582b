/* Manifests: the durable, self-contained description of one snapshot.
 *
 * Layout (little-endian)
 *   "CAIRNMF1", u32 format, u32 json length, JSON metadata (ids, names, sizes, packs)
 *   per blob: u64 recipe length, u64 compressed length, zstd(recipe)
 *   u64 XXH3-64 of everything above, "CAIRNMFE"
 * A recipe is a run list: varint(run << 1 | zero), and after a non-zero run its ids.
 * Every recipe names every page, so no snapshot depends on another (no diff chains).
 */
#include <errno.h>
#include <stdatomic.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>
#include <zstd.h>

#include "store/internal.h"

void store_snapshot_free(store_snapshot *snap)
{
    if (!snap) return;
    for (int i = 0; i < snap->nblobs; i++) free(snap->blobs[i].ids);
    store_findex_free(snap->files);
    free(snap);
}

static size_t recipe_encode(const store_blob *b, uint8_t *out)
{
    size_t n = 0;
    for (uint64_t i = 0; i < b->npages;) {
        int zero = store_id_is_zero(&b->ids[i]);
        uint64_t j = i + 1;
        while (j < b->npages && store_id_is_zero(&b->ids[j]) == zero) j++;
        n += util_put_varint(out + n, (j - i) << 1 | (uint64_t)zero);
        if (!zero) {
            memcpy(out + n, &b->ids[i], (size_t)(j - i) * 16);
            n += (size_t)(j - i) * 16;
        }
        i = j;
    }
    return n;
}

static int recipe_decode(const uint8_t *p, size_t len, store_blob *b)
{
    const uint8_t *end = p + len;
    uint64_t pos = 0;
    while (p < end) {
        uint64_t v;
        if (util_get_varint(&p, end, &v)) return -EBADMSG;
        uint64_t run = v >> 1;
        if (run == 0 || run > b->npages - pos) return -EBADMSG;
        if (!(v & 1)) {
            if ((uint64_t)(end - p) < run * 16) return -EBADMSG;
            memcpy(&b->ids[pos], p, (size_t)run * 16);
            for (uint64_t i = pos; i < pos + run; i++)
                if (store_id_is_zero(&b->ids[i])) return -EBADMSG;
            p += run * 16;
        }
        pos += run;
    }
    return pos == b->npages ? 0 : -EBADMSG;
}

static const char *const tier_names[] = {[STORE_TIER_NONE] = "", [STORE_TIER_FREE] = "free",
                                         [STORE_TIER_PRO] = "pro"};
static const char *const kind_names[] = {[STORE_KIND_FULL] = "full", [STORE_KIND_FILES] = "files"};

const char *store_tier_name(store_tier t)
{
    return (unsigned)t < 3 ? tier_names[t] : "?";
}

int store_tier_parse(const char *name, store_tier *out)
{
    for (unsigned i = 0; name && i < 3; i++)
        if (!strcmp(name, tier_names[i])) {
            *out = (store_tier)i;
            return 0;
        }
    return -EINVAL;
}

const char *store_kind_name(store_kind k)
{
    return (unsigned)k < 2 ? kind_names[k] : "?";
}

int store_kind_parse(const char *name, store_kind *out)
{
    for (unsigned i = 0; name && i < 2; i++)
        if (!strcmp(name, kind_names[i])) {
            *out = (store_kind)i;
            return 0;
        }
    return -EINVAL;
}

json_t *store_snapshot_json(const store_snapshot *snap)
{
    char when[32];
    store_rfc3339(snap->time_ms, when);
    json_t *blobs = json_object();
    for (int i = 0; i < snap->nblobs; i++)
        json_object_set_new(blobs, snap->blobs[i].name, json_integer((json_int_t)snap->blobs[i].size));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:o}",
                     "snapshot", snap->id, "tenant", snap->tenant, "sandbox", snap->sandbox,
                     "tier", store_tier_name(snap->tier), "time", when, "time_ms", (json_int_t)snap->time_ms,
                     "logical_bytes", (json_int_t)snap->logical_bytes,
                     "new_bytes", (json_int_t)snap->new_bytes,
                     "new_chunks", (json_int_t)snap->new_chunks, "parent", snap->parent,
                     "blobs", blobs);
    json_object_set_new(j, "kind", json_string(store_kind_name(snap->kind)));
    if (snap->template_name[0]) json_object_set_new(j, "template", json_string(snap->template_name));
    if (snap->files_hash[0]) json_object_set_new(j, "files_hash", json_string(snap->files_hash));
    if (snap->files) json_object_set_new(j, "files", json_integer((json_int_t)snap->files->n));
    return j;
}

char *manifest_record_json(const store_snapshot *snap)
{
    json_t *j = store_snapshot_json(snap);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

int manifest_record_parse(const char *json, store_snaprec *r, store_err *e)
{
    memset(r, 0, sizeof *r);
    json_error_t jerr;
    json_t *j = json_loads(json, 0, &jerr);
    if (!j) return store_errf(e, -EBADMSG, "not JSON (%s)", jerr.text);
    json_t *jt = json_object_get(j, "template"), *blobs = json_object_get(j, "blobs");
    const char *bad = NULL;
    if (util_json_str(r->id, sizeof r->id, json_object_get(j, "snapshot")) || store_snapid_valid(r->id))
        bad = "snapshot";
    else if (util_json_str(r->tenant, sizeof r->tenant, json_object_get(j, "tenant"))) bad = "tenant";
    else if (util_json_str(r->sandbox, sizeof r->sandbox, json_object_get(j, "sandbox")))
        bad = "sandbox";
    else if (util_json_str(r->parent, sizeof r->parent, json_object_get(j, "parent")) ||
             (r->parent[0] && store_snapid_valid(r->parent)))
        bad = "parent";
    else if (jt && util_json_str(r->template_name, sizeof r->template_name, jt)) bad = "template";
    else if (store_tier_parse(json_string_value(json_object_get(j, "tier")), &r->tier))
        bad = "tier";
    else if (store_kind_parse(json_string_value(json_object_get(j, "kind")), &r->kind))
        bad = "kind";
    else if (!json_is_integer(json_object_get(j, "time_ms"))) bad = "time_ms";
    else if (!json_is_object(blobs)) bad = "blobs";
    if (!bad) {
        r->time_ms = json_integer_value(json_object_get(j, "time_ms"));
        r->logical_bytes = (uint64_t)json_integer_value(json_object_get(j, "logical_bytes"));
        r->new_bytes = (uint64_t)json_integer_value(json_object_get(j, "new_bytes"));
        r->new_chunks = (uint64_t)json_integer_value(json_object_get(j, "new_chunks"));
        r->indexed = json_object_get(j, "files_hash") != NULL;
        r->has_disk = json_object_get(blobs, "disk") != NULL;
        if (r->parent[0]) r->parent_time_ms = snapid_time_ms(r->parent);
    }
    json_decref(j);
    return bad ? store_errf(e, -EBADMSG, "field '%s' missing or not understood", bad) : 0;
}

int manifest_encode(const store_snapshot *snap, const uint64_t *packs, size_t npacks,
                    uint8_t **out, size_t *len, store_err *e)
{
    json_t *j = store_snapshot_json(snap);
    json_t *jp = json_array();
    for (size_t i = 0; i < npacks; i++) json_array_append_new(jp, json_integer((json_int_t)packs[i]));
    json_object_set_new(j, "packs", jp);
    json_t *jb = json_array();
    for (int i = 0; i < snap->nblobs; i++)
        json_array_append_new(jb, json_pack("{s:s, s:I, s:I}", "name", snap->blobs[i].name,
                                            "size", (json_int_t)snap->blobs[i].size,
                                            "npages", (json_int_t)snap->blobs[i].npages));
    json_object_set_new(j, "blob_list", jb);
    char *meta = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!meta) return store_errf(e, -ENOMEM, "out of memory");
    size_t mlen = strlen(meta);
    size_t cap = 16 + mlen + 16;
    for (int i = 0; i < snap->nblobs; i++) {
        size_t raw = (size_t)snap->blobs[i].npages * 17 + 16;
        cap += 16 + ZSTD_compressBound(raw);
    }
    uint8_t *buf = malloc(cap);
    uint8_t *raw = NULL;
    if (!buf) {
        free(meta);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    memcpy(buf, MANIFEST_MAGIC, 8);
    util_put_le32(buf + 8, STORE_FORMAT);
    util_put_le32(buf + 12, (uint32_t)mlen);
    memcpy(buf + 16, meta, mlen);
    free(meta);
    size_t n = 16 + mlen;
    for (int i = 0; i < snap->nblobs; i++) {
        raw = malloc((size_t)snap->blobs[i].npages * 17 + 16);
        if (!raw) {
            free(buf);
            return store_errf(e, -ENOMEM, "out of memory");
        }
        size_t rl = recipe_encode(&snap->blobs[i], raw);
        size_t zl = ZSTD_compress(buf + n + 16, cap - n - 16, raw, rl, 3);
        free(raw);
        if (ZSTD_isError(zl)) {
            free(buf);
            return store_errf(e, -EIO, "compressing a recipe: %s", ZSTD_getErrorName(zl));
        }
        util_put_le64(buf + n, rl);
        util_put_le64(buf + n + 8, zl);
        n += 16 + zl;
    }
    util_put_le64(buf + n, XXH3_64bits(buf, n));
    memcpy(buf + n + 8, MANIFEST_END, 8);
    *out = buf;
    *len = n + 16;
    return 0;
}

/* Where one blob's compressed recipe lies in a manifest buffer. */
typedef struct {
    const uint8_t *z;
    uint64_t zl, rl;
} recipe_ref;

/* The file's bytes, shared by a manifest and its dups (read-only once checked). */
typedef struct {
    _Atomic int refs;
    uint8_t *bytes;
} mbytes;

struct store_manifest {
    mbytes *mb;                 /* the whole file (refs point into it); NULL once dropped */
    store_snapshot *snap;       /* blobs' ids NULL until expanded */
    recipe_ref refs[STORE_MAX_BLOBS];
};

static void mbytes_unref(mbytes *mb)
{
    if (mb && atomic_fetch_sub_explicit(&mb->refs, 1, memory_order_acq_rel) == 1) {
        free(mb->bytes);
        free(mb);
    }
}

/* Checks magic, checksum and metadata, and finds each blob's recipe without expanding
 * it: the part of a decode that does not grow with the blobs' sizes (but the checksum). */
static int decode_head(const uint8_t *buf, size_t len, store_snapshot **out, recipe_ref *refs,
                       uint64_t **packs, size_t *npacks, store_err *e)
{
    *out = NULL;
    if (len < 32 || memcmp(buf, MANIFEST_MAGIC, 8) || memcmp(buf + len - 8, MANIFEST_END, 8))
        return store_errf(e, -EBADMSG, "not a manifest (bad magic)");
    if (XXH3_64bits(buf, len - 16) != util_get_le64(buf + len - 16))
        return store_errf(e, -EBADMSG, "manifest checksum mismatch (damaged file)");
    uint32_t mlen = util_get_le32(buf + 12);
    if ((size_t)mlen > len - 32) return store_errf(e, -EBADMSG, "manifest metadata too long");
    json_error_t jerr;
    json_t *j = json_loadb((const char *)buf + 16, mlen, 0, &jerr);
    if (!j) return store_errf(e, -EBADMSG, "manifest metadata: %s", jerr.text);
    store_snapshot *snap = calloc(1, sizeof *snap);
    int rc = snap ? 0 : -ENOMEM;
    json_t *bl = json_object_get(j, "blob_list");
    if (!rc && (util_json_str(snap->id, sizeof snap->id, json_object_get(j, "snapshot")) ||
                util_json_str(snap->tenant, sizeof snap->tenant, json_object_get(j, "tenant")) ||
                util_json_str(snap->sandbox, sizeof snap->sandbox, json_object_get(j, "sandbox")) ||
                store_tier_parse(json_string_value(json_object_get(j, "tier")), &snap->tier) ||
                util_json_str(snap->parent, sizeof snap->parent, json_object_get(j, "parent")) ||
                !json_is_array(bl) || json_array_size(bl) > STORE_MAX_BLOBS))
        rc = -EBADMSG;
    json_t *jt = json_object_get(j, "template"), *jh = json_object_get(j, "files_hash");
    json_t *jk = json_object_get(j, "kind");
    if (!rc && store_kind_parse(json_string_value(jk), &snap->kind)) rc = -EBADMSG;
    if (!rc && jt && util_json_str(snap->template_name, sizeof snap->template_name, jt)) rc = -EBADMSG;
    if (!rc && jh && (util_json_str(snap->files_hash, sizeof snap->files_hash, jh) ||
                      strlen(snap->files_hash) != 16))
        rc = -EBADMSG;
    if (!rc) {
        snap->time_ms = json_integer_value(json_object_get(j, "time_ms"));
        snap->logical_bytes = (uint64_t)json_integer_value(json_object_get(j, "logical_bytes"));
        snap->new_bytes = (uint64_t)json_integer_value(json_object_get(j, "new_bytes"));
        snap->new_chunks = (uint64_t)json_integer_value(json_object_get(j, "new_chunks"));
    }
    const uint8_t *p = buf + 16 + mlen, *end = buf + len - 16;
    for (size_t i = 0; !rc && i < json_array_size(bl); i++) {
        json_t *jb = json_array_get(bl, i);
        store_blob *b = &snap->blobs[i];
        snap->nblobs = (int)i + 1;
        /* The name becomes a file name at restore: only [a-z0-9_] is acceptable. */
        if (util_json_str(b->name, sizeof b->name, json_object_get(jb, "name")) || !b->name[0] ||
            strspn(b->name, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(b->name))
            rc = -EBADMSG;
        b->size = (uint64_t)json_integer_value(json_object_get(jb, "size"));
        b->npages = (uint64_t)json_integer_value(json_object_get(jb, "npages"));
        if (!rc && (b->npages != (b->size + STORE_PAGE - 1) / STORE_PAGE || b->npages > (1ULL << 40) ||
                    end - p < 16))
            rc = -EBADMSG;
        if (rc) break;
        uint64_t rl = util_get_le64(p), zl = util_get_le64(p + 8);
        p += 16;
        if (zl > (uint64_t)(end - p) || rl > b->npages * 17 + 16) {
            rc = -EBADMSG;
            break;
        }
        refs[i] = (recipe_ref){.z = p, .zl = zl, .rl = rl};
        p += zl;
    }
    if (!rc && packs) {
        json_t *jp = json_object_get(j, "packs");
        *npacks = json_array_size(jp);
        *packs = calloc(*npacks + 1, sizeof **packs);
        for (size_t i = 0; *packs && i < *npacks; i++)
            (*packs)[i] = (uint64_t)json_integer_value(json_array_get(jp, i));
        if (!*packs) rc = -ENOMEM;
    }
    json_decref(j);
    if (rc) {
        store_snapshot_free(snap);
        return store_errf(e, rc, rc == -ENOMEM ? "out of memory" : "manifest is malformed");
    }
    *out = snap;
    return 0;
}

/* Expands one recipe into b->ids (allocated here). */
static int recipe_expand(const recipe_ref *r, store_blob *b)
{
    b->ids = calloc(b->npages ? b->npages : 1, sizeof *b->ids);
    uint8_t *raw = malloc(r->rl ? r->rl : 1);
    int rc = 0;
    if (!b->ids || !raw) rc = -ENOMEM;
    else if (ZSTD_decompress(raw, r->rl, r->z, r->zl) != r->rl) rc = -EBADMSG;
    else rc = recipe_decode(raw, r->rl, b);
    free(raw);
    if (rc) {
        free(b->ids);
        b->ids = NULL;
    }
    return rc;
}

int manifest_decode(const uint8_t *buf, size_t len, store_snapshot **out, uint64_t **packs,
                    size_t *npacks, store_err *e)
{
    recipe_ref refs[STORE_MAX_BLOBS];
    store_snapshot *snap = NULL;
    int rc = decode_head(buf, len, &snap, refs, packs, npacks, e);
    if (rc) return rc;
    for (int i = 0; !rc && i < snap->nblobs; i++) rc = recipe_expand(&refs[i], &snap->blobs[i]);
    if (rc) {
        store_snapshot_free(snap);
        if (packs) {
            free(*packs);
            *packs = NULL;
        }
        return store_errf(e, rc, rc == -ENOMEM ? "out of memory" : "manifest is malformed");
    }
    *out = snap;
    return 0;
}

/* Reads manifests/ID.cmf through the backend. */
static int manifest_read(store_t *s, const char *id, uint8_t **buf, size_t *len, store_err *e)
{
    if (store_snapid_valid(id))
        return store_errf(e, -EINVAL, "'%s' is not a snapshot id (20 hex digits)", id);
    char name[64];
    snprintf(name, sizeof name, "manifests/%s.cmf", id);
    store_err ge;
    int rc = obj_get(s, name, buf, len, &ge);
    if (rc == -ENOENT) return store_errf(e, -ENOENT, "no snapshot %s in %s", id, s->be->where);
    if (rc) return store_errf(e, rc, "snapshot %s: reading its manifest: %s", id, ge.msg);
    return 0;
}

int store_manifest_open(store_t *s, const char *id, store_manifest **out, store_err *e)
{
    *out = NULL;
    store_manifest *m = calloc(1, sizeof *m);
    if (m && !(m->mb = calloc(1, sizeof *m->mb))) {
        free(m);
        m = NULL;
    }
    if (!m) return store_errf(e, -ENOMEM, "out of memory");
    m->mb->refs = 1;
    size_t len = 0;
    int rc = manifest_read(s, id, &m->mb->bytes, &len, e);
    store_err me;
    if (!rc && (rc = decode_head(m->mb->bytes, len, &m->snap, m->refs, NULL, NULL, &me)))
        store_errf(e, rc, "snapshot %s: %s", id, me.msg);
    if (!rc && strcmp(m->snap->id, id))
        rc = store_errf(e, -EBADMSG, "snapshot %s: its manifest names another snapshot", id);
    if (rc) {
        store_manifest_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

const store_snapshot *store_manifest_snapshot(const store_manifest *m)
{
    return m->snap;
}

int store_manifest_expand(store_manifest *m, const char *blob, store_err *e)
{
    for (int i = 0; i < m->snap->nblobs; i++) {
        store_blob *b = &m->snap->blobs[i];
        if (strcmp(b->name, blob)) continue;
        if (b->ids) return 0;
        if (!m->mb) return store_errf(e, -ENODATA, "snapshot %s: its manifest's bytes were dropped", m->snap->id);
        int rc = recipe_expand(&m->refs[i], b);
        if (rc) return store_errf(e, rc, "snapshot %s: %s", m->snap->id,
                                  rc == -ENOMEM ? "out of memory" : "manifest is malformed");
        return 0;
    }
    return store_errf(e, -ENOENT, "snapshot %s has no %s", m->snap->id, blob);
}

store_snapshot *store_manifest_take(store_manifest *m)
{
    store_snapshot *snap = m->snap;
    m->snap = NULL;
    store_manifest_free(m);
    return snap;
}

int store_manifest_dup(const store_manifest *m, store_manifest **out, store_err *e)
{
    *out = NULL;
    if (!m->mb) return store_errf(e, -ENODATA, "snapshot %s: its manifest's bytes were dropped", m->snap->id);
    store_manifest *d = calloc(1, sizeof *d);
    if (d) d->snap = malloc(sizeof *d->snap);
    if (!d || !d->snap) {
        free(d);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    *d->snap = *m->snap;
    for (int i = 0; i < d->snap->nblobs; i++) d->snap->blobs[i].ids = NULL;
    d->snap->files = NULL;
    memcpy(d->refs, m->refs, sizeof d->refs);
    atomic_fetch_add_explicit(&m->mb->refs, 1, memory_order_relaxed);
    d->mb = m->mb;
    *out = d;
    return 0;
}

void store_manifest_drop_bytes(store_manifest *m)
{
    mbytes_unref(m->mb);
    m->mb = NULL;
}

void store_manifest_free(store_manifest *m)
{
    if (!m) return;
    mbytes_unref(m->mb);
    store_snapshot_free(m->snap);
    free(m);
}

int manifest_load_path(const char *path, store_snapshot **out, store_err *e)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = util_read_file(path, &buf, &len);
    if (rc) return store_errf(e, rc, "%s: %s", path, strerror(-rc));
    rc = manifest_decode(buf, len, out, NULL, NULL, e);
    free(buf);
    return rc;
}

int manifest_load(store_t *s, const char *id, store_snapshot **out, int *damaged, store_err *e)
{
    *out = NULL;
    if (damaged) *damaged = 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = manifest_read(s, id, &buf, &len, e);
    if (rc) return rc;
    store_err ge;
    rc = manifest_decode(buf, len, out, NULL, NULL, &ge);
    free(buf);
    if (!rc && strcmp((*out)->id, id)) {
        rc = -EBADMSG;
        snprintf(ge.msg, sizeof ge.msg, "its manifest names another snapshot");
    }
    if (!rc) return 0;
    store_snapshot_free(*out);
    *out = NULL;
    if (rc == -ENOMEM) return store_errf(e, rc, "out of memory");
    if (damaged) *damaged = 1;
    return store_errf(e, rc, "snapshot %s: %s", id, ge.msg);
}

int store_snapshot_load(store_t *s, const char *id, store_snapshot **out, store_err *e)
{
    return manifest_load(s, id, out, NULL, e);
}
