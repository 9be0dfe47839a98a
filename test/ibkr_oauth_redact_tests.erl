%% EUnit: ibkr_oauth_redact.
-module(ibkr_oauth_redact_tests).
-include_lib("eunit/include/eunit.hrl").

-define(R, ibkr_oauth_redact).

scrub_test_() ->
    [?_assertEqual({binary, 6}, ?R:scrub(<<"secret">>)),
     ?_assertEqual({ok, #{k => {binary, 1}}, [{binary, 2}]}, ?R:scrub({ok, #{k => <<"x">>}, [<<"ab">>]})),
     ?_assertEqual(fun_redacted, ?R:scrub(fun() -> secret end)),
     ?_assertEqual([a | {binary, 1}], ?R:scrub([a | <<"t">>])),
     ?_assertEqual(42, ?R:scrub(42)),
     ?_assertEqual(atom, ?R:scrub(atom)),
     %% long lists are cut after 100 elements
     ?_assertEqual(lists:duplicate(100, 1) ++ ['...'], ?R:scrub(lists:duplicate(500, 1)))].

scrub_error_test_() ->
    Long = binary:copy(<<"x">>, 1000),
    [?_assertEqual({error, {http, 401, binary:copy(<<"x">>, 200)}}, ?R:scrub_error({error, {http, 401, Long}})),
     ?_assertEqual({error, {http, 500, <<"short">>}}, ?R:scrub_error({error, {http, 500, <<"short">>}})),
     ?_assertEqual({error, {transport, {binary, 3}}}, ?R:scrub_error({error, {transport, <<"abc">>}})),
     ?_assertEqual({ok, #{body => {binary, 2}}}, ?R:scrub_error({ok, #{body => <<"hi">>}}))].

scrub_reason_test_() ->
    Long = binary:copy(<<"x">>, 1000),
    [?_assertEqual({http, 401, binary:copy(<<"x">>, 200)}, ?R:scrub_reason({http, 401, Long})),
     ?_assertEqual({transport, {binary, 3}}, ?R:scrub_reason({transport, <<"abc">>})),
     ?_assertEqual({bad_config, signature_key, enoent}, ?R:scrub_reason({bad_config, signature_key, enoent})),
     ?_assertEqual(timeout, ?R:scrub_reason(timeout))].

config_test_() ->
    C = #{access_token_secret => <<"c2VjcmV0">>, encryption_key => {pem, <<"-----BEGIN PRIVATE KEY">>},
          signature_key => {file, <<"/k.pem">>}, consumer_key => <<"CK">>},
    R = ?R:config(C),
    [?_assertEqual(redacted, maps:get(access_token_secret, R)),
     ?_assertEqual({pem, redacted}, maps:get(encryption_key, R)),
     ?_assertEqual({file, <<"/k.pem">>}, maps:get(signature_key, R)),
     ?_assertEqual(<<"CK">>, maps:get(consumer_key, R)),
     ?_assertEqual(not_a_map, ?R:config(not_a_map)),
     ?_assertEqual(R, ibkr_oauth_config:redact(C))].
