/*
 * test_json_etf.c — JSON text <-> external term format (json_etf.h).
 * Decoded terms are checked by reading them back with ei's decoders.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "json_etf.h"

/* ---- helpers ------------------------------------------------------------------------ */

/* Decodes js into a fresh buffer (after the version byte); 0 or -1. */
static int dec(ei_x_buff *x, const char *js, const char **why)
{
    assert_int_equal(ei_x_new_with_version(x), 0);
    return json_etf_decode(x, js, strlen(js), why);
}

/* Decoding js must fail with why = want, leaving x as it was. */
static void dec_fails(const char *js, size_t len, const char *want)
{
    ei_x_buff x;
    const char *why = NULL;
    assert_int_equal(ei_x_new_with_version(&x), 0);
    assert_int_equal(ei_x_encode_atom(&x, "before"), 0);
    int at = x.index;
    if (json_etf_decode(&x, js, len, &why) != -1 || why == NULL || strcmp(why, want) != 0)
        fail_msg("decoding \"%.*s\": expected %s, got %s", (int)(len > 60 ? 60 : len), js, want,
                 why != NULL ? why : "success");
    assert_int_equal(x.index, at);
    ei_x_free(&x);
}

/* The term must be exactly one term filling the buffer. */
static void whole(const ei_x_buff *x)
{
    int i = 1;
    assert_int_equal(ei_skip_term(x->buff, &i), 0);
    assert_int_equal(i, x->index);
}

/* decode then encode: the JSON text that comes back. */
static char *round_trip(const char *js)
{
    ei_x_buff x;
    const char *why = NULL;
    if (dec(&x, js, &why) != 0)
        fail_msg("decoding \"%s\": %s", js, why);
    whole(&x);
    int i = 1;
    size_t n = 0;
    char *out = json_etf_encode(x.buff, x.index, &i, &n, &why);
    if (out == NULL)
        print_error("encoding \"%s\" again: %s\n", js, why);
    assert_true(out != NULL && n == strlen(out));
    assert_int_equal(i, x.index);
    ei_x_free(&x);
    return out;
}

static void same_text(const char *js, const char *want)
{
    char *out = round_trip(js);
    assert_string_equal(out, want);
    free(out);
}

/* Encodes the term in x (after the version byte); NULL with *why on failure. */
static char *enc(const ei_x_buff *x, const char **why)
{
    int i = 1;
    size_t n;
    char *out = json_etf_encode(x->buff, x->index, &i, &n, why);
    if (out != NULL) {
        assert_int_equal(i, x->index);
        assert_int_equal(n, strlen(out));
    } else {
        assert_int_equal(i, 1);
    }
    return out;
}

static void enc_fails(const ei_x_buff *x, const char *want)
{
    const char *why = NULL;
    char *out = enc(x, &why);
    if (out != NULL || why == NULL || strcmp(why, want) != 0)
        fail_msg("expected %s, got %s", want, out != NULL ? out : why);
}

static void enc_is(const ei_x_buff *x, const char *want)
{
    const char *why = NULL;
    char *out = enc(x, &why);
    if (out == NULL)
        fail_msg("expected %s, got error %s", want, why);
    assert_string_equal(out, want);
    free(out);
}

/* ---- decoding ----------------------------------------------------------------------- */

