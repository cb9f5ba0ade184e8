/* The catalogue write path (api.md "Reference data", "Sellers",
 * "Products"): admin reference writes, seller profiles, products.
 *
 * Every request is one round trip. Authorisation (admin, owner) is decided
 * in the same SQL statement as the write, from the token's user id only:
 * each statement is data-modifying CTEs whose final SELECT returns the HTTP
 * status in column 0 and the written row after it, so "403 / 404 / 409 /
 * 422 / done" needs no second query and a refused request writes nothing.
 * Moving a seller is an SQL function (migrations/0003_catalogue.sql) because
 * its products' copies of the location need a second snapshot.
 *
 * Rows are rendered with the column order and JSON of the GET handlers
 * (products.c, sellers.c, reference.c), so a write's answer is byte for
 * byte what the next GET of the resource returns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "core/error.h"
#include "cache/cache.h"
#include "http/body.h"

#define NAME_MAX_CHARS 200
#define TEXT_MAX_CHARS 5000
#define SLUG_MAX_CHARS 100
#define PRICE_MAX 100000000000LL
#define STOCK_MAX 1000000

static const db_stmt_t *st_city_create, *st_district_create, *st_category_create;
static const db_stmt_t *st_seller_create, *st_seller_patch;
static const db_stmt_t *st_product_create, *st_product_patch, *st_product_delete;

/* Only an admin writes reference data; decided by the statement itself. */
#define ADMIN_CTE "admin AS (SELECT 1 FROM users u WHERE u.id = $1::int8 AND u.is_admin)"

/* A product row as products.c reads it, description last. */
#define PRODUCT_OUT API_PRODUCT_COLS ", p.description"

/* The product's owner, for PATCH/DELETE: no row = unknown product. */
#define PRODUCT_OWNER_CTE                                                                                         \
    "cur AS (SELECT p.id, s.user_id, p.city_id FROM products p JOIN sellers s ON s.id = p.seller_id"         \
    " WHERE p.id = $2::int8)"

