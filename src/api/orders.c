/* Orders (api.md "Orders", S6, B6). The transactions themselves are SQL
 * functions (migrations/0002_orders_logic.sql, 0005_outcomes.sql,
 * 0007_hardening.sql): one round trip each, row locks in id order,
 * conditional stock updates, and the order's JSON rendered in the same
 * transaction so an idempotent replay is exact. They return a domain outcome; this file validates, calls them
 * and maps the outcome to an answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/fields.h"
#include "api/order_request.h"
#include "api/render.h"
#include "core/error.h"
#include "core/timefmt.h"
#include "http/body.h"

static const db_stmt_t *st_place, *st_get, *st_transition;
static const db_stmt_t *st_list;

static const char *const statuses[] = {"new", "confirmed", "shipped", "delivered", "cancelled", NULL};

/* GET /orders: marketd_order_page (migrations/0009_order_docs.sql) runs
 * the page under force_generic_plan, its two statements (buyer, seller)
 * planned once per connection and pruned at executor start, and answers
 * each order's stored document (orders.doc, or marketd_order_json when it
 * is NULL). Prepared on the root of the partitioned table, the statement
 * was planned on every execution: the plan cache kept preferring the
 * pruned custom plan (docs/indexes.md O1). An absent filter is a NULL. */
#define LIST_SQL                                                                                             \
    "SELECT p.id, p.created_us, p.doc FROM marketd_order_page($1::int8, $2::bool, $3::text,"                 \
    " $4::timestamptz, $5::timestamptz, $6::timestamptz, $7::int8, $8::int4) p"
enum { L_USER, L_SELLER, L_STATUS, L_FROM, L_TO, L_AFTER_AT, L_AFTER_ID, L_LIMIT, L_NPARAMS };

/* The answer of an order function (`call`, as "f") and what its change
 * invalidates (cache/tags.h): the products of the order, and — when the
 * outcome is "ok" and the body is the order — its seller's city (product
 * lists) and user (the seller's order history) and its buyer. Columns: the
 * O_* below. */
#define ORDER_ANSWER_SQL(call)                                                                               \
    "SELECT f.outcome, f.detail, f.field, f.message, f.extra, f.body, f.replayed, s.city_id,"                \
    " (f.body::json ->> 'buyer_id')::int8, s.user_id,"                                                       \
    " (SELECT array_to_string(array_agg(i ->> 'product_id'), ',') FROM json_array_elements("                 \
    "    CASE WHEN f.outcome = 'ok' THEN f.body::json -> 'items' ELSE '[]'::json END) i)"                    \
    " FROM " call " f"                                                                                       \
    " LEFT JOIN sellers s ON f.outcome = 'ok' AND s.id = (f.body::json ->> 'seller_id')::int8"

static void orders_init(void)
{
    st_place =
        db_stmt_register(ORDER_ANSWER_SQL("marketd_place_order($1::int8, $2::jsonb, $3::text, $4::text)"), 4);
    /* The id carries its month, so the created_at range names one partition.
     * The stored document if there is one (migrations/0009_order_docs.sql). */
    st_get =
        db_stmt_register("SELECT coalesce(o.doc, marketd_order_json(o)) FROM orders o"
                         " WHERE o.id = $1::int8"
                         " AND o.created_at >= marketd_order_month($1::int8)"
                         " AND o.created_at < marketd_order_month($1::int8) + interval '1 month'"
                         " AND (o.buyer_id = $2::int8"
                         "      OR o.seller_id = (SELECT s.id FROM sellers s WHERE s.user_id = $2::int8))",
                         2);
    st_transition = db_stmt_register(
        ORDER_ANSWER_SQL("marketd_order_transition($1::int8, $2::int8, $3::text, $4::text)"), 4);
    st_list = db_stmt_register(LIST_SQL, L_NPARAMS);
}

/* An order id names a month (YYYYMM * 10^9 + n); ids that cannot be an
 * order are unknown without asking the database. */
static int order_id_plausible(int64_t id)
{
    int64_t month = (id / 1000000000) % 100, year = id / 100000000000LL;
    return month >= 1 && month <= 12 && year >= 2000 && year <= 9999;
}

