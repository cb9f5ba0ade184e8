/*
 * src/http/query.c: query-string splitting and %-decoding, duplicate
 * detection, the typed readers (query_int, query_id, query_limit) and the
 * strict integer parsers (parse_int64, parse_id).
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "http/query.h"

/* Parses a NUL-terminated literal; the decode buffer is static so slices in
 * the returned query stay valid until the next call. */
static char qbuf[8192];
static query_t qq;

static int parse(const char *s)
{
    memset(&qq, 0xA5, sizeof(qq)); /* catch fields left unset */
    return query_parse(s, strlen(s), &qq, qbuf);
}

/* Parses `s` and asserts success. */
static const query_t *parsed(const char *s)
{
    int rc = parse(s);
    if (rc != 0)
        fail_msg("query_parse(\"%s\") = %d (%s), expected 0", s, rc, mkd_strerror(rc));
    return &qq;
}

static void assert_bad(const char *s)
{
    int rc = parse(s);
    if (rc != MKD_EBADREQ)
        fail_msg("query_parse(\"%s\") = %d, expected MKD_EBADREQ (%d)", s, rc, MKD_EBADREQ);
}

/* ------------------------------------------------------------------ parse */

static void test_parse_empty(void **state)
{
    assert_i64_eq(query_parse("", 0, &qq, qbuf), 0);
    assert_i64_eq(qq.count, 0);
}

static void test_parse_splits_pairs(void **state)
{
    const query_t *q = parsed("city_id=3&limit=20&sort=price_asc");
    assert_i64_eq(q->count, 3);
    assert_slice_eq(q->params[0].name, "city_id");
    assert_slice_eq(q->params[0].value, "3");
    assert_slice_eq(q->params[1].name, "limit");
    assert_slice_eq(q->params[1].value, "20");
    assert_slice_eq(q->params[2].name, "sort");
    assert_slice_eq(q->params[2].value, "price_asc");
}

static void test_parse_skips_empty_pairs(void **state)
{
    const query_t *q = parsed("&a=1&&&b=2&");
    assert_i64_eq(q->count, 2);
    assert_slice_eq(q->params[0].name, "a");
    assert_slice_eq(q->params[0].value, "1");
    assert_slice_eq(q->params[1].name, "b");
    assert_slice_eq(q->params[1].value, "2");

    q = parsed("&&&");
    assert_i64_eq(q->count, 0);
    q = parsed("&");
    assert_i64_eq(q->count, 0);
}

static void test_parse_name_without_equals(void **state)
{
    const query_t *q = parsed("flag&a=1&other");
    assert_i64_eq(q->count, 3);
    assert_slice_eq(q->params[0].name, "flag");
    assert_slice_eq(q->params[0].value, "");
    assert_slice_eq(q->params[1].name, "a");
    assert_slice_eq(q->params[1].value, "1");
    assert_slice_eq(q->params[2].name, "other");
    assert_slice_eq(q->params[2].value, "");
}

static void test_parse_empty_value_and_empty_name(void **state)
{
    const query_t *q = parsed("a=&=x&=");
    assert_i64_eq(q->count, 3);
    assert_slice_eq(q->params[0].name, "a");
    assert_slice_eq(q->params[0].value, "");
    assert_slice_eq(q->params[1].name, "");
    assert_slice_eq(q->params[1].value, "x");
    assert_slice_eq(q->params[2].name, "");
    assert_slice_eq(q->params[2].value, "");
}

static void test_parse_value_keeps_later_equals(void **state)
{
    const query_t *q = parsed("a=b=c&d==");
    assert_i64_eq(q->count, 2);
    assert_slice_eq(q->params[0].name, "a");
    assert_slice_eq(q->params[0].value, "b=c");
    assert_slice_eq(q->params[1].name, "d");
    assert_slice_eq(q->params[1].value, "=");
}

static void test_parse_plus_is_space(void **state)
{
    const query_t *q = parsed("q=red+leather++shoes&a+b=+");
    assert_i64_eq(q->count, 2);
    assert_slice_eq(q->params[0].value, "red leather  shoes");
    assert_slice_eq(q->params[1].name, "a b");
    assert_slice_eq(q->params[1].value, " ");
    /* An encoded plus is a literal plus. */
    q = parsed("q=c%2B%2b");
    assert_slice_eq(q->params[0].value, "c++");
}

