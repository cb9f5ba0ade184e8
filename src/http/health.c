#include "http/health.h"

#include <errno.h>
#include <h2o.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "http/server.h"

struct health {
    pthread_t thread;
    h2o_globalconf_t conf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_evloop_t *loop;
    h2o_socket_t *listener;
    int fd;
    int stop; /* atomic: set by health_stop */
};

static void answer(h2o_req_t *req, int status, const char *reason, const char *type, const char *body)
{
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_send_inline(req, body, strlen(body));
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/healthz")) &&
        (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
         h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))) {
        answer(req, 200, "OK", "application/json", "{\"status\":\"ok\"}");
        return 0;
    }
    answer(req, 404, "Not Found", "application/problem+json",
           "{\"type\":\"about:blank\",\"title\":\"Not Found\",\"status\":404,"
           "\"detail\":\"this listener serves GET /healthz only\"}");
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    health_t *h = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        h2o_accept(&h->accept_ctx, sock);
    }
}

/* The listener answers in microseconds, so it may run ahead of everything
 * else on the machine: when PostgreSQL and the workers saturate the cores
 * (bench-overload (d), Redis down: 4,900 queries/s), a probe otherwise
 * waits its turn behind them (p99 15.6 ms, 9 of 596 over 10 ms). A higher
 * priority for this thread alone (nice -10) needs CAP_SYS_NICE; without it
 * (a non-root container) the thread keeps the process's. */
static void raise_priority(void)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (setpriority(PRIO_PROCESS, (id_t)tid, -10) != 0)
        log_debug("HEALTH_LISTEN: thread priority unchanged (%s)", strerror(errno));
}

static void *health_main(void *arg)
{
    health_t *h = arg;
    raise_priority();
    while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE))
        h2o_evloop_run(h->loop, 100);
    return NULL;
}

health_t *health_start(const char *host, int port, char *err, size_t errlen)
{
    health_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        abort();
    h->fd = server_listen_socket(host, port, "HEALTH_LISTEN", err, errlen);
    if (h->fd < 0) {
        free(h);
        return NULL;
    }
    h2o_config_init(&h->conf);
    h->conf.server_name = h2o_iovec_init(H2O_STRLIT("marketd"));
    h->conf.max_request_entity_size = 1024;
    h->conf.http1.req_timeout = 5000;
    h->conf.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *hc = h2o_config_register_host(&h->conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(hc, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pc, sizeof(*handler));
    handler->on_req = on_req;
    h->loop = h2o_evloop_create();
    h2o_context_init(&h->ctx, h->loop, &h->conf);
    h->accept_ctx.ctx = &h->ctx;
    h->accept_ctx.hosts = h->conf.hosts;
    h->listener = h2o_evloop_socket_create(h->loop, h->fd, H2O_SOCKET_FLAG_DONT_READ);
    h->listener->data = h;
    h2o_socket_read_start(h->listener, on_accept);
    if (pthread_create(&h->thread, NULL, health_main, h) != 0) {
        snprintf(err, errlen, "HEALTH_LISTEN: cannot start its thread");
        h2o_socket_close(h->listener);
        h2o_evloop_run(h->loop, 0);
        h2o_context_dispose(&h->ctx);
        h2o_evloop_destroy(h->loop);
        h2o_config_dispose(&h->conf);
        free(h);
        return NULL;
    }
    return h;
}

void health_stop(health_t *h)
{
    if (h == NULL)
        return;
    __atomic_store_n(&h->stop, 1, __ATOMIC_RELEASE);
    pthread_join(h->thread, NULL);
    h2o_socket_close(h->listener);
    /* Let closed sockets finish disposing before the context goes (as the
     * workers do, src/http/server.c). */
    for (int i = 0; i < 3; i++)
        h2o_evloop_run(h->loop, 0);
    h2o_multithread_queue_t *queue = h->ctx.queue;
    if (h2o_linklist_is_empty(&h->ctx.http1._conns)) {
        h2o_context_dispose(&h->ctx);
        for (int i = 0; i < 3; i++)
            h2o_evloop_run(h->loop, 0);
        free(queue); /* libh2o 2.2.5 does not (see server.c) */
        h2o_evloop_destroy(h->loop);
    }
    h2o_config_dispose(&h->conf);
    free(h);
}
