%% @doc The session's synchronous conversations with its port, done outside
%% the `gen_server' loop with a bound each: the `init' at start, the
%% `POST /logout' at stop, the flush of a closed port's messages; and the
%% logging of the port's unprompted events. The caller owns the port.
-module(ibkr_oauth_port_io).

-export([open/2, init/3, logout/4, flush/1, event/1]).

-define(META, #{domain => [ibkr_oauth], ibkr_oauth => session}).

%% @doc Opens the port program and initialises it with {@link init/3}; on
%% failure the port is closed again.
-spec open(map(), timeout()) -> {ok, port(), non_neg_integer() | undefined} | {error, term()}.
open(PortCfg, Timeout) ->
    case ibkr_oauth_port:open() of
        {ok, Port, OsPid} ->
            case init(Port, PortCfg, Timeout) of
                ok -> {ok, Port, OsPid};
                {error, _} = E ->
                    ibkr_oauth_port:close(Port),
                    flush(Port),
                    E
            end;
        {error, _} = E -> E
    end.

%% @doc Sends `init' as id 1 and waits up to `Timeout' ms for its answer;
%% events are logged meanwhile.
-spec init(port(), map(), timeout()) -> ok | {error, term()}.
init(Port, PortCfg, Timeout) ->
    case ibkr_oauth_port:send(Port, 1, {init, PortCfg}) of
        ok -> await_init(Port, now_ms() + Timeout);
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
                {ok, 0, Event} -> event(Event), await_init(Port, Deadline);
                _ -> await_init(Port, Deadline)
            end;
        {Port, {exit_status, S}} -> {error, {port_exit, S}};
        {'EXIT', Port, _} -> {error, port_down}
    after max(0, Deadline - now_ms()) ->
        {error, timeout}
    end.

%% @doc `POST {BaseUrl}/logout' as `Id' (nothing else is in flight), waiting
%% up to `Timeout' ms (plus 0.5 s) for the answer. Never fails: a refusal
%% or no answer is logged.
-spec logout(port(), ibkr_oauth_port:id(), binary(), pos_integer()) -> ok.
logout(Port, Id, BaseUrl, Timeout) ->
    Cmd = {http, #{method => <<"POST">>, url => <<BaseUrl/binary, "/logout">>,
                   headers => [], body => <<>>, timeout => Timeout, sign => true}},
    case ibkr_oauth_port:send(Port, Id, Cmd) of
        ok -> await_logout(Port, Id, now_ms() + Timeout + 500);
        {error, _} -> ok
    end.

-spec await_logout(port(), ibkr_oauth_port:id(), integer()) -> ok.
await_logout(Port, Id, Deadline) ->
    receive
        {Port, {data, Bin}} ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, Id, {ok, #{status := S}}} when S >= 200, S < 300 -> ok;
                {ok, Id, Reply} ->
                    logger:notice("ibkr_oauth: POST /logout: ~p",
                                  [ibkr_oauth_redact:scrub_error(Reply)], ?META);
                _ -> await_logout(Port, Id, Deadline)
            end;
        {Port, {exit_status, _}} -> ok
    after max(0, Deadline - now_ms()) ->
        logger:notice("ibkr_oauth: POST /logout did not answer in time", [], ?META)
    end.

%% @doc Drops every message a (closed) port left in the mailbox.
-spec flush(port()) -> ok.
flush(Port) ->
    receive
        {Port, _} -> flush(Port);
        {'EXIT', Port, _} -> flush(Port)
    after 0 -> ok
    end.

%% @doc Logs an unprompted event of the port (`{0, Event}').
-spec event(term()) -> ok.
event({log, Level, Msg}) when is_binary(Msg) ->
    L = case lists:member(Level, [debug, info, notice, warning, error]) of
            true -> Level;
            false -> error
        end,
    logger:log(L, "ibkr_oauth_port: ~ts", [Msg], ?META);
event({protocol_error, Why}) ->
    logger:error("ibkr_oauth_port: protocol error ~p", [ibkr_oauth_redact:scrub(Why)], ?META);
event(Other) ->
    logger:warning("ibkr_oauth_port: unknown event ~p", [ibkr_oauth_redact:scrub(Other)], ?META).

-spec now_ms() -> integer().
now_ms() -> erlang:monotonic_time(millisecond).
