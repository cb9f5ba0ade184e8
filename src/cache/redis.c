#include "cache/redis.h"

#include <hiredis/async.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cache/cluster.h"
#include "core/error.h"
#include "core/log.h"
#include "core/resolve.h"
#include "core/metrics.h"

/*
 * How it fits together
 *
 * node_t  one server (host:port): the single Redis, or a cluster node (a
 *         seed, a master found by CLUSTER SLOTS, or a MOVED/ASK target).
 *         Holds at most one live connection, and the reconnect backoff.
 * conn_t  one redisAsyncContext and the h2o socket watching its fd. Lives
 *         from redisAsyncConnect until hiredis calls the adapter's cleanup
 *         hook (the one place hiredis reports that a context is gone), and
 *         is freed there.
 * cmd_t   one accepted command: the caller's callback, a deadline timer and
 *         the formatted command (kept to resend it on a redirection).
 *         hiredis holds it as privdata until it calls back — with the reply,
 *         or with NULL when the context is freed — and only then is it
 *         freed; `answered` records that the caller has had its one callback
 *         (a reply arriving after the deadline is dropped).
 *
 * Deadlines: every command links its entry into one h2o_timeout_t of
 * timeout_ms (fixed duration, so linking is O(1) and the list stays sorted).
 * A connection is dropped (its other commands fail now rather than at their
 * deadlines, and it reconnects with backoff) only when the server has been
 * silent — no reply at all — for STALL_MS while it owed replies. Neither
 * may blame Redis for a late event loop: under 10,000 connections a reply
 * can sit unread behind a long batch of sockets (epoll hands out 256 per
 * turn), a command can wait a turn to be written, and dropping the
 * connection then turns a slow loop into a cache outage. So:
 *
 *  - time is attentive time (core/metrics.h), from this client's own tick:
 *    it stands still while the loop is late, and a reply could not have
 *    been read then;
 *  - a command owes its reply from its write (the write attempt: a full
 *    socket buffer is the server's doing), or from its send while the
 *    connection is still connecting;
 *  - before failing a command or dropping a connection, the client does the
 *    I/O the loop has not got to (conn_service: write what waits, read
 *    what came, run the replies' callbacks) and judges what is still owed.
 *    A deadline that finds its command not yet due goes on in a short
 *    recheck list.
 *
 * While the loop keeps up, a stopped or dead server is still noticed within
 * timeout_ms per command and STALL_MS per connection (B5); an error or EOF
 * on the socket closes the connection at once, whatever the clock says.
 *
 * Connections: a connection is "up" once the server has answered its
 * handshake (AUTH, SELECT, or else a PING) — a TCP connect alone proves
 * little (a SIGSTOPped server still completes the handshake in the kernel).
 * The handshake and the TCP connect share connect_timeout_ms. A node whose
 * last attempt failed refuses commands (MKD_EUNAVAILABLE at once) until an
 * attempt succeeds; attempts are made by the tick, 100 ms doubling to 2 s
 * apart. A node that never failed (start-up, a newly learned master) takes
 * commands while connecting: hiredis buffers them behind the handshake.
 *
 * Cluster: r->slots maps each of the 16384 slots to its master node.
 * CLUSTER SLOTS (from a connected node, rotating, else any node whose
 * backoff allows an attempt) refills it at start, every 10 s, every 1 s
 * while some master is down, and soon after a MOVED, a CLUSTERDOWN or a lost
 * connection. -MOVED updates the one slot and resends to the new node;
 * -ASK resends to the given node after ASKING, without touching the table;
 * more than MAX_REDIRECTS hops, -TRYAGAIN, -CLUSTERDOWN, -LOADING and
 * -MASTERDOWN fail the command with MKD_EUNAVAILABLE. Every master gets its
 * connection as soon as the topology names it (so redis_is_up means what
 * /readyz needs); nodes that stop serving slots are closed once idle and
 * forgotten.
 *
 * Re-entrancy: callers' callbacks run from inside hiredis callbacks or from
 * timers; they may call redis_command (never redis_destroy). hiredis defers
 * redisAsyncFree while it is inside a callback of that context, so a
 * connection closed from there is freed right after. Where the code goes on
 * using a conn_t after redisAsyncHandleRead/Write (conn_service, the write
 * handler), it holds it (`busy`): the cleanup hook then leaves the freeing to
 * the holder; elsewhere nothing touches a conn_t after those calls or after
 * redisAsyncFree.
 */

#define TICK_MS                    100
#define BACKOFF_MIN_MS             100
#define BACKOFF_MAX_MS             2000
#define MAX_REDIRECTS              5
#define STALL_MS                   1000
#define STALL_US                   ((uint64_t)STALL_MS * 1000)
#define REFRESH_EVERY_MS           10000
#define REFRESH_RETRY_MS           1000
#define MAX_SEEDS                  64
#define DEFAULT_TIMEOUT_MS         50
#define DEFAULT_CONNECT_TIMEOUT_MS 500

typedef struct node node_t;
typedef struct conn conn_t;
typedef struct cmd cmd_t;

struct conn {
    redis_t *r;
    node_t *node; /* valid until conn_gone (node->nconns counts us) */
    int attached; /* node->conn == this */
    redisAsyncContext *ac;
    h2o_socket_t *sock;
    int reading;
    int write_armed;
    int up;               /* the handshake was answered */
    int closing;          /* redisAsyncFree was called */
    int handshake_left;   /* handshake replies still due */
    int pending;          /* cmd_t's hiredis holds */
    int busy;             /* held across a hiredis call by conn_service / on_sock_write */
    int gone;             /* hiredis freed the context while busy: the holder frees c */
    uint64_t last_used;   /* loop time (ms) of the last command sent */
    uint64_t started_att; /* attentive time of redisAsyncConnect */
    uint64_t heard_att;   /* attentive time of the last reply, or of becoming up */
    /* the cmd_t's hiredis holds, in send order: not yet carried by a write
     * attempt, then written and owing their replies */
    h2o_linklist_t unsent, sent;
    h2o_timeout_entry_t connect_deadline;
};