static void test_parse_percent_decoding(void **state)
{
    const query_t *q = parsed("%71=%41%62%63&x=%7e%7E");
    assert_slice_eq(q->params[0].name, "q");
    assert_slice_eq(q->params[0].value, "Abc");
    assert_slice_eq(q->params[1].value, "~~");
    /* Multi-byte UTF-8, upper and lower case hex. */
    q = parsed("q=%D0%BC%d0%b5%D0%B1%D0%B5%D0%BB%D1%8C");
    assert_slice_eq(q->params[0].value, "мебель");
    /* Decoded '&' and '=' are data, not separators. */
    q = parsed("q=a%26b%3Dc&n%3D1=2");
    assert_i64_eq(q->count, 2);
    assert_slice_eq(q->params[0].name, "q");
    assert_slice_eq(q->params[0].value, "a&b=c");
    assert_slice_eq(q->params[1].name, "n=1");
    assert_slice_eq(q->params[1].value, "2");
    /* Decoding happens once: %25 is '%', not the start of another escape. */
    q = parsed("q=%2541");
    assert_slice_eq(q->params[0].value, "%41");
    /* Non-ASCII bytes given raw pass through unchanged. */
    q = parsed("q=\xC3\xA9t\xC3\xA9");
    assert_slice_eq(q->params[0].value, "\xC3\xA9t\xC3\xA9");
}

static void test_parse_bad_escapes(void **state)
{
    assert_bad("a=%");
    assert_bad("a=%4");
    assert_bad("a=%zz");
    assert_bad("a=%4z");
    assert_bad("a=%z4");
    assert_bad("a=%00");
    assert_bad("a=1%");
    assert_bad("a=1%2");
    assert_bad("%");
    assert_bad("%=1");
    assert_bad("a%=1");
    assert_bad("%zz=1");
    assert_bad("%00=1");
    assert_bad("ok=1&a=%G0");
    assert_bad("a=%%41");
    assert_bad("a=% 1");
    assert_bad("a=%-1");
    assert_bad("a=%+1");
    assert_bad("flag%");
}

static void test_parse_raw_nul_rejected(void **state)
{
    static const char s[] = "a=1\0b&c=2";
    assert_i64_eq(query_parse(s, sizeof(s) - 1, &qq, qbuf), MKD_EBADREQ);
    static const char s2[] = "a\0=1";
    assert_i64_eq(query_parse(s2, sizeof(s2) - 1, &qq, qbuf), MKD_EBADREQ);
}

/* The parser reads only s[0..n): an escape cut by the length is malformed
 * even when the bytes after n would complete it. */
static void test_parse_respects_length(void **state)
{
    static const char s[] = "a=%41&b=2";
    assert_i64_eq(query_parse(s, 4, &qq, qbuf), MKD_EBADREQ); /* "a=%4" */
    assert_i64_eq(query_parse(s, 3, &qq, qbuf), MKD_EBADREQ); /* "a=%" */
    assert_i64_eq(query_parse(s, 5, &qq, qbuf), 0);           /* "a=%41" */
    assert_i64_eq(qq.count, 1);
    assert_slice_eq(qq.params[0].value, "A");
    assert_i64_eq(query_parse(s, 7, &qq, qbuf), 0); /* "a=%41&b" */
    assert_i64_eq(qq.count, 2);
    assert_slice_eq(qq.params[1].name, "b");
    assert_slice_eq(qq.params[1].value, "");

    /* An exact-size heap copy, so ASan sees any read past n. */
    const char *txt = "q=%D0%BC+x&limit=5";
    size_t n = strlen(txt);
    char *heap = malloc(n), *out = malloc(n);
    memcpy(heap, txt, n);
    assert_i64_eq(query_parse(heap, n, &qq, out), 0);
    assert_i64_eq(qq.count, 2);
    assert_slice_eq(qq.params[0].value, "\xD0\xBC x");
    assert_slice_eq(qq.params[1].value, "5");
    free(heap);
    free(out);
}

