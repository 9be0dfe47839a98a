/*
 * test_ws_handshake.c — the websocket opening handshake's pure parts: the
 * target from base_url, key and Accept (RFC 6455's own example), the
 * request bytes, the cookie and User-Agent checks, and the verdict on the
 * server's answer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws_handshake.h"

static void test_rfc6455_example(void **state)
{
    (void)state;
    /* RFC 6455 section 1.3: the nonce "the sample nonce". */
    char key[WS_KEY_LEN + 1], accept[WS_ACCEPT_LEN + 1];
    ws_key_encode((const uint8_t *)"the sample nonce", key);
    assert_string_equal(key, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_int_equal(ws_accept_for(key, accept), 0);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(ws_accept_for("short", accept), -1);
}

static void check_target(const char *base, const char *token, const char *url, const char *host,
                         const char *target)
{
    ws_target t;
    print_message("%s\n", base);
    assert_int_equal(ws_target_init(&t, base, token), 0);
    assert_string_equal(t.connect_url, url);
    assert_string_equal(t.host, host);
    assert_string_equal(t.target, target);
    ws_target_free(&t);
    assert_null(t.target);
}

static void test_target(void **state)
{
    (void)state;
    check_target("https://api.ibkr.com/v1/api", "abc123", "https://api.ibkr.com/", "api.ibkr.com",
                 "/v1/api/ws?oauth_token=abc123");
    check_target("http://127.0.0.1:8080", "t", "http://127.0.0.1:8080/", "127.0.0.1:8080",
                 "/ws?oauth_token=t");
    check_target("HTTPS://[::1]:8443/a/b", "t", "https://[::1]:8443/", "[::1]:8443",
                 "/a/b/ws?oauth_token=t");
    /* The token is percent-encoded into the query. */
    check_target("https://h/p", "a+b/c=d&e f", "https://h/", "h",
                 "/p/ws?oauth_token=a%2Bb%2Fc%3Dd%26e+f");
    ws_target t;
    assert_int_equal(ws_target_init(&t, "ftp://h/p", "t"), -1);
    assert_int_equal(ws_target_init(&t, "https:///p", "t"), -1);
    assert_int_equal(ws_target_init(&t, "https://h/p", ""), -1);
    assert_int_equal(ws_target_init(&t, "https://h/p?x=1", "t"), -1);
}

static void test_cookie_and_user_agent(void **state)
{
    (void)state;
    assert_true(ws_cookie_ok("a1b2c3", 6));
    assert_true(ws_cookie_ok("x!#$%&'()*+-./:<=>?@[]^_`{|}~", 29));
    static const char *const bad_cookies[] = {"", "a b", "a;b", "a,b", "a\"b", "a\\b", "a\r\nb",
                                              "a\tb", "\x7f", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad_cookies / sizeof bad_cookies[0]; i++)
        assert_false(ws_cookie_ok(bad_cookies[i], strlen(bad_cookies[i])));
    assert_false(ws_cookie_ok("a\0b", 3));
    char big[WS_COOKIE_MAX + 1];
    memset(big, 'a', sizeof big);
    assert_true(ws_cookie_ok(big, WS_COOKIE_MAX));
    assert_false(ws_cookie_ok(big, WS_COOKIE_MAX + 1));

    assert_true(ws_user_agent_ok("ClientPortalGW/1", 16));
    assert_true(ws_user_agent_ok("Mozilla/5.0 (X11; Linux)\tx", 26));
    assert_false(ws_user_agent_ok("", 0));
    assert_false(ws_user_agent_ok("a\r\nX-Injected: 1", 17));
    assert_false(ws_user_agent_ok("a\nb", 3));
    assert_false(ws_user_agent_ok("a\0b", 3));
    assert_false(ws_user_agent_ok("\xc3\xa9", 2));
}

static void test_request(void **state)
{
    (void)state;
    ws_target t;
    assert_int_equal(ws_target_init(&t, "https://localhost:5000/v1/api", "TOKEN"), 0);
    strbuf sb = STRBUF_INIT;
    assert_int_equal(ws_request_build(&sb, &t, "dGhlIHNhbXBsZSBub25jZQ==", "s3ss10n", 7,
                                      "ClientPortalGW/1", 16),
                     0);
    assert_string_equal(sb.data, "GET /v1/api/ws?oauth_token=TOKEN HTTP/1.1\r\n"
                                 "Host: localhost:5000\r\n"
                                 "Upgrade: websocket\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Sec-WebSocket-Version: 13\r\n"
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Cookie: api=s3ss10n\r\n"
                                 "User-Agent: ClientPortalGW/1\r\n"
                                 "\r\n");
    strbuf_free(&sb);
    ws_target_free(&t);
}

