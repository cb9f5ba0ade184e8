/*
 * The Redis client (src/cache/redis.c) against real redis-server processes,
 * started by tests/redis/run.sh:
 *
 *   redis_driver single  <port>              <password> <dir>
 *   redis_driver cluster <port,port,…(6)>    <password> <dir>
 *
 * Each server's files are <dir>/<port>/redis.conf and redis.pid; the driver
 * stops (SIGSTOP/SIGKILL) and restarts (redis-server <conf>, which
 * daemonizes) servers itself so that it can keep its event loop running
 * throughout. It also stalls its own event loop (blocks the thread) to
 * check that the client blames Redis only for time in which a reply could
 * have been read. Prints one line per check ("ok - …" / "FAIL - …") and
 * exits 1 when any failed. Every wait is bounded; a callback that never
 * comes is a failure, not a hang.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache/cluster.h"
#include "cache/redis.h"
#include "core/error.h"
#include "core/log.h"

extern char **environ;

#define TIMEOUT_MS         100
#define CONNECT_TIMEOUT_MS 500
/* A command not finished after this long is hung. Deadlines count only
 * time the loop could read (attentive time), so on a loaded machine a
 * deadline may end well after timeout_ms of wall time: the checks assert
 * that commands end (and never before their deadline), not how soon. */
#define HANG_MS 5000
#define BURST   10000

static h2o_loop_t *loop;
static const char *g_dir, *g_password;
static int n_failed, n_checks;
static int in_command, early_callbacks;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void check(int ok, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(int ok, const char *name, const char *fmt, ...)
{
    char detail[1100] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    n_checks++;
    if (!ok)
        n_failed++;
    printf("%s - %s%s%s\n", ok ? "ok" : "FAIL", name, detail[0] ? ": " : "", detail);
    fflush(stdout);
}

/* Blocks the thread, and so the event loop: nothing is read or written. */
static void stall_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000 * (double)(time_t)(ms / 1000)) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A timer due together with a command's deadline, in a list created before
 * any client's, so that h2o runs it first in the same turn: it blocks the
 * loop while the reply lands in the socket. */
static h2o_timeout_t hold_timeout;
static h2o_timeout_entry_t hold_entry;
static int hold_ran;

static void on_hold(h2o_timeout_entry_t *entry)
{
    hold_ran = 1;
    stall_ms(150);
}

static void spin_for(double ms)
{
    double end = now_ms() + ms;
    while (now_ms() < end)
        h2o_evloop_run(loop, 10);
}

static int spin_until(const int *flag, double ms)
{
    double end = now_ms() + ms;
    while (!*flag && now_ms() < end)
        h2o_evloop_run(loop, 10);
    return *flag;
}

/* ---- replies ----------------------------------------------------------- */

static redisReply *reply_dup(const redisReply *r)
{
    redisReply *d = calloc(1, sizeof(*d));
    if (d == NULL)
        abort();
    d->type = r->type;
    d->integer = r->integer;
    if (r->str != NULL) {
        d->str = malloc(r->len + 1);
        memcpy(d->str, r->str, r->len);
        d->str[r->len] = '\0';
        d->len = r->len;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        d->elements = r->elements;
        d->element = calloc(r->elements, sizeof(*d->element));
        for (size_t i = 0; i < r->elements; i++)
            d->element[i] = reply_dup(r->element[i]);
    }
    return d;
}

static const char *reply_text(const redisReply *r, char *buf, size_t cap)
{
    if (r == NULL)
        return "(no reply)";
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        snprintf(buf, cap, "%s%.*s", r->type == REDIS_REPLY_ERROR ? "-" : "", (int)r->len, r->str);
        break;
    case REDIS_REPLY_INTEGER:
        snprintf(buf, cap, "(integer) %lld", r->integer);
        break;
    case REDIS_REPLY_NIL:
        snprintf(buf, cap, "(nil)");
        break;
    default:
        snprintf(buf, cap, "(array of %zu)", r->elements);
    }
    return buf;
}

/* ---- one command, waited for ------------------------------------------- */

typedef struct res {
    int done;
    int calls;
    int err;
    int refused; /* redis_command itself returned an error */
    redisReply *reply;
    double t0, t1;
} res_t;

static void res_reset(res_t *s)
{
    freeReplyObject(s->reply);
    memset(s, 0, sizeof(*s));
}

static void on_res(void *arg, redisReply *reply, int err)
{
    res_t *s = arg;
    if (in_command)
        early_callbacks++;
    s->calls++;
    s->done = 1;
    s->err = err;
    freeReplyObject(s->reply);
    s->reply = reply != NULL ? reply_dup(reply) : NULL;
    s->t1 = now_ms();
}

static int submitv(redis_t *r, res_t *s, const char *slot_key, int argc, const char **argv,
                   const size_t *lens)
{
    res_reset(s);
    s->t0 = now_ms();
    in_command = 1;
    int rc = redis_command(r, slot_key, slot_key != NULL ? strlen(slot_key) : 0, argc, argv, lens, on_res, s);
    in_command = 0;
    if (rc != 0) {
        s->done = 1;
        s->refused = 1;
        s->err = rc;
        s->t1 = s->t0;
    }
    return rc;
}

/* Runs one command (argv NULL-terminated, argv[1] is the slot key) and
 * waits for it: returns 0 or the error. A command whose callback does not
 * come within `wait_ms` ends the run: the client would have hung. */
static int callv(redis_t *r, res_t *s, double wait_ms, const char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    submitv(r, s, argc > 1 ? argv[1] : NULL, argc, argv, NULL);
    if (!spin_until(&s->done, wait_ms)) {
        check(0, "no hang", "%s: no callback within %.0f ms", argv[0], wait_ms);
        printf("redis_driver: %d of %d checks failed\n", n_failed, n_checks);
        exit(1);
    }
    return s->err;
}

