/*
 * test_oauth.c — oauth.c against ibind's vectors (both sets), plus error
 * paths and a simulated server for random handshakes. Run from the repo
 * root (data paths are relative to it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "check_fmt.h"
#include "codec.h"
#include "oauth.h"

#define PUBLIC_DIR "test/data/vectors_public"
#define TESTCONS_DIR "test/data/vectors_testcons"
#define KEYS_DIR "test/data/keys"

/* Two hex digits (either case) as a byte; anything else fails the test
 * (codec.c has its own tests). */
static unsigned char hex_byte(const char *p)
{
    uint8_t byte = 0;
    size_t n = 0;
    assert_int_equal(codec_hex_decode(p, 2, &byte, 1, &n), 0);
    assert_int_equal(n, 1);
    return byte;
}

static int isalnum_ascii(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* ---- fixtures -------------------------------------------------------------- */

typedef struct {
    json_object *root;
    char *enc_pem, *sig_pem;
    size_t enc_len, sig_len;
} vecset;

static vecset g_public, g_testcons;
/* Shared sessions over the public set (query_signing params / none): each
 * session costs a primality test, which is slow under valgrind. */
static oauth_session *g_pub, *g_none;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                (void)fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096)
            break;
    }
    (void)fclose(f);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

static const char *jstr(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return NULL;
    return json_object_get_string(v);
}

static int64_t jint(json_object *o, const char *key)
{
    json_object *v;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_int64(v);
}

static json_object *jget(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static int load_set(vecset *vs, const char *dir)
{
    char path[512];
    CHECK_FMT(path, sizeof path, "%s/vectors.json", dir);
    vs->root = json_object_from_file(path);
    if (vs->root == NULL)
        return -1;
    CHECK_FMT(path, sizeof path, "%s/%s", dir, jstr(vs->root, "encryption_key_file"));
    vs->enc_pem = slurp(path, &vs->enc_len);
    CHECK_FMT(path, sizeof path, "%s/%s", dir, jstr(vs->root, "signature_key_file"));
    vs->sig_pem = slurp(path, &vs->sig_len);
    return vs->enc_pem != NULL && vs->sig_pem != NULL ? 0 : -1;
}

static void free_set(vecset *vs)
{
    json_object_put(vs->root);
    free(vs->enc_pem);
    free(vs->sig_pem);
}

static oauth_config config_of(const vecset *vs)
{
    oauth_config c;
    memset(&c, 0, sizeof c);
    c.consumer_key = jstr(vs->root, "consumer_key");
    c.access_token = jstr(vs->root, "access_token");
    c.access_token_secret = jstr(vs->root, "access_token_secret");
    c.dh_prime_hex = jstr(vs->root, "dh_prime");
    c.dh_generator = (unsigned long)jint(vs->root, "dh_generator");
    c.realm = NULL; /* the default must give the vectors' realm */
    c.encryption_key_pem = vs->enc_pem;
    c.encryption_key_pem_len = vs->enc_len;
    c.signature_key_pem = vs->sig_pem;
    c.signature_key_pem_len = vs->sig_len;
    c.sign_query_params = 1;
    return c;
}

static int group_setup(void **state)
{
    (void)state;
    if (load_set(&g_public, PUBLIC_DIR) != 0 || load_set(&g_testcons, TESTCONS_DIR) != 0) {
        (void)fprintf(stderr, "cannot load vectors (run from the repository root)\n");
        return -1;
    }
    oauth_config c = config_of(&g_public);
    const char *bad = NULL;
    if (oauth_session_new(&c, &g_pub, &bad) != OAUTH_OK)
        return -1;
    c.sign_query_params = 0;
    if (oauth_session_new(&c, &g_none, &bad) != OAUTH_OK)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    oauth_session_free(g_pub);
    oauth_session_free(g_none);
    free_set(&g_public);
    free_set(&g_testcons);
    return 0;
}

static oauth_session *new_session(const oauth_config *c)
{
    oauth_session *s = NULL;
    const char *bad = "unset";
    oauth_status st = oauth_session_new(c, &s, &bad);
    if (st != OAUTH_OK)
        (void)fprintf(stderr, "session_new: %s (%s)\n", oauth_status_atom(st), bad ? bad : "-");
    assert_int_equal(st, OAUTH_OK);
    assert_non_null(s);
    return s;
}

static json_object *cases_of(const vecset *vs)
{
    json_object *c = jget(vs->root, "cases");
    assert_non_null(c);
    return c;
}

/* The value of key="..." in an Authorization header, copied into out. */
static void hdr_value(const char *auth, const char *key, char *out, size_t cap)
{
    char pat[64];
    CHECK_FMT(pat, sizeof pat, " %s=\"", key);
    const char *p = strstr(auth, pat);
    assert_non_null(p);
    p += strlen(pat);
    const char *e = strchr(p, '"');
    assert_non_null(e);
    size_t n = (size_t)(e - p);
    assert_true(n < cap);
    memcpy(out, p, n);
    out[n] = '\0';
}

/* Percent-encodes for a URL query; spaces as "%20" or '+'. Written
 * separately from codec.c so the test does not check the code with itself. */
static void url_encode(char *out, size_t cap, size_t *len, const char *s, int space_plus)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[4];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c) != NULL) {
            tmp[0] = (char)c;
            tmp[1] = '\0';
        } else if (c == ' ' && space_plus) {
            strcpy(tmp, "+");
        } else {
            CHECK_FMT(tmp, sizeof tmp, "%%%02X", c);
        }
        size_t n = strlen(tmp);
        assert_true(*len + n < cap);
        memcpy(out + *len, tmp, n + 1);
        *len += n;
    }
}

/* url plus its vector query (a JSON object, or null) percent-encoded. */
static void url_with_query(char *out, size_t cap, const char *url, json_object *query,
                           int space_plus)
{
    size_t len = strlen(url);
    assert_true(len < cap);
    memcpy(out, url, len + 1);
    if (query == NULL || json_object_is_type(query, json_type_null))
        return;
    struct json_object_iterator it = json_object_iter_begin(query);
    struct json_object_iterator end = json_object_iter_end(query);
    int first = 1;
    while (!json_object_iter_equal(&it, &end)) {
        assert_true(len + 2 < cap);
        out[len++] = first ? '?' : '&';
        out[len] = '\0';
        first = 0;
        url_encode(out, cap, &len, json_object_iter_peek_name(&it), space_plus);
        out[len++] = '=';
        out[len] = '\0';
        url_encode(out, cap, &len, json_object_get_string(json_object_iter_peek_value(&it)),
                   space_plus);
        json_object_iter_next(&it);
    }
}

static oauth_pins case_pins(json_object *c)
{
    oauth_pins p = {jstr(c, "nonce"), jint(c, "timestamp"), jstr(c, "dh_random")};
    return p;
}

/* ---- vectors -------------------------------------------------------------- */

/* Runs every case of a set through one session: LST request, completion,
 * then every request signed with the stored LST and with it explicitly. */
