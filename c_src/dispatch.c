/*
 * dispatch.c — {Id, Command} decoding and the commands of PROTOCOL.md.
 *
 * Every frame is first checked by erlcmd_check_term (ei has no bounds
 * checks), then decoded with ei_decode_* / ei_get_type, each result checked.
 * Binaries are read in place; the ones handed to C APIs as strings are
 * copied, NUL-terminated, into a per-command arena that is wiped afterwards.
 * The sign path allocates nothing in steady state.
 */
#include "dispatch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "http.h"
#include "lst_json.h"
#include "oauth.h"

#define KEY_FILE_MAX ((size_t)64 * 1024)
#define BASE_URL_MAX 2048
#define PATH_MAX_LEN 4096
#define LST_PATH "/oauth/live_session_token"
#define ATOM_BUF 256 /* longest atom we compare against is far shorter */

/* ---- state --------------------------------------------------------------------- */

enum { OP_HTTP, OP_AUTH };

/* An HTTP transfer in flight and the request ids waiting for it (several
 * only for an authenticate that later callers joined). */
typedef struct op {
    struct op *prev, *next;
    int kind;
    http_xfer *xfer;
    uint64_t *ids;
    size_t nids, capids;
    uint64_t id0; /* ids points here until a second id arrives */
} op;

static struct {
    erlcmd *c;
    oauth_session *session;
    char *base_url;
    char *lst_url;
    op *ops;
    op *auth;          /* the in-flight authenticate, if any */
    size_t waiting;    /* ids across ops */
    uint64_t requests, handshakes, errors;
    int wipe_frame;    /* the current frame carries secrets */
} D;

/* ---- arena for C strings of the current command ------------------------------ */

typedef struct chunk {
    struct chunk *next;
    size_t size;
    char data[];
} chunk;

static char g_arena[16 * 1024];
static size_t g_arena_used;
static chunk *g_chunks;

static char *arena_alloc(size_t n)
{
    if (n <= sizeof g_arena - g_arena_used) {
        char *p = g_arena + g_arena_used;
        g_arena_used += n;
        return p;
    }
    chunk *k = malloc(sizeof *k + n);
    if (k == NULL)
        return NULL;
    k->size = n;
    k->next = g_chunks;
    g_chunks = k;
    return k->data;
}

/* Strings may be secrets (access_token_secret, an explicit LST): wiped. */
static void arena_reset(void)
{
    OPENSSL_cleanse(g_arena, g_arena_used);
    g_arena_used = 0;
    while (g_chunks != NULL) {
        chunk *k = g_chunks;
        g_chunks = k->next;
        OPENSSL_cleanse(k->data, k->size);
        free(k);
    }
}

/* ---- replies that count as errors ------------------------------------------------ */

static void reply_error(uint64_t id, const char *reason)
{
    D.errors++;
    (void)erlcmd_reply_error(D.c, id, reason);
}

static void reply_error2(uint64_t id, const char *tag, const char *what)
{
    D.errors++;
    (void)erlcmd_reply_error2(D.c, id, tag, what);
}

static void reply_badarg(uint64_t id, const char *field)
{
    reply_error2(id, "badarg", field);
}

static void reply_bad_config(uint64_t id, const char *field, const char *why)
{
    D.errors++;
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "error");
    r |= ei_x_encode_tuple_header(x, 3);
    r |= ei_x_encode_atom(x, "bad_config");
    r |= ei_x_encode_atom(x, field);
    r |= ei_x_encode_atom(x, why);
    (void)erlcmd_end(D.c, r);
}

/* {ok, #{expires_at => Ms}} */
static void reply_expires(uint64_t id, int64_t ms)
{
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_encode_map_header(x, 1);
    r |= ei_x_encode_atom(x, "expires_at");
    r |= ei_x_encode_longlong(x, ms);
    (void)erlcmd_end(D.c, r);
}

/* ---- decoding helpers (on a frame already checked by erlcmd_check_term) ---------- */

typedef struct {
    const char *buf;
    size_t len;
} frame;

static int is_integer_type(int t)
{
    return t == ERL_SMALL_INTEGER_EXT || t == ERL_INTEGER_EXT || t == ERL_SMALL_BIG_EXT ||
           t == ERL_LARGE_BIG_EXT;
}

static int type_at(const frame *f, int idx, int *type, int *size)
{
    if (idx < 0 || (size_t)idx >= f->len)
        return -1;
    return ei_get_type(f->buf, &idx, type, size);
}

/* An atom into out[ATOM_BUF]; -1 (index unchanged) if not an atom or too long. */
static int dec_atom(const frame *f, int *idx, char *out)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || t != ERL_ATOM_EXT)
        return -1;
    return ei_decode_atom_as(f->buf, idx, out, ATOM_BUF, ERLANG_UTF8, NULL, NULL);
}

/* A binary, in place. */
static int dec_bin(const frame *f, int *idx, const char **p, size_t *n)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || t != ERL_BINARY_EXT || sz < 0)
        return -1;
    *p = f->buf + *idx + 5;
    *n = (size_t)sz;
    *idx += 5 + sz;
    return 0;
}

/* A binary copied into the arena as a C string; -1 if not a binary or it
 * contains NUL (or no memory). */
static int dec_cstr(const frame *f, int *idx, char **out, size_t *outlen)
{
    const char *p;
    size_t n;
    if (dec_bin(f, idx, &p, &n) != 0 || memchr(p, '\0', n) != NULL)
        return -1;
    char *d = arena_alloc(n + 1);
    if (d == NULL)
        return -1;
    memcpy(d, p, n);
    d[n] = '\0';
    *out = d;
    if (outlen != NULL)
        *outlen = n;
    return 0;
}

