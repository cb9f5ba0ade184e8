// Starts Swagger UI on ./openapi.yaml (i.e. /docs/openapi.yaml). Kept out of
// index.html so the page works under a Content-Security-Policy without
// 'unsafe-inline' scripts.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "./openapi.yaml",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    displayRequestDuration: true,
    // Never call out: no online validator badge, no ?url= / ?configUrl= overrides.
    validatorUrl: null,
    queryConfigEnabled: false,
  });
});