static void run_vectors(const vecset *vs, const oauth_config *cfg, int *k8_seen)
{
    oauth_session *s = new_session(cfg);
    json_object *cases = cases_of(vs);
    const char *lst_url = jstr(vs->root, "lst_url");
    size_t ncases = json_object_array_length(cases);
    assert_true(ncases > 0);
    for (size_t i = 0; i < ncases; i++) {
        json_object *c = json_object_array_get_idx(cases, i);
        oauth_pins pins = case_pins(c);
        char *auth = NULL;
        assert_int_equal(oauth_lst_request(s, lst_url, &pins, &auth), OAUTH_OK);
        assert_string_equal(auth, jstr(c, "lst_authorization"));
        char chal[1100];
        hdr_value(auth, "diffie_hellman_challenge", chal, sizeof chal);
        assert_string_equal(chal, jstr(c, "dh_challenge"));
        free(auth);

        assert_int_equal(oauth_lst_complete(s, jstr(c, "diffie_hellman_response"),
                                            jstr(c, "live_session_token_signature"),
                                            1700000000000 + (int64_t)i),
                         OAUTH_OK);
        char lst[OAUTH_LST_B64_MAX];
        int64_t exp = 0;
        assert_int_equal(oauth_live_session_token(s, lst, sizeof lst, &exp), OAUTH_OK);
        assert_string_equal(lst, jstr(c, "live_session_token"));
        assert_int_equal(exp, 1700000000000 + (int64_t)i);
        if (json_object_get_boolean(jget(c, "k_bitlen_multiple_of_8")))
            (*k8_seen)++;

        json_object *reqs = jget(c, "requests");
        for (size_t j = 0; j < json_object_array_length(reqs); j++) {
            json_object *r = json_object_array_get_idx(reqs, j);
            oauth_pins rp = {jstr(r, "nonce"), jint(r, "timestamp"), NULL};
            for (int plus = 0; plus < 2; plus++) {
                char url[2048], out[OAUTH_AUTH_MAX];
                url_with_query(url, sizeof url, jstr(r, "url"), jget(r, "query"), plus);
                assert_int_equal(oauth_sign(s, jstr(r, "method"), url, &rp, NULL, out, sizeof out),
                                 OAUTH_OK);
                assert_string_equal(out, jstr(r, "authorization"));
                assert_int_equal(oauth_sign(s, jstr(r, "method"), url, &rp,
                                            jstr(c, "live_session_token"), out, sizeof out),
                                 OAUTH_OK);
                assert_string_equal(out, jstr(r, "authorization"));
            }
        }
    }
    oauth_session_free(s);
}

static void test_vectors_public(void **state)
{
    (void)state;
    oauth_config c = config_of(&g_public);
    int k8 = 0;
    run_vectors(&g_public, &c, &k8);
    assert_true(k8 > 0);
}

static void test_vectors_testcons(void **state)
{
    (void)state;
    oauth_config c = config_of(&g_testcons);
    int k8 = 0;
    run_vectors(&g_testcons, &c, &k8);
    assert_true(k8 > 0);
}

/* Generator 0 means 2; explicit realms equal to the defaults change nothing. */
static void test_vectors_defaults_explicit(void **state)
{
    (void)state;
    oauth_config c = config_of(&g_public);
    c.dh_generator = 0;
    c.realm = "limited_poa";
    int k8 = 0;
    run_vectors(&g_public, &c, &k8);
}

/* The vector prepend is the hex of the decrypted secret (checked with
 * OpenSSL here, independently of oauth.c, whose output the LST checks). */
static void test_prepend_is_decrypted_secret(void **state)
{
    (void)state;
    const vecset *sets[2] = {&g_public, &g_testcons};
    for (int k = 0; k < 2; k++) {
        const vecset *vs = sets[k];
        BIO *bio = BIO_new_mem_buf(vs->enc_pem, (int)vs->enc_len);
        EVP_PKEY *pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
        assert_non_null(pk);
        const char *b64 = jstr(vs->root, "access_token_secret");
        unsigned char ct[1024], pt[1024];
        int n = EVP_DecodeBlock(ct, (const unsigned char *)b64, (int)strlen(b64));
        assert_true(n > 0);
        n -= (int)(b64[strlen(b64) - 1] == '=') + (int)(b64[strlen(b64) - 2] == '=');
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pk, NULL);
        size_t ptlen = sizeof pt;
        assert_int_equal(EVP_PKEY_decrypt_init(ctx), 1);
        assert_true(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0);
        assert_int_equal(EVP_PKEY_decrypt(ctx, pt, &ptlen, ct, (size_t)n), 1);
        char hex[2100];
        for (size_t i = 0; i < ptlen; i++)
            CHECK_FMT(hex + 2 * i, 3, "%02x", pt[i]);
        json_object *c0 = json_object_array_get_idx(cases_of(vs), 0);
        assert_string_equal(hex, jstr(c0, "prepend"));
        EVP_PKEY_CTX_free(ctx);
        EVP_PKEY_free(pk);
    }
}

/* ---- handshake state ------------------------------------------------------- */

static void test_lst_mismatch_keeps_pending(void **state)
{
    (void)state;
    oauth_session *s = g_pub;
    json_object *c = json_object_array_get_idx(cases_of(&g_public), 1);
    /* A failed completion leaves whatever LST the session had. */
    int had = oauth_has_lst(s);
    char before[OAUTH_LST_B64_MAX] = "";
    if (had)
        assert_int_equal(oauth_live_session_token(s, before, sizeof before, NULL), OAUTH_OK);
    oauth_pins pins = case_pins(c);
    char *auth = NULL;
    assert_int_equal(oauth_lst_request(s, jstr(g_public.root, "lst_url"), &pins, &auth), OAUTH_OK);
    free(auth);

    const char *sig = jstr(c, "live_session_token_signature");
    char bad[64];
    CHECK_FMT(bad, sizeof bad, "%s", sig);
    bad[7] = bad[7] == '0' ? '1' : '0';
    const char *dh = jstr(c, "diffie_hellman_response");
    assert_int_equal(oauth_lst_complete(s, dh, bad, 1), OAUTH_ERR_LST_MISMATCH);
    assert_int_equal(oauth_lst_complete(s, dh, "", 1), OAUTH_ERR_LST_MISMATCH);
    assert_int_equal(oauth_lst_complete(s, dh, "zz", 1), OAUTH_ERR_LST_MISMATCH);
    CHECK_FMT(bad, sizeof bad, "%s0", sig); /* one digit too many */
    assert_int_equal(oauth_lst_complete(s, dh, bad, 1), OAUTH_ERR_LST_MISMATCH);
    assert_int_equal(oauth_has_lst(s), had);
    if (had) {
        char now[OAUTH_LST_B64_MAX];
        assert_int_equal(oauth_live_session_token(s, now, sizeof now, NULL), OAUTH_OK);
        assert_string_equal(now, before);
    }

    /* Upper-case hex is accepted; the pending exponent survived. */
    char upper[64];
    CHECK_FMT(upper, sizeof upper, "%s", sig);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(oauth_lst_complete(s, dh, upper, 42), OAUTH_OK);
    assert_true(oauth_has_lst(s));
    /* Consumed. */
    assert_int_equal(oauth_lst_complete(s, dh, sig, 1), OAUTH_ERR_NO_PENDING);
}

