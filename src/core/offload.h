#ifndef MARKETD_CORE_OFFLOAD_H
#define MARKETD_CORE_OFFLOAD_H
/*
 * Work that must not run on an event loop — Argon2id hashing (tens of ms of
 * CPU and memory-hard by design), writing uploaded files — goes to a small
 * pool of threads with a bounded queue. The completion runs back on the
 * submitting loop, through h2o's multithread queue of that loop's context.
 */
#include "h2o.h"

typedef void (*offload_work_fn)(void *arg); /* runs on a pool thread */
typedef void (*offload_done_fn)(void *arg); /* runs on the submitting loop */

/* A loop's endpoint for completions: one per worker, registered on the
 * worker's h2o context queue. */
typedef struct offload_receiver {
    h2o_multithread_receiver_t receiver;
} offload_receiver_t;

/* Starts `threads` pool threads with room for `queue_max` waiting jobs.
 * Process-wide; call once before workers start. Returns 0 or -1. */
int offload_start(int threads, int queue_max);
/* Runs the remaining jobs, then stops and joins the threads. */
void offload_stop(void);

void offload_receiver_init(offload_receiver_t *r, h2o_context_t *ctx);
void offload_receiver_dispose(offload_receiver_t *r, h2o_context_t *ctx);

/* Queues work(arg), then done(arg) on r's loop. Returns 0, or MKD_EBUSY when
 * the queue is full (neither callback will run). */
int offload_submit(offload_receiver_t *r, offload_work_fn work, offload_done_fn done, void *arg);

#endif
