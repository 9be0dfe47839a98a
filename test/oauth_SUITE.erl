%% The OAuth crypto of the client, through the public API (ibkr_oauth:*):
%% byte-for-byte against ibind's vectors (both sets, every case), error
%% answers of lst_complete, and against an independent server side
%% (ibkr_server_crypto): 1,000 random handshakes and random signed URLs.
-module(oauth_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_suite/1, end_per_suite/1,
         init_per_group/2, end_per_group/2, init_per_testcase/2, end_per_testcase/2]).
-export([lst_request_matches_vectors/1, lst_complete_matches_vectors/1,
         sign_matches_vectors/1, sign_with_lst_option_matches_vectors/1,
         method_as_atom_or_binary/1,
         bad_dh_response/1, bad_dh_response_not_hex/1, lst_signature_mismatch/1,
         no_pending_handshake/1, pending_handshake_is_replaced/1, not_authenticated/1,
         random_handshakes/1, sign_random_urls/1, sign_random_urls_pinned/1,
         sign_query_edge_cases/1, query_signing_none/1]).

-define(C, ibkr_server_crypto).
-define(RANDOM_HANDSHAKES, 1000).
-define(RANDOM_URLS, 300).

all() -> [{group, public}, {group, testcons}].

groups() ->
    Cases = [lst_request_matches_vectors, lst_complete_matches_vectors,
             sign_matches_vectors, sign_with_lst_option_matches_vectors,
             method_as_atom_or_binary,
             bad_dh_response, bad_dh_response_not_hex, lst_signature_mismatch,
             no_pending_handshake, pending_handshake_is_replaced, not_authenticated,
             random_handshakes, sign_random_urls, sign_random_urls_pinned, sign_query_edge_cases,
             query_signing_none],
    [{public, [], Cases}, {testcons, [], Cases}].

%% Fewer random rounds under `make valgrind` (IBKR_TEST_SLOW set), where every
%% port call is tens of times slower; still enough for both K encodings.
rounds(N) ->
    case os:getenv("IBKR_TEST_SLOW") of
        false -> N;
        _ -> max(50, N div 10)
    end.

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_group(Set, Config) ->
    [{set, Set}, {server, server_side(Set)} | Config].

end_per_group(_Set, _Config) -> ok.

init_per_testcase(query_signing_none, Config) ->
    start_session(Config, #{query_signing => none});
init_per_testcase(_Case, Config) ->
    start_session(Config, #{}).

end_per_testcase(_Case, Config) ->
    ok = stop_session(?config(session, Config)).

start_session(Config, Extra) ->
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(?config(set, Config), Extra)),
    [{session, S} | Config].

stop_session(S) ->
    unlink(S),
    _ = ibkr_oauth:stop(S),
    ok.

%%% ----------------------------------------------------------------- vectors

lst_request_matches_vectors(Config) ->
    S = ?config(session, Config),
    V = vectors(Config),
    [begin
         {ok, Req} = ibkr_oauth:lst_request(S, pins(Case)),
         ?assertEqual(#{method => <<"POST">>, url => maps:get(lst_url, V),
                        authorization => maps:get(lst_authorization, Case)},
                      maps:with([method, url, authorization], Req))
     end || Case <- cases(Config)],
    ok.

lst_complete_matches_vectors(Config) ->
    S = ?config(session, Config),
    [begin
         Lst = complete_case(S, Case),
         ?assertEqual(maps:get(live_session_token, Case), Lst)
     end || Case <- cases(Config)],
    ok.

sign_matches_vectors(Config) ->
    S = ?config(session, Config),
    [begin
         _ = complete_case(S, Case),
         [?assertEqual({ok, maps:get(authorization, R)},
                       ibkr_oauth:sign(S, maps:get(method, R), request_url(R), sign_pins(R)))
          || R <- maps:get(requests, Case)]
     end || Case <- cases(Config)],
    ok.

