%% Bad input, each answered with a documented {error, ...}: the caller is
%% never crashed (every call runs in a fresh process that does not trap
%% exits, and must return with an empty mailbox), and the session keeps
%% serving afterwards.
%%
%% Covered elsewhere and not repeated: garbage, compressed, oversized and
%% largest frames to the raw port, commands with bad arguments at the port
%% level (protocol_SUITE: garbage_frames, oversized_frame, largest_frame,
%% send_too_large), a body above 16 MiB (protocol_SUITE:request_too_large),
%% DH responses 0, 1, p-1, p, p+1 and non-hex to lst_complete/2
%% (oauth_SUITE:bad_dh_response*), the same from the network
%% (faults_SUITE:handshake_faults_reach_waiting_requests).
-module(bad_input_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([api_arguments/1, config_field_types/1, bad_keys_and_pems/1,
         bad_dh_prime/1, bad_lst_answers/1, huge_and_non_utf8_requests/1,
         split_and_truncated_frames/1, header_cap/1, sign_url_not_absolute_http/1,
         huge_inputs_refused_at_once/1]).
-export([init/1]).

-define(F, ibkr_fake_server).
-define(L, ibkr_check_lib).
-define(URL, <<"https://api.ibkr.com/v1/api/portfolio/accounts">>).
%% Values of the wrong type for almost any argument.
-define(JUNK, [undefined, 42, -1, 1.5, "str", <<1:3>>, [a | b], {x}, make_ref(),
               fun() -> ok end, 1 bsl 70]).
%% Config `Why's (ibkr_oauth:start_link/1's edoc).
-define(WHYS, [missing, badarg, too_long, unknown_key, bad_url, too_small, enoent,
               eacces, eisdir, file_error, not_pem, not_rsa, not_base64,
               decrypt_failed, not_hex, not_prime]).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [api_arguments, config_field_types, bad_keys_and_pems, bad_dh_prime,
     bad_lst_answers, huge_and_non_utf8_requests, split_and_truncated_frames, header_cap,
     sign_url_not_absolute_http, huge_inputs_refused_at_once].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) when Case =:= huge_and_non_utf8_requests; Case =:= header_cap ->
    {ok, #{config := Client}} = ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    {ok, S} = ibkr_oauth:start_link(Client),
    [{session, S} | Config];
init_per_testcase(_Case, Config) ->
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    [{session, S} | Config].

end_per_testcase(Case, Config) ->
    S = ?config(session, Config),
    unlink(S),
    ?assertMatch(#{port_restarts := 0}, ibkr_oauth:stats(S)),
    ok = ibkr_oauth:stop(S),
    case Case of
        huge_and_non_utf8_requests -> ?F:stop();
        header_cap -> ?F:stop();
        _ -> ok
    end.

%%% ----------------------------------------------------------------- cases

%% Every API function, every argument, values of the wrong type or shape.
api_arguments(Config) ->
    S = ?config(session, Config),
    _ = vector_lst(S),
    Lst = base64:encode(<<7:160>>),
    Servers = [X || X <- ?JUNK, not is_atom(X)] ++ [{via, 42, x}, {global}, "name"],
    ServerCalls = [fun(X) -> ibkr_oauth:authenticate(X) end,
                   fun(X) -> ibkr_oauth:lst_request(X) end,
                   fun(X) -> ibkr_oauth:lst_request(X, #{}) end,
                   fun(X) -> ibkr_oauth:live_session_token(X) end,
                   fun(X) -> ibkr_oauth:sign(X, get, ?URL) end,
                   fun(X) -> ibkr_oauth:request(X, get, <<"/x">>) end,
                   fun(X) -> ibkr_oauth:stats(X) end,
                   fun(X) -> ibkr_oauth:os_pid(X) end,
                   fun(X) -> ibkr_oauth:stop(X) end],
    [expect({error, {badarg, server}}, fun() -> Call(X) end) || Call <- ServerCalls, X <- Servers],
    %% names of no process
    [expect({error, noproc}, fun() -> Call(X) end)
     || Call <- ServerCalls, X <- [no_such_session, {global, no_such_session}, dead_pid()]],
    %% sign/3,4
    [expect({error, {badarg, method}}, fun() -> ibkr_oauth:sign(S, M, ?URL) end)
     || M <- ?JUNK ++ [<<>>, <<"G T">>, <<"GET\0">>, <<"GÉT"/utf8>>, binary:copy(<<"G">>, 17), 'GET', brew]],
    [expect({error, {badarg, url}}, fun() -> ibkr_oauth:sign(S, get, U) end)
     || U <- ?JUNK ++ [<<>>, <<"https://a/\0">>, <<"https://a/", (binary:copy(<<"u">>, 70000))/binary>>,
                       %% over the frame limit: its size alone refuses it
                       <<"https://a/", (binary:copy(<<"u">>, 17 bsl 20))/binary>>]],
    [expect({error, {badarg, opts}}, fun() -> ibkr_oauth:sign(S, get, ?URL, O) end)
     || O <- ?JUNK, not is_map(O)],
    [expect({error, {badarg, K}}, fun() -> ibkr_oauth:sign(S, get, ?URL, #{K => V}) end)
     || {K, Vs} <- [{nonce, ?JUNK ++ [<<>>, <<"a\"b">>, <<"a\\b">>, <<"a\nb">>, binary:copy(<<"n">>, 65)]},
                    {timestamp, ?JUNK -- [42]},
                    {lst, ?JUNK ++ [<<>>, <<"!!!!">>, <<"QUFB\0">>, binary:copy(<<"QUFB">>, 100)]}],
        V <- Vs],
    %% lst_request/2
    [expect({error, {badarg, pins}}, fun() -> ibkr_oauth:lst_request(S, P) end)
     || P <- ?JUNK, not is_map(P)],
    [expect({error, {badarg, K}}, fun() -> ibkr_oauth:lst_request(S, #{K => V}) end)
     || {K, Vs} <- [{nonce, ?JUNK ++ [<<>>, <<"a\"b">>, binary:copy(<<"n">>, 65)]},
                    {timestamp, ?JUNK -- [42]},
                    {dh_random, ?JUNK ++ [<<>>, <<"0">>, <<"000">>, <<"xyz">>, <<"-1">>,
                                          binary:copy(<<"f">>, 129)]}],
        V <- Vs],
    %% lst_complete/2 (the values themselves: bad_lst_answers/1)
    [expect({error, {badarg, answer}}, fun() -> ibkr_oauth:lst_complete(S, A) end)
     || A <- ?JUNK, not is_map(A)],
    Answer = #{diffie_hellman_response => <<"02">>, live_session_token_signature => <<"00">>,
               live_session_token_expiration => 0},
    [expect({error, {badarg, K}}, fun() -> ibkr_oauth:lst_complete(S, Answer#{K := V}) end)
     || K <- maps:keys(Answer), V <- ?JUNK, not is_integer(V) orelse K =/= live_session_token_expiration],
    [expect({error, {badarg, live_session_token_expiration}},
            fun() -> ibkr_oauth:lst_complete(S, Answer#{live_session_token_expiration := E}) end)
     || E <- [1 bsl 70, -1, -1700000000000]],
    %% request/3,4 (checked before anything is sent: no handshake happens)
    [expect({error, {badarg, method}}, fun() -> ibkr_oauth:request(S, M, <<"/x">>) end)
     || M <- ?JUNK ++ [<<"GET">>, 'GET', options, connect, trace]],
    [expect({error, {badarg, path}}, fun() -> ibkr_oauth:request(S, get, P) end)
     || P <- ?JUNK ++ [<<>>, <<"x">>, "/x", <<"/a b">>, <<"/a\r\nb">>, <<"/a\0">>, <<"/a\tb">>, <<"/\d">>]],
    [expect({error, {badarg, opts}}, fun() -> ibkr_oauth:request(S, get, <<"/x">>, O) end)
     || O <- ?JUNK, not is_map(O)],
    [expect({error, {badarg, K}}, fun() -> ibkr_oauth:request(S, get, <<"/x">>, #{K => V}) end)
     || {K, Vs} <- [{query, ?JUNK ++ [[x], [{a, <<"b">>}], [{<<"a">>, 1}], [{<<"a">>, <<"b">>} | c],
                                     [{<<"a">>, <<"b">>, <<"c">>}]]},
                    {headers, ?JUNK ++ [[x], [{<<>>, <<"v">>}], [{n, <<"v">>}], [{<<"n">>, 1}],
                                        [{<<"n">>, <<"v">>} | c]]},
                    {body, [undefined, 42, 1.5, {x}, [a], [a | b], [256], <<1:3>>]},
                    {timeout, [-1, 1.5, "1", <<"1">>, 1 bsl 32, undefined]}],
        V <- Vs],
    %% start_link/1,2, start_session/1, child_spec/1
    [expect({error, {bad_config, config, badarg}}, fun() -> ibkr_oauth:start_link(C) end)
     || C <- ?JUNK, not is_map(C)],
    [expect({error, {bad_config, config, badarg}}, fun() -> ibkr_oauth:start_session(C) end)
     || C <- [undefined, [], "cfg"]],
    [expect({error, {badarg, name}}, fun() -> ibkr_oauth:start_link(N, ibkr_test_lib:vector_config(public)) end)
     || N <- (?JUNK -- [undefined]) ++ [name, {local, "x"}, {via, 42, x}, {via, no_such_module, x}]],
    {ok, Sup} = supervisor:start_link(?MODULE, []),
    unlink(Sup),
    ?assertMatch({error, {{bad_config, config, badarg}, _}}, supervisor:start_child(Sup, (ibkr_oauth:child_spec(nope))#{id => bad})),
    exit(Sup, shutdown),
    %% still serving, nothing started by all of the above
    ?assertMatch({ok, _}, ibkr_oauth:sign(S, get, ?URL, #{lst => Lst})),
    ?assertMatch(#{requests := 0, handshakes := 1}, ibkr_oauth:stats(S)).

%% Every config key with values of the wrong type or shape.
config_field_types(_Config) ->
    Bin = [<<>>, <<"a\0b">>, binary:copy(<<"k">>, 513)],
    Path = [<<>>, "", <<"a\0b">>, {x}, 42, <<1:3>>],
    Cases = [{consumer_key, ?JUNK ++ Bin ++ [<<"a\"b">>, <<"a\r\nb">>]},
             {access_token, ?JUNK ++ Bin ++ [<<"a\"b">>, <<"a\nb">>]},
             {access_token_secret, ?JUNK ++ [<<>>, <<"a\0b">>, <<"!!!!">>, <<"QUFB QUFB">>, <<255, 254>>,
                                             binary:copy(<<"QUFB">>, 2000), binary:copy(<<"QUFB">>, 5 bsl 20),
                                             base64:encode(<<"hello">>)]},
             {dh_prime, ?JUNK ++ [<<>>, <<"a\0b">>, binary:copy(<<"f">>, 17 bsl 20)]},
             {encryption_key, ?JUNK ++ [{pem, <<>>}, {pem, 42}, {file, 42}, {der, <<1>>}, <<"pem">>]
                              ++ [{file, P} || P <- Path]},
             {signature_key, ?JUNK ++ [{pem, <<>>}, {file, []}, {file, <<"/nonexistent">>}]},
             {dh_generator, ?JUNK -- [42] ++ [0, 1, <<"2">>, 1 bsl 100]},
             {realm, ?JUNK ++ Bin ++ [<<"a\r\nX: y">>, <<"a\"b">>]},
             {base_url, ?JUNK ++ [<<>>, <<"api.ibkr.com">>, <<"ftp://a/">>, <<"https://">>, <<"https://a/?q=1">>,
                                  <<"https://a/#f">>, <<"https://u:p@a/">>, <<"https://a b/">>, <<"https://a/", 255>>,
                                  <<"https://a/", (binary:copy(<<"p">>, 3000))/binary>>, "https://a/"]},
             {ca_file, Path ++ ["/nonexistent/ca.pem", "/tmp", "/dev/null"]},
             {request_timeout, [0, -1, 1.5, 1 bsl 32, "1", undefined]},
             {tickle_interval, [0, -1, 1.5, 1 bsl 32, "1", undefined]},
             {refresh_margin, [-1, 1.5, 1 bsl 40, "1", undefined]},
             {auto_authenticate, [1, "true", <<"true">>, undefined]},
             {brokerage_session, [1, "true", yes]},
             {query_signing, [<<"none">>, "params", query, 1]}],
    Base = ibkr_test_lib:vector_config(public),
    [expect(fun({error, {bad_config, K1, Why}}) -> K1 =:= K andalso lists:member(Why, ?WHYS);
               (_) -> false
            end, fun() -> ibkr_oauth:start_link(Base#{K => V}) end)
     || {K, Vs} <- Cases, V <- Vs],
    %% required keys missing, unknown atom keys refused, other keys ignored
    [expect({error, {bad_config, K, missing}}, fun() -> ibkr_oauth:start_link(maps:remove(K, Base)) end)
     || K <- [consumer_key, access_token, access_token_secret, dh_prime, encryption_key, signature_key]],
    expect({error, {bad_config, consumer_keyy, unknown_key}},
           fun() -> ibkr_oauth:start_link(Base#{consumer_keyy => <<"x">>}) end),
    {ok, S} = ibkr_oauth:start_link(Base#{<<"note">> => 1, {x} => y}),
    ok = ibkr_oauth:stop(S).

%% Key material that is not a plain, unencrypted RSA private key.
bad_keys_and_pems(Config) ->
    Dir = ?config(priv_dir, Config),
    KeyDir = filename:join(ibkr_test_lib:data_dir(), "keys"),
    Read = fun(F) -> {ok, B} = file:read_file(filename:join(KeyDir, F)), B end,
    {pem, Good} = maps:get(signature_key, ibkr_test_lib:vector_config(public)),
    {ok, Public} = file:read_file(filename:join(ibkr_test_lib:vector_dir(public), "public_signature.pem")),
    Big = filename:join(Dir, "big.pem"),
    ok = file:write_file(Big, binary:copy(Good, 50)),
    Fifo = filename:join(Dir, "key.fifo"),
    "" = os:cmd("mkfifo " ++ Fifo),
    Garbled = binary:replace(Good, <<"A">>, <<"*">>, [global]),
    Cases = [{{pem, <<"garbage">>}, not_pem},
             {{pem, <<"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n">>}, not_pem},
             {{pem, binary:part(Good, 0, byte_size(Good) div 2)}, not_pem},
             {{pem, Garbled}, not_pem},
             {{pem, <<255, 254, 253, 0, 1>>}, not_pem},
             {{pem, Public}, not_pem},
             {{pem, Read("public_encryption_pkcs1_encrypted.pem")}, not_pem},
             {{pem, Read("public_encryption_pkcs8_encrypted.pem")}, not_pem},
             {{pem, Read("ec_p256_pkcs8.pem")}, not_rsa},
             {{pem, Read("ec_p256_sec1.pem")}, not_rsa},
             {{pem, Read("ed25519.pem")}, not_rsa},
             {{pem, Read("rsa_pss.pem")}, not_rsa},
             {{pem, binary:copy(Good, 50)}, too_long},
             {{pem, binary:copy(<<"A">>, 17 bsl 20)}, too_long},
             {{file, Big}, too_long},
             {{file, Fifo}, file_error},
             {{file, "/dev/null"}, file_error},
             {{file, Dir}, eisdir},
             {{file, filename:join(Dir, "none.pem")}, enoent},
             {{file, <<"/tmp/", 255, ".pem">>}, enoent}],
    Base = ibkr_test_lib:vector_config(public),
    [expect({error, {bad_config, K, Why}}, fun() -> ibkr_oauth:start_link(Base#{K => Key}) end)
     || {Key, Why} <- Cases, K <- [encryption_key, signature_key]],
    %% An RSA key, but not the one the secret was encrypted for.
    expect({error, {bad_config, access_token_secret, decrypt_failed}},
           fun() -> ibkr_oauth:start_link(Base#{encryption_key => {pem, Good}}) end).

%% The DH prime (and generator) as configured.
bad_dh_prime(_Config) ->
    Base = ibkr_test_lib:vector_config(public),
    P = binary_to_integer(maps:get(dh_prime, Base), 16),
    Hex = fun(N) -> integer_to_binary(N, 16) end,
    Cases = [{<<"xyz">>, not_hex}, {<<"0x", (Hex(P))/binary>>, not_hex},
             {<<"ff ff">>, too_small}, {<<"-", (Hex(P))/binary>>, not_hex}, {<<"0x:ff">>, not_hex},
             {<<"é"/utf8>>, not_hex}, {<<255, 254>>, not_hex},
             {Hex(P + 1), not_prime}, {Hex(P - 2), not_prime}, {Hex((1 bsl 2048) - 1), not_prime},
             {Hex((1 bsl 1023) + 1), not_prime},
             {<<"FFFFFFFB">>, too_small}, {<<"0">>, too_small}, {<<"1">>, too_small}, {<<"2">>, too_small},
             {binary:copy(<<"f">>, 5000), too_long}],
    [expect({error, {bad_config, dh_prime, Why}}, fun() -> ibkr_oauth:start_link(Base#{dh_prime => Prime}) end)
     || {Prime, Why} <- Cases],
    [expect(fun({error, {bad_config, dh_generator, Why}}) -> lists:member(Why, [too_small, badarg]);
               (_) -> false
            end, fun() -> ibkr_oauth:start_link(Base#{dh_generator => G}) end)
     || G <- [0, 1, -5, P, 1 bsl 100]],
    %% Upper-case hex and leading zeros are the same prime.
    {ok, S1} = ibkr_oauth:start_link(Base#{dh_prime => string:uppercase(Hex(P))}),
    {ok, S2} = ibkr_oauth:start_link(Base#{dh_prime => <<"0000", (Hex(P))/binary>>}),
    %% So are a trailing newline (`cat dh_prime.hex`) and `openssl dhparam -text`'s
    %% colons, blanks and leading 00.
    {ok, S3} = ibkr_oauth:start_link(Base#{dh_prime => <<(Hex(P))/binary, "\n">>}),
    Text = iolist_to_binary(["    00:", lists:join(":", [B || <<B:2/binary>> <= Hex(P)]), "\n"]),
    {ok, S4} = ibkr_oauth:start_link(Base#{dh_prime => Text}),
    [ok = ibkr_oauth:stop(X) || X <- [S1, S2, S3, S4]].

%% Forms of an LST answer not covered by oauth_SUITE: each is refused, the
%% pending handshake survives, and the right answer still completes it.
bad_lst_answers(Config) ->
    S = ?config(session, Config),
    [Case | _] = maps:get(cases, ibkr_test_lib:vectors(public)),
    {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], Case)),
    Good = #{diffie_hellman_response => maps:get(diffie_hellman_response, Case),
             live_session_token_signature => maps:get(live_session_token_signature, Case),
             live_session_token_expiration => erlang:system_time(millisecond) + 60000},
    B = maps:get(diffie_hellman_response, Good),
    Sig = maps:get(live_session_token_signature, Good),
    Dh = [{<<"-5">>, bad_dh_response}, {<<"-", B/binary>>, bad_dh_response},
          {<<B/binary, " ">>, bad_dh_response}, {<<" ", B/binary>>, bad_dh_response},
          {binary:copy(<<"f">>, 100000), bad_dh_response}, {<<255, 254>>, bad_dh_response},
          {<<"é"/utf8>>, bad_dh_response}, {<<"12", 0, "34">>, {badarg, diffie_hellman_response}},
          {binary:part(B, 0, byte_size(B) - 1), lst_signature_mismatch}],
    Sigs = [{binary:copy(<<"f">>, 100000), lst_signature_mismatch},
            {<<"zz">>, lst_signature_mismatch}, {<<Sig/binary, "00">>, lst_signature_mismatch},
            {<<255, 254>>, lst_signature_mismatch},
            {<<Sig/binary, 0>>, {badarg, live_session_token_signature}}],
    [expect({error, Why}, fun() -> ibkr_oauth:lst_complete(S, Good#{diffie_hellman_response := V}) end)
     || {V, Why} <- Dh],
    [expect({error, Why}, fun() -> ibkr_oauth:lst_complete(S, Good#{live_session_token_signature := V}) end)
     || {V, Why} <- Sigs],
    ?assertEqual({error, not_authenticated}, ibkr_oauth:live_session_token(S)),
    %% A negative expiration, refused by the port too.
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = ?L:port_call(P, 1, {init, ?L:port_config(#{})}),
    ?assertEqual({error, {badarg, live_session_token_expiration}},
                 ?L:port_call(P, 2, {lst_complete, Good#{live_session_token_expiration := -1}})),
    ibkr_oauth_port:close(P),
    %% Upper-case hex is the same answer.
    {ok, _} = ibkr_oauth:lst_complete(S, Good#{diffie_hellman_response := string:uppercase(B)}),
    ?assertEqual({ok, maps:get(live_session_token, Case)},
                 case ibkr_oauth:live_session_token(S) of {ok, #{token := T}} -> {ok, T}; E -> E end).

%% Against the fake server: non-UTF-8 bytes in the query, headers and body
%% go out signed correctly; a URL over the port's 64 KiB limit, too many
%% query parameters and headers with CR/LF are refused before anything is
%% sent.
huge_and_non_utf8_requests(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    Raw = <<0, 1, 127, 128, 255, 254, "é"/utf8, "\r\n">>,
    {ok, #{status := 200, body := Echo}} =
        ibkr_oauth:request(S, post, <<"/echo">>,
                           #{query => [{Raw, Raw}], headers => [{<<"x-raw">>, <<255, 254, 128>>}],
                             body => [Raw, binary:copy(<<255>>, 500000)]}),
    ?assertNotEqual(nomatch, binary:match(Echo, binary:copy(<<255>>, 500000))),
    ?assertMatch(#{bad_signatures := 0}, ?F:stats()),
    expect({error, {badarg, headers}},
           fun() -> ibkr_oauth:request(S, get, <<"/echo">>, #{headers => [{<<"x">>, <<"a\r\nInjected: 1">>}]}) end),
    expect({error, {badarg, headers}},
           fun() -> ibkr_oauth:request(S, get, <<"/echo">>, #{headers => [{<<"x y">>, <<"v">>}]}) end),
    expect({error, {badarg, url}},
           fun() -> ibkr_oauth:request(S, get, <<"/", (binary:copy(<<"p">>, 70000))/binary>>) end),
    expect({error, {badarg, url}},
           fun() -> ibkr_oauth:request(S, get, <<"/echo">>, #{query => [{<<"q">>, binary:copy(<<255>>, 30000)}]}) end),
    Before = maps:get(requests, ?F:stats()),
    %% over the port's limit of 256 query parameters in a signature
    Many = [{integer_to_binary(I), <<"v">>} || I <- lists:seq(1, 300)],
    expect({error, {badarg, url}}, fun() -> ibkr_oauth:request(S, get, <<"/echo">>, #{query => Many}) end),
    ?assertEqual(Before, maps:get(requests, ?F:stats())),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, <<"/portfolio/accounts">>),
    ?assertMatch(#{bad_signatures := 0, handshakes := 1}, ?F:stats()).

%% Frames written to the port without {packet, 4}: a frame split into
%% single bytes, a frame whose rest comes later, lengths 0 and 1, a length
%% prefix of 4 GiB followed by EOF, and EOF in the middle of a frame (the
%% port must not wait for the missing bytes: it exits).
split_and_truncated_frames(_Config) ->
    {ok, Port, OsPid} = open_raw(),
    Frame = fun(T) -> B = term_to_binary(T), <<(byte_size(B)):32, B/binary>> end,
    [begin port_command(Port, <<Byte>>), timer:sleep(1) end || <<Byte>> <= Frame({1, {echo, split}})],
    ?assertEqual({1, {ok, split}}, raw_recv(Port)),
    <<Head:10/binary, Tail/binary>> = Frame({2, {echo, later}}),
    port_command(Port, Head),
    timer:sleep(100),
    port_command(Port, Tail),
    ?assertEqual({2, {ok, later}}, raw_recv(Port)),
    %% a length of 0 and a length of 1
    port_command(Port, <<0:32>>),
    ?assertEqual({0, {protocol_error, bad_term}}, raw_recv(Port)),
    port_command(Port, <<1:32, 131>>),
    ?assertEqual({0, {protocol_error, bad_term}}, raw_recv(Port)),
    port_command(Port, Frame({3, {echo, still}})),
    ?assertEqual({3, {ok, still}}, raw_recv(Port)),
    %% (refused once its 4 GiB have been read and discarded: never here)
    port_command(Port, <<16#FFFFFFFF:32, "abc">>),
    port_close(Port),
    ok = ?L:wait_until(fun() -> not ?L:os_alive(OsPid) end, 5000),
    %% EOF in the middle of a frame
    {ok, Port2, OsPid2} = open_raw(),
    port_command(Port2, <<100:32, "short">>),
    timer:sleep(50),
    port_close(Port2),
    ok = ?L:wait_until(fun() -> not ?L:os_alive(OsPid2) end, 5000).

%% Request headers are capped at 100, 64 KiB together (PROTOCOL.md), in
%% Erlang before the frame is built and again in the port: 60,000 and
%% 100,000 headers are refused at once while other callers keep signing
%% (they used to take the port's single loop for seconds: appending to a
%% libcurl list walked it every time), and exactly 100 go out.
header_cap(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    Hs = fun(N) -> [{<<"x-h", (integer_to_binary(I))/binary>>, <<"v">>} || I <- lists:seq(1, N)] end,
    Signers = ?L:spawn_callers([fun() -> [ibkr_oauth:sign(S, get, ?URL) || _ <- lists:seq(1, 200)] end
                                || _ <- lists:seq(1, 4)]),
    [expect({error, {badarg, headers}},
            fun() -> ibkr_oauth:request(S, get, <<"/echo">>, #{headers => Hs(N)}) end)
     || N <- [101, 60000, 100000]],
    %% 64 KiB of names and values, one byte over
    Big = [{<<"x-a">>, binary:copy(<<"a">>, 40000)}, {<<"x-b">>, binary:copy(<<"b">>, 65536 - 40000 - 6 + 1)}],
    expect({error, {badarg, headers}}, fun() -> ibkr_oauth:request(S, get, <<"/echo">>, #{headers => Big}) end),
    Signed = lists:append(?L:collect(Signers, 60000)),
    ?assertEqual(800, length([ok || {ok, <<"OAuth ", _/binary>>} <- Signed])),
    %% at the cap: sent, and the server saw all 100
    {ok, #{status := 200, body := Echo}} = ibkr_oauth:request(S, get, <<"/echo">>, #{headers => Hs(100)}),
    ?assertNotEqual(nomatch, binary:match(Echo, <<"x-h100">>)),
    ?assertMatch(#{bad_signatures := 0}, ?F:stats()),
    %% The port's own check, for a caller that bypasses the API.
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = ?L:port_call(P, 1, {init, ?L:port_config(#{})}),
    Http = fun(H) -> {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/x">>, sign => false,
                              headers => H}} end,
    [?assertEqual({error, {badarg, headers}}, ?L:port_call(P, 10 + I, Http(H)))
     || {I, H} <- lists:enumerate([Hs(101), Hs(60000), Hs(100000), Big])],
    ?assertMatch({error, {transport, connect, #{sent := false}}}, ?L:port_call(P, 20, Http(Hs(100)))),
    ibkr_oauth_port:close(P).

%% sign/3 wants an absolute http(s) URL of valid UTF-8 (PROTOCOL.md); the
%% API checks it and so does the port's sign command.
sign_url_not_absolute_http(Config) ->
    S = ?config(session, Config),
    _ = vector_lst(S),
    Bad = [<<"/portfolio/accounts">>, <<"portfolio/accounts">>, <<"ftp://api.ibkr.com/x">>,
           <<"file:///etc/passwd">>, <<"https://">>, <<"https:///x">>, <<"https://u@h/x">>,
           <<"https://h:0/x">>, <<"https://h:65536/x">>, <<"https://h\\x">>,
           <<"https://h/", 255, 254>>, <<"https://h/", 16#C3>>, <<"https://h/", 16#C0, 16#AF>>,
           <<"https://h/", 16#ED, 16#A0, 16#80>>, <<"https://h/a\r\nb">>, <<"https://h/\d">>],
    Good = [?URL, <<"HTTP://127.0.0.1:8080">>, <<"https://[::1]/x?a=b#f">>,
            <<"https://h/caf", "é"/utf8>>],
    [expect({error, {badarg, url}}, fun() -> ibkr_oauth:sign(S, get, U) end) || U <- Bad],
    [expect(fun({ok, <<"OAuth ", _/binary>>}) -> true; (_) -> false end,
            fun() -> ibkr_oauth:sign(S, get, U) end) || U <- Good],
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = ?L:port_call(P, 1, {init, ?L:port_config(#{})}),
    [?assertEqual({U, {error, {badarg, url}}}, {U, ?L:port_call(P, 2, {sign, <<"GET">>, U, #{}})})
     || U <- Bad],
    %% (no LST in this port: past the URL check, that is the answer)
    [?assertEqual({U, {error, not_authenticated}}, {U, ?L:port_call(P, 3, {sign, <<"GET">>, U, #{}})})
     || U <- Good],
    ibkr_oauth_port:close(P).

%% Huge arguments are refused by their size before their bytes are looked
%% at: a 100 MB path, a million query pairs, a 100 MB query value or header,
%% a 1 GiB body given as iodata. Each answer costs the caller a bounded
%% number of reductions (a deterministic measure of work: walking 100 MB in
%% Erlang costs over 10^8), and nothing reaches the session.
huge_inputs_refused_at_once(Config) ->
    S = ?config(session, Config),
    Huge = binary:copy(<<"p">>, 100 bsl 20),
    %% (built here: a 100 MB copy inside the measured fun would count)
    HugePath = <<"/", Huge/binary>>,
    HugeUrl = <<"https://h/", Huge/binary>>,
    Pairs = lists:duplicate(1000000, {<<"k">>, <<"v">>}),
    MiB = binary:copy(<<"b">>, 1 bsl 20),
    Cases = [{{badarg, url}, fun() -> ibkr_oauth:request(S, get, HugePath) end},
             {{badarg, url}, fun() -> ibkr_oauth:request(S, get, <<"/x">>, #{query => Pairs}) end},
             {{badarg, url}, fun() -> ibkr_oauth:request(S, get, <<"/x">>, #{query => [{<<"q">>, Huge}]}) end},
             {{badarg, headers}, fun() -> ibkr_oauth:request(S, get, <<"/x">>, #{headers => [{<<"x">>, Huge}]}) end},
             {{badarg, headers}, fun() -> ibkr_oauth:request(S, get, <<"/x">>, #{headers => Pairs}) end},
             {too_large, fun() -> ibkr_oauth:request(S, post, <<"/x">>, #{body => lists:duplicate(1024, MiB)}) end},
             {{badarg, url}, fun() -> ibkr_oauth:sign(S, get, HugeUrl) end}],
    [expect_cheap({error, Why}, F, 200000) || {Why, F} <- Cases],
    ?assertMatch(#{requests := 0, in_flight := 0}, ibkr_oauth:stats(S)).

%%% ---------------------------------------------------------------- helpers

%% expect/2, and the caller's process spent at most MaxReductions on it.
expect_cheap(Want, Fun, MaxReductions) ->
    expect(fun({R, Reds}) when R =:= Want, Reds =< MaxReductions -> true;
              (_) -> false
           end,
           fun() ->
                   {reductions, R0} = process_info(self(), reductions),
                   R = Fun(),
                   {reductions, R1} = process_info(self(), reductions),
                   {R, R1 - R0}
           end).


%% supervisor callback (api_arguments/1: child_spec/1 with a bad config).
init([]) -> {ok, {#{strategy => one_for_one}, []}}.

%% Runs Fun in a fresh process that does not trap exits. It must return
%% (a crash fails the test with its reason), leave nothing in that process's
%% mailbox, and give the expected value (a term, or a predicate fun/1).
expect(Want, Fun) ->
    {Pid, MRef} = spawn_monitor(fun() ->
                                        R = Fun(),
                                        {messages, Msgs} = process_info(self(), messages),
                                        exit({done, R, Msgs})
                                end),
    receive
        {'DOWN', MRef, process, Pid, {done, Got, Msgs}} ->
            ?assertEqual([], Msgs),
            Ok = case is_function(Want, 1) of
                     true -> Want(Got);
                     false -> Got =:= Want
                 end,
            case Ok of
                true -> cleanup(Got);
                false -> ct:fail({unexpected, Got, expected, Want, erlang:fun_info(Fun, env)})
            end;
        {'DOWN', MRef, process, Pid, Crash} ->
            ct:fail({caller_crashed, Crash})
    after 30000 ->
            ct:fail({no_answer, process_info(Pid, current_stacktrace)})
    end.

%% A session that a wrong expectation let start is stopped.
cleanup({ok, Pid}) when is_pid(Pid) -> _ = ibkr_oauth:stop(Pid), ok;
cleanup(_) -> ok.

dead_pid() ->
    {Pid, MRef} = spawn_monitor(fun() -> ok end),
    receive {'DOWN', MRef, _, _, _} -> Pid end.

%% The vector LST in the session (so that sign/3 has something to sign with).
vector_lst(S) ->
    [Case | _] = maps:get(cases, ibkr_test_lib:vectors(public)),
    {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], Case)),
    {ok, _} = ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, Case),
                                           live_session_token_signature => maps:get(live_session_token_signature, Case),
                                           live_session_token_expiration => erlang:system_time(millisecond) + 60000}),
    ok.

open_raw() ->
    Port = open_port({spawn_executable, ibkr_oauth_port:path()}, [binary, nouse_stdio, exit_status]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    {ok, Port, OsPid}.

%% One frame from a port opened without {packet, 4}.
raw_recv(Port) -> raw_recv(Port, <<>>).

raw_recv(_Port, <<Len:32, Body:Len/binary>>) ->
    {ok, Id, Msg} = ibkr_oauth_port:decode(Body),
    {Id, Msg};
raw_recv(Port, Acc) ->
    receive
        {Port, {data, Bin}} -> raw_recv(Port, <<Acc/binary, Bin/binary>>);
        {Port, {exit_status, St}} -> ct:fail({port_exited, St})
    after 10000 -> ct:fail({no_frame, Acc})
    end.
