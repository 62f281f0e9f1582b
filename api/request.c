/* What a client sends, parsed: the route and its {id}, the query string, the JSON body.
 * Everything here reads only bytes the client chose (no evhttp state, no store), so
 * tests/fuzz/fuzz_request.c drives it directly. Each check refuses rather than guesses: a
 * malformed query is never read as "no parameters", an unknown name or field is never
 * ignored (a misspelt option must not silently become the default). */
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

/* 1 when name is one of the space-separated names in list. */
static int listed(const char *list, const char *name, size_t len)
{
    while (list && *list) {
        size_t l = strcspn(list, " ");
        if (l == len && !strncmp(list, name, len)) return 1;
        list += l;
        list += strspn(list, " ");
    }
    return 0;
}

/* 1 when path fits pattern; its {id} and {share} (decoded: no NUL, no '/') into id and share. */
static int match(const char *pattern, const char *path, char *id, char *share, size_t cap)
{
    const char *p = pattern, *s = path;
    while (*p && *s) {
        int which = !strncmp(p, "{id}", 4) ? 1 : !strncmp(p, "{share}", 7) ? 2 : 0;
        if (which) {
            size_t n = strcspn(s, "/");
            if (n == 0) return 0;
            char *raw = strndup(s, n);
            size_t dl = 0;
            char *dec = raw ? evhttp_uridecode(raw, 0, &dl) : NULL;
            free(raw);
            int ok = dec && dl > 0 && dl < cap && !memchr(dec, 0, dl) && !strchr(dec, '/');
            if (ok) memcpy(which == 1 ? id : share, dec, dl + 1);
            free(dec);
            if (!ok) return 0;
            p += which == 1 ? 4 : 7;
            s += n;
            continue;
        }
        if (*p != *s) return 0;
        p++;
        s++;
    }
    return !*p && !*s;
}

int api_request_route(api_req *r, const char *method, const char *path)
{
    if (!strcmp(method, "HEAD")) method = "GET";      /* evhttp sends a HEAD's reply without its body */
    r->allow[0] = 0;
    for (int i = 0; i < api_nroutes; i++) {
        char param[sizeof r->param] = "", param2[sizeof r->param2] = "";
        if (!match(api_routes[i].path, path, param, param2, sizeof param)) continue;
        size_t al = strlen(r->allow);
        snprintf(r->allow + al, sizeof r->allow - al, "%s%s%s", al ? ", " : "", api_routes[i].method,
                 strcmp(api_routes[i].method, "GET") ? "" : ", HEAD");
        if (strcmp(api_routes[i].method, method)) continue;
        r->route = &api_routes[i];
        r->route_index = i;
        memcpy(r->param, param, sizeof param);
        memcpy(r->param2, param2, sizeof param2);
        return 0;
    }
    if (r->allow[0]) api_fail(r, 405, "method_not_allowed", "this path does not take that method");
    else api_fail(r, 404, "no_route", "no such route (see docs/api.yaml)");
    return -1;
}

void api_request_free(api_req *r)
{
    for (size_t i = 0; i < r->nquery; i++) {
        free(r->qkey[i]);
        free(r->qval[i]);
    }
    r->nquery = 0;
    json_decref(r->body);
    r->body = NULL;
}

/* The query string: NAME=VALUE pairs joined by '&', each name once and one the route
 * takes, nothing decoding to a NUL. '+' is a space, as in a form. -1 after api_fail. */
