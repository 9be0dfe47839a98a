/*
 * oauth.c — IBKR "OAuth 1.0a extended" crypto with OpenSSL 3. See oauth.h
 * and shared/spec/ibkr-oauth1a.md. No I/O; nothing is printed.
 */
#include "oauth.h"
#include "codec.h"
#include "dh_prime.h"
#include "hmac_sha256.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

/* Bounds on inputs that oauth.h does not fix. */
#define PEM_MAX ((size_t)65536)             /* a 16384-bit RSA key is ~13 KiB of PEM */
#define SECRET_B64_MAX ((size_t)4096)       /* a 16384-bit ciphertext is 2732 chars */
#define PRIME_HEX_MAX ((size_t)4096)        /* primes up to 16384 bits */
#define PRIME_BITS_MIN 1024
#define DH_RESPONSE_HEX_MAX ((size_t)8192)  /* room for leading zeros */
#define DH_RANDOM_HEX_MAX ((size_t)128)     /* pinned exponent: up to 512 bits */
#define DH_RANDOM_BYTES 32                  /* generated exponent: 256 bits */
#define URL_MAX ((size_t)65536)
#define METHOD_MAX ((size_t)16)
#define QUERY_PARAMS_MAX 256
#define OAUTH_PARAMS_MAX 6                  /* the oauth_* set plus the DH challenge */
#define NONCE_LEN 16
#define RAND_POOL 1024                      /* nonce bytes fetched per RAND_bytes */
#define LST_RAW_MAX ((OAUTH_LST_B64_MAX / 4) * 3)
#define SHA1_LEN ((size_t)20)
#define SHA256_LEN ((size_t)32)

typedef struct {
    const char *k;
    size_t klen;
    const char *v;
    size_t vlen;
} param;

struct oauth_session {
    char consumer_key[OAUTH_FIELD_MAX + 1];
    char access_token[OAUTH_FIELD_MAX + 1];
    char realm[OAUTH_FIELD_MAX + 1];
    int sign_query_params;

    EVP_PKEY *sig_key;
    uint8_t *prepend;          /* decrypted access-token secret (raw) */
    size_t prepend_len;
    char *prepend_hex;         /* its lower-case hex: what the spec calls prepend */

    BIGNUM *p, *p_minus_1, *g;
    BN_MONT_CTX *mont;
    BN_CTX *bn;
    BIGNUM *pending_a;         /* DH exponent between lst_request and lst_complete */

    int has_lst;
    char lst_b64[OAUTH_LST_B64_MAX];
    int64_t lst_expires_ms;

    hmac_sha256_key mac_lst;   /* HMAC-SHA256 keyed with the stored LST */
    hmac_sha256_key mac_tmp;   /* HMAC-SHA256 for an explicit LST */

    /* Random bytes for nonces, drawn RAND_POOL bytes at a time: one
     * RAND_bytes call costs about as much as the rest of a signature.
     * Consumed bytes are wiped. */
    unsigned char rnd[RAND_POOL];
    size_t rnd_used;           /* sizeof rnd: empty */

    /* Reused by oauth_sign so steady-state signing does not allocate. */
    strbuf base, query, hdr;
    param params[QUERY_PARAMS_MAX + OAUTH_PARAMS_MAX];
};

const char *oauth_status_atom(oauth_status st)
{
    switch (st) {
    case OAUTH_OK: return "ok";
    case OAUTH_ERR_NOMEM: return "nomem";
    case OAUTH_ERR_MISSING: return "missing";
    case OAUTH_ERR_BADARG: return "badarg";
    case OAUTH_ERR_TOO_LONG: return "too_long";
    case OAUTH_ERR_NOT_PEM: return "not_pem";
    case OAUTH_ERR_NOT_RSA: return "not_rsa";
    case OAUTH_ERR_NOT_BASE64: return "not_base64";
    case OAUTH_ERR_DECRYPT: return "decrypt_failed";
    case OAUTH_ERR_NOT_HEX: return "not_hex";
    case OAUTH_ERR_NOT_PRIME: return "not_prime";
    case OAUTH_ERR_TOO_SMALL: return "too_small";
    case OAUTH_ERR_NOT_AUTHENTICATED: return "not_authenticated";
    case OAUTH_ERR_NO_PENDING: return "no_pending_handshake";
    case OAUTH_ERR_BAD_DH_RESPONSE: return "bad_dh_response";
    case OAUTH_ERR_LST_MISMATCH: return "lst_signature_mismatch";
    case OAUTH_ERR_CRYPTO: return "crypto_error";
    }
    return "crypto_error";
}

/* An OpenSSL call failed: drop its error queue (we report by status code,
 * and stale entries would confuse later callers) and say so. */
static oauth_status crypto_fail(void)
{
    ERR_clear_error();
    return OAUTH_ERR_CRYPTO;
}

/* ---- input checks --------------------------------------------------------- */

/* Bytes that would end or corrupt a quoted-string in the Authorization
 * header: '"', '\\' (an escape the server would undo, so it would verify
 * different bytes than we signed) and control characters incl. CR/LF. */
