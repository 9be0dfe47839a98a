/*
 * http.c — libcurl multi interface driven by the port's poll loop. See
 * http.h. curl tells us which sockets to watch (socket callback) and when to
 * wake it up (timer callback); the loop polls those and calls
 * curl_multi_socket_action; finished transfers come out of
 * curl_multi_info_read and go to their done callbacks. libcurl itself is
 * loaded by http_open (curl_lazy.h): every curl call goes through the
 * curl_lazy table.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "curl_lazy.h"
#include "curl_watch.h"

#define EASY_POOL_MAX 8      /* idle easy handles kept for reuse */
#define BODY_INITIAL ((size_t)16 * 1024)
#define HEADER_LINE_MAX 8192 /* one "Name: value" request header */

enum { M_GET, M_HEAD, M_POST, M_PUT, M_PATCH, M_DELETE };

struct http_xfer {
    CURL *easy;
    http_xfer *prev, *next; /* active list */
    http_done_fn done;
    void *user;

    int method;
    struct curl_slist *req_hdrs, *req_tail; /* appended at the tail: O(1) each */
    size_t nreq_hdrs;
    int has_ctype, has_expect;
    int sends;              /* times curl was about to send the request */
    int resend_refused;
    const char *body;       /* caller's bytes, copied by curl at start */
    size_t body_len;
    int has_body;

    char *rbody;            /* response body */
    size_t rlen, rcap;
    unsigned char *rh;      /* response headers, packed: u32 nlen, u32 vlen, name, value */
    size_t rhlen, rhcap, nh, last_off;
    int too_large;
    char errbuf[CURL_ERROR_SIZE];
};

static CURLM *g_multi;
static CURLSH *g_share;
static char *g_ca_file;
static const char *g_capath;
static curl_watch g_watch = {NULL, 0, 0, 0, -1}; /* g_multi's sockets and timer */
static http_xfer *g_active;
static http_xfer *g_pool[EASY_POOL_MAX];
static size_t g_npool;

/* ---- request and response callbacks ------------------------------------------ */

/* Called before each send of the request. When a reused keep-alive
 * connection dies before any byte of the answer, libcurl silently sends the
 * request again on a fresh connection: for a POST that may be a duplicate
 * order, and for any method it replays the same OAuth nonce, which the
 * server refuses. So every request goes out at most once; that case is
 * reported as recv, sent (http_result.sent), and the caller decides (with a
 * new signature) whether to retry. The first call also marks the request
 * as possibly sent. */
/* The signature is libcurl's curl_prereq_callback (non-const char *). */
// NOLINTNEXTLINE(readability-non-const-parameter)
static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    http_xfer *x = ud;
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (x->sends++ > 0) {
        x->resend_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}


