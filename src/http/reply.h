#ifndef MARKETD_HTTP_REPLY_H
#define MARKETD_HTTP_REPLY_H
/*
 * The request context handlers receive, and the only ways to answer. A
 * request is answered exactly once by one reply_* call; that also records
 * metrics and the access-log line.
 *
 * Lifetime: the context lives in the request's memory pool (h2o_req_t.pool).
 * h2o's HTTP/1 connection does not read (and so cannot notice a closed peer
 * or dispose the request) while a response is pending, so the context stays
 * valid until reply_* is called, even across asynchronous database work.
 * HTTP/2 is not enabled.
 */
#include <jansson.h>
#include <stdint.h>

#include "core/json.h"
#include "core/slice.h"
#include "http/query.h"
#include "http/router.h"
#include "http/server.h"
#include "http/trace.h"

typedef struct rctx {
    h2o_req_t *req;
    worker_t *w;
    const route_t *route; /* NULL when none matched */
    int route_id;         /* metrics id of the route's pattern, -1 if none */
    int method;           /* metrics_method_index */
    uint64_t start_us;
    slice_t request_id;
    trace_t trace;                    /* W3C trace context: the caller's trace, or a new one (http/trace.h) */
    slice_t params[ROUTE_MAX_PARAMS]; /* path {params}, raw */
    query_t query;
    verr_t verr;
    int64_t user_id; /* the token's user on AUTH_USER / AUTH_ADMIN routes */
    json_t *body;    /* the JSON object of a BODY_JSON route (released with the request) */
    void *data;      /* the handler's own state */
    void *app;       /* the dispatcher's state for this request */
    /* A cacheable GET's 200 carries a strong ETag, X-Cache and
     * Cache-Control, and becomes a 304 when If-None-Match names the ETag. */
    int cacheable;
    const char *x_cache;       /* "HIT" | "MISS" | "BYPASS" (NULL: BYPASS) */
    const char *cache_control; /* NULL: "no-cache" */
} rctx_t;

/* Renders into this worker's scratch buffer, emptied first. */
jbuf_t *reply_buffer(rctx_t *r);

/* 2xx/3xx with an application/json body (copied); see rctx_t.cacheable. */
void reply_json(rctx_t *r, int status, const jbuf_t *body);
/* Any body with its content type (copied). */
void reply_body(rctx_t *r, int status, const char *content_type, const char *body, size_t len);

/*
 * An RFC 9457 application/problem+json answer for an MKD_* code (the one
 * table of code → status and title is in reply.c). `fmt` is the detail.
 * MKD_EINVAL lists r->verr as "errors"; 503 adds Retry-After: 1; 401 adds
 * WWW-Authenticate: Bearer; a 500 is logged and its detail names the
 * request id instead of the message.
 */
void reply_error(rctx_t *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same with extension members: `members` is the text of a JSON object
 * ({"available":2}) whose members are added to the problem, or NULL. */
void reply_error_ext(rctx_t *r, int err, const char *members, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* MKD_EINVAL with detail "invalid parameters: <first field> <message>". */
void reply_invalid(rctx_t *r);
/* After validation: answers 422 and returns 1 when r->verr holds anything,
 * else returns 0 (`if (reply_if_invalid(r)) return;`). */
int reply_if_invalid(rctx_t *r);

/* The HTTP status of a code (for tests and the access log). */
int reply_status_of(int err);

/* Adds a response header (value copied into the request pool). */
void reply_header(rctx_t *r, const char *name, const char *value, size_t len);

/* A request header's value, or NULL (and *len 0) when absent. */
const char *rctx_header(rctx_t *r, const char *name, size_t *len);

#endif
