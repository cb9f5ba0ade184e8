#ifndef MARKETD_API_FLIGHT_H
#define MARKETD_API_FLIGHT_H
/*
 * Single flight, process-wide (B4): concurrent misses of one cache entry —
 * on any worker — wait for one database read instead of each making their
 * own. A flight is identified by the entry's key *and* the versions its
 * lookup read: a request that read other versions (a write landed in
 * between) must not take a body read before that write (docs/cache.md).
 * A finished flight keeps its body for FLIGHT_LINGER_US, so a miss whose
 * Redis read raced the store still shares it instead of filling again
 * (same versions: no write has completed since).
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

void flight_body_release(flight_body_t *b);

typedef struct flight_waiter flight_waiter_t;
/* Runs on the waiter's own loop; body NULL when the fill failed (the
 * waiter then reads on its own). The waiter releases `body`. */
typedef void (*flight_wake_fn)(flight_waiter_t *w, flight_body_t *body);

/* Owned by the caller (a request-pool allocation suits) until woken. */
struct flight_waiter {
    h2o_multithread_message_t msg; /* delivered to `receiver` */
    struct flight_waiter *next;
    h2o_multithread_receiver_t *receiver; /* the waiter's worker's (flight_on_messages) */
    flight_wake_fn wake;
    flight_body_t *body;
    void *arg;
};

typedef enum {
    FLIGHT_LEAD, /* you fill; call flight_finish(id, …) exactly once */
    FLIGHT_WAIT, /* w->wake runs once the leader finishes */
    FLIGHT_DONE, /* *done is a lingering result (a reference: release it) */
} flight_join_t;

flight_join_t flight_join(const char *id, flight_waiter_t *w, flight_body_t **done);

/* The leader's result: body (copied) or NULL when the fill failed. Wakes
 * every waiter on its own worker. */
void flight_finish(const char *id, const char *body, size_t len);

/* The receiver callback every worker registers for its waiters. */
void flight_on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

/* Drops finished flights older than FLIGHT_LINGER_US (any thread). */
void flight_sweep(void);
/* Frees every flight (at exit, after the workers have stopped). */
void flight_dispose_all(void);

#endif