static int header_safe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* A header field of 1..max bytes, copied into dst[max+1]. */
static oauth_status take_field(const char *s, size_t max, char *dst)
{
    if (s == NULL)
        return OAUTH_ERR_MISSING;
    size_t n = strnlen(s, max + 1);
    if (n > max)
        return OAUTH_ERR_TOO_LONG;
    if (n == 0 || !header_safe(s, n))
        return OAUTH_ERR_BADARG;
    memcpy(dst, s, n + 1);
    return OAUTH_OK;
}

/* Parses hex digits (either case, any length 1..max) into a new BIGNUM.
 * Returns the BIGNUM, or NULL with *st set (NOT_HEX / TOO_LONG / NOMEM). */
static BIGNUM *hex_to_bn(const char *s, size_t max, oauth_status *st)
{
    size_t n = strnlen(s, max + 1);
    if (n > max) {
        *st = OAUTH_ERR_TOO_LONG;
        return NULL;
    }
    if (!codec_is_hex(s, n)) {
        *st = OAUTH_ERR_NOT_HEX;
        return NULL;
    }
    BIGNUM *bn = NULL;
    /* Validated above, so a short parse can only be an allocation failure. */
    if (BN_hex2bn(&bn, s) != (int)n) {
        BN_clear_free(bn);
        ERR_clear_error();
        *st = OAUTH_ERR_NOMEM;
        return NULL;
    }
    *st = OAUTH_OK;
    return bn;
}

/* Refuses any passphrase request, so an encrypted PEM fails to load instead
 * of OpenSSL prompting on a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) /* NOLINT(readability-non-const-parameter): pem_password_cb */
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* An unencrypted RSA private key (PKCS#1 or PKCS#8 PEM), or NULL. Asking the
 * decoder for "RSA" from "PEM" up front builds a short decoder chain: the
 * generic PEM_read_bio_PrivateKey tries every key type and structure, about
 * half of the port's init time. */
static EVP_PKEY *decode_rsa_pem(const char *pem, size_t len)
{
    EVP_PKEY *pk = NULL;
    OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", NULL, "RSA",
                                                           EVP_PKEY_KEYPAIR, NULL, NULL);
    if (dctx == NULL)
        return NULL;
    const unsigned char *p = (const unsigned char *)pem;
    size_t left = len;
    int ok = OSSL_DECODER_from_data(dctx, &p, &left);
    OSSL_DECODER_CTX_free(dctx);
    if (!ok || pk == NULL || !EVP_PKEY_is_a(pk, "RSA")) {
        EVP_PKEY_free(pk);
        ERR_clear_error();
        return NULL;
    }
    return pk;
}

static oauth_status load_rsa_key(const char *pem, size_t len, EVP_PKEY **out)
{
    *out = NULL;
    if (pem == NULL || len == 0)
        return OAUTH_ERR_MISSING;
    if (len > PEM_MAX)
        return OAUTH_ERR_TOO_LONG;
    EVP_PKEY *pk = decode_rsa_pem(pem, len);
    if (pk != NULL) {
        *out = pk;
        return OAUTH_OK;
    }
    /* Not an unencrypted RSA key: the generic reader tells a non-RSA key
     * from no key at all. */
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        return OAUTH_ERR_NOMEM;
    pk = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (pk == NULL) {
        ERR_clear_error();
        return OAUTH_ERR_NOT_PEM;
    }
    /* "RSA" only: an RSA-PSS-restricted key cannot make PKCS#1 v1.5 output. */
    if (!EVP_PKEY_is_a(pk, "RSA")) {
        EVP_PKEY_free(pk);
        return OAUTH_ERR_NOT_RSA;
    }
    *out = pk;
    return OAUTH_OK;
}

/* RSA PKCS#1 v1.5 decryption of ct into a new malloc'd buffer. */
static oauth_status rsa_decrypt(EVP_PKEY *key, const uint8_t *ct, size_t ctlen,
                                uint8_t **pt, size_t *ptlen)
{
    oauth_status st = OAUTH_ERR_CRYPTO;
    uint8_t *buf = NULL;
    size_t cap = 0;
    *pt = NULL;
    *ptlen = 0;
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (c == NULL)
        return crypto_fail();
    if (EVP_PKEY_decrypt_init(c) <= 0 || EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) <= 0)
        goto out;
#ifdef OSSL_ASYM_CIPHER_PARAM_IMPLICIT_REJECTION
    {
        /* OpenSSL >= 3.2 would turn a bad padding into random plaintext;
         * we want the error (a local config check, not an oracle). */
        unsigned int off = 0;
        OSSL_PARAM prm[2] = {
            OSSL_PARAM_construct_uint(OSSL_ASYM_CIPHER_PARAM_IMPLICIT_REJECTION, &off),
            OSSL_PARAM_construct_end()};
        if (EVP_PKEY_CTX_set_params(c, prm) <= 0)
            goto out;
    }
#endif
    if (EVP_PKEY_decrypt(c, NULL, &cap, ct, ctlen) <= 0 || cap == 0)
        goto out;
    buf = malloc(cap);
    if (buf == NULL) {
        st = OAUTH_ERR_NOMEM;
        goto out;
    }
    size_t n = cap;
    if (EVP_PKEY_decrypt(c, buf, &n, ct, ctlen) <= 0 || n == 0) {
        st = OAUTH_ERR_DECRYPT;
        goto out;
    }
    *pt = buf;
    *ptlen = n;
    buf = NULL;
    st = OAUTH_OK;
out:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, cap);
        free(buf);
    }
    EVP_PKEY_CTX_free(c);
    ERR_clear_error();
    return st;
}

