/* The read-only FUSE view of a store (restore/lazy.h, docs/lazy-wake.md):
 *
 *   snapshots/ID/{memory,vmstate,disk}   the blobs the snapshot has, read on demand
 *   sandboxes/S/latest                   a symlink to ../../snapshots/ID (the newest)
 *
 * Bytes come from restore_pages (verified, cached); a page that fails verification makes
 * the read fail with EIO. Blob files are immutable, so the kernel may keep their pages
 * (keep_cache): a MAP_PRIVATE mapping faults each page in once, then it is the page
 * cache's. An open blob holds a lease on its snapshot until its last release (a mapping
 * keeps the file open), so gc never drops a snapshot that is being read through the view.
 *
 * Nothing that starts threads (RocksDB) is made before fuse_main: without --foreground it
 * forks into the background after mounting. The store's index is opened on first use and
 * reopened when older than a second, so new snapshots and sandboxes appear.
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "restore/lazy.h"
#include "store/toolbox.h"

#define META_CACHE 32
#define INDEX_TTL_MS 1000

typedef struct open_blob {
    char id[STORE_SNAPID_LEN];
    char name[16];
    restore_pages *p;
    int refs;
    struct open_blob *next;
} open_blob;

#define META_BYTES 2             /* metas that keep their manifest's bytes (for the opens) */

typedef struct {
    char id[STORE_SNAPID_LEN];
    store_manifest *m;          /* blob names and sizes, no recipe expanded; the file's
                                   bytes kept only by the META_BYTES most recently loaded */
    const store_snapshot *snap; /* m's */
    uint64_t used;
    uint64_t loaded;            /* view.loads at load */
    int64_t checked_ms;         /* when the manifest was last seen to exist */
} meta;

typedef struct {
    const restore_mount_opts *o;
    pthread_mutex_t mu;
    open_blob *open;
    meta metas[META_CACHE];
    uint64_t clock;
    uint64_t loads;             /* manifests loaded */
    store_t *idx;               /* STORE_PEEK view for sandbox lookups */
    int64_t idx_ms;
} view;

static view *me(void) { return fuse_get_context()->private_data; }

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cairn mount: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* The index view, reopened when stale. Called with v->mu held. */
static store_t *index_view(view *v, store_err *e)
{
    int64_t now = store_now_ms();
    if (v->idx && now - v->idx_ms < INDEX_TTL_MS) return v->idx;
    store_t *s = NULL;
    if (store_open(v->o->store_dir, STORE_PEEK, &s, e)) return v->idx;   /* keep the old one */
    store_close(v->idx);
    v->idx = s;
    v->idx_ms = now;
    return s;
}

/* A snapshot's metadata (blob names and sizes), from the cache or its manifest. Called
 * with v->mu held. -ENOENT if there is no such snapshot. */
static int snapshot_meta(view *v, const char *id, const store_snapshot **out)
{
    if (store_snapid_valid(id)) return -ENOENT;
    meta *victim = &v->metas[0];
    for (int i = 0; i < META_CACHE; i++) {
        if (v->metas[i].snap && !strcmp(v->metas[i].id, id)) {
            meta *m = &v->metas[i];
            int64_t now = store_now_ms();
            if (now - m->checked_ms >= INDEX_TTL_MS) {
                /* gc may have dropped it since: the manifest's presence is the truth. */
                char path[4200];
                struct stat st;
                snprintf(path, sizeof path, "%s/manifests/%s.cmf", v->o->store_dir, id);
                if (stat(path, &st) < 0) {
                    store_manifest_free(m->m);
                    m->m = NULL;
                    m->snap = NULL;
                    return errno == ENOENT ? -ENOENT : -EIO;
                }
                m->checked_ms = now;
            }
            m->used = ++v->clock;
            *out = m->snap;
            return 0;
        }
        if (!v->metas[i].snap || v->metas[i].used < victim->used) victim = &v->metas[i];
    }
    store_err e;
    store_t *s = index_view(v, &e);
    if (!s) return -EIO;
    store_manifest *m = NULL;
    int rc = store_manifest_open(s, id, &m, &e);     /* no recipe expanded: names and sizes */
    if (rc) {
        if (rc != -ENOENT) logf_("%s", e.msg);
        return rc == -ENOENT ? -ENOENT : -EIO;
    }
    store_manifest_free(victim->m);
    snprintf(victim->id, sizeof victim->id, "%s", id);
    victim->m = m;
    victim->snap = store_manifest_snapshot(m);
    victim->used = ++v->clock;
    victim->loaded = ++v->loads;
    /* A file is stat'd, then opened: the open reuses these bytes (restore_pages_open_from)
     * instead of reading the manifest again. Older metas let theirs go: a bound. */
    uint64_t keep_after = v->loads > META_BYTES ? v->loads - META_BYTES : 0;
    for (int i = 0; i < META_CACHE; i++)
        if (v->metas[i].m && v->metas[i].loaded <= keep_after) store_manifest_drop_bytes(v->metas[i].m);
    victim->checked_ms = store_now_ms();
    *out = victim->snap;
    return 0;
}