struct node {
    h2o_linklist_t link; /* in r->nodes */
    redis_t *r;
    char *host;
    int port;
    conn_t *conn; /* the live connection, or NULL */
    int nconns;   /* conn_t's pointing here, live or closing */
    int seed;
    int nslots; /* slots it serves as master (cluster mode) */
    int failed; /* the last attempt failed / the connection broke */
    uint64_t backoff_ms;
    uint64_t retry_at; /* loop time (ms) of the next attempt when failed */
    int down_logged;
};

struct cmd {
    redis_t *r;
    redis_cb cb;
    void *arg;
    int answered;
    int internal;         /* CLUSTER SLOTS: no redirects, no timeout counting */
    int held;             /* its deadline is servicing the connection: on_reply leaves it */
    conn_t *conn;         /* the connection holding it, or NULL */
    h2o_linklist_t link;  /* in conn->unsent or conn->sent */
    int written;          /* a write attempt carried it */
    uint64_t sent_att;    /* attentive time it was handed to hiredis */
    uint64_t written_att; /* … and written */
    uint64_t limit_us;    /* its deadline, in attentive time since written (or sent) */
    h2o_timeout_entry_t deadline;
    char *buf; /* the formatted command (hiredis's malloc) */
    size_t len;
    int redirects;
};

struct redis {
    h2o_loop_t *loop;
    int cluster;
    int timeout_ms;
    int connect_timeout_ms;
    char *user;     /* or NULL */
    char *password; /* or NULL */
    int db;
    h2o_linklist_t nodes;
    node_t *single;
    node_t **slots; /* REDIS_SLOTS entries (cluster) */
    int have_topology;
    int up;
    unsigned outages;       /* times `up` went from 1 to 0 */
    uint64_t down_since_ms; /* loop time `up` last became (or, from creation, was) 0 */
    int refreshing;
    int refresh_wanted;
    unsigned refresh_seq;
    uint64_t refresh_at;
    int refresh_error_logged;
    char refresh_host[256]; /* the node asked: stands in for an empty IP */
    int destroying;
    int in_callback;
    h2o_timeout_t cmd_timeout;
    h2o_timeout_t connect_timeout;
    h2o_timeout_t slow_timeout;    /* internal commands: connect + command */
    h2o_timeout_t recheck_timeout; /* deadlines that found the loop had been late */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick;
    metrics_loop_clock_t clock; /* the loop's lateness, from the tick */
};

static void conn_open(node_t *n);
static void conn_close(conn_t *c, const char *why, int failed);
static void conn_gone(conn_t *c);
static void refresh_start(redis_t *r);

/* Real time, on the clock h2o's loop reads (gettimeofday), in µs. */
static uint64_t wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

/* Now in attentive time (core/metrics.h): real time without the loop's
 * lateness, as this client's tick has seen it. */
static uint64_t att_now(const redis_t *r)
{
    return metrics_loop_clock_now(&r->clock, wall_us());
}

/* What a deadline of limit_us may be short by when it fires: h2o counts
 * from its millisecond clock, read at the start of the loop's turn, and a
 * command is written a moment after it is sent. Without it, nearly every
 * deadline would take one recheck before failing its command. */
