%% @doc Whether a session opens a new port after its port exited: yes, up to
%% 5 exits within 30 s; the 6th within that window gives up (the session
%% stops with `{shutdown, port_restart_limit}' and its supervisor decides).
%% A port that keeps dying means a broken build, host or config, which
%% starting the same program again will not fix. Pure: the clock (monotonic
%% ms) is passed in.
-module(ibkr_oauth_restart).

-export([new/0, exited/2, max/0, window/0]).

-export_type([restarts/0]).

%% The times of the exits within the window, newest first.
-opaque restarts() :: [integer()].

-define(MAX, 5).
-define(WINDOW, 30000).

-spec new() -> restarts().
new() -> [].

%% @doc The most port exits within {@link window/0} that are restarted.
-spec max() -> pos_integer().
max() -> ?MAX.

%% @doc The window, ms.
-spec window() -> pos_integer().
window() -> ?WINDOW.

%% @doc The port exited at `Now': restart it, or give up.
-spec exited(integer(), restarts()) -> {restart | give_up, restarts()}.
exited(Now, Exits0) ->
    Exits = [Now | [T || T <- Exits0, Now - T < ?WINDOW]],
    case length(Exits) > ?MAX of
        true -> {give_up, Exits};
        false -> {restart, Exits}
    end.
