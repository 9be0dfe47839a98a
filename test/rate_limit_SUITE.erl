%% The session's rate limit against the fake IBKR server. The checks are on
%% what the server saw (its request log, with arrival times): never more
%% than the limit in any window of the period, whatever our speed; and on
%% what callers get: every request answered (nothing dropped), queueing
%% reported as `queued_ms', deadlines kept while queued.
-module(rate_limit_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([global_limit_never_exceeded/1, endpoint_limit_and_queue/1,
         ibkr_defaults_apply/1, session_tickles_are_limited/1, no_limit/1,
         bad_rate_limit_config/1, default_limit_refuses_hopeless/1]).

-define(F, ibkr_fake_server).
-define(L, ibkr_check_lib).
-define(POSITIONS, <<"/portfolio/U1234567/positions/0">>).
-define(ACCOUNTS, <<"/portfolio/accounts">>).
-define(SECOND_US, 1000000).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [global_limit_never_exceeded, endpoint_limit_and_queue, ibkr_defaults_apply,
     session_tickles_are_limited, no_limit, bad_rate_limit_config,
     default_limit_refuses_hopeless].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) ->
    {ok, Info = #{config := Client}} =
        ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    %% The test library turns the limit off; each case sets its own.
    Session = maps:merge(maps:remove(rate_limit, Client), options(Case)),
    {ok, S} = ibkr_oauth:start_link(Session),
    unlink(S),
    [{session, S}, {fake, Info}, {client, Client} | Config].

end_per_testcase(_Case, Config) ->
    _ = (catch ibkr_oauth:stop(?config(session, Config))),
    ?F:stop().

options(global_limit_never_exceeded) -> #{rate_limit => #{global => 50, endpoints => []}};
options(endpoint_limit_and_queue) ->
    #{rate_limit => #{global => 50, endpoints => [{?ACCOUNTS, 1, 10000}]}};
options(ibkr_defaults_apply) -> #{};
options(default_limit_refuses_hopeless) -> #{};
options(session_tickles_are_limited) -> #{tickle_interval => 50};
options(no_limit) -> #{rate_limit => none};
options(bad_rate_limit_config) -> #{rate_limit => none}.

%%% ----------------------------------------------------------------- cases

%% 120 concurrent requests with 50 per second: all answered, and the server
%% never saw more than 50 (handshake included) within any second. At least
%% 70 had to wait, and said so.
global_limit_never_exceeded(Config) ->
    S = ?config(session, Config),
    Pids = ?L:spawn_callers([fun() -> ibkr_oauth:request(S, get, ?POSITIONS, #{timeout => 60000}) end
                             || _ <- lists:seq(1, 120)]),
    Results = ?L:collect(Pids, 90000),
    ?assertEqual(lists:duplicate(120, 200), [St || {ok, #{status := St}} <- Results]),
    Queued = [Q || {ok, #{queued_ms := Q}} <- Results],
    ?assertEqual(120, length(Queued)),
    ct:log("queued_ms: ~p", [lists:sort(Queued)]),
    ?assert(length([Q || Q <- Queued, Q > 0]) >= 70),
    Arrivals = arrivals(fun(_) -> true end),
    ?assertEqual(121, length(Arrivals)),             % the LST request too
    ?assert(max_in_window(Arrivals, ?SECOND_US) =< 50, max_in_window(Arrivals, ?SECOND_US)),
    #{rate_limited := Limited, rate_limit_queued := 0, requests := 120} = ibkr_oauth:stats(S),
    ?assert(Limited >= 70, Limited).

%% An endpoint rule holds only its endpoint: other paths pass the request
%% that waits for it. A queued request keeps its deadline; a port crash does
%% not lose it (it never left the BEAM): it goes out on the new port, after
%% a new handshake, when its slot frees; the limit survives the new port.
endpoint_limit_and_queue(Config) ->
    S = ?config(session, Config),
    {ok, #{status := 200, queued_ms := 0}} = ibkr_oauth:request(S, get, ?ACCOUNTS, #{}),
    [Waiting] = ?L:spawn_callers([fun() -> ibkr_oauth:request(S, get, ?ACCOUNTS, #{timeout => infinity}) end]),
    ?L:wait_until(fun() -> maps:get(rate_limit_queued, ibkr_oauth:stats(S)) =:= 1 end, 10000),
    %% Not behind the waiting one:
    {ok, #{status := 200, queued_ms := 0}} = ibkr_oauth:request(S, get, ?POSITIONS, #{}),
    %% Its deadline comes before the slot can free: refused at once.
    ?assertEqual({error, rate_limited}, ibkr_oauth:request(S, get, ?ACCOUNTS, #{timeout => 100})),
    #{rate_limit_queued := 1, rate_limited := 2} = ibkr_oauth:stats(S),  % both that waited
    receive {Waiting, Early} -> ct:fail({answered_early, Early}) after 0 -> ok end,
    %% A crashed port: the queued request waits on.
    ?L:kill_os(ibkr_oauth:os_pid(S)),
    ?L:wait_until(fun() -> maps:get(port_restarts, ibkr_oauth:stats(S)) =:= 1 end, 10000),
    #{rate_limit_queued := 1} = ibkr_oauth:stats(S),
    %% The server still counts the first one: so does the session.
    ?assertEqual({error, rate_limited}, ibkr_oauth:request(S, get, ?ACCOUNTS, #{timeout => 300})),
    ?assertEqual(1, maps:get(?ACCOUNTS, stat(by_path))),
    [{ok, #{status := 200, queued_ms := Q}}] = ?L:collect([Waiting], 30000),
    ?assert(Q > 0, Q),
    ?assertEqual(2, maps:get(?ACCOUNTS, stat(by_path))),
    ?assertEqual(2, stat(handshakes)),                % a new LST for the new port
    ?assertMatch(#{rate_limit_queued := 0, queued := 0, in_flight := 0}, ibkr_oauth:stats(S)).

%% Defaults (no rate_limit, request_timeout 10 s): three concurrent GETs of
%% /portfolio/accounts (IBKR: 1 per 5 s). The first goes at once, the second
%% 5 s after its answer; the third could only go 5 s after the second's
%% answer, past its deadline: it is answered {error, rate_limited} (never
%% sent) as soon as the session knows, not {error, timeout} at its deadline.
default_limit_refuses_hopeless(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    Pids = ?L:spawn_callers([fun() -> ibkr_oauth:request(S, get, ?ACCOUNTS) end || _ <- [1, 2, 3]]),
    Results = ?L:collect(Pids, 30000),
    ?assertEqual([200, 200, {error, rate_limited}],
                 lists:sort([case R of {ok, #{status := St}} -> St; E -> E end || R <- Results])),
    ?assertEqual(2, maps:get(?ACCOUNTS, stat(by_path))),
    ?assertMatch(#{rate_limited := 2, rate_limit_queued := 0, errors := 1}, ibkr_oauth:stats(S)).

%% Without a rate_limit key IBKR's table applies: /portfolio/accounts at
%% most once per 5 s, counted from the answer.
ibkr_defaults_apply(Config) ->
    S = ?config(session, Config),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, ?ACCOUNTS, #{}),
    {ok, #{status := 200, queued_ms := Q}} = ibkr_oauth:request(S, get, ?ACCOUNTS, #{}),
    ?assert(Q > 0),
    [A1, A2] = arrivals(fun(#{path := P}) -> P =:= ?ACCOUNTS end),
    ?assert(A2 - A1 >= 5 * ?SECOND_US, A2 - A1),
    ?assertMatch(#{rate_limited := 1}, ibkr_oauth:stats(S)).

%% The session's own tickles pass the limiter too: with a 50 ms interval,
%% still at most one /tickle per second (IBKR's rule).
session_tickles_are_limited(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    ?L:wait_until(fun() -> stat(tickles) >= 3 end, 30000),
    Tickles = arrivals(fun(#{path := P}) -> P =:= <<"/tickle">> end),
    ?assert(max_in_window(Tickles, ?SECOND_US) =< 1, Tickles).

%% rate_limit => none: nobody waits.
no_limit(Config) ->
    S = ?config(session, Config),
    Pids = ?L:spawn_callers([fun() -> ibkr_oauth:request(S, get, ?ACCOUNTS, #{timeout => 60000}) end
                             || _ <- lists:seq(1, 60)]),
    Results = ?L:collect(Pids, 90000),
    ?assertEqual(lists:duplicate(60, 200),
                 [St || {ok, #{status := St, queued_ms := Q}} <- Results, is_integer(Q)]),
    ?assertMatch(#{rate_limited := 0, rate_limit_queued := 0}, ibkr_oauth:stats(S)).

bad_rate_limit_config(Config) ->
    Client = ?config(client, Config),
    Bad = [{#{global => 0}, {global, badarg}},
           {#{endpoints => [{"/x", 1, 1}]}, {endpoint, 1, badarg}},
           {#{per_second => 5}, unknown_key},
           {fifty, badarg}],
    [?assertEqual({error, {bad_config, rate_limit, Why}},
                  ibkr_oauth:start_link(Client#{rate_limit => RL}))
     || {RL, Why} <- Bad].

%%% ---------------------------------------------------------------- helpers

stat(Key) -> maps:get(Key, ?F:stats()).

%% Arrival times (monotonic us) of the logged requests matching Pred, oldest first.
arrivals(Pred) ->
    lists:sort([At || #{at := At} = E <- stat(log), Pred(E)]).

%% The most arrivals within any half-open window [A, A + Width).
max_in_window(Sorted, Width) ->
    lists:max([0 | [length([B || B <- Sorted, B >= A, B < A + Width]) || A <- Sorted]]).
