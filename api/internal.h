/*
 * api/ internals (not for other modules).
 *   config.c    serve.json: load, tokens (hashes), roles, token add/list/revoke
 *   storeref.c  the one store handle requests share, opened and closed around them
 *   pool.c      worker threads: short (metadata) and long (snapshot, restore, ...) jobs
 *   server.c    evhttp, request ids, auth, errors, replies, streams, shutdown
 *   request.c   what the client sent, parsed: route and {id}, query, body (fuzzed)
 *   limits.c    bodies and headers over the limits, answered before evhttp reads them
 *   metrics.c   counters and histograms, Prometheus text
 *   paths.c     confinement of request paths to the configured roots
 *   shares.c    share tokens (DIR/shares.log)
 *   r_*.c       the routes
 * Threads: the event loop thread owns evhttp and every struct evhttp_request; workers
 * only fill an api_req's result and hand it back through server.c's done queue.
 */
#ifndef CAIRN_API_INTERNAL_H
#define CAIRN_API_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api/api.h"

/* ---- config -------------------------------------------------------------------------- */
enum { API_ROLE_ORCH = 1, API_ROLE_GC = 2, API_ROLE_SUPPORT = 4, API_ROLE_ADMIN = 8, API_ROLE_SHARE = 16 };
int api_role_parse(const char *s);        /* -1 if unknown */
const char *api_role_name(int role);

typedef struct {
    char name[STORE_NAME_MAX + 1];
    int role;
    char tenant[STORE_NAME_MAX + 1];      /* "" = every tenant */
    char sandbox[STORE_NAME_MAX + 1];     /* share tokens: the sandbox shared */
    int64_t expires_ms;                   /* share tokens */
    /* share tokens: when it was made and the sandbox's newest snapshot then ("" and 0 in
     * records from before they were kept): a delete after either revokes the share. */
    int64_t created_ms;
    char at[STORE_SNAPID_LEN];
    uint8_t hash[32];
} api_token;

typedef struct {
    char listen[160];
    char **snapshot_roots, **restore_roots;   /* realpath'd */
    char mount[1024];                         /* a `cairn mount` of the store, "" if none */
    size_t nsnapshot_roots, nrestore_roots;
    long max_body, max_headers;
    /* Bytes of downloads spooled at once (0: no cap), of them one tenant's (0: no cap of its
     * own), and the free space a spool must leave in the store's file system; -1: derived
     * from the file system's size when a spool is checked (server.c spool_limits). */
    long max_spool, max_spool_tenant, spool_reserve;
    int request_timeout_s, shutdown_timeout_s, max_long_jobs, workers;
    int max_page_servers, page_server_wait_s;   /* uffd wakes: how many at once; how long
                                                   each waits for its VM */
    int max_shares;                           /* live shares one tenant may hold */
    api_token *tokens;
    size_t ntokens;
} api_config;

int api_config_load(const char *path, api_config *c, store_err *e);
void api_config_free(api_config *c);
void api_sha256(const void *p, size_t n, uint8_t out[32]);
/* A new random token with the prefix ("cairn_", "cairnshare_") into out (API_TOKEN_MAX). */
int api_token_make(const char *prefix, char *out, store_err *e);
/* Constant-time search of tokens for the hash of text; NULL when none matches. */
const api_token *api_token_find(const api_token *t, size_t n, const char *text);

/* Replaces path by buf: written beside (path.tmp), fsynced, renamed, the folder fsynced; a
 * reader sees the old file or the new one. */
int api_file_replace(const char *path, const void *buf, size_t len, store_err *e);

/* ---- store handle ------------------------------------------------------------------- */
/* A read view of the index and manifests (storeref.c says which handle and when it is
 * replaced): a lock-free STORE_PEEK handle of its own, or (a W-view) the kept writer
 * handle, borrowed. Refcounted: a replaced view closes when its last user puts it. */
