#include "cache/cache.h"

#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cache/redis.h"
#include "core/error.h"
#include "core/log.h"
#include "http/reply.h"
#include "http/server.h"

/*
 * Key layout (docs/cache.md):
 *   c1:<normalised request>   the entry: "mkd1 <fresh_until_ms> <fill_ms> <n> <v0> … <vn-1>\n<body>"
 *   {t}:epoch                 the version of everything
 *   {t}:<tag>                 the version of one tag
 * Versions are "<µs since epoch, hex>-<random hex>": only equality matters,
 * and a lost tag key is re-created with a fresh version, so losing data
 * (a restart, a failover) can only cause misses, never stale hits. All tag
 * keys share the hash tag {t}, so one MGET reads them on a cluster too; tag
 * keys have no TTL, so with maxmemory-policy volatile-lru Redis evicts
 * entries, never versions.
 */

#define TAG_PREFIX "{t}:"
#define EPOCH_KEY "{t}:epoch"
#define ENTRY_PREFIX "c1:"
#define VERSION_MAX 40

typedef struct cache_worker {
    redis_t *redis;
    /* Test hook (CACHE_TEST_STORE_DELAY_MS): stores wait this long, to put
     * a write between a fill's database read and its store on purpose. */
    int store_delay_ms;
    h2o_timeout_t store_delay;
    h2o_multithread_receiver_t receiver;
    int redis_timeout_ms;
    h2o_timeout_t retry_timeout; /* 100 ms: retries of an invalidation */
} cache_worker_t;

static int cache_enabled;
static int must_flush; /* atomic, see "invalidation" below */
static int wait_replicas;

static int flush_pending(void)
{
    return __atomic_load_n(&must_flush, __ATOMIC_ACQUIRE);
}

typedef struct delayed_store {
    h2o_timeout_entry_t entry;
    cache_worker_t *cw;
    int keylen;
    size_t len;
    char ttl[16];
    char key[CACHE_KEY_MAX + 8];
    char value[];
} delayed_store_t;


/* ---- single flight, process-wide ------------------------------------------ */

typedef struct shared_body {
    int refs; /* atomic */
    size_t len;
    char data[];
} shared_body_t;

typedef struct waiter {
    h2o_multithread_message_t msg; /* delivered to the waiter's worker */
    struct waiter *next;
    struct rctx *r;
    cache_worker_t *cw;
    void (*query)(struct rctx *r);
    shared_body_t *body; /* NULL: the fill failed, query yourself */
} waiter_t;

/*
 * A fill in progress, or just done. Identified by the key *and* the versions
 * the fill read: a request that read other versions (a write landed in
 * between) must not take a body read before that write. A done fill keeps
 * its body for FLIGHT_LINGER_US, so a miss whose Redis read raced the store
 * still shares it instead of filling again (same versions: no write has
 * completed since, docs/cache.md).
 */
#define FLIGHT_ID_MAX (CACHE_KEY_MAX + (1 + CACHE_MAX_TAGS) * VERSION_MAX)
#define FLIGHT_LINGER_US 2000000
typedef struct flight {
    struct flight *next;
    waiter_t *waiters;
    shared_body_t *body; /* done: the result */
    uint64_t done_at_us; /* 0 while in progress */
    char id[FLIGHT_ID_MAX];
} flight_t;

#define FLIGHT_BUCKETS 1024
static pthread_mutex_t flights_lock = PTHREAD_MUTEX_INITIALIZER;
static flight_t *flights[FLIGHT_BUCKETS];

