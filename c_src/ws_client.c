/*
 * ws_client.c — one websocket connection's state machine. See ws_client.h.
 */
#include "ws_client.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "mono_ms.h"
#include "ws_conn.h"

enum { C_CONNECTING, C_SEND_REQ, C_READ_HEAD, C_READ_BODY, C_OPEN, C_CLOSING, C_DONE };

#define IN_MAX (WS_HEAD_MAX + WS_ERROR_BODY_MAX)

struct ws_client {
    int state;
    int silent;           /* ws_client_close was called: no more callbacks */
    ws_conn *conn;
    ws_frames *frames;
    ws_client_handlers h;
    void *user;
    strbuf req;           /* the upgrade request (holds the token) */
    size_t req_off;
    char accept[WS_ACCEPT_LEN + 1];
    uint8_t *in;          /* the answer's head (and body) */
    size_t inlen;
    ws_response resp;
    int64_t deadline;     /* open timeout, or end of the close wait; -1 none */
    int more;             /* the read budget ran out with input left */
    int may_read;         /* as the last ws_client_poll_fill was told */
    uint64_t max_message;
};

static const ws_io_ops CONN_IO = {ws_conn_send, ws_conn_recv};

ws_client *ws_client_open(const ws_target *t, const ws_open_opts *o, const ws_client_handlers *h,
                          void *user)
{
    ws_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->h = *h;
    c->user = user;
    c->max_message = o->max_message;
    c->deadline = o->timeout_ms > 0 ? mono_ms() + o->timeout_ms : -1;
    uint8_t nonce[WS_NONCE_LEN];
    char key[WS_KEY_LEN + 1];
    if (RAND_bytes(nonce, sizeof nonce) != 1)
        goto fail;
    ws_key_encode(nonce, key);
    if (ws_accept_for(key, c->accept) != 0 ||
        ws_request_build(&c->req, t, key, o->cookie, o->cookie_len, o->user_agent,
                         o->user_agent_len) != 0 ||
        (c->in = malloc(IN_MAX)) == NULL ||
        (c->conn = ws_conn_start(t->connect_url, o->timeout_ms)) == NULL)
        goto fail;
    c->state = C_CONNECTING;
    return c;
fail:
    strbuf_free(&c->req);
    free(c->in);
    free(c);
    return NULL;
}

void ws_client_free(ws_client *c)
{
    if (c == NULL)
        return;
    ws_frames_free(c->frames);
    ws_conn_free(c->conn);
    strbuf_free(&c->req); /* wiped */
    free(c->in);
    free(c);
}

/* ---- the opening handshake ------------------------------------------------------------- */

static void fail(ws_client *c, const ws_fail *f)
{
    c->state = C_DONE;
    if (!c->silent)
        c->h.failed(c->user, f);
}

static void fail_with(ws_client *c, int kind, const char *what, const char *detail)
{
    ws_fail f;
    memset(&f, 0, sizeof f);
    f.kind = kind;
    f.what = what;
    f.detail = detail != NULL ? detail : "";
    fail(c, &f);
}

static void fail_http(ws_client *c)
{
    ws_fail f;
    memset(&f, 0, sizeof f);
    f.kind = WS_FAIL_HTTP;
    f.status = c->resp.status;
    f.body = c->in + c->resp.head_len;
    f.body_len = c->inlen - c->resp.head_len;
    if (c->resp.content_length >= 0 && (uint64_t)c->resp.content_length < f.body_len)
        f.body_len = (size_t)c->resp.content_length;
    fail(c, &f);
}

static void frames_message(void *user, int binary, const uint8_t *p, size_t n)
{
    ws_client *c = user;
    if (!c->silent)
        c->h.message(c->user, binary, p, n);
}

static const ws_frames_handlers FRAMES_H = {frames_message};

static void run_frames(ws_client *c, int readable, int writable);

