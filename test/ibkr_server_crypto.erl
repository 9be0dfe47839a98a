%% The server side of IBKR's "OAuth 1.0a extended", written independently of
%% the client (OTP crypto/public_key only, nothing from src/ or c_src/), so the
%% tests can check the client against a second implementation.
%%
%% Server side: parse an Authorization header, rebuild the base string, verify
%% the RSA-SHA256 signature of the LST request and the HMAC-SHA256 signature
%% of every other request, answer the DH challenge and derive the LST.
%% Client side (for tests that need a client without the port): mint an
%% encrypted access-token secret, sign requests and build headers.
-module(ibkr_server_crypto).

%% encoding
-export([quote_plus/1, unquote/1, hex/1, parse_query/1, split_url/1]).
%% base string and headers
-export([base_string/3, base_string/4, parse_authorization/1, authorization_header/2,
         signature_params/1]).
%% keys and the access-token secret
-export([public_key/1, private_key/1, encrypt_secret/2, decrypt_secret/2, prepend/1]).
%% signatures
-export([verify_rsa/5, verify_hmac/4, sign_rsa/5, sign_hmac/4]).
%% Diffie-Hellman and the live session token
-export([dh_prime/1, dh_exponent/0, dh_public/3, dh_server/3, dh_shared/3, k_bytes/1,
         k_needs_zero_byte/1, live_session_token/2, lst_signature/2, valid_dh_value/2]).
%% client-side conveniences for tests
-export([nonce/0, lst_authorization/2, hmac_authorization/4]).

-type params() :: [{binary(), binary()}].
-type rsa_public() :: public_key:rsa_public_key().
-type rsa_private() :: public_key:rsa_private_key().
-export_type([params/0]).

%%% ---------------------------------------------------------------- encoding

%% Python's urllib.parse.quote_plus on the UTF-8 bytes.
-spec quote_plus(iodata()) -> binary().
quote_plus(Data) ->
    << <<(quote_byte(C))/binary>> || <<C>> <= iolist_to_binary(Data) >>.

quote_byte(C) when C >= $A, C =< $Z; C >= $a, C =< $z; C >= $0, C =< $9;
                   C =:= $-; C =:= $.; C =:= $_; C =:= $~ -> <<C>>;
quote_byte($\s) -> <<"+">>;
quote_byte(C) -> <<$%, (hex_digit_upper(C bsr 4)), (hex_digit_upper(C band 15))>>.

hex_digit_upper(N) when N < 10 -> $0 + N;
hex_digit_upper(N) -> $A + N - 10.

%% Form decoding: %XX -> byte, '+' -> space. Malformed escapes stay as they are.
-spec unquote(binary()) -> binary().
unquote(Bin) -> unquote(Bin, <<>>).

unquote(<<$%, H, L, Rest/binary>>, Acc) ->
    case {hex_value(H), hex_value(L)} of
        {Hi, Lo} when is_integer(Hi), is_integer(Lo) -> unquote(Rest, <<Acc/binary, (Hi * 16 + Lo)>>);
        _ -> unquote(<<H, L, Rest/binary>>, <<Acc/binary, $%>>)
    end;
unquote(<<$+, Rest/binary>>, Acc) -> unquote(Rest, <<Acc/binary, $\s>>);
unquote(<<C, Rest/binary>>, Acc) -> unquote(Rest, <<Acc/binary, C>>);
unquote(<<>>, Acc) -> Acc.

hex_value(C) when C >= $0, C =< $9 -> C - $0;
hex_value(C) when C >= $a, C =< $f -> C - $a + 10;
hex_value(C) when C >= $A, C =< $F -> C - $A + 10;
hex_value(_) -> undefined.

%% Lower-case hex of bytes.
-spec hex(binary()) -> binary().
hex(Bin) -> << <<(hex_digit_lower(N))>> || <<N:4>> <= Bin >>.

hex_digit_lower(N) when N < 10 -> $0 + N;
hex_digit_lower(N) -> $a + N - 10.

%% "a=1&b=x%20y" -> [{<<"a">>, <<"1">>}, {<<"b">>, <<"x y">>}] (decoded).
-spec parse_query(binary()) -> params().
parse_query(<<>>) -> [];
parse_query(Query) ->
    [query_pair(Pair) || Pair <- binary:split(Query, <<"&">>, [global]), Pair =/= <<>>].

