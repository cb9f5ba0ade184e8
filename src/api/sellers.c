/* Sellers (api.md): list by id, popular (ranked by delivered orders of the
 * last 30 days), detail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "api/cursor.h"
#include "cache/cache.h"

#define SELLER_COLS                                                                                               \
    "s.id, s.user_id, s.name, s.description, s.city_id, s.district_id, s.rating, "                              \
    "s.created_at AT TIME ZONE 'UTC'"
#define SELLER_NCOLS 8

enum { F_CITY = 1, F_DISTRICT = 2, F_CURSOR = 4, LIST_VARIANTS = 8 };

static const db_stmt_t *st_list[LIST_VARIANTS];
static char *sql_list[LIST_VARIANTS];
static const db_stmt_t *st_get, *st_popular, *st_popular_city;

void api_sellers_init(void)
{
    /* One statement per filter combination, so each gets its own plan on
     * its own index (sellers_city_id_idx, sellers_district_id_idx, pkey). */
    for (int mask = 0; mask < LIST_VARIANTS; mask++) {
        char sql[1024];
        int n = 0, len;
        len = snprintf(sql, sizeof(sql), "SELECT " SELLER_COLS " FROM sellers s WHERE true");
        if (mask & F_CITY)
            len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND s.city_id = $%d::int8", ++n);
        if (mask & F_DISTRICT)
            len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND s.district_id = $%d::int8", ++n);
        if (mask & F_CURSOR)
            len += snprintf(sql + len, sizeof(sql) - (size_t)len, " AND s.id > $%d::int8", ++n);
        snprintf(sql + len, sizeof(sql) - (size_t)len, " ORDER BY s.id LIMIT $%d::int4", ++n);
        sql_list[mask] = strdup(sql);
        st_list[mask] = db_stmt_register(sql_list[mask], n);
    }
    st_get = db_stmt_register("SELECT " SELLER_COLS " FROM sellers s WHERE s.id = $1::int8", 1);
    /* Only the last ~30 days of partitions are scanned (S6), through the
     * partial index orders_delivered_idx. */
    st_popular = db_stmt_register("SELECT " SELLER_COLS ", o.n FROM"
                                  " (SELECT seller_id, count(*) AS n FROM orders"
                                  "   WHERE status = 'delivered' AND created_at >= now() - interval '30 days'"
                                  "   GROUP BY seller_id) o"
                                  " JOIN sellers s ON s.id = o.seller_id"
                                  " ORDER BY o.n DESC, s.id LIMIT $1::int4",
                                  1);
    st_popular_city = db_stmt_register("SELECT " SELLER_COLS ", o.n FROM"
                                       " (SELECT o.seller_id, count(*) AS n FROM orders o"
                                       "   JOIN sellers s2 ON s2.id = o.seller_id AND s2.city_id = $1::int8"
                                       "   WHERE o.status = 'delivered' AND o.created_at >= now() - interval '30 days'"
                                       "   GROUP BY o.seller_id) o"
                                       " JOIN sellers s ON s.id = o.seller_id"
                                       " ORDER BY o.n DESC, s.id LIMIT $2::int4",
                                       2);
}

static void render_seller(jbuf_t *b, const PGresult *res, int i)
{
    jbuf_puts(b, "{\"id\":");
    api_json_num(b, res, i, 0);
    jbuf_puts(b, ",\"user_id\":");
    api_json_num(b, res, i, 1);
    jbuf_puts(b, ",\"name\":");
    api_json_text(b, res, i, 2);
    jbuf_puts(b, ",\"description\":");
    api_json_text(b, res, i, 3);
    jbuf_puts(b, ",\"city_id\":");
    api_json_num(b, res, i, 4);
    jbuf_puts(b, ",\"district_id\":");
    api_json_num(b, res, i, 5);
    jbuf_puts(b, ",\"rating\":");
    api_json_num(b, res, i, 6);
    jbuf_puts(b, ",\"created_at\":");
    api_json_ts(b, res, i, 7);
}

typedef struct list_state {
    int limit;
} list_state_t;

static void on_list(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    list_state_t *ls = r->data;
    if (err != 0) {
        api_db_failed(r, err, res, "sellers");
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
        render_seller(b, res, i);
        jbuf_putc(b, '}');
    }
    jbuf_puts(b, "],\"next_cursor\":");
    if (more)
        api_json_cursor(b, CURSOR_ID, 0, api_int(res, n - 1, 0));
    else
        jbuf_puts(b, "null");
    jbuf_putc(b, '}');
    reply_json(r, 200, b);
}

