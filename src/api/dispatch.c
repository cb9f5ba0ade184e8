#include "api/dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api/flight.h"
#include "core/error.h"
#include "core/jwt.h"
#include "core/log.h"
#include "http/body.h"

static const config_t *cfg;
static const route_t *routes;
static int nroutes;

void api_dispatch_routes(const route_t *r, int n)
{
    routes = r;
    nroutes = n;
}
static const db_stmt_t *st_is_admin;

const config_t *api_config(void)
{
    return cfg;
}

void api_id_text(int64_t id, char out[24])
{
    snprintf(out, 24, "%lld", (long long)id);
}

int api_path_id(rctx_t *r, int idx, const char *what, int64_t *out)
{
    if (parse_id(r->params[idx], out) == 0)
        return 0;
    slice_t s = r->params[idx];
    reply_error(r, MKD_ENOTFOUND, "%s %.*s not found", what, (int)(s.len > 40 ? 40 : s.len), s.ptr);
    return -1;
}

int api_outcome(const PGresult *res, int c)
{
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, c))
        return MKD_EINTERNAL;
    return mkd_from_outcome(PQgetvalue(res, 0, c));
}

int api_outcome_or_reply(rctx_t *r, const PGresult *res, int c, const api_refusal_t *refusals)
{
    int rc = api_outcome(res, c);
    if (rc == MKD_OK)
        return 0;
    const api_refusal_t *f = refusals;
    while (f->err != 0 && f->err != rc)
        f++;
    if (f->err == 0) {
        reply_error(r, MKD_EINTERNAL, "%s %s: unexpected outcome \"%s\"", r->route->name, r->route->pattern,
                    PQntuples(res) > 0 ? PQgetvalue(res, 0, c) : "(no row)");
    } else if (rc == MKD_EINVAL) {
        if (f->field != NULL)
            verr_add(&r->verr, f->field, "%s", f->detail);
        else
            verr_add(&r->verr, PQgetvalue(res, 0, c + 1), "%s", PQgetvalue(res, 0, c + 2));
        reply_invalid(r);
    } else {
        /* The detail names the resource as the client sent it. */
        char id[48];
        snprintf(id, sizeof(id), "%.*s", (int)(r->params[0].len > 40 ? 40 : r->params[0].len),
                 r->params[0].ptr);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        reply_error(r, rc, f->detail, id);
#pragma GCC diagnostic pop
    }
    return -1;
}

/* ---- queries ---------------------------------------------------------------------- */

/* ---- read replicas (S4, B2, B3; docs/design.md "Read routing") ---------------------- */

static const db_stmt_t *st_write_lsn;
static const db_stmt_t *st_stamp; /* the outage store's probe (api/outage.h) */

#define LSN_COOKIE     "mkd_lsn"
#define LSN_COOKIE_LEN (sizeof(LSN_COOKIE) - 1)

/* The WAL position this client's last write left in its cookie: its reads
 * need a replica that has replayed it. 0 without one; DB_LSN_PRIMARY for
 * "p" (a write whose LSN is unknown). A malformed value counts as none: it
 * can only have come from the client itself. */
static uint64_t cookie_lsn(rctx_t *r)
{
    size_t n;
    const char *v = rctx_header(r, "cookie", &n);
    for (size_t i = 0; v != NULL && i + LSN_COOKIE_LEN < n; i++) {
        if ((i > 0 && v[i - 1] != ' ' && v[i - 1] != ';') ||
            memcmp(v + i, LSN_COOKIE "=", LSN_COOKIE_LEN + 1))
            continue;
        const char *p = v + i + LSN_COOKIE_LEN + 1, *end = v + n;
        if (p < end && *p == 'p')
            return DB_LSN_PRIMARY;
        uint64_t x = 0;
        int digits = 0;
        for (; p < end && *p != ';' && *p != ' '; p++, digits++) {
            int d = (*p >= '0' && *p <= '9') ? *p - '0' : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10 : -1;
            if (d < 0 || digits >= 16)
                return 0;
            x = x * 16 + (uint64_t)d;
        }
        return x;
    }
    return 0;
}

/* The client's read-your-writes LSN, when replicas are in use. */
static uint64_t read_need(rctx_t *r)
{
    return api_worker(r->w)->nreplicas > 0 ? cookie_lsn(r) : 0;
}

/* Where a query goes: writes and DB_PRIMARY routes to the primary; DB_READ
 * routes to a usable replica that has replayed `need`, else the primary. */
static db_pool_t *pool_for(rctx_t *r, uint64_t need)
{
    api_worker_t *aw = api_worker(r->w);
    if (aw->nreplicas == 0 || r->route == NULL || r->route->db != DB_READ)
        return aw->primary;
    int i = db_replicas_pick(aw->replicas, need, &aw->rr);
    return i >= 0 ? aw->replicas[i] : aw->primary;
}

/* ---- admission: every query of a request passes here -------------------------------- */

typedef struct db_call {
    admission_item_t item; /* first: the queue links */
    rctx_t *r;
    admission_t *adm;
    const db_stmt_t *st;
    const char **params; /* copies in the request pool */
    db_result_cb cb;
    void *arg;
    uint64_t start_us;
    uint64_t need;   /* the WAL position a replica must have replayed */
    db_pool_t *pool; /* where it was sent */
    int retried;     /* a replica failed it; sent again to the primary */
} db_call_t;

static void call_start(db_call_t *c);
static void on_call_done(void *arg, PGresult *res, int err);

static admission_t *admission_of(rctx_t *r)
{
    api_worker_t *aw = api_worker(r->w);
    long i = r->route != NULL && routes != NULL ? r->route - routes : -1;
    return &aw->admission[i >= 0 && i < nroutes ? i : aw->nadmission - 1];
}

/* Queued work that waited past its deadline: 503 now, not after seconds. */
static void refuse_expired(admission_t *a)
{
    admission_item_t *it;
    while ((it = admission_expired(a, server_now_us())) != NULL) {
        db_call_t *c = (db_call_t *)it;
        c->cb(c->arg, NULL, MKD_EBUSY);
    }
}

