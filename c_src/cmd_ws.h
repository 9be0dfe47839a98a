/*
 * cmd_ws.h — the port's websocket (PROTOCOL.md: ws_open, ws_send,
 * ws_close, the {ws, Conn, Event} events) as the poll loop sees it: at most
 * two connections, the current one and one finishing its close handshake.
 */
#ifndef IBKR_CMD_WS_H
#define IBKR_CMD_WS_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* Cancels the ws_open waiting under id (answered {error, cancelled}): 1,
 * or 0 when no ws_open waits under it. */
int ws_cancel_open(uint64_t id);

size_t ws_poll_count(void);  /* an upper bound of what ws_poll_fill fills */
/* may_read 0: the output to the BEAM is backed up, leave messages unread. */
size_t ws_poll_fill(struct pollfd *p, size_t max, int may_read);
int ws_poll_timeout(void);   /* ms, -1 none */
void ws_poll_handle(const struct pollfd *p, size_t n);
/* Exit path: connections dropped without events. */
void ws_shutdown(void);

#endif
