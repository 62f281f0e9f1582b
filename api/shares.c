/* Share tokens: DIR/shares.log, one JSON object per line {sha256, tenant, sandbox, expires,
 * by, created, at} (created and at absent in records written before they were kept). A new
 * share is appended and fsynced before its token is given out. A revocation rewrites the
 * file without it (and without expired shares): written beside, fsynced, renamed, the
 * folder fsynced, all under the shares' lock, so a crash leaves the old file or the new one
 * and a revoked share never comes back. Only the server writes the file; the memory copy
 * is what requests are checked against, the file what a restart reads. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/internal.h"
#include "store/toolbox.h"

/* Expired lines kept in the file before an add rewrites it without them. */
#define SHARES_EXPIRED_MAX 64

static int push(api_shares *sh, const api_token *t)
{
    if (sh->n == sh->cap) {
        size_t cap = sh->cap ? 2 * sh->cap : 16;
        api_token *n = realloc(sh->v, cap * sizeof *n);
        if (!n) return -ENOMEM;
        sh->v = n;
        sh->cap = cap;
    }
    sh->v[sh->n++] = *t;
    return 0;
}

static int unhex32(const char *s, uint8_t *out)
{
    if (!s || strlen(s) != 64) return -1;
    for (int i = 0; i < 64; i++) {
        int c = s[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return -1;
        if (i % 2) out[i / 2] |= (uint8_t)v;
        else out[i / 2] = (uint8_t)(v << 4);
    }
    return 0;
}

static void hex32(const uint8_t *h, char out[65])
{
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

void api_share_id(const api_token *t, char *out)
{
    char hx[65];
    hex32(t->hash, hx);
    memcpy(out, hx, API_SHARE_ID_LEN);
    out[API_SHARE_ID_LEN] = 0;
}

/* The one encoder of a shares.log line (with its newline; malloc'd). */
static char *encode(const api_token *t)
{
    char hx[65];
    hex32(t->hash, hx);
    const char *by = strncmp(t->name, "share:", 6) ? t->name : t->name + 6;
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:s}", "sha256", hx, "tenant", t->tenant, "sandbox", t->sandbox,
                          "expires", (json_int_t)t->expires_ms, "by", by);
    if (j && t->created_ms) json_object_set_new(j, "created", json_integer((json_int_t)t->created_ms));
    if (j && t->at[0]) json_object_set_new(j, "at", json_string(t->at));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char *line = text ? malloc(strlen(text) + 2) : NULL;
    if (line) sprintf(line, "%s\n", text);
    free(text);
    return line;
}

/* Rewrites the file with the shares of v that have not expired. Under sh->mu. */
static int rewrite(api_shares *sh, const api_token *v, size_t n, store_err *e)
{
    int64_t now = store_now_ms();
    size_t len = 0, cap = 4096;
    char *all = malloc(cap);
    for (size_t i = 0; all && i < n; i++) {
        if (v[i].expires_ms <= now) continue;
        char *line = encode(&v[i]);
        size_t l = line ? strlen(line) : 0;
        if (line && len + l + 1 > cap) {
            char *b = realloc(all, (cap = 2 * (len + l + 1)));
            if (!b) free(all);
            all = b;
        }
        if (!line || !all) {
            free(line);
            free(all);
            return store_errf(e, -ENOMEM, "out of memory");
        }
        memcpy(all + len, line, l);
        len += l;
        free(line);
    }
    if (!all) return store_errf(e, -ENOMEM, "out of memory");
    int rc = api_file_replace(sh->path, all, len, e);
    free(all);
    if (!rc) sh->torn_at = -1;
    return rc;
}

