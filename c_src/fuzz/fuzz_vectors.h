/*
 * fuzz_vectors.h — the throwaway TESTCONS credentials and one pinned
 * handshake (test/data/vectors_testcons), so the harnesses reach the crypto
 * commands behind a successful init. The directory is IBKR_FUZZ_DATA when
 * set, else test/data/vectors_testcons relative to the working directory
 * (the repository root, as for the C unit tests).
 */
#ifndef IBKR_FUZZ_VECTORS_H
#define IBKR_FUZZ_VECTORS_H

#include <stddef.h>

typedef struct {
    char *consumer_key, *access_token, *access_token_secret, *realm, *dh_prime, *base_url;
    char *enc_path, *sig_path;  /* the key files */
    char *enc_pem, *sig_pem;    /* and their contents */
    size_t enc_len, sig_len;
    /* cases[0]: pins of an lst_request and the server's matching answer */
    char *nonce, *dh_random, *dh_response, *lst_signature;
    long long timestamp;
} fuzz_vectors;

/* Loads everything or exits the process: a harness without its keys would
 * silently test nothing. */
void fuzz_vectors_load(fuzz_vectors *v);

#endif
