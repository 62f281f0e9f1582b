/* serve.json: the server's one config file.
 *   listen             "HOST:PORT" (default 127.0.0.1:7420)
 *   snapshot_roots     folders a snapshot's input files may come from
 *   restore_roots      folders restores and rebuilds may write to
 *   mount              "/path": where `cairn mount` shows this store (wake mode "file")
 *   limits             max_body_bytes, max_header_bytes, request_timeout_s,
 *                      shutdown_timeout_s, max_long_jobs, workers, max_page_servers,
 *                      max_shares_per_tenant,
 *                      page_server_wait_s
 *   tokens             [{name, role, tenant?, sha256, created}]: hashes only
 * Unknown keys are errors (a typo must not silently drop a limit). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/internal.h"
#include "store/toolbox.h"

static const char *role_names[] = {"orchestrator", "gc", "support", "admin", "share"};

int api_role_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, role_names[i])) return 1 << i;
    return -1;
}

const char *api_role_name(int role)
{
    for (int i = 0; i < 5; i++)
        if (role == 1 << i) return role_names[i];
    return "?";
}

void api_sha256(const void *p, size_t n, uint8_t out[32])
{
    SHA256(p, n, out);
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = 0;
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        int c = s[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return -1;
        if (i % 2) out[i / 2] |= (uint8_t)v;
        else out[i / 2] = (uint8_t)(v << 4);
    }
    return 0;
}

int api_token_make(const char *prefix, char *out, store_err *e)
{
    uint8_t r[32];
    size_t got = 0;
    while (got < sizeof r) {
        ssize_t k = getrandom(r + got, sizeof r - got, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return store_errf(e, -errno, "getrandom: %s", strerror(errno));
        got += (size_t)k;
    }
    size_t pl = strlen(prefix);
    memcpy(out, prefix, pl);
    hex(r, sizeof r, out + pl);
    return 0;
}

const api_token *api_token_find(const api_token *t, size_t n, const char *text)
{
    uint8_t h[32];
    api_sha256(text, strlen(text), h);
    const api_token *hit = NULL;
    for (size_t i = 0; i < n; i++) {
        uint8_t d = 0;
        for (int k = 0; k < 32; k++) d |= (uint8_t)(t[i].hash[k] ^ h[k]);
        if (!d) hit = &t[i];
    }
    return hit;
}

char *api_config_path(const char *store, const char *config)
{
    if (config) return strdup(config);
    size_t n = strlen(store) + 16;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/serve.json", store);
    return p;
}

static int roots(json_t *v, const char *key, char ***out, size_t *n, store_err *e)
{
    if (!v) return 0;
    if (!json_is_array(v)) return store_errf(e, -EINVAL, "%s: an array of folders", key);
    *out = calloc(json_array_size(v) + 1, sizeof **out);
    if (!*out) return store_errf(e, -ENOMEM, "out of memory");
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        const char *s = json_string_value(x);
        if (!s || s[0] != '/') return store_errf(e, -EINVAL, "%s: each entry is an absolute folder", key);
        char *rp = realpath(s, NULL);
        if (!rp) return store_errf(e, -errno, "%s: %s: %s", key, s, strerror(errno));
        (*out)[(*n)++] = rp;
    }
    return 0;
}

static int limit(json_t *lim, const char *key, long lo, long hi, long *out, store_err *e)
{
    json_t *v = json_object_get(lim, key);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return store_errf(e, -EINVAL, "limits.%s: an integer from %ld to %ld", key, lo, hi);
    *out = (long)json_integer_value(v);
    return 0;
}

static int parse_tokens(json_t *v, api_config *c, store_err *e)
{
    if (!v) return 0;
    if (!json_is_array(v)) return store_errf(e, -EINVAL, "tokens: an array");
    c->tokens = calloc(json_array_size(v) + 1, sizeof *c->tokens);
    if (!c->tokens) return store_errf(e, -ENOMEM, "out of memory");
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
        api_token *t = &c->tokens[c->ntokens];
        const char *name = json_string_value(json_object_get(x, "name"));
        const char *role = json_string_value(json_object_get(x, "role"));
        const char *tenant = json_string_value(json_object_get(x, "tenant"));
        const char *h = json_string_value(json_object_get(x, "sha256"));
        if (!name || !role || !h || api_role_parse(role) < 0 || unhex(h, t->hash, 32) ||
            strlen(name) > STORE_NAME_MAX || (tenant && store_name_valid(tenant)))
            return store_errf(e, -EINVAL, "tokens[%zu]: needs name, a role (orchestrator, gc, support, admin), "
                              "sha256 (64 hex digits) and an optional valid tenant", i);
        snprintf(t->name, sizeof t->name, "%s", name);
        snprintf(t->tenant, sizeof t->tenant, "%s", tenant ? tenant : "");
        t->role = api_role_parse(role);
        c->ntokens++;
    }
    return 0;
}

int api_config_load(const char *path, api_config *c, store_err *e)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:7420");
    c->max_body = 1 << 20;
    c->max_headers = 16384;
    c->request_timeout_s = 30;
    c->shutdown_timeout_s = 60;
    c->max_long_jobs = 4;
    c->workers = 4;
    c->max_page_servers = 16;
    c->page_server_wait_s = 60;
    c->max_shares = 1000;
    c->max_spool = c->max_spool_tenant = c->spool_reserve = -1;   /* by the file system's size */
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        struct stat sb;
        if (stat(path, &sb) < 0 && errno == ENOENT) return 0;    /* no file: defaults, no token */
        return store_errf(e, -EINVAL, "%s: line %d: %s", path, je.line, je.text);
    }
    int rc = 0;
    if (!json_is_object(j)) rc = store_errf(e, -EINVAL, "%s: not a JSON object", path);
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (rc) break;
        if (!strcmp(key, "listen")) {
            if (!json_is_string(v) || json_string_length(v) >= sizeof c->listen)
                rc = store_errf(e, -EINVAL, "%s: listen is \"HOST:PORT\"", path);
            else snprintf(c->listen, sizeof c->listen, "%s", json_string_value(v));
        } else if (!strcmp(key, "snapshot_roots")) {
            rc = roots(v, key, &c->snapshot_roots, &c->nsnapshot_roots, e);
        } else if (!strcmp(key, "restore_roots")) {
            rc = roots(v, key, &c->restore_roots, &c->nrestore_roots, e);
        } else if (!strcmp(key, "mount")) {
            if (!json_is_string(v) || json_string_value(v)[0] != '/' || json_string_length(v) >= sizeof c->mount)
                rc = store_errf(e, -EINVAL, "%s: mount is an absolute path", path);
            else snprintf(c->mount, sizeof c->mount, "%s", json_string_value(v));
        } else if (!strcmp(key, "tokens")) {
            rc = parse_tokens(v, c, e);
        } else if (!strcmp(key, "limits")) {
            long t = c->request_timeout_s, st = c->shutdown_timeout_s, lj = c->max_long_jobs, w = c->workers;
            long mps = c->max_page_servers, psw = c->page_server_wait_s, msh = c->max_shares;
            if (!json_is_object(v)) rc = store_errf(e, -EINVAL, "%s: limits is an object", path);
            const char *lk;
            json_t *lv;
            json_object_foreach(v, lk, lv)
                if (!rc && strcmp(lk, "max_body_bytes") && strcmp(lk, "max_header_bytes") &&
                    strcmp(lk, "request_timeout_s") && strcmp(lk, "shutdown_timeout_s") &&
                    strcmp(lk, "max_long_jobs") && strcmp(lk, "workers") && strcmp(lk, "max_page_servers") &&
                    strcmp(lk, "page_server_wait_s") && strcmp(lk, "max_spool_bytes") &&
                    strcmp(lk, "max_spool_bytes_per_tenant") && strcmp(lk, "spool_reserve_bytes") &&
                    strcmp(lk, "max_shares_per_tenant"))
                    rc = store_errf(e, -EINVAL, "%s: unknown limit '%s'", path, lk);
            if (!rc) rc = limit(v, "max_body_bytes", 64, 1L << 30, &c->max_body, e);
            if (!rc) rc = limit(v, "max_header_bytes", 1024, 1L << 20, &c->max_headers, e);
            if (!rc) rc = limit(v, "request_timeout_s", 1, 3600, &t, e);
            if (!rc) rc = limit(v, "shutdown_timeout_s", 0, 86400, &st, e);
            if (!rc) rc = limit(v, "max_long_jobs", 1, 256, &lj, e);
            if (!rc) rc = limit(v, "workers", 1, 256, &w, e);
            if (!rc) rc = limit(v, "max_page_servers", 1, 1024, &mps, e);
            if (!rc) rc = limit(v, "page_server_wait_s", 1, 86400, &psw, e);
            if (!rc) rc = limit(v, "max_spool_bytes", 0, 1L << 50, &c->max_spool, e);
            if (!rc) rc = limit(v, "max_spool_bytes_per_tenant", 0, 1L << 50, &c->max_spool_tenant, e);
            if (!rc) rc = limit(v, "spool_reserve_bytes", 0, 1L << 50, &c->spool_reserve, e);
            if (!rc) rc = limit(v, "max_shares_per_tenant", 1, 1000000, &msh, e);
            c->max_shares = (int)msh;
            c->max_page_servers = (int)mps;
            c->page_server_wait_s = (int)psw;
            c->request_timeout_s = (int)t;
            c->shutdown_timeout_s = (int)st;
            c->max_long_jobs = (int)lj;
            c->workers = (int)w;
            if (rc) store_errf(e, rc, "%s: %s", path, e->msg);
        } else {
            rc = store_errf(e, -EINVAL, "%s: unknown key '%s'", path, key);
        }
    }
    json_decref(j);
    if (rc) api_config_free(c);
    return rc;
}

