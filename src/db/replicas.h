#ifndef MARKETD_DB_REPLICAS_H
#define MARKETD_DB_REPLICAS_H
/*
 * Read replicas (S4, B2, B5): what is known about each DB_READ_REPLICA_URL
 * entry, process-wide, and the choice of a replica for one read. The pools
 * themselves are per worker (db/pool.h); the dispatcher owns them.
 *
 * Worker 0 polls every REPLICA_POLL_MS (db_replicas_poll): each replica for
 * pg_is_in_recovery(), pg_last_wal_replay_lsn() and the age of the last
 * replayed commit, and the primary for pg_current_wal_lsn(). A replica's
 * lag is 0 when its replay LSN has reached the primary's (an idle primary
 * writes no commits, so the replay timestamp alone would grow forever),
 * else now() - pg_last_xact_replay_timestamp() on the replica. A replica
 * is *usable* when its last poll succeeded less than 2 s ago, it is still
 * in recovery (a promoted one is logged and left alone) and its lag is at
 * most DB_REPLICA_MAX_LAG_MS. The state is written by worker 0 and read by
 * every worker with relaxed atomics: a decision on a value one poll old is
 * still safe, because a replay LSN only grows.
 *
 * LSNs are uint64_t (PostgreSQL's "X/Y" is the high and low 32 bits).
 */
#include <stdint.h>

#include "db/pool.h"

#define DB_REPLICAS_MAX 16
#define DB_LSN_PRIMARY  UINT64_MAX /* "no replica can do": read the primary */

/* Parses the comma-separated list once at start-up (before the workers).
 * Returns the number of replicas (0 for NULL/empty), or -1 with a message
 * when there are more than DB_REPLICAS_MAX. */
int db_replicas_init(const char *list, int max_lag_ms, char *err, size_t errlen);
void db_replicas_dispose(void);
int db_replicas_count(void);
/* The i-th entry as configured (conninfo), its label ("replica0"), and its
 * address without a password (for logs, /readyz). Valid until dispose. */
const char *db_replica_conninfo(int i);
const char *db_replica_label(int i);
const char *db_replica_display(int i);

/* Worker 0, from its tick: sends the polls that are due (at most one in
 * flight per node). `pools[i]` is worker 0's pool of replica i. */
void db_replicas_poll(db_pool_t *primary, db_pool_t *const *pools, uint64_t now_us);

/* The primary's pg_current_wal_lsn() of the last successful poll and when
 * that poll was *sent* (µs, gettimeofday): the value is >= every commit
 * acknowledged before that time. 0 when never polled. */
uint64_t db_primary_lsn(uint64_t *sent_at_us);

/*
 * The replica a read should use: among the usable replicas whose replay LSN
 * is >= min_lsn and whose pool (of this worker) has a connection, the one
 * with the fewest queries busy or waiting (round robin among equals, via
 * *rr). Returns its index, or -1: read the primary. min_lsn ==
 * DB_LSN_PRIMARY always returns -1.
 */
int db_replicas_pick(db_pool_t *const *pools, uint64_t min_lsn, unsigned *rr);

/* One replica's state, for /readyz and /metrics. */
typedef struct db_replica_info {
    int up;         /* usable for reads now */
    int reachable;  /* the last poll succeeded (< 2 s ago) */
    int promoted;   /* answered pg_is_in_recovery() = false */
    int64_t lag_ms; /* -1: unknown */
    uint64_t replay_lsn;
} db_replica_info_t;
void db_replica_info(int i, db_replica_info_t *out);

/* "X/Y" (pg_lsn text) → uint64; 0 or -1 when malformed. Pure. */
int db_lsn_parse(const char *s, uint64_t *out);
/* uint64 → "X/Y". Pure. */
void db_lsn_format(uint64_t lsn, char out[24]);

/* A conninfo (URL or key=value) with any password removed, into out. Pure. */
void db_conninfo_display(const char *conninfo, char *out, size_t outlen);

#endif
