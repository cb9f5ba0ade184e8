#ifndef MARKETD_API_FIELDS_H
#define MARKETD_API_FIELDS_H
/* The rules of the fields several resources share (api.md). */
#include <stdint.h>

#include "http/body.h"
#include "http/reply.h"

#define FIELD_NAME_MAX  200  /* characters of a name or title */
#define FIELD_TEXT_MAX  5000 /* characters of a description */
#define FIELD_SLUG_MAX  100
#define FIELD_PRICE_MAX 100000000000LL /* minor units */
#define FIELD_STOCK_MAX 1000000

/* Text fields (api.md "Conventions"): a single line (names, titles,
 * slugs, emails, any field not documented as multi-line) or several
 * (descriptions). */
typedef enum { FIELD_LINE, FIELD_LINES } field_lines_t;

/* body_string, then the control characters: FIELD_LINE refuses C0
 * (U+0000–U+001F) and DEL (U+007F); FIELD_LINES allows \n and \t among
 * them, nothing else. A refused value is recorded in v under `field`
 * (422) and *out is left alone. Returns what body_string does. Every text
 * a client sends goes through here (passwords excepted: body_string), so
 * nothing stored can forge a log line or a terminal's display. */
int field_text(json_t *obj, const char *key, const char *field, size_t min_chars, size_t max_chars,
               field_lines_t lines, const char **out, verr_t *v);

/* A slug: ^[a-z0-9][a-z0-9-]{0,99}$. */
int field_slug_valid(const char *s);

/* {"name","slug"}: both required, the slug's rule checked. */
void field_name_slug(json_t *obj, const char **name, const char **slug, verr_t *v);

#endif
