/*
 * src/core/json.c: the output buffer, string escaping (quotes, backslash,
 * control characters, UTF-8 validation with U+FFFD replacement), integers
 * and keys; utf8_valid.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/json.h"

#define FFFD "\xEF\xBF\xBD"

/* json_str of s[0..n) (copied to an exactly-sized heap block so ASan sees
 * any read past n) compared with `want` (NUL-terminated). */
static void expect_str_n(const char *s, size_t n, const char *want)
{
    char *heap = malloc(n ? n : 1);
    memcpy(heap, s, n);
    jbuf_t b;
    jbuf_init(&b, 1);
    json_str(&b, heap, n);
    free(heap);
    size_t wl = strlen(want);
    if (b.len != wl || memcmp(b.data, want, wl) != 0) {
        char in[512], got[512], exp[512];
        fail_msg("json_str(\"%s\")\n  got:      %s\n  expected: %s", show(s, n, in, sizeof(in)),
                 show(b.data, b.len, got, sizeof(got)), show(want, wl, exp, sizeof(exp)));
    }
    if (!utf8_valid(b.data, b.len)) {
        char in[512];
        fail_msg("json_str(\"%s\") output is not valid UTF-8", show(s, n, in, sizeof(in)));
    }
    jbuf_free(&b);
}

#define expect_str(lit, want) expect_str_n(lit, sizeof(lit) - 1, want)

static void expect_valid(const char *s, size_t n, int want)
{
    char *heap = malloc(n ? n : 1);
    memcpy(heap, s, n);
    int got = utf8_valid(heap, n);
    free(heap);
    if (got != want) {
        char in[256];
        fail_msg("utf8_valid(\"%s\") = %d, expected %d", show(s, n, in, sizeof(in)), got, want);
    }
}

#define VALID(lit)   expect_valid(lit, sizeof(lit) - 1, 1)
#define INVALID(lit) expect_valid(lit, sizeof(lit) - 1, 0)

/* ---------------------------------------------------------------- json_str */

static void test_str_plain(void **state)
{
    expect_str("", "\"\"");
    expect_str("abc", "\"abc\"");
    expect_str("Hello, world! 123 /path?x=1&y=<2>", "\"Hello, world! 123 /path?x=1&y=<2>\"");
    expect_str("'single'", "\"'single'\"");
    expect_str("\x7f", "\"\\u007f\""); /* DEL: escaped, though JSON does not require it */
    expect_str(" ~", "\" ~\"");
}

static void test_str_quotes_and_backslash(void **state)
{
    expect_str("\"", "\"\\\"\"");
    expect_str("\\", "\"\\\\\"");
    expect_str("a\"b\\c", "\"a\\\"b\\\\c\"");
    expect_str("\\\"", "\"\\\\\\\"\"");
    expect_str("\"\"\"", "\"\\\"\\\"\\\"\"");
    expect_str("C:\\dir\\file", "\"C:\\\\dir\\\\file\"");
    expect_str("\\u0041", "\"\\\\u0041\""); /* a literal backslash-u stays literal */
}

static void test_str_short_escapes(void **state)
{
    expect_str("\n", "\"\\n\"");
    expect_str("\r", "\"\\r\"");
    expect_str("\t", "\"\\t\"");
    expect_str("line1\nline2\r\n\tend", "\"line1\\nline2\\r\\n\\tend\"");
}

static void test_str_control_chars(void **state)
{
    for (int c = 0; c < 0x20; c++) {
        char in[1] = {(char)c}, want[16];
        if (c == '\n')
            snprintf(want, sizeof(want), "\"\\n\"");
        else if (c == '\r')
            snprintf(want, sizeof(want), "\"\\r\"");
        else if (c == '\t')
            snprintf(want, sizeof(want), "\"\\t\"");
        else
            snprintf(want, sizeof(want), "\"\\u%04x\"", c);
        expect_str_n(in, 1, want);
    }
    expect_str("\x01", "\"\\u0001\"");
    expect_str("\x1f", "\"\\u001f\"");
    expect_str("\b\f", "\"\\u0008\\u000c\"");
    expect_str("\x1b[31mred", "\"\\u001b[31mred\"");
}

static void test_str_embedded_nul(void **state)
{
    expect_str("a\0b", "\"a\\u0000b\"");
    expect_str("\0", "\"\\u0000\"");
    expect_str("\0\0", "\"\\u0000\\u0000\"");
}

