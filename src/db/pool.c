#include "db/pool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/resolve.h"

/*
 * Blame (B5 without metastable collapse): the tick drops a connection whose
 * oldest query has gone unanswered for the statement timeout plus a margin,
 * and abandons a connection attempt after CONNECT_LIMIT_US. Both count
 * attentive time (core/metrics.h), measured by this pool's own tick on the
 * loop: while the loop is late — 10,000 connections to serve, a stall —
 * the clock stands still, because a reply could not have been read then.
 * And before dropping a connection the tick reads its socket: under load
 * epoll hands the loop 256 ready sockets per turn, so an answer can sit
 * unread while the tick runs. A database that is really gone is still
 * noticed within the limit whenever the loop keeps up; TCP errors and EOF
 * close a connection at once, whatever the clock says.
 */
#define TICK_MS          100
#define CONNECT_LIMIT_US 5000000

/* ---- statements -------------------------------------------------------- */

static db_stmt_t stmt_table[DB_MAX_STATEMENTS];
static int stmt_count;
static pthread_mutex_t stmt_lock = PTHREAD_MUTEX_INITIALIZER;

const db_stmt_t *db_stmt_register(const char *sql, int nparams)
{
    db_stmt_t *s = NULL;
    pthread_mutex_lock(&stmt_lock);
    if (stmt_count < DB_MAX_STATEMENTS) {
        s = &stmt_table[stmt_count];
        s->id = stmt_count;
        s->nparams = nparams;
        s->sql = sql;
        snprintf(s->name, sizeof(s->name), "s%d", stmt_count);
        __atomic_store_n(&stmt_count, stmt_count + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&stmt_lock);
    return s;
}

/* ---- types ------------------------------------------------------------- */

enum { CONN_CONNECTING, CONN_READY, CONN_CLOSED };
enum { P_PREPARE, P_QUERY, P_SYNC };

typedef struct db_query {
    h2o_linklist_t link; /* in pool->waiters while waiting */
    h2o_timeout_entry_t timeout;
    db_pool_t *pool;
    const db_stmt_t *stmt;
    db_result_cb cb;
    void *arg;
    uint64_t queued_at_us;
    uint64_t queued_att_us;  /* the same instant in attentive time (the wait's bound) */
    uint64_t sent_att;       /* attentive time (core/metrics.h) it was sent at */
    PGresult *prepare_error; /* the error of a failed PREPARE sent for it */
    int nparams;
    char *values[]; /* nparams pointers, then the packed strings */
} db_query_t;

typedef struct pending {
    int kind;
    db_query_t *q;
    PGresult *res;
} pending_t;

typedef struct db_conn {
    db_pool_t *pool;
    int slot; /* index in pool->conns */
    int state;
    int overflow;
    PGconn *pg;
    h2o_socket_t *sock;
    int sock_fd;
    int write_armed;
    int reading;
    uint64_t started_att; /* attentive time the connection attempt began at */
    int inflight;         /* queries sent and not yet answered */
    uint64_t last_used_us;
    /* FIFO ring of what the server owes us, in send order */
    pending_t *ring;
    int ring_cap, ring_head, ring_len;
    unsigned char prepared[DB_MAX_STATEMENTS / 8];
} db_conn_t;

struct db_pool {
    h2o_loop_t *loop;
    db_pool_options_t opt;
    char *conninfo_copy;
    char *label_copy;
    char *resolve_name; /* the conninfo's host name to resolve off the loop, or NULL */
    char statement_options[64];
    int max_conns;
    db_conn_t **conns; /* max_conns slots; NULL when free */
    h2o_linklist_t waiters;
    h2o_timeout_t wait_timeout;
    h2o_timeout_t recheck_timeout; /* TICK_MS: a wait the loop's lateness made look longer */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick;
    h2o_timeout_t zero_timeout;
    h2o_timeout_entry_t dispatch_entry; /* a deferred pool_dispatch */
    int destroying;
    int processing; /* >0 while results are being handed out */
    int in_query;   /* pool_dispatch called from db_pool_query */
    /* per slot: when to retry a broken base connection, and its backoff */
    uint64_t *retry_at_us;
    uint64_t *backoff_ms;
    int last_connect_failed; /* no connection could be made on the last try */
    uint64_t last_fail_us;   /* when it failed */
    /* stats, read by other threads with relaxed atomics */
    int st_connecting, st_idle, st_busy, st_waiting, st_up;
    uint64_t st_served;
    db_wait_hist_t wait_hist;
    metrics_loop_clock_t clock; /* the loop's lateness, from the tick */
};

const double db_wait_bucket_bounds[DB_WAIT_NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                        0.025,  0.05,  0.1,    0.5,   1.0};

static void conn_start(db_pool_t *pool, int slot, int overflow);
static void conn_close(db_conn_t *c, int err, const char *why);
static void conn_on_io(h2o_socket_t *sock, const char *err);
static void conn_on_writable(h2o_socket_t *sock, const char *err);
static void pool_dispatch(db_pool_t *pool);
static void fail_waiters_if_down(db_pool_t *pool);

/* A base slot whose connection broke or could not start is retried after a
 * backoff that doubles from 0 (at once) through 100 ms up to 1 s. */
static void slot_backoff(db_pool_t *pool, int slot);

/* Runs pool_dispatch from the loop on its next turn: used wherever a direct
 * call could re-enter a dispatch or a result loop already on the stack. */
static void schedule_dispatch(db_pool_t *pool)
{
    if (!pool->destroying && !h2o_timeout_is_linked(&pool->dispatch_entry))
        h2o_timeout_link(pool->loop, &pool->zero_timeout, &pool->dispatch_entry);
}

static void on_deferred_dispatch(h2o_timeout_entry_t *entry)
{
    pool_dispatch(H2O_STRUCT_FROM_MEMBER(db_pool_t, dispatch_entry, entry));
}

static uint64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

/* Now in attentive time: real time without the loop's lateness. */
static uint64_t att_now(const db_pool_t *pool)
{
    return metrics_loop_clock_now(&pool->clock, now_us());
}

#define STAT_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define STAT_GET(field)    __atomic_load_n(&(field), __ATOMIC_RELAXED)

static void pool_update_stats(db_pool_t *pool)
{
    int connecting = 0, idle = 0, busy = 0, up = 0;
    for (int i = 0; i < pool->max_conns; i++) {
        db_conn_t *c = pool->conns[i];
        if (c == NULL)
            continue;
        if (c->state == CONN_CONNECTING)
            connecting++;
        else if (c->inflight > 0)
            busy++, up = 1;
        else
            idle++, up = 1;
    }
    int waiting = 0;
    for (h2o_linklist_t *l = pool->waiters.next; l != &pool->waiters; l = l->next)
        waiting++;
    STAT_SET(pool->st_connecting, connecting);
    STAT_SET(pool->st_idle, idle);
    STAT_SET(pool->st_busy, busy);
    STAT_SET(pool->st_waiting, waiting);
    STAT_SET(pool->st_up, up);
}

static void record_wait(db_pool_t *pool, uint64_t waited_us)
{
    int b = 0;
    while (b < DB_WAIT_NBUCKETS && (double)waited_us / 1e6 > db_wait_bucket_bounds[b])
        b++;
    if (b < DB_WAIT_NBUCKETS)
        __atomic_add_fetch(&pool->wait_hist.buckets[b], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&pool->wait_hist.count, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&pool->wait_hist.sum_us, waited_us, __ATOMIC_RELAXED);
}

/* ---- queries ----------------------------------------------------------- */

static db_query_t *query_new(db_pool_t *pool, const db_stmt_t *stmt, const char *const *values,
                             db_result_cb cb, void *arg)
{
    size_t strings = 0;
    for (int i = 0; i < stmt->nparams; i++)
        if (values[i] != NULL)
            strings += strlen(values[i]) + 1;
    db_query_t *q = malloc(sizeof(*q) + sizeof(char *) * (size_t)stmt->nparams + strings);
    if (q == NULL)
        abort();
    memset(q, 0, sizeof(*q));
    q->pool = pool;
    q->stmt = stmt;
    q->cb = cb;
    q->arg = arg;
    q->nparams = stmt->nparams;
    char *p = (char *)(q->values + stmt->nparams);
    for (int i = 0; i < stmt->nparams; i++) {
        if (values[i] == NULL) {
            q->values[i] = NULL;
            continue;
        }
        size_t n = strlen(values[i]) + 1;
        memcpy(p, values[i], n);
        q->values[i] = p;
        p += n;
    }
    return q;
}

/* Runs the callback once and frees the query. */
static void query_finish(db_query_t *q, PGresult *res, int err)
{
    if (err == 0)
        __atomic_add_fetch(&q->pool->st_served, 1, __ATOMIC_RELAXED);
    q->cb(q->arg, res, err);
    if (q->prepare_error != NULL)
        PQclear(q->prepare_error);
    free(q);
}

/* The wait is bounded in attentive time, like every other deadline here: a
 * loop that stalled (a starved machine, a burst of 10,000 sockets) did not
 * give the connections a chance to take the query, so its lateness does
 * not count against the database; the query is looked at again a tick
 * later instead. */
static void on_wait_timeout(h2o_timeout_entry_t *entry)
{
    db_query_t *q = H2O_STRUCT_FROM_MEMBER(db_query_t, timeout, entry);
    db_pool_t *pool = q->pool;
    uint64_t att = att_now(pool);
    if (att < q->queued_att_us + (uint64_t)pool->opt.timeout_ms * 1000) {
        h2o_timeout_link(pool->loop, &pool->recheck_timeout, &q->timeout);
        return;
    }
    h2o_linklist_unlink(&q->link);
    record_wait(pool, now_us() - q->queued_at_us);
    pool_update_stats(pool);
    query_finish(q, NULL, MKD_EBUSY);
}

int db_pool_query(db_pool_t *pool, const db_stmt_t *stmt, const char *const *values, db_result_cb cb,
                  void *arg)
{
    if (pool->destroying)
        return MKD_EUNAVAILABLE;
    /* Database down: fail at once — but only while the last failure is
     * fresh; after that the query waits (bounded) while a connection is
     * tried right away, so the first requests after a recovery succeed. */
    if (pool->last_connect_failed && !STAT_GET(pool->st_up) && !STAT_GET(pool->st_connecting) &&
        now_us() - pool->last_fail_us < 500000)
        return MKD_EUNAVAILABLE;
    if (STAT_GET(pool->st_waiting) >= pool->opt.max_waiters)
        return MKD_EBUSY;
    db_query_t *q = query_new(pool, stmt, values, cb, arg);
    q->queued_at_us = now_us();
    q->queued_att_us = att_now(pool);
    h2o_linklist_insert(&pool->waiters, &q->link);
    q->timeout.cb = on_wait_timeout;
    h2o_timeout_link(pool->loop, &pool->wait_timeout, &q->timeout);
    /* Sending now cannot run q's callback synchronously: results only ever
     * arrive through a later I/O event. While a connection is handing out
     * results (this call comes from inside a callback), the dispatch is left
     * to conn_on_io, which runs it once the connection is consistent. */
    if (!pool->processing) {
        pool->in_query = 1;
        pool_dispatch(pool);
        pool->in_query = 0;
    } else
        schedule_dispatch(pool);
    return 0;
}

/* ---- connection I/O ---------------------------------------------------- */

static void ring_push(db_conn_t *c, int kind, db_query_t *q)
{
    if (c->ring_len == c->ring_cap) {
        int cap = c->ring_cap * 2;
        pending_t *r = malloc(sizeof(*r) * (size_t)cap);
        if (r == NULL)
            abort();
        for (int i = 0; i < c->ring_len; i++)
            r[i] = c->ring[(c->ring_head + i) % c->ring_cap];
        free(c->ring);
        c->ring = r;
        c->ring_cap = cap;
        c->ring_head = 0;
    }
    pending_t *p = &c->ring[(c->ring_head + c->ring_len) % c->ring_cap];
    p->kind = kind;
    p->q = q;
    p->res = NULL;
    c->ring_len++;
}

static void ring_pop(db_conn_t *c)
{
    c->ring_head = (c->ring_head + 1) % c->ring_cap;
    c->ring_len--;
}

static void conn_flush(db_conn_t *c)
{
    int r = PQflush(c->pg);
    if (r < 0) {
        conn_close(c, MKD_EUNAVAILABLE, PQerrorMessage(c->pg));
        return;
    }
    if (r == 1 && !c->write_armed) {
        c->write_armed = 1;
        h2o_socket_notify_write(c->sock, conn_on_writable);
    }
}

static int stmt_is_prepared(const db_conn_t *c, int id)
{
    return (c->prepared[id >> 3] >> (id & 7)) & 1;
}

static void stmt_mark_prepared(db_conn_t *c, int id, int on)
{
    if (on)
        c->prepared[id >> 3] |= (unsigned char)(1u << (id & 7));
    else
        c->prepared[id >> 3] &= (unsigned char)~(1u << (id & 7));
}

/* Sends q on c. Returns 0, or -1 if the connection broke (c is closed and
 * q was not consumed). */
static int conn_send(db_conn_t *c, db_query_t *q)
{
    const db_stmt_t *s = q->stmt;
    const char *const *values = (const char *const *)q->values;
    int ok;
    if (c->pool->opt.prepare) {
        if (!stmt_is_prepared(c, s->id)) {
            if (!PQsendPrepare(c->pg, s->name, s->sql, s->nparams, NULL))
                goto broken;
            stmt_mark_prepared(c, s->id, 1);
            ring_push(c, P_PREPARE, q);
        }
        ok = PQsendQueryPrepared(c->pg, s->name, s->nparams, values, NULL, NULL, 0);
    } else {
        ok = PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, values, NULL, NULL, 0);
    }
    if (!ok)
        goto broken;
    ring_push(c, P_QUERY, q);
    if (!PQpipelineSync(c->pg))
        goto broken;
    ring_push(c, P_SYNC, NULL);
    /* PQflush follows at once (pool_dispatch): sent is written. */
    q->sent_att = att_now(c->pool);
    c->inflight++;
    c->last_used_us = now_us();
    return 0;
broken:
    /* Whatever of q was pushed is dropped from the ring before closing so
     * conn_close does not finish q (the caller still owns it). */
    while (c->ring_len > 0 && c->ring[(c->ring_head + c->ring_len - 1) % c->ring_cap].q == q)
        c->ring_len--;
    conn_close(c, MKD_EUNAVAILABLE, PQerrorMessage(c->pg));
    return -1;
}

