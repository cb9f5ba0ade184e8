/*
 * src/cache/: the pure parts of the response cache. cache_parse_entry reads
 * bytes that come from Redis (untrusted), so every input is copied into an
 * exactly-sized heap block and ASan catches a read past n. cache_fold_case
 * folds ASCII and Russian Cyrillic only. The tag vocabulary (tags.c) is
 * checked against the table at the top of cache/tags.h: every builder's
 * tags, every write's tags, and — the property the cache's correctness rests
 * on — that an entry and a write share a tag exactly when the table says
 * the write invalidates the entry. Last, the "no cache configured" case (a
 * NULL cache_worker_t): lookups bypass, invalidations complete, stores are
 * dropped, each synchronously.
 */
#include "unit.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cache/cache.h"
#include "cache/tags.h"

/* ------------------------------------------------------- cache_parse_entry */

typedef struct parsed {
    long off;
    uint64_t fresh_until_ms, fill_ms;
    cache_versions_t ver;
} parsed_t;

static long parse(const char *s, size_t n, parsed_t *p)
{
    char *heap = malloc(n ? n : 1);
    memcpy(heap, s, n);
    memset(p, 0, sizeof(*p));
    p->off = cache_parse_entry(heap, n, &p->fresh_until_ms, &p->fill_ms, &p->ver);
    free(heap);
    return p->off;
}

static void expect_bad(const char *s, size_t n, const char *why)
{
    parsed_t p;
    char shown[700];
    long off = parse(s, n, &p);
    if (off != -1)
        fail_msg("cache_parse_entry(\"%s\", %zu) [%s] = %ld (versions %d), expected -1",
                 show(s, n, shown, sizeof(shown)), n, why, off, p.ver.n);
}

/* A string literal, embedded NULs included. */
#define PARSE_BAD(lit, why) expect_bad((lit), sizeof(lit) - 1, (why))

/* Builds "mkd1 <fresh> <fill> <count> <v0> … <vk-1>\n<body>" into out;
 * returns its length and the header's (without the newline) in *hl. */
static size_t build_entry(char *out, size_t cap, uint64_t fresh, uint64_t fill, int count,
                          const char *const *v, int nv, const char *body, size_t *hl)
{
    int n = snprintf(out, cap, "mkd1 %" PRIu64 " %" PRIu64 " %d", fresh, fill, count);
    for (int i = 0; i < nv; i++)
        n += snprintf(out + n, cap - (size_t)n, " %s", v[i]);
    *hl = (size_t)n;
    n += snprintf(out + n, cap - (size_t)n, "\n%s", body);
    return (size_t)n;
}

static const char *const versions5[] = {
    "18f3a2b4c5d6e-0a1b2c3d", "18f3a2b4c5d6f-deadbeef", "18f3a2b4c5d70-00000001",
    "18f3a2b4c5d71-ffffffff", "18f3a2b4c5d72-12345678",
};

static void test_parse_valid_1_to_5_versions(void **state)
{
    for (int k = 1; k <= 1 + CACHE_ENTRY_TAGS; k++) {
        char e[1024], shown[1200];
        size_t hl, n = build_entry(e, sizeof(e), 1767312245123ULL, 42, k, versions5, k, "{\"id\":1}", &hl);
        parsed_t p;
        long off = parse(e, n, &p);
        if (off != (long)hl + 1)
            fail_msg("%d versions: cache_parse_entry(\"%s\") = %ld, expected the body offset %zu", k,
                     show(e, n, shown, sizeof(shown)), off, hl + 1);
        assert_i64_eq(p.fresh_until_ms, 1767312245123LL);
        assert_i64_eq(p.fill_ms, 42);
        assert_i64_eq(p.ver.n, k);
        for (int i = 0; i < k; i++)
            if (strcmp(p.ver.v[i], versions5[i]) != 0)
                fail_msg("%d versions: version %d is \"%s\", expected \"%s\"", k, i, p.ver.v[i],
                         versions5[i]);
        assert_slice_eq(((slice_t){e + off, n - (size_t)off}), "{\"id\":1}");
    }
}

