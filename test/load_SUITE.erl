%% Load against the fake IBKR server (real TLS, real OAuth checks): 5,000
%% requests from 200 processes, each carrying a distinct query parameter
%% that /echo sends back, so every answer is matched to its caller; a
%% SIGKILL of the port program in the middle. Then leak checks: nothing
%% left in the session (mailbox, maps, queues, limiter slots) and no extra
%% port. Rate limit `none' (ibkr_test_lib's config): this measures the
%% session, not IBKR's pacing.
-module(load_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([load_with_port_kill/1, load_401_storm/1]).

-define(F, ibkr_fake_server).
-define(L, ibkr_check_lib).
-define(CALLERS, 200).
-define(PER_CALLER, 25).
%% A liveness bound for the whole run, far above what it takes.
-define(ANSWER_BOUND, 120000).

suite() -> [{timetrap, {minutes, 3}}].

all() -> [load_with_port_kill, load_401_storm].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(_Case, Config) ->
    {ok, #{config := Client}} =
        ?F:start_from_vectors(public, #{ca_dir => ?config(priv_dir, Config)}),
    {ok, S} = ibkr_oauth:start_link(Client#{request_timeout => 60000}),
    unlink(S),
    [{session, S} | Config].

end_per_testcase(_Case, Config) ->
    _ = (catch ibkr_oauth:stop(?config(session, Config))),
    ?F:stop().

%%% ----------------------------------------------------------------- cases

%% 200 callers x 25 requests (every tenth a POST with a body), the port
%% killed once 2,000 have been answered: every caller gets the answer to its
%% own request or {error, port_down}; nothing hangs; the session has a new
%% port and authenticates again; nothing is left behind.
load_with_port_kill(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    Before = footprint(S),
    OldOs = ibkr_oauth:os_pid(S),
    Results = load(S, 2000, fun() -> ?L:kill_os(OldOs) end),
    ?assertEqual(?CALLERS * ?PER_CALLER, length(Results)),
    Bad = [R || R <- Results, R =/= ok, R =/= port_down],
    ?assertEqual([], lists:sublist(Bad, 5)),
    Down = length([x || port_down <- Results]),
    ct:pal("~b answered, ~b port_down", [length(Results) - Down, Down]),
    ?assert(Down > 0),                           % the kill hit requests in flight
    ?assertNot(?L:os_alive(OldOs)),
    %% recovered: a new port, a new LST
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, <<"/echo">>, #{}),
    ?assertNotEqual(OldOs, ibkr_oauth:os_pid(S)),
    ?assertMatch(#{port_restarts := 1, handshakes := 2}, ibkr_oauth:stats(S)),
    ok = no_leaks(S, Before).

%% The LST invalidated under load (once 1,000 are answered): every request
%% is answered 200 after one shared handshake; each one answered 401 is
%% sent exactly once more.
load_401_storm(Config) ->
    S = ?config(session, Config),
    {ok, _} = ibkr_oauth:authenticate(S),
    Before = footprint(S),
    Results = load(S, 1000, fun() -> ?F:set_fault(invalidate_lst) end),
    ?assertEqual([ok], lists:usort(Results)),
    %% every 401 answered once more, nothing else sent twice; at most one
    %% 401 per caller (one request in flight each)
    #{handshakes := 2, statuses := #{401 := N401}, by_path := #{<<"/echo">> := Echoes}} = ?F:stats(),
    ?assertEqual(?CALLERS * ?PER_CALLER + N401, Echoes),
    ?assert(N401 =< ?CALLERS),
    ?assertMatch(#{handshakes := 2, errors := 0}, ibkr_oauth:stats(S)),
    ok = no_leaks(S, Before).

%%% ---------------------------------------------------------------- helpers

%% Runs the callers; Fault() once After requests have been answered. Every
%% caller's results, one list.
load(S, After, Fault) ->
    Done = counters:new(1, []),
    Pids = ?L:spawn_callers([fun() -> caller(S, C, Done) end || C <- lists:seq(1, ?CALLERS)]),
    ok = ?L:wait_until(fun() -> counters:get(Done, 1) >= After end, ?ANSWER_BOUND),
    ok = Fault(),
    lists:append(?L:collect(Pids, ?ANSWER_BOUND)).

%% One caller: its requests one after the other, each with its own id; ok
%% when the answer is its own, port_down, or what went wrong.
caller(S, C, Done) ->
    [begin
         Id = integer_to_binary(C * 1000 + I),
         Result = case I rem 10 of
                      0 -> ibkr_oauth:request(S, post, <<"/echo">>,
                                              #{query => [{<<"id">>, Id}],
                                                body => <<"{\"id\":", Id/binary, "}">>});
                      _ -> ibkr_oauth:request(S, get, <<"/echo">>, #{query => [{<<"id">>, Id}]})
                  end,
         counters:add(Done, 1, 1),
         check(Id, Result)
     end || I <- lists:seq(1, ?PER_CALLER)].

check(Id, {ok, #{status := 200, body := Body}}) ->
    case binary:match(Body, <<"[\"id\",\"", Id/binary, "\"]">>) of
        nomatch -> {not_mine, Id, Body};
        _ -> ok
    end;
check(_Id, {error, port_down}) -> port_down;
check(Id, Other) -> {Id, Other}.

%% What must be back to its value before the load.
footprint(S) ->
    #{ports => length([P || P <- erlang:ports(), is_ours(P)]),
      links => length(element(2, process_info(S, links)))}.

is_ours(Port) ->
    case erlang:port_info(Port, name) of
        {name, Name} -> lists:suffix("ibkr_oauth_port", Name);
        undefined -> false
    end.

%% Nothing waits or is held any more: the session's mailbox, its request,
%% pending and slot maps, its queues, the limiter; as many ports and links
%% as before the load.
no_leaks(S, Before) ->
    ok = ?L:wait_until(fun() ->
                               {message_queue_len, 0} =:= process_info(S, message_queue_len)
                       end, 10000),
    ?assertMatch(#{in_flight := 0, queued := 0, rate_limit_queued := 0,
                   handshake_in_flight := false}, ibkr_oauth:stats(S)),
    %% The raw state: every map is empty but the counters (and the websocket
    %% /tickle cache, unused here); every list but the port exit times.
    State = sys:get_state(S),
    Fields = tuple_to_list(State),
    Maps = [M || M <- Fields, is_map(M), not is_map_key(requests, M), map_size(M) > 0],
    ?assertEqual([], Maps),
    Lists = [L || L <- Fields, is_list(L), L =/= [], not lists:all(fun is_integer/1, L)],
    ?assertEqual([], Lists),
    ?assertEqual(Before, footprint(S)),
    ok.
