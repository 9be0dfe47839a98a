%% EUnit: the Erlang-side validation of the session config
%% (ibkr_oauth_config), without the port.
-module(ibkr_oauth_config_tests).
-include_lib("eunit/include/eunit.hrl").

base() ->
    #{consumer_key => <<"ABCDEFGHI">>,
      access_token => <<"token">>,
      access_token_secret => <<"c2VjcmV0">>,
      dh_prime => <<"ff">>,
      encryption_key => {pem, <<"-----BEGIN PRIVATE KEY-----\n...">>},
      signature_key => {file, "/keys/sig.pem"}}.

validate(Extra) -> ibkr_oauth_config:validate(maps:merge(base(), Extra)).

bad(Field, Why, Extra) ->
    ?_assertEqual({error, {bad_config, Field, Why}}, validate(Extra)).

defaults_test() ->
    {ok, V} = validate(#{}),
    ?assertMatch(#{dh_generator := 2,
                   realm := <<"limited_poa">>,
                   base_url := <<"https://api.ibkr.com/v1/api">>,
                   request_timeout := 10000,
                   auto_authenticate := false,
                   brokerage_session := false,
                   tickle_interval := infinity,
                   refresh_margin := 300,
                   query_signing := params,
                   smd_refresh_interval := 540000}, V),
    ?assertNot(is_map_key(ca_file, V)),
    %% {file, Path} becomes a binary path; the file is not read here.
    ?assertEqual({file, <<"/keys/sig.pem">>}, maps:get(signature_key, V)).

