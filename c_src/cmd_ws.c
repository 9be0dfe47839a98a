/*
 * cmd_ws.c — the websocket commands (ws_open, ws_send, ws_close, cancel of
 * a pending ws_open) and the {0, {ws, Conn, Event}} events; the connection
 * itself is ws_client.c. One socket per port: a new ws_open replaces the
 * current one (closed event `replaced`), which then finishes its close
 * handshake silently in the background.
 */
#include <stdlib.h>
#include <string.h>

#include "cmd_ws.h"
#include "commands.h"
#include "http.h"
#include "json_etf.h"
#include "port_state.h"
#include "ws_client.h"

#define WS_MAX_MESSAGE_DEFAULT ((uint64_t)1024 * 1024)
#define WS_MAX_MESSAGE_LIMIT ((uint64_t)64 * 1024 * 1024)
#define WS_SEND_QUEUE_MAX ((size_t)16 * 1024 * 1024) /* unsent bytes (server not reading) */
#define DEFAULT_UA "ClientPortalGW/1"

static struct {
    ws_client *cur;      /* the connection events are about */
    uint64_t conn;       /* its number */
    uint64_t open_id;    /* its ws_open request, until answered */
    uint64_t max_message;
    ws_client *old;      /* replaced or closed, finishing its close */
    uint64_t last_conn;
    size_t ncur, nold;   /* pollfds filled for each */
} W;

/* ---- events ------------------------------------------------------------------------------ */

/* {0, {ws, Conn, Inner}}: the header up to Inner. */
static ei_x_buff *begin_event(size_t extra)
{
    if (erlcmd_reserve(g_port.c, extra + 64) != 0)
        return NULL;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, 0);
    if (x == NULL)
        return NULL;
    int r = ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "ws");
    r |= ei_x_encode_ulonglong(x, W.conn);
    if (r != 0) {
        (void)erlcmd_end(g_port.c, r);
        return NULL;
    }
    return x;
}

/* {message, Term} for a JSON payload: 0, or -1 (not JSON). */
static int encode_json(ei_x_buff *x, const uint8_t *p, size_t n)
{
    if (ei_x_encode_tuple_header(x, 2) != 0 || ei_x_encode_atom(x, "message") != 0)
        return -1;
    return json_etf_decode(x, (const char *)p, n, NULL);
}

/* The event term of one message: {message, Term}, else {text, Bin}. */
static int encode_message(ei_x_buff *x, const uint8_t *p, size_t n)
{
    int mark = x->index;
    if (encode_json(x, p, n) == 0)
        return 0;
    x->index = mark; /* whatever the JSON attempt wrote */
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "text");
    r |= erlcmd_encode_binary(x, p, n);
    return r;
}

static void on_message(void *user, int binary, const uint8_t *p, size_t n)
{
    (void)user;
    (void)binary;
    ei_x_buff *x = begin_event(n);
    if (x != NULL)
        (void)erlcmd_end(g_port.c, encode_message(x, p, n));
}

static void send_closed(const ws_end *e)
{
    ei_x_buff *x = begin_event(e != NULL ? e->text_len : 0);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "closed");
    if (e == NULL) {
        r |= ei_x_encode_atom(x, "replaced");
    } else if (e->kind == WS_END_CLOSE) {
        r |= ei_x_encode_tuple_header(x, 3);
        r |= ei_x_encode_atom(x, "close");
        r |= ei_x_encode_long(x, e->code);
        r |= erlcmd_encode_binary(x, e->text, e->text_len);
    } else {
        r |= ei_x_encode_tuple_header(x, 2);
        r |= ei_x_encode_atom(x, e->kind == WS_END_TRANSPORT ? "transport" : "protocol");
        r |= ei_x_encode_atom(x, e->what);
    }
    (void)erlcmd_end(g_port.c, r);
}

static void on_ended(void *user, const ws_end *e)
{
    (void)user;
    (void)erlcmd_log(g_port.c, "info", "websocket %llu closed", (unsigned long long)W.conn);
    send_closed(e);
}