void api_config_free(api_config *c)
{
    for (size_t i = 0; c->snapshot_roots && c->snapshot_roots[i]; i++) free(c->snapshot_roots[i]);
    for (size_t i = 0; c->restore_roots && c->restore_roots[i]; i++) free(c->restore_roots[i]);
    free(c->snapshot_roots);
    free(c->restore_roots);
    free(c->tokens);
    memset(c, 0, sizeof *c);
}

/* ---- token add / list / revoke: edit the file's JSON, keep every other key ------------ */

static int load_raw(const char *path, json_t **out, store_err *e)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        struct stat sb;
        if (stat(path, &sb) < 0 && errno == ENOENT) j = json_object();
        else return store_errf(e, -EINVAL, "%s: line %d: %s", path, je.line, je.text);
    }
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return store_errf(e, -EINVAL, "%s: not a JSON object", path);
    }
    json_t *t = json_object_get(j, "tokens");
    if (!t) json_object_set_new(j, "tokens", t = json_array());
    if (!json_is_array(t)) {
        json_decref(j);
        return store_errf(e, -EINVAL, "%s: tokens is not an array", path);
    }
    *out = j;
    return 0;
}

int api_file_replace(const char *path, const void *buf, size_t len, store_err *e)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n), *dir = strdup(path);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    snprintf(tmp, n, "%s.tmp", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = 0;
    else if (slash) *slash = 0;
    else snprintf(dir, 2, ".");
    int rc = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) rc = store_errf(e, -errno, "%s: %s", tmp, strerror(errno));
    else {
        const char *p = buf;
        size_t off = 0;
        while (!rc && off < len) {
            ssize_t k = write(fd, p + off, len - off);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) rc = store_errf(e, -errno, "%s: %s", tmp, strerror(errno));
            else off += (size_t)k;
        }
        if (!rc && fsync(fd) < 0) rc = store_errf(e, -errno, "%s: %s", tmp, strerror(errno));
        if (close(fd) < 0 && !rc) rc = store_errf(e, -errno, "%s: %s", tmp, strerror(errno));
        if (!rc && rename(tmp, path) < 0) rc = store_errf(e, -errno, "%s: %s", path, strerror(errno));
        if (rc) unlink(tmp);
    }
    if (!rc) {
        /* The rename is durable only once the folder is. */
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0) rc = store_errf(e, -errno, "%s: %s", dir, strerror(errno));
        if (dfd >= 0) close(dfd);
    }
    free(tmp);
    free(dir);
    return rc;
}

