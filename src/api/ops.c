/* Operations (api.md "Operations"): liveness, readiness, Prometheus
 * metrics, and the two upkeep jobs every instance runs: order partitions
 * (S6) and the popular-sellers counts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/error.h"
#include "core/log.h"
#include "core/version.h"
#include "db/migrate.h"

static const db_stmt_t *st_schema_version, *st_ensure_partitions, *st_partitions_ahead, *st_refresh_popular,
    *st_cleanup_idempotency;

/* Months of order partitions ahead (see the partition upkeep below): the
 * last measurement, -1 before the first; written by worker 0, read by
 * whichever worker renders /metrics. */
static _Atomic int partitions_ahead = -1;

static void healthz(rctx_t *r)
{
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"status\":\"ok\"}");
    reply_json(r, 200, b);
}

/* The pools of replica i summed over the workers. */
/* The instance's pool is the sum of its workers' pools: the primary's
 * (i < 0) or replica i's. */
static void pool_stats(server_t *s, int i, db_pool_stats_t *sum)
{
    memset(sum, 0, sizeof(*sum));
    for (int w = 0; w < s->nworkers; w++) {
        api_worker_t *aw = api_worker(&s->workers[w]);
        db_pool_t *pool = aw == NULL          ? NULL
                          : i < 0             ? aw->primary
                          : i < aw->nreplicas ? aw->replicas[i]
                                              : NULL;
        if (pool == NULL)
            continue;
        db_pool_stats_t st;
        db_pool_get_stats(pool, &st);
        sum->connecting += st.connecting, sum->idle += st.idle, sum->busy += st.busy;
        sum->waiting += st.waiting, sum->max += st.max, sum->served += st.served;
    }
}

/* A replica that is down or lagging degrades nothing but speed (its reads
 * go elsewhere): it never makes the instance unready. */
static void render_replicas(jbuf_t *b, server_t *s)
{
    jbuf_puts(b, "[");
    for (int i = 0; i < db_replicas_count(); i++) {
        db_replica_info_t in;
        db_replica_info(i, &in);
        db_pool_stats_t st;
        pool_stats(s, i, &st);
        char lsn[24];
        db_lsn_format(in.replay_lsn, lsn);
        jbuf_puts(b, i > 0 ? ",{\"name\":" : "{\"name\":");
        json_cstr(b, db_replica_label(i));
        jbuf_puts(b, ",\"url\":");
        json_cstr(b, db_replica_display(i));
        jbuf_puts(b, ",\"up\":");
        jbuf_puts(b, in.up ? "true" : "false");
        jbuf_puts(b, ",\"state\":");
        json_cstr(b, in.promoted ? "promoted" : !in.reachable ? "down" : in.up ? "up" : "lagging");
        jbuf_puts(b, ",\"lag_ms\":");
        if (in.lag_ms >= 0)
            json_int(b, in.lag_ms);
        else
            jbuf_puts(b, "null");
        jbuf_puts(b, ",\"replay_lsn\":");
        if (in.replay_lsn != 0)
            json_cstr(b, lsn);
        else
            jbuf_puts(b, "null");
        jbuf_puts(b, ",\"in_pool\":{\"busy\":");
        json_int(b, st.busy);
        jbuf_puts(b, ",\"idle\":");
        json_int(b, st.idle);
        jbuf_puts(b, ",\"connecting\":");
        json_int(b, st.connecting);
        jbuf_puts(b, "}}");
    }
    jbuf_puts(b, "]");
}

/* ---- /readyz ------------------------------------------------------------------------ */

/*
 * Ready when the primary answers and its schema is one this binary can run
 * on: its own version, or a newer one whose every later migration declared
 * itself compatible with the previous binary (`-- marketd: compatible-with-
 * previous`, recorded in schema_migrations.compatible when applied, since
 * this binary has never seen those files). That keeps old instances serving
 * while a rolling deploy's expand migration is already applied (docs/
 * deploy.md "Migrations: expand and contract"). An older schema is never
 * ready: this binary's statements may need what is not there yet.
 * Columns: the database's version, whether every version above the
 * binary's is compatible (true when there is none).
 */
