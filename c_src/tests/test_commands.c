/*
 * test_commands.c — the command table's rows as PROTOCOL.md describes
 * them, and the timeout argument every HTTP command shares.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <ei.h>

#include "commands.h"
#include "http.h"

static void test_rows(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int arity, needs_session, id0;
    } want[] = {
        {"init", 1, 0, 0},         {"lst_request", 1, 1, 0}, {"lst_complete", 1, 1, 0},
        {"live_session_token", 0, 1, 0}, {"sign", 3, 1, 0}, {"authenticate", 1, 1, 0},
        {"http", 1, 1, 0},         {"cancel", 1, 0, 1},      {"echo", 1, 0, 0},
        {"stats", 0, 1, 0},        {"ws_open", 1, 1, 0},     {"ws_send", 2, 1, 0},
        {"ws_close", 1, 1, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const command *c = command_find(want[i].name);
        print_message("%s\n", want[i].name);
        assert_non_null(c);
        assert_string_equal(c->name, want[i].name);
        assert_int_equal(c->arity, want[i].arity);
        assert_int_equal(c->needs_session, want[i].needs_session);
        assert_int_equal(c->id0, want[i].id0);
        assert_non_null(c->fn);
    }
    assert_null(command_find(""));
    assert_null(command_find("nope"));
    assert_null(command_find("Sign"));
    assert_null(command_find("signs"));
}

/* The timeout of `http` and `authenticate`: ms, 0 (already expired), or
 * infinity; anything else names the field. */
static const char *timeout_of(ei_x_buff *x, long *ms)
{
    frame f = {x->buff, (size_t)x->index};
    return get_timeout(&f, 1, ms); /* after the version byte */
}

static void test_timeout(void **state)
{
    (void)state;
    long ms = 1;
    frame none = {"", 0};
    assert_null(get_timeout(&none, -1, &ms));
    assert_int_equal(ms, HTTP_TIMEOUT_DEFAULT);

    static const long long ok[] = {0, 1, 10000, 0x7fffffffLL};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ei_x_buff x;
        assert_int_equal(ei_x_new_with_version(&x), 0);
        assert_int_equal(ei_x_encode_longlong(&x, ok[i]), 0);
        assert_null(timeout_of(&x, &ms));
        assert_int_equal(ms, ok[i]);
        ei_x_free(&x);
    }
    ei_x_buff x;
    assert_int_equal(ei_x_new_with_version(&x), 0);
    assert_int_equal(ei_x_encode_atom(&x, "infinity"), 0);
    assert_null(timeout_of(&x, &ms));
    assert_int_equal(ms, HTTP_TIMEOUT_NONE);
    ei_x_free(&x);

    static const long long bad[] = {-1, 0x80000000LL, -0x7fffffffLL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ei_x_new_with_version(&x), 0);
        assert_int_equal(ei_x_encode_longlong(&x, bad[i]), 0);
        assert_string_equal(timeout_of(&x, &ms), "timeout");
        ei_x_free(&x);
    }
    static const char *const atoms[] = {"forever", "infinit", "infinityy", "undefined"};
    for (size_t i = 0; i < sizeof atoms / sizeof atoms[0]; i++) {
        assert_int_equal(ei_x_new_with_version(&x), 0);
        assert_int_equal(ei_x_encode_atom(&x, atoms[i]), 0);
        assert_string_equal(timeout_of(&x, &ms), "timeout");
        ei_x_free(&x);
    }
    assert_int_equal(ei_x_new_with_version(&x), 0);
    assert_int_equal(ei_x_encode_double(&x, 1.5), 0);
    assert_string_equal(timeout_of(&x, &ms), "timeout");
    ei_x_free(&x);
    assert_int_equal(ei_x_new_with_version(&x), 0);
    assert_int_equal(ei_x_encode_binary(&x, "0", 1), 0);
    assert_string_equal(timeout_of(&x, &ms), "timeout");
    ei_x_free(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
