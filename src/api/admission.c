#include "api/admission.h"

#include <math.h>
#include <string.h>

void admission_init(admission_t *a, const admission_options_t *opt, uint64_t now_us)
{
    memset(a, 0, sizeof(*a));
    a->opt = *opt;
    a->limit = opt->initial_limit;
    a->interval_start_us = now_us;
    a->min_wait_us = UINT64_MAX;
}

int admission_limit(const admission_t *a)
{
    return (int)(a->limit + 0.5);
}

static void unlink_item(admission_t *a, admission_item_t *it)
{
    if (it->prev != NULL)
        it->prev->next = it->next;
    else
        a->head = it->next;
    if (it->next != NULL)
        it->next->prev = it->prev;
    else
        a->tail = it->prev;
    it->prev = it->next = NULL;
    if (--a->queued == 0)
        a->overloaded = 0;
}

/* CoDel's signal, once per interval: the shortest wait of the work that
 * left the queue (or ran at once: 0), or — when nothing left it — how long
 * its oldest item has waited. Above the target: a standing queue. */
static void update_state(admission_t *a, uint64_t now_us)
{
    if (now_us - a->interval_start_us < a->opt.interval_us)
        return;
    uint64_t shortest = a->min_wait_us;
    if (shortest == UINT64_MAX)
        shortest = a->tail != NULL ? now_us - a->tail->enqueued_us : 0;
    a->overloaded = a->queued > 0 && shortest > a->opt.target_us;
    a->interval_start_us = now_us;
    a->min_wait_us = UINT64_MAX;
}

static void saw_wait(admission_t *a, uint64_t wait_us)
{
    if (wait_us < a->min_wait_us)
        a->min_wait_us = wait_us;
}

int admission_enter(admission_t *a, admission_item_t *it, uint64_t now_us)
{
    update_state(a, now_us);
    if (a->queued == 0 && a->inflight < admission_limit(a)) {
        a->inflight++;
        a->admitted++;
        saw_wait(a, 0);
        return ADMIT_RUN;
    }
    if (a->queued >= a->opt.max_queue) {
        a->refused++;
        return ADMIT_REFUSED;
    }
    it->enqueued_us = now_us;
    it->prev = NULL;
    it->next = a->head;
    if (a->head != NULL)
        a->head->prev = it;
    else
        a->tail = it;
    a->head = it;
    a->queued++;
    return ADMIT_QUEUED;
}

admission_item_t *admission_done(admission_t *a, uint64_t rtt_us, uint64_t now_us)
{
    if (a->inflight > 0)
        a->inflight--;
    if (rtt_us != ADMISSION_NO_SAMPLE) {
        a->tick_sum_us += (double)rtt_us;
        a->tick_samples++;
    }
    update_state(a, now_us);
    if (a->queued == 0 || a->inflight >= admission_limit(a))
        return NULL;
    /* Overloaded: the newest first — the oldest are the likeliest to have
     * been given up on by their clients. Otherwise first come, first served. */
    admission_item_t *it = a->overloaded ? a->head : a->tail;
    unlink_item(a, it);
    saw_wait(a, now_us - it->enqueued_us);
    a->inflight++;
    a->admitted++;
    return it;
}

admission_item_t *admission_expired(admission_t *a, uint64_t now_us)
{
    update_state(a, now_us);
    admission_item_t *oldest = a->tail;
    if (oldest == NULL)
        return NULL;
    uint64_t timeout = a->overloaded ? a->opt.overload_timeout_us : a->opt.normal_timeout_us;
    if (now_us - oldest->enqueued_us < timeout)
        return NULL;
    unlink_item(a, oldest);
    a->expired++;
    return oldest;
}

void admission_tick(admission_t *a, uint64_t now_us)
{
    update_state(a, now_us);
    /* Averages per tick, not per sample: how fast the limit adapts must not
     * depend on the request rate. */
    if (a->tick_samples == 0)
        return;
    a->rtt_short_us = a->tick_sum_us / a->tick_samples;
    a->tick_sum_us = 0;
    a->tick_samples = 0;
    if (a->rtt_long_us == 0)
        a->rtt_long_us = a->rtt_short_us;
    else
        a->rtt_long_us += 0.01 * (a->rtt_short_us - a->rtt_long_us);
    /* Gradient: long-run latency over recent latency, with 50 % tolerance
     * before it bites; never cut by more than half at once. */
    double gradient = 1.5 * a->rtt_long_us / a->rtt_short_us;
    if (gradient > 1.0)
        gradient = 1.0;
    if (gradient < 0.5)
        gradient = 0.5;
    /* Growth only while the slots are used: an idle worker's limit says
     * nothing about the database. */
    double allowance = a->inflight + a->queued >= admission_limit(a) ? sqrt(a->limit) : 0;
    double next = a->limit * gradient + allowance;
    a->limit = 0.8 * a->limit + 0.2 * next;
    if (a->limit < a->opt.min_limit)
        a->limit = a->opt.min_limit;
    if (a->limit > a->opt.max_limit)
        a->limit = a->opt.max_limit;
    /* After a slow period the long-run level drifts back down with recent
     * latency, so a recovered database gets its limit back. */
    if (a->rtt_long_us > a->rtt_short_us)
        a->rtt_long_us = 0.9 * a->rtt_long_us + 0.1 * a->rtt_short_us;
}
