#ifndef MARKETD_CLI_MIGRATE_H
#define MARKETD_CLI_MIGRATE_H
#include <stddef.h>
/*
 * `marketd migrate [status | new NAME [--dir DIR]]` (argv[0] is "migrate"):
 *
 *   migrate              apply the pending migrations to DATABASE_URL (db/migrate.h)
 *   migrate status       list applied / pending migrations with checksums
 *   migrate new NAME     create DIR/NNNN_name.sql (DIR: ./migrations) from the
 *                        header template, print its path; refuses an existing name
 *
 * MIGRATIONS_DIR (development and tests) makes apply and status read the
 * .sql files of that directory instead of the embedded ones.
 * ORDER_RETENTION_MONTHS limits how many months of order partitions apply
 * creates back. Returns the process exit code: 0, 1 (failed), 2 (usage).
 */
int cli_migrate_main(int argc, char **argv);

/*
 * `migrate new`: writes dir/NNNN_<sanitised name>.sql, NNNN one more than
 * the highest NNNN_*.sql in dir, and puts its path in path (pathlen bytes).
 * Returns 0, or -1 with a message on stderr (bad name, a migration of that
 * name exists, dir unreadable, the file exists).
 */
int cli_migrate_new(const char *dir, const char *name, char *path, size_t pathlen);
#endif
