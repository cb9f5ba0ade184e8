#include "http/query.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

void verr_add(verr_t *v, const char *field, const char *fmt, ...)
{
    if (v->count >= VERR_MAX)
        return;
    snprintf(v->items[v->count].field, sizeof(v->items[0].field), "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->items[v->count].message, sizeof(v->items[0].message), fmt, ap);
    va_end(ap);
    v->count++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..n) into out; returns the decoded length or -1. */
static long decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval(s[i + 1])) < 0 || (lo = hexval(s[i + 2])) < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0')
            return -1;
        out[o++] = c;
    }
    return (long)o;
}

int query_parse(const char *s, size_t n, query_t *q, char *buf)
{
    q->count = 0;
    size_t used = 0, i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && s[end] != '&')
            end++;
        if (end > i) {
            size_t eq = i;
            while (eq < end && s[eq] != '=')
                eq++;
            if (q->count == QUERY_MAX_PARAMS)
                return MKD_EBADREQ;
            long nl = decode(s + i, eq - i, buf + used);
            if (nl < 0)
                return MKD_EBADREQ;
            query_param_t *p = &q->params[q->count];
            p->name = (slice_t){buf + used, (size_t)nl};
            used += (size_t)nl;
            long vl = 0;
            if (eq < end && (vl = decode(s + eq + 1, end - eq - 1, buf + used)) < 0)
                return MKD_EBADREQ;
            p->value = (slice_t){buf + used, (size_t)vl};
            used += (size_t)vl;
            q->count++;
        }
        i = end + 1;
    }
    return 0;
}

const slice_t *query_get(const query_t *q, const char *name, verr_t *v)
{
    const slice_t *found = NULL;
    for (int i = 0; i < q->count; i++) {
        if (!slice_eq(q->params[i].name, name))
            continue;
        if (found != NULL) {
            verr_add(v, name, "given more than once");
            break;
        }
        found = &q->params[i].value;
    }
    return found;
}

int parse_int64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-')
        neg = 1, i = 1;
    if (i == n || n - i > 19)
        return MKD_EINVAL;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return MKD_EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg)
        return MKD_EINVAL;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

int parse_id(slice_t s, int64_t *out)
{
    int64_t v;
    if (s.len == 0 || s.ptr[0] == '-' || (s.len > 1 && s.ptr[0] == '0') ||
        parse_int64(s.ptr, s.len, &v) != 0 || v < 1)
        return MKD_EINVAL;
    *out = v;
    return 0;
}

int query_int(const query_t *q, const char *name, int64_t min, int64_t max, int64_t *out, verr_t *v)
{
    const slice_t *s = query_get(q, name, v);
    if (s == NULL)
        return MKD_ABSENT;
    int64_t n;
    if (parse_int64(s->ptr, s->len, &n) != 0) {
        verr_add(v, name, "must be an integer");
        return MKD_EINVAL;
    }
    if (n < min || n > max) {
        verr_add(v, name, "must be between %lld and %lld", (long long)min, (long long)max);
        return MKD_EINVAL;
    }
    *out = n;
    return MKD_PRESENT;
}

int query_id(const query_t *q, const char *name, int64_t *out, verr_t *v)
{
    return query_int(q, name, 1, INT64_MAX, out, v);
}

int query_limit(const query_t *q, int def, int max, verr_t *v)
{
    const slice_t *s = query_get(q, "limit", v);
    if (s == NULL)
        return def;
    int64_t n;
    /* Digits only: leading zeros are dropped, and a number too long for
     * int64 is still "larger than max", so it is clamped, not rejected. */
    size_t i = 0, zeros = 0;
    while (i < s->len && s->ptr[i] >= '0' && s->ptr[i] <= '9')
        i++;
    while (zeros + 1 < s->len && s->ptr[zeros] == '0')
        zeros++;
    if (s->len > 0 && i == s->len) {
        if (s->len - zeros > 18)
            return max;
        if (parse_int64(s->ptr + zeros, s->len - zeros, &n) == 0) {
            if (n >= 1)
                return n > max ? max : (int)n;
            verr_add(v, "limit", "must be at least 1");
            return MKD_EINVAL;
        }
    }
    if (parse_int64(s->ptr, s->len, &n) != 0) {
        verr_add(v, "limit", "must be an integer");
        return MKD_EINVAL;
    }
    if (n < 1) {
        verr_add(v, "limit", "must be at least 1");
        return MKD_EINVAL;
    }
    return n > max ? max : (int)n;
}
