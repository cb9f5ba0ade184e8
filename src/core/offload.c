#include "core/offload.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/error.h"

typedef struct job {
    h2o_multithread_message_t msg; /* first: the receiver gets &job->msg */
    struct job *next;
    offload_receiver_t *to;
    offload_work_fn work;
    offload_done_fn done;
    void *arg;
} job_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job_t *head, *tail;
    int queued, queue_max;
    int stopping;
    int nthreads;
    pthread_t *threads;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *thread_main(void *unused)
{
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&pool.lock);
        while (pool.head == NULL && !pool.stopping)
            pthread_cond_wait(&pool.cond, &pool.lock);
        job_t *j = pool.head;
        if (j == NULL) {
            pthread_mutex_unlock(&pool.lock);
            return NULL;
        }
        pool.head = j->next;
        if (pool.head == NULL)
            pool.tail = NULL;
        pool.queued--;
        pthread_mutex_unlock(&pool.lock);
        j->work(j->arg);
        h2o_multithread_send_message(&j->to->receiver, &j->msg);
    }
}

int offload_start(int threads, int queue_max)
{
    pool.queue_max = queue_max;
    pool.threads = calloc((size_t)threads, sizeof(pthread_t));
    if (pool.threads == NULL)
        return -1;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&pool.threads[i], NULL, thread_main, NULL) != 0)
            return -1;
        pool.nthreads++;
    }
    return 0;
}

void offload_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = 1;
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
}

static void on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        job_t *j = H2O_STRUCT_FROM_MEMBER(job_t, msg.link, messages->next);
        h2o_linklist_unlink(&j->msg.link);
        j->done(j->arg);
        free(j);
    }
}

void offload_receiver_init(offload_receiver_t *r, h2o_context_t *ctx)
{
    h2o_multithread_register_receiver(ctx->queue, &r->receiver, on_messages);
}

void offload_receiver_dispose(offload_receiver_t *r, h2o_context_t *ctx)
{
    h2o_multithread_unregister_receiver(ctx->queue, &r->receiver);
}

int offload_submit(offload_receiver_t *r, offload_work_fn work, offload_done_fn done, void *arg)
{
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        abort();
    j->to = r;
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&pool.lock);
    if (pool.queued >= pool.queue_max || pool.stopping) {
        pthread_mutex_unlock(&pool.lock);
        free(j);
        return MKD_EBUSY;
    }
    if (pool.tail != NULL)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    pool.queued++;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    return 0;
}
