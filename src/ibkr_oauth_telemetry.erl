%% @doc `telemetry' events, sent only when the `telemetry' library is present
%% at run time. It is an optional dependency: nothing here needs it to build
%% or test, and without it {@link execute/3} does nothing.
%%
%% Events (durations in `native' time units, convert with
%% `erlang:convert_time_unit/3'):
%% <ul>
%% <li>`[ibkr_oauth, request, start]': `#{system_time, monotonic_time}',
%%     metadata `#{method, path, attempt}';</li>
%% <li>`[ibkr_oauth, request, stop]': `#{duration, queued_ms}', metadata
%%     `#{method, path, attempt, status}' (`status' an HTTP status or
%%     `error');</li>
%% <li>`[ibkr_oauth, request, exception]': `#{duration}', metadata
%%     `#{method, path, attempt, reason}' (a request that ended in
%%     `{error, Reason}' without an HTTP answer);</li>
%% <li>`[ibkr_oauth, handshake, stop]': `#{duration}', metadata
%%     `#{result => ok | error, reason => term()}';</li>
%% <li>`[ibkr_oauth, rate_limit, queued]': `#{queued_ms}', metadata
%%     `#{path}';</li>
%% <li>`[ibkr_oauth, port, exit]': `#{count => 1}', metadata
%%     `#{reason, os_pid}'.</li>
%% </ul>
%% Metadata never holds headers, bodies, tokens or keys (the same fields as
%% the log events). Every event's metadata also carries `session => pid()'
%% when the caller adds it.
-module(ibkr_oauth_telemetry).

-export([execute/3, events/0, available/0, reset/0]).
-export([request_start/1, request_stop/3, request_exception/3, handshake_stop/2,
         rate_limit_queued/2, port_exit/2]).

-define(KEY, {?MODULE, available}).

%% @doc Every event name this application emits.
-spec events() -> [[atom(), ...], ...].
events() ->
    [[ibkr_oauth, request, start], [ibkr_oauth, request, stop],
     [ibkr_oauth, request, exception], [ibkr_oauth, handshake, stop],
     [ibkr_oauth, rate_limit, queued], [ibkr_oauth, port, exit]].

%% @doc Sends one event through `telemetry:execute/3' when `telemetry' is
%% available; a handler that crashes is telemetry's business (it detaches
%% it), and any other failure is ignored: observability never breaks a
%% request.
-spec execute([atom(), ...], map(), map()) -> ok.
execute(Event, Measurements, Metadata) ->
    case module() of
        false -> ok;
        Mod ->
            try
                _ = Mod:execute(Event, Measurements, Metadata),
                ok
            catch
                _:_ -> ok
            end
    end.

%% @doc Whether the `telemetry' module can be loaded. Checked once per node
%% and cached in `persistent_term'; {@link reset/0} forgets the answer (e.g.
%% after loading telemetry late).
-spec available() -> boolean().
available() -> module() =/= false.

%% The telemetry module, or false. The module name is data (not a literal
%% remote call), so nothing at build time refers to telemetry.
-spec module() -> module() | false.
module() ->
    case persistent_term:get(?KEY, undefined) of
        undefined ->
            Mod = telemetry,
            M = case code:ensure_loaded(Mod) of
                    {module, Mod} ->
                        case erlang:function_exported(Mod, execute, 3) of
                            true -> Mod;
                            false -> false
                        end;
                    {error, _} -> false
                end,
            persistent_term:put(?KEY, M),
            M;
        M -> M
    end.

%% @doc Forgets the cached {@link available/0} answer.
-spec reset() -> ok.
reset() ->
    _ = persistent_term:erase(?KEY),
    ok.

%%% The events with their measurements, for the session to call. Each
%%% `*_start' returns the start time (`erlang:monotonic_time()', native
%%% units) that the matching stop takes.

%% @doc `[ibkr_oauth, request, start]'; returns the start time.
-spec request_start(map()) -> integer().
request_start(Metadata) ->
    Start = erlang:monotonic_time(),
    execute([ibkr_oauth, request, start],
            #{system_time => erlang:system_time(), monotonic_time => Start}, Metadata),
    Start.

%% @doc `[ibkr_oauth, request, stop]' with `duration' since `Start' plus
%% `Extra' measurements (e.g. `queued_ms').
-spec request_stop(integer(), map(), map()) -> ok.
request_stop(Start, Extra, Metadata) ->
    execute([ibkr_oauth, request, stop], Extra#{duration => erlang:monotonic_time() - Start}, Metadata).

%% @doc `[ibkr_oauth, request, exception]': the request ended in `{error,
%% Reason}' without an HTTP answer (`Metadata' carries `reason').
-spec request_exception(integer(), map(), map()) -> ok.
request_exception(Start, Extra, Metadata) ->
    execute([ibkr_oauth, request, exception], Extra#{duration => erlang:monotonic_time() - Start},
            Metadata).

%% @doc `[ibkr_oauth, handshake, stop]' with `duration' since `Start'.
-spec handshake_stop(integer(), map()) -> ok.
handshake_stop(Start, Metadata) ->
    execute([ibkr_oauth, handshake, stop], #{duration => erlang:monotonic_time() - Start}, Metadata).

%% @doc `[ibkr_oauth, rate_limit, queued]'.
-spec rate_limit_queued(non_neg_integer(), map()) -> ok.
rate_limit_queued(QueuedMs, Metadata) ->
    execute([ibkr_oauth, rate_limit, queued], #{queued_ms => QueuedMs}, Metadata).

%% @doc `[ibkr_oauth, port, exit]'.
-spec port_exit(term(), non_neg_integer() | undefined) -> ok.
port_exit(Reason, OsPid) ->
    execute([ibkr_oauth, port, exit], #{count => 1}, #{reason => Reason, os_pid => OsPid}).