#define API_VIEW_CACHE 64
typedef struct api_view {
    store_t *s;               /* a W-view's is the storeref's writer handle: not closed by it */
    int wview;                /* 1: a W-view, which pins that handle open while it lives */
    int refs;                 /* users, + 1 while it is the current view */
    struct timespec stamp;    /* manifests/'s mtime, taken before the open */
    int settled;              /* the stamp was old enough at open that a later change moves it */
    uint64_t gen;             /* 1, 2, ... in open order: what a cache built from it is keyed by */
    int pending;              /* a commit was between its manifest and its index record */
    unsigned long long wal_no, wal_size;   /* the index's newest log file then (before the open) */
    /* Answers read from this view alone, by key: "s:ID", GET /v1/snapshots/{id} (a manifest
     * never changes, and one dropped changes manifests/, which retires this view and the
     * cache with it); "b:SANDBOX", the snapshot list of GET /v1/sandboxes/{id}. */
    pthread_mutex_t cache_mu;
    struct {
        char id[STORE_NAME_MAX + 3];
        char tenant[STORE_NAME_MAX + 1];
        json_t *j;
        struct api_text *text;   /* or the answer as JSON text (api_view_keep_text) */
    } cache[API_VIEW_CACHE];
    unsigned cache_next;
    struct api_view *next;    /* on the retired list (storeref.c) */
} api_view;

typedef struct {
    pthread_mutex_t mu, write_mu;
    pthread_cond_t cv;
    const char *dir;
    store_t *s;
    int mode, refs, busy, writer_active, writers_waiting;
    int64_t opened_ms;
    /* The writer handle kept between ingests (storeref.c): its keeper thread lets it go
     * when idle, when someone waits for the lock (yielding), or when it is spoiled. */
    int keep_off, keeper_on, quit, yielding, spoiled, wait_fd;
    int64_t idle_ms, yield_ms, keep_ms;
    pthread_t keeper;
    pthread_cond_t kcv;       /* CLOCK_MONOTONIC: the keeper's tick */
    api_view *view;           /* the current PEEK view, NULL before the first */
    int view_opening, view_off;
    /* The current W-view (NULL when none is offered) and the W-views alive (current or
     * still used), each of which keeps s open; closing: the keeper lets s go once none is
     * alive and no one uses s, and takes no new user meanwhile; reopen: it then opens the
     * PEEK view that calls wait for (view_opening is set). */
    api_view *wview;
    int wpins, closing, reopen;
    int trim_due;             /* memory was freed by a job: the keeper trims the heap */
    uint64_t view_gen;
    /* While this server's writer job holds the store's lock (api_view_write_begin..end):
     * manifests/'s mtime when it began. No one else can commit meanwhile, so a view with
     * that stamp lacks only the job's own, unacknowledged changes. */
    int own_writing;
    struct timespec own_base;
    api_view *retired;        /* replaced PEEK views nobody uses, closed by the next opener
                               * or the keeper */
} api_storeref;

/* API_VIEW: not a store mode; api_store(r, API_VIEW) gives the read view (metadata routes:
 * no pack reads, nothing written). */
enum { API_VIEW = 100 };

void api_storeref_init(api_storeref *r, const char *dir);
void api_storeref_destroy(api_storeref *r);
/* STORE_READ or STORE_WRITE (one writer at a time; readers then share its handle). */
int api_store_get(api_storeref *r, int mode, store_t **out, store_err *e);
void api_store_put(api_storeref *r, int mode);
/* The writer handle is not to be used again (an ingest failed on it): closed once its
 * users are done, so the next ingest opens afresh (and finishes what the open finishes). */
void api_store_spoil(api_storeref *r);
/* The current read view: the W-view while the writer is kept, else the PEEK view (replaced
 * first when the store changed since it opened); *out is NULL with 0 returned when views
 * are off for this store (an S3 node): use STORE_READ. Put it soon: while a W-view has
 * users the keeper cannot let the store's lock go. */
int api_view_get(api_storeref *r, api_view **out, store_err *e);
void api_view_put(api_storeref *r, api_view *v);
/* Once a writer job of this server has its handle (the store's lock held from there to its
 * api_store_put, which makes its changes visible to the views before it returns: call it
 * before the answer). So a call that starts after the answer finds its view fresh, and
 * calls during the job keep the view they have instead of waiting. */
