/*
 * test_curl_lazy.c — loading libcurl on demand: the failure paths leave
 * nothing loaded and say why; a successful load fills the whole table with
 * working functions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "curl_lazy.h"

static void test_missing_library(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(curl_lazy_load_from("libibkr_no_such_library.so.0", &why), -1);
    assert_non_null(why);
    assert_non_null(strstr(why, "cannot load libcurl"));
}

static void test_not_libcurl(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(curl_lazy_load_from("libc.so.6", &why), -1);
    assert_non_null(why);
    assert_non_null(strstr(why, "libcurl lacks a function"));
    assert_non_null(strstr(why, "curl_global_init"));
}

static void test_load(void **state)
{
    (void)state;
    const char *why = "untouched";
    assert_int_equal(curl_lazy_load(&why), 0);
    assert_string_equal(why, "untouched");
    /* Every slot filled. */
    const unsigned char *p = (const unsigned char *)&curl_lazy;
    static const unsigned char zero[sizeof(void *)];
    for (size_t off = 0; off + sizeof(void *) <= sizeof curl_lazy; off += sizeof(void *))
        assert_memory_not_equal(p + off, zero, sizeof zero);
    /* And they are libcurl's functions. */
    const curl_version_info_data *vi = curl_lazy.version_info(CURLVERSION_NOW);
    assert_non_null(vi);
    assert_true(vi->version_num >= CURL_LAZY_MIN_VERSION);
    CURL *e = curl_lazy.easy_init();
    assert_non_null(e);
    assert_int_equal(curl_lazy.easy_setopt(e, CURLOPT_TIMEOUT_MS, 5L), CURLE_OK);
    curl_lazy.easy_cleanup(e);
    assert_string_equal(curl_lazy.easy_strerror(CURLE_OK), "No error");
    /* Loaded once; the second call is free. */
    assert_int_equal(curl_lazy_load(&why), 0);
    curl_lazy_cleanup();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_library),
        cmocka_unit_test(test_not_libcurl),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