int api_shares_open(api_shares *sh, const char *store, store_err *e)
{
    memset(sh, 0, sizeof *sh);
    sh->torn_at = -1;
    pthread_mutex_init(&sh->mu, NULL);
    if (snprintf(sh->path, sizeof sh->path, "%s/shares.log", store) >= (int)sizeof sh->path)
        return store_errf(e, -ENAMETOOLONG, "store path too long");
    FILE *f = fopen(sh->path, "re");
    if (!f) return errno == ENOENT ? 0 : store_errf(e, -errno, "%s: %s", sh->path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, lines = 0;
    ssize_t n;
    int rc = 0, lineno = 0;
    int64_t now = store_now_ms(), good = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        if (n > 0 && line[n - 1] != '\n') sh->torn_at = good;   /* the last line only */
        good += n;
        lineno++;
        lines++;
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        api_token t = {.role = API_ROLE_SHARE};
        const char *sb = json_string_value(json_object_get(j, "sandbox"));
        const char *tn = json_string_value(json_object_get(j, "tenant"));
        const char *by = json_string_value(json_object_get(j, "by"));
        json_t *ex = json_object_get(j, "expires");
        const char *at = json_string_value(json_object_get(j, "at"));
        if (!sb || !tn || !json_is_integer(ex) || unhex32(json_string_value(json_object_get(j, "sha256")), t.hash) ||
            (at && store_snapid_valid(at))) {
            /* A torn last line (crash mid-append) is not a share; anything else is damage. */
            if (n > 0 && line[n - 1] != '\n') fprintf(stderr, "cairn serve: %s: ignoring a torn last line\n", sh->path);
            else rc = store_errf(e, -EINVAL, "%s: line %d is not a share record", sh->path, lineno);
        } else if (json_integer_value(ex) > now) {
            snprintf(t.sandbox, sizeof t.sandbox, "%s", sb);
            snprintf(t.tenant, sizeof t.tenant, "%s", tn);
            snprintf(t.name, sizeof t.name, "share:%s", by ? by : "?");
            t.expires_ms = (int64_t)json_integer_value(ex);
            json_t *cr = json_object_get(j, "created");
            if (json_is_integer(cr)) t.created_ms = (int64_t)json_integer_value(cr);
            if (at) snprintf(t.at, sizeof t.at, "%s", at);
            if (push(sh, &t)) rc = store_errf(e, -ENOMEM, "out of memory");
        }
        json_decref(j);
    }
    if (!rc && ferror(f)) rc = store_errf(e, -EIO, "%s: read error", sh->path);
    free(line);
    fclose(f);
    if (!rc && lines > sh->n) {
        /* Expired shares (and a torn line) go now; failing that only keeps dead lines (a
         * torn one is cut before the next append). */
        store_err we;
        if (rewrite(sh, sh->v, sh->n, &we))
            fprintf(stderr, "cairn serve: warning: %s keeps %zu expired lines: %s\n", sh->path, lines - sh->n, we.msg);
    }
    return rc;
}

void api_shares_close(api_shares *sh)
{
    free(sh->v);
    sh->v = NULL;
    sh->n = sh->cap = 0;
    pthread_mutex_destroy(&sh->mu);
}