void api_view_write_begin(api_storeref *r);
/* The cached answer for key (a copy, the caller's) and its tenant, or NULL. */
json_t *api_view_cached(api_view *v, const char *key, char tenant[STORE_NAME_MAX + 1]);
/* Keeps a copy of j as the answer for key (no-op when out of memory: only speed is lost). */
void api_view_keep(api_view *v, const char *key, const char *tenant, const json_t *j);
/* Immutable text shared by reference (atomic count): a large answer (a sandbox's snapshot
 * list) is built once per view and then sent by every call without a copy, the reply's
 * evbuffer holding a reference until its bytes left (server.c). Copying it per call (three
 * times: out of the cache, into the body, into the evbuffer) made the server's RSS follow
 * the list's length times the calls in flight. */
typedef struct api_text {
    atomic_int refs;
    size_t len;
    char data[];
} api_text;
api_text *api_text_new(const char *s, size_t len);   /* a copy, refs 1; NULL out of memory */
api_text *api_text_ref(api_text *t);
void api_text_unref(api_text *t);                    /* NULL is fine */
/* The same for an answer kept as JSON text: a reference for the caller, or NULL. */
api_text *api_view_cached_text(api_view *v, const char *key);
void api_view_keep_text(api_view *v, const char *key, api_text *t);   /* takes its own reference */

/* ---- worker pools ------------------------------------------------------------------- */
typedef struct api_job {
    void (*fn)(struct api_job *j);
    struct api_job *next;
} api_job;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    api_job *head, *tail;
    pthread_t *threads;
    int nthreads, queued, running, max_pending, stop, nice;
} api_pool;

/* nice: the threads' nice value (long jobs run below the event loop and metadata calls, so
 * an ingest's compression does not delay them; the store's own threads, made by a job,
 * inherit it). */
int api_pool_start(api_pool *p, int nthreads, int max_pending, int nice, store_err *e);
#define API_LONG_NICE 10
/* -EBUSY when running + queued would pass max_pending. */
int api_pool_submit(api_pool *p, api_job *j);
void api_pool_stop(api_pool *p);       /* runs what is queued, then joins */

/* ---- metrics ------------------------------------------------------------------------ */
void api_metrics_init(int nroutes);
void api_metrics_request(int route, int status, double seconds);
void api_metrics_add(const char *counter, uint64_t v);   /* ingested, restored, gc_runs, gc_freed */
/* Appends the Prometheus text; route names by index. */
struct evbuffer;
void api_metrics_text(struct evbuffer *b, const char *const *route_names, int nroutes);

/* ---- paths -------------------------------------------------------------------------- */
/* 0 when path (absolute) is an existing regular file below one of roots, reached without
 * leaving them (*resolved: its real path, malloc'd); -EACCES (message in e) when not,
 * -ENOENT when it does not exist below them, -EINVAL when relative or not a file. */
int api_path_input(char *const *roots, size_t n, const char *path, char **resolved, store_err *e);
/* 0 when path names a place below one of roots whose parent folder exists and which is
 * not a symlink (*resolved: parent's real path + name, malloc'd); -EACCES otherwise. */
int api_path_output(char *const *roots, size_t n, const char *path, char **resolved, store_err *e);

/* The same, opened once beneath the root (openat2 RESOLVE_BENEATH; paths.c says why): *fd
 * the input file, read-only; or *dirfd the output's folder (read-only, a directory), *name
 * its last component and *shown its real path for replies (both malloc'd). The caller
 * works through the descriptor and closes it. */
int api_path_open_input(char *const *roots, size_t n, const char *path, int *fd, store_err *e);
int api_path_open_output(char *const *roots, size_t n, const char *path, int *dirfd, char **name, char **shown,
                         store_err *e);

/* Replaces each whole /proc/self/fd/N name proc in msg (cap bytes) by shown: an error
 * from work done by a descriptor's /proc name names the path the client gave. */
void api_path_unproc(char *msg, size_t cap, const char *proc, const char *shown);

