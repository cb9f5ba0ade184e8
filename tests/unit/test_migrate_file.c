/*
 * src/db/migrate_file.c: migration markers, statement splitting for
 * no-transaction files, checksums and `migrate new` names. Inputs are
 * copied into exactly-sized heap blocks (no NUL) so ASan catches a read
 * past len.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "db/migrate.h"
#include "db/migrate_file.h"

static char *heap_copy(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    memcpy(p, s, n);
    return p;
}

static int markers(const char *sql, unsigned *flags, char *err, size_t errlen)
{
    size_t n = strlen(sql);
    char *h = heap_copy(sql, n);
    err[0] = '\0';
    int rc = migrate_parse_markers(h, n, flags, err, errlen);
    free(h);
    return rc;
}

static void expect_flags(const char *sql, unsigned want)
{
    unsigned got = 99;
    char err[256];
    if (markers(sql, &got, err, sizeof(err)) != 0)
        fail_msg("markers of \"%s\": error \"%s\", expected flags %u", sql, err, want);
    if (got != want)
        fail_msg("markers of \"%s\": got flags %u, expected %u", sql, got, want);
}

static void expect_marker_error(const char *sql, const char *msg_part)
{
    unsigned got = 0;
    char err[256];
    if (markers(sql, &got, err, sizeof(err)) != -1)
        fail_msg("markers of \"%s\": accepted (flags %u), expected an error", sql, got);
    assert_contains(err, msg_part);
}

static void test_markers(void **state)
{
    expect_flags("", 0);
    expect_flags("CREATE TABLE t (a int);\n", 0);
    expect_flags("-- 0001: init\nCREATE TABLE t (a int);\n", 0);
    expect_flags("-- marketd: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
                 MIGRATE_NO_TRANSACTION);
    expect_flags("-- 0008: x\n--\n--marketd:   compatible-with-previous  \r\n\nSELECT 1;",
                 MIGRATE_COMPATIBLE);
    expect_flags("-- marketd: no-transaction\n-- marketd: compatible-with-previous\n",
                 MIGRATE_NO_TRANSACTION | MIGRATE_COMPATIBLE);
    expect_flags("-- marketd: incompatible-with-previous\nSELECT 1;\n", 0);
    /* Only the leading comment block counts. */
    expect_flags("SELECT 1;\n-- marketd: no-transaction\n", 0);
    expect_flags("-- head\nSELECT 1; -- marketd: compatible-with-previous\n", 0);
    /* A line mentioning the marker inside a sentence is no marker. */
    expect_flags("-- add -- marketd: no-transaction as the first line\n", 0);
    /* The last line without a newline. */
    expect_flags("-- marketd: no-transaction", MIGRATE_NO_TRANSACTION);

    expect_marker_error("-- marketd: no-transation\n", "line 1: unknown marker \"no-transation\"");
    expect_marker_error("-- x\n-- marketd:\n", "line 2: unknown marker");
    expect_marker_error("-- marketd: compatible-with-previous\n-- marketd: incompatible-with-previous\n",
                        "together");
}

/* Splits sql and checks the statements against want (NULL-terminated). */
static void expect_split(const char *sql, const char *const *want)
{
    size_t n = strlen(sql), pos = 0, start = 0, len = 0;
    char *h = heap_copy(sql, n);
    int i = 0, rc;
    while ((rc = migrate_next_statement(h, n, &pos, &start, &len)) == 1) {
        if (want[i] == NULL)
            fail_msg("split of \"%s\": extra statement \"%.*s\"", sql, (int)len, h + start);
        if (len != strlen(want[i]) || memcmp(h + start, want[i], len) != 0)
            fail_msg("split of \"%s\": statement %d is \"%.*s\", expected \"%s\"", sql, i + 1, (int)len,
                     h + start, want[i]);
        i++;
    }
    if (rc != 0)
        fail_msg("split of \"%s\": returned %d after %d statements", sql, rc, i);
    if (want[i] != NULL)
        fail_msg("split of \"%s\": %d statements, expected \"%s\" next", sql, i, want[i]);
    free(h);
}

