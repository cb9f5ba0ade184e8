#ifndef MARKETD_CLI_BACKFILL_H
#define MARKETD_CLI_BACKFILL_H
#include <libpq-fe.h>

/*
 * `marketd backfill order-docs [--batch N] [--months N]` (argv[0] is
 * "backfill"): stores the document of every order whose orders.doc is NULL
 * (migrations/0009_order_docs.sql), after an upgrade to schema 9. Reads
 * are correct without it (a NULL doc is computed when read), only slower.
 *
 * Small transactions: one UPDATE of at most --batch orders (default 2000,
 * 100..50000) each, so no row is locked for more than a batch and a
 * running marketd's order writes wait at most one batch for a row. The
 * monthly partitions are walked newest first (--months N: only the N
 * newest that have begun; default all), each in id order downwards. Only
 * NULL docs are written, each as marketd_order_json(o): an interrupted run
 * is resumed by running it again, and a finished one does nothing.
 * Progress goes to stderr, a line per partition and at most one a second.
 *
 * DATABASE_URL names the database. Returns the process exit code, one of
 * CLI_BACKFILL_*.
 */
enum {
    CLI_BACKFILL_OK = 0,
    CLI_BACKFILL_FAILED = 1, /* database unreachable, or a statement failed */
    CLI_BACKFILL_USAGE = 2,  /* bad arguments */
};

int cli_backfill_main(int argc, char **argv);

/*
 * The same on an open connection (`marketd seed` after its load): fills the
 * NULL docs of the `months` newest partitions (0: all) in batches of
 * `batch`, printing progress prefixed by `who` ("backfill", "seed").
 * Returns 0, or -1 after printing the error; the rows done so far stay
 * done.
 */
int cli_backfill_order_docs(PGconn *conn, int batch, int months, const char *who);
#endif
