/* The HTTP side: evhttp on one event loop thread; routes run on worker threads and hand
 * their result back through a done queue (evhttp is not thread-safe, so only the loop
 * thread ever touches a struct evhttp_request). */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "api/internal.h"
#include "gc/gc.h"
#include "store/toolbox.h"

typedef struct done_node {
    api_req *r;
    int phase;                 /* 0: finished; 1: stream starts */
    struct done_node *next;
} done_node;

struct api_server {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    const char *store;
    char *config_path;
    api_config cfg;
    struct timespec cfg_mtime;
    off_t cfg_size;
    int cfg_broken;          /* the config as it is now cannot be read: no token is honoured */
    api_storeref ref;
    api_pool short_pool, long_pool;
    pthread_mutex_t done_mu;
    done_node *done_head, *done_tail;
    struct event *done_ev, *term_ev, *int_ev, *deadline_ev;
    int stopping, inflight, cut;
    uint64_t rid_seq;
    char rid_salt[9];
    api_shares shares;
    /* the sandbox records (api_sandboxes) and what they were read from */
    pthread_mutex_t sb_mu;
    gc_sandbox *sb;
    size_t nsb;
    int sb_valid;
    struct timespec sb_ev_mtim, sb_man_mtim;
    off_t sb_ev_size;
    uint64_t sb_view;          /* the read view it was read from, 0: a locked handle */
    off_t spool_bytes;         /* the spools of the downloads in flight (loop thread) */
    api_req *spools;           /* those downloads, to sum one tenant's (loop thread) */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- result helpers (any thread, on the request's own result fields) ----------------- */

void api_ok(api_req *r, int status, json_t *body)
{
    r->status = status;
    json_decref(r->resp);
    r->resp = body;
}

void api_fail(api_req *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
    snprintf(r->code, sizeof r->code, "%s", code);
    r->status = status;
    json_decref(r->resp);
    r->resp = NULL;
}

void api_fail_store(api_req *r, int rc, const store_err *e)
{
    switch (rc) {
    case -ENOENT: api_fail(r, 404, "not_found", "%s", e->msg); break;
    case -EINVAL: api_fail(r, 400, "invalid", "%s", e->msg); break;
    case -EACCES: case -EPERM: api_fail(r, 403, "forbidden", "%s", e->msg); break;
    case -EEXIST: case -EBUSY: api_fail(r, 409, "conflict", "%s", e->msg); break;
    default: api_fail(r, 500, "internal", "%s", e->msg); break;
    }
}

store_t *api_store(api_req *r, int mode)
{
    store_t *s = NULL;
    store_err e;
    if (mode == API_VIEW) {
        api_view *v = NULL;
        if (api_view_get(&r->srv->ref, &v, &e)) {
            api_fail(r, 500, "store_unavailable", "%s", e.msg);
            return NULL;
        }
        if (v) {
            r->view = v;
            return v->s;
        }
        r->view_locked = 1;
        mode = STORE_READ;
    }
    int rc = api_store_get(&r->srv->ref, mode, &s, &e);
    if (rc) {
        api_fail(r, 500, "store_unavailable", "%s", e.msg);
        return NULL;
    }
    if (mode == STORE_WRITE) api_view_write_begin(&r->srv->ref);
    return s;
}

void api_store_done(api_req *r, int mode)
{
    if (mode == API_VIEW && r->view) {
        api_view_put(&r->srv->ref, r->view);
        r->view = NULL;
        return;
    }
    if (mode == API_VIEW) {
        r->view_locked = 0;
        mode = STORE_READ;
    }
    api_store_put(&r->srv->ref, mode);
}

void api_store_failed(api_req *r) { api_store_spoil(&r->srv->ref); }

const api_config *api_cfg(api_req *r) { return &r->srv->cfg; }
const char *api_store_dir(api_req *r) { return r->srv->store; }
api_shares *api_shares_of(api_req *r) { return &r->srv->shares; }

int api_tenant_ok(api_req *r, const char *tenant, const char *what)
{
    if (!r->tok.tenant[0] || !strcmp(r->tok.tenant, tenant)) return 0;
    api_fail(r, 404, "not_found", "no %s %s", what, r->param);
    return -1;
}

const char *api_actor(api_req *r) { return r->tok.name; }

/* ---- done queue: workers -> loop ------------------------------------------------------ */

static void post(api_req *r, int phase)
{
    done_node *n = malloc(sizeof *n);
    api_server *srv = r->srv;
    pthread_mutex_lock(&srv->done_mu);
    if (n) {
        n->r = r;
        n->phase = phase;
        n->next = NULL;
        if (srv->done_tail) srv->done_tail->next = n;
        else srv->done_head = n;
        srv->done_tail = n;
    }
    pthread_mutex_unlock(&srv->done_mu);
    /* Out of memory here would strand the request: wait for memory rather than lose it. */
    while (!n) {
        usleep(10000);
        n = malloc(sizeof *n);
        if (n) {
            free(n);
            post(r, phase);
            return;
        }
    }
    event_active(srv->done_ev, EV_READ, 0);
}

/* ---- replies (loop thread) ------------------------------------------------------------ */

static void log_line(api_req *r, int status)
{
    double ms = (now_s() - r->t0) * 1000;
    fprintf(stderr, "cairn serve: %s %s%s%s %d %.1fms rid=%s actor=%s%s%s\n",
            r->route ? r->route->method : "-", r->route ? r->route->path : "-", r->param[0] ? " id=" : "",
            r->param, status, ms, r->rid, r->tok.name[0] ? r->tok.name : "-", status >= 500 ? " error: " : "",
            status >= 500 ? r->msg : "");
}

static void free_req(api_req *r)
{
    json_decref(r->resp);
    api_request_free(r);
    free(r->raw);
    api_text_unref(r->raw_ref);
    if (r->spool_ev) event_free(r->spool_ev);
    if (r->spool >= 0) close(r->spool);
    r->srv->spool_bytes -= r->spool_seen;
    if (r->spool_linked) {
        if (r->spool_prev) r->spool_prev->spool_next = r->spool_next;
        else r->srv->spools = r->spool_next;
        if (r->spool_next) r->spool_next->spool_prev = r->spool_prev;
    }
    free(r);
}

static void finished(api_server *srv)
{
    srv->inflight--;
    if (srv->stopping && srv->inflight == 0) event_base_loopexit(srv->base, NULL);
}

/* Counted out only once the reply's bytes left: a shutdown must not cut a reply that was
 * queued but not yet written. */
static void on_sent(struct evhttp_request *req, void *arg)
{
    api_limits_answered(req);
    finished(arg);
}

static void text_sent(const void *data, size_t len, void *t)
{
    (void)data;
    (void)len;
    api_text_unref(t);
}

static void set_common_headers(api_req *r, const char *ctype)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
    evhttp_add_header(h, "X-Request-Id", r->rid);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
}

/* evhttp 2.1 sends a HEAD reply's body too (evhttp_make_header), which a client that
 * keeps the connection reads as the start of the next reply: a HEAD gets the GET's
 * Content-Length and no body. */
static void send_reply(api_req *r, int status, const char *reason, struct evbuffer *b)
{
    if (b && evhttp_request_get_command(r->req) == EVHTTP_REQ_HEAD) {
        char len[32];
        snprintf(len, sizeof len, "%zu", evbuffer_get_length(b));
        if (evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Length", len))
            fprintf(stderr, "cairn serve: rid=%s: out of memory for a HEAD's Content-Length\n", r->rid);
        b = NULL;
    }
    evhttp_send_reply(r->req, status, reason, b);
}

static void reply(api_req *r)
{
    int status = r->status ? r->status : 500;
    int async = !r->gone;
    if (!r->gone) evhttp_connection_set_closecb(r->evcon, NULL, NULL);
    if (async) evhttp_request_set_on_complete_cb(r->req, on_sent, r->srv);
    struct evbuffer *b = evbuffer_new();
    json_t *body = r->resp;
    if (status < 400 && r->raw) {
        int ok = b && !evbuffer_add(b, r->raw, r->raw_len);
        if (ok && r->raw_ref) {
            /* The evbuffer holds its own reference until the bytes left. */
            api_text *t = api_text_ref(r->raw_ref);
            if (evbuffer_add_reference(b, t->data, t->len, text_sent, t)) {
                api_text_unref(t);
                ok = !evbuffer_add(b, t->data, t->len);
            }
        }
        if (ok && r->raw_tail) ok = !evbuffer_add(b, r->raw_tail, strlen(r->raw_tail));
        if (!ok) {
            /* A body cut short would read as a whole one: the error instead. */
            if (b) evbuffer_drain(b, evbuffer_get_length(b));
            status = 500;
            snprintf(r->code, sizeof r->code, "internal");
            snprintf(r->msg, sizeof r->msg, "out of memory for the reply's body (request %s)", r->rid);
            goto error;
        }
        set_common_headers(r, r->raw_type);
        send_reply(r, status, "OK", b);
        if (b) evbuffer_free(b);
        api_metrics_request(r->route_index, status, now_s() - r->t0);
        log_line(r, status);
        if (!async) finished(r->srv);
        return;
    }
error:
    if (status >= 400 || !body) {
        if (status < 400) snprintf(r->code, sizeof r->code, "internal"), status = 500;
        body = json_pack("{s:{s:s, s:s}}", "error", "code", r->code[0] ? r->code : "internal", "message",
                         r->msg[0] ? r->msg : "no result");
        json_decref(r->resp);
        r->resp = body;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (b && text) {
        evbuffer_add(b, text, strlen(text));
        evbuffer_add(b, "\n", 1);
    }
    free(text);
    set_common_headers(r, "application/json");
    if (status == 429 || status == 503 || (status == 507 && r->retry_after > 0)) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->retry_after > 0 ? r->retry_after : 1);
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", ra);
    }
    static const struct { int s; const char *t; } reasons[] = {
        {200, "OK"}, {201, "Created"}, {400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"},
        {404, "Not Found"}, {405, "Method Not Allowed"}, {409, "Conflict"}, {410, "Gone"},
        {413, "Payload Too Large"}, {429, "Too Many Requests"}, {500, "Internal Server Error"},
        {503, "Service Unavailable"}, {507, "Insufficient Storage"}};
    const char *reason = "";
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++)
        if (reasons[i].s == status) reason = reasons[i].t;
    if (status == 401) evhttp_add_header(evhttp_request_get_output_headers(r->req), "WWW-Authenticate", "Bearer");
    /* A request whose connection died is detached by evhttp: sending frees it. */
    send_reply(r, status, reason, b);
    if (b) evbuffer_free(b);
    api_metrics_request(r->route_index, status, now_s() - r->t0);
    log_line(r, status);
    if (!async) finished(r->srv);
}

/* A stream nobody will read (loop thread, after its phase 1, before its route ended): put
 * /dev/full under the route's descriptor, so its next write fails and its worker is free
 * at once, as a pipe's EPIPE did. If /dev/full cannot be opened the route writes to the
 * end, which costs only time. */
static void stop_route(api_req *r)
{
    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (full < 0) return;
    if (dup3(full, r->spool, O_CLOEXEC) < 0)
        fprintf(stderr, "cairn serve: rid=%s: dup3: %s\n", r->rid, strerror(errno));
    close(full);
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    api_req *r = arg;
    r->gone = 1;
    if (!r->spool_ev) return;  /* not streaming yet: freed when the route ends (drain_done) */
    if (!r->done) stop_route(r);
    event_del(r->spool_ev);
    /* The route may have ended already (done), waiting for this client: finish from the
     * loop, not inside evhttp's close callback. */
    static const struct timeval now = {0, 0};
    if (r->done) evtimer_add(r->spool_ev, &now);
}

/* ---- streams --------------------------------------------------------------------------
 * Why a spool file and not a pipe to the worker: with a pipe, a client reading slowly
 * kept its worker writing slowly, and the worker held the store's read handle (so no
 * ingest could take the write lock, and no new reader joined the handle once it was old)
 * and a long-job slot (four slow downloads made every ingest 429). The worker now writes
 * the body into an unnamed file (O_TMPFILE in the store's private folder: freed by the
 * kernel however we stop) as fast as the store reads, and ends; the loop sends the file
 * one chunk per chunk the client took, so memory stays one chunk per stream whatever the
 * client's pace. The status goes out only once the route ended, the body whole in the
 * spool: a body that could not be read or spooled (a full disk) is a JSON error, never a
 * 200 cut short, and the 200 carries the body's Content-Length. What can still fail after
 * the 200 (reading the spool back) cuts the connection. */

#define STREAM_CHUNK (256 * 1024)
#define SPOOL_POLL_US 2000     /* how soon to look again when the sender caught up */
#define SPOOL_WATCH_US 20000   /* how often a growing spool is held to max_spool_bytes */

/* Counts r's spool at its size now in the server's total. A spool the route was stopped
 * from is /dev/full now (stop_route), size 0: its file is gone already. */
static void spool_count(api_req *r)
{
    struct stat sb;
    if (fstat(r->spool, &sb) < 0) {
        fprintf(stderr, "cairn serve: rid=%s: fstat of the spool: %s (not counted again)\n", r->rid, strerror(errno));
        return;
    }
    r->srv->spool_bytes += sb.st_size - r->spool_seen;
    r->spool_seen = sb.st_size;
}

/* Why a spool was refused (r->over_cap). */
enum { SPOOL_OK, SPOOL_OVER_TOTAL, SPOOL_OVER_TENANT, SPOOL_OVER_RESERVE };

/* The limits a spool is held to, as configured or (-1) derived from the size of the store's
 * file system: the spools may take 1/8 of it (64 MiB..4 GiB), one tenant's half of that,
 * and must leave 1/32 of it (4 MiB..1 GiB) free. Why: spools and ingests share that file
 * system; without a cap, slow readers of one share link could hold it full and every
 * tenant's snapshots would fail (ENOSPC). The reserve also covers what the store keeps free
 * for its index (store/space.c: its size plus 4-8 MiB) on a file system that is filling
 * for other reasons. */
typedef struct {
    long total, tenant, reserve;
    uint64_t avail;            /* free now, to an unprivileged writer */
} spool_limits;

static long clamp_l(uint64_t v, long lo, long hi)
{
    return v < (uint64_t)lo ? lo : v > (uint64_t)hi ? hi : (long)v;
}

static int spool_limits_get(api_req *r, spool_limits *l)
{
    const api_config *c = &r->srv->cfg;
    struct statvfs v;
    if (fstatvfs(r->spool, &v) < 0) return -errno;
    uint64_t size = (uint64_t)v.f_blocks * v.f_frsize;
    l->avail = (uint64_t)v.f_bavail * v.f_frsize;
    l->total = c->max_spool >= 0 ? c->max_spool : clamp_l(size / 8, 64L << 20, 4L << 30);
    l->tenant = c->max_spool_tenant >= 0 ? c->max_spool_tenant : l->total / 2;
    l->reserve = c->spool_reserve >= 0 ? c->spool_reserve : clamp_l(size / 32, 4L << 20, 1L << 30);
    return 0;
}

/* The same bucket of the per-tenant share: a tenant's tokens and its sandboxes' share
 * links together; a token bound to no tenant (support, admin) alone. */
static int same_bucket(const api_token *a, const api_token *b)
{
    if (a->tenant[0] || b->tenant[0]) return !strcmp(a->tenant, b->tenant);
    return !strcmp(a->name, b->name);
}

/* SPOOL_OK, or which limit r's spool (counted at its size now) meets. */
static int spool_over(api_req *r)
{
    spool_count(r);
    spool_limits l = {0, 0, 0, 0};
    int rc = spool_limits_get(r, &l);
    if (rc) {
        /* Unchecked, not refused: the write itself still fails on a full disk (507). */
        fprintf(stderr, "cairn serve: rid=%s: fstatvfs of the spool: %s (limits not checked)\n", r->rid,
                strerror(-rc));
        return SPOOL_OK;
    }
    if (l.total > 0 && r->srv->spool_bytes > l.total) return SPOOL_OVER_TOTAL;
    if (l.tenant > 0) {
        off_t mine = 0;
        for (api_req *o = r->srv->spools; o; o = o->spool_next)
            if (same_bucket(&o->tok, &r->tok)) mine += o->spool_seen;
        if (mine > l.tenant) return SPOOL_OVER_TENANT;
    }
    if (l.avail < (uint64_t)l.reserve) return SPOOL_OVER_RESERVE;
    return SPOOL_OK;
}

static void stream_finish(api_req *r)
{
    api_server *srv = r->srv;
    int async = 0;
    int rc = r->stream_rc ? r->stream_rc : r->read_err;
    if (r->read_err && !r->stream_rc) snprintf(r->msg, sizeof r->msg, "reading the spool: %s", strerror(-r->read_err));
    if (!r->gone) {
        evhttp_connection_set_closecb(r->evcon, NULL, NULL);
        if (rc == 0) {
            async = 1;
            evhttp_request_set_on_complete_cb(r->req, on_sent, srv);
            evhttp_send_reply_end(r->req);
        } else {
            evhttp_connection_free(r->evcon);    /* a cut body, never a complete-looking one */
        }
    } else {
        /* evhttp detached the request from its dead connection and left it to us: with no
         * connection, ending the reply only frees it (it leaked here before). */
        evhttp_send_reply_end(r->req);
    }
    api_metrics_request(r->route_index, rc ? 500 : 200, now_s() - r->t0);
    log_line(r, rc ? 500 : 200);
    if (rc) fprintf(stderr, "cairn serve: rid=%s: stream cut: %s\n", r->rid, r->gone ? "the client left" : r->msg);
    free_req(r);
    if (!async) finished(srv);
}

static void chunk_sent(struct evhttp_connection *evcon, void *arg);

/* Sends the next chunk of the spool, or ends the stream once the route ended and all of
 * it went, or looks again shortly when the route is still writing. */
static void pump(api_req *r)
{
    if (r->gone || r->in_flight) return;
    int head = evhttp_request_get_command(r->req) == EVHTTP_REQ_HEAD;
    if (head || r->read_err) {
        /* HEAD: evhttp sends no body (and so never calls chunk_sent); the route still
         * runs to the end so the status is the one GET would have. */
        if (r->done) stream_finish(r);
        return;
    }
    int done = r->done;        /* read before the spool: every byte written before done */
    struct evbuffer *b = evbuffer_new();
    void *buf = NULL;
    size_t room = 0;
    struct evbuffer_iovec v;
    if (b && evbuffer_reserve_space(b, STREAM_CHUNK, &v, 1) == 1) {
        buf = v.iov_base;
        room = v.iov_len < STREAM_CHUNK ? v.iov_len : STREAM_CHUNK;
    }
    ssize_t n = buf ? pread(r->spool, buf, room, r->spool_off) : -1;
    if (n > 0) {
        v.iov_len = (size_t)n;
        evbuffer_commit_space(b, &v, 1);
        r->spool_off += n;
        r->in_flight = 1;
        evhttp_send_reply_chunk_with_cb(r->req, b, chunk_sent, r);
        evbuffer_free(b);
        return;
    }
    int err = n < 0 ? (buf ? errno : ENOMEM) : 0;
    if (b) evbuffer_free(b);
    if (err == EINTR) err = 0;
    if (err) {
        r->read_err = -err;
        if (done) stream_finish(r);
        return;
    }
    if (done) {
        stream_finish(r);
        return;
    }
    struct timeval tv = {0, SPOOL_POLL_US};
    if (r->spool_ev) evtimer_add(r->spool_ev, &tv);
}

static void chunk_sent(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    api_req *r = arg;
    r->in_flight = 0;
    pump(r);
}

static void spool_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    api_req *r = arg;
    if (!r->done) {            /* the route is still writing: held to max_spool_bytes */
        if (r->gone) return;
        if ((r->over_cap = spool_over(r))) {
            stop_route(r);     /* its next write fails; refused once it ends */
            spool_count(r);
            return;
        }
        struct timeval tv = {0, SPOOL_WATCH_US};
        evtimer_add(r->spool_ev, &tv);
        return;
    }
    if (r->gone) stream_finish(r);
    else pump(r);
}