static void on_schema_version(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    int have = err == 0 && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : -1;
    int later_ok = err == 0 && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    int want = migrate_latest_version();
    /* A statement error (e.g. schema_migrations not migrated yet) still
     * means the primary answered. */
    int primary_up = err == 0 || err == MKD_EDB;
    int compatible = have == want || (have > want && later_ok);
    int ready = primary_up && compatible;
    /* The cache alone being down degrades (answers come from the database);
     * only the primary or a schema this binary cannot run on makes the
     * instance unready. */
    const char *cache = cache_state(api_worker(r->w)->cache);
    int replicas_up = 1;
    for (int i = 0; i < db_replicas_count(); i++) {
        db_replica_info_t in;
        db_replica_info(i, &in);
        replicas_up &= in.up;
    }
    const char *status = !ready ? "down" : (strcmp(cache, "down") == 0 || !replicas_up) ? "degraded" : "ok";
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"status\":");
    json_cstr(b, status);
    jbuf_puts(b, ",\"primary\":");
    json_cstr(b, primary_up ? "up" : "down");
    jbuf_puts(b, ",\"replicas\":");
    render_replicas(b, r->w->server);
    jbuf_puts(b, ",\"cache\":");
    json_cstr(b, cache);
    jbuf_puts(b, ",\"schema\":{\"database\":");
    json_int(b, have);
    jbuf_puts(b, ",\"binary\":");
    json_int(b, want);
    jbuf_puts(b, ",\"compatible\":");
    jbuf_puts(b, compatible ? "true" : "false");
    jbuf_puts(b, "}}");
    if (!ready)
        reply_header(r, "retry-after", "1", 1);
    reply_json(r, ready ? 200 : 503, b);
}

static void readyz(rctx_t *r)
{
    char binary[16];
    snprintf(binary, sizeof(binary), "%d", migrate_latest_version());
    const char *params[] = {binary};
    /* Readiness reports a database failure as a body, not as a problem:
     * it goes to the pool directly instead of through api_query. */
    int rc = db_pool_query(api_worker(r->w)->primary, st_schema_version, params, on_schema_version, r);
    if (rc != 0)
        on_schema_version(r, NULL, rc);
}

/* ---- /metrics ------------------------------------------------------------------------ */

/* Every pool — the primary's and each replica's (pool="replicaN") — in one
 * group per family, as the text format wants; each pool is read once. */