static int parse_query(api_req *r, const char *q)
{
    if (!q || !*q) return 0;
    const char *names = r->route->query, *unknown = NULL;
    for (const char *part = q;;) {
        size_t len = strcspn(part, "&");
        const char *eq = memchr(part, '=', len);
        if (len == 0) {
            api_fail(r, 400, "bad_request", "the query string has an empty parameter");
            return -1;
        }
        if (!eq || eq == part) {
            api_fail(r, 400, "bad_request", "query parameter \"%.*s\" is not NAME=VALUE", (int)(len < 64 ? len : 64), part);
            return -1;
        }
        if (r->nquery == API_QUERY_MAX) {
            api_fail(r, 400, "bad_request", "more than %d query parameters", API_QUERY_MAX);
            return -1;
        }
        char *kraw = strndup(part, (size_t)(eq - part)), *vraw = strndup(eq + 1, len - (size_t)(eq - part) - 1);
        size_t kl = 0, vl = 0;
        char *k = kraw ? evhttp_uridecode(kraw, 1, &kl) : NULL, *v = vraw ? evhttp_uridecode(vraw, 1, &vl) : NULL;
        free(kraw);
        free(vraw);
        const char *why = !k || !v ? NULL : strlen(k) != kl || strlen(v) != vl ? "holds a NUL byte" : NULL;
        for (size_t i = 0; k && v && !why && i < r->nquery; i++)
            if (!strcmp(r->qkey[i], k)) why = "is given twice";
        if (!k || !v || why) {
            if (!k || !v) api_fail(r, 500, "internal", "out of memory");
            else api_fail(r, 400, "bad_request", "query parameter \"%.64s\" %s", k, why);
            free(k);
            free(v);
            return -1;
        }
        if (!unknown && !listed(names, k, kl)) unknown = k;   /* said once the whole string parsed */
        r->qkey[r->nquery] = k;
        r->qval[r->nquery++] = v;
        if (!part[len]) break;
        part += len + 1;
        if (!*part) {
            api_fail(r, 400, "bad_request", "the query string has an empty parameter");
            return -1;
        }
    }
    if (unknown) {
        api_fail(r, 400, "unknown_parameter", "unknown query parameter \"%.64s\" (this route takes: %s)", unknown,
                 names ? names : "no query parameters");
        return -1;
    }
    return 0;
}

/* The body: a JSON object (no duplicate keys) whose every key is one the route reads. */
static int parse_body(api_req *r, const char *text, size_t len)
{
    json_error_t je;
    r->body = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!r->body) {
        api_fail(r, 400, "bad_json", "the body is not valid JSON: %s (at line %d)", je.text, je.line);
        return -1;
    }
    if (!json_is_object(r->body)) {
        api_fail(r, 400, "bad_json", "the body must be a JSON object");
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(r->body, k, v) {
        if (!listed(r->route->fields, k, strlen(k))) {
            api_fail(r, 400, "unknown_field", "unknown field \"%.128s\" (this route takes: %s)", k,
                     r->route->fields ? r->route->fields : "no body fields");
            return -1;
        }
    }
    return 0;
}

int api_request_input(api_req *r, const char *query, const char *body, size_t blen)
{
    if (blen && parse_body(r, body, blen)) return -1;
    return parse_query(r, query);
}

char *api_query(api_req *r, const char *key)
{
    for (size_t i = 0; i < r->nquery; i++)
        if (!strcmp(r->qkey[i], key)) return strdup(r->qval[i]);
    return NULL;
}

int api_body_str(api_req *r, const char *key, int required, const char **out)
{
    json_t *v = r->body ? json_object_get(r->body, key) : NULL;
    if (!v || json_is_null(v)) {
        if (!required) return 0;
        api_fail(r, 400, "missing_field", "the body needs \"%s\"", key);
        return -1;
    }
    if (!json_is_string(v) || memchr(json_string_value(v), 0, json_string_length(v))) {
        api_fail(r, 400, "wrong_type", "\"%s\" must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int api_body_bool(api_req *r, const char *key, int *out)
{
    json_t *v = r->body ? json_object_get(r->body, key) : NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) {
        api_fail(r, 400, "wrong_type", "\"%s\" must be true or false", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

int api_body_int(api_req *r, const char *key, int64_t *out)
{
    json_t *v = r->body ? json_object_get(r->body, key) : NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) {
        api_fail(r, 400, "wrong_type", "\"%s\" must be an integer", key);
        return -1;
    }
    *out = (int64_t)json_integer_value(v);
    return 0;
}
