/*
 * port_state.h — the one port-wide state the commands share (the channel
 * to the BEAM, the OAuth session, its URLs, the counters `stats` reports)
 * and the replies that count as errors. In-flight HTTP operations are
 * cmd_http.c's own.
 */
#ifndef IBKR_PORT_STATE_H
#define IBKR_PORT_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "erlcmd.h"
#include "oauth.h"

typedef struct {
    erlcmd *c;              /* the frame being handled came from here */
    oauth_session *session; /* NULL before a successful init */
    char *base_url;
    char *lst_url;
    uint64_t requests, handshakes, errors;
    int wipe_frame;         /* the current frame carries secrets */
} port_state;

extern port_state g_port;

/* Replies; all but reply_expires count in g_port.errors. */
void reply_error(uint64_t id, const char *reason);
void reply_error2(uint64_t id, const char *tag, const char *what);
void reply_badarg(uint64_t id, const char *field);
void reply_bad_config(uint64_t id, const char *field, const char *why);
void reply_oauth_error(uint64_t id, oauth_status st);
/* {error, {transport, Kind, #{sent => Sent}}}: the facts of an `http`
 * command's transport failure (PROTOCOL.md); the caller decides. */
void reply_transport_facts(uint64_t id, const char *kind, int sent);
/* {error, {http, Status, Body}}: a refused handshake or websocket upgrade. */
void reply_http_status(uint64_t id, long status, const void *body, size_t len);
void reply_expires(uint64_t id, int64_t ms); /* {ok, #{expires_at => Ms}} */

/* Wipes the session and URLs (exit path). */
void port_state_free(void);

#endif
