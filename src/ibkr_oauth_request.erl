%% @doc One `request/4' call as the session holds it (`#req{}', in
%% `ibkr_oauth_request.hrl'): pure functions for what is derived from it:
%% the port command of an attempt, what the retry policy is told, the
%% caller's answer, and the log events (the session emits them).
-module(ibkr_oauth_request).

-include("ibkr_oauth_request.hrl").

-export([new/5, command/2, attempt/2, reply/2, enter_queue/2, leave_queue/2,
         done_event/3, retry_event/3, method_bin/1]).

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
    case R#req.websocket of
        true -> Http2#{decode => json};
        false -> Http2
    end.

%% @doc What the retry policy needs to know, with `Left' ms before the
%% deadline.
-spec attempt(req(), integer() | infinity) -> ibkr_oauth_retry:attempt().
attempt(R, Left) -> #{method => R#req.method, left => Left, retried => R#req.retried}.

%% @doc The caller's answer: a response gains `queued_ms', the time the
%% request waited for the rate limit, all attempts together.
-spec reply(req(), term()) -> term().
reply(R, {ok, #{} = Resp}) -> {ok, Resp#{queued_ms => queued_ms(R)}};
reply(_R, Other) -> Other.

%% @doc The request enters the rate-limit queue at `NowUs'.
-spec enter_queue(req(), integer()) -> req().
enter_queue(R, NowUs) -> R#req{where = rl, rl_since = NowUs}.

%% @doc The request leaves the rate-limit queue at `NowUs' (its wait is
%% added up).
-spec leave_queue(req(), integer()) -> req().
leave_queue(R, NowUs) ->
    R#req{where = new, queued_us = R#req.queued_us + max(0, NowUs - R#req.rl_since)}.

%% @doc One event per finished request: `debug' when answered, `info' when
%% it failed (binaries in the error replaced by their size). Never the
%% headers, the body or the query.
-spec done_event(req(), term(), integer()) -> event().
done_event(R, Reply, NowUs) ->
    Meta = (meta(R))#{event => request, duration_us => NowUs - R#req.started},
    M = method_bin(R#req.method),
    case Reply of
        {ok, #{status := S}} ->
            {debug, "ibkr_oauth: ~s ~ts ~b", [M, R#req.path, S], Meta#{status => S}};
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
