/*
 * dispatch.c — the command table, {Id, Command} decoding and the shared
 * state and replies of PROTOCOL.md; the commands themselves live in
 * cmd_init.c, cmd_crypto.c and cmd_http.c.
 *
 * Every frame is first checked by erlcmd_check_term (ei has no bounds
 * checks), then decoded with ei_decode_* / ei_get_type, each result checked
 * (etf_args.c). Strings for C APIs go into a per-command arena wiped after
 * each frame. The sign path allocates nothing in steady state.
 */
#include "dispatch.h"

#include <string.h>

#include <openssl/crypto.h>

#include "dispatch_internal.h"

/* ---- state --------------------------------------------------------------------- */

dispatch_state D;

/* ---- replies that count as errors ------------------------------------------------ */

void reply_error(uint64_t id, const char *reason)
{
    D.errors++;
    (void)erlcmd_reply_error(D.c, id, reason);
}

void reply_error2(uint64_t id, const char *tag, const char *what)
{
    D.errors++;
    (void)erlcmd_reply_error2(D.c, id, tag, what);
}

void reply_badarg(uint64_t id, const char *field)
{
    reply_error2(id, "badarg", field);
}

void reply_bad_config(uint64_t id, const char *field, const char *why)
{
    D.errors++;
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "error");
    r |= ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "bad_config");
    r |= ei_x_encode_atom(x, field);
    r |= ei_x_encode_atom(x, why);
    (void)erlcmd_end(D.c, r);
}

/* {ok, #{expires_at => Ms}} */
void reply_expires(uint64_t id, int64_t ms)
{
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_encode_map_header(x, 1);
    r |= ei_x_encode_atom(x, "expires_at");
    r |= ei_x_encode_longlong(x, ms);
    (void)erlcmd_end(D.c, r);
}

void reply_oauth_error(uint64_t id, oauth_status st)
{
    reply_error(id, oauth_status_atom(st));
}

static void cmd_echo(const frame *f, uint64_t id, int at)
{
    int end = at;
    if (erlcmd_skip_term(f->buf, f->len, &end) != 0) {
        reply_error(id, "badarg");
        return;
    }
    if (erlcmd_reserve(D.c, (size_t)(end - at) + 64) != 0)
        return;
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_append_buf(x, f->buf + at, end - at); /* end <= len <= 16 MiB */
    (void)erlcmd_end(D.c, r);
}

static void cmd_stats(const frame *f, uint64_t id, int at)
{
    (void)f;
    (void)at;
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_encode_map_header(x, 4);
    r |= ei_x_encode_atom(x, "inflight");
    r |= ei_x_encode_ulonglong(x, D.waiting);
    r |= ei_x_encode_atom(x, "requests");
    r |= ei_x_encode_ulonglong(x, D.requests);
    r |= ei_x_encode_atom(x, "handshakes");
    r |= ei_x_encode_ulonglong(x, D.handshakes);
    r |= ei_x_encode_atom(x, "errors");
    r |= ei_x_encode_ulonglong(x, D.errors);
    (void)erlcmd_end(D.c, r);
}

/* ---- dispatch ------------------------------------------------------------------------ */

typedef void (*cmd_fn)(const frame *f, uint64_t id, int at);

static const struct {
    const char *name;
    int arity;         /* arguments after the name; 0: a bare atom */
    int needs_session;
    cmd_fn fn;
} COMMANDS[] = {
    {"sign", 3, 1, cmd_sign},
    {"http", 1, 1, cmd_http},
    {"echo", 1, 0, cmd_echo},
    {"init", 1, 0, cmd_init},
    {"lst_request", 1, 1, cmd_lst_request},
    {"lst_complete", 1, 1, cmd_lst_complete},
    {"live_session_token", 0, 1, cmd_live_session_token},
    {"authenticate", 1, 1, cmd_authenticate},
    {"cancel", 1, 0, cmd_cancel},
    {"stats", 0, 1, cmd_stats},
    {"generate_rsa", 1, 0, cmd_generate_rsa},
    {"generate_dh", 1, 0, cmd_generate_dh},
};

