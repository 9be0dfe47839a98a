%% @doc Registering a session under a `gen_server'-style name from inside
%% the new process (the session starts with `proc_lib' and
%% `gen_server:enter_loop/4' so that start errors come back cleanly).
-module(ibkr_oauth_names).

-export([check/1, register/1, unregister/1]).

-export_type([name/0]).

-type name() :: {local, atom()} | {global, term()} | {via, module(), term()}.

%% @doc `ok' for `undefined' (no name) or a well-formed name.
-spec check(term()) -> ok | error.
check(undefined) -> ok;
check({local, N}) when is_atom(N) -> ok;
check({global, _}) -> ok;
check({via, M, _}) when is_atom(M) -> ok;
check(_) -> error.

%% @doc Registers the calling process; `{already_started, Pid}' as
%% `gen_server' says it, `{badarg, name}' for a `via' module that fails.
-spec register(name() | undefined) -> ok | {error, term()}.
register(undefined) -> ok;
register({local, N}) ->
    try erlang:register(N, self()) of
        true -> ok
    catch
        error:badarg -> {error, {already_started, whereis(N)}}
    end;
register({global, N}) ->
    case global:register_name(N, self()) of
        yes -> ok;
        no -> {error, {already_started, global:whereis_name(N)}}
    end;
register({via, M, N}) ->
    try M:register_name(N, self()) of
        yes -> ok;
        _ -> {error, {already_started, M:whereis_name(N)}}
    catch
        _:_ -> {error, {badarg, name}}
    end.

%% @doc Undoes {@link register/1} (a start that failed after it).
-spec unregister(name() | undefined) -> ok.
unregister(undefined) -> ok;
unregister({local, N}) -> _ = (catch erlang:unregister(N)), ok;
unregister({global, N}) -> _ = global:unregister_name(N), ok;
unregister({via, M, N}) -> _ = (catch M:unregister_name(N)), ok.
