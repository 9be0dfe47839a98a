/*
 * lst_json.c — the LST endpoint's JSON answer. See lst_json.h.
 */
#include "lst_json.h"

#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define JSON_DEPTH 16 /* the answer is one flat object */

const char *lst_json_status_atom(lst_json_status st)
{
    switch (st) {
    case LST_JSON_OK: return "ok";
    case LST_JSON_NOT_JSON: return "not_json";
    case LST_JSON_MISSING_FIELD: return "missing_field";
    case LST_JSON_BAD_DH: return "bad_dh_response";
    case LST_JSON_BAD_EXPIRATION: return "lst_expiration";
    case LST_JSON_NOMEM: return "nomem";
    }
    return "not_json";
}

void lst_answer_free(lst_answer *a)
{
    if (a == NULL)
        return;
    free(a->dh_response);
    free(a->signature);
    a->dh_response = a->signature = NULL;
}

/* A non-empty string member without NUL bytes, copied: absent is
 * LST_JSON_MISSING_FIELD, present but anything else is bad. */
static lst_json_status get_string(struct json_object *obj, const char *key, lst_json_status bad,
                                  char **out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v))
        return LST_JSON_MISSING_FIELD;
    if (!json_object_is_type(v, json_type_string))
        return bad;
    int n = json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (n <= 0 || s == NULL || memchr(s, '\0', (size_t)n) != NULL)
        return bad;
    if ((*out = malloc((size_t)n + 1)) == NULL)
        return LST_JSON_NOMEM;
    memcpy(*out, s, (size_t)n);
    (*out)[n] = '\0';
    return LST_JSON_OK;
}

/* Decimal digits only, no sign, no overflow. */
static int parse_digits(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 19)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return -1;
    *out = (int64_t)v;
    return 0;
}

static lst_json_status get_expiration(struct json_object *obj, int64_t *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, "live_session_token_expiration", &v))
        return LST_JSON_MISSING_FIELD;
    /* Present: anything but a usable epoch in ms is that field's problem. */
    switch (json_object_get_type(v)) {
    case json_type_int: {
        /* json-c keeps integers above INT64_MAX as uint64; get_int64 would
         * clamp them, so reject those explicitly. */
        int64_t i = json_object_get_int64(v);
        if (i < 0 || (i == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX))
            return LST_JSON_BAD_EXPIRATION;
        *out = i;
        return LST_JSON_OK;
    }
    case json_type_double: {
        double d = json_object_get_double(v);
        /* Integral and exactly representable (some encoders write 1.7e12). */
        if (!(d >= 0.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
            return LST_JSON_BAD_EXPIRATION;
        *out = (int64_t)d;
        return LST_JSON_OK;
    }
    case json_type_string: {
        int n = json_object_get_string_len(v);
        const char *s = json_object_get_string(v);
        if (n <= 0 || s == NULL || parse_digits(s, (size_t)n, out) != 0)
            return LST_JSON_BAD_EXPIRATION;
        return LST_JSON_OK;
    }
    default:
        return LST_JSON_BAD_EXPIRATION;
    }
}

lst_json_status lst_json_parse(const char *buf, size_t len, lst_answer *out)
{
    out->dh_response = out->signature = NULL;
    out->expires_ms = 0;
    if (buf == NULL || len == 0 || len > LST_JSON_MAX || memchr(buf, '\0', len) != NULL)
        return LST_JSON_NOT_JSON;

    struct json_tokener *tok = json_tokener_new_ex(JSON_DEPTH);
    if (tok == NULL)
        return LST_JSON_NOMEM;
    /* Strict: RFC 8259 only, and nothing but whitespace after the value. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *obj = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);

    lst_json_status st = LST_JSON_OK;
    if (obj == NULL || jerr != json_tokener_success) {
        st = LST_JSON_NOT_JSON;
        goto out;
    }
    for (size_t i = end; i < len; i++) {
        char c = buf[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            st = LST_JSON_NOT_JSON;
            goto out;
        }
    }
    if (!json_object_is_type(obj, json_type_object)) {
        st = LST_JSON_MISSING_FIELD;
        goto out;
    }
    if ((st = get_string(obj, "diffie_hellman_response", LST_JSON_BAD_DH, &out->dh_response)) !=
            LST_JSON_OK ||
        (st = get_string(obj, "live_session_token_signature", LST_JSON_MISSING_FIELD,
                         &out->signature)) != LST_JSON_OK ||
        (st = get_expiration(obj, &out->expires_ms)) != LST_JSON_OK) {
        /* fall through to the cleanup */
    }
out:
    json_object_put(obj); /* NULL-safe */
    if (st != LST_JSON_OK)
        lst_answer_free(out);
    return st;
}
