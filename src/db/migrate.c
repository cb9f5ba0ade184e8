/*
 * `marketd migrate`: applies the embedded migrations (see migrate.h).
 *
 * A CLI on blocking libpq. The order of work matters:
 *   1. take a session advisory lock, so two deploys running migrate at once
 *      apply each migration exactly once (the second waits, then finds
 *      nothing to do);
 *   2. create schema_migrations if missing (under the lock, so concurrent
 *      CREATE TABLE IF NOT EXISTS cannot race on the catalog);
 *   3. refuse a database newer than this binary: an old binary must never
 *      run against a schema it does not know (e.g. a rollback of the code
 *      without a rollback of the data);
 *   4. each pending migration in its own transaction together with its
 *      schema_migrations row, so a failure leaves the database at the last
 *      good version and a rerun resumes there;
 *   5. top up the monthly order partitions — always, even when no migration
 *      was pending, because partitions ahead run out with time and rerunning
 *      migrate (e.g. from cron or on every deploy) is how they are renewed.
 */
#include "db/migrate.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Arbitrary but fixed: every marketd binary must use the same key. It is
 * 0x6d6b7464 ("mktd") in decimal, as PostgreSQL 15 has no hex literals. */
#define MIGRATE_LOCK_KEY "1835758692"

/* Partition window kept by every run: 25 months back (the seed's 24 months of
 * history fit), 3 months ahead (a quarter of slack if migrate is not rerun). */
#define MIGRATE_PARTITIONS_SQL "SELECT marketd_ensure_partitions(25, 3)"

/* ATTACH PARTITION waits for a SHARE UPDATE EXCLUSIVE lock on orders; a long
 * transaction on orders (a report, a VACUUM) must not make the top-up queue
 * for long, because everything arriving after it would queue behind it. */
#define MIGRATE_PARTITION_LOCK_TIMEOUT "5s"
#define MIGRATE_PARTITION_ATTEMPTS     3

int migrate_latest_version(void)
{
    int latest = 0;
    for (size_t i = 0; i < migrations_embedded_count; i++)
        if (migrations_embedded[i].version > latest)
            latest = migrations_embedded[i].version;
    return latest;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* PQerrorMessage / PQresultErrorMessage end with a newline; strip it so the
 * message fits on our own line. */
static void print_pq_error(const char *what, const char *msg)
{
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        len--;
    fprintf(stderr, "migrate: %s: %.*s\n", what, (int)len, msg);
}

/* Runs a statement that returns no rows we need. Returns 0 or -1 (printed). */
static int exec_ok(PGconn *conn, const char *sql, const char *what)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        print_pq_error(what, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* A failed statement leaves the transaction aborted; roll it back so the
 * connection is usable again (for the unlock). Errors here are moot. */
static void rollback_quietly(PGconn *conn)
{
    PQclear(PQexec(conn, "ROLLBACK"));
}

/* Takes the advisory lock, saying so if another migrate holds it. */
static int take_lock(PGconn *conn)
{
    int rc = -1;
    PGresult *res = PQexec(conn, "SELECT pg_try_advisory_lock(" MIGRATE_LOCK_KEY ")");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        print_pq_error("taking the migration lock", PQresultErrorMessage(res));
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        rc = 0;
        goto out;
    }
    PQclear(res);
    fprintf(stderr, "migrate: another migrate is running, waiting for it\n");
    res = PQexec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        print_pq_error("waiting for the migration lock", PQresultErrorMessage(res));
        goto out;
    }
    rc = 0;
out:
    PQclear(res);
    return rc;
}

/* Reads the applied versions. Returns the highest one (0 for none) or -1.
 * Warns when an applied version carries another name than this binary's
 * file of that number: someone renumbered or rewrote history. */
static int read_db_version(PGconn *conn)
{
    int version = -1;
    PGresult *res = PQexec(conn, "SELECT version, name FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        print_pq_error("reading schema_migrations", PQresultErrorMessage(res));
        goto out;
    }
    version = 0;
    for (int row = 0; row < PQntuples(res); row++) {
        int v = atoi(PQgetvalue(res, row, 0));
        const char *name = PQgetvalue(res, row, 1);
        if (v > version)
            version = v;
        for (size_t i = 0; i < migrations_embedded_count; i++)
            if (migrations_embedded[i].version == v && strcmp(migrations_embedded[i].name, name) != 0)
                fprintf(stderr,
                        "migrate: warning: version %d is recorded as %s but this binary calls it %s\n", v,
                        name, migrations_embedded[i].name);
    }
out:
    PQclear(res);
    return version;
}

/* One migration, one transaction: the DDL and its schema_migrations row
 * commit together or not at all. */