/* Decoded slices point into the caller's buffer. */
static void test_parse_slices_point_into_buf(void **state)
{
    const query_t *q = parsed("abc=def&g=h");
    for (int i = 0; i < q->count; i++) {
        assert_true(q->params[i].name.ptr >= qbuf &&
                    q->params[i].name.ptr + q->params[i].name.len <= qbuf + 11);
        assert_true(q->params[i].value.ptr >= qbuf &&
                    q->params[i].value.ptr + q->params[i].value.len <= qbuf + 11);
    }
}

static void test_parse_param_limit(void **state)
{
    char s[1024];
    size_t o = 0;
    for (int i = 0; i < QUERY_MAX_PARAMS; i++)
        o += (size_t)snprintf(s + o, sizeof(s) - o, "%sp%d=%d", i ? "&" : "", i, i);
    const query_t *q = parsed(s);
    assert_i64_eq(q->count, QUERY_MAX_PARAMS);
    assert_slice_eq(q->params[QUERY_MAX_PARAMS - 1].name, "p31");
    assert_slice_eq(q->params[QUERY_MAX_PARAMS - 1].value, "31");

    /* Empty pairs do not count towards the limit. */
    char s2[1100];
    snprintf(s2, sizeof(s2), "&&%s&&&", s);
    q = parsed(s2);
    assert_i64_eq(q->count, QUERY_MAX_PARAMS);

    /* One more is rejected. */
    snprintf(s2, sizeof(s2), "%s&extra=1", s);
    assert_bad(s2);
    snprintf(s2, sizeof(s2), "%s&extra", s);
    assert_bad(s2);
}

/* -------------------------------------------------------------- query_get */

static void test_get_present_and_absent(void **state)
{
    verr_t v = {0};
    const query_t *q = parsed("a=1&ab=2&flag");
    const slice_t *s = query_get(q, "a", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "1");
    s = query_get(q, "ab", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "2");
    s = query_get(q, "flag", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "");
    assert_null(query_get(q, "b", &v));
    assert_null(query_get(q, "A", &v)); /* names are case-sensitive */
    assert_null(query_get(q, "", &v));
    assert_i64_eq(v.count, 0);
}

static void test_get_decoded_name(void **state)
{
    verr_t v = {0};
    const query_t *q = parsed("%63ity%5Fid=7&a+b=x");
    const slice_t *s = query_get(q, "city_id", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "7");
    s = query_get(q, "a b", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "x");
    assert_i64_eq(v.count, 0);
}

static void test_get_duplicate_reported(void **state)
{
    verr_t v = {0};
    const query_t *q = parsed("limit=5&x=1&limit=7");
    const slice_t *s = query_get(q, "limit", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "5"); /* the first value */
    assert_i64_eq(v.count, 1);
    assert_string_equal(v.items[0].field, "limit");
    assert_string_equal(v.items[0].message, "given more than once");
    /* Other names are unaffected. */
    s = query_get(q, "x", &v);
    assert_non_null(s);
    assert_i64_eq(v.count, 1);
}

static void test_get_triplicate_reported_once(void **state)
{
    verr_t v = {0};
    const query_t *q = parsed("a=1&a=2&a=3");
    const slice_t *s = query_get(q, "a", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "1");
    assert_i64_eq(v.count, 1);
}

static void test_get_duplicate_via_encoding(void **state)
{
    /* "a" and "%61" are the same name once decoded. */
    verr_t v = {0};
    const query_t *q = parsed("a=1&%61=2");
    const slice_t *s = query_get(q, "a", &v);
    assert_non_null(s);
    assert_slice_eq(*s, "1");
    assert_i64_eq(v.count, 1);
    assert_string_equal(v.items[0].field, "a");
}

static void test_verr_keeps_first_max(void **state)
{
    verr_t v = {0};
    for (int i = 0; i < VERR_MAX + 5; i++)
        verr_add(&v, "f", "error %d", i);
    assert_i64_eq(v.count, VERR_MAX);
    assert_string_equal(v.items[0].message, "error 0");
    assert_string_equal(v.items[VERR_MAX - 1].message, "error 15");
}

