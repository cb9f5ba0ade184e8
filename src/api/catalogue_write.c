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

/* The product in the column order of products.c (PRODUCT_COLS, then the
 * description), read from `p` (the written row) and `s` (its seller). */
#define PRODUCT_OUT                                                                                               \
    "p.id, p.seller_id, s.name, s.rating, p.category_id, p.title, p.price, p.currency, p.stock, p.city_id, "     \
    "p.district_id, p.images, p.status, p.created_at AT TIME ZONE 'UTC', p.updated_at AT TIME ZONE 'UTC', "     \
    "p.description"
enum {
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

/* The product's owner, for PATCH/DELETE: no row = unknown product. */
#define PRODUCT_OWNER_CTE                                                                                         \
    "cur AS (SELECT p.id, s.user_id FROM products p JOIN sellers s ON s.id = p.seller_id WHERE p.id = $2::int8)"

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
        "        CASE WHEN NOT EXISTS (SELECT 1 FROM c) THEN 'city_id' ELSE 'district_id' END, NULL::text,"
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
        " SELECT CASE WHEN cur.id IS NULL THEN 404 WHEN cur.user_id <> $1::int8 THEN 403 ELSE 204 END"
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