static void test_parse_body_offset(void **state)
{
    parsed_t p;
    /* An empty body: the offset is the whole length. */
    static const char empty[] = "mkd1 10 20 1 v0\n";
    assert_i64_eq(parse(empty, sizeof(empty) - 1, &p), (long)sizeof(empty) - 1);
    /* The body may contain newlines (and anything else): the header ends
     * at the first one. */
    static const char lines[] = "mkd1 10 20 2 a b\n{\n\"x\": \"mkd1 1 2 1 c\\n\"\n}\n";
    assert_i64_eq(parse(lines, sizeof(lines) - 1, &p), 17);
    assert_i64_eq(p.fresh_until_ms, 10);
    assert_i64_eq(p.fill_ms, 20);
    assert_i64_eq(p.ver.n, 2);
    assert_string_equal(p.ver.v[0], "a");
    assert_string_equal(p.ver.v[1], "b");
    /* Binary body bytes, a NUL among them. */
    static const char bin[] = "mkd1 0 0 1 z\n\0\xff\n";
    assert_i64_eq(parse(bin, sizeof(bin) - 1, &p), 13);
    assert_i64_eq(p.fresh_until_ms, 0);
    assert_i64_eq(p.fill_ms, 0);
}

/* The largest header cache_put writes: 20-digit times and five versions of
 * CACHE_VERSION_MAX - 1 bytes each. */
static void test_parse_largest_canonical_header(void **state)
{
    char v[5][CACHE_VERSION_MAX];
    const char *vp[5];
    for (int i = 0; i < 5; i++) {
        memset(v[i], 'a' + i, CACHE_VERSION_MAX - 1);
        v[i][CACHE_VERSION_MAX - 1] = '\0';
        vp[i] = v[i];
    }
    char e[1024];
    size_t hl, n = build_entry(e, sizeof(e), UINT64_MAX, UINT64_MAX, 5, vp, 5, "body", &hl);
    parsed_t p;
    assert_i64_eq(parse(e, n, &p), (long)hl + 1);
    if (p.fresh_until_ms != UINT64_MAX || p.fill_ms != UINT64_MAX)
        fail_msg("times %" PRIu64 " %" PRIu64 ", expected %" PRIu64 " twice", p.fresh_until_ms, p.fill_ms,
                 UINT64_MAX);
    assert_i64_eq(p.ver.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_i64_eq(strlen(p.ver.v[i]), CACHE_VERSION_MAX - 1);
        assert_string_equal(p.ver.v[i], v[i]);
    }
}

static void test_parse_rejects_empty_and_no_newline(void **state)
{
    PARSE_BAD("", "empty");
    PARSE_BAD("\n", "only a newline");
    PARSE_BAD("mkd1", "magic only");
    PARSE_BAD("mkd1 ", "magic and space only");
    PARSE_BAD("mkd1 1 2 1 v0", "no newline");
    PARSE_BAD("mkd1 1 2 1 v0 {\"id\":1}", "no newline, body glued on");
    /* The newline just past n does not count. */
    static const char e[] = "mkd1 1 2 1 v0\n";
    expect_bad(e, sizeof(e) - 2, "newline past n");
}

static void test_parse_rejects_wrong_magic(void **state)
{
    PARSE_BAD("mkd2 1 2 1 v0\nbody", "mkd2");
    PARSE_BAD("MKD1 1 2 1 v0\nbody", "upper case");
    PARSE_BAD("mkd11 2 1 v0\nbody", "no space after the magic");
    PARSE_BAD(" mkd1 1 2 1 v0\nbody", "leading space");
    PARSE_BAD("xmkd1 1 2 1 v0\nbody", "prefix");
    PARSE_BAD("mkd\n1 1 2 1 v0\nbody", "newline inside the magic");
    PARSE_BAD("{\"id\":1}\n", "a bare body (an entry of another format)");
}

static void test_parse_rejects_bad_count(void **state)
{
    PARSE_BAD("mkd1 1 2 0\nbody", "count 0");
    PARSE_BAD("mkd1 1 2 0 v0\nbody", "count 0 with a version");
    PARSE_BAD("mkd1 1 2 6 a b c d e f\nbody", "count 6");
    PARSE_BAD("mkd1 1 2 -1 v0\nbody", "count -1");
    PARSE_BAD("mkd1 1 2 99 v0\nbody", "count 99");
    PARSE_BAD("mkd1 1 2 one v0\nbody", "count not a number");
    PARSE_BAD("mkd1 1 2\nbody", "no count");
    PARSE_BAD("mkd1 1\nbody", "no fill time, no count");
    PARSE_BAD("mkd1 \nbody", "no fields");
}

