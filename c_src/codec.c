/*
 * codec.c — hex, base64, quote_plus, percent-decoding, UTF-8 validation,
 * strbuf. See codec.h.
 */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* ---- strbuf ---------------------------------------------------------------- */

int strbuf_reserve(strbuf *sb, size_t extra)
{
    if (sb->failed)
        return -1;
    if (extra > SIZE_MAX / 2 - sb->len - 1) {
        sb->failed = 1;
        return -1;
    }
    size_t need = sb->len + extra + 1;
    if (need <= sb->cap)
        return 0;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < need)
        cap *= 2;
    /* malloc+copy+wipe instead of realloc: the old block may hold secrets. */
    char *p = malloc(cap);
    if (p == NULL) {
        sb->failed = 1;
        return -1;
    }
    if (sb->data != NULL) {
        memcpy(p, sb->data, sb->len);
        OPENSSL_cleanse(sb->data, sb->cap);
        free(sb->data);
    }
    p[sb->len] = '\0';
    sb->data = p;
    sb->cap = cap;
    return 0;
}

int strbuf_append(strbuf *sb, const void *p, size_t n)
{
    if (strbuf_reserve(sb, n) != 0)
        return -1;
    if (n > 0)
        memcpy(sb->data + sb->len, p, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
    return 0;
}

int strbuf_puts(strbuf *sb, const char *s)
{
    return strbuf_append(sb, s, strlen(s));
}

int strbuf_putc(strbuf *sb, char c)
{
    return strbuf_append(sb, &c, 1);
}

void strbuf_reset(strbuf *sb)
{
    if (sb->data != NULL) {
        OPENSSL_cleanse(sb->data, sb->len);
        sb->data[0] = '\0';
    }
    sb->len = 0;
    sb->failed = 0;
}

void strbuf_free(strbuf *sb)
{
    if (sb == NULL)
        return;
    if (sb->data != NULL) {
        OPENSSL_cleanse(sb->data, sb->cap);
        free(sb->data);
    }
    *sb = STRBUF_INIT;
}

char *strbuf_release(strbuf *sb)
{
    if (sb->failed) {
        strbuf_free(sb);
        return NULL;
    }
    char *p = sb->data;
    *sb = STRBUF_INIT;
    return p;
}

/* ---- hex ------------------------------------------------------------------- */

static const char HEX_LOWER[] = "0123456789abcdef";
static const char HEX_UPPER[] = "0123456789ABCDEF";

/* Value of a hex digit, or -1. */
static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int codec_is_hex(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (hexval((unsigned char)s[i]) < 0)
            return 0;
    return 1;
}

void codec_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX_LOWER[in[i] >> 4];
        out[2 * i + 1] = HEX_LOWER[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

int codec_hex_append(strbuf *sb, const uint8_t *in, size_t n)
{
    if (n > SIZE_MAX / 4 || strbuf_reserve(sb, 2 * n) != 0)
        return -1;
    codec_hex_encode(in, n, sb->data + sb->len);
    sb->len += 2 * n;
    return 0;
}

int codec_hex_decode(const char *in, size_t n, uint8_t *out, size_t outcap,
                     size_t *outlen)
{
    if (n % 2 != 0 || outcap < n / 2)
        return -1;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hexval((unsigned char)in[i]);
        int lo = hexval((unsigned char)in[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (uint8_t)((hi << 4) | lo);
    }
    *outlen = n / 2;
    return 0;
}

/* ---- base64 ---------------------------------------------------------------- */

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t codec_b64_encoded_len(size_t n)
{
    return (n / 3 + (n % 3 != 0)) * 4;
}

int codec_b64_encode(const uint8_t *in, size_t n, char *out, size_t outcap,
                     size_t *outlen)
{
    if (n > (SIZE_MAX / 4) * 3 - 3)
        return -1;
    size_t need = codec_b64_encoded_len(n);
    if (outcap < need + 1)
        return -1;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = B64[(v >> 18) & 63];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    if (outlen != NULL)
        *outlen = o;
    return 0;
}

size_t codec_b64_decoded_max(size_t n)
{
    return n / 4 * 3 + 2;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int codec_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap,
                     size_t *outlen)
{
    /* Padding, if any, must complete the last quantum exactly. */
    size_t data = n;
    if (n > 0 && in[n - 1] == '=') {
        if (n % 4 != 0)
            return -1;
        data = n - 1;
        if (in[n - 2] == '=')
            data = n - 2;
    }
    if (data % 4 == 1)
        return -1;
    size_t need = data / 4 * 3 + (data % 4 ? data % 4 - 1 : 0);
    if (outcap < need)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < data; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1; /* includes '=' inside the data and whitespace */
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    *outlen = o;
    return 0;
}

/* ---- URL encoding ---------------------------------------------------------- */

static int url_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

int codec_quote_plus_append(strbuf *sb, const char *s, size_t n)
{
    if (n > SIZE_MAX / 4 || strbuf_reserve(sb, 3 * n) != 0)
        return -1;
    char *o = sb->data + sb->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (url_unreserved(c)) {
            *o++ = (char)c;
        } else if (c == ' ') {
            *o++ = '+';
        } else {
            *o++ = '%';
            *o++ = HEX_UPPER[c >> 4];
            *o++ = HEX_UPPER[c & 0x0f];
        }
    }
    sb->len = (size_t)(o - sb->data);
    sb->data[sb->len] = '\0';
    return 0;
}

size_t codec_pct_decode(const char *s, size_t n, char *out, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n) {
            int hi = hexval((unsigned char)s[i + 1]);
            int lo = hexval((unsigned char)s[i + 2]);
            if (hi >= 0 && lo >= 0) {
                out[o++] = (char)((hi << 4) | lo);
                i += 2;
                continue;
            }
        }
        if (c == '+' && plus_is_space)
            c = ' ';
        out[o++] = (char)c;
    }
    return o;
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* RFC 3629 table 3-7: exactly the well-formed sequences, so overlong forms,
 * UTF-16 surrogates (ED A0..BF) and code points above U+10FFFF are out. */
size_t codec_utf8_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else {
            return i;
        }
        if (n - i <= k || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t j = 2; j <= k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xBF)
                return i;
        i += k + 1;
    }
    return n;
}
