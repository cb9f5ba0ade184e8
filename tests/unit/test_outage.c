/*
 * src/api/outage.c, the store: what a bypassing read left for the next one
 * while Redis is out. Labels come back as stored, a bound in bytes evicts
 * the least recently used first, entries end with their TTL, the store
 * empties itself once unused, and 0 bytes turns it off. (The probes and the
 * check against the database's stamp run against PostgreSQL:
 * tests/integration/test_outage_store.py.)
 */
#include "unit.h"

#include <stdio.h>
#include <string.h>

#include "api/outage.h"

#define S 1000000ull /* one second in µs */

static int has(const char *key, const char *want_body, const char *want_label, uint64_t now)
{
    char label[OUTAGE_STAMP_MAX];
    flight_body_t *b = outage_store_get(key, label, now);
    if (b == NULL)
        return 0;
    int ok = b->len == strlen(want_body) && memcmp(b->data, want_body, b->len) == 0 &&
             strcmp(label, want_label) == 0;
    flight_body_release(b);
    return ok ? 1 : -1;
}

static void test_a_body_comes_back_with_its_label_and_is_replaced(void **state)
{
    outage_store_init(1 << 20);
    assert_int_equal(has("k", "", "", 0), 0);
    outage_store_put("k", "10:10:", "{\"a\":1}", 7, 60, 0);
    assert_int_equal(has("k", "{\"a\":1}", "10:10:", 1), 1);
    outage_store_put("k", "12:12:", "{\"a\":2}", 7, 60, 2);
    assert_int_equal(has("k", "{\"a\":2}", "12:12:", 3), 1);
    assert_int_equal(has("other", "", "", 3), 0);
    outage_store_stats_t st;
    outage_store_get_stats(&st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.stored, 2);
}

static void test_a_reference_outlives_its_replacement(void **state)
{
    outage_store_init(1 << 20);
    outage_store_put("k", "1:1:", "old", 3, 60, 0);
    char label[OUTAGE_STAMP_MAX];
    flight_body_t *held = outage_store_get("k", label, 1);
    assert_non_null(held);
    outage_store_put("k", "2:2:", "new", 3, 60, 2); /* drops the old entry */
    assert_int_equal(held->len, 3);
    assert_memory_equal(held->data, "old", 3); /* ASan: still ours */
    flight_body_release(held);
}

static void test_the_ttl_ends_an_entry(void **state)
{
    outage_store_init(1 << 20);
    outage_store_put("k", "1:1:", "x", 1, 5, 0);
    assert_int_equal(has("k", "x", "1:1:", 5 * S - 1), 1);
    assert_int_equal(has("k", "x", "1:1:", 5 * S), 0);
    outage_store_stats_t st;
    outage_store_get_stats(&st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
}

static void test_the_bound_evicts_the_least_recently_used(void **state)
{
    char body[1000];
    memset(body, 'b', sizeof(body));
    /* Each entry costs its body and ~320 bytes of bookkeeping: ten fit in
     * 14,000, eleven do not, and one may cost up to an eighth of it. */
    outage_store_init(14000);
    char key[16];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        outage_store_put(key, "1:1:", body, sizeof(body), 60, (uint64_t)i);
    }
    outage_store_stats_t st;
    outage_store_get_stats(&st);
    assert_int_equal(st.entries, 10);
    assert_true(st.bytes <= 14000);
    /* k0 is used again, so k1 is now the least recently used. */
    char label[OUTAGE_STAMP_MAX];
    flight_body_t *b = outage_store_get("k0", label, 20);
    assert_non_null(b);
    flight_body_release(b);
    outage_store_put("k10", "1:1:", body, sizeof(body), 60, 21);
    outage_store_get_stats(&st);
    assert_int_equal(st.entries, 10);
    assert_int_equal(st.evicted, 1);
    b = outage_store_get("k1", label, 22);
    assert_null(b);
    b = outage_store_get("k0", label, 22);
    assert_non_null(b);
    flight_body_release(b);
}

static void test_what_cannot_be_stored_is_not(void **state)
{
    char big[2000];
    memset(big, 'x', sizeof(big));
    outage_store_init(8000); /* a body may be 1,000 bytes at most */
    outage_store_put("big", "1:1:", big, sizeof(big), 60, 0);
    outage_store_put("nolabel", "", "x", 1, 60, 0); /* no stamp: never checkable */
    char long_label[OUTAGE_STAMP_MAX + 8];
    memset(long_label, '7', sizeof(long_label) - 1);
    long_label[sizeof(long_label) - 1] = '\0';
    outage_store_put("longlabel", long_label, "x", 1, 60, 0);
    outage_store_put("nottl", "1:1:", "x", 1, 0, 0);
    outage_store_stats_t st;
    outage_store_get_stats(&st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.stored, 0);
}

static void test_zero_bytes_turns_the_store_off(void **state)
{
    outage_store_init(0);
    outage_store_put("k", "1:1:", "x", 1, 60, 0);
    assert_int_equal(has("k", "x", "1:1:", 1), 0);
}

static void test_an_unused_store_empties_itself(void **state)
{
    outage_store_init(1 << 20);
    outage_store_put("k", "1:1:", "x", 1, 3600, 0);
    assert_int_equal(has("k", "x", "1:1:", 10 * S), 1); /* asked at 10 s */
    outage_store_sweep(10 * S + OUTAGE_IDLE_US);        /* not yet: exactly the idle time */
    assert_int_equal(has("k", "x", "1:1:", 10 * S + OUTAGE_IDLE_US), 1);
    outage_store_sweep(10 * S + 2 * OUTAGE_IDLE_US + 1);
    outage_store_stats_t st;
    outage_store_get_stats(&st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    outage_store_dispose();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_body_comes_back_with_its_label_and_is_replaced),
        cmocka_unit_test(test_a_reference_outlives_its_replacement),
        cmocka_unit_test(test_the_ttl_ends_an_entry),
        cmocka_unit_test(test_the_bound_evicts_the_least_recently_used),
        cmocka_unit_test(test_what_cannot_be_stored_is_not),
        cmocka_unit_test(test_zero_bytes_turns_the_store_off),
        cmocka_unit_test(test_an_unused_store_empties_itself),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    outage_store_dispose();
    return rc;
}
