/* libFuzzer target: the API's request parsing (api/request.c), as the server runs it on
 * what a client sends: the route and its {id} from METHOD and PATH, then the body and the
 * query string against that route's lists, then every typed read a route makes of them
 * (each body field as string, integer and boolean; each query name; the {id} as a name and
 * as a snapshot id). Input: METHOD NL PATH NL QUERY NL BODY (QUERY empty: none).
 * Seeds: tests/fuzz/corpus/request/. */
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

static char *line(const unsigned char **p, const unsigned char *end)
{
    const unsigned char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const unsigned char *stop = nl ? nl : end;
    char *s = strndup((const char *)*p, (size_t)(stop - *p));
    *p = nl ? nl + 1 : end;
    return s;
}

static void each(const char *list, void (*fn)(api_req *, const char *), api_req *r)
{
    char name[64];
    while (list && *list) {
        size_t l = strcspn(list, " ");
        if (l < sizeof name) {
            memcpy(name, list, l);
            name[l] = 0;
            fn(r, name);
        }
        list += l;
        list += strspn(list, " ");
    }
}

static void read_field(api_req *r, const char *k)
{
    const char *s = NULL;
    int b = 0;
    int64_t i = 0;
    if (api_body_str(r, k, 0, &s) == 0 && s && strlen(s) > json_string_length(json_object_get(r->body, k))) abort();
    api_body_int(r, k, &i);
    api_body_bool(r, k, &b);
}

static void read_param(api_req *r, const char *k)
{
    char *v = api_query(r, k);
    free(v);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const unsigned char *p = data, *end = data + size;
    char *method = line(&p, end), *path = line(&p, end), *query = line(&p, end);
    api_req *r = calloc(1, sizeof *r);
    if (!method || !path || !query || !r) abort();
    r->route_index = -1;
    if (api_request_route(r, method, path) == 0) {
        if (!r->route || strlen(r->param) >= sizeof r->param) abort();
        if (api_request_input(r, query[0] ? query : NULL, (const char *)p, (size_t)(end - p)) == 0) {
            if (r->body && !json_is_object(r->body)) abort();
            each(r->route->fields, read_field, r);
            each(r->route->query, read_param, r);
            /* The {id} as the routes read it: a name or id never holds a '/' or a "..". */
            if ((store_name_valid(r->param) == 0 || store_snapid_valid(r->param) == 0) &&
                (strchr(r->param, '/') || !strcmp(r->param, "..")))
                abort();
        } else if (r->status != 400 && r->status != 500) {
            abort();
        }
    } else if (r->status != 404 && r->status != 405) {
        abort();
    }
    api_request_free(r);
    json_decref(r->resp);
    free(r);
    free(method);
    free(path);
    free(query);
    return 0;
}
