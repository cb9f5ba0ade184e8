#ifndef MARKETD_CORE_PASSWORD_H
#define MARKETD_CORE_PASSWORD_H
/*
 * Passwords are stored only as Argon2id hashes (libsodium crypto_pwhash_str)
 * with t=2 passes over 19 MiB — the OWASP-recommended minimum for Argon2id,
 * chosen over libsodium's INTERACTIVE (64 MiB) so that a burst of logins on a
 * 2-core instance costs tens, not hundreds, of MiB. The parameters live in
 * the hash string, so raising them later keeps old hashes verifiable.
 * Both calls take tens of milliseconds of CPU: run them through offload.h,
 * never on an event loop.
 */
#include <sodium.h>
#include <stddef.h>

#define PASSWORD_OPSLIMIT 2ULL
#define PASSWORD_MEMLIMIT (19u * 1024u * 1024u)
#define PASSWORD_HASH_MAX crypto_pwhash_STRBYTES

/* Returns 0, or -1 when out of memory. */
int password_hash(const char *password, size_t len, char out[PASSWORD_HASH_MAX]);
/* 1 when `password` matches `hash`, else 0. A NULL hash verifies against a
 * fixed dummy hash (and fails), so an unknown email costs as much as a wrong
 * password and timing tells nothing. */
int password_verify(const char *hash, const char *password, size_t len);

#endif
