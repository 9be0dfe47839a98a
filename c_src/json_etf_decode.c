/*
 * json_etf_decode.c — JSON text to an Erlang term (json_etf.h): a strict
 * parser (iterative, with an explicit stack of open containers) writing the
 * external format straight into the caller's ei_x_buff.
 *
 * Not json-c: its 0.16 strict mode still accepts NaN, Infinity and "1.",
 * silently clamps integers beyond 64 bits, truncates keys at \u0000 and lets
 * overlong and surrogate UTF-8 through, each of which would hand Erlang a
 * term that is not what the text says.
 *
 * Lists and maps are written with a 4-byte count placeholder that is
 * patched once the elements are known. Object members are recorded as
 * spans on a stack shared by all open objects; an object with a duplicate
 * key is compacted afterwards (last one wins).
 */
#include "json_etf.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_etf_internal.h"

/* An open array or object. */
typedef struct {
    int at;         /* index of its header (count patched when it closes) */
    int is_obj;
    uint32_t count; /* values so far */
    size_t first;   /* its members' spans start at mem[first] (objects) */
    long member;    /* where the member being parsed starts (objects) */
} jframe;

typedef struct {
    const unsigned char *p, *end;
    ei_x_buff *x;
    const char *why;
    jframe stack[JSON_ETF_MAX_DEPTH];
    int depth;
    je_span *mem; /* members of the open objects, innermost last */
    size_t nmem, capmem;
} jd;

#define FAIL(d, w) ((d)->why = (w), -1)

static int put(jd *d, const void *p, size_t n)
{
    if (n > INT_MAX || ei_x_append_buf(d->x, p, (int)n) != 0)
        return FAIL(d, "nomem");
    return 0;
}

static void skip_ws(jd *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

/* Writes tag + 4-byte placeholder; returns its index via *at. */
static int put_header(jd *d, unsigned char tag, int *at)
{
    unsigned char h[5] = {tag, 0, 0, 0, 0};
    *at = d->x->index;
    return put(d, h, sizeof h);
}

static void patch32(jd *d, int at, uint32_t v)
{
    je_put32((unsigned char *)d->x->buff + at + 1, v);
}

/* ---- strings ------------------------------------------------------------------------ */

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], h;
        if (c >= '0' && c <= '9')
            h = c - '0';
        else if (c >= 'a' && c <= 'f')
            h = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            h = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | h;
    }
    *out = v;
    return 0;
}

/* A \u escape at d->p (after the backslash and 'u'), with its low
 * surrogate when it is a high one, as UTF-8 into out. Length, or -1. */