static int save_raw(const char *path, json_t *j, store_err *e)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) return store_errf(e, -ENOMEM, "out of memory");
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    if (!line) {
        free(text);
        return store_errf(e, -ENOMEM, "out of memory");
    }
    line[len] = '\n';
    int rc = api_file_replace(path, line, len + 1, e);
    free(line);
    return rc;
}

int api_token_add(const char *config, const char *role, const char *tenant, const char *name, char *token,
                  store_err *e)
{
    int r = api_role_parse(role);
    if (r < 0) return store_errf(e, -EINVAL, "a role is orchestrator, gc, support or admin, not '%s'", role);
    if (store_name_valid(name)) return store_errf(e, -EINVAL, "a token name is 1-128 of [A-Za-z0-9._-]");
    if (tenant && store_name_valid(tenant)) return store_errf(e, -EINVAL, "'%s' is not a tenant name", tenant);
    if (tenant && (r == API_ROLE_GC || r == API_ROLE_ADMIN))
        return store_errf(e, -EINVAL, "a %s token acts on the whole store: it cannot be bound to a tenant", role);
    json_t *j;
    int rc = load_raw(config, &j, e);
    if (rc) return rc;
    json_t *list = json_object_get(j, "tokens"), *x;
    size_t i;
    json_array_foreach(list, i, x)
        if (!strcmp(json_string_value(json_object_get(x, "name")) ?: "", name)) {
            json_decref(j);
            return store_errf(e, -EEXIST, "a token named '%s' exists (revoke it first)", name);
        }
    char hx[65], when[32];
    uint8_t h[32];
    if ((rc = api_token_make("cairn_", token, e))) {
        json_decref(j);
        return rc;
    }
    api_sha256(token, strlen(token), h);
    hex(h, 32, hx);
    store_rfc3339(store_now_ms(), when);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "name", name, "role", role, "sha256", hx, "created", when);
    if (o && tenant) json_object_set_new(o, "tenant", json_string(tenant));
    rc = o && !json_array_append_new(list, o) ? save_raw(config, j, e) : store_errf(e, -ENOMEM, "out of memory");
    json_decref(j);
    if (rc) memset(token, 0, API_TOKEN_MAX);
    return rc;
}

