/* Products (api.md "Products"): the filtered, sorted, keyset-paginated
 * list and the detail — each one query with the seller joined in (no N+1,
 * S12) — and a seller's own products: create, change, archive. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/fields.h"
#include "api/render.h"
#include "core/error.h"
#include "core/timefmt.h"

/* The one product table: lists, the detail and the write answers render
 * from it, so a write answers byte for byte what the next GET returns. */
static const api_col_t product_cols[] = {
    {"id", "p.id", COL_NUM},
    {"seller_id", "p.seller_id", COL_NUM},
    {"seller", NULL, COL_OBJECT},
    {"id", "p.seller_id", COL_NUM},
    {"name", "s.name", COL_TEXT},
    {"rating", "s.rating", COL_NUM},
    {NULL, NULL, COL_END},
    {"category_id", "p.category_id", COL_NUM},
    {"title", "p.title", COL_TEXT},
    {"description", "p.description", COL_TEXT, 1},
    {"price", "p.price", COL_NUM},
    {"currency", "p.currency", COL_TEXT},
    {"stock", "p.stock", COL_NUM},
    {"city_id", "p.city_id", COL_NUM},
    {"district_id", "p.district_id", COL_NUM},
    {"images", "p.images", COL_IMAGES},
    {"status", "p.status", COL_TEXT},
    {"created_at", "p.created_at AT TIME ZONE 'UTC'", COL_TS},
    {"updated_at", "p.updated_at AT TIME ZONE 'UTC'", COL_TS},
};
#define PRODUCT API_TABLE(product_cols)

enum { SORT_NEWEST, SORT_PRICE_ASC, SORT_PRICE_DESC, NSORTS };
static const char *const sort_names[NSORTS] = {"newest", "price_asc", "price_desc"};
static const int sort_cursor_kinds[NSORTS] = {CURSOR_NEWEST, CURSOR_PRICE_ASC, CURSOR_PRICE_DESC};
enum {
    F_CITY = 1 << 0,
    F_DISTRICT = 1 << 1,
    F_CATEGORY = 1 << 2,
    F_SELLER = 1 << 3,
    F_MIN_PRICE = 1 << 4,
    F_MAX_PRICE = 1 << 5,
    F_CURSOR = 1 << 6,
    NMASKS = 1 << 7,
};
#define MAX_WORDS   5
#define MAX_Q_BYTES 200
#define NVARIANTS   (NSORTS * (MAX_WORDS + 1) * NMASKS)

static const db_stmt_t *st_list[NVARIANTS];
static const db_stmt_t *st_get, *st_get_batch, *st_create, *st_patch, *st_delete;
static int col_id, col_price, col_created_at; /* in the list's result */

static int variant(int sort, int nwords, int mask)
{
    return (sort * (MAX_WORDS + 1) + nwords) * NMASKS + mask;
}

/* ---- the list ---------------------------------------------------------------------------- */

typedef struct list_params {
    int64_t city, district, category, seller, min_price, max_price;
    int mask, sort, limit, nwords;
    slice_t words[MAX_WORDS]; /* q split on whitespace */
    cursor_t cursor;
} list_params_t;

/* The next whitespace-separated word of s at *pos; 0 when none is left. */
static int next_word(slice_t s, size_t *pos, slice_t *word)
{
    size_t i = *pos;
    while (i < s.len && (s.ptr[i] == ' ' || s.ptr[i] == '\t' || s.ptr[i] == '\n' || s.ptr[i] == '\r'))
        i++;
    size_t start = i;
    while (i < s.len && !(s.ptr[i] == ' ' || s.ptr[i] == '\t' || s.ptr[i] == '\n' || s.ptr[i] == '\r'))
        i++;
    *pos = i;
    *word = (slice_t){s.ptr + start, i - start};
    return i > start;
}

