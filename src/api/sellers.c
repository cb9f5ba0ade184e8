/* Sellers (api.md "Sellers"): the list by id, popular sellers (ranked by
 * delivered orders of the last 30 days), the detail, and a user's own
 * seller profile: create and change. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/fields.h"
#include "api/render.h"
#include "core/error.h"

#define SELLER_COLUMNS                                                                                       \
    {"id", "s.id", COL_NUM}, {"user_id", "s.user_id", COL_NUM}, {"name", "s.name", COL_TEXT},                \
        {"description", "s.description", COL_TEXT}, {"city_id", "s.city_id", COL_NUM},                       \
        {"district_id", "s.district_id", COL_NUM}, {"rating", "s.rating", COL_NUM},                          \
    {                                                                                                        \
        "created_at", "s.created_at AT TIME ZONE 'UTC'", COL_TS                                              \
    }

static const api_col_t seller_cols[] = {SELLER_COLUMNS};
static const api_col_t popular_cols[] = {SELLER_COLUMNS, {"orders_30d", "o.n", COL_NUM}};
#define SELLER  API_TABLE(seller_cols)
#define POPULAR API_TABLE(popular_cols)

enum { F_CITY = 1, F_DISTRICT = 2, F_CURSOR = 4, LIST_VARIANTS = 8 };

static const db_stmt_t *st_list[LIST_VARIANTS];
static const db_stmt_t *st_get, *st_popular, *st_popular_city, *st_create, *st_patch;

/* ---- reads ----------------------------------------------------------------------------- */

typedef struct list_state {
    int limit;
} list_state_t;

static void seller_item(jbuf_t *b, const PGresult *res, int i, const void *arg)
{
    api_render_row(b, SELLER, 1, res, i, 0, "");
}

static void seller_cursor(const PGresult *res, int last, const void *arg, cursor_t *next)
{
    *next = (cursor_t){CURSOR_ID, 0, api_int(res, last, 0)};
}

static int render_list(rctx_t *r, PGresult *res, jbuf_t *b)
{
    const list_state_t *ls = r->data;
    api_render_keyset_page(b, res, ls->limit, seller_item, seller_cursor, NULL);
    return 0;
}

static void sellers_list(rctx_t *r)
{
    int64_t city = 0, district = 0;
    cursor_t cur = {0};
    int has_city = query_id(&r->query, "city_id", &city, &r->verr);
    int has_district = query_id(&r->query, "district_id", &district, &r->verr);
    int limit = query_limit(&r->query, 20, 100, &r->verr);
    const slice_t *cs = query_get(&r->query, "cursor", &r->verr);
    if (cs != NULL && cursor_decode(cs->ptr, cs->len, CURSOR_ID, &cur) != 0)
        verr_add(&r->verr, "cursor", "is malformed");
    if (reply_if_invalid(r))
        return;
    list_state_t *ls = h2o_mem_alloc_pool(&r->req->pool, sizeof(*ls));
    ls->limit = limit;
    r->data = ls;
    char v[4][24];
    const char *params[4];
    int n = 0, mask = 0;
    if (has_city > 0)
        mask |= F_CITY, api_id_text(city, v[n]), params[n] = v[n], n++;
    if (has_district > 0)
        mask |= F_DISTRICT, api_id_text(district, v[n]), params[n] = v[n], n++;
    if (cs != NULL)
        mask |= F_CURSOR, api_id_text(cur.id, v[n]), params[n] = v[n], n++;
    api_id_text(limit + 1, v[n]), params[n] = v[n], n++;
    api_read(r, &(api_read_t){st_list[mask], params, render_list, "sellers", NULL, NULL});
}

static int render_seller(rctx_t *r, PGresult *res, jbuf_t *b)
{
    if (PQntuples(res) == 0)
        return MKD_ENOTFOUND;
    api_render_row(b, SELLER, 1, res, 0, 0, "");
    return 0;
}

static void sellers_get(rctx_t *r)
{
    api_read_by_id(r, "seller", "seller", st_get, NULL, render_seller, tags_for_seller);
}

