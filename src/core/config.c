#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

enum { T_INT, T_STR, T_BOOL, T_LISTEN, T_ADDR, T_LEVEL, T_DURATION };

typedef struct option {
    const char *name;
    int type;
    size_t offset;
    const char *def; /* NULL: no default (unset stays NULL / 0) */
    long min, max;   /* T_INT, T_DURATION bounds; T_STR: min > 0 means required */
} option_t;

#define OFF(f) offsetof(config_t, f)

/* The one table of every setting. WORKERS' default is filled at load time. */
static const option_t options[] = {
    {"LISTEN", T_LISTEN, 0, "0.0.0.0:8080", 0, 0},
    /* /healthz on a loop of its own (docs/design.md "Health under load"). */
    {"HEALTH_LISTEN", T_ADDR, OFF(health_listen), NULL, 0, 0},
    {"WORKERS", T_INT, OFF(workers), NULL, 1, 256},
    {"DATABASE_URL", T_STR, OFF(database_url), NULL, 1, 0},
    {"DB_READ_REPLICA_URL", T_STR, OFF(db_read_replica_url), NULL, 0, 0},
    {"DB_POOL_SIZE", T_INT, OFF(db_pool_size), "50", 1, 10000},
    /* Unset (0): each replica's pool is as large as the primary's. */
    {"DB_REPLICA_POOL_SIZE", T_INT, OFF(db_replica_pool_size), NULL, 1, 10000},
    {"DB_REPLICA_MAX_LAG_MS", T_INT, OFF(db_replica_max_lag_ms), "1000", 0, 3600000},
    {"DB_MAX_OVERFLOW", T_INT, OFF(db_max_overflow), "100", 0, 10000},
    {"DB_POOL_TIMEOUT_MS", T_INT, OFF(db_pool_timeout_ms), "2000", 1, 600000},
    {"DB_POOL_IDLE_MS", T_INT, OFF(db_pool_idle_ms), "30000", 100, 86400000},
    {"DB_POOL_QUEUE", T_INT, OFF(db_pool_queue), "10000", 1, 1000000},
    {"DB_PIPELINE_DEPTH", T_INT, OFF(db_pipeline_depth), "16", 1, 1024},
    {"DB_PREPARE", T_BOOL, OFF(db_prepare), "1", 0, 1},
    {"DB_STATEMENT_TIMEOUT_MS", T_INT, OFF(db_statement_timeout_ms), "5000", 1, 3600000},
    {"REDIS_URL", T_STR, OFF(redis_url), NULL, 0, 0},
    {"REDIS_CLUSTER_NODES", T_STR, OFF(redis_cluster_nodes), NULL, 0, 0},
    {"REDIS_PASSWORD", T_STR, OFF(redis_password), NULL, 0, 0},
    {"CACHE_TTL_PRODUCTS", T_DURATION, OFF(cache_ttl_products), "300", 1, 86400},
    {"CACHE_TTL_REFERENCE", T_DURATION, OFF(cache_ttl_reference), "3600", 1, 86400},
    {"CACHE_TTL_POPULAR_SELLERS", T_DURATION, OFF(cache_ttl_popular_sellers), "900", 1, 86400},
    /* Bodies kept for reads while Redis is out (api/outage.h); 0: off. */
    {"OUTAGE_STORE_MB", T_INT, OFF(outage_store_mb), "64", 0, 65536},
    {"CACHE_TIMEOUT_MS", T_INT, OFF(cache_timeout_ms), "500", 1, 10000},
    {"CACHE_WAIT_REPLICAS", T_INT, OFF(cache_wait_replicas), "-1", -1, 16},
    /* Tests only: while this file exists, cache stores wait (docs/cache.md). */
    {"CACHE_TEST_STORE_GATE", T_STR, OFF(cache_test_store_gate), NULL, 0, 0},
    {"CDN_BASE_URL", T_STR, OFF(cdn_base_url), "http://127.0.0.1:8080/media", 0, 0},
    {"MEDIA_DIR", T_STR, OFF(media_dir), "./media", 0, 0},
    {"JWT_SECRET", T_STR, OFF(jwt_secret), NULL, 1, 0},
    {"JWT_TTL", T_DURATION, OFF(jwt_ttl), "24h", 60, 31536000},
    {"LOGIN_FAILURES_FREE", T_INT, OFF(login_failures_free), "5", 1, 1000},
    {"LOGIN_BACKOFF_BASE_MS", T_INT, OFF(login_backoff_base_ms), "1000", 1, 3600000},
    {"LOGIN_BACKOFF_MAX_S", T_DURATION, OFF(login_backoff_max_s), "900", 1, 86400},
    {"LOGIN_FAILURES_TTL", T_DURATION, OFF(login_failures_ttl_s), "1h", 1, 604800},
    {"CORS_ORIGINS", T_STR, OFF(cors_origins), NULL, 0, 0},
    {"LOG_LEVEL", T_LEVEL, OFF(log_level), "info", 0, 0},
    {"ACCESS_LOG", T_BOOL, OFF(access_log), "1", 0, 1},
    {"HTTP_HEADER_TIMEOUT_MS", T_INT, OFF(http_header_timeout_ms), "15000", 100, 3600000},
    {"SHUTDOWN_TIMEOUT_MS", T_INT, OFF(shutdown_timeout_ms), "10000", 0, 3600000},
    {"IDEMPOTENCY_CLEANUP_EVERY", T_DURATION, OFF(idempotency_cleanup_every), "1h", 1, 86400},
    {"ORDER_RETENTION_MONTHS", T_INT, OFF(order_retention_months), "0", 0, 1200},
    /* Tests only (tests/integration/test_overload_stall.py): never set it in
     * production, where a stray SIGUSR1 would then freeze the server. */
    {"TEST_STALL_SIGNAL", T_BOOL, OFF(test_stall_signal), "0", 0, 1},
};

