%% @doc The session's rate limiter: a pure data structure (no process, no
%% clock of its own: every call takes `Now', monotonic milliseconds), used
%% by {@link ibkr_oauth_session} to queue requests rather than exceed
%% IBKR's pacing limits.
%%
%% <h3>Keys and rules</h3>
%% A request counts against the key `global' (all requests of the session)
%% and against at most one endpoint rule `{Prefix, Limit, PeriodMs}': the
%% one with the longest `Prefix' matching its path (the path equals the
%% prefix or continues with `/'; for equal prefixes the later rule wins, so
%% a rule appended to {@link ibkr_endpoints/0} overrides it). Each key allows
%% at most `Limit' requests per `PeriodMs'.
%%
%% <h3>Why a slot is held until the answer plus one period</h3>
%% The server counts requests when they arrive, somewhere between the moment
%% we send them and the moment their answer is back. A slot is therefore
%% taken when a request is sent ({@link acquire/3}) and stays taken until
%% `PeriodMs' after its answer came back ({@link complete/3}). Then for any
%% window of `PeriodMs' the server sees at most `Limit' arrivals, whatever
%% the network delays: of `Limit + 1' arrivals in one window, the last one
%% sent would have found the other `Limit' slots taken (each still in
%% flight, or answered less than `PeriodMs' before it was sent). The cost
%% is one round trip per period of throughput.
-module(ibkr_oauth_ratelimit).

-export([new/1, ibkr_endpoints/0, default_spec/0, keys/2,
         acquire/3, complete/3, release/2, in_flight/1, min_wait/2]).

-export_type([limiter/0, spec/0, rule/0, key/0, token/0]).

%% `global => none' disables the global limit; `none' disables both.
-type spec() :: none | #{global := pos_integer() | none, endpoints := [rule()]}.
-type rule() :: {Prefix :: binary(), Limit :: pos_integer(), PeriodMs :: pos_integer()}.
-type key() :: global | binary().
%% The keys a request holds a slot of; hand it back to complete/3 or release/2.
-type token() :: [key()].

-record(bucket, {
    limit :: pos_integer(),
    period :: pos_integer(),
    in_flight = 0 :: non_neg_integer(),
    done = queue:new() :: queue:queue(integer())   % answer times, oldest first
}).

-record(lim, {
    rules = [] :: [{binary(), pos_integer(), pos_integer()}],   % longest prefix first
    buckets = #{} :: #{key() => #bucket{}}
}).

-opaque limiter() :: #lim{}.

-define(SECOND, 1000).
-define(FIVE_S, 5000).
-define(MINUTE, 60000).
-define(QUARTER_HOUR, 900000).

