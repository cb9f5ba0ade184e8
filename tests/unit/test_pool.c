/*
 * src/db/pool.c: the pool's logic without a PostgreSQL. The pool's source
 * is #included below (h2o's "unit tests can #include the .c they test"),
 * with every libpq call it makes renamed to a fake: a scripted PGconn whose
 * socket is one end of a socketpair (so h2o's evloop watches a real fd) and
 * whose other end plays the server — the test decides when commands are
 * answered, with what, and when the connection drops. The pool is S3's
 * (base connections plus overflow ones that close when idle); its bounded
 * wait is B5's (pool exhausted: an error after DB_POOL_TIMEOUT_MS, no hang).
 *
 * Time: both clocks involved — pool.c's now_us() and the evloop's own
 * (h2o_now, which drives every h2o_timeout: the wait timeout, the 100 ms
 * tick, the deferred dispatch) — come from gettimeofday(), which this
 * program defines itself (an executable's definition takes precedence over
 * libc's for libh2o-evloop too). The clock moves only in advance_ms(), so
 * every case is deterministic; the loop is run with h2o_evloop_run(loop, 0)
 * and never blocks.
 *
 * Linking: this file defines all of pool.c's external symbols, so the
 * archive's db/pool.o (pulled only for undefined symbols) stays out.
 */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/error.h"
#include "core/log.h"
#include "h2o.h"

/* ---- the clock ---------------------------------------------------------- */

static uint64_t fk_now_us = UINT64_C(1700000000000000);

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    tv->tv_sec = (time_t)(fk_now_us / 1000000);
    tv->tv_usec = (suseconds_t)(fk_now_us % 1000000);
    return 0;
}

/* ---- the fake libpq ----------------------------------------------------- */

enum { FK_PREPARE, FK_QUERY_PREPARED, FK_QUERY_PARAMS, FK_SYNC };

/* How the next connection attempts go. */
enum {
    FK_CONNECT_OK,      /* the first PQconnectPoll says OK */
    FK_CONNECT_SLOW,    /* WRITING, then READING until fk_connect_done() */
    FK_CONNECT_REFUSED, /* PQconnectStartParams returns a CONNECTION_BAD conn */
};

typedef struct fk_sent {
    int kind;
    char name[24]; /* statement name (PREPARE, QUERY_PREPARED) */
    const char *sql;
    int nparams;
    char p0[32]; /* first parameter, "<null>" for NULL, "" when none */
} fk_sent_t;

#define FK_MAX_SENT    256
#define FK_MAX_RESULTS 1024

struct pg_result {
    ExecStatusType status;
    char sqlstate[6];
    char echo[32]; /* the query's first parameter */
    char msg[64];
};

struct pg_conn {
    int index; /* creation order: fk_conns[index] */
    int fd;    /* libpq's end (PQsocket) */
    int peer;  /* the server's end, -1 once dropped */
    ConnStatusType status;
    PostgresPollingStatusType next_poll;
    int polls;
    int nonblocking, pipeline;
    int finished;
    char dbname[128];
    char options[64]; /* the "options" startup key, "" when absent */
    char errmsg[128];
    int flush_pending; /* PQflush returns 1 this many more times */
    int flushes;
    /* what the pool sent, in order; [0, nanswered) have been answered */
    fk_sent_t sent[FK_MAX_SENT];
    int nsent, nanswered;
    int outstanding, max_outstanding; /* queries sent and not answered */
    /* results (NULL = end of a statement's results) the server sent; the
     * first `visible` have been read by PQconsumeInput */
    PGresult *rq[FK_MAX_RESULTS];
    int rq_head, rq_len, rq_visible;
    /* statements the server has prepared on this connection */
    char server_prepared[32][24];
    int nserver_prepared;
};

static PGconn *fk_conns[64];
static int fk_nconns;
static int fk_connect_mode;
static int fk_violations;
static char fk_violation[256];

/* The pool used libpq in a way real libpq would not accept. */
static void fk_violate(const PGconn *f, const char *what)
{
    if (fk_violations++ == 0)
        snprintf(fk_violation, sizeof(fk_violation), "conn %d: %s", f ? f->index : -1, what);
}

static int fk_usable(const PGconn *f, const char *fn)
{
    if (f->finished) {
        char m[96];
        snprintf(m, sizeof(m), "%s after PQfinish", fn);
        fk_violate(f, m);
        return 0;
    }
    return 1;
}

static PGresult *fk_result(ExecStatusType st, const char *sqlstate, const char *echo)
{
    PGresult *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->status = st;
    if (sqlstate != NULL) {
        snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate);
        snprintf(r->msg, sizeof(r->msg), "ERROR: fake error %s", sqlstate);
    }
    if (echo != NULL)
        snprintf(r->echo, sizeof(r->echo), "%s", echo);
    return r;
}

static void fk_push(PGconn *f, PGresult *r)
{
    if (f->rq_head + f->rq_len >= FK_MAX_RESULTS)
        abort(); /* a test sending this much needs a bigger FK_MAX_RESULTS */
    f->rq[f->rq_head + f->rq_len++] = r;
}

