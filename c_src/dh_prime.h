/*
 * dh_prime.h — is the configured DH modulus a prime? Called once per init,
 * where BN_check_prime (64 Miller-Rabin rounds at 2048 bits, ~2e9
 * instructions) used to be most of the port's start-up time.
 */
#ifndef IBKR_DH_PRIME_H
#define IBKR_DH_PRIME_H

#include <openssl/bn.h>

/* Rounds of Miller-Rabin with random bases after the base-2 round. */
#define DH_PRIME_MR_ROUNDS 2

/* 1: p is a well-known MODP prime (RFC 2409 / RFC 3526) or passes trial
 * division and 1 + DH_PRIME_MR_ROUNDS Miller-Rabin rounds; 0: composite
 * (or even); -1: OpenSSL failed. p must be > 3. */
int dh_prime_check(const BIGNUM *p, BN_CTX *ctx);

/* 1 if p is one of the RFC 2409 / RFC 3526 MODP primes. */
int dh_prime_is_well_known(const BIGNUM *p);

#endif
