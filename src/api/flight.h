#ifndef MARKETD_API_FLIGHT_H
#define MARKETD_API_FLIGHT_H
/*
 * Single flight, process-wide (B4): concurrent reads of one cache entry — on
 * any worker — share one database query instead of each making their own,
 * whether the cache answered a miss or could not be asked at all.
 *
 *  - FLIGHT_SHARE (a miss): the flight is identified by the entry's key
 *    *and* the versions its lookup read. A request that read the same
 *    versions may take the result of a query already running: no write
 *    completed in between, or its version change would differ
 *    (docs/cache.md). A finished flight keeps its body for FLIGHT_LINGER_US,
 *    so a miss whose Redis read raced the store shares it too.
 *  - FLIGHT_GATHER (a bypass: Redis down, slow, or flushing): without
 *    versions, a request may only take the result of a query sent *after* it
 *    arrived — else a write acknowledged before it arrived could be missing
 *    (B2). So requests gather while one query runs and share the next one,
 *    sent when it ends: per key, one query in flight and one gathering, and
 *    nothing lingers.
 *
 * A failed query fails its waiters with the same error: under overload a
 * failure must not turn into one retry per waiter.
 */
#include <stddef.h>
#include <stdint.h>

#include "h2o.h"

#define FLIGHT_ID_MAX    512
#define FLIGHT_LINGER_US 2000000

/* A finished fill's body, shared by reference count. */
typedef struct flight_body {
    int refs; /* atomic */
    size_t len;
    char data[];
} flight_body_t;

/* A new body holding a copy of data (one reference). */
flight_body_t *flight_body_new(const char *data, size_t len);
void flight_body_release(flight_body_t *b);

typedef enum { FLIGHT_SHARE, FLIGHT_GATHER } flight_mode_t;

typedef struct flight_waiter flight_waiter_t;
/* Runs on the waiter's own loop, exactly once, with one of: `lead` set (a
 * gathered request's turn to send the query for everyone gathered with it),
 * a body (the waiter releases it), or err < 0 (the query failed). */
typedef void (*flight_wake_fn)(flight_waiter_t *w, flight_body_t *body, int err, int lead);

/* Owned by the caller (a request-pool allocation suits) until woken. */
struct flight_waiter {
    h2o_multithread_message_t msg; /* delivered to `receiver` */
    struct flight_waiter *next;
    h2o_multithread_receiver_t *receiver; /* the waiter's worker's (flight_on_messages) */
    flight_wake_fn wake;
    void *arg;
    flight_body_t *body;
    int err;
    int lead;
};

typedef enum {
    FLIGHT_LEAD, /* you query now; call flight_finish(id, mode, …) exactly once */
    FLIGHT_WAIT, /* w->wake runs later */
    FLIGHT_DONE, /* *done is a lingering result (a reference: release it) */
} flight_join_t;

flight_join_t flight_join(const char *id, flight_mode_t mode, flight_waiter_t *w, flight_body_t **done);

/* The leader's result: body (copied), or err < 0 and body NULL. Wakes every
 * waiter on its own worker; for FLIGHT_GATHER, hands the lead to one
 * request gathered meanwhile. */
void flight_finish(const char *id, flight_mode_t mode, int err, const char *body, size_t len);

/* The receiver callback every worker registers for its waiters. */
void flight_on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* Drops finished flights older than FLIGHT_LINGER_US (any thread). */
void flight_sweep(void);
/* Frees every flight (at exit, after the workers have stopped). */
void flight_dispose_all(void);

/* Waiters of unfinished flights, process-wide (tests and /metrics). */
int flight_waiting(void);

#endif