static int apply_one(PGconn *conn, const migration_t *m)
{
    int rc = -1;
    char version[16];
    const char *params[2] = {version, m->name};
    PGresult *res = NULL;
    double t0 = now_ms();
    char what[160];

    snprintf(version, sizeof version, "%d", m->version);
    snprintf(what, sizeof what, "migration %s failed", m->name);

    if (exec_ok(conn, "BEGIN", "BEGIN") != 0)
        goto out;
    /* The file may hold many statements: the simple-query protocol runs
     * them in order and stops at the first error. */
    if (exec_ok(conn, m->sql, what) != 0)
        goto rollback;
    res = PQexecParams(conn, "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)", 2, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        print_pq_error("recording the migration", PQresultErrorMessage(res));
        goto rollback;
    }
    if (exec_ok(conn, "COMMIT", "COMMIT") != 0)
        goto out;
    fprintf(stderr, "migrate: applied %s (%.0f ms)\n", m->name, now_ms() - t0);
    rc = 0;
    goto out;
rollback:
    rollback_quietly(conn);
out:
    PQclear(res);
    return rc;
}

/* Partition top-up under a short lock_timeout, retried a few times: a busy
 * orders table only postpones it by seconds. */
static int ensure_partitions(PGconn *conn)
{
    for (int attempt = 1; attempt <= MIGRATE_PARTITION_ATTEMPTS; attempt++) {
        PGresult *res = NULL;
        const char *sqlstate;
        int lock_timed_out;

        if (exec_ok(conn, "BEGIN", "BEGIN") != 0)
            return -1;
        if (exec_ok(conn, "SET LOCAL lock_timeout = '" MIGRATE_PARTITION_LOCK_TIMEOUT "'",
                    "SET lock_timeout") != 0) {
            rollback_quietly(conn);
            return -1;
        }
        res = PQexec(conn, MIGRATE_PARTITIONS_SQL);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            int created = atoi(PQgetvalue(res, 0, 0));
            PQclear(res);
            if (exec_ok(conn, "COMMIT", "COMMIT") != 0)
                return -1;
            if (created > 0)
                fprintf(stderr, "migrate: created %d order partitions\n", created);
            return 0;
        }
        sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        lock_timed_out = sqlstate != NULL && strcmp(sqlstate, "55P03") == 0; /* lock_not_available */
        print_pq_error(lock_timed_out ? "partition top-up could not get its lock" : "partition top-up failed",
                       PQresultErrorMessage(res));
        PQclear(res);
        rollback_quietly(conn);
        if (!lock_timed_out)
            return -1;
        if (attempt < MIGRATE_PARTITION_ATTEMPTS)
            fprintf(stderr, "migrate: retrying the partition top-up (%d/%d)\n", attempt + 1,
                    MIGRATE_PARTITION_ATTEMPTS);
    }
    fprintf(stderr,
            "migrate: gave up on the partition top-up: a long transaction holds orders; rerun migrate\n");
    return -1;
}

int migrate_run(const char *conninfo)
{
    int rc = -1;
    int locked = 0;
    PGconn *conn = NULL;
    int latest = migrate_latest_version();
    int current;
    int applied = 0;

    if (conninfo == NULL || conninfo[0] == '\0') {
        fprintf(stderr, "migrate: DATABASE_URL is not set\n");
        return -1;
    }
    conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        print_pq_error("cannot connect", PQerrorMessage(conn));
        goto out;
    }
    /* NOTICEs such as "extension already exists, skipping" are noise here. */
    if (exec_ok(conn, "SET client_min_messages = warning", "SET client_min_messages") != 0 ||
        exec_ok(conn, "SET application_name = 'marketd migrate'", "SET application_name") != 0)
        goto out;

    if (take_lock(conn) != 0)
        goto out;
    locked = 1;

    if (exec_ok(conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                "creating schema_migrations") != 0)
        goto out;

    current = read_db_version(conn);
    if (current < 0)
        goto out;
    if (current > latest) {
        fprintf(stderr,
                "migrate: the database is at schema version %d but this binary only knows versions up to %d; "
                "refusing to touch it (deploy a newer marketd)\n",
                current, latest);
        goto out;
    }

    for (size_t i = 0; i < migrations_embedded_count; i++) {
        const migration_t *m = &migrations_embedded[i];
        if (m->version <= current)
            continue;
        if (apply_one(conn, m) != 0)
            goto out;
        current = m->version;
        applied++;
    }
    if (applied == 0)
        fprintf(stderr, "migrate: database at version %d, nothing to do\n", current);

    if (current > 0 && ensure_partitions(conn) != 0)
        goto out;
    if (applied > 0)
        fprintf(stderr, "migrate: database at version %d\n", current);
    rc = 0;
out:
    if (locked) {
        /* Closing the session would release it too; unlocking explicitly
         * keeps that true behind a session-pooling proxy. */
        PGresult *res = PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            print_pq_error("releasing the migration lock", PQresultErrorMessage(res));
        PQclear(res);
    }
    PQfinish(conn);
    return rc;
}
