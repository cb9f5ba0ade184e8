#include "api/outage.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* ---- the store ---------------------------------------------------------------------------- */

typedef struct entry {
    struct entry *hnext;         /* hash chain */
    struct entry *older, *newer; /* recency list */
    flight_body_t *body;
    uint64_t expires_us;
    size_t cost; /* bytes charged against the bound */
    char label[OUTAGE_STAMP_MAX];
    char key[];
} entry_t;

#define STORE_BUCKETS 16384

static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t *buckets[STORE_BUCKETS];
static entry_t *newest, *oldest;
static size_t max_bytes, used_bytes, nentries;
static uint64_t last_asked_us;
static outage_store_stats_t counts; /* hits, stale, stored, evicted */

static unsigned bucket_of(const char *key)
{
    unsigned h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % STORE_BUCKETS;
}

static void unlink_recency(entry_t *e)
{
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        oldest = e->newer;
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        newest = e->older;
    e->older = e->newer = NULL;
}

static void link_newest(entry_t *e)
{
    e->older = newest;
    e->newer = NULL;
    if (newest != NULL)
        newest->newer = e;
    newest = e;
    if (oldest == NULL)
        oldest = e;
}

/* Removes e from its chain and the list and frees it (lock held). */
static void drop(entry_t *e)
{
    for (entry_t **pp = &buckets[bucket_of(e->key)]; *pp != NULL; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    unlink_recency(e);
    used_bytes -= e->cost;
    nentries--;
    flight_body_release(e->body);
    free(e);
}

static entry_t *find(const char *key)
{
    for (entry_t *e = buckets[bucket_of(key)]; e != NULL; e = e->hnext)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void drop_all(void)
{
    while (oldest != NULL)
        drop(oldest);
}

void outage_store_init(size_t bytes)
{
    pthread_mutex_lock(&store_lock);
    drop_all();
    max_bytes = bytes;
    memset(&counts, 0, sizeof(counts));
    pthread_mutex_unlock(&store_lock);
}

flight_body_t *outage_store_get(const char *key, char label[OUTAGE_STAMP_MAX], uint64_t now_us)
{
    flight_body_t *body = NULL;
    pthread_mutex_lock(&store_lock);
    last_asked_us = now_us;
    entry_t *e = max_bytes > 0 ? find(key) : NULL;
    if (e != NULL && now_us >= e->expires_us) {
        drop(e);
        e = NULL;
    }
    if (e != NULL) {
        unlink_recency(e);
        link_newest(e);
        __atomic_add_fetch(&e->body->refs, 1, __ATOMIC_RELAXED);
        body = e->body;
        memcpy(label, e->label, OUTAGE_STAMP_MAX);
    }
    pthread_mutex_unlock(&store_lock);
    return body;
}

void outage_store_put(const char *key, const char *label, const char *data, size_t len, int ttl_s,
                      uint64_t now_us)
{
    size_t klen = strlen(key), llen = strlen(label);
    size_t cost = sizeof(entry_t) + klen + 1 + sizeof(flight_body_t) + len;
    if (llen == 0 || llen >= OUTAGE_STAMP_MAX || ttl_s <= 0)
        return;
    pthread_mutex_lock(&store_lock);
    int fits = cost <= max_bytes / 8; /* off, or one body would crowd out the rest */
    pthread_mutex_unlock(&store_lock);
    if (!fits)
        return;

    /* Allocated outside the lock: the other worker's lookups need not wait. */
    entry_t *e = calloc(1, sizeof(*e) + klen + 1);
    if (e == NULL)
        abort();
    memcpy(e->key, key, klen + 1);
    memcpy(e->label, label, llen + 1);
    e->body = flight_body_new(data, len);
    e->cost = cost;
    e->expires_us = now_us + (uint64_t)ttl_s * 1000000;

    pthread_mutex_lock(&store_lock);
    entry_t *old = find(key);
    if (old != NULL)
        drop(old);
    while (used_bytes + cost > max_bytes && oldest != NULL) {
        drop(oldest);
        counts.evicted++;
    }
    unsigned h = bucket_of(key);
    e->hnext = buckets[h];
    buckets[h] = e;
    link_newest(e);
    used_bytes += cost;
    nentries++;
    counts.stored++;
    pthread_mutex_unlock(&store_lock);
}

void outage_store_sweep(uint64_t now_us)
{
    pthread_mutex_lock(&store_lock);
    if (nentries > 0 && now_us - last_asked_us > OUTAGE_IDLE_US) {
        log_info("outage store: unused for %llu s; dropping %zu entries (%zu bytes)",
                 (unsigned long long)(OUTAGE_IDLE_US / 1000000), nentries, used_bytes);
        drop_all();
    }
    pthread_mutex_unlock(&store_lock);
}

void outage_store_dispose(void)
{
    pthread_mutex_lock(&store_lock);
    drop_all();
    pthread_mutex_unlock(&store_lock);
}

void outage_store_get_stats(outage_store_stats_t *st)
{
    pthread_mutex_lock(&store_lock);
    *st = counts;
    st->entries = nentries;
    st->bytes = used_bytes;
    pthread_mutex_unlock(&store_lock);
}

void outage_store_count_hit(int hit)
{
    pthread_mutex_lock(&store_lock);
    if (hit)
        counts.hits++;
    else
        counts.stale++;
    pthread_mutex_unlock(&store_lock);
}

/* ---- probes -------------------------------------------------------------------------------- */

const db_stmt_t *outage_register_stmt(void)
{
    /* The snapshot of the probe's own statement: which transactions it
     * sees as committed. */
    return db_stmt_register("SELECT pg_current_snapshot()::text", 0);
}

static void send_probe(outage_prober_t *p);

static void on_delay(h2o_timeout_entry_t *entry)
{
    outage_prober_t *p = H2O_STRUCT_FROM_MEMBER(outage_prober_t, entry, entry);
    if (!p->in_flight)
        send_probe(p);
}

void outage_prober_init(outage_prober_t *p, h2o_loop_t *loop, db_pool_t *pool, const db_stmt_t *stmt)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->pool = pool;
    p->stmt = stmt;
    h2o_timeout_init(loop, &p->delay, OUTAGE_PROBE_INTERVAL_MS);
    p->entry.cb = on_delay;
}

static void wake(outage_prober_t *p, outage_waiter_t *list, const char *stamp)
{
    for (outage_waiter_t *w = list, *next; w != NULL; w = next) {
        next = w->next;
        __atomic_store_n(&p->nwaiting, p->nwaiting - 1, __ATOMIC_RELAXED);
        w->cb(w, stamp);
    }
}

/* Sends now, or when the pace allows; a probe in flight sends the next one
 * when it ends. */
static void kick(outage_prober_t *p, uint64_t now_us)
{
    if (p->in_flight || h2o_timeout_is_linked(&p->entry))
        return;
    if (now_us - p->last_sent_us >= (uint64_t)OUTAGE_PROBE_INTERVAL_MS * 1000)
        send_probe(p);
    else
        h2o_timeout_link(p->loop, &p->delay, &p->entry);
}

static void on_probe(void *arg, PGresult *res, int err)
{
    outage_prober_t *p = arg;
    outage_waiter_t *sent = p->sent;
    p->sent = NULL;
    p->in_flight = 0;
    const char *stamp = NULL;
    if (err == 0 && PQntuples(res) == 1 && PQgetlength(res, 0, 0) < OUTAGE_STAMP_MAX) {
        memcpy(p->stamp, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0) + 1);
        stamp = p->stamp;
    }
    wake(p, sent, stamp);
    if (p->waiting != NULL)
        kick(p, h2o_now(p->loop) * 1000);
}