static void test_parse_rejects_too_few_versions(void **state)
{
    PARSE_BAD("mkd1 1 2 1\nbody", "count 1, none");
    PARSE_BAD("mkd1 1 2 2 v0\nbody", "count 2, one");
    PARSE_BAD("mkd1 1 2 5 a b c d\nbody", "count 5, four");
    PARSE_BAD("mkd1 1 2 3 a b\n c\nbody", "the third after the newline");
}

static void test_parse_rejects_long_versions(void **state)
{
    char e[1024], v[200];
    const char *vp[1] = {v};
    size_t hl;
    for (size_t len = CACHE_VERSION_MAX; len < sizeof(v); len += 37) {
        memset(v, 'f', len);
        v[len] = '\0';
        size_t n = build_entry(e, sizeof(e), 1, 2, 1, vp, 1, "body", &hl);
        expect_bad(e, n, "a version of CACHE_VERSION_MAX bytes or more");
    }
    /* The long one is not the first. */
    memset(v, 'f', CACHE_VERSION_MAX);
    v[CACHE_VERSION_MAX] = '\0';
    const char *vq[3] = {"a", "b", v};
    size_t n = build_entry(e, sizeof(e), 1, 2, 3, vq, 3, "body", &hl);
    expect_bad(e, n, "the third version CACHE_VERSION_MAX bytes long");
}

static void test_parse_rejects_long_header(void **state)
{
    /* A valid-looking header padded to 512 bytes and more before its
     * newline: the header has a fixed budget, whatever pads it. */
    static const size_t lens[] = {512, 513, 1000, 4096};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t hl = lens[k];
        char *e = malloc(hl + 8);
        static const char head[] = "mkd1 1 2 1 v0";
        memcpy(e, head, sizeof(head) - 1);
        memset(e + sizeof(head) - 1, ' ', hl - (sizeof(head) - 1));
        memcpy(e + hl, "\nbody", 5);
        parsed_t p;
        long off = parse(e, hl + 5, &p);
        free(e);
        if (off != -1)
            fail_msg("a header of %zu bytes: cache_parse_entry = %ld, expected -1", hl, off);
    }
}

/* Fields that are not decimal numbers, and more versions than the count:
 * garbage, not an entry cache_put could have written. */
static void test_parse_rejects_non_numeric_fields(void **state)
{
    PARSE_BAD("mkd1 abc 2 1 v0\nbody", "fresh_until not a number");
    PARSE_BAD("mkd1 12ab 2 1 v0\nbody", "fresh_until with trailing letters");
    PARSE_BAD("mkd1 -5 2 1 v0\nbody", "fresh_until negative");
    PARSE_BAD("mkd1 1 x 1 v0\nbody", "fill_ms not a number");
    PARSE_BAD("mkd1 1 2 1x v0\nbody", "count with trailing letters");
    PARSE_BAD("mkd1 1 2 4294967297 a\nbody", "count 2^32 + 1");
    PARSE_BAD("mkd1 99999999999999999999 2 1 v0\nbody", "fresh_until past UINT64_MAX");
}

static void test_parse_rejects_too_many_versions(void **state)
{
    PARSE_BAD("mkd1 1 2 1 a b\nbody", "count 1, two");
    PARSE_BAD("mkd1 1 2 5 a b c d e f\nbody", "count 5, six");
}

/* ----------------------------------------------------------- cache_fold_case */

static void expect_fold(const char *in, const char *want)
{
    size_t n = strlen(in);
    char *heap = malloc(n ? n : 1);
    memcpy(heap, in, n);
    cache_fold_case(heap, n);
    char a[400], b[400], c[400];
    if (strlen(want) != n || memcmp(heap, want, n) != 0)
        fail_msg("cache_fold_case(\"%s\") = \"%s\", expected \"%s\"", show(in, n, a, sizeof(a)),
                 show(heap, n, b, sizeof(b)), show(want, strlen(want), c, sizeof(c)));
    free(heap);
}

static void test_fold_ascii(void **state)
{
    expect_fold("", "");
    expect_fold("Hello WORLD", "hello world");
    expect_fold("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz");
    /* The neighbours of A..Z stay: @ [ \ ] ^ _ ` { */
    expect_fold("@[\\]^_`{0129 -+.", "@[\\]^_`{0129 -+.");
    expect_fold("iphone 15 PRO max", "iphone 15 pro max");
}

