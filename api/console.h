/* The support console: static files (api/console/) built into the binary by
 * tools/embed.sh ($(BUILD)/api/console_files.c) and served by `cairn serve` under
 * /console/ (routes in api/routes.c, docs/console.md).
 *
 * The table is generated, constant and lives for the whole process; nothing here
 * allocates or keeps state, so any thread may call these at any time. */
#ifndef CAIRN_API_CONSOLE_H
#define CAIRN_API_CONSOLE_H

#include <stddef.h>

typedef struct {
    const char *name;          /* "index.html": a file name, no folder */
    const char *type;          /* Content-Type */
    const unsigned char *data;
    size_t len;
} api_console_file;

extern const api_console_file api_console_files[];
extern const size_t api_console_nfiles;

/* The file named exactly name ("" means index.html); NULL when none. */
const api_console_file *api_console_find(const char *name);

/* Sent with every console response: scripts and styles only from this origin (no inline
 * script or style anywhere in the console), images also from blob: (previews), no
 * framing, no plugins, no <base>, forms only to this origin. */
#define API_CONSOLE_CSP                                                                            \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "             \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "                \
    "frame-ancestors 'none'"

#endif