int api_token_list(const char *config, json_t **out, store_err *e)
{
    json_t *j;
    int rc = load_raw(config, &j, e);
    if (rc) return rc;
    json_t *list = json_array(), *x;
    size_t i;
    json_array_foreach(json_object_get(j, "tokens"), i, x) {
        json_t *o = json_object();
        const char *keys[] = {"name", "role", "tenant", "created"};
        for (int k = 0; k < 4; k++)
            if (json_object_get(x, keys[k])) json_object_set(o, keys[k], json_object_get(x, keys[k]));
        json_array_append_new(list, o);
    }
    json_decref(j);
    *out = list;
    return 0;
}

int api_token_revoke(const char *config, const char *name, store_err *e)
{
    json_t *j;
    int rc = load_raw(config, &j, e);
    if (rc) return rc;
    json_t *list = json_object_get(j, "tokens"), *x;
    size_t i, hit = (size_t)-1;
    json_array_foreach(list, i, x)
        if (!strcmp(json_string_value(json_object_get(x, "name")) ?: "", name)) hit = i;
    if (hit == (size_t)-1) rc = store_errf(e, -ENOENT, "no token named '%s'", name);
    else {
        json_array_remove(list, hit);
        rc = save_raw(config, j, e);
    }
    json_decref(j);
    return rc;
}