void api_catalogue_write_init(void)
{
    /* ---- reference data: (status, row) ---- */
    st_city_create = db_stmt_register(
        "WITH " ADMIN_CTE ","
        " ins AS (INSERT INTO cities (name, slug) SELECT $2::text, $3::text WHERE EXISTS (SELECT 1 FROM admin)"
        "         ON CONFLICT (slug) DO NOTHING RETURNING id, name, slug)"
        " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM admin) THEN 403 WHEN ins.id IS NULL THEN 409 ELSE 201 END,"
        "        ins.id, ins.name, ins.slug"
        " FROM (VALUES (1)) one LEFT JOIN ins ON true",
        3);
    st_district_create = db_stmt_register(
        "WITH " ADMIN_CTE ", city AS (SELECT c.id FROM cities c WHERE c.id = $2::int8),"
        " ins AS (INSERT INTO districts (city_id, name, slug)"
        "         SELECT city.id, $3::text, $4::text FROM city WHERE EXISTS (SELECT 1 FROM admin)"
        "         ON CONFLICT (city_id, slug) DO NOTHING RETURNING id, city_id, name, slug)"
        " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM admin) THEN 403 WHEN NOT EXISTS (SELECT 1 FROM city) THEN 404"
        "             WHEN ins.id IS NULL THEN 409 ELSE 201 END,"
        "        ins.id, ins.city_id, ins.name, ins.slug"
        " FROM (VALUES (1)) one LEFT JOIN ins ON true",
        4);
    /* The tree has two levels: a parent must exist and be a root. Column 5
     * says which rule a 422 broke. */
    st_category_create = db_stmt_register(
        "WITH " ADMIN_CTE ", parent AS (SELECT c.id, c.parent_id FROM categories c WHERE c.id = $2::int8),"
        " ins AS (INSERT INTO categories (parent_id, name, slug)"
        "         SELECT $2::int8, $3::text, $4::text WHERE EXISTS (SELECT 1 FROM admin)"
        "            AND ($2::int8 IS NULL OR EXISTS (SELECT 1 FROM parent WHERE parent.parent_id IS NULL))"
        "         ON CONFLICT ((coalesce(parent_id, 0)), slug) DO NOTHING RETURNING id, parent_id, name, slug)"
        " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM admin) THEN 403"
        "             WHEN $2::int8 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM parent) THEN 422"
        "             WHEN EXISTS (SELECT 1 FROM parent WHERE parent.parent_id IS NOT NULL) THEN 422"
        "             WHEN ins.id IS NULL THEN 409 ELSE 201 END,"
        "        ins.id, ins.parent_id, ins.name, ins.slug,"
        "        CASE WHEN EXISTS (SELECT 1 FROM parent) THEN 'nested' ELSE 'unknown' END"
        " FROM (VALUES (1)) one LEFT JOIN ins ON true",
        4);

    /* ---- sellers: (status, field of a 422, SELLER_COLS of sellers.c) ---- */
    st_seller_create = db_stmt_register(
        "WITH u AS (SELECT x.id FROM users x WHERE x.id = $1::int8),"
        " c AS (SELECT x.id FROM cities x WHERE x.id = $4::int8),"
        " d AS (SELECT x.id FROM districts x WHERE x.id = $5::int8 AND x.city_id = $4::int8),"
        " ins AS (INSERT INTO sellers AS s (user_id, name, description, city_id, district_id)"
        "         SELECT u.id, $2::text, coalesce($3::text, ''), c.id, d.id FROM u, c, d"
        "         ON CONFLICT (user_id) DO NOTHING"
        "         RETURNING s.id, s.user_id, s.name, s.description, s.city_id, s.district_id, s.rating,"
        "                   s.created_at AT TIME ZONE 'UTC' AS created_utc)"
        " SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM u) THEN 401"
        "             WHEN NOT EXISTS (SELECT 1 FROM c) OR NOT EXISTS (SELECT 1 FROM d) THEN 422"
        "             WHEN ins.id IS NULL THEN 409 ELSE 201 END,"
        "        CASE WHEN NOT EXISTS (SELECT 1 FROM c) THEN 'city_id' ELSE 'district_id' END,"
        "        CASE WHEN NOT EXISTS (SELECT 1 FROM c) THEN 'is not a known city'"
        "             ELSE format('is not a district of city %s', $4::int8) END,"
        "        ins.id, ins.user_id, ins.name, ins.description, ins.city_id, ins.district_id, ins.rating,"
        "        ins.created_utc"
        " FROM (VALUES (1)) one LEFT JOIN ins ON true",
        5);
    st_seller_patch = db_stmt_register("SELECT http_status, field, message, id, user_id, name, description, city_id,"
                                       " district_id, rating, created_at"
                                       " FROM marketd_seller_patch($1::int8, $2::int8, $3::text, $4::text,"
                                       " $5::int8, $6::int8)",
                                       6);

    /* ---- products: (status, PRODUCT_OUT) ---- */
    /* The seller row is locked FOR SHARE: a concurrent move of the seller
     * (marketd_seller_patch) either sees this product or is seen by it. A
     * category's root is its parent or itself (the tree has two levels). */
    st_product_create = db_stmt_register(
        "WITH s AS (SELECT x.id, x.name, x.rating, x.city_id, x.district_id FROM sellers x"
        "           WHERE x.user_id = $1::int8 FOR SHARE),"
        " c AS (SELECT x.id, coalesce(x.parent_id, x.id) AS root FROM categories x WHERE x.id = $6::int8),"
        " ins AS (INSERT INTO products (seller_id, category_id, category_root_id, city_id, district_id, title,"
        "                               description, price, stock)"
        "         SELECT s.id, c.id, c.root, s.city_id, s.district_id, $2::text, coalesce($3::text, ''),"
        "                $4::int8, $5::int4 FROM s, c RETURNING *)"
        " SELECT CASE WHEN s.id IS NULL THEN 403 WHEN c.id IS NULL THEN 422 ELSE 201 END, " PRODUCT_OUT
        " FROM (VALUES (1)) one LEFT JOIN s ON true LEFT JOIN c ON true LEFT JOIN ins p ON true",
        6);
    /* Absent fields are NULL and keep the row's value. They read the
     * updated row itself (p.*), not a snapshot copy: an order taking stock
     * concurrently is not undone by a PATCH that does not name stock. $9:
     * whether anything was named (an empty PATCH leaves updated_at). */
    st_product_patch = db_stmt_register(
        "WITH " PRODUCT_OWNER_CTE ","
        " c AS (SELECT x.id, coalesce(x.parent_id, x.id) AS root FROM categories x WHERE x.id = $7::int8),"
        " upd AS (UPDATE products p SET title = coalesce($3::text, p.title),"
        "                               description = coalesce($4::text, p.description),"
        "                               price = coalesce($5::int8, p.price),"
        "                               stock = coalesce($6::int4, p.stock),"
        "                               category_id = coalesce(c.id, p.category_id),"
        "                               category_root_id = coalesce(c.root, p.category_root_id),"
        "                               status = coalesce($8::text, p.status),"
        "                               updated_at = CASE WHEN $9::bool THEN now() ELSE p.updated_at END"
        "         FROM cur LEFT JOIN c ON true"
        "         WHERE p.id = cur.id AND cur.user_id = $1::int8 AND ($7::int8 IS NULL OR c.id IS NOT NULL)"
        "         RETURNING p.*)"
        " SELECT CASE WHEN cur.id IS NULL THEN 404 WHEN cur.user_id <> $1::int8 THEN 403"
        "             WHEN p.id IS NULL THEN 422 ELSE 200 END, " PRODUCT_OUT
        " FROM (VALUES (1)) one LEFT JOIN cur ON true LEFT JOIN upd p ON true"
        " LEFT JOIN sellers s ON s.id = p.seller_id",
        9);
    /* Archiving an archived product is a no-op that still answers 204. */
    st_product_delete = db_stmt_register(
        "WITH " PRODUCT_OWNER_CTE ","
        " upd AS (UPDATE products p SET status = 'archived', updated_at = now() FROM cur"
        "         WHERE p.id = cur.id AND cur.user_id = $1::int8 AND p.status <> 'archived' RETURNING p.id)"
        " SELECT CASE WHEN cur.id IS NULL THEN 404 WHEN cur.user_id <> $1::int8 THEN 403 ELSE 204 END, cur.city_id"
        " FROM (VALUES (1)) one LEFT JOIN cur ON true",
        2);
}

