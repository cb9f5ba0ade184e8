/*
 * src/api/admission.c: the adaptive limit and the CoDel / adaptive-LIFO
 * queue of database work. Pure logic with time passed in, so every case is
 * exact: who runs, who waits, who is refused and when.
 */
#include "unit.h"

#include "api/admission.h"

static const admission_options_t opt = {
    .initial_limit = 2,
    .min_limit = 1,
    .max_limit = 8,
    .max_queue = 3,
    .target_us = 10000,
    .interval_us = 100000,
    .normal_timeout_us = 2000000,
    .overload_timeout_us = 20000,
};

static admission_item_t items[16];

static void test_runs_up_to_the_limit_then_queues_then_refuses(void **state)
{
    admission_t a;
    admission_init(&a, &opt, 0);
    assert_i64_eq(admission_enter(&a, &items[0], 0), ADMIT_RUN);
    assert_i64_eq(admission_enter(&a, &items[1], 0), ADMIT_RUN);
    assert_i64_eq(a.inflight, 2);
    assert_i64_eq(admission_enter(&a, &items[2], 0), ADMIT_QUEUED);
    assert_i64_eq(admission_enter(&a, &items[3], 0), ADMIT_QUEUED);
    assert_i64_eq(admission_enter(&a, &items[4], 0), ADMIT_QUEUED);
    /* The queue is bounded: refused at once, not after a wait. */
    assert_i64_eq(admission_enter(&a, &items[5], 0), ADMIT_REFUSED);
    assert_i64_eq(a.refused, 1);
    assert_i64_eq(a.queued, 3);
}

static void test_fifo_while_the_queue_drains(void **state)
{
    admission_t a;
    admission_init(&a, &opt, 0);
    admission_enter(&a, &items[0], 0);
    admission_enter(&a, &items[1], 0);
    admission_enter(&a, &items[2], 10);
    admission_enter(&a, &items[3], 20);
    /* Within the interval: first come, first served. */
    assert_ptr_equal(admission_done(&a, 1000, 1000), &items[2]);
    assert_ptr_equal(admission_done(&a, 1000, 2000), &items[3]);
    assert_null(admission_done(&a, 1000, 3000));
    assert_i64_eq(a.inflight, 1);
    assert_i64_eq(a.queued, 0);
}

static void test_standing_queue_turns_lifo_and_sheds_fast(void **state)
{
    admission_t a;
    admission_init(&a, &opt, 0);
    admission_enter(&a, &items[0], 0);
    admission_enter(&a, &items[1], 0);
    admission_enter(&a, &items[2], 0);
    admission_enter(&a, &items[3], 50000);
    /* First interval: work ran at once (wait 0), so not overloaded, and the
     * generous timeout applies. */
    assert_null(admission_expired(&a, 100500));
    assert_i64_eq(a.overloaded, 0);
    /* Second interval: nothing left the queue and its oldest has waited
     * 200 ms > 10 ms target: standing. Now 20 ms of waiting is too much. */
    assert_null(admission_expired(&a, 150000)); /* within the interval: no verdict yet */
    assert_ptr_equal(admission_expired(&a, 200600), &items[2]);
    assert_i64_eq(a.overloaded, 1);
    assert_i64_eq(a.expired, 1);
    assert_ptr_equal(admission_expired(&a, 200600), &items[3]); /* waited 150 ms */
    assert_null(admission_expired(&a, 200600));
    /* The queue emptied: no longer overloaded. */
    assert_i64_eq(a.overloaded, 0);
}

static void test_overloaded_serves_newest_first(void **state)
{
    admission_t a;
    admission_init(&a, &opt, 0);
    admission_enter(&a, &items[0], 0);
    admission_enter(&a, &items[1], 0);
    admission_enter(&a, &items[2], 0);
    admission_enter(&a, &items[3], 95000);
    /* The first interval saw work run at once (wait 0): not overload. */
    admission_tick(&a, 100000);
    assert_i64_eq(a.overloaded, 0);
    admission_enter(&a, &items[4], 101000);
    /* The next interval: nothing left the queue, its oldest waited 200 ms:
     * standing. The newest is served first. */
    assert_ptr_equal(admission_done(&a, 5000, 200500), &items[4]);
    assert_i64_eq(a.overloaded, 1);
    assert_ptr_equal(admission_done(&a, 5000, 200600), &items[3]);
}

