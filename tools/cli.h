/* The `cairn` command-line front end: shared helpers of the command files.
 * Exit codes (documented in `cairn --help` and the README):
 *   0 success, 1 the operation failed (message on stderr), 2 bad usage. */
#ifndef CAIRN_CLI_H
#define CAIRN_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "store/events.h"
#include "store/store.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

typedef struct {
    const char *store;     /* --store, $CAIRN_STORE, ./cairn-data */
    int json;              /* --json */
} cli_common;

typedef struct {
    const char *name;
    const char *summary;
    const char *usage;     /* full help text of the command */
    int (*run)(int argc, char **argv);
} cli_command;

typedef struct {
    const char *name;      /* without the leading "--" */
    const char **value;    /* option with an argument */
    int *flag;             /* or a flag */
} cli_opt;

typedef struct {
    const char **v;        /* positional arguments (malloc'd array; strings are argv's) */
    size_t n;
} cli_args;

/* What a listing command's callback writes into: with --json, the entries' array (the
 * command's, printed or freed at the end); without, nothing (lines are printed as they come). */
typedef struct {
    json_t *list;
    int json;
} cli_listing;

/* Parses --name VALUE / --name=VALUE / --flag; --store and --json are always accepted.
 * Positional arguments go to pos (NULL: none allowed; "--" ends the options; free pos->v).
 * Returns 0 or EXIT_USAGE (after printing the command's usage). */
int cli_parse(const char *cmd, int argc, char **argv, cli_opt *opts, cli_common *c, cli_args *pos);

/* Prints "cairn CMD: message" to stderr; returns code. */
int cli_fail(int code, const char *cmd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints the command's usage to stderr with a reason; returns EXIT_USAGE. */
int cli_usage(const cli_command *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const cli_command *cli_find(const char *name);
void cli_human(uint64_t bytes, char out[32]);
/* Prints obj as one line of JSON on stdout and frees it. */
void cli_print_json(json_t *obj);
/* Opens the store in the given mode; prints the error and returns NULL on failure. */
store_t *cli_open(const char *cmd, const cli_common *c, int mode);
/* A progress line on stderr, only when stderr is a terminal. */
void cli_progress(void *arg, uint64_t done, uint64_t total);
void cli_progress_end(void);
double cli_seconds(void);
/* A decimal integer lo..hi: digits only (no sign, space, 0x, exponent, nan or trailing
 * junk). 0 or -1 (the caller reports a usage error naming the option and its bounds). */
int cli_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

int cmd_init(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_snapshots(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_refresh(int argc, char **argv);
int cmd_fsck(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_cat(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_rebuild(int argc, char **argv);
int cmd_policy(int argc, char **argv);
int cmd_touch(int argc, char **argv);
int cmd_tier(int argc, char **argv);
int cmd_sandboxes(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_pin(int argc, char **argv);
int cmd_unpin(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_uffd_serve(int argc, char **argv);
int cmd_mount(int argc, char **argv);
/* Appends an activity event (restore, rebuild) for sandbox; failures are warnings. */
void cli_activity(store_t *s, store_event_kind kind, const char *sandbox);

#endif
