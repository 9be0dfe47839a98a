/*
 * fuzz_frame.c — libFuzzer harness for the port's request path.
 *
 * An input is the byte stream the BEAM would write on fd 3: {packet,4}
 * frames back to back (possibly cut short, oversized, batches of terms, or
 * not terms at all).
 * It goes through a pipe into a fresh erlcmd, whose handler is the real
 * dispatch_frame; replies go to a second pipe that the harness drains. The
 * port state (session, LST, in-flight operations) lives on between inputs as
 * in the real program; LLVMFuzzerInitialize runs `init` with the TESTCONS
 * keys and one pinned handshake, so sign, lst_request, lst_complete,
 * live_session_token, http and authenticate are all reachable.
 *
 * No network I/O happens: an http/authenticate command only hands its
 * transfer to curl's multi handle, which does nothing until the poll loop
 * drives it, and the harness never does. After each input it cancels every
 * id it sent (as {0, {cancel, Id}}) so nothing stays in flight.
 *
 * Checked after every input (abort() on failure):
 *  - every frame the port wrote is a well-formed term {Id, Reply};
 *  - every accepted request {Id > 0, _} got exactly one reply with its Id
 *    (cancelled transfers included), and no other Id was answered;
 * *  - afterwards curl watches no socket and stats reports inflight = 0.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ei.h>

#include "../dispatch.h"
#include "../erlcmd.h"
#include "../http.h"
#include "fuzz_vectors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STATS_ID 0xFFFFFFFFFFFFFFFFULL

static int g_in[2], g_out[2];

/* Growable arrays: request ids sent, reply ids seen, raw output bytes. */
typedef struct {
    uint64_t *v;
    size_t n, cap;
} idlist;

static idlist g_sent, g_got;
static char *g_outbuf;
static size_t g_outlen, g_outcap;

__attribute__((noreturn)) static void fail(const char *why)
{
    (void)fprintf(stderr, "fuzz_frame: %s\n", why);
    abort();
}

static void push(idlist *l, uint64_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        uint64_t *p = realloc(l->v, cap * sizeof *p);
        if (p == NULL)
            fail("out of memory");
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = id;
}

/* Writes everything queued, reading the pipe's other end as it fills. */
static void drain(erlcmd *c)
{
    for (;;) {
        int r = erlcmd_flush(c);
        if (r < 0)
            fail("erlcmd_flush failed");
        for (;;) {
            if (g_outcap - g_outlen < 65536) {
                size_t cap = g_outcap ? 2 * g_outcap : 1 << 20;
                char *p = realloc(g_outbuf, cap);
                if (p == NULL)
                    fail("out of memory");
                g_outbuf = p;
                g_outcap = cap;
            }
            ssize_t n = read(g_out[0], g_outbuf + g_outlen, g_outcap - g_outlen);
            if (n <= 0)
                break; /* EAGAIN: the pipe is empty */
            g_outlen += (size_t)n;
        }
        if (r == 0)
            return;
    }
}

/* The Id of a frame dispatch will treat as a request: {Id, _}, Id an
 * unsigned 64-bit integer. 0 when it is not one (or Id is 0). */
static uint64_t request_id(const char *buf, size_t len)
{
    int idx = 0, version, arity, type, size;
    unsigned long long id;
    if (erlcmd_check_term(buf, len) != 0 || ei_decode_version(buf, &idx, &version) != 0 ||
        ei_decode_tuple_header(buf, &idx, &arity) != 0 || arity != 2 ||
        ei_get_type(buf, &idx, &type, &size) != 0)
        return 0;
    if (type != ERL_SMALL_INTEGER_EXT && type != ERL_INTEGER_EXT && type != ERL_SMALL_BIG_EXT &&
        type != ERL_LARGE_BIG_EXT)
        return 0;
    if (ei_decode_ulonglong(buf, &idx, &id) != 0)
        return 0;
    return id;
}

/* Notes the request ids in a frame: its own, or for a batch frame (first
 * byte 0, then length-prefixed terms: PROTOCOL.md) those of the terms
 * dispatch will run, up to a length that runs past the end. */
