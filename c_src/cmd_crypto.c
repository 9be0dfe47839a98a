/*
 * cmd_crypto.c — the commands that only compute: lst_request, lst_complete,
 * live_session_token and sign (the hot path).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base_url.h"
#include "commands.h"
#include "http.h"
#include "port_state.h"

void cmd_lst_request(const frame *f, uint64_t id, int at)
{
    mfield fl[3] = {{"nonce", -1}, {"timestamp", -1}, {"dh_random", -1}};
    if (map_fields(f, at, fl, 3) != 0) {
        reply_error(id, "badarg");
        return;
    }
    oauth_pins pins;
    const char *bad = get_pins(f, fl, 1, &pins);
    if (bad != NULL) {
        reply_badarg(id, bad);
        return;
    }
    char *auth = NULL;
    oauth_status st = oauth_lst_request(g_port.session, g_port.lst_url, &pins, &auth);
    if (st == OAUTH_ERR_BADARG && pins.dh_random_hex != NULL) {
        reply_badarg(id, "dh_random"); /* e.g. a zero exponent */
        return;
    }
    if (st != OAUTH_OK) {
        reply_oauth_error(id, st);
        return;
    }
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x != NULL) {
        int r = ei_x_encode_tuple_header(x, 2);
        r |= ei_x_encode_atom(x, "ok");
        r |= ei_x_encode_map_header(x, 3);
        r |= ei_x_encode_atom(x, "method");
        r |= erlcmd_encode_binary(x, "POST", 4);
        r |= ei_x_encode_atom(x, "url");
        r |= erlcmd_encode_binary(x, g_port.lst_url, strlen(g_port.lst_url));
        r |= ei_x_encode_atom(x, "authorization");
        r |= erlcmd_encode_binary(x, auth, strlen(auth));
        (void)erlcmd_end(g_port.c, r);
    }
    free(auth);
}

void cmd_lst_complete(const frame *f, uint64_t id, int at)
{
    mfield fl[3] = {{"diffie_hellman_response", -1}, {"live_session_token_signature", -1},
                    {"live_session_token_expiration", -1}};
    if (map_fields(f, at, fl, 3) != 0) {
        reply_error(id, "badarg");
        return;
    }
    char *dh = NULL, *sig = NULL;
    long long exp;
    int idx;
    if ((idx = fl[0].at) < 0 || dec_cstr(f, &idx, &dh, NULL) != 0) {
        reply_badarg(id, fl[0].name);
        return;
    }
    if ((idx = fl[1].at) < 0 || dec_cstr(f, &idx, &sig, NULL) != 0) {
        reply_badarg(id, fl[1].name);
        return;
    }
    if ((idx = fl[2].at) < 0 || dec_i64(f, &idx, &exp) != 0 || exp < 0) {
        reply_badarg(id, fl[2].name);
        return;
    }
    oauth_status st = oauth_lst_complete(g_port.session, dh, sig, exp);
    if (st != OAUTH_OK) {
        reply_oauth_error(id, st);
        return;
    }
    g_port.handshakes++;
    reply_expires(id, exp);
}

void cmd_live_session_token(const frame *f, uint64_t id, int at)
{
    (void)f;
    (void)at;
    char tok[OAUTH_LST_B64_MAX];
    int64_t exp = 0;
    oauth_status st = oauth_live_session_token(g_port.session, tok, sizeof tok, &exp);
    if (st != OAUTH_OK) {
        reply_oauth_error(id, st);
        return;
    }
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x != NULL) {
        int r = ei_x_encode_tuple_header(x, 2);
        r |= ei_x_encode_atom(x, "ok");
        r |= ei_x_encode_map_header(x, 2);
        r |= ei_x_encode_atom(x, "token");
        r |= erlcmd_encode_binary(x, tok, strlen(tok));
        r |= ei_x_encode_atom(x, "expires_at");
        r |= ei_x_encode_longlong(x, exp);
        if (erlcmd_end(g_port.c, r) == 0)
            g_port.c->sensitive = 1; /* wipe the output buffer once written */
    }
    OPENSSL_cleanse(tok, sizeof tok);
}

/* The hot path: no allocation beyond the output buffer. */
void cmd_sign(const frame *f, uint64_t id, int at)
{
    char *method, *url;
    if (dec_method(f, &at, &method) != 0) {
        reply_badarg(id, "method");
        return;
    }
    size_t url_len;
    if (dec_cstr(f, &at, &url, &url_len) != 0 || url_len > HTTP_URL_MAX ||
        abs_url_check(url, url_len) != 0) {
        reply_badarg(id, "url");
        return;
    }
    mfield fl[4] = {{"nonce", -1}, {"timestamp", -1}, {"dh_random", -1}, {"lst", -1}};
    if (map_fields(f, at, fl, 4) != 0) {
        reply_badarg(id, "opts");
        return;
    }
    oauth_pins pins;
    const char *bad = get_pins(f, fl, 0, &pins);
    if (bad != NULL) {
        reply_badarg(id, bad);
        return;
    }
    char *lst = NULL;
    int idx;
    if ((idx = fl[3].at) >= 0) {
        g_port.wipe_frame = 1;
        size_t n;
        if (dec_cstr(f, &idx, &lst, &n) != 0 || n == 0 || n >= OAUTH_LST_B64_MAX) {
            reply_badarg(id, "lst");
            return;
        }
    }
    char auth[OAUTH_AUTH_MAX];
    oauth_status st = oauth_sign(g_port.session, method, url, &pins, lst, auth, sizeof auth);
    switch (st) {
    case OAUTH_OK:
        (void)erlcmd_reply_binary(g_port.c, id, auth, strlen(auth));
        return;
    case OAUTH_ERR_NOT_BASE64:
        reply_badarg(id, "lst");
        return;
    case OAUTH_ERR_BADARG:
    case OAUTH_ERR_TOO_LONG: /* method, nonce and lst were checked: the URL */
        reply_badarg(id, lst != NULL && st == OAUTH_ERR_TOO_LONG ? "lst" : "url");
        return;
    default:
        reply_oauth_error(id, st);
        return;
    }
}

