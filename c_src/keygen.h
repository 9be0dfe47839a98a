/*
 * keygen.h — the key material IBKR's self-service portal wants, made with
 * OpenSSL: RSA key pairs (private PKCS#8 PEM, public SubjectPublicKeyInfo
 * PEM) and DH parameters (safe prime, generator 2, PKCS#3 PEM). Used by
 * `ibkr_oauth setup` through the port's generate_rsa / generate_dh commands.
 * No I/O; the progress callback lets the caller report and cancel.
 */
#ifndef IBKR_KEYGEN_H
#define IBKR_KEYGEN_H

#include <stddef.h>

typedef enum {
    KEYGEN_OK = 0,
    KEYGEN_ERR_BITS,      /* size outside the accepted range */
    KEYGEN_ERR_NOMEM,
    KEYGEN_ERR_CRYPTO,    /* OpenSSL failed */
    KEYGEN_CANCELLED      /* the progress callback asked to stop */
} keygen_status;

#define KEYGEN_RSA_MIN_BITS 2048
#define KEYGEN_RSA_MAX_BITS 8192
/* OpenSSL's own floor for DH parameter generation is 512 bits; IBKR wants
 * 2048. Small sizes exist for tests. */
#define KEYGEN_DH_MIN_BITS 512
#define KEYGEN_DH_MAX_BITS 8192

/* Stages of the prime search, as OpenSSL's BN_GENCB reports them. */
typedef enum {
    KEYGEN_STAGE_CANDIDATE = 0, /* a candidate passed the sieve */
    KEYGEN_STAGE_TESTING = 1,   /* a Miller-Rabin round passed */
    KEYGEN_STAGE_PASSED = 2     /* a candidate passed all rounds */
} keygen_stage;

/* Called often during generate_dh; returns 1 to go on, 0 to cancel. */
typedef int (*keygen_progress)(keygen_stage stage, void *ctx);

/* A PEM text: malloc'd, NUL-terminated, len without the NUL. Free private
 * ones with keygen_pem_free (wipes). */
typedef struct {
    char *data;
    size_t len;
} keygen_pem;

/* An RSA key pair of `bits` bits, exponent 65537. */
keygen_status keygen_rsa(int bits, keygen_pem *private_pkcs8, keygen_pem *public_spki);

/* DH parameters: a safe prime of `bits` bits and generator 2. pem gets the
 * "DH PARAMETERS" PEM, prime_hex the prime in lower-case hex (no leading
 * zeros). progress may be NULL. */
keygen_status keygen_dh(int bits, keygen_progress progress, void *ctx, keygen_pem *pem,
                        keygen_pem *prime_hex);

/* Wipes and frees; the struct becomes empty. NULL-safe. */
void keygen_pem_free(keygen_pem *p);

const char *keygen_status_atom(keygen_status st);

#endif
