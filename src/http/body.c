#include "http/body.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json.h"

static int content_type_is_json(const char *ct, size_t n)
{
    static const char want[] = "application/json";
    size_t w = sizeof(want) - 1;
    if (ct == NULL || n < w || strncasecmp(ct, want, w) != 0)
        return 0;
    /* Parameters such as "; charset=utf-8" may follow. */
    return n == w || ct[w] == ';' || ct[w] == ' ';
}

static int depth_ok(json_t *j, int depth)
{
    if (depth > 16)
        return 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) if (!depth_ok(v, depth + 1)) return 0;
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) if (!depth_ok(v, depth + 1)) return 0;
    }
    return 1;
}

/* What a number jansson cannot hold reads as after body_parse: a string
 * with a NUL byte, which no text field accepts anyway, so the one thing a
 * client can do by sending this very string is be refused as it would be
 * for any NUL. */
static const char out_of_range_mark[] = "\0number out of range";
#define OUT_OF_RANGE_JSON "\"\\u0000number out of range\""

int body_out_of_range(const json_t *j)
{
    return json_is_string(j) && json_string_length(j) == sizeof(out_of_range_mark) - 1 &&
           memcmp(json_string_value(j), out_of_range_mark, sizeof(out_of_range_mark) - 1) == 0;
}

/* Length of the JSON number at s[0..n) (RFC 8259 grammar: -?(0|[1-9]\d*)
 * (\.\d+)?([eE][+-]?\d+)?), 0 if s does not start with one. *real says
 * whether it has a fraction or an exponent. */
static size_t number_length(const char *s, size_t n, int *real)
{
    size_t i = 0;
    *real = 0;
#define DIGIT(k) ((k) < n && s[k] >= '0' && s[k] <= '9')
    if (i < n && s[i] == '-')
        i++;
    if (!DIGIT(i))
        return 0;
    if (s[i] == '0')
        i++;
    else
        while (DIGIT(i))
            i++;
    if (i < n && s[i] == '.') {
        if (!DIGIT(i + 1))
            return 0;
        i++;
        while (DIGIT(i))
            i++;
        *real = 1;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t k = i + 1;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (!DIGIT(k))
            return 0;
        while (DIGIT(k))
            k++;
        i = k;
        *real = 1;
    }
#undef DIGIT
    return i;
}

/* Would jansson refuse this number token as too large (its own test: an
 * integer strtoll cannot hold, a real strtod makes infinite)? */
static int number_overflows(const char *s, size_t n, int real)
{
    char small[64];
    char *t = n < sizeof(small) ? small : malloc(n + 1);
    if (t == NULL)
        abort();
    memcpy(t, s, n);
    t[n] = '\0';
    errno = 0;
    int over;
    if (real) {
        double d = strtod(t, NULL);
        over = errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
    } else {
        (void)strtoll(t, NULL, 10);
        over = errno == ERANGE;
    }
    if (t != small)
        free(t);
    return over;
}

/*
 * jansson refuses a whole document for one number it cannot hold (an
 * integer outside int64, a real beyond double), but api.md calls that a
 * value out of range of its field: 422 naming the field. So on that error
 * the text is read again with each such number replaced by the string
 * OUT_OF_RANGE_JSON, which the field readers recognise (body_out_of_range)
 * and refuse under the field's name. Only whole tokens that are JSON
 * numbers outside strings are replaced, so a document that is malformed
 * elsewhere stays malformed (400). Returns 1 with the rewritten text in
 * *out (the caller frees it), or 0 (nothing to replace, nothing to free).
 */
static int mark_out_of_range(const char *s, size_t n, jbuf_t *out)
{
    int replaced = 0;
    size_t done = 0, i = 0;
    jbuf_init(out, n + 64);
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            i++;
            continue;
        }
        if (c != '-' && (c < '0' || c > '9')) {
            i++;
            continue;
        }
        /* The whole run of number characters must be one number. */
        size_t end = i;
        while (end < n && strchr("0123456789+-.eE", s[end]) != NULL && s[end] != '\0')
            end++;
        int real;
        if (number_length(s + i, end - i, &real) == end - i && number_overflows(s + i, end - i, real)) {
            jbuf_append(out, s + done, i - done);
            jbuf_puts(out, OUT_OF_RANGE_JSON);
            done = end;
            replaced = 1;
        }
        i = end;
    }
    if (!replaced) {
        jbuf_free(out);
        return 0;
    }
    jbuf_append(out, s + done, n - done);
    return 1;
}