static int render_popular(rctx_t *r, PGresult *res, jbuf_t *b)
{
    api_page_begin(b);
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        api_page_item(b, i);
        api_render_row(b, POPULAR, 1, res, i, 0, "");
    }
    api_page_end(b, NULL);
    return 0;
}

static void sellers_popular(rctx_t *r)
{
    int64_t city = 0;
    int has_city = query_id(&r->query, "city_id", &city, &r->verr);
    int limit = query_limit(&r->query, 10, 100, &r->verr);
    if (reply_if_invalid(r))
        return;
    char c[24], l[24], key[64];
    api_id_text(city, c);
    api_id_text(limit, l);
    /* The one list allowed to lag writes by its TTL (api.md): besides the
     * seller tag, nothing invalidates it; browsers may keep it a minute. */
    snprintf(key, sizeof(key), "popular:%s:%s", has_city > 0 ? c : "all", l);
    cache_tags_t tags;
    tags_for_popular_sellers(&tags);
    if (has_city > 0)
        api_read(
            r, &(api_read_t){st_popular_city, (const char *[]){c, l}, render_popular, "sellers", key, &tags});
    else
        api_read(r, &(api_read_t){st_popular, (const char *[]){l}, render_popular, "sellers", key, &tags});
}

/* ---- writes: a user's own profile ------------------------------------------------------------ */

/* Columns: outcome, field and message of an "invalid", then the seller. */
enum { S_OUTCOME, S_FIELD, S_MESSAGE, S_ROW };

static const api_refusal_t refusals[] = {
    {MKD_EUNAUTH, "the token's user does not exist"},
    {MKD_EFORBIDDEN, "seller %s belongs to another user"},
    {MKD_ENOTFOUND, "seller %s not found"},
    {MKD_ECONFLICT, "this user already has a seller profile"},
    {MKD_EINVAL, NULL, NULL}, /* field and message from the statement */
    {0},
};

static void on_written(rctx_t *r, PGresult *res)
{
    int created = r->params[0].len == 0;
    if (api_outcome_or_reply(r, res, S_OUTCOME, refusals) != 0)
        return;
    jbuf_t *b = reply_buffer(r);
    api_render_row(b, SELLER, 1, res, 0, S_ROW, "");
    if (created) {
        char loc[48];
        int n = snprintf(loc, sizeof(loc), "/api/v1/sellers/%s", PQgetvalue(res, 0, S_ROW));
        reply_header(r, "location", loc, (size_t)n);
    }
    cache_tags_t tags = {0};
    tags_seller_changed(&tags, api_int(res, 0, S_ROW));
    api_reply_written(r, &tags, created ? 201 : 200, "application/json", b->data, b->len);
}

/* name, description, city_id, district_id; all required on create except
 * the description (default ""). district_id is nullable in the schema but
 * api.md has every seller name its district. */
static void read_seller(json_t *obj, int create, const char **name, const char **description, int64_t *city,
                        int *has_city, int64_t *district, int *has_district, verr_t *v)
{
    int rc = field_text(obj, "name", "name", 1, FIELD_NAME_MAX, FIELD_LINE, name, v);
    if (create)
        body_require(rc, "name", v);
    field_text(obj, "description", "description", 0, FIELD_TEXT_MAX, FIELD_LINES, description, v);
    rc = body_id(obj, "city_id", "city_id", 0, city, NULL, v);
    if (create)
        body_require(rc, "city_id", v);
    *has_city = rc > 0;
    rc = body_id(obj, "district_id", "district_id", 0, district, NULL, v);
    if (create)
        body_require(rc, "district_id", v);
    *has_district = rc > 0;
    static const char *const allowed[] = {"name", "description", "city_id", "district_id", NULL};
    body_only(obj, allowed, v);
}

static void sellers_create(rctx_t *r)
{
    int64_t city = 0, district = 0;
    const char *name = NULL, *description = NULL;
    int has_city, has_district;
    read_seller(r->body, 1, &name, &description, &city, &has_city, &district, &has_district, &r->verr);
    if (reply_if_invalid(r))
        return;
    char u[24], c[24], d[24];
    api_id_text(r->user_id, u);
    api_id_text(city, c);
    api_id_text(district, d);
    api_query(r, st_create, (const char *[]){u, name, description, c, d}, on_written);
}