int api_stream_begin(api_req *r, const char *content_type)
{
    int fd = open(r->srv->store, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        api_fail(r, 500, "internal", "a spool file in %s: %s", r->srv->store, strerror(errno));
        return -1;
    }
    r->spool = r->pipe_wr = fd;
    r->ctype = content_type;
    r->stream = 1;
    post(r, 1);
    return 0;
}

/* The route has begun its body: nothing is sent yet (see stream_send); the timer lets a
 * client that leaves meanwhile stop the route (on_close). */
static void stream_start(api_req *r)
{
    if (r->gone) {             /* finished when the route ends */
        stop_route(r);
        return;
    }
    r->spool_next = r->srv->spools;
    if (r->spool_next) r->spool_next->spool_prev = r;
    r->srv->spools = r;
    r->spool_linked = 1;
    r->spool_ev = evtimer_new(r->srv->base, spool_wake, r);
    if (!r->spool_ev) r->read_err = -ENOMEM;   /* refused once the route ends */
    struct timeval tv = {0, SPOOL_WATCH_US};
    if (r->spool_ev) evtimer_add(r->spool_ev, &tv);
}

/* The route ended having failed, before a byte of its body was sent: the client gets the
 * error in JSON, not a 200 cut short. A spool the store's file system had no room for is
 * 507. */
