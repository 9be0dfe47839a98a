%% The fake IBKR websocket: its RFC 6455 framing, its JSON reader, and the
%% endpoint driven by the minimal client in ibkr_fake_ws (so the stream
%% suites can trust what it enforces).
-module(ibkr_fake_ws_tests).
-include_lib("eunit/include/eunit.hrl").

-define(W, ibkr_fake_ws).
-define(F, ibkr_fake_server).

%%% ------------------------------------------------------------- framing

accept_key_rfc_example_test() ->
    %% RFC 6455 section 1.3
    ?assertEqual(<<"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=">>, ?W:accept_key(<<"dGhlIHNhbXBsZSBub25jZQ==">>)).

rfc_masked_hello_test() ->
    %% RFC 6455 section 5.7: a masked "Hello"
    Wire = <<16#81, 16#85, 16#37, 16#fa, 16#21, 16#3d, 16#7f, 16#9f, 16#4d, 16#51, 16#58>>,
    ?assertEqual({ok, #{fin => true, opcode => 1, masked => true, payload => <<"Hello">>}, <<>>},
                 ?W:decode_frame(Wire, 1000)),
    ?assertEqual(Wire, iolist_to_binary(?W:encode_frame(#{opcode => 1, payload => <<"Hello">>,
                                                          mask => <<16#37, 16#fa, 16#21, 16#3d>>}))),
    ?assertEqual(<<16#81, 16#05, "Hello">>,
                 iolist_to_binary(?W:encode_frame(#{opcode => 1, payload => <<"Hello">>}))).

round_trip_lengths_test() ->
    [begin
         P = crypto:strong_rand_bytes(Len),
         Masked = iolist_to_binary(?W:encode_frame(#{opcode => 2, payload => P, mask => <<1, 2, 3, 4>>})),
         Plain = iolist_to_binary(?W:encode_frame(#{opcode => 2, payload => P, fin => false})),
         ?assertMatch({ok, #{payload := P, masked := true, fin := true}, <<"tail">>},
                      ?W:decode_frame(<<Masked/binary, "tail">>, 1 bsl 20)),
         ?assertMatch({ok, #{payload := P, masked := false, fin := false}, <<>>},
                      ?W:decode_frame(Plain, 1 bsl 20)),
         %% every strict prefix is incomplete
         ?assertEqual(more, ?W:decode_frame(binary:part(Masked, 0, byte_size(Masked) - 1), 1 bsl 20))
     end || Len <- [0, 1, 3, 4, 5, 125, 126, 127, 65535, 65536, 70001]].

bad_frames_test() ->
    ?assertEqual({error, rsv}, ?W:decode_frame(<<16#c1, 0>>, 100)),
    ?assertEqual({error, bad_opcode}, ?W:decode_frame(<<16#83, 0>>, 100)),
    ?assertEqual({error, bad_control}, ?W:decode_frame(<<16#09, 0>>, 100)),       % fragmented ping
    ?assertEqual({error, bad_control}, ?W:decode_frame(<<16#89, 126, 0, 200>>, 1000)),
    ?assertEqual({error, bad_length}, ?W:decode_frame(<<16#82, 126, 0, 5, 0:40>>, 1000)),
    ?assertEqual({error, bad_length}, ?W:decode_frame(<<16#82, 127, 1:1, 0:63>>, 1000)),
    ?assertEqual({error, too_large}, ?W:decode_frame(<<16#82, 126, 1000:16>>, 999)),
    ?assertEqual(more, ?W:decode_frame(<<16#82>>, 10)),
    ?assertEqual(more, ?W:decode_frame(<<>>, 10)).

%%% ------------------------------------------------- against the server

endpoint_test_() ->
    Cases = [fun rejects_bad_credentials/1, fun hello_tic_and_heartbeat/1,
             fun market_data_ticks_and_unsubscribe/1, fun smd_expires_unless_resent/1,
             fun other_streams/1, fun no_tic_closes/1, fun protocol_rules/1,
             fun drop_rotate_and_sts/1, fun without_brokerage_session/1, fun bench_controls/1],
    {foreach, fun setup/0, fun cleanup/1,
     [fun(Ctx) -> {timeout, 60, fun() -> Case(Ctx) end} end || Case <- Cases]}.

setup() ->
    {ok, _} = application:ensure_all_started(ssl),
    {ok, Info} = ?F:start_from_vectors(public, #{ws => #{hb_ms => 300, smd_rate_ms => 50}}),
    {ok, _} = ibkr_oauth_app_start(),
    {ok, S} = ibkr_oauth:start_link(maps:get(config, Info)),
    {ok, #{status := 200}} = ibkr_oauth:request(S, post, <<"/iserver/auth/ssodh/init">>, #{body => <<"{}">>}),
    {ok, #{session := Session}} = ibkr_oauth:websocket_info(S),
    V = ibkr_test_lib:vectors(public),
    Info#{session => Session, token => maps:get(access_token, V), s => S}.

ibkr_oauth_app_start() -> application:ensure_all_started(ibkr_oauth).

cleanup(#{s := S}) ->
    ibkr_oauth:stop(S),
    ?F:stop().

open(Ctx = #{session := Session, token := Token}) ->
    {ok, C} = ?W:client_open(Ctx, #{token => Token, cookie => Session, user_agent => <<"t/1">>}),
    C.

%% The next JSON message whose topic is Topic (others skipped).
recv_topic(C, Topic) ->
    case ?W:client_recv(C, 5000) of
        {ok, {json, M = #{<<"topic">> := Topic}}, C1} -> {M, C1};
        {ok, {json, _}, C1} -> recv_topic(C1, Topic);
        {ok, {pong, _}, C1} -> recv_topic(C1, Topic);
        Other -> error({unexpected, Other})
    end.

hello(C0) ->
    {#{<<"success">> := _}, C1} = recv_topic(C0, <<"system">>),
    {_, C2} = recv_topic(C1, <<"act">>),
    {#{<<"args">> := #{<<"authenticated">> := true}}, C3} = recv_topic(C2, <<"sts">>),
    C3.

rejects_bad_credentials(Ctx = #{session := Session, token := Token}) ->
    Open = fun(O) -> ?W:client_open(Ctx, maps:merge(#{token => Token, cookie => Session,
                                                      user_agent => <<"t/1">>}, O)) end,
    ?assertEqual({error, {http, 401}}, Open(#{token => <<"nottheaccesstoken">>})),
    ?assertEqual({error, {http, 401}}, Open(#{cookie => <<"0123">>})),
    ?assertEqual({error, {http, 401}}, ?W:client_open(Ctx, #{token => Token, user_agent => <<"t">>})),
    ?assertEqual({error, {http, 400}}, ?W:client_open(Ctx, #{token => Token, cookie => Session})),
    {ok, C} = Open(#{}),
    ?W:client_close(C),
    #{connections := 1, rejected := Rejected} = ?W:stats(),
    ?assertEqual(#{<<"bad oauth_token">> => 1, <<"bad session cookie">> => 2, <<"no user-agent">> => 1},
                 Rejected).

hello_tic_and_heartbeat(Ctx = #{session := Session}) ->
    C = hello(open(Ctx)),
    ok = ?W:client_send(C, <<"tic">>),
    {#{<<"alive">> := true, <<"id">> := Session}, C1} = recv_topic(C, <<"tic">>),
    {#{<<"hb">> := Hb}, C2} = recv_topic(C1, <<"system">>),
    ?assert(is_integer(Hb)),
    ok = ?W:client_send_frame(C2, #{opcode => 9, payload => <<"p1">>}),
    ?assertEqual({pong, <<"p1">>}, recv_pong(C2)),
    #{tics := 1, open := 1} = ?W:stats(),
    ?W:client_close(C2).

recv_pong(C) ->
    case ?W:client_recv(C, 5000) of
        {ok, {pong, P}, _} -> {pong, P};
        {ok, _, C1} -> recv_pong(C1)
    end.

market_data_ticks_and_unsubscribe(Ctx) ->
    C = hello(open(Ctx)),
    ok = ?W:client_send(C, <<"smd+265598+{\"fields\":[\"31\",\"84\"]}">>),
    {T1, C1} = recv_topic(C, <<"smd+265598">>),
    {T2, C2} = recv_topic(C1, <<"smd+265598">>),
    [?assertMatch(#{<<"conid">> := 265598, <<"31">> := <<_/binary>>, <<"84">> := _, <<"_updated">> := _}, T)
     || T <- [T1, T2]],
    [#{smd := [<<"265598">>]}] = ?W:subscriptions(),
    ok = ?W:client_send(C2, <<"umd+265598+{}">>),
    ok = wait_until(fun() -> [[]] =:= smd_conids() end),
    #{subscribes := #{<<"smd+265598">> := 1}, unsubscribes := #{<<"smd+265598">> := 1}} = ?W:stats(),
    %% injection and malformed requests are refused, not subscribed
    ok = ?W:client_send(C2, <<"smd+265598+{\"fields\":[31]}">>),
    ok = ?W:client_send(C2, <<"smd+abc+{\"fields\":[\"31\"]}">>),
    ok = ?W:client_send(C2, <<"smd+1+{\"fields\":[\"31\"]">>),
    ok = ?W:client_send(C2, <<"tic">>),
    {_, _} = recv_topic(C2, <<"tic">>),
    [#{smd := []}] = ?W:subscriptions(),
    ?W:client_close(C2).

smd_expires_unless_resent(Ctx) ->
    ok = ?W:configure(#{smd_expiry_ms => 400}),
    C = hello(open(Ctx)),
    ok = ?W:client_send(C, <<"smd+8314+{\"fields\":[\"31\"]}">>),
    {_, _} = recv_topic(C, <<"smd+8314">>),
    ok = wait_until(fun() -> [[]] =:= smd_conids() end),
    #{smd_expired := 1} = ?W:stats(),
    ?W:client_close(C).

other_streams(Ctx) ->
    C = hello(open(Ctx)),
    Cn = lists:foldl(fun({Frame, Topic}, Acc) ->
                             ok = ?W:client_send(Acc, Frame),
                             {_, A1} = recv_topic(Acc, Topic),
                             {_, A2} = recv_topic(A1, Topic),
                             A2
                     end, C,
                     [{<<"sor+{}">>, <<"sor">>}, {<<"str+{}">>, <<"str">>}, {<<"spl{}">>, <<"spl">>},
                      {<<"ssd+U1234567+{\"keys\":[\"NetLiquidation\"]}">>, <<"ssd+U1234567">>},
                      {<<"sld+U1234567+{\"keys\":[\"LedgerListBASE\"]}">>, <<"sld+U1234567">>}]),
    [ok = ?W:client_send(Cn, F) || F <- [<<"uor+{}">>, <<"utr{}">>, <<"upl{}">>,
                                         <<"usd+U1234567+{}">>, <<"uld+U1234567+{}">>]],
    ok = wait_until(fun() -> map_size(maps:get(unsubscribes, ?W:stats())) =:= 5 end),
    #{subscribes := Subs} = ?W:stats(),
    ?assertEqual(lists:sort([<<"sor">>, <<"str">>, <<"spl">>, <<"ssd+U1234567">>, <<"sld+U1234567">>]),
                 lists:sort(maps:keys(Subs))),
    ?W:client_close(Cn).

no_tic_closes(Ctx) ->
    ok = ?W:configure(#{tic_timeout_ms => 300}),
    C = hello(open(Ctx)),
    ?assertEqual({close, 1000}, recv_close(C)),
    #{idle_closed := 1} = ?W:stats().

recv_close(C) ->
    case ?W:client_recv(C, 5000) of
        {ok, {close, Code}, _} -> {close, Code};
        {ok, _, C1} -> recv_close(C1);
        {error, E} -> {error, E}
    end.

protocol_rules(Ctx) ->
    %% a fragmented tic is one message
    C = hello(open(Ctx)),
    ok = ?W:client_send_frame(C, #{opcode => 1, fin => false, payload => <<"t">>}),
    ok = ?W:client_send_frame(C, #{opcode => 9, payload => <<>>}),   % control frame in between
    ok = ?W:client_send_frame(C, #{opcode => 0, fin => false, payload => <<"i">>}),
    ok = ?W:client_send_frame(C, #{opcode => 0, payload => <<"c">>}),
    {_, C1} = recv_topic(C, <<"tic">>),
    %% an unmasked frame: close 1002
    ok = ?W:client_send_frame(C1, #{opcode => 1, payload => <<"tic">>, mask => none}),
    ?assertEqual({close, 1002}, recv_close(C1)),
    %% our close is answered
    C2 = hello(open(Ctx)),
    ok = ?W:client_send_frame(C2, #{opcode => 8, payload => <<1000:16>>}),
    ?assertEqual({close, 1000}, recv_close(C2)),
    %% too large
    ok = ?W:configure(#{max_message => 10}),
    C3 = hello(open(Ctx)),
    ok = ?W:client_send(C3, binary:copy(<<"x">>, 11)),
    ?assertEqual({close, 1009}, recv_close(C3)).

drop_rotate_and_sts(Ctx = #{s := S, session := Session}) ->
    C = hello(open(Ctx)),
    ?assertEqual(1, ?W:send_sts(false, true)),
    {#{<<"args">> := #{<<"authenticated">> := false, <<"competing">> := true}}, C1} = recv_topic(C, <<"sts">>),
    ?assertEqual(1, ?W:drop_all({close, 1001, <<"going away">>})),
    ?assertEqual({close, 1001}, recv_close(C1)),
    C2 = hello(open(Ctx)),
    New = ?W:rotate_session(),
    ?assertNotEqual(Session, New),
    ?assertMatch({error, _}, recv_close(C2)),                  % dropped abruptly
    ?assertEqual({error, {http, 401}}, ?W:client_open(Ctx, #{token => maps:get(token, Ctx), cookie => Session,
                                                             user_agent => <<"t">>})),
    %% POST /tickle now answers the new session
    {ok, #{status := 200, body := Body}} = ibkr_oauth:request(S, post, <<"/tickle">>, #{body => <<>>}),
    ?assertMatch({match, _}, re:run(Body, New)),
    C3 = hello(open(Ctx#{session := New})),
    ?W:client_close(C3).

without_brokerage_session(Ctx = #{s := S}) ->
    {ok, #{status := 200}} = ibkr_oauth:request(S, post, <<"/logout">>, #{body => <<>>}),
    C = open(Ctx),
    {_, C1} = recv_topic(C, <<"system">>),
    {#{<<"args">> := #{<<"authenticated">> := false}}, C2} = recv_topic(C1, <<"sts">>),
    ok = ?W:client_send(C2, <<"smd+265598+{\"fields\":[\"31\"]}">>),
    ok = ?W:client_send(C2, <<"spl{}">>),
    {_, _} = recv_topic(C2, <<"spl">>),
    #{refused := 1, subscribes := #{<<"spl">> := 1} = Subs} = ?W:stats(),
    ?assertNot(maps:is_key(<<"smd+265598">>, Subs)).

%% blast/3: N copies of one text frame, also when N is no multiple of the
%% batch; send_made/1: the frame made by the fun in the socket's process.
bench_controls(Ctx) ->
    C = hello(open(Ctx)),
    ?assertEqual(1, ?W:blast(<<"{\"topic\":\"b\",\"n\":1}">>, 7, 3)),
    C1 = lists:foldl(fun(_, Acc) ->
                             {#{<<"n">> := 1}, Acc1} = recv_topic(Acc, <<"b">>),
                             Acc1
                     end, C, lists:seq(1, 7)),
    Self = self(),
    ?assertEqual(1, ?W:send_made(fun() -> Self ! {made_in, self()}, <<"{\"topic\":\"m\"}">> end)),
    %% exactly 7: the next frame (heartbeats aside) is the made one
    {ok, {json, #{<<"topic">> := <<"m">>}}, C2} = next_non_hb(C1),
    [#{pid := Socket}] = ?W:subscriptions(),
    ?assertEqual({made_in, Socket}, receive {made_in, _} = M -> M after 5000 -> none end),
    ?W:client_close(C2).

next_non_hb(C) ->
    case ?W:client_recv(C, 5000) of
        {ok, {json, #{<<"topic">> := <<"system">>, <<"hb">> := _}}, C1} -> next_non_hb(C1);
        Other -> Other
    end.

smd_conids() -> [maps:get(smd, M) || M <- ?W:subscriptions()].

wait_until(F) -> wait_until(F, 200).
wait_until(_F, 0) -> timeout;
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(25), wait_until(F, N - 1)
    end.
