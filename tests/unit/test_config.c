/*
 * src/core/config.c: configuration from a fake environment. Defaults, good
 * values, and every bad value rejected with a message naming the variable.
 * Failed loads must free what they allocated (LeakSanitizer checks).
 * DATABASE_URL and JWT_SECRET are required; every test starts from an
 * environment with just those two (setup_env).
 */
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/config.h"
#include "core/log.h"

/* ------------------------------------------------------ fake environment */

#define MAX_VARS 32
static struct {
    const char *name, *value;
} env[MAX_VARS];
static int nenv;

static void env_clear(void)
{
    nenv = 0;
}

/* Sets (or replaces) one variable; value NULL unsets it. */
static void env_set(const char *name, const char *value)
{
    for (int i = 0; i < nenv; i++) {
        if (strcmp(env[i].name, name) == 0) {
            env[i].value = value;
            return;
        }
    }
    assert_true(nenv < MAX_VARS);
    env[nenv].name = name;
    env[nenv].value = value;
    nenv++;
}

static const char *fake_getenv(const char *name)
{
    for (int i = 0; i < nenv; i++)
        if (strcmp(env[i].name, name) == 0)
            return env[i].value;
    return NULL;
}

/* The minimum that loads: DATABASE_URL and JWT_SECRET. */
#define SECRET "test-secret-0123456789abcdef-0123456789"
static int setup_env(void **state)
{
    env_clear();
    env_set("DATABASE_URL", "postgres://marketd@127.0.0.1/marketd");
    env_set("JWT_SECRET", SECRET);
    return 0;
}

static config_t cfg;
static char err[512];

static void load_ok(void)
{
    memset(err, 0, sizeof(err));
    int rc = config_load(&cfg, fake_getenv, 4, err, sizeof(err));
    if (rc != 0)
        fail_msg("config_load = %d, expected 0; error: %s", rc, err);
}

/* Sets name=value, expects the load to fail with a message naming `name`,
 * and restores name to `restore` (NULL: unset). */
static void expect_rejected(const char *name, const char *value, const char *restore)
{
    env_set(name, value);
    memset(err, 0, sizeof(err));
    int rc = config_load(&cfg, fake_getenv, 4, err, sizeof(err));
    if (rc != -1) {
        config_free(&cfg);
        fail_msg("config_load with %s=\"%s\" = %d, expected -1", name, value, rc);
    }
    if (strstr(err, name) == NULL)
        fail_msg("config_load with %s=\"%s\": message \"%s\" does not name %s", name, value, err, name);
    env_set(name, restore);
}

/* -------------------------------------------------------------- defaults */

static void test_defaults(void **state)
{
    load_ok();
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_i64_eq(cfg.listen_port, 8080);
    assert_i64_eq(cfg.workers, 4);
    assert_string_equal(cfg.database_url, "postgres://marketd@127.0.0.1/marketd");
    assert_null(cfg.db_read_replica_url);
    assert_i64_eq(cfg.db_pool_size, 50);
    assert_i64_eq(cfg.db_max_overflow, 100);
    assert_i64_eq(cfg.db_pool_timeout_ms, 2000);
    assert_i64_eq(cfg.db_pool_idle_ms, 30000);
    assert_i64_eq(cfg.db_pool_queue, 10000);
    assert_i64_eq(cfg.db_pipeline_depth, 16);
    assert_i64_eq(cfg.db_prepare, 1);
    assert_i64_eq(cfg.db_statement_timeout_ms, 5000);
    assert_null(cfg.redis_url);
    assert_null(cfg.redis_cluster_nodes);
    assert_i64_eq(cfg.cache_ttl_products, 300);
    assert_i64_eq(cfg.cache_ttl_reference, 3600);
    assert_i64_eq(cfg.cache_ttl_popular_sellers, 900);
    assert_string_equal(cfg.cdn_base_url, "http://127.0.0.1:8080/media");
    assert_string_equal(cfg.media_dir, "./media");
    assert_string_equal(cfg.jwt_secret, SECRET);
    assert_i64_eq(cfg.jwt_ttl, 86400);
    assert_i64_eq(cfg.log_level, LOG_INFO);
    assert_i64_eq(cfg.access_log, 1);
    assert_i64_eq(cfg.http_header_timeout_ms, 15000);
    assert_i64_eq(cfg.shutdown_timeout_ms, 10000);
    assert_i64_eq(cfg.login_failures_free, 5);
    assert_i64_eq(cfg.login_backoff_base_ms, 1000);
    assert_i64_eq(cfg.login_backoff_max_s, 900);
    assert_i64_eq(cfg.login_failures_ttl_s, 3600);
    assert_null(cfg.cors_origins);
    config_free(&cfg);
    /* config_free leaves no dangling pointers and may be called again. */
    assert_null(cfg.database_url);
    assert_null(cfg.cdn_base_url);
    config_free(&cfg);
}

