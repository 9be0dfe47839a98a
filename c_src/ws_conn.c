/*
 * ws_conn.c — connect-only libcurl transfers for the websocket. See
 * ws_conn.h.
 */
#include "ws_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curl_lazy.h"
#include "curl_watch.h"
#include "http.h"
#include "ws_frames.h"

struct ws_conn {
    CURLM *multi;
    CURL *easy;
    ws_conn_state state;
    curl_watch watch; /* multi's sockets and timer while connecting */
    curl_socket_t fd;
    const char *error;
    char errbuf[CURL_ERROR_SIZE];
};

ws_conn *ws_conn_start(const char *url, long timeout_ms)
{
    ws_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    curl_watch_init(&c->watch, WS_CONN_SOCKS_MAX);
    c->fd = CURL_SOCKET_BAD;
    c->state = WS_CONN_CONNECTING;
    if ((c->multi = curl_lazy.multi_init()) == NULL || (c->easy = curl_lazy.easy_init()) == NULL)
        goto fail;
    int bad = 0;
    bad |= curl_watch_attach(&c->watch, c->multi) != 0;
    CURL *e = c->easy;
    bad |= http_easy_policy(e) != 0;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_URL, url) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L) != CURLE_OK;
    /* ALPN offers http/1.1 only: the upgrade is an HTTP/1.1 request. */
    bad |= curl_lazy.easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) != CURLE_OK;
    if (bad || curl_lazy.multi_add_handle(c->multi, e) != CURLM_OK)
        goto fail;
    return c;
fail:
    if (c->easy != NULL)
        curl_lazy.easy_cleanup(c->easy);
    if (c->multi != NULL)
        curl_lazy.multi_cleanup(c->multi);
    curl_watch_free(&c->watch);
    free(c);
    return NULL;
}

void ws_conn_free(ws_conn *c)
{
    if (c == NULL)
        return;
    (void)curl_lazy.multi_remove_handle(c->multi, c->easy);
    curl_lazy.easy_cleanup(c->easy);
    curl_lazy.multi_cleanup(c->multi);
    curl_watch_free(&c->watch);
    free(c);
}

ws_conn_state ws_conn_get_state(const ws_conn *c)
{
    return c->state;
}

const char *ws_conn_error(const ws_conn *c, const char **detail)
{
    *detail = c->errbuf;
    return c->error;
}

size_t ws_conn_poll_fill(const ws_conn *c, struct pollfd *p, size_t max)
{
    return c->state == WS_CONN_CONNECTING ? curl_watch_fill(&c->watch, p, max) : 0;
}

int ws_conn_poll_timeout(const ws_conn *c)
{
    return c->state == WS_CONN_CONNECTING ? curl_watch_timeout(&c->watch) : -1;
}

static void check_done(ws_conn *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_lazy.multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode rc = m->data.result;
        curl_socket_t fd = CURL_SOCKET_BAD;
        if (rc == CURLE_OK &&
            curl_lazy.easy_getinfo(c->easy, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK &&
            fd != CURL_SOCKET_BAD) {
            c->fd = fd;
            c->state = WS_CONN_READY;
        } else {
            c->error = rc == CURLE_OK ? "other" : http_error_kind((int)rc);
            if (c->errbuf[0] == '\0')
                (void)snprintf(c->errbuf, sizeof c->errbuf, "%s", curl_lazy.easy_strerror(rc));
            c->state = WS_CONN_FAILED;
        }
    }
}

void ws_conn_handle(ws_conn *c, const struct pollfd *p, size_t n)
{
    if (c->state != WS_CONN_CONNECTING)
        return;
    curl_watch_act(&c->watch, c->multi, p, n);
    check_done(c);
}

int ws_conn_fd(const ws_conn *c)
{
    return c->state == WS_CONN_READY ? (int)c->fd : -1;
}

ssize_t ws_conn_send(void *io, const uint8_t *p, size_t n)
{
    ws_conn *c = io;
    size_t sent = 0;
    CURLcode rc = curl_lazy.easy_send(c->easy, p, n, &sent);
    if (rc == CURLE_AGAIN)
        return WS_IO_AGAIN;
    if (rc != CURLE_OK)
        return WS_IO_ERROR;
    return sent > 0 ? (ssize_t)sent : WS_IO_AGAIN;
}

ssize_t ws_conn_recv(void *io, uint8_t *p, size_t n)
{
    ws_conn *c = io;
    size_t got = 0;
    CURLcode rc = curl_lazy.easy_recv(c->easy, p, n, &got);
    if (rc == CURLE_AGAIN)
        return WS_IO_AGAIN;
    if (rc != CURLE_OK)
        return WS_IO_ERROR;
    return (ssize_t)got; /* 0: the peer closed */
}