static void stream_refuse(api_req *r)
{
    int rc = r->stream_rc ? r->stream_rc : r->read_err;
    char why[sizeof r->msg];
    snprintf(why, sizeof why, "%s", r->stream_rc ? r->msg : strerror(-rc));
    int full = rc == -ENOSPC || rc == -EDQUOT;
    if (r->over_cap) {
        /* Not a fault of the store: the share may hear it too (no path, no numbers). */
        const char *limit = r->over_cap == SPOOL_OVER_TOTAL ? "the downloads in flight would take more spool space "
                            "than limits.max_spool_bytes allows"
                            : r->over_cap == SPOOL_OVER_TENANT ? "this tenant's downloads in flight would take more "
                            "spool space than limits.max_spool_bytes_per_tenant allows"
                            : "the download's spool would leave the store's file system with less free space than "
                            "limits.spool_reserve_bytes (kept for snapshots)";
        api_fail(r, 507, "insufficient_storage", "%s: retry later", limit);
        r->retry_after = 5;
    } else if (r->tok.role == API_ROLE_SHARE) {
        /* A share's errors name nothing of the store: the cause goes to the log. */
        fprintf(stderr, "cairn serve: rid=%s: share download of %s/%s: %s\n", r->rid, r->tok.tenant, r->tok.sandbox, why);
        if (full) api_fail(r, 507, "insufficient_storage", "no room to prepare the download (request %s)", r->rid);
        else api_fail(r, 500, "internal", "internal error (request %s)", r->rid);
    } else if (full) {
        api_fail(r, 507, "insufficient_storage",
                 "no room in the store's file system to spool the download (it is sent once whole): %s", why);
    } else {
        api_fail(r, 500, "read_failed", "the download failed before it was sent: %s", why);
    }
    reply(r);
    free_req(r);
}