testcons_realm_test() ->
    {ok, V} = validate(#{consumer_key => <<"TESTCONS">>}),
    ?assertEqual(<<"test_realm">>, maps:get(realm, V)),
    {ok, V2} = validate(#{consumer_key => <<"TESTCONS">>, realm => <<"mine">>}),
    ?assertEqual(<<"mine">>, maps:get(realm, V2)).

explicit_values_test() ->
    {ok, V} = validate(#{dh_generator => 5, base_url => <<"https://localhost:8443/v1/api/">>,
                         ca_file => "/etc/ca.pem", request_timeout => infinity,
                         auto_authenticate => true, brokerage_session => true,
                         tickle_interval => 60000, refresh_margin => 0,
                         query_signing => none, smd_refresh_interval => 1000,
                         encryption_key => {file, ["/keys/", "enc", $., <<"pem">>]}}),
    ?assertMatch(#{dh_generator := 5, base_url := <<"https://localhost:8443/v1/api">>,
                   ca_file := <<"/etc/ca.pem">>, request_timeout := infinity,
                   auto_authenticate := true, brokerage_session := true,
                   tickle_interval := 60000, refresh_margin := 0, query_signing := none,
                   smd_refresh_interval := 1000,
                   encryption_key := {file, <<"/keys/enc.pem">>}}, V),
    {ok, #{base_url := <<"http://127.0.0.1:8080">>}} = validate(#{base_url => <<"http://127.0.0.1:8080">>}).

missing_test_() ->
    [?_assertEqual({error, {bad_config, K, missing}},
                   ibkr_oauth_config:validate(maps:remove(K, base())))
     || K <- [consumer_key, access_token, access_token_secret, dh_prime,
              encryption_key, signature_key]].

not_a_map_test() ->
    ?assertEqual({error, {bad_config, config, badarg}}, ibkr_oauth_config:validate([])).

types_test_() ->
    [bad(consumer_key, badarg, #{consumer_key => "ABC"}),
     bad(consumer_key, badarg, #{consumer_key => <<>>}),
     bad(consumer_key, badarg, #{consumer_key => <<"A", 0, "B">>}),
     bad(consumer_key, too_long, #{consumer_key => binary:copy(<<"a">>, 513)}),
     bad(access_token, badarg, #{access_token => 1}),
     bad(access_token, too_long, #{access_token => binary:copy(<<"a">>, 513)}),
     bad(access_token_secret, badarg, #{access_token_secret => <<>>}),
     bad(access_token_secret, badarg, #{access_token_secret => "abc"}),
     bad(dh_prime, badarg, #{dh_prime => 17}),
     bad(encryption_key, badarg, #{encryption_key => <<"pem">>}),
     bad(encryption_key, badarg, #{encryption_key => {pem, <<>>}}),
     bad(encryption_key, badarg, #{encryption_key => {der, <<1>>}}),
     bad(signature_key, badarg, #{signature_key => {file, ""}}),
     bad(signature_key, badarg, #{signature_key => {file, <<"/a\0b">>}}),
     bad(signature_key, badarg, #{signature_key => {file, 42}}),
     bad(dh_generator, badarg, #{dh_generator => <<"2">>}),
     bad(dh_generator, too_small, #{dh_generator => 1}),
     bad(realm, badarg, #{realm => limited_poa}),
     bad(base_url, badarg, #{base_url => "https://api.ibkr.com"}),
     bad(base_url, bad_url, #{base_url => <<"ftp://api.ibkr.com">>}),
     bad(base_url, bad_url, #{base_url => <<"api.ibkr.com/v1/api">>}),
     bad(base_url, bad_url, #{base_url => <<"https://">>}),
     bad(base_url, bad_url, #{base_url => <<"https://h/x?q=1">>}),
     bad(base_url, bad_url, #{base_url => <<"https://h/a b">>}),
     bad(base_url, bad_url, #{base_url => <<"https://user:pw@h/">>}),
     bad(ca_file, badarg, #{ca_file => 1}),
     bad(request_timeout, badarg, #{request_timeout => 0}),
     bad(request_timeout, badarg, #{request_timeout => -1}),
     bad(request_timeout, badarg, #{request_timeout => 1.5}),
     bad(auto_authenticate, badarg, #{auto_authenticate => yes}),
     bad(brokerage_session, badarg, #{brokerage_session => 1}),
     bad(tickle_interval, badarg, #{tickle_interval => 0}),
     bad(refresh_margin, badarg, #{refresh_margin => -1}),
     bad(refresh_margin, badarg, #{refresh_margin => infinity}),
     bad(request_timeout, badarg, #{request_timeout => 1 bsl 32}),
     bad(tickle_interval, badarg, #{tickle_interval => 1 bsl 32}),
     bad(smd_refresh_interval, badarg, #{smd_refresh_interval => 0}),
     bad(smd_refresh_interval, badarg, #{smd_refresh_interval => infinity}),
     bad(smd_refresh_interval, badarg, #{smd_refresh_interval => 1 bsl 32}),
     bad(query_signing, badarg, #{query_signing => all})].

unknown_keys_test_() ->
    [bad(tickle_intervall, unknown_key, #{tickle_intervall => 1000}),
     %% Keys that are not atoms are the caller's business.
     ?_assertMatch({ok, _}, validate(#{<<"note">> => x, {my, tag} => 1})),
     %% The validated map keeps only known keys.
     ?_assertEqual(error, maps:find(<<"note">>, element(2, validate(#{<<"note">> => x}))))].

%% No atom is created from the input (the unknown key was an existing atom;
%% binary keys stay binaries).
no_new_atoms_test() ->
    Before = erlang:system_info(atom_count),
    _ = [validate(#{<<"k", (integer_to_binary(I))/binary>> => I}) || I <- lists:seq(1, 100)],
    ?assert(erlang:system_info(atom_count) - Before < 10).

to_port_test() ->
    {ok, V} = validate(#{tickle_interval => 5000, ca_file => <<"/ca.pem">>}),
    P = ibkr_oauth_config:to_port(V),
    ?assertEqual(lists:sort([consumer_key, access_token, access_token_secret, dh_prime,
                             dh_generator, realm, encryption_key, signature_key,
                             base_url, ca_file, query_signing]),
                 lists:sort(maps:keys(P))).

redact_test() ->
    {ok, V} = validate(#{}),
    R = ibkr_oauth_config:redact(V),
    ?assertEqual(redacted, maps:get(access_token_secret, R)),
    ?assertEqual({pem, redacted}, maps:get(encryption_key, R)),
    ?assertEqual({file, <<"/keys/sig.pem">>}, maps:get(signature_key, R)),
    Text = lists:flatten(io_lib:format("~p", [R])),
    ?assertEqual(nomatch, string:find(Text, "c2VjcmV0")),
    ?assertEqual(nomatch, string:find(Text, "BEGIN PRIVATE KEY")).

defaults_are_documented_test() ->
    ?assertEqual(lists:sort([dh_generator, base_url, request_timeout, auto_authenticate,
                             brokerage_session, tickle_interval, refresh_margin,
                             query_signing, rate_limit, smd_refresh_interval]),
                 lists:sort(maps:keys(ibkr_oauth_config:defaults()))).

rate_limit_test_() ->
    Ibkr = ibkr_oauth_ratelimit:ibkr_endpoints(),
    Ok = fun(RL) -> {ok, #{rate_limit := V}} = validate(#{rate_limit => RL}), V end,
    [?_assertEqual(#{global => 50, endpoints => Ibkr}, maps:get(rate_limit, element(2, validate(#{})))),
     ?_assertEqual(none, Ok(none)),
     ?_assertEqual(#{global => 5, endpoints => Ibkr}, Ok(#{global => 5})),
     ?_assertEqual(#{global => none, endpoints => []}, Ok(#{global => none, endpoints => []})),
     %% trailing slashes dropped: "/fyi/" means "/fyi", "/" every path
     ?_assertEqual(#{global => 50, endpoints => [{<<"/fyi">>, 1, 1000}, {<<>>, 3, 10}]},
                   Ok(#{endpoints => [{<<"/fyi/">>, 1, 1000}, {<<"/">>, 3, 10}]})),
     bad(rate_limit, badarg, #{rate_limit => 50}),
     bad(rate_limit, badarg, #{rate_limit => [{global, 50}]}),
     bad(rate_limit, unknown_key, #{rate_limit => #{globl => 50}}),
     bad(rate_limit, {global, badarg}, #{rate_limit => #{global => 0}}),
     bad(rate_limit, {global, badarg}, #{rate_limit => #{global => 100001}}),
     bad(rate_limit, {global, badarg}, #{rate_limit => #{global => 1.5}}),
     bad(rate_limit, {endpoints, badarg}, #{rate_limit => #{endpoints => nope}}),
     bad(rate_limit, {endpoints, badarg}, #{rate_limit => #{endpoints => [{<<"/a">>, 1, 1} | x]}}),
     bad(rate_limit, {endpoint, 2, badarg},
         #{rate_limit => #{endpoints => [{<<"/a">>, 1, 1}, {"/b", 1, 1}]}}),
     bad(rate_limit, {endpoint, 1, badarg}, #{rate_limit => #{endpoints => [{<<"a">>, 1, 1}]}}),
     bad(rate_limit, {endpoint, 1, badarg}, #{rate_limit => #{endpoints => [{<<"/a?b">>, 1, 1}]}}),
     bad(rate_limit, {endpoint, 1, badarg}, #{rate_limit => #{endpoints => [{<<"/a">>, 0, 1}]}}),
     bad(rate_limit, {endpoint, 1, badarg}, #{rate_limit => #{endpoints => [{<<"/a">>, 1, 0}]}}),
     bad(rate_limit, {endpoint, 1, badarg}, #{rate_limit => #{endpoints => [{<<"/a">>, 1}]}})].
