/*
 * erlcmd.c — {packet,4} framing and reply encoding. See erlcmd.h.
 */
#include "erlcmd.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define RBUF_BASE ((size_t)64 * 1024)       /* read size; frames up to this need no growth */
#define OUT_BASE ((size_t)64 * 1024)        /* output buffer kept between batches */
#define OUT_KEEP_MAX ((size_t)1024 * 1024)  /* larger output buffers are shrunk when idle */
#define LOG_MAX 1024

static uint32_t get_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* The output buffer is an ei_x_buff whose storage we size ourselves (ei grows
 * it linearly, by 100 bytes, which would mean a realloc per reply). ei
 * allocates with malloc/realloc/free, so this is compatible with ei_x_free. */
static int out_grow(erlcmd *c, size_t need)
{
    size_t have = (size_t)c->out.buffsz - (size_t)c->out.index;
    if (need <= have)
        return 0;
    size_t want = (size_t)c->out.index + need;
    if (want > (size_t)INT32_MAX - 1024)
        return -1;
    size_t sz = (size_t)c->out.buffsz * 2;
    if (sz < want)
        sz = want + 1024;
    if (sz > (size_t)INT32_MAX)
        sz = (size_t)INT32_MAX;
    char *p = realloc(c->out.buff, sz);
    if (p == NULL)
        return -1;
    c->out.buff = p;
    c->out.buffsz = (int)sz;
    return 0;
}

int erlcmd_init(erlcmd *c, int in_fd, int out_fd, erlcmd_handler h, void *ctx)
{
    memset(c, 0, sizeof *c);
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->handler = h;
    c->ctx = ctx;
    (void)ei_init(); /* only sets up ei's internal state; cannot fail for us */
    c->rbuf = malloc(RBUF_BASE);
    c->out.buff = malloc(OUT_BASE);
    if (c->rbuf == NULL || c->out.buff == NULL) {
        free(c->rbuf);
        free(c->out.buff);
        memset(c, 0, sizeof *c);
        return -1;
    }
    c->rcap = RBUF_BASE;
    c->out.buffsz = (int)OUT_BASE;
    c->out.index = 0;
    return 0;
}

void erlcmd_destroy(erlcmd *c)
{
    if (c->rbuf != NULL) {
        OPENSSL_cleanse(c->rbuf, c->rcap);
        free(c->rbuf);
    }
    if (c->out.buff != NULL) {
        OPENSSL_cleanse(c->out.buff, (size_t)c->out.buffsz);
        free(c->out.buff);
    }
    memset(c, 0, sizeof *c);
}

/* ---- reader ---------------------------------------------------------------- */

/* Resizes the read buffer to cap (>= rlen). Failure keeps the old one. */
static int rbuf_resize(erlcmd *c, size_t cap)
{
    char *p = malloc(cap);
    if (p == NULL)
        return -1;
    memcpy(p, c->rbuf, c->rlen);
    /* The old buffer may have held an init frame's secrets. */
    OPENSSL_cleanse(c->rbuf, c->rcap);
    free(c->rbuf);
    c->rbuf = p;
    c->rcap = cap;
    return 0;
}

/* Handles every complete frame in rbuf and keeps the tail. */
static void consume(erlcmd *c)
{
    unsigned char *b = (unsigned char *)c->rbuf;
    size_t off = 0, need = 4;
    for (;;) {
        size_t avail = c->rlen - off;
        if (c->discard > 0) {
            size_t k = c->discard < avail ? (size_t)c->discard : avail;
            off += k;
            c->discard -= k;
            if (c->discard > 0)
                break;
            (void)erlcmd_protocol_error(c, "frame_too_large");
            continue;
        }
        if (avail < 4) {
            need = 4;
            break;
        }
        uint32_t len = get_be32(b + off);
        if (len > IBKR_MAX_FRAME) {
            /* Refused before anything is allocated for it. */
            off += 4;
            c->discard = len;
            continue;
        }
        if (avail - 4 < len) {
            need = 4 + (size_t)len;
            break;
        }
        c->handler(c, c->rbuf + off + 4, len, c->ctx);
        off += 4 + (size_t)len;
    }
    c->rlen -= off;
    if (c->rlen > 0 && off > 0)
        memmove(c->rbuf, c->rbuf + off, c->rlen);

    if (need > c->rcap) {
        /* A frame larger than the buffer: room for exactly that frame. If
         * this fails we cannot make progress; the next read sees a full
         * buffer and reports an error. */
        (void)rbuf_resize(c, need);
    } else if (c->rcap > RBUF_BASE && need <= RBUF_BASE && c->rlen <= RBUF_BASE) {
        /* Back to the small buffer after a big frame (keeps RSS low). */
        (void)rbuf_resize(c, RBUF_BASE);
    }
}

