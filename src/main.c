/*
 * marketd: one binary, several modes (after redis-server).
 *
 *   marketd serve                      the HTTP API (configuration: environment, api.md)
 *   marketd migrate [status | new NAME] apply / list schema migrations, or start a new one
 *   marketd user create | set-admin    accounts and administrators without SQL
 *   marketd seed --scale demo|bench    load deterministic demo/benchmark data
 *   marketd backfill order-docs        store the documents of older orders (schema 9)
 *   marketd routes                     the route table as JSON (for the OpenAPI drift check)
 *   marketd version
 */
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "cli/backfill.h"
#include "cli/migrate.h"
#include "cli/seed.h"
#include "cli/user.h"
#include "core/config.h"
#include "core/log.h"
#include "core/version.h"
#include "db/migrate.h"
#include "http/server.h"

static const char *env_get(const char *name)
{
    return getenv(name);
}

static int usage(FILE *f)
{
    fprintf(f, "usage: marketd serve\n"
               "       marketd migrate [status | new NAME [--dir DIR]]\n"
               "       marketd user create --email EMAIL [--name NAME] [--admin]   (password: stdin or "
               "MARKETD_PASSWORD)\n"
               "       marketd user set-admin --email EMAIL [--revoke]\n"
               "       marketd seed --scale demo|bench [--force] | routes | version\n"
               "       marketd backfill order-docs [--batch N] [--months N]\n"
               "configuration comes from the environment; see README.md\n");
    return f == stderr ? 2 : 0;
}

static int cmd_serve(void)
{
    config_t cfg;
    char err[512];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (config_load(&cfg, env_get, (int)(ncpu > 0 ? ncpu : 1), err, sizeof(err)) != 0) {
        fprintf(stderr, "marketd: bad configuration: %s\n", err);
        return 2;
    }
    log_set_level(cfg.log_level);
    /* api_init already talks to Redis (the start-up epoch). */
    signal(SIGPIPE, SIG_IGN);
    api_init(&cfg);
    int rc = server_run(&cfg, api_app());
    api_dispose();
    config_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "marketd: libsodium failed to initialise\n");
        return 1;
    }
    if (argc < 2)
        return usage(stderr);
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve();
    if (strcmp(cmd, "migrate") == 0)
        return cli_migrate_main(argc - 1, argv + 1);
    if (strcmp(cmd, "user") == 0)
        return cli_user_main(argc - 1, argv + 1);
    if (strcmp(cmd, "backfill") == 0)
        return cli_backfill_main(argc - 1, argv + 1);
    if (strcmp(cmd, "seed") == 0)
        return seed_main(argc - 1, argv + 1) == 0 ? 0 : 1;
    if (strcmp(cmd, "routes") == 0) {
        /* The table is data: no configuration or database is needed. */
        api_print_routes(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0) {
        printf("marketd %s (schema %d)\n", MARKETD_VERSION, migrate_latest_version());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
        return usage(stdout);
    fprintf(stderr, "marketd: unknown command \"%s\"\n", cmd);
    return usage(stderr);
}