/* Reads and validates the query string into p; 0, or -1 with r->verr set. */
static int read_list_params(rctx_t *r, list_params_t *p)
{
    const query_t *q = &r->query;
    verr_t *v = &r->verr;
    memset(p, 0, sizeof(*p));
    p->mask |= query_id(q, "city_id", &p->city, v) > 0 ? F_CITY : 0;
    p->mask |= query_id(q, "district_id", &p->district, v) > 0 ? F_DISTRICT : 0;
    p->mask |= query_id(q, "category_id", &p->category, v) > 0 ? F_CATEGORY : 0;
    p->mask |= query_id(q, "seller_id", &p->seller, v) > 0 ? F_SELLER : 0;
    p->mask |= query_int(q, "min_price", 0, FIELD_PRICE_MAX, &p->min_price, v) > 0 ? F_MIN_PRICE : 0;
    p->mask |= query_int(q, "max_price", 0, FIELD_PRICE_MAX, &p->max_price, v) > 0 ? F_MAX_PRICE : 0;
    p->limit = query_limit(q, 20, 100, v);
    const slice_t *s = query_get(q, "sort", v);
    for (int k = 0; s != NULL && k < NSORTS; k++)
        if (slice_eq(*s, sort_names[k]))
            p->sort = k, s = NULL;
    if (s != NULL)
        verr_add(v, "sort", "must be one of newest, price_asc, price_desc");
    const slice_t *qs = query_get(q, "q", v);
    if (qs != NULL && qs->len > MAX_Q_BYTES) {
        verr_add(v, "q", "must be at most %d bytes", MAX_Q_BYTES);
    } else if (qs != NULL && !utf8_valid(qs->ptr, qs->len)) {
        verr_add(v, "q", "must be valid UTF-8 text");
    } else if (qs != NULL) {
        size_t pos = 0;
        slice_t w;
        while (next_word(*qs, &pos, &w)) {
            if (p->nwords == MAX_WORDS) {
                verr_add(v, "q", "must have at most %d words", MAX_WORDS);
                break;
            }
            p->words[p->nwords++] = w;
        }
    }
    const slice_t *cs = query_get(q, "cursor", v);
    if (cs != NULL) {
        if (cursor_decode(cs->ptr, cs->len, sort_cursor_kinds[p->sort], &p->cursor) != 0)
            verr_add(v, "cursor", "is malformed or belongs to another sort");
        else
            p->mask |= F_CURSOR;
    }
    return v->count > 0 ? -1 : 0;
}

/* A word as a LIKE pattern "%word%" with % _ \ escaped, in the request pool. */
static const char *like_pattern(rctx_t *r, slice_t w)
{
    char *p = h2o_mem_alloc_pool(&r->req->pool, w.len * 2 + 3);
    size_t o = 0;
    p[o++] = '%';
    for (size_t k = 0; k < w.len; k++) {
        if (w.ptr[k] == '%' || w.ptr[k] == '_' || w.ptr[k] == '\\')
            p[o++] = '\\';
        p[o++] = w.ptr[k];
    }
    p[o++] = '%';
    p[o] = '\0';
    return p;
}

/*
 * The cache key is the normalised request: fixed parameter order, defaults
 * filled in, q as its words folded to lower case and single-spaced; so
 * ?limit=20&sort=newest and no parameters share one entry. Pages after the
 * first (cursor) are not cached: they would multiply the key space by the
 * page count for little reuse. Long keys are hashed.
 */
static void list_key(const list_params_t *p, char key[CACHE_KEY_MAX])
{
    key[0] = '\0';
    if (p->mask & F_CURSOR)
        return;
    char qn[MAX_Q_BYTES + 1];
    size_t qlen = 0;
    for (int i = 0; i < p->nwords; i++) {
        if (qlen > 0)
            qn[qlen++] = ' ';
        memcpy(qn + qlen, p->words[i].ptr, p->words[i].len);
        qlen += p->words[i].len;
    }
    qn[qlen] = '\0';
    cache_fold_case(qn, qlen);
    int m = p->mask;
    char canon[512];
    int cn =
        snprintf(canon, sizeof(canon), "s=%s&l=%d&c=%lld&d=%lld&k=%lld&v=%lld&mn=%lld&mx=%lld&q=%s",
                 sort_names[p->sort], p->limit, (long long)(m & F_CITY ? p->city : 0),
                 (long long)(m & F_DISTRICT ? p->district : 0), (long long)(m & F_CATEGORY ? p->category : 0),
                 (long long)(m & F_SELLER ? p->seller : 0), (long long)(m & F_MIN_PRICE ? p->min_price : -1),
                 (long long)(m & F_MAX_PRICE ? p->max_price : -1), qn);
    if (cn > 0 && (size_t)cn < CACHE_KEY_MAX - 10) {
        memcpy(key, "products:", 9);
        memcpy(key + 9, canon, (size_t)cn + 1);
    } else {
        unsigned char h[crypto_generichash_BYTES];
        char hex[2 * crypto_generichash_BYTES + 1];
        crypto_generichash(h, sizeof(h), (const unsigned char *)canon, strlen(canon), NULL, 0);
        sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
        snprintf(key, CACHE_KEY_MAX, "products:h:%s", hex);
    }
}

