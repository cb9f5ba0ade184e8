#ifndef MARKETD_CORE_TIMEFMT_H
#define MARKETD_CORE_TIMEFMT_H
/*
 * Timestamps cross three borders: PostgreSQL's text output of
 * `timestamp` (we always select `x AT TIME ZONE 'UTC'`, so no session
 * TimeZone is involved), RFC 3339 in JSON, and microseconds since the Unix
 * epoch inside cursors.
 */
#include <stddef.h>
#include <stdint.h>

/* The range every function here accepts and produces: years 1..9999. */
#define TS_MIN_US (-62135596800LL * 1000000)
#define TS_MAX_US (253402300799LL * 1000000 + 999999)

/* Longest output of the formatters below, with the NUL. */
#define TS_BUFSZ 40

/* "2026-11-26 05:21:48[.123456]" (UTC, as PostgreSQL prints a timestamp)
 * → µs since epoch. Returns 0 or MKD_EINVAL. */
int ts_parse_pg(const char *s, size_t n, int64_t *us);
/* µs → "2026-11-26 05:21:48.123456+00", a literal PostgreSQL reads exactly.
 * Returns its length. */
size_t ts_format_pg(int64_t us, char out[TS_BUFSZ]);
/* µs → "2026-11-26T05:21:48.123456Z" (fraction omitted when zero). */
size_t ts_format_rfc3339(int64_t us, char out[TS_BUFSZ]);
/* RFC 3339 ("2026-11-26T05:21:48Z", fractions and ±hh:mm allowed) or a date
 * ("2026-11-26" = 00:00 UTC) → µs. Returns 0 or MKD_EINVAL. */
int ts_parse_rfc3339(const char *s, size_t n, int64_t *us);

#endif