static void on_opened(void *user)
{
    (void)user;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, W.open_id);
    if (x != NULL) {
        int r = ei_x_encode_tuple_header(x, 2);
        r |= ei_x_encode_atom(x, "ok");
        r |= ei_x_encode_ulonglong(x, W.conn);
        (void)erlcmd_end(g_port.c, r);
    }
    W.open_id = 0;
}

static void on_failed(void *user, const ws_fail *f)
{
    (void)user;
    uint64_t id = W.open_id;
    W.open_id = 0;
    switch (f->kind) {
    case WS_FAIL_TIMEOUT:
        reply_error(id, "timeout");
        break;
    case WS_FAIL_TRANSPORT:
        (void)erlcmd_log(g_port.c, "debug", "websocket open failed: %s (%s)", f->what, f->detail);
        reply_error2(id, "transport", f->what);
        break;
    case WS_FAIL_BAD_RESPONSE:
        (void)erlcmd_log(g_port.c, "warning", "websocket open: bad response (%s)", f->what);
        reply_error2(id, "bad_response", f->what);
        break;
    default:
        (void)erlcmd_log(g_port.c, "warning", "websocket open: HTTP status %d", f->status);
        reply_http_status(id, f->status, f->body, f->body_len);
        break;
    }
}

static const ws_client_handlers HANDLERS = {on_opened, on_failed, on_message, on_ended};

/* ---- connections ---------------------------------------------------------------------------- */

/* Frees what has finished (after a callback could have ended it). */
static void reap(void)
{
    if (W.cur != NULL && ws_client_finished(W.cur)) {
        ws_client_free(W.cur);
        W.cur = NULL;
        W.ncur = 0;
    }
    if (W.old != NULL && ws_client_finished(W.old)) {
        ws_client_free(W.old);
        W.old = NULL;
        W.nold = 0;
    }
}

/* The current connection goes to the background, silenced; a pending
 * ws_open is answered `cancelled`, an open one reports `replaced` when
 * replaced is set. */
static void retire_current(int replaced)
{
    if (W.cur == NULL)
        return;
    if (W.open_id != 0) {
        reply_error(W.open_id, "cancelled");
        W.open_id = 0;
    } else if (replaced) {
        send_closed(NULL);
    }
    ws_client_close(W.cur);
    ws_client_free(W.old); /* at most one in the background */
    W.old = W.cur;
    W.nold = 0;
    W.cur = NULL;
    W.ncur = 0;
    reap();
}

int ws_cancel_open(uint64_t id)
{
    if (W.cur == NULL || W.open_id != id)
        return 0;
    retire_current(0);
    return 1;
}

/* ---- commands --------------------------------------------------------------------------------- */

enum { O_COOKIE, O_UA, O_TIMEOUT, O_MAX, O_COUNT };

void cmd_ws_open(const frame *f, uint64_t id, int at)
{
    mfield fl[O_COUNT] = {{"cookie", -1}, {"user_agent", -1}, {"timeout", -1}, {"max_message", -1}};
    if (map_fields(f, at, fl, O_COUNT) != 0) {
        reply_badarg(id, "opts");
        return;
    }
    ws_open_opts o = {NULL, 0, DEFAULT_UA, sizeof DEFAULT_UA - 1, HTTP_TIMEOUT_DEFAULT,
                      WS_MAX_MESSAGE_DEFAULT};
    int idx;
    if ((idx = fl[O_COOKIE].at) < 0 || dec_bin(f, &idx, &o.cookie, &o.cookie_len) != 0 ||
        !ws_cookie_ok(o.cookie, o.cookie_len)) {
        reply_badarg(id, "cookie");
        return;
    }
    if ((idx = fl[O_UA].at) >= 0 && (dec_bin(f, &idx, &o.user_agent, &o.user_agent_len) != 0 ||
                                     !ws_user_agent_ok(o.user_agent, o.user_agent_len))) {
        reply_badarg(id, "user_agent");
        return;
    }
    long timeout;
    const char *bad = get_timeout(f, fl[O_TIMEOUT].at, &timeout);
    if (bad != NULL) {
        reply_badarg(id, bad);
        return;
    }
    o.timeout_ms = timeout == HTTP_TIMEOUT_NONE ? 0 : timeout; /* ws_client: 0 = none */
    unsigned long long max;
    if ((idx = fl[O_MAX].at) >= 0) {
        if (dec_u64(f, &idx, &max) != 0 || max == 0 || max > WS_MAX_MESSAGE_LIMIT) {
            reply_badarg(id, "max_message");
            return;
        }
        o.max_message = max;
    }
    if (timeout == 0) {
        reply_error(id, "timeout"); /* a deadline already passed: nothing sent */
        return;
    }
    const char *why;
    if (http_open(&why) != 0) {
        (void)erlcmd_log(g_port.c, "warning", "websocket unavailable: %s", why);
        reply_error2(id, "transport", "other");
        return;
    }
    ws_target tg;
    if (ws_target_init(&tg, g_port.base_url, oauth_access_token(g_port.session)) != 0) {
        reply_error(id, "nomem");
        return;
    }
    retire_current(1);
    W.cur = ws_client_open(&tg, &o, &HANDLERS, NULL);
    ws_target_free(&tg);
    if (W.cur == NULL) {
        reply_error2(id, "transport", "other");
        return;
    }
    W.conn = ++W.last_conn;
    W.open_id = id;
    W.max_message = o.max_message;
    W.ncur = 0;
    g_port.requests++;
}