/* Splits "/a/b/c" into up to 4 components; returns how many (-1 if too deep/long). */
static int split(const char *path, char parts[4][STORE_NAME_MAX + 1])
{
    int n = 0;
    for (const char *p = path; *p;) {
        while (*p == '/') p++;
        if (!*p) break;
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (n == 4 || len > STORE_NAME_MAX) return -1;
        memcpy(parts[n], p, len);
        parts[n++][len] = 0;
        p += len;
    }
    return n;
}

static const store_blob *find_blob(const store_snapshot *snap, const char *name)
{
    if (snap->kind == STORE_KIND_FILES && strcmp(name, "disk")) return NULL;   /* not restorable */
    return store_blob_find(snap, name);
}

static void dir_attr(struct stat *st)
{
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
}

static int v_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    view *v = me();
    char c[4][STORE_NAME_MAX + 1];
    int n = split(path, c);
    memset(st, 0, sizeof *st);
    st->st_uid = getuid();
    st->st_gid = getgid();
    if (n < 0) return -ENOENT;
    if (n == 0) { dir_attr(st); return 0; }
    if (n == 1) {
        if (strcmp(c[0], "snapshots") && strcmp(c[0], "sandboxes")) return -ENOENT;
        dir_attr(st);
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&v->mu);
    if (!strcmp(c[0], "snapshots")) {
        const store_snapshot *snap = NULL;
        rc = n <= 3 ? snapshot_meta(v, c[1], &snap) : -ENOENT;
        if (!rc) {
            st->st_mtime = (time_t)(snap->time_ms / 1000);
            if (n == 2) dir_attr(st);
            else {
                const store_blob *b = find_blob(snap, c[2]);
                if (!b) rc = -ENOENT;
                else {
                    st->st_mode = S_IFREG | 0444;
                    st->st_nlink = 1;
                    st->st_size = (off_t)b->size;
                    st->st_blocks = (blkcnt_t)((b->size + 511) / 512);
                }
            }
        }
    } else if (!strcmp(c[0], "sandboxes") && n <= 3) {
        store_err e;
        store_t *s = index_view(v, &e);
        char id[STORE_SNAPID_LEN];
        if (!s) rc = -EIO;
        else if (store_name_valid(c[1])) rc = -ENOENT;
        else if ((rc = store_snapshot_latest(s, c[1], id, &e)) != 0) rc = rc == -ENOENT ? -ENOENT : -EIO;
        else if (n == 2) dir_attr(st);
        else if (strcmp(c[2], "latest")) rc = -ENOENT;
        else {
            st->st_mode = S_IFLNK | 0444;
            st->st_nlink = 1;
            st->st_size = (off_t)strlen("../../snapshots/") + (off_t)strlen(id);
        }
    } else {
        rc = -ENOENT;
    }
    pthread_mutex_unlock(&v->mu);
    return rc;
}

static int v_readlink(const char *path, char *buf, size_t size)
{
    view *v = me();
    char c[4][STORE_NAME_MAX + 1];
    if (split(path, c) != 3 || strcmp(c[0], "sandboxes") || strcmp(c[2], "latest") || store_name_valid(c[1]))
        return -ENOENT;
    pthread_mutex_lock(&v->mu);
    store_err e;
    store_t *s = index_view(v, &e);
    char id[STORE_SNAPID_LEN];
    int rc = s ? store_snapshot_latest(s, c[1], id, &e) : -EIO;
    pthread_mutex_unlock(&v->mu);
    if (rc) return rc == -ENOENT ? -ENOENT : -EIO;
    snprintf(buf, size, "../../snapshots/%s", id);
    return 0;
}

