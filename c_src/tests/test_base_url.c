/*
 * test_base_url.c — init's libcurl-free base_url check: what it accepts and
 * the near misses it refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base_url.h"

static void test_accepts(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "https://api.ibkr.com/v1/api",
        "https://api.ibkr.com",
        "http://127.0.0.1:8080",
        "https://localhost:8443/v1/api",
        "HTTPS://Api.IBKR.com/v1",
        "https://[::1]:443/x",
        "https://[2001:db8::7]/",
        "https://my_host-1.example:1/a/b%2Fc/~u/-._!$&'()*+,;=:@",
        "https://h:65535/",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        print_message("%s\n", ok[i]);
        assert_int_equal(base_url_check(ok[i]), 0);
    }
}

static void test_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "api.ibkr.com", "api.ibkr.com/v1/api", "ftp://a/", "https://", "https:///x",
        "https:/a/", "httpss://a/", "https//a/", "https://a/?q=1", "https://a?q=1",
        "https://a/#f", "https://u:p@a/", "https://u@a/", "https://a b/", "https://a/b c",
        "https://a/\t", "https://a/\xff", "https://a\xff/", "https://a:/", "https://a:0/",
        "https://a:65536/", "https://a:123456/", "https://a:-1/", "https://a:8x/", "https://a/%",
        "https://a/%2", "https://a/%zz", "https://[]/", "https://[::1/", "https://[g::1]/",
        "https://a/\"", "https://a/<", "https://a/\\", "https://a\\b/", "https://a/\r\n",
        "https://a/[x]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("%s\n", bad[i]);
        assert_int_equal(base_url_check(bad[i]), -1);
    }
}

static void test_host_length(void **state)
{
    (void)state;
    char url[8 + 254 + 1] = "https://";
    for (size_t i = 8; i < 8 + 253; i++)
        url[i] = 'a';
    url[8 + 253] = '\0';
    assert_int_equal(base_url_check(url), 0);
    url[8 + 253] = 'a';
    url[8 + 254] = '\0';
    assert_int_equal(base_url_check(url), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_refuses),
        cmocka_unit_test(test_host_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
