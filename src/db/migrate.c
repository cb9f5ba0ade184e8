/*
 * `marketd migrate`: applies the embedded migrations (see migrate.h).
 *
 * A CLI on blocking libpq. The order of work matters:
 *   1. take a session advisory lock, so two deploys running migrate at once
 *      apply each migration exactly once (the second waits, then finds
 *      nothing to do);
 *   2. bootstrap schema_migrations (under the lock, so concurrent
 *      CREATE TABLE IF NOT EXISTS cannot race on the catalog): create it,
 *      add the columns later binaries added (checksum, compatible), and
 *      fill them for versions applied before they existed, from the files
 *      this binary knows;
 *   3. refuse a database newer than this binary: an old binary must never
 *      migrate a schema it does not know (e.g. a rollback of the code
 *      without a rollback of the data);
 *   4. refuse when an applied migration's recorded checksum differs from
 *      its file: the database was built from other SQL than the repository
 *      holds, and what is "pending" can no longer be trusted;
 *   5. each pending migration in its own transaction together with its
 *      schema_migrations row, so a failure leaves the database at the last
 *      good version and a rerun resumes there. A no-transaction file
 *      (CREATE INDEX CONCURRENTLY) runs statement by statement instead and
 *      is recorded after its last statement; it must be safe to rerun;
 *   6. top up the monthly order partitions — always, even when no migration
 *      was pending, because partitions ahead run out with time and rerunning
 *      migrate (e.g. from cron or on every deploy) is how they are renewed.
 */
#include "db/migrate.h"

#include <dirent.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db/migrate_file.h"

/* Arbitrary but fixed: every marketd binary must use the same key. It is
 * 0x6d6b7464 ("mktd") in decimal, as PostgreSQL 15 has no hex literals. */
#define MIGRATE_LOCK_KEY "1835758692"

/* Partition window kept by every run: 25 months back (the seed's 24 months of
 * history fit; fewer with ORDER_RETENTION_MONTHS), 3 months ahead (a quarter
 * of slack if migrate is not rerun). */
#define MIGRATE_PARTITIONS_BACK  25
#define MIGRATE_PARTITIONS_AHEAD 3

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

/* ---- the migrations this run knows ------------------------------------------------------ */

/* One migration with what the runner derives from its text. */
typedef struct mig {
    int version;
    char *name; /* "NNNN_name" */
    char *sql;  /* NUL-terminated */
    size_t len;
    unsigned flags; /* MIGRATE_* markers */
    char checksum[MIGRATE_CHECKSUM_HEX];
} mig_t;

typedef struct mig_set {
    mig_t *items; /* ascending versions */
    size_t count;
    const char *dir; /* where the files are, for messages */
} mig_set_t;

static void set_free(mig_set_t *set)
{
    for (size_t i = 0; i < set->count; i++) {
        free(set->items[i].name);
        free(set->items[i].sql);
    }
    free(set->items);
    set->items = NULL;
    set->count = 0;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL) {
        fprintf(stderr, "migrate: out of memory\n");
        abort();
    }
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Takes ownership of name and sql; parses the markers. */
static int set_add(mig_set_t *set, int version, char *name, char *sql, size_t len)
{
    mig_t *m;
    char err[256];
    set->items = realloc(set->items, (set->count + 1) * sizeof(*set->items));
    if (set->items == NULL) {
        fprintf(stderr, "migrate: out of memory\n");
        abort();
    }
    m = &set->items[set->count++];
    m->version = version;
    m->name = name;
    m->sql = sql;
    m->len = len;
    migrate_checksum(sql, len, m->checksum);
    if (migrate_parse_markers(sql, len, &m->flags, err, sizeof err) != 0) {
        fprintf(stderr, "migrate: %s/%s.sql: %s\n", set->dir, name, err);
        return -1;
    }
    return 0;
}

/* NNNN_name.sql with name in [a-z0-9_]+ (scripts/embed-migrations.sh). */
static int file_version(const char *base)
{
    size_t n = strlen(base);
    if (n < 10 || strcmp(base + n - 4, ".sql") != 0 || base[4] != '_')
        return -1;
    for (size_t i = 0; i < 4; i++)
        if (base[i] < '0' || base[i] > '9')
            return -1;
    for (size_t i = 5; i < n - 4; i++)
        if (!((base[i] >= 'a' && base[i] <= 'z') || (base[i] >= '0' && base[i] <= '9') || base[i] == '_'))
            return -1;
    return atoi(base);
}

