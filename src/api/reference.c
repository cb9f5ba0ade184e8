/* Reference data (api.md "Reference data"): cities, the districts of a
 * city, categories (a two-level tree). Small whole lists, each capped (S12)
 * far above any real catalogue, cached under one tag; administrators create
 * rows. */
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "api/fields.h"
#include "api/render.h"
#include "core/error.h"

static const api_col_t city_cols[] = {
    {"id", "c.id", COL_NUM},
    {"name", "c.name", COL_TEXT},
    {"slug", "c.slug", COL_TEXT},
};
static const api_col_t district_cols[] = {
    {"id", "d.id", COL_NUM},
    {"city_id", "d.city_id", COL_NUM},
    {"name", "d.name", COL_TEXT},
    {"slug", "d.slug", COL_TEXT},
};
static const api_col_t category_cols[] = {
    {"id", "c.id", COL_NUM},
    {"parent_id", "c.parent_id", COL_NUM},
    {"name", "c.name", COL_TEXT},
    {"slug", "c.slug", COL_TEXT},
};
#define CITY     API_TABLE(city_cols)
#define DISTRICT API_TABLE(district_cols)
#define CATEGORY API_TABLE(category_cols)

static const db_stmt_t *st_cities, *st_districts, *st_categories;
static const db_stmt_t *st_city_create, *st_district_create, *st_category_create;

/* Every list of one kind: rows from column 0, all of them. Districts skip
 * the NULL row of a city without districts (see st_districts). */
static void render_list(jbuf_t *b, api_table_t t, const PGresult *res)
{
    api_page_begin(b);
    for (int i = 0, k = 0, n = PQntuples(res); i < n; i++) {
        if (PQgetisnull(res, i, 0))
            continue;
        api_page_item(b, k++);
        api_render_row(b, t, 1, res, i, 0, "");
    }
    api_page_end(b, NULL);
}

/* ---- reads ---------------------------------------------------------------------------- */

static int render_cities(rctx_t *r, PGresult *res, jbuf_t *b)
{
    render_list(b, CITY, res);
    return 0;
}

static int render_districts(rctx_t *r, PGresult *res, jbuf_t *b)
{
    if (PQntuples(res) == 0)
        return MKD_ENOTFOUND; /* no such city */
    render_list(b, DISTRICT, res);
    return 0;
}

static int render_categories(rctx_t *r, PGresult *res, jbuf_t *b)
{
    render_list(b, CATEGORY, res);
    return 0;
}

static void cities_list(rctx_t *r)
{
    cache_tags_t tags;
    tags_for_reference(&tags);
    api_read(r, &(api_read_t){st_cities, NULL, render_cities, "cities", "cities", &tags});
}

/* Every reference list has the one tag, whatever the city. */
static void reference_tags(cache_tags_t *t, int64_t city)
{
    tags_for_reference(t);
}

static void districts_list(rctx_t *r)
{
    api_read_by_id(r, "city", "districts", st_districts, NULL, render_districts, reference_tags);
}

static void categories_list(rctx_t *r)
{
    cache_tags_t tags;
    tags_for_reference(&tags);
    api_read(r, &(api_read_t){st_categories, NULL, render_categories, "categories", "categories", &tags});
}

/* ---- writes (administrators; the dispatcher checked) ------------------------------------- */

enum { REF_CITY, REF_DISTRICT, REF_CATEGORY };

typedef struct ref_write {
    int kind;
    const char *slug;
    int64_t scope; /* the district's city, the category's parent; 0: none */
} ref_write_t;

/* Column 0: the outcome; categories add the reason of an "invalid" in
 * column 1; the row follows. */
