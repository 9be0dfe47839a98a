/*
 * dispatch.h — decodes {Id, Command} frames and runs them (PROTOCOL.md):
 * init, lst_request, lst_complete, live_session_token, sign, authenticate,
 * http, cancel, echo, stats. Bad input is answered, never fatal; nothing
 * secret goes into a reply other than the one asked for, or into a log.
 *
 * State: one oauth_session (NULL before a successful init), the base URL,
 * the in-flight HTTP operations keyed by request id, counters.
 */
#ifndef IBKR_DISPATCH_H
#define IBKR_DISPATCH_H

#include <stddef.h>

#include "erlcmd.h"

/* erlcmd_handler for every frame from the BEAM (one term, or a batch of
 * them: PROTOCOL.md); ctx is unused. */
void dispatch_frame(erlcmd *c, char *frame, size_t len, void *ctx);

/* Exit path: aborts in-flight operations without replies and wipes the
 * session (call before http_global_cleanup). */
void dispatch_shutdown(void);

#endif