static uint64_t deadline_limit(uint64_t limit_us)
{
    return limit_us - limit_us / 16;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

/* ---- the event-loop adapter -------------------------------------------- */

/* hiredis owns the fd: h2o only watches it (DONT_READ), and it is handed
 * back with h2o_socket_export, never closed by h2o. */

static void on_sock_read(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    /* hiredis reads and sees EOF and errors itself. c may be gone after. */
    redisAsyncHandleRead(c->ac);
}

static int conn_write(conn_t *c);

static void on_sock_write(h2o_socket_t *sock, const char *err)
{
    conn_t *c = sock->data;
    c->write_armed = 0; /* h2o's write notification is one-shot */
    conn_write(c);      /* hiredis sees write errors itself. c may be gone after. */
}

static void ev_add_read(void *p)
{
    conn_t *c = p;
    if (!c->reading) {
        c->reading = 1;
        h2o_socket_read_start(c->sock, on_sock_read);
    }
}

static void ev_del_read(void *p)
{
    conn_t *c = p;
    if (c->reading) {
        c->reading = 0;
        h2o_socket_read_stop(c->sock);
    }
}

static void ev_add_write(void *p)
{
    conn_t *c = p;
    /* Arming twice asserts in h2o; hiredis asks again while one is pending. */
    if (!c->write_armed) {
        c->write_armed = 1;
        h2o_socket_notify_write(c->sock, on_sock_write);
    }
}

static void ev_del_write(void *p)
{
    /* h2o 2.2 cannot withdraw a write notification. Leaving it armed costs
     * at most one spurious redisAsyncHandleWrite, which writes nothing. */
    (void)p;
}

static void ev_cleanup(void *p)
{
    conn_gone(p);
}

static void conn_detach_socket(conn_t *c)
{
    if (c->sock == NULL)
        return;
    h2o_socket_export_t info;
    if (c->reading)
        h2o_socket_read_stop(c->sock);
    /* h2o_socket_export asserts that no write notification is pending;
     * clearing the callback is what h2o itself does when one fires. */
    if (c->write_armed)
        c->sock->_cb.write = NULL;
    h2o_socket_export(c->sock, &info);
    if (info.input != NULL)
        h2o_buffer_dispose(&info.input);
    c->sock = NULL;
    c->reading = 0;
    c->write_armed = 0;
}

/* ---- node state -------------------------------------------------------- */

static void set_up(redis_t *r, int up)
{
    if (r->up && !up) {
        r->outages++;
        r->down_since_ms = h2o_now(r->loop);
    }
    r->up = up;
}

static void update_up(redis_t *r)
{
    if (!r->cluster) {
        set_up(r, r->single->conn != NULL && r->single->conn->up);
        return;
    }
    int masters = 0, all_up = 1;
    for (h2o_linklist_t *l = r->nodes.next; l != &r->nodes; l = l->next) {
        node_t *n = H2O_STRUCT_FROM_MEMBER(node_t, link, l);
        if (n->nslots == 0)
            continue;
        masters++;
        if (n->conn == NULL || !n->conn->up)
            all_up = 0;
    }
    set_up(r, r->have_topology && masters > 0 && all_up);
}

static node_t *node_find(redis_t *r, const char *host, int port)
{
    for (h2o_linklist_t *l = r->nodes.next; l != &r->nodes; l = l->next) {
        node_t *n = H2O_STRUCT_FROM_MEMBER(node_t, link, l);
        if (n->port == port && strcmp(n->host, host) == 0)
            return n;
    }
    return NULL;
}

static node_t *node_get(redis_t *r, const char *host, int port)
{
    node_t *n = node_find(r, host, port);
    if (n != NULL)
        return n;
    n = calloc(1, sizeof(*n));
    if (n == NULL)
        abort();
    n->r = r;
    n->host = xstrdup(host);
    n->port = port;
    h2o_linklist_insert(&r->nodes, &n->link);
    return n;
}

static void node_free(node_t *n)
{
    h2o_linklist_unlink(&n->link);
    free(n->host);
    free(n);
}

/* Whether the tick keeps a connection to n (re)opened. */
static int node_wanted(const node_t *n)
{
    return !n->r->cluster || n->nslots > 0;
}

static void node_failed(node_t *n, const char *why)
{
    redis_t *r = n->r;
    if (r->destroying)
        return;
    n->failed = 1;
    n->backoff_ms = n->backoff_ms == 0
                        ? BACKOFF_MIN_MS
                        : (n->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : n->backoff_ms * 2);
    n->retry_at = h2o_now(r->loop) + n->backoff_ms;
    if (!n->down_logged) {
        n->down_logged = 1;
        if (node_wanted(n) || (n->seed && !r->have_topology))
            log_warn("redis %s:%d: down (%s); reconnecting with backoff, further failures not logged",
                     n->host, n->port, why != NULL ? why : "?");
    }
    /* A lost master may have been failed over: look again. */
    if (r->cluster)
        r->refresh_wanted = 1;
}

/* Unhooks c from its node; with `failed`, the node goes into backoff. */
static void conn_detach(conn_t *c, const char *why, int failed)
{
    if (!c->attached)
        return;
    c->attached = 0;
    c->node->conn = NULL;
    if (failed)
        node_failed(c->node, why);
    update_up(c->r);
}

static void conn_ready(conn_t *c)
{
    if (!c->attached || c->closing)
        return;
    node_t *n = c->node;
    c->up = 1;
    h2o_timeout_unlink(&c->connect_deadline);
    n->failed = 0;
    n->backoff_ms = 0;
    c->heard_att = att_now(c->r);
    if (n->down_logged) {
        n->down_logged = 0;
        log_info("redis %s:%d: connected again", n->host, n->port);
    }
    update_up(c->r);
}

/* The connection to send a command to n on, opening one when n has none
 * and may be tried; NULL when n refuses commands. `internal` commands may
 * also wait behind the handshake of a node that failed before. */
static conn_t *node_conn(node_t *n, int internal)
{
    if (n->conn != NULL)
        return n->conn->up || !n->failed || internal ? n->conn : NULL;
    if (n->failed && (!internal || h2o_now(n->r->loop) < n->retry_at))
        return NULL;
    conn_open(n);
    return n->conn;
}

/* ---- connections ------------------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    /* On failure hiredis frees the context right after this returns (the
     * cleanup hook puts the node into backoff). Never free it from here:
     * hiredis does not defer frees made inside the connect callback. */
    const conn_t *c = ac->data;
    if (status == REDIS_OK)
        log_debug("redis %s:%d: TCP connected", c->node->host, c->node->port);
}

static void on_handshake(redisAsyncContext *ac, void *reply_, void *privdata)
{
    conn_t *c = privdata;
    redisReply *reply = reply_;
    if (reply == NULL)
        return; /* the context is being freed; conn_gone follows */
    if (reply->type == REDIS_REPLY_ERROR) {
        /* AUTH or SELECT refused (or NOAUTH for the PING): retrying with
         * backoff keeps it cheap until the configuration is fixed. */
        conn_close(c, reply->str, 1);
        return;
    }
    if (--c->handshake_left == 0)
        conn_ready(c);
}

static int conn_service(conn_t *c);

static void on_connect_deadline(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, connect_deadline, entry);
    redis_t *r = c->r;
    /* The handshake's answer may be in the socket, unread. */
    if (!conn_service(c) || c->up || c->closing)
        return;
    /* Time the loop was late to notice the connect or to write the
     * handshake was no time for the server to answer in. */
    if (!metrics_loop_silent(att_now(r), 0, c->started_att,
                             deadline_limit((uint64_t)r->connect_timeout_ms * 1000))) {
        h2o_timeout_link(r->loop, &r->recheck_timeout, &c->connect_deadline);
        return;
    }
    conn_close(c, "connect timeout", 1);
}