/* ---- session -------------------------------------------------------------- */

void oauth_session_free(oauth_session *s)
{
    if (s == NULL)
        return;
    EVP_PKEY_free(s->sig_key);
    if (s->prepend != NULL) {
        OPENSSL_cleanse(s->prepend, s->prepend_len);
        free(s->prepend);
    }
    if (s->prepend_hex != NULL) {
        OPENSSL_cleanse(s->prepend_hex, 2 * s->prepend_len);
        free(s->prepend_hex);
    }
    BN_free(s->p);
    BN_free(s->p_minus_1);
    BN_free(s->g);
    BN_MONT_CTX_free(s->mont);
    BN_CTX_free(s->bn); /* clears its pooled temporaries */
    BN_clear_free(s->pending_a);
    hmac_sha256_wipe(&s->mac_lst);
    hmac_sha256_wipe(&s->mac_tmp);
    strbuf_free(&s->base);
    strbuf_free(&s->query);
    strbuf_free(&s->hdr);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

/* The fields of oauth_session_new in the order they are checked; cheap
 * syntax checks come first and the primality test last. */
static oauth_status session_fill(oauth_session *s, const oauth_config *cfg,
                                 const char **bad)
{
    oauth_status st;
    EVP_PKEY *enc_key = NULL;
    uint8_t *ct = NULL;
    size_t ctcap = 0, ctlen = 0;

    *bad = "consumer_key";
    if ((st = take_field(cfg->consumer_key, OAUTH_FIELD_MAX, s->consumer_key)) != OAUTH_OK)
        return st;
    *bad = "access_token";
    if ((st = take_field(cfg->access_token, OAUTH_FIELD_MAX, s->access_token)) != OAUTH_OK)
        return st;

    *bad = "access_token_secret";
    if (cfg->access_token_secret == NULL)
        return OAUTH_ERR_MISSING;
    size_t slen = strnlen(cfg->access_token_secret, SECRET_B64_MAX + 1);
    if (slen > SECRET_B64_MAX)
        return OAUTH_ERR_TOO_LONG;
    if (slen == 0)
        return OAUTH_ERR_NOT_BASE64;

    *bad = "dh_prime";
    if (cfg->dh_prime_hex == NULL)
        return OAUTH_ERR_MISSING;
    if ((s->p = hex_to_bn(cfg->dh_prime_hex, PRIME_HEX_MAX, &st)) == NULL)
        return st;
    if (BN_num_bits(s->p) < PRIME_BITS_MIN)
        return OAUTH_ERR_TOO_SMALL;

    *bad = "dh_generator";
    unsigned long g = cfg->dh_generator == 0 ? 2 : cfg->dh_generator;
    if (g < 2)
        return OAUTH_ERR_TOO_SMALL;
    if ((s->g = BN_new()) == NULL || !BN_set_word(s->g, g))
        return OAUTH_ERR_NOMEM;
    if (BN_cmp(s->g, s->p) >= 0)
        return OAUTH_ERR_BADARG;

    *bad = "realm";
    if (cfg->realm == NULL) {
        const char *def = strcmp(s->consumer_key, "TESTCONS") == 0 ? "test_realm" : "limited_poa";
        memcpy(s->realm, def, strlen(def) + 1);
    } else if ((st = take_field(cfg->realm, OAUTH_FIELD_MAX, s->realm)) != OAUTH_OK) {
        return st;
    }

    *bad = "encryption_key";
    if ((st = load_rsa_key(cfg->encryption_key_pem, cfg->encryption_key_pem_len, &enc_key)) != OAUTH_OK)
        return st;
    *bad = "signature_key";
    if ((st = load_rsa_key(cfg->signature_key_pem, cfg->signature_key_pem_len, &s->sig_key)) != OAUTH_OK)
        goto out;

    *bad = "access_token_secret";
    ctcap = codec_b64_decoded_max(slen);
    if ((ct = malloc(ctcap)) == NULL) {
        st = OAUTH_ERR_NOMEM;
        goto out;
    }
    if (codec_b64_decode(cfg->access_token_secret, slen, ct, ctcap, &ctlen) != 0 || ctlen == 0) {
        st = OAUTH_ERR_NOT_BASE64;
        goto out;
    }
    if ((st = rsa_decrypt(enc_key, ct, ctlen, &s->prepend, &s->prepend_len)) != OAUTH_OK)
        goto out;
    if ((s->prepend_hex = malloc(2 * s->prepend_len + 1)) == NULL) {
        st = OAUTH_ERR_NOMEM;
        goto out;
    }
    codec_hex_encode(s->prepend, s->prepend_len, s->prepend_hex);

    *bad = "dh_prime";
    if ((s->bn = BN_CTX_new()) == NULL) {
        st = OAUTH_ERR_NOMEM;
        goto out;
    }
    int prime = dh_prime_check(s->p, s->bn);
    if (prime < 0) {
        st = crypto_fail();
        goto out;
    }
    if (prime == 0) {
        st = OAUTH_ERR_NOT_PRIME;
        goto out;
    }
    st = OAUTH_OK;
out:
    EVP_PKEY_free(enc_key);
    free(ct); /* ciphertext is public */
    return st;
}

/* Non-field resources: Montgomery context, MACs, reusable buffers. */
static oauth_status session_setup(oauth_session *s)
{
    if ((s->p_minus_1 = BN_dup(s->p)) == NULL || !BN_sub_word(s->p_minus_1, 1))
        return OAUTH_ERR_NOMEM;
    if ((s->mont = BN_MONT_CTX_new()) == NULL || !BN_MONT_CTX_set(s->mont, s->p, s->bn))
        return crypto_fail();
    if (strbuf_reserve(&s->base, 4096) != 0 || strbuf_reserve(&s->query, 1024) != 0 ||
        strbuf_reserve(&s->hdr, OAUTH_AUTH_MAX) != 0)
        return OAUTH_ERR_NOMEM;
    return OAUTH_OK;
}

oauth_status oauth_session_new(const oauth_config *cfg, oauth_session **out,
                               const char **bad_field)
{
    const char *dummy;
    if (bad_field == NULL)
        bad_field = &dummy;
    *bad_field = NULL;
    if (out == NULL)
        return OAUTH_ERR_BADARG;
    *out = NULL;
    if (cfg == NULL)
        return OAUTH_ERR_BADARG;

    oauth_session *s = calloc(1, sizeof *s);
    if (s == NULL)
        return OAUTH_ERR_NOMEM;
    s->base = s->query = s->hdr = STRBUF_INIT;
    s->rnd_used = sizeof s->rnd;
    s->sign_query_params = cfg->sign_query_params != 0;

    oauth_status st = session_fill(s, cfg, bad_field);
    if (st == OAUTH_OK) {
        *bad_field = NULL;
        st = session_setup(s);
    }
    if (st != OAUTH_OK) {
        oauth_session_free(s);
        return st;
    }
    *out = s;
    return OAUTH_OK;
}

/* ---- shared pieces of both signatures ------------------------------------- */

/* Fills nonce[NONCE_LEN+1] with [A-Za-z0-9] from the session's pool;
 * rejection sampling keeps the 62 symbols equally likely (bytes >= 248 =
 * 4*62 are dropped). */
static oauth_status random_nonce(oauth_session *s, char *nonce)
{
    static const char ALNUM[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < NONCE_LEN;) {
        if (s->rnd_used >= sizeof s->rnd) {
            if (RAND_bytes(s->rnd, (int)sizeof s->rnd) != 1)
                return crypto_fail();
            s->rnd_used = 0;
        }
        unsigned char *b = &s->rnd[s->rnd_used++];
        if (*b < 248)
            nonce[i++] = ALNUM[*b % 62];
        *b = 0;
    }
    nonce[NONCE_LEN] = '\0';
    return OAUTH_OK;
}

/* Resolves the nonce and timestamp pins. nonce_buf has NONCE_LEN+1 bytes
 * and receives a random nonce when none is pinned; ts_buf gets the decimal
 * timestamp. */
static oauth_status resolve_pins(oauth_session *s, const oauth_pins *pins, char *nonce_buf,
                                 const char **nonce, size_t *nonce_len,
                                 char *ts_buf, size_t ts_cap)
{
    if (pins != NULL && pins->nonce != NULL) {
        size_t n = strnlen(pins->nonce, OAUTH_NONCE_MAX + 1);
        if (n == 0 || n > OAUTH_NONCE_MAX || !header_safe(pins->nonce, n))
            return OAUTH_ERR_BADARG;
        *nonce = pins->nonce;
        *nonce_len = n;
    } else {
        oauth_status st = random_nonce(s, nonce_buf);
        if (st != OAUTH_OK)
            return st;
        *nonce = nonce_buf;
        *nonce_len = NONCE_LEN;
    }
    int64_t ts = (pins != NULL && pins->timestamp >= 0) ? pins->timestamp : (int64_t)time(NULL);
    if (ts < 0)
        return OAUTH_ERR_CRYPTO; /* the clock failed */
    /* Decimal, written backwards; int64 has at most 19 digits. */
    char tmp[24];
    size_t n = 0;
    uint64_t v = (uint64_t)ts;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (n + 1 > ts_cap)
        return OAUTH_ERR_TOO_LONG;
    for (size_t i = 0; i < n; i++)
        ts_buf[i] = tmp[n - 1 - i];
    ts_buf[n] = '\0';
    return OAUTH_OK;
}

static int param_cmp(const param *a, const param *b)
{
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = n ? memcmp(a->k, b->k, n) : 0;
    if (c != 0 || a->klen != b->klen)
        return c != 0 ? c : (a->klen < b->klen ? -1 : 1);
    n = a->vlen < b->vlen ? a->vlen : b->vlen;
    c = n ? memcmp(a->v, b->v, n) : 0;
    if (c != 0 || a->vlen != b->vlen)
        return c != 0 ? c : (a->vlen < b->vlen ? -1 : 1);
    return 0;
}

/* Insertion sort: n is small and bounded, and qsort may allocate. */
static void sort_params(param *p, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        param x = p[i];
        size_t j = i;
        while (j > 0 && param_cmp(&p[j - 1], &x) > 0) {
            p[j] = p[j - 1];
            j--;
        }
        p[j] = x;
    }
}

