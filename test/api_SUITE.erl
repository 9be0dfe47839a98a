%% ibkr_oauth_api against the fake IBKR server (ibkr_fake_api endpoints):
%% paging, preflights, snapshot fields / ask-again / batches within the rate
%% limit, the order confirmation loop (confirmed, refused, bounded), modify,
%% cancel, live orders with filters and force, trades, history, errors.
-module(api_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([accounts_and_summary/1, positions_all_pages/1, positions_full_last_page/1,
         portfolio_preflight_required/1, search_and_contract/1,
         snapshot_named_fields/1, snapshot_needs_preflight/1, snapshot_tries_bounded/1,
         snapshot_batches/1, snapshot_within_rate_limit/1, snapshot_bad_input/1,
         history_bars/1,
         order_confirmed_rounds/1, order_unlisted_question_refused/1,
         order_nothing_confirmed_by_default/1, order_rounds_bounded/1,
         order_without_question/1, order_bad_input/1, order_rejected/1,
         modify_and_cancel/1, live_orders_filters_and_force/1, trades/1,
         errors_as_request/1]).

-define(F, ibkr_fake_server).
-define(A, ibkr_fake_api).
-define(API, ibkr_oauth_api).
-define(ACCT, <<"U1234567">>).
-define(AAPL, 265598).
-define(IBM, 8314).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [accounts_and_summary, positions_all_pages, positions_full_last_page,
     portfolio_preflight_required, search_and_contract,
     snapshot_named_fields, snapshot_needs_preflight, snapshot_tries_bounded,
     snapshot_batches, snapshot_within_rate_limit, snapshot_bad_input,
     history_bars,
     order_confirmed_rounds, order_unlisted_question_refused,
     order_nothing_confirmed_by_default, order_rounds_bounded,
     order_without_question, order_bad_input, order_rejected,
     modify_and_cancel, live_orders_filters_and_force, trades,
     errors_as_request].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) ->
    {ok, #{config := Client}} = ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    Extra = case Case of
                %% IBKR's own limits (10/s for snapshots); the others run without
                snapshot_within_rate_limit -> #{rate_limit => ibkr_oauth_ratelimit:default_spec()};
                _ -> #{}
            end,
    {ok, S} = ibkr_oauth:start_link(maps:merge(Client#{brokerage_session => true}, Extra)),
    unlink(S),
    {ok, _} = ibkr_oauth:authenticate(S),
    ok = ?F:reset_stats(),
    [{session, S} | Config].

end_per_testcase(_Case, Config) ->
    _ = (catch ibkr_oauth:stop(?config(session, Config))),
    ?F:stop().

%%% ----------------------------------------------------------- portfolio

accounts_and_summary(Config) ->
    S = ?config(session, Config),
    {ok, Accounts} = ?API:accounts(S),
    ?assertEqual([<<"U1234567">>, <<"U7654321">>], [maps:get(<<"accountId">>, A) || A <- Accounts]),
    {ok, #{<<"netliquidation">> := #{<<"amount">> := 100000.5, <<"currency">> := <<"USD">>}}} =
        ?API:account_summary(S, ?ACCT),
    ?assertMatch({error, {http, 404, _}}, ?API:account_summary(S, <<"U0000000">>)).

%% 250 positions: pages 0, 1 (full, 100 each) and 2 (50), after /portfolio/accounts.
positions_all_pages(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{positions => 250}),
    {ok, Positions} = ?API:positions(S, ?ACCT),
    ?assertEqual([100000 + I || I <- lists:seq(1, 250)], [maps:get(<<"conid">>, P) || P <- Positions]),
    ?assertEqual([<<"/portfolio/accounts">>, <<"/portfolio/U1234567/positions/0">>,
                  <<"/portfolio/U1234567/positions/1">>, <<"/portfolio/U1234567/positions/2">>],
                 paths()).

%% 200 positions: the second page is full, so page 2 (empty) is asked too.
positions_full_last_page(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{positions => 200}),
    {ok, Positions} = ?API:positions(S, ?ACCT, #{preflight => true}),
    ?assertEqual(200, length(Positions)),
    ?assertEqual(4, length(paths())),
    ok = ?A:configure(#{positions => 0}),
    ?assertEqual({ok, []}, ?API:positions(S, ?ACCT, #{preflight => false})).

%% IBKR wants /portfolio/accounts before other /portfolio calls: without the
%% preflight the fake refuses, as a session that never sent it would be.
portfolio_preflight_required(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{positions => 3}),
    ?assertMatch({error, {http, 400, _}}, ?API:positions(S, ?ACCT, #{preflight => false})),
    ?assertMatch({error, {http, 400, _}}, ?API:account_summary(S, ?ACCT, #{preflight => false})),
    {ok, [_, _, _]} = ?API:positions(S, ?ACCT),
    %% once sent in this session, it can be skipped
    {ok, [_, _, _]} = ?API:positions(S, ?ACCT, #{preflight => false}),
    {ok, #{}} = ?API:account_summary(S, ?ACCT, #{preflight => false}),
    ?assertEqual(1, maps:get(portfolio_accounts, ?A:state())).

search_and_contract(Config) ->
    S = ?config(session, Config),
    {ok, [#{<<"conid">> := ?AAPL, <<"symbol">> := <<"AAPL">>}]} = ?API:search(S, <<"AAPL">>),
    {ok, [#{<<"symbol">> := <<"A B&C">>}]} = ?API:search(S, <<"A B&C">>, #{sec_type => <<"STK">>}),
    {ok, #{<<"con_id">> := ?AAPL, <<"currency">> := <<"USD">>}} = ?API:contract(S, ?AAPL),
    ?assertMatch({error, {http, 400, _}}, ?API:contract(S, 1)),
    ?assertEqual({error, {badarg, conid}}, ?API:contract(S, 0)),
    ?assertEqual({error, {badarg, symbol}}, ?API:search(S, <<>>)).

%%% ----------------------------------------------------------- market data

%% Names both ways, conversions where unambiguous, the preflight before the
%% first snapshot and the first (empty) answer asked again once.
snapshot_named_fields(Config) ->
    S = ?config(session, Config),
    Fields = [last, bid, ask, bid_size, ask_size, volume, high, low, change, change_pct,
              open, close, market_cap, <<"7762">>, <<"7999">>],
    {ok, #{?AAPL := Aapl, ?IBM := Ibm} = All} = ?API:snapshot(S, [?AAPL, ?IBM, ?AAPL], Fields),
    ?assertEqual(2, map_size(All)),
    ?assertMatch(#{last := 187.5, bid := 187.49, ask := 187.51, bid_size := 1200, ask_size := 300,
                   volume := <<"52.3M">>, high := 189.0, low := 185.25, change := 1.25,
                   change_pct := 0.67, open := 186.1, market_cap := <<"2.9T">>,
                   volume_long := 52312345, market_data_availability := <<"RpB">>,
                   <<"7999">> := <<"12.5">>}, Aapl),
    ?assertNot(is_map_key(close, Aapl)),
    %% "C" prefix: the previous close, kept as IBKR sent it
    ?assertMatch(#{last := <<"C141.25">>, close := 141.25, change := -0.75}, Ibm),
    %% /iserver/accounts first, then the snapshot twice (the first starts the feeds)
    ?assertEqual([<<"/iserver/accounts">>, <<"/iserver/marketdata/snapshot">>,
                  <<"/iserver/marketdata/snapshot">>], paths()),
    ?assertEqual([2, 2], maps:get(snapshot_requests, ?A:state())).

%% Without /iserver/accounts in the brokerage session the feed never starts.
snapshot_needs_preflight(Config) ->
    S = ?config(session, Config),
    Opts = #{preflight => false, max_tries => 3, retry_ms => 10},
    ?assertEqual({ok, #{?AAPL => #{}}}, ?API:snapshot(S, [?AAPL], [last], Opts)),
    ?assertEqual([1, 1, 1], maps:get(snapshot_requests, ?A:state())),
    {ok, #{?AAPL := #{last := 187.5}}} = ?API:snapshot(S, [?AAPL], [last], Opts#{preflight => true}).

%% A feed that stays empty: max_tries requests, then the conid maps to #{}.
snapshot_tries_bounded(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{snapshot_empty_rounds => 100}),
    ?assertEqual({ok, #{?AAPL => #{}}}, ?API:snapshot(S, [?AAPL], [last], #{max_tries => 4, retry_ms => 0})),
    ?assertEqual(4, length(maps:get(snapshot_requests, ?A:state()))),
    %% ready conids are not asked again: only the empty one
    ok = ?A:configure(#{snapshot_empty_rounds => 2}),
    {ok, #{?IBM := #{bid := 141.2}, ?AAPL := #{bid := 187.49}}} =
        ?API:snapshot(S, [?IBM, ?AAPL], [bid], #{retry_ms => 0}),
    %% AAPL's feed counted 4 requests already, IBM needs 2 empty answers
    ?assertMatch([1, 1, 2 | _], maps:get(snapshot_requests, ?A:state())).

%% 250 conids: batches of 100, 100 and 50, each asked twice.
snapshot_batches(Config) ->
    S = ?config(session, Config),
    Conids = [100000 + I || I <- lists:seq(1, 250)],
    {ok, Got} = ?API:snapshot(S, Conids, [last, bid], #{retry_ms => 0}),
    ?assertEqual(Conids, lists:sort(maps:keys(Got))),
    [?assertEqual(#{last => float(C rem 1000), bid => 1.0}, maps:without([market_data_availability, marker], V))
     || {C, V} <- maps:to_list(Got)],
    ?assertEqual([50, 50, 100, 100, 100, 100], maps:get(snapshot_requests, ?A:state())).

%% With IBKR's limits (10 snapshot requests per second) the server never
%% sees more than 10 in any second, however many batches there are.
snapshot_within_rate_limit(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{snapshot_empty_rounds => 0}),
    Conids = [100000 + I || I <- lists:seq(1, 15)],
    {ok, Got} = ?API:snapshot(S, Conids, [last], #{batch => 1}),
    ?assertEqual(15, map_size(Got)),
    Times = lists:sort([At || #{path := <<"/iserver/marketdata/snapshot">>, at := At}
                                  <- maps:get(log, ?F:stats())]),
    ?assertEqual(15, length(Times)),
    ct:pal("15 snapshot requests (batch => 1) arrived over ~.1f ms", [(lists:last(Times) - hd(Times)) / 1000]),
    %% any 11 consecutive arrivals span at least a second
    [?assert(lists:nth(I + 10, Times) - lists:nth(I, Times) >= 1000000) || I <- lists:seq(1, 5)].

snapshot_bad_input(Config) ->
    S = ?config(session, Config),
    ?assertEqual({error, {badarg, conids}}, ?API:snapshot(S, [], [last])),
    ?assertEqual({error, {badarg, conids}}, ?API:snapshot(S, [0], [last])),
    ?assertEqual({error, {badarg, conids}}, ?API:snapshot(S, [1 | 2], [last])),
    ?assertEqual({error, {badarg, fields}}, ?API:snapshot(S, [1], [])),
    ?assertEqual({error, {badarg, {field, no_such}}}, ?API:snapshot(S, [1], [last, no_such])),
    ?assertEqual({error, {badarg, {field, <<"31,84">>}}}, ?API:snapshot(S, [1], [<<"31,84">>])),
    ?assertEqual({error, {badarg, max_tries}}, ?API:snapshot(S, [1], [last], #{max_tries => 0})),
    ?assertEqual([], paths()).

history_bars(Config) ->
    S = ?config(session, Config),
    {ok, #{<<"data">> := Bars, <<"timePeriod">> := <<"1d">>, <<"outsideRth">> := true}} =
        ?API:history(S, ?AAPL, #{period => <<"1d">>, bar => <<"1min">>, outside_rth => true}),
    ?assertEqual(3, length(Bars)),
    [?assertMatch(#{<<"o">> := _, <<"h">> := _, <<"l">> := _, <<"c">> := _, <<"t">> := _}, B) || B <- Bars],
    ?assertEqual({error, {badarg, bar}}, ?API:history(S, ?AAPL, #{period => <<"1d">>})),
    ?assertEqual({error, {badarg, period}}, ?API:history(S, ?AAPL, #{})),
    ?assertEqual({error, {badarg, opts}}, ?API:history(S, ?AAPL, [])),
    ?assertEqual({error, {badarg, period}}, ?API:history(S, ?AAPL, #{period => 1, bar => <<"1h">>})),
    ?assertEqual({error, {badarg, conid}}, ?API:history(S, -1, #{period => <<"1d">>, bar => <<"1h">>})).

%%% ---------------------------------------------------------------- orders

order() ->
    #{conid => ?AAPL, orderType => <<"LMT">>, price => 150.0, side => <<"BUY">>,
      quantity => 10, tif => <<"DAY">>}.

%% Two rounds of questions, both listed: confirmed in turn, then placed.
order_confirmed_rounds(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => [[<<"o354">>], [<<"o163">>, <<"o451">>]]}),
    Self = self(),
    Opts = #{confirm => [<<"o451">>, <<"o354">>, <<"o163">>],
             on_confirm => fun(Q) -> Self ! {confirmed, maps:get(<<"messageIds">>, Q)} end},
    {ok, [#{<<"order_id">> := Id, <<"order_status">> := <<"Submitted">>}]} =
        ?API:place_order(S, ?ACCT, [order()], Opts),
    ?assertEqual([[<<"o354">>], [<<"o163">>, <<"o451">>]], [receive {confirmed, M} -> M after 0 -> none end
                                                           || _ <- [1, 2]]),
    #{replies := Replies, pending := Pending} = ?A:state(),
    ?assertEqual([true, true], [C || {_, C} <- Replies]),
    ?assertEqual(#{}, Pending),
    {ok, [#{<<"order_id">> := Id, <<"status">> := <<"Submitted">>, <<"conid">> := ?AAPL}]} =
        ?API:live_orders(S).

%% The second question is not in confirm: it is refused, nothing is placed.
order_unlisted_question_refused(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => [[<<"o354">>], [<<"o163">>]]}),
    {error, {confirm_required, [Q]}} = ?API:place_order(S, ?ACCT, [order()], #{confirm => [<<"o354">>]}),
    ?assertMatch(#{<<"messageIds">> := [<<"o163">>], <<"message">> := [_]}, Q),
    #{replies := Replies, pending := Pending} = ?A:state(),
    ?assertEqual([{maps:get(<<"id">>, Q), false}, true], [hd(Replies) | [C || {_, C} <- tl(Replies)]]),
    ?assertEqual(#{}, Pending),
    ?assertEqual({ok, []}, ?API:live_orders(S)),
    ?assertEqual({ok, []}, ?API:trades(S)).

order_nothing_confirmed_by_default(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => [[<<"o354">>]]}),
    {error, {confirm_required, [#{<<"messageIds">> := [<<"o354">>]}]}} =
        ?API:place_order(S, ?ACCT, [order()], #{}),
    ?assertMatch(#{replies := [{_, false}], pending := #{}}, ?A:state()),
    ?assertEqual({ok, []}, ?API:live_orders(S)).

%% Questions beyond max_rounds: the last one is refused, nothing is placed.
order_rounds_bounded(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => [[<<"o354">>], [<<"o354">>], [<<"o354">>]]}),
    {error, {too_many_questions, [_]}} =
        ?API:place_order(S, ?ACCT, [order()], #{confirm => [<<"o354">>], max_rounds => 2}),
    ?assertEqual([false, true, true], [C || {_, C} <- maps:get(replies, ?A:state())]),
    ?assertEqual({ok, []}, ?API:live_orders(S)).

order_without_question(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => []}),
    {ok, [#{<<"order_id">> := <<"1000">>}, #{<<"order_id">> := <<"1001">>}]} =
        ?API:place_order(S, ?ACCT, [order(), (order())#{side => <<"SELL">>}], #{}),
    ?assertEqual([], maps:get(replies, ?A:state())).

order_bad_input(Config) ->
    S = ?config(session, Config),
    ?assertEqual({error, {badarg, account}}, ?API:place_order(S, <<"../x">>, [order()], #{})),
    ?assertEqual({error, {badarg, account}}, ?API:place_order(S, "U1", [order()], #{})),
    ?assertEqual({error, {badarg, orders}}, ?API:place_order(S, ?ACCT, [], #{})),
    ?assertEqual({error, {badarg, orders}}, ?API:place_order(S, ?ACCT, [#{}], #{})),
    ?assertEqual({error, {badarg, confirm}}, ?API:place_order(S, ?ACCT, [order()], #{confirm => o354})),
    ?assertEqual({error, {badarg, max_rounds}}, ?API:place_order(S, ?ACCT, [order()], #{max_rounds => 0})),
    ?assertEqual({error, {badarg, opts}}, ?API:place_order(S, ?ACCT, [order()], [])),
    ?assertEqual({error, {badarg, order_id}}, ?API:cancel_order(S, ?ACCT, <<"1/2">>)),
    ?assertEqual({error, {badarg, order}}, ?API:modify_order(S, ?ACCT, <<"1">>, #{})),
    ?assertEqual([], paths()).

%% IBKR's {"error": ...} on a 2xx answer; a 400 from the fake (bad order).
order_rejected(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => []}),
    ?assertMatch({error, {http, 400, _}}, ?API:place_order(S, ?ACCT, [#{conid => ?AAPL}], #{})),
    ?assertMatch({error, {rejected, <<"OrderID 999 doesn't exist">>}}, ?API:cancel_order(S, ?ACCT, <<"999">>)),
    ?assertMatch({error, {rejected, _}}, ?API:modify_order(S, ?ACCT, <<"999">>, order())).

modify_and_cancel(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => []}),
    {ok, [#{<<"order_id">> := Id}]} = ?API:place_order(S, ?ACCT, [order()], #{}),
    ok = ?A:configure(#{questions => [[<<"o354">>]]}),
    ?assertMatch({error, {confirm_required, _}}, ?API:modify_order(S, ?ACCT, Id, (order())#{price => 151.0})),
    {ok, [#{<<"price">> := 150.0}]} = ?API:live_orders(S),
    {ok, [#{<<"order_id">> := Id}]} =
        ?API:modify_order(S, ?ACCT, Id, (order())#{price => 152.5}, #{confirm => [<<"o354">>]}),
    {ok, [#{<<"price">> := 152.5}]} = ?API:live_orders(S),
    {ok, #{<<"msg">> := <<"Request was submitted">>}} = ?API:cancel_order(S, ?ACCT, Id),
    {ok, [#{<<"status">> := <<"Cancelled">>}]} = ?API:live_orders(S).

%% Filters are applied locally: IBKR never sees a filtered request (which
%% would silence the sor stream). force=true empties IBKR's cache and ends a
%% silence someone else's filtered request started.
live_orders_filters_and_force(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => []}),
    {ok, [#{<<"order_id">> := Id1}, #{<<"order_id">> := Id2}]} =
        ?API:place_order(S, ?ACCT, [order(), order()], #{}),
    {ok, _} = ?API:cancel_order(S, ?ACCT, Id1),
    {ok, [#{<<"order_id">> := Id1}]} = ?API:live_orders(S, #{filters => [<<"cancelled">>]}),
    {ok, [#{<<"order_id">> := Id2}]} = ?API:live_orders(S, #{filters => [<<"Submitted">>, <<"Filled">>]}),
    ?assertMatch(#{sor_silenced := false}, ?A:state()),
    ?assert(lists:all(fun(#{filters := F}) -> F =:= [] end, maps:get(orders_requests, ?A:state()))),
    %% another client's filtered request silences sor
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, <<"/iserver/account/orders">>,
                                                #{query => [{<<"filters">>, <<"Submitted">>}]}),
    ?assertMatch(#{sor_silenced := true}, ?A:state()),
    {ok, [_, _]} = ?API:live_orders(S, #{force => true}),
    ?assertMatch(#{sor_silenced := false, orders_requests := [#{force := false}, #{force := true} | _]},
                 ?A:state()),
    ?assertEqual({error, {badarg, filters}}, ?API:live_orders(S, #{filters => <<"Submitted">>})).

trades(Config) ->
    S = ?config(session, Config),
    ok = ?A:configure(#{questions => []}),
    ?assertEqual({ok, []}, ?API:trades(S)),
    {ok, [#{<<"order_id">> := Id}]} = ?API:place_order(S, ?ACCT, [order()], #{}),
    {ok, [#{<<"order_id">> := Id, <<"account">> := ?ACCT}]} = ?API:trades(S, #{days => 7}),
    ?assertEqual({error, {badarg, days}}, ?API:trades(S, #{days => 8})).

%% Errors are request/4's: a status outside 2xx, a stopped session, a
%% brokerage call without the brokerage session.
errors_as_request(Config) ->
    S = ?config(session, Config),
    ok = ?F:set_fault({status, 503, 1}),
    ?assertMatch({error, {http, 503, _}}, ?API:accounts(S)),
    ?assertEqual({error, {badarg, server}}, ?API:accounts("not a server")),
    ok = ibkr_oauth:stop(S),
    ?assertEqual({error, noproc}, ?API:accounts(S)),
    ?assertEqual({error, noproc}, ?API:snapshot(S, [?AAPL], [last])),
    ?F:clear_faults(),
    %% no brokerage session: /iserver answers 400 "no bridge"
    {ok, S2} = ibkr_oauth:start_link(client_config()),
    try
        ?assertMatch({error, {_, _, _}}, ?API:snapshot(S2, [?AAPL], [last]))
    after
        ibkr_oauth:stop(S2)
    end.

%%% --------------------------------------------------------------- helpers

client_config() ->
    #{base_url := Url, ca_file := Ca} = ?F:info(),
    ibkr_test_lib:vector_config(public, #{base_url => Url, ca_file => Ca}).

%% Paths the fake server saw since the last reset, oldest first.
paths() ->
    [P || #{path := P} <- lists:reverse(maps:get(log, ?F:stats()))].
