#include "core/error.h"

#include <string.h>

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
        return "overloaded";
    case MKD_ENOMEM:
        return "out of memory";
    case MKD_ETOOBIG:
        return "too large";
    case MKD_EBADREQ:
        return "bad request";
    case MKD_ESHUTDOWN:
        return "shutting down";
    case MKD_EUNAUTH:
        return "unauthenticated";
    case MKD_EFORBIDDEN:
        return "forbidden";
    case MKD_EMEDIATYPE:
        return "unsupported media type";
    case MKD_EINTERNAL:
        return "internal error";
    case MKD_ENOROUTE:
        return "no route";
    case MKD_EMETHOD:
        return "method not allowed";
    case MKD_ELIMITED:
        return "rate limited";
    }
    return "unknown error";
}

int mkd_from_outcome(const char *outcome)
{
    static const struct {
        const char *word;
        int code;
    } table[] = {
        {"ok", MKD_OK},
        {"invalid", MKD_EINVAL},
        {"not_found", MKD_ENOTFOUND},
        {"conflict", MKD_ECONFLICT},
        {"unauthenticated", MKD_EUNAUTH},
        {"forbidden", MKD_EFORBIDDEN},
    };
    for (size_t i = 0; outcome != NULL && i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(outcome, table[i].word) == 0)
            return table[i].code;
    return MKD_EINTERNAL;
}
