#include "cache/cache.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "cache/redis.h"
#include "core/error.h"
#include "core/log.h"

/*
 * Key layout (docs/cache.md):
 *   c1:<key>     the entry: "mkd1 <fresh_until_ms> <fill_ms> <n> <v0> … <vn-1>\n<body>"
 *   {t}:epoch    the version of everything
 *   {t}:<tag>    the version of one tag
 * Versions are "<µs since epoch, hex>-<random hex>": only equality matters,
 * and a lost tag key is re-created with a fresh version, so losing data
 * (a restart, a failover) can only cause misses, never stale hits. All tag
 * keys share the hash tag {t}, so one MGET reads them on a cluster too; tag
 * keys have no TTL, so with maxmemory-policy volatile-lru Redis evicts
 * entries, never versions.
 */

#define TAG_PREFIX         "{t}:"
#define STORE_GATE_POLL_MS 10
#define EPOCH_KEY          "{t}:epoch"
#define ENTRY_PREFIX       "c1:"

struct cache_worker {
    redis_t *redis;
    h2o_loop_t *loop;
    int timeout_ms;
    int wait_replicas;
    /* Test hook (CACHE_TEST_STORE_GATE): stores wait while this file
     * exists, to put a write between a fill's database read and its store
     * on purpose. */
    const char *store_gate;
    int lsn_versions;
    h2o_timeout_t store_delay;
    h2o_timeout_t retry_timeout; /* 100 ms: retries of an invalidation */
    unsigned outages_seen;       /* redis_outages() when last looked at */
};

static int cache_enabled;
static int must_flush;            /* atomic, see "invalidation" below */
static int flushing;              /* atomic: one epoch bump at a time, process-wide */
static uint64_t epoch_lsn_wanted; /* atomic: µs since which an epoch with an LSN is wanted; 0 none */

static int flush_pending(void)
{
    return __atomic_load_n(&must_flush, __ATOMIC_ACQUIRE);
}

static uint64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

