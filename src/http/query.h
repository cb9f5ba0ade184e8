#ifndef MARKETD_HTTP_QUERY_H
#define MARKETD_HTTP_QUERY_H
/*
 * The query string: parsing (percent-decoding, `+` as space) and the typed
 * readers handlers use to validate parameters. Pure functions, fuzzed by
 * tests/fuzz/fuzz_query.c.
 */
#include <stdint.h>

#include "core/error.h"
#include "core/slice.h"

#define QUERY_MAX_PARAMS 32
#define VERR_MAX         16

typedef struct query_param {
    slice_t name;
    slice_t value;
} query_param_t;

typedef struct query {
    int count;
    query_param_t params[QUERY_MAX_PARAMS];
} query_t;

/* Validation errors gathered for one 422 (api.md: errors[].field/message). */
typedef struct verr {
    int count;
    struct {
        char field[48];
        char message[96];
    } items[VERR_MAX];
} verr_t;

/* Records that `field` is invalid; the first VERR_MAX errors are kept. */
void verr_add(verr_t *v, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Splits and decodes s[0..n) (without the leading '?') into `q`. Decoded
 * bytes go to `buf`, which must hold at least n bytes; `q` points into it.
 * Empty pairs ("a=1&&b=2") are skipped; a name without '=' has an empty
 * value. Returns 0, or MKD_EBADREQ for a malformed %-escape, a NUL byte, or
 * more than QUERY_MAX_PARAMS parameters.
 */
int query_parse(const char *s, size_t n, query_t *q, char *buf);

/* The value of `name`; NULL if absent. A name given twice is reported to `v`
 * and the first value is returned. */
const slice_t *query_get(const query_t *q, const char *name, verr_t *v);

/*
 * Typed readers. Each returns MKD_PRESENT (value stored in *out),
 * MKD_ABSENT (out untouched) or MKD_EINVAL (present but invalid, recorded in
 * `v` under `name`).
 */
int query_int(const query_t *q, const char *name, int64_t min, int64_t max, int64_t *out, verr_t *v);
/* An id: 1..INT64_MAX. */
int query_id(const query_t *q, const char *name, int64_t *out, verr_t *v);

/* `limit`: default `def`, values above `max` are clamped, < 1 or not a number
 * is an error. Returns the limit, or MKD_EINVAL when invalid. */
int query_limit(const query_t *q, int def, int max, verr_t *v);

/* Strict decimal: optional '-', 1..19 digits, no junk. 0 or MKD_EINVAL. */
int parse_int64(const char *s, size_t n, int64_t *out);
/* A path id: 1..INT64_MAX; 0 or MKD_EINVAL. */
int parse_id(slice_t s, int64_t *out);

#endif
