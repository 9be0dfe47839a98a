/*
 * json_etf_internal.h — what json_etf_decode.c and json_etf_encode.c share
 * (defined in json_etf.c): strict UTF-8 validation, a heapsort with a
 * context (qsort has none, qsort_r is not portable) used to find duplicate
 * keys, and the byte order helpers of the external format.
 */
#ifndef IBKR_JSON_ETF_INTERNAL_H
#define IBKR_JSON_ETF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* ETF tags (erl_ext_dist.txt) that ei.h does not name in every version. */
enum {
    JE_NEW_FLOAT = 70, JE_SMALL_INT = 97, JE_INT = 98, JE_ATOM = 100, JE_NIL = 106,
    JE_STRING = 107, JE_LIST = 108, JE_BINARY = 109, JE_SMALL_BIG = 110,
    JE_LARGE_BIG = 111, JE_SMALL_ATOM = 115, JE_MAP = 116, JE_ATOM_UTF8 = 118,
    JE_SMALL_ATOM_UTF8 = 119
};

/* A byte range [start, end) of a buffer: an object member (decode) or a
 * key's JSON text (encode). start < 0 marks a dropped member. */
typedef struct {
    long start, end;
} je_span;

/* Length of the valid UTF-8 prefix of s[0..n) that ends on a character
 * boundary (n when all of it is valid). */
size_t je_utf8_valid(const unsigned char *s, size_t n);

/* Sorts v[0..n) in place by cmp (ctx passed through); not stable. */
void je_sort(je_span *v, size_t n, int (*cmp)(const je_span *, const je_span *, const void *),
             const void *ctx);

uint32_t je_get32(const unsigned char *p);
void je_put32(unsigned char *p, uint32_t v);

#endif
