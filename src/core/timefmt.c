#include "core/timefmt.h"

#include <stdio.h>

#include "core/error.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t yy = (int64_t)yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yy + (*m <= 2));
}

static int digits(const char *s, size_t n, size_t at, size_t count, int *out)
{
    if (at + count > n)
        return -1;
    int v = 0;
    for (size_t i = 0; i < count; i++) {
        char c = s[at + i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

/* Parses "YYYY-MM-DD?HH:MM:SS[.f]" where ? is `sep1` or `sep2`; returns the
 * index after the time (or after the date when date_only), or -1. */
static long parse_datetime(const char *s, size_t n, char sep1, char sep2, int allow_date_only, int64_t *us)
{
    int y, mo, d, h = 0, mi = 0, se = 0;
    if (digits(s, n, 0, 4, &y) || n < 10 || s[4] != '-' || digits(s, n, 5, 2, &mo) || s[7] != '-' ||
        digits(s, n, 8, 2, &d))
        return -1;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    size_t i = 10;
    int64_t frac = 0;
    if (n == 10 && allow_date_only) {
        /* date only */
    } else {
        if (n < 19 || (s[10] != sep1 && s[10] != sep2) || digits(s, n, 11, 2, &h) || s[13] != ':' ||
            digits(s, n, 14, 2, &mi) || s[16] != ':' || digits(s, n, 17, 2, &se))
            return -1;
        if (h > 23 || mi > 59 || se > 59)
            return -1;
        i = 19;
        if (i < n && s[i] == '.') {
            i++;
            size_t start = i;
            int64_t scale = 100000;
            while (i < n && s[i] >= '0' && s[i] <= '9') {
                if (i - start < 6) {
                    frac += (s[i] - '0') * scale;
                    scale /= 10;
                }
                i++;
            }
            if (i == start || i - start > 9)
                return -1;
        }
    }
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    *us = ((days * 86400) + h * 3600 + mi * 60 + se) * 1000000 + frac;
    return (long)i;
}

int ts_parse_pg(const char *s, size_t n, int64_t *us)
{
    long i = parse_datetime(s, n, ' ', ' ', 0, us);
    return i >= 0 && (size_t)i == n ? 0 : MKD_EINVAL;
}

static size_t format(int64_t us, char out[TS_BUFSZ], char sep, const char *zone, int always_frac)
{
    /* Callers validate their input; clamping keeps any other value from
     * overflowing below (and from printing a year PostgreSQL rejects). */
    us = us < TS_MIN_US ? TS_MIN_US : (us > TS_MAX_US ? TS_MAX_US : us);
    int64_t secs = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    int64_t frac = us - secs * 1000000;
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t rem = secs - days * 86400;
    int y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    int n;
    if (frac != 0 || always_frac)
        n = snprintf(out, TS_BUFSZ, "%04d-%02u-%02u%c%02d:%02d:%02d.%06lld%s", y, m, d, sep,
                     (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (long long)frac, zone);
    else
        n = snprintf(out, TS_BUFSZ, "%04d-%02u-%02u%c%02d:%02d:%02d%s", y, m, d, sep, (int)(rem / 3600),
                     (int)(rem / 60 % 60), (int)(rem % 60), zone);
    return n < 0 ? 0 : (size_t)n;
}

size_t ts_format_pg(int64_t us, char out[TS_BUFSZ])
{
    return format(us, out, ' ', "+00", 1);
}

size_t ts_format_rfc3339(int64_t us, char out[TS_BUFSZ])
{
    return format(us, out, 'T', "Z", 0);
}

int ts_parse_rfc3339(const char *s, size_t n, int64_t *us)
{
    long i = parse_datetime(s, n, 'T', 't', 1, us);
    if (i < 0)
        return MKD_EINVAL;
    if ((size_t)i == n)
        return n == 10 ? 0 : MKD_EINVAL; /* a date-time needs a zone */
    if (n == 10)
        return MKD_EINVAL;
    char z = s[i];
    if ((z == 'Z' || z == 'z') && (size_t)i + 1 == n)
        return 0;
    if ((z == '+' || z == '-') && (size_t)i + 6 == n && s[i + 3] == ':') {
        int hh, mm;
        if (digits(s, n, (size_t)i + 1, 2, &hh) || digits(s, n, (size_t)i + 4, 2, &mm) || hh > 23 || mm > 59)
            return MKD_EINVAL;
        int64_t off = ((int64_t)hh * 3600 + mm * 60) * 1000000;
        *us += z == '+' ? -off : off;
        return *us >= TS_MIN_US && *us <= TS_MAX_US ? 0 : MKD_EINVAL;
    }
    return MKD_EINVAL;
}
