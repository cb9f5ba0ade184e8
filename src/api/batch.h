#ifndef MARKETD_API_BATCH_H
#define MARKETD_API_BATCH_H
/*
 * Reads of one resource by id, gathered into one statement (`... WHERE id =
 * ANY($1::int8[])`) while Redis is out. Every product detail of a long-tail
 * catalogue is a key of its own, so neither single flight nor the outage
 * store (outage.h) can share its query; under issue 11's load that is
 * ~1,500 statements a second, each with its own round trip and executor
 * start. A batcher per worker and statement sends the ids that arrived
 * since its last statement together, at most one statement per
 * BATCH_INTERVAL_MS (sooner only with BATCH_MAX ids waiting) — so a request
 * waits at most that long before its query is sent, and the database sees
 * a few hundred statements a second instead of one per id. Statements in
 * flight do not hold the next back: each goes through admission and the
 * pool like any query, so a stuck database still answers 503 after the
 * pool's bounded wait (B5).
 *
 * The batch statement returns the columns of the single-id statement, the
 * id first: each waiting read gets a result of its own row (or of no row: a
 * 404), so its renderer cannot tell the difference. A failure fails every
 * read of the batch with the same error.
 */
#include <libpq-fe.h>
#include <stdint.h>

#include "db/pool.h"
#include "h2o.h"

#define BATCH_INTERVAL_MS 5
#define BATCH_MAX         100

typedef struct batch_item batch_item_t;
/* res: the item's own result (freed after the call), or with err < 0 the
 * batch's failure (res may be NULL). */
typedef void (*batch_done_fn)(batch_item_t *it, PGresult *res, int err);
struct batch_item {
    batch_item_t *next;
    char id[24]; /* decimal, as the single-id statement's $1 */
    batch_done_fn done;
    void *arg;
};

/* Sends the batch statement with its one parameter on behalf of `first`
 * (whose request it may use, e.g. for admission): 0 when accepted (cb runs
 * later), or an MKD_* code (cb never runs). */
typedef int (*batch_send_fn)(batch_item_t *first, const db_stmt_t *st, const char *ids, db_result_cb cb,
                             void *arg);

typedef struct batcher {
    const db_stmt_t *stmt;
    batch_send_fn send;
    batch_item_t *pending; /* in arrival order */
    batch_item_t **tail;
    int npending;
    uint64_t last_sent_ms;
    h2o_loop_t *loop;
    h2o_timeout_t *pace; /* BATCH_INTERVAL_MS, shared by a worker's batchers */
    h2o_timeout_entry_t entry;
    uint64_t statements, items; /* metrics (read relaxed) */
} batcher_t;

void batcher_init(batcher_t *b, h2o_loop_t *loop, h2o_timeout_t *pace, const db_stmt_t *stmt,
                  batch_send_fn send);
void batcher_add(batcher_t *b, batch_item_t *it);
/* Fails what is still pending (MKD_EUNAVAILABLE); the pool must already be
 * destroyed (every statement in flight has been answered). */
void batcher_dispose(batcher_t *b);

/* A copy of res with only `row` (row < 0: no row). */
PGresult *batch_row_result(const PGresult *res, int row);
/* The text of an int8[] literal of the ids of list..(n items): "{1,2,3}". */
char *batch_ids_literal(const batch_item_t *list, int n, char *buf, size_t size);

#endif
