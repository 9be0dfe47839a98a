%% @doc The decisions of a cluster claimant ({@link ibkr_oauth_cluster}):
%% pure, no processes, no clock, the randomness passed in.
%%
%% A claimant tries to start the session registered under a global name.
%% What it does next depends on what happened:
%% <ul>
%% <li>the start succeeded: it owns the session (`{own, Pid}');</li>
%% <li>another node's session holds the name: it monitors that one
%%     (`{watch, Pid}');</li>
%% <li>the start failed, or the name vanished in between: it tries again
%%     after a backoff (`{claim_after, Ms}');</li>
%% <li>the session it owned or watched went down: it tries again after a
%%     short random delay, so that the claimants of the other nodes do not
%%     all ask at the same instant.</li>
%% </ul>
%% The backoff is exponential with "equal jitter" (half fixed, half random),
%% from {@link base_ms/0} up to {@link max_ms/0}. A session that went down
%% after living less than {@link stable_ms/0} does not reset it: a session
%% that keeps dying right after its start (bad key file on the node that
%% wins, server refusing) costs one attempt per backoff period, not a busy
%% loop of handshakes.
%%
%% {@link keep/2} chooses which of two sessions stays when `global' finds
%% the name registered twice after a net split heals.
-module(ibkr_oauth_claim).

-export([new/0, next/3, delay/2, keep/2, attempts/1,
         base_ms/0, max_ms/0, spread_ms/0, stable_ms/0]).

-export_type([claim/0, event/0, action/0]).

-define(BASE_MS, 500).
-define(MAX_MS, 30000).
-define(SPREAD_MS, 250).
-define(STABLE_MS, 10000).

-opaque claim() :: #{attempts := non_neg_integer()}.
%% `{started, Result}': what `ibkr_oauth_session:start_link/2' returned.
%% `{down, LivedMs}': the session owned or watched ended, after living
%% about `LivedMs' since this claimant saw it start or began to watch it.
-type event() :: {started, {ok, pid()} | {error, term()}}
               | {down, non_neg_integer()}.
-type action() :: {own, pid()} | {watch, pid()} | {claim_after, non_neg_integer()}.

%% @doc A claimant that has not tried yet.
-spec new() -> claim().
new() -> #{attempts => 0}.

%% @doc Failed attempts in a row (what the next backoff is based on).
-spec attempts(claim()) -> non_neg_integer().
attempts(#{attempts := N}) -> N.

%% @doc What to do after `Event'. `U' is a uniform random number in
%% `[0, 1)' (the jitter).
-spec next(event(), claim(), float()) -> {action(), claim()}.
next({started, {ok, Pid}}, C, _U) when is_pid(Pid) ->
    {{own, Pid}, C};
next({started, {error, {already_started, Pid}}}, C, _U) when is_pid(Pid) ->
    %% somebody else runs it; whether it lasts is judged when it goes down
    {{watch, Pid}, C};
next({started, {error, _}}, #{attempts := N} = C, U) ->
    %% a failed start, or the holder of the name vanished in between
    {{claim_after, delay(N + 1, U)}, C#{attempts := N + 1}};
next({down, Lived}, C, U) when Lived >= ?STABLE_MS ->
    {{claim_after, spread(U)}, C#{attempts := 0}};
next({down, _Lived}, #{attempts := N} = C, U) ->
    %% a short-lived session: back off as for a failed start
    {{claim_after, spread(U) + delay(N, U)}, C#{attempts := N + 1}}.

%% @doc The backoff before attempt `Attempts + 1' after `Attempts' failures:
%% `0' for none, else `B / 2 + U * B / 2' with
%% `B = min(max_ms(), base_ms() * 2^(Attempts - 1))'.
-spec delay(non_neg_integer(), float()) -> non_neg_integer().
delay(0, _U) -> 0;
delay(Attempts, U) ->
    B = min(?MAX_MS, ?BASE_MS bsl min(Attempts - 1, 16)),
    B div 2 + trunc(clamp(U) * (B div 2)).

%% @doc Of two sessions holding the same global name (a net split healed),
%% the one to keep: the one on the node whose name sorts first. Every node
%% would choose the same, whichever node `global' asks.
-spec keep(pid(), pid()) -> pid().
keep(Pid1, Pid2) ->
    case {node(Pid1), Pid1} =< {node(Pid2), Pid2} of
        true -> Pid1;
        false -> Pid2
    end.

%% @doc First backoff step (ms).
-spec base_ms() -> pos_integer().
base_ms() -> ?BASE_MS.
%% @doc Longest backoff (ms).
-spec max_ms() -> pos_integer().
max_ms() -> ?MAX_MS.
%% @doc Claims after a session went down are spread over `[0, spread_ms())'.
-spec spread_ms() -> pos_integer().
spread_ms() -> ?SPREAD_MS.
%% @doc A session that lived this long (ms) resets the backoff.
-spec stable_ms() -> pos_integer().
stable_ms() -> ?STABLE_MS.

-spec spread(float()) -> non_neg_integer().
spread(U) -> trunc(clamp(U) * ?SPREAD_MS).

-spec clamp(float()) -> float().
clamp(U) when U < 0.0 -> 0.0;
clamp(U) when U >= 1.0 -> 0.999999;
clamp(U) -> U.