static void body_release(shared_body_t *b)
{
    if (b != NULL && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}

static unsigned key_bucket(const char *key)
{
    unsigned h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % FLIGHT_BUCKETS;
}

/* Per request state, in the request pool. */
typedef struct cache_req {
    cache_spec_t spec;
    void (*query)(struct rctx *r);
    int pending; /* replies still expected from Redis */
    int failed;
    redisReply *entry;  /* copy of the GET reply (or NULL) */
    char versions[1 + CACHE_MAX_TAGS][VERSION_MAX];
    int nversions;
    int missing_tags;
    int fill;           /* this request is the fill of spec.key */
    char flight_id[FLIGHT_ID_MAX];
    uint64_t fill_start_us;
    char *entry_value;  /* GET result copied into the pool */
    size_t entry_len;
} cache_req_t;

static uint64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

static cache_worker_t *cw_of(worker_t *w)
{
    return w->cache;
}

static void new_version(char out[VERSION_MAX])
{
    snprintf(out, VERSION_MAX, "%llx-%08x", (unsigned long long)now_us(), randombytes_random());
}

void cache_tag(char out[48], const char *prefix, int64_t id)
{
    snprintf(out, 48, "%s:%lld", prefix, (long long)id);
}

void cache_fold_case(char *s, size_t n)
{
    unsigned char *p = (unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 'A' && p[i] <= 'Z') {
            p[i] += 32;
        } else if (i + 1 < n && p[i] == 0xD0) {
            unsigned c = p[i + 1];
            if (c >= 0x90 && c <= 0x9F) { /* А..П → а..п (D0 B0..D0 BF) */
                p[i + 1] = (unsigned char)(c + 0x20);
                i++;
            } else if (c >= 0xA0 && c <= 0xAF) { /* Р..Я → р..я (D1 80..D1 8F) */
                p[i] = 0xD1;
                p[i + 1] = (unsigned char)(c - 0x20);
                i++;
            } else if (c == 0x81) { /* Ё → ё (D1 91) */
                p[i] = 0xD1;
                p[i + 1] = 0x91;
                i++;
            }
        }
    }
}

/* ---- worker set-up ----------------------------------------------------------- */

static void on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);

void cache_global_init(int enabled, int replicas_to_wait_for)
{
    cache_enabled = enabled;
    wait_replicas = replicas_to_wait_for;
}

void cache_worker_init(worker_t *w)
{
    const config_t *cfg = w->server->cfg;
    w->cache = NULL;
    if (!cache_enabled)
        return;
    cache_worker_t *cw = calloc(1, sizeof(*cw));
    if (cw == NULL)
        abort();
    redis_options_t opt = {
        .url = cfg->redis_url,
        .cluster_nodes = cfg->redis_cluster_nodes,
        .password = cfg->redis_password,
        .timeout_ms = cfg->cache_timeout_ms,
        .connect_timeout_ms = 1000,
    };
    char err[256];
    cw->redis = redis_create(w->loop, &opt, err, sizeof(err));
    if (cw->redis == NULL) {
        log_error("cache disabled: %s", err);
        free(cw);
        return;
    }
    h2o_multithread_register_receiver(w->ctx.queue, &cw->receiver, on_messages);
    cw->store_delay_ms = cfg->cache_test_store_delay_ms;
    cw->redis_timeout_ms = cfg->cache_timeout_ms;
    h2o_timeout_init(w->loop, &cw->retry_timeout, 100);
    if (cw->store_delay_ms > 0)
        h2o_timeout_init(w->loop, &cw->store_delay, (uint64_t)cw->store_delay_ms);
    w->cache = cw;
}

void cache_worker_dispose(worker_t *w)
{
    cache_worker_t *cw = cw_of(w);
    if (cw == NULL)
        return;
    redis_destroy(cw->redis);
    h2o_timeout_dispose(w->loop, &cw->retry_timeout);
    if (cw->store_delay_ms > 0) {
        /* Stores still waiting are dropped (test hook only). */
        while (!h2o_linklist_is_empty(&cw->store_delay._entries)) {
            h2o_timeout_entry_t *e = H2O_STRUCT_FROM_MEMBER(h2o_timeout_entry_t, _link, cw->store_delay._entries.next);
            h2o_timeout_unlink(e);
            free(H2O_STRUCT_FROM_MEMBER(delayed_store_t, entry, e));
        }
        h2o_timeout_dispose(w->loop, &cw->store_delay);
    }
    h2o_multithread_unregister_receiver(w->ctx.queue, &cw->receiver);
    free(cw);
    w->cache = NULL;
}