#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static ws_resp_status parse(const char *s, ws_response *r)
{
    return ws_response_parse(s, strlen(s), ACCEPT, r);
}

static void test_upgraded(void **state)
{
    (void)state;
    ws_response r;
    const char *ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n";
    assert_int_equal(parse(ok, &r), WS_RESP_UPGRADED);
    assert_int_equal(r.status, 101);
    assert_int_equal(r.head_len, strlen(ok));
    /* Any case, extra blanks, Connection as a list, other headers, and
     * frame bytes after the head (not part of it). */
    const char *ok2 = "HTTP/1.1 101 \r\nupgrade:  WebSocket \r\nX-Other: 1\r\n"
                      "connection: keep-alive, upgrade\r\nsec-websocket-accept:" ACCEPT "\r\n\r\n"
                      "\x81\x02hi";
    assert_int_equal(parse(ok2, &r), WS_RESP_UPGRADED);
    assert_int_equal(r.head_len, strlen(ok2) - 4);
    /* Every prefix of a good answer is incomplete, not wrong. */
    for (size_t n = 0; n < strlen(ok); n++)
        assert_int_equal(ws_response_parse(ok, n, ACCEPT, &r), WS_RESP_MORE);
}

static void test_bad_accept(void **state)
{
    (void)state;
    ws_response r;
    assert_int_equal(parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Accept: "
                           "s3pPLMBiTxaQ9kYGzzhZRbK+xOp=\r\n\r\n",
                           &r),
                     WS_RESP_BAD_ACCEPT);
    assert_int_equal(parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\n\r\n",
                           &r),
                     WS_RESP_BAD_ACCEPT);
    assert_int_equal(parse("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: " ACCEPT "\r\nSec-WebSocket-Accept: " ACCEPT
                           "\r\n\r\n",
                           &r),
                     WS_RESP_BAD_ACCEPT);
    assert_int_equal(parse("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: " ACCEPT "x\r\n\r\n",
                           &r),
                     WS_RESP_BAD_ACCEPT);
}

static void test_bad_upgrade(void **state)
{
    (void)state;
    ws_response r;
    static const char *const bad[] = {
        "HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
        "HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT
        "\r\n\r\n",
        "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: close\r\nSec-WebSocket-Accept: " ACCEPT
        "\r\n\r\n",
        "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT
        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT
        "\r\nSec-WebSocket-Protocol: chat\r\n\r\n",
        "this is not HTTP\r\n\r\n",
        "HTTP/2 101\r\n\r\n",
        "HTTP/1.1 99 Low\r\n\r\n",
        "HTTP/1.1 1010 Long\r\n\r\n",
        "HTTP/1.1 101 OK\r\n folded: line\r\n\r\n",
        "HTTP/1.1 101 OK\r\nno colon\r\n\r\n",
        "HTTP/1.1 101 OK\r\nA: b\nC: d\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        print_message("%zu\n", i);
        assert_int_equal(parse(bad[i], &r), WS_RESP_BAD_UPGRADE);
    }
    /* A head that never ends is refused at WS_HEAD_MAX, not buffered. */
    char *big = malloc(WS_HEAD_MAX);
    assert_non_null(big);
    static const char start[] = "HTTP/1.1 101 OK\r\nX: ";
    memcpy(big, start, sizeof start - 1); /* a prefix: no NUL wanted */
    memset(big + sizeof start - 1, 'a', WS_HEAD_MAX - (sizeof start - 1));
    assert_int_equal(ws_response_parse(big, WS_HEAD_MAX - 1, ACCEPT, &r), WS_RESP_MORE);
    assert_int_equal(ws_response_parse(big, WS_HEAD_MAX, ACCEPT, &r), WS_RESP_BAD_UPGRADE);
    free(big);
}

static void test_refused(void **state)
{
    (void)state;
    ws_response r;
    const char *a = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nnot allowed!";
    assert_int_equal(parse(a, &r), WS_RESP_REFUSED);
    assert_int_equal(r.status, 401);
    assert_int_equal(r.content_length, 12);
    assert_int_equal(r.head_len, strlen(a) - 12);
    /* A 200 with the upgrade headers is still not an upgrade. */
    assert_int_equal(parse("HTTP/1.0 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
                           &r),
                     WS_RESP_REFUSED);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.content_length, -1);
    assert_int_equal(parse("HTTP/1.1 503 Busy\r\nContent-Length: x1\r\n\r\n", &r), WS_RESP_REFUSED);
    assert_int_equal(r.content_length, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc6455_example), cmocka_unit_test(test_target),
        cmocka_unit_test(test_cookie_and_user_agent), cmocka_unit_test(test_request),
        cmocka_unit_test(test_upgraded), cmocka_unit_test(test_bad_accept),
        cmocka_unit_test(test_bad_upgrade), cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
