/*
 * etf_args.c — decoding command arguments from a frame already checked by
 * erlcmd_check_term, and the per-command arena their C strings live in.
 */
#include "etf_args.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "erlcmd.h"
#include "http.h"
#include "json_etf.h"

/* ---- arena for C strings of the current command ------------------------------ */

typedef struct chunk {
    struct chunk *next;
    size_t size;
    char data[];
} chunk;

static char g_arena[16 * 1024];
static size_t g_arena_used;
static chunk *g_chunks;

static char *arena_alloc(size_t n)
{
    if (n <= sizeof g_arena - g_arena_used) {
        char *p = g_arena + g_arena_used;
        g_arena_used += n;
        return p;
    }
    chunk *k = malloc(sizeof *k + n);
    if (k == NULL)
        return NULL;
    k->size = n;
    k->next = g_chunks;
    g_chunks = k;
    return k->data;
}

/* Strings may be secrets (access_token_secret, an explicit LST): wiped. */
void arena_reset(void)
{
    OPENSSL_cleanse(g_arena, g_arena_used);
    g_arena_used = 0;
    while (g_chunks != NULL) {
        chunk *k = g_chunks;
        g_chunks = k->next;
        OPENSSL_cleanse(k->data, k->size);
        free(k);
    }
}

/* ---- decoding helpers (on a frame already checked by erlcmd_check_term) ---------- */

int is_integer_type(int t)
{
    return t == ERL_SMALL_INTEGER_EXT || t == ERL_INTEGER_EXT || t == ERL_SMALL_BIG_EXT ||
           t == ERL_LARGE_BIG_EXT;
}

int type_at(const frame *f, int idx, int *type, int *size)
{
    if (idx < 0 || (size_t)idx >= f->len)
        return -1;
    return ei_get_type(f->buf, &idx, type, size);
}

/* An atom into out[ATOM_BUF]; -1 (index unchanged) if not an atom or too long. */
int dec_atom(const frame *f, int *idx, char *out)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || t != ERL_ATOM_EXT)
        return -1;
    return ei_decode_atom_as(f->buf, idx, out, ATOM_BUF, ERLANG_UTF8, NULL, NULL);
}

/* A binary, in place. */
int dec_bin(const frame *f, int *idx, const char **p, size_t *n)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || t != ERL_BINARY_EXT || sz < 0)
        return -1;
    *p = f->buf + *idx + 5;
    *n = (size_t)sz;
    *idx += 5 + sz;
    return 0;
}

/* A binary copied into the arena as a C string; -1 if not a binary or it
 * contains NUL (or no memory). */
int dec_cstr(const frame *f, int *idx, char **out, size_t *outlen)
{
    const char *p;
    size_t n;
    if (dec_bin(f, idx, &p, &n) != 0 || memchr(p, '\0', n) != NULL)
        return -1;
    char *d = arena_alloc(n + 1);
    if (d == NULL)
        return -1;
    memcpy(d, p, n);
    d[n] = '\0';
    *out = d;
    if (outlen != NULL)
        *outlen = n;
    return 0;
}

/* Any term as JSON text (json_etf_encode), moved into the arena so that it
 * goes away with the command's other strings. */
int dec_json(const frame *f, int *idx, const char **out, size_t *outlen, const char **why)
{
    size_t n;
    if (f->len > (size_t)INT_MAX) {
        *why = "badarg";
        return -1;
    }
    char *js = json_etf_encode(f->buf, (int)f->len, idx, &n, why);
    if (js == NULL)
        return -1;
    char *d = arena_alloc(n + 1);
    if (d != NULL)
        memcpy(d, js, n + 1);
    free(js);
    if (d == NULL) {
        *why = "nomem";
        return -1;
    }
    *out = d;
    *outlen = n;
    return 0;
}

int dec_i64(const frame *f, int *idx, long long *v)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || !is_integer_type(t))
        return -1;
    return ei_decode_longlong(f->buf, idx, v);
}

