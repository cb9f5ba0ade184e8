#ifndef MARKETD_HTTP_BODY_H
#define MARKETD_HTTP_BODY_H
/*
 * JSON request bodies: parsed by jansson (never by hand) and read field by
 * field with validation into a verr_t (api.md: 400 for a body that is not a
 * JSON object, 415 for the wrong content type, 422 naming each bad field).
 */
#include <jansson.h>
#include <stdint.h>

#include "http/query.h"

/*
 * Parses `body` as a JSON object. Returns the object (caller json_decref's),
 * or NULL with *err = MKD_EBADREQ (not JSON / not an object / duplicate
 * keys / nesting deeper than 16; a number too large to hold is not an
 * error, see body_out_of_range) or MKD_EMEDIATYPE (`content_type` is not
 * application/json). `detail` receives a message.
 */
json_t *body_parse(const char *content_type, size_t ct_len, const char *body, size_t len, int *err,
                   char *detail, size_t detail_len);

/* A number outside the range jansson holds (an integer outside int64, a
 * real beyond double) does not fail body_parse: it reads as a marker value
 * for which this returns 1, and which every reader refuses under its
 * field's name (api.md: a value out of range → 422, not 400). A handler
 * reading a value without the readers sees a string and refuses it as the
 * wrong type. */
int body_out_of_range(const json_t *j);

/* Readers: MKD_PRESENT (valid, stored), MKD_ABSENT (or null when null_ok),
 * MKD_EINVAL (recorded in v under `field`). Strings must be valid UTF-8
 * without NUL; lengths are in characters (code points). */
int body_string(json_t *obj, const char *key, const char *field, size_t min_chars, size_t max_chars,
                const char **out, verr_t *v);
int body_int(json_t *obj, const char *key, const char *field, int64_t min, int64_t max, int64_t *out,
             verr_t *v);
/* null_ok: JSON null counts as absent. */
int body_id(json_t *obj, const char *key, const char *field, int null_ok, int64_t *out, int *is_null,
            verr_t *v);

/* Records "required" for `field` when a reader returned MKD_ABSENT. */
void body_require(int rc, const char *field, verr_t *v);

/* Every key of obj must be in the NULL-terminated `allowed` list; others are
 * reported as "unknown field". */
void body_only(json_t *obj, const char *const *allowed, verr_t *v);

#endif
