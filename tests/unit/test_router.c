/*
 * src/http/router.c: path matching (literal segments beat {params}, exact
 * segment counts, no trailing-slash leniency), parameter capture, the
 * method's row and the Allow header text. Mostly on a route table built
 * here; one test checks the real table (api_app) for the cases api.md
 * depends on and the rules every row keeps.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
#include "core/config.h"
#include "http/router.h"

static void h_get(struct rctx *r)
{
}
static void h_post(struct rctx *r)
{
}
static void h_patch(struct rctx *r)
{
}
static void h_delete(struct rctx *r)
{
}

/* One row per (method, pattern). Patterns are indexed in `patterns`; {id}
 * listed before the literal, so order cannot be what makes the literal
 * win. */
#define P0  "/healthz"
#define P1  "/api/v1/sellers/{id}"
#define P2  "/api/v1/sellers/popular"
#define P3  "/api/v1/sellers"
#define P4  "/api/v1/cities/{id}/districts"
#define P5  "/api/v1/cities/{id}"
#define P6  "/api/v1/orders/{id}/items/{item}"
#define P7  "/api/v1/orders/{id}/items/current"
#define P8  "/api/v1/products/{id}/images"
#define P9  "/api/v1/products/mine/images"
#define P10 "/x/{a}/{b}/{c}" /* more params than ROUTE_MAX_PARAMS */
static const char *const patterns[] = {P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10};
#define NPATTERNS ((int)(sizeof(patterns) / sizeof(patterns[0])))

#define ROW(m, pat, h)                                                                                       \
    {                                                                                                        \
        .method = (m), .pattern = (pat), .handler = (h)                                                      \
    }
static const route_t routes[] = {
    /* 0 */ ROW(M_GET, P0, h_get),
    /* 1 */ ROW(M_GET, P1, h_get),
    /* 2 */ ROW(M_PATCH, P1, h_patch),
    /* 3 */ ROW(M_GET, P2, h_get),
    /* 4 */ ROW(M_GET, P3, h_get),
    /* 5 */ ROW(M_POST, P3, h_post),
    /* 6 */ ROW(M_GET, P4, h_get),
    /* 7 */ ROW(M_POST, P4, h_post),
    /* 8 */ ROW(M_GET, P5, h_get),
    /* 9 */ ROW(M_GET, P6, h_get),
    /* 10 */ ROW(M_DELETE, P6, h_delete),
    /* 11 */ ROW(M_GET, P7, h_get),
    /* 12 */ ROW(M_POST, P8, h_post),
    /* 13 */ ROW(M_GET, P9, h_get),
    /* 14 */ ROW(M_GET, P10, h_get),
};
#define NROUTES ((int)(sizeof(routes) / sizeof(routes[0])))

static int pattern_index(const char *p)
{
    for (int i = 0; i < NPATTERNS; i++)
        if (strcmp(p, patterns[i]) == 0)
            return i;
    return -1;
}

static slice_t params[ROUTE_MAX_PARAMS];

/* Number of {params} in a pattern: router_match fills only that many. */
static int nparams(const char *pattern)
{
    int n = 0;
    for (const char *p = pattern; *p; p++)
        n += *p == '{';
    return n;
}

static int match(const char *path)
{
    /* Exactly-sized heap copy: the router must not read past len. */
    size_t n = strlen(path);
    char *heap = malloc(n ? n : 1);
    memcpy(heap, path, n);
    static char keep[ROUTE_MAX_PARAMS][256];
    /* Method -1 (none served): only the pattern is looked for. */
    const char *pat = NULL;
    int row = router_match(routes, NROUTES, -1, (slice_t){heap, n}, params, &pat);
    if (row != -1)
        fail_msg("router_match(\"%s\") with no method returned row %d", path, row);
    int idx = pat != NULL ? pattern_index(pat) : -1;
    /* Copy the captured params out before the path is freed; entries past
     * the route's own params are unspecified and cleared here. */
    int np = idx >= 0 ? nparams(patterns[idx]) : 0, inside = 1;
    for (int i = 0; i < ROUTE_MAX_PARAMS; i++) {
        if (i >= np) {
            params[i] = (slice_t){NULL, 0};
            continue;
        }
        inside &= params[i].ptr >= heap && params[i].ptr + params[i].len <= heap + n && params[i].len < 256;
        if (inside) {
            memcpy(keep[i], params[i].ptr, params[i].len);
            params[i].ptr = keep[i];
        }
    }
    free(heap);
    if (!inside)
        fail_msg("router_match(\"%s\"): a captured param does not point into the path", path);
    return idx;
}

