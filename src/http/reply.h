#ifndef MARKETD_HTTP_REPLY_H
#define MARKETD_HTTP_REPLY_H
/*
 * The request context handlers receive, and the only ways to answer. A
 * handler (or the callback that finishes its work) calls exactly one reply_*
 * function once; that also records metrics and the access-log line.
 *
 * Lifetime: the context lives in the request's memory pool (h2o_req_t.pool).
 * h2o's HTTP/1 connection does not read (and so cannot notice a closed peer
 * or dispose the request) while a response is pending, so the context stays
 * valid until reply_* is called, even across asynchronous database work.
 * HTTP/2 is not enabled.
 */
#include <stdint.h>

#include "core/json.h"
#include "core/slice.h"
#include "http/query.h"
#include "http/router.h"
#include "http/server.h"

typedef struct rctx {
    h2o_req_t *req;
    worker_t *w;
    int route;  /* index in the route table, -1 if none matched */
    int method; /* metrics_method_index */
    int cacheable; /* the route's `cacheable` flag, for GET */
    uint64_t start_us;
    slice_t request_id;
    slice_t params[ROUTE_MAX_PARAMS]; /* path {params}, raw */
    query_t query;
    verr_t verr;
    void *data;             /* the handler's own state */
    const char *cache_result; /* "HIT" | "MISS" | "BYPASS" (NULL: BYPASS) */
    struct cache_req *cache;  /* cache/cache.c's state for this request, or NULL */
    const char *cache_control; /* Cache-Control of a cacheable 200 (default "no-cache") */
    /* A query deferred until the cache has missed (api_cached_query). */
    const db_stmt_t *dq_stmt;
    const char **dq_params;
    db_result_cb dq_cb;
} rctx_t;

/* Renders into this worker's scratch buffer, emptied first. */
jbuf_t *reply_buffer(rctx_t *r);

/* 2xx/3xx with an application/json body (copied). On a cacheable route a
 * 200 also gets a strong ETag (SipHash of the body) and X-Cache (BYPASS
 * unless r->cache_result says otherwise), and becomes 304 without a body
 * when If-None-Match names that ETag. */
void reply_json(rctx_t *r, int status, const jbuf_t *body);
/* Any body with its content type. */
void reply_body(rctx_t *r, int status, const char *content_type, const char *body, size_t len);
/*
 * An RFC 9457 application/problem+json answer. For 422 the collected
 * r->verr entries become "errors". 503 adds Retry-After: 1, 405 the Allow of
 * the matched route, 401 WWW-Authenticate: Bearer.
 */
void reply_problem(rctx_t *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Maps an MKD_* code (core/error.h) to its status and answers with it;
 * `what` names the thing involved ("product 42"). */
void reply_error(rctx_t *r, int err, const char *what);
/* 422 with r->verr; detail "invalid parameters". */
void reply_invalid(rctx_t *r);

/* Adds a response header (value copied into the request pool). */
void reply_header(rctx_t *r, const char *name, const char *value, size_t len);

#endif
