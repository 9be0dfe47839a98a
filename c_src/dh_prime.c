/*
 * dh_prime.c — a primality check sized for a DH modulus the operator
 * configured (from their own dhparam.pem), not one an attacker chose.
 *
 * Why not BN_check_prime: it runs 64 Miller-Rabin rounds for 2048 bits,
 * which bounds the error for adversarial inputs at 2^-128 and costs ~150 ms.
 * Our input is trusted configuration; the check exists to refuse a typo'd,
 * truncated or wrong value, i.e. an essentially random odd composite. For a
 * random k-bit odd composite, t rounds with random bases err with probability
 * below k^1.5 * 2^t * t^-0.5 * 4^(2 - sqrt(t*k)) (Damgard, Landrock and
 * Pomerance 1993): with t = 3 rounds that is < 2^-89 at k = 1024 (our
 * minimum) and < 2^-130 at 2048. Even a composite built to fool the test
 * passes a random-base round with probability <= 1/4. Trial division first
 * rejects most composites in microseconds.
 *
 * The RFC 2409 / RFC 3526 primes are proven primes and compared directly.
 */
#include "dh_prime.h"

#include <stddef.h>

typedef BIGNUM *(*known_prime_fn)(BIGNUM *);

int dh_prime_is_well_known(const BIGNUM *p)
{
    static const known_prime_fn KNOWN[] = {
        BN_get_rfc2409_prime_1024, BN_get_rfc3526_prime_1536, BN_get_rfc3526_prime_2048,
        BN_get_rfc3526_prime_3072, BN_get_rfc3526_prime_4096, BN_get_rfc3526_prime_6144,
        BN_get_rfc3526_prime_8192};
    int bits = BN_num_bits(p), found = 0;
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0] && !found; i++) {
        BIGNUM *q = KNOWN[i](NULL);
        if (q == NULL)
            return 0; /* out of memory: fall back to the full test */
        found = BN_num_bits(q) == bits && BN_cmp(p, q) == 0;
        BN_free(q);
    }
    return found;
}

/* 0 if a small prime divides p (p itself is far larger), 1 if none does,
 * -1 on error. The odd numbers up to 2000 include every odd prime below it;
 * dividing by the composites among them too costs less than sieving. */
static int trial_division(const BIGNUM *p)
{
    for (BN_ULONG d = 3; d < 2000; d += 2) {
        BN_ULONG r = BN_mod_word(p, d);
        if (r == (BN_ULONG)-1)
            return -1;
        if (r == 0)
            return 0;
    }
    return 1;
}

/* One Miller-Rabin round with base a: 1 probably prime, 0 composite, -1 error.
 * n - 1 = d * 2^s with d odd. */
static int mr_round(const BIGNUM *a, const BIGNUM *n, const BIGNUM *n1, const BIGNUM *d,
                    int s, BN_CTX *ctx, BN_MONT_CTX *mont, BIGNUM *x)
{
    if (!BN_mod_exp_mont(x, a, d, n, ctx, mont))
        return -1;
    if (BN_is_one(x) || BN_cmp(x, n1) == 0)
        return 1;
    for (int r = 1; r < s; r++) {
        if (!BN_mod_sqr(x, x, n, ctx))
            return -1;
        if (BN_cmp(x, n1) == 0)
            return 1;
        if (BN_is_one(x))
            return 0;
    }
    return 0;
}

static int miller_rabin(const BIGNUM *n, BN_CTX *ctx)
{
    int ret = -1;
    BN_MONT_CTX *mont = BN_MONT_CTX_new();
    BN_CTX_start(ctx);
    BIGNUM *n1 = BN_CTX_get(ctx), *d = BN_CTX_get(ctx), *a = BN_CTX_get(ctx),
           *x = BN_CTX_get(ctx), *range = BN_CTX_get(ctx);
    if (mont == NULL || range == NULL || !BN_MONT_CTX_set(mont, n, ctx) || !BN_sub(n1, n, BN_value_one()))
        goto out;
    int s = 0;
    while (!BN_is_bit_set(n1, s))
        s++;
    if (!BN_rshift(d, n1, s) || !BN_copy(range, n) || !BN_sub_word(range, 3) || !BN_set_word(a, 2))
        goto out;
    for (int round = 0; round <= DH_PRIME_MR_ROUNDS; round++) {
        /* Round 0 uses base 2; the others a random base in [2, n-2]. */
        if (round > 0 && (!BN_rand_range(a, range) || !BN_add_word(a, 2)))
            goto out;
        int r = mr_round(a, n, n1, d, s, ctx, mont, x);
        if (r != 1) {
            ret = r;
            goto out;
        }
    }
    ret = 1;
out:
    BN_CTX_end(ctx);
    BN_MONT_CTX_free(mont);
    return ret;
}

int dh_prime_check(const BIGNUM *p, BN_CTX *ctx)
{
    if (BN_is_negative(p) || BN_num_bits(p) < 3 || !BN_is_odd(p))
        return 0;
    if (dh_prime_is_well_known(p))
        return 1;
    int r = trial_division(p);
    return r != 1 ? r : miller_rabin(p, ctx);
}
