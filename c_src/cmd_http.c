/*
 * cmd_http.c — the commands that go over HTTP (authenticate, http) and
 * cancel: in-flight operations keyed by request id, and the replies sent
 * when libcurl completes a transfer.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmd_ws.h"
#include "commands.h"
#include "http.h"
#include "json_etf.h"
#include "lst_json.h"
#include "port_state.h"

enum { OP_HTTP, OP_AUTH };

/* An HTTP transfer in flight and the request ids waiting for it (several
 * only for an authenticate that later callers joined). */
typedef struct op {
    struct op *prev, *next;
    int kind;
    int decode_json; /* http with decode => json */
    http_xfer *xfer;
    uint64_t *ids;
    size_t nids, capids;
    uint64_t id0; /* ids points here until a second id arrives */
} op;

/* ---- in-flight operations ------------------------------------------------------------ */

static op *g_ops;       /* every operation in flight */
static op *g_auth;      /* the in-flight authenticate, if any */
static size_t g_waiting; /* request ids across g_ops */

size_t ops_waiting(void)
{
    return g_waiting;
}

static op *op_new(int kind, uint64_t id)
{
    op *o = calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->kind = kind;
    o->id0 = id;
    o->ids = &o->id0;
    o->nids = o->capids = 1;
    o->next = g_ops;
    if (g_ops != NULL)
        g_ops->prev = o;
    g_ops = o;
    g_waiting++;
    return o;
}

static int op_add_id(op *o, uint64_t id)
{
    if (o->nids == o->capids) {
        size_t cap = o->capids * 2;
        uint64_t *p = malloc(cap * sizeof *p);
        if (p == NULL)
            return -1;
        memcpy(p, o->ids, o->nids * sizeof *p);
        if (o->ids != &o->id0)
            free(o->ids);
        o->ids = p;
        o->capids = cap;
    }
    o->ids[o->nids++] = id;
    g_waiting++;
    return 0;
}

static void op_free(op *o)
{
    if (o->prev != NULL)
        o->prev->next = o->next;
    else
        g_ops = o->next;
    if (o->next != NULL)
        o->next->prev = o->prev;
    if (g_auth == o)
        g_auth = NULL;
    g_waiting -= o->nids;
    if (o->ids != &o->id0)
        free(o->ids);
    free(o);
}

/* The op waiting for id, and the position of id in it. */
static op *op_find(uint64_t id, size_t *pos)
{
    for (op *o = g_ops; o != NULL; o = o->next)
        for (size_t i = 0; i < o->nids; i++)
            if (o->ids[i] == id) {
                *pos = i;
                return o;
            }
    return NULL;
}

/* Aborts an op's transfer and answers all its ids {error, cancelled}. */
static void op_abort(op *o)
{
    http_xfer_cancel(o->xfer);
    for (size_t i = 0; i < o->nids; i++)
        reply_error(o->ids[i], "cancelled");
    op_free(o);
}

/* ---- HTTP completion ---------------------------------------------------------------- */

/* authenticate: {transport, Kind} (its retries are the caller's own). */
static void reply_transport(uint64_t id, const http_result *r)
{
    if (strcmp(r->error, "timeout") == 0)
        reply_error(id, "timeout");
    else
        reply_error2(id, "transport", r->error);
}

/* http: {transport, Kind, #{sent => Bool}}: the facts, so that the caller
 * can decide whether a resend is safe. */
static void reply_transport_http(uint64_t id, const http_result *r)
{
    if (strcmp(r->error, "timeout") == 0)
        reply_error(id, "timeout");
    else
        reply_transport_facts(id, r->error, r->sent);
}

static void log_transport(const char *what, const http_result *r)
{
    (void)erlcmd_log(g_port.c, "debug", "%s failed: %s (%s)", what, r->error, r->detail);
}

/* decode => json: the answer's json => Term, or json_error => Why when the
 * body is not JSON (the key is then rewritten). 0 / -1 (no memory). */
static int encode_json_answer(ei_x_buff *x, const char *body, size_t len)
{
    int at = x->index;
    const char *why = "nomem";
    if (ei_x_encode_atom(x, "json") != 0)
        return -1;
    if (json_etf_decode(x, body, len, &why) == 0)
        return 0;
    x->index = at;
    return ei_x_encode_atom(x, "json_error") == 0 && ei_x_encode_atom(x, why) == 0 ? 0 : -1;
}

