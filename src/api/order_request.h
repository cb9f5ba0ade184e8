#ifndef MARKETD_API_ORDER_REQUEST_H
#define MARKETD_API_ORDER_REQUEST_H
/*
 * POST /orders before the database (api.md "Orders"): the Idempotency-Key
 * header, the items of the body, and the request's fingerprint. Pure: no
 * request, no database — the fuzz target tests/fuzz/fuzz_order_request.c
 * feeds it untrusted bytes.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"
#include "http/query.h"

#define ORDER_MAX_ITEMS     50
#define ORDER_MAX_QUANTITY  1000
#define IDEMPOTENCY_KEY_MAX 255
#define ORDER_HASH_HEX      64

typedef struct order_item {
    int64_t product_id, quantity;
} order_item_t;

/* Idempotency-Key: 1..255 printable ASCII characters (0x20..0x7e). */
int idempotency_key_valid(const char *s, size_t n);

/* Reads body.items into items[0..ORDER_MAX_ITEMS) in request order: 1..50
 * objects with a positive product_id and a quantity of 1..1000, products
 * distinct. Returns the count; every problem goes to `v` by field name
 * ("items", "items[2].quantity", …) and then the count means nothing. */
size_t order_items_read(json_t *body, order_item_t *items, verr_t *v);

/* The request's fingerprint for Idempotency-Key (the same key with another
 * request is 422): sha256 of the items sorted by product, as lower-case
 * hex. The same order written in another item order is the same request. */
void order_request_hash(const order_item_t *items, size_t n, char out[ORDER_HASH_HEX + 1]);

/* items[0..n) as the JSON array marketd_place_order reads, NUL-terminated
 * (b->len counts the NUL). */
void order_items_json(jbuf_t *b, const order_item_t *items, size_t n);

#endif