/* The head is complete and says 101 with the right Accept. */
static void upgraded(ws_client *c)
{
    size_t head = c->resp.head_len;
    c->frames = ws_frames_new(&CONN_IO, c->conn, &FRAMES_H, c, c->max_message, c->in + head,
                              c->inlen - head);
    if (c->frames == NULL) {
        fail_with(c, WS_FAIL_TRANSPORT, "other", "out of memory");
        return;
    }
    free(c->in);
    c->in = NULL;
    c->inlen = 0;
    c->state = C_OPEN;
    c->deadline = -1;
    c->h.opened(c->user);
    /* Frames may have come with the head, or wait in the TLS buffer
     * where poll() cannot see them. */
    run_frames(c, 1, 1);
}

static int body_complete(const ws_client *c)
{
    size_t have = c->inlen - c->resp.head_len;
    return c->resp.content_length < 0 || (uint64_t)c->resp.content_length <= have ||
           c->inlen == IN_MAX;
}

static void read_answer(ws_client *c)
{
    for (;;) {
        if (c->inlen == IN_MAX) {
            if (c->state == C_READ_BODY)
                fail_http(c);
            else
                fail_with(c, WS_FAIL_BAD_RESPONSE, "ws_upgrade", NULL);
            return;
        }
        ssize_t n = ws_conn_recv(c->conn, c->in + c->inlen, IN_MAX - c->inlen);
        if (n == WS_IO_AGAIN)
            return;
        if (n <= 0) {
            if (c->state == C_READ_BODY)
                fail_http(c); /* the body ends with the connection */
            else
                fail_with(c, WS_FAIL_TRANSPORT, "recv", n == 0 ? "closed before the answer" : "");
            return;
        }
        c->inlen += (size_t)n;
        if (c->state == C_READ_BODY) {
            if (body_complete(c)) {
                fail_http(c);
                return;
            }
            continue;
        }
        switch (ws_response_parse((const char *)c->in, c->inlen, c->accept, &c->resp)) {
        case WS_RESP_MORE:
            continue;
        case WS_RESP_UPGRADED:
            upgraded(c);
            return;
        case WS_RESP_REFUSED:
            c->state = C_READ_BODY;
            if (body_complete(c)) {
                fail_http(c);
                return;
            }
            continue;
        case WS_RESP_BAD_ACCEPT:
            fail_with(c, WS_FAIL_BAD_RESPONSE, "ws_accept", NULL);
            return;
        default:
            fail_with(c, WS_FAIL_BAD_RESPONSE, "ws_upgrade", NULL);
            return;
        }
    }
}

static void send_request(ws_client *c)
{
    while (c->req_off < c->req.len) {
        ssize_t n = ws_conn_send(c->conn, (const uint8_t *)c->req.data + c->req_off,
                                 c->req.len - c->req_off);
        if (n == WS_IO_AGAIN)
            return;
        if (n < 0) {
            fail_with(c, WS_FAIL_TRANSPORT, "send", NULL);
            return;
        }
        c->req_off += (size_t)n;
    }
    strbuf_free(&c->req);
    c->state = C_READ_HEAD;
    read_answer(c);
}

/* ---- open and closing ------------------------------------------------------------------ */

static void run_frames(ws_client *c, int readable, int writable)
{
    if (readable)
        c->more = ws_frames_want_read(c->frames) && ws_frames_on_readable(c->frames);
    if (writable && ws_frames_want_write(c->frames))
        ws_frames_on_writable(c->frames);
    ws_end e;
    if (ws_frames_ended(c->frames, &e)) {
        int was_silent = c->silent;
        c->state = C_DONE;
        if (!was_silent)
            c->h.ended(c->user, &e);
    }
}

int ws_client_send_text(ws_client *c, const uint8_t *p, size_t n)
{
    if (c->state != C_OPEN || c->silent || ws_frames_send_text(c->frames, p, n) != 0)
        return -1;
    /* Out now if the socket takes it; the rest on POLLOUT. */
    run_frames(c, 0, 1);
    return 0;
}

