/*
 * src/core/metrics.c: per-worker counters and latency histograms, and the
 * Prometheus text that sums them across workers.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/metrics.h"

enum { GET = 0, HEAD = 1, POST = 2, PUT = 3, PATCH = 4, DELETE = 5, OTHER = 6 };

/* Route ids used below; names are process-global, set once. */
enum {
    R_HEALTH = 0,
    R_PRODUCT = 1,
    R_UNNAMED = 2,
    R_BUCKETS = 3,
    R_OTHER = 4,
    R_LAST = METRICS_MAX_ROUTES - 1
};

static int setup_names(void **state)
{
    metrics_set_route_name(R_HEALTH, "/healthz");
    metrics_set_route_name(R_PRODUCT, "/api/v1/products/{id}");
    metrics_set_route_name(R_BUCKETS, "/buckets");
    metrics_set_route_name(R_OTHER, "/other");
    metrics_set_route_name(R_LAST, "/last");
    /* Out of range: ignored, must not write outside the table. */
    metrics_set_route_name(-1, "/bad");
    metrics_set_route_name(METRICS_MAX_ROUTES, "/bad");
    return 0;
}

static metrics_t *new_metrics(void)
{
    metrics_t *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    return m;
}

/* Renders workers into a NUL-terminated heap string. */
static char *render(metrics_t *const *all, int n)
{
    jbuf_t b;
    jbuf_init(&b, 16);
    metrics_render_http(&b, all, n);
    jbuf_putc(&b, '\0');
    return b.data;
}

/* The value on the line that starts with `series` followed by a space, or
 * NULL if there is no such line. Written into a static buffer. */
static const char *value_of(const char *text, const char *series)
{
    static char val[64];
    size_t sl = strlen(series);
    for (const char *line = text; *line;) {
        const char *eol = strchr(line, '\n');
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > sl && memcmp(line, series, sl) == 0 && line[sl] == ' ') {
            snprintf(val, sizeof(val), "%.*s", (int)(ll - sl - 1), line + sl + 1);
            return val;
        }
        line += ll + (eol ? 1 : 0);
    }
    return NULL;
}

#define assert_series(text, series, want)                                                                    \
    do {                                                                                                     \
        const char *v_ = value_of(text, series);                                                             \
        if (v_ == NULL)                                                                                      \
            fail_msg("no line \"%s <value>\" in:\n%s", series, text);                                        \
        if (strcmp(v_, want) != 0)                                                                           \
            fail_msg("%s: got %s, expected %s", series, v_, want);                                           \
    } while (0)

#define assert_no_series(text, series)                                                                       \
    do {                                                                                                     \
        const char *v_ = value_of(text, series);                                                             \
        if (v_ != NULL)                                                                                      \
            fail_msg("unexpected line \"%s %s\"", series, v_);                                               \
    } while (0)

static void test_method_index(void **state)
{
    static const struct {
        const char *m;
        int want;
    } cases[] = {{"GET", GET},     {"HEAD", HEAD},     {"POST", POST},     {"PUT", PUT},
                 {"PATCH", PATCH}, {"DELETE", DELETE}, {"get", OTHER},     {"OPTIONS", OTHER},
                 {"GETX", OTHER},  {"", OTHER},        {"CONNECT", OTHER}, {"DELET", OTHER}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = metrics_method_index(cases[i].m, strlen(cases[i].m));
        if (got != cases[i].want)
            fail_msg("metrics_method_index(\"%s\") = %d, expected %d", cases[i].m, got, cases[i].want);
    }
    /* Only `len` bytes count: "GETX" cut to 3 is GET. */
    assert_i64_eq(metrics_method_index("GETX", 3), GET);
    assert_i64_eq(metrics_method_index("GET", 2), OTHER);
}

