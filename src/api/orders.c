/* Orders (api.md "Orders", S6, B6). The transactions themselves are SQL
 * functions (migrations/0002_orders_logic.sql): one round trip each, row
 * locks in id order, conditional stock updates, and the response body
 * rendered in the same transaction so an idempotent replay is exact. This
 * file validates, calls them and relays their answer. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "api/cursor.h"
#include "core/timefmt.h"
#include "cache/cache.h"
#include "http/body.h"

#define MAX_ITEMS 50
#define MAX_QUANTITY 1000

enum { F_STATUS = 1, F_FROM = 2, F_TO = 4, F_CURSOR = 8, NMASKS = 16 };

static const db_stmt_t *st_place, *st_get, *st_transition;
static const db_stmt_t *st_list[2][NMASKS]; /* [seller?][mask] */

static const char *const statuses[] = {"new", "confirmed", "shipped", "delivered", "cancelled", NULL};

static char *build_list_sql(int as_seller, int mask)
{
    char sql[1024];
    int n = 1;
    size_t len = (size_t)snprintf(sql, sizeof(sql),
                                  "SELECT o.id, (extract(epoch FROM o.created_at) * 1000000)::int8,"
                                  " marketd_order_json(o) FROM orders o WHERE %s",
                                  as_seller ? "o.seller_id = (SELECT s.id FROM sellers s WHERE s.user_id = $1::int8)"
                                            : "o.buyer_id = $1::int8");
#define ADD(...) len += (size_t)snprintf(sql + len, sizeof(sql) - len, __VA_ARGS__)
    if (mask & F_STATUS)
        ADD(" AND o.status = $%d::text", ++n);
    /* from/to bound created_at, the partition key: only the partitions in
     * range are read (pruned at executor start for a prepared plan). */
    if (mask & F_FROM)
        ADD(" AND o.created_at >= $%d::timestamptz", ++n);
    if (mask & F_TO)
        ADD(" AND o.created_at < $%d::timestamptz", ++n);
    if (mask & F_CURSOR) {
        ADD(" AND (o.created_at, o.id) < ($%d::timestamptz, $%d::int8)", n + 1, n + 2);
        n += 2;
    }
    ADD(" ORDER BY o.created_at DESC, o.id DESC LIMIT $%d::int4", ++n);
#undef ADD
    char *s = strdup(sql);
    if (s == NULL)
        abort();
    return s;
}

void api_orders_init(void)
{
    /* Besides the answer: what the cache must forget when stock moved — the
     * products of the order and the city of their seller (docs/cache.md). */
    st_place = db_stmt_register(
        "SELECT f.http_status, f.body, f.replayed, s.city_id,"
        " (SELECT array_to_string(array_agg(i ->> 'product_id'), ',') FROM json_array_elements("
        "    CASE WHEN f.http_status = 201 THEN f.body::json -> 'items' ELSE '[]'::json END) i)"
        " FROM marketd_place_order($1::int8, $2::jsonb, $3::text, $4::text) f"
        " LEFT JOIN sellers s ON f.http_status = 201 AND s.id = (f.body::json ->> 'seller_id')::int8",
        4);
    /* The id carries its month, so the created_at range names one partition. */
    st_get = db_stmt_register("SELECT marketd_order_json(o) FROM orders o"
                              " WHERE o.id = $1::int8"
                              " AND o.created_at >= marketd_order_month($1::int8)"
                              " AND o.created_at < marketd_order_month($1::int8) + interval '1 month'"
                              " AND (o.buyer_id = $2::int8"
                              "      OR o.seller_id = (SELECT s.id FROM sellers s WHERE s.user_id = $2::int8))",
                              2);
    st_transition = db_stmt_register(
        "SELECT f.http_status, f.body, false, s.city_id,"
        " (SELECT array_to_string(array_agg(i ->> 'product_id'), ',') FROM json_array_elements("
        "    CASE WHEN f.http_status = 200 THEN f.body::json -> 'items' ELSE '[]'::json END) i)"
        " FROM marketd_order_transition($1::int8, $2::int8, $3::text, $4::text) f"
        " LEFT JOIN sellers s ON f.http_status = 200 AND s.id = (f.body::json ->> 'seller_id')::int8",
        4);
    for (int seller = 0; seller < 2; seller++) {
        for (int mask = 0; mask < NMASKS; mask++) {
            int n = 2 + ((mask & F_STATUS) != 0) + ((mask & F_FROM) != 0) + ((mask & F_TO) != 0) +
                    ((mask & F_CURSOR) ? 2 : 0);
            st_list[seller][mask] = db_stmt_register(build_list_sql(seller, mask), n);
        }
    }
}