static int dec_i64(const frame *f, int *idx, long long *v)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || !is_integer_type(t))
        return -1;
    return ei_decode_longlong(f->buf, idx, v);
}

static int dec_u64(const frame *f, int *idx, unsigned long long *v)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || !is_integer_type(t))
        return -1;
    return ei_decode_ulonglong(f->buf, idx, v);
}

static int dec_bool(const frame *f, int *idx, int *v)
{
    int t, sz;
    if (type_at(f, *idx, &t, &sz) != 0 || t != ERL_ATOM_EXT)
        return -1;
    return ei_decode_boolean(f->buf, idx, v);
}

/* Map lookup: each fields[i].at gets the index of that key's value, or -1.
 * Keys that are not atoms, or not asked for, are skipped. -1: not a map. */
typedef struct {
    const char *name;
    int at;
} mfield;

static int map_fields(const frame *f, int idx, mfield *fields, size_t nf)
{
    for (size_t i = 0; i < nf; i++)
        fields[i].at = -1;
    int t, sz, arity;
    if (type_at(f, idx, &t, &sz) != 0 || t != ERL_MAP_EXT ||
        ei_decode_map_header(f->buf, &idx, &arity) != 0)
        return -1;
    for (int k = 0; k < arity; k++) {
        char key[ATOM_BUF];
        if (dec_atom(f, &idx, key) == 0) {
            for (size_t i = 0; i < nf; i++)
                if (strcmp(key, fields[i].name) == 0)
                    fields[i].at = idx;
        } else if (erlcmd_skip_term(f->buf, f->len, &idx) != 0) {
            return -1;
        }
        if (erlcmd_skip_term(f->buf, f->len, &idx) != 0)
            return -1;
    }
    return 0;
}

/* ---- pins (lst_request, sign, authenticate) -------------------------------------- */

static int header_safe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\')
            return 0;
    }
    return 1;
}

static int all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    return 1;
}

/* nonce, timestamp and (when dh is set) dh_random from fields[0..2]. Returns
 * NULL, or the name of the bad field. */
static const char *get_pins(const frame *f, const mfield *fields, int dh, oauth_pins *pins)
{
    *pins = OAUTH_PINS_NONE;
    int idx;
    if ((idx = fields[0].at) >= 0) {
        char *s;
        size_t n;
        if (dec_cstr(f, &idx, &s, &n) != 0 || n == 0 || n > OAUTH_NONCE_MAX || !header_safe(s, n))
            return "nonce";
        pins->nonce = s;
    }
    if ((idx = fields[1].at) >= 0) {
        long long ts;
        if (dec_i64(f, &idx, &ts) != 0 || ts < 0)
            return "timestamp";
        pins->timestamp = ts;
    }
    if (dh && (idx = fields[2].at) >= 0) {
        char *s;
        size_t n;
        if (dec_cstr(f, &idx, &s, &n) != 0 || n == 0 || n > 128 || !all_hex(s, n))
            return "dh_random";
        pins->dh_random_hex = s;
    }
    return NULL;
}

static const char *get_timeout(const frame *f, int at, long *ms)
{
    *ms = HTTP_TIMEOUT_DEFAULT;
    if (at < 0)
        return NULL;
    long long v;
    if (dec_i64(f, &at, &v) != 0 || v < 0 || v > 0x7fffffffLL)
        return "timeout";
    *ms = (long)v;
    return NULL;
}

/* ---- in-flight operations ------------------------------------------------------------ */

static op *op_new(int kind, uint64_t id)
{
    op *o = calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->kind = kind;
    o->id0 = id;
    o->ids = &o->id0;
    o->nids = o->capids = 1;
    o->next = D.ops;
    if (D.ops != NULL)
        D.ops->prev = o;
    D.ops = o;
    D.waiting++;
    return o;
}

static int op_add_id(op *o, uint64_t id)
{
    if (o->nids == o->capids) {
        size_t cap = o->capids * 2;
        uint64_t *p = malloc(cap * sizeof *p);
        if (p == NULL)
            return -1;
        memcpy(p, o->ids, o->nids * sizeof *p);
        if (o->ids != &o->id0)
            free(o->ids);
        o->ids = p;
        o->capids = cap;
    }
    o->ids[o->nids++] = id;
    D.waiting++;
    return 0;
}

static void op_free(op *o)
{
    if (o->prev != NULL)
        o->prev->next = o->next;
    else
        D.ops = o->next;
    if (o->next != NULL)
        o->next->prev = o->prev;
    if (D.auth == o)
        D.auth = NULL;
    D.waiting -= o->nids;
    if (o->ids != &o->id0)
        free(o->ids);
    free(o);
}

/* The op waiting for id, and the position of id in it. */
static op *op_find(uint64_t id, size_t *pos)
{
    for (op *o = D.ops; o != NULL; o = o->next)
        for (size_t i = 0; i < o->nids; i++)
            if (o->ids[i] == id) {
                *pos = i;
                return o;
            }
    return NULL;
}

/* Aborts an op's transfer and answers all its ids {error, cancelled}. */
static void op_abort(op *o)
{
    http_xfer_cancel(o->xfer);
    for (size_t i = 0; i < o->nids; i++)
        reply_error(o->ids[i], "cancelled");
    op_free(o);
}

/* ---- HTTP completion ---------------------------------------------------------------- */