const char *cache_state(worker_t *w)
{
    cache_worker_t *cw = cw_of(w);
    if (cw == NULL)
        return cache_enabled ? "down" : "disabled";
    return redis_is_up(cw->redis) && !flush_pending() ? "up" : "down";
}

static void count(struct rctx *r, int which)
{
    uint64_t *c = &r->w->metrics.cache[which];
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static void bypass(struct rctx *r, void (*query)(struct rctx *r))
{
    r->cache_result = "BYPASS";
    count(r, 2);
    query(r);
}

/* ---- reading ------------------------------------------------------------------- */

/* Parses the entry header; returns the body offset or -1. */
static long parse_entry(const char *v, size_t n, uint64_t *fresh_until_ms, uint64_t *fill_ms, int *nver,
                        const char *ver[], size_t verlen[])
{
    const char *end = memchr(v, '\n', n);
    if (end == NULL || n < 5 || memcmp(v, "mkd1 ", 5) != 0)
        return -1;
    char head[512];
    size_t hl = (size_t)(end - v);
    if (hl >= sizeof(head))
        return -1;
    memcpy(head, v, hl);
    head[hl] = '\0';
    char *save = NULL, *tok = strtok_r(head + 5, " ", &save);
    if (tok == NULL)
        return -1;
    *fresh_until_ms = strtoull(tok, NULL, 10);
    if ((tok = strtok_r(NULL, " ", &save)) == NULL)
        return -1;
    *fill_ms = strtoull(tok, NULL, 10);
    if ((tok = strtok_r(NULL, " ", &save)) == NULL)
        return -1;
    int n_ = atoi(tok);
    if (n_ < 1 || n_ > 1 + CACHE_MAX_TAGS)
        return -1;
    for (int i = 0; i < n_; i++) {
        if ((tok = strtok_r(NULL, " ", &save)) == NULL)
            return -1;
        ver[i] = v + (tok - head);
        verlen[i] = strlen(tok);
    }
    *nver = n_;
    return (long)(hl + 1);
}

static void become_fill_or_wait(struct rctx *r, cache_req_t *cr);

static void on_stored(void *arg, redisReply *reply, int err)
{
    (void)arg;
    if (err == 0 && reply != NULL && reply->type == REDIS_REPLY_ERROR)
        log_debug("cache: store refused: %s", reply->str); /* e.g. OOM: Redis full */
}


static void on_lookup_done(struct rctx *r, cache_req_t *cr)
{
    cache_worker_t *cw = cw_of(r->w);
    if (cr->failed) {
        bypass(r, cr->query);
        return;
    }
    if (cr->missing_tags) {
        /* A tag never written (or lost): give it a version now. SET NX so
         * that a concurrent writer's version wins; this request bypasses,
         * the next one can fill. */
        for (int i = 0; i < cr->spec.ntags + 1; i++) {
            if (cr->versions[i][0] != '\0')
                continue;
            char key[64], ver[VERSION_MAX];
            snprintf(key, sizeof(key), "%s%s", TAG_PREFIX, i == 0 ? "epoch" : cr->spec.tags[i - 1]);
            new_version(ver);
            const char *argv[] = {"SET", key, ver, "NX"};
            size_t lens[] = {3, strlen(key), strlen(ver), 2};
            redis_command(cw->redis, key, strlen(key), 4, argv, lens, on_stored, NULL);
        }
        bypass(r, cr->query);
        return;
    }
    if (cr->entry_value != NULL) {
        uint64_t fresh_until, fill_ms;
        int nver = 0;
        const char *ver[1 + CACHE_MAX_TAGS];
        size_t verlen[1 + CACHE_MAX_TAGS];
        long off = parse_entry(cr->entry_value, cr->entry_len, &fresh_until, &fill_ms, &nver, ver, verlen);
        int valid = off >= 0 && nver == cr->nversions;
        for (int i = 0; valid && i < nver; i++)
            valid = verlen[i] == strlen(cr->versions[i]) && memcmp(ver[i], cr->versions[i], verlen[i]) == 0;
        if (valid) {
            /* Probabilistic early expiration (XFetch): the closer to the end
             * of its TTL and the slower its fill, the likelier one request
             * refreshes it while everyone else still gets hits. */
            double u = (randombytes_random() + 1.0) / 4294967297.0;
            uint64_t now_ms = now_us() / 1000;
            int refresh = (double)now_ms - (double)fill_ms * 1.0 * log(u) >= (double)fresh_until;
            if (!refresh) {
                r->cache_result = "HIT";
                count(r, 0);
                jbuf_t body = {cr->entry_value + off, cr->entry_len - (size_t)off, 0};
                reply_json(r, 200, &body);
                return;
            }
        }
    }
    become_fill_or_wait(r, cr);
}

static void on_entry(void *arg, redisReply *reply, int err)
{
    struct rctx *r = arg;
    cache_req_t *cr = r->cache;
    if (err != 0 || reply == NULL || (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL)) {
        cr->failed = 1;
    } else if (reply->type == REDIS_REPLY_STRING) {
        cr->entry_value = h2o_mem_alloc_pool(&r->req->pool, (size_t)reply->len + 1);
        memcpy(cr->entry_value, reply->str, (size_t)reply->len);
        cr->entry_value[reply->len] = '\0';
        cr->entry_len = (size_t)reply->len;
    }
    if (--cr->pending == 0)
        on_lookup_done(r, cr);
}

static void on_versions(void *arg, redisReply *reply, int err)
{
    struct rctx *r = arg;
    cache_req_t *cr = r->cache;
    if (err != 0 || reply == NULL || reply->type != REDIS_REPLY_ARRAY || (int)reply->elements != cr->nversions) {
        cr->failed = 1;
    } else {
        for (size_t i = 0; i < reply->elements; i++) {
            redisReply *e = reply->element[i];
            if (e->type == REDIS_REPLY_STRING && e->len > 0 && e->len < VERSION_MAX) {
                memcpy(cr->versions[i], e->str, (size_t)e->len);
                cr->versions[i][e->len] = '\0';
            } else {
                cr->versions[i][0] = '\0';
                cr->missing_tags = 1;
            }
        }
    }
    if (--cr->pending == 0)
        on_lookup_done(r, cr);
}

void cache_serve(struct rctx *r, const cache_spec_t *spec, void (*query)(struct rctx *r))
{
    cache_worker_t *cw = cw_of(r->w);
    if (cw == NULL || flush_pending() || spec->key[0] == '\0' || !redis_is_up(cw->redis)) {
        bypass(r, query);
        return;
    }
    cache_req_t *cr = h2o_mem_alloc_pool(&r->req->pool, sizeof(*cr));
    memset(cr, 0, sizeof(*cr));
    cr->spec = *spec;
    cr->query = query;
    cr->nversions = 1 + spec->ntags;
    r->cache = cr;

    char entry_key[CACHE_KEY_MAX + 8];
    int ek = snprintf(entry_key, sizeof(entry_key), "%s%s", ENTRY_PREFIX, spec->key);
    const char *get_argv[] = {"GET", entry_key};
    size_t get_lens[] = {3, (size_t)ek};

    char tag_keys[1 + CACHE_MAX_TAGS][64];
    const char *mget_argv[2 + CACHE_MAX_TAGS];
    size_t mget_lens[2 + CACHE_MAX_TAGS];
    mget_argv[0] = "MGET";
    mget_lens[0] = 4;
    for (int i = 0; i < cr->nversions; i++) {
        snprintf(tag_keys[i], sizeof(tag_keys[i]), "%s%s", TAG_PREFIX, i == 0 ? "epoch" : spec->tags[i - 1]);
        mget_argv[1 + i] = tag_keys[i];
        mget_lens[1 + i] = strlen(tag_keys[i]);
    }
    /* Both go out at once: one round trip (two nodes on a cluster). */
    cr->pending = 2;
    if (redis_command(cw->redis, entry_key, (size_t)ek, 2, get_argv, get_lens, on_entry, r) != 0) {
        r->cache = NULL;
        bypass(r, query);
        return;
    }
    if (redis_command(cw->redis, tag_keys[0], strlen(tag_keys[0]), 1 + cr->nversions, mget_argv, mget_lens,
                      on_versions, r) != 0) {
        cr->failed = 1;
        cr->pending--; /* on_entry will finish the lookup (and bypass) */
    }
}

/* ---- filling ------------------------------------------------------------------- */

/* Drops done flights older than FLIGHT_LINGER_US from one bucket (lock held). */
static void sweep_bucket(unsigned b, uint64_t now)
{
    for (flight_t **pp = &flights[b]; *pp != NULL;) {
        flight_t *f = *pp;
        if (f->done_at_us != 0 && now - f->done_at_us > FLIGHT_LINGER_US) {
            *pp = f->next;
            body_release(f->body);
            free(f);
        } else {
            pp = &f->next;
        }
    }
}

static void become_fill_or_wait(struct rctx *r, cache_req_t *cr)
{
    size_t n = (size_t)snprintf(cr->flight_id, sizeof(cr->flight_id), "%s", cr->spec.key);
    for (int i = 0; i < cr->nversions && n < sizeof(cr->flight_id); i++)
        n += (size_t)snprintf(cr->flight_id + n, sizeof(cr->flight_id) - n, "|%s", cr->versions[i]);
    unsigned b = key_bucket(cr->flight_id);
    uint64_t now = now_us();
    pthread_mutex_lock(&flights_lock);
    sweep_bucket(b, now);
    flight_t *f = flights[b];
    while (f != NULL && strcmp(f->id, cr->flight_id) != 0)
        f = f->next;
    if (f != NULL && f->done_at_us != 0) {
        shared_body_t *sb = f->body;
        __atomic_add_fetch(&sb->refs, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&flights_lock);
        r->cache_result = "HIT";
        count(r, 0);
        jbuf_t body = {sb->data, sb->len, 0};
        reply_json(r, 200, &body);
        body_release(sb);
        return;
    }
    if (f != NULL) {
        waiter_t *wt = calloc(1, sizeof(*wt));
        if (wt == NULL)
            abort();
        wt->r = r;
        wt->cw = cw_of(r->w);
        wt->query = cr->query;
        wt->next = f->waiters;
        f->waiters = wt;
        pthread_mutex_unlock(&flights_lock);
        return; /* answered when the fill completes (on_messages) */
    }
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        abort();
    memcpy(f->id, cr->flight_id, n + 1 > sizeof(f->id) ? sizeof(f->id) : n + 1);
    f->id[sizeof(f->id) - 1] = '\0';
    f->next = flights[b];
    flights[b] = f;
    pthread_mutex_unlock(&flights_lock);

    cr->fill = 1;
    cr->fill_start_us = now_us();
    r->cache_result = "MISS";
    count(r, 1);
    cr->query(r);
}

static void store(cache_worker_t *cw, const char *key, size_t keylen, const char *value, size_t len, const char *ttl)
{
    const char *argv[] = {"SET", key, value, "EX", ttl};
    size_t lens[] = {3, keylen, len, 2, strlen(ttl)};
    redis_command(cw->redis, key, keylen, 5, argv, lens, on_stored, NULL);
}

static void on_store_delay(h2o_timeout_entry_t *entry)
{
    delayed_store_t *d = H2O_STRUCT_FROM_MEMBER(delayed_store_t, entry, entry);
    store(d->cw, d->key, (size_t)d->keylen, d->value, d->len, d->ttl);
    free(d);
}

void cache_fill_done(struct rctx *r, int status, const char *body, size_t len, const char *etag, size_t etag_len)
{
    (void)etag, (void)etag_len;
    cache_req_t *cr = r->cache;
    if (cr == NULL || !cr->fill)
        return;
    cr->fill = 0;
    cache_worker_t *cw = cw_of(r->w);
    shared_body_t *sb = NULL;
    if (status == 200) {
        uint64_t now = now_us();
        uint64_t fill_ms = (now - cr->fill_start_us) / 1000 + 1;
        /* The value: header with the versions read *before* the database
         * (docs/cache.md), then the body. */
        char head[512];
        int hl = snprintf(head, sizeof(head), "mkd1 %llu %llu %d", (unsigned long long)(now / 1000 + (uint64_t)cr->spec.ttl * 1000),
                          (unsigned long long)fill_ms, cr->nversions);
        for (int i = 0; i < cr->nversions && hl < (int)sizeof(head) - VERSION_MAX - 2; i++)
            hl += snprintf(head + hl, sizeof(head) - (size_t)hl, " %s", cr->versions[i]);
        head[hl++] = '\n';
        char *value = malloc((size_t)hl + len);
        if (value == NULL)
            abort();
        memcpy(value, head, (size_t)hl);
        memcpy(value + hl, body, len);
        char entry_key[CACHE_KEY_MAX + 8], ttl[16];
        int ek = snprintf(entry_key, sizeof(entry_key), "%s%s", ENTRY_PREFIX, cr->spec.key);
        snprintf(ttl, sizeof(ttl), "%d", cr->spec.ttl);
        if (cw != NULL && cw->store_delay_ms > 0) {
            delayed_store_t *d = calloc(1, sizeof(*d) + (size_t)hl + len);
            if (d == NULL)
                abort();
            d->cw = cw;
            d->keylen = ek;
            memcpy(d->key, entry_key, (size_t)ek);
            d->len = (size_t)hl + len;
            memcpy(d->value, value, d->len);
            memcpy(d->ttl, ttl, sizeof(ttl));
            d->entry.cb = on_store_delay;
            h2o_timeout_link(r->w->loop, &cw->store_delay, &d->entry);
        } else if (cw != NULL) {
            store(cw, entry_key, (size_t)ek, value, (size_t)hl + len, ttl);
        }
        free(value);

        sb = malloc(sizeof(*sb) + len);
        if (sb == NULL)
            abort();
        sb->refs = 1;
        sb->len = len;
        memcpy(sb->data, body, len);
    }
    /* Hand the result to every request that waited for this fill; a done
     * fill lingers briefly for misses that raced the store. */
    unsigned b = key_bucket(cr->flight_id);
    waiter_t *waiters = NULL;
    pthread_mutex_lock(&flights_lock);
    flight_t **pp = &flights[b];
    while (*pp != NULL && strcmp((*pp)->id, cr->flight_id) != 0)
        pp = &(*pp)->next;
    if (*pp != NULL) {
        flight_t *f = *pp;
        waiters = f->waiters;
        f->waiters = NULL;
        if (sb != NULL) {
            __atomic_add_fetch(&sb->refs, 1, __ATOMIC_RELAXED);
            f->body = sb;
            f->done_at_us = now_us();
        } else {
            *pp = f->next;
            free(f);
        }
    }
    pthread_mutex_unlock(&flights_lock);
    for (waiter_t *wt = waiters, *next; wt != NULL; wt = next) {
        next = wt->next;
        if (sb != NULL) {
            __atomic_add_fetch(&sb->refs, 1, __ATOMIC_RELAXED);
            wt->body = sb;
        }
        h2o_multithread_send_message(&wt->cw->receiver, &wt->msg);
    }
    body_release(sb);
}

/* Frees every lingering flight (at exit, after the workers have stopped). */
void cache_global_dispose(void)
{
    pthread_mutex_lock(&flights_lock);
    for (unsigned b = 0; b < FLIGHT_BUCKETS; b++)
        sweep_bucket(b, UINT64_MAX / 2);
    pthread_mutex_unlock(&flights_lock);
}

/* A waiter's worker: answer with the shared body, or query on its own. */
static void on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        waiter_t *wt = H2O_STRUCT_FROM_MEMBER(waiter_t, msg.link, messages->next);
        h2o_linklist_unlink(&wt->msg.link);
        struct rctx *r = wt->r;
        if (wt->body != NULL) {
            r->cache_result = "HIT";
            count(r, 0);
            jbuf_t body = {wt->body->data, wt->body->len, 0};
            reply_json(r, 200, &body);
            body_release(wt->body);
        } else {
            bypass(r, wt->query);
        }
        free(wt);
    }
}

