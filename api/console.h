/* The support console: static files (api/console/) built into the binary by
 * tools/embed.sh and served by `cairn serve` under /console/.
 *
 * The table is generated, constant and lives for the whole process; nothing here
 * allocates or keeps state, so any thread may call these at any time. */
#ifndef CAIRN_API_CONSOLE_H
#define CAIRN_API_CONSOLE_H

#include <stddef.h>

struct evhttp_request;

typedef struct {
    const char *name;          /* "index.html": a file name, no folder */
    const char *type;          /* Content-Type */
    const unsigned char *data;
    size_t len;
} api_console_file;

extern const api_console_file api_console_files[];
extern const size_t api_console_nfiles;

/* The file for a path below /console/ ("" means index.html); NULL when none. */
const api_console_file *api_console_find(const char *name);

/* The headers every console response carries: a strict CSP (scripts only from this
 * origin, no inline script or style, no framing), no MIME sniffing, no Referer. */
#define API_CONSOLE_CSP                                                                            \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "             \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "                \
    "frame-ancestors 'none'"

/* Answers a request whose path is /console or starts with /console/ (the caller's
 * router decides that): GET and HEAD get the file with the headers above, /console
 * is redirected to /console/, anything else is a JSON error (404, 405). The request
 * is answered before this returns. The console needs no token: its files hold no
 * data, and every call it makes to /v1 is authorized there. */
void api_console_reply(struct evhttp_request *req, const char *path);

#endif
