#include "api/common.h"

#include <stdlib.h>
#include <string.h>

#include "api/cursor.h"
#include "cache/cache.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "http/query.h"

int api_path_id(rctx_t *r, int idx, const char *what, int64_t *out)
{
    if (parse_id(r->params[idx], out) == 0)
        return 0;
    slice_t s = r->params[idx];
    reply_problem(r, 404, "%s %.*s not found", what, (int)(s.len > 40 ? 40 : s.len), s.ptr);
    return -1;
}

int api_query(rctx_t *r, const db_stmt_t *st, const char *const *params, db_result_cb cb)
{
    int rc = db_pool_query(r->w->primary, st, (const char *const *)params, cb, r);
    if (rc != 0) {
        reply_error(r, rc, "");
        return -1;
    }
    return 0;
}

static void run_deferred(rctx_t *r)
{
    api_query(r, r->dq_stmt, (const char *const *)r->dq_params, r->dq_cb);
}

void api_cached_query(rctx_t *r, const cache_spec_t *spec, const db_stmt_t *st, const char *const *params,
                      db_result_cb cb)
{
    const char **copy = h2o_mem_alloc_pool(&r->req->pool, sizeof(char *) * (size_t)(st->nparams + 1));
    for (int i = 0; i < st->nparams; i++) {
        if (params[i] == NULL) {
            copy[i] = NULL;
            continue;
        }
        size_t n = strlen(params[i]) + 1;
        char *p = h2o_mem_alloc_pool(&r->req->pool, n);
        memcpy(p, params[i], n);
        copy[i] = p;
    }
    r->dq_stmt = st;
    r->dq_params = copy;
    r->dq_cb = cb;
    cache_serve(r, spec, run_deferred);
}

void api_db_failed(rctx_t *r, int err, PGresult *res, const char *what)
{
    if (err == MKD_EDB && res != NULL)
        log_error("request %.*s: %s: %s", (int)r->request_id.len, r->request_id.ptr, what,
                  PQresultErrorMessage(res));
    reply_error(r, err, what);
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
    if (PQgetisnull(res, i, c) || ts_parse_pg(PQgetvalue(res, i, c), (size_t)PQgetlength(res, i, c), &us) != 0) {
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

void api_json_cursor(jbuf_t *b, int kind, int64_t key, int64_t id)
{
    cursor_t c = {kind, key, id};
    char text[CURSOR_TEXT_LEN + 1];
    cursor_encode(&c, text);
    jbuf_putc(b, '"');
    jbuf_append(b, text, CURSOR_TEXT_LEN);
    jbuf_putc(b, '"');
}

const char *api_content_type(rctx_t *r)
{
    ssize_t h = h2o_find_header(&r->req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    return h < 0 ? NULL : r->req->headers.entries[h].value.base;
}

size_t api_content_type_len(rctx_t *r)
{
    ssize_t h = h2o_find_header(&r->req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
    return h < 0 ? 0 : r->req->headers.entries[h].value.len;
}

int64_t api_int(const PGresult *res, int i, int c)
{
    return strtoll(PQgetvalue(res, i, c), NULL, 10);
}
