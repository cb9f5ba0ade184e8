/* loadgen — the load generator of bench/overload.sh (`make bench-overload`).
 *
 * N simulated users, each one keep-alive HTTP/1.1 connection to one server:
 * a user sends a GET, waits for the whole answer (or gives up after
 * --timeout-ms), then "thinks" for a time drawn uniformly from the current
 * phase's [think_min, think_max] ms, and sends the next. No pipelining, one
 * request in flight per connection. Every request is logged with its start
 * time, its client-observed latency, its status and what was asked, so that
 * any statistic can be computed afterwards (bench/overload/analyze.py).
 *
 * Why not wrk or h2load: wrk's Lua cannot time individual requests and
 * counts a thinking connection as a timeout; h2load (nghttp2 1.52) paces
 * each client at a fixed --rps instead of thinking after the answer, walks
 * every client through the same URI list in the same order, has no
 * per-request timeout (an inactive connection fails that client for the rest
 * of the run) and logs no URI. This is one C file on epoll; HTTP
 * responses are parsed by picohttpparser (phr_parse_response,
 * phr_decode_chunked), which libh2o-evloop exports (Debian ships no header,
 * so the two prototypes are declared below).
 *
 *   loadgen --port 18081 --clients 10000 --threads 2 --mix mix.txt \
 *           --phase 40:1000:3000 [--phase 20:100:300 ...] --timeout-ms 5000 \
 *           --log out.log --t0-file t0.txt
 *
 * --phase SECONDS:THINK_MIN_MS:THINK_MAX_MS, in order; the run lasts their
 * sum. A think time is drawn with the phase in force when the answer
 * arrives. Before t = 0 every user opens its connection (bounded wait); the
 * first requests are spread as in steady state (each user's first wait is
 * the residual of a length-biased think time), so the offered rate is flat
 * from t = 0. After the last phase no request is started; those in flight
 * finish or time out, so the run ends within --timeout-ms of its duration.
 *
 * mix file: "kind weight lo hi template" per line (# comments); a "{}" in
 * the template is replaced by a uniform random integer in [lo, hi].
 *
 * log (one line per request, per thread file <log>.<thread>):
 *   start_us  latency_us  status  kind  line  value  flags
 * start_us is relative to t = 0 (CLOCK_MONOTONIC). status is the HTTP status
 * or 0 = no answer within the timeout, 1 = connect failed, 2 = connection
 * closed or reset before the whole answer, 3 = unparsable answer. flags:
 * R = a Retry-After header, H/M/B = X-Cache HIT/MISS/BYPASS, C = the request
 * needed a new connection (its latency includes the connect); "-" if none.
 * A timed-out or failed request closes its connection (RST); the user's next
 * request reconnects.
 *
 * Every 5 s (--progress-s) a live line goes to stderr (by completion time).
 * At the end one "LOADGEN key=value ..." summary line goes to stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ---- picohttpparser, as exported by libh2o-evloop ---------------------- */
struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg,
                       size_t *msg_len, struct phr_header *headers, size_t *num_headers, size_t last_len);
struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);

/* ---- configuration -------------------------------------------------------- */
#define MAX_PHASES    16
#define MAX_KINDS     16
#define MAX_HDRS      64
#define MAX_HDR_BYTES (64 * 1024)

typedef struct {
    double secs, think_min_ms, think_max_ms;
} phase_t;

typedef struct {
    int kind;
    double cum; /* cumulative weight */
    long lo, hi;
    char pre[512], post[512]; /* template split at "{}"; has_var if it had one */
    int has_var;
} mixline_t;

static struct {
    const char *host;
    int port;
    int clients, threads;
    phase_t phases[MAX_PHASES];
    int nphases;
    double timeout_ms;
    const char *mix_path, *log_path, *t0_path;
    double progress_s, connect_wait_s;
    uint64_t seed;
} cfg = {"127.0.0.1", 18081, 1000, 2, {{0, 0, 0}}, 0, 5000, NULL, NULL, NULL, 5, 30, 0};

static mixline_t *mix;
static int nmix;
static double mix_total;
static char kind_names[MAX_KINDS][64];
static int nkinds;
static struct sockaddr_in srv_addr;
static char host_hdr[128];

