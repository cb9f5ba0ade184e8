#include "http/cors.h"

#include <string.h>
#include <strings.h>

int cors_origin_allowed(const char *list, const char *origin, size_t len)
{
    if (list == NULL || len == 0)
        return 0;
    const char *p = list;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && p[m - 1] == ' ')
            m--;
        if (m == len && memcmp(p, origin, len) == 0)
            return 1;
        p += n;
    }
    return 0;
}

static const char *const allowed[] = {"authorization", "content-type", "idempotency-key", "if-none-match",
                                      "x-request-id"};
#define NALLOWED (sizeof(allowed) / sizeof(allowed[0]))

size_t cors_allowed_headers(const char *requested, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    int seen[NALLOWED] = {0};
    if (outlen > 0)
        out[0] = '\0';
    size_t i = 0;
    while (i < len) {
        while (i < len && (requested[i] == ' ' || requested[i] == '\t' || requested[i] == ','))
            i++;
        size_t start = i;
        while (i < len && requested[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (requested[end - 1] == ' ' || requested[end - 1] == '\t'))
            end--;
        for (size_t k = 0; k < NALLOWED; k++) {
            size_t an = strlen(allowed[k]);
            if (seen[k] || end - start != an || strncasecmp(requested + start, allowed[k], an) != 0)
                continue;
            size_t need = (o > 0 ? 2 : 0) + an;
            if (o + need + 1 > outlen)
                return o;
            if (o > 0)
                out[o++] = ',', out[o++] = ' ';
            memcpy(out + o, allowed[k], an);
            o += an;
            out[o] = '\0';
            seen[k] = 1;
        }
    }
    return o;
}
