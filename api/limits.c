/* Every refusal of a request's framing answered in our own words. libevent 2.1 refuses a
 * request it cannot read (a bad request line or header line, a bad Content-Length or chunk
 * size, a body over max_body_size, a head over max_headers_size, an Expect it does not know,
 * a method it does not take) with an HTML page and no X-Request-Id, and has no server-side
 * hook for it. So a watcher on each connection's input buffer (an evbuffer callback, which
 * evhttp leaves alone, run as bytes are added and so before evhttp parses them) follows
 * the requests exactly as evhttp 2.1.12 will read them (http.c: evhttp_parse_request_line,
 * evhttp_parse_headers_, evhttp_get_body, evhttp_handle_chunked_read) and answers each case
 * where evhttp would send its page, first: the JSON error with the request id (the
 * client's, or a new one), then everything the client sends after is dropped and the
 * connection is shut once the answer is out. The watcher is never laxer than evhttp (a
 * head is counted with its line ends, a chunk-size line is capped), so evhttp's own caps
 * are only a backstop. A request evhttp reads is left to it untouched.
 * What evhttp answers with no reply at all (a request not sent within the timeout, a
 * client that closes) stays so. A refusal waits for the answers to the requests before it
 * on the connection (pipelined, or a stray line after a body): the server tells when one
 * is written (api_limits_answered), so the client reads them in order.
 * Loop thread only. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "api/internal.h"

enum { W_HEAD, W_BODY, W_CHUNK_LINE, W_CHUNK_DATA, W_TRAILER, W_PASS, W_REFUSED };

/* A chunk-size line longer than this is refused (evhttp would buffer it without bound). */
#define CHUNK_LINE_MAX 1024

typedef struct {
    struct bufferevent *bev;   /* whose connection this slot follows now */
    int state;
    uint64_t left;             /* W_BODY, W_CHUNK_DATA: bytes still to come */
    uint64_t body;             /* a chunked body: bytes its chunk sizes announced so far */
    size_t raw;                /* bytes of this request's head (and trailer) so far, line ends too */
    size_t hlen;               /* bytes in head: whole lines (NUL-ended) + the line being read */
    size_t line;               /* where the line being read starts in head */
    int nlines;                /* whole lines of the head so far */
    int has_body, v11;         /* from the request line: evhttp reads a body; HTTP/1.1 */
    int headed;                /* the head is whole (and no longer in head): rid is its id */
    char rid[80];              /* its X-Request-Id, "" when it sent none */
    unsigned passed, answered; /* requests left to evhttp on this connection; answers written */
    char *pending;             /* a refusal waiting for those answers (malloc'd), or NULL */
    size_t npending;
    /* Offsets in the bytes the client sent: all seen; the next to follow; where the request
     * being followed began. Once refused: the bytes at the buffer's front that are earlier
     * requests' and still for evhttp (the rest of the buffer is dropped). */
    uint64_t seen, pos, start;
    size_t keep;
    char *head;                /* max_headers + 1 bytes */
} watch;

static watch *tab;             /* by file descriptor */
static size_t ntab;
static api_limits cfg;

/* The value of header name in the head's whole header lines (the request line is not
 * kept) as evhttp_find_header gives it (the
 * first such line, continuation lines joined by a space), or NULL. */
static const char *header(const watch *w, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name), o = 0;
    int found = 0;
    for (const char *l = w->head; l < w->head + w->line; l += strlen(l) + 1) {
        const char *v;
        if (found && (*l == ' ' || *l == '\t')) {
            v = l + strspn(l, " \t");
            if (o + 1 < cap) out[o++] = ' ';
        } else if (found) {
            break;
        } else if (!strncasecmp(l, name, nl) && l[nl] == ':') {
            found = 1;
            v = l + nl + 1;
            v += strspn(v, " ");
        } else {
            continue;
        }
        size_t n = strlen(v);
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
        if (n > cap - 1 - o) n = cap - 1 - o;
        memcpy(out + o, v, n);
        o += n;
    }
    if (!found) return NULL;
    out[o] = 0;
    return out;
}

/* How many header lines are name's. */
static int header_count(const watch *w, const char *name)
{
    size_t nl = strlen(name);
    int n = 0;
    for (const char *l = w->head; l < w->head + w->line; l += strlen(l) + 1)
        n += !strncasecmp(l, name, nl) && l[nl] == ':';
    return n;
}

static const char *phrase(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 413: return "Payload Too Large";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    default: return "Not Implemented";
    }
}

/* Straight to the socket: evhttp has sent nothing for this request and never will (it
 * never sees the rest of it); a few hundred bytes fit any socket buffer. Then the
 * connection is shut for writing: the client reads the answer and the end. */
