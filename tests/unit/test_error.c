/*
 * The one error convention: src/core/error.c (domain outcomes of SQL
 * functions → MKD_* codes, and the codes' names for logs) and the one table
 * from codes to HTTP statuses in src/http/reply.c, checked against the
 * statuses of api.md "Errors".
 */
#include "unit.h"

#include <limits.h>
#include <stdlib.h>

#include "core/error.h"
#include "http/reply.h"

/* Every code of core/error.h, with its name in the source. */
static const struct {
    int code;
    const char *name;
} codes[] = {
    {MKD_OK, "MKD_OK"},
    {MKD_EINVAL, "MKD_EINVAL"},
    {MKD_ENOTFOUND, "MKD_ENOTFOUND"},
    {MKD_ECONFLICT, "MKD_ECONFLICT"},
    {MKD_EDB, "MKD_EDB"},
    {MKD_EUNAVAILABLE, "MKD_EUNAVAILABLE"},
    {MKD_EBUSY, "MKD_EBUSY"},
    {MKD_ENOMEM, "MKD_ENOMEM"},
    {MKD_ETOOBIG, "MKD_ETOOBIG"},
    {MKD_EBADREQ, "MKD_EBADREQ"},
    {MKD_ESHUTDOWN, "MKD_ESHUTDOWN"},
    {MKD_EUNAUTH, "MKD_EUNAUTH"},
    {MKD_EFORBIDDEN, "MKD_EFORBIDDEN"},
    {MKD_EMEDIATYPE, "MKD_EMEDIATYPE"},
    {MKD_EINTERNAL, "MKD_EINTERNAL"},
    {MKD_ENOROUTE, "MKD_ENOROUTE"},
    {MKD_EMETHOD, "MKD_EMETHOD"},
    {MKD_ELIMITED, "MKD_ELIMITED"},
};
#define NCODES ((int)(sizeof(codes) / sizeof(codes[0])))

/* ---------------------------------------------------------- mkd_from_outcome */

static void expect_outcome(const char *word, int want)
{
    int got = mkd_from_outcome(word);
    if (got != want)
        fail_msg("mkd_from_outcome(%s%s%s) = %d (%s), expected %d (%s)", word ? "\"" : "",
                 word ? word : "NULL", word ? "\"" : "", got, mkd_strerror(got), want, mkd_strerror(want));
}

static void test_outcome_vocabulary(void **state)
{
    expect_outcome("ok", MKD_OK);
    expect_outcome("invalid", MKD_EINVAL);
    expect_outcome("not_found", MKD_ENOTFOUND);
    expect_outcome("conflict", MKD_ECONFLICT);
    expect_outcome("unauthenticated", MKD_EUNAUTH);
    expect_outcome("forbidden", MKD_EFORBIDDEN);
}

static void test_outcome_unknown_is_internal(void **state)
{
    expect_outcome(NULL, MKD_EINTERNAL);
    expect_outcome("", MKD_EINTERNAL);
    expect_outcome("okay", MKD_EINTERNAL);
    expect_outcome("error", MKD_EINTERNAL);
    expect_outcome("not found", MKD_EINTERNAL);
    expect_outcome("notfound", MKD_EINTERNAL);
    expect_outcome("internal", MKD_EINTERNAL);
    /* Exact words only: no case folding, no trimming, no prefixes. */
    expect_outcome("OK", MKD_EINTERNAL);
    expect_outcome("Ok", MKD_EINTERNAL);
    expect_outcome("Not_Found", MKD_EINTERNAL);
    expect_outcome("CONFLICT", MKD_EINTERNAL);
    expect_outcome("Forbidden", MKD_EINTERNAL);
    expect_outcome(" ok", MKD_EINTERNAL);
    expect_outcome("ok ", MKD_EINTERNAL);
    expect_outcome("ok\n", MKD_EINTERNAL);
    expect_outcome("o", MKD_EINTERNAL);
    expect_outcome("invalidx", MKD_EINTERNAL);
    expect_outcome("conflic", MKD_EINTERNAL);
}

/* -------------------------------------------------------------- mkd_strerror */

static void test_strerror_names_every_code(void **state)
{
    for (int i = 0; i < NCODES; i++) {
        const char *s = mkd_strerror(codes[i].code);
        if (s == NULL || s[0] == '\0' || strcmp(s, "unknown error") == 0)
            fail_msg("mkd_strerror(%s = %d) = \"%s\", expected a name of its own", codes[i].name,
                     codes[i].code, s ? s : "(null)");
    }
}