static void handshake_send(conn_t *c, int argc, const char **argv)
{
    if (redisAsyncCommandArgv(c->ac, on_handshake, c, argc, argv, NULL) != REDIS_OK)
        abort(); /* a fresh context takes commands; only OOM fails here */
    c->handshake_left++;
}

static void conn_open(node_t *n)
{
    redis_t *r = n->r;
    /* Non-blocking connect, to an address: hiredis would resolve a name
     * with a blocking getaddrinfo (src/core/resolve.h). While the first
     * lookup of the name is under way there is no connection yet; the
     * tick or the next command asks again. */
    char addr[RESOLVE_ADDR_MAX], why[160];
    int rc = resolve_get(n->host, addr, why, sizeof(why));
    if (rc == 0)
        return;
    if (rc < 0) {
        node_failed(n, why);
        return;
    }
    redisAsyncContext *ac = redisAsyncConnect(addr, n->port);
    if (ac == NULL)
        abort();
    if (ac->err) {
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac); /* no hooks yet: just frees */
        node_failed(n, why);
        return;
    }
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->r = r;
    c->node = n;
    c->ac = ac;
    c->started_att = att_now(r);
    h2o_linklist_init_anchor(&c->unsent);
    h2o_linklist_init_anchor(&c->sent);
    ac->data = c;
    c->sock = h2o_evloop_socket_create(r->loop, ac->c.fd, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    n->conn = c;
    n->nconns++;
    c->attached = 1;
    c->connect_deadline.cb = on_connect_deadline;
    h2o_timeout_link(r->loop, &r->connect_timeout, &c->connect_deadline);
    /* hiredis detects the end of connect(2) on the first writable event;
     * setting the callback arms it. */
    redisAsyncSetConnectCallback(ac, on_connect);
    /* The handshake goes first on the wire; commands sent meanwhile queue
     * behind it in hiredis's output buffer. */
    if (r->password != NULL) {
        const char *argv[3] = {"AUTH", r->user != NULL ? r->user : r->password, r->password};
        handshake_send(c, r->user != NULL ? 3 : 2, argv);
    }
    if (!r->cluster && r->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", r->db);
        const char *argv[2] = {"SELECT", db};
        handshake_send(c, 2, argv);
    }
    if (c->handshake_left == 0) {
        const char *argv[1] = {"PING"};
        handshake_send(c, 1, argv);
    }
}

/* Drops c: its pending commands fail (hiredis calls back with NULL), now or
 * — inside one of c's callbacks — right after that callback. */
static void conn_close(conn_t *c, const char *why, int failed)
{
    if (c->closing)
        return;
    c->closing = 1;
    h2o_timeout_unlink(&c->connect_deadline);
    conn_detach(c, why, failed);
    redisAsyncFree(c->ac);
}

/* hiredis's cleanup hook: the context is about to be freed (its callbacks
 * have all run, so no cmd_t is left on c's lists). */
static void conn_gone(conn_t *c)
{
    const char *why = c->ac->err ? c->ac->errstr : "connection closed";
    conn_detach_socket(c);
    h2o_timeout_unlink(&c->connect_deadline);
    conn_detach(c, why, 1);
    c->node->nconns--;
    c->ac->data = NULL;
    c->ac->ev.data = NULL;
    c->ac = NULL;
    if (c->busy > 0) {
        c->gone = 1; /* the holder frees it (conn_release) */
        return;
    }
    free(c);
}

/* Ends a hold taken across a hiredis call. Returns 1 when c lives on, 0 when
 * hiredis freed its context meanwhile (c is then freed by its last holder). */
static int conn_release(conn_t *c)
{
    c->busy--;
    if (!c->gone)
        return 1;
    if (c->busy == 0)
        free(c);
    return 0;
}

/* A write attempt is about to carry every command hiredis holds for c: from
 * now on their replies are owed. (A socket buffer that does not take them
 * all is the server's doing: it does not read.) */
static void conn_mark_written(conn_t *c, uint64_t att)
{
    while (!h2o_linklist_is_empty(&c->unsent)) {
        cmd_t *q = H2O_STRUCT_FROM_MEMBER(cmd_t, link, c->unsent.next);
        h2o_linklist_unlink(&q->link);
        q->written = 1;
        q->written_att = att;
        h2o_linklist_insert(&c->sent, &q->link);
    }
}

/* Writes what hiredis holds for c. Returns 0 when c is gone afterwards. */
static int conn_write(conn_t *c)
{
    uint64_t att = att_now(c->r);
    c->busy++;
    redisAsyncHandleWrite(c->ac); /* notices the end of connect(2) too */
    if (!conn_release(c))
        return 0;
    if (c->ac->c.flags & REDIS_CONNECTED)
        conn_mark_written(c, att);
    return 1;
}

/*
 * The I/O on c the loop has not got to yet: writes what waits in hiredis,
 * reads what the server sent and runs the replies' callbacks (callers'
 * callbacks included). For a deadline or a liveness check about to blame the
 * server; never from inside one of c's callbacks. Returns 0 when c is gone
 * afterwards (the read met EOF or an error).
 */
static int conn_service(conn_t *c)
{
    /* Before the end of connect(2) only a writable event may tell hiredis
     * about it: its connect check cannot tell "in progress" from "done". */
    if (c->closing || !(c->ac->c.flags & REDIS_CONNECTED))
        return 1;
    if (!h2o_linklist_is_empty(&c->unsent) && !conn_write(c))
        return 0;
    if (c->closing)
        return 1;
    c->busy++;
    redisAsyncHandleRead(c->ac);
    return conn_release(c);
}

