#include "api/flight.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

typedef struct flight {
    struct flight *next;
    flight_waiter_t *waiters;
    flight_body_t *body; /* finished: the result (FLIGHT_SHARE) */
    uint64_t done_at_us; /* 0 until finished */
    int gathering;       /* FLIGHT_GATHER: its query is not sent yet */
    char id[FLIGHT_ID_MAX];
} flight_t;

#define FLIGHT_BUCKETS 1024
static pthread_mutex_t flights_lock = PTHREAD_MUTEX_INITIALIZER;
static flight_t *flights[FLIGHT_BUCKETS];
static int nwaiting; /* under flights_lock */

static uint64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

flight_body_t *flight_body_new(const char *data, size_t len)
{
    flight_body_t *b = malloc(sizeof(*b) + len);
    if (b == NULL)
        abort();
    b->refs = 1;
    b->len = len;
    memcpy(b->data, data, len);
    return b;
}

void flight_body_release(flight_body_t *b)
{
    if (b != NULL && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

static unsigned bucket_of(const char *id)
{
    unsigned h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % FLIGHT_BUCKETS;
}

/* Drops finished flights older than FLIGHT_LINGER_US from one bucket (lock held). */
static void sweep_bucket(unsigned b, uint64_t now)
{
    for (flight_t **pp = &flights[b]; *pp != NULL;) {
        flight_t *f = *pp;
        if (f->done_at_us != 0 && now - f->done_at_us > FLIGHT_LINGER_US) {
            *pp = f->next;
            flight_body_release(f->body);
            free(f);
        } else {
            pp = &f->next;
        }
    }
}

/* The flight `id` in the given state, or NULL (lock held). `done`: -1 any,
 * 0 unfinished, 1 finished. */
static flight_t **find(unsigned b, const char *id, int gathering, int done)
{
    for (flight_t **pp = &flights[b]; *pp != NULL; pp = &(*pp)->next) {
        flight_t *f = *pp;
        if (f->gathering == gathering && (done < 0 || (f->done_at_us != 0) == done) && strcmp(f->id, id) == 0)
            return pp;
    }
    return NULL;
}

static flight_t *add(unsigned b, const char *id, int gathering)
{
    flight_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        abort();
    size_t n = strlen(id);
    memcpy(f->id, id, n < sizeof(f->id) ? n + 1 : sizeof(f->id));
    f->id[sizeof(f->id) - 1] = '\0';
    f->gathering = gathering;
    f->next = flights[b];
    flights[b] = f;
    return f;
}

static void add_waiter(flight_t *f, flight_waiter_t *w)
{
    w->body = NULL;
    w->err = 0;
    w->lead = 0;
    w->next = f->waiters;
    f->waiters = w;
    nwaiting++;
}

flight_join_t flight_join(const char *id, flight_mode_t mode, flight_waiter_t *w, flight_body_t **done)
{
    unsigned b = bucket_of(id);
    flight_join_t rc = FLIGHT_WAIT;
    pthread_mutex_lock(&flights_lock);
    sweep_bucket(b, now_us());
    flight_t **running = find(b, id, 0, -1);
    if (mode == FLIGHT_SHARE && running != NULL && (*running)->done_at_us != 0) {
        __atomic_add_fetch(&(*running)->body->refs, 1, __ATOMIC_RELAXED);
        *done = (*running)->body;
        rc = FLIGHT_DONE;
    } else if (running == NULL) {
        add(b, id, 0);
        rc = FLIGHT_LEAD;
    } else if (mode == FLIGHT_SHARE) {
        add_waiter(*running, w);
    } else {
        /* A query is running: gather for the next one. */
        flight_t **next = find(b, id, 1, 0);
        add_waiter(next != NULL ? *next : add(b, id, 1), w);
    }
    pthread_mutex_unlock(&flights_lock);
    return rc;
}

void flight_finish(const char *id, flight_mode_t mode, int err, const char *body, size_t len)
{
    flight_body_t *sb = body != NULL ? flight_body_new(body, len) : NULL;
    unsigned b = bucket_of(id);
    flight_waiter_t *waiters = NULL, *leader = NULL;
    pthread_mutex_lock(&flights_lock);
    flight_t **pp = find(b, id, 0, 0);
    if (pp != NULL) {
        flight_t *f = *pp;
        waiters = f->waiters;
        f->waiters = NULL;
        if (sb != NULL && mode == FLIGHT_SHARE) {
            /* A finished fill lingers for misses that raced its store. */
            __atomic_add_fetch(&sb->refs, 1, __ATOMIC_RELAXED);
            f->body = sb;
            f->done_at_us = now_us();
        } else {
            *pp = f->next;
            free(f);
        }
        /* The requests gathered meanwhile: one of them sends the next
         * query; the flight is now running, so later arrivals gather anew. */
        flight_t **next = mode == FLIGHT_GATHER ? find(b, id, 1, 0) : NULL;
        if (next != NULL) {
            flight_t *g = *next;
            g->gathering = 0;
            leader = g->waiters;
            g->waiters = leader->next;
            nwaiting--;
        }
    }
    for (flight_waiter_t *w = waiters; w != NULL; w = w->next)
        nwaiting--;
    pthread_mutex_unlock(&flights_lock);
    for (flight_waiter_t *w = waiters, *next; w != NULL; w = next) {
        next = w->next;
        if (sb != NULL) {
            __atomic_add_fetch(&sb->refs, 1, __ATOMIC_RELAXED);
            w->body = sb;
        } else {
            w->err = err < 0 ? err : -1;
        }
        h2o_multithread_send_message(w->receiver, &w->msg);
    }
    if (leader != NULL) {
        leader->lead = 1;
        h2o_multithread_send_message(leader->receiver, &leader->msg);
    }
    flight_body_release(sb);
}

void flight_on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        flight_waiter_t *w = H2O_STRUCT_FROM_MEMBER(flight_waiter_t, msg.link, messages->next);
        h2o_linklist_unlink(&w->msg.link);
        w->wake(w, w->body, w->err, w->lead);
    }
}

void flight_sweep(void)
{
    /* Once a second, one caller drops lingering fills nobody asked for. */
    static uint64_t last_sweep_us;
    uint64_t now = now_us(), last = __atomic_load_n(&last_sweep_us, __ATOMIC_RELAXED);
    if (now - last <= 1000000 ||
        !__atomic_compare_exchange_n(&last_sweep_us, &last, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    pthread_mutex_lock(&flights_lock);
    for (unsigned b = 0; b < FLIGHT_BUCKETS; b++)
        sweep_bucket(b, now);
    pthread_mutex_unlock(&flights_lock);
}

void flight_dispose_all(void)
{
    pthread_mutex_lock(&flights_lock);
    for (unsigned b = 0; b < FLIGHT_BUCKETS; b++) {
        sweep_bucket(b, UINT64_MAX / 2);
        /* Unfinished flights cannot remain after a drain; free them anyway. */
        while (flights[b] != NULL) {
            flight_t *f = flights[b];
            flights[b] = f->next;
            flight_body_release(f->body);
            free(f);
        }
    }
    pthread_mutex_unlock(&flights_lock);
}

int flight_waiting(void)
{
    pthread_mutex_lock(&flights_lock);
    int n = nwaiting;
    pthread_mutex_unlock(&flights_lock);
    return n;
}
