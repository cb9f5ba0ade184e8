#ifndef MARKETD_CACHE_CACHE_H
#define MARKETD_CACHE_CACHE_H
/*
 * The response cache of cacheable GETs (S9, S10, B2–B5), in Redis.
 * docs/cache.md has the key layout and the argument for why it is never
 * stale; in short:
 *
 *  - An entry is the rendered body of one normalised request, stored with
 *    the *versions* of its tags read before the database was. A tag
 *    ("product:42", "products:city:3", "reference", …) is a key whose value
 *    changes after every committed write to the data behind it.
 *  - A read fetches the entry and the current versions in one round trip;
 *    any difference is a miss. A fill that raced a write stored the version
 *    from before the write, so it can never be served after it.
 *  - Concurrent misses of one key in this process wait for a single fill
 *    (B4); entries near the end of their TTL are refreshed early by one
 *    request (probabilistic early expiration).
 *  - Redis down, slow or full: the request is served from the database with
 *    X-Cache: BYPASS after at most CACHE_TIMEOUT_MS (B5).
 */
#include <stdint.h>

#include "h2o.h"

struct rctx;
struct worker;

#define CACHE_MAX_TAGS 4
#define CACHE_KEY_MAX 256
#define CACHE_INVALIDATE_MAX 64 /* tags one write may change (an order: 50 products + 2) */

typedef struct cache_spec {
    char key[CACHE_KEY_MAX]; /* normalised request, see cache_key_* */
    int ttl;                 /* seconds */
    int ntags;
    char tags[CACHE_MAX_TAGS][48];
} cache_spec_t;

/* Process-wide set-up: whether a Redis is configured, and how many replicas
 * must confirm an invalidation (WAIT) before a write is answered. */
void cache_global_init(int enabled, int replicas_to_wait_for);

/* Frees what the process-wide single-flight table still holds (at exit). */
void cache_global_dispose(void);

/* Per worker: connects to Redis per the configuration (or stays disabled),
 * registers the worker's message receiver. */
void cache_worker_init(struct worker *w);
void cache_worker_dispose(struct worker *w);

/*
 * Answers r from the cache (HIT), or runs `query(r)` — the handler's own
 * database path, which ends in reply_json — as the one fill of this key in
 * the process (MISS) or without the cache (BYPASS). The 200 body that
 * query renders is stored by reply_json through cache_store.
 */
void cache_serve(struct rctx *r, const cache_spec_t *spec, void (*query)(struct rctx *r));

/* Called by reply_json / reply_* for a request that is a fill: stores a 200
 * body (and hands it to the waiters), or releases the waiters on any other
 * status. */
void cache_fill_done(struct rctx *r, int status, const char *body, size_t len, const char *etag, size_t etag_len);

/*
 * After a committed write: changes the versions of `tags` (NULL-terminated,
 * at most CACHE_INVALIDATE_MAX) so that every entry depending on them is a miss from now on,
 * and only then answers (status, content type, body — copied), so the
 * writer's next read cannot find the old entry (B2). Never fails the
 * request: when Redis cannot be reached, this instance bypasses the cache
 * until it has bumped the epoch (cache_tick), which invalidates everything.
 */
void cache_invalidate_and_reply(struct rctx *r, const char *const *tags, int status, const char *ctype,
                                const char *body, size_t len);

/* Housekeeping from the worker's 100 ms tick: retries a pending epoch bump. */
void cache_tick(struct worker *w);

/* Builds tag names. */
void cache_tag(char out[48], const char *prefix, int64_t id);

/* "up" | "down" | "disabled", for /readyz. */
const char *cache_state(struct worker *w);

/* Lower-cases ASCII and Russian Cyrillic (А–Я, Ё) of UTF-8 text in place, so
 * that `q` differing only in case shares one entry. Pure; for tests. */
void cache_fold_case(char *s, size_t n);

#endif