/* Whether c's server has owed replies for STALL_MS of attentive time
 * without a word: counted from its last reply or from the write of the
 * oldest command it owes, whichever came later. */
static int conn_silent(conn_t *c, uint64_t att)
{
    if (h2o_linklist_is_empty(&c->sent))
        return 0;
    const cmd_t *oldest = H2O_STRUCT_FROM_MEMBER(cmd_t, link, c->sent.next);
    return metrics_loop_silent(att, c->heard_att, oldest->written_att, STALL_US);
}

/* ---- commands ---------------------------------------------------------- */

static void cmd_free(cmd_t *q)
{
    h2o_timeout_unlink(&q->deadline);
    if (h2o_linklist_is_linked(&q->link))
        h2o_linklist_unlink(&q->link);
    free(q->buf);
    free(q);
}

/* Frees q once hiredis is done with it, unless its deadline holds it. */
static void cmd_release(cmd_t *q)
{
    if (!q->held)
        cmd_free(q);
}

/* The caller's one callback. */
static void cmd_answer(cmd_t *q, redisReply *reply, int err)
{
    redis_t *r = q->r;
    q->answered = 1;
    h2o_timeout_unlink(&q->deadline);
    if (q->cb != NULL) {
        r->in_callback++;
        q->cb(q->arg, reply, err);
        r->in_callback--;
    }
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata);

static int cmd_send(cmd_t *q, conn_t *c)
{
    if (redisAsyncFormattedCommand(c->ac, on_reply, q, q->buf, q->len) != REDIS_OK)
        return MKD_EUNAVAILABLE;
    q->conn = c;
    c->pending++;
    c->last_used = h2o_now(c->r->loop);
    /* hiredis writes it when the loop next finds the socket writable. */
    q->written = 0;
    q->sent_att = att_now(c->r);
    h2o_linklist_insert(&c->unsent, &q->link);
    return 0;
}

/* Whether q, held by c, has waited its limit for a reply it could have
 * had: counted from its write, or from its send while c still connects (a
 * slow connect is the server's or the network's). Attentive time: the
 * loop's own lateness never counts. */
static int cmd_overdue(const cmd_t *q, const conn_t *c, uint64_t att)
{
    uint64_t since;
    if (q->written)
        since = q->written_att;
    else if (!c->up)
        since = q->sent_att;
    else
        return 0; /* the loop has not written it yet */
    return metrics_loop_silent(att, 0, since, deadline_limit(q->limit_us));
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    cmd_t *q = H2O_STRUCT_FROM_MEMBER(cmd_t, deadline, entry);
    redis_t *r = q->r;
    if (q->conn != NULL) {
        /* The reply may be in the socket, unread, or the command not even
         * written: do that I/O before judging. Holding q keeps it ours even
         * if its reply (or the connection's end) comes meanwhile. */
        q->held = 1;
        conn_service(q->conn);
        q->held = 0;
        if (q->answered) {
            if (q->conn == NULL)
                cmd_free(q);
            return;
        }
    }
    conn_t *c = q->conn; /* maybe another one now, after a redirection */
    uint64_t att = att_now(r);
    if (c != NULL && !cmd_overdue(q, c, att)) {
        /* The loop was late: the server has not had its time yet. */
        h2o_timeout_link(r->loop, &r->recheck_timeout, &q->deadline);
        return;
    }
    int counts = c != NULL && !q->internal && c->up && c->attached;
    cmd_answer(q, NULL, MKD_EUNAVAILABLE);
    if (c == NULL) {
        cmd_free(q);
        return;
    }
    /* hiredis still holds q: on_reply drops the reply if it ever comes, and
     * frees q. From here on q may be gone. */
    if (counts && c->attached && conn_silent(c, att))
        conn_close(c, "no reply for a second", 1);
}

static void set_slot(redis_t *r, unsigned slot, node_t *n)
{
    node_t *old = r->slots[slot];
    if (old == n)
        return;
    if (old != NULL)
        old->nslots--;
    r->slots[slot] = n;
    if (n != NULL)
        n->nslots++;
}

static int starts_with(const redisReply *reply, const char *prefix)
{
    size_t n = strlen(prefix);
    return reply->len >= n && memcmp(reply->str, prefix, n) == 0;
}

/* A cluster error reply to q (sent on c). Returns 1 when it was handled (q
 * resent, or answered and freed), 0 when it is the caller's reply. */
static int cluster_error(cmd_t *q, conn_t *c, redisReply *reply)
{
    redis_t *r = q->r;
    unsigned slot;
    redis_addr_t to;
    int kind = redis_parse_redirect(reply->str, reply->len, &slot, &to);
    if (kind != REDIS_REDIRECT_NONE) {
        if (++q->redirects > MAX_REDIRECTS)
            goto unavailable;
        if (to.host[0] == '\0') /* ":port": the host we asked */
            snprintf(to.host, sizeof(to.host), "%s", c->node->host);
        node_t *n = node_get(r, to.host, to.port);
        log_debug("redis cluster: %s %u %s:%d (hop %d)", kind == REDIS_REDIRECT_MOVED ? "MOVED" : "ASK", slot,
                  n->host, n->port, q->redirects);
        if (kind == REDIS_REDIRECT_MOVED) {
            /* The slot moved for good: fix it now, fetch the rest soon. */
            set_slot(r, slot, n);
            r->refresh_wanted = 1;
            update_up(r);
        }
        conn_t *tc = node_conn(n, 0);
        if (tc == NULL)
            goto unavailable;
        if (kind == REDIS_REDIRECT_ASK && redisAsyncCommand(tc->ac, NULL, NULL, "ASKING") != REDIS_OK)
            goto unavailable;
        if (cmd_send(q, tc) != 0)
            goto unavailable;
        return 1;
    }
    if (starts_with(reply, "CLUSTERDOWN"))
        r->refresh_wanted = 1;
    else if (!starts_with(reply, "TRYAGAIN") && !starts_with(reply, "LOADING") &&
             !starts_with(reply, "MASTERDOWN"))
        return 0;
    log_debug("redis %s:%d: %s", c->node->host, c->node->port, reply->str);
unavailable:
    cmd_answer(q, NULL, MKD_EUNAVAILABLE);
    cmd_release(q);
    return 1;
}