/* While anything waits, look every 10 ms for what waited too long. */
static void arm_expiry(worker_t *w)
{
    api_worker_t *aw = api_worker(w);
    int queued = 0;
    for (int i = 0; i < aw->nadmission; i++)
        queued += aw->admission[i].queued;
    if (queued > 0 && !h2o_timeout_is_linked(&aw->expiry))
        h2o_timeout_link(w->loop, &aw->expiry_timeout, &aw->expiry);
}

static void on_expiry(h2o_timeout_entry_t *entry)
{
    api_worker_t *aw = H2O_STRUCT_FROM_MEMBER(api_worker_t, expiry, entry);
    for (int i = 0; i < aw->nadmission; i++)
        refuse_expired(&aw->admission[i]);
    arm_expiry(aw->w);
}

/* A read a replica could not answer — gone, or a query cancelled by a
 * recovery conflict — is asked again of the primary, once (B5): reads are
 * idempotent, and a replica going down is not the client's problem. */
static int retry_on_primary(db_call_t *c, PGresult *res, int err)
{
    api_worker_t *aw = api_worker(c->r->w);
    if (c->retried || c->pool == aw->primary)
        return 0;
    const char *state = err == MKD_EDB && res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (err != MKD_EUNAVAILABLE && !(state != NULL && strcmp(state, "40001") == 0))
        return 0;
    c->retried = 1;
    c->pool = aw->primary;
    return db_pool_query(aw->primary, c->st, (const char *const *)c->params, on_call_done, c) == 0;
}

static void on_call_done(void *arg, PGresult *res, int err)
{
    db_call_t *c = arg;
    if (err != 0 && retry_on_primary(c, res, err))
        return;
    uint64_t now = server_now_us(), rtt = now - c->start_us, lag = server_loop_lag_us(c->r->w);
    /* The database's latency, not the loop's: a late loop says nothing
     * about how many queries PostgreSQL can usefully run. */
    admission_item_t *next = admission_done(c->adm, rtt > lag ? rtt - lag : 0, now);
    admission_t *a = c->adm;
    c->cb(c->arg, res, err);
    if (next != NULL)
        call_start((db_call_t *)next);
    refuse_expired(a);
}

/* Sends a call that holds a slot; a pool refusal frees the slot and fails
 * the call through its callback. */
static void call_start(db_call_t *c)
{
    c->start_us = server_now_us();
    c->pool = pool_for(c->r, c->need);
    int rc = db_pool_query(c->pool, c->st, (const char *const *)c->params, on_call_done, c);
    if (rc == 0)
        return;
    admission_item_t *next = admission_done(c->adm, ADMISSION_NO_SAMPLE, server_now_us());
    c->cb(c->arg, NULL, rc);
    if (next != NULL)
        call_start((db_call_t *)next);
}

/* The statement's parameters copied into the request pool: a query may
 * wait (admission queue, single flight) past the handler's stack. */
static const char **pool_params(rctx_t *r, const db_stmt_t *st, const char *const *params)
{
    const char **copy = h2o_mem_alloc_pool(&r->req->pool, sizeof(char *) * (size_t)(st->nparams + 1));
    for (int i = 0; i < st->nparams; i++) {
        copy[i] = NULL;
        if (params != NULL && params[i] != NULL) {
            size_t n = strlen(params[i]) + 1;
            char *p = h2o_mem_alloc_pool(&r->req->pool, n);
            memcpy(p, params[i], n);
            copy[i] = p;
        }
    }
    return copy;
}

/* Like db_pool_query, through the worker's admission control: 0 (cb runs
 * later, exactly once) or a refusal (MKD_EBUSY / the pool's; cb never runs).
 * `params` must live as long as the request (pool_params). */