static void product_item(jbuf_t *b, const PGresult *res, int i, const void *arg)
{
    api_render_row(b, PRODUCT, 0, res, i, 0, api_config()->cdn_base_url);
}

/* The sort key of the last row: created_at (µs) or the price. */
static void product_cursor(const PGresult *res, int last, const void *arg, cursor_t *next)
{
    const list_params_t *p = arg;
    *next = (cursor_t){sort_cursor_kinds[p->sort], 0, api_int(res, last, col_id)};
    if (p->sort == SORT_NEWEST)
        ts_parse_pg(PQgetvalue(res, last, col_created_at), (size_t)PQgetlength(res, last, col_created_at),
                    &next->key);
    else
        next->key = api_int(res, last, col_price);
}

static int render_list(rctx_t *r, PGresult *res, jbuf_t *b)
{
    const list_params_t *p = r->data;
    api_render_keyset_page(b, res, p->limit, product_item, product_cursor, p);
    return 0;
}

static void products_list(rctx_t *r)
{
    list_params_t *p = h2o_mem_alloc_pool(&r->req->pool, sizeof(*p));
    if (read_list_params(r, p) != 0) {
        reply_invalid(r);
        return;
    }
    r->data = p;
    /* Parameters in the order build_list_sql numbers them. */
    char num[10][24], key[TS_BUFSZ];
    const char *params[8 + MAX_WORDS + 2];
    int n = 0, k = 0;
#define NUM(val) (api_id_text((val), num[k]), params[n++] = num[k++])
    if (p->mask & F_CITY)
        NUM(p->city);
    if (p->mask & F_DISTRICT)
        NUM(p->district);
    if (p->mask & F_CATEGORY)
        NUM(p->category);
    if (p->mask & F_SELLER)
        NUM(p->seller);
    if (p->mask & F_MIN_PRICE)
        NUM(p->min_price);
    if (p->mask & F_MAX_PRICE)
        NUM(p->max_price);
    for (int w = 0; w < p->nwords; w++)
        params[n++] = like_pattern(r, p->words[w]);
    if (p->mask & F_CURSOR) {
        if (p->sort == SORT_NEWEST) {
            ts_format_pg(p->cursor.key, key);
            params[n++] = key;
        } else {
            NUM(p->cursor.key);
        }
        NUM(p->cursor.id);
    }
    NUM(p->limit + 1);
#undef NUM
    char ckey[CACHE_KEY_MAX];
    list_key(p, ckey);
    cache_tags_t tags;
    tags_for_product_list(&tags, p->mask & F_CITY ? p->city : 0);
    api_read(r, &(api_read_t){st_list[variant(p->sort, p->nwords, p->mask)], params, render_list, "products",
                              ckey, &tags});
}

/* Builds the SQL of one filter/sort combination. Each combination is its own
 * prepared statement, so PostgreSQL plans it for the index that fits
 * (docs/indexes.md) instead of one generic plan full of "$1 IS NULL OR". */
