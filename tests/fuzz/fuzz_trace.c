/*
 * libFuzzer target: trace_parse (http/trace.c) on arbitrary bytes — the
 * traceparent header is untrusted. Beyond memory safety: what it accepts
 * is exactly 55+ characters of the specified shape, and the ids it hands
 * back are NUL-terminated lower-case hex that is not all zeros.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/trace.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_trace: check failed: %s (line %d)\n", #cond, __LINE__);                    \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static int hex_not_zero(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
        nonzero |= s[i] != '0';
    }
    return s[n] == '\0' && nonzero;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy: ASan catches any read past the header's end. */
    char *s = malloc(size ? size : 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    trace_t t;
    if (trace_parse(s, size, &t) == 0) {
        CHECK(size >= 55);
        CHECK(hex_not_zero(t.trace_id, TRACE_ID_HEX));
        CHECK(hex_not_zero(t.parent_id, SPAN_ID_HEX));
        CHECK(t.flags <= 255);
        CHECK(memcmp(s + 3, t.trace_id, TRACE_ID_HEX) == 0);
    }
    free(s);
    return 0;
}