/* Appends METHOD & quote_plus(url) & quote_plus(k=v&k=v...) with the params
 * sorted by key, then value. quote_plus is byte-wise, so quoting each piece
 * equals quoting the joined string. */
static void append_base(strbuf *b, const char *method, const char *url, size_t url_len,
                        param *p, size_t n)
{
    strbuf_puts(b, method);
    strbuf_putc(b, '&');
    codec_quote_plus_append(b, url, url_len);
    strbuf_putc(b, '&');
    sort_params(p, n);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strbuf_append(b, "%26", 3);
        codec_quote_plus_append(b, p[i].k, p[i].klen);
        strbuf_append(b, "%3D", 3);
        codec_quote_plus_append(b, p[i].v, p[i].vlen);
    }
}

static void hdr_pair(strbuf *h, const char *k, const char *v, size_t vlen, int quote)
{
    strbuf_append(h, ", ", 2);
    strbuf_puts(h, k);
    strbuf_append(h, "=\"", 2);
    if (quote)
        codec_quote_plus_append(h, v, vlen);
    else
        strbuf_append(h, v, vlen);
    strbuf_putc(h, '"');
}

/* OAuth realm="R", then the parameters sorted by key (a fixed order). Only
 * the signature is quote_plus'd; other values go in as they are, as ibind
 * writes them (header_safe() keeps them from breaking the quoting). */