static PGconn *fake_PQconnectStartParams(const char *const *keywords, const char *const *values,
                                         int expand_dbname)
{
    if (fk_nconns == (int)(sizeof(fk_conns) / sizeof(fk_conns[0])))
        abort();
    PGconn *f = calloc(1, sizeof(*f));
    if (f == NULL)
        abort();
    f->index = fk_nconns;
    fk_conns[fk_nconns++] = f;
    f->fd = f->peer = -1;
    for (int i = 0; keywords[i] != NULL; i++) {
        if (strcmp(keywords[i], "dbname") == 0)
            snprintf(f->dbname, sizeof(f->dbname), "%s", values[i]);
        else if (strcmp(keywords[i], "options") == 0)
            snprintf(f->options, sizeof(f->options), "%s", values[i]);
    }
    if (fk_connect_mode == FK_CONNECT_REFUSED) {
        f->status = CONNECTION_BAD;
        snprintf(f->errmsg, sizeof(f->errmsg), "connection refused");
        return f;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    f->fd = sv[0], f->peer = sv[1];
    f->status = CONNECTION_STARTED;
    f->next_poll = fk_connect_mode == FK_CONNECT_OK ? PGRES_POLLING_OK : PGRES_POLLING_WRITING;
    return f;
}

static ConnStatusType fake_PQstatus(const PGconn *f)
{
    return f == NULL ? CONNECTION_BAD : f->status;
}

static char *fake_PQerrorMessage(const PGconn *f)
{
    return f == NULL ? (char *)"" : (char *)f->errmsg;
}

/* Reads what the "server" wrote; returns 0 on EOF. */
static int fk_drain(PGconn *f)
{
    char buf[256];
    for (;;) {
        ssize_t n = read(f->fd, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        return 1; /* EAGAIN */
    }
}

static PostgresPollingStatusType fake_PQconnectPoll(PGconn *f)
{
    if (!fk_usable(f, "PQconnectPoll"))
        return PGRES_POLLING_FAILED;
    f->polls++;
    if (f->status == CONNECTION_BAD)
        return PGRES_POLLING_FAILED;
    if (!fk_drain(f))
        f->next_poll = PGRES_POLLING_FAILED;
    PostgresPollingStatusType r = f->next_poll;
    if (r == PGRES_POLLING_WRITING)
        f->next_poll = PGRES_POLLING_READING;
    else if (r == PGRES_POLLING_OK)
        f->status = CONNECTION_OK;
    else if (r == PGRES_POLLING_FAILED) {
        f->status = CONNECTION_BAD;
        snprintf(f->errmsg, sizeof(f->errmsg), "could not connect");
    }
    return r;
}

static int fake_PQsocket(const PGconn *f)
{
    return f->finished ? -1 : f->fd;
}

static int fake_PQsetnonblocking(PGconn *f, int arg)
{
    if (!fk_usable(f, "PQsetnonblocking"))
        return -1;
    f->nonblocking = arg;
    return 0;
}

static int fake_PQenterPipelineMode(PGconn *f)
{
    if (!fk_usable(f, "PQenterPipelineMode"))
        return 0;
    if (f->status != CONNECTION_OK)
        fk_violate(f, "PQenterPipelineMode before the connection is made");
    f->pipeline = 1;
    return 1;
}

static int fake_PQflush(PGconn *f)
{
    if (!fk_usable(f, "PQflush"))
        return -1;
    f->flushes++;
    if (f->flush_pending > 0) {
        f->flush_pending--;
        return 1;
    }
    return 0;
}

static int fk_send(PGconn *f, int kind, const char *name, const char *sql, int nparams,
                   const char *const *values)
{
    if (!fk_usable(f, "PQsend*"))
        return 0;
    if (f->status != CONNECTION_OK || !f->pipeline || !f->nonblocking) {
        fk_violate(f, "sent on a connection not ready, not in pipeline mode or blocking");
        return 0;
    }
    if (f->nsent == FK_MAX_SENT)
        abort();
    fk_sent_t *s = &f->sent[f->nsent++];
    s->kind = kind;
    snprintf(s->name, sizeof(s->name), "%s", name ? name : "");
    s->sql = sql;
    s->nparams = nparams;
    if (kind == FK_QUERY_PREPARED || kind == FK_QUERY_PARAMS) {
        snprintf(s->p0, sizeof(s->p0), "%s", nparams == 0 ? "" : values[0] ? values[0] : "<null>");
        if (++f->outstanding > f->max_outstanding)
            f->max_outstanding = f->outstanding;
    }
    return 1;
}

static int fake_PQsendPrepare(PGconn *f, const char *name, const char *query, int nparams, const Oid *types)
{
    return fk_send(f, FK_PREPARE, name, query, nparams, NULL);
}

static int fake_PQsendQueryPrepared(PGconn *f, const char *name, int nparams, const char *const *values,
                                    const int *lengths, const int *formats, int result_format)
{
    return fk_send(f, FK_QUERY_PREPARED, name, NULL, nparams, values);
}

static int fake_PQsendQueryParams(PGconn *f, const char *command, int nparams, const Oid *types,
                                  const char *const *values, const int *lengths, const int *formats,
                                  int result_format)
{
    return fk_send(f, FK_QUERY_PARAMS, NULL, command, nparams, values);
}

static int fake_PQpipelineSync(PGconn *f)
{
    return fk_send(f, FK_SYNC, NULL, NULL, 0, NULL);
}

static int fake_PQconsumeInput(PGconn *f)
{
    if (!fk_usable(f, "PQconsumeInput"))
        return 0;
    if (!fk_drain(f)) {
        f->status = CONNECTION_BAD;
        snprintf(f->errmsg, sizeof(f->errmsg), "server closed the connection unexpectedly");
        return 0;
    }
    f->rq_visible = f->rq_len;
    return 1;
}

static int fake_PQisBusy(PGconn *f)
{
    if (!fk_usable(f, "PQisBusy"))
        return 0;
    return f->rq_visible == 0;
}

static PGresult *fake_PQgetResult(PGconn *f)
{
    if (!fk_usable(f, "PQgetResult"))
        return NULL;
    if (f->rq_visible == 0) {
        fk_violate(f, "PQgetResult while PQisBusy (would block)");
        return NULL;
    }
    PGresult *r = f->rq[f->rq_head++];
    f->rq_len--, f->rq_visible--;
    return r;
}

static void fake_PQclear(PGresult *r)
{
    free(r);
}

static ExecStatusType fake_PQresultStatus(const PGresult *r)
{
    return r == NULL ? PGRES_FATAL_ERROR : r->status;
}

static char *fake_PQresultErrorField(const PGresult *r, int field)
{
    if (r == NULL || field != PG_DIAG_SQLSTATE || r->sqlstate[0] == '\0')
        return NULL;
    return (char *)r->sqlstate;
}

static void fake_PQfinish(PGconn *f)
{
    if (f == NULL)
        return;
    if (!fk_usable(f, "PQfinish"))
        return;
    f->finished = 1;
    if (f->fd >= 0)
        close(f->fd);
    if (f->peer >= 0)
        close(f->peer);
    f->peer = -1;
    for (int i = 0; i < f->rq_len; i++)
        free(f->rq[f->rq_head + i]);
    f->rq_len = f->rq_visible = 0;
}

/* Every libpq function pool.c calls. (Build check: `nm -u` on the test
 * binary lists no PQ* symbol, so none of them reaches the real libpq.) */
#define PQconnectStartParams fake_PQconnectStartParams
#define PQstatus             fake_PQstatus
#define PQerrorMessage       fake_PQerrorMessage
#define PQconnectPoll        fake_PQconnectPoll
#define PQsocket             fake_PQsocket
#define PQsetnonblocking     fake_PQsetnonblocking
#define PQenterPipelineMode  fake_PQenterPipelineMode
#define PQflush              fake_PQflush
#define PQsendPrepare        fake_PQsendPrepare
#define PQsendQueryPrepared  fake_PQsendQueryPrepared
#define PQsendQueryParams    fake_PQsendQueryParams
#define PQpipelineSync       fake_PQpipelineSync
#define PQconsumeInput       fake_PQconsumeInput
#define PQisBusy             fake_PQisBusy
#define PQgetResult          fake_PQgetResult
#define PQclear              fake_PQclear
#define PQresultStatus       fake_PQresultStatus
#define PQresultErrorField   fake_PQresultErrorField
#define PQfinish             fake_PQfinish

#include "db/pool.c"

/* ---- the fake server ---------------------------------------------------- */

static int srv_has(const PGconn *f, const char *name)
{
    for (int i = 0; i < f->nserver_prepared; i++)
        if (strcmp(f->server_prepared[i], name) == 0)
            return 1;
    return 0;
}

/*
 * The server answers f's commands in order, up to and including the
 * `nsync`-th Sync not yet answered, then f's socket turns readable. With
 * `fail_state`, the first command of the first batch fails with that
 * SQLSTATE; as in a real pipeline, an error aborts the rest of its batch
 * (PGRES_PIPELINE_ABORTED) up to the Sync.
 */
static void srv_answer_ex(PGconn *f, int nsync, const char *fail_state)
{
    int syncs = 0, first = 1, aborted = 0;
    while (f->nanswered < f->nsent && syncs < nsync) {
        const fk_sent_t *s = &f->sent[f->nanswered++];
        if (s->kind == FK_SYNC) {
            fk_push(f, fk_result(PGRES_PIPELINE_SYNC, NULL, NULL));
            syncs++, first = 1, aborted = 0, fail_state = NULL;
            continue;
        }
        PGresult *r;
        if (aborted) {
            r = fk_result(PGRES_PIPELINE_ABORTED, NULL, NULL);
        } else if (first && fail_state != NULL) {
            r = fk_result(PGRES_FATAL_ERROR, fail_state, NULL);
            aborted = 1;
        } else if (s->kind == FK_PREPARE) {
            if (srv_has(f, s->name)) {
                fk_violate(f, "statement prepared twice on one connection");
                r = fk_result(PGRES_FATAL_ERROR, "42P05", NULL);
                aborted = 1;
            } else {
                if (f->nserver_prepared == (int)(sizeof(f->server_prepared) / sizeof(f->server_prepared[0])))
                    abort();
                memcpy(f->server_prepared[f->nserver_prepared++], s->name, sizeof(s->name));
                r = fk_result(PGRES_COMMAND_OK, NULL, NULL);
            }
        } else if (s->kind == FK_QUERY_PREPARED && !srv_has(f, s->name)) {
            r = fk_result(PGRES_FATAL_ERROR, "26000", NULL); /* no such prepared statement */
            aborted = 1;
        } else {
            r = fk_result(PGRES_TUPLES_OK, NULL, s->p0);
        }
        if (s->kind != FK_PREPARE)
            f->outstanding--;
        first = 0;
        fk_push(f, r);
        fk_push(f, NULL);
    }
    if (f->peer >= 0 && write(f->peer, "r", 1) != 1)
        abort();
}

static void srv_answer(PGconn *f, int nsync)
{
    srv_answer_ex(f, nsync, NULL);
}

static void srv_answer_all(PGconn *f)
{
    srv_answer_ex(f, INT_MAX, NULL);
}

/* The server goes away: the pool's end reads EOF. */
static void srv_drop(PGconn *f)
{
    close(f->peer);
    f->peer = -1;
}

/* A FK_CONNECT_SLOW attempt completes (ok) or fails. */
static void fk_connect_done(PGconn *f, int ok)
{
    f->next_poll = ok ? PGRES_POLLING_OK : PGRES_POLLING_FAILED;
    if (write(f->peer, "c", 1) != 1)
        abort();
}

static int fk_count(const PGconn *f, int kind)
{
    int n = 0;
    for (int i = 0; i < f->nsent; i++)
        n += f->sent[i].kind == kind;
    return n;
}

static int fk_count_named(const PGconn *f, int kind, const char *name)
{
    int n = 0;
    for (int i = 0; i < f->nsent; i++)
        n += f->sent[i].kind == kind && strcmp(f->sent[i].name, name) == 0;
    return n;
}

/* The first parameters of the queries sent on f, in order, joined by ','. */
static const char *fk_queries(const PGconn *f)
{
    static char out[512];
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < f->nsent; i++) {
        if (f->sent[i].kind != FK_QUERY_PREPARED && f->sent[i].kind != FK_QUERY_PARAMS)
            continue;
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%s", o ? "," : "", f->sent[i].p0);
        if (o >= sizeof(out))
            break;
    }
    return out;
}

/* The kinds of commands sent on f, e.g. "PQS" (Prepare, Query, Sync). */
static const char *fk_kinds(const PGconn *f)
{
    static char out[FK_MAX_SENT + 1];
    int o = 0;
    for (int i = 0; i < f->nsent; i++)
        out[o++] = "PQqS"[f->sent[i].kind];
    out[o] = '\0';
    return out;
}

static int fk_live(void)
{
    int n = 0;
    for (int i = 0; i < fk_nconns; i++)
        n += !fk_conns[i]->finished;
    return n;
}

/* ---- fixture ------------------------------------------------------------ */

static h2o_loop_t *loop;
static db_pool_t *the_pool;
static const db_stmt_t *S1, *S2;

/* What a callback saw; static so a failed test's teardown never writes into
 * a dead stack frame. */
typedef struct rec {
    int calls;
    int err;
    int status; /* PQresultStatus, -1 for a NULL result */
    char echo[32];
    char sqlstate[6];
    int seq;  /* order among all callbacks */
    int sync; /* ran from inside db_pool_query */
    /* optional: submit another query from inside the callback */
    struct rec *then;
    const char *then_p0;
    int then_rc;
    int then_calls; /* then->calls right after that submit returned */
} rec_t;

static rec_t recs[32];
/* Query parameters: query i is usually sent with NUM[i]. */
static const char *const NUM[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
static int in_query, cb_seq;

static void on_result(void *arg, PGresult *res, int err);

static int submit(const db_stmt_t *st, const char *p0, rec_t *r)
{
    const char *vals[1] = {p0};
    in_query++;
    int rc = db_pool_query(the_pool, st, vals, on_result, r);
    in_query--;
    return rc;
}

static void on_result(void *arg, PGresult *res, int err)
{
    rec_t *r = arg;
    r->calls++;
    r->err = err;
    r->status = res == NULL ? -1 : (int)fake_PQresultStatus(res);
    snprintf(r->echo, sizeof(r->echo), "%s", res ? res->echo : "");
    snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", res ? res->sqlstate : "");
    r->seq = ++cb_seq;
    r->sync = in_query;
    if (r->then != NULL) {
        r->then_rc = submit(S1, r->then_p0, r->then);
        r->then_calls = r->then->calls;
    }
}

/* Submits and asserts it was accepted. */
#define SUBMIT(st, p0, r)                                                                                    \
    do {                                                                                                     \
        int rc_ = submit((st), (p0), (r));                                                                   \
        if (rc_ != 0)                                                                                        \
            fail_msg("db_pool_query(%s) = %d (%s), expected 0", (p0), rc_, mkd_strerror(rc_));               \
    } while (0)

/* One turn of the loop: I/O callbacks, then due timeouts. Never blocks. */
static void turn(void)
{
    h2o_evloop_run(loop, 0);
}

/* Enough turns for anything already due (deferred dispatches included). */
static void settle(void)
{
    for (int i = 0; i < 4; i++)
        turn();
}

/* Moves the clock `ms` forward in 10 ms steps, turning the loop at each. */
static void advance_ms(int ms)
{
    while (ms > 0) {
        int step = ms < 10 ? ms : 10;
        fk_now_us += (uint64_t)step * 1000;
        ms -= step;
        turn();
    }
    settle();
}

static db_pool_options_t options(void)
{
    return (db_pool_options_t){
        .conninfo = "postgresql://127.0.0.1/marketd",
        .label = "test",
        .base = 1,
        .overflow = 0,
        .pipeline_depth = 1,
        .timeout_ms = 10000,
        .idle_ms = 1000,
        .max_waiters = 16,
        .prepare = 1,
        .statement_timeout_ms = 3000,
    };
}

static void create(db_pool_options_t o)
{
    the_pool = db_pool_create(loop, &o);
    settle();
}

static db_pool_stats_t stats(void)
{
    db_pool_stats_t st;
    memset(&st, 0xA5, sizeof(st));
    db_pool_get_stats(the_pool, &st);
    return st;
}

#define assert_stats(CONNECTING, IDLE, BUSY, WAITING, UP)                                                    \
    do {                                                                                                     \
        db_pool_stats_t st_ = stats();                                                                       \
        if (st_.connecting != (CONNECTING) || st_.idle != (IDLE) || st_.busy != (BUSY) ||                    \
            st_.waiting != (WAITING) || st_.up != (UP))                                                      \
            fail_msg("stats: connecting %d idle %d busy %d waiting %d up %d; expected %d %d %d %d %d",       \
                     st_.connecting, st_.idle, st_.busy, st_.waiting, st_.up, (CONNECTING), (IDLE), (BUSY),  \
                     (WAITING), (UP));                                                                       \
    } while (0)

/* The callback ran exactly once, successfully, with the result for `p0`. */
#define assert_ok(r, p0)                                                                                     \
    do {                                                                                                     \
        assert_i64_eq((r)->calls, 1);                                                                        \
        assert_i64_eq((r)->err, 0);                                                                          \
        assert_i64_eq((r)->status, PGRES_TUPLES_OK);                                                         \
        assert_string_equal((r)->echo, (p0));                                                                \
        assert_i64_eq((r)->sync, 0);                                                                         \
    } while (0)

/* The callback ran exactly once, with `e` and no result. */
#define assert_failed(r, e)                                                                                  \
    do {                                                                                                     \
        assert_i64_eq((r)->calls, 1);                                                                        \
        assert_i64_eq((r)->err, (e));                                                                        \
        assert_i64_eq((r)->status, -1);                                                                      \
        assert_i64_eq((r)->sync, 0);                                                                         \
    } while (0)

static int group_setup(void **state)
{
    log_set_level(LOG_ERROR + 1); /* the pool's warnings are expected here */
    S1 = db_stmt_register("SELECT $1::int", 1);
    S2 = db_stmt_register("SELECT $1::text", 1);
    return S1 != NULL && S2 != NULL ? 0 : -1;
}

static int setup(void **state)
{
    memset(recs, 0, sizeof(recs));
    in_query = cb_seq = 0;
    fk_nconns = 0;
    fk_connect_mode = FK_CONNECT_OK;
    fk_violations = 0;
    fk_violation[0] = '\0';
    loop = h2o_evloop_create();
    return 0;
}

static int teardown(void **state)
{
    if (the_pool != NULL)
        db_pool_destroy(the_pool);
    the_pool = NULL;
    settle(); /* frees the h2o sockets the pool closed */
    h2o_evloop_destroy(loop);
    loop = NULL;
    for (int i = 0; i < fk_nconns; i++) {
        fake_PQfinish(fk_conns[i]->finished ? NULL : fk_conns[i]);
        free(fk_conns[i]);
    }
    fk_nconns = 0;
    if (fk_violations != 0)
        fail_msg("%d libpq misuse(s); first: %s", fk_violations, fk_violation);
    return 0;
}

/* ---- cases -------------------------------------------------------------- */

static void test_create_opens_base_connections(void **state)
{
    db_pool_options_t o = options();
    o.base = 2, o.overflow = 3;
    create(o);
    assert_i64_eq(fk_nconns, 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(fk_conns[i]->dbname, "postgresql://127.0.0.1/marketd");
        assert_string_equal(fk_conns[i]->options, "-c statement_timeout=3000");
        assert_i64_eq(fk_conns[i]->nonblocking, 1);
        assert_i64_eq(fk_conns[i]->pipeline, 1);
        assert_i64_eq(fk_conns[i]->nsent, 0);
    }
    assert_stats(0, 2, 0, 0, 1);
    assert_i64_eq(stats().max, 5);
}

static void test_result_delivered_once_never_inside_query(void **state)
{
    create(options());
    PGconn *c0 = fk_conns[0];
    rec_t *r = &recs[0];
    SUBMIT(S1, "41", r);
    assert_i64_eq(r->calls, 0); /* not from inside db_pool_query */
    settle();
    assert_i64_eq(r->calls, 0); /* not before the server answered */
    assert_string_equal(fk_queries(c0), "41");
    assert_stats(0, 0, 1, 0, 1);
    srv_answer_all(c0);
    settle();
    assert_ok(r, "41");
    advance_ms(1000);
    assert_i64_eq(r->calls, 1);
    assert_stats(0, 1, 0, 0, 1);
}

static void test_dispatch_spreads_then_fills_up_to_pipeline_depth(void **state)
{
    db_pool_options_t o = options();
    o.base = 2, o.pipeline_depth = 3;
    create(o);
    PGconn *c0 = fk_conns[0], *c1 = fk_conns[1];
    for (int i = 0; i < 7; i++)
        SUBMIT(S1, NUM[i], &recs[i]);
    settle();
    /* least loaded first: alternating, 3 each, the 7th waits */
    assert_string_equal(fk_queries(c0), "0,2,4");
    assert_string_equal(fk_queries(c1), "1,3,5");
    assert_i64_eq(fk_nconns, 2);
    assert_i64_eq(recs[6].calls, 0);
    srv_answer(c1, 1); /* "1" done: room on c1 for "6" */
    settle();
    assert_ok(&recs[1], "1");
    assert_string_equal(fk_queries(c1), "1,3,5,6");
    assert_stats(0, 0, 2, 0, 1);
    srv_answer_all(c0);
    srv_answer_all(c1);
    settle();
    for (int i = 0; i < 7; i++)
        assert_ok(&recs[i], NUM[i]);
    assert_i64_eq(c0->max_outstanding, 3);
    assert_i64_eq(c1->max_outstanding, 3);
    assert_stats(0, 2, 0, 0, 1);
}

/* S3: overflow connections only beyond the base ones. */
static void test_overflow_opened_only_when_all_ready_are_full(void **state)
{
    db_pool_options_t o = options();
    o.base = 2, o.overflow = 2, o.pipeline_depth = 2;
    create(o);
    for (int i = 0; i < 4; i++)
        SUBMIT(S1, NUM[i], &recs[i]);
    settle();
    assert_i64_eq(fk_nconns, 2); /* 2 × depth 2: no overflow yet */
    SUBMIT(S1, NUM[4], &recs[4]);
    settle();
    assert_i64_eq(fk_nconns, 3);
    assert_string_equal(fk_queries(fk_conns[2]), "4");
    SUBMIT(S1, NUM[5], &recs[5]); /* room on the overflow connection */
    settle();
    assert_i64_eq(fk_nconns, 3);
    assert_string_equal(fk_queries(fk_conns[2]), "4,5");
    SUBMIT(S1, NUM[6], &recs[6]);
    SUBMIT(S1, NUM[7], &recs[7]);
    settle();
    assert_i64_eq(fk_nconns, 4);
    assert_string_equal(fk_queries(fk_conns[3]), "6,7");
    SUBMIT(S1, NUM[8], &recs[8]); /* base + overflow all full: waits */
    settle();
    assert_i64_eq(fk_nconns, 4);
    assert_i64_eq(recs[8].calls, 0);
    assert_i64_eq(stats().max, 4);
    for (int i = 0; i < 4; i++)
        srv_answer_all(fk_conns[i]);
    settle();
    for (int i = 0; i < 4; i++)
        srv_answer_all(fk_conns[i]);
    settle();
    for (int i = 0; i < 9; i++)
        assert_ok(&recs[i], NUM[i]);
}

static void test_overflow_attempts_one_at_a_time(void **state)
{
    db_pool_options_t o = options();
    o.overflow = 2;
    create(o);
    fk_connect_mode = FK_CONNECT_SLOW;
    SUBMIT(S1, "0", &recs[0]);
    SUBMIT(S1, "1", &recs[1]);
    SUBMIT(S1, "2", &recs[2]);
    settle();
    assert_i64_eq(fk_nconns, 2); /* one overflow attempt, not two */
    assert_string_equal(fk_queries(fk_conns[0]), "0");
    assert_string_equal(fk_queries(fk_conns[1]), ""); /* still connecting */
    fk_connect_done(fk_conns[1], 1);
    settle();
    assert_string_equal(fk_queries(fk_conns[1]), "1");
    assert_i64_eq(fk_nconns, 3); /* "2" still waits: the next attempt */
    assert_string_equal(fk_queries(fk_conns[2]), "");
    fk_connect_done(fk_conns[2], 1);
    settle();
    assert_string_equal(fk_queries(fk_conns[2]), "2");
    for (int i = 0; i < 3; i++)
        srv_answer_all(fk_conns[i]);
    settle();
    for (int i = 0; i < 3; i++)
        assert_ok(&recs[i], NUM[i]);
    assert_stats(0, 3, 0, 0, 1);
}

/* S3: overflow connections close again when idle. */
static void test_idle_overflow_closed_after_idle_ms(void **state)
{
    db_pool_options_t o = options();
    o.overflow = 1, o.idle_ms = 1000;
    create(o);
    SUBMIT(S1, "0", &recs[0]);
    SUBMIT(S1, "1", &recs[1]);
    settle();
    assert_i64_eq(fk_nconns, 2);
    PGconn *base = fk_conns[0], *over = fk_conns[1];
    srv_answer_all(base);
    srv_answer_all(over);
    settle();
    assert_ok(&recs[1], "1");
    advance_ms(900);
    assert_i64_eq(over->finished, 0);
    assert_stats(0, 2, 0, 0, 1);
    advance_ms(300);
    assert_i64_eq(over->finished, 1);
    assert_i64_eq(base->finished, 0);
    assert_stats(0, 1, 0, 0, 1);
    advance_ms(10000); /* base connections stay, however idle */
    assert_i64_eq(base->finished, 0);
    assert_i64_eq(fk_nconns, 2);
    /* and overflow comes back on demand */
    SUBMIT(S1, "2", &recs[2]);
    SUBMIT(S1, "3", &recs[3]);
    settle();
    assert_i64_eq(fk_nconns, 3);
    assert_string_equal(fk_queries(fk_conns[2]), "3");
    srv_answer_all(base);
    srv_answer_all(fk_conns[2]);
    settle();
    assert_ok(&recs[2], "2");
    assert_ok(&recs[3], "3");
}

/* The bound holds within a burst of queries, between two ticks. */
static void test_waiters_fifo_and_bounded(void **state)
{
    db_pool_options_t o = options();
    o.max_waiters = 3;
    create(o);
    PGconn *c0 = fk_conns[0];
    SUBMIT(S1, "0", &recs[0]); /* sent */
    SUBMIT(S1, "1", &recs[1]); /* waiting: 1, 2, 3 */
    SUBMIT(S1, "2", &recs[2]);
    SUBMIT(S1, "3", &recs[3]);
    assert_i64_eq(submit(S1, "4", &recs[4]), MKD_EBUSY); /* queue full: refused at once */
    settle();
    assert_i64_eq(recs[4].calls, 0);
    assert_stats(0, 0, 1, 3, 1);
    srv_answer(c0, 1);
    settle();
    assert_stats(0, 0, 1, 2, 1);
    SUBMIT(S1, "5", &recs[5]); /* room again; goes to the back */
    for (int i = 0; i < 4; i++) {
        srv_answer(c0, 1);
        settle();
    }
    assert_string_equal(fk_queries(c0), "0,1,2,3,5");
    static const int order[] = {0, 1, 2, 3, 5};
    for (int i = 0; i < 5; i++) {
        assert_ok(&recs[order[i]], NUM[order[i]]);
        assert_i64_eq(recs[order[i]].seq, i + 1);
    }
    advance_ms(20000);
    assert_i64_eq(recs[4].calls, 0);
}

/* B5: an exhausted pool answers after a bounded wait, never hangs. */
static void test_waiter_times_out_with_ebusy_once(void **state)
{
    db_pool_options_t o = options();
    o.timeout_ms = 500;
    create(o);
    PGconn *c0 = fk_conns[0];
    SUBMIT(S1, "0", &recs[0]);
    advance_ms(200);
    SUBMIT(S1, "1", &recs[1]);
    advance_ms(499);
    assert_i64_eq(recs[1].calls, 0);
    assert_stats(0, 0, 1, 1, 1);
    advance_ms(1);
    assert_failed(&recs[1], MKD_EBUSY);
    assert_stats(0, 0, 1, 0, 1);
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[0], "0");
    advance_ms(2000);
    assert_i64_eq(recs[1].calls, 1);
    assert_string_equal(fk_queries(c0), "0"); /* the timed-out query was never sent */
    /* the wait histogram saw both: 0 s and 0.5 s */
    db_wait_hist_t h;
    memset(&h, 0, sizeof(h));
    db_pool_add_wait_hist(the_pool, &h);
    assert_i64_eq(h.count, 2);
    assert_i64_eq(h.sum_us, 500000);
    assert_i64_eq(h.buckets[0], 1);
    assert_i64_eq(h.buckets[8], 1); /* le 0.5 */
}

/* The bound is attentive time: a loop that stalled past the wait (3 s, no
 * turn at all) did not let the connection take the query, so the query is
 * not refused for it; it runs once the connection is free. */
static void test_stalled_loop_does_not_time_out_a_waiter(void **state)
{
    db_pool_options_t o = options();
    o.timeout_ms = 500;
    create(o);
    PGconn *c0 = fk_conns[0];
    SUBMIT(S1, "0", &recs[0]);
    SUBMIT(S1, "1", &recs[1]);
    advance_ms(100);
    fk_now_us += 3000 * 1000; /* the stall */
    settle();
    assert_i64_eq(recs[1].calls, 0);
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[0], "0");
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[1], "1");
}