static const db_stmt_t *list_statement(const char *cols, int sort, int nwords, int mask)
{
    static const char *const order_by[NSORTS] = {
        " ORDER BY p.created_at DESC, p.id DESC",
        " ORDER BY p.price, p.id",
        " ORDER BY p.price DESC, p.id",
    };
    char where[1024];
    size_t len = 0;
    int n = 0;
    where[0] = '\0';
#define ADD(...) len += (size_t)snprintf(where + len, sizeof(where) - len, __VA_ARGS__)
    if (mask & F_CITY)
        ADD(" AND p.city_id = $%d::int8", ++n);
    if (mask & F_DISTRICT)
        ADD(" AND p.district_id = $%d::int8", ++n);
    if (mask & F_CATEGORY) {
        /* A category includes its sub-categories. Every product carries its
         * root category, so "root = X's root" is an index condition and the
         * second clause narrows a leaf X to itself. */
        n++;
        ADD(" AND p.category_root_id = (SELECT coalesce(c.parent_id, c.id) FROM categories c WHERE c.id = "
            "$%d::int8)"
            " AND (p.category_id = $%d::int8 OR p.category_root_id = $%d::int8)",
            n, n, n);
    }
    if (mask & F_SELLER)
        ADD(" AND p.seller_id = $%d::int8", ++n);
    if (mask & F_MIN_PRICE)
        ADD(" AND p.price >= $%d::int8", ++n);
    if (mask & F_MAX_PRICE)
        ADD(" AND p.price <= $%d::int8", ++n);
    for (int w = 0; w < nwords; w++)
        ADD(" AND lower(p.title) LIKE lower($%d::text)", ++n);
    if (mask & F_CURSOR) {
        int k = ++n, id = ++n;
        if (sort == SORT_NEWEST)
            ADD(" AND (p.created_at, p.id) < ($%d::timestamptz, $%d::int8)", k, id);
        else if (sort == SORT_PRICE_ASC)
            ADD(" AND (p.price, p.id) > ($%d::int8, $%d::int8)", k, id);
        else /* price desc, id asc: not a row comparison; the first clause bounds the index scan */
            ADD(" AND p.price <= $%d::int8 AND (p.price < $%d::int8 OR p.id > $%d::int8)", k, k, id);
    }
#undef ADD
    /* The page is cut first and the sellers joined to its rows only: when
     * the planner has to sort (a wide price range, a search), the join then
     * touches `limit` sellers instead of every candidate row. */
    return api_stmt(
        n + 1,
        "SELECT %s FROM (SELECT p.id, p.seller_id, p.category_id, p.title, p.price, p.currency, p.stock,"
        " p.city_id, p.district_id, p.images, p.status, p.created_at, p.updated_at FROM products p"
        " WHERE p.status = 'active'%s%s LIMIT $%d::int4) p JOIN sellers s ON s.id = p.seller_id%s",
        cols, where, order_by[sort], n + 1, order_by[sort]);
}

/* ---- the detail ----------------------------------------------------------------------------- */

static int render_product(rctx_t *r, PGresult *res, jbuf_t *b)
{
    if (PQntuples(res) == 0)
        return MKD_ENOTFOUND;
    api_render_row(b, PRODUCT, 1, res, 0, 0, api_config()->cdn_base_url);
    return 0;
}

static void products_get(rctx_t *r)
{
    api_read_by_id(r, "product", "product", st_get, st_get_batch, render_product, tags_for_product);
}

/* ---- writes: a seller's own products ------------------------------------------------------------ */

/* Column 0 is the outcome; the product follows (with its description). */
static const api_refusal_t create_refusals[] = {
    {MKD_EFORBIDDEN, "only a seller may create products; create a seller profile first"},
    {MKD_EINVAL, "is not a known category", "category_id"},
    {0},
};
static const api_refusal_t owner_refusals[] = {
    {MKD_EFORBIDDEN, "product %s belongs to another seller"},
    {MKD_ENOTFOUND, "product %s not found"},
    {MKD_EINVAL, "is not a known category", "category_id"},
    {0},
};

static void on_written(rctx_t *r, PGresult *res)
{
    int created = r->params[0].len == 0;
    if (api_outcome_or_reply(r, res, 0, created ? create_refusals : owner_refusals) != 0)
        return;
    jbuf_t *b = reply_buffer(r);
    api_render_row(b, PRODUCT, 1, res, 0, 1, api_config()->cdn_base_url);
    if (created) {
        char loc[48];
        int n = snprintf(loc, sizeof(loc), "/api/v1/products/%s", PQgetvalue(res, 0, 1 + col_id));
        reply_header(r, "location", loc, (size_t)n);
    }
    cache_tags_t tags = {0};
    int city = api_select_index(PRODUCT, 1, "city_id");
    tags_product_changed(&tags, api_int(res, 0, 1 + col_id), api_int(res, 0, 1 + city));
    api_reply_written(r, &tags, created ? 201 : 200, "application/json", b->data, b->len);
}

/* The fields of POST (all but description required) and PATCH (any, and
 * status). Text parameters in out[] in statement order: title, description,
 * price, stock, category_id, status (NULL: absent). Returns how many fields
 * were named. */
