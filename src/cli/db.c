#include "cli/db.h"

#include <stdio.h>
#include <stdlib.h>

PGconn *cli_db_connect(const char *who)
{
    const char *url = getenv("DATABASE_URL");
    if (url == NULL || *url == '\0') {
        fprintf(stderr, "marketd: bad configuration: DATABASE_URL: required but not set\n");
        return NULL;
    }
    char app[64];
    snprintf(app, sizeof(app), "marketd %s", who);
    /* dbname is expanded as the whole URL; the later application_name
     * overrides one the URL may carry. */
    const char *keys[] = {"dbname", "application_name", NULL};
    const char *vals[] = {url, app, NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "marketd %s: cannot connect: %s", who, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}
