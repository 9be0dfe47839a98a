/*
 * port_state.c — the port-wide state and the replies that count as errors
 * (port_state.h).
 */
#include "port_state.h"

#include <stdlib.h>

port_state g_port;

void reply_error(uint64_t id, const char *reason)
{
    g_port.errors++;
    (void)erlcmd_reply_error(g_port.c, id, reason);
}

void reply_error2(uint64_t id, const char *tag, const char *what)
{
    g_port.errors++;
    (void)erlcmd_reply_error2(g_port.c, id, tag, what);
}

void reply_badarg(uint64_t id, const char *field)
{
    reply_error2(id, "badarg", field);
}

void reply_bad_config(uint64_t id, const char *field, const char *why)
{
    g_port.errors++;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "error");
    r |= ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "bad_config");
    r |= ei_x_encode_atom(x, field);
    r |= ei_x_encode_atom(x, why);
    (void)erlcmd_end(g_port.c, r);
}

void reply_oauth_error(uint64_t id, oauth_status st)
{
    reply_error(id, oauth_status_atom(st));
}

void reply_transport_facts(uint64_t id, const char *kind, int sent)
{
    g_port.errors++;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "error");
    r |= ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "transport");
    r |= ei_x_encode_atom(x, kind);
    r |= ei_x_encode_map_header(x, 1);
    r |= ei_x_encode_atom(x, "sent");
    r |= ei_x_encode_boolean(x, sent != 0);
    (void)erlcmd_end(g_port.c, r);
}

void reply_http_status(uint64_t id, long status, const void *body, size_t len)
{
    g_port.errors++;
    if (erlcmd_reserve(g_port.c, len + 256) != 0)
        return;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "error");
    r |= ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "http");
    r |= ei_x_encode_long(x, status);
    r |= erlcmd_encode_binary(x, body, len);
    (void)erlcmd_end(g_port.c, r);
}

void reply_expires(uint64_t id, int64_t ms)
{
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_encode_map_header(x, 1);
    r |= ei_x_encode_atom(x, "expires_at");
    r |= ei_x_encode_longlong(x, ms);
    (void)erlcmd_end(g_port.c, r);
}

void port_state_free(void)
{
    oauth_session_free(g_port.session);
    g_port.session = NULL;
    free(g_port.base_url);
    free(g_port.lst_url);
    g_port.base_url = g_port.lst_url = NULL;
}
