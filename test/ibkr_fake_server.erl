%% A fake IBKR Web API for the tests and the demo: real TLS on 127.0.0.1 with
%% a CA generated at start, real OAuth checks (RSA-SHA256 on the LST request,
%% DH, HMAC-SHA256 on every other request, nonces, timestamps) done by
%% ibkr_server_crypto, a few endpoints with fixed answers, and fault injection.
%%
%% One fake server per node (registered as ibkr_fake_server). Connections are
%% handled by one process each (HTTP/1.1 keep-alive, Content-Length bodies);
%% the decisions (auth, faults, stats, state) are made by the gen_server.
%%
%% Faults (set_fault/1; Count is a positive integer or infinity):
%%   {status, Code, Count}         answer Code to the next Count requests
%%   {rate_limit, RetryAfterS, Count}  429 with Retry-After
%%   {slow, Ms, Count}             answer the next Count requests Ms late
%%   {drop, Count}                 close the connection without answering (the
%%                                 request counts as received: its nonce is used)
%%   {reject_lst, Count}           401 to the next Count LST requests
%%   bad_dh_response | {bad_dh_response, B}  next LST answer carries B (default 1)
%%   wrong_lst_signature           next LST answer has a wrong signature
%%   malformed_json                next LST answer is not JSON
%%   {expire_lst_in_ms, Ms}        the next LST expires Ms after it is issued
%%   {skew_s, Seconds}             the server's clock is off by Seconds (until cleared;
%%                                 the Date header of every answer shows it)
%%   {lst_expiration, Ms}          every LST answer says it expires at Ms (epoch ms,
%%                                 any integer, e.g. in the past or in seconds;
%%                                 until cleared); the LST itself stays valid
%%   invalidate_lst                (immediate) every LST held becomes invalid
%%   {answer, Path, Status, Body, Count}  the next Count requests of Path (relative,
%%                                 no query; "/oauth/live_session_token" too) get
%%                                 Status and Body (IBKR's error bodies)
%% status/rate_limit/slow/drop apply to every request (the LST request too),
%% so set them after authenticating when a test targets API calls.
%%
%% stats/0: handshakes (LSTs issued), lst_requests, requests, by_path
%% (#{RelativePath => N}, path without /v1/api and query), statuses
%% (#{Status => N}), nonce_reuse, bad_signatures, bad_timestamps,
%% last_headers (of the last request, names lower-case), logouts, tickles,
%% ssodh_inits, log (newest first: #{method, path, nonce, outcome :=
%% Status | dropped, body_bytes, at := monotonic us when the request was
%% complete}).
%%
%% Endpoints under /v1/api: POST /oauth/live_session_token; signed:
%% POST /iserver/auth/ssodh/init, /tickle, GET /iserver/auth/status,
%% GET /portfolio/accounts, GET /portfolio/{acct}/positions/{page},
%% POST /iserver/account/{acct}/orders, GET /iserver/account/orders,
%% GET /iserver/secdef/search (the /iserver/* ones need ssodh/init first,
%% else 400 "no bridge"), POST /logout, any method /echo (the request as
%% JSON: method, path, query, headers, body) and /echo/raw (the request body
%% as the answer's body, byte for byte); else 404.
%% GET /ws with an Upgrade: the websocket, see ibkr_fake_ws (start option
%% `ws => Map', its controls and stats are in that module).
-module(ibkr_fake_server).
-behaviour(gen_server).

-include_lib("public_key/include/public_key.hrl").

-export([start/1, start_from_vectors/2, stop/0, info/0,
         set_fault/1, clear_faults/0, stats/0, reset_stats/0, live_session_token/0]).
-export([json/1]).
%% Also ibkr_ws_peer's: the same throw-away CA and temporary directories.
-export([make_certs/0, fresh_dir/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(SERVER, ?MODULE).
-define(LST_PATH, <<"/oauth/live_session_token">>).
-define(IDLE_TIMEOUT_MS, 120000).
-define(MAX_REQUEST_BYTES, 1048576).
-define(LOG_SIZE, 2000).
-define(ACCOUNTS, [<<"U1234567">>, <<"U7654321">>]).

%%% ==================================================================== API

-spec start(map()) -> {ok, map()} | {error, term()}.
start(Opts) ->
    {ok, _} = application:ensure_all_started(ssl),
    case gen_server:start({local, ?SERVER}, ?MODULE, Opts, []) of
        {ok, _Pid} -> {ok, info()};
        Error -> Error
    end.

%% Configured from a vector set; the answer also carries a ready client
%% config (`config`) pointing at this server.
-spec start_from_vectors(public | testcons, map()) -> {ok, map()} | {error, term()}.
start_from_vectors(Set, Extra) ->
    V = ibkr_test_lib:vectors(Set),
    Dir = ibkr_test_lib:vector_dir(Set),
    EncKey = ibkr_server_crypto:private_key(filename:join(Dir, "private_encryption.pem")),
    Opts = #{consumer_key => maps:get(consumer_key, V),
             access_token => maps:get(access_token, V),
             access_token_secret_plain =>
                 ibkr_server_crypto:decrypt_secret(maps:get(access_token_secret, V), EncKey),
             public_signature_key => list_to_binary(filename:join(Dir, "public_signature.pem")),
             dh_prime => maps:get(dh_prime, V),
             dh_generator => maps:get(dh_generator, V),
             realm => maps:get(realm, V)},
    case start(maps:merge(Opts, Extra)) of
        {ok, Info = #{base_url := BaseUrl, ca_file := CaFile}} ->
            Config = ibkr_test_lib:vector_config(Set, #{base_url => BaseUrl, ca_file => CaFile}),
            {ok, Info#{config => Config}};
        Error -> Error
    end.

-spec stop() -> ok.
stop() ->
    try gen_server:stop(?SERVER)
    catch exit:noproc -> ok
    end.

%% #{port, base_url, ca_file}
-spec info() -> map().
info() -> gen_server:call(?SERVER, info).

-spec set_fault(term()) -> ok | {error, {bad_fault, term()}}.
set_fault(Fault) -> gen_server:call(?SERVER, {set_fault, Fault}).

-spec clear_faults() -> ok.
clear_faults() -> gen_server:call(?SERVER, clear_faults).

-spec stats() -> map().
stats() -> gen_server:call(?SERVER, stats).

-spec reset_stats() -> ok.
reset_stats() -> gen_server:call(?SERVER, reset_stats).

%% The LST the server issued last (test only).
-spec live_session_token() -> {ok, binary()} | {error, none}.
live_session_token() -> gen_server:call(?SERVER, live_session_token).

%%% ============================================================ gen_server

init(Opts) ->
    process_flag(trap_exit, true),
    #{cert := Cert, key := Key, ca_pem := CaPem} = make_certs(),
    {CaDir, OwnsCaDir} = case Opts of
                             #{ca_dir := Dir} -> {Dir, false};
                             _ -> {default_ca_dir(), true}
                         end,
    CaFile = write_ca(CaDir, CaPem),
    SslOpts = [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true},
               {backlog, 256}, {cert, Cert}, {key, Key},
               {versions, ['tlsv1.3', 'tlsv1.2']}],
    case ssl:listen(0, SslOpts) of
        {ok, Listen} ->
            {ok, {_, Port}} = ssl:sockname(Listen),
            Server = self(),
            Acceptor = spawn_link(fun() -> accept_loop(Listen, Server) end),
            {ok, initial_state(Opts, #{listen => Listen, port => Port, ca_file => CaFile,
                                       owns_ca_dir => OwnsCaDir, acceptor => Acceptor})};
        {error, Why} ->
            {stop, {listen, Why}}
    end.

handle_call({request, Req}, _From, S) ->
    {Action, S1} = handle_request(Req, count_request(Req, S)),
    {reply, Action, S1};
handle_call(skew_s, _From, S = #{skew_s := Skew}) ->
    {reply, Skew, S};
handle_call({api, Cmd}, _From, S) ->
    ibkr_fake_api:server_call(Cmd, S);
handle_call(info, _From, S) ->
    {reply, info_map(S), S};
handle_call({set_fault, Fault}, _From, S) ->
    case add_fault(Fault, S) of
        {ok, S1} -> {reply, ok, S1};
        error -> {reply, {error, {bad_fault, Fault}}, S}
    end;
handle_call(clear_faults, _From, S) ->
    {reply, ok, S#{faults := [], skew_s := 0}};
handle_call(stats, _From, S = #{stats := Stats}) ->
    {reply, Stats, S};
handle_call(reset_stats, _From, S) ->
    {reply, ok, S#{stats := empty_stats()}};
handle_call(live_session_token, _From, S = #{lsts := [#{token := Lst} | _]}) ->
    {reply, {ok, Lst}, S};
handle_call(live_session_token, _From, S) ->
    {reply, {error, none}, S};
handle_call({ws, Cmd}, From, S) ->
    ibkr_fake_ws:server_call(Cmd, From, S).

handle_cast(_Msg, S) -> {noreply, S}.

handle_info({'EXIT', Acceptor, Why}, S = #{acceptor := Acceptor}) ->
    {stop, {acceptor_down, Why}, S};
handle_info({'DOWN', _, process, Pid, _}, S) ->
    {_, S1} = ibkr_fake_ws:server_down(Pid, S),
    {noreply, S1};
handle_info(_Msg, S) -> {noreply, S}.

terminate(_Why, S = #{listen := Listen, acceptor := Acceptor}) ->
    unlink(Acceptor),
    exit(Acceptor, kill),
    _ = ssl:close(Listen),
    remove_ca(S).

remove_ca(#{ca_file := CaFile, owns_ca_dir := true}) ->
    _ = file:delete(CaFile),
    _ = file:del_dir(filename:dirname(CaFile)),
    ok;
remove_ca(_) -> ok.

initial_state(Opts, Listener) ->
    Plain = maps:get(access_token_secret_plain, Opts),
    Listener#{
      consumer_key => maps:get(consumer_key, Opts),
      access_token => maps:get(access_token, Opts),
      prepend => ibkr_server_crypto:prepend(Plain),
      signature_key => ibkr_server_crypto:public_key(maps:get(public_signature_key, Opts)),
      p => ibkr_server_crypto:dh_prime(maps:get(dh_prime, Opts)),
      g => maps:get(dh_generator, Opts, 2),
      realm => maps:get(realm, Opts, <<"limited_poa">>),
      base_path => <<"/v1/api">>,
      lst_ttl_ms => maps:get(lst_ttl_ms, Opts, 86400000),
      lst_grace_ms => maps:get(lst_grace_ms, Opts, 10000),
      window_s => maps:get(timestamp_window_s, Opts, 300),
      skew_s => 0,
      faults => [],
      lsts => [],            % newest first: #{token, expires_at, valid_until}
      nonces => #{},
      bridge => false,
      orders => [],
      session_id => ibkr_server_crypto:hex(crypto:strong_rand_bytes(16)),
      ws => ibkr_fake_ws:init_state(maps:get(ws, Opts, #{})),
      stats => empty_stats()}.

info_map(#{port := Port, ca_file := CaFile, base_path := BasePath}) ->
    #{port => Port,
      base_url => iolist_to_binary(["https://localhost:", integer_to_list(Port), BasePath]),
      ca_file => CaFile}.

empty_stats() ->
    #{handshakes => 0, lst_requests => 0, requests => 0, by_path => #{}, statuses => #{},
      nonce_reuse => 0, bad_signatures => 0, bad_timestamps => 0, last_headers => [],
      logouts => 0, tickles => 0, ssodh_inits => 0, log => []}.

%%% ================================================================ certs

%% A throw-away CA and a certificate it signed for localhost/127.0.0.1.
-spec make_certs() -> #{cert := public_key:der_encoded(), key := {atom(), binary()},
                        ca_pem := binary()}.
make_certs() ->
    Curve = [{key, {namedCurve, ?'secp256r1'}}, {digest, sha256}],
    San = #'Extension'{extnID = ?'id-ce-subjectAltName', critical = false,
                       extnValue = [{dNSName, "localhost"}, {iPAddress, <<127, 0, 0, 1>>}]},
    Conf = public_key:pkix_test_data(#{root => Curve, intermediates => [],
                                       peer => [{extensions, [San]} | Curve]}),
    {cert, Cert} = lists:keyfind(cert, 1, Conf),
    {key, Key} = lists:keyfind(key, 1, Conf),
    {cacerts, [Ca | _]} = lists:keyfind(cacerts, 1, Conf),
    #{cert => Cert, key => Key,
      ca_pem => public_key:pem_encode([{'Certificate', Ca, not_encrypted}])}.

default_ca_dir() -> fresh_dir("ibkr_fake_server").

%% A fresh directory name (Prefix-OsPid-N) under the system's temporary
%% directory; not created.
-spec fresh_dir(string()) -> file:filename().
fresh_dir(Prefix) ->
    Tmp = case os:getenv("TMPDIR") of
              false -> "/tmp";
              "" -> "/tmp";
              T -> T
          end,
    Name = Prefix ++ "-" ++ os:getpid() ++ "-" ++ integer_to_list(erlang:unique_integer([positive])),
    filename:join(Tmp, Name).

write_ca(Dir, Pem) ->
    File = filename:join(Dir, "fake_ibkr_ca.pem"),
    ok = filelib:ensure_dir(File),
    ok = file:write_file(File, Pem),
    unicode:characters_to_binary(File).

%%% ======================================================== connections

accept_loop(Listen, Server) ->
    case ssl:transport_accept(Listen) of
        {ok, Socket} ->
            Pid = spawn(fun() -> connection(Server) end),
            case ssl:controlling_process(Socket, Pid) of
                ok -> Pid ! {socket, Socket};
                {error, _} -> _ = ssl:close(Socket), exit(Pid, kill)
            end,
            accept_loop(Listen, Server);
        {error, closed} ->
            exit(normal);
        {error, _} ->
            accept_loop(Listen, Server)
    end.

connection(Server) ->
    Ref = monitor(process, Server),
    receive
        {socket, Socket} ->
            case ssl:handshake(Socket, 10000) of
                {ok, Tls} -> connection_loop(#{socket => Tls, server => Server, ref => Ref, buf => <<>>});
                {error, _} -> _ = ssl:close(Socket)
            end
    after 10000 -> ok
    end.

connection_loop(C = #{socket := Socket, buf := Buf}) ->
    case parse_request(Buf) of
        {ok, Req, Rest} -> serve(Req, C#{buf := Rest});
        more when byte_size(Buf) > ?MAX_REQUEST_BYTES -> close(C);
        more -> receive_data(C);
        {error, _} ->
            send_response(Socket, 400, [], json(#{error => <<"bad request">>}), close),
            close(C)
    end.

receive_data(C = #{socket := Socket}) ->
    case ssl:setopts(Socket, [{active, once}]) of
        ok -> await_data(C);
        {error, _} -> close(C)
    end.

await_data(C = #{socket := Socket, ref := Ref, buf := Buf}) ->
    receive
        {ssl, Socket, Data} -> connection_loop(C#{buf := <<Buf/binary, Data/binary>>});
        {ssl_closed, Socket} -> ok;
        {ssl_error, Socket, _} -> close(C);
        {'DOWN', Ref, process, _, _} -> close(C)
    after ?IDLE_TIMEOUT_MS -> close(C)
    end.

serve(Req, C = #{socket := Socket, server := Server}) ->
    case catch gen_server:call(Server, {request, Req}, infinity) of
        {respond, Delay, Status, Headers, Body} ->
            ok = delay(Delay, C),
            Connection = connection_header(Req),
            send_response(Socket, Status, with_date(Headers, Server), response_body(Req, Body), Connection),
            continue_or_close(Connection, C);
        {drop, Delay} ->
            ok = delay(Delay, C),
            close(C);
        {upgrade, Delay, Ctx} ->
            ok = delay(Delay, C),
            ibkr_fake_ws:serve(Socket, maps:get(buf, C), Ctx, Server);
        _ ->
            close(C)
    end.

%% Every answer carries a Date header, from the server's (maybe skewed) clock.
with_date(Headers, Server) ->
    Skew = case catch gen_server:call(Server, skew_s) of
               N when is_integer(N) -> N;
               _ -> 0
           end,
    Date = httpd_util:rfc1123_date(calendar:system_time_to_universal_time(
                                     erlang:system_time(second) + Skew, second)),
    [{<<"date">>, list_to_binary(Date)} | Headers].

%% An injected delay: wait, unless the server goes away meanwhile.
delay(0, _C) -> ok;
delay(Ms, C = #{ref := Ref}) ->
    receive {'DOWN', Ref, process, _, _} -> close(C), exit(normal)
    after Ms -> ok
    end.

continue_or_close(keep_alive, C) -> connection_loop(C);
continue_or_close(close, C) -> close(C).

close(#{socket := Socket}) ->
    _ = ssl:close(Socket),
    ok.

connection_header(#{version := {1, 0}}) -> close;
connection_header(#{headers := Headers}) ->
    case string:lowercase(header(<<"connection">>, Headers, <<>>)) of
        <<"close">> -> close;
        _ -> keep_alive
    end.

response_body(#{method := <<"HEAD">>}, _Body) -> head;
response_body(_Req, Body) -> Body.

send_response(Socket, Status, Headers, Body, Connection) ->
    Length = case Body of head -> 0; _ -> iolist_size(Body) end,
    Head = [<<"HTTP/1.1 ">>, integer_to_binary(Status), $\s, reason(Status), <<"\r\n">>,
            <<"content-type: application/json\r\n">>,
            <<"content-length: ">>, integer_to_binary(Length), <<"\r\n">>,
            <<"connection: ">>, connection_value(Connection), <<"\r\n">>,
            [[Name, <<": ">>, Value, <<"\r\n">>] || {Name, Value} <- Headers],
            <<"\r\n">>],
    _ = ssl:send(Socket, [Head, case Body of head -> <<>>; _ -> Body end]),
    ok.

connection_value(keep_alive) -> <<"keep-alive">>;
connection_value(close) -> <<"close">>.

reason(200) -> <<"OK">>;
reason(400) -> <<"Bad Request">>;
reason(401) -> <<"Unauthorized">>;
reason(403) -> <<"Forbidden">>;
reason(404) -> <<"Not Found">>;
reason(411) -> <<"Length Required">>;
reason(429) -> <<"Too Many Requests">>;
reason(500) -> <<"Internal Server Error">>;
reason(502) -> <<"Bad Gateway">>;
reason(503) -> <<"Service Unavailable">>;
reason(_) -> <<"Status">>.

%%% ========================================================= HTTP parsing

%% -> {ok, #{method, target, version, headers, body}, Rest} | more | {error, Why}
parse_request(<<>>) -> more;
parse_request(Buf) ->
    case erlang:decode_packet(http_bin, Buf, []) of
        {ok, {http_request, Method, Target, Version}, Rest} ->
            parse_headers(Rest, #{method => method_bin(Method), target => target(Target),
                                  version => Version, headers => []});
        {ok, {http_error, Line}, _} -> {error, {bad_request_line, Line}};
        {ok, _, _} -> {error, bad_request_line};
        {more, _} -> more;
        {error, Why} -> {error, Why}
    end.

parse_headers(Buf, Req = #{headers := Headers}) ->
    case erlang:decode_packet(httph_bin, Buf, []) of
        {ok, {http_header, _, Name, _, Value}, Rest} ->
            parse_headers(Rest, Req#{headers := [{header_name(Name), Value} | Headers]});
        {ok, http_eoh, Rest} -> parse_body(Rest, Req#{headers := lists:reverse(Headers)});
        {ok, {http_error, Line}, _} -> {error, {bad_header, Line}};
        {more, _} -> more;
        {error, Why} -> {error, Why}
    end.

parse_body(Buf, Req = #{headers := Headers}) ->
    case header(<<"content-length">>, Headers, undefined) of
        undefined -> {ok, Req#{body => <<>>}, Buf};
        LengthBin ->
            case string:to_integer(LengthBin) of
                {Length, <<>>} when Length >= 0, byte_size(Buf) >= Length ->
                    <<Body:Length/binary, Rest/binary>> = Buf,
                    {ok, Req#{body => Body}, Rest};
                {Length, <<>>} when Length >= 0 -> more;
                _ -> {error, bad_content_length}
            end
    end.

method_bin(M) when is_atom(M) -> atom_to_binary(M);
method_bin(M) -> M.

target({abs_path, Path}) -> Path;
target({absoluteURI, _Scheme, _Host, _Port, Path}) -> Path;
target(Other) when is_binary(Other) -> Other;
target(_) -> <<"*">>.

header_name(Name) when is_atom(Name) -> string:lowercase(atom_to_binary(Name));
header_name(Name) -> string:lowercase(Name).

header(Name, Headers, Default) ->
    case lists:keyfind(Name, 1, Headers) of
        {_, Value} -> Value;
        false -> Default
    end.

%%% ==================================================== request handling

count_request(Req = #{target := Target, headers := Headers}, S = #{stats := Stats}) ->
    Path = relative_path(Target, S),
    #{requests := N, by_path := ByPath} = Stats,
    S#{stats := Stats#{requests := N + 1,
                       by_path := ByPath#{Path => maps:get(Path, ByPath, 0) + 1},
                       last_headers := Headers}}#{last_request => Req}.

relative_path(Target, #{base_path := BasePath}) ->
    {Path, _} = ibkr_server_crypto:split_url(Target),
    Size = byte_size(BasePath),
    case Path of
        <<BasePath:Size/binary, Rest/binary>> -> Rest;
        _ -> Path
    end.

%% -> {{respond, DelayMs, Status, Headers, Body} | {drop, DelayMs}, State}
handle_request(Req = #{target := Target}, S0) ->
    {Delay, Injected, S1} = case take_answer_fault(relative_path(Target, S0), S0) of
                                {none, SF} -> take_request_faults(SF);
                                {Answer, SF} -> {0, Answer, SF}
                            end,
    {Action, S2} = case Injected of
                       none -> answer(Req, S1);
                       drop -> {drop, seen_nonce(Req, S1)};
                       _ -> {Injected, S1}
                   end,
    {with_delay(Action, Delay), log_request(Req, Action, count_status(Action, S2))}.

%% A dropped request was received in full: like a real server, remember its
%% nonce, so a blind resend of the same bytes is refused.
seen_nonce(#{headers := Headers}, S = #{nonces := Nonces}) ->
    case ibkr_server_crypto:parse_authorization(header(<<"authorization">>, Headers, <<>>)) of
        {ok, #{<<"oauth_nonce">> := Nonce}} -> S#{nonces := Nonces#{Nonce => true}};
        _ -> S
    end.

with_delay({respond, Status, Headers, Body}, Delay) -> {respond, Delay, Status, Headers, Body};
with_delay(drop, Delay) -> {drop, Delay};
with_delay({upgrade, Ctx}, Delay) -> {upgrade, Delay, Ctx}.

count_status({respond, Status, _, _}, S = #{stats := Stats = #{statuses := Statuses}}) ->
    S#{stats := Stats#{statuses := Statuses#{Status => maps:get(Status, Statuses, 0) + 1}}};
count_status({upgrade, _}, S) -> count_status({respond, 101, [], <<>>}, S);
count_status(drop, S) -> S.

%% The last ?LOG_SIZE requests, newest first: method, path, nonce, outcome.
log_request(Req = #{method := Method, target := Target, headers := Headers}, Action,
            S = #{stats := Stats = #{log := Log}}) ->
    Nonce = case ibkr_server_crypto:parse_authorization(header(<<"authorization">>, Headers, <<>>)) of
                {ok, #{<<"oauth_nonce">> := N}} -> N;
                _ -> none
            end,
    Outcome = case Action of
                  {respond, Status, _, _} -> Status;
                  {upgrade, _} -> 101;
                  drop -> dropped
              end,
    Entry = #{method => Method, path => relative_path(Target, S), nonce => Nonce,
              outcome => Outcome, body_bytes => byte_size(maps:get(body, Req)),
              at => erlang:monotonic_time(microsecond)},
    S#{stats := Stats#{log := lists:sublist([Entry | Log], ?LOG_SIZE)}}.

answer(Req = #{method := Method, target := Target, headers := Headers}, S) ->
    Path = relative_path(Target, S),
    InBase = is_under_base(Target, S),
    NeedsLength = lists:member(Method, [<<"POST">>, <<"PUT">>, <<"PATCH">>]),
    HasLength = lists:keymember(<<"content-length">>, 1, Headers),
    if
        not InBase -> {error_response(404, <<"not found">>), S};
        NeedsLength, not HasLength -> {error_response(411, <<"length required">>), S};
        Path =:= ?LST_PATH, Method =:= <<"POST">> -> live_session_token_request(Req, S);
        Path =:= <<"/ws">> -> ibkr_fake_ws:upgrade(Req, S);
        true -> signed_request(Req, Path, S)
    end.

is_under_base(Target, #{base_path := BasePath}) ->
    Size = byte_size(BasePath),
    case Target of
        <<BasePath:Size/binary, $/, _/binary>> -> true;
        _ -> false
    end.

%%% --------------------------------------------------------- the LST request

live_session_token_request(Req, S0 = #{stats := Stats = #{lst_requests := N}}) ->
    S = S0#{stats := Stats#{lst_requests := N + 1}},
    case take_fault(reject_lst, S) of
        {true, S1} -> {error_response(401, <<"live session token request rejected">>), S1};
        {false, S1} ->
            case check_lst_request(Req, S1) of
                {ok, Challenge, S2} -> issue_lst(Challenge, S2);
                {error, Why, S2} -> {error_response(401, Why), S2}
            end
    end.

check_lst_request(Req, S) ->
    with_oauth(Req, <<"RSA-SHA256">>, S,
               fun(Auth, Url, S1 = #{prepend := Prepend, signature_key := Key, p := P}) ->
                       Challenge = maps:get(<<"diffie_hellman_challenge">>, Auth, <<>>),
                       case {valid_challenge(Challenge, P),
                             ibkr_server_crypto:verify_rsa(<<"POST">>, Url, Auth, Prepend, Key)} of
                           {false, _} -> {error, <<"invalid diffie_hellman_challenge">>, S1};
                           {true, false} -> {error, <<"invalid signature">>, bump(bad_signatures, S1)};
                           {true, true} -> {ok, Challenge, S1}
                       end
               end).

valid_challenge(Hex, P) ->
    try ibkr_server_crypto:valid_dh_value(binary_to_integer(Hex, 16), P)
    catch error:badarg -> false
    end.

issue_lst(Challenge, S = #{p := P, g := G, prepend := Prepend, consumer_key := Ck}) ->
    #{dh_response := B, k := K} = ibkr_server_crypto:dh_server(Challenge, G, P),
    Lst = ibkr_server_crypto:live_session_token(K, Prepend),
    {TtlMs, S1} = lst_ttl(S),
    ExpiresAt = erlang:system_time(millisecond) + TtlMs,
    Said = case lists:keyfind(lst_expiration, 1, maps:get(faults, S1)) of
               {lst_expiration, Ms} -> Ms;
               false -> ExpiresAt
           end,
    Answer = #{diffie_hellman_response => B,
               live_session_token_signature => ibkr_server_crypto:lst_signature(Lst, Ck),
               live_session_token_expiration => Said},
    {Body, S2} = lst_answer_body(Answer, S1),
    {{respond, 200, [], Body}, bump(handshakes, install_lst(Lst, ExpiresAt, S2))}.

lst_ttl(S = #{lst_ttl_ms := Default}) ->
    case take_fault(expire_lst_in_ms, S) of
        {{true, Ms}, S1} -> {Ms, S1};
        {false, S1} -> {Default, S1}
    end.

%% The answer, unless a fault corrupts it.
lst_answer_body(Answer = #{live_session_token_signature := Sig}, S = #{p := P}) ->
    case take_lst_answer_fault(S) of
        {malformed_json, S1} -> {<<"<html><body>Service Unavailable</body></html>">>, S1};
        {wrong_lst_signature, S1} -> {json(Answer#{live_session_token_signature := flip_hex(Sig)}), S1};
        {{bad_dh_response, B}, S1} -> {json(Answer#{diffie_hellman_response := bad_b(B, P)}), S1};
        {none, S1} -> {json(Answer), S1}
    end.

bad_b(B, _P) when is_integer(B), B >= 0 -> int_hex(B);
bad_b(p_minus_1, P) -> int_hex(P - 1);
bad_b(p, P) -> int_hex(P);
bad_b(_, _P) -> <<"1">>.

flip_hex(<<C, Rest/binary>>) when C =:= $0 -> <<$1, Rest/binary>>;
flip_hex(<<_, Rest/binary>>) -> <<$0, Rest/binary>>.

int_hex(N) -> string:lowercase(integer_to_binary(N, 16)).

%% The new LST becomes current; the previous one stays valid for a grace time.
install_lst(Lst, ExpiresAt, S = #{lsts := Lsts, lst_grace_ms := Grace}) ->
    Now = erlang:system_time(millisecond),
    Previous = [L#{valid_until := min(Until, Now + Grace)}
                || L = #{valid_until := Until} <- lists:sublist(Lsts, 1)],
    S#{lsts := [#{token => Lst, expires_at => ExpiresAt, valid_until => ExpiresAt} | Previous]}.

%%% ----------------------------------------------------- signed requests

signed_request(Req, Path, S) ->
    case check_signed(Req, S) of
        {ok, S1} -> route(Req, Path, S1);
        {error, Why, S1} -> {error_response(401, Why), S1}
    end.

check_signed(Req = #{method := Method}, S) ->
    with_oauth(Req, <<"HMAC-SHA256">>, S,
               fun(Auth, Url, S1) -> check_hmac(Method, Url, Auth, S1) end).

check_hmac(Method, Url, Auth, S = #{lsts := Lsts}) ->
    Now = erlang:system_time(millisecond),
    Valid = [Lst || #{token := Lst, valid_until := Until} <- Lsts, Until > Now],
    case {Lsts, Valid} of
        {[], _} -> {error, <<"no live session token">>, S};
        {_, []} -> {error, <<"live session token expired">>, S};
        _ ->
            case lists:any(fun(Lst) -> ibkr_server_crypto:verify_hmac(Method, Url, Auth, Lst) end, Valid) of
                true -> {ok, S};
                false -> {error, <<"invalid signature">>, bump(bad_signatures, S)}
            end
    end.

%% The checks both kinds of request share: header parse, realm, consumer,
%% token, signature method, timestamp window, nonce format and uniqueness.
%% Verify(Auth, Url, S) checks the signature; the nonce is recorded when it passes.
with_oauth(Req = #{headers := Headers}, SigMethod, S, Verify) ->
    Checks = [fun parse_auth/2, fun check_identity/2, check_method(SigMethod),
              fun check_timestamp/2, fun check_nonce/2],
    case run_checks(Checks, header(<<"authorization">>, Headers, <<>>), S) of
        {ok, Auth, S1} ->
            case request_url(Req) of
                {ok, Url} -> record_nonce_if_ok(Verify(Auth, Url, S1), Auth);
                error -> {error, <<"no host header">>, S1}
            end;
        {error, Why, S1} -> {error, Why, S1}
    end.

run_checks([], Auth, S) -> {ok, Auth, S};
run_checks([Check | Rest], Auth, S) ->
    case Check(Auth, S) of
        {ok, Auth1, S1} -> run_checks(Rest, Auth1, S1);
        {error, Why, S1} -> {error, Why, S1}
    end.

parse_auth(Header, S) ->
    case ibkr_server_crypto:parse_authorization(Header) of
        {ok, Auth} -> {ok, Auth, S};
        {error, _} -> {error, <<"missing or malformed OAuth authorization">>, S}
    end.

check_identity(Auth, S = #{realm := Realm, consumer_key := Ck, access_token := Token}) ->
    case Auth of
        #{<<"realm">> := Realm, <<"oauth_consumer_key">> := Ck, <<"oauth_token">> := Token} -> {ok, Auth, S};
        #{<<"realm">> := Realm, <<"oauth_consumer_key">> := Ck} -> {error, <<"invalid token">>, S};
        #{<<"realm">> := Realm} -> {error, <<"invalid consumer">>, S};
        _ -> {error, <<"invalid realm">>, S}
    end.

check_method(SigMethod) ->
    fun(Auth = #{<<"oauth_signature_method">> := M}, S) when M =:= SigMethod -> {ok, Auth, S};
       (_Auth, S) -> {error, <<"unsupported signature method">>, S}
    end.

check_timestamp(Auth, S = #{window_s := Window, skew_s := Skew}) ->
    Now = erlang:system_time(second) + Skew,
    try binary_to_integer(maps:get(<<"oauth_timestamp">>, Auth)) of
        Ts when abs(Ts - Now) =< Window -> {ok, Auth, S};
        _ -> {error, <<"timestamp outside the window">>, bump(bad_timestamps, S)}
    catch _:_ -> {error, <<"bad timestamp">>, bump(bad_timestamps, S)}
    end.

check_nonce(Auth = #{<<"oauth_nonce">> := Nonce}, S = #{nonces := Nonces}) ->
    case {re:run(Nonce, <<"^[A-Za-z0-9]{16}$">>, [{capture, none}]), is_map_key(Nonce, Nonces)} of
        {nomatch, _} -> {error, <<"bad nonce">>, S};
        {match, true} -> {error, <<"nonce reused">>, bump(nonce_reuse, S)};
        {match, false} -> {ok, Auth, S}
    end;
check_nonce(_Auth, S) -> {error, <<"missing nonce">>, S}.

record_nonce_if_ok({ok, S = #{nonces := Nonces}}, #{<<"oauth_nonce">> := Nonce}) ->
    {ok, S#{nonces := Nonces#{Nonce => true}}};
record_nonce_if_ok({ok, Value, S = #{nonces := Nonces}}, #{<<"oauth_nonce">> := Nonce}) ->
    {ok, Value, S#{nonces := Nonces#{Nonce => true}}};
record_nonce_if_ok(Error, _Auth) -> Error.

%% The URL the client asked for: https://{Host}{target}.
request_url(#{headers := Headers, target := Target}) ->
    case header(<<"host">>, Headers, undefined) of
        undefined -> error;
        Host -> {ok, <<"https://", Host/binary, Target/binary>>}
    end.

%%% --------------------------------------------------------------- routes

%% The trading endpoints (snapshot, history, contract info, summary, order
%% questions and replies, modify, cancel, live orders with force, trades,
%% positions paging) are served by ibkr_fake_api, which sees every signed
%% request first (its controls: ibkr_fake_api:configure/1, state/0).
route(Req = #{method := Method}, Path, S) ->
    Segments = binary:split(Path, <<"/">>, [global, trim_all]),
    case ibkr_fake_api:route(Method, Segments, Req, S) of
        {pass, S1} -> route(Method, Segments, Req, S1);
        Answer -> Answer
    end.

route(<<"POST">>, [<<"iserver">>, <<"auth">>, <<"ssodh">>, <<"init">>], _Req, S) ->
    {ok_json(#{passed => true, authenticated => true, connected => true, competing => false}),
     bump(ssodh_inits, S#{bridge := true})};
route(_, [<<"tickle">>], _Req, S = #{session_id := Session, bridge := Bridge}) ->
    Body = #{session => Session, ssoExpires => 460000, collission => false, userId => 1234567,
             iserver => #{authStatus => #{authenticated => Bridge, competing => false, connected => true}}},
    Cookie = {<<"set-cookie">>, <<"api=", Session/binary, "; Path=/; Secure; HttpOnly">>},
    {{respond, 200, [Cookie], json(Body)}, bump(tickles, S)};
route(<<"GET">>, [<<"iserver">>, <<"auth">>, <<"status">>], _Req, S = #{bridge := Bridge}) ->
    {ok_json(#{authenticated => Bridge, competing => false, connected => true, message => <<>>}), S};
route(<<"POST">>, [<<"logout">>], _Req, S) ->
    {ok_json(#{status => true}), bump(logouts, S#{bridge := false})};
route(<<"GET">>, [<<"portfolio">>, <<"accounts">>], _Req, S) ->
    {ok_json([account(A) || A <- ?ACCOUNTS]), S};
route(<<"GET">>, [<<"portfolio">>, Acct, <<"positions">>, _Page], _Req, S) ->
    case lists:member(Acct, ?ACCOUNTS) of
        true -> {ok_json(positions(Acct)), S};
        false -> {error_response(404, <<"unknown account">>), S}
    end;
route(_, [<<"echo">>], Req, S) ->
    {ok_json(echo(Req)), S};
route(_, [<<"echo">>, <<"raw">>], #{body := Body}, S) ->
    {{respond, 200, [], Body}, S};
route(Method, [<<"iserver">> | Rest], Req, S = #{bridge := true}) ->
    brokerage(Method, Rest, Req, S);
route(_, [<<"iserver">> | _], _Req, S) ->
    {error_response(400, <<"no bridge">>), S};
route(_, _, _Req, S) ->
    {error_response(404, <<"not found">>), S}.

brokerage(<<"POST">>, [<<"account">>, Acct, <<"orders">>], #{body := Body}, S = #{orders := Orders}) ->
    case {lists:member(Acct, ?ACCOUNTS), looks_like_json_object(Body)} of
        {false, _} -> {error_response(404, <<"unknown account">>), S};
        {true, false} -> {error_response(400, <<"body must be a JSON object">>), S};
        {true, true} ->
            Id = integer_to_binary(1000 + length(Orders)),
            Order = #{order_id => Id, order_status => <<"Submitted">>, encrypt_message => <<"1">>},
            {ok_json([Order]), S#{orders := [Order#{account => Acct} | Orders]}}
    end;
brokerage(<<"GET">>, [<<"account">>, <<"orders">>], _Req, S = #{orders := Orders}) ->
    {ok_json(#{orders => lists:reverse(Orders), snapshot => true}), S};
brokerage(<<"GET">>, [<<"secdef">>, <<"search">>], #{target := Target}, S) ->
    {_, Query} = ibkr_server_crypto:split_url(Target),
    Symbol = proplists:get_value(<<"symbol">>, ibkr_server_crypto:parse_query(Query), <<>>),
    {ok_json([#{conid => 265598, symbol => Symbol, companyName => <<"FAKE INC">>}]), S};
brokerage(_, _, _Req, S) ->
    {error_response(404, <<"not found">>), S}.

account(Id) ->
    #{id => Id, accountId => Id, accountTitle => <<"Fake Account ", Id/binary>>,
      currency => <<"USD">>, type => <<"INDIVIDUAL">>}.

positions(Acct) ->
    [#{acctId => Acct, conid => 265598, contractDesc => <<"AAPL">>, position => 10.0,
       mktPrice => 187.5, currency => <<"USD">>},
     #{acctId => Acct, conid => 8314, contractDesc => <<"IBM">>, position => 5.0,
       mktPrice => 141.25, currency => <<"USD">>}].

echo(#{method := Method, target := Target, headers := Headers, body := Body}) ->
    {Path, Query} = ibkr_server_crypto:split_url(Target),
    #{method => Method, path => Path, raw_query => Query,
      query => [[K, V] || {K, V} <- ibkr_server_crypto:parse_query(Query)],
      headers => [[K, V] || {K, V} <- Headers],
      body => Body}.

looks_like_json_object(Body) ->
    case string:trim(Body) of
        <<"{", _/binary>> = Trimmed -> binary:last(Trimmed) =:= $};
        _ -> false
    end.

ok_json(Term) -> {respond, 200, [], json(Term)}.

error_response(Status, Message) ->
    {respond, Status, [], json(#{error => Message, statusCode => Status})}.

bump(Counter, S = #{stats := Stats}) ->
    S#{stats := maps:update_with(Counter, fun(N) -> N + 1 end, 1, Stats)}.

%%% =============================================================== faults

add_fault(invalidate_lst, S) -> {ok, S#{lsts := []}};
add_fault({skew_s, Seconds}, S) when is_integer(Seconds) -> {ok, S#{skew_s := Seconds}};
add_fault(Fault, S = #{faults := Faults}) ->
    case valid_fault(Fault) of
        true -> {ok, S#{faults := Faults ++ [Fault]}};
        false -> error
    end.

valid_fault({status, Code, N}) -> is_integer(Code) andalso Code >= 100 andalso Code =< 599 andalso valid_count(N);
valid_fault({rate_limit, RetryAfter, N}) -> is_integer(RetryAfter) andalso RetryAfter >= 0 andalso valid_count(N);
valid_fault({slow, Ms, N}) -> is_integer(Ms) andalso Ms >= 0 andalso valid_count(N);
valid_fault({drop, N}) -> valid_count(N);
valid_fault({reject_lst, N}) -> valid_count(N);
valid_fault({expire_lst_in_ms, Ms}) -> is_integer(Ms) andalso Ms >= 0;
valid_fault({lst_expiration, Ms}) -> is_integer(Ms);
valid_fault(bad_dh_response) -> true;
valid_fault({bad_dh_response, B}) -> (is_integer(B) andalso B >= 0) orelse B =:= p_minus_1 orelse B =:= p;
valid_fault({answer, Path, Status, Body, N}) ->
    is_binary(Path) andalso is_integer(Status) andalso Status >= 100 andalso Status =< 599
        andalso is_binary(Body) andalso valid_count(N);
valid_fault(wrong_lst_signature) -> true;
valid_fault(malformed_json) -> true;
valid_fault(_) -> false.

valid_count(infinity) -> true;
valid_count(N) -> is_integer(N) andalso N > 0.

%% The faults that act on any request: every pending slow adds its delay, the
%% first status/rate_limit/drop decides the answer. Each one used counts down.
take_request_faults(S = #{faults := Faults}) ->
    {Delay, Injected, Kept} = lists:foldl(fun apply_request_fault/2, {0, none, []}, Faults),
    {Delay, Injected, S#{faults := lists:reverse(Kept)}}.

apply_request_fault(F = {slow, Ms, N}, {Delay, Injected, Kept}) ->
    {Delay + Ms, Injected, count_down(F, N, Kept)};
apply_request_fault(F = {status, Code, N}, {Delay, none, Kept}) ->
    {Delay, error_response(Code, <<"injected fault">>), count_down(F, N, Kept)};
apply_request_fault(F = {rate_limit, RetryAfter, N}, {Delay, none, Kept}) ->
    Response = {respond, 429, [{<<"retry-after">>, integer_to_binary(RetryAfter)}],
                json(#{error => <<"Too many requests">>, statusCode => 429})},
    {Delay, Response, count_down(F, N, Kept)};
apply_request_fault(F = {drop, N}, {Delay, none, Kept}) ->
    {Delay, drop, count_down(F, N, Kept)};
apply_request_fault(F, {Delay, Injected, Kept}) ->
    {Delay, Injected, [F | Kept]}.

count_down(F, infinity, Kept) -> [F | Kept];
count_down(_F, 1, Kept) -> Kept;
count_down(F, N, Kept) -> [setelement(tuple_size(F), F, N - 1) | Kept].

%% {answer, Path, Status, Body, N} for this path, counted down.
take_answer_fault(Path, S = #{faults := Faults}) ->
    case [F || F = {answer, P, _, _, _} <- Faults, P =:= Path] of
        [F = {answer, _, Status, Body, N} | _] ->
            {{respond, Status, [], Body}, S#{faults := replace(F, count_down(F, N, []), Faults)}};
        [] -> {none, S}
    end.

%% A fault consumed by the LST request: {reject_lst, N} counts down,
%% {expire_lst_in_ms, Ms} is used once.
take_fault(reject_lst, S = #{faults := Faults}) ->
    case lists:keyfind(reject_lst, 1, Faults) of
        F = {reject_lst, N} -> {true, S#{faults := replace(F, count_down(F, N, []), Faults)}};
        false -> {false, S}
    end;
take_fault(expire_lst_in_ms, S = #{faults := Faults}) ->
    case lists:keyfind(expire_lst_in_ms, 1, Faults) of
        F = {expire_lst_in_ms, Ms} -> {{true, Ms}, S#{faults := lists:delete(F, Faults)}};
        false -> {false, S}
    end.

replace(Old, New, List) ->
    {Before, [Old | After]} = lists:splitwith(fun(X) -> X =/= Old end, List),
    Before ++ New ++ After.

%% The first fault that corrupts an LST answer, used once.
take_lst_answer_fault(S = #{faults := Faults}) ->
    case lists:search(fun is_lst_answer_fault/1, Faults) of
        {value, F} -> {normalize_answer_fault(F), S#{faults := lists:delete(F, Faults)}};
        false -> {none, S}
    end.

is_lst_answer_fault(malformed_json) -> true;
is_lst_answer_fault(wrong_lst_signature) -> true;
is_lst_answer_fault(bad_dh_response) -> true;
is_lst_answer_fault({bad_dh_response, _}) -> true;
is_lst_answer_fault(_) -> false.

normalize_answer_fault(bad_dh_response) -> {bad_dh_response, 1};
normalize_answer_fault(F) -> F.

%%% ================================================================= JSON

%% A tiny encoder for the fixed answers: maps (atom or binary keys), lists,
%% binaries (UTF-8), integers, floats, true/false/null, other atoms as strings.
-spec json(term()) -> binary().
json(Term) -> iolist_to_binary(encode(Term)).

encode(true) -> <<"true">>;
encode(false) -> <<"false">>;
encode(null) -> <<"null">>;
encode(A) when is_atom(A) -> encode(atom_to_binary(A));
encode(I) when is_integer(I) -> integer_to_binary(I);
encode(F) when is_float(F) -> float_to_binary(F, [short]);
encode(B) when is_binary(B) -> [$", escape(B), $"];
encode(L) when is_list(L) -> [$[, lists:join($,, [encode(X) || X <- L]), $]];
encode(M) when is_map(M) ->
    Pairs = [[encode(key(K)), $:, encode(V)] || {K, V} <- lists:sort(maps:to_list(M))],
    [${, lists:join($,, Pairs), $}].

key(K) when is_atom(K) -> atom_to_binary(K);
key(K) when is_binary(K) -> K.

escape(B) -> << <<(escape_byte(C))/binary>> || <<C>> <= B >>.

escape_byte($") -> <<"\\\"">>;
escape_byte($\\) -> <<"\\\\">>;
escape_byte($\n) -> <<"\\n">>;
escape_byte($\r) -> <<"\\r">>;
escape_byte($\t) -> <<"\\t">>;
escape_byte(C) when C < 16#20 -> iolist_to_binary(io_lib:format("\\u~4.16.0b", [C]));
escape_byte(C) -> <<C>>.
