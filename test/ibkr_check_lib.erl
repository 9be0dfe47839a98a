%% Helpers shared by faults_SUITE, bad_input_SUITE and secrets_SUITE: OS
%% process checks, polling, concurrent callers, a logger handler that keeps
%% every event, a peer node with the application's code, and commands to a
%% raw port.
-module(ibkr_check_lib).
-export([os_alive/1, wait_until/2, spawn_callers/1, collect/2,
         capture_logs/0, captured/1, stop_capture/1, log/2,
         start_peer/0, start_peer/1, kill_os/1, port_config/1, port_call/3]).

%% Alive and not a zombie.
-spec os_alive(non_neg_integer()) -> boolean().
os_alive(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, Rest] = binary:split(Stat, <<") ">>),
            not lists:member(binary:first(Rest), [$Z, $X]);
        {error, _} -> false
    end.

-spec kill_os(non_neg_integer()) -> ok.
kill_os(OsPid) ->
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    ok.

%% Polls Pred every 20 ms; fails the test case after TimeoutMs.
-spec wait_until(fun(() -> boolean()), non_neg_integer()) -> ok.
wait_until(Pred, TimeoutMs) ->
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    wait_loop(Pred, Deadline).

wait_loop(Pred, Deadline) ->
    case Pred() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> error(wait_until_timeout);
                false -> receive after 20 -> wait_loop(Pred, Deadline) end
            end
    end.

%% Each fun runs in its own (unlinked) process; collect/2 gets the results.
-spec spawn_callers([fun(() -> term())]) -> [pid()].
spawn_callers(Funs) ->
    Parent = self(),
    [spawn(fun() -> Parent ! {self(), F()} end) || F <- Funs].

%% The results of spawn_callers/1, in order; every one must come within
%% TimeoutMs (a generous liveness bound, not a performance threshold).
-spec collect([pid()], non_neg_integer()) -> [term()].
collect(Pids, TimeoutMs) ->
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    [receive {P, R} -> R
     after max(0, Deadline - erlang:monotonic_time(millisecond)) ->
             error({no_answer, P, process_info(P, current_stacktrace)})
     end || P <- Pids].

%%% ------------------------------------------------------ log capture

%% A logger handler that keeps every event (all levels, every domain,
%% including SASL/proc_lib crash reports) formatted as text, in an ETS table.
-spec capture_logs() -> {atom(), ets:tid(), logger:level()}.
capture_logs() ->
    Id = list_to_atom("ibkr_capture_" ++ integer_to_list(erlang:unique_integer([positive]))),
    Tab = ets:new(ibkr_capture, [public, duplicate_bag]),
    #{level := OldLevel} = logger:get_primary_config(),
    ok = logger:set_primary_config(level, all),
    ok = logger:add_handler(Id, ?MODULE, #{level => all, config => #{tab => Tab}}),
    {Id, Tab, OldLevel}.

%% Everything captured so far, one binary (events separated by newlines).
-spec captured({atom(), ets:tid(), logger:level()}) -> binary().
captured({_, Tab, _}) ->
    iolist_to_binary([[T, $\n] || {_, T} <- lists:sort(ets:tab2list(Tab))]).

-spec stop_capture({atom(), ets:tid(), logger:level()}) -> ok.
stop_capture({Id, Tab, OldLevel}) ->
    _ = logger:remove_handler(Id),
    ok = logger:set_primary_config(level, OldLevel),
    ets:delete(Tab),
    ok.

%% logger handler callback.
-spec log(logger:log_event(), map()) -> ok.
log(#{level := Level, msg := Msg, meta := Meta}, #{config := #{tab := Tab}}) ->
    Text = case Msg of
               {report, R} ->
                   case Meta of
                       #{report_cb := Cb} when is_function(Cb, 1) ->
                           {F, A} = Cb(R),
                           io_lib:format(F, A);
                       #{report_cb := Cb} when is_function(Cb, 2) ->
                           Cb(R, #{depth => unlimited, chars_limit => unlimited,
                                   single_line => false});
                       _ -> io_lib:format("~p", [R])
                   end;
               {string, Str} -> Str;
               {Fmt, Args} -> io_lib:format(Fmt, Args)
           end,
    Line = unicode:characters_to_binary(
             io_lib:format("~p ~ts ~p", [Level, Text, maps:without([gl, time], Meta)])),
    true = ets:insert(Tab, {erlang:unique_integer([monotonic]), Line}),
    ok.

%%% ---------------------------------------------------------------- peers

%% A peer node (no distribution: controlled over its stdio) with this
%% node's code path and IBKR_OAUTH_PORT.
-spec start_peer() -> {pid(), string()}.
start_peer() ->
    start_peer(#{}).

%% start_peer/0 with more peer:start/1 options (e.g. `name', to make it a
%% distributed node; its `args' come after the code path).
-spec start_peer(map()) -> {pid(), string()}.
start_peer(Opts) ->
    Root = code:root_dir(),
    Paths = [D || D <- code:get_path(), D =/= ".", not lists:prefix(Root, D)],
    Env = case os:getenv("IBKR_OAUTH_PORT") of
              false -> [];
              V -> [{"IBKR_OAUTH_PORT", V}]
          end,
    Args = lists:append([["-pa", D] || D <- Paths]) ++ maps:get(args, Opts, []),
    Peer = case peer:start(Opts#{connection => standard_io, args => Args, env => Env}) of
               {ok, P} -> P;
               {ok, P, _Node} -> P
           end,
    {Peer, peer:call(Peer, os, getpid, [])}.

%%% ------------------------------------------------------ raw port

%% The port's init config for the public vectors, with Extra config keys.
-spec port_config(map()) -> map().
port_config(Extra) ->
    {ok, V} = ibkr_oauth_config:validate(ibkr_test_lib:vector_config(public, Extra)),
    ibkr_oauth_config:to_port(V).

%% One command to a port from ibkr_oauth_port:open/0 and its answer (log
%% events skipped).
-spec port_call(port(), pos_integer(), term()) -> term().
port_call(P, Id, Cmd) ->
    ok = ibkr_oauth_port:send(P, Id, Cmd),
    port_reply(P, Id).

port_reply(P, Id) ->
    receive
        {P, {data, Bin}} ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, Id, Reply} -> Reply;
                {ok, 0, {log, _, _}} -> port_reply(P, Id);
                Other -> error({unexpected_frame, Other})
            end
    after 30000 -> error({no_reply, Id})
    end.
