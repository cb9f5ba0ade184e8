#ifndef MARKETD_HTTP_SERVER_H
#define MARKETD_HTTP_SERVER_H
/*
 * `marketd serve`: WORKERS threads, each with its own h2o event loop, its own
 * SO_REUSEPORT listening socket (the kernel spreads connections), its own
 * database pool and its own metrics — no lock is taken on the request path.
 */
#include <pthread.h>
#include <stdint.h>

#include "core/config.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/offload.h"
#include "h2o.h"
#include "http/router.h"

typedef struct server server_t;
typedef struct worker worker_t;
struct rctx;

/*
 * What the transport serves, handed over by main.c: the route table and the
 * dispatcher (src/api/), plus the dispatcher's per-worker life cycle. The
 * transport matches a route, answers 404/405 and malformed query strings
 * itself, and calls `dispatch` for everything else.
 */
typedef struct http_app {
    const route_t *routes;
    int nroutes;
    void (*dispatch)(struct rctx *r);
    /* On the worker's thread, before it accepts: 0 or -1 (start fails). */
    int (*worker_init)(worker_t *w);
    /* Every 100 ms on the worker's loop (housekeeping, jobs). */
    void (*worker_tick)(worker_t *w);
    /* After every worker has drained (so no other worker still reads this
     * one's state, e.g. for /metrics); the loop runs a few more turns
     * afterwards, for sockets to close. */
    void (*worker_dispose)(worker_t *w);
} http_app_t;

struct worker {
    server_t *server;
    int index;
    pthread_t thread;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    offload_receiver_t offload; /* completions of offloaded work (Argon2id, file writes) */
    void *app;                  /* the dispatcher's per-worker state */
    jbuf_t out;                 /* scratch buffer responses are rendered into */
    jbuf_t logbuf;              /* scratch buffer of the access-log line */
    metrics_t metrics;
    uint64_t trace_rng; /* ids of new traces and spans (http/trace.h) */
    int inflight;       /* requests accepted by a handler and not yet answered */
    int draining;
    uint64_t drain_deadline_us;
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick;
    metrics_loop_clock_t loop_clock; /* fed by the tick: the loop's lag (server_loop_lag_us) */
    unsigned stall_seen;             /* TEST_STALL_SIGNAL: the last server->stall_requests obeyed */
    int start_error;                 /* set by the thread when it could not start */
};

struct server {
    const config_t *cfg;
    const http_app_t *app;
    int *route_ids; /* metrics id per route: the index of the first row of its pattern */
    h2o_globalconf_t globalconf;
    int nworkers;
    worker_t *workers;
    metrics_t **metrics_all; /* &workers[i].metrics, for /metrics */
    int stopping;            /* set by the signal thread (atomic) */
    unsigned stall_requests; /* TEST_STALL_SIGNAL: SIGUSR1s received (atomic) */
    pthread_barrier_t started;
    pthread_barrier_t finished; /* all workers drained: pools may go */
};

/* Runs the server until SIGTERM/SIGINT, then drains (B7). Returns the
 * process exit code. */
int server_run(const config_t *cfg, const http_app_t *app);

/* The worker owning a request (its loop thread is the caller's). */
worker_t *server_worker_of(h2o_req_t *req);

uint64_t server_now_us(void);

/* How late the worker's event loop is now: how long its 100 ms tick has
 * been overdue (0 while the loop keeps up). Cheap; on the worker's own
 * thread only. The database pool and the Redis client keep the same clock
 * (core/metrics.h) from their own ticks on this loop. */
uint64_t server_loop_lag_us(const worker_t *w);

/* A listening TCP socket on host:port (SO_REUSEPORT, so that every
 * worker opens its own); -1 with a message naming `what` (the setting). */
int server_listen_socket(const char *host, int port, const char *what, char *err, size_t errlen);

#endif
