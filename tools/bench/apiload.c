/* cairn-apiload: the API bench's load generator (tools/bench/api.py runs it).
 *
 * N threads, each with one HTTP/1.1 keep-alive connection over loopback, send GETs in a
 * loop (the paths in turn, each thread starting at its own index) until the time is up,
 * and time each request from the first byte sent to the last byte of the body read. A
 * reply is read whole (Content-Length; a chunked or unframed reply counts as an error, as
 * does any status but 200), so a fast wrong answer cannot pass for a fast answer. A
 * connection the server closes is reopened; the request counts as an error.
 *
 * Why C and not the Python client it replaces: on a 2-core machine the Python client's
 * own CPU time was a large part of the latency it measured.
 *
 * usage: cairn-apiload --port P --token T --seconds S --connections N PATH...
 * prints one JSON object: requests, errors, p50_ms, p90_ms, p99_ms, max_ms, statuses.
 * Exit 0 when it ran (errors are in the JSON), 2 on bad usage, 1 when it could not run. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int idx;
    double *lat;
    size_t n, cap;
    long errors, st200, st4xx, st5xx, stother, reconnects;
} worker;

static int g_port, g_npaths;
static char **g_paths;
static const char *g_token;
static double g_stop;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads one reply; returns its status, or -1 when the connection failed or the reply was
 * not a framed HTTP/1.1 reply. *close_after: the server said Connection: close. */
static int read_reply(int fd, char *buf, size_t cap, int *close_after)
{
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have + 1 >= cap) return -1;
        ssize_t r = recv(fd, buf + have, cap - 1 - have, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        have += (size_t)r;
        buf[have] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1) return -1;
    size_t hlen = (size_t)(end + 4 - buf);
    long clen = -1;
    *close_after = 0;
    for (char *l = strstr(buf, "\r\n") + 2; l < end; l = strstr(l, "\r\n") + 2) {
        if (!strncasecmp(l, "Content-Length:", 15)) clen = strtol(l + 15, NULL, 10);
        else if (!strncasecmp(l, "Connection: close", 17)) *close_after = 1;
        else if (!strncasecmp(l, "Transfer-Encoding:", 18)) return -1;
    }
    if (clen < 0) return -1;
    size_t body = have - hlen;
    while (body < (size_t)clen) {
        ssize_t r = recv(fd, buf, cap - 1, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        body += (size_t)r;
    }
    return body == (size_t)clen ? status : -1;   /* more than framed: not HTTP we understand */
}

static int push(worker *w, double v)
{
    if (w->n == w->cap) {
        size_t c = w->cap ? 2 * w->cap : 4096;
        double *p = realloc(w->lat, c * sizeof *p);
        if (!p) return -1;
        w->lat = p;
        w->cap = c;
    }
    w->lat[w->n++] = v;
    return 0;
}

static void *run(void *arg)
{
    worker *w = arg;
    static __thread char buf[1 << 16];
    char req[2048];
    int fd = dial();
    long k = w->idx;
    while (now() < g_stop) {
        if (fd < 0 && (fd = dial()) < 0) {
            w->errors++;
            usleep(10000);
            continue;
        }
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n",
                         g_paths[k++ % g_npaths], g_token);
        double t0 = now();
        int close_after = 0;
        int st = send_all(fd, req, (size_t)n) ? -1 : read_reply(fd, buf, sizeof buf, &close_after);
        double dt = now() - t0;
        if (push(w, dt)) break;
        if (st == 200) w->st200++;
        else {
            w->errors++;
            if (st >= 400 && st < 500) w->st4xx++;
            else if (st >= 500) w->st5xx++;
            else w->stother++;
        }
        if (st < 0 || close_after) {
            close(fd);
            fd = -1;
            w->reconnects++;
        }
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int usage(void)
{
    fprintf(stderr, "usage: cairn-apiload --port P --token T --seconds S --connections N PATH...\n");
    return 2;
}

int main(int argc, char **argv)
{
    int conns = 64;
    double secs = 30;
    int i = 1;
    for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
        if (!strcmp(argv[i], "--port")) g_port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--token")) g_token = argv[i + 1];
        else if (!strcmp(argv[i], "--seconds")) secs = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--connections")) conns = atoi(argv[i + 1]);
        else return usage();
    }
    if (g_port <= 0 || !g_token || conns < 1 || secs <= 0 || i >= argc) return usage();
    g_paths = argv + i;
    g_npaths = argc - i;
    worker *w = calloc((size_t)conns, sizeof *w);
    pthread_t *t = calloc((size_t)conns, sizeof *t);
    if (!w || !t) return 1;
    g_stop = now() + secs;
    for (int k = 0; k < conns; k++) {
        w[k].idx = k;
        if (pthread_create(&t[k], NULL, run, &w[k])) {
            fprintf(stderr, "cairn-apiload: cannot start thread %d\n", k);
            return 1;
        }
    }
    size_t total = 0;
    long errors = 0, s200 = 0, s4 = 0, s5 = 0, so = 0, rec = 0;
    for (int k = 0; k < conns; k++) {
        pthread_join(t[k], NULL);
        total += w[k].n;
        errors += w[k].errors;
        s200 += w[k].st200;
        s4 += w[k].st4xx;
        s5 += w[k].st5xx;
        so += w[k].stother;
        rec += w[k].reconnects;
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    if (!all) return 1;
    size_t m = 0;
    for (int k = 0; k < conns; k++) {
        memcpy(all + m, w[k].lat, w[k].n * sizeof *all);
        m += w[k].n;
        free(w[k].lat);
    }
    qsort(all, total, sizeof *all, cmp);
#define Q(q) (total ? all[(size_t)((q) * (double)(total - 1))] * 1000 : 0)
    printf("{\"requests\": %zu, \"errors\": %ld, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, "
           "\"max_ms\": %.3f, \"statuses\": {\"200\": %ld, \"4xx\": %ld, \"5xx\": %ld, \"failed\": %ld}, "
           "\"reconnects\": %ld}\n",
           total, errors, Q(0.5), Q(0.9), Q(0.99), total ? all[total - 1] * 1000 : 0, s200, s4, s5, so, rec);
    free(all);
    free(w);
    free(t);
    return 0;
}
