/*
 * json_etf_encode.c — an Erlang term (external format) to JSON text
 * (json_etf.h): the term is bounded first (erlcmd_skip_term checks every
 * length against buf_len; ei's decoders trust their input), read with ei
 * into a json-c tree, and json-c writes the text.
 */
#include "json_etf.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "codec.h"
#include "erlcmd.h"

typedef struct {
    const char *buf; /* one well-formed term from *index on */
    const char *why; /* "badarg" until a FAIL says otherwise */
} enc;

#define FAIL(e, w) ((e)->why = (w), -1)
#define BADARG(e) FAIL(e, "badarg")
#define NOMEM(e) FAIL(e, "nomem")

/* value, map and list recurse, one level per list or map, at most
 * JSON_ETF_MAX_DEPTH deep (NOLINTs below). */
static int value(enc *e, int *i, int depth, json_object **out);

static int is_atom(unsigned char tag)
{
    return tag == ERL_ATOM_EXT || tag == ERL_SMALL_ATOM_EXT || tag == ERL_ATOM_UTF8_EXT ||
           tag == ERL_SMALL_ATOM_UTF8_EXT;
}

/* The same range as decoding: strictly inside int64 .. uint64, since
 * json-c clamps to the ends. A bignum's sign byte must be 0 or 1 (ei takes
 * any non-zero as negative). */
static int integer(enc *e, int *i, json_object **out)
{
    unsigned char tag = (unsigned char)e->buf[*i];
    if ((tag == ERL_SMALL_BIG_EXT && (unsigned char)e->buf[*i + 2] > 1) ||
        (tag == ERL_LARGE_BIG_EXT && (unsigned char)e->buf[*i + 5] > 1))
        return BADARG(e);
    long long v;
    unsigned long long u;
    int j = *i;
    if (ei_decode_longlong(e->buf, &j, &v) == 0) {
        if (v == INT64_MIN)
            return BADARG(e);
        *out = json_object_new_int64(v);
    } else if (j = *i, ei_decode_ulonglong(e->buf, &j, &u) == 0) {
        if (u == UINT64_MAX)
            return BADARG(e);
        *out = json_object_new_uint64(u);
    } else {
        return BADARG(e);
    }
    *i = j;
    return *out != NULL ? 0 : NOMEM(e);
}

/* The fewest digits that read back as d (printf's %g: 1.5e-07, 100.0),
 * given to json-c as the number's text; json-c's own %.17g would write 0.1
 * as 0.10000000000000001. For a normal double, %.15g is the shortest when
 * it reads back; subnormals have fewer digits. */
static int float_value(enc *e, int *i, json_object **out)
{
    double d;
    if (ei_decode_double(e->buf, i, &d) != 0 || !isfinite(d))
        return BADARG(e);
    char s[40];
    int prec = fabs(d) < DBL_MIN ? 1 : 15;
    for (; prec < 17; prec++) {
        (void)snprintf(s, sizeof s, "%.*g", prec, d);
        if (strtod(s, NULL) == d)
            break;
    }
    if (prec == 17)
        (void)snprintf(s, sizeof s, "%.17g", d);
    if (strpbrk(s, ".e") == NULL) /* so that it reads back as a float */
        memcpy(s + strlen(s), ".0", 3);
    *out = json_object_new_double_s(d, s);
    return *out != NULL ? 0 : NOMEM(e);
}

/* true, false or null (*out = NULL, json-c's null). */
static int atom_value(enc *e, int *i, json_object **out)
{
    char a[MAXATOMLEN_UTF8];
    if (ei_decode_atom_as(e->buf, i, a, sizeof a, ERLANG_UTF8, NULL, NULL) != 0)
        return BADARG(e);
    if (strcmp(a, "null") == 0) {
        *out = NULL;
        return 0;
    }
    if (strcmp(a, "true") != 0 && strcmp(a, "false") != 0)
        return BADARG(e);
    *out = json_object_new_boolean(a[0] == 't');
    return *out != NULL ? 0 : NOMEM(e);
}

/* A binary's bytes in place: *p, *n. */
static int binary(enc *e, int *i, const char **p, size_t *n)
{
    long len;
    if (ei_decode_binary(e->buf, i, NULL, &len) != 0)
        return BADARG(e);
    *p = e->buf + *i - len;
    *n = (size_t)len;
    return codec_utf8_prefix((const unsigned char *)*p, *n) == *n ? 0 : BADARG(e);
}

/* A map key, binary or atom, as a NUL-terminated name in key[] (cap bytes)
 * or a malloc'd copy (*heap). json-c's keys are C strings, so a NUL byte
 * in a key is refused. */
static int key_name(enc *e, int *i, char *key, size_t cap, char **heap, const char **name)
{
    unsigned char tag = (unsigned char)e->buf[*i];
    *heap = NULL;
    if (is_atom(tag)) {
        /* name bytes after the tag and a 1- or 2-byte length */
        int type, size, hdr = tag == ERL_SMALL_ATOM_EXT || tag == ERL_SMALL_ATOM_UTF8_EXT ? 2 : 3;
        if (ei_get_type(e->buf, i, &type, &size) != 0 ||
            memchr(e->buf + *i + hdr, '\0', (size_t)size) != NULL || cap < MAXATOMLEN_UTF8 ||
            ei_decode_atom_as(e->buf, i, key, MAXATOMLEN_UTF8, ERLANG_UTF8, NULL, NULL) != 0 ||
            codec_utf8_prefix((const unsigned char *)key, strlen(key)) != strlen(key))
            return BADARG(e); /* ei takes a UTF-8 atom's bytes as they are */
        *name = key;
        return 0;
    }
    const char *p;
    size_t n;
    if (tag != ERL_BINARY_EXT || binary(e, i, &p, &n) != 0 || memchr(p, '\0', n) != NULL)
        return BADARG(e);
    if (n >= cap && (key = *heap = malloc(n + 1)) == NULL)
        return NOMEM(e);
    memcpy(key, p, n);
    key[n] = '\0';
    *name = key;
    return 0;
}