static void append_header(strbuf *h, const oauth_session *s, const char *dh_challenge,
                          const char *nonce, size_t nonce_len, const char *sig_b64,
                          size_t sig_len, const char *method, const char *ts)
{
    strbuf_append(h, "OAuth realm=\"", 13);
    strbuf_puts(h, s->realm);
    strbuf_putc(h, '"');
    if (dh_challenge != NULL)
        hdr_pair(h, "diffie_hellman_challenge", dh_challenge, strlen(dh_challenge), 0);
    hdr_pair(h, "oauth_consumer_key", s->consumer_key, strlen(s->consumer_key), 0);
    hdr_pair(h, "oauth_nonce", nonce, nonce_len, 0);
    hdr_pair(h, "oauth_signature", sig_b64, sig_len, 1);
    hdr_pair(h, "oauth_signature_method", method, strlen(method), 0);
    hdr_pair(h, "oauth_timestamp", ts, strlen(ts), 0);
    hdr_pair(h, "oauth_token", s->access_token, strlen(s->access_token), 0);
}

static size_t set_param(param *p, size_t i, const char *k, const char *v, size_t vlen)
{
    p[i].k = k;
    p[i].klen = strlen(k);
    p[i].v = v;
    p[i].vlen = vlen;
    return i + 1;
}

/* The five oauth_* parameters common to both signatures. */
static size_t oauth_params(param *p, const oauth_session *s, const char *nonce,
                           size_t nonce_len, const char *method, const char *ts)
{
    size_t n = 0;
    n = set_param(p, n, "oauth_consumer_key", s->consumer_key, strlen(s->consumer_key));
    n = set_param(p, n, "oauth_nonce", nonce, nonce_len);
    n = set_param(p, n, "oauth_signature_method", method, strlen(method));
    n = set_param(p, n, "oauth_timestamp", ts, strlen(ts));
    n = set_param(p, n, "oauth_token", s->access_token, strlen(s->access_token));
    return n;
}

/* ---- LST request (RSA-SHA256) --------------------------------------------- */

/* The DH exponent: pinned hex (1..DH_RANDOM_HEX_MAX digits, not zero) or 256
 * random bits. Flagged constant-time: it is the secret of the handshake. */
static oauth_status dh_exponent(const oauth_pins *pins, BIGNUM **out)
{
    BIGNUM *a = NULL;
    *out = NULL;
    if (pins != NULL && pins->dh_random_hex != NULL) {
        oauth_status st;
        if ((a = hex_to_bn(pins->dh_random_hex, DH_RANDOM_HEX_MAX, &st)) == NULL)
            return st == OAUTH_ERR_NOMEM ? st : OAUTH_ERR_BADARG;
    } else {
        unsigned char rnd[DH_RANDOM_BYTES];
        if ((a = BN_new()) == NULL)
            return OAUTH_ERR_NOMEM;
        do {
            if (RAND_bytes(rnd, (int)sizeof rnd) != 1 || BN_bin2bn(rnd, (int)sizeof rnd, a) == NULL) {
                OPENSSL_cleanse(rnd, sizeof rnd);
                BN_clear_free(a);
                return crypto_fail();
            }
        } while (BN_is_zero(a));
        OPENSSL_cleanse(rnd, sizeof rnd);
    }
    if (BN_is_zero(a)) {
        BN_clear_free(a);
        return OAUTH_ERR_BADARG;
    }
    BN_set_flags(a, BN_FLG_CONSTTIME);
    *out = a;
    return OAUTH_OK;
}

/* Appends BN as lower-case hex without leading zeros ("0" for zero). */
static int append_bn_hex(strbuf *sb, const BIGNUM *bn)
{
    int nbytes = BN_num_bytes(bn);
    if (nbytes == 0)
        return strbuf_putc(sb, '0');
    unsigned char *bin = OPENSSL_malloc((size_t)nbytes);
    if (bin == NULL || BN_bn2bin(bn, bin) != nbytes) {
        OPENSSL_free(bin);
        return -1;
    }
    size_t start = sb->len;
    int rc = codec_hex_append(sb, bin, (size_t)nbytes);
    OPENSSL_free(bin);
    if (rc != 0)
        return -1;
    if (sb->data[start] == '0') { /* at most one leading zero nibble */
        memmove(sb->data + start, sb->data + start + 1, sb->len - start - 1);
        sb->len--;
        sb->data[sb->len] = '\0';
    }
    return 0;
}

