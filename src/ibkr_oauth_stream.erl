%% @doc The streaming policy: which IBKR websocket subscriptions exist, who
%% gets which message, and when to connect, tic, refresh, resubscribe or
%% reconnect. Pure: no processes, no clock, no randomness of its own (the
%% time comes with each input, the jitter from a seed given to {@link new/1}).
%% The session carries out the actions it returns.
%%
%% <h3>Inputs ({@link handle/3})</h3>
%% `{subscribe, Sub, Pid, Topic}' (Topic checked with {@link validate/1}
%% first), `{unsubscribe, Sub}', `{subscriber_down, Pid}',
%% `{tickle_result, {ok, #{session := Bin, iserver := boolean()}} | {error, R}}'
%% (every tickle of the session, asked for or not),
%% `{ssodh_result, ok | {error, R}}', `{ws_opened, Conn}',
%% `{ws_open_failed, Reason}', `{ws_event, Conn, Event}' (the port's
%% `{message, Term}', `{text, Bin}', `{closed, Reason}'), `port_down',
%% `lst_renewed', `tick' (the timer of the last `{timer, tick, Ms}' action),
%% `stop' (the session stops: every subscriber that is up gets
%% `{status, {down, session_stopped}}').
%%
%% <h3>Actions</h3>
%% `tickle', `ssodh_init', `{ws_open, #{cookie := Session}}',
%% `{ws_send, Conn, Frame}', `{ws_close, Conn}', `{deliver, Pid, Sub, Msg}'
%% (`Msg' is `{data, Map}' or `{status, up | {down, Reason}}'),
%% `{monitor, Pid}', `{demonitor, Pid}', `{log, Level, Event, Meta}' and,
%% last of every batch, `{timer, tick, Ms}' (`infinity': none; it replaces
%% the previous one).
%%
%% <h3>Policy</h3>
%% The socket opens lazily on the first subscription: tickle (the answer's
%% `session' is the cookie; the session authenticates first when needed),
%% `POST /iserver/auth/ssodh/init' when a topic needs the brokerage session
%% and the tickle says it is not open, then open. `tic' at once and every
%% 30 s, `POST /tickle' every 60 s (5 s after a failed one; any tickle of the
%% session counts); a socket without any frame for 25 s is dead. Topics go
%% out once the
%% server said `system' success, those that need the brokerage session
%% (smd, sor, str) once `sts' said `authenticated: true'; each subscriber then
%% gets `{status, up}'. A lost socket gives every subscriber that was up
%% `{status, {down, Reason}}' and a reconnect after an exponential backoff
%% with jitter (1 s doubling to 60 s, up to half as much again, capped), each
%% attempt re-tickling first; a good tickle while waiting connects at once.
%% A new LST, a new port, a tickle with another `session' than the socket's,
%% or `sts' saying `authenticated: false' / `competing: true' while a topic
%% needs the brokerage session: reconnect at once. Each `smd' is sent again
%% every `smd_refresh_interval' ms (IBKR ends it silently after 15 minutes).
%% Several subscribers of one topic share one IBKR subscription (for market
%% data, the union of their fields); the last one leaving (unsubscribe or
%% death) sends the unsubscribe frame, and the socket closes when no
%% subscription is left.
-module(ibkr_oauth_stream).

-export([new/1, validate/1, handle/3, stats/1, ibkr_subscriptions/1, subscriptions/1]).

-export_type([state/0, topic/0, input/0, action/0]).

-type topic() :: {market_data, pos_integer(), [binary()]}
               | orders | trades | pnl
               | {account_summary, binary()} | {account_ledger, binary()}
               | {raw, binary(), binary() | none, binary()}.
-type conn() :: pos_integer().
-type input() :: {subscribe, reference(), pid(), topic()}
               | {unsubscribe, reference()}
               | {subscriber_down, pid()}
               | {tickle_result, {ok, #{session := binary(), iserver := boolean()}} | {error, term()}}
               | {ssodh_result, ok | {error, term()}}
               | {ws_opened, conn()} | {ws_open_failed, term()}
               | {ws_event, conn(), term()}
               | port_down | lst_renewed | tick | stop.
-type action() :: tickle | ssodh_init
                | {ws_open, #{cookie := binary()}}
                | {ws_send, conn(), binary()} | {ws_close, conn()}
                | {deliver, pid(), reference(), {data, term()} | {status, up | {down, term()}}}
                | {monitor, pid()} | {demonitor, pid()}
                | {log, logger:level(), atom(), map()}
                | {timer, tick, non_neg_integer() | infinity}.

-define(TIC_MS, 30000).
-define(DEAD_MS, 25000).
%% REST /tickle while the socket is open (IBKR drops an HTTP session that is
%% not tickled for a few minutes, and the socket with it); sooner after a
%% failed one.
-define(TICKLE_MS, 60000).
-define(TICKLE_RETRY_MS, 5000).
-define(BACKOFF_MIN, 1000).
-define(BACKOFF_MAX, 60000).
%% A tickle, ssodh/init or open the session never answered: give up on it.
-define(STEP_MS, 60000).
-define(MAX_FIELDS, 256).
-define(MAX_FRAME, 8192).
-define(ISERVER, [<<"smd">>, <<"smh">>, <<"sbd">>, <<"sor">>, <<"str">>]).

%% One IBKR-side subscription (key: its route topic).
-record(ib, {topic :: topic(),
             frame :: binary(),
             unsub :: binary() | none,
             iserver :: boolean(),
             smd :: boolean(),
             subs = [] :: [reference()],           % oldest first
             sent = false :: boolean(),
             refresh_at :: integer() | undefined}).

-record(sub, {pid :: pid(), route :: binary(), topic :: topic(), up = false :: boolean()}).

-record(st, {subs = #{} :: #{reference() => #sub{}},
             ib = #{} :: #{binary() => #ib{}},
             pids = #{} :: #{pid() => [reference()]},
             %% idle | tickling | ssodh | opening | open | backoff
             sock = idle :: idle | tickling | ssodh | opening | open | backoff,
             deadline :: integer() | undefined,  % of the step / the backoff
             conn :: conn() | undefined,
             session :: binary() | undefined,
             ready = false :: boolean(),          % `system' success seen
             iserver = false :: boolean(),        % `sts' authenticated seen
             sts :: boolean() | undefined,        % the last sts said authenticated
             ssodh_tried = false :: boolean(),
             last_rx = 0 :: integer(),
             next_tic = 0 :: integer(),
             next_tickle = 0 :: integer(),        % while open
             attempt = 0 :: non_neg_integer(),
             smd_refresh :: pos_integer(),
             rand :: rand:state(),
             counters = #{} :: #{atom() => non_neg_integer()}}).

-opaque state() :: #st{}.
-type result() :: {[action()], #st{}}.

%%====================================================================
%% API
%%====================================================================

%% @doc A policy with no subscription. `smd_refresh_interval' (ms, default
%% 540000) and `seed' (for the jitter, any term accepted by
%% `rand:seed_s(exsss, Seed)').
-spec new(#{smd_refresh_interval => pos_integer(), seed => term()}) -> state().
new(Opts) ->
    Seed = maps:get(seed, Opts, {1, 2, 3}),
    #st{smd_refresh = maps:get(smd_refresh_interval, Opts, 540000),
        rand = rand:seed_s(exsss, Seed)}.

