#ifndef MARKETD_CACHE_REDIS_H
#define MARKETD_CACHE_REDIS_H
/*
 * An asynchronous Redis client on one worker's h2o event loop: hiredis's
 * async API (redisAsyncContext) driven by the loop through a small adapter,
 * talking either to one Redis (REDIS_URL) or to a Redis Cluster
 * (REDIS_CLUSTER_NODES) with slot routing done here: CRC16 key slots,
 * MOVED/ASK redirections, topology refresh (Debian's hiredis 0.14 has no
 * cluster client). One redis_t per worker; not thread-safe.
 *
 * Every command has a deadline (`timeout_ms`): a slow or dead server costs a
 * request at most that long, then the callback runs with MKD_EUNAVAILABLE
 * and the caller serves from the database (B5). Reconnection is automatic
 * (with backoff); while no connection is up, commands fail at once.
 *
 * Deadlines and the liveness check (a connection silent for a second is
 * dropped) count only time in which a reply could have been read: from the
 * command's write, without the event loop's own lateness (a stall, a loop
 * behind 10,000 connections), and only after reading what already waits in
 * the socket. While the loop keeps up, the bounds above hold as stated; a
 * late loop is never taken for a slow server.
 */
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "h2o.h"

typedef struct redis redis_t;

/*
 * Runs exactly once per accepted command. err == 0: `reply` is the server's
 * reply (which may itself be REDIS_REPLY_ERROR — e.g. OOM when Redis is
 * full — the caller decides). err < 0 (MKD_EUNAVAILABLE: timeout, no
 * connection, connection lost, too many redirections): reply is NULL.
 * `reply` is owned by the client and valid only during the callback.
 */
typedef void (*redis_cb)(void *arg, redisReply *reply, int err);

typedef struct redis_options {
    const char *url;           /* "redis://[:password@]host:port[/db]" or NULL */
    const char *cluster_nodes; /* "host:port,host:port,…" seeds, or NULL */
    const char *password;      /* for cluster nodes (AUTH), or NULL */
    int timeout_ms;            /* per-command deadline, e.g. 50 */
    int connect_timeout_ms;    /* e.g. 500 */
} redis_options_t;

/* Creates the client and starts connecting in the background. Returns NULL
 * (and a message in err) only for malformed options. */
redis_t *redis_create(h2o_loop_t *loop, const redis_options_t *opt, char *err, size_t errlen);
/* Fails every pending command (callbacks run with MKD_EUNAVAILABLE) and
 * closes every connection. */
void redis_destroy(redis_t *r);

/*
 * Sends one command (argv/argvlen as for redisAsyncCommandArgv). In cluster
 * mode, `slot_key` (usually argv[1]) picks the node; all keys of a
 * multi-key command must share a slot (use {hash tags}). Returns 0 when
 * accepted (cb will run exactly once, never before this returns), or
 * MKD_EUNAVAILABLE when no connection is up (cb never runs).
 */
int redis_command(redis_t *r, const char *slot_key, size_t slot_key_len, int argc, const char **argv,
                  const size_t *argvlen, redis_cb cb, void *arg);

/* 1 when the (or every known master's) connection is up. For /readyz. */
int redis_is_up(const redis_t *r);
/* How many times the client went from up to not up (a connection lost, a
 * cluster master unreachable): a cache that was away must not trust what
 * it stored before (src/cache/cache.c, "lost Redis"). */
unsigned redis_outages(const redis_t *r);
/* How long the client has not been up (ms of loop time), 0 while up. */
uint64_t redis_down_for_ms(const redis_t *r);

/* The Redis Cluster hash slot of a key (CRC16/XMODEM of the key or of its
 * {hash tag}, mod 16384). Pure; exposed for tests. */
unsigned redis_key_slot(const char *key, size_t len);

#endif
