/*
 * curl_watch.c — a multi handle's sockets and timer as pollfds and a poll
 * timeout. See curl_watch.h.
 */
#include "curl_watch.h"

#include <stdlib.h>

#include "curl_lazy.h"
#include "mono_ms.h"

void curl_watch_init(curl_watch *w, size_t max)
{
    w->socks = NULL;
    w->n = w->cap = 0;
    w->max = max;
    w->deadline = -1;
}

void curl_watch_free(curl_watch *w)
{
    free(w->socks);
    curl_watch_init(w, w->max);
}

int curl_watch_socket(curl_watch *w, curl_socket_t s, int what)
{
    size_t i = 0;
    while (i < w->n && w->socks[i].fd != s)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < w->n)
            w->socks[i] = w->socks[--w->n];
        return 0;
    }
    short ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= POLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= POLLOUT;
    if (i == w->n) {
        if (w->max > 0 && w->n == w->max)
            return -1;
        if (w->n == w->cap) {
            size_t cap = w->cap ? 2 * w->cap : (w->max > 0 ? w->max : 16);
            curl_watched *p = realloc(w->socks, cap * sizeof *p);
            if (p == NULL)
                return -1;
            w->socks = p;
            w->cap = cap;
        }
        w->socks[w->n++].fd = s;
    }
    w->socks[i].events = ev;
    return 0;
}

void curl_watch_timer(curl_watch *w, long timeout_ms)
{
    w->deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    (void)socketp;
    return curl_watch_socket(userp, s, what);
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    /* Only remember it: calling socket_action from here is not allowed. */
    curl_watch_timer(userp, timeout_ms);
    return 0;
}

int curl_watch_attach(curl_watch *w, CURLM *m)
{
    int bad = 0;
    bad |= curl_lazy.multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK;
    bad |= curl_lazy.multi_setopt(m, CURLMOPT_SOCKETDATA, w) != CURLM_OK;
    bad |= curl_lazy.multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_timer) != CURLM_OK;
    bad |= curl_lazy.multi_setopt(m, CURLMOPT_TIMERDATA, w) != CURLM_OK;
    return bad ? -1 : 0;
}

size_t curl_watch_fill(const curl_watch *w, struct pollfd *p, size_t max)
{
    size_t n = w->n < max ? w->n : max;
    for (size_t i = 0; i < n; i++) {
        p[i].fd = w->socks[i].fd;
        p[i].events = w->socks[i].events;
        p[i].revents = 0;
    }
    return n;
}

int curl_watch_timeout(const curl_watch *w)
{
    if (w->deadline < 0)
        return -1;
    int64_t left = w->deadline - mono_ms();
    if (left <= 0)
        return 0;
    return left > 60000 ? 60000 : (int)left;
}

void curl_watch_act(curl_watch *w, CURLM *m, const struct pollfd *p, size_t n)
{
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
        (void)curl_lazy.multi_socket_action(m, p[i].fd, ev, &running);
    }
    if (w->deadline >= 0 && mono_ms() >= w->deadline) {
        w->deadline = -1; /* curl sets the next one from inside socket_action */
        (void)curl_lazy.multi_socket_action(m, CURL_SOCKET_TIMEOUT, 0, &running);
    }
}
