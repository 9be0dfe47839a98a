%% JSON in and out of request/4 (the port encodes `json' bodies and decodes
%% answers with `decode => json'), against the fake IBKR server: its /echo
%% endpoint answers the request (headers, body) as JSON, /echo/raw answers
%% the request body itself. Plus the port's own checks, on a raw port.
-module(json_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([json_body_round_trip/1, json_body_text/1, content_type_default/1, decode_answers/1,
         decode_errors/1, bad_json_terms/1, bad_options/1, limits/1, port_checks/1,
         atoms_known/1]).

-define(F, ibkr_fake_server).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [json_body_round_trip, json_body_text, content_type_default, decode_answers, decode_errors,
     bad_json_terms, bad_options, limits, port_checks, atoms_known].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(port_checks, Config) ->
    Config;
init_per_testcase(_Case, Config) ->
    {ok, #{config := Client}} = ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    {ok, S} = ibkr_oauth:start_link(Client),
    [{session, S} | Config].

end_per_testcase(port_checks, _Config) ->
    ok;
end_per_testcase(_Case, Config) ->
    S = ?config(session, Config),
    unlink(S),
    _ = (catch ibkr_oauth:stop(S)),
    ?F:stop().

%%% ----------------------------------------------------------------- cases

%% A term goes out as JSON and comes back, decoded, as the same term with
%% binary keys.
json_body_round_trip(Config) ->
    S = ?config(session, Config),
    Term = #{<<"a">> => [0, -7, 255, 70000, -(1 bsl 40), (1 bsl 64) - 2, -(1 bsl 63) + 1,
                         2.5, 0.1, 1.0e300, true, false, null],
             <<"s">> => [<<>>, <<"é €"/utf8>>, <<"q\"\\/\n\t\0\x7f">>, <<"😀"/utf8>>],
             b => #{}, 'ключ' => [[], [[]], #{c => null}],
             <<"bytes">> => "abc"},
    {ok, #{status := 200, json := Back, body := Text}} =
        ibkr_oauth:request(S, post, <<"/echo/raw">>, #{json => Term, decode => json}),
    Expected = Term#{<<"b">> => #{}, <<"ключ"/utf8>> => [[], [[]], #{<<"c">> => null}],
                     <<"bytes">> => [97, 98, 99]},
    ?assertEqual(maps:without([b, 'ключ'], Expected), Back),
    %% The text the port wrote: UTF-8 as is, only '"', '\' and controls escaped.
    ?assertNotEqual(nomatch, binary:match(Text, <<"\"é €\""/utf8>>)),
    ?assertNotEqual(nomatch, binary:match(Text, <<"\"q\\\"\\\\/\\n\\t\\u0000\x7f\"">>)),
    ?assertMatch(#{bad_signatures := 0}, ?F:stats()).

%% The exact text for a small term, seen by the server through /echo.
json_body_text(Config) ->
    S = ?config(session, Config),
    {ok, #{json := #{<<"body">> := Body, <<"method">> := <<"PUT">>}}} =
        ibkr_oauth:request(S, put, <<"/echo">>, #{json => [1, 2.5, 100.0, <<"x">>, null],
                                                  decode => json}),
    ?assertEqual(<<"[1,2.5,100.0,\"x\",null]">>, Body),
    {ok, #{json := #{<<"body">> := Obj}}} =
        ibkr_oauth:request(S, post, <<"/echo">>, #{json => #{<<"k">> => -0.5}, decode => json}),
    ?assertEqual(<<"{\"k\":-0.5}">>, Obj).

%% A non-empty body without a content-type header goes out as
%% application/json; a caller's content-type is kept (alone); an empty body
%% gets none.
content_type_default(Config) ->
    S = ?config(session, Config),
    Types = fun(Opts) ->
                    {ok, #{status := 200, json := #{<<"headers">> := Hs}}} =
                        ibkr_oauth:request(S, post, <<"/echo">>, Opts#{decode => json}),
                    [V || [N, V] <- Hs, N =:= <<"content-type">>]
            end,
    ?assertEqual([<<"application/json">>], Types(#{body => <<"{\"a\":1}">>})),
    ?assertEqual([<<"application/json">>], Types(#{body => [<<"[">>, "1", <<"]">>]})),
    ?assertEqual([<<"application/json">>], Types(#{json => #{a => 1}})),
    ?assertEqual([<<"text/plain">>],
                 Types(#{body => <<"x=1">>, headers => [{<<"Content-Type">>, <<"text/plain">>}]})),
    ?assertEqual([<<"application/vnd.x+json">>],
                 Types(#{json => [], headers => [{<<"CONTENT-TYPE">>, <<"application/vnd.x+json">>}]})),
    ?assertEqual([], Types(#{})),
    ?assertEqual([], Types(#{body => <<>>})).

%% decode => json on the fake's answers (any status); without it, no json key.
decode_answers(Config) ->
    S = ?config(session, Config),
    {ok, #{status := 200, json := Accounts, body := Raw} = R} =
        ibkr_oauth:request(S, get, <<"/portfolio/accounts">>, #{decode => json}),
    ?assertNot(is_map_key(json_error, R)),
    ?assertMatch([#{<<"id">> := <<"U1234567">>, <<"currency">> := <<"USD">>},
                  #{<<"id">> := <<"U7654321">>}], Accounts),
    ?assertMatch({match, _}, re:run(Raw, <<"U1234567">>)),
    {ok, #{json := [#{<<"conid">> := 265598, <<"mktPrice">> := 187.5, <<"position">> := Pos} | _]}} =
        ibkr_oauth:request(S, get, <<"/portfolio/U1234567/positions/0">>, #{decode => json}),
    ?assert(is_float(Pos)),
    {ok, #{status := 404, json := #{<<"error">> := <<"not found">>, <<"statusCode">> := 404}}} =
        ibkr_oauth:request(S, get, <<"/no/such/thing">>, #{decode => json}),
    {ok, Plain} = ibkr_oauth:request(S, get, <<"/portfolio/accounts">>, #{}),
    ?assertNot(is_map_key(json, Plain)),
    ?assertNot(is_map_key(json_error, Plain)).

%% A body that is not JSON: the answer carries json_error and the raw body,
%% never an error or a crash; the session goes on.
decode_errors(Config) ->
    S = ?config(session, Config),
    Cases = [{<<"not json">>, syntax}, {<<"{\"a\":1,}">>, syntax}, {<<"[1] [2]">>, syntax},
             {<<"NaN">>, number}, {<<"[-Infinity]">>, number}, {<<"  \r\n">>, empty},
             {<<"18446744073709551615">>, number}, {<<"[-9223372036854775808]">>, number},
             {<<"[\"", 255, "\"]">>, utf8}, {<<"\"", 16#ED, 16#A0, 16#80, "\"">>, utf8},
             {<<(binary:copy(<<"[">>, 129))/binary, (binary:copy(<<"]">>, 129))/binary>>, depth}, {<<"1e400">>, number},
             {<<"1", (binary:copy(<<"0">>, 410))/binary>>, number}],
    [begin
         {ok, #{status := 200, body := Body} = R} =
             ibkr_oauth:request(S, post, <<"/echo/raw">>, #{body => Body, decode => json}),
         ?assertEqual({Body, Why}, {Body, maps:get(json_error, R)}),
         ?assertNot(is_map_key(json, R))
     end || {Body, Why} <- Cases],
    {ok, #{json_error := empty, body := <<>>}} =
        ibkr_oauth:request(S, post, <<"/echo/raw">>, #{decode => json}),
    %% Valid, if unusual: the last duplicate wins, \u0000 is kept in a value
    %% and cuts a key (json-c), a lone surrogate escape is U+FFFD.
    {ok, #{json := #{<<"a">> := 2, <<"k">> := [1, 2], <<"v">> := <<"x\0", 16#FFFD/utf8>>} = J}} =
        ibkr_oauth:request(S, post, <<"/echo/raw">>,
                           #{body => <<" {\"a\":1,\"k\\u0000z\":[1,2],\"a\":2,"
                                       "\"v\":\"x\\u0000\\ud800\"} ">>, decode => json}),
    ?assertEqual(3, map_size(J)),
    {ok, #{status := 200, json := [_, _]}} =
        ibkr_oauth:request(S, get, <<"/portfolio/accounts">>, #{decode => json}),
    ?assertMatch(#{port_restarts := 0}, ibkr_oauth:stats(S)).

%% Terms that do not map to JSON are refused before anything is sent (no
%% handshake, no request at the server). Non-finite floats cannot be built
%% in Erlang; port_checks sends one in raw bytes.
bad_json_terms(Config) ->
    S = ?config(session, Config),
    Deep = lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, 128)), % 129 levels
    Bad = [{tuple}, self(), make_ref(), fun() -> ok end, undefined, ok, <<255>>,
           <<16#ED, 16#A0, 16#80>>, <<16#C0, 16#80>>, <<1:3>>, [1 | 2], [a], #{1 => 2},
           #{{k} => 1}, #{<<255>> => 1}, #{a => 1, <<"a">> => 2}, 1 bsl 1344, -(1 bsl 1344),
           1 bsl 64, (1 bsl 64) - 1, -(1 bsl 63), [-(1 bsl 200)], #{<<"a", 0>> => 1},
           #{'a\0' => 1},
           [{}], #{<<"x">> => [self()]}, Deep],
    [?assertEqual({T, {error, {badarg, json}}},
                  {T, ibkr_oauth:request(S, post, <<"/echo">>, #{json => T})}) || T <- Bad],
    ?assertMatch(#{handshakes := 0, requests := 0}, ?F:stats()).

bad_options(Config) ->
    S = ?config(session, Config),
    ?assertEqual({error, {badarg, json}},
                 ibkr_oauth:request(S, post, <<"/echo">>, #{json => [], body => <<"[]">>})),
    [?assertEqual({error, {badarg, decode}},
                  ibkr_oauth:request(S, get, <<"/echo">>, #{decode => D}))
     || D <- [true, <<"json">>, "json", none]],
    %% A JSON body with GET is refused by the port, like any body with GET.
    ?assertEqual({error, {badarg, json}}, ibkr_oauth:request(S, get, <<"/echo">>, #{json => 1})),
    ?assertMatch(#{port_restarts := 0}, ibkr_oauth:stats(S)).

%% The limits themselves are accepted: 128 levels, -2^63 + 1 and 2^64 - 2.
limits(Config) ->
    S = ?config(session, Config),
    Nest = fun(N) -> lists:foldl(fun(_, Acc) -> [Acc] end, [], lists:seq(1, N - 1)) end,
    [begin
         {ok, #{status := 200, json := Back}} =
             ibkr_oauth:request(S, post, <<"/echo/raw">>, #{json => T, decode => json}),
         ?assertEqual(T, Back)
     end || T <- [Nest(128), (1 bsl 64) - 2, -(1 bsl 63) + 1, #{<<"k">> => Nest(127)}]].

%% The port's own checks, without the Erlang side's: conflicting fields, a
%% term that is not JSON, a non-finite float (raw bytes), decode's value.
port_checks(_Config) ->
    {ok, Stub} = ibkr_http_stub:start(fun(#{body := B, headers := H}, _) ->
                                              CT = proplists:get_value(<<"content-type">>, H, <<"none">>),
                                              {200, [{<<"x-ct">>, CT}], B}
                                      end),
    {ok, P, _} = ibkr_oauth_port:open(),
    Url = <<(ibkr_http_stub:url(Stub))/binary, "/x">>,
    ok = call(P, 1, {init, port_config(#{base_url => ibkr_http_stub:url(Stub)})}),
    Post = #{method => <<"POST">>, url => Url, sign => false},
    ?assertEqual({error, {badarg, json}}, call(P, 2, {http, Post#{json => [], body => <<"[]">>}})),
    ?assertEqual({error, {badarg, json}}, call(P, 3, {http, Post#{json => {1}}})),
    ?assertEqual({error, {badarg, json}}, call(P, 4, {http, Post#{json => [<<255>>]}})),
    ?assertEqual({error, {badarg, json}},
                 call(P, 5, {http, Post#{method => <<"GET">>, json => 1}})),
    ?assertEqual({error, {badarg, decode}}, call(P, 6, {http, Post#{decode => yes}})),
    %% 1.5 as NEW_FLOAT_EXT, then the same bytes with +inf and NaN.
    {ok, Frame} = ibkr_oauth_port:encode(7, {http, Post#{json => [1.5]}}),
    OneAndHalf = <<70, 16#3F, 16#F8, 0:48>>,
    [begin
         true = port_command(P, binary:replace(Frame, OneAndHalf, <<70, NonFinite/binary>>)),
         ?assertEqual({7, {error, {badarg, json}}}, recv(P))
     end || NonFinite <- [<<16#7F, 16#F0, 0:48>>, <<16#FF, 16#F0, 0:48>>, <<16#7F, 16#F8, 0:48>>]],
    ?assertEqual(0, ibkr_http_stub:count(Stub, <<"/x">>)),
    %% And what goes out when all is well.
    {ok, #{status := 200, body := <<"{\"a\":[1,null]}">>, headers := H1, json := J1}} =
        call(P, 8, {http, Post#{json => #{a => [1, null]}, decode => json}}),
    ?assertEqual(#{<<"a">> => [1, null]}, J1),
    ?assertEqual(<<"application/json">>, proplists:get_value(<<"x-ct">>, H1)),
    {ok, #{body := <<>>, headers := H2, json_error := empty} = R2} =
        call(P, 9, {http, Post#{decode => json}}),
    ?assertNot(is_map_key(json, R2)),
    ?assertEqual(<<"none">>, proplists:get_value(<<"x-ct">>, H2)),
    ibkr_oauth_port:close(P),
    ibkr_http_stub:stop(Stub).

%% binary_to_term(_, [safe]) needs every atom a JSON answer can hold.
atoms_known(_Config) ->
    Known = ibkr_oauth_port:known_atoms(),
    ?assertEqual([], [json, decode, json_error, true, false, null, empty, syntax, utf8, depth,
                      too_large, number, nomem] -- Known).

%%% ----------------------------------------------------------------- helpers

port_config(Extra) ->
    {ok, V} = ibkr_oauth_config:validate(ibkr_test_lib:vector_config(public, Extra)),
    ibkr_oauth_config:to_port(V).

call(P, Id, Cmd) ->
    ok = ibkr_oauth_port:send(P, Id, Cmd),
    case recv(P) of
        {Id, Reply} -> Reply;
        Other -> ct:fail({unexpected_frame, Other})
    end.

recv(P) ->
    receive
        {P, {data, Bin}} ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, 0, {log, _, _}} -> recv(P);
                {ok, Id, Msg} -> {Id, Msg}
            end;
        {P, {exit_status, St}} -> ct:fail({port_exited, St})
    after 30000 -> ct:fail(no_frame)
    end.