static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    http_xfer *x = ud;
    size_t n = size * nmemb;
    if (n > HTTP_BODY_MAX - x->rlen) {
        x->too_large = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (x->rlen + n > x->rcap) {
        size_t cap = x->rcap ? x->rcap : BODY_INITIAL;
        while (cap < x->rlen + n)
            cap *= 2;
        if (cap > HTTP_BODY_MAX)
            cap = HTTP_BODY_MAX;
        char *b = realloc(x->rbody, cap);
        if (b == NULL)
            return 0;
        x->rbody = b;
        x->rcap = cap;
    }
    memcpy(x->rbody + x->rlen, p, n);
    x->rlen += n;
    return n;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static int rh_reserve(http_xfer *x, size_t n)
{
    if (n > HTTP_HEADERS_MAX - x->rhlen) {
        x->too_large = 1;
        return -1;
    }
    if (x->rhlen + n <= x->rhcap)
        return 0;
    size_t cap = x->rhcap ? x->rhcap : 1024;
    while (cap < x->rhlen + n)
        cap *= 2;
    unsigned char *p = realloc(x->rh, cap);
    if (p == NULL)
        return -1;
    x->rh = p;
    x->rhcap = cap;
    return 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* One header line per call, CRLF included. A status line starts a new
 * response (after a 100-continue, a 103, or a proxy's CONNECT answer), so
 * only the final response's headers remain. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    http_xfer *x = ud;
    size_t n = size * nmemb, len = n;
    while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
        len--;
    if (len == 0)
        return n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        x->rhlen = 0;
        x->nh = 0;
        return n;
    }
    if (is_ows(p[0])) {
        /* obs-fold: continues the previous value, joined by one space. */
        if (x->nh == 0)
            return n;
        size_t s = 0;
        while (s < len && is_ows(p[s]))
            s++;
        if (rh_reserve(x, 1 + len - s) != 0)
            return 0;
        x->rh[x->rhlen++] = ' ';
        memcpy(x->rh + x->rhlen, p + s, len - s);
        x->rhlen += len - s;
        put_u32(x->rh + x->last_off + 4, get_u32(x->rh + x->last_off + 4) + 1 + (uint32_t)(len - s));
        return n;
    }
    const char *colon = memchr(p, ':', len);
    if (colon == NULL || colon == p)
        return n; /* not a header line; ignore */
    size_t nlen = (size_t)(colon - p);
    size_t vs = nlen + 1, ve = len;
    while (vs < ve && is_ows(p[vs]))
        vs++;
    while (ve > vs && is_ows(p[ve - 1]))
        ve--;
    if (rh_reserve(x, 8 + nlen + (ve - vs)) != 0)
        return 0;
    unsigned char *d = x->rh + x->rhlen;
    put_u32(d, (uint32_t)nlen);
    put_u32(d + 4, (uint32_t)(ve - vs));
    for (size_t i = 0; i < nlen; i++) {
        unsigned char c = (unsigned char)p[i];
        d[8 + i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    memcpy(d + 8 + nlen, p + vs, ve - vs);
    x->last_off = x->rhlen;
    x->rhlen += 8 + nlen + (ve - vs);
    x->nh++;
    return n;
}

int http_header_next(const http_result *r, size_t *pos, const char **name, size_t *nlen,
                     const char **value, size_t *vlen)
{
    if (*pos + 8 > r->hdrs_len)
        return 0;
    const unsigned char *d = r->hdrs + *pos;
    *nlen = get_u32(d);
    *vlen = get_u32(d + 4);
    *name = (const char *)d + 8;
    *value = (const char *)d + 8 + *nlen;
    *pos += 8 + *nlen + *vlen;
    return 1;
}

/* ---- setup ----------------------------------------------------------------- */

static void close_handles(void)
{
    if (g_multi != NULL)
        curl_lazy.multi_cleanup(g_multi);
    if (g_share != NULL)
        curl_lazy.share_cleanup(g_share);
    g_multi = NULL;
    g_share = NULL;
}

int http_open(const char **why)
{
    if (g_multi != NULL)
        return 0;
    if (curl_lazy_load(why) != 0)
        return -1;
    *why = "libcurl multi handle setup failed";
    const curl_version_info_data *vi = curl_lazy.version_info(CURLVERSION_NOW);
    /* The system's hashed CA directory, consulted next to an extra ca_file. */
    g_capath = (vi != NULL && vi->capath != NULL) ? vi->capath : "/etc/ssl/certs";

    if ((g_multi = curl_lazy.multi_init()) == NULL)
        return -1;
    if (curl_watch_attach(&g_watch, g_multi) != 0)
        goto fail;
    /* TLS sessions shared between easy handles (connections already are, by
     * the multi handle). Single-threaded: no lock callbacks. */
    if ((g_share = curl_lazy.share_init()) == NULL ||
        curl_lazy.share_setopt(g_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK)
        goto fail;
    return 0;
fail:
    close_handles();
    return -1;
}

static void xfer_destroy(http_xfer *x)
{
    if (x == NULL)
        return;
    if (x->easy != NULL)
        curl_lazy.easy_cleanup(x->easy);
    curl_lazy.slist_free_all(x->req_hdrs);
    free(x->rbody);
    free(x->rh);
    free(x);
}

void http_global_cleanup(void)
{
    while (g_active != NULL) {
        http_xfer *x = g_active;
        g_active = x->next;
        if (g_multi != NULL)
            curl_lazy.multi_remove_handle(g_multi, x->easy);
        xfer_destroy(x);
    }
    while (g_npool > 0)
        xfer_destroy(g_pool[--g_npool]);
    close_handles();
    curl_watch_free(&g_watch);
    free(g_ca_file);
    g_ca_file = NULL;
    curl_lazy_cleanup();
}

int http_set_ca_file(const char *path)
{
    char *copy = NULL;
    if (path != NULL && (copy = strdup(path)) == NULL)
        return -1;
    free(g_ca_file);
    g_ca_file = copy;
    return 0;
}

int http_easy_policy(void *easy)
{
    CURL *e = easy;
    if (g_multi == NULL)
        return -1; /* http_open first */
    int bad = 0;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    if (g_ca_file != NULL) {
        /* The extra bundle as CAINFO; the system store stays reachable
         * through the hashed directory. */
        bad |= curl_lazy.easy_setopt(e, CURLOPT_CAINFO, g_ca_file) != CURLE_OK;
        bad |= curl_lazy.easy_setopt(e, CURLOPT_CAPATH, g_capath) != CURLE_OK;
    }
    bad |= curl_lazy.easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_SHARE, g_share) != CURLE_OK;
    /* Don't wait for resolver threads when the port shuts down. */
    bad |= curl_lazy.easy_setopt(e, CURLOPT_QUICK_EXIT, 1L) != CURLE_OK;
    return bad ? -1 : 0;
}

/* Options every transfer gets; any failure means the handle is unusable. */
static int easy_defaults(http_xfer *x)
{
    CURL *e = x->easy;
    int bad = http_easy_policy(e) != 0;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_PRIVATE, x) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_WRITEDATA, x) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_HEADERDATA, x) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_PREREQDATA, x) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)HTTP_BODY_MAX) != CURLE_OK;
    /* Send the path exactly as signed (no dot-segment squashing). */
    bad |= curl_lazy.easy_setopt(e, CURLOPT_PATH_AS_IS, 1L) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_USERAGENT, "ibkr_oauth") != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)HTTP_TIMEOUT_DEFAULT) != CURLE_OK;
    return bad ? -1 : 0;
}

