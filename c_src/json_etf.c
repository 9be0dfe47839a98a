/*
 * json_etf.c — helpers shared by the JSON decoder and encoder
 * (json_etf_internal.h). The two directions live in json_etf_decode.c and
 * json_etf_encode.c.
 */
#include "json_etf_internal.h"

/* RFC 3629 table 3-7: exactly the well-formed sequences, so overlong forms,
 * UTF-16 surrogates (ED A0..BF) and code points above U+10FFFF are out. */
size_t je_utf8_valid(const unsigned char *s, size_t n)
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

static void sift_down(je_span *v, size_t root, size_t n,
                      int (*cmp)(const je_span *, const je_span *, const void *), const void *ctx)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && cmp(&v[child], &v[child + 1], ctx) < 0)
            child++;
        if (cmp(&v[root], &v[child], ctx) >= 0)
            return;
        je_span t = v[root];
        v[root] = v[child];
        v[child] = t;
        root = child;
    }
}

/* Heapsort: O(n log n) worst case, no recursion, no allocation. */
void je_sort(je_span *v, size_t n, int (*cmp)(const je_span *, const je_span *, const void *),
             const void *ctx)
{
    if (n < 2)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift_down(v, i, n, cmp, ctx);
    for (size_t end = n - 1; end > 0; end--) {
        je_span t = v[0];
        v[0] = v[end];
        v[end] = t;
        sift_down(v, 0, end, cmp, ctx);
    }
}

uint32_t je_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void je_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}
