/*
 * main.c — ibkr_oauth_port: setup and the single poll loop.
 *
 * fd 3 carries {packet,4} frames from the BEAM, fd 4 frames to it (the port
 * is opened with nouse_stdio); fds 0-2 are left alone and nothing is ever
 * written to stdout. One poll() covers fd 3, fd 4 while output is queued,
 * every socket libcurl asks for and the websocket's (cmd_ws.h), with the
 * nearest of their timers as the timeout. Each turn: write queued replies,
 * poll, read and dispatch a batch of frames, let curl and the websocket
 * progress. EOF, POLLHUP or POLLERR on fd 3 means the BEAM is gone:
 * secrets are wiped, transfers aborted and the process exits 0, with an
 * alarm() backstop in case a cleanup step blocks.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "cmd_ws.h"
#include "dispatch.h"
#include "erlcmd.h"
#include "http.h"

#define FD_IN 3
#define FD_OUT 4
#define EXIT_BACKSTOP_S 3
/* Stop reading requests while this much output waits for the BEAM. */
#define OUT_BACKLOG_MAX ((size_t)16 * 1024 * 1024)

static void on_alarm(int sig)
{
    (void)sig;
    _exit(0);
}

static int setup_fd(int fd)
{
    int fdfl = fcntl(fd, F_GETFD);
    int fl = fcntl(fd, F_GETFL);
    if (fdfl < 0 || fl < 0)
        return -1;
    /* CLOEXEC: nothing we might spawn (curl never does) inherits the
     * protocol fds. Non-blocking: a full pipe to the BEAM must not stall
     * the loop; replies queue instead. */
    if (fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return 0;
}

/* The keys, the secret and the LST live in this process's memory: no core
 * file may hold them, and (Linux) other processes of the same user may not
 * ptrace it or read /proc/<pid>/mem. Best effort: failures are ignored. */
static void harden(void)
{
    struct rlimit none = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &none);
#ifdef __linux__
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
}

int main(void)
{
    harden();
    if (setup_fd(FD_IN) != 0 || setup_fd(FD_OUT) != 0) {
        (void)fprintf(stderr, "ibkr_oauth_port: fds 3 and 4 must be open "
                        "(open_port with nouse_stdio)\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGPIPE, &sa, NULL); /* a closed fd 4 is EPIPE, not death */
    sa.sa_handler = on_alarm;
    (void)sigaction(SIGALRM, &sa, NULL);

    /* libcurl is not touched here: http_open loads it at the first HTTP
     * request, so start-up does not pay for its ~30 libraries. */
    size_t pcap = 16;
    struct pollfd *pfds = malloc(pcap * sizeof *pfds);
    erlcmd cmd;
    if (pfds == NULL || erlcmd_init(&cmd, FD_IN, FD_OUT, dispatch_frame, NULL) != 0) {
        (void)fprintf(stderr, "ibkr_oauth_port: out of memory\n");
        free(pfds);
        return 1;
    }

    int status = 0;
    for (;;) {
        if (cmd.failed) {
            status = 1; /* out of memory while encoding: replies were lost */
            break;
        }
        if (erlcmd_flush(&cmd) < 0)
            break; /* the BEAM closed its end */

        size_t nsock = http_poll_count(), nws = ws_poll_count();
        if (pcap < 2 + nsock + nws) {
            size_t cap = 2 + nsock + nws + 16; /* room for a few more of curl's sockets */
            struct pollfd *p = realloc(pfds, cap * sizeof *p);
            if (p == NULL) {
                status = 1;
                break;
            }
            pfds = p;
            pcap = cap;
        }
        size_t pending = erlcmd_pending(&cmd);
        pfds[0].fd = FD_IN;
        pfds[0].events = pending < OUT_BACKLOG_MAX ? POLLIN : 0; /* HUP/ERR always reported */
        pfds[0].revents = 0;
        pfds[1].fd = pending > 0 ? FD_OUT : -1;
        pfds[1].events = POLLOUT;
        pfds[1].revents = 0;
        nsock = http_poll_fill(pfds + 2, nsock);
        /* The websocket's messages wait in the kernel while replies back up. */
        nws = ws_poll_fill(pfds + 2 + nsock, nws, pending < OUT_BACKLOG_MAX);

        int tmo = http_poll_timeout(), wtmo = ws_poll_timeout();
        if (wtmo >= 0 && (tmo < 0 || wtmo < tmo))
            tmo = wtmo;
        int n = poll(pfds, (nfds_t)(2 + nsock + nws), tmo);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            status = 1;
            break;
        }
        if (pfds[0].revents & POLLIN) {
            if (erlcmd_process(&cmd) < 0)
                break; /* EOF */
        } else if (pfds[0].revents & (POLLHUP | POLLERR | POLLNVAL)) {
            break;
        }
        if (pfds[1].revents & (POLLERR | POLLHUP | POLLNVAL))
            break;
        http_poll_handle(pfds + 2, nsock);
        ws_poll_handle(pfds + 2 + nsock, nws);
    }

    alarm(EXIT_BACKSTOP_S);
    dispatch_shutdown(); /* wipes the session first */
    http_global_cleanup(); /* and curl_global_cleanup, if libcurl was loaded */
    erlcmd_destroy(&cmd);
    free(pfds);
    return status;
}