static int unicode_escape(jd *d, unsigned char out[4])
{
    unsigned cp, lo;
    if (d->end - d->p < 4 || hex4(d->p, &cp) != 0)
        return FAIL(d, "syntax");
    d->p += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return FAIL(d, "utf8");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (d->end - d->p < 6 || d->p[0] != '\\' || d->p[1] != 'u')
            return FAIL(d, "utf8");
        if (hex4(d->p + 2, &lo) != 0)
            return FAIL(d, "syntax");
        if (lo < 0xDC00 || lo > 0xDFFF)
            return FAIL(d, "utf8");
        d->p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string at d->p (the opening quote) as a binary: runs of plain bytes are
 * copied as they stand (UTF-8 checked), escapes decoded one by one. */
static int string(jd *d)
{
    int at;
    if (put_header(d, JE_BINARY, &at) != 0)
        return -1;
    d->p++;
    for (;;) {
        const unsigned char *run = d->p;
        while (d->p < d->end && *d->p != '"' && *d->p != '\\' && *d->p >= 0x20)
            d->p++;
        size_t n = (size_t)(d->p - run);
        if (je_utf8_valid(run, n) != n)
            return FAIL(d, "utf8");
        if (n > 0 && put(d, run, n) != 0)
            return -1;
        if (d->p == d->end || *d->p < 0x20)
            return FAIL(d, "syntax");
        if (*d->p++ == '"')
            break;
        if (d->p == d->end)
            return FAIL(d, "syntax");
        unsigned char e[4];
        int len = 1;
        switch (*d->p++) {
        case '"': e[0] = '"'; break;
        case '\\': e[0] = '\\'; break;
        case '/': e[0] = '/'; break;
        case 'b': e[0] = '\b'; break;
        case 'f': e[0] = '\f'; break;
        case 'n': e[0] = '\n'; break;
        case 'r': e[0] = '\r'; break;
        case 't': e[0] = '\t'; break;
        case 'u':
            if ((len = unicode_escape(d, e)) < 0)
                return -1;
            break;
        default:
            return FAIL(d, "syntax");
        }
        if (put(d, e, (size_t)len) != 0)
            return -1;
    }
    /* Within JSON_ETF_MAX_BYTES, so it fits the 32-bit length. */
    patch32(d, at, (uint32_t)(d->x->index - at - 5));
    return 0;
}

/* ---- numbers ------------------------------------------------------------------------ */

static int digits(jd *d)
{
    const unsigned char *s = d->p;
    while (d->p < d->end && *d->p >= '0' && *d->p <= '9')
        d->p++;
    return d->p > s ? 0 : FAIL(d, "syntax");
}

/* Decimal digits s[0..n) (no sign) as a bignum: SMALL_BIG_EXT, magnitude in
 * little-endian bytes. Built in base 2^32 limbs, 9 digits at a time. */
static int bignum(jd *d, const unsigned char *s, size_t n, int negative)
{
    enum { LIMBS = JSON_ETF_MAX_BIG_BYTES / 4 + 1 };
    /* 10^k <= 2^(8*MAX_BIG_BYTES) needs k <= 8*168*log10(2) = 404.6 */
    if (n > 405)
        return FAIL(d, "number");
    uint32_t limb[LIMBS] = {0};
    size_t used = 0;
    for (size_t i = 0; i < n;) {
        uint32_t chunk = 0, mul = 1;
        for (int k = 0; k < 9 && i < n; k++, i++) {
            chunk = chunk * 10 + (uint32_t)(s[i] - '0');
            mul *= 10;
        }
        uint64_t carry = chunk;
        for (size_t j = 0; j < used; j++) {
            uint64_t t = (uint64_t)limb[j] * mul + carry;
            limb[j] = (uint32_t)t;
            carry = t >> 32;
        }
        if (carry != 0) {
            if (used == LIMBS)
                return FAIL(d, "number");
            limb[used++] = (uint32_t)carry;
        }
    }
    unsigned char out[3 + LIMBS * 4];
    size_t nb = used * 4;
    for (size_t j = 0; j < nb; j++)
        out[3 + j] = (unsigned char)(limb[j / 4] >> (8 * (j % 4)));
    while (nb > 0 && out[3 + nb - 1] == 0)
        nb--;
    if (nb > JSON_ETF_MAX_BIG_BYTES)
        return FAIL(d, "number");
    out[0] = JE_SMALL_BIG;
    out[1] = (unsigned char)nb;
    out[2] = (unsigned char)negative;
    return put(d, out, 3 + nb);
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int number(jd *d)
{
    const unsigned char *start = d->p;
    int negative = 0, is_float = 0;
    if (*d->p == '-') {
        negative = 1;
        d->p++;
    }
    const unsigned char *int_start = d->p;
    if (d->p < d->end && *d->p == '0')
        d->p++;
    else if (digits(d) != 0)
        return -1;
    const unsigned char *int_end = d->p;
    if (d->p < d->end && *d->p == '.') {
        d->p++;
        if (digits(d) != 0)
            return -1;
        is_float = 1;
    }
    if (d->p < d->end && (*d->p == 'e' || *d->p == 'E')) {
        d->p++;
        if (d->p < d->end && (*d->p == '+' || *d->p == '-'))
            d->p++;
        if (digits(d) != 0)
            return -1;
        is_float = 1;
    }
    if (!is_float) {
        size_t n = (size_t)(int_end - int_start);
        if (n > 20)
            return bignum(d, int_start, n, negative);
        uint64_t v = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned dig = int_start[i] - '0';
            if (v > (UINT64_MAX - dig) / 10)
                return bignum(d, int_start, n, negative);
            v = v * 10 + dig;
        }
        int rc;
        if (!negative)
            rc = ei_x_encode_ulonglong(d->x, v);
        else if (v <= (uint64_t)INT64_MAX + 1)
            rc = ei_x_encode_longlong(d->x, v == 0 ? 0 : -(long long)(v - 1) - 1);
        else
            return bignum(d, int_start, n, negative);
        return rc == 0 ? 0 : FAIL(d, "nomem");
    }
    /* strtod wants a terminated copy; the port never calls setlocale, so
     * the decimal point is '.'. */
    size_t n = (size_t)(d->p - start);
    char small[64], *buf = n < sizeof small ? small : malloc(n + 1);
    if (buf == NULL)
        return FAIL(d, "nomem");
    memcpy(buf, start, n);
    buf[n] = '\0';
    errno = 0;
    double v = strtod(buf, NULL);
    if (buf != small)
        free(buf);
    if (!isfinite(v))
        return FAIL(d, "number");
    return ei_x_encode_double(d->x, v) == 0 ? 0 : FAIL(d, "nomem");
}

/* ---- containers --------------------------------------------------------------------- */

static int literal(jd *d, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return FAIL(d, "syntax");
    d->p += n;
    return ei_x_encode_atom(d->x, word) == 0 ? 0 : FAIL(d, "nomem");
}

static int push_member(jd *d, long start, long end)
{
    if (d->nmem == d->capmem) {
        size_t cap = d->capmem ? d->capmem * 2 : 64;
        je_span *m = realloc(d->mem, cap * sizeof *m);
        if (m == NULL)
            return FAIL(d, "nomem");
        d->mem = m;
        d->capmem = cap;
    }
    d->mem[d->nmem++] = (je_span){start, end};
    return 0;
}

/* Members by key bytes (the BINARY_EXT at the span's start), then by
 * position, so the last of equal keys sorts last. */
static int by_key(const je_span *a, const je_span *b, const void *ctx)
{
    const unsigned char *base = ctx;
    uint32_t la = je_get32(base + a->start + 1), lb = je_get32(base + b->start + 1);
    int c = memcmp(base + a->start + 5, base + b->start + 5, la < lb ? la : lb);
    if (c == 0 && la != lb)
        c = la < lb ? -1 : 1;
    if (c == 0)
        c = a->start < b->start ? -1 : a->start > b->start;
    return c;
}

static int by_start(const je_span *a, const je_span *b, const void *ctx)
{
    (void)ctx;
    return a->start < b->start ? -1 : a->start > b->start;
}

/* The members m[0..n) of the object whose header is at `at`: drops all but
 * the last of each duplicate key and returns the remaining count. */
static uint32_t dedup(jd *d, int at, je_span *m, size_t n)
{
    const unsigned char *base = (const unsigned char *)d->x->buff;
    je_sort(m, n, by_key, base);
    size_t dropped = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t la = je_get32(base + m[i].start + 1);
        if (la == je_get32(base + m[i + 1].start + 1) &&
            memcmp(base + m[i].start + 5, base + m[i + 1].start + 5, la) == 0) {
            m[i].start = -1;
            dropped++;
        }
    }
    if (dropped == 0)
        return (uint32_t)n;
    je_sort(m, n, by_start, NULL);
    /* Kept members in their original order, each moved down over the gaps
     * (the first member starts right after the 5-byte map header). */
    long dst = (long)at + 5;
    for (size_t i = dropped; i < n; i++) {
        if (dst != m[i].start)
            memmove(d->x->buff + dst, d->x->buff + m[i].start, (size_t)(m[i].end - m[i].start));
        dst += m[i].end - m[i].start;
    }
    d->x->index = (int)dst;
    return (uint32_t)(n - dropped);
}

