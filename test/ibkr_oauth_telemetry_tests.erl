%% EUnit: ibkr_oauth_telemetry calls telemetry:execute/3 only when a
%% `telemetry' module exists. The real library is never needed: a stand-in
%% module is compiled from source here, loaded, and purged again.
-module(ibkr_oauth_telemetry_tests).
-include_lib("eunit/include/eunit.hrl").

stand_in_forms(Owner) ->
    %% -module(telemetry). -export([execute/3]).
    %% execute(E, M, Md) -> Owner ! {telemetry_event, E, M, Md}, ok.
    Src = io_lib:format(
            "-module(telemetry).~n-export([execute/3]).~n"
            "execute(E, M, Md) -> list_to_pid(~p) ! {telemetry_event, E, M, Md}, ok.~n",
            [pid_to_list(Owner)]),
    {ok, Tokens, _} = erl_scan:string(lists:flatten(Src)),
    split_forms(Tokens, [], []).

split_forms([], [], Acc) -> lists:reverse(Acc);
split_forms([{dot, _} = Dot | Rest], Cur, Acc) ->
    {ok, Form} = erl_parse:parse_form(lists:reverse([Dot | Cur])),
    split_forms(Rest, [], [Form | Acc]);
split_forms([T | Rest], Cur, Acc) -> split_forms(Rest, [T | Cur], Acc).

load_stand_in() ->
    {ok, telemetry, Bin} = compile:forms(stand_in_forms(self()), [binary]),
    {module, telemetry} = code:load_binary(telemetry, "telemetry.erl", Bin),
    ibkr_oauth_telemetry:reset().

unload_stand_in() ->
    _ = code:purge(telemetry),
    _ = code:delete(telemetry),
    _ = code:purge(telemetry),
    ibkr_oauth_telemetry:reset().

without_telemetry_test() ->
    %% This project never depends on telemetry: it is not on the code path.
    unload_stand_in(),
    ?assertEqual(non_existing, code:which(telemetry)),
    ?assertNot(ibkr_oauth_telemetry:available()),
    ?assertEqual(ok, ibkr_oauth_telemetry:execute([ibkr_oauth, request, stop], #{duration => 1}, #{})),
    receive {telemetry_event, _, _, _} -> ?assert(false) after 0 -> ok end.

with_stand_in_test() ->
    load_stand_in(),
    try
        ?assert(ibkr_oauth_telemetry:available()),
        ok = ibkr_oauth_telemetry:execute([ibkr_oauth, port, exit], #{count => 1}, #{reason => killed}),
        receive
            {telemetry_event, E, M, Md} ->
                ?assertEqual({[ibkr_oauth, port, exit], #{count => 1}, #{reason => killed}}, {E, M, Md})
        after 5000 -> ?assert(false)
        end
    after
        unload_stand_in()
    end.

cached_test() ->
    %% The check is made once: loading telemetry later is seen after reset/0.
    unload_stand_in(),
    ?assertNot(ibkr_oauth_telemetry:available()),
    {ok, telemetry, Bin} = compile:forms(stand_in_forms(self()), [binary]),
    {module, telemetry} = code:load_binary(telemetry, "telemetry.erl", Bin),
    try
        ?assertNot(ibkr_oauth_telemetry:available()),
        ok = ibkr_oauth_telemetry:reset(),
        ?assert(ibkr_oauth_telemetry:available())
    after
        unload_stand_in()
    end.

events_test() ->
    ?assertEqual(6, length(ibkr_oauth_telemetry:events())).
