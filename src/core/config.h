#ifndef MARKETD_CORE_CONFIG_H
#define MARKETD_CORE_CONFIG_H
/*
 * Configuration from the environment (api.md "Configuration"), described by
 * one table in config.c: name, type, default, bounds. Loaded and validated
 * once at start-up, read-only afterwards; a bad value stops start-up with a
 * message naming the variable.
 */
#include <stddef.h>

#define CONFIG_HOST_MAX 64

/* An optional host:port (port 0 when unset). */
typedef struct config_addr {
    char host[CONFIG_HOST_MAX];
    int port;
} config_addr_t;

typedef struct config {
    char listen_host[CONFIG_HOST_MAX];
    int listen_port;
    config_addr_t health_listen; /* port 0: off */
    int workers;
    char *database_url;
    char *db_read_replica_url; /* comma-separated list, or NULL */
    int db_pool_size;          /* base connections per instance (S3) */
    int db_replica_pool_size;  /* base connections per instance and replica */
    int db_replica_max_lag_ms; /* a replica further behind is skipped */
    int db_max_overflow;       /* extra connections, closed when idle */
    int db_pool_timeout_ms;    /* longest wait for a connection before 503 */
    int db_pool_idle_ms;       /* an overflow connection idle this long closes */
    int db_pool_queue;         /* most requests waiting per worker */
    int db_pipeline_depth;     /* most queries in flight per connection */
    int db_prepare;            /* 1: named prepared statements; 0: PgBouncer-safe */
    int db_statement_timeout_ms;
    char *redis_url;
    char *redis_cluster_nodes;
    char *redis_password; /* AUTH for cluster nodes (a single Redis takes it in REDIS_URL) */
    int cache_ttl_products;
    int outage_store_mb; /* the outage store's bound (api/outage.h); 0 turns it off */
    int cache_ttl_reference;
    int cache_ttl_popular_sellers;
    int cache_timeout_ms;        /* longest wait for Redis before serving from the database */
    int cache_wait_replicas;     /* replicas that must confirm an invalidation (WAIT) */
    char *cache_test_store_gate; /* tests only: stores wait while this file exists */
    char *cdn_base_url;
    char *media_dir;
    char *jwt_secret;
    int jwt_ttl; /* seconds */
    /* Login throttling per account (api/throttle.h). */
    int login_failures_free;   /* failed logins of one email before the first wait */
    int login_backoff_base_ms; /* the first wait; each further failure doubles it */
    int login_backoff_max_s;   /* the longest wait */
    int login_failures_ttl_s;  /* failures are forgotten this long after the last one */
    char *cors_origins;        /* comma-separated exact origins, or NULL: no CORS (http/cors.h) */
    int log_level;
    int access_log;
    int http_header_timeout_ms;    /* request header/body/keep-alive idle timeout */
    int shutdown_timeout_ms;       /* longest SIGTERM drain */
    int idempotency_cleanup_every; /* seconds between deletions of expired Idempotency-Keys */
    int order_retention_months;    /* order partitions older than this are dropped; 0 keeps all */
    int test_stall_signal;         /* tests only: SIGUSR1 blocks every worker's loop for 2 s (server.c) */
} config_t;

/* Where values come from: getenv in production, a fake in unit tests. */
typedef const char *(*config_getenv_fn)(const char *name);

/*
 * Fills `cfg` from the environment. Returns 0, or -1 with a message naming
 * the offending variable in `err`. `ncpu` is the default for WORKERS.
 * Strings are heap copies released by config_free.
 */
int config_load(config_t *cfg, config_getenv_fn get, int ncpu, char *err, size_t errlen);
void config_free(config_t *cfg);

/* Parses a duration: "90", "90s", "15m", "24h" → seconds; -1 if malformed. */
long config_parse_duration(const char *s);

#endif
