/*
 * lst_json.h — parse the answer of POST /oauth/live_session_token:
 *   {"diffie_hellman_response": HEX, "live_session_token_signature": HEX,
 *    "live_session_token_expiration": EPOCH_MS}
 * with json-c. The expiration may be a JSON integer (or an integral number)
 * or a string of decimal digits. Input is capped at LST_JSON_MAX bytes.
 */
#ifndef IBKR_LST_JSON_H
#define IBKR_LST_JSON_H

#include <stddef.h>
#include <stdint.h>

#define LST_JSON_MAX ((size_t)64 * 1024)

typedef enum {
    LST_JSON_OK = 0,
    LST_JSON_NOT_JSON,      /* not one JSON value (or too big, or NUL bytes) */
    LST_JSON_MISSING_FIELD, /* not an object, a field absent, or a bad signature field */
    LST_JSON_BAD_DH,        /* diffie_hellman_response not a non-empty string */
    LST_JSON_BAD_EXPIRATION, /* expiration not an integer 0..INT64_MAX (or digits) */
    LST_JSON_NOMEM
} lst_json_status;

typedef struct {
    char *dh_response;   /* malloc'd, NUL-terminated; NULL unless LST_JSON_OK */
    char *signature;
    int64_t expires_ms;
} lst_answer;

/* On anything but LST_JSON_OK, *out holds nothing to free. */
lst_json_status lst_json_parse(const char *buf, size_t len, lst_answer *out);
void lst_answer_free(lst_answer *a); /* NULL-safe, idempotent */
/* "not_json" | "missing_field" | "lst_expiration" | "nomem" (the Why of
 * {bad_response, Why}), or "bad_dh_response" (a reason of its own). */
const char *lst_json_status_atom(lst_json_status st);

#endif
