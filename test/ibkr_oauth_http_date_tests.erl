%% EUnit: HTTP date parsing.
-module(ibkr_oauth_http_date_tests).
-include_lib("eunit/include/eunit.hrl").

-define(D, ibkr_oauth_http_date).

parse_test_() ->
    [?_assertEqual({ok, {{2026, 12, 1}, {15, 19, 44}}}, ?D:parse(<<"Tue, 01 Dec 2026 15:19:44 GMT">>)),
     ?_assertEqual({ok, {{1994, 11, 6}, {8, 49, 37}}}, ?D:parse(<<"Sun, 06 Nov 1994 08:49:37 GMT">>)),
     ?_assertEqual(error, ?D:parse(<<"Sun, 06 Foo 1994 08:49:37 GMT">>)),
     ?_assertEqual(error, ?D:parse(<<"Sun, 31 Feb 1994 08:49:37 GMT">>)),
     ?_assertEqual(error, ?D:parse(<<"Sunday, 06-Nov-94 08:49:37 GMT">>)),
     ?_assertEqual(error, ?D:parse(<<>>))].