static void test_fold_cyrillic_alphabet(void **state)
{
    expect_fold("АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя");
    /* Byte by byte at the edges: А..П stay in D0, Р..Я move to D1. */
    expect_fold("\xD0\x90", "\xD0\xB0"); /* А → а */
    expect_fold("\xD0\x9F", "\xD0\xBF"); /* П → п */
    expect_fold("\xD0\xA0", "\xD1\x80"); /* Р → р */
    expect_fold("\xD0\xAF", "\xD1\x8F"); /* Я → я */
    expect_fold("\xD0\x81", "\xD1\x91"); /* Ё → ё */
    expect_fold("ЁЛКА ЁЖ", "ёлка ёж");
    expect_fold("РЫБА СЯРЬ", "рыба сярь");
}

static void test_fold_mixed_and_lowercase(void **state)
{
    expect_fold("Москва MSK Ёлка 2024", "москва msk ёлка 2024");
    expect_fold("ЧайНИК Bosch ТВ-приставка", "чайник bosch тв-приставка");
    /* Already lower case: unchanged, the D1 range included. */
    expect_fold("абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя");
    expect_fold("hello, мир", "hello, мир");
}

static void test_fold_leaves_other_utf8(void **state)
{
    /* Latin-1, Greek, CJK, emoji: no folding outside ASCII and Russian. */
    expect_fold("ÀÉÎ ß ΣΩ 中文 😀", "ÀÉÎ ß ΣΩ 中文 😀");
    /* Cyrillic capitals of other languages in the D0 80..8F block (Ђ Є І Ї Ў
     * Џ) and the D2 block (Ґ) are not Russian: untouched. */
    expect_fold("ЂЄІЇЎЏҐ", "ЂЄІЇЎЏҐ");
    /* A lone D0 followed by ASCII: only the ASCII folds. */
    expect_fold("\xD0"
                "A",
                "\xD0"
                "a");
}

static void test_fold_odd_trailing_byte(void **state)
{
    expect_fold("AБ\xD0", "aб\xD0");
    expect_fold("\xD0", "\xD0");
    /* n ends between the two bytes of П: the byte past n is not touched. */
    char s[3] = {'\xD0', '\x9F', '\0'};
    cache_fold_case(s, 1);
    if ((unsigned char)s[0] != 0xD0 || (unsigned char)s[1] != 0x9F)
        fail_msg("cache_fold_case(\"\\xD0\\x9F\", 1) gave %02X %02X, expected D0 9F", (unsigned char)s[0],
                 (unsigned char)s[1]);
}

/* ---------------------------------------------------------------------- tags */

static int has_tag(const cache_tags_t *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->tag[i], name) == 0)
            return 1;
    return 0;
}

static const char *list_tags(const cache_tags_t *t, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < t->n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", t->tag[i]);
    return out;
}

/* t holds exactly the tags of `want` (NULL-terminated), in that order. */
static void expect_tags_(const cache_tags_t *t, const char *what, const char *const *want)
{
    int n = 0;
    while (want[n] != NULL)
        n++;
    int same = t->n == n;
    for (int i = 0; same && i < n; i++)
        same = strcmp(t->tag[i], want[i]) == 0;
    if (!same) {
        char got[2048], exp[2048];
        size_t o = 0;
        exp[0] = '\0';
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(exp + o, sizeof(exp) - o, "%s%s", i ? ", " : "", want[i]);
        fail_msg("%s: tags [%s] (%d), expected [%s] (%d)", what, list_tags(t, got, sizeof(got)), t->n, exp,
                 n);
    }
}
#define expect_tags(t, what, ...) expect_tags_((t), (what), (const char *const[]){__VA_ARGS__, NULL})

/* A tag set full of leftovers, to see that builders reset it. */
static void dirty(cache_tags_t *t)
{
    t->n = 3;
    snprintf(t->tag[0], CACHE_TAG_MAX, "old:1");
    snprintf(t->tag[1], CACHE_TAG_MAX, "old:2");
    snprintf(t->tag[2], CACHE_TAG_MAX, "sellers");
}

