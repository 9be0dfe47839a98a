/*
 * test_erlcmd.c — framing, reply encoding and the bounded term walk, over
 * real pipes.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "erlcmd.h"

/* ---- fixtures ---------------------------------------------------------------- */

#define MAX_SEEN 64

typedef struct {
    int in[2];  /* test writes in[1], erlcmd reads in[0] */
    int out[2]; /* erlcmd writes out[1], test reads out[0] */
    erlcmd c;
    size_t nseen;
    size_t seen_len[MAX_SEEN];
    char *seen[MAX_SEEN];
    size_t max_rcap;
} fx;

static void on_frame(erlcmd *c, char *frame, size_t len, void *ctx)
{
    fx *f = ctx;
    if (c->rcap > f->max_rcap)
        f->max_rcap = c->rcap;
    assert_true(f->nseen < MAX_SEEN);
    f->seen[f->nseen] = malloc(len ? len : 1);
    assert_non_null(f->seen[f->nseen]);
    memcpy(f->seen[f->nseen], frame, len);
    f->seen_len[f->nseen++] = len;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(pipe(f->in), 0);
    assert_int_equal(pipe(f->out), 0);
    set_nonblock(f->in[0]);
    set_nonblock(f->out[1]);
    assert_int_equal(erlcmd_init(&f->c, f->in[0], f->out[1], on_frame, f), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < f->nseen; i++)
        free(f->seen[i]);
    erlcmd_destroy(&f->c);
    close(f->in[0]);
    close(f->in[1]);
    close(f->out[0]);
    close(f->out[1]);
    free(f);
    return 0;
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR)
            continue;
        assert_true(k > 0);
        b += k;
        n -= (size_t)k;
    }
}

static void put_len(unsigned char *h, uint32_t n)
{
    h[0] = (unsigned char)(n >> 24);
    h[1] = (unsigned char)(n >> 16);
    h[2] = (unsigned char)(n >> 8);
    h[3] = (unsigned char)n;
}

/* A frame: 4-byte length + payload, into a malloc'd buffer. */
static unsigned char *make_frame(const void *payload, size_t n, size_t *total)
{
    unsigned char *b = malloc(n + 4);
    assert_non_null(b);
    put_len(b, (uint32_t)n);
    memcpy(b + 4, payload, n);
    *total = n + 4;
    return b;
}

/* Drains erlcmd until nothing is left to read. */
static void pump(fx *f)
{
    while (erlcmd_process(&f->c) > 0)
        ;
}

