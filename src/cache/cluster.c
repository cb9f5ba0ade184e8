#include "cache/cluster.h"

#include <stdio.h>
#include <string.h>

#include "cache/redis.h"
#include "core/error.h"

/* ---- slots ------------------------------------------------------------- */

/* CRC16/XMODEM, table-driven (generated from poly 0x1021). */
/* clang-format off */
static const unsigned short crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};
/* clang-format on */

unsigned redis_crc16(const char *buf, size_t len)
{
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = ((crc << 8) & 0xffff) ^ crc16_table[((crc >> 8) ^ (unsigned char)buf[i]) & 0xff];
    return crc;
}

unsigned redis_key_slot(const char *key, size_t len)
{
    /* Only the part between the first '{' and the next '}' is hashed, and
     * only when that part is non-empty ("{}" hashes the whole key), exactly
     * as Redis's keyHashSlot does. */
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t start = (size_t)(open - key) + 1;
        const char *close = memchr(key + start, '}', len - start);
        if (close != NULL && close > key + start)
            return redis_crc16(key + start, (size_t)(close - (key + start))) & (REDIS_SLOTS - 1);
    }
    return redis_crc16(key, len) & (REDIS_SLOTS - 1);
}

/* ---- parsers ----------------------------------------------------------- */

/* Decimal digits only, no sign, value in [lo, hi]. */
static int parse_uint(const char *s, size_t len, long lo, long hi, long *out)
{
    if (len == 0 || len > 9)
        return MKD_EINVAL;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return MKD_EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return MKD_EINVAL;
    *out = v;
    return 0;
}

static int copy_str(char *dst, size_t cap, const char *s, size_t len)
{
    if (len >= cap)
        return MKD_EINVAL;
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

int redis_parse_addr(const char *s, size_t len, int default_port, int allow_empty_host, redis_addr_t *out)
{
    const char *host = s, *port = NULL;
    size_t hostlen, portlen = 0;
    if (len > 0 && s[0] == '[') {
        /* [v6]:port or [v6] */
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return MKD_EINVAL;
        host = s + 1;
        hostlen = (size_t)(close - host);
        size_t rest = len - (size_t)(close + 1 - s);
        if (rest > 0) {
            if (close[1] != ':')
                return MKD_EINVAL;
            port = close + 2;
            portlen = rest - 1;
        }
    } else {
        /* The last ':' separates the port; a bare IPv6 address ("::1:6379",
         * as Redis prints it in MOVED) therefore still parses. */
        const char *colon = NULL;
        for (size_t i = len; i > 0; i--) {
            if (s[i - 1] == ':') {
                colon = s + i - 1;
                break;
            }
        }
        if (colon != NULL) {
            hostlen = (size_t)(colon - s);
            port = colon + 1;
            portlen = len - hostlen - 1;
        } else {
            hostlen = len;
        }
    }
    if (hostlen == 0 && !allow_empty_host)
        return MKD_EINVAL;
    for (size_t i = 0; i < hostlen; i++)
        if ((unsigned char)host[i] <= ' ' || host[i] == '/' || host[i] == '@' || host[i] == ',')
            return MKD_EINVAL;
    if (copy_str(out->host, sizeof(out->host), host, hostlen) != 0)
        return MKD_EINVAL;
    if (port == NULL) {
        if (default_port <= 0)
            return MKD_EINVAL;
        out->port = default_port;
        return 0;
    }
    long p;
    if (parse_uint(port, portlen, 1, 65535, &p) != 0)
        return MKD_EINVAL;
    out->port = (int)p;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..len) into dst (NUL-terminated). */
static int pct_decode(char *dst, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= len)
                return MKD_EINVAL;
            hi = hexval(s[i + 1]);
            lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return MKD_EINVAL;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= cap)
            return MKD_EINVAL;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return 0;
}

