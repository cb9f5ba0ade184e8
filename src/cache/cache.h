#ifndef MARKETD_CACHE_CACHE_H
#define MARKETD_CACHE_CACHE_H
/*
 * The response cache in Redis (S9, S10, B2–B5), in keys, tags and bytes: it
 * knows nothing of requests. docs/cache.md has the key layout and the
 * argument for why it is never stale; in short:
 *
 *  - An entry is a rendered body stored under a key with the *versions* of
 *    its tags (cache/tags.h) read before the database was. A tag's version
 *    changes after every committed write to the data behind it.
 *  - cache_get fetches the entry and the current versions in one round
 *    trip; any difference is a miss, whose versions the caller passes to
 *    cache_put after reading the database. A fill that raced a write stores
 *    the version from before the write, so it is never served after it.
 *  - Redis down, slow or full: cache_get answers CACHE_BYPASS within the
 *    configured deadline and the caller reads the database (B5).
 *  - cache_invalidate changes versions after a write, and retries for a
 *    while before it gives up; when it gives up, the whole process bypasses
 *    the cache until it has changed the epoch, which every entry includes.
 *
 * One cache_worker_t per event loop; not thread-safe.
 */
#include <stddef.h>

#include "cache/tags.h"
#include "h2o.h"

#define CACHE_KEY_MAX     256
#define CACHE_VERSION_MAX 48

typedef struct cache_worker cache_worker_t;

typedef struct cache_options {
    const char *redis_url;       /* one Redis, or NULL */
    const char *cluster_nodes;   /* Redis Cluster seeds, or NULL */
    const char *password;        /* AUTH for cluster nodes */
    int timeout_ms;              /* longest wait for Redis */
    int wait_replicas;           /* replicas that must confirm an invalidation (WAIT) */
    const char *test_store_gate; /* tests only: stores wait while this file exists (docs/cache.md) */
    int lsn_versions;            /* read replicas in use: versions carry commit LSNs (below) */
} cache_options_t;

/* Process-wide: whether a Redis is configured at all. */
void cache_global_init(int enabled);

/* Sets a new epoch before the workers start (blocking, at most
 * `patience_ms`): no entry written before this start is served after it.
 * -1 if not done in time; the workers then bypass until their tick does. */
int cache_start(const cache_options_t *opt, int patience_ms);

/* Connects in the background. NULL when the cache is disabled or the
 * options are malformed (logged); every call below accepts NULL and then
 * behaves as "Redis down". */
cache_worker_t *cache_worker_create(h2o_loop_t *loop, const cache_options_t *opt);
void cache_worker_destroy(cache_worker_t *cw);

/* The versions an entry is valid for: the epoch's and its tags'. */
typedef struct cache_versions {
    int n;
    char v[1 + CACHE_ENTRY_TAGS][CACHE_VERSION_MAX];
} cache_versions_t;

typedef enum {
    CACHE_HIT,    /* body is the entry's */
    CACHE_MISS,   /* versions: what to store a fill under */
    CACHE_BYPASS, /* Redis down, slow, full or a tag unversioned: read, do not store */
} cache_result_t;

/* body/len valid during the callback only (HIT); versions only for MISS. */
typedef void (*cache_get_cb)(void *arg, cache_result_t result, const char *body, size_t len,
                             const cache_versions_t *versions);

/* The state of one lookup, owned by the caller until its callback has run
 * (a request-pool allocation suits). Opaque. */
typedef struct cache_get_op {
    cache_worker_t *cw;
    cache_get_cb cb;
    void *arg;
    char key[CACHE_KEY_MAX];
    int ntags;
    char tags[CACHE_ENTRY_TAGS][CACHE_TAG_MAX];
    int pending; /* replies still expected */
    int failed;
    int missing_tags;
    cache_versions_t versions;
    int creating_index[1 + CACHE_ENTRY_TAGS]; /* versions being created (SET NX GET) */
    char *entry;                              /* the GET reply (malloc'd copy) */
    size_t entry_len;
} cache_get_op_t;

/*
 * Looks `key` up with the versions of `tags` (at most CACHE_ENTRY_TAGS).
 * The callback runs exactly once, possibly before this returns (Redis
 * down). Entries close to the end of their TTL answer MISS to a few
 * requests, so that one refreshes them while the others still hit
 * (probabilistic early expiration).
 */
