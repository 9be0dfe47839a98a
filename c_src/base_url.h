/*
 * base_url.h — the strict check of init's base_url, and the looser one of
 * a URL to sign, done without libcurl (which is loaded only at the first
 * HTTP request, see curl_lazy.h).
 *
 * Accepted: scheme "http" or "https" (any case), "://", a host, an
 * optional ":port" (1-65535), then nothing or a path of RFC 3986 pchars and
 * "/". The host is a name or IPv4 address (letters, digits, "-", ".", "_")
 * or an IPv6 literal in brackets (hex digits, ":", "."). Refused: userinfo,
 * query, fragment, blanks, control and non-ASCII bytes, bad %-escapes.
 * Everything accepted is also a URL libcurl accepts.
 */
#ifndef IBKR_BASE_URL_H
#define IBKR_BASE_URL_H

#include <stddef.h>

/* 0 if url (NUL-terminated) is acceptable, else -1. */
int base_url_check(const char *url);

/* The looser check of a URL given to sign: http(s)://host[:port] as above,
 * then nothing or "/", "?" or "#" and anything that is valid UTF-8 without
 * control bytes (0x00-0x1f, 0x7f). 0 / -1. */
int abs_url_check(const char *url, size_t len);

#endif