/* The route ended and its whole body is in the spool: the status, the headers (with the
 * body's length) and then the body at the client's pace. */
static void stream_send(api_req *r)
{
    set_common_headers(r, r->ctype);
    struct stat sb;
    char len[32];
    if (fstat(r->spool, &sb) < 0) {
        r->read_err = -errno;
        return stream_refuse(r);
    }
    snprintf(len, sizeof len, "%lld", (long long)sb.st_size);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Length", len);
    evhttp_send_reply_start(r->req, 200, "OK");
    pump(r);
}

static void drain_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    api_server *srv = arg;
    pthread_mutex_lock(&srv->done_mu);
    done_node *n = srv->done_head;
    srv->done_head = srv->done_tail = NULL;
    pthread_mutex_unlock(&srv->done_mu);
    while (n) {
        done_node *next = n->next;
        api_req *r = n->r;
        if (n->phase == 1) stream_start(r);
        else if (r->stream) {
            r->done = 1;
            if (r->gone) stream_finish(r);
            else if (r->over_cap || r->stream_rc || r->read_err) stream_refuse(r);
            else if ((r->over_cap = spool_over(r))) {
                stream_refuse(r);
            } else {
                if (r->spool_ev) event_del(r->spool_ev);
                stream_send(r);
            }
        } else {
            reply(r);
            free_req(r);
        }
        free(n);
        n = next;
    }
}

