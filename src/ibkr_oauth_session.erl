%% @doc One IBKR OAuth session: a `gen_server' that owns one
%% `ibkr_oauth_port' process. Use it through {@link ibkr_oauth}.
%%
%% <h3>Port traffic</h3>
%% Every command goes out as `{Id, Command}' with a fresh integer id; the
%% caller is parked in `pending' (`Id => What') and answered with
%% `gen_server:reply/2' when `{Id, Reply}' comes back, in whatever order. The
%% server never waits for the port inside a callback (only `init' and
%% `terminate' wait, each with a bound). Replies for ids no longer pending
%% (cancelled, timed out) are dropped.
%%
%% <h3>Authentication state machine</h3>
%% `auth' is `none' (no LST) or `{lst, ExpiresAt, ObtainedAt, Source}';
%% `handshake' is `undefined' or `{Phase, Id | queued, Origin}' with `Phase' `lst'
%% (the port's `authenticate' command is running) or `ssodh' (the brokerage
%% session is being opened after a new LST). While a handshake is in flight
%% (single flight), every `request/4' and `authenticate/1' waits for it;
%% when it ends they are all released (sent, or failed with the handshake's
%% error; a step the port leaves unanswered 2 s past its own timeout, e.g. a
%% stopped port, ends as `{error, timeout}'). Each new LST bumps `epoch'; a
%% request remembers the epoch it was signed with, so a `401' for the current
%% epoch starts one handshake while a `401' for an older epoch is just
%% retried.
%%
%% An LST is usable while `now + margin < expires_at', with `margin' the
%% configured `refresh_margin' capped at half the token's lifetime (so a
%% short-lived token cannot cause a handshake per request). After a handshake
%% done by the port, a timer renews the LST at `expires_at - margin' (failed
%% renewals retry with backoff 1 s, 2 s, 4 s ... 60 s; meanwhile requests,
%% including those that waited for the failed renewal, still use the current
%% LST until it expires). An LST handed in with `lst_complete'
%% (bring-your-own-HTTP) is used by `request/4' but never
%% renewed in the background: that session's owner does its own HTTP. In the
%% same spirit `POST /tickle' and the `POST /logout' on stop are only sent by
%% a session that has done HTTP itself (a port handshake or a `request/4').
%%
%% <h3>Rate limiting</h3>
%% Every HTTP request the session makes (`request/4', handshakes, the
%% brokerage-session call, tickles, logout) passes through
%% {@link ibkr_oauth_ratelimit}: it goes out when the global and endpoint
%% limits have room, else it waits in `rl_queue' (never dropped; a request
%% keeps its own deadline there, and is answered `{error, rate_limited}' as
%% soon as the least wait for its keys reaches that deadline). The session's
%% own jobs go first. The queue is walked in order and a job whose keys
%% have room may pass one that waits for another endpoint; once the global
%% key is full nobody passes.
%% A timer fires when the first slot frees up, and every answer from the
%% port triggers a walk too. Each request's answer carries `queued_ms', the
%% time it spent in that queue.
%%
%% <h3>Logging</h3>
%% Events carry the metadata `domain => [ibkr_oauth]'. Each finished
%% request is logged at `debug' (answered) or `info' (an error, in `error'
%% with binaries replaced by their size) with `event => request', `method',
%% `path' (without the query), `status' (`undefined' for an error),
%% `duration_us', `attempt' and `queued_ms'. Warnings: `event => retry'
%% (a 401 and its new LST, a 429, a transport error), `handshake_failed',
%% `port_exit'; `info': `handshake' (a new LST). Never logged: headers,
%% bodies, the query, tokens, keys.
%%
%% <h3>Port crashes</h3>
%% When the port exits, every pending, queued and waiting caller gets
%% `{error, port_down}' at once, a new port is opened and initialised with
%% the same config (asynchronously; the session is then unauthenticated). More
%% than 5 port exits within 30 s stop the session with
%% `{shutdown, port_restart_limit}'.
%%
%% <h3>Secrets</h3>
%% The LST, the DH exponent and the decrypted secret live in the C process.
%% The config (needed to re-initialise a new port) is held inside a closure,
%% which prints as `#Fun<...>', and `format_status/1' scrubs every binary out
%% of crash reports and `sys:get_status/1'.
-module(ibkr_oauth_session).
-behaviour(gen_server).

-export([start_link/1, start_link/2]).

-include_lib("kernel/include/logger.hrl").
-export([init_it/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         code_change/3, format_status/1]).

-export_type([name/0]).

-type name() :: {local, atom()} | {global, term()} | {via, module(), term()}.
-type id() :: ibkr_oauth_port:id().
-type from() :: gen_server:from().
-type origin() :: demand | renew.
-type pending() :: {call, from()}
                 | {lst_complete, from()}
                 | {req, reference()}
                 | handshake | ssodh | tickle | reinit.
%% What waits in the rate-limit queue.
-type job() :: {req, reference()} | handshake | ssodh | tickle.

-record(req, {
    from :: from(),
    method :: atom(),
    url :: binary(),
    path = <<>> :: binary(),                   % relative, without the query
    headers :: [{binary(), binary()}],
    body :: binary(),
    port_opts = #{} :: map(),                  % more http command fields: json, decode
    deadline = infinity :: integer() | infinity,   % monotonic ms
    timer :: reference() | undefined,          % the deadline timer
    %% queued: behind a handshake; rl_queued: waiting for the rate limiter
    where = none :: none | queued | rl_queued | {port, id()} | {retry, reference()},
    started = 0 :: integer(),                  % monotonic us
    attempt = 0 :: non_neg_integer(),          % times sent to the port
    queued_us = 0 :: non_neg_integer(),        % total wait for the rate limiter
    rl_since = 0 :: integer(),                 % monotonic us, when rl_queued
    throttled = false :: boolean(),            % counted in rate_limited
    websocket = false :: boolean(),            % a /tickle for websocket_info
    epoch = 0 :: non_neg_integer(),
    retried_401 = false :: boolean(),
    retried_transport = false :: boolean(),
    retried_429 = false :: boolean()
}).

-record(st, {
    port :: port() | undefined,
    os_pid :: non_neg_integer() | undefined,
    secrets :: fun(() -> map()),                % the port's init map
    base_url :: binary(),
    request_timeout :: pos_integer() | infinity,
    brokerage_session :: boolean(),
    tickle_interval :: pos_integer() | infinity,
    refresh_margin :: non_neg_integer(),        % ms
    next_id = 1 :: pos_integer(),
    pending = #{} :: #{id() => pending()},
    reqs = #{} :: #{reference() => #req{}},
    queue = [] :: [reference()],                % newest first
    auth = none :: none | {lst, integer(), integer(), port | user},
    epoch = 0 :: non_neg_integer(),
    %% queued: waiting for the rate limiter
    handshake :: undefined | {lst | ssodh, id() | queued, origin()},
    auth_waiters = [] :: [from()],
    hs_epoch = 0 :: non_neg_integer(),          % epoch when the handshake started
    renew_timer :: reference() | undefined,
    backoff = 0 :: non_neg_integer(),
    tickle_timer :: reference() | undefined,
    tickle = #{} :: map(),
    limiter :: ibkr_oauth_ratelimit:limiter(),
    rl_queue = queue:new() :: queue:queue(job()),
    rl_timer :: reference() | undefined,
    draining = false :: boolean(),
    slots = #{} :: #{id() => ibkr_oauth_ratelimit:token()},  % taken by in-flight HTTP
    %% The session does its own HTTP (a port handshake or request/4 was
    %% used): only then does it tickle and log out by itself.
    managed = false :: boolean(),
    port_exits = [] :: [integer()],
    %% sign frames not yet written, newest first: see queue_frame/3
    outbox = [] :: [{id(), binary()}],
    outbox_bytes = 0 :: non_neg_integer(),
    counters = #{requests => 0, handshakes => 0, errors => 0,
                 port_restarts => 0, rate_limited => 0} :: #{atom() => non_neg_integer()}
}).
-type state() :: #st{}.

-define(INIT_TIMEOUT, 20000).   % generous: valgrind runs the port too
-define(START_TIMEOUT, 30000).
-define(LOGOUT_TIMEOUT, 2000).
-define(MAX_ID, 16#FFFFFFFFFFFFFFFF).
-define(BATCH_MAX, 1048576).    % bytes of sign frames per batch frame
-define(PORT_MAX_TIMEOUT, 16#7FFFFFFF).   % ms, the largest the port accepts
-define(WATCHDOG_MARGIN, 2000).   % ms past a handshake step's own timeout
-define(RESTART_WINDOW, 30000).
-define(RESTART_MAX, 5).
-define(BACKOFF_MAX, 60000).
-define(META, #{domain => [ibkr_oauth], ibkr_oauth => session}).
-define(LST_PATH, <<"/oauth/live_session_token">>).
-define(SSODH_PATH, <<"/iserver/auth/ssodh/init">>).
%% A websocket session cookie older than this is refreshed by a /tickle.
-define(WS_FRESH_MS, 60000).

%%====================================================================
%% Start
%%====================================================================

%% @doc Starts an unnamed session. See {@link ibkr_oauth:start_link/1}.
-spec start_link(term()) -> {ok, pid()} | {error, term()}.
start_link(Config) -> start_link(undefined, Config).

%% @doc Starts a session, registered as `Name' unless `Name' is `undefined'.
%% The config is validated in the caller first; then the new process opens
%% the port and sends `init'. Errors come back as `{error, Reason}' (e.g.
%% `{bad_config, Field, Why}') and the failed process exits `normal' after
%% unlinking, so a caller that does not trap exits survives and a caller
%% that does gets no `EXIT' message.
-spec start_link(name() | undefined, term()) -> {ok, pid()} | {error, term()}.
start_link(Name, Config) ->
    case check_name(Name) of
        ok ->
            case ibkr_oauth_config:validate(Config) of
                {ok, V} -> proc_lib:start_link(?MODULE, init_it, [self(), Name, V],
                                               ?START_TIMEOUT);
                {error, _} = E -> E
            end;
        error -> {error, {badarg, name}}
    end.

-spec check_name(term()) -> ok | error.
check_name(undefined) -> ok;
check_name({local, N}) when is_atom(N) -> ok;
check_name({global, _}) -> ok;
check_name({via, M, _}) when is_atom(M) -> ok;
check_name(_) -> error.

%% @private proc_lib entry point.
-spec init_it(pid(), name() | undefined, ibkr_oauth_config:validated()) -> no_return().
init_it(Parent, Name, V) ->
    case register_name(Name) of
        ok ->
            process_flag(trap_exit, true),
            case init_session(V) of
                {ok, St} ->
                    proc_lib:init_ack(Parent, {ok, self()}),
                    case Name of
                        undefined -> gen_server:enter_loop(?MODULE, [], St);
                        _ -> gen_server:enter_loop(?MODULE, [], St, Name)
                    end;
                {error, _} = E ->
                    unregister_name(Name),
                    fail_start(Parent, E)
            end;
        {error, _} = E ->
            fail_start(Parent, E)
    end.

-spec fail_start(pid(), {error, term()}) -> no_return().
fail_start(Parent, Error) ->
    unlink(Parent),
    proc_lib:init_ack(Parent, Error),
    exit(normal).

-spec register_name(name() | undefined) -> ok | {error, term()}.
register_name(undefined) -> ok;
register_name({local, N}) ->
    try register(N, self()) of
        true -> ok
    catch
        error:badarg -> {error, {already_started, whereis(N)}}
    end;
register_name({global, N}) ->
    case global:register_name(N, self()) of
        yes -> ok;
        no -> {error, {already_started, global:whereis_name(N)}}
    end;
register_name({via, M, N}) ->
    try M:register_name(N, self()) of
        yes -> ok;
        _ -> {error, {already_started, M:whereis_name(N)}}
    catch
        _:_ -> {error, {badarg, name}}
    end.

-spec unregister_name(name() | undefined) -> ok.
unregister_name(undefined) -> ok;
unregister_name({local, N}) -> _ = (catch unregister(N)), ok;
unregister_name({global, N}) -> _ = global:unregister_name(N), ok;
unregister_name({via, M, N}) -> _ = (catch M:unregister_name(N)), ok.

-spec init_session(ibkr_oauth_config:validated()) -> {ok, state()} | {error, term()}.
init_session(V) ->
    PortCfg = ibkr_oauth_config:to_port(V),
    case ibkr_oauth_port:open() of
        {ok, Port, OsPid} ->
            case sync_init(Port, PortCfg) of
                ok ->
                    St0 = #st{port = Port,
                              os_pid = OsPid,
                              secrets = fun() -> PortCfg end,
                              base_url = maps:get(base_url, V),
                              request_timeout = maps:get(request_timeout, V),
                              brokerage_session = maps:get(brokerage_session, V),
                              tickle_interval = maps:get(tickle_interval, V),
                              refresh_margin = 1000 * maps:get(refresh_margin, V),
                              limiter = ibkr_oauth_ratelimit:new(maps:get(rate_limit, V)),
                              next_id = 2},
                    St1 = arm_tickle(St0),
                    case maps:get(auto_authenticate, V) of
                        true -> {ok, start_handshake(renew, St1)};
                        false -> {ok, St1}
                    end;
                {error, _} = E ->
                    ibkr_oauth_port:close(Port),
                    flush_port(Port),
                    E
            end;
        {error, _} = E -> E
    end.

%% init with a bounded wait; log events are forwarded meanwhile.
-spec sync_init(port(), map()) -> ok | {error, term()}.
sync_init(Port, PortCfg) ->
    case ibkr_oauth_port:send(Port, 1, {init, PortCfg}) of
        ok ->
            Deadline = now_ms() + ?INIT_TIMEOUT,
            await_init(Port, Deadline);
        {error, _} = E -> E
    end.

-spec await_init(port(), integer()) -> ok | {error, term()}.
await_init(Port, Deadline) ->
    receive
        {Port, {data, Bin}} ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, 1, ok} -> ok;
                {ok, 1, {error, {bad_config, F, W}}} -> {error, {bad_config, F, W}};
                {ok, 1, {error, Reason}} -> {error, {port_init, Reason}};
                {ok, 1, _} -> {error, {port_init, bad_reply}};
                {ok, 0, Event} -> _ = port_event(Event), await_init(Port, Deadline);
                _ -> await_init(Port, Deadline)
            end;
        {Port, {exit_status, S}} -> {error, {port_exit, S}};
        {'EXIT', Port, _} -> {error, port_down}
    after max(0, Deadline - now_ms()) ->
        {error, timeout}
    end.

-spec flush_port(port()) -> ok.
flush_port(Port) ->
    receive
        {Port, _} -> flush_port(Port);
        {'EXIT', Port, _} -> flush_port(Port)
    after 0 -> ok
    end.

%%====================================================================
%% gen_server callbacks
%%====================================================================

%% @private Not used: the process starts through init_it/3 and
%% gen_server:enter_loop/3,4 so that start errors can be delivered cleanly.
-spec init(term()) -> {stop, not_supported}.
init(_) -> {stop, not_supported}.

%% @private
-spec handle_call(term(), from(), state()) ->
    {noreply, state()} | {reply, term(), state()}.
handle_call({request, Method, PathQuery, Headers, Body, Timeout}, From, St) ->
    handle_call({request, Method, PathQuery, Headers, Body, Timeout, #{}}, From, St);
handle_call({request, Method, PathQuery, Headers, Body, Timeout, PortOpts}, From, St) ->
    {Ref, St1} = new_req(#req{from = From, method = Method, url = PathQuery,
                              headers = Headers, body = Body, port_opts = PortOpts},
                         Timeout, St),
    {noreply, dispatch(Ref, St1)};
handle_call(websocket_info, From, St) ->
    case websocket_session(St) of
        {ok, Session} ->
            {reply, {ok, websocket_info(Session, St)}, St};
        stale ->
            %% POST /tickle like request/4 would (handshake, retries, rate
            %% limit); finish/3 turns its answer into the reply.
            {Ref, St1} = new_req(#req{from = From, method = post, url = <<"/tickle">>,
                                      headers = [], body = <<>>, websocket = true},
                                 default, St),
            {noreply, dispatch(Ref, St1)}
    end;
handle_call(authenticate, From, #st{auth_waiters = W} = St) ->
    {noreply, start_handshake(demand, St#st{auth_waiters = [From | W]})};
handle_call({lst_complete, Answer}, From, St) ->
    {noreply, port_call({lst_complete, Answer}, {lst_complete, From}, From, St)};
handle_call({port, Cmd}, From, St) ->
    case pass_through(Cmd) of
        true ->
            case signs_with_expired_lst(Cmd, St) of
                true -> {reply, {error, lst_expired}, bump(errors, St)};
                false -> {noreply, port_call(Cmd, {call, From}, From, St)}
            end;
        false -> {reply, {error, {badarg, command}}, St}
    end;
handle_call(stats, _From, St) ->
    {reply, stats(St), St};
handle_call(os_pid, _From, St) ->
    {reply, St#st.os_pid, St};
handle_call(_Other, _From, St) ->
    {reply, {error, unknown_call}, St}.

%% @private
-spec handle_cast(term(), state()) -> {noreply, state()}.
handle_cast(_Msg, St) -> {noreply, St}.

%% @private
-spec handle_info(term(), state()) -> {noreply, state()} | {stop, term(), state()}.
handle_info({Port, {data, Bin}}, #st{port = Port} = St) ->
    case ibkr_oauth_port:decode(Bin) of
        {ok, 0, Event} ->
            _ = port_event(Event),
            {noreply, St};
        {ok, Id, Reply} ->
            port_reply(Id, Reply, St);
        {error, Why} ->
            %% The bytes may hold anything (even a token): never log them.
            logger:error("ibkr_oauth: undecodable frame from the port (~p, ~b bytes)",
                         [Why, byte_size(Bin)], ?META),
            {noreply, St}
    end;
handle_info(flush_outbox, St) ->
    {noreply, flush_outbox(St)};
handle_info({Port, {exit_status, S}}, #st{port = Port} = St) ->
    port_exited({exit_status, S}, St);
handle_info({'EXIT', Port, Reason}, #st{port = Port} = St) ->
    port_exited({'EXIT', Reason}, St);
handle_info({deadline, Ref}, St) ->
    {noreply, deadline(Ref, St)};
handle_info({retry, Ref}, #st{reqs = Reqs} = St) ->
    case Reqs of
        #{Ref := #req{where = {retry, _}} = R} ->
            {noreply, dispatch(Ref, St#st{reqs = Reqs#{Ref := R#req{where = none}}})};
        _ -> {noreply, St}
    end;
handle_info(renew, #st{handshake = undefined} = St) ->
    {noreply, start_handshake(renew, St#st{renew_timer = undefined})};
handle_info(renew, St) ->
    {noreply, St#st{renew_timer = undefined}};
handle_info(tickle, St) ->
    {noreply, tickle(arm_tickle(St#st{tickle_timer = undefined}))};
handle_info(rl_tick, St) ->
    {noreply, drain(St#st{rl_timer = undefined})};
handle_info({hs_watchdog, Id}, #st{handshake = {_, Id, _}, pending = P} = St) ->
    %% The port did not answer within its own timeout (it is stuck, e.g.
    %% stopped): end the handshake as timed out rather than let authenticate/1
    %% and every request wait behind it. Its late answer is dropped.
    ibkr_oauth_port:cancel(St#st.port, Id),
    case maps:take(Id, P) of
        {What, P1} -> handle_reply(What, {error, timeout}, St#st{pending = P1});
        error -> {noreply, St}
    end;
handle_info({hs_watchdog, _}, St) ->
    {noreply, St};                                % that handshake step ended
handle_info({Port, _}, St) when is_port(Port) ->
    {noreply, St};                                % an old port's leftovers
handle_info({'EXIT', _, _}, St) ->
    {noreply, St};                                % an old port, or a stray link
handle_info(Msg, St) ->
    logger:debug("ibkr_oauth: unexpected message ~p", [scrub(Msg)], ?META),
    {noreply, St}.

%% @private On stop: every waiting caller gets `{error, port_down}', then, if
%% an LST is held, `POST /logout' with a short bounded wait, then the port
%% is closed (the C program exits on EOF).
-spec terminate(term(), state()) -> ok.
terminate(Reason, St0) ->
    Logout = has_live_lst(St0) andalso St0#st.managed andalso not port_reason(Reason),
    St = fail_all(port_down, St0),
    case St#st.port of
        undefined -> ok;
        Port ->
            case Logout of
                true -> logout(St);
                false -> ok
            end,
            ibkr_oauth_port:close(Port),
            flush_port(Port)
    end,
    %% Calls still queued may carry an LST (sign/4's `lst'), and a crash
    %% report lists the mailbox: empty it.
    drain_mailbox().

-spec drain_mailbox() -> ok.
drain_mailbox() ->
    receive _ -> drain_mailbox()
    after 0 -> ok
    end.

-spec port_reason(term()) -> boolean().
port_reason({shutdown, port_restart_limit}) -> true;
port_reason({shutdown, {port_open, _}}) -> true;
port_reason(_) -> false.

%% @private
-spec code_change(term(), state(), term()) -> {ok, state()}.
code_change(_Old, St, _Extra) -> {ok, St}.

%% @private Redacts sys:get_status/1 and crash reports: the state becomes a
%% summary without secrets; binaries in the message, the reason and the log
%% are replaced by their size.
-spec format_status(Status) -> Status
      when Status :: #{state => term(), message => term(), reason => term(),
                       log => [sys:system_event()]}.