static void reply_transport(uint64_t id, const http_result *r)
{
    if (strcmp(r->error, "timeout") == 0)
        reply_error(id, "timeout");
    else
        reply_error2(id, "transport", r->error);
}

static void log_transport(const char *what, const http_result *r)
{
    (void)erlcmd_log(D.c, "debug", "%s failed: %s (%s)", what, r->error, r->detail);
}

/* {Id, {ok, #{status => S, headers => [{N, V}], body => B}}} */
static void reply_response(uint64_t id, const http_result *r)
{
    size_t need = r->body_len + r->hdrs_len + 16 * r->nhdrs + 256;
    if (r->body_len > HTTP_BODY_MAX || erlcmd_reserve(D.c, need) != 0) {
        reply_error2(id, "transport", "too_large");
        return;
    }
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int rc = ei_x_encode_tuple_header(x, 2);
    rc |= ei_x_encode_atom(x, "ok");
    rc |= ei_x_encode_map_header(x, 3);
    rc |= ei_x_encode_atom(x, "status");
    rc |= ei_x_encode_long(x, r->status);
    rc |= ei_x_encode_atom(x, "headers");
    if (r->nhdrs > 0)
        rc |= ei_x_encode_list_header(x, (long)r->nhdrs);
    size_t pos = 0, count = 0;
    const char *n, *v;
    size_t nl, vl;
    while (rc == 0 && count < r->nhdrs && http_header_next(r, &pos, &n, &nl, &v, &vl)) {
        rc |= ei_x_encode_tuple_header(x, 2);
        rc |= erlcmd_encode_binary(x, n, nl);
        rc |= erlcmd_encode_binary(x, v, vl);
        count++;
    }
    if (count != r->nhdrs)
        rc = -1;
    rc |= ei_x_encode_empty_list(x);
    rc |= ei_x_encode_atom(x, "body");
    rc |= erlcmd_encode_binary(x, r->body, r->body_len);
    (void)erlcmd_end(D.c, rc);
}

static void on_http_done(void *user, const http_result *r)
{
    op *o = user;
    if (r->error != NULL) {
        log_transport("http request", r);
        reply_transport(o->id0, r);
    } else {
        reply_response(o->id0, r);
    }
    op_free(o);
}

/* {Id, {error, {http, Status, Body}}} */
static void reply_http_status(uint64_t id, const http_result *r)
{
    D.errors++;
    if (erlcmd_reserve(D.c, r->body_len + 256) != 0)
        return;
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int rc = ei_x_encode_tuple_header(x, 2);
    rc |= ei_x_encode_atom(x, "error");
    rc |= ei_x_encode_tuple_header(x, 3);
    rc |= ei_x_encode_atom(x, "http");
    rc |= ei_x_encode_long(x, r->status);
    rc |= erlcmd_encode_binary(x, r->body, r->body_len);
    (void)erlcmd_end(D.c, rc);
}

static void on_auth_done(void *user, const http_result *r)
{
    op *o = user;
    if (D.auth == o)
        D.auth = NULL;
    if (r->error != NULL) {
        log_transport("authenticate", r);
        for (size_t i = 0; i < o->nids; i++)
            reply_transport(o->ids[i], r);
    } else if (r->status != 200) {
        (void)erlcmd_log(D.c, "warning", "authenticate: HTTP status %ld", r->status);
        for (size_t i = 0; i < o->nids; i++)
            reply_http_status(o->ids[i], r);
    } else {
        lst_answer a;
        lst_json_status js = lst_json_parse(r->body, r->body_len, &a);
        if (js != LST_JSON_OK) {
            (void)erlcmd_log(D.c, "warning", "authenticate: bad response (%s)",
                             lst_json_status_atom(js));
            for (size_t i = 0; i < o->nids; i++)
                reply_error2(o->ids[i], "bad_response", lst_json_status_atom(js));
        } else {
            oauth_status st = oauth_lst_complete(D.session, a.dh_response, a.signature,
                                                 a.expires_ms);
            if (st == OAUTH_OK) {
                D.handshakes++;
                (void)erlcmd_log(D.c, "info", "live session token obtained, expires at %lld",
                                 (long long)a.expires_ms);
                for (size_t i = 0; i < o->nids; i++)
                    reply_expires(o->ids[i], a.expires_ms);
            } else {
                (void)erlcmd_log(D.c, "warning", "authenticate: %s", oauth_status_atom(st));
                for (size_t i = 0; i < o->nids; i++)
                    reply_error(o->ids[i], oauth_status_atom(st));
            }
            lst_answer_free(&a);
        }
    }
    op_free(o);
}

/* ---- init ---------------------------------------------------------------------------- */

static const char *errno_why(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return "enoent";
    case EACCES:
    case EPERM:
        return "eacces";
    case EISDIR:
        return "eisdir";
    default:
        return "file_error";
    }
}

/* Opens path read-only as a regular file (O_NONBLOCK: a FIFO must not hang
 * the port). Returns the fd, or -1 with *why set. */
static int open_regular(const char *path, struct stat *st, const char **why)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        *why = errno_why(errno);
        return -1;
    }
    *why = NULL;
    int ok = fstat(fd, st) == 0;
    if (ok && S_ISDIR(st->st_mode))
        *why = "eisdir";
    else if (!ok || !S_ISREG(st->st_mode))
        *why = "file_error"; /* also devices, FIFOs, sockets */
    if (*why != NULL) {
        (void)close(fd);
        return -1;
    }
    return fd;
}

static void free_key(char *owned)
{
    if (owned != NULL) {
        OPENSSL_cleanse(owned, KEY_FILE_MAX + 1);
        free(owned);
    }
}