static void test_tags_for_entries(void **state)
{
    cache_tags_t t;
    dirty(&t);
    tags_for_product(&t, 42);
    expect_tags(&t, "tags_for_product(42)", "product:42", "sellers");
    dirty(&t);
    tags_for_product_list(&t, 7);
    expect_tags(&t, "tags_for_product_list(7)", "products:city:7", "sellers");
    dirty(&t);
    tags_for_product_list(&t, 0);
    expect_tags(&t, "tags_for_product_list(0)", "products:all", "sellers");
    dirty(&t);
    tags_for_seller(&t, 5);
    expect_tags(&t, "tags_for_seller(5)", "seller:5");
    dirty(&t);
    tags_for_popular_sellers(&t);
    expect_tags(&t, "tags_for_popular_sellers", "sellers");
    dirty(&t);
    tags_for_reference(&t);
    expect_tags(&t, "tags_for_reference", "reference");
    dirty(&t);
    tags_for_order_history(&t, 9, 0);
    expect_tags(&t, "tags_for_order_history(9, buyer)", "orders:buyer:9", "orders");
    dirty(&t);
    tags_for_order_history(&t, 65536 + 9, 1);
    expect_tags(&t, "tags_for_order_history(65545, seller): its bucket", "orders:seller:9", "orders");
    /* The extremes of an id fit a tag name. */
    tags_for_product(&t, INT64_MAX);
    expect_tags(&t, "tags_for_product(INT64_MAX): its bucket", "product:65535", "sellers");
    tags_for_product_list(&t, INT64_MAX);
    expect_tags(&t, "tags_for_product_list(INT64_MAX)", "products:city:9223372036854775807", "sellers");
    /* Row tags are bounded buckets: 65536 rows apart share one; a write to
     * either invalidates both (more misses, never a stale hit). */
    tags_for_product(&t, 65536);
    expect_tags(&t, "tags_for_product(65536)", "product:65536", "sellers");
    tags_for_product(&t, 65537);
    expect_tags(&t, "tags_for_product(65537)", "product:1", "sellers");
    tags_for_seller(&t, 65536 + 5);
    expect_tags(&t, "tags_for_seller(65541)", "seller:5");
}

static void test_tags_for_entries_fit_a_lookup(void **state)
{
    cache_tags_t t;
    tags_for_product(&t, 1);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
    tags_for_product_list(&t, 1);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
    tags_for_product_list(&t, 0);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
    tags_for_seller(&t, 1);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
    tags_for_popular_sellers(&t);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
    tags_for_reference(&t);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
    tags_for_order_history(&t, 1, 0);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
    tags_for_order_history(&t, 1, 1);
    assert_true(t.n >= 1 && t.n <= CACHE_ENTRY_TAGS);
}

static void test_tags_of_writes(void **state)
{
    cache_tags_t t = {0};
    tags_reference_changed(&t);
    expect_tags(&t, "tags_reference_changed", "reference");
    tags_reference_changed(&t);
    expect_tags(&t, "tags_reference_changed twice", "reference");

    t.n = 0;
    tags_seller_changed(&t, 5);
    expect_tags(&t, "tags_seller_changed(5)", "seller:5", "sellers");
    tags_seller_changed(&t, 6);
    expect_tags(&t, "tags_seller_changed(5, 6)", "seller:5", "sellers", "seller:6");

    t.n = 0;
    tags_product_changed(&t, 42, 7);
    expect_tags(&t, "tags_product_changed(42, 7)", "product:42", "products:city:7", "products:all");
    tags_product_changed(&t, 42, 7);
    expect_tags(&t, "tags_product_changed(42, 7) twice", "product:42", "products:city:7", "products:all");

    /* Appending: a seller who moved, then one of their products. */
    t.n = 0;
    tags_seller_changed(&t, 5);
    tags_product_changed(&t, 42, 8);
    expect_tags(&t, "seller 5 then product 42 in city 8", "seller:5", "sellers", "product:42",
                "products:city:8", "products:all");
}