static void test_bad_dh_response(void **state)
{
    (void)state;
    oauth_session *s = g_pub;
    json_object *c = json_object_array_get_idx(cases_of(&g_public), 0);
    oauth_pins pins = case_pins(c);
    char *auth = NULL;
    assert_int_equal(oauth_lst_request(s, jstr(g_public.root, "lst_url"), &pins, &auth), OAUTH_OK);
    free(auth);
    const char *sig = jstr(c, "live_session_token_signature");

    BIGNUM *p = NULL;
    assert_true(BN_hex2bn(&p, jstr(g_public.root, "dh_prime")) > 0);
    BIGNUM *v = BN_new();
    const int deltas[] = {-1, 0, 1};
    for (int i = 0; i < 3; i++) { /* p-1, p, p+1 */
        assert_non_null(BN_copy(v, p));
        if (deltas[i] < 0)
            assert_true(BN_sub_word(v, 1));
        else if (deltas[i] > 0)
            assert_true(BN_add_word(v, 1));
        char *hex = BN_bn2hex(v);
        assert_int_equal(oauth_lst_complete(s, hex, sig, 1), OAUTH_ERR_BAD_DH_RESPONSE);
        OPENSSL_free(hex);
    }
    const char *bad[] = {"0", "1", "00000", "0001", "", "xyz", "0x1234", "12 34", "-5", "+5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(oauth_lst_complete(s, bad[i], sig, 1), OAUTH_ERR_BAD_DH_RESPONSE);
    char *huge = malloc(100001);
    memset(huge, 'f', 100000);
    huge[100000] = '\0';
    assert_int_equal(oauth_lst_complete(s, huge, sig, 1), OAUTH_ERR_BAD_DH_RESPONSE);
    free(huge);
    assert_int_equal(oauth_lst_complete(s, NULL, sig, 1), OAUTH_ERR_BADARG);

    /* 2 is in range: valid B, wrong signature. Then the real one works. */
    assert_int_equal(oauth_lst_complete(s, "2", sig, 1), OAUTH_ERR_LST_MISMATCH);
    /* Leading zeros and upper case in B are fine. */
    char padded[1200];
    CHECK_FMT(padded, sizeof padded, "0000%s", jstr(c, "diffie_hellman_response"));
    for (char *q = padded; *q; q++)
        if (*q >= 'a' && *q <= 'f')
            *q = (char)(*q - 'a' + 'A');
    assert_int_equal(oauth_lst_complete(s, padded, sig, 1), OAUTH_OK);
    BN_free(v);
    BN_free(p);
}

static void test_no_pending_and_not_authenticated(void **state)
{
    (void)state;
    oauth_config cfg = config_of(&g_testcons);
    oauth_session *s = new_session(&cfg);
    json_object *c = json_object_array_get_idx(cases_of(&g_testcons), 0);
    assert_int_equal(oauth_lst_complete(s, jstr(c, "diffie_hellman_response"),
                                        jstr(c, "live_session_token_signature"), 1),
                     OAUTH_ERR_NO_PENDING);
    char out[OAUTH_AUTH_MAX];
    oauth_pins pins = OAUTH_PINS_NONE;
    assert_int_equal(oauth_sign(s, "GET", "https://x/y", &pins, NULL, out, sizeof out),
                     OAUTH_ERR_NOT_AUTHENTICATED);
    assert_int_equal(oauth_sign(s, "GET", "https://x/y", NULL, NULL, out, sizeof out),
                     OAUTH_ERR_NOT_AUTHENTICATED);
    char lst[OAUTH_LST_B64_MAX];
    int64_t exp = 0;
    assert_int_equal(oauth_live_session_token(s, lst, sizeof lst, &exp),
                     OAUTH_ERR_NOT_AUTHENTICATED);
    assert_false(oauth_has_lst(s));
    assert_false(oauth_has_lst(NULL));
    /* An explicit LST needs no handshake. */
    assert_int_equal(oauth_sign(s, "GET", "https://x/y", NULL, jstr(c, "live_session_token"),
                                out, sizeof out),
                     OAUTH_OK);
    oauth_session_free(s);
    oauth_session_free(NULL);
}

/* A second lst_request replaces the pending exponent. */
static void test_pending_replaced(void **state)
{
    (void)state;
    oauth_session *s = g_pub;
    json_object *c0 = json_object_array_get_idx(cases_of(&g_public), 0);
    json_object *c1 = json_object_array_get_idx(cases_of(&g_public), 1);
    const char *url = jstr(g_public.root, "lst_url");
    oauth_pins p0 = case_pins(c0), p1 = case_pins(c1);
    char *auth = NULL;
    assert_int_equal(oauth_lst_request(s, url, &p0, &auth), OAUTH_OK);
    free(auth);
    assert_int_equal(oauth_lst_request(s, url, &p1, &auth), OAUTH_OK);
    free(auth);
    assert_int_equal(oauth_lst_complete(s, jstr(c0, "diffie_hellman_response"),
                                        jstr(c0, "live_session_token_signature"), 1),
                     OAUTH_ERR_LST_MISMATCH);
    assert_int_equal(oauth_lst_complete(s, jstr(c1, "diffie_hellman_response"),
                                        jstr(c1, "live_session_token_signature"), 1),
                     OAUTH_OK);
    /* A new handshake after success keeps the old LST until it completes. */
    assert_int_equal(oauth_lst_request(s, url, &p0, &auth), OAUTH_OK);
    free(auth);
    char lst[OAUTH_LST_B64_MAX];
    assert_int_equal(oauth_live_session_token(s, lst, sizeof lst, NULL), OAUTH_OK);
    assert_string_equal(lst, jstr(c1, "live_session_token"));
    assert_int_equal(oauth_live_session_token(s, lst, 28, NULL), OAUTH_ERR_TOO_LONG);
    assert_int_equal(oauth_live_session_token(s, lst, 29, NULL), OAUTH_OK);
}

/* ---- configuration errors -------------------------------------------------- */

static void expect_cfg(const oauth_config *c, oauth_status want, const char *field)
{
    oauth_session *s = (oauth_session *)&s; /* must be reset to NULL */
    const char *bad = NULL;
    oauth_status st = oauth_session_new(c, &s, &bad);
    if (st != want || (field && (!bad || strcmp(bad, field) != 0)))
        (void)fprintf(stderr, "want %s/%s got %s/%s\n", oauth_status_atom(want), field,
                oauth_status_atom(st), bad ? bad : "(null)");
    assert_int_equal(st, want);
    assert_null(s);
    if (field != NULL) {
        assert_non_null(bad);
        assert_string_equal(bad, field);
    }
}

static void test_config_fields(void **state)
{
    (void)state;
    const oauth_config base = config_of(&g_public);
    oauth_config c;
    char long_field[OAUTH_FIELD_MAX + 2];
    memset(long_field, 'k', sizeof long_field - 1);
    long_field[sizeof long_field - 1] = '\0';

    c = base; c.consumer_key = NULL;
    expect_cfg(&c, OAUTH_ERR_MISSING, "consumer_key");
    c = base; c.consumer_key = "";
    expect_cfg(&c, OAUTH_ERR_BADARG, "consumer_key");
    c = base; c.consumer_key = long_field;
    expect_cfg(&c, OAUTH_ERR_TOO_LONG, "consumer_key");
    c = base; c.consumer_key = "ab\"cd";
    expect_cfg(&c, OAUTH_ERR_BADARG, "consumer_key");
    c = base; c.consumer_key = "ab\r\nX-Evil: 1";
    expect_cfg(&c, OAUTH_ERR_BADARG, "consumer_key");
    c = base; c.access_token = NULL;
    expect_cfg(&c, OAUTH_ERR_MISSING, "access_token");
    c = base; c.access_token = "tok\x01";
    expect_cfg(&c, OAUTH_ERR_BADARG, "access_token");
    c = base; c.access_token = long_field;
    expect_cfg(&c, OAUTH_ERR_TOO_LONG, "access_token");
    c = base; c.realm = "re\"alm";
    expect_cfg(&c, OAUTH_ERR_BADARG, "realm");
    c = base; c.realm = "";
    expect_cfg(&c, OAUTH_ERR_BADARG, "realm");
    c = base; c.realm = long_field;
    expect_cfg(&c, OAUTH_ERR_TOO_LONG, "realm");

    c = base; c.access_token_secret = NULL;
    expect_cfg(&c, OAUTH_ERR_MISSING, "access_token_secret");
    c = base; c.access_token_secret = "";
    expect_cfg(&c, OAUTH_ERR_NOT_BASE64, "access_token_secret");
    c = base; c.access_token_secret = "abc$";
    expect_cfg(&c, OAUTH_ERR_NOT_BASE64, "access_token_secret");
    c = base; c.access_token_secret = "QUJD REVG";
    expect_cfg(&c, OAUTH_ERR_NOT_BASE64, "access_token_secret");
    c = base; c.access_token_secret = "QQ=";
    expect_cfg(&c, OAUTH_ERR_NOT_BASE64, "access_token_secret");
    /* Decodes, but is not a ciphertext for this key. */
    c = base; c.access_token_secret = "QUJDREVG";
    expect_cfg(&c, OAUTH_ERR_DECRYPT, "access_token_secret");
    /* The right ciphertext, the wrong key (the signature key). */
    c = base; c.encryption_key_pem = g_public.sig_pem; c.encryption_key_pem_len = g_public.sig_len;
    expect_cfg(&c, OAUTH_ERR_DECRYPT, "access_token_secret");
    /* The other set's secret was made for the other set's key. */
    c = base; c.access_token_secret = jstr(g_testcons.root, "access_token_secret");
    expect_cfg(&c, OAUTH_ERR_DECRYPT, "access_token_secret");
    /* Unpadded base64 of the right secret is fine. */
    {
        char nopad[2048];
        CHECK_FMT(nopad, sizeof nopad, "%s", base.access_token_secret);
        size_t n = strlen(nopad);
        while (n > 0 && nopad[n - 1] == '=')
            nopad[--n] = '\0';
        c = base; c.access_token_secret = nopad;
        oauth_session *s = new_session(&c);
        oauth_session_free(s);
    }

    c = base; c.dh_prime_hex = NULL;
    expect_cfg(&c, OAUTH_ERR_MISSING, "dh_prime");
    c = base; c.dh_prime_hex = "";
    expect_cfg(&c, OAUTH_ERR_NOT_HEX, "dh_prime");
    c = base; c.dh_prime_hex = "0xffff";
    expect_cfg(&c, OAUTH_ERR_NOT_HEX, "dh_prime");
    c = base; c.dh_prime_hex = "ffffg";
    expect_cfg(&c, OAUTH_ERR_NOT_HEX, "dh_prime");
    c = base; c.dh_prime_hex = "17";
    expect_cfg(&c, OAUTH_ERR_TOO_SMALL, "dh_prime");
    /* RFC 3526 prime's 1024-bit cousin minus its top bit: 1023 bits. */
    {
        char small[300];
        memset(small, 'f', 255);
        small[0] = '7';
        small[255] = '\0';
        c = base; c.dh_prime_hex = small;
        expect_cfg(&c, OAUTH_ERR_TOO_SMALL, "dh_prime");
        char even[300];
        memset(even, '0', 256);
        even[0] = '8';
        even[256] = '\0';
        c = base; c.dh_prime_hex = even; /* 2^1023: 1024 bits, even */
        expect_cfg(&c, OAUTH_ERR_NOT_PRIME, "dh_prime");
        memset(even, 'f', 256); /* 2^1024-1, odd, divisible by 3 */
        c = base; c.dh_prime_hex = even;
        expect_cfg(&c, OAUTH_ERR_NOT_PRIME, "dh_prime");
    }
    {
        char *huge = malloc(20001);
        memset(huge, 'f', 20000);
        huge[20000] = '\0';
        c = base; c.dh_prime_hex = huge;
        expect_cfg(&c, OAUTH_ERR_TOO_LONG, "dh_prime");
        free(huge);
    }
    c = base; c.dh_generator = 1;
    expect_cfg(&c, OAUTH_ERR_TOO_SMALL, "dh_generator");

    c = base; c.encryption_key_pem = NULL;
    expect_cfg(&c, OAUTH_ERR_MISSING, "encryption_key");
    c = base; c.signature_key_pem_len = 0;
    expect_cfg(&c, OAUTH_ERR_MISSING, "signature_key");
    c = base; c.encryption_key_pem = "garbage"; c.encryption_key_pem_len = 7;
    expect_cfg(&c, OAUTH_ERR_NOT_PEM, "encryption_key");
    c = base; c.signature_key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    c.signature_key_pem_len = strlen(c.signature_key_pem);
    expect_cfg(&c, OAUTH_ERR_NOT_PEM, "signature_key");
    /* Truncated key. */
    c = base; c.signature_key_pem_len = base.signature_key_pem_len / 2;
    expect_cfg(&c, OAUTH_ERR_NOT_PEM, "signature_key");

    assert_int_equal(oauth_session_new(NULL, NULL, NULL), OAUTH_ERR_BADARG);
    oauth_session *s = NULL;
    assert_int_equal(oauth_session_new(NULL, &s, NULL), OAUTH_ERR_BADARG);
}

static void expect_key_file(const char *file, int enc_slot, oauth_status want)
{
    char path[512];
    CHECK_FMT(path, sizeof path, "%s/%s", KEYS_DIR, file);
    size_t len = 0;
    char *pem = slurp(path, &len);
    assert_non_null(pem);
    oauth_config c = config_of(&g_public);
    if (enc_slot) {
        c.encryption_key_pem = pem;
        c.encryption_key_pem_len = len;
    } else {
        c.signature_key_pem = pem;
        c.signature_key_pem_len = len;
    }
    expect_cfg(&c, want, enc_slot ? "encryption_key" : "signature_key");
    free(pem);
}

static void test_key_kinds(void **state)
{
    (void)state;
    const char *not_rsa[] = {"ec_p256_pkcs8.pem", "ec_p256_sec1.pem", "ed25519.pem", "rsa_pss.pem"};
    for (size_t i = 0; i < 4; i++) {
        expect_key_file(not_rsa[i], 1, OAUTH_ERR_NOT_RSA);
        expect_key_file(not_rsa[i], 0, OAUTH_ERR_NOT_RSA);
    }
    expect_key_file("public_encryption_pkcs1_encrypted.pem", 1, OAUTH_ERR_NOT_PEM);
    expect_key_file("public_encryption_pkcs8_encrypted.pem", 1, OAUTH_ERR_NOT_PEM);
    /* A public key is not a private key. */
    char path[512];
    size_t len = 0;
    CHECK_FMT(path, sizeof path, "%s/public_signature.pem", PUBLIC_DIR);
    char *pub = slurp(path, &len);
    oauth_config c = config_of(&g_public);
    c.signature_key_pem = pub;
    c.signature_key_pem_len = len;
    expect_cfg(&c, OAUTH_ERR_NOT_PEM, "signature_key");
    free(pub);
}

/* PKCS#1 ("BEGIN RSA PRIVATE KEY") keys give the same output as PKCS#8. */
static void test_pkcs1_keys(void **state)
{
    (void)state;
    size_t el = 0, sl = 0;
    char *enc = slurp(KEYS_DIR "/public_encryption_pkcs1.pem", &el);
    char *sig = slurp(KEYS_DIR "/public_signature_pkcs1.pem", &sl);
    assert_non_null(enc);
    assert_non_null(sig);
    assert_non_null(strstr(enc, "BEGIN RSA PRIVATE KEY"));
    assert_non_null(strstr(g_public.enc_pem, "BEGIN PRIVATE KEY"));
    oauth_config c = config_of(&g_public);
    c.encryption_key_pem = enc;
    c.encryption_key_pem_len = el;
    c.signature_key_pem = sig;
    c.signature_key_pem_len = sl;
    oauth_session *s = new_session(&c);
    json_object *c0 = json_object_array_get_idx(cases_of(&g_public), 0);
    oauth_pins pins = case_pins(c0);
    char *auth = NULL;
    assert_int_equal(oauth_lst_request(s, jstr(g_public.root, "lst_url"), &pins, &auth), OAUTH_OK);
    assert_string_equal(auth, jstr(c0, "lst_authorization"));
    free(auth);
    assert_int_equal(oauth_lst_complete(s, jstr(c0, "diffie_hellman_response"),
                                        jstr(c0, "live_session_token_signature"), 1),
                     OAUTH_OK);
    oauth_session_free(s);
    free(enc);
    free(sig);
}

static void test_realm_default(void **state)
{
    (void)state;
    oauth_pins pins = {"abc", 1, NULL};
    char out[OAUTH_AUTH_MAX];
    const char *lst = "klOaPtBv3diSrxnS2S/IUaC35BU=";
    struct {
        const char *ck, *realm, *want;
    } cases[] = {
        {"TESTCONS", NULL, "OAuth realm=\"test_realm\", "},
        {"TESTCONSX", NULL, "OAuth realm=\"limited_poa\", "},
        {"testcons", NULL, "OAuth realm=\"limited_poa\", "},
        {"TESTCONS", "my realm", "OAuth realm=\"my realm\", "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        oauth_config c = config_of(&g_public);
        c.consumer_key = cases[i].ck;
        c.realm = cases[i].realm;
        oauth_session *s = new_session(&c);
        assert_int_equal(oauth_sign(s, "GET", "https://x/y", &pins, lst, out, sizeof out), OAUTH_OK);
        assert_memory_equal(out, cases[i].want, strlen(cases[i].want));
        oauth_session_free(s);
    }
}

/* ---- signing details ------------------------------------------------------- */

static const char *LST0 = "klOaPtBv3diSrxnS2S/IUaC35BU=";

static void sign_ok(oauth_session *s, const char *method, const char *url, char *out)
{
    oauth_pins pins = {"NONCEnonce123456", 1799860066, NULL};
    oauth_status st = oauth_sign(s, method, url, &pins, LST0, out, OAUTH_AUTH_MAX);
    if (st != OAUTH_OK)
        (void)fprintf(stderr, "sign %s %s: %s\n", method, url, oauth_status_atom(st));
    assert_int_equal(st, OAUTH_OK);
}

/* quote_plus, written independently of codec.c. */
static void test_quote(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    out[0] = '\0';
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char t[4];
        if (isalnum_ascii(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            t[0] = (char)ch;
            t[1] = '\0';
        } else if (ch == ' ') {
            t[0] = '+';
            t[1] = '\0';
        } else {
            CHECK_FMT(t, sizeof t, "%%%02X", ch);
        }
        size_t tlen = strlen(t);
        assert_true(n + tlen < cap);
        memcpy(out + n, t, tlen + 1);
        n += tlen;
    }
}

/* The Authorization ibind would produce for a given (already joined) params
 * string, computed here with OpenSSL directly. */
static void expected_hmac_auth(char *out, size_t cap, const char *method, const char *url,
                               const char *joined_extra)
{
    char params[4096], base[10400], qurl[2048], qparams[8192];
    /* joined_extra holds the sorted "k=v&" pairs that sort before oauth_*. */
    CHECK_FMT(params, sizeof params,
              "%soauth_consumer_key=%s&oauth_nonce=NONCEnonce123456&oauth_signature_method=HMAC-SHA256"
              "&oauth_timestamp=1799860066&oauth_token=%s",
              joined_extra, jstr(g_public.root, "consumer_key"), jstr(g_public.root, "access_token"));
    test_quote(qurl, sizeof qurl, url);
    test_quote(qparams, sizeof qparams, params);
    CHECK_FMT(base, sizeof base, "%s&%s&%s", method, qurl, qparams);
    unsigned char key[32], mac[32];
    int klen = EVP_DecodeBlock(key, (const unsigned char *)LST0, (int)strlen(LST0)) - 1;
    unsigned int mlen = 0;
    assert_non_null(HMAC(EVP_sha256(), key, klen, (const unsigned char *)base, strlen(base), mac, &mlen));
    unsigned char b64[64];
    EVP_EncodeBlock(b64, mac, (int)mlen);
    char qsig[200];
    test_quote(qsig, sizeof qsig, (const char *)b64);
    CHECK_FMT(out, cap,
              "OAuth realm=\"limited_poa\", oauth_consumer_key=\"%s\", oauth_nonce=\"NONCEnonce123456\", "
              "oauth_signature=\"%s\", oauth_signature_method=\"HMAC-SHA256\", "
              "oauth_timestamp=\"1799860066\", oauth_token=\"%s\"",
              jstr(g_public.root, "consumer_key"), qsig, jstr(g_public.root, "access_token"));
}

static void test_query_rules(void **state)
{
    (void)state;
    char a[OAUTH_AUTH_MAX], b[OAUTH_AUTH_MAX], want[OAUTH_AUTH_MAX];
    const char *u = "https://api.ibkr.com/v1/api/x";

    /* params vs none */
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?a=1", a);
    sign_ok(g_pub, "GET", u, b);
    assert_string_not_equal(a, b);
    sign_ok(g_none, "GET", "https://api.ibkr.com/v1/api/x?a=1", a);
    assert_string_equal(a, b); /* none: the query is ignored entirely */
    sign_ok(g_none, "GET", u, a);
    assert_string_equal(a, b);

    /* '+' and %20 are both a space; hex case does not matter. */
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?b=BRK+B&c=%2f", a);
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?b=BRK%20B&c=%2F", b);
    assert_string_equal(a, b);
    expected_hmac_auth(want, sizeof want, "GET", u, "b=BRK B&c=/&");
    assert_string_equal(a, want);

    /* Sorted by key, then value; order in the URL is irrelevant. */
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?b=2&a=1&a=0&ab=&a=10", a);
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?a=10&ab&a=0&b=2&a=1", b);
    assert_string_equal(a, b);
    expected_hmac_auth(want, sizeof want, "GET", u, "a=0&a=1&a=10&ab=&b=2&");
    assert_string_equal(a, want);

    /* Empty pieces ignored, fragment dropped, piece without '=' -> "". */
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?&&a=1&&#frag?b=2", a);
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?a=1", b);
    assert_string_equal(a, b);
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x#frag?a=1", a);
    sign_ok(g_pub, "GET", u, b);
    assert_string_equal(a, b);
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?", a);
    assert_string_equal(a, b);

    /* Keys after oauth_* sort after them; '=' inside a value stays; %zz literal. */
    sign_ok(g_pub, "GET", "https://api.ibkr.com/v1/api/x?zz=a%3Db=c&%C3%A9=%zz", a);
    CHECK_FMT(want, sizeof want, "%s", ""); /* built below */
    {
        char params[4096], base[10400], qurl[2048], qparams[8192];
        CHECK_FMT(params, sizeof params,
                  "oauth_consumer_key=%s&oauth_nonce=NONCEnonce123456&oauth_signature_method=HMAC-SHA256"
                  "&oauth_timestamp=1799860066&oauth_token=%s&zz=a=b=c&\xc3\xa9=%%zz",
                  jstr(g_public.root, "consumer_key"), jstr(g_public.root, "access_token"));
        test_quote(qurl, sizeof qurl, u);
        test_quote(qparams, sizeof qparams, params);
        CHECK_FMT(base, sizeof base, "GET&%s&%s", qurl, qparams);
        unsigned char key[32], mac[32], b64[64];
        int klen = EVP_DecodeBlock(key, (const unsigned char *)LST0, (int)strlen(LST0)) - 1;
        unsigned int mlen = 0;
        assert_non_null(HMAC(EVP_sha256(), key, klen, (const unsigned char *)base, strlen(base), mac, &mlen));
        EVP_EncodeBlock(b64, mac, (int)mlen);
        char qsig[200], sigval[200];
        test_quote(qsig, sizeof qsig, (const char *)b64);
        hdr_value(a, "oauth_signature", sigval, sizeof sigval);
        assert_string_equal(sigval, qsig);
    }

    /* Method is upper-cased; non-letters refused. */
    sign_ok(g_pub, "get", u, a);
    sign_ok(g_pub, "GET", u, b);
    assert_string_equal(a, b);
    sign_ok(g_pub, "POST", u, a);
    assert_string_not_equal(a, b);
    oauth_pins pins = {"n", 1, NULL};
    assert_int_equal(oauth_sign(g_pub, "G T", u, &pins, LST0, a, sizeof a), OAUTH_ERR_BADARG);
    assert_int_equal(oauth_sign(g_pub, "", u, &pins, LST0, a, sizeof a), OAUTH_ERR_BADARG);
    assert_int_equal(oauth_sign(g_pub, "GET", "", &pins, LST0, a, sizeof a), OAUTH_ERR_BADARG);
}

static void test_query_limits(void **state)
{
    (void)state;
    char out[OAUTH_AUTH_MAX];
    size_t cap = 64 + 257 * 8;
    char *url = malloc(cap);
    size_t n = (size_t)snprintf(url, cap, "https://x/y?");
    for (int i = 0; i < 256; i++)
        n += (size_t)snprintf(url + n, cap - n, "k%d=%d&", i, i);
    oauth_pins pins = {"n", 1, NULL};
    assert_int_equal(oauth_sign(g_pub, "GET", url, &pins, LST0, out, sizeof out), OAUTH_OK);
    CHECK_FMT(url + n, cap - n, "one=more");
    assert_int_equal(oauth_sign(g_pub, "GET", url, &pins, LST0, out, sizeof out), OAUTH_ERR_TOO_LONG);
    /* ... but only counted when query params are signed. */
    assert_int_equal(oauth_sign(g_none, "GET", url, &pins, LST0, out, sizeof out), OAUTH_OK);
    free(url);

    /* A long URL grows the reused buffers and still signs. */
    size_t big = 60000;
    url = malloc(big + 1);
    memcpy(url, "https://x/y?v=", 14);
    memset(url + 14, 'a', big - 14);
    url[big] = '\0';
    assert_int_equal(oauth_sign(g_pub, "GET", url, &pins, LST0, out, sizeof out), OAUTH_OK);
    free(url);
    url = malloc(70001);
    memset(url, 'a', 70000);
    url[70000] = '\0';
    assert_int_equal(oauth_sign(g_pub, "GET", url, &pins, LST0, out, sizeof out), OAUTH_ERR_TOO_LONG);
    free(url);
}

static void test_sign_args(void **state)
{
    (void)state;
    char out[OAUTH_AUTH_MAX];
    const char *u = "https://x/y";
    oauth_pins pins = {"n", 1, NULL};
    /* Output too small for the header. */
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, LST0, out, 10), OAUTH_ERR_TOO_LONG);
    assert_string_equal(out, "");
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, LST0, out, sizeof out), OAUTH_OK);
    size_t need = strlen(out) + 1;
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, LST0, out, need - 1), OAUTH_ERR_TOO_LONG);
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, LST0, out, need), OAUTH_OK);
    /* Explicit LST: must be base64, bounded. */
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, "not base64!", out, sizeof out),
                     OAUTH_ERR_NOT_BASE64);
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, "", out, sizeof out), OAUTH_ERR_NOT_BASE64);
    char longlst[100];
    memset(longlst, 'A', 99);
    longlst[99] = '\0';
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, longlst, out, sizeof out),
                     OAUTH_ERR_TOO_LONG);
    /* Bad pins. */
    oauth_pins bad = {"a\"b", 1, NULL};
    assert_int_equal(oauth_sign(g_pub, "GET", u, &bad, LST0, out, sizeof out), OAUTH_ERR_BADARG);
    bad.nonce = "";
    assert_int_equal(oauth_sign(g_pub, "GET", u, &bad, LST0, out, sizeof out), OAUTH_ERR_BADARG);
    char n65[66];
    memset(n65, 'n', 65);
    n65[65] = '\0';
    bad.nonce = n65;
    assert_int_equal(oauth_sign(g_pub, "GET", u, &bad, LST0, out, sizeof out), OAUTH_ERR_BADARG);
    n65[64] = '\0';
    assert_int_equal(oauth_sign(g_pub, "GET", u, &bad, LST0, out, sizeof out), OAUTH_OK);
    /* NULLs. */
    assert_int_equal(oauth_sign(NULL, "GET", u, &pins, LST0, out, sizeof out), OAUTH_ERR_BADARG);
    assert_int_equal(oauth_sign(g_pub, NULL, u, &pins, LST0, out, sizeof out), OAUTH_ERR_BADARG);
    assert_int_equal(oauth_sign(g_pub, "GET", NULL, &pins, LST0, out, sizeof out), OAUTH_ERR_BADARG);
    assert_int_equal(oauth_sign(g_pub, "GET", u, &pins, LST0, NULL, 0), OAUTH_ERR_BADARG);

    /* lst_request pins. */
    char *auth = (char *)1;
    const char *lu = "https://x/oauth/live_session_token";
    oauth_pins dp = {"n", 1, "xyz"};
    assert_int_equal(oauth_lst_request(g_pub, lu, &dp, &auth), OAUTH_ERR_BADARG);
    assert_null(auth);
    dp.dh_random_hex = "0";
    assert_int_equal(oauth_lst_request(g_pub, lu, &dp, &auth), OAUTH_ERR_BADARG);
    dp.dh_random_hex = "";
    assert_int_equal(oauth_lst_request(g_pub, lu, &dp, &auth), OAUTH_ERR_BADARG);
    char h129[130];
    memset(h129, 'a', 129);
    h129[129] = '\0';
    dp.dh_random_hex = h129;
    assert_int_equal(oauth_lst_request(g_pub, lu, &dp, &auth), OAUTH_ERR_BADARG);
    h129[128] = '\0';
    assert_int_equal(oauth_lst_request(g_pub, lu, &dp, &auth), OAUTH_OK);
    free(auth);
    assert_int_equal(oauth_lst_request(g_pub, "", &pins, &auth), OAUTH_ERR_BADARG);
    assert_int_equal(oauth_lst_request(NULL, lu, &pins, &auth), OAUTH_ERR_BADARG);
    assert_int_equal(oauth_lst_request(g_pub, lu, &pins, NULL), OAUTH_ERR_BADARG);
}

