%% @doc Which port commands a caller may send through a session as they are
%% (`ibkr_oauth:sign/3,4', `lst_request', `live_session_token', `echo',
%% `stats'); `init', `http', `authenticate', `cancel' and the websocket
%% commands are the session's own business. Pure.
-module(ibkr_oauth_passthrough).

-export([check/3]).

%% @doc `ok' when `Cmd' may go to the port now; `badarg' for a command a
%% caller may not send; `lst_expired' for a `sign' that would use the
%% session's LST (none given in its options) when that has expired at
%% `Now' (system ms): the port signs with whatever LST it holds, and a
%% request signed with an expired one would only earn a 401 later.
-spec check(term(), integer(), ibkr_oauth_lst:lst()) -> ok | badarg | lst_expired.
check({sign, _, _, Opts}, Now, L) when is_map(Opts) ->
    case not is_map_key(lst, Opts) andalso ibkr_oauth_lst:expired(Now, L) of
        true -> lst_expired;
        false -> ok
    end;
check(Cmd, _Now, _L) ->
    case allowed(Cmd) of
        true -> ok;
        false -> badarg
    end.

-spec allowed(term()) -> boolean().
allowed({sign, _, _, _}) -> true;
allowed({lst_request, _}) -> true;
allowed(live_session_token) -> true;
allowed({echo, _}) -> true;
allowed(stats) -> true;
allowed(_) -> false.
