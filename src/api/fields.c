#include "api/fields.h"

#include <string.h>

#include "core/error.h"

int field_slug_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > FIELD_SLUG_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && c == '-');
        if (!ok)
            return 0;
    }
    return 1;
}

int field_text(json_t *obj, const char *key, const char *field, size_t min_chars, size_t max_chars,
               field_lines_t lines, const char **out, verr_t *v)
{
    const char *s = NULL;
    int rc = body_string(obj, key, field, min_chars, max_chars, &s, v);
    if (rc != MKD_PRESENT)
        return rc;
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p >= 0x20 && *p != 0x7f)
            continue;
        if (lines == FIELD_LINES && (*p == '\n' || *p == '\t'))
            continue;
        verr_add(v, field,
                 lines == FIELD_LINE ? "must be one line without control characters (U+0000-U+001F, U+007F)"
                                     : "must not contain control characters other than newline and tab");
        return MKD_EINVAL;
    }
    *out = s;
    return MKD_PRESENT;
}

void field_name_slug(json_t *obj, const char **name, const char **slug, verr_t *v)
{
    body_require(field_text(obj, "name", "name", 1, FIELD_NAME_MAX, FIELD_LINE, name, v), "name", v);
    int rc = body_string(obj, "slug", "slug", 1, FIELD_SLUG_MAX, slug, v);
    body_require(rc, "slug", v);
    if (rc > 0 && !field_slug_valid(*slug))
        verr_add(v, "slug", "must be lowercase latin letters, digits and '-', not starting with '-'");
}
