%% EUnit for the fake servers' JSON reader (request bodies, websocket frames).
-module(ibkr_fake_json_tests).
-include_lib("eunit/include/eunit.hrl").

-define(J, ibkr_fake_json).

values_test() ->
    ?assertEqual({ok, #{<<"orders">> => [#{<<"conid">> => 265598, <<"price">> => 150.0,
                                            <<"side">> => <<"BUY">>, <<"x">> => [true, false, null]}]}},
                 ?J:decode(<<" {\"orders\": [ {\"conid\":265598,\"price\":150.0,\"side\":\"BUY\","
                             "\"x\":[true,false,null]} ] } ">>)),
    ?assertEqual({ok, #{<<"confirmed">> => true}}, ?J:decode(<<"{\"confirmed\":true}">>)),
    ?assertEqual({ok, [-1, 1.0e5, -0.0015, 0]}, ?J:decode(<<"[-1,1e5,-1.5E-3,0]">>)),
    ?assertEqual({ok, <<"a\"b\\c/\n", 16#c3, 16#a9>>}, ?J:decode(<<"\"a\\\"b\\\\c\\/\\n\\u00e9\"">>)),
    ?assertEqual({ok, #{}}, ?J:decode(<<"{}">>)),
    ?assertEqual({ok, []}, ?J:decode(<<"[]">>)).

refused_test() ->
    [?assertEqual(error, ?J:decode(B))
     || B <- [<<>>, <<"{">>, <<"{\"a\":1,}">>, <<"[1,]">>, <<"01">>, <<"tru">>, <<"\"abc">>,
              <<"1 2">>, <<"{a:1}">>, <<"\"\\x\"">>, <<"\"\\u12\"">>, <<"\"a\nb\"">>, <<"NaN">>,
              <<"{\"a\" 1}">>, not_a_binary]].

%% What websocket clients send (ibkr_fake_ws reads them with the same decoder).
ws_frames_test() ->
    ?assertEqual({ok, #{<<"fields">> => [<<"31">>, <<"84">>]}}, ?J:decode(<<"{\"fields\": [\"31\",\"84\"]}">>)),
    ?assertEqual({ok, #{}}, ?J:decode(<<" {} ">>)),
    ?assertEqual({ok, [1, -2, 1.5, 1.0e3, true, false, null, <<"a\"b\né"/utf8>>]},
                 ?J:decode(<<"[1,-2,1.5,1e3,true,false,null,\"a\\\"b\\n\\u00e9\"]"/utf8>>)),
    ?assertEqual(error, ?J:decode(<<"{\"a\":1,}">>)),
    ?assertEqual(error, ?J:decode(<<"{} x">>)),
    ?assertEqual(error, ?J:decode(<<"[01]">>)),
    ?assertEqual(error, ?J:decode(<<"\"open">>)).
