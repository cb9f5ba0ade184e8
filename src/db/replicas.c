#include "db/replicas.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "core/log.h"

#define REPLICA_POLL_US  500000ull
#define REPLICA_STALE_US 2000000ull /* no successful poll for this long: down */

typedef struct replica {
    char *conninfo;
    char label[16];
    char display[256];
    /* Written by worker 0's poll callbacks, read by every worker. */
    int reachable, promoted;
    int64_t replay_age_ms; /* now() - pg_last_xact_replay_timestamp(); -1 NULL */
    uint64_t replay_lsn;
    uint64_t ok_at_us; /* last successful poll */
    /* Worker 0 only. */
    int inflight;
    uint64_t sent_at_us;
    int logged_state; /* 0 unknown, 1 up, 2 down, 3 promoted: log transitions */
} replica_t;

static replica_t replicas[DB_REPLICAS_MAX];
static int nreplicas;
static int max_lag_ms;
static const db_stmt_t *st_replica_poll, *st_primary_poll;
static uint64_t primary_lsn, primary_sent_us; /* atomics */
static int primary_inflight;
static uint64_t primary_pending_sent_us;
static uint64_t next_poll_us;

#define GET(x)    __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

static uint64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

int db_lsn_parse(const char *s, uint64_t *out)
{
    uint64_t hi = 0, lo = 0;
    int nh = 0, nl = 0;
    const char *p = s;
    for (; *p != '\0' && *p != '/'; p++, nh++) {
        int d = (*p >= '0' && *p <= '9')   ? *p - '0'
                : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
                : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                                           : -1;
        if (d < 0 || nh >= 8)
            return -1;
        hi = hi * 16 + (uint64_t)d;
    }
    if (*p != '/' || nh == 0)
        return -1;
    for (p++; *p != '\0'; p++, nl++) {
        int d = (*p >= '0' && *p <= '9')   ? *p - '0'
                : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
                : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
                                           : -1;
        if (d < 0 || nl >= 8)
            return -1;
        lo = lo * 16 + (uint64_t)d;
    }
    if (nl == 0)
        return -1;
    *out = hi << 32 | lo;
    return 0;
}

