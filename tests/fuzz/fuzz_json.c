/*
 * libFuzzer target: json_str on arbitrary bytes. The output must be one
 * JSON string literal ('"' ... '"'), valid UTF-8 by utf8_valid, and parse
 * (with jansson) back to the input wherever the input was valid UTF-8.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/json.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_json: check failed: %s (line %d)\n", #cond, __LINE__);                     \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

/* Valid UTF-8 apart from NUL bytes (which json_str escapes as \u0000). */
static int utf8_valid_with_nul(const char *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '\0') {
            if (!utf8_valid(s + start, i - start))
                return 0;
            start = i + 1;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    jbuf_t b;
    jbuf_init(&b, 1);
    json_str(&b, s, size);
    CHECK(b.len >= 2 && b.len <= size * 6 + 2);
    CHECK(b.data[0] == '"' && b.data[b.len - 1] == '"');
    CHECK(utf8_valid(b.data, b.len));
    for (size_t i = 0; i < b.len; i++)
        CHECK((unsigned char)b.data[i] >= 0x20);

    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (j == NULL) {
        fprintf(stderr, "fuzz_json: output is not JSON: %s (%.*s)\n", err.text, (int)b.len, b.data);
        abort();
    }
    CHECK(json_is_string(j));
    if (utf8_valid_with_nul(s, size)) {
        CHECK(json_string_length(j) == size);
        CHECK(memcmp(json_string_value(j), s, size) == 0);
    }
    json_decref(j);

    /* utf8_valid agrees with json_str: valid input passes through byte for
     * byte when it needs no escaping (json_str escapes DEL as well). */
    if (utf8_valid(s, size)) {
        int plain = 1;
        for (size_t i = 0; i < size; i++)
            plain &= (unsigned char)s[i] >= 0x20 && s[i] != 0x7f && s[i] != '"' && s[i] != '\\';
        if (plain)
            CHECK(b.len == size + 2 && memcmp(b.data + 1, s, size) == 0);
    }
    jbuf_free(&b);
    return 0;
}
