%% EUnit: error reasons as sentences.
-module(ibkr_oauth_explain_tests).
-include_lib("eunit/include/eunit.hrl").

-define(E(R), ibkr_oauth_explain:reason(R)).
-define(E(R, C), ibkr_oauth_explain:reason(R, C)).

file_reasons_test() ->
    C = #{encryption_key => {file, "/path/x.pem"}, dh_prime => {file, <<"/d/dh.pem">>},
          ca_file => "/etc/ca.pem"},
    ?assertEqual(<<"encryption_key: /path/x.pem: no such file">>,
                 ?E({bad_config, encryption_key, enoent}, C)),
    ?assertEqual(<<"encryption_key: /path/x.pem: permission denied">>,
                 ?E({bad_config, encryption_key, eacces}, C)),
    ?assertMatch(<<"dh_prime: /d/dh.pem: the prime is a negative DER INTEGER", _/binary>>,
                 ?E({bad_config, dh_prime, negative}, C)),
    ?assertEqual(<<"ca_file: /etc/ca.pem: no such file">>, ?E({bad_config, ca_file, enoent}, C)),
    %% without the config the path is left out
    ?assertEqual(<<"encryption_key: no such file">>, ?E({bad_config, encryption_key, enoent})).

every_config_why_is_a_sentence_test_() ->
    Whys = [missing, badarg, too_long, unknown_key, enoent, eacces, eisdir, file_error, not_pem,
            not_rsa, not_base64, decrypt_failed, not_hex, not_prime, too_small, bad_url,
            not_dh_params, negative, generator_mismatch],
    [?_assertEqual(nomatch, re:run(?E({bad_config, access_token_secret, W}), "[{}]"))
     || W <- Whys].

rate_limit_test() ->
    ?assertEqual(<<"rate_limit: endpoint rule 3 is not {<<\"/path\">>, Limit, PeriodMs}">>,
                 ?E({bad_config, rate_limit, {endpoint, 3, badarg}})).

runtime_test_() ->
    [?_assertEqual(<<"network: cannot connect to the host">>, ?E({transport, connect})),
     ?_assertEqual(<<"network: cannot connect to the host">>, ?E({transport, connect, #{sent => false}})),
     ?_assertEqual(<<"network: the connection broke before the answer (the request may have reached the server)">>,
                   ?E({transport, recv, #{sent => true}})),
     ?_assertEqual(<<"no answer in time (timeout)">>, ?E(timeout)),
     ?_assertMatch(<<"IBKR invalid_consumer \"invalid consumer\" (HTTP 401, incident 5): ", _/binary>>,
                   ?E({http, 401, <<"{\"error\":\"id: 5, error: invalid consumer\",\"statusCode\":401}">>})),
     ?_assertEqual(<<"the server answered HTTP 502: (empty body)">>, ?E({http, 502, <<>>})),
     ?_assertMatch(<<"IBKR gone", _/binary>>, ?E({ibkr, gone, #{status => 410, message => <<>>}})),
     ?_assertMatch(<<"the live session token computed here", _/binary>>, ?E(lst_signature_mismatch)),
     ?_assertEqual(<<"{weird,1}">>, ?E({weird, 1}))].