static void note_ids(const char *buf, size_t len)
{
    if (!(len > 1 && buf[0] == 0)) {
        uint64_t id = request_id(buf, len);
        if (id != 0)
            push(&g_sent, id);
        return;
    }
    const unsigned char *p = (const unsigned char *)buf;
    size_t off = 1;
    while (len - off >= 4) {
        size_t n = ((size_t)p[off] << 24) | ((size_t)p[off + 1] << 16) |
                   ((size_t)p[off + 2] << 8) | p[off + 3];
        if (n > len - off - 4)
            return;
        if (n == 0 || p[off + 4] != 0) { /* a batch inside is not run */
            uint64_t id = request_id(buf + off + 4, n);
            if (id != 0)
                push(&g_sent, id);
        }
        off += 4 + n;
    }
}

/* The erlcmd handler: note the request ids, then the port's own dispatch,
 * on a copy of exactly the frame's size, so ASan sees any read past its end
 * (in erlcmd's buffer such a read would land in bytes that exist). */
static void tap(erlcmd *c, char *frame, size_t len, void *ctx)
{
    note_ids(frame, len);
    char *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL)
        fail("out of memory");
    memcpy(copy, frame, len);
    dispatch_frame(c, copy, len, ctx);
    free(copy);
    drain(c);
}

/* Runs one term built here ({0, {cancel, Id}} or {STATS_ID, stats}). */
static void send_term(erlcmd *c, uint64_t id, uint64_t cancel)
{
    ei_x_buff x;
    if (ei_x_new_with_version(&x) != 0)
        fail("out of memory");
    int r = ei_x_encode_tuple_header(&x, 2);
    r |= ei_x_encode_ulonglong(&x, id);
    if (cancel != 0) {
        r |= ei_x_encode_tuple_header(&x, 2);
        r |= ei_x_encode_atom(&x, "cancel");
        r |= ei_x_encode_ulonglong(&x, cancel);
    } else {
        r |= ei_x_encode_atom(&x, "stats");
    }
    if (r != 0)
        fail("ei_x_encode failed");
    dispatch_frame(c, x.buff, (size_t)x.index, NULL);
    drain(c);
    ei_x_free(&x);
}

/* Handles what the pipe holds. With the write end open, -1 is an error. */
static void pump(erlcmd *c)
{
    int r;
    while ((r = erlcmd_process(c)) > 0) {
    }
    if (r < 0)
        fail("erlcmd_process failed");
}

/* Feeds the input through the pipe, as much as it holds at a time. */
static void feed(erlcmd *c, const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(g_in[1], data + off, size - off);
        if (n > 0)
            off += (size_t)n;
        pump(c);
    }
    pump(c);
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int is_atom(const char *buf, int *idx, const char *want)
{
    char a[MAXATOMLEN_UTF8];
    return ei_decode_atom_as(buf, idx, a, sizeof a, ERLANG_UTF8, NULL, NULL) == 0 &&
           strcmp(a, want) == 0;
}

/* During LLVMFuzzerInitialize every reply must be a success. */
static int g_expect_ok;

/* Checks one output frame {Id, Reply} with Reply = ok | {ok, _} |
 * {error, _}, or an event {0, _}; records Id > 0 in g_got. */
static void check_reply(const char *buf, size_t len)
{
    int idx = 0, version, arity, type, size;
    unsigned long long id;
    if (erlcmd_check_term(buf, len) != 0 || ei_decode_version(buf, &idx, &version) != 0 ||
        ei_decode_tuple_header(buf, &idx, &arity) != 0 || arity != 2 ||
        ei_decode_ulonglong(buf, &idx, &id) != 0 || ei_get_type(buf, &idx, &type, &size) != 0)
        fail("the port wrote a frame that is not {Id, Reply}");
    if (id == 0)
        return; /* an event: log or protocol_error */
    push(&g_got, id);
    if (type == ERL_ATOM_EXT) {
        if (!is_atom(buf, &idx, "ok"))
            fail("a reply atom other than ok");
        return;
    }
    if (ei_decode_tuple_header(buf, &idx, &arity) != 0 || arity != 2)
        fail("a reply that is not ok, {ok, _} or {error, _}");
    int tag = idx;
    if (is_atom(buf, &idx, "ok"))
        return;
    if (!is_atom(buf, &tag, "error"))
        fail("a reply that is not ok, {ok, _} or {error, _}");
    if (g_expect_ok)
        fail("the TESTCONS init/lst_request/lst_complete failed");
}

