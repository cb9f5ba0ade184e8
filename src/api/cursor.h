#ifndef MARKETD_API_CURSOR_H
#define MARKETD_API_CURSOR_H
/*
 * Keyset cursors (api.md "Lists"): the sort key and id of the last row of a
 * page, so the next page starts strictly after it. Opaque to clients:
 * base64url (no padding) of version, kind, key and id, 24 characters.
 * The kind ties a cursor to the list and sort it came from; a cursor of
 * another kind is malformed (422).
 */
#include <stddef.h>
#include <stdint.h>

enum cursor_kind {
    CURSOR_NEWEST = 1,     /* key: created_at, µs since epoch; id desc */
    CURSOR_PRICE_ASC = 2,  /* key: price */
    CURSOR_PRICE_DESC = 3, /* key: price */
    CURSOR_ID = 4,         /* key unused (0): lists by id */
    CURSOR_ORDERS = 5,     /* key: created_at µs; order history */
};

typedef struct cursor {
    int kind;
    int64_t key;
    int64_t id;
} cursor_t;

#define CURSOR_TEXT_LEN 24

/* Writes CURSOR_TEXT_LEN characters and a NUL to out[CURSOR_TEXT_LEN + 1]. */
void cursor_encode(const cursor_t *c, char *out);
/* Parses s[0..n); requires c->kind == want_kind and id >= 1.
 * Returns 0 or MKD_EINVAL. */
int cursor_decode(const char *s, size_t n, int want_kind, cursor_t *c);

#endif