static void test_tags_of_an_order(void **state)
{
    /* Three products of one city: three product tags, one city, one "all". */
    cache_tags_t t = {0};
    tags_product_changed(&t, 11, 7);
    tags_product_changed(&t, 12, 7);
    tags_product_changed(&t, 13, 7);
    expect_tags(&t, "an order of products 11, 12, 13 in city 7", "product:11", "products:city:7",
                "products:all", "product:12", "product:13");

    /* The largest order (50 products) fits: 50 + the city + "all", and the
     * histories of its buyer and seller. */
    t.n = 0;
    for (int i = 1; i <= 50; i++)
        tags_product_changed(&t, 1000 + i, 3);
    tags_order_changed(&t, INT64_MAX, INT64_MAX - 1);
    assert_i64_eq(t.n, 54);
    assert_true(has_tag(&t, "orders:buyer:65535"));
    assert_true(has_tag(&t, "orders:seller:65534"));
    assert_true(t.n <= CACHE_TAGS_MAX);
    for (int i = 1; i <= 50; i++) {
        char name[CACHE_TAG_MAX];
        snprintf(name, sizeof(name), "product:%d", 1000 + i);
        if (!has_tag(&t, name))
            fail_msg("the 50-product order lacks %s", name);
    }
    assert_true(has_tag(&t, "products:city:3"));
    assert_true(has_tag(&t, "products:all"));
    for (int i = 0; i < t.n; i++)
        for (int k = i + 1; k < t.n; k++)
            if (strcmp(t.tag[i], t.tag[k]) == 0)
                fail_msg("tag %s twice (at %d and %d)", t.tag[i], i, k);
}

/* The table of cache/tags.h, as data: which writes invalidate which
 * entries. Entries and writes use ids that overlap on purpose (product 42
 * of seller 5 in city 7) and ids that do not (product 43, seller 6,
 * city 8). */
enum {
    E_PRODUCT_42,
    E_PRODUCT_43,
    E_LIST_CITY_7,
    E_LIST_CITY_8,
    E_LIST_ALL,
    E_SELLER_5,
    E_SELLER_6,
    E_POPULAR,
    E_REFERENCE,
    E_ORDERS_BUYER_9,
    E_ORDERS_BUYER_10,
    E_ORDERS_SELLER_9,
    E_ORDERS_SELLER_11,
    NENTRIES
};
static const char *const entry_names[NENTRIES] = {
    "product detail 42",
    "product detail 43",
    "product list city 7",
    "product list city 8",
    "product list all",
    "seller detail 5",
    "seller detail 6",
    "popular sellers",
    "reference lists",
    "orders of user 9 as buyer",
    "orders of user 10 as buyer",
    "orders of user 9 as seller",
    "orders of user 11 as seller",
};

static void build_entry_tags(int e, cache_tags_t *t)
{
    switch (e) {
    case E_PRODUCT_42:
        tags_for_product(t, 42);
        break;
    case E_PRODUCT_43:
        tags_for_product(t, 43);
        break;
    case E_LIST_CITY_7:
        tags_for_product_list(t, 7);
        break;
    case E_LIST_CITY_8:
        tags_for_product_list(t, 8);
        break;
    case E_LIST_ALL:
        tags_for_product_list(t, 0);
        break;
    case E_SELLER_5:
        tags_for_seller(t, 5);
        break;
    case E_SELLER_6:
        tags_for_seller(t, 6);
        break;
    case E_POPULAR:
        tags_for_popular_sellers(t);
        break;
    case E_REFERENCE:
        tags_for_reference(t);
        break;
    case E_ORDERS_BUYER_9:
        tags_for_order_history(t, 9, 0);
        break;
    case E_ORDERS_BUYER_10:
        tags_for_order_history(t, 10, 0);
        break;
    case E_ORDERS_SELLER_9:
        tags_for_order_history(t, 9, 1);
        break;
    case E_ORDERS_SELLER_11:
        tags_for_order_history(t, 11, 1);
        break;
    }
}

enum { W_REFERENCE, W_SELLER_5, W_PRODUCT_42_CITY_7, W_ORDER_9_TO_11, W_ORDERS_DROPPED, NWRITES };
static const char *const write_names[NWRITES] = {
    "reference_changed", "seller_changed(5)", "product_changed(42, city 7)",
    "order_changed(buyer user 9, seller user 11)", "orders_dropped"};

static void build_write_tags(int w, cache_tags_t *t)
{
    t->n = 0;
    switch (w) {
    case W_REFERENCE:
        tags_reference_changed(t);
        break;
    case W_SELLER_5:
        tags_seller_changed(t, 5);
        break;
    case W_PRODUCT_42_CITY_7:
        tags_product_changed(t, 42, 7);
        break;
    case W_ORDER_9_TO_11:
        tags_order_changed(t, 9, 11);
        break;
    case W_ORDERS_DROPPED:
        tags_orders_dropped(t);
        break;
    }
}