/* {Id, {ok, #{status => S, headers => [{N, V}], body => B}}}, plus json or
 * json_error with decode */
static void reply_response(uint64_t id, const http_result *r, int decode)
{
    /* The decoded term comes on top of the body: 9/4 of the text at most (a
     * float is 9 bytes, "1.0," 4) plus a few bytes per level of nesting.
     * Reserved here, a lack of memory is {transport, too_large} rather than
     * a failed frame. */
    size_t need = r->body_len + (decode ? r->body_len / 4 * 9 + 1024 : 0) + r->hdrs_len +
                  16 * r->nhdrs + 256;
    if (r->body_len > HTTP_BODY_MAX || erlcmd_reserve(g_port.c, need) != 0) {
        reply_transport_facts(id, "too_large", 1);
        return;
    }
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int rc = ei_x_encode_tuple_header(x, 2);
    rc |= ei_x_encode_atom(x, "ok");
    rc |= ei_x_encode_map_header(x, decode ? 4 : 3);
    rc |= ei_x_encode_atom(x, "status");
    rc |= ei_x_encode_long(x, r->status);
    rc |= ei_x_encode_atom(x, "headers");
    if (r->nhdrs > 0)
        rc |= ei_x_encode_list_header(x, (long)r->nhdrs);
    size_t pos = 0, count = 0;
    const char *n, *v;
    size_t nl, vl;
    while (rc == 0 && count < r->nhdrs && http_header_next(r, &pos, &n, &nl, &v, &vl)) {
        rc |= ei_x_encode_tuple_header(x, 2);
        rc |= erlcmd_encode_binary(x, n, nl);
        rc |= erlcmd_encode_binary(x, v, vl);
        count++;
    }
    if (count != r->nhdrs)
        rc = -1;
    rc |= ei_x_encode_empty_list(x);
    rc |= ei_x_encode_atom(x, "body");
    rc |= erlcmd_encode_binary(x, r->body, r->body_len);
    if (decode && rc == 0)
        rc = encode_json_answer(x, r->body, r->body_len);
    (void)erlcmd_end(g_port.c, rc);
}

static void on_http_done(void *user, const http_result *r)
{
    op *o = user;
    if (r->error != NULL) {
        log_transport("http request", r);
        reply_transport_http(o->id0, r);
    } else {
        reply_response(o->id0, r, o->decode_json);
    }
    op_free(o);
}

static void on_auth_done(void *user, const http_result *r)
{
    op *o = user;
    if (g_auth == o)
        g_auth = NULL;
    if (r->error != NULL) {
        log_transport("authenticate", r);
        for (size_t i = 0; i < o->nids; i++)
            reply_transport(o->ids[i], r);
    } else if (r->status != 200) {
        (void)erlcmd_log(g_port.c, "warning", "authenticate: HTTP status %ld", r->status);
        for (size_t i = 0; i < o->nids; i++)
            reply_http_status(o->ids[i], r->status, r->body, r->body_len);
    } else {
        lst_answer a;
        lst_json_status js = lst_json_parse(r->body, r->body_len, &a);
        if (js != LST_JSON_OK) {
            (void)erlcmd_log(g_port.c, "warning", "authenticate: bad response (%s)",
                             lst_json_status_atom(js));
            for (size_t i = 0; i < o->nids; i++) {
                if (js == LST_JSON_BAD_DH)
                    reply_error(o->ids[i], lst_json_status_atom(js));
                else
                    reply_error2(o->ids[i], "bad_response", lst_json_status_atom(js));
            }
        } else {
            oauth_status st = oauth_lst_complete(g_port.session, a.dh_response, a.signature,
                                                 a.expires_ms);
            if (st == OAUTH_OK) {
                g_port.handshakes++;
                (void)erlcmd_log(g_port.c, "info", "live session token obtained, expires at %lld",
                                 (long long)a.expires_ms);
                for (size_t i = 0; i < o->nids; i++)
                    reply_expires(o->ids[i], a.expires_ms);
            } else {
                (void)erlcmd_log(g_port.c, "warning", "authenticate: %s", oauth_status_atom(st));
                for (size_t i = 0; i < o->nids; i++)
                    reply_error(o->ids[i], oauth_status_atom(st));
            }
            lst_answer_free(&a);
        }
    }
    op_free(o);
}