typedef struct {
    void *buf;
    fuse_fill_dir_t fill;
    json_t *seen;               /* sandbox names already listed */
} lister;

static int list_sandbox(void *arg, const char *id, const char *rec)
{
    (void)id;
    lister *l = arg;
    json_t *j = json_loads(rec, 0, NULL);
    const char *sb = j ? json_string_value(json_object_get(j, "sandbox")) : NULL;
    if (sb && !json_object_get(l->seen, sb)) {
        json_object_set_new(l->seen, sb, json_true());
        l->fill(l->buf, sb, NULL, 0, 0);
    }
    json_decref(j);
    return 0;
}

static int v_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                     struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)off; (void)fi; (void)flags;
    view *v = me();
    char c[4][STORE_NAME_MAX + 1];
    int n = split(path, c), rc = 0;
    if (n < 0) return -ENOENT;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    if (n == 0) {
        fill(buf, "snapshots", NULL, 0, 0);
        fill(buf, "sandboxes", NULL, 0, 0);
        return 0;
    }
    pthread_mutex_lock(&v->mu);
    store_err e;
    if (n == 1 && !strcmp(c[0], "snapshots")) {
        store_t *s = index_view(v, &e);
        char (*ids)[STORE_SNAPID_LEN] = NULL;
        size_t k = 0;
        rc = s ? store_manifest_list(s, &ids, &k, NULL, NULL, &e) : -EIO;
        if (rc) logf_("listing snapshots: %s", s ? e.msg : "no index");
        for (size_t i = 0; !rc && i < k; i++) fill(buf, ids[i], NULL, 0, 0);
        free(ids);
        if (rc) rc = -EIO;
    } else if (n == 1 && !strcmp(c[0], "sandboxes")) {
        store_t *s = index_view(v, &e);
        lister l = {buf, fill, json_object()};
        rc = s && l.seen ? store_snapshot_all(s, list_sandbox, &l, &e) : -EIO;
        if (rc) logf_("listing sandboxes: %s", s ? e.msg : "no index");
        json_decref(l.seen);
        if (rc) rc = -EIO;
    } else if (n == 2 && !strcmp(c[0], "snapshots")) {
        const store_snapshot *snap = NULL;
        rc = snapshot_meta(v, c[1], &snap);
        for (int i = 0; !rc && i < snap->nblobs; i++)
            if (find_blob(snap, snap->blobs[i].name)) fill(buf, snap->blobs[i].name, NULL, 0, 0);
    } else if (n == 2 && !strcmp(c[0], "sandboxes")) {
        store_t *s = index_view(v, &e);
        char id[STORE_SNAPID_LEN];
        rc = !s ? -EIO : store_name_valid(c[1]) ? -ENOENT : store_snapshot_latest(s, c[1], id, &e);
        if (rc && rc != -ENOENT) rc = -EIO;
        if (!rc) fill(buf, "latest", NULL, 0, 0);
    } else {
        rc = -ENOTDIR;
    }
    pthread_mutex_unlock(&v->mu);
    return rc;
}

