%% The fake IBKR server's trading endpoints, as IBKR behaves (for
%% ibkr_oauth_api and the demo). ibkr_fake_server:route/3 asks route/4 first;
%% `pass' leaves a request to the server's own routes. State lives in the
%% server's state under `api' (see state/0).
%%
%% Always served here (under /v1/api, signed; /iserver/* needs ssodh/init):
%%   GET  /iserver/accounts                     the snapshot preflight (counted)
%%   GET  /iserver/marketdata/snapshot          conids (at most 100) x fields; before
%%        any /iserver/accounts every conid answers only {conid, conidEx} (no feed);
%%        after it, each conid's first `snapshot_empty_rounds' (default 1) answers
%%        start the feed and hold only the conid, then its data
%%   GET  /iserver/marketdata/history           conid, period, bar required
%%   GET  /iserver/contract/{conid}/info
%%   GET  /portfolio/{acct}/summary             needs GET /portfolio/accounts first
%%   POST /iserver/reply/{id}                   {"confirmed": true|false}
%%   POST /iserver/account/{acct}/order/{id}    modify (questions as for new orders)
%%   DELETE /iserver/account/{acct}/order/{id}  cancel
%%   GET  /iserver/account/orders               ?force=true answers an empty list and
%%        ends the `sor' silence; ?filters=A,B filters by status and silences `sor'
%%   GET  /iserver/account/trades               one execution per order not cancelled
%% Served here once configured (configure/1), else by the server's own routes:
%%   POST /iserver/account/{acct}/orders        with `questions' (a list of rounds, each
%%        a list of message ids, e.g. [[<<"o354">>], [<<"o163">>]]): each round is one
%%        question, answered by POST /iserver/reply/{id}; the order is placed only after
%%        the last round is confirmed; {"confirmed":false} drops it
%%   GET  /portfolio/{acct}/positions/{page}    with `positions' (a count): pages of 100,
%%        needs GET /portfolio/accounts first
%%
%% state/0: the configuration plus iserver_accounts, portfolio_accounts (preflight
%% counts), snapshot_requests (conid counts, newest first), replies ([{Id, Confirmed}],
%% newest first), pending (reply ids waiting), sor_silenced, orders_requests.
-module(ibkr_fake_api).

-export([configure/1, state/0, route/4, server_call/2]).

-define(ACCOUNTS, [<<"U1234567">>, <<"U7654321">>]).
-define(PAGE, 100).
-define(MAX_CONIDS, 100).

%%% ================================================================ control

%% Merged into the current configuration, e.g.
%% #{questions => [[<<"o354">>]], positions => 250, snapshot_empty_rounds => 2}.
-spec configure(map()) -> ok.
configure(Map) when is_map(Map) -> gen_server:call(ibkr_fake_server, {api, {configure, Map}}).

-spec state() -> map().
state() -> gen_server:call(ibkr_fake_server, {api, state}).

-spec server_call(term(), map()) -> {reply, term(), map()}.
server_call({configure, Map}, S) -> {reply, ok, S#{api => maps:merge(api(S), Map)}};
server_call(state, S) -> {reply, api(S), S}.

api(S) ->
    maps:get(api, S, #{questions => undefined, positions => undefined, snapshot_empty_rounds => 1,
                       iserver_accounts => 0, portfolio_accounts => 0, feeds => #{},
                       snapshot_requests => [], pending => #{}, replies => [],
                       sor_silenced => false, orders_requests => []}).

put_api(A, S) -> S#{api => A}.

update(Key, Fun, S) ->
    A = api(S),
    put_api(A#{Key := Fun(maps:get(Key, A))}, S).

%%% ================================================================= routes

%% -> {pass, S} | {{respond, Status, Headers, Body}, S}
-spec route(binary(), [binary()], map(), map()) -> {pass | tuple(), map()}.
route(<<"GET">>, [<<"portfolio">>, <<"accounts">>], _Req, S) ->
    {pass, update(portfolio_accounts, fun(N) -> N + 1 end, S)};
route(<<"GET">>, [<<"portfolio">>, Acct, <<"positions">>, Page], Req, S) ->
    case api(S) of
        #{positions := N} when is_integer(N) -> portfolio(Acct, {positions, Page, N}, Req, S);
        _ -> {pass, S}
    end;
route(<<"GET">>, [<<"portfolio">>, Acct, <<"summary">>], Req, S) ->
    portfolio(Acct, summary, Req, S);
route(<<"POST">>, [<<"iserver">>, <<"account">>, Acct, <<"orders">>], Req, S) ->
    case api(S) of
        #{questions := Rounds} when is_list(Rounds) ->
            iserver(S, fun() -> place(Acct, Req, Rounds, S) end);
        _ -> {pass, S}
    end;
route(Method, [<<"iserver">> | Rest], Req, S) ->
    case iserver_route(Method, Rest, Req, S) of
        pass -> {pass, S};
        Fun -> iserver(S, Fun)
    end;
route(_, _, _, S) -> {pass, S}.

%% The brokerage endpoints served here, as funs run once the bridge is up.
iserver_route(<<"GET">>, [<<"accounts">>], _Req, S) ->
    fun() ->
            {ok_json(#{accounts => ?ACCOUNTS, selectedAccount => hd(?ACCOUNTS), isPaper => false,
                       aliases => maps:from_list([{A, A} || A <- ?ACCOUNTS])}),
             update(iserver_accounts, fun(N) -> N + 1 end, S)}
    end;
iserver_route(<<"GET">>, [<<"marketdata">>, <<"snapshot">>], Req, S) ->
    fun() -> snapshot(query(Req), S) end;
iserver_route(<<"GET">>, [<<"marketdata">>, <<"history">>], Req, S) ->
    fun() -> history(query(Req), S) end;
iserver_route(<<"GET">>, [<<"contract">>, Conid, <<"info">>], _Req, S) ->
    fun() -> contract(Conid, S) end;
iserver_route(<<"POST">>, [<<"reply">>, Id], Req, S) ->
    fun() -> reply(Id, Req, S) end;
iserver_route(<<"POST">>, [<<"account">>, Acct, <<"order">>, OrderId], Req, S) ->
    fun() -> modify(Acct, OrderId, Req, S) end;
iserver_route(<<"DELETE">>, [<<"account">>, Acct, <<"order">>, OrderId], _Req, S) ->
    fun() -> cancel(Acct, OrderId, S) end;
iserver_route(<<"GET">>, [<<"account">>, <<"orders">>], Req, S) ->
    fun() -> live_orders(query(Req), S) end;
iserver_route(<<"GET">>, [<<"account">>, <<"trades">>], Req, S) ->
    fun() -> trades(query(Req), S) end;
iserver_route(_, _, _, _) -> pass.

iserver(#{bridge := true}, Fun) -> Fun();
iserver(S, _Fun) -> {error_response(400, <<"no bridge">>), S}.

portfolio(Acct, What, _Req, S) ->
    case {lists:member(Acct, ?ACCOUNTS), api(S)} of
        {false, _} -> {error_response(404, <<"unknown account">>), S};
        {true, #{portfolio_accounts := 0}} ->
            {error_response(400, <<"Please query /portfolio/accounts first">>), S};
        {true, _} -> portfolio(Acct, What, S)
    end.

portfolio(Acct, {positions, PageBin, N}, S) ->
    case string:to_integer(PageBin) of
        {Page, <<>>} when Page >= 0 ->
            From = Page * ?PAGE + 1,
            To = min(N, (Page + 1) * ?PAGE),
            {ok_json([position(Acct, I) || I <- lists:seq(From, To)]), S};
        _ -> {error_response(400, <<"bad page">>), S}
    end;
portfolio(_Acct, summary, S) ->
    Amount = fun(V) -> #{amount => V, currency => <<"USD">>, isNull => false, timestamp => 1700000000000} end,
    {ok_json(#{netliquidation => Amount(100000.5), availablefunds => Amount(80000.25),
               buyingpower => Amount(320000.0), totalcashvalue => Amount(50000.0)}), S}.

position(Acct, I) ->
    #{acctId => Acct, conid => 100000 + I, contractDesc => <<"POS", (integer_to_binary(I))/binary>>,
      position => 1.0, mktPrice => 10.0, currency => <<"USD">>}.

%%% ---------------------------------------------------------------- market data

%% conid => [{FieldId, Value}]: what a feed answers once it runs.
market(265598) ->
    [{<<"55">>, <<"AAPL">>}, {<<"31">>, <<"187.50">>}, {<<"84">>, <<"187.49">>},
     {<<"86">>, <<"187.51">>}, {<<"88">>, <<"1,200">>}, {<<"85">>, <<"300">>},
     {<<"87">>, <<"52.3M">>}, {<<"7762">>, <<"52312345">>}, {<<"70">>, <<"189.00">>},
     {<<"71">>, <<"185.25">>}, {<<"82">>, <<"+1.25">>}, {<<"83">>, <<"0.67">>},
     {<<"7295">>, <<"186.10">>}, {<<"7289">>, <<"2.9T">>}, {<<"7999">>, <<"12.5">>}];
market(8314) ->
    [{<<"55">>, <<"IBM">>}, {<<"31">>, <<"C141.25">>}, {<<"84">>, <<"141.20">>},
     {<<"86">>, <<"141.30">>}, {<<"7296">>, <<"141.25">>}, {<<"82">>, <<"-0.75">>}];
market(Conid) when Conid >= 100000 ->
    [{<<"31">>, integer_to_binary(Conid rem 1000)}, {<<"84">>, <<"1.00">>}];
market(_) -> [].

snapshot(Query, S) ->
    Conids = [binary_to_integer(C) || C <- split(proplists:get_value(<<"conids">>, Query, <<>>)),
                                      is_digits(C)],
    Fields = split(proplists:get_value(<<"fields">>, Query, <<>>)),
    A = #{iserver_accounts := Pre, snapshot_empty_rounds := Empty, feeds := Feeds} = api(S),
    if
        Conids =:= [] -> {error_response(400, <<"conids required">>), S};
        length(Conids) > ?MAX_CONIDS -> {error_response(400, <<"too many conids">>), S};
        true ->
            Answers = [snapshot_answer(C, Fields, Pre > 0 andalso maps:get(C, Feeds, 0) >= Empty)
                       || C <- Conids],
            Feeds1 = case Pre > 0 of
                         true -> lists:foldl(fun(C, F) -> F#{C => maps:get(C, F, 0) + 1} end, Feeds, Conids);
                         false -> Feeds
                     end,
            A1 = A#{feeds := Feeds1,
                    snapshot_requests := [length(Conids) | maps:get(snapshot_requests, A)]},
            {ok_json(Answers), put_api(A1, S)}
    end.

snapshot_answer(C, Fields, Running) ->
    Base = #{conid => C, conidEx => integer_to_binary(C)},
    case Running of
        false -> Base;
        true ->
            Data = maps:from_list([{F, V} || {F, V} <- market(C), lists:member(F, Fields)]),
            maps:merge(Base#{<<"_updated">> => 1700000000000, <<"6119">> => <<"q0">>,
                             <<"6509">> => <<"RpB">>, server_id => <<"q0">>}, Data)
    end.

history(Query, S) ->
    case [proplists:get_value(K, Query) || K <- [<<"conid">>, <<"period">>, <<"bar">>]] of
        [Conid, Period, Bar] when is_binary(Conid), is_binary(Period), is_binary(Bar) ->
            Bars = [#{o => 186.0 + I, c => 186.5 + I, h => 187.0 + I, l => 185.5 + I,
                      v => 1000 * I, t => 1700000000000 + I * 60000} || I <- lists:seq(1, 3)],
            {ok_json(#{symbol => <<"AAPL">>, text => <<"APPLE INC">>, priceFactor => 100,
                       timePeriod => Period, barLength => 60, mdAvailability => <<"S">>,
                       outsideRth => proplists:get_value(<<"outsideRth">>, Query, <<"false">>) =:= <<"true">>,
                       points => 3, data => Bars}), S};
        _ -> {error_response(400, <<"conid, period and bar are required">>), S}
    end.

contract(<<"265598">>, S) ->
    {ok_json(#{con_id => 265598, symbol => <<"AAPL">>, company_name => <<"APPLE INC">>,
               exchange => <<"SMART">>, currency => <<"USD">>, instrument_type => <<"STK">>}), S};
contract(_, S) ->
    {error_response(400, <<"Invalid conid">>), S}.

%%% -------------------------------------------------------------------- orders

place(Acct, #{body := Body}, Rounds, S) ->
    case {lists:member(Acct, ?ACCOUNTS), ibkr_fake_json:decode(Body)} of
        {false, _} -> {error_response(404, <<"unknown account">>), S};
        {true, {ok, #{<<"orders">> := [_ | _] = Orders}}} ->
            case lists:all(fun valid_order/1, Orders) of
                true -> ask_or_do({place, Acct, Orders}, Rounds, S);
                false -> {error_response(400, <<"bad order">>), S}
            end;
        {true, _} -> {error_response(400, <<"body must be {\"orders\":[...]}">>), S}
    end.

valid_order(#{<<"conid">> := C, <<"side">> := Side, <<"quantity">> := Q, <<"orderType">> := T}) ->
    is_integer(C) andalso lists:member(Side, [<<"BUY">>, <<"SELL">>]) andalso is_number(Q)
        andalso Q > 0 andalso is_binary(T);
valid_order(_) -> false.

%% A question for the next round, or the action itself when none is left.
ask_or_do(Action, [], S) -> do(Action, S);
ask_or_do(Action, [MessageIds | Rest], S) ->
    Id = reply_id(),
    S1 = update(pending, fun(P) -> P#{Id => {Action, Rest}} end, S),
    {ok_json([#{id => Id, message => [message(M) || M <- MessageIds], isSuppressed => false,
                messageIds => MessageIds}]), S1}.

reply(Id, #{body := Body}, S) ->
    #{pending := Pending} = api(S),
    case {maps:find(Id, Pending), ibkr_fake_json:decode(Body)} of
        {error, _} -> {error_response(400, <<"Reply ID not found">>), S};
        {{ok, _}, {ok, #{<<"confirmed">> := C}}} when is_boolean(C) ->
            {ok, {Action, Rest}} = maps:find(Id, Pending),
            S1 = update(replies, fun(R) -> [{Id, C} | R] end,
                        update(pending, fun(P) -> maps:remove(Id, P) end, S)),
            case C of
                true -> ask_or_do(Action, Rest, S1);
                false -> {ok_json(#{error => <<"Order not confirmed: nothing was submitted">>}), S1}
            end;
        {{ok, _}, _} -> {error_response(400, <<"body must be {\"confirmed\":true|false}">>), S}
    end.

do({place, Acct, Orders}, S = #{orders := Existing}) ->
    {Acks, All} = lists:foldl(
                    fun(O, {Acks, Stored}) ->
                            Id = integer_to_binary(1000 + length(Stored)),
                            Ack = #{order_id => Id, order_status => <<"Submitted">>, encrypt_message => <<"1">>},
                            Order = Ack#{account => Acct, status => <<"Submitted">>,
                                         conid => maps:get(<<"conid">>, O), side => maps:get(<<"side">>, O),
                                         totalSize => maps:get(<<"quantity">>, O),
                                         orderType => maps:get(<<"orderType">>, O),
                                         price => maps:get(<<"price">>, O, null)},
                            {[Ack | Acks], [Order | Stored]}
                    end, {[], Existing}, Orders),
    {ok_json(lists:reverse(Acks)), S#{orders := All}};
do({modify, OrderId, Changes}, S = #{orders := Orders}) ->
    Keys = [{<<"price">>, price}, {<<"quantity">>, totalSize}, {<<"orderType">>, orderType}],
    Updated = [case O of
                   #{order_id := OrderId} ->
                       maps:merge(O, maps:from_list([{K, V} || {J, K} <- Keys,
                                                               {ok, V} <- [maps:find(J, Changes)]]));
                   _ -> O
               end || O <- Orders],
    {ok_json([#{order_id => OrderId, local_order_id => <<"-1">>, order_status => <<"Submitted">>,
                encrypt_message => <<"1">>}]), S#{orders := Updated}}.

modify(Acct, OrderId, #{body := Body}, S) ->
    case {find_order(Acct, OrderId, S), ibkr_fake_json:decode(Body)} of
        {false, _} -> {ok_json(#{error => <<"OrderID ", OrderId/binary, " doesn't exist">>}), S};
        {{ok, _}, {ok, Changes}} when is_map(Changes) ->
            Rounds = case maps:get(questions, api(S)) of
                         R when is_list(R) -> R;
                         undefined -> []
                     end,
            ask_or_do({modify, OrderId, Changes}, Rounds, S);
        {{ok, _}, _} -> {error_response(400, <<"body must be a JSON object">>), S}
    end.

cancel(Acct, OrderId, S = #{orders := Orders}) ->
    case find_order(Acct, OrderId, S) of
        false -> {ok_json(#{error => <<"OrderID ", OrderId/binary, " doesn't exist">>}), S};
        {ok, _} ->
            Updated = [case O of
                           #{order_id := OrderId} -> O#{status => <<"Cancelled">>,
                                                        order_status => <<"Cancelled">>};
                           _ -> O
                       end || O <- Orders],
            {ok_json(#{msg => <<"Request was submitted">>, order_id => binary_to_integer(OrderId),
                       conid => -1, account => null}), S#{orders := Updated}}
    end.

find_order(Acct, OrderId, #{orders := Orders}) ->
    case [O || O = #{order_id := Id, account := A} <- Orders, Id =:= OrderId, A =:= Acct] of
        [O | _] -> {ok, O};
        [] -> false
    end.

live_orders(Query, S = #{orders := Orders}) ->
    Force = proplists:get_value(<<"force">>, Query) =:= <<"true">>,
    Filters = split(proplists:get_value(<<"filters">>, Query, <<>>)),
    S1 = update(orders_requests, fun(R) -> [#{force => Force, filters => Filters} | R] end, S),
    All = [O#{status => maps:get(status, O, maps:get(order_status, O, <<"Submitted">>))}
           || O <- lists:reverse(Orders)],
    if
        Force -> {ok_json(#{orders => [], snapshot => false}), update(sor_silenced, fun(_) -> false end, S1)};
        Filters =/= [] ->
            Lower = [string:lowercase(F) || F <- Filters],
            Kept = [O || O = #{status := St} <- All, lists:member(string:lowercase(St), Lower)],
            {ok_json(#{orders => Kept, snapshot => true}), update(sor_silenced, fun(_) -> true end, S1)};
        true -> {ok_json(#{orders => All, snapshot => true}), S1}
    end.

trades(Query, S = #{orders := Orders}) ->
    case proplists:get_value(<<"days">>, Query, <<"1">>) of
        D when D =:= <<"1">>; D =:= <<"2">>; D =:= <<"3">>; D =:= <<"4">>; D =:= <<"5">>;
               D =:= <<"6">>; D =:= <<"7">> ->
            Trades = [#{execution_id => <<"0000e0d5.", Id/binary>>, order_id => Id, account => A,
                        conid => maps:get(conid, O, 265598), side => <<"B">>,
                        size => maps:get(totalSize, O, 1), price => <<"150.00">>,
                        trade_time_r => 1700000000000}
                      || O = #{order_id := Id, account := A} <- lists:reverse(Orders),
                         maps:get(status, O, <<"Submitted">>) =/= <<"Cancelled">>],
            {ok_json(Trades), S};
        _ -> {error_response(400, <<"days must be 1..7">>), S}
    end.

%%% ----------------------------------------------------------------- helpers

message(<<"o354">>) ->
    <<"You are submitting an order without market data. We strongly recommend against this "
      "as it may result in erroneous and unexpected trades. Are you sure you want to submit this order?">>;
message(<<"o163">>) ->
    <<"The following order exceeds the price percentage limit. Are you sure you want to submit this order?">>;
message(<<"o451">>) ->
    <<"The following order size exceeds the Size Limit. Are you sure you want to submit this order?">>;
message(Id) -> <<"Question ", Id/binary, ": are you sure you want to submit this order?">>.

%% IBKR's reply ids look like UUIDs.
reply_id() ->
    <<A:32, B:16, C:16, D:16, E:48>> = crypto:strong_rand_bytes(16),
    iolist_to_binary(io_lib:format("~8.16.0b-~4.16.0b-~4.16.0b-~4.16.0b-~12.16.0b", [A, B, C, D, E])).

query(#{target := Target}) ->
    {_, Q} = ibkr_server_crypto:split_url(Target),
    ibkr_server_crypto:parse_query(Q).

split(<<>>) -> [];
split(B) -> binary:split(B, <<",">>, [global, trim_all]).

is_digits(<<>>) -> false;
is_digits(B) -> lists:all(fun(C) -> C >= $0 andalso C =< $9 end, binary_to_list(B)).

ok_json(Term) -> {respond, 200, [], ibkr_fake_server:json(Term)}.

error_response(Status, Message) ->
    {respond, Status, [], ibkr_fake_server:json(#{error => Message, statusCode => Status})}.
