#ifndef MARKETD_API_DISPATCH_H
#define MARKETD_API_DISPATCH_H
/*
 * The dispatcher: between the HTTP transport (src/http/) and the resource
 * modules (src/api/<resource>.c). For a matched route it enforces the
 * route's declared policies once, in this order — body size (413), token
 * (401), JSON body (400/415), administrator (403) — then calls the
 * handler. A handler validates its parameters and hands back a *plan*:
 *
 *   reads:  api_read(r, &(api_read_t){statement, parameters, renderer,
 *           cache key, tags}) — the dispatcher runs lookup → single flight
 *           → query → render → store → answer;
 *   writes: api_query(r, statement, parameters, on_result) — failures are
 *           answered here; on_result maps the statement's domain outcome
 *           (api_outcome) and ends with api_reply_written, which changes
 *           the cache tags of what was written before answering (B2).
 */
#include <libpq-fe.h>

#include "api/admission.h"
#include "api/batch.h"
#include "api/outage.h"
#include "cache/cache.h"
#include "db/pool.h"
#include "db/replicas.h"
#include "http/reply.h"
#include "http/router.h"
#include "http/server.h"

/* The cache policy of a route: how long its entries live and what browsers
 * may do with them. The key and the tags come with each plan. */
typedef enum { TTL_PRODUCTS, TTL_REFERENCE, TTL_POPULAR_SELLERS } cache_ttl_class_t;

typedef struct cache_policy {
    cache_ttl_class_t ttl;
    const char *cache_control; /* NULL: "no-cache" (revalidate with the ETag) */
    /* Entries of one user's private data (the plan's key names the user):
     * cached in Redis like any other, but the answer stays what api.md says
     * for a private GET — no ETag, X-Cache or Cache-Control. */
    int server_only;
} cache_policy_t;

/* A resource module: its routes and its start-up (statements). After h2o's
 * handlers, each module exports one of these. */
typedef struct api_module {
    const char *name;
    const route_t *routes;
    int nroutes;
    void (*init)(void);        /* registers statements; before the workers start */
    void (*tick)(worker_t *w); /* every 100 ms on each worker, or NULL */
} api_module_t;

/* The dispatcher's state of one worker. */
enum { ADMIT_READS, ADMIT_WRITES, ADMIT_NCLASSES }; /* for /metrics: by the route's .db */

#define API_BATCHERS 4

typedef struct api_worker {
    db_pool_t *primary;
    /* One pool per DB_READ_REPLICA_URL entry (db/replicas.h): DB_READ
     * routes' queries go to one of them when it has replayed far enough. */
    db_pool_t *replicas[DB_REPLICAS_MAX];
    int nreplicas;
    unsigned rr;           /* round robin among equally loaded replicas */
    cache_worker_t *cache; /* NULL: no cache */
    h2o_multithread_receiver_t flights;
    /* Reads while Redis is out (api/outage.h); store_on: the store is used
     * (a Redis is configured, OUTAGE_STORE_MB > 0, no read replicas). */
    outage_prober_t prober;
    int store_on;
    /* Reads by id gathered into one statement while Redis is out (batch.h),
     * one batcher per batch statement; batch_on: a Redis is configured. */
    int batch_on;
    batcher_t batchers[API_BATCHERS];
    int nbatchers;
    h2o_timeout_t batch_pace;
    /* Database work in flight and waiting, per route (api/admission.h):
     * an expensive route cannot queue a cheap one behind it, and reads
     * cannot crowd out writes (orders). One per row of the route table. */
    admission_t *admission;
    int nadmission;
    h2o_timeout_t expiry_timeout; /* 10 ms: refuses queued work that waited too long */
    h2o_timeout_entry_t expiry;
    worker_t *w;
} api_worker_t;

static inline api_worker_t *api_worker(worker_t *w)
{
    return w->app;
}

/* The http_app_t hooks (main.c hands them to the transport via api_app). */
void api_dispatch(rctx_t *r);
int api_worker_init(worker_t *w);
void api_worker_tick(worker_t *w);
/* The dispatcher's share of the 100 ms tick (admission limits). */
void api_dispatch_tick(worker_t *w);
void api_worker_dispose(worker_t *w);
void api_dispatch_init(const config_t *cfg);
/* The route table the dispatcher serves (per-route admission). */
void api_dispatch_routes(const route_t *routes, int n);
void api_dispatch_dispose(void);

/* Appends the admission gauges and counters of all workers (/metrics). */
void api_render_admission_metrics(jbuf_t *b, server_t *s);

/* Renders a 200 body from a result; 0, or an MKD_* code the dispatcher
 * answers with the plan's `missing` as the detail. */
typedef int (*api_render_fn)(rctx_t *r, PGresult *res, jbuf_t *out);

typedef struct api_read {
    const db_stmt_t *stmt;
    const char *const *params; /* copied */
    api_render_fn render;
    const char *missing;      /* the detail of a render refusal ("product 42 not found") */
    const char *key;          /* the normalised request; NULL/"": not cached */
    const cache_tags_t *tags; /* what the entry depends on (cache/tags.h) */
    /* Optional, for reads by one id ($1 of stmt): the same columns, the id
     * first, for `= ANY($1::int8[])` — used while Redis is out (batch.h). */
    const db_stmt_t *batch;
} api_read_t;

/* Answers a GET from the cache or the database (see above). */
void api_read(rctx_t *r, const api_read_t *plan);

/* The read of one resource by its path id ({id} is $1 of `st`): a bad id is
 * a 404 "<what> <raw> not found", the entry is "<key_prefix>:<id>" with the
 * tags `tags_of` gives, and a render refusal says "<what> <id> not found".
 * `batch`: NULL, or api_read_t.batch. */
void api_read_by_id(rctx_t *r, const char *what, const char *key_prefix, const db_stmt_t *st,
                    const db_stmt_t *batch, api_render_fn render,
                    void (*tags_of)(cache_tags_t *t, int64_t id));

/* Runs a statement on the route's pool; answers a refusal or a failure
 * (503, 409 for a constraint, 500) itself, else calls on_result. */
typedef void (*api_result_fn)(rctx_t *r, PGresult *res);
void api_query(rctx_t *r, const db_stmt_t *st, const char *const *params, api_result_fn on_result);

/* After a committed write: invalidates `tags` (NULL or empty: none), then
 * answers (status, content type, body — copied). */
void api_reply_written(rctx_t *r, const cache_tags_t *tags, int status, const char *content_type,
                       const char *body, size_t len);

/* The MKD_* code of the domain outcome in column `c` of row 0 ("ok" → 0). */
int api_outcome(const PGresult *res, int c);

/* How a write answers each refusal its statement can return. */
typedef struct api_refusal {
    int err;            /* the outcome's MKD_* code; 0 ends the table */
    const char *detail; /* a "%s" in it is the path's {id} as sent; for MKD_EINVAL, the field's message */
    const char *field;  /* MKD_EINVAL: the field; NULL: field and message are columns c+1, c+2 */
} api_refusal_t;

/* 0 when the outcome in column `c` is "ok"; otherwise answers with the
 * matching row of `refusals` (a 500 for an outcome nobody expected) and
 * returns -1. */
int api_outcome_or_reply(rctx_t *r, const PGresult *res, int c, const api_refusal_t *refusals);

/* Parses path parameter `idx` as an id; on failure answers 404 naming
 * `what` ("product") and returns -1. */
int api_path_id(rctx_t *r, int idx, const char *what, int64_t *out);

/* The configuration (read-only after start). */
const config_t *api_config(void);

/* Decimal text of an id, for statement parameters. */
void api_id_text(int64_t id, char out[24]);

#endif
