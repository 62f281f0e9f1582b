/* Store lifecycle: init, open (lock, config, index, crash recovery), close, chunk ids. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "store/internal.h"

#define CONF_NAME "cairn.conf"

int conf_text(const uint8_t *secret, char *buf, size_t cap)
{
    int n = snprintf(buf, cap,
                     "# Cairn store. The secret keys chunk ids: never edit or share it.\n"
                     "format=%d\ncreated_ms=%lld\nsecret=",
                     STORE_FORMAT, (long long)store_now_ms());
    for (int i = 0; i < SECRET_LEN; i++) n += snprintf(buf + n, cap - (size_t)n, "%02x", secret[i]);
    n += snprintf(buf + n, cap - (size_t)n, "\n");
    return n;
}

static int write_conf(const char *dir, const uint8_t *secret, store_err *e)
{
    char buf[1024];
    int n = conf_text(secret, buf, sizeof buf);
    int rc = util_write_file_durable(dir, CONF_NAME, buf, (size_t)n);
    if (rc) return store_errf(e, rc, "%s/%s: cannot write: %s", dir, CONF_NAME, strerror(-rc));
    char *path = util_path(dir, CONF_NAME);
    if (path) chmod(path, 0600);
    free(path);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int conf_parse_secret(char *text, uint8_t secret[SECRET_LEN])
{
    int format = -1, have_secret = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "format=", 7)) format = atoi(line + 7);
        if (!strncmp(line, "secret=", 7) && strlen(line + 7) == 2 * SECRET_LEN) {
            have_secret = 1;
            for (int i = 0; i < SECRET_LEN; i++) {
                int hi = hexval(line[7 + 2 * i]), lo = hexval(line[8 + 2 * i]);
                if (hi < 0 || lo < 0) have_secret = 0;
                secret[i] = (uint8_t)(hi << 4 | lo);
            }
        }
    }
    return format == STORE_FORMAT && have_secret ? 0 : -EINVAL;
}

static int read_conf(store_t *s, store_err *e)
{
    char *path = util_path(s->dir, CONF_NAME);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = path ? util_read_file(path, &buf, &len) : -ENOMEM;
    free(path);
    if (rc == -ENOENT)
        return store_errf(e, -ENOENT, "%s is not a Cairn store (no %s; create one with `cairn init`)",
                          s->dir, CONF_NAME);
    if (rc) return store_errf(e, rc, "%s/%s: %s", s->dir, CONF_NAME, strerror(-rc));
    char *text = realloc(buf, len + 1);
    if (!text) {
        free(buf);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    text[len] = 0;
    /* A node of a bucket: its folder holds caches; the secret is in the bucket. */
    if (strstr(text, "\nbackend=s3\n")) {
        rc = remote_open(s, text, e);
        free(text);
        return rc;
    }
    rc = conf_parse_secret(text, s->secret);
    free(text);
    if (rc)
        return store_errf(e, -EINVAL, "%s/%s: not a store of format %d or its secret is damaged",
                          s->dir, CONF_NAME, STORE_FORMAT);
    return backend_local_open(s->dir, &s->be, e);
}

int store_init_layout(const char *dir, store_err *e)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return store_errf(e, -errno, "%s: cannot create: %s", dir, strerror(errno));
    /* An empty folder given to be the store becomes private like one made here. */
    if (chmod(dir, 0700) < 0) return store_errf(e, -errno, "%s: %s", dir, strerror(errno));
    struct stat st;
    char *conf = util_path(dir, CONF_NAME);
    int exists = conf && stat(conf, &st) == 0;
    free(conf);
    if (exists) return store_errf(e, -EEXIST, "%s is already a Cairn store", dir);
    /* gc.lock (gc's own lock, gc/run.c) is part of the layout, so a gc --dry-run finds it
     * there and creates nothing. */
    char *gl = util_path(dir, "gc.lock");
    int gfd = gl ? open(gl, O_WRONLY | O_CREAT | O_CLOEXEC, 0600) : -1;
    free(gl);
    if (gfd < 0) return store_errf(e, -errno, "%s/gc.lock: %s", dir, strerror(errno));
    close(gfd);
    static const char *subdirs[] = {"packs", "manifests"};
    for (size_t i = 0; i < 2; i++) {
        char *p = util_path(dir, subdirs[i]);
        int rc = p && (mkdir(p, 0700) == 0 || errno == EEXIST) ? 0 : -errno;
        free(p);
        if (rc) return store_errf(e, rc, "%s/%s: %s", dir, subdirs[i], strerror(-rc));
    }
    store_t tmp = {.dir = (char *)dir, .lock_fd = -1, .mode = STORE_WRITE};
    pthread_mutex_init(&tmp.mu, NULL);
    int rc = index_open(&tmp, 1, e);
    if (!rc) {
        rocksdb_writebatch_t *b = rocksdb_writebatch_create();
        rocksdb_writebatch_put(b, "complete", 8, "1", 1);
        rc = index_write(&tmp, b, 1, e);
        rocksdb_writebatch_destroy(b);
        index_close(&tmp);
    }
    pthread_mutex_destroy(&tmp.mu);
    return rc;
}

