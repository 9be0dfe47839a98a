/*
 * cmd_keygen.c — generate_rsa and generate_dh (PROTOCOL.md): key material
 * for `ibkr_oauth setup`, made before any init. generate_dh blocks the port
 * for tens of seconds; it reports {0, {progress, Id, Stage}} events on the
 * way and gives up when the BEAM goes away (fd 3 hung up).
 */
#include <poll.h>
#include <time.h>

#include "commands.h"
#include "keygen.h"
#include "port_state.h"

/* At most one progress event per this many ms (the search calls back
 * thousands of times). */
#define PROGRESS_EVERY_MS 200

/* Fuzzing builds refuse the sizes that take seconds (an 8192-bit RSA key, a
 * 2048-bit safe prime): a fuzzer finds those commands quickly. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define RSA_BITS_MAX 2048
#define DH_BITS_MAX 512
#else
#define RSA_BITS_MAX 65536 /* keygen.c refuses above its own limits */
#define DH_BITS_MAX 65536
#endif

static int dec_bits(const frame *f, int at, long long max, int *bits)
{
    long long v;
    if (dec_i64(f, &at, &v) != 0 || v < 0 || v > max)
        return -1;
    *bits = (int)v;
    return 0;
}

static void reply_keygen_error(uint64_t id, keygen_status st)
{
    if (st == KEYGEN_ERR_BITS)
        reply_badarg(id, "bits");
    else
        reply_error(id, keygen_status_atom(st));
}

/* {ok, #{K1 => Pem1, K2 => Pem2}}; secret: the output buffer is wiped once
 * written. */
static void reply_two(uint64_t id, const char *k1, const keygen_pem *v1, const char *k2,
                      const keygen_pem *v2, int secret)
{
    if (erlcmd_reserve(g_port.c, v1->len + v2->len + 128) != 0)
        return;
    ei_x_buff *x = erlcmd_begin_reply(g_port.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_encode_map_header(x, 2);
    r |= ei_x_encode_atom(x, k1);
    r |= erlcmd_encode_binary(x, v1->data, v1->len);
    r |= ei_x_encode_atom(x, k2);
    r |= erlcmd_encode_binary(x, v2->data, v2->len);
    if (erlcmd_end(g_port.c, r) == 0 && secret)
        g_port.c->sensitive = 1;
}

void cmd_generate_rsa(const frame *f, uint64_t id, int at)
{
    int bits;
    if (dec_bits(f, at, RSA_BITS_MAX, &bits) != 0) {
        reply_badarg(id, "bits");
        return;
    }
    keygen_pem priv, pub;
    keygen_status st = keygen_rsa(bits, &priv, &pub);
    if (st != KEYGEN_OK) {
        reply_keygen_error(id, st);
        return;
    }
    reply_two(id, "private_pem", &priv, "public_pem", &pub, 1);
    keygen_pem_free(&priv);
    keygen_pem_free(&pub);
}

typedef struct {
    uint64_t id;
    struct timespec last;
    int sent;
} progress_state;

static long ms_since(const struct timespec *a, const struct timespec *b)
{
    return (long)(b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

static const char *stage_atom(keygen_stage s)
{
    switch (s) {
    case KEYGEN_STAGE_CANDIDATE:
        return "candidate";
    case KEYGEN_STAGE_TESTING:
        return "testing";
    case KEYGEN_STAGE_PASSED:
    default:
        return "passed";
    }
}

/* Nothing reads fd 3 while the search runs: look for a hang-up (the BEAM
 * closed the port) without consuming anything, and stop if so. */
static int beam_gone(void)
{
    struct pollfd p = {g_port.c->in_fd, 0, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static int on_progress(keygen_stage stage, void *ctx)
{
    progress_state *ps = ctx;
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return 1;
    if (ps->sent && ms_since(&ps->last, &now) < PROGRESS_EVERY_MS)
        return 1;
    if (beam_gone())
        return 0;
    ps->last = now;
    ps->sent = 1;
    ei_x_buff *x = erlcmd_begin(g_port.c);
    if (x == NULL)
        return 1;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_ulong(x, 0);
    r |= ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "progress");
    r |= ei_x_encode_ulonglong(x, ps->id);
    r |= ei_x_encode_atom(x, stage_atom(stage));
    if (erlcmd_end(g_port.c, r) == 0)
        (void)erlcmd_flush(g_port.c); /* now: the main loop is not running */
    return 1;
}

void cmd_generate_dh(const frame *f, uint64_t id, int at)
{
    int bits;
    if (dec_bits(f, at, DH_BITS_MAX, &bits) != 0) {
        reply_badarg(id, "bits");
        return;
    }
    progress_state ps = {id, {0, 0}, 0};
    keygen_pem pem, hex;
    keygen_status st = keygen_dh(bits, on_progress, &ps, &pem, &hex);
    if (st != KEYGEN_OK) {
        reply_keygen_error(id, st);
        return;
    }
    reply_two(id, "pem", &pem, "prime_hex", &hex, 0);
    keygen_pem_free(&pem);
    keygen_pem_free(&hex);
}