static void test_empty_means_default(void **state)
{
    env_set("DB_POOL_SIZE", "");
    env_set("LISTEN", "");
    env_set("JWT_TTL", "");
    env_set("LOG_LEVEL", "");
    load_ok();
    assert_i64_eq(cfg.db_pool_size, 50);
    assert_i64_eq(cfg.listen_port, 8080);
    assert_i64_eq(cfg.jwt_ttl, 86400);
    assert_i64_eq(cfg.log_level, LOG_INFO);
    config_free(&cfg);
}

static void test_workers_default_from_ncpu(void **state)
{
    assert_i64_eq(config_load(&cfg, fake_getenv, 1, err, sizeof(err)), 0);
    assert_i64_eq(cfg.workers, 1);
    config_free(&cfg);
    assert_i64_eq(config_load(&cfg, fake_getenv, 0, err, sizeof(err)), 0);
    assert_i64_eq(cfg.workers, 1);
    config_free(&cfg);
    assert_i64_eq(config_load(&cfg, fake_getenv, -5, err, sizeof(err)), 0);
    assert_i64_eq(cfg.workers, 1);
    config_free(&cfg);
    assert_i64_eq(config_load(&cfg, fake_getenv, 64, err, sizeof(err)), 0);
    assert_i64_eq(cfg.workers, 64);
    config_free(&cfg);
    /* An explicit value wins over the core count. */
    env_set("WORKERS", "3");
    assert_i64_eq(config_load(&cfg, fake_getenv, 64, err, sizeof(err)), 0);
    assert_i64_eq(cfg.workers, 3);
    config_free(&cfg);
}

/*
 * Regression test for a bug found and since fixed (the text says what was wrong): WORKERS defaults to the
 * core count, but the table bounds it to 1..256, so on a machine with more than 256 cores an *unset* WORKERS
 * stops start-up with "WORKERS: expected an integer in 1..256, got "257"". The default should be clamped
 * instead.
 */
static void test_workers_default_many_cores(void **state)
{
    int rc = config_load(&cfg, fake_getenv, 257, err, sizeof(err));
    if (rc != 0)
        fail_msg("config_load with 257 cores and WORKERS unset = %d: %s", rc, err);
    assert_true(cfg.workers >= 1 && cfg.workers <= 256);
    config_free(&cfg);
}

/* ------------------------------------------------------------ good values */

static void test_good_values(void **state)
{
    env_set("LISTEN", "127.0.0.1:9000");
    env_set("WORKERS", "256");
    env_set("DB_READ_REPLICA_URL", "postgres://r1/db,postgres://r2/db");
    env_set("DB_POOL_SIZE", "1");
    env_set("DB_MAX_OVERFLOW", "0");
    env_set("DB_PREPARE", "off");
    env_set("REDIS_URL", "redis://127.0.0.1:6379/0");
    env_set("CACHE_TTL_PRODUCTS", "5m");
    env_set("CACHE_TTL_REFERENCE", "1h");
    env_set("CACHE_TTL_POPULAR_SELLERS", "90s");
    env_set("CDN_BASE_URL", "https://cdn.example.com/m");
    env_set("MEDIA_DIR", "/var/lib/marketd/media");
    env_set("JWT_SECRET", "0123456789abcdef0123456789abcdef"); /* exactly 32 */
    env_set("JWT_TTL", "15m");
    env_set("LOG_LEVEL", "debug");
    env_set("ACCESS_LOG", "false");
    env_set("SHUTDOWN_TIMEOUT_MS", "0");
    load_ok();
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_i64_eq(cfg.listen_port, 9000);
    assert_i64_eq(cfg.workers, 256);
    assert_string_equal(cfg.db_read_replica_url, "postgres://r1/db,postgres://r2/db");
    assert_i64_eq(cfg.db_pool_size, 1);
    assert_i64_eq(cfg.db_max_overflow, 0);
    assert_i64_eq(cfg.db_prepare, 0);
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379/0");
    assert_null(cfg.redis_cluster_nodes);
    assert_i64_eq(cfg.cache_ttl_products, 300);
    assert_i64_eq(cfg.cache_ttl_reference, 3600);
    assert_i64_eq(cfg.cache_ttl_popular_sellers, 90);
    assert_string_equal(cfg.cdn_base_url, "https://cdn.example.com/m");
    assert_string_equal(cfg.media_dir, "/var/lib/marketd/media");
    assert_string_equal(cfg.jwt_secret, "0123456789abcdef0123456789abcdef");
    assert_i64_eq(cfg.jwt_ttl, 900);
    assert_i64_eq(cfg.log_level, LOG_DEBUG);
    assert_i64_eq(cfg.access_log, 0);
    assert_i64_eq(cfg.shutdown_timeout_ms, 0);
    config_free(&cfg);
}