/* Reads a key file (at most KEY_FILE_MAX bytes) into a malloc'd buffer of
 * KEY_FILE_MAX + 1 bytes. *why is set on failure. Warns about loose
 * permissions. */
static char *read_key_file(const char *path, size_t *len, const char **why)
{
    struct stat st;
    int fd = open_regular(path, &st, why);
    if (fd < 0)
        return NULL;
    char *buf = NULL;
    size_t n = 0;
    if (st.st_size < 0 || (uintmax_t)st.st_size > KEY_FILE_MAX)
        *why = "too_long";
    else if ((buf = malloc(KEY_FILE_MAX + 1)) == NULL)
        *why = "nomem";
    while (*why == NULL) {
        ssize_t k = read(fd, buf + n, KEY_FILE_MAX + 1 - n);
        if (k == 0)
            break;
        if (k < 0 && errno != EINTR)
            *why = "file_error";
        else if (k > 0 && (n += (size_t)k) > KEY_FILE_MAX)
            *why = "too_long"; /* grew while we read it */
    }
    (void)close(fd);
    if (*why != NULL) {
        free_key(buf);
        return NULL;
    }
    if (st.st_mode & 077)
        (void)erlcmd_log(D.c, "warning", "key file %s is readable by group or others", path);
    *len = n;
    return buf;
}

/* The CA bundle must be a readable regular file. NULL or a Why. */
static const char *check_ca_file(const char *path)
{
    struct stat st;
    const char *why;
    int fd = open_regular(path, &st, &why);
    if (fd >= 0)
        (void)close(fd);
    return why;
}

/* A key: {file, Path} or {pem, Pem}. The PEM ends up in *pem (malloc'd for a
 * file, then also in *owned; in place otherwise). NULL or a Why. */
static const char *get_key(const frame *f, int at, const char **pem, size_t *pem_len, char **owned)
{
    int arity, t, sz;
    char tag[ATOM_BUF];
    *owned = NULL;
    if (type_at(f, at, &t, &sz) != 0 || (t != ERL_SMALL_TUPLE_EXT && t != ERL_LARGE_TUPLE_EXT) ||
        ei_decode_tuple_header(f->buf, &at, &arity) != 0 || arity != 2 ||
        dec_atom(f, &at, tag) != 0)
        return "badarg";
    if (strcmp(tag, "pem") == 0)
        return dec_bin(f, &at, pem, pem_len) == 0 ? NULL : "badarg";
    if (strcmp(tag, "file") != 0)
        return "badarg";
    char *path;
    size_t plen;
    if (dec_cstr(f, &at, &path, &plen) != 0 || plen == 0)
        return "badarg";
    if (plen > PATH_MAX_LEN)
        return "too_long";
    const char *why = NULL;
    char *buf = read_key_file(path, pem_len, &why);
    if (buf == NULL)
        return why;
    *pem = buf;
    *owned = buf;
    return NULL;
}

/* The reply for a replaced session's pending authenticate. */
static void abort_auth(void)
{
    if (D.auth != NULL)
        op_abort(D.auth);
}

enum {
    F_CONSUMER_KEY, F_ACCESS_TOKEN, F_SECRET, F_DH_PRIME, F_DH_GENERATOR, F_REALM,
    F_ENC_KEY, F_SIG_KEY, F_BASE_URL, F_CA_FILE, F_QUERY_SIGNING, F_COUNT
};

/* Everything init collects before building the session. */
typedef struct {
    oauth_config cfg;
    char *base_url, *ca_file;
    size_t base_len;
    char *enc_owned, *sig_owned;
    const char *bad, *why; /* the {bad_config, Field, Why} on failure */
} init_args;

static int init_fail(init_args *a, const char *field, const char *why)
{
    a->bad = field;
    a->why = why;
    return -1;
}

/* The binary fields, as C strings, in the order oauth checks them. */
static int init_strings(const frame *f, const mfield *fl, init_args *a)
{
    static const struct {
        int field, required;
    } S[] = {{F_CONSUMER_KEY, 1}, {F_ACCESS_TOKEN, 1}, {F_SECRET, 1}, {F_DH_PRIME, 1},
             {F_REALM, 0}, {F_BASE_URL, 1}, {F_CA_FILE, 0}};
    char *v[F_COUNT] = {NULL};
    for (size_t i = 0; i < sizeof S / sizeof S[0]; i++) {
        int k = S[i].field, idx = fl[k].at;
        if (idx < 0) {
            if (S[i].required)
                return init_fail(a, fl[k].name, "missing");
        } else if (dec_cstr(f, &idx, &v[k], NULL) != 0) {
            return init_fail(a, fl[k].name, "badarg");
        }
    }
    a->cfg.consumer_key = v[F_CONSUMER_KEY];
    a->cfg.access_token = v[F_ACCESS_TOKEN];
    a->cfg.access_token_secret = v[F_SECRET];
    a->cfg.dh_prime_hex = v[F_DH_PRIME];
    a->cfg.realm = v[F_REALM];
    a->base_url = v[F_BASE_URL];
    a->ca_file = v[F_CA_FILE];
    return 0;
}

