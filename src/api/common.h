#ifndef MARKETD_API_COMMON_H
#define MARKETD_API_COMMON_H
/* Small helpers every handler uses: path ids, queries that answer their own
 * refusal, and rendering PostgreSQL text values as JSON. */
#include <libpq-fe.h>
#include <stdint.h>

#include "core/json.h"
#include "db/pool.h"
#include "http/reply.h"

/* Parses path parameter `idx` as an id; on failure answers 404 naming
 * `what` ("product") and returns -1. */
int api_path_id(rctx_t *r, int idx, const char *what, int64_t *out);

/* Sends a query on the worker's primary pool; if the pool refuses it,
 * answers 503 and returns -1 (the callback will not run). */
int api_query(rctx_t *r, const db_stmt_t *st, const char *const *params, db_result_cb cb);

/* Like api_query, but first looks in the cache (cache/cache.h): a hit
 * answers at once; a miss runs the query (params are copied) and the 200
 * that its callback renders is stored under `spec`. */
struct cache_spec;
void api_cached_query(rctx_t *r, const struct cache_spec *spec, const db_stmt_t *st, const char *const *params,
                      db_result_cb cb);

/* Answers a failed query (err < 0) of a callback. */
void api_db_failed(rctx_t *r, int err, PGresult *res, const char *what);

/* JSON of column c of row i: text → string, NULL → null. */
void api_json_text(jbuf_t *b, const PGresult *res, int i, int c);
/* A number PostgreSQL printed (int8, numeric) is already valid JSON. */
void api_json_num(jbuf_t *b, const PGresult *res, int i, int c);
/* A `timestamp` column (selected AT TIME ZONE 'UTC') → RFC 3339 string. */
void api_json_ts(jbuf_t *b, const PGresult *res, int i, int c);
/* A text[] column ({a,b}) → JSON array of strings, each prefixed. */
void api_json_text_array(jbuf_t *b, const PGresult *res, int i, int c, const char *prefix);

/* The columns of a product row, from `p` (products) and `s` (its seller),
 * shared by lists, the detail and the writes; the detail and the writes add
 * p.description after them. */
#define API_PRODUCT_COLS                                                                                              \
    "p.id, p.seller_id, s.name, s.rating, p.category_id, p.title, p.price, p.currency, p.stock, p.city_id, "     \
    "p.district_id, p.images, p.status, p.created_at AT TIME ZONE 'UTC', p.updated_at AT TIME ZONE 'UTC'"
/* Their order: */
enum api_product_col {
    C_ID,
    C_SELLER_ID,
    C_SELLER_NAME,
    C_SELLER_RATING,
    C_CATEGORY_ID,
    C_TITLE,
    C_PRICE,
    C_CURRENCY,
    C_STOCK,
    C_CITY_ID,
    C_DISTRICT_ID,
    C_IMAGES,
    C_STATUS,
    C_CREATED_AT,
    C_UPDATED_AT,
    C_DESCRIPTION,
};

/* A product (api.md "Product") from row i of `res`, whose columns from
 * col0 on are PRODUCT_COLS of products.c (then the description when
 * with_description). The one renderer of products, so a write's answer is
 * byte-identical to the next GET. */
void api_render_product(rctx_t *r, jbuf_t *b, const PGresult *res, int i, int col0, int with_description);

/* The cursor text of a row's (key, id) */
void api_json_cursor(jbuf_t *b, int kind, int64_t key, int64_t id);

int64_t api_int(const PGresult *res, int i, int c);

/* The request's Content-Type value (NULL/0 when absent). */
const char *api_content_type(rctx_t *r);
size_t api_content_type_len(rctx_t *r);

/* Checks the bearer token: 0 with *user_id set, or answers 401 and returns
 * -1. (api/auth.c) */
int api_authenticate(rctx_t *r, int64_t *user_id);

#endif