int erlcmd_process(erlcmd *c)
{
    if (c->rlen == c->rcap)
        return -1; /* could not grow for a large frame: nothing sane left to do */
    ssize_t n;
    do {
        n = read(c->in_fd, c->rbuf + c->rlen, c->rcap - c->rlen);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        return -1;
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    c->rlen += (size_t)n;
    consume(c);
    return 1;
}

/* ---- writer ---------------------------------------------------------------- */

size_t erlcmd_pending(const erlcmd *c)
{
    return (size_t)c->out.index - c->out_off;
}

int erlcmd_flush(erlcmd *c)
{
    while (c->out_off < (size_t)c->out.index) {
        ssize_t n = write(c->out_fd, c->out.buff + c->out_off, (size_t)c->out.index - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->sensitive) {
        OPENSSL_cleanse(c->out.buff, (size_t)c->out.index);
        c->sensitive = 0;
    }
    c->out.index = 0;
    c->out_off = 0;
    if ((size_t)c->out.buffsz > OUT_KEEP_MAX) {
        char *p = malloc(OUT_BASE);
        if (p != NULL) {
            free(c->out.buff);
            c->out.buff = p;
            c->out.buffsz = (int)OUT_BASE;
        }
    }
    return 0;
}

/* ---- encoding -------------------------------------------------------------- */

ei_x_buff *erlcmd_begin(erlcmd *c)
{
    /* Compact once most of the buffer is already written (a slow reader). */
    if (c->out_off >= OUT_BASE && c->out_off * 2 >= (size_t)c->out.index) {
        size_t left = (size_t)c->out.index - c->out_off;
        memmove(c->out.buff, c->out.buff + c->out_off, left);
        c->out.index = (int)left;
        c->out_off = 0;
    }
    if (out_grow(c, 4096) != 0) {
        c->failed = 1;
        return NULL;
    }
    c->mark = (size_t)c->out.index;
    c->out.index += 4;
    if (ei_x_encode_version(&c->out) != 0) {
        c->out.index = (int)c->mark;
        c->failed = 1;
        return NULL;
    }
    return &c->out;
}

int erlcmd_end(erlcmd *c, int r)
{
    if (c->out.buff == NULL) {
        /* ei lost the buffer in a failed realloc: everything queued is gone. */
        c->failed = 1;
        c->out.buffsz = 0;
        c->out.index = 0;
        c->out_off = 0;
        return -1;
    }
    if (r != 0) {
        c->out.index = (int)c->mark;
        c->failed = 1;
        return -1;
    }
    size_t len = (size_t)c->out.index - c->mark - 4;
    put_be32((unsigned char *)c->out.buff + c->mark, (uint32_t)len);
    return 0;
}

int erlcmd_reserve(erlcmd *c, size_t n)
{
    if (out_grow(c, n) != 0) {
        c->failed = 1;
        return -1;
    }
    return 0;
}

ei_x_buff *erlcmd_begin_reply(erlcmd *c, uint64_t id)
{
    ei_x_buff *x = erlcmd_begin(c);
    if (x == NULL)
        return NULL;
    if (ei_x_encode_tuple_header(x, 2) != 0 || ei_x_encode_ulonglong(x, id) != 0) {
        (void)erlcmd_end(c, -1);
        return NULL;
    }
    return x;
}

int erlcmd_reply_ok(erlcmd *c, uint64_t id)
{
    ei_x_buff *x = erlcmd_begin_reply(c, id);
    if (x == NULL)
        return -1;
    return erlcmd_end(c, ei_x_encode_atom(x, "ok"));
}

int erlcmd_reply_error(erlcmd *c, uint64_t id, const char *reason)
{
    ei_x_buff *x = erlcmd_begin_reply(c, id);
    if (x == NULL)
        return -1;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "error");
    r |= ei_x_encode_atom(x, reason);
    return erlcmd_end(c, r);
}

int erlcmd_reply_error2(erlcmd *c, uint64_t id, const char *tag, const char *what)
{
    ei_x_buff *x = erlcmd_begin_reply(c, id);
    if (x == NULL)
        return -1;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "error");
    r |= ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, tag);
    r |= ei_x_encode_atom(x, what);
    return erlcmd_end(c, r);
}

int erlcmd_encode_binary(ei_x_buff *x, const void *p, size_t n)
{
    if (n > (size_t)INT_MAX - 64)
        return -1;
    return ei_x_encode_binary(x, p, (int)n);
}

