#ifndef MARKETD_TESTS_UNIT_H
#define MARKETD_TESTS_UNIT_H
/*
 * Shared helpers for the cmocka unit tests. cmocka's assert_int_equal prints
 * both sides in hex as unsigned values, which makes a failing negative or
 * 64-bit comparison hard to read; these print signed decimals, and slices
 * with their lengths, so a failure says what was got and what was wanted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/slice.h"

/* Signed 64-bit equality; prints both expressions and both values. */
#define assert_i64_eq(got, want)                                                                             \
    do {                                                                                                     \
        long long got_ = (long long)(got), want_ = (long long)(want);                                        \
        if (got_ != want_)                                                                                   \
            fail_msg("%s: got %lld, expected %lld (%s)", #got, got_, want_, #want);                          \
    } while (0)

/* A {ptr, len} slice equals a NUL-terminated literal (compared by bytes). */
#define assert_slice_eq(sl, lit)                                                                             \
    do {                                                                                                     \
        slice_t s_ = (sl);                                                                                   \
        const char *l_ = (lit);                                                                              \
        if (s_.len != strlen(l_) || memcmp(s_.ptr, l_, s_.len) != 0)                                         \
            fail_msg("%s is \"%.*s\" (len %zu), expected \"%s\" (len %zu)", #sl, (int)s_.len, s_.ptr,        \
                     s_.len, l_, strlen(l_));                                                                \
    } while (0)

/* `hay` (NUL-terminated) contains `needle`. */
#define assert_contains(hay, needle)                                                                         \
    do {                                                                                                     \
        const char *h_ = (hay), *n_ = (needle);                                                              \
        if (strstr(h_, n_) == NULL)                                                                          \
            fail_msg("expected \"%s\" to contain \"%s\"", h_, n_);                                           \
    } while (0)

/* `hay` (NUL-terminated) does not contain `needle`. */
#define assert_not_contains(hay, needle)                                                                     \
    do {                                                                                                     \
        const char *h_ = (hay), *n_ = (needle);                                                              \
        if (strstr(h_, n_) != NULL)                                                                          \
            fail_msg("expected \"%s\" not to contain \"%s\"", h_, n_);                                       \
    } while (0)

/* Writes s[0..n) to out as printable ASCII ("\xC3" for other bytes),
 * truncated to fit, for failure messages about binary input. */
static inline const char *show(const char *s, size_t n, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\', out[o++] = 'x', out[o++] = hex[c >> 4], out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

#endif
