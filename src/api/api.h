#ifndef MARKETD_API_API_H
#define MARKETD_API_API_H
/*
 * The HTTP API of api.md: the resource modules, assembled into one route
 * table, and the dispatcher that serves it (api/dispatch.h). main.c hands
 * api_app() to the transport.
 */
#include <stdio.h>

#include "api/dispatch.h"

/* The modules, one per resource (each in src/api/<name>.c). */
extern const api_module_t api_ops;
extern const api_module_t api_auth;
extern const api_module_t api_reference;
extern const api_module_t api_sellers;
extern const api_module_t api_products;
extern const api_module_t api_images;
extern const api_module_t api_orders;
extern const api_module_t api_apidoc;

/* Builds the route table and registers every module's statements. Once,
 * before the workers start. */
void api_init(const config_t *cfg);
/* What the transport serves (valid after api_init). */
const http_app_t *api_app(void);
/* Releases what api_init and the dispatcher hold (after server_run). */
void api_dispose(void);

/* The route table as JSON (`marketd routes`), for the OpenAPI drift check. */
void api_print_routes(FILE *out);

#endif
