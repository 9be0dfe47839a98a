/*
 * ws_conn.h — the TCP (+TLS) connection under a websocket: libcurl with
 * CURLOPT_CONNECT_ONLY on a multi handle of its own, so it connects
 * (resolve, TCP, TLS verified exactly as every HTTP request: http.h's
 * policy) without blocking the port's poll loop; then the socket is
 * libcurl's CURLINFO_ACTIVESOCKET, read and written with curl_easy_recv /
 * curl_easy_send, non-blocking.
 *
 * The easy handle stays in its multi handle until ws_conn_free: removing a
 * CONNECT_ONLY handle makes libcurl close the connection.
 */
#ifndef IBKR_WS_CONN_H
#define IBKR_WS_CONN_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ws_conn ws_conn;

typedef enum { WS_CONN_CONNECTING, WS_CONN_READY, WS_CONN_FAILED } ws_conn_state;

/* Starts connecting to url ("https://host[:port]/"); timeout_ms 0: no
 * limit. http_open must have succeeded. NULL: out of memory or libcurl
 * refused the setup. */
ws_conn *ws_conn_start(const char *url, long timeout_ms);
void ws_conn_free(ws_conn *c); /* closes the connection; NULL ok */

ws_conn_state ws_conn_get_state(const ws_conn *c);
/* FAILED: "timeout" or a transport kind (http.h), and libcurl's message. */
const char *ws_conn_error(const ws_conn *c, const char **detail);

/* While CONNECTING: the sockets and timer libcurl asks for, at most
 * WS_CONN_SOCKS_MAX sockets (happy eyeballs: IPv4 and IPv6 attempts at once). */
#define WS_CONN_SOCKS_MAX 4
size_t ws_conn_poll_fill(const ws_conn *c, struct pollfd *p, size_t max);
int ws_conn_poll_timeout(const ws_conn *c); /* ms, -1 none */
/* After poll(): lets libcurl progress (p: what ws_conn_poll_fill filled). */
void ws_conn_handle(ws_conn *c, const struct pollfd *p, size_t n);

/* READY: the socket to poll, and non-blocking I/O with ws_frames.h's
 * return convention (> 0, 0 end of stream, WS_IO_AGAIN, WS_IO_ERROR). */
int ws_conn_fd(const ws_conn *c);
ssize_t ws_conn_send(void *c, const uint8_t *p, size_t n);
ssize_t ws_conn_recv(void *c, uint8_t *p, size_t n);

#endif
