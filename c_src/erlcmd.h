/*
 * erlcmd.h — {packet,4} framing between the port and the BEAM, plus the
 * ei_x_buff helpers that encode replies and events (see PROTOCOL.md).
 *
 * Reader: erlcmd_process() reads once from the input fd (EINTR retried),
 * hands every complete frame to the handler and keeps a partial one for the
 * next call. A declared length above IBKR_MAX_FRAME is never buffered: its
 * bytes are dropped as they arrive, then {0, {protocol_error,
 * frame_too_large}} is queued and the stream continues with the next frame.
 *
 * Writer: replies are encoded straight into one output buffer (an ei_x_buff
 * holding length-prefixed frames back to back), so a batch of replies leaves
 * in a single write(). erlcmd_flush() writes what the (non-blocking) output
 * fd accepts and keeps the rest for the next POLLOUT.
 *
 * ei trusts its input (no length argument anywhere), so frames must pass
 * erlcmd_check_term() before any ei_decode_* call, and erlcmd_skip_term()
 * replaces ei_skip_term() (which recurses without a depth limit).
 */
#ifndef IBKR_ERLCMD_H
#define IBKR_ERLCMD_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#define IBKR_MAX_FRAME ((size_t)16 * 1024 * 1024)

typedef struct erlcmd erlcmd;

/* Called for each complete frame (the term bytes, without the length
 * prefix). The bytes stay valid until the handler returns; the handler may
 * overwrite them (e.g. to wipe secrets) and may queue replies. */
typedef void (*erlcmd_handler)(erlcmd *c, char *frame, size_t len, void *ctx);

struct erlcmd {
    int in_fd, out_fd;
    erlcmd_handler handler;
    void *ctx;

    char *rbuf;          /* unprocessed input: at most one partial frame */
    size_t rcap, rlen;
    uint64_t discard;    /* bytes of a refused frame still to drop */

    ei_x_buff out;       /* encoded frames not yet written */
    size_t out_off;      /* bytes of out already written */
    size_t mark;         /* start of the frame being encoded */
    int sensitive;       /* out holds a secret: wipe it once written */
    int failed;          /* out of memory while encoding: the port must exit */
};

/* 0 / -1 (no memory). Does not change the fds' flags. */
int erlcmd_init(erlcmd *c, int in_fd, int out_fd, erlcmd_handler h, void *ctx);
void erlcmd_destroy(erlcmd *c);

/* One read, then every complete frame is handled. 1: bytes were read;
 * 0: nothing to read (EAGAIN); -1: EOF or a read error (the BEAM is gone). */
int erlcmd_process(erlcmd *c);

/* Writes queued output. 0: all written; 1: some left (wait for POLLOUT);
 * -1: write error (EPIPE: the BEAM is gone). */
int erlcmd_flush(erlcmd *c);
/* Bytes queued and not yet written. */
size_t erlcmd_pending(const erlcmd *c);

/* ---- encoding -------------------------------------------------------------
 * erlcmd_begin() starts a frame (length placeholder + version byte) and
 * returns the buffer to encode one term into; erlcmd_end(c, r) closes it
 * when r == 0 and drops it otherwise. ei_x_encode_* only fails for lack of
 * memory here, so r != 0 also sets c->failed. Usage:
 *     ei_x_buff *x = erlcmd_begin(c);
 *     int r = x ? 0 : -1;
 *     if (!r) r |= ei_x_encode_...(x, ...);   (each returns 0 or -1)
 *     return erlcmd_end(c, r);
 */
ei_x_buff *erlcmd_begin(erlcmd *c);
int erlcmd_end(erlcmd *c, int r);
/* erlcmd_begin() plus the outer {Id, ...} tuple header and Id. */
ei_x_buff *erlcmd_begin_reply(erlcmd *c, uint64_t id);
/* Make room for n more bytes in one step (before a big binary). 0 / -1. */
int erlcmd_reserve(erlcmd *c, size_t n);
/* ei_x_encode_binary with a size_t length (ei takes an int): -1 above INT_MAX. */
int erlcmd_encode_binary(ei_x_buff *x, const void *p, size_t n);

/* Whole messages. Each returns 0 / -1. */
int erlcmd_reply_ok(erlcmd *c, uint64_t id);                          /* {Id, ok} */
int erlcmd_reply_error(erlcmd *c, uint64_t id, const char *reason);   /* {Id, {error, R}} */
int erlcmd_reply_error2(erlcmd *c, uint64_t id, const char *tag,
                        const char *what);                           /* {Id, {error, {T, W}}} */
int erlcmd_reply_binary(erlcmd *c, uint64_t id, const void *p, size_t n); /* {Id, {ok, Bin}} */
int erlcmd_protocol_error(erlcmd *c, const char *why);   /* {0, {protocol_error, Why}} */
/* {0, {log, Level, Msg}}; the message is truncated to 1 KiB. */
int erlcmd_log(erlcmd *c, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- bounded term checks ------------------------------------------------- */
/* 0 when buf[0..len) is the version byte followed by exactly one well-formed
 * term of the external format (compressed terms and distribution headers are
 * refused), else -1. Iterative: nesting depth costs no stack. */
int erlcmd_check_term(const char *buf, size_t len);
/* Advances *index over one term inside a buffer already checked with
 * erlcmd_check_term. 0 / -1. */
int erlcmd_skip_term(const char *buf, size_t len, int *index);

#endif
