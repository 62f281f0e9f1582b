/* The console's routes: its built-in files (console.h), with the security headers. The
 * files hold no data, so they need no token; every call the console makes goes to /v1
 * and is authorized there. */
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "api/console.h"
#include "api/routes.h"

const api_console_file *api_console_find(const char *name)
{
    if (!*name) name = "index.html";
    for (size_t i = 0; i < api_console_nfiles; i++)
        if (!strcmp(api_console_files[i].name, name)) return &api_console_files[i];
    return NULL;
}

/* Inline routes run on the loop thread, which owns the request: its headers may be set. */
static void headers(api_req *r)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(h, "Content-Security-Policy", API_CONSOLE_CSP);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
}

/* GET /console/ and /console/{file}: only names of the table match, and {id} never holds
 * a '/', so no path can climb out of it. */
void r_console(api_req *r)
{
    headers(r);
    const api_console_file *f = api_console_find(r->param);
    if (!f) return api_fail(r, 404, "not_found", "no console file named %s", r->param);
    if (!(r->raw = malloc(f->len ? f->len : 1))) return api_fail(r, 500, "internal", "out of memory");
    memcpy(r->raw, f->data, f->len);
    r->raw_len = f->len;
    r->raw_type = f->type;
    r->status = 200;
}

/* GET /console: the page's relative links need the trailing slash. */
void r_console_redirect(api_req *r)
{
    headers(r);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Location", "/console/");
    if (!(r->raw = malloc(1))) return api_fail(r, 500, "internal", "out of memory");
    r->raw_len = 0;
    r->raw_type = "text/plain; charset=utf-8";
    r->status = 301;
}
