/*
 * src/api/render.c: column tables → SELECT lists and JSON, on synthetic
 * PGresults made with libpq's PQmakeEmptyPGresult / PQsetResultAttrs /
 * PQsetvalue (no database). Output is compared byte for byte. Every
 * PGresult is PQclear'ed and every buffer jbuf_free'd: LeakSanitizer is on.
 * api_select_list keeps its strings for the life of the process in a fixed
 * array of 64, so it is called only a few times here and never freed.
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include <libpq-fe.h>

#include "api/cursor.h"
#include "api/render.h"
#include "core/json.h"

#define CDN "https://cdn.example.test/m/"

/* A product-like table: a nested object with a detail-only member, and a
 * detail-only top-level column. */
static const api_col_t cols[] = {
    {"id", "p.id", COL_NUM},
    {"seller", NULL, COL_OBJECT},
    {"id", "s.id", COL_NUM},
    {"name", "s.name", COL_TEXT},
    {"bio", "s.bio", COL_TEXT, 1},
    {NULL, NULL, COL_END},
    {"title", "p.title", COL_TEXT},
    {"description", "p.description", COL_TEXT, 1},
    {"price", "p.price", COL_NUM},
    {"images", "p.images", COL_IMAGES},
    {"created_at", "p.created_at AT TIME ZONE 'UTC'", COL_TS},
};
#define TABLE API_TABLE(cols)

/* A result of `ncols` text columns and `nrows` rows from row-major
 * `values`; a NULL value is SQL NULL. */
static PGresult *make_result(int ncols, int nrows, const char *const *values)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    assert_non_null(res);
    PGresAttDesc attrs[32];
    char names[32][16];
    assert_true(ncols <= 32);
    for (int c = 0; c < ncols; c++) {
        snprintf(names[c], sizeof(names[c]), "c%d", c);
        attrs[c] = (PGresAttDesc){.name = names[c], .format = 0, .typid = 25, .typlen = -1, .atttypmod = -1};
    }
    if (!PQsetResultAttrs(res, ncols, attrs))
        fail_msg("PQsetResultAttrs(%d columns) failed", ncols);
    for (int r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            const char *v = values[r * ncols + c];
            if (!PQsetvalue(res, r, c, (char *)v, v != NULL ? (int)strlen(v) : -1))
                fail_msg("PQsetvalue(%d, %d) failed", r, c);
        }
    }
    assert_i64_eq(PQntuples(res), nrows);
    assert_i64_eq(PQnfields(res), ncols);
    return res;
}

/* The buffer holds exactly `want` (printed both ways on failure). */
static void expect_jbuf(const jbuf_t *b, const char *what, const char *want)
{
    if (b->len != strlen(want) || memcmp(b->data, want, b->len) != 0) {
        char shown[2048];
        fail_msg("%s\n  got      %s (len %zu)\n  expected %s (len %zu)", what,
                 show(b->data, b->len, shown, sizeof(shown)), b->len, want, strlen(want));
    }
}
#define assert_jbuf_eq(b, want) expect_jbuf((b), #b, (want))

static void expect_row(api_table_t t, int with_detail, const PGresult *res, int row, int col0,
                       const char *want)
{
    jbuf_t b;
    jbuf_init(&b, 16); /* small: rendering must grow it */
    api_render_row(&b, t, with_detail, res, row, col0, CDN);
    slice_t got = {b.data, b.len};
    if (got.len != strlen(want) || memcmp(got.ptr, want, got.len) != 0) {
        char shown[2048];
        const char *g = show(got.ptr, got.len, shown, sizeof(shown));
        jbuf_free(&b);
        fail_msg("api_render_row(with_detail %d, row %d, col0 %d)\n  got      %s\n  expected %s", with_detail,
                 row, col0, g, want);
    }
    jbuf_free(&b);
}

/* ---------------------------------------------------------- select lists */