static void on_reply(redisAsyncContext *ac, void *reply_, void *privdata)
{
    cmd_t *q = privdata;
    conn_t *c = ac->data;
    redisReply *reply = reply_;
    q->conn = NULL;
    h2o_linklist_unlink(&q->link);
    c->pending--;
    if (reply == NULL) {
        /* The context is being freed. Detach first, so that callers who
         * retry from their callback are refused instead of queueing on a
         * dying connection. */
        conn_detach(c, ac->err ? ac->errstr : "connection closed", 1);
        if (!q->answered)
            cmd_answer(q, NULL, MKD_EUNAVAILABLE);
        cmd_release(q);
        return;
    }
    c->heard_att = att_now(c->r);
    if (q->answered) {
        cmd_release(q); /* a late reply: the caller has had its MKD_EUNAVAILABLE */
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && q->r->cluster && !q->internal && cluster_error(q, c, reply))
        return;
    cmd_answer(q, reply, 0);
    cmd_release(q);
}

static cmd_t *cmd_new(redis_t *r, int argc, const char **argv, const size_t *argvlen, redis_cb cb, void *arg)
{
    cmd_t *q = calloc(1, sizeof(*q));
    if (q == NULL)
        abort();
    int len = redisFormatCommandArgv(&q->buf, argc, argv, argvlen);
    if (len < 0)
        abort(); /* only fails when out of memory */
    q->len = (size_t)len;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->deadline.cb = on_deadline;
    return q;
}

int redis_command(redis_t *r, const char *slot_key, size_t slot_key_len, int argc, const char **argv,
                  const size_t *argvlen, redis_cb cb, void *arg)
{
    if (r->destroying || argc < 1)
        return MKD_EUNAVAILABLE;
    node_t *n;
    if (!r->cluster) {
        n = r->single;
    } else {
        if (slot_key == NULL && argc > 1) {
            slot_key = argv[1];
            slot_key_len = argvlen != NULL ? argvlen[1] : strlen(argv[1]);
        }
        n = r->slots[slot_key != NULL ? redis_key_slot(slot_key, slot_key_len) : 0];
        if (n == NULL)
            return MKD_EUNAVAILABLE; /* no topology yet, or an uncovered slot */
    }
    conn_t *c = node_conn(n, 0);
    if (c == NULL)
        return MKD_EUNAVAILABLE;
    cmd_t *q = cmd_new(r, argc, argv, argvlen, cb, arg);
    /* Nothing here can call back: replies and failures only ever arrive
     * through a later I/O event or timer. */
    if (cmd_send(q, c) != 0) {
        cmd_free(q);
        return MKD_EUNAVAILABLE;
    }
    q->limit_us = (uint64_t)r->timeout_ms * 1000;
    h2o_timeout_link(r->loop, &r->cmd_timeout, &q->deadline);
    return 0;
}

int redis_is_up(const redis_t *r)
{
    return r->up;
}

unsigned redis_outages(const redis_t *r)
{
    return r->outages;
}

uint64_t redis_down_for_ms(const redis_t *r)
{
    return r->up ? 0 : h2o_now(r->loop) - r->down_since_ms;
}

/* ---- cluster topology -------------------------------------------------- */

static int slots_reply_valid(const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0)
        return 0;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3)
            return 0;
        const redisReply *lo = e->element[0], *hi = e->element[1], *m = e->element[2];
        if (lo->type != REDIS_REPLY_INTEGER || hi->type != REDIS_REPLY_INTEGER || lo->integer < 0 ||
            hi->integer >= REDIS_SLOTS || lo->integer > hi->integer)
            return 0;
        if (m->type != REDIS_REPLY_ARRAY || m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER || m->element[1]->integer <= 0 ||
            m->element[1]->integer > 65535 || m->element[0]->len >= sizeof(((redis_addr_t *)0)->host))
            return 0;
    }
    return 1;
}

static int any_master_down(redis_t *r)
{
    for (h2o_linklist_t *l = r->nodes.next; l != &r->nodes; l = l->next) {
        node_t *n = H2O_STRUCT_FROM_MEMBER(node_t, link, l);
        if (n->nslots > 0 && (n->conn == NULL || !n->conn->up))
            return 1;
    }
    return 0;
}

