/*
 * ws_frames.c — wslay's event API over a ws_io stream. See ws_frames.h.
 */
#include "ws_frames.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <wslay/wslay.h>

#define CLOSE_TEXT_MAX 123 /* a control frame's 125 bytes minus the code */

struct ws_frames {
    wslay_event_context_ptr ctx;
    const ws_io_ops *ops;
    void *io;
    ws_frames_handlers h;
    void *user;
    uint8_t *pre;           /* bytes read with the 101 head, not yet parsed */
    size_t npre, pre_off;
    int eof;                /* io reported the end of the stream */
    int would_block;        /* io had nothing more to read */
    size_t nread;           /* bytes handed to wslay */
    size_t budget;          /* bytes this on_readable may still read */
    int budget_hit;
    const char *io_error;   /* "recv" / "send" once io failed */
    int nomem;
    int closing;            /* we started the close handshake */
    int close_code;         /* the server's close frame */
    uint8_t close_text[CLOSE_TEXT_MAX];
    size_t close_len;
};

/* ---- wslay callbacks ----------------------------------------------------------------- */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user)
{
    ws_frames *f = user;
    (void)flags;
    if (f->pre_off < f->npre) {
        size_t n = f->npre - f->pre_off;
        if (n > len)
            n = len;
        memcpy(buf, f->pre + f->pre_off, n);
        f->pre_off += n;
        f->nread += n;
        return (ssize_t)n;
    }
    if (f->budget == 0) {
        f->budget_hit = 1; /* as if nothing were there: wslay returns */
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    ssize_t n = f->ops->recv(f->io, buf, len < f->budget ? len : f->budget);
    if (n > 0) {
        f->nread += (size_t)n;
        f->budget -= (size_t)n;
        return n;
    }
    if (n == WS_IO_AGAIN) {
        f->would_block = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        if (n == 0)
            f->eof = 1;
        else
            f->io_error = "recv";
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    ws_frames *f = user;
    (void)flags;
    if (f->eof || f->io_error != NULL) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    ssize_t n = f->ops->send(f->io, data, len);
    if (n > 0)
        return n;
    if (n == WS_IO_AGAIN) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
        f->io_error = "send";
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
}

/* Client frames are masked with unpredictable keys (RFC 6455 5.3). */
static int on_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)user;
    if (len > 0x7fffffff || RAND_bytes(buf, (int)len) != 1) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return 0;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                   void *user)
{
    ws_frames *f = user;
    (void)ctx;
    if (a->opcode == WSLAY_CONNECTION_CLOSE) {
        f->close_code = a->status_code != 0 ? a->status_code : WSLAY_CODE_NO_STATUS_RCVD;
        size_t n = a->msg_length > 2 ? a->msg_length - 2 : 0;
        if (n > CLOSE_TEXT_MAX)
            n = CLOSE_TEXT_MAX; /* wslay caps control frames at 125 */
        if (n > 0)
            memcpy(f->close_text, a->msg + 2, n);
        f->close_len = n;
    } else if ((a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME) && !f->closing) {
        /* wslay hands an empty message over as NULL. */
        static const uint8_t none[1];
        f->h.message(f->user, a->opcode == WSLAY_BINARY_FRAME, a->msg != NULL ? a->msg : none,
                     a->msg_length);
    }
}

/* ---- lifetime ------------------------------------------------------------------------ */

ws_frames *ws_frames_new(const ws_io_ops *ops, void *io, const ws_frames_handlers *h,
                         void *user, uint64_t max_message, const uint8_t *pre, size_t npre)
{
    ws_frames *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->ops = ops;
    f->io = io;
    f->h = *h;
    f->user = user;
    if (npre > 0) {
        if ((f->pre = malloc(npre)) == NULL) {
            free(f);
            return NULL;
        }
        memcpy(f->pre, pre, npre);
        f->npre = npre;
    }
    struct wslay_event_callbacks cb = {on_recv, on_send, on_genmask, NULL, NULL, NULL, on_msg};
    if (wslay_event_context_client_init(&f->ctx, &cb, f) != 0) {
        free(f->pre);
        free(f);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(f->ctx, max_message);
    return f;
}

void ws_frames_free(ws_frames *f)
{
    if (f == NULL)
        return;
    wslay_event_context_free(f->ctx);
    free(f->pre);
    free(f);
}

/* ---- operations ----------------------------------------------------------------------- */

int ws_frames_send_text(ws_frames *f, const uint8_t *p, size_t n)
{
    if (f->closing)
        return -1;
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, p, n};
    int r = wslay_event_queue_msg(f->ctx, &m);
    if (r == WSLAY_ERR_NOMEM)
        f->nomem = 1;
    return r == 0 ? 0 : -1;
}