/* dh_generator, query_signing and the presence of both keys. */
static int init_scalars(const frame *f, const mfield *fl, init_args *a)
{
    int idx;
    a->cfg.dh_generator = 2;
    if ((idx = fl[F_DH_GENERATOR].at) >= 0) {
        long long g;
        int t, sz;
        if (type_at(f, idx, &t, &sz) != 0 || !is_integer_type(t) || dec_i64(f, &idx, &g) != 0)
            return init_fail(a, "dh_generator", "badarg"); /* not an integer, or beyond 64 bits */
        if (g < 2)
            return init_fail(a, "dh_generator", "too_small");
        a->cfg.dh_generator = (unsigned long)g;
    }
    a->cfg.sign_query_params = 1;
    if ((idx = fl[F_QUERY_SIGNING].at) >= 0) {
        char qs[ATOM_BUF];
        if (dec_atom(f, &idx, qs) != 0 || (strcmp(qs, "params") != 0 && strcmp(qs, "none") != 0))
            return init_fail(a, "query_signing", "badarg");
        a->cfg.sign_query_params = strcmp(qs, "params") == 0;
    }
    if (fl[F_ENC_KEY].at < 0)
        return init_fail(a, "encryption_key", "missing");
    if (fl[F_SIG_KEY].at < 0)
        return init_fail(a, "signature_key", "missing");
    return 0;
}

/* base_url: trailing slashes dropped, an absolute http(s) URL without query
 * or fragment (the LST path is appended to it). */
static int init_base_url(init_args *a)
{
    size_t n = strlen(a->base_url);
    while (n > 0 && a->base_url[n - 1] == '/')
        a->base_url[--n] = '\0';
    if (n > BASE_URL_MAX)
        return init_fail(a, "base_url", "too_long");
    if (http_url_check(a->base_url) != 0 || strpbrk(a->base_url, "?# \t") != NULL)
        return init_fail(a, "base_url", "bad_url");
    a->base_len = n;
    return 0;
}

static int init_files(const frame *f, const mfield *fl, init_args *a)
{
    const char *why;
    if ((why = get_key(f, fl[F_ENC_KEY].at, &a->cfg.encryption_key_pem,
                       &a->cfg.encryption_key_pem_len, &a->enc_owned)) != NULL)
        return init_fail(a, "encryption_key", why);
    if ((why = get_key(f, fl[F_SIG_KEY].at, &a->cfg.signature_key_pem,
                       &a->cfg.signature_key_pem_len, &a->sig_owned)) != NULL)
        return init_fail(a, "signature_key", why);
    if (a->ca_file != NULL) {
        if (a->ca_file[0] == '\0')
            return init_fail(a, "ca_file", "badarg");
        if ((why = check_ca_file(a->ca_file)) != NULL)
            return init_fail(a, "ca_file", why);
    }
    return 0;
}

/* Swaps in the new session and its URLs; the old secrets are wiped. */
static int install_session(oauth_session *s, const init_args *a)
{
    char *new_base = strdup(a->base_url);
    char *new_lst = malloc(a->base_len + sizeof LST_PATH);
    if (new_base == NULL || new_lst == NULL || http_set_ca_file(a->ca_file) != 0) {
        free(new_base);
        free(new_lst);
        return -1;
    }
    memcpy(new_lst, a->base_url, a->base_len);
    memcpy(new_lst + a->base_len, LST_PATH, sizeof LST_PATH);
    abort_auth(); /* the old session's handshake cannot complete */
    oauth_session_free(D.session);
    free(D.base_url);
    free(D.lst_url);
    D.session = s;
    D.base_url = new_base;
    D.lst_url = new_lst;
    return 0;
}

static void cmd_init(const frame *f, uint64_t id, int at)
{
    D.wipe_frame = 1;
    mfield fl[F_COUNT] = {
        {"consumer_key", -1}, {"access_token", -1}, {"access_token_secret", -1},
        {"dh_prime", -1}, {"dh_generator", -1}, {"realm", -1}, {"encryption_key", -1},
        {"signature_key", -1}, {"base_url", -1}, {"ca_file", -1}, {"query_signing", -1}};
    if (map_fields(f, at, fl, F_COUNT) != 0) {
        reply_error(id, "badarg");
        return;
    }
    init_args a;
    memset(&a, 0, sizeof a);
    if (init_strings(f, fl, &a) != 0 || init_scalars(f, fl, &a) != 0 ||
        init_base_url(&a) != 0 || init_files(f, fl, &a) != 0) {
        free_key(a.enc_owned);
        free_key(a.sig_owned);
        reply_bad_config(id, a.bad, a.why);
        return;
    }
    oauth_session *s = NULL;
    const char *bad_field = NULL;
    oauth_status st = oauth_session_new(&a.cfg, &s, &bad_field);
    free_key(a.enc_owned);
    free_key(a.sig_owned);
    if (st != OAUTH_OK) {
        if (bad_field != NULL)
            reply_bad_config(id, bad_field, oauth_status_atom(st));
        else
            reply_error(id, oauth_status_atom(st));
        return;
    }
    if (install_session(s, &a) != 0) {
        oauth_session_free(s);
        reply_error(id, "nomem");
        return;
    }
    (void)erlcmd_reply_ok(D.c, id);
}

/* ---- crypto commands ---------------------------------------------------------------- */

static void reply_oauth_error(uint64_t id, oauth_status st)
{
    reply_error(id, oauth_status_atom(st));
}