int erlcmd_reply_binary(erlcmd *c, uint64_t id, const void *p, size_t n)
{
    ei_x_buff *x = erlcmd_begin_reply(c, id);
    if (x == NULL)
        return -1;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= erlcmd_encode_binary(x, p, n);
    return erlcmd_end(c, r);
}

int erlcmd_protocol_error(erlcmd *c, const char *why)
{
    ei_x_buff *x = erlcmd_begin_reply(c, 0);
    if (x == NULL)
        return -1;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "protocol_error");
    r |= ei_x_encode_atom(x, why);
    return erlcmd_end(c, r);
}

/* {0, {log, Level, Msg}} from a formatted message. The attribute marks fmt
 * as a printf format handed on with a va_list (erlcmd_log's callers are the
 * ones checked), which clang's -Wformat-nonliteral requires. */
__attribute__((format(printf, 3, 0)))
static int log_v(erlcmd *c, const char *level, const char *fmt, va_list ap)
{
    char msg[LOG_MAX];
    /* clang-tidy 14 reports this only when another file was analysed first in
     * the same run (the va_list is a parameter, initialised by the caller). */
    // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized)
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return -1;
    size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    ei_x_buff *x = erlcmd_begin_reply(c, 0);
    if (x == NULL)
        return -1;
    int r = ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "log");
    r |= ei_x_encode_atom(x, level);
    r |= erlcmd_encode_binary(x, msg, len);
    return erlcmd_end(c, r);
}

