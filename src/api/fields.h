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

/* A slug: ^[a-z0-9][a-z0-9-]{0,99}$. */
int field_slug_valid(const char *s);

/* {"name","slug"}: both required, the slug's rule checked. */
void field_name_slug(json_t *obj, const char **name, const char **slug, verr_t *v);

#endif
