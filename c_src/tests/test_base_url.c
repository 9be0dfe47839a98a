/*
 * test_base_url.c — init's libcurl-free base_url check: what it accepts and
 * the near misses it refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
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

static void test_abs_url(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "https://api.ibkr.com/v1/api/portfolio/accounts?b=2&a=1+x",
        "HTTP://h", "https://h:8443", "https://h?x=1", "https://h#f", "https://[::1]/p",
        "https://h/a b", "https://h/\xc3\xa9", "https://h/\xf0\x9f\x98\x80",
        "https://h/\xef\xbf\xbf", "https://h/%zz",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        print_message("%s\n", ok[i]);
        assert_int_equal(abs_url_check(ok[i], strlen(ok[i])), 0);
    }
    static const char *const bad[] = {
        "", "/portfolio/accounts", "portfolio", "ftp://h/", "file:///etc/passwd",
        "https://", "https:///p", "https://h:0/", "https://u@h/", "https://h\\x",
        "https://h/\x01", "https://h/\r\n", "https://h/\x7f",
        "https://h/\xff", "https://h/\xc3", "https://h/\xc0\xaf", "https://h/\xe0\x80\xaf",
        "https://h/\xed\xa0\x80", "https://h/\xf4\x90\x80\x80", "https://h/\xf5\x80\x80\x80",
        "https://h/\x80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("%s\n", bad[i]);
        assert_int_equal(abs_url_check(bad[i], strlen(bad[i])), -1);
    }
    /* A NUL inside the given length. */
    assert_int_equal(abs_url_check("https://h/\0x", 12), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_refuses),
        cmocka_unit_test(test_host_length),
        cmocka_unit_test(test_abs_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
