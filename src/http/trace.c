#include "http/trace.h"

#include <sodium.h>
#include <string.h>

static int lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return 0;
    return 1;
}

/* "vv-" + 32 + "-" + 16 + "-" + 2 */
#define TRACEPARENT_LEN 55

int trace_parse(const char *s, size_t n, trace_t *t)
{
    if (s == NULL || n < TRACEPARENT_LEN || !lower_hex(s, 2) || memcmp(s, "ff", 2) == 0)
        return -1;
    if (memcmp(s, "00", 2) == 0 ? n != TRACEPARENT_LEN : (n > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != '-'))
        return -1;
    const char *tid = s + 3, *pid = tid + TRACE_ID_HEX + 1, *fl = pid + SPAN_ID_HEX + 1;
    if (s[2] != '-' || tid[TRACE_ID_HEX] != '-' || pid[SPAN_ID_HEX] != '-')
        return -1;
    if (!lower_hex(tid, TRACE_ID_HEX) || !lower_hex(pid, SPAN_ID_HEX) || !lower_hex(fl, 2) ||
        all_zero(tid, TRACE_ID_HEX) || all_zero(pid, SPAN_ID_HEX))
        return -1;
    memcpy(t->trace_id, tid, TRACE_ID_HEX);
    t->trace_id[TRACE_ID_HEX] = '\0';
    memcpy(t->parent_id, pid, SPAN_ID_HEX);
    t->parent_id[SPAN_ID_HEX] = '\0';
    unsigned hi = (unsigned)(fl[0] <= '9' ? fl[0] - '0' : fl[0] - 'a' + 10);
    unsigned lo = (unsigned)(fl[1] <= '9' ? fl[1] - '0' : fl[1] - 'a' + 10);
    t->flags = hi << 4 | lo;
    return 0;
}

void trace_seed(uint64_t *state)
{
    randombytes_buf(state, sizeof(*state));
}

/* splitmix64: fast, full period, good enough for ids. */
static uint64_t next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void hex64(uint64_t v, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
}

void trace_new_trace_id(uint64_t *state, char out[TRACE_ID_HEX + 1])
{
    uint64_t a, b;
    do {
        a = next(state), b = next(state);
    } while (a == 0 && b == 0);
    hex64(a, out);
    hex64(b, out + 16);
    out[TRACE_ID_HEX] = '\0';
}

void trace_new_span_id(uint64_t *state, char out[SPAN_ID_HEX + 1])
{
    uint64_t a;
    do
        a = next(state);
    while (a == 0);
    hex64(a, out);
    out[SPAN_ID_HEX] = '\0';
}
