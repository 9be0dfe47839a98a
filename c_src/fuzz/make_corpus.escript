#!/usr/bin/env escript
%% make_corpus.escript — writes the seed corpus of the fuzz harnesses:
%%   corpus/fuzz_frame/*   byte streams as the BEAM sends them on fd 3
%%                         ({packet,4} frames of term_to_binary/1 terms)
%%   corpus/fuzz_answer/*  bodies of the LST endpoint's answer
%%   corpus/fuzz_json/*    JSON texts, and term_to_binary/1 terms, for json_etf
%%   corpus/fuzz_ws/*      what a websocket server sends after the upgrade
%%                         (byte 0: mode bit and chunk size, see fuzz_ws.c)
%% Run from the repository root: escript c_src/fuzz/make_corpus.escript
%% The outputs are committed; fuzzing never writes into these directories
%% (scripts/fuzz.sh works on a copy). Re-running rewrites the same bytes.
-mode(compile).

main(_) ->
    {ok, [V]} = file:consult("test/data/vectors_testcons/vectors.terms"),
    [C | _] = maps:get(cases, V),
    Dir = "c_src/fuzz/corpus",
    [write(Dir ++ "/fuzz_frame/" ++ Name, stream(Terms)) || {Name, Terms} <- frames(V, C)],
    [write(Dir ++ "/fuzz_answer/" ++ Name, Body) || {Name, Body} <- answers(C)],
    [write(Dir ++ "/fuzz_json/" ++ Name, Bytes) || {Name, Bytes} <- json()],
    [write(Dir ++ "/fuzz_ws/" ++ Name, Bytes) || {Name, Bytes} <- ws_streams()],
    ok.

write(Path, Bytes) ->
    ok = filelib:ensure_dir(Path),
    ok = file:write_file(Path, Bytes).

%% Terms, or raw binaries standing for a frame's bytes, each with its length.
stream(Terms) ->
    << <<(frame(T))/binary>> || T <- Terms >>.

frame({raw, Bin}) -> <<(byte_size(Bin)):32, Bin/binary>>;
frame({bytes, Bin}) -> Bin; % not even a length prefix of its own
frame(T) -> frame({raw, term_to_binary(T)}).

frames(V, C) ->
    Url = <<"https://api.ibkr.com/v1/api/portfolio/accounts?b=2&a=1+x">>,
    Pins = #{nonce => maps:get(nonce, C), timestamp => maps:get(timestamp, C),
             dh_random => maps:get(dh_random, C)},
    Answer = #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
               live_session_token_signature => maps:get(live_session_token_signature, C),
               live_session_token_expiration => 4102444800000},
    Enc = read_key("private_encryption.pem"),
    Init = #{consumer_key => maps:get(consumer_key, V),
             access_token => maps:get(access_token, V),
             access_token_secret => maps:get(access_token_secret, V),
             dh_prime => <<"d5">>, % too small: refused before the primality test
             dh_generator => 2, realm => maps:get(realm, V),
             encryption_key => {pem, Enc},
             signature_key => {file, <<"/nonexistent/key.pem">>},
             base_url => maps:get(base_url, V), query_signing => none},
    [{"echo_shapes", [{1, {echo, T}} || T <- echo_terms()]},
     {"stats", [{2, stats}]},
     {"sign", [{3, {sign, <<"GET">>, Url, #{nonce => <<"abc">>, timestamp => 1795935801}}},
               {4, {sign, <<"POST">>, <<"https://h/p">>, #{}}}]},
     {"sign_lst", [{5, {sign, <<"GET">>, Url, #{lst => maps:get(live_session_token, C)}}}]},
     {"sign_bad", [{6, {sign, <<"G T">>, Url, #{}}}, {7, {sign, <<"GET">>, <<"u\0">>, #{}}},
                   {8, {sign, <<"GET">>, Url, not_a_map}},
                   {9, {sign, <<"GET">>, Url, #{lst => <<"!!">>, nonce => <<"\"">>}}}]},
     {"handshake", [{10, {lst_request, Pins}}, {11, {lst_complete, Answer}},
                    {12, live_session_token}, {13, {sign, <<"GET">>, Url, #{}}}]},
     {"lst_complete_bad",
      [{14, {lst_request, #{}}},
       {15, {lst_complete, Answer#{diffie_hellman_response => <<"zz">>}}},
       {16, {lst_complete, Answer#{diffie_hellman_response => <<"1">>}}},
       {17, {lst_complete, Answer#{live_session_token_signature => <<"00">>}}},
       {18, {lst_complete, maps:remove(live_session_token_expiration, Answer)}},
       {19, {lst_complete, []}}]},
     {"lst_request_pins", [{20, {lst_request, #{dh_random => <<"0">>}}},
                           {21, {lst_request, #{nonce => <<>>, timestamp => -1}}},
                           {22, {lst_request, #{dh_random => binary:copy(<<"f">>, 129)}}}]},
     {"http", [{23, {http, #{method => <<"POST">>, url => <<"https://127.0.0.1:1/x?y=1">>,
                             headers => [{<<"X-A">>, <<"b">>}, {<<"Authorization">>, <<"z">>}],
                             body => <<"{}">>, timeout => 1000}}},
               {24, {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/">>,
                             sign => false}}},
               {0, {cancel, 23}}]},
     {"http_bad", [{25, {http, #{method => <<"GET">>, url => <<"ftp://x/">>}}},
                   {26, {http, #{method => <<"GET">>, url => <<"http://h/">>, body => <<"x">>}}},
                   {27, {http, #{method => <<"PUT">>, url => <<"http://h/">>,
                                 headers => [{<<"a b">>, <<"c\r\n">>}]}}},
                   {28, {http, #{method => <<"GET">>, url => <<"http://h/">>,
                                 headers => [{<<"a">>, <<"b">>} | x]}}}]},
     {"http_json",
      [{1, {http, #{method => <<"POST">>, url => <<"http://127.0.0.1:1/j">>, sign => false,
                    json => #{a => [1, 2.5, <<"x"/utf8>>, null], <<"b">> => true},
                    decode => json, timeout => 1000}}},
       {2, {http, #{method => <<"PUT">>, url => <<"http://127.0.0.1:1/j">>, sign => false,
                    json => [], headers => [{<<"content-type">>, <<"text/plain">>}]}}},
       {3, {http, #{method => <<"POST">>, url => <<"http://h/">>, json => [], body => <<"[]">>}}},
       {4, {http, #{method => <<"POST">>, url => <<"http://h/">>, json => [{x}, <<255>>]}}},
       {5, {http, #{method => <<"GET">>, url => <<"http://h/">>, json => 1, decode => yes}}},
       {6, {http, #{method => <<"GET">>, url => <<"http://h/">>, json => 1}}},
       {0, {cancel, 1}}, {0, {cancel, 2}}]},
     {"authenticate", [{29, {authenticate, #{timeout => 0}}}, {30, {authenticate, #{}}},
                       {31, {cancel, 29}}, {0, {cancel, 30}}]},
     {"init_bad", [{32, {init, #{}}}, {33, {init, Init}},
                   {34, {init, Init#{signature_key => {pem, <<"-----BEGIN">>}}}},
                   {35, {init, Init#{access_token_secret => <<"%%%">>, base_url => <<"x">>}}}]},
     {"garbage", [{raw, <<131, 80, 0, 0, 0, 1, 120, 156>>}, % compressed
                  {raw, <<"not a term">>}, {raw, <<131>>},
                  {1, 2, 3}, {-1, stats}, {0, stats}, {0, {cancel, x}},
                  {36, nope}, {37, {init}}, {38, stats, x}, {39, {stats}},
                  {1 bsl 64, stats}, {40, {echo, a, b}}]},
     %% request headers: one over the count cap, exactly the cap, and (for
     %% the replay; longer than scripts/fuzz.sh's -max_len) over the byte cap
     {"http_header_cap",
      [{47, {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/">>, sign => false,
                     headers => headers(101, <<"v">>)}}},
       {48, {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/">>, sign => false,
                     headers => headers(100, <<"v">>)}}},
       {0, {cancel, 48}}]},
     {"http_header_bytes",
      [{49, {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/">>, sign => false,
                     headers => headers(9, binary:copy(<<"v">>, 8000))}}}]},
     {"timeouts", [{50, {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/">>,
                                 sign => false, timeout => 0}}},
                   {51, {http, #{method => <<"GET">>, url => <<"http://127.0.0.1:1/">>,
                                 sign => false, timeout => infinity}}},
                   {52, {authenticate, #{timeout => infinity}}},
                   {53, {http, #{method => <<"GET">>, url => <<"http://h/">>, timeout => never}}}]},
     {"sign_url", [{54, {sign, <<"GET">>, <<"/relative?a=1">>, #{}}},
                   {55, {sign, <<"GET">>, <<"ftp://h/x">>, #{}}},
                   {56, {sign, <<"GET">>, <<"https://h/", 255, 254>>, #{}}},
                   {57, {sign, <<"GET">>, <<"https://[::1]:8443/x?y=1#f">>, #{}}}]},
     {"oversized", [{bytes, <<16#01000001:32, 0, 0, 0>>}, {41, stats}]},
     {"partial_tail", [{42, stats}, {bytes, <<0, 0, 0, 9, 131, 104>>}]},
     {"batch", [{raw, <<0, (stream([{43, stats}, {44, {echo, x}},
                                    {raw, <<0, (stream([{45, stats}]))/binary>>},
                                    {raw, <<"junk">>}, {0, {cancel, 1}}]))/binary>>},
                {raw, <<0, (stream([{46, stats}]))/binary, 0, 0, 0, 99, 131>>}]}].

headers(N, Value) ->
    [{<<"x-h", (integer_to_binary(I))/binary>>, Value} || I <- lists:seq(1, N)].

echo_terms() ->
    [ok, [], <<>>, 0, -1, 16#FFFFFFFFFFFFFFFF, -(1 bsl 200), 1.5, "str", [a | b],
     {}, list_to_tuple(lists:seq(1, 300)), <<5:3>>, #{a => [1], <<"k">> => {x}},
     list_to_pid("<0.42.0>"), list_to_ref("#Ref<0.1.2.3>"), fun lists:map/2, 'atom_ü'].

read_key(Name) ->
    {ok, Bin} = file:read_file("test/data/vectors_testcons/" ++ Name),
    Bin.

answers(C) ->
    Dh = maps:get(diffie_hellman_response, C),
    Sig = maps:get(live_session_token_signature, C),
    Obj = fun(Exp) ->
                  iolist_to_binary(["{\"diffie_hellman_response\": \"", Dh,
                                    "\", \"live_session_token_signature\": \"", Sig,
                                    "\", \"live_session_token_expiration\": ", Exp, "}"])
          end,
    [{"valid.json", Obj("1795939160000")},
     {"expiration_string.json", Obj("\"1795939160000\"")},
     {"expiration_float.json", Obj("1.7e12")},
     {"expiration_negative.json", Obj("-1")},
     {"expiration_huge.json", Obj("18446744073709551616")},
     {"dh_empty.json", iolist_to_binary(string:replace(Obj("1"), ["\"", Dh, "\""], "\"\""))},
     {"dh_number.json", iolist_to_binary(string:replace(Obj("1"), ["\"", Dh, "\""], "42"))},
     {"expiration_word.json", Obj("\"soon\"")},
     {"expiration_null.json", Obj("null")},
     {"bad_dh.json", iolist_to_binary(string:replace(Obj("1"), Dh, "zz"))},
     {"bad_sig.json", iolist_to_binary(string:replace(Obj("1"), Sig, "00ff"))},
     {"missing.json", <<"{\"diffie_hellman_response\": \"ab\"}">>},
     {"trailing.json", <<(Obj("1"))/binary, " x">>},
     {"not_object.json", <<"[1, \"a\", null, true, {\"b\": -0.5e-3}]">>},
     {"escapes.json", <<"{\"diffie_hellman_response\": \"\\u0000ab\", "
                        "\"live_session_token_signature\": \"\\ud83d\\ude00\", "
                        "\"live_session_token_expiration\": 1}">>},
     {"deep.json", iolist_to_binary([lists:duplicate(40, $[), lists:duplicate(40, $])])}].

%% fuzz_json: each input is tried as JSON text and as a term, so both kinds
%% of seed go in. The texts are those an IBKR answer or a websocket frame
%% holds, plus each edge of the mapping.
json() ->
    [{"answer.json", <<"{\"accounts\":[\"DU123\",\"DU456\"],\"selectedAccount\":\"DU123\","
                       "\"allowFeatures\":{\"showGFIS\":true,\"debugPnl\":false},\"x\":null}">>},
     {"snapshot.json", <<"[{\"conid\":265598,\"31\":\"171.5\",\"84\":171.49,"
                         "\"_updated\":1712345678901,\"6509\":\"RpB\"}]">>},
     {"numbers.json", <<"[0,-0,-0.0,1e2,1E-2,2.5e+3,123.456,5e-324,1.7976931348623157e308,"
                        "9223372036854775807,-9223372036854775807,18446744073709551614,"
                        "1.5e-400]">>},
     %% json-c clamps beyond int64/uint64: the ends are refused (number)
     {"range.json", <<"[-9223372036854775808,18446744073709551615,18446744073709551616,"
                      "-123456789012345678901234567890]">>},
     {"nonfinite.json", <<"[NaN,-Infinity,1e400]">>},
     %% what json-c's strict mode takes beyond RFC 8259
     {"lenient.json", <<"[1.,-01,00,-.5,1.e5,01.5,\"\t\x01\",\"\\ud800\\u0041\"]">>},
     {"strings.json", <<"[\"\",\"a\\u0000b\",\"\\\"\\\\\\/\\b\\f\\n\\r\\t\","
                        "\"\\ud83d\\ude00\",\"caf\xc3\xa9 \xe2\x82\xac\x7f\"]">>},
     {"duplicates.json", <<"{\"a\":1,\"b\":{\"c\":2,\"c\":3},\"a\":[4],\"a\\u0000\":5}">>},
     {"deep.json", iolist_to_binary([lists:duplicate(130, $[), lists:duplicate(130, $])])},
     %% top-level scalars (json-c ends a number only at a delimiter; its null is NULL)
     {"null.json", <<"null">>}, {"integer.json", <<"-12">>}, {"float.json", <<" 1E-2 ">>},
     {"string.json", <<"\"a\\u0000\"">>},
     {"bad_utf8.json", <<"[\"\xed\xa0\x80\",\"\\ud800\"]">>},
     {"bad_syntax.json", <<"{\"a\":[1,],\"b\":NaN, 01}">>},
     {"term_map.etf", term_to_binary(#{a => [1, 2.5, <<"x"/utf8>>], <<"k">> => #{},
                                        b => null, c => true, d => [], e => "str"})},
     {"term_numbers.etf", term_to_binary([0, -1, 255, 70000, -(1 bsl 40), (1 bsl 64) - 2,
                                          -(1 bsl 63) + 1, 0.1, -0.0, 1.0e300, 5.0e-324])},
     {"term_big.etf", term_to_binary([1 bsl 64, (1 bsl 64) - 1, -(1 bsl 63), -(1 bsl 200)])},
     {"term_nul_key.etf", term_to_binary(#{<<"a", 0>> => 1})},
     {"term_bad.etf", term_to_binary([{tuple}, undefined, <<255>>, <<1:3>>, [a | b]])},
     {"term_dup_key.etf", term_to_binary(#{a => 1, <<"a">> => 2})},
     %% found by fuzzing: an empty map (no key list to check), then junk
     {"term_empty_map.etf", <<131, 116, 0:32, 0, 1, "aa", 2>>},
     %% found by fuzzing: an ATOM_UTF8_EXT key that is not UTF-8 (ei does not check)
     {"term_atom_key_not_utf8.etf", <<131, 116, 1:32, 119, 2, $a, 16#83, 97, 1>>}].
%% Server -> client websocket bytes. Mode byte: bit 0 = starts with the
%% answer to the upgrade; the rest = chunk size - 1.
ws_streams() ->
    Chunk = fun(N) -> (N - 1) bsl 1 end,
    Accept = <<"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=">>, % for fuzz_ws.c's fixed key
    Head = <<"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Accept: ", Accept/binary, "\r\n\r\n">>,
    Sys = <<"{\"topic\":\"system\",\"success\":\"u1\",\"isFT\":false,\"isPaper\":true}">>,
    Sts = <<"{\"topic\":\"sts\",\"args\":{\"authenticated\":true,\"competing\":false}}">>,
    Smd = <<"{\"topic\":\"smd+265598\",\"conid\":265598,\"_updated\":1700000000000,"
            "\"31\":\"189.60\",\"84\":\"189.59\"}">>,
    [{"messages", <<(Chunk(16)), (wsf(1, 1, Sys))/binary, (wsf(1, 1, Sts))/binary,
                    (wsf(1, 1, Smd))/binary, (wsf(1, 1, <<"{\"topic\":\"system\",\"hb\":1}">>))/binary>>},
     {"fragmented_ping", <<(Chunk(3)), (wsf(0, 1, <<"{\"a\":">>))/binary, (wsf(0, 0, <<"1">>))/binary,
                           (wsf(1, 9, <<"ping">>))/binary, (wsf(1, 0, <<"2}">>))/binary>>},
     {"close", <<(Chunk(64)), (wsf(1, 1, <<"bye soon">>))/binary,
                 (wsf(1, 8, <<1001:16, "nightly reset">>))/binary>>},
     {"close_empty", <<(Chunk(1)), (wsf(1, 8, <<>>))/binary>>},
     {"close_bad_code", <<(Chunk(8)), (wsf(1, 8, <<999:16>>))/binary>>},
     {"masked", <<(Chunk(8)), 16#81, 16#82, 1, 2, 3, 4, (${ bxor 1), ($} bxor 2)>>},
     {"too_large", <<(Chunk(128)), (wsf(1, 1, binary:copy(<<"x">>, 1025)))/binary>>},
     {"too_large_fragments", <<(Chunk(128)), (wsf(0, 2, binary:copy(<<"y">>, 600)))/binary,
                               (wsf(1, 0, binary:copy(<<"y">>, 600)))/binary>>},
     {"len64", <<(Chunk(100)), 16#82, 127, 0:32, 70000:32, 0, 1, 2, 3>>},
     {"bad_utf8", <<(Chunk(4)), (wsf(1, 1, <<"ok ", 16#c3, 16#28>>))/binary>>},
     {"pong_and_binary", <<(Chunk(5)), (wsf(1, 10, <<"p">>))/binary, (wsf(1, 2, <<0, 255>>))/binary>>},
     {"reserved_opcode", <<(Chunk(2)), (wsf(1, 3, <<"?">>))/binary>>},
     {"head_101", <<(Chunk(10) + 1), Head/binary, (wsf(1, 1, Sys))/binary, (wsf(1, 9, <<>>))/binary>>},
     {"head_401", <<(Chunk(7) + 1), "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno">>},
     {"head_bad_accept", <<(Chunk(30) + 1), (binary:replace(Head, <<"xOo=">>, <<"xOp=">>))/binary>>}].

%% A server frame (never masked).
wsf(Fin, Op, Payload) ->
    Len = byte_size(Payload),
    LenBits = if Len < 126 -> <<0:1, Len:7>>;
                 Len < 65536 -> <<0:1, 126:7, Len:16>>;
                 true -> <<0:1, 127:7, Len:64>>
              end,
    <<Fin:1, 0:3, Op:4, LenBits/binary, Payload/binary>>.
