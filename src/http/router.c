#include "http/router.h"

#include <stdio.h>
#include <string.h>

size_t route_body_max(route_body_t kind)
{
    switch (kind) {
    case BODY_JSON:
        return 1024 * 1024;
    case BODY_IMAGE:
        return 5 * 1024 * 1024;
    case BODY_NONE:
        break;
    }
    return 0;
}

/* Next '/'-separated segment of s starting at *pos (which points after a
 * '/'); returns 0 at the end. */
static int next_segment(slice_t s, size_t *pos, slice_t *seg)
{
    if (*pos > s.len)
        return 0;
    size_t start = *pos, end = start;
    while (end < s.len && s.ptr[end] != '/')
        end++;
    *seg = (slice_t){s.ptr + start, end - start};
    *pos = end + 1;
    return 1;
}

static int match_one(const char *pattern, slice_t path, slice_t params[ROUTE_MAX_PARAMS], int *literal_score)
{
    slice_t pat = {pattern, strlen(pattern)};
    if (path.len == 0 || path.ptr[0] != '/')
        return 0;
    size_t pp = 1, sp = 1;
    int nparams = 0, score = 0;
    slice_t a, b;
    for (;;) {
        int ha = next_segment(pat, &pp, &a), hb = next_segment(path, &sp, &b);
        if (!ha || !hb) {
            *literal_score = score;
            return ha == hb;
        }
        if (a.len >= 2 && a.ptr[0] == '{') {
            if (b.len == 0 || nparams == ROUTE_MAX_PARAMS)
                return 0;
            params[nparams++] = b;
        } else if (a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0) {
            score++;
        } else {
            return 0;
        }
    }
}

int router_match(const route_t *routes, int n, int method, slice_t path, slice_t params[ROUTE_MAX_PARAMS],
                 const char **pattern)
{
    /* The best pattern first (most literal segments), then the method among
     * the rows of that pattern: a path names one resource, whose methods
     * are what Allow lists. */
    const char *best = NULL;
    int best_score = -1;
    slice_t tmp[ROUTE_MAX_PARAMS] = {{0}};
    for (int i = 0; i < n; i++) {
        int score;
        if (match_one(routes[i].pattern, path, tmp, &score) && score > best_score) {
            best = routes[i].pattern;
            best_score = score;
            memcpy(params, tmp, sizeof(tmp));
        }
    }
    *pattern = best;
    if (best == NULL || method < 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (routes[i].method == method && strcmp(routes[i].pattern, best) == 0)
            return i;
    return -1;
}

void router_allow(const route_t *routes, int n, const char *pattern, char *buf, size_t len)
{
    static const char *const names[M_NMETHODS] = {"GET, HEAD", "POST", "PATCH", "DELETE"};
    size_t o = 0;
    buf[0] = '\0';
    for (int m = 0; m < M_NMETHODS; m++) {
        int served = 0;
        for (int i = 0; i < n && !served; i++)
            served = routes[i].method == m && strcmp(routes[i].pattern, pattern) == 0;
        if (!served)
            continue;
        int w = snprintf(buf + o, len - o, "%s%s", o ? ", " : "", names[m]);
        if (w < 0 || (size_t)w >= len - o)
            break;
        o += (size_t)w;
    }
}
