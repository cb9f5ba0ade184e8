#include "http/reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

static const char *status_title(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    }
    return status < 400 ? "OK" : "Error";
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
    }
    return status_title(status);
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

/* One JSON line per request on stdout (ACCESS_LOG=1). */
static void access_log(rctx_t *r, int status, size_t bytes, uint64_t dur_us)
{
    h2o_req_t *req = r->req;
    jbuf_t *line = &r->w->logbuf;
    jbuf_reset(line);
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    jbuf_puts(line, "{\"ts\":\"");
    jbuf_puts(line, ts);
    jbuf_puts(line, "\",\"request_id\":");
    json_str(line, r->request_id.ptr, r->request_id.len);
    jbuf_puts(line, ",\"method\":");
    json_str(line, req->method.base, req->method.len);
    jbuf_puts(line, ",\"path\":");
    json_str(line, req->path.base, req->path.len);
    char tail[96];
    snprintf(tail, sizeof(tail), ",\"status\":%d,\"bytes\":%zu,\"duration_ms\":%.3f}\n", status, bytes,
             (double)dur_us / 1000.0);
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
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, r->request_id.ptr,
                          r->request_id.len);
    uint64_t dur = server_now_us() - r->start_us;
    metrics_observe(&w->metrics, r->route, r->method, status, dur);
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

void reply_json(rctx_t *r, int status, const jbuf_t *body)
{
    finish(r, status, "application/json", body->data, body->len);
}

void reply_body(rctx_t *r, int status, const char *content_type, const char *body, size_t len)
{
    finish(r, status, content_type, body, len);
}

void reply_problem(rctx_t *r, int status, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"type\":\"about:blank\",\"title\":");
    json_cstr(b, status_title(status));
    jbuf_puts(b, ",\"status\":");
    json_int(b, status);
    jbuf_puts(b, ",\"detail\":");
    json_cstr(b, detail);
    if (status == 422 && r->verr.count > 0) {
        jbuf_puts(b, ",\"errors\":[");
        for (int i = 0; i < r->verr.count; i++) {
            if (i)
                jbuf_putc(b, ',');
            jbuf_puts(b, "{\"field\":");
            json_cstr(b, r->verr.items[i].field);
            jbuf_puts(b, ",\"message\":");
            json_cstr(b, r->verr.items[i].message);
            jbuf_putc(b, '}');
        }
        jbuf_putc(b, ']');
    }
    jbuf_putc(b, '}');
    if (status == 503)
        reply_header(r, "retry-after", "1", 1);
    if (status == 401)
        reply_header(r, "www-authenticate", "Bearer", 6);
    finish(r, status, "application/problem+json", b->data, b->len);
}

void reply_invalid(rctx_t *r)
{
    reply_problem(r, 422, "invalid parameters: %s %s", r->verr.items[0].field, r->verr.items[0].message);
}

void reply_error(rctx_t *r, int err, const char *what)
{
    switch (err) {
    case MKD_EINVAL:
        reply_invalid(r);
        return;
    case MKD_ENOTFOUND:
        reply_problem(r, 404, "%s not found", what);
        return;
    case MKD_ECONFLICT:
        reply_problem(r, 409, "%s conflicts with existing data", what);
        return;
    case MKD_ETOOBIG:
        reply_problem(r, 413, "request body too large");
        return;
    case MKD_EBADREQ:
        reply_problem(r, 400, "malformed request: %s", what);
        return;
    case MKD_EBUSY:
        reply_problem(r, 503, "the database is overloaded; retry shortly");
        return;
    case MKD_EUNAVAILABLE:
    case MKD_ESHUTDOWN:
        reply_problem(r, 503, "a dependency is unavailable; retry shortly");
        return;
    default:
        log_error("request %.*s: %s while reading %s", (int)r->request_id.len, r->request_id.ptr, mkd_strerror(err),
                  what);
        reply_problem(r, 500, "internal error (request id %.*s)", (int)r->request_id.len, r->request_id.ptr);
    }
}