/* ---- invalidation ----------------------------------------------------------------- */

/*
 * An invalidation that could not be made sure of (Redis down, refusing, or
 * not confirming replication) leaves entries that may outlive a committed
 * write. The whole process then bypasses the cache until it has set a new
 * epoch — which every entry's versions include — with the same guarantees.
 */
static int flushing; /* atomic: one epoch bump at a time */


static void flush_needed(void)
{
    if (!__atomic_exchange_n(&must_flush, 1, __ATOMIC_ACQ_REL))
        log_warn("cache: an invalidation failed; bypassing the cache until a full flush succeeds");
}

#define INVALIDATE_PATIENCE_US 1500000

typedef struct inval {
    struct rctx *r; /* NULL for the epoch bump */
    h2o_timeout_entry_t retry;
    uint64_t deadline_us;
    cache_worker_t *cw;
    int status;
    const char *ctype;
    char *body;
    size_t len;
    int ntags;
    int tried_del;
    char keys[CACHE_INVALIDATE_MAX][64];
} inval_t;

static int send_mset(inval_t *iv);
static void on_inval_retry(h2o_timeout_entry_t *entry);

static void inval_finish(inval_t *iv, int ok)
{
    if (iv->r == NULL) { /* the epoch bump */
        __atomic_store_n(&flushing, 0, __ATOMIC_RELEASE);
        if (ok) {
            __atomic_store_n(&must_flush, 0, __ATOMIC_RELEASE);
            log_info("cache: epoch bumped after a failed invalidation; cache in use again");
        }
        free(iv);
        return;
    }
    if (!ok && now_us() < iv->deadline_us) {
        /* Redis is failing over or briefly gone: the answer waits (up to
         * INVALIDATE_PATIENCE_US) so that the write is not acknowledged
         * while another instance could still serve the entry it replaced. */
        iv->tried_del = 0;
        iv->retry.cb = on_inval_retry;
        h2o_timeout_link(iv->r->w->loop, &iv->cw->retry_timeout, &iv->retry);
        return;
    }
    if (!ok)
        flush_needed();
    reply_body(iv->r, iv->status, iv->ctype, iv->body, iv->len);
}

