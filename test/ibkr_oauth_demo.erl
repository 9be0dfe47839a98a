%% make demo: the main job end to end against the local fake IBKR server
%% (real TLS with a private CA, real signature checks, real DH), printed step
%% by step. Secrets are never printed: the LST only as a short fingerprint.
%%
%% Against real IBKR: `make demo IBKR_CONFIG=FILE' (one Erlang map, the
%% start_link/1 config) or the escript's IBKR_* environment variables
%% (IBKR_CONSUMER_KEY, ...). The same steps run, read-only: the order step is
%% skipped, the demo never places a real order.
-module(ibkr_oauth_demo).
-export([main/0]).

-spec main() -> 0 | 1.
main() ->
    logger:set_primary_config(level, warning),
    try run() of
        ok -> say("demo finished: every step succeeded"), 0
    catch
        throw:{step_failed, Step, Why} ->
            say("demo FAILED at ~ts: ~tp", [Step, Why]), 1;
        C:E:St ->
            say("demo crashed: ~p:~tp~n~tp", [C, E, St]), 1
    end.

-spec target() -> fake | {real, map()}.
target() ->
    case {os:getenv("IBKR_CONFIG"), os:getenv("IBKR_CONSUMER_KEY")} of
        {File, _} when File =/= false, File =/= "" ->
            case file:consult(File) of
                {ok, [Config]} when is_map(Config) -> {real, Config};
                Other -> throw({step_failed, "read IBKR_CONFIG " ++ File, Other})
            end;
        {_, Key} when Key =/= false, Key =/= "" ->
            case ibkr_oauth_cli:env_config(fun os:getenv/1) of
                {ok, Config} -> {real, Config};
                {error, Why} -> throw({step_failed, "read the IBKR_* environment", Why})
            end;
        _ -> fake
    end.

run() ->
    {ok, _} = application:ensure_all_started(ssl),
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Target = target(),
    Config = case Target of
                 fake ->
                     {ok, #{base_url := Url, ca_file := CaFile}} =
                         step("start the fake IBKR server (TLS, private CA, localhost only)",
                              fun() -> ibkr_fake_server:start_from_vectors(public, #{}) end),
                     ibkr_test_lib:vector_config(public, #{base_url => Url, ca_file => CaFile,
                                                           brokerage_session => true});
                 {real, Real} ->
                     say("-> real IBKR (read-only: no order is placed)"),
                     maps:merge(#{brokerage_session => true}, Real)
             end,
    BaseUrl = maps:get(base_url, Config, <<"https://api.ibkr.com/v1/api">>),
    say("   base_url ~ts", [BaseUrl]),
    {ok, S} = step("start an ibkr_oauth session (keys load, secret decrypts, prime checks)",
                   fun() -> ibkr_oauth:start_link(Config) end),
    {ok, #{expires_at := Exp}} =
        step("authenticate: DH challenge, RSA-SHA256 signed LST request, LST derived and validated",
             fun() -> ibkr_oauth:authenticate(S) end),
    {ok, #{token := Lst}} = ibkr_oauth:live_session_token(S),
    say("   live session token held in the port (fingerprint ~ts), expires ~ts",
        [fingerprint(Lst), calendar:system_time_to_rfc3339(Exp, [{unit, millisecond}])]),
    show(step("brokerage session status (ssodh/init was sent after the LST)",
              fun() -> ok_status(ibkr_oauth:request(S, get, <<"/iserver/auth/status">>, #{})) end)),
    {ok, Accounts} = step("list accounts: ibkr_oauth_api:accounts/1, GET /portfolio/accounts (HMAC-SHA256 signed)",
                          fun() -> ibkr_oauth_api:accounts(S) end),
    Acct = first_account(Accounts),
    say("   accounts: ~ts", [lists:join(", ", [maps:get(<<"accountId">>, A, <<"?">>) || A <- Accounts])]),
    {ok, Positions} =
        step(io_lib:format("positions: ibkr_oauth_api:positions/3, GET /portfolio/~ts/positions/{page}, every page", [Acct]),
             %% /portfolio/accounts (IBKR's preflight) was just sent by accounts/1
             fun() -> ibkr_oauth_api:positions(S, Acct, #{preflight => false}) end),
    say("   ~b position(s)", [length(Positions)]),
    [say("     ~ts ~p @ ~p ~ts", [maps:get(<<"contractDesc">>, P, <<"?">>), maps:get(<<"position">>, P, null),
                                  maps:get(<<"mktPrice">>, P, null), maps:get(<<"currency">>, P, <<>>)])
     || P <- lists:sublist(Positions, 5)],
    Fields = [last, bid, ask, bid_size, ask_size, volume, change, change_pct, high, low],
    {ok, Quotes} =
        step("snapshot: ibkr_oauth_api:snapshot/3, GET /iserver/accounts then /iserver/marketdata/snapshot (asked again while a feed starts)",
             fun() -> ibkr_oauth_api:snapshot(S, [265598, 8314], Fields) end),
    [say("   ~b: ~ts", [Conid, lists:join(", ", [io_lib:format("~ts=~tp", [name(F), V])
                                              || F <- Fields, {ok, V} <- [maps:find(F, Q)]])])
     || {Conid, Q} <- lists:sort(maps:to_list(Quotes))],
    Order = #{conid => 265598, orderType => <<"LMT">>, price => 150.0, side => <<"BUY">>,
              quantity => 10, tif => <<"DAY">>},
    OrderStep = "place an order: ibkr_oauth_api:place_order/4, POST /iserver/account/" ++ binary_to_list(Acct)
        ++ "/orders, confirming only o354",
    case Target of
        fake ->
            %% the fake asks what IBKR asks of an order without market data
            ok = ibkr_fake_api:configure(#{questions => [[<<"o354">>]]}),
            OnConfirm = fun(Q) ->
                                say("   IBKR asked (~ts): ~ts", [lists:join(",", maps:get(<<"messageIds">>, Q, [])),
                                                             lists:join(" ", maps:get(<<"message">>, Q, []))]),
                                say("   answered POST /iserver/reply/~ts {\"confirmed\":true}", [maps:get(<<"id">>, Q)])
                        end,
            {ok, Acks} = step(OrderStep,
                              fun() -> ibkr_oauth_api:place_order(S, Acct, [Order],
                                                                  #{confirm => [<<"o354">>], on_confirm => OnConfirm})
                              end),
            [say("   acknowledged: order ~ts, ~ts", [maps:get(<<"order_id">>, A, <<"?">>),
                                                    maps:get(<<"order_status">>, A, <<"?">>)]) || A <- Acks];
        {real, _} ->
            say("-> ~ts: skipped against real IBKR", [OrderStep])
    end,
    {ok, Auth} = step("bring your own HTTP client: sign/3 a GET with a query",
                      fun() -> ibkr_oauth:sign(S, get, <<BaseUrl/binary, "/iserver/secdef/search?symbol=AAPL">>) end),
    say("   Authorization: ~ts...", [binary:part(Auth, 0, min(72, byte_size(Auth)))]),
    stream(S, Target),
    Stats = ibkr_oauth:stats(S),
    say("   session stats: ~tp", [Stats]),
    ok = step("stop the session (POST /logout, port closed)", fun() -> ibkr_oauth:stop(S) end),
    case Target of
        fake ->
            #{handshakes := H, logouts := L} = ibkr_fake_server:stats(),
            say("   the fake server saw ~b handshake(s) and ~b logout(s)", [H, L]),
            ibkr_fake_server:stop();
        {real, _} -> ok
    end,
    ok.

%% Market data over the websocket the port holds: the first few ticks. A
%% closed market may send none: not a failure against real IBKR.
stream(S, Target) ->
    Conid = 265598,
    {ok, Sub} = step(io_lib:format("stream market data: subscribe to conid ~b (the websocket is in the port)",
                                   [Conid]),
                     fun() -> ibkr_oauth:subscribe(S, {market_data, Conid, [<<"31">>, <<"84">>, <<"86">>]}) end),
    T0 = erlang:monotonic_time(millisecond),
    Got = ticks(Sub, 3, T0 + 15000),
    case {Got, Target} of
        {0, fake} -> throw({step_failed, "stream market data", no_tick});
        {0, _} -> say("   no tick within 15 s (market closed?)");
        _ -> ok
    end,
    ok = ibkr_oauth:unsubscribe(S, Sub).

ticks(_Sub, 0, _Until) -> 3;
ticks(Sub, N, Until) ->
    receive
        {ibkr_oauth, Sub, {status, St}} ->
            say("   status ~tp", [St]),
            ticks(Sub, N, Until);
        {ibkr_oauth, Sub, {data, Tick}} ->
            Fields = maps:with([<<"31">>, <<"84">>, <<"86">>, <<"_updated">>], Tick),
            say("   tick ~tp", [Fields]),
            ticks(Sub, N - 1, Until)
    after max(0, Until - erlang:monotonic_time(millisecond)) ->
        3 - N
    end.

step(Title, Fun) ->
    say("-> ~ts", [Title]),
    T0 = erlang:monotonic_time(microsecond),
    Result = Fun(),
    Ms = (erlang:monotonic_time(microsecond) - T0) / 1000,
    case Result of
        {error, Why} -> throw({step_failed, Title, Why});
        _ -> say("   ok (~.1f ms)", [Ms]), Result
    end.

ok_status({ok, #{status := Status, body := Body}}) when Status >= 200, Status < 300 -> {Status, Body};
ok_status({ok, #{status := Status, body := Body}}) -> {error, {http, Status, Body}};
ok_status(Other) -> Other.

show({Status, Body}) -> say("   ~b ~ts", [Status, Body]).

first_account([#{<<"accountId">> := Acct} | _]) when is_binary(Acct) -> Acct;
first_account(Accounts) -> throw({step_failed, "find an account id", Accounts}).

name(F) when is_atom(F) -> atom_to_binary(F);
name(F) -> F.

fingerprint(Lst) ->
    <<Fp:4/binary, _/binary>> = crypto:hash(sha256, Lst),
    binary:encode_hex(Fp).

say(Fmt) -> say(Fmt, []).
say(Fmt, Args) -> io:format(Fmt ++ "~n", Args).
