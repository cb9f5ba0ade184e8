#ifndef MARKETD_CORE_SLICE_H
#define MARKETD_CORE_SLICE_H
/* Strings as {ptr, len}: parsers never rely on a NUL terminator. */
#include <stddef.h>
#include <string.h>

typedef struct slice {
    const char *ptr;
    size_t len;
} slice_t;

#define SLICE_LIT(s) ((slice_t){(s), sizeof(s) - 1})

static inline int slice_eq(slice_t a, const char *lit)
{
    size_t n = strlen(lit);
    return a.len == n && memcmp(a.ptr, lit, n) == 0;
}

#endif
