#include "api/throttle.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/dispatch.h"
#include "cache/cache.h"
#include "cache/redis.h"

/* ---- pure ------------------------------------------------------------------ */

void throttle_account(const throttle_policy_t *p, const char *email, size_t len,
                      unsigned char out[THROTTLE_KEY_BYTES])
{
    while (len > 0 && (*email == ' ' || *email == '\t' || *email == '\r' || *email == '\n'))
        email++, len--;
    while (len > 0 && (email[len - 1] == ' ' || email[len - 1] == '\t' || email[len - 1] == '\r' ||
                       email[len - 1] == '\n'))
        len--;
    /* A login accepts up to 1,024 bytes of email; a longer one cannot match
     * an account (254 at most), so its first 1,024 bytes name it well enough. */
    char folded[1024];
    size_t n = len < sizeof(folded) ? len : sizeof(folded);
    memcpy(folded, email, n);
    cache_fold_case(folded, n);
    crypto_generichash(out, THROTTLE_KEY_BYTES, (const unsigned char *)folded, n, p->secret,
                       sizeof(p->secret));
}

int64_t throttle_backoff_ms(const throttle_policy_t *p, int64_t failures)
{
    if (failures < p->free_failures)
        return 0;
    int64_t wait = p->base_ms;
    for (int64_t k = p->free_failures; k < failures && wait < p->max_ms; k++)
        wait *= 2;
    return wait < p->max_ms ? wait : p->max_ms;
}

int64_t throttle_retry_after_s(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s;
}

/* ---- the memory table ------------------------------------------------------ */

void throttle_table_init(throttle_table_t *t)
{
    memset(t->e, 0, sizeof(t->e));
    pthread_mutex_init(&t->lock, NULL);
}

static int forgotten(const throttle_policy_t *p, const throttle_entry_t *e, int64_t now_ms)
{
    return e->failures == 0 || now_ms - e->last_ms >= p->forget_ms;
}

static size_t home_slot(const unsigned char key[THROTTLE_KEY_BYTES])
{
    uint32_t h;
    memcpy(&h, key, sizeof(h)); /* the key is a hash already */
    return h % THROTTLE_SLOTS;
}

/* The account's entry, or NULL. Under the lock. */
static throttle_entry_t *find(throttle_table_t *t, const unsigned char key[THROTTLE_KEY_BYTES])
{
    size_t h = home_slot(key);
    for (size_t i = 0; i < THROTTLE_PROBES; i++) {
        throttle_entry_t *e = &t->e[(h + i) % THROTTLE_SLOTS];
        if (e->failures != 0 && memcmp(e->key, key, THROTTLE_KEY_BYTES) == 0)
            return e;
    }
    return NULL;
}

int64_t throttle_table_wait(throttle_table_t *t, const throttle_policy_t *p,
                            const unsigned char key[THROTTLE_KEY_BYTES], int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    const throttle_entry_t *e = find(t, key);
    int64_t wait = e != NULL && !forgotten(p, e, now_ms) && e->until_ms > now_ms ? e->until_ms - now_ms : 0;
    pthread_mutex_unlock(&t->lock);
    return wait;
}

int64_t throttle_table_fail(throttle_table_t *t, const throttle_policy_t *p,
                            const unsigned char key[THROTTLE_KEY_BYTES], int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    throttle_entry_t *e = find(t, key);
    if (e != NULL && forgotten(p, e, now_ms))
        e->failures = 0;
    if (e == NULL) {
        /* A free or forgotten slot, else the stalest one. */
        size_t h = home_slot(key);
        for (size_t i = 0; i < THROTTLE_PROBES; i++) {
            throttle_entry_t *c = &t->e[(h + i) % THROTTLE_SLOTS];
            if (forgotten(p, c, now_ms)) {
                e = c;
                break;
            }
            if (e == NULL || c->last_ms < e->last_ms)
                e = c;
        }
        memcpy(e->key, key, THROTTLE_KEY_BYTES);
        e->failures = 0;
    }
    e->failures++;
    e->last_ms = now_ms;
    e->until_ms = now_ms + throttle_backoff_ms(p, e->failures);
    int64_t n = e->failures;
    pthread_mutex_unlock(&t->lock);
    return n;
}

void throttle_table_reset(throttle_table_t *t, const unsigned char key[THROTTLE_KEY_BYTES])
{
    pthread_mutex_lock(&t->lock);
    throttle_entry_t *e = find(t, key);
    if (e != NULL)
        memset(e, 0, sizeof(*e));
    pthread_mutex_unlock(&t->lock);
}

/* ---- in a request ------------------------------------------------------------ */

static throttle_policy_t policy;
static throttle_table_t table;

void throttle_init(const config_t *cfg)
{
    policy.free_failures = cfg->login_failures_free;
    policy.base_ms = cfg->login_backoff_base_ms;
    policy.max_ms = (int64_t)cfg->login_backoff_max_s * 1000;
    policy.forget_ms = (int64_t)cfg->login_failures_ttl_s * 1000;
    /* Every instance derives the same key (they share JWT_SECRET), and the
     * hashes in Redis cannot be checked against a list of known emails
     * without it. */
    static const char domain[] = "marketd login throttle v1";
    const char *secret = cfg->jwt_secret != NULL ? cfg->jwt_secret : ""; /* NULL only in tests */
    size_t n =
        strlen(secret) < crypto_generichash_KEYBYTES_MAX ? strlen(secret) : crypto_generichash_KEYBYTES_MAX;
    crypto_generichash(policy.secret, sizeof(policy.secret), (const unsigned char *)domain,
                       sizeof(domain) - 1, n > 0 ? (const unsigned char *)secret : NULL, n);
    throttle_table_init(&table);
}