static void on_created(rctx_t *r, PGresult *res)
{
    ref_write_t *w = r->data;
    int rc = api_outcome(res, 0);
    switch (rc) {
    case MKD_OK:
        break;
    case MKD_ENOTFOUND: /* districts: the city */
        reply_error(r, rc, "city %lld not found", (long long)w->scope);
        return;
    case MKD_ECONFLICT:
        if (w->kind == REF_CITY)
            reply_error(r, rc, "a city with slug \"%s\" already exists", w->slug);
        else if (w->kind == REF_DISTRICT)
            reply_error(r, rc, "a district with slug \"%s\" already exists in city %lld", w->slug,
                        (long long)w->scope);
        else if (w->scope != 0)
            reply_error(r, rc, "a category with slug \"%s\" already exists under category %lld", w->slug,
                        (long long)w->scope);
        else
            reply_error(r, rc, "a root category with slug \"%s\" already exists", w->slug);
        return;
    case MKD_EINVAL: /* categories: the parent */
        if (PQgetvalue(res, 0, 1)[0] == 'n')
            verr_add(&r->verr, "parent_id", "is a sub-category; the tree has two levels");
        else
            verr_add(&r->verr, "parent_id", "is not a known category");
        reply_invalid(r);
        return;
    default:
        reply_error(r, MKD_EINTERNAL, "reference write: unexpected outcome %s", PQgetvalue(res, 0, 0));
        return;
    }
    jbuf_t *b = reply_buffer(r);
    if (w->kind == REF_CITY)
        api_render_row(b, CITY, 1, res, 0, 1, "");
    else if (w->kind == REF_DISTRICT)
        api_render_row(b, DISTRICT, 1, res, 0, 1, "");
    else
        api_render_row(b, CATEGORY, 1, res, 0, 2, "");
    cache_tags_t tags = {0};
    tags_reference_changed(&tags);
    api_reply_written(r, &tags, 201, "application/json", b->data, b->len);
}

static void create(rctx_t *r, int kind)
{
    int64_t scope = 0;
    if (kind == REF_DISTRICT && api_path_id(r, 0, "city", &scope) != 0)
        return;
    verr_t *v = &r->verr;
    const char *name = NULL, *slug = NULL;
    field_name_slug(r->body, &name, &slug, v);
    int has_parent = 0;
    if (kind == REF_CATEGORY)
        has_parent = body_id(r->body, "parent_id", "parent_id", 1, &scope, NULL, v) > 0;
    static const char *const allowed[] = {"name", "slug", NULL};
    static const char *const allowed_category[] = {"name", "slug", "parent_id", NULL};
    body_only(r->body, kind == REF_CATEGORY ? allowed_category : allowed, v);
    if (reply_if_invalid(r))
        return;
    ref_write_t *w = h2o_mem_alloc_pool(&r->req->pool, sizeof(*w));
    w->kind = kind;
    w->slug = slug;
    w->scope = scope;
    r->data = w;
    char s[24];
    api_id_text(scope, s);
    if (kind == REF_CITY)
        api_query(r, st_city_create, (const char *[]){name, slug}, on_created);
    else if (kind == REF_DISTRICT)
        api_query(r, st_district_create, (const char *[]){s, name, slug}, on_created);
    else
        api_query(r, st_category_create, (const char *[]){has_parent ? s : NULL, name, slug}, on_created);
}

static void cities_create(rctx_t *r)
{
    create(r, REF_CITY);
}

static void districts_create(rctx_t *r)
{
    create(r, REF_DISTRICT);
}

static void categories_create(rctx_t *r)
{
    create(r, REF_CATEGORY);
}

/* ---- statements ------------------------------------------------------------------------- */

