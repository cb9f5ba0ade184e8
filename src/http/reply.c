#include "http/reply.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

/* The one table from error codes to HTTP (api.md "Errors"). */
static const struct {
    int err;
    int status;
    const char *title;
} error_table[] = {
    {MKD_EBADREQ, 400, "Bad Request"},
    {MKD_EUNAUTH, 401, "Unauthorized"},
    {MKD_EFORBIDDEN, 403, "Forbidden"},
    {MKD_ENOTFOUND, 404, "Not Found"},
    {MKD_ENOROUTE, 404, "Not Found"},
    {MKD_EMETHOD, 405, "Method Not Allowed"},
    {MKD_ECONFLICT, 409, "Conflict"},
    {MKD_ETOOBIG, 413, "Content Too Large"},
    {MKD_EMEDIATYPE, 415, "Unsupported Media Type"},
    {MKD_EINVAL, 422, "Unprocessable Content"},
    {MKD_ELIMITED, 429, "Too Many Requests"},
    {MKD_EBUSY, 503, "Service Unavailable"},
    {MKD_EUNAVAILABLE, 503, "Service Unavailable"},
    {MKD_ESHUTDOWN, 503, "Service Unavailable"},
};

static int error_index(int err)
{
    for (size_t i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
        if (error_table[i].err == err)
            return (int)i;
    return -1; /* MKD_EDB, MKD_ENOMEM, MKD_EINTERNAL, unknown: 500 */
}

int reply_status_of(int err)
{
    int i = error_index(err);
    return i < 0 ? 500 : error_table[i].status;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 500:
        return "Internal Server Error";
    }
    for (size_t i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
        if (error_table[i].status == status)
            return error_table[i].title;
    return status < 400 ? "OK" : "Error";
}

jbuf_t *reply_buffer(rctx_t *r)
{
    jbuf_reset(&r->w->out);
    return &r->w->out;
}

void reply_header(rctx_t *r, const char *name, const char *value, size_t len)
{
    h2o_req_t *req = r->req;
    char *v = h2o_mem_alloc_pool(&req->pool, len);
    memcpy(v, value, len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 1, NULL, v, len);
}

const char *rctx_header(rctx_t *r, const char *name, size_t *len)
{
    ssize_t h = h2o_find_header_by_str(&r->req->headers, name, strlen(name), -1);
    if (h < 0) {
        *len = 0;
        return NULL;
    }
    *len = r->req->headers.entries[h].value.len;
    return r->req->headers.entries[h].value.base;
}

/* One JSON line per request on stdout (ACCESS_LOG=1), with the field
 * names of OpenTelemetry's semantic conventions / ECS, so that a log
 * pipeline (Loki, Elasticsearch, Vector) needs no mapping: trace.id joins
 * the line to the caller's trace (docs/operations.md). */
static void access_log(rctx_t *r, int status, size_t bytes, uint64_t dur_us)
{
    h2o_req_t *req = r->req;
    jbuf_t *line = &r->w->logbuf;
    jbuf_reset(line);
    char ts[LOG_TIMESTAMP_MAX];
    log_timestamp(ts, sizeof(ts));
    jbuf_puts(line, "{\"@timestamp\":\"");
    jbuf_puts(line, ts);
    jbuf_puts(line, "\",\"log.level\":\"info\",\"event.dataset\":\"marketd.access\",\"trace.id\":\"");
    jbuf_puts(line, r->trace.trace_id);
    jbuf_puts(line, "\",\"span.id\":\"");
    jbuf_puts(line, r->trace.span_id);
    jbuf_puts(line, "\",\"http.request.id\":");
    json_str(line, r->request_id.ptr, r->request_id.len);
    jbuf_puts(line, ",\"http.request.method\":");
    json_str(line, req->method.base, req->method.len);
    jbuf_puts(line, ",\"url.path\":");
    json_str(line, req->path.base, req->path.len);
    if (r->route != NULL) {
        jbuf_puts(line, ",\"http.route\":");
        json_cstr(line, r->route->pattern);
    }
    char tail[128];
    snprintf(tail, sizeof(tail),
             ",\"http.response.status_code\":%d,\"http.response.body.size\":%zu,\"event.duration\":%llu}\n",
             status, bytes, (unsigned long long)dur_us * 1000);
    jbuf_puts(line, tail);
    /* One write(2) per line: lines of concurrent workers never interleave. */
    ssize_t n = write(STDOUT_FILENO, line->data, line->len);
    (void)n;
}

static void finish(rctx_t *r, int status, const char *content_type, const char *body, size_t len)
{
    h2o_req_t *req = r->req;
    worker_t *w = r->w;
    req->res.status = status;
    req->res.reason = reason_phrase(status);
    if (status != 204 && status != 304)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          r->request_id.ptr, r->request_id.len);
    uint64_t dur = server_now_us() - r->start_us;
    metrics_observe(&w->metrics, r->route_id, r->method, status, dur);
    if (w->server->cfg->access_log)
        access_log(r, status, len, dur);
    w->inflight--;
    if (status == 204 || status == 304) {
        req->res.content_length = 0;
        h2o_send_inline(req, "", 0);
        return;
    }
    req->res.content_length = len;
    /* h2o_send_inline copies the body into the request pool, so the
     * worker's scratch buffer is free again as soon as this returns. */
    h2o_send_inline(req, body, len);
}

