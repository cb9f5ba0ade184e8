/*
 * src/core/resolve.c: host names resolved off the event loops (B5). Numeric
 * addresses pass through at once; a name answers "pending" (0) until its
 * lookup thread is done, then an address, rotating over the name's
 * addresses. `localhost` comes from /etc/hosts, so no DNS server is asked.
 */
#include "unit.h"

#include <stdio.h>
#include <time.h>

#include "core/resolve.h"

static void test_numeric(void **state)
{
    char out[RESOLVE_ADDR_MAX], err[160];
    assert_true(resolve_is_numeric("127.0.0.1"));
    assert_true(resolve_is_numeric("::1"));
    assert_false(resolve_is_numeric("localhost"));
    assert_false(resolve_is_numeric("127.0.0.1.example"));
    assert_false(resolve_is_numeric(""));
    assert_i64_eq(resolve_get("10.1.2.3", out, err, sizeof(err)), 1);
    assert_string_equal(out, "10.1.2.3");
    assert_i64_eq(resolve_get("fe80::1", out, err, sizeof(err)), 1);
    assert_string_equal(out, "fe80::1");
}

/* Polls resolve_get until it is no longer pending (bounded: 30 s). */
static int settle(const char *name, char out[RESOLVE_ADDR_MAX], char *err, size_t errlen)
{
    for (int i = 0; i < 3000; i++) {
        int rc = resolve_get(name, out, err, errlen);
        if (rc != 0)
            return rc;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return 0;
}

static void test_name(void **state)
{
    char out[RESOLVE_ADDR_MAX], err[160] = "";
    int rc = settle("localhost", out, err, sizeof(err));
    if (rc != 1)
        fail_msg("localhost: rc %d (%s)", rc, err);
    if (strcmp(out, "127.0.0.1") != 0 && strcmp(out, "::1") != 0)
        fail_msg("localhost resolved to %s", out);
    assert_true(resolve_is_numeric(out));
    /* Later calls keep answering (the cached answer, refreshed behind). */
    for (int i = 0; i < 100; i++) {
        assert_i64_eq(resolve_get("localhost", out, err, sizeof(err)), 1);
        assert_true(strcmp(out, "127.0.0.1") == 0 || strcmp(out, "::1") == 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numeric),
        cmocka_unit_test(test_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