static void test_unavailable_at_once_while_db_down(void **state)
{
    fk_connect_mode = FK_CONNECT_REFUSED;
    db_pool_options_t o = options();
    o.base = 2;
    create(o);
    assert_i64_eq(fk_nconns, 2);
    assert_i64_eq(fk_live(), 0);
    assert_stats(0, 0, 0, 0, 0);
    assert_i64_eq(submit(S1, "0", &recs[0]), MKD_EUNAVAILABLE);
    advance_ms(300); /* retries keep failing */
    assert_i64_eq(submit(S1, "1", &recs[1]), MKD_EUNAVAILABLE);
    assert_i64_eq(recs[0].calls, 0);
    assert_i64_eq(recs[1].calls, 0);
    assert_i64_eq(fk_live(), 0);
    /* the database comes back: the retries reconnect both slots */
    fk_connect_mode = FK_CONNECT_OK;
    advance_ms(1500);
    assert_stats(0, 2, 0, 0, 1);
    SUBMIT(S1, "2", &recs[2]);
    settle();
    for (int i = 0; i < fk_nconns; i++)
        if (!fk_conns[i]->finished)
            srv_answer_all(fk_conns[i]);
    settle();
    assert_ok(&recs[2], "2");
}

/* The database has been down for a while (the last failed attempt is over
 * 500 ms old, so queries are no longer refused at once); a query arrives
 * and the pool's immediate connection attempt fails synchronously (as a
 * refused local socket does). Either outcome is within the contract —
 * refused at once, or accepted and failed later — but not a callback from
 * inside db_pool_query. */
