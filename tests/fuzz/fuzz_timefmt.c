/*
 * libFuzzer target: ts_parse_pg and ts_parse_rfc3339 on arbitrary bytes.
 * Whatever a parser accepts must format and re-parse to the same instant,
 * in both output formats (an accepted time we cannot write back would reach
 * PostgreSQL or a client as garbage).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/timefmt.h"

static void fail(const char *what, const uint8_t *data, size_t size, int64_t us, const char *text, int rc,
                 int64_t back)
{
    fprintf(stderr, "fuzz_timefmt: %s: input \"%.*s\" -> %lld us -> \"%s\" -> rc %d, %lld us\n", what,
            (int)size, (const char *)data, (long long)us, text, rc, (long long)back);
    abort();
}

static void round_trip(const uint8_t *data, size_t size, int64_t us)
{
    char buf[TS_BUFSZ];
    int64_t back = 0;
    size_t n = ts_format_rfc3339(us, buf);
    if (n == 0 || n >= TS_BUFSZ || strlen(buf) != n)
        fail("ts_format_rfc3339 length", data, size, us, buf, 0, 0);
    int rc = ts_parse_rfc3339(buf, n, &back);
    if (rc != 0 || back != us)
        fail("rfc3339 round trip", data, size, us, buf, rc, back);

    n = ts_format_pg(us, buf);
    if (n < 4 || n >= TS_BUFSZ || strlen(buf) != n || strcmp(buf + n - 3, "+00") != 0)
        fail("ts_format_pg shape", data, size, us, buf, 0, 0);
    /* ts_parse_pg reads PostgreSQL's zone-less output of `timestamp`. */
    rc = ts_parse_pg(buf, n - 3, &back);
    if (rc != 0 || back != us)
        fail("pg round trip", data, size, us, buf, rc, back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int64_t us = 0;
    int rc = ts_parse_pg(s, size, &us);
    if (rc == 0)
        round_trip(data, size, us);
    else if (rc != MKD_EINVAL)
        abort();
    rc = ts_parse_rfc3339(s, size, &us);
    if (rc == 0)
        round_trip(data, size, us);
    else if (rc != MKD_EINVAL)
        abort();
    return 0;
}
