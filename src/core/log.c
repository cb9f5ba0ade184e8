#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"

static int log_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(int level)
{
    log_level = level;
}

int log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

int log_enabled(int level)
{
    return level >= log_level;
}

void log_timestamp(char *out, size_t n)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(now.tv_nsec / 1000000));
}

static void log_line(int level, const char *const *fields, const char *fmt, va_list ap)
{
    if (level < log_level || level < LOG_DEBUG || level > LOG_ERROR)
        return;
    char msg[1024];
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t mlen = m < 0 ? 0 : ((size_t)m >= sizeof(msg) ? sizeof(msg) - 1 : (size_t)m);

    char ts[LOG_TIMESTAMP_MAX];
    log_timestamp(ts, sizeof(ts));

    jbuf_t b;
    jbuf_init(&b, 256 + mlen);
    jbuf_puts(&b, "{\"@timestamp\":\"");
    jbuf_puts(&b, ts);
    jbuf_puts(&b, "\",\"log.level\":\"");
    jbuf_puts(&b, level_names[level]);
    jbuf_puts(&b, "\",\"message\":");
    json_str(&b, msg, mlen);
    for (const char *const *f = fields; f != NULL && f[0] != NULL; f += 2) {
        if (f[1] == NULL)
            continue;
        jbuf_putc(&b, ',');
        json_key(&b, f[0]);
        json_cstr(&b, f[1]);
    }
    jbuf_puts(&b, "}\n");
    /* One write per line so lines from several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w;
    jbuf_free(&b);
}

void log_msg(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, NULL, fmt, ap);
    va_end(ap);
}

void log_fields(int level, const char *const *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, fields, fmt, ap);
    va_end(ap);
}