/* A scalar at d->p, or the opening of a container (then pushed, *opened). */
static int value_start(jd *d, int *opened)
{
    *opened = 0;
    if (d->p == d->end)
        return FAIL(d, "syntax");
    switch (*d->p) {
    case '{':
    case '[': {
        if (d->depth == JSON_ETF_MAX_DEPTH)
            return FAIL(d, "depth");
        jframe *f = &d->stack[d->depth++];
        f->is_obj = *d->p == '{';
        f->count = 0;
        f->first = d->nmem;
        d->p++;
        *opened = 1;
        return put_header(d, f->is_obj ? JE_MAP : JE_LIST, &f->at);
    }
    case '"': return string(d);
    case 't': return literal(d, "true");
    case 'f': return literal(d, "false");
    case 'n': return literal(d, "null");
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return number(d);
        return FAIL(d, "syntax");
    }
}

/* An object member's key and colon; notes where the member starts. */
static int member_key(jd *d, jframe *f)
{
    f->member = d->x->index;
    if (d->p == d->end || *d->p != '"')
        return FAIL(d, "syntax");
    if (string(d) != 0)
        return -1;
    skip_ws(d);
    if (d->p == d->end || *d->p++ != ':')
        return FAIL(d, "syntax");
    skip_ws(d);
    return 0;
}

