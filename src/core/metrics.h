#ifndef MARKETD_CORE_METRICS_H
#define MARKETD_CORE_METRICS_H
/*
 * Request counters and latency histograms (S14). Each worker owns one
 * metrics_t and is its only writer (plain loads and stores, no locked
 * instructions on the hot path); /metrics sums all workers with relaxed
 * atomic reads, so a scrape never stalls a request.
 */
#include <stdint.h>

#include "core/json.h"

#define METRICS_MAX_ROUTES 48
#define METRICS_NMETHODS   7 /* GET HEAD POST PUT PATCH DELETE other */
#define METRICS_NSTATUS    20
#define METRICS_NBUCKETS   14

typedef struct metrics {
    uint64_t requests[METRICS_MAX_ROUTES][METRICS_NMETHODS][METRICS_NSTATUS];
    uint64_t latency[METRICS_MAX_ROUTES][METRICS_NBUCKETS]; /* non-cumulative; last = +Inf */
    uint64_t latency_count[METRICS_MAX_ROUTES];
    uint64_t latency_sum_us[METRICS_MAX_ROUTES];
    uint64_t cache[3]; /* hit, miss, bypass */
} metrics_t;

/* Route names by id, registered once at start-up by the router. */
void metrics_set_route_name(int route, const char *name);

/* Index of a method / status in the tables (statuses outside the table
 * share a final slot, reported as status="other"). */
int metrics_method_index(const char *method, size_t len);
void metrics_observe(metrics_t *m, int route, int method, int status, uint64_t duration_us);

/* Appends the Prometheus text of the request metrics of all `n` workers. */
void metrics_render_http(jbuf_t *out, metrics_t *const *all, int n);
/* Appends process_cpu_seconds_total, process_resident_memory_bytes,
 * process_open_fds (read from getrusage and /proc/self). */
void metrics_render_process(jbuf_t *out);

#endif