/* ---- helpers ------------------------------------------------------------------ */

static void id_text(int64_t id, char out[24])
{
    snprintf(out, 24, "%lld", (long long)id);
}

/* The JSON body of a write; answers (400/415) and returns NULL when it is
 * not a JSON object. */
static json_t *read_body(rctx_t *r)
{
    char detail[256];
    int status;
    json_t *obj = body_parse(api_content_type(r), api_content_type_len(r), r->req->entity.base, r->req->entity.len,
                             &status, detail, sizeof(detail));
    if (obj == NULL)
        reply_problem(r, status, "%s", detail);
    return obj;
}

/* Copies a validated string out of the JSON object (NULL stays NULL). */
static const char *keep(rctx_t *r, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = h2o_mem_alloc_pool(&r->req->pool, n);
    memcpy(p, s, n);
    return p;
}

/* Status column 0 of a write statement's single row. */
static int answer_status(const PGresult *res)
{
    return atoi(PQgetvalue(res, 0, 0));
}

/* A slug: ^[a-z0-9][a-z0-9-]{0,99}$ (the CHECK of 0001). */
static int slug_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > SLUG_MAX_CHARS)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-');
        if (!ok)
            return 0;
    }
    return 1;
}

/* {"name","slug"}: both required. */
static void read_name_slug(json_t *obj, const char **name, const char **slug, verr_t *v)
{
    body_require(body_string(obj, "name", "name", 1, NAME_MAX_CHARS, name, v), "name", v);
    int rc = body_string(obj, "slug", "slug", 1, SLUG_MAX_CHARS, slug, v);
    body_require(rc, "slug", v);
    if (rc > 0 && !slug_valid(*slug))
        verr_add(v, "slug", "must be lowercase latin letters, digits and '-', not starting with '-'");
}