static void test_str_valid_utf8_passes(void **state)
{
    expect_str("\xC3\xA9", "\"\xC3\xA9\"");                 /* é, 2 bytes */
    expect_str("мебель", "\"мебель\"");                     /* Cyrillic */
    expect_str("\xE2\x82\xAC 5", "\"\xE2\x82\xAC 5\"");     /* €, 3 bytes */
    expect_str("\xF0\x9F\x98\x80", "\"\xF0\x9F\x98\x80\""); /* U+1F600, 4 */
    expect_str("\xC2\x80", "\"\xC2\x80\"");                 /* U+0080 */
    expect_str("\xDF\xBF", "\"\xDF\xBF\"");                 /* U+07FF */
    expect_str("\xE0\xA0\x80", "\"\xE0\xA0\x80\"");         /* U+0800 */
    expect_str("\xED\x9F\xBF", "\"\xED\x9F\xBF\"");         /* U+D7FF */
    expect_str("\xEE\x80\x80", "\"\xEE\x80\x80\"");         /* U+E000 */
    expect_str("\xEF\xBF\xBF", "\"\xEF\xBF\xBF\"");         /* U+FFFF */
    expect_str("\xF0\x90\x80\x80", "\"\xF0\x90\x80\x80\""); /* U+10000 */
    expect_str("\xF4\x8F\xBF\xBF", "\"\xF4\x8F\xBF\xBF\""); /* U+10FFFF */
    expect_str("\xEF\xBB\xBF"
               "bom",
               "\"\xEF\xBB\xBF"
               "bom\"");                                       /* BOM is a char */
    expect_str("a\"\xC3\xA9\"\n", "\"a\\\"\xC3\xA9\\\"\\n\""); /* mixed */
    expect_str(FFFD, "\"" FFFD "\"");                          /* U+FFFD itself */
}

static void test_str_invalid_utf8_replaced(void **state)
{
    expect_str("\x80", "\"" FFFD "\""); /* lone continuation */
    expect_str("\xBF", "\"" FFFD "\"");
    expect_str("\xFF", "\"" FFFD "\"");
    expect_str("\xFE", "\"" FFFD "\"");
    expect_str("a\x80z", "\"a" FFFD "z\"");
    expect_str("\xC3", "\"" FFFD "\""); /* truncated at the end */
    expect_str("\xC3"
               "A",
               "\"" FFFD "A\"");                          /* lead without continuation */
    expect_str("\xE2\x82", "\"" FFFD FFFD "\"");          /* truncated 3-byte */
    expect_str("\xF0\x9F\x98", "\"" FFFD FFFD FFFD "\""); /* truncated 4-byte */
    expect_str("\xE2\x82"
               "A",
               "\"" FFFD FFFD "A\"");
    expect_str("\xC3\xA9\x80\xC3\xA9", "\"\xC3\xA9" FFFD "\xC3\xA9\"");     /* resynchronises */
    expect_str("\xF8\x88\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD FFFD "\""); /* 5-byte form */
    expect_str("\xFC\x84\x80\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD FFFD FFFD "\"");
    /* A control character after a bad lead byte is still escaped. */
    expect_str("\xC3\n", "\"" FFFD "\\n\"");
    expect_str("\xC3\"", "\"" FFFD "\\\"\"");
}

static void test_str_overlong_rejected(void **state)
{
    expect_str("\xC0\x80", "\"" FFFD FFFD "\"");                   /* NUL, 2 bytes */
    expect_str("\xC0\xAF", "\"" FFFD FFFD "\"");                   /* '/' */
    expect_str("\xC1\xBF", "\"" FFFD FFFD "\"");                   /* U+007F */
    expect_str("\xE0\x80\x80", "\"" FFFD FFFD FFFD "\"");          /* NUL, 3 bytes */
    expect_str("\xE0\x9F\xBF", "\"" FFFD FFFD FFFD "\"");          /* U+07FF */
    expect_str("\xF0\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\""); /* NUL, 4 bytes */
    expect_str("\xF0\x8F\xBF\xBF", "\"" FFFD FFFD FFFD FFFD "\""); /* U+FFFF */
}

static void test_str_surrogates_and_out_of_range(void **state)
{
    expect_str("\xED\xA0\x80", "\"" FFFD FFFD FFFD "\"");                            /* U+D800 */
    expect_str("\xED\xAD\xBF", "\"" FFFD FFFD FFFD "\"");                            /* U+DB7F */
    expect_str("\xED\xB0\x80", "\"" FFFD FFFD FFFD "\"");                            /* U+DC00 */
    expect_str("\xED\xBF\xBF", "\"" FFFD FFFD FFFD "\"");                            /* U+DFFF */
    expect_str("\xED\xA0\xBD\xED\xB8\x80", "\"" FFFD FFFD FFFD FFFD FFFD FFFD "\""); /* CESU pair */
    expect_str("\xF4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");                   /* U+110000 */
    expect_str("\xF5\x80\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");
    expect_str("\xF7\xBF\xBF\xBF", "\"" FFFD FFFD FFFD FFFD "\"");
}

