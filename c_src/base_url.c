/*
 * base_url.c — a strict parser of http(s)://host[:port][/path], and the
 * absolute-URL check of sign. See base_url.h.
 */
#include "base_url.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#define HOST_MAX 253 /* longest DNS name */

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Past "scheme://", or NULL. */
static const char *skip_scheme(const char *s)
{
    if (strncasecmp(s, "https://", 8) == 0)
        return s + 8;
    if (strncasecmp(s, "http://", 7) == 0)
        return s + 7;
    return NULL;
}

/* Past the host, or NULL. */
static const char *skip_host(const char *s)
{
    const char *p = s;
    if (*p == '[') {
        for (p++; is_hex(*p) || *p == ':' || *p == '.'; p++)
            ;
        /* "::1" is the shortest literal worth having. */
        return (*p == ']' && p - s >= 3) ? p + 1 : NULL;
    }
    while (is_alnum(*p) || *p == '-' || *p == '.' || *p == '_')
        p++;
    return (p > s && p - s <= HOST_MAX) ? p : NULL;
}

/* Past an optional ":port", or NULL. */
static const char *skip_port(const char *s)
{
    if (*s != ':')
        return s;
    long port = 0;
    int digits = 0;
    for (s++; *s >= '0' && *s <= '9'; s++) {
        if (++digits > 5)
            return NULL;
        port = port * 10 + (*s - '0');
    }
    return (port >= 1 && port <= 65535) ? s : NULL;
}

/* RFC 3986 pchar (one byte of it; "%" checked by the caller) or "/". */
static int is_path_char(char c)
{
    return is_alnum(c) || (c != '\0' && strchr("-._~!$&'()*+,;=:@/", c) != NULL);
}

static int path_ok(const char *p)
{
    if (*p == '\0')
        return 1;
    if (*p != '/')
        return 0;
    for (; *p != '\0'; p++) {
        if (*p == '%') {
            if (!is_hex(p[1]) || !is_hex(p[2]))
                return 0;
            p += 2;
        } else if (!is_path_char(*p)) {
            return 0;
        }
    }
    return 1;
}

int base_url_check(const char *url)
{
    const char *p = skip_scheme(url);
    if (p != NULL)
        p = skip_host(p);
    if (p != NULL)
        p = skip_port(p);
    return (p != NULL && path_ok(p)) ? 0 : -1;
}

/* Well-formed UTF-8 (no overlong forms, surrogates or code points above
 * U+10FFFF, as Erlang's /utf8 matching) without control bytes. */
static int utf8_text(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return 0;
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2, cp = c & 0x1fu, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, cp = c & 0x0fu, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, cp = c & 0x07u, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0u) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

int abs_url_check(const char *url, size_t len)
{
    if (memchr(url, '\0', len) != NULL)
        return -1;
    const char *p = skip_scheme(url);
    if (p != NULL)
        p = skip_host(p);
    if (p != NULL)
        p = skip_port(p);
    if (p == NULL || (*p != '\0' && *p != '/' && *p != '?' && *p != '#'))
        return -1;
    return utf8_text((const unsigned char *)url, len) ? 0 : -1;
}