/* ---- reference data (admin) ------------------------------------------------------ */

enum { REF_CITY, REF_DISTRICT, REF_CATEGORY };
static const char *const ref_names[] = {"city", "district", "category"};

typedef struct ref_write {
    int kind;
    const char *slug;
    int64_t scope; /* the district's city, the category's parent; 0: none */
} ref_write_t;

/* Column 1 is the id; for districts and categories column 2 is the city
 * or the parent; then name, slug: the item shape of the GET lists. */
static void on_ref_created(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    ref_write_t *w = r->data;
    const char *what = ref_names[w->kind];
    if (err != 0) {
        api_db_failed(r, err, res, what);
        return;
    }
    switch (answer_status(res)) {
    case 201:
        break;
    case 403:
        reply_problem(r, 403, "only an administrator may create a %s", what);
        return;
    case 404:
        reply_problem(r, 404, "city %lld not found", (long long)w->scope);
        return;
    case 409:
        if (w->kind == REF_CITY)
            reply_problem(r, 409, "a city with slug \"%s\" already exists", w->slug);
        else if (w->kind == REF_DISTRICT)
            reply_problem(r, 409, "a district with slug \"%s\" already exists in city %lld", w->slug,
                          (long long)w->scope);
        else if (w->scope != 0)
            reply_problem(r, 409, "a category with slug \"%s\" already exists under category %lld", w->slug,
                          (long long)w->scope);
        else
            reply_problem(r, 409, "a root category with slug \"%s\" already exists", w->slug);
        return;
    case 422: /* categories only */
        if (PQgetvalue(res, 0, 5)[0] == 'n')
            verr_add(&r->verr, "parent_id", "is a sub-category; the tree has two levels");
        else
            verr_add(&r->verr, "parent_id", "is not a known category");
        reply_invalid(r);
        return;
    default:
        reply_error(r, MKD_EDB, what);
        return;
    }
    int c = 1;
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"id\":");
    api_json_num(b, res, 0, c++);
    if (w->kind == REF_DISTRICT) {
        jbuf_puts(b, ",\"city_id\":");
        api_json_num(b, res, 0, c++);
    } else if (w->kind == REF_CATEGORY) {
        jbuf_puts(b, ",\"parent_id\":");
        api_json_num(b, res, 0, c++);
    }
    jbuf_puts(b, ",\"name\":");
    api_json_text(b, res, 0, c++);
    jbuf_puts(b, ",\"slug\":");
    api_json_text(b, res, 0, c);
    jbuf_putc(b, '}');
    static const char *const tags[] = {"reference", NULL};
    cache_invalidate_and_reply(r, tags, 201, "application/json", b->data, b->len);
}

static void ref_create(rctx_t *r, int kind)
{
    int64_t uid, scope = 0;
    if (api_authenticate(r, &uid) != 0)
        return;
    if (kind == REF_DISTRICT && api_path_id(r, 0, "city", &scope) != 0)
        return;
    json_t *obj = read_body(r);
    if (obj == NULL)
        return;
    verr_t *v = &r->verr;
    const char *name = NULL, *slug = NULL;
    read_name_slug(obj, &name, &slug, v);
    int has_parent = 0;
    if (kind == REF_CATEGORY)
        has_parent = body_id(obj, "parent_id", "parent_id", 1, &scope, NULL, v) > 0;
    static const char *const allowed[] = {"name", "slug", NULL};
    static const char *const allowed_category[] = {"name", "slug", "parent_id", NULL};
    body_only(obj, kind == REF_CATEGORY ? allowed_category : allowed, v);
    if (v->count > 0) {
        json_decref(obj);
        reply_invalid(r);
        return;
    }
    ref_write_t *w = h2o_mem_alloc_pool(&r->req->pool, sizeof(*w));
    w->kind = kind;
    w->slug = keep(r, slug);
    w->scope = scope;
    r->data = w;
    char u[24], s[24];
    id_text(uid, u);
    id_text(scope, s);
    if (kind == REF_CITY) {
        const char *params[] = {u, name, slug};
        api_query(r, st_city_create, params, on_ref_created);
    } else if (kind == REF_DISTRICT) {
        const char *params[] = {u, s, name, slug};
        api_query(r, st_district_create, params, on_ref_created);
    } else {
        const char *params[] = {u, has_parent ? s : NULL, name, slug};
        api_query(r, st_category_create, params, on_ref_created);
    }
    json_decref(obj); /* after the query: the pool has copied the parameters */
}

