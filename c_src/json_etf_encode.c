/*
 * json_etf_encode.c — an Erlang term (external format) to JSON text
 * (json_etf.h). The term's bytes are read directly, each length checked
 * against the end of the buffer before use, so the input need not have
 * passed erlcmd_check_term (ei's decoders trust their input).
 */
#include "json_etf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "json_etf_internal.h"

/* An open list or map. */
typedef struct {
    int is_map, started; /* started: an element was written (',' before the next) */
    uint32_t left;       /* elements (maps: pairs) still to read */
    size_t first;        /* its keys' spans start at keys[first] (maps) */
} eframe;

typedef struct {
    const unsigned char *buf;
    size_t len, i; /* the term bytes and the read cursor */
    strbuf out;
    const char *why;
    eframe stack[JSON_ETF_MAX_DEPTH];
    int depth;
    je_span *keys; /* JSON text of the keys of the open maps */
    size_t nkeys, capkeys;
} je;

#define FAIL(e, w) ((e)->why = (w), -1)
#define BADARG(e) FAIL(e, "badarg")

static int need(je *e, size_t n)
{
    return e->len - e->i >= n ? 0 : BADARG(e);
}

static int put(je *e, const void *p, size_t n)
{
    return strbuf_append(&e->out, p, n) == 0 ? 0 : FAIL(e, "nomem");
}

static int puts_(je *e, const char *s)
{
    return put(e, s, strlen(s));
}

/* ---- strings ------------------------------------------------------------------------ */

/* s[0..n) (valid UTF-8) as a JSON string: UTF-8 kept, '"', '\' and the
 * control characters escaped. */
static int put_string(je *e, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (put(e, "\"", 1) != 0)
        return -1;
    size_t run = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned char c = s[k];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[6] = {'\\', 0, '0', '0', hex[c >> 4], hex[c & 15]};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            elen = 6;
        }
        if (put(e, s + run, k - run) != 0 || put(e, esc, elen) != 0)
            return -1;
        run = k + 1;
    }
    return put(e, s + run, n - run) == 0 && put(e, "\"", 1) == 0 ? 0 : -1;
}

/* An atom's name (Latin-1 for the old tags, UTF-8 for the new) as UTF-8. */
static int atom_name(je *e, unsigned char tag, unsigned char *name, size_t *n)
{
    size_t len;
    int latin1 = tag == JE_ATOM || tag == JE_SMALL_ATOM;
    if (tag == JE_ATOM || tag == JE_ATOM_UTF8) {
        if (need(e, 2) != 0)
            return -1;
        len = (size_t)e->buf[e->i] << 8 | e->buf[e->i + 1];
        e->i += 2;
    } else {
        if (need(e, 1) != 0)
            return -1;
        len = e->buf[e->i++];
    }
    /* At most 255 characters (the BEAM's limit), so name[] holds 4 * 255. */
    if (len > (latin1 ? 255 : 255 * 4) || need(e, len) != 0)
        return BADARG(e);
    const unsigned char *p = e->buf + e->i;
    e->i += len;
    if (!latin1) {
        if (je_utf8_valid(p, len) != len)
            return BADARG(e);
        memcpy(name, p, len);
        *n = len;
        return 0;
    }
    size_t o = 0;
    for (size_t k = 0; k < len; k++) {
        if (p[k] < 0x80) {
            name[o++] = p[k];
        } else {
            name[o++] = (unsigned char)(0xC0 | p[k] >> 6);
            name[o++] = (unsigned char)(0x80 | (p[k] & 0x3F));
        }
    }
    *n = o;
    return 0;
}

static int is_atom_tag(unsigned char t)
{
    return t == JE_ATOM || t == JE_SMALL_ATOM || t == JE_ATOM_UTF8 || t == JE_SMALL_ATOM_UTF8;
}

/* ---- numbers ------------------------------------------------------------------------ */

static int put_i64(je *e, long long v)
{
    char s[24];
    int n = snprintf(s, sizeof s, "%lld", v);
    return put(e, s, (size_t)n);
}

