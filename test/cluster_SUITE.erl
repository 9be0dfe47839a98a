%% One IBKR session per credential across a cluster: three peer nodes each
%% run the claimant of ibkr_oauth:start_session({cluster, Name}, Config)
%% against the fake IBKR server on this node.
%%
%% The peers are controlled over their stdio (peer's standard_io
%% connection), so this node is not part of their cluster and cutting their
%% connections does not cut ours. They run with `dist_auto_connect once':
%% a connection that was cut stays cut until the test connects it again
%% (otherwise any message across would heal the split at once).
%%
%% "Never two sessions at once" is watched on every peer by an observer
%% that traces the calls to ibkr_oauth_cluster:register_name/2 that
%% returned `yes' (the session process registering itself, before it opens
%% its port) and the exit of each such process, with trace timestamps: the
%% live intervals of all nodes must not overlap (except while the cluster
%% is split, where one session per part is what the design says).
-module(cluster_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([one_node_api/1, one_session_three_nodes/1, owner_killed_fails_over/1,
         owner_stopped_hands_over/1, split_and_heal/1]).
%% run on the peers
-export([observer_start/0, observer_init/1, observed/0]).

-define(F, ibkr_fake_server).
-define(L, ibkr_check_lib).
-define(ACCOUNTS, <<"/portfolio/accounts">>).
-define(ORDERS, <<"/iserver/account/orders">>).
-define(WAIT, 30000).                 % liveness bound for waits, not a performance bound

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [one_node_api, one_session_three_nodes, owner_killed_fails_over, owner_stopped_hands_over,
     split_and_heal].

init_per_suite(Config) ->
    Config.

end_per_suite(_Config) -> ok.

init_per_testcase(Case, Config) ->
    Priv = ?config(priv_dir, Config),
    %% During a split both parts hold an LST; the fake server keeps a
    %% replaced LST valid for a grace time (10 s by default): long enough
    %% here for the losing session's logout to be accepted on a slow host.
    Grace = case Case of
                split_and_heal -> #{lst_grace_ms => 600000};
                _ -> #{}
            end,
    {ok, #{config := Client0}} = ?F:start_from_vectors(public, Grace#{ca_dir => Priv}),
    %% key files, not PEM content: each node reads them itself
    Dir = ibkr_test_lib:vector_dir(public),
    V = ibkr_test_lib:vectors(public),
    Client = Client0#{encryption_key => {file, filename:join(Dir, maps:get(encryption_key_file, V))},
                      signature_key => {file, filename:join(Dir, maps:get(signature_key_file, V))},
                      auto_authenticate => true, brokerage_session => true,
                      rate_limit => none},
    Peers = case Case of
                one_node_api -> [];
                _ -> start_peers(Case, 3)
            end,
    Name = {?MODULE, Case},
    [{peers, Peers}, {client, Client}, {name, Name} | Config].

end_per_testcase(_Case, Config) ->
    [catch peer:stop(P) || {P, _} <- ?config(peers, Config)],
    ?F:stop().

%%% ----------------------------------------------------------------- cases

%% On this node alone: bad configs fail the start with the usual reasons,
%% also on a node that would only watch (its key files are checked); the
%% claimant is not a session; stopping it logs the session out and frees
%% the name.
one_node_api(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Name = ?config(name, Config),
    Client = ?config(client, Config),
    ?assertMatch({error, {bad_config, _, missing}}, ibkr_oauth:start_session({cluster, Name}, #{})),
    ?assertEqual({error, {bad_config, config, badarg}}, ibkr_oauth:start_session({cluster, Name}, nope)),
    %% this node would run it, but the port refuses the prime: nothing stays registered
    ?assertEqual({error, {bad_config, dh_prime, not_hex}},
                 ibkr_oauth:start_session({cluster, Name}, Client#{dh_prime => <<"xyz">>})),
    ?assertEqual(undefined, global:whereis_name(Name)),
    {ok, C} = ibkr_oauth:start_session({cluster, Name}, Client),
    %% a second claimant would only watch, but could not take over
    ?assertEqual({error, {bad_config, signature_key, enoent}},
                 ibkr_oauth:start_session({cluster, Name}, Client#{signature_key => {file, "/nonexistent/sig.pem"}})),
    ?assertEqual({error, {bad_config, encryption_key, eisdir}},
                 ibkr_oauth:start_session({cluster, Name}, Client#{encryption_key => {file, "/"}})),
    ?assertMatch({ok, #{status := 200}}, ibkr_oauth:request({global, Name}, get, ?ACCOUNTS)),
    Here = node(),
    ?assertMatch(#{node := Here, handshakes := 1}, ibkr_oauth:stats({global, Name})),
    ?assertEqual({error, not_a_session}, ibkr_oauth:stats(C)),
    ?assertEqual({error, not_a_session}, ibkr_oauth:request(C, get, ?ACCOUNTS)),
    Session = global:whereis_name(Name),
    ?assertEqual(node(), node(Session)),
    ok = ibkr_oauth:stop(C),
    ?assertNot(is_process_alive(Session)),
    ?assertEqual(undefined, global:whereis_name(Name)),
    ?assertMatch(#{logouts := 1}, ?F:stats()),
    ?assertEqual({error, noproc}, ibkr_oauth:stats({global, Name})).

%% Three nodes start the same child at once: one session in the cluster, one
%% handshake and one ssodh/init at the server, requests from every node
%% succeed, and stats/1 names the same owner everywhere.
one_session_three_nodes(Config) ->
    Peers = ?config(peers, Config),
    Name = ?config(name, Config),
    _ = start_claimants(Peers, Name, ?config(client, Config)),
    Owner = wait_one_owner(Peers, Name, 1),
    ct:log("owner: ~p", [Owner]),
    [?assertMatch({ok, #{status := 200}}, call(P, ibkr_oauth, request, [{global, Name}, get, ?ACCOUNTS]))
     || {P, _} <- Peers],
    [?assertMatch({ok, #{status := 200}}, call(P, ibkr_oauth, request, [{global, Name}, get, ?ORDERS]))
     || {P, _} <- Peers],
    [?assertMatch(#{node := Owner, authenticated := true, handshakes := 1},
                  call(P, ibkr_oauth, stats, [{global, Name}]))
     || {P, _} <- Peers],
    %% nothing else happens later: the others only watch
    timer:sleep(1000),
    ?assertMatch(#{handshakes := 1, lst_requests := 1, ssodh_inits := 1}, ?F:stats()),
    Intervals = intervals(Peers),
    ?assertEqual(1, length(Intervals), Intervals),
    never_two(Intervals),
    %% the config stays sealed: in the child spec (supervisor reports show
    %% its start arguments) and in the claimants' status
    Client = ?config(client, Config),
    Secret = maps:get(access_token_secret, Client),
    {P1, _} = hd(Peers),
    Spec = ibkr_oauth:child_spec({cluster, Name}, Client),
    [{_, Claimant, _, _} | _] = call(P1, supervisor, which_children, [ibkr_oauth_sup]),
    Status = call(P1, sys, get_status, [Claimant]),
    [?assertEqual(nomatch, binary:match(iolist_to_binary(io_lib:format("~p", [T])), Secret))
     || T <- [Spec, Status]].

%% The owner's node dies: another node owns a new session (its own
%% handshake), requests from the others succeed, and no session ran
%% anywhere else before the owner's node was killed.
owner_killed_fails_over(Config) ->
    Peers = ?config(peers, Config),
    Name = ?config(name, Config),
    _ = start_claimants(Peers, Name, ?config(client, Config)),
    Owner = wait_one_owner(Peers, Name, 1),
    {OwnerPeer, _} = lists:keyfind(Owner, 2, Peers),
    Survivors = lists:keydelete(Owner, 2, Peers),
    [OwnerInterval] = intervals([{OwnerPeer, Owner}]),
    T0 = erlang:monotonic_time(millisecond),
    KilledAt = os:system_time(microsecond),
    ok = peer:stop(OwnerPeer),                 % the node halts: no terminate, no logout
    NewOwner = wait_one_owner(Survivors, Name, 2),
    ct:log("failover: ~p -> ~p, a new authenticated session after ~b ms",
           [Owner, NewOwner, erlang:monotonic_time(millisecond) - T0]),
    ?assertNotEqual(Owner, NewOwner),
    [?assertMatch({ok, #{status := 200}}, call(P, ibkr_oauth, request, [{global, Name}, get, ?ORDERS]))
     || {P, _} <- Survivors],
    {SurvivorPeer, _} = hd(Survivors),
    ?assertMatch(#{node := NewOwner, handshakes := 1}, call(SurvivorPeer, ibkr_oauth, stats, [{global, Name}])),
    timer:sleep(1000),
    ?assertMatch(#{handshakes := 2, lst_requests := 2, ssodh_inits := 2, logouts := 0}, ?F:stats()),
    %% the dead node's session lived at most until the kill was asked for
    Survived = intervals(Survivors),
    ?assertEqual(1, length(Survived), Survived),
    [#{start := NewStart}] = Survived,
    ?assert(NewStart > KilledAt, {NewStart, KilledAt}),
    never_two([OwnerInterval#{stop := KilledAt} | Survived]).

%% Rolling deploy: the owner's supervisor stops the child. The session logs
%% out before it goes; only then another node starts its own.
owner_stopped_hands_over(Config) ->
    Peers = ?config(peers, Config),
    Name = ?config(name, Config),
    Claimants = start_claimants(Peers, Name, ?config(client, Config)),
    Owner = wait_one_owner(Peers, Name, 1),
    {OwnerPeer, _} = lists:keyfind(Owner, 2, Peers),
    {_, Claimant} = lists:keyfind(Owner, 1, Claimants),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual(ok, call(OwnerPeer, supervisor, terminate_child, [ibkr_oauth_sup, Claimant])),
    NewOwner = wait_one_owner(Peers, Name, 2),
    ct:log("handover: ~p -> ~p, a new authenticated session after ~b ms",
           [Owner, NewOwner, erlang:monotonic_time(millisecond) - T0]),
    ?assertNotEqual(Owner, NewOwner),
    %% every node, the old owner's too, reaches the new session
    [?assertMatch({ok, #{status := 200}}, call(P, ibkr_oauth, request, [{global, Name}, get, ?ORDERS]))
     || {P, _} <- Peers],
    timer:sleep(1000),
    #{log := Log} = Stats = ?F:stats(),
    ?assertMatch(#{handshakes := 2, ssodh_inits := 2, logouts := 1}, Stats),
    %% the old session's logout came between the two handshakes
    Chrono = lists:reverse(Log),
    [L1, L2] = [At || #{path := <<"/oauth/live_session_token">>, at := At} <- Chrono],
    [Out] = [At || #{path := <<"/logout">>, outcome := 200, at := At} <- Chrono],
    ?assert(L1 < Out andalso Out < L2, {L1, Out, L2}),
    Intervals = intervals(Peers),
    ?assertEqual(2, length(Intervals), Intervals),
    ?assertEqual([normal], [R || #{reason := R, node := N} <- Intervals, N =:= Owner]),
    never_two(Intervals).

%% The owner's node loses its connections to the others: during the split
%% each part runs its own session (logged); the others are connected again
%% first (the old owner alone against the rest), then all; each time global
%% finds the name twice, one session stays and the other stops cleanly
%% ({shutdown, name_conflict}, with a logout), the one that stayed
%% authenticates again, and every node reaches it.
split_and_heal(Config) ->
    Peers = ?config(peers, Config),
    Name = ?config(name, Config),
    _ = start_claimants(Peers, Name, ?config(client, Config)),
    Owner = wait_one_owner(Peers, Name, 1),
    {OwnerPeer, _} = lists:keyfind(Owner, 2, Peers),
    Nodes = [N || {_, N} <- Peers],
    ?assertEqual({ok, true}, call(OwnerPeer, application, get_env,
                                  [kernel, prevent_overlapping_partitions])),
    %% (global may already have cut the second one)
    [_ = call(OwnerPeer, erlang, disconnect_node, [N]) || N <- Nodes, N =/= Owner],
    %% every node reaches a session in its own part; global may have cut
    %% more connections than ours (prevent_overlapping_partitions), so
    %% there are two or three parts
    ok = ?L:wait_until(fun() -> lists:all(fun({P, N}) -> own_part_session(P, N, Name) end, Peers) end,
                       ?WAIT),
    Parts = lists:usort([lists:sort([N | call(P, erlang, nodes, [])]) || {P, N} <- Peers]),
    Split = [I || I = #{stop := alive} <- intervals(Peers)],
    ct:log("split into ~p; sessions on ~p", [Parts, [N || #{node := N} <- Split]]),
    ?assert(length(Parts) >= 2),
    ?assertEqual(length(Parts), length(Split)),
    %% the session on the node whose name sorts first will stay; a request
    %% in flight at a session that will stop (slowed by the server) gets an
    %% error when the split heals
    Stays = lists:min([N || #{node := N} <- Split]),
    {LoserPeer, _} = hd([PN || {P, _} = PN <- Peers,
                               node(call(P, global, whereis_name, [Name])) =/= Stays]),
    ok = ?F:set_fault({slow, 3000, 1}),
    [InFlight] = ?L:spawn_callers([fun() -> call(LoserPeer, ibkr_oauth, request,
                                                 [{global, Name}, get, ?ACCOUNTS]) end]),
    ok = ?L:wait_until(fun() -> #{requests := R} = ?F:stats(), R >= 1 + length(Split) * 2 end,
                       ?WAIT),
    %% heal in two steps: first the nodes other than the old owner (a
    %% majority part against the old owner alone, one session each), then
    %% every pair (until global keeps them connected)
    ok = ?L:wait_until(fun() -> full_mesh([PN || {_, N} = PN <- Peers, N =/= Owner]) end, ?WAIT),
    ok = ?L:wait_until(fun() -> length([I || I = #{stop := alive} <- intervals(Peers)]) =:= 2 end,
                       ?WAIT),
    TwoParts = lists:usort([lists:sort([N | call(P, erlang, nodes, [])]) || {P, N} <- Peers]),
    ct:log("partly healed: ~p", [TwoParts]),
    ?assertEqual([[Owner], lists:delete(Owner, lists:sort(Nodes))], lists:sort(fun(A, B) -> length(A) =< length(B) end, TwoParts)),
    ok = ?L:wait_until(fun() -> full_mesh(Peers) end, ?WAIT),
    ok = ?L:wait_until(fun() -> length([I || I = #{stop := alive} <- intervals(Peers)]) =:= 1 end,
                       ?WAIT),
    %% the session that stays authenticates again once the other stopped
    Keeper = wait_one_owner(Peers, Name, length(Split) + 1),
    ?assertEqual(Stays, Keeper),
    ?assertEqual([{error, port_down}], ?L:collect([InFlight], ?WAIT)),
    [?assertMatch({ok, #{status := 200}}, call(P, ibkr_oauth, request, [{global, Name}, get, ?ACCOUNTS]))
     || {P, _} <- Peers],
    Intervals = intervals(Peers),
    Stopped = [I || I = #{stop := S} <- Intervals, S =/= alive],
    ct:log("after the heal: ~p stays; stopped: ~p", [Keeper, Stopped]),
    ?assertEqual(length(Split) - 1, length(Stopped)),
    ?assertEqual([{shutdown, name_conflict}], lists:usort([R || #{reason := R} <- Stopped])),
    %% each stopped session sent its logout (the fake server keeps only the
    %% last two LSTs valid, like IBKR a new LST invalidates older ones: a
    %% third part's logout may be refused)
    #{log := Log} = ?F:stats(),
    ?assertEqual(length(Stopped), length([x || #{path := <<"/logout">>} <- Log])),
    [?assertMatch(#{node := Keeper}, call(P, ibkr_oauth, stats, [{global, Name}])) || {P, _} <- Peers].

%%% ------------------------------------------------------------- helpers

start_peers(Case, N) ->
    Args = ["-setcookie", "ibkr_oauth_cluster_suite",
            "-kernel", "dist_auto_connect", "once"],
    Peers = [begin
                 Node = list_to_atom(lists:flatten(io_lib:format("~s_~b_~s", [Case, I, os:getpid()]))),
                 {P, _} = ?L:start_peer(#{name => Node, args => Args}),
                 {P, peer:call(P, erlang, node, [])}
             end || I <- lists:seq(1, N)],
    ok = ?L:wait_until(fun() -> full_mesh(Peers) end, ?WAIT),
    [begin
         {ok, _} = peer:call(P, application, ensure_all_started, [ibkr_oauth]),
         ok = peer:call(P, global, sync, []),
         ok = peer:call(P, ?MODULE, observer_start, [])
     end || {P, _} <- Peers],
    Peers.

full_mesh(Peers) ->
    All = lists:sort([N || {_, N} <- Peers]),
    [_ = call(P, net_kernel, connect_node, [M]) || {P, N} <- Peers, M <- All, M =/= N],
    lists:all(fun({P, N}) -> lists:sort([N | call(P, erlang, nodes, [])]) =:= All end, Peers).

%% Every node starts its claimant at the same time. [{Node, ClaimantPid}]
start_claimants(Peers, Name, Client) ->
    Callers = ?L:spawn_callers([fun() -> {Node, call(P, ibkr_oauth, start_session, [{cluster, Name}, Client])} end
                                || {P, Node} <- Peers]),
    [{Node, C} || {Node, {ok, C}} <- ?L:collect(Callers, ?WAIT)].

%% Waits until the server saw SsodhInits brokerage-session opens and every
%% node resolves the name to the same live, authenticated session; returns
%% its node.
wait_one_owner(Peers, Name, SsodhInits) ->
    ok = ?L:wait_until(
           fun() ->
                   #{ssodh_inits := S} = ?F:stats(),
                   S >= SsodhInits andalso
                       case lists:usort([call(P, global, whereis_name, [Name]) || {P, _} <- Peers]) of
                           [Pid] when is_pid(Pid) ->
                               {P0, _} = hd(Peers),
                               case call(P0, ibkr_oauth, stats, [{global, Name}]) of
                                   #{authenticated := true, handshake_in_flight := false} -> true;
                                   _ -> false
                               end;
                           _ -> false
                       end
           end, ?WAIT),
    {P0, _} = hd(Peers),
    #{node := Node} = call(P0, ibkr_oauth, stats, [{global, Name}]),
    Node.

%% The node resolves the name to a session in its own part that is done
%% with its handshake (LST and brokerage session).
own_part_session(P, N, Name) ->
    case call(P, global, whereis_name, [Name]) of
        Pid when is_pid(Pid) ->
            lists:member(node(Pid), [N | call(P, erlang, nodes, [])]) andalso
                case call(P, ibkr_oauth, stats, [{global, Name}]) of
                    #{authenticated := true, handshake_in_flight := false} -> true;
                    _ -> false
                end;
        _ -> false
    end.

call(P, M, F, A) -> peer:call(P, M, F, A, ?WAIT).

intervals(Peers) ->
    lists:append([call(P, ?MODULE, observed, []) || {P, _} <- Peers]).

%% No two live intervals overlap (stop = alive counts as still running).
never_two(Intervals) ->
    Sorted = lists:sort([{S, stop_us(E)} || #{start := S, stop := E} <- Intervals]),
    lists:foldl(fun({S, E}, PrevEnd) ->
                        ?assert(S >= PrevEnd, {overlap, Sorted}),
                        E
                end, 0, Sorted),
    ok.

stop_us(alive) -> infinity_us();
stop_us(T) -> T.

infinity_us() -> 1 bsl 62.

%%% ------------------------------------------------- observer (on peers)

%% Registered as cluster_observer: the live intervals (OS time, us) of the
%% processes that registered a cluster session on this node.
observer_start() ->
    Self = self(),
    Pid = spawn(?MODULE, observer_init, [Self]),
    receive {Pid, ready} -> ok
    after 5000 -> error(observer_start)
    end.

observer_init(From) ->
    register(cluster_observer, self()),
    {module, _} = code:ensure_loaded(ibkr_oauth_cluster),
    1 = erlang:trace_pattern({ibkr_oauth_cluster, register_name, 2},
                             [{'_', [], [{return_trace}]}], [global]),
    _ = erlang:trace(all, true, [call, monotonic_timestamp]),
    _ = erlang:trace(self(), false, [call]),
    From ! {self(), ready},
    observer_loop(#{}).

observer_loop(Seen) ->
    receive
        {trace_ts, Pid, return_from, {ibkr_oauth_cluster, register_name, 2}, yes, Ts} ->
            %% the exit of this process, timestamped like its start
            Stop = try erlang:trace(Pid, true, [procs, monotonic_timestamp]) of
                       _ -> alive
                   catch
                       error:badarg -> os_us(Ts)   % already gone
                   end,
            observer_loop(Seen#{Pid => #{node => node(), start => os_us(Ts), stop => Stop,
                                         reason => undefined}});
        {trace_ts, Pid, exit, Reason, Ts} when is_map_key(Pid, Seen) ->
            observer_loop(Seen#{Pid := (maps:get(Pid, Seen))#{stop := os_us(Ts), reason := Reason}});
        {get, From, Ref} ->
            From ! {Ref, maps:values(Seen)},
            observer_loop(Seen);
        _ ->
            observer_loop(Seen)
    end.

observed() ->
    Ref = make_ref(),
    cluster_observer ! {get, self(), Ref},
    receive {Ref, L} -> L
    after 5000 -> error(observer_timeout)
    end.

%% A monotonic trace timestamp (ns) as OS time (us), comparable across the
%% nodes of this host.
os_us(Ts) ->
    (Ts + erlang:time_offset(nanosecond)) div 1000.