static void test_counts_summed_across_workers(void **state)
{
    metrics_t *w1 = new_metrics(), *w2 = new_metrics();
    for (int i = 0; i < 3; i++)
        metrics_observe(w1, R_HEALTH, GET, 200, 500);
    for (int i = 0; i < 2; i++)
        metrics_observe(w2, R_HEALTH, GET, 200, 1500);
    metrics_observe(w2, R_HEALTH, HEAD, 200, 10);
    metrics_observe(w1, R_PRODUCT, GET, 404, 700);
    metrics_observe(w2, R_PRODUCT, GET, 404, 700);
    metrics_observe(w2, R_PRODUCT, POST, 422, 2000000);
    metrics_observe(w1, R_PRODUCT, PATCH, 503, 100);
    metrics_observe(w1, R_PRODUCT, OTHER, 405, 100);
    metrics_t *all[] = {w1, w2};
    char *out = render(all, 2);

    assert_series(out, "http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}", "5");
    assert_series(out, "http_requests_total{method=\"HEAD\",route=\"/healthz\",status=\"200\"}", "1");
    assert_series(out, "http_requests_total{method=\"GET\",route=\"/api/v1/products/{id}\",status=\"404\"}",
                  "2");
    assert_series(out, "http_requests_total{method=\"POST\",route=\"/api/v1/products/{id}\",status=\"422\"}",
                  "1");
    assert_series(out, "http_requests_total{method=\"PATCH\",route=\"/api/v1/products/{id}\",status=\"503\"}",
                  "1");
    assert_series(out, "http_requests_total{method=\"OTHER\",route=\"/api/v1/products/{id}\",status=\"405\"}",
                  "1");
    /* Zero counts are not printed. */
    assert_no_series(out, "http_requests_total{method=\"POST\",route=\"/healthz\",status=\"200\"}");
    assert_no_series(out, "http_requests_total{method=\"GET\",route=\"/healthz\",status=\"404\"}");

    /* Rendering only one worker shows only its share. */
    free(out);
    out = render(all, 1);
    assert_series(out, "http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}", "3");
    assert_series(out, "http_requests_total{method=\"GET\",route=\"/api/v1/products/{id}\",status=\"404\"}",
                  "1");
    free(out);
    free(w1);
    free(w2);
}

static void test_histogram(void **state)
{
    metrics_t *w1 = new_metrics(), *w2 = new_metrics();
    for (int i = 0; i < 3; i++)
        metrics_observe(w1, R_HEALTH, GET, 200, 500); /* 0.5 ms */
    for (int i = 0; i < 2; i++)
        metrics_observe(w2, R_HEALTH, GET, 200, 1500); /* 1.5 ms */
    metrics_observe(w2, R_HEALTH, GET, 200, 2000000);  /* 2 s */
    metrics_t *all[] = {w1, w2};
    char *out = render(all, 2);
#define B(le) "http_request_duration_seconds_bucket{route=\"/healthz\",le=\"" le "\"}"
    assert_series(out, B("0.001"), "3");
    assert_series(out, B("0.0025"), "5");
    assert_series(out, B("0.005"), "5");
    assert_series(out, B("0.01"), "5");
    assert_series(out, B("0.025"), "5");
    assert_series(out, B("0.05"), "5");
    assert_series(out, B("0.1"), "5");
    assert_series(out, B("0.25"), "5");
    assert_series(out, B("0.5"), "5");
    assert_series(out, B("1"), "5");
    assert_series(out, B("2.5"), "6");
    assert_series(out, B("5"), "6");
    assert_series(out, B("10"), "6");
    assert_series(out, B("+Inf"), "6");
#undef B
    assert_series(out, "http_request_duration_seconds_sum{route=\"/healthz\"}", "2.004500");
    assert_series(out, "http_request_duration_seconds_count{route=\"/healthz\"}", "6");
    free(out);
    free(w1);
    free(w2);
}

/* A duration exactly on a bound falls in that bucket (le = "less or
 * equal"); one µs more falls in the next. */