static void run(const frame *f, int idx)
{
    int arity, t, sz;
    unsigned long long id;
    if (ei_decode_tuple_header(f->buf, &idx, &arity) != 0 || arity != 2 ||
        dec_u64(f, &idx, &id) != 0) {
        D.errors++;
        (void)erlcmd_protocol_error(D.c, "bad_frame");
        return;
    }

    /* The command: a bare atom, or a tuple whose first element is one. */
    char name[ATOM_BUF];
    int nargs = 0;
    name[0] = '\0';
    if (type_at(f, idx, &t, &sz) != 0) {
        D.errors++;
        (void)erlcmd_protocol_error(D.c, "bad_frame");
        return;
    }
    if (t == ERL_ATOM_EXT) {
        if (dec_atom(f, &idx, name) != 0)
            name[0] = '\0';
    } else if (t == ERL_SMALL_TUPLE_EXT || t == ERL_LARGE_TUPLE_EXT) {
        int n;
        if (ei_decode_tuple_header(f->buf, &idx, &n) == 0 && n >= 1 && dec_atom(f, &idx, name) == 0)
            nargs = n - 1;
        else
            name[0] = '\0';
    }

    size_t i = 0, ncmd = sizeof COMMANDS / sizeof COMMANDS[0];
    while (i < ncmd && strcmp(name, COMMANDS[i].name) != 0)
        i++;
    if (id == 0) {
        /* Id 0 asks for no reply, which only cancel can honour. */
        if (i < ncmd && COMMANDS[i].fn == cmd_cancel && nargs == 1 && t != ERL_ATOM_EXT) {
            cmd_cancel(f, 0, idx);
        } else {
            D.errors++;
            (void)erlcmd_protocol_error(D.c, "bad_frame");
        }
        return;
    }
    if (i == ncmd) {
        reply_error(id, "unknown_command");
        return;
    }
    if (COMMANDS[i].needs_session && D.session == NULL) {
        reply_error(id, "not_initialized");
        return;
    }
    /* A bare atom for a command with arguments, or the wrong arity. */
    if ((COMMANDS[i].arity == 0) != (t == ERL_ATOM_EXT) || nargs != COMMANDS[i].arity) {
        reply_error(id, "badarg");
        return;
    }
    COMMANDS[i].fn(f, id, idx);
}

/* One term: decoded, run, its arena wiped (and the bytes, if secret). */
static void dispatch_term(erlcmd *c, char *buf, size_t len)
{
    D.c = c;
    D.wipe_frame = 0;
    int idx = 0, version;
    if (erlcmd_check_term(buf, len) != 0 || ei_decode_version(buf, &idx, &version) != 0) {
        D.errors++;
        (void)erlcmd_protocol_error(c, "bad_term");
    } else {
        frame f = {buf, len};
        run(&f, idx);
    }
    arena_reset();
    if (D.wipe_frame)
        OPENSSL_cleanse(buf, len);
}

/* A batch frame (PROTOCOL.md): BATCH_TAG, then length-prefixed terms, each
 * run as if it had come alone. It lets the session hand many requests over
 * in one write. A length running past the end ends the batch with
 * bad_frame; an inner batch is not a term (bad_term). */
#define BATCH_TAG 0

static void dispatch_batch(erlcmd *c, char *buf, size_t len)
{
    size_t off = 1;
    while (off < len) {
        size_t left = len - off;
        const unsigned char *h = (const unsigned char *)buf + off;
        uint32_t n = left < 4 ? 0
                              : ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) |
                                    ((uint32_t)h[2] << 8) | (uint32_t)h[3];
        if (left < 4 || n > left - 4) {
            D.errors++;
            (void)erlcmd_protocol_error(c, "bad_frame");
            return;
        }
        char *term = buf + off + 4;
        if (n > 0 && (unsigned char)term[0] == BATCH_TAG) {
            D.errors++;
            (void)erlcmd_protocol_error(c, "bad_term");
        } else {
            dispatch_term(c, term, n);
        }
        off += 4 + (size_t)n;
    }
}

void dispatch_frame(erlcmd *c, char *buf, size_t len, void *ctx)
{
    (void)ctx;
    if (len > 1 && (unsigned char)buf[0] == BATCH_TAG)
        dispatch_batch(c, buf, len);
    else
        dispatch_term(c, buf, len);
}

void dispatch_shutdown(void)
{
    ops_shutdown();
    oauth_session_free(D.session);
    D.session = NULL;
    free(D.base_url);
    free(D.lst_url);
    D.base_url = D.lst_url = NULL;
    arena_reset();
}
