/*
 * fuzz_json.c — libFuzzer harness for json_etf.h (json-c underneath). Every
 * input is used both ways:
 *
 * 1. as JSON text: when json_etf_decode accepts it, the term must pass the
 *    port's own bounded check (erlcmd_check_term), span exactly what was
 *    appended, and read back with ei as a term in the image of the mapping
 *    (binary UTF-8 keys without NUL, proper lists, UTF-8 binaries, integers
 *    strictly inside INT64_MIN .. UINT64_MAX, finite floats, true/false/null,
 *    at most JSON_ETF_MAX_DEPTH levels); json_etf_encode must accept it, and
 *    decoding that JSON again must give the very same term bytes (shortest
 *    floats read back exactly, keys are unique, order is kept). When it
 *    refuses, nothing is appended and the reason is one of the documented
 *    ones.
 * 2. as term bytes (after an optional version byte 131): when
 *    json_etf_encode accepts them, the JSON must decode, and encoding that
 *    term must give the same JSON text again.
 *
 * Any violation abort()s.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec.h"
#include "../erlcmd.h"
#include "../json_etf.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((noreturn)) static void fail(const char *why)
{
    (void)fprintf(stderr, "fuzz_json: %s\n", why);
    abort();
}

/* libFuzzer's fixed signature, hence non-const. */
int LLVMFuzzerInitialize(int *argc, char ***argv) // NOLINT(readability-non-const-parameter)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void known_reason(const char *why)
{
    static const char *const ok[] = {"empty", "syntax", "utf8", "depth", "too_large", "number"};
    if (why == NULL)
        fail("a refusal without a reason");
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++)
        if (strcmp(why, ok[k]) == 0)
            return;
    fail(why); /* "nomem" included: the inputs are small */
}

/* JSON text -> a fresh term buffer (version byte first), or -1. */
static int decode(ei_x_buff *x, const char *js, size_t n, const char **why)
{
    if (ei_x_new_with_version(x) != 0)
        fail("ei_x_new");
    int rc = json_etf_decode(x, js, n, why);
    if (rc != 0 && x->index != 1)
        fail("a refused decode left bytes behind");
    return rc;
}

/* The term at buf[*i], read with ei, must be in the image of the mapping
 * (json_etf.h): maps with binary keys (UTF-8, no NUL), proper lists, UTF-8
 * binaries, integers strictly inside INT64_MIN .. UINT64_MAX, finite
 * floats, true/false/null, at most JSON_ETF_MAX_DEPTH levels. */
static void in_image(const char *buf, int *i, int depth) // NOLINT(misc-no-recursion): <= 128 deep
{
    int type, size, n;
    char atom[MAXATOMLEN];
    if (ei_get_type(buf, i, &type, &size) != 0)
        fail("ei_get_type");
    switch (type) {
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT:
    case ERL_SMALL_BIG_EXT: {
        long long v;
        unsigned long long u;
        int j = *i;
        if (ei_decode_longlong(buf, &j, &v) == 0 ? v == INT64_MIN
                                                  : (j = *i, ei_decode_ulonglong(buf, &j, &u) != 0 ||
                                                                 u == UINT64_MAX))
            fail("integer out of range");
        *i = j;
        return;
    }
    case ERL_FLOAT_EXT: /* ei_get_type's name for NEW_FLOAT_EXT too */ {
        double d;
        if (ei_decode_double(buf, i, &d) != 0 || !isfinite(d))
            fail("float not finite");
        return;
    }
    case ERL_ATOM_EXT:
        if (ei_decode_atom(buf, i, atom) != 0 ||
            (strcmp(atom, "true") != 0 && strcmp(atom, "false") != 0 && strcmp(atom, "null") != 0))
            fail("atom other than true, false, null");
        return;
    case ERL_BINARY_EXT: {
        long len;
        if (ei_decode_binary(buf, i, NULL, &len) != 0)
            fail("ei_decode_binary");
        if (codec_utf8_prefix((const unsigned char *)buf + *i - len, (size_t)len) != (size_t)len)
            fail("string is not UTF-8");
        return;
    }
    case ERL_NIL_EXT:
    case ERL_LIST_EXT:
    case ERL_MAP_EXT:
        break;
    default:
        fail("a term JSON does not give");
    }
    if (depth == JSON_ETF_MAX_DEPTH)
        fail("nested too deep");
    if (type == ERL_MAP_EXT) {
        if (ei_decode_map_header(buf, i, &n) != 0)
            fail("ei_decode_map_header");
        for (int k = 0; k < n; k++) {
            long len;
            if (ei_get_type(buf, i, &type, &size) != 0 || type != ERL_BINARY_EXT ||
                ei_decode_binary(buf, i, NULL, &len) != 0 ||
                memchr(buf + *i - len, '\0', (size_t)len) != NULL ||
                codec_utf8_prefix((const unsigned char *)buf + *i - len, (size_t)len) != (size_t)len)
                fail("map key is not a UTF-8 binary without NUL");
            in_image(buf, i, depth + 1);
        }
        return;
    }
    if (ei_decode_list_header(buf, i, &n) != 0)
        fail("ei_decode_list_header");
    for (int k = 0; k < n; k++)
        in_image(buf, i, depth + 1);
    if (n > 0 && (ei_decode_list_header(buf, i, &n) != 0 || n != 0))
        fail("improper list");
}

static void as_json(const uint8_t *data, size_t size)
{
    ei_x_buff x, y;
    const char *why = NULL;
    if (decode(&x, (const char *)data, size, &why) != 0) {
        known_reason(why);
        ei_x_free(&x);
        return;
    }
    if (erlcmd_check_term(x.buff, (size_t)x.index) != 0)
        fail("decoded term is not one well-formed term");
    int i = 1;
    in_image(x.buff, &i, 0);
    if (i != x.index)
        fail("decoded term does not span what was appended");
    i = 1;
    size_t n;
    char *js = json_etf_encode(x.buff, x.index, &i, &n, &why);
    if (js == NULL)
        fail(why != NULL ? why : "decoded term cannot be encoded");
    if (i != x.index || strlen(js) != n)
        fail("encode: wrong end index or length");
    if (decode(&y, js, n, &why) != 0)
        fail("encoded JSON does not decode");
    if (y.index != x.index || memcmp(x.buff, y.buff, (size_t)x.index) != 0)
        fail("JSON -> term -> JSON -> term changed the term");
    free(js);
    ei_x_free(&x);
    ei_x_free(&y);
}

static void as_term(const uint8_t *data, size_t size)
{
    if (size > INT32_MAX)
        return;
    int i = size > 0 && data[0] == 131 ? 1 : 0, start = i;
    size_t n, n2;
    const char *why = NULL;
    char *js = json_etf_encode((const char *)data, (int)size, &i, &n, &why);
    if (js == NULL) {
        if (i != start || why == NULL || (strcmp(why, "badarg") != 0 && strcmp(why, "depth") != 0))
            fail("encode refusal: index moved or unknown reason");
        return;
    }
    if (i <= start || i > (int)size)
        fail("encode: end index out of range");
    ei_x_buff x;
    if (decode(&x, js, n, &why) != 0)
        fail("encoded JSON does not decode");
    int j = 1;
    char *js2 = json_etf_encode(x.buff, x.index, &j, &n2, &why);
    if (js2 == NULL || n2 != n || memcmp(js, js2, n) != 0)
        fail("term -> JSON -> term -> JSON changed the JSON");
    free(js);
    free(js2);
    ei_x_free(&x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    as_json(data, size);
    as_term(data, size);
    return 0;
}