static int db_submit(rctx_t *r, const db_stmt_t *st, const char **params, uint64_t need, db_result_cb cb,
                     void *arg)
{
    db_call_t *c = h2o_mem_alloc_pool(&r->req->pool, sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->r = r;
    c->need = need;
    c->adm = admission_of(r);
    c->st = st;
    c->cb = cb;
    c->arg = arg;
    c->params = params;
    refuse_expired(c->adm);
    switch (admission_enter(c->adm, &c->item, server_now_us())) {
    case ADMIT_RUN:
        c->start_us = server_now_us();
        {
            c->pool = pool_for(r, need);
            int rc = db_pool_query(c->pool, st, (const char *const *)c->params, on_call_done, c);
            if (rc != 0) {
                admission_item_t *next = admission_done(c->adm, ADMISSION_NO_SAMPLE, server_now_us());
                if (next != NULL)
                    call_start((db_call_t *)next);
                return rc;
            }
        }
        return 0;
    case ADMIT_QUEUED:
        arm_expiry(r->w);
        return 0;
    }
    return MKD_EBUSY;
}

/* Answers a query that failed (err < 0) or was refused. */
static void reply_db_failure(rctx_t *r, int err, PGresult *res)
{
    if (err == MKD_EDB && res != NULL) {
        /* Names only, never PostgreSQL's messages: its DETAIL quotes row
         * data, its primary message may quote a value (db_log_error). */
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        if (state == NULL)
            state = "unknown";
        /* A constraint the request broke (class 23) is the client's
         * conflict, not our failure; but one that C did not check first,
         * so it is worth a warning. */
        if (strncmp(state, "23", 2) == 0) {
            char rid[64];
            snprintf(rid, sizeof(rid), "%.*s", (int)r->request_id.len, r->request_id.ptr);
            log_fields(LOG_WARN,
                       (const char *const[]){
                           "request_id", rid, "http.route", r->route != NULL ? r->route->pattern : NULL,
                           "db.response.status_code", state, "db.constraint.name", constraint, NULL},
                       "request refused by a database constraint");
            reply_error(r, MKD_ECONFLICT, "the request conflicts with existing data (constraint %s)",
                        constraint != NULL ? constraint : "unnamed");
            return;
        }
        reply_error(r, MKD_EDB, "database error: SQLSTATE %s%s%s", state,
                    constraint != NULL ? ", constraint " : "", constraint != NULL ? constraint : "");
        return;
    }
    switch (err) {
    case MKD_EBUSY:
        reply_error(r, MKD_EBUSY, "the database is overloaded; retry shortly");
        return;
    case MKD_EUNAVAILABLE:
    case MKD_ESHUTDOWN:
        reply_error(r, MKD_EUNAVAILABLE, "a dependency is unavailable; retry shortly");
        return;
    }
    reply_error(r, err, "query failed");
}

typedef struct query_call {
    rctx_t *r;
    api_result_fn on_result;
} query_call_t;

static void on_query(void *arg, PGresult *res, int err)
{
    query_call_t *q = arg;
    if (err != 0)
        reply_db_failure(q->r, err, res);
    else
        q->on_result(q->r, res);
}

void api_query(rctx_t *r, const db_stmt_t *st, const char *const *params, api_result_fn on_result)
{
    query_call_t *q = h2o_mem_alloc_pool(&r->req->pool, sizeof(*q));
    q->r = r;
    q->on_result = on_result;
    int rc = db_submit(r, st, pool_params(r, st, params), read_need(r), on_query, q);
    if (rc != 0)
        reply_db_failure(r, rc, NULL);
}

/* ---- reads: lookup → single flight → query → render → store → answer ------------- */

typedef struct read_state {
    rctx_t *r;
    const db_stmt_t *stmt;
    const char **params;
    api_render_fn render;
    const char *missing;
    char key[CACHE_KEY_MAX];
    cache_tags_t tags;
    cache_get_op_t get;
    cache_versions_t versions;
    int lead;                  /* this request queries for the flight `flight_id` */
    flight_mode_t flight_mode; /* FLIGHT_SHARE: a miss (store the fill); FLIGHT_GATHER: a bypass */
    char flight_id[FLIGHT_ID_MAX];
    uint64_t fill_start_us;
    uint64_t need; /* replicas: the WAL position the query must see */
    flight_waiter_t waiter;
    /* Redis out (api/outage.h): a stored body waiting for its check, and
     * the stamp it was stored under — or, for a bypass's leader, the stamp
     * its query is labelled with (labelled: there is one). */
    outage_waiter_t checked;
    const db_stmt_t *batch; /* api_read_t.batch */
    batch_item_t batched;
    flight_body_t *stored;
    int labelled;
    char label[OUTAGE_STAMP_MAX];
} read_state_t;

enum { COUNT_HIT, COUNT_MISS, COUNT_BYPASS };

static void count(rctx_t *r, int which)
{
    uint64_t *c = &r->w->metrics.cache[which];
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static int ttl_of(const cache_policy_t *p)
{
    switch (p->ttl) {
    case TTL_REFERENCE:
        return cfg->cache_ttl_reference;
    case TTL_POPULAR_SELLERS:
        return cfg->cache_ttl_popular_sellers;
    case TTL_PRODUCTS:
        break;
    }
    return cfg->cache_ttl_products;
}

static void reply_shared(rctx_t *r, const char *body, size_t len)
{
    jbuf_t b = {(char *)body, len, len};
    reply_json(r, 200, &b);
}

/* The answer to a read that failed: the query's own refusal (a render
 * refusal such as 404), or the database's. */
static void reply_read_failure(read_state_t *rs, int err, PGresult *res)
{
    if (err == MKD_ENOTFOUND || err == MKD_EUNAUTH)
        reply_error(rs->r, err, "%s", rs->missing);
    else
        reply_db_failure(rs->r, err, res);
}

static void lead_failed(read_state_t *rs, int err)
{
    if (rs->lead) {
        rs->lead = 0;
        flight_finish(rs->flight_id, rs->flight_mode, err, NULL, 0);
    }
}

static void on_read_result(void *arg, PGresult *res, int err)
{
    read_state_t *rs = arg;
    rctx_t *r = rs->r;
    if (err != 0) {
        lead_failed(rs, err);
        reply_read_failure(rs, err, res);
        return;
    }
    jbuf_t *b = reply_buffer(r);
    int rc = rs->render(r, res, b);
    if (rc != 0) {
        lead_failed(rs, rc);
        reply_read_failure(rs, rc, NULL);
        return;
    }
    if (rs->lead) {
        if (rs->flight_mode == FLIGHT_SHARE) {
            uint64_t fill_ms = (server_now_us() - rs->fill_start_us) / 1000 + 1;
            cache_put(api_worker(r->w)->cache, rs->key, &rs->versions, ttl_of(r->route->cache), b->data,
                      b->len, fill_ms);
        } else if (rs->labelled) {
            outage_store_put(rs->key, rs->label, b->data, b->len, ttl_of(r->route->cache), server_now_us());
        }
        rs->lead = 0;
        flight_finish(rs->flight_id, rs->flight_mode, 0, b->data, b->len);
    }
    reply_json(r, 200, b);
}

static void on_batched(batch_item_t *it, PGresult *res, int err)
{
    on_read_result(it->arg, res, err);
}

/* A batch goes out on behalf of its first read, with that request's
 * admission and memory: the request stays valid until it is answered, which
 * happens in the statement's own callback. */
static int batch_send(batch_item_t *first, const db_stmt_t *st, const char *ids, db_result_cb cb, void *arg)
{
    read_state_t *rs = first->arg;
    const char **params = h2o_mem_alloc_pool(&rs->r->req->pool, sizeof(*params));
    params[0] = h2o_strdup(&rs->r->req->pool, ids, SIZE_MAX).base;
    return db_submit(rs->r, st, params, 0, cb, arg);
}

/* The worker's batcher for `st` (made on first use), or NULL. */
static batcher_t *batcher_of(api_worker_t *aw, const db_stmt_t *st)
{
    if (st == NULL)
        return NULL;
    for (int i = 0; i < aw->nbatchers; i++)
        if (aw->batchers[i].stmt == st)
            return &aw->batchers[i];
    if (aw->nbatchers == API_BATCHERS)
        return NULL;
    batcher_t *b = &aw->batchers[aw->nbatchers];
    batcher_init(b, aw->w->loop, &aw->batch_pace, st, batch_send);
    __atomic_store_n(&aw->nbatchers, aw->nbatchers + 1, __ATOMIC_RELEASE); /* /metrics reads it */
    return b;
}

static void run_query(read_state_t *rs)
{
    /* A bypass's query, sent after the probe that returned the label
     * finished: its body may be stored under that label (api/outage.h). */
    api_worker_t *aw = api_worker(rs->r->w);
    if (rs->lead && rs->flight_mode == FLIGHT_GATHER && aw->store_on)
        rs->labelled = outage_label(&aw->prober, rs->label) == 0;
    /* A bypass's read by id: with the others of its kind (batch.h). */
    batcher_t *b = aw->batch_on && rs->lead && rs->flight_mode == FLIGHT_GATHER && rs->need == 0
                       ? batcher_of(aw, rs->batch)
                       : NULL;
    if (b != NULL) {
        snprintf(rs->batched.id, sizeof(rs->batched.id), "%s", rs->params[0]);
        rs->batched.done = on_batched;
        rs->batched.arg = rs;
        batcher_add(b, &rs->batched);
        return;
    }
    int rc = db_submit(rs->r, rs->stmt, rs->params, rs->need, on_read_result, rs);
    if (rc != 0) {
        lead_failed(rs, rc);
        reply_db_failure(rs->r, rc, NULL);
    }
}

/* A waiter's worker: answer with the shared result, or query for everyone
 * gathered with it. */
static void on_flight_done(flight_waiter_t *w, flight_body_t *body, int err, int lead)
{
    read_state_t *rs = w->arg;
    if (lead) {
        rs->lead = 1;
        rs->fill_start_us = server_now_us();
        run_query(rs);
    } else if (body != NULL) {
        if (rs->flight_mode == FLIGHT_SHARE) {
            rs->r->x_cache = "HIT";
            count(rs->r, COUNT_HIT);
        }
        reply_shared(rs->r, body->data, body->len);
        flight_body_release(body);
    } else {
        reply_read_failure(rs, err, NULL);
    }
}

/* Joins (or leads) the flight of this read; id is "<F|B>|key[|versions]". */
static void join_flight(read_state_t *rs, flight_mode_t mode)
{
    rctx_t *r = rs->r;
    rs->flight_mode = mode;
    size_t n = (size_t)snprintf(rs->flight_id, sizeof(rs->flight_id), "%c|%s",
                                mode == FLIGHT_SHARE ? 'F' : 'B', rs->key);
    for (int i = 0; mode == FLIGHT_SHARE && i < rs->versions.n && n < sizeof(rs->flight_id); i++)
        n += (size_t)snprintf(rs->flight_id + n, sizeof(rs->flight_id) - n, "|%s", rs->versions.v[i]);
    /* A reader that must see its own write shares only with readers that
     * need as much: a query sent for less might run on an older replica. */
    if (rs->need != 0 && n < sizeof(rs->flight_id))
        snprintf(rs->flight_id + n, sizeof(rs->flight_id) - n, "|L%llx", (unsigned long long)rs->need);
    rs->waiter.receiver = &api_worker(r->w)->flights;
    rs->waiter.wake = on_flight_done;
    rs->waiter.arg = rs;
    flight_body_t *done = NULL;
    switch (flight_join(rs->flight_id, mode, &rs->waiter, &done)) {
    case FLIGHT_DONE:
        r->x_cache = "HIT";
        count(r, COUNT_HIT);
        reply_shared(r, done->data, done->len);
        flight_body_release(done);
        return;
    case FLIGHT_WAIT:
        return; /* on_flight_done answers */
    case FLIGHT_LEAD:
        break;
    }
    if (mode == FLIGHT_SHARE) {
        r->x_cache = "MISS";
        count(r, COUNT_MISS);
    }
    rs->lead = 1;
    rs->fill_start_us = server_now_us();
    run_query(rs);
}

/* A stored body's check: the stamp of a probe sent after the request
 * arrived. Equal to the body's label: nothing committed since its query was
 * sent, so it is what a query would read now (B2). */
static void on_checked(outage_waiter_t *w, const char *stamp)
{
    read_state_t *rs = w->arg;
    flight_body_t *body = rs->stored;
    rs->stored = NULL;
    int current = stamp != NULL && strcmp(stamp, rs->label) == 0;
    if (stamp != NULL)
        outage_store_count_hit(current);
    if (current)
        reply_shared(rs->r, body->data, body->len);
    else
        join_flight(rs, FLIGHT_GATHER);
    flight_body_release(body);
}

static void on_cached(void *arg, cache_result_t result, const char *body, size_t len,
                      const cache_versions_t *ver)
{
    read_state_t *rs = arg;
    rctx_t *r = rs->r;
    switch (result) {
    case CACHE_HIT:
        r->x_cache = "HIT";
        count(r, COUNT_HIT);
        reply_shared(r, body, len);
        return;
    case CACHE_BYPASS:
        /* Redis could not be asked: a stored body the database's stamp
         * says is current, else still one query per key at a time. */
        r->x_cache = "BYPASS";
        count(r, COUNT_BYPASS);
        if (api_worker(r->w)->store_on && rs->need == 0 &&
            (rs->stored = outage_store_get(rs->key, rs->label, server_now_us())) != NULL) {
            rs->checked.cb = on_checked;
            rs->checked.arg = rs;
            outage_probe_wait(&api_worker(r->w)->prober, &rs->checked);
            return;
        }
        join_flight(rs, FLIGHT_GATHER);
        return;
    case CACHE_MISS:
        /* Counted as a miss by the leader only: the others get its fill. */
        rs->versions = *ver;
        if (api_worker(r->w)->nreplicas > 0) {
            /* B3: the fill is stored under these versions, so it must read
             * a node that has replayed every write they stand for
             * (docs/cache.md "Replicas"). */
            uint64_t lsn;
            if (cache_versions_lsn(ver, &lsn) != 0) {
                rs->need = DB_LSN_PRIMARY;
                cache_epoch_lsn_wanted();
            } else if (lsn > rs->need) {
                rs->need = lsn;
            }
        }
        join_flight(rs, FLIGHT_SHARE);
        return;
    }
}

void api_read(rctx_t *r, const api_read_t *plan)
{
    read_state_t *rs = h2o_mem_alloc_pool(&r->req->pool, sizeof(*rs));
    memset(rs, 0, sizeof(*rs));
    rs->r = r;
    rs->stmt = plan->stmt;
    rs->render = plan->render;
    rs->missing =
        plan->missing != NULL ? h2o_strdup(&r->req->pool, plan->missing, SIZE_MAX).base : "not found";
    rs->params = pool_params(r, plan->stmt, plan->params);
    rs->batch = plan->batch;
    rs->need = read_need(r);
    if (r->route->cache == NULL) {
        run_query(rs);
        return;
    }
    if (plan->key == NULL || plan->key[0] == '\0' || plan->tags == NULL) {
        /* Not cached (pages after the first): read on its own. */
        r->x_cache = "BYPASS";
        count(r, COUNT_BYPASS);
        run_query(rs);
        return;
    }
    snprintf(rs->key, sizeof(rs->key), "%s", plan->key);
    rs->tags = *plan->tags;
    cache_get(api_worker(r->w)->cache, &rs->get, rs->key, &rs->tags, on_cached, rs);
}

void api_read_by_id(rctx_t *r, const char *what, const char *key_prefix, const db_stmt_t *st,
                    const db_stmt_t *batch, api_render_fn render,
                    void (*tags_of)(cache_tags_t *t, int64_t id))
{
    int64_t id;
    if (api_path_id(r, 0, what, &id) != 0)
        return;
    char v[24], key[64], missing[96];
    api_id_text(id, v);
    snprintf(key, sizeof(key), "%s:%s", key_prefix, v);
    snprintf(missing, sizeof(missing), "%s %s not found", what, v);
    cache_tags_t tags;
    tags_of(&tags, id);
    api_read(r, &(api_read_t){st, (const char *[]){v}, render, missing, key, &tags, batch});
}

/* ---- writes ------------------------------------------------------------------------ */

typedef struct written {
    rctx_t *r;
    int status;
    const char *content_type;
    char *body;
    size_t len;
    cache_tags_t tags;
    cache_inval_op_t inval;
} written_t;

static void on_invalidated(void *arg)
{
    written_t *wr = arg;
    reply_body(wr->r, wr->status, wr->content_type, wr->body, wr->len);
}

/* Read-your-writes (B2) without anything the client must echo: the write's
 * answer sets a cookie with a WAL position at or after its commit, which a
 * browser sends with its next reads to any instance (docs/design.md). It
 * lives long enough that once it is gone every usable replica (lag <=
 * DB_REPLICA_MAX_LAG_MS, polled every 0.5 s) has replayed the write. */
static void set_lsn_cookie(rctx_t *r, uint64_t lsn)
{
    char v[128];
    int max_age = 2 * ((cfg->db_replica_max_lag_ms + 999) / 1000) + 3;
    int n = lsn != 0 ? snprintf(v, sizeof(v), LSN_COOKIE "=%llx; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax",
                                (unsigned long long)lsn, max_age)
                     : snprintf(v, sizeof(v), LSN_COOKIE "=p; Max-Age=%d; Path=/; HttpOnly; SameSite=Lax",
                                max_age);
    reply_header(r, "set-cookie", v, (size_t)n);
}

static void invalidate_and_reply(written_t *wr, uint64_t lsn)
{
    if (wr->tags.n == 0) {
        on_invalidated(wr);
        return;
    }
    cache_invalidate(api_worker(wr->r->w)->cache, &wr->inval, &wr->tags, lsn, on_invalidated, wr);
}

/* pg_current_wal_insert_lsn() asked after the commit was acknowledged: at or
 * after the commit record's end, on whichever connection it runs. */
static void on_write_lsn(void *arg, PGresult *res, int err)
{
    written_t *wr = arg;
    uint64_t lsn = 0;
    if (err != 0 || PQntuples(res) != 1 || db_lsn_parse(PQgetvalue(res, 0, 0), &lsn) != 0)
        lsn = 0; /* unknown: the cookie says "primary" and the cache's epoch changes */
    set_lsn_cookie(wr->r, lsn);
    invalidate_and_reply(wr, lsn);
}

void api_reply_written(rctx_t *r, const cache_tags_t *tags, int status, const char *content_type,
                       const char *body, size_t len)
{
    api_worker_t *aw = api_worker(r->w);
    if ((tags == NULL || tags->n == 0) && aw->nreplicas == 0) {
        reply_body(r, status, content_type, body, len);
        return;
    }
    written_t *wr = h2o_mem_alloc_pool(&r->req->pool, sizeof(*wr));
    wr->r = r;
    wr->status = status;
    wr->content_type = content_type;
    wr->len = len;
    wr->body = h2o_mem_alloc_pool(&r->req->pool, len + 1);
    memcpy(wr->body, body, len);
    wr->tags.n = 0;
    if (tags != NULL)
        wr->tags = *tags;
    if (aw->nreplicas == 0) {
        invalidate_and_reply(wr, 0);
        return;
    }
    /* Straight to the pool, not through admission: the write has committed
     * and must be answered. */
    if (db_pool_query(aw->primary, st_write_lsn, NULL, on_write_lsn, wr) != 0)
        on_write_lsn(wr, NULL, MKD_EUNAVAILABLE);
}

/* ---- the route's policies ------------------------------------------------------------ */

/* The bearer token: 0 with r->user_id set, or answers 401 and returns -1. */
static int authenticate(rctx_t *r)
{
    size_t n;
    const char *v = rctx_header(r, "authorization", &n);
    if (v == NULL) {
        reply_error(r, MKD_EUNAUTH, "authentication required: send Authorization: Bearer <token>");
        return -1;
    }
    jwt_claims_t c;
    if (n < 8 || strncasecmp(v, "Bearer ", 7) != 0 ||
        jwt_verify((const unsigned char *)cfg->jwt_secret, strlen(cfg->jwt_secret), v + 7, n - 7,
                   (int64_t)time(NULL), &c) != 0) {
        reply_error(r, MKD_EUNAUTH, "the token is missing, invalid or expired");
        return -1;
    }
    r->user_id = c.sub;
    return 0;
}

static void release_json(void *p)
{
    json_decref(*(json_t **)p);
}

/* BODY_JSON: parses the object into r->body; answers 400/415 and returns -1. */
static int read_json_body(rctx_t *r)
{
    char detail[256];
    size_t ct_len;
    const char *ct = rctx_header(r, "content-type", &ct_len);
    int err = 0;
    json_t *obj =
        body_parse(ct, ct_len, r->req->entity.base, r->req->entity.len, &err, detail, sizeof(detail));
    if (obj == NULL) {
        reply_error(r, err, "%s", detail);
        return -1;
    }
    /* Released with the request's memory pool, however the request ends. */
    json_t **slot = h2o_mem_alloc_shared(&r->req->pool, sizeof(*slot), release_json);
    *slot = obj;
    r->body = obj;
    return 0;
}

static void on_admin(rctx_t *r, PGresult *res)
{
    if (PQntuples(res) != 1 || PQgetvalue(res, 0, 0)[0] != 't') {
        reply_error(r, MKD_EFORBIDDEN, "only an administrator may %.*s %s", (int)r->req->method.len,
                    r->req->method.base, r->route->pattern);
        return;
    }
    r->route->handler(r);
}

void api_dispatch(rctx_t *r)
{
    const route_t *rt = r->route;
    r->cacheable = rt->cache != NULL && !rt->cache->server_only;
    r->cache_control = rt->cache != NULL ? rt->cache->cache_control : NULL;
    /* Before anything else: a body past the route's limit is not read on. */
    if (rt->body != BODY_NONE && r->req->entity.len > route_body_max(rt->body)) {
        if (rt->body == BODY_IMAGE)
            reply_error(r, MKD_ETOOBIG, "an image may be at most %zu bytes (5 MiB)",
                        route_body_max(rt->body));
        else
            reply_error(r, MKD_ETOOBIG, "request body too large");
        return;
    }
    if (rt->auth != AUTH_NONE && authenticate(r) != 0)
        return;
    if (rt->body == BODY_JSON && read_json_body(r) != 0)
        return;
    if (rt->auth == AUTH_ADMIN) {
        /* Read now, not from the token: revoking an administrator takes
         * effect at once. Reference writes are rare; one round trip. */
        char uid[24];
        api_id_text(r->user_id, uid);
        const char *params[] = {uid};
        api_query(r, st_is_admin, params, on_admin);
        return;
    }
    rt->handler(r);
}

/* ---- life cycle ----------------------------------------------------------------------- */

static cache_options_t cache_options(const config_t *c)
{
    return (cache_options_t){
        .redis_url = c->redis_url,
        .cluster_nodes = c->redis_cluster_nodes,
        .password = c->redis_password,
        .timeout_ms = c->cache_timeout_ms,
        .wait_replicas = c->cache_wait_replicas,
        .test_store_gate = c->cache_test_store_gate,
        .lsn_versions = db_replicas_count() > 0,
    };
}

/* Long enough for a connect and a WAIT; a Redis that is down costs the
 * start-up this much once, then the workers retry on their tick. */
#define CACHE_START_PATIENCE_MS 2000

void api_dispatch_init(const config_t *c)
{
    cfg = c;
    char err[128];
    int n = db_replicas_init(c->db_read_replica_url, c->db_replica_max_lag_ms, err, sizeof(err));
    if (n < 0) {
        log_error("%s; reads use the primary", err);
    } else if (n > 0) {
        for (int i = 0; i < n; i++)
            log_info(
                "db %s: read replica %s (pool %d per instance, max lag %d ms; started in the background, "
                "used once it answers)",
                db_replica_label(i), db_replica_display(i), c->db_replica_pool_size,
                c->db_replica_max_lag_ms);
    }
    st_write_lsn = db_stmt_register("SELECT pg_current_wal_insert_lsn()::text", 0);
    st_stamp = outage_register_stmt();
    outage_store_init((size_t)c->outage_store_mb << 20);
    cache_global_init(c->redis_url != NULL || c->redis_cluster_nodes != NULL);
    cache_options_t co = cache_options(c);
    cache_start(&co, CACHE_START_PATIENCE_MS);
    st_is_admin =
        db_stmt_register("SELECT EXISTS (SELECT 1 FROM users u WHERE u.id = $1::int8 AND u.is_admin)", 1);
}

void api_dispatch_dispose(void)
{
    flight_dispose_all();
    outage_store_dispose();
    db_replicas_dispose();
}

int api_worker_init(worker_t *w)
{
    api_worker_t *aw = calloc(1, sizeof(*aw));
    if (aw == NULL)
        abort();
    w->app = aw;
    /* The instance-wide pool is divided among the workers (S3). */
    int n = w->server->nworkers;
    db_pool_options_t po = {
        .conninfo = cfg->database_url,
        .label = "primary",
        .base = (cfg->db_pool_size + n - 1 - w->index) / n,
        .overflow = (cfg->db_max_overflow + n - 1 - w->index) / n,
        .pipeline_depth = cfg->db_pipeline_depth,
        .timeout_ms = cfg->db_pool_timeout_ms,
        .idle_ms = cfg->db_pool_idle_ms,
        .max_waiters = cfg->db_pool_queue,
        .prepare = cfg->db_prepare,
        .statement_timeout_ms = cfg->db_statement_timeout_ms,
    };
    if (po.base < 1)
        po.base = 1;
    aw->primary = db_pool_create(w->ctx.loop, &po);
    /* Each replica's pool: DB_REPLICA_POOL_SIZE (default DB_POOL_SIZE) and
     * DB_MAX_OVERFLOW per instance, divided among the workers like the
     * primary's. A replica that is down only costs its reconnect backoff. */
    aw->nreplicas = db_replicas_count();
    for (int i = 0; i < aw->nreplicas; i++) {
        db_pool_options_t ro = po;
        ro.conninfo = db_replica_conninfo(i);
        ro.label = db_replica_label(i);
        ro.base = (cfg->db_replica_pool_size + n - 1 - w->index) / n;
        if (ro.base < 1)
            ro.base = 1;
        aw->replicas[i] = db_pool_create(w->ctx.loop, &ro);
    }
    cache_options_t co = cache_options(cfg);
    aw->cache = cache_worker_create(w->loop, &co);
    h2o_multithread_register_receiver(w->ctx.queue, &aw->flights, flight_on_messages);
    outage_prober_init(&aw->prober, w->loop, aw->primary, st_stamp);
    h2o_timeout_init(w->loop, &aw->batch_pace, BATCH_INTERVAL_MS);
    /* Stand-ins for a configured Redis that is out; without a Redis every
     * read is its own query, as it always was. */
    int cache_configured = cfg->redis_url != NULL || cfg->redis_cluster_nodes != NULL;
    aw->store_on = cache_configured && cfg->outage_store_mb > 0 && aw->nreplicas == 0;
    aw->batch_on = cache_configured;
    /* Per worker, the most queries the pool could carry at once. */
    int capacity = (po.base + po.overflow) * (cfg->db_pipeline_depth > 0 ? cfg->db_pipeline_depth : 1);
    admission_options_t ao = {
        /* What the pool can carry, fixed: on two shared cores the latency
         * rise of a load step is PostgreSQL's queue, which it absorbs; the
         * gradient (admission_tick) cutting the limit there turned into
         * 503s at 100 connections (0.2-0.6 %, make bench). */
        .initial_limit = capacity,
        .min_limit = capacity,
        .max_limit = capacity,
        .max_queue = cfg->db_pool_queue,
        .normal_timeout_us = (uint64_t)cfg->db_pool_timeout_ms * 1000,
    };
    /* Reads: when even the shortest wait of a 100 ms interval exceeds
     * 10 ms the queue is standing (overload); then it serves the newest
     * first and refuses a read that waited 500 ms. Not sooner, and the
     * queue is as long as the pool's was (DB_POOL_QUEUE): clients that
     * retry at once (no think time, Retry-After ignored) turn fast refusals
     * into a spin that burns the CPU the database needs — with a 1,024
     * queue and 30 ms, 10,000 closed-loop connections got ~2k answers/s
     * and ~67k refusals/s (make bench). Writes (orders) come in bursts that
     * contend on row locks, where latency rises without any overload: a
     * laxer target. */
    admission_options_t reads = ao, writes = ao;
    reads.target_us = 10000, reads.interval_us = 100000, reads.overload_timeout_us = 500000;
    writes.target_us = 100000, writes.interval_us = 1000000, writes.overload_timeout_us = 500000;
    /* One per route, and a last one for work outside any route. */
    aw->nadmission = nroutes + 1;
    aw->admission = calloc((size_t)aw->nadmission, sizeof(admission_t));
    if (aw->admission == NULL)
        abort();
    for (int i = 0; i < aw->nadmission; i++) {
        int read = i < nroutes && routes[i].db == DB_READ;
        admission_init(&aw->admission[i], read ? &reads : &writes, server_now_us());
    }
    aw->w = w;
    h2o_timeout_init(w->loop, &aw->expiry_timeout, 10);
    aw->expiry.cb = on_expiry;
    return 0;
}

void api_worker_dispose(worker_t *w)
{
    api_worker_t *aw = api_worker(w);
    if (aw == NULL)
        return;
    for (int i = 0; i < aw->nreplicas; i++)
        db_pool_destroy(aw->replicas[i]);
    db_pool_destroy(aw->primary);
    outage_prober_dispose(&aw->prober); /* after the pool: its probe's callback has run */
    for (int i = 0; i < aw->nbatchers; i++)
        batcher_dispose(&aw->batchers[i]);
    h2o_timeout_dispose(w->loop, &aw->batch_pace);
    cache_worker_destroy(aw->cache);
    if (h2o_timeout_is_linked(&aw->expiry))
        h2o_timeout_unlink(&aw->expiry);
    h2o_timeout_dispose(w->loop, &aw->expiry_timeout);
    free(aw->admission);
    h2o_multithread_unregister_receiver(w->ctx.queue, &aw->flights);
    free(aw);
    w->app = NULL;
}

void api_dispatch_tick(worker_t *w)
{
    api_worker_t *aw = api_worker(w);
    uint64_t now = server_now_us();
    if (w->index == 0 && aw->nreplicas > 0) {
        db_replicas_poll(aw->primary, aw->replicas, now);
        uint64_t sent_at, lsn = db_primary_lsn(&sent_at);
        cache_epoch_lsn_offer(aw->cache, lsn, sent_at);
    }
    for (int i = 0; i < aw->nadmission; i++) {
        admission_tick(&aw->admission[i], now);
        refuse_expired(&aw->admission[i]);
    }
}

/* The stand-ins for a Redis that is out (outage store, batched reads) and
 * the invalidations it did not confirm, all workers. */
static void render_outage_metrics(jbuf_t *b, server_t *s)
{
    uint64_t probes = 0, batches = 0, batched = 0;
    int stamp_waiters = 0;
    for (int wk = 0; wk < s->nworkers; wk++) {
        api_worker_t *aw = api_worker(&s->workers[wk]);
        if (aw == NULL)
            continue;
        probes += __atomic_load_n(&aw->prober.probes, __ATOMIC_RELAXED);
        stamp_waiters += __atomic_load_n(&aw->prober.nwaiting, __ATOMIC_RELAXED);
        for (int i = 0; i < __atomic_load_n(&aw->nbatchers, __ATOMIC_ACQUIRE); i++) {
            batches += __atomic_load_n(&aw->batchers[i].statements, __ATOMIC_RELAXED);
            batched += __atomic_load_n(&aw->batchers[i].items, __ATOMIC_RELAXED);
        }
    }
    outage_store_stats_t os;
    outage_store_get_stats(&os);
    char line[2048]; /* the outage block with every counter at 20 digits: ~1,100 bytes */
    snprintf(
        line, sizeof(line),
        "# HELP marketd_outage_store_checks_total Bodies of the outage store (Redis out) checked against "
        "the database's stamp, by result.\n# TYPE marketd_outage_store_checks_total counter\n"
        "marketd_outage_store_checks_total{result=\"current\"} %llu\n"
        "marketd_outage_store_checks_total{result=\"stale\"} %llu\n"
        "# HELP marketd_outage_store_entries Bodies in the outage store.\n"
        "# TYPE marketd_outage_store_entries gauge\nmarketd_outage_store_entries %zu\n"
        "# HELP marketd_outage_store_bytes Bytes the outage store holds (OUTAGE_STORE_MB bounds it).\n"
        "# TYPE marketd_outage_store_bytes gauge\nmarketd_outage_store_bytes %zu\n"
        "# HELP marketd_outage_probes_total Stamp queries (pg_current_snapshot) sent to check stored "
        "bodies.\n# TYPE marketd_outage_probes_total counter\nmarketd_outage_probes_total %llu\n"
        "# HELP marketd_outage_stamp_waiters Reads whose stored body waits for the next stamp.\n"
        "# TYPE marketd_outage_stamp_waiters gauge\nmarketd_outage_stamp_waiters %d\n",
        (unsigned long long)os.hits, (unsigned long long)os.stale, os.entries, os.bytes,
        (unsigned long long)probes, stamp_waiters);
    jbuf_puts(b, line);
    uint64_t waited, at_once;
    cache_get_inval_failures(&waited, &at_once);
    snprintf(line, sizeof(line),
             "# HELP marketd_cache_invalidation_failures_total Invalidations Redis did not confirm: after "
             "waiting out their patience, or at once (Redis down or already failing).\n"
             "# TYPE marketd_cache_invalidation_failures_total counter\n"
             "marketd_cache_invalidation_failures_total{waited=\"yes\"} %llu\n"
             "marketd_cache_invalidation_failures_total{waited=\"no\"} %llu\n",
             (unsigned long long)waited, (unsigned long long)at_once);
    jbuf_puts(b, line);
    snprintf(line, sizeof(line),
             "# HELP marketd_read_batches_total Statements that read several ids at once (Redis out).\n"
             "# TYPE marketd_read_batches_total counter\nmarketd_read_batches_total %llu\n"
             "# HELP marketd_read_batched_total Reads answered by such statements.\n"
             "# TYPE marketd_read_batched_total counter\nmarketd_read_batched_total %llu\n",
             (unsigned long long)batches, (unsigned long long)batched);
    jbuf_puts(b, line);
}

void api_render_admission_metrics(jbuf_t *b, server_t *s)
{
    static const char *const names[ADMIT_NCLASSES] = {"read", "write"};
    int limit[ADMIT_NCLASSES] = {0}, inflight[ADMIT_NCLASSES] = {0}, queued[ADMIT_NCLASSES] = {0};
    uint64_t refused[ADMIT_NCLASSES] = {0}, expired[ADMIT_NCLASSES] = {0};
    /* Other workers' counters, read without their lock-free owner's help:
     * relaxed and approximate, as every gauge here. */
    for (int wk = 0; wk < s->nworkers; wk++) {
        api_worker_t *aw = api_worker(&s->workers[wk]);
        if (aw == NULL)
            continue;
        for (int k = 0; k < aw->nadmission; k++) {
            admission_t *a = &aw->admission[k];
            int i = k < nroutes && routes[k].db == DB_READ ? ADMIT_READS : ADMIT_WRITES;
            limit[i] += admission_limit(a);
            inflight[i] += __atomic_load_n(&a->inflight, __ATOMIC_RELAXED);
            queued[i] += __atomic_load_n(&a->queued, __ATOMIC_RELAXED);
            refused[i] += __atomic_load_n(&a->refused, __ATOMIC_RELAXED);
            expired[i] += __atomic_load_n(&a->expired, __ATOMIC_RELAXED);
        }
    }
    render_outage_metrics(b, s);
    char line[256];
    snprintf(line, sizeof(line),
             "# HELP marketd_flight_waiters Reads waiting for a database query another read of the same key "
             "runs.\n# TYPE marketd_flight_waiters gauge\nmarketd_flight_waiters %d\n",
             flight_waiting());
    jbuf_puts(b, line);
    jbuf_puts(b,
              "# HELP marketd_db_admission_limit Database queries a class may have in flight (adaptive, all "
              "workers).\n# TYPE marketd_db_admission_limit gauge\n");
    for (int i = 0; i < ADMIT_NCLASSES; i++) {
        snprintf(line, sizeof(line), "marketd_db_admission_limit{class=\"%s\"} %d\n", names[i], limit[i]);
        jbuf_puts(b, line);
    }
    jbuf_puts(b, "# HELP marketd_db_admission_inflight Database queries in flight.\n"
                 "# TYPE marketd_db_admission_inflight gauge\n");
    for (int i = 0; i < ADMIT_NCLASSES; i++) {
        snprintf(line, sizeof(line), "marketd_db_admission_inflight{class=\"%s\"} %d\n", names[i],
                 inflight[i]);
        jbuf_puts(b, line);
    }
    jbuf_puts(b, "# HELP marketd_db_admission_queued Database queries waiting for a slot.\n"
                 "# TYPE marketd_db_admission_queued gauge\n");
    for (int i = 0; i < ADMIT_NCLASSES; i++) {
        snprintf(line, sizeof(line), "marketd_db_admission_queued{class=\"%s\"} %d\n", names[i], queued[i]);
        jbuf_puts(b, line);
    }
    jbuf_puts(b, "# HELP marketd_db_admission_shed_total Requests answered 503 by admission control.\n"
                 "# TYPE marketd_db_admission_shed_total counter\n");
    for (int i = 0; i < ADMIT_NCLASSES; i++) {
        snprintf(line, sizeof(line),
                 "marketd_db_admission_shed_total{class=\"%s\",reason=\"queue_full\"} %llu\n"
                 "marketd_db_admission_shed_total{class=\"%s\",reason=\"waited_too_long\"} %llu\n",
                 names[i], (unsigned long long)refused[i], names[i], (unsigned long long)expired[i]);
        jbuf_puts(b, line);
    }
}