json_t *body_parse(const char *content_type, size_t ct_len, const char *body, size_t len, int *err,
                   char *detail, size_t detail_len)
{
    if (!content_type_is_json(content_type, ct_len)) {
        *err = MKD_EMEDIATYPE;
        snprintf(detail, detail_len, "Content-Type must be application/json");
        return NULL;
    }
    /* JSON_ALLOW_NUL: "\u0000" in a string is a bad value of its field
     * (422, refused by the readers), not a malformed body. */
    const size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
    json_error_t jerr;
    json_t *j = json_loadb(body, len, flags, &jerr);
    if (j == NULL && json_error_code(&jerr) == json_error_numeric_overflow) {
        jbuf_t marked;
        if (mark_out_of_range(body, len, &marked)) {
            j = json_loadb(marked.data, marked.len, flags, &jerr);
            jbuf_free(&marked);
            if (j == NULL) {
                /* Malformed elsewhere; positions in the rewritten text
                 * would not be the client's. */
                *err = MKD_EBADREQ;
                snprintf(detail, detail_len, "body is not valid JSON: %s", jerr.text);
                return NULL;
            }
        }
    }
    if (j == NULL) {
        *err = MKD_EBADREQ;
        snprintf(detail, detail_len, "body is not valid JSON: %s (at byte %d)", jerr.text, jerr.position);
        return NULL;
    }
    if (!json_is_object(j) || !depth_ok(j, 0)) {
        *err = MKD_EBADREQ;
        snprintf(detail, detail_len,
                 json_is_object(j) ? "body is nested too deeply" : "body must be a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

int body_string(json_t *obj, const char *key, const char *field, size_t min_chars, size_t max_chars,
                const char **out, verr_t *v)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL)
        return MKD_ABSENT;
    if (!json_is_string(j) || body_out_of_range(j)) {
        verr_add(v, field, "must be a string");
        return MKD_EINVAL;
    }
    const char *s = json_string_value(j);
    size_t n = json_string_length(j);
    if (!utf8_valid(s, n)) {
        verr_add(v, field, "must be text without NUL characters");
        return MKD_EINVAL;
    }
    size_t chars = utf8_chars(s, n);
    if (chars < min_chars || chars > max_chars) {
        if (min_chars > 0 && max_chars != (size_t)-1)
            verr_add(v, field, "must be %zu to %zu characters long", min_chars, max_chars);
        else
            verr_add(v, field, "must be at most %zu characters long", max_chars);
        return MKD_EINVAL;
    }
    *out = s;
    return MKD_PRESENT;
}

int body_int(json_t *obj, const char *key, const char *field, int64_t min, int64_t max, int64_t *out,
             verr_t *v)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL)
        return MKD_ABSENT;
    if (body_out_of_range(j)) {
        verr_add(v, field, "must be between %lld and %lld", (long long)min, (long long)max);
        return MKD_EINVAL;
    }
    if (!json_is_integer(j)) {
        verr_add(v, field, "must be an integer");
        return MKD_EINVAL;
    }
    json_int_t n = json_integer_value(j);
    if (n < min || n > max) {
        verr_add(v, field, "must be between %lld and %lld", (long long)min, (long long)max);
        return MKD_EINVAL;
    }
    *out = n;
    return MKD_PRESENT;
}

int body_id(json_t *obj, const char *key, const char *field, int null_ok, int64_t *out, int *is_null,
            verr_t *v)
{
    json_t *j = json_object_get(obj, key);
    if (is_null != NULL)
        *is_null = j != NULL && json_is_null(j);
    if (j == NULL || (null_ok && json_is_null(j)))
        return MKD_ABSENT;
    return body_int(obj, key, field, 1, INT64_MAX, out, v);
}

void body_require(int rc, const char *field, verr_t *v)
{
    if (rc == MKD_ABSENT)
        verr_add(v, field, "is required");
}

void body_only(json_t *obj, const char *const *allowed, verr_t *v)
{
    const char *k;
    json_t *val;
    json_object_foreach(obj, k, val)
    {
        int ok = 0;
        for (const char *const *a = allowed; *a != NULL && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            char field[48];
            snprintf(field, sizeof(field), "%.47s", k);
            verr_add(v, field, "is not a known field");
        }
    }
}