static void sellers_patch(rctx_t *r)
{
    int64_t sid, city = 0, district = 0;
    if (api_path_id(r, 0, "seller", &sid) != 0)
        return;
    const char *name = NULL, *description = NULL;
    int has_city, has_district;
    read_seller(r->body, 0, &name, &description, &city, &has_city, &district, &has_district, &r->verr);
    if (reply_if_invalid(r))
        return;
    char u[24], s[24], c[24], d[24];
    api_id_text(r->user_id, u);
    api_id_text(sid, s);
    api_id_text(city, c);
    api_id_text(district, d);
    api_query(r, st_patch,
              (const char *[]){u, s, name, description, has_city ? c : NULL, has_district ? d : NULL},
              on_written);
}

/* ---- statements ------------------------------------------------------------------------------ */

/* Popular sellers are precomputed (migrations/0006_precomputed_reads.sql):
 * seller_popularity holds each seller's delivered orders created since
 * the window's `since` as of the last refresh (src/api/ops.c, every
 * 10 s), seller_popularity_log what changed since then. The answer is
 * exact at any moment, refreshed or not: the few sellers `d` with a log
 * row, or with a delivered order that left the 30 days since `since`
 * (~10 s of orders, one short index range of orders_delivered_idx in
 * one partition), are ranked by count + changes with their live city;
 * every other seller by its count alone, of which the first `limit` in
 * index order are enough. A miss costs a few short index scans and
 * `limit` seller lookups, like a product detail, instead of counting
 * ~1M orders (docs/indexes.md S2). No window row (a database whose
 * tables were all TRUNCATEd): no counts either, the log is everything. */
static const db_stmt_t *popular_statement(int nparams, const char *cols, const char *counts_where,
                                          const char *sellers_where)
{
    return api_stmt(nparams,
                    "WITH w AS (SELECT coalesce((SELECT x.since FROM seller_popularity_window x),"
                    "                           now() - interval '30 days') AS since),"
                    " d AS (SELECT c.seller_id, sum(c.n)::int AS n FROM ("
                    "         SELECT l.seller_id, l.delta AS n FROM seller_popularity_log l, w"
                    "          WHERE l.created_at >= w.since"
                    "         UNION ALL"
                    "         SELECT o.seller_id, -1 FROM orders o, w"
                    "          WHERE o.status = 'delivered' AND o.created_at >= w.since"
                    "            AND o.created_at >= now() - interval '37 days'"
                    "            AND o.created_at < now() - interval '30 days'"
                    "       ) c GROUP BY c.seller_id),"
                    " o AS ((SELECT p.seller_id, p.orders_30d AS n FROM seller_popularity p"
                    "         WHERE p.orders_30d > 0%s AND p.seller_id NOT IN (SELECT d.seller_id FROM d)"
                    "         ORDER BY p.orders_30d DESC, p.seller_id LIMIT $%d::int4)"
                    "       UNION ALL"
                    "       SELECT d.seller_id, coalesce((SELECT p.orders_30d FROM seller_popularity p"
                    "                                      WHERE p.seller_id = d.seller_id), 0) + d.n"
                    "         FROM d)"
                    " SELECT %s FROM o JOIN sellers s ON s.id = o.seller_id%s"
                    " WHERE o.n > 0 ORDER BY o.n DESC, s.id LIMIT $%d::int4",
                    counts_where, nparams, cols, sellers_where, nparams);
}