/* ---- framing and size limits (limits.c) ---------------------------------------------
 * Answers, in the JSON error shape, every request evhttp would refuse with its own HTML
 * page (a head over max_headers: 431; a body over max_body, by its length or its chunks:
 * 413; bad framing: 400; an unknown Expect: 417; an unknown method: 501) before evhttp
 * reads it. rid: the request id for the answer (given the client's X-Request-Id or NULL:
 * 0, or -1 when the client's is not valid); log: one log line and the metrics. One server
 * per process. */
struct evhttp;
typedef struct {
    long max_body, max_headers;
    int (*rid)(void *arg, const char *given, char *out, size_t cap);
    void (*log)(void *arg, const char *rid, int status, const char *why);
    void *arg;
} api_limits;
void api_limits_install(struct evhttp *http, const api_limits *l);
/* The answer to req is written (its on_complete): a refusal behind it may go out now. */
struct evhttp_request;
void api_limits_answered(struct evhttp_request *req);
void api_limits_free(void);

/* ---- requests ----------------------------------------------------------------------- */
typedef struct api_server api_server;
typedef struct api_req api_req;

enum { API_RUN_INLINE, API_RUN_SHORT, API_RUN_LONG };

typedef struct {
    const char *method;        /* "GET", ... */
    const char *path;          /* "/v1/snapshots/{id}/restore" */
    int roles;                 /* 0: no token; API_ROLE_SHARE: a share token */
    int run;                   /* API_RUN_* */
    void (*fn)(api_req *r);
    /* The body fields the route reads, space separated (NULL: none). server.c refuses a
     * body with any other key before the route runs, so a misspelt option (dry-run for
     * dry_run) is a 400 and never silently the default. */
    const char *fields;
    /* The query parameters the route reads, space separated (NULL: none); any other name
     * is a 400, as for body fields. */
    const char *query;
} api_route;

#define API_QUERY_MAX 16

struct api_req {
    api_job job;               /* first: the pool's view */
    api_server *srv;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    const api_route *route;
    int route_index;
    char rid[72];
    char param[STORE_NAME_MAX + 64]; /* the {id} of the path, decoded */
    char param2[STORE_NAME_MAX + 64];/* the {share} of the path, decoded */
    char *qkey[API_QUERY_MAX], *qval[API_QUERY_MAX];   /* the query, decoded (owned) */
    size_t nquery;
    json_t *body;              /* the request body (an object) or NULL */
    char allow[64];            /* a 405's Allow: the methods the path takes */
    api_token tok;             /* the caller */
    double t0;
    api_view *view;            /* the view api_store(r, API_VIEW) gave, until done */
    int view_locked;           /* views off: API_VIEW fell back to STORE_READ */
    int gone;                  /* the connection closed (loop thread only) */
    /* result (worker thread, then loop) */
    int status;
    json_t *resp;
    char code[32];
    char msg[700];
    int retry_after;
    char *raw;                 /* a body not from resp (metrics), malloc'd, with raw_type */
    size_t raw_len;
    api_text *raw_ref;         /* sent after raw without a copy, then raw_tail; ours to unref */
    const char *raw_tail;
    const char *raw_type;
    /* streams (server.c): the route writes the body into a spool file (pipe_wr, the same
     * descriptor as spool); the loop sends it from spool at the client's pace */
    int stream, pipe_wr, spool, done, stream_rc, in_flight, read_err;
    int over_cap;              /* refused: a spool limit (server.c SPOOL_OVER_*) was met */
    struct api_req *spool_prev, *spool_next;   /* the server's list of spools (loop thread) */
    int spool_linked;
    off_t spool_off;
    off_t spool_seen;          /* the spool's size as counted in the server's total */
    const char *ctype;
    struct event *spool_ev;     /* a timer: more of the spool may have been written */
    struct api_req *next;
};

