/*
 * src/api/cursor.c: keyset cursors. Round trips for every kind and extreme
 * keys, golden encodings (a cursor handed out before a deploy must still
 * decode after it), and every way decoding must refuse.
 */
#include "unit.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "api/cursor.h"
#include "core/timefmt.h"
#include "core/error.h"

static const int kinds[] = {CURSOR_NEWEST, CURSOR_PRICE_ASC, CURSOR_PRICE_DESC, CURSOR_ID, CURSOR_ORDERS};
#define NKINDS ((int)(sizeof(kinds) / sizeof(kinds[0])))

/* Text of an arbitrary raw cursor (any version/kind/key/id), bypassing
 * cursor_encode, to build inputs cursor_encode would never produce. */
static void raw_text(int version, int kind, int64_t key, int64_t id, char out[CURSOR_TEXT_LEN + 1])
{
    unsigned char raw[18];
    uint64_t k = (uint64_t)key, i = (uint64_t)id;
    raw[0] = (unsigned char)version;
    raw[1] = (unsigned char)kind;
    for (int b = 7; b >= 0; b--, k >>= 8, i >>= 8) {
        raw[2 + b] = (unsigned char)k;
        raw[10 + b] = (unsigned char)i;
    }
    sodium_bin2base64(out, CURSOR_TEXT_LEN + 1, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static void assert_decode_fails(const char *s, size_t n, int want_kind, const char *why)
{
    cursor_t c = {77, 88, 99};
    int rc = cursor_decode(s, n, want_kind, &c);
    if (rc != MKD_EINVAL) {
        char shown[256];
        fail_msg("cursor_decode(\"%s\", kind %d) = %d, expected MKD_EINVAL (%s)",
                 show(s, n, shown, sizeof(shown)), want_kind, rc, why);
    }
    /* The output is untouched on failure. */
    assert_i64_eq(c.kind, 77);
    assert_i64_eq(c.key, 88);
    assert_i64_eq(c.id, 99);
}

static void round_trip(int kind, int64_t key, int64_t id)
{
    cursor_t in = {kind, key, id}, out = {0};
    char text[CURSOR_TEXT_LEN + 1];
    memset(text, 'X', sizeof(text));
    cursor_encode(&in, text);
    if (strlen(text) != CURSOR_TEXT_LEN)
        fail_msg("cursor_encode(kind %d, key %lld, id %lld) gave \"%s\" of length %zu, expected %d", kind,
                 (long long)key, (long long)id, text, strlen(text), CURSOR_TEXT_LEN);
    for (int i = 0; i < CURSOR_TEXT_LEN; i++) {
        char ch = text[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_'))
            fail_msg("cursor text \"%s\" has '%c' at %d: not base64url", text, ch, i);
    }
    int rc = cursor_decode(text, CURSOR_TEXT_LEN, kind, &out);
    if (rc != 0)
        fail_msg("cursor_decode(\"%s\") of kind %d, key %lld, id %lld = %d, expected 0", text, kind,
                 (long long)key, (long long)id, rc);
    assert_i64_eq(out.kind, kind);
    assert_i64_eq(out.key, key);
    assert_i64_eq(out.id, id);
}

static void test_round_trip_newest(void **state)
{
    static const int64_t keys[] = {0,
                                   1,
                                   -1,
                                   1795000000000000LL,   /* 2026 */
                                   1795000000123456LL,   /* with µs */
                                   -62135596800000000LL, /* 0001-01-01 */
                                   253402300799999999LL, /* 9999-12-31 23:59:59.999999 */
                                   -86400000000LL};      /* 1969-12-31 */
    static const int64_t ids[] = {1, 2, 255, 256, 123456789, INT64_MAX};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
            round_trip(CURSOR_NEWEST, keys[k], ids[i]);
}

static void test_round_trip_orders(void **state)
{
    round_trip(CURSOR_ORDERS, 1795000000000000LL, 1);
    round_trip(CURSOR_ORDERS, -1, 7);
    round_trip(CURSOR_ORDERS, 0, INT64_MAX);
    round_trip(CURSOR_ORDERS, TS_MIN_US, 1);
    round_trip(CURSOR_ORDERS, TS_MAX_US, INT64_MAX);
}

/* Time keys outside years 1..9999 cannot be formatted for PostgreSQL: a
 * cursor carrying one is malformed, whatever its signature of base64. */
static void test_time_key_out_of_range(void **state)
{
    static const int64_t keys[] = {INT64_MIN, INT64_MAX, TS_MIN_US - 1, TS_MAX_US + 1};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        for (int kind = CURSOR_NEWEST; kind <= CURSOR_ORDERS; kind += CURSOR_ORDERS - CURSOR_NEWEST) {
            cursor_t in = {kind, keys[k], 1}, out = {0};
            char text[CURSOR_TEXT_LEN + 1];
            cursor_encode(&in, text);
            int rc = cursor_decode(text, CURSOR_TEXT_LEN, kind, &out);
            if (rc == 0)
                fail_msg("cursor of kind %d with key %lld decoded; expected MKD_EINVAL", kind,
                         (long long)keys[k]);
        }
    }
}

static void test_round_trip_price(void **state)
{
    static const int64_t keys[] = {1, 2, 99, 129900, 100000000000LL, INT64_MAX};
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        round_trip(CURSOR_PRICE_ASC, keys[k], 1);
        round_trip(CURSOR_PRICE_ASC, keys[k], INT64_MAX);
        round_trip(CURSOR_PRICE_DESC, keys[k], 1);
        round_trip(CURSOR_PRICE_DESC, keys[k], 4242);
    }
}

static void test_round_trip_id(void **state)
{
    round_trip(CURSOR_ID, 0, 1);
    round_trip(CURSOR_ID, 0, 42);
    round_trip(CURSOR_ID, 0, INT64_MAX);
}

/* The wire format is a contract with clients holding cursors. */
static void test_golden_encodings(void **state)
{
    static const struct {
        cursor_t c;
        const char *text;
    } golden[] = {
        {{CURSOR_NEWEST, 0, 1}, "AQEAAAAAAAAAAAAAAAAAAAAB"},
        {{CURSOR_ID, 0, 42}, "AQQAAAAAAAAAAAAAAAAAAAAq"},
        {{CURSOR_NEWEST, 1795000000000000LL, 123456}, "AQEABmCLAV8wAAAAAAAAAeJA"},
        {{CURSOR_PRICE_DESC, -1, INT64_MAX}, "AQP__________3__________"},
    };
    for (size_t i = 0; i < sizeof(golden) / sizeof(golden[0]); i++) {
        char text[CURSOR_TEXT_LEN + 1];
        cursor_encode(&golden[i].c, text);
        assert_string_equal(text, golden[i].text);
    }
    /* ...and they decode (the PRICE_DESC one has key -1, which decoding
     * refuses; see test_price_key_below_one). */
    cursor_t c;
    assert_i64_eq(cursor_decode(golden[2].text, CURSOR_TEXT_LEN, CURSOR_NEWEST, &c), 0);
    assert_i64_eq(c.key, 1795000000000000LL);
    assert_i64_eq(c.id, 123456);
}

static void test_wrong_kind(void **state)
{
    for (int a = 0; a < NKINDS; a++) {
        char text[CURSOR_TEXT_LEN + 1];
        cursor_t c = {kinds[a], 5, 9};
        if (kinds[a] == CURSOR_ID)
            c.key = 0;
        cursor_encode(&c, text);
        for (int b = 0; b < NKINDS; b++) {
            if (a == b)
                continue;
            assert_decode_fails(text, CURSOR_TEXT_LEN, kinds[b], "kind mismatch");
        }
    }
    /* Kinds outside the enum. */
    char text[CURSOR_TEXT_LEN + 1];
    raw_text(1, 0, 5, 9, text);
    assert_decode_fails(text, CURSOR_TEXT_LEN, CURSOR_NEWEST, "kind 0");
    raw_text(1, 6, 5, 9, text);
    assert_decode_fails(text, CURSOR_TEXT_LEN, CURSOR_NEWEST, "kind 6");
    raw_text(1, 255, 5, 9, text);
    assert_decode_fails(text, CURSOR_TEXT_LEN, CURSOR_NEWEST, "kind 255");
    /* 256 + CURSOR_NEWEST truncates to the same byte but is not the kind. */
    raw_text(1, 1, 5, 9, text);
    assert_decode_fails(text, CURSOR_TEXT_LEN, 256 + CURSOR_NEWEST, "want_kind 257");
}

static void test_wrong_version(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    static const int versions[] = {0, 2, 255};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        raw_text(versions[i], CURSOR_NEWEST, 5, 9, text);
        assert_decode_fails(text, CURSOR_TEXT_LEN, CURSOR_NEWEST, "version");
    }
}