static void run_job(api_job *j)
{
    api_req *r = (api_req *)j;
    r->route->fn(r);
    r->pipe_wr = -1;           /* the spool's descriptor: the loop's now (r->spool) */
    post(r, 0);
}

/* ---- routing, auth, dispatch (loop thread) -------------------------------------------- */

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PATCH: return "PATCH";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    default: return "OTHER";
    }
}

/* Tokens come from the config file; `cairn token add|revoke` edits it while we run, so a
 * changed file is read again (only its tokens are taken: listen and limits need a restart).
 * A change we cannot read fails closed: the edit may have revoked a token, so until the file
 * reads again no token is honoured (-1: the caller answers 503). */
static int refresh_tokens(api_server *srv)
{
    struct stat sb;
    if (stat(srv->config_path, &sb) < 0) {
        if (errno == ENOENT) {                          /* removed: nobody is let in */
            if (srv->cfg.ntokens)
                fprintf(stderr, "cairn serve: %s is gone: no token is valid now\n", srv->config_path);
            srv->cfg.ntokens = 0;
            srv->cfg_broken = 0;
            return 0;
        }
        if (!srv->cfg_broken)
            fprintf(stderr, "cairn serve: ERROR: cannot stat %s (%s): refusing every token (503 config_error) "
                    "until it reads again\n", srv->config_path, strerror(errno));
        srv->cfg_broken = 1;
        memset(&srv->cfg_mtime, 0, sizeof srv->cfg_mtime);   /* read it again once stat works */
        return -1;
    }
    if (sb.st_mtim.tv_sec == srv->cfg_mtime.tv_sec && sb.st_mtim.tv_nsec == srv->cfg_mtime.tv_nsec &&
        sb.st_size == srv->cfg_size)
        return srv->cfg_broken ? -1 : 0;
    srv->cfg_mtime = sb.st_mtim;
    srv->cfg_size = sb.st_size;
    api_config c;
    store_err e;
    if (api_config_load(srv->config_path, &c, &e)) {
        fprintf(stderr, "cairn serve: ERROR: %s changed but cannot be read (%s): refusing every token "
                "(503 config_error) until it reads again\n", srv->config_path, e.msg);
        srv->cfg_broken = 1;
        return -1;
    }
    if (srv->cfg_broken) fprintf(stderr, "cairn serve: %s reads again: tokens honoured\n", srv->config_path);
    srv->cfg_broken = 0;
    free(srv->cfg.tokens);
    srv->cfg.tokens = c.tokens;
    srv->cfg.ntokens = c.ntokens;
    c.tokens = NULL;
    api_config_free(&c);
    return 0;
}

