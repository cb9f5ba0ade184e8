#include "http/server.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "h2o/http1.h"
#include "http/cors.h"
#include "http/health.h"
#include "http/reply.h"

/* h2o's own limit on a request body, past which it answers a plain 413 or
 * cuts the upload off. Routes enforce their own limits (1 MiB JSON, 5 MiB
 * images) so that those answers are RFC 9457 bodies; nginx's single edge
 * limit is 5 MiB (deploy/local/nginx.conf.in, nginx/nginx.conf). This one
 * stays well above both, so that behind nginx a body too large is always
 * refused at the edge and never cut off here (which nginx reports as a 502:
 * issue 10, defect 4). */
#define MAX_ENTITY (8 * 1024 * 1024)

#define TICK_MS 100
/* TEST_STALL_SIGNAL: how long SIGUSR1 blocks each worker's loop. */
#define TEST_STALL_MS 2000

uint64_t server_now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

uint64_t server_loop_lag_us(const worker_t *w)
{
    return metrics_loop_clock_lag(&w->loop_clock, server_now_us());
}

worker_t *server_worker_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(worker_t, ctx, req->conn->ctx);
}

/* ---- request entry ----------------------------------------------------- */

static int valid_request_id(const char *s, size_t n)
{
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

static int method_of(h2o_iovec_t m)
{
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")) || h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return M_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return M_POST;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("PATCH")))
        return M_PATCH;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("DELETE")))
        return M_DELETE;
    return -1;
}

/* CORS (http/cors.h): the headers of an allowed origin on every answer.
 * Returns 1 when the request is a preflight, answered here. */