query_pair(Pair) ->
    case binary:split(Pair, <<"=">>) of
        [K, V] -> {unquote(K), unquote(V)};
        [K] -> {unquote(K), <<>>}
    end.

%% Url -> {UrlWithoutQuery, Query} (a fragment, if any, is dropped).
-spec split_url(binary()) -> {binary(), binary()}.
split_url(Url) ->
    [NoFragment | _] = binary:split(Url, <<"#">>),
    case binary:split(NoFragment, <<"?">>) of
        [Base, Query] -> {Base, Query};
        [Base] -> {Base, <<>>}
    end.

%%% ------------------------------------------------- base string and headers

%% METHOD & quote_plus(URL without query) & quote_plus(sorted k=v joined by &).
%% The decoded query parameters of Url join Params.
-spec base_string(binary() | atom(), binary(), params()) -> binary().
base_string(Method, Url, Params) ->
    {Bare, Query} = split_url(Url),
    Joined = join_params(lists:sort(Params ++ parse_query(Query))),
    iolist_to_binary([method(Method), $&, quote_plus(Bare), $&, quote_plus(Joined)]).

%% The LST request's base string: the prepend in front, no separator.
-spec base_string(binary() | atom(), binary(), params(), binary()) -> binary().
base_string(Method, Url, Params, Prepend) ->
    <<Prepend/binary, (base_string(Method, Url, Params))/binary>>.

method(M) when is_atom(M) -> method(atom_to_binary(M));
method(M) -> string:uppercase(M).

join_params(Sorted) ->
    iolist_to_binary(lists:join($&, [[K, $=, V] || {K, V} <- Sorted])).

