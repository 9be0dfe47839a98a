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

helpers_test() ->
    load_stand_in(),
    try
        Meta = #{method => get, path => <<"/x">>, attempt => 1},
        Start = ibkr_oauth_telemetry:request_start(Meta),
        ?assertMatch({[ibkr_oauth, request, start], #{system_time := _, monotonic_time := Start}, Meta},
                     next_event()),
        ok = ibkr_oauth_telemetry:request_stop(Start, #{queued_ms => 3}, Meta#{status => 200}),
        {[ibkr_oauth, request, stop], #{duration := D, queued_ms := 3}, #{status := 200}} = next_event(),
        ?assert(is_integer(D) andalso D >= 0),
        ok = ibkr_oauth_telemetry:request_exception(Start, #{}, Meta#{reason => timeout}),
        ?assertMatch({[ibkr_oauth, request, exception], #{duration := _}, #{reason := timeout}}, next_event()),
        ok = ibkr_oauth_telemetry:handshake_stop(Start, #{result => ok}),
        ?assertMatch({[ibkr_oauth, handshake, stop], #{duration := _}, #{result := ok}}, next_event()),
        ok = ibkr_oauth_telemetry:rate_limit_queued(40, #{path => <<"/x">>}),
        ?assertMatch({[ibkr_oauth, rate_limit, queued], #{queued_ms := 40}, _}, next_event()),
        ok = ibkr_oauth_telemetry:port_exit(killed, 123),
        ?assertMatch({[ibkr_oauth, port, exit], #{count := 1}, #{reason := killed, os_pid := 123}}, next_event())
    after
        unload_stand_in()
    end.

next_event() ->
    receive {telemetry_event, E, M, Md} -> {E, M, Md}
    after 5000 -> timeout
    end.
