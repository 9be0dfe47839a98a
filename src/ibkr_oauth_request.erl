%% @doc One `request/4' call as the session holds it (`#req{}', in
%% `ibkr_oauth_request.hrl'): pure functions for what is derived from it:
%% the port command of an attempt, what the retry policy is told, the
%% caller's answer (where IBKR's own errors are recognised), and the log and
%% telemetry events (the session emits them).
-module(ibkr_oauth_request).

-include("ibkr_oauth_request.hrl").

-export([new/5, command/2, attempt/2, reply/2, enter_queue/2, leave_queue/2,
         done_event/3, retry_event/3, method_bin/1]).
-export([start_meta/1, end_telemetry/2, queued_telemetry/2]).

-export_type([req/0, where/0, event/0]).

-type req() :: #req{}.
-type where() :: new | lst | rl | {port, ibkr_oauth_port:id()} | {retry, reference()}.
%% What the session logs: `{Level, Format, Args, Metadata}'.
-type event() :: {logger:level(), io:format(), [term()], logger:metadata()}.

-define(META, #{domain => [ibkr_oauth], ibkr_oauth => request}).

%% @doc A request for `PathQuery' (relative to `BaseUrl'), started at `NowUs'
%% (monotonic us), due at `Deadline' (monotonic ms or `infinity').
-spec new(gen_server:from() | {stream_http, tickle | ssodh}, {atom(), binary(), [{binary(), binary()}], binary()}, binary(),
          integer() | infinity, integer()) -> req().
new(From, {Method, PathQuery, Headers, Body}, BaseUrl, Deadline, NowUs) ->
    [Path | _] = binary:split(PathQuery, <<"?">>),
    #req{from = From, method = Method, url = <<BaseUrl/binary, PathQuery/binary>>,
         path = Path, headers = Headers, body = Body, deadline = Deadline, started = NowUs}.