static void test_wrong_length(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    cursor_t c = {CURSOR_NEWEST, 5, 9};
    cursor_encode(&c, text);
    assert_decode_fails(text, 0, CURSOR_NEWEST, "empty");
    assert_decode_fails(text, 1, CURSOR_NEWEST, "1 char");
    assert_decode_fails(text, CURSOR_TEXT_LEN - 1, CURSOR_NEWEST, "one short");
    assert_decode_fails(text, CURSOR_TEXT_LEN - 4, CURSOR_NEWEST, "four short");
    char longer[64];
    snprintf(longer, sizeof(longer), "%sAAAA", text);
    assert_decode_fails(longer, strlen(longer), CURSOR_NEWEST, "four extra");
    snprintf(longer, sizeof(longer), "%sA", text);
    assert_decode_fails(longer, strlen(longer), CURSOR_NEWEST, "one extra");
    snprintf(longer, sizeof(longer), "%s==", text);
    assert_decode_fails(longer, strlen(longer), CURSOR_NEWEST, "padding");
    /* The 24-character prefix of a longer buffer is the cursor itself. */
    cursor_t out;
    assert_i64_eq(cursor_decode(longer, CURSOR_TEXT_LEN, CURSOR_NEWEST, &out), 0);
    assert_i64_eq(out.id, 9);
}