int erlcmd_log(erlcmd *c, const char *level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = log_v(c, level, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- bounded term walk ----------------------------------------------------- */

/* External term format tags (erts/emulator/beam/external.h). */
enum {
    T_NEW_FLOAT = 70, T_BIT_BINARY = 77, T_NEW_PID = 88, T_NEW_PORT = 89,
    T_NEWER_REF = 90, T_SMALL_INT = 97, T_INT = 98, T_FLOAT = 99, T_ATOM = 100,
    T_REF = 101, T_PORT = 102, T_PID = 103, T_SMALL_TUPLE = 104,
    T_LARGE_TUPLE = 105, T_NIL = 106, T_STRING = 107, T_LIST = 108,
    T_BINARY = 109, T_SMALL_BIG = 110, T_LARGE_BIG = 111, T_NEW_FUN = 112,
    T_EXPORT = 113, T_NEW_REF = 114, T_SMALL_ATOM = 115, T_MAP = 116,
    T_ATOM_UTF8 = 118, T_SMALL_ATOM_UTF8 = 119, T_V4_PORT = 120
};

/* Skips an atom used inside a pid/port/ref (its node name). */
static const unsigned char *skip_atom(const unsigned char *p, const unsigned char *end)
{
    if (p >= end)
        return NULL;
    size_t avail = (size_t)(end - p) - 1, len;
    switch (*p) {
    case T_ATOM:
    case T_ATOM_UTF8:
        if (avail < 2)
            return NULL;
        len = ((size_t)p[1] << 8) | p[2];
        if (avail - 2 < len)
            return NULL;
        return p + 3 + len;
    case T_SMALL_ATOM:
    case T_SMALL_ATOM_UTF8:
        if (avail < 1)
            return NULL;
        len = p[1];
        if (avail - 1 < len)
            return NULL;
        return p + 2 + len;
    default:
        return NULL;
    }
}

/* A big-endian length of `width` (1, 2 or 4) bytes at p, avail bytes left. */
static int read_len(const unsigned char *p, size_t avail, size_t width, size_t *n)
{
    if (avail < width)
        return -1;
    if (width == 1)
        *n = p[0];
    else if (width == 2)
        *n = ((size_t)p[0] << 8) | p[1];
    else
        *n = get_be32(p);
    return 0;
}

/* Pids, ports and references: a node atom, then fixed-size fields (for the
 * newer references, a count of 32-bit words first). */
static int node_term(unsigned tag, const unsigned char **pp, const unsigned char *end,
                     size_t *skip)
{
    const unsigned char *p = *pp;
    size_t words = 0;
    if (tag == T_NEW_REF || tag == T_NEWER_REF) {
        if (read_len(p, (size_t)(end - p), 2, &words) != 0)
            return -1;
        p += 2;
    }
    if ((p = skip_atom(p, end)) == NULL)
        return -1;
    *pp = p;
    switch (tag) {
    case T_PID: *skip = 9; break;
    case T_NEW_PID: *skip = 12; break;
    case T_PORT: *skip = 5; break;
    case T_NEW_PORT: *skip = 8; break;
    case T_V4_PORT: *skip = 12; break;
    case T_REF: *skip = 5; break;
    case T_NEW_REF: *skip = 1 + 4 * words; break;
    default: *skip = 4 + 4 * words; break; /* T_NEWER_REF */
    }
    return 0;
}

/* What follows the tag of one term at *pp: *skip bytes of its own, then
 * *add nested terms. -1 for a tag we refuse or a truncated header. */
static int term_head(unsigned tag, const unsigned char **pp, const unsigned char *end,
                     size_t *skip, size_t *add)
{
    const unsigned char *p = *pp;
    size_t avail = (size_t)(end - p), n = 0;
    *skip = 0;
    *add = 0;
    switch (tag) {
    case T_SMALL_INT: *skip = 1; return 0;
    case T_INT: *skip = 4; return 0;
    case T_NEW_FLOAT: *skip = 8; return 0;
    case T_FLOAT: *skip = 31; return 0;
    case T_NIL: return 0;
    case T_EXPORT: *add = 3; return 0; /* module, function, arity */
    case T_ATOM:
    case T_ATOM_UTF8:
    case T_STRING:
        *skip = 2;
        return read_len(p, avail, 2, &n) == 0 ? (*skip += n, 0) : -1;
    case T_SMALL_ATOM:
    case T_SMALL_ATOM_UTF8:
        *skip = 1;
        return read_len(p, avail, 1, &n) == 0 ? (*skip += n, 0) : -1;
    case T_SMALL_TUPLE:
        *skip = 1;
        return read_len(p, avail, 1, add);
    case T_LARGE_TUPLE:
        *skip = 4;
        return read_len(p, avail, 4, add);
    case T_LIST:
        *skip = 4;
        return read_len(p, avail, 4, &n) == 0 ? (*add = n + 1, 0) : -1; /* + tail */
    case T_MAP:
        *skip = 4;
        return read_len(p, avail, 4, &n) == 0 ? (*add = 2 * n, 0) : -1;
    case T_BINARY:
        *skip = 4;
        return read_len(p, avail, 4, &n) == 0 ? (*skip += n, 0) : -1;
    case T_BIT_BINARY: /* length, bits used in the last byte (1..8), bytes */
        *skip = 5;
        if (avail < 5 || p[4] < 1 || p[4] > 8)
            return -1;
        *skip += get_be32(p);
        return 0;
    case T_SMALL_BIG: /* digit count, sign, digits */
        *skip = 2;
        return read_len(p, avail, 1, &n) == 0 ? (*skip += n, 0) : -1;
    case T_LARGE_BIG:
        *skip = 5;
        return read_len(p, avail, 4, &n) == 0 ? (*skip += n, 0) : -1;
    case T_NEW_FUN: /* Size counts itself; the body is only ever copied (echo) */
        if (read_len(p, avail, 4, &n) != 0 || n < 4)
            return -1;
        *skip = n;
        return 0;
    case T_PID:
    case T_NEW_PID:
    case T_PORT:
    case T_NEW_PORT:
    case T_V4_PORT:
    case T_REF:
    case T_NEW_REF:
    case T_NEWER_REF:
        return node_term(tag, pp, end, skip);
    default:
        return -1; /* compressed, atom cache refs, unknown */
    }
}

/* The external format is a pre-order serialisation, so one counter of
 * "terms still to read" replaces a stack: a tuple of arity n adds n, a list
 * n + 1 (its tail), a map 2n. Every term takes at least one byte, so a
 * count above the bytes left is already an error (and cannot overflow).
 * Returns the end of one term starting at p, or NULL. */
static const unsigned char *walk(const unsigned char *p, const unsigned char *end)
{
    size_t pending = 1;
    while (pending > 0) {
        if (p >= end)
            return NULL;
        pending--;
        unsigned tag = *p++;
        size_t skip, add;
        if (term_head(tag, &p, end, &skip, &add) != 0 || skip > (size_t)(end - p))
            return NULL;
        p += skip;
        pending += add;
        if (pending > (size_t)(end - p))
            return NULL;
    }
    return p;
}

int erlcmd_check_term(const char *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;
    if (len < 2 || len > (size_t)INT32_MAX || p[0] != 131)
        return -1;
    return walk(p + 1, end) == end ? 0 : -1;
}

int erlcmd_skip_term(const char *buf, size_t len, int *index)
{
    if (*index < 0 || (size_t)*index >= len)
        return -1;
    const unsigned char *p = (const unsigned char *)buf;
    const unsigned char *q = walk(p + *index, p + len);
    if (q == NULL)
        return -1;
    *index = (int)(q - p);
    return 0;
}