#define CALL(r, s, ...) callv((r), (s), 5000, (const char *[]){__VA_ARGS__, NULL})

static int reply_is(const res_t *s, int type, const char *str)
{
    return s->err == 0 && s->reply != NULL && s->reply->type == type &&
           (str == NULL || (s->reply->len == strlen(str) && memcmp(s->reply->str, str, s->reply->len) == 0));
}

/* ---- servers ----------------------------------------------------------- */

static pid_t server_pid(int port)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%d/redis.pid", g_dir, port);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long pid = -1;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = -1;
    fclose(f);
    return (pid_t)pid;
}

/* Alive and not a zombie (the daemons are not our children). */
static int pid_alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static int kill_and_wait(pid_t pid, int sig, double wait_ms)
{
    if (pid <= 0 || kill(pid, sig) != 0)
        return 0;
    if (sig != SIGKILL)
        return 1;
    double end = now_ms() + wait_ms;
    while (pid_alive(pid) && now_ms() < end)
        h2o_evloop_run(loop, 10);
    return !pid_alive(pid);
}

/* Starts the server of `port` again from its config (it daemonizes), and
 * again if it did not stay up: the port lies in Linux's ephemeral range, so
 * an outgoing connection of some process may hold it for a moment. */
static int server_spawn(int port);
static int server_restart(int port)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        if (!server_spawn(port))
            return 0;
        double end = now_ms() + 1500;
        while (now_ms() < end) {
            h2o_evloop_run(loop, 10);
            pid_t pid = server_pid(port);
            if (pid > 0 && pid_alive(pid))
                return 1;
        }
    }
    return 0;
}

