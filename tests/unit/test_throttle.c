/*
 * src/api/throttle.c: the pure parts of login throttling — the account of
 * an email (normalised, keyed), the backoff schedule, Retry-After rounding —
 * and the memory table with an injected clock: waits, forgetting, reset,
 * eviction when every probe slot is taken.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "api/throttle.h"

static throttle_policy_t pol(int free_failures, int64_t base_ms, int64_t max_ms, int64_t forget_ms)
{
    throttle_policy_t p;
    memset(&p, 0, sizeof(p));
    p.free_failures = free_failures;
    p.base_ms = base_ms;
    p.max_ms = max_ms;
    p.forget_ms = forget_ms;
    memcpy(p.secret, "0123456789abcdef0123456789abcdef", 32);
    return p;
}

static void account(const throttle_policy_t *p, const char *email, unsigned char out[THROTTLE_KEY_BYTES])
{
    throttle_account(p, email, strlen(email), out);
}

/* ------------------------------------------------------------ the account */

static void test_account_normalised(void **state)
{
    throttle_policy_t p = pol(5, 1000, 900000, 3600000);
    unsigned char a[THROTTLE_KEY_BYTES], b[THROTTLE_KEY_BYTES];
    account(&p, "anna@example.com", a);
    static const char *same[] = {"Anna@Example.COM", "  anna@example.com", "anna@example.com \t\r\n",
                                 "ANNA@EXAMPLE.COM"};
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        account(&p, same[i], b);
        if (memcmp(a, b, sizeof(a)) != 0)
            fail_msg("\"%s\" is another account than \"anna@example.com\"", same[i]);
    }
    /* Russian Cyrillic folds too. */
    account(&p, "\xd0\x90\xd0\xbd\xd0\xbd\xd0\xb0@example.com", a); /* Анна */
    account(&p, "\xd0\xb0\xd0\xbd\xd0\xbd\xd0\xb0@example.com", b); /* анна */
    assert_memory_equal(a, b, sizeof(a));
    static const char *other[] = {"anna@example.co", "ann a@example.com", "anna@example.com.", ""};
    account(&p, "anna@example.com", a);
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        account(&p, other[i], b);
        if (memcmp(a, b, sizeof(a)) == 0)
            fail_msg("\"%s\" is the same account as \"anna@example.com\"", other[i]);
    }
}

static void test_account_keyed(void **state)
{
    throttle_policy_t p = pol(5, 1000, 900000, 3600000), q = p;
    q.secret[0] ^= 1;
    unsigned char a[THROTTLE_KEY_BYTES], b[THROTTLE_KEY_BYTES];
    account(&p, "anna@example.com", a);
    account(&q, "anna@example.com", b);
    if (memcmp(a, b, sizeof(a)) == 0)
        fail_msg("the account does not depend on the secret");
}

/* A 1,024-byte email (the most a login accepts) and longer: no overflow. */
static void test_account_long(void **state)
{
    throttle_policy_t p = pol(5, 1000, 900000, 3600000);
    size_t n = 5000;
    char *s = malloc(n);
    memset(s, 'A', n);
    unsigned char a[THROTTLE_KEY_BYTES], b[THROTTLE_KEY_BYTES];
    throttle_account(&p, s, n, a);
    memset(s, 'a', n);
    throttle_account(&p, s, 1024, b);
    assert_memory_equal(a, b, sizeof(a));
    free(s);
}

/* ---------------------------------------------------------------- backoff */

