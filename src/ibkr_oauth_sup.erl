%% @doc Top supervisor of the `ibkr_oauth' application: a
%% `simple_one_for_one' supervisor of sessions started with
%% {@link ibkr_oauth:start_session/1}. Sessions are `temporary' (a stopped
%% session is not restarted: the port inside a session is already restarted
%% by the session itself). Sessions started with
%% {@link ibkr_oauth:start_link/1} or put in your own supervision tree with
%% {@link ibkr_oauth:child_spec/1} do not involve this supervisor. A
%% `{cluster, Name}' child is this node's claimant ({@link ibkr_oauth_cluster}).
-module(ibkr_oauth_sup).
-behaviour(supervisor).

-export([start_link/0, start_session/1, start_child/1, start_child/2]).
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

%% @private The child's start function: a session, or with
%% `{cluster, Name}' this node's claimant for the cluster session.
-spec start_child(term()) -> {ok, pid()} | {error, term()}.
start_child(Config) ->
    ibkr_oauth_session:start_link(Config).

%% @private
-spec start_child(term(), term()) -> {ok, pid()} | {error, term()}.
start_child({cluster, Name}, Config) ->
    ibkr_oauth_cluster:start_link(Name, Config);
start_child(Name, Config) ->
    ibkr_oauth_session:start_link(Name, Config).

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    SupFlags = #{strategy => simple_one_for_one, intensity => 10, period => 10},
    %% 20 s: a cluster claimant stops its session first (15 s at most)
    Child = #{id => ibkr_oauth_session,
              start => {?MODULE, start_child, []},
              restart => temporary,
              shutdown => 20000,
              type => worker,
              modules => [ibkr_oauth_session, ibkr_oauth_cluster]},
    {ok, {SupFlags, [Child]}}.