int store_init(const char *dir, store_err *e)
{
    int rc = store_init_layout(dir, e);
    if (rc) return rc;
    /* cairn.conf last: a folder without it is not a store, so a failed init is harmless. */
    uint8_t secret[SECRET_LEN];
    if (getrandom(secret, sizeof secret, 0) != (ssize_t)sizeof secret)
        return store_errf(e, -EIO, "cannot read random bytes for the store secret");
    return write_conf(dir, secret, e);
}

static int take_lock(store_t *s, store_err *e)
{
    char *path = util_path(s->dir, "lock");
    s->lock_fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    free(path);
    if (s->lock_fd < 0) return store_errf(e, -errno, "%s/lock: %s", s->dir, strerror(errno));
    int op = s->mode == STORE_READ ? LOCK_SH : LOCK_EX;
    if (flock(s->lock_fd, op | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK) return store_errf(e, -errno, "%s/lock: %s", s->dir, strerror(errno));
        char who[32] = "";
        ssize_t n = pread(s->lock_fd, who, sizeof who - 1, 0);
        who[n > 0 ? n : 0] = 0;
        who[strcspn(who, "\n")] = 0;
        /* Seen waiting (store_lock_waiters) by a holder that would otherwise keep the lock. */
        char *wp = util_path(s->dir, "lock.wait");
        int wfd = wp ? open(wp, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
        free(wp);
        if (wfd < 0) return store_errf(e, -errno, "%s/lock.wait: %s", s->dir, strerror(errno));
        while (flock(wfd, LOCK_SH) < 0)
            if (errno != EINTR) {
                int err = errno;
                close(wfd);
                return store_errf(e, -err, "%s/lock.wait: %s", s->dir, strerror(err));
            }
        fprintf(stderr, "cairn: waiting for another cairn process (pid %s) to finish with %s\n",
                who[0] ? who : "?", s->dir);
        int rc = 0;
        while (!rc && flock(s->lock_fd, op) < 0)
            if (errno != EINTR) rc = store_errf(e, -errno, "%s/lock: %s", s->dir, strerror(errno));
        close(wfd);                                  /* no longer waiting */
        if (rc) return rc;
    }
    if (s->mode != STORE_READ) {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
        if (ftruncate(s->lock_fd, 0) == 0) (void)!pwrite(s->lock_fd, pid, (size_t)n, 0);
    }
    return 0;
}

int store_lock_waiters(const char *dir, int *fd, store_err *e)
{
    if (*fd < 0) {
        char *p = util_path(dir, "lock.wait");
        *fd = p ? open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
        free(p);
        if (*fd < 0) return store_errf(e, -errno, "%s/lock.wait: %s", dir, strerror(errno));
    }
    if (flock(*fd, LOCK_EX | LOCK_NB) == 0) {
        if (flock(*fd, LOCK_UN) < 0) return store_errf(e, -errno, "%s/lock.wait: %s", dir, strerror(errno));
        return 0;
    }
    if (errno == EWOULDBLOCK) return 1;
    return store_errf(e, -errno, "%s/lock.wait: %s", dir, strerror(errno));
}

static void warn_report(void *arg, int problem, const char *text)
{
    (void)arg;
    fprintf(stderr, "cairn: %s%s\n", problem ? "warning: refresh: " : "", text);
}

/* The node goes on with what its index knows when the bucket cannot be listed: reads of
 * its own and known snapshots still work, and the next open tries again. */
static void refresh_or_warn(store_t *s)
{
    store_err e;
    if (store_refresh(s, warn_report, NULL, &e))
        fprintf(stderr, "cairn: warning: %s: not refreshed from the bucket (the index may miss other "
                "nodes' newest snapshots): %s\n", s->dir, e.msg);
}

/* A reader of a node over a bucket refreshes the index first when no other process of this
 * node holds the store right now (the index is written only under the exclusive lock); if
 * one does, the reader does not wait for it and reads what the index knows. */
static int try_refresh_lock(store_t *s, int *got, store_err *e)
{
    char *path = util_path(s->dir, "lock");
    s->lock_fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    free(path);
    if (s->lock_fd < 0) return store_errf(e, -errno, "%s/lock: %s", s->dir, strerror(errno));
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0) {
        *got = 1;
        return 0;
    }
    if (errno != EWOULDBLOCK) return store_errf(e, -errno, "%s/lock: %s", s->dir, strerror(errno));
    close(s->lock_fd);
    s->lock_fd = -1;
    return 0;
}

