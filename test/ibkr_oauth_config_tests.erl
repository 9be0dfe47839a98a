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

%%% dh_prime as users have it: dhparam.pem, `openssl dhparam -text' hex.

tmp_file(Name, Content) ->
    Dir = filename:join(["/tmp", "ibkr_config_tests-" ++ os:getpid()]),
    File = filename:join(Dir, Name),
    ok = filelib:ensure_dir(File),
    ok = file:write_file(File, Content),
    File.

dh_pem(P, G) ->
    Der = public_key:der_encode('DHParameter', {'DHParameter', P, G, asn1_NOVALUE}),
    public_key:pem_encode([{'DHParameter', Der, not_encrypted}]).

%% A 2048-bit safe prime (RFC 3526 group 14).
modp14() ->
    binary_to_integer(<<"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF">>, 16).

dh_file_test() ->
    P = modp14(),
    File = tmp_file("dhparam.pem", dh_pem(P, 2)),
    {ok, V} = validate(#{dh_prime => {file, File}}),
    ?assertEqual(string:lowercase(integer_to_binary(P, 16)), maps:get(dh_prime, V)),
    ?assertEqual(2, maps:get(dh_generator, V)),
    %% the generator comes from the file; an explicit one must agree
    File5 = tmp_file("dhparam5.pem", dh_pem(P, 5)),
    ?assertMatch({ok, #{dh_generator := 5}}, validate(#{dh_prime => {file, File5}})),
    ?assertMatch({ok, #{dh_generator := 5}}, validate(#{dh_prime => {file, File5}, dh_generator => 5})),
    ?assertEqual({error, {bad_config, dh_generator, generator_mismatch}},
                 validate(#{dh_prime => {file, File5}, dh_generator => 2})),
    %% CRLF line endings are fine
    Crlf = binary:replace(dh_pem(P, 2), <<"\n">>, <<"\r\n">>, [global]),
    ?assertMatch({ok, #{dh_generator := 2}},
                 validate(#{dh_prime => {file, tmp_file("crlf.pem", Crlf)}})).

dh_file_errors_test_() ->
    P = modp14(),
    Neg = tmp_file("neg.pem", dh_pem(-P, 2)),
    Key = tmp_file("key.pem", public_key:pem_encode(
                                [public_key:pem_entry_encode('SubjectPublicKeyInfo',
                                  {'RSAPublicKey', 65537, 3})])),
    Junk = tmp_file("junk.pem", <<"-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n">>),
    [bad(dh_prime, negative, #{dh_prime => {file, Neg}}),
     bad(dh_prime, not_dh_params, #{dh_prime => {file, Key}}),
     bad(dh_prime, not_dh_params, #{dh_prime => {file, Junk}}),
     bad(dh_prime, enoent, #{dh_prime => {file, "/nonexistent/dhparam.pem"}}),
     bad(dh_prime, eisdir, #{dh_prime => {file, "/tmp"}}),
     bad(dh_prime, badarg, #{dh_prime => {file, 42}})].

dh_hex_forms_test_() ->
    V = fun(Hex) -> {ok, #{dh_prime := P}} = validate(#{dh_prime => Hex}), P end,
    Text = <<"    00:f7:e1:a0:85:d6:9b:3d:de:cb:bc:ab:5c:36:b8:\n"
             "    57:b9:79:94:af:bb:fa:3a:ea:82:f9:57:4c:0b:3d:\n    07:82:67\n">>,
    [?_assertEqual(<<"f7e1a085d69b3ddecbbcab5c36b857b97994afbbfa3aea82f9574c0b3d078267">>, V(Text)),
     ?_assertEqual(<<"F7E1">>, V(<<"00F7E1">>)),
     ?_assertEqual(<<"0">>, V(<<"0">>)),
     ?_assertEqual(<<"00">>, V(<<"00">>)),
     ?_assertEqual(<<"ab">>, V(<<"ab">>)),
     %% not hex after the separators are gone: left for the port (not_hex)
     ?_assertEqual(<<"0x:ff">>, V(<<"0x:ff">>)),
     ?_assertEqual(<<": \n">>, V(<<": \n">>))].
