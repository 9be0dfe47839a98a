/*
 * json_etf_decode.c — JSON text to an Erlang term (json_etf.h): json-c
 * parses (strict mode, UTF-8 checked), then the tree is written out with ei.
 *
 * On top of json-c 0.16, thin checks for what it lets through: NaN,
 * Infinity and 1e400 arrive as non-finite doubles (refused); integers
 * beyond int64/uint64 arrive clamped to the range's ends (so the ends
 * themselves are refused: ambiguous); its UTF-8 check only looks at bit
 * patterns (every string and key is checked again, strictly).
 */
#include "json_etf.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <json-c/json.h>

#include "codec.h"

/* Where the leading whitespace of s[0..n) ends. */
static size_t skip_ws(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* A string or key as a binary, once its UTF-8 is known to be right. */
static int put_string(ei_x_buff *x, const char *s, size_t n, const char **why)
{
    if (codec_utf8_prefix((const unsigned char *)s, n) != n) {
        *why = "utf8";
        return -1;
    }
    return n <= INT_MAX ? ei_x_encode_binary(x, s, (int)n) : -1; /* within JSON_ETF_MAX_BYTES */
}

/* json-c clamps (strtoll/strtoull) integers beyond int64/uint64 to
 * INT64_MIN or UINT64_MAX: those two are refused, every other is exact. */
static int put_int(ei_x_buff *x, const json_object *o, const char **why)
{
    int64_t v = json_object_get_int64(o);
    if (v == INT64_MAX) { /* or a uint64 above it */
        uint64_t u = json_object_get_uint64(o);
        if (u == UINT64_MAX) {
            *why = "number";
            return -1;
        }
        return ei_x_encode_ulonglong(x, u);
    }
    if (v == INT64_MIN) {
        *why = "number";
        return -1;
    }
    return ei_x_encode_longlong(x, v);
}

/* The tree under o; depth counts the arrays and objects around it. The
 * recursion is bounded by it (and by the tokener's own depth limit). */
static int put_value(ei_x_buff *x, json_object *o, int depth, const char **why) // NOLINT(misc-no-recursion)
{
    switch (json_object_get_type(o)) {
    case json_type_null: return ei_x_encode_atom(x, "null");
    case json_type_boolean: return ei_x_encode_atom(x, json_object_get_boolean(o) ? "true" : "false");
    case json_type_int: return put_int(x, o, why);
    case json_type_double: {
        double d = json_object_get_double(o);
        if (!isfinite(d)) {
            *why = "number";
            return -1;
        }
        return ei_x_encode_double(x, d);
    }
    case json_type_string:
        return put_string(x, json_object_get_string(o), (size_t)json_object_get_string_len(o), why);
    case json_type_array:
    case json_type_object:
        break;
    }
    /* json-c's depth counts scalars too: it was given one level more, so
     * the containers' own count is checked here. */
    if (depth == JSON_ETF_MAX_DEPTH) {
        *why = "depth";
        return -1;
    }
    if (json_object_is_type(o, json_type_array)) {
        size_t n = json_object_array_length(o);
        if (n > INT_MAX || (n > 0 && ei_x_encode_list_header(x, (long)n) != 0))
            return -1;
        for (size_t k = 0; k < n; k++)
            if (put_value(x, json_object_array_get_idx(o, k), depth + 1, why) != 0)
                return -1;
        return ei_x_encode_empty_list(x);
    }
    if (ei_x_encode_map_header(x, json_object_object_length(o)) != 0)
        return -1;
    struct json_object_iterator it = json_object_iter_begin(o), end = json_object_iter_end(o);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *key = json_object_iter_peek_name(&it);
        if (put_string(x, key, strlen(key), why) != 0 ||
            put_value(x, json_object_iter_peek_value(&it), depth + 1, why) != 0)
            return -1;
    }
    return 0;
}

static const char *tokener_why(enum json_tokener_error e)
{
    switch (e) {
    case json_tokener_error_depth: return "depth";
    case json_tokener_error_parse_utf8_string: return "utf8";
    default: return "syntax";
    }
}

/* The whole text through json-c: *root (NULL is JSON null), or a reason. */
static const char *parse(const char *json, size_t len, json_object **root)
{
    json_tokener *tok = json_tokener_new_ex(JSON_ETF_MAX_DEPTH + 1);
    if (tok == NULL)
        return "nomem";
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (e == json_tokener_continue) {
        /* All read, value unfinished: a top-level number (or literal)
         * ends only at a delimiter, so json-c is given a NUL as the end. */
        *root = json_tokener_parse_ex(tok, "", 1);
        e = json_tokener_get_error(tok);
    } else if (e == json_tokener_success && json_tokener_get_parse_end(tok) != len) {
        e = json_tokener_error_parse_unexpected; /* stopped at a NUL byte */
    }
    json_tokener_free(tok);
    if (e == json_tokener_success)
        return NULL;
    /* json-c says utf8 for any error inside a multi-byte character (e.g.
     * a stray BOM): a syntax error, when the text is valid UTF-8. */
    if (e == json_tokener_error_parse_utf8_string &&
        codec_utf8_prefix((const unsigned char *)json, len) == len)
        e = json_tokener_error_parse_unexpected;
    json_object_put(*root);
    *root = NULL;
    return tokener_why(e);
}

int json_etf_decode(ei_x_buff *x, const char *json, size_t len, const char **why)
{
    const char *w = NULL;
    int at = x->index;
    size_t start = len > JSON_ETF_MAX_BYTES ? 0 : skip_ws(json, len);
    if (len > JSON_ETF_MAX_BYTES) {
        w = "too_large";
    } else if (start == len) {
        w = "empty";
    } else {
        json_object *root = NULL;
        w = parse(json, len, &root);
        /* json-c 0.16 reports a failed allocation as success with no
         * object, i.e. as null: only text starting with n may be null. */
        if (w == NULL && root == NULL && json[start] != 'n')
            w = "nomem";
        if (w == NULL && put_value(x, root, 0, &w) != 0 && w == NULL)
            w = "nomem"; /* an ei_x_encode_* failed */
        json_object_put(root);
    }
    if (w != NULL) {
        x->index = at;
        if (why != NULL)
            *why = w;
        return -1;
    }
    return 0;
}