static void test_verr_truncates_long_strings(void **state)
{
    verr_t v = {0};
    char longf[200];
    memset(longf, 'f', sizeof(longf) - 1);
    longf[sizeof(longf) - 1] = '\0';
    verr_add(&v, longf, "%s", longf);
    assert_i64_eq(v.count, 1);
    assert_i64_eq(strlen(v.items[0].field), sizeof(v.items[0].field) - 1);
    assert_i64_eq(strlen(v.items[0].message), sizeof(v.items[0].message) - 1);
}

/* -------------------------------------------------------------- query_int */

/* query_int on a one-parameter query "n=<value>". */
static int qint(const char *value, int64_t min, int64_t max, int64_t *out, verr_t *v)
{
    char s[256];
    snprintf(s, sizeof(s), "n=%s", value);
    parsed(s);
    return query_int(&qq, "n", min, max, out, v);
}

static void test_int_valid(void **state)
{
    verr_t v = {0};
    int64_t out = -99;
    assert_i64_eq(qint("5", 1, 10, &out, &v), 1);
    assert_i64_eq(out, 5);
    assert_i64_eq(qint("1", 1, 10, &out, &v), 1);
    assert_i64_eq(out, 1);
    assert_i64_eq(qint("10", 1, 10, &out, &v), 1);
    assert_i64_eq(out, 10);
    assert_i64_eq(qint("-3", -5, 5, &out, &v), 1);
    assert_i64_eq(out, -3);
    assert_i64_eq(qint("0", 0, 100000000000LL, &out, &v), 1);
    assert_i64_eq(out, 0);
    assert_i64_eq(qint("100000000000", 0, 100000000000LL, &out, &v), 1);
    assert_i64_eq(out, 100000000000LL);
    assert_i64_eq(qint("-9223372036854775808", INT64_MIN, INT64_MAX, &out, &v), 1);
    assert_i64_eq(out, INT64_MIN);
    assert_i64_eq(qint("9223372036854775807", INT64_MIN, INT64_MAX, &out, &v), 1);
    assert_i64_eq(out, INT64_MAX);
    assert_i64_eq(v.count, 0);
}

static void test_int_absent_leaves_out(void **state)
{
    verr_t v = {0};
    int64_t out = 12345;
    parsed("other=1");
    assert_i64_eq(query_int(&qq, "n", 0, 10, &out, &v), 0);
    assert_i64_eq(out, 12345);
    assert_i64_eq(v.count, 0);
}

static void test_int_junk_rejected(void **state)
{
    static const char *const junk[] = {
        "1.5",
        "abc",
        "",
        "99999999999999999999",
        "%201",
        "1%20",
        "+1",
        "0x10",
        "1e3",
        "--1",
        "-",
        "1-",
        "١",
        "9223372036854775808",
        "-9223372036854775809",
        "12a",
        "a12",
        "1,000",
        "%091",
    };
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        verr_t v = {0};
        int64_t out = 777;
        int rc = qint(junk[i], INT64_MIN, INT64_MAX, &out, &v);
        if (rc != -1)
            fail_msg("query_int(\"%s\") = %d, expected -1", junk[i], rc);
        assert_i64_eq(out, 777);
        assert_i64_eq(v.count, 1);
        assert_string_equal(v.items[0].field, "n");
        assert_string_equal(v.items[0].message, "must be an integer");
    }
}

static void test_int_out_of_range(void **state)
{
    verr_t v = {0};
    int64_t out = 777;
    assert_i64_eq(qint("-3", 0, 10, &out, &v), -1);
    assert_i64_eq(out, 777);
    assert_i64_eq(v.count, 1);
    assert_string_equal(v.items[0].field, "n");
    assert_string_equal(v.items[0].message, "must be between 0 and 10");
    assert_i64_eq(qint("11", 0, 10, &out, &v), -1);
    assert_i64_eq(qint("0", 1, 10, &out, &v), -1);
    assert_i64_eq(qint("100000000001", 0, 100000000000LL, &out, &v), -1);
    assert_i64_eq(out, 777);
    assert_i64_eq(v.count, 4);
}

static void test_int_duplicate(void **state)
{
    verr_t v = {0};
    int64_t out = 0;
    parsed("n=3&n=4");
    /* The first value is returned, and the duplicate is an error the
     * handler sees in v. */
    assert_i64_eq(query_int(&qq, "n", 0, 10, &out, &v), 1);
    assert_i64_eq(out, 3);
    assert_i64_eq(v.count, 1);
    assert_string_equal(v.items[0].field, "n");
}