/* Under the exclusive lock: the index opened for writing, refreshed, closed; then the lock
 * becomes shared (flock converts it; a writer that slips in between is waited for, as any
 * reader waits). */
static int refresh_then_share(store_t *s, store_err *e)
{
    s->mode = STORE_WRITE;
    store_err oe;
    int rc = index_open(s, 0, &oe);
    uint64_t complete = 0;
    if (!rc && index_get_u64(s, "complete", &complete, &oe) == 0 && complete == 1 &&
        commit_recover_pending(s, &oe) == 0)
        refresh_or_warn(s);
    index_close(s);
    s->mode = STORE_READ;
    while (flock(s->lock_fd, LOCK_SH) < 0)
        if (errno != EINTR) return store_errf(e, -errno, "%s/lock: %s", s->dir, strerror(errno));
    return 0;
}

int store_open(const char *dir, int mode, store_t **out, store_err *e)
{
    *out = NULL;
    store_t *s = calloc(1, sizeof *s);
    if (!s) return store_errf(e, -ENOMEM, "out of memory");
    s->dir = strdup(dir);
    s->mode = mode;
#ifdef CAIRN_TEST_SHORT_HASH
    s->verify_dedup = 1;
#endif
    s->lock_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cache_mu, NULL);
    pthread_mutex_init(&s->gone_mu, NULL);
    pthread_mutex_init(&s->verify_mu, NULL);
    struct stat st;
    int rc = 0;
    if (stat(dir, &st) < 0)
        rc = store_errf(e, -errno, "%s: %s (create a store with `cairn init`)", dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        rc = store_errf(e, -ENOTDIR, "%s is not a Cairn store (not a directory)", dir);
    if (!rc) rc = read_conf(s, e);
    if (!rc) {
        /* Before any reads: a refresh at open reads footers on the workers too. */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        const char *env = getenv("CAIRN_THREADS");
        long want = env ? atol(env) : ncpu;
        if (want < 1) want = 1;
        if (want > 16) want = 16;
        s->pool = pool_new((unsigned)want - 1);
    }
    int refresh_first = 0;
    if (!rc && mode == STORE_READ && s->be->remote) rc = try_refresh_lock(s, &refresh_first, e);
    if (!rc && mode != STORE_SCAN && mode != STORE_PEEK && !refresh_first) rc = take_lock(s, e);
    if (!rc && mode != STORE_SCAN && mode != STORE_PEEK) rc = index_recover_swap(s, e);
    if (!rc && refresh_first) rc = refresh_then_share(s, e);
    if (mode == STORE_SCAN) {
        if (!rc) goto ready;
    }
    if (mode == STORE_REPAIR) {
        s->mode = STORE_WRITE;
        if (!rc) goto ready;
    }
    if (!rc) rc = index_open(s, 0, e);
    if (!rc) {
        uint64_t complete = 0;
        store_err le;
        int cr = index_get_u64(s, "complete", &complete, &le);
        if (cr && cr != -ENOENT) rc = store_errf(e, cr, "%s: %s", dir, le.msg);
        else if (complete != 1)
            rc = store_errf(e, -EUCLEAN, "%s: the index is incomplete (an interrupted rebuild?): "
                            "run `cairn fsck --rebuild-index`", dir);
    }
    if (!rc && mode == STORE_WRITE) rc = commit_recover_pending(s, e);
    if (!rc && mode == STORE_WRITE && s->be->remote) refresh_or_warn(s);
    if (!rc) rc = index_get_counter(s, "next_pack", &s->next_pack, e);
    if (rc) {
        store_close(s);
        return rc;
    }
ready:;
    *out = s;
    return 0;
}