static int server_spawn(int port)
{
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/%d/redis.conf", g_dir, port);
    char *argv[] = {"redis-server", conf, NULL};
    pid_t child;
    if (posix_spawnp(&child, "redis-server", NULL, NULL, argv, environ) != 0)
        return 0;
    int st;
    /* the foreground process exits as soon as the daemon has forked */
    return waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static redis_t *client_url(int port, const char *password, int db, int timeout_ms)
{
    char url[256], err[256];
    if (db > 0)
        snprintf(url, sizeof(url), "redis://:%s@127.0.0.1:%d/%d", password, port, db);
    else
        snprintf(url, sizeof(url), "redis://:%s@127.0.0.1:%d", password, port);
    redis_options_t opt = {.url = url, .timeout_ms = timeout_ms, .connect_timeout_ms = CONNECT_TIMEOUT_MS};
    redis_t *r = redis_create(loop, &opt, err, sizeof(err));
    if (r == NULL) {
        fprintf(stderr, "redis_create(%s): %s\n", url, err);
        exit(1);
    }
    return r;
}

static int wait_up(redis_t *r, double ms)
{
    double end = now_ms() + ms;
    while (!redis_is_up(r) && now_ms() < end)
        h2o_evloop_run(loop, 10);
    return redis_is_up(r);
}

/* ---- the pipelined burst ----------------------------------------------- */

static int burst_done, burst_bad;
static char burst_first_bad[256];

static void on_burst(void *arg, redisReply *reply, int err)
{
    long long want = (long long)(intptr_t)arg;
    if (in_command)
        early_callbacks++;
    burst_done++;
    int ok = err == 0 && reply != NULL &&
             (want > 0 ? reply->type == REDIS_REPLY_INTEGER && reply->integer == want
                       : reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0);
    if (!ok && burst_bad++ == 0) {
        char t[128];
        snprintf(burst_first_bad, sizeof(burst_first_bad), "err %d, reply %s (want %lld)", err,
                 reply_text(reply, t, sizeof(t)), want);
    }
}

/* BURST commands issued back to back without the loop running (so they are
 * pipelined on the connections), then waited for. `incr_key` non-NULL: INCR
 * one counter and check the replies count 1..BURST in order; else SET
 * BURST keys spread over the slots. */
static void run_burst(redis_t *r, const char *label, const char *incr_key)
{
    burst_done = burst_bad = 0;
    burst_first_bad[0] = '\0';
    int refused = 0;
    double t0 = now_ms();
    for (int i = 0; i < BURST; i++) {
        char key[64], val[32];
        int rc;
        in_command = 1;
        if (incr_key != NULL) {
            const char *argv[2] = {"INCR", incr_key};
            rc = redis_command(r, incr_key, strlen(incr_key), 2, argv, NULL, on_burst,
                               (void *)(intptr_t)(i + 1));
        } else {
            snprintf(key, sizeof(key), "burst:%d", i);
            snprintf(val, sizeof(val), "%d", i);
            const char *argv[3] = {"SET", key, val};
            rc = redis_command(r, key, strlen(key), 3, argv, NULL, on_burst, (void *)(intptr_t)0);
        }
        in_command = 0;
        if (rc != 0)
            refused++;
    }
    double end = now_ms() + 30000;
    while (burst_done + refused < BURST && now_ms() < end)
        h2o_evloop_run(loop, 10);
    double ms = now_ms() - t0;
    check(refused == 0 && burst_done == BURST && burst_bad == 0, label,
          "%d commands in %.0f ms = %.0f ops/s (refused %d, answered %d, bad %d%s%s)", BURST, ms,
          BURST / (ms / 1000.0), refused, burst_done, burst_bad, burst_bad ? ", first: " : "",
          burst_first_bad);
}

/* ---- single Redis ------------------------------------------------------ */

static void test_single(int port)
{
    res_t s = {0};
    char t[256];

    /* a command issued before the first connection is up is queued behind
     * the handshake, not refused */
    redis_t *r = client_url(port, g_password, 3, TIMEOUT_MS);
    int rc = CALL(r, &s, "SET", "drv:early", "1");
    check(rc == 0 && reply_is(&s, REDIS_REPLY_STATUS, "OK") && s.calls == 1, "single: command during connect",
          "rc %d, reply %s", rc, reply_text(s.reply, t, sizeof(t)));
    check(wait_up(r, 3000), "single: up", "redis_is_up after AUTH + SELECT");

    /* SELECT from the URL's /3 */
    CALL(r, &s, "CLIENT", "INFO");
    check(s.err == 0 && s.reply != NULL && s.reply->type == REDIS_REPLY_STRING &&
              strstr(s.reply->str, " db=3 "),
          "single: SELECT db from URL", "%s", s.reply && s.reply->str ? "CLIENT INFO has db=3" : "no reply");

    /* SET/GET round trip with a binary value */
    static const char bin[] = "va\0l\r\nue";
    const char *set_argv[3] = {"SET", "drv:bin", bin};
    size_t set_lens[3] = {3, 7, sizeof(bin) - 1};
    submitv(r, &s, "drv:bin", 3, set_argv, set_lens);
    spin_until(&s.done, 5000);
    int set_ok = reply_is(&s, REDIS_REPLY_STATUS, "OK");
    CALL(r, &s, "GET", "drv:bin");
    check(set_ok && s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_STRING &&
              s.reply->len == sizeof(bin) - 1 && memcmp(s.reply->str, bin, sizeof(bin) - 1) == 0,
          "single: SET/GET round trip", "binary value of %zu bytes, %.1f ms", sizeof(bin) - 1, s.t1 - s.t0);

    /* MGET over a {hash tag} */
    CALL(r, &s, "SET", "{user:7}.name", "ada");
    CALL(r, &s, "SET", "{user:7}.mail", "ada@example.com");
    CALL(r, &s, "MGET", "{user:7}.name", "{user:7}.mail", "{user:7}.none");
    check(s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_ARRAY && s.reply->elements == 3 &&
              strcmp(s.reply->element[0]->str, "ada") == 0 &&
              strcmp(s.reply->element[1]->str, "ada@example.com") == 0 &&
              s.reply->element[2]->type == REDIS_REPLY_NIL,
          "single: MGET with {hash tag}", "%s", reply_text(s.reply, t, sizeof(t)));

    /* the server's error replies reach the caller as replies (err 0) */
    CALL(r, &s, "INCR", "{user:7}.name");
    check(s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_ERROR, "single: error reply passed through",
          "%s", reply_text(s.reply, t, sizeof(t)));

    /* the pipelined burst (a client with a deadline an ASan build meets) */
    redis_t *rb = client_url(port, g_password, 3, 5000);
    wait_up(rb, 3000);
    CALL(rb, &s, "DEL", "drv:counter");
    run_burst(rb, "single: pipelined burst of 10,000 INCR (replies in order)", "drv:counter");
    CALL(rb, &s, "GET", "drv:counter");
    check(reply_is(&s, REDIS_REPLY_STRING, "10000"), "single: counter after burst", "%s",
          reply_text(s.reply, t, sizeof(t)));
    redis_destroy(rb);

    /* a deadline: BLPOP blocks this connection for 400 ms; the caller hears
     * MKD_EUNAVAILABLE at ~timeout_ms, the late reply is dropped (no second
     * callback) and the connection stays up */
    res_t bl = {0};
    CALL(r, &bl, "BLPOP", "drv:empty-list", "0.4");
    double lat = bl.t1 - bl.t0;
    check(bl.err == MKD_EUNAVAILABLE && lat >= TIMEOUT_MS - 5 && lat <= HANG_MS,
          "single: deadline on a slow command", "err %d after %.0f ms (timeout_ms %d)", bl.err, lat,
          TIMEOUT_MS);
    /* PINGs queue behind the blocked BLPOP (and time out) until it has
     * answered. Redis answers a connection's commands in order: once a
     * PING's reply is in, BLPOP's late reply has arrived too, and must
     * have been dropped, not delivered as a second callback. */
    int pong = 0, pings = 0;
    for (double end = now_ms() + HANG_MS; !pong && now_ms() < end; pings++) {
        CALL(r, &s, "PING");
        pong = reply_is(&s, REDIS_REPLY_STATUS, "PONG");
    }
    check(pong, "single: connection usable after a timeout", "%d PING(s), last: %s", pings,
          reply_text(s.reply, t, sizeof(t)));
    check(bl.calls == 1 && redis_is_up(r), "single: late reply dropped", "callbacks %d, still up %d",
          bl.calls, redis_is_up(r));
    res_reset(&bl);

    /* The loop stalls (2 s, not one turn) right after a command is sent, so
     * it is written only after the stall: the client must neither fail it
     * nor drop the connection for a silence that was the loop's own. */
    submitv(r, &s, "drv:bin", 2, (const char *[]){"GET", "drv:bin"}, NULL);
    stall_ms(2000);
    spin_until(&s.done, 5000);
    check(s.calls == 1 && s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_STRING && redis_is_up(r),
          "single: a stalled loop is not blamed", "err %d (%s) %.0f ms after the send, up %d", s.err,
          reply_text(s.reply, t, sizeof(t)), s.t1 - s.t0, redis_is_up(r));
    /* The reply lands in the socket while the loop is busy just before the
     * command's deadline runs (the hold timer, due with it, blocks 150 ms;
     * the command was written at the start of that same turn): the deadline
     * must find the reply, not fail the command. */
    submitv(r, &s, "drv:bin", 2, (const char *[]){"GET", "drv:bin"}, NULL);
    hold_ran = 0;
    h2o_timeout_link(loop, &hold_timeout, &hold_entry);
    stall_ms(TIMEOUT_MS + 20); /* the deadline and the hold become due, nothing is written */
    spin_until(&s.done, 5000);
    check(hold_ran && s.calls == 1 && s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_STRING &&
              redis_is_up(r),
          "single: a reply waiting in the socket at the deadline is delivered",
          "hold ran %d, err %d (%s) %.0f ms after the send, up %d", hold_ran, s.err,
          reply_text(s.reply, t, sizeof(t)), s.t1 - s.t0, redis_is_up(r));
    CALL(r, &s, "PING");
    check(reply_is(&s, REDIS_REPLY_STATUS, "PONG"), "single: connection usable after the stalls", "%s",
          reply_text(s.reply, t, sizeof(t)));

    /* wrong password: never up, commands refused at once, no hang */
    redis_t *rw = client_url(port, "wrong-password", 0, TIMEOUT_MS);
    spin_for(400);
    rc = submitv(rw, &s, "x", 2, (const char *[]){"GET", "x"}, NULL);
    check(!redis_is_up(rw) && rc == MKD_EUNAVAILABLE && s.calls == 0, "single: wrong password",
          "up %d, redis_command %d, callbacks %d", redis_is_up(rw), rc, s.calls);
    redis_destroy(rw);

    /* nothing listening: a port we hold bound but not listening */
    int hold = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof(sin);
    if (hold < 0 || bind(hold, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(hold, (struct sockaddr *)&sin, &slen) != 0) {
        perror("socket");
        exit(1);
    }
    redis_t *rn = client_url(ntohs(sin.sin_port), g_password, 0, TIMEOUT_MS);
    spin_for(300);
    rc = submitv(rn, &s, "x", 2, (const char *[]){"GET", "x"}, NULL);
    check(!redis_is_up(rn) && rc == MKD_EUNAVAILABLE && s.calls == 0, "single: no server",
          "up %d, redis_command %d", redis_is_up(rn), rc);
    redis_destroy(rn);
    close(hold);

    /* SIGSTOP: a stalled server. Every command ends with MKD_EUNAVAILABLE
     * within timeout_ms + slack: first by deadline, then — once the client
     * gave up on the connection — at once. */
    pid_t pid = server_pid(port);
    check(kill_and_wait(pid, SIGSTOP, 0), "single: SIGSTOP server", "pid %d", (int)pid);
    int n_timeout = 0, n_refused = 0, n_other = 0;
    double max_lat = 0;
    for (int i = 0; i < 40; i++) {
        callv(r, &s, 5000, (const char *[]){"GET", "drv:bin", NULL});
        double l = s.t1 - s.t0;
        if (l > max_lat)
            max_lat = l;
        if (s.err != MKD_EUNAVAILABLE)
            n_other++;
        else if (s.refused)
            n_refused++;
        else
            n_timeout++;
        spin_for(20);
    }
    check(n_other == 0 && max_lat <= HANG_MS && n_refused > 0,
          "single: stopped server fails, then fails at once",
          "40 GETs: %d by deadline, %d refused at once, %d other; slowest %.0f ms", n_timeout, n_refused,
          n_other, max_lat);
    check(!redis_is_up(r), "single: down while stopped", "redis_is_up %d", redis_is_up(r));

    check(kill_and_wait(pid, SIGKILL, 5000), "single: SIGKILL server", "pid %d gone", (int)pid);
    n_other = 0;
    max_lat = 0;
    for (int i = 0; i < 20; i++) {
        callv(r, &s, 5000, (const char *[]){"GET", "drv:bin", NULL});
        if (s.t1 - s.t0 > max_lat)
            max_lat = s.t1 - s.t0;
        if (s.err != MKD_EUNAVAILABLE)
            n_other++;
        spin_for(20);
    }
    check(n_other == 0 && max_lat <= HANG_MS, "single: killed server fails, never hangs",
          "20 GETs, slowest %.0f ms", max_lat);

    /* restart: the client reconnects by itself (backoff ≤ 2 s) */
    double t0 = now_ms();
    check(server_restart(port), "single: restart server", "redis-server %s/%d/redis.conf", g_dir, port);
    double back = -1;
    while (now_ms() - t0 < 10000) {
        if (submitv(r, &s, NULL, 1, (const char *[]){"PING"}, NULL) == 0) {
            spin_until(&s.done, 5000);
            if (reply_is(&s, REDIS_REPLY_STATUS, "PONG")) {
                back = now_ms() - t0;
                break;
            }
        }
        spin_for(20);
    }
    check(back >= 0 && redis_is_up(r), "single: reconnects after restart", "first PONG %.0f ms after restart",
          back);
    CALL(r, &s, "CLIENT", "INFO");
    check(s.err == 0 && s.reply && s.reply->str && strstr(s.reply->str, " db=3 "), "single: re-handshake",
          "AUTH + SELECT 3 again after reconnect");

    /* destroy with commands in flight: each caller hears MKD_EUNAVAILABLE */
    res_t pending[5];
    memset(pending, 0, sizeof(pending));
    int accepted = 0;
    for (int i = 0; i < 5; i++)
        accepted += submitv(r, &pending[i], "drv:bin", 2, (const char *[]){"GET", "drv:bin"}, NULL) == 0;
    redis_destroy(r);
    int unavailable = 0;
    for (int i = 0; i < 5; i++) {
        unavailable += pending[i].calls == 1 && pending[i].err == MKD_EUNAVAILABLE;
        res_reset(&pending[i]);
    }
    check(accepted == 5 && unavailable == 5, "single: destroy fails pending commands",
          "%d accepted, %d answered MKD_EUNAVAILABLE", accepted, unavailable);
    res_reset(&s);
}

/* ---- cluster ----------------------------------------------------------- */

#define NPORTS 6
static int ports[NPORTS];

typedef struct master {
    int port;
    unsigned lo[8], hi[8];
    int nranges;
} master_t;

static master_t masters[NPORTS];
static int nmasters;

static int master_of_slot(unsigned slot)
{
    for (int m = 0; m < nmasters; m++)
        for (int k = 0; k < masters[m].nranges; k++)
            if (slot >= masters[m].lo[k] && slot <= masters[m].hi[k])
                return m;
    return -1;
}

static int load_slots(redis_t *r)
{
    res_t s = {0};
    CALL(r, &s, "CLUSTER", "SLOTS");
    nmasters = 0;
    if (s.err != 0 || s.reply == NULL || s.reply->type != REDIS_REPLY_ARRAY) {
        res_reset(&s);
        return 0;
    }
    for (size_t i = 0; i < s.reply->elements; i++) {
        redisReply *e = s.reply->element[i];
        int port = (int)e->element[2]->element[1]->integer;
        int m;
        for (m = 0; m < nmasters && masters[m].port != port; m++)
            ;
        if (m == nmasters) {
            if (nmasters == NPORTS)
                continue;
            memset(&masters[m], 0, sizeof(masters[m]));
            masters[m].port = port;
            nmasters++;
        }
        if (masters[m].nranges < 8) {
            masters[m].lo[masters[m].nranges] = (unsigned)e->element[0]->integer;
            masters[m].hi[masters[m].nranges] = (unsigned)e->element[1]->integer;
            masters[m].nranges++;
        }
    }
    res_reset(&s);
    return nmasters;
}

/* A node's id, its role and its master's port, from CLUSTER NODES. */
typedef struct nodeinfo {
    char id[64];
    int port;
    int is_master;
    char master_id[64];
} nodeinfo_t;

static int cluster_nodes(redis_t *admin, nodeinfo_t *out, int max)
{
    res_t s = {0};
    CALL(admin, &s, "CLUSTER", "NODES");
    int n = 0;
    if (s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_STRING) {
        char *save = NULL;
        for (char *line = strtok_r(s.reply->str, "\n", &save); line && n < max;
             line = strtok_r(NULL, "\n", &save)) {
            char id[64], addr[128], flags[128], master[64];
            if (sscanf(line, "%63s %127s %127s %63s", id, addr, flags, master) != 4)
                continue;
            if (strstr(flags, "fail") != NULL && strstr(flags, "fail?") == NULL)
                continue; /* a failed node: not a candidate */
            char *colon = strchr(addr, ':');
            snprintf(out[n].id, sizeof(out[n].id), "%s", id);
            out[n].port = colon ? atoi(colon + 1) : 0;
            out[n].is_master = strstr(flags, "master") != NULL;
            snprintf(out[n].master_id, sizeof(out[n].master_id), "%s", master);
            n++;
        }
    }
    res_reset(&s);
    return n;
}

static int role_is_master(int port)
{
    redis_t *a = client_url(port, g_password, 0, 1000);
    res_t s = {0};
    int is = 0;
    if (wait_up(a, 2000)) {
        CALL(a, &s, "ROLE");
        is = s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_ARRAY && s.reply->elements > 0 &&
             strcmp(s.reply->element[0]->str, "master") == 0;
    }
    res_reset(&s);
    redis_destroy(a);
    return is;
}

/* Probes: one key per master, SET every 10 ms while running; a failed
 * attempt is simply retried on the next tick. Records the longest time
 * without a success per key (the unavailability window) and the slowest
 * single attempt (which must stay within timeout_ms + slack). */
typedef struct probe {
    char key[64];
    int inflight;
    double sent_at, last_ok, max_gap, max_lat;
    int ok, fail, refused;
    char first_error[128];
} probe_t;

static probe_t probes[3];
static int nprobes;
static redis_t *probe_r;
static h2o_timeout_t probe_timeout;
static h2o_timeout_entry_t probe_entry;
static int probing;

static void on_probe(void *arg, redisReply *reply, int err)
{
    probe_t *p = arg;
    double now = now_ms();
    if (in_command)
        early_callbacks++;
    p->inflight = 0;
    if (now - p->sent_at > p->max_lat)
        p->max_lat = now - p->sent_at;
    if (err == 0 && reply && reply->type == REDIS_REPLY_STATUS) {
        if (now - p->last_ok > p->max_gap)
            p->max_gap = now - p->last_ok;
        p->last_ok = now;
        p->ok++;
    } else {
        p->fail++;
        if (err == 0 && reply && reply->type == REDIS_REPLY_ERROR && p->first_error[0] == '\0')
            snprintf(p->first_error, sizeof(p->first_error), "%s", reply->str);
    }
}

static void on_probe_tick(h2o_timeout_entry_t *e)
{
    for (int i = 0; i < nprobes; i++) {
        probe_t *p = &probes[i];
        if (p->inflight)
            continue;
        const char *argv[3] = {"SET", p->key, "v"};
        p->sent_at = now_ms();
        in_command = 1;
        int rc = redis_command(probe_r, p->key, strlen(p->key), 3, argv, NULL, on_probe, p);
        in_command = 0;
        if (rc == 0)
            p->inflight = 1;
        else
            p->refused++;
    }
    if (probing)
        h2o_timeout_link(loop, &probe_timeout, &probe_entry);
}

static void probes_start(void)
{
    double now = now_ms();
    for (int i = 0; i < nprobes; i++) {
        probe_t *p = &probes[i];
        p->last_ok = now;
        p->max_gap = p->max_lat = 0;
        p->ok = p->fail = p->refused = 0;
        p->first_error[0] = '\0';
    }
    probing = 1;
    h2o_timeout_link(loop, &probe_timeout, &probe_entry);
}

static void probes_stop(void)
{
    probing = 0;
    h2o_timeout_unlink(&probe_entry);
    double end = now_ms() + 5000;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < nprobes; i++)
            busy |= probes[i].inflight;
        if (!busy || now_ms() > end)
            break;
        h2o_evloop_run(loop, 10);
    }
    double now = now_ms();
    for (int i = 0; i < nprobes; i++)
        if (now - probes[i].last_ok > probes[i].max_gap)
            probes[i].max_gap = now - probes[i].last_ok;
}

