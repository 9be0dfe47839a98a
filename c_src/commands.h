/*
 * commands.h — the command table (commands.c) and every command's entry
 * point. To add a command: write cmd_<name>(...) in its own cmd_*.c,
 * declare it here, and add one row to COMMANDS in commands.c.
 */
#ifndef IBKR_COMMANDS_H
#define IBKR_COMMANDS_H

#include <stddef.h>
#include <stdint.h>

#include "etf_args.h"

/* id is the request id (0 only for a command with id0 set); at is the
 * index in f of the first argument after the command's name. */
typedef void (*cmd_fn)(const frame *f, uint64_t id, int at);

typedef struct {
    const char *name;  /* the atom: `name` or `{name, Arg...}` */
    int arity;         /* arguments after the name; 0: a bare atom */
    int needs_session; /* answered not_initialized before a successful init */
    int id0;           /* may be sent with Id 0 (no reply wanted) */
    cmd_fn fn;
} command;

/* The row for name, or NULL. */
const command *command_find(const char *name);

/* cmd_init.c */
void cmd_init(const frame *f, uint64_t id, int at);
/* cmd_crypto.c */
void cmd_lst_request(const frame *f, uint64_t id, int at);
void cmd_lst_complete(const frame *f, uint64_t id, int at);
void cmd_live_session_token(const frame *f, uint64_t id, int at);
void cmd_sign(const frame *f, uint64_t id, int at);
/* cmd_http.c */
void cmd_authenticate(const frame *f, uint64_t id, int at);
void cmd_http(const frame *f, uint64_t id, int at);
void cmd_cancel(const frame *f, uint64_t id, int at);
/* cmd_ws.c */
void cmd_ws_open(const frame *f, uint64_t id, int at);
void cmd_ws_send(const frame *f, uint64_t id, int at);
void cmd_ws_close(const frame *f, uint64_t id, int at);
/* cmd_keygen.c */
void cmd_generate_rsa(const frame *f, uint64_t id, int at);
void cmd_generate_dh(const frame *f, uint64_t id, int at);

/* cmd_http.c's in-flight operations. */
size_t ops_waiting(void); /* request ids waiting for an answer */
/* The pending authenticate (if any) answered {error, cancelled}: a replaced
 * session's handshake cannot complete. */
void ops_abort_auth(void);
/* Exit path: every transfer aborted, no replies. */
void ops_shutdown(void);

#endif
