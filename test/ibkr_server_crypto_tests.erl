%% ibkr_server_crypto against ibind's vectors (both sets, every case), plus
%% its encoding helpers and a few negative checks.
-module(ibkr_server_crypto_tests).
-include_lib("eunit/include/eunit.hrl").

-define(C, ibkr_server_crypto).

%%% ------------------------------------------------------------- encoding

quote_plus_test_() ->
    [?_assertEqual(<<"AZaz09-._~">>, ?C:quote_plus(<<"AZaz09-._~">>)),
     ?_assertEqual(<<"a+b%2Bc%2F%3D%26%25">>, ?C:quote_plus(<<"a b+c/=&%">>)),
     ?_assertEqual(<<"%C3%A9%E2%82%AC">>, ?C:quote_plus(<<"é€"/utf8>>)),
     ?_assertEqual(<<"https%3A%2F%2Fh%3A1%2Fp">>, ?C:quote_plus(<<"https://h:1/p">>))].

unquote_test_() ->
    [?_assertEqual(<<"a b+c/=&">>, ?C:unquote(<<"a+b%2Bc%2f%3D%26">>)),
     ?_assertEqual(<<"100%">>, ?C:unquote(<<"100%">>)),
     ?_assertEqual(<<"%zz">>, ?C:unquote(<<"%zz">>)),
     ?_assertEqual(<<"é"/utf8>>, ?C:unquote(<<"%C3%A9">>))].

unquote_inverts_quote_plus_test() ->
    [?assertEqual(B, ?C:unquote(?C:quote_plus(B))) || B <- [crypto:strong_rand_bytes(N) || N <- lists:seq(0, 64)]].

parse_query_test_() ->
    [?_assertEqual([], ?C:parse_query(<<>>)),
     ?_assertEqual([{<<"a">>, <<"1">>}, {<<"b">>, <<"x y">>}, {<<"c">>, <<>>}],
                   ?C:parse_query(<<"a=1&b=x%20y&c">>)),
     ?_assertEqual([{<<"n">>, <<"a+b=c&d">>}], ?C:parse_query(<<"n=a%2Bb%3Dc%26d">>))].

split_url_test_() ->
    [?_assertEqual({<<"https://h/p">>, <<"a=1">>}, ?C:split_url(<<"https://h/p?a=1">>)),
     ?_assertEqual({<<"https://h/p">>, <<>>}, ?C:split_url(<<"https://h/p">>)),
     ?_assertEqual({<<"https://h/p">>, <<"a=1">>}, ?C:split_url(<<"https://h/p?a=1#frag">>))].

base_string_test_() ->
    Params = [{<<"oauth_nonce">>, <<"n">>}, {<<"b">>, <<"2 3">>}],
    [?_assertEqual(<<"GET&https%3A%2F%2Fh%2Fp&a%3D1%26b%3D2+3%26oauth_nonce%3Dn">>,
                   ?C:base_string(get, <<"https://h/p?a=1">>, Params)),
     ?_assertEqual(<<"abGET&https%3A%2F%2Fh%2Fp&b%3D2+3%26oauth_nonce%3Dn">>,
                   ?C:base_string(<<"get">>, <<"https://h/p">>, Params, <<"ab">>))].