static void test_query_during_outage_never_called_back_inside_query(void **state)
{
    fk_connect_mode = FK_CONNECT_REFUSED;
    create(options());
    for (int i = 0; i < 1000 && now_us() - the_pool->last_fail_us < 500000; i++)
        advance_ms(10);
    assert_true(now_us() - the_pool->last_fail_us >= 500000);
    int attempts = fk_nconns;
    int rc = submit(S1, "0", &recs[0]);
    if (recs[0].calls != 0)
        fail_msg("db_pool_query returned %d (%s) after running the callback (err %d) from inside it", rc,
                 mkd_strerror(rc), recs[0].err);
    settle();
    if (rc == 0) {
        assert_failed(&recs[0], MKD_EUNAVAILABLE);
        assert_i64_eq(fk_nconns, attempts + 1); /* tried at once, not at the end of the backoff */
    } else {
        assert_i64_eq(rc, MKD_EUNAVAILABLE);
        assert_i64_eq(recs[0].calls, 0);
    }
}

static void test_waiters_fail_when_connect_attempt_fails(void **state)
{
    fk_connect_mode = FK_CONNECT_SLOW;
    create(options());
    assert_i64_eq(fk_conns[0]->status, CONNECTION_STARTED);
    SUBMIT(S1, "0", &recs[0]); /* nothing has failed yet: it waits */
    settle();
    assert_i64_eq(recs[0].calls, 0);
    fk_connect_done(fk_conns[0], 0);
    settle();
    assert_failed(&recs[0], MKD_EUNAVAILABLE);
    assert_i64_eq(fk_conns[0]->finished, 1);
    assert_i64_eq(submit(S1, "1", &recs[1]), MKD_EUNAVAILABLE);
    settle();
    assert_i64_eq(recs[1].calls, 0);
    assert_stats(0, 0, 0, 0, 0);
}