static oauth_status rsa_sha256_sign(EVP_PKEY *key, const char *msg, size_t len,
                                    unsigned char **sig, size_t *siglen)
{
    oauth_status st = OAUTH_ERR_CRYPTO;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *buf = NULL;
    size_t n = 0;
    *sig = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return OAUTH_ERR_NOMEM;
    if (EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0 ||
        EVP_DigestSign(md, NULL, &n, (const unsigned char *)msg, len) != 1)
        goto out;
    if ((buf = OPENSSL_malloc(n)) == NULL) {
        st = OAUTH_ERR_NOMEM;
        goto out;
    }
    if (EVP_DigestSign(md, buf, &n, (const unsigned char *)msg, len) != 1)
        goto out;
    *sig = buf;
    *siglen = n;
    buf = NULL;
    st = OAUTH_OK;
out:
    OPENSSL_free(buf);
    EVP_MD_CTX_free(md);
    if (st != OAUTH_OK)
        ERR_clear_error();
    return st;
}

oauth_status oauth_lst_request(oauth_session *s, const char *lst_url,
                               const oauth_pins *pins, char **authorization)
{
    if (authorization != NULL)
        *authorization = NULL;
    if (s == NULL || lst_url == NULL || authorization == NULL)
        return OAUTH_ERR_BADARG;
    size_t url_len = strnlen(lst_url, URL_MAX + 1);
    if (url_len > URL_MAX)
        return OAUTH_ERR_TOO_LONG;
    if (url_len == 0)
        return OAUTH_ERR_BADARG;

    char nonce_buf[NONCE_LEN + 1], ts[24];
    const char *nonce;
    size_t nonce_len;
    oauth_status st = resolve_pins(s, pins, nonce_buf, &nonce, &nonce_len, ts, sizeof ts);
    if (st != OAUTH_OK)
        return st;

    BIGNUM *a = NULL, *A = NULL;
    strbuf chal = STRBUF_INIT, base = STRBUF_INIT, hdr = STRBUF_INIT;
    unsigned char *sig = NULL;
    char *sig_b64 = NULL;
    size_t siglen = 0, b64cap = 0, b64len = 0, n = 0;
    param p[OAUTH_PARAMS_MAX];

    if ((st = dh_exponent(pins, &a)) != OAUTH_OK)
        goto out;
    st = OAUTH_ERR_NOMEM;
    if ((A = BN_new()) == NULL)
        goto out;
    if (!BN_mod_exp_mont_consttime(A, s->g, a, s->p, s->bn, s->mont)) {
        st = crypto_fail();
        goto out;
    }
    if (append_bn_hex(&chal, A) != 0)
        goto out;

    n = oauth_params(p, s, nonce, nonce_len, "RSA-SHA256", ts);
    n = set_param(p, n, "diffie_hellman_challenge", chal.data, chal.len);

    /* prepend + base string; strbuf_free wipes it (it holds the prepend). */
    strbuf_puts(&base, s->prepend_hex);
    append_base(&base, "POST", lst_url, url_len, p, n);
    if (base.failed)
        goto out;
    if ((st = rsa_sha256_sign(s->sig_key, base.data, base.len, &sig, &siglen)) != OAUTH_OK)
        goto out;
    st = OAUTH_ERR_NOMEM;
    b64cap = codec_b64_encoded_len(siglen) + 1;
    if ((sig_b64 = malloc(b64cap)) == NULL ||
        codec_b64_encode(sig, siglen, sig_b64, b64cap, &b64len) != 0)
        goto out;

    append_header(&hdr, s, chal.data, nonce, nonce_len, sig_b64, b64len, "RSA-SHA256", ts);
    if (hdr.failed)
        goto out;
    *authorization = strbuf_release(&hdr);

    /* Success: the new exponent replaces (and wipes) any pending one. */
    BN_clear_free(s->pending_a);
    s->pending_a = a;
    a = NULL;
    st = OAUTH_OK;
out:
    BN_clear_free(a);
    BN_free(A);
    OPENSSL_free(sig);
    free(sig_b64);
    strbuf_free(&chal);
    strbuf_free(&base);
    strbuf_free(&hdr);
    return st;
}

/* ---- LST completion -------------------------------------------------------- */

static oauth_status hmac_sha1(const uint8_t *key, size_t klen, const void *msg,
                              size_t mlen, uint8_t out[SHA1_LEN])
{
    size_t olen = 0;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA1", NULL, key, klen, msg, mlen, out,
                  SHA1_LEN, &olen) == NULL || olen != SHA1_LEN)
        return crypto_fail();
    return OAUTH_OK;
}

/* K as Java's BigInteger.toByteArray(): minimal big-endian two's
 * complement, i.e. a 0x00 in front when the top bit of the first byte is set
 * (bit length a multiple of 8). Returns a malloc'd buffer. */
