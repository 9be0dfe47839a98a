/*
 * json_etf_internal.h — what json_etf_decode.c and json_etf_encode.c share
 * (defined in json_etf.c).
 */
#ifndef IBKR_JSON_ETF_INTERNAL_H
#define IBKR_JSON_ETF_INTERNAL_H

#include <stddef.h>

/* Length of the valid UTF-8 prefix of s[0..n) that ends on a character
 * boundary (n when all of it is valid): RFC 3629, so no overlong forms, no
 * UTF-16 surrogates, nothing above U+10FFFF. json-c's own check
 * (JSON_TOKENER_VALIDATE_UTF8) only looks at the bit patterns. */
size_t je_utf8_valid(const unsigned char *s, size_t n);

#endif