static void test_lost_connection_fails_only_its_inflight_and_is_replaced(void **state)
{
    db_pool_options_t o = options();
    o.base = 2, o.pipeline_depth = 2;
    create(o);
    PGconn *c0 = fk_conns[0], *c1 = fk_conns[1];
    for (int i = 0; i < 5; i++)
        SUBMIT(S1, NUM[i], &recs[i]);
    settle();
    assert_string_equal(fk_queries(c0), "0,2");
    assert_string_equal(fk_queries(c1), "1,3");
    srv_answer(c0, 1); /* "0" answered; "4" takes its place */
    settle();
    assert_ok(&recs[0], "0");
    assert_string_equal(fk_queries(c0), "0,2,4");
    srv_drop(c0);
    settle();
    assert_failed(&recs[2], MKD_EUNAVAILABLE);
    assert_failed(&recs[4], MKD_EUNAVAILABLE);
    assert_ok(&recs[0], "0"); /* answered before: untouched */
    assert_i64_eq(recs[1].calls, 0);
    assert_i64_eq(recs[3].calls, 0);
    assert_i64_eq(c0->finished, 1);
    SUBMIT(S1, NUM[5], &recs[5]); /* c1 is full: waits for the replacement */
    advance_ms(200);
    assert_i64_eq(fk_nconns, 3);
    PGconn *c2 = fk_conns[2];
    assert_i64_eq(c2->finished, 0);
    assert_string_equal(fk_queries(c2), "5");
    assert_i64_eq(fk_count(c2, FK_PREPARE), 1); /* a new connection prepares again */
    srv_answer_all(c1);
    srv_answer_all(c2);
    settle();
    assert_ok(&recs[1], "1");
    assert_ok(&recs[3], "3");
    assert_ok(&recs[5], "5");
    assert_i64_eq(recs[2].calls, 1);
    assert_i64_eq(recs[4].calls, 1);
    assert_stats(0, 2, 0, 0, 1);
}