size_t ws_client_queued(const ws_client *c)
{
    return c->frames != NULL ? ws_frames_queued(c->frames) : 0;
}

void ws_client_close(ws_client *c)
{
    c->silent = 1;
    if (c->state != C_OPEN) {
        c->state = C_DONE;
        return;
    }
    c->state = C_CLOSING;
    c->deadline = mono_ms() + WS_CLOSE_WAIT_MS;
    ws_frames_close(c->frames, 1000);
    run_frames(c, 0, 1);
}

int ws_client_finished(const ws_client *c)
{
    return c->state == C_DONE;
}

/* ---- poll loop ------------------------------------------------------------------------- */

size_t ws_client_poll_count(const ws_client *c)
{
    if (c->state == C_DONE)
        return 0;
    return c->state == C_CONNECTING ? WS_CONN_SOCKS_MAX : 1;
}

size_t ws_client_poll_fill(ws_client *c, struct pollfd *p, size_t max, int may_read)
{
    c->may_read = may_read || c->state == C_CLOSING;
    if (c->state == C_CONNECTING)
        return ws_conn_poll_fill(c->conn, p, max);
    if (c->state == C_DONE || max == 0)
        return 0;
    short ev = 0;
    switch (c->state) {
    case C_SEND_REQ:
        ev = POLLOUT;
        break;
    case C_READ_HEAD:
    case C_READ_BODY:
        ev = POLLIN;
        break;
    default:
        if (c->may_read && ws_frames_want_read(c->frames))
            ev |= POLLIN;
        if (ws_frames_want_write(c->frames))
            ev |= POLLOUT;
        break;
    }
    p[0].fd = ws_conn_fd(c->conn);
    p[0].events = ev;
    p[0].revents = 0;
    return 1;
}

int ws_client_poll_timeout(const ws_client *c)
{
    if (c->more && c->may_read && c->state != C_DONE)
        return 0; /* input left over from the last turn */
    int t = c->state == C_CONNECTING ? ws_conn_poll_timeout(c->conn) : -1;
    if (c->deadline >= 0 && c->state != C_DONE) {
        int64_t left = c->deadline - mono_ms();
        int d = left <= 0 ? 0 : left > 60000 ? 60000 : (int)left;
        if (t < 0 || d < t)
            t = d;
    }
    return t;
}

void ws_client_handle(ws_client *c, const struct pollfd *p, size_t n)
{
    int rev = n > 0 && c->state != C_CONNECTING ? p[0].revents : 0;
    switch (c->state) {
    case C_CONNECTING:
        ws_conn_handle(c->conn, p, n);
        if (ws_conn_get_state(c->conn) == WS_CONN_FAILED) {
            const char *detail;
            const char *kind = ws_conn_error(c->conn, &detail);
            if (kind != NULL && strcmp(kind, "timeout") == 0)
                fail_with(c, WS_FAIL_TIMEOUT, NULL, detail);
            else
                fail_with(c, WS_FAIL_TRANSPORT, kind != NULL ? kind : "other", detail);
        } else if (ws_conn_get_state(c->conn) == WS_CONN_READY) {
            c->state = C_SEND_REQ;
            send_request(c);
        }
        break;
    case C_SEND_REQ:
        if (rev != 0)
            send_request(c);
        break;
    case C_READ_HEAD:
    case C_READ_BODY:
        if (rev != 0)
            read_answer(c);
        break;
    case C_OPEN:
    case C_CLOSING:
        if (rev != 0 || (c->more && c->may_read))
            run_frames(c, (rev & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0 ||
                              (c->more && c->may_read),
                       (rev & (POLLOUT | POLLERR)) != 0);
        break;
    default:
        break;
    }
    if (c->deadline >= 0 && c->state != C_DONE && c->state != C_OPEN && mono_ms() >= c->deadline) {
        if (c->state == C_CLOSING)
            c->state = C_DONE; /* the server never answered our close */
        else
            fail_with(c, WS_FAIL_TIMEOUT, NULL, NULL);
    }
}