static void test_select_count(void **state)
{
    assert_i64_eq(api_select_count(TABLE, 1), 9);
    assert_i64_eq(api_select_count(TABLE, 0), 7);
    const api_col_t only_object[] = {{"o", NULL, COL_OBJECT}, {NULL, NULL, COL_END}};
    assert_i64_eq(api_select_count(API_TABLE(only_object), 1), 0);
}

static void test_select_list(void **state)
{
    assert_string_equal(api_select_list(TABLE, 1),
                        "p.id, s.id, s.name, s.bio, p.title, p.description, p.price, "
                        "p.images, p.created_at AT TIME ZONE 'UTC'");
    assert_string_equal(api_select_list(TABLE, 0),
                        "p.id, s.id, s.name, p.title, p.price, p.images, p.created_at AT TIME ZONE 'UTC'");
    const api_col_t only_object[] = {{"o", NULL, COL_OBJECT}, {NULL, NULL, COL_END}};
    assert_string_equal(api_select_list(API_TABLE(only_object), 1), "");
}

static void test_select_index(void **state)
{
    /* with_detail: p.id 0, s.id 1, s.name 2, s.bio 3, p.title 4,
     * p.description 5, p.price 6, p.images 7, p.created_at 8 */
    assert_i64_eq(api_select_index(TABLE, 1, "id"), 0);
    assert_i64_eq(api_select_index(TABLE, 1, "title"), 4);
    assert_i64_eq(api_select_index(TABLE, 1, "description"), 5);
    assert_i64_eq(api_select_index(TABLE, 1, "price"), 6);
    assert_i64_eq(api_select_index(TABLE, 1, "images"), 7);
    assert_i64_eq(api_select_index(TABLE, 1, "created_at"), 8);
    /* list: p.id 0, s.id 1, s.name 2, p.title 3, p.price 4, p.images 5,
     * p.created_at 6; the detail-only column is not there. */
    assert_i64_eq(api_select_index(TABLE, 0, "id"), 0);
    assert_i64_eq(api_select_index(TABLE, 0, "title"), 3);
    assert_i64_eq(api_select_index(TABLE, 0, "description"), -1);
    assert_i64_eq(api_select_index(TABLE, 0, "price"), 4);
    assert_i64_eq(api_select_index(TABLE, 0, "created_at"), 6);
    /* Nested columns are counted but not found by name; nor is the object,
     * which has no column. */
    assert_i64_eq(api_select_index(TABLE, 1, "name"), -1);
    assert_i64_eq(api_select_index(TABLE, 1, "bio"), -1);
    assert_i64_eq(api_select_index(TABLE, 0, "name"), -1);
    assert_i64_eq(api_select_index(TABLE, 1, "seller"), -1);
    assert_i64_eq(api_select_index(TABLE, 1, "nope"), -1);
    assert_i64_eq(api_select_index(TABLE, 1, ""), -1);
    /* A nested "id" before the top-level one is skipped, not returned. */
    const api_col_t nested_first[] = {
        {"owner", NULL, COL_OBJECT}, {"id", "u.id", COL_NUM}, {NULL, NULL, COL_END}, {"id", "x.id", COL_NUM}};
    assert_i64_eq(api_select_index(API_TABLE(nested_first), 1, "id"), 1);
    assert_i64_eq(api_select_index(API_TABLE(nested_first), 0, "id"), 1);
}

/* --------------------------------------------------------------- rendering */

static void test_render_detail(void **state)
{
    const char *v[] = {
        "1",
        "7",
        "Лавка \"Ёж\" \\ tab\there\nline\x01",
        NULL,
        "Чай",
        "long\r\ntext",
        "1234.50",
        "{a.jpg,\"b c.png\"}",
        "2026-01-02 03:04:05.123456",
    };
    PGresult *res = make_result(9, 1, v);
    expect_row(TABLE, 1, res, 0, 0,
               "{\"id\":1,\"seller\":{\"id\":7,\"name\":\"Лавка \\\"Ёж\\\" \\\\ tab\\there\\nline\\u0001\","
               "\"bio\":null},\"title\":\"Чай\",\"description\":\"long\\r\\ntext\",\"price\":1234.50,"
               "\"images\":[\"" CDN "a.jpg\",\"" CDN
               "b c.png\"],\"created_at\":\"2026-01-02T03:04:05.123456Z\"}");
    PQclear(res);
}

