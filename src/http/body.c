#include "http/body.h"

#include <stdio.h>
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

json_t *body_parse(const char *content_type, size_t ct_len, const char *body, size_t len, int *err,
                   char *detail, size_t detail_len)
{
    if (!content_type_is_json(content_type, ct_len)) {
        *err = MKD_EMEDIATYPE;
        snprintf(detail, detail_len, "Content-Type must be application/json");
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
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
    if (!json_is_string(j)) {
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
