#ifndef MARKETD_API_API_H
#define MARKETD_API_API_H
/*
 * The HTTP API of api.md: the route table and the handlers. Each handler
 * reads top to bottom as the request flows: validate → query → render →
 * answer; the database callback is the second half of the same handler.
 */
#include "http/reply.h"
#include "http/router.h"

extern const route_t api_routes[];
extern const int api_routes_count;

/* Registers every SQL statement (db_stmt_register) and the route names for
 * metrics. Called once before the workers start. */
void api_init(void);

/* auth.c */
void api_auth_register(rctx_t *r);
void api_auth_login(rctx_t *r);
void api_auth_me(rctx_t *r);
void api_auth_init(void);
/* orders.c */
void api_orders_create(rctx_t *r);
void api_orders_list(rctx_t *r);
void api_orders_get(rctx_t *r);
void api_orders_cancel(rctx_t *r);
void api_orders_patch(rctx_t *r);
void api_orders_init(void);
/* ops.c */
void api_healthz(rctx_t *r);
void api_ops_init(void);
void api_readyz(rctx_t *r);
void api_metrics(rctx_t *r);
/* reference.c */
void api_cities_list(rctx_t *r);
void api_districts_list(rctx_t *r);
void api_categories_list(rctx_t *r);
void api_reference_init(void);
/* sellers.c */
void api_sellers_list(rctx_t *r);
void api_sellers_popular(rctx_t *r);
void api_sellers_get(rctx_t *r);
void api_sellers_init(void);
/* products.c */
void api_products_list(rctx_t *r);
void api_products_get(rctx_t *r);
void api_products_init(void);
/* catalogue_write.c: admin reference writes, seller profiles, products */
void api_cities_create(rctx_t *r);
void api_districts_create(rctx_t *r);
void api_categories_create(rctx_t *r);
void api_sellers_create(rctx_t *r);
void api_sellers_patch(rctx_t *r);
void api_products_create(rctx_t *r);
void api_products_patch(rctx_t *r);
void api_products_delete(rctx_t *r);
void api_catalogue_write_init(void);
/* images.c */
void api_product_images_upload(rctx_t *r);
void api_images_init(void);

#endif
