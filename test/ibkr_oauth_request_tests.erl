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

%% The final answer: IBKR's own errors outside 2xx become {error, {ibkr, ...}};
%% everything else is the response, with queued_ms.
ibkr_reply_test_() ->
    R = req(),
    NoBridge = <<"{\"error\":\"no bridge\",\"statusCode\":400}">>,
    Resp = fun(S, B) -> {ok, #{status => S, headers => [], body => B}} end,
    [?_assertEqual({error, {ibkr, no_bridge, #{status => 400, message => <<"no bridge">>}}},
                   ?R:reply(R, Resp(400, NoBridge))),
     ?_assertMatch({error, {ibkr, rate_limited, #{status := 429, retry_after := 7}}},
                   ?R:reply(R, {ok, #{status => 429, headers => [{<<"retry-after">>, <<"7">>}],
                                      body => <<>>}})),
     ?_assertMatch({error, {ibkr, unauthorized, #{status := 401}}}, ?R:reply(R, Resp(401, <<"no">>))),
     %% unrecognised, and 2xx whatever the body says
     ?_assertEqual({ok, #{status => 500, headers => [], body => <<"oops">>, queued_ms => 0}},
                   ?R:reply(R, Resp(500, <<"oops">>))),
     ?_assertEqual({ok, #{status => 200, headers => [], body => NoBridge, queued_ms => 0}},
                   ?R:reply(R, Resp(200, NoBridge)))].

ibkr_done_event_test() ->
    R = req(),
    Ibkr = {ibkr, no_bridge, #{status => 400, message => <<"no bridge">>}},
    {info, F, A, Meta} = ?R:done_event(R, {error, Ibkr}, 600),
    ?assertMatch(#{status := 400, error := {ibkr, no_bridge}}, Meta),
    ?assertNotEqual(nomatch, string:find(lists:flatten(io_lib:format(F, A)), "ssodh/init")).

telemetry_test() ->
    R = (req())#req{attempt = 1},
    ?assertEqual(#{method => get, path => <<"/a/b">>, attempt => 0}, ?R:start_meta(req())),
    ?assertEqual({stop, #{queued_ms => 0}, #{method => get, path => <<"/a/b">>, attempt => 1, status => 200}},
                 ?R:end_telemetry(R, {ok, #{status => 200, body => <<"secret">>}})),
    ?assertMatch({stop, _, #{status := 400, error := no_bridge}},
                 ?R:end_telemetry(R, {error, {ibkr, no_bridge, #{status => 400, message => <<"x">>}}})),
    ?assertMatch({exception, _, #{reason := timeout, attempt := 1}}, ?R:end_telemetry(R, {error, timeout})),
    %% never a body in the metadata
    ?assertMatch({exception, _, #{reason := {http, 503, {binary, 6}}}},
                 ?R:end_telemetry(R, {error, {http, 503, <<"secret">>}})),
    %% the wait in the rate-limit queue, only when the limit held it
    Q = ?R:enter_queue(R, 1000),
    ?assertEqual(none, ?R:queued_telemetry(Q, 9000)),
    ?assertEqual({8, #{method => get, path => <<"/a/b">>}}, ?R:queued_telemetry(Q#req{held = true}, 9000)),
    ?assertEqual(none, ?R:queued_telemetry(?R:leave_queue(Q#req{held = true}, 9000), 9000)),
    ?assertNot((?R:enter_queue(Q#req{held = true}, 1))#req.held).