/* Result helpers (worker side). */
void api_ok(api_req *r, int status, json_t *body);          /* steals body */
void api_fail(api_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Maps a store error code to a status: -ENOENT 404, -EINVAL 400, -EACCES/-EPERM 403,
 * -EEXIST/-EBUSY 409, else 500. */
void api_fail_store(api_req *r, int rc, const store_err *e);
/* Parsing (request.c), in this order: the route by method and path (HEAD is GET): 0, or
 * -1 after api_fail 404 no_route / 405 (r->allow then lists the path's methods); then the
 * body (JSON text of blen bytes, not NUL-terminated; blen 0: none) and the raw query
 * string (NULL: none): 0, or -1 after api_fail 400. api_request_free frees what they kept. */
int api_request_route(api_req *r, const char *method, const char *path);
int api_request_input(api_req *r, const char *query, const char *body, size_t blen);
void api_request_free(api_req *r);
/* A query parameter (decoded, malloc'd) or NULL. */
char *api_query(api_req *r, const char *key);

/* Body fields: 0 ok (absent is ok when !required: *out untouched), -1 after api_fail 400. */
int api_body_str(api_req *r, const char *key, int required, const char **out);
int api_body_bool(api_req *r, const char *key, int *out);
int api_body_int(api_req *r, const char *key, int64_t *out);

/* Streams: after begin, write the body to r->pipe_wr; the route returns with
 * r->stream_rc set and, when not 0, r->msg (the client gets that error in JSON: 507 for
 * -ENOSPC/-EDQUOT, else 500; nothing of the body was sent). pipe_wr is an unnamed file in
 * the store's folder, not a pipe: the route writes at the store's speed and ends, so a
 * slow client holds neither the store's handle nor a worker; server.c sends the status
 * and the file once the route ended. */
int api_stream_begin(api_req *r, const char *content_type);

/* The store handle for a route; on failure api_fail 500/503 has been called. */
store_t *api_store(api_req *r, int mode);
void api_store_done(api_req *r, int mode);
/* Before api_store_done(r, STORE_WRITE) when the ingest failed: its handle is not kept. */
void api_store_failed(api_req *r);
const api_config *api_cfg(api_req *r);     /* the config as loaded at start */
const char *api_store_dir(api_req *r);
/* 0 when the caller may see tenant's things; else api_fail 404 and -1. */
int api_tenant_ok(api_req *r, const char *tenant, const char *what);
const char *api_actor(api_req *r);

/* ---- share tokens (shares.c) ---------------------------------------------------------
 * The live shares (not expired, not revoked) as api_tokens (role API_ROLE_SHARE, name
 * "share:BY"), all under mu. A share's id is the first API_SHARE_ID_LEN hex digits of its
 * token's SHA-256: it names the share in lists and revocations, never lets anyone in. */
#define API_SHARE_ID_LEN 16
typedef struct {
    pthread_mutex_t mu;
    char path[4200];
    api_token *v;
    size_t n, cap;
    int64_t torn_at;           /* the file's bytes up to a torn line (cut before an append), or -1 */
} api_shares;

/* Reads STORE/shares.log (expired lines are dropped from it); a damaged line is -EINVAL. */
int api_shares_open(api_shares *sh, const char *store, store_err *e);
void api_shares_close(api_shares *sh);
/* A new share: token (API_TOKEN_MAX) is its secret, id (API_SHARE_ID_LEN + 1) its id.
 * -EDQUOT when tenant holds max live shares already (each costs memory, a line of the
 * file and time at every share's check: a tenant must not grow them without bound). */
int api_share_add(api_shares *sh, const char *tenant, const char *sandbox, const char *at, int64_t expires_ms,
                  const char *by, size_t max, char *token, char *id, store_err *e);
/* 0 and *out when text is a live share's token. */
int api_share_find(api_shares *sh, const char *text, api_token *out);
/* The live shares of tenant's sandbox (*out malloc'd). */
int api_share_list(api_shares *sh, const char *tenant, const char *sandbox, api_token **out, size_t *n, store_err *e);
/* Revokes the share id (its id or its whole SHA-256 in hex) of tenant's sandbox, or every
 * share of it when id is NULL; durable (the file rewritten) before it returns 0. *count:
 * how many live shares went. -ENOENT when id names no live share of that sandbox. */
int api_share_revoke(api_shares *sh, const char *tenant, const char *sandbox, const char *id, size_t *count,
                     store_err *e);
void api_share_id(const api_token *t, char *out);
api_shares *api_shares_of(api_req *r);

/* Routes. */
extern const api_route api_routes[];
extern const int api_nroutes;

#endif
