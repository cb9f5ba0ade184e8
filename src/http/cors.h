#ifndef MARKETD_HTTP_CORS_H
#define MARKETD_HTTP_CORS_H
/*
 * CORS for browsers on other origins (CORS_ORIGINS, an allow-list of exact
 * origins; unset: no CORS header at all). The transport applies it to every
 * request before routing (server.c):
 *
 *  - an allowed Origin: every answer, errors included, carries
 *    Access-Control-Allow-Origin: <that origin> and
 *    Access-Control-Expose-Headers (CORS_EXPOSE_HEADERS); a preflight
 *    (OPTIONS with Access-Control-Request-Method) of a path the API serves
 *    is answered 204 with the path's methods, the requested headers that
 *    are allowed (CORS_ALLOW_HEADERS) and Access-Control-Max-Age;
 *  - another Origin: a preflight is refused (403, no CORS headers); any
 *    other request is served as usual, without CORS headers, so the
 *    browser hides the answer from the page;
 *  - with CORS_ORIGINS set, every answer varies by Origin (Vary: Origin).
 *
 * Tokens travel in Authorization, not cookies: no Allow-Credentials.
 */
#include <stddef.h>

#define CORS_EXPOSE_HEADERS "ETag, Location, Retry-After, X-Request-Id, X-Cache, Idempotent-Replayed"
#define CORS_MAX_AGE_S      "3600"

/* 1 when `origin` (len bytes) is one of the comma-separated origins of
 * `list` (spaces around commas ignored), compared byte for byte; 0 when not
 * or when list is NULL. Pure. */
int cors_origin_allowed(const char *list, const char *origin, size_t len);

/* Writes to `out` the names of an Access-Control-Request-Headers value that
 * a page may send (Authorization, Content-Type, Idempotency-Key,
 * If-None-Match, X-Request-Id; compared case-insensitively), in lower case,
 * ", "-separated, in the order requested, each once. Returns the length
 * written (0: none allowed); never more than outlen - 1, NUL-terminated. */
size_t cors_allowed_headers(const char *requested, size_t len, char *out, size_t outlen);

#endif