http_xfer *http_xfer_new(void)
{
    http_xfer *x;
    if (g_multi == NULL)
        return NULL; /* http_open first */
    if (g_npool > 0) {
        x = g_pool[--g_npool];
    } else {
        if ((x = calloc(1, sizeof *x)) == NULL)
            return NULL;
        if ((x->easy = curl_lazy.easy_init()) == NULL) {
            free(x);
            return NULL;
        }
    }
    x->method = M_GET;
    x->errbuf[0] = '\0';
    if (easy_defaults(x) != 0) {
        xfer_destroy(x);
        return NULL;
    }
    return x;
}

/* Back to the pool (or freed): nothing of the old transfer survives. */
static void xfer_release(http_xfer *x)
{
    curl_lazy.slist_free_all(x->req_hdrs);
    free(x->rbody);
    free(x->rh);
    CURL *e = x->easy;
    memset(x, 0, sizeof *x);
    x->easy = e;
    if (g_npool < EASY_POOL_MAX) {
        curl_lazy.easy_reset(e);
        g_pool[g_npool++] = x;
    } else {
        xfer_destroy(x);
    }
}

void http_xfer_free(http_xfer *x)
{
    if (x != NULL)
        xfer_release(x);
}

http_set_status http_xfer_method(http_xfer *x, const char *m)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        if (strcmp(m, names[i]) == 0) {
            x->method = i;
            return HTTP_SET_OK;
        }
    }
    return HTTP_SET_BAD_METHOD;
}

/* Parse once here so a bad URL is a badarg, not a transport error. */
static int url_check(const char *url)
{
    size_t n = strnlen(url, HTTP_URL_MAX + 1);
    if (n == 0 || n > HTTP_URL_MAX)
        return -1;
    CURLU *u = curl_lazy.url();
    if (u == NULL)
        return -1;
    int ok = 0;
    char *scheme = NULL, *host = NULL;
    if (curl_lazy.url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_lazy.url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_lazy.url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0] != '\0' &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0))
        ok = 1;
    curl_lazy.free(scheme);
    curl_lazy.free(host);
    curl_lazy.url_cleanup(u);
    return ok ? 0 : -1;
}

