%% EUnit: which port commands a caller may send through a session.
-module(ibkr_oauth_passthrough_tests).
-include_lib("eunit/include/eunit.hrl").

-define(P, ibkr_oauth_passthrough).
-define(NOW, 1700000000000).

%% An LST policy holding an LST that expires at E.
held(E) ->
    L0 = ibkr_oauth_lst:new(#{refresh_margin => 0, brokerage_session => false}),
    {_, L} = ibkr_oauth_lst:installed(E, ?NOW - 1000, L0),
    L.

none() -> ibkr_oauth_lst:new(#{refresh_margin => 0, brokerage_session => false}).

allowed_test_() ->
    L = none(),
    [?_assertEqual(ok, ?P:check({sign, get, <<"https://x/y">>, #{}}, ?NOW, L)),
     ?_assertEqual(ok, ?P:check({lst_request, #{}}, ?NOW, L)),
     ?_assertEqual(ok, ?P:check(live_session_token, ?NOW, L)),
     ?_assertEqual(ok, ?P:check({echo, <<"x">>}, ?NOW, L)),
     ?_assertEqual(ok, ?P:check(stats, ?NOW, L))].

refused_test_() ->
    L = none(),
    [?_assertEqual(badarg, ?P:check(C, ?NOW, L))
     || C <- [{init, #{}}, {http, #{}}, {authenticate, #{}}, {cancel, 1},
              {ws_open, #{}}, {ws_send, 1, <<>>}, {ws_close, 1}, nonsense]].

expired_lst_test_() ->
    Valid = held(?NOW + 3600000),
    Expired = held(?NOW + 1000),
    Later = ?NOW + 2000,
    [?_assertEqual(ok, ?P:check({sign, get, <<"u">>, #{}}, ?NOW, Valid)),
     ?_assertEqual(lst_expired, ?P:check({sign, get, <<"u">>, #{}}, Later, Expired)),
     %% an LST given in the options is the caller's business
     ?_assertEqual(ok, ?P:check({sign, get, <<"u">>, #{lst => <<"k">>}}, Later, Expired)),
     %% only sign uses the session's LST
     ?_assertEqual(ok, ?P:check(live_session_token, Later, Expired))].