static void on_slots(void *arg, redisReply *reply, int err)
{
    redis_t *r = arg;
    uint64_t now = h2o_now(r->loop);
    r->refreshing = 0;
    if (r->destroying)
        return;
    if (err != 0) {
        r->refresh_wanted = 1; /* another node, at the next tick */
        return;
    }
    if (!slots_reply_valid(reply)) {
        if (!r->refresh_error_logged) {
            r->refresh_error_logged = 1;
            log_warn("redis cluster: unusable CLUSTER SLOTS reply from %s%s%s", r->refresh_host,
                     reply->type == REDIS_REPLY_ERROR ? ": " : "",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        }
        r->refresh_at = now + REFRESH_RETRY_MS;
        return;
    }
    r->refresh_error_logged = 0;
    for (unsigned s = 0; s < REDIS_SLOTS; s++)
        set_slot(r, s, NULL);
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        const redisReply *m = e->element[2];
        /* An empty IP means "the node you are talking to". */
        const char *host = m->element[0]->len > 0 ? m->element[0]->str : r->refresh_host;
        node_t *n = node_get(r, host, (int)m->element[1]->integer);
        for (long long s = e->element[0]->integer; s <= e->element[1]->integer; s++)
            set_slot(r, (unsigned)s, n);
    }
    r->have_topology = 1;
    /* Every master gets its connection now (a node that failed is left to
     * the tick's backoff). */
    for (h2o_linklist_t *l = r->nodes.next; l != &r->nodes; l = l->next) {
        node_t *n = H2O_STRUCT_FROM_MEMBER(node_t, link, l);
        if (n->nslots > 0 && n->conn == NULL && !n->failed)
            conn_open(n);
    }
    update_up(r);
    int down = any_master_down(r);
    r->refresh_at = now + (down ? REFRESH_RETRY_MS : REFRESH_EVERY_MS);
    log_debug("redis cluster: topology from %s: %zu slot ranges%s", r->refresh_host, reply->elements,
              down ? ", a master is not connected" : "");
}

/* Tier of a node as the one to ask for CLUSTER SLOTS: 0 connected, 1
 * connecting, 2 may be connected, 3 unusable now. */
static int refresh_tier(const node_t *n, uint64_t now)
{
    if (n->conn != NULL)
        return n->conn->up ? 0 : 1;
    if (!n->failed || now >= n->retry_at)
        return 2;
    return 3;
}

static node_t *refresh_pick(redis_t *r)
{
    uint64_t now = h2o_now(r->loop);
    int count[4] = {0, 0, 0, 0};
    for (h2o_linklist_t *l = r->nodes.next; l != &r->nodes; l = l->next)
        count[refresh_tier(H2O_STRUCT_FROM_MEMBER(node_t, link, l), now)]++;
    for (int tier = 0; tier < 3; tier++) {
        if (count[tier] == 0)
            continue;
        /* Rotate among the tier, so that one confused node is not asked
         * for ever. */
        int k = (int)(r->refresh_seq++ % (unsigned)count[tier]);
        for (h2o_linklist_t *l = r->nodes.next; l != &r->nodes; l = l->next) {
            node_t *n = H2O_STRUCT_FROM_MEMBER(node_t, link, l);
            if (refresh_tier(n, now) == tier && k-- == 0)
                return n;
        }
    }
    return NULL;
}

static void refresh_start(redis_t *r)
{
    node_t *n = refresh_pick(r);
    conn_t *c = n != NULL ? node_conn(n, 1) : NULL;
    if (c == NULL) {
        r->refresh_wanted = 1;
        return;
    }
    const char *argv[2] = {"CLUSTER", "SLOTS"};
    cmd_t *q = cmd_new(r, 2, argv, NULL, on_slots, r);
    q->internal = 1;
    if (cmd_send(q, c) != 0) {
        cmd_free(q);
        r->refresh_wanted = 1;
        return;
    }
    q->limit_us = ((uint64_t)r->connect_timeout_ms + (uint64_t)r->timeout_ms) * 1000;
    h2o_timeout_link(r->loop, &r->slow_timeout, &q->deadline);
    snprintf(r->refresh_host, sizeof(r->refresh_host), "%s", n->host);
    r->refreshing = 1;
    r->refresh_wanted = 0;
}

/* ---- housekeeping ------------------------------------------------------ */

static void on_probe(void *arg, redisReply *reply, int err)
{
    (void)arg, (void)reply, (void)err; /* the reply itself is the news (heard_att) */
}

/* Liveness without traffic: a connection quiet for half of STALL_MS gets a
 * PING; one that owes replies and has said nothing for STALL_MS (attentive
 * time, conn_silent) is dropped — after a last look at its socket. So a
 * stopped server is noticed (and /readyz says so) within about a second,
 * busy or idle, while the loop keeps up. */
static void probe_liveness(node_t *n, uint64_t att)
{
    redis_t *r = n->r;
    conn_t *c = n->conn;
    if (c == NULL || !c->up || !c->attached)
        return;
    if (conn_silent(c, att)) {
        if (!conn_service(c) || n->conn != c)
            return;
        if (conn_silent(c, att_now(r))) {
            conn_close(c, "no reply for a second", 1);
            return;
        }
    }
    if (c->pending == 0 && metrics_loop_silent(att, c->heard_att, 0, STALL_US / 2)) {
        const char *argv[1] = {"PING"};
        cmd_t *q = cmd_new(r, 1, argv, NULL, on_probe, NULL);
        q->internal = 1;
        if (cmd_send(q, c) != 0) {
            cmd_free(q);
            return;
        }
        q->limit_us = ((uint64_t)r->connect_timeout_ms + (uint64_t)r->timeout_ms) * 1000;
        h2o_timeout_link(r->loop, &r->slow_timeout, &q->deadline);
    }
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    redis_t *r = H2O_STRUCT_FROM_MEMBER(redis_t, tick, entry);
    uint64_t now = h2o_now(r->loop);
    /* First, how late this tick is: the loop's lateness so far. The tick is
     * linked again below, from the loop's clock as it is now. */
    metrics_loop_clock_tick(&r->clock, wall_us(), now * 1000 + (uint64_t)TICK_MS * 1000);
    uint64_t att = att_now(r);
    h2o_linklist_t *l = r->nodes.next;
    while (l != &r->nodes) {
        node_t *n = H2O_STRUCT_FROM_MEMBER(node_t, link, l);
        l = l->next;
        if (n->conn == NULL) {
            if (node_wanted(n)) {
                if (!n->failed || now >= n->retry_at)
                    conn_open(n);
            } else if (!n->seed && n->nconns == 0) {
                node_free(n); /* no longer in the topology */
            }
        } else if (!node_wanted(n) && !n->seed && n->conn->up && n->conn->pending == 0 &&
                   now - n->conn->last_used > REFRESH_EVERY_MS) {
            /* an old master, or an ASK target after the migration */
            conn_close(n->conn, "no longer serves slots", 0);
        } else {
            probe_liveness(n, att);
        }
    }
    if (r->cluster && !r->refreshing && (r->refresh_wanted || now >= r->refresh_at))
        refresh_start(r);
    h2o_timeout_link(r->loop, &r->tick_timeout, &r->tick);
}