int redis_parse_url(const char *s, size_t len, redis_url_t *out, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof(*out));
    if (len < sizeof(scheme) - 1 || strncmp(s, scheme, sizeof(scheme) - 1) != 0) {
        snprintf(err, errlen, "REDIS_URL must start with redis:// (rediss:// is not supported)");
        return MKD_EINVAL;
    }
    const char *p = s + sizeof(scheme) - 1, *end = s + len;
    /* authority ends at the first '/' (the db), or at the end */
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash != NULL ? slash : end;
    /* userinfo: up to the last '@' of the authority (a password may hold '@'
     * only percent-encoded, but be lenient) */
    const char *at = NULL;
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL) {
            /* "redis://secret@host": treat a lone userinfo as the password,
             * as redis-cli and most clients do */
            if (pct_decode(out->password, sizeof(out->password), p, (size_t)(at - p)) != 0)
                goto bad_auth;
        } else {
            if (pct_decode(out->user, sizeof(out->user), p, (size_t)(colon - p)) != 0 ||
                pct_decode(out->password, sizeof(out->password), colon + 1, (size_t)(at - colon - 1)) != 0)
                goto bad_auth;
        }
        p = at + 1;
    }
    if (redis_parse_addr(p, (size_t)(auth_end - p), 6379, 0, &out->addr) != 0) {
        snprintf(err, errlen, "REDIS_URL: bad host or port \"%.*s\"", (int)(auth_end - p), p);
        return MKD_EINVAL;
    }
    if (slash != NULL && slash + 1 < end) {
        long db;
        if (parse_uint(slash + 1, (size_t)(end - slash - 1), 0, 1000000, &db) != 0) {
            snprintf(err, errlen, "REDIS_URL: bad database number \"%.*s\"", (int)(end - slash - 1),
                     slash + 1);
            return MKD_EINVAL;
        }
        out->db = (int)db;
    }
    return 0;
bad_auth:
    snprintf(err, errlen, "REDIS_URL: bad user or password (too long, or bad %%-escape)");
    return MKD_EINVAL;
}

int redis_parse_seeds(const char *s, size_t len, redis_addr_t *out, int max, char *err, size_t errlen)
{
    int n = 0;
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (s[a] == ' ' || s[a] == '\t'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (b > a) {
            if (n == max) {
                snprintf(err, errlen, "REDIS_CLUSTER_NODES: more than %d seed nodes", max);
                return MKD_EINVAL;
            }
            if (redis_parse_addr(s + a, b - a, 0, 0, &out[n]) != 0) {
                snprintf(err, errlen, "REDIS_CLUSTER_NODES: bad entry \"%.*s\" (want host:port)",
                         (int)(b - a), s + a);
                return MKD_EINVAL;
            }
            n++;
        }
        i = j + 1;
    }
    if (n == 0) {
        snprintf(err, errlen, "REDIS_CLUSTER_NODES: no host:port given");
        return MKD_EINVAL;
    }
    return n;
}

int redis_parse_redirect(const char *msg, size_t len, unsigned *slot, redis_addr_t *to)
{
    int kind;
    size_t i;
    if (len > 6 && memcmp(msg, "MOVED ", 6) == 0) {
        kind = REDIS_REDIRECT_MOVED;
        i = 6;
    } else if (len > 4 && memcmp(msg, "ASK ", 4) == 0) {
        kind = REDIS_REDIRECT_ASK;
        i = 4;
    } else {
        return REDIS_REDIRECT_NONE;
    }
    size_t j = i;
    while (j < len && msg[j] != ' ')
        j++;
    long v;
    if (j == len || parse_uint(msg + i, j - i, 0, REDIS_SLOTS - 1, &v) != 0)
        return REDIS_REDIRECT_NONE;
    size_t k = j + 1, e = k;
    while (e < len && msg[e] != ' ' && msg[e] != '\r' && msg[e] != '\n')
        e++;
    if (redis_parse_addr(msg + k, e - k, 0, 1, to) != 0)
        return REDIS_REDIRECT_NONE;
    *slot = (unsigned)v;
    return kind;
}
