/* Reference data (api.md): cities, districts of a city, categories. Small,
 * whole lists, each capped (S12) far above any real catalogue. */
#include <stdio.h>

#include "api/api.h"
#include "api/common.h"
#include "cache/cache.h"

static const db_stmt_t *st_cities, *st_districts, *st_categories;

void api_reference_init(void)
{
    st_cities = db_stmt_register("SELECT id, name, slug FROM cities ORDER BY name, id LIMIT 10000", 0);
    /* One round trip tells both "unknown city" (no row) and "no districts"
     * (one row of NULLs) apart from the list itself. */
    st_districts = db_stmt_register("SELECT d.id, c.id, d.name, d.slug FROM cities c"
                                    " LEFT JOIN districts d ON d.city_id = c.id"
                                    " WHERE c.id = $1::int8 ORDER BY d.name, d.id LIMIT 10000",
                                    1);
    /* Tree order: each root followed by its children. */
    st_categories = db_stmt_register("SELECT id, parent_id, name, slug FROM categories"
                                     " ORDER BY coalesce(parent_id, id), parent_id NULLS FIRST, name, id LIMIT 10000",
                                     0);
}

static void on_cities(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "cities");
        return;
    }
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"items\":[");
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        jbuf_puts(b, i ? ",{\"id\":" : "{\"id\":");
        api_json_num(b, res, i, 0);
        jbuf_puts(b, ",\"name\":");
        api_json_text(b, res, i, 1);
        jbuf_puts(b, ",\"slug\":");
        api_json_text(b, res, i, 2);
        jbuf_putc(b, '}');
    }
    jbuf_puts(b, "],\"next_cursor\":null}");
    reply_json(r, 200, b);
}

/* Reference lists: one entry each, invalidated by any reference write. */
static void reference_spec(rctx_t *r, cache_spec_t *spec, const char *key)
{
    snprintf(spec->key, sizeof(spec->key), "%s", key);
    spec->ttl = r->w->server->cfg->cache_ttl_reference;
    spec->ntags = 1;
    snprintf(spec->tags[0], sizeof(spec->tags[0]), "reference");
}

void api_cities_list(rctx_t *r)
{
    cache_spec_t spec;
    reference_spec(r, &spec, "cities");
    api_cached_query(r, &spec, st_cities, NULL, on_cities);
}

static void on_districts(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "districts");
        return;
    }
    if (PQntuples(res) == 0) {
        reply_problem(r, 404, "city %.*s not found", (int)r->params[0].len, r->params[0].ptr);
        return;
    }
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"items\":[");
    for (int i = 0, k = 0, n = PQntuples(res); i < n; i++) {
        if (PQgetisnull(res, i, 0))
            continue;
        jbuf_puts(b, k++ ? ",{\"id\":" : "{\"id\":");
        api_json_num(b, res, i, 0);
        jbuf_puts(b, ",\"city_id\":");
        api_json_num(b, res, i, 1);
        jbuf_puts(b, ",\"name\":");
        api_json_text(b, res, i, 2);
        jbuf_puts(b, ",\"slug\":");
        api_json_text(b, res, i, 3);
        jbuf_putc(b, '}');
    }
    jbuf_puts(b, "],\"next_cursor\":null}");
    reply_json(r, 200, b);
}

void api_districts_list(rctx_t *r)
{
    int64_t city;
    if (api_path_id(r, 0, "city", &city) != 0)
        return;
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)city);
    const char *params[] = {id};
    cache_spec_t spec;
    char key[48];
    snprintf(key, sizeof(key), "districts:%s", id);
    reference_spec(r, &spec, key);
    api_cached_query(r, &spec, st_districts, params, on_districts);
}

static void on_categories(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "categories");
        return;
    }
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"items\":[");
    for (int i = 0, n = PQntuples(res); i < n; i++) {
        jbuf_puts(b, i ? ",{\"id\":" : "{\"id\":");
        api_json_num(b, res, i, 0);
        jbuf_puts(b, ",\"parent_id\":");
        api_json_num(b, res, i, 1);
        jbuf_puts(b, ",\"name\":");
        api_json_text(b, res, i, 2);
        jbuf_puts(b, ",\"slug\":");
        api_json_text(b, res, i, 3);
        jbuf_putc(b, '}');
    }
    jbuf_puts(b, "],\"next_cursor\":null}");
    reply_json(r, 200, b);
}

void api_categories_list(rctx_t *r)
{
    cache_spec_t spec;
    reference_spec(r, &spec, "categories");
    api_cached_query(r, &spec, st_categories, NULL, on_categories);
}