static void render_pool_metrics(jbuf_t *b, server_t *s)
{
    int n = 1 + db_replicas_count();
    const char *label[1 + DB_REPLICAS_MAX];
    db_pool_stats_t st[1 + DB_REPLICAS_MAX];
    for (int i = 0; i < n; i++) {
        label[i] = i == 0 ? "primary" : db_replica_label(i - 1);
        pool_stats(s, i - 1, &st[i]);
    }
    char line[256];
    jbuf_puts(b, "# HELP marketd_db_pool_connections Database connections by pool and state.\n"
                 "# TYPE marketd_db_pool_connections gauge\n");
    for (int i = 0; i < n; i++) {
        snprintf(line, sizeof(line),
                 "marketd_db_pool_connections{pool=\"%s\",state=\"busy\"} %d\n"
                 "marketd_db_pool_connections{pool=\"%s\",state=\"idle\"} %d\n"
                 "marketd_db_pool_connections{pool=\"%s\",state=\"connecting\"} %d\n",
                 label[i], st[i].busy, label[i], st[i].idle, label[i], st[i].connecting);
        jbuf_puts(b, line);
    }
    jbuf_puts(b, "# HELP marketd_db_pool_max Most connections a pool may open (base + overflow).\n"
                 "# TYPE marketd_db_pool_max gauge\n");
    for (int i = 0; i < n; i++) {
        snprintf(line, sizeof(line), "marketd_db_pool_max{pool=\"%s\"} %d\n", label[i], st[i].max);
        jbuf_puts(b, line);
    }
    jbuf_puts(b, "# HELP marketd_db_pool_waiting Queries waiting for a connection.\n"
                 "# TYPE marketd_db_pool_waiting gauge\n");
    for (int i = 0; i < n; i++) {
        snprintf(line, sizeof(line), "marketd_db_pool_waiting{pool=\"%s\"} %d\n", label[i], st[i].waiting);
        jbuf_puts(b, line);
    }
    /* Which node serves the reads. */
    jbuf_puts(b, "# HELP marketd_db_pool_queries_total Queries a pool answered successfully.\n"
                 "# TYPE marketd_db_pool_queries_total counter\n");
    for (int i = 0; i < n; i++) {
        snprintf(line, sizeof(line), "marketd_db_pool_queries_total{pool=\"%s\"} %llu\n", label[i],
                 (unsigned long long)st[i].served);
        jbuf_puts(b, line);
    }
    if (n == 1)
        return;
    db_replica_info_t in[DB_REPLICAS_MAX];
    for (int i = 0; i < n - 1; i++)
        db_replica_info(i, &in[i]);
    jbuf_puts(b,
              "# HELP marketd_db_replica_up 1 when a read replica is used for reads (reachable, in recovery, "
              "lag within DB_REPLICA_MAX_LAG_MS).\n# TYPE marketd_db_replica_up gauge\n");
    for (int i = 0; i < n - 1; i++) {
        snprintf(line, sizeof(line), "marketd_db_replica_up{replica=\"%s\"} %d\n", label[i + 1], in[i].up);
        jbuf_puts(b, line);
    }
    jbuf_puts(b,
              "# HELP marketd_db_replica_lag_seconds How far a replica's replay is behind the primary (-1: "
              "unknown).\n# TYPE marketd_db_replica_lag_seconds gauge\n");
    for (int i = 0; i < n - 1; i++) {
        snprintf(line, sizeof(line), "marketd_db_replica_lag_seconds{replica=\"%s\"} %.3f\n", label[i + 1],
                 in[i].lag_ms >= 0 ? (double)in[i].lag_ms / 1000.0 : -1.0);
        jbuf_puts(b, line);
    }
}

static void metrics(rctx_t *r)
{
    server_t *s = r->w->server;
    jbuf_t *b = reply_buffer(r);
    metrics_render_http(b, s->metrics_all, s->nworkers);

    render_pool_metrics(b, s);
    db_wait_hist_t hist = {0};
    for (int i = 0; i < s->nworkers; i++) {
        api_worker_t *aw = api_worker(&s->workers[i]);
        if (aw != NULL && aw->primary != NULL)
            db_pool_add_wait_hist(aw->primary, &hist);
    }
    char line[512];
    jbuf_puts(b, "# HELP marketd_db_pool_wait_seconds Time a query waited for a pool connection.\n"
                 "# TYPE marketd_db_pool_wait_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < DB_WAIT_NBUCKETS; i++) {
        cum += hist.buckets[i];
        snprintf(line, sizeof(line), "marketd_db_pool_wait_seconds_bucket{le=\"%g\"} %llu\n",
                 db_wait_bucket_bounds[i], (unsigned long long)cum);
        jbuf_puts(b, line);
    }
    snprintf(line, sizeof(line),
             "marketd_db_pool_wait_seconds_bucket{le=\"+Inf\"} %llu\nmarketd_db_pool_wait_seconds_sum %.6f\n"
             "marketd_db_pool_wait_seconds_count %llu\n",
             (unsigned long long)hist.count, (double)hist.sum_us / 1e6, (unsigned long long)hist.count);
    jbuf_puts(b, line);
    int ahead = partitions_ahead;
    if (ahead >= 0) {
        snprintf(
            line, sizeof(line),
            "# HELP marketd_order_partitions_ahead_months Whole months of order partitions that exist after "
            "the current one (3 after a successful upkeep run; alert below 2).\n"
            "# TYPE marketd_order_partitions_ahead_months gauge\n"
            "marketd_order_partitions_ahead_months %d\n",
            ahead);
        jbuf_puts(b, line);
    }
    api_render_admission_metrics(b, s);
    /* Constant 1: joins any series to the binary that produced it. */
    snprintf(
        line, sizeof(line),
        "# HELP marketd_build_info The running binary: its release and the schema version it migrates to.\n"
        "# TYPE marketd_build_info gauge\nmarketd_build_info{version=\"%s\",schema=\"%d\"} 1\n",
        MARKETD_VERSION, migrate_latest_version());
    jbuf_puts(b, line);
    metrics_render_process(b);
    reply_body(r, 200, "text/plain; version=0.0.4", b->data, b->len);
}

