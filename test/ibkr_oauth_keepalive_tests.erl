%% EUnit: ibkr_oauth_keepalive (tickles, the /tickle session, websocket_info).
-module(ibkr_oauth_keepalive_tests).
-include_lib("eunit/include/eunit.hrl").

-define(K, ibkr_oauth_keepalive).

ok200(Extra) -> {ok, maps:merge(#{status => 200, headers => [], body => <<>>}, Extra)}.

wanted_test_() ->
    [?_assert(?K:wanted(true, true, true)),
     [?_assertNot(?K:wanted(M, I, U)) || {M, I, U} <- [{false, true, true}, {true, false, true}, {true, true, false}]]].

command_test() ->
    ?assertEqual(#{method => <<"POST">>, url => <<"https://h/v1/api/tickle">>, headers => [],
                   body => <<>>, timeout => 5000, sign => true, decode => json},
                 ?K:command(<<"https://h/v1/api">>, 5000)).

tickle_done_test_() ->
    [?_assertEqual(ok, ?K:tickle_done(ok200(#{}))),
     ?_assertEqual(renew, ?K:tickle_done({ok, #{status => 401, headers => [], body => <<>>}})),
     ?_assertEqual({warning, "POST /tickle answered ~b", [503]},
                   ?K:tickle_done({ok, #{status => 503, headers => [], body => <<>>}})),
     %% the reason is scrubbed
     ?_assertEqual({warning, "POST /tickle failed: ~p", [{error, {transport, recv}}]},
                   ?K:tickle_done({error, {transport, recv}}))].

session_value_test_() ->
    [?_assertEqual({ok, <<"abc">>}, ?K:session_value(ok200(#{json => #{<<"session">> => <<"abc">>}}))),
     %% json wins over the body, and a JSON without a string session has none
     ?_assertEqual(error, ?K:session_value(ok200(#{json => #{<<"session">> => 1},
                                                  body => <<"{\"session\":\"x\"}">>}))),
     ?_assertEqual(error, ?K:session_value(ok200(#{json => [1, 2]}))),
     %% the body is never searched: every /tickle asks the port to decode it
     ?_assertEqual(error, ?K:session_value(ok200(#{body => <<"{\"a\":1, \"session\" : \"s1\"}">>}))),
     ?_assertEqual(error, ?K:session_value(ok200(#{json_error => syntax, body => <<"{\"session\":\"s1\"">>}))),
     ?_assertEqual(error, ?K:session_value(ok200(#{body => <<"{}">>}))),
     ?_assertEqual(error, ?K:session_value({error, timeout}))].

observe_test_() ->
    H = [{<<"set-cookie">>, <<"other=1">>}, {<<"set-cookie">>, <<" api=ck; Path=/">>}],
    [?_assertEqual(#{session => <<"s">>, cookie => <<"ck">>, at => 10, epoch => 2},
                   ?K:observe(ok200(#{headers => H, json => #{<<"session">> => <<"s">>}}), 10, 2, #{})),
     ?_assertEqual(#{at => 10, epoch => 2}, ?K:observe(ok200(#{}), 10, 2, #{session => <<"old">>})),
     ?_assertEqual(#{session => <<"old">>},
                   ?K:observe({ok, #{status => 401, headers => [], body => <<>>}}, 10, 2, #{session => <<"old">>})),
     ?_assertEqual(#{}, ?K:observe({error, timeout}, 10, 2, ?K:new())),
     %% a set-cookie that is not api=
     ?_assertEqual(#{at => 1, epoch => 0},
                   ?K:observe(ok200(#{headers => [{<<"set-cookie">>, <<"x=1">>}]}), 1, 0, #{}))].

session_test_() ->
    KA = #{session => <<"s">>, cookie => <<"c">>, at => 1000, epoch => 3},
    [?_assertEqual({ok, <<"s">>}, ?K:session(1000 + 59999, 3, true, KA)),
     ?_assertEqual({ok, <<"c">>}, ?K:session(1000, 3, true, maps:remove(session, KA))),
     ?_assertEqual(stale, ?K:session(1000, 3, true, #{at => 1000, epoch => 3})),
     ?_assertEqual(stale, ?K:session(1000 + 60000, 3, true, KA)),     % too old
     ?_assertEqual(stale, ?K:session(1000, 4, true, KA)),             % another LST
     ?_assertEqual(stale, ?K:session(1000, 3, false, KA)),            % LST expired
     ?_assertEqual(stale, ?K:session(1000, 3, true, #{}))].

websocket_info_test_() ->
    I = ?K:websocket_info(<<"sess">>, <<"https://h:1/v1/api">>, <<"tok en">>),
    [?_assertEqual(<<"wss://h:1/v1/api/ws?oauth_token=tok+en">>, maps:get(url, I)),
     ?_assertEqual(<<"api=sess">>, maps:get(cookie, I)),
     ?_assertEqual(<<"sess">>, maps:get(session, I)),
     ?_assertEqual([{<<"cookie">>, <<"api=sess">>}, {<<"user-agent">>, <<"ibkr_oauth">>}], maps:get(headers, I)),
     ?_assertMatch(#{url := <<"ws://h/ws?", _/binary>>}, ?K:websocket_info(<<"s">>, <<"http://h">>, <<"t">>))].

websocket_reply_test_() ->
    [?_assertEqual({ok, <<"s">>}, ?K:websocket_reply(ok200(#{}), {ok, <<"s">>})),
     ?_assertEqual({error, {bad_response, missing_field}}, ?K:websocket_reply(ok200(#{}), stale)),
     ?_assertEqual({error, {ibkr, unauthorized, #{status => 401, message => <<>>}}},
                   ?K:websocket_reply({ok, #{status => 401, headers => [], body => <<"no">>}}, stale)),
     ?_assertEqual({error, {http, 503, <<"busy">>}},
                   ?K:websocket_reply({ok, #{status => 503, headers => [], body => <<"busy">>}}, stale)),
     ?_assertEqual({error, timeout}, ?K:websocket_reply({error, timeout}, stale)),
     ?_assertEqual({error, bad_reply}, ?K:websocket_reply(what, stale))].