static int valid_rid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:") == n;
}

static void early(api_req *r, int status, const char *code, const char *msg)
{
    api_fail(r, status, code, "%s", msg);
    reply(r);
    free_req(r);
}

static int limit_rid(void *arg, const char *given, char *out, size_t cap)
{
    api_server *srv = arg;
    if (given && !valid_rid(given)) return -1;
    if (given) snprintf(out, cap, "%s", given);
    else snprintf(out, cap, "%s%08llx", srv->rid_salt, (unsigned long long)++srv->rid_seq);
    return 0;
}

static void limit_log(void *arg, const char *rid, int status, const char *why)
{
    (void)arg;
    api_metrics_request(-1, status, 0);
    fprintf(stderr, "cairn serve: - - %d rid=%s: %s (refused before it was read)\n", status, rid, why);
}

static void handle(struct evhttp_request *req, void *arg)
{
    api_server *srv = arg;
    api_req *r = calloc(1, sizeof *r);
    if (!r) {
        /* Still the API's shape (evhttp_send_error would answer HTML), from static text;
         * a header libevent cannot add now only leaves it out. */
        static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
        char rid[72];
        snprintf(rid, sizeof rid, "%s%08llx", srv->rid_salt, (unsigned long long)++srv->rid_seq);
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        if (evhttp_add_header(h, "Content-Type", "application/json") || evhttp_add_header(h, "X-Request-Id", rid))
            fprintf(stderr, "cairn serve: rid=%s: out of memory for the headers of a 500\n", rid);
        if (evbuffer_add_reference(evhttp_request_get_output_buffer(req), oom, sizeof oom - 1, NULL, NULL))
            fprintf(stderr, "cairn serve: rid=%s: out of memory for the body of a 500\n", rid);
        evhttp_send_reply(req, 500, "Internal Server Error", NULL);
        return;
    }
    r->srv = srv;
    r->req = req;
    r->evcon = evhttp_request_get_connection(req);
    r->t0 = now_s();
    r->route_index = -1;
    r->spool = r->pipe_wr = -1;
    srv->inflight++;
    const char *hrid = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    if (hrid && valid_rid(hrid)) snprintf(r->rid, sizeof r->rid, "%s", hrid);
    else snprintf(r->rid, sizeof r->rid, "%s%08llx", srv->rid_salt, (unsigned long long)++srv->rid_seq);
    if (srv->stopping) return early(r, 503, "shutting_down", "the server is stopping");

    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    if (!path) return early(r, 400, "bad_request", "no path in the request");
    if (api_request_route(r, method_name(evhttp_request_get_command(req)), path)) {
        if (r->status == 405) evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", r->allow);
        reply(r);
        free_req(r);
        return;
    }

    if (r->route->roles) {
        const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        if (!auth || strncmp(auth, "Bearer ", 7) || !auth[7])
            return early(r, 401, "unauthorized", "an Authorization: Bearer token is needed");
        const char *text = auth + 7;
        if (refresh_tokens(srv))
            return early(r, 503, "config_error", "the server's config cannot be read (see its log): no token "
                         "is honoured until it is fixed");
        const api_token *t = api_token_find(srv->cfg.tokens, srv->cfg.ntokens, text);
        api_token share;
        if (t) r->tok = *t;
        else if (api_share_find(&srv->shares, text, &share) == 0) r->tok = share;
        else return early(r, 401, "unauthorized", "unknown, revoked or expired token");
        int allowed = r->tok.role == API_ROLE_SHARE ? r->route->roles == API_ROLE_SHARE
                                                    : (r->route->roles & r->tok.role) ||
                                                          (r->tok.role == API_ROLE_ADMIN && r->route->roles != API_ROLE_SHARE);
        if (!allowed) return early(r, 403, "forbidden", "this token's role may not use this route");
    }

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t blen = evbuffer_get_length(in);
    if ((long)blen > srv->cfg.max_body) return early(r, 413, "too_large", "the body is larger than max_body_bytes");
    const char *body = blen ? (const char *)evbuffer_pullup(in, (ev_ssize_t)blen) : NULL;
    if (blen && !body) return early(r, 500, "internal", "out of memory");
    if (api_request_input(r, evhttp_uri_get_query(u), body, blen)) {
        reply(r);
        free_req(r);
        return;
    }

    evhttp_connection_set_closecb(r->evcon, on_close, r);
    if (r->route->run == API_RUN_INLINE) {
        r->route->fn(r);
        reply(r);
        free_req(r);
        return;
    }
    r->job.fn = run_job;
    api_pool *p = r->route->run == API_RUN_LONG ? &srv->long_pool : &srv->short_pool;
    if (api_pool_submit(p, &r->job)) {
        r->retry_after = 5;
        evhttp_connection_set_closecb(r->evcon, NULL, NULL);
        return early(r, 429, "busy", r->route->run == API_RUN_LONG ? "max_long_jobs jobs are running: retry later"
                                                                 : "too many requests queued: retry later");
    }
}

/* ---- start and stop ------------------------------------------------------------------- */

