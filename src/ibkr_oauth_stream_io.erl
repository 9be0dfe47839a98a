%% @doc The session's side of streaming, without its process: what goes
%% into the pure {@link ibkr_oauth_stream} policy and what its actions need.
%% It turns the port's and the requests' answers into the policy's inputs
%% (`ws_open', `/tickle', `ssodh/init'), says which requests and port
%% commands the policy's actions are, and when its one timer must be re-armed.
%% No decision of the stream policy is taken here; the session runs what
%% comes back.
-module(ibkr_oauth_stream_io).

-export([new/1, call/1, ws_open/2, ws_open_input/1, http_input/2, tickle_result/1,
         rearm/3, stopped/2]).
-export_type([timer/0]).

-define(SSODH_PATH, <<"/iserver/auth/ssodh/init">>).

%% The armed timer: its reference, the tag of its message and when it is
%% due (monotonic ms).
-type timer() :: {reference(), reference(), integer()} | undefined.

%% @doc The stream policy for a validated config, its jitter seeded here.
-spec new(ibkr_oauth_config:validated()) -> ibkr_oauth_stream:state().
new(V) ->
    Seed = {erlang:unique_integer(), erlang:monotonic_time(), erlang:system_time()},
    ibkr_oauth_stream:new(#{smd_refresh_interval => maps:get(smd_refresh_interval, V),
                            seed => Seed}).

%% @doc The internal request a `tickle' or `ssodh_init' action is:
%% `{Method, Path, Headers, Body}', as `request/4' takes it.
-spec call(tickle | ssodh) -> {post, binary(), [{binary(), binary()}], binary()}.
call(tickle) -> {post, <<"/tickle">>, [], <<>>};
call(ssodh) ->
    {post, ?SSODH_PATH, [{<<"content-type">>, <<"application/json">>}],
     <<"{\"publish\":true,\"compete\":true}">>}.

%% @doc The port's `ws_open' options for the policy's `ws_open' action.
-spec ws_open(#{cookie := binary()}, pos_integer()) -> map().
ws_open(#{cookie := Cookie}, Timeout) ->
    #{cookie => Cookie, user_agent => <<"ibkr_oauth">>, timeout => Timeout}.

%% @doc The policy's input for the answer to the latest `ws_open'.
-spec ws_open_input(term()) -> ibkr_oauth_stream:input().
ws_open_input({ok, Conn}) when is_integer(Conn) -> {ws_opened, Conn};
ws_open_input({error, Reason}) -> {ws_open_failed, ibkr_oauth_redact:scrub_reason(Reason)};
ws_open_input(Other) -> {ws_open_failed, {bad_reply, ibkr_oauth_redact:scrub(Other)}}.

%% @doc The policy's input for the answer to its tickle or `ssodh/init'
%% request (`none' for an answer it does not read).
-spec http_input(tickle | ssodh | term(), term()) -> ibkr_oauth_stream:input() | none.
http_input(tickle, Reply) -> {tickle_result, tickle_result(Reply)};
http_input(ssodh, {ok, #{status := S}}) when S >= 200, S < 300 -> {ssodh_result, ok};
http_input(ssodh, {ok, #{status := S}}) -> {ssodh_result, {error, {http, S}}};
http_input(ssodh, {error, R}) -> {ssodh_result, {error, ibkr_oauth_redact:scrub_reason(R)}};
http_input(_, _) -> none.

%% @doc What the stream needs from a `/tickle' answer: the `session' (the
%% websocket's cookie) and whether the brokerage session is open.
-spec tickle_result(term()) -> {ok, #{session := binary(), iserver := boolean()}} | {error, term()}.
tickle_result({ok, #{status := 200, json := #{<<"session">> := Session} = J}})
  when is_binary(Session), Session =/= <<>> ->
    Iserver = case J of
                  #{<<"iserver">> := #{<<"authStatus">> := #{<<"authenticated">> := true}}} -> true;
                  _ -> false
              end,
    {ok, #{session => Session, iserver => Iserver}};
tickle_result({ok, #{status := 200}}) -> {error, {bad_response, missing_field}};
tickle_result({ok, #{status := S}}) -> {error, {http, S}};
tickle_result({error, R}) -> {error, ibkr_oauth_redact:scrub_reason(R)};
tickle_result(_) -> {error, bad_reply}.

%% @doc What a `{timer, tick, Ms}' action does to the armed timer `Old' at
%% `Now' (monotonic ms): `keep' it, `cancel' it (`infinity'), or `{arm, Due}'
%% a new one after cancelling `Old' if any. Most inputs (every message) move
%% the next deadline a little later: a timer due earlier is kept (an early
%% tick does nothing but ask for the next one), so a busy stream does not
%% re-arm a timer per message.
-spec rearm(timer(), integer(), non_neg_integer() | infinity) -> keep | cancel | {arm, integer()}.
rearm(_Old, _Now, infinity) -> cancel;
rearm({_, _, OldDue}, Now, Ms) when OldDue =< Now + Ms -> keep;
rearm(_Old, Now, Ms) -> {arm, Now + Ms}.

%% @doc On stop: the messages the policy has for its subscribers (each one
%% that is up hears that its stream is down), sent here.
-spec stopped(ibkr_oauth_stream:state(), integer()) -> ok.
stopped(S, Now) ->
    {Actions, _} = ibkr_oauth_stream:handle(stop, Now, S),
    _ = [Pid ! {ibkr_oauth, Sub, Msg} || {deliver, Pid, Sub, Msg} <- Actions],
    ok.
