%% @doc The `ibkr_oauth' escript: one signed IBKR Web API call from a shell.
%%
%% ```
%% ibkr_oauth [--verbose] [--config FILE] METHOD PATH [-q KEY=VALUE]... [-d BODY]
%% ibkr_oauth get /portfolio/accounts
%% ibkr_oauth setup DIR [--consumer-key KEY]
%% ibkr_oauth doctor [--config FILE] [--offline]
%% '''
%% Errors are printed as sentences; `--verbose' adds the Erlang term.
%% Credentials come from `--config FILE' (a file holding one Erlang map, the
%% `ibkr_oauth:start_link/1' config, read with `file:consult/1') or from the
%% environment: `IBKR_CONSUMER_KEY', `IBKR_ACCESS_TOKEN',
%% `IBKR_ACCESS_TOKEN_SECRET', `IBKR_DH_PRIME', `IBKR_ENCRYPTION_KEY_FILE',
%% `IBKR_SIGNATURE_KEY_FILE', and optionally `IBKR_REALM', `IBKR_BASE_URL',
%% `IBKR_CA_FILE'. A `/iserver/...' path opens the brokerage session first
%% unless the config sets `brokerage_session'; a `-d' body is sent as
%% `application/json'. The answer's body goes to stdout as received, the
%% status line to stderr (one of IBKR's own errors: the status line and the
%% advice on stderr, nothing on stdout); the exit status is 0 for a 2xx answer, 1 otherwise
%% (the call failed or could not be made), 2 for a usage error.
-module(ibkr_oauth_cli).
-export([main/1, parse_args/1, env_config/1]).

-type opts() :: #{config => string(), method := ibkr_oauth:method(), path := binary(),
                  query := [{binary(), binary()}], body => binary(), verbose => true}.

%% @doc Escript entry point.
-spec main([string()]) -> no_return().
main([Help]) when Help =:= "-h"; Help =:= "--help" ->
    io:put_chars(usage()),
    halt(0);
main(["setup" | Args]) ->
    log_to_stderr(),
    halt(setup(Args));
main(["doctor" | Args]) ->
    log_to_stderr(),
    halt(doctor(Args));
main(Args) ->
    log_to_stderr(),
    case parse_args(Args) of
        {ok, Opts} -> halt(run(Opts));
        {error, Why} ->
            io:format(standard_error, "ibkr_oauth: ~ts~n~ts", [Why, usage()]),
            halt(2)
    end.

%% stdout carries only the answer's body: warnings (e.g. a key file readable
%% by others) go to stderr.
-spec log_to_stderr() -> ok.
log_to_stderr() ->
    ok = logger:set_primary_config(level, warning),
    _ = logger:remove_handler(default),
    ok = logger:add_handler(default, logger_std_h, #{config => #{type => standard_error}}).

-spec run(opts()) -> 0 | 1.
run(Opts) ->
    case {ensure_port_path(), load_config(Opts)} of
        {ok, {ok, Config}} -> call(with_brokerage_session(Config, Opts), Opts);
        {{error, Why}, _} -> fail(Why);
        {ok, {error, Why}} -> fail(Why)
    end.

-spec fail(string()) -> 1.
fail(Why) ->
    io:format(standard_error, "ibkr_oauth: ~ts~n", [Why]),
    1.

%% /iserver endpoints answer only inside a brokerage session (ssodh/init).
-spec with_brokerage_session(map(), opts()) -> map().
with_brokerage_session(Config, #{path := <<"/iserver/", _/binary>>}) ->
    maps:merge(#{brokerage_session => true}, Config);
with_brokerage_session(Config, _) ->
    Config.

-spec call(ibkr_oauth:config(), opts()) -> 0 | 1.
call(Config, #{method := Method, path := Path, query := Query} = Opts) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    case ibkr_oauth:start_link(Config) of
        {ok, S} ->
            ReqOpts = case Opts of
                          #{body := Body} ->
                              #{query => Query, body => Body,
                                headers => [{<<"content-type">>, <<"application/json">>}]};
                          _ -> #{query => Query}
                      end,
            Result = ibkr_oauth:request(S, Method, Path, ReqOpts),
            _ = ibkr_oauth:stop(S),
            report(Result, Opts);
        {error, Why} ->
            io:format(standard_error, "ibkr_oauth: cannot start the session: ~ts~n",
                      [explain(Why, Config, Opts)]),
            1
    end.

%% A sentence; with --verbose also the term.
-spec explain(term(), term(), map()) -> unicode:chardata().
explain(Why, Config, #{verbose := true}) ->
    [ibkr_oauth_explain:reason(Why, Config),
     io_lib:format(" [~tp]", [ibkr_oauth_config:redact(Why)])];
explain(Why, Config, _) ->
    ibkr_oauth_explain:reason(Why, Config).

-spec report({ok, map()} | {error, term()}, opts()) -> 0 | 1.
report({ok, #{status := Status, body := Body}}, _Opts) ->
    io:format(standard_error, "HTTP ~b~n", [Status]),
    %% The body's bytes as they came (UTF-8 JSON), not re-encoded by io.
    ok = file:write(standard_io, [Body, $\n]),
    case Status of
        S when S >= 200, S < 300 -> 0;
        _ ->
            case ibkr_oauth_ibkr_error:classify(Status, [], Body) of
                http -> ok;
                Ibkr -> io:format(standard_error, "ibkr_oauth: ~ts~n",
                                  [ibkr_oauth_ibkr_error:describe(Ibkr)])
            end,
            1
    end;
%% IBKR's own errors (request/4 recognised the answer): the status, then
%% what it means and what to do.
report({error, {ibkr, _, #{status := Status}} = Ibkr}, _Opts) ->
    io:format(standard_error, "HTTP ~b~nibkr_oauth: ~ts~n",
              [Status, ibkr_oauth_ibkr_error:describe(Ibkr)]),
    1;
report({error, Why}, Opts) ->
    io:format(standard_error, "ibkr_oauth: ~ts~n", [explain(Why, #{}, Opts)]),
    1.

%% @doc Parses the command line (exported for tests).
-spec parse_args([string()]) -> {ok, opts()} | {error, string()}.
parse_args(Args) -> parse_args(Args, #{query => []}).

-spec parse_args([string()], map()) -> {ok, opts()} | {error, string()}.
parse_args(["--config", File | Rest], Acc) -> parse_args(Rest, Acc#{config => File});
parse_args(["--verbose" | Rest], Acc) -> parse_args(Rest, Acc#{verbose => true});
parse_args(["-q", KV | Rest], #{query := Q} = Acc) ->
    case string:split(KV, "=") of
        [K, V] -> parse_args(Rest, Acc#{query := Q ++ [{unicode:characters_to_binary(K),
                                                          unicode:characters_to_binary(V)}]});
        _ -> {error, "-q wants KEY=VALUE"}
    end;
parse_args(["-d", Body | Rest], Acc) -> parse_args(Rest, Acc#{body => unicode:characters_to_binary(Body)});
parse_args([M, [$/ | _] = Path | Rest], Acc) when not is_map_key(method, Acc) ->
    case method(string:lowercase(M)) of
        {ok, Method} -> parse_args(Rest, Acc#{method => Method, path => unicode:characters_to_binary(Path)});
        error -> {error, "unknown method " ++ M}
    end;
parse_args([], #{method := _} = Acc) -> {ok, Acc};
parse_args([], _) -> {error, "METHOD and PATH are required"};
parse_args([Other | _], _) -> {error, "unexpected argument " ++ Other}.

-spec method(string()) -> {ok, ibkr_oauth:method()} | error.
method("get") -> {ok, get};
method("post") -> {ok, post};
method("put") -> {ok, put};
method("delete") -> {ok, delete};
method("patch") -> {ok, patch};
method("head") -> {ok, head};
method(_) -> error.

-spec load_config(map()) -> {ok, map()} | {error, string()}.
load_config(#{config := File}) ->
    case file:consult(File) of
        {ok, [Config]} when is_map(Config) -> {ok, Config};
        {ok, _} -> {error, File ++ ": expected one Erlang map"};
        {error, Why} -> {error, File ++ ": " ++ file:format_error(Why)}
    end;
load_config(_) ->
    env_config(fun os:getenv/1).

%% @doc The session config from environment variables (the getter is a
%% parameter so tests need not touch the real environment).
-spec env_config(fun((string()) -> string() | false)) -> {ok, map()} | {error, string()}.
env_config(Get) ->
    Required = [{consumer_key, "IBKR_CONSUMER_KEY", bin},
                {access_token, "IBKR_ACCESS_TOKEN", bin},
                {access_token_secret, "IBKR_ACCESS_TOKEN_SECRET", bin},
                {dh_prime, "IBKR_DH_PRIME", bin},
                {encryption_key, "IBKR_ENCRYPTION_KEY_FILE", file},
                {signature_key, "IBKR_SIGNATURE_KEY_FILE", file}],
    Optional = [{realm, "IBKR_REALM", bin}, {base_url, "IBKR_BASE_URL", bin},
                {ca_file, "IBKR_CA_FILE", path}],
    Missing = [Var || {_, Var, _} <- Required, Get(Var) =:= false],
    case Missing of
        [] ->
            Pairs = [{K, conv(T, V)} || {K, Var, T} <- Required ++ Optional, (V = Get(Var)) =/= false],
            {ok, maps:from_list(Pairs)};
        _ ->
            {error, "no --config and missing environment variables: " ++ lists:join(", ", Missing)}
    end.

-spec conv(bin | file | path, string()) -> binary() | {file, string()} | string().
conv(bin, V) -> unicode:characters_to_binary(V);
conv(file, V) -> {file, V};
conv(path, V) -> V.

%% An escript runs from an archive, where priv/ cannot hold an executable:
%% find the port next to the escript (./ibkr_oauth and ./priv as `make'
%% leaves them, or _build/default/bin and _build/default/lib/ibkr_oauth/priv)
%% unless IBKR_OAUTH_PORT says where it is.
-spec ensure_port_path() -> ok | {error, string()}.
ensure_port_path() ->
    case os:getenv("IBKR_OAUTH_PORT") of
        Set when is_list(Set), Set =/= "" -> ok;
        _ ->
            Dir = filename:dirname(filename:absname(escript:script_name())),
            Candidates = [filename:join([Dir, "priv", "ibkr_oauth_port"]),
                          filename:join([Dir, "..", "lib", "ibkr_oauth", "priv", "ibkr_oauth_port"]),
                          filename:join([Dir, "..", "priv", "ibkr_oauth_port"])],
            case [C || C <- Candidates, filelib:is_regular(C)] of
                [Exe | _] ->
                    true = os:putenv("IBKR_OAUTH_PORT", Exe),
                    ok;
                [] ->
                    {error, "the port program ibkr_oauth_port is not next to this escript "
                            "(priv/ibkr_oauth_port); set IBKR_OAUTH_PORT to its path"}
            end
    end.

%%% setup and doctor

-spec setup([string()]) -> 0 | 1 | 2.
setup(Args) ->
    case setup_args(Args, #{}) of
        {ok, Dir, Opts} ->
            case ensure_port_path() of
                ok -> run_setup(Dir, Opts);
                {error, Why} -> fail(Why)
            end;
        {error, Why} ->
            io:format(standard_error, "ibkr_oauth setup: ~ts~n~ts", [Why, usage()]),
            2
    end.

-spec setup_args([string()], map()) -> {ok, string(), map()} | {error, string()}.
setup_args(["--consumer-key", K | Rest], Acc) ->
    setup_args(Rest, Acc#{consumer_key => list_to_binary(K)});
%% Tests only: a smaller DH prime (the 2048-bit search takes seconds to minutes).
setup_args(["--dh-bits", N | Rest], Acc) ->
    case string:to_integer(N) of
        {Bits, []} when Bits >= 512 -> setup_args(Rest, Acc#{dh_bits => Bits});
        _ -> {error, "--dh-bits wants a number of bits >= 512"}
    end;
setup_args([[$- | _] = Opt | _], _) -> {error, "unknown option " ++ Opt};
setup_args([Dir | Rest], Acc) when not is_map_key(dir, Acc) -> setup_args(Rest, Acc#{dir => Dir});
setup_args([Other | _], _) -> {error, "unexpected argument " ++ Other};
setup_args([], #{dir := Dir} = Acc) -> {ok, Dir, maps:remove(dir, Acc)};
setup_args([], _) -> {error, "setup wants a directory"}.

-spec run_setup(string(), map()) -> 0 | 1.
run_setup(Dir, Opts) ->
    Progress = fun({stage, rsa}) -> io:format(standard_error, "generating two RSA-2048 key pairs~n", []);
                  ({stage, dh}) -> io:format(standard_error,
                                             "searching a 2048-bit safe prime for the DH parameters "
                                             "(usually 10 s to 2 min)~n", []);
                  ({progress, _, Stage}) -> io:put_chars(standard_error, progress_char(Stage));
                  (_) -> ok
               end,
    {ok, _} = application:ensure_all_started(crypto),
    case ibkr_oauth_setup:run(Dir, Opts#{progress => Progress}) of
        {ok, #{dir := Abs, consumer_key := Key, files := Files}} ->
            io:format(standard_error, "~n", []),
            io:format("Wrote (mode 0600, directory 0700):~n~ts~n",
                      [[["  ", F, "\n"] || F <- Files]]),
            io:put_chars(ibkr_oauth_setup:portal_steps(Abs, Key)),
            0;
        {error, Why} ->
            io:format(standard_error, "~nibkr_oauth setup: ~ts~n", [setup_error(Why)]),
            1
    end.

-spec progress_char(atom()) -> string().
progress_char(candidate) -> ".";
progress_char(testing) -> "+";
progress_char(_) -> "*".

-spec setup_error(term()) -> unicode:chardata().
setup_error({exists, File}) -> [File, ": exists already (setup never overwrites a file)"];
setup_error({bad_consumer_key, K}) -> io_lib:format("consumer key ~tp: must be 9 letters A-Z", [K]);
setup_error({mkdir, Dir, Why}) -> [Dir, ": ", file:format_error(Why)];
setup_error({not_a_directory, Dir}) -> [Dir, ": not a directory"];
setup_error({dir_open_to_others, Dir}) ->
    [Dir, ": group or others may enter it; use a new directory or chmod 700 it first"];
setup_error({write, File, Why}) -> [File, ": ", file:format_error(Why)];
setup_error(Why) -> ibkr_oauth_explain:reason(Why).

-spec doctor([string()]) -> 0 | 1 | 2.
doctor(Args) ->
    case doctor_args(Args, #{}) of
        {ok, Opts} ->
            Loaded = case ensure_port_path() of
                         ok -> load_config(Opts);
                         {error, _} = E -> E
                     end,
            case Loaded of
                {ok, Config} ->
                    {ok, _} = application:ensure_all_started(crypto),
                    Report = ibkr_oauth_doctor:report(Config, maps:with([offline], Opts)),
                    [io:format("~ts~n", [ibkr_oauth_doctor:format_line(L)]) || L <- Report],
                    case ibkr_oauth_doctor:failed(Report) of
                        true -> 1;
                        false -> 0
                    end;
                {error, Why} -> fail(Why)
            end;
        {error, Why} ->
            io:format(standard_error, "ibkr_oauth doctor: ~ts~n~ts", [Why, usage()]),
            2
    end.

-spec doctor_args([string()], map()) -> {ok, map()} | {error, string()}.
doctor_args(["--config", File | Rest], Acc) -> doctor_args(Rest, Acc#{config => File});
doctor_args(["--offline" | Rest], Acc) -> doctor_args(Rest, Acc#{offline => true});
doctor_args([Other | _], _) -> {error, "unexpected argument " ++ Other};
doctor_args([], Acc) -> {ok, Acc}.

-spec usage() -> string().
usage() ->
    "usage: ibkr_oauth [--verbose] [--config FILE] METHOD PATH [-q KEY=VALUE]... [-d BODY]\n"
    "       ibkr_oauth setup DIR [--consumer-key KEY]\n"
    "       ibkr_oauth doctor [--config FILE] [--offline]\n"
    "  e.g. ibkr_oauth get /portfolio/accounts\n"
    "  credentials: --config FILE (one Erlang map) or IBKR_* environment variables\n".
