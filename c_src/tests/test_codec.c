/*
 * test_codec.c — hex, base64, quote_plus, percent-decoding and strbuf.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "check_fmt.h"
#include "codec.h"

/* ---- strbuf ---------------------------------------------------------------- */

static void test_strbuf_basic(void **state)
{
    (void)state;
    strbuf sb = STRBUF_INIT;
    assert_int_equal(strbuf_append(&sb, "", 0), 0);
    assert_non_null(sb.data);
    assert_string_equal(sb.data, "");
    assert_int_equal(strbuf_puts(&sb, "abc"), 0);
    assert_int_equal(strbuf_putc(&sb, 'd'), 0);
    assert_int_equal(strbuf_append(&sb, "e\0f", 3), 0);
    assert_int_equal(sb.len, 7);
    assert_memory_equal(sb.data, "abcde\0f", 8); /* NUL-terminated too */
    size_t cap = sb.cap;
    strbuf_reset(&sb);
    assert_int_equal(sb.len, 0);
    assert_string_equal(sb.data, "");
    assert_int_equal(sb.cap, cap); /* capacity kept */
    strbuf_free(&sb);
    assert_null(sb.data);
    assert_int_equal(sb.cap, 0);
    strbuf_free(&sb); /* twice is fine */
    strbuf_free(NULL);
}

static void test_strbuf_growth(void **state)
{
    (void)state;
    strbuf sb = STRBUF_INIT;
    char chunk[1000];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)('a' + i % 26);
    for (int i = 0; i < 100; i++)
        assert_int_equal(strbuf_append(&sb, chunk, sizeof chunk), 0);
    assert_int_equal(sb.len, 100000);
    assert_true(sb.cap > sb.len);
    for (int i = 0; i < 100; i++)
        assert_memory_equal(sb.data + (size_t)i * sizeof chunk, chunk, sizeof chunk);
    assert_int_equal(sb.data[sb.len], '\0');
    /* Reserve then no growth. */
    strbuf_reset(&sb);
    char *before = sb.data;
    assert_int_equal(strbuf_reserve(&sb, 50000), 0);
    assert_ptr_equal(sb.data, before);
    char *r = strbuf_release(&sb);
    assert_non_null(r);
    assert_null(sb.data);
    free(r);
    /* An impossible reservation fails and sticks until reset. */
    assert_int_equal(strbuf_reserve(&sb, SIZE_MAX - 10), -1);
    assert_true(sb.failed);
    assert_int_equal(strbuf_puts(&sb, "x"), -1);
    assert_null(strbuf_release(&sb));
    assert_int_equal(strbuf_puts(&sb, "x"), 0);
    strbuf_reset(&sb);
    assert_false(sb.failed);
    strbuf_free(&sb);
}

/* ---- hex ------------------------------------------------------------------- */

