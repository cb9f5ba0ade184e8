#ifndef MARKETD_HTTP_ROUTER_H
#define MARKETD_HTTP_ROUTER_H
/*
 * The route table: one row per (method, path pattern), with the policies the
 * dispatcher enforces before the handler runs (after redis's command table:
 * commands as data, policy checked once, centrally). The transport reads
 * only `method` and `pattern`; the rest is the dispatcher's (src/api/).
 *
 * Patterns are "/api/v1/cities/{id}/districts": literal segments win over
 * {params}, so "/sellers/popular" is matched before "/sellers/{id}".
 */
#include <stddef.h>

#include "core/slice.h"

struct rctx;
struct cache_policy; /* defined by the dispatcher (api/dispatch.h) */
typedef void (*handler_fn)(struct rctx *r);

/* HEAD is served by the GET route. */
enum { M_GET, M_POST, M_PATCH, M_DELETE, M_NMETHODS };

#define ROUTE_MAX_PARAMS 2

typedef enum {
    AUTH_NONE,  /* anyone */
    AUTH_USER,  /* a valid bearer token; r->user_id is its user */
    AUTH_ADMIN, /* a valid token whose user is an administrator now */
} route_auth_t;

typedef enum {
    BODY_NONE,  /* a body, if any, is ignored */
    BODY_JSON,  /* application/json object, parsed into r->body (1 MiB) */
    BODY_IMAGE, /* raw image bytes (5 MiB); the handler checks the type */
} route_body_t;

typedef enum {
    DB_PRIMARY, /* reads its own writes, or writes */
    DB_READ,    /* may be served by a read replica (S4) */
} route_db_t;

/* The rate-limit class of a route, for the edge: per-address request rates
 * are the proxy's (deploy/), which can take the classes from `marketd
 * routes`. marketd itself limits nothing per address; it throttles failed
 * logins per account (api/throttle.h), which needs the email in the body,
 * so the login handler does it, not the dispatcher. */
typedef enum {
    LIMIT_NONE, /* health, readiness, metrics */
    LIMIT_API,  /* ordinary API traffic */
    LIMIT_AUTH, /* credential checks: login, registration */
} route_limit_t;

typedef struct route {
    int method; /* M_* */
    const char *pattern;
    handler_fn handler;
    const char *name; /* the handler's name: its OpenAPI operationId and log name */
    route_auth_t auth;
    route_body_t body;
    const struct cache_policy *cache; /* NULL: not cached (no ETag, no X-Cache) */
    route_db_t db;
    route_limit_t limit;
} route_t;

/* `.handler` and `.name` of a route in one: {.method = M_GET, …, HANDLER(cities_list)}. */
#define HANDLER(fn) .handler = (fn), .name = #fn

/* The body limit of a kind (bytes). */
size_t route_body_max(route_body_t kind);

/*
 * Finds the route for (method, path). Returns its index with `params`
 * filled, or -1: then *pattern is the pattern the path matched when it is
 * served with other methods only (a 405), or NULL when no pattern matches
 * (a 404). `method` < 0 (a method the API never serves) never matches.
 */
int router_match(const route_t *routes, int n, int method, slice_t path, slice_t params[ROUTE_MAX_PARAMS],
                 const char **pattern);

/* The Allow header value of the routes sharing `pattern` ("GET, HEAD, POST"). */
void router_allow(const route_t *routes, int n, const char *pattern, char *buf, size_t len);

#endif