static void on_inval_retry(h2o_timeout_entry_t *entry)
{
    inval_t *iv = H2O_STRUCT_FROM_MEMBER(inval_t, retry, entry);
    if (send_mset(iv) != 0)
        inval_finish(iv, 0);
}

/* WAIT: the versions must be on a replica before the write is answered, or
 * a failover could bring back the old ones (docs/cache.md). */
static void on_waited(void *arg, redisReply *reply, int err)
{
    inval_t *iv = arg;
    /* Fewer replicas than required — even none connected right now — is a
     * failure: a replica cut off for a moment may still be promoted. */
    inval_finish(iv, err == 0 && reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
                         reply->integer >= wait_replicas);
}

static void send_wait(inval_t *iv)
{
    char n[16], ms[16];
    snprintf(n, sizeof(n), "%d", wait_replicas);
    snprintf(ms, sizeof(ms), "%d", iv->cw->redis_timeout_ms / 2 > 0 ? iv->cw->redis_timeout_ms / 2 : 1);
    const char *argv[] = {"WAIT", n, ms};
    size_t lens[] = {4, strlen(n), strlen(ms)};
    if (redis_command(iv->cw->redis, iv->keys[0], strlen(iv->keys[0]), 3, argv, lens, on_waited, iv) != 0)
        inval_finish(iv, 0);
}