/* --------------------------------------------------------------- query_id */

static int qid(const char *value, int64_t *out, verr_t *v)
{
    char s[256];
    snprintf(s, sizeof(s), "id=%s", value);
    parsed(s);
    return query_id(&qq, "id", out, v);
}

static void test_id_valid(void **state)
{
    verr_t v = {0};
    int64_t out = 0;
    assert_i64_eq(qid("1", &out, &v), 1);
    assert_i64_eq(out, 1);
    assert_i64_eq(qid("42", &out, &v), 1);
    assert_i64_eq(out, 42);
    assert_i64_eq(qid("9223372036854775807", &out, &v), 1);
    assert_i64_eq(out, INT64_MAX);
    assert_i64_eq(v.count, 0);
}

static void test_id_invalid(void **state)
{
    static const char *const bad[] = {"0",
                                      "-1",
                                      "-3",
                                      "abc",
                                      "",
                                      "1.5",
                                      "9223372036854775808",
                                      "99999999999999999999",
                                      " 1",
                                      "1 ",
                                      "+1",
                                      "-9223372036854775808"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        verr_t v = {0};
        int64_t out = 555;
        int rc = qid(bad[i], &out, &v);
        if (rc != -1)
            fail_msg("query_id(\"%s\") = %d, expected -1", bad[i], rc);
        assert_i64_eq(out, 555);
        assert_i64_eq(v.count, 1);
        assert_string_equal(v.items[0].field, "id");
    }
    verr_t v = {0};
    int64_t out = 555;
    parsed("x=1");
    assert_i64_eq(query_id(&qq, "id", &out, &v), 0);
    assert_i64_eq(out, 555);
    assert_i64_eq(v.count, 0);
}

/* ------------------------------------------------------------ query_limit */

static int qlimit(const char *value, verr_t *v)
{
    char s[256];
    snprintf(s, sizeof(s), "limit=%s", value);
    parsed(s);
    return query_limit(&qq, 20, 100, v);
}

static void test_limit_default(void **state)
{
    verr_t v = {0};
    parsed("");
    assert_i64_eq(query_limit(&qq, 20, 100, &v), 20);
    parsed("a=1&LIMIT=5");
    assert_i64_eq(query_limit(&qq, 10, 100, &v), 10);
    assert_i64_eq(v.count, 0);
}

static void test_limit_valid_and_clamped(void **state)
{
    verr_t v = {0};
    assert_i64_eq(qlimit("1", &v), 1);
    assert_i64_eq(qlimit("50", &v), 50);
    assert_i64_eq(qlimit("100", &v), 100);
    assert_i64_eq(qlimit("101", &v), 100);
    assert_i64_eq(qlimit("1000000", &v), 100);
    assert_i64_eq(qlimit("2147483648", &v), 100); /* > INT_MAX: no truncation to int */
    assert_i64_eq(qlimit("4294967297", &v), 100);
    assert_i64_eq(qlimit("9223372036854775807", &v), 100);
    assert_i64_eq(qlimit("9223372036854775808", &v), 100);
    assert_i64_eq(qlimit("99999999999999999999", &v), 100);
    assert_i64_eq(qlimit("1234567890123456789012345678901234567890", &v), 100); /* 40 digits */
    assert_i64_eq(v.count, 0);
}

