#ifndef MARKETD_CORE_ERROR_H
#define MARKETD_CORE_ERROR_H
/*
 * One error convention for the whole code base (after libuv): a function
 * returns 0 or one of these negative codes. SQL functions return domain
 * outcomes ("not_found", "conflict", …) that api/ maps to these codes
 * (mkd_from_outcome); http/reply.c maps each code to its HTTP status and
 * problem title in one table (reply_error). Nothing else computes a status.
 */
enum {
    MKD_OK = 0,
    MKD_EINVAL = -1,       /* a value failed validation → 422 */
    MKD_ENOTFOUND = -2,    /* → 404 */
    MKD_ECONFLICT = -3,    /* → 409 */
    MKD_EDB = -4,          /* the database answered with an unexpected error → 500 */
    MKD_EUNAVAILABLE = -5, /* database down, connection lost → 503 */
    MKD_EBUSY = -6,        /* pool wait timed out, queue full, admission refused → 503 */
    MKD_ENOMEM = -7,       /* → 500 */
    MKD_ETOOBIG = -8,      /* → 413 */
    MKD_EBADREQ = -9,      /* malformed body/header/query → 400 */
    MKD_ESHUTDOWN = -10,   /* server is draining → 503 */
    MKD_EUNAUTH = -11,     /* no, bad or expired credentials → 401 */
    MKD_EFORBIDDEN = -12,  /* authenticated, not allowed → 403 */
    MKD_EMEDIATYPE = -13,  /* wrong Content-Type or body type → 415 */
    MKD_EINTERNAL = -14,   /* a bug or an impossible state → 500 */
    MKD_ENOROUTE = -15,    /* no such path → 404 */
    MKD_EMETHOD = -16,     /* path exists, method does not → 405 */
    MKD_ELIMITED = -17,    /* throttled (the caller sets Retry-After) → 429 */
};

/* Readers of optional inputs (http/query.h, http/body.h) answer "present"
 * or "absent" besides an error code, as nginx's NGX_DECLINED does: absence
 * is not an error. */
enum { MKD_ABSENT = 0, MKD_PRESENT = 1 };

/* A short English name for the code, for logs. */
const char *mkd_strerror(int err);

/* The code of a domain outcome returned by an SQL function ("ok" → 0,
 * "not_found" → MKD_ENOTFOUND, …; migrations/0005_outcomes.sql has the
 * vocabulary). An unknown word is MKD_EINTERNAL. */
int mkd_from_outcome(const char *outcome);

#endif