static void test_scalars(void **state)
{
    (void)state;
    static const char *const atoms[] = {"true", "false", "null"};
    for (size_t k = 0; k < 3; k++) {
        ei_x_buff x;
        char a[MAXATOMLEN];
        assert_int_equal(dec(&x, atoms[k], NULL), 0);
        int i = 1;
        assert_int_equal(ei_decode_atom(x.buff, &i, a), 0);
        assert_string_equal(a, atoms[k]);
        assert_int_equal(i, x.index);
        ei_x_free(&x);
    }
    static const struct {
        const char *js;
        long long v;
    } ints[] = {{"0", 0}, {"-0", 0}, {"7", 7}, {"-1", -1}, {"255", 255}, {"256", 256},
                {"-2147483648", -2147483648LL}, {"2147483648", 2147483648LL},
                {" 42 ", 42}, {"9223372036854775807", INT64_MAX},
                {"-9223372036854775807", INT64_MIN + 1}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        ei_x_buff x;
        long long v;
        assert_int_equal(dec(&x, ints[k].js, NULL), 0);
        int i = 1;
        assert_int_equal(ei_decode_longlong(x.buff, &i, &v), 0);
        assert_true(v == ints[k].v);
        assert_int_equal(i, x.index);
        ei_x_free(&x);
    }
    ei_x_buff x;
    unsigned long long u;
    assert_int_equal(dec(&x, "18446744073709551614", NULL), 0);
    int i = 1;
    assert_int_equal(ei_decode_ulonglong(x.buff, &i, &u), 0);
    assert_true(u == UINT64_MAX - 1);
    ei_x_free(&x);
}

static void test_floats(void **state)
{
    (void)state;
    static const struct {
        const char *js;
        double v;
    } fl[] = {{"0.5", 0.5}, {"-2.25", -2.25}, {"1e2", 100.0}, {"1E-2", 0.01}, {"1.0", 1.0},
              {"2e+3", 2000.0}, {"123.456", 123.456}, {"5e-324", 5e-324},
              {"1.7976931348623157e308", 1.7976931348623157e308}, {"1.5e-400", 0.0}};
    for (size_t k = 0; k < sizeof fl / sizeof fl[0]; k++) {
        ei_x_buff x;
        double v;
        assert_int_equal(dec(&x, fl[k].js, NULL), 0);
        int i = 1;
        assert_int_equal(ei_decode_double(x.buff, &i, &v), 0);
        assert_true(v == fl[k].v);
        assert_int_equal(i, x.index);
        ei_x_free(&x);
    }
    ei_x_buff x;
    double v;
    int i = 1;
    assert_int_equal(dec(&x, "-0.0", NULL), 0);
    assert_int_equal(ei_decode_double(x.buff, &i, &v), 0);
    assert_true(v == 0.0 && signbit(v));
    ei_x_free(&x);
}

/* Integers lie strictly inside INT64_MIN .. UINT64_MAX: json-c clamps
 * anything beyond to those two values, so they are refused as ambiguous.
 * (Before json-c, integers were exact bignums up to 2^1344.) */
static void test_integer_range(void **state)
{
    (void)state;
    static const char *const out[] = {
        "-9223372036854775808", "18446744073709551615", "-9223372036854775809",
        "18446744073709551616", "123456789012345678901234567890", "-98765432109876543210",
        "[1,99999999999999999999999]", "{\"a\":-99999999999999999999999}"};
    for (size_t k = 0; k < sizeof out / sizeof out[0]; k++)
        dec_fails(out[k], strlen(out[k]), "number");
    same_text("[-9223372036854775807,9223372036854775807,9223372036854775808,"
              "18446744073709551614]",
              "[-9223372036854775807,9223372036854775807,9223372036854775808,"
              "18446744073709551614]");
}