/* An order id names a month (YYYYMM * 10^9 + n); ids that cannot be an
 * order are unknown without asking the database. */
static int order_id_plausible(int64_t id)
{
    int64_t month = (id / 1000000000) % 100, year = id / 100000000000LL;
    return month >= 1 && month <= 12 && year >= 2000 && year <= 9999;
}

static void uid_text(int64_t uid, char out[24])
{
    snprintf(out, 24, "%lld", (long long)uid);
}

/* Relays (http_status, body[, replayed]) computed by an SQL function. */
static void on_function_answer(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "order");
        return;
    }
    int status = atoi(PQgetvalue(res, 0, 0));
    const char *ctype = status >= 400 ? "application/problem+json" : "application/json";
    const char *body = PQgetvalue(res, 0, 1);
    size_t len = (size_t)PQgetlength(res, 0, 1);
    int replayed = PQgetvalue(res, 0, 2)[0] == 't';
    if (replayed)
        reply_header(r, "idempotent-replayed", "true", 4);
    if (status == 401)
        reply_header(r, "www-authenticate", "Bearer", 6);
    if (status >= 300 || replayed || PQgetisnull(res, 0, 3)) {
        reply_body(r, status, ctype, body, len);
        return;
    }
    /* Stock changed: product details and the seller city's lists show it. */
    char tagbuf[MAX_ITEMS + 2][48];
    const char *tags[MAX_ITEMS + 3];
    int n = 0;
    cache_tag(tagbuf[n], "products:city", api_int(res, 0, 3));
    tags[n] = tagbuf[n], n++;
    tags[n++] = "products:all";
    const char *ids = PQgetvalue(res, 0, 4);
    while (*ids != '\0' && n < MAX_ITEMS + 2) {
        char *end;
        long long id = strtoll(ids, &end, 10);
        if (end == ids)
            break;
        cache_tag(tagbuf[n], "product", id);
        tags[n] = tagbuf[n], n++;
        ids = *end == ',' ? end + 1 : end;
    }
    tags[n] = NULL;
    cache_invalidate_and_reply(r, tags, status, ctype, body, len);
}

/* ---- POST /orders ----------------------------------------------------------- */

typedef struct item {
    int64_t product_id, quantity;
} item_t;

static int cmp_item(const void *a, const void *b)
{
    const item_t *x = a, *y = b;
    return (x->product_id > y->product_id) - (x->product_id < y->product_id);
}

/* Idempotency-Key: 1..255 printable ASCII characters. */
static int idem_key_valid(const char *s, size_t n)
{
    if (n < 1 || n > 255)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
    return 1;
}

