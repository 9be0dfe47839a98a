%% Streaming end to end: ibkr_oauth:subscribe/3 through the session, the
%% port's websocket client and the fake IBKR websocket (ibkr_fake_ws), which
%% is strict about the access token, the tickle session cookie and tic.
%% Each recovery case logs the time from the fault to the first data
%% message after it ("recovered in N ms"); no case bounds it.
-module(stream_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([market_data_ticks/1, other_streams/1, bad_topics/1,
         dropped_socket/1, rotated_session/1, smd_expiry_refreshed/1, lst_renewal/1,
         port_killed/1, brokerage_session_lost/1, slow_subscriber/1,
         dead_subscriber_unsubscribed/1, fan_out_shares_one_subscription/1,
         unsubscribe_closes_socket/1, stop_tells_subscribers/1, smd_expiry_is_silent/1,
         reconnect_through_refusals/1, tickle_reports_new_session/1]).

-define(F, ibkr_fake_server).
-define(W, ibkr_fake_ws).
-define(CONID, 265598).
-define(MD, {market_data, ?CONID, [<<"31">>, <<"84">>]}).
-define(ROUTE, <<"smd+265598">>).
%% Hang guard only (a broken stream fails here instead of at the timetrap).
-define(WAIT, 60000).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [market_data_ticks, other_streams, bad_topics, dropped_socket, rotated_session,
     smd_expiry_refreshed, lst_renewal, port_killed, brokerage_session_lost, slow_subscriber,
     dead_subscriber_unsubscribed, fan_out_shares_one_subscription, unsubscribe_closes_socket,
     stop_tells_subscribers, smd_expiry_is_silent, reconnect_through_refusals,
     tickle_reports_new_session].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) ->
    {ok, Info = #{config := Client}} =
        ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config),
                                        ws => maps:merge(#{hb_ms => 1000, smd_rate_ms => 100},
                                                         fake_ws_options(Case))}),
    {ok, S} = ibkr_oauth:start_link(maps:merge(Client, session_options(Case))),
    [{session, S}, {fake, Info} | Config].

end_per_testcase(_Case, Config) ->
    S = ?config(session, Config),
    unlink(S),
    _ = (catch ibkr_oauth:stop(S)),
    ?F:stop().

fake_ws_options(smd_expiry_refreshed) -> #{smd_expiry_ms => 2000};
fake_ws_options(smd_expiry_is_silent) -> #{smd_expiry_ms => 1500};
fake_ws_options(_) -> #{}.

session_options(smd_expiry_refreshed) -> #{smd_refresh_interval => 700};
session_options(brokerage_session_lost) -> #{brokerage_session => true};
%% renew 1 s before expiry (a short LST is refused when it would not outlive
%% the margin)
session_options(lst_renewal) -> #{refresh_margin => 1};
session_options(tickle_reports_new_session) -> #{tickle_interval => 300};
session_options(_) -> #{}.

%%% ----------------------------------------------------------------- cases

market_data_ticks(Config) ->
    S = ?config(session, Config),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    ?assert(is_reference(Sub)),
    up = status(Sub),
    Ticks = [data(Sub) || _ <- lists:seq(1, 5)],
    [?assertMatch(#{<<"topic">> := ?ROUTE, <<"conid">> := ?CONID, <<"31">> := <<_/binary>>,
                    <<"84">> := <<_/binary>>, <<"_updated">> := U} when is_integer(U), T)
     || T <- Ticks],
    %% the fake server saw one subscription, with the access token, the
    %% tickle session and the brokerage session opened by the stream itself
    #{subscribes := #{?ROUTE := 1}, connections := 1, tics := Tics} = ?W:stats(),
    ?assert(Tics >= 1),
    #{ssodh_inits := 1} = ?F:stats(),
    #{stream_state := up, stream_subscriptions := 1, stream_topics := 1, stream_connects := 1,
      stream_delivered := Delivered} = ibkr_oauth:stats(S),
    ?assert(Delivered >= 5),
    ok = ibkr_oauth:unsubscribe(S, Sub).

