%% EUnit: the session's stats and its redacted status.
-module(ibkr_oauth_session_status_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, ibkr_oauth_session_status).

parts() ->
    #{counters => #{requests => 3, handshakes => 1, errors => 2, port_restarts => 0, rate_limited => 1},
      in_flight => 4, rate_limit_queued => 5,
      lst => ibkr_oauth_lst:new(#{refresh_margin => 0, brokerage_session => false}),
      stream => ibkr_oauth_stream_io:new(#{smd_refresh_interval => 60000}),
      os_pid => 42}.

stats_test() ->
    St = ?S:stats(parts(), 1700000000000),
    ?assertMatch(#{requests := 3, errors := 2, rate_limited := 1, in_flight := 4,
                   rate_limit_queued := 5, queued := 0, authenticated := false,
                   handshake_in_flight := false, expires_at := undefined, os_pid := 42}, St),
    %% the stream's own counts are part of it
    ?assert(lists:all(fun(K) -> is_map_key(K, St) end,
                      maps:keys(ibkr_oauth_stream:stats(maps:get(stream, parts()))))).

summary_test() ->
    Sum = ?S:summary(#{in_flight => 0}, #{port => undefined, base_url => <<"https://h">>,
                                           lst => maps:get(lst, parts()),
                                           keepalive => #{session => <<"secret">>}}),
    ?assertMatch(#{in_flight := 0, config := redacted, base_url := <<"https://h">>,
                   tickle := [session]}, Sum),
    ?assertNot(lists:member(<<"secret">>, maps:values(Sum))).

format_status_test() ->
    Status = #{state => st, message => {sign, <<"key">>}, reason => {bad, <<"tok">>},
               log => [{in, <<"x1">>}]},
    ?assertEqual(#{state => summarised, message => {sign, {binary, 3}},
                   reason => {bad, {binary, 3}}, log => [{in, {binary, 2}}]},
                 ?S:format_status(Status, fun(st) -> summarised end)).
