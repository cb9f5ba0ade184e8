#ifndef MARKETD_HTTP_ROUTER_H
#define MARKETD_HTTP_ROUTER_H
/*
 * Routes: a path pattern ("/api/v1/cities/{id}/districts") and one handler
 * per method. Literal segments win over {params}, so "/sellers/popular"
 * is matched before "/sellers/{id}".
 */
#include "core/slice.h"

struct rctx;
typedef void (*handler_fn)(struct rctx *r);

enum { M_GET, M_POST, M_PATCH, M_DELETE, M_NMETHODS };

#define ROUTE_MAX_PARAMS 2

typedef struct route {
    const char *pattern;
    handler_fn handlers[M_NMETHODS];
    int body_json; /* 1: POST/PATCH take a JSON body (1 MiB limit) */
    int cacheable; /* 1: its GET answers carry X-Cache, a strong ETag, and honour If-None-Match */
} route_t;

/* Matches `path`; returns the route index (params filled) or -1. */
int router_match(const route_t *routes, int n, slice_t path, slice_t params[ROUTE_MAX_PARAMS]);
/* Writes the Allow header value of a route ("GET, HEAD, POST") to buf. */
void router_allow(const route_t *route, char *buf, size_t len);

#endif