static void test_callback_can_submit_and_is_never_called_inside_it(void **state)
{
    create(options());
    recs[0].then = &recs[1], recs[0].then_p0 = "10";
    recs[1].then = &recs[2], recs[1].then_p0 = "20"; /* from a failure's callback */
    SUBMIT(S1, "0", &recs[0]);
    settle();
    srv_answer_all(fk_conns[0]);
    settle();
    assert_ok(&recs[0], "0");
    assert_i64_eq(recs[0].then_rc, 0);
    assert_i64_eq(recs[0].then_calls, 0);
    assert_string_equal(fk_queries(fk_conns[0]), "0,10");
    srv_drop(fk_conns[0]); /* "10" fails; its callback submits "20" */
    settle();
    assert_failed(&recs[1], MKD_EUNAVAILABLE);
    assert_i64_eq(recs[1].then_rc, 0);
    assert_i64_eq(recs[1].then_calls, 0);
    advance_ms(200);
    assert_i64_eq(fk_nconns, 2);
    assert_string_equal(fk_queries(fk_conns[1]), "20");
    srv_answer_all(fk_conns[1]);
    settle();
    assert_ok(&recs[2], "20");
}

static void test_statement_prepared_once_per_connection(void **state)
{
    db_pool_options_t o = options();
    o.base = 2, o.pipeline_depth = 4;
    create(o);
    PGconn *c0 = fk_conns[0], *c1 = fk_conns[1];
    SUBMIT(S1, "a", &recs[0]); /* c0 */
    SUBMIT(S1, "b", &recs[1]); /* c1 */
    SUBMIT(S1, "c", &recs[2]); /* c0 */
    SUBMIT(S2, "d", &recs[3]); /* c1 */
    settle();
    assert_string_equal(fk_kinds(c0), "PQSQS");
    assert_string_equal(fk_kinds(c1), "PQSPQS");
    assert_i64_eq(fk_count_named(c0, FK_PREPARE, S1->name), 1);
    assert_i64_eq(fk_count_named(c1, FK_PREPARE, S1->name), 1);
    assert_i64_eq(fk_count_named(c1, FK_PREPARE, S2->name), 1);
    assert_i64_eq(fk_count_named(c0, FK_QUERY_PREPARED, S1->name), 2);
    assert_i64_eq(fk_count_named(c1, FK_QUERY_PREPARED, S2->name), 1);
    srv_answer_all(c0);
    srv_answer_all(c1);
    settle();
    static const char *const abcd[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        assert_ok(&recs[i], abcd[i]);
    /* now S2 first, so that it lands on c0 too */
    for (int i = 4; i < 8; i++)
        SUBMIT(i % 2 ? S1 : S2, "e", &recs[i]);
    settle();
    srv_answer_all(c0);
    srv_answer_all(c1);
    settle();
    for (int i = 4; i < 8; i++)
        assert_ok(&recs[i], "e");
    assert_i64_eq(fk_count(c0, FK_PREPARE) + fk_count(c1, FK_PREPARE), 4); /* S1 on both, S2 on both */
    assert_i64_eq(fk_count(c0, FK_QUERY_PARAMS) + fk_count(c1, FK_QUERY_PARAMS), 0);
}

static void test_prepare_off_sends_unnamed_statements(void **state)
{
    db_pool_options_t o = options();
    o.prepare = 0, o.pipeline_depth = 2;
    create(o);
    PGconn *c0 = fk_conns[0];
    assert_string_equal(c0->options, ""); /* PgBouncer would refuse it */
    SUBMIT(S1, "1", &recs[0]);
    SUBMIT(S1, "2", &recs[1]);
    settle();
    srv_answer_all(c0);
    settle();
    SUBMIT(S1, "3", &recs[2]);
    settle();
    srv_answer_all(c0);
    settle();
    assert_string_equal(fk_kinds(c0), "qSqSqS");
    assert_string_equal(c0->sent[0].sql, S1->sql);
    assert_i64_eq(c0->sent[0].nparams, 1);
    for (int i = 0; i < 3; i++)
        assert_ok(&recs[i], NUM[i + 1]);
}

static void test_failed_prepare_fails_query_and_is_retried(void **state)
{
    create(options());
    PGconn *c0 = fk_conns[0];
    SUBMIT(S1, "0", &recs[0]);
    settle();
    srv_answer_ex(c0, 1, "42P01"); /* PREPARE fails, the query is aborted */
    settle();
    assert_i64_eq(recs[0].calls, 1);
    assert_i64_eq(recs[0].err, MKD_EDB);
    assert_i64_eq(recs[0].status, PGRES_FATAL_ERROR); /* the PREPARE's error, not "aborted" */
    assert_string_equal(recs[0].sqlstate, "42P01");
    SUBMIT(S1, "1", &recs[1]);
    settle();
    assert_string_equal(fk_kinds(c0), "PQSPQS"); /* prepared again */
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[1], "1");
    assert_i64_eq(c0->finished, 0);
}