void ws_frames_close(ws_frames *f, int code)
{
    f->closing = 1;
    if (wslay_event_queue_close(f->ctx, (uint16_t)code, NULL, 0) == WSLAY_ERR_NOMEM)
        f->nomem = 1;
}

size_t ws_frames_queued(const ws_frames *f)
{
    return wslay_event_get_queued_msg_length(f->ctx);
}

void ws_frames_on_writable(ws_frames *f)
{
    int r = wslay_event_send(f->ctx);
    if (r == WSLAY_ERR_NOMEM)
        f->nomem = 1;
    else if (r != 0 && f->io_error == NULL && !f->eof)
        f->io_error = "send"; /* the mask key could not be made */
}

int ws_frames_on_readable(ws_frames *f)
{
    /* wslay_event_recv returns after a short read that ends mid-frame; the
     * rest may already sit decrypted in the TLS layer, where poll() cannot
     * see it. So read until io itself says it has nothing (or the budget is
     * spent, and the caller comes back). */
    int r;
    size_t before;
    f->budget = WS_READ_BUDGET;
    f->budget_hit = 0;
    do {
        f->would_block = 0;
        before = f->nread;
        r = wslay_event_recv(f->ctx);
    } while (r == 0 && !f->would_block && !f->budget_hit && f->nread != before && !f->eof &&
             f->io_error == NULL && wslay_event_get_read_enabled(f->ctx));
    if (r == WSLAY_ERR_NOMEM)
        f->nomem = 1;
    int more = f->budget_hit && r == 0 && wslay_event_get_read_enabled(f->ctx);
    /* Pongs, the answer to a close, or our close after a protocol error:
     * out at once when the socket takes them. */
    if (wslay_event_want_write(f->ctx))
        ws_frames_on_writable(f);
    return more;
}

int ws_frames_want_read(const ws_frames *f)
{
    return wslay_event_want_read(f->ctx);
}

int ws_frames_want_write(const ws_frames *f)
{
    return wslay_event_want_write(f->ctx);
}

static const char *protocol_why(int code_sent)
{
    switch (code_sent) {
    case WSLAY_CODE_MESSAGE_TOO_BIG:
        return "too_large";
    case WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA:
        return "bad_utf8";
    default:
        return "bad_frame";
    }
}

int ws_frames_ended(ws_frames *f, ws_end *e)
{
    wslay_event_context_ptr c = f->ctx;
    memset(e, 0, sizeof *e);
    int sent_or_stuck = wslay_event_get_close_sent(c) || !wslay_event_get_write_enabled(c) ||
                        !wslay_event_want_write(c);
    if (f->nomem) {
        e->kind = WS_END_PROTOCOL;
        e->what = "nomem";
        return 1;
    }
    if (wslay_event_get_close_received(c)) {
        /* The server's close, answered (or unanswerable): over. */
        if (!sent_or_stuck && f->io_error == NULL && !f->eof)
            return 0;
        e->kind = WS_END_CLOSE;
        e->code = f->close_code;
        e->text = f->close_text;
        e->text_len = f->close_len;
        return 1;
    }
    if (f->io_error != NULL || f->eof) {
        e->kind = WS_END_TRANSPORT;
        e->what = f->io_error != NULL ? f->io_error : "closed";
        return 1;
    }
    if (!wslay_event_get_read_enabled(c)) {
        /* wslay found a bad frame and queued its close: report once sent. */
        if (!sent_or_stuck)
            return 0;
        e->kind = WS_END_PROTOCOL;
        e->what = protocol_why(wslay_event_get_status_code_sent(c));
        return 1;
    }
    return 0;
}