void ops_abort_auth(void)
{
    if (g_auth != NULL)
        op_abort(g_auth);
}

void ops_shutdown(void)
{
    while (g_ops != NULL) {
        op *o = g_ops;
        http_xfer_cancel(o->xfer);
        op_free(o);
    }
}

/* ---- HTTP commands ------------------------------------------------------------------ */

/* libcurl is loaded at the first request that needs it; when that fails the
 * request is answered as a transport failure (`other`, never sent) and the
 * reason logged. */
static int http_ready(uint64_t id, int facts)
{
    const char *why;
    if (http_open(&why) == 0)
        return 0;
    (void)erlcmd_log(g_port.c, "warning", "HTTP unavailable: %s", why);
    if (facts)
        reply_transport_facts(id, "other", 0);
    else
        reply_error2(id, "transport", "other");
    return -1;
}

void cmd_authenticate(const frame *f, uint64_t id, int at)
{
    mfield fl[4] = {{"nonce", -1}, {"timestamp", -1}, {"dh_random", -1}, {"timeout", -1}};
    if (map_fields(f, at, fl, 4) != 0) {
        reply_error(id, "badarg");
        return;
    }
    oauth_pins pins;
    long timeout;
    const char *bad = get_pins(f, fl, 1, &pins);
    if (bad == NULL)
        bad = get_timeout(f, fl[3].at, &timeout);
    if (bad != NULL) {
        reply_badarg(id, bad);
        return;
    }
    if (timeout == 0) {
        reply_error(id, "timeout"); /* its deadline has passed already */
        return;
    }
    /* One handshake at a time: a second caller joins the one in flight and
     * gets the same answer (a new one would replace its DH exponent). */
    if (g_auth != NULL) {
        if (op_add_id(g_auth, id) != 0)
            reply_error(id, "nomem");
        return;
    }
    if (http_ready(id, 0) != 0)
        return;
    char *auth = NULL;
    oauth_status st = oauth_lst_request(g_port.session, g_port.lst_url, &pins, &auth);
    if (st != OAUTH_OK) {
        if (st == OAUTH_ERR_BADARG && pins.dh_random_hex != NULL)
            reply_badarg(id, "dh_random");
        else
            reply_oauth_error(id, st);
        return;
    }
    http_xfer *x = http_xfer_new();
    op *o = NULL;
    int ok = x != NULL && http_xfer_method(x, "POST") == HTTP_SET_OK &&
             http_xfer_url(x, g_port.lst_url) == HTTP_SET_OK &&
             http_xfer_header(x, "Authorization", 13, auth, strlen(auth)) == HTTP_SET_OK &&
             http_xfer_body(x, "", 0) == HTTP_SET_OK;
    free(auth);
    if (ok) {
        http_xfer_timeout(x, timeout);
        ok = (o = op_new(OP_AUTH, id)) != NULL;
    }
    if (ok && http_xfer_start(x, on_auth_done, o) != 0)
        ok = 0;
    if (!ok) {
        if (o != NULL)
            op_free(o);
        http_xfer_free(x);
        reply_error2(id, "transport", "other");
        return;
    }
    o->xfer = x;
    g_auth = o;
    g_port.requests++;
}

/* ---- http: decoded into a request first, then the transfer is built ------------------ */

typedef struct {
    const char *name, *value; /* in the frame */
    size_t nlen, vlen;
} req_header;

typedef struct {
    char *method, *url;       /* arena strings */
    const char *body;         /* in the frame, or the arena for json */
    size_t body_len;
    long timeout;             /* ms, 0 (expired) or HTTP_TIMEOUT_NONE */
    int sign;
    int json;                 /* body encoded from the json field */
    int decode_json;          /* decode => json */
    int has_ctype;            /* a Content-Type among hdrs */
    req_header hdrs[HTTP_REQ_HEADERS_MAX];
    size_t nhdrs;
} http_req;

/* Request headers: a proper list of at most HTTP_REQ_HEADERS_MAX
 * {Name, Value} binaries, HTTP_REQ_HEADER_BYTES_MAX bytes in all. The count
 * is checked from the list header, before any element is read. With sign
 * set, a given Authorization is dropped (the signed one replaces it). */