static void cmd_lst_request(const frame *f, uint64_t id, int at)
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
    oauth_status st = oauth_lst_request(D.session, D.lst_url, &pins, &auth);
    if (st == OAUTH_ERR_BADARG && pins.dh_random_hex != NULL) {
        reply_badarg(id, "dh_random"); /* e.g. a zero exponent */
        return;
    }
    if (st != OAUTH_OK) {
        reply_oauth_error(id, st);
        return;
    }
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x != NULL) {
        int r = ei_x_encode_tuple_header(x, 2);
        r |= ei_x_encode_atom(x, "ok");
        r |= ei_x_encode_map_header(x, 3);
        r |= ei_x_encode_atom(x, "method");
        r |= erlcmd_encode_binary(x, "POST", 4);
        r |= ei_x_encode_atom(x, "url");
        r |= erlcmd_encode_binary(x, D.lst_url, strlen(D.lst_url));
        r |= ei_x_encode_atom(x, "authorization");
        r |= erlcmd_encode_binary(x, auth, strlen(auth));
        (void)erlcmd_end(D.c, r);
    }
    free(auth);
}

static void cmd_lst_complete(const frame *f, uint64_t id, int at)
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
    if ((idx = fl[2].at) < 0 || dec_i64(f, &idx, &exp) != 0) {
        reply_badarg(id, fl[2].name);
        return;
    }
    oauth_status st = oauth_lst_complete(D.session, dh, sig, exp);
    if (st != OAUTH_OK) {
        reply_oauth_error(id, st);
        return;
    }
    D.handshakes++;
    reply_expires(id, exp);
}

static void cmd_live_session_token(const frame *f, uint64_t id, int at)
{
    (void)f;
    (void)at;
    char tok[OAUTH_LST_B64_MAX];
    int64_t exp = 0;
    oauth_status st = oauth_live_session_token(D.session, tok, sizeof tok, &exp);
    if (st != OAUTH_OK) {
        reply_oauth_error(id, st);
        return;
    }
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x != NULL) {
        int r = ei_x_encode_tuple_header(x, 2);
        r |= ei_x_encode_atom(x, "ok");
        r |= ei_x_encode_map_header(x, 2);
        r |= ei_x_encode_atom(x, "token");
        r |= erlcmd_encode_binary(x, tok, strlen(tok));
        r |= ei_x_encode_atom(x, "expires_at");
        r |= ei_x_encode_longlong(x, exp);
        if (erlcmd_end(D.c, r) == 0)
            D.c->sensitive = 1; /* wipe the output buffer once written */
    }
    OPENSSL_cleanse(tok, sizeof tok);
}

/* Method: 1..16 ASCII letters (Erlang upper-cases it). */
static int dec_method(const frame *f, int *idx, char **out)
{
    size_t n;
    if (dec_cstr(f, idx, out, &n) != 0 || n == 0 || n > 16)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char ch = (*out)[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z')))
            return -1;
    }
    return 0;
}

static int dec_url(const frame *f, int *idx, char **out)
{
    size_t n;
    return dec_cstr(f, idx, out, &n) != 0 || n == 0 || n > HTTP_URL_MAX ? -1 : 0;
}

