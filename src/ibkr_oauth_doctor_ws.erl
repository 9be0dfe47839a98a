%% @doc The doctor's websocket check, its decisions (pure: no processes, the
%% time comes with each input): what the port's `ws_open' answer and the
%% server's first frames mean, when to stop waiting, and the report lines.
%%
%% {@link ibkr_oauth_doctor} carries it out on its own port: `ws_open' with
%% the `session' of the tickle just before ({@link open_failed/1} explains a
%% refusal), `tic' at once (IBKR closes a socket that does not tic), then
%% every `{ws, Conn, Event}' event and the `ws_send' answer go through
%% {@link event/3} until it answers `{done, Lines}'; when {@link deadline/1}
%% passes first, {@link timeout/2} gives the lines.
%%
%% Expected within 5 s of the upgrade: `system' with `success', `act' and
%% `sts' with `authenticated: true' and `competing' not true; then, within
%% 5 s more, the answer to `tic' (`{"topic":"tic","alive":true,...}').
%% An `sts' that says otherwise is not final at once (a later one may
%% correct it): the check fails at the deadline with what the last one said.
%% A missing `act' (IBKR sends it with the brokerage session) is a warning.
-module(ibkr_oauth_doctor_ws).

-export([no_session/1, open_failed/1, new/1, event/3, deadline/1, timeout/2]).

-export_type([state/0, input/0]).

-define(HELLO_MS, 5000).
-define(TIC_MS, 5000).
%% Longest server text quoted in a report line (characters).
-define(QUOTE_MAX, 120).