static void test_bad_base64(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    cursor_t c = {CURSOR_NEWEST, 1795000000000000LL, 123456};
    cursor_encode(&c, text);
    /* Characters outside base64url at each position. */
    static const char bad[] = {'+', '/', '=', '*', ' ', '.', '%', '~', '\n', '\0', '\x7f'};
    for (size_t b = 0; b < sizeof(bad); b++) {
        for (int pos = 0; pos < CURSOR_TEXT_LEN; pos += 7) {
            char t[CURSOR_TEXT_LEN + 1];
            memcpy(t, text, sizeof(t));
            t[pos] = bad[b];
            assert_decode_fails(t, CURSOR_TEXT_LEN, CURSOR_NEWEST, "bad character");
        }
    }
    assert_decode_fails("AQEABmCLAV8wAAAAAAAAAeJ+", CURSOR_TEXT_LEN, CURSOR_NEWEST, "standard alphabet '+'");
    assert_decode_fails("AQEABmCLAV8wAAAAAAAAAeJ/", CURSOR_TEXT_LEN, CURSOR_NEWEST, "standard alphabet '/'");
    assert_decode_fails("........................", CURSOR_TEXT_LEN, CURSOR_NEWEST, "dots");
    assert_decode_fails("AQEABmCLAV8w AAAAAAAAeJA", CURSOR_TEXT_LEN, CURSOR_NEWEST, "space");
}

/*
 * FIXED (this test keeps it so); what was wrong: Debian's libsodium 1.0.18
 * sodium_base642bin() sign-extends bytes >= 0x80, and its constant-time
 * comparisons then read every such byte as '_' (63). cursor_decode inherits
 * this, so a cursor whose text has a non-ASCII byte (reachable as %C3 in the
 * query string) is accepted as if that byte were '_' instead of being a
 * malformed cursor (api.md: 422). A check that every byte is in the
 * base64url alphabet (or re-encoding and comparing) would close it.
 */
