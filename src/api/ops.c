#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "cache/cache.h"
#include "core/error.h"
#include "db/migrate.h"

static const db_stmt_t *st_schema_version;

void api_healthz(rctx_t *r)
{
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"status\":\"ok\"}");
    reply_json(r, 200, b);
}

static void on_schema_version(void *arg, PGresult *res, int err)
{
    rctx_t *r = arg;
    int have = err == 0 && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : -1;
    int want = migrate_latest_version();
    int primary_up = err == 0;
    int current = have == want;
    /* The cache alone being down degrades (answers come from the database);
     * only the primary or a schema mismatch makes the instance unready. */
    const char *cache = cache_state(r->w);
    const char *status = !(primary_up && current) ? "down" : (strcmp(cache, "down") == 0 ? "degraded" : "ok");
    jbuf_t *b = reply_buffer(r);
    jbuf_puts(b, "{\"status\":");
    json_cstr(b, status);
    jbuf_puts(b, ",\"primary\":");
    json_cstr(b, primary_up ? "up" : "down");
    jbuf_puts(b, ",\"replicas\":[],\"cache\":");
    json_cstr(b, cache);
    jbuf_puts(b, ",\"schema\":{\"database\":");
    json_int(b, have);
    jbuf_puts(b, ",\"binary\":");
    json_int(b, want);
    jbuf_puts(b, "}}");
    if (!(primary_up && current))
        reply_header(r, "retry-after", "1", 1);
    reply_json(r, primary_up && current ? 200 : 503, b);
}

void api_readyz(rctx_t *r)
{
    int rc = db_pool_query(r->w->primary, st_schema_version, NULL, on_schema_version, r);
    if (rc != 0)
        on_schema_version(r, NULL, rc);
}

void api_metrics(rctx_t *r)
{
    server_t *s = r->w->server;
    jbuf_t *b = reply_buffer(r);
    metrics_render_http(b, s->metrics_all, s->nworkers);

    /* Pool gauges: the instance's pool is the sum of its workers' pools. */
    db_pool_stats_t sum = {0};
    db_wait_hist_t hist = {0};
    for (int i = 0; i < s->nworkers; i++) {
        db_pool_t *p = s->workers[i].primary;
        if (p == NULL)
            continue;
        db_pool_stats_t st;
        db_pool_get_stats(p, &st);
        sum.connecting += st.connecting, sum.idle += st.idle, sum.busy += st.busy;
        sum.waiting += st.waiting, sum.max += st.max;
        db_pool_add_wait_hist(p, &hist);
    }
    char line[512];
    snprintf(line, sizeof(line),
             "# HELP db_pool_connections Database connections by pool and state.\n"
             "# TYPE db_pool_connections gauge\n"
             "db_pool_connections{pool=\"primary\",state=\"busy\"} %d\n"
             "db_pool_connections{pool=\"primary\",state=\"idle\"} %d\n"
             "db_pool_connections{pool=\"primary\",state=\"connecting\"} %d\n"
             "# HELP db_pool_max Most connections a pool may open (base + overflow).\n"
             "# TYPE db_pool_max gauge\n"
             "db_pool_max{pool=\"primary\"} %d\n"
             "# HELP db_pool_waiting Queries waiting for a connection.\n"
             "# TYPE db_pool_waiting gauge\n"
             "db_pool_waiting{pool=\"primary\"} %d\n",
             sum.busy, sum.idle, sum.connecting, sum.max, sum.waiting);
    jbuf_puts(b, line);
    jbuf_puts(b, "# HELP db_pool_wait_seconds Time a query waited for a pool connection.\n"
                 "# TYPE db_pool_wait_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < DB_WAIT_NBUCKETS; i++) {
        cum += hist.buckets[i];
        snprintf(line, sizeof(line), "db_pool_wait_seconds_bucket{le=\"%g\"} %llu\n", db_wait_bucket_bounds[i],
                 (unsigned long long)cum);
        jbuf_puts(b, line);
    }
    snprintf(line, sizeof(line),
             "db_pool_wait_seconds_bucket{le=\"+Inf\"} %llu\ndb_pool_wait_seconds_sum %.6f\n"
             "db_pool_wait_seconds_count %llu\n",
             (unsigned long long)hist.count, (double)hist.sum_us / 1e6, (unsigned long long)hist.count);
    jbuf_puts(b, line);
    metrics_render_process(b);
    reply_body(r, 200, "text/plain; version=0.0.4", b->data, b->len);
}

void api_ops_init(void)
{
    st_schema_version = db_stmt_register("SELECT coalesce(max(version), 0) FROM schema_migrations", 0);
}
