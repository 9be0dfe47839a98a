/*
 * fuzz_answer.c — libFuzzer harness for the answer of
 * POST /oauth/live_session_token: an input is the HTTP body. It goes through
 * lst_json_parse and, when that accepts it, through oauth_lst_complete on a
 * TESTCONS session holding a pending handshake (the pinned lst_request of
 * vectors case 0, so the seed with that case's answer succeeds), exactly as
 * the authenticate command does with a 200 answer.
 *
 * Checked (abort() on failure): a parse either fails and leaves nothing to
 * free, or yields two non-empty NUL-free strings and an expiration >= 0;
 * lst_complete answers only ok, bad_dh_response or lst_signature_mismatch
 * (never no_pending_handshake: one is always pending); after ok the session
 * holds an LST with that expiration and can sign with it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lst_json.h"
#include "../oauth.h"
#include "fuzz_vectors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fuzz_vectors g_v;
static oauth_session *g_session;
static char g_lst_url[4096];
static int g_pending;

__attribute__((noreturn)) static void fail(const char *why, int st)
{
    (void)fprintf(stderr, "fuzz_answer: %s (%d)\n", why, st);
    abort();
}

/* A new pending handshake with the pinned DH exponent. */
static void request(void)
{
    oauth_pins pins = {g_v.nonce, g_v.timestamp, g_v.dh_random};
    char *auth = NULL;
    oauth_status st = oauth_lst_request(g_session, g_lst_url, &pins, &auth);
    if (st != OAUTH_OK)
        fail("lst_request failed", (int)st);
    free(auth);
    g_pending = 1;
}

/* libFuzzer's fixed signature, hence non-const. */
int LLVMFuzzerInitialize(int *argc, char ***argv) // NOLINT(readability-non-const-parameter)
{
    (void)argc;
    (void)argv;
    fuzz_vectors_load(&g_v);
    oauth_config cfg = {
        .consumer_key = g_v.consumer_key,
        .access_token = g_v.access_token,
        .access_token_secret = g_v.access_token_secret,
        .dh_prime_hex = g_v.dh_prime,
        .realm = g_v.realm,
        .encryption_key_pem = g_v.enc_pem,
        .encryption_key_pem_len = g_v.enc_len,
        .signature_key_pem = g_v.sig_pem,
        .signature_key_pem_len = g_v.sig_len,
        .sign_query_params = 1,
    };
    const char *bad = NULL;
    oauth_status st = oauth_session_new(&cfg, &g_session, &bad);
    if (st != OAUTH_OK)
        fail(bad != NULL ? bad : "oauth_session_new", (int)st);
    (void)snprintf(g_lst_url, sizeof g_lst_url, "%s/oauth/live_session_token", g_v.base_url);
    return 0;
}

static int nonempty_cstr(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lst_answer a;
    lst_json_status js = lst_json_parse((const char *)data, size, &a);
    if (js != LST_JSON_OK) {
        if (a.dh_response != NULL || a.signature != NULL)
            fail("a failed parse left strings behind", (int)js);
        if (js != LST_JSON_NOT_JSON && js != LST_JSON_MISSING_FIELD && js != LST_JSON_BAD_DH &&
            js != LST_JSON_BAD_EXPIRATION)
            fail("unexpected parse status", (int)js);
        return 0;
    }
    if (!nonempty_cstr(a.dh_response) || !nonempty_cstr(a.signature) || a.expires_ms < 0)
        fail("a parse accepted empty fields or a negative expiration", 0);

    if (!g_pending)
        request();
    oauth_status st = oauth_lst_complete(g_session, a.dh_response, a.signature, a.expires_ms);
    switch (st) {
    case OAUTH_OK: {
        g_pending = 0;
        char tok[OAUTH_LST_B64_MAX], auth[OAUTH_AUTH_MAX];
        int64_t exp = -1;
        if (oauth_live_session_token(g_session, tok, sizeof tok, &exp) != OAUTH_OK ||
            exp != a.expires_ms)
            fail("no LST, or another expiration, after lst_complete ok", 0);
        oauth_pins pins = {g_v.nonce, g_v.timestamp, NULL};
        st = oauth_sign(g_session, "GET", "https://api.ibkr.com/v1/api/portfolio/accounts?a=1",
                        &pins, NULL, auth, sizeof auth);
        if (st != OAUTH_OK)
            fail("cannot sign with the new LST", (int)st);
        break;
    }
    case OAUTH_ERR_BAD_DH_RESPONSE:
    case OAUTH_ERR_LST_MISMATCH:
        break;
    default:
        fail("unexpected lst_complete status", (int)st);
    }
    lst_answer_free(&a);
    return 0;
}