%% sign/4 with an explicit `lst`, no handshake at all.
sign_with_lst_option_matches_vectors(Config) ->
    S = ?config(session, Config),
    [[?assertEqual({ok, maps:get(authorization, R)},
                   ibkr_oauth:sign(S, maps:get(method, R), request_url(R),
                                   (sign_pins(R))#{lst => maps:get(live_session_token, Case)}))
      || R <- maps:get(requests, Case)]
     || Case <- cases(Config)],
    ok.

method_as_atom_or_binary(Config) ->
    S = ?config(session, Config),
    [Case | _] = cases(Config),
    _ = complete_case(S, Case),
    [R = #{method := <<"GET">>} | _] = maps:get(requests, Case),
    Expected = {ok, maps:get(authorization, R)},
    ?assertEqual(Expected, ibkr_oauth:sign(S, get, request_url(R), sign_pins(R))),
    ?assertEqual(Expected, ibkr_oauth:sign(S, <<"GET">>, request_url(R), sign_pins(R))),
    ?assertEqual(Expected, ibkr_oauth:sign(S, <<"get">>, request_url(R), sign_pins(R))),
    ok.

%%% ---------------------------------------------------- lst_complete errors

%% B outside 1 < B < p-1 is refused; the pending handshake survives and the
%% right answer still completes it.
bad_dh_response(Config) ->
    S = ?config(session, Config),
    P = ?C:dh_prime(maps:get(dh_prime, vectors(Config))),
    [Case | _] = cases(Config),
    {ok, _} = ibkr_oauth:lst_request(S, pins(Case)),
    [?assertEqual({error, bad_dh_response},
                  ibkr_oauth:lst_complete(S, (answer(Case))#{diffie_hellman_response := hex(B)}))
     || B <- [0, 1, P - 1, P, P + 1]],
    ?assertEqual({error, not_authenticated}, ibkr_oauth:live_session_token(S)),
    {ok, _} = ibkr_oauth:lst_complete(S, answer(Case)),
    ?assertMatch({ok, #{token := _}}, ibkr_oauth:live_session_token(S)),
    ok.

bad_dh_response_not_hex(Config) ->
    S = ?config(session, Config),
    [Case | _] = cases(Config),
    {ok, _} = ibkr_oauth:lst_request(S, pins(Case)),
    [?assertEqual({error, bad_dh_response},
                  ibkr_oauth:lst_complete(S, (answer(Case))#{diffie_hellman_response := Bad}))
     || Bad <- [<<"xyz">>, <<>>, <<"0x1234">>, <<"12 34">>]],
    ok.

lst_signature_mismatch(Config) ->
    S = ?config(session, Config),
    [Case | _] = cases(Config),
    {ok, _} = ibkr_oauth:lst_request(S, pins(Case)),
    Sig = maps:get(live_session_token_signature, Case),
    Wrong = [flip_first_hex_digit(Sig), binary:part(Sig, 0, byte_size(Sig) - 2), <<>>,
             string:uppercase(flip_first_hex_digit(Sig))],
    [?assertEqual({error, lst_signature_mismatch},
                  ibkr_oauth:lst_complete(S, (answer(Case))#{live_session_token_signature := W}))
     || W <- Wrong],
    ?assertEqual({error, not_authenticated}, ibkr_oauth:live_session_token(S)),
    {ok, _} = ibkr_oauth:lst_complete(S, answer(Case)),
    ok.

no_pending_handshake(Config) ->
    S = ?config(session, Config),
    [Case | _] = cases(Config),
    ?assertEqual({error, no_pending_handshake}, ibkr_oauth:lst_complete(S, answer(Case))),
    _ = complete_case(S, Case),
    %% the pending handshake is consumed by a successful completion
    ?assertEqual({error, no_pending_handshake}, ibkr_oauth:lst_complete(S, answer(Case))),
    ok.

%% A second lst_request replaces the pending exponent.
pending_handshake_is_replaced(Config) ->
    S = ?config(session, Config),
    [Case1, Case2 | _] = cases(Config),
    {ok, _} = ibkr_oauth:lst_request(S, pins(Case1)),
    {ok, _} = ibkr_oauth:lst_request(S, pins(Case2)),
    ?assertEqual({error, lst_signature_mismatch}, ibkr_oauth:lst_complete(S, answer(Case1))),
    {ok, _} = ibkr_oauth:lst_complete(S, answer(Case2)),
    {ok, #{token := Lst}} = ibkr_oauth:live_session_token(S),
    ?assertEqual(maps:get(live_session_token, Case2), Lst),
    ok.

not_authenticated(Config) ->
    S = ?config(session, Config),
    ?assertEqual({error, not_authenticated}, ibkr_oauth:live_session_token(S)),
    ?assertEqual({error, not_authenticated},
                 ibkr_oauth:sign(S, get, <<"https://api.ibkr.com/v1/api/portfolio/accounts">>)),
    ok.

%%% -------------------------------------- against the independent server side

%% Random handshakes (nothing pinned): the server side parses the client's
%% Authorization, checks its RSA signature, answers the DH challenge; client
%% and server must agree on the LST. Both K encodings (with and without the
%% 0x00 byte) must occur.
random_handshakes(Config) ->
    S = ?config(session, Config),
    Server = ?config(server, Config),
    N = rounds(?RANDOM_HANDSHAKES),
    T0 = erlang:monotonic_time(millisecond),
    Results = [random_handshake(S, Server) || _ <- lists:seq(1, N)],
    Ms = erlang:monotonic_time(millisecond) - T0,
    {ZeroByte, Nonces} = lists:unzip(Results),
    WithZero = length([true || true <- ZeroByte]),
    ct:pal("~b handshakes in ~b ms; K with a 0x00 byte: ~b, without: ~b",
           [N, Ms, WithZero, N - WithZero]),
    ?assert(WithZero > 0),
    ?assert(WithZero < N),
    ?assertEqual(N, length(lists:usort(Nonces))),
    ok.

random_handshake(S, Server = #{p := P, g := G, prepend := Prepend, consumer_key := Ck, lst_url := Url}) ->
    {ok, #{authorization := Header, url := Url, method := <<"POST">>}} = ibkr_oauth:lst_request(S, #{}),
    Auth = check_lst_authorization(Header, Server),
    #{dh_response := B, k := K} = ?C:dh_server(maps:get(<<"diffie_hellman_challenge">>, Auth), G, P),
    Lst = ?C:live_session_token(K, Prepend),
    Expires = erlang:system_time(millisecond) + 86400000,
    {ok, #{expires_at := Expires}} =
        ibkr_oauth:lst_complete(S, #{diffie_hellman_response => B,
                                     live_session_token_signature => ?C:lst_signature(Lst, Ck),
                                     live_session_token_expiration => Expires}),
    {ok, #{token := ClientLst}} = ibkr_oauth:live_session_token(S),
    ?assertEqual(Lst, ClientLst),
    {?C:k_needs_zero_byte(K), maps:get(<<"oauth_nonce">>, Auth)}.

%% What a server checks on an LST request, returning the parsed header.
check_lst_authorization(Header, #{prepend := Prepend, signature_key := Key, lst_url := Url, p := P,
                                  realm := Realm, consumer_key := Ck, access_token := Token}) ->
    {ok, Auth} = ?C:parse_authorization(Header),
    ?assertMatch(#{<<"realm">> := Realm, <<"oauth_consumer_key">> := Ck, <<"oauth_token">> := Token,
                   <<"oauth_signature_method">> := <<"RSA-SHA256">>}, Auth),
    ?assertEqual(lists:sort([<<"realm">>, <<"diffie_hellman_challenge">>, <<"oauth_consumer_key">>,
                             <<"oauth_nonce">>, <<"oauth_signature">>, <<"oauth_signature_method">>,
                             <<"oauth_timestamp">>, <<"oauth_token">>]),
                 lists:sort(maps:keys(Auth))),
    ?assertMatch({match, _}, re:run(maps:get(<<"oauth_nonce">>, Auth), <<"^[A-Za-z0-9]{16}$">>)),
    Ts = binary_to_integer(maps:get(<<"oauth_timestamp">>, Auth)),
    ?assert(abs(Ts - erlang:system_time(second)) =< 5),
    Challenge = maps:get(<<"diffie_hellman_challenge">>, Auth),
    ?assertMatch({match, _}, re:run(Challenge, <<"^[1-9a-f][0-9a-f]*$">>)),
    ?assert(?C:valid_dh_value(binary_to_integer(Challenge, 16), P)),
    ?assert(?C:verify_rsa(<<"POST">>, Url, Auth, Prepend, Key)),
    Auth.

%% sign/3 (random nonce and timestamp) over random URLs with awkward query
%% strings, verified by the server side's HMAC check.
sign_random_urls(Config) ->
    S = ?config(session, Config),
    Server = ?config(server, Config),
    Lst = authenticate_with_vector(S, Config),
    [begin
         {Method, Url} = random_request(Server),
         {ok, Header} = ibkr_oauth:sign(S, Method, Url),
         Auth = check_request_authorization(Header, Server),
         ?assert(?C:verify_hmac(Method, Url, Auth, Lst)),
         ?assertNot(?C:verify_hmac(Method, with_extra_param(Url), Auth, Lst))
     end || _ <- lists:seq(1, rounds(?RANDOM_URLS))],
    ok.

%% With nonce and timestamp pinned, sign/4 equals the server side's own
%% signing byte for byte.
sign_random_urls_pinned(Config) ->
    S = ?config(session, Config),
    Server = ?config(server, Config),
    Lst = authenticate_with_vector(S, Config),
    [begin
         {Method, Url} = random_request(Server),
         Pins = #{nonce => ?C:nonce(), timestamp => rand:uniform(2000000000)},
         ?assertEqual({ok, ?C:hmac_authorization(Method, Url, Lst, maps:merge(Server, Pins))},
                      ibkr_oauth:sign(S, Method, Url, Pins))
     end || _ <- lists:seq(1, rounds(?RANDOM_URLS))],
    ok.

%% Query forms a URL may carry: '+' as a space (form encoding), a repeated
%% key, a key without '=', an empty value, lower-case escapes.
sign_query_edge_cases(Config) ->
    S = ?config(session, Config),
    Server = #{base_url := Base} = ?config(server, Config),
    Lst = authenticate_with_vector(S, Config),
    Queries = [<<"?q=a+b">>, <<"?a=2&a=1&b=0">>, <<"?flag">>, <<"?flag=&x=1">>,
               <<"?s=%e2%82%ac%2b">>, <<"?conids=265598,8314&fields=31,84,86">>],
    [begin
         Url = <<Base/binary, "/iserver/secdef/search", Query/binary>>,
         {ok, Header} = ibkr_oauth:sign(S, get, Url),
         Auth = check_request_authorization(Header, Server),
         ?assert(?C:verify_hmac(<<"GET">>, Url, Auth, Lst), Query)
     end || Query <- Queries],
    ok.

%% query_signing => none: the query is left out of the base string (ibind 0.1).
query_signing_none(Config) ->
    S = ?config(session, Config),
    Server = ?config(server, Config),
    Lst = authenticate_with_vector(S, Config),
    [begin
         {Method, Url} = random_request(Server),
         {Bare, _} = ?C:split_url(Url),
         {ok, Header} = ibkr_oauth:sign(S, Method, Url),
         Auth = check_request_authorization(Header, Server),
         ?assert(?C:verify_hmac(Method, Bare, Auth, Lst))
     end || _ <- lists:seq(1, 50)],
    ok.

check_request_authorization(Header, #{realm := Realm, consumer_key := Ck, access_token := Token}) ->
    {ok, Auth} = ?C:parse_authorization(Header),
    ?assertMatch(#{<<"realm">> := Realm, <<"oauth_consumer_key">> := Ck, <<"oauth_token">> := Token,
                   <<"oauth_signature_method">> := <<"HMAC-SHA256">>}, Auth),
    %% query parameters go into the base string only, never into the header
    ?assertEqual(lists:sort([<<"realm">>, <<"oauth_consumer_key">>, <<"oauth_nonce">>,
                             <<"oauth_signature">>, <<"oauth_signature_method">>,
                             <<"oauth_timestamp">>, <<"oauth_token">>]),
                 lists:sort(maps:keys(Auth))),
    Auth.

%%% ------------------------------------------------------ random requests

random_request(#{base_url := Base}) ->
    Method = pick([<<"GET">>, <<"POST">>, <<"PUT">>, <<"DELETE">>, <<"PATCH">>]),
    Path = iolist_to_binary([[$/, random_segment()] || _ <- lists:seq(1, rand:uniform(4))]),
    {Method, <<Base/binary, Path/binary, (random_query())/binary>>}.

random_segment() ->
    pick([<<"portfolio">>, <<"accounts">>, <<"U1234567">>, <<"iserver">>, <<"orders">>,
          <<"positions">>, <<"0">>, <<"secdef">>, <<"search">>, <<"a-b_c.d~e">>]).

%% An empty query, or 1..5 distinct keys with awkward values, percent-encoded
%% as RFC 3986 asks (space as %20, '+' as %2B).
random_query() ->
    case rand:uniform(6) of
        1 -> <<>>;
        N ->
            Keys = lists:usort([random_text(key) || _ <- lists:seq(1, N - 1)]),
            Pairs = [[pct(K), $=, pct(random_text(value))] || K <- Keys],
            iolist_to_binary([$? | lists:join($&, Pairs)])
    end.

random_text(key) ->
    iolist_to_binary([pick([<<"a">>, <<"conid">>, <<"x y">>, <<"k+">>, <<"ü"/utf8>>, <<"f_1">>])
                      || _ <- lists:seq(1, rand:uniform(2))]);
random_text(value) ->
    Pieces = [<<"AAPL">>, <<" ">>, <<"+">>, <<"&">>, <<"=">>, <<"/">>, <<"?">>, <<"%">>,
              <<"~">>, <<"é"/utf8>>, <<"€"/utf8>>, <<"日本"/utf8>>, <<"265598,8314">>, <<"31">>,
              <<"a+b/c~d=e&f">>, <<"BRK B">>, <<"#">>, <<"\"">>, <<",">>],
    iolist_to_binary([pick(Pieces) || _ <- lists:seq(1, rand:uniform(6) - 1)]).

pct(Bin) -> << <<(pct_byte(C))/binary>> || <<C>> <= Bin >>.

pct_byte(C) when C >= $A, C =< $Z; C >= $a, C =< $z; C >= $0, C =< $9;
                 C =:= $-; C =:= $.; C =:= $_; C =:= $~ -> <<C>>;
pct_byte(C) -> iolist_to_binary(io_lib:format("%~2.16.0B", [C])).

with_extra_param(Url) ->
    case binary:match(Url, <<"?">>) of
        nomatch -> <<Url/binary, "?extra=1">>;
        _ -> <<Url/binary, "&extra=1">>
    end.

pick(List) -> lists:nth(rand:uniform(length(List)), List).

%%% ---------------------------------------------------------------- helpers

vectors(Config) -> ibkr_test_lib:vectors(?config(set, Config)).

cases(Config) -> maps:get(cases, vectors(Config)).

pins(Case) -> maps:with([nonce, timestamp, dh_random], Case).

sign_pins(R) -> maps:with([nonce, timestamp], R).

answer(Case) ->
    #{diffie_hellman_response => maps:get(diffie_hellman_response, Case),
      live_session_token_signature => maps:get(live_session_token_signature, Case),
      live_session_token_expiration => erlang:system_time(millisecond) + 86400000}.

%% lst_request + lst_complete with a vector case; returns the client's LST
%% after checking expires_at is reported as given.
complete_case(S, Case) ->
    {ok, _} = ibkr_oauth:lst_request(S, pins(Case)),
    Answer = #{live_session_token_expiration := Expires} = answer(Case),
    ?assertEqual({ok, #{expires_at => Expires}}, ibkr_oauth:lst_complete(S, Answer)),
    {ok, #{token := Lst, expires_at := Expires}} = ibkr_oauth:live_session_token(S),
    Lst.

authenticate_with_vector(S, Config) ->
    [Case | _] = cases(Config),
    complete_case(S, Case).

%% The vector's URL with its decoded query appended percent-encoded.
request_url(#{url := Url, query := undefined}) -> Url;
request_url(#{url := Url, query := Pairs}) ->
    iolist_to_binary([Url, $? | lists:join($&, [[pct(K), $=, pct(V)] || [K, V] <- Pairs])]).

hex(N) -> string:lowercase(integer_to_binary(N, 16)).

flip_first_hex_digit(<<$0, Rest/binary>>) -> <<$1, Rest/binary>>;
flip_first_hex_digit(<<_, Rest/binary>>) -> <<$0, Rest/binary>>.

%% What the server side knows for a vector set: the plain secret (decrypted
%% here with the test's private encryption key), the PUBLIC signature key.
server_side(Set) ->
    V = ibkr_test_lib:vectors(Set),
    Dir = ibkr_test_lib:vector_dir(Set),
    EncKey = ?C:private_key(filename:join(Dir, "private_encryption.pem")),
    #{p => ?C:dh_prime(maps:get(dh_prime, V)), g => maps:get(dh_generator, V),
      dh_prime => maps:get(dh_prime, V),
      prepend => ?C:prepend(?C:decrypt_secret(maps:get(access_token_secret, V), EncKey)),
      signature_key => ?C:public_key(filename:join(Dir, "public_signature.pem")),
      consumer_key => maps:get(consumer_key, V), access_token => maps:get(access_token, V),
      realm => maps:get(realm, V), base_url => maps:get(base_url, V), lst_url => maps:get(lst_url, V)}.
