#ifndef MARKETD_CORE_RESOLVE_H
#define MARKETD_CORE_RESOLVE_H
/*
 * Host names resolved off the event loops (B5).
 *
 * getaddrinfo(3) blocks, and hiredis's redisAsyncConnect and libpq's
 * PQconnectStart call it inside their "non-blocking" connect functions. A
 * name whose DNS server does not answer then stops a whole worker's loop for
 * the resolver's timeout (5 s by default) on every reconnect attempt: this
 * is what Docker's embedded DNS does with a service name whose containers are
 * all stopped (it forwards the query upstream), so a Redis Cluster outage
 * turned into seconds of stalled loops per reconnect (issue 12's redis-down
 * drill: p99 1.5 s). Here names are resolved by one thread of their own and
 * connects are given numeric addresses.
 *
 * An answer is kept and handed out (rotating over the name's addresses, so
 * a seed name behind DNS round robin reaches each node in turn); a call made
 * more than RESOLVE_FRESH_MS after the last lookup started asks for a new
 * one in the background and meanwhile returns the previous answer: a
 * container restarted with a new address is found on the next attempt.
 */
#include <stddef.h>

#define RESOLVE_FRESH_MS 1000
#define RESOLVE_ADDR_MAX 46 /* INET6_ADDRSTRLEN */

/* Numeric names ("127.0.0.1", "::1") need no lookup. */
int resolve_is_numeric(const char *name);

/* Never blocks. Returns 1 with a numeric address of `name` in out; 0 while
 * the first lookup of `name` is under way (ask again later); -1 when the
 * last lookup failed (the reason in err). A numeric name is copied as is. */
int resolve_get(const char *name, char out[RESOLVE_ADDR_MAX], char *err, size_t errlen);

#endif