void db_log_error(int level, const db_stmt_t *stmt, const PGresult *res, const char *what, ...)
{
    if (!log_enabled(level))
        return;
    char msg[256];
    va_list ap;
    va_start(ap, what);
    vsnprintf(msg, sizeof(msg), what, ap);
    va_end(ap);
#define DIAG(code) (res != NULL ? PQresultErrorField(res, code) : NULL)
    const char *state = DIAG(PG_DIAG_SQLSTATE);
    const char *const fields[] = {"db.system",
                                  "postgresql",
                                  "db.statement.name",
                                  stmt != NULL ? stmt->name : NULL,
                                  "db.response.status_code",
                                  state,
                                  "db.constraint.name",
                                  DIAG(PG_DIAG_CONSTRAINT_NAME),
                                  "db.collection.name",
                                  DIAG(PG_DIAG_TABLE_NAME),
                                  "db.column.name",
                                  DIAG(PG_DIAG_COLUMN_NAME),
                                  NULL};
#undef DIAG
    log_fields(level, fields, "%s: SQLSTATE %s", msg, state != NULL ? state : "unknown");
}

static int result_err(PGresult *res)
{
    switch (PQresultStatus(res)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        return 0;
    default: {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        /* 57014 query_canceled (statement_timeout), 57P0x admin shutdown,
         * 08xxx connection exceptions: the database, not the request, failed. */
        if (state != NULL && (strncmp(state, "57", 2) == 0 || strncmp(state, "08", 2) == 0))
            return MKD_EUNAVAILABLE;
        /* 26000: the prepared statement is missing — its PREPARE, earlier
         * in the same pipeline, failed (say, cancelled while it waited on a
         * lock). The query was never run; a retry prepares it again. */
        if (state != NULL && strcmp(state, "26000") == 0) {
            db_log_error(LOG_WARN, NULL, res, "db: a pipelined query found its statement unprepared");
            return MKD_EUNAVAILABLE;
        }
        return MKD_EDB;
    }
    }
}