void db_lsn_format(uint64_t lsn, char out[24])
{
    snprintf(out, 24, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

/* Appends s[0..n) to out (bounded). */
static void put(char *out, size_t outlen, size_t *at, const char *s, size_t n)
{
    if (*at + n >= outlen)
        n = *at + 1 < outlen ? outlen - *at - 1 : 0;
    memcpy(out + *at, s, n);
    *at += n;
    out[*at] = '\0';
}

void db_conninfo_display(const char *ci, char *out, size_t outlen)
{
    size_t at = 0;
    if (outlen == 0)
        return;
    out[0] = '\0';
    const char *scheme = strstr(ci, "://");
    if (scheme != NULL && (strncmp(ci, "postgresql://", 13) == 0 || strncmp(ci, "postgres://", 11) == 0)) {
        /* URL: user[:password]@ — drop ":password". */
        const char *auth = scheme + 3;
        const char *end = auth + strcspn(auth, "/?");
        const char *atsign = NULL;
        for (const char *p = auth; p < end; p++)
            if (*p == '@')
                atsign = p;
        put(out, outlen, &at, ci, (size_t)(auth - ci));
        if (atsign != NULL) {
            const char *colon = memchr(auth, ':', (size_t)(atsign - auth));
            put(out, outlen, &at, auth, (size_t)((colon != NULL ? colon : atsign) - auth));
            put(out, outlen, &at, "@", 1);
            auth = atsign + 1;
        }
        /* The query string may carry password=… too: keep the path only. */
        put(out, outlen, &at, auth, strcspn(auth, "?"));
        return;
    }
    /* key=value: every pair but password (values may be quoted). */
    const char *p = ci;
    while (*p != '\0') {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        const char *k = p;
        while (*p != '\0' && *p != '=' && *p != ' ')
            p++;
        size_t klen = (size_t)(p - k);
        while (*p == ' ')
            p++;
        if (*p == '=')
            p++;
        while (*p == ' ')
            p++;
        const char *v = p;
        if (*p == '\'') {
            for (p++; *p != '\0' && *p != '\''; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
            if (*p == '\'')
                p++;
        } else {
            while (*p != '\0' && *p != ' ')
                p++;
        }
        if (klen == 8 && strncmp(k, "password", 8) == 0)
            continue;
        if (at > 0)
            put(out, outlen, &at, " ", 1);
        put(out, outlen, &at, k, klen);
        put(out, outlen, &at, "=", 1);
        put(out, outlen, &at, v, (size_t)(p - v));
    }
}

int db_replicas_init(const char *list, int max_lag, char *err, size_t errlen)
{
    nreplicas = 0;
    max_lag_ms = max_lag;
    st_replica_poll =
        db_stmt_register("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                         " (extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::int8",
                         0);
    st_primary_poll = db_stmt_register("SELECT pg_current_wal_lsn()::text", 0);
    const char *p = list != NULL ? list : "";
    while (*p != '\0') {
        while (*p == ',' || *p == ' ')
            p++;
        if (*p == '\0')
            break;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && p[m - 1] == ' ')
            m--;
        if (nreplicas == DB_REPLICAS_MAX) {
            snprintf(err, errlen, "DB_READ_REPLICA_URL: at most %d replicas", DB_REPLICAS_MAX);
            db_replicas_dispose();
            return -1;
        }
        if (m == 0) {
            p += n;
            continue;
        }
        replica_t *r = &replicas[nreplicas];
        memset(r, 0, sizeof(*r));
        r->conninfo = strndup(p, m);
        if (r->conninfo == NULL)
            abort();
        r->replay_age_ms = -1;
        snprintf(r->label, sizeof(r->label), "replica%d", nreplicas);
        db_conninfo_display(r->conninfo, r->display, sizeof(r->display));
        nreplicas++;
        p += n;
    }
    return nreplicas;
}

void db_replicas_dispose(void)
{
    for (int i = 0; i < nreplicas; i++) {
        free(replicas[i].conninfo);
        replicas[i].conninfo = NULL;
    }
    nreplicas = 0;
}

int db_replicas_count(void)
{
    return nreplicas;
}

const char *db_replica_conninfo(int i)
{
    return replicas[i].conninfo;
}

const char *db_replica_label(int i)
{
    return replicas[i].label;
}

const char *db_replica_display(int i)
{
    return replicas[i].display;
}

uint64_t db_primary_lsn(uint64_t *sent_at_us)
{
    /* The pair is written sent-time last; a reader may see a newer LSN with
     * an older time, which is conservative. */
    if (sent_at_us != NULL)
        *sent_at_us = __atomic_load_n(&primary_sent_us, __ATOMIC_ACQUIRE);
    return GET(primary_lsn);
}

static int64_t lag_of(const replica_t *r)
{
    uint64_t p = GET(primary_lsn), replay = GET(r->replay_lsn);
    if (p != 0 && replay >= p)
        return 0;
    return GET(r->replay_age_ms);
}

void db_replica_info(int i, db_replica_info_t *out)
{
    const replica_t *r = &replicas[i];
    uint64_t ok = GET(r->ok_at_us);
    out->reachable = ok != 0 && now_us() - ok < REPLICA_STALE_US && GET(r->reachable);
    out->promoted = GET(r->promoted);
    out->replay_lsn = GET(r->replay_lsn);
    out->lag_ms = out->reachable ? lag_of(r) : -1;
    out->up = out->reachable && !out->promoted && out->lag_ms >= 0 && out->lag_ms <= max_lag_ms;
}

/* Logs a change of what the replica is good for, once per change. */
static void log_state(replica_t *r)
{
    db_replica_info_t in;
    db_replica_info((int)(r - replicas), &in);
    int state = in.promoted ? 3 : in.reachable ? 1 : 2;
    if (state == r->logged_state)
        return;
    if (state == 1)
        log_info("db %s (%s): replica up (replay LSN known, lag %lld ms)", r->label, r->display,
                 (long long)in.lag_ms);
    else if (state == 2)
        log_warn("db %s (%s): replica unreachable; its reads go to the other replicas or the primary",
                 r->label, r->display);
    else
        log_warn("db %s (%s): no longer in recovery (promoted?); not used as a read replica", r->label,
                 r->display);
    r->logged_state = state;
}

static void on_replica_poll(void *arg, PGresult *res, int err)
{
    replica_t *r = arg;
    r->inflight = 0;
    if (err != 0 || PQntuples(res) != 1) {
        SET(r->reachable, 0);
        log_state(r);
        return;
    }
    int in_recovery = PQgetvalue(res, 0, 0)[0] == 't';
    uint64_t lsn = 0;
    if (!PQgetisnull(res, 0, 1))
        db_lsn_parse(PQgetvalue(res, 0, 1), &lsn);
    SET(r->promoted, !in_recovery);
    SET(r->replay_age_ms, PQgetisnull(res, 0, 2) ? (int64_t)-1 : (int64_t)atoll(PQgetvalue(res, 0, 2)));
    SET(r->replay_lsn, lsn);
    SET(r->reachable, 1);
    SET(r->ok_at_us, now_us());
    log_state(r);
}

static void on_primary_poll(void *arg, PGresult *res, int err)
{
    (void)arg;
    primary_inflight = 0;
    uint64_t lsn;
    if (err != 0 || PQntuples(res) != 1 || db_lsn_parse(PQgetvalue(res, 0, 0), &lsn) != 0)
        return;
    SET(primary_lsn, lsn);
    __atomic_store_n(&primary_sent_us, primary_pending_sent_us, __ATOMIC_RELEASE);
}

void db_replicas_poll(db_pool_t *primary, db_pool_t *const *pools, uint64_t now)
{
    if (nreplicas == 0 || now < next_poll_us)
        return;
    next_poll_us = now + REPLICA_POLL_US;
    if (!primary_inflight) {
        primary_pending_sent_us = now_us();
        if (db_pool_query(primary, st_primary_poll, NULL, on_primary_poll, NULL) == 0)
            primary_inflight = 1;
    }
    for (int i = 0; i < nreplicas; i++) {
        replica_t *r = &replicas[i];
        if (r->inflight) {
            /* Unanswered for a while: a hung replica is down until it
             * answers (its pool's watchdog ends the query eventually). */
            if (now - r->sent_at_us > REPLICA_STALE_US && GET(r->reachable)) {
                SET(r->reachable, 0);
                log_state(r);
            }
            continue;
        }
        r->sent_at_us = now;
        if (db_pool_query(pools[i], st_replica_poll, NULL, on_replica_poll, r) == 0) {
            r->inflight = 1;
        } else {
            SET(r->reachable, 0);
            log_state(r);
        }
    }
}

int db_replicas_pick(db_pool_t *const *pools, uint64_t min_lsn, unsigned *rr)
{
    if (min_lsn == DB_LSN_PRIMARY || nreplicas == 0)
        return -1;
    int best = -1, best_load = 0;
    unsigned start = (*rr)++;
    for (int k = 0; k < nreplicas; k++) {
        int i = (int)((start + (unsigned)k) % (unsigned)nreplicas);
        db_replica_info_t in;
        db_replica_info(i, &in);
        if (!in.up || in.replay_lsn < min_lsn)
            continue;
        db_pool_stats_t st;
        db_pool_get_stats(pools[i], &st);
        if (!st.up)
            continue;
        int load = st.busy + st.waiting;
        if (best < 0 || load < best_load)
            best = i, best_load = load;
    }
    return best;
}