/* The inflight count from {STATS_ID, {ok, #{inflight => N, ...}}}. */
static long long stats_inflight(const char *buf, size_t len)
{
    int idx = 0, version, arity, n;
    unsigned long long id;
    long long inflight = -1;
    if (erlcmd_check_term(buf, len) != 0 || ei_decode_version(buf, &idx, &version) != 0 ||
        ei_decode_tuple_header(buf, &idx, &arity) != 0 || arity != 2 ||
        ei_decode_ulonglong(buf, &idx, &id) != 0 || id != STATS_ID ||
        ei_decode_tuple_header(buf, &idx, &arity) != 0 || arity != 2 ||
        !is_atom(buf, &idx, "ok") || ei_decode_map_header(buf, &idx, &n) != 0)
        fail("no stats reply (is the session gone?)");
    for (int i = 0; i < n; i++) {
        int key = idx;
        long long v;
        if (ei_skip_term(buf, &idx) != 0 || ei_decode_longlong(buf, &idx, &v) != 0)
            fail("bad stats reply");
        if (is_atom(buf, &key, "inflight"))
            inflight = v;
    }
    return inflight;
}

/* Splits the captured output into frames and checks each; the last one is
 * the answer to the harness's own stats request. Returns its inflight. */
static long long check_output(void)
{
    size_t off = 0;
    for (;;) {
        if (g_outlen - off < 4)
            fail("the port wrote a truncated length prefix");
        const unsigned char *p = (const unsigned char *)g_outbuf + off;
        size_t len = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | p[3];
        if (g_outlen - off - 4 < len)
            fail("the port wrote a truncated frame");
        if (off + 4 + len == g_outlen)
            return stats_inflight(g_outbuf + off + 4, len);
        check_reply(g_outbuf + off + 4, len);
        off += 4 + len;
    }
}

/* How much of the input to feed. A last frame cut short is dropped when it
 * declares more than TAIL_MAX bytes: erlcmd allocates (and later wipes) the
 * declared size up front, which would cost milliseconds per run and teach
 * the fuzzer nothing new (test_erlcmd covers big partial frames). */
#define TAIL_MAX ((size_t)64 * 1024)
static size_t feed_size(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (size - off >= 4) {
        size_t len = ((size_t)data[off] << 24) | ((size_t)data[off + 1] << 16) |
                     ((size_t)data[off + 2] << 8) | data[off + 3];
        if (len > IBKR_MAX_FRAME) /* refused and skipped without a buffer */
            return size;
        if (size - off - 4 < len)
            return len > TAIL_MAX ? off : size;
        off += 4 + len;
    }
    return size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    erlcmd c;
    g_sent.n = g_got.n = 0;
    g_outlen = 0;
    if (erlcmd_init(&c, g_in[0], g_out[1], tap, NULL) != 0)
        fail("out of memory");
    feed(&c, data, feed_size(data, size));
    /* A partial frame left at the end is dropped with this erlcmd. */
    for (size_t i = 0; i < g_sent.n; i++)
        send_term(&c, 0, g_sent.v[i]);
    send_term(&c, STATS_ID, 0);
    if (c.failed)
        fail("out of memory while encoding");
    long long inflight = check_output();
    erlcmd_destroy(&c);

    qsort(g_sent.v, g_sent.n, sizeof *g_sent.v, cmp_id);
    qsort(g_got.v, g_got.n, sizeof *g_got.v, cmp_id);
    if (g_sent.n != g_got.n ||
        (g_sent.n > 0 && memcmp(g_sent.v, g_got.v, g_sent.n * sizeof *g_sent.v) != 0))
        fail("a request was not answered exactly once");
    if (inflight != 0)
        fail("stats reports requests in flight after all were cancelled");
    if (http_poll_count() != 0)
        fail("sockets left after all were cancelled");
    return 0;
}

