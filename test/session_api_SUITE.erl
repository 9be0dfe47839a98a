%% Session API beyond plain requests, against the fake IBKR server:
%% websocket_info/1, sign/3 with an expired LST, the logger events of each
%% request (metadata, levels, no secrets), the telemetry events (with a
%% stand-in `telemetry' module: the library is never needed) and stats/1.
-module(session_api_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([websocket_info_tickles_once/1, websocket_info_errors/1,
         sign_with_expired_lst/1, request_log_events/1, stats_counters/1,
         not_a_session/1, longest_timeout/1, lst_complete_during_authenticate/1,
         telemetry_events/1]).
-export([log/2]).

-define(F, ibkr_fake_server).
-define(L, ibkr_check_lib).
-define(ACCOUNTS, <<"/portfolio/accounts">>).
-define(POSITIONS, <<"/portfolio/U1234567/positions/0">>).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [websocket_info_tickles_once, websocket_info_errors, sign_with_expired_lst,
     request_log_events, stats_counters, not_a_session, longest_timeout,
     lst_complete_during_authenticate, telemetry_events].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(not_a_session, Config) ->
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    unlink(S),
    [{session, S} | Config];
init_per_testcase(sign_with_expired_lst, Config) ->
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    unlink(S),
    [{session, S} | Config];
init_per_testcase(telemetry_events, Config) ->
    {ok, Info = #{config := Client}} =
        ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    %% /portfolio/accounts: one per 500 ms, so a second one waits
    {ok, S} = ibkr_oauth:start_link(Client#{rate_limit => #{global => 50,
                                                             endpoints => [{?ACCOUNTS, 1, 500}]}}),
    unlink(S),
    [{session, S}, {fake, Info}, {client, Client} | Config];
init_per_testcase(_Case, Config) ->
    {ok, Info = #{config := Client}} =
        ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    {ok, S} = ibkr_oauth:start_link(Client),
    unlink(S),
    [{session, S}, {fake, Info}, {client, Client} | Config].

end_per_testcase(_Case, Config) ->
    _ = (catch ibkr_oauth:stop(?config(session, Config))),
    ?F:stop().

%%% ----------------------------------------------------------------- cases

%% Servers that are not sessions: answers, never an exception in the caller.
%% A {via, M, _} whose M has no whereis_name/1 raised error:undef from
%% stop/1 (and read as port_down elsewhere); a gen_server that answers
%% something else made os_pid/1 crash with a case_clause.
not_a_session(_Config) ->
    Via = {via, no_such_registry_module, x},
    ?assertEqual({error, noproc}, ibkr_oauth:stop(Via)),
    ?assertEqual({error, noproc}, ibkr_oauth:stats(Via)),
    ?assertEqual({error, noproc}, ibkr_oauth:request(Via, get, ?ACCOUNTS)),
    {ok, Other} = gen_server:start(session_api_SUITE_other, [], []),
    try
        ?assertEqual({error, {badarg, server}}, ibkr_oauth:os_pid(Other)),
        ?assertEqual({error, {badarg, server}}, ibkr_oauth:stats(Other))
    after
        gen_server:stop(Other)
    end.

%% An LST handed in with lst_request/2 + lst_complete/2 while the port's
%% handshake waits for the server: that handshake loses its DH exponent and
%% fails, but authenticate/1 answers with the LST the session now holds
%% (it answered {error, no_pending_handshake}).
lst_complete_during_authenticate(Config) ->
    S = ?config(session, Config),
    [C | _] = maps:get(cases, ibkr_test_lib:vectors(public)),
    ok = ?F:set_fault({slow, 2000, 1}),
    [Auth] = ?L:spawn_callers([fun() -> ibkr_oauth:authenticate(S) end]),
    ok = ?L:wait_until(fun() -> maps:get(lst_requests, ?F:stats()) =:= 1 end, 10000),
    {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
    Expires = erlang:system_time(millisecond) + 3600000,
    {ok, #{expires_at := Expires}} =
        ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                                     live_session_token_signature => maps:get(live_session_token_signature, C),
                                     live_session_token_expiration => Expires}),
    ?assertEqual([{ok, #{expires_at => Expires}}], ?L:collect([Auth], 10000)),
    ?assertMatch(#{handshake_in_flight := false, authenticated := true, expires_at := Expires},
                 ibkr_oauth:stats(S)).

%% The longest timeout request/4 and request_timeout accept (2^32-1 ms)
%% work. The call's own wait (timeout plus a margin) went past the longest
%% Erlang timer (gen_server:call raised in the caller), and the port, which
%% takes at most 2^31-1 ms, answered {error, {badarg, timeout}} to the
%% request and to every handshake.
longest_timeout(Config) ->
    S = ?config(session, Config),
    Longest = 4294967295,
    ?assertMatch({ok, #{status := 200}},
                 ibkr_oauth:request(S, get, ?POSITIONS, #{timeout => Longest})),
    {ok, S2} = ibkr_oauth:start_link((?config(client, Config))#{request_timeout => Longest}),
    unlink(S2),
    try
        ?assertMatch({ok, #{expires_at := _}}, ibkr_oauth:authenticate(S2)),
        ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S2, get, ?POSITIONS))
    after
        ibkr_oauth:stop(S2)
    end.

%% The first call authenticates and tickles; the answer is the websocket
%% URL with the access token and the /tickle session as the api cookie. A
%% second call reuses it; a caller's own /tickle refreshes it.
websocket_info_tickles_once(Config) ->
    S = ?config(session, Config),
    #{base_url := <<"https://", HostPath/binary>>} = ?config(fake, Config),
    Token = maps:get(access_token, ?config(client, Config)),
    {ok, Ws} = ibkr_oauth:websocket_info(S),
    #{url := Url, session := Session, cookie := Cookie, headers := Headers} = Ws,
    ?assertEqual(<<"wss://", HostPath/binary, "/ws?oauth_token=", Token/binary>>, Url),
    ?assertEqual(<<"api=", Session/binary>>, Cookie),
    ?assertEqual(Cookie, proplists:get_value(<<"cookie">>, Headers)),
    ?assert(is_binary(proplists:get_value(<<"user-agent">>, Headers))),
    ?assertMatch(#{handshakes := 1, tickles := 1}, ?F:stats()),
    %% The server's own idea of the session:
    {ok, #{status := 200, body := Body}} = ibkr_oauth:request(S, post, <<"/tickle">>, #{}),
    {match, [Session]} = re:run(Body, <<"\"session\":\"([^\"]+)\"">>, [{capture, all_but_first, binary}]),
    ?assertEqual({ok, Ws}, ibkr_oauth:websocket_info(S)),
    ?assertMatch(#{tickles := 2}, ?F:stats()).

websocket_info_errors(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    ok = ?F:set_fault({status, 503, 1}),
    ?assertMatch({error, {http, 503, _}}, ibkr_oauth:websocket_info(S)),
    {ok, #{session := _}} = ibkr_oauth:websocket_info(S),
    ok = ibkr_oauth:stop(S),
    ?assertEqual({error, noproc}, ibkr_oauth:websocket_info(S)).

%% sign/3 refuses an expired stored LST (it would only earn a 401), signs
%% with an LST given in the options, and signs again after a fresh LST.
sign_with_expired_lst(Config) ->
    S = ?config(session, Config),
    [C | _] = maps:get(cases, ibkr_test_lib:vectors(public)),
    Url = <<"https://api.ibkr.com/v1/api/portfolio/accounts">>,
    ?assertEqual({error, not_authenticated}, ibkr_oauth:sign(S, get, Url)),
    Complete = fun(Expiration) ->
                       {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
                       ibkr_oauth:lst_complete(
                         S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                              live_session_token_signature => maps:get(live_session_token_signature, C),
                              live_session_token_expiration => Expiration})
               end,
    Past = erlang:system_time(millisecond) - 1000,
    {ok, #{expires_at := Past}} = Complete(Past),
    ?assertEqual({error, lst_expired}, ibkr_oauth:sign(S, get, Url)),
    ?assertEqual({error, lst_expired}, ibkr_oauth:sign(S, <<"POST">>, Url, #{nonce => <<"abc">>})),
    {ok, #{token := Lst}} = ibkr_oauth:live_session_token(S),
    ?assertMatch({ok, <<"OAuth ", _/binary>>}, ibkr_oauth:sign(S, get, Url, #{lst => Lst})),
    {ok, _} = Complete(erlang:system_time(millisecond) + 3600000),
    ?assertMatch({ok, <<"OAuth ", _/binary>>}, ibkr_oauth:sign(S, get, Url)).

%% One event per request with its metadata (debug when answered, info when
%% failed), a warning for a retry after 401 and for a port crash; none of
%% them carries the LST, the secret, an Authorization value, the query or
%% a body.
request_log_events(Config) ->
    S = ?config(session, Config),
    Secret = maps:get(access_token_secret, ?config(client, Config)),
    logger:set_module_level(ibkr_oauth_session, debug),
    ok = logger:add_handler(?MODULE, ?MODULE, #{level => all, config => #{pid => self()},
                                                filter_default => stop,
                                                filters => [{ibkr, {fun logger_filters:domain/2,
                                                                    {log, equal, [ibkr_oauth]}}}]}),
    try
        {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?ACCOUNTS,
                                                    #{query => [{<<"q">>, <<"needle42">>}]}),
        [Ok] = [E || #{meta := #{event := request}} = E <- events()],
        ?assertMatch(#{level := debug,
                       meta := #{domain := [ibkr_oauth], method := get, path := ?ACCOUNTS,
                                 status := 200, attempt := 1, queued_ms := 0,
                                 duration_us := D}} when is_integer(D) andalso D >= 0, Ok),
        %% A 401: a retry warning, then the request logged with attempt 2.
        ok = ?F:set_fault(invalidate_lst),
        {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?POSITIONS, #{}),
        Evs = events(),
        ?assertMatch([#{level := warning, meta := #{event := retry, status := 401, attempt := 1,
                                                     path := ?POSITIONS}}],
                     [E || #{meta := #{event := retry}} = E <- Evs]),
        ?assertMatch([#{level := debug, meta := #{status := 200, attempt := 2, path := ?POSITIONS}}],
                     [E || #{meta := #{event := request}} = E <- Evs]),
        ?assertMatch([#{level := info}], [E || #{meta := #{event := handshake}} = E <- Evs]),
        %% A failure: info with the error; the port's death: a warning.
        ok = ?F:set_fault({status, 401, 4}),
        {error, {ibkr, unauthorized, _}} = ibkr_oauth:request(S, get, ?POSITIONS, #{}),
        %% (IBKR's own error: logged with its status and kind)
        ?assertMatch([#{level := info, meta := #{status := 401, error := {ibkr, unauthorized}}}],
                     [E || #{meta := #{event := request}} = E <- events()]),
        ok = ?F:clear_faults(),
        ?L:kill_os(ibkr_oauth:os_pid(S)),
        ?L:wait_until(fun() -> maps:get(port_restarts, ibkr_oauth:stats(S)) =:= 1 end, 10000),
        {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?ACCOUNTS, #{}),
        {ok, #{token := Lst}} = ibkr_oauth:live_session_token(S),
        {ok, Auth} = ibkr_oauth:sign(S, get, <<"https://api.ibkr.com/v1/api/x">>),
        Rest = events(),
        ?assertMatch([_], [E || #{level := warning, meta := #{event := port_exit}} = E <- Rest]),
        Text = iolist_to_binary([io_lib:format("~p~n", [E]) || E <- [Ok | Evs] ++ Rest]),
        [?assertEqual(nomatch, binary:match(Text, Needle), Needle)
         || Needle <- [Lst, Secret, Auth, <<"needle42">>, <<"accountId">>, <<"OAuth ">>]]
    after
        logger:remove_handler(?MODULE),
        logger:unset_module_level(ibkr_oauth_session)
    end.

stats_counters(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:request(S, get, ?ACCOUNTS, #{}),
    {error, timeout} = ibkr_oauth:request(S, get, ?ACCOUNTS, #{timeout => 0}),
    ?assertMatch(#{requests := 2, handshakes := 1, errors := 1, in_flight := _,
                   queued := 0, rate_limited := 0, rate_limit_queued := 0,
                   authenticated := true, port_restarts := 0},
                 ibkr_oauth:stats(S)).

%%% ---------------------------------------------------------------- helpers

%% logger handler: forwards each event to the test process.
log(Event, #{config := #{pid := Pid}}) ->
    Pid ! {?MODULE, Event},
    ok.

%% The events received so far, oldest first. The session logs before it
%% replies, so the events of a finished call are already in the mailbox.
events() ->
    receive {?MODULE, E} -> [E | events()]
    after 0 -> []
    end.

%% Telemetry, with a stand-in `telemetry' module compiled here that sends
%% each event to this process: one handshake, one request, one request held
%% by the rate limit, one that ends without an answer, one refused
%% handshake, one port kill. No query, header, body or token in any
%% metadata.
telemetry_events(Config) ->
    S = ?config(session, Config),
    load_telemetry_stand_in(),
    try
        {ok, _} = ibkr_oauth:authenticate(S),
        [{[ibkr_oauth, handshake, stop], #{duration := D0}, #{result := ok, session := S}}] =
            tm_events(1),
        ?assert(is_integer(D0) andalso D0 >= 0),
        %% one request: start, stop with the status
        Secret = <<"needle42">>,
        {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?ACCOUNTS, #{query => [{<<"q">>, Secret}]}),
        Meta = #{method => get, path => ?ACCOUNTS, session => S},
        [{[ibkr_oauth, request, start], #{system_time := _, monotonic_time := _}, Start},
         {[ibkr_oauth, request, stop], #{duration := D1, queued_ms := 0}, Stop}] = tm_events(2),
        ?assertEqual(Meta#{attempt => 0}, Start),
        ?assertEqual(Meta#{attempt => 1, status => 200}, Stop),
        ?assert(D1 >= 0),
        %% held by the rate limit (1 per 500 ms): queued, with the wait
        {ok, #{status := 200, queued_ms := Q}} = ibkr_oauth:request(S, get, ?ACCOUNTS),
        ?assert(Q > 0, Q),
        [{[ibkr_oauth, request, start], _, _},
         {[ibkr_oauth, rate_limit, queued], #{queued_ms := Q1}, #{path := ?ACCOUNTS, session := S}},
         {[ibkr_oauth, request, stop], #{queued_ms := Q}, #{status := 200}}] = tm_events(3),
        ?assertEqual(Q, Q1),
        %% no answer at all: an exception with the reason
        {error, timeout} = ibkr_oauth:request(S, get, ?POSITIONS, #{timeout => 0}),
        [{[ibkr_oauth, request, start], _, _},
         {[ibkr_oauth, request, exception], #{duration := _},
          #{reason := timeout, path := ?POSITIONS, attempt := 0}}] = tm_events(2),
        %% IBKR's own error: a stop with its status and kind
        ok = ?F:set_fault({answer, ?POSITIONS, 400,
                           <<"{\"error\":\"no bridge\",\"statusCode\":400}">>, 1}),
        {error, {ibkr, no_bridge, _}} = ibkr_oauth:request(S, get, ?POSITIONS),
        [{[ibkr_oauth, request, start], _, _},
         {[ibkr_oauth, request, stop], _, #{status := 400, error := no_bridge}}] = tm_events(2),
        %% a refused handshake: an error, IBKR's text replaced by its size
        ok = ?F:set_fault({reject_lst, 1}),
        {error, {ibkr, unauthorized, _}} = ibkr_oauth:authenticate(S),
        [{[ibkr_oauth, handshake, stop], _,
          #{result := error, reason := {ibkr, unauthorized, #{status := 401, message := {binary, _}}}}}] =
            tm_events(1),
        %% the port killed
        OsPid = ibkr_oauth:os_pid(S),
        ?L:kill_os(OsPid),
        [{[ibkr_oauth, port, exit], #{count := 1}, #{os_pid := OsPid, reason := _}}] = tm_events(1),
        ok = ?L:wait_until(fun() -> maps:get(port_restarts, ibkr_oauth:stats(S)) =:= 1 end, 10000),
        %% nothing more, and never the query or a binary other than the path
        [] = tm_events(0),
        ?assertEqual(nomatch, binary:match(term_to_binary(get(telemetry_seen)), Secret))
    after
        unload_telemetry_stand_in()
    end.

%% -module(telemetry). execute(E, M, Md) -> Pid ! {telemetry_event, E, M, Md}, ok.
load_telemetry_stand_in() ->
    Src = io_lib:format("-module(telemetry).~n-export([execute/3]).~n"
                        "execute(E, M, Md) -> list_to_pid(~p) ! {telemetry_event, E, M, Md}, ok.~n",
                        [pid_to_list(self())]),
    {ok, Tokens, _} = erl_scan:string(lists:flatten(Src)),
    Forms = [begin {ok, F} = erl_parse:parse_form(Ts), F end || Ts <- split_dots(Tokens, [])],
    {ok, telemetry, Bin} = compile:forms(Forms, [binary]),
    {module, telemetry} = code:load_binary(telemetry, "telemetry.erl", Bin),
    ok = ibkr_oauth_telemetry:reset(),
    true = ibkr_oauth_telemetry:available().

split_dots([], []) -> [];
split_dots([{dot, _} = Dot | Rest], Cur) -> [lists:reverse([Dot | Cur]) | split_dots(Rest, [])];
split_dots([T | Rest], Cur) -> split_dots(Rest, [T | Cur]).

unload_telemetry_stand_in() ->
    _ = code:purge(telemetry),
    _ = code:delete(telemetry),
    _ = code:purge(telemetry),
    ibkr_oauth_telemetry:reset().

%% The next N events (waiting for each), then whatever else has arrived: the
%% list must be exactly N long to match.
tm_events(N) ->
    Evs = [receive {telemetry_event, E, M, Md} -> {E, M, Md}
           after 10000 -> ct:fail({telemetry_events, N})
           end || _ <- lists:seq(1, N)],
    timer:sleep(100),
    More = telemetry_flush(),
    All = Evs ++ More,
    put(telemetry_seen, [All | case get(telemetry_seen) of undefined -> []; L -> L end]),
    ct:log("telemetry: ~p", [All]),
    All.

telemetry_flush() ->
    receive {telemetry_event, E, M, Md} -> [{E, M, Md} | telemetry_flush()]
    after 0 -> []
    end.
