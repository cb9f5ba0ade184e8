/*
 * libFuzzer target: query_parse on arbitrary bytes, then every typed reader
 * on the result. Checks the contracts of src/http/query.h, not just memory
 * safety: slices stay inside the decode buffer, decoded text has no NUL,
 * readers return only their documented values and respect their bounds.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "http/query.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_query: check failed: %s (line %d)\n", #cond, __LINE__);                    \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static void check_slice(slice_t s, const char *buf, size_t n)
{
    CHECK(s.len == 0 || (s.ptr >= buf && s.ptr + s.len <= buf + n));
    CHECK(s.len == 0 || memchr(s.ptr, '\0', s.len) == NULL);
}

/* parse_int64 agrees with strtoll on what it accepts. */
static void check_int64(const char *s, size_t n)
{
    int64_t v = 0;
    if (parse_int64(s, n, &v) != 0)
        return;
    CHECK(n >= 1 && n <= 20);
    char tmp[32];
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    char *end;
    long long w = strtoll(tmp, &end, 10);
    CHECK(errno == 0 && *end == '\0' && w == v);
    int64_t id;
    if (parse_id((slice_t){s, n}, &id) == 0)
        CHECK(id == v && id >= 1 && s[0] != '0');
}

/* A typed-reader call must return 1 (value within bounds), 0 (absent, out
 * untouched) or -1 (error recorded). */
static void check_readers(const query_t *q, const char *name)
{
    verr_t v = {0};
    const slice_t *got = query_get(q, name, &v);
    int before = v.count;

    static const int64_t ranges[][2] = {{1, INT64_MAX}, {0, 100000000000LL}, {INT64_MIN, INT64_MAX}, {-5, 5}};
    for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
        int64_t out = 0x5A5A;
        int c0 = v.count;
        int rc = query_int(q, name, ranges[r][0], ranges[r][1], &out, &v);
        CHECK(rc == 1 || rc == 0 || rc == -1);
        if (rc == 1)
            CHECK(out >= ranges[r][0] && out <= ranges[r][1]);
        else
            CHECK(out == 0x5A5A);
        CHECK(rc != 0 || got == NULL);
        CHECK(rc == 0 || got != NULL);
        if (rc == -1)
            CHECK(v.count > c0 || v.count == VERR_MAX);
    }
    int64_t id = 0x5A5A;
    int rc = query_id(q, name, &id, &v);
    CHECK(rc == 1 || rc == 0 || rc == -1);
    CHECK(rc != 1 || id >= 1);
    CHECK(rc == 1 || id == 0x5A5A);
    CHECK(v.count >= before && v.count <= VERR_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    check_int64(s, size);

    char *buf = malloc(size ? size : 1); /* exactly n bytes, as documented */
    query_t q;
    int rc = query_parse(s, size, &q, buf);
    if (rc != 0) {
        CHECK(rc == MKD_EBADREQ);
        free(buf);
        return 0;
    }
    CHECK(q.count >= 0 && q.count <= QUERY_MAX_PARAMS);
    size_t total = 0;
    for (int i = 0; i < q.count; i++) {
        check_slice(q.params[i].name, buf, size);
        check_slice(q.params[i].value, buf, size);
        total += q.params[i].name.len + q.params[i].value.len;
        check_int64(q.params[i].value.ptr, q.params[i].value.len);
    }
    CHECK(total <= size);

    static const char *const names[] = {"limit",  "city_id", "district_id", "seller_id", "min_price",
                                        "cursor", "sort",    "q",           "",          "a"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        check_readers(&q, names[i]);
    /* Every name actually present, too. */
    for (int i = 0; i < q.count; i++) {
        char name[64];
        if (q.params[i].name.len >= sizeof(name))
            continue;
        memcpy(name, q.params[i].name.ptr, q.params[i].name.len);
        name[q.params[i].name.len] = '\0';
        check_readers(&q, name);
    }

    verr_t v = {0};
    int limit = query_limit(&q, 20, 100, &v);
    CHECK(limit == -1 || (limit >= 1 && limit <= 100));
    CHECK(limit != -1 || v.count >= 1);
    limit = query_limit(&q, 10, 10, &v);
    CHECK(limit == -1 || (limit >= 1 && limit <= 10));
    free(buf);
    return 0;
}