static int apply_cors(rctx_t *r, const http_app_t *app, const char *pattern)
{
    const char *list = r->w->server->cfg->cors_origins;
    if (list == NULL)
        return 0;
    reply_header(r, "vary", "Origin", 6);
    size_t on, mn;
    const char *origin = rctx_header(r, "origin", &on);
    int preflight = origin != NULL &&
                    h2o_memis(r->req->method.base, r->req->method.len, H2O_STRLIT("OPTIONS")) &&
                    rctx_header(r, "access-control-request-method", &mn) != NULL;
    if (!cors_origin_allowed(list, origin, on)) {
        if (preflight)
            reply_error(r, MKD_EFORBIDDEN, "origin %.*s may not call this API", (int)(on > 200 ? 200 : on),
                        origin);
        return preflight;
    }
    reply_header(r, "access-control-allow-origin", origin, on);
    if (!preflight) {
        reply_header(r, "access-control-expose-headers", CORS_EXPOSE_HEADERS, strlen(CORS_EXPOSE_HEADERS));
        return 0;
    }
    if (pattern == NULL)
        return 0; /* no such path: the usual 404 */
    char allow[64], headers[128];
    router_allow(app->routes, app->nroutes, pattern, allow, sizeof(allow));
    reply_header(r, "access-control-allow-methods", allow, strlen(allow));
    size_t hn;
    const char *h = rctx_header(r, "access-control-request-headers", &hn);
    if (h != NULL && (hn = cors_allowed_headers(h, hn, headers, sizeof(headers))) > 0)
        reply_header(r, "access-control-allow-headers", headers, hn);
    reply_header(r, "access-control-max-age", CORS_MAX_AGE_S, strlen(CORS_MAX_AGE_S));
    reply_body(r, 204, "", "", 0);
    return 1;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    worker_t *w = server_worker_of(req);
    const http_app_t *app = w->server->app;
    rctx_t *r = h2o_mem_alloc_pool(&req->pool, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->req = req;
    r->w = w;
    r->route_id = -1;
    r->start_us = server_now_us();
    r->method = metrics_method_index(req->method.base, req->method.len);
    w->inflight++;

    /* The caller's trace (W3C traceparent) or a new one; this request's span. */
    ssize_t h = h2o_find_header_by_str(&req->headers, H2O_STRLIT("traceparent"), -1);
    if (h < 0 ||
        trace_parse(req->headers.entries[h].value.base, req->headers.entries[h].value.len, &r->trace) != 0)
        trace_new_trace_id(&w->trace_rng, r->trace.trace_id);
    trace_new_span_id(&w->trace_rng, r->trace.span_id);
    /* The client's request id if it sent one, else the trace id: one key
     * joins the answer, the access log and the caller's trace. */
    h = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (h >= 0 && valid_request_id(req->headers.entries[h].value.base, req->headers.entries[h].value.len))
        r->request_id = (slice_t){req->headers.entries[h].value.base, req->headers.entries[h].value.len};
    else
        r->request_id = (slice_t){r->trace.trace_id, TRACE_ID_HEX};

    slice_t path = {req->path_normalized.base, req->path_normalized.len};
    const char *pattern = NULL;
    int route = router_match(app->routes, app->nroutes, method_of(req->method), path, r->params, &pattern);
    if (apply_cors(r, app, pattern))
        return 0;
    if (route < 0 && pattern == NULL) {
        reply_error(r, MKD_ENOROUTE, "no route for %.*s", (int)(path.len > 200 ? 200 : path.len), path.ptr);
        return 0;
    }
    if (route < 0) {
        for (int i = 0; i < app->nroutes; i++)
            if (app->routes[i].pattern == pattern)
                r->route_id = w->server->route_ids[i];
        char allow[64];
        router_allow(app->routes, app->nroutes, pattern, allow, sizeof(allow));
        reply_header(r, "allow", allow, strlen(allow));
        reply_error(r, MKD_EMETHOD, "%.*s is not allowed here; allowed: %s", (int)req->method.len,
                    req->method.base, allow);
        return 0;
    }
    r->route = &app->routes[route];
    r->route_id = w->server->route_ids[route];
    if (req->query_at != SIZE_MAX) {
        const char *qs = req->path.base + req->query_at + 1;
        size_t qn = req->path.len - req->query_at - 1;
        char *buf = h2o_mem_alloc_pool(&req->pool, qn + 1);
        if (query_parse(qs, qn, &r->query, buf) != 0) {
            reply_error(r, MKD_EBADREQ, "malformed query string");
            return 0;
        }
    }
    if (w->draining)
        reply_header(r, "connection", "close", 5);
    app->dispatch(r);
    return 0;
}

/* ---- listening ---------------------------------------------------------- */

int server_listen_socket(const char *host, int port_no, const char *what, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[8];
    snprintf(port, sizeof(port), "%d", port_no);
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot resolve \"%s\": %s", what, host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 65535) != 0) {
        snprintf(err, errlen, "%s: cannot listen on %s:%d: %s", what, host, port_no, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    worker_t *w = listener->data;
    if (err != NULL || w->draining)
        return;
    /* Take a bounded batch per wakeup so one busy listener cannot starve
     * the requests already on this loop. */
    for (int i = 0; i < 64; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        h2o_accept(&w->accept_ctx, sock);
    }
}

/* ---- tick: loop lag, test stall, drain (B7) ------------------------------ */

/* TEST_STALL_SIGNAL: blocks this loop for TEST_STALL_MS once per SIGUSR1,
 * standing in for a loop overwhelmed by 10,000 connections — replies from
 * PostgreSQL and Redis pile up unread meanwhile. */
static void test_stall(worker_t *w)
{
    unsigned want = __atomic_load_n(&w->server->stall_requests, __ATOMIC_ACQUIRE);
    if (want == w->stall_seen)
        return;
    w->stall_seen = want;
    log_info("worker %d: TEST_STALL_SIGNAL: blocking the event loop for %d ms", w->index, TEST_STALL_MS);
    struct timespec ts = {TEST_STALL_MS / 1000, (TEST_STALL_MS % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    log_info("worker %d: TEST_STALL_SIGNAL: event loop running again", w->index);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    worker_t *w = H2O_STRUCT_FROM_MEMBER(worker_t, tick, entry);
    /* How late this tick runs is how long the loop could not look at its
     * sockets. The next one is due a period after the loop's clock, which
     * h2o read at the start of this turn and relinks the tick from: what
     * the turn does before that tick runs counts as lateness too. */
    uint64_t lag = metrics_loop_clock_tick(&w->loop_clock, server_now_us(),
                                           h2o_now(w->loop) * 1000 + (uint64_t)TICK_MS * 1000);
    metrics_observe_loop_lag(&w->metrics, lag);
    if (w->server->cfg->test_stall_signal)
        test_stall(w);
    if (!w->draining && __atomic_load_n(&w->server->stopping, __ATOMIC_ACQUIRE)) {
        /* Stop accepting first, so the load balancer's retries go to
         * other instances; then ask h2o to close idle keep-alive
         * connections and to end busy ones after their response. */
        w->draining = 1;
        w->drain_deadline_us = server_now_us() + (uint64_t)w->server->cfg->shutdown_timeout_ms * 1000;
        if (w->listener != NULL) {
            h2o_socket_read_stop(w->listener);
            h2o_socket_close(w->listener);
            w->listener = NULL;
        }
        h2o_context_request_shutdown(&w->ctx);
        /* h2o 2.2 leaves idle HTTP/1 keep-alive connections open on
         * request_shutdown. Every connection waiting for a request sits in
         * the req_timeout list (a busy one is not: h2o unlinks it while the
         * handler runs), so a zero timeout closes exactly the idle ones on
         * the loop's next turn, and each busy one as soon as its response
         * is out. */
        w->ctx.http1.req_timeout.timeout = 0;
        log_info("worker %d: draining, %d request(s) in flight", w->index, w->inflight);
    }
    w->server->app->worker_tick(w);
    h2o_timeout_link(w->loop, &w->tick_timeout, &w->tick);
}

static int drained(worker_t *w)
{
    if (!w->draining)
        return 0;
    if (w->inflight == 0 && h2o_linklist_is_empty(&w->ctx.http1._conns))
        return 1;
    if (server_now_us() >= w->drain_deadline_us) {
        log_warn("worker %d: drain deadline reached with %d request(s) in flight", w->index, w->inflight);
        return 1;
    }
    return 0;
}

/* ---- workers -------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    server_t *s = w->server;
    const config_t *cfg = s->cfg;
    char err[256];

    w->loop = h2o_evloop_create();
    h2o_context_init(&w->ctx, w->loop, &s->globalconf);
    w->accept_ctx.ctx = &w->ctx;
    w->accept_ctx.hosts = s->globalconf.hosts;
    offload_receiver_init(&w->offload, &w->ctx);
    jbuf_init(&w->out, 64 * 1024);
    jbuf_init(&w->logbuf, 1024);
    trace_seed(&w->trace_rng);

    int fd = server_listen_socket(cfg->listen_host, cfg->listen_port, "LISTEN", err, sizeof(err));
    if (fd < 0) {
        log_error("%s", err);
        w->start_error = 1;
    } else {
        w->listener = h2o_evloop_socket_create(w->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        w->listener->data = w;
        h2o_socket_read_start(w->listener, on_accept);
    }

    if (s->app->worker_init(w) != 0)
        w->start_error = 1;

    h2o_timeout_init(w->loop, &w->tick_timeout, TICK_MS);
    w->tick.cb = on_tick;
    h2o_timeout_link(w->loop, &w->tick_timeout, &w->tick);
    metrics_loop_clock_init(&w->loop_clock, h2o_now(w->loop) * 1000 + (uint64_t)TICK_MS * 1000);

    pthread_barrier_wait(&s->started);
    if (!w->start_error) {
        while (!drained(w))
            h2o_evloop_run(w->loop, 100);
    }

    /* Another worker may still be rendering /metrics from this pool. */
    pthread_barrier_wait(&s->finished);
    s->app->worker_dispose(w);
    h2o_timeout_unlink(&w->tick);
    if (w->listener != NULL) {
        h2o_socket_close(w->listener);
        w->listener = NULL;
    }
    /* Let closed sockets finish disposing before the context goes. */
    for (int i = 0; i < 3; i++)
        h2o_evloop_run(w->loop, 0);
    h2o_timeout_dispose(w->loop, &w->tick_timeout);
    offload_receiver_dispose(&w->offload, &w->ctx);
    /* h2o_context_request_shutdown arms HTTP/2's graceful-shutdown timer
     * even though no HTTP/2 connection exists; disposing the context with it
     * still linked trips an assertion in h2o. */
    if (h2o_timeout_is_linked(&w->ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&w->ctx.http2._graceful_shutdown_timeout);
    if (!h2o_linklist_is_empty(&w->ctx.http1._conns)) {
        /* Only after the drain deadline: h2o cannot dispose a context with
         * live connections, and the process is about to exit anyway. */
        log_warn("worker %d: exiting with connections still open", w->index);
        return NULL;
    }
    h2o_multithread_queue_t *queue = w->ctx.queue;
    h2o_context_dispose(&w->ctx);
    /* libh2o 2.2.5's h2o_context_dispose destroys its multithread queue
     * (closing the queue's socket, which the loop frees on its next turns)
     * but never frees the queue object itself. */
    for (int i = 0; i < 3; i++)
        h2o_evloop_run(w->loop, 0);
    free(queue);
    jbuf_free(&w->out);
    jbuf_free(&w->logbuf);
    return NULL;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("cannot raise RLIMIT_NOFILE: %s", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 11000)
        log_warn("RLIMIT_NOFILE is %llu: fewer than 10,000 concurrent connections will fit",
                 (unsigned long long)rl.rlim_cur);
}

int server_run(const config_t *cfg, const http_app_t *app)
{
    server_t s;
    memset(&s, 0, sizeof(s));
    s.cfg = cfg;
    s.app = app;
    /* Metrics count per path pattern, whatever the method. */
    s.route_ids = calloc((size_t)app->nroutes, sizeof(int));
    if (s.route_ids == NULL)
        abort();
    for (int i = 0; i < app->nroutes; i++) {
        s.route_ids[i] = i;
        for (int k = 0; k < i && s.route_ids[i] == i; k++)
            if (strcmp(app->routes[k].pattern, app->routes[i].pattern) == 0)
                s.route_ids[i] = k;
        if (s.route_ids[i] == i)
            metrics_set_route_name(i, app->routes[i].pattern);
    }
    s.nworkers = cfg->workers;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    /* Signals go to this thread only (sigwait below); workers never see
     * them, so no handler runs in the middle of a request. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    if (cfg->test_stall_signal)
        sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    h2o_config_init(&s.globalconf);
    s.globalconf.server_name = h2o_iovec_init(H2O_STRLIT("marketd"));
    s.globalconf.max_request_entity_size = MAX_ENTITY;
    s.globalconf.http1.req_timeout = (uint64_t)cfg->http_header_timeout_ms;
    s.globalconf.http1.upgrade_to_http2 = 0;
    s.globalconf.http1.callbacks = H2O_HTTP1_CALLBACKS;
    h2o_hostconf_t *host =
        h2o_config_register_host(&s.globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;

    /* Argon2id is CPU- and memory-bound: one thread per core, and a queue
     * that refuses (503) rather than letting logins pile up unboundedly. */
    if (offload_start(cfg->workers, 256) != 0) {
        log_error("cannot start the offload threads");
        return 1;
    }
    s.workers = calloc((size_t)s.nworkers, sizeof(worker_t));
    s.metrics_all = calloc((size_t)s.nworkers, sizeof(metrics_t *));
    if (s.workers == NULL || s.metrics_all == NULL)
        abort();
    pthread_barrier_init(&s.started, NULL, (unsigned)s.nworkers + 1);
    pthread_barrier_init(&s.finished, NULL, (unsigned)s.nworkers);
    for (int i = 0; i < s.nworkers; i++) {
        worker_t *w = &s.workers[i];
        w->server = &s;
        w->index = i;
        s.metrics_all[i] = &w->metrics;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            log_error("cannot start worker thread %d", i);
            abort();
        }
    }
    pthread_barrier_wait(&s.started);
    int failed = 0;
    for (int i = 0; i < s.nworkers; i++)
        failed |= s.workers[i].start_error;

    health_t *health = NULL;
    if (!failed && cfg->health_listen.port != 0) {
        char err[256];
        health = health_start(cfg->health_listen.host, cfg->health_listen.port, err, sizeof(err));
        if (health == NULL) {
            log_error("%s", err);
            failed = 1;
        } else {
            log_info("GET /healthz also on %s:%d (its own loop)", cfg->health_listen.host,
                     cfg->health_listen.port);
        }
    }

    int exit_code = 0;
    if (failed) {
        exit_code = 1;
    } else {
        log_info("marketd listening on %s:%d with %d worker(s), db pool %d+%d", cfg->listen_host,
                 cfg->listen_port, s.nworkers, cfg->db_pool_size, cfg->db_max_overflow);
        int sig = 0;
        while (sigwait(&sigs, &sig) == 0 && sig == SIGUSR1) {
            /* Each worker's next tick sees the new count and stalls once. */
            log_info("received SIGUSR1 (TEST_STALL_SIGNAL): every worker's loop stalls for %d ms",
                     TEST_STALL_MS);
            __atomic_add_fetch(&s.stall_requests, 1, __ATOMIC_RELEASE);
        }
        log_info("received %s: draining (up to %d ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 cfg->shutdown_timeout_ms);
    }
    __atomic_store_n(&s.stopping, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < s.nworkers; i++)
        pthread_join(s.workers[i].thread, NULL);
    /* Alive until the very end: liveness is not readiness. */
    health_stop(health);
    offload_stop();
    for (int i = 0; i < s.nworkers; i++)
        if (s.workers[i].loop != NULL)
            h2o_evloop_destroy(s.workers[i].loop);
    pthread_barrier_destroy(&s.started);
    pthread_barrier_destroy(&s.finished);
    h2o_config_dispose(&s.globalconf);
    free(s.workers);
    free(s.metrics_all);
    free(s.route_ids);
    log_info("marketd stopped");
    return exit_code;
}
