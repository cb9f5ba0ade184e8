/*
 * src/db/replicas.c and the replicas' cache rule: the pure parts. LSN text
 * ("X/Y") both ways, a conninfo shown without its password (URL and
 * key=value forms), the replica list parsed from DB_READ_REPLICA_URL, and
 * cache_versions_lsn — the WAL position a fill stored under some versions
 * must have read (docs/cache.md "Replicas").
 */
#include "unit.h"

#include <stdio.h>
#include <string.h>

#include "cache/cache.h"
#include "db/replicas.h"

static void test_lsn_parse_and_format(void **state)
{
    (void)state;
    uint64_t x = 0;
    assert_int_equal(db_lsn_parse("0/3000060", &x), 0);
    assert_i64_eq(x, 0x3000060);
    assert_int_equal(db_lsn_parse("16/B374D848", &x), 0);
    assert_true(x == ((uint64_t)0x16 << 32 | 0xB374D848u));
    char out[24];
    db_lsn_format(x, out);
    assert_string_equal(out, "16/B374D848");
    assert_int_equal(db_lsn_parse("FFFFFFFF/ffffffff", &x), 0);
    assert_true(x == UINT64_MAX);
    const char *bad[] = {"", "/", "1/", "/1", "1", "123456789/0", "0/123456789", "g/0", "0/1 ", "0//1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(db_lsn_parse(bad[i], &x), -1);
}

static void test_conninfo_display_drops_passwords(void **state)
{
    (void)state;
    char out[256];
    db_conninfo_display("postgresql://marketd:s3cret@db-ro-1:5432/marketd?sslmode=require&password=x", out,
                        sizeof(out));
    assert_string_equal(out, "postgresql://marketd@db-ro-1:5432/marketd");
    db_conninfo_display("postgres://u@h/db", out, sizeof(out));
    assert_string_equal(out, "postgres://u@h/db");
    db_conninfo_display("postgresql://h:5432/db", out, sizeof(out));
    assert_string_equal(out, "postgresql://h:5432/db");
    db_conninfo_display("host=h port=5433 password='a b\\'c' dbname=m user=u", out, sizeof(out));
    assert_string_equal(out, "host=h port=5433 dbname=m user=u");
    assert_null(strstr(out, "a b"));
    db_conninfo_display("host=h password=pw", out, 8);
    assert_true(strlen(out) < 8);
}

static void test_replica_list(void **state)
{
    (void)state;
    char err[128];
    assert_int_equal(db_replicas_init(NULL, 1000, err, sizeof(err)), 0);
    assert_int_equal(db_replicas_init(" postgresql://a/m , ,host=b dbname=m,", 1000, err, sizeof(err)), 2);
    assert_string_equal(db_replica_conninfo(0), "postgresql://a/m");
    assert_string_equal(db_replica_conninfo(1), "host=b dbname=m");
    assert_string_equal(db_replica_label(1), "replica1");
    db_replica_info_t in;
    db_replica_info(0, &in);
    assert_int_equal(in.up, 0); /* never polled: not used */
    assert_int_equal(db_replicas_pick(NULL, 0, &(unsigned){0}), -1);
    db_replicas_dispose();
    char many[2048] = "";
    for (int i = 0; i < 17; i++)
        strcat(many, "host=x,");
    assert_int_equal(db_replicas_init(many, 1000, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "DB_READ_REPLICA_URL"));
}

static cache_versions_t versions(int n, const char *const *v)
{
    cache_versions_t out = {.n = n};
    for (int i = 0; i < n; i++)
        snprintf(out.v[i], CACHE_VERSION_MAX, "%s", v[i]);
    return out;
}

static void test_versions_lsn(void **state)
{
    (void)state;
    uint64_t lsn = 7;
    /* An epoch without an LSN: the primary. */
    cache_versions_t v = versions(2, (const char *[]){"5f1-0a0b0c0d", "5f2-01020304-ff"});
    assert_int_equal(cache_versions_lsn(&v, &lsn), -1);
    /* The largest LSN; a tag without one is covered by the epoch's. */
    v = versions(3, (const char *[]){"5f1-0a0b0c0d-10", "5f2-01020304", "5f3-01020304-3000060"});
    assert_int_equal(cache_versions_lsn(&v, &lsn), 0);
    assert_i64_eq(lsn, 0x3000060);
    v = versions(2, (const char *[]){"5f1-0a0b0c0d-ffffffffffffffff", "5f2-1-1"});
    assert_int_equal(cache_versions_lsn(&v, &lsn), 0);
    assert_true(lsn == UINT64_MAX);
    /* Malformed LSNs count as none. */
    v = versions(1, (const char *[]){"5f1-0a0b0c0d-1ffffffffffffffff"});
    assert_int_equal(cache_versions_lsn(&v, &lsn), -1);
    v = versions(1, (const char *[]){"5f1-0a0b0c0d-XY"});
    assert_int_equal(cache_versions_lsn(&v, &lsn), -1);
    v = versions(1, (const char *[]){"5f1-0a0b0c0d-"});
    assert_int_equal(cache_versions_lsn(&v, &lsn), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn_parse_and_format),
        cmocka_unit_test(test_conninfo_display_drops_passwords),
        cmocka_unit_test(test_replica_list),
        cmocka_unit_test(test_versions_lsn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