static void deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    api_server *srv = arg;
    pthread_mutex_lock(&srv->long_pool.mu);
    int busy = srv->long_pool.running + srv->long_pool.queued;
    pthread_mutex_unlock(&srv->long_pool.mu);
    pthread_mutex_lock(&srv->short_pool.mu);
    busy += srv->short_pool.running + srv->short_pool.queued;
    pthread_mutex_unlock(&srv->short_pool.mu);
    if (!busy) {
        /* Every job ended; only replies to clients that stopped reading are unconfirmed. */
        event_base_loopexit(srv->base, NULL);
        return;
    }
    srv->cut = 1;
    fprintf(stderr, "cairn serve: %d requests still running at the shutdown deadline: stopping anyway "
            "(an unfinished snapshot leaves only garbage for gc)\n", srv->inflight);
    event_base_loopexit(srv->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    api_server *srv = arg;
    if (srv->stopping) return;
    srv->stopping = 1;
    fprintf(stderr, "cairn serve: %s: no new connections; %d requests in flight\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", srv->inflight);
    if (srv->sock) evhttp_del_accept_socket(srv->http, srv->sock);
    srv->sock = NULL;
    if (srv->inflight == 0) {
        event_base_loopexit(srv->base, NULL);
        return;
    }
    struct timeval tv = {srv->cfg.shutdown_timeout_s, 0};
    srv->deadline_ev = evtimer_new(srv->base, deadline, srv);
    if (srv->deadline_ev) evtimer_add(srv->deadline_ev, &tv);
}

static int split_listen(const char *l, char *host, size_t hcap, int *port)
{
    const char *c = strrchr(l, ':');
    if (!c || c == l || (size_t)(c - l) >= hcap) return -1;
    char *end;
    long p = strtol(c + 1, &end, 10);
    if (*end || p < 0 || p > 65535 || end == c + 1) return -1;
    memcpy(host, l, (size_t)(c - l));
    host[c - l] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {   /* [::1]:7420 */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    *port = (int)p;
    return 0;
}

int api_serve(const api_serve_opts *o, store_err *e)
{
    api_server *srv = calloc(1, sizeof *srv);
    if (!srv) return store_errf(e, -ENOMEM, "out of memory");
    srv->store = o->store;
    srv->config_path = api_config_path(o->store, o->config);
    int rc = srv->config_path ? api_config_load(srv->config_path, &srv->cfg, e) : store_errf(e, -ENOMEM, "out of memory");
    if (rc) {
        free(srv->config_path);
        free(srv);
        return rc;
    }
    struct stat sb;
    if (stat(srv->config_path, &sb) == 0) {
        srv->cfg_mtime = sb.st_mtim;
        srv->cfg_size = sb.st_size;
    }
    /* The store must open now: a wrong --store is an error at start, not at the first call. */
    store_t *probe = NULL;
    if ((rc = store_open(o->store, STORE_READ, &probe, e))) goto out_cfg;
    store_close(probe);
    const char *listen = o->listen ? o->listen : srv->cfg.listen;
    char host[128];
    int port;
    if (split_listen(listen, host, sizeof host, &port)) {
        rc = store_errf(e, -EINVAL, "listen address '%s' is not HOST:PORT", listen);
        goto out_cfg;
    }
    signal(SIGPIPE, SIG_IGN);    /* a client gone mid-stream is an EPIPE, not our death */
    if (evthread_use_pthreads() < 0) {
        rc = store_errf(e, -ENOSYS, "libevent has no pthreads support");
        goto out_cfg;
    }
    api_storeref_init(&srv->ref, o->store);
    pthread_mutex_init(&srv->done_mu, NULL);
    pthread_mutex_init(&srv->sb_mu, NULL);
    char tmp[API_TOKEN_MAX];
    if ((rc = api_token_make("", tmp, e))) goto out_ref;
    snprintf(srv->rid_salt, sizeof srv->rid_salt, "%.8s", tmp);
    if ((rc = api_shares_open(&srv->shares, o->store, e))) goto out_ref;
    api_metrics_init(api_nroutes);
    srv->base = event_base_new();
    srv->http = srv->base ? evhttp_new(srv->base) : NULL;
    if (!srv->http) {
        rc = store_errf(e, -ENOMEM, "libevent: cannot make the event loop");
        goto out_base;
    }
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_HEAD | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_max_body_size(srv->http, srv->cfg.max_body);
    evhttp_set_max_headers_size(srv->http, srv->cfg.max_headers);
    evhttp_set_timeout(srv->http, srv->cfg.request_timeout_s);
    evhttp_set_gencb(srv->http, handle, srv);
    api_limits lim = {srv->cfg.max_body, srv->cfg.max_headers, limit_rid, limit_log, srv};
    api_limits_install(srv->http, &lim);
    srv->sock = evhttp_bind_socket_with_handle(srv->http, host, (ev_uint16_t)port);
    if (!srv->sock) {
        rc = store_errf(e, -EADDRINUSE, "cannot listen on %s: %s", listen, strerror(errno));
        goto out_base;
    }
    srv->done_ev = event_new(srv->base, -1, EV_PERSIST | EV_READ, drain_done, srv);
    srv->term_ev = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    srv->int_ev = evsignal_new(srv->base, SIGINT, on_signal, srv);
    if (!srv->done_ev || !srv->term_ev || !srv->int_ev || event_add(srv->term_ev, NULL) ||
        event_add(srv->int_ev, NULL)) {
        rc = store_errf(e, -ENOMEM, "libevent: cannot set up events");
        goto out_base;
    }
    if ((rc = api_pool_start(&srv->short_pool, srv->cfg.workers, 4096, 0, e))) goto out_base;
    if ((rc = api_pool_start(&srv->long_pool, srv->cfg.max_long_jobs, srv->cfg.max_long_jobs, API_LONG_NICE, e))) {
        api_pool_stop(&srv->short_pool);
        goto out_base;
    }
    /* The bound port (listen may say :0). */
    char addr[200];
    evutil_socket_t fd = evhttp_bound_socket_get_fd(srv->sock);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char hb[128] = "?";
    int bport = port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *si = (struct sockaddr_in *)&ss;
            evutil_inet_ntop(AF_INET, &si->sin_addr, hb, sizeof hb);
            bport = ntohs(si->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *si = (struct sockaddr_in6 *)&ss;
            evutil_inet_ntop(AF_INET6, &si->sin6_addr, hb, sizeof hb);
            bport = ntohs(si->sin6_port);
        }
    }
    snprintf(addr, sizeof addr, strchr(hb, ':') ? "[%s]:%d" : "%s:%d", hb, bport);
    fprintf(stderr, "cairn serve: listening on %s (store %s, config %s, %zu tokens)\n", addr, o->store,
            srv->config_path, srv->cfg.ntokens);
    if (o->ready) o->ready(o->ready_arg, addr);
    event_base_dispatch(srv->base);
    if (srv->cut) {
        /* Workers may still run: their memory and threads go with the process. */
        return store_errf(e, -ETIMEDOUT, "stopped with requests still running (shutdown_timeout_s)");
    }
    api_pool_stop(&srv->long_pool);
    api_pool_stop(&srv->short_pool);
    fprintf(stderr, "cairn serve: stopped cleanly\n");
    rc = 0;
out_base:
    if (srv->deadline_ev) event_free(srv->deadline_ev);
    if (srv->done_ev) event_free(srv->done_ev);
    if (srv->term_ev) event_free(srv->term_ev);
    if (srv->int_ev) event_free(srv->int_ev);
    if (srv->http) evhttp_free(srv->http);
    api_limits_free();
    if (srv->base) event_base_free(srv->base);
out_ref:
    api_shares_close(&srv->shares);
    pthread_mutex_destroy(&srv->done_mu);
    pthread_mutex_destroy(&srv->sb_mu);
    free(srv->sb);
    api_storeref_destroy(&srv->ref);
out_cfg:
    api_config_free(&srv->cfg);
    free(srv->config_path);
    free(srv);
    return rc;
}

