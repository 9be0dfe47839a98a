%% A gen_server that is not a session (session_api_SUITE:not_a_session):
%% it answers every call `ok'.
-module(session_api_SUITE_other).
-behaviour(gen_server).
-export([init/1, handle_call/3, handle_cast/2]).

init([]) -> {ok, []}.
handle_call(_Request, _From, St) -> {reply, ok, St}.
handle_cast(_Msg, St) -> {noreply, St}.
