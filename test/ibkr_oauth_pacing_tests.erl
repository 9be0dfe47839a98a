%% EUnit and PropEr: ibkr_oauth_pacing, the rate-limit queue, with an
%% injected clock.
-module(ibkr_oauth_pacing_tests).
-include_lib("eunit/include/eunit.hrl").

-define(P, ibkr_oauth_pacing).
-define(SNAP, <<"/iserver/marketdata/snapshot">>).
-define(ACCTS, <<"/portfolio/accounts">>).

q(Global, Rules) -> ?P:new(#{global => Global, endpoints => Rules}).

jobs(Go) -> [J || {J, _} <- Go].

add_all(Jobs, Path, P) ->
    lists:foldl(fun(J, Acc) -> ?P:add(J, Path, infinity, req, Acc) end, P, Jobs).

fifo_and_wake_test() ->
    P0 = add_all([a, b, c], ?SNAP, q(50, [{?SNAP, 2, 1000}])),
    ?assertEqual(3, ?P:size(P0)),
    {Go, [], Wake, P1} = ?P:drain(0, P0),
    ?assertEqual([a, b], jobs(Go)),
    %% both slots in flight: only an answer frees one
    ?assertEqual(infinity, Wake),
    [{a, Ta}, {b, _}] = Go,
    P2 = ?P:complete(Ta, 100, P1),
    {[], [], 1000, P3} = ?P:drain(100, P2),
    {[], [], 1, P4} = ?P:drain(1099, P3),
    {[{c, _}], [], infinity, P5} = ?P:drain(1100, P4),
    ?assertEqual(0, ?P:size(P5)),
    ?assertEqual({[], [], infinity, P5}, ?P:drain(5000, P5)).

%% A job for a full endpoint lets jobs for other endpoints pass.
pass_other_endpoint_test() ->
    P0 = q(50, [{?ACCTS, 1, 5000}]),
    P1 = ?P:add(x, <<"/other">>, infinity, req, add_all([a1, a2], ?ACCTS, P0)),
    {Go, [], Wake, P2} = ?P:drain(0, P1),
    ?assertEqual([a1, x], jobs(Go)),
    ?assertEqual(infinity, Wake),
    ?assert(?P:member(a2, P2)),
    ?assertNot(?P:member(a1, P2)).

%% Once the global key is full nobody passes, in any FIFO.
global_full_stops_all_test() ->
    P0 = add_all([g1, g2], <<"/x">>, q(1, [{?ACCTS, 5, 1000}])),
    P1 = ?P:add(a, ?ACCTS, infinity, req, P0),
    {[{g1, T}], [], infinity, P2} = ?P:drain(0, P1),
    P3 = ?P:complete(T, 10, P2),
    {[], [], 1000, P4} = ?P:drain(10, P3),
    {[{g2, _}], [], infinity, _} = ?P:drain(1010, P4).

%% The session's own jobs go first, in front of requests already waiting.
own_first_test() ->
    P0 = add_all([r1, r2], <<"/x">>, q(1, [])),
    P1 = ?P:add(handshake, <<"/oauth/live_session_token">>, infinity, own, P0),
    P2 = ?P:add(tickle, <<"/tickle">>, infinity, own, P1),
    {[{First, T}], [], _, P3} = ?P:drain(0, P2),
    ?assertEqual(tickle, First),          % the latest own job in front
    {[{handshake, T2}], [], _, P4} = ?P:drain(2000, ?P:complete(T, 0, P3)),
    {[{r1, _}], [], _, _} = ?P:drain(4000, ?P:complete(T2, 2000, P4)).

%% A request that cannot go before its deadline is refused at once (never
%% sent); one whose deadline allows the wait stays.
refused_test() ->
    P0 = ?P:add(busy, ?ACCTS, infinity, req, q(50, [{?ACCTS, 1, 5000}])),
    {[{busy, T}], [], _, P1} = ?P:drain(0, P0),
    P2 = ?P:add(late, ?ACCTS, 20000, req, ?P:add(soon, ?ACCTS, 3000, req, ?P:complete(T, 0, P1))),
    {[], [soon], 5000, P3} = ?P:drain(0, P2),
    ?assertNot(?P:member(soon, P3)),
    ?assert(?P:member(late, P3)),
    %% in flight: the least wait is one period
    P4 = ?P:add(x, ?ACCTS, 4000, req, ?P:add(y, ?ACCTS, 9000, req, q(50, [{?ACCTS, 1, 5000}]))),
    {[{y, _}], [x], infinity, _} = ?P:drain(0, P4).

%% Blocked by the global key: every FIFO's hopeless requests are refused.
refused_behind_global_test() ->
    P0 = ?P:add(first, <<"/x">>, infinity, req, q(1, [{?ACCTS, 5, 1000}])),
    {[{first, T}], [], _, P1} = ?P:drain(0, P0),
    P2 = ?P:add(b, ?ACCTS, 500, req, ?P:add(a, <<"/x">>, 200, req, ?P:complete(T, 0, P1))),
    {[], Refused, 1000, P3} = ?P:drain(0, P2),
    ?assertEqual([a, b], lists:sort(Refused)),
    ?assertEqual(0, ?P:size(P3)).

add_remove_test() ->
    P0 = add_all([a, b], <<"/x">>, q(1, [])),
    ?assertEqual(P0, ?P:add(a, <<"/x">>, 5, own, P0)),     % already queued: unchanged
    P1 = ?P:remove(a, P0),
    ?assertEqual(P1, ?P:remove(a, P1)),
    ?assertEqual(1, ?P:size(P1)),
    {[{b, _}], [], _, P2} = ?P:drain(0, P1),
    ?assertEqual(0, ?P:size(?P:remove(b, P2))).

release_test() ->
    {[{a, T}], [], _, P1} = ?P:drain(0, ?P:add(a, ?ACCTS, infinity, req, q(none, [{?ACCTS, 1, 5000}]))),
    ?assertEqual({wait, 5000}, ?P:try_acquire(?ACCTS, 0, P1)),
    P2 = ?P:release(T, P1),
    ?assertMatch({ok, [?ACCTS], _}, ?P:try_acquire(?ACCTS, 0, P2)),
    ?assertEqual(#{?ACCTS => 0}, ibkr_oauth_ratelimit:in_flight(?P:limiter(P2))).

no_limit_test() ->
    {Go, [], infinity, _} = ?P:drain(0, add_all(lists:seq(1, 100), <<"/x">>, ?P:new(none))),
    ?assertEqual(lists:seq(1, 100), jobs(Go)).

%%--------------------------------------------------------------------
%% PropEr (Debian's erlang-proper ships no proper.hrl: proper_types and
%% proper:forall/2 are called directly): whatever the order of adds, answers, clock steps and deadlines,
%% no key ever has more than its limit of slots taken, counting a slot from
%% the moment its job goes until one period after its answer; every job
%% goes at most once, refused ones never; nothing is lost.

-define(RULES, [{?SNAP, 3, 1000}, {?ACCTS, 1, 5000}, {<<"/fast">>, 2, 1}]).
-define(GLOBAL, 4).
-define(PATHS, [?SNAP, ?ACCTS, <<"/fast">>, <<"/x">>, <<"/snap">>]).

op() ->
    T = proper_types,
    T:frequency([{5, {add, T:oneof(?PATHS), T:oneof([infinity, T:range(0, 8000)]), T:oneof([own, req])}},
                 {3, {advance, T:oneof([T:range(0, 50), T:range(0, 2000)])}},
                 {4, {answer, T:range(0, 20)}},
                 {1, {cancel, T:range(0, 40)}}]).

prop_never_over_limit() ->
    proper:forall(proper_types:list(op()), fun run/1).

run(Ops) ->
    P = ?P:new(#{global => ?GLOBAL, endpoints => ?RULES}),
    run(Ops, #{now => 0, p => P, n => 0, flight => [], history => [], queued => #{}, went => #{}}).

run([], #{queued := Q, p := P}) ->
    map_size(Q) =:= ?P:size(P);
run([Op | Ops], S0) ->
    S1 = step(Op, S0),
    #{now := Now, p := P} = S1,
    {Go, Refused, Wake, P1} = ?P:drain(Now, P),
    S2 = lists:foldl(fun({J, Token}, #{flight := F, went := W, queued := Q} = A) ->
                             false = is_map_key(J, W),
                             #{J := _} = Q,
                             A#{flight := [{J, Token, Now} | F], went := W#{J => Now},
                                queued := maps:remove(J, Q)}
                     end, S1#{p := P1}, Go),
    S3 = lists:foldl(fun(J, #{queued := Q, went := W} = A) ->
                             false = is_map_key(J, W),
                             {_, D} = maps:get(J, Q),
                             true = D =/= infinity andalso D =< Now + 5000,
                             A#{queued := maps:remove(J, Q)}
                     end, S2, Refused),
    true = Wake =:= infinity orelse (is_integer(Wake) andalso Wake >= 0),
    ok_slots(S3) andalso run(Ops, S3).

step({add, Path, Dl, Prio}, #{n := N, now := Now, p := P, queued := Q} = S) ->
    D = case Dl of infinity -> infinity; _ -> Now + Dl end,
    S#{n := N + 1, p := ?P:add(N, Path, D, Prio, P), queued := Q#{N => {Path, D}}};
step({advance, Ms}, #{now := Now} = S) ->
    S#{now := Now + Ms};
step({answer, I}, #{flight := F, p := P, now := Now, history := H} = S) when F =/= [] ->
    {J, Token, Sent} = lists:nth(1 + I rem length(F), F),
    S#{flight := lists:keydelete(J, 1, F), p := ?P:complete(Token, Now, P),
       history := [{Token, Sent, Now} | H]};
step({cancel, J}, #{queued := Q, p := P} = S) ->
    S#{queued := maps:remove(J, Q), p := ?P:remove(J, P)};
step(_, S) -> S.

%% At every moment a job went, the slots of each of its keys taken then
%% (in flight, or answered less than one period before) were within the
%% limit.
ok_slots(#{flight := F, history := H}) ->
    Taken = [{Token, Sent, infinity} || {_, Token, Sent} <- F] ++ H,
    Limits = maps:from_list([{global, {?GLOBAL, 1000}} | [{K, {L, T}} || {K, L, T} <- ?RULES]]),
    lists:all(fun({Token, Sent, _}) ->
                      lists:all(fun(K) ->
                                        {Limit, Period} = maps:get(K, Limits),
                                        Busy = [x || {T2, S2, Done} <- Taken, lists:member(K, T2),
                                                     S2 =< Sent, Done =:= infinity orelse Done + Period > Sent],
                                        length(Busy) =< Limit
                                end, Token)
              end, Taken).

proper_test_() ->
    {timeout, 60,
     ?_assert(proper:quickcheck(prop_never_over_limit(),
                                [{numtests, 300}, {max_size, 60}, {to_file, user}, quiet]))}.