/* The worst case (every byte a control character, 6 bytes out) fits the
 * reservation and keeps what the buffer already held. */
static void test_str_worst_case_and_append(void **state)
{
    enum { N = 5000 };
    char *in = malloc(N);
    memset(in, 0x01, N);
    jbuf_t b;
    jbuf_init(&b, 4);
    jbuf_puts(&b, "{\"k\":");
    json_str(&b, in, N);
    jbuf_putc(&b, '}');
    assert_i64_eq(b.len, 5 + 2 + 6 * N + 1);
    assert_memory_equal(b.data, "{\"k\":\"\\u0001\\u0001", 18);
    assert_memory_equal(b.data + b.len - 8, "\\u0001\"}", 8);
    jbuf_free(&b);

    /* All-invalid bytes: 3 bytes each. */
    memset(in, 0xFF, N);
    jbuf_init(&b, 1);
    json_str(&b, in, N);
    assert_i64_eq(b.len, 2 + 3 * N);
    assert_true(utf8_valid(b.data, b.len));
    jbuf_free(&b);
    free(in);
}

static void test_cstr(void **state)
{
    jbuf_t b;
    jbuf_init(&b, 16);
    json_cstr(&b, "say \"hi\"\n");
    assert_i64_eq(b.len, strlen("\"say \\\"hi\\\"\\n\""));
    assert_memory_equal(b.data, "\"say \\\"hi\\\"\\n\"", b.len);
    jbuf_free(&b);
}

/* -------------------------------------------------------------- utf8_valid */

static void test_utf8_valid(void **state)
{
    VALID("");
    VALID("plain ascii ~\x7f");
    VALID("\xC3\xA9");
    VALID("мебель и свет");
    VALID("\xE2\x82\xAC");
    VALID("\xF0\x9F\x98\x80");
    VALID("\xF4\x8F\xBF\xBF");
    VALID("\xED\x9F\xBF\xEE\x80\x80");
    VALID("\x01\x1f\n\t");
}

static void test_utf8_invalid(void **state)
{
    INVALID("\0");
    INVALID("abc\0def");
    INVALID("\x80");
    INVALID("\xFF");
    INVALID("\xC3");
    INVALID("a\xC3");
    INVALID("\xC3"
            "A");
    INVALID("\xE2\x82");
    INVALID("\xF0\x9F\x98");
    INVALID("\xC0\x80"); /* overlong NUL */
    INVALID("\xC1\xBF");
    INVALID("\xE0\x80\x80");
    INVALID("\xE0\x9F\xBF");
    INVALID("\xF0\x80\x80\x80");
    INVALID("\xF0\x8F\xBF\xBF");
    INVALID("\xED\xA0\x80"); /* surrogates */
    INVALID("\xED\xBF\xBF");
    INVALID("\xF4\x90\x80\x80"); /* > U+10FFFF */
    INVALID("\xF5\x80\x80\x80");
    INVALID("\xF8\x88\x80\x80\x80");
    INVALID("ok\xC3\xA9"
            "then\x80");
}

static void test_utf8_respects_length(void **state)
{
    const char *s = "ab\xC3\xA9";
    assert_i64_eq(utf8_valid(s, 3), 0); /* cuts é in half */
    assert_i64_eq(utf8_valid(s, 4), 1);
    assert_i64_eq(utf8_valid(s, 2), 1);
    assert_i64_eq(utf8_valid(s, 0), 1);
}

/* ---------------------------------------------------------------- json_int */

static void expect_int(int64_t v, const char *want)
{
    jbuf_t b;
    jbuf_init(&b, 1);
    jbuf_putc(&b, '[');
    json_int(&b, v);
    jbuf_putc(&b, ']');
    char got[64];
    snprintf(got, sizeof(got), "%.*s", (int)b.len, b.data);
    assert_string_equal(got, want);
    jbuf_free(&b);
}

static void test_int(void **state)
{
    expect_int(0, "[0]");
    expect_int(1, "[1]");
    expect_int(-1, "[-1]");
    expect_int(129900, "[129900]");
    expect_int(INT64_MAX, "[9223372036854775807]");
    expect_int(INT64_MIN, "[-9223372036854775808]");
    expect_int(INT64_MIN + 1, "[-9223372036854775807]");
    expect_int(1000000000000000000LL, "[1000000000000000000]");
}

