/* Serving the console's built-in files (see console.h). */
#include "api/console.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <string.h>

const api_console_file *api_console_find(const char *name)
{
    if (!*name) name = "index.html";
    for (size_t i = 0; i < api_console_nfiles; i++)
        if (!strcmp(api_console_files[i].name, name)) return &api_console_files[i];
    return NULL;
}

static void security_headers(struct evkeyvalq *h)
{
    evhttp_add_header(h, "Content-Security-Policy", API_CONSOLE_CSP);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
    /* The files change with the binary: always revalidate, never serve a stale mix. */
    evhttp_add_header(h, "Cache-Control", "no-cache");
}

static void error_reply(struct evhttp_request *req, int status, const char *code, const char *msg)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    security_headers(h);
    evhttp_add_header(h, "Content-Type", "application/json");
    struct evbuffer *b = evbuffer_new();
    if (b && evbuffer_add_printf(b, "{\"error\": {\"code\": \"%s\", \"message\": \"%s\"}}\n", code, msg) < 0) {
        evbuffer_free(b);
        b = NULL;
    }
    evhttp_send_reply(req, status, code, b);
    if (b) evbuffer_free(b);
}

void api_console_reply(struct evhttp_request *req, const char *path)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        error_reply(req, 405, "method_not_allowed", "the console's files are read with GET");
        return;
    }
    if (!strcmp(path, "/console")) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        security_headers(h);
        evhttp_add_header(h, "Location", "/console/");
        evhttp_send_reply(req, 301, "Moved Permanently", NULL);
        return;
    }
    /* Only names of the table match: no folders, so no path can climb out of it. */
    const api_console_file *f = strncmp(path, "/console/", 9) ? NULL : api_console_find(path + 9);
    if (!f) {
        error_reply(req, 404, "not_found", "no such console file");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    security_headers(h);
    evhttp_add_header(h, "Content-Type", f->type);
    struct evbuffer *b = evbuffer_new();
    /* The table is static: the buffer refers to it rather than copying it. */
    if (!b || evbuffer_add_reference(b, f->data, f->len, NULL, NULL)) {
        if (b) evbuffer_free(b);
        error_reply(req, 500, "internal", "out of memory");
        return;
    }
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}
