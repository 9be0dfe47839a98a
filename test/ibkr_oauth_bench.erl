%% make bench: one table, every row measured in this run on this machine.
%% The floor is an echo port over the same {packet,4} fds 3/4 carrying a frame
%% of the same size as a sign request; ratios are to that floor.
-module(ibkr_oauth_bench).
-export([main/0]).

-define(N_SEQ, 20000).
-define(N_CONC, 200000).
-define(WARMUP, 2000).

-spec main() -> 0 | 1.
main() ->
    logger:set_primary_config(level, warning),
    try run() of
        ok -> 0
    catch C:E:St ->
        io:format("bench failed: ~p:~tp~n~tp~n", [C, E, St]), 1
    end.

run() ->
    {ok, _} = application:ensure_all_started(ssl),
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    io:format("ibkr_oauth bench on ~s, ~b cores, OTP ~s~n",
              [hostname(), erlang:system_info(logical_processors), erlang:system_info(otp_release)]),
    Url = <<"https://api.ibkr.com/v1/api/portfolio/accounts">>,
    S = authenticated_session(#{}),
    Frame = term_to_binary({12345, {sign, <<"GET">>, Url, #{}}}),
    Echo = echo_floor(Frame),
    Sign = latency(fun() -> {ok, _} = ibkr_oauth:sign(S, get, Url) end),
    Conc = [{C, throughput(C, fun() -> {ok, _} = ibkr_oauth:sign(S, get, Url) end)} || C <- [1, 8, 64]],
    Mac = mac_reference(Url),
    {StartRaw, StartReady} = start_times(),
    Rss = rss_kb(ibkr_oauth:os_pid(S)),
    Handshake = handshake_time(S),
    ok = ibkr_oauth:stop(S),
    Req = request_throughput(),
    EchoP50 = p(50, Echo),
    Rows =
        [{"echo port round trip p50 (IPC floor)", us(EchoP50), 1.0, "-"},
         {"echo port round trip p99", us(p(99, Echo)), p(99, Echo) / EchoP50, "-"},
         {"sign/3 sequential p50", us(p(50, Sign)), p(50, Sign) / EchoP50, "<= 1.3x floor"},
         {"sign/3 sequential p99", us(p(99, Sign)), p(99, Sign) / EchoP50, "-"}]
        ++ [{io_lib:format("sign/3 with ~b concurrent callers", [C]), per_s(R), none,
             if C =:= 64 -> ">= 200k/s"; true -> "-" end} || {C, R} <- Conc]
        ++ [{"in-VM crypto:mac/4 HMAC-SHA256 p50 (reference)", us(p(50, Mac)), p(50, Mac) / EchoP50, "-"},
            {"port spawn to first reply (echo)", us(StartRaw), none, "-"},
            {"start_link to ready (keys, decrypt, prime check)", us(StartReady), none, "<= 10 ms"},
            {"port RSS after the sign runs", io_lib:format("~.1f MB", [Rss / 1024]), none, "<= 6 MB"},
            {"LST handshake compute (lst_request + lst_complete)", us(Handshake), none, "-"},
            {"request/4 GET against the local fake server, 16 callers", per_s(Req), none, "-"}],
    print(Rows),
    io:format("~nPython port (ibind behind {packet,4}), measured earlier for comparison: "
              "116 us p50, 17k signs/s pipelined, 189 ms start, 31 MB RSS.~n"),
    ok.

%% A session holding the LST of the first public vector case.
authenticated_session(Extra) ->
    V = ibkr_test_lib:vectors(public),
    [C | _] = maps:get(cases, V),
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public, Extra)),
    {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
    {ok, _} = ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                                           live_session_token_signature => maps:get(live_session_token_signature, C),
                                           live_session_token_expiration => erlang:system_time(millisecond) + 86400000}),
    S.

echo_floor(Frame) ->
    Exe = filename:join([root(), "c_src", "build", "echo_port"]),
    P = open_port({spawn_executable, Exe}, [{packet, 4}, binary, nouse_stdio, exit_status]),
    Ts = latency(fun() -> P ! {self(), {command, Frame}}, receive {P, {data, _}} -> ok end end),
    port_close(P),
    Ts.

%% Microseconds per call, sorted, after a warm-up.
latency(F) ->
    [F() || _ <- lists:seq(1, ?WARMUP)],
    lists:sort([begin
                    T0 = erlang:monotonic_time(nanosecond),
                    F(),
                    (erlang:monotonic_time(nanosecond) - T0) / 1000
                end || _ <- lists:seq(1, ?N_SEQ)]).

%% Calls per second with C callers sharing ?N_CONC calls.
throughput(C, F) ->
    PerCaller = ?N_CONC div C,
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> [F() || _ <- lists:seq(1, PerCaller)], Self ! {done, self()} end)
            || _ <- lists:seq(1, C)],
    [receive {done, P} -> ok end || P <- Pids],
    Us = erlang:monotonic_time(microsecond) - T0,
    PerCaller * C / (Us / 1.0e6).

