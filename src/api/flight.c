#include "api/flight.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

typedef struct flight {
    struct flight *next;
    flight_waiter_t *waiters;
    flight_body_t *body; /* finished: the result */
    uint64_t done_at_us; /* 0 while in progress */
    char id[FLIGHT_ID_MAX];
} flight_t;

#define FLIGHT_BUCKETS 1024
static pthread_mutex_t flights_lock = PTHREAD_MUTEX_INITIALIZER;
static flight_t *flights[FLIGHT_BUCKETS];

static uint64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
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

flight_join_t flight_join(const char *id, flight_waiter_t *w, flight_body_t **done)
{
    unsigned b = bucket_of(id);
    pthread_mutex_lock(&flights_lock);
    sweep_bucket(b, now_us());
    flight_t *f = flights[b];
    while (f != NULL && strcmp(f->id, id) != 0)
        f = f->next;
    if (f != NULL && f->done_at_us != 0) {
        __atomic_add_fetch(&f->body->refs, 1, __ATOMIC_RELAXED);
        *done = f->body;
        pthread_mutex_unlock(&flights_lock);
        return FLIGHT_DONE;
    }
    if (f != NULL) {
        w->body = NULL;
        w->next = f->waiters;
        f->waiters = w;
        pthread_mutex_unlock(&flights_lock);
        return FLIGHT_WAIT;
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        abort();
    size_t n = strlen(id);
    memcpy(f->id, id, n < sizeof(f->id) ? n + 1 : sizeof(f->id));
    f->id[sizeof(f->id) - 1] = '\0';
    f->next = flights[b];
    flights[b] = f;
    pthread_mutex_unlock(&flights_lock);
    return FLIGHT_LEAD;
}

void flight_finish(const char *id, const char *body, size_t len)
{
    flight_body_t *sb = NULL;
    if (body != NULL) {
        sb = malloc(sizeof(*sb) + len);
        if (sb == NULL)
            abort();
        sb->refs = 1;
        sb->len = len;
        memcpy(sb->data, body, len);
    }
    unsigned b = bucket_of(id);
    flight_waiter_t *waiters = NULL;
    pthread_mutex_lock(&flights_lock);
    flight_t **pp = &flights[b];
    while (*pp != NULL && ((*pp)->done_at_us != 0 || strcmp((*pp)->id, id) != 0))
        pp = &(*pp)->next;
    if (*pp != NULL) {
        flight_t *f = *pp;
        waiters = f->waiters;
        f->waiters = NULL;
        if (sb != NULL) {
            /* A finished fill lingers for misses that raced its store. */
            __atomic_add_fetch(&sb->refs, 1, __ATOMIC_RELAXED);
            f->body = sb;
            f->done_at_us = now_us();
        } else {
            *pp = f->next;
            free(f);
        }
    }
    pthread_mutex_unlock(&flights_lock);
    for (flight_waiter_t *w = waiters, *next; w != NULL; w = next) {
        next = w->next;
        if (sb != NULL) {
            __atomic_add_fetch(&sb->refs, 1, __ATOMIC_RELAXED);
            w->body = sb;
        }
        h2o_multithread_send_message(w->receiver, &w->msg);
    }
    flight_body_release(sb);
}

void flight_on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        flight_waiter_t *w = H2O_STRUCT_FROM_MEMBER(flight_waiter_t, msg.link, messages->next);
        h2o_linklist_unlink(&w->msg.link);
        w->wake(w, w->body);
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
    for (unsigned b = 0; b < FLIGHT_BUCKETS; b++)
        sweep_bucket(b, UINT64_MAX / 2);
    pthread_mutex_unlock(&flights_lock);
}