http_set_status http_xfer_url(http_xfer *x, const char *url)
{
    if (url_check(url) != 0)
        return HTTP_SET_BAD_URL;
    return curl_lazy.easy_setopt(x->easy, CURLOPT_URL, url) == CURLE_OK ? HTTP_SET_OK : HTTP_SET_NOMEM;
}

/* curl_slist_append walks the whole list on every call; a one-node list
 * linked at the remembered tail keeps building a request's headers linear
 * (curl_slist_free_all frees it the same way). */
static int append_header(http_xfer *x, const char *line)
{
    struct curl_slist *node = curl_lazy.slist_append(NULL, line);
    if (node == NULL)
        return -1;
    if (x->req_tail == NULL)
        x->req_hdrs = node;
    else
        x->req_tail->next = node;
    x->req_tail = node;
    return 0;
}

/* RFC 9110 token characters. */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

http_set_status http_xfer_header(http_xfer *x, const char *name, size_t nlen,
                                 const char *value, size_t vlen)
{
    if (nlen == 0 || nlen + vlen + 3 > HEADER_LINE_MAX || x->nreq_hdrs >= HTTP_XFER_HEADERS_MAX)
        return HTTP_SET_BAD_HEADER;
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)name[i]))
            return HTTP_SET_BAD_HEADER;
    for (size_t i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return HTTP_SET_BAD_HEADER;
    if (nlen == 14 && strncasecmp(name, "content-length", 14) == 0)
        return HTTP_SET_OK;
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0)
        x->has_ctype = 1;
    if (nlen == 6 && strncasecmp(name, "expect", 6) == 0)
        x->has_expect = 1;

    char line[HEADER_LINE_MAX];
    memcpy(line, name, nlen);
    size_t n = nlen;
    if (vlen == 0) {
        line[n++] = ';'; /* curl's spelling of "send this header empty" */
    } else {
        line[n++] = ':';
        line[n++] = ' ';
        memcpy(line + n, value, vlen);
        n += vlen;
    }
    line[n] = '\0';
    if (append_header(x, line) != 0)
        return HTTP_SET_NOMEM;
    x->nreq_hdrs++;
    return HTTP_SET_OK;
}

http_set_status http_xfer_body(http_xfer *x, const char *body, size_t len)
{
    if (len > 0 && (x->method == M_GET || x->method == M_HEAD))
        return HTTP_SET_BAD_BODY;
    x->body = body;
    x->body_len = len;
    x->has_body = 1;
    return HTTP_SET_OK;
}

void http_xfer_timeout(http_xfer *x, long ms)
{
    /* curl's 0 is "no limit"; an expired deadline never gets here. */
    (void)curl_lazy.easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, ms == HTTP_TIMEOUT_NONE ? 0L : ms);
}

static int apply_method(http_xfer *x)
{
    CURL *e = x->easy;
    static const char *const custom[] = {NULL, NULL, NULL, "PUT", "PATCH", "DELETE"};
    int bad = 0;
    switch (x->method) {
    case M_GET:
        return curl_lazy.easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK ? 0 : -1;
    case M_HEAD:
        return curl_lazy.easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK ? 0 : -1;
    case M_DELETE:
        bad |= curl_lazy.easy_setopt(e, CURLOPT_CUSTOMREQUEST, custom[x->method]) != CURLE_OK;
        if (!x->has_body || x->body_len == 0)
            return bad ? -1 : 0;
        break;
    case M_PUT:
    case M_PATCH:
        bad |= curl_lazy.easy_setopt(e, CURLOPT_CUSTOMREQUEST, custom[x->method]) != CURLE_OK;
        break;
    default:
        break;
    }
    /* POST, PUT, PATCH (and DELETE with a body): POSTFIELDS mechanics, so an
     * empty body still sends "Content-Length: 0". */
    bad |= curl_lazy.easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK;
    bad |= curl_lazy.easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len) != CURLE_OK;
    if (x->body_len == 0)
        bad |= curl_lazy.easy_setopt(e, CURLOPT_POSTFIELDS, "") != CURLE_OK;
    else
        bad |= curl_lazy.easy_setopt(e, CURLOPT_COPYPOSTFIELDS, x->body) != CURLE_OK;
    /* curl would label the body application/x-www-form-urlencoded, and wait
     * for a 100-continue before large bodies: send only what was asked. */
    if (!x->has_ctype && append_header(x, "Content-Type:") != 0)
        return -1;
    if (!x->has_expect && append_header(x, "Expect:") != 0)
        return -1;
    return bad ? -1 : 0;
}

