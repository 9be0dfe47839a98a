%% @doc The rate-limit queue: which waiting jobs may go out now, which can no
%% longer go before their deadline, and when to look again. Pure (no
%% process; the clock, monotonic ms, is passed in); built on
%% {@link ibkr_oauth_ratelimit}, which counts the slots.
%%
%% Every HTTP request of a session passes here: callers' requests and the
%% session's own jobs (LST request, brokerage-session call, tickle). Jobs
%% with the same rate-limit keys share one FIFO (the keys are worked out once,
%% when the job is added); {@link drain/2} looks only at the head of each
%% FIFO, oldest first across FIFOs, so an answer costs a few steps whatever
%% the queue length. The session's own jobs go in front of callers'
%% requests. A job whose endpoint is full waits while jobs for other
%% endpoints pass it; once the `global' key is full nobody passes.
%%
%% A waiting request whose deadline comes before the least wait for its keys
%% is handed back as refused (the session answers `{error, rate_limited}':
%% it was never sent). {@link drain/2} never calls anybody: it returns what
%% to do, the session does it.
%%
%% A port crash does not touch this queue: its requests never left the
%% BEAM, and they go out on the new port (after a new handshake, see
%% {@link ibkr_oauth_lst}) within their own deadlines. The slots of the
%% requests the dead port held count from the crash, like answers.
-module(ibkr_oauth_pacing).

-export([new/1, add/5, remove/2, member/2, drain/2, complete/3, release/2,
         try_acquire/3, size/1, limiter/1]).

-export_type([pacing/0, job/0, priority/0]).

-type job() :: term().
-type priority() :: own | req.
-type class() :: [ibkr_oauth_ratelimit:key()].
-type deadline() :: integer() | infinity.
-type entry() :: {Seq :: integer(), job(), deadline()}.

-record(pacing, {
    lim :: ibkr_oauth_ratelimit:limiter(),
    fifos = #{} :: #{class() => queue:queue(entry())},
    index = #{} :: #{job() => class()},
    seq = 0 :: non_neg_integer()
}).

-opaque pacing() :: #pacing{}.

