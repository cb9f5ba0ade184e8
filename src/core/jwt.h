#ifndef MARKETD_CORE_JWT_H
#define MARKETD_CORE_JWT_H
/*
 * Stateless bearer tokens: JWTs signed with HMAC-SHA256 (OpenSSL's HMAC,
 * base64url from libsodium). Any instance holding JWT_SECRET verifies them.
 * Only the one header we issue is accepted, so "alg":"none" and algorithm
 * confusion are impossible by construction; the signature is compared in
 * constant time.
 */
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_LEN 512

typedef struct jwt_claims {
    int64_t sub; /* user id */
    int64_t iat; /* issued at, Unix seconds */
    int64_t exp; /* expires at, Unix seconds */
} jwt_claims_t;

/* Writes a NUL-terminated token to out[JWT_MAX_LEN]; returns its length. */
size_t jwt_sign(const unsigned char *secret, size_t secret_len, const jwt_claims_t *c, char *out);

/* Verifies token[0..n) at time `now`: 0 and *c filled, or MKD_EINVAL
 * (malformed, bad signature, or expired). */
int jwt_verify(const unsigned char *secret, size_t secret_len, const char *token, size_t n, int64_t now,
               jwt_claims_t *c);

#endif