/* invalidates[entry][write], from the "changed by" column of tags.h. */
static const int invalidates[NENTRIES][NWRITES] = {
    /*                  reference seller_5 product_42_city_7 order_9_to_11 orders_dropped */
    [E_PRODUCT_42] = {0, 1, 1, 0, 0},  /* product_changed (its id), seller_changed (embeds any seller) */
    [E_PRODUCT_43] = {0, 1, 0, 0, 0},  /* another product's change is not this one's */
    [E_LIST_CITY_7] = {0, 1, 1, 0, 0}, /* product_changed (its city), seller_changed */
    [E_LIST_CITY_8] = {0, 1, 0, 0, 0}, /* a product of city 7 is not in city 8's list */
    [E_LIST_ALL] = {0, 1, 1, 0, 0},    /* product_changed ("all"), seller_changed */
    [E_SELLER_5] = {0, 1, 0, 0, 0},    /* seller_changed (its id) only */
    [E_SELLER_6] = {0, 0, 0, 0, 0},    /* another seller */
    [E_POPULAR] = {0, 1, 0, 0, 0},     /* seller_changed (and its TTL) */
    [E_REFERENCE] = {1, 0, 0, 0, 0},   /* reference_changed only */
    /* An order's documents copy what they show (titles, prices): only a
     * change of the order itself, or of which months exist, shows. */
    [E_ORDERS_BUYER_9] = {0, 0, 0, 1, 1},   /* its buyer */
    [E_ORDERS_BUYER_10] = {0, 0, 0, 0, 1},  /* another buyer */
    [E_ORDERS_SELLER_9] = {0, 0, 0, 0, 1},  /* user 9 bought it; as a seller they are not in it */
    [E_ORDERS_SELLER_11] = {0, 0, 0, 1, 1}, /* its seller's user */
};

static int shared_tag(const cache_tags_t *a, const cache_tags_t *b, const char **which)
{
    for (int i = 0; i < a->n; i++)
        if (has_tag(b, a->tag[i])) {
            *which = a->tag[i];
            return 1;
        }
    return 0;
}

static void test_tags_writes_invalidate_exactly_the_table(void **state)
{
    for (int e = 0; e < NENTRIES; e++) {
        for (int w = 0; w < NWRITES; w++) {
            cache_tags_t et, wt;
            build_entry_tags(e, &et);
            build_write_tags(w, &wt);
            const char *which = NULL;
            int shares = shared_tag(&et, &wt, &which);
            char a[1024], b[1024];
            if (shares && !invalidates[e][w])
                fail_msg("%s [%s] shares \"%s\" with %s [%s], which tags.h says does not invalidate it",
                         entry_names[e], list_tags(&et, a, sizeof(a)), which, write_names[w],
                         list_tags(&wt, b, sizeof(b)));
            if (!shares && invalidates[e][w])
                fail_msg("%s [%s] shares no tag with %s [%s], which tags.h says invalidates it",
                         entry_names[e], list_tags(&et, a, sizeof(a)), write_names[w],
                         list_tags(&wt, b, sizeof(b)));
        }
    }
}

/* ------------------------------------------------- no cache (NULL worker) */

typedef struct got_cb {
    int calls;
    cache_result_t result;
    const char *body;
    size_t len;
    const cache_versions_t *versions;
} got_cb_t;

static void on_get(void *arg, cache_result_t result, const char *body, size_t len,
                   const cache_versions_t *versions)
{
    got_cb_t *g = arg;
    g->calls++;
    g->result = result;
    g->body = body;
    g->len = len;
    g->versions = versions;
}

static void expect_bypass_now(const char *key, const cache_tags_t *tags, const char *what)
{
    cache_get_op_t op;
    got_cb_t g = {.result = CACHE_HIT, .body = "x", .len = 99, .versions = (const void *)&g};
    cache_get(NULL, &op, key, tags, on_get, &g);
    /* Checked here, after the call returned: the callback ran inside it. */
    if (g.calls != 1)
        fail_msg("%s: the callback ran %d times before cache_get returned, expected 1", what, g.calls);
    if (g.result != CACHE_BYPASS)
        fail_msg("%s: result %d, expected CACHE_BYPASS (%d)", what, (int)g.result, (int)CACHE_BYPASS);
    if (g.body != NULL || g.len != 0 || g.versions != NULL)
        fail_msg("%s: body %p len %zu versions %p, expected NULL, 0, NULL", what, (const void *)g.body, g.len,
                 (const void *)g.versions);
}

