#ifndef MARKETD_HTTP_HEALTH_H
#define MARKETD_HTTP_HEALTH_H
/*
 * GET /healthz on a listener and an event loop of its own (HEALTH_LISTEN),
 * for liveness probes. The workers' /healthz shares their loops with every
 * other request, so under a flood it waits behind them (issue 11: the
 * overload runs saw loop lag p99 of 25-50 ms); this one waits behind
 * nothing but the scheduler. It answers 200 {"status":"ok"} while the
 * process runs — exactly the workers' /healthz — and 404 to anything else:
 * readiness (/readyz, which asks the database) stays on the main port.
 */
#include <stddef.h>

typedef struct health health_t;

/* Listens and starts the thread; NULL with a message in err. */
health_t *health_start(const char *host, int port, char *err, size_t errlen);
/* Stops the thread and frees everything (at exit, after the workers). */
void health_stop(health_t *h);

#endif
