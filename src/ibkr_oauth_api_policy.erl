%% @doc The decisions of {@link ibkr_oauth_api}, as pure functions (no
%% process, no clock, no I/O): the order confirmation loop, the snapshot
%% "ask again", position paging, snapshot batches, and the snapshot field
%% table with its value conversions.
%%
%% <h3>Snapshot fields</h3>
%% IBKR names snapshot fields by numeric ids (sent and answered as strings,
%% e.g. `"31"'). {@link field_id/1} and {@link field_name/1} translate both
%% ways with the table of {@link fields/0}; an id not in the table stays a
%% binary (`<<"7999">>'). Atoms come only from this table, never from input.
%%
%% <h3>Value conversion</h3>
%% IBKR sends snapshot values as strings. {@link field_value/2} converts
%% the value of a field the table marks `price' (to a float) or `size' (to
%% an integer, or a float when it has decimals) only when the whole string
%% is a plain decimal number: an optional sign, digits with optional `,'
%% thousands groups (`1,200'), an optional `.' and decimals. Everything
%% else stays the binary IBKR sent, because its meaning would be lost or
%% guessed: `last' with IBKR's `C' prefix (the previous close, no trade
%% today) or `H' prefix (trading halted), `volume' (`87', rounded and
%% suffixed, e.g. `52.3M': use `volume_long', `7762', for the exact
%% number), `market_cap' (`2.9T'), empty strings, `N/A'. `text' fields are
%% never converted. Numbers IBKR already sends as JSON numbers (e.g.
%% `conid', `6008') are kept as they are.
-module(ibkr_oauth_api_policy).

-export([confirm_step/3, questions/1,
         snapshot_step/4, snapshot_ready/2, batches/2,
         next_page/4,
         fields/0, field_id/1, field_name/1, field_value/2]).

-export_type([confirm_action/0, snapshot_action/0, page_action/0,
              field/0, field_kind/0]).

-type confirm_action() :: {done, Acks :: [map()]}
                        | {confirm, ReplyId :: binary(), Questions :: [map()]}
                        | {refuse, ReplyId :: binary(), Why :: term()}
                        | {error, term()}.
-type snapshot_action() :: done | {again, [pos_integer()]}.
-type page_action() :: done | {next, non_neg_integer()} | {error, {too_many_pages, pos_integer()}}.
-type field() :: atom() | binary().
-type field_kind() :: price | size | text.

%%====================================================================
%% Order confirmation loop
%%====================================================================