/* ---- partition upkeep (S6) ------------------------------------------------------------ */

/* Months of order partitions kept ready ahead of today. `marketd migrate`
 * creates them too; this job keeps a long-running instance ahead without a
 * cron. marketd_ensure_partitions ATTACHes (SHARE UPDATE EXCLUSIVE), and
 * lock_timeout makes it give up rather than queue behind traffic; it simply
 * tries again on the next run. Worker 0 of each instance runs it.
 *
 * The same run applies ORDER_RETENTION_MONTHS: marketd_drop_old_partitions
 * (migrations/0008) detaches and drops the months entirely older than that
 * (never anything younger than 31 days), under the same lock_timeout.
 * Then, whether that worked or not, it measures the whole months of
 * partitions that exist ahead for the gauge
 * marketd_order_partitions_ahead_months: if upkeep keeps failing, the
 * gauge falls and an alert (deploy/prometheus/alerts.yml) fires while there
 * are still weeks to act. */
#define PARTITION_JOB_FIRST_US (10ull * 1000000)
#define PARTITION_JOB_EVERY_US (3600ull * 1000000)
static uint64_t partition_job_due_us;

static void on_partitions_ahead(void *arg, PGresult *res, int err)
{
    (void)arg;
    if (err != 0) {
        db_log_error(LOG_WARN, NULL, res, "partition upkeep: measuring the months ahead failed (%s)",
                     mkd_strerror(err));
        return;
    }
    partitions_ahead = atoi(PQgetvalue(res, 0, 0));
}

/* Logs each name of a text[] in its text form ({a,b}); partition names are
 * plain identifiers, never quoted in it. */