static void test_render_list_omits_detail_only(void **state)
{
    const char *v[] = {"1", "7", "Shop", "Tea", "99", "{}", "2026-01-02 03:04:05"};
    PGresult *res = make_result(7, 1, v);
    expect_row(
        TABLE, 0, res, 0, 0,
        "{\"id\":1,\"seller\":{\"id\":7,\"name\":\"Shop\"},\"title\":\"Tea\",\"price\":99,\"images\":[],"
        "\"created_at\":\"2026-01-02T03:04:05Z\"}");
    PQclear(res);
}

static void test_render_nulls(void **state)
{
    /* NULL in every kind: text and numbers and timestamps are null; an
     * image array is empty. */
    const char *v[] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    PGresult *res = make_result(9, 1, v);
    expect_row(TABLE, 1, res, 0, 0,
               "{\"id\":null,\"seller\":{\"id\":null,\"name\":null,\"bio\":null},\"title\":null,"
               "\"description\":null,\"price\":null,\"images\":[],\"created_at\":null}");
    PQclear(res);
}

static void test_render_row_and_col0(void **state)
{
    /* Two leading columns that are not the table's (e.g. a count), and
     * two rows: the second is rendered. */
    const char *v[] = {
        "x", "y", "1", "7", "A", "T1", "10", "{}",         "2026-01-02 03:04:05", /* row 0 */
        "x", "y", "2", "8", "B", "T2", "20", "{p/1.webp}", "1970-01-01 00:00:00", /* row 1 */
    };
    PGresult *res = make_result(9, 2, v);
    expect_row(
        TABLE, 0, res, 1, 2,
        "{\"id\":2,\"seller\":{\"id\":8,\"name\":\"B\"},\"title\":\"T2\",\"price\":20,\"images\":[\"" CDN
        "p/1.webp\"],\"created_at\":\"1970-01-01T00:00:00Z\"}");
    expect_row(TABLE, 0, res, 0, 2,
               "{\"id\":1,\"seller\":{\"id\":7,\"name\":\"A\"},\"title\":\"T1\",\"price\":10,\"images\":[],"
               "\"created_at\":\"2026-01-02T03:04:05Z\"}");
    PQclear(res);
}

/* One column of one kind: {"v":…}. */
static void expect_col(api_col_kind_t kind, const char *value, const char *want)
{
    const api_col_t one[] = {{"v", "v", kind}};
    const char *v[] = {value};
    PGresult *res = make_result(1, 1, v);
    char w[512];
    snprintf(w, sizeof(w), "{\"v\":%s}", want);
    expect_row(API_TABLE(one), 1, res, 0, 0, w);
    PQclear(res);
}

static void test_render_timestamps(void **state)
{
    expect_col(COL_TS, "2026-01-02 03:04:05.123456", "\"2026-01-02T03:04:05.123456Z\"");
    expect_col(COL_TS, "2026-01-02 03:04:05", "\"2026-01-02T03:04:05Z\"");
    /* PostgreSQL drops trailing zeros of the fraction; RFC 3339 here
     * prints six digits whenever there is one. */
    expect_col(COL_TS, "2026-01-02 03:04:05.1", "\"2026-01-02T03:04:05.100000Z\"");
    expect_col(COL_TS, "2026-01-02 03:04:05.000001", "\"2026-01-02T03:04:05.000001Z\"");
    expect_col(COL_TS, "1969-12-31 23:59:59.5", "\"1969-12-31T23:59:59.500000Z\"");
    expect_col(COL_TS, "0001-01-01 00:00:00", "\"0001-01-01T00:00:00Z\"");
    expect_col(COL_TS, "9999-12-31 23:59:59.999999", "\"9999-12-31T23:59:59.999999Z\"");
    expect_col(COL_TS, "2024-02-29 12:00:00", "\"2024-02-29T12:00:00Z\"");
    /* Not a `timestamp` as PostgreSQL prints one: null, never garbage. */
    expect_col(COL_TS, "2026-01-02T03:04:05Z", "null");
    expect_col(COL_TS, "2026-01-02 03:04:05+00", "null");
    expect_col(COL_TS, "2026-01-02", "null");
    expect_col(COL_TS, "", "null");
    expect_col(COL_TS, NULL, "null");
}

