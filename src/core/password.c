#include "core/password.h"

#include <pthread.h>
#include <string.h>

static char dummy_hash[PASSWORD_HASH_MAX];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void make_dummy(void)
{
    /* Any fixed password: nobody can log in with it because no user row
     * points at this hash. */
    if (password_hash("marketd-dummy-password", 22, dummy_hash) != 0)
        dummy_hash[0] = '\0';
}

int password_hash(const char *password, size_t len, char out[PASSWORD_HASH_MAX])
{
    return crypto_pwhash_str(out, password, len, PASSWORD_OPSLIMIT, PASSWORD_MEMLIMIT);
}

int password_verify(const char *hash, const char *password, size_t len)
{
    if (hash == NULL) {
        pthread_once(&dummy_once, make_dummy);
        if (dummy_hash[0] != '\0' && crypto_pwhash_str_verify(dummy_hash, password, len) == 0)
            return 0; /* unreachable in practice; the result is ignored on purpose */
        return 0;
    }
    return crypto_pwhash_str_verify(hash, password, len) == 0;
}