static uint64_t t0_us;  /* CLOCK_MONOTONIC at t = 0 */
static uint64_t end_us; /* t0 + sum of phases */
static uint64_t timeout_us;
static volatile int stop_now;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ---- live statistics (progress lines), by completion time ----------------- */
#define HBUCKETS 640
static int hist_index(uint64_t v)
{
    if (v < 16)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    int idx = 16 + (e - 4) * 16 + (int)((v >> (e - 4)) & 15);
    return idx < HBUCKETS ? idx : HBUCKETS - 1;
}
static uint64_t hist_value(int idx)
{
    if (idx < 16)
        return (uint64_t)idx;
    int e = (idx - 16) / 16 + 4, sub = (idx - 16) % 16;
    return ((uint64_t)(16 + sub)) << (e - 4);
}

typedef struct {
    uint64_t n, ok, non2xx, timeouts, errors;
    uint64_t hist[HBUCKETS];
} livewin_t;
static livewin_t *live;
static int nlive;
static int64_t g_inflight, g_open;
static uint64_t g_total, g_ok, g_non2xx, g_timeouts, g_connerr, g_closed, g_proto, g_idle_closed, g_connects,
    g_connect_fail_initial;

#define AADD(x, v) __atomic_add_fetch(&(x), (v), __ATOMIC_RELAXED)
#define ALOAD(x)   __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* ---- clients ---------------------------------------------------------------------- */
enum { S_IDLE, S_CONNECTING, S_WAITING, S_DONE };
enum { B_NONE, B_LENGTH, B_CHUNKED, B_CLOSE };

typedef struct client {
    int fd;
    int state;
    int heap_pos;
    int preconnect; /* connecting before t = 0, no request pending */
    uint64_t timer_at;
    uint64_t start_us;
    int kind, line;
    long val;
    int fresh;
    char req[1024];
    int req_len, req_off;
    /* response */
    char *hbuf;
    size_t hlen, hcap;
    int hdr_done, body_mode, status, keepalive;
    size_t body_left;
    union {
        struct phr_chunked_decoder d;
        char pad[64];
    } dec;
    char flags[8];
} client_t;

typedef struct {
    int index;
    int nclients;
    client_t *clients;
    client_t **heap;
    int heap_n;
    int ep;
    int active; /* clients not yet S_DONE */
    int preconnecting;
    uint64_t rng;
    FILE *log;
    char *scratch;
    pthread_t tid;
    int finished; /* set (atomically) when thread_main returns */
} thread_t;

static thread_t *threads;
static pthread_barrier_t barrier_connected, barrier_started;

/* ---- random numbers (splitmix64) ---------------------------------------------------- */
static uint64_t rnd(thread_t *t)
{
    uint64_t z = (t->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rnd01(thread_t *t)
{
    return (double)(rnd(t) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- timer heap (min by timer_at) ------------------------------------------------ */
static void heap_swap(thread_t *t, int a, int b)
{
    client_t *x = t->heap[a];
    t->heap[a] = t->heap[b];
    t->heap[b] = x;
    t->heap[a]->heap_pos = a;
    t->heap[b]->heap_pos = b;
}
static void heap_up(thread_t *t, int i)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (t->heap[p]->timer_at <= t->heap[i]->timer_at)
            break;
        heap_swap(t, i, p);
        i = p;
    }
}
static void heap_down(thread_t *t, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < t->heap_n && t->heap[l]->timer_at < t->heap[m]->timer_at)
            m = l;
        if (r < t->heap_n && t->heap[r]->timer_at < t->heap[m]->timer_at)
            m = r;
        if (m == i)
            break;
        heap_swap(t, i, m);
        i = m;
    }
}
static void timer_del(thread_t *t, client_t *c)
{
    int i = c->heap_pos;
    if (i < 0)
        return;
    c->heap_pos = -1;
    t->heap_n--;
    if (i == t->heap_n)
        return;
    t->heap[i] = t->heap[t->heap_n];
    t->heap[i]->heap_pos = i;
    heap_up(t, i);
    heap_down(t, t->heap[i]->heap_pos);
}
static void timer_set(thread_t *t, client_t *c, uint64_t at)
{
    timer_del(t, c);
    c->timer_at = at;
    c->heap_pos = t->heap_n;
    t->heap[t->heap_n++] = c;
    heap_up(t, c->heap_pos);
}

