#ifndef MARKETD_CORE_LOG_H
#define MARKETD_CORE_LOG_H
/*
 * Diagnostic log lines on stderr, one JSON object per line (written with
 * one write, so lines of several threads never interleave):
 *   {"@timestamp":"2026-11-26T05:21:48.123Z","log.level":"info","message":"…"}
 * followed by the caller's fields, if any (log_fields). Every string is
 * escaped (core/json.h json_str: quotes, backslashes, C0 controls and DEL),
 * so no message or field can start a line of its own or forge one. Names
 * follow ECS/OpenTelemetry where one exists; the per-request access log is
 * separate (http/reply.c, JSON on stdout).
 *
 * What may be logged: never request bodies, tokens, or a database's row
 * data (PostgreSQL's DETAIL, statement parameters) — see db/pool.h
 * db_log_error.
 */
#include <stddef.h>

enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* "2026-11-26T05:21:48.123Z" (UTC, milliseconds): both logs' @timestamp. */
#define LOG_TIMESTAMP_MAX 32
void log_timestamp(char *out, size_t n);

/* Set once at start-up, before threads start. */
void log_set_level(int level);
/* Parses "debug|info|warn|error"; returns the level or -1. */
int log_parse_level(const char *s);
/* 1 if a line of this level would be written. */
int log_enabled(int level);

/* The message is printf-formatted and cut at 1 KiB. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* log_msg with extra string members: `fields` is NULL or a list of
 * name/value pairs ended by a NULL name; a pair whose value is NULL is
 * left out. Names are trusted literals (not escaped); values are
 * escaped. */
void log_fields(int level, const char *const *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