/* ---- sandbox records ------------------------------------------------------------------
 * Every lifecycle call needs gc's view of all sandboxes, which reads every snapshot record
 * and events.log: too slow to redo for each metadata call under load. The view depends only
 * on events.log and on which snapshots exist (a commit or a drop changes manifests/), so it
 * is kept until either changes, whoever changed it (the CLI included). The stats are taken
 * before the read, so a change racing with it makes the next call read again. */

static int sb_stat(const char *store, struct timespec *ev, off_t *evsize, struct timespec *man)
{
    char p[4200];
    struct stat a, b;
    snprintf(p, sizeof p, "%s/events.log", store);
    if (stat(p, &a) < 0) {
        if (errno != ENOENT) return -1;
        memset(&a, 0, sizeof a);
    }
    snprintf(p, sizeof p, "%s/manifests", store);
    if (stat(p, &b) < 0) return -1;
    *ev = a.st_mtim;
    *evsize = a.st_size;
    *man = b.st_mtim;
    return 0;
}

int api_sandboxes(api_req *r, store_t *s, const char *tenant, gc_sandbox **out, size_t *n, store_err *e)
{
    api_server *srv = r->srv;
    struct timespec ev, man;
    off_t evsize;
    int have = sb_stat(srv->store, &ev, &evsize, &man) == 0;
    pthread_mutex_lock(&srv->sb_mu);
    /* Read from a view, the snapshots part is the view's (it is replaced when manifests/
     * changes), so only events.log can make it stale: appends grow it, so its size tells,
     * whatever the clock's tick. */
    uint64_t gen = r->view ? r->view->gen : 0;
    int same_ev = have && evsize == srv->sb_ev_size && ev.tv_sec == srv->sb_ev_mtim.tv_sec &&
                  ev.tv_nsec == srv->sb_ev_mtim.tv_nsec;
    int hit = gen ? srv->sb_view == gen && same_ev
                  : have && srv->sb_valid && !srv->sb_view && same_ev && man.tv_sec == srv->sb_man_mtim.tv_sec &&
                        man.tv_nsec == srv->sb_man_mtim.tv_nsec;
    if (!hit) {
        gc_sandbox *v = NULL;
        size_t k = 0;
        int rc = gc_sandboxes(s, NULL, &v, &k, e);
        if (rc) {
            pthread_mutex_unlock(&srv->sb_mu);
            return rc;
        }
        free(srv->sb);
        srv->sb = v;
        srv->nsb = k;
        /* File times tick coarsely (a few ms): a change in the same tick as the stat would
         * leave them equal, so a view read within a second of a change is not kept. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        srv->sb_valid = have && now.tv_sec - ev.tv_sec > 1 && now.tv_sec - man.tv_sec > 1;
        srv->sb_view = have ? gen : 0;
        srv->sb_ev_mtim = ev;
        srv->sb_ev_size = evsize;
        srv->sb_man_mtim = man;
    }
    gc_sandbox *copy = malloc((srv->nsb ? srv->nsb : 1) * sizeof *copy);
    size_t m = 0;
    for (size_t i = 0; copy && i < srv->nsb; i++)
        if (!tenant || !strcmp(srv->sb[i].tenant, tenant)) copy[m++] = srv->sb[i];
    pthread_mutex_unlock(&srv->sb_mu);
    if (!copy) return store_errf(e, -ENOMEM, "out of memory");
    *out = copy;
    *n = m;
    return 0;
}