static void test_hex(void **state)
{
    (void)state;
    const uint8_t bin[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[13];
    codec_hex_encode(bin, sizeof bin, out);
    assert_string_equal(out, "00017f80abff");
    codec_hex_encode(bin, 0, out);
    assert_string_equal(out, "");

    uint8_t dec[8];
    size_t n = 99;
    assert_int_equal(codec_hex_decode("00017F80aBfF", 12, dec, sizeof dec, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(dec, bin, 6);
    assert_int_equal(codec_hex_decode("", 0, dec, sizeof dec, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(codec_hex_decode("abc", 3, dec, sizeof dec, &n), -1);     /* odd */
    assert_int_equal(codec_hex_decode("zz", 2, dec, sizeof dec, &n), -1);
    assert_int_equal(codec_hex_decode("0x10", 4, dec, sizeof dec, &n), -1);
    assert_int_equal(codec_hex_decode("a ", 2, dec, sizeof dec, &n), -1);
    assert_int_equal(codec_hex_decode("00112233", 8, dec, 3, &n), -1);         /* no room */
    assert_int_equal(codec_hex_decode("0\0", 2, dec, sizeof dec, &n), -1);

    assert_true(codec_is_hex("0123456789abcdefABCDEF", 22));
    assert_false(codec_is_hex("", 0));
    assert_false(codec_is_hex("12g", 3));
    assert_false(codec_is_hex("-1", 2));
    assert_true(codec_is_hex("12g", 2)); /* only n bytes looked at */

    strbuf sb = STRBUF_INIT;
    strbuf_puts(&sb, "x=");
    assert_int_equal(codec_hex_append(&sb, bin, sizeof bin), 0);
    assert_string_equal(sb.data, "x=00017f80abff");
    strbuf_free(&sb);

    /* Every byte round-trips. */
    uint8_t all[256], back[256];
    char hex[513];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    codec_hex_encode(all, 256, hex);
    assert_int_equal(codec_hex_decode(hex, 512, back, sizeof back, &n), 0);
    assert_int_equal(n, 256);
    assert_memory_equal(all, back, 256);
}

/* ---- base64 ---------------------------------------------------------------- */

static void b64_roundtrip(const char *plain, const char *enc)
{
    char out[128];
    size_t n = 0;
    size_t pl = strlen(plain);
    assert_int_equal(codec_b64_encode((const uint8_t *)plain, pl, out, sizeof out, &n), 0);
    assert_string_equal(out, enc);
    assert_int_equal(n, strlen(enc));
    assert_int_equal(codec_b64_encoded_len(pl), strlen(enc));
    uint8_t dec[128];
    assert_int_equal(codec_b64_decode(enc, strlen(enc), dec, sizeof dec, &n), 0);
    assert_int_equal(n, pl);
    assert_memory_equal(dec, plain, pl);
    /* Without padding too. */
    size_t el = strlen(enc);
    while (el > 0 && enc[el - 1] == '=')
        el--;
    assert_int_equal(codec_b64_decode(enc, el, dec, sizeof dec, &n), 0);
    assert_int_equal(n, pl);
    assert_memory_equal(dec, plain, pl);
}

static void test_b64_rfc4648(void **state)
{
    (void)state;
    b64_roundtrip("", "");
    b64_roundtrip("f", "Zg==");
    b64_roundtrip("fo", "Zm8=");
    b64_roundtrip("foo", "Zm9v");
    b64_roundtrip("foob", "Zm9vYg==");
    b64_roundtrip("fooba", "Zm9vYmE=");
    b64_roundtrip("foobar", "Zm9vYmFy");
    b64_roundtrip("\xfb\xff\xbf", "+/+/");
}

static void test_b64_strict(void **state)
{
    (void)state;
    uint8_t dec[64];
    size_t n;
    const char *bad[] = {
        "Zg=",      /* incomplete padding */
        "Z===",     /* too much padding */
        "Zg==Zg==", /* padding in the middle */
        "Z",        /* 4k+1 */
        "Zm9vY",    /* 4k+1 */
        "Zm9v\n",   /* whitespace */
        " Zm9v",
        "Zm 9v",
        "Zm9v\r",
        "Zm-_",     /* URL-safe alphabet */
        "Zm9*",
        "=",
        "==",
        "Zg=a",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (codec_b64_decode(bad[i], strlen(bad[i]), dec, sizeof dec, &n) != -1)
            fail_msg("accepted %s", bad[i]);
    }
    assert_int_equal(codec_b64_decode("Zm9v\0", 5, dec, sizeof dec, &n), -1);
    /* Output room is checked against the exact decoded size. */
    assert_int_equal(codec_b64_decode("Zm9vYmFy", 8, dec, 5, &n), -1);
    assert_int_equal(codec_b64_decode("Zm9vYmFy", 8, dec, 6, &n), 0);
    assert_int_equal(codec_b64_decode("Zm9vYg==", 8, dec, 4, &n), 0);
    assert_int_equal(codec_b64_decode("Zm9vYg==", 8, dec, 3, &n), -1);
    assert_int_equal(codec_b64_decode("Zm9vYmE", 7, dec, 5, &n), 0);
    char out[9];
    assert_int_equal(codec_b64_encode((const uint8_t *)"foobar", 6, out, 8, &n), -1);
    assert_int_equal(codec_b64_encode((const uint8_t *)"foobar", 6, out, 9, &n), 0);
    /* Non-zero unused bits are ignored (like Python's b64decode). */
    assert_int_equal(codec_b64_decode("Zh==", 4, dec, sizeof dec, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(dec[0], 'f');
}

/* Random data against OpenSSL's encoder. */
static void test_b64_random(void **state)
{
    (void)state;
    for (size_t len = 0; len < 200; len++) {
        uint8_t in[200], dec[200];
        unsigned char ref[300];
        char out[300];
        size_t n = 0;
        if (len > 0)
            assert_int_equal(RAND_bytes(in, (int)len), 1);
        int rl = EVP_EncodeBlock(ref, in, (int)len);
        assert_int_equal(codec_b64_encode(in, len, out, sizeof out, &n), 0);
        assert_int_equal(n, (size_t)rl);
        assert_string_equal(out, (const char *)ref);
        assert_true(codec_b64_decoded_max(n) >= len);
        assert_int_equal(codec_b64_decode(out, n, dec, sizeof dec, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(dec, in, len);
    }
}

/* ---- quote_plus / percent-decode ------------------------------------------- */

static void qp(const char *in, size_t n, const char *want)
{
    strbuf sb = STRBUF_INIT;
    strbuf_puts(&sb, "<");
    assert_int_equal(codec_quote_plus_append(&sb, in, n), 0);
    assert_string_equal(sb.data + 1, want);
    strbuf_free(&sb);
}

static void test_quote_plus(void **state)
{
    (void)state;
    qp("", 0, "");
    qp("AZaz09-._~", 10, "AZaz09-._~");
    qp("a b", 3, "a+b");
    qp("a+b/c=d&e", 9, "a%2Bb%2Fc%3Dd%26e");
    qp("https://api.ibkr.com/v1/api/x?y", 31, "https%3A%2F%2Fapi.ibkr.com%2Fv1%2Fapi%2Fx%3Fy");
    qp("\xc3\xa9", 2, "%C3%A9");
    qp("\0\x7f\xff%", 4, "%00%7F%FF%25");
    qp("!*'()", 5, "%21%2A%27%28%29");

    /* Every byte: unreserved kept, space '+', the rest %XX upper-case. */
    for (int c = 0; c < 256; c++) {
        char in = (char)c, want[4];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            CHECK_FMT(want, sizeof want, "%c", c);
        else if (c == ' ')
            CHECK_FMT(want, sizeof want, "+");
        else
            CHECK_FMT(want, sizeof want, "%%%02X", c);
        qp(&in, 1, want);
    }
}

static void pd(const char *in, int plus, const char *want, size_t want_len)
{
    char out[64];
    size_t n = codec_pct_decode(in, strlen(in), out, plus);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

static void test_pct_decode(void **state)
{
    (void)state;
    pd("", 1, "", 0);
    pd("abc", 1, "abc", 3);
    pd("a+b", 1, "a b", 3);
    pd("a+b", 0, "a+b", 3);
    pd("a%20b", 1, "a b", 3);
    pd("%2B%2b", 1, "++", 2);
    pd("%C3%A9", 1, "\xc3\xa9", 2);
    pd("%00x", 1, "\0x", 2);
    pd("%", 1, "%", 1);
    pd("%4", 1, "%4", 2);
    pd("%zz", 1, "%zz", 3);
    pd("%%41", 1, "%A", 2);
    pd("100%", 1, "100%", 4);
    pd("a%2", 1, "a%2", 3);
    pd("%+1", 1, "% 1", 3);
    /* Only n bytes are read. */
    char out[8];
    assert_int_equal(codec_pct_decode("%41%42", 5, out, 1), 3);
    assert_memory_equal(out, "A%4", 3);
    assert_int_equal(codec_pct_decode("%41%42", 4, out, 1), 2);
    assert_memory_equal(out, "A%", 2);
}

static void test_utf8_prefix(void **state)
{
    (void)state;
#define U(s) codec_utf8_prefix((const unsigned char *)(s), sizeof(s) - 1)
    assert_int_equal(U(""), 0);
    assert_int_equal(U("plain ascii\x7f\x01"), 13);
    assert_int_equal(U("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), 9); /* e-acute, euro, U+1F600 */
    assert_int_equal(U("\xf4\x8f\xbf\xbf"), 4);                       /* U+10FFFF */
    assert_int_equal(U("\xed\x9f\xbf"), 3);                            /* U+D7FF */
    /* The prefix stops before the first bad sequence. */
    assert_int_equal(U("ab\xc0\x80"), 2);         /* overlong NUL */
    assert_int_equal(U("ab\xe0\x9f\xbf"), 2);     /* overlong 3-byte */
    assert_int_equal(U("ab\xf0\x8f\xbf\xbf"), 2); /* overlong 4-byte */
    assert_int_equal(U("ab\xed\xa0\x80"), 2);     /* surrogate U+D800 */
    assert_int_equal(U("ab\xf4\x90\x80\x80"), 2); /* above U+10FFFF */
    assert_int_equal(U("ab\xf5\x80\x80\x80"), 2);
    assert_int_equal(U("ab\x80"), 2);             /* lone continuation */
    assert_int_equal(U("ab\xc3"), 2);             /* truncated */
    assert_int_equal(U("ab\xe2\x82"), 2);
    assert_int_equal(U("ab\xe2\x28\xa1"), 2);     /* bad continuation */
#undef U
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strbuf_basic),
        cmocka_unit_test(test_strbuf_growth),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_b64_rfc4648),
        cmocka_unit_test(test_b64_strict),
        cmocka_unit_test(test_b64_random),
        cmocka_unit_test(test_quote_plus),
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_utf8_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
