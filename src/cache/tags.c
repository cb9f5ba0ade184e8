#include "cache/tags.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Products and sellers are many; a tag per row would leave one
 * never-expiring version key per row ever viewed (a million at bench
 * scale). Their tags are buckets instead: a write to one row changes the
 * version of the ~rows/TAG_BUCKETS others that share its bucket — a few
 * extra misses, never a stale hit — and the keys stay bounded. Below
 * TAG_BUCKETS the bucket is the id itself. */
#define TAG_BUCKETS 65536

static int64_t bucket(int64_t id)
{
    return id % TAG_BUCKETS == 0 ? TAG_BUCKETS : id % TAG_BUCKETS;
}

static void add(cache_tags_t *t, const char *prefix, int64_t id)
{
    char name[CACHE_TAG_MAX];
    if (id != 0)
        snprintf(name, sizeof(name), "%s:%lld", prefix, (long long)id);
    else
        snprintf(name, sizeof(name), "%s", prefix);
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->tag[i], name) == 0)
            return;
    if (t->n == CACHE_TAGS_MAX)
        abort(); /* a programming error: more tags than any write has */
    memcpy(t->tag[t->n++], name, sizeof(name));
}

void tags_for_product(cache_tags_t *t, int64_t product)
{
    t->n = 0;
    add(t, "product", bucket(product));
    add(t, "sellers", 0);
}

void tags_for_product_list(cache_tags_t *t, int64_t city)
{
    t->n = 0;
    add(t, city != 0 ? "products:city" : "products:all", city);
    add(t, "sellers", 0);
}

void tags_for_seller(cache_tags_t *t, int64_t seller)
{
    t->n = 0;
    add(t, "seller", bucket(seller));
}

void tags_for_popular_sellers(cache_tags_t *t)
{
    t->n = 0;
    add(t, "sellers", 0);
}

void tags_for_reference(cache_tags_t *t)
{
    t->n = 0;
    add(t, "reference", 0);
}

/* Users are many, too: bucketed like products. The global "orders" tag is
 * changed only when retention drops whole months, which no per-user tag
 * could name. */
void tags_for_order_history(cache_tags_t *t, int64_t user, int as_seller)
{
    t->n = 0;
    add(t, as_seller ? "orders:seller" : "orders:buyer", bucket(user));
    add(t, "orders", 0);
}

void tags_reference_changed(cache_tags_t *t)
{
    add(t, "reference", 0);
}

void tags_seller_changed(cache_tags_t *t, int64_t seller)
{
    add(t, "seller", bucket(seller));
    add(t, "sellers", 0);
}

void tags_product_changed(cache_tags_t *t, int64_t product, int64_t city)
{
    add(t, "product", bucket(product));
    add(t, "products:city", city);
    add(t, "products:all", 0);
}

void tags_order_changed(cache_tags_t *t, int64_t buyer_user, int64_t seller_user)
{
    add(t, "orders:buyer", bucket(buyer_user));
    add(t, "orders:seller", bucket(seller_user));
}

void tags_orders_dropped(cache_tags_t *t)
{
    add(t, "orders", 0);
}
