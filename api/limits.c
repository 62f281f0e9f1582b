/* Request size limits answered in our own words. libevent 2.1 refuses a body over its
 * max_body_size or a header block over its max_headers_size itself, with an HTML page and
 * no X-Request-Id, and has no server-side hook for it. So a watcher on each connection's
 * input buffer sees the bytes before evhttp parses them (an evbuffer callback, which evhttp
 * leaves alone): it follows each request's head (a copy, up to max_headers) and its
 * Content-Length; a head too large or a Content-Length over max_body is answered here with
 * the JSON error and the request id (the client's, or a new one), everything the client
 * sends after is dropped and the connection is shut once the answer is out. A chunked
 * body cannot be followed without parsing the chunks: such a connection is left to
 * libevent from then on, and its cap (the same max_body) stays the backstop.
 * Loop thread only. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "api/internal.h"

enum { W_HEAD, W_BODY, W_PASS, W_REFUSED };

typedef struct {
    struct bufferevent *bev;   /* whose connection this slot follows now */
    int state;
    uint64_t body_left;
    size_t hlen;
    char *head;                /* max_headers + 1 bytes */
} watch;

static watch *tab;             /* by file descriptor */
static size_t ntab;
static api_limits cfg;

/* The value of header name in head (NUL-terminated, lines ending in \r\n) or NULL. */
static const char *header(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (strncasecmp(h, name, nl) || h[nl] != ':') continue;
        h += nl + 1;
        h += strspn(h, " \t");
        size_t n = strcspn(h, "\r");
        while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
        if (n >= cap) n = cap - 1;
        memcpy(out, h, n);
        out[n] = 0;
        return out;
    }
    return NULL;
}

static void refuse(watch *w, int fd, int status, const char *code, const char *msg)
{
    char rid[72], hrid[80];
    if (!header(w->head, "X-Request-Id", hrid, sizeof hrid) || cfg.rid(cfg.arg, hrid, rid, sizeof rid))
        cfg.rid(cfg.arg, NULL, rid, sizeof rid);
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char out[1024];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Request-Id: %s\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s\n",
                     status, status == 413 ? "Payload Too Large" : "Request Header Fields Too Large", rid,
                     body ? strlen(body) + 1 : 1, body ? body : "");
    free(body);
    /* Straight to the socket: evhttp has sent nothing for this request and never will (it
     * never sees the rest of it); a few hundred bytes fit any socket buffer. */
    if (n > 0 && send(fd, out, (size_t)n < sizeof out ? (size_t)n : sizeof out, MSG_NOSIGNAL) < 0)
        fprintf(stderr, "cairn serve: rid=%s: the %d answer could not be sent: %s\n", rid, status, strerror(errno));
    shutdown(fd, SHUT_WR);
    cfg.log(cfg.arg, rid, status, msg);
    w->state = W_REFUSED;
}

