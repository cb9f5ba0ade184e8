#ifndef MARKETD_API_ADMISSION_H
#define MARKETD_API_ADMISSION_H
/*
 * Admission control for database work, per worker and class (reads,
 * writes): how many queries may be in flight, and what happens to the rest
 * (S18, B1, B5). Pure logic — no I/O, time passed in — so it is unit-tested
 * as it is (tests/unit/test_admission.c).
 *
 * The limit adapts to the database (a gradient limit after Netflix's
 * concurrency-limits): it grows while query latency stays near its long-run
 * level and shrinks when latency rises above it — queries past the knee only
 * queue inside PostgreSQL and make everyone slower.
 *
 * Work past the limit waits in a bounded queue managed as in Facebook's
 * "Fail at Scale" (CoDel with adaptive LIFO): CoDel's signal is the
 * *shortest* wait of the work that left the queue during an interval. A
 * queue that many clients keep non-empty but that moves fast is fine; when
 * even the shortest wait of a whole interval exceeds `target`, the queue is
 * standing — overload: it then serves the newest first (they still have a
 * user waiting) and refuses anything that waited longer than
 * `overload_timeout`, so a refusal is answered within milliseconds (503 +
 * Retry-After), never after seconds, and the work that is done is work
 * someone still wants. Otherwise it is a FIFO with a generous timeout.
 * Cache hits and health checks never enter it.
 */
#include <stdint.h>

typedef struct admission_item {
    struct admission_item *prev, *next;
    uint64_t enqueued_us;
} admission_item_t;

typedef struct admission_options {
    int initial_limit, min_limit, max_limit;
    int max_queue;                /* beyond: refused at once */
    uint64_t target_us;           /* CoDel target: the shortest wait of an interval above it is overload */
    uint64_t interval_us;         /* CoDel interval */
    uint64_t normal_timeout_us;   /* longest wait when not overloaded */
    uint64_t overload_timeout_us; /* longest wait when overloaded */
} admission_options_t;

typedef struct admission {
    admission_options_t opt;
    double limit;
    int inflight;
    double rtt_short_us, rtt_long_us; /* latency: last tick's mean, long-run (~10 s) average */
    double tick_sum_us;
    int tick_samples;
    admission_item_t *head, *tail; /* head: newest */
    int queued;
    uint64_t interval_start_us;
    uint64_t min_wait_us; /* shortest wait of what left the queue this interval */
    int overloaded;
    uint64_t refused, expired, admitted; /* counters */
} admission_t;

void admission_init(admission_t *a, const admission_options_t *opt, uint64_t now_us);

enum { ADMIT_RUN = 1, ADMIT_QUEUED = 0, ADMIT_REFUSED = -1 };

/* A query wants to start: ADMIT_RUN (a slot is taken: run it and call
 * admission_done when it ends), ADMIT_QUEUED (it waits: admission_done or
 * admission_expired will hand it out), ADMIT_REFUSED (answer 503 now). */
int admission_enter(admission_t *a, admission_item_t *it, uint64_t now_us);

/* A query that held a slot ended after rtt_us (its latency sample;
 * ADMISSION_NO_SAMPLE when it never ran, e.g. the pool refused it). Returns
 * the queued item that takes the slot (run it), or NULL. */
#define ADMISSION_NO_SAMPLE UINT64_MAX
admission_item_t *admission_done(admission_t *a, uint64_t rtt_us, uint64_t now_us);

/* One queued item that waited too long (answer it 503), or NULL; call until
 * NULL. */
admission_item_t *admission_expired(admission_t *a, uint64_t now_us);

/* Every ~100 ms: moves the limit along the latency gradient. */
void admission_tick(admission_t *a, uint64_t now_us);

/* The current limit, rounded. */
int admission_limit(const admission_t *a);

#endif