/* Strict integer: optional sign, digits only, no trailing junk. */
static int parse_long(const char *s, long *out)
{
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

long config_parse_duration(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 20)
        return -1;
    long mult = 1;
    char num[24];
    memcpy(num, s, n + 1);
    switch (num[n - 1]) {
    case 's':
        num[--n] = '\0';
        break;
    case 'm':
        mult = 60, num[--n] = '\0';
        break;
    case 'h':
        mult = 3600, num[--n] = '\0';
        break;
    }
    long v;
    if (parse_long(num, &v) != 0 || v < 0 || v > LONG_MAX / mult)
        return -1;
    return v * mult;
}

static int parse_addr(const char *s, char host[CONFIG_HOST_MAX], int *port_out)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= CONFIG_HOST_MAX)
        return -1;
    long port;
    if (parse_long(colon + 1, &port) != 0 || port < 1 || port > 65535)
        return -1;
    /* "[::1]:8080": the brackets only delimit an IPv6 address. */
    if (s[0] == '[' && colon[-1] == ']' && colon - s >= 3)
        s++, colon--;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port_out = (int)port;
    return 0;
}

static int parse_listen(config_t *cfg, const char *s)
{
    return parse_addr(s, cfg->listen_host, &cfg->listen_port);
}

/* CORS_ORIGINS: exact origins ("https://shop.example", "http://localhost:3000"),
 * comma-separated, spaces around commas allowed. No "*", no path, no
 * trailing slash: a browser sends the origin exactly so, and http/cors.c
 * compares bytes. Returns 0, or -1 with the bad item in err. */
static int check_origins(const char *s, char *err, size_t errlen)
{
    while (*s != '\0') {
        while (*s == ' ' || *s == ',')
            s++;
        if (*s == '\0')
            break;
        size_t n = strcspn(s, ",");
        size_t m = n;
        while (m > 0 && s[m - 1] == ' ')
            m--;
        size_t scheme = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
        int ok = scheme > 0 && m > scheme;
        for (size_t i = scheme; ok && i < m; i++)
            if (s[i] == '/' || (unsigned char)s[i] <= ' ' || s[i] == 0x7f || s[i] == '*')
                ok = 0;
        if (!ok) {
            snprintf(
                err, errlen,
                "CORS_ORIGINS: expected exact origins like https://shop.example (scheme://host[:port], no "
                "path, no *), got \"%.*s\"",
                (int)(m > 200 ? 200 : m), s);
            return -1;
        }
        s += n;
    }
    return 0;
}