int api_share_add(api_shares *sh, const char *tenant, const char *sandbox, const char *at, int64_t expires_ms,
                  const char *by, size_t max, char *token, char *id, store_err *e)
{
    int rc = api_token_make("cairnshare_", token, e);
    if (rc) return rc;
    api_token t = {.role = API_ROLE_SHARE, .expires_ms = expires_ms, .created_ms = store_now_ms()};
    api_sha256(token, strlen(token), t.hash);
    snprintf(t.sandbox, sizeof t.sandbox, "%s", sandbox);
    snprintf(t.tenant, sizeof t.tenant, "%s", tenant);
    snprintf(t.name, sizeof t.name, "share:%s", by);
    snprintf(t.at, sizeof t.at, "%s", at);
    api_share_id(&t, id);
    char *line = encode(&t);
    if (!line) return store_errf(e, -ENOMEM, "out of memory");
    pthread_mutex_lock(&sh->mu);
    size_t held = 0;
    int64_t t0 = store_now_ms();
    for (size_t i = 0; i < sh->n; i++) held += sh->v[i].expires_ms > t0 && !strcmp(sh->v[i].tenant, tenant);
    int fd = -1;
    if (held >= max)
        rc = store_errf(e, -EDQUOT, "tenant %s holds %zu live shares, the most limits.max_shares_per_tenant allows: "
                        "revoke some first", tenant, held);
    else if ((fd = open(sh->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        rc = store_errf(e, -errno, "%s: %s", sh->path, strerror(errno));
    else {
        /* A short write (a full disk) must not stay: the next line would be glued to the
         * torn one and the file would no longer load (the server could not restart). */
        size_t len = strlen(line);
        if (sh->torn_at >= 0 && ftruncate(fd, sh->torn_at) == 0) sh->torn_at = -1;
        off_t end = sh->torn_at >= 0 ? -1 : lseek(fd, 0, SEEK_END);
        ssize_t w = end < 0 ? -1 : write(fd, line, len);
        int err = end < 0 || w < 0 ? errno : w != (ssize_t)len ? ENOSPC : 0;
        if (!err && fsync(fd) < 0) err = errno;
        if (err) {
            rc = store_errf(e, -err, "%s: cannot append: %s", sh->path, strerror(err));
            if (end >= 0 && w > 0 && ftruncate(fd, end) < 0) sh->torn_at = end;   /* cut at the next add */
        }
        if (close(fd) < 0 && !rc) rc = store_errf(e, -errno, "%s: %s", sh->path, strerror(errno));
    }
    if (!rc && push(sh, &t)) rc = store_errf(e, -ENOMEM, "out of memory");
    if (!rc) {
        /* Expired shares leave the file once there are enough of them to be worth a rewrite. */
        int64_t now = store_now_ms();
        size_t expired = 0;
        for (size_t i = 0; i < sh->n; i++) expired += sh->v[i].expires_ms <= now;
        store_err we;
        if (expired > SHARES_EXPIRED_MAX) {
            if (rewrite(sh, sh->v, sh->n, &we))
                fprintf(stderr, "cairn serve: warning: %s keeps %zu expired lines: %s\n", sh->path, expired, we.msg);
            else {
                size_t k = 0;
                for (size_t i = 0; i < sh->n; i++)
                    if (sh->v[i].expires_ms > now) sh->v[k++] = sh->v[i];
                sh->n = k;
            }
        }
    }
    pthread_mutex_unlock(&sh->mu);
    free(line);
    return rc;
}

int api_share_find(api_shares *sh, const char *text, api_token *out)
{
    if (strncmp(text, "cairnshare_", 11)) return -1;
    pthread_mutex_lock(&sh->mu);
    const api_token *t = api_token_find(sh->v, sh->n, text);
    int rc = t && t->expires_ms > store_now_ms() ? 0 : -1;
    if (!rc) *out = *t;
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int api_share_list(api_shares *sh, const char *tenant, const char *sandbox, api_token **out, size_t *n, store_err *e)
{
    pthread_mutex_lock(&sh->mu);
    api_token *v = malloc((sh->n ? sh->n : 1) * sizeof *v);
    size_t k = 0;
    int64_t now = store_now_ms();
    for (size_t i = 0; v && i < sh->n; i++)
        if (sh->v[i].expires_ms > now && !strcmp(sh->v[i].tenant, tenant) && !strcmp(sh->v[i].sandbox, sandbox))
            v[k++] = sh->v[i];
    pthread_mutex_unlock(&sh->mu);
    if (!v) return store_errf(e, -ENOMEM, "out of memory");
    *out = v;
    *n = k;
    return 0;
}

/* 1 when t is a share of tenant/sandbox named by id (its id, or the whole sha256 in hex;
 * NULL: every one). */
static int picked(const api_token *t, const char *tenant, const char *sandbox, const char *id)
{
    if (strcmp(t->tenant, tenant) || strcmp(t->sandbox, sandbox)) return 0;
    if (!id) return 1;
    char hx[65];
    hex32(t->hash, hx);
    size_t l = strlen(id);
    return (l == API_SHARE_ID_LEN || l == 64) && !strncmp(hx, id, l);
}

int api_share_revoke(api_shares *sh, const char *tenant, const char *sandbox, const char *id, size_t *count,
                     store_err *e)
{
    pthread_mutex_lock(&sh->mu);
    api_token *keep = malloc((sh->n ? sh->n : 1) * sizeof *keep);
    size_t k = 0, gone = 0;
    int rc = 0;
    int64_t now = store_now_ms();
    for (size_t i = 0; keep && i < sh->n; i++) {
        if (!picked(&sh->v[i], tenant, sandbox, id)) keep[k++] = sh->v[i];
        else gone += sh->v[i].expires_ms > now;
    }
    if (!keep) rc = store_errf(e, -ENOMEM, "out of memory");
    else if (k == sh->n) rc = id ? store_errf(e, -ENOENT, "no share %s of sandbox %s", id, sandbox) : 0;
    else if (!(rc = rewrite(sh, keep, k, e))) {
        /* Only once the file no longer holds them: a revocation is durable or not done. */
        free(sh->v);
        sh->v = keep;
        sh->cap = sh->n ? sh->n : 1;
        sh->n = k;
        keep = NULL;
    }
    pthread_mutex_unlock(&sh->mu);
    free(keep);
    if (!rc && count) *count = gone;
    if (!rc && id && !gone) rc = store_errf(e, -ENOENT, "no share %s of sandbox %s", id, sandbox);
    return rc;
}