/* The columns of st_place and st_transition. */
enum {
    O_OUTCOME,
    O_DETAIL,
    O_FIELD,
    O_MESSAGE,
    O_EXTRA,
    O_BODY,
    O_REPLAYED,
    O_CITY,
    O_BUYER,
    O_SELLER_USER,
    O_PRODUCTS
};

/* Maps the outcome of an order function to the answer; r->data says the
 * success status (201 for a placed order, 200 for a transition). */
static void on_function_answer(rctx_t *r, PGresult *res)
{
    int created = r->data != NULL;
    int rc = api_outcome(res, O_OUTCOME);
    if (PQgetvalue(res, 0, O_REPLAYED)[0] == 't')
        reply_header(r, "idempotent-replayed", "true", 4);
    if (rc != MKD_OK) {
        if (rc == MKD_EINVAL)
            verr_add(&r->verr, PQgetvalue(res, 0, O_FIELD), "%s", PQgetvalue(res, 0, O_MESSAGE));
        reply_error_ext(r, rc, PQgetisnull(res, 0, O_EXTRA) ? NULL : PQgetvalue(res, 0, O_EXTRA), "%s",
                        PQgetvalue(res, 0, O_DETAIL));
        return;
    }
    const char *body = PQgetvalue(res, 0, O_BODY);
    size_t len = (size_t)PQgetlength(res, 0, O_BODY);
    int status = created ? 201 : 200;
    if (PQgetisnull(res, 0, O_CITY)) {
        reply_body(r, status, "application/json", body, len);
        return;
    }
    /* Stock moved: the products' details and their city's lists show it;
     * the order is new or changed: its buyer's and seller's histories show
     * it. A replay invalidates again: the first answer's invalidation may
     * have been cut short (a crash after the commit), and a client retries
     * exactly then. */
    cache_tags_t tags = {0};
    int64_t city = api_int(res, 0, O_CITY);
    const char *ids = PQgetvalue(res, 0, O_PRODUCTS);
    while (*ids != '\0') {
        char *end;
        long long id = strtoll(ids, &end, 10);
        if (end == ids)
            break;
        tags_product_changed(&tags, id, city);
        ids = *end == ',' ? end + 1 : end;
    }
    tags_order_changed(&tags, api_int(res, 0, O_BUYER), api_int(res, 0, O_SELLER_USER));
    api_reply_written(r, &tags, status, "application/json", body, len);
}

/* ---- POST /orders ----------------------------------------------------------- */

static void orders_create(rctx_t *r)
{
    const char *key = NULL;
    size_t klen;
    const char *kv = rctx_header(r, "idempotency-key", &klen);
    if (kv != NULL) {
        if (!idempotency_key_valid(kv, klen)) {
            reply_error(r, MKD_EBADREQ, "Idempotency-Key must be 1 to 255 printable ASCII characters");
            return;
        }
        char *k = h2o_mem_alloc_pool(&r->req->pool, klen + 1);
        memcpy(k, kv, klen);
        k[klen] = '\0';
        key = k;
    }

    order_item_t items[ORDER_MAX_ITEMS];
    size_t n = order_items_read(r->body, items, &r->verr);
    if (reply_if_invalid(r))
        return;
    /* The fingerprint is of the items sorted by product; the database gets
     * them in request order, so that a refusal naming items[i] names the
     * item the client sent at i. */
    char hash[ORDER_HASH_HEX + 1];
    order_request_hash(items, n, hash);
    jbuf_t *b = reply_buffer(r);
    order_items_json(b, items, n);
    char u[24];
    api_id_text(r->user_id, u);
    r->data = r; /* a placed order answers 201 */
    /* The pool copies parameters, so the scratch buffer may be reused. */
    api_query(r, st_place, (const char *[]){u, b->data, key, key != NULL ? hash : NULL}, on_function_answer);
}

/* ---- GET /orders --------------------------------------------------------------- */

typedef struct list_state {
    int limit;
} list_state_t;

/* Orders are rendered by the database (orders.doc or marketd_order_json): column 2. */
static void order_item(jbuf_t *b, const PGresult *res, int i, const void *arg)
{
    jbuf_append(b, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2));
}