static void test_limit_invalid(void **state)
{
    static const struct {
        const char *value, *message;
    } bad[] = {
        {"0", "must be at least 1"},     {"-1", "must be at least 1"},
        {"-100", "must be at least 1"},  {"-9223372036854775808", "must be at least 1"},
        {"x", "must be an integer"},     {"", "must be an integer"},
        {"1.5", "must be an integer"},   {"10x", "must be an integer"},
        {"%2010", "must be an integer"}, {"-99999999999999999999", "must be an integer"},
        {"+5", "must be an integer"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        verr_t v = {0};
        int rc = qlimit(bad[i].value, &v);
        if (rc != -1)
            fail_msg("query_limit(\"%s\") = %d, expected -1", bad[i].value, rc);
        assert_i64_eq(v.count, 1);
        assert_string_equal(v.items[0].field, "limit");
        assert_string_equal(v.items[0].message, bad[i].message);
    }
}

/*
 * Zero-padded numbers are numbers: the "huge → clamp" shortcut must look
 * past leading zeros (limit=0000000000000000000 is zero, so 422, not 100).
 *
 * Regression test for a bug found and since fixed (the text says what was wrong): past 19 characters a
 * zero-padded small value reaches parse_int64, whose 19-digit cap rejects it, so limit=00000000000000000005
 * is "must be an integer" (422) instead of 5, and a zero-padded large value is 422 instead of clamped.
 */
static void test_limit_zero_padded_value(void **state)
{
    verr_t v = {0};
    assert_i64_eq(qlimit("0005", &v), 5);
    assert_i64_eq(qlimit("000000000000000005", &v), 5);  /* 18 chars */
    assert_i64_eq(qlimit("0000000000000000005", &v), 5); /* 19 chars */
    assert_i64_eq(
        qlimit("0000000000000000000000000000000000000000000000000000000000001000000000000000000000", &v),
        100); /* huge after the zeros: clamped */
    assert_i64_eq(v.count, 0);
}

static void test_limit_zero_padded_zero(void **state)
{
    verr_t v = {0};
    assert_i64_eq(qlimit("000000000000000000", &v), -1); /* 18 chars */
    assert_i64_eq(v.count, 1);
    assert_string_equal(v.items[0].message, "must be at least 1");
    v.count = 0;
    assert_i64_eq(qlimit("0000000000000000000", &v), -1); /* 19 chars */
    assert_i64_eq(v.count, 1);
    assert_string_equal(v.items[0].message, "must be at least 1");
    v.count = 0;
    assert_i64_eq(qlimit("00000000000000000000000000000", &v), -1); /* 29 chars */
    assert_i64_eq(v.count, 1);
}

static void test_limit_zero_padded_long(void **state)
{
    verr_t v = {0};
    assert_i64_eq(qlimit("00000000000000000005", &v), 5); /* 20 chars: FAILS, 422 */
    assert_i64_eq(qlimit("0000000000000000000000000000000000000042", &v), 42);
    assert_i64_eq(qlimit("0000000000000000000000000000000000000500", &v), 100);
    assert_i64_eq(v.count, 0);
}

static void test_limit_duplicate(void **state)
{
    verr_t v = {0};
    parsed("limit=5&limit=6");
    assert_i64_eq(query_limit(&qq, 20, 100, &v), 5);
    assert_i64_eq(v.count, 1);
    assert_string_equal(v.items[0].field, "limit");
}

/* ------------------------------------------------------------ parse_int64 */

static int pi64(const char *s, int64_t *out)
{
    return parse_int64(s, strlen(s), out);
}

static void test_int64_valid(void **state)
{
    static const struct {
        const char *s;
        int64_t v;
    } ok[] = {
        {"0", 0},
        {"-0", 0},
        {"7", 7},
        {"-7", -7},
        {"007", 7},
        {"9223372036854775807", INT64_MAX},
        {"-9223372036854775808", INT64_MIN},
        {"-9223372036854775807", -INT64_MAX},
        {"1000000000000000000", 1000000000000000000LL},
        {"0000000000000000001", 1}, /* 19 digits */
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t out = 12345;
        int rc = pi64(ok[i].s, &out);
        if (rc != 0)
            fail_msg("parse_int64(\"%s\") = %d, expected 0", ok[i].s, rc);
        if (out != ok[i].v)
            fail_msg("parse_int64(\"%s\") gave %lld, expected %lld", ok[i].s, (long long)out,
                     (long long)ok[i].v);
    }
}

static void test_int64_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        "-",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "abc",
        "1a",
        "0x1",
        "--1",
        "9223372036854775808",
        "-9223372036854775809",
        "9999999999999999999",   /* 19 digits, > INT64_MAX */
        "18446744073709551615",  /* UINT64_MAX */
        "18446744073709551616",  /* 2^64 */
        "00000000000000000001",  /* 20 digits */
        "-00000000000000000001", /* 20 digits */
        "99999999999999999999",
        "123456789012345678901234567890",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t out = 12345;
        int rc = pi64(bad[i], &out);
        if (rc != MKD_EINVAL)
            fail_msg("parse_int64(\"%s\") = %d, expected MKD_EINVAL", bad[i], rc);
        assert_i64_eq(out, 12345);
    }
}

