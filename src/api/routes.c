#include "api/api.h"

#include "core/metrics.h"
#include "db/pool.h"

/* The route table of api.md. Handlers not yet built are absent (the route
 * answers 405 with the methods it does have). */
const route_t api_routes[] = {
    {"/healthz", {[M_GET] = api_healthz}, 0},
    {"/readyz", {[M_GET] = api_readyz}, 0},
    {"/metrics", {[M_GET] = api_metrics}, 0},
    {"/api/v1/auth/register", {[M_POST] = api_auth_register}, 1},
    {"/api/v1/auth/login", {[M_POST] = api_auth_login}, 1},
    {"/api/v1/me", {[M_GET] = api_auth_me}, 0},
    {"/api/v1/cities", {[M_GET] = api_cities_list, [M_POST] = api_cities_create}, 1, 1},
    {"/api/v1/cities/{id}/districts", {[M_GET] = api_districts_list, [M_POST] = api_districts_create}, 1, 1},
    {"/api/v1/categories", {[M_GET] = api_categories_list, [M_POST] = api_categories_create}, 1, 1},
    {"/api/v1/sellers", {[M_GET] = api_sellers_list, [M_POST] = api_sellers_create}, 1},
    {"/api/v1/sellers/popular", {[M_GET] = api_sellers_popular}, 0, 1},
    {"/api/v1/sellers/{id}", {[M_GET] = api_sellers_get, [M_PATCH] = api_sellers_patch}, 1, 1},
    {"/api/v1/products", {[M_GET] = api_products_list, [M_POST] = api_products_create}, 1, 1},
    {"/api/v1/products/{id}",
     {[M_GET] = api_products_get, [M_PATCH] = api_products_patch, [M_DELETE] = api_products_delete},
     1,
     1},
    /* A raw image body of up to 5 MiB: the handler applies its own limit. */
    {"/api/v1/products/{id}/images", {[M_POST] = api_product_images_upload}, 0},
    {"/api/v1/orders", {[M_GET] = api_orders_list, [M_POST] = api_orders_create}, 1},
    {"/api/v1/orders/{id}", {[M_GET] = api_orders_get, [M_PATCH] = api_orders_patch}, 1},
    {"/api/v1/orders/{id}/cancel", {[M_POST] = api_orders_cancel}, 0},
};
const int api_routes_count = sizeof(api_routes) / sizeof(api_routes[0]);

void api_init(void)
{
    for (int i = 0; i < api_routes_count; i++)
        metrics_set_route_name(i, api_routes[i].pattern);
    api_ops_init();
    api_auth_init();
    api_orders_init();
    api_reference_init();
    api_sellers_init();
    api_products_init();
    api_catalogue_write_init();
    api_images_init();
}
