%% Faults, end to end against the fake IBKR server (real TLS, real checks):
%% the port program killed mid-request, the session crashing under a
%% supervisor, the BEAM side going away (stop, owner killed, whole node
%% killed: no orphan port program), every fault the fake server injects on
%% the handshake that request/4 starts by itself, Retry-After honoured, a
%% slow handshake, a server that refuses everything, and clock skew.
%%
%% Not repeated here (already asserted elsewhere): the same faults through
%% authenticate/1 and on plain API calls (session_SUITE: authenticate_failures,
%% rate_limit_*, server_errors_returned, *_after_drop,
%% timeout_then_keeps_working, single_401_retried); kill -9 against the plain
%% HTTP stub, the restart limit, stop/1 without traffic, a raw port whose BEAM
%% is killed (protocol_SUITE).
-module(faults_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([sigkill_mid_request/1, supervisor_restarts_crashed_session/1,
         owner_killed_port_exits/1, stop_with_requests_in_flight/1,
         peer_killed_session_port_exits/1, handshake_faults_reach_waiting_requests/1,
         retry_after_gap_honoured/1, slow_handshake_request_timeout/1,
         server_refuses_everything/1, clock_skew/1, stopped_port_during_handshake/1,
         queued_requests_survive_port_crash/1, lst_expiration_refused/1,
         lst_expiration_background_backoff/1, lst_expiration_far_future/1,
         status_outside_http/1, port_timeout_zero_and_infinity/1, lst_answer_fields_named/1]).
-export([init/1]).

-define(F, ibkr_fake_server).
-define(L, ibkr_check_lib).
%% Not in the session's default per-endpoint rate limits (/portfolio/accounts is
%% 1 per 5 s), so requests here go out at once.
-define(API, <<"/portfolio/U1234567/positions/0">>).
-define(LST_PATH, <<"/oauth/live_session_token">>).
-define(SNAPSHOT, <<"/iserver/marketdata/snapshot">>).
%% How long every pending caller may take to be answered after a fault: a
%% liveness bound, far above what it takes.
-define(ANSWER_BOUND, 5000).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [sigkill_mid_request, supervisor_restarts_crashed_session, owner_killed_port_exits,
     stop_with_requests_in_flight, peer_killed_session_port_exits,
     handshake_faults_reach_waiting_requests, retry_after_gap_honoured,
     slow_handshake_request_timeout, server_refuses_everything, clock_skew,
     stopped_port_during_handshake, queued_requests_survive_port_crash,
     lst_expiration_refused, lst_expiration_background_backoff, lst_expiration_far_future,
     status_outside_http, port_timeout_zero_and_infinity,
     lst_answer_fields_named].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) ->
    {ok, Info = #{config := Client}} =
        ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    {ok, S} = ibkr_oauth:start_link(maps:merge(Client, options(Case))),
    [{session, S}, {client, Client}, {fake, Info} | Config].

end_per_testcase(_Case, Config) ->
    S = ?config(session, Config),
    unlink(S),
    _ = (catch ibkr_oauth:stop(S)),
    ?F:stop().

%% The default rate limit (IBKR's table: /iserver/marketdata/snapshot
%% 10 per second) and a brokerage session.
options(queued_requests_survive_port_crash) ->
    #{rate_limit => ibkr_oauth_ratelimit:default_spec(), brokerage_session => true};
options(_) -> #{}.

%%% ----------------------------------------------------------------- cases

%% 40 GETs of /iserver/marketdata/snapshot (IBKR allows 10 per second): the
%% first 10 go and are held by the server, the 30 others wait for the rate
%% limit in the session. The port is killed: the 10 it held get
%% {error, port_down}; the 30 never left the BEAM and are answered after the
%% new port re-authenticates (they got port_down too, before).
queued_requests_survive_port_crash(Config) ->
    S = ?config(session, Config),
    unlink(S),
    {ok, _} = ibkr_oauth:authenticate(S),
    ok = ?L:wait_until(fun() -> stat(ssodh_inits) >= 1 end, 10000),
    ok = ?F:set_fault({slow, 30000, 10}),
    Get = fun() -> ibkr_oauth:request(S, get, ?SNAPSHOT, #{query => [{<<"conids">>, <<"265598">>}],
                                                          timeout => 60000})
          end,
    Callers = ?L:spawn_callers(lists:duplicate(40, Get)),
    ok = ?L:wait_until(fun() -> path_count(?SNAPSHOT) =:= 10 end, 10000),
    ok = ?L:wait_until(fun() -> maps:get(rate_limit_queued, ibkr_oauth:stats(S)) =:= 30 end, 10000),
    ok = ?L:kill_os(ibkr_oauth:os_pid(S)),
    Results = ?L:collect(Callers, 60000),
    Down = [R || {error, port_down} = R <- Results],
    Answered = [St || {ok, #{status := St}} <- Results],
    ct:pal("~b answered, ~b port_down", [length(Answered), length(Down)]),
    ?assertEqual(10, length(Down)),
    ?assertEqual(30, length(Answered)),
    ?assertEqual(40, path_count(?SNAPSHOT)),
    ?assertEqual(2, stat(handshakes)),
    ?assertMatch(#{port_restarts := 1, rate_limit_queued := 0, queued := 0, in_flight := 0},
                 ibkr_oauth:stats(S)).

%% The server's LST answer says the token expires in the past, in seconds
%% instead of milliseconds, or 10 s ahead: refused as
%% {bad_response, lst_expiration}, nothing is signed with it, and a request
%% causes one more handshake after the backoff step (1 s), not a storm.
%% (One request with a 5 s timeout caused 455-720 LST requests.)
lst_expiration_refused(Config) ->
    Client = ?config(client, Config),
    Now = erlang:system_time(millisecond),
    Cases = [{past, Now - 60000}, {seconds, Now div 1000 + 86400}, {ten_s_ahead, Now + 10000}],
    lists:foreach(
      fun({Name, Said}) ->
              {ok, S} = ibkr_oauth:start_link(Client),
              ok = ?F:reset_stats(),
              ok = ?F:set_fault({lst_expiration, Said}),
              Refused = {error, {bad_response, lst_expiration}},
              ?assertEqual({Name, Refused}, {Name, ibkr_oauth:authenticate(S)}),
              ?assertEqual({Name, Refused}, {Name, ibkr_oauth:request(S, get, ?API, #{timeout => 5000})}),
              %% a request with less time than the backoff left: the same
              %% error at once, no handshake
              ?assertEqual({Name, Refused}, {Name, ibkr_oauth:request(S, get, ?API, #{timeout => 100})}),
              timer:sleep(2000),                          % nothing in the background
              ?assertEqual({Name, 2}, {Name, stat(lst_requests)}),
              ?assertEqual({Name, 0}, {Name, path_count(?API)}),
              ?assertMatch(#{authenticated := false, expires_at := undefined}, ibkr_oauth:stats(S)),
              ok = ?F:clear_faults(),
              ok = ibkr_oauth:stop(S)
      end, Cases).

%% auto_authenticate against a server whose LSTs are always expired: the
%% background handshakes back off (1 s, 2 s, 4 s between starts), not one
%% a second (as they did).
lst_expiration_background_backoff(Config) ->
    ok = ?F:set_fault({lst_expiration, erlang:system_time(millisecond) - 1000}),
    {ok, S} = ibkr_oauth:start_link((?config(client, Config))#{auto_authenticate => true}),
    unlink(S),
    ok = ?L:wait_until(fun() -> stat(lst_requests) >= 4 end, 30000),
    Times = lists:sort([At || #{path := ?LST_PATH, at := At} <- stat(log)]),
    [G1, G2, G3 | _] = [(B - A) div 1000 || {A, B} <- lists:zip(lists:droplast(Times), tl(Times))],
    ct:pal("gaps between LST requests (ms): ~p", [[G1, G2, G3]]),
    %% (measured at the server: the first request also set up the connection)
    ?assert(G1 >= 500, G1),
    ?assert(G2 >= 1500, G2),
    ?assert(G3 >= 3500, G3),
    ok = ibkr_oauth:stop(S).

%% A far-future expiration is taken as it is.
lst_expiration_far_future(Config) ->
    S = ?config(session, Config),
    Far = erlang:system_time(millisecond) + 10 * 365 * 86400000,
    ok = ?F:set_fault({lst_expiration, Far}),
    ?assertEqual({ok, #{expires_at => Far}}, ibkr_oauth:authenticate(S)),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, ?API, #{})),
    ?assertMatch(#{authenticated := true, expires_at := Far, handshakes := 1}, ibkr_oauth:stats(S)).

%% A server answering a status line outside 100..599 does not speak HTTP:
%% {transport, bad_status} (it used to come back as {ok, #{status => 999}}).
%% The request reached it, so a POST is not resent; at the port the facts
%% say so.
status_outside_http(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/s", Code/binary>>}, _) ->
                                              {binary_to_integer(Code), [], <<"x">>};
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    Url = ibkr_http_stub:url(Stub),
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public, #{base_url => Url})),
    unlink(S),
    ?assertEqual({error, {transport, bad_status}}, ibkr_oauth:request(S, get, <<"/s999">>)),
    ?assertEqual({error, {transport, bad_status}},
                 ibkr_oauth:request(S, post, <<"/s600">>, #{body => <<"{}">>})),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/s600">>)),
    ?assertMatch({ok, #{status := 599}}, ibkr_oauth:request(S, get, <<"/s599">>)),
    ok = ibkr_oauth:stop(S),
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = ?L:port_call(P, 1, {init, ?L:port_config(#{base_url => Url})}),
    ?assertEqual({error, {transport, bad_status, #{sent => true}}},
                 ?L:port_call(P, 2, {http, #{method => <<"GET">>, url => <<Url/binary, "/s999">>,
                                            sign => false}})),
    ibkr_oauth_port:close(P),
    ibkr_http_stub:stop(Stub).

%% One meaning of `timeout' on both sides: 0 is a deadline already passed
%% ({error, timeout} at once, nothing sent; the port used to read 0 as "no
%% limit"), `infinity' is no limit (the session sends that for an infinite
%% deadline).
port_timeout_zero_and_infinity(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{path := <<"/slow">>}, _) -> {delay, 300, {200, [], <<"late">>}};
                                         (Req, N) -> ibkr_http_stub:ibkr_handler(Req, N)
                                      end),
    Url = ibkr_http_stub:url(Stub),
    {ok, P, _} = ibkr_oauth_port:open(),
    ok = ?L:port_call(P, 1, {init, ?L:port_config(#{base_url => Url})}),
    Get = fun(T) -> {http, #{method => <<"GET">>, url => <<Url/binary, "/slow">>, sign => false,
                             timeout => T}} end,
    ?assertEqual({error, timeout}, ?L:port_call(P, 2, Get(0))),
    ?assertEqual({error, timeout}, ?L:port_call(P, 3, {authenticate, #{timeout => 0}})),
    ?assertEqual(0, ibkr_http_stub:count(Stub, <<"/slow">>)),
    ?assertEqual(0, ibkr_http_stub:count(Stub, ?LST_PATH)),
    ?assertMatch({ok, #{status := 200, body := <<"late">>}}, ?L:port_call(P, 4, Get(infinity))),
    ?assertMatch({ok, #{expires_at := _}}, ?L:port_call(P, 5, {authenticate, #{timeout => infinity}})),
    [?assertEqual({T, {error, {badarg, timeout}}}, {T, ?L:port_call(P, 6, Get(T))})
     || T <- [-1, 1 bsl 31, forever, 1.5, <<"0">>]],
    ibkr_oauth_port:close(P),
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public, #{base_url => Url,
                                                                         request_timeout => infinity})),
    unlink(S),
    ?assertEqual({error, timeout}, ibkr_oauth:request(S, get, <<"/slow">>, #{timeout => 0})),
    ?assertEqual(1, ibkr_http_stub:count(Stub, <<"/slow">>)),
    ?assertMatch({ok, #{status := 200, body := <<"late">>}}, ibkr_oauth:request(S, get, <<"/slow">>)),
    ?assertMatch({ok, #{status := 200, body := <<"late">>}},
                 ibkr_oauth:request(S, get, <<"/slow">>, #{timeout => infinity})),
    ok = ibkr_oauth:stop(S),
    ibkr_http_stub:stop(Stub).

%% LST answers whose fields are there but unusable name the field and the
%% problem (they used to be {bad_response, missing_field}): an empty or
%% non-string DH response, an expiration that is negative, beyond 64 bits,
%% fractional or not digits. A field that is absent is missing_field.
lst_answer_fields_named(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun ibkr_http_stub:ibkr_handler/2),
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public, #{base_url => ibkr_http_stub:url(Stub)})),
    unlink(S),
    Body = fun(Dh, Exp) ->
                   iolist_to_binary(["{\"diffie_hellman_response\":", Dh,
                                     ",\"live_session_token_signature\":\"00\"",
                                     [[",\"live_session_token_expiration\":", Exp] || Exp =/= none],
                                     "}"])
           end,
    Cases = [{Body("\"\"", "1799999999999"), bad_dh_response},
             {Body("5", "1799999999999"), bad_dh_response},
             {Body("null", "1799999999999"), bad_dh_response},
             {Body("\"ab\"", "-5"), {bad_response, lst_expiration}},
             {Body("\"ab\"", "\"soon\""), {bad_response, lst_expiration}},
             {Body("\"ab\"", "\"-1\""), {bad_response, lst_expiration}},
             {Body("\"ab\"", "99999999999999999999"), {bad_response, lst_expiration}},
             {Body("\"ab\"", "1e30"), {bad_response, lst_expiration}},
             {Body("\"ab\"", "1.5"), {bad_response, lst_expiration}},
             {Body("\"ab\"", "null"), {bad_response, lst_expiration}},
             {Body("\"ab\"", none), {bad_response, missing_field}}],
    [begin
         ok = ibkr_http_stub:set_handler(Stub, fun(_, _) -> {200, [], B} end),
         ?assertEqual({B, {error, Why}}, {B, ibkr_oauth:authenticate(S)})
     end || {B, Why} <- Cases],
    ?assertMatch(#{authenticated := false}, ibkr_oauth:stats(S)),
    ok = ibkr_oauth:stop(S),
    ibkr_http_stub:stop(Stub).

%% The port program is stopped (SIGSTOP) while its handshake waits for the
%% server: authenticate/1 and the request behind it are answered
%% {error, timeout} shortly after the port's own timeout (request_timeout
%% 1 s), not after the API's 300 s backstop; once the port runs again the
%% session authenticates normally. (They waited out the backstop.)
stopped_port_during_handshake(Config) ->
    {ok, S} = ibkr_oauth:start_link((?config(client, Config))#{request_timeout => 1000}),
    unlink(S),
    ok = ?F:set_fault({slow, 3000, 1}),
    Callers = ?L:spawn_callers([fun() -> ibkr_oauth:authenticate(S) end,
                                fun() -> ibkr_oauth:request(S, get, ?API, #{timeout => 60000}) end]),
    ok = ?L:wait_until(fun() -> path_count(?LST_PATH) =:= 1 end, 10000),
    OsPid = integer_to_list(ibkr_oauth:os_pid(S)),
    _ = os:cmd("kill -STOP " ++ OsPid),
    try
        ?assertEqual([{error, timeout}, {error, timeout}], ?L:collect(Callers, 30000))
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    ok = ?F:clear_faults(),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request(S, get, ?API)),
    ?assertMatch(#{port_restarts := 0, handshake_in_flight := false}, ibkr_oauth:stats(S)),
    ok = ibkr_oauth:stop(S).

%% kill -9 of the port program while five requests (one of them a POST) wait
%% for the server: each caller gets {error, port_down}, the session opens a
%% new port, and the next request authenticates again (one more handshake at
%% the server). The POST is not sent again.
sigkill_mid_request(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    ?assertEqual(1, stat(handshakes)),
    ok = ?F:set_fault({slow, 30000, 5}),
    Get = fun() -> ibkr_oauth:request(S, get, ?API, #{timeout => 60000}) end,
    Post = fun() -> ibkr_oauth:request(S, post, <<"/echo">>,
                                       #{body => <<"{\"order\":1}">>, timeout => 60000})
           end,
    Callers = ?L:spawn_callers([Get, Get, Get, Get, Post]),
    ok = ?L:wait_until(fun() -> path_count(?API) =:= 4 andalso path_count(<<"/echo">>) =:= 1 end,
                       10000),
    ?assertMatch(#{in_flight := 5}, ibkr_oauth:stats(S)),
    OsPid = ibkr_oauth:os_pid(S),
    ok = ?L:kill_os(OsPid),
    ?assertEqual(lists:duplicate(5, {error, port_down}), ?L:collect(Callers, ?ANSWER_BOUND)),
    ?assert(is_process_alive(S)),
    NewOsPid = ibkr_oauth:os_pid(S),
    ?assert(is_integer(NewOsPid) andalso NewOsPid =/= OsPid),
    ?assertNot(?L:os_alive(OsPid)),
    %% (the new port's init may still be in flight)
    ?assertMatch(#{port_restarts := 1, authenticated := false}, ibkr_oauth:stats(S)),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?API, #{}),
    ?assertEqual(2, stat(handshakes)),
    ?assertEqual(1, path_count(<<"/echo">>)),
    ?assertMatch(#{handshakes := 2, epoch := 2, port_restarts := 1}, ibkr_oauth:stats(S)).

%% A session started from child_spec/1 is killed: the supervisor starts a
%% new one, the killed session's port program exits (EOF on its fd 3), and
%% the new session authenticates on its first request.
supervisor_restarts_crashed_session(Config) ->
    Client = ?config(client, Config),
    {ok, Sup} = supervisor:start_link(?MODULE, []),
    {ok, C1} = supervisor:start_child(Sup, ibkr_oauth:child_spec(Client)),
    {ok, _} = ibkr_oauth:authenticate(C1),
    OsPid1 = ibkr_oauth:os_pid(C1),
    exit(C1, kill),
    Child = fun() -> [{ibkr_oauth, P, worker, _}] = supervisor:which_children(Sup), P end,
    ok = ?L:wait_until(fun() -> is_pid(Child()) andalso Child() =/= C1 end, ?ANSWER_BOUND),
    ok = ?L:wait_until(fun() -> not ?L:os_alive(OsPid1) end, ?ANSWER_BOUND),
    C2 = Child(),
    ?assertEqual({error, not_authenticated}, ibkr_oauth:live_session_token(C2)),
    {ok, #{status := 200}} = ibkr_oauth:request(C2, get, ?API, #{}),
    ?assertEqual(2, stat(handshakes)),
    OsPid2 = ibkr_oauth:os_pid(C2),
    unlink(Sup),
    MRef = monitor(process, Sup),
    exit(Sup, shutdown),
    receive {'DOWN', MRef, _, _, _} -> ok end,
    ok = ?L:wait_until(fun() -> not ?L:os_alive(OsPid2) end, ?ANSWER_BOUND).

%% supervisor callback for supervisor_restarts_crashed_session/1.
init([]) -> {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, []}}.

%% The session process is killed (no terminate/2): its caller gets an error
%% tuple, and the port program sees EOF and exits.
owner_killed_port_exits(Config) ->
    S = ?config(session, Config),
    {Caller, OsPid} = one_request_waiting(S),
    exit(S, kill),
    ?assertEqual([{error, port_down}], ?L:collect([Caller], ?ANSWER_BOUND)),
    ok = ?L:wait_until(fun() -> not ?L:os_alive(OsPid) end, ?ANSWER_BOUND).

%% stop/1 while a request waits for the server: the caller gets port_down,
%% the session still logs out, and the port program exits.
stop_with_requests_in_flight(Config) ->
    S = ?config(session, Config),
    {Caller, OsPid} = one_request_waiting(S),
    ?assertEqual(ok, ibkr_oauth:stop(S)),
    ?assertEqual([{error, port_down}], ?L:collect([Caller], ?ANSWER_BOUND)),
    ?assertEqual(1, stat(logouts)),
    ok = ?L:wait_until(fun() -> not ?L:os_alive(OsPid) end, ?ANSWER_BOUND),
    ?assertEqual({error, noproc}, ibkr_oauth:stop(S)).

%% A whole BEAM running an authenticated session with a request in flight
%% is killed with SIGKILL: its port program exits by itself (no orphan).
peer_killed_session_port_exits(Config) ->
    Client = ?config(client, Config),
    {Peer, PeerOsPid} = ?L:start_peer(),
    try
        {ok, _} = peer:call(Peer, application, ensure_all_started, [ibkr_oauth], 15000),
        {ok, S} = peer:call(Peer, ibkr_oauth, start_session, [Client], 15000),
        {ok, _} = peer:call(Peer, ibkr_oauth, authenticate, [S], 15000),
        OsPid = peer:call(Peer, ibkr_oauth, os_pid, [S]),
        ?assert(?L:os_alive(OsPid)),
        ok = ?F:set_fault({slow, 30000, 1}),
        ok = peer:cast(Peer, ibkr_oauth, request, [S, get, ?API]),
        ok = ?L:wait_until(fun() -> path_count(?API) =:= 1 end, 10000),
        ok = ?L:kill_os(list_to_integer(PeerOsPid)),
        ok = ?L:wait_until(fun() -> not ?L:os_alive(OsPid) end, 10000)
    after
        catch peer:stop(Peer)
    end.

%% Each fault on the LST answer, hit by the handshake that request/4 starts
%% by itself: every request waiting for it (five at once, one handshake)
%% gets the handshake's documented error, nothing reaches the API path, and
%% the next request works.
handshake_faults_reach_waiting_requests(Config) ->
    Client = ?config(client, Config),
    P = ibkr_server_crypto:dh_prime(maps:get(dh_prime, ibkr_test_lib:vectors(public))),
    Http = fun(Code) -> fun({error, {http, C, B}}) -> C =:= Code andalso is_binary(B);
                           (_) -> false
                        end
           end,
    %% a 401 or 429 is one of IBKR's own errors
    Ibkr = fun(Kind, Code) -> fun({error, {ibkr, K, #{status := C}}}) -> {K, C} =:= {Kind, Code};
                                 (_) -> false
                              end
           end,
    Is = fun(Want) -> fun(Got) -> Got =:= Want end end,
    Cases = [{{reject_lst, 1}, Ibkr(unauthorized, 401)},
             {{status, 500, 1}, Http(500)},
             {{status, 503, 1}, Http(503)},
             {{rate_limit, 1, 1}, Ibkr(rate_limited, 429)},
             {{drop, 1}, fun({error, {transport, _}}) -> true; (_) -> false end},
             {malformed_json, Is({error, {bad_response, not_json}})},
             {wrong_lst_signature, Is({error, lst_signature_mismatch})}]
        ++ [{{bad_dh_response, B}, Is({error, bad_dh_response})}
            || B <- [0, 1, p_minus_1, p, P + 1, P + 12345]],
    lists:foreach(
      fun({Fault, Expected}) ->
              %% a fresh session each time: no LST yet
              {ok, S} = ibkr_oauth:start_link(Client),
              Get = fun() -> ibkr_oauth:request(S, get, ?API, #{}) end,
              Lst0 = path_count(?LST_PATH),
              Api0 = path_count(?API),
              ok = ?F:set_fault(Fault),
              Results = ?L:collect(?L:spawn_callers(lists:duplicate(5, Get)), 15000),
              [?assert(Expected(R), {Fault, R}) || R <- Results],
              ?assertEqual({Fault, 1}, {Fault, path_count(?LST_PATH) - Lst0}),
              ?assertEqual({Fault, 0}, {Fault, path_count(?API) - Api0}),
              ?assertEqual({error, not_authenticated}, ibkr_oauth:live_session_token(S)),
              ?assertMatch({ok, #{status := 200}}, Get()),
              ?assertMatch(#{port_restarts := 0}, ibkr_oauth:stats(S)),
              ok = ibkr_oauth:stop(S)
      end, Cases).

%% 429 with Retry-After: the retry leaves the session at least Retry-After
%% after the 429 came back (measured at the session by tracing its port
%% traffic). A POST is retried too (a 429 was not processed), exactly once;
%% a second 429 is the answer (IBKR's rate_limited error, with its
%% Retry-After).
retry_after_gap_honoured(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    Body = #{body => <<"{\"order\":1}">>},
    ok = ?F:set_fault({rate_limit, 1, 1}),
    {{ok, #{status := 200}}, [Gap1]} = traced_gaps(S, fun() -> ibkr_oauth:request(S, post, <<"/echo">>, Body) end),
    ?assert(Gap1 >= 1000, Gap1),
    ?assertEqual([429, 200], outcomes(<<"/echo">>)),
    ok = ?F:set_fault({rate_limit, 2, 2}),
    {{error, {ibkr, rate_limited, #{status := 429, retry_after := RetryAfter}}}, [Gap2]} =
        traced_gaps(S, fun() -> ibkr_oauth:request(S, get, ?API, #{}) end),
    ?assert(Gap2 >= 2000, Gap2),
    ?assertEqual(2, RetryAfter),
    ?assertEqual([429, 429], outcomes(?API)),
    ?assertEqual(1, stat(handshakes)).

%% The handshake is slower than a request's timeout: that request gets
%% {error, timeout}, the handshake carries on, and the next request uses
%% its LST without a new one.
slow_handshake_request_timeout(Config) ->
    S = ?config(session, Config),
    ok = ?F:set_fault({slow, 1500, 1}),
    ?assertEqual({error, timeout}, ibkr_oauth:request(S, get, ?API, #{timeout => 300})),
    ok = ?L:wait_until(fun() -> maps:get(authenticated, ibkr_oauth:stats(S)) end, 10000),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?API, #{}),
    ?assertEqual(1, stat(handshakes)),
    ?assertEqual(1, path_count(?API)).

%% Every request answered 401 (the LST request too): each request/4 costs
%% one API request and one handshake, then returns the refusal (IBKR's
%% `unauthorized'); no loop.
server_refuses_everything(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    ok = ?F:set_fault({status, 401, infinity}),
    [?assertMatch({error, {ibkr, unauthorized, #{status := 401}}}, ibkr_oauth:request(S, get, ?API, #{}))
     || _ <- lists:seq(1, 3)],
    ?assertEqual(3, path_count(?API)),
    ?assertEqual(1 + 3, path_count(?LST_PATH)),
    ok = ?F:clear_faults(),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?API, #{}).

%% The server's clock is off: within its window (300 s) nothing changes;
%% beyond it the handshake is refused with IBKR's message, returned in the
%% error and logged, and requests fail the same way instead of looping. The
%% session does not correct the skew: the host clock must be right (NTP).
clock_skew(Config) ->
    S = ?config(session, Config),
    ok = ?F:set_fault({skew_s, 200}),
    {ok, _} = ibkr_oauth:authenticate(S),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?API, #{}),
    Cap = ?L:capture_logs(),
    try
        [begin
             ok = ?F:set_fault({skew_s, Skew}),
             Bad0 = stat(bad_timestamps),
             {error, {ibkr, unauthorized, #{message := Why}}} = ibkr_oauth:authenticate(S),
             ?assertNotEqual(nomatch, binary:match(Why, <<"timestamp outside the window">>)),
             {error, {ibkr, unauthorized, #{message := Why2}}} = ibkr_oauth:request(S, get, ?API, #{}),
             ?assertNotEqual(nomatch, binary:match(Why2, <<"timestamp outside the window">>)),
             %% authenticate, then the request and its one re-handshake
             ?assertEqual(3, stat(bad_timestamps) - Bad0)
         end || Skew <- [3600, -3600]],
        Logs = ?L:captured(Cap),
        ?assertNotEqual(nomatch, binary:match(Logs, <<"handshake failed">>)),
        ?assertNotEqual(nomatch, binary:match(Logs, <<"timestamp outside the window">>))
    after
        ?L:stop_capture(Cap)
    end,
    ok = ?F:clear_faults(),
    {ok, _} = ibkr_oauth:authenticate(S),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?API, #{}).

%%% ---------------------------------------------------------------- helpers

%% An authenticated session (unlinked from the test) with one request held
%% by the server; the caller's pid and the port program's OS pid.
one_request_waiting(S) ->
    {ok, _} = ibkr_oauth:authenticate(S),
    OsPid = ibkr_oauth:os_pid(S),
    ok = ?F:set_fault({slow, 30000, 1}),
    [Caller] = ?L:spawn_callers([fun() -> ibkr_oauth:request(S, get, ?API, #{}) end]),
    ok = ?L:wait_until(fun() -> path_count(?API) =:= 1 end, 10000),
    unlink(S),
    {Caller, OsPid}.

stat(Key) -> maps:get(Key, ?F:stats()).

path_count(Path) -> maps:get(Path, stat(by_path), 0).

%% What became of each request to Path, oldest first (status or dropped).
outcomes(Path) ->
    [O || #{path := P, outcome := O} <- lists:reverse(stat(log)), P =:= Path].

%% Runs Fun while tracing the session's port traffic; returns Fun's result
%% and, for every 429 the session received, the ms until it sent its next
%% http command.
traced_gaps(S, Fun) ->
    1 = erlang:trace(S, true, ['receive', call, monotonic_timestamp, {tracer, self()}]),
    _ = erlang:trace_pattern({ibkr_oauth_port, send, 3}, true, []),
    try
        Result = Fun(),
        {Result, gaps(trace_events())}
    after
        _ = erlang:trace(S, false, ['receive', call]),
        _ = erlang:trace_pattern({ibkr_oauth_port, send, 3}, false, [])
    end.

trace_events() ->
    receive
        {trace_ts, _, 'receive', {Port, {data, Bin}}, Ts} when is_port(Port) ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, _, {ok, #{status := 429}}} -> [{ms(Ts), got_429} | trace_events()];
                _ -> trace_events()
            end;
        {trace_ts, _, call, {ibkr_oauth_port, send, [_, _, {http, _}]}, Ts} ->
            [{ms(Ts), sent} | trace_events()];
        {trace_ts, _, _, _, _} -> trace_events()
    after 0 -> []
    end.

ms(Ts) -> erlang:convert_time_unit(Ts, native, microsecond) / 1000.

gaps([{T429, got_429}, {TSent, sent} | Rest]) -> [TSent - T429 | gaps(Rest)];
gaps([{_, got_429}]) -> [];
gaps([_ | Rest]) -> gaps(Rest);
gaps([]) -> [].
