#include "api/batch.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"

PGresult *batch_row_result(const PGresult *res, int row)
{
    PGresult *one = PQcopyResult(res, PG_COPYRES_ATTRS);
    if (one == NULL)
        return NULL;
    for (int c = 0; row >= 0 && c < PQnfields(res); c++) {
        int null = PQgetisnull(res, row, c);
        if (!PQsetvalue(one, 0, c, null ? NULL : PQgetvalue(res, row, c),
                        null ? -1 : PQgetlength(res, row, c))) {
            PQclear(one);
            return NULL;
        }
    }
    return one;
}

char *batch_ids_literal(const batch_item_t *list, int n, char *buf, size_t size)
{
    size_t len = 0;
    buf[len++] = '{';
    for (const batch_item_t *it = list; it != NULL && n > 0; it = it->next, n--) {
        size_t idlen = strlen(it->id);
        if (len + idlen + 3 > size)
            break;
        if (len > 1)
            buf[len++] = ',';
        memcpy(buf + len, it->id, idlen);
        len += idlen;
    }
    buf[len++] = '}';
    buf[len] = '\0';
    return buf;
}

static void send_batch(batcher_t *b);

static void on_pace(h2o_timeout_entry_t *entry)
{
    batcher_t *b = H2O_STRUCT_FROM_MEMBER(batcher_t, entry, entry);
    if (b->pending != NULL)
        send_batch(b);
}

void batcher_init(batcher_t *b, h2o_loop_t *loop, h2o_timeout_t *pace, const db_stmt_t *stmt,
                  batch_send_fn send)
{
    memset(b, 0, sizeof(*b));
    b->loop = loop;
    b->pace = pace;
    b->stmt = stmt;
    b->send = send;
    b->tail = &b->pending;
    b->entry.cb = on_pace;
}

/* Sends now, or when the pace allows. Statements already in flight do not
 * hold the next one back: a stuck statement must not keep the reads behind
 * it from the pool's bounded wait and its 503 (B5). */
static void kick(batcher_t *b)
{
    if (b->pending == NULL || h2o_timeout_is_linked(&b->entry))
        return;
    if (b->npending >= BATCH_MAX || h2o_now(b->loop) - b->last_sent_ms >= BATCH_INTERVAL_MS)
        send_batch(b);
    else
        h2o_timeout_link(b->loop, b->pace, &b->entry);
}

/* Each item's own row (matched by the id in column 0), or none. Reads
 * `next` before answering: the answer may free the item. */
static void answer(batch_item_t *list, PGresult *res, int err)
{
    for (batch_item_t *it = list, *next; it != NULL; it = next) {
        next = it->next;
        if (err != 0) {
            it->done(it, res, err);
            continue;
        }
        int row = -1;
        for (int i = 0; i < PQntuples(res) && row < 0; i++)
            if (strcmp(PQgetvalue(res, i, 0), it->id) == 0)
                row = i;
        PGresult *one = batch_row_result(res, row);
        if (one == NULL) {
            it->done(it, NULL, MKD_ENOMEM);
            continue;
        }
        it->done(it, one, 0);
        PQclear(one);
    }
}

/* arg: the first of the statement's reads, the head of their list. */
static void on_batch(void *arg, PGresult *res, int err)
{
    answer(arg, res, err);
}

static void send_batch(batcher_t *b)
{
    if (h2o_timeout_is_linked(&b->entry))
        h2o_timeout_unlink(&b->entry);
    /* The first BATCH_MAX pending items go; the rest wait for the next. */
    batch_item_t *first = b->pending, **cut = &b->pending;
    int n = 0;
    while (*cut != NULL && n < BATCH_MAX) {
        cut = &(*cut)->next;
        n++;
    }
    b->pending = *cut;
    *cut = NULL;
    if (b->pending == NULL)
        b->tail = &b->pending;
    b->npending -= n;
    char ids[BATCH_MAX * 21 + 3];
    batch_ids_literal(first, n, ids, sizeof(ids));
    b->last_sent_ms = h2o_now(b->loop);
    __atomic_store_n(&b->statements, b->statements + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&b->items, b->items + (uint64_t)n, __ATOMIC_RELAXED);
    int rc = b->send(first, b->stmt, ids, on_batch, first);
    if (rc != 0)
        answer(first, NULL, rc);
    kick(b); /* what is left waits for the pace */
}

void batcher_add(batcher_t *b, batch_item_t *it)
{
    it->next = NULL;
    *b->tail = it;
    b->tail = &it->next;
    b->npending++;
    kick(b);
}

void batcher_dispose(batcher_t *b)
{
    if (h2o_timeout_is_linked(&b->entry))
        h2o_timeout_unlink(&b->entry);
    batch_item_t *pending = b->pending;
    b->pending = NULL;
    b->tail = &b->pending;
    b->npending = 0;
    answer(pending, NULL, MKD_EUNAVAILABLE);
}
