/*
 * src/cache/cluster.c: Redis Cluster key slots (CRC16/XMODEM, {hash tags})
 * and the parsers of the Redis client — addresses, redis:// URLs, seed
 * lists, MOVED/ASK redirections. Every input is copied into an exactly-sized
 * heap block (no NUL) so ASan catches a read past len.
 *
 * The expected slots are what `redis-cli CLUSTER KEYSLOT <key>` answered on
 * redis-server 7.0.15 (tests/redis/redis_driver.c checks the same against
 * a live cluster).
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "cache/cluster.h"
#include "cache/redis.h"
#include "core/error.h"

static char *heap_copy(const char *s, size_t n)
{
    char *h = malloc(n ? n : 1);
    memcpy(h, s, n);
    return h;
}

static unsigned slot_of(const char *key)
{
    size_t n = strlen(key);
    char *h = heap_copy(key, n);
    unsigned s = redis_key_slot(h, n);
    free(h);
    return s;
}

static void test_crc16_check_value(void **state)
{
    (void)state;
    char *h = heap_copy("123456789", 9);
    assert_i64_eq(redis_crc16(h, 9), 0x31C3);
    free(h);
    assert_i64_eq(redis_crc16("", 0), 0);
    /* 0x31C3 < 16384, so the slot is the CRC itself */
    assert_i64_eq(slot_of("123456789"), 12739);
}

static const struct {
    const char *key;
    unsigned slot;
} known_slots[] = {
    {"foo", 12182},
    {"bar", 5061},
    {"hello", 866},
    {"", 0},
    {"{user1000}.following", 3443},
    {"{user1000}.followers", 3443},
    {"foo{}{bar}", 8363},    /* empty tag: the whole key */
    {"foo{{bar}}zap", 4015}, /* tag is "{bar" */
    {"foo{bar}{zap}", 5061}, /* first tag only: "bar" */
    {"{bar", 4015},          /* no closing brace: whole key */
    {"bar}", 6624},
    {"{}", 15257},
    {"a{b}", 3300},
    {"{a}b", 15495},
    {"product:42", 12456},
    {"tag{products}:v", 10285},
    {"h\xc3\xa9llo", 11061}, /* bytes, not characters */
    {"}{x}", 16287},
};

static void test_known_slots(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(known_slots) / sizeof(known_slots[0]); i++) {
        unsigned got = slot_of(known_slots[i].key);
        if (got != known_slots[i].slot)
            fail_msg("redis_key_slot(\"%s\") = %u, expected %u", known_slots[i].key, got,
                     known_slots[i].slot);
    }
}

static void test_hash_tag_groups_keys(void **state)
{
    (void)state;
    assert_i64_eq(slot_of("{products}:v1"), slot_of("products"));
    assert_i64_eq(slot_of("x{products}y"), slot_of("{products}:v2"));
    /* a key with embedded NUL bytes is hashed by length, not strlen */
    char *h = heap_copy("a\0b", 3);
    unsigned s = redis_key_slot(h, 3);
    free(h);
    if (s == slot_of("a"))
        fail_msg("the NUL byte was not hashed (slot %u)", s);
    for (int i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%d", i);
        if (slot_of(key) >= REDIS_SLOTS)
            fail_msg("slot of %s out of range", key);
    }
}

static int addr(const char *s, int default_port, int allow_empty, redis_addr_t *out)
{
    size_t n = strlen(s);
    char *h = heap_copy(s, n);
    int rc = redis_parse_addr(h, n, default_port, allow_empty, out);
    free(h);
    return rc;
}