static void reference_init(void)
{
    st_cities =
        api_stmt(0, "SELECT %s FROM cities c ORDER BY c.name, c.id LIMIT 10000", api_select_list(CITY, 1));
    /* One round trip tells "unknown city" (no row) and "no districts" (one
     * row of NULLs) apart from the list itself. */
    st_districts = api_stmt(1,
                            "SELECT %s FROM cities x LEFT JOIN districts d ON d.city_id = x.id"
                            " WHERE x.id = $1::int8 ORDER BY d.name, d.id LIMIT 10000",
                            api_select_list(DISTRICT, 1));
    /* Tree order: each root followed by its children. */
    st_categories =
        api_stmt(0,
                 "SELECT %s FROM categories c"
                 " ORDER BY coalesce(c.parent_id, c.id), c.parent_id NULLS FIRST, c.name, c.id LIMIT 10000",
                 api_select_list(CATEGORY, 1));
    st_city_create = api_stmt(2,
                              "WITH ins AS (INSERT INTO cities (name, slug) VALUES ($1::text, $2::text)"
                              "             ON CONFLICT (slug) DO NOTHING RETURNING *)"
                              " SELECT CASE WHEN c.id IS NULL THEN 'conflict' ELSE 'ok' END, %s"
                              " FROM (VALUES (1)) one LEFT JOIN ins c ON true",
                              api_select_list(CITY, 1));
    st_district_create = api_stmt(3,
                                  "WITH city AS (SELECT x.id FROM cities x WHERE x.id = $1::int8),"
                                  " ins AS (INSERT INTO districts (city_id, name, slug)"
                                  "         SELECT city.id, $2::text, $3::text FROM city"
                                  "         ON CONFLICT (city_id, slug) DO NOTHING RETURNING *)"
                                  " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM city) THEN 'not_found'"
                                  "             WHEN d.id IS NULL THEN 'conflict' ELSE 'ok' END, %s"
                                  " FROM (VALUES (1)) one LEFT JOIN ins d ON true",
                                  api_select_list(DISTRICT, 1));
    /* The tree has two levels: a parent must exist and be a root. Column 1
     * says which rule an "invalid" broke. */
    st_category_create = api_stmt(
        3,
        "WITH parent AS (SELECT x.id, x.parent_id FROM categories x WHERE x.id = $1::int8),"
        " ins AS (INSERT INTO categories (parent_id, name, slug)"
        "         SELECT $1::int8, $2::text, $3::text"
        "          WHERE $1::int8 IS NULL OR EXISTS (SELECT 1 FROM parent WHERE parent.parent_id IS NULL)"
        "         ON CONFLICT ((coalesce(parent_id, 0)), slug) DO NOTHING RETURNING *)"
        " SELECT CASE WHEN $1::int8 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM parent) THEN 'invalid'"
        "             WHEN EXISTS (SELECT 1 FROM parent WHERE parent.parent_id IS NOT NULL) THEN 'invalid'"
        "             WHEN c.id IS NULL THEN 'conflict' ELSE 'ok' END,"
        "        CASE WHEN EXISTS (SELECT 1 FROM parent) THEN 'nested' ELSE 'unknown' END, %s"
        " FROM (VALUES (1)) one LEFT JOIN ins c ON true",
        api_select_list(CATEGORY, 1));
}

static const cache_policy_t reference_cache = {.ttl = TTL_REFERENCE};

static const route_t routes[] = {
    {.method = M_GET,
     .pattern = "/api/v1/cities",
     HANDLER(cities_list),
     .cache = &reference_cache,
     .db = DB_READ,
     .limit = LIMIT_API},
    {.method = M_POST,
     .pattern = "/api/v1/cities",
     HANDLER(cities_create),
     .auth = AUTH_ADMIN,
     .body = BODY_JSON,
     .limit = LIMIT_API},
    {.method = M_GET,
     .pattern = "/api/v1/cities/{id}/districts",
     HANDLER(districts_list),
     .cache = &reference_cache,
     .db = DB_READ,
     .limit = LIMIT_API},
    {.method = M_POST,
     .pattern = "/api/v1/cities/{id}/districts",
     HANDLER(districts_create),
     .auth = AUTH_ADMIN,
     .body = BODY_JSON,
     .limit = LIMIT_API},
    {.method = M_GET,
     .pattern = "/api/v1/categories",
     HANDLER(categories_list),
     .cache = &reference_cache,
     .db = DB_READ,
     .limit = LIMIT_API},
    {.method = M_POST,
     .pattern = "/api/v1/categories",
     HANDLER(categories_create),
     .auth = AUTH_ADMIN,
     .body = BODY_JSON,
     .limit = LIMIT_API},
};

const api_module_t api_reference = {"reference", routes, sizeof(routes) / sizeof(routes[0]), reference_init,
                                    NULL};
