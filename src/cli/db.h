#ifndef MARKETD_CLI_DB_H
#define MARKETD_CLI_DB_H
/*
 * The database connection of a one-shot CLI command (`marketd user`,
 * `marketd backfill`): DATABASE_URL, blocking libpq — no event loop here.
 */
#include <libpq-fe.h>

/* Connects to DATABASE_URL as application_name "marketd <who>". NULL, with
 * the reason on stderr, when it is not set or the connection fails. */
PGconn *cli_db_connect(const char *who);

#endif
