%% EUnit: recognising IBKR's error bodies (one test per row of the table in
%% the onboarding spec), the envelope parser and the advice texts.
-module(ibkr_oauth_ibkr_error_tests).
-include_lib("eunit/include/eunit.hrl").

-define(C(Status, Body), ibkr_oauth_ibkr_error:classify(Status, [], Body)).

invalid_consumer_test() ->
    ?assertEqual({ibkr, invalid_consumer,
                  #{status => 401, message => <<"invalid consumer">>, incident => 4711}},
                 ?C(401, <<"{\"error\":\"id: 4711, error: invalid consumer\",\"statusCode\":401}">>)).

no_access_secret_test() ->
    Body = <<"{\"error\":\"id: 12, LST failed, error: No access secret key found for "
             "consumer ABCDEFGHI\",\"statusCode\":401}">>,
    ?assertEqual({ibkr, no_access_secret,
                  #{status => 401, incident => 12,
                    message => <<"LST failed, error: No access secret key found for consumer ABCDEFGHI">>}},
                 ?C(401, Body)).

other_401_test() ->
    ?assertEqual({ibkr, unauthorized, #{status => 401, message => <<"invalid signature">>}},
                 ?C(401, <<"{\"error\":\"invalid signature\",\"statusCode\":401}">>)),
    %% A 401 is IBKR refusing the credentials whatever the body looks like.
    ?assertEqual({ibkr, unauthorized, #{status => 401, message => <<>>}}, ?C(401, <<>>)),
    ?assertEqual({ibkr, unauthorized, #{status => 401, message => <<>>}},
                 ?C(401, <<"<html>Unauthorized</html>">>)).

no_bridge_test() ->
    ?assertEqual({ibkr, no_bridge, #{status => 400, message => <<"Bad Request: no bridge">>}},
                 ?C(400, <<"{\"error\":\"Bad Request: no bridge\",\"statusCode\":400}">>)),
    %% key order and blanks do not matter
    ?assertMatch({ibkr, no_bridge, #{status := 400}},
                 ?C(400, <<" { \"statusCode\" : 400 , \"error\" : \"no bridge\" } ">>)).

gone_test() ->
    ?assertEqual({ibkr, gone, #{status => 410, message => <<>>}}, ?C(410, <<>>)).

sso_dh_failed_test() ->
    ?assertEqual({ibkr, sso_dh_failed,
                  #{status => 500, message => <<"failed to generate sso dh token">>}},
                 ?C(500, <<"{\"error\":\"failed to generate sso dh token\",\"statusCode\":500}">>)).

misconfigured_session_test() ->
    Body = <<"{\"error\":\"Session is misconfigured.  Please contact customer support.\"}">>,
    ?assertMatch({ibkr, misconfigured_session, #{status := 400}}, ?C(400, Body)),
    ?assertMatch({ibkr, misconfigured_session, #{status := 200}}, ?C(200, Body)).

rate_limited_test() ->
    ?assertEqual({ibkr, rate_limited, #{status => 429, message => <<"Too many requests">>}},
                 ?C(429, <<"{\"error\":\"Too many requests\",\"statusCode\":429}">>)),
    ?assertMatch({ibkr, rate_limited, #{status := 429}}, ?C(429, <<"slow down">>)).

unrecognised_test_() ->
    [?_assertEqual(http, ?C(500, <<"{\"error\":\"internal\",\"statusCode\":500}">>)),
     ?_assertEqual(http, ?C(404, <<"{\"error\":\"not found\",\"statusCode\":404}">>)),
     ?_assertEqual(http, ?C(200, <<"{\"accounts\":[]}">>)),
     ?_assertEqual(http, ?C(400, <<"no bridge">>)),            % not the envelope
     ?_assertEqual(http, ?C(400, <<"{\"error\":{\"nested\":\"no bridge\"}}">>)),
     ?_assertEqual(http, ?C(400, <<"{\"error\":\"no bridge\"">>)),   % truncated
     ?_assertEqual(http, ?C(400, <<"{\"error\":\"no bridge\"}x">>)),
     ?_assertEqual(http, ?C(400, <<"{\"error\":\"no bridge\",}">>)),
     ?_assertEqual(http, ?C(400, <<"{\"error\":\"bad \\q escape no bridge\"}">>)),
     ?_assertEqual(http, ?C(400, <<"{\"error\":\"no bridge\",\"pad\":\"",
                                   (binary:copy(<<"x">>, 5000))/binary, "\"}">>)),
     ?_assertEqual(http, ibkr_oauth_ibkr_error:classify(not_a_status, [], <<>>))].

envelope_test_() ->
    P = fun ibkr_oauth_ibkr_error:parse_envelope/1,
    [?_assertEqual({ok, <<"a\"b\\c/\n", 16#e9/utf8>>, none},
                   P(<<"{\"error\":\"a\\\"b\\\\c\\/\\n\\u00e9\",\"statusCode\":400,\"x\":null,"
                       "\"y\":true,\"z\":-1.5e3}">>)),
     ?_assertEqual({ok, <<"id: x, error: t">>, none}, P(<<"{\"error\":\"id: x, error: t\"}">>)),
     ?_assertEqual({ok, <<"t">>, 0}, P(<<"{\"error\":\"id: 0, error: t\"}">>)),
     ?_assertEqual(error, P(<<"{}">>)),
     ?_assertEqual(error, P(<<"{\"error\":5}">>)),
     ?_assertEqual(error, P(<<"[\"error\"]">>)),
     ?_assertEqual(error, P(<<"{\"error\":\"ctl \n inside\"}">>))].

from_reason_test() ->
    Body = <<"{\"error\":\"id: 3, error: invalid consumer\",\"statusCode\":401}">>,
    ?assertMatch({ibkr, invalid_consumer, #{incident := 3}},
                 ibkr_oauth_ibkr_error:from_reason({http, 401, Body})),
    ?assertEqual({http, 500, <<"x">>}, ibkr_oauth_ibkr_error:from_reason({http, 500, <<"x">>})),
    ?assertEqual(timeout, ibkr_oauth_ibkr_error:from_reason(timeout)).

advice_test_() ->
    [?_assert(byte_size(ibkr_oauth_ibkr_error:advice(K)) > 20) || K <- ibkr_oauth_ibkr_error:kinds()].

describe_test() ->
    D = ibkr_oauth_ibkr_error:describe(
          {ibkr, invalid_consumer, #{status => 401, message => <<"invalid consumer">>, incident => 9}}),
    ?assertMatch({_, _}, binary:match(D, <<"HTTP 401, incident 9">>)),
    ?assertMatch({_, _}, binary:match(D, <<"regional midnight">>)).

log_texts_test() ->
    T = ibkr_oauth_ibkr_error:lst_signature_mismatch_text(),
    [?assertMatch({_, _}, binary:match(T, W)) || W <- [<<"dh_prime">>, <<"dh_generator">>, <<"encryption_key">>]],
    Skewed = ibkr_oauth_ibkr_error:first_401_after_lst_text(#{skew_s => -90}),
    ?assertMatch({_, _}, binary:match(Skewed, <<"off by -90 s">>)),
    Fine = ibkr_oauth_ibkr_error:first_401_after_lst_text(#{skew_s => 1}),
    ?assertEqual(nomatch, binary:match(Fine, <<"clock">>)),
    ?assertMatch({_, _}, binary:match(Fine, <<"prime">>)).

%% A 429 keeps its Retry-After (seconds); one out of range or unreadable is left out.
retry_after_test_() ->
    C = fun(H) -> ibkr_oauth_ibkr_error:classify(429, H, <<>>) end,
    [?_assertMatch({ibkr, rate_limited, #{status := 429, retry_after := 60}},
                   C([{<<"Retry-After">>, <<"60">>}])),
     ?_assertEqual({ibkr, rate_limited, #{status => 429, message => <<>>}},
                   C([{<<"retry-after">>, <<"soon">>}])),
     ?_assertEqual({ibkr, rate_limited, #{status => 429, message => <<>>}}, C([])),
     %% only a 429 carries it
     ?_assertEqual({ibkr, unauthorized, #{status => 401, message => <<>>}},
                   ibkr_oauth_ibkr_error:classify(401, [{<<"retry-after">>, <<"5">>}], <<>>))].