void api_cities_create(rctx_t *r)
{
    ref_create(r, REF_CITY);
}

void api_districts_create(rctx_t *r)
{
    ref_create(r, REF_DISTRICT);
}

void api_categories_create(rctx_t *r)
{
    ref_create(r, REF_CATEGORY);
}

/* ---- sellers -------------------------------------------------------------------- */

/* Columns: status, field and message of a 422, then SELLER_COLS (sellers.c);
 * rendered exactly as GET /sellers/{id}. */
enum { S_STATUS, S_FIELD, S_MESSAGE, S_ROW };

static void on_seller_written(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "seller");
        return;
    }
    int status = answer_status(res);
    switch (status) {
    case 200:
    case 201:
        break;
    case 401:
        reply_problem(r, 401, "the token's user does not exist");
        return;
    case 403:
        reply_problem(r, 403, "seller %.*s belongs to another user", (int)r->params[0].len, r->params[0].ptr);
        return;
    case 404:
        reply_problem(r, 404, "seller %.*s not found", (int)r->params[0].len, r->params[0].ptr);
        return;
    case 409:
        reply_problem(r, 409, "this user already has a seller profile");
        return;
    case 422:
        verr_add(&r->verr, PQgetvalue(res, 0, S_FIELD), "%s", PQgetvalue(res, 0, S_MESSAGE));
        reply_invalid(r);
        return;
    default:
        reply_error(r, MKD_EDB, "seller");
        return;
    }
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"id\":");
    api_json_num(b, res, 0, S_ROW + 0);
    jbuf_puts(b, ",\"user_id\":");
    api_json_num(b, res, 0, S_ROW + 1);
    jbuf_puts(b, ",\"name\":");
    api_json_text(b, res, 0, S_ROW + 2);
    jbuf_puts(b, ",\"description\":");
    api_json_text(b, res, 0, S_ROW + 3);
    jbuf_puts(b, ",\"city_id\":");
    api_json_num(b, res, 0, S_ROW + 4);
    jbuf_puts(b, ",\"district_id\":");
    api_json_num(b, res, 0, S_ROW + 5);
    jbuf_puts(b, ",\"rating\":");
    api_json_num(b, res, 0, S_ROW + 6);
    jbuf_puts(b, ",\"created_at\":");
    api_json_ts(b, res, 0, S_ROW + 7);
    jbuf_putc(b, '}');
    if (status == 201) {
        char loc[48];
        int n = snprintf(loc, sizeof(loc), "/api/v1/sellers/%s", PQgetvalue(res, 0, S_ROW));
        reply_header(r, "location", loc, (size_t)n);
    }
    /* Product answers embed the seller's name and rating, and a move changes
     * which city's lists its products are in: "sellers" covers both. */
    char seller_tag[48];
    cache_tag(seller_tag, "seller", api_int(res, 0, S_ROW));
    const char *tags[] = {seller_tag, "sellers", NULL};
    cache_invalidate_and_reply(r, tags, status, "application/json", b->data, b->len);
}

/* name, description, city_id, district_id; all required on create except
 * the description (default ""). district_id is nullable in the schema but
 * api.md has every seller name its district. */
