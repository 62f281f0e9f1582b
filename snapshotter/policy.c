/* File classes: which files of a sandbox matter.
 *
 * Order of precedence, first match wins:
 *   1. explicit classes sent with the snapshot (`--classes FILE`: "class<TAB>path" lines;
 *      a directory's class applies to everything below it),
 *   2. rules of `--policy FILE`, then of the store's `policy` file (if present),
 *   3. the built-in defaults below (docs/classes.md explains them).
 * A rule is "GLOB CLASS". In a glob, `*` and `?` stay inside one path component, `**`
 * crosses components, and a glob ending in "/" "**" also matches the folder itself.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshotter/snapshotter.h"

static const char *default_rules =
    /* secrets first: never restored, never shown without --include-secrets */
    "/home/*/.ssh/**                     secret\n"
    "/root/.ssh/**                       secret\n"
    "/home/*/.aws/**                     secret\n"
    "/home/*/.azure/**                   secret\n"
    "/home/*/.config/gcloud/**           secret\n"
    "/home/*/.kube/**                    secret\n"
    "/home/*/.docker/config.json         secret\n"
    "/home/*/.netrc                      secret\n"
    "/home/*/.git-credentials            secret\n"
    "/home/*/.npmrc                      secret\n"
    "/home/*/.pypirc                     secret\n"
    "/home/*/.gnupg/**                   secret\n"
    "**/.env                             secret\n"
    "**/.env.*                           secret\n"
    "**/*.pem                            secret\n"
    "**/*.key.pem                        secret\n"
    "**/id_rsa                           secret\n"
    "**/id_ed25519                       secret\n"
    "**/id_ecdsa                         secret\n"
    /* caches and build outputs: regenerable */
    "**/node_modules/**                  cache\n"
    "**/__pycache__/**                   cache\n"
    "**/.venv/**                         cache\n"
    "**/venv/**                          cache\n"
    "**/.cache/**                        cache\n"
    "**/.npm/**                          cache\n"
    "**/.yarn/cache/**                   cache\n"
    "**/.pnpm-store/**                   cache\n"
    "**/.cargo/registry/**               cache\n"
    "**/.m2/repository/**                cache\n"
    "**/.gradle/caches/**                cache\n"
    "**/.next/**                         cache\n"
    "**/.pytest_cache/**                 cache\n"
    "**/.mypy_cache/**                   cache\n"
    "**/target/debug/**                  cache\n"
    "**/target/release/**                cache\n"
    "/var/cache/**                       cache\n"
    "/var/lib/apt/lists/**               cache\n"
    /* scratch */
    "/tmp/**                             temp\n"
    "/var/tmp/**                         temp\n"
    "**/*.swp                            temp\n"
    "**/*.swo                            temp\n"
    "**/*~                               temp\n"
    "**/.#*                              temp\n"
    "**/*.tmp                            temp\n"
    /* what the user and the agent care about */
    "/home/ubuntu/upload/**              upload\n"
    "/home/ubuntu/uploads/**             upload\n"
    "/home/ubuntu/output/**              artifact\n"
    "/home/ubuntu/outputs/**             artifact\n"
    "/home/ubuntu/artifacts/**           artifact\n"
    "/home/ubuntu/project/**             project\n"
    "/home/ubuntu/projects/**            project\n"
    "/home/ubuntu/slides/**              project\n"
    "/home/ubuntu/**/*.pptx              project\n"
    "/home/ubuntu/**/*.key               project\n"
    "/home/ubuntu/**/*.odp               project\n";

/* Most rules are one of a few literal shapes, matched with a string comparison; the
 * rest go through the general matcher. */
enum { SHAPE_GLOB, SHAPE_EXACT, SHAPE_UNDER, SHAPE_NAME, SHAPE_DIRNAME };

typedef struct {
    char *glob;
    uint8_t cls;
    uint8_t shape;          /* EXACT "/a/b"; UNDER "/a/b/" "**"; NAME "**" "/n"; DIRNAME "**" "/n/" "**" */
    char *lit;              /* the literal part ("/a/b" or "n") */
    size_t litlen;
    char *must;             /* SHAPE_GLOB: its longest literal run, which a match must contain */
    size_t mustlen;
} rule;

static int literal(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '*' || s[i] == '?' || s[i] == '/') return 0;
    return 1;
}

static void shape_of(rule *r)
{
    const char *g = r->glob;
    size_t n = strlen(g);
    r->shape = SHAPE_GLOB;
    if (!strpbrk(g, "*?")) {
        r->shape = SHAPE_EXACT;
        r->lit = strdup(g);
    } else if (n > 3 && g[0] == '/' && !strcmp(g + n - 3, "/**") && !strpbrk(g, "?") &&
               !memchr(g, '*', n - 3)) {
        r->shape = SHAPE_UNDER;
        r->lit = strndup(g, n - 3);
    } else if (n > 6 && !strncmp(g, "**/", 3) && !strcmp(g + n - 3, "/**") && literal(g + 3, n - 6)) {
        r->shape = SHAPE_DIRNAME;
        r->lit = strndup(g + 3, n - 6);
    } else if (n > 3 && !strncmp(g, "**/", 3) && literal(g + 3, n - 3)) {
        r->shape = SHAPE_NAME;
        r->lit = strdup(g + 3);
    }
    if (r->shape != SHAPE_GLOB && !r->lit) r->shape = SHAPE_GLOB;
    r->litlen = r->lit ? strlen(r->lit) : 0;
    /* Every match of a glob contains its literal runs: the longest one rejects most paths
     * with one memmem before the backtracking matcher runs. */
    for (const char *q = g; *q;) {
        size_t run = strcspn(q, "*?");
        if (run > r->mustlen) {
            r->must = (char *)q;
            r->mustlen = run;
        }
        q += run;
        q += strspn(q, "*?");
    }
}