static void send_probe(outage_prober_t *p)
{
    if (h2o_timeout_is_linked(&p->entry))
        h2o_timeout_unlink(&p->entry);
    p->sent = p->waiting;
    p->waiting = NULL;
    p->in_flight = 1;
    p->last_sent_us = h2o_now(p->loop) * 1000;
    __atomic_store_n(&p->probes, p->probes + 1, __ATOMIC_RELAXED);
    if (db_pool_query(p->pool, p->stmt, NULL, on_probe, p) != 0) {
        outage_waiter_t *sent = p->sent;
        p->sent = NULL;
        p->in_flight = 0;
        wake(p, sent, NULL);
    }
}

void outage_probe_wait(outage_prober_t *p, outage_waiter_t *w)
{
    w->next = p->waiting;
    p->waiting = w;
    __atomic_store_n(&p->nwaiting, p->nwaiting + 1, __ATOMIC_RELAXED);
    kick(p, h2o_now(p->loop) * 1000);
}

int outage_label(outage_prober_t *p, char out[OUTAGE_STAMP_MAX])
{
    if (p->stamp[0] == '\0') {
        kick(p, h2o_now(p->loop) * 1000);
        return -1;
    }
    memcpy(out, p->stamp, OUTAGE_STAMP_MAX);
    return 0;
}

void outage_prober_dispose(outage_prober_t *p)
{
    if (h2o_timeout_is_linked(&p->entry))
        h2o_timeout_unlink(&p->entry);
    h2o_timeout_dispose(p->loop, &p->delay);
    outage_waiter_t *w = p->waiting;
    p->waiting = NULL;
    wake(p, w, NULL);
}