int http_xfer_start(http_xfer *x, http_done_fn done, void *user)
{
    if (apply_method(x) != 0)
        return -1;
    if (x->req_hdrs != NULL && curl_lazy.easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->req_hdrs) != CURLE_OK)
        return -1;
    x->body = NULL; /* copied (or static "") by now */
    x->done = done;
    x->user = user;
    if (curl_lazy.multi_add_handle(g_multi, x->easy) != CURLM_OK)
        return -1;
    x->prev = NULL;
    x->next = g_active;
    if (g_active != NULL)
        g_active->prev = x;
    g_active = x;
    return 0;
}

static void unlink_active(http_xfer *x)
{
    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        g_active = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
}

void http_xfer_cancel(http_xfer *x)
{
    curl_lazy.multi_remove_handle(g_multi, x->easy);
    unlink_active(x);
    xfer_release(x);
}

/* ---- completion --------------------------------------------------------------- */

static const char *curl_error_kind(CURLcode rc, int too_large)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "resolve";
    case CURLE_COULDNT_CONNECT:
        return "connect";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return "tls";
    case CURLE_SEND_ERROR:
        return "send";
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2_STREAM:
        return "recv";
    case CURLE_FILESIZE_EXCEEDED:
        return "too_large";
    default: /* our callbacks refusing data show up as CURLE_WRITE_ERROR */
        return too_large ? "too_large" : "other";
    }
}

const char *http_error_kind(int curl_code)
{
    return curl_error_kind((CURLcode)curl_code, 0);
}

/* The real class of a failure. A resend libcurl was refused (on_prereq)
 * means the connection died after the request went out: recv. */
static const char *error_kind(CURLcode rc, const http_xfer *x)
{
    return x->resend_refused ? "recv" : curl_error_kind(rc, x->too_large);
}

static void finish(CURL *e, CURLcode rc)
{
    http_xfer *x = NULL;
    if (curl_lazy.easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x) != CURLE_OK || x == NULL)
        return;
    curl_lazy.multi_remove_handle(g_multi, e);
    unlink_active(x);

    http_result r;
    memset(&r, 0, sizeof r);
    r.detail = "";
    if (rc == CURLE_OK) {
        long status = 0;
        (void)curl_lazy.easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        r.status = status;
        if (status < 100 || status > 599) {
            /* libcurl takes any three digits; HTTP has no such status. */
            r.error = "bad_status";
            r.sent = 1;
            r.detail = "response status outside 100..599";
        }
        r.body = x->rbody != NULL ? x->rbody : "";
        r.body_len = x->rlen;
        r.hdrs = x->rh;
        r.hdrs_len = x->rhlen;
        r.nhdrs = x->nh;
    } else {
        r.error = error_kind(rc, x);
        r.sent = x->sends > 0;
        r.detail = x->errbuf[0] != '\0' ? x->errbuf : curl_lazy.easy_strerror(rc);
    }
    x->done(x->user, &r);
    xfer_release(x);
}

/* ---- poll loop ------------------------------------------------------------------ */

size_t http_poll_count(void)
{
    return g_watch.n;
}

size_t http_poll_fill(struct pollfd *p, size_t max)
{
    return curl_watch_fill(&g_watch, p, max);
}

int http_poll_timeout(void)
{
    return curl_watch_timeout(&g_watch);
}

void http_poll_handle(const struct pollfd *p, size_t n)
{
    if (g_multi == NULL)
        return;
    curl_watch_act(&g_watch, g_multi, p, n);
    CURLMsg *m;
    int left;
    while ((m = curl_lazy.multi_info_read(g_multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result; /* m is invalid once e is removed */
        finish(e, rc);
    }
}