static int is_alnum_str(const char *s, size_t want_len)
{
    if (strlen(s) != want_len)
        return 0;
    for (; *s; s++)
        if (!isalnum_ascii((unsigned char)*s))
            return 0;
    return 1;
}

static void test_random_parts(void **state)
{
    (void)state;
    char a[OAUTH_AUTH_MAX], b[OAUTH_AUTH_MAX], n1[80], n2[80], ts[32];
    const char *u = "https://x/y";
    time_t before = time(NULL);
    assert_int_equal(oauth_sign(g_pub, "GET", u, NULL, LST0, a, sizeof a), OAUTH_OK);
    assert_int_equal(oauth_sign(g_pub, "GET", u, NULL, LST0, b, sizeof b), OAUTH_OK);
    time_t after = time(NULL);
    hdr_value(a, "oauth_nonce", n1, sizeof n1);
    hdr_value(b, "oauth_nonce", n2, sizeof n2);
    assert_true(is_alnum_str(n1, 16));
    assert_true(is_alnum_str(n2, 16));
    assert_string_not_equal(n1, n2);
    hdr_value(a, "oauth_timestamp", ts, sizeof ts);
    char *end = NULL;
    long long t = strtoll(ts, &end, 10);
    assert_true(end != ts && *end == '\0');
    assert_true(t >= (long long)before && t <= (long long)after);
    /* Over many nonces every symbol class shows up. */
    int upper = 0, lower = 0, digit = 0;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(oauth_sign(g_pub, "GET", u, NULL, LST0, a, sizeof a), OAUTH_OK);
        hdr_value(a, "oauth_nonce", n1, sizeof n1);
        assert_true(is_alnum_str(n1, 16));
        for (const char *p = n1; *p; p++) {
            upper += *p >= 'A' && *p <= 'Z';
            lower += *p >= 'a' && *p <= 'z';
            digit += *p >= '0' && *p <= '9';
        }
    }
    assert_true(upper > 0 && lower > 0 && digit > 0);

    char *l1 = NULL, *l2 = NULL;
    const char *lu = "https://x/oauth/live_session_token";
    assert_int_equal(oauth_lst_request(g_pub, lu, NULL, &l1), OAUTH_OK);
    oauth_pins pins = OAUTH_PINS_NONE;
    assert_int_equal(oauth_lst_request(g_pub, lu, &pins, &l2), OAUTH_OK);
    assert_string_not_equal(l1, l2);
    char c1[1100], c2[1100];
    hdr_value(l1, "diffie_hellman_challenge", c1, sizeof c1);
    hdr_value(l2, "diffie_hellman_challenge", c2, sizeof c2);
    assert_string_not_equal(c1, c2);
    assert_true(c1[0] != '0' && c2[0] != '0');
    hdr_value(l1, "oauth_nonce", n1, sizeof n1);
    assert_true(is_alnum_str(n1, 16));
    free(l1);
    free(l2);
}