static void read_seller(json_t *obj, int create, const char **name, const char **description, int64_t *city,
                        int *has_city, int64_t *district, int *has_district, verr_t *v)
{
    int rc = body_string(obj, "name", "name", 1, NAME_MAX_CHARS, name, v);
    if (create)
        body_require(rc, "name", v);
    body_string(obj, "description", "description", 0, TEXT_MAX_CHARS, description, v);
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

void api_sellers_create(rctx_t *r)
{
    int64_t uid, city = 0, district = 0;
    if (api_authenticate(r, &uid) != 0)
        return;
    json_t *obj = read_body(r);
    if (obj == NULL)
        return;
    const char *name = NULL, *description = NULL;
    int has_city, has_district;
    read_seller(obj, 1, &name, &description, &city, &has_city, &district, &has_district, &r->verr);
    if (r->verr.count > 0) {
        json_decref(obj);
        reply_invalid(r);
        return;
    }
    char u[24], c[24], d[24];
    id_text(uid, u);
    id_text(city, c);
    id_text(district, d);
    const char *params[] = {u, name, description, c, d};
    api_query(r, st_seller_create, params, on_seller_written);
    json_decref(obj);
}

void api_sellers_patch(rctx_t *r)
{
    int64_t uid, sid, city = 0, district = 0;
    if (api_authenticate(r, &uid) != 0 || api_path_id(r, 0, "seller", &sid) != 0)
        return;
    json_t *obj = read_body(r);
    if (obj == NULL)
        return;
    const char *name = NULL, *description = NULL;
    int has_city, has_district;
    read_seller(obj, 0, &name, &description, &city, &has_city, &district, &has_district, &r->verr);
    if (r->verr.count > 0) {
        json_decref(obj);
        reply_invalid(r);
        return;
    }
    char u[24], s[24], c[24], d[24];
    id_text(uid, u);
    id_text(sid, s);
    id_text(city, c);
    id_text(district, d);
    const char *params[] = {u, s, name, description, has_city ? c : NULL, has_district ? d : NULL};
    api_query(r, st_seller_patch, params, on_seller_written);
    json_decref(obj);
}

/* ---- products ------------------------------------------------------------------- */

/* Column 0 is the status; the product follows (C_* + 1). Byte for byte the
 * JSON of GET /products/{id} (products.c render_product with the
 * description). */

static void on_product_written(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "product");
        return;
    }
    int status = answer_status(res);
    switch (status) {
    case 200:
    case 201:
        break;
    case 403:
        if (r->params[0].len == 0)
            reply_problem(r, 403, "only a seller may create products; create a seller profile first");
        else
            reply_problem(r, 403, "product %.*s belongs to another seller", (int)r->params[0].len,
                          r->params[0].ptr);
        return;
    case 404:
        reply_problem(r, 404, "product %.*s not found", (int)r->params[0].len, r->params[0].ptr);
        return;
    case 422:
        verr_add(&r->verr, "category_id", "is not a known category");
        reply_invalid(r);
        return;
    default:
        reply_error(r, MKD_EDB, "product");
        return;
    }
    jbuf_t *b = reply_buffer(r);
    api_render_product(r, b, res, 0, 1, 1);
    if (status == 201) {
        char loc[48];
        int n = snprintf(loc, sizeof(loc), "/api/v1/products/%s", PQgetvalue(res, 0, 1 + C_ID));
        reply_header(r, "location", loc, (size_t)n);
    }
    char product_tag[48], city_tag[48];
    cache_tag(product_tag, "product", api_int(res, 0, 1 + C_ID));
    cache_tag(city_tag, "products:city", api_int(res, 0, 1 + C_CITY_ID));
    const char *tags[] = {product_tag, city_tag, "products:all", NULL};
    cache_invalidate_and_reply(r, tags, status, "application/json", b->data, b->len);
}

/* The fields of POST (all but description required) and PATCH (any, and
 * status). Text parameters in out[] in statement order: title, description,
 * price, stock, category_id, status (NULL: absent). Returns how many fields
 * were named. */
