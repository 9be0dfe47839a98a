%% @doc One IBKR OAuth session: a `gen_server' that owns one
%% `ibkr_oauth_port' process. Use it through {@link ibkr_oauth}.
%%
%% This module is a shell: it owns the port, the request ids and what waits
%% for them (`pending'), timers, the batching of sign frames and the port
%% restart, and it carries out what the pure policy modules decide:
%% {@link ibkr_oauth_lst} (live session token, handshakes, renewal,
%% backoff), {@link ibkr_oauth_pacing} (rate-limit queue),
%% {@link ibkr_oauth_retry} (what an answer means: done, new LST, later,
%% resend), {@link ibkr_oauth_keepalive} (tickles, `websocket_info/1'),
%% {@link ibkr_oauth_redact} (what may be logged),
%% {@link ibkr_oauth_restart} (whether a dead port is replaced),
%% {@link ibkr_oauth_request} (one request's data),
%% {@link ibkr_oauth_passthrough} (which port commands callers may send),
%% {@link ibkr_oauth_outbox} (when sign frames are written) and
%% {@link ibkr_oauth_stream} (the websocket streams, fed through
%% {@link ibkr_oauth_stream_io}). The LST policy returns
%% actions, carried out by `run/2'; the rate-limit queue is drained by
%% `pump/1' after each event, never from inside another step.
%%
%% <h3>One request</h3>
%% `request/4' registers it with its deadline timer; the LST policy says
%% "go" (to the rate-limit queue) or "wait for a handshake"; `pump/1' sends
%% it as `{Id, {http, ...}}' when the rate limit lets it go; the port's
%% answer goes to the retry policy, which finishes it or sends it round
%% again. `#req.where' says where it is: `new', `lst' (waiting for a
%% handshake), `rl' (rate-limit queue), `{port, Id}' or `{retry, Timer}'.
%%
%% <h3>Port crashes</h3>
%% When the port exits, a new one is opened and initialised with the same
%% config (asynchronously). What the port held is lost: those callers get
%% `{error, port_down}' (a request that may have reached the server is not
%% resent). What the BEAM still held (requests in the rate-limit queue,
%% waiting for a handshake or for a 429 retry) stays and goes out on the new
%% port after a new handshake, within its own deadline. More than 5 port
%% exits within 30 s stop the session with `{shutdown, port_restart_limit}'.
%%
%% <h3>Logging</h3>
%% Events carry the metadata `domain => [ibkr_oauth]'. Each finished
%% request is logged at `debug' (answered) or `info' (an error, in `error'
%% with binaries replaced by their size) with `event => request', `method',
%% `path' (without the query), `status' (`undefined' for an error),
%% `duration_us', `attempt' and `queued_ms'. Warnings: `event => retry',
%% `handshake_failed', `port_exit'; `info': `handshake' (a new LST). Never
%% logged: headers, bodies, the query, tokens, keys.
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

-type name() :: ibkr_oauth_names:name().
-type id() :: ibkr_oauth_port:id().
-type from() :: gen_server:from().
-type own() :: lst | ssodh | tickle.
-type pending() :: {call, from()} | {lst_complete, from()} | {req, reference()}
                 | {own, own()} | reinit
                 | {stream, {ws_open, id()} | ws_send | ws_close}.
-type job() :: {req, reference()} | own().
-type token() :: ibkr_oauth_ratelimit:token().

-include("ibkr_oauth_request.hrl").

-record(st, {
    port :: port() | undefined,
    os_pid :: non_neg_integer() | undefined,
    secrets :: fun(() -> map()),                % the port's init map
    base_url :: binary(),
    request_timeout :: pos_integer() | infinity,
    tickle_interval :: pos_integer() | infinity,
    next_id = 1 :: pos_integer(),
    pending = #{} :: #{id() => pending()},
    slots = #{} :: #{id() => token()},          % taken by HTTP at the port
    reqs = #{} :: #{reference() => #req{}},
    lst :: ibkr_oauth_lst:lst(),
    pacing :: ibkr_oauth_pacing:pacing(),
    keepalive = ibkr_oauth_keepalive:new() :: ibkr_oauth_keepalive:state(),
    fresh = [] :: [reference()],                % queued for the rate limit since the last pump
    renew_timer :: reference() | undefined,
    rl_timer :: reference() | undefined,
    tickle_timer :: reference() | undefined,
    %% The session does its own HTTP (a port handshake or request/4 was
    %% used): only then does it tickle and log out by itself.
    managed = false :: boolean(),
    port_exits = ibkr_oauth_restart:new() :: ibkr_oauth_restart:restarts(),
    outbox = ibkr_oauth_outbox:new() :: ibkr_oauth_outbox:outbox(),   % sign frames not yet written
    hs_t0 = 0 :: integer(),                     % native monotonic: the handshake's start (telemetry)
    counters = #{requests => 0, handshakes => 0, errors => 0,
                 port_restarts => 0, rate_limited => 0} :: #{atom() => non_neg_integer()},
    %% Streaming (see the "Streaming" section): the policy, the monitors of
    %% its subscribers, its one timer, the id of the ws_open it waits for.
    stream :: ibkr_oauth_stream:state(),
    stream_mons = #{} :: #{pid() => reference()},
    stream_timer :: {reference(), reference(), integer()} | undefined,  % timer, tag, due (ms)
    ws_open_id :: id() | undefined
}).
-type state() :: #st{}.