static int probe_of_port(int port)
{
    for (int i = 0; i < nprobes; i++) {
        int m = master_of_slot(redis_key_slot(probes[i].key, strlen(probes[i].key)));
        if (m >= 0 && masters[m].port == port)
            return i;
    }
    return -1;
}

/* Spins until the probe of `i` has succeeded after `since`, or ms passed. */
static int wait_probe_ok_after(int i, double since, double ms)
{
    double end = now_ms() + ms;
    while (probes[i].last_ok <= since && now_ms() < end)
        h2o_evloop_run(loop, 10);
    return probes[i].last_ok > since;
}

static void report_probes(const char *phase, int focus, double bound_gap)
{
    int all_ok = 1;
    char line[1024] = "";
    size_t o = 0;
    for (int i = 0; i < nprobes; i++) {
        probe_t *p = &probes[i];
        o += (size_t)snprintf(line + o, sizeof(line) - o,
                              "%s%s: %d ok, %d failed, %d refused, longest gap %.0f ms, slowest %.0f ms",
                              i ? "; " : "", p->key, p->ok, p->fail, p->refused, p->max_gap, p->max_lat);
        if (p->max_lat > HANG_MS || p->ok == 0)
            all_ok = 0;
        if (focus >= 0 && i == focus && p->max_gap > bound_gap)
            all_ok = 0;
    }
    check(all_ok, phase, "%s", line);
}