/* libFuzzer's fixed signature, hence non-const. */
int LLVMFuzzerInitialize(int *argc, char ***argv) // NOLINT(readability-non-const-parameter)
{
    (void)argc;
    (void)argv;
    const char *why;
    if (pipe2(g_in, O_NONBLOCK | O_CLOEXEC) != 0 || pipe2(g_out, O_NONBLOCK | O_CLOEXEC) != 0 ||
        http_open(&why) != 0)
        fail("setup failed");

    static fuzz_vectors v; /* lives as long as the process (LSan) */
    fuzz_vectors_load(&v);
    /* {1, {init, Config}}, {2, {lst_request, Pins}}, {3, {lst_complete, Answer}} */
    ei_x_buff x[3];
    for (int i = 0; i < 3; i++)
        if (ei_x_new_with_version(&x[i]) != 0)
            fail("out of memory");
    int r = 0;
    r |= ei_x_encode_tuple_header(&x[0], 2) | ei_x_encode_ulong(&x[0], 1);
    r |= ei_x_encode_tuple_header(&x[0], 2) | ei_x_encode_atom(&x[0], "init");
    r |= ei_x_encode_map_header(&x[0], 8);
    const char *keys[] = {"consumer_key", "access_token", "access_token_secret", "dh_prime",
                          "realm", "base_url"};
    const char *vals[] = {v.consumer_key, v.access_token, v.access_token_secret, v.dh_prime,
                          v.realm, v.base_url};
    for (int i = 0; i < 6; i++) {
        r |= ei_x_encode_atom(&x[0], keys[i]);
        r |= ei_x_encode_binary(&x[0], vals[i], (int)strlen(vals[i]));
    }
    r |= ei_x_encode_atom(&x[0], "encryption_key") | ei_x_encode_tuple_header(&x[0], 2);
    r |= ei_x_encode_atom(&x[0], "file");
    r |= ei_x_encode_binary(&x[0], v.enc_path, (int)strlen(v.enc_path));
    r |= ei_x_encode_atom(&x[0], "signature_key") | ei_x_encode_tuple_header(&x[0], 2);
    r |= ei_x_encode_atom(&x[0], "pem");
    r |= ei_x_encode_binary(&x[0], v.sig_pem, (int)v.sig_len);

    r |= ei_x_encode_tuple_header(&x[1], 2) | ei_x_encode_ulong(&x[1], 2);
    r |= ei_x_encode_tuple_header(&x[1], 2) | ei_x_encode_atom(&x[1], "lst_request");
    r |= ei_x_encode_map_header(&x[1], 3);
    r |= ei_x_encode_atom(&x[1], "nonce");
    r |= ei_x_encode_binary(&x[1], v.nonce, (int)strlen(v.nonce));
    r |= ei_x_encode_atom(&x[1], "timestamp") | ei_x_encode_longlong(&x[1], v.timestamp);
    r |= ei_x_encode_atom(&x[1], "dh_random");
    r |= ei_x_encode_binary(&x[1], v.dh_random, (int)strlen(v.dh_random));

    r |= ei_x_encode_tuple_header(&x[2], 2) | ei_x_encode_ulong(&x[2], 3);
    r |= ei_x_encode_tuple_header(&x[2], 2) | ei_x_encode_atom(&x[2], "lst_complete");
    r |= ei_x_encode_map_header(&x[2], 3);
    r |= ei_x_encode_atom(&x[2], "diffie_hellman_response");
    r |= ei_x_encode_binary(&x[2], v.dh_response, (int)strlen(v.dh_response));
    r |= ei_x_encode_atom(&x[2], "live_session_token_signature");
    r |= ei_x_encode_binary(&x[2], v.lst_signature, (int)strlen(v.lst_signature));
    r |= ei_x_encode_atom(&x[2], "live_session_token_expiration");
    r |= ei_x_encode_longlong(&x[2], 4102444800000LL);
    if (r != 0)
        fail("ei_x_encode failed");

    /* The same path as any input; each must answer {Id, ok | {ok, _}}. */
    size_t total = 0;
    for (int i = 0; i < 3; i++)
        total += 4 + (size_t)x[i].index;
    uint8_t *stream = malloc(total), *p = stream;
    if (stream == NULL)
        fail("out of memory");
    for (int i = 0; i < 3; i++) {
        uint32_t n = (uint32_t)x[i].index;
        *p++ = (uint8_t)(n >> 24);
        *p++ = (uint8_t)(n >> 16);
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)n;
        memcpy(p, x[i].buff, n);
        p += n;
        ei_x_free(&x[i]);
    }
    g_expect_ok = 1;
    (void)LLVMFuzzerTestOneInput(stream, total);
    g_expect_ok = 0;
    if (g_got.n != 3)
        fail("the TESTCONS init/lst_request/lst_complete were not all answered");
    free(stream);
    return 0;
}
