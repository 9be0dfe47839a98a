%% The fake IBKR websocket (`wss://localhost:P/v1/api/ws'), served by
%% ibkr_fake_server's TLS listener: a GET of `<base path>/ws' with an HTTP
%% Upgrade is checked here (upgrade/2, called by the server) and, when
%% accepted, the connection process runs serve/4 for the rest of its life.
%%
%% Strict like IBKR: the query must carry `oauth_token=<access token>', the
%% request `Cookie: api=<session>' (the `session' POST /tickle answers; see
%% rotate_session/0) and a User-Agent; else 401 (400 for a bad upgrade).
%% Client frames must be masked (else close 1002); fragmented messages,
%% ping/pong and the close handshake are handled; a message above
%% `max_message' bytes is refused with close 1009.
%%
%% After the upgrade the server speaks first: `system' (success), `act' and
%% `sts' (authenticated = the brokerage session is open), then
%% `{"topic":"system","hb":Ms}' every `hb_ms'. A socket that sends no `tic'
%% for `tic_timeout_ms' (from the open, then from each tic) is closed
%% (close 1000 "idle"). Text frames:
%%   tic                       -> {"topic":"tic","alive":true,"id":Session,...}
%%   smd+CONID+{"fields":[..]} -> a tick at once, then one every `smd_rate_ms'
%%                                while subscribed; the subscription ends
%%                                silently `smd_expiry_ms' after the last
%%                                smd for that conid (IBKR's 15 minutes)
%%   umd+CONID+{}              -> no more ticks for CONID
%%   sor+{} str+{} spl{}       -> two frames each (topics sor, str, spl)
%%   ssd+ACCT+{..} sld+ACCT+{..} -> two frames each (topics ssd+ACCT, sld+ACCT)
%%   uor+{} utr{} upl{} usd+ACCT+{} uld+ACCT+{} -> counted, nothing sent
%% smd, sor and str need the brokerage session: without it they are only
%% counted (`refused').
%%
%% Options (start option `ws => Map' of ibkr_fake_server, or configure/1,
%% read by each new socket): hb_ms (10000), tic_timeout_ms (60000),
%% smd_rate_ms (200), smd_expiry_ms (900000), max_message (1048576),
%% answer_tic (true; false: tics are counted, not answered), hello_sts
%% (#{}; merged over the args of the first sts, e.g.
%% #{authenticated => false} or #{competing => true}).
%%
%% Controls: drop_all/0,1 (abrupt, or with a close frame), rotate_session/0,1
%% (new tickle session; the sockets of the old one are dropped, or kept, and
%% its cookie refused for new ones), send_all/1 (a JSON term to every socket), send_sts/2,
%% subscriptions/0 (open sockets and their smd conids), stats/0, reset_stats/0.
%% For `make bench': blast/3 (one text frame N times, many per ssl:send),
%% send_made/1 (a text frame made by a fun just before its ssl:send, e.g.
%% with a timestamp inside).
%%
%% Framing (pure, also used by the test client at the end): encode_frame/1,
%% decode_frame/2, accept_key/1.
-module(ibkr_fake_ws).

-export([init_state/1, upgrade/2, server_call/3, server_down/2, serve/4]).
-export([configure/1, drop_all/0, drop_all/1, rotate_session/0, rotate_session/1, send_all/1,
         send_sts/2, blast/3, send_made/1,
         subscriptions/0, stats/0, reset_stats/0]).
-export([encode_frame/1, decode_frame/2, accept_key/1, mask/2]).
-export([client_open/2, client_send/2, client_send_frame/2, client_recv/2, client_close/1]).

-define(SERVER, ibkr_fake_server).
-define(GUID, <<"258EAFA5-E914-47DA-95CA-C5AB0DC85B11">>).
-define(LOG_SIZE, 1000).
-define(DEFAULTS, #{hb_ms => 10000, tic_timeout_ms => 60000, smd_rate_ms => 200,
                    smd_expiry_ms => 900000, max_message => 1048576,
                    answer_tic => true, hello_sts => #{}}).

-type frame() :: #{fin := boolean(), opcode := non_neg_integer(), payload := binary(),
                   masked => boolean(), mask => binary() | none}.
-export_type([frame/0]).

%%% ============================================== controls (test process)

-spec configure(map()) -> ok | {error, term()}.
configure(Opts) -> call({configure, Opts}).

-spec drop_all() -> non_neg_integer().
drop_all() -> drop_all(abrupt).

%% abrupt: the TCP/TLS connection just closes; {close, Code, Text}: a close
%% frame first. Returns how many sockets were open.
-spec drop_all(abrupt | {close, 1000..4999, binary()}) -> non_neg_integer().
drop_all(How) -> call({drop_all, How}).

%% A new session id for POST /tickle; sockets opened with the old one are
%% dropped and the old cookie is refused from now on. Returns the new one.
-spec rotate_session() -> binary().
rotate_session() -> rotate_session(drop).

%% keep: the old sockets stay open (only new upgrades need the new cookie).
-spec rotate_session(drop | keep) -> binary().
rotate_session(How) when How =:= drop; How =:= keep -> call({rotate_session, How}).

-spec send_all(term()) -> non_neg_integer().
send_all(Term) -> call({send_all, ibkr_fake_server:json(Term)}).

-spec send_sts(boolean(), boolean()) -> non_neg_integer().
send_sts(Authenticated, Competing) ->
    send_all(#{topic => <<"sts">>,
               args => #{authenticated => Authenticated, competing => Competing,
                         connected => true, message => <<>>, fail => <<>>}}).

%% Every open socket sends the text frame Text N times, Batch frames per
%% ssl:send (encoded once), without waiting for the peer. Returns at once
%% with the number of sockets; the sending goes on in their processes.
-spec blast(iodata(), pos_integer(), pos_integer()) -> non_neg_integer().
blast(Text, N, Batch) when is_integer(N), N > 0, is_integer(Batch), Batch > 0 ->
    call({blast, iolist_to_binary(encode_frame(#{opcode => 1, payload => Text})), N, Batch}).

%% Every open socket sends one text frame, Make() called in the socket's
%% process just before its ssl:send. Returns the number of sockets.
-spec send_made(fun(() -> iodata())) -> non_neg_integer().
send_made(Make) when is_function(Make, 0) -> call({send_made, Make}).

%% [#{pid, session, smd => [Conid]}] of the open sockets.
-spec subscriptions() -> [map()].
subscriptions() ->
    [#{pid => Pid, session => Session, smd => Conids}
     || {Pid, Session} <- call(sockets),
        Conids <- [ws_query(Pid, smd)], Conids =/= gone].

%% connections, open, rejected (#{Reason => N}), tics, subscribes
%% (#{RouteTopic => N}), unsubscribes (#{RouteTopic => N}), refused,
%% smd_expired, ticks, idle_closed, frames_in, log (newest first:
%% #{frame, at}).
-spec stats() -> map().
stats() -> call(stats).

-spec reset_stats() -> ok.
reset_stats() -> call(reset_stats).

call(Cmd) -> gen_server:call(?SERVER, {ws, Cmd}, 30000).

ws_query(Pid, What) ->
    Ref = monitor(process, Pid),
    Pid ! {query, self(), Ref, What},
    receive
        {Ref, Answer} -> demonitor(Ref, [flush]), Answer;
        {'DOWN', Ref, process, _, _} -> gone
    after 5000 -> demonitor(Ref, [flush]), gone
    end.

%%% ============================================ inside ibkr_fake_server

-spec init_state(map()) -> map().
init_state(Opts) ->
    #{opts => maps:merge(?DEFAULTS, Opts), sockets => #{}, stats => empty_stats()}.

empty_stats() ->
    #{connections => 0, open => 0, rejected => #{}, tics => 0, subscribes => #{},
      unsubscribes => #{}, refused => 0, smd_expired => 0, ticks => 0, idle_closed => 0,
      frames_in => 0, log => []}.

%% The upgrade request (GET <base>/ws), in the server: -> {{upgrade, Ctx} |
%% {respond, Status, Headers, Body}, S}.
-spec upgrade(map(), map()) -> {term(), map()}.
upgrade(Req = #{method := Method, headers := Headers}, S = #{ws := Ws}) ->
    case check_upgrade(Method, Headers, Req, S) of
        {ok, Key} ->
            #{session_id := Session, bridge := Bridge} = S,
            Ctx = #{key => Key, session => Session, bridge => Bridge, opts => maps:get(opts, Ws),
                    accounts => [<<"U1234567">>, <<"U7654321">>]},
            {{upgrade, Ctx}, S};
        {error, Status, Why} ->
            S1 = S#{ws := ws_bump_map(rejected, Why, Ws)},
            {{respond, Status, [], ibkr_fake_server:json(#{error => Why, statusCode => Status})}, S1}
    end.

check_upgrade(Method, Headers, #{target := Target}, #{access_token := Token, session_id := Session}) ->
    H = fun(Name) -> proplists:get_value(Name, Headers, <<>>) end,
    {_, Query} = ibkr_server_crypto:split_url(Target),
    Params = ibkr_server_crypto:parse_query(Query),
    Key = H(<<"sec-websocket-key">>),
    if
        Method =/= <<"GET">> -> {error, 400, <<"method">>};
        true ->
            case {has_token(<<"websocket">>, H(<<"upgrade">>)), has_token(<<"upgrade">>, H(<<"connection">>)),
                  H(<<"sec-websocket-version">>), valid_key(Key)} of
                {true, true, <<"13">>, true} ->
                    case {proplists:get_value(<<"oauth_token">>, Params), cookie(<<"api">>, H(<<"cookie">>)),
                          H(<<"user-agent">>)} of
                        {Token, Session, UA} when UA =/= <<>> -> {ok, Key};
                        {Token, Session, _} -> {error, 400, <<"no user-agent">>};
                        {Token, _, _} -> {error, 401, <<"bad session cookie">>};
                        _ -> {error, 401, <<"bad oauth_token">>}
                    end;
                _ -> {error, 400, <<"bad upgrade">>}
            end
    end.

has_token(Token, Value) ->
    lists:member(Token, [string:lowercase(string:trim(T)) || T <- binary:split(Value, <<",">>, [global])]).

valid_key(Key) ->
    try byte_size(base64:decode(Key)) =:= 16 catch _:_ -> false end.

cookie(Name, Header) ->
    Pairs = [binary:split(string:trim(P), <<"=">>) || P <- binary:split(Header, <<";">>, [global])],
    case [V || [N, V] <- Pairs, N =:= Name] of
        [V | _] -> V;
        [] -> undefined
    end.

%% {ws, Cmd} calls, in the server.
-spec server_call(term(), {pid(), term()}, map()) -> {reply, term(), map()}.
server_call({configure, Opts}, _From, S = #{ws := Ws = #{opts := Old}}) when is_map(Opts) ->
    case maps:keys(Opts) -- maps:keys(?DEFAULTS) of
        [] -> {reply, ok, S#{ws := Ws#{opts := maps:merge(Old, Opts)}}};
        Bad -> {reply, {error, {unknown, Bad}}, S}
    end;
server_call({opened, Pid, Session}, _From, S = #{ws := Ws = #{sockets := Socks}}) ->
    _ = monitor(process, Pid),
    Ws1 = ws_bump(connections, Ws#{sockets := Socks#{Pid => Session}}),
    {reply, ok, S#{ws := Ws1}};
server_call({event, E}, _From, S = #{ws := Ws}) ->
    {reply, ok, S#{ws := count_event(E, Ws)}};
server_call({drop_all, How}, _From, S = #{ws := #{sockets := Socks}}) ->
    _ = [Pid ! {drop, How} || Pid <- maps:keys(Socks)],
    {reply, map_size(Socks), S};
server_call({rotate_session, How}, _From, S = #{ws := #{sockets := Socks}, session_id := Old}) ->
    New = ibkr_server_crypto:hex(crypto:strong_rand_bytes(16)),
    _ = [Pid ! {drop, abrupt} || How =:= drop, {Pid, Session} <- maps:to_list(Socks), Session =:= Old],
    {reply, New, S#{session_id := New}};
server_call({send_all, Json}, _From, S = #{ws := #{sockets := Socks}}) ->
    _ = [Pid ! {send, Json} || Pid <- maps:keys(Socks)],
    {reply, map_size(Socks), S};
server_call({blast, Frame, N, Batch}, _From, S = #{ws := #{sockets := Socks}}) ->
    _ = [Pid ! {blast, Frame, N, Batch} || Pid <- maps:keys(Socks)],
    {reply, map_size(Socks), S};
server_call({send_made, Make}, _From, S = #{ws := #{sockets := Socks}}) ->
    _ = [Pid ! {send_made, Make} || Pid <- maps:keys(Socks)],
    {reply, map_size(Socks), S};
server_call(sockets, _From, S = #{ws := #{sockets := Socks}}) ->
    {reply, maps:to_list(Socks), S};
server_call(stats, _From, S = #{ws := Ws = #{stats := Stats, sockets := Socks}}) ->
    {reply, Stats#{open => map_size(Socks)}, S#{ws := Ws}};
server_call(reset_stats, _From, S = #{ws := Ws}) ->
    {reply, ok, S#{ws := Ws#{stats := empty_stats()}}};
server_call(Other, _From, S) ->
    {reply, {error, {unknown_command, Other}}, S}.

%% A 'DOWN' in the server: -> {true, S} when it was a websocket's.
-spec server_down(pid(), map()) -> {boolean(), map()}.
server_down(Pid, S = #{ws := Ws = #{sockets := Socks}}) ->
    case maps:take(Pid, Socks) of
        {_, Rest} -> {true, S#{ws := Ws#{sockets := Rest}}};
        error -> {false, S}
    end.

count_event({frame, Text}, Ws = #{stats := St = #{log := Log}}) ->
    Entry = #{frame => Text, at => erlang:monotonic_time(millisecond)},
    ws_bump(frames_in, Ws#{stats := St#{log := lists:sublist([Entry | Log], ?LOG_SIZE)}});
count_event({subscribe, Route}, Ws) -> ws_bump_map(subscribes, Route, Ws);
count_event({unsubscribe, Route}, Ws) -> ws_bump_map(unsubscribes, Route, Ws);
count_event(Counter, Ws) when is_atom(Counter) -> ws_bump(Counter, Ws).

ws_bump(Counter, Ws = #{stats := St}) ->
    Ws#{stats := St#{Counter := maps:get(Counter, St) + 1}}.

ws_bump_map(Counter, Key, Ws = #{stats := St}) ->
    M = maps:get(Counter, St),
    Ws#{stats := St#{Counter := M#{Key => maps:get(Key, M, 0) + 1}}}.

%%% ===================================== the socket (connection process)

%% Runs in the connection process after the server accepted the upgrade:
%% answers 101 and serves the websocket until it closes.
-spec serve(ssl:sslsocket(), binary(), map(), pid()) -> ok.
serve(Socket, Buf, Ctx = #{key := Key, session := Session, opts := Opts}, Server) ->
    Head = [<<"HTTP/1.1 101 Switching Protocols\r\n">>,
            <<"upgrade: websocket\r\nconnection: Upgrade\r\n">>,
            <<"sec-websocket-accept: ">>, accept_key(Key), <<"\r\n\r\n">>],
    %% Counted before the 101 goes out: a client that sees the 101 and asks
    %% stats/0 at once finds its connection.
    ok = gen_server:call(Server, {ws, {opened, self(), Session}}),
    case ssl:send(Socket, Head) of
        ok ->
            St = #{socket => Socket, server => Server, ctx => Ctx, opts => Opts, buf => Buf,
                   frag => none, smd => #{}, seq => 0,
                   server_ref => monitor(process, Server)},
            hello(St),
            erlang:send_after(maps:get(hb_ms, Opts), self(), hb),
            erlang:send_after(maps:get(smd_rate_ms, Opts), self(), ticks),
            loop(arm_idle(St));
        {error, _} ->
            _ = ssl:close(Socket),
            ok
    end.

hello(St = #{ctx := #{bridge := Bridge, accounts := Accts}, opts := Opts}) ->
    send_json(St, #{topic => <<"system">>, success => <<"fakeuser">>, isFT => false, isPaper => true}),
    Bridge andalso
        send_json(St, #{topic => <<"act">>,
                        args => #{accounts => Accts, selectedAccount => hd(Accts), isPaper => true}}),
    Sts = #{authenticated => Bridge, competing => false, connected => true, message => <<>>, fail => <<>>},
    send_json(St, #{topic => <<"sts">>, args => maps:merge(Sts, maps:get(hello_sts, Opts))}).

arm_idle(St = #{opts := #{tic_timeout_ms := T}}) ->
    case St of
        #{idle := Old} -> _ = erlang:cancel_timer(Old);
        _ -> ok
    end,
    St#{idle => erlang:send_after(T, self(), idle)}.

loop(St = #{buf := Buf, opts := #{max_message := Max}}) ->
    case decode_frame(Buf, Max) of
        {ok, Frame, Rest} -> handle_frame(Frame, St#{buf := Rest});
        more -> wait(St);
        {error, too_large} -> close_with(St, 1009, <<"too large">>);
        {error, _} -> close_with(St, 1002, <<"protocol error">>)
    end.

wait(St = #{socket := Socket, buf := Buf, server_ref := Ref}) ->
    ok = case ssl:setopts(Socket, [{active, once}]) of ok -> ok; {error, _} -> ok end,
    receive
        {ssl, Socket, Data} -> loop(St#{buf := <<Buf/binary, Data/binary>>});
        {ssl_closed, Socket} -> ok;
        {ssl_error, Socket, _} -> abort(St);
        hb ->
            send_json(St, #{topic => <<"system">>, hb => erlang:system_time(millisecond)}),
            erlang:send_after(maps:get(hb_ms, maps:get(opts, St)), self(), hb),
            wait(St);
        ticks -> wait(ticks(St));
        idle -> event(St, idle_closed), close_with(St, 1000, <<"idle">>);
        {send, Json} -> send_text(St, Json), wait(St);
        {send_made, Make} -> send_text(St, Make()), wait(St);
        {blast, Frame, N, Batch} -> blast_frames(St, Frame, N, Batch), wait(St);
        {drop, abrupt} -> abort(St);
        {drop, {close, Code, Text}} -> close_with(St, Code, Text);
        {query, From, QRef, smd} -> From ! {QRef, lists:sort(maps:keys(maps:get(smd, St)))}, wait(St);
        {'DOWN', Ref, process, _, _} -> abort(St)
    end.

blast_frames(#{socket := Socket}, Frame, N, Batch) ->
    Full = binary:copy(Frame, Batch),
    _ = [ssl:send(Socket, Full) || _ <- lists:seq(1, N div Batch)],
    _ = N rem Batch > 0 andalso ssl:send(Socket, binary:copy(Frame, N rem Batch)),
    ok.

abort(#{socket := Socket}) ->
    _ = ssl:close(Socket),
    ok.

%% Our close frame, then wait a little for the client's before closing.
close_with(St = #{socket := Socket}, Code, Text) ->
    _ = ssl:send(Socket, encode_frame(#{opcode => 8, payload => <<Code:16, Text/binary>>})),
    _ = ssl:setopts(Socket, [{active, false}]),
    _ = ssl:recv(Socket, 0, 1000),
    abort(St).

handle_frame(#{masked := false}, St) ->
    close_with(St, 1002, <<"unmasked client frame">>);
handle_frame(#{opcode := 8, payload := P}, St = #{socket := Socket}) ->
    Echo = case P of <<Code:16, _/binary>> -> <<Code:16>>; _ -> <<>> end,
    _ = ssl:send(Socket, encode_frame(#{opcode => 8, payload => Echo})),
    abort(St);
handle_frame(#{opcode := 9, payload := P}, St = #{socket := Socket}) ->
    _ = ssl:send(Socket, encode_frame(#{opcode => 10, payload => P})),
    loop(St);
handle_frame(#{opcode := 10}, St) ->
    loop(St);
handle_frame(#{opcode := 0, fin := Fin, payload := P}, St = #{frag := {Op, Parts}}) ->
    Frag = {Op, [P | Parts]},
    case Fin of
        false -> loop(St#{frag := Frag});
        true -> message(Op, iolist_to_binary(lists:reverse([P | Parts])), St#{frag := none})
    end;
handle_frame(#{opcode := 0}, St) ->
    close_with(St, 1002, <<"continuation without a start">>);
handle_frame(#{opcode := Op}, St = #{frag := {_, _}}) when Op =:= 1; Op =:= 2 ->
    close_with(St, 1002, <<"new message inside a fragmented one">>);
handle_frame(#{opcode := Op, fin := false, payload := P}, St) when Op =:= 1; Op =:= 2 ->
    loop(St#{frag := {Op, [P]}});
handle_frame(#{opcode := Op, payload := P}, St) when Op =:= 1; Op =:= 2 ->
    message(Op, P, St).

message(_Op, P, St = #{opts := #{max_message := Max}}) when byte_size(P) > Max ->
    close_with(St, 1009, <<"too large">>);
message(1, P, St) ->
    case unicode:characters_to_binary(P) of
        P -> event(St, {frame, P}), loop(text(P, St));
        _ -> close_with(St, 1007, <<"not UTF-8">>)
    end;
message(2, _P, St) ->
    loop(St).

text(<<"tic">>, St = #{ctx := #{session := Session}, opts := Opts}) ->
    event(St, tics),
    maps:get(answer_tic, Opts) andalso
        send_json(St, #{topic => <<"tic">>, alive => true, id => Session,
                        lastAccessed => erlang:system_time(millisecond)}),
    arm_idle(St);
text(<<"smd+", Rest/binary>>, St) ->
    case split_target(Rest) of
        {ok, Target, Args} -> smd(Target, Args, St);
        error -> St
    end;
text(<<"umd+", Rest/binary>>, St = #{smd := Smd}) ->
    case split_target(Rest) of
        {ok, Target, _} ->
            event(St, {unsubscribe, <<"smd+", Target/binary>>}),
            St#{smd := maps:remove(Target, Smd)};
        error -> St
    end;
text(<<"sor+", Args/binary>>, St) -> iserver_stream(<<"sor">>, Args, St);
text(<<"str+", Args/binary>>, St) -> iserver_stream(<<"str">>, Args, St);
text(<<"spl", Args/binary>>, St) -> stream(<<"spl">>, Args, St);
text(<<"ssd+", Rest/binary>>, St) -> account_stream(<<"ssd">>, Rest, St);
text(<<"sld+", Rest/binary>>, St) -> account_stream(<<"sld">>, Rest, St);
text(<<"uor+", _/binary>>, St) -> event(St, {unsubscribe, <<"sor">>}), St;
text(<<"utr", _/binary>>, St) -> event(St, {unsubscribe, <<"str">>}), St;
text(<<"upl", _/binary>>, St) -> event(St, {unsubscribe, <<"spl">>}), St;
text(<<"usd+", Rest/binary>>, St) -> account_unsubscribe(<<"ssd">>, Rest, St);
text(<<"uld+", Rest/binary>>, St) -> account_unsubscribe(<<"sld">>, Rest, St);
text(_Other, St) ->
    St.

%% "265598+{...}" -> {ok, <<"265598">>, Term}
split_target(Bin) ->
    case binary:split(Bin, <<"+">>) of
        [Target, Json] when Target =/= <<>> ->
            case ibkr_fake_json:decode(Json) of
                {ok, Args} when is_map(Args) -> {ok, Target, Args};
                _ -> error
            end;
        _ -> error
    end.

smd(Target, Args, St = #{ctx := #{bridge := false}}) ->
    _ = {Target, Args},
    event(St, refused),
    St;
smd(Target, Args, St = #{smd := Smd, opts := #{smd_expiry_ms := Expiry}}) ->
    Fields = maps:get(<<"fields">>, Args, []),
    case {conid(Target), is_list(Fields) andalso lists:all(fun is_binary/1, Fields)} of
        {{ok, Conid}, true} ->
            event(St, {subscribe, <<"smd+", Target/binary>>}),
            Sub = #{conid => Conid, fields => Fields, until => now_ms() + Expiry},
            St1 = St#{smd := Smd#{Target => Sub}},
            tick(Target, Sub, St1);
        _ ->
            send_json(St, #{topic => <<"smd+", Target/binary>>, error => <<"bad request">>}),
            St
    end.

conid(Target) ->
    [Id | _] = binary:split(Target, <<"@">>),
    try binary_to_integer(Id) of
        N when N > 0 -> {ok, N};
        _ -> error
    catch error:badarg -> error
    end.

ticks(St = #{smd := Smd, opts := #{smd_rate_ms := Rate}}) ->
    Now = now_ms(),
    {Live, Expired} = maps:fold(fun(T, Sub = #{until := U}, {L, E}) when U > Now -> {L#{T => Sub}, E};
                                   (_T, _Sub, {L, E}) -> {L, E + 1}
                                end, {#{}, 0}, Smd),
    _ = [event(St, smd_expired) || _ <- lists:seq(1, Expired)],
    erlang:send_after(Rate, self(), ticks),
    maps:fold(fun(T, Sub, Acc) -> tick(T, Sub, Acc) end, St#{smd := Live}, Live).

tick(Target, #{conid := Conid, fields := Fields}, St = #{seq := Seq}) ->
    Values = maps:from_list([{F, field_value(F, Seq)} || F <- Fields]),
    send_json(St, Values#{<<"topic">> => <<"smd+", Target/binary>>, <<"conid">> => Conid,
                          <<"_updated">> => erlang:system_time(millisecond),
                          <<"server_id">> => <<"q0">>}),
    event(St, ticks),
    St#{seq := Seq + 1}.

field_value(F, Seq) when F =:= <<"31">>; F =:= <<"84">>; F =:= <<"86">> ->
    Cents = 18960 + Seq rem 100,
    iolist_to_binary(io_lib:format("~b.~2..0b", [Cents div 100, Cents rem 100]));
field_value(_F, Seq) ->
    integer_to_binary(100 + Seq rem 50).

iserver_stream(_Topic, _Args, St = #{ctx := #{bridge := false}}) ->
    event(St, refused),
    St;
iserver_stream(Topic, Args, St) ->
    stream(Topic, Args, St).

stream(Topic, Args, St) ->
    case ibkr_fake_json:decode(Args) of
        {ok, M} when is_map(M) ->
            event(St, {subscribe, Topic}),
            _ = [send_json(St, frame(Topic, N)) || N <- [1, 2]],
            St;
        _ -> St
    end.

account_stream(Kind, Rest, St = #{ctx := #{accounts := Accts}}) ->
    case split_target(Rest) of
        {ok, Acct, _Args} ->
            case lists:member(Acct, Accts) of
                true ->
                    Topic = <<Kind/binary, "+", Acct/binary>>,
                    event(St, {subscribe, Topic}),
                    _ = [send_json(St, #{topic => Topic,
                                         result => [#{key => <<"NetLiquidation">>, acctId => Acct,
                                                      monetaryValue => 100000 + N}]})
                         || N <- [1, 2]],
                    St;
                false -> St
            end;
        error -> St
    end.

account_unsubscribe(Kind, Rest, St) ->
    case split_target(Rest) of
        {ok, Acct, _} -> event(St, {unsubscribe, <<Kind/binary, "+", Acct/binary>>});
        error -> ok
    end,
    St.

frame(<<"sor">>, N) ->
    #{topic => <<"sor">>, args => [#{orderId => 1000 + N, conid => 265598, status => <<"Submitted">>,
                                     acct => <<"U1234567">>}]};
frame(<<"str">>, N) ->
    #{topic => <<"str">>, args => [#{execution_id => integer_to_binary(5000 + N), conid => 265598,
                                     side => <<"B">>, size => <<"10">>, price => <<"189.60">>}]};
frame(<<"spl">>, N) ->
    #{topic => <<"spl">>, args => #{<<"U1234567.Core">> => #{rowType => 1, dpl => 1.5 * N,
                                                            nl => 100000.0, upl => 250.0}}}.

send_json(St, Term) -> send_text(St, ibkr_fake_server:json(Term)).

send_text(#{socket := Socket}, Text) ->
    _ = ssl:send(Socket, encode_frame(#{opcode => 1, payload => Text})),
    ok.

event(#{server := Server}, E) ->
    _ = (catch gen_server:call(Server, {ws, {event, E}}, 5000)),
    ok.

now_ms() -> erlang:monotonic_time(millisecond).

%%% ================================================== framing (RFC 6455)

-spec accept_key(binary()) -> binary().
accept_key(Key) -> base64:encode(crypto:hash(sha, <<Key/binary, ?GUID/binary>>)).

%% #{opcode, payload, fin => true, mask => none | <<_:32>>} -> iodata()
-spec encode_frame(map()) -> iodata().
encode_frame(F = #{opcode := Op, payload := Payload0}) ->
    Payload = iolist_to_binary(Payload0),
    Fin = case maps:get(fin, F, true) of true -> 1; false -> 0 end,
    Len = byte_size(Payload),
    {MaskBit, MaskKey, Body} = case maps:get(mask, F, none) of
                                   none -> {0, <<>>, Payload};
                                   <<_:32>> = K -> {1, K, mask(K, Payload)}
                               end,
    LenBits = if
                  Len < 126 -> <<MaskBit:1, Len:7>>;
                  Len < 65536 -> <<MaskBit:1, 126:7, Len:16>>;
                  true -> <<MaskBit:1, 127:7, Len:64>>
              end,
    [<<Fin:1, 0:3, Op:4>>, LenBits, MaskKey, Body].

%% One frame from the front of Buf: -> {ok, #{fin, opcode, payload
%% (unmasked), masked}, Rest} | more | {error, rsv | bad_opcode |
%% bad_control | bad_length | too_large}.
-spec decode_frame(binary(), non_neg_integer()) ->
          {ok, frame(), binary()} | more | {error, atom()}.
decode_frame(<<Fin:1, Rsv:3, Op:4, M:1, Len7:7, Rest/binary>>, Max) ->
    if
        Rsv =/= 0 -> {error, rsv};
        Op > 2, Op < 8; Op > 10 -> {error, bad_opcode};
        Op >= 8, (Fin =:= 0 orelse Len7 > 125) -> {error, bad_control};
        true -> decode_length(Len7, Rest, #{fin => Fin =:= 1, opcode => Op, masked => M =:= 1}, Max)
    end;
decode_frame(_, _Max) -> more.

decode_length(126, <<Len:16, Rest/binary>>, F, Max) when Len >= 126 -> decode_body(Len, Rest, F, Max);
decode_length(126, <<_:16, _/binary>>, _F, _Max) -> {error, bad_length};
decode_length(127, <<0:1, Len:63, Rest/binary>>, F, Max) when Len >= 65536 -> decode_body(Len, Rest, F, Max);
decode_length(127, <<_:64, _/binary>>, _F, _Max) -> {error, bad_length};
decode_length(Len, Rest, F, Max) when Len < 126 -> decode_body(Len, Rest, F, Max);
decode_length(_, _, _, _) -> more.

decode_body(Len, _Rest, _F, Max) when Len > Max -> {error, too_large};
decode_body(Len, Rest, F = #{masked := true}, _Max) ->
    case Rest of
        <<Key:4/binary, Payload:Len/binary, Tail/binary>> ->
            {ok, F#{payload => mask(Key, Payload)}, Tail};
        _ -> more
    end;
decode_body(Len, Rest, F, _Max) ->
    case Rest of
        <<Payload:Len/binary, Tail/binary>> -> {ok, F#{payload => Payload}, Tail};
        _ -> more
    end.

%% XOR with the 4-byte key, repeated (masking and unmasking alike).
-spec mask(<<_:32>>, binary()) -> binary().
mask(<<K:32>>, Data) ->
    Whole = byte_size(Data) div 4,
    <<Body:Whole/binary-unit:32, Tail/binary>> = Data,
    Masked = << <<(W bxor K):32>> || <<W:32>> <= Body >>,
    <<KT:(byte_size(Tail) * 8), _/bitstring>> = <<K:32>>,
    TailSize = byte_size(Tail) * 8,
    <<T:TailSize>> = Tail,
    <<Masked/binary, (T bxor KT):TailSize>>.

%%% =========================================== a minimal client (tests)

%% Opens a websocket to the fake server: Opts #{token, cookie (the session
%% value), user_agent, path} -> {ok, Client} | {error, {http, Status}} | ...
-spec client_open(map(), map()) -> {ok, map()} | {error, term()}.
client_open(#{port := Port, ca_file := CaFile}, Opts) ->
    Key = base64:encode(crypto:strong_rand_bytes(16)),
    Path = maps:get(path, Opts, <<"/v1/api/ws">>),
    Target = case maps:find(token, Opts) of
                 {ok, T} -> <<Path/binary, "?oauth_token=", T/binary>>;
                 error -> Path
             end,
    Headers = [{<<"host">>, <<"localhost:", (integer_to_binary(Port))/binary>>},
               {<<"upgrade">>, <<"websocket">>}, {<<"connection">>, <<"Upgrade">>},
               {<<"sec-websocket-version">>, <<"13">>}, {<<"sec-websocket-key">>, Key}]
        ++ [{<<"cookie">>, <<"api=", C/binary>>} || {ok, C} <- [maps:find(cookie, Opts)]]
        ++ [{<<"user-agent">>, UA} || {ok, UA} <- [maps:find(user_agent, Opts)]],
    SslOpts = [binary, {active, false}, {verify, verify_peer}, {cacertfile, binary_to_list(CaFile)},
               {server_name_indication, "localhost"}],
    {ok, S} = ssl:connect("localhost", Port, SslOpts, 10000),
    ok = ssl:send(S, [<<"GET ">>, Target, <<" HTTP/1.1\r\n">>,
                      [[N, <<": ">>, V, <<"\r\n">>] || {N, V} <- Headers], <<"\r\n">>]),
    case read_head(S, <<>>) of
        {ok, 101, RespHeaders, Rest} ->
            case proplists:get_value(<<"sec-websocket-accept">>, RespHeaders) =:= accept_key(Key) of
                true -> {ok, #{socket => S, buf => Rest}};
                false -> _ = ssl:close(S), {error, bad_accept}
            end;
        {ok, Status, _, _} -> _ = ssl:close(S), {error, {http, Status}};
        Error -> _ = ssl:close(S), Error
    end.

read_head(S, Buf) ->
    case binary:split(Buf, <<"\r\n\r\n">>) of
        [Head, Rest] ->
            [Status | Lines] = binary:split(Head, <<"\r\n">>, [global]),
            [_, Code | _] = binary:split(Status, <<" ">>, [global]),
            Hs = [{string:lowercase(N), string:trim(V)} || L <- Lines, [N, V] <- [binary:split(L, <<":">>)]],
            {ok, binary_to_integer(Code), Hs, Rest};
        [_] ->
            case ssl:recv(S, 0, 10000) of
                {ok, Data} -> read_head(S, <<Buf/binary, Data/binary>>);
                Error -> Error
            end
    end.

-spec client_send(map(), iodata()) -> ok | {error, term()}.
client_send(C, Text) ->
    client_send_frame(C, #{opcode => 1, payload => Text}).

%% A frame as given (mask added unless `mask => none').
-spec client_send_frame(map(), map()) -> ok | {error, term()}.
client_send_frame(#{socket := S}, Frame) ->
    F = case maps:is_key(mask, Frame) of
            true -> Frame;
            false -> Frame#{mask => crypto:strong_rand_bytes(4)}
        end,
    ssl:send(S, encode_frame(F)).

%% The next message: {ok, {text, Bin} | {json, Term} | {close, Code} |
%% {pong, Bin}, Client} | {error, closed | timeout}.
-spec client_recv(map(), timeout()) -> {ok, term(), map()} | {error, term()}.
client_recv(C = #{socket := S, buf := Buf}, Timeout) ->
    case decode_frame(Buf, 16#7fffffff) of
        {ok, #{opcode := 1, payload := P}, Rest} ->
            Msg = case ibkr_fake_json:decode(P) of
                      {ok, T} -> {json, T};
                      error -> {text, P}
                  end,
            {ok, Msg, C#{buf := Rest}};
        {ok, #{opcode := 8, payload := P}, Rest} ->
            Code = case P of <<Cd:16, _/binary>> -> Cd; _ -> none end,
            {ok, {close, Code}, C#{buf := Rest}};
        {ok, #{opcode := 10, payload := P}, Rest} -> {ok, {pong, P}, C#{buf := Rest}};
        {ok, _Other, Rest} -> client_recv(C#{buf := Rest}, Timeout);
        more ->
            case ssl:recv(S, 0, Timeout) of
                {ok, Data} -> client_recv(C#{buf := <<Buf/binary, Data/binary>>}, Timeout);
                {error, _} = E -> E
            end;
        {error, _} = E -> E
    end.

-spec client_close(map()) -> ok.
client_close(#{socket := S}) ->
    _ = ssl:close(S),
    ok.