/* Does an If-None-Match value (a list of entity tags, or *) name `etag`?
 * Weak comparison, as RFC 9110 prescribes for If-None-Match. */
static int etag_matches(const char *v, size_t n, const char *etag, size_t elen)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == ',' || v[i] == '\t'))
            i++;
        if (i < n && v[i] == '*')
            return 1;
        if (i + 2 <= n && v[i] == 'W' && v[i + 1] == '/')
            i += 2;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && v[end - 1] == ' ')
            end--;
        if (end - start == elen && memcmp(v + start, etag, elen) == 0)
            return 1;
    }
    return 0;
}

void reply_json(rctx_t *r, int status, const jbuf_t *body)
{
    if (status == 200 && r->cacheable) {
        /* A fixed key: the tag only has to change when the bytes do, and be
         * the same on every instance for the same bytes. */
        static const unsigned char key[crypto_shorthash_KEYBYTES] = "marketd-etag-v1";
        unsigned char h[crypto_shorthash_BYTES];
        crypto_shorthash(h, (const unsigned char *)body->data, body->len, key);
        char etag[2 + 2 * crypto_shorthash_BYTES + 1];
        etag[0] = '"';
        sodium_bin2hex(etag + 1, sizeof(etag) - 1, h, sizeof(h));
        etag[1 + 2 * sizeof(h)] = '"';
        size_t elen = 2 + 2 * sizeof(h);
        const char *xc = r->x_cache != NULL ? r->x_cache : "BYPASS";
        const char *cc = r->cache_control != NULL ? r->cache_control : "no-cache";
        reply_header(r, "etag", etag, elen);
        reply_header(r, "x-cache", xc, strlen(xc));
        reply_header(r, "cache-control", cc, strlen(cc));
        size_t inm_len;
        const char *inm = rctx_header(r, "if-none-match", &inm_len);
        if (inm != NULL && etag_matches(inm, inm_len, etag, elen)) {
            finish(r, 304, "application/json", "", 0);
            return;
        }
    }
    finish(r, status, "application/json", body->data, body->len);
}

void reply_body(rctx_t *r, int status, const char *content_type, const char *body, size_t len)
{
    finish(r, status, content_type, body, len);
}

static void problem(rctx_t *r, int err, const char *members, const char *fmt, va_list ap)
{
    char detail[512];
    int i = error_index(err), status = i < 0 ? 500 : error_table[i].status;
    if (status == 500) {
        vsnprintf(detail, sizeof(detail), fmt, ap);
        char rid[64];
        snprintf(rid, sizeof(rid), "%.*s", (int)r->request_id.len, r->request_id.ptr);
        log_fields(LOG_ERROR, (const char *const[]){"request_id", rid, NULL}, "request %s: %s: %s", rid,
                   mkd_strerror(err), detail);
        /* What went wrong inside stays in the log. */
        snprintf(detail, sizeof(detail), "internal error (request id %.*s)", (int)r->request_id.len,
                 r->request_id.ptr);
    } else {
        vsnprintf(detail, sizeof(detail), fmt, ap);
    }
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"type\":\"about:blank\",\"title\":");
    json_cstr(b, i < 0 ? "Internal Server Error" : error_table[i].title);
    jbuf_puts(b, ",\"status\":");
    json_int(b, status);
    jbuf_puts(b, ",\"detail\":");
    json_cstr(b, detail);
    if (err == MKD_EINVAL && r->verr.count > 0) {
        jbuf_puts(b, ",\"errors\":[");
        for (int k = 0; k < r->verr.count; k++) {
            if (k)
                jbuf_putc(b, ',');
            jbuf_puts(b, "{\"field\":");
            json_cstr(b, r->verr.items[k].field);
            jbuf_puts(b, ",\"message\":");
            json_cstr(b, r->verr.items[k].message);
            jbuf_putc(b, '}');
        }
        jbuf_putc(b, ']');
    }
    /* Extension members: the object's text without its braces. */
    size_t mn = members != NULL ? strlen(members) : 0;
    if (mn > 2 && members[0] == '{' && members[mn - 1] == '}') {
        jbuf_putc(b, ',');
        jbuf_append(b, members + 1, mn - 2);
    }
    jbuf_putc(b, '}');
    if (status == 503)
        reply_header(r, "retry-after", "1", 1);
    if (status == 401)
        reply_header(r, "www-authenticate", "Bearer", 6);
    finish(r, status, "application/problem+json", b->data, b->len);
}

void reply_error(rctx_t *r, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    problem(r, err, NULL, fmt, ap);
    va_end(ap);
}

void reply_error_ext(rctx_t *r, int err, const char *members, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    problem(r, err, members, fmt, ap);
    va_end(ap);
}

void reply_invalid(rctx_t *r)
{
    reply_error(r, MKD_EINVAL, "invalid parameters: %s %s", r->verr.items[0].field, r->verr.items[0].message);
}

int reply_if_invalid(rctx_t *r)
{
    if (r->verr.count == 0)
        return 0;
    reply_invalid(r);
    return 1;
}
