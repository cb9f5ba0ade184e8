#ifndef MARKETD_CORE_ERROR_H
#define MARKETD_CORE_ERROR_H
/*
 * One error convention for the whole code base (after libuv): a function
 * returns 0 or one of these negative codes. http/reply.c maps each to its
 * HTTP status in one table.
 */
enum {
    MKD_OK = 0,
    MKD_EINVAL = -1,       /* a value failed validation → 422 */
    MKD_ENOTFOUND = -2,    /* → 404 */
    MKD_ECONFLICT = -3,    /* → 409 */
    MKD_EDB = -4,          /* the database answered with an error → 500 */
    MKD_EUNAVAILABLE = -5, /* database down, connection lost → 503 */
    MKD_EBUSY = -6,        /* pool wait timed out or queue full → 503 */
    MKD_ENOMEM = -7,
    MKD_ETOOBIG = -8,      /* → 413 */
    MKD_EBADREQ = -9,      /* malformed body/header → 400 */
    MKD_ESHUTDOWN = -10,   /* server is draining → 503 */
};

/* A short English name for the code, for logs. */
const char *mkd_strerror(int err);

#endif
