/*
 * test_lst_json.c — the LST endpoint's JSON answer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lst_json.h"

static lst_json_status parse(const char *s, lst_answer *a)
{
    return lst_json_parse(s, strlen(s), a);
}

static void test_good(void **state)
{
    (void)state;
    lst_answer a;
    const char *js = "{\"diffie_hellman_response\": \"1ae3f2\", "
                     "\"live_session_token_signature\": \"862b11\", "
                     "\"live_session_token_expiration\": 1799999999999}\n";
    assert_int_equal(parse(js, &a), LST_JSON_OK);
    assert_string_equal(a.dh_response, "1ae3f2");
    assert_string_equal(a.signature, "862b11");
    assert_int_equal(a.expires_ms, 1799999999999LL);
    lst_answer_free(&a);
    lst_answer_free(&a); /* idempotent */
    assert_null(a.dh_response);
}

static void test_extra_fields_and_order(void **state)
{
    (void)state;
    lst_answer a;
    const char *js = "{\"live_session_token_expiration\": 5, \"x\": [1, {\"y\": null}],"
                     " \"live_session_token_signature\": \"ab\", \"diffie_hellman_response\": \"cd\"}";
    assert_int_equal(parse(js, &a), LST_JSON_OK);
    assert_string_equal(a.dh_response, "cd");
    assert_string_equal(a.signature, "ab");
    assert_int_equal(a.expires_ms, 5);
    lst_answer_free(&a);
}

static void test_numeric_string_expiration(void **state)
{
    (void)state;
    lst_answer a;
    assert_int_equal(parse("{\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":\"bb\","
                           "\"live_session_token_expiration\":\"1700000000123\"}", &a),
                     LST_JSON_OK);
    assert_int_equal(a.expires_ms, 1700000000123LL);
    lst_answer_free(&a);
    /* An integral double too. */
    assert_int_equal(parse("{\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":\"bb\","
                           "\"live_session_token_expiration\":1.7e12}", &a),
                     LST_JSON_OK);
    assert_int_equal(a.expires_ms, 1700000000000LL);
    lst_answer_free(&a);
}

static void expect_status(const char *const *bad, size_t n, lst_json_status want)
{
    lst_answer a;
    for (size_t i = 0; i < n; i++) {
        a.dh_response = (char *)"poison";
        a.signature = (char *)"poison";
        assert_int_equal(parse(bad[i], &a), want);
        assert_null(a.dh_response); /* nothing to free */
        assert_null(a.signature);
    }
}

#define DH_SIG "\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":\"bb\","

static void test_missing_or_wrong_type(void **state)
{
    (void)state;
    const char *bad[] = {
        "{\"live_session_token_signature\":\"bb\",\"live_session_token_expiration\":1}",
        "{\"diffie_hellman_response\":\"aa\",\"live_session_token_expiration\":1}",
        "{\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":\"bb\"}",
        "{\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":null,\"live_session_token_expiration\":1}",
        "{\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":\"\",\"live_session_token_expiration\":1}",
        "[1, 2, 3]",
        "\"just a string\"",
        "{}",
    };
    expect_status(bad, sizeof bad / sizeof bad[0], LST_JSON_MISSING_FIELD);
    assert_string_equal(lst_json_status_atom(LST_JSON_MISSING_FIELD), "missing_field");
}

/* A DH response that is there but unusable is named as such. */
static void test_bad_dh_response(void **state)
{
    (void)state;
    const char *bad[] = {
        "{\"diffie_hellman_response\":\"\",\"live_session_token_signature\":\"bb\",\"live_session_token_expiration\":1}",
        "{\"diffie_hellman_response\":5,\"live_session_token_signature\":\"bb\",\"live_session_token_expiration\":1}",
        "{\"diffie_hellman_response\":null,\"live_session_token_signature\":\"bb\",\"live_session_token_expiration\":1}",
        "{\"diffie_hellman_response\":[\"aa\"],\"live_session_token_signature\":\"bb\",\"live_session_token_expiration\":1}",
        "{\"diffie_hellman_response\":\"a\\u0000a\",\"live_session_token_signature\":\"bb\",\"live_session_token_expiration\":1}",
    };
    expect_status(bad, sizeof bad / sizeof bad[0], LST_JSON_BAD_DH);
    assert_string_equal(lst_json_status_atom(LST_JSON_BAD_DH), "bad_dh_response");
}

