%% EUnit: the doctor's pure pieces (primality, line format);
%% the checks themselves run in onboarding_SUITE against the fake server.
-module(ibkr_oauth_doctor_tests).
-include_lib("eunit/include/eunit.hrl").

-define(D, ibkr_oauth_doctor).

primes_test_() ->
    Modp14 = binary_to_integer(<<"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF">>, 16),
    [?_assert(?D:probable_prime(P)) || P <- [2, 3, 5, 7, 101, 7919, (1 bsl 61) - 1, Modp14, (Modp14 - 1) div 2]]
    ++ [?_assertNot(?D:probable_prime(N))
        || N <- [0, 1, 4, 9, 561, 41041, 825265, 3215031751,   % Carmichael and strong pseudoprimes
                 ((1 bsl 61) - 1) * ((1 bsl 31) - 1), Modp14 + 2, Modp14 * 3]].

format_line_test_() ->
    [?_assertEqual(<<"ok   dh_prime: 2048 bits"/utf8>>, ?D:format_line({ok, dh_prime, <<"2048 bits">>, <<>>})),
     ?_assertEqual(<<"FAIL realm: test_realm — use limited_poa"/utf8>>,
                   ?D:format_line({fail, realm, <<"test_realm">>, <<"use limited_poa">>})),
     ?_assertEqual(<<"warn clock: 9 s — NTP"/utf8>>, ?D:format_line({warn, clock, <<"9 s">>, <<"NTP">>}))].

not_a_map_test() ->
    ?assertMatch([{config, {fail, _}}], ibkr_oauth_doctor:run(not_a_map)),
    ?assert(ibkr_oauth_doctor:failed(ibkr_oauth_doctor:run([]))).
