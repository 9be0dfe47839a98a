%% The streaming policy, input by input (ibkr_oauth_stream_prop_tests holds
%% its invariants under random sequences).
-module(ibkr_oauth_stream_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, ibkr_oauth_stream).
-define(MD(C, F), {market_data, C, F}).
-define(SESSION, <<"sess1">>).

%%% --------------------------------------------------------------- helpers

new() -> ?S:new(#{smd_refresh_interval => 540000, seed => {7, 8, 9}}).

h(Input, Now, St) -> ?S:handle(Input, Now, St).

%% Feeds inputs at time Now; all actions, in order.
feed(Inputs, Now, St) ->
    lists:foldl(fun(I, {Acc, S}) -> {A, S1} = h(I, Now, S), {Acc ++ A, S1} end, {[], St}, Inputs).

sends(Actions) -> [F || {ws_send, _, F} <- Actions].
delivered(Actions) -> [{P, S, M} || {deliver, P, S, M} <- Actions].
statuses(Actions) -> [{S, M} || {deliver, _, S, {status, M}} <- Actions].
timer(Actions) -> lists:last(Actions).

system() -> {message, #{<<"topic">> => <<"system">>, <<"success">> => <<"u">>}}.
sts(Auth) -> sts(Auth, false).
sts(Auth, Competing) ->
    {message, #{<<"topic">> => <<"sts">>,
                <<"args">> => #{<<"authenticated">> => Auth, <<"competing">> => Competing}}}.
hb() -> {message, #{<<"topic">> => <<"system">>, <<"hb">> => 1}}.
tick_msg(Conid) ->
    {message, #{<<"topic">> => <<"smd+", (integer_to_binary(Conid))/binary>>, <<"31">> => <<"1.0">>}}.

%% From a state that just asked for a tickle: the whole way to an open,
%% authenticated socket Conn.
connect_up(Conn, Now, St) ->
    feed([{tickle_result, {ok, #{session => ?SESSION, iserver => true}}}, {ws_opened, Conn},
          {ws_event, Conn, system()}, {ws_event, Conn, sts(true)}], Now, St).

subscribed(Topic) ->
    Sub = make_ref(),
    {A, St} = h({subscribe, Sub, self(), Topic}, 0, new()),
    {Sub, A, St}.

%%% ------------------------------------------------------------ validation

validate_test() ->
    Good = [?MD(265598, [<<"31">>, <<"84">>]), orders, trades, pnl, {account_summary, <<"U1234567">>},
            {account_ledger, <<"DU123">>}, {raw, <<"smh+1+{}">>, none, <<"smh+1">>},
            {raw, <<"sbd+1+{}">>, <<"ubd+1">>, <<"sbd+1">>}],
    [?assertEqual(ok, ?S:validate(T)) || T <- Good],
    Bad = [?MD(0, [<<"31">>]), ?MD(-1, [<<"31">>]), ?MD(1.5, [<<"31">>]), ?MD(<<"1">>, [<<"31">>]),
           ?MD(1, []), ?MD(1, [31]), ?MD(1, <<"31">>), ?MD(1, [<<"31\"]}">>]), ?MD(1, [<<"3+1">>]),
           ?MD(1, [<<>>]), ?MD(1, [<<"31">> || _ <- lists:seq(1, 257)]),
           {account_summary, <<"U1+{}">>}, {account_summary, <<"U1}">>}, {account_ledger, <<>>},
           {account_ledger, "U1"}, {raw, <<>>, none, <<"x">>}, {raw, <<"x">>, none, <<>>},
           {raw, <<255>>, none, <<"x">>}, {raw, <<"x">>, 7, <<"x">>}, {raw, <<"x">>, none},
           market_data, {orders}, "pnl"],
    [?assertEqual({error, {badarg, topic}}, ?S:validate(T)) || T <- Bad].

frames_test() ->
    F = fun(Topic) ->
                {_, St0} = subscribe_one(Topic),
                {A, _} = connect_up(3, 0, St0),
                sends(A) -- [<<"tic">>]
        end,
    ?assertEqual([<<"smd+265598+{\"fields\":[\"31\",\"84\"]}">>], F(?MD(265598, [<<"31">>, <<"84">>]))),
    ?assertEqual([<<"sor+{}">>], F(orders)),
    ?assertEqual([<<"str+{}">>], F(trades)),
    ?assertEqual([<<"spl{}">>], F(pnl)),
    ?assertEqual([<<"ssd+U1+{}">>], F({account_summary, <<"U1">>})),
    ?assertEqual([<<"sld+U1+{}">>], F({account_ledger, <<"U1">>})),
    ?assertEqual([<<"xyz">>], F({raw, <<"xyz">>, none, <<"r">>})).

subscribe_one(Topic) ->
    {_Sub, A, St} = subscribed(Topic),
    {A, St}.

%%% ----------------------------------------------------------- lifecycle

lazy_connect_then_up_test() ->
    St0 = new(),
    ?assertEqual([], ?S:ibkr_subscriptions(St0)),
    Sub = make_ref(),
    {A1, St1} = h({subscribe, Sub, self(), ?MD(1, [<<"31">>])}, 0, St0),
    ?assertEqual([{monitor, self()}, tickle, {timer, tick, 60000}], A1),
    {A2, St2} = h({tickle_result, {ok, #{session => ?SESSION, iserver => true}}}, 10, St1),
    ?assertEqual([{ws_open, #{cookie => ?SESSION}}, {timer, tick, 60000}], A2),
    {A3, St3} = h({ws_opened, 5}, 20, St2),
    ?assertEqual([{ws_send, 5, <<"tic">>}, {timer, tick, 25000}], A3),   % tic at once
    {A4, St4} = h({ws_event, 5, system()}, 30, St3),
    ?assertEqual([], sends(A4)),                                         % smd waits for sts
    {A5, St5} = h({ws_event, 5, sts(true)}, 40, St4),
    ?assertEqual([{ws_send, 5, <<"smd+1+{\"fields\":[\"31\"]}">>},
                  {deliver, self(), Sub, {status, up}}], lists:droplast(A5)),
    ?assertEqual([<<"smd+1">>], ?S:ibkr_subscriptions(St5)),
    {A6, St6} = h({ws_event, 5, tick_msg(1)}, 50, St5),
    [{_, Sub, {data, #{<<"31">> := <<"1.0">>}}}] = delivered(A6),
    #{stream_subscriptions := 1, stream_topics := 1, stream_state := up, stream_connects := 1,
      stream_delivered := 1} = ?S:stats(St6).

non_iserver_topics_go_after_system_test() ->
    {_, St0} = subscribe_one(pnl),
    {A, St} = feed([{tickle_result, {ok, #{session => ?SESSION, iserver => false}}}, {ws_opened, 2},
                    {ws_event, 2, system()}], 0, St0),
    ?assertEqual([<<"tic">>, <<"spl{}">>], sends(A)),                  % no ssodh: pnl needs none
    %% sts false does not matter to pnl
    {A2, _} = h({ws_event, 2, sts(false)}, 1, St),
    ?assertEqual([], statuses(A2)).

brokerage_session_opened_first_test() ->
    {_, St0} = subscribe_one(orders),
    {A1, St1} = h({tickle_result, {ok, #{session => ?SESSION, iserver => false}}}, 0, St0),
    ?assertEqual(ssodh_init, hd(A1)),
    {A2, St2} = h({ssodh_result, ok}, 1, St1),
    ?assertEqual(tickle, hd(A2)),
    %% still false after one try: open anyway, sts decides
    {A3, _} = h({tickle_result, {ok, #{session => ?SESSION, iserver => false}}}, 2, St2),
    ?assertEqual({ws_open, #{cookie => ?SESSION}}, hd(A3)).

iserver_topic_on_a_socket_opened_without_brokerage_reconnects_test() ->
    {_, St0} = subscribe_one(pnl),
    {_, St1} = feed([{tickle_result, {ok, #{session => ?SESSION, iserver => false}}}, {ws_opened, 2},
                     {ws_event, 2, system()}, {ws_event, 2, sts(false)}], 0, St0),
    {A, _} = h({subscribe, make_ref(), self(), orders}, 5, St1),
    ?assertMatch([{ws_close, 2} | _], A),
    ?assert(lists:member(tickle, A)),
    [{_, {down, brokerage_needed}}] = statuses(A).

%%% ------------------------------------------------------------- fan-out

fan_out_shares_one_subscription_test() ->
    Me = self(),
    Other = spawn(fun() -> receive stop -> ok end end),
    S1 = make_ref(), S2 = make_ref(), S3 = make_ref(),
    {_, St0} = h({subscribe, S1, Me, ?MD(9, [<<"31">>])}, 0, new()),
    {_, St1} = connect_up(4, 0, St0),
    {A2, St2} = h({subscribe, S2, Other, ?MD(9, [<<"31">>])}, 1, St1),
    ?assertEqual([{monitor, Other}, {deliver, Other, S2, {status, up}}], lists:droplast(A2)),
    %% more fields: the smd is sent again with the union
    {A3, St3} = h({subscribe, S3, Me, ?MD(9, [<<"84">>, <<"31">>])}, 2, St2),
    ?assertEqual([<<"smd+9+{\"fields\":[\"31\",\"84\"]}">>], sends(A3)),
    ?assertEqual([{S3, up}], statuses(A3)),
    {A4, St4} = h({ws_event, 4, tick_msg(9)}, 3, St3),
    ?assertEqual(lists:sort([S1, S2, S3]), lists:sort([S || {_, S, _} <- delivered(A4)])),
    %% leaving one by one: the umd with the last, and the socket closes
    {A5, St5} = h({unsubscribe, S1}, 4, St4),
    ?assertEqual([], sends(A5)),
    {A6, St6} = h({subscriber_down, Other}, 5, St5),
    ?assertEqual([{demonitor, Other}], lists:droplast(A6)),
    {A7, St7} = h({unsubscribe, S3}, 6, St6),
    ?assertEqual([{demonitor, Me}, {ws_send, 4, <<"umd+9+{}">>}, {ws_close, 4}, {timer, tick, infinity}], A7),
    ?assertEqual([], ?S:ibkr_subscriptions(St7)),
    #{stream_state := idle, stream_subscriptions := 0} = ?S:stats(St7),
    Other ! stop.

dead_subscriber_unsubscribed_test() ->
    Pid = spawn(fun() -> ok end),
    Sub = make_ref(),
    {_, St0} = h({subscribe, Sub, Pid, ?MD(3, [<<"31">>])}, 0, new()),
    {_, St1} = h({subscribe, make_ref(), self(), pnl}, 0, St0),
    {_, St2} = connect_up(8, 0, St1),
    {A, St3} = h({subscriber_down, Pid}, 1, St2),
    ?assertEqual([{demonitor, Pid}, {ws_send, 8, <<"umd+3+{}">>}], lists:droplast(A)),
    ?assertEqual([<<"spl">>], ?S:ibkr_subscriptions(St3)),
    %% a message for it now goes nowhere
    {A2, _} = h({ws_event, 8, tick_msg(3)}, 2, St3),
    ?assertEqual([], delivered(A2)).

raw_without_unsubscribe_frame_test() ->
    {Sub, _, St0} = subscribed({raw, <<"sbd+1+{}">>, none, <<"sbd+1">>}),
    {_, St1} = connect_up(1, 0, St0),
    {_, St1b} = h({subscribe, make_ref(), self(), pnl}, 0, St1),
    {A, _} = h({unsubscribe, Sub}, 1, St1b),
    ?assertEqual([], sends(A)).

unknown_and_duplicate_inputs_test() ->
    {Sub, _, St0} = subscribed(orders),
    ?assertEqual({[{timer, tick, 60000}], St0}, h({unsubscribe, make_ref()}, 0, St0)),
    ?assertEqual({[{timer, tick, 60000}], St0}, h({subscribe, Sub, self(), pnl}, 0, St0)),
    ?assertEqual({[{timer, tick, 60000}], St0}, h({subscribe, make_ref(), self(), bad}, 0, St0)),
    ?assertEqual({[{timer, tick, 60000}], St0}, h({ws_event, 99, tick_msg(1)}, 0, St0)).

%%% ---------------------------------------------------- keeping it alive

tic_and_dead_socket_test() ->
    {_, St0} = subscribe_one(pnl),
    {_, St1} = connect_up(6, 0, St0),
    {A1, St2} = h(tick, 20000, St1),
    ?assertEqual([], sends(A1)),
    ?assertEqual({timer, tick, 5000}, timer(A1)),                       % dead check at 25 s
    {_, St3} = h({ws_event, 6, hb()}, 24000, St2),
    {A2, St4} = h(tick, 30000, St3),
    ?assertEqual([<<"tic">>], sends(A2)),
    %% silence for 25 s: dead, down, wait about 1 s
    {A3, St5} = h(tick, 49000, St4),
    ?assertMatch([{ws_close, 6} | _], A3),
    [{_, {down, no_heartbeat}}] = statuses(A3),
    {timer, tick, Wait} = timer(A3),
    ?assert(Wait >= 1000 andalso Wait =< 1500),
    {A4, _} = h(tick, 49000 + Wait, St5),
    ?assertEqual(tickle, hd(A4)).

backoff_grows_with_jitter_and_caps_test() ->
    {_, St0} = subscribe_one(pnl),
    Waits = backoff_waits(St0, 0, 12, []),
    [W1, W2, W3 | _] = Waits,
    ?assert(W1 >= 1000 andalso W1 =< 1500),
    ?assert(W2 >= 2000 andalso W2 =< 3000),
    ?assert(W3 >= 4000 andalso W3 =< 6000),
    ?assert(lists:all(fun(W) -> W =< 60000 end, Waits)),
    ?assertEqual(60000, lists:last(Waits)),
    %% the jitter differs with the seed
    St0b = element(2, h({subscribe, make_ref(), self(), pnl}, 0, ?S:new(#{seed => {1, 1, 1}}))),
    ?assertNotEqual(Waits, backoff_waits(St0b, 0, 12, [])).

%% Every tickle fails: the successive waits.
backoff_waits(_St, _Now, 0, Acc) -> lists:reverse(Acc);
backoff_waits(St, Now, N, Acc) ->
    {A, St1} = h({tickle_result, {error, {http, 500, <<>>}}}, Now, St),
    {timer, tick, W} = timer(A),
    {A2, St2} = h(tick, Now + W, St1),
    tickle = hd(A2),
    backoff_waits(St2, Now + W, N - 1, [W | Acc]).

closed_socket_reconnects_and_resubscribes_test() ->
    {Sub, _, St0} = subscribed(?MD(1, [<<"31">>])),
    {_, St1} = connect_up(1, 0, St0),
    {A1, St2} = h({ws_event, 1, {closed, {close, 1001, <<"bye">>}}}, 100, St1),
    ?assertEqual([{Sub, {down, {closed, {close, 1001, <<"bye">>}}}}], statuses(A1)),
    ?assertNot(lists:keymember(ws_close, 1, A1)),                       % already closed
    ?assertEqual([], ?S:ibkr_subscriptions(St2)),
    %% a late event of the old socket is ignored
    {A1b, _} = h({ws_event, 1, tick_msg(1)}, 101, St2),
    ?assertEqual([], delivered(A1b)),
    {timer, tick, W} = timer(A1),
    {[tickle | _], St3} = h(tick, 100 + W, St2),
    {A2, _} = connect_up(2, 100 + W, St3),
    ?assertEqual([<<"tic">>, <<"smd+1+{\"fields\":[\"31\"]}">>], sends(A2)),
    ?assertEqual([{Sub, up}], statuses(A2)).

watchdog_good_tickle_connects_at_once_test() ->
    {_, St0} = subscribe_one(pnl),
    {_, St1} = h({tickle_result, {error, timeout}}, 0, St0),         % waiting ~1 s
    {A, _} = h({tickle_result, {ok, #{session => <<"s2">>, iserver => true}}}, 10, St1),
    ?assertEqual({ws_open, #{cookie => <<"s2">>}}, hd(A)).

session_change_reconnects_test() ->
    {Sub, _, St0} = subscribed(pnl),
    {_, St1} = connect_up(1, 0, St0),
    {A0, _} = h({tickle_result, {ok, #{session => ?SESSION, iserver => true}}}, 5, St1),
    ?assertEqual([{timer, tick, 25000 - 5}], A0),                       % same session: nothing
    {A1, _} = h({tickle_result, {ok, #{session => <<"rotated">>, iserver => true}}}, 5, St1),
    ?assertEqual([{ws_close, 1}], [X || X = {ws_close, _} <- A1]),
    ?assertEqual([{Sub, {down, session_changed}}], statuses(A1)),
    ?assert(lists:member(tickle, A1)).

lst_renewal_and_port_down_reconnect_at_once_test() ->
    {Sub, _, St0} = subscribed(pnl),
    {_, St1} = connect_up(1, 0, St0),
    {A1, St2} = h(lst_renewed, 5, St1),
    ?assertEqual([{Sub, {down, lst_renewed}}], statuses(A1)),
    ?assertMatch([{ws_close, 1} | _], A1),
    ?assertEqual(tickle, lists:nth(length(A1) - 1, A1)),
    {_, St3} = connect_up(2, 6, St2),
    {A2, _} = h(port_down, 7, St3),
    ?assertNot(lists:keymember(ws_close, 1, A2)),                       % the port is gone
    ?assertEqual([{Sub, {down, port_down}}], statuses(A2)),
    ?assert(lists:member(tickle, A2)).

sts_lost_reconnects_when_needed_test() ->
    {Sub, _, St0} = subscribed(orders),
    {_, St1} = connect_up(1, 0, St0),
    {A, _} = h({ws_event, 1, sts(true, true)}, 5, St1),
    ?assertEqual([{Sub, {down, {sts, competing}}}], statuses(A)),
    {A2, _} = h({ws_event, 1, sts(false)}, 5, St1),
    ?assertEqual([{Sub, {down, {sts, not_authenticated}}}], statuses(A2)).

smd_refresh_test() ->
    {_, St0} = subscribe_one(?MD(1, [<<"31">>])),
    {_, St1} = h({subscribe, make_ref(), self(), pnl}, 0, St0),
    {_, St2} = connect_up(1, 0, St1),
    %% keep the socket alive with hb and tics up to the refresh
    St3 = keep_alive(St2, 1, 20000, 540000),
    {A, St4} = h(tick, 540000, St3),
    ?assertEqual([<<"smd+1+{\"fields\":[\"31\"]}">>], sends(A) -- [<<"tic">>]),   % not spl
    ?assertEqual([], statuses(A)),
    #{stream_smd_refreshes := 1} = ?S:stats(St4).

keep_alive(St, _Conn, T, Until) when T >= Until -> St;
keep_alive(St, Conn, T, Until) ->
    {_, St1} = h({ws_event, Conn, hb()}, T, St),
    {_, St2} = h(tick, T, St1),
    keep_alive(St2, Conn, T + 20000, Until).

step_timeout_and_late_open_test() ->
    {_, St0} = subscribe_one(pnl),
    {A, St1} = h(tick, 60000, St0),                                      % the tickle never came back
    ?assertMatch([{log, warning, stream_reconnect_wait, #{reason := {step_timeout, tickling}}} | _], A),
    {A2, _} = h({ws_opened, 77}, 60001, St1),
    ?assertEqual([{ws_close, 77}], lists:droplast(A2)).

open_failure_backs_off_test() ->
    {_, St0} = subscribe_one(pnl),
    {_, St1} = h({tickle_result, {ok, #{session => ?SESSION, iserver => true}}}, 0, St0),
    {A, _} = h({ws_open_failed, {http, 401, <<>>}}, 1, St1),
    ?assertMatch([{log, warning, stream_reconnect_wait, #{reason := {open_failed, {http, 401, <<>>}}}},
                  {timer, tick, _}], A).

stop_tells_subscribers_test() ->
    {Sub, _, St0} = subscribed(pnl),
    Waiting = make_ref(),
    {_, St1} = h({subscribe, Waiting, self(), orders}, 0, St0),
    {_, St2} = feed([{tickle_result, {ok, #{session => ?SESSION, iserver => false}}},
                     {ssodh_result, {error, {http, 500}}},
                     {tickle_result, {ok, #{session => ?SESSION, iserver => false}}},
                     {ws_opened, 1}, {ws_event, 1, system()}], 0, St1),
    {A, St3} = h(stop, 1, St2),
    %% orders never came up (no sts): only pnl hears of it
    ?assertEqual([{deliver, self(), Sub, {status, {down, session_stopped}}}], lists:droplast(A)),
    #{stream_state := idle} = ?S:stats(St3).

tickle_while_open_test() ->
    {_, St0} = subscribe_one(pnl),
    {_, St1} = connect_up(1, 0, St0),
    St2 = keep_alive(St1, 1, 20000, 60000),
    {A1, St3} = h(tick, 60000, St2),
    ?assert(lists:member(tickle, A1)),
    %% answered: the next one a minute later; failed: 5 s later
    {_, St4} = h({tickle_result, {ok, #{session => ?SESSION, iserver => true}}}, 60010, St3),
    {A2, _} = h(tick, 61000, h_hb(St4, 61000)),
    ?assertNot(lists:member(tickle, A2)),
    {_, St5} = h({tickle_result, {error, timeout}}, 60010, St3),
    {A3, _} = h(tick, 65010, h_hb(St5, 65010)),
    ?assert(lists:member(tickle, A3)),
    %% the session's own tickles count too
    {_, St6} = h({tickle_result, {ok, #{session => ?SESSION, iserver => true}}}, 50000, St2),
    {A4, _} = h(tick, 60000, St6),
    ?assertNot(lists:member(tickle, A4)).

h_hb(St, T) -> element(2, h({ws_event, 1, hb()}, T, St)).
