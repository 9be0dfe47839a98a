/*
 * test_hmac_sha256.c — the precomputed-key HMAC-SHA256 against RFC 4231's
 * test cases and against OpenSSL's EVP_Q_mac on random keys and messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "codec.h"
#include "hmac_sha256.h"

static void check_hex(const void *key, size_t klen, const void *msg, size_t mlen, const char *want)
{
    hmac_sha256_key k;
    uint8_t out[HMAC_SHA256_LEN];
    char hex[2 * HMAC_SHA256_LEN + 1];
    assert_int_equal(hmac_sha256_set_key(&k, key, klen), 0);
    assert_int_equal(hmac_sha256(&k, msg, mlen, out), 0);
    codec_hex_encode(out, sizeof out, hex);
    hex[sizeof hex - 1] = '\0';
    assert_string_equal(hex, want);
    /* The key is reusable: the same MAC again. */
    uint8_t again[HMAC_SHA256_LEN];
    assert_int_equal(hmac_sha256(&k, msg, mlen, again), 0);
    assert_memory_equal(out, again, sizeof out);
    hmac_sha256_wipe(&k);
    assert_int_equal(hmac_sha256(&k, msg, mlen, again), -1); /* wiped: not keyed */
}

static void test_rfc4231(void **state)
{
    (void)state;
    uint8_t k1[20], k6[131];
    memset(k1, 0x0b, sizeof k1);
    memset(k6, 0xaa, sizeof k6);
    check_hex(k1, sizeof k1, "Hi There", 8,
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    check_hex("Jefe", 4, "what do ya want for nothing?", 28,
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* Test case 6: a key longer than the block is hashed first. */
    check_hex(k6, sizeof k6, "Test Using Larger Than Block-Size Key - Hash Key First", 54,
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_matches_openssl(void **state)
{
    (void)state;
    uint8_t key[200], msg[700];
    for (int i = 0; i < 300; i++) {
        size_t klen = (size_t)i % sizeof key, mlen = ((size_t)i * 7) % sizeof msg;
        assert_int_equal(RAND_bytes(key, (int)sizeof key), 1);
        assert_int_equal(RAND_bytes(msg, (int)sizeof msg), 1);
        uint8_t want[HMAC_SHA256_LEN], got[HMAC_SHA256_LEN];
        size_t wlen = 0;
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, klen, msg, mlen,
                                  want, sizeof want, &wlen));
        hmac_sha256_key k;
        assert_int_equal(hmac_sha256_set_key(&k, key, klen), 0);
        assert_int_equal(hmac_sha256(&k, msg, mlen, got), 0);
        assert_memory_equal(got, want, sizeof want);
        hmac_sha256_wipe(&k);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4231),
        cmocka_unit_test(test_matches_openssl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