static int map(enc *e, int *i, int depth, json_object *obj) // NOLINT(misc-no-recursion)
{
    int n;
    if (ei_decode_map_header(e->buf, i, &n) != 0)
        return BADARG(e);
    for (int k = 0; k < n; k++) {
        char small[MAXATOMLEN_UTF8], *heap;
        const char *name;
        json_object *v = NULL;
        int rc = key_name(e, i, small, sizeof small, &heap, &name);
        if (rc == 0 && json_object_object_get_ex(obj, name, NULL))
            rc = BADARG(e); /* two keys, one JSON name (<<"a">> and a) */
        if (rc == 0)
            rc = value(e, i, depth + 1, &v);
        if (rc == 0 && json_object_object_add(obj, name, v) != 0) {
            json_object_put(v);
            rc = NOMEM(e);
        }
        free(heap);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* A proper list, or a string (a list of bytes, STRING_EXT), into arr. */
static int list(enc *e, int *i, int depth, json_object *arr) // NOLINT(misc-no-recursion)
{
    if (e->buf[*i] == ERL_STRING_EXT) {
        int type, n;
        if (ei_get_type(e->buf, i, &type, &n) != 0)
            return BADARG(e);
        const unsigned char *p = (const unsigned char *)e->buf + *i + 3;
        for (int k = 0; k < n; k++) {
            json_object *v = json_object_new_int(p[k]);
            if (v == NULL || json_object_array_add(arr, v) != 0) {
                json_object_put(v);
                return NOMEM(e);
            }
        }
        *i += 3 + n;
        return 0;
    }
    int n;
    if (ei_decode_list_header(e->buf, i, &n) != 0)
        return BADARG(e);
    for (int k = 0; k < n; k++) {
        json_object *v = NULL;
        if (value(e, i, depth + 1, &v) != 0)
            return -1;
        if (json_object_array_add(arr, v) != 0) {
            json_object_put(v);
            return NOMEM(e);
        }
    }
    if (n > 0 && ei_decode_list_header(e->buf, i, &n) != 0) /* the tail: [] only */
        return BADARG(e);
    return n == 0 ? 0 : BADARG(e);
}

/* The term at *i as a new json-c value (*out: NULL is null). depth counts
 * the lists and maps around it: recursion is bounded by it. */
static int value(enc *e, int *i, int depth, json_object **out) // NOLINT(misc-no-recursion)
{
    *out = NULL;
    switch ((unsigned char)e->buf[*i]) {
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT:
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT:
        return integer(e, i, out);
    case NEW_FLOAT_EXT:
        return float_value(e, i, out);
    case ERL_BINARY_EXT: {
        const char *p;
        size_t n;
        if (binary(e, i, &p, &n) != 0)
            return -1;
        *out = json_object_new_string_len(p, (int)n); /* n < buf_len <= INT_MAX */
        return *out != NULL ? 0 : NOMEM(e);
    }
    case ERL_NIL_EXT:
    case ERL_STRING_EXT:
    case ERL_LIST_EXT:
    case ERL_MAP_EXT:
        break;
    default:
        return is_atom((unsigned char)e->buf[*i]) ? atom_value(e, i, out) : BADARG(e);
    }
    if (depth == JSON_ETF_MAX_DEPTH)
        return FAIL(e, "depth");
    int is_map = e->buf[*i] == ERL_MAP_EXT;
    *out = is_map ? json_object_new_object() : json_object_new_array();
    if (*out == NULL)
        return NOMEM(e);
    if ((is_map ? map(e, i, depth, *out) : list(e, i, depth, *out)) == 0)
        return 0;
    json_object_put(*out);
    *out = NULL;
    return -1;
}

char *json_etf_encode(const char *buf, int buf_len, int *index, size_t *out_len, const char **why)
{
    enc e = {.buf = buf, .why = "badarg"};
    char *s = NULL;
    size_t n = 0;
    json_object *root = NULL;
    int i = index != NULL ? *index : -1, end = i;
    /* ei then reads exactly the bytes erlcmd_skip_term bounded */
    if (buf != NULL && index != NULL && buf_len >= 0 &&
        erlcmd_skip_term(buf, (size_t)buf_len, &end) == 0 && value(&e, &i, 0, &root) == 0 &&
        i == end) {
        const char *js = json_object_to_json_string_length(
            root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        if (js != NULL && (s = malloc(n + 1)) != NULL)
            memcpy(s, js, n + 1);
        e.why = "nomem";
    }
    json_object_put(root);
    if (s == NULL) {
        if (why != NULL)
            *why = e.why;
        return NULL;
    }
    if (out_len != NULL)
        *out_len = n;
    *index = end;
    return s;
}
