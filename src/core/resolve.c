#include "core/resolve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* A process resolves the handful of names in its configuration (database,
 * replicas, Redis seeds and cluster nodes): a small table that lives as long
 * as the process, so a lookup still running at exit touches nothing freed. */
#define MAX_NAMES 64
#define MAX_ADDRS 16

typedef struct entry {
    char *name; /* never freed: lookup threads read it without the lock */
    char addrs[MAX_ADDRS][RESOLVE_ADDR_MAX];
    int naddrs;
    unsigned next; /* rotation over addrs */
    int failed;    /* the last lookup failed: why in err */
    char err[128];
    int looking; /* a lookup thread owns this entry's next answer */
    int asked;   /* some lookup has started */
    uint64_t started_ms;
} entry_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t table[MAX_NAMES];
static int nentries;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int resolve_is_numeric(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* One thread per lookup, detached: a DNS server that never answers holds
 * that name's thread for the resolver's timeout and nothing else. There is
 * at most one per name, so at most MAX_NAMES. */
static void *lookup_main(void *arg)
{
    entry_t *e = arg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(e->name, NULL, &hints, &res);

    char addrs[MAX_ADDRS][RESOLVE_ADDR_MAX];
    int n = 0;
    for (const struct addrinfo *ai = rc == 0 ? res : NULL; ai != NULL && n < MAX_ADDRS; ai = ai->ai_next) {
        const void *a = NULL;
        if (ai->ai_family == AF_INET)
            a = &((const struct sockaddr_in *)(const void *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            a = &((const struct sockaddr_in6 *)(const void *)ai->ai_addr)->sin6_addr;
        if (a == NULL || inet_ntop(ai->ai_family, a, addrs[n], RESOLVE_ADDR_MAX) == NULL)
            continue;
        int dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = strcmp(addrs[i], addrs[n]) == 0;
        n += !dup;
    }
    if (res != NULL)
        freeaddrinfo(res);

    pthread_mutex_lock(&lock);
    e->looking = 0;
    if (n > 0) {
        memcpy(e->addrs, addrs, sizeof(addrs[0]) * (size_t)n);
        e->naddrs = n;
        e->failed = 0;
    } else {
        /* A name that no longer resolves (its containers are gone) has no
         * address worth trying: the old ones would only time out. */
        e->naddrs = 0;
        e->failed = 1;
        snprintf(e->err, sizeof(e->err), "cannot resolve %s: %s", e->name,
                 rc != 0 ? gai_strerror(rc) : "no address");
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* With the lock held. */
static void lookup_start(entry_t *e)
{
    e->looking = 1;
    e->asked = 1;
    e->started_ms = now_ms();
    pthread_attr_t attr;
    pthread_t tid;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&tid, &attr, lookup_main, e);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        e->looking = 0;
        e->failed = 1;
        e->naddrs = 0;
        snprintf(e->err, sizeof(e->err), "cannot resolve %s: no thread for the lookup", e->name);
    }
}

int resolve_get(const char *name, char out[RESOLVE_ADDR_MAX], char *err, size_t errlen)
{
    if (resolve_is_numeric(name)) {
        snprintf(out, RESOLVE_ADDR_MAX, "%s", name);
        return 1;
    }
    pthread_mutex_lock(&lock);
    entry_t *e = NULL;
    for (int i = 0; i < nentries && e == NULL; i++)
        if (strcmp(table[i].name, name) == 0)
            e = &table[i];
    if (e == NULL) {
        char *copy = nentries < MAX_NAMES ? strdup(name) : NULL;
        if (copy == NULL) {
            pthread_mutex_unlock(&lock);
            snprintf(err, errlen, "cannot resolve %s: more than %d host names", name, MAX_NAMES);
            return -1;
        }
        e = &table[nentries++];
        e->name = copy;
    }
    if (!e->looking && (!e->asked || now_ms() - e->started_ms >= RESOLVE_FRESH_MS))
        lookup_start(e);
    int rc;
    if (e->naddrs > 0) {
        snprintf(out, RESOLVE_ADDR_MAX, "%s", e->addrs[e->next++ % (unsigned)e->naddrs]);
        rc = 1;
    } else if (e->failed) {
        snprintf(err, errlen, "%s", e->err);
        rc = -1;
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}
