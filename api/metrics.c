/* Counters for /metrics (Prometheus text format 0.0.4). One mutex: a request adds one
 * sample; a scrape copies under it. */
#include <event2/buffer.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

static const int statuses[] = {200, 201, 204, 400, 401, 403, 404, 405, 409, 410, 413, 429, 500, 503};
#define NSTATUS (int)(sizeof statuses / sizeof *statuses)
static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define NB (int)(sizeof bounds / sizeof *bounds)

typedef struct {
    uint64_t by_status[NSTATUS + 1];   /* last: any other status */
    uint64_t bucket[NB + 1];
    double sum;
    uint64_t count;
} route_stats;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static route_stats *stats;
static int nstats;
static const char *counter_names[] = {"ingested_bytes", "restored_bytes", "gc_runs", "gc_freed_bytes",
                                      "gc_reclaimed_sandboxes", "snapshots_created"};
#define NCOUNTERS (int)(sizeof counter_names / sizeof *counter_names)
static uint64_t counters[NCOUNTERS];

void api_metrics_init(int nroutes)
{
    stats = calloc((size_t)nroutes + 1, sizeof *stats);   /* last: requests no route matched */
    nstats = stats ? nroutes + 1 : 0;
}

void api_metrics_request(int route, int status, double seconds)
{
    if (route < 0 || route >= nstats) route = nstats - 1;
    if (route < 0) return;
    pthread_mutex_lock(&mu);
    route_stats *r = &stats[route];
    int k = 0;
    while (k < NSTATUS && statuses[k] != status) k++;
    r->by_status[k]++;
    int b = 0;
    while (b < NB && seconds > bounds[b]) b++;
    r->bucket[b]++;
    r->sum += seconds;
    r->count++;
    pthread_mutex_unlock(&mu);
}

void api_metrics_add(const char *counter, uint64_t v)
{
    for (int i = 0; i < NCOUNTERS; i++)
        if (!strcmp(counter, counter_names[i])) {
            pthread_mutex_lock(&mu);
            counters[i] += v;
            pthread_mutex_unlock(&mu);
        }
}

void api_metrics_text(struct evbuffer *b, const char *const *names, int nroutes)
{
    pthread_mutex_lock(&mu);
    evbuffer_add_printf(b, "# HELP cairn_http_requests_total Requests by route and status.\n"
                           "# TYPE cairn_http_requests_total counter\n");
    for (int r = 0; r < nstats && r <= nroutes; r++)
        for (int k = 0; k <= NSTATUS; k++)
            if (stats[r].by_status[k])
                evbuffer_add_printf(b, "cairn_http_requests_total{route=\"%s\",status=\"%s%d\"} %llu\n",
                                    r < nroutes ? names[r] : "unmatched", k < NSTATUS ? "" : "other",
                                    k < NSTATUS ? statuses[k] : 0, (unsigned long long)stats[r].by_status[k]);
    evbuffer_add_printf(b, "# HELP cairn_http_request_seconds Time from request to reply, by route.\n"
                           "# TYPE cairn_http_request_seconds histogram\n");
    for (int r = 0; r < nstats && r <= nroutes; r++) {
        if (!stats[r].count) continue;
        const char *n = r < nroutes ? names[r] : "unmatched";
        uint64_t cum = 0;
        for (int k = 0; k < NB; k++) {
            cum += stats[r].bucket[k];
            evbuffer_add_printf(b, "cairn_http_request_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", n, bounds[k],
                                (unsigned long long)cum);
        }
        evbuffer_add_printf(b, "cairn_http_request_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", n,
                            (unsigned long long)stats[r].count);
        evbuffer_add_printf(b, "cairn_http_request_seconds_sum{route=\"%s\"} %.6f\n", n, stats[r].sum);
        evbuffer_add_printf(b, "cairn_http_request_seconds_count{route=\"%s\"} %llu\n", n,
                            (unsigned long long)stats[r].count);
    }
    for (int i = 0; i < NCOUNTERS; i++)
        evbuffer_add_printf(b, "# TYPE cairn_%s_total counter\ncairn_%s_total %llu\n", counter_names[i],
                            counter_names[i], (unsigned long long)counters[i]);
    pthread_mutex_unlock(&mu);
}
