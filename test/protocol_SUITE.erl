%% The port protocol (c_src/PROTOCOL.md) over the real port program, at two
%% levels: a raw port opened by the test (framing, garbage, limits, EOF), and
%% the ibkr_oauth session on top of it (concurrency, out-of-order replies,
%% port crashes and restarts, start errors, request/4 policies against a
%% local plain-HTTP stub of IBKR, redaction).
-module(protocol_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([echo_shapes/1, echo_pipelined/1, commands_before_init/1,
         garbage_frames/1, oversized_frame/1, largest_frame/1, send_too_large/1,
         close_port_exits/1, peer_killed_port_exits/1, out_of_order_raw/1,
         cancel_raw/1, no_silent_resend/1, known_atoms_cover_replies/1, batch_frames/1]).
-export([concurrent_sign/1, concurrent_sign_10k_processes/1, out_of_order_session/1,
         killed_port_pending/1, port_restart_limit/1, stop_closes_port/1,
         bad_config_caller_survives/1, bad_config_trapping_caller/1,
         broken_binary/1, named_sessions/1, supervised_session/1,
         bad_arguments/1, request_too_large/1, request_timeout/1,
         single_flight_handshake/1, retry_401_once/1, second_401_returned/1,
         retry_429/1, transport_retry_policy/1, handshake_error/1,
         brokerage_session_and_logout/1, auto_authenticate/1, tickle/1,
         format_status_redacts/1, port_log_events/1, query_encoding/1,
         lst_complete_used_by_request/1, renewal_backoff/1, killed_port_during_handshake/1]).
-export([peer_hold_port/1, init/1, log/2]).

-define(MiB, (1024 * 1024)).

suite() -> [{timetrap, {seconds, 120}}].

all() -> [{group, raw}, {group, session}].

groups() ->
    [{raw, [], [echo_shapes, echo_pipelined, commands_before_init, garbage_frames,
                oversized_frame, largest_frame, send_too_large, close_port_exits,
                peer_killed_port_exits, out_of_order_raw, cancel_raw,
                no_silent_resend, known_atoms_cover_replies, batch_frames]},
     {session, [], [concurrent_sign, concurrent_sign_10k_processes, out_of_order_session,
                    killed_port_pending, port_restart_limit, stop_closes_port,
                    bad_config_caller_survives, bad_config_trapping_caller,
                    broken_binary, named_sessions, supervised_session, bad_arguments,
                    request_too_large, request_timeout, single_flight_handshake,
                    retry_401_once, second_401_returned, retry_429,
                    transport_retry_policy, handshake_error,
                    brokerage_session_and_logout, auto_authenticate, tickle,
                    format_status_redacts, port_log_events, query_encoding,
                    lst_complete_used_by_request, renewal_backoff,
                    killed_port_during_handshake]}].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Path = ibkr_oauth_port:path(),
    case filelib:is_regular(Path) of
        true -> [{port_path, Path} | Config];
        false -> {skip, {no_port_program, Path}}
    end.

end_per_suite(_Config) ->
    ok.

init_per_testcase(_TC, Config) ->
    process_flag(trap_exit, false),
    Config.

end_per_testcase(_TC, _Config) ->
    ok.

%%====================================================================
%% Raw port
%%====================================================================

%% A batch frame (first byte 0, then length-prefixed terms): each term is
%% handled as if it came alone, in order; a bad length ends the batch with
%% bad_frame, a nested batch is bad_term, and the port carries on.
batch_frames(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    Inner = fun(T) -> B = term_to_binary(T), [<<(byte_size(B)):32>>, B] end,
    true = port_command(P, [0, Inner({1, {echo, a}}), Inner({2, {echo, <<"b">>}}),
                            Inner({3, stats}), Inner({4, {echo, c}})]),
    ?assertEqual([{1, {ok, a}}, {2, {ok, <<"b">>}}, {3, {error, not_initialized}}, {4, {ok, c}}],
                 [recv_reply(P) || _ <- lists:seq(1, 4)]),
    %% The third length runs past the end: two replies, then bad_frame.
    true = port_command(P, [0, Inner({5, {echo, d}}), Inner({6, {echo, e}}), <<0, 0, 1, 0, 131>>]),
    ?assertEqual([{5, {ok, d}}, {6, {ok, e}}, {0, {protocol_error, bad_frame}}],
                 [recv_reply(P) || _ <- lists:seq(1, 3)]),
    %% A batch inside a batch, and a bare tag byte.
    true = port_command(P, [0, <<0, 0, 0, 1, 0>>, Inner({7, {echo, f}})]),
    ?assertEqual([{0, {protocol_error, bad_term}}, {7, {ok, f}}],
                 [recv_reply(P) || _ <- lists:seq(1, 2)]),
    true = port_command(P, <<0>>),
    ?assertEqual({0, {protocol_error, bad_term}}, recv_reply(P)),
    ?assertEqual({ok, alive}, raw_call(P, 8, {echo, alive})),
    ibkr_oauth_port:close(P).

echo_shapes(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    Shapes = [ok, [], <<>>, 0, -1, 255, 256, 16#7FFFFFFF, -16#80000000,
              16#FFFFFFFFFFFFFFFF, 1 bsl 64, -(1 bsl 200), 1 bsl 2000,
              1.5, -0.0, 1.0e300, "a string", [1, [2, [3, [4]]]], [a | b],
              {}, {a}, list_to_tuple(lists:seq(1, 300)),
              <<1, 2, 3>>, <<0:8000>>, binary:copy(<<"x">>, ?MiB),
              <<1:1>>, <<5:3>>,
              #{}, #{a => 1, <<"b">> => [2], {c} => #{d => e}},
              maps:from_list([{I, I} || I <- lists:seq(1, 100)]),
              'ünïcödé', list_to_atom(lists:duplicate(255, $a)),
              self(), make_ref(), P,
              lists:seq(1, 10000), deep(500),
              {nested, [#{k => {<<"v">>, [1.0, -2]}}]}],
    lists:foldl(fun(T, Id) ->
                        ?assertEqual({ok, T}, raw_call(P, Id, {echo, T})),
                        Id + 1
                end, 1, Shapes),
    %% The largest id.
    ?assertEqual({ok, x}, raw_call(P, 16#FFFFFFFFFFFFFFFF, {echo, x})),
    ibkr_oauth_port:close(P).

deep(0) -> leaf;
deep(N) -> [deep(N - 1)].

%% Many frames written back to back (several per read on the C side).
echo_pipelined(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    N = 5000,
    [ok = ibkr_oauth_port:send(P, I, {echo, {I, <<I:64>>}}) || I <- lists:seq(1, N)],
    Replies = [recv_reply(P) || _ <- lists:seq(1, N)],
    ?assertEqual([{I, {ok, {I, <<I:64>>}}} || I <- lists:seq(1, N)], lists:sort(Replies)),
    ibkr_oauth_port:close(P).

commands_before_init(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    ?assertEqual({error, not_initialized}, raw_call(P, 1, {sign, <<"GET">>, <<"https://a/b">>, #{}})),
    ?assertEqual({error, not_initialized}, raw_call(P, 2, {lst_request, #{}})),
    ?assertEqual({error, not_initialized}, raw_call(P, 3, live_session_token)),
    ?assertEqual({error, not_initialized}, raw_call(P, 4, {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/">>}})),
    ?assertEqual({ok, still_here}, raw_call(P, 5, {echo, still_here})),
    %% A bad init is answered, and the port keeps serving.
    ?assertMatch({error, {bad_config, _, _}}, raw_call(P, 6, {init, #{}})),
    ?assertMatch({error, {bad_config, dh_prime, not_hex}},
                 raw_call(P, 7, {init, (port_config(#{}))#{dh_prime => <<"xyz">>}})),
    ?assertEqual(ok, raw_call(P, 8, {init, port_config(#{})})),
    ?assertEqual({error, not_authenticated}, raw_call(P, 9, {sign, <<"GET">>, <<"https://a/b">>, #{}})),
    ?assertMatch({ok, #{inflight := 0}}, raw_call(P, 10, stats)),
    ibkr_oauth_port:close(P).

garbage_frames(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = raw_call(P, 1, {init, port_config(#{})}),
    Serving = fun(Id) -> ?assertEqual({ok, Id}, raw_call(P, Id, {echo, Id})) end,
    %% Bytes that are not a term.
    rand:seed(exsss, {1, 2, 3}),
    lists:foreach(fun(I) ->
                          Junk = rand:bytes(1 + rand:uniform(200)),
                          port_command(P, Junk),
                          ?assertEqual({0, {protocol_error, bad_term}}, recv_frame(P)),
                          Serving(1000 + I)
                  end, lists:seq(1, 50)),
    [begin
         port_command(P, Bad),
         ?assertEqual({0, {protocol_error, bad_term}}, recv_frame(P)),
         Serving(2000)
     end || Bad <- [<<>>, <<131>>, <<130, 100>>, <<131, 104, 2, 97, 1>>,
                    %% a well-formed term with trailing bytes
                    <<(term_to_binary({1, {echo, a}}))/binary, 0>>,
                    %% compressed terms are refused
                    term_to_binary({1, {echo, lists:duplicate(1000, 0)}}, [compressed])]],
    %% Valid terms that are not {Id, Command}.
    [begin
         port_command(P, term_to_binary(T)),
         ?assertEqual({0, {protocol_error, bad_frame}}, recv_frame(P)),
         Serving(3000)
     end || T <- [hello, 42, {1}, {1, 2, 3}, {a, echo}, {-1, {echo, x}}, {1.0, {echo, x}},
                  {1 bsl 64, {echo, x}}, [1, {echo, x}], #{1 => echo}, {0, {echo, x}}]],
    %% {Id, X} with an unknown command or bad arguments.
    ?assertEqual({error, unknown_command}, raw_call(P, 10, unknown)),
    ?assertEqual({error, unknown_command}, raw_call(P, 11, {frobnicate, 1})),
    ?assertEqual({error, unknown_command}, raw_call(P, 12, 42)),
    ?assertEqual({error, unknown_command}, raw_call(P, 13, <<"sign">>)),
    assert_badarg(raw_call(P, 14, {sign, 1, 2, 3})),
    assert_badarg(raw_call(P, 15, {sign, <<"GET">>})),
    assert_badarg(raw_call(P, 16, sign)),
    assert_badarg(raw_call(P, 17, {sign, <<"GET">>, <<"https://a/b">>, #{nonce => 1}})),
    assert_badarg(raw_call(P, 18, {sign, <<"GET">>, <<"https://a/b">>, not_a_map})),
    assert_badarg(raw_call(P, 19, {sign, <<"GET">>, <<"https://a/\0b">>, #{}})),
    assert_badarg(raw_call(P, 20, {lst_request, #{nonce => <<>>}})),
    assert_badarg(raw_call(P, 21, {lst_request, #{timestamp => -1}})),
    assert_badarg(raw_call(P, 22, {lst_request, #{dh_random => <<"not hex">>}})),
    assert_badarg(raw_call(P, 23, {http, #{method => <<"BREW">>, url => <<"http://127.0.0.1:1/">>}})),
    assert_badarg(raw_call(P, 24, {http, #{method => <<"GET">>, url => <<"ftp://x/">>}})),
    assert_badarg(raw_call(P, 25, {http, not_a_map})),
    assert_badarg(raw_call(P, 26, {echo})),
    assert_badarg(raw_call(P, 27, {cancel, foo})),
    ?assertMatch({error, _}, raw_call(P, 28, {lst_complete, #{}})),
    Serving(4000),
    %% A cancel with id 0 for an unknown request: no reply at all.
    ok = ibkr_oauth_port:send(P, 0, {cancel, 123456}),
    ?assertEqual({ok, 4001}, raw_call(P, 4001, {echo, 4001})),
    ibkr_oauth_port:close(P).

assert_badarg({error, badarg}) -> ok;
assert_badarg({error, {badarg, F}}) when is_atom(F) -> ok;
assert_badarg(Other) -> ct:fail({expected_badarg, Other}).

%% A frame above 16 MiB is refused without being buffered; the port goes on.
oversized_frame(_Config) ->
    {ok, P, OsPid} = ibkr_oauth_port:open(),
    Big = term_to_binary({1, {echo, binary:copy(<<"z">>, 16 * ?MiB)}}),
    ?assert(byte_size(Big) > ibkr_oauth_port:max_frame()),
    port_command(P, Big),
    ?assertEqual({0, {protocol_error, frame_too_large}}, recv_frame(P, 30000)),
    ?assertEqual({ok, after_big}, raw_call(P, 2, {echo, after_big})),
    %% Twice in a row, with a normal frame in between.
    port_command(P, Big),
    port_command(P, term_to_binary({3, {echo, between}})),
    port_command(P, Big),
    ?assertEqual({0, {protocol_error, frame_too_large}}, recv_frame(P, 30000)),
    ?assertEqual({3, {ok, between}}, recv_frame(P, 30000)),
    ?assertEqual({0, {protocol_error, frame_too_large}}, recv_frame(P, 30000)),
    ?assertEqual({ok, still}, raw_call(P, 4, {echo, still})),
    %% It did not keep 16 MiB around.
    ct:log("port RSS after two refused frames: ~p kB", [rss_kb(OsPid)]),
    ibkr_oauth_port:close(P).

%% Exactly the limit is accepted.
largest_frame(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    Overhead = byte_size(term_to_binary({1, {echo, <<>>}})),
    Max = ibkr_oauth_port:max_frame(),
    %% BINARY_EXT has a fixed 4-byte length: the frame grows byte for byte.
    Payload = binary:copy(<<"m">>, Max - Overhead),
    {ok, Frame} = ibkr_oauth_port:encode(1, {echo, Payload}),
    ?assertEqual(Max, byte_size(Frame)),
    port_command(P, Frame),
    {1, {ok, Echoed}} = recv_frame(P, 30000),
    ?assertEqual(byte_size(Payload), byte_size(Echoed)),
    ?assertEqual({error, too_large}, ibkr_oauth_port:encode(2, {echo, <<Payload/binary, 0>>})),
    ibkr_oauth_port:close(P).

%% The Erlang side refuses to send a frame above the limit.
send_too_large(_Config) ->
    {ok, P, _} = ibkr_oauth_port:open(),
    ?assertEqual({error, too_large},
                 ibkr_oauth_port:send(P, 1, {echo, binary:copy(<<0>>, 16 * ?MiB + 1)})),
    ?assertEqual({ok, fine}, raw_call(P, 2, {echo, fine})),
    ibkr_oauth_port:close(P),
    ?assertEqual({error, port_down}, ibkr_oauth_port:send(P, 3, {echo, closed})).

%% Closing the port = EOF on fd 3: the C program exits, no orphan.
close_port_exits(_Config) ->
    {ok, P, OsPid} = ibkr_oauth_port:open(),
    ?assert(is_integer(OsPid)),
    ?assertEqual({ok, x}, raw_call(P, 1, {echo, x})),
    ?assert(os_alive(OsPid)),
    %% Even with an HTTP request in flight (a listener that never answers).
    {ok, Stub} = ibkr_http_stub:start(fun(_, _) -> noreply end),
    ok = raw_call(P, 2, {init, port_config(#{base_url => ibkr_http_stub:url(Stub)})}),
    ok = ibkr_oauth_port:send(P, 3, {http, #{method => <<"GET">>,
                                             url => <<(ibkr_http_stub:url(Stub))/binary, "/hang">>,
                                             sign => false, timeout => infinity}}),
    wait_until(fun() -> ibkr_http_stub:count(Stub, <<"/hang">>) =:= 1 end, 5000),
    T0 = erlang:monotonic_time(millisecond),
    ibkr_oauth_port:close(P),
    wait_until(fun() -> not os_alive(OsPid) end, 5000),
    ct:log("port program gone ~b ms after port_close", [erlang:monotonic_time(millisecond) - T0]),
    ibkr_http_stub:stop(Stub).

%% The BEAM that owns the port is killed: the port program notices EOF and
%% exits by itself.
peer_killed_port_exits(_Config) ->
    {Peer, PeerOsPid} = ibkr_check_lib:start_peer(),
    PortPid = peer:call(Peer, ?MODULE, peer_hold_port, [ibkr_oauth_port:path()]),
    ?assert(os_alive(PortPid)),
    T0 = erlang:monotonic_time(millisecond),
    os:cmd("kill -9 " ++ PeerOsPid),
    wait_until(fun() -> not os_alive(PortPid) end, 10000),
    ct:log("port program gone ~b ms after its BEAM was killed",
           [erlang:monotonic_time(millisecond) - T0]),
    catch peer:stop(Peer),
    ok.

%% Runs in the peer: a process that owns a port forever.
peer_hold_port(Path) ->
    Self = self(),
    spawn(fun() ->
                  {ok, P, OsPid} = ibkr_oauth_port:open(Path),
                  {ok, x} = raw_call(P, 1, {echo, x}),
                  Self ! {os_pid, OsPid},
                  receive after infinity -> ok end
          end),
    receive {os_pid, OsPid} -> OsPid end.

%% A slow HTTP request and fast commands: the fast ones answer first.
out_of_order_raw(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(_, _) -> {delay, 500, {200, [], <<"slow">>}} end),
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = raw_call(P, 1, {init, port_config(#{base_url => ibkr_http_stub:url(Stub)})}),
    ok = ibkr_oauth_port:send(P, 2, {http, #{method => <<"GET">>,
                                             url => <<(ibkr_http_stub:url(Stub))/binary, "/slow">>,
                                             sign => false, timeout => 5000}}),
    [ok = ibkr_oauth_port:send(P, I, {echo, I}) || I <- lists:seq(3, 102)],
    Order = [Id || {Id, _} <- [recv_reply(P, 5000) || _ <- lists:seq(1, 101)]],
    ?assertEqual(2, lists:last(Order)),
    ?assertEqual(lists:seq(3, 102), lists:droplast(Order)),
    ibkr_oauth_port:close(P),
    ibkr_http_stub:stop(Stub).

cancel_raw(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(_, _) -> noreply end),
    {ok, P, _} = ibkr_oauth_port:open(),
    Url = ibkr_http_stub:url(Stub),
    ok = raw_call(P, 1, {init, port_config(#{base_url => Url})}),
    ok = ibkr_oauth_port:send(P, 2, {http, #{method => <<"GET">>, url => <<Url/binary, "/hang">>,
                                             sign => false, timeout => infinity}}),
    wait_until(fun() -> ibkr_http_stub:count(Stub, <<"/hang">>) =:= 1 end, 5000),
    ibkr_oauth_port:cancel(P, 2),
    ?assertEqual({2, {error, cancelled}}, recv_reply(P, 5000)),
    %% The timeout of the request itself.
    ok = ibkr_oauth_port:send(P, 3, {http, #{method => <<"GET">>, url => <<Url/binary, "/hang">>,
                                             sign => false, timeout => 200}}),
    ?assertEqual({3, {error, timeout}}, recv_reply(P, 5000)),
    %% Nothing can reach a closed local port: connect error.
    {ok, L} = gen_tcp:listen(0, []),
    {ok, Free} = inet:port(L),
    gen_tcp:close(L),
    ok = ibkr_oauth_port:send(P, 4, {http, #{method => <<"GET">>,
                                             url => iolist_to_binary(["http://127.0.0.1:", integer_to_list(Free), "/"]),
                                             sign => false}}),
    ?assertEqual({4, {error, {transport, connect, #{sent => false}}}}, recv_reply(P, 5000)),
    ibkr_oauth_port:close(P),
    ibkr_http_stub:stop(Stub).

%% The port never sends a request twice by itself: a connection closed by the
%% server after it received the request is `{transport, Kind, #{sent => true}}',
%% and the server saw the request once (retrying is the Erlang side's
%% decision). libcurl by default silently resends a request, with the same
%% Authorization and nonce, when a *reused* keep-alive connection closes
%% before any byte of the answer -- for a POST that is a duplicate order.
%% (C-side fix, e.g.: CURLOPT_PREREQFUNCTION, libcurl >= 7.80, is called
%% before every send of a request including that resend; abort the second
%% call and report {transport, recv, #{sent => true}}.)
no_silent_resend(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/closed">>}, _) -> close;
                                         (_, _) -> {200, [], <<"ok">>}
                                      end),
    {ok, P, _} = ibkr_oauth_port:open(),
    Url = ibkr_http_stub:url(Stub),
    ok = raw_call(P, 1, {init, port_config(#{base_url => Url})}),
    Get = fun(Id, Path) -> raw_call(P, Id, {http, #{method => <<"GET">>, url => <<Url/binary, Path/binary>>,
                                                    sign => false}})
          end,
    %% Warm up a keep-alive connection, then POST on it.
    {ok, #{status := 200}} = Get(2, <<"/warm">>),
    R = raw_call(P, 3, {http, #{method => <<"POST">>, url => <<Url/binary, "/closed">>,
                                body => <<"{\"order\":1}">>, sign => false}}),
    %% The facts: it may have reached the server (whatever the kind).
    ?assertMatch({error, {transport, _, #{sent := true}}}, R),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/closed">>)),
    ibkr_oauth_port:close(P),
    ibkr_http_stub:stop(Stub).

%% Every atom PROTOCOL.md lists is known (binary_to_term(_, [safe]) needs it).
known_atoms_cover_replies(_Config) ->
    Doc = [ok, nomem, missing, badarg, too_long, not_pem, not_rsa, not_base64,
           decrypt_failed, not_hex, not_prime, too_small, not_authenticated,
           no_pending_handshake, bad_dh_response, lst_signature_mismatch, crypto_error,
           eacces, enoent, eisdir, file_error, bad_url, frame_too_large, bad_term,
           bad_frame, protocol_error, log, debug, info, notice, warning, error,
           resolve, connect, tls, send, recv, too_large, other, cancelled, timeout,
           http, transport, bad_response, not_json, missing_field, not_initialized,
           unknown_command, inflight, requests, handshakes, errors, expires_at, token,
           method, url, authorization, status, headers, body, bad_config, sent, bad_status,
           lst_expiration],
    Known = ibkr_oauth_port:known_atoms(),
    ?assertEqual([], Doc -- Known),
    %% decode/1 refuses atoms that do not exist rather than creating them.
    NewAtom = <<131, 104, 2, 97, 1, 119, 12, "zz_not_known">>,
    ?assertEqual({error, bad_term}, ibkr_oauth_port:decode(NewAtom)),
    ?assertEqual({error, bad_frame}, ibkr_oauth_port:decode(term_to_binary(x))),
    ?assertEqual({ok, 1, ok}, ibkr_oauth_port:decode(term_to_binary({1, ok}))).

%%====================================================================
%% Session
%%====================================================================

%% 100 processes x 100 sign calls with pinned nonce/timestamp, checked
%% against ibind's values.
concurrent_sign(_Config) ->
    {S, Expected} = signing_session(),
    Parent = self(),
    Pids = [spawn_link(fun() ->
                               Results = [begin
                                              {Args, Want} = lists:nth(1 + (I + J) rem length(Expected), Expected),
                                              {apply(ibkr_oauth, sign, [S | Args]), Want}
                                          end || J <- lists:seq(1, 100)],
                               Parent ! {self(), Results}
                       end) || I <- lists:seq(1, 100)],
    All = lists:append([receive {P, R} -> R after 60000 -> ct:fail(timeout) end || P <- Pids]),
    ?assertEqual(10000, length(All)),
    [?assertEqual({ok, Want}, Got) || {Got, Want} <- All],
    #{in_flight := 0} = ibkr_oauth:stats(S),
    ok = ibkr_oauth:stop(S).

%% 10,000 processes, one sign each, all in flight at once.
concurrent_sign_10k_processes(_Config) ->
    {S, Expected} = signing_session(),
    Parent = self(),
    N = 10000,
    Go = make_ref(),
    Pids = [spawn(fun() ->
                          receive Go -> ok end,
                          {Args, Want} = lists:nth(1 + I rem length(Expected), Expected),
                          Parent ! {self(), apply(ibkr_oauth, sign, [S | Args]) =:= {ok, Want}}
                  end) || I <- lists:seq(1, N)],
    [P ! Go || P <- Pids],
    Oks = [receive {P, Ok} -> Ok after 60000 -> ct:fail(timeout) end || P <- Pids],
    ?assertEqual(N, length([x || true <- Oks])),
    ok = ibkr_oauth:stop(S).

%% A slow request/4 is in flight while 500 signs complete.
out_of_order_session(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(
                   fun(#{path := <<"/slow">>}, _) -> {delay, 1000, {200, [], <<"slow">>}};
                      (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                   end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    {ok, _} = ibkr_oauth:authenticate(S),
    Self = self(),
    spawn_link(fun() -> Self ! {slow, ibkr_oauth:request(S, get, <<"/slow">>)} end),
    wait_until(fun() -> ibkr_http_stub:count(Stub, <<"/slow">>) =:= 1 end, 5000),
    [{ok, _} = ibkr_oauth:sign(S, get, <<"https://api.ibkr.com/v1/api/x">>) || _ <- lists:seq(1, 500)],
    receive {slow, _} -> ct:fail(slow_answered_first) after 0 -> ok end,
    receive {slow, R} -> ?assertMatch({ok, #{status := 200, body := <<"slow">>}}, R)
    after 5000 -> ct:fail(no_slow_answer)
    end,
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% kill -9 of the port program while requests are pending: every caller gets
%% {error, port_down} promptly; the session lives on with a new port.
killed_port_pending(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(
                   fun(#{path := <<"/hang">>}, _) -> noreply;
                      (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                   end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    {ok, _} = ibkr_oauth:authenticate(S),
    OsPid = ibkr_oauth:os_pid(S),
    Self = self(),
    Callers = [spawn_link(fun() -> Self ! {self(), ibkr_oauth:request(S, get, <<"/hang">>, #{timeout => 30000})} end)
               || _ <- lists:seq(1, 5)],
    wait_until(fun() -> ibkr_http_stub:count(Stub, <<"/hang">>) =:= 5 end, 5000),
    #{in_flight := 5} = ibkr_oauth:stats(S),
    T0 = erlang:monotonic_time(millisecond),
    os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    [receive {C, R} -> ?assertEqual({error, port_down}, R) after 3000 -> ct:fail(no_port_down) end
     || C <- Callers],
    ct:log("callers answered ~b ms after kill -9", [erlang:monotonic_time(millisecond) - T0]),
    ?assert(is_process_alive(S)),
    NewPid = ibkr_oauth:os_pid(S),
    ?assertNotEqual(OsPid, NewPid),
    ?assertMatch(#{port_restarts := 1, authenticated := false, in_flight := _}, ibkr_oauth:stats(S)),
    %% Works again: the next request authenticates on the new port.
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, <<"/portfolio/accounts">>)),
    ?assertEqual(2, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    ok = ibkr_oauth:stop(S),
    ibkr_http_stub:stop(Stub).

%% More than 5 port exits in 30 s stop the session.
port_restart_limit(_Config) ->
    {ok, S} = ibkr_oauth:start_session(ibkr_test_lib:vector_config(public)),
    MRef = monitor(process, S),
    Kill = fun() ->
                   Pid = ibkr_oauth:os_pid(S),
                   os:cmd("kill -9 " ++ integer_to_list(Pid)),
                   wait_until(fun() -> ibkr_oauth:os_pid(S) =/= Pid end, 5000)
           end,
    [begin Kill(), ?assertEqual({ok, x}, gen_server:call(S, {port, {echo, x}})) end
     || _ <- lists:seq(1, 5)],
    ?assertMatch(#{port_restarts := 5}, ibkr_oauth:stats(S)),
    os:cmd("kill -9 " ++ integer_to_list(ibkr_oauth:os_pid(S))),
    receive {'DOWN', MRef, _, _, Reason} -> ?assertEqual({shutdown, port_restart_limit}, Reason)
    after 5000 -> ct:fail(not_stopped)
    end,
    ?assertEqual({error, noproc}, ibkr_oauth:sign(S, get, <<"https://a/b">>)).

stop_closes_port(_Config) ->
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    OsPid = ibkr_oauth:os_pid(S),
    ?assert(os_alive(OsPid)),
    stop_clean(S),
    wait_until(fun() -> not os_alive(OsPid) end, 5000),
    ?assertEqual({error, noproc}, ibkr_oauth:stop(S)),
    ?assertEqual({error, noproc}, ibkr_oauth:stats(S)).

%% start_link with a bad config returns the error; a caller that does not
%% trap exits survives, and nothing is left in its mailbox.
bad_config_caller_survives(_Config) ->
    Self = self(),
    Cases = [{#{dh_prime => <<"not hex">>}, {bad_config, dh_prime, not_hex}},
             {#{dh_prime => <<"ff">>}, {bad_config, dh_prime, too_small}},
             {#{access_token_secret => <<"!!!">>}, {bad_config, access_token_secret, not_base64}},
             {#{signature_key => {file, "/nonexistent/key.pem"}}, {bad_config, signature_key, enoent}},
             {#{encryption_key => {pem, <<"-----BEGIN NOTHING-----">>}}, {bad_config, encryption_key, not_pem}},
             {#{consumer_key => 42}, {bad_config, consumer_key, badarg}},
             {#{request_timeout => -1}, {bad_config, request_timeout, badarg}},
             {#{tickle_intervall => 5}, {bad_config, tickle_intervall, unknown_key}},
             {#{base_url => <<"ftp://x">>}, {bad_config, base_url, bad_url}}],
    Pid = spawn(fun() ->
                        Results = [{ibkr_oauth:start_link(ibkr_test_lib:vector_config(public, Extra)), Want}
                                   || {Extra, Want} <- Cases],
                        Missing = ibkr_oauth:start_link(maps:remove(consumer_key, ibkr_test_lib:vector_config(public))),
                        NotMap = ibkr_oauth:start_link(not_a_map),
                        timer:sleep(200),
                        {messages, Msgs} = process_info(self(), messages),
                        Self ! {self(), Results, Missing, NotMap, Msgs}
                end),
    receive
        {Pid, Results, Missing, NotMap, Msgs} ->
            [?assertEqual({error, Want}, Got) || {Got, Want} <- Results],
            ?assertEqual({error, {bad_config, consumer_key, missing}}, Missing),
            ?assertEqual({error, {bad_config, config, badarg}}, NotMap),
            ?assertEqual([], Msgs)
    after 60000 -> ct:fail(timeout)
    end.

bad_config_trapping_caller(_Config) ->
    process_flag(trap_exit, true),
    ?assertEqual({error, {bad_config, dh_prime, not_hex}},
                 ibkr_oauth:start_link(ibkr_test_lib:vector_config(public, #{dh_prime => <<"q">>}))),
    receive M -> ct:fail({unexpected_message, M}) after 300 -> ok end,
    %% A good start is linked as usual.
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    {links, Links} = erlang:process_info(S, links),
    ?assert(lists:member(self(), Links)),
    stop_clean(S),
    receive {'EXIT', S, normal} -> ok after 5000 -> ct:fail(no_exit) end.

%% A port program that exits at once, or does not exist.
broken_binary(_Config) ->
    Old = os:getenv("IBKR_OAUTH_PORT"),
    try
        os:putenv("IBKR_OAUTH_PORT", "/bin/false"),
        ?assertEqual({error, {port_exit, 1}},
                     ibkr_oauth:start_link(ibkr_test_lib:vector_config(public))),
        os:putenv("IBKR_OAUTH_PORT", "/nonexistent/ibkr_oauth_port"),
        ?assertMatch({error, {port_open, _}},
                     ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)))
    after
        case Old of
            false -> os:unsetenv("IBKR_OAUTH_PORT");
            _ -> os:putenv("IBKR_OAUTH_PORT", Old)
        end
    end,
    ?assert(is_process_alive(self())).

named_sessions(_Config) ->
    Cfg = ibkr_test_lib:vector_config(public),
    {ok, S} = ibkr_oauth:start_link({local, ibkr_named_session}, Cfg),
    ?assertEqual({error, {already_started, S}}, ibkr_oauth:start_link({local, ibkr_named_session}, Cfg)),
    ?assertEqual({error, not_authenticated}, ibkr_oauth:sign(ibkr_named_session, get, <<"https://a/b">>)),
    {ok, G} = ibkr_oauth:start_link({global, {ibkr, 1}}, Cfg),
    ?assertEqual({error, not_authenticated}, ibkr_oauth:sign({global, {ibkr, 1}}, get, <<"https://a/b">>)),
    ok = ibkr_oauth:stop({global, {ibkr, 1}}),
    ok = ibkr_oauth:stop(ibkr_named_session),
    ?assertEqual(undefined, whereis(ibkr_named_session)),
    ?assertNot(is_process_alive(G)),
    %% A name freed by a failed start.
    {error, _} = ibkr_oauth:start_link({local, ibkr_named_session}, Cfg#{dh_prime => <<"x">>}),
    ?assertEqual(undefined, whereis(ibkr_named_session)),
    ?assertEqual({error, {badarg, name}}, ibkr_oauth:start_link(bad_name, Cfg)).

supervised_session(_Config) ->
    {ok, S} = ibkr_oauth:start_session(ibkr_test_lib:vector_config(public)),
    ?assert(lists:member(S, [P || {_, P, _, _} <- supervisor:which_children(ibkr_oauth_sup)])),
    ?assertMatch({error, {bad_config, dh_prime, _}},
                 ibkr_oauth:start_session(ibkr_test_lib:vector_config(public, #{dh_prime => <<"x">>}))),
    stop_clean(S),
    %% child_spec/1 in a supervisor of our own.
    Spec = ibkr_oauth:child_spec(ibkr_test_lib:vector_config(public)),
    {ok, Sup} = supervisor:start_link(?MODULE, []),
    {ok, C} = supervisor:start_child(Sup, Spec),
    ?assertEqual({error, not_authenticated}, ibkr_oauth:sign(C, get, <<"https://a/b">>)),
    OsPid = ibkr_oauth:os_pid(C),
    unlink(Sup),
    MRef = monitor(process, Sup),
    exit(Sup, shutdown),
    receive {'DOWN', MRef, _, _, _} -> ok end,
    wait_until(fun() -> not os_alive(OsPid) end, 5000).

%% supervisor callback for supervised_session/1.
init([]) -> {ok, {#{strategy => one_for_one}, []}}.

%% Arguments are checked in the caller: error tuples, never a crash.
bad_arguments(_Config) ->
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    ?assertEqual({error, {badarg, url}}, ibkr_oauth:sign(S, get, 42)),
    ?assertEqual({error, {badarg, url}}, ibkr_oauth:sign(S, get, <<>>)),
    ?assertEqual({error, {badarg, method}}, ibkr_oauth:sign(S, 42, <<"https://a/b">>)),
    ?assertEqual({error, {badarg, method}}, ibkr_oauth:sign(S, <<"G ET">>, <<"https://a/b">>)),
    ?assertEqual({error, {badarg, nonce}}, ibkr_oauth:sign(S, get, <<"https://a/b">>, #{nonce => 1})),
    ?assertEqual({error, {badarg, opts}}, ibkr_oauth:sign(S, get, <<"https://a/b">>, [])),
    ?assertEqual({error, {badarg, server}}, ibkr_oauth:sign("str", get, <<"https://a/b">>)),
    ?assertEqual({error, noproc}, ibkr_oauth:sign(no_such_session, get, <<"https://a/b">>)),
    ?assertEqual({error, {badarg, timestamp}}, ibkr_oauth:lst_request(S, #{timestamp => -5})),
    ?assertEqual({error, {badarg, pins}}, ibkr_oauth:lst_request(S, nope)),
    ?assertEqual({error, {badarg, diffie_hellman_response}}, ibkr_oauth:lst_complete(S, #{})),
    ?assertEqual({error, {badarg, answer}}, ibkr_oauth:lst_complete(S, x)),
    ?assertEqual({error, no_pending_handshake},
                 ibkr_oauth:lst_complete(S, #{diffie_hellman_response => <<"02">>,
                                              live_session_token_signature => <<"00">>,
                                              live_session_token_expiration => 0})),
    ?assertEqual({error, not_authenticated}, ibkr_oauth:live_session_token(S)),
    ?assertEqual({error, {badarg, method}}, ibkr_oauth:request(S, brew, <<"/x">>)),
    ?assertEqual({error, {badarg, path}}, ibkr_oauth:request(S, get, <<"x">>)),
    ?assertEqual({error, {badarg, path}}, ibkr_oauth:request(S, get, <<"/a b">>)),
    ?assertEqual({error, {badarg, path}}, ibkr_oauth:request(S, get, "/x")),
    ?assertEqual({error, {badarg, query}}, ibkr_oauth:request(S, get, <<"/x">>, #{query => [{a, 1}]})),
    ?assertEqual({error, {badarg, query}}, ibkr_oauth:request(S, get, <<"/x">>, #{query => x})),
    ?assertEqual({error, {badarg, headers}}, ibkr_oauth:request(S, get, <<"/x">>, #{headers => [x]})),
    ?assertEqual({error, {badarg, body}}, ibkr_oauth:request(S, post, <<"/x">>, #{body => [a]})),
    ?assertEqual({error, {badarg, timeout}}, ibkr_oauth:request(S, get, <<"/x">>, #{timeout => -1})),
    ?assertEqual({error, {badarg, timeout}}, ibkr_oauth:request(S, get, <<"/x">>, #{timeout => 1 bsl 32})),
    ?assertEqual({error, {badarg, opts}}, ibkr_oauth:request(S, get, <<"/x">>, [])),
    ?assert(is_process_alive(S)),
    ok = ibkr_oauth:stop(S).

request_too_large(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun ibkr_http_stub:ibkr_handler/2),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    {ok, _} = ibkr_oauth:authenticate(S),
    Big = binary:copy(<<"b">>, 16 * ?MiB + 1),
    ?assertEqual({error, too_large}, ibkr_oauth:request(S, post, <<"/x">>, #{body => Big})),
    %% Under the body limit, over the frame limit once headers are added.
    Almost = binary:copy(<<"b">>, 16 * ?MiB - 10),
    ?assertEqual({error, too_large},
                 ibkr_oauth:request(S, post, <<"/x">>, #{body => Almost,
                                                          headers => [{<<"x-pad">>, binary:copy(<<"p">>, 100)}]})),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, post, <<"/x">>, #{body => <<"{}">>})),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% The deadline is the session's: {error, timeout}, the port is told to
%% cancel, and the late reply is dropped.
request_timeout(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(
                   fun(#{path := <<"/hang">>}, _) -> noreply;
                      (#{path := <<"/late">>}, _) -> {delay, 600, {200, [], <<"late">>}};
                      (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                   end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub, #{request_timeout => 400})),
    {ok, _} = ibkr_oauth:authenticate(S),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, timeout}, ibkr_oauth:request(S, get, <<"/hang">>)),
    Dt = erlang:monotonic_time(millisecond) - T0,
    ?assert(Dt >= 390 andalso Dt < 10000), % the deadline fired; /hang never answers
    ?assertEqual({error, timeout}, ibkr_oauth:request(S, get, <<"/late">>, #{timeout => 200})),
    ?assertEqual({error, timeout}, ibkr_oauth:request(S, get, <<"/x">>, #{timeout => 0})),
    timer:sleep(800),
    ?assertMatch(#{in_flight := 0, queued := 0}, ibkr_oauth:stats(S)),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, <<"/x">>)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% 50 concurrent requests without an LST: one handshake for all of them.
single_flight_handshake(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(
                   fun(#{path := <<"/oauth/live_session_token">>} = Req, N) ->
                           timer:sleep(300),
                           ibkr_http_stub:ibkr_handler(Req, N);
                      (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                   end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), ibkr_oauth:request(S, get, <<"/r">>, #{query => [{<<"i">>, integer_to_binary(I)}]})} end)
            || I <- lists:seq(1, 50)],
    AuthPid = spawn_link(fun() -> Self ! {self(), ibkr_oauth:authenticate(S)} end),
    [receive {P, R} -> ?assertMatch({ok, #{status := 200}}, R) after 10000 -> ct:fail(timeout) end
     || P <- Pids],
    receive {AuthPid, A} -> ?assertMatch({ok, #{expires_at := _}}, A) after 10000 -> ct:fail(timeout) end,
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    ?assertEqual(50, ibkr_http_stub:count(Stub, <<"/r">>)),
    ?assertMatch(#{handshakes := 1, requests := 50, errors := 0}, ibkr_oauth:stats(S)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% A 401: one new LST, one retry (for a burst of them: still one handshake).
retry_401_once(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun ibkr_http_stub:ibkr_handler/2),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    {ok, _} = ibkr_oauth:authenticate(S),
    ibkr_http_stub:set_handler(Stub, fun(#{path := <<"/a">>}, N) when N =< 10 -> {401, [], <<"expired">>};
                                        (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                     end),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), ibkr_oauth:request(S, get, <<"/a">>)} end)
            || _ <- lists:seq(1, 10)],
    [receive {P, R} -> ?assertMatch({ok, #{status := 200}}, R) after 10000 -> ct:fail(timeout) end
     || P <- Pids],
    ?assertEqual(20, ibkr_http_stub:count(Stub, <<"/a">>)),
    ?assertEqual(2, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

second_401_returned(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/b">>}, _) -> {401, [], <<"no">>};
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    %% any 401 is IBKR's `unauthorized'
    ?assertMatch({error, {ibkr, unauthorized, #{status := 401}}}, ibkr_oauth:request(S, delete, <<"/b">>)),
    ?assertEqual(2, ibkr_http_stub:count(Stub, <<"/b">>)),
    ?assertEqual(2, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

retry_429(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(
                   fun(#{path := <<"/c">>}, 1) -> {429, [{<<"Retry-After">>, <<"1">>}], <<"slow down">>};
                      (#{path := <<"/d">>}, _) -> {429, [{<<"Retry-After">>, <<"5">>}], <<"slow down">>};
                      (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                   end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    {ok, _} = ibkr_oauth:authenticate(S),
    T0 = erlang:monotonic_time(millisecond),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, <<"/c">>, #{timeout => 5000})),
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 1000),
    %% Retry-After beyond the deadline: the 429 itself, as IBKR's rate_limited.
    ?assertMatch({error, {ibkr, rate_limited, #{status := 429, retry_after := 5}}},
                 ibkr_oauth:request(S, get, <<"/d">>, #{timeout => 2000})),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/d">>)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% A connection closed in the middle of the answer (the request reached the
%% server): GET is retried once, POST never. (Half an answer rather than none:
%% libcurl itself silently resends a request once when a *reused* connection
%% closes before any byte of the answer.)
transport_retry_policy(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/closed">>}, _) -> partial;
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    {ok, _} = ibkr_oauth:authenticate(S),
    ?assertMatch({error, {transport, _}}, ibkr_oauth:request(S, post, <<"/closed">>, #{body => <<"{}">>})),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/closed">>)),
    ?assertMatch({error, {transport, _}}, ibkr_oauth:request(S, get, <<"/closed">>)),
    ?assertEqual(3, ibkr_http_stub:count(Stub, <<"/closed">>)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% A refused handshake reaches authenticate/1 and the requests waiting for it.
handshake_error(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/oauth/live_session_token">>}, _) ->
                                              {401, [], <<"{\"error\":\"invalid consumer\"}">>};
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    Refused = {error, {ibkr, invalid_consumer, #{status => 401, message => <<"invalid consumer">>}}},
    ?assertEqual(Refused, ibkr_oauth:authenticate(S)),
    ?assertEqual(Refused, ibkr_oauth:request(S, get, <<"/x">>)),
    ?assertEqual(0, ibkr_http_stub:count(Stub, <<"/x">>)),
    ibkr_http_stub:set_handler(Stub, fun(#{path := <<"/oauth/live_session_token">>}, _) ->
                                             {200, [], <<"not json">>};
                                        (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                     end),
    ?assertEqual({error, {bad_response, not_json}}, ibkr_oauth:authenticate(S)),
    ?assertMatch(#{authenticated := false, errors := 3}, ibkr_oauth:stats(S)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

brokerage_session_and_logout(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun ibkr_http_stub:ibkr_handler/2),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub, #{brokerage_session => true})),
    {ok, _} = ibkr_oauth:authenticate(S),
    ?assertMatch([#{method := <<"POST">>, body := <<"{\"publish\":true,\"compete\":true}">>}],
                 ibkr_http_stub:requests(Stub, <<"/iserver/auth/ssodh/init">>)),
    [#{headers := H}] = ibkr_http_stub:requests(Stub, <<"/iserver/auth/ssodh/init">>),
    ?assertMatch(<<"OAuth realm=\"limited_poa\", oauth_consumer_key=", _/binary>>,
                 proplists:get_value(<<"authorization">>, H)),
    ?assertEqual(<<"application/json">>, proplists:get_value(<<"content-type">>, H)),
    ?assertEqual(0, ibkr_http_stub:count(Stub, <<"/logout">>)),
    stop_clean(S),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/logout">>)),
    Paths = [P || #{path := P} <- ibkr_http_stub:requests(Stub)],
    ?assertEqual([<<"/oauth/live_session_token">>, <<"/iserver/auth/ssodh/init">>, <<"/logout">>], Paths),
    ibkr_http_stub:stop(Stub).

%% auto_authenticate does not make start_link wait for the network: the LST
%% answer is held back until the test releases it, after start_link returned
%% (had start_link waited, the gate's own timeout would have let the handshake
%% finish first and handshake_in_flight would be false).
auto_authenticate(_Config) ->
    Test = self(),
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/oauth/live_session_token">>} = Req, N) ->
                                              Test ! {lst_request_held, self()},
                                              receive release -> ok after 10000 -> ok end,
                                              ibkr_http_stub:ibkr_handler(Req, N);
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub, #{auto_authenticate => true})),
    ?assertMatch(#{handshake_in_flight := true, authenticated := false}, ibkr_oauth:stats(S)),
    Held = receive {lst_request_held, H} -> H after 10000 -> ct:fail(no_lst_request) end,
    Held ! release,
    wait_until(fun() -> maps:get(authenticated, ibkr_oauth:stats(S)) end, 5000),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, <<"/x">>)),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

tickle(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/tickle">>}, _) ->
                                              {200, [{<<"Set-Cookie">>, <<"api=abc123; Path=/">>}],
                                               <<"{\"session\":\"s1\",\"iserver\":{}}">>};
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub, #{tickle_interval => 100})),
    timer:sleep(350),
    ?assertEqual(0, ibkr_http_stub:count(Stub, <<"/tickle">>)),   % no LST, no tickle
    {ok, _} = ibkr_oauth:authenticate(S),
    wait_until(fun() -> ibkr_http_stub:count(Stub, <<"/tickle">>) >= 2 end, 5000),
    [#{method := <<"POST">>} | _] = ibkr_http_stub:requests(Stub, <<"/tickle">>),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% An LST handed in with lst_complete/2 is used by request/4: no handshake.
lst_complete_used_by_request(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun ibkr_http_stub:ibkr_handler/2),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    [C | _] = maps:get(cases, ibkr_test_lib:vectors(public)),
    %% Random pins: the vector's answer does not validate, nothing changes.
    {ok, _} = ibkr_oauth:lst_request(S, #{}),
    ?assertEqual({error, lst_signature_mismatch},
                 ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                                              live_session_token_signature => maps:get(live_session_token_signature, C),
                                              live_session_token_expiration => erlang:system_time(millisecond) + 3600000})),
    ?assertMatch(#{authenticated := false, epoch := 0}, ibkr_oauth:stats(S)),
    {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
    {ok, _} = ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                                           live_session_token_signature => maps:get(live_session_token_signature, C),
                                           live_session_token_expiration => erlang:system_time(millisecond) + 3600000}),
    ?assertMatch(#{authenticated := true, handshakes := 1, epoch := 1}, ibkr_oauth:stats(S)),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, <<"/x">>)),
    ?assertEqual(0, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    [#{headers := H}] = ibkr_http_stub:requests(Stub, <<"/x">>),
    ?assertMatch(<<"OAuth realm=", _/binary>>, proplists:get_value(<<"authorization">>, H)),
    %% An expired one is not: the request authenticates first.
    {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
    {ok, _} = ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                                           live_session_token_signature => maps:get(live_session_token_signature, C),
                                           live_session_token_expiration => erlang:system_time(millisecond) - 1}),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, <<"/x">>)),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% The LST is renewed before it expires; failed renewals are retried with
%% backoff (1 s, 2 s, ...) while the old LST is kept.
renewal_backoff(_Config) ->
    Life = 3000,
    Ok = fun(#{path := <<"/oauth/live_session_token">>} = Req, _) ->
                 ibkr_http_stub:lst_response(Req, public, erlang:system_time(millisecond) + Life);
            (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
         end,
    {ok, Stub} = ibkr_http_stub:start(Ok),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub, #{refresh_margin => 1})),
    {ok, #{expires_at := E1}} = ibkr_oauth:authenticate(S),
    %% margin = min(1 s, lifetime / 2): renewed about 1 s before expiry.
    wait_until(fun() -> maps:get(epoch, ibkr_oauth:stats(S)) =:= 2 end, 4000),
    ?assertEqual(2, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    #{expires_at := E2} = ibkr_oauth:stats(S),
    ?assert(E2 > E1),
    ibkr_http_stub:set_handler(Stub, fun(#{path := <<"/oauth/live_session_token">>}, _) -> {503, [], <<"down">>};
                                        (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                     end),
    %% Renewal at ~E2 - 1 s fails, retried 1 s later, then 2 s later.
    wait_until(fun() -> ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>) >= 4 end, 6000),
    [T3, T4 | _] = [T || #{at := T} <- lists:nthtail(2, ibkr_http_stub:requests(Stub, <<"/oauth/live_session_token">>))],
    ?assert(T4 - T3 >= 900),
    ?assertMatch(#{epoch := 2}, ibkr_oauth:stats(S)),
    ibkr_http_stub:set_handler(Stub, Ok),
    wait_until(fun() -> maps:get(epoch, ibkr_oauth:stats(S)) =:= 3 end, 5000),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% The port dies during a handshake: authenticate/1 (its handshake was at the
%% port) gets port_down; the queued requests never left the BEAM: they are
%% answered after a new handshake on the new port.
killed_port_during_handshake(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/oauth/live_session_token">>}, 1) -> noreply;
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    Self = self(),
    A = spawn_link(fun() -> Self ! {self(), ibkr_oauth:authenticate(S)} end),
    Rs = [spawn_link(fun() -> Self ! {self(), ibkr_oauth:request(S, get, <<"/x">>)} end) || _ <- lists:seq(1, 3)],
    wait_until(fun() -> ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>) =:= 1 end, 5000),
    wait_until(fun() -> maps:get(queued, ibkr_oauth:stats(S)) =:= 3 end, 5000),
    os:cmd("kill -9 " ++ integer_to_list(ibkr_oauth:os_pid(S))),
    receive {A, AR} -> ?assertEqual({error, port_down}, AR) after 3000 -> ct:fail(no_port_down) end,
    [receive {P, R} -> ?assertMatch({ok, #{status := 200}}, R) after 10000 -> ct:fail(no_answer) end
     || P <- Rs],
    ?assertEqual(2, ibkr_http_stub:count(Stub, <<"/oauth/live_session_token">>)),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, <<"/x">>)),
    ?assertMatch(#{port_restarts := 1, handshakes := 1, queued := 0, in_flight := 0}, ibkr_oauth:stats(S)),
    ok = ibkr_oauth:stop(S),
    ibkr_http_stub:stop(Stub).

%% request/4 percent-encodes the query (RFC 3986 unreserved kept) and sends
%% headers and body as given.
query_encoding(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun ibkr_http_stub:ibkr_handler/2),
    {ok, S} = ibkr_oauth:start_link(stub_config(Stub)),
    {ok, #{status := 200}} =
        ibkr_oauth:request(S, get, <<"/iserver/secdef/search">>,
                           #{query => [{<<"symbol">>, <<"BRK B">>}, {<<"name">>, <<"a+b/c~d=e&f">>},
                                       {<<"ü"/utf8>>, <<"-._~">>}]}),
    [#{query := Q}] = ibkr_http_stub:requests(Stub, <<"/iserver/secdef/search">>),
    ?assertEqual(<<"symbol=BRK%20B&name=a%2Bb%2Fc~d%3De%26f&%C3%BC=-._~">>, Q),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, <<"/p?x=1">>, #{query => [{<<"y">>, <<"2">>}]}),
    [#{query := <<"x=1&y=2">>}] = ibkr_http_stub:requests(Stub, <<"/p">>),
    {ok, #{status := 200}} = ibkr_oauth:request(S, put, <<"/b">>, #{body => [<<"{\"a\":">>, "1}"],
                                                                    headers => [{<<"content-type">>, <<"application/json">>}]}),
    [#{method := <<"PUT">>, body := <<"{\"a\":1}">>, headers := H}] = ibkr_http_stub:requests(Stub, <<"/b">>),
    ?assertEqual(<<"application/json">>, proplists:get_value(<<"content-type">>, H)),
    %% An empty POST goes out with Content-Length: 0.
    {ok, #{status := 200}} = ibkr_oauth:request(S, post, <<"/e">>),
    [#{headers := H2}] = ibkr_http_stub:requests(Stub, <<"/e">>),
    ?assertEqual(<<"0">>, proplists:get_value(<<"content-length">>, H2)),
    stop_clean(S),
    ibkr_http_stub:stop(Stub).

%% sys:get_status/1 and the state printout show no secret.
format_status_redacts(_Config) ->
    Cfg = ibkr_test_lib:vector_config(public),
    {ok, S} = ibkr_oauth:start_link(Cfg),
    V = ibkr_test_lib:vectors(public),
    [C | _] = maps:get(cases, V),
    {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
    {ok, _} = ibkr_oauth:lst_complete(S, maps:merge(maps:with([diffie_hellman_response, live_session_token_signature], C),
                                                    #{live_session_token_expiration => erlang:system_time(millisecond) + 60000})),
    Status = lists:flatten(io_lib:format("~p", [sys:get_status(S)])),
    State = lists:flatten(io_lib:format("~p", [sys:get_state(S)])),
    {pem, Pem} = maps:get(signature_key, Cfg),
    [_, PemLine | _] = binary:split(Pem, <<"\n">>, [global]),
    Secrets = [maps:get(access_token_secret, Cfg), binary:part(PemLine, 0, 40),
               maps:get(live_session_token, C), maps:get(prepend, C)],
    [begin
         ?assertEqual(nomatch, string:find(Status, binary_to_list(Sec))),
         ?assertEqual(nomatch, string:find(State, binary_to_list(Sec)))
     end || Sec <- Secrets],
    ok = ibkr_oauth:stop(S).

%% {0, {log, Level, Msg}} events reach logger with the session metadata.
port_log_events(Config) ->
    Dir = ?config(priv_dir, Config),
    {pem, Pem} = maps:get(signature_key, ibkr_test_lib:vector_config(public)),
    KeyFile = filename:join(Dir, "sig.pem"),
    ok = file:write_file(KeyFile, Pem),
    ok = file:change_mode(KeyFile, 8#644),
    Self = self(),
    ok = logger:add_handler(protocol_suite_capture, ?MODULE, #{config => Self}),
    try
        {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public, #{signature_key => {file, KeyFile}})),
        receive
            {log, warning, Msg, #{ibkr_oauth := session}} ->
                ?assertNotEqual(nomatch, string:find(Msg, "readable by group or others"))
        after 5000 -> ct:fail(no_log_event)
        end,
        stop_clean(S)
    after
        logger:remove_handler(protocol_suite_capture)
    end.

log(#{level := Level, msg := Msg, meta := Meta}, #{config := Pid}) ->
    Text = case Msg of
               {report, R} -> io_lib:format("~p", [R]);
               {string, Str} -> Str;
               {Fmt, Args} -> io_lib:format(Fmt, Args)
           end,
    Pid ! {log, Level, lists:flatten(io_lib:format("~ts", [Text])), Meta}.

%%====================================================================
%% Helpers
%%====================================================================

%% Stops a session that should never have lost its port (a crash of the port
%% program, e.g. an ASan report under `make test-asan', shows up here).
stop_clean(S) ->
    ?assertMatch(#{port_restarts := 0}, ibkr_oauth:stats(S)),
    ok = ibkr_oauth:stop(S).

%% The init map of the public vector set, for a raw port.
port_config(Extra) ->
    {ok, V} = ibkr_oauth_config:validate(ibkr_test_lib:vector_config(public, Extra)),
    ibkr_oauth_config:to_port(V).

stub_config(Stub) -> stub_config(Stub, #{}).
stub_config(Stub, Extra) ->
    ibkr_test_lib:vector_config(public, maps:merge(#{base_url => ibkr_http_stub:url(Stub)}, Extra)).

%% A session holding the LST of the first public vector case, and the
%% sign arguments of that case's requests with the expected Authorization.
signing_session() ->
    V = ibkr_test_lib:vectors(public),
    [C | _] = maps:get(cases, V),
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    {ok, #{authorization := LstAuth}} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
    ?assertEqual(maps:get(lst_authorization, C), LstAuth),
    {ok, _} = ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                                           live_session_token_signature => maps:get(live_session_token_signature, C),
                                           live_session_token_expiration => erlang:system_time(millisecond) + 86400000}),
    Expected = [{[maps:get(method, R), <<(maps:get(url, R))/binary, (query_suffix(maps:get(query, R)))/binary>>,
                  maps:with([nonce, timestamp], R)],
                 maps:get(authorization, R)}
                || R <- maps:get(requests, C)],
    {S, Expected}.

query_suffix(undefined) -> <<>>;
query_suffix(Pairs) ->
    iolist_to_binary(["?", lists:join("&", [[uri_string:quote(K), "=", uri_string:quote(Val)] || [K, Val] <- Pairs])]).

raw_call(P, Id, Cmd) ->
    ok = ibkr_oauth_port:send(P, Id, Cmd),
    await_id(P, Id, frame_timeout()).

await_id(P, Id, Timeout) ->
    case recv_frame(P, Timeout) of
        {Id, Reply} -> Reply;
        {0, {log, _, _}} -> await_id(P, Id, Timeout);
        Other -> ct:fail({unexpected_frame, Other})
    end.

%% How long to wait for a frame: longer under `make valgrind` (IBKR_TEST_SLOW
%% set), where an init alone takes seconds of CPU (the prime test).
frame_timeout() ->
    case os:getenv("IBKR_TEST_SLOW") of
        false -> 10000;
        _ -> 120000
    end.

recv_reply(P) -> recv_reply(P, frame_timeout()).
recv_reply(P, Timeout) ->
    case recv_frame(P, Timeout) of
        {0, {log, _, _}} -> recv_reply(P, Timeout);
        Frame -> Frame
    end.

recv_frame(P) -> recv_frame(P, frame_timeout()).
recv_frame(P, Timeout) ->
    receive
        {P, {data, Bin}} ->
            {ok, Id, Msg} = ibkr_oauth_port:decode(Bin),
            {Id, Msg};
        {P, {exit_status, S}} -> ct:fail({port_exited, S})
    after Timeout -> ct:fail(no_frame)
    end.

%% Alive and not a zombie.
os_alive(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, Rest] = binary:split(Stat, <<") ">>),
            not lists:member(binary:first(Rest), [$Z, $X]);
        {error, _} -> false
    end.

rss_kb(OsPid) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(Status, <<"VmRSS:\\s+([0-9]+) kB">>, [{capture, all_but_first, binary}]),
    binary_to_integer(Kb).

wait_until(Fun, Timeout) when Timeout =< 0 ->
    case Fun() of
        true -> ok;
        false -> ct:fail(wait_until_timeout)
    end;
wait_until(Fun, Timeout) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(20), wait_until(Fun, Timeout - 20)
    end.