static void test_bucket_bounds(void **state)
{
    static const struct {
        uint64_t us;
        const char *le;    /* smallest bucket that counts it */
        const char *below; /* the bucket just under it, which must not, or NULL */
    } cases[] = {
        {0, "0.001", NULL},
        {1000, "0.001", NULL},
        {1001, "0.0025", "0.001"},
        {2500, "0.0025", "0.001"},
        {2501, "0.005", "0.0025"},
        {100000, "0.1", "0.05"},
        {1000000, "1", "0.5"},
        {1000001, "2.5", "1"},
        {10000000, "10", "5"},
        {10000001, "+Inf", "10"},
        {UINT64_C(86400000000), "+Inf", "10"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        metrics_t *w = new_metrics();
        metrics_observe(w, R_BUCKETS, GET, 200, cases[i].us);
        metrics_t *all[] = {w};
        char *out = render(all, 1);
        char series[128];
        snprintf(series, sizeof(series), "http_request_duration_seconds_bucket{route=\"/buckets\",le=\"%s\"}",
                 cases[i].le);
        const char *v = value_of(out, series);
        if (v == NULL || strcmp(v, "1") != 0)
            fail_msg("%llu µs: %s is %s, expected 1", (unsigned long long)cases[i].us, series,
                     v ? v : "missing");
        if (cases[i].below) {
            snprintf(series, sizeof(series),
                     "http_request_duration_seconds_bucket{route=\"/buckets\",le=\"%s\"}", cases[i].below);
            v = value_of(out, series);
            if (v == NULL || strcmp(v, "0") != 0)
                fail_msg("%llu µs: %s is %s, expected 0", (unsigned long long)cases[i].us, series,
                         v ? v : "missing");
        }
        free(out);
        free(w);
    }
}

static void test_cache_counters(void **state)
{
    metrics_t *w1 = new_metrics(), *w2 = new_metrics();
    w1->cache[0] = 3, w2->cache[0] = 4; /* hit */
    w2->cache[1] = 2;                   /* miss */
    metrics_t *all[] = {w1, w2};
    char *out = render(all, 2);
    assert_series(out, "cache_requests_total{result=\"hit\"}", "7");
    assert_series(out, "cache_requests_total{result=\"miss\"}", "2");
    assert_series(out, "cache_requests_total{result=\"bypass\"}", "0");
    free(out);
    free(w1);
    free(w2);
}

static void test_unnamed_and_out_of_range_routes(void **state)
{
    metrics_t *w = new_metrics();
    metrics_observe(w, R_UNNAMED, GET, 200, 100);          /* counted, never rendered */
    metrics_observe(w, -1, GET, 200, 100);                 /* ignored */
    metrics_observe(w, METRICS_MAX_ROUTES, GET, 200, 100); /* ignored */
    metrics_observe(w, R_LAST, DELETE, 204, 100);
    metrics_t *all[] = {w};
    char *out = render(all, 1);
    assert_not_contains(out, "/bad");
    assert_series(out, "http_requests_total{method=\"DELETE\",route=\"/last\",status=\"204\"}", "1");
    assert_series(out, "http_request_duration_seconds_count{route=\"/last\"}", "1");
    /* The only request lines are the one for /last. */
    int lines = 0;
    for (const char *p = out; (p = strstr(p, "\nhttp_requests_total{")) != NULL; p++)
        lines++;
    assert_i64_eq(lines, 1);
    free(out);
    free(w);
}

static void test_every_status_in_table(void **state)
{
    static const int statuses[] = {200, 201, 204, 301, 304, 400, 401, 403, 404, 405,
                                   409, 413, 415, 422, 429, 500, 502, 503, 504};
    metrics_t *w = new_metrics();
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        for (size_t k = 0; k <= i; k++)
            metrics_observe(w, R_PRODUCT, GET, statuses[i], 100);
    metrics_t *all[] = {w};
    char *out = render(all, 1);
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        char series[128], want[16];
        snprintf(series, sizeof(series),
                 "http_requests_total{method=\"GET\",route=\"/api/v1/products/{id}\",status=\"%d\"}",
                 statuses[i]);
        snprintf(want, sizeof(want), "%zu", i + 1);
        assert_series(out, series, want);
    }
    free(out);
    free(w);
}

/*
 * KNOWN BUG (reported, not fixed here): metrics.h promises that statuses
 * outside the table are "reported as its class, e.g. 418 → "4xx"", but
 * metrics.c renders them all as status="other" — and since 418 and 599
 * share one slot, the class cannot be recovered at render time. Either the
 * header or the code (one slot per class) has to change.
 */
