/*
 * keygen.c — RSA key pairs and DH parameters for the IBKR portal (see
 * keygen.h), through OpenSSL 3's EVP interface.
 */
#include "keygen.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

void keygen_pem_free(keygen_pem *p)
{
    if (p == NULL)
        return;
    if (p->data != NULL) {
        OPENSSL_cleanse(p->data, p->len);
        free(p->data);
    }
    p->data = NULL;
    p->len = 0;
}

const char *keygen_status_atom(keygen_status st)
{
    switch (st) {
    case KEYGEN_OK:
        return "ok";
    case KEYGEN_ERR_BITS:
        return "badarg";
    case KEYGEN_ERR_NOMEM:
        return "nomem";
    case KEYGEN_CANCELLED:
        return "cancelled";
    case KEYGEN_ERR_CRYPTO:
    default:
        return "crypto_error";
    }
}

/* The bytes a memory BIO holds, copied into a malloc'd C string. */
static keygen_status bio_take(BIO *bio, keygen_pem *out)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || data == NULL)
        return KEYGEN_ERR_CRYPTO;
    out->data = malloc((size_t)n + 1);
    if (out->data == NULL)
        return KEYGEN_ERR_NOMEM;
    memcpy(out->data, data, (size_t)n);
    out->data[n] = '\0';
    out->len = (size_t)n;
    return KEYGEN_OK;
}

keygen_status keygen_rsa(int bits, keygen_pem *private_pkcs8, keygen_pem *public_spki)
{
    *private_pkcs8 = (keygen_pem){NULL, 0};
    *public_spki = (keygen_pem){NULL, 0};
    if (bits < KEYGEN_RSA_MIN_BITS || bits > KEYGEN_RSA_MAX_BITS)
        return KEYGEN_ERR_BITS;
    keygen_status st = KEYGEN_ERR_CRYPTO;
    EVP_PKEY *key = EVP_RSA_gen((unsigned int)bits);
    /* A secure-heap memory BIO: its buffer is wiped when it grows and when
     * it is freed, so the private PEM leaves no copy behind. */
    BIO *priv = BIO_new(BIO_s_secmem());
    BIO *pub = BIO_new(BIO_s_mem());
    if (key == NULL || priv == NULL || pub == NULL)
        goto done;
    /* PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY"). */
    if (PEM_write_bio_PrivateKey(priv, key, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_PUBKEY(pub, key) != 1)
        goto done;
    st = bio_take(priv, private_pkcs8);
    if (st == KEYGEN_OK)
        st = bio_take(pub, public_spki);
done:
    if (st != KEYGEN_OK) {
        keygen_pem_free(private_pkcs8);
        keygen_pem_free(public_spki);
    }
    BIO_free(priv);
    BIO_free(pub);
    EVP_PKEY_free(key);
    return st;
}

typedef struct {
    keygen_progress fn;
    void *ctx;
    int cancelled;
} progress_ctx;

/* OpenSSL's BN_GENCB, through EVP: the stage is keygen info 0. */
static int on_progress(EVP_PKEY_CTX *pctx)
{
    progress_ctx *p = EVP_PKEY_CTX_get_app_data(pctx);
    if (p == NULL || p->fn == NULL)
        return 1;
    int a = EVP_PKEY_CTX_get_keygen_info(pctx, 0);
    keygen_stage stage = a == 0 ? KEYGEN_STAGE_CANDIDATE
                                : a == 1 ? KEYGEN_STAGE_TESTING : KEYGEN_STAGE_PASSED;
    if (p->fn(stage, p->ctx) == 0) {
        p->cancelled = 1;
        return 0;
    }
    return 1;
}

static keygen_status prime_to_hex(const EVP_PKEY *params, keygen_pem *out)
{
    BIGNUM *p = NULL;
    if (EVP_PKEY_get_bn_param(params, OSSL_PKEY_PARAM_FFC_P, &p) != 1 || p == NULL)
        return KEYGEN_ERR_CRYPTO;
    char *hex = BN_bn2hex(p); /* upper case, no sign for a positive p */
    BN_free(p);
    if (hex == NULL)
        return KEYGEN_ERR_NOMEM;
    size_t n = strlen(hex);
    keygen_status st = KEYGEN_ERR_NOMEM;
    out->data = malloc(n + 1);
    if (out->data != NULL) {
        for (size_t i = 0; i < n; i++)
            out->data[i] = (char)tolower((unsigned char)hex[i]);
        out->data[n] = '\0';
        out->len = n;
        st = KEYGEN_OK;
    }
    OPENSSL_free(hex);
    return st;
}

keygen_status keygen_dh(int bits, keygen_progress progress, void *ctx, keygen_pem *pem,
                        keygen_pem *prime_hex)
{
    *pem = (keygen_pem){NULL, 0};
    *prime_hex = (keygen_pem){NULL, 0};
    if (bits < KEYGEN_DH_MIN_BITS || bits > KEYGEN_DH_MAX_BITS)
        return KEYGEN_ERR_BITS;
    keygen_status st = KEYGEN_ERR_CRYPTO;
    progress_ctx pc = {progress, ctx, 0};
    EVP_PKEY *params = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    /* "DH" (not "DHX") generates by default the generator type, i.e. a
     * safe prime p = 2q + 1 searched with BN_generate_prime_ex, as
     * `openssl dhparam` does (test_keygen.c checks that q is prime).
     * EVP_PKEY_CTX_set_dh_paramgen_type is not called: in OpenSSL 3.0 it
     * crashes for DH_PARAMGEN_TYPE_GENERATOR. */
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, "DH", NULL);
    if (bio == NULL || pctx == NULL || EVP_PKEY_paramgen_init(pctx) != 1 ||
        EVP_PKEY_CTX_set_dh_paramgen_prime_len(pctx, bits) != 1 ||
        EVP_PKEY_CTX_set_dh_paramgen_generator(pctx, 2) != 1)
        goto done;
    EVP_PKEY_CTX_set_app_data(pctx, &pc);
    EVP_PKEY_CTX_set_cb(pctx, on_progress);
    if (EVP_PKEY_paramgen(pctx, &params) != 1 || params == NULL) {
        st = pc.cancelled ? KEYGEN_CANCELLED : KEYGEN_ERR_CRYPTO;
        goto done;
    }
    if (PEM_write_bio_Parameters(bio, params) != 1)
        goto done;
    st = bio_take(bio, pem);
    if (st == KEYGEN_OK)
        st = prime_to_hex(params, prime_hex);
done:
    if (st != KEYGEN_OK) {
        keygen_pem_free(pem);
        keygen_pem_free(prime_hex);
    }
    EVP_PKEY_free(params);
    EVP_PKEY_CTX_free(pctx);
    BIO_free(bio);
    return st;
}