void store_close(store_t *s)
{
    if (!s) return;
    /* A cold read added frame copies: the cache stays within its bound. */
    store_err te;
    if (s->be && s->be->remote && atomic_load(&s->frames_added) && remote_trim_cache(s, &te))
        fprintf(stderr, "cairn: warning: %s\n", te.msg);
    pool_free(s->pool);
    index_close(s);
    pack_fds_close(s);
    backend_close(s->be);
    if (s->lock_fd >= 0) close(s->lock_fd);   /* releases the flock */
    for (int i = 0; i < GROUP_CACHE; i++) free(s->cache[i].pages);
    free(s->verify_frame);
    store_dctx_free(s->verify_dctx);
    pthread_mutex_destroy(&s->verify_mu);
    pthread_mutex_destroy(&s->cache_mu);
    gone_free(s);
    pthread_mutex_destroy(&s->gone_mu);
    pthread_mutex_destroy(&s->mu);
    free(s->dir);
    free(s);
}

const char *store_dir(const store_t *s) { return s->dir; }

int store_page_is_zero(const void *page)
{
    const uint64_t *p = page;
    /* Most non-zero pages differ in their first words: test those before the full scan. */
    if (p[0] | p[1] | p[STORE_PAGE / 16] | p[STORE_PAGE / 8 - 1]) return 0;
    uint64_t acc = 0;
    for (size_t i = 0; i < STORE_PAGE / 8; i += 8)
        acc |= p[i] | p[i + 1] | p[i + 2] | p[i + 3] | p[i + 4] | p[i + 5] | p[i + 6] | p[i + 7];
    return acc == 0;
}

void store_chunk_id(const store_t *s, const void *page, store_id *out)
{
    XXH128_hash_t h = XXH3_128bits_withSecret(page, STORE_PAGE, s->secret, SECRET_LEN);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out->b, c.digest, 16);
#ifdef CAIRN_TEST_SHORT_HASH
    /* Test build: 16 bits of id, so collisions are common (tests/integration/collisions.slow.sh).
     * The rest is a constant that is not zero, so no id reads as the zero page's. */
    memset(out->b + 2, 0x5a, 14);
#endif
}

int store_id_is_zero(const store_id *id)
{
    uint64_t a, b;
    memcpy(&a, id->b, 8);
    memcpy(&b, id->b + 8, 8);
    return (a | b) == 0;
}

void store_id_hex(const store_id *id, char out[STORE_ID_HEX])
{
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", id->b[i]);
}

int store_snapid_valid(const char *s)
{
    size_t n = strlen(s);
    if (n != 20) return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (hexval((unsigned char)s[i]) < 0) return -EINVAL;
    return 0;
}

#define TEMPLATE_PREFIX "_tpl."

int store_name_reserved(const char *name)
{
    return name[0] == '_';
}

int store_template_sandbox(const char *name, char out[STORE_NAME_MAX + 1])
{
    if (store_name_valid(name) ||
        strlen(name) + strlen(TEMPLATE_PREFIX) > STORE_NAME_MAX)
        return -EINVAL;
    snprintf(out, STORE_NAME_MAX + 1, "%s%s", TEMPLATE_PREFIX, name);
    return 0;
}

const char *store_template_name(const char *sandbox)
{
    size_t n = strlen(TEMPLATE_PREFIX);
    return strncmp(sandbox, TEMPLATE_PREFIX, n) ? NULL : sandbox + n;
}

int64_t snapid_time_ms(const char *id)
{
    /* Ids are made by new_snapshot_id (pack.c): 12 hex digits of unix ms, 8 random. */
    int64_t ms = 0;
    for (int i = 0; i < 12 && hexval((unsigned char)id[i]) >= 0; i++)
        ms = ms << 4 | hexval((unsigned char)id[i]);
    return ms;
}

int store_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > STORE_NAME_MAX || s[0] == '.' || s[0] == '-') return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return -EINVAL;
    }
    return 0;
}
