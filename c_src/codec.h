/*
 * codec.h — small pure helpers for the OAuth code: hex, base64, quote_plus,
 * percent-decoding and a growable byte buffer. No I/O, no global state.
 *
 * Conventions: lengths are explicit (inputs need not be NUL-terminated and may
 * contain NUL bytes); functions that can fail return 0 on success and -1 on
 * failure and leave their outputs unspecified on failure.
 */
#ifndef IBKR_CODEC_H
#define IBKR_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* ---- strbuf: growable byte buffer ----------------------------------------
 * data is always NUL-terminated once anything was reserved (data[len] == 0),
 * so it can be used as a C string when the content has no NUL. Growth never
 * uses realloc: the old block is wiped (OPENSSL_cleanse-like) before it is
 * freed, so buffers may hold secrets. An append that fails sets `failed`
 * (sticky until strbuf_reset/strbuf_free), which lets callers chain appends
 * and check once. Capacity is kept across strbuf_reset, so a buffer reused
 * for same-sized content stops allocating. */
typedef struct {
    char *data;   /* NULL until the first reservation */
    size_t len;   /* bytes used, excluding the terminating NUL */
    size_t cap;   /* bytes allocated, including room for the NUL */
    int failed;   /* an append or reserve ran out of memory */
} strbuf;

#define STRBUF_INIT ((strbuf){NULL, 0, 0, 0})

/* Ensures room for `extra` more bytes plus the NUL. 0 / -1 (sets failed). */
int strbuf_reserve(strbuf *sb, size_t extra);
/* Appends n bytes (n == 0 is a no-op that still succeeds). 0 / -1. */
int strbuf_append(strbuf *sb, const void *p, size_t n);
/* Appends a NUL-terminated string. 0 / -1. */
int strbuf_puts(strbuf *sb, const char *s);
int strbuf_putc(strbuf *sb, char c);
/* Empties the buffer (wiping the used bytes), keeps the allocation, clears
 * `failed`. */
void strbuf_reset(strbuf *sb);
/* Wipes and frees the allocation; *sb becomes STRBUF_INIT. NULL-safe. */
void strbuf_free(strbuf *sb);
/* Hands the allocation (malloc'd, NUL-terminated) to the caller, who frees
 * it with free(); *sb becomes STRBUF_INIT. NULL when nothing was reserved
 * or an append failed (then the buffer is freed). */
char *strbuf_release(strbuf *sb);

/* ---- hex ------------------------------------------------------------------ */
/* 1 when every byte of s[0..n) is a hex digit (either case) and n > 0. */
int codec_is_hex(const char *s, size_t n);
/* Writes 2*n lower-case hex digits and a NUL into out (room for 2*n+1). */
void codec_hex_encode(const uint8_t *in, size_t n, char *out);
/* Appends 2*n lower-case hex digits. 0 / -1. */
int codec_hex_append(strbuf *sb, const uint8_t *in, size_t n);
/* Strict decode: n even, only hex digits (either case). Writes n/2 bytes to
 * out (outcap >= n/2 required, else -1) and sets *outlen. n == 0 -> 0 bytes. */
int codec_hex_decode(const char *in, size_t n, uint8_t *out, size_t outcap,
                     size_t *outlen);

/* ---- base64 (standard alphabet) ------------------------------------------- */
/* Length of the padded encoding of n bytes, without the NUL. */
size_t codec_b64_encoded_len(size_t n);
/* Writes the padded encoding (no newlines) and a NUL into out, which must
 * hold codec_b64_encoded_len(n) + 1 bytes (else -1). *outlen gets the length
 * without the NUL (may be NULL). */
int codec_b64_encode(const uint8_t *in, size_t n, char *out, size_t outcap,
                     size_t *outlen);
/* Upper bound of the decoded size of n input characters. */
size_t codec_b64_decoded_max(size_t n);
/* Strict decode: only A-Z a-z 0-9 + / (whitespace and anything else is
 * rejected). Padding is optional, but when present it must be complete
 * (total length a multiple of 4, one or two '=' at the very end). A length
 * of 4k+1 characters is invalid. Unused low bits of the last character are
 * ignored, as Python's base64.b64decode does. out must hold the decoded size
 * (else -1; codec_b64_decoded_max(n) always suffices). n == 0 -> 0 bytes. */
int codec_b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap,
                     size_t *outlen);

/* ---- URL encoding --------------------------------------------------------- */
/* Appends Python's urllib.parse.quote_plus(s, safe='') of the bytes s[0..n):
 * A-Z a-z 0-9 - . _ ~ kept, space -> '+', every other byte -> %XX with
 * upper-case hex. 0 / -1. */
int codec_quote_plus_append(strbuf *sb, const char *s, size_t n);
/* Percent-decodes s[0..n) into out (which needs n bytes; the result is never
 * longer than the input) and returns the decoded length. %XX (either case)
 * becomes that byte; when plus_is_space, '+' becomes ' '. A '%' not followed
 * by two hex digits is kept literally, like Python's unquote_plus. The
 * output may contain NUL bytes. */
size_t codec_pct_decode(const char *s, size_t n, char *out, int plus_is_space);

/* ---- UTF-8 ----------------------------------------------------------------- */
/* Length of the valid UTF-8 prefix of s[0..n) that ends on a character
 * boundary (n when all of it is valid): RFC 3629, so no overlong forms, no
 * UTF-16 surrogates, nothing above U+10FFFF (as Erlang's /utf8 matching).
 * json-c's own check (JSON_TOKENER_VALIDATE_UTF8) only looks at the bit
 * patterns. */
size_t codec_utf8_prefix(const unsigned char *s, size_t n);

#endif