/* ---- simulated server: random handshakes ----------------------------------- */

/* Java BigInteger.toByteArray for a positive value, written differently
 * from oauth.c: a 0x00 goes in front when the first byte has its top bit.
 * buf needs BN_num_bytes(k) + 1 bytes; returns where the result starts. */
static const unsigned char *java_to_byte_array(const BIGNUM *k, unsigned char *buf, size_t *len)
{
    int n = BN_bn2bin(k, buf + 1);
    assert_true(n > 0);
    if (buf[1] & 0x80) {
        buf[0] = 0;
        *len = (size_t)n + 1;
        return buf;
    }
    *len = (size_t)n;
    return buf + 1;
}

/* Verifies the RSA-SHA256 signature in an LST Authorization over the base
 * string a server would rebuild. */
static void verify_lst_auth(const char *auth, EVP_PKEY *pub, const char *prepend,
                            const char *url)
{
    char chal[1100], nonce[80], ts[32], sigq[1024], sig_b64[1024], params[4096];
    char qurl[1024], qparams[8192], base[12288];
    hdr_value(auth, "diffie_hellman_challenge", chal, sizeof chal);
    hdr_value(auth, "oauth_nonce", nonce, sizeof nonce);
    hdr_value(auth, "oauth_timestamp", ts, sizeof ts);
    hdr_value(auth, "oauth_signature", sigq, sizeof sigq);
    CHECK_FMT(params, sizeof params,
              "diffie_hellman_challenge=%s&oauth_consumer_key=%s&oauth_nonce=%s"
              "&oauth_signature_method=RSA-SHA256&oauth_timestamp=%s&oauth_token=%s",
              chal, jstr(g_public.root, "consumer_key"), nonce, ts, jstr(g_public.root, "access_token"));
    test_quote(qurl, sizeof qurl, url);
    test_quote(qparams, sizeof qparams, params);
    CHECK_FMT(base, sizeof base, "%sPOST&%s&%s", prepend, qurl, qparams);
    /* Undo quote_plus on the signature (only %2B %2F %3D occur). */
    size_t o = 0;
    for (const char *p = sigq; *p; p++) {
        if (*p == '%') {
            sig_b64[o++] = (char)hex_byte(p + 1);
            p += 2;
        } else {
            sig_b64[o++] = *p;
        }
    }
    sig_b64[o] = '\0';
    unsigned char sig[1024];
    int slen = EVP_DecodeBlock(sig, (const unsigned char *)sig_b64, (int)o);
    assert_true(slen > 0);
    slen -= (int)(o > 0 && sig_b64[o - 1] == '=') + (int)(o > 1 && sig_b64[o - 2] == '=');
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub), 1);
    assert_int_equal(EVP_DigestVerify(md, sig, (size_t)slen, (const unsigned char *)base, strlen(base)), 1);
    EVP_MD_CTX_free(md);
}