static uint8_t *java_bytes(const BIGNUM *k, size_t *len)
{
    int nbytes = BN_num_bytes(k);
    size_t pad = (BN_num_bits(k) % 8 == 0) ? 1 : 0;
    size_t total = (size_t)nbytes + pad;
    uint8_t *buf = malloc(total);
    if (buf == NULL)
        return NULL;
    buf[0] = 0;
    if (nbytes > 0 && BN_bn2bin(k, buf + pad) != nbytes) {
        OPENSSL_cleanse(buf, total);
        free(buf);
        return NULL;
    }
    *len = total;
    return buf;
}

oauth_status oauth_lst_complete(oauth_session *s, const char *dh_response_hex,
                                const char *lst_signature_hex,
                                int64_t expires_ms)
{
    if (s == NULL || dh_response_hex == NULL || lst_signature_hex == NULL)
        return OAUTH_ERR_BADARG;
    if (s->pending_a == NULL)
        return OAUTH_ERR_NO_PENDING;

    oauth_status st;
    BIGNUM *B = hex_to_bn(dh_response_hex, DH_RESPONSE_HEX_MAX, &st);
    if (B == NULL)
        return st == OAUTH_ERR_NOMEM ? st : OAUTH_ERR_BAD_DH_RESPONSE;
    /* 1 < B < p-1: rules out the values that force K into {0, 1, p-1}. */
    if (BN_is_zero(B) || BN_is_one(B) || BN_cmp(B, s->p_minus_1) >= 0) {
        BN_free(B);
        return OAUTH_ERR_BAD_DH_RESPONSE;
    }

    BIGNUM *K = NULL;
    uint8_t *kbytes = NULL, lst[SHA1_LEN], check[SHA1_LEN], want[SHA1_LEN];
    size_t klen = 0, wlen = 0;
    hmac_sha256_key mac;
    memset(&mac, 0, sizeof mac);
    st = OAUTH_ERR_NOMEM;
    if ((K = BN_new()) == NULL)
        goto out;
    BN_set_flags(K, BN_FLG_CONSTTIME);
    if (!BN_mod_exp_mont_consttime(K, B, s->pending_a, s->p, s->bn, s->mont)) {
        st = crypto_fail();
        goto out;
    }
    if ((kbytes = java_bytes(K, &klen)) == NULL)
        goto out;
    if ((st = hmac_sha1(kbytes, klen, s->prepend, s->prepend_len, lst)) != OAUTH_OK)
        goto out;

    /* Validation: hex(HMAC-SHA1(LST, consumer_key)) == signature. Decoding
     * the hex makes the comparison case-insensitive. */
    if ((st = hmac_sha1(lst, sizeof lst, s->consumer_key, strlen(s->consumer_key), check)) != OAUTH_OK)
        goto out;
    size_t siglen = strnlen(lst_signature_hex, 2 * SHA1_LEN + 1);
    if (siglen != 2 * SHA1_LEN ||
        codec_hex_decode(lst_signature_hex, siglen, want, sizeof want, &wlen) != 0 ||
        wlen != SHA1_LEN || CRYPTO_memcmp(check, want, SHA1_LEN) != 0) {
        st = OAUTH_ERR_LST_MISMATCH;
        goto out;
    }

    /* Key a fresh HMAC first so a failure leaves the old LST intact. */
    if (hmac_sha256_set_key(&mac, lst, sizeof lst) != 0) {
        st = crypto_fail();
        goto out;
    }
    char b64[OAUTH_LST_B64_MAX];
    if (codec_b64_encode(lst, sizeof lst, b64, sizeof b64, NULL) != 0) {
        st = OAUTH_ERR_CRYPTO;
        goto out;
    }
    hmac_sha256_wipe(&s->mac_lst);
    s->mac_lst = mac;
    OPENSSL_cleanse(s->lst_b64, sizeof s->lst_b64);
    memcpy(s->lst_b64, b64, sizeof b64);
    OPENSSL_cleanse(b64, sizeof b64);
    s->has_lst = 1;
    s->lst_expires_ms = expires_ms;
    BN_clear_free(s->pending_a);
    s->pending_a = NULL;
    st = OAUTH_OK;
out:
    hmac_sha256_wipe(&mac);
    BN_free(B);
    BN_clear_free(K);
    if (kbytes != NULL) {
        OPENSSL_cleanse(kbytes, klen);
        free(kbytes);
    }
    OPENSSL_cleanse(lst, sizeof lst);
    OPENSSL_cleanse(check, sizeof check);
    return st;
}

oauth_status oauth_live_session_token(const oauth_session *s, char *out,
                                      size_t cap, int64_t *expires_ms)
{
    if (s == NULL || out == NULL)
        return OAUTH_ERR_BADARG;
    if (!s->has_lst)
        return OAUTH_ERR_NOT_AUTHENTICATED;
    size_t n = strlen(s->lst_b64);
    if (n + 1 > cap)
        return OAUTH_ERR_TOO_LONG;
    memcpy(out, s->lst_b64, n + 1);
    if (expires_ms != NULL)
        *expires_ms = s->lst_expires_ms;
    return OAUTH_OK;
}

int oauth_has_lst(const oauth_session *s)
{
    return s != NULL && s->has_lst;
}

const char *oauth_access_token(const oauth_session *s)
{
    return s->access_token;
}

/* ---- request signing (HMAC-SHA256) ----------------------------------------- */

/* Splits query[0..n) on '&' into percent-decoded key=value params appended
 * to p[*np..]. Decoded bytes go to s->query, reserved up front so the
 * pointers stay valid. */
