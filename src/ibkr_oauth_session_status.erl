%% @doc What a session reports about itself, built from its parts (pure):
%% the map of `ibkr_oauth:stats/1' and the summary that stands for the
%% session's state in `sys:get_status/1' and crash reports (no secret: the
%% config is `redacted', binaries elsewhere are scrubbed by
%% {@link ibkr_oauth_redact}).
-module(ibkr_oauth_session_status).

-export([stats/2, summary/2, format_status/2]).
-export_type([parts/0]).

%% What the session holds that the reports read.
-type parts() :: #{counters := #{atom() => non_neg_integer()},
                   in_flight := non_neg_integer(),        % ids at the port
                   rate_limit_queued := non_neg_integer(),
                   lst := ibkr_oauth_lst:lst(),
                   stream := ibkr_oauth_stream:state(),
                   os_pid := non_neg_integer() | undefined}.

%% @doc The stats map at `Now' (system ms): the stream's counts, the
%% session's counters, and what waits where.
-spec stats(parts(), integer()) -> map().
stats(#{counters := C, lst := L, stream := S} = Parts, Now) ->
    (maps:merge(ibkr_oauth_stream:stats(S), C))#{
       in_flight => maps:get(in_flight, Parts),
       queued => ibkr_oauth_lst:waiting(L),
       rate_limit_queued => maps:get(rate_limit_queued, Parts),
       authenticated => ibkr_oauth_lst:live(Now, L),
       handshake_in_flight => not ibkr_oauth_lst:idle(L),
       expires_at => ibkr_oauth_lst:expires_at(L),
       epoch => ibkr_oauth_lst:epoch(L),
       os_pid => maps:get(os_pid, Parts)}.

%% @doc The stats, the port, the base URL, the handshake phase and the
%% tickle values held (their keys only).
-spec summary(map(), #{port := port() | undefined, base_url := binary(),
                       lst := ibkr_oauth_lst:lst(), keepalive := ibkr_oauth_keepalive:state()}) -> map().
summary(Stats, #{port := Port, base_url := Base, lst := L, keepalive := KA}) ->
    maps:merge(Stats, #{port => Port, base_url => Base, config => redacted,
                        handshake => ibkr_oauth_lst:phase(L),
                        tickle => maps:keys(KA)}).

%% @doc `format_status/1' of the session: the state becomes `Summary(State)';
%% binaries in the message, the reason and the log are replaced by their size.
-spec format_status(Status, fun((term()) -> map())) -> Status
      when Status :: #{state => term(), message => term(), reason => term(),
                       log => [sys:system_event()]}.
format_status(Status, Summary) ->
    maps:map(fun(state, S) -> Summary(S);
                (log, L) -> [ibkr_oauth_redact:scrub(E) || E <- L];
                (_, X) -> ibkr_oauth_redact:scrub(X)
             end, Status).
