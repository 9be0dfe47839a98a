/*
 * base_url.c — a strict parser of http(s)://host[:port][/path], and the
 * absolute-URL check of sign. See base_url.h.
 */
#include "base_url.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "codec.h"

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

/* Well-formed UTF-8 (codec_utf8_prefix) without control bytes. */
static int utf8_text(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    return codec_utf8_prefix(p, n) == n;
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