static oauth_status query_params(oauth_session *s, const char *q, size_t n,
                                 param *p, size_t *np)
{
    strbuf_reset(&s->query);
    if (strbuf_reserve(&s->query, n) != 0)
        return OAUTH_ERR_NOMEM;
    char *dst = s->query.data;
    size_t used = 0, count = 0;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && q[i] != '&')
            i++;
        const char *piece = q + start;
        size_t plen = i - start;
        i++; /* past the '&' */
        if (plen == 0)
            continue;
        if (count == QUERY_PARAMS_MAX)
            return OAUTH_ERR_TOO_LONG;
        const char *eq = memchr(piece, '=', plen);
        size_t klen_raw = eq ? (size_t)(eq - piece) : plen;
        param *x = &p[*np + count];
        x->k = dst + used;
        x->klen = codec_pct_decode(piece, klen_raw, dst + used, 1);
        used += x->klen;
        x->v = dst + used;
        x->vlen = eq ? codec_pct_decode(eq + 1, plen - klen_raw - 1, dst + used, 1) : 0;
        used += x->vlen;
        count++;
    }
    s->query.len = used;
    s->query.data[used] = '\0';
    *np += count;
    return OAUTH_OK;
}

oauth_status oauth_sign(oauth_session *s, const char *method, const char *url,
                        const oauth_pins *pins, const char *lst_b64,
                        char *out, size_t cap)
{
    if (out != NULL && cap > 0)
        out[0] = '\0';
    if (s == NULL || method == NULL || url == NULL || out == NULL || cap == 0)
        return OAUTH_ERR_BADARG;

    /* The key: the stored LST (context already keyed) or an explicit one. */
    const hmac_sha256_key *mac;
    if (lst_b64 == NULL) {
        if (!s->has_lst)
            return OAUTH_ERR_NOT_AUTHENTICATED;
        mac = &s->mac_lst;
    } else {
        size_t n = strnlen(lst_b64, OAUTH_LST_B64_MAX);
        if (n >= OAUTH_LST_B64_MAX)
            return OAUTH_ERR_TOO_LONG;
        uint8_t key[LST_RAW_MAX + 2];
        size_t klen = 0;
        if (codec_b64_decode(lst_b64, n, key, sizeof key, &klen) != 0 || klen == 0) {
            OPENSSL_cleanse(key, sizeof key);
            return OAUTH_ERR_NOT_BASE64;
        }
        mac = &s->mac_tmp;
        int r = hmac_sha256_set_key(&s->mac_tmp, key, klen);
        OPENSSL_cleanse(key, sizeof key);
        if (r != 0)
            return crypto_fail();
    }

    /* Method: letters only, upper-cased as the spec's base string wants. */
    char meth[METHOD_MAX + 1];
    size_t mlen = strnlen(method, METHOD_MAX + 1);
    if (mlen == 0 || mlen > METHOD_MAX)
        return OAUTH_ERR_BADARG;
    for (size_t i = 0; i < mlen; i++) {
        char c = method[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (c < 'A' || c > 'Z')
            return OAUTH_ERR_BADARG;
        meth[i] = c;
    }
    meth[mlen] = '\0';

    size_t url_len = strnlen(url, URL_MAX + 1);
    if (url_len > URL_MAX)
        return OAUTH_ERR_TOO_LONG;
    if (url_len == 0)
        return OAUTH_ERR_BADARG;
    /* Drop any fragment, then split off the query. */
    const char *hash = memchr(url, '#', url_len);
    size_t end = hash ? (size_t)(hash - url) : url_len;
    const char *qmark = memchr(url, '?', end);
    size_t path_len = qmark ? (size_t)(qmark - url) : end;

    char nonce_buf[NONCE_LEN + 1], ts[24];
    const char *nonce;
    size_t nonce_len;
    oauth_status st = resolve_pins(s, pins, nonce_buf, &nonce, &nonce_len, ts, sizeof ts);
    if (st != OAUTH_OK)
        return st;

    size_t n = oauth_params(s->params, s, nonce, nonce_len, "HMAC-SHA256", ts);
    if (s->sign_query_params && qmark != NULL) {
        size_t qoff = path_len + 1;
        if ((st = query_params(s, url + qoff, end - qoff, s->params, &n)) != OAUTH_OK)
            return st;
    }

    strbuf_reset(&s->base);
    append_base(&s->base, meth, url, path_len, s->params, n);
    if (s->base.failed)
        return OAUTH_ERR_NOMEM;

    unsigned char digest[SHA256_LEN];
    size_t dlen = SHA256_LEN;
    if (hmac_sha256(mac, s->base.data, s->base.len, digest) != 0)
        return crypto_fail();
    char sig_b64[64];
    size_t b64len = 0;
    if (codec_b64_encode(digest, dlen, sig_b64, sizeof sig_b64, &b64len) != 0)
        return OAUTH_ERR_CRYPTO;

    strbuf_reset(&s->hdr);
    append_header(&s->hdr, s, NULL, nonce, nonce_len, sig_b64, b64len, "HMAC-SHA256", ts);
    if (s->hdr.failed)
        return OAUTH_ERR_NOMEM;
    if (s->hdr.len + 1 > cap)
        return OAUTH_ERR_TOO_LONG;
    memcpy(out, s->hdr.data, s->hdr.len + 1);
    return OAUTH_OK;
}