other_streams(Config) ->
    S = ?config(session, Config),
    Topics = [{orders, <<"sor">>}, {trades, <<"str">>}, {pnl, <<"spl">>},
              {{account_summary, <<"U1234567">>}, <<"ssd+U1234567">>},
              {{account_ledger, <<"U1234567">>}, <<"sld+U1234567">>},
              {{raw, <<"smd+8314+{\"fields\":[\"31\"]}">>, <<"umd+8314+{}">>, <<"smd+8314">>},
               <<"smd+8314">>}],
    [begin
         {ok, Sub} = ibkr_oauth:subscribe(S, Topic),
         up = status(Sub),
         #{<<"topic">> := Route} = data(Sub)
     end || {Topic, Route} <- Topics],
    #{subscribes := Subs} = ?W:stats(),
    ?assertEqual(lists:sort([R || {_, R} <- Topics]), lists:sort(maps:keys(Subs))),
    %% one socket for all of them
    #{connections := 1} = ?W:stats().

bad_topics(Config) ->
    S = ?config(session, Config),
    Bad = [{market_data, 0, [<<"31">>]}, {market_data, ?CONID, []},
           {market_data, ?CONID, [<<"31\"]},{\"x\":[\"1">>]},
           {account_summary, <<"U1+{}">>}, {raw, <<>>, none, <<"x">>}, nonsense],
    [?assertEqual({error, {badarg, topic}}, ibkr_oauth:subscribe(S, T)) || T <- Bad],
    ?assertEqual({error, {badarg, to}}, ibkr_oauth:subscribe(S, pnl, #{to => self_name})),
    ?assertEqual({error, {badarg, opts}}, ibkr_oauth:subscribe(S, pnl, [])),
    ?assertEqual({error, {badarg, sub}}, ibkr_oauth:unsubscribe(S, 42)),
    ?assertEqual(ok, ibkr_oauth:unsubscribe(S, make_ref())),
    ?assertEqual({error, {badarg, server}}, ibkr_oauth:subscribe("no", pnl)),
    %% nothing reached IBKR, no socket was opened
    #{connections := 0} = ?W:stats(),
    #{stream_state := idle} = ibkr_oauth:stats(S).

dropped_socket(Config) ->
    recovers(Config, "dropped socket", fun() -> 1 = ?W:drop_all() end),
    #{connections := 2, subscribes := #{?ROUTE := 2}} = ?W:stats().

rotated_session(Config) ->
    %% the old sockets go and the old cookie is refused: only a fresh tickle
    %% gets the stream back
    recovers(Config, "rotated session cookie", fun() -> _ = ?W:rotate_session() end),
    #{rejected := Rejected} = ?W:stats(),
    ?assertEqual(0, maps:get(<<"bad session cookie">>, Rejected, 0)).

smd_expiry_refreshed(Config) ->
    %% the fake server ends an smd 2 s after its last request; the session
    %% sends it again every 0.7 s: the ticks never stop
    S = ?config(session, Config),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    up = status(Sub),
    T0 = now_ms(),
    Ticks = collect(Sub, 7000),
    Gaps = gaps([T0 | [At || {At, _} <- Ticks]]),
    ct:log("~b ticks in 7 s, longest gap ~b ms", [length(Ticks), lists:max(Gaps)]),
    ?assertEqual([], [M || {_, M = {status, _}} <- Ticks]),
    #{smd_expired := 0, subscribes := #{?ROUTE := N}} = ?W:stats(),
    ?assert(N >= 5),
    %% ticks arrived in the last second of the 7 (the smd outlived 2 s)
    ?assert(lists:any(fun({At, _}) -> At >= T0 + 6000 end, Ticks)),
    #{stream_smd_refreshes := R} = ibkr_oauth:stats(S),
    ?assert(R >= 4).

lst_renewal(Config) ->
    %% the first LST lives 4 s: the session renews it 1 s before it expires,
    %% and the stream reconnects with the new session's cookie
    S = ?config(session, Config),
    ok = ?F:set_fault({expire_lst_in_ms, 4000}),
    {ok, _} = ibkr_oauth:authenticate(S),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    up = status(Sub),
    _ = data(Sub),
    #{handshakes := 1} = ?F:stats(),
    {down, lst_renewed} = status(Sub),
    T0 = now_ms(),
    #{handshakes := 2} = ?F:stats(),
    up = status(Sub),
    _ = data(Sub),
    ct:log("LST renewal: recovered in ~b ms", [now_ms() - T0]),
    #{connections := 2} = ?W:stats().

port_killed(Config) ->
    S = ?config(session, Config),
    recovers(Config, "port SIGKILL",
             fun() ->
                     OsPid = ibkr_oauth:os_pid(S),
                     _ = os:cmd("kill -9 " ++ integer_to_list(OsPid))
             end),
    #{port_restarts := 1} = ibkr_oauth:stats(S).

brokerage_session_lost(Config) ->
    %% sts authenticated:false for an smd stream: reconnect (ssodh/init again)
    recovers(Config, "sts authenticated:false", fun() -> 1 = ?W:send_sts(false, false) end).

slow_subscriber(Config) ->
    %% one subscriber does not read its mailbox for 3 s; the other keeps
    %% getting ticks meanwhile, the session stays responsive, and the slow
    %% one then finds every tick in order
    S = ?config(session, Config),
    Self = self(),
    Slow = spawn_link(fun() ->
                              {ok, Sub} = ibkr_oauth:subscribe(S, {market_data, 8314, [<<"31">>]}),
                              Self ! {slow_subscribed, Sub},
                              receive go -> ok end,
                              timer:sleep(3000),
                              Self ! {slow_read, drain(Sub, [])}
                      end),
    SlowSub = receive {slow_subscribed, X} -> X after ?WAIT -> error(no_slow) end,
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    up = status(Sub),
    Slow ! go,
    T0 = now_ms(),
    Fast = collect(Sub, 2500),
    ?assert(length(Fast) >= 5),
    #{stream_state := up} = ibkr_oauth:stats(S),
    {Read, Waited} = receive {slow_read, R} -> {R, now_ms() - T0} after ?WAIT -> error(no_read) end,
    Data = [M || {data, M} <- Read],
    ct:log("fast subscriber: ~b ticks in 2.5 s; slow one read ~b messages after ~b ms",
           [length(Fast), length(Read), Waited]),
    ?assertEqual([{status, up}], [M || M = {status, _} <- Read]),
    ?assert(length(Data) >= 10),
    Updated = [U || #{<<"_updated">> := U} <- Data],
    ?assertEqual(lists:sort(Updated), Updated),
    _ = SlowSub,
    unlink(Slow).

dead_subscriber_unsubscribed(Config) ->
    S = ?config(session, Config),
    Self = self(),
    Pid = spawn(fun() -> receive stop -> ok end end),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD, #{to => Pid}),
    {ok, Mine} = ibkr_oauth:subscribe(S, pnl),
    up = status(Mine),
    ok = wait_until(fun() -> maps:is_key(?ROUTE, maps:get(subscribes, ?W:stats())) end),
    Pid ! stop,
    ok = wait_until(fun() -> maps:get(?ROUTE, maps:get(unsubscribes, ?W:stats()), 0) =:= 1 end),
    [#{smd := []}] = ?W:subscriptions(),
    #{stream_subscriptions := 1, stream_topics := 1} = ibkr_oauth:stats(S),
    _ = {Sub, Self}.

fan_out_shares_one_subscription(Config) ->
    S = ?config(session, Config),
    Self = self(),
    Other = spawn_link(fun() -> relay(Self) end),
    {ok, A} = ibkr_oauth:subscribe(S, ?MD),
    {ok, B} = ibkr_oauth:subscribe(S, ?MD, #{to => Other}),
    up = status(A),
    up = status(B),
    TicksA = [data(A) || _ <- lists:seq(1, 5)],
    TicksB = [data(B) || _ <- lists:seq(1, 5)],
    %% the same frames (the fake numbers its ticks: equal _updated + price pairs)
    ?assertNotEqual([], [T || T <- TicksA, lists:member(T, TicksB)] ++
                        [T || T <- TicksB, lists:member(T, TicksA)]),
    #{subscribes := #{?ROUTE := 1}} = ?W:stats(),
    #{stream_subscriptions := 2, stream_topics := 1} = ibkr_oauth:stats(S),
    ok = ibkr_oauth:unsubscribe(S, A),
    _ = data(B),
    #{unsubscribes := U} = ?W:stats(),
    ?assertEqual(0, maps:get(?ROUTE, U, 0)),
    unlink(Other),
    exit(Other, kill),
    ok = wait_until(fun() -> maps:get(?ROUTE, maps:get(unsubscribes, ?W:stats()), 0) =:= 1 end).

unsubscribe_closes_socket(Config) ->
    S = ?config(session, Config),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    up = status(Sub),
    _ = data(Sub),
    ok = ibkr_oauth:unsubscribe(S, Sub),
    ok = wait_until(fun() -> maps:get(open, ?W:stats()) =:= 0 end),
    #{unsubscribes := #{?ROUTE := 1}} = ?W:stats(),
    #{stream_state := idle, stream_subscriptions := 0} = ibkr_oauth:stats(S),
    %% nothing arrives for it afterwards
    receive {ibkr_oauth, Sub, M} -> error({after_unsubscribe, M})
    after 500 -> ok
    end.

%% The control for smd_expiry_refreshed: without a refresh in time the
%% fake's smd ends after 1.5 s, silently (no status, no close), as IBKR's.
smd_expiry_is_silent(Config) ->
    S = ?config(session, Config),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    up = status(Sub),
    ok = wait_until(fun() -> maps:get(smd_expired, ?W:stats()) =:= 1 end),
    _ = drain(Sub, []),
    ?assertEqual([], collect(Sub, 1500)),
    #{stream_state := up} = ibkr_oauth:stats(S).

%% The server answers 503 to the next two requests (the tickles before the upgrade):
%% the stream backs off and retries until it is back.
reconnect_through_refusals(Config) ->
    recovers(Config, "socket dropped, then two refusals",
             fun() ->
                     ok = ?F:set_fault({status, 503, 2}),
                     1 = ?W:drop_all()
             end),
    #{statuses := #{503 := 2}} = ?F:stats(),
    #{connections := 2} = ?W:stats().

%% The session changes while the socket stays open: the session's next
%% periodic tickle reports it, and the stream moves to a socket with the new
%% cookie (the old one would not survive at IBKR).
tickle_reports_new_session(Config) ->
    recovers(Config, "tickle reports a new session", fun() -> _ = ?W:rotate_session(keep) end),
    [#{session := Session}] = ?W:subscriptions(),
    #{connections := 2} = ?W:stats(),
    {ok, #{status := 200, body := Body}} =
        ibkr_oauth:request(?config(session, Config), post, <<"/tickle">>, #{}),
    ?assertMatch({match, _}, re:run(Body, Session)).

stop_tells_subscribers(Config) ->
    S = ?config(session, Config),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    up = status(Sub),
    unlink(S),
    ok = ibkr_oauth:stop(S),
    {down, session_stopped} = status(Sub).

%%% ---------------------------------------------------------------- helpers

%% Subscribed and receiving; Fault(); then down, up and data again. Logs
%% the time from the fault to that data.
recovers(Config, What, Fault) ->
    S = ?config(session, Config),
    {ok, Sub} = ibkr_oauth:subscribe(S, ?MD),
    up = status(Sub),
    _ = data(Sub),
    T0 = now_ms(),
    Fault(),
    {down, Reason} = status(Sub),
    up = status(Sub),
    #{<<"conid">> := ?CONID} = data(Sub),
    ct:log("~s: down (~0p), recovered in ~b ms", [What, Reason, now_ms() - T0]),
    Sub.

%% The next status of Sub, skipping data.
status(Sub) ->
    receive
        {ibkr_oauth, Sub, {status, St}} -> St;
        {ibkr_oauth, Sub, {data, _}} -> status(Sub)
    after ?WAIT -> error({no_status, Sub})
    end.

%% The next data of Sub; a status first is an error.
data(Sub) ->
    receive
        {ibkr_oauth, Sub, {data, M}} -> M;
        {ibkr_oauth, Sub, {status, St}} -> error({unexpected_status, St})
    after ?WAIT -> error({no_data, Sub})
    end.

%% Everything for Sub during Ms: [{ReceivedAtMs, Msg}].
collect(Sub, Ms) ->
    Until = now_ms() + Ms,
    collect(Sub, Until, []).

collect(Sub, Until, Acc) ->
    receive
        {ibkr_oauth, Sub, {data, _} = M} -> collect(Sub, Until, [{now_ms(), M} | Acc]);
        {ibkr_oauth, Sub, {status, _} = M} -> collect(Sub, Until, [{now_ms(), M} | Acc])
    after max(0, Until - now_ms()) -> lists:reverse(Acc)
    end.

drain(Sub, Acc) ->
    receive {ibkr_oauth, Sub, M} -> drain(Sub, [M | Acc])
    after 0 -> lists:reverse(Acc)
    end.

gaps([_]) -> [0];
gaps([A, B | Rest]) -> [B - A | gaps([B | Rest])].

%% Forwards what it gets to Parent, as if Parent were subscribed.
relay(Parent) ->
    receive M -> Parent ! M, relay(Parent) end.

wait_until(F) -> wait_until(F, 1200).
wait_until(_F, 0) -> timeout;
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(50), wait_until(F, N - 1)
    end.

now_ms() -> erlang:monotonic_time(millisecond).