/* Drains every complete result libpq holds. */
static void conn_process(db_conn_t *c)
{
    while (c->ring_len > 0 && c->state == CONN_READY) {
        if (PQisBusy(c->pg))
            return;
        pending_t *p = &c->ring[c->ring_head];
        PGresult *r = PQgetResult(c->pg);
        if (p->kind == P_SYNC) {
            if (r == NULL)
                continue; /* tolerated: nothing pending before the sync marker */
            ExecStatusType st = PQresultStatus(r);
            PQclear(r);
            if (st != PGRES_PIPELINE_SYNC) {
                conn_close(c, MKD_EUNAVAILABLE, "pipeline out of step");
                return;
            }
            ring_pop(c);
            continue;
        }
        if (r != NULL) {
            /* Keep the first result of this statement; a statement yields
             * one, so any further one is dropped. */
            if (p->res == NULL)
                p->res = r;
            else
                PQclear(r);
            continue;
        }
        /* NULL: this statement's results are complete. */
        db_query_t *q = p->q;
        PGresult *res = p->res;
        ring_pop(c);
        if (p->kind == P_PREPARE) {
            if (res != NULL && PQresultStatus(res) != PGRES_COMMAND_OK) {
                stmt_mark_prepared(c, q->stmt->id, 0);
                q->prepare_error = res;
            } else if (res != NULL) {
                PQclear(res);
            }
            continue;
        }
        c->inflight--;
        c->last_used_us = now_us();
        int err;
        if (q->prepare_error != NULL) {
            /* Mapped like the statement's own error: a PREPARE cancelled by
             * the statement timeout (it waited on a lock) is the database
             * failing, a 503, not a 500. */
            if (res != NULL)
                PQclear(res);
            res = q->prepare_error;
            q->prepare_error = NULL;
            err = result_err(res);
            db_log_error(err == MKD_EDB ? LOG_ERROR : LOG_WARN, q->stmt, res, "db %s: prepare failed",
                         c->pool->opt.label);
        } else if (res == NULL) {
            err = MKD_EDB;
        } else {
            err = result_err(res);
            if (err == MKD_EDB)
                db_log_error(LOG_DEBUG, q->stmt, res, "db %s: statement failed", c->pool->opt.label);
        }
        query_finish(q, res, err);
        if (res != NULL)
            PQclear(res);
    }
}

