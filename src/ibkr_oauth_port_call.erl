%% @doc A port of its own, used synchronously by `setup' and `doctor': open,
%% send one command at a time and wait for its answer, close. Sessions do
%% not use this (they route many concurrent replies, see
%% {@link ibkr_oauth_session}). Runs in the calling process, which owns the
%% port; events (`{0, Event}') go to an optional callback.
-module(ibkr_oauth_port_call).

-export([open/0, call/3, call/4, close/1]).

%% @doc Opens the port program ({@link ibkr_oauth_port:path/0}).
-spec open() -> {ok, port()} | {error, term()}.
open() ->
    case ibkr_oauth_port:open() of
        {ok, Port, _OsPid} -> {ok, Port};
        {error, _} = E -> E
    end.

%% @doc Sends `Command' and waits up to `Timeout' ms for its answer.
%% @equiv call(Port, Command, Timeout, fun(_) -> ok end)
-spec call(port(), term(), timeout()) -> term().
call(Port, Command, Timeout) -> call(Port, Command, Timeout, fun(_) -> ok end).

%% @doc Sends `Command' and waits for its answer, giving every event the
%% port sends meanwhile (`{log, ...}', `{progress, Id, Stage}') to
%% `OnEvent'. The answer is the port's reply term (`ok', `{ok, _}',
%% `{error, _}'); `{error, timeout}' or `{error, port_down}' otherwise.
-spec call(port(), term(), timeout(), fun((term()) -> term())) -> term().
call(Port, Command, Timeout, OnEvent) ->
    Id = erlang:unique_integer([positive]),
    case ibkr_oauth_port:send(Port, Id, Command) of
        ok ->
            Deadline = case Timeout of
                           infinity -> infinity;
                           _ -> erlang:monotonic_time(millisecond) + Timeout
                       end,
            wait(Port, Id, Deadline, OnEvent);
        {error, _} = E -> E
    end.

-spec wait(port(), pos_integer(), integer() | infinity, fun((term()) -> term())) -> term().
wait(Port, Id, Deadline, OnEvent) ->
    After = case Deadline of
                infinity -> infinity;
                _ -> max(0, Deadline - erlang:monotonic_time(millisecond))
            end,
    receive
        {Port, {data, Bin}} ->
            case ibkr_oauth_port:decode(Bin) of
                {ok, Id, Reply} -> Reply;
                {ok, 0, Event} ->
                    _ = OnEvent(Event),
                    wait(Port, Id, Deadline, OnEvent);
                _ -> wait(Port, Id, Deadline, OnEvent)
            end;
        {Port, {exit_status, _}} -> {error, port_down}
    after After ->
        {error, timeout}
    end.

%% @doc Closes the port and drops its messages still in the mailbox.
-spec close(port()) -> ok.
close(Port) ->
    ok = ibkr_oauth_port:close(Port),
    ibkr_oauth_port_io:flush(Port).
