/*
 * ws_handshake.h — the RFC 6455 opening handshake as pure functions: the
 * target derived from init's base_url, the Sec-WebSocket-Key and its
 * expected Accept, the upgrade request, and the check of the server's
 * answer. No I/O, no global state (ws_client.c does the I/O).
 */
#ifndef IBKR_WS_HANDSHAKE_H
#define IBKR_WS_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define WS_NONCE_LEN 16
#define WS_KEY_LEN 24          /* base64 of the 16-byte nonce */
#define WS_ACCEPT_LEN 28       /* base64 of a SHA-1 digest */
#define WS_HEAD_MAX ((size_t)16 * 1024)   /* status line + headers of the answer */
#define WS_COOKIE_MAX 4096
#define WS_USER_AGENT_MAX 512

/* Where to connect and what to ask for. All strings malloc'd. */
typedef struct {
    char *connect_url; /* "https://H[:P]/" (or http): what libcurl connects to */
    char *host;        /* the Host header: "H[:P]" as in base_url */
    char *target;      /* "/PATH/ws?oauth_token=T" (T percent-encoded): secret */
} ws_target;

/* From an init-checked base_url ("http(s)://H[:P][/PATH]", no trailing
 * slash) and the access token. 0, or -1 (bad URL, empty token, no memory). */
int ws_target_init(ws_target *t, const char *base_url, const char *access_token);
/* Frees it, wiping the target (it carries the token). */
void ws_target_free(ws_target *t);

/* key = base64(nonce): WS_KEY_LEN characters and a NUL. */
void ws_key_encode(const uint8_t nonce[WS_NONCE_LEN], char key[WS_KEY_LEN + 1]);
/* accept = base64(SHA-1(key ++ RFC 6455 GUID)). 0 / -1. */
int ws_accept_for(const char *key, char accept[WS_ACCEPT_LEN + 1]);

/* Cookie value: 1..WS_COOKIE_MAX RFC 6265 cookie-octets. User-Agent:
 * 1..WS_USER_AGENT_MAX printable ASCII bytes or blanks. 1 if acceptable. */
int ws_cookie_ok(const char *p, size_t n);
int ws_user_agent_ok(const char *p, size_t n);

/* Appends the GET upgrade request ("Cookie: api=<cookie>"). Check cookie
 * and user agent first. 0 / -1 (no memory). */
int ws_request_build(strbuf *sb, const ws_target *t, const char *key, const char *cookie,
                     size_t clen, const char *ua, size_t ualen);

typedef enum {
    WS_RESP_MORE = 0,     /* the head is not complete yet */
    WS_RESP_UPGRADED,     /* 101 with Upgrade, Connection and the right Accept */
    WS_RESP_REFUSED,      /* a complete head with another status */
    WS_RESP_BAD_UPGRADE,  /* unparsable or over WS_HEAD_MAX, or a 101 without the
                             upgrade headers or with an extension/subprotocol */
    WS_RESP_BAD_ACCEPT    /* a 101 whose Sec-WebSocket-Accept is missing or wrong */
} ws_resp_status;

typedef struct {
    int status;            /* 100..599 once the status line parsed */
    size_t head_len;       /* bytes of the head, final CRLF CRLF included */
    long long content_length; /* REFUSED: its Content-Length, -1 none */
} ws_response;

/* Checks buf[0..len), the bytes received so far. Bytes after head_len
 * belong to the body (REFUSED) or are the first frames (UPGRADED). */
ws_resp_status ws_response_parse(const char *buf, size_t len, const char *accept,
                                 ws_response *r);

#endif
