/*
 * src/http/router.c: path matching (literal segments beat {params}, exact
 * segment counts, no trailing-slash leniency), parameter capture and the
 * Allow header text. Mostly on a route table built here; one test checks
 * the real api_routes table for the cases api.md depends on.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "api/api.h"
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

/* {id} listed before the literal, so order cannot be what makes the
 * literal win. */
static const route_t routes[] = {
    /* 0 */ {"/healthz", {[M_GET] = h_get}, 0},
    /* 1 */ {"/api/v1/sellers/{id}", {[M_GET] = h_get, [M_PATCH] = h_patch}, 1},
    /* 2 */ {"/api/v1/sellers/popular", {[M_GET] = h_get}, 0},
    /* 3 */ {"/api/v1/sellers", {[M_GET] = h_get, [M_POST] = h_post}, 1},
    /* 4 */ {"/api/v1/cities/{id}/districts", {[M_GET] = h_get, [M_POST] = h_post}, 1},
    /* 5 */ {"/api/v1/cities/{id}", {[M_GET] = h_get}, 0},
    /* 6 */ {"/api/v1/orders/{id}/items/{item}", {[M_GET] = h_get, [M_DELETE] = h_delete}, 0},
    /* 7 */ {"/api/v1/orders/{id}/items/current", {[M_GET] = h_get}, 0},
    /* 8 */ {"/api/v1/products/{id}/images", {[M_POST] = h_post}, 1},
    /* 9 */ {"/api/v1/products/mine/images", {[M_GET] = h_get}, 0},
    /* 10 */ {"/x/{a}/{b}/{c}", {[M_GET] = h_get}, 0}, /* more params than ROUTE_MAX_PARAMS */
};
#define NROUTES ((int)(sizeof(routes) / sizeof(routes[0])))

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
    int idx = router_match(routes, NROUTES, (slice_t){heap, n}, params);
    /* Copy the captured params out before the path is freed; entries past
     * the route's own params are unspecified and cleared here. */
    int np = idx >= 0 ? nparams(routes[idx].pattern) : 0, inside = 1;
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
                 got >= 0 ? routes[got].pattern : "none", want, want >= 0 ? routes[want].pattern : "none");
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
    const route_t a[] = {{"/p/{id}", {[M_GET] = h_get}, 0}, {"/p/new", {[M_GET] = h_get}, 0}};
    const route_t b[] = {{"/p/new", {[M_GET] = h_get}, 0}, {"/p/{id}", {[M_GET] = h_get}, 0}};
    slice_t p[ROUTE_MAX_PARAMS];
    assert_i64_eq(router_match(a, 2, SLICE_LIT("/p/new"), p), 1);
    assert_i64_eq(router_match(b, 2, SLICE_LIT("/p/new"), p), 0);
    assert_i64_eq(router_match(a, 2, SLICE_LIT("/p/old"), p), 0);
    assert_slice_eq(p[0], "old");
    assert_i64_eq(router_match(b, 2, SLICE_LIT("/p/old"), p), 1);
    assert_slice_eq(p[0], "old");
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
    assert_i64_eq(router_match(routes, 0, SLICE_LIT("/healthz"), p), -1);
}

static void test_root_route(void **state)
{
    const route_t r[] = {{"/", {[M_GET] = h_get}, 0}, {"/a", {[M_GET] = h_get}, 0}};
    slice_t p[ROUTE_MAX_PARAMS];
    assert_i64_eq(router_match(r, 2, SLICE_LIT("/"), p), 0);
    assert_i64_eq(router_match(r, 2, SLICE_LIT("/a"), p), 1);
    assert_i64_eq(router_match(r, 2, SLICE_LIT("//"), p), -1);
    assert_i64_eq(router_match(r, 2, SLICE_LIT(""), p), -1);
}

/* The real table: the cases api.md depends on. */
static int api_index(const char *pattern)
{
    for (int i = 0; i < api_routes_count; i++)
        if (strcmp(api_routes[i].pattern, pattern) == 0)
            return i;
    fail_msg("api_routes has no route \"%s\"", pattern);
    return -1;
}

static void test_api_routes(void **state)
{
    slice_t p[ROUTE_MAX_PARAMS];
    assert_i64_eq(router_match(api_routes, api_routes_count, SLICE_LIT("/api/v1/sellers/popular"), p),
                  api_index("/api/v1/sellers/popular"));
    assert_i64_eq(router_match(api_routes, api_routes_count, SLICE_LIT("/api/v1/sellers/42"), p),
                  api_index("/api/v1/sellers/{id}"));
    assert_slice_eq(p[0], "42");
    assert_i64_eq(router_match(api_routes, api_routes_count, SLICE_LIT("/api/v1/cities/3/districts"), p),
                  api_index("/api/v1/cities/{id}/districts"));
    assert_slice_eq(p[0], "3");
    assert_i64_eq(router_match(api_routes, api_routes_count, SLICE_LIT("/api/v1/products/9"), p),
                  api_index("/api/v1/products/{id}"));
    assert_i64_eq(router_match(api_routes, api_routes_count, SLICE_LIT("/healthz"), p),
                  api_index("/healthz"));
    assert_i64_eq(router_match(api_routes, api_routes_count, SLICE_LIT("/api/v1/products/"), p), -1);
    assert_i64_eq(router_match(api_routes, api_routes_count, SLICE_LIT("/nope"), p), -1);
    /* No pattern is listed twice (the second could never match). */
    for (int i = 0; i < api_routes_count; i++)
        for (int j = i + 1; j < api_routes_count; j++)
            if (strcmp(api_routes[i].pattern, api_routes[j].pattern) == 0)
                fail_msg("route \"%s\" listed twice (%d and %d)", api_routes[i].pattern, i, j);
}

/* ------------------------------------------------------------ router_allow */

static void expect_allow(const route_t *r, const char *want)
{
    char buf[64];
    memset(buf, '#', sizeof(buf));
    router_allow(r, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void test_allow(void **state)
{
    expect_allow(&routes[0], "GET, HEAD");
    expect_allow(&routes[1], "GET, HEAD, PATCH");
    expect_allow(&routes[3], "GET, HEAD, POST");
    expect_allow(&routes[6], "GET, HEAD, DELETE");
    expect_allow(&routes[8], "POST");
    const route_t all = {
        "/all", {[M_GET] = h_get, [M_POST] = h_post, [M_PATCH] = h_patch, [M_DELETE] = h_delete}, 0};
    expect_allow(&all, "GET, HEAD, POST, PATCH, DELETE");
    const route_t none = {"/none", {0}, 0};
    expect_allow(&none, "");
    const route_t del = {"/d", {[M_DELETE] = h_delete}, 0};
    expect_allow(&del, "DELETE");
}

static void test_allow_small_buffer(void **state)
{
    const route_t all = {
        "/all", {[M_GET] = h_get, [M_POST] = h_post, [M_PATCH] = h_patch, [M_DELETE] = h_delete}, 0};
    /* Never writes past len and always terminates. */
    for (size_t len = 1; len <= 32; len++) {
        char *buf = malloc(len);
        router_allow(&all, buf, len);
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
