%% The fake IBKR servers' reader for the JSON clients send (order bodies,
%% replies, websocket frames: ibkr_fake_api, ibkr_fake_ws). Test peer only:
%% the library itself decodes JSON in the port.
%% objects -> maps with binary keys, arrays -> lists, strings -> binaries,
%% integers, floats, true/false/null atoms. Strict enough to refuse what a
%% real server would (trailing garbage, bare words, unterminated strings).
-module(ibkr_fake_json).
-export([decode/1]).

-spec decode(binary()) -> {ok, term()} | error.
decode(Bin) when is_binary(Bin) ->
    try value(skip(Bin)) of
        {V, Rest} ->
            case skip(Rest) of
                <<>> -> {ok, V};
                _ -> error
            end
    catch throw:bad -> error
    end;
decode(_) -> error.

skip(<<C, R/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> skip(R);
skip(B) -> B.

value(<<${, R/binary>>) -> members(skip(R), #{});
value(<<$[, R/binary>>) -> elements(skip(R), []);
value(<<$", R/binary>>) -> string(R, []);
value(<<"true", R/binary>>) -> {true, R};
value(<<"false", R/binary>>) -> {false, R};
value(<<"null", R/binary>>) -> {null, R};
value(B) -> number(B).

members(<<$}, R/binary>>, M) when map_size(M) =:= 0 -> {M, R};
members(<<$", R/binary>>, M) ->
    {K, R1} = string(R, []),
    case skip(R1) of
        <<$:, R2/binary>> ->
            {V, R3} = value(skip(R2)),
            case skip(R3) of
                <<$,, R4/binary>> -> members(skip(R4), M#{K => V});
                <<$}, R4/binary>> -> {M#{K => V}, R4};
                _ -> throw(bad)
            end;
        _ -> throw(bad)
    end;
members(_, _) -> throw(bad).

elements(<<$], R/binary>>, []) -> {[], R};
elements(B, Acc) ->
    {V, R1} = value(B),
    case skip(R1) of
        <<$,, R2/binary>> -> elements(skip(R2), [V | Acc]);
        <<$], R2/binary>> -> {lists:reverse([V | Acc]), R2};
        _ -> throw(bad)
    end.

string(<<$", R/binary>>, Acc) -> {iolist_to_binary(lists:reverse(Acc)), R};
string(<<$\\, $u, H:4/binary, R/binary>>, Acc) ->
    Cp = try binary_to_integer(H, 16) catch error:badarg -> throw(bad) end,
    case unicode:characters_to_binary([Cp]) of
        Utf8 when is_binary(Utf8) -> string(R, [Utf8 | Acc]);
        _ -> throw(bad)
    end;
string(<<$\\, E, R/binary>>, Acc) ->
    C = case E of
            $" -> $"; $\\ -> $\\; $/ -> $/; $b -> $\b; $f -> $\f;
            $n -> $\n; $r -> $\r; $t -> $\t;
            _ -> throw(bad)
        end,
    string(R, [C | Acc]);
string(<<C, R/binary>>, Acc) when C >= 16#20 -> string(R, [C | Acc]);
string(_, _) -> throw(bad).

number(B) ->
    case re:run(B, <<"^-?(?:0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?">>,
                [{capture, all, binary}]) of
        {match, [N | Parts]} ->
            Rest = binary:part(B, byte_size(N), byte_size(B) - byte_size(N)),
            case Parts of
                [] -> {binary_to_integer(N), Rest};
                _ -> {float(N, Parts), Rest}
            end;
        nomatch -> throw(bad)
    end.

%% "1e5" and "1.5" as Erlang floats ("1e5" needs a ".0" for binary_to_float).
float(N, [<<>>, Exp]) ->
    Mantissa = binary:part(N, 0, byte_size(N) - byte_size(Exp)),
    binary_to_float(<<Mantissa/binary, ".0", Exp/binary>>);
float(N, _) -> binary_to_float(N).