static void test_parse_addr(void **state)
{
    (void)state;
    redis_addr_t a;
    assert_i64_eq(addr("127.0.0.1:6380", 0, 0, &a), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_i64_eq(a.port, 6380);
    assert_i64_eq(addr("cache.internal", 6379, 0, &a), 0);
    assert_string_equal(a.host, "cache.internal");
    assert_i64_eq(a.port, 6379);
    assert_i64_eq(addr("[::1]:7000", 0, 0, &a), 0);
    assert_string_equal(a.host, "::1");
    assert_i64_eq(a.port, 7000);
    assert_i64_eq(addr("::1:7001", 0, 0, &a), 0); /* as Redis prints it */
    assert_string_equal(a.host, "::1");
    assert_i64_eq(a.port, 7001);
    assert_i64_eq(addr(":7002", 0, 1, &a), 0);
    assert_string_equal(a.host, "");
    assert_i64_eq(a.port, 7002);
    assert_i64_eq(addr(":7002", 0, 0, &a), MKD_EINVAL);
    assert_i64_eq(addr("host", 0, 0, &a), MKD_EINVAL); /* port required */
    assert_i64_eq(addr("host:0", 0, 0, &a), MKD_EINVAL);
    assert_i64_eq(addr("host:65536", 0, 0, &a), MKD_EINVAL);
    assert_i64_eq(addr("host:12x", 0, 0, &a), MKD_EINVAL);
    assert_i64_eq(addr("host:", 0, 0, &a), MKD_EINVAL);
    assert_i64_eq(addr("[::1", 0, 0, &a), MKD_EINVAL);
    assert_i64_eq(addr("[::1]x", 0, 0, &a), MKD_EINVAL);
    assert_i64_eq(addr("a b:1", 0, 0, &a), MKD_EINVAL);
}

static int url(const char *s, redis_url_t *u)
{
    char err[128];
    size_t n = strlen(s);
    char *h = heap_copy(s, n);
    int rc = redis_parse_url(h, n, u, err, sizeof(err));
    free(h);
    return rc;
}

static void test_parse_url(void **state)
{
    (void)state;
    redis_url_t u;
    assert_i64_eq(url("redis://127.0.0.1:57000", &u), 0);
    assert_string_equal(u.addr.host, "127.0.0.1");
    assert_i64_eq(u.addr.port, 57000);
    assert_string_equal(u.password, "");
    assert_i64_eq(u.db, 0);
    assert_i64_eq(url("redis://localhost", &u), 0);
    assert_i64_eq(u.addr.port, 6379);
    assert_i64_eq(url("redis://:s3cret@10.0.0.5:6380/3", &u), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.addr.host, "10.0.0.5");
    assert_i64_eq(u.addr.port, 6380);
    assert_i64_eq(u.db, 3);
    assert_i64_eq(url("redis://app:p%40ss%3Aw@[::1]:6381/", &u), 0);
    assert_string_equal(u.user, "app");
    assert_string_equal(u.password, "p@ss:w");
    assert_string_equal(u.addr.host, "::1");
    assert_i64_eq(u.db, 0);
    assert_i64_eq(url("redis://onlypass@h:1", &u), 0);
    assert_string_equal(u.password, "onlypass");
    assert_i64_eq(url("rediss://h:1", &u), MKD_EINVAL);
    assert_i64_eq(url("http://h:1", &u), MKD_EINVAL);
    assert_i64_eq(url("redis://", &u), MKD_EINVAL);
    assert_i64_eq(url("redis://h:1/x", &u), MKD_EINVAL);
    assert_i64_eq(url("redis://h:1/-1", &u), MKD_EINVAL);
    assert_i64_eq(url("redis://:p%4@h:1", &u), MKD_EINVAL);
    assert_i64_eq(url("redis://:p%@h:1", &u), MKD_EINVAL);
    assert_i64_eq(url("redis://:p%00@h:1", &u), MKD_EINVAL);
}

static void test_parse_seeds(void **state)
{
    (void)state;
    redis_addr_t a[3];
    char err[128];
    const char *s = " 127.0.0.1:57010, 127.0.0.1:57011 ,,127.0.0.1:57012 ";
    char *h = heap_copy(s, strlen(s));
    assert_i64_eq(redis_parse_seeds(h, strlen(s), a, 3, err, sizeof(err)), 3);
    free(h);
    assert_string_equal(a[0].host, "127.0.0.1");
    assert_i64_eq(a[0].port, 57010);
    assert_i64_eq(a[2].port, 57012);
    assert_i64_eq(redis_parse_seeds("a:1,b:2,c:3,d:4", 15, a, 3, err, sizeof(err)), MKD_EINVAL);
    assert_contains(err, "more than 3");
    assert_i64_eq(redis_parse_seeds("a:1,b", 5, a, 3, err, sizeof(err)), MKD_EINVAL);
    assert_contains(err, "\"b\"");
    assert_i64_eq(redis_parse_seeds(" , ", 3, a, 3, err, sizeof(err)), MKD_EINVAL);
}

static int redirect(const char *s, unsigned *slot, redis_addr_t *to)
{
    size_t n = strlen(s);
    char *h = heap_copy(s, n);
    int rc = redis_parse_redirect(h, n, slot, to);
    free(h);
    return rc;
}

static void test_parse_redirect(void **state)
{
    (void)state;
    unsigned slot = 0;
    redis_addr_t to;
    assert_i64_eq(redirect("MOVED 3999 127.0.0.1:6381", &slot, &to), REDIS_REDIRECT_MOVED);
    assert_i64_eq(slot, 3999);
    assert_string_equal(to.host, "127.0.0.1");
    assert_i64_eq(to.port, 6381);
    assert_i64_eq(redirect("ASK 16383 10.1.2.3:7000", &slot, &to), REDIS_REDIRECT_ASK);
    assert_i64_eq(slot, 16383);
    assert_string_equal(to.host, "10.1.2.3");
    assert_i64_eq(redirect("MOVED 0 :7002", &slot, &to), REDIS_REDIRECT_MOVED);
    assert_string_equal(to.host, "");
    assert_i64_eq(to.port, 7002);
    assert_i64_eq(redirect("MOVED 16384 h:1", &slot, &to), REDIS_REDIRECT_NONE);
    assert_i64_eq(redirect("MOVED 12 h", &slot, &to), REDIS_REDIRECT_NONE);
    assert_i64_eq(redirect("MOVED 12", &slot, &to), REDIS_REDIRECT_NONE);
    assert_i64_eq(redirect("MOVED", &slot, &to), REDIS_REDIRECT_NONE);
    assert_i64_eq(redirect("MOVED x h:1", &slot, &to), REDIS_REDIRECT_NONE);
    assert_i64_eq(redirect("TRYAGAIN Multiple keys request during rehashing of slot", &slot, &to),
                  REDIS_REDIRECT_NONE);
    assert_i64_eq(redirect("ERR wrong number of arguments", &slot, &to), REDIS_REDIRECT_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16_check_value),
        cmocka_unit_test(test_known_slots),
        cmocka_unit_test(test_hash_tag_groups_keys),
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_parse_seeds),
        cmocka_unit_test(test_parse_redirect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