typedef struct {
    char *path;
    size_t len;
    uint8_t cls;
} explicit_class;

struct snap_policy {
    rule *rules;
    size_t nrules, rcap;
    explicit_class *ex;
    size_t nex, excap;
};

const char *snap_policy_defaults(void) { return default_rules; }

static int add_rules(snap_policy *p, const char *text, const char *origin, store_err *e)
{
    int lineno = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        lineno++;
        char buf[1024];
        if (len >= sizeof buf) return store_errf(e, -EINVAL, "%s:%d: line too long", origin, lineno);
        memcpy(buf, line, len);
        buf[len] = 0;
        line += len + (end ? 1 : 0);
        /* A comment starts a line or follows a blank: "**" "/.#*" is a glob, not a comment. */
        for (char *h = buf; (h = strchr(h, '#')); h++)
            if (h == buf || h[-1] == ' ' || h[-1] == '\t') {
                *h = 0;
                break;
            }
        char glob[1024], cls[64], extra[8];
        int n = sscanf(buf, "%1023s %63s %7s", glob, cls, extra);
        if (n <= 0) continue;
        int c = n == 2 ? store_class_parse(cls) : -1;
        if (n != 2 || c < 0)
            return store_errf(e, -EINVAL, "%s:%d: expected \"GLOB CLASS\" with CLASS one of artifact, "
                              "upload, project, secret, cache, temp, runtime", origin, lineno);
        if (p->nrules == p->rcap) {
            p->rcap = p->rcap ? p->rcap * 2 : 64;
            rule *nr = realloc(p->rules, p->rcap * sizeof *nr);
            if (!nr) return store_errf(e, -ENOMEM, "out of memory");
            p->rules = nr;
        }
        rule *r = &p->rules[p->nrules++];
        memset(r, 0, sizeof *r);
        r->glob = strdup(glob);
        r->cls = (uint8_t)c;
        if (r->glob) shape_of(r);
    }
    return 0;
}

static int read_text(const char *path, char **out, store_err *e)
{
    FILE *f = fopen(path, "r");
    if (!f) return store_errf(e, -errno, "%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    for (size_t r; b && (r = fread(b + n, 1, cap - n - 1, f)) > 0;) {
        n += r;
        if (n + 1 == cap) {
            char *nb = cap < (16 << 20) ? realloc(b, cap *= 2) : NULL;
            if (!nb) {
                free(b);
                b = NULL;
            } else b = nb;
        }
    }
    fclose(f);
    if (!b) return store_errf(e, -EFBIG, "%s: too large or out of memory", path);
    b[n] = 0;
    *out = b;
    return 0;
}

static int add_explicit(snap_policy *p, const char *text, const char *origin, store_err *e)
{
    int lineno = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *next = line + len + (end ? 1 : 0);
        lineno++;
        if (len == 0 || line[0] == '#') {
            line = next;
            continue;
        }
        const char *tab = memchr(line, '\t', len);
        char cls[64];
        size_t cl = tab ? (size_t)(tab - line) : 0;
        if (!tab || cl >= sizeof cls || tab[1] != '/')
            return store_errf(e, -EINVAL, "%s:%d: expected \"CLASS<TAB>/absolute/path\"", origin, lineno);
        memcpy(cls, line, cl);
        cls[cl] = 0;
        int c = store_class_parse(cls);
        if (c < 0) return store_errf(e, -EINVAL, "%s:%d: unknown class '%s'", origin, lineno, cls);
        if (p->nex == p->excap) {
            p->excap = p->excap ? p->excap * 2 : 64;
            explicit_class *ne = realloc(p->ex, p->excap * sizeof *ne);
            if (!ne) return store_errf(e, -ENOMEM, "out of memory");
            p->ex = ne;
        }
        size_t pl = len - cl - 1;
        while (pl > 1 && tab[pl] == '/') pl--;       /* "/a/b/" names the folder /a/b */
        explicit_class *x = &p->ex[p->nex++];
        x->path = strndup(tab + 1, pl);
        x->len = pl;
        x->cls = (uint8_t)c;
        line = next;
    }
    return 0;
}

void snap_policy_free(snap_policy *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nrules; i++) {
        free(p->rules[i].glob);
        free(p->rules[i].lit);
    }
    for (size_t i = 0; i < p->nex; i++) free(p->ex[i].path);
    free(p->rules);
    free(p->ex);
    free(p);
}

