/*
 * test_ws_frames.c — the client's frame handling (wslay behind
 * ws_frames.h) over an in-memory stream: server frames in, client frames
 * out (unmasked here and checked). Whole, fragmented and interleaved
 * messages, pings, both close handshakes, and each way a server can break
 * the protocol; a stream that delivers one byte at a time or refuses to
 * take output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws_frames.h"

/* ---- the in-memory stream -------------------------------------------------------------- */

typedef struct {
    uint8_t in[3 << 20];   /* server -> client, not yet read */
    size_t inlen, inoff;
    int eof;               /* after in: end of stream (else AGAIN) */
    size_t read_chunk;     /* max bytes per recv (0: any) */
    uint8_t out[1 << 20];  /* client -> server */
    size_t outlen, outoff; /* outoff: parsed by next_out */
    int refuse_send;       /* send answers AGAIN */
    int fail_send;
} stream;

static ssize_t s_send(void *io, const uint8_t *p, size_t n)
{
    stream *s = io;
    if (s->fail_send)
        return WS_IO_ERROR;
    if (s->refuse_send)
        return WS_IO_AGAIN;
    assert_true(n <= sizeof s->out - s->outlen);
    memcpy(s->out + s->outlen, p, n);
    s->outlen += n;
    return (ssize_t)n;
}

static ssize_t s_recv(void *io, uint8_t *p, size_t n)
{
    stream *s = io;
    size_t left = s->inlen - s->inoff;
    if (left == 0)
        return s->eof ? 0 : WS_IO_AGAIN;
    if (n > left)
        n = left;
    if (s->read_chunk > 0 && n > s->read_chunk)
        n = s->read_chunk;
    memcpy(p, s->in + s->inoff, n);
    s->inoff += n;
    return (ssize_t)n;
}

static const ws_io_ops OPS = {s_send, s_recv};