/* A bignum: n magnitude bytes, little-endian, at e->buf[e->i]. */
static int put_big(je *e, size_t n, int negative)
{
    enum { LIMBS = JSON_ETF_MAX_BIG_BYTES / 4 + 1 };
    if (n > JSON_ETF_MAX_BIG_BYTES || need(e, n) != 0)
        return BADARG(e);
    const unsigned char *p = e->buf + e->i;
    e->i += n;
    uint32_t limb[LIMBS] = {0};
    size_t used = (n + 3) / 4;
    for (size_t k = 0; k < n; k++)
        limb[k / 4] |= (uint32_t)p[k] << (8 * (k % 4));
    while (used > 0 && limb[used - 1] == 0)
        used--;
    /* Base 10^9 chunks, least significant first: 9 digits each. */
    uint32_t chunk[LIMBS * 10 / 9 + 2];
    size_t nchunk = 0;
    while (used > 0) {
        uint64_t rem = 0;
        for (size_t j = used; j-- > 0;) {
            uint64_t cur = rem << 32 | limb[j];
            limb[j] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        chunk[nchunk++] = (uint32_t)rem;
        while (used > 0 && limb[used - 1] == 0)
            used--;
    }
    if (nchunk == 0)
        return put(e, "0", 1);
    char s[16];
    int len = snprintf(s, sizeof s, "%s%u", negative ? "-" : "", chunk[nchunk - 1]);
    if (put(e, s, (size_t)len) != 0)
        return -1;
    for (size_t j = nchunk - 1; j-- > 0;) {
        len = snprintf(s, sizeof s, "%09u", chunk[j]);
        if (put(e, s, (size_t)len) != 0)
            return -1;
    }
    return 0;
}

/* The shortest digits that read back as the same double (precision 1..17
 * of %e), laid out as JavaScript does: fixed notation for decimal exponents
 * -7 < e < 21, else d.ddde+X; ".0" is added to an integral fixed form so
 * that it reads back as a float (1.0, not 1). */
static int put_double(je *e, double v)
{
    if (!isfinite(v))
        return BADARG(e);
    char s[40];
    for (int prec = 0; prec <= 16; prec++) {
        (void)snprintf(s, sizeof s, "%.*e", prec, fabs(v));
        if (strtod(s, NULL) == fabs(v))
            break;
    }
    /* s is "d.ddde+XX" or "de+XX": the digits D and the point position n
     * (value = 0.D * 10^n). */
    char dig[20] = {'0'};
    size_t k = 0;
    const char *c = s;
    for (; *c != 'e'; c++)
        if (*c != '.')
            dig[k++] = *c;
    long n = strtol(c + 1, NULL, 10) + 1;
    while (k > 1 && dig[k - 1] == '0')
        k--;
    char out[48];
    size_t o = 0;
    if (signbit(v))
        out[o++] = '-';
    if ((long)k <= n && n <= 21) {
        memcpy(out + o, dig, k);
        o += k;
        for (long z = n - (long)k; z > 0; z--)
            out[o++] = '0';
        out[o++] = '.';
        out[o++] = '0';
    } else if (0 < n && n < (long)k) {
        memcpy(out + o, dig, (size_t)n);
        o += (size_t)n;
        out[o++] = '.';
        memcpy(out + o, dig + n, k - (size_t)n);
        o += k - (size_t)n;
    } else if (-6 < n && n <= 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (long z = n; z < 0; z++)
            out[o++] = '0';
        memcpy(out + o, dig, k);
        o += k;
    } else {
        out[o++] = dig[0];
        if (k > 1) {
            out[o++] = '.';
            memcpy(out + o, dig + 1, k - 1);
            o += k - 1;
        }
        o += (size_t)snprintf(out + o, sizeof out - o, "e%+ld", n - 1);
    }
    return put(e, out, o);
}

/* ---- terms -------------------------------------------------------------------------- */

static int push_key(je *e, long start)
{
    if (e->nkeys == e->capkeys) {
        size_t cap = e->capkeys ? e->capkeys * 2 : 64;
        je_span *k = realloc(e->keys, cap * sizeof *k);
        if (k == NULL)
            return FAIL(e, "nomem");
        e->keys = k;
        e->capkeys = cap;
    }
    e->keys[e->nkeys++] = (je_span){start, (long)e->out.len};
    return 0;
}

static int by_text(const je_span *a, const je_span *b, const void *ctx)
{
    const char *base = ctx;
    size_t la = (size_t)(a->end - a->start), lb = (size_t)(b->end - b->start);
    int c = memcmp(base + a->start, base + b->start, la < lb ? la : lb);
    return c != 0 ? c : (la > lb) - (la < lb);
}

/* A key: a binary (UTF-8) or any atom, as a JSON string, then ':'. */
static int key(je *e)
{
    long start = (long)e->out.len;
    int rc;
    if (need(e, 1) != 0)
        return -1;
    unsigned char tag = e->buf[e->i++];
    if (is_atom_tag(tag)) {
        unsigned char name[255 * 4];
        size_t n;
        rc = atom_name(e, tag, name, &n) == 0 ? put_string(e, name, n) : -1;
    } else {
        if (tag != JE_BINARY || need(e, 4) != 0)
            return BADARG(e);
        size_t n = je_get32(e->buf + e->i);
        e->i += 4;
        if (need(e, n) != 0 || je_utf8_valid(e->buf + e->i, n) != n)
            return BADARG(e);
        e->i += n;
        rc = put_string(e, e->buf + e->i - n, n);
    }
    return rc == 0 && push_key(e, start) == 0 ? put(e, ":", 1) : -1;
}

/* Opens a list or map: pushed, its bracket written. */
static int open_container(je *e, unsigned char tag)
{
    if (need(e, 4) != 0)
        return -1;
    if (e->depth == JSON_ETF_MAX_DEPTH)
        return FAIL(e, "depth");
    eframe *f = &e->stack[e->depth++];
    f->is_map = tag == JE_MAP;
    f->left = je_get32(e->buf + e->i);
    f->started = 0;
    f->first = e->nkeys;
    e->i += 4;
    return put(e, f->is_map ? "{" : "[", 1);
}

/* Closes the innermost container, all of its elements written. */
static int close_container(je *e)
{
    eframe *f = &e->stack[--e->depth];
    if (!f->is_map) {
        /* Proper lists only: the tail is []. */
        if (need(e, 1) != 0 || e->buf[e->i++] != JE_NIL)
            return BADARG(e);
        return put(e, "]", 1);
    }
    /* The same JSON name twice (<<"a">> and a, or a malformed map). */
    size_t n = e->nkeys - f->first;
    if (n > 1) {
        je_span *m = e->keys + f->first;
        je_sort(m, n, by_text, e->out.data);
        for (size_t k = 0; k + 1 < n; k++)
            if (by_text(&m[k], &m[k + 1], e->out.data) == 0)
                return BADARG(e);
    }
    e->nkeys = f->first;
    return put(e, "}", 1);
}

static int atom_value(je *e, unsigned char tag)
{
    static const char *const lit[] = {"true", "false", "null"};
    unsigned char name[255 * 4];
    size_t n;
    if (atom_name(e, tag, name, &n) != 0)
        return -1;
    for (size_t k = 0; k < sizeof lit / sizeof lit[0]; k++)
        if (n == strlen(lit[k]) && memcmp(name, lit[k], n) == 0)
            return puts_(e, lit[k]);
    return BADARG(e);
}

/* A scalar, written, or a list or map, opened. */
static int value_start(je *e)
{
    if (need(e, 1) != 0)
        return -1;
    unsigned char tag = e->buf[e->i++];
    const unsigned char *p = e->buf + e->i;
    switch (tag) {
    case JE_SMALL_INT:
        if (need(e, 1) != 0)
            return -1;
        e->i++;
        return put_i64(e, p[0]);
    case JE_INT: {
        if (need(e, 4) != 0)
            return -1;
        e->i += 4;
        uint32_t u = je_get32(p); /* two's complement, without an implementation-defined cast */
        return put_i64(e, (long long)u - (u & 0x80000000u ? 0x100000000LL : 0));
    }
    case JE_SMALL_BIG:
    case JE_LARGE_BIG: {
        size_t hl = tag == JE_SMALL_BIG ? 1 : 4;
        if (need(e, hl + 1) != 0)
            return -1;
        size_t n = hl == 1 ? p[0] : je_get32(p);
        unsigned char sign = p[hl];
        e->i += hl + 1;
        return sign > 1 ? BADARG(e) : put_big(e, n, sign);
    }
    case JE_NEW_FLOAT: {
        if (need(e, 8) != 0)
            return -1;
        uint64_t bits = (uint64_t)je_get32(p) << 32 | je_get32(p + 4);
        double v;
        memcpy(&v, &bits, sizeof v);
        e->i += 8;
        return put_double(e, v);
    }
    case JE_BINARY: {
        if (need(e, 4) != 0)
            return -1;
        size_t n = je_get32(p);
        e->i += 4;
        if (need(e, n) != 0 || je_utf8_valid(p + 4, n) != n)
            return BADARG(e);
        e->i += n;
        return put_string(e, p + 4, n);
    }
    case JE_NIL:
        return put(e, "[]", 2);
    case JE_STRING: { /* a list of bytes */
        if (need(e, 2) != 0)
            return -1;
        size_t n = (size_t)p[0] << 8 | p[1];
        e->i += 2;
        if (need(e, n) != 0 || put(e, "[", 1) != 0)
            return -1;
        for (size_t k = 0; k < n; k++)
            if ((k > 0 && put(e, ",", 1) != 0) || put_i64(e, p[2 + k]) != 0)
                return -1;
        e->i += n;
        return put(e, "]", 1);
    }
    case JE_LIST:
    case JE_MAP:
        return open_container(e, tag);
    default:
        return is_atom_tag(tag) ? atom_value(e, tag) : BADARG(e);
    }
}

/* One term with everything nested in it, iteratively: an explicit stack of
 * open containers, so depth costs no C stack. */
static int encode(je *e)
{
    for (;;) {
        if (value_start(e) != 0)
            return -1;
        /* Close the containers that have no element left... */
        for (;;) {
            if (e->depth == 0)
                return 0;
            if (e->stack[e->depth - 1].left > 0)
                break;
            if (close_container(e) != 0)
                return -1;
        }
        /* ...then on to the next element of the innermost one. */
        eframe *f = &e->stack[e->depth - 1];
        f->left--;
        if (f->started && put(e, ",", 1) != 0)
            return -1;
        f->started = 1;
        if (f->is_map && key(e) != 0)
            return -1;
    }
}

char *json_etf_encode(const char *buf, int buf_len, int *index, size_t *out_len, const char **why)
{
    je e = {.buf = (const unsigned char *)buf, .out = STRBUF_INIT};
    char *s = NULL;
    size_t n = 0;
    if (buf == NULL || index == NULL || buf_len < 0 || *index < 0 || *index > buf_len) {
        e.why = "badarg";
    } else {
        e.len = (size_t)buf_len;
        e.i = (size_t)*index;
        /* Reserve once so that "[]" and friends still get a buffer. */
        if (strbuf_reserve(&e.out, 64) == 0 && encode(&e) == 0) {
            n = e.out.len;
            s = strbuf_release(&e.out);
        }
        if (s == NULL && e.why == NULL)
            e.why = "nomem";
    }
    strbuf_free(&e.out);
    free(e.keys);
    if (s == NULL) {
        if (why != NULL)
            *why = e.why;
        return NULL;
    }
    if (out_len != NULL)
        *out_len = n;
    *index = (int)e.i;
    return s;
}
