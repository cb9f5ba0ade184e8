#ifndef MARKETD_API_RENDER_H
#define MARKETD_API_RENDER_H
/*
 * Table-driven rendering of database rows as api.md's JSON. A resource
 * declares its columns once — JSON name, SQL expression, kind — and both its
 * statements' SELECT lists and its renderer come from that table, so the
 * two cannot drift and a write answers byte for byte what the next GET of
 * the resource returns.
 */
#include <libpq-fe.h>
#include <stdint.h>

#include "api/cursor.h"
#include "core/json.h"

typedef enum {
    COL_NUM,    /* int8/numeric as PostgreSQL prints it (valid JSON), NULL → null */
    COL_TEXT,   /* a JSON string, NULL → null */
    COL_TS,     /* a `timestamp` selected AT TIME ZONE 'UTC' → RFC 3339 */
    COL_IMAGES, /* a text[] of media paths → array of CDN URLs */
    COL_OBJECT, /* opens a nested object named `name` (no SQL) */
    COL_END,    /* closes it */
} api_col_kind_t;

typedef struct api_col {
    const char *name;
    const char *sql; /* NULL for COL_OBJECT / COL_END */
    api_col_kind_t kind;
    int detail_only; /* only in the detail (and the write answers), not in lists */
} api_col_t;

typedef struct api_table {
    const api_col_t *cols;
    int ncols;
} api_table_t;

#define API_TABLE(arr) ((api_table_t){(arr), (int)(sizeof(arr) / sizeof((arr)[0]))})

/* The SELECT list of a table ("p.id, p.seller_id, …"), allocated once for
 * the life of the process (statements keep pointers to their SQL). */
const char *api_select_list(api_table_t t, int with_detail);
/* How many result columns that list has. */
int api_select_count(api_table_t t, int with_detail);
/* The result column of `name` (top level) in that list, or -1. */
int api_select_index(api_table_t t, int with_detail, const char *name);

/* Row i as a JSON object, reading result columns from col0 on. `cdn` is the
 * prefix of image URLs. */
void api_render_row(jbuf_t *b, api_table_t t, int with_detail, const PGresult *res, int i, int col0,
                    const char *cdn);

/* The page envelope of every list (api.md "Lists"):
 * {"items":[ … ],"next_cursor":"…"|null}. */
void api_page_begin(jbuf_t *b);
/* Before item i: the separator. */
void api_page_item(jbuf_t *b, int i);
void api_page_end(jbuf_t *b, const cursor_t *next);

/* A keyset page (api.md "Lists"): the statement asked for limit + 1 rows,
 * so a row past `limit` means there is a next page, whose cursor
 * `cursor_of` makes from the last item. `item` renders row i. */
typedef void (*api_item_fn)(jbuf_t *b, const PGresult *res, int i, const void *arg);
typedef void (*api_cursor_fn)(const PGresult *res, int last, const void *arg, cursor_t *next);
void api_render_keyset_page(jbuf_t *b, const PGresult *res, int limit, api_item_fn item,
                            api_cursor_fn cursor_of, const void *arg);

/* Registers a statement whose SQL is built from column tables (printf
 * format; the text is kept for the life of the process). */
struct db_stmt;
const struct db_stmt *api_stmt(int nparams, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Column values. */
void api_json_text(jbuf_t *b, const PGresult *res, int i, int c);
void api_json_num(jbuf_t *b, const PGresult *res, int i, int c);
void api_json_ts(jbuf_t *b, const PGresult *res, int i, int c);
void api_json_text_array(jbuf_t *b, const PGresult *res, int i, int c, const char *prefix);
int64_t api_int(const PGresult *res, int i, int c);

#endif
