#ifndef MARKETD_CORE_LOG_H
#define MARKETD_CORE_LOG_H
/*
 * Diagnostic log lines on stderr: `2026-11-26T05:21:48Z level msg`.
 * The per-request access log is separate (http/reply.c, JSON on stdout).
 */
enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set once at start-up, before threads start. */
void log_set_level(int level);
/* Parses "debug|info|warn|error"; returns the level or -1. */
int log_parse_level(const char *s);

void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