format_status(Status) ->
    maps:map(fun(state, #st{} = S) -> summary(S);
                (state, S) -> scrub(S);
                (message, M) -> scrub(M);
                (reason, R) -> scrub(R);
                (log, L) -> [scrub(E) || E <- L];
                (_, X) -> scrub(X)
             end, Status).

%%====================================================================
%% Port calls and replies
%%====================================================================

%% Commands a caller may send as they are (init, http, authenticate and
%% cancel are the session's own business).
-spec pass_through(term()) -> boolean().
pass_through({sign, _, _, _}) -> true;
pass_through({lst_request, _}) -> true;
pass_through(live_session_token) -> true;
pass_through({echo, _}) -> true;
pass_through(stats) -> true;
pass_through(_) -> false.

%% The port signs with whatever LST it holds and does not look at its
%% expiry; an expired one would only earn a 401 later, so say it now. (An
%% LST given in the options is the caller's business.)
-spec signs_with_expired_lst(term(), state()) -> boolean().
signs_with_expired_lst({sign, _, _, Opts}, #st{auth = {lst, E, _, _}}) when is_map(Opts) ->
    not is_map_key(lst, Opts) andalso erlang:system_time(millisecond) >= E;
signs_with_expired_lst(_, _) -> false.

%% A pass-through command: the caller is answered when the port replies.
-spec port_call(term(), pending(), from(), state()) -> state().
port_call({sign, _, _, _} = Cmd, What, From, St) ->
    {Id, St1} = next_id(St),
    case ibkr_oauth_port:encode(Id, Cmd) of
        {ok, Bin} -> queue_frame(Id, Bin, St1#st{pending = (St1#st.pending)#{Id => What}});
        {error, _} = E -> gen_server:reply(From, E), bump(errors, St1)
    end;
port_call(Cmd, What, From, St) ->
    {Id, St1} = next_id(St),
    case ibkr_oauth_port:send(St1#st.port, Id, Cmd) of
        ok -> St1#st{pending = (St1#st.pending)#{Id => What}};
        {error, _} = E -> gen_server:reply(From, E), bump(errors, St1)
    end.

%% Signing is the hot path: one write(2) per call would cap it at the pipe's
%% round-trip rate. A sign frame goes out at once when nothing else waits in
%% the mailbox; otherwise it joins the outbox, which leaves as one batch
%% frame (PROTOCOL.md) when the flush_outbox message sent behind the waiting
%% calls comes up, or when it reaches ?BATCH_MAX bytes.
-spec queue_frame(id(), binary(), state()) -> state().
queue_frame(Id, Bin, #st{outbox = Out, outbox_bytes = N} = St) ->
    St1 = St#st{outbox = [{Id, Bin} | Out], outbox_bytes = N + 4 + byte_size(Bin)},
    case process_info(self(), message_queue_len) of
        {message_queue_len, 0} -> flush_outbox(St1);
        _ when St1#st.outbox_bytes >= ?BATCH_MAX -> flush_outbox(St1);
        _ when Out =:= [] -> self() ! flush_outbox, St1;
        _ -> St1
    end.

-spec flush_outbox(state()) -> state().
flush_outbox(#st{outbox = []} = St) -> St;
flush_outbox(#st{outbox = Out, port = Port} = St) ->
    Data = case Out of
               [{_, Bin}] -> Bin;
               _ -> [0 | [[<<(byte_size(B)):32>>, B] || {_, B} <- lists:reverse(Out)]]
           end,
    St1 = St#st{outbox = [], outbox_bytes = 0},
    try erlang:port_command(Port, Data) of
        true -> St1
    catch
        error:_ ->
            lists:foldl(fun({Id, _}, Acc) ->
                                case maps:take(Id, Acc#st.pending) of
                                    {{call, From}, P} ->
                                        gen_server:reply(From, {error, port_down}),
                                        bump(errors, Acc#st{pending = P});
                                    _ -> Acc
                                end
                        end, St1, Out)
    end.

-spec port_reply(id(), term(), state()) -> {noreply, state()} | {stop, term(), state()}.
port_reply(Id, Reply, St0) ->
    #st{pending = P} = St = complete_slot(Id, St0),
    Result = case maps:take(Id, P) of
                 {What, P1} -> handle_reply(What, Reply, St#st{pending = P1});
                 error -> {noreply, St}          % late: cancelled or timed out
             end,
    %% A slot may have come free: let waiting requests go.
    case Result of
        {noreply, #st{rl_queue = Q} = St1} ->
            case queue:is_empty(Q) of
                true -> Result;
                false -> {noreply, drain(St1)}
            end;
        _ -> Result
    end.

-spec handle_reply(pending(), term(), state()) ->
    {noreply, state()} | {stop, term(), state()}.
handle_reply({call, From}, Reply, St) ->
    gen_server:reply(From, Reply),
    {noreply, count_reply(Reply, St)};
handle_reply({lst_complete, From}, Reply, St) ->
    St1 = case Reply of
              {ok, #{expires_at := E}} when is_integer(E) -> new_lst(E, user, St);
              _ -> St
          end,
    gen_server:reply(From, Reply),
    {noreply, count_reply(Reply, St1)};
handle_reply({req, Ref}, Reply, St) ->
    {noreply, req_reply(Ref, Reply, St)};
handle_reply(handshake, Reply, St) ->
    {noreply, handshake_done(Reply, St)};
handle_reply(ssodh, Reply, St) ->
    case Reply of
        {ok, #{status := S}} when S >= 200, S < 300 -> ok;
        {ok, #{status := S}} ->
            logger:warning("ibkr_oauth: POST /iserver/auth/ssodh/init answered ~b", [S], ?META);
        Other ->
            logger:warning("ibkr_oauth: POST /iserver/auth/ssodh/init failed: ~p",
                           [scrub_error(Other)], ?META)
    end,
    {noreply, release(St)};
handle_reply(tickle, Reply, St) ->
    {noreply, tickle_done(Reply, St)};
handle_reply(reinit, ok, St) ->
    logger:notice("ibkr_oauth: port restarted (os pid ~p)", [St#st.os_pid], ?META),
    {noreply, St};
handle_reply(reinit, Reply, St) ->
    logger:error("ibkr_oauth: the restarted port refused the config: ~p",
                 [scrub_error(Reply)], ?META),
    {stop, {shutdown, {port_reinit, scrub_error(Reply)}}, St}.

-spec count_reply(term(), state()) -> state().
count_reply({error, _}, St) -> bump(errors, St);
count_reply(_, St) -> St.

-spec port_event(term()) -> ok.
port_event({log, Level, Msg}) when is_binary(Msg) ->
    L = case lists:member(Level, [debug, info, notice, warning, error]) of
            true -> Level;
            false -> error
        end,
    logger:log(L, "ibkr_oauth_port: ~ts", [Msg], ?META);
port_event({protocol_error, Why}) ->
    logger:error("ibkr_oauth_port: protocol error ~p", [scrub(Why)], ?META);
port_event(Other) ->
    logger:warning("ibkr_oauth_port: unknown event ~p", [scrub(Other)], ?META).

%% Ids of cancelled requests stay in `slots' until the port answers them.
-spec next_id(state()) -> {id(), state()}.
next_id(#st{next_id = Id, pending = P, slots = Slots} = St) ->
    Next = case Id >= ?MAX_ID of
               true -> 1;
               false -> Id + 1
           end,
    case is_map_key(Id, P) orelse is_map_key(Id, Slots) of
        true -> next_id(St#st{next_id = Next});
        false -> {Id, St#st{next_id = Next}}
    end.

%%====================================================================
%% request/4
%%====================================================================

%% Registers a request (its deadline timer runs from now).
-spec new_req(#req{}, timeout() | default, state()) -> {reference(), state()}.
new_req(#req{url = PathQuery} = R, Timeout0, St) ->
    Timeout = case Timeout0 of
                  default -> St#st.request_timeout;
                  _ -> Timeout0
              end,
    Ref = make_ref(),
    {Deadline, Timer} =
        case Timeout of
            infinity -> {infinity, undefined};
            _ -> {now_ms() + Timeout, erlang:send_after(Timeout, self(), {deadline, Ref})}
        end,
    [Path | _] = binary:split(PathQuery, <<"?">>),
    Req = R#req{url = <<(St#st.base_url)/binary, PathQuery/binary>>, path = Path,
                deadline = Deadline, timer = Timer,
                started = erlang:monotonic_time(microsecond)},
    {Ref, bump(requests, St#st{reqs = (St#st.reqs)#{Ref => Req}})}.

%% Sends the request now, or queues it behind a handshake.
-spec dispatch(reference(), state()) -> state().
dispatch(Ref, #st{handshake = undefined} = St) ->
    case usable(St) of
        true -> send_req(Ref, St);
        false -> start_handshake(demand, enqueue(Ref, St))
    end;
dispatch(Ref, St) ->
    enqueue(Ref, St).

-spec enqueue(reference(), state()) -> state().
enqueue(Ref, #st{reqs = Reqs, queue = Q} = St) ->
    #{Ref := R} = Reqs,
    St#st{reqs = Reqs#{Ref := R#req{where = queued}}, queue = [Ref | Q]}.

%% Hands the request to the rate limiter.
-spec send_req(reference(), state()) -> state().
send_req(Ref, #st{reqs = Reqs} = St) ->
    #{Ref := R} = Reqs,
    R1 = R#req{where = rl_queued, rl_since = now_us()},
    gate({req, Ref}, St#st{reqs = Reqs#{Ref := R1}}).

%% The limiter let the request go: send it, signed with the current LST.
-spec transmit(reference(), ibkr_oauth_ratelimit:token(), state()) -> state().
transmit(Ref, Token, #st{reqs = Reqs} = St) ->
    #{Ref := R} = Reqs,
    case remaining(R#req.deadline) of
        Left when Left =< 0 -> finish(Ref, {error, timeout}, release_token(Token, St));
        Left ->
            Http = #{method => method_bin(R#req.method),
                     url => R#req.url,
                     headers => R#req.headers,
                     timeout => port_timeout(Left),
                     sign => true},
            Cmd = {http, maps:merge(case R#req.body of
                                        <<>> -> Http;
                                        Body -> Http#{body => Body}
                                    end, R#req.port_opts)},
            {Id, St1} = next_id(St),
            case ibkr_oauth_port:send(St1#st.port, Id, Cmd) of
                ok ->
                    R1 = R#req{where = {port, Id}, epoch = St1#st.epoch,
                               attempt = R#req.attempt + 1},
                    St1#st{pending = (St1#st.pending)#{Id => {req, Ref}}, managed = true,
                           slots = (St1#st.slots)#{Id => Token},
                           reqs = Reqs#{Ref := R1}};
                {error, _} = E -> finish(Ref, E, release_token(Token, St1))
            end
    end.

-spec req_reply(reference(), term(), state()) -> state().
req_reply(Ref, Reply, #st{reqs = Reqs} = St) ->
    case Reqs of
        #{Ref := R0} ->
            R = R0#req{where = none},
            req_reply(Ref, R, Reply, St#st{reqs = Reqs#{Ref := R}});
        _ -> St
    end.

-spec req_reply(reference(), #req{}, term(), state()) -> state().
req_reply(Ref, #req{retried_401 = false} = R, {ok, #{status := 401}}, St) ->
    retry_warning(R, "answered 401: new live session token, one retry", #{status => 401}),
    retry_auth(Ref, R, St);
req_reply(Ref, #req{retried_401 = false} = R, {error, not_authenticated}, St) ->
    retry_warning(R, "found no live session token in the port: new one, one retry", #{}),
    retry_auth(Ref, R, St);
req_reply(Ref, #req{retried_429 = false} = R, {ok, #{status := 429, headers := H}} = Reply, St) ->
    Left = remaining(R#req.deadline),
    case retry_after(H) of
        {ok, Ms} when Left =:= infinity; Ms < Left ->
            retry_warning(R, io_lib:format("answered 429: retry in ~b ms", [Ms]), #{status => 429}),
            TRef = erlang:send_after(Ms, self(), {retry, Ref}),
            R1 = R#req{where = {retry, TRef}, retried_429 = true},
            St#st{reqs = (St#st.reqs)#{Ref := R1}};
        _ -> finish(Ref, Reply, St)
    end;
req_reply(Ref, #req{retried_transport = false, method = M} = R,
          {error, {transport, K, #{sent := Sent}}} = Reply, St) ->
    %% The port reports facts; resending is safe when nothing can have
    %% reached the server, and for get/head.
    case Sent =:= false orelse M =:= get orelse M =:= head of
        true ->
            retry_warning(R, io_lib:format("failed (transport ~p): one retry", [K]), #{}),
            R1 = R#req{retried_transport = true},
            dispatch(Ref, St#st{reqs = (St#st.reqs)#{Ref := R1}});
        false -> finish(Ref, caller_transport(Reply), St)
    end;
req_reply(Ref, _R, {error, {transport, _, #{}}} = Reply, St) ->
    finish(Ref, caller_transport(Reply), St);
req_reply(Ref, _R, {ok, #{status := _, headers := _, body := _}} = Reply, St) ->
    finish(Ref, Reply, St);
req_reply(Ref, _R, {error, _} = Reply, St) ->
    finish(Ref, Reply, St);
req_reply(Ref, _R, _Other, St) ->
    finish(Ref, {error, bad_reply}, St).

%% What the caller sees of the port's transport facts: `{transport, K}',
%% where resolve/connect/tls promise "never sent", so a request that may
%% have reached the server (libcurl's reconnect after a reused connection
%% died) reads as `recv'.
-spec caller_transport({error, {transport, atom(), #{sent := boolean()}}}) ->
    {error, {transport, atom()}}.
caller_transport({error, {transport, K, #{sent := true}}})
  when K =:= resolve; K =:= connect; K =:= tls ->
    {error, {transport, recv}};
caller_transport({error, {transport, K, _}}) ->
    {error, {transport, K}}.

-spec retry_warning(#req{}, iodata(), map()) -> ok.
retry_warning(R, What, Meta) ->
    ?LOG_WARNING("ibkr_oauth: ~s ~ts ~ts", [method_bin(R#req.method), R#req.path, What],
                 maps:merge(req_meta(R), Meta#{event => retry})).

%% A 401 (or a port without an LST): one fresh LST and one retry. Signed with
%% the current LST: start a handshake (or join the one in flight); signed
%% with an older one: a newer LST already exists, just resend.
-spec retry_auth(reference(), #req{}, state()) -> state().
retry_auth(Ref, R, #st{reqs = Reqs} = St) ->
    St1 = St#st{reqs = Reqs#{Ref := R#req{retried_401 = true}}},
    case St1#st.handshake =:= undefined andalso R#req.epoch =:= St1#st.epoch of
        true -> start_handshake(demand, enqueue(Ref, St1));
        false -> dispatch(Ref, St1)
    end.

-spec retry_after([{binary(), binary()}]) -> {ok, non_neg_integer()} | error.
retry_after(Headers) ->
    case [V || {N, V} <- Headers, is_binary(N), string:lowercase(N) =:= <<"retry-after">>] of
        [V | _] when is_binary(V) ->
            try binary_to_integer(string:trim(V)) of
                S when S >= 0, S =< 3600 -> {ok, S * 1000};
                _ -> error
            catch
                error:badarg -> error
            end;
        _ -> error
    end.

%% The request's deadline passed. If it is at the port, the port is told to
%% cancel; its slot in the limiter is freed when the port answers that id.
-spec deadline(reference(), state()) -> state().
deadline(Ref, #st{reqs = Reqs, pending = P} = St) ->
    case Reqs of
        #{Ref := #req{where = {port, Id}} = R} ->
            ibkr_oauth_port:cancel(St#st.port, Id),
            finish(Ref, {error, timeout},
                   St#st{pending = maps:remove(Id, P),
                         reqs = Reqs#{Ref := R#req{timer = undefined}}});
        #{Ref := R} ->
            finish(Ref, {error, timeout}, St#st{reqs = Reqs#{Ref := R#req{timer = undefined}}});
        _ -> St
    end.

%% Answers a request's caller and forgets the request (a queue entry left
%% behind is skipped later).
-spec finish(reference(), term(), state()) -> state().
finish(Ref, Reply0, #st{reqs = Reqs} = St0) ->
    case maps:take(Ref, Reqs) of
        {#req{from = From, timer = T, where = Where} = R1, Reqs1} ->
            cancel_timer(T),
            R = case Where of
                    {retry, TRef} -> cancel_timer(TRef), R1;
                    %% It ends while waiting for the limiter.
                    rl_queued -> R1#req{queued_us = R1#req.queued_us + (now_us() - R1#req.rl_since)};
                    _ -> R1
                end,
            St = case R#req.path of
                     <<"/tickle">> -> keep_tickle(Reply0, St0);
                     _ -> St0
                 end,
            Reply = case {R#req.websocket, Reply0} of
                        {false, {ok, #{} = Resp}} -> {ok, Resp#{queued_ms => queued_ms(R)}};
                        {false, _} -> Reply0;
                        {true, _} -> websocket_reply(Reply0, St)
                    end,
            log_request(R, Reply0),
            gen_server:reply(From, Reply),
            count_reply(Reply, St#st{reqs = Reqs1});
        error -> St0
    end.

%% One event per request: debug when answered, info when it failed.
-spec log_request(#req{}, {ok, #{status := integer(), _ => _}} | {error, term()}) -> ok.
log_request(R, Reply) ->
    Meta0 = (req_meta(R))#{event => request,
                           duration_us => erlang:monotonic_time(microsecond) - R#req.started},
    M = method_bin(R#req.method),
    case Reply of
        {ok, #{status := S}} ->
            ?LOG_DEBUG("ibkr_oauth: ~s ~ts ~b", [M, R#req.path, S], Meta0#{status => S});
        {error, Why} ->
            Short = scrub(Why),
            ?LOG_INFO("ibkr_oauth: ~s ~ts failed: ~0p", [M, R#req.path, Short],
                      Meta0#{status => undefined, error => Short})
    end.

-spec req_meta(#req{}) -> map().
req_meta(R) ->
    ?META#{ibkr_oauth => request, method => R#req.method, path => R#req.path,
           attempt => R#req.attempt, queued_ms => queued_ms(R)}.

-spec queued_ms(#req{}) -> non_neg_integer().
queued_ms(#req{queued_us = Us}) -> Us div 1000.

-spec remaining(integer() | infinity) -> integer() | infinity.
remaining(infinity) -> infinity;
remaining(Deadline) -> Deadline - now_ms().

-spec method_bin(atom()) -> binary().
method_bin(get) -> <<"GET">>;
method_bin(post) -> <<"POST">>;
method_bin(put) -> <<"PUT">>;
method_bin(delete) -> <<"DELETE">>;
method_bin(patch) -> <<"PATCH">>;
method_bin(head) -> <<"HEAD">>.

%%====================================================================
%% Rate limiting
%%====================================================================

%% Queues a job for the rate limiter (the session's own jobs in front:
%% requests wait for a handshake anyway) and sends what may go now.
-spec gate(job(), state()) -> state().
gate(Job, #st{rl_queue = Q} = St) ->
    Q1 = case Job of
             {req, _} -> queue:in(Job, Q);
             _ -> queue:in_r(Job, Q)
         end,
    case St#st.draining of
        true -> St#st{rl_queue = Q1};           % the walk in progress sees it
        false ->
            St1 = drain(St#st{rl_queue = Q1}),
            case Job of
                {req, Ref} -> throttled(Ref, St1);
                _ -> St1
            end
    end.

%% Sends every queued job the limiter admits, in queue order, and arms a
%% timer for the moment the first blocked key frees up.
-spec drain(state()) -> state().
drain(St0) ->
    cancel_timer(St0#st.rl_timer),
    {Wait, St} = drain_pass(St0#st{rl_timer = undefined, draining = true}),
    Timer = case queue:is_empty(St#st.rl_queue) orelse Wait =:= infinity of
                true -> undefined;               % an answer will call drain/1
                false -> erlang:send_after(Wait, self(), rl_tick)
            end,
    St#st{draining = false, rl_timer = Timer}.

%% Jobs that run may queue new ones (a request that finds no LST queues a
%% handshake): those are merged in and the walk repeats.
-spec drain_pass(state()) -> {non_neg_integer() | infinity, state()}.
drain_pass(#st{rl_queue = Q} = St) ->
    {Kept, Wait, St1} = walk(queue:to_list(Q), [], #{}, infinity, now_ms(),
                             St#st{rl_queue = queue:new()}),
    case queue:to_list(St1#st.rl_queue) of
        [] -> {Wait, St1#st{rl_queue = queue:from_list(Kept)}};
        New ->
            {Reqs, Own} = lists:partition(fun({req, _}) -> true; (_) -> false end, New),
            drain_pass(St1#st{rl_queue = queue:from_list(Own ++ Kept ++ Reqs)})
    end.

%% `Blocked' maps each full key to the least wait before it has room
%% (ibkr_oauth_ratelimit:min_wait/2): a request whose deadline comes sooner
%% cannot be sent in time and is answered `{error, rate_limited}' at once
%% rather than `{error, timeout}' when its deadline is up.
-spec walk([job()], [job()], #{ibkr_oauth_ratelimit:key() => non_neg_integer()},
           non_neg_integer() | infinity, integer(), state()) ->
    {[job()], non_neg_integer() | infinity, state()}.
walk([], Kept, _Blocked, Wait, _Now, St) ->
    {lists:reverse(Kept), Wait, St};
walk([Job | Rest], Kept, Blocked, Wait, Now, St) ->
    case job_path(Job, St) of
        gone -> walk(Rest, Kept, Blocked, Wait, Now, St);
        Path ->
            Keys = ibkr_oauth_ratelimit:keys(Path, St#st.limiter),
            case [W || K <- Keys, #{K := W} <- [Blocked]] of
                [_ | _] = Ws ->
                    Least = lists:max(Ws),
                    walk(Rest, keep(Job, Least, Now, Kept, St), Blocked, Wait, Now,
                         give_up(Job, Least, Now, St));
                [] ->
                    case ibkr_oauth_ratelimit:acquire(Keys, Now, St#st.limiter) of
                        {ok, Token, L} ->
                            St1 = run_job(Job, Token, St#st{limiter = L}),
                            walk(Rest, Kept, Blocked, Wait, Now, St1);
                        {wait, Full} ->
                            Least = ibkr_oauth_ratelimit:min_wait(Full, St#st.limiter),
                            Blocked1 = maps:merge(Blocked, maps:from_list(
                                         [{K, ibkr_oauth_ratelimit:min_wait([KW], St#st.limiter)}
                                          || {K, _} = KW <- Full])),
                            Wait1 = lists:min([Wait | [W || {_, W} <- Full]]),
                            Kept1 = keep(Job, Least, Now, Kept, St),
                            St1 = give_up(Job, Least, Now, St),
                            case is_map_key(global, Blocked1) of
                                %% Every job needs the global key: stop here.
                                true -> {lists:reverse(Kept1, Rest), Wait1, St1};
                                false -> walk(Rest, Kept1, Blocked1, Wait1, Now, St1)
                            end
                    end
            end
    end.

%% A request that cannot leave before its deadline (the least wait for its
%% keys reaches it): never sent, answered now.
-spec hopeless(job(), non_neg_integer(), integer(), state()) -> boolean().
hopeless({req, Ref}, Least, Now, #st{reqs = Reqs}) ->
    case Reqs of
        #{Ref := #req{deadline = D}} when is_integer(D) -> Now + Least >= D;
        _ -> false
    end;
hopeless(_, _, _, _) -> false.

-spec keep(job(), non_neg_integer(), integer(), [job()], state()) -> [job()].
keep(Job, Least, Now, Kept, St) ->
    case hopeless(Job, Least, Now, St) of
        true -> Kept;
        false -> [Job | Kept]
    end.

-spec give_up(job(), non_neg_integer(), integer(), state()) -> state().
give_up({req, Ref} = Job, Least, Now, St) ->
    case hopeless(Job, Least, Now, St) of
        true -> finish(Ref, {error, rate_limited}, throttled(Ref, St));
        false -> St
    end;
give_up(_, _, _, St) -> St.

%% The path a queued job counts against, or `gone' when it no longer waits
%% (a request that timed out, a handshake that was reset).
-spec job_path(job(), state()) -> binary() | gone.
job_path({req, Ref}, #st{reqs = Reqs}) ->
    case Reqs of
        #{Ref := #req{where = rl_queued, path = P}} -> P;
        _ -> gone
    end;
job_path(handshake, #st{handshake = {lst, queued, _}}) -> ?LST_PATH;
job_path(ssodh, #st{handshake = {ssodh, queued, _}}) -> ?SSODH_PATH;
job_path(tickle, _) -> <<"/tickle">>;
job_path(_, _) -> gone.

%% A request the limiter did not let go at once is counted in
%% `rate_limited' (once, retries included).
-spec throttled(reference(), state()) -> state().
throttled(Ref, #st{reqs = Reqs} = St) ->
    case Reqs of
        #{Ref := #req{where = rl_queued, throttled = false} = R} ->
            bump(rate_limited, St#st{reqs = Reqs#{Ref := R#req{throttled = true}}});
        _ -> St
    end.

-spec run_job(job(), ibkr_oauth_ratelimit:token(), state()) -> state().
run_job({req, Ref}, Token, #st{reqs = Reqs} = St) ->
    #{Ref := R} = Reqs,
    Waited = max(0, now_us() - R#req.rl_since),
    St1 = St#st{reqs = Reqs#{Ref := R#req{where = none,
                                         queued_us = R#req.queued_us + Waited}}},
    case St1#st.handshake =:= undefined andalso usable(St1) of
        true -> transmit(Ref, Token, St1);
        %% The LST went stale while it waited: behind a handshake it goes.
        false -> dispatch(Ref, release_token(Token, St1))
    end;
run_job(handshake, Token, St) -> send_handshake(Token, St);
run_job(ssodh, Token, St) -> send_ssodh(Token, St);
run_job(tickle, Token, St) -> send_tickle(Token, St).

%% A token that was not used after all.
-spec release_token(ibkr_oauth_ratelimit:token(), state()) -> state().
release_token(Token, #st{limiter = L} = St) ->
    St#st{limiter = ibkr_oauth_ratelimit:release(Token, L)}.

%% The port answered `Id' (or never will): its slots count from now.
-spec complete_slot(id(), state()) -> state().
complete_slot(Id, #st{slots = Slots, limiter = L} = St) ->
    case maps:take(Id, Slots) of
        {Token, Slots1} ->
            St#st{slots = Slots1, limiter = ibkr_oauth_ratelimit:complete(Token, now_ms(), L)};
        error -> St
    end.

%%====================================================================
%% Websocket
%%====================================================================

%% The `session' of a recent /tickle answer obtained with the current LST.
-spec websocket_session(state()) -> {ok, binary()} | stale.
websocket_session(#st{tickle = #{at := At, epoch := Ep} = T, epoch = Ep} = St) ->
    Fresh = erlang:system_time(millisecond) - At < ?WS_FRESH_MS andalso has_live_lst(St),
    case {Fresh, T} of
        {true, #{session := S}} -> {ok, S};
        {true, #{cookie := C}} -> {ok, C};
        _ -> stale
    end;
websocket_session(_) -> stale.

%% What IBKR's websocket needs with OAuth: the access token in the URL and
%% the /tickle session as the `api' cookie.
-spec websocket_info(binary(), state()) -> map().
websocket_info(Session, #st{base_url = Base, secrets = Secrets}) ->
    WsBase = case Base of
                 <<"https://", Rest/binary>> -> <<"wss://", Rest/binary>>;
                 <<"http://", Rest/binary>> -> <<"ws://", Rest/binary>>
             end,
    Query = uri_string:compose_query([{<<"oauth_token">>, maps:get(access_token, Secrets())}]),
    Cookie = <<"api=", Session/binary>>,
    #{url => iolist_to_binary([WsBase, <<"/ws?">>, Query]),
      session => Session,
      cookie => Cookie,
      headers => [{<<"cookie">>, Cookie}, {<<"user-agent">>, <<"ibkr_oauth">>}]}.

%% The answer to websocket_info/1 once its /tickle is back.
-spec websocket_reply(term(), state()) -> {ok, map()} | {error, term()}.
websocket_reply({ok, #{status := 200}}, St) ->
    case websocket_session(St) of
        {ok, Session} -> {ok, websocket_info(Session, St)};
        stale -> {error, {bad_response, missing_field}}
    end;
websocket_reply({ok, #{status := S, body := B}}, _St) -> {error, {http, S, B}};
websocket_reply({error, _} = E, _St) -> E;
websocket_reply(_, _St) -> {error, bad_reply}.

%%====================================================================
%% Handshakes (single flight)
%%====================================================================

-spec start_handshake(origin(), state()) -> state().
start_handshake(_Origin, #st{handshake = {_, _, _}} = St) ->
    St;
start_handshake(Origin, St) ->
    gate(handshake, St#st{handshake = {lst, queued, Origin}, hs_epoch = St#st.epoch}).

%% The limiter let the LST request go.
-spec send_handshake(ibkr_oauth_ratelimit:token(), state()) -> state().
send_handshake(Token, #st{handshake = {lst, queued, Origin}} = St) ->
    {Id, St1} = next_id(St),
    Cmd = {authenticate, #{timeout => handshake_timeout(St)}},
    case ibkr_oauth_port:send(St1#st.port, Id, Cmd) of
        ok ->
            watchdog(Id, St1),
            St1#st{handshake = {lst, Id, Origin}, managed = true,
                   pending = (St1#st.pending)#{Id => handshake},
                   slots = (St1#st.slots)#{Id => Token}};
        {error, _} = E ->
            %% The port is gone; its exit message fails everybody shortly.
            release_error(E, Origin, release_token(Token, St1))
    end;
send_handshake(Token, St) ->
    release_token(Token, St).

%% A handshake step the port has not answered this long after its own
%% timeout is ended by the session ({hs_watchdog, Id}).
-spec watchdog(id(), state()) -> ok.
watchdog(Id, St) ->
    _ = erlang:send_after(handshake_timeout(St) + ?WATCHDOG_MARGIN, self(), {hs_watchdog, Id}),
    ok.

-spec handshake_timeout(state()) -> pos_integer().
handshake_timeout(#st{request_timeout = infinity}) -> 60000;
handshake_timeout(#st{request_timeout = T}) -> min(T, ?PORT_MAX_TIMEOUT).

%% The port takes timeouts up to 2^31-1 ms, or `infinity' (0 there means a
%% deadline already passed). Longer ones (the API allows 2^32-1) are the
%% session's own deadline timer's business.
-spec port_timeout(integer() | infinity) -> integer() | infinity.
port_timeout(Ms) when is_integer(Ms), Ms =< ?PORT_MAX_TIMEOUT -> Ms;
port_timeout(_) -> infinity.

-spec handshake_done(term(), state()) -> state().
handshake_done({ok, #{expires_at := E}}, #st{handshake = {lst, _, Origin}} = St)
  when is_integer(E) ->
    ?LOG_INFO("ibkr_oauth: new live session token (~p), expires at ~b", [Origin, E],
              ?META#{event => handshake, origin => Origin, expires_at => E}),
    St1 = new_lst(E, port, St#st{backoff = 0}),
    case St1#st.brokerage_session of
        true -> open_brokerage(Origin, St1);
        false -> release(St1)
    end;
handshake_done(_Reply, #st{handshake = {lst, _, _}, epoch = Ep, hs_epoch = HsEp} = St)
  when Ep > HsEp ->
    %% lst_complete/2 installed an LST meanwhile (taking the DH exponent of
    %% this handshake, which then failed): waiters and queue get that one.
    case usable(St) of
        true -> release(St);
        false -> release_error({error, not_authenticated}, demand, St)
    end;
handshake_done(Reply, #st{handshake = {lst, _, Origin}} = St) ->
    Error = case Reply of
                {error, _} -> Reply;
                _ -> {error, bad_reply}
            end,
    %% IBKR's error text (the start of it) says why, e.g. a clock skew.
    ?LOG_WARNING("ibkr_oauth: live session token handshake failed: ~0p",
                 [scrub_error(Error)], ?META#{event => handshake_failed, origin => Origin}),
    release_error(Error, Origin, St);
handshake_done(_Reply, St) ->
    St.

-spec open_brokerage(origin(), state()) -> state().
open_brokerage(Origin, St) ->
    gate(ssodh, St#st{handshake = {ssodh, queued, Origin}}).

-spec send_ssodh(ibkr_oauth_ratelimit:token(), state()) -> state().
send_ssodh(Token, #st{handshake = {ssodh, queued, Origin}} = St) ->
    {Id, St1} = next_id(St),
    Cmd = {http, #{method => <<"POST">>,
                   url => <<(St#st.base_url)/binary, ?SSODH_PATH/binary>>,
                   headers => [{<<"content-type">>, <<"application/json">>}],
                   body => <<"{\"publish\":true,\"compete\":true}">>,
                   timeout => handshake_timeout(St),
                   sign => true}},
    case ibkr_oauth_port:send(St1#st.port, Id, Cmd) of
        ok ->
            watchdog(Id, St1),
            St1#st{handshake = {ssodh, Id, Origin},
                   pending = (St1#st.pending)#{Id => ssodh},
                   slots = (St1#st.slots)#{Id => Token}};
        {error, _} -> release(release_token(Token, St1))
    end;
send_ssodh(Token, St) ->
    release_token(Token, St).

%% The handshake succeeded: answer authenticate/1 callers, send the queue.
-spec release(state()) -> state().
release(#st{auth = {lst, E, _, _}, auth_waiters = W, queue = Q} = St) ->
    [gen_server:reply(From, {ok, #{expires_at => E}}) || From <- lists:reverse(W)],
    St1 = St#st{handshake = undefined, auth_waiters = [], queue = []},
    lists:foldl(fun(Ref, Acc) ->
                        case Acc#st.reqs of
                            #{Ref := #req{where = queued}} -> send_req(Ref, Acc);
                            _ -> Acc
                        end
                end, St1, lists:reverse(Q));
release(St) ->
    release_error({error, not_authenticated}, demand, St).

%% The handshake failed: every waiter gets its error; a background one is
%% retried with backoff. A failed renewal leaves the current LST in use
%% until it expires (see usable/1): requests that waited for the renewal go
%% out with it, except those whose 401 started it.
-spec release_error({error, term()}, origin(), state()) -> state().
release_error(Error, Origin, #st{auth_waiters = W, queue = Q} = St) ->
    [gen_server:reply(From, Error) || From <- lists:reverse(W)],
    St1 = St#st{handshake = undefined, auth_waiters = [], queue = [],
                counters = maps:update_with(errors, fun(N) -> N + length(W) end,
                                            St#st.counters)},
    St2 = case Origin of
              renew ->
                  Backoff = min(?BACKOFF_MAX, max(1000, 2 * St1#st.backoff)),
                  cancel_timer(St1#st.renew_timer),
                  St1#st{backoff = Backoff,
                         renew_timer = erlang:send_after(Backoff, self(), renew)};
              demand -> St1
          end,
    lists:foldl(fun(Ref, Acc) ->
                        case Acc#st.reqs of
                            #{Ref := #req{where = queued, retried_401 = false}} when Origin =:= renew ->
                                case usable(Acc) of
                                    true -> send_req(Ref, Acc);
                                    false -> finish(Ref, Error, Acc)
                                end;
                            #{Ref := #req{where = queued}} -> finish(Ref, Error, Acc);
                            _ -> Acc
                        end
                end, St2, lists:reverse(Q)).

-spec new_lst(integer(), port | user, state()) -> state().
new_lst(ExpiresAt, Source, #st{epoch = Ep} = St) ->
    Now = erlang:system_time(millisecond),
    cancel_timer(St#st.renew_timer),
    St1 = bump(handshakes, St#st{auth = {lst, ExpiresAt, Now, Source}, epoch = Ep + 1,
                                 renew_timer = undefined, backoff = 0}),
    case Source of
        port ->
            Delay = max(1000, ExpiresAt - margin(St1) - Now),
            St1#st{renew_timer = erlang:send_after(min(Delay, 16#7FFFFFFF), self(), renew)};
        user -> St1
    end.

%% refresh_margin, at most half of the token's lifetime.
-spec margin(state()) -> non_neg_integer().
margin(#st{auth = {lst, E, Obtained, _}, refresh_margin = M}) ->
    min(M, max(0, E - Obtained) div 2);
margin(#st{refresh_margin = M}) -> M.

%% Within the margin the LST is renewed; while a background renewal fails
%% (backoff > 0, retried by the renew timer) it is still used until it
%% expires rather than failing requests it can sign.
-spec usable(state()) -> boolean().
usable(#st{auth = {lst, E, _, _}, backoff = Backoff} = St) ->
    Now = erlang:system_time(millisecond),
    Now + margin(St) < E orelse (Backoff > 0 andalso Now < E);
usable(_) -> false.

-spec has_live_lst(state()) -> boolean().
has_live_lst(#st{auth = {lst, E, _, _}}) -> erlang:system_time(millisecond) < E;
has_live_lst(_) -> false.

%%====================================================================
%% Tickle, logout
%%====================================================================

-spec arm_tickle(state()) -> state().
arm_tickle(#st{tickle_interval = infinity} = St) -> St;
arm_tickle(#st{tickle_interval = I} = St) ->
    St#st{tickle_timer = erlang:send_after(I, self(), tickle)}.

%% The timer's tickle waits for the rate limiter like everything else (one
%% at a time).
-spec tickle(state()) -> state().
tickle(#st{handshake = undefined} = St) ->
    case tickle_wanted(St) andalso not queue:member(tickle, St#st.rl_queue) of
        true -> gate(tickle, St);
        false -> St
    end;
tickle(St) -> St.

-spec tickle_wanted(state()) -> boolean().
tickle_wanted(St) ->
    St#st.handshake =:= undefined andalso St#st.managed andalso usable(St).

-spec send_tickle(ibkr_oauth_ratelimit:token(), state()) -> state().
send_tickle(Token, St) ->
    case tickle_wanted(St) of
        true ->
            {Id, St1} = next_id(St),
            Timeout = case St#st.tickle_interval of
                          infinity -> handshake_timeout(St);
                          I -> min(I, handshake_timeout(St))
                      end,
            Cmd = {http, #{method => <<"POST">>,
                           url => <<(St#st.base_url)/binary, "/tickle">>,
                           headers => [], body => <<>>, timeout => Timeout,
                           sign => true}},
            case ibkr_oauth_port:send(St1#st.port, Id, Cmd) of
                ok -> St1#st{pending = (St1#st.pending)#{Id => tickle},
                             slots = (St1#st.slots)#{Id => Token}};
                {error, _} -> release_token(Token, St1)
            end;
        false -> release_token(Token, St)
    end.

%% Keeps what the websocket needs from a /tickle answer (the session's own or
%% a caller's): the JSON `session' and the `api' cookie, with the epoch of
%% the LST it was obtained with.
-spec keep_tickle(term(), state()) -> state().
keep_tickle({ok, #{status := 200, headers := H, body := Body}}, St) ->
    Cookies = [C || {N, V} <- H, N =:= <<"set-cookie">>,
                    {match, [C]} <- [re:run(V, <<"^\\s*api=([^;]*)">>,
                                            [{capture, all_but_first, binary}])]],
    Session = case re:run(Body, <<"\"session\"\\s*:\\s*\"([^\"]*)\"">>,
                          [{capture, all_but_first, binary}]) of
                  {match, [S]} -> #{session => S};
                  _ -> #{}
              end,
    Cookie = case Cookies of
                 [C | _] -> #{cookie => C};
                 [] -> #{}
             end,
    St#st{tickle = maps:merge(Cookie, Session#{at => erlang:system_time(millisecond),
                                               epoch => St#st.epoch})};
keep_tickle(_, St) -> St.

-spec tickle_done(term(), state()) -> state().
tickle_done({ok, #{status := 200}} = Reply, St) ->
    keep_tickle(Reply, St);
tickle_done({ok, #{status := 401}}, St) ->
    logger:notice("ibkr_oauth: POST /tickle answered 401, renewing the LST", [], ?META),
    start_handshake(renew, St);
tickle_done({ok, #{status := S}}, St) ->
    logger:warning("ibkr_oauth: POST /tickle answered ~b", [S], ?META),
    St;
tickle_done(Other, St) ->
    logger:warning("ibkr_oauth: POST /tickle failed: ~p", [scrub_error(Other)], ?META),
    St.

%% Synchronous, bounded: only from terminate/2 (after fail_all/2, so nothing
%% is in flight). The rate limit holds here too: a short wait for a slot, or
%% no logout when the wait would be longer than the logout itself may take.
-spec logout(state()) -> ok.
logout(#st{port = Port, limiter = L} = St) ->
    Keys = ibkr_oauth_ratelimit:keys(<<"/logout">>, L),
    Wait = case ibkr_oauth_ratelimit:acquire(Keys, now_ms(), L) of
               {ok, _, _} -> 0;
               {wait, Full} -> lists:max([W || {_, W} <- Full])
           end,
    case Wait =< ?LOGOUT_TIMEOUT of
        true ->
            timer:sleep(Wait),
            {Id, _} = next_id(St),
            Cmd = {http, #{method => <<"POST">>,
                           url => <<(St#st.base_url)/binary, "/logout">>,
                           headers => [], body => <<>>, timeout => ?LOGOUT_TIMEOUT,
                           sign => true}},
            case ibkr_oauth_port:send(Port, Id, Cmd) of
                ok -> await_logout(Port, Id, now_ms() + ?LOGOUT_TIMEOUT + 500);
                {error, _} -> ok
            end;
        false ->
            logger:notice("ibkr_oauth: no POST /logout: the rate limit allows none for ~p ms",
                          [Wait], ?META)
    end.

-spec await_logout(port(), id(), integer()) -> ok.
await_logout(Port, Id, Deadline) ->
    receive
        {Port, {data, Bin}} ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, Id, {ok, #{status := S}}} when S >= 200, S < 300 -> ok;
                {ok, Id, Reply} ->
                    logger:notice("ibkr_oauth: POST /logout: ~p", [scrub_error(Reply)], ?META);
                _ -> await_logout(Port, Id, Deadline)
            end;
        {Port, {exit_status, _}} -> ok
    after max(0, Deadline - now_ms()) ->
        logger:notice("ibkr_oauth: POST /logout did not answer in time", [], ?META)
    end.

%%====================================================================
%% Port exits
%%====================================================================

-spec port_exited(term(), state()) -> {noreply, state()} | {stop, term(), state()}.
port_exited(Why, #st{port = OldPort} = St0) ->
    logger:warning("ibkr_oauth: the port program exited (~p); failing ~b waiting caller(s)",
                   [Why, waiting(St0)], ?META#{event => port_exit}),
    ibkr_oauth_port:close(OldPort),
    St = fail_all(port_down, St0#st{port = undefined}),
    Now = now_ms(),
    Exits = [Now | [T || T <- St#st.port_exits, Now - T < ?RESTART_WINDOW]],
    St1 = bump(port_restarts, St#st{port_exits = Exits}),
    case length(Exits) > ?RESTART_MAX of
        true ->
            logger:error("ibkr_oauth: more than ~b port exits in ~b s, stopping the session",
                         [?RESTART_MAX, ?RESTART_WINDOW div 1000], ?META),
            {stop, {shutdown, port_restart_limit}, St1};
        false ->
            case ibkr_oauth_port:open() of
                {ok, Port, OsPid} ->
                    {Id, St2} = next_id(St1#st{port = Port, os_pid = OsPid}),
                    Secrets = St2#st.secrets,
                    case ibkr_oauth_port:send(Port, Id, {init, Secrets()}) of
                        ok -> {noreply, St2#st{pending = (St2#st.pending)#{Id => reinit}}};
                        {error, _} -> {noreply, St2}   % its exit message follows
                    end;
                {error, Reason} ->
                    logger:error("ibkr_oauth: cannot restart the port: ~p", [Reason], ?META),
                    {stop, {shutdown, {port_open, Reason}}, St1}
            end
    end.

%% Every caller still waiting gets {error, Reason}; all state tied to the
%% port is reset (the session is unauthenticated afterwards).
-spec fail_all(term(), state()) -> state().
fail_all(Reason, #st{pending = P, reqs = Reqs, auth_waiters = W} = St) ->
    Error = {error, Reason},
    [gen_server:reply(From, Error) || {call, From} <- maps:values(P)],
    [gen_server:reply(From, Error) || {lst_complete, From} <- maps:values(P)],
    [gen_server:reply(From, Error) || From <- lists:reverse(W)],
    NCalls = length([x || {C, _} <- maps:values(P), C =:= call orelse C =:= lst_complete]),
    %% The port is gone or going: its requests can no longer reach the server.
    Limiter = lists:foldl(fun(Token, L) -> ibkr_oauth_ratelimit:complete(Token, now_ms(), L) end,
                          St#st.limiter, maps:values(St#st.slots)),
    St1 = St#st{pending = #{}, auth_waiters = [], queue = [], handshake = undefined,
                outbox = [], outbox_bytes = 0,
                auth = none, backoff = 0, slots = #{}, limiter = Limiter,
                rl_queue = queue:new(), rl_timer = undefined,
                counters = maps:update_with(errors, fun(N) -> N + NCalls + length(W) end,
                                            St#st.counters)},
    cancel_timer(St#st.renew_timer),
    cancel_timer(St#st.rl_timer),
    lists:foldl(fun(Ref, Acc) -> finish(Ref, Error, Acc) end,
                St1#st{renew_timer = undefined}, maps:keys(Reqs)).

-spec waiting(state()) -> non_neg_integer().
waiting(#st{pending = P, reqs = Reqs, auth_waiters = W}) ->
    length([x || {C, _} <- maps:values(P), C =/= req]) + map_size(Reqs) + length(W).

%%====================================================================
%% Helpers
%%====================================================================

-spec stats(state()) -> map().
stats(#st{counters = C, pending = P, reqs = Reqs, auth = Auth} = St) ->
    Queued = length([x || #req{where = queued} <- maps:values(Reqs)]),
    RlQueued = length([x || #req{where = rl_queued} <- maps:values(Reqs)]),
    C#{in_flight => map_size(P),
       queued => Queued,
       rate_limit_queued => RlQueued,
       authenticated => has_live_lst(St),
       handshake_in_flight => St#st.handshake =/= undefined,
       expires_at => case Auth of
                         {lst, E, _, _} -> E;
                         none -> undefined
                     end,
       epoch => St#st.epoch,
       os_pid => St#st.os_pid}.

-spec bump(atom(), state()) -> state().
bump(Key, #st{counters = C} = St) ->
    St#st{counters = maps:update_with(Key, fun(N) -> N + 1 end, 1, C)}.

-spec cancel_timer(reference() | undefined) -> ok.
cancel_timer(undefined) -> ok;
cancel_timer(T) -> _ = erlang:cancel_timer(T, [{async, true}, {info, false}]), ok.

-spec now_ms() -> integer().
now_ms() -> erlang:monotonic_time(millisecond).

-spec now_us() -> integer().
now_us() -> erlang:monotonic_time(microsecond).

-spec summary(state()) -> map().
summary(#st{} = St) ->
    maps:merge(stats(St),
               #{port => St#st.port, base_url => St#st.base_url,
                 config => redacted,
                 handshake => St#st.handshake,
                 tickle => maps:keys(St#st.tickle)}).

%% Errors from the port carry no secrets by contract, but an HTTP body is
%% IBKR's text: keep it short in logs.
-spec scrub_error(term()) -> term().
scrub_error({error, {http, Status, Body}}) when is_binary(Body) ->
    {error, {http, Status, binary:part(Body, 0, min(200, byte_size(Body)))}};
scrub_error(Other) -> scrub(Other).

%% Binaries (which could hold a token, a key or a body) become their size.
-spec scrub(term()) -> term().
scrub(B) when is_binary(B) -> {binary, byte_size(B)};
scrub(L) when is_list(L) -> scrub_list(L, 0);
scrub(T) when is_tuple(T) -> list_to_tuple([scrub(E) || E <- tuple_to_list(T)]);
scrub(M) when is_map(M) -> maps:map(fun(_, V) -> scrub(V) end, M);
scrub(F) when is_function(F) -> fun_redacted;
scrub(X) -> X.

-spec scrub_list(term(), non_neg_integer()) -> term().
scrub_list([], _) -> [];
scrub_list(_, N) when N >= 100 -> ['...'];
scrub_list([H | T], N) -> [scrub(H) | scrub_list(T, N + 1)];
scrub_list(Tail, _) -> scrub(Tail).
