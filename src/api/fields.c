#include "api/fields.h"

#include <string.h>

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

void field_name_slug(json_t *obj, const char **name, const char **slug, verr_t *v)
{
    body_require(body_string(obj, "name", "name", 1, FIELD_NAME_MAX, name, v), "name", v);
    int rc = body_string(obj, "slug", "slug", 1, FIELD_SLUG_MAX, slug, v);
    body_require(rc, "slug", v);
    if (rc > 0 && !field_slug_valid(*slug))
        verr_add(v, "slug", "must be lowercase latin letters, digits and '-', not starting with '-'");
}