static void test_strings(void **state)
{
    (void)state;
    static const struct {
        const char *js;
        const char *bytes;
        size_t n;
    } st[] = {{"\"\"", "", 0},
              {"\"abc\"", "abc", 3},
              {"\"a\\u0000b\"", "a\0b", 3},
              {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8},
              {"\"\\u00e9\\u20AC\"", "\xc3\xa9\xe2\x82\xac", 5},
              {"\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4},
              {"\"\xf0\x9f\x98\x80 \x7f\"", "\xf0\x9f\x98\x80 \x7f", 6},
              {"\"\xf4\x8f\xbf\xbf\"", "\xf4\x8f\xbf\xbf", 4}};
    for (size_t k = 0; k < sizeof st / sizeof st[0]; k++) {
        ei_x_buff x;
        int i = 1, type, size;
        assert_int_equal(dec(&x, st[k].js, NULL), 0);
        assert_int_equal(ei_get_type(x.buff, &i, &type, &size), 0);
        assert_int_equal(type, ERL_BINARY_EXT);
        assert_int_equal(size, (int)st[k].n);
        char buf[16];
        long len;
        assert_int_equal(ei_decode_binary(x.buff, &i, buf, &len), 0);
        assert_int_equal(len, (long)st[k].n);
        assert_memory_equal(buf, st[k].bytes, st[k].n);
        assert_int_equal(i, x.index);
        ei_x_free(&x);
    }
}

static void test_containers(void **state)
{
    (void)state;
    ei_x_buff x;
    int i = 1, n;
    assert_int_equal(dec(&x, "[]", NULL), 0);
    assert_int_equal(x.buff[1], ERL_NIL_EXT);
    assert_int_equal(x.index, 2);
    ei_x_free(&x);
    assert_int_equal(dec(&x, "{ }", NULL), 0);
    assert_int_equal(ei_decode_map_header(x.buff, &i, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(i, x.index);
    ei_x_free(&x);

    /* {"a": [1, {"b": null}], "c": "d"}, read back with ei */
    assert_int_equal(dec(&x, "{\"a\" : [1 ,{\"b\":null}] ,\n\"c\":\"d\"}", NULL), 0);
    whole(&x);
    i = 1;
    assert_int_equal(ei_decode_map_header(x.buff, &i, &n), 0);
    assert_int_equal(n, 2);
    char key[8], atom[MAXATOMLEN];
    long len, v;
    assert_int_equal(ei_decode_binary(x.buff, &i, key, &len), 0);
    assert_memory_equal(key, "a", 1);
    assert_int_equal(ei_decode_list_header(x.buff, &i, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ei_decode_long(x.buff, &i, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(ei_decode_map_header(x.buff, &i, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ei_decode_binary(x.buff, &i, key, &len), 0);
    assert_int_equal(len, 1);
    assert_int_equal(ei_decode_atom(x.buff, &i, atom), 0);
    assert_string_equal(atom, "null");
    assert_int_equal(ei_decode_list_header(x.buff, &i, &n), 0); /* the tail */
    assert_int_equal(n, 0);
    assert_int_equal(ei_decode_binary(x.buff, &i, key, &len), 0);
    assert_memory_equal(key, "c", 1);
    assert_int_equal(ei_decode_binary(x.buff, &i, key, &len), 0);
    assert_memory_equal(key, "d", 1);
    assert_int_equal(i, x.index);
    ei_x_free(&x);
}

/* The last of equal keys wins, in the place of the first (json-c); the map
 * holds each key once. A key is cut at a \u0000 (json-c's keys are C
 * strings), so keys differing only after one are equal. */
static void test_duplicate_keys(void **state)
{
    (void)state;
    same_text("{\"a\":1,\"a\":2}", "{\"a\":2}");
    same_text("{\"a\":1,\"b\":2,\"a\":3,\"c\":4,\"b\":[5],\"a\":{\"x\":6}}",
              "{\"a\":{\"x\":6},\"b\":[5],\"c\":4}");
    same_text("[{\"k\":1,\"k\":{\"k\":2,\"k\":3}},{\"k\":4}]", "[{\"k\":{\"k\":3}},{\"k\":4}]");
    same_text("{\"a\\u0000b\":1,\"a\":2,\"a\\u0000c\":3}", "{\"a\":3}");
    /* Many members, duplicates spread through them (the sort, not a scan). */
    char js[4096], want[4096];
    size_t o = 0, w = 0;
    js[o++] = '{';
    for (int k = 0; k < 200; k++)
        o += (size_t)snprintf(js + o, sizeof js - o, "%s\"k%d\":%d", k ? "," : "", k % 150, k);
    js[o++] = '}';
    js[o] = '\0';
    want[w++] = '{';
    for (int k = 0; k < 150; k++)
        w += (size_t)snprintf(want + w, sizeof want - w, "%s\"k%d\":%d", k ? "," : "", k,
                              k < 50 ? k + 150 : k);
    want[w++] = '}';
    want[w] = '\0';
    char *out = round_trip(js);
    /* k0..k149 in their first places, k0..k49 with their later values. */
    assert_string_equal(out, want);
    free(out);
}

static void test_round_trips(void **state)
{
    (void)state;
    static const char *const same[] = {
        "null", "true", "false", "0", "-1", "3.5", "-0.0", "1.0", "0.1", "1e+300", "5e-324",
        "1.7976931348623157e+308", "\"\"", "\"a\\u0000b\\n\\\"\\\\\"", "\"\xe2\x82\xac/\x7f\"",
        "[]", "{}", "[[],{},[[]]]", "{\"a\":{\"b\":{\"c\":[1,2.5,\"x\",null]}}}",
        "[9223372036854775807,-9223372036854775807,18446744073709551614]"};
    for (size_t k = 0; k < sizeof same / sizeof same[0]; k++)
        same_text(same[k], same[k]);
    same_text(" [ 1 , 2 ] \r\n", "[1,2]");
    same_text("1E2", "100.0");
    same_text("\"\\u00e9\\ud83d\\ude00\\u001F\"", "\"\xc3\xa9\xf0\x9f\x98\x80\\u001f\"");
    same_text("123.4560", "123.456");
}

static void test_syntax_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "nul", "tru", "True", "nan", "01", "[01]", ".5", "-", "[-]",
        "+1", "1e", "1e+", "0x10", "[1,]", "[,1]", "[1 2]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}",
        "{\"a\"}", "{1:2}", "'a'", "\"a", "\"\\x\"", "\"\\u12\"", "\"\\u12G4\"",
        "[1] x", "1 2", "{}{}", "[", "{", "]", "/* c */ 1", "[1]//", "\"a\\\"", "nulll"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        dec_fails(bad[k], strlen(bad[k]), "syntax");
    dec_fails("[1]\0", 4, "syntax");
    dec_fails("\xef\xbb\xbf[1]", 6, "syntax"); /* a BOM: valid UTF-8, not JSON */
    dec_fails("[\xc3\xa9]", 4, "syntax");
    dec_fails("\"a\0\"", 4, "syntax");
    dec_fails("", 0, "empty");
    dec_fails(" \t\r\n", 4, "empty");
}

/* What json-c's strict mode takes that RFC 8259 does not (PROTOCOL.md):
 * leading zeros, a '.' without digits on one side, raw control characters
 * in strings, lone surrogate escapes (U+FFFD). NaN and Infinity are
 * parsed, then refused as numbers. */
static void test_json_c_leniencies(void **state)
{
    (void)state;
    static const struct {
        const char *js, *want;
    } lax[] = {{"1.", "1.0"},   {"[1.]", "[1.0]"},    {"1.e5", "100000.0"}, {"-.5", "-0.5"},
               {"01.5", "1.5"}, {"-01", "-1"},        {"[-01]", "[-1]"},    {"00", "0"},
               {"-00", "0"},    {"\"\t\x01\"", "\"\\t\\u0001\""},
               {"\"\\ud800\"", "\"\xef\xbf\xbd\""}, {"\"\\udc00x\"", "\"\xef\xbf\xbdx\""},
               {"\"\\ud83d\\u0041\"", "\"\xef\xbf\xbd" "A\""}};
    for (size_t k = 0; k < sizeof lax / sizeof lax[0]; k++)
        same_text(lax[k].js, lax[k].want);
    static const char *const nonfinite[] = {"NaN", "Infinity", "-Infinity", "[1,NaN]",
                                            "{\"a\":-Infinity}"};
    for (size_t k = 0; k < sizeof nonfinite / sizeof nonfinite[0]; k++)
        dec_fails(nonfinite[k], strlen(nonfinite[k]), "number");
}

static void test_utf8_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\"\xff\"", "\"\xc0\x80\"", "\"\xc1\xbf\"", "\"\xe0\x9f\xbf\"", "\"\xed\xa0\x80\"",
        "\"\xf0\x8f\xbf\xbf\"", "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"", "\"\x80\"",
        "\"\xc3\"", "\"\xe2\x82\"", "{\"\xff\":1}", "{\"\xed\xbf\xbf\":1}",
        "{\"a\":[\"\xc0\xaf\"]}", "[\"\xf0\x9f\x98\"]"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        dec_fails(bad[k], strlen(bad[k]), "utf8");
}

static void test_limits(void **state)
{
    (void)state;
    enum { D = JSON_ETF_MAX_DEPTH };
    char js[2 * (D + 1) + 1];
    memset(js, '[', D);
    memset(js + D, ']', D);
    js[2 * (size_t)D] = '\0';
    char *out = round_trip(js);
    assert_string_equal(out, js);
    free(out);
    memset(js, '[', D + 1);
    memset(js + D + 1, ']', D + 1);
    dec_fails(js, 2 * ((size_t)D + 1), "depth");
    /* the deepest array holds a scalar (json-c's depth counts it) */
    char one[2 * D + 2];
    memset(one, '[', D);
    one[D] = '1';
    memset(one + D + 1, ']', D);
    one[2 * D + 1] = '\0';
    out = round_trip(one);
    assert_string_equal(out, one);
    free(out);
    char obj[8 * (D + 1)];
    size_t o = 0;
    for (int k = 0; k <= D; k++)
        o += (size_t)snprintf(obj + o, sizeof obj - o, "{\"a\":");
    obj[o++] = '1';
    memset(obj + o, '}', D + 1);
    dec_fails(obj, o + D + 1, "depth");

    dec_fails("1e400", 5, "number");
    dec_fails("-1e400", 6, "number");
    dec_fails("[1.8e308]", 9, "number");

    /* The size check comes before any byte is read. */
    char *big = malloc(JSON_ETF_MAX_BYTES + 1);
    assert_non_null(big);
    memset(big, ' ', JSON_ETF_MAX_BYTES + 1);
    big[0] = '1';
    dec_fails(big, JSON_ETF_MAX_BYTES + 1, "too_large");
    ei_x_buff x;
    assert_int_equal(ei_x_new(&x), 0);
    assert_int_equal(json_etf_decode(&x, big, JSON_ETF_MAX_BYTES, NULL), 0);
    ei_x_free(&x);
    free(big);
}

/* Decoding appends after what the buffer holds. */
static void test_appends(void **state)
{
    (void)state;
    ei_x_buff x;
    assert_int_equal(ei_x_new_with_version(&x), 0);
    assert_int_equal(ei_x_encode_tuple_header(&x, 2), 0);
    assert_int_equal(ei_x_encode_atom(&x, "json"), 0);
    assert_int_equal(json_etf_decode(&x, "[1]", 3, NULL), 0);
    int i = 1, arity, n;
    char a[MAXATOMLEN];
    long v;
    assert_int_equal(ei_decode_tuple_header(x.buff, &i, &arity), 0);
    assert_int_equal(ei_decode_atom(x.buff, &i, a), 0);
    assert_int_equal(ei_decode_list_header(x.buff, &i, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ei_decode_long(x.buff, &i, &v), 0);
    assert_int_equal(v, 1);
    ei_x_free(&x);
}

/* ---- encoding ----------------------------------------------------------------------- */

static void test_encode_terms(void **state)
{
    (void)state;
    ei_x_buff x;
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_encode_map_header(&x, 4);
    ei_x_encode_atom(&x, "name");
    ei_x_encode_binary(&x, "caf\xc3\xa9 \"\\\n", 9);
    ei_x_encode_binary(&x, "list", 4);
    ei_x_encode_list_header(&x, 5);
    ei_x_encode_long(&x, -300);
    ei_x_encode_long(&x, 70000);
    ei_x_encode_double(&x, 2.5);
    ei_x_encode_atom(&x, "null");
    ei_x_encode_atom(&x, "false");
    ei_x_encode_empty_list(&x);
    ei_x_encode_atom(&x, "s");
    ei_x_encode_string(&x, "ab"); /* STRING_EXT: a list of bytes */
    ei_x_encode_atom(&x, "true");
    ei_x_encode_map_header(&x, 0);
    enc_is(&x, "{\"name\":\"caf\xc3\xa9 \\\"\\\\\\n\",\"list\":[-300,70000,2.5,null,false],"
               "\"s\":[97,98],\"true\":{}}");
    ei_x_free(&x);

    static const struct {
        double v;
        const char *want;
    } fl[] = {{1.0, "1.0"},         {-0.0, "-0.0"},     {0.1, "0.1"},
              {1e300, "1e+300"},     {1e21, "1e+21"},    {123456.0, "123456.0"},
              {1.5e-7, "1.5e-07"},   {1e-6, "1e-06"},    {1e-4, "0.0001"},
              {1e20, "1e+20"},       {1e14, "100000000000000.0"},
              {-1234.5, "-1234.5"},  {5e-324, "5e-324"}, {2.0 / 3.0, "0.6666666666666666"},
              {1.7976931348623157e308, "1.7976931348623157e+308"},
              {187.1, "187.1"},      {0.30000000000000004, "0.30000000000000004"}};
    for (size_t k = 0; k < sizeof fl / sizeof fl[0]; k++) {
        assert_int_equal(ei_x_new_with_version(&x), 0);
        ei_x_encode_double(&x, fl[k].v);
        enc_is(&x, fl[k].want);
        ei_x_free(&x);
    }
    static const struct {
        long long v;
        const char *want;
    } in[] = {{0, "0"}, {255, "255"}, {-1, "-1"}, {INT32_MIN, "-2147483648"},
              {INT64_MAX, "9223372036854775807"}, {INT64_MIN + 1, "-9223372036854775807"}};
    for (size_t k = 0; k < sizeof in / sizeof in[0]; k++) {
        assert_int_equal(ei_x_new_with_version(&x), 0);
        ei_x_encode_longlong(&x, in[k].v);
        enc_is(&x, in[k].want);
        ei_x_free(&x);
    }
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_encode_ulonglong(&x, UINT64_MAX - 1);
    enc_is(&x, "18446744073709551614");
    ei_x_free(&x);
    /* LARGE_BIG_EXT and a non-minimal bignum (zero high bytes, negative zero) */
    static const char large[] = {111, 0, 0, 0, 2, 0, 1, 1};
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_append_buf(&x, large, sizeof large);
    enc_is(&x, "257");
    ei_x_free(&x);
    static const char zero[] = {110, 3, 1, 0, 0, 0};
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_append_buf(&x, zero, sizeof zero);
    enc_is(&x, "0");
    ei_x_free(&x);
    /* A key longer than any atom name (copied to the heap for json-c). */
    char longkey[3000], want[6100];
    memset(longkey, 'k', sizeof longkey);
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_encode_map_header(&x, 2);
    ei_x_encode_binary(&x, longkey, sizeof longkey);
    ei_x_encode_long(&x, 1);
    ei_x_encode_binary(&x, longkey, sizeof longkey - 1);
    ei_x_encode_long(&x, 2);
    (void)snprintf(want, sizeof want, "{\"%.*s\":1,\"%.*s\":2}", (int)sizeof longkey, longkey,
                   (int)sizeof longkey - 1, longkey);
    enc_is(&x, want);
    ei_x_free(&x);
    /* Latin-1 atom keys (ATOM_EXT) come out as UTF-8. */
    static const char latin[] = {116, 0, 0, 0, 1, 100, 0, 2, 'a', (char)0xe9, 97, 1};
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_append_buf(&x, latin, sizeof latin);
    enc_is(&x, "{\"a\xc3\xa9\":1}");
    ei_x_free(&x);
}

/* Encoding starts at *index and stops after one term. */
static void test_encode_index(void **state)
{
    (void)state;
    ei_x_buff x;
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_long(&x, 5);
    int at = x.index;
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 7);
    ei_x_encode_empty_list(&x);
    int end = x.index;
    ei_x_encode_atom(&x, "after");
    int i = at;
    size_t n;
    char *out = json_etf_encode(x.buff, x.index, &i, &n, NULL);
    assert_non_null(out);
    assert_string_equal(out, "[7]");
    assert_int_equal(n, 3);
    assert_int_equal(i, end);
    free(out);
    const char *why = NULL;
    i = -1;
    assert_null(json_etf_encode(x.buff, x.index, &i, &n, &why));
    assert_string_equal(why, "badarg");
    i = x.index + 1;
    assert_null(json_etf_encode(x.buff, x.index, &i, &n, &why));
    ei_x_free(&x);
}

static void test_encode_errors(void **state)
{
    (void)state;
    ei_x_buff x;
#define CASE(build, want)                                                                  \
    do {                                                                                   \
        assert_int_equal(ei_x_new_with_version(&x), 0);                                    \
        build;                                                                             \
        enc_fails(&x, want);                                                               \
        ei_x_free(&x);                                                                     \
    } while (0)
    CASE(ei_x_encode_tuple_header(&x, 0), "badarg");
    CASE((ei_x_encode_list_header(&x, 1), ei_x_encode_tuple_header(&x, 1),
          ei_x_encode_long(&x, 1), ei_x_encode_empty_list(&x)),
         "badarg");
    CASE(ei_x_encode_atom(&x, "undefined"), "badarg");
    CASE(ei_x_encode_binary(&x, "\xff", 1), "badarg");
    CASE(ei_x_encode_binary(&x, "\xed\xa0\x80", 3), "badarg");
    CASE((ei_x_encode_map_header(&x, 1), ei_x_encode_binary(&x, "\xc0\x80", 2),
          ei_x_encode_long(&x, 1)),
         "badarg");
    CASE(ei_x_encode_bitstring(&x, "\xff", 0, 7), "badarg");
    CASE((ei_x_encode_list_header(&x, 1), ei_x_encode_long(&x, 1), ei_x_encode_long(&x, 2)),
         "badarg"); /* improper list [1 | 2] */
    CASE((ei_x_encode_map_header(&x, 1), ei_x_encode_long(&x, 1), ei_x_encode_long(&x, 2)),
         "badarg"); /* integer key */
    CASE((ei_x_encode_map_header(&x, 2), ei_x_encode_binary(&x, "a", 1), ei_x_encode_long(&x, 1),
          ei_x_encode_atom(&x, "a"), ei_x_encode_long(&x, 2)),
         "badarg"); /* two keys, one JSON name */
    CASE((ei_x_encode_map_header(&x, 2), ei_x_encode_binary(&x, "a", 1), ei_x_encode_long(&x, 1),
          ei_x_encode_binary(&x, "a", 1), ei_x_encode_long(&x, 2)),
         "badarg"); /* a malformed map */
    erlang_pid pid = {.node = "n@h", .num = 1, .serial = 0, .creation = 1};
    CASE(ei_x_encode_pid(&x, &pid), "badarg");
    char oldfloat[32] = {99, '1', '.', '5'}; /* FLOAT_EXT: term_to_binary never writes it */
    CASE(ei_x_append_buf(&x, oldfloat, sizeof oldfloat), "badarg");
    static const char nan[] = {70, 0x7f, (char)0xf8, 0, 0, 0, 0, 0, 0};
    static const char inf[] = {70, (char)0xff, (char)0xf0, 0, 0, 0, 0, 0, 0};
    static const char sign2[] = {110, 1, 2, 5};
    char toobig[3 + 169] = {110, (char)169, 0}; /* beyond the former bignum limit */
    toobig[sizeof toobig - 1] = 1;
    CASE(ei_x_append_buf(&x, nan, sizeof nan), "badarg");
    CASE(ei_x_append_buf(&x, inf, sizeof inf), "badarg");
    CASE(ei_x_append_buf(&x, sign2, sizeof sign2), "badarg");
    CASE(ei_x_append_buf(&x, toobig, sizeof toobig), "badarg");
    /* The integer range of decoding: strictly inside INT64_MIN .. UINT64_MAX. */
    static const char two64[] = {110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    CASE(ei_x_append_buf(&x, two64, sizeof two64), "badarg");
    CASE(ei_x_encode_longlong(&x, INT64_MIN), "badarg");
    CASE(ei_x_encode_ulonglong(&x, UINT64_MAX), "badarg");
    /* A NUL in a key: json-c's keys are C strings. */
    CASE((ei_x_encode_map_header(&x, 1), ei_x_encode_binary(&x, "a\0b", 3),
          ei_x_encode_long(&x, 1)),
         "badarg");
    static const char nul_atom[] = {116, 0, 0, 0, 1, 119, 2, 'a', 0, 97, 1};
    CASE(ei_x_append_buf(&x, nul_atom, sizeof nul_atom), "badarg");
    /* An ATOM_UTF8_EXT key that is not UTF-8 (found by fuzzing). */
    static const char bad_atom[] = {116, 0, 0, 0, 1, 119, 2, 'a', (char)0x83, 97, 1};
    CASE(ei_x_append_buf(&x, bad_atom, sizeof bad_atom), "badarg");
    /* [] and strings are arrays too: 128 lists around one is 129 levels. */
    assert_int_equal(ei_x_new_with_version(&x), 0);
    for (int k = 0; k < JSON_ETF_MAX_DEPTH; k++)
        ei_x_encode_list_header(&x, 1);
    ei_x_encode_string(&x, "ab");
    for (int k = 0; k < JSON_ETF_MAX_DEPTH; k++)
        ei_x_encode_empty_list(&x);
    enc_fails(&x, "depth");
    ei_x_free(&x);

    assert_int_equal(ei_x_new_with_version(&x), 0);
    for (int k = 0; k <= JSON_ETF_MAX_DEPTH; k++)
        ei_x_encode_list_header(&x, 1);
    ei_x_encode_long(&x, 1);
    for (int k = 0; k <= JSON_ETF_MAX_DEPTH; k++)
        ei_x_encode_empty_list(&x);
    enc_fails(&x, "depth");
    ei_x_free(&x);
#undef CASE
}

/* Every proper prefix of a valid term is refused, never read past. */
static void test_encode_truncated(void **state)
{
    (void)state;
    ei_x_buff x;
    assert_int_equal(ei_x_new_with_version(&x), 0);
    ei_x_encode_map_header(&x, 3);
    ei_x_encode_atom(&x, "k");
    ei_x_encode_list_header(&x, 3);
    ei_x_encode_double(&x, 1.5);
    ei_x_encode_ulonglong(&x, UINT64_MAX - 1);
    ei_x_encode_string(&x, "xyz");
    ei_x_encode_empty_list(&x);
    ei_x_encode_binary(&x, "b", 1);
    ei_x_encode_long(&x, 100000);
    ei_x_encode_atom(&x, "z");
    ei_x_encode_atom(&x, "true");
    for (int len = 1; len < x.index; len++) {
        /* a copy of exactly len bytes, so ASan sees any over-read */
        char *cut = malloc((size_t)len);
        assert_non_null(cut);
        memcpy(cut, x.buff, (size_t)len);
        int i = 1;
        const char *why = NULL;
        assert_null(json_etf_encode(cut, len, &i, NULL, &why));
        assert_string_equal(why, "badarg");
        assert_int_equal(i, 1);
        free(cut);
    }
    enc_is(&x, "{\"k\":[1.5,18446744073709551614,[120,121,122]],\"b\":100000,\"z\":true}");
    ei_x_free(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_integer_range),  cmocka_unit_test(test_strings),
        cmocka_unit_test(test_containers),     cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_round_trips),    cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_json_c_leniencies), cmocka_unit_test(test_utf8_errors),    cmocka_unit_test(test_limits),
        cmocka_unit_test(test_appends),        cmocka_unit_test(test_encode_terms),
        cmocka_unit_test(test_encode_index),   cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_encode_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