static void test_backoff_schedule(void **state)
{
    throttle_policy_t p = pol(5, 1000, 900000, 3600000);
    static const struct {
        int64_t failures, want;
    } cases[] = {
        {0, 0},
        {1, 0},
        {4, 0},
        {5, 1000},
        {6, 2000},
        {7, 4000},
        {8, 8000},
        {14, 512000},
        {15, 900000},
        {16, 900000},
        {100, 900000},
        {INT32_MAX, 900000},
        {INT64_MAX, 900000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t got = throttle_backoff_ms(&p, cases[i].failures);
        if (got != cases[i].want)
            fail_msg("backoff after %lld failures = %lld ms, expected %lld", (long long)cases[i].failures,
                     (long long)got, (long long)cases[i].want);
    }
    /* The cap holds even when it is not a power-of-two multiple of base. */
    throttle_policy_t q = pol(1, 300, 1000, 3600000);
    assert_i64_eq(throttle_backoff_ms(&q, 1), 300);
    assert_i64_eq(throttle_backoff_ms(&q, 2), 600);
    assert_i64_eq(throttle_backoff_ms(&q, 3), 1000);
    /* A base above the cap is cut to it. */
    throttle_policy_t r = pol(1, 5000, 1000, 3600000);
    assert_i64_eq(throttle_backoff_ms(&r, 1), 1000);
}

static void test_retry_after(void **state)
{
    assert_i64_eq(throttle_retry_after_s(1), 1);
    assert_i64_eq(throttle_retry_after_s(999), 1);
    assert_i64_eq(throttle_retry_after_s(1000), 1);
    assert_i64_eq(throttle_retry_after_s(1001), 2);
    assert_i64_eq(throttle_retry_after_s(900000), 900);
    assert_i64_eq(throttle_retry_after_s(0), 1);
}

/* ------------------------------------------------------------ memory table */

static throttle_table_t table;

static int setup_table(void **state)
{
    throttle_table_init(&table);
    return 0;
}

static void test_table_waits(void **state)
{
    throttle_policy_t p = pol(3, 1000, 4000, 60000);
    unsigned char k[THROTTLE_KEY_BYTES];
    account(&p, "a@example.com", k);
    int64_t t = 1000000;
    assert_i64_eq(throttle_table_wait(&table, &p, k, t), 0);
    assert_i64_eq(throttle_table_fail(&table, &p, k, t), 1);
    assert_i64_eq(throttle_table_fail(&table, &p, k, t), 2);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t), 0);
    assert_i64_eq(throttle_table_fail(&table, &p, k, t), 3);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t), 1000);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 400), 600);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 1000), 0);
    /* The next failure doubles the wait, up to the cap. */
    assert_i64_eq(throttle_table_fail(&table, &p, k, t + 1000), 4);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 1000), 2000);
    throttle_table_fail(&table, &p, k, t + 3000);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 3000), 4000);
    throttle_table_fail(&table, &p, k, t + 7000);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 7000), 4000);
    /* Another account is untouched. */
    unsigned char o[THROTTLE_KEY_BYTES];
    account(&p, "b@example.com", o);
    assert_i64_eq(throttle_table_wait(&table, &p, o, t + 7000), 0);
    /* A success forgets everything. */
    throttle_table_reset(&table, k);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 7000), 0);
    assert_i64_eq(throttle_table_fail(&table, &p, k, t + 7000), 1);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 7000), 0);
}

static void test_table_forgets(void **state)
{
    throttle_policy_t p = pol(2, 1000, 4000, 60000);
    unsigned char k[THROTTLE_KEY_BYTES];
    account(&p, "forget@example.com", k);
    int64_t t = 5000000;
    throttle_table_fail(&table, &p, k, t);
    throttle_table_fail(&table, &p, k, t + 10);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 10), 1000);
    /* A failure long after the last one starts the count again. */
    assert_i64_eq(throttle_table_fail(&table, &p, k, t + 10 + 60000), 1);
    assert_i64_eq(throttle_table_wait(&table, &p, k, t + 10 + 60000), 0);
}

/* More accounts than slots: the table keeps working, a recent account
 * keeps its wait, nothing is throttled that did not fail. */
static void test_table_full(void **state)
{
    throttle_policy_t p = pol(1, 10000, 10000, 600000);
    int64_t t = 9000000;
    unsigned char k[THROTTLE_KEY_BYTES];
    char email[64];
    for (int i = 0; i < 3 * THROTTLE_SLOTS; i++) {
        snprintf(email, sizeof(email), "flood%d@example.com", i);
        account(&p, email, k);
        throttle_table_fail(&table, &p, k, t + i / 100);
    }
    unsigned char v[THROTTLE_KEY_BYTES];
    account(&p, "victim@example.com", v);
    assert_i64_eq(throttle_table_wait(&table, &p, v, t + 100), 0);
    throttle_table_fail(&table, &p, v, t + 100);
    assert_i64_eq(throttle_table_wait(&table, &p, v, t + 100), 10000);
    /* The latest flood account is still there. */
    snprintf(email, sizeof(email), "flood%d@example.com", 3 * THROTTLE_SLOTS - 1);
    account(&p, email, k);
    if (throttle_table_wait(&table, &p, k, t + 100) == 0)
        fail_msg("the most recent failure was evicted first");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_account_normalised),
        cmocka_unit_test(test_account_keyed),
        cmocka_unit_test(test_account_long),
        cmocka_unit_test(test_backoff_schedule),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test_setup(test_table_waits, setup_table),
        cmocka_unit_test_setup(test_table_forgets, setup_table),
        cmocka_unit_test_setup(test_table_full, setup_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