%% @doc The port's `{http, Req}' map for one attempt with the port timeout
%% `Timeout', with the caller's extra fields (`json', `decode'). A
%% websocket_info/1 tickle asks for the JSON decoded.
-spec command(req(), pos_integer() | infinity) -> map().
command(R, Timeout) ->
    Http = #{method => method_bin(R#req.method), url => R#req.url,
             headers => R#req.headers, timeout => Timeout, sign => true},
    Http1 = case R#req.body of
                <<>> -> Http;
                Body -> Http#{body => Body}
            end,
    Http2 = maps:merge(Http1, R#req.port_opts),
    %% A /tickle answer (the caller's own too) feeds websocket_info/1 and
    %% the stream: the port decodes it, so its `session' is read from JSON.
    case R#req.websocket orelse R#req.path =:= <<"/tickle">> of
        true -> Http2#{decode => json};
        false -> Http2
    end.

%% @doc What the retry policy needs to know, with `Left' ms before the
%% deadline.
-spec attempt(req(), integer() | infinity) -> ibkr_oauth_retry:attempt().
attempt(R, Left) -> #{method => R#req.method, left => Left, retried => R#req.retried}.

%% @doc The caller's answer to the final reply (the retry policy has had
%% its say: a 401 was already answered with a new LST and a retry, a 429
%% with its `Retry-After'). An answer outside 2xx that {@link
%% ibkr_oauth_ibkr_error:classify/3} recognises as one of IBKR's own errors
%% becomes `{error, {ibkr, Kind, Info}}'; any other response gains
%% `queued_ms', the time the request waited for the rate limit, all attempts
%% together.
-spec reply(req(), term()) -> term().
reply(R, {ok, #{status := S, body := Body} = Resp}) when is_integer(S), (S < 200 orelse S > 299) ->
    case ibkr_oauth_ibkr_error:classify(S, maps:get(headers, Resp, []), Body) of
        http -> {ok, Resp#{queued_ms => queued_ms(R)}};
        Ibkr -> {error, Ibkr}
    end;
reply(R, {ok, #{} = Resp}) -> {ok, Resp#{queued_ms => queued_ms(R)}};
reply(_R, Other) -> Other.

%% @doc The request enters the rate-limit queue at `NowUs'.
-spec enter_queue(req(), integer()) -> req().
enter_queue(R, NowUs) -> R#req{where = rl, rl_since = NowUs, held = false}.

%% @doc The request leaves the rate-limit queue at `NowUs' (its wait is
%% added up).
-spec leave_queue(req(), integer()) -> req().
leave_queue(R, NowUs) ->
    R#req{where = new, queued_us = R#req.queued_us + max(0, NowUs - R#req.rl_since)}.

%% @doc One event per finished request (`Reply': the caller's answer):
%% `debug' when answered, `info' when it failed (binaries in the error
%% replaced by their size; one of IBKR's own errors with its kind, IBKR's
%% text and the advice). Never the headers, the body or the query.
-spec done_event(req(), term(), integer()) -> event().
done_event(R, Reply, NowUs) ->
    Meta = (meta(R))#{event => request, duration_us => NowUs - R#req.started},
    M = method_bin(R#req.method),
    case Reply of
        {ok, #{status := S}} ->
            {debug, "ibkr_oauth: ~s ~ts ~b", [M, R#req.path, S], Meta#{status => S}};
        {error, {ibkr, Kind, #{status := S}} = Ibkr} ->
            {info, "ibkr_oauth: ~s ~ts: ~ts", [M, R#req.path, ibkr_oauth_ibkr_error:describe(Ibkr)],
             Meta#{status => S, error => {ibkr, Kind}}};
        {error, Why} ->
            Short = ibkr_oauth_redact:scrub(Why),
            {info, "ibkr_oauth: ~s ~ts failed: ~0p", [M, R#req.path, Short],
             Meta#{status => undefined, error => Short}};
        Other ->
            {info, "ibkr_oauth: ~s ~ts: ~0p", [M, R#req.path, ibkr_oauth_redact:scrub(Other)],
             Meta#{status => undefined}}
    end.

%% @doc The warning logged when the request goes again (`What' says why).
-spec retry_event(req(), iodata(), term()) -> event().
retry_event(R, What, Reply) ->
    Status = case Reply of
                 {ok, #{status := S}} -> #{status => S};
                 _ -> #{}
             end,
    {warning, "ibkr_oauth: ~s ~ts ~ts", [method_bin(R#req.method), R#req.path, What],
     maps:merge(meta(R), Status#{event => retry})}.

%%% Telemetry (ibkr_oauth_telemetry): the same metadata as the logs.

%% @doc The metadata of `[ibkr_oauth, request, start]'.
-spec start_meta(req()) -> map().
start_meta(R) -> #{method => R#req.method, path => R#req.path, attempt => R#req.attempt}.

%% @doc How a finished request is reported (`Reply': the caller's answer):
%% `stop' with the HTTP status when the server answered (IBKR's own errors
%% included, with `error => Kind'), `exception' with the reason (binaries
%% replaced by their size) when it ended without an answer.
-spec end_telemetry(req(), term()) -> {stop | exception, map(), map()}.
end_telemetry(R, Reply) ->
    Meta = start_meta(R),
    Queued = #{queued_ms => queued_ms(R)},
    case Reply of
        {ok, #{status := S}} -> {stop, Queued, Meta#{status => S}};
        {error, {ibkr, Kind, #{status := S}}} -> {stop, Queued, Meta#{status => S, error => Kind}};
        {error, Why} -> {exception, Queued, Meta#{reason => ibkr_oauth_redact:scrub(Why)}};
        Other -> {exception, Queued, Meta#{reason => ibkr_oauth_redact:scrub(Other)}}
    end.

%% @doc `[ibkr_oauth, rate_limit, queued]' for a request leaving the
%% rate-limit queue at `NowUs' (call before {@link leave_queue/2}): its wait
%% in ms, when the limit did not let it go at once; `none' otherwise.
-spec queued_telemetry(req(), integer()) -> {non_neg_integer(), map()} | none.
queued_telemetry(#req{where = rl, held = true} = R, NowUs) ->
    {max(0, NowUs - R#req.rl_since) div 1000, #{method => R#req.method, path => R#req.path}};
queued_telemetry(_R, _NowUs) -> none.

-spec meta(req()) -> map().
meta(R) ->
    ?META#{method => R#req.method, path => R#req.path, attempt => R#req.attempt,
           queued_ms => queued_ms(R)}.

-spec queued_ms(req()) -> non_neg_integer().
queued_ms(#req{queued_us = Us}) -> Us div 1000.

-spec method_bin(atom()) -> binary().
method_bin(get) -> <<"GET">>;
method_bin(post) -> <<"POST">>;
method_bin(put) -> <<"PUT">>;
method_bin(delete) -> <<"DELETE">>;
method_bin(patch) -> <<"PATCH">>;
method_bin(head) -> <<"HEAD">>.
