/* The pure parts of a migration file: see migrate_file.h. */
#include "db/migrate_file.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define MARKER_PREFIX "marketd:"

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static int is_ident(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           (unsigned char)c >= 0x80;
}

/* One marker word [w, w + n) of line `line`. */
static int apply_marker(const char *w, size_t n, int line, unsigned *flags, unsigned *seen, char *err,
                        size_t errlen)
{
    static const struct {
        const char *word;
        unsigned flag, compat; /* compat: the word states compatibility (1 yes, 2 no) */
    } words[] = {
        {"no-transaction", MIGRATE_NO_TRANSACTION, 0},
        {"compatible-with-previous", MIGRATE_COMPATIBLE, 1},
        {"incompatible-with-previous", 0, 2},
    };
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (strlen(words[i].word) != n || memcmp(words[i].word, w, n) != 0)
            continue;
        if (words[i].compat != 0) {
            if (*seen != 0 && *seen != words[i].compat) {
                snprintf(err, errlen,
                         "line %d: compatible-with-previous and incompatible-with-previous together", line);
                return -1;
            }
            *seen = words[i].compat;
        }
        *flags |= words[i].flag;
        return 0;
    }
    snprintf(err, errlen,
             "line %d: unknown marker \"%.*s\" (known: no-transaction, compatible-with-previous, "
             "incompatible-with-previous)",
             line, (int)(n > 60 ? 60 : n), w);
    return -1;
}

int migrate_parse_markers(const char *sql, size_t len, unsigned *flags, char *err, size_t errlen)
{
    unsigned seen = 0;
    size_t i = 0;
    *flags = 0;
    for (int line = 1; i < len; line++) {
        size_t eol = i;
        while (eol < len && sql[eol] != '\n')
            eol++;
        size_t p = i;
        while (p < eol && is_space(sql[p]))
            p++;
        if (p < eol) {
            /* The header ends at the first line that is not a comment. */
            if (eol - p < 2 || sql[p] != '-' || sql[p + 1] != '-')
                break;
            p += 2;
            while (p < eol && is_space(sql[p]))
                p++;
            size_t plen = strlen(MARKER_PREFIX);
            if (eol - p >= plen && memcmp(sql + p, MARKER_PREFIX, plen) == 0) {
                p += plen;
                while (p < eol && is_space(sql[p]))
                    p++;
                size_t end = eol;
                while (end > p && is_space(sql[end - 1]))
                    end--;
                if (apply_marker(sql + p, end - p, line, flags, &seen, err, errlen) != 0)
                    return -1;
            }
        }
        i = eol + 1;
    }
    return 0;
}

/* Length of the dollar-quote tag opening at sql[i] ("$$" → 2, "$fn$" → 4),
 * or 0 when sql[i] does not open one (a parameter such as $1). */
static size_t dollar_tag(const char *sql, size_t len, size_t i)
{
    size_t j = i + 1;
    if (j < len && sql[j] >= '0' && sql[j] <= '9')
        return 0;
    while (j < len && sql[j] != '$' && is_ident(sql[j]))
        j++;
    if (j < len && sql[j] == '$')
        return j - i + 1;
    return 0;
}

/* Position just past the quoted text that opens at sql[i], or len + 1 when
 * it is not closed. */
static size_t skip_quoted(const char *sql, size_t len, size_t i)
{
    char c = sql[i];
    if (c == '\'' || c == '"') {
        /* E'..' (not part of an identifier like `type'`): backslash escapes. */
        int backslash = c == '\'' && i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                        (i == 1 || !is_ident(sql[i - 2]));
        for (size_t j = i + 1; j < len; j++) {
            if (backslash && sql[j] == '\\') {
                j++;
                continue;
            }
            if (sql[j] == c) {
                if (j + 1 < len && sql[j + 1] == c) { /* '' or "" inside */
                    j++;
                    continue;
                }
                return j + 1;
            }
        }
        return len + 1;
    }
    if (c == '-') { /* -- to the end of the line: always "closed" */
        size_t j = i;
        while (j < len && sql[j] != '\n')
            j++;
        return j;
    }
    if (c == '/') { /* block comments nest in PostgreSQL */
        int depth = 0;
        for (size_t j = i; j + 1 < len; j++) {
            if (sql[j] == '/' && sql[j + 1] == '*') {
                depth++;
                j++;
            } else if (sql[j] == '*' && sql[j + 1] == '/') {
                j++;
                if (--depth == 0)
                    return j + 1;
            }
        }
        return len + 1;
    }
    /* '$': a dollar quote, closed by the same tag. */
    size_t tag = dollar_tag(sql, len, i);
    for (size_t j = i + tag; j + tag <= len; j++)
        if (memcmp(sql + j, sql + i, tag) == 0)
            return j + tag;
    return len + 1;
}

int migrate_next_statement(const char *sql, size_t len, size_t *pos, size_t *start, size_t *stmt_len)
{
    size_t i = *pos;
    size_t first = len, last = 0; /* the statement's first and last significant bytes */
    while (i < len) {
        char c = sql[i];
        if (c == ';') {
            i++;
            if (first < len)
                break;
            continue;
        }
        int comment =
            (c == '-' && i + 1 < len && sql[i + 1] == '-') || (c == '/' && i + 1 < len && sql[i + 1] == '*');
        int quote = c == '\'' || c == '"' ||
                    (c == '$' && (i == 0 || !is_ident(sql[i - 1])) && dollar_tag(sql, len, i));
        if (comment || quote) {
            size_t end = skip_quoted(sql, len, i);
            if (end > len) {
                *start = i;
                *pos = len;
                return -1;
            }
            if (quote) {
                if (first == len)
                    first = i;
                last = end - 1;
            }
            i = end;
            continue;
        }
        if (!is_space(c)) {
            if (first == len)
                first = i;
            last = i;
        }
        i++;
    }
    *pos = i;
    if (first == len)
        return 0;
    *start = first;
    *stmt_len = last - first + 1;
    return 1;
}

void migrate_checksum(const char *sql, size_t len, char out[MIGRATE_CHECKSUM_HEX])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)sql, len);
    sodium_bin2hex(out, MIGRATE_CHECKSUM_HEX, digest, sizeof(digest));
}

int migrate_sanitize_name(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    int gap = 0;
    if (outlen <= MIGRATE_NAME_MAX)
        return -1;
    for (const char *p = in; *p; p++) {
        char c = *p;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            if (gap && n > 0) {
                if (n >= MIGRATE_NAME_MAX)
                    return -1;
                out[n++] = '_';
            }
            gap = 0;
            if (n >= MIGRATE_NAME_MAX)
                return -1;
            out[n++] = c;
        } else {
            gap = 1;
        }
    }
    out[n] = '\0';
    return n > 0 ? (int)n : -1;
}