static void expect_route(const char *path, int want)
{
    int got = match(path);
    if (got != want)
        fail_msg("router_match(\"%s\") = %d (%s), expected %d (%s)", path, got,
                 got >= 0 ? patterns[got] : "none", want, want >= 0 ? patterns[want] : "none");
}

static void test_literal_routes(void **state)
{
    expect_route("/healthz", 0);
    expect_route("/api/v1/sellers", 3);
}

static void test_literal_beats_param(void **state)
{
    expect_route("/api/v1/sellers/popular", 2);
    expect_route("/api/v1/orders/5/items/current", 7);
    expect_route("/api/v1/products/mine/images", 9);
    /* ...and the param route still takes everything else. */
    expect_route("/api/v1/sellers/42", 1);
    assert_slice_eq(params[0], "42");
    expect_route("/api/v1/sellers/popularity", 1);
    assert_slice_eq(params[0], "popularity");
    expect_route("/api/v1/sellers/Popular", 1);
    expect_route("/api/v1/orders/5/items/9", 6);
    expect_route("/api/v1/products/7/images", 8);
    assert_slice_eq(params[0], "7");
}

/* When two routes match, the one with more literal segments wins wherever
 * the literal sits, independent of table order. */
static void test_literal_beats_param_either_order(void **state)
{
    const route_t a[] = {{.method = M_GET, .pattern = "/p/{id}"}, {.method = M_GET, .pattern = "/p/new"}};
    const route_t b[] = {{.method = M_GET, .pattern = "/p/new"}, {.method = M_GET, .pattern = "/p/{id}"}};
    slice_t p[ROUTE_MAX_PARAMS];
    const char *pat;
    assert_i64_eq(router_match(a, 2, M_GET, SLICE_LIT("/p/new"), p, &pat), 1);
    assert_i64_eq(router_match(b, 2, M_GET, SLICE_LIT("/p/new"), p, &pat), 0);
    assert_i64_eq(router_match(a, 2, M_GET, SLICE_LIT("/p/old"), p, &pat), 0);
    assert_slice_eq(p[0], "old");
    assert_i64_eq(router_match(b, 2, M_GET, SLICE_LIT("/p/old"), p, &pat), 1);
    assert_slice_eq(p[0], "old");
}

/* The method picks the row among those of the matched pattern; a pattern
 * served with other methods only is reported (a 405), never another row. */
static void test_method_selects_row(void **state)
{
    slice_t p[ROUTE_MAX_PARAMS];
    const char *pat = NULL;
    assert_i64_eq(router_match(routes, NROUTES, M_GET, SLICE_LIT("/api/v1/sellers"), p, &pat), 4);
    assert_i64_eq(router_match(routes, NROUTES, M_POST, SLICE_LIT("/api/v1/sellers"), p, &pat), 5);
    assert_i64_eq(router_match(routes, NROUTES, M_PATCH, SLICE_LIT("/api/v1/sellers/3"), p, &pat), 2);
    assert_slice_eq(p[0], "3");
    /* The literal pattern wins even though only the {id} pattern has PATCH:
     * /sellers/popular is a resource of its own, and PATCH on it is a 405. */
    pat = NULL;
    assert_i64_eq(router_match(routes, NROUTES, M_PATCH, SLICE_LIT("/api/v1/sellers/popular"), p, &pat), -1);
    assert_string_equal(pat, patterns[2]);
    pat = patterns[0];
    assert_i64_eq(router_match(routes, NROUTES, M_DELETE, SLICE_LIT("/nowhere"), p, &pat), -1);
    assert_null(pat);
    assert_i64_eq(router_match(routes, NROUTES, M_DELETE, SLICE_LIT("/api/v1/orders/1/items/2"), p, &pat),
                  10);
    assert_slice_eq(p[1], "2");
}