static void test_null_worker_get_bypasses_once(void **state)
{
    cache_tags_t t;
    tags_for_product(&t, 42);
    expect_bypass_now("product:42", &t, "a product detail");
    tags_for_reference(&t);
    expect_bypass_now("cities", &t, "the cities list");
    expect_bypass_now("", &t, "an empty key");
}

static void on_done(void *arg)
{
    (*(int *)arg)++;
}

static void test_null_worker_invalidate_completes_once(void **state)
{
    cache_inval_op_t op;
    cache_tags_t t = {0};
    int calls = 0;
    tags_product_changed(&t, 42, 7);
    cache_invalidate(NULL, &op, &t, 0, on_done, &calls);
    assert_i64_eq(calls, 1);

    /* Many tags (an order of 50 products). */
    t.n = 0;
    for (int i = 1; i <= 50; i++)
        tags_product_changed(&t, i, 1);
    calls = 0;
    cache_invalidate(NULL, &op, &t, 0, on_done, &calls);
    assert_i64_eq(calls, 1);

    /* No tags. */
    t.n = 0;
    calls = 0;
    cache_invalidate(NULL, &op, &t, 0, on_done, &calls);
    assert_i64_eq(calls, 1);
}

static void test_null_worker_put_does_nothing(void **state)
{
    cache_versions_t v = {.n = 2};
    snprintf(v.v[0], CACHE_VERSION_MAX, "e-1");
    snprintf(v.v[1], CACHE_VERSION_MAX, "t-1");
    static const char body[] = "{\"id\":1}";
    /* Nothing to observe but that it returns, without touching its
     * arguments (ASan would see a bad read; the versions stay). */
    cache_put(NULL, "product:1", &v, 60, body, sizeof(body) - 1, 3);
    cache_put(NULL, "product:1", NULL, 60, body, sizeof(body) - 1, 3);
    cache_put(NULL, "", &v, 0, NULL, 0, 0);
    assert_i64_eq(v.n, 2);
    assert_string_equal(v.v[0], "e-1");
    assert_string_equal(v.v[1], "t-1");
}

static void test_null_worker_state(void **state)
{
    cache_global_init(0);
    assert_string_equal(cache_state(NULL), "disabled");
    /* Configured, but no worker (its options were malformed): down. */
    cache_global_init(1);
    assert_string_equal(cache_state(NULL), "down");
    cache_global_init(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid_1_to_5_versions),
        cmocka_unit_test(test_parse_body_offset),
        cmocka_unit_test(test_parse_largest_canonical_header),
        cmocka_unit_test(test_parse_rejects_empty_and_no_newline),
        cmocka_unit_test(test_parse_rejects_wrong_magic),
        cmocka_unit_test(test_parse_rejects_bad_count),
        cmocka_unit_test(test_parse_rejects_too_few_versions),
        cmocka_unit_test(test_parse_rejects_long_versions),
        cmocka_unit_test(test_parse_rejects_long_header),
        cmocka_unit_test(test_parse_rejects_non_numeric_fields),
        cmocka_unit_test(test_parse_rejects_too_many_versions),
        cmocka_unit_test(test_fold_ascii),
        cmocka_unit_test(test_fold_cyrillic_alphabet),
        cmocka_unit_test(test_fold_mixed_and_lowercase),
        cmocka_unit_test(test_fold_leaves_other_utf8),
        cmocka_unit_test(test_fold_odd_trailing_byte),
        cmocka_unit_test(test_tags_for_entries),
        cmocka_unit_test(test_tags_for_entries_fit_a_lookup),
        cmocka_unit_test(test_tags_of_writes),
        cmocka_unit_test(test_tags_of_an_order),
        cmocka_unit_test(test_tags_writes_invalidate_exactly_the_table),
        cmocka_unit_test(test_null_worker_get_bypasses_once),
        cmocka_unit_test(test_null_worker_invalidate_completes_once),
        cmocka_unit_test(test_null_worker_put_does_nothing),
        cmocka_unit_test(test_null_worker_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