void cmd_ws_send(const frame *f, uint64_t id, int at)
{
    unsigned long long conn;
    const char *text;
    size_t n;
    if (dec_u64(f, &at, &conn) != 0) {
        reply_badarg(id, "conn");
        return;
    }
    if (dec_bin(f, &at, &text, &n) != 0) {
        reply_badarg(id, "text");
        return;
    }
    if (W.cur == NULL || conn != W.conn || W.open_id != 0) {
        reply_error(id, "closed");
        return;
    }
    if (n > W.max_message) {
        reply_badarg(id, "text");
        return;
    }
    if (ws_client_queued(W.cur) > WS_SEND_QUEUE_MAX) {
        reply_error(id, "busy");
        return;
    }
    if (ws_client_send_text(W.cur, (const uint8_t *)text, n) != 0)
        reply_error(id, "closed");
    else
        (void)erlcmd_reply_ok(g_port.c, id);
    reap();
}

void cmd_ws_close(const frame *f, uint64_t id, int at)
{
    unsigned long long conn;
    if (dec_u64(f, &at, &conn) != 0) {
        reply_badarg(id, "conn");
        return;
    }
    if (W.cur != NULL && conn == W.conn && W.open_id == 0)
        retire_current(0);
    (void)erlcmd_reply_ok(g_port.c, id);
}

/* ---- poll loop -------------------------------------------------------------------------------- */

size_t ws_poll_count(void)
{
    return (W.cur != NULL ? ws_client_poll_count(W.cur) : 0) +
           (W.old != NULL ? ws_client_poll_count(W.old) : 0);
}

size_t ws_poll_fill(struct pollfd *p, size_t max, int may_read)
{
    W.ncur = W.cur != NULL ? ws_client_poll_fill(W.cur, p, max, may_read) : 0;
    W.nold = W.old != NULL ? ws_client_poll_fill(W.old, p + W.ncur, max - W.ncur, 1) : 0;
    return W.ncur + W.nold;
}

int ws_poll_timeout(void)
{
    int a = W.cur != NULL ? ws_client_poll_timeout(W.cur) : -1;
    int b = W.old != NULL ? ws_client_poll_timeout(W.old) : -1;
    return a < 0 ? b : (b < 0 || a < b) ? a : b;
}

void ws_poll_handle(const struct pollfd *p, size_t n)
{
    size_t ncur = W.ncur <= n ? W.ncur : n;
    size_t nold = W.nold <= n - ncur ? W.nold : n - ncur;
    ws_client *old = W.old;
    if (old != NULL)
        ws_client_handle(old, p + ncur, nold);
    if (W.cur != NULL)
        ws_client_handle(W.cur, p, ncur);
    W.ncur = W.nold = 0;
    reap();
}

void ws_shutdown(void)
{
    ws_client_free(W.cur);
    ws_client_free(W.old);
    memset(&W, 0, sizeof W);
}
