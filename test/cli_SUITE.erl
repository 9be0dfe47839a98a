%% The `ibkr_oauth' escript as a shell user runs it: built by rebar3
%% escriptize, started as an OS process with credentials from the
%% environment or from --config FILE, talking TLS to the fake IBKR server
%% (its CA through IBKR_CA_FILE). Checks stdout (the JSON answer, bytes as
%% received), stderr (the status line, messages) and the exit status (0 for
%% 2xx, 1 otherwise, 2 for usage).
-module(cli_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([env_credentials/1, env_credentials_checked/1, config_file/1,
         brokerage_path_opens_session/1, query_and_body/1, utf8_body_unchanged/1,
         non_2xx_exits_1/1, bad_config_exits_1/1, usage_exits_2/1,
         port_next_to_escript/1, port_not_found/1,
         setup_writes_and_refuses/1, doctor_exit_status/1, ibkr_error_advice/1]).

-define(F, ibkr_fake_server).
%% Every IBKR_* variable the escript reads, unset unless a case sets it.
-define(VARS, ["IBKR_CONSUMER_KEY", "IBKR_ACCESS_TOKEN", "IBKR_ACCESS_TOKEN_SECRET",
               "IBKR_DH_PRIME", "IBKR_ENCRYPTION_KEY_FILE", "IBKR_SIGNATURE_KEY_FILE",
               "IBKR_REALM", "IBKR_BASE_URL", "IBKR_CA_FILE"]).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [env_credentials, env_credentials_checked, config_file, brokerage_path_opens_session,
     query_and_body, utf8_body_unchanged, non_2xx_exits_1, bad_config_exits_1,
     usage_exits_2, port_next_to_escript, port_not_found,
     setup_writes_and_refuses, doctor_exit_status, ibkr_error_advice].

%% Build the escript from the current sources (a stale ./ibkr_oauth would
%% test old code); `make' copies this same file to ./ibkr_oauth.
init_per_suite(Config) ->
    Root = filename:dirname(filename:dirname(ibkr_test_lib:data_dir())),
    Rebar = os:find_executable("rebar3"),
    ?assertNotEqual(false, Rebar),
    {Status, Out} = run_exe(Rebar, ["escriptize"], [{cd, Root}, {env, [{"REBAR_PROFILE", false}]}]),
    ?assertEqual({0, ok}, {Status, ok}, Out),
    Escript = filename:join([Root, "_build", "default", "bin", "ibkr_oauth"]),
    true = filelib:is_regular(Escript),
    [{escript, Escript}, {root, Root} | Config].

end_per_suite(_Config) -> ok.

init_per_testcase(_Case, Config) ->
    {ok, Info} = ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    [{fake, Info} | Config].

end_per_testcase(_Case, _Config) ->
    ?F:stop().

%%% ----------------------------------------------------------------- cases