static void test_random_handshakes(void **state)
{
    (void)state;
    oauth_session *s = g_pub;
    const char *url = jstr(g_public.root, "lst_url");
    const char *ck = jstr(g_public.root, "consumer_key");
    json_object *c0 = json_object_array_get_idx(cases_of(&g_public), 0);
    const char *prepend_hex = jstr(c0, "prepend");
    unsigned char prepend[512];
    size_t plen = strlen(prepend_hex) / 2;
    for (size_t i = 0; i < plen; i++) {
        prepend[i] = hex_byte(prepend_hex + 2 * i);
    }
    char path[512];
    CHECK_FMT(path, sizeof path, "%s/public_signature.pem", PUBLIC_DIR);
    size_t publen = 0;
    char *pubpem = slurp(path, &publen);
    BIO *bio = BIO_new_mem_buf(pubpem, (int)publen);
    EVP_PKEY *pub = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    free(pubpem);
    assert_non_null(pub);

    BN_CTX *bn = BN_CTX_new();
    BIGNUM *p = NULL, *g = BN_new(), *A = NULL, *b = BN_new(), *B = BN_new(), *K = BN_new();
    assert_true(BN_hex2bn(&p, jstr(g_public.root, "dh_prime")) > 0);
    assert_true(BN_set_word(g, 2));
    int with_zero = 0, without_zero = 0;
    for (int i = 0; i < 200; i++) {
        char *auth = NULL, chal[1100];
        assert_int_equal(oauth_lst_request(s, url, NULL, &auth), OAUTH_OK);
        if (i < 20)
            verify_lst_auth(auth, pub, prepend_hex, url);
        hdr_value(auth, "diffie_hellman_challenge", chal, sizeof chal);
        free(auth);
        assert_true(BN_hex2bn(&A, chal) > 0);

        assert_true(BN_rand(b, 256, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY));
        assert_true(BN_mod_exp(B, g, b, p, bn));
        assert_true(BN_mod_exp(K, A, b, p, bn));
        unsigned char kb[600], lst[20], check[20];
        size_t klen = 0;
        const unsigned char *kp = java_to_byte_array(K, kb, &klen);
        if (klen > (size_t)BN_num_bytes(K))
            with_zero++;
        else
            without_zero++;
        unsigned int len = 0;
        assert_non_null(HMAC(EVP_sha1(), kp, (int)klen, prepend, plen, lst, &len));
        assert_non_null(HMAC(EVP_sha1(), lst, 20, (const unsigned char *)ck, strlen(ck), check, &len));
        char sighex[41];
        for (size_t j = 0; j < 20; j++)
            CHECK_FMT(sighex + 2 * j, 3, "%02x", check[j]);
        /* BN_bn2hex is upper-case and may keep a leading zero nibble. */
        char *bhex = BN_bn2hex(B);
        assert_int_equal(oauth_lst_complete(s, bhex, sighex, i), OAUTH_OK);
        OPENSSL_free(bhex);

        unsigned char want[64];
        EVP_EncodeBlock(want, lst, 20);
        char got[OAUTH_LST_B64_MAX];
        int64_t exp = -1;
        assert_int_equal(oauth_live_session_token(s, got, sizeof got, &exp), OAUTH_OK);
        assert_string_equal(got, (const char *)want);
        assert_int_equal(exp, i);
    }
    assert_true(with_zero > 0);
    assert_true(without_zero > 0);
    BN_free(p);
    BN_free(g);
    BN_free(A);
    BN_free(b);
    BN_free(B);
    BN_free(K);
    BN_CTX_free(bn);
    EVP_PKEY_free(pub);
}