static void test_strerror_names_are_distinct(void **state)
{
    for (int i = 0; i < NCODES; i++)
        for (int k = i + 1; k < NCODES; k++)
            if (strcmp(mkd_strerror(codes[i].code), mkd_strerror(codes[k].code)) == 0)
                fail_msg("mkd_strerror(%s) and mkd_strerror(%s) are both \"%s\"", codes[i].name,
                         codes[k].name, mkd_strerror(codes[i].code));
}

static void test_strerror_unknown(void **state)
{
    static const int unknown[] = {1, 2, -18, -100, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        if (strcmp(mkd_strerror(unknown[i]), "unknown error") != 0)
            fail_msg("mkd_strerror(%d) = \"%s\", expected \"unknown error\"", unknown[i],
                     mkd_strerror(unknown[i]));
}

/* The codes form one contiguous range 0..MKD_ELIMITED: a new code added
 * to error.h without a row in `codes` above shows here. */
static void test_codes_are_contiguous(void **state)
{
    assert_i64_eq(NCODES, 1 - MKD_ELIMITED);
    for (int i = 0; i < NCODES; i++)
        assert_i64_eq(codes[i].code, -i);
    assert_string_equal(mkd_strerror(MKD_ELIMITED - 1), "unknown error");
}

/* ------------------------------------------------------------ reply_status_of */

static void expect_status(int code, const char *name, int want)
{
    int got = reply_status_of(code);
    if (got != want)
        fail_msg("reply_status_of(%s = %d) = %d, expected %d", name, code, got, want);
}
#define STATUS(code, want) expect_status((code), #code, (want))

static void test_status_of_client_errors(void **state)
{
    STATUS(MKD_EBADREQ, 400);
    STATUS(MKD_EUNAUTH, 401);
    STATUS(MKD_EFORBIDDEN, 403);
    STATUS(MKD_ENOTFOUND, 404);
    STATUS(MKD_ENOROUTE, 404);
    STATUS(MKD_EMETHOD, 405);
    STATUS(MKD_ECONFLICT, 409);
    STATUS(MKD_ETOOBIG, 413);
    STATUS(MKD_EMEDIATYPE, 415);
    STATUS(MKD_EINVAL, 422);
    STATUS(MKD_ELIMITED, 429);
}

static void test_status_of_unavailable(void **state)
{
    STATUS(MKD_EBUSY, 503);
    STATUS(MKD_EUNAVAILABLE, 503);
    STATUS(MKD_ESHUTDOWN, 503);
}

static void test_status_of_server_errors(void **state)
{
    STATUS(MKD_EDB, 500);
    STATUS(MKD_ENOMEM, 500);
    STATUS(MKD_EINTERNAL, 500);
    STATUS(-18, 500);
    STATUS(-100, 500);
    STATUS(1, 500);
    STATUS(INT_MIN, 500);
    STATUS(INT_MAX, 500);
}

/* Every error code has an error status (4xx or 5xx), never a 2xx. */
static void test_status_of_every_error_is_an_error(void **state)
{
    for (int i = 0; i < NCODES; i++) {
        if (codes[i].code == MKD_OK)
            continue;
        int s = reply_status_of(codes[i].code);
        if (s < 400 || s > 599)
            fail_msg("reply_status_of(%s) = %d, expected a 4xx or 5xx", codes[i].name, s);
    }
}

/* An outcome of an SQL function answers the status api.md gives it. */
static void test_outcome_to_status(void **state)
{
    static const struct {
        const char *word;
        int status;
    } rows[] = {
        {"invalid", 422},         {"not_found", 404}, {"conflict", 409},
        {"unauthenticated", 401}, {"forbidden", 403}, {"no_such_word", 500},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int got = reply_status_of(mkd_from_outcome(rows[i].word));
        if (got != rows[i].status)
            fail_msg("outcome \"%s\" answers %d, expected %d", rows[i].word, got, rows[i].status);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcome_vocabulary),
        cmocka_unit_test(test_outcome_unknown_is_internal),
        cmocka_unit_test(test_strerror_names_every_code),
        cmocka_unit_test(test_strerror_names_are_distinct),
        cmocka_unit_test(test_strerror_unknown),
        cmocka_unit_test(test_codes_are_contiguous),
        cmocka_unit_test(test_status_of_client_errors),
        cmocka_unit_test(test_status_of_unavailable),
        cmocka_unit_test(test_status_of_server_errors),
        cmocka_unit_test(test_status_of_every_error_is_an_error),
        cmocka_unit_test(test_outcome_to_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
