/*
 * etf_args.h — command arguments out of a frame that passed
 * erlcmd_check_term: typed ei decoders that check the type first (so a
 * wrong type is an error, not a misread), a map-field lookup, the pins of
 * the crypto commands, and the per-command arena for C strings.
 *
 * Every dec_* returns 0 and advances *idx, or -1. Binaries are read in
 * place; dec_cstr copies into the arena, which arena_reset() wipes (the
 * strings may be secrets) after each frame.
 */
#ifndef IBKR_ETF_ARGS_H
#define IBKR_ETF_ARGS_H

#include <stddef.h>

#include <ei.h>

#include "oauth.h"

#define ATOM_BUF 256 /* longest atom we compare against is far shorter */

typedef struct {
    const char *buf;
    size_t len;
} frame;

/* Map lookup: each fields[i].at gets the index of that key's value, or -1.
 * Keys that are not atoms, or not asked for, are skipped. -1: not a map. */
typedef struct {
    const char *name;
    int at;
} mfield;

void arena_reset(void);

int is_integer_type(int t);
int type_at(const frame *f, int idx, int *type, int *size);
int dec_atom(const frame *f, int *idx, char *out); /* out[ATOM_BUF] */
int dec_bin(const frame *f, int *idx, const char **p, size_t *n);
int dec_cstr(const frame *f, int *idx, char **out, size_t *outlen);
/* The term at *idx encoded as JSON text (json_etf.h), in the arena
 * (NUL-terminated); -1 with *why "badarg", "depth" or "nomem". */
int dec_json(const frame *f, int *idx, const char **out, size_t *outlen, const char **why);
int dec_i64(const frame *f, int *idx, long long *v);
int dec_u64(const frame *f, int *idx, unsigned long long *v);
int dec_bool(const frame *f, int *idx, int *v);
int dec_method(const frame *f, int *idx, char **out);
int dec_url(const frame *f, int *idx, char **out);
int map_fields(const frame *f, int idx, mfield *fields, size_t nf);

/* nonce, timestamp and (when dh is set) dh_random from fields[0..2]. NULL,
 * or the name of the bad field. */
const char *get_pins(const frame *f, const mfield *fields, int dh, oauth_pins *pins);
/* An optional timeout (at < 0: the default): ms 0..2^31-1, where 0 is a
 * deadline already passed, or the atom infinity (HTTP_TIMEOUT_NONE). NULL
 * or "timeout". */
const char *get_timeout(const frame *f, int at, long *ms);

#endif
