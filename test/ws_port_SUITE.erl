%% The port's websocket client (c_src/PROTOCOL.md: ws_open, ws_send,
%% ws_close, {ws, Conn, Event}) over the raw port, against a hand-played TLS
%% websocket server (ibkr_ws_peer): the upgrade request, the Accept check,
%% masking, messages (whole, fragmented, with a ping in between), close
%% handshakes both ways, protocol failures, replacement, timeouts, cancel
%% and bad arguments.
-module(ws_port_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([upgrade_request/1, tic_masked_and_messages/1, frames_with_the_101/1,
         fragmented_with_ping/1, server_close/1, client_close/1, wrong_accept/1,
         missing_upgrade/1, refused_upgrade/1, masked_server_frame/1, too_large/1,
         send_over_cap/1, peer_eof/1, replaced/1, open_timeout/1, cancel_open/1,
         untrusted_certificate/1, bad_arguments/1, before_init/1, binary_message/1,
         burst_in_order/1, close_unanswered/1, send_busy/1, plain_ws/1]).

-define(COOKIE, <<"a1b2c3d4e5f60718293a4b5c6d7e8f90">>).
-define(T, 10000).

suite() -> [{timetrap, {seconds, 60}}].

all() ->
    [upgrade_request, tic_masked_and_messages, frames_with_the_101, fragmented_with_ping,
     binary_message, server_close, client_close, wrong_accept, missing_upgrade,
     refused_upgrade, masked_server_frame, too_large, send_over_cap, peer_eof, replaced,
     open_timeout, cancel_open, untrusted_certificate, bad_arguments, before_init,
     burst_in_order, close_unanswered, send_busy, plain_ws].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ssl),
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Path = ibkr_oauth_port:path(),
    case filelib:is_regular(Path) of
        true -> Config;
        false -> {skip, {no_port_program, Path}}
    end.

end_per_suite(_Config) -> ok.

init_per_testcase(_Case, Config) ->
    Peer = ibkr_ws_peer:listen(),
    [{peer, Peer} | Config].

end_per_testcase(_Case, Config) ->
    ibkr_ws_peer:close(?config(peer, Config)).

%%====================================================================
%% Cases
%%====================================================================

