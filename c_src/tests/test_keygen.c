/*
 * test_keygen.c — key material for the portal: RSA pairs in the PEM forms
 * IBKR accepts, DH parameters that are a safe prime with generator 2 (512
 * bits here to stay fast; setup uses 2048), progress and cancellation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "keygen.h"

static int starts_with(const keygen_pem *p, const char *prefix)
{
    return p->data != NULL && strncmp(p->data, prefix, strlen(prefix)) == 0;
}

static void test_rsa_pair(void **state)
{
    (void)state;
    keygen_pem priv, pub;
    assert_int_equal(keygen_rsa(2048, &priv, &pub), KEYGEN_OK);
    assert_true(starts_with(&priv, "-----BEGIN PRIVATE KEY-----\n"));
    assert_true(starts_with(&pub, "-----BEGIN PUBLIC KEY-----\n"));
    assert_null(memchr(priv.data, '\r', priv.len));
    assert_int_equal(strlen(priv.data), priv.len);

    BIO *b1 = BIO_new_mem_buf(priv.data, (int)priv.len);
    BIO *b2 = BIO_new_mem_buf(pub.data, (int)pub.len);
    EVP_PKEY *k1 = PEM_read_bio_PrivateKey(b1, NULL, NULL, NULL);
    EVP_PKEY *k2 = PEM_read_bio_PUBKEY(b2, NULL, NULL, NULL);
    assert_non_null(k1);
    assert_non_null(k2);
    assert_int_equal(EVP_PKEY_get_bits(k1), 2048);
    assert_true(EVP_PKEY_is_a(k1, "RSA"));
    assert_int_equal(EVP_PKEY_eq(k1, k2), 1); /* the public half of that private key */
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    BIO_free(b1);
    BIO_free(b2);
    keygen_pem_free(&priv);
    keygen_pem_free(&pub);
    assert_null(priv.data);
}

static void test_rsa_bits(void **state)
{
    (void)state;
    keygen_pem priv, pub;
    assert_int_equal(keygen_rsa(1024, &priv, &pub), KEYGEN_ERR_BITS);
    assert_null(priv.data);
    assert_int_equal(keygen_rsa(8193, &priv, &pub), KEYGEN_ERR_BITS);
}

typedef struct {
    int calls;
    int seen[3];
    int cancel_after; /* 0: never */
} counter;

static int count(keygen_stage s, void *ctx)
{
    counter *c = ctx;
    c->calls++;
    if ((int)s >= 0 && (int)s < 3)
        c->seen[s]++;
    return c->cancel_after == 0 || c->calls < c->cancel_after;
}

static void test_dh_safe_prime(void **state)
{
    (void)state;
    counter c = {0, {0, 0, 0}, 0};
    keygen_pem pem, hex;
    assert_int_equal(keygen_dh(512, count, &c, &pem, &hex), KEYGEN_OK);
    assert_true(starts_with(&pem, "-----BEGIN DH PARAMETERS-----\n"));
    assert_true(c.calls > 0);
    assert_true(c.seen[KEYGEN_STAGE_CANDIDATE] > 0);

    BIO *b = BIO_new_mem_buf(pem.data, (int)pem.len);
    EVP_PKEY *params = PEM_read_bio_Parameters(b, NULL);
    assert_non_null(params);
    BIGNUM *p = NULL, *g = NULL, *q = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(params, OSSL_PKEY_PARAM_FFC_P, &p), 1);
    assert_int_equal(EVP_PKEY_get_bn_param(params, OSSL_PKEY_PARAM_FFC_G, &g), 1);
    assert_int_equal(BN_num_bits(p), 512);
    assert_true(BN_is_word(g, 2));
    assert_false(BN_is_negative(p));
    /* safe: (p - 1) / 2 is prime too */
    BN_CTX *ctx = BN_CTX_new();
    q = BN_dup(p);
    assert_int_equal(BN_sub_word(q, 1), 1);
    assert_int_equal(BN_rshift1(q, q), 1);
    assert_int_equal(BN_check_prime(p, ctx, NULL), 1);
    assert_int_equal(BN_check_prime(q, ctx, NULL), 1);

    /* the hex is that prime, lower case */
    BIGNUM *h = NULL;
    assert_int_equal(BN_hex2bn(&h, hex.data), (int)hex.len);
    assert_int_equal(BN_cmp(h, p), 0);
    for (size_t i = 0; i < hex.len; i++)
        assert_false(hex.data[i] >= 'A' && hex.data[i] <= 'F');

    BN_free(h);
    BN_free(p);
    BN_free(q);
    BN_free(g);
    BN_CTX_free(ctx);
    EVP_PKEY_free(params);
    BIO_free(b);
    keygen_pem_free(&pem);
    keygen_pem_free(&hex);
}

static void test_dh_cancel(void **state)
{
    (void)state;
    counter c = {0, {0, 0, 0}, 3};
    keygen_pem pem, hex;
    assert_int_equal(keygen_dh(1024, count, &c, &pem, &hex), KEYGEN_CANCELLED);
    assert_int_equal(c.calls, 3);
    assert_null(pem.data);
    assert_null(hex.data);
}

static void test_dh_bits(void **state)
{
    (void)state;
    keygen_pem pem, hex;
    assert_int_equal(keygen_dh(511, NULL, NULL, &pem, &hex), KEYGEN_ERR_BITS);
    assert_int_equal(keygen_dh(8193, NULL, NULL, &pem, &hex), KEYGEN_ERR_BITS);
    assert_string_equal(keygen_status_atom(KEYGEN_ERR_BITS), "badarg");
    assert_string_equal(keygen_status_atom(KEYGEN_CANCELLED), "cancelled");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_pair),     cmocka_unit_test(test_rsa_bits),
        cmocka_unit_test(test_dh_safe_prime), cmocka_unit_test(test_dh_cancel),
        cmocka_unit_test(test_dh_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