static void order_cursor(const PGresult *res, int last, const void *arg, cursor_t *next)
{
    *next = (cursor_t){CURSOR_ORDERS, api_int(res, last, 1), api_int(res, last, 0)};
}

static int render_list(rctx_t *r, PGresult *res, jbuf_t *b)
{
    const list_state_t *ls = r->data;
    api_render_keyset_page(b, res, ls->limit, order_item, order_cursor, NULL);
    return 0;
}

/* `from`/`to`: RFC 3339 or a date (00:00 UTC); *us is the instant. */
static int query_time(rctx_t *r, const char *name, char out[TS_BUFSZ], int64_t *us)
{
    const slice_t *s = query_get(&r->query, name, &r->verr);
    if (s == NULL)
        return 0;
    if (ts_parse_rfc3339(s->ptr, s->len, us) != 0) {
        verr_add(&r->verr, name, "must be an RFC 3339 timestamp or a date (YYYY-MM-DD)");
        return -1;
    }
    ts_format_pg(*us, out);
    return 1;
}

static void orders_list(rctx_t *r)
{
    verr_t *v = &r->verr;
    int as_seller = 0;
    const slice_t *role = query_get(&r->query, "role", v);
    if (role != NULL) {
        if (slice_eq(*role, "seller"))
            as_seller = 1;
        else if (!slice_eq(*role, "buyer"))
            verr_add(v, "role", "must be buyer or seller");
    }
    const char *status = NULL;
    const slice_t *st = query_get(&r->query, "status", v);
    if (st != NULL) {
        for (int i = 0; statuses[i] != NULL && status == NULL; i++)
            if (slice_eq(*st, statuses[i]))
                status = statuses[i];
        if (status == NULL)
            verr_add(v, "status", "must be one of new, confirmed, shipped, delivered, cancelled");
    }
    char from[TS_BUFSZ], to[TS_BUFSZ], key[TS_BUFSZ];
    int64_t from_us = 0, to_us = 0;
    int has_from = query_time(r, "from", from, &from_us) > 0;
    int has_to = query_time(r, "to", to, &to_us) > 0;
    int limit = query_limit(&r->query, 20, 100, v);
    cursor_t cur = {0};
    int has_cursor = 0;
    const slice_t *cs = query_get(&r->query, "cursor", v);
    if (cs != NULL) {
        if (cursor_decode(cs->ptr, cs->len, CURSOR_ORDERS, &cur) != 0)
            verr_add(v, "cursor", "is malformed");
        else
            has_cursor = 1;
    }
    if (reply_if_invalid(r))
        return;
    list_state_t *ls = h2o_mem_alloc_pool(&r->req->pool, sizeof(*ls));
    ls->limit = limit;
    r->data = ls;
    char u[24], cid[24], lim[16];
    const char *params[L_NPARAMS] = {NULL}; /* NULL: no such filter */
    api_id_text(r->user_id, u);
    params[L_USER] = u;
    params[L_SELLER] = as_seller ? "true" : "false";
    params[L_STATUS] = status;
    params[L_FROM] = has_from ? from : NULL;
    params[L_TO] = has_to ? to : NULL;
    if (has_cursor) {
        ts_format_pg(cur.key, key);
        snprintf(cid, sizeof(cid), "%lld", (long long)cur.id);
        params[L_AFTER_AT] = key;
        params[L_AFTER_ID] = cid;
    }
    snprintf(lim, sizeof(lim), "%d", limit + 1);
    params[L_LIMIT] = lim;
    /* First pages are cached per user (pages after the first are read on
     * their own, as for every list). The key is the user, the role and
     * the normalised filters: "2026-09-06" and "2026-09-06T00:00:00Z" are
     * one entry. */
    char ckey[CACHE_KEY_MAX] = "";
    cache_tags_t tags;
    tags_for_order_history(&tags, r->user_id, as_seller);
    if (!has_cursor)
        snprintf(ckey, sizeof(ckey), "orders:%lld:%c:%s:%s%lld:%s%lld:%d", (long long)r->user_id,
                 as_seller ? 's' : 'b', status != NULL ? status : "", has_from ? "" : "-", (long long)from_us,
                 has_to ? "" : "-", (long long)to_us, limit);
    api_read(r, &(api_read_t){st_list, params, render_list, "orders", ckey, &tags});
}

