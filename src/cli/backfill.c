/* `marketd backfill order-docs` (cli/backfill.h). */
#include "cli/backfill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/db.h"

#define BATCH_DEFAULT 2000
#define BATCH_MIN     100
#define BATCH_MAX     50000

/* The monthly partitions of orders, newest first, with their bounds as
 * the catalog states them (a DEFAULT partition has none and is listed
 * with NULL bounds). begun: the partition's month has started. */
static const char partitions_sql[] =
    "SELECT c.relname, b[1], b[2], coalesce(b[1]::timestamptz <= now(), true)"
    "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    "  LEFT JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),"
    "       'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') b ON true"
    " WHERE i.inhparent = 'orders'::regclass"
    " ORDER BY b[2]::timestamptz DESC NULLS LAST, c.relname";

/* One batch is two statements, each its own transaction. The first finds
 * the lowest id of the next `$4` orders of the partition [$1, $2) below
 * id $3 whose doc is NULL (down orders_pkey). The second stores the
 * documents of the NULL docs with ids in [that, $3): with the bounds as
 * values, its plan is a range scan of one partition's orders_pkey (a join
 * with the first would scan whole partitions). The document is
 * marketd_order_json's expression (0006) inlined, so the items are one
 * sub-plan probe per order instead of a function call per order, and the
 * bounds prune order_items to the same month. doc IS NULL is checked at
 * the row: a transition that committed meanwhile stored it already (its
 * trigger did) and is not overwritten. The UPDATE writes doc itself, so
 * orders_doc_sync does not fire. */
static const char batch_low_sql[] =
    "SELECT min(b.id), count(*) FROM (SELECT o.id FROM orders o"
    "  WHERE o.created_at >= $1::timestamptz AND o.created_at < $2::timestamptz"
    "    AND o.id < $3::int8 AND o.doc IS NULL ORDER BY o.id DESC LIMIT $4::int4) b";
static const char batch_fill_sql[] =
    "UPDATE orders o SET doc = marketd_order_doc(o.id, o.buyer_id, o.seller_id, o.status,"
    "   (SELECT json_agg(marketd_order_item_json(i.product_id, i.title, i.price, i.quantity)"
    "                    ORDER BY i.product_id)"
    "      FROM order_items i WHERE i.order_id = o.id AND i.created_at = o.created_at"
    "       AND i.created_at >= $1::timestamptz AND i.created_at < $2::timestamptz),"
    "   o.total, o.currency, o.created_at, o.updated_at)"
    " WHERE o.created_at >= $1::timestamptz AND o.created_at < $2::timestamptz"
    "   AND o.id >= $4::int8 AND o.id < $3::int8 AND o.doc IS NULL";

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: marketd backfill order-docs [--batch N] [--months N]\n"
            "  --batch N   orders per transaction (%d..%d, default %d)\n"
            "  --months N  only the N newest monthly partitions that have begun (default: all)\n",
            BATCH_MIN, BATCH_MAX, BATCH_DEFAULT);
    return CLI_BACKFILL_USAGE;
}

/* A whole number in [lo, hi], or -1. */
static long parse_count(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    return v;
}

typedef struct progress {
    const char *who;
    double t0, last;
    long long total; /* rows written, all partitions */
} progress_t;

static void progress_line(progress_t *p, const char *part, long long done, const char *state)
{
    double now = mono_now(), dt = now - p->t0;
    fprintf(stderr, "%s: order-docs %s: %lld rows (%s); %lld rows in %.1f s, %.0f rows/s\n", p->who, part,
            done, state, p->total, dt, dt > 0 ? (double)p->total / dt : 0.0);
    p->last = now;
}

/* Fills one partition [lo, hi). 0 or -1. */
static int fill_partition(PGconn *conn, progress_t *p, const char *part, const char *lo, const char *hi,
                          int batch)
{
    char below[24] = "9223372036854775807", lim[16];
    long long done = 0;
    snprintf(lim, sizeof(lim), "%d", batch);
    for (;;) {
        const char *params[4] = {lo, hi, below, lim};
        PGresult *res = PQexecParams(conn, batch_low_sql, 4, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            fprintf(stderr, "%s: order-docs %s: %s", p->who, part, PQerrorMessage(conn));
            PQclear(res);
            return -1;
        }
        if (atoll(PQgetvalue(res, 0, 1)) == 0) {
            PQclear(res);
            break;
        }
        char low[24];
        snprintf(low, sizeof(low), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        params[3] = low;
        res = PQexecParams(conn, batch_fill_sql, 4, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "%s: order-docs %s: %s", p->who, part, PQerrorMessage(conn));
            PQclear(res);
            return -1;
        }
        long long written = atoll(PQcmdTuples(res));
        PQclear(res);
        snprintf(below, sizeof(below), "%s", low);
        done += written;
        p->total += written;
        if (mono_now() - p->last >= 1.0)
            progress_line(p, part, done, "running");
    }
    progress_line(p, part, done, "done");
    return 0;
}

int cli_backfill_order_docs(PGconn *conn, int batch, int months, const char *who)
{
    progress_t p = {who, mono_now(), mono_now(), 0};
    PGresult *parts = PQexec(conn, partitions_sql);
    if (PQresultStatus(parts) != PGRES_TUPLES_OK) {
        fprintf(stderr, "%s: order-docs: listing the partitions of orders: %s", who, PQerrorMessage(conn));
        PQclear(parts);
        return -1;
    }
    int rc = 0, taken = 0;
    for (int i = 0; i < PQntuples(parts) && rc == 0; i++) {
        const char *name = PQgetvalue(parts, i, 0);
        if (PQgetisnull(parts, i, 1)) {
            /* marketd makes monthly partitions only; a DEFAULT one made by
             * hand keeps NULL docs, which read correctly (computed). */
            fprintf(stderr, "%s: order-docs %s: not a monthly partition, skipped\n", who, name);
            continue;
        }
        if (strcmp(PQgetvalue(parts, i, 3), "t") != 0)
            continue; /* a month to come: empty */
        if (months > 0 && taken++ >= months)
            break;
        rc = fill_partition(conn, &p, name, PQgetvalue(parts, i, 1), PQgetvalue(parts, i, 2), batch);
    }
    PQclear(parts);
    if (rc == 0) {
        double dt = mono_now() - p.t0;
        fprintf(stderr, "%s: order-docs: done, %lld rows in %.1f s (%.0f rows/s)\n", who, p.total, dt,
                dt > 0 ? (double)p.total / dt : 0.0);
    }
    return rc;
}

int cli_backfill_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "order-docs") != 0)
        return usage();
    long batch = BATCH_DEFAULT, months = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            if ((batch = parse_count(argv[++i], BATCH_MIN, BATCH_MAX)) < 0)
                return usage();
        } else if (strcmp(argv[i], "--months") == 0 && i + 1 < argc) {
            if ((months = parse_count(argv[++i], 1, 100000)) < 0)
                return usage();
        } else {
            fprintf(stderr, "marketd backfill: unexpected argument \"%s\"\n", argv[i]);
            return usage();
        }
    }
    PGconn *conn = cli_db_connect("backfill");
    if (conn == NULL)
        return CLI_BACKFILL_FAILED;
    int rc = cli_backfill_order_docs(conn, (int)batch, (int)months, "backfill") == 0 ? CLI_BACKFILL_OK
                                                                                     : CLI_BACKFILL_FAILED;
    PQfinish(conn);
    return rc;
}
