/*
 * dispatch.c — frames and batches from the BEAM, {Id, Command} decoding,
 * and running the command's row of the table (commands.c); the port-wide
 * state and replies live in port_state.c.
 *
 * Every frame is first checked by erlcmd_check_term (ei has no bounds
 * checks), then decoded with ei_decode_* / ei_get_type, each result checked
 * (etf_args.c). Strings for C APIs go into a per-command arena wiped after
 * each frame. The sign path allocates nothing in steady state.
 */
#include "dispatch.h"

#include <string.h>

#include <openssl/crypto.h>

#include "cmd_ws.h"
#include "commands.h"
#include "port_state.h"

static void run(const frame *f, int idx)
{
    int arity, t, sz;
    unsigned long long id;
    if (ei_decode_tuple_header(f->buf, &idx, &arity) != 0 || arity != 2 ||
        dec_u64(f, &idx, &id) != 0) {
        g_port.errors++;
        (void)erlcmd_protocol_error(g_port.c, "bad_frame");
        return;
    }

    /* The command: a bare atom, or a tuple whose first element is one. */
    char name[ATOM_BUF];
    int nargs = 0;
    name[0] = '\0';
    if (type_at(f, idx, &t, &sz) != 0) {
        g_port.errors++;
        (void)erlcmd_protocol_error(g_port.c, "bad_frame");
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

    const command *cmd = command_find(name);
    /* A bare atom for a command with arguments, or the wrong arity. */
    int shape_ok = cmd != NULL && (cmd->arity == 0) == (t == ERL_ATOM_EXT) && nargs == cmd->arity;
    if (id == 0) {
        /* Id 0 asks for no reply, which only some commands can honour (and
         * a refusal cannot be addressed to anyone). */
        if (shape_ok && cmd->id0 && (!cmd->needs_session || g_port.session != NULL)) {
            cmd->fn(f, 0, idx);
        } else {
            g_port.errors++;
            (void)erlcmd_protocol_error(g_port.c, "bad_frame");
        }
        return;
    }
    if (cmd == NULL) {
        reply_error(id, "unknown_command");
        return;
    }
    if (cmd->needs_session && g_port.session == NULL) {
        reply_error(id, "not_initialized");
        return;
    }
    if (!shape_ok) {
        reply_error(id, "badarg");
        return;
    }
    cmd->fn(f, id, idx);
}

/* One term: decoded, run, its arena wiped (and the bytes, if secret). */
static void dispatch_term(erlcmd *c, char *buf, size_t len)
{
    g_port.c = c;
    g_port.wipe_frame = 0;
    int idx = 0, version;
    if (erlcmd_check_term(buf, len) != 0 || ei_decode_version(buf, &idx, &version) != 0) {
        g_port.errors++;
        (void)erlcmd_protocol_error(c, "bad_term");
    } else {
        frame f = {buf, len};
        run(&f, idx);
    }
    arena_reset();
    if (g_port.wipe_frame)
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
            g_port.errors++;
            (void)erlcmd_protocol_error(c, "bad_frame");
            return;
        }
        char *term = buf + off + 4;
        if (n > 0 && (unsigned char)term[0] == BATCH_TAG) {
            g_port.errors++;
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
    ws_shutdown();
    ops_shutdown();
    port_state_free();
    arena_reset();
}