static int v_open(const char *path, struct fuse_file_info *fi)
{
    view *v = me();
    char c[4][STORE_NAME_MAX + 1];
    if ((fi->flags & O_ACCMODE) != O_RDONLY && !v->o->open_rw) return -EROFS;
    if (split(path, c) != 3 || strcmp(c[0], "snapshots") || store_snapid_valid(c[1]) ||
        strlen(c[2]) >= sizeof ((open_blob *)0)->name)
        return -ENOENT;
    pthread_mutex_lock(&v->mu);
    open_blob *ob = v->open;
    while (ob && (strcmp(ob->id, c[1]) || strcmp(ob->name, c[2]))) ob = ob->next;
    if (ob) {
        ob->refs++;
        pthread_mutex_unlock(&v->mu);
    } else {
        pthread_mutex_unlock(&v->mu);
        /* Opened outside the lock: it takes the lease (and reads the manifest unless the
         * stat before this open just did). */
        store_manifest *have = NULL;
        const store_snapshot *snap = NULL;
        store_err e;
        pthread_mutex_lock(&v->mu);
        if (snapshot_meta(v, c[1], &snap) == 0) {
            for (int i = 0; i < META_CACHE; i++)
                if (v->metas[i].snap == snap && store_manifest_dup(v->metas[i].m, &have, &e)) have = NULL;
        }
        pthread_mutex_unlock(&v->mu);
        restore_pages *p = NULL;
        int rc = restore_pages_open_from(v->o->store_dir, c[1], c[2], v->o->cache_bytes, have, &p, &e);
        if (rc) {
            if (rc != -ENOENT) logf_("%s", e.msg);
            return rc == -ENOENT ? -ENOENT : -EIO;
        }
        open_blob *nb = calloc(1, sizeof *nb);
        if (!nb) {
            restore_pages_close(p);
            return -ENOMEM;
        }
        memcpy(nb->id, c[1], strlen(c[1]) + 1);          /* lengths checked above */
        memcpy(nb->name, c[2], strlen(c[2]) + 1);
        nb->p = p;
        nb->refs = 1;
        pthread_mutex_lock(&v->mu);
        for (ob = v->open; ob && (strcmp(ob->id, c[1]) || strcmp(ob->name, c[2])); ob = ob->next) {}
        if (ob) {
            ob->refs++;             /* another open won the race: use its */
        } else {
            nb->next = v->open;
            v->open = ob = nb;
            nb = NULL;
        }
        pthread_mutex_unlock(&v->mu);
        if (nb) {
            restore_pages_close(nb->p);
            free(nb);
        }
    }
    fi->fh = (uint64_t)(uintptr_t)ob;
    fi->keep_cache = 1;         /* immutable bytes: the page cache may keep them */
    return 0;
}

static int v_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    open_blob *ob = (open_blob *)(uintptr_t)fi->fh;
    if (off < 0) return -EINVAL;
    size_t got = 0;
    store_err e;
    int rc = restore_pages_read(ob->p, (uint64_t)off, buf, size, &got, &e);
    if (rc) {
        logf_("%s", e.msg);
        return -EIO;
    }
    return (int)got;
}

/* Only reached with open_rw: the bytes are a snapshot's and never change. */
static int v_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path; (void)buf; (void)size; (void)off; (void)fi;
    return -EROFS;
}

static int v_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    (void)path; (void)size; (void)fi;
    return -EROFS;
}

static int v_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    view *v = me();
    open_blob *ob = (open_blob *)(uintptr_t)fi->fh;
    pthread_mutex_lock(&v->mu);
    int last = --ob->refs == 0;
    if (last) {
        open_blob **pp = &v->open;
        while (*pp != ob) pp = &(*pp)->next;
        *pp = ob->next;
    }
    pthread_mutex_unlock(&v->mu);
    if (last) {
        restore_pages_close(ob->p);      /* releases the lease */
        free(ob);
    }
    return 0;
}

static void *v_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    /* Blob bytes never change; names can (a new latest), so entries expire quickly. */
    cfg->kernel_cache = 1;
    cfg->entry_timeout = 1;
    cfg->attr_timeout = 1;
    return fuse_get_context()->private_data;
}

static const struct fuse_operations ops = {
    .init = v_init,
    .getattr = v_getattr,
    .readlink = v_readlink,
    .readdir = v_readdir,
    .open = v_open,
    .read = v_read,
    .write = v_write,
    .truncate = v_truncate,
    .release = v_release,
};

int restore_mount(const restore_mount_opts *o, store_err *e)
{
    view v = {.o = o};
    pthread_mutex_init(&v.mu, NULL);
    char *argv[8];
    int argc = 0;
    argv[argc++] = "cairn-mount";
    argv[argc++] = (char *)o->mountpoint;
    argv[argc++] = "-o";
    argv[argc++] = o->open_rw ? "fsname=cairn,subtype=cairn,default_permissions"
                              : "ro,fsname=cairn,subtype=cairn,default_permissions";
    if (o->foreground) argv[argc++] = "-f";
    if (o->debug) argv[argc++] = "-d";
    argv[argc] = NULL;
    int rc = fuse_main(argc, argv, &ops, &v);
    while (v.open) {            /* unmounted with files still open: release their leases */
        open_blob *n = v.open->next;
        restore_pages_close(v.open->p);
        free(v.open);
        v.open = n;
    }
    for (int i = 0; i < META_CACHE; i++) store_manifest_free(v.metas[i].m);
    store_close(v.idx);
    pthread_mutex_destroy(&v.mu);
    if (rc) return store_errf(e, -EIO, "%s: fuse_main failed (exit %d; see the message above)", o->mountpoint, rc);
    return 0;
}
