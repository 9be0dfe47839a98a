/*
 * json_etf.h — JSON text <-> Erlang external term format, straight from one
 * to the other (no intermediate tree), with the mapping of PROTOCOL.md
 * ("JSON mapping"):
 *
 *   object -> map with binary keys      array -> list
 *   string -> binary (UTF-8)            integer -> integer (bignum beyond 64 bits)
 *   other number -> float               true / false / null -> atoms
 *
 * Decoding is strict RFC 8259: one value, surrounded only by whitespace; no
 * NaN, Infinity, comments, trailing commas, leading zeros or "1."; the text
 * must be valid UTF-8 (no overlong forms, no surrogates, nothing above
 * U+10FFFF) and so must every \u escape (a lone surrogate is refused). A
 * string may hold \u0000 (the binary keeps the NUL byte), keys included.
 * Duplicate keys: the last one wins (as in JavaScript, Python and json-c),
 * so the map never holds a key twice. Integers are exact up to
 * JSON_ETF_MAX_BIG_BYTES bytes of magnitude (about 404 decimal digits);
 * larger ones, and floats beyond the double range (1e400), are refused:
 * Erlang has no infinite float. Floats that underflow become 0.0 or a
 * subnormal, as strtod rounds them; -0.0 stays -0.0.
 *
 * Neither function has global state or recursion (nesting costs no C
 * stack); both are safe on any input bytes.
 */
#ifndef IBKR_JSON_ETF_H
#define IBKR_JSON_ETF_H

#include <stddef.h>

#include <ei.h>

/* Arrays and objects nested deeper than this are refused, both ways. */
#define JSON_ETF_MAX_DEPTH 128
/* Longest JSON text json_etf_decode accepts: the HTTP body cap. */
#define JSON_ETF_MAX_BYTES ((size_t)64 * 1024 * 1024)
/* Largest integer magnitude, in bytes, either way (2^1344 - 1). */
#define JSON_ETF_MAX_BIG_BYTES 168

/* Appends the Erlang term for the JSON text json[0..len) (need not be
 * NUL-terminated) to x, per the mapping above. Returns 0, or -1 when the
 * text is not valid JSON, is not UTF-8, nests deeper than
 * JSON_ETF_MAX_DEPTH or is larger than JSON_ETF_MAX_BYTES; then x->index is
 * restored (nothing appended) and *why (if non-NULL) points to a static
 * string naming the problem, one of:
 *   "empty"      nothing but whitespace
 *   "syntax"     not JSON (including text after the value)
 *   "utf8"       invalid UTF-8, or a \u escape that is a lone surrogate
 *   "depth"      nested deeper than JSON_ETF_MAX_DEPTH
 *   "too_large"  longer than JSON_ETF_MAX_BYTES
 *   "number"     an integer beyond JSON_ETF_MAX_BIG_BYTES, a float beyond
 *                the double range
 *   "nomem"      out of memory
 * Each is also an atom of the port protocol (json_error). */
int json_etf_decode(ei_x_buff *x, const char *json, size_t len, const char **why);

/* Encodes the ETF term at buf[*index] (bounded by buf_len: the bytes are
 * checked as they are read, no prior erlcmd_check_term needed) as JSON text:
 * maps with binary or atom keys -> objects, lists (and strings, i.e. lists
 * of bytes) -> arrays, binaries (valid UTF-8) -> strings, integers (bignums
 * up to JSON_ETF_MAX_BIG_BYTES) -> numbers, floats -> numbers (finite),
 * true/false/null -> literals. Anything else (tuples, pids, other atoms as
 * values, invalid UTF-8, bitstrings, improper lists, a map whose keys give
 * the same JSON name twice such as <<"a">> and a) is an error. Floats are
 * written with the fewest digits that read back as the same double, laid
 * out as JavaScript does (fixed notation from 1e-6 up to below 1e21, else
 * 1.5e+300), always with a '.' or an exponent (1.0, not 1), so they decode
 * back to floats. Strings keep UTF-8 as is; '"',
 * '\' and control characters are escaped. Returns a malloc'd NUL-terminated
 * string and its length (*out_len may be NULL), or NULL with *why (if
 * non-NULL) set to "badarg", "depth" or "nomem". *index is advanced past the
 * term on success and left unchanged on failure. */
char *json_etf_encode(const char *buf, int buf_len, int *index, size_t *out_len, const char **why);

#endif