/* Closes the innermost container, whose closing bracket is at d->p. */
static int close_container(jd *d)
{
    jframe *f = &d->stack[--d->depth];
    d->p++;
    if (f->is_obj) {
        uint32_t n = f->count > 1 ? dedup(d, f->at, d->mem + f->first, f->count) : f->count;
        d->nmem = f->first;
        patch32(d, f->at, n);
        return 0;
    }
    if (f->count == 0)
        d->x->index = f->at; /* [] is NIL alone */
    else
        patch32(d, f->at, f->count);
    return put(d, (unsigned char[]){JE_NIL}, 1);
}

/* One value with everything nested in it, iteratively: an explicit stack
 * of open containers, so depth costs no C stack. */
static int parse(jd *d)
{
    for (;;) {
        int opened;
        if (value_start(d, &opened) != 0)
            return -1;
        if (opened) {
            jframe *f = &d->stack[d->depth - 1];
            skip_ws(d);
            if (d->p == d->end || *d->p != (f->is_obj ? '}' : ']')) {
                if (f->is_obj && member_key(d, f) != 0)
                    return -1;
                continue; /* its first value */
            }
            if (close_container(d) != 0)
                return -1;
        }
        /* A value is complete: count it in its container, then a ',' or
         * the end of that container (itself a completed value). */
        for (;;) {
            if (d->depth == 0)
                return 0;
            jframe *f = &d->stack[d->depth - 1];
            if (f->is_obj && push_member(d, f->member, d->x->index) != 0)
                return -1;
            f->count++;
            skip_ws(d);
            if (d->p == d->end)
                return FAIL(d, "syntax");
            if (*d->p == (f->is_obj ? '}' : ']')) {
                if (close_container(d) != 0)
                    return -1;
                continue;
            }
            if (*d->p++ != ',')
                return FAIL(d, "syntax");
            skip_ws(d);
            if (f->is_obj && member_key(d, f) != 0)
                return -1;
            break;
        }
    }
}

int json_etf_decode(ei_x_buff *x, const char *json, size_t len, const char **why)
{
    jd d = {.p = (const unsigned char *)json, .end = (const unsigned char *)json + len, .x = x};
    int at = x->index, rc = -1;
    if (len > JSON_ETF_MAX_BYTES) {
        d.why = "too_large";
    } else {
        skip_ws(&d);
        if (d.p == d.end) {
            d.why = "empty";
        } else if (parse(&d) == 0) {
            skip_ws(&d);
            rc = d.p == d.end ? 0 : FAIL(&d, "syntax");
        }
    }
    free(d.mem);
    if (rc != 0) {
        x->index = at;
        if (why != NULL)
            *why = d.why;
    }
    return rc;
}