%% @doc One step of IBKR's order confirmation loop: what to do with the
%% decoded answer to `POST /iserver/account/{acct}/orders' (or to a
%% modification, or to `POST /iserver/reply/{id}').
%%
%% IBKR answers either acknowledgements (a list of objects such as
%% `{"order_id":"1000","order_status":"Submitted"}'), or a question: a list
%% whose object has `id' (the reply id), `message' (texts) and `messageIds'
%% (e.g. `["o354"]'), which must be answered with `POST /iserver/reply/{id}'.
%% <ul>
%% <li>`{done, Acks}': a non-empty list without any question;</li>
%% <li>`{confirm, ReplyId, Questions}': a question whose message ids are all
%%     in `Confirm' while rounds are left (`RoundsLeft > 0');</li>
%% <li>`{refuse, ReplyId, {confirm_required, Questions}}': a question with a
%%     message id not in `Confirm', or without message ids (nothing is
%%     confirmed blindly);</li>
%% <li>`{refuse, ReplyId, {too_many_questions, Questions}}': a question
%%     after the last allowed round;</li>
%% <li>`{error, {rejected, Message}}': IBKR's `{"error": Message}' (also
%%     as the only element of a list);</li>
%% <li>`{error, {bad_response, What}}': anything else, including a reply id
%%     that is not a plain token (it goes into a path).</li>
%% </ul>
-spec confirm_step(term(), [binary()], non_neg_integer()) -> confirm_action().
confirm_step(#{<<"error">> := Message}, _Confirm, _RoundsLeft) ->
    {error, {rejected, Message}};
confirm_step([#{<<"error">> := Message}], _Confirm, _RoundsLeft) ->
    {error, {rejected, Message}};
confirm_step([_ | _] = Answer, Confirm, RoundsLeft) when is_list(Confirm) ->
    case questions(Answer) of
        [] ->
            case lists:all(fun is_map/1, Answer) of
                true -> {done, Answer};
                false -> {error, {bad_response, Answer}}
            end;
        [#{<<"id">> := Id} = First | _] = Questions ->
            Ids = message_ids(First),
            case {reply_id_ok(Id), Ids =/= [] andalso lists:all(fun(M) -> lists:member(M, Confirm) end, Ids)} of
                {false, _} -> {error, {bad_response, reply_id}};
                {true, false} -> {refuse, Id, {confirm_required, Questions}};
                {true, true} when RoundsLeft =< 0 -> {refuse, Id, {too_many_questions, Questions}};
                {true, true} -> {confirm, Id, Questions}
            end
    end;
confirm_step(Answer, _Confirm, _RoundsLeft) ->
    {error, {bad_response, Answer}}.

%% @doc The questions in an answer: its objects with an `id' and a `message'.
-spec questions(term()) -> [map()].
questions(Answer) when is_list(Answer) ->
    [Q || #{<<"id">> := Id, <<"message">> := _} = Q <- Answer, is_binary(Id)];
questions(_) -> [].

-spec message_ids(map()) -> [binary()].
message_ids(#{<<"messageIds">> := Ids}) when is_list(Ids) ->
    case lists:all(fun is_binary/1, Ids) of
        true -> Ids;
        false -> []
    end;
message_ids(_) -> [].

%% A reply id goes into the path /iserver/reply/{id}: letters, digits, '-'.
-spec reply_id_ok(binary()) -> boolean().
reply_id_ok(Id) ->
    byte_size(Id) > 0 andalso byte_size(Id) =< 128 andalso
        lists:all(fun(C) -> (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z)
                                orelse (C >= $0 andalso C =< $9) orelse C =:= $- end,
                  binary_to_list(Id)).

%%====================================================================
%% Snapshot
%%====================================================================

%% @doc Whether to ask `/iserver/marketdata/snapshot' again. `Asked' are
%% the conids of the batch, `Got' what the answers so far hold per conid
%% (field id => value), `Fields' the requested field ids. The first request
%% for a conid starts IBKR's feed and often answers only the conid: a conid
%% is ready when its answer holds at least one requested field (IBKR never
%% sends fields that do not apply, e.g. `close' during the session, so
%% waiting for all of them would only burn the tries). `{again, NotReady}'
%% while some are not ready and tries are left, else `done' (the caller
%% returns what it has; a conid without data maps to `#{}').
-spec snapshot_step([pos_integer()], #{pos_integer() => map()}, [binary()], non_neg_integer()) ->
    snapshot_action().
snapshot_step(Asked, Got, Fields, TriesLeft) ->
    case [C || C <- Asked, not snapshot_ready(maps:get(C, Got, #{}), Fields)] of
        [] -> done;
        _ when TriesLeft =< 0 -> done;
        NotReady -> {again, NotReady}
    end.

%% @doc A conid's answer holds at least one of the requested field ids.
-spec snapshot_ready(map(), [binary()]) -> boolean().
snapshot_ready(Answer, Fields) ->
    lists:any(fun(F) -> is_map_key(F, Answer) end, Fields).

%% @doc `List' cut into consecutive batches of at most `Size' elements.
-spec batches(list(), pos_integer()) -> [list()].
batches([], _Size) -> [];
batches(List, Size) when length(List) =< Size -> [List];
batches(List, Size) ->
    {Batch, Rest} = lists:split(Size, List),
    [Batch | batches(Rest, Size)].

%%====================================================================
%% Paging
%%====================================================================

%% @doc After page `Page' (from 0) of `/portfolio/{acct}/positions/{page}'
%% came back with `Len' entries: IBKR fills pages of `PageSize' (100), so a
%% shorter page is the last one; a full page means another one is asked,
%% up to `MaxPages' pages in all.
-spec next_page(non_neg_integer(), non_neg_integer(), pos_integer(), pos_integer()) -> page_action().
next_page(_Page, Len, PageSize, _MaxPages) when Len < PageSize -> done;
next_page(Page, _Len, _PageSize, MaxPages) when Page + 1 >= MaxPages -> {error, {too_many_pages, MaxPages}};
next_page(Page, _Len, _PageSize, _MaxPages) -> {next, Page + 1}.

%%====================================================================
%% Field table
%%====================================================================

%% @doc IBKR's snapshot fields known by name: `{Id, Name, Kind}' (from
%% IBKR's "Market Data Fields" table of the Web API; `Kind' says how
%% {@link field_value/2} converts the value).
-spec fields() -> [{binary(), atom(), field_kind()}].
fields() ->
    [{<<"31">>, last, price},
     {<<"55">>, symbol, text},
     {<<"58">>, text, text},
     {<<"70">>, high, price},
     {<<"71">>, low, price},
     {<<"73">>, market_value, price},
     {<<"74">>, avg_price, price},
     {<<"75">>, unrealized_pnl, price},
     {<<"76">>, formatted_position, text},
     {<<"77">>, formatted_unrealized_pnl, text},
     {<<"78">>, daily_pnl, price},
     {<<"79">>, realized_pnl, price},
     {<<"80">>, unrealized_pnl_pct, price},
     {<<"82">>, change, price},
     {<<"83">>, change_pct, price},
     {<<"84">>, bid, price},
     {<<"85">>, ask_size, size},
     {<<"86">>, ask, price},
     {<<"87">>, volume, text},
     {<<"88">>, bid_size, size},
     {<<"201">>, right, text},
     {<<"6004">>, exchange, text},
     {<<"6008">>, conid, size},
     {<<"6070">>, sec_type, text},
     {<<"6072">>, months, text},
     {<<"6073">>, regular_expiry, text},
     {<<"6119">>, marker, text},
     {<<"6457">>, underlying_conid, size},
     {<<"6508">>, service_params, text},
     {<<"6509">>, market_data_availability, text},
     {<<"7051">>, company_name, text},
     {<<"7057">>, ask_exch, text},
     {<<"7058">>, last_exch, text},
     {<<"7059">>, last_size, size},
     {<<"7068">>, bid_exch, text},
     {<<"7084">>, implied_hist_vol_pct, price},
     {<<"7085">>, put_call_interest, price},
     {<<"7086">>, put_call_volume, price},
     {<<"7087">>, hist_vol_pct, price},
     {<<"7088">>, hist_vol_close_pct, price},
     {<<"7089">>, option_volume, size},
     {<<"7094">>, conid_exchange, text},
     {<<"7184">>, can_be_traded, text},
     {<<"7219">>, contract_description, text},
     {<<"7220">>, contract_description_2, text},
     {<<"7221">>, listing_exchange, text},
     {<<"7280">>, industry, text},
     {<<"7281">>, category, text},
     {<<"7282">>, average_volume, text},
     {<<"7283">>, option_implied_vol_pct, price},
     {<<"7285">>, put_call_ratio, price},
     {<<"7286">>, dividend_amount, price},
     {<<"7287">>, dividend_yield_pct, price},
     {<<"7288">>, ex_dividend_date, text},
     {<<"7289">>, market_cap, text},
     {<<"7290">>, pe, price},
     {<<"7291">>, eps, price},
     {<<"7292">>, cost_basis, price},
     {<<"7293">>, week52_high, price},
     {<<"7294">>, week52_low, price},
     {<<"7295">>, open, price},
     {<<"7296">>, close, price},
     {<<"7308">>, delta, price},
     {<<"7309">>, gamma, price},
     {<<"7310">>, theta, price},
     {<<"7311">>, vega, price},
     {<<"7633">>, implied_vol_pct, price},
     {<<"7635">>, mark, price},
     {<<"7636">>, shortable_shares, size},
     {<<"7637">>, fee_rate, price},
     {<<"7638">>, option_open_interest, size},
     {<<"7644">>, shortable, text},
     {<<"7674">>, ema_200, price},
     {<<"7675">>, ema_100, price},
     {<<"7676">>, ema_50, price},
     {<<"7677">>, ema_20, price},
     {<<"7682">>, change_since_open, price},
     {<<"7718">>, beta, price},
     {<<"7741">>, prior_close, price},
     {<<"7762">>, volume_long, size},
     {<<"7768">>, has_trading_permissions, text}].

%% @doc The id (as IBKR writes it) of a field given by name or id:
%% `last' -> `<<"31">>'; a binary of digits is taken as an id as it is.
%% `error' for an unknown name or anything else.
-spec field_id(term()) -> {ok, binary()} | error.
field_id(Name) when is_atom(Name) ->
    case lists:keyfind(Name, 2, fields()) of
        {Id, _, _} -> {ok, Id};
        false -> error
    end;
field_id(<<C, _/binary>> = Id) when C >= $0, C =< $9, byte_size(Id) =< 10 ->
    case lists:all(fun(D) -> D >= $0 andalso D =< $9 end, binary_to_list(Id)) of
        true -> {ok, Id};
        false -> error
    end;
field_id(_) -> error.

%% @doc The name of a field id: an atom of the table, else the id itself.
-spec field_name(binary()) -> field().
field_name(Id) ->
    case lists:keyfind(Id, 1, fields()) of
        {_, Name, _} -> Name;
        false -> Id
    end.

%% @doc A field's value as IBKR sent it, converted as the module doc says.
-spec field_value(binary(), term()) -> term().
field_value(Id, Value) when is_binary(Value) ->
    case lists:keyfind(Id, 1, fields()) of
        {_, _, price} -> number(Value, float);
        {_, _, size} -> number(Value, exact);
        _ -> Value
    end;
field_value(_Id, Value) -> Value.

%% A plain decimal number (optional sign, optional ',' thousands groups,
%% optional decimals) or the binary unchanged.
-spec number(binary(), float | exact) -> number() | binary().
number(Bin, Kind) ->
    Re = <<"^([+-]?)([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(\\.[0-9]+)?$">>,
    case re:run(Bin, Re, [{capture, all_but_first, binary}]) of
        {match, [Sign, Int, Frac]} -> number(Sign, Int, Frac, Kind);
        {match, [Sign, Int]} -> number(Sign, Int, <<>>, Kind);
        nomatch -> Bin
    end.

-spec number(binary(), binary(), binary(), float | exact) -> number().
number(Sign, Int, Frac, Kind) ->
    Digits = binary:replace(Int, <<",">>, <<>>, [global]),
    S = case Sign of <<"-">> -> <<"-">>; _ -> <<>> end,
    case {Kind, Frac} of
        {exact, <<>>} -> binary_to_integer(<<S/binary, Digits/binary>>);
        {float, <<>>} -> binary_to_float(<<S/binary, Digits/binary, ".0">>);
        _ -> binary_to_float(<<S/binary, Digits/binary, Frac/binary>>)
    end.
