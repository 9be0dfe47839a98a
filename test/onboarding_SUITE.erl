%% From an empty directory to a working config: `setup' generates the keys
%% and DH parameters (through the port), a simulated portal configures the
%% fake IBKR server from the files setup wrote (it encrypts an access-token
%% secret with the generated public encryption key), and `doctor' checks
%% everything. Then every failing branch of the doctor: bad key files, bad
%% DH parameters, bad secrets, and each IBKR error body of the onboarding
%% table the fake server can produce, with its specific diagnosis.
%%
%% The 2048-bit safe prime is generated once (init_per_suite, seconds to
%% minutes); the cases copy that material and tamper with the copy.
-module(onboarding_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("public_key/include/public_key.hrl").
-include_lib("kernel/include/file.hrl").

-compile([export_all, nowarn_export_all]).

-define(F, ibkr_fake_server).
-define(TOKEN, <<"0123456789abcdef0123">>).

suite() -> [{timetrap, {minutes, 10}}].

all() ->
    [setup_then_doctor_all_ok, keygen_commands, keygen_stops_when_port_closed, setup_refuses_overwrite, placeholders_fail, offline_skips_network,
     bad_pem, crlf_public_key, crlf_private_key_loads, pkcs1_keys, wrong_pair, loose_permissions,
     negative_prime, composite_prime, generator_not_2, hex_prime_differs, prime_as_dhparam_text,
     secret_wrong_length, secret_not_decrypting, realm_mismatch,
     invalid_consumer, invalid_consumer_envelope, no_access_secret, other_401, lst_signature_mismatch,
     first_401_after_lst, no_bridge, gone, sso_dh_failed, misconfigured_session, rate_limited,
     competing, not_authenticated_after_ssodh, clock_skew_warns, clock_skew_fails_lst,
     websocket_all_ok, websocket_upgrade_refused, websocket_sts_not_authenticated,
     websocket_sts_competing, websocket_no_tic_answer].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(crypto),
    Dir = filename:join(?config(priv_dir, Config), "material"),
    T0 = erlang:monotonic_time(millisecond),
    {ok, #{consumer_key := Key}} = ibkr_oauth_setup:run(Dir, #{}),
    ct:log("setup with a 2048-bit safe prime took ~b ms", [erlang:monotonic_time(millisecond) - T0]),
    [{material, Dir}, {consumer_key, Key} | Config].

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) ->
    Dir = filename:join(?config(priv_dir, Config), atom_to_list(Case)),
    ok = copy_dir(?config(material, Config), Dir),
    [{dir, Dir} | Config].

end_per_testcase(_Case, _Config) ->
    ?F:stop().

%%% ------------------------------------------------------------ helpers

copy_dir(From, To) ->
    ok = filelib:ensure_dir(filename:join(To, "x")),
    ok = file:change_mode(To, 8#700),
    lists:foreach(fun(F) ->
                          {ok, _} = file:copy(filename:join(From, F), filename:join(To, F)),
                          ok = file:change_mode(filename:join(To, F), 8#600)
                  end, ibkr_oauth_setup:files()).

file(Config, Name) -> filename:join(?config(dir, Config), Name).

%% The portal: takes the uploaded public keys and DH parameters, issues a
%% token and a secret encrypted with the public encryption key; the fake
%% server is that portal's IBKR. Returns the completed config.
portal(Config) -> portal(Config, #{}).

portal(Config, ServerExtra) ->
    Dir = ?config(dir, Config),
    Plain = crypto:strong_rand_bytes(32),
    EncPub = ibkr_server_crypto:public_key(file(Config, "public_encryption.pem")),
    Secret = ibkr_server_crypto:encrypt_secret(Plain, EncPub),
    {ok, Hex} = file:read_file(file(Config, "dh_prime.hex")),
    Opts = #{consumer_key => ?config(consumer_key, Config), access_token => ?TOKEN,
             access_token_secret_plain => Plain,
             public_signature_key => list_to_binary(file(Config, "public_signature.pem")),
             dh_prime => string:trim(Hex), dh_generator => 2, realm => <<"limited_poa">>,
             ca_dir => Dir},
    {ok, #{base_url := Base, ca_file := Ca}} = ?F:start(maps:merge(Opts, ServerExtra)),
    Template = template(Config),
    Template#{access_token := ?TOKEN, access_token_secret := Secret,
              base_url => Base, ca_file => Ca}.

%% ibkr.config as setup wrote it, its paths pointing into this case's copy.
template(Config) ->
    {ok, [Template]} = file:consult(file(Config, "ibkr.config")),
    maps:map(fun(_, {file, P}) -> {file, file(Config, filename:basename(P))};
                (_, V) -> V
             end, Template).

doctor(Cfg) -> doctor(Cfg, #{}).
doctor(Cfg, Opts) ->
    R = ibkr_oauth:doctor(Cfg, Opts),
    ct:log("~p", [R]),
    R.

%% The result of one check.
check(Check, Report) ->
    case lists:keyfind(Check, 1, Report) of
        {_, Result} -> Result;
        false -> not_run
    end.

assert_fail(Check, Words, Report) ->
    case check(Check, Report) of
        {fail, Text} ->
            [?assertNotEqual(nomatch, binary:match(Text, W), {Check, W, Text}) || W <- Words],
            %% nothing after a failing online step
            ok;
        Other -> ct:fail({expected_fail, Check, Other, Report})
    end.

assert_warn(Check, Words, Report) ->
    case check(Check, Report) of
        {warn, Text} -> [?assertNotEqual(nomatch, binary:match(Text, W), {Check, W, Text}) || W <- Words], ok;
        Other -> ct:fail({expected_warn, Check, Other, Report})
    end.

last(Report) -> element(1, lists:last(Report)).

%% The server's Date has a resolution of one second, so a skew of S seconds
%% reads as S - 1 .. S + 1 depending on where in the second both clocks are.
assert_seconds({_, Text}, Re, Expected) ->
    case re:run(Text, Re, [{capture, all_but_first, binary}]) of
        {match, [N]} -> ?assert(abs(binary_to_integer(N) - Expected) =< 1, {Text, Expected});
        nomatch -> ct:fail({no_seconds, Re, Text})
    end.

pem_entry(File) ->
    {ok, Pem} = file:read_file(File),
    [Entry] = public_key:pem_decode(Pem),
    public_key:pem_entry_decode(Entry).

dh_pem(P, G) ->
    Der = public_key:der_encode('DHParameter', #'DHParameter'{prime = P, base = G}),
    public_key:pem_encode([{'DHParameter', Der, not_encrypted}]).

prime(Config) ->
    {ok, Hex} = file:read_file(file(Config, "dh_prime.hex")),
    binary_to_integer(string:trim(Hex), 16).

never_shows_secret(Report, Cfg) ->
    Text = iolist_to_binary(io_lib:format("~p", [Report])),
    #{access_token_secret := Secret} = Cfg,
    ?assertEqual(nomatch, binary:match(Text, Secret)),
    ?assertEqual(nomatch, binary:match(Text, <<"PRIVATE KEY">>)).

%%% ------------------------------------------------------------- cases

%% The done-when path: setup -> portal -> doctor, all ok.
setup_then_doctor_all_ok(Config) ->
    Dir = ?config(material, Config),
    Cfg = portal(Config),
    Report = doctor(Cfg),
    Checks = [C || {C, _} <- Report],
    [?assert(lists:member(C, Checks), C)
     || C <- [config, signature_key, public_signature_key, encryption_key, public_encryption_key,
              key_permissions, dh_prime, dh_generator, consumer_key, realm, access_token_secret,
              secret_decrypts, clock, live_session_token, brokerage_session, tickle, accounts,
              websocket, websocket_tic]],
    ?assertEqual([], [R || R = {_, Res} <- Report, Res =/= ok]),
    never_shows_secret(Report, Cfg),
    ?assertMatch(#{handshakes := 1, ssodh_inits := 1}, ?F:stats()),
    %% what setup wrote: modes, LF only, PKCS#8, a 2048-bit safe prime with g = 2
    {ok, #{mode := DirMode}} = mode(Dir),
    ?assertEqual(8#700, DirMode band 8#777),
    [begin
         {ok, #{mode := M}} = mode(filename:join(Dir, F)),
         ?assertEqual(8#600, M band 8#777, F),
         {ok, B} = file:read_file(filename:join(Dir, F)),
         ?assertEqual(nomatch, binary:match(B, <<"\r">>), F)
     end || F <- ibkr_oauth_setup:files()],
    {ok, Priv} = file:read_file(filename:join(Dir, "private_signature.pem")),
    ?assertMatch(<<"-----BEGIN PRIVATE KEY-----\n", _/binary>>, Priv),
    {ok, DhPem} = file:read_file(filename:join(Dir, "dhparam.pem")),
    {ok, #{prime := P, generator := 2}} = ibkr_oauth_config:dh_params(DhPem),
    ?assertEqual(2048, length(integer_to_list(P, 2))),
    ?assertEqual(P, prime([{dir, Dir} | Config])),
    ?assert(ibkr_oauth_setup:valid_consumer_key(?config(consumer_key, Config))),
    %% and a session runs with that config
    {ok, S} = ibkr_oauth:start_link(Cfg#{rate_limit => none}),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, <<"/iserver/accounts">>, #{}),
    ok = ibkr_oauth:stop(S).


mode(File) ->
    case file:read_file_info(File) of
        {ok, Info} -> {ok, #{mode => element(8, Info)}};
        E -> E
    end.

%% The port's generate_rsa / generate_dh: before any init, progress events
%% carry the request's id, bad sizes are badarg.
keygen_commands(_Config) ->
    {ok, Port} = ibkr_oauth_port_call:open(),
    try
        Self = self(),
        {ok, #{pem := Pem, prime_hex := Hex}} =
            ibkr_oauth_port_call:call(Port, {generate_dh, 512}, 60000, fun(E) -> Self ! {event, E} end),
        {ok, #{prime := P, generator := 2}} = ibkr_oauth_config:dh_params(Pem),
        ?assertEqual(P, binary_to_integer(Hex, 16)),
        ?assertEqual(512, length(integer_to_list(P, 2))),
        Events = flush_events([]),
        ?assertNotEqual([], Events),
        [?assertMatch({progress, Id, S} when is_integer(Id) andalso
                                             (S =:= candidate orelse S =:= testing orelse S =:= passed), E)
         || E <- Events],
        ?assertEqual(1, length(lists:usort([Id || {progress, Id, _} <- Events]))),
        {ok, #{private_pem := Priv, public_pem := Pub}} =
            ibkr_oauth_port_call:call(Port, {generate_rsa, 2048}, 60000),
        #'RSAPrivateKey'{modulus = N} = public_key:pem_entry_decode(hd(public_key:pem_decode(Priv))),
        ?assertMatch([{'SubjectPublicKeyInfo', _, not_encrypted}], public_key:pem_decode(Pub)),
        ?assertMatch(#'RSAPublicKey'{modulus = N}, public_key:pem_entry_decode(hd(public_key:pem_decode(Pub)))),
        [?assertEqual({error, {badarg, bits}}, ibkr_oauth_port_call:call(Port, Cmd, 10000))
         || Cmd <- [{generate_rsa, 1024}, {generate_rsa, <<"2048">>}, {generate_dh, 256},
                    {generate_dh, 1 bsl 70}, {generate_dh, -1}]],
        ?assertEqual({error, badarg}, ibkr_oauth_port_call:call(Port, {generate_dh, 512, extra}, 10000)),
        %% and the port still works for sessions afterwards
        ?assertEqual({error, not_initialized}, ibkr_oauth_port_call:call(Port, stats, 10000))
    after
        ibkr_oauth_port_call:close(Port)
    end.

flush_events(Acc) ->
    receive {event, E} -> flush_events([E | Acc])
    after 0 -> lists:reverse(Acc)
    end.

%% A long search stops when the BEAM closes the port: the OS process ends.
keygen_stops_when_port_closed(_Config) ->
    {ok, Port} = ibkr_oauth_port_call:open(),
    OsPid = ibkr_oauth_port:os_pid(Port),
    ok = ibkr_oauth_port:send(Port, 1, {generate_dh, 8192}),
    %% wait for the search to be under way (first progress event)
    receive {Port, {data, _}} -> ok after 60000 -> ct:fail(no_progress) end,
    ibkr_oauth_port_call:close(Port),
    ok = wait_gone(OsPid, 600).

wait_gone(_OsPid, 0) -> {error, still_running};
wait_gone(OsPid, N) ->
    case filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) of
        false -> ok;
        true -> timer:sleep(100), wait_gone(OsPid, N - 1)
    end.

setup_refuses_overwrite(Config) ->
    Dir = ?config(dir, Config),
    {ok, Before} = file:read_file(file(Config, "private_signature.pem")),
    ?assertMatch({error, {exists, _}}, ibkr_oauth_setup:run(Dir, #{dh_bits => 512})),
    ?assertEqual({ok, Before}, file:read_file(file(Config, "private_signature.pem"))),
    ?assertEqual({error, {bad_consumer_key, <<"abc">>}},
                 ibkr_oauth_setup:run(filename:join(Dir, "new"), #{consumer_key => <<"abc">>})),
    ?assertNot(filelib:is_dir(filename:join(Dir, "new"))),
    %% An existing directory others may enter is refused before any key exists.
    Open = filename:join(Dir, "open"),
    ok = file:make_dir(Open),
    ok = file:change_mode(Open, 8#755),
    ?assertEqual({error, {dir_open_to_others, Open}}, ibkr_oauth_setup:run(Open, #{dh_bits => 512})),
    ?assertEqual({ok, []}, file:list_dir(Open)),
    ok = file:change_mode(Open, 8#700),
    ?assertMatch({ok, _}, ibkr_oauth_setup:run(Open, #{dh_bits => 512})),
    ?assertMatch({ok, #file_info{mode = M}} when M band 8#077 =:= 0,
                 file:read_file_info(filename:join(Open, "private_signature.pem"))).

placeholders_fail(Config) ->
    Report = doctor(template(Config)),
    assert_fail(placeholders, [<<"access_token">>, <<"Generate Token">>], Report),
    ?assertEqual(not_run, check(secret_decrypts, Report)).

offline_skips_network(Config) ->
    Cfg = portal(Config),
    Report = doctor(Cfg, #{offline => true}),
    ?assertEqual(ok, check(secret_decrypts, Report)),
    ?assertEqual(not_run, check(clock, Report)),
    ?assertEqual(not_run, check(live_session_token, Report)),
    ?assertEqual(0, maps:get(requests, ?F:stats())).

bad_pem(Config) ->
    Cfg = portal(Config),
    ok = file:write_file(file(Config, "private_signature.pem"), <<"-----BEGIN PRIVATE KEY-----\nnot base64\n">>),
    Report = doctor(Cfg),
    assert_fail(signature_key, [], Report),
    ?assertEqual(not_run, check(live_session_token, Report)).

crlf_public_key(Config) ->
    Cfg = portal(Config),
    {ok, Pub} = file:read_file(file(Config, "public_signature.pem")),
    ok = file:write_file(file(Config, "public_signature.pem"), binary:replace(Pub, <<"\n">>, <<"\r\n">>, [global])),
    assert_fail(public_signature_key, [<<"CRLF">>, <<"403">>], doctor(Cfg)).

crlf_private_key_loads(Config) ->
    Cfg = portal(Config),
    [begin
         {ok, Pem} = file:read_file(file(Config, F)),
         ok = file:write_file(file(Config, F), binary:replace(Pem, <<"\n">>, <<"\r\n">>, [global]))
     end || F <- ["private_signature.pem", "private_encryption.pem"]],
    Report = doctor(Cfg),
    ?assertEqual(ok, check(signature_key, Report)),
    ?assertEqual(ok, check(secret_decrypts, Report)),
    ?assertEqual(ok, check(live_session_token, Report)).

pkcs1_keys(Config) ->
    Cfg = portal(Config),
    Key = pem_entry(file(Config, "private_signature.pem")),
    ok = file:write_file(file(Config, "private_signature.pem"),
                         public_key:pem_encode([public_key:pem_entry_encode('RSAPrivateKey', Key)])),
    Pub = pem_entry(file(Config, "public_signature.pem")),
    ok = file:write_file(file(Config, "public_signature.pem"),
                         public_key:pem_encode([public_key:pem_entry_encode('RSAPublicKey', Pub)])),
    {Report, Lines} = both(Cfg),
    ?assertEqual(ok, check(signature_key, Report)),
    ?assertMatch([_], [L || {ok, signature_key, F, _} = L <- Lines, binary:match(F, <<"PKCS#1 RSA-2048">>) =/= nomatch]),
    ?assertMatch([_], [L || {ok, encryption_key, F, _} = L <- Lines, binary:match(F, <<"PKCS#8 RSA-2048">>) =/= nomatch]),
    assert_warn(public_signature_key, [<<"PKCS#1">>, <<"-pubout">>], Report),
    ?assertEqual(ok, check(live_session_token, Report)).

both(Cfg) ->
    Lines = ibkr_oauth_doctor:report(Cfg, #{}),
    ct:log("~ts", [[[ibkr_oauth_doctor:format_line(L), $\n] || L <- Lines]]),
    {[{C, case L of ok -> ok; _ -> {L, <<F/binary, " ", A/binary>>} end} || {L, C, F, A} <- Lines], Lines}.

wrong_pair(Config) ->
    Cfg = portal(Config),
    {ok, Other} = file:read_file(file(Config, "public_signature.pem")),
    ok = file:write_file(file(Config, "public_encryption.pem"), Other),
    assert_fail(public_encryption_key, [<<"does not match">>], doctor(Cfg)).

loose_permissions(Config) ->
    Cfg = portal(Config),
    ok = file:change_mode(file(Config, "private_encryption.pem"), 8#644),
    Report = doctor(Cfg),
    assert_warn(key_permissions, [<<"private_encryption.pem">>, <<"chmod 600">>], Report),
    ?assertEqual(ok, check(accounts, Report)).

negative_prime(Config) ->
    Cfg = portal(Config),
    ok = file:write_file(file(Config, "dhparam.pem"), dh_pem(-prime(Config), 2)),
    assert_fail(dh_prime, [<<"negative">>, <<"401">>], doctor(Cfg)).

composite_prime(Config) ->
    Cfg = portal(Config),
    P = prime(Config),
    N0 = P - (P rem 15) + 15,                       % a multiple of 15
    N = case N0 rem 2 of 0 -> N0 + 15; _ -> N0 end,  % odd, still composite
    ok = file:write_file(file(Config, "dhparam.pem"), dh_pem(N, 2)),
    assert_fail(dh_prime, [<<"not a prime">>], doctor(Cfg)).

generator_not_2(Config) ->
    Cfg = portal(Config),
    ok = file:write_file(file(Config, "dhparam.pem"), dh_pem(prime(Config), 5)),
    assert_fail(dh_generator, [<<"5">>, <<"generator 2">>], doctor(Cfg)).

hex_prime_differs(Config) ->
    Cfg = portal(Config),
    Other = ibkr_oauth_config:normalize_hex(maps:get(dh_prime, ibkr_test_lib:vectors(public))),
    assert_fail(dh_prime, [<<"differs from">>], doctor(Cfg#{dh_prime := Other})).

%% The prime pasted as `openssl dhparam -text' prints it works end to end.
prime_as_dhparam_text(Config) ->
    Cfg = portal(Config),
    Hex = integer_to_binary(prime(Config), 16),
    Text = iolist_to_binary(["    00:", lists:join(":", [string:lowercase(B) || <<B:2/binary>> <= Hex]), "\n"]),
    Report = doctor(Cfg#{dh_prime := Text}),
    ?assertEqual(ok, check(dh_prime, Report)),
    ?assertEqual(ok, check(accounts, Report)).

secret_wrong_length(Config) ->
    Cfg = portal(Config),
    Report = doctor(Cfg#{access_token_secret := base64:encode(crypto:strong_rand_bytes(100))}),
    assert_fail(access_token_secret, [<<"100 bytes, not 256">>], Report).

secret_not_decrypting(Config) ->
    Cfg = portal(Config),
    SigPub = ibkr_server_crypto:public_key(file(Config, "public_signature.pem")),
    Wrong = ibkr_server_crypto:encrypt_secret(crypto:strong_rand_bytes(32), SigPub),
    Report = doctor(Cfg#{access_token_secret := Wrong}),
    ?assertEqual(ok, check(access_token_secret, Report)),
    assert_fail(secret_decrypts, [<<"does not decrypt">>], Report).

realm_mismatch(Config) ->
    Cfg = portal(Config),
    assert_fail(realm, [<<"TESTCONS">>], doctor(Cfg#{realm => <<"test_realm">>})).

%%% IBKR's answers (the onboarding table)

invalid_consumer(Config) ->
    %% the fake server knows another consumer key: IBKR's "invalid consumer"
    Cfg = portal(Config, #{consumer_key => <<"ZZZZZZZZZ">>}),
    Report = doctor(Cfg),
    assert_fail(live_session_token, [<<"invalid_consumer">>, <<"regional midnight">>], Report),
    ?assertEqual(live_session_token, last(Report)).

invalid_consumer_envelope(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/oauth/live_session_token">>, 401,
                       <<"{\"error\":\"id: 4711, error: invalid consumer\",\"statusCode\":401}">>, 1}),
    assert_fail(live_session_token, [<<"incident 4711">>, <<"9-letter">>], doctor(Cfg)).

no_access_secret(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/oauth/live_session_token">>, 401,
                       <<"{\"error\":\"id: 5, LST failed, error: No access secret key found for consumer\",\"statusCode\":401}">>, 1}),
    assert_fail(live_session_token, [<<"no_access_secret">>, <<"Generate Token">>], doctor(Cfg)).

other_401(Config) ->
    %% the fake server wants another access token
    Cfg = portal(Config, #{access_token => <<"another-token">>}),
    assert_fail(live_session_token, [<<"unauthorized">>, <<"limited_poa">>], doctor(Cfg)).

lst_signature_mismatch(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault(wrong_lst_signature),
    assert_fail(live_session_token, [<<"dh_prime">>, <<"dh_generator">>, <<"encryption_key">>], doctor(Cfg)).

first_401_after_lst(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/iserver/auth/ssodh/init">>, 401,
                       <<"{\"error\":\"invalid signature\",\"statusCode\":401}">>, 1}),
    Report = doctor(Cfg),
    assert_fail(brokerage_session, [<<"first signed request after a new live session token">>, <<"generator">>], Report),
    ?assertEqual(brokerage_session, last(Report)).

no_bridge(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/iserver/accounts">>, 400,
                       <<"{\"error\":\"Bad Request: no bridge\",\"statusCode\":400}">>, 1}),
    assert_fail(accounts, [<<"no_bridge">>, <<"ssodh/init">>], doctor(Cfg)).

gone(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/iserver/auth/ssodh/init">>, 410, <<>>, 1}),
    Report = doctor(Cfg),
    assert_fail(brokerage_session, [<<"410">>, <<"paper">>], Report),
    ?assertEqual(not_run, check(tickle, Report)).

sso_dh_failed(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/iserver/auth/ssodh/init">>, 500,
                       <<"{\"error\":\"failed to generate sso dh token\",\"statusCode\":500}">>, 1}),
    assert_fail(brokerage_session, [<<"sso_dh_failed">>, <<"API support">>], doctor(Cfg)).

misconfigured_session(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/iserver/accounts">>, 200,
                       <<"{\"error\":\"Session is misconfigured.  Please contact customer support.\"}">>, 1}),
    assert_fail(accounts, [<<"misconfigured_session">>, <<"trading-enabled">>], doctor(Cfg)).

rate_limited(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/tickle">>, 429, <<"{\"error\":\"Too many requests\",\"statusCode\":429}">>, 1}),
    assert_fail(tickle, [<<"rate_limited">>, <<"penalty box">>], doctor(Cfg)).

competing(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/tickle">>, 200,
                       <<"{\"iserver\":{\"authStatus\":{\"authenticated\":true,\"competing\":true}}}">>, 1}),
    assert_warn(tickle, [<<"competing">>, <<"evicts">>], doctor(Cfg)).

not_authenticated_after_ssodh(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/tickle">>, 200,
                       <<"{\"iserver\":{\"authStatus\":{\"authenticated\":false,\"competing\":false}}}">>, 1}),
    Report = doctor(Cfg),
    assert_fail(tickle, [<<"authenticated:false">>, <<"ssodh/init">>], Report),
    ?assertEqual(tickle, last(Report)).

clock_skew_warns(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({skew_s, -60}),
    Report = doctor(Cfg),
    assert_warn(clock, [<<" s ahead of">>, <<"NTP">>], Report),
    assert_seconds(check(clock, Report), "([0-9]+) s ahead of", 60),
    ?assertEqual(ok, check(accounts, Report)).

clock_skew_fails_lst(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({skew_s, 1000}),   % beyond the server's 300 s window
    Report = doctor(Cfg),
    assert_warn(clock, [<<" s behind">>], Report),
    assert_seconds(check(clock, Report), "([0-9]+) s behind", 1000),
    assert_fail(live_session_token, [<<"unauthorized">>, <<"clock is off by -">>], Report),
    assert_seconds(check(live_session_token, Report), "clock is off by -([0-9]+) s", 1000).

%%% The websocket (the last online step)

%% Opened with the tickle's session: system, act, sts authenticated:true,
%% isPaper reported, tic answered, and the socket closed afterwards.
websocket_all_ok(Config) ->
    Cfg = portal(Config),
    {Report, Lines} = both(Cfg),
    ?assertEqual([], [R || R = {_, Res} <- Report, Res =/= ok]),
    [{ok, websocket, Found, <<>>}] = [L || L = {_, websocket, _, _} <- Lines],
    [?assertNotEqual(nomatch, binary:match(Found, W), W)
     || W <- [<<"system (user fakeuser)">>, <<"act (2 accounts)">>, <<"sts authenticated:true">>,
              <<"paper account (isPaper:true)">>]],
    ?assertEqual(websocket_tic, element(2, lists:last(Lines))),
    ?assertMatch(#{connections := 1, tics := 1}, ibkr_fake_ws:stats()),
    %% the doctor closed its socket (the fake notices the close frame)
    ok = wait_until(fun() -> maps:get(open, ibkr_fake_ws:stats()) =:= 0 end, 100).

wait_until(_F, 0) -> {error, still_not_true};
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(100), wait_until(F, N - 1)
    end.

%% The tickle hands out a session the websocket does not accept: the
%% upgrade is refused with 401, and the doctor says cookie or token.
websocket_upgrade_refused(Config) ->
    Cfg = portal(Config),
    ok = ?F:set_fault({answer, <<"/tickle">>, 200,
                       <<"{\"session\":\"0badc0ffee\",\"iserver\":{\"authStatus\":"
                         "{\"authenticated\":true,\"competing\":false}}}">>, 1}),
    Report = doctor(Cfg),
    ?assertEqual(ok, check(tickle, Report)),
    ?assertEqual(ok, check(accounts, Report)),
    assert_fail(websocket, [<<"upgrade refused: HTTP 401">>, <<"bad session cookie">>, <<"POST /tickle">>,
                            <<"access token">>], Report),
    ?assertEqual(websocket, last(Report)),
    ?assertMatch(#{rejected := #{<<"bad session cookie">> := 1}, connections := 0}, ibkr_fake_ws:stats()).

%% The socket opens but sts says the brokerage session is not there.
websocket_sts_not_authenticated(Config) ->
    Cfg = portal(Config),
    ok = ibkr_fake_ws:configure(#{hello_sts => #{authenticated => false}}),
    Report = doctor(Cfg),
    ?assertEqual(ok, check(tickle, Report)),
    assert_fail(websocket, [<<"system (user fakeuser)">>, <<"sts authenticated:false">>, <<"ssodh/init">>],
                Report),
    ?assertEqual(not_run, check(websocket_tic, Report)).

%% sts competing:true: another session took the brokerage session over.
websocket_sts_competing(Config) ->
    Cfg = portal(Config),
    ok = ibkr_fake_ws:configure(#{hello_sts => #{competing => true}}),
    assert_fail(websocket, [<<"competing:true">>, <<"another session">>], doctor(Cfg)).

%% Everything but the tic answer: the socket line is ok, the tic fails.
websocket_no_tic_answer(Config) ->
    Cfg = portal(Config),
    ok = ibkr_fake_ws:configure(#{answer_tic => false}),
    {Report, Lines} = both(Cfg),
    ?assertEqual(ok, check(websocket, Report)),
    assert_fail(websocket_tic, [<<"no answer to tic">>], Report),
    ?assertEqual(websocket_tic, element(2, lists:last(Lines))),
    ?assertMatch(#{tics := 1}, ibkr_fake_ws:stats()).
