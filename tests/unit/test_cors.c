/*
 * src/http/cors.c: the allow-list match (exact bytes, spaces around commas
 * ignored, nothing for an unset list) and the filter of
 * Access-Control-Request-Headers (allowed names only, each once, in lower
 * case, never past the buffer).
 */
#include "unit.h"

#include <stdlib.h>

#include "http/cors.h"

static int allowed(const char *list, const char *origin)
{
    /* An exactly-sized copy: ASan catches a read past the origin. */
    size_t n = strlen(origin);
    char *o = malloc(n ? n : 1);
    memcpy(o, origin, n);
    int rc = cors_origin_allowed(list, o, n);
    free(o);
    return rc;
}

static void test_origin_match(void **state)
{
    const char *list = "https://shop.example, http://localhost:3000 ,https://a.example:8443";
    static const char *yes[] = {"https://shop.example", "http://localhost:3000", "https://a.example:8443"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!allowed(list, yes[i]))
            fail_msg("\"%s\" refused by \"%s\"", yes[i], list);
    static const char *no[] = {"",
                               "https://shop.example/",
                               "http://shop.example",
                               "https://SHOP.example",
                               "https://shop.example.evil",
                               "https://evil.shop.example",
                               "https://shop.exampl",
                               "http://localhost:30000",
                               "http://localhost",
                               "null",
                               " https://shop.example",
                               "https://shop.example, http://localhost:3000"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (allowed(list, no[i]))
            fail_msg("\"%s\" allowed by \"%s\"", no[i], list);
    assert_false(allowed(NULL, "https://shop.example"));
    assert_false(allowed("", "https://shop.example"));
    assert_true(allowed("https://one.example", "https://one.example"));
}

static void expect_headers(const char *requested, const char *want)
{
    char out[128];
    memset(out, 'X', sizeof(out));
    size_t n = cors_allowed_headers(requested, strlen(requested), out, sizeof(out));
    if (n != strlen(want) || strcmp(out, want) != 0)
        fail_msg("cors_allowed_headers(\"%s\") = \"%s\" (%zu), expected \"%s\"", requested, out, n, want);
}

static void test_request_headers(void **state)
{
    expect_headers("authorization,content-type", "authorization, content-type");
    expect_headers("Content-Type, Authorization", "content-type, authorization");
    expect_headers("IDEMPOTENCY-KEY , if-none-match,\tx-request-id",
                   "idempotency-key, if-none-match, x-request-id");
    expect_headers("x-evil, cookie, authorization, x-evil2", "authorization");
    expect_headers("authorization, authorization", "authorization");
    expect_headers("x-evil", "");
    expect_headers("", "");
    expect_headers(",,, ,", "");
    expect_headers("authorizationx, xauthorization, content", "");
}

static void test_request_headers_small_buffer(void **state)
{
    char out[20];
    const char *req = "authorization, content-type";
    size_t n = cors_allowed_headers(req, strlen(req), out, sizeof(out));
    assert_i64_eq(n, strlen("authorization"));
    assert_string_equal(out, "authorization");
    char one[1];
    assert_i64_eq(cors_allowed_headers(req, strlen(req), one, sizeof(one)), 0);
    assert_i64_eq(one[0], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_origin_match),
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_request_headers_small_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