static int dec_headers(const frame *f, int at, http_req *rq)
{
    int t, sz, n;
    size_t bytes = 0;
    rq->nhdrs = 0;
    if (type_at(f, at, &t, &sz) != 0 || (t != ERL_LIST_EXT && t != ERL_NIL_EXT) ||
        ei_decode_list_header(f->buf, &at, &n) != 0 || n < 0 || n > HTTP_REQ_HEADERS_MAX)
        return -1;
    for (int i = 0; i < n; i++) {
        int arity;
        req_header h;
        if (type_at(f, at, &t, &sz) != 0 || (t != ERL_SMALL_TUPLE_EXT && t != ERL_LARGE_TUPLE_EXT) ||
            ei_decode_tuple_header(f->buf, &at, &arity) != 0 || arity != 2 ||
            dec_bin(f, &at, &h.name, &h.nlen) != 0 || dec_bin(f, &at, &h.value, &h.vlen) != 0)
            return -1;
        bytes += h.nlen + h.vlen; /* each at most the 16 MiB frame */
        if (bytes > HTTP_REQ_HEADER_BYTES_MAX)
            return -1;
        if (rq->sign && h.nlen == 13 && strncasecmp(h.name, "authorization", 13) == 0)
            continue;
        if (h.nlen == 12 && strncasecmp(h.name, "content-type", 12) == 0)
            rq->has_ctype = 1;
        rq->hdrs[rq->nhdrs++] = h;
    }
    if (n > 0 && (type_at(f, at, &t, &sz) != 0 || t != ERL_NIL_EXT))
        return -1; /* the tail must be [] */
    return 0;
}

enum { H_METHOD, H_URL, H_HEADERS, H_BODY, H_TIMEOUT, H_SIGN, H_JSON, H_DECODE, H_COUNT };

/* json (the body, encoded into the arena) and decode => json. NULL, or the
 * bad field; *err "nomem" when memory ran out. */
static const char *dec_json_fields(const frame *f, const mfield *fl, http_req *rq,
                                   const char **err)
{
    int idx;
    const char *why;
    if ((idx = fl[H_DECODE].at) >= 0) {
        char a[ATOM_BUF];
        if (dec_atom(f, &idx, a) != 0 || strcmp(a, "json") != 0)
            return "decode";
        rq->decode_json = 1;
    }
    if ((idx = fl[H_JSON].at) < 0)
        return NULL;
    if (fl[H_BODY].at >= 0) /* one body, not two */
        return "json";
    if (dec_json(f, &idx, &rq->body, &rq->body_len, &why) != 0) {
        if (strcmp(why, "nomem") == 0)
            *err = "nomem";
        return "json";
    }
    rq->json = 1;
    return NULL;
}

/* The request map into rq. NULL, or the name of the bad field ("" for a
 * Req that is not a map); *err "nomem" when memory ran out. */
static const char *dec_http_req(const frame *f, int at, http_req *rq, const char **err)
{
    mfield fl[H_COUNT] = {{"method", -1}, {"url", -1}, {"headers", -1}, {"body", -1},
                          {"timeout", -1}, {"sign", -1}, {"json", -1}, {"decode", -1}};
    *err = NULL;
    if (map_fields(f, at, fl, H_COUNT) != 0)
        return "";
    int idx;
    const char *bad;
    rq->sign = 1;
    rq->body = "";
    rq->body_len = 0;
    rq->nhdrs = 0;
    rq->json = rq->decode_json = rq->has_ctype = 0;
    if ((idx = fl[H_METHOD].at) < 0 || dec_method(f, &idx, &rq->method) != 0)
        return "method";
    if ((idx = fl[H_URL].at) < 0 || dec_url(f, &idx, &rq->url) != 0)
        return "url";
    if ((idx = fl[H_SIGN].at) >= 0 && dec_bool(f, &idx, &rq->sign) != 0)
        return "sign";
    if ((idx = fl[H_BODY].at) >= 0 && dec_bin(f, &idx, &rq->body, &rq->body_len) != 0)
        return "body";
    if ((bad = dec_json_fields(f, fl, rq, err)) != NULL)
        return bad;
    if (fl[H_HEADERS].at >= 0 && dec_headers(f, fl[H_HEADERS].at, rq) != 0)
        return "headers";
    return get_timeout(f, fl[H_TIMEOUT].at, &rq->timeout);
}

