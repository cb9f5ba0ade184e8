/*
 * libFuzzer target: bearer tokens (src/core/jwt.h). Arbitrary bytes must
 * never verify under the secret (they cannot carry its HMAC), must not
 * crash, and a token we sign must verify with the same claims.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/jwt.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "fuzz_jwt: check failed: %s (line %d)\n", #cond, __LINE__);                      \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static const unsigned char secret[] = "fuzz-secret-0123456789abcdef0123456789";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jwt_claims_t c = {0};
    /* Unsigned input verifying would mean a forged token got in. */
    CHECK(jwt_verify(secret, sizeof(secret) - 1, (const char *)data, size, 0, &c) != 0);

    if (size >= 16) {
        jwt_claims_t in, out = {0};
        memcpy(&in.sub, data, 8);
        memcpy(&in.exp, data + 8, 8);
        in.sub = in.sub == INT64_MIN ? 1 : (in.sub < 0 ? -in.sub : in.sub);
        in.iat = 0;
        char token[JWT_MAX_LEN];
        size_t n = jwt_sign(secret, sizeof(secret) - 1, &in, token);
        CHECK(n < JWT_MAX_LEN && strlen(token) == n);
        int rc = jwt_verify(secret, sizeof(secret) - 1, token, n, -1, &out);
        if (in.sub > 0 && in.exp > -1) {
            CHECK(rc == 0 && out.sub == in.sub && out.exp == in.exp);
            /* One flipped byte anywhere breaks it. */
            token[data[0] % n] ^= 1;
            CHECK(jwt_verify(secret, sizeof(secret) - 1, token, n, -1, &out) != 0);
        }
    }
    return 0;
}
