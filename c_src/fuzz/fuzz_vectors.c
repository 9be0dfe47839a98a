/*
 * fuzz_vectors.c — see fuzz_vectors.h.
 */
#include "fuzz_vectors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

__attribute__((noreturn)) static void die(const char *what, const char *detail)
{
    (void)fprintf(stderr, "fuzz_vectors: %s: %s (run from the repository root or set "
                          "IBKR_FUZZ_DATA)\n", what, detail);
    exit(2);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p == NULL)
        die("out of memory", name);
    (void)snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die("cannot open", path);
    const size_t cap = (size_t)64 * 1024;
    char *buf = malloc(cap + 1);
    if (buf == NULL)
        die("out of memory", path);
    size_t n = fread(buf, 1, cap, f);
    (void)fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static char *str(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        die("vectors.json lacks", key);
    char *s = strdup(json_object_get_string(v));
    if (s == NULL)
        die("out of memory", key);
    return s;
}

void fuzz_vectors_load(fuzz_vectors *v)
{
    const char *dir = getenv("IBKR_FUZZ_DATA");
    if (dir == NULL || *dir == '\0')
        dir = "test/data/vectors_testcons";
    char *path = join(dir, "vectors.json");
    struct json_object *root = json_object_from_file(path);
    if (root == NULL)
        die("cannot parse", path);
    free(path);

    v->consumer_key = str(root, "consumer_key");
    v->access_token = str(root, "access_token");
    v->access_token_secret = str(root, "access_token_secret");
    v->realm = str(root, "realm");
    v->dh_prime = str(root, "dh_prime");
    v->base_url = str(root, "base_url");
    char *name = str(root, "encryption_key_file");
    v->enc_path = join(dir, name);
    free(name);
    name = str(root, "signature_key_file");
    v->sig_path = join(dir, name);
    free(name);
    v->enc_pem = slurp(v->enc_path, &v->enc_len);
    v->sig_pem = slurp(v->sig_path, &v->sig_len);

    struct json_object *cases, *c0;
    if (!json_object_object_get_ex(root, "cases", &cases) ||
        (c0 = json_object_array_get_idx(cases, 0)) == NULL)
        die("vectors.json lacks", "cases[0]");
    v->nonce = str(c0, "nonce");
    v->dh_random = str(c0, "dh_random");
    v->dh_response = str(c0, "diffie_hellman_response");
    v->lst_signature = str(c0, "live_session_token_signature");
    struct json_object *ts;
    if (!json_object_object_get_ex(c0, "timestamp", &ts))
        die("vectors.json lacks", "cases[0].timestamp");
    v->timestamp = json_object_get_int64(ts); /* a number or a string of digits */
    json_object_put(root);
}
