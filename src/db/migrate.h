#ifndef MARKETD_DB_MIGRATE_H
#define MARKETD_DB_MIGRATE_H
/*
 * Schema migrations. The SQL files of migrations/ are embedded in the binary
 * at build time (scripts/embed-migrations.sh → build/gen/migrations_embed.c),
 * so a binary knows exactly which schema version it speaks. A file's
 * leading comment lines may carry markers (db/migrate_file.h):
 * `-- marketd: no-transaction` and `-- marketd: compatible-with-previous`.
 *
 * schema_migrations belongs to the migrator, not to a numbered migration:
 * every run creates it or adds what later binaries need (checksum,
 * compatible) before reading it.
 */
#include <stddef.h>
#include <stdio.h>

typedef struct migration {
    int version;      /* NNNN of migrations/NNNN_name.sql */
    const char *name; /* "NNNN_name" */
    const char *sql;  /* the file's text, NUL-terminated */
} migration_t;

/* Generated: every migration in ascending version order. */
extern const migration_t migrations_embedded[];
extern const size_t migrations_embedded_count;

/* The schema version this binary expects (the highest embedded version). */
int migrate_latest_version(void);

/* What `marketd migrate` and `migrate status` work from. */
typedef struct migrate_options {
    /* NULL: the embedded migrations (production). Otherwise a directory of
     * NNNN_name.sql files read at run time (MIGRATIONS_DIR: development and
     * tests only; the server always uses the embedded ones). */
    const char *dir;
    /* Months of order partitions created back from the current one
     * (25 when 0; fewer when ORDER_RETENTION_MONTHS would drop them). */
    int partitions_back;
} migrate_options_t;

/*
 * `marketd migrate`: connects with `conninfo` (blocking libpq; a CLI, never
 * called on an event loop), applies every migration newer than the
 * database's version — each in its own transaction with its
 * schema_migrations row (checksum, compatibility), or statement by
 * statement for a no-transaction file — then ensures the order partitions
 * ahead. Safe to rerun; concurrent runs serialise on an advisory lock.
 * Refuses (returns -1 with a message on stderr, changing nothing) a
 * database whose version is newer than the migrations it knows, and one
 * where an applied migration's recorded checksum differs from its file.
 * Progress lines go to stderr. Returns 0 on success.
 */
int migrate_run(const char *conninfo, const migrate_options_t *opt);

/*
 * `marketd migrate status`: one line per migration known to the binary or
 * recorded in the database — applied / pending / changed (checksum differs)
 * / unknown (recorded, not known here) — with checksum, compatibility and
 * applied_at, written to `out`. Records the checksums of applied
 * migrations that have none yet (databases migrated by older binaries).
 * Returns 0, or -1 with a message on stderr (cannot connect, bad file).
 */
int migrate_status(const char *conninfo, const migrate_options_t *opt, FILE *out);

#endif
