#ifndef MARKETD_CACHE_TAGS_H
#define MARKETD_CACHE_TAGS_H
/*
 * The one vocabulary of cache tags (docs/cache.md). A tag names a set of
 * data; an entry records the versions of the tags it was rendered from, and
 * a write changes the versions of the tags of the data it changed. Both
 * sides are built here, so "which writes invalidate this list" is answered
 * by reading this file: an entry's builder and the writes that share a tag
 * with it.
 *
 *   entry                     tags                                   changed by
 *   (<id>: the id's bucket, id mod 65536 — bounded keys; see tags.c)
 *   product detail            product:<id>, sellers                  product_changed, seller_changed
 *   product list              products:city:<c> | products:all,      product_changed (its city and "all"),
 *                             sellers                                seller_changed
 *   seller detail             seller:<id>                            seller_changed
 *   popular sellers           sellers                                seller_changed (and its TTL, api.md)
 *   cities, districts,        reference                              reference_changed
 *   categories
 *   order history of a user   orders:buyer:<user> | orders:seller:<user>, order_changed (its buyer's and its
 *   (GET /orders, first pages; orders                                 seller's user), orders_dropped
 *   private: the key names the user)                                  (retention removed months)
 */
#include <stdint.h>

#define CACHE_TAG_MAX    40 /* bytes of one tag name, NUL included */
#define CACHE_TAGS_MAX   64 /* tags of one write (an order: 50 products + 2) */
#define CACHE_ENTRY_TAGS 4  /* tags one entry may depend on */

typedef struct cache_tags {
    int n;
    char tag[CACHE_TAGS_MAX][CACHE_TAG_MAX];
} cache_tags_t;

/* ---- what an entry depends on (each resets `t`) ---- */
void tags_for_product(cache_tags_t *t, int64_t product);
/* city 0: a list not filtered by city. */
void tags_for_product_list(cache_tags_t *t, int64_t city);
void tags_for_seller(cache_tags_t *t, int64_t seller);
void tags_for_popular_sellers(cache_tags_t *t);
void tags_for_reference(cache_tags_t *t);
/* The orders of `user` as buyer, or (as_seller) of the user's seller profile. */
void tags_for_order_history(cache_tags_t *t, int64_t user, int as_seller);

/* ---- what a write changes (each appends to `t`, without duplicates) ---- */
/* A city, district or category was created. */
void tags_reference_changed(cache_tags_t *t);
/* A seller was created or changed: products embed its name and rating, and
 * a move changes which city's lists its products are in. */
void tags_seller_changed(cache_tags_t *t, int64_t seller);
/* A product (of a seller in `city`) was created, changed, archived, given an
 * image, or its stock moved with an order. */
void tags_product_changed(cache_tags_t *t, int64_t product, int64_t city);
/* An order was placed or changed status: the histories of its buyer and of
 * the user who owns its seller profile. */
void tags_order_changed(cache_tags_t *t, int64_t buyer_user, int64_t seller_user);
/* Order partitions were dropped (retention): every history may have lost rows. */
void tags_orders_dropped(cache_tags_t *t);

#endif
