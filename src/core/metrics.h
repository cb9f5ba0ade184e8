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
    /* how late the worker's 100 ms tick fired (same buckets as latency) */
    uint64_t loop_lag[METRICS_NBUCKETS];
    uint64_t loop_lag_count;
    uint64_t loop_lag_sum_us;
} metrics_t;

/* Route names by id, registered once at start-up by the router. */
void metrics_set_route_name(int route, const char *name);

/* Index of a method / status in the tables (statuses outside the table
 * share a final slot, reported as status="other"). */
int metrics_method_index(const char *method, size_t len);
void metrics_observe(metrics_t *m, int route, int method, int status, uint64_t duration_us);
/* One observation of marketd_event_loop_lag_seconds (how late a tick ran). */
void metrics_observe_loop_lag(metrics_t *m, uint64_t lag_us);

/* Appends the Prometheus text of the request metrics of all `n` workers
 * (and their event-loop lag histogram). */
void metrics_render_http(jbuf_t *out, metrics_t *const *all, int n);
/* Appends process_cpu_seconds_total, process_resident_memory_bytes,
 * process_open_fds (read from getrusage and /proc/self). */
void metrics_render_process(jbuf_t *out);

/*
 * The event loop's lateness, and a clock that leaves it out.
 *
 * A loop that is late (a long batch of callbacks, 10,000 sockets to get
 * through, a stall) reads replies late. A deadline or a liveness check that
 * counted that time would blame a healthy peer for the loop's own delay,
 * drop it, and turn a slow loop into an outage. Whoever owns a periodic
 * timer on the loop (the server, the database pool and the Redis client each
 * have a 100 ms tick) reports each firing; the clock then gives *attentive
 * time*: real time minus every lateness seen, including how overdue the tick
 * is right now. It stands still while the loop is late (the tick is due but
 * has not run) and runs at real speed while the loop keeps up, so a wait
 * measured in it counts only time in which the loop could have read the
 * answer. Times are µs of gettimeofday, the clock h2o's loop uses.
 *
 * Plain data with one owner on the loop's thread. Nothing here reads a
 * clock (time is passed in), so it is unit-tested as it is.
 */
typedef struct metrics_loop_clock {
    uint64_t due_us;  /* when the owner's tick is due */
    uint64_t late_us; /* lateness of the ticks that have run, summed */
} metrics_loop_clock_t;

/* Starts the clock; the owner's first tick is due at due_us. */
void metrics_loop_clock_init(metrics_loop_clock_t *c, uint64_t due_us);

/* The owner's tick runs at now_us and is next due at next_due_us. With h2o
 * pass h2o_now(loop) * 1000 + the period: a timeout counts from the loop's
 * clock, which lags real time by the work done in the current turn. Returns
 * how late this tick ran (0 when on time). */
uint64_t metrics_loop_clock_tick(metrics_loop_clock_t *c, uint64_t now_us, uint64_t next_due_us);

/* How late the loop is at now_us: how long the tick has been overdue. */
uint64_t metrics_loop_clock_lag(const metrics_loop_clock_t *c, uint64_t now_us);

/* Attentive time at now_us. Never decreases while now_us does not. */
uint64_t metrics_loop_clock_now(const metrics_loop_clock_t *c, uint64_t now_us);

/*
 * The decision every deadline and liveness check makes, in attentive times
 * (metrics_loop_clock_now): a peer that has owed an answer since
 * `owed_since` (the request's write) and was last heard from at `heard` is
 * silent once `limit_us` has passed since the later of the two. Returns 1
 * when silent, 0 otherwise (also when `now` is before both, e.g. after the
 * wall clock stepped back).
 */
int metrics_loop_silent(uint64_t now, uint64_t heard, uint64_t owed_since, uint64_t limit_us);

#endif
