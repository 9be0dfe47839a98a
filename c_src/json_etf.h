/*
 * json_etf.h — JSON text <-> Erlang external term format, over json-c
 * (parser and writer), with the mapping of PROTOCOL.md ("JSON mapping"):
 *
 *   object -> map with binary keys      array -> list
 *   string -> binary (UTF-8)            integer -> integer
 *   other number -> float               true / false / null -> atoms
 *
 * Decoding is json-c's strict mode (one value, only whitespace around it;
 * no comments, trailing commas, single quotes) plus checks for what that
 * mode lets through: NaN, Infinity and floats beyond the double range are
 * refused; every string and key must be strict UTF-8 (no overlong forms,
 * no surrogates, nothing above U+10FFFF). Integers must lie strictly
 * between INT64_MIN and UINT64_MAX: json-c clamps larger ones to those two
 * values, so both are refused as ambiguous. Still accepted, as json-c
 * does: leading zeros (-01, 00, 01.5), "1." and "-.5", raw control
 * characters inside strings, and a lone surrogate escape (\ud800), which
 * becomes U+FFFD. A key is cut at a \u0000 (json-c's keys are C strings);
 * \u0000 in a string value stays a NUL byte. Duplicate keys: the last value
 * wins, in the place of the first, so the map never holds a key twice.
 * Floats that underflow become 0.0 or a subnormal, as strtod rounds them;
 * -0.0 stays -0.0.
 *
 * No global state; both are safe on any input bytes. Recursion depth is
 * bounded by JSON_ETF_MAX_DEPTH.
 */
#ifndef IBKR_JSON_ETF_H
#define IBKR_JSON_ETF_H

#include <stddef.h>

#include <ei.h>

/* Arrays and objects nested deeper than this are refused, both ways. */
#define JSON_ETF_MAX_DEPTH 128
/* Longest JSON text json_etf_decode accepts: the HTTP body cap. */
#define JSON_ETF_MAX_BYTES ((size_t)64 * 1024 * 1024)

/* Appends the Erlang term for the JSON text json[0..len) (need not be
 * NUL-terminated) to x, per the mapping above. Returns 0, or -1 when the
 * text is not valid JSON, is not UTF-8, nests deeper than
 * JSON_ETF_MAX_DEPTH or is larger than JSON_ETF_MAX_BYTES; then x->index is
 * restored (nothing appended) and *why (if non-NULL) points to a static
 * string naming the problem, one of:
 *   "empty"      nothing but whitespace
 *   "syntax"     not JSON (including text after the value)
 *   "utf8"       invalid UTF-8 in a string or key
 *   "depth"      nested deeper than JSON_ETF_MAX_DEPTH
 *   "too_large"  longer than JSON_ETF_MAX_BYTES
 *   "number"     an integer outside INT64_MIN < n < UINT64_MAX, NaN,
 *                Infinity, a float beyond the double range
 *   "nomem"      out of memory
 * Each is also an atom of the port protocol (json_error). */
int json_etf_decode(ei_x_buff *x, const char *json, size_t len, const char **why);

/* Encodes the ETF term at buf[*index] (checked to be one well-formed term
 * within buf_len first, no prior erlcmd_check_term needed) as JSON text:
 * maps with binary or atom keys -> objects, lists (and strings, i.e. lists
 * of bytes) -> arrays, binaries (valid UTF-8) -> strings, integers (the
 * range of decoding: INT64_MIN < n < UINT64_MAX) -> numbers, floats ->
 * numbers (finite), true/false/null -> literals. Anything else (tuples,
 * pids, other atoms as values, invalid UTF-8, bitstrings, improper lists,
 * a key holding a NUL byte, a map whose keys give the same JSON name twice
 * such as <<"a">> and a) is an error. Floats are written as the shortest
 * of %.15g, %.16g and %.17g that reads back as the same double (subnormals
 * from %.1g up): 0.1, 1e+300, 1.5e-07, with ".0" added
 * when that has neither '.' nor exponent (1.0, not 1), so they decode back
 * to floats. Strings keep UTF-8 as is; '"', '\' and control characters are
 * escaped (json-c; '/' is not). Returns a malloc'd NUL-terminated
 * string and its length (*out_len may be NULL), or NULL with *why (if
 * non-NULL) set to "badarg", "depth" or "nomem". *index is advanced past the
 * term on success and left unchanged on failure. */
char *json_etf_encode(const char *buf, int buf_len, int *index, size_t *out_len, const char **why);

#endif