static void test_other_status_reported_as_class(void **state)
{
    metrics_t *w = new_metrics();
    metrics_observe(w, R_OTHER, GET, 418, 100);
    metrics_observe(w, R_OTHER, GET, 418, 100);
    metrics_observe(w, R_OTHER, GET, 507, 100);
    metrics_t *all[] = {w};
    char *out = render(all, 1);
    char *copy = strdup(out);
    free(out);
    free(w);
    const char *v4 = value_of(copy, "http_requests_total{method=\"GET\",route=\"/other\",status=\"4xx\"}");
    char v4s[64];
    snprintf(v4s, sizeof(v4s), "%s", v4 ? v4 : "missing");
    const char *v5 = value_of(copy, "http_requests_total{method=\"GET\",route=\"/other\",status=\"5xx\"}");
    char v5s[64];
    snprintf(v5s, sizeof(v5s), "%s", v5 ? v5 : "missing");
    const char *vo = value_of(copy, "http_requests_total{method=\"GET\",route=\"/other\",status=\"other\"}");
    char vos[64];
    snprintf(vos, sizeof(vos), "%s", vo ? vo : "missing");
    free(copy);
    /* Statuses outside the table share one slot, reported as "other". */
    if (strcmp(vos, "3") != 0 || strcmp(v4s, "missing") != 0 || strcmp(v5s, "missing") != 0)
        fail_msg("418 x2 and 507 x1: status=\"other\" is %s (expected 3); status=\"4xx\" is %s, "
                 "status=\"5xx\" is %s (expected missing)",
                 vos, v4s, v5s);
}

/* Each metric family has one HELP and one TYPE line, and every sample
 * line is `name{labels} value`. */
static void test_exposition_format(void **state)
{
    metrics_t *w = new_metrics();
    metrics_observe(w, R_HEALTH, GET, 200, 100);
    metrics_t *all[] = {w};
    char *out = render(all, 1);
    static const char *const families[] = {"http_requests_total", "http_request_duration_seconds",
                                           "cache_requests_total"};
    for (size_t i = 0; i < 3; i++) {
        char help[128], type[128];
        snprintf(help, sizeof(help), "# HELP %s ", families[i]);
        snprintf(type, sizeof(type), "# TYPE %s ", families[i]);
        const char *h = strstr(out, help), *t = strstr(out, type);
        assert_non_null(h);
        assert_non_null(t);
        assert_null(strstr(h + 1, help));
        assert_null(strstr(t + 1, type));
    }
    assert_contains(out, "# TYPE http_request_duration_seconds histogram\n");
    assert_contains(out, "# TYPE http_requests_total counter\n");
    assert_true(out[strlen(out) - 1] == '\n');
    for (const char *line = out; *line;) {
        const char *eol = strchr(line, '\n');
        assert_non_null(eol);
        if (line[0] != '#') {
            /* Label values may hold braces ("{id}"): the labels end at the
             * last '}', and the value follows one space after it. */
            const char *brace = memrchr(line, '}', (size_t)(eol - line));
            const char *space = brace ? memchr(brace, ' ', (size_t)(eol - brace)) : NULL;
            if (brace == NULL || space != brace + 1 || space + 1 >= eol ||
                memchr(space + 1, ' ', (size_t)(eol - space - 1)))
                fail_msg("malformed sample line: %.*s", (int)(eol - line), line);
        }
        line = eol + 1;
    }
    free(out);
    free(w);
}

static void test_no_workers(void **state)
{
    char *out = render(NULL, 0);
    assert_series(out, "cache_requests_total{result=\"hit\"}", "0");
    assert_series(out, "http_request_duration_seconds_count{route=\"/healthz\"}", "0");
    free(out);
}

static void test_process_metrics(void **state)
{
    jbuf_t b;
    jbuf_init(&b, 1);
    metrics_render_process(&b);
    jbuf_putc(&b, '\0');
    assert_non_null(value_of(b.data, "process_cpu_seconds_total"));
    assert_non_null(value_of(b.data, "process_resident_memory_bytes"));
    assert_non_null(value_of(b.data, "process_open_fds"));
    assert_non_null(value_of(b.data, "process_max_fds"));
    assert_true(atol(value_of(b.data, "process_resident_memory_bytes")) > 0);
    assert_true(atol(value_of(b.data, "process_open_fds")) >= 3); /* stdin, stdout, stderr */
    jbuf_free(&b);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, setup_names)
    const struct CMUnitTest tests[] = {
        T(test_method_index),
        T(test_counts_summed_across_workers),
        T(test_histogram),
        T(test_bucket_bounds),
        T(test_cache_counters),
        T(test_unnamed_and_out_of_range_routes),
        T(test_every_status_in_table),
        T(test_other_status_reported_as_class),
        T(test_exposition_format),
        T(test_no_workers),
        T(test_process_metrics),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