static void sellers_init(void)
{
    const char *cols = api_select_list(SELLER, 1);
    /* One statement per filter combination, so each gets its own plan on
     * its own index (sellers_city_id_idx, sellers_district_id_idx, pkey). */
    for (int mask = 0; mask < LIST_VARIANTS; mask++) {
        char where[256];
        int n = 0, len = 0;
        where[0] = '\0';
        if (mask & F_CITY)
            len += snprintf(where + len, sizeof(where) - (size_t)len, " AND s.city_id = $%d::int8", ++n);
        if (mask & F_DISTRICT)
            len += snprintf(where + len, sizeof(where) - (size_t)len, " AND s.district_id = $%d::int8", ++n);
        if (mask & F_CURSOR)
            len += snprintf(where + len, sizeof(where) - (size_t)len, " AND s.id > $%d::int8", ++n);
        st_list[mask] = api_stmt(n + 1, "SELECT %s FROM sellers s WHERE true%s ORDER BY s.id LIMIT $%d::int4",
                                 cols, where, n + 1);
    }
    st_get = api_stmt(1, "SELECT %s FROM sellers s WHERE s.id = $1::int8", cols);
    const char *pcols = api_select_list(POPULAR, 1);
    st_popular = popular_statement(1, pcols, "", "");
    st_popular_city = popular_statement(2, pcols, " AND p.city_id = $1::int8", " AND s.city_id = $1::int8");
    st_create = api_stmt(
        5,
        "WITH u AS (SELECT x.id FROM users x WHERE x.id = $1::int8),"
        " c AS (SELECT x.id FROM cities x WHERE x.id = $4::int8),"
        " d AS (SELECT x.id FROM districts x WHERE x.id = $5::int8 AND x.city_id = $4::int8),"
        " ins AS (INSERT INTO sellers AS s (user_id, name, description, city_id, district_id)"
        "         SELECT u.id, $2::text, coalesce($3::text, ''), c.id, d.id FROM u, c, d"
        "         ON CONFLICT (user_id) DO NOTHING RETURNING *)"
        " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM u) THEN 'unauthenticated'"
        "             WHEN NOT EXISTS (SELECT 1 FROM c) OR NOT EXISTS (SELECT 1 FROM d) THEN 'invalid'"
        "             WHEN s.id IS NULL THEN 'conflict' ELSE 'ok' END,"
        "        CASE WHEN NOT EXISTS (SELECT 1 FROM c) THEN 'city_id' ELSE 'district_id' END,"
        "        CASE WHEN NOT EXISTS (SELECT 1 FROM c) THEN 'is not a known city'"
        "             ELSE format('is not a district of city %%s', $4::int8) END, %s"
        " FROM (VALUES (1)) one LEFT JOIN ins s ON true",
        cols);
    /* Moving a seller is an SQL function (migrations/0003_catalogue.sql,
     * 0005_outcomes.sql): its products' copies of the location need a
     * second snapshot. Its row columns are re-projected as `s` so that the
     * one column table renders them. */
    st_patch =
        api_stmt(6,
                 "SELECT f.outcome, f.field, f.message, %s"
                 " FROM marketd_seller_patch($1::int8, $2::int8, $3::text, $4::text, $5::int8, $6::int8) f"
                 " LEFT JOIN LATERAL (SELECT f.id, f.user_id, f.name, f.description, f.city_id,"
                 "   f.district_id, f.rating, f.created_at AT TIME ZONE 'UTC' AS created_at) s ON true",
                 cols);
}

static const cache_policy_t seller_cache = {.ttl = TTL_PRODUCTS};
static const cache_policy_t popular_cache = {.ttl = TTL_POPULAR_SELLERS,
                                             .cache_control = "public, max-age=60"};

static const route_t routes[] = {
    {.method = M_GET, .pattern = "/api/v1/sellers", HANDLER(sellers_list), .db = DB_READ, .limit = LIMIT_API},
    {.method = M_POST,
     .pattern = "/api/v1/sellers",
     HANDLER(sellers_create),
     .auth = AUTH_USER,
     .body = BODY_JSON,
     .limit = LIMIT_API},
    {.method = M_GET,
     .pattern = "/api/v1/sellers/popular",
     HANDLER(sellers_popular),
     .cache = &popular_cache,
     .db = DB_READ,
     .limit = LIMIT_API},
    {.method = M_GET,
     .pattern = "/api/v1/sellers/{id}",
     HANDLER(sellers_get),
     .cache = &seller_cache,
     .db = DB_READ,
     .limit = LIMIT_API},
    {.method = M_PATCH,
     .pattern = "/api/v1/sellers/{id}",
     HANDLER(sellers_patch),
     .auth = AUTH_USER,
     .body = BODY_JSON,
     .limit = LIMIT_API},
};

const api_module_t api_sellers = {"sellers", routes, sizeof(routes) / sizeof(routes[0]), sellers_init, NULL};