void cache_get(cache_worker_t *cw, cache_get_op_t *op, const char *key, const cache_tags_t *tags,
               cache_get_cb cb, void *arg);

/* Stores a fill read after `versions` were (fire and forget). */
void cache_put(cache_worker_t *cw, const char *key, const cache_versions_t *versions, int ttl_s,
               const char *body, size_t len, uint64_t fill_ms);

/* The state of one invalidation; owned by the caller until `done` ran. */
typedef struct cache_inval_op {
    cache_worker_t *cw;
    void (*done)(void *arg);
    void *arg;
    int is_epoch;
    int tried_del;
    uint64_t lsn;       /* > 0: versions carry it (lsn_versions) */
    uint64_t wanted_at; /* an epoch with an LSN: the wish it answers */
    uint64_t deadline_us;
    int waited_for_redis; /* it had a patience to wait out (metrics) */
    h2o_timeout_entry_t retry;
    cache_tags_t keys; /* "{t}:<tag>" */
} cache_inval_op_t;

/*
 * After a committed write: changes the versions of `tags`, so that every
 * entry depending on them is a miss from now on, then runs done(arg)
 * exactly once (possibly before this returns). Never fails: when Redis
 * cannot confirm within its patience, this process bypasses the cache until
 * it has bumped the epoch (cache_tick) — so the caller may always answer.
 *
 * With lsn_versions (read replicas, docs/cache.md "Replicas"): `lsn` is a
 * primary WAL position at or after the write's commit; each new version
 * carries the larger of it and the LSN its predecessor carried (one Lua
 * script, so concurrent writers cannot lower it). lsn 0 (unknown) also
 * changes the epoch, to a version without an LSN.
 */
void cache_invalidate(cache_worker_t *cw, cache_inval_op_t *op, const cache_tags_t *tags, uint64_t lsn,
                      void (*done)(void *arg), void *arg);

/*
 * Read replicas: the WAL position a fill stored under `v` must have read
 * (the largest LSN its versions carry) into *lsn; 0 when it may read any
 * replica. -1 when the epoch (v[0]) carries no LSN: the fill must read the
 * primary, and the caller should call cache_epoch_lsn_wanted. Versions
 * without an LSN (created by a reader for a missing tag key) are covered by
 * the epoch's. Pure.
 */
int cache_versions_lsn(const cache_versions_t *v, uint64_t *lsn);

/* Invalidations that gave up, process-wide: after waiting out their
 * patience, or at once (Redis down, or invalidations already failing for
 * longer than the patience: then writes stop waiting until one succeeds). */
void cache_get_inval_failures(uint64_t *waited, uint64_t *at_once);

/* Asks for a new epoch carrying a primary LSN read after now (process-wide). */
void cache_epoch_lsn_wanted(void);

/* From one worker's tick: `lsn` is the primary's WAL position from a query
 * sent at `sent_at_us`. Sets a new epoch carrying it when one is wanted and
 * the query was sent after the wish (so the LSN covers every commit the
 * epoch without LSN may hide). */
void cache_epoch_lsn_offer(cache_worker_t *cw, uint64_t lsn, uint64_t sent_at_us);

/* Housekeeping from the worker's 100 ms tick: retries a pending epoch bump. */
void cache_tick(cache_worker_t *cw);

/* The worker's Redis client, for the few other users of Redis on this loop
 * (api/throttle.c); NULL when cw is NULL. Owned by cw. */
struct redis;
struct redis *cache_worker_redis(cache_worker_t *cw);

/* "up" | "down" | "disabled", for /readyz. */
const char *cache_state(const cache_worker_t *cw);

/* Lower-cases ASCII and Russian Cyrillic (А–Я, Ё) of UTF-8 text in place, so
 * that keys differing only in case share one entry. Pure. */
void cache_fold_case(char *s, size_t n);

/* Parses an entry's header ("mkd1 <fresh_until_ms> <fill_ms> <n> <v>…\n").
 * Returns the offset of the body, or -1 when malformed. The bytes come from
 * Redis and are untrusted (fuzzed). Pure. */
long cache_parse_entry(const char *v, size_t n, uint64_t *fresh_until_ms, uint64_t *fill_ms,
                       cache_versions_t *ver);

#endif
