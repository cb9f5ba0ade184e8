/*
 * src/api/batch.c, the pure parts: the int8[] literal of a batch's ids and
 * the one-row result each read of a batch renders from. (Gathering,
 * pacing and the statement itself run against PostgreSQL:
 * tests/integration/test_outage_store.py, OutageBatchTests.)
 */
#include "unit.h"

#include <string.h>

#include "api/batch.h"

static void test_the_ids_literal(void **state)
{
    batch_item_t a = {0}, b = {0}, c = {0};
    strcpy(a.id, "1");
    strcpy(b.id, "42");
    strcpy(c.id, "9223372036854775807");
    a.next = &b;
    b.next = &c;
    char buf[BATCH_MAX * 21 + 3];
    assert_string_equal(batch_ids_literal(&a, 3, buf, sizeof(buf)), "{1,42,9223372036854775807}");
    assert_string_equal(batch_ids_literal(&a, 2, buf, sizeof(buf)), "{1,42}");
    assert_string_equal(batch_ids_literal(&a, 0, buf, sizeof(buf)), "{}");
    /* A buffer too small for every id keeps a well-formed prefix. */
    char small[8];
    assert_string_equal(batch_ids_literal(&a, 3, small, sizeof(small)), "{1,42}");
}

static PGresult *three_rows(void)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc cols[2] = {{.name = "id", .typid = 20, .typlen = 8, .atttypmod = -1},
                            {.name = "title", .typid = 25, .typlen = -1, .atttypmod = -1}};
    assert_true(PQsetResultAttrs(res, 2, cols));
    const char *ids[] = {"7", "8", "9"}, *titles[] = {"семь", NULL, "nine"};
    for (int r = 0; r < 3; r++) {
        assert_true(PQsetvalue(res, r, 0, (char *)ids[r], (int)strlen(ids[r])));
        assert_true(PQsetvalue(res, r, 1, (char *)titles[r], titles[r] ? (int)strlen(titles[r]) : -1));
    }
    return res;
}

static void test_a_row_of_its_own(void **state)
{
    PGresult *res = three_rows();
    PGresult *one = batch_row_result(res, 2);
    assert_int_equal(PQntuples(one), 1);
    assert_int_equal(PQnfields(one), 2);
    assert_string_equal(PQfname(one, 1), "title");
    assert_int_equal(PQftype(one, 0), 20);
    assert_string_equal(PQgetvalue(one, 0, 0), "9");
    assert_string_equal(PQgetvalue(one, 0, 1), "nine");
    PQclear(one);
    one = batch_row_result(res, 1); /* a NULL stays NULL */
    assert_string_equal(PQgetvalue(one, 0, 0), "8");
    assert_true(PQgetisnull(one, 0, 1));
    PQclear(one);
    one = batch_row_result(res, 0);
    assert_string_equal(PQgetvalue(one, 0, 1), "семь");
    assert_int_equal(PQgetlength(one, 0, 1), (int)strlen("семь"));
    PQclear(one);
    one = batch_row_result(res, -1); /* an id the batch did not find: no row, a 404 */
    assert_int_equal(PQntuples(one), 0);
    assert_int_equal(PQnfields(one), 2);
    PQclear(one);
    PQclear(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_ids_literal),
        cmocka_unit_test(test_a_row_of_its_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