static void test_jwt_ttl_forms(void **state)
{
    static const struct {
        const char *v;
        int want;
    } ok[] = {{"24h", 86400}, {"86400", 86400}, {"86400s", 86400},   {"1440m", 86400},
              {"60", 60},     {"1m", 60},       {"8760h", 31536000}, {"31536000", 31536000}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        env_set("JWT_TTL", ok[i].v);
        load_ok();
        if (cfg.jwt_ttl != ok[i].want)
            fail_msg("JWT_TTL=%s gave %d, expected %d", ok[i].v, cfg.jwt_ttl, ok[i].want);
        config_free(&cfg);
    }
}

static void test_bool_forms(void **state)
{
    static const struct {
        const char *v;
        int want;
    } ok[] = {{"1", 1}, {"true", 1}, {"on", 1}, {"0", 0}, {"false", 0}, {"off", 0}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        env_set("ACCESS_LOG", ok[i].v);
        env_set("DB_PREPARE", ok[i].v);
        load_ok();
        if (cfg.access_log != ok[i].want || cfg.db_prepare != ok[i].want)
            fail_msg("ACCESS_LOG=DB_PREPARE=%s gave %d/%d, expected %d", ok[i].v, cfg.access_log,
                     cfg.db_prepare, ok[i].want);
        config_free(&cfg);
    }
}

static void test_log_levels(void **state)
{
    static const struct {
        const char *v;
        int want;
    } ok[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        env_set("LOG_LEVEL", ok[i].v);
        load_ok();
        assert_i64_eq(cfg.log_level, ok[i].want);
        config_free(&cfg);
    }
}

static void test_listen_forms(void **state)
{
    static const struct {
        const char *v, *host;
        int port;
    } ok[] = {{"0.0.0.0:1", "0.0.0.0", 1},
              {"localhost:65535", "localhost", 65535},
              {"10.1.2.3:8080", "10.1.2.3", 8080},
              {"::1:8080", "::1", 8080}, /* the last ':' splits */
              {"my-host.internal:443", "my-host.internal", 443}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        env_set("LISTEN", ok[i].v);
        load_ok();
        assert_string_equal(cfg.listen_host, ok[i].host);
        assert_i64_eq(cfg.listen_port, ok[i].port);
        config_free(&cfg);
    }
}

static void test_redis_cluster_alone(void **state)
{
    env_set("REDIS_CLUSTER_NODES", "10.0.0.1:7000,10.0.0.2:7000");
    load_ok();
    assert_null(cfg.redis_url);
    assert_string_equal(cfg.redis_cluster_nodes, "10.0.0.1:7000,10.0.0.2:7000");
    config_free(&cfg);
}

/* ------------------------------------------------------------- bad values */

static void test_missing_database_url(void **state)
{
    env_set("DATABASE_URL", NULL);
    expect_rejected("DATABASE_URL", NULL, "x");
    assert_contains(err, "DATABASE_URL");
    assert_contains(err, "not set");
    expect_rejected("DATABASE_URL", "", "x");
}