/* A PREPARE cancelled by the statement timeout (it waited on a lock held
 * elsewhere) fails its query as the database's failure (503), not as the
 * request's (500): the same mapping as the statement's own error. */
static void test_prepare_cancelled_by_timeout_is_unavailable(void **state)
{
    create(options());
    PGconn *c0 = fk_conns[0];
    SUBMIT(S1, "0", &recs[0]);
    settle();
    srv_answer_ex(c0, 1, "57014");
    settle();
    assert_i64_eq(recs[0].calls, 1);
    assert_i64_eq(recs[0].err, MKD_EUNAVAILABLE);
    assert_string_equal(recs[0].sqlstate, "57014");
    assert_i64_eq(c0->finished, 0);
}

static void test_query_errors_map_sqlstate_and_keep_connection(void **state)
{
    db_pool_options_t o = options();
    o.prepare = 0;
    create(o);
    PGconn *c0 = fk_conns[0];
    SUBMIT(S1, "0", &recs[0]);
    settle();
    srv_answer_ex(c0, 1, "23505"); /* unique_violation: the request's fault */
    settle();
    assert_i64_eq(recs[0].calls, 1);
    assert_i64_eq(recs[0].err, MKD_EDB);
    assert_string_equal(recs[0].sqlstate, "23505");
    SUBMIT(S1, "1", &recs[1]);
    settle();
    srv_answer_ex(c0, 1, "57014"); /* statement timeout: the database's */
    settle();
    assert_i64_eq(recs[1].calls, 1);
    assert_i64_eq(recs[1].err, MKD_EUNAVAILABLE);
    assert_string_equal(recs[1].sqlstate, "57014");
    SUBMIT(S1, "3", &recs[3]);
    settle();
    srv_answer_ex(c0, 1, "26000"); /* its statement unprepared (a failed PREPARE before it) */
    settle();
    assert_i64_eq(recs[3].err, MKD_EUNAVAILABLE);
    SUBMIT(S1, "2", &recs[2]);
    settle();
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[2], "2");
    assert_i64_eq(fk_nconns, 1);
    assert_i64_eq(c0->finished, 0);
}

/* The counts are current once the loop has settled, not only after the
 * next 100 ms tick: db_pool_query itself reads `waiting` (max_waiters),
 * `up` and `connecting` (the fail-at-once rule). */
static void test_stats_follow_connection_states(void **state)
{
    fk_connect_mode = FK_CONNECT_SLOW;
    db_pool_options_t o = options();
    o.base = 2, o.overflow = 1;
    create(o);
    assert_stats(2, 0, 0, 0, 0);
    assert_i64_eq(stats().max, 3);
    fk_connect_done(fk_conns[0], 1);
    settle();
    assert_stats(1, 1, 0, 0, 1);
    SUBMIT(S1, "0", &recs[0]);
    settle();
    assert_stats(1, 0, 1, 0, 1);
    SUBMIT(S1, "1", &recs[1]); /* a base connection is on its way: no overflow */
    settle();
    assert_i64_eq(fk_nconns, 2);
    assert_stats(1, 0, 1, 1, 1);
    fk_connect_done(fk_conns[1], 1);
    settle();
    assert_stats(0, 0, 2, 0, 1);
    srv_answer_all(fk_conns[0]);
    settle();
    assert_stats(0, 1, 1, 0, 1);
    srv_answer_all(fk_conns[1]);
    settle();
    assert_stats(0, 2, 0, 0, 1);
    assert_ok(&recs[0], "0");
    assert_ok(&recs[1], "1");
}