static void send_refusal(int fd, const char *out, size_t len)
{
    if (send(fd, out, len, MSG_NOSIGNAL) < 0)
        fprintf(stderr, "cairn serve: a refusal could not be sent: %s\n", strerror(errno));
    shutdown(fd, SHUT_WR);
}

static void refuse(watch *w, int fd, int status, const char *code, const char *msg)
{
    char rid[72], hrid[80];
    const char *given = w->headed ? (w->rid[0] ? w->rid : NULL) : header(w, "X-Request-Id", hrid, sizeof hrid);
    if (!given || cfg.rid(cfg.arg, given, rid, sizeof rid)) cfg.rid(cfg.arg, NULL, rid, sizeof rid);
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    char out[1024];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Request-Id: %s\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s\n",
                     status, phrase(status), rid, body ? strlen(body) + 1 : 1, body ? body : "");
    free(body);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof out ? (size_t)n : sizeof out - 1;
    cfg.log(cfg.arg, rid, status, msg);
    w->state = W_REFUSED;
    if (w->passed > w->answered) {          /* after the answers before it (api_limits_answered) */
        if ((w->pending = malloc(len))) {
            memcpy(w->pending, out, len);
            w->npending = len;
            return;
        }
        fprintf(stderr, "cairn serve: rid=%s: out of memory: the %d answer goes out now\n", rid, status);
    }
    send_refusal(fd, out, len);
}

static void bad(watch *w, int fd, const char *msg)
{
    refuse(w, fd, 400, "bad_request", msg);
}

/* The request line as evhttp_parse_request_line reads it: 0, or -1 after a refusal.
 * *has_body: evhttp reads a body for this method. */