int snap_policy_add_classes(snap_policy *p, const char *text, const char *origin, store_err *e)
{
    return add_explicit(p, text, origin, e);
}

int snap_policy_load(const char *store_dir, const char *policy_file, const char *classes_file,
                     snap_policy **out, store_err *e)
{
    *out = NULL;
    snap_policy *p = calloc(1, sizeof *p);
    if (!p) return store_errf(e, -ENOMEM, "out of memory");
    char *text = NULL;
    int rc = 0;
    if (classes_file && !(rc = read_text(classes_file, &text, e))) {
        rc = add_explicit(p, text, classes_file, e);
        free(text);
    }
    if (!rc && policy_file && !(rc = read_text(policy_file, &text, e))) {
        rc = add_rules(p, text, policy_file, e);
        free(text);
    }
    if (!rc && store_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/policy", store_dir);
        store_err ignore;
        if (read_text(path, &text, &ignore) == 0) {
            rc = add_rules(p, text, path, e);
            free(text);
        }
    }
    if (!rc) rc = add_rules(p, default_rules, "built-in policy", e);
    if (rc) {
        snap_policy_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* Glob match over raw bytes: '*' and '?' stop at '/', "**" crosses it. */
static int match(const char *g, const char *s, const char *end)
{
    while (*g) {
        if (g[0] == '*' && g[1] == '*') {
            g += 2;
            if (*g == '/') {
                /* "**" + "/" also matches no component at all. */
                if (match(g + 1, s, end)) return 1;
            }
            for (const char *t = s; t <= end; t++)
                if (match(g, t, end)) return 1;
            return 0;
        }
        if (*g == '*') {
            g++;
            for (const char *t = s; t <= end; t++) {
                if (match(g, t, end)) return 1;
                if (t < end && *t == '/') break;
            }
            return 0;
        }
        if (s >= end) return 0;
        if (*g == '?' ? *s == '/' : *g != *s) return 0;
        g++;
        s++;
    }
    return s == end;
}

int snap_glob_match(const char *glob, const char *path, size_t len)
{
    if (match(glob, path, path + len)) return 1;
    size_t gl = strlen(glob);
    if (gl > 3 && !strcmp(glob + gl - 3, "/**")) {          /* a folder glob matches the folder */
        char *tmp = strndup(glob, gl - 3);
        int m = tmp && match(tmp, path, path + len);
        free(tmp);
        return m;
    }
    return 0;
}

/* Does component `name` (n bytes) occur in path as a whole component? dir: followed by '/'. */
static int has_component(const char *path, size_t len, const char *name, size_t n, int dir)
{
    for (const char *q = path; (q = memchr(q, '/', (size_t)(path + len - q))); q++) {
        const char *c = q + 1;
        if ((size_t)(path + len - c) < n || memcmp(c, name, n)) continue;
        const char *after = c + n;
        if (dir ? (after < path + len && *after == '/') : after == path + len) return 1;
    }
    return 0;
}

static int rule_match(const rule *r, const char *path, size_t len)
{
    switch (r->shape) {
    case SHAPE_EXACT:
        return len == r->litlen && !memcmp(path, r->lit, len);
    case SHAPE_UNDER:        /* the folder itself and everything below it */
        return len >= r->litlen && !memcmp(path, r->lit, r->litlen) &&
               (len == r->litlen || path[r->litlen] == '/');
    case SHAPE_NAME:         /* a last component named lit, at any depth */
        return has_component(path, len, r->lit, r->litlen, 0);
    case SHAPE_DIRNAME:      /* below a component named lit, or that folder itself */
        return has_component(path, len, r->lit, r->litlen, 1) || has_component(path, len, r->lit, r->litlen, 0);
    default:
        if (r->mustlen && !memmem(path, len, r->must, r->mustlen)) return 0;
        return snap_glob_match(r->glob, path, len);
    }
}

store_class snap_policy_classify(const snap_policy *p, const char *path, size_t len)
{
    /* The longest explicit prefix wins among explicit classes. */
    const explicit_class *best = NULL;
    for (size_t i = 0; i < p->nex; i++) {
        const explicit_class *x = &p->ex[i];
        int under = x->len <= len && !memcmp(x->path, path, x->len) &&
                    (x->len == len || path[x->len] == '/' || (x->len == 1 && x->path[0] == '/'));
        if (under && (!best || x->len > best->len)) best = x;
    }
    if (best) return (store_class)best->cls;
    for (size_t i = 0; i < p->nrules; i++)
        if (rule_match(&p->rules[i], path, len)) return (store_class)p->rules[i].cls;
    return STORE_CLASS_RUNTIME;
}

int snap_policy_apply(const snap_policy *p, store_findex *fi)
{
    for (size_t i = 0; i < fi->n; i++)
        fi->e[i].cls = (uint8_t)snap_policy_classify(p, fi->e[i].path, fi->e[i].path_len);
    /* The rules class names; a secret is an inode: every name of it, everything below a
     * secret folder and every file sharing a secret's blocks is secret too. */
    return store_findex_mark_secrets(fi, NULL);
}