/* Follows the bytes p[0..n) of the connection; returns when they are all seen. */
static void follow(watch *w, int fd, const char *p, size_t n)
{
    while (n && w->state != W_REFUSED && w->state != W_PASS) {
        if (w->state == W_BODY) {
            uint64_t k = w->body_left < n ? w->body_left : n;
            w->body_left -= k;
            p += k;
            n -= k;
            if (!w->body_left) w->state = W_HEAD, w->hlen = 0;
            continue;
        }
        /* W_HEAD: copy until the blank line. */
        size_t room = (size_t)cfg.max_headers - w->hlen, k = n < room ? n : room;
        memcpy(w->head + w->hlen, p, k);
        size_t from = w->hlen > 3 ? w->hlen - 3 : 0;
        w->hlen += k;
        w->head[w->hlen] = 0;
        char *end = memmem(w->head + from, w->hlen - from, "\r\n\r\n", 4);
        if (!end) {
            if (w->hlen >= (size_t)cfg.max_headers)
                refuse(w, fd, 431, "too_large", "the request's header block is larger than max_header_bytes");
            p += k;
            n -= k;
            continue;
        }
        size_t used = (size_t)(end + 4 - w->head) - (w->hlen - k);   /* of this chunk */
        end[2] = 0;
        char v[64];
        if (header(w->head, "Transfer-Encoding", v, sizeof v)) {
            w->state = W_PASS;
            return;
        }
        uint64_t len = 0;
        if (header(w->head, "Content-Length", v, sizeof v)) {
            char *e;
            errno = 0;
            unsigned long long x = strtoull(v, &e, 10);
            if (*e || errno || v[0] == '-' || !v[0]) {
                w->state = W_PASS;      /* evhttp answers a malformed length itself (400) */
                return;
            }
            len = x;
        }
        if (len > (uint64_t)cfg.max_body) {
            char msg[160];
            snprintf(msg, sizeof msg, "the body (%llu bytes) is larger than max_body_bytes (%ld)",
                     (unsigned long long)len, cfg.max_body);
            refuse(w, fd, 413, "too_large", msg);
            return;
        }
        p += used;
        n -= used;
        w->body_left = len;
        w->state = len ? W_BODY : W_HEAD;
        w->hlen = 0;
    }
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct bufferevent *bev = arg;
    int fd = (int)bufferevent_getfd(bev);
    if (info->n_added == 0 || fd < 0) return;
    if ((size_t)fd >= ntab) {
        size_t n = (size_t)fd * 2 + 16;
        watch *t = realloc(tab, n * sizeof *t);
        if (!t) return;       /* out of memory: libevent's own limits still hold */
        memset(t + ntab, 0, (n - ntab) * sizeof *t);
        tab = t;
        ntab = n;
    }
    watch *w = &tab[fd];
    if (w->bev != bev) {
        w->bev = bev;
        w->state = W_HEAD;
        w->hlen = 0;
        w->body_left = 0;
    }
    if (!w->head && !(w->head = malloc((size_t)cfg.max_headers + 1))) {
        w->state = W_PASS;
        return;
    }
    size_t len = evbuffer_get_length(buf), add = info->n_added < len ? info->n_added : len, off = len - add;
    while (add && (w->state == W_HEAD || w->state == W_BODY)) {
        if (w->state == W_BODY && w->body_left >= add) {     /* a body's bytes: only counted */
            w->body_left -= add;
            if (!w->body_left) w->state = W_HEAD, w->hlen = 0;
            break;
        }
        char tmp[4096];
        struct evbuffer_ptr pos;
        if (evbuffer_ptr_set(buf, &pos, off, EVBUFFER_PTR_SET) < 0) break;
        ev_ssize_t got = evbuffer_copyout_from(buf, &pos, tmp, add < sizeof tmp ? add : sizeof tmp);
        if (got <= 0) break;
        follow(w, fd, tmp, (size_t)got);
        off += (size_t)got;
        add -= (size_t)got;
    }
    /* Nothing of a refused request reaches evhttp: it waits for a head that never ends and
     * drops the connection when the client closes it or at its timeout. */
    if (w->state == W_REFUSED) evbuffer_drain(buf, evbuffer_get_length(buf));
}

static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    (void)arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) return NULL;
    /* A freed bufferevent's address may come back: its old slot must not be taken as this
     * connection's. */
    for (size_t i = 0; i < ntab; i++)
        if (tab[i].bev == bev) tab[i].bev = NULL;
    if (!evbuffer_add_cb(bufferevent_get_input(bev), on_input, bev)) {
        bufferevent_free(bev);
        return NULL;
    }
    return bev;
}

void api_limits_install(struct evhttp *http, const api_limits *l)
{
    cfg = *l;
    evhttp_set_bevcb(http, make_bev, NULL);
}

void api_limits_free(void)
{
    for (size_t i = 0; i < ntab; i++) free(tab[i].head);
    free(tab);
    tab = NULL;
    ntab = 0;
}
