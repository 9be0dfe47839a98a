/*
 * ws_conn.c — connect-only libcurl transfers for the websocket. See
 * ws_conn.h.
 */
#include "ws_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "curl_lazy.h"
#include "http.h"
#include "ws_frames.h"

#define SOCKS_MAX 4 /* happy eyeballs: IPv4 and IPv6 attempts at once */

typedef struct {
    curl_socket_t fd;
    short events;
} watched;

struct ws_conn {
    CURLM *multi;
    CURL *easy;
    ws_conn_state state;
    watched socks[SOCKS_MAX];
    size_t nsocks;
    int64_t deadline; /* libcurl's timer, CLOCK_MONOTONIC ms; -1 none */
    curl_socket_t fd;
    const char *error;
    char errbuf[CURL_ERROR_SIZE];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    ws_conn *c = userp;
    (void)e;
    (void)socketp;
    size_t i = 0;
    while (i < c->nsocks && c->socks[i].fd != s)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < c->nsocks)
            c->socks[i] = c->socks[--c->nsocks];
        return 0;
    }
    if (i == c->nsocks) {
        if (c->nsocks == SOCKS_MAX)
            return -1;
        c->socks[c->nsocks++].fd = s;
    }
    short ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= POLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= POLLOUT;
    c->socks[i].events = ev;
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    ws_conn *c = userp;
    (void)m;
    c->deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    return 0;
}

ws_conn *ws_conn_start(const char *url, long timeout_ms)
{
    ws_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->deadline = -1;
    c->fd = CURL_SOCKET_BAD;
    c->state = WS_CONN_CONNECTING;
    if ((c->multi = curl_lazy.multi_init()) == NULL || (c->easy = curl_lazy.easy_init()) == NULL)
        goto fail;
    int bad = 0;
    bad |= curl_lazy.multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK;
    bad |= curl_lazy.multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK;
    bad |= curl_lazy.multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK;
    bad |= curl_lazy.multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK;
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
    if (c->state != WS_CONN_CONNECTING)
        return 0;
    size_t n = c->nsocks < max ? c->nsocks : max;
    for (size_t i = 0; i < n; i++) {
        p[i].fd = c->socks[i].fd;
        p[i].events = c->socks[i].events;
        p[i].revents = 0;
    }
    return n;
}

int ws_conn_poll_timeout(const ws_conn *c)
{
    if (c->state != WS_CONN_CONNECTING || c->deadline < 0)
        return -1;
    int64_t left = c->deadline - now_ms();
    return left <= 0 ? 0 : left > 60000 ? 60000 : (int)left;
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
    int running = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i].revents == 0)
            continue;
        int ev = 0;
        if (p[i].revents & (POLLIN | POLLHUP))
            ev |= CURL_CSELECT_IN;
        if (p[i].revents & POLLOUT)
            ev |= CURL_CSELECT_OUT;
        if (p[i].revents & (POLLERR | POLLNVAL))
            ev |= CURL_CSELECT_ERR;
        (void)curl_lazy.multi_socket_action(c->multi, p[i].fd, ev, &running);
    }
    if (c->deadline >= 0 && now_ms() >= c->deadline) {
        c->deadline = -1;
        (void)curl_lazy.multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
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