/* An expiration that is there but not an epoch in ms (negative, beyond
 * int64, fractional, not digits, not a number). */
static void test_bad_expiration(void **state)
{
    (void)state;
    const char *bad[] = {
        "{" DH_SIG "\"live_session_token_expiration\":\"12x\"}",
        "{" DH_SIG "\"live_session_token_expiration\":\"-1\"}",
        "{" DH_SIG "\"live_session_token_expiration\":\"\"}",
        "{" DH_SIG "\"live_session_token_expiration\":\"soon\"}",
        "{" DH_SIG "\"live_session_token_expiration\":\"99999999999999999999\"}",
        "{" DH_SIG "\"live_session_token_expiration\":-1}",
        "{" DH_SIG "\"live_session_token_expiration\":-1700000000000}",
        "{" DH_SIG "\"live_session_token_expiration\":1.5}",
        "{" DH_SIG "\"live_session_token_expiration\":9223372036854775808}",
        "{" DH_SIG "\"live_session_token_expiration\":99999999999999999999}",
        "{" DH_SIG "\"live_session_token_expiration\":1e300}",
        "{" DH_SIG "\"live_session_token_expiration\":true}",
        "{" DH_SIG "\"live_session_token_expiration\":null}",
        "{" DH_SIG "\"live_session_token_expiration\":{}}",
    };
    expect_status(bad, sizeof bad / sizeof bad[0], LST_JSON_BAD_EXPIRATION);
    assert_string_equal(lst_json_status_atom(LST_JSON_BAD_EXPIRATION), "lst_expiration");
    /* The largest int64 is still an epoch. */
    lst_answer a;
    assert_int_equal(parse("{" DH_SIG "\"live_session_token_expiration\":9223372036854775807}", &a),
                     LST_JSON_OK);
    assert_int_equal(a.expires_ms, INT64_MAX);
    lst_answer_free(&a);
}

static void test_not_json(void **state)
{
    (void)state;
    lst_answer a;
    const char *bad[] = {
        "", "   ", "<html>502 Bad Gateway</html>", "{", "{\"a\":",
        "{\"diffie_hellman_response\":\"aa\",}",
        ("{\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":\"bb\","
         "\"live_session_token_expiration\":1} trailing"),
        "{} {}", "nul",
    };
    /* (json-c's strict mode still takes {'a': 1} and NaN: such an object
     * then lacks the fields, which is missing_field.) */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(parse(bad[i], &a), LST_JSON_NOT_JSON);
    /* A NUL byte inside the input. */
    assert_int_equal(lst_json_parse("{\"a\":1}\0{}", 10, &a), LST_JSON_NOT_JSON);
    assert_int_equal(lst_json_parse(NULL, 0, &a), LST_JSON_NOT_JSON);
    assert_string_equal(lst_json_status_atom(LST_JSON_NOT_JSON), "not_json");
    assert_string_equal(lst_json_status_atom(LST_JSON_MISSING_FIELD), "missing_field");
}

static void test_huge_and_deep(void **state)
{
    (void)state;
    lst_answer a;
    /* Over the cap: refused without parsing. */
    size_t n = (size_t)8 * 1024 * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    assert_int_equal(lst_json_parse(big, n, &a), LST_JSON_NOT_JSON);
    /* Under the cap but nested far too deep. */
    size_t d = 20000;
    memset(big, '[', d);
    memset(big + d, ']', d);
    assert_int_equal(lst_json_parse(big, 2 * d, &a), LST_JSON_NOT_JSON);
    /* A valid answer padded up to exactly the cap is still accepted. */
    const char *js = "{\"diffie_hellman_response\":\"aa\",\"live_session_token_signature\":\"bb\","
                     "\"live_session_token_expiration\":1}";
    size_t jl = strlen(js);
    memset(big, ' ', LST_JSON_MAX);
    memcpy(big, js, jl + 1);
    big[jl] = ' ';
    assert_int_equal(lst_json_parse(big, LST_JSON_MAX, &a), LST_JSON_OK);
    lst_answer_free(&a);
    assert_int_equal(lst_json_parse(big, LST_JSON_MAX + 1, &a), LST_JSON_NOT_JSON);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_extra_fields_and_order),
        cmocka_unit_test(test_numeric_string_expiration),
        cmocka_unit_test(test_missing_or_wrong_type),
        cmocka_unit_test(test_bad_dh_response),
        cmocka_unit_test(test_bad_expiration),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_huge_and_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
