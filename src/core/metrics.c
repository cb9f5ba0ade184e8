#include "core/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char *route_names[METRICS_MAX_ROUTES];
static const char *const method_names[METRICS_NMETHODS] = {"GET",   "HEAD",   "POST", "PUT",
                                                           "PATCH", "DELETE", "OTHER"};
static const int status_codes[METRICS_NSTATUS - 1] = {200, 201, 204, 304, 400, 401, 403, 404, 405, 409,
                                                      413, 415, 422, 429, 500, 502, 503, 504, 301};
/* Upper bounds in seconds; the last bucket is +Inf. */
static const double bucket_bounds[METRICS_NBUCKETS - 1] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                           0.25,  0.5,    1.0,   2.5,  5.0,   10.0};

#define LOAD(x)   __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define BUMP(x)   __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED)
#define ADD(x, v) __atomic_store_n(&(x), __atomic_load_n(&(x), __ATOMIC_RELAXED) + (v), __ATOMIC_RELAXED)

void metrics_set_route_name(int route, const char *name)
{
    if (route >= 0 && route < METRICS_MAX_ROUTES)
        route_names[route] = name;
}

int metrics_method_index(const char *method, size_t len)
{
    for (int i = 0; i < METRICS_NMETHODS - 1; i++)
        if (strlen(method_names[i]) == len && memcmp(method_names[i], method, len) == 0)
            return i;
    return METRICS_NMETHODS - 1;
}

static int status_index(int status)
{
    for (int i = 0; i < METRICS_NSTATUS - 1; i++)
        if (status_codes[i] == status)
            return i;
    return METRICS_NSTATUS - 1;
}

void metrics_observe(metrics_t *m, int route, int method, int status, uint64_t duration_us)
{
    if (route < 0 || route >= METRICS_MAX_ROUTES)
        return;
    BUMP(m->requests[route][method][status_index(status)]);
    int b = 0;
    while (b < METRICS_NBUCKETS - 1 && (double)duration_us / 1e6 > bucket_bounds[b])
        b++;
    BUMP(m->latency[route][b]);
    BUMP(m->latency_count[route]);
    ADD(m->latency_sum_us[route], duration_us);
}

void metrics_observe_loop_lag(metrics_t *m, uint64_t lag_us)
{
    int b = 0;
    while (b < METRICS_NBUCKETS - 1 && (double)lag_us / 1e6 > bucket_bounds[b])
        b++;
    BUMP(m->loop_lag[b]);
    BUMP(m->loop_lag_count);
    ADD(m->loop_lag_sum_us, lag_us);
}

static void render_loop_lag(jbuf_t *out, metrics_t *const *all, int n)
{
    char line[160];
    jbuf_puts(out, "# HELP marketd_event_loop_lag_seconds How late the workers' 100 ms ticks ran: the time "
                   "their event loops were too busy or blocked to read sockets.\n"
                   "# TYPE marketd_event_loop_lag_seconds histogram\n");
    uint64_t cum = 0, count = 0, sum = 0;
    for (int w = 0; w < n; w++) {
        count += LOAD(all[w]->loop_lag_count);
        sum += LOAD(all[w]->loop_lag_sum_us);
    }
    for (int b = 0; b < METRICS_NBUCKETS; b++) {
        for (int w = 0; w < n; w++)
            cum += LOAD(all[w]->loop_lag[b]);
        if (b < METRICS_NBUCKETS - 1)
            snprintf(line, sizeof(line), "marketd_event_loop_lag_seconds_bucket{le=\"%g\"} %llu\n",
                     bucket_bounds[b], (unsigned long long)cum);
        else
            snprintf(line, sizeof(line), "marketd_event_loop_lag_seconds_bucket{le=\"+Inf\"} %llu\n",
                     (unsigned long long)cum);
        jbuf_puts(out, line);
    }
    snprintf(line, sizeof(line),
             "marketd_event_loop_lag_seconds_sum %.6f\n"
             "marketd_event_loop_lag_seconds_count %llu\n",
             (double)sum / 1e6, (unsigned long long)count);
    jbuf_puts(out, line);
}