static void on_written(void *arg, redisReply *reply, int err);

/* Plan B when Redis refuses writes (OOM with noeviction): deleting the tag
 * keys is always allowed, and a missing version is a miss for everyone. */
static void send_del(inval_t *iv)
{
    const char *argv[1 + CACHE_INVALIDATE_MAX];
    size_t lens[1 + CACHE_INVALIDATE_MAX];
    argv[0] = "DEL", lens[0] = 3;
    for (int i = 0; i < iv->ntags; i++)
        argv[1 + i] = iv->keys[i], lens[1 + i] = strlen(iv->keys[i]);
    iv->tried_del = 1;
    if (redis_command(iv->cw->redis, iv->keys[0], strlen(iv->keys[0]), 1 + iv->ntags, argv, lens, on_written, iv) != 0)
        inval_finish(iv, 0);
}

static void on_written(void *arg, redisReply *reply, int err)
{
    inval_t *iv = arg;
    if (err != 0 || reply == NULL) {
        inval_finish(iv, 0);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (!iv->tried_del)
            send_del(iv);
        else
            inval_finish(iv, 0);
    } else if (wait_replicas > 0) {
        send_wait(iv);
    } else {
        inval_finish(iv, 1);
    }
}

/* MSET of every key to one new version: all tag keys share the {t} slot. */
static int send_mset(inval_t *iv)
{
    const char *argv[1 + 2 * CACHE_INVALIDATE_MAX];
    size_t lens[1 + 2 * CACHE_INVALIDATE_MAX];
    char ver[VERSION_MAX];
    new_version(ver);
    int argc = 1;
    argv[0] = "MSET", lens[0] = 4;
    for (int i = 0; i < iv->ntags; i++) {
        argv[argc] = iv->keys[i], lens[argc++] = strlen(iv->keys[i]);
        argv[argc] = ver, lens[argc++] = strlen(ver);
    }
    return redis_command(iv->cw->redis, iv->keys[0], strlen(iv->keys[0]), argc, argv, lens, on_written, iv);
}

