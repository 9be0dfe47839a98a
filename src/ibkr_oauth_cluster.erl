%% @doc One IBKR session per credential across a cluster of connected
%% Erlang nodes, with failover: the claimant behind
%% `ibkr_oauth:child_spec({cluster, Name}, Config)'.
%%
%% Every node runs one claimant per `Name' (put the child spec in the
%% supervision tree of every node). A claimant tries to start the session
%% registered as `{global, Name}' (registration with `global', whose lock
%% makes exactly one start win in a connected cluster). The winner's
%% claimant owns the session (linked to it); the others monitor it and try
%% again when it goes down, after a short random delay, with a bounded
%% exponential backoff when starts keep failing (the decisions are in
%% {@link ibkr_oauth_claim}). A call to `{global, Name}' from any node
%% reaches the session.
%%
%% The LST never leaves the node: a new owner does its own handshake (with
%% `auto_authenticate => true' right after it took over, else on the first
%% request), so the key files must exist on every node. A claimant checks
%% at its start that they are there and readable, and refuses to start
%% otherwise (`{bad_config, Key, enoent | eacces | eisdir}').
%%
%% <h3>Stopping</h3>
%% When the claimant that owns the session is stopped (its supervisor
%% stops the child, e.g. in a rolling deploy), it first stops the session
%% normally (`POST /logout' when an LST is held, callers get `{error,
%% port_down}'); the name is free once the session process is gone, and
%% another node's claimant starts a new one. Stopping the session itself
%% (`ibkr_oauth:stop({global, Name})') is the same as a crash: another
%% session is started, maybe on another node.
%%
%% <h3>Net splits</h3>
%% While the cluster is split, each part that has no session starts its
%% own: for the duration of the split there is one session per part, all
%% with the same credentials (IBKR lets one of them hold the brokerage
%% session; `compete' on `ssodh/init' takes it from the other). When the
%% parts reconnect, `global' finds the name twice and calls
%% {@link resolve/3}: the session on the node whose name sorts first stays
%% ({@link ibkr_oauth_claim:keep/2}), the other is stopped with reason
%% `{shutdown, name_conflict}': it logs out, its waiting callers get
%% `{error, port_down}', later calls that still hold its pid
%% `{error, noproc}'. Its claimant then watches the session that stayed,
%% which then authenticates again (a new LST, and the brokerage session
%% opened again): the other part's handshakes and logout may have ended
%% what it held.
%% This relies on `global''s default `prevent_overlapping_partitions =
%% true' (OTP 25): after a partial loss of connections `global' disconnects
%% nodes until the parts are fully connected, so each part agrees on who
%% holds the name.
%%
%% This module is also the `{via, ibkr_oauth_cluster, Name}' registry the
%% session is started with: `global' registration with {@link resolve/3}
%% as the name-clash resolver.
-module(ibkr_oauth_cluster).
-behaviour(gen_server).

-include_lib("kernel/include/file.hrl").

-export([start_link/2]).
%% {via, ?MODULE, Name} registry
-export([register_name/2, unregister_name/1, whereis_name/1, send/2]).
-export([resolve/3]).
-export([init_it/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         code_change/3, format_status/1]).