%% What the port asks for: GET <base path>/ws?oauth_token=<access token>,
%% the cookie, the default User-Agent, a fresh 16-byte key, version 13.
upgrade_request(Config) ->
    {P, Peer, Token} = port(Config),
    ok = ibkr_oauth_port:send(P, 1, {ws_open, #{cookie => ?COOKIE}}),
    S = ibkr_ws_peer:accept(Peer),
    Req = ibkr_ws_peer:read_upgrade(S),
    ?assertEqual(<<"GET">>, maps:get(method, Req)),
    ?assertEqual(<<"/v1/api/ws?oauth_token=", Token/binary>>, maps:get(target, Req)),
    ?assertEqual(<<"api=", ?COOKIE/binary>>, ibkr_ws_peer:header(<<"cookie">>, Req)),
    ?assertEqual(<<"ClientPortalGW/1">>, ibkr_ws_peer:header(<<"user-agent">>, Req)),
    ?assertEqual(<<"13">>, ibkr_ws_peer:header(<<"sec-websocket-version">>, Req)),
    ?assertEqual(<<"websocket">>, string:lowercase(ibkr_ws_peer:header(<<"upgrade">>, Req))),
    ?assertMatch(<<"localhost:", _/binary>>, ibkr_ws_peer:header(<<"host">>, Req)),
    Key = ibkr_ws_peer:header(<<"sec-websocket-key">>, Req),
    ?assertEqual(16, byte_size(base64:decode(Key))),
    ?assertEqual(undefined, ibkr_ws_peer:header(<<"authorization">>, Req)),
    ok = ibkr_ws_peer:answer_101(S, Key),
    {ok, Conn} = await(P, 1),
    ?assert(is_integer(Conn) andalso Conn > 0),
    %% A second socket gets another key and a higher Conn; its User-Agent is ours.
    ok = ibkr_oauth_port:send(P, 2, {ws_open, #{cookie => ?COOKIE, user_agent => <<"ua/2">>}}),
    ?assertEqual({closed, replaced}, await_event(P, Conn)),
    S2 = ibkr_ws_peer:accept(Peer),
    Req2 = ibkr_ws_peer:read_upgrade(S2),
    ?assertEqual(<<"ua/2">>, ibkr_ws_peer:header(<<"user-agent">>, Req2)),
    Key2 = ibkr_ws_peer:header(<<"sec-websocket-key">>, Req2),
    ?assertNotEqual(Key, Key2),
    ok = ibkr_ws_peer:answer_101(S2, Key2),
    {ok, Conn2} = await(P, 2),
    ?assert(Conn2 > Conn),
    stop_port(P).

%% tic goes out as one masked text frame; text frames come back as events.
tic_masked_and_messages(Config) ->
    {P, S, Conn} = open(Config),
    ok = call(P, 2, {ws_send, Conn, <<"tic">>}),
    ?assertMatch(#{fin := true, opcode := 1, masked := true, payload := <<"tic">>},
                 ibkr_ws_peer:recv_frame(S)),
    Hb = <<"{\"topic\":\"system\",\"hb\":1700000000000}">>,
    ok = ibkr_ws_peer:send_frame(S, true, 1, Hb),
    assert_json(Hb, #{<<"topic">> => <<"system">>, <<"hb">> => 1700000000000},
                await_event(P, Conn)),
    ok = ibkr_ws_peer:send_frame(S, true, 1, <<"waiting for session">>),
    ?assertEqual({text, <<"waiting for session">>}, await_event(P, Conn)),
    %% Two sends, two frames, each masked (with its own key: payloads differ).
    ok = call(P, 3, {ws_send, Conn, <<"smd+265598+{\"fields\":[\"31\"]}">>}),
    ok = call(P, 4, {ws_send, Conn, <<>>}),
    ?assertMatch(#{masked := true, payload := <<"smd+265598+{\"fields\":[\"31\"]}">>},
                 ibkr_ws_peer:recv_frame(S)),
    ?assertMatch(#{masked := true, opcode := 1, payload := <<>>}, ibkr_ws_peer:recv_frame(S)),
    stop_port(P).

%% Frames written together with the 101 are not lost.
frames_with_the_101(Config) ->
    {P, Peer, _} = port(Config),
    ok = ibkr_oauth_port:send(P, 1, {ws_open, #{cookie => ?COOKIE}}),
    S = ibkr_ws_peer:accept(Peer),
    Key = ibkr_ws_peer:header(<<"sec-websocket-key">>, ibkr_ws_peer:read_upgrade(S)),
    Sys = <<"{\"topic\":\"system\",\"success\":\"user1\",\"isFT\":false,\"isPaper\":true}">>,
    ok = ibkr_ws_peer:answer_101(S, Key, [frame(Sys), frame(<<"second">>)]),
    {ok, Conn} = await(P, 1),
    assert_json(Sys, #{<<"topic">> => <<"system">>, <<"success">> => <<"user1">>,
                       <<"isFT">> => false, <<"isPaper">> => true}, await_event(P, Conn)),
    ?assertEqual({text, <<"second">>}, await_event(P, Conn)),
    stop_port(P).

%% A message in three fragments with a ping between them arrives once,
%% whole; the ping is answered with a masked pong carrying its payload.
fragmented_with_ping(Config) ->
    {P, S, Conn} = open(Config),
    ok = ibkr_ws_peer:send_frame(S, false, 1, <<"{\"topic\":\"smd+265598\",">>),
    ok = ibkr_ws_peer:send_frame(S, false, 0, <<"\"31\":\"189.60\"">>),
    ok = ibkr_ws_peer:send_frame(S, true, 9, <<"are you there">>),
    ?assertMatch(#{fin := true, opcode := 10, masked := true, payload := <<"are you there">>},
                 ibkr_ws_peer:recv_frame(S)),
    ok = ibkr_ws_peer:send_frame(S, true, 0, <<"}">>),
    assert_json(<<"{\"topic\":\"smd+265598\",\"31\":\"189.60\"}">>,
                #{<<"topic">> => <<"smd+265598">>, <<"31">> => <<"189.60">>},
                await_event(P, Conn)),
    %% A large message (over 64 KiB, 64-bit length) in one frame.
    Big = binary:copy(<<"x">>, 70000),
    ok = ibkr_ws_peer:send_frame(S, true, 1, Big),
    ?assertEqual({text, Big}, await_event(P, Conn)),
    stop_port(P).

%% Binary messages too: JSON decoded, anything else as it came.
binary_message(Config) ->
    {P, S, Conn} = open(Config),
    ok = ibkr_ws_peer:send_frame(S, true, 2, <<0, 1, 2, 255>>),
    ?assertEqual({text, <<0, 1, 2, 255>>}, await_event(P, Conn)),
    ok = ibkr_ws_peer:send_frame(S, true, 2, <<"[1, 2.5, null, true, \"x\", {}]">>),
    ?assertEqual({message, [1, 2.5, null, true, <<"x">>, #{}]}, await_event(P, Conn)),
    %% Almost JSON is text.
    ok = ibkr_ws_peer:send_frame(S, true, 1, <<"{\"a\":1">>),
    ?assertEqual({text, <<"{\"a\":1">>}, await_event(P, Conn)),
    stop_port(P).

%% The server's close is answered with the same code (masked) and reported.
server_close(Config) ->
    {P, S, Conn} = open(Config),
    ok = ibkr_ws_peer:send_frame(S, true, 8, <<1001:16, "nightly reset">>),
    ?assertMatch(#{opcode := 8, masked := true, payload := <<1001:16, _/binary>>},
                 ibkr_ws_peer:recv_frame(S)),
    ?assertEqual({closed, {close, 1001, <<"nightly reset">>}}, await_event(P, Conn)),
    ?assertEqual({error, closed}, call(P, 2, {ws_send, Conn, <<"tic">>})),
    %% A close without a code reads as 1005.
    {P2, S2, Conn2} = open(Config, P),
    ok = ibkr_ws_peer:send_frame(S2, true, 8, <<>>),
    ?assertMatch(#{opcode := 8}, ibkr_ws_peer:recv_frame(S2)),
    ?assertEqual({closed, {close, 1005, <<>>}}, await_event(P2, Conn2)),
    stop_port(P).

%% ws_close sends close 1000 and waits for the server's; no event follows.
client_close(Config) ->
    {P, S, Conn} = open(Config),
    ok = call(P, 2, {ws_close, Conn}),
    ?assertMatch(#{opcode := 8, masked := true, payload := <<1000:16>>},
                 ibkr_ws_peer:recv_frame(S)),
    ok = ibkr_ws_peer:send_frame(S, true, 8, <<1000:16>>),
    %% The port closes the connection once the close handshake is done.
    ?assertEqual({error, closed}, ssl:recv(S, 0, ?T)),
    ?assertEqual({error, closed}, call(P, 3, {ws_send, Conn, <<"tic">>})),
    ok = call(P, 4, {ws_close, Conn}),
    no_ws_events(P),
    stop_port(P).

wrong_accept(Config) ->
    {P, Peer, _} = port(Config),
    ok = ibkr_oauth_port:send(P, 1, {ws_open, #{cookie => ?COOKIE}}),
    S = ibkr_ws_peer:accept(Peer),
    Key = ibkr_ws_peer:header(<<"sec-websocket-key">>, ibkr_ws_peer:read_upgrade(S)),
    %% The Accept of another key.
    Other = base64:encode(crypto:strong_rand_bytes(16)),
    ?assertNotEqual(Key, Other),
    ok = ibkr_ws_peer:answer_101(S, {accept, ibkr_ws_peer:accept_key(Other)}, <<>>),
    ?assertEqual({error, {bad_response, ws_accept}}, await(P, 1)),
    %% No Accept at all.
    ok = ibkr_oauth_port:send(P, 2, {ws_open, #{cookie => ?COOKIE}}),
    S2 = ibkr_ws_peer:accept(Peer),
    _ = ibkr_ws_peer:read_upgrade(S2),
    ok = ibkr_ws_peer:answer_raw(S2, <<"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                       "Connection: Upgrade\r\n\r\n">>),
    ?assertEqual({error, {bad_response, ws_accept}}, await(P, 2)),
    stop_port(P).

missing_upgrade(Config) ->
    {P, Peer, _} = port(Config),
    ok = ibkr_oauth_port:send(P, 1, {ws_open, #{cookie => ?COOKIE}}),
    S = ibkr_ws_peer:accept(Peer),
    Key = ibkr_ws_peer:header(<<"sec-websocket-key">>, ibkr_ws_peer:read_upgrade(S)),
    ok = ibkr_ws_peer:answer_raw(S, [<<"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                       "Sec-WebSocket-Accept: ">>, ibkr_ws_peer:accept_key(Key),
                                     <<"\r\n\r\n">>]),
    ?assertEqual({error, {bad_response, ws_upgrade}}, await(P, 1)),
    ok = ibkr_oauth_port:send(P, 2, {ws_open, #{cookie => ?COOKIE}}),
    S2 = ibkr_ws_peer:accept(Peer),
    _ = ibkr_ws_peer:read_upgrade(S2),
    ok = ibkr_ws_peer:answer_raw(S2, <<"this is not HTTP\r\n\r\n">>),
    ?assertEqual({error, {bad_response, ws_upgrade}}, await(P, 2)),
    stop_port(P).

refused_upgrade(Config) ->
    {P, Peer, _} = port(Config),
    ok = ibkr_oauth_port:send(P, 1, {ws_open, #{cookie => ?COOKIE}}),
    S = ibkr_ws_peer:accept(Peer),
    _ = ibkr_ws_peer:read_upgrade(S),
    Body = <<"{\"error\":\"not authenticated\"}">>,
    ok = ibkr_ws_peer:answer_raw(S, [<<"HTTP/1.1 401 Unauthorized\r\nContent-Length: ">>,
                                     integer_to_binary(byte_size(Body)), <<"\r\n\r\n">>, Body]),
    ?assertEqual({error, {http, 401, Body}}, await(P, 1)),
    stop_port(P).

%% A masked frame from the server fails the connection with 1002.
masked_server_frame(Config) ->
    {P, S, Conn} = open(Config),
    ok = ibkr_ws_peer:send_frame(S, true, 1, <<"{}">>, #{mask => true}),
    ?assertMatch(#{opcode := 8, masked := true, payload := <<1002:16>>},
                 ibkr_ws_peer:recv_frame(S)),
    ?assertEqual({closed, {protocol, bad_frame}}, await_event(P, Conn)),
    stop_port(P).

%% max_message caps a message, also across fragments: 1009.
too_large(Config) ->
    {P, S, Conn} = open(Config, #{max_message => 100}),
    ok = ibkr_ws_peer:send_frame(S, true, 1, binary:copy(<<"a">>, 100)),
    ?assertEqual({text, binary:copy(<<"a">>, 100)}, await_event(P, Conn)),
    ok = ibkr_ws_peer:send_frame(S, false, 1, binary:copy(<<"a">>, 60)),
    ok = ibkr_ws_peer:send_frame(S, true, 0, binary:copy(<<"a">>, 60)),
    ?assertMatch(#{opcode := 8, payload := <<1009:16>>}, ibkr_ws_peer:recv_frame(S)),
    ?assertEqual({closed, {protocol, too_large}}, await_event(P, Conn)),
    stop_port(P).

send_over_cap(Config) ->
    {P, S, Conn} = open(Config, #{max_message => 10}),
    ?assertEqual({error, {badarg, text}}, call(P, 2, {ws_send, Conn, <<"01234567890">>})),
    ok = call(P, 3, {ws_send, Conn, <<"0123456789">>}),
    ?assertMatch(#{payload := <<"0123456789">>}, ibkr_ws_peer:recv_frame(S)),
    stop_port(P).

%% The server drops TCP without a close frame.
peer_eof(Config) ->
    {P, S, Conn} = open(Config),
    ok = ssl:close(S),
    ?assertEqual({closed, {transport, closed}}, await_event(P, Conn)),
    stop_port(P).

%% A new ws_open replaces the open socket: `replaced`, then a close 1000 to
%% the old peer; the new one works.
replaced(Config) ->
    {P, S, Conn} = open(Config),
    ok = ibkr_oauth_port:send(P, 2, {ws_open, #{cookie => ?COOKIE}}),
    ?assertEqual({closed, replaced}, await_event(P, Conn)),
    S2 = ibkr_ws_peer:accept(?config(peer, Config)),
    Key = ibkr_ws_peer:header(<<"sec-websocket-key">>, ibkr_ws_peer:read_upgrade(S2)),
    ok = ibkr_ws_peer:answer_101(S2, Key),
    {ok, Conn2} = await(P, 2),
    ?assertMatch(#{opcode := 8, payload := <<1000:16>>}, ibkr_ws_peer:recv_frame(S)),
    ?assertEqual({error, closed}, call(P, 10, {ws_send, Conn, <<"tic">>})),
    ok = call(P, 11, {ws_send, Conn2, <<"tic">>}),
    ?assertMatch(#{payload := <<"tic">>}, ibkr_ws_peer:recv_frame(S2)),
    stop_port(P).

%% 20,000 messages (about 1.7 MB) in one write: each delivered once, in
%% order, although the port reads at most 1 MiB per turn (coming back for
%% the rest on the next one).
burst_in_order(Config) ->
    {P, S, Conn} = open(Config),
    N = 20000,
    Frames = [frame(<<"{\"seq\":", (integer_to_binary(I))/binary, ",\"pad\":\"",
                      (binary:copy(<<"p">>, 60))/binary, "\"}">>) || I <- lists:seq(1, N)],
    ok = ibkr_ws_peer:send_raw(S, Frames),
    Seqs = [begin
                {message, #{<<"seq">> := Seq}} = await_event(P, Conn),
                Seq
            end || _ <- lists:seq(1, N)],
    ?assertEqual(lists:seq(1, N), Seqs),
    %% And the socket still works both ways.
    ok = call(P, 2, {ws_send, Conn, <<"tic">>}),
    ?assertMatch(#{payload := <<"tic">>}, ibkr_ws_peer:recv_frame(S)),
    stop_port(P).

%% A server that never answers our close: the port closes the connection
%% itself (after its 2 s wait), silently.
close_unanswered(Config) ->
    {P, S, Conn} = open(Config),
    ok = call(P, 2, {ws_close, Conn}),
    ?assertMatch(#{opcode := 8, payload := <<1000:16>>}, ibkr_ws_peer:recv_frame(S)),
    ?assertEqual({error, closed}, ssl:recv(S, 0, ?T)),
    no_ws_events(P),
    stop_port(P).

%% A server that does not read: queued output is bounded, ws_send answers
%% busy instead of buffering without end.
send_busy(Config) ->
    {P, _S, Conn} = open(Config, #{max_message => 1048576}),
    Text = binary:copy(<<"b">>, 1048576),
    Replies = send_until_busy(P, Conn, Text, 1, 200),
    ?assertEqual({error, busy}, lists:last(Replies)),
    ?assert(lists:all(fun(R) -> R =:= ok end, lists:droplast(Replies))),
    %% 16 MiB queued at least, beyond what the kernel buffers took.
    ?assert(length(Replies) > 16),
    stop_port(P).

send_until_busy(_P, _Conn, _Text, I, Max) when I > Max -> [];
send_until_busy(P, Conn, Text, I, Max) ->
    case call(P, 100 + I, {ws_send, Conn, Text}) of
        ok -> [ok | send_until_busy(P, Conn, Text, I + 1, Max)];
        Other -> [Other]
    end.

%% An http:// base URL gives ws:// on plain TCP, same handshake and frames.
plain_ws(_Config) ->
    Peer = ibkr_ws_peer:listen_plain(),
    try
        {ok, P, _} = ibkr_oauth_port:open(),
        Cfg = port_config(#{base_url => maps:get(base_url, Peer)}),
        ok = call(P, 1, {init, Cfg}),
        ok = ibkr_oauth_port:send(P, 2, {ws_open, #{cookie => ?COOKIE}}),
        S = ibkr_ws_peer:accept(Peer),
        Req = ibkr_ws_peer:read_upgrade(S),
        Token = maps:get(access_token, Cfg),
        ?assertEqual(<<"/v1/api/ws?oauth_token=", Token/binary>>, maps:get(target, Req)),
        ?assertMatch(<<"127.0.0.1:", _/binary>>, ibkr_ws_peer:header(<<"host">>, Req)),
        ok = ibkr_ws_peer:answer_101(S, ibkr_ws_peer:header(<<"sec-websocket-key">>, Req)),
        {ok, Conn} = await(P, 2),
        ok = call(P, 3, {ws_send, Conn, <<"tic">>}),
        ?assertMatch(#{masked := true, payload := <<"tic">>}, ibkr_ws_peer:recv_frame(S)),
        ok = ibkr_ws_peer:send_frame(S, true, 1, <<"{\"topic\":\"tic\",\"alive\":true}">>),
        ?assertEqual({message, #{<<"topic">> => <<"tic">>, <<"alive">> => true}},
                     await_event(P, Conn)),
        stop_port(P)
    after
        ibkr_ws_peer:close(Peer)
    end.

%% A server that never answers the upgrade: timeout.
open_timeout(Config) ->
    {P, Peer, _} = port(Config),
    %% Long enough for TLS under valgrind (IBKR_TEST_SLOW), where the
    %% handshake alone takes a while; the server then never answers.
    Timeout = case os:getenv("IBKR_TEST_SLOW") of
                  false -> 300;
                  _ -> 5000
              end,
    ok = ibkr_oauth_port:send(P, 1, {ws_open, #{cookie => ?COOKIE, timeout => Timeout}}),
    S = ibkr_ws_peer:accept(Peer),
    _ = ibkr_ws_peer:read_upgrade(S),
    ?assertEqual({error, timeout}, await(P, 1)),
    stop_port(P).

cancel_open(Config) ->
    {P, Peer, _} = port(Config),
    ok = ibkr_oauth_port:send(P, 1, {ws_open, #{cookie => ?COOKIE, timeout => infinity}}),
    S = ibkr_ws_peer:accept(Peer),
    _ = ibkr_ws_peer:read_upgrade(S),
    ok = ibkr_oauth_port:send(P, 0, {cancel, 1}),
    ?assertEqual({error, cancelled}, await(P, 1)),
    ?assertEqual({error, closed}, ssl:recv(S, 0, ?T)),
    stop_port(P).

%% The certificate is verified like every HTTPS request: without ca_file the
%% test CA is unknown.
untrusted_certificate(Config) ->
    Peer = ?config(peer, Config),
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = call(P, 1, {init, port_config(#{base_url => maps:get(base_url, Peer)})}),
    ok = ibkr_oauth_port:send(P, 2, {ws_open, #{cookie => ?COOKIE}}),
    {ok, T} = ssl:transport_accept(maps:get(listen, Peer), ?T),
    ?assertMatch({error, _}, ssl:handshake(T, ?T)),
    ?assertEqual({error, {transport, tls}}, await(P, 2)),
    stop_port(P).

bad_arguments(Config) ->
    {P, _Peer, _} = port(Config),
    ?assertEqual({error, {badarg, cookie}}, call(P, 1, {ws_open, #{}})),
    ?assertEqual({error, {badarg, cookie}}, call(P, 2, {ws_open, #{cookie => <<"a;b">>}})),
    ?assertEqual({error, {badarg, cookie}}, call(P, 3, {ws_open, #{cookie => <<>>}})),
    ?assertEqual({error, {badarg, cookie}}, call(P, 4, {ws_open, #{cookie => "list"}})),
    ?assertEqual({error, {badarg, user_agent}},
                 call(P, 5, {ws_open, #{cookie => ?COOKIE, user_agent => <<"a\r\nb">>}})),
    ?assertEqual({error, {badarg, timeout}},
                 call(P, 6, {ws_open, #{cookie => ?COOKIE, timeout => -1}})),
    ?assertEqual({error, {badarg, timeout}},
                 call(P, 7, {ws_open, #{cookie => ?COOKIE, timeout => never}})),
    %% 0 is a deadline already passed: answered at once, nothing connects.
    ?assertEqual({error, timeout}, call(P, 15, {ws_open, #{cookie => ?COOKIE, timeout => 0}})),
    ?assertEqual({error, {badarg, max_message}},
                 call(P, 8, {ws_open, #{cookie => ?COOKIE, max_message => 0}})),
    ?assertEqual({error, {badarg, opts}}, call(P, 9, {ws_open, not_a_map})),
    ?assertEqual({error, closed}, call(P, 10, {ws_send, 1, <<"tic">>})),
    ?assertEqual({error, {badarg, text}}, call(P, 11, {ws_send, 1, "tic"})),
    ?assertEqual({error, {badarg, conn}}, call(P, 12, {ws_send, x, <<"tic">>})),
    ?assertEqual(ok, call(P, 13, {ws_close, 7})),
    ?assertEqual({error, badarg}, call(P, 14, {ws_open, #{}, extra})),
    stop_port(P).

before_init(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    ?assertEqual({error, not_initialized}, call(P, 1, {ws_open, #{cookie => ?COOKIE}})),
    ?assertEqual({error, not_initialized}, call(P, 2, {ws_send, 1, <<"tic">>})),
    stop_port(P).

%%====================================================================
%% Helpers
%%====================================================================

%% A port initialised against the peer; also the access token.
port(Config) ->
    Peer = ?config(peer, Config),
    {ok, P, _} = ibkr_oauth_port:open(),
    Cfg = port_config(#{base_url => maps:get(base_url, Peer), ca_file => maps:get(ca_file, Peer)}),
    ok = call(P, 1000000, {init, Cfg}),
    {P, Peer, maps:get(access_token, Cfg)}.

port_config(Extra) ->
    {ok, V} = ibkr_oauth_config:validate(ibkr_test_lib:vector_config(public, Extra)),
    ibkr_oauth_config:to_port(V).

open(Config) -> open(Config, #{}).

open(Config, Opts) when is_map(Opts) ->
    {P, _, _} = port(Config),
    open_on(Config, P, Opts);
open(Config, P) ->
    open_on(Config, P, #{}).

open_on(Config, P, Opts) ->
    Peer = ?config(peer, Config),
    Id = erlang:unique_integer([positive]),
    ok = ibkr_oauth_port:send(P, Id, {ws_open, Opts#{cookie => ?COOKIE}}),
    S = ibkr_ws_peer:accept(Peer),
    Key = ibkr_ws_peer:header(<<"sec-websocket-key">>, ibkr_ws_peer:read_upgrade(S)),
    ok = ibkr_ws_peer:answer_101(S, Key),
    {ok, Conn} = await(P, Id),
    {P, S, Conn}.

frame(Payload) ->
    Len = byte_size(Payload),
    true = Len < 126,
    <<1:1, 0:3, 1:4, 0:1, Len:7, Payload/binary>>.

%% A JSON message arrives decoded (Raw: what was sent, for the report).
assert_json(Raw, Term, Event) ->
    ?assertEqual({Raw, {message, Term}}, {Raw, Event}).

call(P, Id, Cmd) ->
    ok = ibkr_oauth_port:send(P, Id, Cmd),
    await(P, Id).

await(P, Id) ->
    case recv(P) of
        {Id, Reply} -> Reply;
        {0, {log, _, _}} -> await(P, Id);
        Other -> ct:fail({unexpected_frame, Id, Other})
    end.

await_event(P, Conn) ->
    case recv(P) of
        {0, {ws, Conn, Event}} -> Event;
        {0, {log, _, _}} -> await_event(P, Conn);
        Other -> ct:fail({unexpected_frame, Conn, Other})
    end.

%% Nothing about any socket is queued (after a round trip through the port).
no_ws_events(P) ->
    ok = ibkr_oauth_port:send(P, 999999, {echo, sync}),
    no_ws_events_until_sync(P).

no_ws_events_until_sync(P) ->
    case recv(P) of
        {999999, {ok, sync}} -> ok;
        {0, {log, _, _}} -> no_ws_events_until_sync(P);
        Other -> ct:fail({unexpected_frame, Other})
    end.

recv(P) ->
    receive
        {P, {data, Bin}} ->
            {ok, Id, Msg} = ibkr_oauth_port:decode(Bin),
            {Id, Msg};
        {P, {exit_status, St}} -> ct:fail({port_exited, St})
    after ?T -> ct:fail(no_frame)
    end.

stop_port(P) ->
    catch erlang:port_close(P),
    ok.