/* ---- phases and think times ----------------------------------------------------- */
static const phase_t *phase_at(uint64_t now)
{
    double t = now > t0_us ? (double)(now - t0_us) / 1e6 : 0;
    for (int i = 0; i < cfg.nphases; i++) {
        if (t < cfg.phases[i].secs)
            return &cfg.phases[i];
        t -= cfg.phases[i].secs;
    }
    return &cfg.phases[cfg.nphases - 1];
}
static uint64_t think_us(thread_t *t, const phase_t *p)
{
    return (uint64_t)((p->think_min_ms + (p->think_max_ms - p->think_min_ms) * rnd01(t)) * 1000.0);
}
/* The wait before a user's first request: in steady state, the time left of
 * the think time in progress is U * T with T length-biased (density ∝ t on
 * [a, b]), so the offered rate is flat from t = 0. */
static uint64_t first_wait_us(thread_t *t, const phase_t *p)
{
    double a = p->think_min_ms, b = p->think_max_ms;
    double T = sqrt(a * a + rnd01(t) * (b * b - a * a));
    return (uint64_t)(rnd01(t) * T * 1000.0);
}

/* ---- sockets ---------------------------------------------------------------------- */
static int open_socket(thread_t *t, client_t *c, int *in_progress)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *in_progress = 0;
    if (connect(fd, (struct sockaddr *)&srv_addr, sizeof(srv_addr)) != 0) {
        if (errno != EINPROGRESS) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        *in_progress = 1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    c->fd = fd;
    AADD(g_open, 1);
    AADD(g_connects, 1);
    return 0;
}

static void close_socket(client_t *c, int abort)
{
    if (c->fd < 0)
        return;
    if (abort) {
        struct linger l = {1, 0}; /* RST: no TIME_WAIT for abandoned connections */
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    AADD(g_open, -1);
}

static int socket_error(int fd)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return errno;
    return err;
}

/* ---- requests ------------------------------------------------------------------------ */
static void reset_response(client_t *c)
{
    free(c->hbuf);
    c->hbuf = NULL;
    c->hlen = c->hcap = 0;
    c->hdr_done = 0;
    c->body_mode = B_NONE;
    c->body_left = 0;
    c->status = 0;
    c->keepalive = 1;
    memset(&c->dec, 0, sizeof(c->dec));
    c->flags[0] = 0;
}

static void schedule_next(thread_t *t, client_t *c, uint64_t now)
{
    uint64_t at = now + think_us(t, phase_at(now));
    if (at >= end_us || stop_now) {
        c->state = S_DONE;
        t->active--;
        timer_del(t, c);
        return;
    }
    c->state = S_IDLE;
    timer_set(t, c, at);
}

/* Ends the request in flight with `status` (HTTP status, or 0..3, see top). */
static void finish(thread_t *t, client_t *c, int status)
{
    uint64_t now = now_us();
    uint64_t lat = now - c->start_us;
    if (status == 0)
        lat = timeout_us;
    char fl[12];
    int n = 0;
    for (const char *f = c->flags; *f && n < 8; f++)
        fl[n++] = *f;
    if (c->fresh && n < 10)
        fl[n++] = 'C';
    if (n == 0)
        fl[n++] = '-';
    fl[n] = 0;
    fprintf(t->log, "%lld\t%llu\t%d\t%s\t%d\t%ld\t%s\n", (long long)c->start_us - (long long)t0_us,
            (unsigned long long)lat, status, kind_names[c->kind], c->line, c->val, fl);

    int w = now > t0_us ? (int)((now - t0_us) / (uint64_t)(cfg.progress_s * 1e6)) : 0;
    if (w >= nlive)
        w = nlive - 1;
    livewin_t *lw = &live[w];
    AADD(lw->n, 1);
    AADD(g_total, 1);
    AADD(g_inflight, -1);
    if (status >= 200 && status < 300) {
        AADD(lw->ok, 1);
        AADD(g_ok, 1);
    } else if (status >= 100) {
        AADD(lw->non2xx, 1);
        AADD(g_non2xx, 1);
    } else if (status == 0) {
        AADD(lw->timeouts, 1);
        AADD(g_timeouts, 1);
    } else {
        AADD(lw->errors, 1);
        if (status == 1)
            AADD(g_connerr, 1);
        else if (status == 2)
            AADD(g_closed, 1);
        else
            AADD(g_proto, 1);
    }
    if (status >= 100 || status == 0)
        AADD(lw->hist[hist_index(lat)], 1);

    if (status < 100)
        close_socket(c, 1);
    else if (!c->keepalive)
        close_socket(c, 0);
    reset_response(c);
    schedule_next(t, c, now);
}