/* Reads one frame the port wrote; returns a malloc'd payload. */
static char *read_out_frame(fx *f, size_t *len)
{
    unsigned char h[4] = {0};
    size_t got = 0;
    while (got < 4) {
        ssize_t k = read(f->out[0], h + got, 4 - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    got = 0;
    while (got < n) {
        ssize_t k = read(f->out[0], p + got, n - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    *len = n;
    return p;
}

/* ---- reader ----------------------------------------------------------------- */

static void test_split_byte_by_byte(void **state)
{
    fx *f = *state;
    const char *payloads[] = {"first", "", "third frame, a bit longer"};
    for (int i = 0; i < 3; i++) {
        size_t n;
        unsigned char *fr = make_frame(payloads[i], strlen(payloads[i]), &n);
        for (size_t k = 0; k < n; k++) {
            write_all(f->in[1], fr + k, 1);
            assert_int_equal(erlcmd_process(&f->c), 1);
            /* Delivered only once the last byte is in. */
            assert_int_equal(f->nseen, (size_t)i + (k == n - 1 ? 1 : 0));
        }
        free(fr);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(f->seen_len[i], strlen(payloads[i]));
        assert_memory_equal(f->seen[i], payloads[i], f->seen_len[i] ? f->seen_len[i] : 0);
    }
    assert_int_equal(erlcmd_process(&f->c), 0); /* EAGAIN */
}

static void test_several_frames_one_write(void **state)
{
    fx *f = *state;
    unsigned char buf[1024];
    size_t n = 0;
    for (int i = 0; i < 10; i++) {
        char p[16];
        size_t pl = (size_t)i; /* lengths 0..9 */
        memset(p, 'a' + i, pl);
        put_len(buf + n, (uint32_t)pl);
        memmove(buf + n + 4, p, pl);
        n += 4 + pl;
    }
    /* Plus the first half of an 11th frame. */
    put_len(buf + n, 6);
    buf[n + 4] = 'a';
    buf[n + 5] = 'b';
    buf[n + 6] = 'c';
    n += 7;
    write_all(f->in[1], buf, n);
    assert_int_equal(erlcmd_process(&f->c), 1);
    assert_int_equal(f->nseen, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(f->seen_len[i], (size_t)i);
        for (int k = 0; k < i; k++)
            assert_int_equal(f->seen[i][k], 'a' + i);
    }
    write_all(f->in[1], "def", 3);
    pump(f);
    assert_int_equal(f->nseen, 11);
    assert_memory_equal(f->seen[10], "abcdef", 6);
}

static void test_large_frame_grows_then_shrinks(void **state)
{
    fx *f = *state;
    size_t big = (size_t)3 * 1024 * 1024, n;
    char *p = malloc(big);
    assert_non_null(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (char)(i * 7);
    unsigned char *fr = make_frame(p, big, &n);
    /* Written from a child: the pipe holds far less than 3 MiB. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        write_all(f->in[1], fr, n);
        write_all(f->in[1], "\0\0\0\2hi", 6);
        _exit(0);
    }
    while (f->nseen < 2) {
        int r = erlcmd_process(&f->c);
        assert_true(r >= 0);
        if (r == 0)
            usleep(1000);
    }
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(f->seen_len[0], big);
    assert_memory_equal(f->seen[0], p, big);
    assert_memory_equal(f->seen[1], "hi", 2);
    assert_true(f->max_rcap >= big + 4);
    assert_true(f->c.rcap <= (size_t)64 * 1024); /* back to the small buffer */
    free(p);
    free(fr);
}

static void test_oversized_refused_and_resynced(void **state)
{
    fx *f = *state;
    const size_t declared = IBKR_MAX_FRAME + (size_t)4 * 1024 * 1024; /* 20 MiB */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char h[4];
        put_len(h, (uint32_t)declared);
        write_all(f->in[1], h, 4);
        static char junk[65536];
        memset(junk, 0xAB, sizeof junk);
        size_t left = declared;
        while (left > 0) {
            size_t k = left < sizeof junk ? left : sizeof junk;
            write_all(f->in[1], junk, k);
            left -= k;
        }
        write_all(f->in[1], "\0\0\0\4next", 8);
        _exit(0);
    }
    size_t max_cap = 0;
    while (f->nseen < 1) {
        int r = erlcmd_process(&f->c);
        assert_true(r >= 0);
        if (f->c.rcap > max_cap)
            max_cap = f->c.rcap;
        if (r == 0)
            usleep(200);
        /* Keep the output pipe drained is unnecessary: one small event. */
    }
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    /* Never buffered: the read buffer stayed at its base size. */
    assert_true(max_cap <= (size_t)64 * 1024);
    assert_int_equal(f->nseen, 1);
    assert_int_equal(f->seen_len[0], 4);
    assert_memory_equal(f->seen[0], "next", 4);

    /* The event came out before the next frame's reply would. */
    assert_int_equal(erlcmd_flush(&f->c), 0);
    size_t len;
    char *ev = read_out_frame(f, &len);
    int idx = 0, v, arity;
    char atom[MAXATOMLEN];
    unsigned long long id;
    assert_int_equal(erlcmd_check_term(ev, len), 0);
    assert_int_equal(ei_decode_version(ev, &idx, &v), 0);
    assert_int_equal(ei_decode_tuple_header(ev, &idx, &arity), 0);
    assert_int_equal(arity, 2);
    assert_int_equal(ei_decode_ulonglong(ev, &idx, &id), 0);
    assert_int_equal(id, 0);
    assert_int_equal(ei_decode_tuple_header(ev, &idx, &arity), 0);
    assert_int_equal(ei_decode_atom(ev, &idx, atom), 0);
    assert_string_equal(atom, "protocol_error");
    assert_int_equal(ei_decode_atom(ev, &idx, atom), 0);
    assert_string_equal(atom, "frame_too_large");
    free(ev);
}

static void test_max_frame_accepted(void **state)
{
    fx *f = *state;
    /* Exactly IBKR_MAX_FRAME is allowed. */
    size_t n = IBKR_MAX_FRAME;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char h[4];
        put_len(h, (uint32_t)n);
        write_all(f->in[1], h, 4);
        static char chunk[65536];
        for (size_t left = n; left > 0;) {
            size_t k = left < sizeof chunk ? left : sizeof chunk;
            write_all(f->in[1], chunk, k);
            left -= k;
        }
        _exit(0);
    }
    while (f->nseen < 1) {
        int r = erlcmd_process(&f->c);
        assert_true(r >= 0);
        if (r == 0)
            usleep(200);
    }
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(f->seen_len[0], n);
    assert_int_equal(erlcmd_pending(&f->c), 0); /* no protocol_error */
}

static void test_eof(void **state)
{
    fx *f = *state;
    write_all(f->in[1], "\0\0\0\1x\0\0", 7); /* a frame and a partial header */
    close(f->in[1]);
    f->in[1] = -1;
    assert_int_equal(erlcmd_process(&f->c), 1);
    assert_int_equal(f->nseen, 1);
    assert_int_equal(erlcmd_process(&f->c), -1);
}

static volatile sig_atomic_t g_signals;
static void on_sigalrm(int sig)
{
    (void)sig;
    g_signals++;
}

/* A blocking read interrupted by signals (no SA_RESTART) is retried. */
static void test_read_eintr(void **state)
{
    fx *f = *state;
    int fl = fcntl(f->in[0], F_GETFL);
    assert_int_equal(fcntl(f->in[0], F_SETFL, fl & ~O_NONBLOCK), 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigalrm; /* sa_flags = 0: no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
    g_signals = 0;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        usleep(80 * 1000);
        write_all(f->in[1], "\0\0\0\3abc", 7);
        _exit(0);
    }
    struct itimerval it = {{0, 5000}, {0, 5000}};
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    int r = erlcmd_process(&f->c);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    /* Valgrind delivers signals late: a tick still queued after the timer
     * is off must not meet SIG_DFL (which would kill the test run). */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGALRM, &sa, NULL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);

    assert_int_equal(r, 1);
    assert_true(g_signals > 0);
    assert_int_equal(f->nseen, 1);
    assert_memory_equal(f->seen[0], "abc", 3);
}

/* ---- writer ----------------------------------------------------------------- */

static void test_writer_partial_and_eagain(void **state)
{
    fx *f = *state;
    /* Far more than a pipe holds: flush must stop at EAGAIN and resume. */
    const int count = 4000;
    char payload[300];
    memset(payload, 'z', sizeof payload);
    for (int i = 0; i < count; i++)
        assert_int_equal(erlcmd_reply_binary(&f->c, (uint64_t)i + 1, payload, sizeof payload), 0);
    assert_int_equal(erlcmd_flush(&f->c), 1);
    assert_true(erlcmd_pending(&f->c) > 0);

    set_nonblock(f->out[0]);
    int fl = fcntl(f->out[0], F_GETFL);
    int seen = 0;
    size_t alen = 0, acap = 1 << 20;
    char *acc = malloc(acap);
    assert_non_null(acc);
    while (seen < count) {
        char buf[65536];
        ssize_t k = read(f->out[0], buf, sizeof buf);
        if (k > 0) {
            if (alen + (size_t)k > acap) {
                acap = (alen + (size_t)k) * 2;
                char *grown = realloc(acc, acap);
                assert_non_null(grown);
                acc = grown;
            }
            memcpy(acc + alen, buf, (size_t)k);
            alen += (size_t)k;
        }
        /* Interleave: more replies while some are still queued. */
        if (seen == 0 && alen > 0)
            assert_int_equal(erlcmd_reply_ok(&f->c, 999999), 0);
        (void)erlcmd_flush(&f->c);
        /* Parse complete frames. */
        size_t off = 0;
        while (alen - off >= 4) {
            const unsigned char *h = (const unsigned char *)acc + off;
            size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
            if (alen - off - 4 < n)
                break;
            const char *t = acc + off + 4;
            assert_int_equal(erlcmd_check_term(t, n), 0);
            int idx = 0, v, ar;
            unsigned long long id;
            assert_int_equal(ei_decode_version(t, &idx, &v), 0);
            assert_int_equal(ei_decode_tuple_header(t, &idx, &ar), 0);
            assert_int_equal(ei_decode_ulonglong(t, &idx, &id), 0);
            if (id != 999999) {
                assert_int_equal(id, (unsigned long long)seen + 1); /* in order */
                seen++;
            }
            off += 4 + n;
        }
        memmove(acc, acc + off, alen - off);
        alen -= off;
    }
    fcntl(f->out[0], F_SETFL, fl & ~O_NONBLOCK);
    free(acc);
    assert_int_equal(erlcmd_flush(&f->c), 0);
}

static void test_write_epipe(void **state)
{
    fx *f = *state;
    (void)signal(SIGPIPE, SIG_IGN);
    close(f->out[0]);
    f->out[0] = -1;
    assert_int_equal(erlcmd_reply_ok(&f->c, 1), 0);
    assert_int_equal(erlcmd_flush(&f->c), -1);
}

/* ---- encoding helpers ------------------------------------------------------- */

/* Reads one reply and checks {Id, ...} framing; returns the term and idx
 * positioned at the reply. */
static char *reply(fx *f, unsigned long long want_id, int *idx)
{
    assert_int_equal(erlcmd_flush(&f->c), 0);
    size_t len;
    char *t = read_out_frame(f, &len);
    assert_int_equal(erlcmd_check_term(t, len), 0);
    int v, ar;
    unsigned long long id;
    *idx = 0;
    assert_int_equal(ei_decode_version(t, idx, &v), 0);
    assert_int_equal(ei_decode_tuple_header(t, idx, &ar), 0);
    assert_int_equal(ar, 2);
    assert_int_equal(ei_decode_ulonglong(t, idx, &id), 0);
    assert_int_equal(id, want_id);
    return t;
}

static void expect_atom(const char *t, int *idx, const char *want)
{
    char a[MAXATOMLEN];
    assert_int_equal(ei_decode_atom(t, idx, a), 0);
    assert_string_equal(a, want);
}

static void test_encode_helpers(void **state)
{
    fx *f = *state;
    int idx, ar;
    char *t;

    assert_int_equal(erlcmd_reply_ok(&f->c, 7), 0);
    t = reply(f, 7, &idx);
    expect_atom(t, &idx, "ok");
    free(t);

    /* The largest id round-trips. */
    assert_int_equal(erlcmd_reply_error(&f->c, UINT64_MAX, "not_initialized"), 0);
    t = reply(f, UINT64_MAX, &idx);
    assert_int_equal(ei_decode_tuple_header(t, &idx, &ar), 0);
    expect_atom(t, &idx, "error");
    expect_atom(t, &idx, "not_initialized");
    free(t);

    assert_int_equal(erlcmd_reply_error2(&f->c, 9, "badarg", "nonce"), 0);
    t = reply(f, 9, &idx);
    assert_int_equal(ei_decode_tuple_header(t, &idx, &ar), 0);
    expect_atom(t, &idx, "error");
    assert_int_equal(ei_decode_tuple_header(t, &idx, &ar), 0);
    assert_int_equal(ar, 2);
    expect_atom(t, &idx, "badarg");
    expect_atom(t, &idx, "nonce");
    free(t);

    assert_int_equal(erlcmd_reply_binary(&f->c, 10, "a\0b", 3), 0);
    t = reply(f, 10, &idx);
    assert_int_equal(ei_decode_tuple_header(t, &idx, &ar), 0);
    expect_atom(t, &idx, "ok");
    char bin[8];
    long blen;
    assert_int_equal(ei_decode_binary(t, &idx, bin, &blen), 0);
    assert_int_equal(blen, 3);
    assert_memory_equal(bin, "a\0b", 3);
    free(t);

    assert_int_equal(erlcmd_log(&f->c, "warning", "key file %s is %d", "/x", 5), 0);
    t = reply(f, 0, &idx);
    assert_int_equal(ei_decode_tuple_header(t, &idx, &ar), 0);
    assert_int_equal(ar, 3);
    expect_atom(t, &idx, "log");
    expect_atom(t, &idx, "warning");
    char msg[64];
    assert_int_equal(ei_decode_binary(t, &idx, msg, &blen), 0);
    assert_int_equal(blen, 16);
    assert_memory_equal(msg, "key file /x is 5", 16);
    free(t);

    /* A long log message is truncated, not overflowed. */
    char longs[5000];
    memset(longs, 'q', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    assert_int_equal(erlcmd_log(&f->c, "info", "%s", longs), 0);
    t = reply(f, 0, &idx);
    int type, size;
    assert_int_equal(ei_decode_tuple_header(t, &idx, &ar), 0);
    expect_atom(t, &idx, "log");
    expect_atom(t, &idx, "info");
    assert_int_equal(ei_get_type(t, &idx, &type, &size), 0);
    assert_int_equal(type, ERL_BINARY_EXT);
    assert_true(size > 0 && size < 1024);
    free(t);

    /* A failed encode is dropped and leaves earlier frames intact. */
    assert_int_equal(erlcmd_reply_ok(&f->c, 1), 0);
    size_t before = erlcmd_pending(&f->c);
    ei_x_buff *x = erlcmd_begin_reply(&f->c, 2);
    assert_non_null(x);
    assert_int_equal(erlcmd_end(&f->c, -1), -1);
    assert_int_equal(erlcmd_pending(&f->c), before);
    f->c.failed = 0;
    t = reply(f, 1, &idx);
    free(t);
}

/* ---- bounded term walk ------------------------------------------------------- */

static void test_check_term(void **state)
{
    (void)state;
    ei_x_buff x;
    /* {1, {sign, <<"GET">>, <<"u">>, #{nonce => <<"n">>}}} is fine. */
    assert_int_equal(ei_x_new_with_version(&x), 0);
    assert_int_equal(ei_x_encode_tuple_header(&x, 2), 0);
    assert_int_equal(ei_x_encode_ulong(&x, 1), 0);
    assert_int_equal(ei_x_encode_tuple_header(&x, 4), 0);
    assert_int_equal(ei_x_encode_atom(&x, "sign"), 0);
    assert_int_equal(ei_x_encode_binary(&x, "GET", 3), 0);
    assert_int_equal(ei_x_encode_binary(&x, "u", 1), 0);
    assert_int_equal(ei_x_encode_map_header(&x, 1), 0);
    assert_int_equal(ei_x_encode_atom(&x, "nonce"), 0);
    assert_int_equal(ei_x_encode_binary(&x, "n", 1), 0);
    assert_int_equal(erlcmd_check_term(x.buff, (size_t)x.index), 0);
    /* Every truncation is refused, and so is a trailing byte. */
    for (int n = 0; n < x.index; n++)
        assert_int_equal(erlcmd_check_term(x.buff, (size_t)n), -1);
    assert_int_equal(ei_x_append_buf(&x, "\0", 1), 0);
    assert_int_equal(erlcmd_check_term(x.buff, (size_t)x.index), -1);
    ei_x_free(&x);

    /* Skip over the first element of a tuple. */
    assert_int_equal(ei_x_new_with_version(&x), 0);
    assert_int_equal(ei_x_encode_tuple_header(&x, 2), 0);
    assert_int_equal(ei_x_encode_list_header(&x, 2), 0);
    assert_int_equal(ei_x_encode_double(&x, 1.5), 0);
    assert_int_equal(ei_x_encode_longlong(&x, -5000000000LL), 0);
    assert_int_equal(ei_x_encode_empty_list(&x), 0);
    int mark = x.index;
    assert_int_equal(ei_x_encode_atom(&x, "end"), 0);
    assert_int_equal(erlcmd_check_term(x.buff, (size_t)x.index), 0);
    int idx = 1, ar;
    assert_int_equal(ei_decode_tuple_header(x.buff, &idx, &ar), 0);
    assert_int_equal(erlcmd_skip_term(x.buff, (size_t)x.index, &idx), 0);
    assert_int_equal(idx, mark);
    ei_x_free(&x);

    /* Version byte, compressed and unknown tags. */
    const char bad_version[] = {(char)130, 'j'};
    assert_int_equal(erlcmd_check_term(bad_version, 2), -1);
    const unsigned char compressed[] = {131, 'P', 0, 0, 0, 1, 0x78, 0x9c};
    assert_int_equal(erlcmd_check_term((const char *)compressed, sizeof compressed), -1);
    const char unknown[] = {(char)131, 'Q'};
    assert_int_equal(erlcmd_check_term(unknown, 2), -1);
    const char nil[] = {(char)131, 'j'};
    assert_int_equal(erlcmd_check_term(nil, 2), 0);

    /* Declared sizes beyond the buffer: arity, list length, binary length. */
    const char huge_tuple[] = {(char)131, 'i', 0x7f, (char)0xff, (char)0xff, (char)0xff, 'j'};
    assert_int_equal(erlcmd_check_term(huge_tuple, sizeof huge_tuple), -1);
    const char huge_list[] = {(char)131, 'l', (char)0xff, (char)0xff, (char)0xff, (char)0xff, 'j'};
    assert_int_equal(erlcmd_check_term(huge_list, sizeof huge_list), -1);
    const char huge_bin[] = {(char)131, 'm', (char)0xff, (char)0xff, (char)0xff, (char)0xff, 'a'};
    assert_int_equal(erlcmd_check_term(huge_bin, sizeof huge_bin), -1);
    const char huge_map[] = {(char)131, 't', 0x40, 0, 0, 0, 'j', 'j'};
    assert_int_equal(erlcmd_check_term(huge_map, sizeof huge_map), -1);
}

/* Nesting a million levels deep costs no stack. */
static void test_check_term_deep(void **state)
{
    (void)state;
    const size_t depth = 1000000;
    size_t n = 1 + depth * 6 + 1;
    char *b = malloc(n);
    assert_non_null(b);
    b[0] = (char)131;
    size_t off = 1;
    for (size_t i = 0; i < depth; i++) {
        /* [X] = LIST_EXT length 1, X, then the tail NIL after X... */
        b[off++] = 'l';
        b[off++] = 0;
        b[off++] = 0;
        b[off++] = 0;
        b[off++] = 1;
    }
    b[off++] = 'j'; /* innermost element */
    for (size_t i = 0; i < depth; i++)
        b[off++] = 'j'; /* each list's tail */
    assert_true(off <= n);
    assert_int_equal(erlcmd_check_term(b, off), 0);
    assert_int_equal(erlcmd_check_term(b, off - 1), -1);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_byte_by_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_frames_one_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_frame_grows_then_shrinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_refused_and_resynced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_frame_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_eintr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_partial_and_eagain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_epipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_helpers, setup, teardown),
        cmocka_unit_test(test_check_term),
        cmocka_unit_test(test_check_term_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