const throttle_policy_t *throttle_policy(void)
{
    return &policy;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "lf:{<hex>}" / "lb:{<hex>}": the same hash tag, so one node of a cluster
 * holds both (DEL of the two in one command). */
#define RKEY_LEN (4 + 2 * THROTTLE_KEY_BYTES + 1)
static void redis_key(char out[RKEY_LEN + 1], char kind, const unsigned char key[THROTTLE_KEY_BYTES])
{
    out[0] = 'l', out[1] = kind, out[2] = ':', out[3] = '{';
    sodium_bin2hex(out + 4, 2 * THROTTLE_KEY_BYTES + 1, key, THROTTLE_KEY_BYTES);
    out[RKEY_LEN - 1] = '}';
    out[RKEY_LEN] = '\0';
}

static redis_t *redis_of(worker_t *w)
{
    return cache_worker_redis(api_worker(w)->cache);
}

/* One operation in flight: Redis replies arrive after the caller's stack
 * is gone, so it is malloc'd and freed just before its callback runs. */
typedef struct op {
    unsigned char key[THROTTLE_KEY_BYTES];
    char lf[RKEY_LEN + 1], lb[RKEY_LEN + 1];
    int64_t mem_wait;
    redis_t *redis;
    throttle_check_cb check;
    throttle_done_cb done;
    void *arg;
} op_t;

static op_t *op_new(worker_t *w, const unsigned char key[THROTTLE_KEY_BYTES], void *arg)
{
    op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        abort();
    memcpy(op->key, key, THROTTLE_KEY_BYTES);
    redis_key(op->lf, 'f', key);
    redis_key(op->lb, 'b', key);
    op->redis = redis_of(w);
    op->arg = arg;
    return op;
}

static int rsend(op_t *op, int argc, const char **argv, redis_cb cb, void *arg)
{
    size_t lens[6];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return redis_command(op->redis, op->lf, RKEY_LEN, argc, argv, lens, cb, arg);
}

static void on_ignored(void *arg, redisReply *reply, int err)
{
    (void)arg, (void)reply, (void)err;
}

/* check: PTTL lb:{h} */

static void check_finish(op_t *op, int64_t wait)
{
    throttle_check_cb cb = op->check;
    void *arg = op->arg;
    if (op->mem_wait > wait)
        wait = op->mem_wait;
    free(op);
    cb(arg, wait);
}

static void on_pttl(void *arg, redisReply *reply, int err)
{
    /* Redis down or slow: the memory table's answer alone. */
    int ok = err == 0 && reply != NULL && reply->type == REDIS_REPLY_INTEGER;
    check_finish(arg, ok && reply->integer > 0 ? reply->integer : 0);
}

void throttle_check(worker_t *w, const unsigned char key[THROTTLE_KEY_BYTES], throttle_check_cb cb, void *arg)
{
    op_t *op = op_new(w, key, arg);
    op->check = cb;
    op->mem_wait = throttle_table_wait(&table, &policy, key, now_ms());
    if (op->mem_wait > 0 || op->redis == NULL ||
        rsend(op, 2, (const char *[]){"PTTL", op->lb}, on_pttl, op) != 0)
        check_finish(op, 0);
}

/* failed: INCR lf:{h}, PEXPIRE lf:{h}, then SET lb:{h} PX <wait> */

static void done_finish(op_t *op)
{
    throttle_done_cb done = op->done;
    void *arg = op->arg;
    free(op);
    done(arg);
}

static void fail_in_memory(op_t *op)
{
    throttle_table_fail(&table, &policy, op->key, now_ms());
    done_finish(op);
}

static void on_set_wait(void *arg, redisReply *reply, int err)
{
    op_t *op = arg;
    if (err != 0 || reply == NULL || reply->type == REDIS_REPLY_ERROR)
        fail_in_memory(op); /* the wait would be lost: keep one here */
    else
        done_finish(op);
}

static void on_incr(void *arg, redisReply *reply, int err)
{
    op_t *op = arg;
    if (err != 0 || reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        fail_in_memory(op);
        return;
    }
    int64_t wait = throttle_backoff_ms(&policy, reply->integer);
    if (wait == 0) {
        done_finish(op);
        return;
    }
    char px[24];
    snprintf(px, sizeof(px), "%lld", (long long)wait);
    if (rsend(op, 5, (const char *[]){"SET", op->lb, "1", "PX", px}, on_set_wait, op) != 0)
        fail_in_memory(op);
}

void throttle_failed(worker_t *w, const unsigned char key[THROTTLE_KEY_BYTES], throttle_done_cb done,
                     void *arg)
{
    op_t *op = op_new(w, key, arg);
    op->done = done;
    if (op->redis == NULL || rsend(op, 2, (const char *[]){"INCR", op->lf}, on_incr, op) != 0) {
        fail_in_memory(op);
        return;
    }
    /* Pipelined behind the INCR on the same connection. */
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)policy.forget_ms);
    rsend(op, 3, (const char *[]){"PEXPIRE", op->lf, ttl}, on_ignored, NULL);
}

/* succeeded: DEL lf:{h} lb:{h} */

static void on_del(void *arg, redisReply *reply, int err)
{
    (void)reply, (void)err; /* a failure leaves counts that expire anyway */
    done_finish(arg);
}

void throttle_succeeded(worker_t *w, const unsigned char key[THROTTLE_KEY_BYTES], throttle_done_cb done,
                        void *arg)
{
    throttle_table_reset(&table, key);
    op_t *op = op_new(w, key, arg);
    op->done = done;
    if (op->redis == NULL || rsend(op, 3, (const char *[]){"DEL", op->lf, op->lb}, on_del, op) != 0)
        done_finish(op);
}
