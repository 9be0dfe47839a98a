%% @doc Typed calls for what a trading application does with IBKR's Web API:
%% accounts, positions, contracts, market data snapshots and history,
%% orders (with IBKR's confirmation loop), live orders, trades.
%%
%% Pure functions over a session: each one makes its requests with
%% {@link ibkr_oauth:request/4} (`decode => json') in the calling process;
%% there is no process of its own. Answers are decoded JSON (objects ->
%% maps with binary keys, arrays -> lists, strings -> binaries, numbers,
%% `true'/`false'/`null'), except {@link snapshot/3}'s field maps.
%% Decisions (confirm or refuse a question, ask a snapshot again, fetch
%% another page) are made by {@link ibkr_oauth_api_policy}.
%%
%% <h3>Errors</h3>
%% The errors of {@link ibkr_oauth:request/4}, unchanged (`timeout',
%% `rate_limited', `port_down', `{transport, Kind}', ...), plus:
%% <ul>
%% <li>`{ibkr, Kind, Info}': IBKR answered outside 2xx with one of its own
%%     errors (`no_bridge', `rate_limited', ...: see
%%     {@link ibkr_oauth_ibkr_error});</li>
%% <li>`{http, Status, Body}': IBKR answered outside 2xx otherwise;</li>
%% <li>`{rejected, Message}': IBKR answered 2xx with `{"error": Message}'
%%     (e.g. an order IBKR refuses);</li>
%% <li>`{bad_response, What}': a 2xx answer that is not the JSON this call
%%     expects;</li>
%% <li>`{badarg, What}': an argument is refused before anything is sent;</li>
%% <li>{@link place_order/4}: `{confirm_required, Questions}',
%%     `{too_many_questions, Questions}'; {@link positions/3}:
%%     `{too_many_pages, Max}'.</li>
%% </ul>
%%
%% <h3>Rate limits</h3>
%% Every request waits for the session's rate limit (IBKR's per-endpoint
%% table, see {@link ibkr_oauth_ratelimit:ibkr_endpoints/0}); each function
%% says which limit applies. IBKR counts `/portfolio/accounts' (1 per 5 s),
%% so a call that sends it as a preflight may wait up to 5 s behind an
%% earlier one: pass `preflight => false' when you know it was sent in this
%% session.
-module(ibkr_oauth_api).

-export([accounts/1,
         positions/2, positions/3,
         account_summary/2, account_summary/3,
         search/2, search/3,
         contract/2,
         snapshot/3, snapshot/4,
         history/3,
         place_order/4,
         modify_order/4, modify_order/5,
         cancel_order/3,
         live_orders/1, live_orders/2,
         trades/1, trades/2]).

-export_type([conid/0, order_opts/0, snapshot_opts/0, history_opts/0,
              live_orders_opts/0]).

-type server() :: ibkr_oauth:server().
-type conid() :: pos_integer().
-type order_opts() :: #{confirm => [binary()],
                        max_rounds => pos_integer(),
                        on_confirm => fun((Question :: map()) -> term())}.
-type snapshot_opts() :: #{preflight => boolean(), max_tries => pos_integer(),
                           retry_ms => non_neg_integer(), batch => pos_integer()}.
-type history_opts() :: #{period := binary(), bar := binary(),
                          outside_rth => boolean(), start_time => binary(),
                          exchange => binary()}.
-type live_orders_opts() :: #{force => boolean(), filters => [binary()]}.

-define(PAGE_SIZE, 100).
-define(MAX_PAGES, 100).
-define(SNAPSHOT_BATCH, 100).
-define(SNAPSHOT_TRIES, 5).
-define(SNAPSHOT_RETRY_MS, 300).
-define(MAX_ROUNDS, 5).

%%====================================================================
%% Accounts and portfolio
%%====================================================================

%% @doc The accounts of the session: `GET /portfolio/accounts' (IBKR
%% limit 1 per 5 s). Each is a map such as
%% `#{<<"accountId">> => <<"U1234567">>, <<"currency">> => <<"USD">>, ...}'.
-spec accounts(server()) -> {ok, [map()]} | {error, term()}.
accounts(S) ->
    list(call(S, get, <<"/portfolio/accounts">>, #{})).

%% @doc {@link positions/3} with the preflight.
-spec positions(server(), binary()) -> {ok, [map()]} | {error, term()}.
positions(S, Account) -> positions(S, Account, #{}).

%% @doc All positions of `Account', every page:
%% `GET /portfolio/{acct}/positions/{page}' from page 0 until a page with
%% fewer than 100 entries (at most 100 pages), after
%% `GET /portfolio/accounts', which IBKR requires before other `/portfolio'
%% calls (skipped with `preflight => false'). Limits: the positions pages
%% only the global one (50/s); `/portfolio/accounts' 1 per 5 s.
-spec positions(server(), binary(), #{preflight => boolean()}) -> {ok, [map()]} | {error, term()}.
positions(S, Account, Opts) ->
    maybe_error([check_account(Account), check_opts(Opts, [{preflight, fun is_boolean/1}])],
                fun() ->
                        then(portfolio_preflight(S, Opts),
                             fun() -> positions_pages(S, Account, 0, []) end)
                end).

-spec positions_pages(server(), binary(), non_neg_integer(), [[map()]]) -> {ok, [map()]} | {error, term()}.
positions_pages(S, Account, Page, Acc) ->
    Path = <<"/portfolio/", Account/binary, "/positions/", (integer_to_binary(Page))/binary>>,
    case list(call(S, get, Path, #{})) of
        {ok, Positions} ->
            Acc1 = [Positions | Acc],
            case ibkr_oauth_api_policy:next_page(Page, length(Positions), ?PAGE_SIZE, ?MAX_PAGES) of
                done -> {ok, lists:append(lists:reverse(Acc1))};
                {next, Next} -> positions_pages(S, Account, Next, Acc1);
                {error, _} = E -> E
            end;
        {error, _} = E -> E
    end.

%% @doc {@link account_summary/3} with the preflight.
-spec account_summary(server(), binary()) -> {ok, map()} | {error, term()}.
account_summary(S, Account) -> account_summary(S, Account, #{}).

%% @doc The account's balances and margin values:
%% `GET /portfolio/{acct}/summary' (global limit), after
%% `GET /portfolio/accounts' (1 per 5 s; skipped with `preflight => false').
%% A map of `#{<<"netliquidation">> => #{<<"amount">> => ..., ...}, ...}'.
-spec account_summary(server(), binary(), #{preflight => boolean()}) -> {ok, map()} | {error, term()}.
account_summary(S, Account, Opts) ->
    maybe_error([check_account(Account), check_opts(Opts, [{preflight, fun is_boolean/1}])],
                fun() ->
                        then(portfolio_preflight(S, Opts),
                             fun() -> object(call(S, get, <<"/portfolio/", Account/binary, "/summary">>, #{})) end)
                end).

-spec portfolio_preflight(server(), map()) -> ok | {error, term()}.
portfolio_preflight(S, Opts) ->
    case maps:get(preflight, Opts, true) of
        true -> ok(list(call(S, get, <<"/portfolio/accounts">>, #{})));
        false -> ok
    end.

%%====================================================================
%% Contracts
%%====================================================================

%% @doc {@link search/3} without options.
-spec search(server(), binary()) -> {ok, [map()]} | {error, term()}.
search(S, Symbol) -> search(S, Symbol, #{}).

%% @doc Contracts for a symbol: `GET /iserver/secdef/search?symbol=...'
%% (global limit; needs the brokerage session). Options: `sec_type'
%% (e.g. `<<"STK">>'), `name' (`true': search company names too). Each
%% result holds `conid', `symbol', `companyName', `sections', ...
-spec search(server(), binary(), #{sec_type => binary(), name => boolean()}) ->
    {ok, [map()]} | {error, term()}.
search(S, Symbol, Opts) ->
    maybe_error([check_text(Symbol, symbol),
                 check_opts(Opts, [{sec_type, fun is_text/1}, {name, fun is_boolean/1}])],
                fun() ->
                        Query = [{<<"symbol">>, Symbol}]
                            ++ [{<<"secType">>, T} || {ok, T} <- [maps:find(sec_type, Opts)]]
                            ++ [{<<"name">>, atom_to_binary(B)} || {ok, B} <- [maps:find(name, Opts)]],
                        list(call(S, get, <<"/iserver/secdef/search">>, #{query => Query}))
                end).

%% @doc A contract's details: `GET /iserver/contract/{conid}/info' (global
%% limit; needs the brokerage session): `con_id', `symbol',
%% `company_name', `exchange', `currency', `instrument_type', ...
-spec contract(server(), conid()) -> {ok, map()} | {error, term()}.
contract(S, Conid) ->
    maybe_error([check_conid(Conid)],
                fun() ->
                        object(call(S, get, <<"/iserver/contract/", (integer_to_binary(Conid))/binary, "/info">>, #{}))
                end).

%%====================================================================
%% Market data
%%====================================================================

%% @doc {@link snapshot/4} with the default options.
-spec snapshot(server(), [conid()], [ibkr_oauth_api_policy:field()]) ->
    {ok, #{conid() => #{ibkr_oauth_api_policy:field() => term()}}} | {error, term()}.
snapshot(S, Conids, Fields) -> snapshot(S, Conids, Fields, #{}).

%% @doc Market data snapshots: `GET /iserver/marketdata/snapshot?conids=...&fields=...'
%% (IBKR limit 10 per second; needs the brokerage session).
%%
%% `Fields' are names of {@link ibkr_oauth_api_policy:fields/0} (`last',
%% `bid', `ask', `bid_size', `ask_size', `volume', `high', `low', `change',
%% `change_pct', `open', `close', ...) or ids as binaries (`<<"7762">>').
%% The answer maps each conid to its fields, named by the same table (an id
%% not in it stays a binary) with values converted where IBKR's format is
%% unambiguous (see {@link ibkr_oauth_api_policy}); a conid IBKR sent no
%% data for maps to `#{}'.
%%
%% What IBKR requires is done here: `GET /iserver/accounts' first (the
%% snapshot needs it in the brokerage session; `preflight => false' skips
%% it), and conids whose answer holds no requested field yet (the first
%% request for a conid only starts the feed) are asked again, `retry_ms'
%% (300) apart, up to `max_tries' (5) requests per batch. Conids go out
%% `batch' (100) per request, one request after the other, each waiting
%% for the session's rate limit.
-spec snapshot(server(), [conid()], [ibkr_oauth_api_policy:field()], snapshot_opts()) ->
    {ok, #{conid() => #{ibkr_oauth_api_policy:field() => term()}}} | {error, term()}.
snapshot(S, Conids, Fields, Opts) ->
    Checked = [check_conids(Conids), check_fields(Fields),
               check_opts(Opts, [{preflight, fun is_boolean/1}, {max_tries, fun is_pos_integer/1},
                                 {retry_ms, fun is_non_neg_integer/1}, {batch, fun is_pos_integer/1}])],
    maybe_error(Checked,
                fun() ->
                        {ok, Ids} = field_ids(Fields),
                        Unique = lists:usort(Conids),
                        Pre = case maps:get(preflight, Opts, true) of
                                  true -> ok(call(S, get, <<"/iserver/accounts">>, #{}));
                                  false -> ok
                              end,
                        then(Pre, fun() -> snapshot_batches(S, Unique, Ids, Opts) end)
                end).

-spec snapshot_batches(server(), [conid()], [binary()], snapshot_opts()) ->
    {ok, #{conid() => map()}} | {error, term()}.
snapshot_batches(S, Conids, Ids, Opts) ->
    Batches = ibkr_oauth_api_policy:batches(Conids, maps:get(batch, Opts, ?SNAPSHOT_BATCH)),
    Tries = maps:get(max_tries, Opts, ?SNAPSHOT_TRIES),
    Retry = maps:get(retry_ms, Opts, ?SNAPSHOT_RETRY_MS),
    Result = lists:foldl(
               fun(_Batch, {error, _} = E) -> E;
                  (Batch, {ok, Acc}) ->
                       case snapshot_batch(S, Batch, Batch, Ids, #{}, Tries, Retry) of
                           {ok, Got} -> {ok, maps:merge(Acc, Got)};
                           {error, _} = E -> E
                       end
               end, {ok, #{}}, Batches),
    case Result of
        {ok, Got} ->
            {ok, maps:from_list([{C, named(maps:get(C, Got, #{}))} || C <- Conids])};
        {error, _} = E -> E
    end.

-spec snapshot_batch(server(), [conid()], [conid()], [binary()], #{conid() => map()},
                     non_neg_integer(), non_neg_integer()) -> {ok, #{conid() => map()}} | {error, term()}.
snapshot_batch(S, Batch, Ask, Ids, Got, Tries, Retry) ->
    Query = [{<<"conids">>, join([integer_to_binary(C) || C <- Ask])},
             {<<"fields">>, join(Ids)}],
    case list(call(S, get, <<"/iserver/marketdata/snapshot">>, #{query => Query})) of
        {ok, Answers} ->
            Got1 = lists:foldl(fun(A, G) -> merge_snapshot(A, Ask, G) end, Got, Answers),
            case ibkr_oauth_api_policy:snapshot_step(Batch, Got1, Ids, Tries - 1) of
                done -> {ok, Got1};
                {again, NotReady} ->
                    timer:sleep(Retry),
                    snapshot_batch(S, Batch, NotReady, Ids, Got1, Tries - 1, Retry)
            end;
        {error, _} = E -> E
    end.

%% One answer object: its numeric keys are fields; kept for conids asked.
-spec merge_snapshot(term(), [conid()], #{conid() => map()}) -> #{conid() => map()}.
merge_snapshot(#{<<"conid">> := C} = Answer, Ask, Got) when is_integer(C) ->
    case lists:member(C, Ask) of
        true ->
            Fields = maps:filter(fun(K, _) -> is_field_key(K) end, Answer),
            Got#{C => maps:merge(maps:get(C, Got, #{}), Fields)};
        false -> Got
    end;
merge_snapshot(_, _, Got) -> Got.

-spec is_field_key(term()) -> boolean().
is_field_key(K) -> ibkr_oauth_api_policy:field_id(K) =:= {ok, K}.

-spec named(map()) -> #{ibkr_oauth_api_policy:field() => term()}.
named(Fields) ->
    maps:fold(fun(Id, V, Acc) ->
                      Acc#{ibkr_oauth_api_policy:field_name(Id) => ibkr_oauth_api_policy:field_value(Id, V)}
              end, #{}, Fields).

%% @doc Historical bars: `GET /iserver/marketdata/history?conid=...&period=...&bar=...'
%% (IBKR: at most 5 at once; needs the brokerage session). `period' (e.g.
%% `<<"1d">>', `<<"1w">>', `<<"1y">>') and `bar' (e.g. `<<"1min">>',
%% `<<"1h">>', `<<"1d">>') are required; optional `outside_rth',
%% `start_time' (`<<"20240105-16:00:00">>', UTC), `exchange'. The answer
%% map holds `data' (`[#{<<"o">>, <<"h">>, <<"l">>, <<"c">>, <<"v">>, <<"t">>}]',
%% `t' epoch ms), `symbol', `barLength', ...
-spec history(server(), conid(), history_opts()) -> {ok, map()} | {error, term()}.
history(S, Conid, Opts) ->
    Required = case Opts of
                   #{period := _, bar := _} -> ok;
                   #{period := _} -> {error, {badarg, bar}};
                   _ -> {error, {badarg, period}}
               end,
    maybe_error([check_conid(Conid),
                 check_opts(Opts, [{period, fun is_text/1}, {bar, fun is_text/1},
                                   {outside_rth, fun is_boolean/1}, {start_time, fun is_text/1},
                                   {exchange, fun is_text/1}]),
                 Required],
                fun() ->
                        Query = [{<<"conid">>, integer_to_binary(Conid)},
                                 {<<"period">>, maps:get(period, Opts)},
                                 {<<"bar">>, maps:get(bar, Opts)}]
                            ++ [{<<"outsideRth">>, atom_to_binary(V)} || {ok, V} <- [maps:find(outside_rth, Opts)]]
                            ++ [{<<"startTime">>, V} || {ok, V} <- [maps:find(start_time, Opts)]]
                            ++ [{<<"exchange">>, V} || {ok, V} <- [maps:find(exchange, Opts)]],
                        object(call(S, get, <<"/iserver/marketdata/history">>, #{query => Query}))
                end).

%%====================================================================
%% Orders
%%====================================================================

%% @doc Places orders: `POST /iserver/account/{acct}/orders' with
%% `{"orders": Orders}' (global limit; needs the brokerage session).
%% `Orders' are maps encoded as JSON (atom or binary keys), e.g.
%% `#{conid => 265598, orderType => <<"LMT">>, price => 150.0,
%% side => <<"BUY">>, quantity => 10, tif => <<"DAY">>}'.
%%
%% IBKR may answer with a question instead of an acknowledgement
%% (`[{"id": ReplyId, "message": [...], "messageIds": ["o354"]}]'), to be
%% answered with `POST /iserver/reply/{ReplyId}' `{"confirmed": true}',
%% possibly several rounds in a row. Only questions whose message ids are
%% all listed in `confirm' are confirmed (nothing by default: an order is
%% real money), at most `max_rounds' (5) of them; `on_confirm' is called
%% with each question confirmed. Any other question is refused
%% (`{"confirmed": false}', so nothing stays pending at IBKR) and the
%% answer is `{error, {confirm_required, Questions}}' (or
%% `{error, {too_many_questions, Questions}}' past `max_rounds'): the
%% order was not placed. On success `{ok, Acks}', e.g.
%% `[#{<<"order_id">> => <<"1000">>, <<"order_status">> => <<"Submitted">>}]'.
%%
%% An error of the transport while a confirmation is in flight (e.g.
%% `timeout') leaves the order's fate unknown: check {@link live_orders/2}.
%% A POST is never resent by the session once it may have reached IBKR.
-spec place_order(server(), binary(), [map()], order_opts()) -> {ok, [map()]} | {error, term()}.
place_order(S, Account, Orders, Opts) ->
    maybe_error([check_account(Account), check_orders(Orders), check_order_opts(Opts)],
                fun() ->
                        Answer = call(S, post, <<"/iserver/account/", Account/binary, "/orders">>,
                                      #{json => #{<<"orders">> => Orders}}),
                        confirm_loop(S, Answer, Opts, maps:get(max_rounds, Opts, ?MAX_ROUNDS))
                end).

%% @doc {@link modify_order/5} confirming nothing.
-spec modify_order(server(), binary(), binary(), map()) -> {ok, [map()]} | {error, term()}.
modify_order(S, Account, OrderId, Order) -> modify_order(S, Account, OrderId, Order, #{}).

%% @doc Modifies a live order: `POST /iserver/account/{acct}/order/{orderId}'
%% with the whole order as it should be (global limit; needs the brokerage
%% session). IBKR's questions are handled as by {@link place_order/4}, with
%% the same options.
-spec modify_order(server(), binary(), binary(), map(), order_opts()) -> {ok, [map()]} | {error, term()}.
modify_order(S, Account, OrderId, Order, Opts) ->
    maybe_error([check_account(Account), check_order_id(OrderId), check_order(Order), check_order_opts(Opts)],
                fun() ->
                        Answer = call(S, post, <<"/iserver/account/", Account/binary, "/order/", OrderId/binary>>,
                                      #{json => Order}),
                        confirm_loop(S, Answer, Opts, maps:get(max_rounds, Opts, ?MAX_ROUNDS))
                end).

-spec confirm_loop(server(), {ok, term()} | {error, term()}, order_opts(), non_neg_integer()) ->
    {ok, [map()]} | {error, term()}.
confirm_loop(_S, {error, _} = E, _Opts, _RoundsLeft) -> E;
confirm_loop(S, {ok, Answer}, Opts, RoundsLeft) ->
    Confirm = maps:get(confirm, Opts, []),
    case ibkr_oauth_api_policy:confirm_step(Answer, Confirm, RoundsLeft) of
        {done, Acks} -> {ok, Acks};
        {confirm, ReplyId, Questions} ->
            notify(Opts, Questions),
            logger:info(#{what => order_question_confirmed, reply_id => ReplyId,
                          questions => Questions}, #{domain => [ibkr_oauth]}),
            confirm_loop(S, reply(S, ReplyId, true), Opts, RoundsLeft - 1);
        {refuse, ReplyId, Why} ->
            case reply(S, ReplyId, false) of
                {ok, _} -> ok;
                {error, Err} ->
                    logger:warning(#{what => order_question_refusal_failed, reply_id => ReplyId,
                                     reason => ibkr_oauth_redact:scrub_reason(Err)},
                                   #{domain => [ibkr_oauth]})
            end,
            {error, Why};
        {error, _} = E -> E
    end.

-spec reply(server(), binary(), boolean()) -> {ok, term()} | {error, term()}.
reply(S, ReplyId, Confirmed) ->
    call(S, post, <<"/iserver/reply/", ReplyId/binary>>, #{json => #{<<"confirmed">> => Confirmed}}).

-spec notify(order_opts(), [map()]) -> ok.
notify(#{on_confirm := Fun}, Questions) ->
    _ = [try Fun(Q)
         catch C:E -> logger:warning(#{what => on_confirm_failed, class => C, reason => E},
                                     #{domain => [ibkr_oauth]})
         end || Q <- Questions],
    ok;
notify(_, _) -> ok.

%% @doc Cancels a live order: `DELETE /iserver/account/{acct}/order/{orderId}'
%% (global limit; needs the brokerage session). IBKR answers e.g.
%% `#{<<"msg">> => <<"Request was submitted">>, <<"order_id">> => 1000, ...}';
%% the cancellation itself shows in {@link live_orders/2} (or the `sor'
%% stream) a moment later.
-spec cancel_order(server(), binary(), binary()) -> {ok, map()} | {error, term()}.
cancel_order(S, Account, OrderId) ->
    maybe_error([check_account(Account), check_order_id(OrderId)],
                fun() ->
                        object(call(S, delete, <<"/iserver/account/", Account/binary, "/order/", OrderId/binary>>, #{}))
                end).

%% @doc {@link live_orders/2} without options.
-spec live_orders(server()) -> {ok, [map()]} | {error, term()}.
live_orders(S) -> live_orders(S, #{}).

%% @doc IBKR's live orders (today's, and older ones still open):
%% `GET /iserver/account/orders' (IBKR limit 1 per 5 s; needs the
%% brokerage session); the `orders' of its answer.
%%
%% `filters' (order statuses such as `<<"Submitted">>', `<<"Filled">>',
%% `<<"Cancelled">>'; compared with each order's `status' ignoring case) are
%% applied here and never sent: a filtered request to IBKR silences the
%% `sor' websocket topic until a request with `force=true'.
%% `force => true' first sends `GET /iserver/account/orders?force=true',
%% which makes IBKR drop what it cached (and start the `sor' topic again
%% after someone else's filtered request); IBKR answers that one with an
%% empty list, so the orders come from a second, plain request, which the
%% rate limit lets go 5 s later.
-spec live_orders(server(), live_orders_opts()) -> {ok, [map()]} | {error, term()}.
live_orders(S, Opts) ->
    maybe_error([check_opts(Opts, [{force, fun is_boolean/1},
                                   {filters, fun(F) -> is_list(F) andalso lists:all(fun is_text/1, F) end}])],
                fun() ->
                        Path = <<"/iserver/account/orders">>,
                        Forced = case maps:get(force, Opts, false) of
                                     true -> ok(call(S, get, Path, #{query => [{<<"force">>, <<"true">>}]}));
                                     false -> ok
                                 end,
                        then(Forced,
                             fun() ->
                                     case call(S, get, Path, #{}) of
                                         {ok, #{<<"orders">> := Orders}} when is_list(Orders) ->
                                             {ok, filter_orders(Orders, maps:get(filters, Opts, []))};
                                         {ok, #{<<"error">> := M}} -> {error, {rejected, M}};
                                         {ok, Other} -> {error, {bad_response, Other}};
                                         {error, _} = E -> E
                                     end
                             end)
                end).

-spec filter_orders(list(), [binary()]) -> list().
filter_orders(Orders, []) -> Orders;
filter_orders(Orders, Filters) ->
    Wanted = [string:lowercase(F) || F <- Filters],
    [O || O = #{<<"status">> := St} <- Orders, is_binary(St), lists:member(string:lowercase(St), Wanted)].

%% @doc {@link trades/2} without options.
-spec trades(server()) -> {ok, [map()]} | {error, term()}.
trades(S) -> trades(S, #{}).

%% @doc Executions: `GET /iserver/account/trades' (IBKR limit 1 per 5 s;
%% needs the brokerage session), of the current day, or of the last
%% `days' (1..7) days.
-spec trades(server(), #{days => 1..7}) -> {ok, [map()]} | {error, term()}.
trades(S, Opts) ->
    maybe_error([check_opts(Opts, [{days, fun(D) -> is_integer(D) andalso D >= 1 andalso D =< 7 end}])],
                fun() ->
                        Query = [{<<"days">>, integer_to_binary(D)} || {ok, D} <- [maps:find(days, Opts)]],
                        list(call(S, get, <<"/iserver/account/trades">>, #{query => Query}))
                end).

%%====================================================================
%% Requests and answers
%%====================================================================

%% A request whose 2xx answer is JSON: {ok, Term}.
-spec call(server(), ibkr_oauth:method(), binary(), map()) -> {ok, term()} | {error, term()}.
call(S, Method, Path, Opts) ->
    case ibkr_oauth:request(S, Method, Path, Opts#{decode => json}) of
        {ok, #{status := Status, json := Json}} when Status >= 200, Status < 300 -> {ok, Json};
        {ok, #{status := Status, json_error := Why}} when Status >= 200, Status < 300 ->
            {error, {bad_response, {not_json, Why}}};
        {ok, #{status := Status}} when Status >= 200, Status < 300 -> {error, {bad_response, not_json}};
        %% request/4 already returns IBKR's own errors as {ibkr, Kind, Info}
        {ok, #{status := Status, body := Body}} ->
            {error, ibkr_oauth_ibkr_error:from_reason({http, Status, Body})};
        {error, _} = E -> E
    end.

-spec list({ok, term()} | {error, term()}) -> {ok, list()} | {error, term()}.
list({ok, L}) when is_list(L) -> {ok, L};
list(Other) -> shape(Other).

-spec object({ok, term()} | {error, term()}) -> {ok, map()} | {error, term()}.
object({ok, #{<<"error">> := M}}) -> {error, {rejected, M}};
object({ok, M}) when is_map(M) -> {ok, M};
object(Other) -> shape(Other).

-spec shape({ok, term()} | {error, term()}) -> {error, term()}.
shape({ok, #{<<"error">> := M}}) -> {error, {rejected, M}};
shape({ok, Other}) -> {error, {bad_response, Other}};
shape({error, _} = E) -> E.

-spec ok({ok, term()} | {error, term()}) -> ok | {error, term()}.
ok({ok, _}) -> ok;
ok({error, _} = E) -> E.

-spec then(ok | {error, term()}, fun(() -> Result)) -> Result | {error, term()}.
then(ok, Fun) -> Fun();
then({error, _} = E, _Fun) -> E.

%% The first failed check, else Fun().
-spec maybe_error([ok | {error, term()}], fun(() -> Result)) -> Result | {error, term()}.
maybe_error(Checks, Fun) ->
    case [E || {error, _} = E <- Checks] of
        [] -> Fun();
        [E | _] -> E
    end.

-spec join([binary()]) -> binary().
join(Bins) -> iolist_to_binary(lists:join(<<",">>, Bins)).

%%====================================================================
%% Argument checks
%%====================================================================

-spec check_account(term()) -> ok | {error, {badarg, account}}.
check_account(A) -> check_token(A, account).
-spec check_order_id(term()) -> ok | {error, {badarg, order_id}}.
check_order_id(Id) -> check_token(Id, order_id).

%% Goes into a path: letters, digits, '_', '-', '.' only.
-spec check_token(term(), atom()) -> ok | {error, {badarg, atom()}}.
check_token(B, What) when is_binary(B), byte_size(B) > 0, byte_size(B) =< 64 ->
    case lists:all(fun(C) -> (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z)
                                 orelse (C >= $0 andalso C =< $9) orelse C =:= $_
                                 orelse C =:= $- orelse C =:= $. end, binary_to_list(B))
        andalso B =/= <<".">> andalso B =/= <<"..">> of
        true -> ok;
        false -> {error, {badarg, What}}
    end;
check_token(_, What) -> {error, {badarg, What}}.

-spec check_text(term(), atom()) -> ok | {error, {badarg, atom()}}.
check_text(B, What) ->
    case is_text(B) of
        true -> ok;
        false -> {error, {badarg, What}}
    end.

-spec is_text(term()) -> boolean().
is_text(B) -> is_binary(B) andalso byte_size(B) > 0.
-spec is_pos_integer(term()) -> boolean().
is_pos_integer(I) -> is_integer(I) andalso I > 0.
-spec is_non_neg_integer(term()) -> boolean().
is_non_neg_integer(I) -> is_integer(I) andalso I >= 0.

-spec check_conid(term()) -> ok | {error, {badarg, conid}}.
check_conid(C) when is_integer(C), C > 0 -> ok;
check_conid(_) -> {error, {badarg, conid}}.

-spec check_conids(term()) -> ok | {error, {badarg, conids}}.
check_conids([_ | _] = Cs) ->
    case proper(Cs) andalso lists:all(fun is_pos_integer/1, Cs) of
        true -> ok;
        false -> {error, {badarg, conids}}
    end;
check_conids(_) -> {error, {badarg, conids}}.

-spec check_fields(term()) -> ok | {error, {badarg, term()}}.
check_fields(Fields) ->
    case field_ids(Fields) of
        {ok, _} -> ok;
        {error, _} = E -> E
    end.

-spec field_ids(term()) -> {ok, [binary()]} | {error, {badarg, term()}}.
field_ids([_ | _] = Fields) ->
    case proper(Fields) of
        true ->
            Ids = [ibkr_oauth_api_policy:field_id(F) || F <- Fields],
            case [F || {F, error} <- lists:zip(Fields, Ids)] of
                [] -> {ok, lists:usort([Id || {ok, Id} <- Ids])};
                [Bad | _] -> {error, {badarg, {field, Bad}}}
            end;
        false -> {error, {badarg, fields}}
    end;
field_ids(_) -> {error, {badarg, fields}}.

-spec check_orders(term()) -> ok | {error, {badarg, orders}}.
check_orders([_ | _] = Orders) ->
    case proper(Orders) andalso lists:all(fun(O) -> is_map(O) andalso map_size(O) > 0 end, Orders) of
        true -> ok;
        false -> {error, {badarg, orders}}
    end;
check_orders(_) -> {error, {badarg, orders}}.

-spec check_order(term()) -> ok | {error, {badarg, order}}.
check_order(O) when is_map(O), map_size(O) > 0 -> ok;
check_order(_) -> {error, {badarg, order}}.

-spec check_order_opts(term()) -> ok | {error, {badarg, atom()}}.
check_order_opts(Opts) ->
    check_opts(Opts, [{confirm, fun(L) -> is_list(L) andalso proper(L) andalso lists:all(fun is_text/1, L) end},
                      {max_rounds, fun is_pos_integer/1},
                      {on_confirm, fun(F) -> is_function(F, 1) end}]).

-spec check_opts(term(), [{atom(), fun((term()) -> boolean())}]) -> ok | {error, {badarg, atom()}}.
check_opts(Opts, Spec) when is_map(Opts) ->
    case [K || {K, Ok} <- Spec, is_map_key(K, Opts), not Ok(maps:get(K, Opts))] of
        [] -> ok;
        [K | _] -> {error, {badarg, K}}
    end;
check_opts(_, _) -> {error, {badarg, opts}}.

-spec proper(term()) -> boolean().
proper(L) when is_list(L) ->
    try length(L) >= 0
    catch error:badarg -> false
    end;
proper(_) -> false.