static void test_destroy_fails_inflight_and_waiting_once(void **state)
{
    create(options());
    recs[0].then = &recs[3], recs[0].then_p0 = "x"; /* submitting during destroy */
    SUBMIT(S1, "0", &recs[0]);
    SUBMIT(S1, "1", &recs[1]);
    SUBMIT(S1, "2", &recs[2]);
    settle();
    PGconn *c0 = fk_conns[0];
    db_pool_destroy(the_pool);
    the_pool = NULL;
    for (int i = 0; i < 3; i++)
        assert_failed(&recs[i], MKD_EUNAVAILABLE);
    assert_i64_eq(recs[0].then_rc, MKD_EUNAVAILABLE);
    assert_i64_eq(recs[3].calls, 0);
    assert_i64_eq(c0->finished, 1);
}

static void test_unanswered_query_past_statement_timeout_drops_connection(void **state)
{
    db_pool_options_t o = options();
    o.statement_timeout_ms = 1000, o.timeout_ms = 60000; /* stall limit: 1 s + 5 s */
    create(o);
    SUBMIT(S1, "0", &recs[0]);
    advance_ms(5900);
    assert_i64_eq(recs[0].calls, 0);
    advance_ms(300);
    assert_failed(&recs[0], MKD_EUNAVAILABLE);
    assert_i64_eq(fk_conns[0]->finished, 1);
    advance_ms(200);
    assert_i64_eq(fk_nconns, 2);
    assert_stats(0, 1, 0, 0, 1);
}

/*
 * Under 10,000 connections epoll hands the loop 256 ready sockets per turn,
 * so the tick can run while a connection's answer sits unread in its
 * socket. Staged here by running the tick before the loop's next turn. The
 * watchdog must read the socket before it judges: the answer is delivered,
 * not failed, and the connection kept.
 */
static void test_answer_unread_when_watchdog_fires_is_delivered(void **state)
{
    db_pool_options_t o = options();
    o.statement_timeout_ms = 1000, o.timeout_ms = 60000; /* stall limit: 1 s + 5 s */
    create(o);
    PGconn *c0 = fk_conns[0];
    advance_ms(50); /* between two ticks */
    SUBMIT(S1, "0", &recs[0]);
    advance_ms(5990); /* the loop keeps up; the database says nothing */
    assert_i64_eq(recs[0].calls, 0);
    assert_i64_eq(c0->finished, 0);
    srv_answer_all(c0); /* now it answers, and the answer waits in the socket */
    fk_now_us += 60 * 1000;
    /* The tick is due now (6.05 s of silence, past the limit) and runs
     * before the socket's turn, as h2o_timeout_run would run it. */
    h2o_timeout_unlink(&the_pool->tick);
    on_tick(&the_pool->tick);
    assert_ok(&recs[0], "0");
    assert_i64_eq(c0->finished, 0);
    settle();
    assert_i64_eq(fk_nconns, 1);
    assert_stats(0, 1, 0, 0, 1);
    SUBMIT(S1, "1", &recs[1]); /* the connection still works */
    settle();
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[1], "1");
    assert_i64_eq(fk_nconns, 1);
}

/*
 * The loop itself stalls (7 s: no turn at all) with a query in flight: the
 * watchdog counts only time in which the answer could have been read, so
 * the connection is not blamed when the loop comes back — and a database
 * that then stays silent while the loop keeps up is still dropped, 6 s of
 * attentive time after the query (B5).
 */
static void test_stalled_loop_does_not_blame_the_database(void **state)
{
    db_pool_options_t o = options();
    o.statement_timeout_ms = 1000, o.timeout_ms = 60000; /* stall limit: 1 s + 5 s */
    create(o);
    PGconn *c0 = fk_conns[0];
    SUBMIT(S1, "0", &recs[0]);
    settle();
    fk_now_us += 7000 * 1000; /* the stall */
    turn();                   /* the first turn after it: the tick runs 7 s late */
    settle();
    assert_i64_eq(recs[0].calls, 0);
    assert_i64_eq(c0->finished, 0);
    advance_ms(5700); /* 5.8 s of attentive silence */
    assert_i64_eq(c0->finished, 0);
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[0], "0");
    assert_i64_eq(fk_nconns, 1);

    SUBMIT(S1, "1", &recs[1]);
    settle();
    fk_now_us += 7000 * 1000; /* another stall, and this time no answer */
    turn();
    settle();
    assert_i64_eq(recs[1].calls, 0);
    advance_ms(5800);
    assert_i64_eq(recs[1].calls, 0);
    advance_ms(300);
    assert_failed(&recs[1], MKD_EUNAVAILABLE);
    assert_i64_eq(c0->finished, 1);
}

static void test_flush_backpressure_waits_for_writable(void **state)
{
    create(options());
    PGconn *c0 = fk_conns[0];
    c0->flush_pending = 1; /* the first PQflush cannot send everything */
    SUBMIT(S1, "0", &recs[0]);
    settle();
    assert_i64_eq(c0->flushes, 2); /* flushed again once writable */
    srv_answer_all(c0);
    settle();
    assert_ok(&recs[0], "0");
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_opens_base_connections),
        T(test_result_delivered_once_never_inside_query),
        T(test_dispatch_spreads_then_fills_up_to_pipeline_depth),
        T(test_overflow_opened_only_when_all_ready_are_full),
        T(test_overflow_attempts_one_at_a_time),
        T(test_idle_overflow_closed_after_idle_ms),
        T(test_waiters_fifo_and_bounded),
        T(test_waiter_times_out_with_ebusy_once),
        T(test_unavailable_at_once_while_db_down),
        T(test_query_during_outage_never_called_back_inside_query),
        T(test_waiters_fail_when_connect_attempt_fails),
        T(test_lost_connection_fails_only_its_inflight_and_is_replaced),
        T(test_callback_can_submit_and_is_never_called_inside_it),
        T(test_statement_prepared_once_per_connection),
        T(test_prepare_off_sends_unnamed_statements),
        T(test_failed_prepare_fails_query_and_is_retried),
        T(test_prepare_cancelled_by_timeout_is_unavailable),
        T(test_query_errors_map_sqlstate_and_keep_connection),
        T(test_stats_follow_connection_states),
        T(test_destroy_fails_inflight_and_waiting_once),
        T(test_unanswered_query_past_statement_timeout_drops_connection),
        T(test_flush_backpressure_waits_for_writable),
        T(test_answer_unread_when_watchdog_fires_is_delivered),
        T(test_stalled_loop_does_not_blame_the_database),
        T(test_stalled_loop_does_not_time_out_a_waiter),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
