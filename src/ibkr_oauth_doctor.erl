%% @doc `ibkr_oauth doctor': checks a session config the way IBKR will, and
%% says which step is wrong and what to do.
%%
%% Offline checks first (key files, DH parameters, consumer key, realm, the
%% access-token secret), then, unless `offline', the online steps in order,
%% stopping at the first that fails: the server's clock (`Date' header),
%% the live session token, the brokerage session (`ssodh/init'), `/tickle',
%% `GET /iserver/accounts', the websocket (opened with the tickle's
%% `session': `system', `act' and `sts' authenticated within 5 s, then a
%% `tic' answered; its decisions are {@link ibkr_oauth_doctor_ws}).
%% Nothing secret is ever shown: keys appear as SHA-256 fingerprints of
%% their public half.
%%
%% The port program does the crypto (`init' decrypts the secret) and the
%% HTTPS, in a process of its own: the caller's mailbox is not touched.
-module(ibkr_oauth_doctor).

-include_lib("public_key/include/public_key.hrl").
-include_lib("kernel/include/file.hrl").

-export([run/1, run/2, report/2, format_line/1, failed/1]).

-export_type([check/0, result/0, line/0]).

-ifdef(TEST).
-export([probable_prime/1, tickle_answer/1]).
-endif.

-type check() :: atom().
-type result() :: ok | {warn, binary()} | {fail, binary()}.
%% A report line: level, check, what was found, what to do (may be empty).
-type line() :: {ok | warn | fail, check(), binary(), binary()}.

-define(SKEW_WARN_S, 5).
-define(HTTP_TIMEOUT, 15000).
-define(PLACEHOLDERS, [<<"PASTE_ACCESS_TOKEN_HERE">>, <<"PASTE_ACCESS_TOKEN_SECRET_HERE">>]).

%% @equiv run(Config, #{})
-spec run(term()) -> [{check(), result()}].
run(Config) -> run(Config, #{}).

%% @doc The checks as `{Check, ok | {warn, Text} | {fail, Text}}', in the
%% order they ran.
-spec run(term(), #{offline => boolean()}) -> [{check(), result()}].
run(Config, Opts) ->
    [{C, case L of
             ok -> ok;
             warn -> {warn, text(F, A)};
             fail -> {fail, text(F, A)}
         end} || {L, C, F, A} <- report(Config, Opts)].

-spec text(binary(), binary()) -> binary().
text(F, <<>>) -> F;
text(F, A) -> <<F/binary, " — "/utf8, A/binary>>.

%% @doc True when a report (of {@link run/2} or {@link report/2}) has a
%% failed check.
-spec failed([{check(), result()}] | [line()]) -> boolean().
failed(Report) ->
    lists:any(fun({_, {fail, _}}) -> true;
                 ({fail, _, _, _}) -> true;
                 (_) -> false
              end, Report).

%% @doc One line: `ok|warn|FAIL <check>: <found> — <advice>'.
-spec format_line(line()) -> binary().
format_line({Level, Check, Found, Advice}) ->
    L = case Level of ok -> <<"ok  ">>; warn -> <<"warn">>; fail -> <<"FAIL">> end,
    unicode:characters_to_binary([L, " ", atom_to_binary(Check), ": ", text(Found, Advice)]).

%% @doc The checks with what was found and the advice kept apart (what the
%% CLI prints).
-spec report(term(), #{offline => boolean()}) -> [line()].
report(Config, Opts) ->
    Caller = self(),
    {Pid, Ref} = spawn_monitor(fun() -> Caller ! {self(), safe_checks(Config, Opts)} end),
    receive
        {Pid, Lines} ->
            erlang:demonitor(Ref, [flush]),
            Lines;
        {'DOWN', Ref, process, Pid, _Why} ->
            %% The reason is not shown: it could hold the config (the secret).
            [{fail, doctor, <<"the doctor itself failed">>, <<"please report this">>}]
    end.

%% A failure inside a check must not crash the worker: its crash report
%% would print the stack's arguments, i.e. the config and its secret.
-spec safe_checks(term(), map()) -> [line()].
safe_checks(Config, Opts) ->
    try checks(Config, Opts)
    catch
        Class:_ -> [{fail, doctor, <<"the doctor itself failed (", (atom_to_binary(Class))/binary, ")">>,
                     <<"please report this">>}]
    end.

%%% ================================================================ checks

-spec checks(term(), map()) -> [line()].
checks(Config, _Opts) when not is_map(Config) ->
    [{fail, config, <<"not a map">>, <<"the config is one Erlang map, the start_link/1 config">>}];
checks(Config, Opts) ->
    {ConfigLine, Valid} = case ibkr_oauth_config:validate(Config) of
                              {ok, V} -> {{ok, config, <<"valid">>, <<>>}, V};
                              {error, R} -> {{fail, config, ibkr_oauth_explain:reason(R, Config), <<>>}, undefined}
                          end,
    Offline = [ConfigLine, placeholders(Config)]
        ++ key_checks(signature_key, Config) ++ key_checks(encryption_key, Config)
        ++ [permissions(Config)]
        ++ dh_checks(Config)
        ++ [consumer_key(Config), realm(Config), secret_length(Config)],
    case {failed(Offline), Valid} of
        {false, #{}} -> Offline ++ with_port(Valid, maps:get(offline, Opts, false));
        _ -> Offline
    end.

-spec placeholders(map()) -> line().
placeholders(Config) ->
    case [K || K <- [access_token, access_token_secret],
               lists:member(maps:get(K, Config, undefined), ?PLACEHOLDERS)] of
        [] -> {ok, placeholders, <<"none left">>, <<>>};
        Ks -> {fail, placeholders,
               iolist_to_binary(["still the setup placeholder: ", lists:join(", ", [atom_to_binary(K) || K <- Ks])]),
               <<"press Generate Token in the portal and paste the access token and secret">>}
    end.

%%% ----------------------------------------------------------- key files

-spec read_pem(term()) -> {ok, binary(), file:filename() | none} | {error, binary()}.
read_pem({pem, Pem}) when is_binary(Pem) -> {ok, Pem, none};
read_pem({file, Path}) ->
    case file:read_file(Path) of
        {ok, B} -> {ok, B, Path};
        {error, Why} -> {error, unicode:characters_to_binary(
                                  [filename:flatten(Path), ": ", file:format_error(Why)])}
    end;
read_pem(_) -> {error, <<"not {file, Path} or {pem, Pem}">>}.

-spec key_checks(signature_key | encryption_key, map()) -> [line()].
key_checks(Field, Config) ->
    case read_pem(maps:get(Field, Config, undefined)) of
        {error, Why} -> [{fail, Field, Why, <<>>}];
        {ok, Pem, Path} ->
            case private_key(Pem) of
                {ok, Form, Key} ->
                    Bits = bits(Key#'RSAPrivateKey'.modulus),
                    Found = iolist_to_binary([Form, " RSA-", integer_to_binary(Bits), ", ",
                                              fingerprint(public(Key)), crlf_note(Pem)]),
                    Line = case Bits of
                               2048 -> {ok, Field, Found, <<>>};
                               _ -> {fail, Field, Found, <<"IBKR wants RSA-2048 keys (ibkr_oauth setup makes them)">>}
                           end,
                    [Line | public_sibling(Field, Path, public(Key))];
                {error, Why} -> [{fail, Field, Why, <<"an unencrypted RSA private key in PEM, PKCS#8 or PKCS#1">>}]
            end
    end.

-spec crlf_note(binary()) -> binary().
crlf_note(Pem) ->
    case binary:match(Pem, <<"\r">>) of
        nomatch -> <<>>;
        _ -> <<" (CRLF line endings: fine here)">>
    end.

-spec private_key(binary()) -> {ok, binary(), #'RSAPrivateKey'{}} | {error, binary()}.
private_key(Pem) ->
    try public_key:pem_decode(Pem) of
        [] -> {error, <<"no PEM block">>};
        [{_, _, Enc} | _] when Enc =/= not_encrypted -> {error, <<"encrypted PEM (the port needs it unencrypted)">>};
        [{'RSAPrivateKey', _, _} = E | _] -> rsa_private(E, <<"PKCS#1">>);
        [{'PrivateKeyInfo', _, _} = E | _] -> rsa_private(E, <<"PKCS#8">>);
        [{Type, _, _} | _] -> {error, iolist_to_binary(["not a private key: ", atom_to_binary(Type)])}
    catch
        _:_ -> {error, <<"not a valid PEM">>}
    end.

-spec rsa_private(public_key:pem_entry(), binary()) -> {ok, binary(), #'RSAPrivateKey'{}} | {error, binary()}.
rsa_private(Entry, Form) ->
    try public_key:pem_entry_decode(Entry) of
        #'RSAPrivateKey'{} = K -> {ok, Form, K};
        _ -> {error, <<Form/binary, " but not RSA">>}
    catch
        _:_ -> {error, <<Form/binary, " that does not decode">>}
    end.

-spec public(#'RSAPrivateKey'{}) -> #'RSAPublicKey'{}.
public(#'RSAPrivateKey'{modulus = N, publicExponent = E}) -> #'RSAPublicKey'{modulus = N, publicExponent = E}.

-spec bits(pos_integer()) -> non_neg_integer().
bits(N) -> length(integer_to_list(N, 2)).

-spec fingerprint(#'RSAPublicKey'{}) -> binary().
fingerprint(Pub) ->
    Hash = crypto:hash(sha256, public_key:der_encode('RSAPublicKey', Pub)),
    <<"SHA256:", (binary:encode_hex(binary:part(Hash, 0, 8)))/binary>>.

%% public_signature.pem next to private_signature.pem (the layout of setup):
%% parses, SubjectPublicKeyInfo, LF endings, and the pair matches.
-spec public_sibling(signature_key | encryption_key, file:filename() | none, #'RSAPublicKey'{}) -> [line()].
public_sibling(_, none, _) -> [];
public_sibling(Field, Path, Pub) ->
    Base = filename:basename(Path),
    case string:replace(Base, "private", "public") of
        [Base] -> [];
        Parts ->
            File = filename:join(filename:dirname(Path), unicode:characters_to_list(Parts)),
            Check = case Field of
                        signature_key -> public_signature_key;
                        encryption_key -> public_encryption_key
                    end,
            case file:read_file(File) of
                {ok, Pem} -> [public_file(Check, File, Pem, Pub)];
                {error, _} -> []
            end
    end.

-spec public_file(atom(), file:filename(), binary(), #'RSAPublicKey'{}) -> line().
public_file(Check, File, Pem, Pub) ->
    Name = unicode:characters_to_binary(filename:flatten(File)),
    Decoded = try public_key:pem_decode(Pem) of
                  [{'SubjectPublicKeyInfo', _, not_encrypted} = E | _] -> {spki, public_key:pem_entry_decode(E)};
                  [{'RSAPublicKey', _, not_encrypted} = E | _] -> {pkcs1, public_key:pem_entry_decode(E)};
                  _ -> error
              catch _:_ -> error
              end,
    HasCr = binary:match(Pem, <<"\r">>) =/= nomatch,
    case Decoded of
        error -> {fail, Check, <<Name/binary, ": not a PEM public key">>, <<"upload a BEGIN PUBLIC KEY PEM">>};
        {_, Key} when Key =/= Pub ->
            {fail, Check, <<Name/binary, ": does not match the private key (", (fingerprint_any(Key))/binary, ")">>,
             <<"upload the public half of the private key in the config">>};
        _ when HasCr ->
            {fail, Check, <<Name/binary, ": CRLF line endings">>,
             <<"the portal answers 403 \"failed to put consumer info\": convert to LF (dos2unix) and upload again">>};
        {pkcs1, _} ->
            {warn, Check, <<Name/binary, ": PKCS#1 (BEGIN RSA PUBLIC KEY), matches the private key">>,
             <<"the portal expects SubjectPublicKeyInfo: openssl rsa -RSAPublicKey_in -in F -pubout">>};
        {spki, _} -> {ok, Check, <<Name/binary, ": matches the private key">>, <<>>}
    end.

-spec fingerprint_any(term()) -> binary().
fingerprint_any(#'RSAPublicKey'{} = K) -> fingerprint(K);
fingerprint_any(_) -> <<"not RSA">>.

-spec permissions(map()) -> line().
permissions(Config) ->
    Loose = [P || K <- [signature_key, encryption_key],
                  {file, P} <- [maps:get(K, Config, undefined)],
                  {ok, #file_info{mode = M}} <- [file:read_file_info(P)],
                  M band 8#077 =/= 0],
    case Loose of
        [] -> {ok, key_permissions, <<"key files readable by their owner only">>, <<>>};
        _ -> {warn, key_permissions,
              unicode:characters_to_binary(["readable by group or others: ",
                                            lists:join(", ", [filename:flatten(P) || P <- Loose])]),
              <<"chmod 600 the private key files">>}
    end.

%%% -------------------------------------------------------- DH parameters

-spec dh_checks(map()) -> [line()].
dh_checks(Config) ->
    Given = maps:get(dh_generator, Config, undefined),
    case dh_prime(maps:get(dh_prime, Config, undefined), Config) of
        {error, Why, Advice} -> [{fail, dh_prime, Why, Advice}];
        {ok, P, FileG, From} ->
            G = case {Given, FileG} of
                    {undefined, none} -> 2;
                    {undefined, FG} -> FG;
                    {GG, _} -> GG
                end,
            [prime_line(P, From), generator_line(G, FileG)]
    end.

-spec dh_prime(term(), map()) -> {ok, pos_integer(), pos_integer() | none, binary()} | {error, binary(), binary()}.
dh_prime({file, Path}, _Config) ->
    case file:read_file(Path) of
        {ok, Pem} -> dh_pem(Pem, unicode:characters_to_binary(filename:flatten(Path)));
        {error, Why} -> {error, unicode:characters_to_binary([filename:flatten(Path), ": ", file:format_error(Why)]), <<>>}
    end;
dh_prime(Hex0, Config) when is_binary(Hex0) ->
    Hex = ibkr_oauth_config:normalize_hex(Hex0),
    try binary_to_integer(Hex, 16) of
        P when P > 3 -> compare_sibling(P, Config);
        _ -> {error, <<"hex prime too small">>, <<>>}
    catch
        _:_ -> {error, <<"not hex">>, <<"the prime as hex, e.g. from dh_prime.hex or openssl dhparam -text">>}
    end;
dh_prime(_, _) -> {error, <<"missing or not a hex binary / {file, Path}">>, <<>>}.

-spec dh_pem(binary(), binary()) -> {ok, pos_integer(), pos_integer(), binary()} | {error, binary(), binary()}.
dh_pem(Pem, Name) ->
    case ibkr_oauth_config:dh_params(Pem) of
        {ok, #{prime := P, generator := G}} -> {ok, P, G, Name};
        {error, negative} ->
            {error, <<Name/binary, ": the prime is a negative DER INTEGER">>,
             <<"every call would fail with 401: regenerate with ibkr_oauth setup or openssl dhparam 2048 and upload it again">>};
        {error, not_dh_params} ->
            {error, <<Name/binary, ": not a DER SEQUENCE of INTEGERs in a DH PARAMETERS PEM">>,
             <<"openssl dhparam -out dhparam.pem 2048 (the bit count last)">>}
    end.

%% A hex prime in the config and a dhparam.pem next to the keys must agree.
-spec compare_sibling(pos_integer(), map()) -> {ok, pos_integer(), pos_integer() | none, binary()} | {error, binary(), binary()}.
compare_sibling(P, Config) ->
    case maps:get(signature_key, Config, undefined) of
        {file, KeyPath} ->
            File = filename:join(filename:dirname(KeyPath), "dhparam.pem"),
            case file:read_file(File) of
                {ok, Pem} ->
                    case ibkr_oauth_config:dh_params(Pem) of
                        {ok, #{prime := P, generator := G}} -> {ok, P, G, <<"hex, equal to dhparam.pem">>};
                        {ok, _} -> {error, unicode:characters_to_binary(["the hex prime differs from ", File]),
                                    <<"use the prime of the dhparam.pem uploaded to the portal">>};
                        {error, _} -> {ok, P, none, <<"hex">>}
                    end;
                {error, _} -> {ok, P, none, <<"hex">>}
            end;
        _ -> {ok, P, none, <<"hex">>}
    end.

-spec prime_line(pos_integer(), binary()) -> line().
prime_line(P, From) ->
    Bits = bits(P),
    Desc = iolist_to_binary([From, ", ", integer_to_binary(Bits), " bits"]),
    case {Bits, probable_prime(P), probable_prime((P - 1) div 2)} of
        {_, false, _} -> {fail, dh_prime, <<Desc/binary, ", not a prime">>,
                          <<"regenerate the DH parameters (ibkr_oauth setup) and upload dhparam.pem again">>};
        {B, true, _} when B < 2048 -> {fail, dh_prime, Desc, <<"IBKR wants 2048-bit DH parameters">>};
        {_, true, false} -> {warn, dh_prime, <<Desc/binary, ", prime but not a safe prime">>,
                             <<"openssl dhparam makes safe primes">>};
        {_, true, true} -> {ok, dh_prime, <<Desc/binary, ", safe prime">>, <<>>}
    end.

-spec generator_line(integer(), pos_integer() | none) -> line().
generator_line(2, _) -> {ok, dh_generator, <<"2">>, <<>>};
generator_line(G, FileG) ->
    Found = iolist_to_binary([integer_to_binary(G), case FileG of
                                                        none -> [];
                                                        _ -> [" (dhparam.pem: ", integer_to_binary(FileG), ")"]
                                                    end]),
    {fail, dh_generator, Found, <<"IBKR uses generator 2: every call fails with 401 otherwise; regenerate with "
                                  "ibkr_oauth setup or openssl dhparam 2048">>}.

%% Miller-Rabin with 24 random bases (error below 2^-48).
-spec probable_prime(integer()) -> boolean().
probable_prime(N) when N < 4 -> N =:= 2 orelse N =:= 3;
probable_prime(N) when N rem 2 =:= 0 -> false;
probable_prime(N) ->
    {S, D} = split(N - 1, 0),
    lists:all(fun(_) -> mr_round(N, S, D) end, lists:seq(1, 24)).

-spec split(pos_integer(), non_neg_integer()) -> {non_neg_integer(), pos_integer()}.
split(D, S) when D rem 2 =:= 0 -> split(D div 2, S + 1);
split(D, S) -> {S, D}.

-spec mr_round(pos_integer(), non_neg_integer(), pos_integer()) -> boolean().
mr_round(N, S, D) ->
    A = 2 + binary:decode_unsigned(crypto:strong_rand_bytes(byte_size(binary:encode_unsigned(N)))) rem (N - 3),
    X = powm(A, D, N),
    X =:= 1 orelse X =:= N - 1 orelse squares(X, S - 1, N).

-spec squares(non_neg_integer(), integer(), pos_integer()) -> boolean().
squares(_, R, _) when R =< 0 -> false;
squares(X, R, N) ->
    Y = powm(X, 2, N),
    Y =:= N - 1 orelse (Y =/= 1 andalso squares(Y, R - 1, N)).

-spec powm(non_neg_integer(), non_neg_integer(), pos_integer()) -> non_neg_integer().
powm(B, E, M) ->
    case crypto:mod_pow(B, E, M) of
        error -> 0;
        R -> binary:decode_unsigned(R)
    end.

%%% ------------------------------------------------ consumer key, realm, secret

-spec consumer_key(map()) -> line().
consumer_key(#{consumer_key := <<"TESTCONS">>}) -> {ok, consumer_key, <<"TESTCONS (IBKR's test consumer)">>, <<>>};
consumer_key(#{consumer_key := K}) when is_binary(K) ->
    case ibkr_oauth_setup:valid_consumer_key(K) of
        true -> {ok, consumer_key, K, <<>>};
        false -> {warn, consumer_key, <<"not 9 letters A-Z">>, <<"the portal's consumer keys are 9 letters A-Z: check for typos">>}
    end;
consumer_key(_) -> {fail, consumer_key, <<"missing">>, <<>>}.

-spec realm(map()) -> line().
realm(Config) ->
    Key = maps:get(consumer_key, Config, undefined),
    Default = case Key of <<"TESTCONS">> -> <<"test_realm">>; _ -> <<"limited_poa">> end,
    Realm = maps:get(realm, Config, Default),
    case {Key, Realm} of
        {<<"TESTCONS">>, <<"test_realm">>} -> {ok, realm, Realm, <<>>};
        {<<"TESTCONS">>, _} -> {fail, realm, Realm, <<"TESTCONS works only with realm test_realm">>};
        {_, <<"test_realm">>} -> {fail, realm, Realm, <<"test_realm is only for TESTCONS: use limited_poa with your own keys">>};
        {_, <<"limited_poa">>} -> {ok, realm, Realm, <<>>};
        _ -> {warn, realm, iolist_to_binary(io_lib:format("~tp", [Realm])), <<"own keys use limited_poa">>}
    end.

-spec secret_length(map()) -> line().
secret_length(#{access_token_secret := S}) when is_binary(S) ->
    case lists:member(S, ?PLACEHOLDERS) of
        true -> {fail, access_token_secret, <<"placeholder">>, <<>>};
        false ->
            try base64:decode(S) of
                B when byte_size(B) =:= 256 -> {ok, access_token_secret, <<"base64 of 256 bytes (one RSA-2048 block)">>, <<>>};
                B -> {fail, access_token_secret,
                      iolist_to_binary(["base64 of ", integer_to_binary(byte_size(B)), " bytes, not 256"]),
                      <<"copy the secret again exactly as the portal showed it (Generate Token shows it once)">>}
            catch _:_ -> {fail, access_token_secret, <<"not base64">>,
                          <<"copy the secret again exactly as the portal showed it">>}
            end
    end;
secret_length(_) -> {fail, access_token_secret, <<"missing">>, <<>>}.

%%% ======================================================= with the port

-spec with_port(ibkr_oauth_config:validated(), boolean()) -> [line()].
with_port(Valid, Offline) ->
    case ibkr_oauth_port_call:open() of
        {error, Why} -> [{fail, port, iolist_to_binary(io_lib:format("~tp", [Why])), <<"build the port (make)">>}];
        {ok, Port} ->
            try
                case ibkr_oauth_port_call:call(Port, {init, ibkr_oauth_config:to_port(Valid)}, 30000) of
                    ok ->
                        [{ok, secret_decrypts, <<"the secret decrypts with encryption_key">>, <<>>}
                         | case Offline of
                               true -> [];
                               false -> online(Port, Valid)
                           end];
                    {error, Reason} ->
                        [{fail, secret_decrypts, ibkr_oauth_explain:reason(Reason, Valid), <<>>}]
                end
            after
                ibkr_oauth_port_call:close(Port)
            end
    end.

-spec online(port(), map()) -> [line()].
online(Port, #{base_url := Base} = Valid) ->
    Steps = [fun(Ctx) -> clock(Port, Base, Ctx) end,
             fun(Ctx) -> lst(Port, Ctx) end,
             fun(Ctx) -> ssodh(Port, Base, Ctx) end,
             fun(Ctx) -> tickle(Port, Base, Ctx) end,
             fun(Ctx) -> accounts(Port, Base, Ctx) end,
             fun(Ctx) -> websocket(Port, Ctx) end],
    run_steps(Steps, #{valid => Valid}, []).

-spec run_steps([fun((map()) -> {[line()], map()})], map(), [line()]) -> [line()].
run_steps([], _Ctx, Acc) -> lists:reverse(Acc);
run_steps([Step | Rest], Ctx, Acc) ->
    {Lines, Ctx1} = Step(Ctx),
    Acc1 = lists:reverse(Lines, Acc),
    case failed(Lines) of
        true -> lists:reverse(Acc1);
        false -> run_steps(Rest, maps:merge(Ctx, Ctx1), Acc1)
    end.

-spec http(port(), map()) -> term().
http(Port, Req) ->
    ibkr_oauth_port_call:call(Port, {http, Req#{timeout => ?HTTP_TIMEOUT}}, ?HTTP_TIMEOUT + 5000).

%% The server's Date header against the local clock (an unsigned request).
-spec clock(port(), binary(), map()) -> {[line()], map()}.
clock(Port, Base, _Ctx) ->
    case http(Port, #{method => <<"GET">>, url => <<Base/binary, "/iserver/auth/status">>, sign => false}) of
        {ok, #{headers := Headers}} ->
            case date_skew(Headers) of
                {ok, Skew} when abs(Skew) > ?SKEW_WARN_S ->
                    {[{warn, clock, iolist_to_binary(["local clock ", skew_text(Skew), " the server's Date"]),
                       <<"fix the clock (NTP): OAuth timestamps far off are refused with 401">>}], #{skew_s => Skew}};
                {ok, Skew} ->
                    {[{ok, clock, iolist_to_binary(["within ", integer_to_binary(abs(Skew)), " s of the server's Date"]), <<>>}],
                     #{skew_s => Skew}};
                error -> {[{warn, clock, <<"the server sent no Date header">>, <<>>}], #{}}
            end;
        {error, Reason} ->
            {[{fail, clock, iolist_to_binary(["cannot reach ", Base, ": ", ibkr_oauth_explain:reason(Reason)]),
               <<"check base_url, the network and ca_file">>}], #{}}
    end.

-spec skew_text(integer()) -> iodata().
skew_text(S) when S > 0 -> [integer_to_binary(S), " s ahead of"];
skew_text(S) -> [integer_to_binary(-S), " s behind"].

-spec date_skew([{binary(), binary()}]) -> {ok, integer()} | error.
date_skew(Headers) ->
    case lists:keyfind(<<"date">>, 1, Headers) of
        {_, Date} ->
            case ibkr_oauth_http_date:parse(Date) of
                {ok, DateTime} ->
                    Server = calendar:datetime_to_gregorian_seconds(DateTime),
                    Local = calendar:datetime_to_gregorian_seconds(calendar:universal_time()),
                    {ok, Local - Server};
                error -> error
            end;
        false -> error
    end.

-spec lst(port(), map()) -> {[line()], map()}.
lst(Port, Ctx) ->
    case ibkr_oauth_port_call:call(Port, {authenticate, #{timeout => ?HTTP_TIMEOUT}}, ?HTTP_TIMEOUT + 5000) of
        {ok, #{expires_at := Ms}} ->
            {[{ok, live_session_token, iolist_to_binary(["issued and validated, expires ",
                                                         calendar:system_time_to_rfc3339(Ms, [{unit, millisecond}, {offset, "Z"}])]), <<>>}], #{}};
        {error, lst_signature_mismatch} ->
            {[{fail, live_session_token, <<"IBKR answered, but the token does not validate here">>,
               ibkr_oauth_ibkr_error:lst_signature_mismatch_text()}], #{}};
        {error, Reason} ->
            {[ibkr_line(live_session_token, Reason, Ctx)], #{}}
    end.

-spec ibkr_line(check(), term(), map()) -> line().
ibkr_line(Check, Reason, Ctx) ->
    case ibkr_oauth_ibkr_error:from_reason(Reason) of
        {ibkr, Kind, Info} = E ->
            Found = found(E),
            Advice = case {Kind, Ctx} of
                         {unauthorized, #{skew_s := S}} when abs(S) > ?SKEW_WARN_S ->
                             <<(ibkr_oauth_ibkr_error:advice(Kind))/binary, "; the local clock is off by ",
                               (integer_to_binary(S))/binary, " s">>;
                         {unauthorized, #{after_lst := true}} ->
                             ibkr_oauth_ibkr_error:first_401_after_lst_text(maps:with([skew_s], Ctx));
                         _ -> ibkr_oauth_ibkr_error:advice(Kind)
                     end,
            _ = Info,
            {fail, Check, Found, Advice};
        Other -> {fail, Check, ibkr_oauth_explain:reason(Other), <<>>}
    end.

-spec found(ibkr_oauth_ibkr_error:error()) -> binary().
found({ibkr, Kind, #{status := Status} = Info}) ->
    iolist_to_binary(["HTTP ", integer_to_binary(Status), " ", atom_to_binary(Kind),
                      case maps:get(message, Info, <<>>) of
                          <<>> -> [];
                          M -> [" \"", M, "\""]
                      end,
                      case Info of
                          #{incident := N} -> [" (IBKR incident ", integer_to_binary(N), ")"];
                          _ -> []
                      end]).

-spec signed(port(), binary(), binary(), binary()) -> term().
signed(Port, Method, Url, Body) ->
    Req = #{method => Method, url => Url, sign => true, decode => json},
    http(Port, case Body of
                   <<>> -> Req;
                   _ -> Req#{body => Body, headers => [{<<"content-type">>, <<"application/json">>}]}
               end).

-spec ssodh(port(), binary(), map()) -> {[line()], map()}.
ssodh(Port, Base, Ctx) ->
    step(brokerage_session, signed(Port, <<"POST">>, <<Base/binary, "/iserver/auth/ssodh/init">>,
                                   <<"{\"publish\":true,\"compete\":true}">>),
         Ctx#{after_lst => true},
         fun(_Body) -> {ok, <<"ssodh/init answered 200">>, <<>>} end).

-spec tickle(port(), binary(), map()) -> {[line()], map()}.
tickle(Port, Base, Ctx) ->
    step(tickle, signed(Port, <<"POST">>, <<Base/binary, "/tickle">>, <<>>), Ctx,
         fun(#{json := Json}) ->
                 {Level, Found, Advice, Session} = tickle_answer(Json),
                 {Level, Found, Advice, #{session => Session}};
            (#{json_error := Why}) ->
                 {fail, <<"answered 200, but not JSON (", (atom_to_binary(Why))/binary, ")">>, <<>>}
         end).

%% @private A tickle's JSON answer: the line's level, what was found, the
%% advice, and its `session' (the websocket's cookie) or why there is none.
-spec tickle_answer(term()) -> {ok | warn | fail, binary(), binary(), {ok, binary()} | {none, binary()}}.
tickle_answer(Json) ->
    Auth = case Json of
               #{<<"iserver">> := #{<<"authStatus">> := #{} = A}} -> A;
               _ -> #{}
           end,
    Session = case Json of
                  #{<<"session">> := S} when is_binary(S), S =/= <<>> -> {ok, S};
                  #{} -> {none, <<"the tickle answer has no session">>};
                  _ -> {none, <<"the tickle answer is not a JSON object">>}
              end,
    case {maps:get(<<"authenticated">>, Auth, false) =:= true, maps:get(<<"competing">>, Auth, false) =:= true} of
        {true, false} -> {ok, <<"authenticated, not competing">>, <<>>, Session};
        {true, true} -> {warn, <<"authenticated, competing">>,
                         <<"another session (TWS, mobile) competes: compete:true evicts it">>, Session};
        _ -> {fail, <<"authenticated:false">>,
              <<"no brokerage session: re-run ssodh/init (brokerage_session => true)">>, Session}
    end.

-spec accounts(port(), binary(), map()) -> {[line()], map()}.
accounts(Port, Base, Ctx) ->
    step(accounts, signed(Port, <<"GET">>, <<Base/binary, "/iserver/accounts">>, <<>>), Ctx,
         fun(#{body := Body} = Resp) ->
                 Paper = case Resp of
                             #{json := #{<<"isPaper">> := true}} -> <<", paper account">>;
                             _ -> <<>>
                         end,
                 case ibkr_oauth_ibkr_error:classify(200, [], Body) of
                     {ibkr, misconfigured_session, _} = E ->
                         {fail, found(E), ibkr_oauth_ibkr_error:advice(misconfigured_session)};
                     _ -> {ok, <<"GET /iserver/accounts answered 200", Paper/binary>>, <<>>}
                 end
         end).

%% `OnOk' gets the answer (`json' or `json_error' with it) and returns the
%% line, optionally with what later steps need.
-spec step(check(), term(), map(),
           fun((map()) -> {ok | warn | fail, binary(), binary()} | {ok | warn | fail, binary(), binary(), map()})) ->
    {[line()], map()}.
step(Check, {ok, #{status := 200} = Resp}, _Ctx, OnOk) ->
    case OnOk(Resp) of
        {Level, Found, Advice} -> {[{Level, Check, Found, Advice}], #{}};
        {Level, Found, Advice, More} -> {[{Level, Check, Found, Advice}], More}
    end;
step(Check, {ok, #{status := Status, body := Body}}, Ctx, _) ->
    {[ibkr_line(Check, {http, Status, Body}, Ctx)], #{}};
step(Check, {error, Reason}, Ctx, _) ->
    {[ibkr_line(Check, Reason, Ctx)], #{}}.

%% The websocket with the tickle's session as its cookie, on this port
%% (the doctor's own: a session's stream is not touched); closed at the end.
-spec websocket(port(), map()) -> {[line()], map()}.
websocket(Port, #{session := {ok, Session}}) ->
    Open = ibkr_oauth_port_call:call(Port, {ws_open, #{cookie => Session, timeout => ?HTTP_TIMEOUT}},
                                     ?HTTP_TIMEOUT + 5000),
    case Open of
        {ok, Conn} ->
            TicId = erlang:unique_integer([positive]),
            St = ibkr_oauth_doctor_ws:new(now_ms()),
            Lines = case ibkr_oauth_port:send(Port, TicId, {ws_send, Conn, <<"tic">>}) of
                        ok -> ws_wait(Port, Conn, TicId, St);
                        {error, _} = E -> ws_next(Port, Conn, TicId, ibkr_oauth_doctor_ws:event({tic_sent, E}, now_ms(), St))
                    end,
            _ = ibkr_oauth_port_call:call(Port, {ws_close, Conn}, 5000),
            {Lines, #{}};
        {error, Reason} ->
            {[ibkr_oauth_doctor_ws:open_failed(Reason)], #{}};
        Other ->
            {[ibkr_oauth_doctor_ws:open_failed(Other)], #{}}
    end;
websocket(_Port, #{session := {none, Why}}) ->
    {[ibkr_oauth_doctor_ws:no_session(Why)], #{}}.

%% Port messages until the check is decided: the socket's events and the
%% answer to the tic go to ibkr_oauth_doctor_ws, in the order they came.
-spec ws_wait(port(), pos_integer(), pos_integer(), ibkr_oauth_doctor_ws:state()) -> [line()].
ws_wait(Port, Conn, TicId, St) ->
    After = max(0, ibkr_oauth_doctor_ws:deadline(St) - now_ms()),
    receive
        {Port, {data, Bin}} ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, 0, {ws, Conn, Event}} ->
                    ws_next(Port, Conn, TicId, ibkr_oauth_doctor_ws:event(Event, now_ms(), St));
                {ok, TicId, Reply} ->
                    ws_next(Port, Conn, TicId, ibkr_oauth_doctor_ws:event({tic_sent, Reply}, now_ms(), St));
                _ -> ws_wait(Port, Conn, TicId, St)
            end;
        {Port, {exit_status, _}} ->
            ws_next(Port, Conn, TicId, ibkr_oauth_doctor_ws:event(port_down, now_ms(), St))
    after After ->
        ws_next(Port, Conn, TicId, ibkr_oauth_doctor_ws:timeout(now_ms(), St))
    end.

-spec ws_next(port(), pos_integer(), pos_integer(),
              {continue, ibkr_oauth_doctor_ws:state()} | {done, [line()]}) -> [line()].
ws_next(_Port, _Conn, _TicId, {done, Lines}) -> Lines;
ws_next(Port, Conn, TicId, {continue, St}) -> ws_wait(Port, Conn, TicId, St).

-spec now_ms() -> integer().
now_ms() -> erlang:monotonic_time(millisecond).