/* Reads what the server has sent on a ready connection and hands out every
 * complete result. Returns 0, or -1 when c was closed (and freed) meanwhile.
 * Queries the callbacks submit are dispatched later, never from in here. */
static int conn_read(db_conn_t *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_close(c, MKD_EUNAVAILABLE, PQerrorMessage(c->pg));
        return -1;
    }
    db_pool_t *pool = c->pool;
    int slot = c->slot;
    pool->processing++;
    conn_process(c);
    pool->processing--;
    /* c may have been closed while processing; slots are refilled only by
     * dispatch and the tick, neither of which ran meanwhile. */
    if (pool->conns[slot] != c)
        return -1;
    if (c->write_armed == 0 && c->ring_len > 0)
        conn_flush(c);
    return pool->conns[slot] == c ? 0 : -1;
}

static void conn_on_io(h2o_socket_t *sock, const char *err)
{
    db_conn_t *c = sock->data;
    if (err != NULL) {
        conn_close(c, MKD_EUNAVAILABLE, err);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_start(c->pool, c->slot, c->overflow); /* continues PQconnectPoll */
        return;
    }
    db_pool_t *pool = c->pool;
    conn_read(c);
    pool_dispatch(pool);
    pool_update_stats(pool);
}

static void conn_on_writable(h2o_socket_t *sock, const char *err)
{
    db_conn_t *c = sock->data;
    c->write_armed = 0;
    if (err != NULL) {
        conn_close(c, MKD_EUNAVAILABLE, err);
        return;
    }
    if (c->state == CONN_CONNECTING) {
        conn_start(c->pool, c->slot, c->overflow);
        return;
    }
    conn_flush(c);
}

