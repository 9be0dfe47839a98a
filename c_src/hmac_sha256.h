/*
 * hmac_sha256.h — HMAC-SHA256 (RFC 2104) with the key schedule done once:
 * the inner and outer SHA-256 states after the padded key blocks are kept,
 * and each MAC starts from copies of them. No heap, no OpenSSL provider
 * dispatch: OpenSSL 3.0's EVP_MAC_init/final re-init duplicates the
 * provider digest context (two mallocs per signature) and costs more than
 * the hashing of a short base string.
 *
 * The kept states are equivalent to the key: hmac_sha256_wipe them.
 */
#ifndef IBKR_HMAC_SHA256_H
#define IBKR_HMAC_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/sha.h>

#define HMAC_SHA256_LEN 32

typedef struct {
    SHA256_CTX inner, outer; /* the type is not deprecated, its functions are */
    int keyed;
} hmac_sha256_key;

/* 0 on success (any key length; longer than a block is hashed first). */
int hmac_sha256_set_key(hmac_sha256_key *k, const void *key, size_t len);
/* 0 on success, -1 if k is not keyed. */
int hmac_sha256(const hmac_sha256_key *k, const void *msg, size_t len,
                uint8_t out[HMAC_SHA256_LEN]);
void hmac_sha256_wipe(hmac_sha256_key *k);

#endif