void api_orders_create(rctx_t *r)
{
    int64_t uid;
    if (api_authenticate(r, &uid) != 0)
        return;
    const char *key = NULL;
    ssize_t h = h2o_find_header_by_str(&r->req->headers, H2O_STRLIT("idempotency-key"), -1);
    if (h >= 0) {
        h2o_iovec_t v = r->req->headers.entries[h].value;
        if (!idem_key_valid(v.base, v.len)) {
            reply_problem(r, 400, "Idempotency-Key must be 1 to 255 printable ASCII characters");
            return;
        }
        char *k = h2o_mem_alloc_pool(&r->req->pool, v.len + 1);
        memcpy(k, v.base, v.len);
        k[v.len] = '\0';
        key = k;
    }

    char detail[256];
    int status;
    json_t *obj = body_parse(api_content_type(r), api_content_type_len(r), r->req->entity.base, r->req->entity.len,
                             &status, detail, sizeof(detail));
    if (obj == NULL) {
        reply_problem(r, status, "%s", detail);
        return;
    }
    verr_t *v = &r->verr;
    json_t *arr = json_object_get(obj, "items");
    item_t items[MAX_ITEMS];
    size_t n = 0;
    if (arr == NULL) {
        verr_add(v, "items", "is required");
    } else if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > MAX_ITEMS) {
        verr_add(v, "items", "must be an array of 1 to %d items", MAX_ITEMS);
    } else {
        n = json_array_size(arr);
        for (size_t i = 0; i < n; i++) {
            json_t *it = json_array_get(arr, i);
            char fp[48], fq[48];
            snprintf(fp, sizeof(fp), "items[%zu].product_id", i);
            snprintf(fq, sizeof(fq), "items[%zu].quantity", i);
            if (!json_is_object(it)) {
                snprintf(fp, sizeof(fp), "items[%zu]", i);
                verr_add(v, fp, "must be an object");
                continue;
            }
            body_require(body_id(it, "product_id", fp, 0, &items[i].product_id, NULL, v), fp, v);
            body_require(body_int(it, "quantity", fq, 1, MAX_QUANTITY, &items[i].quantity, v), fq, v);
            for (size_t k = 0; k < i && v->count == 0; k++)
                if (items[k].product_id == items[i].product_id)
                    verr_add(v, fp, "duplicates items[%zu]", k);
        }
    }
    json_decref(obj);
    if (v->count > 0) {
        reply_invalid(r);
        return;
    }

    /* Canonical form (sorted by product): the same order written in another
     * item order is the same request for Idempotency-Key purposes. */
    qsort(items, n, sizeof(items[0]), cmp_item);
    jbuf_t *b = reply_buffer(r);
    jbuf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        jbuf_puts(b, i ? ",{\"product_id\":" : "{\"product_id\":");
        json_int(b, items[i].product_id);
        jbuf_puts(b, ",\"quantity\":");
        json_int(b, items[i].quantity);
        jbuf_putc(b, '}');
    }
    jbuf_putc(b, ']');
    jbuf_putc(b, '\0');
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)b->data, b->len - 1);
    char hash[2 * crypto_hash_sha256_BYTES + 1];
    sodium_bin2hex(hash, sizeof(hash), digest, sizeof(digest));
    char u[24];
    uid_text(uid, u);
    /* The pool copies parameters, so the scratch buffer may be reused. */
    const char *params[] = {u, b->data, key, key != NULL ? hash : NULL};
    api_query(r, st_place, params, on_function_answer);
}

/* ---- GET /orders --------------------------------------------------------------- */

typedef struct list_state {
    int limit;
} list_state_t;

static void on_list(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    list_state_t *ls = r->data;
    if (err != 0) {
        api_db_failed(r, err, res, "orders");
        return;
    }
    int n = PQntuples(res), more = n > ls->limit;
    if (more)
        n = ls->limit;
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"items\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            jbuf_putc(b, ',');
        jbuf_append(b, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2));
    }
    jbuf_puts(b, "],\"next_cursor\":");
    if (more)
        api_json_cursor(b, CURSOR_ORDERS, api_int(res, n - 1, 1), api_int(res, n - 1, 0));
    else
        jbuf_puts(b, "null");
    jbuf_putc(b, '}');
    reply_json(r, 200, b);
}

/* `from`/`to`: RFC 3339 or a date (00:00 UTC). */
static int query_time(rctx_t *r, const char *name, char out[TS_BUFSZ])
{
    const slice_t *s = query_get(&r->query, name, &r->verr);
    if (s == NULL)
        return 0;
    int64_t us;
    if (ts_parse_rfc3339(s->ptr, s->len, &us) != 0) {
        verr_add(&r->verr, name, "must be an RFC 3339 timestamp or a date (YYYY-MM-DD)");
        return -1;
    }
    ts_format_pg(us, out);
    return 1;
}

