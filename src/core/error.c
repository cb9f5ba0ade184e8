#include "core/error.h"

const char *mkd_strerror(int err)
{
    switch (err) {
    case MKD_OK:
        return "ok";
    case MKD_EINVAL:
        return "invalid value";
    case MKD_ENOTFOUND:
        return "not found";
    case MKD_ECONFLICT:
        return "conflict";
    case MKD_EDB:
        return "database error";
    case MKD_EUNAVAILABLE:
        return "database unavailable";
    case MKD_EBUSY:
        return "database pool busy";
    case MKD_ENOMEM:
        return "out of memory";
    case MKD_ETOOBIG:
        return "too large";
    case MKD_EBADREQ:
        return "bad request";
    case MKD_ESHUTDOWN:
        return "shutting down";
    }
    return "unknown error";
}
