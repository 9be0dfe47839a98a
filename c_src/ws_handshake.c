/*
 * ws_handshake.c — RFC 6455 section 4 for a client. See ws_handshake.h.
 */
#include "ws_handshake.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- target -------------------------------------------------------------------- */

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

int ws_target_init(ws_target *t, const char *base_url, const char *access_token)
{
    memset(t, 0, sizeof *t);
    const char *scheme;
    size_t skip;
    if (strncasecmp(base_url, "https://", 8) == 0) {
        scheme = "https://";
        skip = 8;
    } else if (strncasecmp(base_url, "http://", 7) == 0) {
        scheme = "http://";
        skip = 7;
    } else {
        return -1;
    }
    const char *auth = base_url + skip;
    size_t alen = strcspn(auth, "/");
    const char *path = auth + alen;
    if (alen == 0 || access_token == NULL || access_token[0] == '\0' ||
        strpbrk(base_url, "?#") != NULL)
        return -1;

    strbuf u = STRBUF_INIT, tg = STRBUF_INIT;
    (void)strbuf_puts(&u, scheme);
    (void)strbuf_append(&u, auth, alen);
    (void)strbuf_putc(&u, '/');
    (void)strbuf_puts(&tg, path);
    (void)strbuf_puts(&tg, "/ws?oauth_token=");
    (void)codec_quote_plus_append(&tg, access_token, strlen(access_token));
    t->connect_url = strbuf_release(&u);
    t->target = strbuf_release(&tg);
    t->host = dup_n(auth, alen);
    if (t->connect_url == NULL || t->target == NULL || t->host == NULL) {
        ws_target_free(t);
        return -1;
    }
    return 0;
}

void ws_target_free(ws_target *t)
{
    if (t->target != NULL)
        OPENSSL_cleanse(t->target, strlen(t->target));
    free(t->target);
    free(t->host);
    free(t->connect_url);
    memset(t, 0, sizeof *t);
}

/* ---- key and accept ---------------------------------------------------------------- */

void ws_key_encode(const uint8_t nonce[WS_NONCE_LEN], char key[WS_KEY_LEN + 1])
{
    /* 16 bytes always fit 25: cannot fail. */
    (void)codec_b64_encode(nonce, WS_NONCE_LEN, key, WS_KEY_LEN + 1, NULL);
}

int ws_accept_for(const char *key, char accept[WS_ACCEPT_LEN + 1])
{
    char buf[WS_KEY_LEN + sizeof WS_GUID];
    size_t klen = strnlen(key, WS_KEY_LEN + 1);
    if (klen != WS_KEY_LEN)
        return -1;
    memcpy(buf, key, klen);
    memcpy(buf + klen, WS_GUID, sizeof WS_GUID - 1);
    uint8_t md[SHA_DIGEST_LENGTH];
    if (SHA1((const unsigned char *)buf, klen + sizeof WS_GUID - 1, md) == NULL)
        return -1;
    return codec_b64_encode(md, sizeof md, accept, WS_ACCEPT_LEN + 1, NULL);
}

/* ---- request ------------------------------------------------------------------------ */

int ws_cookie_ok(const char *p, size_t n)
{
    if (n == 0 || n > WS_COOKIE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        /* RFC 6265 cookie-octet: visible ASCII except " , ; \ */
        if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' || c == '\\')
            return 0;
    }
    return 1;
}

int ws_user_agent_ok(const char *p, size_t n)
{
    if (n == 0 || n > WS_USER_AGENT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c > 0x7e)
            return 0;
    }
    return 1;
}