static void test_render_images(void **state)
{
    expect_col(COL_IMAGES, "{a,\"b c\"}", "[\"" CDN "a\",\"" CDN "b c\"]");
    expect_col(COL_IMAGES, "{}", "[]");
    expect_col(COL_IMAGES, NULL, "[]");
    expect_col(COL_IMAGES, "", "[]");
    expect_col(COL_IMAGES, "{only.png}", "[\"" CDN "only.png\"]");
    expect_col(COL_IMAGES, "{a/1.jpg,b/2.png,c/3.webp}",
               "[\"" CDN "a/1.jpg\",\"" CDN "b/2.png\",\"" CDN "c/3.webp\"]");
    /* Quoted elements: a comma inside, an escaped quote and backslash. */
    expect_col(COL_IMAGES, "{\"x,y\",\"d\\\"e\",\"f\\\\g\"}",
               "[\"" CDN "x,y\",\"" CDN "d\\\"e\",\"" CDN "f\\\\g\"]");
    /* Not an array literal: empty. */
    expect_col(COL_IMAGES, "a,b", "[]");
}

static void test_render_text_escapes(void **state)
{
    expect_col(COL_TEXT, "", "\"\"");
    expect_col(COL_TEXT, "plain", "\"plain\"");
    expect_col(COL_TEXT, "q\"b\\s/", "\"q\\\"b\\\\s/\"");
    expect_col(COL_TEXT, "\n\r\t\b\f\x1f\x7f", "\"\\n\\r\\t\\u0008\\u000c\\u001f\\u007f\"");
    expect_col(COL_TEXT, "Ёлка 😀", "\"Ёлка 😀\"");
    /* Invalid UTF-8 becomes U+FFFD. */
    expect_col(COL_TEXT,
               "a\xff"
               "b",
               "\"a\xEF\xBF\xBD"
               "b\"");
    expect_col(COL_TEXT, "<script>", "\"<script>\"");
}

static void test_render_numbers_verbatim(void **state)
{
    expect_col(COL_NUM, "0", "0");
    expect_col(COL_NUM, "-9223372036854775808", "-9223372036854775808");
    expect_col(COL_NUM, "4.50", "4.50");
    expect_col(COL_NUM, NULL, "null");
}

static void test_render_empty_nested_object(void **state)
{
    /* Every member of the object is detail-only: a list renders it empty. */
    const api_col_t t[] = {
        {"id", "x.id", COL_NUM}, {"o", NULL, COL_OBJECT}, {"secret", "x.s", COL_TEXT, 1},
        {NULL, NULL, COL_END},   {"n", "x.n", COL_NUM},
    };
    const char *v[] = {"1", "2"};
    PGresult *res = make_result(2, 1, v);
    expect_row(API_TABLE(t), 0, res, 0, 0, "{\"id\":1,\"o\":{},\"n\":2}");
    PQclear(res);
    /* An object first and last. */
    const api_col_t u[] = {{"a", NULL, COL_OBJECT}, {"x", "x", COL_NUM}, {NULL, NULL, COL_END},
                           {"b", NULL, COL_OBJECT}, {"y", "y", COL_NUM}, {NULL, NULL, COL_END}};
    const char *w[] = {"1", "2"};
    res = make_result(2, 1, w);
    expect_row(API_TABLE(u), 1, res, 0, 0, "{\"a\":{\"x\":1},\"b\":{\"y\":2}}");
    PQclear(res);
}