%% @doc `ok' when `Topic' is a topic this module can build frames for:
%% conids positive integers, fields 1..256 of `[A-Za-z0-9_]{1,32}',
%% accounts `[A-Za-z0-9._-]{1,64}', raw frames UTF-8 of 1..8192 bytes, raw
%% routes 1..256 bytes. Nothing else reaches a frame, so no `+', `{' or
%% quote can be smuggled into one.
-spec validate(term()) -> ok | {error, {badarg, topic}}.
validate(Topic) ->
    case spec(Topic) of
        {ok, _} -> ok;
        error -> {error, {badarg, topic}}
    end.

%% @doc One input -> the actions to carry out, in order, and the new state.
-spec handle(input(), integer(), state()) -> {[action()], state()}.
handle(Input, Now, St) ->
    {Actions, St1} = input(Input, Now, St),
    {Actions ++ [{timer, tick, next_timeout(Now, St1)}], St1}.

%% @doc Counters and gauges for `stats/1' of the session.
-spec stats(state()) -> map().
stats(#st{subs = Subs, ib = Ib, sock = Sock, counters = C}) ->
    Count = fun(K) -> maps:get(K, C, 0) end,
    #{stream_subscriptions => map_size(Subs),
      stream_topics => map_size(Ib),
      stream_state => case Sock of open -> up; idle -> idle; _ -> connecting end,
      stream_connects => Count(connects),
      stream_downs => Count(downs),
      stream_messages => Count(messages),
      stream_delivered => Count(delivered),
      stream_subscribe_frames => Count(subscribe_frames),
      stream_smd_refreshes => Count(smd_refreshes)}.

%% @doc The route topics subscribed at IBKR on the current socket.
-spec ibkr_subscriptions(state()) -> [binary()].
ibkr_subscriptions(#st{ib = Ib}) ->
    lists:sort([R || {R, #ib{sent = true}} <- maps:to_list(Ib)]).

%% @doc Sub => {Pid, Topic, up | down}.
-spec subscriptions(state()) -> #{reference() => {pid(), topic(), up | down}}.
subscriptions(#st{subs = Subs}) ->
    maps:map(fun(_, #sub{pid = P, topic = T, up = Up}) ->
                     {P, T, case Up of true -> up; false -> down end}
             end, Subs).

%%====================================================================
%% Topics
%%====================================================================

%% -> {ok, {Route, Frame, Unsub, Iserver, Smd}} | error
-spec spec(term()) -> {ok, {binary(), binary(), binary() | none, boolean(), boolean()}} | error.
spec({market_data, Conid, Fields}) when is_integer(Conid), Conid > 0, Conid < 1 bsl 62,
                                        is_list(Fields), Fields =/= [],
                                        length(Fields) =< ?MAX_FIELDS ->
    case lists:all(fun field/1, Fields) of
        true ->
            C = integer_to_binary(Conid),
            {ok, {<<"smd+", C/binary>>, smd_frame(C, Fields), <<"umd+", C/binary, "+{}">>, true, true}};
        false -> error
    end;
spec(orders) -> {ok, {<<"sor">>, <<"sor+{}">>, <<"uor+{}">>, true, false}};
spec(trades) -> {ok, {<<"str">>, <<"str+{}">>, <<"utr{}">>, true, false}};
spec(pnl) -> {ok, {<<"spl">>, <<"spl{}">>, <<"upl{}">>, false, false}};
spec({account_summary, A}) -> account(<<"ssd">>, <<"usd">>, A);
spec({account_ledger, A}) -> account(<<"sld">>, <<"uld">>, A);
spec({raw, Frame, Unsub, Route}) ->
    case text(Frame, ?MAX_FRAME) andalso (Unsub =:= none orelse text(Unsub, ?MAX_FRAME))
        andalso text(Route, 256) of
        true ->
            Kind = binary:part(Frame, 0, min(3, byte_size(Frame))),
            {ok, {Route, Frame, Unsub, lists:member(Kind, ?ISERVER), Kind =:= <<"smd">>}};
        false -> error
    end;
spec(_) -> error.

-spec account(binary(), binary(), term()) -> {ok, {binary(), binary(), binary(), false, false}} | error.
account(Sub, Unsub, A) when is_binary(A) ->
    case re:run(A, <<"^[A-Za-z0-9._-]{1,64}$">>, [{capture, none}]) of
        match -> {ok, {<<Sub/binary, "+", A/binary>>, <<Sub/binary, "+", A/binary, "+{}">>,
                       <<Unsub/binary, "+", A/binary, "+{}">>, false, false}};
        nomatch -> error
    end;
account(_, _, _) -> error.

-spec field(term()) -> boolean().
field(F) when is_binary(F) -> re:run(F, <<"^[A-Za-z0-9_]{1,32}$">>, [{capture, none}]) =:= match;
field(_) -> false.

-spec text(term(), pos_integer()) -> boolean().
text(B, Max) when is_binary(B), byte_size(B) > 0, byte_size(B) =< Max ->
    unicode:characters_to_binary(B) =:= B;
text(_, _) -> false.

-spec smd_frame(binary(), [binary()]) -> binary().
smd_frame(C, Fields) ->
    Quoted = lists:join(<<",">>, [<<$", F/binary, $">> || F <- Fields]),
    iolist_to_binary([<<"smd+">>, C, <<"+{\"fields\":[">>, Quoted, <<"]}">>]).

%% The topic an IBKR subscription is sent with: for market data, one with
%% the union of its subscribers' fields (in the order first asked for).
-spec merged_topic(binary(), [reference()], #st{}) -> topic().
merged_topic(Route, Subs, #st{subs = All}) ->
    Topics = [T || S <- Subs, #sub{topic = T} <- [maps:get(S, All)]],
    case Topics of
        [{market_data, Conid, _} | _] ->
            Fields = lists:foldl(fun({market_data, _, Fs}, Acc) -> Acc ++ (Fs -- Acc);
                                    (_, Acc) -> Acc
                                 end, [], Topics),
            {market_data, Conid, Fields};
        [T | _] -> T;
        [] -> error({no_subscribers, Route})
    end.

%%====================================================================
%% Inputs
%%====================================================================

-spec input(input(), integer(), #st{}) -> result().
input({subscribe, Sub, Pid, Topic}, Now, St) ->
    case {spec(Topic), maps:is_key(Sub, St#st.subs)} of
        {{ok, Spec}, false} -> subscribe(Sub, Pid, Topic, Spec, Now, St);
        _ -> {[], St}
    end;
input({unsubscribe, Sub}, Now, St) ->
    unsubscribe([Sub], Now, St);
input({subscriber_down, Pid}, Now, St = #st{pids = Pids}) ->
    unsubscribe(maps:get(Pid, Pids, []), Now, St);
input({tickle_result, Result}, Now, St) ->
    tickle_result(Result, Now, St);
input({ssodh_result, _}, Now, St = #st{sock = ssodh}) ->
    {[tickle], step(tickling, Now, St#st{ssodh_tried = true})};
input({ssodh_result, _}, _Now, St) ->
    {[], St};
input({ws_opened, Conn}, Now, St = #st{sock = opening}) ->
    St1 = bump(connects, St#st{sock = open, conn = Conn, deadline = undefined, ready = false,
                               iserver = false, sts = undefined, last_rx = Now,
                               next_tic = Now + ?TIC_MS, next_tickle = Now + ?TICKLE_MS}),
    {[{ws_send, Conn, <<"tic">>}], St1};
input({ws_opened, Conn}, _Now, St) ->
    {[{ws_close, Conn}], St};                        % a late answer: not wanted any more
input({ws_open_failed, Reason}, Now, St = #st{sock = opening}) ->
    backoff({open_failed, Reason}, Now, St);
input({ws_open_failed, _}, _Now, St) ->
    {[], St};
input({ws_event, Conn, E}, Now, St = #st{sock = open, conn = Conn}) ->
    event(E, Now, St#st{last_rx = Now});
input({ws_event, _, _}, _Now, St) ->
    {[], St};
input(port_down, Now, St = #st{sock = Sock}) when Sock =:= open; Sock =:= opening ->
    {A, St1} = down(port_down, St#st{conn = undefined}),
    {A2, St2} = connect(Now, St1),
    {A ++ A2, St2};
input(port_down, _Now, St) ->
    {[], St};
input(lst_renewed, Now, St = #st{sock = Sock}) when Sock =/= idle ->
    {A, St1} = down(lst_renewed, St),
    {A2, St2} = connect(Now, St1),
    {A ++ A2, St2};
input(lst_renewed, _Now, St) ->
    {[], St};
input(tick, Now, St) ->
    tick(Now, St);
input(stop, _Now, St) ->
    {A, St1} = down(session_stopped, St#st{conn = undefined}),
    {[D || D = {deliver, _, _, _} <- A], idle(St1)}.

%%--------------------------------------------------------------------
%% Subscribers
%%--------------------------------------------------------------------

-spec subscribe(reference(), pid(), topic(), tuple(), integer(), #st{}) -> result().
subscribe(Sub, Pid, Topic, {Route, Frame, Unsub, Iserver, Smd}, Now,
          St0 = #st{subs = Subs, pids = Pids, ib = Ib}) ->
    Mon = case maps:is_key(Pid, Pids) of
              true -> [];
              false -> [{monitor, Pid}]
          end,
    St = St0#st{subs = Subs#{Sub => #sub{pid = Pid, route = Route, topic = Topic}},
                pids = Pids#{Pid => [Sub | maps:get(Pid, Pids, [])]}},
    case maps:find(Route, Ib) of
        {ok, I = #ib{subs = Others}} ->
            join(Sub, Route, I#ib{subs = Others ++ [Sub]}, Mon, Now, St);
        error ->
            I = #ib{topic = Topic, frame = Frame, unsub = Unsub, iserver = Iserver, smd = Smd,
                    subs = [Sub]},
            St1 = St#st{ib = Ib#{Route => I}},
            case St1#st.sock of
                idle ->
                    {A, St2} = connect(Now, St1),
                    {Mon ++ A, St2};
                open when Iserver, St1#st.sts =:= false ->
                    %% this socket was opened without the brokerage session
                    {A, St2} = down(brokerage_needed, St1),
                    {A2, St3} = connect(Now, St2),
                    {Mon ++ A ++ A2, St3};
                open ->
                    {A, St2} = send_ready(Now, St1),
                    {Mon ++ A, St2};
                _ ->
                    {Mon, St1}
            end
    end.

%% Another subscriber of an existing IBKR subscription.
-spec join(reference(), binary(), #ib{}, [action()], integer(), #st{}) -> result().
join(Sub, Route, I = #ib{sent = Sent, topic = Old}, Mon, Now, St = #st{ib = Ib, conn = Conn}) ->
    New = merged_topic(Route, I#ib.subs, St),
    {ok, {_, Frame, _, _, _}} = spec(New),
    I1 = I#ib{topic = New, frame = Frame},
    case Sent of
        true when New =/= Old ->
            I2 = I1#ib{refresh_at = refresh_at(I1, Now, St)},
            St1 = bump(subscribe_frames, St#st{ib = Ib#{Route => I2}}),
            {A, St2} = set_up([Sub], St1),
            {Mon ++ [{ws_send, Conn, Frame} | A], St2};
        true ->
            {A, St1} = set_up([Sub], St#st{ib = Ib#{Route => I1}}),
            {Mon ++ A, St1};
        false ->
            {Mon, St#st{ib = Ib#{Route => I1}}}
    end.

-spec unsubscribe([reference()], integer(), #st{}) -> result().
unsubscribe(Subs, Now, St0) ->
    {Actions, St} = lists:foldl(fun(Sub, {Acc, S}) ->
                                        {A, S1} = remove(Sub, S),
                                        {Acc ++ A, S1}
                                end, {[], St0}, Subs),
    case map_size(St#st.subs) of
        0 -> {Actions ++ close_idle(St), (idle(St))#st{deadline = undefined}};
        _ -> _ = Now, {Actions, St}
    end.

-spec remove(reference(), #st{}) -> result().
remove(Sub, St = #st{subs = Subs, pids = Pids, ib = Ib, conn = Conn, sock = Sock}) ->
    case maps:take(Sub, Subs) of
        error -> {[], St};
        {#sub{pid = Pid, route = Route}, Subs1} ->
            {Demon, Pids1} = case lists:delete(Sub, maps:get(Pid, Pids)) of
                                 [] -> {[{demonitor, Pid}], maps:remove(Pid, Pids)};
                                 Left -> {[], Pids#{Pid := Left}}
                             end,
            St1 = St#st{subs = Subs1, pids = Pids1},
            I = #ib{subs = Others} = maps:get(Route, Ib),
            case lists:delete(Sub, Others) of
                [] ->
                    Send = case I of
                               #ib{sent = true, unsub = U} when U =/= none, Sock =:= open ->
                                   [{ws_send, Conn, U}];
                               _ -> []
                           end,
                    {Demon ++ Send, St1#st{ib = maps:remove(Route, Ib)}};
                Rest ->
                    %% the frame follows the fields still wanted at the next (re)send
                    I1 = I#ib{subs = Rest},
                    New = merged_topic(Route, Rest, St1),
                    {ok, {_, Frame, _, _, _}} = spec(New),
                    {Demon, St1#st{ib = Ib#{Route := I1#ib{topic = New, frame = Frame}}}}
            end
    end.

-spec close_idle(#st{}) -> [action()].
close_idle(#st{sock = open, conn = Conn}) -> [{ws_close, Conn}];
close_idle(_) -> [].

-spec idle(#st{}) -> #st{}.
idle(St) ->
    St#st{sock = idle, conn = undefined, session = undefined, ready = false, iserver = false,
          sts = undefined, attempt = 0}.

%%--------------------------------------------------------------------
%% Connecting
%%--------------------------------------------------------------------

%% Start (or restart) connecting: tickle first, the session may have changed.
-spec connect(integer(), #st{}) -> result().
connect(_Now, St = #st{subs = Subs}) when map_size(Subs) =:= 0 ->
    {[], idle(St)};
connect(Now, St) ->
    {[tickle], step(tickling, Now, St#st{ssodh_tried = false, conn = undefined})}.

-spec step(tickling | ssodh | opening, integer(), #st{}) -> #st{}.
step(Sock, Now, St) ->
    St#st{sock = Sock, deadline = Now + ?STEP_MS}.

-spec tickle_result(term(), integer(), #st{}) -> result().
tickle_result({ok, #{session := Session} = T}, Now, St = #st{sock = Sock})
  when Sock =:= tickling; Sock =:= backoff ->
    Iserver = maps:get(iserver, T, true),
    case needs_iserver(St) andalso not Iserver andalso not St#st.ssodh_tried of
        true -> {[ssodh_init], step(ssodh, Now, St)};
        false -> {[{ws_open, #{cookie => Session}}], step(opening, Now, St#st{session = Session})}
    end;
tickle_result({ok, #{session := Session}}, Now, St = #st{sock = open, session = Old})
  when Session =/= Old ->
    {A, St1} = down(session_changed, St),
    {A2, St2} = connect(Now, St1),
    {A ++ A2, St2};
tickle_result({ok, _}, Now, St = #st{sock = open}) ->
    {[], St#st{next_tickle = Now + ?TICKLE_MS}};
tickle_result({error, _}, Now, St = #st{sock = open}) ->
    {[], St#st{next_tickle = Now + ?TICKLE_RETRY_MS}};
tickle_result({error, Reason}, Now, St = #st{sock = tickling}) ->
    backoff({tickle, Reason}, Now, St);
tickle_result(_, _Now, St) ->
    {[], St}.

-spec needs_iserver(#st{}) -> boolean().
needs_iserver(#st{ib = Ib}) ->
    lists:any(fun(#ib{iserver = I}) -> I end, maps:values(Ib)).

%% Wait before the next attempt: 1 s doubling to 60 s, plus up to half as
%% much again, capped at 60 s.
-spec backoff(term(), integer(), #st{}) -> result().
backoff(Reason, Now, St = #st{attempt = N, rand = R}) ->
    Base = min(?BACKOFF_MAX, ?BACKOFF_MIN bsl min(N, 16)),
    {J, R1} = rand:uniform_s(Base div 2 + 1, R),
    Delay = min(?BACKOFF_MAX, Base + J - 1),
    Log = {log, warning, stream_reconnect_wait, #{reason => Reason, delay_ms => Delay, attempt => N + 1}},
    {[Log], St#st{sock = backoff, deadline = Now + Delay, attempt = N + 1, rand = R1,
                  conn = undefined}}.

%%--------------------------------------------------------------------
%% The open socket
%%--------------------------------------------------------------------

-spec event(term(), integer(), #st{}) -> result().
event({message, #{<<"topic">> := Topic} = M}, Now, St) ->
    message(Topic, M, Now, bump(messages, St));
event({message, _}, _Now, St) ->
    {[], bump(messages, St)};
event({text, _}, _Now, St) ->
    {[], St};
event({closed, Reason}, Now, St) ->
    {A, St1} = down({closed, Reason}, St#st{conn = undefined}),
    {A2, St2} = backoff({closed, Reason}, Now, St1),
    {A ++ A2, St2};
event(_, _Now, St) ->
    {[], St}.

-spec message(binary(), map(), integer(), #st{}) -> result().
message(<<"system">>, #{<<"success">> := _}, Now, St) ->
    send_ready(Now, St#st{ready = true, attempt = 0});
message(<<"sts">>, #{<<"args">> := Args}, Now, St) when is_map(Args) ->
    Auth = maps:get(<<"authenticated">>, Args, undefined),
    Competing = maps:get(<<"competing">>, Args, false),
    case Auth of
        true when Competing =/= true ->
            send_ready(Now, St#st{iserver = true, sts = true});
        _ when Auth =:= true; Auth =:= false ->
            case needs_iserver(St) of
                true ->
                    Why = case Competing of true -> competing; _ -> not_authenticated end,
                    {A, St1} = down({sts, Why}, St),
                    {A2, St2} = backoff({sts, Why}, Now, St1),
                    {A ++ A2, St2};
                false ->
                    {[], St#st{iserver = false, sts = false}}
            end;
        _ ->
            {[], St}
    end;
message(Route, M, _Now, St = #st{ib = Ib}) ->
    case maps:find(Route, Ib) of
        {ok, #ib{sent = true, subs = Subs}} ->
            All = St#st.subs,
            A = [{deliver, P, S, {data, M}} || S <- Subs, #sub{pid = P} <- [maps:get(S, All)]],
            {A, bump(delivered, length(A), St)};
        _ ->
            {[], St}
    end.

%% Send every IBKR subscription the socket is ready for; their subscribers
%% are up.
-spec send_ready(integer(), #st{}) -> result().
send_ready(Now, St = #st{ib = Ib, conn = Conn, ready = Ready, iserver = Iserver}) ->
    Due = lists:sort([{R, I} || {R, I = #ib{sent = false, iserver = Needs}} <- maps:to_list(Ib),
                                Ready, (not Needs) orelse Iserver]),
    lists:foldl(fun({Route, I = #ib{frame = Frame, subs = Subs}}, {Acc, S}) ->
                        I1 = I#ib{sent = true, refresh_at = refresh_at(I, Now, S)},
                        S1 = bump(subscribe_frames, S#st{ib = (S#st.ib)#{Route := I1}}),
                        {A, S2} = set_up(Subs, S1),
                        {Acc ++ [{ws_send, Conn, Frame} | A], S2}
                end, {[], St}, Due).

-spec refresh_at(#ib{}, integer(), #st{}) -> integer() | undefined.
refresh_at(#ib{smd = true}, Now, #st{smd_refresh = R}) -> Now + R;
refresh_at(_, _Now, _St) -> undefined.

-spec set_up([reference()], #st{}) -> result().
set_up(Subs, St = #st{subs = All}) ->
    lists:foldl(fun(S, {Acc, St0 = #st{subs = A0}}) ->
                        case maps:get(S, A0) of
                            #sub{up = true} -> {Acc, St0};
                            Sub = #sub{pid = P} ->
                                {Acc ++ [{deliver, P, S, {status, up}}],
                                 St0#st{subs = A0#{S := Sub#sub{up = true}}}}
                        end
                end, {[], St#st{subs = All}}, Subs).

%% The socket is gone (or going): close it if still open, every subscriber
%% that was up is down, nothing is subscribed at IBKR any more.
-spec down(term(), #st{}) -> result().
down(Reason, St = #st{subs = Subs, ib = Ib, conn = Conn}) ->
    Close = case Conn of
                undefined -> [];
                _ -> [{ws_close, Conn}]
            end,
    Downs = [{deliver, P, S, {status, {down, Reason}}}
             || {S, #sub{pid = P, up = true}} <- lists:sort(maps:to_list(Subs))],
    Subs1 = maps:map(fun(_, Sub) -> Sub#sub{up = false} end, Subs),
    Ib1 = maps:map(fun(_, I) -> I#ib{sent = false, refresh_at = undefined} end, Ib),
    Log = {log, warning, stream_down, #{reason => Reason, subscribers => length(Downs)}},
    {Close ++ [Log | Downs],
     bump(downs, St#st{subs = Subs1, ib = Ib1, conn = undefined, ready = false, iserver = false,
                       sts = undefined})}.

%%--------------------------------------------------------------------
%% Time
%%--------------------------------------------------------------------

-spec tick(integer(), #st{}) -> result().
tick(Now, St = #st{sock = open, last_rx = Rx}) when Now - Rx >= ?DEAD_MS ->
    {A, St1} = down(no_heartbeat, St),
    {A2, St2} = backoff(no_heartbeat, Now, St1),
    {A ++ A2, St2};
tick(Now, St = #st{sock = open, conn = Conn, next_tic = T}) ->
    {Tic, St1} = case Now >= T of
                     true -> {[{ws_send, Conn, <<"tic">>}], St#st{next_tic = Now + ?TIC_MS}};
                     false -> {[], St}
                 end,
    %% a tickle whose answer never comes is sent again after a while
    {Tickle, St2} = case St1 of
                        #st{next_tickle = K} when Now >= K ->
                            {[tickle], St1#st{next_tickle = Now + ?STEP_MS}};
                        _ -> {[], St1}
                    end,
    {Refresh, St3} = refresh(Now, St2),
    {Tic ++ Tickle ++ Refresh, St3};
tick(Now, St = #st{sock = backoff, deadline = D}) when Now >= D ->
    connect(Now, St);
tick(Now, St = #st{sock = Sock, deadline = D}) when Sock =/= idle, Sock =/= backoff,
                                                    is_integer(D), Now >= D ->
    backoff({step_timeout, Sock}, Now, St);
tick(_Now, St) ->
    {[], St}.

%% Re-send each smd whose refresh time has come.
-spec refresh(integer(), #st{}) -> result().
refresh(Now, St = #st{ib = Ib, conn = Conn}) ->
    Due = lists:sort([R || {R, #ib{sent = true, refresh_at = At}} <- maps:to_list(Ib),
                           is_integer(At), At =< Now]),
    lists:foldl(fun(Route, {Acc, S = #st{ib = I0}}) ->
                        I = #ib{frame = Frame} = maps:get(Route, I0),
                        S1 = bump(smd_refreshes, S#st{ib = I0#{Route := I#ib{refresh_at = refresh_at(I, Now, S)}}}),
                        {Acc ++ [{ws_send, Conn, Frame}], S1}
                end, {[], St}, Due).

-spec next_timeout(integer(), #st{}) -> non_neg_integer() | infinity.
next_timeout(Now, #st{sock = open, last_rx = Rx, next_tic = T, next_tickle = K, ib = Ib}) ->
    Refresh = [At || #ib{sent = true, refresh_at = At} <- maps:values(Ib), is_integer(At)],
    max(0, lists:min([Rx + ?DEAD_MS, T, K | Refresh]) - Now);
next_timeout(Now, #st{sock = Sock, deadline = D}) when Sock =/= idle, is_integer(D) ->
    max(0, D - Now);
next_timeout(_Now, _St) ->
    infinity.

-spec bump(atom(), #st{}) -> #st{}.
bump(K, St) -> bump(K, 1, St).

-spec bump(atom(), non_neg_integer(), #st{}) -> #st{}.
bump(K, N, St = #st{counters = C}) ->
    St#st{counters = C#{K => maps:get(K, C, 0) + N}}.
