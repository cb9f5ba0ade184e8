#ifndef MARKETD_API_THROTTLE_H
#define MARKETD_API_THROTTLE_H
/*
 * Login throttling per account (api.md "Conventions", issue 10): after
 * LOGIN_FAILURES_FREE failed logins for one email, that email waits before
 * its next attempt is even checked — LOGIN_BACKOFF_BASE_MS, doubled by every
 * further failure, at most LOGIN_BACKOFF_MAX_S — whatever the client's
 * address. Per-address limits are the edge proxy's (deploy/nginx).
 *
 * The account is a keyed hash of the normalised email (trimmed, case
 * folded), so an unknown email is throttled exactly like an existing one and
 * no raw email reaches Redis or memory. A success forgets the failures; so
 * does LOGIN_FAILURES_TTL without one.
 *
 * Where the state lives: in Redis when one is configured (every instance
 * sees the same counts), as two keys sharing a hash tag:
 *   lf:{<hash>}  failures, INCR, PEXPIRE LOGIN_FAILURES_TTL
 *   lb:{<hash>}  present while the account waits (SET PX <wait>); its PTTL
 *                is the Retry-After
 * and in a process-wide table in memory otherwise — and whenever Redis does
 * not answer (down, slow, full): a login never fails and never waits longer
 * than the cache's deadline because of Redis. The memory table is always
 * consulted too, so failures recorded while Redis was away still count.
 *
 * The loop never blocks: Redis is asynchronous, the table's lock is held
 * for a few probes.
 */
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#include "http/server.h"

#define THROTTLE_KEY_BYTES 16
#define THROTTLE_SLOTS     8192 /* memory table: accounts remembered at once */
#define THROTTLE_PROBES    8    /* slots looked at per account */

typedef struct throttle_policy {
    int free_failures;        /* failures before the first wait */
    int64_t base_ms;          /* the first wait */
    int64_t max_ms;           /* the longest wait */
    int64_t forget_ms;        /* failures are forgotten this long after the last one */
    unsigned char secret[32]; /* the hash key (derived from JWT_SECRET) */
} throttle_policy_t;

/* ---- pure ------------------------------------------------------------------ */

/* The account of an email: trims ASCII white space, folds case (ASCII and
 * Russian Cyrillic, as cache_fold_case), then a keyed BLAKE2b of 16 bytes. */
void throttle_account(const throttle_policy_t *p, const char *email, size_t len,
                      unsigned char out[THROTTLE_KEY_BYTES]);

/* The wait that the `failures`-th consecutive failure starts, in ms: 0 below
 * free_failures, then base, 2·base, 4·base, …, at most max_ms. */
int64_t throttle_backoff_ms(const throttle_policy_t *p, int64_t failures);

/* Retry-After in whole seconds for a wait of `ms` (> 0): rounded up, ≥ 1. */
int64_t throttle_retry_after_s(int64_t ms);

/* ---- the memory table (thread-safe; shared by the workers) ---------------- */

typedef struct throttle_entry {
    unsigned char key[THROTTLE_KEY_BYTES];
    uint32_t failures; /* 0: free slot */
    int64_t last_ms;   /* the last failure */
    int64_t until_ms;  /* the wait ends */
} throttle_entry_t;

/* Fixed size: an account lands in one of THROTTLE_PROBES slots after its
 * hash; when all are taken, the one whose last failure is oldest is
 * forgotten. Forgetting can only shorten a wait (never throttle anyone who
 * should not be), and an attacker who floods it with other emails to do so
 * still meets the edge's per-address limits. */
typedef struct throttle_table {
    pthread_mutex_t lock;
    throttle_entry_t e[THROTTLE_SLOTS];
} throttle_table_t;

void throttle_table_init(throttle_table_t *t);
/* ms the account must still wait at now_ms; 0 when it may try. */
int64_t throttle_table_wait(throttle_table_t *t, const throttle_policy_t *p,
                            const unsigned char key[THROTTLE_KEY_BYTES], int64_t now_ms);
/* Counts a failure at now_ms; returns the number of failures now held. */
int64_t throttle_table_fail(throttle_table_t *t, const throttle_policy_t *p,
                            const unsigned char key[THROTTLE_KEY_BYTES], int64_t now_ms);
/* Forgets the account's failures. */
void throttle_table_reset(throttle_table_t *t, const unsigned char key[THROTTLE_KEY_BYTES]);

/* ---- in a request ------------------------------------------------------------ */

/* From the configuration, before the workers start. */
void throttle_init(const config_t *cfg);
const throttle_policy_t *throttle_policy(void);

/* What a login waits for. The callbacks run exactly once, on w's loop,
 * possibly before the call returns. */
typedef void (*throttle_check_cb)(void *arg, int64_t wait_ms);
typedef void (*throttle_done_cb)(void *arg);

/* How long the account must still wait (0: check the password). */
void throttle_check(worker_t *w, const unsigned char key[THROTTLE_KEY_BYTES], throttle_check_cb cb,
                    void *arg);
/* Records a failed login; done runs once it is recorded (so that the next
 * attempt, on any worker or instance, sees it) or Redis gave up. */
void throttle_failed(worker_t *w, const unsigned char key[THROTTLE_KEY_BYTES], throttle_done_cb done,
                     void *arg);
/* Forgets the account's failures after a successful login; done as above. */
void throttle_succeeded(worker_t *w, const unsigned char key[THROTTLE_KEY_BYTES], throttle_done_cb done,
                        void *arg);

#endif