/* ------------------------------------------------------------ the envelope */

static void test_page_without_cursor(void **state)
{
    jbuf_t b;
    jbuf_init(&b, 4);
    api_page_begin(&b);
    api_page_end(&b, NULL);
    assert_jbuf_eq(&b, "{\"items\":[],\"next_cursor\":null}");

    jbuf_reset(&b);
    api_page_begin(&b);
    for (int i = 0; i < 3; i++) {
        api_page_item(&b, i);
        char item[32];
        snprintf(item, sizeof(item), "{\"i\":%d}", i);
        jbuf_puts(&b, item);
    }
    api_page_end(&b, NULL);
    assert_jbuf_eq(&b, "{\"items\":[{\"i\":0},{\"i\":1},{\"i\":2}],\"next_cursor\":null}");
    jbuf_free(&b);
}

static void test_page_with_cursor(void **state)
{
    jbuf_t b;
    jbuf_init(&b, 4);
    cursor_t c = {CURSOR_ID, 0, 42};
    api_page_begin(&b);
    api_page_item(&b, 0);
    jbuf_puts(&b, "{}");
    api_page_end(&b, &c);
    /* The cursor is cursor_encode's text (golden value of test_cursor). */
    assert_jbuf_eq(&b, "{\"items\":[{}],\"next_cursor\":\"AQQAAAAAAAAAAAAAAAAAAAAq\"}");

    cursor_t n = {CURSOR_NEWEST, 1795000000000000LL, 123456};
    char text[CURSOR_TEXT_LEN + 1], want[128];
    cursor_encode(&n, text);
    snprintf(want, sizeof(want), "{\"items\":[],\"next_cursor\":\"%s\"}", text);
    jbuf_reset(&b);
    api_page_begin(&b);
    api_page_end(&b, &n);
    assert_jbuf_eq(&b, want);
    jbuf_free(&b);
}

static void test_page_of_rendered_rows(void **state)
{
    const api_col_t t[] = {{"id", "x.id", COL_NUM}, {"name", "x.name", COL_TEXT}};
    const char *v[] = {"1", "a", "2", NULL};
    PGresult *res = make_result(2, 2, v);
    jbuf_t b;
    jbuf_init(&b, 8);
    api_page_begin(&b);
    for (int i = 0; i < PQntuples(res); i++) {
        api_page_item(&b, i);
        api_render_row(&b, API_TABLE(t), 0, res, i, 0, CDN);
    }
    cursor_t c = {CURSOR_ID, 0, 2};
    api_page_end(&b, &c);
    char text[CURSOR_TEXT_LEN + 1], want[256];
    cursor_encode(&c, text);
    snprintf(want, sizeof(want),
             "{\"items\":[{\"id\":1,\"name\":\"a\"},{\"id\":2,\"name\":null}],\"next_cursor\":\"%s\"}", text);
    assert_jbuf_eq(&b, want);
    jbuf_free(&b);
    PQclear(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_count),
        cmocka_unit_test(test_select_list),
        cmocka_unit_test(test_select_index),
        cmocka_unit_test(test_render_detail),
        cmocka_unit_test(test_render_list_omits_detail_only),
        cmocka_unit_test(test_render_nulls),
        cmocka_unit_test(test_render_row_and_col0),
        cmocka_unit_test(test_render_timestamps),
        cmocka_unit_test(test_render_images),
        cmocka_unit_test(test_render_text_escapes),
        cmocka_unit_test(test_render_numbers_verbatim),
        cmocka_unit_test(test_render_empty_nested_object),
        cmocka_unit_test(test_page_without_cursor),
        cmocka_unit_test(test_page_with_cursor),
        cmocka_unit_test(test_page_of_rendered_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