static int log_dropped(const char *array)
{
    int n_dropped = 0;
    const char *p = array;
    if (*p == '{')
        p++;
    while (*p != '\0' && *p != '}') {
        size_t n = strcspn(p, ",}");
        if (n > 0) {
            log_info("partition upkeep: dropped %.*s (older than ORDER_RETENTION_MONTHS=%d)", (int)n, p,
                     api_config()->order_retention_months);
            n_dropped++;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return n_dropped;
}

/* The one invalidation of the partition job: worker 0 runs it at most
 * hourly, and an invalidation ends within its patience (seconds), so one
 * static operation is enough and nothing is left to free at shutdown. A
 * drop while it still runs asks for another after it (its versions may
 * have been set before that drop committed). */
static cache_inval_op_t forget_op;
static worker_t *forgetting; /* the worker whose invalidation runs, or NULL */
static int forget_again;

static void forget_histories(worker_t *w);

static void on_orders_forgotten(void *arg)
{
    worker_t *w = forgetting;
    forgetting = NULL;
    if (forget_again) {
        forget_again = 0;
        forget_histories(w);
    }
}

/* Dropped months take orders out of every history that showed them: the
 * cached ones go too (cache/tags.h "orders"). Every instance reads the
 * same Redis, so the instance that dropped them tells all. */
static void forget_histories(worker_t *w)
{
    if (forgetting != NULL) {
        forget_again = 1;
        return;
    }
    forgetting = w;
    cache_tags_t tags = {0};
    tags_orders_dropped(&tags);
    cache_invalidate(api_worker(w)->cache, &forget_op, &tags, 0, on_orders_forgotten, NULL);
}

static void on_partitions(void *arg, PGresult *res, int err)
{
    worker_t *w = arg;
    db_pool_t *primary = api_worker(w)->primary;
    if (err != 0) {
        log_warn("partition upkeep failed (%s): %s", mkd_strerror(err),
                 res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "no result");
    } else {
        int created = atoi(PQgetvalue(res, 0, 1));
        if (created > 0)
            log_info("partition upkeep: created %d partition(s)", created);
        if (log_dropped(PQgetvalue(res, 0, 2)) > 0)
            forget_histories(w);
    }
    if (db_pool_query(primary, st_partitions_ahead, NULL, on_partitions_ahead, NULL) != 0)
        log_warn("partition upkeep: database unavailable, the months ahead stay unmeasured");
}

static void partition_job(worker_t *w)
{
    db_pool_t *primary = api_worker(w)->primary;
    char keep[16];
    snprintf(keep, sizeof(keep), "%d", api_config()->order_retention_months);
    const char *params[] = {keep};
    if (db_pool_query(primary, st_ensure_partitions, params, on_partitions, w) != 0)
        log_warn("partition upkeep: database unavailable, will retry");
}

/* ---- popular sellers (S9) -------------------------------------------------------------- */

/* GET /sellers/popular reads precomputed counts plus the changes logged
 * since (migrations/0006_precomputed_reads.sql, src/api/sellers.c).
 * marketd_refresh_popular folds those changes into the counts and slides
 * the 30-day window; it also rebuilds the counts when they are missing (a
 * fresh or re-seeded database). Run soon after start, then every 10 s:
 * the window's edge is exact to 10 s, and the log a read adds up stays
 * ~10 s of deliveries long. It takes no lock traffic waits for, and
 * concurrent calls from other instances return at once, so every
 * instance's worker 0 runs it; lock_timeout is only a guard. */
#define POPULAR_JOB_FIRST_US (1ull * 1000000)
#define POPULAR_JOB_EVERY_US (10ull * 1000000)
static uint64_t popular_job_due_us;
static int popular_job_failing; /* one warning per outage, not one per run */

static void on_refresh_popular(void *arg, PGresult *res, int err)
{
    (void)arg;
    if (err != 0) {
        if (!popular_job_failing)
            db_log_error(LOG_WARN, NULL, res, "popular sellers refresh failed (%s), retrying every 10 s",
                         mkd_strerror(err));
        popular_job_failing = 1;
        return;
    }
    if (popular_job_failing)
        log_info("popular sellers refresh: working again");
    popular_job_failing = 0;
    /* A rebuild is rare (a new or re-seeded database) and worth a line. */
    if (strcmp(PQgetvalue(res, 0, 1), "rebuilt") == 0)
        log_info("popular sellers: counts rebuilt from orders");
}

/* Whether a job is due at `now`; schedules its next run. */
static int job_due(uint64_t *due_us, uint64_t now, uint64_t first_us, uint64_t every_us)
{
    if (*due_us == 0)
        *due_us = now + first_us;
    if (now < *due_us)
        return 0;
    *due_us = now + every_us;
    return 1;
}

/* ---- expired Idempotency-Keys ----------------------------------------------------------- */

/* A key replays for 24 h (api.md), then its row is garbage. Deleted in
 * batches of IDEM_BATCH rows, one batch per tick (100 ms) while batches come
 * back full, at most IDEM_MAX_BATCHES per run: a backlog is worked off
 * without a long transaction or a burst of WAL, and a run ends even if keys
 * arrive faster than it deletes. The interval is IDEMPOTENCY_CLEANUP_EVERY
 * (1 h); the first run is a minute after start, or sooner if the interval
 * is shorter. */
#define IDEM_BATCH       1000
#define IDEM_MAX_BATCHES 1000
static uint64_t idem_job_due_us;
static int idem_batches;  /* batches run in the current run; 0 = idle */
static int idem_inflight; /* a batch is at the database */
static long idem_deleted; /* rows deleted in the current run */

static void idem_run_done(const char *why)
{
    if (idem_deleted > 0 || why != NULL)
        log_info("idempotency keys: deleted %ld expired key(s)%s%s", idem_deleted, why ? "; " : "",
                 why ? why : "");
    idem_batches = 0;
    idem_deleted = 0;
}

static void on_cleanup_idempotency(void *arg, PGresult *res, int err)
{
    (void)arg;
    idem_inflight = 0;
    if (err != 0) {
        log_warn("idempotency key clean-up failed (%s): %s; next run in the next interval", mkd_strerror(err),
                 res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : "no result");
        idem_run_done(NULL);
        return;
    }
    int n = atoi(PQgetvalue(res, 0, 0));
    idem_deleted += n;
    if (n < IDEM_BATCH)
        idem_run_done(NULL);
    else if (idem_batches >= IDEM_MAX_BATCHES)
        idem_run_done("more remain for the next run");
}

static void idem_tick(db_pool_t *primary, uint64_t now)
{
    if (idem_inflight)
        return;
    uint64_t every = (uint64_t)api_config()->idempotency_cleanup_every * 1000000;
    if (idem_batches == 0 && !job_due(&idem_job_due_us, now, every < 60000000 ? every : 60000000, every))
        return;
    char batch[16];
    snprintf(batch, sizeof(batch), "%d", IDEM_BATCH);
    const char *params[] = {batch};
    if (db_pool_query(primary, st_cleanup_idempotency, params, on_cleanup_idempotency, NULL) != 0) {
        idem_run_done(NULL);
        return;
    }
    idem_inflight = 1;
    idem_batches++;
}

static void ops_tick(worker_t *w)
{
    uint64_t now = server_now_us();
    if (w->index != 0 || w->draining)
        return;
    db_pool_t *primary = api_worker(w)->primary;
    if (job_due(&partition_job_due_us, now, PARTITION_JOB_FIRST_US, PARTITION_JOB_EVERY_US))
        partition_job(w);
    /* Only with a working connection: during an outage the refresh would
     * make the pool try to connect every 10 s for nothing (reads are exact
     * without it); it runs on the first tick after the database is back. */
    db_pool_stats_t st;
    db_pool_get_stats(primary, &st);
    if (st.up && job_due(&popular_job_due_us, now, POPULAR_JOB_FIRST_US, POPULAR_JOB_EVERY_US) &&
        db_pool_query(primary, st_refresh_popular, NULL, on_refresh_popular, NULL) != 0)
        log_debug("popular sellers refresh: database unavailable, will retry");
    if (st.up)
        idem_tick(primary, now);
}

static void ops_init(void)
{
    st_schema_version = db_stmt_register("SELECT coalesce(max(version), 0), coalesce(bool_and(compatible)"
                                         " FILTER (WHERE version > $1::int), true) FROM schema_migrations",
                                         1);
    /* One statement, so in one transaction under the lock_timeout: the
     * target list runs left to right (create ahead, then drop behind). */
    st_ensure_partitions =
        db_stmt_register("SELECT set_config('lock_timeout', '2s', true),"
                         " marketd_ensure_partitions(0, 3), marketd_drop_old_partitions($1::int)",
                         1);
    st_partitions_ahead = db_stmt_register("SELECT marketd_order_partitions_ahead()", 0);
    st_refresh_popular = db_stmt_register("SELECT set_config('lock_timeout', '2s', true), f.action, "
                                          "f.folded, f.expired FROM marketd_refresh_popular() f",
                                          0);
    st_cleanup_idempotency = db_stmt_register("SELECT marketd_cleanup_idempotency($1::int)", 1);
}

static const route_t routes[] = {
    {.method = M_GET, .pattern = "/healthz", HANDLER(healthz)},
    {.method = M_GET, .pattern = "/readyz", HANDLER(readyz)},
    {.method = M_GET, .pattern = "/metrics", HANDLER(metrics)},
};

const api_module_t api_ops = {"ops", routes, sizeof(routes) / sizeof(routes[0]), ops_init, ops_tick};
