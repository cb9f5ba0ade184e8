#include "core/jwt.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

/* base64url({"alg":"HS256","typ":"JWT"}) */
static const char header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
#define B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING

static void mac(const unsigned char *secret, size_t secret_len, const char *data, size_t n,
                unsigned char out[32])
{
    unsigned int len = 32;
    HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)data, n, out, &len);
}

size_t jwt_sign(const unsigned char *secret, size_t secret_len, const jwt_claims_t *c, char *out)
{
    char payload[128];
    int pn = snprintf(payload, sizeof(payload), "{\"sub\":\"%lld\",\"iat\":%lld,\"exp\":%lld}",
                      (long long)c->sub, (long long)c->iat, (long long)c->exp);
    size_t o = sizeof(header_b64) - 1;
    memcpy(out, header_b64, o);
    out[o++] = '.';
    sodium_bin2base64(out + o, JWT_MAX_LEN - o, (const unsigned char *)payload, (size_t)pn, B64);
    o += strlen(out + o);
    unsigned char sig[32];
    mac(secret, secret_len, out, o, sig);
    out[o++] = '.';
    sodium_bin2base64(out + o, JWT_MAX_LEN - o, sig, sizeof(sig), B64);
    return o + strlen(out + o);
}

static int claim_int(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        long long n = strtoll(s, &end, 10);
        if (*s != '\0' && *end == '\0') {
            *out = n;
            return 0;
        }
    }
    return -1;
}

int jwt_verify(const unsigned char *secret, size_t secret_len, const char *token, size_t n, int64_t now,
               jwt_claims_t *c)
{
    size_t hl = sizeof(header_b64) - 1;
    if (n > JWT_MAX_LEN || n < hl + 2 || memcmp(token, header_b64, hl) != 0 || token[hl] != '.')
        return MKD_EINVAL;
    const char *dot = memchr(token + hl + 1, '.', n - hl - 1);
    if (dot == NULL)
        return MKD_EINVAL;
    size_t signed_len = (size_t)(dot - token);
    unsigned char sig[32], want[32];
    size_t sig_len = 0;
    const char *end = NULL;
    if (sodium_base642bin(sig, sizeof(sig), dot + 1, n - signed_len - 1, NULL, &sig_len, &end, B64) != 0 ||
        sig_len != 32 || end != token + n)
        return MKD_EINVAL;
    mac(secret, secret_len, token, signed_len, want);
    if (CRYPTO_memcmp(sig, want, 32) != 0)
        return MKD_EINVAL;
    /* Signed by us: the payload is ours, but parse it defensively anyway. */
    unsigned char payload[256];
    size_t plen = 0;
    if (sodium_base642bin(payload, sizeof(payload), token + hl + 1, signed_len - hl - 1, NULL, &plen, &end,
                          B64) != 0)
        return MKD_EINVAL;
    json_t *obj = json_loadb((const char *)payload, plen, JSON_REJECT_DUPLICATES, NULL);
    int rc = MKD_EINVAL;
    if (json_is_object(obj) && claim_int(obj, "sub", &c->sub) == 0 && claim_int(obj, "exp", &c->exp) == 0 &&
        claim_int(obj, "iat", &c->iat) == 0 && c->sub > 0 && now < c->exp)
        rc = 0;
    json_decref(obj);
    return rc;
}
