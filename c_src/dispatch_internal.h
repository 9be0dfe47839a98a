/*
 * dispatch_internal.h — what the command files (cmd_*.c) share with
 * dispatch.c: the port's state, the replies that count as errors, and the
 * command entry points the table in dispatch.c calls.
 */
#ifndef IBKR_DISPATCH_INTERNAL_H
#define IBKR_DISPATCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "erlcmd.h"
#include "etf_args.h"
#include "http.h"
#include "oauth.h"

struct op; /* an in-flight HTTP operation, private to cmd_http.c */

typedef struct {
    erlcmd *c;
    oauth_session *session; /* NULL before a successful init */
    char *base_url;
    char *lst_url;
    struct op *ops;
    struct op *auth;   /* the in-flight authenticate, if any */
    size_t waiting;    /* ids across ops */
    uint64_t requests, handshakes, errors;
    int wipe_frame;    /* the current frame carries secrets */
} dispatch_state;

extern dispatch_state D;

/* Replies; all but reply_expires count in D.errors. */
void reply_error(uint64_t id, const char *reason);
void reply_error2(uint64_t id, const char *tag, const char *what);
void reply_badarg(uint64_t id, const char *field);
void reply_bad_config(uint64_t id, const char *field, const char *why);
void reply_oauth_error(uint64_t id, oauth_status st);
void reply_expires(uint64_t id, int64_t ms); /* {ok, #{expires_at => Ms}} */

/* Commands: at is the index of the first argument in f. */
void cmd_init(const frame *f, uint64_t id, int at);
void cmd_lst_request(const frame *f, uint64_t id, int at);
void cmd_lst_complete(const frame *f, uint64_t id, int at);
void cmd_live_session_token(const frame *f, uint64_t id, int at);
void cmd_sign(const frame *f, uint64_t id, int at);
void cmd_authenticate(const frame *f, uint64_t id, int at);
void cmd_http(const frame *f, uint64_t id, int at);
void cmd_cancel(const frame *f, uint64_t id, int at);
void cmd_generate_rsa(const frame *f, uint64_t id, int at); /* cmd_keygen.c */
void cmd_generate_dh(const frame *f, uint64_t id, int at);

/* The pending authenticate (if any) answered {error, cancelled}: a replaced
 * session's handshake cannot complete. */
void ops_abort_auth(void);
/* Exit path: every transfer aborted, no replies. */
void ops_shutdown(void);

#endif
