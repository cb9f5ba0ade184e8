/*
 * GET /openapi.yaml and /openapi.json: the contract this binary implements
 * (api/openapi.yaml, embedded at build time by scripts/embed-openapi.py),
 * so that a deployment without the repository — compose, Kubernetes —
 * still has it, the way FastAPI serves /openapi.json. No database, no
 * cache: the bytes are in the binary.
 */
#include "api/api.h"

extern const unsigned char openapi_yaml[], openapi_json[];
extern const unsigned long openapi_yaml_len, openapi_json_len;

static void serve(rctx_t *r, const char *type, const unsigned char *body, unsigned long len)
{
    reply_header(r, "cache-control", "public, max-age=300", 19);
    reply_body(r, 200, type, (const char *)body, (size_t)len);
}

static void openapi_yaml_get(rctx_t *r)
{
    /* application/yaml: RFC 9512. */
    serve(r, "application/yaml", openapi_yaml, openapi_yaml_len);
}

static void openapi_json_get(rctx_t *r)
{
    serve(r, "application/json", openapi_json, openapi_json_len);
}

static const route_t routes[] = {
    {.method = M_GET, .pattern = "/openapi.yaml", HANDLER(openapi_yaml_get)},
    {.method = M_GET, .pattern = "/openapi.json", HANDLER(openapi_json_get)},
};

const api_module_t api_apidoc = {"apidoc", routes, sizeof(routes) / sizeof(routes[0]), NULL, NULL};
