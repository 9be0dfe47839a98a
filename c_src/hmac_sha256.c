/*
 * hmac_sha256.c — see hmac_sha256.h. Built on OpenSSL's SHA256_* functions,
 * deprecated in 3.0 in favour of EVP but still provided and the only
 * OpenSSL interface whose state can be copied without a heap allocation.
 * The SHA-256 itself stays OpenSSL's (with its SHA-NI/AVX code paths).
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init/Update/Final: see above */
#include "hmac_sha256.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#define BLOCK 64

int hmac_sha256_set_key(hmac_sha256_key *k, const void *key, size_t len)
{
    unsigned char kb[BLOCK], pad[BLOCK];
    SHA256_CTX in, out;
    int ok = 1;
    memset(kb, 0, sizeof kb);
    if (len > BLOCK)
        ok = SHA256(key, len, kb) != NULL;
    else if (len > 0)
        memcpy(kb, key, len);
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = kb[i] ^ 0x36;
    ok = ok && SHA256_Init(&in) && SHA256_Update(&in, pad, BLOCK);
    for (size_t i = 0; i < BLOCK; i++)
        pad[i] = kb[i] ^ 0x5c;
    ok = ok && SHA256_Init(&out) && SHA256_Update(&out, pad, BLOCK);
    if (ok) {
        k->inner = in;
        k->outer = out;
    }
    k->keyed = ok;
    OPENSSL_cleanse(kb, sizeof kb);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(&in, sizeof in);
    OPENSSL_cleanse(&out, sizeof out);
    return ok ? 0 : -1;
}

int hmac_sha256(const hmac_sha256_key *k, const void *msg, size_t len,
                uint8_t out[HMAC_SHA256_LEN])
{
    if (!k->keyed)
        return -1;
    SHA256_CTX c;
    unsigned char ih[HMAC_SHA256_LEN];
    c = k->inner;
    int ok = SHA256_Update(&c, msg, len) && SHA256_Final(ih, &c);
    c = k->outer;
    ok = ok && SHA256_Update(&c, ih, sizeof ih) && SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
    OPENSSL_cleanse(ih, sizeof ih);
    return ok ? 0 : -1;
}

void hmac_sha256_wipe(hmac_sha256_key *k)
{
    OPENSSL_cleanse(k, sizeof *k);
}