parse_authorization_test_() ->
    [?_assertEqual({ok, #{<<"realm">> => <<"r">>, <<"a">> => <<"1">>, <<"b_c">> => <<"x%2B">>}},
                   ?C:parse_authorization(<<"OAuth realm=\"r\", a=\"1\", b_c=\"x%2B\"">>)),
     ?_assertEqual({ok, #{<<"realm">> => <<"r">>}}, ?C:parse_authorization(<<"OAuth realm=\"r\"">>)),
     ?_assertMatch({error, not_oauth}, ?C:parse_authorization(<<"Bearer x">>)),
     ?_assertMatch({error, {duplicate, <<"a">>}},
                   ?C:parse_authorization(<<"OAuth a=\"1\", a=\"2\"">>)),
     ?_assertMatch({error, _}, ?C:parse_authorization(<<"OAuth realm=r">>))].

authorization_header_round_trip_test() ->
    Params = [{<<"z">>, <<"1">>}, {<<"a">>, <<"2">>}],
    Header = ?C:authorization_header(<<"rr">>, Params),
    ?assertEqual(<<"OAuth realm=\"rr\", a=\"2\", z=\"1\"">>, Header),
    ?assertEqual({ok, maps:from_list([{<<"realm">>, <<"rr">>} | Params])}, ?C:parse_authorization(Header)).

k_bytes_test_() ->
    [?_assertEqual(<<1>>, ?C:k_bytes(1)),
     ?_assertEqual(<<16#7f>>, ?C:k_bytes(16#7f)),
     ?_assertEqual(<<0, 16#80>>, ?C:k_bytes(16#80)),
     ?_assertEqual(<<1, 0>>, ?C:k_bytes(256)),
     ?_assertEqual(<<0, 16#ff, 16#ff>>, ?C:k_bytes(16#ffff)),
     ?_assert(?C:k_needs_zero_byte(16#80)),
     ?_assertNot(?C:k_needs_zero_byte(16#7f))].

valid_dh_value_test_() ->
    P = 23,
    [?_assertEqual(Expected, ?C:valid_dh_value(Y, P))
     || {Y, Expected} <- [{0, false}, {1, false}, {2, true}, {21, true}, {22, false}, {23, false}, {24, false}]].

%%% ---------------------------------------------------------------- vectors

vectors_test_() ->
    [{atom_to_list(Set) ++ " case " ++ integer_to_list(N), fun() -> check_case(Set, Case) end}
     || Set <- [public, testcons],
        {N, Case} <- lists:enumerate(maps:get(cases, ibkr_test_lib:vectors(Set)))].

%% Both K cases (with and without the 0x00 byte) are covered by the vectors.
vectors_cover_both_k_cases_test() ->
    Flags = [maps:get(k_bitlen_multiple_of_8, C)
             || Set <- [public, testcons], C <- maps:get(cases, ibkr_test_lib:vectors(Set))],
    ?assert(lists:member(true, Flags)),
    ?assert(lists:member(false, Flags)).

check_case(Set, Case) ->
    S = session(Set),
    check_prepend(S, Case),
    check_challenge(S, Case),
    check_lst_authorization(S, Case),
    Lst = check_lst(S, Case),
    check_server_round_trip(S, Case),
    [check_request(S, Lst, R) || R <- maps:get(requests, Case)],
    ok.

check_prepend(#{prepend := Prepend}, #{prepend := Expected}) ->
    ?assertEqual(Expected, Prepend).

check_challenge(#{p := P, g := G}, #{dh_random := A, dh_challenge := Expected}) ->
    Challenge = ?C:dh_public(G, binary_to_integer(A, 16), P),
    ?assertEqual(Expected, string:lowercase(integer_to_binary(Challenge, 16))).

%% The server verifies the vector's RSA signature, rejects a tampered one,
%% and our own client-side signing reproduces the header byte for byte.
check_lst_authorization(S = #{v := V, prepend := Prepend, public_signature := Pub}, Case) ->
    #{lst_authorization := Header, nonce := Nonce, timestamp := Ts, dh_random := A} = Case,
    Url = maps:get(lst_url, V),
    {ok, Auth} = ?C:parse_authorization(Header),
    ?assertEqual(maps:get(realm, V), maps:get(<<"realm">>, Auth)),
    ?assertEqual(maps:get(dh_challenge, Case), maps:get(<<"diffie_hellman_challenge">>, Auth)),
    ?assert(?C:verify_rsa(<<"POST">>, Url, Auth, Prepend, Pub)),
    ?assertNot(?C:verify_rsa(<<"POST">>, Url, Auth, <<"00", Prepend/binary>>, Pub)),
    ?assertNot(?C:verify_rsa(<<"POST">>, <<Url/binary, "x">>, Auth, Prepend, Pub)),
    ?assertNot(?C:verify_rsa(<<"POST">>, Url, Auth#{<<"oauth_nonce">> => <<"x">>}, Prepend, Pub)),
    Pins = (client(S))#{nonce => Nonce, timestamp => Ts, dh_random => binary_to_integer(A, 16)},
    ?assertEqual({Header, binary_to_integer(A, 16)}, ?C:lst_authorization(Url, Pins)).

%% K = B^a from the vector's DH response gives the vector's LST and signature.
check_lst(#{p := P, prepend := Prepend, v := V}, Case) ->
    #{dh_random := A, diffie_hellman_response := B, live_session_token := Lst,
      live_session_token_signature := LstSig, k_bitlen_multiple_of_8 := ZeroByte} = Case,
    K = ?C:dh_shared(binary_to_integer(B, 16), binary_to_integer(A, 16), P),
    ?assertEqual(ZeroByte, ?C:k_needs_zero_byte(K)),
    ?assertEqual(Lst, ?C:live_session_token(K, Prepend)),
    ?assertEqual(LstSig, ?C:lst_signature(Lst, maps:get(consumer_key, V))),
    Lst.

%% The server side answering the vector's challenge agrees with the client
%% side holding the vector's exponent.
check_server_round_trip(#{p := P, g := G, prepend := Prepend}, Case) ->
    #{dh_random := A, dh_challenge := Challenge} = Case,
    #{dh_response := BHex, k := ServerK} = ?C:dh_server(Challenge, G, P),
    ?assert(?C:valid_dh_value(binary_to_integer(BHex, 16), P)),
    ClientK = ?C:dh_shared(binary_to_integer(BHex, 16), binary_to_integer(A, 16), P),
    ?assertEqual(ServerK, ClientK),
    ?assertEqual(?C:live_session_token(ServerK, Prepend), ?C:live_session_token(ClientK, Prepend)).

check_request(S, Lst, R = #{method := Method, url := Url0, authorization := Header}) ->
    Url = url_with_query(Url0, maps:get(query, R)),
    {ok, Auth} = ?C:parse_authorization(Header),
    ?assertEqual(<<"HMAC-SHA256">>, maps:get(<<"oauth_signature_method">>, Auth)),
    ?assert(?C:verify_hmac(Method, Url, Auth, Lst)),
    ?assertNot(?C:verify_hmac(Method, Url, Auth, base64:encode(<<"wrong">>))),
    ?assertNot(?C:verify_hmac(Method, <<Url/binary, "/x">>, Auth, Lst)),
    Client = (client(S))#{nonce => maps:get(nonce, R), timestamp => maps:get(timestamp, R)},
    ?assertEqual(Header, ?C:hmac_authorization(Method, Url, Lst, Client)),
    check_query_changes_signature(Method, Url, Auth, Lst, maps:get(query, R)).

check_query_changes_signature(_, _, _, _, undefined) -> ok;
check_query_changes_signature(Method, Url, Auth, Lst, _) ->
    {Bare, _} = ?C:split_url(Url),
    ?assertNot(?C:verify_hmac(Method, Bare, Auth, Lst)),
    ?assertNot(?C:verify_hmac(Method, <<Url/binary, "&extra=1">>, Auth, Lst)).

url_with_query(Url, undefined) -> Url;
url_with_query(Url, Pairs) ->
    Query = lists:join($&, [[?C:quote_plus(K), $=, ?C:quote_plus(V)] || [K, V] <- Pairs]),
    iolist_to_binary([Url, $?, Query]).

%%% --------------------------------------------------------- secret minting

encrypt_decrypt_secret_test() ->
    Dir = ibkr_test_lib:vector_dir(public),
    Pub = ?C:public_key(filename:join(Dir, "public_encryption.pem")),
    Priv = ?C:private_key(filename:join(Dir, "private_encryption.pem")),
    Plain = crypto:strong_rand_bytes(32),
    Minted = ?C:encrypt_secret(Plain, Pub),
    ?assertEqual(Plain, ?C:decrypt_secret(Minted, Priv)),
    ?assertEqual(?C:hex(Plain), ?C:prepend(Plain)).

nonce_test() ->
    N = ?C:nonce(),
    ?assertEqual(16, byte_size(N)),
    ?assertMatch({match, _}, re:run(N, <<"^[A-Za-z0-9]{16}$">>)),
    ?assertNotEqual(N, ?C:nonce()).

%%% ---------------------------------------------------------------- helpers

session(Set) ->
    V = ibkr_test_lib:vectors(Set),
    Dir = ibkr_test_lib:vector_dir(Set),
    Priv = ?C:private_key(filename:join(Dir, "private_encryption.pem")),
    #{v => V,
      p => ?C:dh_prime(maps:get(dh_prime, V)),
      g => maps:get(dh_generator, V),
      prepend => ?C:prepend(?C:decrypt_secret(maps:get(access_token_secret, V), Priv)),
      public_signature => ?C:public_key(filename:join(Dir, "public_signature.pem")),
      private_signature => ?C:private_key(filename:join(Dir, "private_signature.pem"))}.

client(#{v := V, prepend := Prepend, private_signature := Key}) ->
    #{consumer_key => maps:get(consumer_key, V), access_token => maps:get(access_token, V),
      realm => maps:get(realm, V), prepend => Prepend, signature_key => Key,
      dh_prime => maps:get(dh_prime, V), dh_generator => maps:get(dh_generator, V)}.
