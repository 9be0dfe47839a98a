/*
 * cmd_init.c — the init command: configuration fields, key files (read
 * here, wiped after use), the CA file check, and installing the session.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "base_url.h"
#include "commands.h"
#include "port_state.h"
#include "http.h"

#define KEY_FILE_MAX ((size_t)64 * 1024)
#define BASE_URL_MAX 2048
#define PATH_MAX_LEN 4096
#define LST_PATH "/oauth/live_session_token"

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
        (void)erlcmd_log(g_port.c, "warning", "key file %s is readable by group or others", path);
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
 * or fragment (the LST path is appended to it), checked without libcurl. */
static int init_base_url(init_args *a)
{
    size_t n = strlen(a->base_url);
    while (n > 0 && a->base_url[n - 1] == '/')
        a->base_url[--n] = '\0';
    if (n > BASE_URL_MAX)
        return init_fail(a, "base_url", "too_long");
    if (base_url_check(a->base_url) != 0)
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
    ops_abort_auth(); /* the old session's handshake cannot complete */
    oauth_session_free(g_port.session);
    free(g_port.base_url);
    free(g_port.lst_url);
    g_port.session = s;
    g_port.base_url = new_base;
    g_port.lst_url = new_lst;
    return 0;
}

void cmd_init(const frame *f, uint64_t id, int at)
{
    g_port.wipe_frame = 1;
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
    (void)erlcmd_reply_ok(g_port.c, id);
}
