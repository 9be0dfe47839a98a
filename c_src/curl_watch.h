/*
 * curl_watch.h — the sockets and the timer a libcurl multi handle asks its
 * owner to watch (CURLMOPT_SOCKETFUNCTION / CURLMOPT_TIMERFUNCTION), turned
 * into pollfds and a poll timeout, and poll's answer handed back to
 * curl_multi_socket_action. Shared by the HTTP multi handle (http.c) and
 * each websocket's connect-only one (ws_conn.c).
 */
#ifndef IBKR_CURL_WATCH_H
#define IBKR_CURL_WATCH_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

typedef struct {
    curl_socket_t fd;
    short events;
} curl_watched;

typedef struct {
    curl_watched *socks;
    size_t n, cap;
    size_t max;       /* 0: as many as libcurl opens */
    int64_t deadline; /* libcurl's timer, mono_ms(); -1 none */
} curl_watch;

/* An empty watch; max > 0 makes libcurl's request for one more socket
 * fail (the transfer fails). */
void curl_watch_init(curl_watch *w, size_t max);
void curl_watch_free(curl_watch *w); /* back to empty, same max */

/* Registers w's callbacks on m. 0 ok, -1 libcurl refused. */
int curl_watch_attach(curl_watch *w, CURLM *m);

/* What the callbacks do, callable directly (the unit tests):
 * what is CURL_POLL_*; 0 ok, -1 no room (libcurl fails the transfer). */
int curl_watch_socket(curl_watch *w, curl_socket_t s, int what);
void curl_watch_timer(curl_watch *w, long timeout_ms);

size_t curl_watch_fill(const curl_watch *w, struct pollfd *p, size_t max);
int curl_watch_timeout(const curl_watch *w); /* ms, capped at 60 s; -1 none */
/* After poll(): socket_action for each pollfd with events, then for the
 * timer if it has expired. p: what curl_watch_fill filled. */
void curl_watch_act(curl_watch *w, CURLM *m, const struct pollfd *p, size_t n);

#endif