static void test_cluster(const char *seeds)
{
    res_t s = {0};
    char t[256], err[256];

    redis_options_t opt = {.cluster_nodes = seeds,
                           .password = g_password,
                           .timeout_ms = TIMEOUT_MS,
                           .connect_timeout_ms = CONNECT_TIMEOUT_MS};
    redis_t *r = redis_create(loop, &opt, err, sizeof(err));
    if (r == NULL) {
        check(0, "cluster: create", "%s", err);
        return;
    }
    /* no topology yet: refused at once, callback never runs */
    int rc = submitv(r, &s, "k", 2, (const char *[]){"GET", "k"}, NULL);
    check(rc == MKD_EUNAVAILABLE && s.calls == 0, "cluster: refused before topology", "redis_command %d", rc);
    double t0 = now_ms();
    int up = wait_up(r, 5000);
    check(up, "cluster: up", "topology + 3 master connections in %.0f ms", now_ms() - t0);
    if (!up)
        goto out;
    int nm = load_slots(r);
    check(nm == 3, "cluster: CLUSTER SLOTS", "%d masters", nm);

    /* key slots agree with the server's CLUSTER KEYSLOT */
    static const char *keys[] = {"123456789",
                                 "foo",
                                 "{user1000}.following",
                                 "foo{}{bar}",
                                 "foo{{bar}}zap",
                                 "foo{bar}{zap}",
                                 "{bar",
                                 "bar}",
                                 "{}",
                                 "product:42",
                                 "tag{products}:v",
                                 "h\xc3\xa9llo",
                                 "}{x}",
                                 ""};
    int agree = 0, nkeys = (int)(sizeof(keys) / sizeof(keys[0]));
    char first_mismatch[128] = "";
    for (int i = 0; i < nkeys; i++) {
        CALL(r, &s, "CLUSTER", "KEYSLOT", keys[i]);
        unsigned mine = redis_key_slot(keys[i], strlen(keys[i]));
        if (s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_INTEGER &&
            (unsigned)s.reply->integer == mine)
            agree++;
        else if (first_mismatch[0] == '\0')
            snprintf(first_mismatch, sizeof(first_mismatch), "\"%s\": server %lld, ours %u", keys[i],
                     s.reply ? s.reply->integer : -1LL, mine);
    }
    check(agree == nkeys, "cluster: redis_key_slot == CLUSTER KEYSLOT", "%d/%d keys agree%s%s", agree, nkeys,
          first_mismatch[0] ? "; " : "", first_mismatch);

    /* keys over all three masters round-trip */
    int per_master[NPORTS] = {0}, rt_ok = 0;
    const int nspread = 300;
    for (int i = 0; i < nspread; i++) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "spread:%d", i);
        snprintf(val, sizeof(val), "v%d", i);
        CALL(r, &s, "SET", key, val);
        int set_ok = reply_is(&s, REDIS_REPLY_STATUS, "OK");
        CALL(r, &s, "GET", key);
        if (set_ok && reply_is(&s, REDIS_REPLY_STRING, val)) {
            rt_ok++;
            int m = master_of_slot(redis_key_slot(key, strlen(key)));
            if (m >= 0)
                per_master[m]++;
        }
    }
    check(rt_ok == nspread && per_master[0] > 0 && per_master[1] > 0 && per_master[2] > 0,
          "cluster: keys on all masters round-trip", "%d/%d; per master %d:%d %d:%d %d:%d", rt_ok, nspread,
          masters[0].port, per_master[0], masters[1].port, per_master[1], masters[2].port, per_master[2]);

    /* MGET with a hash tag */
    CALL(r, &s, "SET", "{cart:9}.a", "1");
    CALL(r, &s, "SET", "{cart:9}.b", "2");
    CALL(r, &s, "MGET", "{cart:9}.a", "{cart:9}.b");
    check(s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_ARRAY && s.reply->elements == 2 &&
              strcmp(s.reply->element[0]->str, "1") == 0 && strcmp(s.reply->element[1]->str, "2") == 0,
          "cluster: MGET with {hash tag}", "%s", reply_text(s.reply, t, sizeof(t)));
    CALL(r, &s, "MGET", "spread:1", "spread:2");
    check(s.err == 0 && s.reply && s.reply->type == REDIS_REPLY_ERROR &&
              strncmp(s.reply->str, "CROSSSLOT", 9) == 0,
          "cluster: cross-slot MGET is the server's error", "%s", reply_text(s.reply, t, sizeof(t)));

    /* the burst, spread over the three masters */
    {
        redis_options_t bo = opt;
        bo.timeout_ms = 5000;
        redis_t *rb = redis_create(loop, &bo, err, sizeof(err));
        wait_up(rb, 5000);
        run_burst(rb, "cluster: pipelined burst of 10,000 SET over 3 masters", NULL);
        CALL(rb, &s, "DEL", "{burst}n");
        run_burst(rb, "cluster: pipelined burst of 10,000 INCR on one slot", "{burst}n");
        redis_destroy(rb);
    }

    /* ASK and MOVED, made on purpose: migrate one slot by hand. */
    {
        const char *key = "{migrating}k";
        unsigned slot = redis_key_slot(key, strlen(key));
        int src = master_of_slot(slot), dst = (src + 1) % nmasters;
        redis_t *as = client_url(masters[src].port, g_password, 0, 1000);
        redis_t *ad = client_url(masters[dst].port, g_password, 0, 1000);
        wait_up(as, 2000);
        wait_up(ad, 2000);
        char src_id[64] = "", dst_id[64] = "", slot_s[16];
        snprintf(slot_s, sizeof(slot_s), "%u", slot);
        CALL(as, &s, "CLUSTER", "MYID");
        if (s.reply && s.reply->str)
            snprintf(src_id, sizeof(src_id), "%s", s.reply->str);
        CALL(ad, &s, "CLUSTER", "MYID");
        if (s.reply && s.reply->str)
            snprintf(dst_id, sizeof(dst_id), "%s", s.reply->str);
        CALL(as, &s, "CLUSTER", "COUNTKEYSINSLOT", slot_s);
        long long in_slot = s.reply ? s.reply->integer : -1;
        CALL(ad, &s, "CLUSTER", "SETSLOT", slot_s, "IMPORTING", src_id);
        int imp = reply_is(&s, REDIS_REPLY_STATUS, "OK");
        CALL(as, &s, "CLUSTER", "SETSLOT", slot_s, "MIGRATING", dst_id);
        int mig = reply_is(&s, REDIS_REPLY_STATUS, "OK");
        /* the key is on neither node: the source answers -ASK, the client
         * follows with ASKING + SET on the destination */
        CALL(r, &s, "SET", key, "asked");
        int set_ok = reply_is(&s, REDIS_REPLY_STATUS, "OK");
        CALL(r, &s, "GET", key);
        int get_ok = reply_is(&s, REDIS_REPLY_STRING, "asked");
        CALL(ad, &s, "CLUSTER", "COUNTKEYSINSLOT", slot_s);
        long long on_dst = s.reply ? s.reply->integer : -1;
        check(in_slot == 0 && imp && mig && set_ok && get_ok && on_dst == 1, "cluster: -ASK followed",
              "slot %u %d→%d: SET %d, GET %d, keys on destination %lld", slot, masters[src].port,
              masters[dst].port, set_ok, get_ok, on_dst);
        /* finish the migration: the slot now lives on dst, the client's
         * table still says src, so src answers -MOVED */
        CALL(ad, &s, "CLUSTER", "SETSLOT", slot_s, "NODE", dst_id);
        CALL(as, &s, "CLUSTER", "SETSLOT", slot_s, "NODE", dst_id);
        int node_ok = reply_is(&s, REDIS_REPLY_STATUS, "OK");
        CALL(r, &s, "GET", key);
        int moved_ok = reply_is(&s, REDIS_REPLY_STRING, "asked");
        CALL(r, &s, "GET", key);
        check(node_ok && moved_ok && reply_is(&s, REDIS_REPLY_STRING, "asked"), "cluster: -MOVED followed",
              "GET after the slot moved: %s", reply_text(s.reply, t, sizeof(t)));
        /* and back, so the rest of the run sees the usual layout */
        CALL(as, &s, "CLUSTER", "SETSLOT", slot_s, "IMPORTING", dst_id);
        CALL(ad, &s, "CLUSTER", "SETSLOT", slot_s, "MIGRATING", src_id);
        const char *mv[] = {"MIGRATE", "127.0.0.1", "",     "",  "0", "5000",
                            "AUTH",    g_password,  "KEYS", key, NULL};
        char port_s[16];
        snprintf(port_s, sizeof(port_s), "%d", masters[src].port);
        mv[2] = port_s;
        callv(ad, &s, 5000, mv);
        CALL(as, &s, "CLUSTER", "SETSLOT", slot_s, "NODE", src_id);
        CALL(ad, &s, "CLUSTER", "SETSLOT", slot_s, "NODE", src_id);
        CALL(r, &s, "GET", key);
        check(reply_is(&s, REDIS_REPLY_STRING, "asked"), "cluster: slot moved back", "%s",
              reply_text(s.reply, t, sizeof(t)));
        redis_destroy(as);
        redis_destroy(ad);
    }

    /* Probes on one key per master for the failovers. */
    nprobes = 0;
    for (int m = 0; m < nmasters && nprobes < 3; m++) {
        for (int i = 0; i < 100000; i++) {
            char key[64];
            snprintf(key, sizeof(key), "probe:%d", i);
            if (master_of_slot(redis_key_slot(key, strlen(key))) == m) {
                snprintf(probes[nprobes++].key, sizeof(probes[0].key), "%s", key);
                break;
            }
        }
    }
    probe_r = r;
    h2o_timeout_init(loop, &probe_timeout, 10);
    probe_entry.cb = on_probe_tick;

    /* Manual failover: a replica takes over its master under traffic. */
    int replica = 0, master = 0;
    {
        redis_t *a0 = client_url(masters[0].port, g_password, 0, 1000);
        wait_up(a0, 2000);
        nodeinfo_t ni[16];
        int n = cluster_nodes(a0, ni, 16);
        for (int i = 0; i < n && replica == 0; i++) {
            if (ni[i].is_master)
                continue;
            for (int j = 0; j < n; j++)
                if (ni[j].is_master && strcmp(ni[j].id, ni[i].master_id) == 0) {
                    replica = ni[i].port;
                    master = ni[j].port;
                }
        }
        redis_destroy(a0);
    }
    check(replica != 0, "cluster: found a replica", "%d replicates %d", replica, master);
    if (replica == 0)
        goto out_probes;
    {
        int focus = probe_of_port(master);
        probes_start();
        spin_for(500);
        redis_t *ar = client_url(replica, g_password, 0, 5000);
        wait_up(ar, 2000);
        double tf = now_ms();
        CALL(ar, &s, "CLUSTER", "FAILOVER");
        int started = reply_is(&s, REDIS_REPLY_STATUS, "OK");
        redis_destroy(ar);
        double end = tf + 15000;
        while (!role_is_master(replica) && now_ms() < end)
            spin_for(100);
        double promoted = now_ms() - tf;
        int back = focus >= 0 && wait_probe_ok_after(focus, now_ms(), 10000);
        double recovered = now_ms() - tf;
        spin_for(1000);
        probes_stop();
        check(started && promoted < 15000 && back, "cluster: CLUSTER FAILOVER",
              "%d promoted in %.0f ms; writes to its slots succeed again %.0f ms after FAILOVER", replica,
              promoted, recovered);
        report_probes("cluster: traffic during manual failover", focus, 5000);
    }

    /* Crash: SIGKILL the new master; its old master (now its replica) is
     * promoted after cluster-node-timeout; traffic resumes by itself. */
    {
        load_slots(r);
        int focus = probe_of_port(replica);
        pid_t pid = server_pid(replica);
        probes_start();
        spin_for(500);
        double tk = now_ms();
        int killed = kill_and_wait(pid, SIGKILL, 5000);
        double end = tk + 20000;
        while (!role_is_master(master) && now_ms() < end)
            spin_for(100);
        double promoted = now_ms() - tk;
        int back = focus >= 0 && wait_probe_ok_after(focus, now_ms(), 10000);
        double recovered = now_ms() - tk;
        spin_for(1000);
        probes_stop();
        check(killed && promoted < 20000 && back, "cluster: master killed (SIGKILL)",
              "%d promoted %.0f ms after the kill; writes to its slots succeed again after %.0f ms", master,
              promoted, recovered);
        report_probes("cluster: traffic while a master dies", focus, 15000);

        /* the killed node comes back (as a replica); the client keeps
         * working and stays up */
        int restarted = server_restart(replica);
        probes_start();
        spin_for(2000);
        probes_stop();
        check(restarted, "cluster: restart killed node", "port %d", replica);
        report_probes("cluster: traffic while the old master rejoins", -1, 0);
        check(wait_up(r, 5000), "cluster: up after failovers", "redis_is_up %d", redis_is_up(r));
        CALL(r, &s, "GET", "spread:1");
        check(reply_is(&s, REDIS_REPLY_STRING, "v1"), "cluster: data survived the failovers", "%s",
              reply_text(s.reply, t, sizeof(t)));
    }

