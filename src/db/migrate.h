#ifndef MARKETD_DB_MIGRATE_H
#define MARKETD_DB_MIGRATE_H
/*
 * Schema migrations. The SQL files of migrations/ are embedded in the binary
 * at build time (scripts/embed-migrations.sh → build/gen/migrations_embed.c),
 * so a binary knows exactly which schema version it speaks.
 */
#include <stddef.h>

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

/*
 * `marketd migrate`: connects with `conninfo` (blocking libpq; a CLI, never
 * called on an event loop), applies every embedded migration newer than the
 * database's version, each in its own transaction and recorded in
 * schema_migrations, then ensures the order partitions ahead.
 * Safe to rerun; concurrent runs serialise on an advisory lock. Refuses
 * (returns -1 with a message on stderr) a database whose version is newer
 * than this binary. Progress lines go to stderr. Returns 0 on success.
 */
int migrate_run(const char *conninfo);

#endif