void api_orders_list(rctx_t *r)
{
    int64_t uid;
    if (api_authenticate(r, &uid) != 0)
        return;
    verr_t *v = &r->verr;
    int as_seller = 0, mask = 0;
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
        else
            mask |= F_STATUS;
    }
    char from[TS_BUFSZ], to[TS_BUFSZ], key[TS_BUFSZ];
    mask |= query_time(r, "from", from) > 0 ? F_FROM : 0;
    mask |= query_time(r, "to", to) > 0 ? F_TO : 0;
    int limit = query_limit(&r->query, 20, 100, v);
    cursor_t cur = {0};
    const slice_t *cs = query_get(&r->query, "cursor", v);
    if (cs != NULL) {
        if (cursor_decode(cs->ptr, cs->len, CURSOR_ORDERS, &cur) != 0)
            verr_add(v, "cursor", "is malformed");
        else
            mask |= F_CURSOR;
    }
    if (v->count > 0) {
        reply_invalid(r);
        return;
    }
    list_state_t *ls = h2o_mem_alloc_pool(&r->req->pool, sizeof(*ls));
    ls->limit = limit;
    r->data = ls;
    char u[24], cid[24], lim[16];
    const char *params[8];
    int n = 0;
    uid_text(uid, u);
    params[n++] = u;
    if (mask & F_STATUS)
        params[n++] = status;
    if (mask & F_FROM)
        params[n++] = from;
    if (mask & F_TO)
        params[n++] = to;
    if (mask & F_CURSOR) {
        ts_format_pg(cur.key, key);
        snprintf(cid, sizeof(cid), "%lld", (long long)cur.id);
        params[n++] = key;
        params[n++] = cid;
    }
    snprintf(lim, sizeof(lim), "%d", limit + 1);
    params[n++] = lim;
    api_query(r, st_list[as_seller][mask], params, on_list);
}

/* ---- GET /orders/{id} ------------------------------------------------------------ */

static void on_get(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "order");
        return;
    }
    if (PQntuples(res) == 0) {
        reply_problem(r, 404, "order %.*s not found", (int)r->params[0].len, r->params[0].ptr);
        return;
    }
    reply_body(r, 200, "application/json", PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
}

/* Authenticates and reads the order id; answers and returns -1 on failure. */
static int order_target(rctx_t *r, int64_t *uid, char id[24], char u[24])
{
    if (api_authenticate(r, uid) != 0)
        return -1;
    int64_t oid;
    if (api_path_id(r, 0, "order", &oid) != 0)
        return -1;
    if (!order_id_plausible(oid)) {
        reply_problem(r, 404, "order %lld not found", (long long)oid);
        return -1;
    }
    snprintf(id, 24, "%lld", (long long)oid);
    uid_text(*uid, u);
    return 0;
}

void api_orders_get(rctx_t *r)
{
    int64_t uid;
    char id[24], u[24];
    if (order_target(r, &uid, id, u) != 0)
        return;
    const char *params[] = {id, u};
    api_query(r, st_get, params, on_get);
}

/* ---- transitions ------------------------------------------------------------------ */

void api_orders_cancel(rctx_t *r)
{
    int64_t uid;
    char id[24], u[24];
    if (order_target(r, &uid, id, u) != 0)
        return;
    const char *params[] = {id, u, "buyer", "cancelled"};
    api_query(r, st_transition, params, on_function_answer);
}

void api_orders_patch(rctx_t *r)
{
    int64_t uid;
    char id[24], u[24];
    if (order_target(r, &uid, id, u) != 0)
        return;
    char detail[256];
    int status;
    json_t *obj = body_parse(api_content_type(r), api_content_type_len(r), r->req->entity.base, r->req->entity.len,
                             &status, detail, sizeof(detail));
    if (obj == NULL) {
        reply_problem(r, status, "%s", detail);
        return;
    }
    const char *want = NULL, *s = NULL;
    int rc = body_string(obj, "status", "status", 1, 20, &s, &r->verr);
    body_require(rc, "status", &r->verr);
    if (rc > 0) {
        for (int i = 1; statuses[i] != NULL && want == NULL; i++) /* not "new" */
            if (strcmp(s, statuses[i]) == 0)
                want = statuses[i];
        if (want == NULL)
            verr_add(&r->verr, "status", "must be one of confirmed, shipped, delivered, cancelled");
    }
    static const char *const allowed[] = {"status", NULL};
    body_only(obj, allowed, &r->verr);
    json_decref(obj);
    if (r->verr.count > 0) {
        reply_invalid(r);
        return;
    }
    const char *params[] = {id, u, "seller", want};
    api_query(r, st_transition, params, on_function_answer);
}
