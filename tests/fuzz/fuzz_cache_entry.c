/*
 * libFuzzer target: cache_parse_entry, the header of a cache entry as read
 * back from Redis (untrusted bytes). Whatever the input: no read outside
 * it, and an accepted entry is one the rest of cache.c may rely on — its
 * body offset inside the input, just after the header's newline, and 1..5
 * versions, each a non-empty NUL-terminated word shorter than
 * CACHE_VERSION_MAX.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_cache_entry: check failed: %s (line %d)\n", #cond, __LINE__);              \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    uint64_t fresh_until_ms = 0, fill_ms = 0;
    cache_versions_t ver;
    /* Poison the versions: an accepted entry must have written every one
     * it reports, NUL included. */
    memset(&ver, 0x5A, sizeof(ver));
    long off = cache_parse_entry(s, size, &fresh_until_ms, &fill_ms, &ver);
    if (off < 0) {
        CHECK(off == -1);
        return 0;
    }
    CHECK(off > 0 && (size_t)off <= size);
    CHECK(s[off - 1] == '\n');
    CHECK(memchr(s, '\n', (size_t)off - 1) == NULL); /* the first newline ends the header */
    CHECK(size >= 5 && memcmp(s, "mkd1 ", 5) == 0);
    CHECK(ver.n >= 1 && ver.n <= 1 + CACHE_ENTRY_TAGS);
    for (int i = 0; i < ver.n; i++) {
        const char *end = memchr(ver.v[i], '\0', CACHE_VERSION_MAX);
        CHECK(end != NULL); /* NUL-terminated within CACHE_VERSION_MAX: shorter than it */
        size_t len = (size_t)(end - ver.v[i]);
        CHECK(len >= 1 && len < CACHE_VERSION_MAX);
        CHECK(memchr(ver.v[i], ' ', len) == NULL && memchr(ver.v[i], '\n', len) == NULL);
        /* Each version is a word of the header. */
        CHECK(memmem(s, (size_t)off, ver.v[i], len) != NULL);
    }
    return 0;
}
