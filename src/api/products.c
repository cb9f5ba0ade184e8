/* Products (api.md): the filtered, sorted, keyset-paginated list and the
 * detail, each one query with the seller joined in (no N+1, S12). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/common.h"
#include "api/cursor.h"
#include "cache/cache.h"
#include "core/timefmt.h"


enum { SORT_NEWEST, SORT_PRICE_ASC, SORT_PRICE_DESC, NSORTS };
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
#define MAX_WORDS 5
#define MAX_Q_BYTES 200
#define NVARIANTS (NSORTS * (MAX_WORDS + 1) * NMASKS)

static const db_stmt_t *st_list[NVARIANTS];
static const db_stmt_t *st_get;

static int variant(int sort, int nwords, int mask)
{
    return (sort * (MAX_WORDS + 1) + nwords) * NMASKS + mask;
}

/* Builds the SQL of one filter/sort combination. Each combination is its own
 * prepared statement, so PostgreSQL plans it for the index that fits
 * (docs/indexes.md) instead of one generic plan full of "$1 IS NULL OR". */
static char *build_list_sql(int sort, int nwords, int mask)
{
    static const char *const order_by[NSORTS] = {
        " ORDER BY p.created_at DESC, p.id DESC",
        " ORDER BY p.price, p.id",
        " ORDER BY p.price DESC, p.id",
    };
    char sql[2048];
    int n = 0;
    /* The page is cut first and the sellers joined to its rows only: when
     * the planner has to sort (a wide price range, a search), the join then
     * touches `limit` sellers instead of every candidate row. */
    size_t len = (size_t)snprintf(sql, sizeof(sql),
                                  "SELECT " API_PRODUCT_COLS " FROM (SELECT p.id, p.seller_id, p.category_id, p.title,"
                                  " p.price, p.currency, p.stock, p.city_id, p.district_id, p.images, p.status,"
                                  " p.created_at, p.updated_at FROM products p WHERE p.status = 'active'");
#define ADD(...) len += (size_t)snprintf(sql + len, sizeof(sql) - len, __VA_ARGS__)
    if (mask & F_CITY)
        ADD(" AND p.city_id = $%d::int8", ++n);
    if (mask & F_DISTRICT)
        ADD(" AND p.district_id = $%d::int8", ++n);
    if (mask & F_CATEGORY) {
        /* A category includes its sub-categories. Every product carries its
         * root category, so "root = X's root" is an index condition and the
         * second clause narrows a leaf X to itself. */
        n++;
        ADD(" AND p.category_root_id = (SELECT coalesce(c.parent_id, c.id) FROM categories c WHERE c.id = $%d::int8)"
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
    ADD("%s LIMIT $%d::int4) p JOIN sellers s ON s.id = p.seller_id%s", order_by[sort], ++n, order_by[sort]);
#undef ADD
    char *s = strdup(sql);
    if (s == NULL)
        abort();
    return s;
}

static int count_params(int nwords, int mask)
{
    int n = nwords + 1; /* words + limit */
    for (int b = F_CITY; b <= F_MAX_PRICE; b <<= 1)
        n += (mask & b) != 0;
    return n + ((mask & F_CURSOR) ? 2 : 0);
}

void api_products_init(void)
{
    for (int sort = 0; sort < NSORTS; sort++)
        for (int w = 0; w <= MAX_WORDS; w++)
            for (int mask = 0; mask < NMASKS; mask++)
                st_list[variant(sort, w, mask)] = db_stmt_register(build_list_sql(sort, w, mask), count_params(w, mask));
    st_get = db_stmt_register("SELECT " API_PRODUCT_COLS ", p.description FROM products p"
                              " JOIN sellers s ON s.id = p.seller_id WHERE p.id = $1::int8",
                              1);
}

void api_render_product(rctx_t *r, jbuf_t *b, const PGresult *res, int i, int col0, int with_description)
{
    jbuf_puts(b, "{\"id\":");
    api_json_num(b, res, i, col0 + C_ID);
    jbuf_puts(b, ",\"seller_id\":");
    api_json_num(b, res, i, col0 + C_SELLER_ID);
    jbuf_puts(b, ",\"seller\":{\"id\":");
    api_json_num(b, res, i, col0 + C_SELLER_ID);
    jbuf_puts(b, ",\"name\":");
    api_json_text(b, res, i, col0 + C_SELLER_NAME);
    jbuf_puts(b, ",\"rating\":");
    api_json_num(b, res, i, col0 + C_SELLER_RATING);
    jbuf_puts(b, "},\"category_id\":");
    api_json_num(b, res, i, col0 + C_CATEGORY_ID);
    jbuf_puts(b, ",\"title\":");
    api_json_text(b, res, i, col0 + C_TITLE);
    if (with_description) {
        jbuf_puts(b, ",\"description\":");
        api_json_text(b, res, i, col0 + C_DESCRIPTION);
    }
    jbuf_puts(b, ",\"price\":");
    api_json_num(b, res, i, col0 + C_PRICE);
    jbuf_puts(b, ",\"currency\":");
    api_json_text(b, res, i, col0 + C_CURRENCY);
    jbuf_puts(b, ",\"stock\":");
    api_json_num(b, res, i, col0 + C_STOCK);
    jbuf_puts(b, ",\"city_id\":");
    api_json_num(b, res, i, col0 + C_CITY_ID);
    jbuf_puts(b, ",\"district_id\":");
    api_json_num(b, res, i, col0 + C_DISTRICT_ID);
    jbuf_puts(b, ",\"images\":");
    api_json_text_array(b, res, i, col0 + C_IMAGES, r->w->server->cfg->cdn_base_url);
    jbuf_puts(b, ",\"status\":");
    api_json_text(b, res, i, col0 + C_STATUS);
    jbuf_puts(b, ",\"created_at\":");
    api_json_ts(b, res, i, col0 + C_CREATED_AT);
    jbuf_puts(b, ",\"updated_at\":");
    api_json_ts(b, res, i, col0 + C_UPDATED_AT);
    jbuf_putc(b, '}');
}

typedef struct list_state {
    int limit;
    int sort;
} list_state_t;

static void on_list(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    list_state_t *ls = r->data;
    if (err != 0) {
        api_db_failed(r, err, res, "products");
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
        api_render_product(r, b, res, i, 0, 0);
    }
    jbuf_puts(b, "],\"next_cursor\":");
    if (more) {
        int last = n - 1;
        int64_t id = api_int(res, last, C_ID), key = 0;
        if (ls->sort == SORT_NEWEST)
            ts_parse_pg(PQgetvalue(res, last, C_CREATED_AT), (size_t)PQgetlength(res, last, C_CREATED_AT), &key);
        else
            key = api_int(res, last, C_PRICE);
        static const int kinds[NSORTS] = {CURSOR_NEWEST, CURSOR_PRICE_ASC, CURSOR_PRICE_DESC};
        api_json_cursor(b, kinds[ls->sort], key, id);
    } else {
        jbuf_puts(b, "null");
    }
    jbuf_putc(b, '}');
    reply_json(r, 200, b);
}

/* Splits q into at most MAX_WORDS LIKE patterns "%word%" (with % _ \
 * escaped), allocated in the request pool. Returns the count or -1. */
static int q_patterns(rctx_t *r, const slice_t *q, char **out)
{
    if (q->len > MAX_Q_BYTES) {
        verr_add(&r->verr, "q", "must be at most %d bytes", MAX_Q_BYTES);
        return -1;
    }
    if (!utf8_valid(q->ptr, q->len)) {
        verr_add(&r->verr, "q", "must be valid UTF-8 text");
        return -1;
    }
    int n = 0;
    size_t i = 0;
    while (i < q->len) {
        while (i < q->len && (q->ptr[i] == ' ' || q->ptr[i] == '\t' || q->ptr[i] == '\n' || q->ptr[i] == '\r'))
            i++;
        size_t start = i;
        while (i < q->len && !(q->ptr[i] == ' ' || q->ptr[i] == '\t' || q->ptr[i] == '\n' || q->ptr[i] == '\r'))
            i++;
        if (i == start)
            break;
        if (n == MAX_WORDS) {
            verr_add(&r->verr, "q", "must have at most %d words", MAX_WORDS);
            return -1;
        }
        char *p = h2o_mem_alloc_pool(&r->req->pool, (i - start) * 2 + 3);
        size_t o = 0;
        p[o++] = '%';
        for (size_t k = start; k < i; k++) {
            char c = q->ptr[k];
            if (c == '%' || c == '_' || c == '\\')
                p[o++] = '\\';
            p[o++] = c;
        }
        p[o++] = '%';
        p[o] = '\0';
        out[n++] = p;
    }
    return n;
}

void api_products_list(rctx_t *r)
{
    const query_t *q = &r->query;
    verr_t *v = &r->verr;
    int64_t city = 0, district = 0, category = 0, seller = 0, min_price = 0, max_price = 0;
    int mask = 0, sort = SORT_NEWEST, nwords = 0;
    char *words[MAX_WORDS];
    cursor_t cur = {0};

    mask |= query_id(q, "city_id", &city, v) > 0 ? F_CITY : 0;
    mask |= query_id(q, "district_id", &district, v) > 0 ? F_DISTRICT : 0;
    mask |= query_id(q, "category_id", &category, v) > 0 ? F_CATEGORY : 0;
    mask |= query_id(q, "seller_id", &seller, v) > 0 ? F_SELLER : 0;
    mask |= query_int(q, "min_price", 0, 100000000000LL, &min_price, v) > 0 ? F_MIN_PRICE : 0;
    mask |= query_int(q, "max_price", 0, 100000000000LL, &max_price, v) > 0 ? F_MAX_PRICE : 0;
    int limit = query_limit(q, 20, 100, v);
    const slice_t *s = query_get(q, "sort", v);
    if (s != NULL) {
        if (slice_eq(*s, "newest"))
            sort = SORT_NEWEST;
        else if (slice_eq(*s, "price_asc"))
            sort = SORT_PRICE_ASC;
        else if (slice_eq(*s, "price_desc"))
            sort = SORT_PRICE_DESC;
        else
            verr_add(v, "sort", "must be one of newest, price_asc, price_desc");
    }
    const slice_t *qs = query_get(q, "q", v);
    if (qs != NULL && (nwords = q_patterns(r, qs, words)) < 0)
        nwords = 0;
    const slice_t *cs = query_get(q, "cursor", v);
    if (cs != NULL) {
        static const int kinds[NSORTS] = {CURSOR_NEWEST, CURSOR_PRICE_ASC, CURSOR_PRICE_DESC};
        if (cursor_decode(cs->ptr, cs->len, kinds[sort], &cur) != 0)
            verr_add(v, "cursor", "is malformed or belongs to another sort");
        else
            mask |= F_CURSOR;
    }
    if (v->count > 0) {
        reply_invalid(r);
        return;
    }

    list_state_t *ls = h2o_mem_alloc_pool(&r->req->pool, sizeof(*ls));
    ls->limit = limit;
    ls->sort = sort;
    r->data = ls;

    /* Parameters in the order build_list_sql numbers them. */
    char num[10][24], key[TS_BUFSZ];
    const char *params[8 + MAX_WORDS + 2];
    int n = 0, k = 0;
#define NUM(val) (snprintf(num[k], 24, "%lld", (long long)(val)), params[n++] = num[k++])
    if (mask & F_CITY)
        NUM(city);
    if (mask & F_DISTRICT)
        NUM(district);
    if (mask & F_CATEGORY)
        NUM(category);
    if (mask & F_SELLER)
        NUM(seller);
    if (mask & F_MIN_PRICE)
        NUM(min_price);
    if (mask & F_MAX_PRICE)
        NUM(max_price);
    for (int w = 0; w < nwords; w++)
        params[n++] = words[w];
    if (mask & F_CURSOR) {
        if (sort == SORT_NEWEST) {
            ts_format_pg(cur.key, key);
            params[n++] = key;
        } else {
            NUM(cur.key);
        }
        NUM(cur.id);
    }
    NUM(limit + 1);
#undef NUM

    /* The cache key is the normalised request: fixed parameter order,
     * defaults filled in, q folded to lower case with single spaces; so
     * ?limit=20&sort=newest and no parameters share one entry. Pages after
     * the first (cursor) are not cached: they would multiply the key space
     * by the page count for little reuse. Tags: the city's lists when the
     * filter names one, else every list; plus seller data (embedded). */
    static const char *const sort_names[NSORTS] = {"newest", "price_asc", "price_desc"};
    cache_spec_t spec = {.ttl = r->w->server->cfg->cache_ttl_products, .ntags = 2};
    if (!(mask & F_CURSOR)) {
        /* q as its words, single-spaced, from the raw text (validated:
         * at most MAX_Q_BYTES), not from the escaped LIKE patterns. */
        char qn[MAX_Q_BYTES + 1];
        size_t qlen = 0;
        for (size_t i = 0; qs != NULL && i < qs->len;) {
            while (i < qs->len && (qs->ptr[i] == ' ' || qs->ptr[i] == '\t' || qs->ptr[i] == '\n' || qs->ptr[i] == '\r'))
                i++;
            size_t start = i;
            while (i < qs->len && !(qs->ptr[i] == ' ' || qs->ptr[i] == '\t' || qs->ptr[i] == '\n' || qs->ptr[i] == '\r'))
                i++;
            if (i == start)
                break;
            if (qlen > 0)
                qn[qlen++] = ' ';
            memcpy(qn + qlen, qs->ptr + start, i - start);
            qlen += i - start;
        }
        qn[qlen] = '\0';
        cache_fold_case(qn, qlen);
        char canon[512];
        int cn = snprintf(canon, sizeof(canon), "s=%s&l=%d&c=%lld&d=%lld&k=%lld&v=%lld&mn=%lld&mx=%lld&q=%s",
                          sort_names[sort], limit, (long long)(mask & F_CITY ? city : 0),
                          (long long)(mask & F_DISTRICT ? district : 0), (long long)(mask & F_CATEGORY ? category : 0),
                          (long long)(mask & F_SELLER ? seller : 0), (long long)(mask & F_MIN_PRICE ? min_price : -1),
                          (long long)(mask & F_MAX_PRICE ? max_price : -1), qn);
        /* Bounded key length whatever q holds: long keys are hashed. */
        if (cn > 0 && (size_t)cn < sizeof(spec.key) - 10) {
            memcpy(spec.key, "products:", 9);
            memcpy(spec.key + 9, canon, (size_t)cn + 1);
        } else {
            unsigned char h[crypto_generichash_BYTES];
            char hex[2 * crypto_generichash_BYTES + 1];
            crypto_generichash(h, sizeof(h), (const unsigned char *)canon, strlen(canon), NULL, 0);
            sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
            snprintf(spec.key, sizeof(spec.key), "products:h:%s", hex);
        }
    }
    if (mask & F_CITY)
        cache_tag(spec.tags[0], "products:city", city);
    else
        snprintf(spec.tags[0], sizeof(spec.tags[0]), "products:all");
    snprintf(spec.tags[1], sizeof(spec.tags[1]), "sellers");
    api_cached_query(r, &spec, st_list[variant(sort, nwords, mask)], params, on_list);
}

static void on_get(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    if (err != 0) {
        api_db_failed(r, err, res, "product");
        return;
    }
    if (PQntuples(res) == 0) {
        reply_problem(r, 404, "product %.*s not found", (int)r->params[0].len, r->params[0].ptr);
        return;
    }
    jbuf_t *b = reply_buffer(r);
    api_render_product(r, b, res, 0, 0, 1);
    reply_json(r, 200, b);
}

void api_products_get(rctx_t *r)
{
    int64_t id;
    if (api_path_id(r, 0, "product", &id) != 0)
        return;
    char v[24];
    snprintf(v, sizeof(v), "%lld", (long long)id);
    const char *params[] = {v};
    /* The detail embeds its seller's name and rating: "sellers" changes
     * with any seller write (rare), so the tags are known before the read. */
    cache_spec_t spec = {.ttl = r->w->server->cfg->cache_ttl_products, .ntags = 2};
    snprintf(spec.key, sizeof(spec.key), "product:%s", v);
    cache_tag(spec.tags[0], "product", id);
    snprintf(spec.tags[1], sizeof(spec.tags[1]), "sellers");
    api_cached_query(r, &spec, st_get, params, on_get);
}