env_credentials(Config) ->
    {0, Out, Err} = cli(Config, env(Config), ["get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err, "^HTTP 200$", [multiline])),
    assert_accounts(Out),
    ?assertMatch(#{handshakes := 1, logouts := 1, by_path := #{<<"/portfolio/accounts">> := 1}},
                 ?F:stats()).

%% The variables are really used: a wrong access token is refused by the
%% server at the handshake, a missing variable is named.
env_credentials_checked(Config) ->
    Wrong = lists:keystore("IBKR_ACCESS_TOKEN", 1, env(Config), {"IBKR_ACCESS_TOKEN", "wrongtoken"}),
    {1, <<>>, Err} = cli(Config, Wrong, ["get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err, "IBKR unauthorized \"invalid token\" \\(HTTP 401\\): check the realm")),
    ?assertMatch(#{handshakes := 0}, ?F:stats()),
    Missing = lists:keystore("IBKR_DH_PRIME", 1, env(Config), {"IBKR_DH_PRIME", false}),
    {1, <<>>, Err2} = cli(Config, Missing, ["get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err2, "missing environment variables: IBKR_DH_PRIME")).

config_file(Config) ->
    File = write_config(Config, "ibkr.config", #{}),
    {0, Out, Err} = cli(Config, unset_all(), ["--config", File, "get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err, "^HTTP 200$", [multiline])),
    assert_accounts(Out),
    ?assertMatch(#{handshakes := 1, logouts := 1}, ?F:stats()).

%% /iserver needs ssodh/init first; the escript opens it by itself, unless
%% the config says brokerage_session => false.
brokerage_path_opens_session(Config) ->
    {0, Out, _} = cli(Config, env(Config), ["get", "/iserver/secdef/search", "-q", "symbol=AAPL"]),
    ?assertMatch({match, _}, re:run(Out, "\"symbol\":\"AAPL\"")),
    ?assertMatch(#{ssodh_inits := 1}, ?F:stats()),
    File = write_config(Config, "no_bridge.config", #{brokerage_session => false}),
    {1, Out2, Err2} = cli(Config, unset_all(), ["--config", File, "get", "/iserver/account/orders"]),
    %% IBKR's own error: the status and the advice on stderr, nothing on stdout
    ?assertEqual(<<>>, iolist_to_binary(Out2)),
    ?assertMatch({match, _}, re:run(Err2, "^HTTP 400$", [multiline])),
    ?assertMatch({match, _}, re:run(Err2, "IBKR no_bridge \"no bridge\" .*ssodh/init", [multiline])),
    ?assertMatch(#{ssodh_inits := 1}, ?F:stats()).

query_and_body(Config) ->
    {0, Out, _} = cli(Config, env(Config),
                      ["post", "/echo", "-q", "a=1", "-q", "b=x y", "-d", "{\"x\":1}"]),
    ?assertMatch({match, _}, re:run(Out, "\"method\":\"POST\"")),
    ?assertMatch({match, _}, re:run(Out, "\"query\":\\[\\[\"a\",\"1\"\\],\\[\"b\",\"x y\"\\]\\]")),
    ?assertMatch({match, _}, re:run(Out, "\"body\":\"{\\\\\"x\\\\\":1}\"")),
    ?assertMatch({match, _}, re:run(Out, "\\[\"content-type\",\"application/json\"\\]")),
    ?assertMatch(#{bad_signatures := 0}, maps:merge(#{bad_signatures => 0}, ?F:stats())).

%% The JSON's UTF-8 bytes reach stdout unchanged (not re-encoded as Latin-1).
utf8_body_unchanged(Config) ->
    {0, Out, _} = cli(Config, env(Config), ["get", "/echo", "-q", "name=Zürich €"]),
    ?assertNotEqual(nomatch, binary:match(Out, <<"[\"name\",\"Zürich €\"]"/utf8>>)).

non_2xx_exits_1(Config) ->
    {1, Out, Err} = cli(Config, env(Config), ["get", "/portfolio/U0000000/positions/0"]),
    ?assertMatch({match, _}, re:run(Err, "^HTTP 404$", [multiline])),
    ?assertMatch({match, _}, re:run(Out, "unknown account")),
    {1, _, Err2} = cli(Config, env(Config), ["delete", "/no/such/endpoint"]),
    ?assertMatch({match, _}, re:run(Err2, "^HTTP 404$", [multiline])).

bad_config_exits_1(Config) ->
    Missing = filename:join(?config(priv_dir, Config), "absent.config"),
    {1, <<>>, Err} = cli(Config, unset_all(), ["--config", Missing, "get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err, "absent.config: no such file")),
    NotMap = filename:join(?config(priv_dir, Config), "list.config"),
    ok = file:write_file(NotMap, "[a, b].\n"),
    {1, <<>>, Err2} = cli(Config, unset_all(), ["--config", NotMap, "get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err2, "expected one Erlang map")),
    BadPrime = write_config(Config, "bad_prime.config", #{dh_prime => <<"xyz">>}),
    {1, <<>>, Err3} = cli(Config, unset_all(), ["--config", BadPrime, "get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err3, "cannot start the session: dh_prime: not a hex number$", [multiline])),
    ?assertEqual(nomatch, re:run(Err3, "bad_config")),
    %% --verbose keeps the term
    {1, <<>>, Err4} = cli(Config, unset_all(), ["--verbose", "--config", BadPrime, "get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err4, "dh_prime: not a hex number \\[\\{bad_config,dh_prime,not_hex\\}\\]")),
    NoKey = write_config(Config, "no_key.config", #{encryption_key => {file, "/nonexistent/x.pem"}}),
    {1, <<>>, Err5} = cli(Config, unset_all(), ["--config", NoKey, "get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err5, "encryption_key: /nonexistent/x.pem: no such file")),
    ?assertMatch(#{requests := 0, handshakes := 0}, maps:merge(#{requests => 0}, ?F:stats())).

usage_exits_2(Config) ->
    Cases = [[], ["get"], ["frobnicate", "/portfolio/accounts"], ["get", "/a", "extra"],
             ["get", "/a", "-q", "novalue"], ["--config"]],
    %% Concurrently: each is a VM start and nothing else.
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), Args, cli(Config, env(Config), Args)} end) || Args <- Cases],
    lists:foreach(
      fun(Pid) ->
              receive
                  {Pid, Args, Result} ->
                      ?assertMatch({2, <<>>, _}, Result, Args),
                      {2, <<>>, Err} = Result,
                      ?assertMatch({match, _}, re:run(Err, "^usage: ibkr_oauth", [multiline]), Args)
              end
      end, Pids),
    {0, Help, _} = cli(Config, env(Config), ["--help"]),
    ?assertMatch({match, _}, re:run(Help, "^usage: ibkr_oauth")),
    ?assertMatch(#{requests := 0}, maps:merge(#{requests => 0}, ?F:stats())).

%% The layout `make' leaves: ./ibkr_oauth next to ./priv/ibkr_oauth_port.
port_next_to_escript(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "installed"),
    Escript = copy_escript(Config, Dir),
    ok = filelib:ensure_dir(filename:join([Dir, "priv", "x"])),
    {ok, _} = file:copy(repo_port(Config), filename:join([Dir, "priv", "ibkr_oauth_port"])),
    ok = file:change_mode(filename:join([Dir, "priv", "ibkr_oauth_port"]), 8#755),
    Env = lists:keystore("IBKR_OAUTH_PORT", 1, env(Config), {"IBKR_OAUTH_PORT", false}),
    {0, Out, _} = cli(Escript, Env, ["get", "/portfolio/accounts"]),
    assert_accounts(Out).

%% Copied away from its port: a clear message, exit 1; IBKR_OAUTH_PORT fixes it.
port_not_found(Config) ->
    Escript = copy_escript(Config, filename:join(?config(priv_dir, Config), "lonely")),
    Env = lists:keystore("IBKR_OAUTH_PORT", 1, env(Config), {"IBKR_OAUTH_PORT", false}),
    {1, <<>>, Err} = cli(Escript, Env, ["get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err, "set IBKR_OAUTH_PORT")),
    WithPort = lists:keystore("IBKR_OAUTH_PORT", 1, env(Config), {"IBKR_OAUTH_PORT", repo_port(Config)}),
    {0, Out, _} = cli(Escript, WithPort, ["get", "/portfolio/accounts"]),
    assert_accounts(Out).

%% setup DIR: the files, the portal steps; never over existing files.
setup_writes_and_refuses(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "keys"),
    %% --dh-bits (tests only): a 512-bit prime instead of a 2048-bit search;
    %% onboarding_SUITE runs the real size.
    {0, Out, Err} = cli(Config, unset_all(), ["setup", Dir, "--consumer-key", "ABCDEFGHI", "--dh-bits", "512"]),
    ?assertMatch({match, _}, re:run(Err, "safe prime")),
    [?assertMatch({match, _}, re:run(Out, Re), Re)
     || Re <- ["ndcdyn.interactivebrokers.com/sso/Login\\?action=OAUTH&RL=1&ip2loc=US",
               "consumer key ABCDEFGHI", "public_signature.pem", "public_encryption.pem",
               "dhparam.pem", "Generate Token", "shown ONCE", "Enable OAuth", "midnight"]],
    [?assert(filelib:is_regular(filename:join(Dir, F)), F) || F <- ibkr_oauth_setup:files()],
    {ok, [#{consumer_key := <<"ABCDEFGHI">>}]} = file:consult(filename:join(Dir, "ibkr.config")),
    {ok, Before} = file:read_file(filename:join(Dir, "private_signature.pem")),
    {1, _, Err2} = cli(Config, unset_all(), ["setup", Dir, "--dh-bits", "512"]),
    ?assertMatch({match, _}, re:run(Err2, "private_signature.pem: exists already")),
    ?assertEqual({ok, Before}, file:read_file(filename:join(Dir, "private_signature.pem"))),
    {2, _, _} = cli(Config, unset_all(), ["setup"]),
    %% the template fails the doctor until the token and secret are pasted
    {1, Out3, _} = cli(Config, unset_all(), ["doctor", "--config", filename:join(Dir, "ibkr.config"), "--offline"]),
    ?assertMatch({match, _}, re:run(Out3, "^FAIL placeholders: still the setup placeholder", [multiline])),
    ?assertMatch({match, _}, re:run(Out3, "^ok   signature_key: PKCS#8 RSA-2048, SHA256:", [multiline])).

%% doctor: one line per check, exit 0 when nothing failed, 1 otherwise.
doctor_exit_status(Config) ->
    File = write_config(Config, "doctor.config", #{}),
    {0, Out, _} = cli(Config, unset_all(), ["doctor", "--config", File]),
    ?assertMatch({match, _}, re:run(Out, "^ok   live_session_token: issued and validated", [multiline])),
    ?assertMatch({match, _}, re:run(Out, "^ok   accounts: ", [multiline])),
    ?assertMatch({match, _}, re:run(Out, "^ok   websocket: open; .* paper account \\(isPaper:true\\)$", [multiline])),
    ?assertMatch({match, _}, re:run(Out, "^ok   websocket_tic: tic answered$", [multiline])),
    ?assertEqual(nomatch, re:run(Out, "^FAIL", [multiline])),
    ?F:stop(),   % nothing listens any more
    {1, Out2, _} = cli(Config, unset_all(), ["doctor", "--config", File]),
    ?assertMatch({match, _}, re:run(Out2, "^FAIL clock: cannot reach https://localhost:[0-9]+/v1/api: network: ", [multiline])),
    {2, _, _} = cli(Config, unset_all(), ["doctor", "--bogus"]).

%% A non-2xx answer IBKR explains gets its advice on stderr.
ibkr_error_advice(Config) ->
    ok = ?F:set_fault({answer, <<"/portfolio/accounts">>, 429,
                       <<"{\"error\":\"Too many requests\",\"statusCode\":429}">>, 1}),
    {1, _, Err} = cli(Config, env(Config), ["get", "/portfolio/accounts"]),
    ?assertMatch({match, _}, re:run(Err, "^HTTP 429$", [multiline])),
    ?assertMatch({match, _}, re:run(Err, "IBKR rate_limited .*penalty box", [multiline])).

%%% --------------------------------------------------------------- helpers

%% The fake server's two accounts, as one JSON array on one line.
assert_accounts(Out) ->
    ?assertMatch({match, _}, re:run(Out, "^\\[.*\"accountId\":\"U1234567\".*\"accountId\":\"U7654321\".*\\]\n$",
                                    [dotall])).

env(Config) ->
    #{base_url := BaseUrl, ca_file := CaFile} = ?config(fake, Config),
    V = ibkr_test_lib:vectors(public),
    Dir = ibkr_test_lib:vector_dir(public),
    Str = fun unicode:characters_to_list/1,
    [{"IBKR_CONSUMER_KEY", Str(maps:get(consumer_key, V))},
     {"IBKR_ACCESS_TOKEN", Str(maps:get(access_token, V))},
     {"IBKR_ACCESS_TOKEN_SECRET", Str(maps:get(access_token_secret, V))},
     {"IBKR_DH_PRIME", Str(maps:get(dh_prime, V))},
     {"IBKR_ENCRYPTION_KEY_FILE", Str(filename:join(Dir, maps:get(encryption_key_file, V)))},
     {"IBKR_SIGNATURE_KEY_FILE", Str(filename:join(Dir, maps:get(signature_key_file, V)))},
     {"IBKR_REALM", Str(maps:get(realm, V))},
     {"IBKR_BASE_URL", Str(BaseUrl)},
     {"IBKR_CA_FILE", Str(CaFile)}].

unset_all() -> [{Var, false} || Var <- ?VARS].

%% A --config file: the fake server's client config with key files.
write_config(Config, Name, Extra) ->
    #{config := Client} = ?config(fake, Config),
    V = ibkr_test_lib:vectors(public),
    Dir = ibkr_test_lib:vector_dir(public),
    Map = maps:merge(Client#{encryption_key => {file, filename:join(Dir, maps:get(encryption_key_file, V))},
                             signature_key => {file, filename:join(Dir, maps:get(signature_key_file, V))}},
                     Extra),
    File = filename:join(?config(priv_dir, Config), Name),
    ok = file:write_file(File, io_lib:format("~p.~n", [Map])),
    File.

copy_escript(Config, Dir) ->
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Escript = filename:join(Dir, "ibkr_oauth"),
    {ok, _} = file:copy(?config(escript, Config), Escript),
    ok = file:change_mode(Escript, 8#755),
    Escript.

repo_port(Config) ->
    filename:join([?config(root, Config), "priv", "ibkr_oauth_port"]).

%% Runs the escript; returns {ExitStatus, Stdout, Stderr}.
cli(Config, Env, Args) when is_list(Config), is_tuple(hd(Config)) ->
    cli(?config(escript, Config), Env, Args, ?config(priv_dir, Config));
cli(Escript, Env, Args) ->
    cli(Escript, Env, Args, filename:dirname(Escript)).

cli(Escript, Env, Args, TmpDir) ->
    ErrFile = filename:join(TmpDir, "stderr." ++ integer_to_list(erlang:unique_integer([positive]))),
    %% sh only splits stdout from stderr; the escript gets Args untouched.
    {Status, Out} = run_exe("/bin/sh", ["-c", "exec \"$0\" \"$@\" 2>\"$CLI_STDERR\"", Escript | Args],
                            [{env, [{"CLI_STDERR", ErrFile} | Env]}]),
    {ok, Err} = file:read_file(ErrFile),
    ct:log("ibkr_oauth ~p~nexit ~b~nstdout: ~ts~nstderr: ~ts", [Args, Status, Out, Err]),
    {Status, Out, Err}.

run_exe(Exe, Args, Opts) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, binary, exit_status, use_stdio, stream, hide | Opts]),
    collect(Port, []).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, [Acc, D]);
        {Port, {exit_status, S}} -> {S, iolist_to_binary(Acc)}
    end.
