/*
 * ws_frames.h — an open websocket (after the 101): RFC 6455 framing by
 * wslay over a byte stream the caller provides (ws_io), so the same code
 * runs over libcurl's TLS connection (ws_client.c), an in-memory stream
 * (tests) and fuzz input.
 *
 * Client side: every frame sent is masked with a RAND_bytes key; a masked
 * frame from the server, a bad opcode, a bad continuation, invalid UTF-8 in
 * a text message or a message over max_message fails the connection
 * (wslay sends the close frame). Pings are answered with pongs. Fragmented
 * messages are reassembled and delivered whole.
 *
 * Not thread-safe; one object per connection.
 */
#ifndef IBKR_WS_FRAMES_H
#define IBKR_WS_FRAMES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WS_IO_AGAIN (-2) /* nothing to read / no room to write now */
#define WS_IO_ERROR (-1)

typedef struct {
    /* > 0 bytes sent, WS_IO_AGAIN or WS_IO_ERROR. */
    ssize_t (*send)(void *io, const uint8_t *p, size_t n);
    /* > 0 bytes read, 0 end of stream, WS_IO_AGAIN or WS_IO_ERROR. */
    ssize_t (*recv)(void *io, uint8_t *p, size_t n);
} ws_io_ops;

/* Why a connection ended. */
typedef enum {
    WS_END_CLOSE,      /* the server's close frame (code, text) */
    WS_END_TRANSPORT,  /* kind: "closed" (end of stream without close), "recv", "send" */
    WS_END_PROTOCOL    /* kind: "bad_frame", "too_large", "bad_utf8", "nomem" */
} ws_end_kind;

typedef struct {
    ws_end_kind kind;
    const char *what;  /* static string (TRANSPORT, PROTOCOL) */
    int code;          /* CLOSE: the status code (1005 when the frame had none) */
    const uint8_t *text;
    size_t text_len;
} ws_end;

typedef struct {
    /* A complete text (binary == 0) or binary message. */
    void (*message)(void *user, int binary, const uint8_t *p, size_t n);
} ws_frames_handlers;

typedef struct ws_frames ws_frames;

/* pre[0..npre) are bytes already read after the 101 head (delivered before
 * anything from io). NULL: out of memory. */
ws_frames *ws_frames_new(const ws_io_ops *ops, void *io, const ws_frames_handlers *h,
                         void *user, uint64_t max_message, const uint8_t *pre, size_t npre);
void ws_frames_free(ws_frames *f);

/* Queues a text message as one frame. 0, or -1 (closing, or no memory). */
int ws_frames_send_text(ws_frames *f, const uint8_t *p, size_t n);
/* Starts the close handshake with code (1000 normal): no more messages
 * are delivered. */
void ws_frames_close(ws_frames *f, int code);
/* Bytes queued and not yet handed to io. */
size_t ws_frames_queued(const ws_frames *f);

/* Reads what io has (the socket is readable), delivers messages, answers
 * pings. Then ws_frames_ended() may report the end. Stops after
 * WS_READ_BUDGET bytes so a fast server cannot hold the port's loop: 1
 * then (call again soon: the rest may wait in the TLS layer, invisible to
 * poll), else 0. */
#define WS_READ_BUDGET ((size_t)1024 * 1024)
int ws_frames_on_readable(ws_frames *f);
/* Writes what io takes. */
void ws_frames_on_writable(ws_frames *f);
int ws_frames_want_read(const ws_frames *f);
int ws_frames_want_write(const ws_frames *f);
/* 1 and *e when the connection is over (nothing more will be read or
 * written; *e's text stays valid until ws_frames_free), else 0. */
int ws_frames_ended(ws_frames *f, ws_end *e);

#endif
