%% @doc Validation of the session configuration (the `config()' map of
%% {@link ibkr_oauth}) on the Erlang side, before anything reaches the port.
%%
%% Checked here: that every required key is present, that every value has the
%% documented type and length, and the defaults. Checked by the port (it has
%% the crypto): that the keys are RSA PEM keys, that the secret is base64 and
%% decrypts, that the prime is hex and a prime. Both sides report the same
%% shape, `{bad_config, Field, Why}'.
%%
%% Keys: `{file, Path}' is passed to the port as a binary path and read
%% there (the BEAM never reads key files); `{pem, Pem}' is passed as is.
%%
%% Unknown keys: an unknown <b>atom</b> key is refused with
%% `{bad_config, Key, unknown_key}' (it is almost always a typo, e.g.
%% `tickle_intervall', and silently ignoring it would hide a wrong setting);
%% keys that are not atoms are ignored (room for callers' own annotations).
%%
%% `rate_limit' (see {@link ibkr_oauth_ratelimit}): `none', or a map with
%% `global' (requests per second for the whole session, or `none') and
%% `endpoints' (a list of `{Prefix, Limit, PeriodMs}': `Prefix' a binary
%% path starting with `/', without a query, at most 512 bytes, trailing
%% slashes dropped; `Limit'
%% 1..100000; `PeriodMs' 1..4294967295). A missing `global' is 50, missing
%% `endpoints' are IBKR's documented ones
%% ({@link ibkr_oauth_ratelimit:ibkr_endpoints/0}); the whole key missing
%% means both. Errors: `{bad_config, rate_limit, Why}' with `Why' one of
%% `badarg' (neither `none' nor a map), `unknown_key', `{global, badarg}',
%% `{endpoints, badarg}' (not a list) or `{endpoint, N, badarg}' (the N-th
%% rule, from 1).
%%
%% `smd_refresh_interval' (ms, 1..4294967295, default 540000): how often each
%% market-data subscription is sent again on the websocket (IBKR ends an
%% `smd' stream silently 15 minutes after its request).
%%
%% `dh_prime': a hex string (either case; colons, blanks and leading `00'
%% bytes as `openssl dhparam -text' prints them are dropped), or
%% `{file, Path}' of a `dhparam.pem' (PKCS#3 `DH PARAMETERS'), read here:
%% the prime is taken from the DER and the generator too (a `dh_generator'
%% given as well must equal it: `{bad_config, dh_generator,
%% generator_mismatch}'). File errors: `{bad_config, dh_prime, Why}' with
%% `Why' in `enoent eacces eisdir file_error not_dh_params negative'.
%%
%% No atom is ever created from the input.
-module(ibkr_oauth_config).

-export([validate/1, seal/1, to_port/1, redact/1, defaults/0,
         normalize_hex/1, dh_params/1]).

-export_type([validated/0, why/0]).

%% A validated config: every key present, defaults filled in, paths as
%% binaries.
-type validated() :: #{consumer_key := binary(),
                       access_token := binary(),
                       access_token_secret := binary(),
                       dh_prime := binary(),
                       encryption_key := {file, binary()} | {pem, binary()},
                       signature_key := {file, binary()} | {pem, binary()},
                       dh_generator := pos_integer(),
                       realm := binary(),
                       base_url := binary(),
                       ca_file => binary(),
                       request_timeout := pos_integer() | infinity,
                       auto_authenticate := boolean(),
                       brokerage_session := boolean(),
                       tickle_interval := pos_integer() | infinity,
                       refresh_margin := non_neg_integer(),
                       query_signing := params | none,
                       rate_limit := ibkr_oauth_ratelimit:spec(),
                       smd_refresh_interval := pos_integer()}.
-type why() :: missing | badarg | too_long | unknown_key | bad_url | too_small
             | enoent | eacces | eisdir | file_error | not_dh_params | negative
             | generator_mismatch
             | {global | endpoints, badarg} | {endpoint, pos_integer(), badarg}.

-define(FIELD_MAX, 512).
%% PEM_MAX in c_src/oauth.c; the port's own limits for the secret (4 KiB) and
%% the prime (16384 bits) are smaller. Checked here too so that a value too
%% large for a frame is `too_long' rather than the init frame's `too_large'.
-define(VALUE_MAX, 65536).
%% Longest Erlang timer (ms), about 49 days.
-define(MAX_TIMER, 4294967295).
%% Each slot of a rate-limit key costs a few words while it is taken.
-define(MAX_RATE, 100000).
-define(REQUIRED, [consumer_key, access_token, access_token_secret, dh_prime,
                   encryption_key, signature_key]).
-define(PORT_KEYS, [consumer_key, access_token, access_token_secret, dh_prime,
                    dh_generator, realm, encryption_key, signature_key,
                    base_url, ca_file, query_signing]).

%% @doc The defaults of the optional keys (`realm' depends on
%% `consumer_key': `<<"test_realm">>' for `<<"TESTCONS">>', else
%% `<<"limited_poa">>').
-spec defaults() -> map().
defaults() ->
    #{dh_generator => 2,
      base_url => <<"https://api.ibkr.com/v1/api">>,
      request_timeout => 10000,
      auto_authenticate => false,
      brokerage_session => false,
      tickle_interval => infinity,
      refresh_margin => 300,
      query_signing => params,
      rate_limit => ibkr_oauth_ratelimit:default_spec(),
      smd_refresh_interval => 540000}.

%% @doc Validates a user config and fills in the defaults. The first problem
%% found is returned as `{error, {bad_config, Field, Why}}'; `Field' is
%% `config' when the argument is not a map at all.
-spec validate(term()) -> {ok, validated()} | {error, {bad_config, atom(), why()}}.
validate(Config) when is_map(Config) ->
    try
        ok = check_unknown(Config),
        lists:foreach(fun(K) -> is_map_key(K, Config) orelse bad(K, missing) end,
                      ?REQUIRED),
        Merged = maps:merge(defaults(), maps:with(known_keys(), dh_file(Config))),
        V0 = maps:map(fun check/2, Merged),
        V = case V0 of
                #{realm := _} -> V0;
                #{consumer_key := <<"TESTCONS">>} -> V0#{realm => <<"test_realm">>};
                #{} -> V0#{realm => <<"limited_poa">>}
            end,
        {ok, V}
    catch
        throw:{bad_config, _, _} = Bad -> {error, Bad}
    end;
validate(Sealed) when is_function(Sealed, 0) ->
    try Sealed() of
        Config when is_map(Config) -> validate(Config);
        _ -> {error, {bad_config, config, badarg}}
    catch
        _:_ -> {error, {bad_config, config, badarg}}
    end;
validate(_) ->
    {error, {bad_config, config, badarg}}.

%% @doc The config inside a closure, as {@link ibkr_oauth:child_spec/1} puts
%% it in the child's start arguments: supervisor reports print those, and a
%% closure prints as `#Fun<...>' instead of the keys and the secret.
%% {@link validate/1} opens it. (Like any fun it refers to this module's
%% code: after two hot upgrades of this module a restart by the supervisor
%% fails with `{bad_config, config, badarg}'.)
-spec seal(term()) -> fun(() -> term()).
seal(Config) -> fun() -> Config end.

-spec known_keys() -> [atom()].
known_keys() ->
    ?REQUIRED ++ [dh_generator, realm, base_url, ca_file, request_timeout,
                  auto_authenticate, brokerage_session, tickle_interval,
                  refresh_margin, query_signing, rate_limit, smd_refresh_interval].

-spec check_unknown(map()) -> ok.
check_unknown(Config) ->
    Known = known_keys(),
    case [K || K <- maps:keys(Config), is_atom(K), not lists:member(K, Known)] of
        [] -> ok;
        Unknown -> bad(lists:min(Unknown), unknown_key)
    end.

-spec bad(atom(), why()) -> no_return().
bad(Field, Why) -> throw({bad_config, Field, Why}).

-spec check(atom(), term()) -> term().
check(K, V) when K =:= consumer_key; K =:= access_token; K =:= realm ->
    field(K, V);
check(dh_prime, <<_, _/binary>> = V) when byte_size(V) =< ?VALUE_MAX ->
    normalize_hex(no_nul(dh_prime, V));
check(K, V) when K =:= access_token_secret; K =:= dh_prime ->
    case V of
        <<_, _/binary>> when byte_size(V) > ?VALUE_MAX -> bad(K, too_long);
        <<_, _/binary>> -> no_nul(K, V);
        _ -> bad(K, badarg)
    end;
check(K, V) when K =:= encryption_key; K =:= signature_key ->
    case V of
        {pem, Pem} when byte_size(Pem) > ?VALUE_MAX -> bad(K, too_long);
        {pem, <<_, _/binary>> = Pem} -> {pem, Pem};
        {file, Path} -> {file, path(K, Path)};
        _ -> bad(K, badarg)
    end;
check(dh_generator, V) when is_integer(V), V >= 2 -> V;
check(dh_generator, V) when is_integer(V) -> bad(dh_generator, too_small);
check(base_url, V) when is_binary(V) -> base_url(V);
check(ca_file, V) -> path(ca_file, V);
check(request_timeout, infinity) -> infinity;
check(request_timeout, V) when is_integer(V), V > 0, V =< ?MAX_TIMER -> V;
check(tickle_interval, infinity) -> infinity;
check(tickle_interval, V) when is_integer(V), V > 0, V =< ?MAX_TIMER -> V;
check(smd_refresh_interval, V) when is_integer(V), V > 0, V =< ?MAX_TIMER -> V;
check(refresh_margin, V) when is_integer(V), V >= 0, V =< ?MAX_TIMER div 1000 -> V;
check(K, V) when (K =:= auto_authenticate orelse K =:= brokerage_session),
                 is_boolean(V) -> V;
check(query_signing, V) when V =:= params; V =:= none -> V;
check(rate_limit, V) -> rate_limit(V);
check(K, _) -> bad(K, badarg).

%% `dh_prime => {file, Path}': the prime (as hex) and the generator from the
%% PEM; an explicit dh_generator must agree with the file's.
-spec dh_file(map()) -> map().
dh_file(#{dh_prime := {file, Path}} = Config) ->
    File = path(dh_prime, Path),
    Pem = case file:read_file(File) of
              {ok, B} when byte_size(B) =< ?VALUE_MAX -> B;
              {ok, _} -> bad(dh_prime, too_long);
              {error, E} when E =:= enoent; E =:= eacces; E =:= eisdir -> bad(dh_prime, E);
              {error, _} -> bad(dh_prime, file_error)
          end,
    {P, G} = case dh_params(Pem) of
                 {ok, #{prime := P0, generator := G0}} -> {P0, G0};
                 {error, Why} -> bad(dh_prime, Why)
             end,
    case Config of
        #{dh_generator := G} -> ok;
        #{dh_generator := Other} when is_integer(Other) -> bad(dh_generator, generator_mismatch);
        #{dh_generator := _} -> ok;   % its own type error comes from check/2
        #{} -> ok
    end,
    Config#{dh_prime := string:lowercase(integer_to_binary(P, 16)),
            dh_generator => maps:get(dh_generator, Config, G)};
dh_file(Config) -> Config.

%% @doc The prime and generator of a PKCS#3 `DH PARAMETERS' PEM (what
%% `openssl dhparam' writes). `negative' when either DER INTEGER is negative
%% (the prime's bytes written without a leading zero byte).
-spec dh_params(binary()) ->
    {ok, #{prime := integer(), generator := integer()}} | {error, not_dh_params | negative}.
dh_params(Pem) ->
    try [Der || {'DHParameter', Der, not_encrypted} <- public_key:pem_decode(Pem)] of
        [Der | _] ->
            try public_key:der_decode('DHParameter', Der) of
                {'DHParameter', P, G, _} when is_integer(P), is_integer(G), P > 0, G > 0 ->
                    {ok, #{prime => P, generator => G}};
                {'DHParameter', P, G, _} when is_integer(P), is_integer(G) ->
                    {error, negative};
                _ -> {error, not_dh_params}
            catch
                _:_ -> {error, not_dh_params}
            end;
        [] -> {error, not_dh_params}
    catch
        _:_ -> {error, not_dh_params}
    end.

%% @doc A DH prime as users copy it: `openssl dhparam -text' prints
%% `00:f7:e1:...' over several indented lines. Colons and blanks are
%% dropped, then leading zero bytes; anything that is still not plain hex is
%% returned unchanged (the port answers `not_hex').
-spec normalize_hex(binary()) -> binary().
normalize_hex(V) ->
    Stripped = << <<C>> || <<C>> <= V, not lists:member(C, [$:, $\s, $\t, $\r, $\n]) >>,
    case Stripped =/= <<>> andalso lists:all(fun is_hex/1, binary_to_list(Stripped)) of
        true -> strip_zero_bytes(Stripped);
        false -> V
    end.

-spec is_hex(byte()) -> boolean().
is_hex(C) -> (C >= $0 andalso C =< $9) orelse (C >= $a andalso C =< $f) orelse
             (C >= $A andalso C =< $F).

-spec strip_zero_bytes(binary()) -> binary().
strip_zero_bytes(<<"00", Rest/binary>>) when Rest =/= <<>> -> strip_zero_bytes(Rest);
strip_zero_bytes(B) -> B.

-spec rate_limit(term()) -> ibkr_oauth_ratelimit:spec().
rate_limit(none) -> none;
rate_limit(V) when is_map(V) ->
    case [K || K <- maps:keys(V), K =/= global, K =/= endpoints] of
        [] -> ok;
        _ -> bad(rate_limit, unknown_key)
    end,
    #{global := G0, endpoints := E0} = maps:merge(ibkr_oauth_ratelimit:default_spec(), V),
    G = case G0 of
            none -> none;
            N when is_integer(N), N >= 1, N =< ?MAX_RATE -> N;
            _ -> bad(rate_limit, {global, badarg})
        end,
    Len = try length(E0)
          catch error:badarg -> bad(rate_limit, {endpoints, badarg})   % not a proper list
          end,
    E = [rule(Rule, I) || {Rule, I} <- lists:zip(E0, lists:seq(1, Len))],
    #{global => G, endpoints => E};
rate_limit(_) -> bad(rate_limit, badarg).

-spec rule(term(), pos_integer()) -> ibkr_oauth_ratelimit:rule().
rule({<<"/", _/binary>> = Prefix, Limit, Period}, I)
  when byte_size(Prefix) =< ?FIELD_MAX, is_integer(Limit), Limit >= 1, Limit =< ?MAX_RATE,
       is_integer(Period), Period >= 1, Period =< ?MAX_TIMER ->
    case binary:match(Prefix, [<<"?">>, <<"#">>, <<0>>]) of
        %% "/fyi/" means "/fyi"; "/" means every path.
        nomatch -> {strip_slash(Prefix), Limit, Period};
        _ -> bad(rate_limit, {endpoint, I, badarg})
    end;
rule(_, I) -> bad(rate_limit, {endpoint, I, badarg}).

-spec field(atom(), term()) -> binary().
field(K, V) when is_binary(V), byte_size(V) > ?FIELD_MAX -> bad(K, too_long);
field(K, <<_, _/binary>> = V) -> no_nul(K, V);
field(K, _) -> bad(K, badarg).

-spec no_nul(atom(), binary()) -> binary().
no_nul(K, V) ->
    case binary:match(V, <<0>>) of
        nomatch -> V;
        _ -> bad(K, badarg)
    end.

%% file:filename_all() (a string, a binary or a deep list with atoms) to a
%% binary; empty paths and NUL bytes are refused.
-spec path(atom(), term()) -> binary().
path(K, P) ->
    Bin = try
              if is_binary(P) -> P;
                 is_list(P); is_atom(P) ->
                      unicode:characters_to_binary(filename:flatten(P));
                 true -> error
              end
          catch
              _:_ -> error
          end,
    case Bin of
        <<_, _/binary>> -> no_nul(K, Bin);
        _ -> bad(K, badarg)
    end.

%% http(s)://host[:port][/path], no query or fragment; a trailing slash is
%% dropped (paths given to request/4 start with one).
-spec base_url(binary()) -> binary().
base_url(V) ->
    Url = strip_slash(no_nul(base_url, V)),
    try uri_string:parse(Url) of
        #{scheme := Scheme, host := <<_, _/binary>>} = U
          when (Scheme =:= <<"https">> orelse Scheme =:= <<"http">>),
               not is_map_key(query, U), not is_map_key(fragment, U),
               not is_map_key(userinfo, U) ->
            case binary:match(Url, [<<" ">>, <<"\r">>, <<"\n">>, <<"\t">>]) of
                nomatch -> Url;
                _ -> bad(base_url, bad_url)
            end;
        _ -> bad(base_url, bad_url)
    catch
        _:_ -> bad(base_url, bad_url)
    end.

-spec strip_slash(binary()) -> binary().
strip_slash(<<>>) -> <<>>;
strip_slash(B) ->
    case binary:last(B) of
        $/ -> strip_slash(binary:part(B, 0, byte_size(B) - 1));
        _ -> B
    end.

%% @doc The `init' map for the port (PROTOCOL.md): the validated config
%% without the Erlang-only keys.
-spec to_port(validated()) -> map().
to_port(V) -> maps:with(?PORT_KEYS, V).

%% @doc A copy of a (validated or raw) config safe to log or show: the
%% access-token secret and PEM contents are replaced by `redacted'
%% ({@link ibkr_oauth_redact:config/1}).
-spec redact(term()) -> term().
redact(C) -> ibkr_oauth_redact:config(C).
