/*
 * libFuzzer target: request bodies (src/http/body.h) — jansson parsing
 * through body_parse, then every reader the handlers use, with the shapes of
 * api.md (accounts, products, orders). Checks that readers return only
 * their documented values, respect their bounds, and that a string they
 * accept is valid UTF-8 of the allowed length. Numbers too large for
 * jansson (body_out_of_range): body_parse accepts a body jansson refuses
 * only for such a number, and no reader ever accepts the marker.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/error.h"
#include "http/body.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_body: check failed: %s (line %d)\n", #cond, __LINE__);                     \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static void read_string(json_t *obj, const char *key, size_t min, size_t max, verr_t *v)
{
    const char *s = NULL;
    int rc = body_string(obj, key, key, min, max, &s, v);
    CHECK(rc >= -1 && rc <= 1);
    if (rc == 1)
        CHECK(s != NULL && utf8_valid(s, strlen(s)) && strlen(s) >= min && strlen(s) <= max * 4);
    CHECK(rc != 1 || !body_out_of_range(json_object_get(obj, key)));
}

static void read_int(json_t *obj, const char *key, int64_t min, int64_t max, verr_t *v)
{
    int64_t n = min - 1;
    int rc = body_int(obj, key, key, min, max, &n, v);
    CHECK(rc >= -1 && rc <= 1);
    CHECK(rc != 1 || !body_out_of_range(json_object_get(obj, key)));
    if (rc == 1)
        CHECK(n >= min && n <= max);
}

static int contains_marker(json_t *j, int depth)
{
    if (body_out_of_range(j))
        return 1;
    if (depth > 20)
        return 0;
    const char *k;
    size_t i;
    json_t *v;
    if (json_is_object(j))
        json_object_foreach(j, k, v) if (contains_marker(v, depth + 1)) return 1;
    if (json_is_array(j))
        json_array_foreach(j, i, v) if (contains_marker(v, depth + 1)) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int status = 0;
    char detail[256];
    json_t *obj =
        body_parse("application/json", 16, (const char *)data, size, &status, detail, sizeof(detail));
    if (obj == NULL) {
        CHECK(status == MKD_EBADREQ);
        return 0;
    }
    CHECK(json_is_object(obj));
    /* What jansson alone says of the text: valid, or refused for a number
     * it cannot hold (then some value must carry the marker). */
    json_error_t jerr;
    json_t *plain = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (plain == NULL) {
        CHECK(json_error_code(&jerr) == json_error_numeric_overflow);
        CHECK(contains_marker(obj, 0));
    } else {
        CHECK(json_is_object(plain));
        json_decref(plain);
    }
    verr_t v = {0};
    read_string(obj, "email", 3, 254, &v);
    read_string(obj, "password", 8, 128, &v);
    read_string(obj, "title", 1, 200, &v);
    read_string(obj, "description", 0, 5000, &v);
    read_int(obj, "price", 1, 100000000000LL, &v);
    read_int(obj, "stock", 0, 1000000, &v);
    int64_t id = 0;
    int is_null = 0;
    int rc = body_id(obj, "parent_id", "parent_id", 1, &id, &is_null, &v);
    CHECK(rc >= -1 && rc <= 1 && (rc != 1 || id >= 1));
    json_t *items = json_object_get(obj, "items");
    if (json_is_array(items)) {
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            if (!json_is_object(it) || i > 60)
                continue;
            read_int(it, "product_id", 1, INT64_MAX, &v);
            read_int(it, "quantity", 1, 1000, &v);
        }
    }
    static const char *const allowed[] = {"title", "description", "price", "stock", "category_id", NULL};
    body_only(obj, allowed, &v);
    CHECK(v.count >= 0 && v.count <= VERR_MAX);
    json_decref(obj);
    return 0;
}
