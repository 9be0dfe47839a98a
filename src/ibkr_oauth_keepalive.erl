%% @doc Keep-alive and websocket policy: when the session tickles, what it
%% keeps from a `/tickle' answer, and what {@link ibkr_oauth:websocket_info/1}
%% returns. Pure: no process, the clock is passed in (system ms).
%%
%% <ul>
%% <li>The session `POST /tickle's every `tickle_interval' only while it does
%% its own HTTP (`managed'), no handshake runs and its LST is usable
%% ({@link wanted/3}); a `401' renews the LST ({@link tickle_done/1}).</li>
%% <li>From any `200' answer to `/tickle' (the session's or a caller's) it
%% keeps the JSON `session' value and the `api' cookie, with the time and
%% the LST epoch ({@link observe/4}).</li>
%% <li>{@link session/4}: that value while it is fresh (younger than 60 s,
%% same LST, LST not expired); otherwise `stale' and the session tickles
%% first.</li>
%% </ul>
-module(ibkr_oauth_keepalive).

-export([new/0, wanted/3, command/2, tickle_done/1, observe/4, session/4,
         websocket_info/3, websocket_reply/2, session_value/1]).

-export_type([state/0]).

%% What the last 200 to /tickle said: `session' and/or `cookie', `at'
%% (system ms), `epoch' (of the LST it was obtained with).
-type state() :: #{session => binary(), cookie => binary(),
                   at => integer(), epoch => non_neg_integer()}.

-define(FRESH_MS, 60000).

%% @doc Nothing seen yet.
-spec new() -> state().
new() -> #{}.

%% @doc Whether the session tickles now: `Managed' (it does its own HTTP),
%% `Idle' (no handshake running), `Usable' (its LST is usable).
-spec wanted(boolean(), boolean(), boolean()) -> boolean().
wanted(Managed, Idle, Usable) -> Managed andalso Idle andalso Usable.

%% @doc The port's `{http, Req}' map of the session's own tickle. It asks the
%% port to decode the answer as JSON (`decode => json'; a port that does not
%% know the key ignores it).
-spec command(binary(), pos_integer() | infinity) -> map().
command(BaseUrl, Timeout) ->
    #{method => <<"POST">>, url => <<BaseUrl/binary, "/tickle">>,
      headers => [], body => <<>>, timeout => Timeout, sign => true, decode => json}.

%% @doc What the session's own tickle answer asks for: nothing, a new LST
%% (the server no longer takes ours), or a line in the log.
-spec tickle_done(term()) -> ok | renew | {warning, io:format(), list()}.
tickle_done({ok, #{status := 200}}) -> ok;
tickle_done({ok, #{status := 401}}) -> renew;
tickle_done({ok, #{status := S}}) -> {warning, "POST /tickle answered ~b", [S]};
tickle_done(Other) ->
    {warning, "POST /tickle failed: ~p", [ibkr_oauth_redact:scrub_error(Other)]}.

%% @doc Keeps what the websocket needs from a `/tickle' answer: its `session'
%% and `api' cookie, seen at `Now' with the LST of `Epoch'. Any other
%% answer leaves the state as it is.
-spec observe(term(), integer(), non_neg_integer(), state()) -> state().
observe({ok, #{status := 200, headers := H}} = Reply, Now, Epoch, _KA) ->
    Cookie = case [C || {N, V} <- H, N =:= <<"set-cookie">>, C <- [api_cookie(V)], C =/= none] of
                 [C | _] -> #{cookie => C};
                 [] -> #{}
             end,
    Session = case session_value(Reply) of
                  {ok, S} -> #{session => S};
                  error -> #{}
              end,
    maps:merge(Cookie, Session#{at => Now, epoch => Epoch});
observe(_, _Now, _Epoch, KA) -> KA.

-spec api_cookie(binary()) -> binary() | none.
api_cookie(V) ->
    case re:run(V, <<"^\\s*api=([^;]*)">>, [{capture, all_but_first, binary}]) of
        {match, [C]} -> C;
        nomatch -> none
    end.

%% @doc The `session' string of a `/tickle' answer, from `json' (every
%% `/tickle' asks the port to decode its answer).
-spec session_value(term()) -> {ok, binary()} | error.
session_value({ok, #{json := #{<<"session">> := S}}}) when is_binary(S) -> {ok, S};
session_value({ok, #{json := _}}) -> error;
session_value(_) -> error.

%% @doc The value for the websocket's `api' cookie if a fresh one is known:
%% seen less than 60 s ago with the current LST (`Epoch'), which is still
%% `Live'.
-spec session(integer(), non_neg_integer(), boolean(), state()) -> {ok, binary()} | stale.
session(Now, Epoch, Live, #{at := At, epoch := Epoch} = KA) when Live, Now - At < ?FRESH_MS ->
    case KA of
        #{session := S} -> {ok, S};
        #{cookie := C} -> {ok, C};
        #{} -> stale
    end;
session(_Now, _Epoch, _Live, _KA) -> stale.

%% @doc What IBKR's websocket needs with OAuth: the access token in the URL
%% and the `/tickle' session as the `api' cookie.
-spec websocket_info(binary(), binary(), binary()) -> map().
websocket_info(Session, BaseUrl, AccessToken) ->
    WsBase = case BaseUrl of
                 <<"https://", Rest/binary>> -> <<"wss://", Rest/binary>>;
                 <<"http://", Rest/binary>> -> <<"ws://", Rest/binary>>
             end,
    Query = uri_string:compose_query([{<<"oauth_token">>, AccessToken}]),
    Cookie = <<"api=", Session/binary>>,
    #{url => iolist_to_binary([WsBase, <<"/ws?">>, Query]),
      session => Session,
      cookie => Cookie,
      headers => [{<<"cookie">>, Cookie}, {<<"user-agent">>, <<"ibkr_oauth">>}]}.

%% @doc The answer to `websocket_info/1' once the `/tickle' it made is back,
%% given what {@link session/4} says after {@link observe/4}. An answer
%% other than 200 is `{http, Status, Body}', or `{ibkr, Kind, Info}' when it
%% is one of IBKR's own errors.
-spec websocket_reply(term(), {ok, binary()} | stale) -> {ok, binary()} | {error, term()}.
websocket_reply({ok, #{status := 200}}, {ok, Session}) -> {ok, Session};
websocket_reply({ok, #{status := 200}}, stale) -> {error, {bad_response, missing_field}};
websocket_reply({ok, #{status := S, body := B}}, _) ->
    {error, ibkr_oauth_ibkr_error:from_reason({http, S, B})};
websocket_reply({error, _} = E, _) -> E;
websocket_reply(_, _) -> {error, bad_reply}.