static int read_product(rctx_t *r, json_t *obj, int create, const char *out[6], char num[3][24])
{
    verr_t *v = &r->verr;
    int n = 0, rc;
    int64_t price = 0, stock = 0, category = 0;
    const char *s = NULL;

    memset(out, 0, 6 * sizeof(out[0]));
    rc = body_string(obj, "title", "title", 1, NAME_MAX_CHARS, &out[0], v);
    if (create)
        body_require(rc, "title", v);
    n += rc > 0;
    n += body_string(obj, "description", "description", 0, TEXT_MAX_CHARS, &out[1], v) > 0;
    rc = body_int(obj, "price", "price", 1, PRICE_MAX, &price, v);
    if (create)
        body_require(rc, "price", v);
    if (rc > 0)
        id_text(price, num[0]), out[2] = num[0], n++;
    rc = body_int(obj, "stock", "stock", 0, STOCK_MAX, &stock, v);
    if (create)
        body_require(rc, "stock", v);
    if (rc > 0)
        id_text(stock, num[1]), out[3] = num[1], n++;
    rc = body_id(obj, "category_id", "category_id", 0, &category, NULL, v);
    if (create)
        body_require(rc, "category_id", v);
    if (rc > 0)
        id_text(category, num[2]), out[4] = num[2], n++;
    if (!create) {
        rc = body_string(obj, "status", "status", 1, 20, &s, v);
        if (rc > 0 && strcmp(s, "active") != 0 && strcmp(s, "archived") != 0)
            verr_add(v, "status", "must be active or archived");
        else if (rc > 0)
            out[5] = s, n++;
    }
    static const char *const allowed_create[] = {"title", "description", "price", "stock", "category_id", NULL};
    static const char *const allowed_patch[] = {"title",       "description", "price", "stock",
                                                "category_id", "status",      NULL};
    body_only(obj, create ? allowed_create : allowed_patch, v);
    return n;
}

void api_products_create(rctx_t *r)
{
    int64_t uid;
    if (api_authenticate(r, &uid) != 0)
        return;
    json_t *obj = read_body(r);
    if (obj == NULL)
        return;
    const char *f[6];
    char num[3][24];
    read_product(r, obj, 1, f, num);
    if (r->verr.count > 0) {
        json_decref(obj);
        reply_invalid(r);
        return;
    }
    char u[24];
    id_text(uid, u);
    const char *params[] = {u, f[0], f[1], f[2], f[3], f[4]};
    api_query(r, st_product_create, params, on_product_written);
    json_decref(obj);
}

void api_products_patch(rctx_t *r)
{
    int64_t uid, pid;
    if (api_authenticate(r, &uid) != 0 || api_path_id(r, 0, "product", &pid) != 0)
        return;
    json_t *obj = read_body(r);
    if (obj == NULL)
        return;
    const char *f[6];
    char num[3][24];
    int named = read_product(r, obj, 0, f, num);
    if (r->verr.count > 0) {
        json_decref(obj);
        reply_invalid(r);
        return;
    }
    char u[24], p[24];
    id_text(uid, u);
    id_text(pid, p);
    const char *params[] = {u, p, f[0], f[1], f[2], f[3], f[4], f[5], named > 0 ? "true" : "false"};
    api_query(r, st_product_patch, params, on_product_written);
    json_decref(obj);
}

static void on_product_deleted(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "product");
        return;
    }
    switch (answer_status(res)) {
    case 204: {
        int64_t id = 0;
        parse_id(r->params[0], &id);
        char product_tag[48], city_tag[48];
        cache_tag(product_tag, "product", id);
        cache_tag(city_tag, "products:city", api_int(res, 0, 1));
        const char *tags[] = {product_tag, city_tag, "products:all", NULL};
        cache_invalidate_and_reply(r, tags, 204, "application/json", "", 0);
        return;
    }
    case 403:
        reply_problem(r, 403, "product %.*s belongs to another seller", (int)r->params[0].len, r->params[0].ptr);
        return;
    case 404:
        reply_problem(r, 404, "product %.*s not found", (int)r->params[0].len, r->params[0].ptr);
        return;
    }
    reply_error(r, MKD_EDB, "product");
}

void api_products_delete(rctx_t *r)
{
    int64_t uid, pid;
    if (api_authenticate(r, &uid) != 0 || api_path_id(r, 0, "product", &pid) != 0)
        return;
    char u[24], p[24];
    id_text(uid, u);
    id_text(pid, p);
    const char *params[] = {u, p};
    api_query(r, st_product_delete, params, on_product_deleted);
}
