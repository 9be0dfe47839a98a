/*
 * test_dh_prime.c — the DH modulus check: the RFC primes by comparison,
 * other primes and composites by trial division + Miller-Rabin, and
 * agreement with OpenSSL's BN_check_prime on random odd numbers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/bn.h>

#include "dh_prime.h"

/* Generated with `openssl prime -generate`: none is an RFC prime. */
static const char *P1024 =
    "CDD92D29B9442CDD3F94412CF4511EB0D7A86E6C70A05F2A212FAC9226D64955"
    "F0531A4EF1BA96794CC15F6816E603AA16EABD6850D99D5C37FE46DA65A566D4"
    "198AC106347615F42203C885783C43A0A8F3182B969020B36E7C70C3B906677E"
    "AB29212E7DD9DD75206ED8EDB43AB7C995BAE6CB1A546961FCCF05DDCA46686D";
static const char *P512A =
    "DE728C4BD7D4D25F10141A159F59BF2C389B1F74EE40DD9B34B9FE3A0BA17CA9"
    "E016CD6B2C00202706EA99C4710C27A61754923A22DABC799F3637A380C90369";
static const char *P512B =
    "D17E46EAC70C92583C2568335B8C2348CAF0DBDAF62C039E93257E4D81B3F8D8"
    "35DBBA14F6000DEAC1A5FE4C29C1F48D8614696F7CB82EB51783D89697A6A407";

static BIGNUM *hex(const char *h)
{
    BIGNUM *b = NULL;
    assert_true(BN_hex2bn(&b, h) > 0);
    return b;
}

static void test_rfc_primes(void **state)
{
    (void)state;
    BN_CTX *ctx = BN_CTX_new();
    BIGNUM *(*known[])(BIGNUM *) = {BN_get_rfc2409_prime_1024, BN_get_rfc3526_prime_1536,
                                    BN_get_rfc3526_prime_2048, BN_get_rfc3526_prime_3072,
                                    BN_get_rfc3526_prime_4096, BN_get_rfc3526_prime_6144,
                                    BN_get_rfc3526_prime_8192};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        /* cppcheck 2.10 takes the initialised array of function pointers
         * for an uninitialised variable (a parser false positive). */
        // cppcheck-suppress uninitvar
        BIGNUM *p = known[i](NULL);
        assert_int_equal(dh_prime_is_well_known(p), 1);
        assert_int_equal(dh_prime_check(p, ctx), 1);
        /* One bit off is neither well known nor prime (p + 2 for 2048 is
         * composite: checked with BN_check_prime below). */
        assert_true(BN_add_word(p, 2));
        assert_int_equal(dh_prime_is_well_known(p), 0);
        if (i == 2) {
            assert_int_equal(BN_check_prime(p, ctx, NULL), 0);
            assert_int_equal(dh_prime_check(p, ctx), 0);
        }
        BN_free(p);
    }
    BN_CTX_free(ctx);
}

static void test_other_prime(void **state)
{
    (void)state;
    BN_CTX *ctx = BN_CTX_new();
    BIGNUM *p = hex(P1024);
    assert_int_equal(dh_prime_is_well_known(p), 0);
    assert_int_equal(dh_prime_check(p, ctx), 1);
    BN_free(p);
    BN_CTX_free(ctx);
}

static void test_composites(void **state)
{
    (void)state;
    BN_CTX *ctx = BN_CTX_new();
    BIGNUM *a = hex(P512A), *b = hex(P512B), *n = BN_new();
    /* No small factor: only Miller-Rabin can tell. */
    assert_true(BN_mul(n, a, b, ctx));
    assert_int_equal(dh_prime_check(n, ctx), 0);
    /* A small factor. */
    assert_true(BN_mul_word(a, 1999));
    assert_int_equal(dh_prime_check(a, ctx), 0);
    /* Even, and the prime times 3. */
    BIGNUM *p = hex(P1024);
    assert_true(BN_add_word(p, 1));
    assert_int_equal(dh_prime_check(p, ctx), 0);
    assert_true(BN_sub_word(p, 1) && BN_mul_word(p, 3));
    assert_int_equal(dh_prime_check(p, ctx), 0);
    BN_free(a);
    BN_free(b);
    BN_free(n);
    BN_free(p);
    BN_CTX_free(ctx);
}

/* Random odd 1024-bit numbers (a few are prime) and random primes: the same
 * verdict as OpenSSL's full test. */
static void test_agrees_with_openssl(void **state)
{
    (void)state;
    BN_CTX *ctx = BN_CTX_new();
    BIGNUM *n = BN_new();
    for (int i = 0; i < 400; i++) {
        assert_true(BN_rand(n, 1024, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ODD));
        int want = BN_check_prime(n, ctx, NULL);
        assert_int_equal(dh_prime_check(n, ctx), want);
    }
    for (int i = 0; i < 3; i++) {
        assert_true(BN_generate_prime_ex2(n, 1024, 0, NULL, NULL, NULL, ctx));
        assert_int_equal(dh_prime_check(n, ctx), 1);
    }
    BN_free(n);
    BN_CTX_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_primes),
        cmocka_unit_test(test_other_prime),
        cmocka_unit_test(test_composites),
        cmocka_unit_test(test_agrees_with_openssl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