/* ---- GET /orders/{id} ------------------------------------------------------------ */

static int render_order(rctx_t *r, PGresult *res, jbuf_t *b)
{
    if (PQntuples(res) == 0)
        return MKD_ENOTFOUND;
    jbuf_append(b, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    return 0;
}

/* Reads the order id; answers 404 and returns -1 for one that cannot be. */
static int order_target(rctx_t *r, char id[24], char u[24])
{
    int64_t oid;
    if (api_path_id(r, 0, "order", &oid) != 0)
        return -1;
    if (!order_id_plausible(oid)) {
        reply_error(r, MKD_ENOTFOUND, "order %lld not found", (long long)oid);
        return -1;
    }
    api_id_text(oid, id);
    api_id_text(r->user_id, u);
    return 0;
}

static void orders_get(rctx_t *r)
{
    char id[24], u[24], missing[64];
    if (order_target(r, id, u) != 0)
        return;
    snprintf(missing, sizeof(missing), "order %s not found", id);
    api_read(r, &(api_read_t){st_get, (const char *[]){id, u}, render_order, missing, NULL, NULL});
}

/* ---- transitions ------------------------------------------------------------------ */

static void orders_cancel(rctx_t *r)
{
    char id[24], u[24];
    if (order_target(r, id, u) != 0)
        return;
    api_query(r, st_transition, (const char *[]){id, u, "buyer", "cancelled"}, on_function_answer);
}

static void orders_patch(rctx_t *r)
{
    char id[24], u[24];
    if (order_target(r, id, u) != 0)
        return;
    const char *want = NULL, *s = NULL;
    int rc = field_text(r->body, "status", "status", 1, 20, FIELD_LINE, &s, &r->verr);
    body_require(rc, "status", &r->verr);
    if (rc > 0) {
        /* Every known status goes to the database, "new" included: it is
         * a status no order can move to, i.e. a wrong transition (409,
         * with the current status), not an invalid value (422). */
        for (int i = 0; statuses[i] != NULL && want == NULL; i++)
            if (strcmp(s, statuses[i]) == 0)
                want = statuses[i];
        if (want == NULL)
            verr_add(&r->verr, "status", "must be one of new, confirmed, shipped, delivered, cancelled");
    }
    static const char *const allowed[] = {"status", NULL};
    body_only(r->body, allowed, &r->verr);
    if (reply_if_invalid(r))
        return;
    api_query(r, st_transition, (const char *[]){id, u, "seller", want}, on_function_answer);
}

/* The caller's order history (GET /orders): private, so the answers carry
 * no cache headers (api.md lists the cacheable GETs); entries live as long
 * as product lists and go with any change of the user's orders. */
static const cache_policy_t history_cache = {.ttl = TTL_PRODUCTS, .server_only = 1};

static const route_t routes[] = {
    {.method = M_GET,
     .pattern = "/api/v1/orders",
     HANDLER(orders_list),
     .auth = AUTH_USER,
     .cache = &history_cache,
     .limit = LIMIT_API},
    {.method = M_POST,
     .pattern = "/api/v1/orders",
     HANDLER(orders_create),
     .auth = AUTH_USER,
     .body = BODY_JSON,
     .limit = LIMIT_API},
    {.method = M_GET,
     .pattern = "/api/v1/orders/{id}",
     HANDLER(orders_get),
     .auth = AUTH_USER,
     .limit = LIMIT_API},
    {.method = M_PATCH,
     .pattern = "/api/v1/orders/{id}",
     HANDLER(orders_patch),
     .auth = AUTH_USER,
     .body = BODY_JSON,
     .limit = LIMIT_API},
    {.method = M_POST,
     .pattern = "/api/v1/orders/{id}/cancel",
     HANDLER(orders_cancel),
     .auth = AUTH_USER,
     .limit = LIMIT_API},
};

const api_module_t api_orders = {"orders", routes, sizeof(routes) / sizeof(routes[0]), orders_init, NULL};
