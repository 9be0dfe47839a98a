%% @doc Top supervisor of the `ibkr_oauth' application: a
%% `simple_one_for_one' supervisor of sessions started with
%% {@link ibkr_oauth:start_session/1}. Sessions are `temporary' (a stopped
%% session is not restarted: the port inside a session is already restarted
%% by the session itself). Sessions started with
%% {@link ibkr_oauth:start_link/1} or put in your own supervision tree with
%% {@link ibkr_oauth:child_spec/1} do not involve this supervisor.
-module(ibkr_oauth_sup).
-behaviour(supervisor).

-export([start_link/0, start_session/1]).
-export([init/1]).

%% @doc Starts the supervisor, registered as `ibkr_oauth_sup'.
-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc Starts one session under the supervisor; `Args' is `[Config]' or
%% `[Name, Config]'. `{error, noproc}' when the application is not running.
-spec start_session([term()]) -> {ok, pid()} | {error, term()}.
start_session(Args) ->
    try supervisor:start_child(?MODULE, Args) of
        {ok, Pid} when is_pid(Pid) -> {ok, Pid};
        {ok, Pid, _Info} when is_pid(Pid) -> {ok, Pid};
        {error, _} = E -> E;
        Other -> {error, Other}
    catch
        exit:{noproc, _} -> {error, noproc};
        exit:{Reason, _} -> {error, Reason}
    end.

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    SupFlags = #{strategy => simple_one_for_one, intensity => 10, period => 10},
    Child = #{id => ibkr_oauth_session,
              start => {ibkr_oauth_session, start_link, []},
              restart => temporary,
              shutdown => 10000,
              type => worker,
              modules => [ibkr_oauth_session]},
    {ok, {SupFlags, [Child]}}.
