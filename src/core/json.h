#ifndef MARKETD_CORE_JSON_H
#define MARKETD_CORE_JSON_H
/*
 * JSON *output*: a growable byte buffer and the few emitters rendering needs.
 * (Parsing request bodies is jansson's job, never ours.) Emitters do not
 * insert commas: the renderer writes the punctuation, which keeps the shape
 * of each document visible in one place.
 */
#include <stddef.h>
#include <stdint.h>

typedef struct jbuf {
    char *data;
    size_t len;
    size_t cap;
} jbuf_t;

void jbuf_init(jbuf_t *b, size_t cap);
void jbuf_free(jbuf_t *b);
static inline void jbuf_reset(jbuf_t *b)
{
    b->len = 0;
}
/* Makes room for n more bytes; aborts on out-of-memory. */
void jbuf_reserve(jbuf_t *b, size_t n);
void jbuf_append(jbuf_t *b, const void *p, size_t n);
void jbuf_puts(jbuf_t *b, const char *s);
static inline void jbuf_putc(jbuf_t *b, char c)
{
    if (b->len == b->cap)
        jbuf_reserve(b, 1);
    b->data[b->len++] = c;
}

/* A JSON string literal of s[0..n): escapes quotes, backslashes, control
 * characters and DEL (so a log line shows no raw terminal control); an
 * invalid UTF-8 sequence becomes U+FFFD. */
void json_str(jbuf_t *b, const char *s, size_t n);
void json_cstr(jbuf_t *b, const char *s);
/* 1 if s[0..n) is valid UTF-8 without NUL bytes (safe to send to the
 * database as text), else 0. */
int utf8_valid(const char *s, size_t n);
void json_int(jbuf_t *b, int64_t v);
/* `"key":` — key is a trusted literal (no escaping). */
void json_key(jbuf_t *b, const char *key);

#endif