out_probes:
    h2o_timeout_dispose(loop, &probe_timeout);
out:
    redis_destroy(r);
    res_reset(&s);
}

int main(int argc, char **argv)
{
    if (argc != 5 || (strcmp(argv[1], "single") != 0 && strcmp(argv[1], "cluster") != 0)) {
        fprintf(stderr, "usage: %s single <port> <password> <dir> | cluster <port,…> <password> <dir>\n",
                argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* REDIS_DRIVER_LOG=debug shows the client's redirections and topology */
    const char *lvl = getenv("REDIS_DRIVER_LOG");
    if (lvl != NULL && log_parse_level(lvl) >= 0)
        log_set_level(log_parse_level(lvl));
    g_password = argv[3];
    g_dir = argv[4];
    loop = h2o_evloop_create();
    h2o_timeout_init(loop, &hold_timeout, TIMEOUT_MS);
    hold_entry.cb = on_hold;
    if (strcmp(argv[1], "single") == 0) {
        test_single(atoi(argv[2]));
    } else {
        char *list = strdup(argv[2]), *save = NULL;
        int n = 0;
        for (char *p = strtok_r(list, ",", &save); p && n < NPORTS; p = strtok_r(NULL, ",", &save))
            ports[n++] = atoi(strrchr(p, ':') ? strrchr(p, ':') + 1 : p);
        free(list);
        char seeds[512];
        size_t o = 0;
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(seeds + o, sizeof(seeds) - o, "%s127.0.0.1:%d", i ? "," : "", ports[i]);
        test_cluster(seeds);
    }
    check(early_callbacks == 0, "callbacks never run inside redis_command", "%d did", early_callbacks);
    /* let the loop free the sockets the clients handed back */
    for (int i = 0; i < 3; i++)
        h2o_evloop_run(loop, 0);
    h2o_timeout_dispose(loop, &hold_timeout);
    h2o_evloop_destroy(loop);
    printf("redis_driver %s: %d of %d checks failed\n", argv[1], n_failed, n_checks);
    return n_failed ? 1 : 0;
}