static void test_bad_pool_size(void **state)
{
    static const char *const bad[] = {"abc",
                                      "0",
                                      "-1",
                                      "10001",
                                      " 5",
                                      "5 ",
                                      "5x",
                                      "1e3",
                                      "0x10",
                                      "1.5",
                                      "99999999999999999999",
                                      "-99999999999999999999",
                                      "2147483648"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_rejected("DB_POOL_SIZE", bad[i], NULL);
    expect_rejected("DB_POOL_SIZE", "abc", NULL);
    assert_contains(err, "\"abc\""); /* the message shows what was given */
    assert_contains(err, "1..10000");
}

static void test_bad_ints(void **state)
{
    expect_rejected("WORKERS", "-1", NULL);
    expect_rejected("WORKERS", "0", NULL);
    expect_rejected("WORKERS", "257", NULL);
    expect_rejected("WORKERS", "four", NULL);
    expect_rejected("DB_MAX_OVERFLOW", "-1", NULL);
    expect_rejected("DB_POOL_TIMEOUT_MS", "0", NULL);
    expect_rejected("DB_POOL_IDLE_MS", "99", NULL);
    expect_rejected("DB_POOL_QUEUE", "0", NULL);
    expect_rejected("DB_PIPELINE_DEPTH", "1025", NULL);
    expect_rejected("DB_STATEMENT_TIMEOUT_MS", "5s", NULL);
    expect_rejected("HTTP_HEADER_TIMEOUT_MS", "99", NULL);
    expect_rejected("SHUTDOWN_TIMEOUT_MS", "-1", NULL);
    expect_rejected("SHUTDOWN_TIMEOUT_MS", "3600001", NULL);
}

static void test_bad_listen(void **state)
{
    static const char *const bad[] = {"nonsense", "host:70000", ":8080",    "host:",     "host:0",
                                      "host:-1",  "host:abc",   "host:80x", "host: 80",  "8080",
                                      ":",        "host:65536", "a:b:c",    "host:8080 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_rejected("LISTEN", bad[i], NULL);
    /* A host longer than listen_host holds is rejected, not truncated. */
    char longhost[128];
    memset(longhost, 'h', 100);
    snprintf(longhost + 100, sizeof(longhost) - 100, ":8080");
    expect_rejected("LISTEN", longhost, NULL);
    /* 63 characters is the longest host that fits. */
    memset(longhost, 'h', 63);
    snprintf(longhost + 63, sizeof(longhost) - 63, ":8080");
    env_set("LISTEN", longhost);
    load_ok();
    assert_i64_eq(strlen(cfg.listen_host), 63);
    config_free(&cfg);
}

static void test_bad_enums(void **state)
{
    expect_rejected("LOG_LEVEL", "loud", NULL);
    expect_rejected("LOG_LEVEL", "verbose", NULL);
    expect_rejected("LOG_LEVEL", "warning", NULL);
    expect_rejected("LOG_LEVEL", "info ", NULL);
    expect_rejected("ACCESS_LOG", "maybe", NULL);
    expect_rejected("ACCESS_LOG", "yes", NULL);
    expect_rejected("ACCESS_LOG", "2", NULL);
    expect_rejected("ACCESS_LOG", "TRUE1", NULL);
    expect_rejected("DB_PREPARE", "maybe", NULL);
}

static void test_bad_durations(void **state)
{
    expect_rejected("JWT_TTL", "59", NULL); /* below the minimum of 60 s */
    expect_rejected("JWT_TTL", "0", NULL);
    expect_rejected("JWT_TTL", "-1h", NULL);
    expect_rejected("JWT_TTL", "1d", NULL);
    expect_rejected("JWT_TTL", "24H", NULL);
    expect_rejected("JWT_TTL", "1.5h", NULL);
    expect_rejected("JWT_TTL", "h", NULL);
    expect_rejected("JWT_TTL", "8761h", NULL); /* above a year */
    expect_rejected("JWT_TTL", "99999999999999999h", NULL);
    expect_rejected("CACHE_TTL_PRODUCTS", "0", NULL);
    expect_rejected("CACHE_TTL_PRODUCTS", "25h", NULL);
    expect_rejected("CACHE_TTL_REFERENCE", "abc", NULL);
    expect_rejected("CACHE_TTL_POPULAR_SELLERS", "-5", NULL);
}

static void test_missing_jwt_secret(void **state)
{
    env_set("JWT_SECRET", NULL);
    expect_rejected("JWT_SECRET", NULL, SECRET);
    assert_contains(err, "not set");
    expect_rejected("JWT_SECRET", "", SECRET);
}

static void test_jwt_secret_too_short(void **state)
{
    const char *secret = "0123456789abcdef0123456789abcde"; /* 31 */
    expect_rejected("JWT_SECRET", secret, NULL);
    assert_contains(err, "32");
    /* The message must not leak the secret into logs. */
    assert_not_contains(err, secret);
    expect_rejected("JWT_SECRET", "x", NULL);
}

static void test_redis_both(void **state)
{
    env_set("REDIS_URL", "redis://127.0.0.1:6379");
    expect_rejected("REDIS_CLUSTER_NODES", "10.0.0.1:7000", NULL);
    assert_contains(err, "REDIS_URL");
}

static void test_login_throttle(void **state)
{
    env_set("LOGIN_FAILURES_FREE", "3");
    env_set("LOGIN_BACKOFF_BASE_MS", "250");
    env_set("LOGIN_BACKOFF_MAX_S", "2m");
    env_set("LOGIN_FAILURES_TTL", "2m");
    load_ok();
    assert_i64_eq(cfg.login_failures_free, 3);
    assert_i64_eq(cfg.login_backoff_base_ms, 250);
    assert_i64_eq(cfg.login_backoff_max_s, 120);
    assert_i64_eq(cfg.login_failures_ttl_s, 120);
    config_free(&cfg);
    expect_rejected("LOGIN_FAILURES_FREE", "0", "3");
    expect_rejected("LOGIN_BACKOFF_BASE_MS", "0", "250");
    expect_rejected("LOGIN_BACKOFF_MAX_S", "0", "2m");
    /* Forgetting failures before their wait ends would end the wait early. */
    expect_rejected("LOGIN_FAILURES_TTL", "119", "2m");
    assert_contains(err, "LOGIN_BACKOFF_MAX_S");
}

static void test_cors_origins(void **state)
{
    env_set("CORS_ORIGINS", "https://shop.example, http://localhost:3000,https://a.example:8443");
    load_ok();
    assert_string_equal(cfg.cors_origins,
                        "https://shop.example, http://localhost:3000,https://a.example:8443");
    config_free(&cfg);
    static const char *bad[] = {"*",
                                "shop.example",
                                "https://shop.example/",
                                "https://shop.example/app",
                                "https://",
                                "https://a.example,ftp://b.example",
                                "null",
                                "https://a b.example"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_rejected("CORS_ORIGINS", bad[i], NULL);
}

/* A long bad value is cut to fit the error buffer, not overflowed. */
static void test_small_error_buffer(void **state)
{
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    env_set("LOG_LEVEL", big);
    char small[16];
    memset(small, '#', sizeof(small));
    assert_i64_eq(config_load(&cfg, fake_getenv, 4, small, sizeof(small)), -1);
    assert_i64_eq(strlen(small), sizeof(small) - 1);
    assert_memory_equal(small, "LOG_LEVEL: ", 11);
}

/* -------------------------------------------------- config_parse_duration */

static void test_parse_duration(void **state)
{
    static const struct {
        const char *s;
        long want;
    } cases[] = {
        {"0", 0},
        {"0s", 0},
        {"90", 90},
        {"90s", 90},
        {"15m", 900},
        {"24h", 86400},
        {"1h", 3600},
        {"007", 7},
        {"2562047788015215h", 2562047788015215L * 3600}, /* LONG_MAX / 3600 */
        {"", -1},
        {"s", -1},
        {"m", -1},
        {"h", -1},
        {"-1", -1},
        {"-5s", -1},
        {"1.5h", -1},
        {"1d", -1},
        {"1w", -1},
        {"24H", -1},
        {"24hh", -1},
        {"5ss", -1},
        {"h5", -1},
        {" 5", -1},
        {"5 ", -1},
        {"5 s", -1},
        {"abc", -1},
        {"1e3", -1},
        {"0x10", -1},
        {"99999999999999999999", -1},
        {"2562047788015216h", -1},
        {"9223372036854775807m", -1},
        {"123456789012345678901", -1}, /* 21 characters */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long got = config_parse_duration(cases[i].s);
        if (got != cases[i].want)
            fail_msg("config_parse_duration(\"%s\") = %ld, expected %ld", cases[i].s, got, cases[i].want);
    }
}

int main(void)
{
#define T(f) cmocka_unit_test_setup(f, setup_env)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_empty_means_default),
        T(test_workers_default_from_ncpu),
        T(test_workers_default_many_cores),
        T(test_good_values),
        T(test_jwt_ttl_forms),
        T(test_bool_forms),
        T(test_log_levels),
        T(test_listen_forms),
        T(test_redis_cluster_alone),
        T(test_missing_database_url),
        T(test_bad_pool_size),
        T(test_bad_ints),
        T(test_bad_listen),
        T(test_bad_enums),
        T(test_bad_durations),
        T(test_missing_jwt_secret),
        T(test_jwt_secret_too_short),
        T(test_redis_both),
        T(test_login_throttle),
        T(test_cors_origins),
        T(test_small_error_buffer),
        T(test_parse_duration),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
