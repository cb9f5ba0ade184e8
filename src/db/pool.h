#ifndef MARKETD_DB_POOL_H
#define MARKETD_DB_POOL_H
/*
 * An asynchronous PostgreSQL connection pool living on one worker's event
 * loop (S3, B5). Nothing here blocks: connections are made with
 * PQconnectStart/PQconnectPoll and every query is sent in libpq pipeline
 * mode, each followed by its own Sync so that queries of unrelated requests
 * share a connection without sharing a transaction or an error.
 *
 * Sizing (per worker; the server divides the instance-wide DB_POOL_SIZE and
 * DB_MAX_OVERFLOW among its workers): `base` connections are opened at
 * start and kept (reconnected with backoff when they break); when every
 * ready connection already has `pipeline_depth` queries in flight, up to
 * `overflow` more are opened, and closed again after `idle_ms` unused.
 * A query that finds no room waits in a bounded FIFO for at most
 * `timeout_ms` of attentive time (a stalled loop's lateness does not count,
 * as for the liveness checks below), then fails with MKD_EBUSY (the handler
 * answers 503 + Retry-After). While no connection can be made at all, queries fail at
 * once with MKD_EUNAVAILABLE instead of waiting.
 *
 * A connection is dropped when the socket says so (error, EOF) or when its
 * oldest query has gone unanswered for statement_timeout_ms + 5 s of time in
 * which the answer could have been read: the event loop's own lateness does
 * not count, and the socket is read once more before the verdict (pool.c).
 *
 * Statements: with `prepare` on, each db_stmt_t is prepared by name on a
 * connection the first time that connection runs it (in the same pipeline
 * as the query, so it costs no extra round trip); with it off, every query
 * goes as an unnamed statement, which is what PgBouncer 1.18 in
 * transaction-pooling mode can carry (S5).
 */
#include <libpq-fe.h>
#include <stdint.h>

#include "h2o.h"

typedef struct db_pool db_pool_t;

/* A statement with a process-wide stable id (index into the per-connection
 * "prepared" bitmap), allocated by db_stmt_register. */
typedef struct db_stmt {
    int id;
    int nparams;
    char name[24]; /* "s<id>" */
    const char *sql;
} db_stmt_t;

#define DB_MAX_STATEMENTS 4096

/*
 * Logs a failed result without row data: what failed (`what`, a printf
 * format), the statement's name, SQLSTATE (db.response.status_code) and
 * the names PostgreSQL reports (constraint, table, column). Never the
 * primary message, its DETAIL ("Failing row contains (…)", "Key (…)=(…)")
 * nor the parameters: any of them may quote a row's values, and a
 * literal of the wrong type is quoted in the primary message itself.
 * `stmt` and `res` may be NULL.
 */
void db_log_error(int level, const db_stmt_t *stmt, const PGresult *res, const char *what, ...)
    __attribute__((format(printf, 4, 5)));

/* Registers `sql` (owned by the caller, must outlive the process's pools).
 * Thread-safe. Returns NULL when DB_MAX_STATEMENTS is reached. */
const db_stmt_t *db_stmt_register(const char *sql, int nparams);

/*
 * Called exactly once per accepted query. On success err == 0 and `res` is a
 * PGRES_TUPLES_OK/PGRES_COMMAND_OK result. On failure err < 0: MKD_EDB with
 * `res` the error result (read PG_DIAG_SQLSTATE from it), MKD_EBUSY (waited
 * too long, res NULL), MKD_EUNAVAILABLE (connection lost / database down /
 * statement timeout; res may be NULL). `res` belongs to the pool and is
 * cleared after the callback returns.
 */
typedef void (*db_result_cb)(void *arg, PGresult *res, int err);

typedef struct db_pool_options {
    const char *conninfo; /* URL or key=value string */
    const char *label;    /* "primary", "replica0"… (metrics) */
    int base;
    int overflow;
    int pipeline_depth;
    int timeout_ms;
    int idle_ms;
    int max_waiters;
    int prepare;
    int statement_timeout_ms; /* sent as a startup option unless prepare is 0 */
} db_pool_options_t;

db_pool_t *db_pool_create(h2o_loop_t *loop, const db_pool_options_t *opt);
/* Fails every queued and in-flight query with MKD_EUNAVAILABLE (callbacks
 * run) and closes all connections. */
void db_pool_destroy(db_pool_t *pool);

/*
 * Queues `stmt` with text parameters values[0..nparams) (NULL = SQL NULL;
 * copied, so they need not outlive the call). Returns 0 when accepted (cb
 * will run exactly once, never synchronously from within this call), or
 * MKD_EBUSY / MKD_EUNAVAILABLE when refused (cb never runs).
 */
int db_pool_query(db_pool_t *pool, const db_stmt_t *stmt, const char *const *values, db_result_cb cb,
                  void *arg);

typedef struct db_pool_stats {
    int connecting, idle, busy; /* connections by state */
    int max;                    /* base + overflow */
    int waiting;                /* queries in the wait queue */
    int up;                     /* 1 when at least one connection is ready */
    uint64_t served;            /* queries answered successfully since start */
} db_pool_stats_t;

void db_pool_get_stats(const db_pool_t *pool, db_pool_stats_t *st);

/* Pool wait-time histogram, process-wide (metrics). Bucket bounds in
 * seconds are DB_WAIT_BUCKETS; counts are cumulative per bucket. */
#define DB_WAIT_NBUCKETS 10
extern const double db_wait_bucket_bounds[DB_WAIT_NBUCKETS];
typedef struct db_wait_hist {
    uint64_t buckets[DB_WAIT_NBUCKETS]; /* non-cumulative */
    uint64_t count;
    uint64_t sum_us;
} db_wait_hist_t;
/* Adds the pool's own histogram into *h (relaxed reads; for /metrics). */
void db_pool_add_wait_hist(const db_pool_t *pool, db_wait_hist_t *h);

#endif
