#ifndef MARKETD_CORE_EMAIL_H
#define MARKETD_CORE_EMAIL_H
/*
 * The one email rule, shared by POST /auth/register and `marketd user
 * create`: something@something.tld, no spaces, no control characters.
 * Deliberately light; deliverability is the mail system's job. Length
 * bounds (3..254) are the caller's. Returns 1 when `s` (NUL-terminated)
 * passes, else 0.
 */
int email_valid(const char *s);
#endif