int ws_request_build(strbuf *sb, const ws_target *t, const char *key, const char *cookie,
                     size_t clen, const char *ua, size_t ualen)
{
    (void)strbuf_puts(sb, "GET ");
    (void)strbuf_puts(sb, t->target);
    (void)strbuf_puts(sb, " HTTP/1.1\r\nHost: ");
    (void)strbuf_puts(sb, t->host);
    (void)strbuf_puts(sb, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
    (void)strbuf_puts(sb, key);
    (void)strbuf_puts(sb, "\r\nCookie: api=");
    (void)strbuf_append(sb, cookie, clen);
    (void)strbuf_puts(sb, "\r\nUser-Agent: ");
    (void)strbuf_append(sb, ua, ualen);
    (void)strbuf_puts(sb, "\r\n\r\n");
    return sb->failed ? -1 : 0;
}

/* ---- response ----------------------------------------------------------------------- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Does the comma-separated list v[0..n) hold token tok (any case)? */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (s < e && is_ows(v[s]))
            s++;
        while (e > s && is_ows(v[e - 1]))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
        i++; /* past the comma */
    }
    return 0;
}

static int name_is(const char *n, size_t nl, const char *want)
{
    return nl == strlen(want) && strncasecmp(n, want, nl) == 0;
}

/* "HTTP/1.x SSS[ reason]": the status, or -1. */
static int status_line(const char *p, size_t n)
{
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -1;
    int s = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        s = s * 10 + (p[i] - '0');
    }
    if (s < 100 || s > 599 || (n > 12 && p[12] != ' '))
        return -1;
    return s;
}

static long long parse_length(const char *v, size_t n)
{
    if (n == 0 || n > 15)
        return -1;
    long long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

ws_resp_status ws_response_parse(const char *buf, size_t len, const char *accept, ws_response *r)
{
    r->status = 0;
    r->head_len = 0;
    r->content_length = -1;
    size_t scan = len < WS_HEAD_MAX ? len : WS_HEAD_MAX;
    const char *end = memmem(buf, scan, "\r\n\r\n", 4);
    if (end == NULL)
        return len >= WS_HEAD_MAX ? WS_RESP_BAD_UPGRADE : WS_RESP_MORE;
    r->head_len = (size_t)(end - buf) + 4;

    const char *line = buf, *stop = end + 2; /* every line ends in CRLF */
    const char *eol = memchr(line, '\r', (size_t)(stop - line));
    if (eol == NULL || eol[1] != '\n' || (r->status = status_line(line, (size_t)(eol - line))) < 0) {
        r->status = 0;
        return WS_RESP_BAD_UPGRADE;
    }
    int upgrade = 0, connection = 0, accepts = 0, accept_ok = 0, extra = 0;
    size_t alen = strlen(accept);
    for (line = eol + 2; line < stop; line = eol + 2) {
        eol = memchr(line, '\r', (size_t)(stop - line));
        if (eol == NULL || eol[1] != '\n')
            return WS_RESP_BAD_UPGRADE;
        size_t ll = (size_t)(eol - line);
        const char *colon = memchr(line, ':', ll);
        if (colon == NULL || colon == line || is_ows(line[0]))
            return WS_RESP_BAD_UPGRADE; /* no obs-fold either */
        size_t nl = (size_t)(colon - line);
        const char *v = colon + 1, *ve = eol;
        while (v < ve && is_ows(*v))
            v++;
        while (ve > v && is_ows(ve[-1]))
            ve--;
        size_t vl = (size_t)(ve - v);
        if (name_is(line, nl, "upgrade"))
            upgrade |= vl == 9 && strncasecmp(v, "websocket", 9) == 0;
        else if (name_is(line, nl, "connection"))
            connection |= has_token(v, vl, "upgrade");
        else if (name_is(line, nl, "sec-websocket-accept")) {
            accepts++;
            accept_ok = vl == alen && CRYPTO_memcmp(v, accept, alen) == 0;
        } else if (name_is(line, nl, "sec-websocket-extensions") ||
                   name_is(line, nl, "sec-websocket-protocol"))
            extra = 1; /* we offered none: RFC 6455 4.1 says fail */
        else if (name_is(line, nl, "content-length") && r->content_length < 0)
            r->content_length = parse_length(v, vl);
    }
    if (r->status != 101)
        return WS_RESP_REFUSED;
    r->content_length = -1;
    if (!upgrade || !connection || extra)
        return WS_RESP_BAD_UPGRADE;
    if (accepts != 1 || !accept_ok)
        return WS_RESP_BAD_ACCEPT;
    return WS_RESP_UPGRADED;
}
