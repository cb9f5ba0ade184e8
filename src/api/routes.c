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
    {"/api/v1/cities", {[M_GET] = api_cities_list}, 1, 1},
    {"/api/v1/cities/{id}/districts", {[M_GET] = api_districts_list}, 1, 1},
    {"/api/v1/categories", {[M_GET] = api_categories_list}, 1, 1},
    {"/api/v1/sellers", {[M_GET] = api_sellers_list}, 1},
    {"/api/v1/sellers/popular", {[M_GET] = api_sellers_popular}, 0, 1},
    {"/api/v1/sellers/{id}", {[M_GET] = api_sellers_get}, 1, 1},
    {"/api/v1/products", {[M_GET] = api_products_list}, 1, 1},
    {"/api/v1/products/{id}", {[M_GET] = api_products_get}, 1, 1},
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
}