void api_sellers_list(rctx_t *r)
{
    int64_t city = 0, district = 0;
    cursor_t cur = {0};
    int has_city = query_id(&r->query, "city_id", &city, &r->verr);
    int has_district = query_id(&r->query, "district_id", &district, &r->verr);
    int limit = query_limit(&r->query, 20, 100, &r->verr);
    const slice_t *cs = query_get(&r->query, "cursor", &r->verr);
    if (cs != NULL && cursor_decode(cs->ptr, cs->len, CURSOR_ID, &cur) != 0)
        verr_add(&r->verr, "cursor", "is malformed");
    if (r->verr.count > 0) {
        reply_invalid(r);
        return;
    }
    list_state_t *ls = h2o_mem_alloc_pool(&r->req->pool, sizeof(*ls));
    ls->limit = limit;
    r->data = ls;
    char v[4][24];
    const char *params[4];
    int n = 0, mask = 0;
    if (has_city > 0)
        mask |= F_CITY, snprintf(v[n], 24, "%lld", (long long)city), params[n] = v[n], n++;
    if (has_district > 0)
        mask |= F_DISTRICT, snprintf(v[n], 24, "%lld", (long long)district), params[n] = v[n], n++;
    if (cs != NULL)
        mask |= F_CURSOR, snprintf(v[n], 24, "%lld", (long long)cur.id), params[n] = v[n], n++;
    snprintf(v[n], 24, "%d", limit + 1), params[n] = v[n], n++;
    api_query(r, st_list[mask], params, on_list);
}

static void on_get(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "seller");
        return;
    }
    if (PQntuples(res) == 0) {
        reply_problem(r, 404, "seller %.*s not found", (int)r->params[0].len, r->params[0].ptr);
        return;
    }
    jbuf_t *b = reply_buffer(r);
    render_seller(b, res, 0);
    jbuf_putc(b, '}');
    reply_json(r, 200, b);
}

void api_sellers_get(rctx_t *r)
{
    int64_t id;
    if (api_path_id(r, 0, "seller", &id) != 0)
        return;
    char v[24];
    snprintf(v, sizeof(v), "%lld", (long long)id);
    const char *params[] = {v};
    cache_spec_t spec = {.ttl = r->w->server->cfg->cache_ttl_products, .ntags = 1};
    snprintf(spec.key, sizeof(spec.key), "seller:%s", v);
    cache_tag(spec.tags[0], "seller", id);
    api_cached_query(r, &spec, st_get, params, on_get);
}

static void on_popular(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "popular sellers");
        return;
    }
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"items\":[");
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        if (i)
            jbuf_putc(b, ',');
        render_seller(b, res, i);
        jbuf_puts(b, ",\"orders_30d\":");
        api_json_num(b, res, i, SELLER_NCOLS);
        jbuf_putc(b, '}');
    }
    jbuf_puts(b, "],\"next_cursor\":null}");
    reply_json(r, 200, b);
}

void api_sellers_popular(rctx_t *r)
{
    int64_t city = 0;
    int has_city = query_id(&r->query, "city_id", &city, &r->verr);
    int limit = query_limit(&r->query, 10, 100, &r->verr);
    if (r->verr.count > 0) {
        reply_invalid(r);
        return;
    }
    char c[24], l[16];
    snprintf(c, sizeof(c), "%lld", (long long)city);
    snprintf(l, sizeof(l), "%d", limit);
    /* The one list allowed to lag writes by its TTL (api.md): besides the
     * seller tag, nothing invalidates it; browsers may keep it a minute. */
    cache_spec_t spec = {.ttl = r->w->server->cfg->cache_ttl_popular_sellers, .ntags = 1};
    snprintf(spec.key, sizeof(spec.key), "popular:%s:%s", has_city > 0 ? c : "all", l);
    snprintf(spec.tags[0], sizeof(spec.tags[0]), "sellers");
    r->cache_control = "public, max-age=60";
    if (has_city > 0) {
        const char *params[] = {c, l};
        api_cached_query(r, &spec, st_popular_city, params, on_popular);
    } else {
        const char *params[] = {l};
        api_cached_query(r, &spec, st_popular, params, on_popular);
    }
}