/* ---- create / destroy -------------------------------------------------- */

redis_t *redis_create(h2o_loop_t *loop, const redis_options_t *opt, char *err, size_t errlen)
{
    const char *url = opt->url != NULL && opt->url[0] != '\0' ? opt->url : NULL;
    const char *nodes =
        opt->cluster_nodes != NULL && opt->cluster_nodes[0] != '\0' ? opt->cluster_nodes : NULL;
    if ((url == NULL) == (nodes == NULL)) {
        snprintf(err, errlen, "redis: set exactly one of REDIS_URL and REDIS_CLUSTER_NODES");
        return NULL;
    }
    if (opt->timeout_ms < 0 || opt->connect_timeout_ms < 0) {
        snprintf(err, errlen, "redis: timeouts must not be negative");
        return NULL;
    }
    redis_url_t u = {0};
    redis_addr_t *seeds = NULL;
    int nseeds = 0;
    if (url != NULL) {
        if (redis_parse_url(url, strlen(url), &u, err, errlen) != 0)
            return NULL;
    } else {
        seeds = calloc(MAX_SEEDS, sizeof(*seeds));
        if (seeds == NULL)
            abort();
        nseeds = redis_parse_seeds(nodes, strlen(nodes), seeds, MAX_SEEDS, err, errlen);
        if (nseeds < 0) {
            free(seeds);
            return NULL;
        }
    }

    redis_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->loop = loop;
    r->down_since_ms = h2o_now(loop); /* not up until a handshake is answered */
    metrics_loop_clock_init(&r->clock, h2o_now(loop) * 1000 + (uint64_t)TICK_MS * 1000);
    r->cluster = nodes != NULL;
    r->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : DEFAULT_TIMEOUT_MS;
    r->connect_timeout_ms =
        opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    h2o_linklist_init_anchor(&r->nodes);
    h2o_timeout_init(loop, &r->cmd_timeout, (uint64_t)r->timeout_ms);
    h2o_timeout_init(loop, &r->connect_timeout, (uint64_t)r->connect_timeout_ms);
    h2o_timeout_init(loop, &r->slow_timeout, (uint64_t)r->connect_timeout_ms + (uint64_t)r->timeout_ms);
    /* A deadline that found the loop late looks again this often. */
    h2o_timeout_init(loop, &r->recheck_timeout, r->timeout_ms >= 20 ? (uint64_t)r->timeout_ms / 10 : 2);
    h2o_timeout_init(loop, &r->tick_timeout, TICK_MS);
    r->tick.cb = on_tick;

    if (!r->cluster) {
        if (u.password[0] != '\0') {
            r->password = xstrdup(u.password);
            if (u.user[0] != '\0')
                r->user = xstrdup(u.user);
        } else if (opt->password != NULL && opt->password[0] != '\0') {
            r->password = xstrdup(opt->password);
        }
        r->db = u.db;
        r->single = node_get(r, u.addr.host, u.addr.port);
        r->single->seed = 1;
        conn_open(r->single);
    } else {
        if (opt->password != NULL && opt->password[0] != '\0')
            r->password = xstrdup(opt->password);
        r->slots = calloc(REDIS_SLOTS, sizeof(*r->slots));
        if (r->slots == NULL)
            abort();
        for (int i = 0; i < nseeds; i++)
            node_get(r, seeds[i].host, seeds[i].port)->seed = 1;
        free(seeds);
        refresh_start(r);
    }
    h2o_timeout_link(loop, &r->tick_timeout, &r->tick);
    return r;
}

void redis_destroy(redis_t *r)
{
    if (r == NULL)
        return;
    if (r->in_callback) {
        /* hiredis would free the context we are called from under it. */
        log_error("redis_destroy called from a redis callback");
        abort();
    }
    r->destroying = 1;
    h2o_timeout_unlink(&r->tick);
    /* Freeing a context runs its pending callbacks with NULL (each caller
     * gets MKD_EUNAVAILABLE; redis_command now refuses) and then the cleanup
     * hook, which frees the conn_t. */
    for (h2o_linklist_t *l = r->nodes.next; l != &r->nodes; l = l->next) {
        node_t *n = H2O_STRUCT_FROM_MEMBER(node_t, link, l);
        if (n->conn != NULL)
            conn_close(n->conn, "shutdown", 0);
    }
    while (!h2o_linklist_is_empty(&r->nodes))
        node_free(H2O_STRUCT_FROM_MEMBER(node_t, link, r->nodes.next));
    h2o_timeout_dispose(r->loop, &r->cmd_timeout);
    h2o_timeout_dispose(r->loop, &r->connect_timeout);
    h2o_timeout_dispose(r->loop, &r->slow_timeout);
    h2o_timeout_dispose(r->loop, &r->recheck_timeout);
    h2o_timeout_dispose(r->loop, &r->tick_timeout);
    free(r->slots);
    free(r->user);
    free(r->password);
    free(r);
}