static void new_version(char out[CACHE_VERSION_MAX])
{
    snprintf(out, CACHE_VERSION_MAX, "%llx-%08x", (unsigned long long)now_us(), randombytes_random());
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

/* ---- set-up ------------------------------------------------------------------ */

void cache_global_init(int enabled)
{
    cache_enabled = enabled;
}

/*
 * Start-up: a previous process may have died between a commit and its
 * invalidation (the "must flush" flag lived in its memory). Nothing
 * durable says whether it did, so every start sets a new epoch before the
 * workers listen: entries from before the start can never be served. The
 * bump goes through the same path as any flush (MSET, then WAIT for
 * CACHE_WAIT_REPLICAS) on a loop of its own, bounded by `patience_ms`. If
 * Redis is unreachable the flag stays set: the workers bypass the cache
 * until their tick has bumped the epoch (cache_tick).
 */
int cache_start(const cache_options_t *opt, int patience_ms)
{
    if (!cache_enabled)
        return 0;
    __atomic_store_n(&must_flush, 1, __ATOMIC_RELEASE);
    h2o_evloop_t *loop = h2o_evloop_create();
    cache_worker_t *cw = cache_worker_create(loop, opt);
    uint64_t deadline = now_us() + (uint64_t)patience_ms * 1000;
    while (cw != NULL && flush_pending() && now_us() < deadline) {
        cache_tick(cw);
        h2o_evloop_run(loop, 10);
    }
    /* A bump still in flight finishes (or fails) inside the destroy. */
    cache_worker_destroy(cw);
    h2o_evloop_destroy(loop);
    int done = !flush_pending();
    if (done)
        log_info("cache: new epoch set at start-up");
    else
        log_warn("cache: could not set a new epoch within %d ms of start-up; bypassing the cache until "
                 "it is set",
                 patience_ms);
    return done ? 0 : -1;
}

cache_worker_t *cache_worker_create(h2o_loop_t *loop, const cache_options_t *opt)
{
    if (!cache_enabled)
        return NULL;
    cache_worker_t *cw = calloc(1, sizeof(*cw));
    if (cw == NULL)
        abort();
    redis_options_t ro = {
        .url = opt->redis_url,
        .cluster_nodes = opt->cluster_nodes,
        .password = opt->password,
        .timeout_ms = opt->timeout_ms,
        .connect_timeout_ms = 1000,
    };
    char err[256];
    cw->redis = redis_create(loop, &ro, err, sizeof(err));
    if (cw->redis == NULL) {
        log_error("cache disabled: %s", err);
        free(cw);
        return NULL;
    }
    cw->loop = loop;
    cw->timeout_ms = opt->timeout_ms;
    cw->wait_replicas = opt->wait_replicas;
    cw->store_gate = opt->test_store_gate;
    cw->lsn_versions = opt->lsn_versions;
    h2o_timeout_init(loop, &cw->retry_timeout, 100);
    if (cw->store_gate != NULL)
        h2o_timeout_init(loop, &cw->store_delay, STORE_GATE_POLL_MS);
    return cw;
}

typedef struct delayed_store {
    h2o_timeout_entry_t entry;
    cache_worker_t *cw;
    size_t keylen, len;
    char ttl[16];
    char key[CACHE_KEY_MAX + 8];
    char value[];
} delayed_store_t;

void cache_worker_destroy(cache_worker_t *cw)
{
    if (cw == NULL)
        return;
    redis_destroy(cw->redis);
    h2o_timeout_dispose(cw->loop, &cw->retry_timeout);
    if (cw->store_gate != NULL) {
        /* Stores still waiting are dropped (test hook only). */
        while (!h2o_linklist_is_empty(&cw->store_delay._entries)) {
            h2o_timeout_entry_t *e =
                H2O_STRUCT_FROM_MEMBER(h2o_timeout_entry_t, _link, cw->store_delay._entries.next);
            h2o_timeout_unlink(e);
            free(H2O_STRUCT_FROM_MEMBER(delayed_store_t, entry, e));
        }
        h2o_timeout_dispose(cw->loop, &cw->store_delay);
    }
    free(cw);
}

redis_t *cache_worker_redis(cache_worker_t *cw)
{
    return cw != NULL ? cw->redis : NULL;
}

const char *cache_state(const cache_worker_t *cw)
{
    if (cw == NULL)
        return cache_enabled ? "down" : "disabled";
    return redis_is_up(cw->redis) && !flush_pending() ? "up" : "down";
}

/* ---- reading ------------------------------------------------------------------- */

/* A decimal of 1..20 digits that fits in 64 bits; 0 or -1. */
static int parse_u64(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    if (n < 1 || n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

long cache_parse_entry(const char *v, size_t n, uint64_t *fresh_until_ms, uint64_t *fill_ms,
                       cache_versions_t *ver)
{
    if (v == NULL || n < 5 || memcmp(v, "mkd1 ", 5) != 0)
        return -1;
    const char *end = memchr(v, '\n', n);
    if (end == NULL)
        return -1;
    char head[512];
    size_t hl = (size_t)(end - v);
    /* Bytes from Redis are untrusted: a NUL would cut a word short. */
    if (hl >= sizeof(head) || memchr(v, '\0', hl) != NULL)
        return -1;
    memcpy(head, v, hl);
    head[hl] = '\0';
    char *save = NULL, *tok = strtok_r(head + 5, " ", &save);
    if (tok == NULL || parse_u64(tok, fresh_until_ms) != 0)
        return -1;
    if ((tok = strtok_r(NULL, " ", &save)) == NULL || parse_u64(tok, fill_ms) != 0)
        return -1;
    /* The count: one digit, 1 .. 1 + CACHE_ENTRY_TAGS. */
    if ((tok = strtok_r(NULL, " ", &save)) == NULL || tok[0] < '1' || tok[0] > '0' + 1 + CACHE_ENTRY_TAGS ||
        tok[1] != '\0')
        return -1;
    int count = tok[0] - '0';
    for (int i = 0; i < count; i++) {
        if ((tok = strtok_r(NULL, " ", &save)) == NULL)
            return -1;
        size_t tl = strlen(tok);
        if (tl >= CACHE_VERSION_MAX)
            return -1;
        memcpy(ver->v[i], tok, tl + 1);
    }
    if (strtok_r(NULL, " ", &save) != NULL)
        return -1; /* more versions than counted: another format */
    ver->n = count;
    return (long)(hl + 1);
}

static void on_stored(void *arg, redisReply *reply, int err)
{
    (void)arg;
    if (err == 0 && reply != NULL && reply->type == REDIS_REPLY_ERROR)
        log_debug("cache: store refused: %s", reply->str); /* e.g. OOM: Redis full */
}

static void lookup_finish(cache_get_op_t *op, cache_result_t result, const char *body, size_t len)
{
    cache_get_cb cb = op->cb;
    void *arg = op->arg;
    char *entry = op->entry;
    op->entry = NULL;
    cb(arg, result, body, len, result == CACHE_MISS ? &op->versions : NULL);
    free(entry);
}

/* A tag never written (or lost) gets a version now, with SET NX GET: the
 * reply is the version that is current after the command — ours, or a
 * concurrent writer's that won — so the lookup continues as a miss whose
 * versions were read before the database is (docs/cache.md): the first view
 * of a product is cached, not only the second. */
static void on_version_created(void *arg, redisReply *reply, int err)
{
    cache_get_op_t *op = arg;
    int i = op->creating_index[op->pending - 1];
    if (err != 0 || reply == NULL) {
        op->failed = 1;
    } else if (reply->type == REDIS_REPLY_STRING && reply->len > 0 && reply->len < CACHE_VERSION_MAX) {
        memcpy(op->versions.v[i], reply->str, (size_t)reply->len); /* a writer's version won */
        op->versions.v[i][reply->len] = '\0';
    } else if (reply->type != REDIS_REPLY_NIL) {
        op->failed = 1; /* e.g. OOM: no version, no fill */
    }
    if (--op->pending > 0)
        return;
    if (op->failed)
        lookup_finish(op, CACHE_BYPASS, NULL, 0);
    else
        lookup_finish(op, CACHE_MISS, NULL, 0);
}

static void create_versions(cache_get_op_t *op)
{
    int n = 0;
    char keys[1 + CACHE_ENTRY_TAGS][64];
    for (int i = 0; i < op->versions.n; i++) {
        if (op->versions.v[i][0] != '\0')
            continue;
        snprintf(keys[n], sizeof(keys[n]), "%s%s", TAG_PREFIX, i == 0 ? "epoch" : op->tags[i - 1]);
        new_version(op->versions.v[i]); /* ours, unless the reply names another */
        op->creating_index[n++] = i;
    }
    /* Replies come back in order; pending counts down, so the k-th reply
     * (pending == n - k) belongs to creating_index[n - k - 1]: send in
     * reverse to make reply k match index k. */
    op->pending = n;
    op->failed = 0;
    for (int k = n - 1; k >= 0; k--) {
        int i = op->creating_index[k];
        const char *argv[] = {"SET", keys[k], op->versions.v[i], "NX", "GET"};
        size_t lens[] = {3, strlen(keys[k]), strlen(op->versions.v[i]), 2, 3};
        if (redis_command(op->cw->redis, keys[k], strlen(keys[k]), 5, argv, lens, on_version_created, op) !=
            0) {
            /* Not sent: count it as failed without a callback. */
            op->failed = 1;
            op->pending--;
        }
    }
    if (op->pending == 0)
        lookup_finish(op, CACHE_BYPASS, NULL, 0);
}

static void on_lookup_done(cache_get_op_t *op)
{
    if (op->failed) {
        lookup_finish(op, CACHE_BYPASS, NULL, 0);
        return;
    }
    if (op->missing_tags) {
        create_versions(op);
        return;
    }
    if (op->entry != NULL) {
        uint64_t fresh_until, fill_ms;
        cache_versions_t stored;
        long off = cache_parse_entry(op->entry, op->entry_len, &fresh_until, &fill_ms, &stored);
        int valid = off >= 0 && stored.n == op->versions.n;
        for (int i = 0; valid && i < stored.n; i++)
            valid = strcmp(stored.v[i], op->versions.v[i]) == 0;
        if (valid) {
            /* Probabilistic early expiration (XFetch): the closer to the end
             * of its TTL and the slower its fill, the likelier one request
             * refreshes it while everyone else still gets hits. */
            double u = (randombytes_random() + 1.0) / 4294967297.0;
            uint64_t now_ms = now_us() / 1000;
            int refresh = (double)now_ms - (double)fill_ms * 1.0 * log(u) >= (double)fresh_until;
            if (!refresh) {
                lookup_finish(op, CACHE_HIT, op->entry + off, op->entry_len - (size_t)off);
                return;
            }
        }
    }
    lookup_finish(op, CACHE_MISS, NULL, 0);
}

static void on_entry(void *arg, redisReply *reply, int err)
{
    cache_get_op_t *op = arg;
    if (err != 0 || reply == NULL || (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_NIL)) {
        op->failed = 1;
    } else if (reply->type == REDIS_REPLY_STRING) {
        op->entry = malloc((size_t)reply->len + 1);
        if (op->entry == NULL)
            abort();
        memcpy(op->entry, reply->str, (size_t)reply->len);
        op->entry[reply->len] = '\0';
        op->entry_len = (size_t)reply->len;
    }
    if (--op->pending == 0)
        on_lookup_done(op);
}

static void on_versions(void *arg, redisReply *reply, int err)
{
    cache_get_op_t *op = arg;
    if (err != 0 || reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
        (int)reply->elements != op->versions.n) {
        op->failed = 1;
    } else {
        for (size_t i = 0; i < reply->elements; i++) {
            redisReply *e = reply->element[i];
            if (e->type == REDIS_REPLY_STRING && e->len > 0 && e->len < CACHE_VERSION_MAX) {
                memcpy(op->versions.v[i], e->str, (size_t)e->len);
                op->versions.v[i][e->len] = '\0';
            } else {
                op->versions.v[i][0] = '\0';
                op->missing_tags = 1;
            }
        }
    }
    if (--op->pending == 0)
        on_lookup_done(op);
}

static void watch_outages(cache_worker_t *cw);

void cache_get(cache_worker_t *cw, cache_get_op_t *op, const char *key, const cache_tags_t *tags,
               cache_get_cb cb, void *arg)
{
    memset(op, 0, sizeof(*op));
    op->cw = cw;
    op->cb = cb;
    op->arg = arg;
    if (cw != NULL)
        watch_outages(cw); /* not only at the tick: a reconnect may come first */
    if (cw == NULL || flush_pending() || key[0] == '\0' || tags->n > CACHE_ENTRY_TAGS ||
        !redis_is_up(cw->redis)) {
        lookup_finish(op, CACHE_BYPASS, NULL, 0);
        return;
    }
    snprintf(op->key, sizeof(op->key), "%s", key);
    op->ntags = tags->n;
    for (int i = 0; i < tags->n; i++)
        memcpy(op->tags[i], tags->tag[i], CACHE_TAG_MAX);
    op->versions.n = 1 + tags->n;

    char entry_key[CACHE_KEY_MAX + 8];
    int ek = snprintf(entry_key, sizeof(entry_key), "%s%s", ENTRY_PREFIX, op->key);
    const char *get_argv[] = {"GET", entry_key};
    size_t get_lens[] = {3, (size_t)ek};

    char tag_keys[1 + CACHE_ENTRY_TAGS][64];
    const char *mget_argv[2 + CACHE_ENTRY_TAGS];
    size_t mget_lens[2 + CACHE_ENTRY_TAGS];
    mget_argv[0] = "MGET";
    mget_lens[0] = 4;
    for (int i = 0; i < op->versions.n; i++) {
        snprintf(tag_keys[i], sizeof(tag_keys[i]), "%s%s", TAG_PREFIX, i == 0 ? "epoch" : op->tags[i - 1]);
        mget_argv[1 + i] = tag_keys[i];
        mget_lens[1 + i] = strlen(tag_keys[i]);
    }
    /* Both go out at once: one round trip (two nodes on a cluster). */
    op->pending = 2;
    if (redis_command(cw->redis, entry_key, (size_t)ek, 2, get_argv, get_lens, on_entry, op) != 0) {
        lookup_finish(op, CACHE_BYPASS, NULL, 0);
        return;
    }
    if (redis_command(cw->redis, tag_keys[0], strlen(tag_keys[0]), 1 + op->versions.n, mget_argv, mget_lens,
                      on_versions, op) != 0) {
        op->failed = 1;
        op->pending--; /* on_entry will finish the lookup (and bypass) */
    }
}

/* A version's LSN: "<µs>-<random>-<lsn>" (hex); -1 when it has none. */
static int version_lsn(const char *v, uint64_t *lsn)
{
    const char *a = strchr(v, '-');
    const char *b = a != NULL ? strchr(a + 1, '-') : NULL;
    if (b == NULL || b[1] == '\0' || strlen(b + 1) > 16)
        return -1;
    uint64_t x = 0;
    for (const char *p = b + 1; *p != '\0'; p++) {
        int d = (*p >= '0' && *p <= '9') ? *p - '0' : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        x = x * 16 + (uint64_t)d;
    }
    *lsn = x;
    return 0;
}

int cache_versions_lsn(const cache_versions_t *v, uint64_t *lsn)
{
    uint64_t max = 0, x;
    if (v->n < 1 || version_lsn(v->v[0], &max) != 0)
        return -1;
    for (int i = 1; i < v->n; i++)
        if (version_lsn(v->v[i], &x) == 0 && x > max)
            max = x;
    *lsn = max;
    return 0;
}

void cache_epoch_lsn_wanted(void)
{
    uint64_t zero = 0;
    __atomic_compare_exchange_n(&epoch_lsn_wanted, &zero, now_us(), 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* ---- storing ------------------------------------------------------------------- */

static void store(cache_worker_t *cw, const char *key, size_t keylen, const char *value, size_t len,
                  const char *ttl)
{
    const char *argv[] = {"SET", key, value, "EX", ttl};
    size_t lens[] = {3, keylen, len, 2, strlen(ttl)};
    redis_command(cw->redis, key, keylen, 5, argv, lens, on_stored, NULL);
}

static void on_store_delay(h2o_timeout_entry_t *entry)
{
    delayed_store_t *d = H2O_STRUCT_FROM_MEMBER(delayed_store_t, entry, entry);
    /* Test hook: a stat() per poll, on a test server only. */
    if (access(d->cw->store_gate, F_OK) == 0) {
        h2o_timeout_link(d->cw->loop, &d->cw->store_delay, &d->entry);
        return;
    }
    store(d->cw, d->key, d->keylen, d->value, d->len, d->ttl);
    free(d);
}

void cache_put(cache_worker_t *cw, const char *key, const cache_versions_t *versions, int ttl_s,
               const char *body, size_t len, uint64_t fill_ms)
{
    if (cw == NULL || versions == NULL || versions->n < 1)
        return;
    /* The value: header with the versions read *before* the database
     * (docs/cache.md), then the body. */
    char head[512];
    int hl = snprintf(head, sizeof(head), "mkd1 %llu %llu %d",
                      (unsigned long long)(now_us() / 1000 + (uint64_t)ttl_s * 1000),
                      (unsigned long long)fill_ms, versions->n);
    for (int i = 0; i < versions->n && hl < (int)sizeof(head) - CACHE_VERSION_MAX - 2; i++)
        hl += snprintf(head + hl, sizeof(head) - (size_t)hl, " %s", versions->v[i]);
    head[hl++] = '\n';
    char entry_key[CACHE_KEY_MAX + 8], ttl[16];
    int ek = snprintf(entry_key, sizeof(entry_key), "%s%s", ENTRY_PREFIX, key);
    snprintf(ttl, sizeof(ttl), "%d", ttl_s);
    size_t vlen = (size_t)hl + len;
    if (cw->store_gate != NULL) {
        delayed_store_t *d = calloc(1, sizeof(*d) + vlen);
        if (d == NULL)
            abort();
        d->cw = cw;
        d->keylen = (size_t)ek;
        memcpy(d->key, entry_key, (size_t)ek);
        d->len = vlen;
        memcpy(d->value, head, (size_t)hl);
        memcpy(d->value + hl, body, len);
        memcpy(d->ttl, ttl, sizeof(ttl));
        d->entry.cb = on_store_delay;
        h2o_timeout_link(cw->loop, &cw->store_delay, &d->entry);
        return;
    }
    char *value = malloc(vlen);
    if (value == NULL)
        abort();
    memcpy(value, head, (size_t)hl);
    memcpy(value + hl, body, len);
    store(cw, entry_key, (size_t)ek, value, vlen, ttl);
    free(value);
}

/* ---- invalidation ----------------------------------------------------------------- */

/*
 * An invalidation that could not be made sure of (Redis down, refusing, or
 * not confirming replication) leaves entries that may outlive a committed
 * write. The whole process then bypasses the cache until it has set a new
 * epoch — which every entry's versions include — with the same guarantees.
 */
static void flush_needed(void)
{
    if (!__atomic_exchange_n(&must_flush, 1, __ATOMIC_ACQ_REL))
        log_warn("cache: an invalidation failed; bypassing the cache until a full flush succeeds");
}

#define INVALIDATE_PATIENCE_US 1500000

/* Atomic, process-wide: when an invalidation first gave up after its
 * patience with none succeeding since (0: none failing). Once that is
 * INVALIDATE_OUTAGE_US ago — longer than a failover takes — writes stop
 * waiting for Redis: it answers but refuses (a cluster that lost its slots
 * or its replicas, WAIT never satisfied), so waiting only made every write
 * 1.5 s late (the compose drills after a Redis restart ran at p99
 * 1.6-2.3 s), and the flush covers what it would have protected, exactly
 * as for a Redis that has been down longer than the patience. Sooner, a
 * failover may be under way, and waiting lets the writes behind it land. */
#define INVALIDATE_OUTAGE_US 10000000
static uint64_t inval_failing_since_us;
static uint64_t inval_gave_up_waited, inval_gave_up_at_once; /* atomic counters (metrics) */

void cache_get_inval_failures(uint64_t *waited, uint64_t *at_once)
{
    *waited = __atomic_load_n(&inval_gave_up_waited, __ATOMIC_RELAXED);
    *at_once = __atomic_load_n(&inval_gave_up_at_once, __ATOMIC_RELAXED);
}

static int send_versions(cache_inval_op_t *op);
static void on_inval_retry(h2o_timeout_entry_t *entry);

static void inval_finish(cache_inval_op_t *op, int ok)
{
    if (op->is_epoch) {
        __atomic_store_n(&flushing, 0, __ATOMIC_RELEASE);
        if (ok)
            __atomic_store_n(&inval_failing_since_us, 0, __ATOMIC_RELEASE);
        if (ok && op->lsn > 0) {
            uint64_t w = op->wanted_at;
            __atomic_compare_exchange_n(&epoch_lsn_wanted, &w, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
            log_info("cache: new epoch carrying primary LSN %llx; fills may read replicas again",
                     (unsigned long long)op->lsn);
        }
        if (ok && flush_pending()) {
            __atomic_store_n(&must_flush, 0, __ATOMIC_RELEASE);
            log_info("cache: new epoch set; cache in use again");
        }
        free(op);
        return;
    }
    if (ok && __atomic_exchange_n(&inval_failing_since_us, 0, __ATOMIC_ACQ_REL) != 0)
        log_info("cache: an invalidation succeeded; writes wait for Redis again when it falters");
    if (!ok && now_us() < op->deadline_us) {
        /* Redis is failing over or briefly gone: the answer waits (up to
         * INVALIDATE_PATIENCE_US) so that the write is not acknowledged
         * while another instance could still serve the entry it replaced. */
        op->tried_del = 0;
        op->retry.cb = on_inval_retry;
        h2o_timeout_link(op->cw->loop, &op->cw->retry_timeout, &op->retry);
        return;
    }
    if (!ok) {
        uint64_t zero = 0;
        if (op->waited_for_redis) {
            __atomic_add_fetch(&inval_gave_up_waited, 1, __ATOMIC_RELAXED);
            if (__atomic_compare_exchange_n(&inval_failing_since_us, &zero, now_us(), 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
                log_warn("cache: an invalidation failed for %d ms; if none succeeds within %d s, writes stop "
                         "waiting for Redis until one does",
                         INVALIDATE_PATIENCE_US / 1000, INVALIDATE_OUTAGE_US / 1000000);
        } else {
            __atomic_add_fetch(&inval_gave_up_at_once, 1, __ATOMIC_RELAXED);
        }
        flush_needed();
    }
    op->done(op->arg);
}

static void on_inval_retry(h2o_timeout_entry_t *entry)
{
    cache_inval_op_t *op = H2O_STRUCT_FROM_MEMBER(cache_inval_op_t, retry, entry);
    if (send_versions(op) != 0)
        inval_finish(op, 0);
}

/* WAIT: the versions must be on a replica before the write is answered, or
 * a failover could bring back the old ones (docs/cache.md). */
static void on_waited(void *arg, redisReply *reply, int err)
{
    cache_inval_op_t *op = arg;
    /* Fewer replicas than required — even none connected right now — is a
     * failure: a replica cut off for a moment may still be promoted. */
    inval_finish(op, err == 0 && reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
                         reply->integer >= op->cw->wait_replicas);
}

static void send_wait(cache_inval_op_t *op)
{
    char n[16], ms[16];
    snprintf(n, sizeof(n), "%d", op->cw->wait_replicas);
    snprintf(ms, sizeof(ms), "%d", op->cw->timeout_ms / 2 > 0 ? op->cw->timeout_ms / 2 : 1);
    const char *argv[] = {"WAIT", n, ms};
    size_t lens[] = {4, strlen(n), strlen(ms)};
    const char *k = op->keys.tag[0];
    if (redis_command(op->cw->redis, k, strlen(k), 3, argv, lens, on_waited, op) != 0)
        inval_finish(op, 0);
}

static void on_written(void *arg, redisReply *reply, int err);

/* Plan B when Redis refuses writes (OOM with noeviction): deleting the tag
 * keys is always allowed, and a missing version is a miss for everyone. */
static void send_del(cache_inval_op_t *op)
{
    const char *argv[2 + CACHE_TAGS_MAX];
    size_t lens[2 + CACHE_TAGS_MAX];
    argv[0] = "DEL", lens[0] = 3;
    int argc = 1;
    for (int i = 0; i < op->keys.n; i++)
        argv[argc] = op->keys.tag[i], lens[argc++] = strlen(op->keys.tag[i]);
    /* With replicas, a deleted tag key would be re-created by a reader
     * without an LSN, i.e. covered by the epoch's — which this write may
     * be newer than: the epoch goes too (docs/cache.md "Replicas"). */
    if (op->cw->lsn_versions && !op->is_epoch)
        argv[argc] = EPOCH_KEY, lens[argc++] = strlen(EPOCH_KEY);
    op->tried_del = 1;
    const char *k = op->keys.tag[0];
    if (redis_command(op->cw->redis, k, strlen(k), argc, argv, lens, on_written, op) != 0)
        inval_finish(op, 0);
}

static void on_written(void *arg, redisReply *reply, int err)
{
    cache_inval_op_t *op = arg;
    if (err != 0 || reply == NULL) {
        inval_finish(op, 0);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (!op->tried_del)
            send_del(op);
        else
            inval_finish(op, 0);
    } else if (op->cw->wait_replicas > 0) {
        send_wait(op);
    } else {
        inval_finish(op, 1);
    }
}

/* MSET of every key to one new version: all tag keys share the {t} slot. */
static int send_mset(cache_inval_op_t *op)
{
    const char *argv[1 + 2 * CACHE_TAGS_MAX];
    size_t lens[1 + 2 * CACHE_TAGS_MAX];
    char ver[CACHE_VERSION_MAX];
    new_version(ver);
    int argc = 1;
    argv[0] = "MSET", lens[0] = 4;
    for (int i = 0; i < op->keys.n; i++) {
        argv[argc] = op->keys.tag[i], lens[argc++] = strlen(op->keys.tag[i]);
        argv[argc] = ver, lens[argc++] = strlen(ver);
    }
    const char *k = op->keys.tag[0];
    return redis_command(op->cw->redis, k, strlen(k), argc, argv, lens, on_written, op);
}

/* Each key gets "<new version>-<max(lsn, the LSN of its current version)>":
 * atomic in Redis, so two writers finishing out of order cannot lower a
 * tag's LSN. LSNs are lower-case hex without leading zeros: longer is
 * larger, equal lengths compare as strings. */
static const char lsn_script[] = "local l = ARGV[2]\n"
                                 "for _, k in ipairs(KEYS) do\n"
                                 "  local m = l\n"
                                 "  local o = redis.call('GET', k)\n"
                                 "  if o then\n"
                                 "    local ol = string.match(o, '^%x+%-%x+%-(%x+)$')\n"
                                 "    if ol and (#ol > #m or (#ol == #m and ol > m)) then m = ol end\n"
                                 "  end\n"
                                 "  redis.call('SET', k, ARGV[1] .. '-' .. m)\n"
                                 "end\n"
                                 "return 1\n";

static int send_eval(cache_inval_op_t *op)
{
    const char *argv[5 + CACHE_TAGS_MAX];
    size_t lens[5 + CACHE_TAGS_MAX];
    char ver[CACHE_VERSION_MAX], lsn[24], nkeys[8];
    new_version(ver);
    snprintf(lsn, sizeof(lsn), "%llx", (unsigned long long)op->lsn);
    snprintf(nkeys, sizeof(nkeys), "%d", op->keys.n);
    int argc = 0;
    argv[argc] = "EVAL", lens[argc++] = 4;
    argv[argc] = lsn_script, lens[argc++] = sizeof(lsn_script) - 1;
    argv[argc] = nkeys, lens[argc++] = strlen(nkeys);
    for (int i = 0; i < op->keys.n; i++)
        argv[argc] = op->keys.tag[i], lens[argc++] = strlen(op->keys.tag[i]);
    argv[argc] = ver, lens[argc++] = strlen(ver);
    argv[argc] = lsn, lens[argc++] = strlen(lsn);
    const char *k = op->keys.tag[0];
    return redis_command(op->cw->redis, k, strlen(k), argc, argv, lens, on_written, op);
}

static int send_versions(cache_inval_op_t *op)
{
    return op->lsn > 0 ? send_eval(op) : send_mset(op);
}

void cache_invalidate(cache_worker_t *cw, cache_inval_op_t *op, const cache_tags_t *tags, uint64_t lsn,
                      void (*done)(void *arg), void *arg)
{
    memset(op, 0, sizeof(*op));
    op->cw = cw;
    op->done = done;
    op->arg = arg;
    if (cw == NULL || tags->n == 0) {
        /* No cache (disabled, or its options were malformed: no worker
         * stores entries either): nothing can be stale. */
        done(arg);
        return;
    }
    op->deadline_us = now_us() + INVALIDATE_PATIENCE_US;
    uint64_t failing_since = __atomic_load_n(&inval_failing_since_us, __ATOMIC_ACQUIRE);
    if (redis_down_for_ms(cw->redis) * 1000 >= INVALIDATE_PATIENCE_US ||
        (failing_since != 0 && now_us() - failing_since >= INVALIDATE_OUTAGE_US))
        /* Redis has been away longer than the patience, or invalidations
         * have failed for longer than a failover takes: an outage. Waiting
         * would only delay the answer (a write took 1.5 s in the compose
         * redis-down drill); the flush below covers it. */
        op->deadline_us = 0;
    op->waited_for_redis = op->deadline_us != 0;
    if (cw->lsn_versions && lsn == 0) {
        /* Replicas, but the write's LSN is unknown (the primary went away
         * after the commit): a new epoch without an LSN sends every fill to
         * the primary until an epoch with a later LSN is set. */
        snprintf(op->keys.tag[0], CACHE_TAG_MAX, "%s", EPOCH_KEY);
        op->keys.n = 1;
        cache_epoch_lsn_wanted();
    } else {
        for (int i = 0; i < tags->n; i++)
            snprintf(op->keys.tag[i], CACHE_TAG_MAX, "%s%.*s", TAG_PREFIX, CACHE_TAG_MAX - 5, tags->tag[i]);
        op->keys.n = tags->n;
        op->lsn = cw->lsn_versions ? lsn : 0;
    }
    if (send_versions(op) != 0)
        inval_finish(op, 0);
}

/* A new operation that sets {t}:epoch (freed by inval_finish). */
static cache_inval_op_t *epoch_op(cache_worker_t *cw)
{
    cache_inval_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        abort();
    op->cw = cw;
    op->is_epoch = 1;
    op->keys.n = 1;
    snprintf(op->keys.tag[0], CACHE_TAG_MAX, "%s", EPOCH_KEY);
    return op;
}

void cache_epoch_lsn_offer(cache_worker_t *cw, uint64_t lsn, uint64_t sent_at_us)
{
    uint64_t wanted = __atomic_load_n(&epoch_lsn_wanted, __ATOMIC_ACQUIRE);
    if (cw == NULL || !cw->lsn_versions || wanted == 0 || lsn == 0 || sent_at_us <= wanted ||
        !redis_is_up(cw->redis) || __atomic_exchange_n(&flushing, 1, __ATOMIC_ACQ_REL))
        return;
    cache_inval_op_t *op = epoch_op(cw);
    op->lsn = lsn;
    op->wanted_at = wanted;
    if (send_eval(op) != 0)
        inval_finish(op, 0);
}

/*
 * Lost Redis. While this worker could not reach Redis, another instance may
 * have written and failed to invalidate (it answers after
 * INVALIDATE_PATIENCE_US and flushes once Redis is back — but its flush may
 * come after this worker reconnects). So a worker that lost Redis trusts no
 * entry again until a new epoch is set after the loss: the process bypasses
 * the cache and bumps the epoch as soon as Redis answers. A failover or
 * outage thus costs one cold start (measured: bench-overload (b)/(c)) rather
 * than a window in which an entry older than an acknowledged write is
 * served (B2, B3).
 */
static void watch_outages(cache_worker_t *cw)
{
    unsigned n = redis_outages(cw->redis);
    if (n != cw->outages_seen) {
        cw->outages_seen = n;
        if (!__atomic_exchange_n(&must_flush, 1, __ATOMIC_ACQ_REL))
            log_warn("cache: lost Redis; bypassing the cache until a new epoch is set once it is back");
    }
}

void cache_tick(cache_worker_t *cw)
{
    if (cw == NULL)
        return;
    watch_outages(cw);
    if (!flush_pending() || !redis_is_up(cw->redis) || __atomic_exchange_n(&flushing, 1, __ATOMIC_ACQ_REL))
        return;
    cache_inval_op_t *op = epoch_op(cw);
    if (send_mset(op) != 0)
        inval_finish(op, 0);
}
