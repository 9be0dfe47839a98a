/*
 * fuzz_ws.c — libFuzzer harness for what a websocket server sends the port:
 * the bytes after a successful opening handshake go through ws_frames
 * (wslay) exactly as ws_client.c feeds them, over an in-memory stream that
 * hands them out in small chunks with "nothing now" in between. With the
 * first byte's low bit set the input starts with the server's answer to the
 * upgrade instead, checked by ws_response_parse as it grows; bytes after an
 * accepted head become the first frames.
 *
 * Input: byte 0 = mode bit | chunk size (1 + byte0 >> 1), then the stream.
 * Checked (abort() on failure): no message over the cap and none after
 * the end; the end is reported once the stream is exhausted; every byte
 * the client writes parses as masked frames (text, close or pong only,
 * control payloads <= 125 bytes); a head is accepted only with the
 * expected Accept value in it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ws_frames.h"
#include "../ws_handshake.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CAP 1024 /* max_message: small, so the fuzzer reaches it */

typedef struct {
    const uint8_t *in;
    size_t inlen, inoff, chunk;
    int again_next; /* alternate data and WS_IO_AGAIN */
    int eof;
    uint8_t *out;
    size_t outlen, outcap;
    int ended;
} stream;

__attribute__((noreturn)) static void fail(const char *why)
{
    (void)fprintf(stderr, "fuzz_ws: %s\n", why);
    abort();
}

static ssize_t s_send(void *io, const uint8_t *p, size_t n)
{
    stream *s = io;
    if (n > s->outcap - s->outlen) {
        size_t cap = (s->outcap ? 2 * s->outcap : 4096) + n;
        uint8_t *o = realloc(s->out, cap);
        if (o == NULL)
            fail("out of memory");
        s->out = o;
        s->outcap = cap;
    }
    memcpy(s->out + s->outlen, p, n);
    s->outlen += n;
    return (ssize_t)n;
}

static ssize_t s_recv(void *io, uint8_t *p, size_t n)
{
    stream *s = io;
    if (s->inoff == s->inlen)
        return s->eof ? 0 : WS_IO_AGAIN;
    if (s->again_next) {
        s->again_next = 0;
        return WS_IO_AGAIN;
    }
    s->again_next = 1;
    size_t k = s->inlen - s->inoff;
    if (k > n)
        k = n;
    if (k > s->chunk)
        k = s->chunk;
    memcpy(p, s->in + s->inoff, k);
    s->inoff += k;
    return (ssize_t)k;
}

static const ws_io_ops OPS = {s_send, s_recv};

static void on_message(void *user, int binary, const uint8_t *p, size_t n)
{
    stream *s = user;
    (void)binary;
    if (s->ended)
        fail("message after the end");
    if (n > CAP)
        fail("message over the cap");
    if (p == NULL)
        fail("message without bytes");
    /* Touch every byte: ASan sees a message pointing outside its buffer. */
    volatile uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc ^= p[i];
    (void)acc;
}

static const ws_frames_handlers H = {on_message};

/* The client's output: whole masked frames of the kinds a client sends. */
static void check_output(const stream *s)
{
    size_t off = 0;
    while (off < s->outlen) {
        const uint8_t *d = s->out + off;
        size_t left = s->outlen - off, h = 2;
        if (left < 2)
            fail("truncated client frame");
        int op = d[0] & 0x0f;
        if (!(d[1] & 0x80))
            fail("unmasked client frame");
        if ((d[0] & 0x70) != 0 || (op != 1 && op != 8 && op != 10))
            fail("unexpected client frame");
        uint64_t n = d[1] & 0x7f;
        if (n == 126) {
            if (left < 4)
                fail("truncated client frame");
            n = ((uint64_t)d[2] << 8) | d[3];
            h = 4;
        } else if (n == 127) {
            if (left < 10)
                fail("truncated client frame");
            n = 0;
            for (int i = 0; i < 8; i++)
                n = (n << 8) | d[2 + i];
            h = 10;
        }
        if (op != 1 && n > 125)
            fail("control frame over 125 bytes");
        h += 4;
        if (n > left - h || left < h)
            fail("truncated client frame");
        off += h + (size_t)n;
    }
}

/* libFuzzer's fixed signature, hence non-const. */
int LLVMFuzzerInitialize(int *argc, char ***argv) // NOLINT(readability-non-const-parameter)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    stream s;
    memset(&s, 0, sizeof s);
    s.chunk = 1 + (data[0] >> 1);
    const uint8_t *pre = NULL;
    size_t npre = 0;
    s.in = data + 1;
    s.inlen = size - 1;

    if (data[0] & 1) {
        /* The answer to the upgrade, read as it grows. */
        char accept[WS_ACCEPT_LEN + 1];
        if (ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", accept) != 0)
            fail("accept");
        ws_response r;
        ws_resp_status st = WS_RESP_MORE;
        size_t have = 0;
        while (st == WS_RESP_MORE && have < s.inlen) {
            have += s.chunk < s.inlen - have ? s.chunk : s.inlen - have;
            st = ws_response_parse((const char *)s.in, have, accept, &r);
        }
        if (st != WS_RESP_UPGRADED)
            return 0;
        if (r.status != 101 || r.head_len > have || r.head_len < 4 ||
            memmem(s.in, r.head_len, accept, WS_ACCEPT_LEN) == NULL)
            fail("bad head accepted");
        pre = s.in + r.head_len;
        npre = have - r.head_len;
        s.in += have;
        s.inlen -= have;
    }

    ws_frames *f = ws_frames_new(&OPS, &s, &H, &s, CAP, pre, npre);
    if (f == NULL)
        fail("ws_frames_new");
    if (ws_frames_send_text(f, (const uint8_t *)"tic", 3) != 0)
        fail("send_text");
    ws_frames_on_writable(f);
    ws_end e;
    /* Each round reads what is there, as one POLLIN would. */
    for (size_t rounds = 0; rounds <= s.inlen + 1; rounds++) {
        if (s.inoff == s.inlen)
            s.eof = 1;
        ws_frames_on_readable(f);
        if (ws_frames_want_write(f))
            ws_frames_on_writable(f);
        if (ws_frames_ended(f, &e)) {
            s.ended = 1;
            break;
        }
    }
    if (!s.ended)
        fail("stream exhausted but no end reported");
    if (e.kind == WS_END_CLOSE && (e.text_len > 123 || (e.text_len > 0 && e.text == NULL)))
        fail("bad close text");
    if ((e.kind == WS_END_TRANSPORT || e.kind == WS_END_PROTOCOL) && e.what == NULL)
        fail("end without a reason");
    check_output(&s);
    ws_frames_free(f);
    free(s.out);
    return 0;
}