-define(INIT_TIMEOUT, 20000).   % generous: valgrind runs the port too
-define(START_TIMEOUT, 30000).
-define(LOGOUT_TIMEOUT, 2000).
-define(MAX_ID, 16#FFFFFFFFFFFFFFFF).
-define(PORT_MAX_TIMEOUT, 16#7FFFFFFF).   % ms, the largest the port accepts
-define(WATCHDOG_MARGIN, 2000).   % ms past a handshake step's own timeout
-define(META, #{domain => [ibkr_oauth], ibkr_oauth => session}).
-define(LST_PATH, <<"/oauth/live_session_token">>).
-define(SSODH_PATH, <<"/iserver/auth/ssodh/init">>).

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
    case ibkr_oauth_names:check(Name) of
        ok ->
            case ibkr_oauth_config:validate(Config) of
                {ok, V} -> proc_lib:start_link(?MODULE, init_it, [self(), Name, V],
                                               ?START_TIMEOUT);
                {error, _} = E -> E
            end;
        error -> {error, {badarg, name}}
    end.

%% @private proc_lib entry point.
-spec init_it(pid(), name() | undefined, ibkr_oauth_config:validated()) -> no_return().
init_it(Parent, Name, V) ->
    case ibkr_oauth_names:register(Name) of
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
                    ibkr_oauth_names:unregister(Name),
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

-spec init_session(ibkr_oauth_config:validated()) -> {ok, state()} | {error, term()}.
init_session(V) ->
    PortCfg = ibkr_oauth_config:to_port(V),
    case ibkr_oauth_port_io:open(PortCfg, ?INIT_TIMEOUT) of
        {ok, Port, OsPid} ->
            Lst = ibkr_oauth_lst:new(#{refresh_margin => 1000 * maps:get(refresh_margin, V),
                                       brokerage_session => maps:get(brokerage_session, V)}),
            St = arm_tickle(#st{port = Port, os_pid = OsPid,
                                secrets = fun() -> PortCfg end,
                                base_url = maps:get(base_url, V),
                                request_timeout = maps:get(request_timeout, V),
                                tickle_interval = maps:get(tickle_interval, V),
                                lst = Lst,
                                pacing = ibkr_oauth_pacing:new(maps:get(rate_limit, V)),
                                stream = ibkr_oauth_stream_io:new(V),
                                next_id = 2}),
            case maps:get(auto_authenticate, V) of
                true -> {ok, pump(with_lst(ibkr_oauth_lst:start_background(sys_now(), Lst), St))};
                false -> {ok, St}
            end;
        {error, _} = E -> E
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
    {Ref, R, St1} = new_req(From, {Method, PathQuery, Headers, Body}, Timeout, St),
    {noreply, pump(dispatch(Ref, add_req(Ref, R#req{port_opts = PortOpts}, St1)))};
handle_call(websocket_info, From, #st{lst = L} = St) ->
    case ibkr_oauth_keepalive:session(sys_now(), ibkr_oauth_lst:epoch(L),
                                      ibkr_oauth_lst:live(sys_now(), L), St#st.keepalive) of
        {ok, Session} ->
            {reply, {ok, websocket_info(Session, St)}, St};
        stale ->
            %% POST /tickle like request/4 would (handshake, retries, rate
            %% limit); finish/3 turns its answer into the reply.
            {Ref, R, St1} = new_req(From, {post, <<"/tickle">>, [], <<>>}, default, St),
            {noreply, pump(dispatch(Ref, add_req(Ref, R#req{websocket = true}, St1)))}
    end;
handle_call(authenticate, From, St) ->
    {noreply, pump(with_lst(ibkr_oauth_lst:authenticate(From, sys_now(), St#st.lst), St))};
handle_call({lst_complete, Answer}, From, St) ->
    {noreply, port_call({lst_complete, Answer}, {lst_complete, From}, From, St)};
handle_call({port, Cmd}, From, St) ->
    case ibkr_oauth_passthrough:check(Cmd, sys_now(), St#st.lst) of
        ok -> {noreply, port_call(Cmd, {call, From}, From, St)};
        lst_expired -> {reply, {error, lst_expired}, bump(errors, St)};
        badarg -> {reply, {error, {badarg, command}}, St}
    end;
handle_call({subscribe, Topic, Pid}, _From, St) when is_pid(Pid) ->
    case ibkr_oauth_stream:validate(Topic) of
        ok ->
            Sub = make_ref(),
            {reply, {ok, Sub}, stream_input({subscribe, Sub, Pid, Topic}, St)};
        {error, _} = E -> {reply, E, St}
    end;
handle_call({unsubscribe, Sub}, _From, St) ->
    {reply, ok, stream_input({unsubscribe, Sub}, St)};
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
        {ok, 0, {ws, Conn, E}} ->
            {noreply, stream_input({ws_event, Conn, E}, St)};
        {ok, 0, Event} ->
            ibkr_oauth_port_io:event(Event),
            {noreply, St};
        {ok, Id, Reply} ->
            port_reply(Id, Reply, complete_slot(Id, St));
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
    {noreply, pump(deadline(Ref, St))};
handle_info({retry, Ref}, #st{reqs = Reqs} = St) ->
    case Reqs of
        #{Ref := #req{where = {retry, _}} = R} ->
            {noreply, pump(dispatch(Ref, St#st{reqs = Reqs#{Ref := R#req{where = new}}}))};
        _ -> {noreply, St}
    end;
handle_info(renew, St) ->
    St1 = St#st{renew_timer = undefined},
    {noreply, pump(with_lst(ibkr_oauth_lst:timer(sys_now(), St1#st.lst), St1))};
handle_info(tickle, #st{lst = L} = St0) ->
    St = arm_tickle(St0#st{tickle_timer = undefined}),
    case ibkr_oauth_keepalive:wanted(St#st.managed, ibkr_oauth_lst:idle(L),
                                     ibkr_oauth_lst:usable(sys_now(), L)) of
        true -> {noreply, pump(queue_own(tickle, St))};
        false -> {noreply, St}
    end;
handle_info(rl_tick, St) ->
    {noreply, pump(St#st{rl_timer = undefined})};
handle_info({hs_watchdog, Id}, #st{pending = P} = St) ->
    %% The port did not answer a handshake step within its own timeout (it is
    %% stuck, e.g. stopped): end it as timed out rather than let
    %% authenticate/1 and every request wait behind it. Its late answer is
    %% dropped.
    case ibkr_oauth_lst:sent_id(St#st.lst) =:= Id andalso maps:take(Id, P) of
        {What, P1} ->
            ibkr_oauth_port:cancel(St#st.port, Id),
            handle_reply(What, {error, timeout}, St#st{pending = P1});
        _ -> {noreply, St}                        % that step ended
    end;
handle_info({stream_tick, Ref}, #st{stream_timer = {_, Ref, _}} = St) ->
    {noreply, stream_input(tick, St#st{stream_timer = undefined})};
handle_info({stream_tick, _}, St) ->
    {noreply, St};                                % a replaced timer
handle_info({{stream_http, What}, Reply}, St) ->
    {noreply, stream_input(ibkr_oauth_stream_io:http_input(What, Reply), St)};
handle_info({'DOWN', Ref, process, Pid, _}, #st{stream_mons = Mons} = St) ->
    case maps:find(Pid, Mons) of
        {ok, Ref} ->
            {noreply, stream_input({subscriber_down, Pid}, St#st{stream_mons = maps:remove(Pid, Mons)})};
        _ -> {noreply, St}
    end;
handle_info({Port, _}, St) when is_port(Port) ->
    {noreply, St};                                % an old port's leftovers
handle_info({'EXIT', _, _}, St) ->
    {noreply, St};                                % an old port, or a stray link
handle_info(Msg, St) ->
    logger:debug("ibkr_oauth: unexpected message ~p", [ibkr_oauth_redact:scrub(Msg)], ?META),
    {noreply, St}.

%% @private On stop: every waiting caller gets `{error, port_down}', then, if
%% an LST is held, `POST /logout' with a short bounded wait, then the port
%% is closed (the C program exits on EOF).
-spec terminate(term(), state()) -> ok.
terminate(Reason, St0) ->
    ibkr_oauth_stream_io:stopped(St0#st.stream, now_ms()),
    Logout = ibkr_oauth_lst:live(sys_now(), St0#st.lst) andalso St0#st.managed
        andalso not port_reason(Reason),
    St = fail_all(port_down, St0),
    case St#st.port of
        undefined -> ok;
        Port ->
            case Logout of
                true -> logout(St);
                false -> ok
            end,
            ibkr_oauth_port:close(Port),
            ibkr_oauth_port_io:flush(Port)
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
    ibkr_oauth_session_status:format_status(Status, fun summary/1).

%%====================================================================
%% Running the policies' actions
%%====================================================================

-spec with_lst({[ibkr_oauth_lst:action()], ibkr_oauth_lst:lst()}, state()) -> state().
with_lst({Actions, L}, St) -> run(Actions, St#st{lst = L}).

%% Carries out what a policy decided, in order.
-spec run([ibkr_oauth_lst:action()], state()) -> state().
run([], St) -> St;
run([A | As], St) -> run(As, act(A, St)).

-spec act(ibkr_oauth_lst:action(), state()) -> state().
act({reply, From, Reply}, St) ->
    gen_server:reply(From, Reply),
    St;
act({send, Ref}, #st{reqs = Reqs, pacing = P, fresh = F} = St) ->
    #{Ref := R} = Reqs,
    St#st{reqs = Reqs#{Ref := ibkr_oauth_request:enter_queue(R, now_us())},
          pacing = ibkr_oauth_pacing:add({req, Ref}, R#req.path, R#req.deadline, req, P),
          fresh = [Ref | F]};
act({fail, Ref, Error}, St) ->
    finish(Ref, Error, St);
act({job, lst}, St) ->
    queue_own(lst, St#st{hs_t0 = erlang:monotonic_time()});
act({job, Own}, St) ->
    queue_own(Own, St);
act({handshake_done, Result}, St) ->
    Meta = case Result of
               ok -> #{result => ok};
               {error, Why} -> #{result => error, reason => ibkr_oauth_redact:scrub(Why)}
           end,
    ibkr_oauth_telemetry:handshake_stop(St#st.hs_t0, Meta#{session => self()}),
    St;
act({renew_in, Ms}, St) ->
    cancel_timer(St#st.renew_timer),
    St#st{renew_timer = erlang:send_after(min(Ms, ?PORT_MAX_TIMEOUT), self(), renew)};
act(cancel_renew, St) ->
    cancel_timer(St#st.renew_timer),
    St#st{renew_timer = undefined};
act({log, Level, Format, Args, Meta}, St) ->
    log({Level, Format, Args, maps:merge(?META, Meta)}),
    St;
act({count, Key, N}, #st{counters = C} = St) ->
    St#st{counters = maps:update_with(Key, fun(V) -> V + N end, N, C)}.

%% The session's own jobs wait for the rate limit too, in front of requests.
-spec queue_own(own(), state()) -> state().
queue_own(Own, #st{pacing = P} = St) ->
    St#st{pacing = ibkr_oauth_pacing:add(Own, own_path(Own), infinity, own, P)}.

-spec own_path(own()) -> binary().
own_path(lst) -> ?LST_PATH;
own_path(ssodh) -> ?SSODH_PATH;
own_path(tickle) -> <<"/tickle">>.

%% Sends what the rate limit lets go, answers what it refuses and arms a
%% timer for the first slot to come free. Jobs that run may queue new ones
%% (a request that finds no usable LST queues a handshake): drain again.
-spec pump(state()) -> state().
pump(#st{pacing = P} = St) ->
    {Go, Refused, Wake, P1} = ibkr_oauth_pacing:drain(now_ms(), P),
    St1 = lists:foldl(fun({req, Ref}, Acc) -> finish(Ref, {error, rate_limited}, throttled(Ref, Acc)) end,
                      St#st{pacing = P1}, Refused),
    St2 = lists:foldl(fun({Job, Token}, Acc) -> run_job(Job, Token, Acc) end, St1, Go),
    case Go of
        [_ | _] -> pump(St2);
        [] ->
            St3 = lists:foldl(fun throttled/2, St2#st{fresh = []}, St2#st.fresh),
            cancel_timer(St3#st.rl_timer),
            case ibkr_oauth_pacing:size(St3#st.pacing) > 0 andalso Wake of
                Ms when is_integer(Ms) -> St3#st{rl_timer = erlang:send_after(Ms, self(), rl_tick)};
                _ -> St3#st{rl_timer = undefined}     % an answer will pump
            end
    end.

%% A request the rate limit did not let go at once is counted in
%% `rate_limited' (once, retries included).
-spec throttled(reference(), state()) -> state().
throttled(Ref, #st{reqs = Reqs} = St) ->
    case Reqs of
        #{Ref := #req{where = rl, throttled = false} = R} ->
            bump(rate_limited, St#st{reqs = Reqs#{Ref := R#req{throttled = true, held = true}}});
        #{Ref := #req{where = rl} = R} ->
            St#st{reqs = Reqs#{Ref := R#req{held = true}}};
        _ -> St
    end.

-spec run_job(job(), token(), state()) -> state().
run_job({req, Ref}, Token, #st{reqs = Reqs, lst = L} = St) ->
    #{Ref := R} = Reqs,
    St1 = St#st{reqs = Reqs#{Ref := leave_queue(R)}},
    case ibkr_oauth_lst:idle(L) andalso ibkr_oauth_lst:usable(sys_now(), L) of
        true -> transmit(Ref, Token, St1);
        %% The LST went stale while it waited: it waits for a handshake.
        false -> dispatch(Ref, release_token(Token, St1))
    end;
run_job(lst, Token, #st{lst = L} = St) ->
    case ibkr_oauth_lst:wants(lst, L) of
        true ->
            Cmd = {authenticate, #{timeout => handshake_timeout(St)}},
            own_sent(lst, port_send(Cmd, {own, lst}, Token, St));
        false -> release_token(Token, St)
    end;
run_job(ssodh, Token, #st{lst = L} = St) ->
    case ibkr_oauth_lst:wants(ssodh, L) of
        true ->
            Http = #{method => <<"POST">>,
                     url => <<(St#st.base_url)/binary, ?SSODH_PATH/binary>>,
                     headers => [{<<"content-type">>, <<"application/json">>}],
                     body => <<"{\"publish\":true,\"compete\":true}">>,
                     timeout => handshake_timeout(St), sign => true},
            own_sent(ssodh, port_send({http, Http}, {own, ssodh}, Token, St));
        false -> release_token(Token, St)
    end;
run_job(tickle, Token, #st{lst = L} = St) ->
    case ibkr_oauth_keepalive:wanted(St#st.managed, ibkr_oauth_lst:idle(L),
                                     ibkr_oauth_lst:usable(sys_now(), L)) of
        true ->
            Timeout = case St#st.tickle_interval of
                          infinity -> handshake_timeout(St);
                          I -> min(I, handshake_timeout(St))
                      end,
            Cmd = {http, ibkr_oauth_keepalive:command(St#st.base_url, Timeout)},
            element(3, port_send(Cmd, {own, tickle}, Token, St));
        false -> release_token(Token, St)
    end.

%% A handshake step went to the port: the LST policy knows its id, and a
%% watchdog ends it if the port leaves it unanswered 2 s past its own
%% timeout. (If the port is gone its exit message follows.)
-spec own_sent(lst | ssodh, {ok | error, term(), state()}) -> state().
own_sent(Kind, {ok, Id, St}) ->
    _ = erlang:send_after(handshake_timeout(St) + ?WATCHDOG_MARGIN, self(), {hs_watchdog, Id}),
    St#st{lst = ibkr_oauth_lst:sent(Kind, Id, St#st.lst), managed = true};
own_sent(_Kind, {error, _, St}) ->
    St.

%% The one way a command goes to the port with an id: `What' waits in
%% `pending' for the answer, and the rate-limit slots `Token' (if any) until
%% then.
-spec port_send(term(), pending(), token() | none, state()) ->
    {ok, id(), state()} | {error, term(), state()}.
port_send(Cmd, What, Token, St) ->
    {Id, St1} = next_id(St),
    case ibkr_oauth_port:send(St1#st.port, Id, Cmd) of
        ok ->
            Slots = case Token of
                        none -> St1#st.slots;
                        _ -> (St1#st.slots)#{Id => Token}
                    end,
            {ok, Id, St1#st{pending = (St1#st.pending)#{Id => What}, slots = Slots}};
        {error, _} = E ->
            {error, E, case Token of
                           none -> St1;
                           _ -> release_token(Token, St1)
                       end}
    end.

%%====================================================================
%% Port calls and replies
%%====================================================================

%% A pass-through command: the caller is answered when the port replies.
-spec port_call(term(), pending(), from(), state()) -> state().
port_call({sign, _, _, _} = Cmd, What, From, St) ->
    {Id, St1} = next_id(St),
    case ibkr_oauth_port:encode(Id, Cmd) of
        {ok, Bin} -> queue_frame(Id, Bin, St1#st{pending = (St1#st.pending)#{Id => What}});
        {error, _} = E -> gen_server:reply(From, E), bump(errors, St1)
    end;
port_call(Cmd, What, From, St) ->
    case port_send(Cmd, What, none, St) of
        {ok, _, St1} -> St1;
        {error, E, St1} -> gen_server:reply(From, E), bump(errors, St1)
    end.

%% Signing is the hot path: sign frames are batched while other calls wait
%% in the mailbox (ibkr_oauth_outbox says when to write).
-spec queue_frame(id(), binary(), state()) -> state().
queue_frame(Id, Bin, #st{outbox = Ob} = St) ->
    {message_queue_len, N} = process_info(self(), message_queue_len),
    case ibkr_oauth_outbox:add(Id, Bin, N > 0, Ob) of
        {flush, Ob1} -> flush_outbox(St#st{outbox = Ob1});
        {schedule, Ob1} -> self() ! flush_outbox, St#st{outbox = Ob1};
        {hold, Ob1} -> St#st{outbox = Ob1}
    end.

%% Writes the outbox; if the port is gone, its callers get port_down.
-spec flush_outbox(state()) -> state().
flush_outbox(#st{outbox = Ob, port = Port} = St) ->
    case ibkr_oauth_outbox:take(Ob) of
        empty -> St;
        {Data, Ids, Ob1} ->
            St1 = St#st{outbox = Ob1},
            try erlang:port_command(Port, Data) of
                true -> St1
            catch
                error:_ ->
                    lists:foldl(fun(Id, Acc) ->
                                        case maps:take(Id, Acc#st.pending) of
                                            {{call, From}, P} ->
                                                gen_server:reply(From, {error, port_down}),
                                                bump(errors, Acc#st{pending = P});
                                            _ -> Acc
                                        end
                                end, St1, Ids)
            end
    end.

-spec port_reply(id(), term(), state()) -> {noreply, state()} | {stop, term(), state()}.
port_reply(Id, Reply, #st{pending = P} = St) ->
    case maps:take(Id, P) of
        {What, P1} -> handle_reply(What, Reply, St#st{pending = P1});
        error -> {noreply, pump(St)}            % late: cancelled or timed out; a slot came free
    end.

-spec handle_reply(pending(), term(), state()) ->
    {noreply, state()} | {stop, term(), state()}.
handle_reply({call, From}, Reply, St) ->
    gen_server:reply(From, Reply),
    {noreply, pump_if_queued(count_reply(Reply, St))};
handle_reply({lst_complete, From}, Reply, St) ->
    St1 = case Reply of
              {ok, #{expires_at := E}} when is_integer(E) ->
                  with_lst(ibkr_oauth_lst:installed(E, sys_now(), St#st.lst), St);
              _ -> St
          end,
    gen_server:reply(From, Reply),
    {noreply, pump(count_reply(Reply, St1))};
handle_reply({req, Ref}, Reply, St) ->
    {noreply, pump(req_reply(Ref, Reply, St))};
handle_reply({own, lst}, Reply, #st{lst = L0} = St) ->
    St1 = pump(with_lst(ibkr_oauth_lst:lst_done(Reply, sys_now(), L0), St)),
    %% A new LST replacing one: the stream reconnects with the new session.
    case ibkr_oauth_lst:expires_at(L0) =/= undefined
        andalso ibkr_oauth_lst:epoch(St1#st.lst) > ibkr_oauth_lst:epoch(L0) of
        true -> {noreply, stream_input(lst_renewed, St1)};
        false -> {noreply, St1}
    end;
handle_reply({own, ssodh}, Reply, St) ->
    {noreply, pump(with_lst(ibkr_oauth_lst:ssodh_done(Reply, St#st.lst), St))};
handle_reply({own, tickle}, Reply, St0) ->
    St = stream_input(ibkr_oauth_stream_io:http_input(tickle, Reply), observe_tickle(Reply, St0)),
    case ibkr_oauth_keepalive:tickle_done(Reply) of
        ok -> {noreply, pump(St)};
        renew ->
            logger:notice("ibkr_oauth: POST /tickle answered 401, renewing the LST", [], ?META),
            {noreply, pump(with_lst(ibkr_oauth_lst:start_background(sys_now(), St#st.lst), St))};
        {warning, Format, Args} ->
            logger:warning("ibkr_oauth: " ++ Format, Args, ?META),
            {noreply, pump(St)}
    end;
handle_reply({stream, {ws_open, Id}}, Reply, #st{ws_open_id = Id} = St) ->
    {noreply, ws_open_reply(Reply, St)};
handle_reply({stream, {ws_open, _}}, _Reply, St) ->
    {noreply, St};                                % superseded: its socket was replaced
handle_reply({stream, _}, _Reply, St) ->
    {noreply, St};                                % ws_send/ws_close: the events tell
handle_reply(reinit, ok, St) ->
    logger:notice("ibkr_oauth: port restarted (os pid ~p)", [St#st.os_pid], ?META),
    {noreply, St};
handle_reply(reinit, Reply, St) ->
    Why = ibkr_oauth_redact:scrub_error(Reply),
    logger:error("ibkr_oauth: the restarted port refused the config: ~p", [Why], ?META),
    {stop, {shutdown, {port_reinit, Why}}, St}.

%% Sign answers are the hot path: drain only when something waits.
-spec pump_if_queued(state()) -> state().
pump_if_queued(#st{pacing = P} = St) ->
    case ibkr_oauth_pacing:size(P) of
        0 -> St;
        _ -> pump(St)
    end.

-spec count_reply(term(), state()) -> state().
count_reply({error, _}, St) -> bump(errors, St);
count_reply(_, St) -> St.

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

%% The port answered `Id' (or never will): its slots count from now.
-spec complete_slot(id(), state()) -> state().
complete_slot(Id, #st{slots = Slots, pacing = P} = St) ->
    case maps:take(Id, Slots) of
        {Token, Slots1} ->
            St#st{slots = Slots1, pacing = ibkr_oauth_pacing:complete(Token, now_ms(), P)};
        error -> St
    end.

%% A token that was not used after all.
-spec release_token(token(), state()) -> state().
release_token(Token, #st{pacing = P} = St) ->
    St#st{pacing = ibkr_oauth_pacing:release(Token, P)}.

%%====================================================================
%% request/4
%%====================================================================

%% Registers a request (its deadline timer runs from now).
-spec new_req(from() | {stream_http, tickle | ssodh}, tuple(), timeout() | default, state()) ->
    {reference(), #req{}, state()}.
new_req(From, Call, Timeout0, St) ->
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
    R0 = ibkr_oauth_request:new(From, Call, St#st.base_url, Deadline, now_us()),
    T0 = ibkr_oauth_telemetry:request_start((ibkr_oauth_request:start_meta(R0))#{session => self()}),
    {Ref, R0#req{timer = Timer, t0 = T0}, bump(requests, St)}.

-spec add_req(reference(), #req{}, state()) -> state().
add_req(Ref, R, St) -> St#st{reqs = (St#st.reqs)#{Ref => R}}.

%% The request wants to go: the LST policy says now (to the rate limit) or
%% after a handshake.
-spec dispatch(reference(), state()) -> state().
dispatch(Ref, #st{reqs = Reqs} = St) ->
    #{Ref := R} = Reqs,
    St1 = St#st{reqs = Reqs#{Ref := R#req{where = lst}}},
    with_lst(ibkr_oauth_lst:request(Ref, remaining(R#req.deadline), sys_now(), St#st.lst), St1).

%% The rate limit let the request go: send it, signed with the current LST.
-spec transmit(reference(), token(), state()) -> state().
transmit(Ref, Token, #st{reqs = Reqs} = St) ->
    #{Ref := R} = Reqs,
    case remaining(R#req.deadline) of
        Left when is_integer(Left), Left =< 0 -> finish(Ref, {error, timeout}, release_token(Token, St));
        Left ->
            Http = ibkr_oauth_request:command(R, port_timeout(Left)),
            case port_send({http, Http}, {req, Ref}, Token, St) of
                {ok, Id, St1} ->
                    R1 = R#req{where = {port, Id}, epoch = ibkr_oauth_lst:epoch(St1#st.lst),
                               attempt = R#req.attempt + 1},
                    St1#st{reqs = (St1#st.reqs)#{Ref := R1}, managed = true};
                {error, E, St1} -> finish(Ref, E, St1)
            end
    end.

%% The port answered an attempt: the retry policy decides.
-spec req_reply(reference(), term(), state()) -> state().
req_reply(Ref, Reply, #st{reqs = Reqs} = St) ->
    case Reqs of
        #{Ref := R0} ->
            Left = remaining(R0#req.deadline),
            {Decision, Retried} = ibkr_oauth_retry:decide(Reply, ibkr_oauth_request:attempt(R0, Left)),
            R = R0#req{where = new, retried = Retried},
            St1 = St#st{reqs = Reqs#{Ref := R}},
            case Decision of
                {finish, Final} ->
                    St2 = with_lst(ibkr_oauth_lst:answered(Final, R#req.epoch, sys_now(),
                                                           St1#st.lst), St1),
                    finish(Ref, Final, St2);
                _ ->
                    log(ibkr_oauth_request:retry_event(R, ibkr_oauth_retry:describe({Decision, Reply}),
                                                       Reply)),
                    retry(Decision, Ref, R, Left, St1)
            end;
        _ -> St
    end.

-spec retry(ibkr_oauth_retry:decision(), reference(), #req{}, integer() | infinity, state()) ->
    state().
retry(retry_auth, Ref, R, Left, #st{reqs = Reqs} = St) ->
    St1 = St#st{reqs = Reqs#{Ref := R#req{where = lst}}},
    with_lst(ibkr_oauth_lst:retry_auth(Ref, R#req.epoch, Left, sys_now(), St1#st.lst), St1);
retry({retry_in, Ms}, Ref, R, _Left, #st{reqs = Reqs} = St) ->
    TRef = erlang:send_after(Ms, self(), {retry, Ref}),
    St#st{reqs = Reqs#{Ref := R#req{where = {retry, TRef}}}};
retry(resend, Ref, _R, _Left, St) ->
    dispatch(Ref, St).

-spec log(ibkr_oauth_request:event()) -> ok.
log({Level, Format, Args, Meta}) ->
    %% The macro, so that a module level set for this module applies.
    ?LOG(Level, Format, Args, Meta).

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

%% Answers a request's caller and forgets the request, wherever it is.
-spec finish(reference(), term(), state()) -> state().
finish(Ref, Reply0, #st{reqs = Reqs} = St0) ->
    case maps:take(Ref, Reqs) of
        {#req{from = From, timer = T, where = Where} = R1, Reqs1} ->
            cancel_timer(T),
            {R, St1} = leave(Where, Ref, R1, St0#st{reqs = Reqs1}),
            St = case R#req.path of
                     <<"/tickle">> -> observe_tickle(Reply0, St1);
                     _ -> St1
                 end,
            Reply = case R#req.websocket of
                        false -> ibkr_oauth_request:reply(R, Reply0);
                        true -> websocket_reply(Reply0, St)
                    end,
            Done = case R#req.websocket of
                       false -> Reply;
                       true -> Reply0
                   end,
            log(ibkr_oauth_request:done_event(R, Done, now_us())),
            request_telemetry(R, Done),
            _ = case From of
                    %% the stream policy reads the answer itself (IBKR's
                    %% errors unclassified)
                    {stream_http, _} -> self() ! {From, Reply0};
                    _ -> gen_server:reply(From, Reply)
                end,
            count_reply(Reply, St);
        error -> St0
    end.

-spec request_telemetry(#req{}, term()) -> ok.
request_telemetry(R, Reply) ->
    case ibkr_oauth_request:end_telemetry(R, Reply) of
        {stop, M, Meta} -> ibkr_oauth_telemetry:request_stop(R#req.t0, M, Meta#{session => self()});
        {exception, M, Meta} ->
            ibkr_oauth_telemetry:request_exception(R#req.t0, M, Meta#{session => self()})
    end.

%% A request leaves the rate-limit queue.
-spec leave_queue(#req{}) -> #req{}.
leave_queue(R) ->
    Now = now_us(),
    case ibkr_oauth_request:queued_telemetry(R, Now) of
        none -> ok;
        {Ms, Meta} -> ibkr_oauth_telemetry:rate_limit_queued(Ms, Meta#{session => self()})
    end,
    ibkr_oauth_request:leave_queue(R, Now).

%% Takes a finished request out of where it waits.
-spec leave(new | lst | rl | {port, id()} | {retry, reference()}, reference(), #req{}, state()) ->
    {#req{}, state()}.
leave(rl, Ref, R, #st{pacing = P} = St) ->
    {leave_queue(R), St#st{pacing = ibkr_oauth_pacing:remove({req, Ref}, P)}};
leave(lst, Ref, R, #st{lst = L} = St) ->
    {R, St#st{lst = ibkr_oauth_lst:forget(Ref, L)}};
leave({retry, TRef}, _Ref, R, St) ->
    cancel_timer(TRef),
    {R, St};
leave(_, _Ref, R, St) ->
    {R, St}.

-spec remaining(integer() | infinity) -> integer() | infinity.
remaining(infinity) -> infinity;
remaining(Deadline) -> Deadline - now_ms().

-spec handshake_timeout(state()) -> pos_integer().
handshake_timeout(#st{request_timeout = infinity}) -> 60000;
handshake_timeout(#st{request_timeout = T}) -> min(T, ?PORT_MAX_TIMEOUT).

%% The port's own limit for one attempt: the time left before the caller's
%% deadline, or `infinity' (no limit) when that is more than the port takes
%% (2^31-1 ms): the session's own deadline timer ends it then. Never 0, which
%% at the port means "already expired".
-spec port_timeout(pos_integer() | infinity) -> pos_integer() | infinity.
port_timeout(Ms) when is_integer(Ms), Ms =< ?PORT_MAX_TIMEOUT -> Ms;
port_timeout(_) -> infinity.

%%====================================================================
%% Keep-alive, websocket, logout
%%====================================================================

-spec arm_tickle(state()) -> state().
arm_tickle(#st{tickle_interval = infinity} = St) -> St;
arm_tickle(#st{tickle_interval = I} = St) ->
    St#st{tickle_timer = erlang:send_after(I, self(), tickle)}.

-spec observe_tickle(term(), state()) -> state().
observe_tickle(Reply, #st{keepalive = KA, lst = L} = St) ->
    St#st{keepalive = ibkr_oauth_keepalive:observe(Reply, sys_now(), ibkr_oauth_lst:epoch(L), KA)}.

-spec websocket_info(binary(), state()) -> map().
websocket_info(Session, #st{base_url = Base, secrets = Secrets}) ->
    ibkr_oauth_keepalive:websocket_info(Session, Base, maps:get(access_token, Secrets())).

%% The answer to websocket_info/1 once its /tickle is back.
-spec websocket_reply(term(), state()) -> {ok, map()} | {error, term()}.
websocket_reply(Reply, #st{lst = L} = St) ->
    Now = sys_now(),
    Session = ibkr_oauth_keepalive:session(Now, ibkr_oauth_lst:epoch(L), ibkr_oauth_lst:live(Now, L),
                                           St#st.keepalive),
    case ibkr_oauth_keepalive:websocket_reply(Reply, Session) of
        {ok, S} -> {ok, websocket_info(S, St)};
        {error, _} = E -> E
    end.

%% Synchronous, bounded: only from terminate/2 (after fail_all/2, so nothing
%% is in flight). The rate limit holds here too: a short wait for a slot, or
%% no logout when the wait would be longer than the logout itself may take.
-spec logout(state()) -> ok.
logout(#st{port = Port, pacing = P} = St) ->
    Wait = case ibkr_oauth_pacing:try_acquire(<<"/logout">>, now_ms(), P) of
               {ok, _, _} -> 0;
               {wait, W} -> W
           end,
    case Wait =< ?LOGOUT_TIMEOUT of
        true ->
            timer:sleep(Wait),
            {Id, _} = next_id(St),
            ibkr_oauth_port_io:logout(Port, Id, St#st.base_url, ?LOGOUT_TIMEOUT);
        false ->
            logger:notice("ibkr_oauth: no POST /logout: the rate limit allows none for ~p ms",
                          [Wait], ?META)
    end.

%%====================================================================
%% Port exits
%%====================================================================

%% What the dead port held is lost (pass-through calls fail; requests go to
%% the retry policy); what the BEAM held waits for the new port.
-spec port_exited(term(), state()) -> {noreply, state()} | {stop, term(), state()}.
port_exited(Why, #st{port = OldPort, pending = P} = St0) ->
    logger:warning("ibkr_oauth: the port program exited (~p); ~b call(s) at the port lost",
                   [Why, map_size(P)], ?META#{event => port_exit}),
    ibkr_oauth_telemetry:port_exit(Why, St0#st.os_pid),
    ibkr_oauth_port:close(OldPort),
    St1 = lost_at_port(St0#st{port = undefined}),
    {Decision, Exits} = ibkr_oauth_restart:exited(now_ms(), St1#st.port_exits),
    St2 = bump(port_restarts, St1#st{port_exits = Exits}),
    case Decision of
        give_up ->
            logger:error("ibkr_oauth: more than ~b port exits in ~b s, stopping the session",
                         [ibkr_oauth_restart:max(), ibkr_oauth_restart:window() div 1000], ?META),
            {stop, {shutdown, port_restart_limit}, St2};
        restart ->
            case ibkr_oauth_port:open() of
                {ok, Port, OsPid} ->
                    Secrets = St2#st.secrets,
                    %% If the init cannot be sent, the port's exit message follows.
                    {_, _, St3} = port_send({init, Secrets()}, reinit, none,
                                            St2#st{port = Port, os_pid = OsPid,
                                                   ws_open_id = undefined}),
                    %% the stream reconnects through the new port
                    {noreply, pump(stream_input(port_down, St3))};
                {error, Reason} ->
                    logger:error("ibkr_oauth: cannot restart the port: ~p", [Reason], ?META),
                    {stop, {shutdown, {port_open, Reason}}, St2}
            end
    end.

-spec lost_at_port(state()) -> state().
lost_at_port(#st{pending = P, slots = Slots, pacing = Pacing0} = St0) ->
    Now = now_ms(),
    %% Its requests can no longer reach the server: their slots count from now.
    Pacing = lists:foldl(fun(Token, Acc) -> ibkr_oauth_pacing:complete(Token, Now, Acc) end,
                         Pacing0, maps:values(Slots)),
    St1 = St0#st{pending = #{}, slots = #{}, outbox = ibkr_oauth_outbox:new(),
                 keepalive = ibkr_oauth_keepalive:new(),
                 pacing = ibkr_oauth_pacing:remove(tickle, ibkr_oauth_pacing:remove(ssodh, Pacing))},
    St2 = with_lst(ibkr_oauth_lst:port_down(sys_now(), St1#st.lst), St1),
    maps:fold(fun(_Id, {req, Ref}, Acc) -> req_reply(Ref, {error, port_down}, Acc);
                 (_Id, {C, From}, Acc) when C =:= call; C =:= lst_complete ->
                      gen_server:reply(From, {error, port_down}),
                      bump(errors, Acc);
                 (_Id, _, Acc) -> Acc
              end, St2, P).

%% The session stops: every caller still waiting gets {error, Reason}.
-spec fail_all(term(), state()) -> state().
fail_all(Reason, #st{pending = P, reqs = Reqs} = St0) ->
    Error = {error, Reason},
    St1 = with_lst(ibkr_oauth_lst:abandon(Error, St0#st.lst), St0#st{pending = #{}}),
    [gen_server:reply(From, Error) || {C, From} <- maps:values(P), C =:= call orelse C =:= lst_complete],
    NCalls = length([x || {C, _} <- maps:values(P), C =:= call orelse C =:= lst_complete]),
    cancel_timer(St1#st.renew_timer),
    cancel_timer(St1#st.rl_timer),
    lists:foldl(fun(Ref, Acc) -> finish(Ref, Error, Acc) end,
                (bump_n(errors, NCalls, St1))#st{renew_timer = undefined, rl_timer = undefined,
                                                 outbox = ibkr_oauth_outbox:new()},
                maps:keys(Reqs)).

%%====================================================================
%% Streaming
%%====================================================================
%% The websocket streams of ibkr_oauth:subscribe/3. Every decision is made by
%% the pure ibkr_oauth_stream; this section feeds it its inputs (calls, port
%% events and replies, tickles, LST renewals, port restarts, monitors, its
%% timer) and carries out the actions it returns. Its tickles and
%% ssodh/init calls are ordinary requests (handshake first when needed, rate
%% limit, retries), answered to this process as {{stream_http, What}, Reply}
%% (finish/3).

-spec stream_input(ibkr_oauth_stream:input() | none, state()) -> state().
stream_input(none, St) -> St;
stream_input(Input, #st{stream = S} = St) ->
    {Actions, S1} = ibkr_oauth_stream:handle(Input, now_ms(), S),
    lists:foldl(fun stream_action/2, St#st{stream = S1}, Actions).

-spec stream_action(ibkr_oauth_stream:action(), state()) -> state().
stream_action({deliver, Pid, Sub, Msg}, St) ->
    Pid ! {ibkr_oauth, Sub, Msg},
    St;
stream_action({ws_send, Conn, Frame}, St) ->
    stream_port({ws_send, Conn, Frame}, ws_send, St);
stream_action({ws_open, Cookie}, St) ->
    Opts = ibkr_oauth_stream_io:ws_open(Cookie, handshake_timeout(St)),
    case port_send({ws_open, Opts}, {stream, {ws_open, 0}}, none, St) of
        {ok, Id, St1} ->
            %% the answer is matched to this id: an earlier ws_open's is stale
            St1#st{ws_open_id = Id, pending = (St1#st.pending)#{Id := {stream, {ws_open, Id}}}};
        {error, E, St1} -> ws_open_reply(E, St1)
    end;
stream_action({ws_close, Conn}, St) ->
    stream_port({ws_close, Conn}, ws_close, St);
stream_action(tickle, St) ->
    stream_http(tickle, St);
stream_action(ssodh_init, St) ->
    stream_http(ssodh, St);
stream_action({monitor, Pid}, #st{stream_mons = Mons} = St) ->
    St#st{stream_mons = Mons#{Pid => monitor(process, Pid)}};
stream_action({demonitor, Pid}, #st{stream_mons = Mons} = St) ->
    case maps:take(Pid, Mons) of
        {Ref, Mons1} -> demonitor(Ref, [flush]), St#st{stream_mons = Mons1};
        error -> St
    end;
stream_action({log, Level, Event, Meta}, St) ->
    logger:log(Level, "ibkr_oauth: stream ~s ~0p", [Event, ibkr_oauth_redact:scrub(Meta)],
               ?META#{event => Event}),
    St;
stream_action({timer, tick, Ms}, #st{stream_timer = Old} = St) ->
    Now = now_ms(),
    case ibkr_oauth_stream_io:rearm(Old, Now, Ms) of
        keep -> St;
        cancel -> cancel_stream_timer(Old), St#st{stream_timer = undefined};
        {arm, Due} ->
            cancel_stream_timer(Old),
            Ref = make_ref(),
            St#st{stream_timer = {erlang:send_after(Due - Now, self(), {stream_tick, Ref}), Ref, Due}}
    end.

-spec cancel_stream_timer(ibkr_oauth_stream_io:timer()) -> ok.
cancel_stream_timer({TRef, _, _}) -> cancel_timer(TRef);
cancel_stream_timer(undefined) -> ok.

%% A websocket command whose reply does not matter (the events tell).
-spec stream_port(term(), ws_send | ws_close, state()) -> state().
stream_port(Cmd, What, St) ->
    %% if the port is gone, port_down follows
    element(3, port_send(Cmd, {stream, What}, none, St)).

%% The answer to the latest ws_open; an earlier one's socket was replaced.
-spec ws_open_reply(term(), state()) -> state().
ws_open_reply(Reply, St) ->
    stream_input(ibkr_oauth_stream_io:ws_open_input(Reply), St#st{ws_open_id = undefined}).

%% A tickle or ssodh/init for the stream, as an internal request.
-spec stream_http(tickle | ssodh, state()) -> state().
stream_http(What, St) ->
    {Ref, R, St1} = new_req({stream_http, What}, ibkr_oauth_stream_io:call(What), default, St),
    pump(dispatch(Ref, add_req(Ref, R#req{port_opts = #{decode => json}}, St1))).

%%====================================================================
%% Helpers
%%====================================================================

-spec stats(state()) -> map().
stats(#st{pending = P, reqs = Reqs} = St) ->
    ibkr_oauth_session_status:stats(
      #{counters => St#st.counters, in_flight => map_size(P),
        rate_limit_queued => length([x || #req{where = rl} <- maps:values(Reqs)]),
        lst => St#st.lst, stream => St#st.stream, os_pid => St#st.os_pid}, sys_now()).

%% What stands for the state in sys:get_status/1 and crash reports.
-spec summary(term()) -> term().
summary(#st{} = St) ->
    ibkr_oauth_session_status:summary(stats(St), #{port => St#st.port, base_url => St#st.base_url,
                                                   lst => St#st.lst, keepalive => St#st.keepalive});
summary(Other) ->
    ibkr_oauth_redact:scrub(Other).

-spec bump(atom(), state()) -> state().
bump(Key, St) -> bump_n(Key, 1, St).

-spec bump_n(atom(), non_neg_integer(), state()) -> state().
bump_n(Key, N, #st{counters = C} = St) ->
    St#st{counters = maps:update_with(Key, fun(V) -> V + N end, N, C)}.

-spec cancel_timer(reference() | undefined) -> ok.
cancel_timer(undefined) -> ok;
cancel_timer(T) -> _ = erlang:cancel_timer(T, [{async, true}, {info, false}]), ok.

-spec now_ms() -> integer().
now_ms() -> erlang:monotonic_time(millisecond).

-spec now_us() -> integer().
now_us() -> erlang:monotonic_time(microsecond).

%% The LST's expiry is the server's wall clock: the LST policy works in
%% system time.
-spec sys_now() -> integer().
sys_now() -> erlang:system_time(millisecond).
