#include "core/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jbuf_init(jbuf_t *b, size_t cap)
{
    b->data = malloc(cap);
    if (b->data == NULL)
        abort();
    b->len = 0;
    b->cap = cap;
}

void jbuf_free(jbuf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void jbuf_reserve(jbuf_t *b, size_t n)
{
    if (b->cap - b->len >= n)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        abort();
    b->data = p;
    b->cap = cap;
}

void jbuf_append(jbuf_t *b, const void *p, size_t n)
{
    jbuf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void jbuf_puts(jbuf_t *b, const char *s)
{
    jbuf_append(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        len = 2, min = 0x80, c &= 0x1F;
    else if ((c & 0xF0) == 0xE0)
        len = 3, min = 0x800, c &= 0x0F;
    else if ((c & 0xF8) == 0xF0)
        len = 4, min = 0x10000, c &= 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    return len;
}

int utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        if (s[i] == 0)
            return 0;
        size_t len = utf8_seq(s + i, n - i);
        if (len == 0)
            return 0;
        i += len;
    }
    return 1;
}

void json_str(jbuf_t *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    /* Worst case every byte becomes \u00XX (6 bytes). */
    jbuf_reserve(b, n * 6 + 2);
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7f) {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t len = utf8_seq(s + i, n - i);
            if (len == 0) {
                memcpy(o, "\xEF\xBF\xBD", 3); /* U+FFFD, same length budget as one \u00XX */
                o += 3;
                i++;
            } else {
                memcpy(o, s + i, len);
                o += len;
                i += len;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            *o++ = 'u', *o++ = '0', *o++ = '0', *o++ = hex[c >> 4], *o++ = hex[c & 15];
        }
        i++;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

void json_cstr(jbuf_t *b, const char *s)
{
    json_str(b, s, strlen(s));
}

void json_int(jbuf_t *b, int64_t v)
{
    jbuf_reserve(b, 24);
    b->len += (size_t)snprintf(b->data + b->len, 24, "%lld", (long long)v);
}

void json_key(jbuf_t *b, const char *key)
{
    size_t n = strlen(key);
    jbuf_reserve(b, n + 3);
    b->data[b->len++] = '"';
    memcpy(b->data + b->len, key, n);
    b->len += n;
    b->data[b->len++] = '"';
    b->data[b->len++] = ':';
}