%% @doc An empty queue over a limiter for `Spec' (see
%% {@link ibkr_oauth_ratelimit:new/1}).
-spec new(ibkr_oauth_ratelimit:spec()) -> pacing().
new(Spec) -> #pacing{lim = ibkr_oauth_ratelimit:new(Spec)}.

%% @doc Queues `Job' for `Path' (relative, without the query). `own' jobs go
%% in front of every `req'. A job already queued is left where it is.
-spec add(job(), binary(), deadline(), priority(), pacing()) -> pacing().
add(Job, _Path, _Deadline, _Prio, #pacing{index = I} = P) when is_map_key(Job, I) ->
    P;
add(Job, Path, Deadline, Prio, #pacing{lim = L, fifos = F, index = I, seq = N} = P) ->
    Class = ibkr_oauth_ratelimit:keys(Path, L),
    Q = maps:get(Class, F, queue:new()),
    Q1 = case Prio of
             req -> queue:in({N + 1, Job, Deadline}, Q);
             own -> queue:in_r({-(N + 1), Job, Deadline}, Q)
         end,
    P#pacing{fifos = F#{Class => Q1}, index = I#{Job => Class}, seq = N + 1}.

%% @doc Takes `Job' out of the queue (its deadline passed, it is not wanted
%% any more). A job not queued is ignored.
-spec remove(job(), pacing()) -> pacing().
remove(Job, #pacing{fifos = F, index = I} = P) ->
    case maps:take(Job, I) of
        {Class, I1} ->
            Q = queue:filter(fun({_, J, _}) -> J =/= Job end, maps:get(Class, F)),
            P#pacing{fifos = store(Class, Q, F), index = I1};
        error -> P
    end.

-spec member(job(), pacing()) -> boolean().
member(Job, #pacing{index = I}) -> is_map_key(Job, I).

%% @doc The number of queued jobs.
-spec size(pacing()) -> non_neg_integer().
size(#pacing{index = I}) -> map_size(I).

%% @doc For tests and introspection.
-spec limiter(pacing()) -> ibkr_oauth_ratelimit:limiter().
limiter(#pacing{lim = L}) -> L.

%% @doc Everything that may go at `Now': `Go' (in order, each with the slots
%% it took: give them back with {@link complete/3} or {@link release/2}),
%% `Refused' (requests that cannot go before their deadline, taken out of the
%% queue), and `WakeMs', the time until the first full key has room again
%% (`infinity' when nothing waits, or only for answers in flight).
-spec drain(integer(), pacing()) ->
    {[{job(), ibkr_oauth_ratelimit:token()}], [job()], non_neg_integer() | infinity, pacing()}.
drain(Now, P) ->
    drain(Now, #{}, [], [], infinity, P).

-spec drain(integer(), #{class() => true}, [{job(), ibkr_oauth_ratelimit:token()}], [job()],
            non_neg_integer() | infinity, pacing()) ->
    {[{job(), ibkr_oauth_ratelimit:token()}], [job()], non_neg_integer() | infinity, pacing()}.
drain(Now, Blocked, Go, Refused, Wake, #pacing{fifos = F, lim = L} = P) ->
    case oldest_head(F, Blocked) of
        none ->
            {lists:reverse(Go), lists:reverse(Refused), Wake, P};
        {Class, Job, Q} ->
            case ibkr_oauth_ratelimit:acquire(Class, Now, L) of
                {ok, Token, L1} ->
                    {_, Q1} = queue:out(Q),
                    P1 = P#pacing{lim = L1, fifos = store(Class, Q1, F),
                                  index = maps:remove(Job, P#pacing.index)},
                    drain(Now, Blocked, [{Job, Token} | Go], Refused, Wake, P1);
                {wait, Full} ->
                    Wake1 = lists:min([Wake | [W || {_, W} <- Full, is_integer(W)]]),
                    case lists:keyfind(global, 1, Full) of
                        {global, _} = G ->
                            %% Every job needs the global key: stop. Nobody
                            %% goes before it has room.
                            Least = ibkr_oauth_ratelimit:min_wait([G], L),
                            {Ref1, P1} = refuse(maps:keys(F), Least, Now, Refused, P),
                            drain(Now, maps:from_list([{C, true} || C <- maps:keys(F)]),
                                  Go, Ref1, Wake1, P1);
                        false ->
                            Least = ibkr_oauth_ratelimit:min_wait(Full, L),
                            {Ref1, P1} = refuse([Class], Least, Now, Refused, P),
                            drain(Now, Blocked#{Class => true}, Go, Ref1, Wake1, P1)
                    end
            end
    end.

%% The head with the smallest sequence number among FIFOs not blocked.
-spec oldest_head(#{class() => queue:queue(entry())}, #{class() => true}) ->
    {class(), job(), queue:queue(entry())} | none.
oldest_head(F, Blocked) ->
    Best = maps:fold(fun(Class, Q, Acc) ->
                             case not is_map_key(Class, Blocked) andalso queue:peek(Q) of
                                 {value, {Seq, Job, _}} ->
                                     case Acc of
                                         {S, _, _, _} when S < Seq -> Acc;
                                         _ -> {Seq, Class, Job, Q}
                                     end;
                                 _ -> Acc
                             end
                     end, none, F),
    case Best of
        none -> none;
        {_, Class, Job, Q} -> {Class, Job, Q}
    end.

%% Takes out of the FIFOs of `Classes' every job whose deadline comes before
%% `Now + Least', the soonest it could go.
-spec refuse([class()], non_neg_integer(), integer(), [job()], pacing()) -> {[job()], pacing()}.
refuse(Classes, Least, Now, Refused, P) ->
    lists:foldl(
      fun(Class, {Acc, #pacing{fifos = F, index = I} = P0}) ->
              {Out, Keep} = lists:partition(fun({_, _, D}) -> D =/= infinity andalso Now + Least >= D end,
                                            queue:to_list(maps:get(Class, F))),
              case Out of
                  [] -> {Acc, P0};
                  _ ->
                      Jobs = [J || {_, J, _} <- Out],
                      {lists:reverse(Jobs, Acc),
                       P0#pacing{fifos = store(Class, queue:from_list(Keep), F),
                                 index = maps:without(Jobs, I)}}
              end
      end, {Refused, P}, Classes).

-spec store(class(), queue:queue(entry()), #{class() => queue:queue(entry())}) ->
    #{class() => queue:queue(entry())}.
store(Class, Q, F) ->
    case queue:is_empty(Q) of
        true -> maps:remove(Class, F);
        false -> F#{Class => Q}
    end.

%% @doc The request holding `Token' got its answer (or can no longer reach
%% the server): its slots count from `Now' for one period.
-spec complete(ibkr_oauth_ratelimit:token(), integer(), pacing()) -> pacing().
complete(Token, Now, #pacing{lim = L} = P) ->
    P#pacing{lim = ibkr_oauth_ratelimit:complete(Token, Now, L)}.

%% @doc `Token' was not used after all: its slots are free at once.
-spec release(ibkr_oauth_ratelimit:token(), pacing()) -> pacing().
release(Token, #pacing{lim = L} = P) ->
    P#pacing{lim = ibkr_oauth_ratelimit:release(Token, L)}.

%% @doc A slot for `Path' now, bypassing the queue (the logout on stop, when
%% nothing else waits), or the least wait before there is one.
-spec try_acquire(binary(), integer(), pacing()) ->
    {ok, ibkr_oauth_ratelimit:token(), pacing()} | {wait, non_neg_integer()}.
try_acquire(Path, Now, #pacing{lim = L} = P) ->
    case ibkr_oauth_ratelimit:acquire(ibkr_oauth_ratelimit:keys(Path, L), Now, L) of
        {ok, Token, L1} -> {ok, Token, P#pacing{lim = L1}};
        {wait, Full} -> {wait, ibkr_oauth_ratelimit:min_wait(Full, L)}
    end.
