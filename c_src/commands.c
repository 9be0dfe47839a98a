/*
 * commands.c — the command table of PROTOCOL.md, and the two commands too
 * small for a file of their own (echo, stats).
 */
#include "commands.h"

#include <string.h>

#include "port_state.h"

static void cmd_echo(const frame *f, uint64_t id, int at)
{
    int end = at;
    if (erlcmd_skip_term(f->buf, f->len, &end) != 0) {
        reply_error(id, "badarg");
        return;
    }
    if (erlcmd_reserve(g_port.c, (size_t)(end - at) + 64) != 0)
        return;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_append_buf(x, f->buf + at, end - at); /* end <= len <= 16 MiB */
    (void)erlcmd_end(g_port.c, r);
}

static void cmd_stats(const frame *f, uint64_t id, int at)
{
    (void)f;
    (void)at;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_encode_map_header(x, 4);
    r |= ei_x_encode_atom(x, "inflight");
    r |= ei_x_encode_ulonglong(x, ops_waiting());
    r |= ei_x_encode_atom(x, "requests");
    r |= ei_x_encode_ulonglong(x, g_port.requests);
    r |= ei_x_encode_atom(x, "handshakes");
    r |= ei_x_encode_ulonglong(x, g_port.handshakes);
    r |= ei_x_encode_atom(x, "errors");
    r |= ei_x_encode_ulonglong(x, g_port.errors);
    (void)erlcmd_end(g_port.c, r);
}

/* The hot commands first: the lookup is a linear scan. */
static const command COMMANDS[] = {
    /* name                 arity session id0 fn */
    {"sign",                3,    1,      0,  cmd_sign},
    {"http",                1,    1,      0,  cmd_http},
    {"echo",                1,    0,      0,  cmd_echo},
    {"init",                1,    0,      0,  cmd_init},
    {"lst_request",         1,    1,      0,  cmd_lst_request},
    {"lst_complete",        1,    1,      0,  cmd_lst_complete},
    {"live_session_token",  0,    1,      0,  cmd_live_session_token},
    {"authenticate",        1,    1,      0,  cmd_authenticate},
    {"cancel",              1,    0,      1,  cmd_cancel},
    {"stats",               0,    1,      0,  cmd_stats},
    {"ws_send",             2,    1,      0,  cmd_ws_send},
    {"ws_open",             1,    1,      0,  cmd_ws_open},
    {"ws_close",            1,    1,      0,  cmd_ws_close},
    {"generate_rsa",        1,    0,      0,  cmd_generate_rsa},
    {"generate_dh",         1,    0,      0,  cmd_generate_dh},
};

const command *command_find(const char *name)
{
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(name, COMMANDS[i].name) == 0)
            return &COMMANDS[i];
    return NULL;
}
