/*
 * base_url.h — the strict check of init's base_url, done without libcurl
 * (which is loaded only at the first HTTP request, see curl_lazy.h).
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

/* 0 if url (NUL-terminated) is acceptable, else -1. */
int base_url_check(const char *url);

#endif