static int read_product(rctx_t *r, int create, const char *out[6], char num[3][24])
{
    json_t *obj = r->body;
    verr_t *v = &r->verr;
    int n = 0, rc;
    int64_t price = 0, stock = 0, category = 0;
    const char *s = NULL;

    memset(out, 0, 6 * sizeof(out[0]));
    rc = field_text(obj, "title", "title", 1, FIELD_NAME_MAX, FIELD_LINE, &out[0], v);
    if (create)
        body_require(rc, "title", v);
    n += rc > 0;
    n += field_text(obj, "description", "description", 0, FIELD_TEXT_MAX, FIELD_LINES, &out[1], v) > 0;
    rc = body_int(obj, "price", "price", 1, FIELD_PRICE_MAX, &price, v);
    if (create)
        body_require(rc, "price", v);
    if (rc > 0)
        api_id_text(price, num[0]), out[2] = num[0], n++;
    rc = body_int(obj, "stock", "stock", 0, FIELD_STOCK_MAX, &stock, v);
    if (create)
        body_require(rc, "stock", v);
    if (rc > 0)
        api_id_text(stock, num[1]), out[3] = num[1], n++;
    rc = body_id(obj, "category_id", "category_id", 0, &category, NULL, v);
    if (create)
        body_require(rc, "category_id", v);
    if (rc > 0)
        api_id_text(category, num[2]), out[4] = num[2], n++;
    if (!create) {
        rc = field_text(obj, "status", "status", 1, 20, FIELD_LINE, &s, v);
        if (rc > 0 && strcmp(s, "active") != 0 && strcmp(s, "archived") != 0)
            verr_add(v, "status", "must be active or archived");
        else if (rc > 0)
            out[5] = s, n++;
    }
    static const char *const allowed_create[] = {"title", "description", "price",
                                                 "stock", "category_id", NULL};
    static const char *const allowed_patch[] = {"title",       "description", "price", "stock",
                                                "category_id", "status",      NULL};
    body_only(obj, create ? allowed_create : allowed_patch, v);
    return n;
}

static void products_create(rctx_t *r)
{
    const char *f[6];
    char num[3][24], u[24];
    read_product(r, 1, f, num);
    if (reply_if_invalid(r))
        return;
    api_id_text(r->user_id, u);
    api_query(r, st_create, (const char *[]){u, f[0], f[1], f[2], f[3], f[4]}, on_written);
}

static void products_patch(rctx_t *r)
{
    int64_t pid;
    if (api_path_id(r, 0, "product", &pid) != 0)
        return;
    const char *f[6];
    char num[3][24], u[24], p[24];
    int named = read_product(r, 0, f, num);
    if (reply_if_invalid(r))
        return;
    api_id_text(r->user_id, u);
    api_id_text(pid, p);
    api_query(r, st_patch,
              (const char *[]){u, p, f[0], f[1], f[2], f[3], f[4], f[5], named > 0 ? "true" : "false"},
              on_written);
}

static void on_deleted(rctx_t *r, PGresult *res)
{
    if (api_outcome_or_reply(r, res, 0, owner_refusals) != 0)
        return;
    int64_t id = 0;
    parse_id(r->params[0], &id);
    cache_tags_t tags = {0};
    tags_product_changed(&tags, id, api_int(res, 0, 1));
    api_reply_written(r, &tags, 204, "application/json", "", 0);
}

static void products_delete(rctx_t *r)
{
    int64_t pid;
    if (api_path_id(r, 0, "product", &pid) != 0)
        return;
    char u[24], p[24];
    api_id_text(r->user_id, u);
    api_id_text(pid, p);
    api_query(r, st_delete, (const char *[]){u, p}, on_deleted);
}

/* ---- statements ---------------------------------------------------------------------------------- */

static int count_params(int nwords, int mask)
{
    int n = nwords + 1; /* words + limit */
    for (int b = F_CITY; b <= F_MAX_PRICE; b <<= 1)
        n += (mask & b) != 0;
    return n + ((mask & F_CURSOR) ? 2 : 0);
}

/* The product's owner, for PATCH/DELETE: no row = unknown product. */
#define PRODUCT_OWNER_CTE                                                                                    \
    "cur AS (SELECT p.id, s.user_id, p.city_id FROM products p JOIN sellers s ON s.id = p.seller_id"         \
    " WHERE p.id = $2::int8)"

