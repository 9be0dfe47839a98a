%% EUnit: ibkr_oauth_request (what the session derives from one request).
-module(ibkr_oauth_request_tests).
-include_lib("eunit/include/eunit.hrl").
-include("../src/ibkr_oauth_request.hrl").

-define(R, ibkr_oauth_request).

req() -> req(get, <<>>).
req(Method, Body) ->
    ?R:new(from, {Method, <<"/a/b?q=secret">>, [{<<"x">>, <<"y">>}], Body}, <<"https://h/v1/api">>, 5000, 100).

new_test() ->
    R = req(),
    ?assertEqual(<<"https://h/v1/api/a/b?q=secret">>, R#req.url),
    ?assertEqual(<<"/a/b">>, R#req.path),
    ?assertEqual(5000, R#req.deadline),
    ?assertEqual(new, R#req.where).

command_test_() ->
    [?_assertEqual(#{method => <<"GET">>, url => <<"https://h/v1/api/a/b?q=secret">>,
                     headers => [{<<"x">>, <<"y">>}], timeout => 700, sign => true},
                   ?R:command(req(), 700)),
     ?_assertMatch(#{method := <<"POST">>, body := <<"{}">>, timeout := infinity},
                   ?R:command(req(post, <<"{}">>), infinity)),
     ?_assertMatch(#{decode := json}, ?R:command((req())#req{websocket = true}, 10)),
     ?_assertMatch(#{decode := json, json := <<"{}">>, sign := true},
                   ?R:command((req())#req{port_opts = #{decode => json, json => <<"{}">>}}, 10)),
     [?_assertEqual(B, ?R:method_bin(M)) || {M, B} <- [{put, <<"PUT">>}, {delete, <<"DELETE">>},
                                                        {patch, <<"PATCH">>}, {head, <<"HEAD">>}]]].

queue_test() ->
    R1 = ?R:enter_queue(req(), 1000),
    ?assertEqual(rl, R1#req.where),
    R2 = ?R:leave_queue(R1, 3500),
    ?assertEqual({new, 2500}, {R2#req.where, R2#req.queued_us}),
    R3 = ?R:leave_queue(?R:enter_queue(R2, 4000), 5000),
    ?assertEqual(3500, R3#req.queued_us),
    ?assertEqual({ok, #{status => 200, queued_ms => 3}}, ?R:reply(R3, {ok, #{status => 200}})),
    ?assertEqual({error, timeout}, ?R:reply(R3, {error, timeout})),
    ?assertEqual(#{method => get, left => 10, retried => []}, ?R:attempt(R3, 10)).

events_test() ->
    R = (req())#req{attempt = 2},
    {debug, _, Args, Meta} = ?R:done_event(R, {ok, #{status => 200}}, 600),
    ?assertEqual([<<"GET">>, <<"/a/b">>, 200], Args),
    ?assertMatch(#{domain := [ibkr_oauth], event := request, status := 200, attempt := 2,
                   duration_us := 500, path := <<"/a/b">>, queued_ms := 0}, Meta),
    {info, _, _, M2} = ?R:done_event(R, {error, {http, 500, <<"body">>}}, 600),
    ?assertMatch(#{status := undefined, error := {http, 500, {binary, 4}}}, M2),
    {info, _, _, #{status := undefined}} = ?R:done_event(R, odd, 600),
    {warning, F, A, M3} = ?R:retry_event(R, "answered 401", {ok, #{status => 401}}),
    ?assertEqual("ibkr_oauth: GET /a/b answered 401", lists:flatten(io_lib:format(F, A))),
    ?assertMatch(#{event := retry, status := 401}, M3),
    {warning, _, _, M4} = ?R:retry_event(R, "x", {error, {transport, recv}}),
    ?assertNot(is_map_key(status, M4)),
    %% never the query
    ?assertEqual(nomatch, string:find(io_lib:format("~p", [{Args, Meta, M2, M3}]), "secret")).