static void test_params_captured(void **state)
{
    expect_route("/api/v1/cities/7/districts", 4);
    assert_slice_eq(params[0], "7");
    expect_route("/api/v1/cities/123456789012345/districts", 4);
    assert_slice_eq(params[0], "123456789012345");
    expect_route("/api/v1/cities/7", 5);
    assert_slice_eq(params[0], "7");
    expect_route("/api/v1/orders/11/items/22", 6);
    assert_slice_eq(params[0], "11");
    assert_slice_eq(params[1], "22");
    /* The router captures any non-empty segment; parse_id validates. */
    expect_route("/api/v1/sellers/abc", 1);
    assert_slice_eq(params[0], "abc");
    expect_route("/api/v1/sellers/-1", 1);
    assert_slice_eq(params[0], "-1");
    expect_route("/api/v1/sellers/%2F", 1);
    assert_slice_eq(params[0], "%2F");
}

static void test_trailing_slash_and_extra_segments(void **state)
{
    expect_route("/healthz/", -1);
    expect_route("/api/v1/sellers/", -1);
    expect_route("/api/v1/sellers/popular/", -1);
    expect_route("/api/v1/sellers/42/", -1);
    expect_route("/api/v1/cities/7/districts/", -1);
    expect_route("/api/v1/sellers/42/extra", -1);
    expect_route("/api/v1/sellers/popular/extra", -1);
    expect_route("/api/v1/cities/7/districts/1", -1);
    expect_route("/healthz/x", -1);
}

static void test_missing_segments(void **state)
{
    expect_route("/api/v1/cities", -1);
    expect_route("/api/v1/cities/", -1); /* empty {id} */
    expect_route("/api/v1/cities//districts", -1);
    expect_route("/api/v1/orders/5/items", -1);
    expect_route("/api/v1/orders/5/items/", -1);
    expect_route("/api/v1", -1);
    expect_route("/api", -1);
}

static void test_no_match(void **state)
{
    expect_route("", -1);
    expect_route("/", -1);
    expect_route("healthz", -1);
    expect_route("//healthz", -1);
    expect_route("/healthz//", -1);
    expect_route("/HEALTHZ", -1);
    expect_route("/health", -1);
    expect_route("/healthzz", -1);
    expect_route("/api//v1/sellers", -1);
    expect_route("/api/v2/sellers", -1);
    expect_route("/api/v1/sellers?x=1", -1); /* the query is not part of the path */
    expect_route("/x/1/2/3", -1);            /* more params than can be captured */
}

static void test_empty_table(void **state)
{
    slice_t p[ROUTE_MAX_PARAMS];
    const char *pat = "x";
    assert_i64_eq(router_match(routes, 0, M_GET, SLICE_LIT("/healthz"), p, &pat), -1);
    assert_null(pat);
}

static void test_root_route(void **state)
{
    const route_t r[] = {{.method = M_GET, .pattern = "/"}, {.method = M_GET, .pattern = "/a"}};
    slice_t p[ROUTE_MAX_PARAMS];
    const char *pat;
    assert_i64_eq(router_match(r, 2, M_GET, SLICE_LIT("/"), p, &pat), 0);
    assert_i64_eq(router_match(r, 2, M_GET, SLICE_LIT("/a"), p, &pat), 1);
    assert_i64_eq(router_match(r, 2, M_GET, SLICE_LIT("//"), p, &pat), -1);
    assert_i64_eq(router_match(r, 2, M_GET, SLICE_LIT(""), p, &pat), -1);
}

/* The real table: the cases api.md depends on, and the rules every row
 * must keep. */
static const http_app_t *app;

static int api_row(int method, const char *pattern)
{
    for (int i = 0; i < app->nroutes; i++)
        if (app->routes[i].method == method && strcmp(app->routes[i].pattern, pattern) == 0)
            return i;
    fail_msg("the route table has no %d %s", method, pattern);
    return -1;
}

static int api_match(int method, const char *path, slice_t p[ROUTE_MAX_PARAMS])
{
    const char *pat;
    return router_match(app->routes, app->nroutes, method, (slice_t){path, strlen(path)}, p, &pat);
}

