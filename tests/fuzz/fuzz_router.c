/*
 * libFuzzer target: router_match and router_allow over the real route
 * table (api_init with a zeroed config, as test_router does). The input is
 * "<method byte><path bytes>"; the method is (byte % 5) - 1, so -1 (a
 * method the API never serves) is among them. Checked beyond memory
 * safety: a returned row is in range, has the method asked for and the
 * pattern reported; captured params are non-empty segments inside the
 * input; the reported pattern is the one a plain reference matcher picks
 * (same segments, most literal ones); router_allow never writes past its
 * buffer, always terminates it, and says what the table says.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/config.h"
#include "http/router.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_router: check failed: %s (line %d)\n", #cond, __LINE__);                   \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static const http_app_t *app;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static config_t cfg;
    api_init(&cfg);
    app = api_app();
    if (app == NULL || app->routes == NULL || app->nroutes <= 0)
        abort();
    return 0;
}

/* Segment k (0-based, after the leading '/') of s[0..n), or -1. */
static int segment(const char *s, size_t n, int k, size_t *start, size_t *len)
{
    if (n == 0 || s[0] != '/')
        return -1;
    size_t i = 1;
    for (int j = 0;; j++) {
        size_t e = i;
        while (e < n && s[e] != '/')
            e++;
        if (j == k) {
            *start = i, *len = e - i;
            return 0;
        }
        if (e >= n)
            return -1;
        i = e + 1;
    }
}

static int nsegments(const char *s, size_t n)
{
    int k = 0;
    size_t a, b;
    while (segment(s, n, k, &a, &b) == 0)
        k++;
    return k;
}

/* The reference: does `pattern` match path[0..n)? Same number of
 * segments, literal ones equal, {param} ones non-empty, at most
 * ROUTE_MAX_PARAMS of them. Returns the number of literal segments, or -1. */
static int ref_match(const char *pattern, const char *path, size_t n)
{
    size_t pn = strlen(pattern);
    int k = nsegments(pattern, pn);
    if (k == 0 || nsegments(path, n) != k)
        return -1;
    int literals = 0, params = 0;
    for (int j = 0; j < k; j++) {
        size_t ps, pl, ss, sl;
        segment(pattern, pn, j, &ps, &pl);
        segment(path, n, j, &ss, &sl);
        if (pl >= 2 && pattern[ps] == '{') {
            if (sl == 0 || ++params > ROUTE_MAX_PARAMS)
                return -1;
        } else if (pl == sl && memcmp(pattern + ps, path + ss, pl) == 0) {
            literals++;
        } else {
            return -1;
        }
    }
    return literals;
}

static int count_params(const char *pattern)
{
    int n = 0;
    for (const char *p = pattern; *p; p++)
        n += *p == '{';
    return n;
}

/* The Allow text the table calls for: "GET, HEAD", "POST", "PATCH",
 * "DELETE" in that order, for the methods served at `pattern`. */
static void expected_allow(const char *pattern, char *out, size_t cap)
{
    static const char *const names[M_NMETHODS] = {"GET, HEAD", "POST", "PATCH", "DELETE"};
    size_t o = 0;
    out[0] = '\0';
    for (int m = 0; m < M_NMETHODS; m++) {
        int served = 0;
        for (int i = 0; i < app->nroutes && !served; i++)
            served = app->routes[i].method == m && strcmp(app->routes[i].pattern, pattern) == 0;
        if (served)
            o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? ", " : "", names[m]);
    }
}

static void check_allow(const char *pattern)
{
    char want[128];
    expected_allow(pattern, want, sizeof(want));
    CHECK(want[0] != '\0'); /* a reported pattern is served with some method */
    size_t wl = strlen(want);
    static const size_t sizes[] = {1, 2, 3, 4, 5, 8, 9, 10, 11, 16, 17, 24, 31, 32, 33, 64, 128};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t len = sizes[k];
        /* Exactly sized: ASan sees a write past len. */
        char *buf = malloc(len);
        CHECK(buf != NULL);
        memset(buf, 'X', len);
        router_allow(app->routes, app->nroutes, pattern, buf, len);
        const char *nul = memchr(buf, '\0', len);
        CHECK(nul != NULL);
        size_t got = (size_t)(nul - buf);
        CHECK(got <= wl && memcmp(buf, want, got) == 0); /* a prefix of the whole text */
        if (len > wl)
            CHECK(got == wl); /* and the whole text when it fits */
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int method = data[0] % 5 - 1;
    const char *path = (const char *)data + 1;
    size_t n = size - 1;
    const route_t *routes = app->routes;
    int nroutes = app->nroutes;

    slice_t params[ROUTE_MAX_PARAMS];
    memset(params, 0, sizeof(params));
    const char *pattern = (const char *)1; /* must be overwritten */
    int row = router_match(routes, nroutes, method, (slice_t){path, n}, params, &pattern);
    CHECK(row >= -1 && row < nroutes);
    CHECK(pattern != (const char *)1);

    /* The reference's choice: the matching pattern with the most literal
     * segments (ties would be ambiguous; any of them is acceptable). */
    int best = -1;
    for (int i = 0; i < nroutes; i++) {
        int s = ref_match(routes[i].pattern, path, n);
        if (s > best)
            best = s;
    }
    if (pattern == NULL) {
        CHECK(best == -1);
        CHECK(row == -1);
        return 0;
    }
    CHECK(ref_match(pattern, path, n) == best);

    if (row >= 0) {
        CHECK(method >= 0);
        CHECK(routes[row].method == method);
        CHECK(strcmp(routes[row].pattern, pattern) == 0);
    } else if (method >= 0) {
        /* A 405: the pattern is not served with this method. */
        for (int i = 0; i < nroutes; i++)
            CHECK(!(routes[i].method == method && strcmp(routes[i].pattern, pattern) == 0));
    }

    /* The params of the pattern: non-empty slices of the input, each one
     * whole segment. */
    int np = count_params(pattern);
    CHECK(np <= ROUTE_MAX_PARAMS);
    for (int i = 0; i < np; i++) {
        CHECK(params[i].ptr != NULL && params[i].len > 0);
        CHECK(params[i].ptr >= path && params[i].ptr + params[i].len <= path + n);
        CHECK(params[i].ptr[-1] == '/');
        CHECK(memchr(params[i].ptr, '/', params[i].len) == NULL);
        CHECK(params[i].ptr + params[i].len == path + n || params[i].ptr[params[i].len] == '/');
    }

    check_allow(pattern);
    return 0;
}
