/*
 * test_curl_watch.c — the socket and timer bookkeeping behind libcurl's
 * multi callbacks: what poll is asked to watch, the optional socket limit,
 * removal, and the poll timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "curl_watch.h"

static void test_sockets(void **state)
{
    (void)state;
    curl_watch w;
    curl_watch_init(&w, 0);
    struct pollfd p[4];
    assert_int_equal(curl_watch_fill(&w, p, 4), 0);
    assert_int_equal(curl_watch_socket(&w, 7, CURL_POLL_OUT), 0);
    assert_int_equal(curl_watch_socket(&w, 9, CURL_POLL_INOUT), 0);
    /* A change of interest updates the socket, not a second entry. */
    assert_int_equal(curl_watch_socket(&w, 7, CURL_POLL_IN), 0);
    assert_int_equal(w.n, 2);
    memset(p, 0xff, sizeof p);
    assert_int_equal(curl_watch_fill(&w, p, 4), 2);
    assert_int_equal(p[0].fd, 7);
    assert_int_equal(p[0].events, POLLIN);
    assert_int_equal(p[0].revents, 0);
    assert_int_equal(p[1].fd, 9);
    assert_int_equal(p[1].events, POLLIN | POLLOUT);
    /* fill stops at the room given. */
    assert_int_equal(curl_watch_fill(&w, p, 1), 1);
    assert_int_equal(curl_watch_socket(&w, 7, CURL_POLL_REMOVE), 0);
    assert_int_equal(curl_watch_fill(&w, p, 4), 1);
    assert_int_equal(p[0].fd, 9);
    /* Removing a socket never watched changes nothing. */
    assert_int_equal(curl_watch_socket(&w, 42, CURL_POLL_REMOVE), 0);
    assert_int_equal(w.n, 1);
    curl_watch_free(&w);
    assert_int_equal(w.n, 0);
    assert_null(w.socks);
}

static void test_grows(void **state)
{
    (void)state;
    curl_watch w;
    curl_watch_init(&w, 0);
    for (int s = 0; s < 100; s++)
        assert_int_equal(curl_watch_socket(&w, s, CURL_POLL_IN), 0);
    assert_int_equal(w.n, 100);
    assert_int_equal(w.socks[99].fd, 99);
    curl_watch_free(&w);
}

static void test_limit(void **state)
{
    (void)state;
    curl_watch w;
    curl_watch_init(&w, 2);
    assert_int_equal(curl_watch_socket(&w, 3, CURL_POLL_OUT), 0);
    assert_int_equal(curl_watch_socket(&w, 4, CURL_POLL_OUT), 0);
    assert_int_equal(curl_watch_socket(&w, 5, CURL_POLL_OUT), -1);
    /* A watched socket can still change interest at the limit. */
    assert_int_equal(curl_watch_socket(&w, 4, CURL_POLL_IN), 0);
    assert_int_equal(w.n, 2);
    assert_int_equal(w.socks[1].events, POLLIN);
    /* free keeps the limit. */
    curl_watch_free(&w);
    assert_int_equal(w.max, 2);
    curl_watch_free(&w);
}

static void test_timeout(void **state)
{
    (void)state;
    curl_watch w;
    curl_watch_init(&w, 0);
    assert_int_equal(curl_watch_timeout(&w), -1);
    curl_watch_timer(&w, 0);
    assert_int_equal(curl_watch_timeout(&w), 0);
    curl_watch_timer(&w, 3600 * 1000L);
    assert_int_equal(curl_watch_timeout(&w), 60000); /* capped */
    curl_watch_timer(&w, 5000);
    int t = curl_watch_timeout(&w);
    assert_true(t > 0 && t <= 5000);
    curl_watch_timer(&w, -1);
    assert_int_equal(curl_watch_timeout(&w), -1);
    curl_watch_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sockets),
        cmocka_unit_test(test_grows),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