static void test_non_ascii_rejected(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    cursor_t c = {CURSOR_NEWEST, 1795000000000000LL, 123456};
    cursor_encode(&c, text);
    static const unsigned char bad[] = {0x80, 0xC3, 0xFF};
    for (size_t b = 0; b < sizeof(bad); b++) {
        for (int pos = 0; pos < CURSOR_TEXT_LEN; pos += 7) {
            char t[CURSOR_TEXT_LEN + 1];
            memcpy(t, text, sizeof(t));
            t[pos] = (char)bad[b];
            assert_decode_fails(t, CURSOR_TEXT_LEN, CURSOR_NEWEST, "non-ASCII byte");
        }
    }
}

static void test_id_below_one(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    static const int64_t ids[] = {0, -1, -42, INT64_MIN};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        for (int k = 0; k < NKINDS; k++) {
            raw_text(1, kinds[k], kinds[k] == CURSOR_ID ? 0 : 5, ids[i], text);
            assert_decode_fails(text, CURSOR_TEXT_LEN, kinds[k], "id < 1");
        }
    }
}

static void test_id_cursor_key_must_be_zero(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    static const int64_t keys[] = {1, -1, 42, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        raw_text(1, CURSOR_ID, keys[i], 7, text);
        assert_decode_fails(text, CURSOR_TEXT_LEN, CURSOR_ID, "CURSOR_ID key != 0");
    }
}

static void test_price_key_below_one(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    static const int64_t keys[] = {0, -1, -129900, INT64_MIN};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        raw_text(1, CURSOR_PRICE_ASC, keys[i], 7, text);
        assert_decode_fails(text, CURSOR_TEXT_LEN, CURSOR_PRICE_ASC, "price key < 1");
        raw_text(1, CURSOR_PRICE_DESC, keys[i], 7, text);
        assert_decode_fails(text, CURSOR_TEXT_LEN, CURSOR_PRICE_DESC, "price key < 1");
    }
}

/* Newest/orders cursors carry timestamps: negative keys included
 * (rows created before 1970 sort fine), within years 1..9999. */
static void test_time_keys_any_sign(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    cursor_t c;
    raw_text(1, CURSOR_NEWEST, -1, 3, text);
    assert_i64_eq(cursor_decode(text, CURSOR_TEXT_LEN, CURSOR_NEWEST, &c), 0);
    assert_i64_eq(c.key, -1);
    raw_text(1, CURSOR_ORDERS, 0, 3, text);
    assert_i64_eq(cursor_decode(text, CURSOR_TEXT_LEN, CURSOR_ORDERS, &c), 0);
    assert_i64_eq(c.key, 0);
}

/* Exactly-sized heap input so ASan catches a read past n. */
static void test_reads_only_n_bytes(void **state)
{
    char text[CURSOR_TEXT_LEN + 1];
    cursor_t c = {CURSOR_PRICE_ASC, 129900, 17}, out;
    cursor_encode(&c, text);
    char *heap = malloc(CURSOR_TEXT_LEN);
    memcpy(heap, text, CURSOR_TEXT_LEN);
    assert_i64_eq(cursor_decode(heap, CURSOR_TEXT_LEN, CURSOR_PRICE_ASC, &out), 0);
    assert_i64_eq(out.key, 129900);
    assert_i64_eq(out.id, 17);
    free(heap);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_newest),
        cmocka_unit_test(test_round_trip_orders),
        cmocka_unit_test(test_time_key_out_of_range),
        cmocka_unit_test(test_round_trip_price),
        cmocka_unit_test(test_round_trip_id),
        cmocka_unit_test(test_golden_encodings),
        cmocka_unit_test(test_wrong_kind),
        cmocka_unit_test(test_wrong_version),
        cmocka_unit_test(test_wrong_length),
        cmocka_unit_test(test_bad_base64),
        cmocka_unit_test(test_non_ascii_rejected),
        cmocka_unit_test(test_id_below_one),
        cmocka_unit_test(test_id_cursor_key_must_be_zero),
        cmocka_unit_test(test_price_key_below_one),
        cmocka_unit_test(test_time_keys_any_sign),
        cmocka_unit_test(test_reads_only_n_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
