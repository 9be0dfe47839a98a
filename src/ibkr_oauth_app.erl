%% @doc The `ibkr_oauth' application: starts {@link ibkr_oauth_sup}.
-module(ibkr_oauth_app).
-behaviour(application).

-export([start/2, stop/1]).

%% @private
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    ibkr_oauth_sup:start_link().

%% @private
-spec stop(term()) -> ok.
stop(_State) ->
    ok.