/* ---- misc ------------------------------------------------------------------ */

static void test_status_atoms(void **state)
{
    (void)state;
    const char *want[] = {"ok", "nomem", "missing", "badarg", "too_long", "not_pem", "not_rsa",
                          "not_base64", "decrypt_failed", "not_hex", "not_prime", "too_small",
                          "not_authenticated", "no_pending_handshake", "bad_dh_response",
                          "lst_signature_mismatch", "crypto_error"};
    assert_int_equal(sizeof want / sizeof want[0], OAUTH_ERR_CRYPTO + 1);
    for (int i = 0; i <= OAUTH_ERR_CRYPTO; i++)
        assert_string_equal(oauth_status_atom((oauth_status)i), want[i]);
}

/* A different generator changes the challenge (and g >= 2 works). */
static void test_generator(void **state)
{
    (void)state;
    oauth_config c = config_of(&g_public);
    c.dh_generator = 5;
    oauth_session *s = new_session(&c);
    json_object *c0 = json_object_array_get_idx(cases_of(&g_public), 0);
    oauth_pins pins = case_pins(c0);
    char *auth = NULL, chal[1100];
    assert_int_equal(oauth_lst_request(s, jstr(g_public.root, "lst_url"), &pins, &auth), OAUTH_OK);
    hdr_value(auth, "diffie_hellman_challenge", chal, sizeof chal);
    assert_string_not_equal(chal, jstr(c0, "dh_challenge"));
    free(auth);
    oauth_session_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_atoms),
        cmocka_unit_test(test_prepend_is_decrypted_secret),
        cmocka_unit_test(test_vectors_public),
        cmocka_unit_test(test_vectors_testcons),
        cmocka_unit_test(test_vectors_defaults_explicit),
        cmocka_unit_test(test_lst_mismatch_keeps_pending),
        cmocka_unit_test(test_bad_dh_response),
        cmocka_unit_test(test_no_pending_and_not_authenticated),
        cmocka_unit_test(test_pending_replaced),
        cmocka_unit_test(test_config_fields),
        cmocka_unit_test(test_key_kinds),
        cmocka_unit_test(test_pkcs1_keys),
        cmocka_unit_test(test_realm_default),
        cmocka_unit_test(test_generator),
        cmocka_unit_test(test_query_rules),
        cmocka_unit_test(test_query_limits),
        cmocka_unit_test(test_sign_args),
        cmocka_unit_test(test_random_parts),
        cmocka_unit_test(test_random_handshakes),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
