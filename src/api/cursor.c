#include "api/cursor.h"

#include <sodium.h>
#include <string.h>

#include "core/error.h"
#include "core/timefmt.h"

#define CURSOR_VERSION 1
#define RAW_LEN        18 /* version, kind, key (8, big-endian), id (8) */

static void put64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 7; i >= 0; i--, u >>= 8)
        p[i] = (unsigned char)u;
}

static int64_t get64(const unsigned char *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | p[i];
    return (int64_t)u;
}

void cursor_encode(const cursor_t *c, char *out)
{
    unsigned char raw[RAW_LEN];
    raw[0] = CURSOR_VERSION;
    raw[1] = (unsigned char)c->kind;
    put64(raw + 2, c->key);
    put64(raw + 10, c->id);
    sodium_bin2base64(out, CURSOR_TEXT_LEN + 1, raw, RAW_LEN, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int cursor_decode(const char *s, size_t n, int want_kind, cursor_t *c)
{
    unsigned char raw[RAW_LEN];
    size_t len = 0;
    const char *end = NULL;
    if (n != CURSOR_TEXT_LEN)
        return MKD_EINVAL;
    /* libsodium 1.0.18 maps some bytes outside the alphabet to valid
     * digits; accept the alphabet only. */
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_'))
            return MKD_EINVAL;
    }
    if (sodium_base642bin(raw, sizeof(raw), s, n, NULL, &len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        len != RAW_LEN || end != s + n)
        return MKD_EINVAL;
    if (raw[0] != CURSOR_VERSION || raw[1] != want_kind)
        return MKD_EINVAL;
    int64_t key = get64(raw + 2), id = get64(raw + 10);
    if (id < 1)
        return MKD_EINVAL;
    if (want_kind == CURSOR_ID && key != 0)
        return MKD_EINVAL;
    /* Time keys must be timestamps PostgreSQL and our formatter handle:
     * years 1..9999. */
    if ((want_kind == CURSOR_NEWEST || want_kind == CURSOR_ORDERS) && (key < TS_MIN_US || key > TS_MAX_US))
        return MKD_EINVAL;
    if ((want_kind == CURSOR_PRICE_ASC || want_kind == CURSOR_PRICE_DESC) && key < 1)
        return MKD_EINVAL;
    c->kind = raw[1];
    c->key = key;
    c->id = id;
    return 0;
}
