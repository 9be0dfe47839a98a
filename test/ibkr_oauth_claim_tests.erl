%% EUnit and PropEr tests of ibkr_oauth_claim, the cluster claimant's
%% decisions.
-module(ibkr_oauth_claim_tests).
-include_lib("eunit/include/eunit.hrl").
%% PropEr through its functions (Debian's erlang-proper ships no header).
-define(T, proper_types).

-define(C, ibkr_oauth_claim).

pid(N) -> list_to_pid("<0." ++ integer_to_list(N) ++ ".0>").

started_ok_owns_test() ->
    P = pid(10),
    ?assertMatch({{own, P}, _}, ?C:next({started, {ok, P}}, ?C:new(), 0.5)).

name_taken_watches_the_holder_test() ->
    P = pid(11),
    {A, C} = ?C:next({started, {error, {already_started, P}}}, ?C:new(), 0.5),
    ?assertEqual({watch, P}, A),
    ?assertEqual(0, ?C:attempts(C)).

%% The name was taken, but its holder vanished before we could watch it.
name_taken_by_nobody_retries_after_a_backoff_test() ->
    {A, C} = ?C:next({started, {error, {already_started, undefined}}}, ?C:new(), 0.0),
    ?assertEqual({claim_after, ?C:base_ms() div 2}, A),
    ?assertEqual(1, ?C:attempts(C)).

failed_starts_back_off_exponentially_to_the_cap_test() ->
    Delays = failed_starts(12, 0.0),
    Base = ?C:base_ms(),
    ?assertEqual([Base div 2, Base, 2 * Base, 4 * Base], lists:sublist(Delays, 4)),
    ?assertEqual(?C:max_ms() div 2, lists:last(Delays)),
    ?assertEqual(Delays, lists:sort(Delays)),
    Top = lists:last(failed_starts(40, 0.9999999)),
    ?assert(Top >= ?C:max_ms() - 1 andalso Top =< ?C:max_ms(), Top).

%% A session that lived long: claim again soon, spread over spread_ms(), and
%% the backoff starts over.
down_after_a_stable_life_claims_soon_test() ->
    C0 = after_failures(5),
    {{claim_after, Ms}, C} = ?C:next({down, ?C:stable_ms()}, C0, 0.5),
    ?assertEqual(?C:spread_ms() div 2, Ms),
    ?assertEqual(0, ?C:attempts(C)),
    {{claim_after, Ms0}, _} = ?C:next({down, 60000}, ?C:new(), 0.0),
    ?assertEqual(0, Ms0).

%% Sessions that die right after their start (a node that wins but whose
%% session keeps failing) do not make a loop of handshakes: each short life
%% adds a backoff step.
short_lived_sessions_back_off_test() ->
    {Delays, _} = lists:mapfoldl(fun(_, C) ->
                                         {{claim_after, Ms}, C1} = ?C:next({down, 100}, C, 0.0),
                                         {Ms, C1}
                                 end, ?C:new(), lists:seq(1, 10)),
    ?assertEqual(0, hd(Delays)),
    ?assertEqual(?C:base_ms() div 2, lists:nth(2, Delays)),
    ?assertEqual(Delays, lists:sort(Delays)),
    ?assert(lists:last(Delays) >= ?C:max_ms() div 2).

%% Watching a session, then owning one, keeps the failure count (it is reset
%% only by a session that lived stable_ms()).
own_and_watch_keep_the_count_test() ->
    C0 = after_failures(3),
    {_, C1} = ?C:next({started, {ok, pid(1)}}, C0, 0.5),
    {_, C2} = ?C:next({started, {error, {already_started, pid(2)}}}, C1, 0.5),
    ?assertEqual(3, ?C:attempts(C2)).

keep_is_the_same_whoever_asks_test() ->
    A = pid(20),
    B = pid(21),
    ?assertEqual(?C:keep(A, B), ?C:keep(B, A)),
    ?assertEqual(A, ?C:keep(A, A)).

jitter_out_of_range_is_clamped_test() ->
    High = ?C:delay(30, 7.0),
    ?assert(High >= ?C:max_ms() - 1 andalso High =< ?C:max_ms(), High),
    ?assertEqual(?C:max_ms() div 2, ?C:delay(30, -1.0)).

%%% ------------------------------------------------------------ properties

%% Every delay is bounded: 0 =< delay =< max_ms() + spread_ms(), and a failed
%% start never retries at once (no busy loop), whatever came before.
prop_delays_bounded() ->
    proper:forall({?T:list(event()), ?T:float(0.0, 0.9999)},
            fun({Events, U}) ->
                {_, Ok} = lists:foldl(
                            fun(E, {C, Acc}) ->
                                    {A, C1} = ?C:next(E, C, U),
                                    {C1, Acc andalso bounded(E, A)}
                            end, {?C:new(), true}, Events),
                Ok
            end).

bounded({started, {ok, P}}, {own, P}) -> true;
bounded({started, {error, {already_started, P}}}, {watch, P}) when is_pid(P) -> true;
bounded({started, {error, _}}, {claim_after, Ms}) ->
    Ms >= ?C:base_ms() div 2 andalso Ms =< ?C:max_ms();
bounded({down, _}, {claim_after, Ms}) ->
    Ms >= 0 andalso Ms =< ?C:max_ms() + ?C:spread_ms();
bounded(_, _) -> false.

%% delay/2 is equal jitter: between half and all of the step, the step
%% doubling up to max_ms().
prop_delay_equal_jitter() ->
    proper:forall({?T:range(1, 200), ?T:float(0.0, 0.9999)},
            fun({N, U}) ->
                Step = min(?C:max_ms(), ?C:base_ms() * (1 bsl min(N - 1, 16))),
                D = ?C:delay(N, U),
                D >= Step div 2 andalso D =< Step
            end).

event() ->
    ?T:oneof([{started, {ok, pid(30)}},
           {started, {error, {already_started, pid(31)}}},
           {started, {error, {already_started, undefined}}},
           {started, {error, {bad_config, encryption_key, enoent}}},
           {down, ?T:range(0, 2 * ?C:stable_ms())}]).

proper_test_() ->
    {timeout, 60,
     [?_assert(proper:quickcheck(P, [{numtests, 500}, {to_file, user}]))
      || P <- [prop_delays_bounded(), prop_delay_equal_jitter()]]}.

%%% --------------------------------------------------------------- helpers

failed_starts(N, U) ->
    {Delays, _} = lists:mapfoldl(fun(_, C) ->
                                         {{claim_after, Ms}, C1} =
                                             ?C:next({started, {error, boom}}, C, U),
                                         {Ms, C1}
                                 end, ?C:new(), lists:seq(1, N)),
    Delays.

after_failures(N) ->
    lists:foldl(fun(_, C) -> element(2, ?C:next({started, {error, boom}}, C, 0.5)) end,
                ?C:new(), lists:seq(1, N)).
