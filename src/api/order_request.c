#include "api/order_request.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/body.h"

int idempotency_key_valid(const char *s, size_t n)
{
    if (n < 1 || n > IDEMPOTENCY_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
    return 1;
}

size_t order_items_read(json_t *body, order_item_t *items, verr_t *v)
{
    json_t *arr = json_object_get(body, "items");
    if (arr == NULL) {
        verr_add(v, "items", "is required");
        return 0;
    }
    if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > ORDER_MAX_ITEMS) {
        verr_add(v, "items", "must be an array of 1 to %d items", ORDER_MAX_ITEMS);
        return 0;
    }
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(arr, i);
        char fp[48], fq[48];
        snprintf(fp, sizeof(fp), "items[%zu].product_id", i);
        snprintf(fq, sizeof(fq), "items[%zu].quantity", i);
        if (!json_is_object(it)) {
            snprintf(fp, sizeof(fp), "items[%zu]", i);
            verr_add(v, fp, "must be an object");
            continue;
        }
        body_require(body_id(it, "product_id", fp, 0, &items[i].product_id, NULL, v), fp, v);
        body_require(body_int(it, "quantity", fq, 1, ORDER_MAX_QUANTITY, &items[i].quantity, v), fq, v);
        for (size_t k = 0; k < i && v->count == 0; k++)
            if (items[k].product_id == items[i].product_id)
                verr_add(v, fp, "duplicates items[%zu]", k);
    }
    return n;
}

static int cmp_item(const void *a, const void *b)
{
    const order_item_t *x = a, *y = b;
    return (x->product_id > y->product_id) - (x->product_id < y->product_id);
}

void order_items_json(jbuf_t *b, const order_item_t *items, size_t n)
{
    jbuf_putc(b, '[');
    for (size_t i = 0; i < n; i++) {
        jbuf_puts(b, i ? ",{\"product_id\":" : "{\"product_id\":");
        json_int(b, items[i].product_id);
        jbuf_puts(b, ",\"quantity\":");
        json_int(b, items[i].quantity);
        jbuf_putc(b, '}');
    }
    jbuf_putc(b, ']');
    jbuf_putc(b, '\0');
}

void order_request_hash(const order_item_t *items, size_t n, char out[ORDER_HASH_HEX + 1])
{
    order_item_t sorted[ORDER_MAX_ITEMS];
    if (n > ORDER_MAX_ITEMS)
        n = ORDER_MAX_ITEMS;
    memcpy(sorted, items, n * sizeof(items[0]));
    qsort(sorted, n, sizeof(sorted[0]), cmp_item);
    jbuf_t b;
    jbuf_init(&b, 64 + 48 * n);
    order_items_json(&b, sorted, n);
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)b.data, b.len - 1);
    jbuf_free(&b);
    sodium_bin2hex(out, ORDER_HASH_HEX + 1, digest, sizeof(digest));
}