/* Sets up x for rq, signed last (immediately before curl gets it). 0, or
 * -1 with *bad the badarg field or *err the reason (x is then freed). */
static int build_xfer(http_xfer *x, const http_req *rq, const char **bad, const char **err)
{
    *bad = *err = NULL;
    if (http_xfer_method(x, rq->method) != HTTP_SET_OK)
        *bad = "method";
    else if (http_xfer_url(x, rq->url) != HTTP_SET_OK)
        *bad = "url";
    else if (http_xfer_body(x, rq->body, rq->body_len) != HTTP_SET_OK)
        *bad = rq->json ? "json" : "body";
    for (size_t i = 0; *bad == NULL && i < rq->nhdrs; i++) {
        const req_header *h = &rq->hdrs[i];
        if (http_xfer_header(x, h->name, h->nlen, h->value, h->vlen) != HTTP_SET_OK)
            *bad = "headers";
    }
    if (*bad == NULL && rq->sign) {
        char auth[OAUTH_AUTH_MAX];
        oauth_status st = oauth_sign(g_port.session, rq->method, rq->url, NULL, NULL, auth,
                                     sizeof auth);
        if (st == OAUTH_ERR_BADARG || st == OAUTH_ERR_TOO_LONG)
            *bad = "url";
        else if (st != OAUTH_OK)
            *err = oauth_status_atom(st);
        else if (http_xfer_header(x, "Authorization", 13, auth, strlen(auth)) != HTTP_SET_OK)
            *err = "nomem";
    }
    /* The Web API takes JSON; IBKR answers 415/400 to an unlabelled body. */
    if (*bad == NULL && *err == NULL && rq->body_len > 0 && !rq->has_ctype &&
        http_xfer_header(x, "Content-Type", 12, "application/json", 16) != HTTP_SET_OK)
        *err = "nomem";
    if (*bad != NULL || *err != NULL) {
        http_xfer_free(x);
        return -1;
    }
    http_xfer_timeout(x, rq->timeout);
    return 0;
}

void cmd_http(const frame *f, uint64_t id, int at)
{
    http_req rq;
    const char *err, *bad = dec_http_req(f, at, &rq, &err);
    if (err != NULL) {
        reply_error(id, err);
        return;
    }
    if (bad != NULL) {
        if (bad[0] == '\0')
            reply_error(id, "badarg");
        else
            reply_badarg(id, bad);
        return;
    }
    if (rq.timeout == 0) {
        reply_error(id, "timeout"); /* its deadline has passed already */
        return;
    }
    if (http_ready(id, 1) != 0)
        return;
    http_xfer *x = http_xfer_new();
    if (x == NULL) {
        reply_transport_facts(id, "other", 0);
        return;
    }
    if (build_xfer(x, &rq, &bad, &err) != 0) {
        if (bad != NULL)
            reply_badarg(id, bad);
        else
            reply_error(id, err);
        return;
    }
    op *o = op_new(OP_HTTP, id);
    if (o == NULL || http_xfer_start(x, on_http_done, o) != 0) {
        if (o != NULL)
            op_free(o);
        http_xfer_free(x);
        reply_transport_facts(id, "other", 0);
        return;
    }
    o->xfer = x;
    o->decode_json = rq.decode_json;
    g_port.requests++;
}

void cmd_cancel(const frame *f, uint64_t id, int at)
{
    unsigned long long target;
    if (dec_u64(f, &at, &target) != 0 || target == 0) {
        if (id != 0)
            reply_badarg(id, "id");
        else
            (void)erlcmd_protocol_error(g_port.c, "bad_frame");
        return;
    }
    size_t pos;
    op *o = op_find(target, &pos);
    if (o == NULL)
        (void)ws_cancel_open(target);
    if (o != NULL) {
        if (o->nids == 1) {
            op_abort(o);
        } else {
            /* Others still wait for this handshake: only this caller leaves. */
            o->ids[pos] = o->ids[--o->nids];
            g_waiting--;
            reply_error(target, "cancelled");
        }
    }
    if (id != 0)
        (void)erlcmd_reply_ok(g_port.c, id);
}