static int sql_file_filter(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0;
}

static int read_whole(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;
    if (f == NULL)
        return -1;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = (n + 4096 + 1) * 2;
            buf = realloc(buf, cap);
            if (buf == NULL)
                abort();
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* The same rules as scripts/embed-migrations.sh, at run time. */
static int set_load_dir(mig_set_t *set, const char *dir)
{
    struct dirent **list = NULL;
    int n = scandir(dir, &list, sql_file_filter, alphasort);
    int rc = -1, prev = 0;
    if (n < 0) {
        fprintf(stderr, "migrate: cannot read MIGRATIONS_DIR %s: %m\n", dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const char *base = list[i]->d_name;
        int v = file_version(base);
        char path[4096], *sql;
        size_t len;
        if (v <= 0) {
            fprintf(stderr, "migrate: %s/%s: name must be NNNN_name.sql (lower-case, digits, _), NNNN > 0\n",
                    dir, base);
            goto out;
        }
        if (v <= prev) {
            fprintf(stderr, "migrate: %s/%s: duplicate version %d\n", dir, base, v);
            goto out;
        }
        prev = v;
        snprintf(path, sizeof path, "%s/%s", dir, base);
        if (read_whole(path, &sql, &len) != 0) {
            fprintf(stderr, "migrate: cannot read %s: %m\n", path);
            goto out;
        }
        if (strlen(sql) != len) {
            fprintf(stderr, "migrate: %s: contains a NUL byte\n", path);
            free(sql);
            goto out;
        }
        if (set_add(set, v, xstrndup(base, strlen(base) - 4), sql, len) != 0)
            goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
    return rc;
}

static int set_load(mig_set_t *set, const char *dir)
{
    memset(set, 0, sizeof(*set));
    if (dir != NULL) {
        set->dir = dir;
        if (set_load_dir(set, dir) == 0)
            return 0;
        set_free(set);
        return -1;
    }
    set->dir = "migrations";
    for (size_t i = 0; i < migrations_embedded_count; i++) {
        const migration_t *e = &migrations_embedded[i];
        size_t len = strlen(e->sql);
        if (set_add(set, e->version, xstrndup(e->name, strlen(e->name)), xstrndup(e->sql, len), len) != 0) {
            set_free(set);
            return -1;
        }
    }
    return 0;
}

static const mig_t *set_find(const mig_set_t *set, int version)
{
    for (size_t i = 0; i < set->count; i++)
        if (set->items[i].version == version)
            return &set->items[i];
    return NULL;
}

static int set_latest(const mig_set_t *set)
{
    return set->count > 0 ? set->items[set->count - 1].version : 0;
}

/* ---- schema_migrations ------------------------------------------------------------------ */

/* Creates the table, adds the columns of later binaries, and records the
 * checksum and compatibility of applied versions that have none yet (a
 * database migrated before they existed) from the files this run knows.
 * `compatible` of such rows is what the file declares; without a marker,
 * false. */
static int bootstrap(PGconn *conn, const mig_set_t *set)
{
    if (exec_ok(conn,
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version int PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                "creating schema_migrations") != 0)
        return -1;
    /* IF NOT EXISTS still locks the table: only when a column is missing. */
    PGresult *res = PQexec(conn, "SELECT count(*) FROM information_schema.columns WHERE table_schema ="
                                 " current_schema() AND table_name = 'schema_migrations'"
                                 " AND column_name IN ('checksum', 'compatible')");
    int have = PQresultStatus(res) == PGRES_TUPLES_OK ? atoi(PQgetvalue(res, 0, 0)) : -1;
    if (have < 0)
        print_pq_error("reading schema_migrations' columns", PQresultErrorMessage(res));
    PQclear(res);
    if (have < 0)
        return -1;
    if (have < 2 && exec_ok(conn,
                            "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text,"
                            " ADD COLUMN IF NOT EXISTS compatible boolean NOT NULL DEFAULT false",
                            "adding checksum and compatible to schema_migrations") != 0)
        return -1;

    res = PQexec(conn, "SELECT version FROM schema_migrations WHERE checksum IS NULL ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        print_pq_error("reading schema_migrations", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    int rc = 0, filled = 0;
    for (int row = 0; row < PQntuples(res) && rc == 0; row++) {
        const mig_t *m = set_find(set, atoi(PQgetvalue(res, row, 0)));
        if (m == NULL)
            continue; /* a newer binary's migration: that binary records it */
        const char *params[3] = {PQgetvalue(res, row, 0), m->checksum,
                                 (m->flags & MIGRATE_COMPATIBLE) ? "true" : "false"};
        PGresult *up = PQexecParams(conn,
                                    "UPDATE schema_migrations SET checksum = $2, compatible = $3::boolean"
                                    " WHERE version = $1::int AND checksum IS NULL",
                                    3, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(up) != PGRES_COMMAND_OK) {
            print_pq_error("recording checksums", PQresultErrorMessage(up));
            rc = -1;
        } else {
            filled++;
        }
        PQclear(up);
    }
    PQclear(res);
    if (filled > 0)
        fprintf(stderr,
                "migrate: recorded the checksums of %d migration(s) applied before checksums existed\n",
                filled);
    return rc;
}

/* The applied rows: version, name, checksum, compatible, applied_at. */
static PGresult *read_rows(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT version, name, coalesce(checksum, ''), compatible,"
                                 " to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                                 " FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        print_pq_error("reading schema_migrations", PQresultErrorMessage(res));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* The highest applied version (0 for none). Warns when an applied version
 * carries another name than this run's file of that number: someone
 * renumbered or rewrote history. */
static int db_version(const PGresult *rows, const mig_set_t *set)
{
    int version = 0;
    for (int row = 0; row < PQntuples(rows); row++) {
        int v = atoi(PQgetvalue(rows, row, 0));
        const char *name = PQgetvalue(rows, row, 1);
        const mig_t *m = set_find(set, v);
        if (v > version)
            version = v;
        if (m != NULL && strcmp(m->name, name) != 0)
            fprintf(stderr, "migrate: warning: version %d is recorded as %s but this binary calls it %s\n", v,
                    name, m->name);
    }
    return version;
}

/* Returns -1 (printed) when an applied migration's recorded checksum
 * differs from its file. */
static int verify_checksums(const PGresult *rows, const mig_set_t *set)
{
    int rc = 0;
    for (int row = 0; row < PQntuples(rows); row++) {
        const mig_t *m = set_find(set, atoi(PQgetvalue(rows, row, 0)));
        const char *recorded = PQgetvalue(rows, row, 2);
        if (m == NULL || recorded[0] == '\0' || strcmp(recorded, m->checksum) == 0)
            continue;
        fprintf(stderr,
                "migrate: %s/%s.sql has changed since it was applied (recorded sha256 %s, the file's %s); "
                "refusing to migrate. Restore the file as it was applied and put the change in a new "
                "migration (docs/deploy.md \"Migrations\").\n",
                set->dir, m->name, recorded, m->checksum);
        rc = -1;
    }
    return rc;
}

/* ---- applying --------------------------------------------------------------------------- */

static int record(PGconn *conn, const mig_t *m)
{
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[4] = {version, m->name, m->checksum,
                             (m->flags & MIGRATE_COMPATIBLE) ? "true" : "false"};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO schema_migrations (version, name, checksum, compatible)"
                                 " VALUES ($1::int, $2, $3, $4::boolean)",
                                 4, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        print_pq_error("recording the migration", PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    return rc;
}

/* One migration, one transaction: the DDL and its schema_migrations row
 * commit together or not at all. */
static int apply_in_transaction(PGconn *conn, const mig_t *m)
{
    char what[160];
    snprintf(what, sizeof what, "migration %s failed", m->name);
    if (exec_ok(conn, "BEGIN", "BEGIN") != 0)
        return -1;
    /* The file may hold many statements: the simple-query protocol runs
     * them in order and stops at the first error. */
    if (exec_ok(conn, m->sql, what) != 0 || record(conn, m) != 0) {
        rollback_quietly(conn);
        return -1;
    }
    return exec_ok(conn, "COMMIT", "COMMIT");
}

/* A no-transaction file: each statement on its own (one PQexec of several
 * statements would make them one implicit transaction, which CREATE INDEX
 * CONCURRENTLY refuses). A failure leaves the earlier statements applied
 * and the version unrecorded, so a rerun starts the file again: such files
 * must be idempotent (IF NOT EXISTS; an INVALID index left by a failed
 * CONCURRENTLY build dropped first). */
static int apply_statements(PGconn *conn, const mig_t *m)
{
    size_t pos = 0, start = 0, len = 0;
    int n = 0, got;
    while ((got = migrate_next_statement(m->sql, m->len, &pos, &start, &len)) == 1) {
        char *stmt = xstrndup(m->sql + start, len);
        char what[200];
        n++;
        snprintf(what, sizeof what,
                 "migration %s (no-transaction), statement %d failed; those before it are applied", m->name,
                 n);
        int rc = exec_ok(conn, stmt, what);
        free(stmt);
        if (rc != 0)
            return -1;
    }
    if (got < 0) {
        fprintf(stderr, "migrate: %s: a quote or comment opened at byte %zu is never closed\n", m->name,
                start);
        return -1;
    }
    return record(conn, m);
}

/* Partition top-up under a short lock_timeout, retried a few times: a busy
 * orders table only postpones it by seconds. */
static int ensure_partitions(PGconn *conn, int months_back)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT marketd_ensure_partitions(%d, %d)", months_back,
             MIGRATE_PARTITIONS_AHEAD);
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
        res = PQexec(conn, sql);
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

/* ---- the session both commands share ---------------------------------------------------- */

/* Connects, takes the lock, bootstraps schema_migrations and reads it. */
static int session_open(const char *conninfo, const mig_set_t *set, PGconn **conn, int *locked,
                        PGresult **rows)
{
    *locked = 0;
    *rows = NULL;
    *conn = NULL;
    if (conninfo == NULL || conninfo[0] == '\0') {
        fprintf(stderr, "migrate: DATABASE_URL is not set\n");
        return -1;
    }
    *conn = PQconnectdb(conninfo);
    if (PQstatus(*conn) != CONNECTION_OK) {
        print_pq_error("cannot connect", PQerrorMessage(*conn));
        return -1;
    }
    /* NOTICEs such as "extension already exists, skipping" are noise here. */
    if (exec_ok(*conn, "SET client_min_messages = warning", "SET client_min_messages") != 0 ||
        exec_ok(*conn, "SET application_name = 'marketd migrate'", "SET application_name") != 0)
        return -1;
    if (take_lock(*conn) != 0)
        return -1;
    *locked = 1;
    if (bootstrap(*conn, set) != 0)
        return -1;
    *rows = read_rows(*conn);
    return *rows != NULL ? 0 : -1;
}

static void session_close(PGconn *conn, int locked, PGresult *rows)
{
    PQclear(rows);
    if (locked) {
        /* Closing the session would release it too; unlocking explicitly
         * keeps that true behind a session-pooling proxy. */
        PGresult *res = PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            print_pq_error("releasing the migration lock", PQresultErrorMessage(res));
        PQclear(res);
    }
    PQfinish(conn);
}

int migrate_run(const char *conninfo, const migrate_options_t *opt)
{
    int rc = -1, locked = 0, applied = 0, current, latest;
    PGconn *conn = NULL;
    PGresult *rows = NULL;
    mig_set_t set;
    int months_back = opt->partitions_back > 0 && opt->partitions_back < MIGRATE_PARTITIONS_BACK
                          ? opt->partitions_back
                          : MIGRATE_PARTITIONS_BACK;

    if (set_load(&set, opt->dir) != 0)
        return -1;
    latest = set_latest(&set);
    if (session_open(conninfo, &set, &conn, &locked, &rows) != 0)
        goto out;

    current = db_version(rows, &set);
    if (current > latest) {
        fprintf(stderr,
                "migrate: the database is at schema version %d but this binary only knows versions up to %d; "
                "refusing to touch it (deploy a newer marketd)\n",
                current, latest);
        goto out;
    }
    if (verify_checksums(rows, &set) != 0)
        goto out;

    for (size_t i = 0; i < set.count; i++) {
        const mig_t *m = &set.items[i];
        double t0 = now_ms();
        if (m->version <= current)
            continue;
        if (((m->flags & MIGRATE_NO_TRANSACTION) ? apply_statements(conn, m)
                                                 : apply_in_transaction(conn, m)) != 0)
            goto out;
        fprintf(stderr, "migrate: applied %s%s (%.0f ms)\n", m->name,
                (m->flags & MIGRATE_NO_TRANSACTION) ? " without a transaction" : "", now_ms() - t0);
        current = m->version;
        applied++;
    }
    if (applied == 0)
        fprintf(stderr, "migrate: database at version %d, nothing to do\n", current);

    if (current > 0 && ensure_partitions(conn, months_back) != 0)
        goto out;
    if (applied > 0)
        fprintf(stderr, "migrate: database at version %d\n", current);
    rc = 0;
out:
    session_close(conn, locked, rows);
    set_free(&set);
    return rc;
}

/* ---- status ----------------------------------------------------------------------------- */

static void status_line(FILE *out, int width, const char *name, const char *state, const char *compat,
                        const char *applied_at, const char *checksum)
{
    fprintf(out, "%-*s  %-8s  %-12s  %-20s  %s\n", width, name, state, compat, applied_at, checksum);
}

int migrate_status(const char *conninfo, const migrate_options_t *opt, FILE *out)
{
    int rc = -1, locked = 0, width = 9, pending = 0, changed = 0;
    PGconn *conn = NULL;
    PGresult *rows = NULL;
    mig_set_t set;

    if (set_load(&set, opt->dir) != 0)
        return -1;
    if (session_open(conninfo, &set, &conn, &locked, &rows) != 0)
        goto out;
    for (size_t i = 0; i < set.count; i++)
        if ((int)strlen(set.items[i].name) > width)
            width = (int)strlen(set.items[i].name);
    for (int row = 0; row < PQntuples(rows); row++)
        if ((int)strlen(PQgetvalue(rows, row, 1)) > width)
            width = (int)strlen(PQgetvalue(rows, row, 1));

    status_line(out, width, "MIGRATION", "STATE", "PREVIOUS_BIN", "APPLIED_AT", "SHA256");
    /* Both lists are ascending: merge them, so a recorded version this
     * binary does not know shows up in its place. */
    size_t i = 0;
    int row = 0, nrows = PQntuples(rows);
    while (i < set.count || row < nrows) {
        int fv = i < set.count ? set.items[i].version : -1;
        int rv = row < nrows ? atoi(PQgetvalue(rows, row, 0)) : -1;
        if (fv >= 0 && (rv < 0 || fv < rv)) { /* known, not applied */
            const mig_t *m = &set.items[i++];
            status_line(out, width, m->name, "pending",
                        (m->flags & MIGRATE_COMPATIBLE) ? "compatible" : "incompatible", "-", m->checksum);
            pending++;
            continue;
        }
        const char *recorded = PQgetvalue(rows, row, 2);
        const char *compat = strcmp(PQgetvalue(rows, row, 3), "t") == 0 ? "compatible" : "incompatible";
        if (fv == rv) {
            const mig_t *m = &set.items[i++];
            int same = recorded[0] == '\0' || strcmp(recorded, m->checksum) == 0;
            status_line(out, width, m->name, same ? "applied" : "CHANGED", compat, PQgetvalue(rows, row, 4),
                        same ? m->checksum : recorded);
            if (!same) {
                fprintf(out, "%-*s  (the file's sha256 is %s)\n", width, "", m->checksum);
                changed++;
            }
        } else { /* recorded by a newer binary */
            status_line(out, width, PQgetvalue(rows, row, 1), "unknown", compat, PQgetvalue(rows, row, 4),
                        recorded[0] ? recorded : "-");
        }
        row++;
    }
    int current = 0;
    for (row = 0; row < nrows; row++)
        if (atoi(PQgetvalue(rows, row, 0)) > current)
            current = atoi(PQgetvalue(rows, row, 0));
    fprintf(out, "database at version %d, %s knows up to %d: %d pending", current,
            opt->dir != NULL ? opt->dir : "this binary", set_latest(&set), pending);
    if (changed > 0)
        fprintf(out, ", %d changed since applied (migrate refuses to run)", changed);
    if (current > set_latest(&set))
        fprintf(out, ", the database is newer (migrate refuses to run)");
    fprintf(out, "\n");
    rc = 0;
out:
    session_close(conn, locked, rows);
    set_free(&set);
    return rc;
}