static int request_line(watch *w, int fd, char *line, size_t len, int *has_body, int *v11)
{
    while (len && line[len - 1] == ' ') line[--len] = 0;
    char *sp = strchr(line, ' ');
    if (len < strlen("GET / HTTP/1.0") || !sp) return bad(w, fd, "the request line is not METHOD PATH HTTP/1.x"), -1;
    *sp = 0;
    char *uri = sp + 1, *ver = strrchr(uri, ' ');
    if (!ver || ver == uri) return bad(w, fd, "the request line is not METHOD PATH HTTP/1.x"), -1;
    *ver++ = 0;
    int major, minor;
    char ch;
    if (sscanf(ver, "HTTP/%d.%d%c", &major, &minor, &ch) != 2 || major > 1)
        return bad(w, fd, "the request's HTTP version is not HTTP/1.0 or HTTP/1.1"), -1;
    *v11 = major > 1 || (major == 1 && minor >= 1);
    static const char *const taken[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"};
    int known = -1;
    for (size_t i = 0; i < sizeof taken / sizeof *taken; i++)
        if (!strcmp(line, taken[i])) known = (int)i;
    if (known < 0) {
        /* evhttp would first read a CONNECT's body and check its authority; the answer
         * for a method it does not take is this one either way. */
        refuse(w, fd, 501, "not_implemented", "the request's method is not one the API takes");
        return -1;
    }
    *has_body = strcmp(line, "HEAD") != 0;
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(uri, EVHTTP_URI_NONCONFORMANT);
    if (!u) return bad(w, fd, "the request's target is not a URI"), -1;
    evhttp_uri_free(u);
    return 0;
}

/* One header (or trailer) line as evhttp_parse_headers_ takes it: 0, or -1 after a refusal. */
static int header_line(watch *w, int fd, const char *line, int first)
{
    if (*line == ' ' || *line == '\t') {
        if (first) return bad(w, fd, "the request's first header line is a continuation"), -1;
        return 0;
    }
    if (!strchr(line, ':')) return bad(w, fd, "a header line of the request has no ':'"), -1;
    /* evhttp_add_header refuses a CR in a name or value (the libevent of Debian 12 even
     * before a space, which its source would let fold a line): stricter is safe. */
    if (strchr(line, '\r')) return bad(w, fd, "a header line of the request holds a CR"), -1;
    return 0;
}

/* The head is whole: what evhttp_get_body will read next. */
static void head_done(watch *w, int fd, int has_body, int v11)
{
    char v[64];
    w->state = W_HEAD;
    if (!header(w, "X-Request-Id", w->rid, sizeof w->rid)) w->rid[0] = 0;
    /* The libevent of Debian 12 (with its security fixes) refuses Transfer-Encoding beside
     * Content-Length, twice, or as a list, even on a HEAD; we take it only alone, once,
     * as "chunked" (stricter: the other codings it would ignore, no client sends). */
    int te = header(w, "Transfer-Encoding", v, sizeof v) != NULL;
    if (te && (strcasecmp(v, "chunked") || header_count(w, "Transfer-Encoding") > 1)) {
        bad(w, fd, "the request's Transfer-Encoding is not one \"chunked\"");
        return;
    }
    if (te && header(w, "Content-Length", v, sizeof v)) {
        bad(w, fd, "the request has both Transfer-Encoding and Content-Length");
        return;
    }
    if (!has_body) return;
    int chunked = 0;
    uint64_t len = 0;
    if (te) {
        chunked = 1;
    } else if (header(w, "Content-Length", v, sizeof v)) {
        char *e;
        long long x = strtoll(v, &e, 10);
        if (!v[0] || *e || x < 0) {
            bad(w, fd, "the request's Content-Length is not a number");
            return;
        }
        if (x < 1) return;
        len = (uint64_t)x;
    } else {
        return;
    }
    if (v11 && header(w, "Expect", v, sizeof v) && strcasecmp(v, "100-continue")) {
        refuse(w, fd, 417, "expectation_failed", "the request's Expect is not 100-continue");
        return;
    }
    if (len > (uint64_t)cfg.max_body) {
        char msg[160];
        snprintf(msg, sizeof msg, "the body (%llu bytes) is larger than max_body_bytes (%ld)",
                 (unsigned long long)len, cfg.max_body);
        refuse(w, fd, 413, "too_large", msg);
        return;
    }
    if (chunked) {
        w->state = W_CHUNK_LINE;
        w->body = 0;
    } else {
        w->state = W_BODY;
        w->left = len;
    }
}

/* A chunk-size line as evhttp_handle_chunked_read reads it. */
static void chunk_line(watch *w, int fd, const char *line)
{
    if (!*line) return;                       /* the end of the chunk before */
    char *e;
    long long n = strtoll(line, &e, 16);
    if ((*e && *e != ' ') || n < 0) {
        bad(w, fd, "a chunk size of the request's body is not a hex number");
        return;
    }
    if ((uint64_t)n > (uint64_t)cfg.max_body - w->body) {
        char msg[160];
        snprintf(msg, sizeof msg, "the chunked body is larger than max_body_bytes (%ld)", cfg.max_body);
        refuse(w, fd, 413, "too_large", msg);
        return;
    }
    w->body += (uint64_t)n;
    if (n == 0) {
        w->state = W_TRAILER;
    } else {
        w->state = W_CHUNK_DATA;
        w->left = (uint64_t)n;
    }
}

static void next_request(watch *w)
{
    w->start = w->pos;
    w->state = W_HEAD;
    w->raw = w->hlen = w->line = 0;
    w->nlines = w->headed = 0;
}

/* A whole request left to evhttp, which will answer it. */
static void passed(watch *w)
{
    w->passed++;
    next_request(w);
}

/* Follows the bytes p[0..n) of the connection; returns when they are all seen. */
static void follow(watch *w, int fd, const char *p, size_t n)
{
    while (n && w->state != W_REFUSED && w->state != W_PASS) {
        if (w->state == W_BODY || w->state == W_CHUNK_DATA) {
            uint64_t k = w->left < n ? w->left : n;
            w->left -= k;
            p += k;
            n -= k;
            w->pos += k;
            if (w->left) continue;
            if (w->state == W_BODY) passed(w);
            else w->state = W_CHUNK_LINE;
            continue;
        }
        /* A line (evbuffer_readln, EVBUFFER_EOL_CRLF: up to a LF, a CR before it dropped). */
        const char *lf = memchr(p, '\n', n);
        size_t k = lf ? (size_t)(lf - p) + 1 : n;
        size_t part = w->hlen - w->line;
        if (w->state == W_CHUNK_LINE) {
            if (part + k > CHUNK_LINE_MAX) {
                bad(w, fd, "a chunk-size line of the request is too long");
                return;
            }
        } else if (w->raw + k > (size_t)cfg.max_headers) {
            refuse(w, fd, 431, "too_large", "the request's header block is larger than max_header_bytes");
            return;
        }
        memcpy(w->head + w->hlen, p, k);
        w->hlen += k;
        if (w->state != W_CHUNK_LINE) w->raw += k;
        p += k;
        n -= k;
        w->pos += k;
        if (!lf) continue;
        /* A whole line: kept as a C string, as evhttp reads it (an embedded NUL ends it). */
        char *line = w->head + w->line;
        size_t len = w->hlen - w->line - 1;
        if (len && line[len - 1] == '\r') len--;
        line[len] = 0;
        len = strlen(line);
        w->hlen = w->line + len + 1;
        if (w->state == W_CHUNK_LINE) {
            w->hlen = w->line = 0;
            chunk_line(w, fd, line);
        } else if (w->state == W_TRAILER) {
            w->hlen = w->line = 0;
            if (!*line) passed(w);
            else header_line(w, fd, line, 0);
        } else if (w->nlines == 0) {
            w->nlines = 1;
            if (request_line(w, fd, line, len, &w->has_body, &w->v11)) return;
            w->hlen = w->line = 0;                  /* only header lines are looked up */
        } else if (!*line) {
            head_done(w, fd, w->has_body, w->v11);
            if (w->state == W_HEAD) {
                passed(w);
            } else if (w->state != W_REFUSED) {
                w->hlen = w->line = 0;              /* a trailer counts on from raw */
                w->headed = 1;
            }
        } else {
            if (header_line(w, fd, line, w->nlines == 1)) return;
            w->nlines++;
            w->line = w->hlen;
        }
    }
}

/* Drops all but the first keep bytes of buf (evbuffer drains only from the front). */
static int cutting;
static void keep_front(struct evbuffer *buf, size_t keep)
{
    size_t len = evbuffer_get_length(buf);
    if (keep >= len) return;
    if (!keep) {
        evbuffer_drain(buf, len);
        return;
    }
    struct evbuffer *t = evbuffer_new();
    cutting = 1;               /* our own moves: not the client's bytes, not evhttp's reads */
    if (!t || evbuffer_remove_buffer(buf, t, keep) != (int)keep) {
        /* cannot set the earlier requests aside: they go too (the client gets the refusal) */
        fprintf(stderr, "cairn serve: out of memory: requests before a refused one dropped\n");
        if (t) evbuffer_add_buffer(buf, t);
        evbuffer_drain(buf, evbuffer_get_length(buf));
    } else {
        evbuffer_drain(buf, evbuffer_get_length(buf));
        evbuffer_add_buffer(buf, t);
    }
    cutting = 0;
    if (t) evbuffer_free(t);
}

static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct bufferevent *bev = arg;
    int fd = (int)bufferevent_getfd(bev);
    if (cutting || fd < 0) return;
    if (info->n_added == 0) {
        /* evhttp read some: fewer bytes at the front are still to keep */
        if ((size_t)fd < ntab && tab[fd].bev == bev && tab[fd].state == W_REFUSED)
            tab[fd].keep -= info->n_deleted < tab[fd].keep ? info->n_deleted : tab[fd].keep;
        return;
    }
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
        /* A new connection. Nagle off: bufferevent writes an answer in 16 KiB pieces, and
         * Nagle held the last short piece of any longer one (a long sandbox's snapshot
         * list) until the client's delayed ACK, 40 ms later. */
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
            fprintf(stderr, "cairn serve: TCP_NODELAY on a connection: %s (answers over 16 KiB may wait 40 ms)\n",
                    strerror(errno));
        w->bev = bev;
        w->seen = w->pos = 0;
        next_request(w);
        w->passed = w->answered = 0;
        free(w->pending);
        w->pending = NULL;
    }
    if (!w->head && !(w->head = malloc((size_t)cfg.max_headers + CHUNK_LINE_MAX + 1))) {
        w->state = W_PASS;
        return;
    }
    size_t len = evbuffer_get_length(buf), add = info->n_added < len ? info->n_added : len, off = len - add;
    w->seen += add;
    if (w->state == W_REFUSED) {
        keep_front(buf, w->keep);
        return;
    }
    while (add && w->state != W_REFUSED && w->state != W_PASS) {
        if ((w->state == W_BODY || w->state == W_CHUNK_DATA) && w->left >= add) {   /* only counted */
            w->pos += add;
            w->left -= add;
            if (!w->left) {
                if (w->state == W_BODY) passed(w);
                else w->state = W_CHUNK_LINE;
            }
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
    /* Nothing of a refused request reaches evhttp (the requests before it still do): it
     * waits for a head that never comes and drops the connection when the client closes it
     * or at its timeout. */
    if (w->state == W_REFUSED) {
        uint64_t front = w->seen - evbuffer_get_length(buf);
        w->keep = w->start > front ? (size_t)(w->start - front) : 0;
        keep_front(buf, w->keep);
    }
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

void api_limits_answered(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    int fd = bev ? (int)bufferevent_getfd(bev) : -1;
    if (fd < 0 || (size_t)fd >= ntab || tab[fd].bev != bev) return;
    watch *w = &tab[fd];
    w->answered++;
    if (w->pending && w->answered >= w->passed) {
        send_refusal(fd, w->pending, w->npending);
        free(w->pending);
        w->pending = NULL;
    }
}

void api_limits_free(void)
{
    for (size_t i = 0; i < ntab; i++) free(tab[i].head), free(tab[i].pending);
    free(tab);
    tab = NULL;
    ntab = 0;
}
