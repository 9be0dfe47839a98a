/*
 * fuzz_json.c — libFuzzer harness for json_etf.h. Every input is used both
 * ways:
 *
 * 1. as JSON text: when json_etf_decode accepts it, the term must pass the
 *    port's own bounded check (erlcmd_check_term) and span exactly what was
 *    appended; json_etf_encode must accept it, and decoding that JSON again
 *    must give the very same term bytes (shortest floats read back exactly,
 *    keys are unique, order is kept). When it refuses, nothing is appended
 *    and the reason is one of the documented ones.
 * 2. as term bytes (after an optional version byte 131): when
 *    json_etf_encode accepts them, the JSON must decode, and encoding that
 *    term must give the same JSON text again.
 * 3. against json-c, an independent parser: a text json_etf_decode accepts
 *    must be accepted by json-c's strict mode too (json-c is laxer, never
 *    stricter), with the same kind of value at the top, the same length for
 *    an array, and the same value for a string, an integer within int64, a
 *    float, true, false or null.
 *
 * Any violation abort()s.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

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

/* The accepted text (size bytes, no NUL in it: raw NULs are not JSON) through
 * json-c, compared with the term at x->buff[1]. */
static void against_json_c(const uint8_t *data, size_t size, const ei_x_buff *x)
{
    /* json-c finishes a top-level number only at a NUL, so it is given one. */
    char *text = malloc(size + 1);
    if (text == NULL)
        fail("malloc");
    memcpy(text, data, size);
    text[size] = '\0';
    struct json_tokener *tok = json_tokener_new_ex(JSON_ETF_MAX_DEPTH + 1);
    if (tok == NULL)
        fail("json_tokener_new_ex");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *o = json_tokener_parse_ex(tok, text, (int)size + 1);
    /* (JSON null is a NULL object in json-c) */
    if (json_tokener_get_error(tok) != json_tokener_success)
        fail("accepted here, refused by json-c");
    int i = 1, type, arity;
    if (ei_get_type(x->buff, &i, &type, &arity) != 0)
        fail("ei_get_type");
    switch (json_object_get_type(o)) {
    case json_type_array:
        if (type == ERL_NIL_EXT ? json_object_array_length(o) != 0
                                : type != ERL_LIST_EXT ||
                                      json_object_array_length(o) != (size_t)arity)
            fail("array differs from json-c's");
        break;
    case json_type_object:
        if (type != ERL_MAP_EXT)
            fail("object differs from json-c's");
        break;
    case json_type_string: {
        int n = json_object_get_string_len(o);
        if (type != ERL_BINARY_EXT || arity != n ||
            memcmp(x->buff + 6, json_object_get_string(o), (size_t)n) != 0)
            fail("string differs from json-c's");
        break;
    }
    case json_type_int: {
        long long v;
        int64_t c = json_object_get_int64(o);
        /* json-c clamps beyond int64 (we keep bignums): compare the rest */
        if (c != INT64_MAX && c != INT64_MIN &&
            (ei_decode_longlong(x->buff, &i, &v) != 0 || v != c))
            fail("integer differs from json-c's");
        break;
    }
    case json_type_double: {
        double v;
        if (ei_decode_double(x->buff, &i, &v) != 0 || v != json_object_get_double(o))
            fail("float differs from json-c's");
        break;
    }
    case json_type_boolean:
    case json_type_null: {
        char atom[MAXATOMLEN];
        const char *want = json_object_is_type(o, json_type_null) ? "null"
                           : json_object_get_boolean(o)          ? "true"
                                                                 : "false";
        if (ei_decode_atom(x->buff, &i, atom) != 0 || strcmp(atom, want) != 0)
            fail("literal differs from json-c's");
        break;
    }
    }
    json_object_put(o);
    json_tokener_free(tok);
    free(text);
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
    against_json_c(data, size, &x);
    int i = 1;
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