static int load_one(config_t *cfg, const option_t *o, const char *v, char *err, size_t errlen)
{
    char *field = (char *)cfg + o->offset;
    long n;
    switch (o->type) {
    case T_LISTEN:
        if (parse_listen(cfg, v) == 0)
            return 0;
        snprintf(err, errlen, "%s: expected host:port (e.g. 0.0.0.0:8080), got \"%s\"", o->name, v);
        return -1;
    case T_ADDR: {
        /* Optional: empty is "off" (port 0). */
        config_addr_t *a = (config_addr_t *)field;
        if (*v == '\0') {
            a->host[0] = '\0';
            a->port = 0;
            return 0;
        }
        if (parse_addr(v, a->host, &a->port) == 0)
            return 0;
        snprintf(err, errlen, "%s: expected host:port (e.g. 0.0.0.0:8082) or nothing, got \"%s\"", o->name,
                 v);
        return -1;
    }
    case T_STR:
        *(char **)field = strdup(v);
        if (*(char **)field == NULL)
            abort();
        return 0;
    case T_BOOL:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "on") == 0) {
            *(int *)field = 1;
            return 0;
        }
        if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "off") == 0) {
            *(int *)field = 0;
            return 0;
        }
        snprintf(err, errlen, "%s: expected 1/0, true/false or on/off, got \"%s\"", o->name, v);
        return -1;
    case T_LEVEL:
        if ((*(int *)field = log_parse_level(v)) >= 0)
            return 0;
        snprintf(err, errlen, "%s: expected debug, info, warn or error, got \"%s\"", o->name, v);
        return -1;
    case T_DURATION:
        n = config_parse_duration(v);
        if (n >= o->min && n <= o->max) {
            *(int *)field = (int)n;
            return 0;
        }
        snprintf(err, errlen, "%s: expected a duration of %ld..%ld seconds (e.g. 300, 15m, 24h), got \"%s\"",
                 o->name, o->min, o->max, v);
        return -1;
    case T_INT:
        if (parse_long(v, &n) == 0 && n >= o->min && n <= o->max) {
            *(int *)field = (int)n;
            return 0;
        }
        snprintf(err, errlen, "%s: expected an integer in %ld..%ld, got \"%s\"", o->name, o->min, o->max, v);
        return -1;
    }
    return -1;
}

int config_load(config_t *cfg, config_getenv_fn get, int ncpu, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    char ncpu_s[16];
    snprintf(ncpu_s, sizeof(ncpu_s), "%d", ncpu < 1 ? 1 : (ncpu > 256 ? 256 : ncpu));
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        const option_t *o = &options[i];
        const char *v = get(o->name);
        if (v == NULL || *v == '\0')
            v = strcmp(o->name, "WORKERS") == 0 ? ncpu_s : o->def;
        if (v == NULL) {
            if (o->type == T_STR && o->min > 0) {
                snprintf(err, errlen, "%s: required but not set", o->name);
                goto fail;
            }
            continue;
        }
        if (load_one(cfg, o, v, err, errlen) != 0)
            goto fail;
    }
    if (cfg->jwt_secret != NULL && strlen(cfg->jwt_secret) < 32) {
        snprintf(err, errlen, "JWT_SECRET: must be at least 32 bytes, got %zu", strlen(cfg->jwt_secret));
        goto fail;
    }
    /* -1: wait for one replica on a cluster (whose masters have replicas),
     * for none on a single Redis. */
    if (cfg->cache_wait_replicas < 0)
        cfg->cache_wait_replicas = cfg->redis_cluster_nodes != NULL ? 1 : 0;
    if (cfg->login_failures_ttl_s < cfg->login_backoff_max_s) {
        snprintf(err, errlen, "LOGIN_FAILURES_TTL: must be at least LOGIN_BACKOFF_MAX_S (%d s), got %d s",
                 cfg->login_backoff_max_s, cfg->login_failures_ttl_s);
        goto fail;
    }
    if (cfg->db_read_replica_url != NULL) {
        int n = 0;
        for (const char *p = cfg->db_read_replica_url; *p != '\0'; p += strcspn(p, ","), p += *p == ',')
            n += strspn(p, " ,") < strcspn(p, ",");
        if (n > 16) {
            snprintf(err, errlen, "DB_READ_REPLICA_URL: at most 16 replicas, got %d", n);
            goto fail;
        }
    }
    if (cfg->db_replica_pool_size == 0)
        cfg->db_replica_pool_size = cfg->db_pool_size;
    if (cfg->cors_origins != NULL && check_origins(cfg->cors_origins, err, errlen) != 0)
        goto fail;
    if (cfg->redis_url != NULL && cfg->redis_cluster_nodes != NULL) {
        snprintf(err, errlen, "REDIS_CLUSTER_NODES: set either REDIS_URL or REDIS_CLUSTER_NODES, not both");
        goto fail;
    }
    return 0;
fail:
    config_free(cfg);
    return -1;
}

void config_free(config_t *cfg)
{
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        if (options[i].type == T_STR) {
            char **p = (char **)((char *)cfg + options[i].offset);
            free(*p);
            *p = NULL;
        }
    }
}