/* A server frame appended to the stream's input. */
static void server_frame(stream *s, int fin, int op, const void *p, size_t n, int masked)
{
    uint8_t *d = s->in + s->inlen;
    size_t h = 0;
    d[h++] = (uint8_t)((fin ? 0x80 : 0) | op);
    uint8_t m = masked ? 0x80 : 0;
    if (n < 126) {
        d[h++] = (uint8_t)(m | n);
    } else if (n < 65536) {
        d[h++] = (uint8_t)(m | 126);
        d[h++] = (uint8_t)(n >> 8);
        d[h++] = (uint8_t)n;
    } else {
        d[h++] = (uint8_t)(m | 127);
        for (int i = 7; i >= 0; i--)
            d[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    if (masked) {
        memcpy(d + h, key, 4);
        h += 4;
    }
    assert_true(h + n <= sizeof s->in - s->inlen);
    for (size_t i = 0; i < n; i++)
        d[h + i] = (uint8_t)(((const uint8_t *)p)[i] ^ (masked ? key[i % 4] : 0));
    s->inlen += h + n;
}

static void server_text(stream *s, const char *t)
{
    server_frame(s, 1, 1, t, strlen(t), 0);
}

typedef struct {
    int fin, op, masked;
    uint8_t mask[4];
    uint8_t payload[1 << 16];
    size_t len;
} cframe;

/* The next client frame written to the stream; 0 when there is none. */
static int next_out(stream *s, cframe *f)
{
    if (s->outoff == s->outlen)
        return 0;
    const uint8_t *d = s->out + s->outoff;
    size_t left = s->outlen - s->outoff, h = 2;
    assert_true(left >= 2);
    f->fin = d[0] >> 7;
    f->op = d[0] & 0x0f;
    f->masked = d[1] >> 7;
    size_t n = d[1] & 0x7f;
    if (n == 126) {
        n = ((size_t)d[2] << 8) | d[3];
        h = 4;
    } else if (n == 127) {
        n = 0;
        for (int i = 0; i < 8; i++)
            n = (n << 8) | d[2 + i];
        h = 10;
    }
    if (f->masked) {
        memcpy(f->mask, d + h, 4);
        h += 4;
    }
    assert_true(h + n <= left && n <= sizeof f->payload);
    for (size_t i = 0; i < n; i++)
        f->payload[i] = (uint8_t)(d[h + i] ^ (f->masked ? f->mask[i % 4] : 0));
    f->len = n;
    s->outoff += h + n;
    return 1;
}

/* ---- what the handler saw ---------------------------------------------------------------- */

typedef struct {
    int count;
    int binary;
    uint8_t last[1 << 17];
    size_t last_len;
} seen;

static void on_message(void *user, int binary, const uint8_t *p, size_t n)
{
    seen *s = user;
    assert_true(n <= sizeof s->last);
    s->count++;
    s->binary = binary;
    memcpy(s->last, p, n);
    s->last_len = n;
}

static const ws_frames_handlers H = {on_message};

typedef struct {
    stream st;
    seen sn;
    ws_frames *f;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->f = ws_frames_new(&OPS, &fx->st, &H, &fx->sn, 1024, NULL, 0);
    assert_non_null(fx->f);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    ws_frames_free(fx->f);
    free(fx);
    return 0;
}

static void assert_last(const seen *s, const char *text)
{
    assert_int_equal(s->last_len, strlen(text));
    assert_memory_equal(s->last, text, s->last_len);
}

static void assert_close_out(stream *s, int code)
{
    cframe c;
    assert_true(next_out(s, &c));
    assert_int_equal(c.op, 8);
    assert_true(c.masked);
    assert_true(c.len >= 2);
    assert_int_equal((c.payload[0] << 8) | c.payload[1], code);
}

/* ---- cases ---------------------------------------------------------------------------------- */

static void test_messages(void **state)
{
    fixture *fx = *state;
    ws_end e;
    server_text(&fx->st, "{\"topic\":\"system\",\"hb\":1}");
    server_frame(&fx->st, 1, 2, "\x00\x01\xff", 3, 0);
    ws_frames_on_readable(fx->f);
    assert_int_equal(fx->sn.count, 2);
    assert_int_equal(fx->sn.binary, 1);
    assert_memory_equal(fx->sn.last, "\x00\x01\xff", 3);
    assert_int_equal(ws_frames_ended(fx->f, &e), 0);
    server_text(&fx->st, "");
    ws_frames_on_readable(fx->f);
    assert_int_equal(fx->sn.count, 3);
    assert_int_equal(fx->sn.last_len, 0);
    assert_true(ws_frames_want_read(fx->f));
}

static void test_send_masked(void **state)
{
    fixture *fx = *state;
    assert_int_equal(ws_frames_send_text(fx->f, (const uint8_t *)"tic", 3), 0);
    assert_int_equal(ws_frames_send_text(fx->f, (const uint8_t *)"tic", 3), 0);
    assert_true(ws_frames_want_write(fx->f));
    ws_frames_on_writable(fx->f);
    assert_false(ws_frames_want_write(fx->f));
    cframe a, b;
    assert_true(next_out(&fx->st, &a));
    assert_true(next_out(&fx->st, &b));
    assert_false(next_out(&fx->st, &b));
    assert_true(a.fin && a.op == 1 && a.masked && a.len == 3);
    assert_memory_equal(a.payload, "tic", 3);
    assert_memory_equal(b.payload, "tic", 3);
    /* Fresh random keys: two frames with the same key are 2^-32 likely. */
    assert_memory_not_equal(a.mask, b.mask, 4);
}

static void test_fragmented_with_ping(void **state)
{
    fixture *fx = *state;
    server_frame(&fx->st, 0, 1, "{\"a\":", 5, 0);
    server_frame(&fx->st, 0, 0, "12", 2, 0);
    server_frame(&fx->st, 1, 9, "ping!", 5, 0);
    server_frame(&fx->st, 1, 0, "3}", 2, 0);
    fx->st.read_chunk = 1; /* and everything one byte at a time */
    ws_frames_on_readable(fx->f);
    assert_int_equal(fx->sn.count, 1);
    assert_int_equal(fx->sn.binary, 0);
    assert_last(&fx->sn, "{\"a\":123}");
    cframe c;
    assert_true(next_out(&fx->st, &c));
    assert_int_equal(c.op, 10);
    assert_true(c.masked);
    assert_int_equal(c.len, 5);
    assert_memory_equal(c.payload, "ping!", 5);
}

static void test_server_close(void **state)
{
    fixture *fx = *state;
    ws_end e;
    server_frame(&fx->st, 1, 8, "\x03\xe9" "bye", 5, 0);
    server_text(&fx->st, "after close");
    ws_frames_on_readable(fx->f);
    assert_close_out(&fx->st, 1001);
    assert_true(ws_frames_ended(fx->f, &e));
    assert_int_equal(e.kind, WS_END_CLOSE);
    assert_int_equal(e.code, 1001);
    assert_int_equal(e.text_len, 3);
    assert_memory_equal(e.text, "bye", 3);
    assert_int_equal(fx->sn.count, 0);
    assert_int_equal(ws_frames_send_text(fx->f, (const uint8_t *)"x", 1), -1);
}

static void test_server_close_no_code(void **state)
{
    fixture *fx = *state;
    ws_end e;
    server_frame(&fx->st, 1, 8, "", 0, 0);
    ws_frames_on_readable(fx->f);
    assert_true(ws_frames_ended(fx->f, &e));
    assert_int_equal(e.kind, WS_END_CLOSE);
    assert_int_equal(e.code, 1005);
    assert_int_equal(e.text_len, 0);
}

static void test_client_close(void **state)
{
    fixture *fx = *state;
    ws_end e;
    ws_frames_close(fx->f, 1000);
    ws_frames_on_writable(fx->f);
    assert_close_out(&fx->st, 1000);
    assert_false(ws_frames_ended(fx->f, &e)); /* waits for the server's close */
    server_text(&fx->st, "late");             /* not delivered any more */
    server_frame(&fx->st, 1, 8, "\x03\xe8", 2, 0);
    ws_frames_on_readable(fx->f);
    assert_int_equal(fx->sn.count, 0);
    assert_true(ws_frames_ended(fx->f, &e));
    assert_int_equal(e.kind, WS_END_CLOSE);
    assert_int_equal(e.code, 1000);
    cframe none;
    assert_false(next_out(&fx->st, &none)); /* our close was the answer */
}

static void expect_protocol(fixture *fx, int code, const char *why)
{
    ws_end e;
    ws_frames_on_readable(fx->f);
    assert_close_out(&fx->st, code);
    assert_true(ws_frames_ended(fx->f, &e));
    assert_int_equal(e.kind, WS_END_PROTOCOL);
    assert_string_equal(e.what, why);
}

static void test_masked_by_server(void **state)
{
    fixture *fx = *state;
    server_frame(&fx->st, 1, 1, "{}", 2, 1);
    expect_protocol(fx, 1002, "bad_frame");
    assert_int_equal(fx->sn.count, 0);
}

static void test_bad_opcode(void **state)
{
    fixture *fx = *state;
    server_frame(&fx->st, 1, 3, "x", 1, 0);
    expect_protocol(fx, 1002, "bad_frame");
}

static void test_continuation_without_start(void **state)
{
    fixture *fx = *state;
    server_frame(&fx->st, 1, 0, "x", 1, 0);
    expect_protocol(fx, 1002, "bad_frame");
}

static void test_new_message_inside_fragmented(void **state)
{
    fixture *fx = *state;
    server_frame(&fx->st, 0, 1, "a", 1, 0);
    server_frame(&fx->st, 1, 1, "b", 1, 0);
    expect_protocol(fx, 1002, "bad_frame");
    assert_int_equal(fx->sn.count, 0);
}

static void test_too_large(void **state)
{
    fixture *fx = *state;
    static char big[1025];
    memset(big, 'a', sizeof big);
    server_frame(&fx->st, 1, 1, big, 1024, 0); /* at the cap: fine */
    ws_frames_on_readable(fx->f);
    assert_int_equal(fx->sn.count, 1);
    server_frame(&fx->st, 1, 1, big, 1025, 0);
    expect_protocol(fx, 1009, "too_large");
    assert_int_equal(fx->sn.count, 1);
}

static void test_too_large_fragmented(void **state)
{
    fixture *fx = *state;
    static char half[600];
    memset(half, 'b', sizeof half);
    server_frame(&fx->st, 0, 1, half, sizeof half, 0);
    server_frame(&fx->st, 1, 0, half, sizeof half, 0);
    expect_protocol(fx, 1009, "too_large");
    assert_int_equal(fx->sn.count, 0);
}

static void test_huge_length_not_allocated(void **state)
{
    fixture *fx = *state;
    /* A header claiming 2^62 bytes, then the first bytes of it: refused
     * before anything of that size is allocated. */
    const uint8_t h[] = {0x81, 0x7f, 0x40, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c'};
    memcpy(fx->st.in, h, sizeof h);
    fx->st.inlen = sizeof h;
    expect_protocol(fx, 1009, "too_large");
}

static void test_bad_utf8(void **state)
{
    fixture *fx = *state;
    server_frame(&fx->st, 1, 1, "ok \xc3\x28", 5, 0);
    expect_protocol(fx, 1007, "bad_utf8");
}

static void test_long_ping(void **state)
{
    fixture *fx = *state;
    static char p[126];
    memset(p, 'p', sizeof p);
    server_frame(&fx->st, 1, 9, p, sizeof p, 0); /* control frames carry <= 125 bytes */
    ws_end e;
    ws_frames_on_readable(fx->f);
    assert_true(ws_frames_ended(fx->f, &e));
    assert_int_equal(e.kind, WS_END_PROTOCOL);
    assert_string_equal(e.what, "bad_frame");
}

static void test_eof(void **state)
{
    fixture *fx = *state;
    ws_end e;
    server_text(&fx->st, "last");
    fx->st.eof = 1;
    ws_frames_on_readable(fx->f);
    assert_int_equal(fx->sn.count, 1);
    assert_true(ws_frames_ended(fx->f, &e));
    assert_int_equal(e.kind, WS_END_TRANSPORT);
    assert_string_equal(e.what, "closed");
}

static void test_send_blocked_then_failed(void **state)
{
    fixture *fx = *state;
    ws_end e;
    fx->st.refuse_send = 1;
    assert_int_equal(ws_frames_send_text(fx->f, (const uint8_t *)"hello", 5), 0);
    ws_frames_on_writable(fx->f);
    assert_true(ws_frames_want_write(fx->f));
    assert_true(ws_frames_queued(fx->f) >= 5);
    assert_false(ws_frames_ended(fx->f, &e));
    fx->st.refuse_send = 0;
    ws_frames_on_writable(fx->f);
    assert_false(ws_frames_want_write(fx->f));
    cframe c;
    assert_true(next_out(&fx->st, &c));
    assert_memory_equal(c.payload, "hello", 5);
    fx->st.fail_send = 1;
    assert_int_equal(ws_frames_send_text(fx->f, (const uint8_t *)"x", 1), 0);
    ws_frames_on_writable(fx->f);
    assert_true(ws_frames_ended(fx->f, &e));
    assert_int_equal(e.kind, WS_END_TRANSPORT);
    assert_string_equal(e.what, "send");
}

/* A server faster than the port: each call stops after WS_READ_BUDGET
 * bytes and says so; nothing is lost. */
static void test_read_budget(void **state)
{
    fixture *fx = *state;
    static char m[1000];
    memset(m, 'm', sizeof m);
    size_t n = WS_READ_BUDGET / sizeof m + 200;
    for (size_t i = 0; i < n; i++)
        server_frame(&fx->st, 1, 1, m, sizeof m, 0);
    assert_int_equal(ws_frames_on_readable(fx->f), 1);
    assert_true(fx->sn.count > 0 && (size_t)fx->sn.count < n);
    assert_int_equal(ws_frames_on_readable(fx->f), 0);
    assert_int_equal(fx->sn.count, n);
}

static void test_pre_bytes(void **state)
{
    (void)state;
    stream *st = calloc(1, sizeof *st);
    seen *sn = calloc(1, sizeof *sn);
    assert_non_null(st);
    assert_non_null(sn);
    /* A frame split between the bytes read with the 101 and the stream. */
    const uint8_t pre[] = {0x81, 0x05, 'h', 'e'};
    st->in[0] = 'l';
    st->in[1] = 'l';
    st->in[2] = 'o';
    st->inlen = 3;
    ws_frames *f = ws_frames_new(&OPS, st, &H, sn, 1024, pre, sizeof pre);
    assert_non_null(f);
    ws_frames_on_readable(f);
    assert_int_equal(sn->count, 1);
    assert_last(sn, "hello");
    ws_frames_free(f);
    free(st);
    free(sn);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_messages), T(test_send_masked), T(test_fragmented_with_ping),
        T(test_server_close), T(test_server_close_no_code), T(test_client_close),
        T(test_masked_by_server), T(test_bad_opcode), T(test_continuation_without_start),
        T(test_new_message_inside_fragmented), T(test_too_large), T(test_too_large_fragmented),
        T(test_huge_length_not_allocated), T(test_bad_utf8), T(test_long_ping), T(test_eof),
        T(test_send_blocked_then_failed), T(test_read_budget), cmocka_unit_test(test_pre_bytes),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
