%% EUnit: ibkr_oauth_retry, the only place that decides to send a request again.
-module(ibkr_oauth_retry_tests).
-include_lib("eunit/include/eunit.hrl").

-define(R, ibkr_oauth_retry).

a(Method) -> a(Method, 5000, []).
a(Method, Left, Retried) -> #{method => Method, left => Left, retried => Retried}.

resp(Status) -> resp(Status, []).
resp(Status, H) -> {ok, #{status => Status, headers => H, body => <<"b">>}}.

d(Reply, A) -> element(1, ?R:decide(Reply, A)).

answers_test_() ->
    [?_assertEqual({{finish, resp(200)}, []}, ?R:decide(resp(200), a(get))),
     ?_assertEqual({finish, resp(500)}, d(resp(500), a(post))),
     ?_assertEqual({finish, {error, timeout}}, d({error, timeout}, a(get))),
     ?_assertEqual({finish, {error, cancelled}}, d({error, cancelled}, a(get))),
     ?_assertEqual({finish, {error, bad_reply}}, d(garbage, a(get))),
     ?_assertEqual({finish, {error, bad_reply}}, d({ok, #{status => 200}}, a(get)))].

auth_once_test_() ->
    [?_assertEqual({retry_auth, [auth]}, ?R:decide(resp(401), a(post))),
     ?_assertEqual({retry_auth, [auth]}, ?R:decide({error, not_authenticated}, a(get))),
     ?_assertEqual({finish, resp(401)}, d(resp(401), a(get, 5000, [auth]))),
     ?_assertEqual({finish, {error, not_authenticated}},
                   d({error, not_authenticated}, a(get, 5000, [auth])))].

rate_once_test_() ->
    RA = fun(V) -> resp(429, [{<<"retry-after">>, V}]) end,
    [?_assertEqual({{retry_in, 1000}, [rate]}, ?R:decide(RA(<<"1">>), a(post))),
     ?_assertEqual({retry_in, 0}, d(RA(<<"0">>), a(get, infinity, []))),
     %% does not fit before the deadline
     ?_assertEqual({finish, RA(<<"5">>)}, d(RA(<<"5">>), a(get, 5000, []))),
     ?_assertEqual({finish, RA(<<"1">>)}, d(RA(<<"1">>), a(get, 5000, [rate]))),
     ?_assertEqual({finish, resp(429)}, d(resp(429), a(get))),
     ?_assertEqual({finish, RA(<<"soon">>)}, d(RA(<<"soon">>), a(get))),
     ?_assertEqual({finish, RA(<<"3601">>)}, d(RA(<<"3601">>), a(get, infinity, [])))].

retry_after_test_() ->
    [?_assertEqual({ok, 2000}, ?R:retry_after([{<<"Retry-After">>, <<" 2 ">>}])),
     ?_assertEqual({ok, 3600000}, ?R:retry_after([{<<"retry-after">>, <<"3600">>}])),
     ?_assertEqual(error, ?R:retry_after([{<<"retry-after">>, <<"-1">>}])),
     ?_assertEqual(error, ?R:retry_after([{<<"retry-after">>, <<"Wed, 21 Oct 2015">>}])),
     ?_assertEqual(error, ?R:retry_after([]))].

%% The resend rule: never a non-idempotent request that may have reached the
%% server; get/head, or a request that cannot have been sent, once.
resend_test_() ->
    Old = fun(K) -> {error, {transport, K}} end,
    New = fun(K, Sent) -> {error, {transport, K, #{sent => Sent}}} end,
    [[?_assertEqual({resend, [transport]}, ?R:decide(Old(K), a(post))) || K <- [resolve, connect, tls]],
     [?_assertEqual({finish, Old(K)}, d(Old(K), a(post))) || K <- [send, recv, too_large, other]],
     [?_assertEqual(resend, d(Old(K), a(M))) || K <- [send, recv, other], M <- [get, head]],
     [?_assertEqual(resend, d(New(K, false), a(post))) || K <- [resolve, connect, tls, send, other]],
     %% a POST that may have arrived: the caller sees "may have been sent"
     [?_assertEqual({finish, Old(recv)}, d(New(K, true), a(post))) || K <- [resolve, connect, tls]],
     [?_assertEqual({finish, Old(K)}, d(New(K, true), a(M))) || K <- [send, recv, too_large], M <- [post, put, delete, patch]],
     [?_assertEqual(resend, d(New(K, true), a(get))) || K <- [connect, recv]],
     %% the port died holding it: the caller is told, whatever the method
     [?_assertEqual({finish, {error, port_down}}, d({error, port_down}, a(M))) || M <- [get, head, post]],
     %% once, and only before the deadline
     ?_assertEqual({finish, Old(recv)}, d(New(connect, true), a(get, 5000, [transport]))),
     ?_assertEqual({finish, Old(connect)}, d(New(connect, false), a(get, 0, []))),
     ?_assertEqual({finish, Old(recv)}, d(Old(recv), a(get, -3, []))),
     %% other retries do not use up the transport one
     ?_assertEqual({resend, [transport, auth, rate]}, ?R:decide(Old(connect), a(post, 10, [auth, rate])))].

caller_reply_test_() ->
    [?_assertEqual({error, {transport, recv}}, ?R:caller_reply({error, {transport, tls, #{sent => true}}})),
     ?_assertEqual({error, {transport, tls}}, ?R:caller_reply({error, {transport, tls, #{sent => false}}})),
     ?_assertEqual({error, {transport, send}}, ?R:caller_reply({error, {transport, send, #{sent => true}}})),
     ?_assertEqual({error, {transport, connect}}, ?R:caller_reply({error, {transport, connect}})),
     ?_assertEqual(resp(200), ?R:caller_reply(resp(200)))].

transport_test_() ->
    [?_assertEqual({connect, false}, ?R:transport({error, {transport, connect}})),
     ?_assertEqual({recv, true}, ?R:transport({error, {transport, recv}})),
     ?_assertEqual({connect, true}, ?R:transport({error, {transport, connect, #{sent => true}}})),
     ?_assertEqual(none, ?R:transport({error, port_down})),
     ?_assertEqual(none, ?R:transport({error, timeout}))].

describe_test_() ->
    Text = fun(X) -> lists:flatten(?R:describe(X)) end,
    [?_assertMatch("answered 401" ++ _, Text({retry_auth, resp(401)})),
     ?_assertMatch("found no live" ++ _, Text({retry_auth, {error, not_authenticated}})),
     ?_assertEqual("answered 429: retry in 1000 ms", Text({{retry_in, 1000}, resp(429)})),
     ?_assertEqual("failed (transport connect): one retry", Text({resend, {error, {transport, connect}}}))].
