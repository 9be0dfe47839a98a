%% EUnit: what the session feeds the stream policy, and its timer re-arming.
-module(ibkr_oauth_stream_io_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, ibkr_oauth_stream_io).

call_test_() ->
    [?_assertEqual({post, <<"/tickle">>, [], <<>>}, ?S:call(tickle)),
     ?_assertEqual({post, <<"/iserver/auth/ssodh/init">>,
                    [{<<"content-type">>, <<"application/json">>}],
                    <<"{\"publish\":true,\"compete\":true}">>}, ?S:call(ssodh))].

ws_open_test_() ->
    [?_assertEqual(#{cookie => <<"c">>, user_agent => <<"ibkr_oauth">>, timeout => 5000},
                   ?S:ws_open(#{cookie => <<"c">>}, 5000)),
     ?_assertEqual({ws_opened, 3}, ?S:ws_open_input({ok, 3})),
     ?_assertEqual({ws_open_failed, {http, 401}}, ?S:ws_open_input({error, {http, 401}})),
     %% binaries in an unexpected answer are replaced by their size
     ?_assertEqual({ws_open_failed, {bad_reply, {ok, {binary, 6}}}},
                   ?S:ws_open_input({ok, <<"secret">>}))].

http_input_test_() ->
    [?_assertEqual({ssodh_result, ok}, ?S:http_input(ssodh, {ok, #{status => 200}})),
     ?_assertEqual({ssodh_result, {error, {http, 500}}}, ?S:http_input(ssodh, {ok, #{status => 500}})),
     ?_assertEqual({ssodh_result, {error, timeout}}, ?S:http_input(ssodh, {error, timeout})),
     ?_assertEqual(none, ?S:http_input(ssodh, odd)),
     ?_assertEqual({tickle_result, {error, {http, 401}}}, ?S:http_input(tickle, {ok, #{status => 401}}))].

tickle_result_test_() ->
    Auth = #{<<"authStatus">> => #{<<"authenticated">> => true}},
    [?_assertEqual({ok, #{session => <<"abc">>, iserver => true}},
                   ?S:tickle_result({ok, #{status => 200,
                                           json => #{<<"session">> => <<"abc">>, <<"iserver">> => Auth}}})),
     ?_assertEqual({ok, #{session => <<"abc">>, iserver => false}},
                   ?S:tickle_result({ok, #{status => 200, json => #{<<"session">> => <<"abc">>}}})),
     %% the body is never searched: every /tickle asks the port to decode it
     ?_assertEqual({error, {bad_response, missing_field}},
                   ?S:tickle_result({ok, #{status => 200, body => <<"{\"session\":\"abc\"}">>}})),
     ?_assertEqual({error, {bad_response, missing_field}},
                   ?S:tickle_result({ok, #{status => 200, json_error => syntax,
                                           body => <<"{\"session\":\"abc\"">>}})),
     ?_assertEqual({error, {bad_response, missing_field}},
                   ?S:tickle_result({ok, #{status => 200, body => <<"{}">>}})),
     ?_assertEqual({error, {http, 503}}, ?S:tickle_result({ok, #{status => 503}})),
     ?_assertEqual({error, timeout}, ?S:tickle_result({error, timeout})),
     ?_assertEqual({error, bad_reply}, ?S:tickle_result(odd))].

rearm_test_() ->
    Old = {make_ref(), make_ref(), 1500},
    [?_assertEqual(cancel, ?S:rearm(Old, 1000, infinity)),
     ?_assertEqual(cancel, ?S:rearm(undefined, 1000, infinity)),
     ?_assertEqual({arm, 1200}, ?S:rearm(undefined, 1000, 200)),
     %% the armed timer is due first: kept
     ?_assertEqual(keep, ?S:rearm(Old, 1000, 500)),
     ?_assertEqual(keep, ?S:rearm(Old, 1000, 900)),
     %% due later than asked: replaced
     ?_assertEqual({arm, 1100}, ?S:rearm(Old, 1000, 100))].

stopped_test() ->
    S0 = ?S:new(#{smd_refresh_interval => 60000}),
    ?assertEqual(ok, ?S:stopped(S0, 0)),
    receive M -> ?assertEqual(none, M) after 0 -> ok end.