int dec_u64(const frame *f, int *idx, unsigned long long *v)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || !is_integer_type(t))
        return -1;
    return ei_decode_ulonglong(f->buf, idx, v);
}

int dec_bool(const frame *f, int *idx, int *v)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || t != ERL_ATOM_EXT)
        return -1;
    return ei_decode_boolean(f->buf, idx, v);
}

int map_fields(const frame *f, int idx, mfield *fields, size_t nf)
{
    for (size_t i = 0; i < nf; i++)
        fields[i].at = -1;
    int t, sz, arity;
    if (type_at(f, idx, &t, &sz) != 0 || t != ERL_MAP_EXT ||
        ei_decode_map_header(f->buf, &idx, &arity) != 0)
        return -1;
    for (int k = 0; k < arity; k++) {
        char key[ATOM_BUF];
        if (dec_atom(f, &idx, key) == 0) {
            for (size_t i = 0; i < nf; i++)
                if (strcmp(key, fields[i].name) == 0)
                    fields[i].at = idx;
        } else if (erlcmd_skip_term(f->buf, f->len, &idx) != 0) {
            return -1;
        }
        if (erlcmd_skip_term(f->buf, f->len, &idx) != 0)
            return -1;
    }
    return 0;
}

/* ---- pins (lst_request, sign, authenticate) -------------------------------------- */

static int header_safe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\')
            return 0;
    }
    return 1;
}

static int all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    return 1;
}

/* nonce, timestamp and (when dh is set) dh_random from fields[0..2]. Returns
 * NULL, or the name of the bad field. */
const char *get_pins(const frame *f, const mfield *fields, int dh, oauth_pins *pins)
{
    *pins = OAUTH_PINS_NONE;
    int idx;
    if ((idx = fields[0].at) >= 0) {
        char *s;
        size_t n;
        if (dec_cstr(f, &idx, &s, &n) != 0 || n == 0 || n > OAUTH_NONCE_MAX || !header_safe(s, n))
            return "nonce";
        pins->nonce = s;
    }
    if ((idx = fields[1].at) >= 0) {
        long long ts;
        if (dec_i64(f, &idx, &ts) != 0 || ts < 0)
            return "timestamp";
        pins->timestamp = ts;
    }
    if (dh && (idx = fields[2].at) >= 0) {
        char *s;
        size_t n;
        if (dec_cstr(f, &idx, &s, &n) != 0 || n == 0 || n > 128 || !all_hex(s, n))
            return "dh_random";
        pins->dh_random_hex = s;
    }
    return NULL;
}

const char *get_timeout(const frame *f, int at, long *ms)
{
    *ms = HTTP_TIMEOUT_DEFAULT;
    if (at < 0)
        return NULL;
    int t, sz;
    if (type_at(f, at, &t, &sz) == 0 && t == ERL_ATOM_EXT) {
        char a[ATOM_BUF];
        if (dec_atom(f, &at, a) != 0 || strcmp(a, "infinity") != 0)
            return "timeout";
        *ms = HTTP_TIMEOUT_NONE;
        return NULL;
    }
    long long v;
    if (dec_i64(f, &at, &v) != 0 || v < 0 || v > 0x7fffffffLL)
        return "timeout";
    *ms = (long)v;
    return NULL;
}

/* Method: 1..16 ASCII letters (Erlang upper-cases it). */
int dec_method(const frame *f, int *idx, char **out)
{
    size_t n;
    if (dec_cstr(f, idx, out, &n) != 0 || n == 0 || n > 16)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char ch = (*out)[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')))
            return -1;
    }
    return 0;
}

int dec_url(const frame *f, int *idx, char **out)
{
    size_t n;
    return dec_cstr(f, idx, out, &n) != 0 || n == 0 || n > HTTP_URL_MAX ? -1 : 0;
}

