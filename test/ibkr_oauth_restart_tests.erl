%% EUnit: ibkr_oauth_restart (the bounded port restart).
-module(ibkr_oauth_restart_tests).
-include_lib("eunit/include/eunit.hrl").

-define(R, ibkr_oauth_restart).

exits(Times) ->
    lists:foldl(fun(T, {Acc, R}) -> {D, R1} = ?R:exited(T, R), {[D | Acc], R1} end,
                {[], ?R:new()}, Times).

five_then_give_up_test() ->
    {Ds, _} = exits([0, 1000, 2000, 3000, 4000, 5000]),
    ?assertEqual([restart, restart, restart, restart, restart, give_up], lists:reverse(Ds)).

window_test() ->
    %% exits older than 30 s are forgotten
    {Ds, _} = exits([0, 1000, 2000, 3000, 4000, 30000, 31000]),
    ?assertEqual(lists:duplicate(7, restart), Ds),
    {Ds2, _} = exits([0, 1000, 2000, 3000, 4000, 29999]),
    ?assertEqual(give_up, hd(Ds2)),
    ?assertEqual({5, 30000}, {?R:max(), ?R:window()}).