%% @doc IBKR's documented per-endpoint pacing limits (Web API "Pacing
%% Limitations", per authenticated username): `{Prefix, Limit, PeriodMs}'.
%% Where IBKR lists a family (`/fyi/...', each 1 request/s) one shared rule
%% covers it: stricter than needed, never looser. Both the current and the
%% legacy paths of the orders and trades endpoints are listed. IBKR's "5
%% concurrent requests" for `/iserver/marketdata/history' becomes 5 per
%% 1 ms: a slot is held while in flight, so at most 5 run at once.
-spec ibkr_endpoints() -> [rule()].
ibkr_endpoints() ->
    [{<<"/iserver/marketdata/snapshot">>, 10, ?SECOND},
     {<<"/iserver/marketdata/history">>, 5, 1},
     {<<"/iserver/scanner/params">>, 1, ?QUARTER_HOUR},
     {<<"/iserver/scanner/run">>, 1, ?SECOND},
     {<<"/iserver/trades">>, 1, ?FIVE_S},
     {<<"/iserver/account/trades">>, 1, ?FIVE_S},
     {<<"/iserver/orders">>, 1, ?FIVE_S},
     {<<"/iserver/account/orders">>, 1, ?FIVE_S},
     {<<"/iserver/account/pnl/partitioned">>, 1, ?FIVE_S},
     {<<"/portfolio/accounts">>, 1, ?FIVE_S},
     {<<"/portfolio/subaccounts">>, 1, ?FIVE_S},
     {<<"/pa/performance">>, 1, ?QUARTER_HOUR},
     {<<"/pa/summary">>, 1, ?QUARTER_HOUR},
     {<<"/pa/transactions">>, 1, ?QUARTER_HOUR},
     {<<"/fyi">>, 1, ?SECOND},
     {<<"/tickle">>, 1, ?SECOND},
     {<<"/sso/validate">>, 1, ?MINUTE}].

%% @doc The default of the `rate_limit' option: IBKR's global limit of 50
%% requests per second per session and {@link ibkr_endpoints/0}.
-spec default_spec() -> spec().
default_spec() ->
    #{global => 50, endpoints => ibkr_endpoints()}.

%% @doc A limiter with no request in flight. `none' never makes anyone wait.
%% The spec is trusted (`ibkr_oauth_config' validates it).
-spec new(spec()) -> limiter().
new(none) ->
    #lim{};
new(#{global := Global, endpoints := Rules}) ->
    %% Later rules win for equal prefixes: keep the last of each, then sort
    %% by length, longest first.
    Unique = maps:to_list(maps:from_list([{P, {L, T}} || {P, L, T} <- Rules])),
    Sorted = lists:sort(fun({A, _}, {B, _}) -> byte_size(A) >= byte_size(B) end, Unique),
    Buckets0 = maps:from_list([{P, #bucket{limit = L, period = T}} || {P, {L, T}} <- Sorted]),
    Buckets = case Global of
                  none -> Buckets0;
                  N -> Buckets0#{global => #bucket{limit = N, period = ?SECOND}}
              end,
    #lim{rules = [{P, L, T} || {P, {L, T}} <- Sorted], buckets = Buckets}.

%% @doc The keys a request for `Path' (relative to `base_url', without the
%% query) counts against.
-spec keys(binary(), limiter()) -> [key()].
keys(Path, #lim{rules = Rules, buckets = B}) ->
    Global = case is_map_key(global, B) of
                 true -> [global];
                 false -> []
             end,
    case [P || {P, _, _} <- Rules, matches(P, Path)] of
        [Longest | _] -> Global ++ [Longest];
        [] -> Global
    end.

-spec matches(binary(), binary()) -> boolean().
matches(Prefix, Path) ->
    Size = byte_size(Prefix),
    case Path of
        Prefix -> true;
        <<Prefix:Size/binary, $/, _/binary>> -> true;
        _ -> false
    end.

%% @doc Takes one slot of each key, all or nothing. When a key is full,
%% `{wait, [{Key, Ms}]}' lists each full key with the time until it may
%% have room (`infinity': every slot is in flight, room comes with an
%% answer); nothing is taken then.
-spec acquire([key()], integer(), limiter()) ->
    {ok, token(), limiter()} | {wait, [{key(), non_neg_integer() | infinity}, ...]}.
acquire(Keys, Now, #lim{buckets = B0} = L) ->
    B = maps:map(fun(K, Bk) ->
                         case lists:member(K, Keys) of
                             true -> expire(Bk, Now);
                             false -> Bk
                         end
                 end, B0),
    case [{K, W} || K <- Keys, is_map_key(K, B), W <- [wait(maps:get(K, B), Now)], W =/= 0] of
        [] ->
            Taken = [K || K <- Keys, is_map_key(K, B)],
            B1 = lists:foldl(fun(K, Acc) ->
                                     #{K := Bk} = Acc,
                                     Acc#{K := Bk#bucket{in_flight = Bk#bucket.in_flight + 1}}
                             end, B, Taken),
            {ok, Taken, L#lim{buckets = B1}};
        Full ->
            {wait, Full}
    end.

%% @doc The request holding `Token' got its answer (or can no longer reach
%% the server): its slots stay taken for one period from `Now'.
-spec complete(token(), integer(), limiter()) -> limiter().
complete(Token, Now, L) ->
    update(Token, fun(#bucket{in_flight = F, done = D} = Bk) ->
                          expire(Bk#bucket{in_flight = max(0, F - 1),
                                           done = queue:in(Now, D)}, Now)
                  end, L).

%% @doc `Token' was never used (no request went out): its slots are free at
%% once.
-spec release(token(), limiter()) -> limiter().
release(Token, L) ->
    update(Token, fun(#bucket{in_flight = F} = Bk) -> Bk#bucket{in_flight = max(0, F - 1)} end, L).

%% @doc The least time (ms) before every key of `{wait, Full}' (as
%% {@link acquire/3} returns it) has room: a key full of requests in flight
%% frees a slot one period after an answer, so at least its period. Nothing
%% frees a slot sooner, so a request whose deadline comes first cannot go.
-spec min_wait([{key(), non_neg_integer() | infinity}, ...], limiter()) -> non_neg_integer().
min_wait(Full, #lim{buckets = B}) ->
    lists:max([case W of
                   infinity -> (maps:get(K, B))#bucket.period;
                   _ -> W
               end || {K, W} <- Full]).

%% @doc The number of slots in flight per key (for tests and introspection).
-spec in_flight(limiter()) -> #{key() => non_neg_integer()}.
in_flight(#lim{buckets = B}) ->
    maps:map(fun(_, #bucket{in_flight = F}) -> F end, B).

-spec update(token(), fun((#bucket{}) -> #bucket{}), limiter()) -> limiter().
update(Token, Fun, #lim{buckets = B} = L) ->
    L#lim{buckets = lists:foldl(fun(K, Acc) ->
                                        case Acc of
                                            #{K := Bk} -> Acc#{K := Fun(Bk)};
                                            #{} -> Acc
                                        end
                                end, B, Token)}.

%% Forgets answers older than one period: their slots are free again.
-spec expire(#bucket{}, integer()) -> #bucket{}.
expire(#bucket{done = D, period = P} = Bk, Now) ->
    case queue:peek(D) of
        {value, T} when T + P =< Now -> expire(Bk#bucket{done = queue:drop(D)}, Now);
        _ -> Bk
    end.

%% 0 when a slot is free now; else the ms until the oldest answer that has
%% to leave the window does so.
-spec wait(#bucket{}, integer()) -> non_neg_integer() | infinity.
wait(#bucket{limit = Limit, in_flight = F}, _Now) when F >= Limit ->
    infinity;
wait(#bucket{limit = Limit, in_flight = F, done = D, period = P}, Now) ->
    Used = F + queue:len(D),
    case Used < Limit of
        true -> 0;
        false ->
            %% The (Used - Limit + 1)-th oldest answer frees the first slot.
            {Older, _} = queue:split(Used - Limit + 1, D),
            max(1, queue:get_r(Older) + P - Now)
    end.