/* Stops watching the fd without closing it: libpq owns the socket. */
static void conn_detach_socket(db_conn_t *c)
{
    if (c->sock == NULL)
        return;
    h2o_socket_export_t info;
    if (c->reading)
        h2o_socket_read_stop(c->sock);
    /* h2o 2.2 has no call to withdraw h2o_socket_notify_write, and
     * h2o_socket_export asserts that none is pending; clearing the callback
     * is what the library itself does when the notification fires. */
    if (c->write_armed)
        c->sock->_cb.write = NULL;
    h2o_socket_export(c->sock, &info);
    if (info.input != NULL)
        h2o_buffer_dispose(&info.input);
    c->sock = NULL;
    c->reading = 0;
    c->write_armed = 0;
}

static void conn_attach_socket(db_conn_t *c)
{
    int fd = PQsocket(c->pg);
    if (c->sock != NULL && fd == c->sock_fd)
        return;
    conn_detach_socket(c);
    c->sock = h2o_evloop_socket_create(c->pool->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    c->sock_fd = fd;
}

static void conn_close(db_conn_t *c, int err, const char *why)
{
    db_pool_t *pool = c->pool;
    if (c->state == CONN_READY && !pool->destroying)
        log_warn("db %s: connection %d lost: %s", pool->opt.label, c->slot, why ? why : "?");
    c->state = CONN_CLOSED;
    pool->conns[c->slot] = NULL;
    conn_detach_socket(c);
    /* Fail what the server still owed us, in order. Queries the callbacks
     * submit are dispatched on the loop's next turn, not from in here. */
    pool->processing++;
    while (c->ring_len > 0) {
        pending_t p = c->ring[c->ring_head];
        ring_pop(c);
        if (p.res != NULL)
            PQclear(p.res);
        if (p.kind == P_QUERY)
            query_finish(p.q, NULL, err);
    }
    pool->processing--;
    schedule_dispatch(pool);
    PQfinish(c->pg);
    free(c->ring);
    if (!c->overflow && !pool->destroying)
        slot_backoff(pool, c->slot);
    free(c);
    if (!pool->destroying)
        pool_update_stats(pool);
}

static void slot_backoff(db_pool_t *pool, int slot)
{
    uint64_t b = pool->backoff_ms[slot];
    pool->backoff_ms[slot] = b == 0 ? 100 : (b * 2 > 1000 ? 1000 : b * 2);
    pool->retry_at_us[slot] = now_us() + b * 1000;
}

/* A connection attempt in the empty base `slot` could not even start. */
static void connect_failed(db_pool_t *pool, int slot, const char *why)
{
    if (!pool->last_connect_failed)
        log_warn("db %s: connect failed (retrying with backoff, further failures not logged): %s",
                 pool->opt.label, why);
    pool->last_connect_failed = 1, pool->last_fail_us = now_us();
    if (slot < pool->opt.base)
        slot_backoff(pool, slot);
    fail_waiters_if_down(pool);
}

/* Starts (c == NULL) or continues a connection attempt in `slot`. */
static void conn_start(db_pool_t *pool, int slot, int overflow)
{
    db_conn_t *c = pool->conns[slot];
    if (c == NULL) {
        const char *keys[6] = {"dbname", "application_name", "connect_timeout", NULL, NULL, NULL};
        const char *vals[6] = {pool->conninfo_copy, "marketd", "5", NULL, NULL, NULL};
        int k = 3;
        if (pool->opt.prepare) {
            /* PgBouncer rejects unknown startup options; direct connections
             * get a server-side statement timeout as a second safety net. */
            keys[k] = "options";
            vals[k++] = pool->statement_options;
        }
        /* libpq resolves a host name inside PQconnectStart, blocking the
         * loop (src/core/resolve.h): it is given the address as hostaddr
         * (host stays for TLS and .pgpass). Until the first lookup is done
         * the slot stays empty and the tick asks again. */
        char addr[RESOLVE_ADDR_MAX], why[160];
        if (pool->resolve_name != NULL) {
            int rc = resolve_get(pool->resolve_name, addr, why, sizeof(why));
            if (rc == 0)
                return;
            if (rc < 0) {
                connect_failed(pool, slot, why);
                return;
            }
            keys[k] = "hostaddr";
            vals[k++] = addr;
        }
        c = calloc(1, sizeof(*c));
        if (c == NULL)
            abort();
        c->pool = pool;
        c->slot = slot;
        c->overflow = overflow;
        c->state = CONN_CONNECTING;
        c->started_att = att_now(pool);
        c->ring_cap = 16;
        c->ring = malloc(sizeof(pending_t) * (size_t)c->ring_cap);
        if (c->ring == NULL)
            abort();
        c->pg = PQconnectStartParams(keys, vals, 1);
        pool->conns[slot] = c;
        if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
            pool->last_connect_failed = 1, pool->last_fail_us = now_us();
            conn_close(c, MKD_EUNAVAILABLE, c->pg ? PQerrorMessage(c->pg) : "out of memory");
            fail_waiters_if_down(pool);
            return;
        }
    }
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        conn_attach_socket(c);
        if (!c->reading) {
            c->reading = 1;
            h2o_socket_read_start(c->sock, conn_on_io);
        }
        pool_update_stats(pool);
        return;
    case PGRES_POLLING_WRITING:
        conn_attach_socket(c);
        if (!c->write_armed) {
            c->write_armed = 1;
            h2o_socket_notify_write(c->sock, conn_on_writable);
        }
        pool_update_stats(pool);
        return;
    case PGRES_POLLING_OK:
        break;
    default:
        if (!pool->last_connect_failed)
            log_warn("db %s: connect failed (retrying with backoff, further failures not logged): %s",
                     pool->opt.label, PQerrorMessage(c->pg));
        pool->last_connect_failed = 1, pool->last_fail_us = now_us();
        conn_close(c, MKD_EUNAVAILABLE, PQerrorMessage(c->pg));
        fail_waiters_if_down(pool);
        return;
    }
    conn_attach_socket(c);
    if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
        conn_close(c, MKD_EUNAVAILABLE, PQerrorMessage(c->pg));
        return;
    }
    if (!c->reading) {
        c->reading = 1;
        h2o_socket_read_start(c->sock, conn_on_io);
    }
    c->state = CONN_READY;
    c->last_used_us = now_us();
    if (pool->last_connect_failed) {
        log_info("db %s: connected again", pool->opt.label);
        /* The database is back: the other broken slots need not sit out
         * their backoff. */
        for (int i = 0; i < pool->opt.base; i++)
            pool->retry_at_us[i] = 0, pool->backoff_ms[i] = 0;
    }
    pool->last_connect_failed = 0;
    pool->backoff_ms[slot] = 0;
    log_debug("db %s: connection %d ready%s", pool->opt.label, slot, overflow ? " (overflow)" : "");
    pool_update_stats(pool);
    pool_dispatch(pool);
}