%% The session's own bound for a stop (POST /logout, port close) is shorter.
-define(SESSION_STOP, 15000).
-define(META, #{domain => [ibkr_oauth], ibkr_oauth => cluster}).

-record(st, {
    name :: term(),
    config :: fun(() -> term()),                 % sealed: prints as #Fun<...>
    session :: pid() | undefined,
    role = waiting :: owner | watcher | waiting,
    mref :: reference() | undefined,
    since :: integer() | undefined,              % monotonic ms: owned/watched since
    timer :: reference() | undefined,
    claim :: ibkr_oauth_claim:claim()
}).
-type state() :: #st{}.

%%====================================================================
%% Start
%%====================================================================

%% @doc Starts the claimant for `Name' on this node, linked to the caller.
%% `Config' is a session config or one sealed with
%% `ibkr_oauth_config:seal/1'. The config is validated and the key files
%% checked first; then the first claim is made before this returns: on the
%% node that wins, a session that cannot start (e.g. a bad prime) makes this
%% return its `{error, Reason}' as `ibkr_oauth:start_link/1' would. The
%% caller is never killed by a failed start.
-spec start_link(term(), term()) -> {ok, pid()} | {error, term()}.
start_link(Name, Config) ->
    Sealed = case is_function(Config, 0) of
                 true -> Config;
                 false -> ibkr_oauth_config:seal(Config)
             end,
    case ibkr_oauth_config:validate(Sealed) of
        {ok, V} ->
            case check_key_files(V) of
                ok -> proc_lib:start_link(?MODULE, init_it, [self(), Name, Sealed]);
                {error, _} = E -> E
            end;
        {error, _} = E -> E
    end.

%% The port reads the key files, but only on the node that runs the
%% session: a node that may take over later checks now that it could.
-spec check_key_files(ibkr_oauth_config:validated()) -> ok | {error, term()}.
check_key_files(V) ->
    Bad = [{bad_config, K, Why}
           || K <- [encryption_key, signature_key],
              {file, Path} <- [maps:get(K, V)],
              Why <- [key_file_problem(Path)], Why =/= ok],
    case Bad of
        [] -> ok;
        [B | _] -> {error, B}
    end.

-spec key_file_problem(binary()) -> ok | atom().
key_file_problem(Path) ->
    case file:read_file_info(Path) of
        {ok, #file_info{type = regular, access = A}} when A =:= read; A =:= read_write -> ok;
        {ok, #file_info{type = regular}} -> eacces;
        {ok, #file_info{type = directory}} -> eisdir;
        {ok, _} -> file_error;
        {error, enoent} -> enoent;
        {error, eacces} -> eacces;
        {error, _} -> file_error
    end.

%% @private proc_lib entry point: the first claim, then the gen_server loop.
-spec init_it(pid(), term(), fun(() -> term())) -> no_return().
init_it(Parent, Name, Sealed) ->
    process_flag(trap_exit, true),
    St0 = #st{name = Name, config = Sealed, claim = ibkr_oauth_claim:new()},
    case start_session(Name, Sealed) of
        {ok, _} = R -> enter(Parent, act(R, St0));
        {error, {already_started, _}} = R -> enter(Parent, act(R, St0));
        {error, _} = E ->
            %% this node won but cannot run the session: same answer as a
            %% plain start, and the caller survives it
            unlink(Parent),
            proc_lib:init_ack(Parent, E),
            exit(normal)
    end.

-spec enter(pid(), state()) -> no_return().
enter(Parent, St) ->
    proc_lib:init_ack(Parent, {ok, self()}),
    gen_server:enter_loop(?MODULE, [], St).

%% @private Not used: started with proc_lib (see init_it/3).
-spec init(term()) -> {stop, not_supported}.
init(_) -> {stop, not_supported}.

%%====================================================================
%% Claim
%%====================================================================

-spec start_session(term(), fun(() -> term())) -> {ok, pid()} | {error, term()}.
start_session(Name, Sealed) ->
    try ibkr_oauth_session:start_link({via, ?MODULE, Name}, Sealed)
    catch
        %% not expected (start_link answers errors); never let it take the
        %% claimant down: try again later
        Class:_ -> {error, {claim_failed, Class}}
    end.

%% Carries out what ibkr_oauth_claim decides after a start.
-spec act({ok, pid()} | {error, term()}, state()) -> state().
act(Result, #st{claim = C0} = St) ->
    {Action, C} = ibkr_oauth_claim:next({started, Result}, C0, rand:uniform()),
    carry_out(Action, Result, St#st{claim = C}).

-spec carry_out(ibkr_oauth_claim:action(), term(), state()) -> state().
carry_out({own, Pid}, _Result, #st{name = Name} = St) ->
    logger:info("ibkr_oauth: this node runs the cluster session ~0p", [Name], ?META),
    St#st{session = Pid, role = owner, mref = undefined, since = now_ms()};
carry_out({watch, Pid}, _Result, St) ->
    MRef = erlang:monitor(process, Pid),
    St#st{session = Pid, role = watcher, mref = MRef, since = now_ms()};
carry_out({claim_after, Ms}, Result, #st{name = Name} = St) ->
    case Result of
        {error, {already_started, _}} -> ok;
        {error, Why} ->
            logger:warning("ibkr_oauth: cannot start the cluster session ~0p here (~0p); "
                           "next attempt in ~b ms",
                           [Name, ibkr_oauth_redact:scrub_reason(Why), Ms], ?META);
        _ -> ok
    end,
    Ref = erlang:start_timer(Ms, self(), claim),
    St#st{session = undefined, role = waiting, mref = undefined, since = undefined,
          timer = Ref}.

%% The session owned or watched went down.
-spec session_down(term(), state()) -> state().
session_down(Reason, #st{name = Name, since = Since, claim = C0, session = Pid} = St) ->
    Lived = max(0, now_ms() - Since),
    {Action, C} = ibkr_oauth_claim:next({down, Lived}, C0, rand:uniform()),
    logger:notice("ibkr_oauth: the cluster session ~0p on ~0p went down (~0p)",
                  [Name, node(Pid), short(Reason)], ?META),
    carry_out(Action, down, St#st{claim = C}).

-spec short(term()) -> term().
short(R) when is_atom(R) -> R;
short({shutdown, R}) when is_atom(R) -> {shutdown, R};
short(_) -> crashed.

%%====================================================================
%% gen_server
%%====================================================================

%% @private Not a session: calls go to `{global, Name}'.
-spec handle_call(term(), gen_server:from(), state()) -> {reply, {error, not_a_session}, state()}.
handle_call(_Request, _From, St) ->
    {reply, {error, not_a_session}, St}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast(_Msg, St) ->
    {noreply, St}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()}.
handle_info({timeout, Ref, claim}, #st{timer = Ref, name = Name, config = Sealed} = St) ->
    {noreply, act(start_session(Name, Sealed), St#st{timer = undefined})};
handle_info({'DOWN', MRef, process, _, Reason}, #st{mref = MRef} = St) ->
    {noreply, session_down(Reason, St)};
handle_info({'EXIT', Pid, Reason}, #st{session = Pid, role = owner} = St) ->
    {noreply, session_down(Reason, St)};
handle_info({'EXIT', _Pid, _Reason}, St) ->
    %% an old session's link (the parent's exit is handled by gen_server)
    {noreply, St};
handle_info(_Msg, St) ->
    {noreply, St}.

%% @private The owner stops its session first: it logs out, and the name is
%% free for another node once it is gone.
-spec terminate(term(), state()) -> ok.
terminate(_Reason, #st{role = owner, session = Pid, name = Name}) when is_pid(Pid) ->
    logger:info("ibkr_oauth: handing over the cluster session ~0p", [Name], ?META),
    _ = (catch gen_server:stop(Pid, normal, ?SESSION_STOP)),
    ok;
terminate(_Reason, _St) ->
    ok.

%% @private
-spec code_change(term(), state(), term()) -> {ok, state()}.
code_change(_Old, St, _Extra) -> {ok, St}.

%% @private The config stays sealed in reports and `sys:get_status/1'.
-spec format_status(Status) -> Status
      when Status :: #{state => term(), message => term(), reason => term(),
                       log => [sys:system_event()]}.
format_status(#{state := #st{} = St} = Status) ->
    Status#{state := St#st{config = fun sealed/0}};
format_status(Status) ->
    Status.

-spec sealed() -> sealed.
sealed() -> sealed.

%%====================================================================
%% {via, ibkr_oauth_cluster, Name}: global, with our clash resolver
%%====================================================================

%% @doc `global:register_name/3' with {@link resolve/3}.
-spec register_name(term(), pid()) -> yes | no.
register_name(Name, Pid) ->
    global:register_name(Name, Pid, fun ?MODULE:resolve/3).

%% @doc `global:unregister_name/1'.
-spec unregister_name(term()) -> _.
unregister_name(Name) ->
    global:unregister_name(Name).

%% @doc `global:whereis_name/1'.
-spec whereis_name(term()) -> pid() | undefined.
whereis_name(Name) ->
    global:whereis_name(Name).

%% @doc `global:send/2'.
-spec send(term(), term()) -> pid().
send(Name, Msg) ->
    global:send(Name, Msg).

%% @doc Called by `global' (in its own process, on one node) when the name
%% is found registered twice as a net split heals: keeps
%% {@link ibkr_oauth_claim:keep/2}'s choice and, from a separate process so
%% that `global' is not held up, stops the other session cleanly (logout,
%% callers answered), then authenticates the one kept again.
-spec resolve(term(), pid(), pid()) -> pid().
resolve(Name, Pid1, Pid2) ->
    Keep = ibkr_oauth_claim:keep(Pid1, Pid2),
    Loser = case Keep of
                Pid1 -> Pid2;
                Pid2 -> Pid1
            end,
    _ = spawn(fun() -> stop_loser(Name, Loser, Keep) end),
    Keep.

-spec stop_loser(term(), pid(), pid()) -> ok.
stop_loser(Name, Loser, Keep) ->
    logger:notice("ibkr_oauth: the cluster session ~0p ran twice after a net split: "
                  "the one on ~0p stays, the one on ~0p stops",
                  [Name, node(Keep), node(Loser)], ?META),
    try gen_server:stop(Loser, {shutdown, name_conflict}, ?SESSION_STOP)
    catch
        exit:timeout ->
            %% its stop is bounded; never leave a second session running
            exit(Loser, kill);
        exit:_ -> ok                             % already gone
    end,
    %% During the split the other session's handshakes may have invalidated
    %% this one's LST and taken the brokerage session, and its logout has
    %% just ended that: start afresh (new LST, brokerage session opened
    %% again when configured).
    case ibkr_oauth:authenticate(Keep) of
        {ok, _} -> ok;
        {error, Why} ->
            logger:warning("ibkr_oauth: the cluster session ~0p could not authenticate again "
                           "after the split: ~0p",
                           [Name, ibkr_oauth_redact:scrub_reason(Why)], ?META)
    end.

-spec now_ms() -> integer().
now_ms() -> erlang:monotonic_time(millisecond).