static void test_split(void **state)
{
    expect_split("", (const char *[]){NULL});
    expect_split("  ;; \n-- only a comment\n/* and another */ ;", (const char *[]){NULL});
    expect_split("SELECT 1; SELECT 2", (const char *[]){"SELECT 1", "SELECT 2", NULL});
    expect_split("-- marketd: no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\n\n"
                 "CREATE INDEX CONCURRENTLY b ON t (y);\n",
                 (const char *[]){"CREATE INDEX CONCURRENTLY a ON t (x)",
                                  "CREATE INDEX CONCURRENTLY b ON t (y)", NULL});
    expect_split("SELECT 'a;b', 'it''s;'; SELECT \"we;ird\"\"\"",
                 (const char *[]){"SELECT 'a;b', 'it''s;'", "SELECT \"we;ird\"\"\"", NULL});
    expect_split("SELECT E'\\';'; SELECT 'x\\'; SELECT 2",
                 (const char *[]){"SELECT E'\\';'", "SELECT 'x\\'", "SELECT 2", NULL});
    expect_split("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$; SELECT 2",
                 (const char *[]){"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$",
                                  "SELECT 2", NULL});
    expect_split(
        "DO $fn$ BEGIN PERFORM '$$;'; END $fn$; SELECT $1; SELECT a$b FROM t",
        (const char *[]){"DO $fn$ BEGIN PERFORM '$$;'; END $fn$", "SELECT $1", "SELECT a$b FROM t", NULL});
    expect_split("SELECT 1 /* a; /* nested; */ still; */ + 1; SELECT 2 -- c; d\n;",
                 (const char *[]){"SELECT 1 /* a; /* nested; */ still; */ + 1", "SELECT 2", NULL});
}

static void expect_unclosed(const char *sql, size_t at)
{
    size_t n = strlen(sql), pos = 0, start = 0, len = 0;
    char *h = heap_copy(sql, n);
    int rc;
    while ((rc = migrate_next_statement(h, n, &pos, &start, &len)) == 1)
        ;
    free(h);
    if (rc != -1)
        fail_msg("split of \"%s\": returned %d, expected -1 (not closed)", sql, rc);
    assert_i64_eq(start, at);
}

static void test_split_unclosed(void **state)
{
    expect_unclosed("SELECT 'abc", 7);
    expect_unclosed("SELECT 1; SELECT \"abc", 17);
    expect_unclosed("SELECT $x$ abc $y$", 7);
    expect_unclosed("SELECT 1 /* /* */", 9);
}

static void test_checksum(void **state)
{
    char hex[MIGRATE_CHECKSUM_HEX];
    migrate_checksum("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    migrate_checksum("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void expect_name(const char *in, const char *want)
{
    char out[MIGRATE_NAME_MAX + 1];
    int n = migrate_sanitize_name(in, out, sizeof(out));
    if (want == NULL) {
        if (n != -1)
            fail_msg("name \"%s\": got \"%s\", expected a refusal", in, out);
        return;
    }
    if (n != (int)strlen(want) || strcmp(out, want) != 0)
        fail_msg("name \"%s\": got %d \"%s\", expected \"%s\"", in, n, n >= 0 ? out : "", want);
}

static void test_sanitize_name(void **state)
{
    expect_name("add_orders_index", "add_orders_index");
    expect_name("Add Orders-Index!", "add_orders_index");
    expect_name("  --x--y-- ", "x_y");
    expect_name("v2 of 3", "v2_of_3");
    expect_name("заказы index", "index");
    expect_name("", NULL);
    expect_name("-- !", NULL);
    expect_name("индекс", NULL);
    char longer[MIGRATE_NAME_MAX + 2];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    expect_name(longer, NULL);
    longer[MIGRATE_NAME_MAX] = '\0';
    expect_name(longer, longer);
}

/* Every shipped migration parses; the ones after the migrator learnt about
 * compatibility say which they are. */
static void test_embedded_migrations_parse(void **state)
{
    for (size_t i = 0; i < migrations_embedded_count; i++) {
        const migration_t *m = &migrations_embedded[i];
        unsigned flags;
        char err[256];
        if (migrate_parse_markers(m->sql, strlen(m->sql), &flags, err, sizeof(err)) != 0)
            fail_msg("%s: %s", m->name, err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_markers),        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_unclosed), cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_sanitize_name),  cmocka_unit_test(test_embedded_migrations_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
