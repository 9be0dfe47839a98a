/*
 * oauth.h — IBKR "OAuth 1.0a extended" crypto, no I/O.
 *
 * One oauth_session holds one consumer's secrets: both RSA private keys, the
 * prepend (hex of the decrypted access-token secret), a pending DH exponent
 * between lst_request and lst_complete, and the live session token (LST).
 * Everything secret is wiped with OPENSSL_cleanse when replaced or freed.
 *
 * Output strings are byte-identical to ibind's oauth1a.py for the same
 * inputs and pins (see ../shared/spec/ibkr-oauth1a.md). Not thread-safe: the
 * port is single-threaded.
 */
#ifndef IBKR_OAUTH_H
#define IBKR_OAUTH_H

#include <stddef.h>
#include <stdint.h>

/* Limits on user-supplied strings, so every header fits OAUTH_AUTH_MAX. */
#define OAUTH_FIELD_MAX 512   /* consumer_key, access_token, realm */
#define OAUTH_NONCE_MAX 64
#define OAUTH_AUTH_MAX 4096   /* any HMAC-SHA256 Authorization value, with NUL */
#define OAUTH_LST_B64_MAX 64  /* base64 of a SHA-1 HMAC (28) with room, with NUL */

typedef enum {
    OAUTH_OK = 0,
    OAUTH_ERR_NOMEM,
    OAUTH_ERR_MISSING,          /* required config field absent */
    OAUTH_ERR_BADARG,           /* malformed argument */
    OAUTH_ERR_TOO_LONG,         /* over a limit above */
    OAUTH_ERR_NOT_PEM,          /* no parsable PEM private key */
    OAUTH_ERR_NOT_RSA,          /* a key, but not RSA */
    OAUTH_ERR_NOT_BASE64,
    OAUTH_ERR_DECRYPT,          /* access-token secret does not decrypt */
    OAUTH_ERR_NOT_HEX,
    OAUTH_ERR_NOT_PRIME,
    OAUTH_ERR_TOO_SMALL,        /* prime < 1024 bits, generator < 2 */
    OAUTH_ERR_NOT_AUTHENTICATED,/* no LST held */
    OAUTH_ERR_NO_PENDING,       /* lst_complete without lst_request */
    OAUTH_ERR_BAD_DH_RESPONSE,  /* B not hex, or not 1 < B < p-1 */
    OAUTH_ERR_LST_MISMATCH,     /* LST signature does not validate */
    OAUTH_ERR_CRYPTO            /* OpenSSL failed unexpectedly */
} oauth_status;

/* The Erlang atom for a status ("ok", "missing", "not_pem", "bad_dh_response",
 * "lst_signature_mismatch", "not_authenticated", "no_pending_handshake", ...).
 * Always a static string. */
const char *oauth_status_atom(oauth_status st);

typedef struct {
    const char *consumer_key;        /* NUL-terminated, 1..OAUTH_FIELD_MAX */
    const char *access_token;        /* 1..OAUTH_FIELD_MAX */
    const char *access_token_secret; /* base64 */
    const char *dh_prime_hex;        /* hex digits, either case */
    unsigned long dh_generator;      /* 0 means 2 */
    const char *realm;               /* NULL: "test_realm" for TESTCONS, else "limited_poa" */
    const char *encryption_key_pem;  /* PKCS#1 or PKCS#8 PEM, RSA */
    size_t encryption_key_pem_len;
    const char *signature_key_pem;
    size_t signature_key_pem_len;
    int sign_query_params;           /* 1: query params join the base string (default); 0: none */
} oauth_config;

typedef struct oauth_session oauth_session;

/* Validates everything (keys parse and are RSA, secret decrypts, prime is a
 * prime of >= 1024 bits) and builds a session. On failure *bad_field names
 * the config field ("consumer_key", "encryption_key", "dh_prime", ...). */
oauth_status oauth_session_new(const oauth_config *cfg, oauth_session **out,
                               const char **bad_field);
void oauth_session_free(oauth_session *s); /* wipes all secrets; NULL ok */

/* Pins fix the random parts (tests, reproductions). */
typedef struct {
    const char *nonce;         /* NULL: 16 random chars of [A-Za-z0-9] */
    int64_t timestamp;         /* < 0: time(NULL) */
    const char *dh_random_hex; /* NULL: 256 random bits (lst_request only) */
} oauth_pins;
#define OAUTH_PINS_NONE ((oauth_pins){NULL, -1, NULL})

/* RSA-SHA256 Authorization value for "POST lst_url" (spec §2-3). Stores the
 * DH exponent as the pending handshake, replacing (and wiping) any earlier
 * one. *authorization is malloc'd, NUL-terminated; the caller frees it. */
oauth_status oauth_lst_request(oauth_session *s, const char *lst_url,
                               const oauth_pins *pins, char **authorization);

/* Spec §4: K = B^a mod p with 1 < B < p-1, K as Java toByteArray, LST =
 * base64(HMAC-SHA1(K, prepend bytes)), validated against the signature in
 * constant time. On success the LST replaces the old one and the pending
 * handshake is wiped; on failure the pending handshake is kept. */
oauth_status oauth_lst_complete(oauth_session *s, const char *dh_response_hex,
                                const char *lst_signature_hex,
                                int64_t expires_ms);

/* Copies the base64 LST (NUL-terminated) into out[cap]; *expires_ms set.
 * OAUTH_ERR_NOT_AUTHENTICATED when none is held. */
oauth_status oauth_live_session_token(const oauth_session *s, char *out,
                                      size_t cap, int64_t *expires_ms);
int oauth_has_lst(const oauth_session *s);
/* The access token (NUL-terminated), for the websocket URL. */
const char *oauth_access_token(const oauth_session *s);

/* HMAC-SHA256 Authorization value for method+url (spec §5), written
 * NUL-terminated into out[cap] (OAUTH_AUTH_MAX is always enough). A query in
 * url is split off and, when sign_query_params, its percent-decoded
 * ('+' = space) key=value pairs join the sorted parameter list. lst_b64 NULL:
 * the stored LST (OAUTH_ERR_NOT_AUTHENTICATED if none); else that LST.
 * No heap allocation in steady state (buffers and MAC contexts are reused). */
oauth_status oauth_sign(oauth_session *s, const char *method, const char *url,
                        const oauth_pins *pins, const char *lst_b64,
                        char *out, size_t cap);

#endif