mac_reference(Url) ->
    Key = crypto:strong_rand_bytes(20),
    Base = <<"GET&", (uri_string:quote(Url))/binary, "&oauth_consumer_key%3DHSDKAAAUR%26oauth_nonce%3DabcdefghijklmnoP"
             "%26oauth_signature_method%3DHMAC-SHA256%26oauth_timestamp%3D1799860066%26oauth_token%3D0c6d07ef7b77e90d3593">>,
    latency(fun() -> base64:encode(crypto:mac(hmac, sha256, Key, Base)) end).

start_times() ->
    Exe = filename:join(code:priv_dir(ibkr_oauth), "ibkr_oauth_port"),
    Raw = median([begin
                      T0 = erlang:monotonic_time(nanosecond),
                      P = open_port({spawn_executable, Exe}, [{packet, 4}, binary, nouse_stdio, exit_status]),
                      true = port_command(P, term_to_binary({1, {echo, x}})),
                      receive {P, {data, _}} -> ok end,
                      T = (erlang:monotonic_time(nanosecond) - T0) / 1000,
                      port_close(P),
                      T
                  end || _ <- lists:seq(1, 21)]),
    Config = ibkr_test_lib:vector_config(public),
    Ready = median([begin
                        T0 = erlang:monotonic_time(nanosecond),
                        {ok, S} = ibkr_oauth:start_link(Config),
                        T = (erlang:monotonic_time(nanosecond) - T0) / 1000,
                        ok = ibkr_oauth:stop(S),
                        T
                    end || _ <- lists:seq(1, 21)]),
    {Raw, Ready}.

handshake_time(S) ->
    V = ibkr_test_lib:vectors(public),
    Cases = maps:get(cases, V),
    median([begin
                T0 = erlang:monotonic_time(nanosecond),
                {ok, _} = ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], C)),
                {ok, _} = ibkr_oauth:lst_complete(S, #{diffie_hellman_response => maps:get(diffie_hellman_response, C),
                                                       live_session_token_signature => maps:get(live_session_token_signature, C),
                                                       live_session_token_expiration => erlang:system_time(millisecond) + 86400000}),
                (erlang:monotonic_time(nanosecond) - T0) / 1000
            end || C <- Cases]).

request_throughput() ->
    {ok, #{base_url := BaseUrl, ca_file := CaFile}} = ibkr_fake_server:start_from_vectors(public, #{}),
    Config = ibkr_test_lib:vector_config(public, #{base_url => BaseUrl, ca_file => CaFile}),
    {ok, S} = ibkr_oauth:start_link(Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    Get = fun() -> {ok, #{status := 200}} = ibkr_oauth:request(S, get, <<"/portfolio/accounts">>, #{}) end,
    [Get() || _ <- lists:seq(1, 100)],
    PerCaller = 250,
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> [Get() || _ <- lists:seq(1, PerCaller)], Self ! {done, self()} end)
            || _ <- lists:seq(1, 16)],
    [receive {done, P} -> ok end || P <- Pids],
    Us = erlang:monotonic_time(microsecond) - T0,
    ok = ibkr_oauth:stop(S),
    ibkr_fake_server:stop(),
    PerCaller * 16 / (Us / 1.0e6).

rss_kb(OsPid) ->
    {ok, Status} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(Status, <<"VmRSS:\\s+([0-9]+) kB">>, [{capture, all_but_first, binary}]),
    binary_to_integer(Kb).

print(Rows) ->
    io:format("~n~-55s ~14s ~12s  ~s~n", ["measure", "value", "x floor", "target"]),
    io:format("~s~n", [lists:duplicate(98, $-)]),
    [io:format("~-55s ~14s ~12s  ~s~n", [Name, Val, ratio(R), T]) || {Name, Val, R, T} <- Rows],
    ok.

ratio(none) -> "";
ratio(R) -> io_lib:format("~.2fx", [R]).
us(X) -> io_lib:format("~.1f us", [X]).
per_s(X) -> io_lib:format("~.0f /s", [X]).
p(Pct, Sorted) -> lists:nth(max(1, round(Pct / 100 * length(Sorted))), Sorted).
median(L) -> p(50, lists:sort(L)).
root() -> filename:dirname(filename:dirname(proplists:get_value(source, ?MODULE:module_info(compile)))).
hostname() -> {ok, H} = inet:gethostname(), H.
