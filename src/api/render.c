#include "api/render.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timefmt.h"
#include "db/pool.h"

const db_stmt_t *api_stmt(int nparams, const char *fmt, ...)
{
    char *sql = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&sql, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return db_stmt_register(sql, nparams);
}

static int included(const api_col_t *c, int with_detail)
{
    return c->sql != NULL && (with_detail || !c->detail_only);
}

/* Select lists live as long as the statements built from them: kept here,
 * so that they stay reachable (and LeakSanitizer quiet) until exit. */
static char *select_lists[64];
static int nselect_lists;

const char *api_select_list(api_table_t t, int with_detail)
{
    size_t n = 1;
    for (int i = 0; i < t.ncols; i++)
        if (included(&t.cols[i], with_detail))
            n += strlen(t.cols[i].sql) + 2;
    char *s = malloc(n), *o = s;
    if (s == NULL)
        abort();
    *o = '\0';
    for (int i = 0; i < t.ncols; i++) {
        if (!included(&t.cols[i], with_detail))
            continue;
        o += sprintf(o, "%s%s", o == s ? "" : ", ", t.cols[i].sql);
    }
    if (nselect_lists == (int)(sizeof(select_lists) / sizeof(select_lists[0])))
        abort(); /* a programming error: select lists are built once at start-up */
    select_lists[nselect_lists++] = s;
    return s;
}

int api_select_count(api_table_t t, int with_detail)
{
    int n = 0;
    for (int i = 0; i < t.ncols; i++)
        n += included(&t.cols[i], with_detail);
    return n;
}

int api_select_index(api_table_t t, int with_detail, const char *name)
{
    int depth = 0, c = 0;
    for (int i = 0; i < t.ncols; i++) {
        const api_col_t *col = &t.cols[i];
        if (col->kind == COL_OBJECT)
            depth++;
        else if (col->kind == COL_END)
            depth--;
        else if (included(col, with_detail)) {
            if (depth == 0 && strcmp(col->name, name) == 0)
                return c;
            c++;
        }
    }
    return -1;
}

void api_render_row(jbuf_t *b, api_table_t t, int with_detail, const PGresult *res, int i, int col0,
                    const char *cdn)
{
    int c = col0, first = 1;
    jbuf_putc(b, '{');
    for (int k = 0; k < t.ncols; k++) {
        const api_col_t *col = &t.cols[k];
        if (col->kind == COL_END) {
            jbuf_putc(b, '}');
            first = 0;
            continue;
        }
        if (col->kind != COL_OBJECT && !included(col, with_detail))
            continue;
        if (!first)
            jbuf_putc(b, ',');
        json_key(b, col->name);
        switch (col->kind) {
        case COL_OBJECT:
            jbuf_putc(b, '{');
            first = 1;
            continue;
        case COL_NUM:
            api_json_num(b, res, i, c++);
            break;
        case COL_TEXT:
            api_json_text(b, res, i, c++);
            break;
        case COL_TS:
            api_json_ts(b, res, i, c++);
            break;
        case COL_IMAGES:
            api_json_text_array(b, res, i, c++, cdn);
            break;
        case COL_END:
            break;
        }
        first = 0;
    }
    jbuf_putc(b, '}');
}

void api_page_begin(jbuf_t *b)
{
    jbuf_puts(b, "{\"items\":[");
}

void api_page_item(jbuf_t *b, int i)
{
    if (i > 0)
        jbuf_putc(b, ',');
}

void api_page_end(jbuf_t *b, const cursor_t *next)
{
    jbuf_puts(b, "],\"next_cursor\":");
    if (next != NULL) {
        char text[CURSOR_TEXT_LEN + 1];
        cursor_encode(next, text);
        jbuf_putc(b, '"');
        jbuf_append(b, text, CURSOR_TEXT_LEN);
        jbuf_putc(b, '"');
    } else {
        jbuf_puts(b, "null");
    }
    jbuf_putc(b, '}');
}

void api_render_keyset_page(jbuf_t *b, const PGresult *res, int limit, api_item_fn item,
                            api_cursor_fn cursor_of, const void *arg)
{
    int n = PQntuples(res), more = n > limit;
    if (more)
        n = limit;
    api_page_begin(b);
    for (int i = 0; i < n; i++) {
        api_page_item(b, i);
        item(b, res, i, arg);
    }
    cursor_t next;
    if (more)
        cursor_of(res, n - 1, arg, &next);
    api_page_end(b, more ? &next : NULL);
}

void api_json_text(jbuf_t *b, const PGresult *res, int i, int c)
{
    if (PQgetisnull(res, i, c))
        jbuf_puts(b, "null");
    else
        json_str(b, PQgetvalue(res, i, c), (size_t)PQgetlength(res, i, c));
}

void api_json_num(jbuf_t *b, const PGresult *res, int i, int c)
{
    if (PQgetisnull(res, i, c))
        jbuf_puts(b, "null");
    else
        jbuf_append(b, PQgetvalue(res, i, c), (size_t)PQgetlength(res, i, c));
}

void api_json_ts(jbuf_t *b, const PGresult *res, int i, int c)
{
    int64_t us;
    char out[TS_BUFSZ];
    if (PQgetisnull(res, i, c) ||
        ts_parse_pg(PQgetvalue(res, i, c), (size_t)PQgetlength(res, i, c), &us) != 0) {
        jbuf_puts(b, "null");
        return;
    }
    size_t n = ts_format_rfc3339(us, out);
    jbuf_putc(b, '"');
    jbuf_append(b, out, n);
    jbuf_putc(b, '"');
}

/* PostgreSQL array literal: {a,"b c","d\"e"}; elements here are URL paths
 * we wrote ourselves, but the parser handles quoting anyway. */
void api_json_text_array(jbuf_t *b, const PGresult *res, int i, int c, const char *prefix)
{
    const char *s = PQgetvalue(res, i, c);
    size_t n = (size_t)PQgetlength(res, i, c), k = 1, plen = strlen(prefix);
    jbuf_putc(b, '[');
    if (PQgetisnull(res, i, c) || n < 2 || s[0] != '{') {
        jbuf_putc(b, ']');
        return;
    }
    int first = 1;
    char *tmp = malloc(n + plen + 1);
    if (tmp == NULL)
        abort();
    while (k < n - 1) {
        size_t t = 0;
        memcpy(tmp, prefix, plen);
        t = plen;
        if (s[k] == '"') {
            k++;
            while (k < n - 1 && s[k] != '"') {
                if (s[k] == '\\' && k + 1 < n - 1)
                    k++;
                tmp[t++] = s[k++];
            }
            k++; /* closing quote */
        } else {
            while (k < n - 1 && s[k] != ',')
                tmp[t++] = s[k++];
        }
        if (!first)
            jbuf_putc(b, ',');
        first = 0;
        json_str(b, tmp, t);
        if (k < n - 1 && s[k] == ',')
            k++;
    }
    free(tmp);
    jbuf_putc(b, ']');
}

int64_t api_int(const PGresult *res, int i, int c)
{
    return strtoll(PQgetvalue(res, i, c), NULL, 10);
}