static void test_int_exact_capacity(void **state)
{
    /* A buffer already exactly full must grow for the digits. */
    for (size_t fill = 0; fill < 40; fill++) {
        jbuf_t b;
        jbuf_init(&b, fill ? fill : 1);
        for (size_t i = 0; i < fill; i++)
            jbuf_putc(&b, 'x');
        json_int(&b, INT64_MIN);
        assert_i64_eq(b.len, fill + 20);
        assert_memory_equal(b.data + fill, "-9223372036854775808", 20);
        jbuf_free(&b);
    }
}

/* ---------------------------------------------------------------- json_key */

static void test_key(void **state)
{
    jbuf_t b;
    jbuf_init(&b, 1);
    jbuf_putc(&b, '{');
    json_key(&b, "price");
    json_int(&b, 129900);
    jbuf_putc(&b, ',');
    json_key(&b, "currency");
    json_cstr(&b, "RUB");
    jbuf_putc(&b, '}');
    char got[128];
    snprintf(got, sizeof(got), "%.*s", (int)b.len, b.data);
    assert_string_equal(got, "{\"price\":129900,\"currency\":\"RUB\"}");
    jbuf_free(&b);
}

/* -------------------------------------------------------------------- jbuf */

static void test_jbuf_growth(void **state)
{
    jbuf_t b;
    jbuf_init(&b, 1);
    assert_i64_eq(b.len, 0);
    assert_true(b.cap >= 1);
    char expect[10000];
    for (size_t i = 0; i < sizeof(expect); i++) {
        expect[i] = (char)('a' + i % 26);
        if (i % 3 == 0)
            jbuf_putc(&b, expect[i]);
        else
            jbuf_append(&b, &expect[i], 1);
        assert_true(b.len <= b.cap);
    }
    assert_i64_eq(b.len, sizeof(expect));
    assert_memory_equal(b.data, expect, sizeof(expect));

    /* One big append. */
    jbuf_reset(&b);
    assert_i64_eq(b.len, 0);
    size_t cap = b.cap;
    jbuf_append(&b, expect, sizeof(expect));
    assert_i64_eq(b.cap, cap); /* reset keeps the memory */
    assert_memory_equal(b.data, expect, sizeof(expect));
    jbuf_append(&b, expect, sizeof(expect));
    assert_i64_eq(b.len, 2 * sizeof(expect));
    assert_true(b.cap >= b.len);
    assert_memory_equal(b.data + sizeof(expect), expect, sizeof(expect));

    jbuf_free(&b);
    assert_null(b.data);
    assert_i64_eq(b.len, 0);
    assert_i64_eq(b.cap, 0);
}

static void test_jbuf_reserve(void **state)
{
    jbuf_t b;
    jbuf_init(&b, 8);
    jbuf_puts(&b, "abcdefgh");
    assert_i64_eq(b.len, 8);
    jbuf_reserve(&b, 0);
    jbuf_reserve(&b, 100);
    assert_true(b.cap - b.len >= 100);
    assert_memory_equal(b.data, "abcdefgh", 8);
    size_t cap = b.cap;
    jbuf_reserve(&b, 10); /* already room: no change */
    assert_i64_eq(b.cap, cap);
    jbuf_free(&b);

    /* A freed (zeroed) buffer can be used again. */
    jbuf_puts(&b, "again");
    assert_i64_eq(b.len, 5);
    assert_memory_equal(b.data, "again", 5);
    jbuf_free(&b);

    /* Zero initial capacity. */
    jbuf_init(&b, 0);
    jbuf_putc(&b, 'x');
    json_cstr(&b, "y");
    assert_i64_eq(b.len, 4);
    assert_memory_equal(b.data, "x\"y\"", 4);
    jbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_plain),
        cmocka_unit_test(test_str_quotes_and_backslash),
        cmocka_unit_test(test_str_short_escapes),
        cmocka_unit_test(test_str_control_chars),
        cmocka_unit_test(test_str_embedded_nul),
        cmocka_unit_test(test_str_valid_utf8_passes),
        cmocka_unit_test(test_str_invalid_utf8_replaced),
        cmocka_unit_test(test_str_overlong_rejected),
        cmocka_unit_test(test_str_surrogates_and_out_of_range),
        cmocka_unit_test(test_str_worst_case_and_append),
        cmocka_unit_test(test_cstr),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_utf8_respects_length),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_int_exact_capacity),
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_jbuf_growth),
        cmocka_unit_test(test_jbuf_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