static void send_request(thread_t *t, client_t *c)
{
    while (c->req_off < c->req_len) {
        ssize_t n = send(c->fd, c->req + c->req_off, (size_t)(c->req_len - c->req_off), MSG_NOSIGNAL);
        if (n > 0) {
            c->req_off += (int)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* EPOLLOUT continues */
        if (n < 0 && errno == EINTR)
            continue;
        finish(t, c, 2);
        return;
    }
}

static void start_request(thread_t *t, client_t *c, uint64_t now)
{
    double r = rnd01(t) * mix_total;
    int lo = 0, hi = nmix - 1;
    while (lo < hi) { /* first line whose cumulative weight exceeds r */
        int mid = (lo + hi) / 2;
        if (mix[mid].cum > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    const mixline_t *m = &mix[lo];
    c->line = lo;
    c->kind = m->kind;
    c->val = m->has_var ? m->lo + (long)(rnd(t) % (uint64_t)(m->hi - m->lo + 1)) : 0;
    if (m->has_var)
        c->req_len = snprintf(c->req, sizeof(c->req),
                              "GET %s%ld%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: marketd-overload/1\r\n\r\n",
                              m->pre, c->val, m->post, host_hdr);
    else
        c->req_len = snprintf(c->req, sizeof(c->req),
                              "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: marketd-overload/1\r\n\r\n", m->pre,
                              host_hdr);
    c->req_off = 0;
    c->start_us = now;
    c->fresh = 0;
    reset_response(c);
    AADD(g_inflight, 1);
    timer_set(t, c, now + timeout_us);
    if (c->fd < 0) {
        int inprog;
        c->fresh = 1;
        if (open_socket(t, c, &inprog) != 0) {
            finish(t, c, 1);
            return;
        }
        if (inprog) {
            c->state = S_CONNECTING;
            return;
        }
    }
    c->state = S_WAITING;
    send_request(t, c);
}

/* ---- responses ----------------------------------------------------------------------- */
static int hdr_is(const struct phr_header *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}
static int val_has(const struct phr_header *h, const char *word)
{
    size_t n = strlen(word);
    for (size_t i = 0; i + n <= h->value_len; i++)
        if (strncasecmp(h->value + i, word, n) == 0)
            return 1;
    return 0;
}

/* Consumes body bytes; returns 1 when the response is complete. */
static int consume_body(thread_t *t, client_t *c, char *b, size_t n)
{
    (void)t;
    switch (c->body_mode) {
    case B_NONE:
        return 1;
    case B_LENGTH:
        c->body_left -= n < c->body_left ? n : c->body_left;
        return c->body_left == 0;
    case B_CHUNKED: {
        size_t sz = n;
        ssize_t r = phr_decode_chunked(&c->dec.d, b, &sz);
        if (r == -1)
            return -1;
        return r >= 0;
    }
    default:
        return 0; /* until the connection closes */
    }
}

/* Returns 1 if the response completed (or failed), 0 if more is needed. */
static int feed(thread_t *t, client_t *c, char *buf, size_t n)
{
    if (!c->hdr_done) {
        char *p = buf;
        size_t len = n;
        if (c->hlen > 0) {
            if (c->hlen + n > c->hcap) {
                c->hcap = (c->hlen + n) * 2;
                c->hbuf = realloc(c->hbuf, c->hcap);
                if (c->hbuf == NULL)
                    die("out of memory");
            }
            memcpy(c->hbuf + c->hlen, buf, n);
            c->hlen += n;
            p = c->hbuf;
            len = c->hlen;
        }
        int minor = 1, status = 0;
        const char *msg;
        size_t msg_len, nh = MAX_HDRS;
        struct phr_header h[MAX_HDRS];
        int ret = phr_parse_response(p, len, &minor, &status, &msg, &msg_len, h, &nh, 0);
        if (ret == -2) {
            if (len > MAX_HDR_BYTES) {
                finish(t, c, 3);
                return 1;
            }
            if (c->hlen == 0) { /* keep the partial header */
                c->hcap = n * 2 + 1024;
                c->hbuf = malloc(c->hcap);
                if (c->hbuf == NULL)
                    die("out of memory");
                memcpy(c->hbuf, buf, n);
                c->hlen = n;
            }
            return 0;
        }
        if (ret < 0) {
            finish(t, c, 3);
            return 1;
        }
        if (status < 200) { /* 1xx: not expected from marketd */
            finish(t, c, 3);
            return 1;
        }
        c->status = status;
        c->keepalive = minor >= 1;
        c->body_mode = B_CLOSE;
        int have_len = 0, nf = 0;
        for (size_t i = 0; i < nh; i++) {
            if (hdr_is(&h[i], "content-length")) {
                c->body_left = strtoull(h[i].value, NULL, 10);
                have_len = 1;
            } else if (hdr_is(&h[i], "transfer-encoding") && val_has(&h[i], "chunked")) {
                c->body_mode = B_CHUNKED;
            } else if (hdr_is(&h[i], "connection")) {
                if (val_has(&h[i], "close"))
                    c->keepalive = 0;
                else if (val_has(&h[i], "keep-alive"))
                    c->keepalive = 1;
            } else if (hdr_is(&h[i], "retry-after") && nf < 6) {
                c->flags[nf++] = 'R';
            } else if (hdr_is(&h[i], "x-cache") && nf < 6 && h[i].value_len > 0) {
                char x = h[i].value[0];
                c->flags[nf++] = x == 'H' || x == 'h' ? 'H' : x == 'M' || x == 'm' ? 'M' : 'B';
            }
        }
        c->flags[nf] = 0;
        if (c->body_mode != B_CHUNKED) {
            if (status == 204 || status == 304)
                c->body_mode = B_NONE;
            else if (have_len)
                c->body_mode = c->body_left > 0 ? B_LENGTH : B_NONE;
            else
                c->keepalive = 0;
        }
        c->hdr_done = 1;
        int done = c->body_mode == B_NONE ? 1 : consume_body(t, c, p + ret, len - (size_t)ret);
        if (done < 0) {
            finish(t, c, 3);
            return 1;
        }
        if (done) {
            finish(t, c, c->status);
            return 1;
        }
        free(c->hbuf); /* body bytes are counted, not kept */
        c->hbuf = NULL;
        c->hlen = c->hcap = 0;
        return 0;
    }
    int done = consume_body(t, c, buf, n);
    if (done < 0) {
        finish(t, c, 3);
        return 1;
    }
    if (done) {
        finish(t, c, c->status);
        return 1;
    }
    return 0;
}

static void on_readable(thread_t *t, client_t *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, t->scratch, 65536, 0);
        if (n > 0) {
            if (c->state != S_WAITING) { /* bytes nobody asked for */
                close_socket(c, 1);
                return;
            }
            if (feed(t, c, t->scratch, (size_t)n))
                return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        /* EOF or error */
        if (c->state == S_WAITING) {
            if (c->hdr_done && c->body_mode == B_CLOSE) {
                c->keepalive = 0;
                finish(t, c, c->status);
            } else {
                finish(t, c, 2);
            }
        } else {
            AADD(g_idle_closed, 1);
            close_socket(c, 0);
        }
        return;
    }
}

static void on_event(thread_t *t, client_t *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (c->preconnect) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            c->preconnect = 0;
            t->preconnecting--;
            if (socket_error(c->fd) != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
                AADD(g_connect_fail_initial, 1);
                close_socket(c, 1);
            }
        }
        return;
    }
    if (c->state == S_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (socket_error(c->fd) != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
            finish(t, c, 1);
            return;
        }
        c->state = S_WAITING;
        send_request(t, c);
        if (c->state != S_WAITING || c->fd < 0)
            return;
    } else if (c->state == S_WAITING && (ev & EPOLLOUT) && c->req_off < c->req_len) {
        send_request(t, c);
        if (c->state != S_WAITING || c->fd < 0)
            return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(t, c);
}

static void on_timer(thread_t *t, client_t *c, uint64_t now)
{
    c->heap_pos = -1; /* already popped */
    switch (c->state) {
    case S_IDLE:
        if (now >= end_us || stop_now) {
            c->state = S_DONE;
            t->active--;
        } else {
            start_request(t, c, now);
        }
        break;
    case S_CONNECTING:
    case S_WAITING:
        finish(t, c, 0);
        break;
    default:
        break;
    }
}

static void run_loop(thread_t *t, int until_preconnected, uint64_t deadline)
{
    struct epoll_event evs[1024];
    for (;;) {
        uint64_t now = now_us();
        if (until_preconnected) {
            if (t->preconnecting == 0 || now >= deadline)
                return;
        } else {
            while (t->heap_n > 0 && t->heap[0]->timer_at <= now) {
                client_t *c = t->heap[0];
                t->heap_n--;
                if (t->heap_n > 0) {
                    t->heap[0] = t->heap[t->heap_n];
                    t->heap[0]->heap_pos = 0;
                    heap_down(t, 0);
                }
                on_timer(t, c, now);
            }
            if (t->active == 0)
                return;
        }
        int wait_ms = 50;
        if (!until_preconnected && t->heap_n > 0) {
            uint64_t d = t->heap[0]->timer_at > now ? t->heap[0]->timer_at - now : 0;
            wait_ms = (int)((d + 999) / 1000);
            if (wait_ms > 50)
                wait_ms = 50;
        }
        int n = epoll_wait(t->ep, evs, 1024, wait_ms);
        for (int i = 0; i < n; i++)
            on_event(t, evs[i].data.ptr, evs[i].events);
    }
}

static void *thread_main(void *arg)
{
    thread_t *t = arg;
    /* connect every user before t = 0 */
    for (int i = 0; i < t->nclients; i++) {
        client_t *c = &t->clients[i];
        int inprog;
        if (open_socket(t, c, &inprog) != 0) {
            AADD(g_connect_fail_initial, 1);
            continue;
        }
        if (inprog) {
            c->preconnect = 1;
            t->preconnecting++;
        }
    }
    run_loop(t, 1, now_us() + (uint64_t)(cfg.connect_wait_s * 1e6));
    for (int i = 0; i < t->nclients; i++) { /* still pending: give up on them */
        client_t *c = &t->clients[i];
        if (c->preconnect) {
            c->preconnect = 0;
            AADD(g_connect_fail_initial, 1);
            close_socket(c, 1);
        }
    }
    t->preconnecting = 0;
    pthread_barrier_wait(&barrier_connected);
    pthread_barrier_wait(&barrier_started); /* main has set t0 */
    for (int i = 0; i < t->nclients; i++) {
        client_t *c = &t->clients[i];
        c->state = S_IDLE;
        timer_set(t, c, t0_us + first_wait_us(t, &cfg.phases[0]));
    }
    t->active = t->nclients;
    run_loop(t, 0, 0);
    for (int i = 0; i < t->nclients; i++)
        close_socket(&t->clients[i], 0);
    fflush(t->log);
    __atomic_store_n(&t->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- set-up ----------------------------------------------------------------------------- */
static int kind_index(const char *name)
{
    for (int i = 0; i < nkinds; i++)
        if (strcmp(kind_names[i], name) == 0)
            return i;
    if (nkinds == MAX_KINDS)
        die("more than %d kinds in the mix", MAX_KINDS);
    snprintf(kind_names[nkinds], sizeof(kind_names[0]), "%s", name);
    return nkinds++;
}

static void load_mix(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        die("cannot open mix file %s: %s", path, strerror(errno));
    char line[2048];
    int cap = 0;
    while (fgets(line, sizeof(line), f)) {
        char kind[64], tpl[1100];
        double w;
        long lo, hi;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (sscanf(line, "%63s %lf %ld %ld %1099s", kind, &w, &lo, &hi, tpl) != 5)
            die("bad mix line: %s", line);
        if (w <= 0)
            continue;
        if (nmix == cap) {
            cap = cap ? cap * 2 : 64;
            mix = realloc(mix, sizeof(*mix) * (size_t)cap);
            if (mix == NULL)
                die("out of memory");
        }
        mixline_t *m = &mix[nmix++];
        memset(m, 0, sizeof(*m));
        m->kind = kind_index(kind);
        m->lo = lo;
        m->hi = hi;
        char *v = strstr(tpl, "{}");
        if (v != NULL) {
            if (hi < lo)
                die("bad range in mix line: %s", line);
            m->has_var = 1;
            *v = 0;
            snprintf(m->post, sizeof(m->post), "%s", v + 2);
        }
        if (strlen(tpl) >= sizeof(m->pre))
            die("path too long: %s", tpl);
        snprintf(m->pre, sizeof(m->pre), "%s", tpl);
        mix_total += w;
        m->cum = mix_total;
    }
    fclose(f);
    if (nmix == 0)
        die("empty mix file %s", path);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_now = 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --mix FILE --log PREFIX --phase SECS:THINK_MIN_MS:THINK_MAX_MS [--phase ...]\n"
            "               [--host 127.0.0.1] [--port 18081] [--clients 1000] [--threads 2]\n"
            "               [--timeout-ms 5000] [--t0-file FILE] [--progress-s 5] [--connect-wait-s 30]\n"
            "               [--seed N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"host", 1, 0, 'h'},
                                         {"port", 1, 0, 'p'},
                                         {"clients", 1, 0, 'c'},
                                         {"threads", 1, 0, 't'},
                                         {"phase", 1, 0, 'P'},
                                         {"timeout-ms", 1, 0, 'T'},
                                         {"mix", 1, 0, 'm'},
                                         {"log", 1, 0, 'l'},
                                         {"t0-file", 1, 0, '0'},
                                         {"progress-s", 1, 0, 'g'},
                                         {"connect-wait-s", 1, 0, 'w'},
                                         {"seed", 1, 0, 's'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h':
            cfg.host = optarg;
            break;
        case 'p':
            cfg.port = atoi(optarg);
            break;
        case 'c':
            cfg.clients = atoi(optarg);
            break;
        case 't':
            cfg.threads = atoi(optarg);
            break;
        case 'T':
            cfg.timeout_ms = atof(optarg);
            break;
        case 'm':
            cfg.mix_path = optarg;
            break;
        case 'l':
            cfg.log_path = optarg;
            break;
        case '0':
            cfg.t0_path = optarg;
            break;
        case 'g':
            cfg.progress_s = atof(optarg);
            break;
        case 'w':
            cfg.connect_wait_s = atof(optarg);
            break;
        case 's':
            cfg.seed = strtoull(optarg, NULL, 10);
            break;
        case 'P': {
            if (cfg.nphases == MAX_PHASES)
                die("too many phases");
            phase_t *p = &cfg.phases[cfg.nphases++];
            if (sscanf(optarg, "%lf:%lf:%lf", &p->secs, &p->think_min_ms, &p->think_max_ms) != 3 ||
                p->secs <= 0 || p->think_min_ms < 0 || p->think_max_ms < p->think_min_ms)
                die("bad --phase %s (want SECONDS:THINK_MIN_MS:THINK_MAX_MS)", optarg);
            break;
        }
        default:
            usage();
        }
    }
    if (cfg.mix_path == NULL || cfg.log_path == NULL || cfg.nphases == 0 || cfg.clients < 1 ||
        cfg.threads < 1 || cfg.timeout_ms <= 0 || cfg.progress_s <= 0)
        usage();
    if (cfg.threads > cfg.clients)
        cfg.threads = cfg.clients;
    memset(&srv_addr, 0, sizeof(srv_addr));
    srv_addr.sin_family = AF_INET;
    srv_addr.sin_port = htons((uint16_t)cfg.port);
    if (inet_pton(AF_INET, cfg.host, &srv_addr.sin_addr) != 1)
        die("--host must be an IPv4 address, got %s", cfg.host);
    snprintf(host_hdr, sizeof(host_hdr), "%s:%d", cfg.host, cfg.port);
    load_mix(cfg.mix_path);

    /* descriptors: one per user, plus a few */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)cfg.clients + 64)
            die("open files limit %llu is too low for %d clients", (unsigned long long)rl.rlim_cur,
                cfg.clients);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    double total_s = 0;
    for (int i = 0; i < cfg.nphases; i++)
        total_s += cfg.phases[i].secs;
    timeout_us = (uint64_t)(cfg.timeout_ms * 1000.0);
    nlive = (int)((total_s + cfg.timeout_ms / 1000.0) / cfg.progress_s) + 3;
    live = calloc((size_t)nlive, sizeof(*live));
    threads = calloc((size_t)cfg.threads, sizeof(*threads));
    if (live == NULL || threads == NULL)
        die("out of memory");
    if (cfg.seed == 0)
        cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    pthread_barrier_init(&barrier_connected, NULL, (unsigned)cfg.threads + 1);
    pthread_barrier_init(&barrier_started, NULL, (unsigned)cfg.threads + 1);
    uint64_t tc0 = now_us();
    for (int i = 0; i < cfg.threads; i++) {
        thread_t *t = &threads[i];
        t->index = i;
        t->nclients = cfg.clients / cfg.threads + (i < cfg.clients % cfg.threads);
        t->clients = calloc((size_t)t->nclients, sizeof(client_t));
        t->heap = calloc((size_t)t->nclients, sizeof(client_t *));
        t->scratch = malloc(65536);
        t->rng = cfg.seed + 0x1234567ull * (uint64_t)(i + 1);
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        if (t->clients == NULL || t->heap == NULL || t->scratch == NULL || t->ep < 0)
            die("thread set-up failed");
        for (int k = 0; k < t->nclients; k++) {
            t->clients[k].fd = -1;
            t->clients[k].heap_pos = -1;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s.%d", cfg.log_path, i);
        t->log = fopen(path, "w");
        if (t->log == NULL)
            die("cannot write %s: %s", path, strerror(errno));
        setvbuf(t->log, NULL, _IOFBF, 1 << 20);
        if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
            die("pthread_create failed");
    }
    pthread_barrier_wait(&barrier_connected);
    uint64_t connected = (uint64_t)ALOAD(g_open);
    fprintf(stderr, "loadgen: %llu of %d connections open after %.1f s (%llu failed)\n",
            (unsigned long long)connected, cfg.clients, (double)(now_us() - tc0) / 1e6,
            (unsigned long long)ALOAD(g_connect_fail_initial));
    t0_us = now_us();
    end_us = t0_us + (uint64_t)(total_s * 1e6);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    double t0_epoch = (double)rt.tv_sec + (double)rt.tv_nsec / 1e9;
    if (cfg.t0_path != NULL) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", cfg.t0_path);
        FILE *f = fopen(tmp, "w");
        if (f == NULL || fprintf(f, "%.6f\n", t0_epoch) < 0 || fclose(f) != 0 ||
            rename(tmp, cfg.t0_path) != 0)
            die("cannot write %s", cfg.t0_path);
    }
    pthread_barrier_wait(&barrier_started);

    /* progress, one line per window, until every thread has finished */
    int printed = 0;
    uint64_t win_us = (uint64_t)(cfg.progress_s * 1e6);
    for (;;) {
        int alive = 0;
        for (int i = 0; i < cfg.threads; i++)
            if (!__atomic_load_n(&threads[i].finished, __ATOMIC_ACQUIRE))
                alive++;
        uint64_t now = now_us();
        int upto = (int)((now - t0_us) / win_us); /* windows [0, upto) are closed */
        if (!alive && !stop_now)
            upto = nlive; /* the windows of the last answers */
        else if (!alive)
            upto = upto + 1 < nlive ? upto + 1 : nlive; /* interrupted: up to now */
        for (; printed < upto && printed < nlive; printed++) {
            livewin_t *w = &live[printed];
            uint64_t n = ALOAD(w->n);
            if (n == 0 && printed * win_us >= end_us - t0_us)
                continue;
            uint64_t cnt = 0, tot = 0, p50 = 0, p99 = 0;
            for (int b = 0; b < HBUCKETS; b++)
                tot += ALOAD(w->hist[b]);
            for (int b = 0; b < HBUCKETS && tot > 0; b++) {
                cnt += ALOAD(w->hist[b]);
                if (p50 == 0 && cnt * 2 >= tot)
                    p50 = hist_value(b) + 1;
                if (p99 == 0 && cnt * 100 >= tot * 99) {
                    p99 = hist_value(b) + 1;
                    break;
                }
            }
            fprintf(stderr,
                    "loadgen: t=%3.0f-%3.0fs %7.0f answers/s (%5.1f %% 2xx)  p50 %7.1f ms  p99 %7.1f ms  "
                    "non-2xx %llu  "
                    "timeouts %llu  conn errors %llu  in flight %lld  open conns %lld\n",
                    printed * cfg.progress_s, (printed + 1) * cfg.progress_s, (double)n / cfg.progress_s,
                    n ? 100.0 * (double)ALOAD(w->ok) / (double)n : 0.0, (double)p50 / 1000,
                    (double)p99 / 1000, (unsigned long long)ALOAD(w->non2xx),
                    (unsigned long long)ALOAD(w->timeouts), (unsigned long long)ALOAD(w->errors),
                    (long long)ALOAD(g_inflight), (long long)ALOAD(g_open));
        }
        if (!alive)
            break;
        usleep(100000);
    }
    printf(
        "LOADGEN t0_epoch=%.6f clients=%d threads=%d duration_s=%.1f connected_at_start=%llu "
        "initial_connect_failures=%llu requests=%llu ok=%llu non2xx=%llu timeouts=%llu connect_errors=%llu "
        "closed=%llu protocol_errors=%llu connects=%llu idle_closed_by_server=%llu interrupted=%d\n",
        t0_epoch, cfg.clients, cfg.threads, total_s, (unsigned long long)connected,
        (unsigned long long)g_connect_fail_initial, (unsigned long long)g_total, (unsigned long long)g_ok,
        (unsigned long long)g_non2xx, (unsigned long long)g_timeouts, (unsigned long long)g_connerr,
        (unsigned long long)g_closed, (unsigned long long)g_proto, (unsigned long long)g_connects,
        (unsigned long long)g_idle_closed, stop_now);
    for (int i = 0; i < cfg.threads; i++) {
        pthread_join(threads[i].tid, NULL);
        fclose(threads[i].log);
    }
    return stop_now ? 1 : 0;
}