-record(ws, {opened :: integer(),
             system = none :: none | binary(),              % the user of `system' success
             system_paper :: boolean() | undefined,
             act = none :: none | missing | #{accounts := non_neg_integer() | undefined,
                                               paper := boolean() | undefined},
             sts = none :: none | #{authenticated := boolean(), competing := boolean()},
             ready_at :: integer() | undefined,             % system, act and sts were there
             tic = none :: none | alive | not_alive,
             notes = [] :: [binary()]}).                    % server texts, newest first

-opaque state() :: #ws{}.
%% A port websocket event (`{message, Term}', `{text, Bin}',
%% `{closed, Reason}'), the answer to the `ws_send' of `tic'
%% (`{tic_sent, ok | {error, Reason}}'), or `port_down'.
-type input() :: {message, term()} | {text, binary()} | {closed, term()}
               | {tic_sent, term()} | port_down.
-type line() :: ibkr_oauth_doctor:line().

%%% ============================================================ opening

%% @doc The line when the tickle gave no `session' to use as the cookie;
%% `Why' is what the answer had instead.
-spec no_session(binary()) -> line().
no_session(Why) ->
    {fail, websocket, <<"cannot open: ", Why/binary>>,
     <<"the websocket needs the session string of POST /tickle as its cookie (Cookie: api=<session>)">>}.

%% @doc The line for a `ws_open' the port answered `{error, Reason}'.
-spec open_failed(term()) -> line().
open_failed({http, 401, Body}) ->
    {fail, websocket, <<"upgrade refused: HTTP 401", (quoted_error(Body))/binary>>,
     <<"IBKR refused the session cookie or the access token: the cookie must be the session of a "
       "fresh POST /tickle (it changes after a new live session token), the URL carries the "
       "portal's access token (not the live session token)">>};
open_failed({http, Status, Body}) when is_integer(Status), is_binary(Body) ->
    case ibkr_oauth_ibkr_error:classify(Status, [], Body) of
        {ibkr, Kind, _} ->
            {fail, websocket, iolist_to_binary(["upgrade refused: HTTP ", integer_to_binary(Status), " ",
                                                atom_to_binary(Kind), quoted_error(Body)]),
             ibkr_oauth_ibkr_error:advice(Kind)};
        http ->
            {fail, websocket, iolist_to_binary(["upgrade refused: HTTP ", integer_to_binary(Status),
                                                quoted_error(Body)]),
             <<"the websocket is base_url/ws; a proxy in between must pass websocket upgrades">>}
    end;
open_failed({bad_response, Why}) when Why =:= ws_accept; Why =:= ws_upgrade ->
    {fail, websocket, <<"the answer to the upgrade is not a websocket (", (atom_to_binary(Why))/binary, ")">>,
     <<"a proxy in between must pass websocket upgrades unchanged">>};
open_failed({transport, Kind}) when is_atom(Kind) ->
    {fail, websocket, <<"cannot connect (", (atom_to_binary(Kind))/binary, ")">>,
     <<"the network or a proxy blocks the websocket to the API host (wss, same host and port as base_url)">>};
open_failed(timeout) ->
    {fail, websocket, <<"no answer to the upgrade in time">>,
     <<"the network or a proxy holds websocket upgrades to the API host">>};
open_failed(Reason) ->
    {fail, websocket, <<"cannot open: ", (ibkr_oauth_explain:reason(Reason))/binary>>, <<>>}.

-spec quoted_error(term()) -> binary().
quoted_error(Body) when is_binary(Body) ->
    case ibkr_oauth_ibkr_error:parse_envelope(Body) of
        {ok, Text, _} when Text =/= <<>> -> <<" \"", (clip(Text))/binary, "\"">>;
        _ -> <<>>
    end;
quoted_error(_) -> <<>>.

%%% ============================================================ waiting

%% @doc The state right after the upgrade (`Now' in ms, any monotonic
%% clock).
-spec new(integer()) -> state().
new(Now) -> #ws{opened = Now}.

%% @doc When {@link timeout/2} is due (same clock as {@link new/1}).
-spec deadline(state()) -> integer().
deadline(#ws{ready_at = undefined, opened = T}) -> T + ?HELLO_MS;
deadline(#ws{ready_at = T}) -> T + ?TIC_MS.

%% @doc One input at `Now': keep waiting, or the lines of the check.
-spec event(input(), integer(), state()) -> {continue, state()} | {done, [line()]}.
event({message, #{<<"topic">> := Topic} = M}, Now, St) when is_binary(Topic) ->
    progress(Now, topic(Topic, M, St));
event({message, #{} = M}, Now, St) ->
    %% e.g. {"message":"waiting for session"} or {"error":...}
    Note = case M of
               #{<<"message">> := T} when is_binary(T) -> [T];
               #{<<"error">> := T} when is_binary(T) -> [T];
               _ -> []
           end,
    progress(Now, St#ws{notes = Note ++ St#ws.notes});
event({message, _}, Now, St) -> progress(Now, St);
event({text, T}, Now, St) when is_binary(T) -> progress(Now, St#ws{notes = [T | St#ws.notes]});
event({tic_sent, ok}, Now, St) -> progress(Now, St);
event({tic_sent, {error, Why}}, _Now, St) ->
    {done, [{fail, websocket, <<"open, but tic could not be sent: ", (ibkr_oauth_explain:reason(Why))/binary,
                                 "; received: ", (seen(St))/binary>>,
             <<"IBKR closes a socket that does not send tic">>}]};
event({closed, Reason}, _Now, St) ->
    {done, hello_lines(St) ++ [closed_line(Reason, St)]};
event(port_down, _Now, _St) ->
    {done, [{fail, websocket, <<"the port program ended during the check">>, <<"please report this">>}]};
event(_, Now, St) -> progress(Now, St).

%% @doc The deadline passed at `Now'.
-spec timeout(integer(), state()) -> {continue, state()} | {done, [line()]}.
timeout(Now, St = #ws{ready_at = undefined, act = none}) ->
    case {St#ws.system, authenticated(St)} of
        {User, true} when is_binary(User) ->
            %% all but act: say so, and still wait for the tic answer
            progress(Now, St#ws{act = missing});
        _ -> {done, [hello_failed(St)]}
    end;
timeout(_Now, St = #ws{ready_at = undefined}) ->
    {done, [hello_failed(St)]};
timeout(_Now, St) ->
    {done, hello_lines(St) ++
         [{fail, websocket_tic, <<"no answer to tic within 5 s">>,
           <<"IBKR answers tic with {\"topic\":\"tic\",\"alive\":true} on a live socket and closes sockets "
             "that do not tic: check for a proxy that holds websocket frames, and tickle again">>}]}.

%%% ============================================================ inside

-spec topic(binary(), map(), #ws{}) -> #ws{}.
topic(<<"system">>, #{<<"success">> := User} = M, St) when is_binary(User) ->
    St#ws{system = User, system_paper = bool(maps:get(<<"isPaper">>, M, undefined))};
topic(<<"act">>, #{<<"args">> := #{} = Args}, St) ->
    N = case maps:get(<<"accounts">>, Args, undefined) of
            L when is_list(L) -> length(L);
            _ -> undefined
        end,
    St#ws{act = #{accounts => N, paper => bool(maps:get(<<"isPaper">>, Args, undefined))}};
topic(<<"sts">>, #{<<"args">> := #{} = Args}, St) ->
    Old = case St#ws.sts of
              none -> #{authenticated => false, competing => false};
              S -> S
          end,
    New = maps:merge(Old, maps:from_list([{Key, V} || {Name, Key} <- [{<<"authenticated">>, authenticated},
                                                                     {<<"competing">>, competing}],
                                                     V <- [maps:get(Name, Args, undefined)],
                                                     is_boolean(V)])),
    St#ws{sts = New};
topic(<<"tic">>, M, St) ->
    St#ws{tic = case maps:get(<<"alive">>, M, true) of
                    false -> not_alive;
                    _ -> alive
                end};
topic(_, #{<<"error">> := E}, St) when is_binary(E) ->
    St#ws{notes = [E | St#ws.notes]};
topic(_, _, St) -> St.                    % heartbeats, other topics

-spec bool(term()) -> boolean() | undefined.
bool(B) when is_boolean(B) -> B;
bool(_) -> undefined.

-spec authenticated(#ws{}) -> boolean().
authenticated(#ws{sts = #{authenticated := true, competing := false}}) -> true;
authenticated(_) -> false.

%% After an input: ready once system, act and a good sts are there; done
%% once the tic is answered too.
-spec progress(integer(), #ws{}) -> {continue, #ws{}} | {done, [line()]}.
progress(Now, St0) ->
    St = case St0 of
             #ws{ready_at = undefined, system = U, act = A} when is_binary(U), A =/= none ->
                 case authenticated(St0) of
                     true -> St0#ws{ready_at = Now};
                     false -> St0
                 end;
             _ -> St0
         end,
    case St of
        #ws{ready_at = undefined} -> {continue, St};
        #ws{tic = none} -> {continue, St};
        #ws{tic = alive} -> {done, hello_lines(St) ++ [{ok, websocket_tic, <<"tic answered">>, <<>>}]};
        #ws{tic = not_alive} ->
            {done, hello_lines(St) ++
                 [{fail, websocket_tic, <<"tic answered alive:false">>,
                   <<"IBKR no longer serves this session: tickle again and reopen the socket">>}]}
    end.

%% The websocket line once the hello is complete (none before).
-spec hello_lines(#ws{}) -> [line()].
hello_lines(#ws{ready_at = undefined}) -> [];
hello_lines(St = #ws{act = missing}) ->
    [{warn, websocket, <<"open; ", (seen(St))/binary, "; ", (paper(St))/binary>>,
      <<"IBKR sends act (the accounts) with the brokerage session: check ssodh/init">>}];
hello_lines(St) ->
    [{ok, websocket, <<"open; ", (seen(St))/binary, "; ", (paper(St))/binary>>, <<>>}].

-spec hello_failed(#ws{}) -> line().
hello_failed(St) ->
    Found = <<"open, but within 5 s: ", (seen(St))/binary>>,
    {fail, websocket, Found, hello_advice(St)}.

-spec hello_advice(#ws{}) -> binary().
hello_advice(#ws{sts = #{competing := true}}) ->
    competing_advice();
hello_advice(#ws{sts = #{authenticated := false}}) ->
    <<"sts authenticated:false: ", (ibkr_oauth_ibkr_error:advice(no_bridge))/binary,
      "; or another session (TWS, Client Portal, mobile) took the brokerage session over">>;
hello_advice(#ws{system = none} = St) ->
    case waiting_for_session(St) of
        true -> <<"IBKR waits for a session: the cookie must be the session of a fresh POST /tickle, "
                  "made after ssodh/init">>;
        false -> <<"IBKR sent no system success: the session cookie (the session of POST /tickle) "
                   "may be stale, or the brokerage session is not open (ssodh/init)">>
    end;
hello_advice(#ws{sts = none}) ->
    <<"no sts: ", (ibkr_oauth_ibkr_error:advice(no_bridge))/binary,
      "; or another session (TWS, Client Portal, mobile) competes for it">>;
hello_advice(_) ->
    <<"IBKR did not say the socket is ready">>.

-spec competing_advice() -> binary().
competing_advice() ->
    <<"sts competing:true: another session (TWS, Client Portal, mobile) took the brokerage session "
      "over; close it, or re-run ssodh/init (compete:true evicts the other session)">>.

-spec closed_line(term(), #ws{}) -> line().
closed_line(Reason, St) ->
    Found = iolist_to_binary(["the server closed the socket (", closed_reason(Reason), ") after: ", seen(St)]),
    Advice = case St of
                 #ws{sts = #{competing := true}} -> competing_advice();
                 #ws{system = none} ->
                     <<"IBKR closes a socket whose session cookie it does not accept: use the session of "
                       "a fresh POST /tickle, made after ssodh/init">>;
                 _ -> <<"IBKR closes sockets that do not tic or whose session ended: tickle again and "
                        "check that no other session takes the brokerage session over">>
             end,
    {fail, case St of #ws{ready_at = undefined} -> websocket; _ -> websocket_tic end, Found, Advice}.

-spec closed_reason(term()) -> iodata().
closed_reason({close, Code, Text}) when is_integer(Code), is_binary(Text) ->
    ["close ", integer_to_binary(Code), case Text of <<>> -> []; _ -> [" \"", clip(Text), "\""] end];
closed_reason({transport, closed}) -> "ended without a close frame";
closed_reason({Kind, Why}) when is_atom(Kind), is_atom(Why) -> [atom_to_binary(Kind), " ", atom_to_binary(Why)];
closed_reason(Other) -> ibkr_oauth_explain:reason(Other).

%% What arrived, in the order IBKR sends it.
-spec seen(#ws{}) -> binary().
seen(St) ->
    System = case St#ws.system of
                 none -> "no system success";
                 User -> ["system (user ", clip(User), ")"]
             end,
    Act = case St#ws.act of
              none -> "no act";
              missing -> "no act";
              #{accounts := undefined} -> "act";
              #{accounts := 1} -> "act (1 account)";
              #{accounts := N} -> ["act (", integer_to_binary(N), " accounts)"]
          end,
    Sts = case St#ws.sts of
              none -> "no sts";
              #{authenticated := A, competing := C} ->
                  ["sts authenticated:", atom_to_binary(A), [" competing:true" || C]]
          end,
    Notes = case lists:reverse(St#ws.notes) of
                [] -> [];
                Ns -> [", server said ", lists:join(", ", [["\"", clip(N), "\""] || N <- lists:sublist(Ns, 3)])]
            end,
    unicode:characters_to_binary([System, ", ", Act, ", ", Sts, Notes]).

-spec paper(#ws{}) -> binary().
paper(St) ->
    Paper = case St#ws.act of
                #{paper := P} when is_boolean(P) -> P;
                _ -> St#ws.system_paper
            end,
    case Paper of
        true -> <<"paper account (isPaper:true)">>;
        false -> <<"live account (isPaper:false)">>;
        undefined -> <<"isPaper not sent">>
    end.

-spec waiting_for_session(#ws{}) -> boolean().
waiting_for_session(#ws{notes = Notes}) ->
    %% byte-wise (a note may not be UTF-8)
    lists:any(fun(N) -> re:run(N, <<"waiting for session">>, [caseless, {capture, none}]) =:= match end, Notes).

%% A server text made safe to print: valid UTF-8 (else hex), at most
%% QUOTE_MAX characters, no control characters.
-spec clip(binary()) -> binary().
clip(T) ->
    case unicode:characters_to_list(T) of
        L when is_list(L) ->
            Short = case length(L) > ?QUOTE_MAX of
                        true -> lists:sublist(L, ?QUOTE_MAX) ++ "...";
                        false -> L
                    end,
            unicode:characters_to_binary([case C < 16#20 orelse C =:= 16#7f of
                                              true -> $?;
                                              false -> C
                                          end || C <- Short]);
        _ -> <<"(", (integer_to_binary(byte_size(T)))/binary, " bytes, not UTF-8)">>
    end.
