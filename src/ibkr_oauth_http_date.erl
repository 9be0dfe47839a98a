%% @doc HTTP dates as servers send them in a `Date' header (RFC 9110
%% IMF-fixdate, "Tue, 01 Dec 2026 15:19:44 GMT"). Pure; used by the LST
%% policy (the clock skew a 401 reveals) and by the doctor.
-module(ibkr_oauth_http_date).

-export([parse/1]).

%% @doc `{ok, DateTime}' (UTC) for an IMF-fixdate, `error' for anything else
%% (other formats, an unknown month, a date that does not exist).
-spec parse(binary()) -> {ok, calendar:datetime()} | error.
parse(<<_:3/binary, ", ", D:2/binary, " ", Mon:3/binary, " ", Y:4/binary, " ",
        H:2/binary, ":", Mi:2/binary, ":", S:2/binary, " GMT">>) ->
    Months = [<<"Jan">>, <<"Feb">>, <<"Mar">>, <<"Apr">>, <<"May">>, <<"Jun">>,
              <<"Jul">>, <<"Aug">>, <<"Sep">>, <<"Oct">>, <<"Nov">>, <<"Dec">>],
    try
        M = length(lists:takewhile(fun(X) -> X =/= Mon end, Months)) + 1,
        true = M =< 12,
        DT = {{binary_to_integer(Y), M, binary_to_integer(D)},
              {binary_to_integer(H), binary_to_integer(Mi), binary_to_integer(S)}},
        true = calendar:valid_date(element(1, DT)),
        {ok, DT}
    catch
        _:_ -> error
    end;
parse(_) -> error.