static void products_init(void)
{
    const char *list_cols = api_select_list(PRODUCT, 0), *cols = api_select_list(PRODUCT, 1);
    col_id = api_select_index(PRODUCT, 0, "id");
    col_price = api_select_index(PRODUCT, 0, "price");
    col_created_at = api_select_index(PRODUCT, 0, "created_at");
    for (int sort = 0; sort < NSORTS; sort++)
        for (int w = 0; w <= MAX_WORDS; w++)
            for (int mask = 0; mask < NMASKS; mask++) {
                const db_stmt_t *st = list_statement(list_cols, sort, w, mask);
                if (st->nparams != count_params(w, mask))
                    abort(); /* the builder and the parameter list disagree: a bug */
                st_list[variant(sort, w, mask)] = st;
            }
    st_get = api_stmt(
        1, "SELECT %s FROM products p JOIN sellers s ON s.id = p.seller_id WHERE p.id = $1::int8", cols);
    /* The same, for several ids at once (api/batch.h): p.id is column 0. */
    st_get_batch = api_stmt(
        1, "SELECT %s FROM products p JOIN sellers s ON s.id = p.seller_id WHERE p.id = ANY($1::int8[])",
        cols);
    /* The seller row is locked FOR SHARE: a concurrent move of the seller
     * (marketd_seller_patch) either sees this product or is seen by it. A
     * category's root is its parent or itself (the tree has two levels). */
    st_create = api_stmt(
        6,
        "WITH s AS (SELECT x.id, x.name, x.rating, x.city_id, x.district_id FROM sellers x"
        "           WHERE x.user_id = $1::int8 FOR SHARE),"
        " c AS (SELECT x.id, coalesce(x.parent_id, x.id) AS root FROM categories x WHERE x.id = $6::int8),"
        " ins AS (INSERT INTO products (seller_id, category_id, category_root_id, city_id, district_id, "
        "title,"
        "                               description, price, stock)"
        "         SELECT s.id, c.id, c.root, s.city_id, s.district_id, $2::text, coalesce($3::text, ''),"
        "                $4::int8, $5::int4 FROM s, c RETURNING *)"
        " SELECT CASE WHEN s.id IS NULL THEN 'forbidden' WHEN c.id IS NULL THEN 'invalid' ELSE 'ok' END, %s"
        " FROM (VALUES (1)) one LEFT JOIN s ON true LEFT JOIN c ON true LEFT JOIN ins p ON true",
        cols);
    /* Absent fields are NULL and keep the row's value. They read the
     * updated row itself (p.*), not a snapshot copy: an order taking stock
     * concurrently is not undone by a PATCH that does not name stock. $9:
     * whether anything was named (an empty PATCH leaves updated_at). */
    st_patch = api_stmt(
        9,
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
        " SELECT CASE WHEN cur.id IS NULL THEN 'not_found' WHEN cur.user_id <> $1::int8 THEN 'forbidden'"
        "             WHEN p.id IS NULL THEN 'invalid' ELSE 'ok' END, %s"
        " FROM (VALUES (1)) one LEFT JOIN cur ON true LEFT JOIN upd p ON true"
        " LEFT JOIN sellers s ON s.id = p.seller_id",
        cols);
    /* Archiving an archived product is a no-op that still succeeds. */
    st_delete = api_stmt(
        2, "%s",
        "WITH " PRODUCT_OWNER_CTE ","
        " upd AS (UPDATE products p SET status = 'archived', updated_at = now() FROM cur"
        "         WHERE p.id = cur.id AND cur.user_id = $1::int8 AND p.status <> 'archived' RETURNING p.id)"
        " SELECT CASE WHEN cur.id IS NULL THEN 'not_found' WHEN cur.user_id <> $1::int8 THEN 'forbidden'"
        "             ELSE 'ok' END, cur.city_id"
        " FROM (VALUES (1)) one LEFT JOIN cur ON true");
}

static const cache_policy_t product_cache = {.ttl = TTL_PRODUCTS};

static const route_t routes[] = {
    {.method = M_GET,
     .pattern = "/api/v1/products",
     HANDLER(products_list),
     .cache = &product_cache,
     .db = DB_READ,
     .limit = LIMIT_API},
    {.method = M_POST,
     .pattern = "/api/v1/products",
     HANDLER(products_create),
     .auth = AUTH_USER,
     .body = BODY_JSON,
     .limit = LIMIT_API},
    {.method = M_GET,
     .pattern = "/api/v1/products/{id}",
     HANDLER(products_get),
     .cache = &product_cache,
     .db = DB_READ,
     .limit = LIMIT_API},
    {.method = M_PATCH,
     .pattern = "/api/v1/products/{id}",
     HANDLER(products_patch),
     .auth = AUTH_USER,
     .body = BODY_JSON,
     .limit = LIMIT_API},
    {.method = M_DELETE,
     .pattern = "/api/v1/products/{id}",
     HANDLER(products_delete),
     .auth = AUTH_USER,
     .limit = LIMIT_API},
};

const api_module_t api_products = {"products", routes, sizeof(routes) / sizeof(routes[0]), products_init,
                                   NULL};
