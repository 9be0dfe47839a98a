%% @doc Error reasons as sentences for people (the CLI and `doctor'); pure.
%% `{bad_config, encryption_key, enoent}' with the config at hand becomes
%% `encryption_key: /keys/x.pem: no such file'. Unknown reasons are printed
%% as terms.
-module(ibkr_oauth_explain).

-export([reason/1, reason/2]).

%% @equiv reason(Reason, #{})
-spec reason(term()) -> binary().
reason(Reason) -> reason(Reason, #{}).

%% @doc One sentence for an error reason. `Config' (the user's config map,
%% may be empty) lets a `bad_config' sentence name the file concerned.
-spec reason(term(), term()) -> binary().
reason(Reason, Config) ->
    unicode:characters_to_binary(text(Reason, case Config of #{} -> Config; _ -> #{} end)).

-spec text(term(), map()) -> iodata().
text({bad_config, config, badarg}, _) ->
    "the config must be one Erlang map (the start_link/1 config)";
text({bad_config, Field, Why}, Config) when is_atom(Field) ->
    [atom_to_binary(Field), ": ", where(Field, Why, Config), config_why(Field, Why)];
text({ibkr, _, #{status := _}} = E, _) -> ibkr_oauth_ibkr_error:describe(E);
text({http, Status, Body}, _) when is_integer(Status), is_binary(Body) ->
    case ibkr_oauth_ibkr_error:classify(Status, [], Body) of
        http -> io_lib:format("the server answered HTTP ~b: ~ts", [Status, excerpt(Body)]);
        Ibkr -> ibkr_oauth_ibkr_error:describe(Ibkr)
    end;
text({transport, Kind}, _) -> ["network: ", transport(Kind)];
text({transport, Kind, #{sent := true}}, _) ->
    ["network: ", transport(Kind), " (the request may have reached the server)"];
text({transport, Kind, #{}}, _) -> ["network: ", transport(Kind)];
text(timeout, _) -> "no answer in time (timeout)";
text(rate_limited, _) -> "held back by the rate limit: the request would have waited past its timeout";
text(port_down, _) -> "the port program (priv/ibkr_oauth_port) stopped";
text(noproc, _) -> "the session is not running";
text(not_authenticated, _) -> "no live session token yet (authenticate first)";
text(lst_expired, _) -> "the live session token has expired";
text(bad_dh_response, _) ->
    "IBKR's Diffie-Hellman answer is not usable (not hex, or not in 2..p-2): check dh_prime";
text(lst_signature_mismatch, _) -> ibkr_oauth_ibkr_error:lst_signature_mismatch_text();
text({bad_response, not_json}, _) -> "the live session token answer is not JSON";
text({bad_response, missing_field}, _) -> "the live session token answer lacks a field";
text(too_large, _) -> "the request is larger than the port accepts (16 MiB)";
text(cancelled, _) -> "cancelled";
text(Other, _) -> io_lib:format("~tp", [Other]).

-spec where(atom(), term(), map()) -> iodata().
where(Field, Why, Config) when Why =:= enoent; Why =:= eacces; Why =:= eisdir;
                               Why =:= file_error; Why =:= not_pem; Why =:= not_rsa;
                               Why =:= too_long; Why =:= not_dh_params; Why =:= negative ->
    case maps:get(Field, Config, undefined) of
        {file, Path} ->
            try [unicode:characters_to_binary(filename:flatten(Path)), ": "]
            catch _:_ -> []
            end;
        Path when Field =:= ca_file, (is_list(Path) orelse is_binary(Path)) ->
            try [unicode:characters_to_binary(filename:flatten(Path)), ": "]
            catch _:_ -> []
            end;
        _ -> []
    end;
where(_, _, _) -> [].

-spec config_why(atom(), term()) -> iodata().
config_why(_, missing) -> "missing (required)";
config_why(_, badarg) -> "wrong type or value (see the config() type in the README)";
config_why(_, too_long) -> "too long";
config_why(_, unknown_key) -> "unknown key (a typo?)";
config_why(_, enoent) -> "no such file";
config_why(_, eacces) -> "permission denied";
config_why(_, eisdir) -> "is a directory, not a file";
config_why(_, file_error) -> "cannot be read";
config_why(_, not_pem) -> "no PEM key in it (expected BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY, unencrypted)";
config_why(_, not_rsa) -> "not an RSA key";
config_why(_, not_base64) -> "not base64 (paste the secret exactly as the portal showed it)";
config_why(_, decrypt_failed) ->
    "does not decrypt with encryption_key (a mis-copied secret, or not the key pair the portal "
    "issued it for)";
config_why(_, not_hex) -> "not a hex number";
config_why(_, not_prime) -> "not a prime";
config_why(dh_generator, too_small) -> "must be at least 2 (IBKR uses 2)";
config_why(_, too_small) -> "too small (IBKR uses a 2048-bit prime)";
config_why(_, bad_url) -> "not an http(s)://host[:port][/path] URL";
config_why(_, not_dh_params) -> "no DH PARAMETERS PEM in it";
config_why(_, negative) ->
    "the prime is a negative DER INTEGER (its bytes were written without a leading zero byte): "
    "regenerate with ibkr_oauth setup or openssl dhparam";
config_why(_, generator_mismatch) -> "differs from the generator in the dhparam.pem file";
config_why(rate_limit, {global, badarg}) -> "global must be none or 1..100000 requests per second";
config_why(rate_limit, {endpoints, badarg}) -> "endpoints must be a list of {Prefix, Limit, PeriodMs}";
config_why(rate_limit, {endpoint, N, badarg}) ->
    io_lib:format("endpoint rule ~b is not {<<\"/path\">>, Limit, PeriodMs}", [N]);
config_why(_, Why) -> io_lib:format("~tp", [Why]).

-spec transport(term()) -> iodata().
transport(resolve) -> "the host name does not resolve";
transport(connect) -> "cannot connect to the host";
transport(tls) -> "TLS failed (certificate not trusted? see ca_file)";
transport(send) -> "sending the request failed";
transport(recv) -> "the connection broke before the answer";
transport(too_large) -> "the answer is too large";
transport(bad_status) -> "the answer's status line is not HTTP";
transport(Other) -> io_lib:format("~tp", [Other]).

-spec excerpt(binary()) -> binary().
excerpt(Body) when byte_size(Body) > 200 -> <<(binary:part(Body, 0, 200))/binary, "...">>;
excerpt(<<>>) -> <<"(empty body)">>;
excerpt(Body) -> Body.