/* ---- dispatch and housekeeping ----------------------------------------- */

/* A connection attempt failed: if none works and none is still being
 * tried, the waiting queries would only wait out their timeout for a
 * database that is not there — answer them now (503). */
static void fail_waiters_if_down(db_pool_t *pool)
{
    for (int i = 0; i < pool->max_conns; i++)
        if (pool->conns[i] != NULL)
            return;
    pool->processing++; /* queries the callbacks submit wait for the next turn */
    while (!h2o_linklist_is_empty(&pool->waiters)) {
        db_query_t *q = H2O_STRUCT_FROM_MEMBER(db_query_t, link, pool->waiters.next);
        h2o_linklist_unlink(&q->link);
        h2o_timeout_unlink(&q->timeout);
        record_wait(pool, now_us() - q->queued_at_us);
        query_finish(q, NULL, MKD_EUNAVAILABLE);
    }
    pool->processing--;
    pool_update_stats(pool);
}

static void pool_dispatch(db_pool_t *pool)
{
    while (!h2o_linklist_is_empty(&pool->waiters)) {
        /* Least-loaded ready connection: spreads queries over backends
         * (each PostgreSQL backend is one process on one core) and deepens
         * pipelines only when every connection already has work. */
        db_conn_t *best = NULL;
        int connecting = 0;
        for (int i = 0; i < pool->max_conns; i++) {
            db_conn_t *c = pool->conns[i];
            if (c == NULL)
                continue;
            if (c->state == CONN_CONNECTING) {
                connecting++;
                continue;
            }
            if (c->inflight < pool->opt.pipeline_depth && (best == NULL || c->inflight < best->inflight))
                best = c;
        }
        if (best == NULL && connecting == 0 && !STAT_GET(pool->st_up) &&
            (!pool->last_connect_failed || now_us() - pool->last_fail_us >= 100000)) {
            /* Nothing works and nothing is being tried: try a base slot now
             * rather than at the end of its backoff (at most every 100 ms).
             * Not from inside db_pool_query: an attempt failing at once
             * fails the waiters, the new query's callback included. */
            if (pool->in_query) {
                schedule_dispatch(pool);
                break;
            }
            for (int i = 0; i < pool->opt.base; i++) {
                if (pool->conns[i] == NULL) {
                    conn_start(pool, i, 0);
                    break;
                }
            }
            break;
        }
        if (best == NULL) {
            /* Saturated: open an overflow connection if allowed and none is
             * already on its way. Only when some connection works: while the
             * database is unreachable, overflow attempts would just add a
             * connect storm to the base connections' backoff. */
            if (connecting == 0 && STAT_GET(pool->st_up) && !pool->last_connect_failed) {
                for (int i = pool->opt.base; i < pool->max_conns; i++) {
                    if (pool->conns[i] == NULL) {
                        conn_start(pool, i, 1);
                        break;
                    }
                }
            }
            break;
        }
        db_query_t *q = H2O_STRUCT_FROM_MEMBER(db_query_t, link, pool->waiters.next);
        h2o_linklist_unlink(&q->link);
        h2o_timeout_unlink(&q->timeout);
        record_wait(pool, now_us() - q->queued_at_us);
        if (conn_send(best, q) != 0) {
            /* The connection broke under us; put q back at the front. */
            h2o_linklist_insert(pool->waiters.next, &q->link);
            h2o_timeout_link(pool->loop, &pool->wait_timeout, &q->timeout);
            continue;
        }
        conn_flush(best);
    }
    pool_update_stats(pool);
}