void metrics_render_http(jbuf_t *out, metrics_t *const *all, int n)
{
    char line[256];
    jbuf_puts(out, "# HELP marketd_http_requests_total HTTP requests by method, route and status.\n"
                   "# TYPE marketd_http_requests_total counter\n");
    for (int r = 0; r < METRICS_MAX_ROUTES; r++) {
        if (route_names[r] == NULL)
            continue;
        for (int mth = 0; mth < METRICS_NMETHODS; mth++) {
            for (int s = 0; s < METRICS_NSTATUS; s++) {
                uint64_t v = 0;
                for (int w = 0; w < n; w++)
                    v += LOAD(all[w]->requests[r][mth][s]);
                if (v == 0)
                    continue;
                char st[8];
                if (s < METRICS_NSTATUS - 1)
                    snprintf(st, sizeof(st), "%d", status_codes[s]);
                else
                    snprintf(st, sizeof(st), "other");
                snprintf(line, sizeof(line),
                         "marketd_http_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} %llu\n",
                         method_names[mth], route_names[r], st, (unsigned long long)v);
                jbuf_puts(out, line);
            }
        }
    }
    jbuf_puts(out, "# HELP marketd_http_request_duration_seconds HTTP request latency by route.\n"
                   "# TYPE marketd_http_request_duration_seconds histogram\n");
    for (int r = 0; r < METRICS_MAX_ROUTES; r++) {
        if (route_names[r] == NULL)
            continue;
        uint64_t cum = 0, count = 0, sum = 0;
        for (int w = 0; w < n; w++) {
            count += LOAD(all[w]->latency_count[r]);
            sum += LOAD(all[w]->latency_sum_us[r]);
        }
        for (int b = 0; b < METRICS_NBUCKETS; b++) {
            for (int w = 0; w < n; w++)
                cum += LOAD(all[w]->latency[r][b]);
            if (b < METRICS_NBUCKETS - 1)
                snprintf(line, sizeof(line),
                         "marketd_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                         route_names[r], bucket_bounds[b], (unsigned long long)cum);
            else
                snprintf(line, sizeof(line),
                         "marketd_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                         route_names[r], (unsigned long long)cum);
            jbuf_puts(out, line);
        }
        snprintf(line, sizeof(line),
                 "marketd_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                 "marketd_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                 route_names[r], (double)sum / 1e6, route_names[r], (unsigned long long)count);
        jbuf_puts(out, line);
    }
    static const char *const cache_results[3] = {"hit", "miss", "bypass"};
    jbuf_puts(out, "# HELP marketd_cache_requests_total Cacheable requests by cache result.\n"
                   "# TYPE marketd_cache_requests_total counter\n");
    for (int i = 0; i < 3; i++) {
        uint64_t v = 0;
        for (int w = 0; w < n; w++)
            v += LOAD(all[w]->cache[i]);
        snprintf(line, sizeof(line), "marketd_cache_requests_total{result=\"%s\"} %llu\n", cache_results[i],
                 (unsigned long long)v);
        jbuf_puts(out, line);
    }
    render_loop_lag(out, all, n);
}

/* The process's start in seconds since the Unix epoch: its start in clock
 * ticks after boot (/proc/self/stat, field 22) plus the boot time
 * (/proc/stat btime), read at each scrape (no shared state between the
 * workers that render /metrics); 0 if /proc says nothing. */
static double process_start_time(void)
{
    double start = 0;
    unsigned long long ticks = 0, btime = 0;
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* Fields after the command name, which may hold spaces: from the
         * last ')' on, field 3 is the first. */
        char *p = strrchr(buf, ')');
        for (int field = 2; p != NULL && field < 22; field++)
            p = strchr(p + 1, ' ');
        if (p != NULL)
            ticks = strtoull(p + 1, NULL, 10);
    }
    f = fopen("/proc/stat", "r");
    if (f != NULL) {
        while (fgets(buf, sizeof(buf), f) != NULL)
            if (sscanf(buf, "btime %llu", &btime) == 1)
                break;
        fclose(f);
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (btime > 0 && hz > 0)
        start = (double)btime + (double)ticks / (double)hz;
    return start;
}

void metrics_render_process(jbuf_t *out)
{
    char line[768];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 (double)ru.ru_stime.tv_usec / 1e6;
    long rss_pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        long size;
        if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2)
            rss_pages = 0;
        fclose(f);
    }
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        while (readdir(d) != NULL)
            fds++;
        closedir(d);
        fds -= 3; /* ".", ".." and the directory's own fd */
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    snprintf(line, sizeof(line),
             "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.\n"
             "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.3f\n"
             "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
             "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n"
             "# HELP process_open_fds Open file descriptors.\n"
             "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n"
             "# HELP process_max_fds The limit of open file descriptors.\n"
             "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n"
             "# HELP process_start_time_seconds Start time of the process since the Unix epoch, in seconds.\n"
             "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
             cpu, rss_pages * sysconf(_SC_PAGESIZE), fds, (unsigned long long)rl.rlim_cur,
             process_start_time());
    jbuf_puts(out, line);
}

/* ---- the loop's lateness -------------------------------------------------- */

void metrics_loop_clock_init(metrics_loop_clock_t *c, uint64_t due_us)
{
    c->due_us = due_us;
    c->late_us = 0;
}

uint64_t metrics_loop_clock_tick(metrics_loop_clock_t *c, uint64_t now_us, uint64_t next_due_us)
{
    uint64_t late = now_us > c->due_us ? now_us - c->due_us : 0;
    c->late_us += late;
    /* A tick that ran late in a long turn is due again, by the loop's stale
     * clock, before now: that stretch has just been counted as lateness, so
     * the next one counts from now (and attentive time never goes back). */
    c->due_us = next_due_us > now_us ? next_due_us : now_us;
    return late;
}

uint64_t metrics_loop_clock_lag(const metrics_loop_clock_t *c, uint64_t now_us)
{
    return now_us > c->due_us ? now_us - c->due_us : 0;
}

uint64_t metrics_loop_clock_now(const metrics_loop_clock_t *c, uint64_t now_us)
{
    uint64_t t = now_us > c->due_us ? c->due_us : now_us;
    return t > c->late_us ? t - c->late_us : 0;
}

int metrics_loop_silent(uint64_t now, uint64_t heard, uint64_t owed_since, uint64_t limit_us)
{
    uint64_t since = heard > owed_since ? heard : owed_since;
    return now > since && now - since >= limit_us;
}
