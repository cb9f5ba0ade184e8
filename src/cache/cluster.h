#ifndef MARKETD_CACHE_CLUSTER_H
#define MARKETD_CACHE_CLUSTER_H
/*
 * The pure half of the Redis client (cache/redis.c): Redis Cluster key
 * slots, and the parsers for what the client reads from its configuration
 * and from the servers — "host:port" addresses, redis:// URLs, seed lists,
 * and -MOVED / -ASK redirections. No I/O and no hiredis here, so that unit
 * tests link these alone. Every parser takes {ptr, len} and never reads past
 * len (no NUL terminator needed); outputs are NUL-terminated copies.
 *
 * redis_key_slot (declared in cache/redis.h) is defined here too.
 */
#include <stddef.h>

#define REDIS_SLOTS 16384

/* CRC16/XMODEM (poly 0x1021, init 0, no reflection), as Redis Cluster uses
 * it: redis_crc16("123456789", 9) == 0x31C3. */
unsigned redis_crc16(const char *buf, size_t len);

typedef struct redis_addr {
    char host[256]; /* without IPv6 brackets; "" when the server sent none */
    int port;
} redis_addr_t;

/*
 * "host:port", "[v6addr]:port", or "host" (then `default_port`; pass 0 to
 * require a port). The port must be 1..65535. An empty host is accepted only
 * when `allow_empty_host` (Redis sends ":port" for "the node you asked").
 * Returns 0 or MKD_EINVAL.
 */
int redis_parse_addr(const char *s, size_t len, int default_port, int allow_empty_host, redis_addr_t *out);

typedef struct redis_url {
    redis_addr_t addr;
    char user[128];     /* ACL user name (Redis 6+), or "" */
    char password[256]; /* percent-decoded, or "" */
    int db;             /* 0 unless the URL has /db */
} redis_url_t;

/* "redis://[[user]:password@]host[:port][/db]" (port 6379 by default;
 * userinfo percent-decoded). Returns 0 or MKD_EINVAL (with a reason in err). */
int redis_parse_url(const char *s, size_t len, redis_url_t *out, char *err, size_t errlen);

/*
 * Splits "host:port,host:port,…" (spaces around entries allowed). Fills up to
 * `max` entries of `out`; returns how many, or MKD_EINVAL (reason in err)
 * when an entry is malformed, there is none, or there are more than `max`.
 */
int redis_parse_seeds(const char *s, size_t len, redis_addr_t *out, int max, char *err, size_t errlen);

enum { REDIS_REDIRECT_NONE = 0, REDIS_REDIRECT_MOVED, REDIS_REDIRECT_ASK };

/* An error reply's text "MOVED 3999 127.0.0.1:6381" / "ASK 3999 …": returns
 * REDIS_REDIRECT_MOVED/_ASK with *slot and *to filled (to->host may be ""),
 * or REDIS_REDIRECT_NONE for any other error or a malformed redirection. */
int redis_parse_redirect(const char *msg, size_t len, unsigned *slot, redis_addr_t *to);

#endif
