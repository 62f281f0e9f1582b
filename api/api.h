/*
 * api: `cairn serve`, the HTTP API the orchestrator calls (libevent evhttp + jansson).
 *
 * The server holds no storage logic: each route calls the functions the CLI calls. It
 * keeps no store lock while idle: requests share one store handle that is opened for
 * them and closed when the last one ends (docs/api.md, "Locking"), so every CLI command
 * keeps working beside it and gc stays safe.
 *
 * Config: one JSON file, by default DIR/serve.json (api/config.c describes its keys);
 * tokens are stored as SHA-256 hashes only.
 */
#ifndef CAIRN_API_H
#define CAIRN_API_H

#include <jansson.h>

#include "store/store.h"

#define API_TOKEN_MAX 96          /* a token's text, with its NUL */

typedef struct {
    const char *store;            /* the store folder */
    const char *listen;           /* "HOST:PORT", or NULL: the config's, else 127.0.0.1:7420 */
    const char *config;           /* the config file, or NULL: STORE/serve.json */
    void (*ready)(void *arg, const char *addr);   /* called once listening; may be NULL */
    void *ready_arg;
} api_serve_opts;

/* Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish
 * (bounded by the config's shutdown_timeout_s) and returns 0; < 0 when it could not start
 * or requests had to be cut off at the deadline. */
int api_serve(const api_serve_opts *o, store_err *e);

/* The config file of a store when none is named (malloc'd). */
char *api_config_path(const char *store, const char *config);

/* Token management on the config file (written atomically, mode 0600). add prints nothing:
 * it fills token (API_TOKEN_MAX bytes) with the new secret, which is shown once and
 * stored only as its hash. role: orchestrator, gc, support, admin. tenant may be NULL. */
int api_token_add(const char *config, const char *role, const char *tenant, const char *name,
                  char *token, store_err *e);
/* *out: [{"name", "role", "tenant", "created"}] (owned by the caller). */
int api_token_list(const char *config, json_t **out, store_err *e);
/* -ENOENT when no token has that name. */
int api_token_revoke(const char *config, const char *name, store_err *e);

#endif