/* The hot path: no allocation beyond the output buffer. */
static void cmd_sign(const frame *f, uint64_t id, int at)
{
    char *method, *url;
    if (dec_method(f, &at, &method) != 0) {
        reply_badarg(id, "method");
        return;
    }
    if (dec_url(f, &at, &url) != 0) {
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
        D.wipe_frame = 1;
        size_t n;
        if (dec_cstr(f, &idx, &lst, &n) != 0 || n == 0 || n >= OAUTH_LST_B64_MAX) {
            reply_badarg(id, "lst");
            return;
        }
    }
    char auth[OAUTH_AUTH_MAX];
    oauth_status st = oauth_sign(D.session, method, url, &pins, lst, auth, sizeof auth);
    switch (st) {
    case OAUTH_OK:
        (void)erlcmd_reply_binary(D.c, id, auth, strlen(auth));
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

/* ---- HTTP commands ------------------------------------------------------------------ */

static void cmd_authenticate(const frame *f, uint64_t id, int at)
{
    mfield fl[4] = {{"nonce", -1}, {"timestamp", -1}, {"dh_random", -1}, {"timeout", -1}};
    if (map_fields(f, at, fl, 4) != 0) {
        reply_error(id, "badarg");
        return;
    }
    oauth_pins pins;
    long timeout;
    const char *bad = get_pins(f, fl, 1, &pins);
    if (bad == NULL)
        bad = get_timeout(f, fl[3].at, &timeout);
    if (bad != NULL) {
        reply_badarg(id, bad);
        return;
    }
    /* One handshake at a time: a second caller joins the one in flight and
     * gets the same answer (a new one would replace its DH exponent). */
    if (D.auth != NULL) {
        if (op_add_id(D.auth, id) != 0)
            reply_error(id, "nomem");
        return;
    }
    char *auth = NULL;
    oauth_status st = oauth_lst_request(D.session, D.lst_url, &pins, &auth);
    if (st != OAUTH_OK) {
        if (st == OAUTH_ERR_BADARG && pins.dh_random_hex != NULL)
            reply_badarg(id, "dh_random");
        else
            reply_oauth_error(id, st);
        return;
    }
    http_xfer *x = http_xfer_new();
    op *o = NULL;
    int ok = x != NULL && http_xfer_method(x, "POST") == HTTP_SET_OK &&
             http_xfer_url(x, D.lst_url) == HTTP_SET_OK &&
             http_xfer_header(x, "Authorization", 13, auth, strlen(auth)) == HTTP_SET_OK &&
             http_xfer_body(x, "", 0) == HTTP_SET_OK;
    free(auth);
    if (ok) {
        http_xfer_timeout(x, timeout);
        ok = (o = op_new(OP_AUTH, id)) != NULL;
    }
    if (ok && http_xfer_start(x, on_auth_done, o) != 0)
        ok = 0;
    if (!ok) {
        if (o != NULL)
            op_free(o);
        http_xfer_free(x);
        reply_error2(id, "transport", "other");
        return;
    }
    o->xfer = x;
    D.auth = o;
    D.requests++;
}

/* Request headers: a proper list of {Name, Value} binaries. */
static int add_headers(const frame *f, int at, http_xfer *x, int skip_auth)
{
    int t, sz, n;
    if (type_at(f, at, &t, &sz) != 0 || (t != ERL_LIST_EXT && t != ERL_NIL_EXT) ||
        ei_decode_list_header(f->buf, &at, &n) != 0)
        return -1;
    for (int i = 0; i < n; i++) {
        int arity;
        const char *name, *value;
        size_t nl, vl;
        if (type_at(f, at, &t, &sz) != 0 || (t != ERL_SMALL_TUPLE_EXT && t != ERL_LARGE_TUPLE_EXT) ||
            ei_decode_tuple_header(f->buf, &at, &arity) != 0 || arity != 2 ||
            dec_bin(f, &at, &name, &nl) != 0 || dec_bin(f, &at, &value, &vl) != 0)
            return -1;
        if (skip_auth && nl == 13 && strncasecmp(name, "authorization", 13) == 0)
            continue; /* ours, signed, replaces it */
        if (http_xfer_header(x, name, nl, value, vl) != HTTP_SET_OK)
            return -1;
    }
    if (n > 0) { /* the tail must be [] */
        if (type_at(f, at, &t, &sz) != 0 || t != ERL_NIL_EXT)
            return -1;
    }
    return 0;
}

enum { H_METHOD, H_URL, H_HEADERS, H_BODY, H_TIMEOUT, H_SIGN, H_COUNT };

static void cmd_http(const frame *f, uint64_t id, int at)
{
    mfield fl[H_COUNT] = {{"method", -1}, {"url", -1}, {"headers", -1},
                          {"body", -1}, {"timeout", -1}, {"sign", -1}};
    if (map_fields(f, at, fl, H_COUNT) != 0) {
        reply_error(id, "badarg");
        return;
    }
    char *method, *url;
    int idx, sign = 1;
    long timeout;
    const char *body = "";
    size_t body_len = 0;
    const char *bad = NULL;
    http_xfer *x = NULL;
    op *o = NULL;

    if ((idx = fl[H_METHOD].at) < 0 || dec_method(f, &idx, &method) != 0) {
        reply_badarg(id, "method");
        return;
    }
    if ((idx = fl[H_URL].at) < 0 || dec_url(f, &idx, &url) != 0) {
        reply_badarg(id, "url");
        return;
    }
    if ((idx = fl[H_SIGN].at) >= 0 && dec_bool(f, &idx, &sign) != 0) {
        reply_badarg(id, "sign");
        return;
    }
    if ((idx = fl[H_BODY].at) >= 0 && dec_bin(f, &idx, &body, &body_len) != 0) {
        reply_badarg(id, "body");
        return;
    }
    if ((bad = get_timeout(f, fl[H_TIMEOUT].at, &timeout)) != NULL) {
        reply_badarg(id, bad);
        return;
    }
    if ((x = http_xfer_new()) == NULL) {
        reply_error2(id, "transport", "other");
        return;
    }
    if (http_xfer_method(x, method) != HTTP_SET_OK)
        bad = "method";
    else if (http_xfer_url(x, url) != HTTP_SET_OK)
        bad = "url";
    else if (fl[H_HEADERS].at >= 0 && add_headers(f, fl[H_HEADERS].at, x, sign) != 0)
        bad = "headers";
    else if (http_xfer_body(x, body, body_len) != HTTP_SET_OK)
        bad = "body";
    if (bad != NULL) {
        http_xfer_free(x);
        reply_badarg(id, bad);
        return;
    }
    http_xfer_timeout(x, timeout);
    if (sign) {
        /* Signed now, immediately before curl gets the handle. */
        char auth[OAUTH_AUTH_MAX];
        oauth_status st = oauth_sign(D.session, method, url, NULL, NULL, auth, sizeof auth);
        if (st != OAUTH_OK) {
            http_xfer_free(x);
            if (st == OAUTH_ERR_BADARG || st == OAUTH_ERR_TOO_LONG)
                reply_badarg(id, "url");
            else
                reply_oauth_error(id, st);
            return;
        }
        if (http_xfer_header(x, "Authorization", 13, auth, strlen(auth)) != HTTP_SET_OK) {
            http_xfer_free(x);
            reply_error(id, "nomem");
            return;
        }
    }
    if ((o = op_new(OP_HTTP, id)) == NULL || http_xfer_start(x, on_http_done, o) != 0) {
        if (o != NULL)
            op_free(o);
        http_xfer_free(x);
        reply_error2(id, "transport", "other");
        return;
    }
    o->xfer = x;
    D.requests++;
}

/* ---- the rest --------------------------------------------------------------------- */

static void cmd_cancel(const frame *f, uint64_t id, int at)
{
    unsigned long long target;
    if (dec_u64(f, &at, &target) != 0 || target == 0) {
        if (id != 0)
            reply_badarg(id, "id");
        else
            (void)erlcmd_protocol_error(D.c, "bad_frame");
        return;
    }
    size_t pos;
    op *o = op_find(target, &pos);
    if (o != NULL) {
        if (o->nids == 1) {
            op_abort(o);
        } else {
            /* Others still wait for this handshake: only this caller leaves. */
            o->ids[pos] = o->ids[--o->nids];
            D.waiting--;
            reply_error(target, "cancelled");
        }
    }
    if (id != 0)
        (void)erlcmd_reply_ok(D.c, id);
}

static void cmd_echo(const frame *f, uint64_t id, int at)
{
    int end = at;
    if (erlcmd_skip_term(f->buf, f->len, &end) != 0) {
        reply_error(id, "badarg");
        return;
    }
    if (erlcmd_reserve(D.c, (size_t)(end - at) + 64) != 0)
        return;
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_append_buf(x, f->buf + at, end - at); /* end <= len <= 16 MiB */
    (void)erlcmd_end(D.c, r);
}

static void cmd_stats(const frame *f, uint64_t id, int at)
{
    (void)f;
    (void)at;
    ei_x_buff *x = erlcmd_begin_reply(D.c, id);
    if (x == NULL)
        return;
    int r = ei_x_encode_tuple_header(x, 2);
    r |= ei_x_encode_atom(x, "ok");
    r |= ei_x_encode_map_header(x, 4);
    r |= ei_x_encode_atom(x, "inflight");
    r |= ei_x_encode_ulonglong(x, D.waiting);
    r |= ei_x_encode_atom(x, "requests");
    r |= ei_x_encode_ulonglong(x, D.requests);
    r |= ei_x_encode_atom(x, "handshakes");
    r |= ei_x_encode_ulonglong(x, D.handshakes);
    r |= ei_x_encode_atom(x, "errors");
    r |= ei_x_encode_ulonglong(x, D.errors);
    (void)erlcmd_end(D.c, r);
}

/* ---- dispatch ------------------------------------------------------------------------ */

typedef void (*cmd_fn)(const frame *f, uint64_t id, int at);

static const struct {
    const char *name;
    int arity;         /* arguments after the name; 0: a bare atom */
    int needs_session;
    cmd_fn fn;
} COMMANDS[] = {
    {"sign", 3, 1, cmd_sign},
    {"http", 1, 1, cmd_http},
    {"echo", 1, 0, cmd_echo},
    {"init", 1, 0, cmd_init},
    {"lst_request", 1, 1, cmd_lst_request},
    {"lst_complete", 1, 1, cmd_lst_complete},
    {"live_session_token", 0, 1, cmd_live_session_token},
    {"authenticate", 1, 1, cmd_authenticate},
    {"cancel", 1, 0, cmd_cancel},
    {"stats", 0, 1, cmd_stats},
};

static void run(const frame *f, int idx)
{
    int arity, t, sz;
    unsigned long long id;
    if (ei_decode_tuple_header(f->buf, &idx, &arity) != 0 || arity != 2 ||
        dec_u64(f, &idx, &id) != 0) {
        D.errors++;
        (void)erlcmd_protocol_error(D.c, "bad_frame");
        return;
    }

    /* The command: a bare atom, or a tuple whose first element is one. */
    char name[ATOM_BUF];
    int nargs = 0;
    name[0] = '\0';
    if (type_at(f, idx, &t, &sz) != 0) {
        D.errors++;
        (void)erlcmd_protocol_error(D.c, "bad_frame");
        return;
    }
    if (t == ERL_ATOM_EXT) {
        if (dec_atom(f, &idx, name) != 0)
            name[0] = '\0';
    } else if (t == ERL_SMALL_TUPLE_EXT || t == ERL_LARGE_TUPLE_EXT) {
        int n;
        if (ei_decode_tuple_header(f->buf, &idx, &n) == 0 && n >= 1 && dec_atom(f, &idx, name) == 0)
            nargs = n - 1;
        else
            name[0] = '\0';
    }

    size_t i = 0, ncmd = sizeof COMMANDS / sizeof COMMANDS[0];
    while (i < ncmd && strcmp(name, COMMANDS[i].name) != 0)
        i++;
    if (id == 0) {
        /* Id 0 asks for no reply, which only cancel can honour. */
        if (i < ncmd && COMMANDS[i].fn == cmd_cancel && nargs == 1 && t != ERL_ATOM_EXT) {
            cmd_cancel(f, 0, idx);
        } else {
            D.errors++;
            (void)erlcmd_protocol_error(D.c, "bad_frame");
        }
        return;
    }
    if (i == ncmd) {
        reply_error(id, "unknown_command");
        return;
    }
    if (COMMANDS[i].needs_session && D.session == NULL) {
        reply_error(id, "not_initialized");
        return;
    }
    /* A bare atom for a command with arguments, or the wrong arity. */
    if ((COMMANDS[i].arity == 0) != (t == ERL_ATOM_EXT) || nargs != COMMANDS[i].arity) {
        reply_error(id, "badarg");
        return;
    }
    COMMANDS[i].fn(f, id, idx);
}

void dispatch_frame(erlcmd *c, char *buf, size_t len, void *ctx)
{
    (void)ctx;
    D.c = c;
    D.wipe_frame = 0;
    int idx = 0, version;
    if (erlcmd_check_term(buf, len) != 0 || ei_decode_version(buf, &idx, &version) != 0) {
        D.errors++;
        (void)erlcmd_protocol_error(c, "bad_term");
    } else {
        frame f = {buf, len};
        run(&f, idx);
    }
    arena_reset();
    if (D.wipe_frame)
        OPENSSL_cleanse(buf, len);
}

void dispatch_shutdown(void)
{
    while (D.ops != NULL) {
        op *o = D.ops;
        http_xfer_cancel(o->xfer);
        op_free(o);
    }
    oauth_session_free(D.session);
    D.session = NULL;
    free(D.base_url);
    free(D.lst_url);
    D.base_url = D.lst_url = NULL;
    arena_reset();
}
