%% EUnit: the rate limiter (ibkr_oauth_ratelimit) with an injected clock.
-module(ibkr_oauth_ratelimit_tests).
-include_lib("eunit/include/eunit.hrl").

-define(RL, ibkr_oauth_ratelimit).

lim(Global, Rules) -> ?RL:new(#{global => Global, endpoints => Rules}).

keys_test_() ->
    L = lim(50, [{<<"/portfolio/accounts">>, 1, 5000}, {<<"/iserver">>, 5, 1000},
                 {<<"/iserver/marketdata/snapshot">>, 10, 1000}]),
    [?_assertEqual([global, <<"/portfolio/accounts">>], ?RL:keys(<<"/portfolio/accounts">>, L)),
     ?_assertEqual([global, <<"/portfolio/accounts">>], ?RL:keys(<<"/portfolio/accounts/x">>, L)),
     %% a prefix matches whole segments only
     ?_assertEqual([global], ?RL:keys(<<"/portfolio/accountsX">>, L)),
     ?_assertEqual([global], ?RL:keys(<<"/portfolio/U1/positions/0">>, L)),
     %% the longest prefix wins
     ?_assertEqual([global, <<"/iserver/marketdata/snapshot">>],
                   ?RL:keys(<<"/iserver/marketdata/snapshot">>, L)),
     ?_assertEqual([global, <<"/iserver">>], ?RL:keys(<<"/iserver/account/orders">>, L)),
     ?_assertEqual([<<"/iserver">>], ?RL:keys(<<"/iserver/x">>, lim(none, [{<<"/iserver">>, 1, 1}]))),
     ?_assertEqual([], ?RL:keys(<<"/x">>, ?RL:new(none)))].

%% A later rule for the same prefix overrides an earlier one (appending to
%% the IBKR table changes it).
override_test() ->
    L = lim(none, ?RL:ibkr_endpoints() ++ [{<<"/portfolio/accounts">>, 3, 1000}]),
    Path = <<"/portfolio/accounts">>,
    {ok, _, L1} = ?RL:acquire(?RL:keys(Path, L), 0, L),
    {ok, _, L2} = ?RL:acquire(?RL:keys(Path, L1), 0, L1),
    {ok, _, L3} = ?RL:acquire(?RL:keys(Path, L2), 0, L2),
    ?assertMatch({wait, _}, ?RL:acquire(?RL:keys(Path, L3), 0, L3)).

%% Limit 3 per 1000 ms: three go, the fourth waits until 1000 ms after the
%% first answer, not after the first send.
window_counts_from_answers_test() ->
    L0 = lim(3, []),
    {ok, T1, L1} = ?RL:acquire([global], 0, L0),
    {ok, T2, L2} = ?RL:acquire([global], 10, L1),
    {ok, T3, L3} = ?RL:acquire([global], 20, L2),
    %% all three in flight: room only comes with an answer
    ?assertEqual({wait, [{global, infinity}]}, ?RL:acquire([global], 30, L3)),
    ?assertEqual(#{global => 3}, ?RL:in_flight(L3)),
    L4 = ?RL:complete(T1, 100, L3),
    ?assertEqual({wait, [{global, 1000}]}, ?RL:acquire([global], 100, L4)),
    ?assertEqual({wait, [{global, 1}]}, ?RL:acquire([global], 1099, L4)),
    {ok, _, L5} = ?RL:acquire([global], 1100, L4),
    L6 = ?RL:complete(T3, 1200, ?RL:complete(T2, 1150, L5)),
    %% T2's slot frees at 2150, T3's at 2200
    ?assertEqual({wait, [{global, 50}]}, ?RL:acquire([global], 2100, L6)),
    {ok, _, _} = ?RL:acquire([global], 2150, L6).

%% The wait names the answer that has to leave the window: with 2 of a
%% limit of 2 answered at 0 and 500, room comes at 1000.
wait_is_for_the_oldest_answer_test() ->
    L0 = lim(2, []),
    {ok, A, L1} = ?RL:acquire([global], 0, L0),
    {ok, B, L2} = ?RL:acquire([global], 0, L1),
    L3 = ?RL:complete(B, 500, ?RL:complete(A, 0, L2)),
    ?assertEqual({wait, [{global, 700}]}, ?RL:acquire([global], 300, L3)),
    {ok, _, L4} = ?RL:acquire([global], 1000, L3),
    ?assertEqual({wait, [{global, 500}]}, ?RL:acquire([global], 1000, L4)).

%% All or nothing: a full endpoint key takes nothing from the global one.
all_or_nothing_test() ->
    L0 = lim(10, [{<<"/slow">>, 1, 5000}]),
    Keys = ?RL:keys(<<"/slow">>, L0),
    {ok, T, L1} = ?RL:acquire(Keys, 0, L0),
    L2 = ?RL:complete(T, 10, L1),
    ?assertEqual({wait, [{<<"/slow">>, 4990}]}, ?RL:acquire(Keys, 20, L2)),
    ?assertEqual(#{global => 0, <<"/slow">> => 0}, ?RL:in_flight(L2)),
    %% other paths have the rest of the global budget (the /slow answer
    %% holds one global slot until 1010)
    Lots = lists:foldl(fun(I, L) -> {ok, _, L9} = ?RL:acquire([global], I, L), L9 end,
                       L2, lists:seq(1, 9)),
    ?assertEqual({wait, [{global, 990}]}, ?RL:acquire([global], 20, Lots)),
    %% both full: both listed
    ?assertEqual({wait, [{global, 990}, {<<"/slow">>, 4990}]}, ?RL:acquire(Keys, 20, Lots)).

%% The least wait: a known wait as is; a key full of requests in flight at
%% least one period; several keys, the longest.
min_wait_test() ->
    L0 = lim(10, [{<<"/slow">>, 1, 5000}]),
    Keys = ?RL:keys(<<"/slow">>, L0),
    {ok, T, L1} = ?RL:acquire(Keys, 0, L0),
    {wait, InFlight} = ?RL:acquire(Keys, 0, L1),
    ?assertEqual(5000, ?RL:min_wait(InFlight, L1)),
    L2 = ?RL:complete(T, 100, L1),
    {wait, Answered} = ?RL:acquire(Keys, 1100, L2),
    ?assertEqual(4000, ?RL:min_wait(Answered, L2)),
    ?assertEqual(4000, ?RL:min_wait([{global, 990}, {<<"/slow">>, 4000}], L2)),
    ?assertEqual(1000, ?RL:min_wait([{global, infinity}, {<<"/slow">>, 20}], L2)).

%% A token that was never used frees its slots at once.
release_test() ->
    L0 = lim(1, []),
    {ok, T, L1} = ?RL:acquire([global], 0, L0),
    ?assertMatch({wait, _}, ?RL:acquire([global], 0, L1)),
    L2 = ?RL:release(T, L1),
    ?assertMatch({ok, [global], _}, ?RL:acquire([global], 0, L2)).

none_never_waits_test() ->
    L = ?RL:new(none),
    Final = lists:foldl(fun(I, Acc) -> {ok, [], Acc1} = ?RL:acquire(?RL:keys(<<"/tickle">>, Acc), I, Acc), Acc1 end,
                        L, lists:seq(1, 1000)),
    ?assertEqual(#{}, ?RL:in_flight(Final)).

%% The property the session relies on, checked by simulation: requests sent
%% whenever the limiter allows, each answered after a random delay, and an
%% arrival at the server at a random moment between send and answer; in
%% every window of one period no more than Limit arrivals.
simulated_arrivals_never_exceed_test() ->
    rand:seed(exsss, {1, 2, 3}),
    Limit = 5,
    Period = 1000,
    L0 = lim(none, [{<<"/x">>, Limit, Period}]),
    Keys = ?RL:keys(<<"/x">>, L0),
    Arrivals = simulate(Keys, L0, 0, [], [], 300),
    Sorted = lists:sort(Arrivals),
    ?assertEqual(300, length(Sorted)),
    Worst = lists:max([length([B || B <- Sorted, B >= A, B < A + Period]) || A <- Sorted]),
    ?assert(Worst =< Limit, Worst).

%% In flight: [{AnswerAt, Token}]. Each ms: answers that are due complete,
%% then as many sends as the limiter admits.
simulate(_Keys, _L, _Now, _InFlight, Arrivals, 0) ->
    Arrivals;
simulate(Keys, L, Now, InFlight, Arrivals, Left) ->
    {Due, Later} = lists:partition(fun({At, _}) -> At =< Now end, InFlight),
    L1 = lists:foldl(fun({_, T}, Acc) -> ?RL:complete(T, Now, Acc) end, L, Due),
    {L2, Sent, Arr} = send_all(Keys, L1, Now, Left, [], Arrivals),
    simulate(Keys, L2, Now + 1, Sent ++ Later, Arr, Left - length(Sent)).

send_all(_Keys, L, _Now, 0, Sent, Arr) -> {L, Sent, Arr};
send_all(Keys, L, Now, Left, Sent, Arr) ->
    case ?RL:acquire(Keys, Now, L) of
        {ok, T, L1} ->
            Latency = rand:uniform(400),
            Arrival = Now + rand:uniform(Latency) - 1,
            send_all(Keys, L1, Now, Left - 1, [{Now + Latency, T} | Sent], [Arrival | Arr]);
        {wait, _} ->
            {L, Sent, Arr}
    end.

default_spec_test() ->
    #{global := 50, endpoints := Rules} = ?RL:default_spec(),
    ?assertEqual(Rules, ?RL:ibkr_endpoints()),
    ?assert(lists:member({<<"/portfolio/accounts">>, 1, 5000}, Rules)),
    ?assert(lists:member({<<"/iserver/marketdata/snapshot">>, 10, 1000}, Rules)),
    ?assert(lists:member({<<"/tickle">>, 1, 1000}, Rules)),
    ?assert(lists:member({<<"/iserver/scanner/params">>, 1, 900000}, Rules)).

%% A period of 1 ms makes a concurrency limit (IBKR's 5 concurrent
%% /iserver/marketdata/history requests): the sixth waits for an answer.
concurrency_rule_test() ->
    L0 = ?RL:new(?RL:default_spec()),
    Keys = ?RL:keys(<<"/iserver/marketdata/history">>, L0),
    {Tokens, L5} = lists:foldl(fun(_, {Ts, L}) -> {ok, T, L1} = ?RL:acquire(Keys, 0, L), {[T | Ts], L1} end,
                               {[], L0}, lists:seq(1, 5)),
    ?assertEqual({wait, [{<<"/iserver/marketdata/history">>, infinity}]}, ?RL:acquire(Keys, 100, L5)),
    L6 = ?RL:complete(hd(Tokens), 100, L5),
    ?assertMatch({wait, [{_, 1}]}, ?RL:acquire(Keys, 100, L6)),
    ?assertMatch({ok, _, _}, ?RL:acquire(Keys, 101, L6)).
