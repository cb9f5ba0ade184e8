#ifndef MARKETD_HTTP_TRACE_H
#define MARKETD_HTTP_TRACE_H
/*
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the
 * `traceparent` request header, "00-<trace-id>-<parent-id>-<flags>".
 *
 * A request that carries a valid one keeps its trace id: the access log
 * line and (when the client sent no X-Request-Id) the X-Request-Id answer
 * carry it, so marketd's lines join the caller's trace in any log store
 * (docs/operations.md). A request without one starts a trace. marketd's
 * own span id is new per request. No span is exported: Debian 12 has no C
 * OpenTelemetry library; the ids in the logs are the join key.
 */
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_HEX 32
#define SPAN_ID_HEX  16

typedef struct trace {
    char trace_id[TRACE_ID_HEX + 1]; /* lower-case hex, not all zeros */
    char parent_id[SPAN_ID_HEX + 1]; /* the caller's span; "" when the trace starts here */
    char span_id[SPAN_ID_HEX + 1];   /* this request's */
    unsigned flags;                  /* trace-flags (bit 0: sampled) */
} trace_t;

/* Parses a traceparent value. 0 and fills trace_id, parent_id, flags; -1
 * for anything the specification says to ignore (then the trace restarts):
 * a version other than 2 lower-case hex digits or "ff", version 00 not
 * exactly 55 characters, a later version shorter or not followed by '-',
 * upper-case or non-hex digits, an all-zero trace or parent id. */
int trace_parse(const char *s, size_t n, trace_t *t);

/* Random ids from a per-worker generator (not for secrets; unique enough
 * that two traces never share an id in practice). `state` is seeded once
 * from the system's random source by trace_seed. */
void trace_seed(uint64_t *state);
void trace_new_trace_id(uint64_t *state, char out[TRACE_ID_HEX + 1]);
void trace_new_span_id(uint64_t *state, char out[SPAN_ID_HEX + 1]);

#endif