/* The oldest query c's server still owes an answer to, or NULL. Results
 * come back in order: no answer to it means no answer at all since. */
static db_query_t *oldest_query(const db_conn_t *c)
{
    for (int k = 0; k < c->ring_len; k++) {
        const pending_t *p = &c->ring[(c->ring_head + k) % c->ring_cap];
        if (p->kind == P_QUERY)
            return p->q;
    }
    return NULL;
}

static int conn_silent(const db_conn_t *c, uint64_t att, uint64_t limit_us)
{
    const db_query_t *q = oldest_query(c);
    return q != NULL && metrics_loop_silent(att, 0, q->sent_att, limit_us);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    db_pool_t *pool = H2O_STRUCT_FROM_MEMBER(db_pool_t, tick, entry);
    uint64_t now = now_us();
    /* First, how late this tick is: the loop's lateness so far. The tick is
     * linked again below, from the loop's clock as it is now. */
    metrics_loop_clock_tick(&pool->clock, now, h2o_now(pool->loop) * 1000 + (uint64_t)TICK_MS * 1000);
    uint64_t att = metrics_loop_clock_now(&pool->clock, now);
    uint64_t stall_us = (uint64_t)(pool->opt.statement_timeout_ms + 5000) * 1000;
    for (int i = 0; i < pool->max_conns; i++) {
        db_conn_t *c = pool->conns[i];
        if (c == NULL) {
            if (i < pool->opt.base && now >= pool->retry_at_us[i])
                conn_start(pool, i, 0);
            continue;
        }
        if (c->state == CONN_CONNECTING) {
            /* libpq leaves connect_timeout to the caller in async mode. */
            if (metrics_loop_silent(att, 0, c->started_att, CONNECT_LIMIT_US)) {
                if (!pool->last_connect_failed)
                    log_warn("db %s: connect timed out", pool->opt.label);
                pool->last_connect_failed = 1, pool->last_fail_us = now_us();
                conn_close(c, MKD_EUNAVAILABLE, "connect timeout");
                fail_waiters_if_down(pool);
            }
            continue;
        }
        /* A query answered by nobody for longer than the statement timeout
         * plus a margin means a dead peer that TCP has not noticed yet —
         * unless the answer is in the socket and the loop has not got to it:
         * read first, then judge what is still owed. */
        if (c->ring_len > 0) {
            if (conn_silent(c, att, stall_us) && conn_read(c) == 0 && conn_silent(c, att, stall_us))
                conn_close(c, MKD_EUNAVAILABLE, "no answer within the statement timeout");
            continue;
        }
        if (c->overflow && now - c->last_used_us > (uint64_t)pool->opt.idle_ms * 1000) {
            log_debug("db %s: closing idle overflow connection %d", pool->opt.label, i);
            conn_close(c, MKD_EUNAVAILABLE, "idle");
        }
    }
    pool_update_stats(pool);
    h2o_timeout_link(pool->loop, &pool->tick_timeout, &pool->tick);
}

