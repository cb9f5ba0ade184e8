/*
 * libFuzzer target: cursor_decode for every kind. A cursor that decodes
 * must satisfy the kind's rules and re-encode to exactly the input: the
 * text is canonical, so one row position has one cursor.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "api/cursor.h"
#include "core/error.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_cursor: check failed: %s (line %d)\n", #cond, __LINE__);                   \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    if (sodium_init() < 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    /* Only the real kinds: callers always pass one of the enum constants. */
    for (int kind = CURSOR_NEWEST; kind <= CURSOR_ORDERS; kind++) {
        cursor_t c = {-7, -7, -7};
        int rc = cursor_decode(s, size, kind, &c);
        if (rc != 0) {
            CHECK(rc == MKD_EINVAL);
            CHECK(c.kind == -7 && c.key == -7 && c.id == -7);
            continue;
        }
        CHECK(c.kind == kind);
        CHECK(c.id >= 1);
        if (kind == CURSOR_ID)
            CHECK(c.key == 0);
        if (kind == CURSOR_PRICE_ASC || kind == CURSOR_PRICE_DESC)
            CHECK(c.key >= 1);
        char text[CURSOR_TEXT_LEN + 1];
        cursor_encode(&c, text);
        if (size != CURSOR_TEXT_LEN || memcmp(text, s, size) != 0) {
            fprintf(stderr,
                    "fuzz_cursor: decoded kind %d key %lld id %lld re-encodes as \"%s\", not the input\n",
                    kind, (long long)c.key, (long long)c.id, text);
            abort();
        }
    }
    return 0;
}
