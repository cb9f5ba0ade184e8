/* `marketd migrate ...`: argv to db/migrate.c, and `migrate new` (cli/migrate.h). */
#include "cli/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db/migrate.h"
#include "db/migrate_file.h"

/* The header every new migration starts with (version, name).
 * The compatibility line is deliberately the safe one: an author opts in to
 * "compatible" after checking the rule, never by forgetting to opt out. */
static const char new_template[] =
    "-- %04d: %s: what this migration changes, and why.\n"
    "--\n"
    "-- Backward compatibility (docs/deploy.md \"Migrations: expand and contract\").\n"
    "-- Change the marker below to `compatible-with-previous` only if the\n"
    "-- binary of the release before this one still works on the schema after\n"
    "-- this migration: it only adds (tables, nullable or defaulted columns,\n"
    "-- functions, indexes) and changes nothing the previous binary uses. Then\n"
    "-- old instances stay ready while it is rolled out. Drops, renames, new\n"
    "-- NOT NULL columns without defaults and changed function signatures are\n"
    "-- contract migrations: ship them only after every instance runs a binary\n"
    "-- that no longer needs what they remove, and keep them incompatible.\n"
    "-- marketd: incompatible-with-previous\n"
    "--\n"
    "-- Statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY)\n"
    "-- need the marker `-- marketd: no-transaction` in this header; the file\n"
    "-- then runs statement by statement and must be safe to rerun.\n"
    "\n";

static int usage(void)
{
    fprintf(stderr, "usage: marketd migrate [status | new NAME [--dir DIR]]\n");
    return 2;
}

/* ORDER_RETENTION_MONTHS as the server reads it (src/core/config.c); a bad
 * value is the server's to report, here it only means "the default". */
static int retention_months(void)
{
    const char *s = getenv("ORDER_RETENTION_MONTHS");
    char *end;
    long v;
    if (s == NULL || *s == '\0')
        return 0;
    errno = 0;
    v = strtol(s, &end, 10);
    return errno == 0 && *end == '\0' && v > 0 && v < 100000 ? (int)v : 0;
}

int cli_migrate_new(const char *dir, const char *name, char *path, size_t pathlen)
{
    char clean[MIGRATE_NAME_MAX + 1];
    int next = 1, rc = -1, fd = -1;
    struct dirent *e;
    DIR *d;
    FILE *f;

    if (migrate_sanitize_name(name, clean, sizeof clean) < 0) {
        fprintf(stderr, "migrate new: \"%s\" makes no file name: use letters, digits and _ (at most %d)\n",
                name, MIGRATE_NAME_MAX);
        return -1;
    }
    d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "migrate new: cannot read %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        const char *b = e->d_name;
        size_t n = strlen(b);
        if (n < 10 || b[4] != '_' || strcmp(b + n - 4, ".sql") != 0 || strspn(b, "0123456789") != 4)
            continue;
        if (atoi(b) >= next)
            next = atoi(b) + 1;
        if (n - 9 == strlen(clean) && memcmp(b + 5, clean, n - 9) == 0) {
            fprintf(stderr, "migrate new: %s/%s already exists; choose another name\n", dir, b);
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    if (next > 9999) {
        fprintf(stderr, "migrate new: %s already holds version 9999\n", dir);
        return -1;
    }
    snprintf(path, pathlen, "%s/%04d_%s.sql", dir, next, clean);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        fprintf(stderr, "migrate new: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        goto out;
    }
    fprintf(f, new_template, next, clean);
    rc = fclose(f) == 0 ? 0 : -1;
out:
    if (rc != 0) {
        fprintf(stderr, "migrate new: writing %s failed: %s\n", path, strerror(errno));
        unlink(path);
    }
    return rc;
}

static int cmd_new(int argc, char **argv)
{
    const char *dir = "migrations", *name = NULL;
    char path[4096];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (argv[i][0] == '-' || name != NULL)
            return usage();
        else
            name = argv[i];
    }
    if (name == NULL)
        return usage();
    if (cli_migrate_new(dir, name, path, sizeof path) != 0)
        return 1;
    printf("%s\n", path);
    return 0;
}

int cli_migrate_main(int argc, char **argv)
{
    const char *url = getenv("DATABASE_URL");
    const char *dir = getenv("MIGRATIONS_DIR");
    migrate_options_t opt = {.dir = dir != NULL && *dir != '\0' ? dir : NULL,
                             .partitions_back = retention_months()};

    if (argc >= 2 && strcmp(argv[1], "new") == 0)
        return cmd_new(argc, argv);
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "status") != 0))
        return usage();
    if (url == NULL || *url == '\0') {
        fprintf(stderr, "marketd: bad configuration: DATABASE_URL: required but not set\n");
        return 2;
    }
    if (opt.dir != NULL)
        fprintf(stderr, "migrate: reading migrations from MIGRATIONS_DIR=%s, not the embedded ones\n",
                opt.dir);
    if (argc == 2)
        return migrate_status(url, &opt, stdout) == 0 ? 0 : 1;
    return migrate_run(url, &opt) == 0 ? 0 : 1;
}