/* The host name of a conninfo to resolve off the loop: one name, not an
 * address, not a socket directory, and no hostaddr given. NULL otherwise
 * (libpq then needs no lookup, or is left to do its own for a host list). */
static char *resolvable_host(const char *conninfo)
{
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    if (opts == NULL)
        return NULL;
    const char *host = NULL, *hostaddr = NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    char *name = NULL;
    if (host != NULL && host[0] != '\0' && host[0] != '/' && strchr(host, ',') == NULL &&
        (hostaddr == NULL || hostaddr[0] == '\0') && !resolve_is_numeric(host)) {
        name = strdup(host);
        if (name == NULL)
            abort();
    }
    PQconninfoFree(opts);
    return name;
}

db_pool_t *db_pool_create(h2o_loop_t *loop, const db_pool_options_t *opt)
{
    db_pool_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        abort();
    pool->loop = loop;
    pool->opt = *opt;
    pool->conninfo_copy = strdup(opt->conninfo);
    pool->label_copy = strdup(opt->label);
    if (pool->conninfo_copy == NULL || pool->label_copy == NULL)
        abort();
    pool->opt.conninfo = pool->conninfo_copy;
    pool->opt.label = pool->label_copy;
    pool->resolve_name = resolvable_host(opt->conninfo);
    snprintf(pool->statement_options, sizeof(pool->statement_options), "-c statement_timeout=%d",
             opt->statement_timeout_ms);
    pool->max_conns = opt->base + opt->overflow;
    pool->conns = calloc((size_t)pool->max_conns, sizeof(*pool->conns));
    pool->retry_at_us = calloc((size_t)pool->max_conns, sizeof(uint64_t));
    pool->backoff_ms = calloc((size_t)pool->max_conns, sizeof(uint64_t));
    if (pool->conns == NULL || pool->retry_at_us == NULL || pool->backoff_ms == NULL)
        abort();
    h2o_linklist_init_anchor(&pool->waiters);
    h2o_timeout_init(loop, &pool->wait_timeout, (uint64_t)opt->timeout_ms);
    h2o_timeout_init(loop, &pool->recheck_timeout, TICK_MS);
    h2o_timeout_init(loop, &pool->tick_timeout, TICK_MS);
    h2o_timeout_init(loop, &pool->zero_timeout, 0);
    pool->dispatch_entry.cb = on_deferred_dispatch;
    pool->tick.cb = on_tick;
    h2o_timeout_link(loop, &pool->tick_timeout, &pool->tick);
    metrics_loop_clock_init(&pool->clock, h2o_now(loop) * 1000 + (uint64_t)TICK_MS * 1000);
    for (int i = 0; i < opt->base; i++)
        conn_start(pool, i, 0);
    return pool;
}

void db_pool_destroy(db_pool_t *pool)
{
    pool->destroying = 1;
    while (!h2o_linklist_is_empty(&pool->waiters)) {
        db_query_t *q = H2O_STRUCT_FROM_MEMBER(db_query_t, link, pool->waiters.next);
        h2o_linklist_unlink(&q->link);
        h2o_timeout_unlink(&q->timeout);
        query_finish(q, NULL, MKD_EUNAVAILABLE);
    }
    for (int i = 0; i < pool->max_conns; i++)
        if (pool->conns[i] != NULL)
            conn_close(pool->conns[i], MKD_EUNAVAILABLE, "shutdown");
    h2o_timeout_unlink(&pool->tick);
    if (h2o_timeout_is_linked(&pool->dispatch_entry))
        h2o_timeout_unlink(&pool->dispatch_entry);
    h2o_timeout_dispose(pool->loop, &pool->zero_timeout);
    h2o_timeout_dispose(pool->loop, &pool->wait_timeout);
    h2o_timeout_dispose(pool->loop, &pool->recheck_timeout);
    h2o_timeout_dispose(pool->loop, &pool->tick_timeout);
    free(pool->conns);
    free(pool->retry_at_us);
    free(pool->backoff_ms);
    free(pool->conninfo_copy);
    free(pool->label_copy);
    free(pool->resolve_name);
    free(pool);
}

void db_pool_get_stats(const db_pool_t *pool, db_pool_stats_t *st)
{
    st->connecting = STAT_GET(pool->st_connecting);
    st->idle = STAT_GET(pool->st_idle);
    st->busy = STAT_GET(pool->st_busy);
    st->waiting = STAT_GET(pool->st_waiting);
    st->up = STAT_GET(pool->st_up);
    st->max = pool->max_conns;
    st->served = STAT_GET(pool->st_served);
}

void db_pool_add_wait_hist(const db_pool_t *pool, db_wait_hist_t *h)
{
    for (int i = 0; i < DB_WAIT_NBUCKETS; i++)
        h->buckets[i] += STAT_GET(pool->wait_hist.buckets[i]);
    h->count += STAT_GET(pool->wait_hist.count);
    h->sum_us += STAT_GET(pool->wait_hist.sum_us);
}
