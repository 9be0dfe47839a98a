/*
 * ws_client.h — one websocket client connection: connect (ws_conn), the
 * opening handshake (ws_handshake), then frames (ws_frames), with the
 * open timeout and a bounded close. The owner (cmd_ws.c) gets callbacks;
 * they only report, the owner frees the client after ws_client_handle has
 * returned.
 */
#ifndef IBKR_WS_CLIENT_H
#define IBKR_WS_CLIENT_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "ws_frames.h"
#include "ws_handshake.h"

#define WS_ERROR_BODY_MAX ((size_t)64 * 1024) /* body of a refused upgrade */
#define WS_CLOSE_WAIT_MS 2000                 /* for the server's close frame */

/* Why an open failed. */
typedef struct {
    enum { WS_FAIL_TRANSPORT, WS_FAIL_TIMEOUT, WS_FAIL_HTTP, WS_FAIL_BAD_RESPONSE } kind;
    const char *what;    /* TRANSPORT: kind; BAD_RESPONSE: "ws_accept" / "ws_upgrade" */
    const char *detail;  /* TRANSPORT: libcurl's message, for a log line */
    int status;          /* HTTP */
    const uint8_t *body; /* HTTP */
    size_t body_len;
} ws_fail;

typedef struct {
    void (*opened)(void *user);
    void (*failed)(void *user, const ws_fail *f);
    void (*message)(void *user, int binary, const uint8_t *p, size_t n);
    void (*ended)(void *user, const ws_end *e);
} ws_client_handlers;

typedef struct {
    const char *cookie;
    size_t cookie_len;
    const char *user_agent;
    size_t user_agent_len;
    long timeout_ms;      /* 0: none */
    uint64_t max_message;
} ws_open_opts;

typedef struct ws_client ws_client;

/* Starts connecting; http_open must have succeeded and the options been
 * checked (ws_cookie_ok, ws_user_agent_ok). NULL: no memory, no randomness
 * or libcurl refused the setup. */
ws_client *ws_client_open(const ws_target *t, const ws_open_opts *o, const ws_client_handlers *h,
                          void *user);
void ws_client_free(ws_client *c);

/* Open: queue one text frame. 0, or -1 (not open, or closing). */
int ws_client_send_text(ws_client *c, const uint8_t *p, size_t n);
size_t ws_client_queued(const ws_client *c);
/* Silences the client (no callback runs again) and starts the close
 * handshake; it finishes on its own (ws_client_finished), at most
 * WS_CLOSE_WAIT_MS later. */
void ws_client_close(ws_client *c);
/* 1 once the client has nothing left to do: free it. */
int ws_client_finished(const ws_client *c);

/* The poll loop. may_read 0 leaves an open socket's input unread (the
 * output to the BEAM is backed up). */
size_t ws_client_poll_count(const ws_client *c);
size_t ws_client_poll_fill(ws_client *c, struct pollfd *p, size_t max, int may_read);
int ws_client_poll_timeout(const ws_client *c);
void ws_client_handle(ws_client *c, const struct pollfd *p, size_t n);

#endif