void cache_invalidate_and_reply(struct rctx *r, const char *const *tags, int status, const char *ctype,
                                const char *body, size_t len)
{
    cache_worker_t *cw = cw_of(r->w);
    if (cw == NULL || tags[0] == NULL) {
        reply_body(r, status, ctype, body, len);
        return;
    }
    inval_t *iv = h2o_mem_alloc_pool(&r->req->pool, sizeof(*iv));
    memset(iv, 0, sizeof(*iv));
    iv->r = r;
    iv->cw = cw;
    iv->status = status;
    iv->ctype = ctype;
    iv->len = len;
    iv->body = h2o_mem_alloc_pool(&r->req->pool, len + 1);
    memcpy(iv->body, body, len);
    iv->deadline_us = now_us() + INVALIDATE_PATIENCE_US;
    for (; tags[iv->ntags] != NULL; iv->ntags++) {
        if (iv->ntags == CACHE_INVALIDATE_MAX)
            abort(); /* a programming error: more tags than any write has */
        snprintf(iv->keys[iv->ntags], sizeof(iv->keys[0]), "%s%s", TAG_PREFIX, tags[iv->ntags]);
    }
    if (send_mset(iv) != 0)
        inval_finish(iv, 0);
}

void cache_tick(worker_t *w)
{
    /* Once a second, one worker drops lingering fills nobody asked for. */
    static uint64_t last_sweep_us;
    uint64_t now = now_us(), last = __atomic_load_n(&last_sweep_us, __ATOMIC_RELAXED);
    if (now - last > 1000000 && __atomic_compare_exchange_n(&last_sweep_us, &last, now, 0, __ATOMIC_RELAXED,
                                                             __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&flights_lock);
        for (unsigned b = 0; b < FLIGHT_BUCKETS; b++)
            sweep_bucket(b, now);
        pthread_mutex_unlock(&flights_lock);
    }
    cache_worker_t *cw = cw_of(w);
    if (cw == NULL || !flush_pending() || !redis_is_up(cw->redis) ||
        __atomic_exchange_n(&flushing, 1, __ATOMIC_ACQ_REL))
        return;
    inval_t *iv = calloc(1, sizeof(*iv));
    if (iv == NULL)
        abort();
    iv->cw = cw;
    iv->ntags = 1;
    snprintf(iv->keys[0], sizeof(iv->keys[0]), "%s", EPOCH_KEY);
    if (send_mset(iv) != 0)
        inval_finish(iv, 0);
}