static void test_api_routes(void **state)
{
    static config_t cfg;
    api_init(&cfg);
    app = api_app();
    slice_t p[ROUTE_MAX_PARAMS];
    assert_i64_eq(api_match(M_GET, "/api/v1/sellers/popular", p), api_row(M_GET, "/api/v1/sellers/popular"));
    assert_i64_eq(api_match(M_GET, "/api/v1/sellers/42", p), api_row(M_GET, "/api/v1/sellers/{id}"));
    assert_slice_eq(p[0], "42");
    assert_i64_eq(api_match(M_GET, "/api/v1/cities/3/districts", p),
                  api_row(M_GET, "/api/v1/cities/{id}/districts"));
    assert_slice_eq(p[0], "3");
    assert_i64_eq(api_match(M_PATCH, "/api/v1/products/9", p), api_row(M_PATCH, "/api/v1/products/{id}"));
    assert_i64_eq(api_match(M_GET, "/healthz", p), api_row(M_GET, "/healthz"));
    assert_i64_eq(api_match(M_GET, "/api/v1/products/", p), -1);
    assert_i64_eq(api_match(M_GET, "/nope", p), -1);
    for (int i = 0; i < app->nroutes; i++) {
        const route_t *r = &app->routes[i];
        if (r->handler == NULL)
            fail_msg("%s: no handler", r->pattern);
        /* No (method, pattern) twice: the second could never match. */
        for (int j = i + 1; j < app->nroutes; j++)
            if (r->method == app->routes[j].method && strcmp(r->pattern, app->routes[j].pattern) == 0)
                fail_msg("route %d %s listed twice (%d and %d)", r->method, r->pattern, i, j);
        /* Only GETs are cached, and only reads may go to a replica. */
        if (r->cache != NULL && r->method != M_GET)
            fail_msg("%s: a cache policy on a method other than GET", r->pattern);
        if (r->db == DB_READ && r->method != M_GET)
            fail_msg("%s: a write routed to read replicas", r->pattern);
        /* A GET takes no body; a credential route never requires a token. */
        if (r->method == M_GET && r->body != BODY_NONE)
            fail_msg("%s: a GET with a body policy", r->pattern);
        if (r->limit == LIMIT_AUTH && r->auth != AUTH_NONE)
            fail_msg("%s: a login-class route that requires a login", r->pattern);
    }
    /* Every write of the catalogue needs a user, reference writes an admin. */
    assert_i64_eq(app->routes[api_row(M_POST, "/api/v1/cities")].auth, AUTH_ADMIN);
    assert_i64_eq(app->routes[api_row(M_POST, "/api/v1/products")].auth, AUTH_USER);
    assert_i64_eq(app->routes[api_row(M_POST, "/api/v1/products/{id}/images")].body, BODY_IMAGE);
    assert_i64_eq(app->routes[api_row(M_GET, "/api/v1/orders")].auth, AUTH_USER);
    api_dispose();
}

/* ------------------------------------------------------------ router_allow */

static void expect_allow(const route_t *r, int n, const char *pattern, const char *want)
{
    char buf[64];
    memset(buf, '#', sizeof(buf));
    router_allow(r, n, pattern, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static const route_t all[] = {
    {.method = M_DELETE, .pattern = "/all"}, {.method = M_PATCH, .pattern = "/all"},
    {.method = M_POST, .pattern = "/all"},   {.method = M_GET, .pattern = "/all"},
    {.method = M_DELETE, .pattern = "/d"},
};

static void test_allow(void **state)
{
    expect_allow(routes, NROUTES, patterns[0], "GET, HEAD");
    expect_allow(routes, NROUTES, patterns[1], "GET, HEAD, PATCH");
    expect_allow(routes, NROUTES, patterns[3], "GET, HEAD, POST");
    expect_allow(routes, NROUTES, patterns[6], "GET, HEAD, DELETE");
    expect_allow(routes, NROUTES, patterns[8], "POST");
    /* Table order does not matter; the methods come in one fixed order. */
    expect_allow(all, 5, "/all", "GET, HEAD, POST, PATCH, DELETE");
    expect_allow(all, 5, "/none", "");
    expect_allow(all, 5, "/d", "DELETE");
}

static void test_allow_small_buffer(void **state)
{
    /* Never writes past len and always terminates. */
    for (size_t len = 1; len <= 32; len++) {
        char *buf = malloc(len);
        router_allow(all, 5, "/all", buf, len);
        assert_true(strlen(buf) < len);
        assert_true(strncmp("GET, HEAD, POST, PATCH, DELETE", buf, strlen(buf)) == 0);
        free(buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_routes),
        cmocka_unit_test(test_literal_beats_param),
        cmocka_unit_test(test_literal_beats_param_either_order),
        cmocka_unit_test(test_method_selects_row),
        cmocka_unit_test(test_params_captured),
        cmocka_unit_test(test_trailing_slash_and_extra_segments),
        cmocka_unit_test(test_missing_segments),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_empty_table),
        cmocka_unit_test(test_root_route),
        cmocka_unit_test(test_api_routes),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_allow_small_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
