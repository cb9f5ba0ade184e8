/*
 * libFuzzer target: POST /orders before the database (api/order_request.c)
 * on untrusted bytes. The input is "<Idempotency-Key>\n<JSON body>".
 * Beyond memory safety it checks the contracts:
 *  - idempotency_key_valid accepts exactly 1..255 bytes of 0x20..0x7e;
 *  - order_items_read, when it reports no problem, returns 1..50 items with
 *    positive distinct product ids and quantities 1..1000;
 *  - the fingerprint is 64 lower-case hex digits and does not depend on
 *    the order of the items (reversed and rotated lists hash the same),
 *    while a changed quantity changes it.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/order_request.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_order_request: check failed: %s (line %d)\n", #cond, __LINE__);            \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static int key_rule(const uint8_t *s, size_t n)
{
    if (n < 1 || n > 255)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
    return 1;
}

static int is_hex64(const char *h)
{
    if (strlen(h) != ORDER_HASH_HEX)
        return 0;
    for (int i = 0; i < ORDER_HASH_HEX; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t klen = nl != NULL ? (size_t)(nl - data) : size;
    char *key = malloc(klen ? klen : 1); /* exact size: ASan sees overreads */
    if (key == NULL)
        return 0;
    memcpy(key, data, klen);
    CHECK(idempotency_key_valid(key, klen) == key_rule(data, klen));
    free(key);
    if (nl == NULL)
        return 0;

    const char *body = (const char *)nl + 1;
    size_t blen = size - klen - 1;
    json_t *obj = json_loadb(body, blen, JSON_REJECT_DUPLICATES, NULL);
    if (obj == NULL || !json_is_object(obj)) {
        json_decref(obj);
        return 0;
    }
    order_item_t items[ORDER_MAX_ITEMS];
    verr_t v = {0};
    size_t n = order_items_read(obj, items, &v);
    json_decref(obj);
    if (v.count != 0)
        return 0;
    CHECK(n >= 1 && n <= ORDER_MAX_ITEMS);
    for (size_t i = 0; i < n; i++) {
        CHECK(items[i].product_id > 0);
        CHECK(items[i].quantity >= 1 && items[i].quantity <= ORDER_MAX_QUANTITY);
        for (size_t k = 0; k < i; k++)
            CHECK(items[k].product_id != items[i].product_id);
    }
    char h[ORDER_HASH_HEX + 1], h2[ORDER_HASH_HEX + 1];
    order_request_hash(items, n, h);
    CHECK(is_hex64(h));
    order_item_t other[ORDER_MAX_ITEMS];
    for (size_t i = 0; i < n; i++)
        other[i] = items[n - 1 - i];
    order_request_hash(other, n, h2);
    CHECK(strcmp(h, h2) == 0);
    for (size_t i = 0; i < n; i++)
        other[i] = items[(i + 1) % n];
    order_request_hash(other, n, h2);
    CHECK(strcmp(h, h2) == 0);
    other[0].quantity = other[0].quantity == 1 ? 2 : 1;
    order_request_hash(other, n, h2);
    CHECK(strcmp(h, h2) != 0);
    return 0;
}
