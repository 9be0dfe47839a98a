/*
 * http.h — HTTP(S) client on one libcurl multi handle, driven by the port's
 * poll loop (CURLMOPT_SOCKETFUNCTION + CURLMOPT_TIMERFUNCTION).
 *
 * Policy: TLS always verified (system CAs, plus an optional extra bundle),
 * http/https only, no redirects, keep-alive connection reuse, response body
 * capped at HTTP_BODY_MAX, never anything on stdout.
 *
 * A transfer is built (http_xfer_new + setters), started, and then belongs to
 * this module until its done callback has run (the callback runs exactly
 * once, from http_poll_handle) or it is cancelled (no callback).
 */
#ifndef IBKR_HTTP_H
#define IBKR_HTTP_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_BODY_MAX ((size_t)64 * 1024 * 1024)
#define HTTP_HEADERS_MAX ((size_t)1024 * 1024) /* all response header bytes */
#define HTTP_URL_MAX ((size_t)64 * 1024)
#define HTTP_TIMEOUT_DEFAULT 10000
#define HTTP_TIMEOUT_NONE (-1L)  /* no time limit */
/* A request's own headers (PROTOCOL.md): count and name + value bytes. */
#define HTTP_REQ_HEADERS_MAX 100
#define HTTP_REQ_HEADER_BYTES_MAX ((size_t)64 * 1024)
/* What one transfer takes: those and the signed Authorization. */
#define HTTP_XFER_HEADERS_MAX (HTTP_REQ_HEADERS_MAX + 1)

typedef struct http_xfer http_xfer;

typedef struct {
    /* NULL for an HTTP response (status 100..599); else "timeout" or a
     * transport kind: "resolve" "connect" "tls" "send" "recv" "too_large"
     * "bad_status" "other" — the real class, whatever happened before. */
    const char *error;
    const char *detail;   /* curl's message for an error (no secrets), or "" */
    /* An error: some byte of the request may have reached the server (a
     * connection was set up for it and libcurl was about to send). */
    int sent;
    long status;
    const char *body;
    size_t body_len;
    /* Headers of the final response, packed; read with http_header_next. */
    const unsigned char *hdrs;
    size_t hdrs_len;
    size_t nhdrs;
} http_result;

typedef void (*http_done_fn)(void *user, const http_result *r);

/* Iterates packed headers: *pos starts at 0. 1 and the next pair, or 0. */
int http_header_next(const http_result *r, size_t *pos, const char **name, size_t *nlen,
                     const char **value, size_t *vlen);

/* Loads libcurl on the first call (curl_lazy.h) and sets up the multi
 * handle; needed before http_xfer_new. 0, or -1 with *why a message for a
 * log line (a later call tries again). */
int http_open(const char **why);
/* Aborts every transfer (no callbacks), then curl_global_cleanup. */
void http_global_cleanup(void);

/* The policy every transfer gets (TLS verified against the system store and
 * the extra bundle, http/https only, no redirects, no signals, keep-alive,
 * the shared TLS session cache), set on another libcurl easy handle (a
 * CURL *) so it connects exactly as every request does. 0 / -1 (also before
 * http_open). */
int http_easy_policy(void *easy);
/* A libcurl CURLcode as a transport kind: "timeout", "resolve", "connect",
 * "tls", "send", "recv", "too_large" or "other". */
const char *http_error_kind(int curl_code);

/* Extra trusted CA bundle (in addition to the system store) for transfers
 * started from now on; NULL: system store only. 0 / -1. */
int http_set_ca_file(const char *path);

typedef enum {
    HTTP_SET_OK = 0,
    HTTP_SET_BAD_METHOD,
    HTTP_SET_BAD_URL,
    HTTP_SET_BAD_HEADER,
    HTTP_SET_BAD_BODY,     /* a body for GET or HEAD */
    HTTP_SET_NOMEM
} http_set_status;

http_xfer *http_xfer_new(void); /* NULL: out of memory, or not http_open */
void http_xfer_free(http_xfer *x); /* only for a transfer never started; NULL ok */
/* GET HEAD POST PUT PATCH DELETE (upper case). */
http_set_status http_xfer_method(http_xfer *x, const char *method);
/* Absolute http:// or https:// URL with a host (as libcurl parses it),
 * NUL-terminated, at most HTTP_URL_MAX bytes, sent as given. */
http_set_status http_xfer_url(http_xfer *x, const char *url);
/* One request header; name is a token, value without CR/LF/NUL, at most
 * HTTP_XFER_HEADERS_MAX per transfer. A Content-Length is ignored (libcurl
 * sends the real one). Linear in the header's size, O(1) in the count. */
http_set_status http_xfer_header(http_xfer *x, const char *name, size_t nlen,
                                 const char *value, size_t vlen);
/* Body bytes (copied at start). Set the method first. */
http_set_status http_xfer_body(http_xfer *x, const char *body, size_t len);
/* ms > 0, or HTTP_TIMEOUT_NONE (an expired deadline is the caller's to
 * answer without starting the transfer). */
void http_xfer_timeout(http_xfer *x, long ms);
/* Hands the transfer to curl. 0, or -1 (then x is still the caller's). */
int http_xfer_start(http_xfer *x, http_done_fn done, void *user);
/* Aborts a started transfer; its callback will not run. */
void http_xfer_cancel(http_xfer *x);

/* ---- poll loop integration ------------------------------------------------ */
size_t http_poll_count(void);                         /* sockets curl watches */
size_t http_poll_fill(struct pollfd *p, size_t max);  /* their pollfds */
int http_poll_timeout(void);                          /* ms until curl's timer, -1 none */
/* After poll(): lets curl act on ready sockets and an expired timer, then
 * runs the done callbacks of finished transfers. */
void http_poll_handle(const struct pollfd *p, size_t n);

#endif
