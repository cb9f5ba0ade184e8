/*
 * http/trace.c: W3C traceparent parsing (the specification's own examples
 * and its rules for what a receiver ignores) and the ids marketd makes.
 */
#include "http/trace.h"

#include <stdio.h>

#include "unit.h"

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse(const char *s, trace_t *t)
{
    memset(t, 0x55, sizeof(*t));
    return trace_parse(s, strlen(s), t);
}

static void test_valid(void **state)
{
    trace_t t;
    assert_i64_eq(parse(GOOD, &t), 0);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.parent_id, "00f067aa0ba902b7");
    assert_i64_eq(t.flags, 1);
    assert_i64_eq(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &t), 0);
    assert_i64_eq(t.flags, 0);
    assert_i64_eq(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &t), 0);
    assert_i64_eq(t.flags, 255);
    /* A later version may append fields after a '-'; its first four parse. */
    assert_i64_eq(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will", &t),
                  0);
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_i64_eq(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t), 0);
}

static void test_ignored(void **state)
{
    static const char *const bad[] = {
        "",
        "00",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff is invalid */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 is exactly 55 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* all-zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* all-zero parent id */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later version: '-' after 55 */
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        trace_t t;
        if (parse(bad[i], &t) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    trace_t t;
    assert_i64_eq(trace_parse(NULL, 0, &t), -1);
    /* Not NUL-terminated where the length ends: only n bytes are read. */
    assert_i64_eq(trace_parse(GOOD, 54, &t), -1);
}

static int lower_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static void test_new_ids(void **state)
{
    uint64_t rng;
    trace_seed(&rng);
    char a[TRACE_ID_HEX + 1], b[TRACE_ID_HEX + 1], s1[SPAN_ID_HEX + 1], s2[SPAN_ID_HEX + 1];
    trace_new_trace_id(&rng, a);
    trace_new_trace_id(&rng, b);
    trace_new_span_id(&rng, s1);
    trace_new_span_id(&rng, s2);
    assert_true(lower_hex(a, TRACE_ID_HEX) && lower_hex(b, TRACE_ID_HEX));
    assert_true(lower_hex(s1, SPAN_ID_HEX) && lower_hex(s2, SPAN_ID_HEX));
    assert_string_not_equal(a, b);
    assert_string_not_equal(s1, s2);
    /* A made id is one a receiver accepts. */
    char tp[64];
    snprintf(tp, sizeof(tp), "00-%s-%s-01", a, s1);
    trace_t t;
    assert_i64_eq(parse(tp, &t), 0);
    assert_string_equal(t.trace_id, a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_ignored),
        cmocka_unit_test(test_new_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