/* Many clients keep the queue non-empty, but every interval something
 * leaves it after a short wait: a busy queue, not a standing one. */
static void test_busy_queue_that_moves_is_not_overload(void **state)
{
    admission_options_t o = opt;
    o.max_queue = 100;
    admission_t a;
    admission_init(&a, &o, 0);
    admission_enter(&a, &items[0], 0);
    admission_enter(&a, &items[1], 0);
    admission_enter(&a, &items[2], 0);
    admission_enter(&a, &items[3], 0);
    uint64_t t = 0;
    for (int i = 0; i < 100; i++) {
        t += 5000; /* a query ends every 5 ms; each waiter waited ~5 ms */
        admission_item_t *next = admission_done(&a, 1000, t);
        assert_non_null(next);
        assert_i64_eq(admission_enter(&a, next, t), ADMIT_QUEUED); /* its user comes straight back */
        assert_i64_eq(a.overloaded, 0);
    }
    assert_null(admission_expired(&a, t));
}

static void test_normal_timeout_without_overload(void **state)
{
    admission_options_t o = opt;
    o.interval_us = 10000000; /* never overloaded within this test */
    admission_t a;
    admission_init(&a, &o, 0);
    admission_enter(&a, &items[0], 0);
    admission_enter(&a, &items[1], 0);
    admission_enter(&a, &items[2], 0);
    assert_null(admission_expired(&a, 1999999));
    assert_ptr_equal(admission_expired(&a, 2000000), &items[2]);
}

static void test_limit_grows_while_latency_holds_and_shrinks_when_it_rises(void **state)
{
    admission_t a;
    admission_init(&a, &opt, 0);
    uint64_t t = 0;
    /* Saturated at a steady 1 ms: the limit grows to the maximum. */
    for (int round = 0; round < 50; round++) {
        while (a.inflight < admission_limit(&a))
            admission_enter(&a, &items[a.inflight], t);
        for (int i = 0; i < 10; i++) {
            admission_done(&a, 1000, t);
            admission_enter(&a, &items[0], t);
        }
        t += 100000;
        admission_tick(&a, t);
    }
    assert_i64_eq(admission_limit(&a), opt.max_limit);
    /* Latency jumps tenfold: the gradient cuts the limit. */
    int before = admission_limit(&a);
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 20; i++) {
            admission_done(&a, 10000, t);
            admission_enter(&a, &items[0], t);
        }
        t += 100000;
        admission_tick(&a, t);
    }
    if (admission_limit(&a) >= before)
        fail_msg("limit %d did not shrink from %d when latency rose 10x", admission_limit(&a), before);
    assert_true(admission_limit(&a) >= opt.min_limit);
}

static void test_idle_limit_does_not_grow(void **state)
{
    admission_t a;
    admission_init(&a, &opt, 0);
    admission_enter(&a, &items[0], 0);
    admission_done(&a, 1000, 1000);
    for (int i = 1; i <= 20; i++)
        admission_tick(&a, (uint64_t)i * 100000);
    assert_i64_eq(admission_limit(&a), opt.initial_limit);
}

static void test_no_sample_frees_the_slot_without_learning(void **state)
{
    admission_t a;
    admission_init(&a, &opt, 0);
    admission_enter(&a, &items[0], 0);
    admission_done(&a, ADMISSION_NO_SAMPLE, 10);
    assert_i64_eq(a.inflight, 0);
    assert_i64_eq(a.tick_samples, 0);
    admission_tick(&a, 100000);
    assert_true(a.rtt_long_us == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_up_to_the_limit_then_queues_then_refuses),
        cmocka_unit_test(test_fifo_while_the_queue_drains),
        cmocka_unit_test(test_standing_queue_turns_lifo_and_sheds_fast),
        cmocka_unit_test(test_overloaded_serves_newest_first),
        cmocka_unit_test(test_busy_queue_that_moves_is_not_overload),
        cmocka_unit_test(test_normal_timeout_without_overload),
        cmocka_unit_test(test_limit_grows_while_latency_holds_and_shrinks_when_it_rises),
        cmocka_unit_test(test_idle_limit_does_not_grow),
        cmocka_unit_test(test_no_sample_frees_the_slot_without_learning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
