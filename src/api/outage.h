#ifndef MARKETD_API_OUTAGE_H
#define MARKETD_API_OUTAGE_H
/*
 * Reads while the shared cache is out (Redis down, slow or flushing: the
 * lookup answered CACHE_BYPASS). Single flight alone (flight.h) lets a
 * request share only a query sent after it arrived (B2), so every repeat of
 * a hot key that does not overlap a running query costs a query of its own:
 * ~3,000 queries/s for 60 hot lists under issue 11's load.
 *
 * The outage store keeps, per key, the last body a bypassing read fetched,
 * labelled with a *stamp*: the text of PostgreSQL's pg_current_snapshot()
 * taken by a probe that had finished before that read's query was sent. A
 * later request may take the stored body once a stamp taken by a probe sent
 * *after* it arrived is equal to the label: equal snapshots mean no
 * transaction became visible in between (visibility only grows), so the
 * stored body is what a query sent now would read — B2 holds across
 * instances without Redis, because every instance's writes are transactions
 * of the one database. Any committed write anywhere changes the stamp: a
 * busy write load makes every stored body stale at once, and reads fall
 * back to one query per key in flight, as without the store.
 *
 *  - Probes are per worker, at most one in flight and one every
 *    OUTAGE_PROBE_INTERVAL_MS; every request waiting on that worker shares
 *    the next one (they are the only added cost: one tiny query, and a wait
 *    of up to the interval for requests the store answers).
 *  - The store is process-wide, bounded in bytes (OUTAGE_STORE_MB, least
 *    recently used first out), and entries live at most their cache TTL. It
 *    is emptied once nobody has asked it for OUTAGE_IDLE_US (the outage is
 *    over).
 *  - Not with read replicas: a fill run on a replica may read an older
 *    snapshot than the primary's stamp says (the store is then off).
 */
#include <stddef.h>
#include <stdint.h>

#include "api/flight.h"
#include "db/pool.h"
#include "h2o.h"

#define OUTAGE_STAMP_MAX         256 /* a longer snapshot (many open transactions) is not used */
#define OUTAGE_PROBE_INTERVAL_MS 20
#define OUTAGE_IDLE_US           (60ull * 1000000)

/* ---- the store (process-wide, thread-safe) ---------------------------------------------- */

/* max_bytes 0 turns the store off. Safe to call again (tests). */
void outage_store_init(size_t max_bytes);
/* A stored body for `key` no older than its TTL (a reference: release it
 * with flight_body_release) and its label, or NULL. */
flight_body_t *outage_store_get(const char *key, char label[OUTAGE_STAMP_MAX], uint64_t now_us);
/* Stores (or replaces) the body of `key` fetched by a query sent after the
 * probe that returned `label`. */
void outage_store_put(const char *key, const char *label, const char *body, size_t len, int ttl_s,
                      uint64_t now_us);
/* Empties the store when it has not been asked for OUTAGE_IDLE_US. */
void outage_store_sweep(uint64_t now_us);
void outage_store_dispose(void);

typedef struct outage_store_stats {
    size_t entries, bytes;
    uint64_t hits, stale, stored, evicted;
} outage_store_stats_t;
void outage_store_get_stats(outage_store_stats_t *st);
/* Counts what a probe found of a stored body: still valid (1) or stale (0). */
void outage_store_count_hit(int hit);

/* ---- probes (one per worker, on its loop) ----------------------------------------------- */

typedef struct outage_waiter outage_waiter_t;
/* stamp: NULL when the probe failed. */
typedef void (*outage_stamp_fn)(outage_waiter_t *w, const char *stamp);
struct outage_waiter {
    outage_waiter_t *next;
    outage_stamp_fn cb;
    void *arg;
};

typedef struct outage_prober {
    db_pool_t *pool;
    const db_stmt_t *stmt;
    char stamp[OUTAGE_STAMP_MAX]; /* the newest stamp, "" before the first */
    outage_waiter_t *waiting;     /* arrived: answered by the next probe sent */
    outage_waiter_t *sent;        /* answered by the probe in flight */
    int in_flight;
    uint64_t last_sent_us;
    uint64_t probes;     /* sent (metrics; read relaxed by /metrics) */
    int nwaiting;        /* requests waiting for a stamp (metrics) */
    h2o_timeout_t delay; /* OUTAGE_PROBE_INTERVAL_MS */
    h2o_timeout_entry_t entry;
    h2o_loop_t *loop;
} outage_prober_t;

/* The probe's statement: register once per process, before any pool. */
const db_stmt_t *outage_register_stmt(void);
void outage_prober_init(outage_prober_t *p, h2o_loop_t *loop, db_pool_t *pool, const db_stmt_t *stmt);
/* Fails the waiters (cb with NULL) and stops the timer; the pool must
 * already be destroyed (its callbacks have run). */
void outage_prober_dispose(outage_prober_t *p);
/* w->cb runs later with the stamp of a probe sent after this call. */
void outage_probe_wait(outage_prober_t *p, outage_waiter_t *w);
/* The stamp a query sent now may be labelled with (copied into out), 0;
 * or -1 when there is none yet — then a probe is started for later fills.
 * An old stamp is as good a label as a new one: a write since makes the
 * entry stale at its first check, which fetches it again under that
 * check's newer stamp. */
int outage_label(outage_prober_t *p, char out[OUTAGE_STAMP_MAX]);

#endif