%% <<"OAuth realm=\"r\", k=\"v\", ...">> -> {ok, #{<<"realm">> => <<"r">>, ...}}.
%% Values are returned as they appear (oauth_signature stays percent-encoded).
-spec parse_authorization(binary()) -> {ok, #{binary() => binary()}} | {error, term()}.
parse_authorization(<<"OAuth ", Rest/binary>>) -> parse_auth_params(Rest, #{});
parse_authorization(_) -> {error, not_oauth}.

parse_auth_params(Bin, Acc) ->
    case string:trim(Bin, leading, " ,") of
        <<>> -> {ok, Acc};
        Trimmed -> parse_auth_param(Trimmed, Acc)
    end.

parse_auth_param(Bin, Acc) ->
    case re:run(Bin, <<"^([A-Za-z0-9_]+)=\"([^\"]*)\"(.*)$">>,
                [{capture, all_but_first, binary}, dotall]) of
        {match, [K, _, _]} when is_map_key(K, Acc) -> {error, {duplicate, K}};
        {match, [K, V, Rest]} -> parse_auth_params(Rest, Acc#{K => V});
        nomatch -> {error, {bad_authorization, Bin}}
    end.

%% The parameters that are signed: everything in the header but realm and
%% the signature itself.
-spec signature_params(#{binary() => binary()}) -> params().
signature_params(Auth) ->
    maps:to_list(maps:without([<<"realm">>, <<"oauth_signature">>], Auth)).

%% OAuth realm="R", then every parameter sorted by key, as k="v", joined by ", ".
-spec authorization_header(binary(), params()) -> binary().
authorization_header(Realm, Params) ->
    Fields = [[K, "=\"", V, $"] || {K, V} <- lists:sort(Params)],
    iolist_to_binary(["OAuth realm=\"", Realm, "\", " | lists:join(", ", Fields)]).

%%% ------------------------------------------ keys and the access-token secret

%% An RSA public key from PEM content or a PEM file path.
-spec public_key(binary() | string()) -> rsa_public().
public_key(PemOrPath) -> decode_key(PemOrPath).

%% An RSA private key (PKCS#1 or PKCS#8 PEM) from PEM content or a file path.
-spec private_key(binary() | string()) -> rsa_private().
private_key(PemOrPath) -> decode_key(PemOrPath).

decode_key(Pem = <<"-----", _/binary>>) ->
    [Entry | _] = public_key:pem_decode(Pem),
    public_key:pem_entry_decode(Entry);
decode_key(Path) ->
    {ok, Pem} = file:read_file(Path),
    decode_key(Pem).

%% What IBKR issues: base64(RSA-PKCS#1 v1.5(public encryption key, Plain)).
-spec encrypt_secret(binary(), rsa_public()) -> binary().
encrypt_secret(Plain, PublicKey) ->
    base64:encode(public_key:encrypt_public(Plain, PublicKey, [{rsa_padding, rsa_pkcs1_padding}])).

-spec decrypt_secret(binary(), rsa_private()) -> binary().
decrypt_secret(Base64, PrivateKey) ->
    public_key:decrypt_private(base64:decode(Base64), PrivateKey, [{rsa_padding, rsa_pkcs1_padding}]).

%% The prepend: the plain secret as lower-case hex.
-spec prepend(binary()) -> binary().
prepend(PlainSecret) -> hex(PlainSecret).

%%% -------------------------------------------------------------- signatures

%% Verify an LST request: RSA-SHA256 PKCS#1 v1.5 over prepend + base string.
-spec verify_rsa(binary(), binary(), #{binary() => binary()}, binary(), rsa_public()) -> boolean().
verify_rsa(Method, Url, Auth, Prepend, PublicKey) ->
    case decoded_signature(Auth) of
        {ok, Sig} ->
            Base = base_string(Method, Url, signature_params(Auth), Prepend),
            public_key:verify(Base, sha256, Sig, PublicKey);
        error -> false
    end.

%% Verify a request signed with the LST (base64): HMAC-SHA256 over the base
%% string (query parameters of Url included), compared in constant time.
-spec verify_hmac(binary(), binary(), #{binary() => binary()}, binary()) -> boolean().
verify_hmac(Method, Url, Auth, Lst) ->
    case decoded_signature(Auth) of
        {ok, Sig} ->
            Base = base_string(Method, Url, signature_params(Auth)),
            Expected = crypto:mac(hmac, sha256, base64:decode(Lst), Base),
            byte_size(Sig) =:= byte_size(Expected) andalso crypto:hash_equals(Sig, Expected);
        error -> false
    end.

decoded_signature(#{<<"oauth_signature">> := Quoted}) ->
    try {ok, base64:decode(unquote(Quoted))}
    catch _:_ -> error
    end;
decoded_signature(_) -> error.

%% quote_plus(base64(RSA-SHA256(prepend + base string))).
-spec sign_rsa(binary(), binary(), params(), binary(), rsa_private()) -> binary().
sign_rsa(Method, Url, Params, Prepend, PrivateKey) ->
    Base = base_string(Method, Url, Params, Prepend),
    quote_plus(base64:encode(public_key:sign(Base, sha256, PrivateKey))).

%% quote_plus(base64(HMAC-SHA256(base64decode(LST), base string))).
-spec sign_hmac(binary(), binary(), params(), binary()) -> binary().
sign_hmac(Method, Url, Params, Lst) ->
    Base = base_string(Method, Url, Params),
    quote_plus(base64:encode(crypto:mac(hmac, sha256, base64:decode(Lst), Base))).

%%% ------------------------------------------ Diffie-Hellman and the LST

-spec dh_prime(binary() | integer()) -> pos_integer().
dh_prime(P) when is_integer(P) -> P;
dh_prime(Hex) -> binary_to_integer(Hex, 16).

%% A fresh 256-bit secret exponent.
-spec dh_exponent() -> pos_integer().
dh_exponent() -> binary:decode_unsigned(crypto:strong_rand_bytes(32)).

%% G^X mod P.
-spec dh_public(pos_integer(), pos_integer(), pos_integer()) -> non_neg_integer().
dh_public(G, X, P) -> mod_pow(G, X, P).

%% Y^X mod P: the shared secret K (server: A^b, client: B^a).
-spec dh_shared(non_neg_integer(), pos_integer(), pos_integer()) -> non_neg_integer().
dh_shared(Y, X, P) -> mod_pow(Y, X, P).

mod_pow(Base, Exp, Mod) ->
    case crypto:mod_pow(Base, Exp, Mod) of
        error -> 0;
        Bin -> binary:decode_unsigned(Bin)
    end.

%% The server's answer to a challenge A (hex): pick b, B = G^b, K = A^b.
-spec dh_server(binary(), pos_integer(), pos_integer()) ->
          #{b := pos_integer(), dh_response := binary(), k := non_neg_integer()}.
dh_server(ChallengeHex, G, P) ->
    A = binary_to_integer(ChallengeHex, 16),
    B = dh_exponent(),
    #{b => B,
      dh_response => int_hex(dh_public(G, B, P)),
      k => dh_shared(A, B, P)}.

%% 1 < Y < P-1
-spec valid_dh_value(integer(), pos_integer()) -> boolean().
valid_dh_value(Y, P) -> Y > 1 andalso Y < P - 1.

%% Java's BigInteger.toByteArray() for a positive K: minimal big-endian bytes,
%% one 0x00 in front when the top bit is set (bit length a multiple of 8).
-spec k_bytes(non_neg_integer()) -> binary().
k_bytes(K) ->
    case binary:encode_unsigned(K) of
        Bytes = <<1:1, _/bitstring>> -> <<0, Bytes/binary>>;
        Bytes -> Bytes
    end.

-spec k_needs_zero_byte(non_neg_integer()) -> boolean().
k_needs_zero_byte(K) -> byte_size(k_bytes(K)) > byte_size(binary:encode_unsigned(K)).

%% LST = base64(HMAC-SHA1(K bytes, the raw secret bytes = the prepend decoded
%% from hex)).
-spec live_session_token(non_neg_integer(), binary()) -> binary().
live_session_token(K, Prepend) ->
    base64:encode(crypto:mac(hmac, sha, k_bytes(K), binary:decode_hex(Prepend))).

%% hex(HMAC-SHA1(base64decode(LST), consumer key)).
-spec lst_signature(binary(), binary()) -> binary().
lst_signature(Lst, ConsumerKey) ->
    hex(crypto:mac(hmac, sha, base64:decode(Lst), ConsumerKey)).

int_hex(N) -> string:lowercase(integer_to_binary(N, 16)).

%%% ----------------------------------------- client-side conveniences

%% 16 characters from [A-Za-z0-9].
-spec nonce() -> binary().
nonce() ->
    Alphabet = <<"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789">>,
    << <<(binary:at(Alphabet, N rem 62))>> || <<N>> <= crypto:strong_rand_bytes(16) >>.

%% A complete LST request Authorization, as a client would send it.
%% Session: consumer_key, access_token, realm, prepend, signature_key (private),
%% dh_prime, dh_generator. Opts: nonce, timestamp, dh_random (integer).
%% Returns the header and the DH exponent used.
-spec lst_authorization(binary(), map()) -> {binary(), pos_integer()}.
lst_authorization(Url, Session = #{prepend := Prepend, signature_key := Key, realm := Realm}) ->
    P = dh_prime(maps:get(dh_prime, Session)),
    G = maps:get(dh_generator, Session, 2),
    A = maps:get(dh_random, Session, dh_exponent()),
    Params = [{<<"diffie_hellman_challenge">>, int_hex(dh_public(G, A, P))},
              {<<"oauth_signature_method">>, <<"RSA-SHA256">>}
              | common_params(Session)],
    Sig = sign_rsa(<<"POST">>, Url, Params, Prepend, Key),
    {authorization_header(Realm, [{<<"oauth_signature">>, Sig} | Params]), A}.

%% A request Authorization signed with Lst. Session: consumer_key,
%% access_token, realm and optionally nonce, timestamp.
-spec hmac_authorization(binary() | atom(), binary(), binary(), map()) -> binary().
hmac_authorization(Method, Url, Lst, Session = #{realm := Realm}) ->
    Params = [{<<"oauth_signature_method">>, <<"HMAC-SHA256">>} | common_params(Session)],
    Sig = sign_hmac(method(Method), Url, Params, Lst),
    authorization_header(Realm, [{<<"oauth_signature">>, Sig} | Params]).

common_params(Session = #{consumer_key := Ck, access_token := Token}) ->
    [{<<"oauth_consumer_key">>, Ck},
     {<<"oauth_nonce">>, maps:get(nonce, Session, nonce())},
     {<<"oauth_timestamp">>, integer_to_binary(maps:get(timestamp, Session, os:system_time(second)))},
     {<<"oauth_token">>, Token}].