static void test_int64_respects_length(void **state)
{
    int64_t out = 0;
    assert_i64_eq(parse_int64("123abc", 3, &out), 0);
    assert_i64_eq(out, 123);
    assert_i64_eq(parse_int64("123", 0, &out), MKD_EINVAL);
    assert_i64_eq(parse_int64("-5", 1, &out), MKD_EINVAL);
    static const char nul[] = "1\0002";
    assert_i64_eq(parse_int64(nul, 3, &out), MKD_EINVAL);
}

/* --------------------------------------------------------------- parse_id */

static int pid(const char *s, int64_t *out)
{
    return parse_id((slice_t){s, strlen(s)}, out);
}

static void test_id_parse(void **state)
{
    int64_t out = 0;
    assert_i64_eq(pid("1", &out), 0);
    assert_i64_eq(out, 1);
    assert_i64_eq(pid("10", &out), 0);
    assert_i64_eq(out, 10);
    assert_i64_eq(pid("9223372036854775807", &out), 0);
    assert_i64_eq(out, INT64_MAX);

    static const char *const bad[] = {"0", "00", "01", "-1", "-0",  "abc", "9223372036854775808",
                                      "",  " 1", "1 ", "+1", "1.0", "1/2", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        out = 4242;
        int rc = pid(bad[i], &out);
        if (rc != MKD_EINVAL)
            fail_msg("parse_id(\"%s\") = %d, expected MKD_EINVAL", bad[i], rc);
        assert_i64_eq(out, 4242);
    }
    /* A slice into a longer path. */
    const char *path = "42/districts";
    assert_i64_eq(parse_id((slice_t){path, 2}, &out), 0);
    assert_i64_eq(out, 42);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_empty),
        cmocka_unit_test(test_parse_splits_pairs),
        cmocka_unit_test(test_parse_skips_empty_pairs),
        cmocka_unit_test(test_parse_name_without_equals),
        cmocka_unit_test(test_parse_empty_value_and_empty_name),
        cmocka_unit_test(test_parse_value_keeps_later_equals),
        cmocka_unit_test(test_parse_plus_is_space),
        cmocka_unit_test(test_parse_percent_decoding),
        cmocka_unit_test(test_parse_bad_escapes),
        cmocka_unit_test(test_parse_raw_nul_rejected),
        cmocka_unit_test(test_parse_respects_length),
        cmocka_unit_test(test_parse_slices_point_into_buf),
        cmocka_unit_test(test_parse_param_limit),
        cmocka_unit_test(test_get_present_and_absent),
        cmocka_unit_test(test_get_decoded_name),
        cmocka_unit_test(test_get_duplicate_reported),
        cmocka_unit_test(test_get_triplicate_reported_once),
        cmocka_unit_test(test_get_duplicate_via_encoding),
        cmocka_unit_test(test_verr_keeps_first_max),
        cmocka_unit_test(test_verr_truncates_long_strings),
        cmocka_unit_test(test_int_valid),
        cmocka_unit_test(test_int_absent_leaves_out),
        cmocka_unit_test(test_int_junk_rejected),
        cmocka_unit_test(test_int_out_of_range),
        cmocka_unit_test(test_int_duplicate),
        cmocka_unit_test(test_id_valid),
        cmocka_unit_test(test_id_invalid),
        cmocka_unit_test(test_limit_default),
        cmocka_unit_test(test_limit_valid_and_clamped),
        cmocka_unit_test(test_limit_invalid),
        cmocka_unit_test(test_limit_zero_padded_value),
        cmocka_unit_test(test_limit_zero_padded_zero),
        cmocka_unit_test(test_limit_zero_padded_long),
        cmocka_unit_test(test_limit_duplicate),
        cmocka_unit_test(test_int64_valid),
        cmocka_unit_test(test_int64_invalid),
        cmocka_unit_test(test_int64_respects_length),
        cmocka_unit_test(test_id_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
