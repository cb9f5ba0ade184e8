#include "api/api.h"

#include <stdlib.h>

#include "api/flight.h"
#include "api/outage.h"

/* Every resource of api.md; adding one is a module + OpenAPI + a test. */
static const api_module_t *const modules[] = {
    &api_ops, &api_auth, &api_reference, &api_sellers, &api_products, &api_images, &api_orders, &api_apidoc,
};
#define NMODULES ((int)(sizeof(modules) / sizeof(modules[0])))

static route_t *table;
static int ntable;

static void worker_tick(worker_t *w)
{
    for (int i = 0; i < NMODULES; i++)
        if (modules[i]->tick != NULL)
            modules[i]->tick(w);
    cache_tick(api_worker(w)->cache);
    api_dispatch_tick(w);
    flight_sweep();
    outage_store_sweep(server_now_us());
}

static http_app_t app = {
    .dispatch = api_dispatch,
    .worker_init = api_worker_init,
    .worker_tick = worker_tick,
    .worker_dispose = api_worker_dispose,
};

void api_init(const config_t *cfg)
{
    api_dispatch_init(cfg);
    int n = 0;
    for (int i = 0; i < NMODULES; i++)
        n += modules[i]->nroutes;
    table = calloc((size_t)n, sizeof(*table));
    if (table == NULL)
        abort();
    ntable = 0;
    for (int i = 0; i < NMODULES; i++) {
        for (int k = 0; k < modules[i]->nroutes; k++)
            table[ntable++] = modules[i]->routes[k];
        if (modules[i]->init != NULL)
            modules[i]->init();
    }
    app.routes = table;
    app.nroutes = ntable;
    api_dispatch_routes(table, ntable);
}

const http_app_t *api_app(void)
{
    return &app;
}

void api_dispose(void)
{
    api_dispatch_dispose();
    free(table);
    table = NULL;
}

void api_print_routes(FILE *out)
{
    static const char *const methods[M_NMETHODS] = {"GET", "POST", "PATCH", "DELETE"};
    static const char *const auth[] = {"none", "user", "admin"};
    static const char *const body[] = {"none", "json", "image"};
    static const char *const db[] = {"primary", "read"};
    static const char *const limit[] = {"none", "api", "auth"};
    fprintf(out, "[\n");
    for (int i = 0; i < NMODULES; i++) {
        const api_module_t *m = modules[i];
        for (int k = 0; k < m->nroutes; k++) {
            const route_t *r = &m->routes[k];
            fprintf(out,
                    "  {\"module\":\"%s\",\"method\":\"%s\",\"pattern\":\"%s\",\"handler\":\"%s\","
                    "\"auth\":\"%s\",\"body\":\"%s\","
                    "\"body_max\":%zu,\"cacheable\":%s,\"db\":\"%s\",\"limit\":\"%s\"}%s\n",
                    m->name, methods[r->method], r->pattern, r->name, auth[r->auth], body[r->body],
                    route_body_max(r->body), r->cache != NULL && !r->cache->server_only ? "true" : "false",
                    db[r->db], limit[r->limit], i == NMODULES - 1 && k == m->nroutes - 1 ? "" : ",");
        }
    }
    fprintf(out, "]\n");
}
