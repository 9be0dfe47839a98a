%% One request/4 call while the session holds it (see ibkr_oauth_request).
-record(req, {
    %% a caller, or the stream's own tickle/ssodh (answered as a message)
    from :: gen_server:from() | {stream_http, tickle | ssodh},
    method :: atom(),
    url :: binary(),
    path = <<>> :: binary(),                   % relative, without the query
    headers :: [{binary(), binary()}],
    body :: binary(),
    port_opts = #{} :: map(),                  % more http command fields: json, decode
    deadline = infinity :: integer() | infinity,   % monotonic ms
    timer :: reference() | undefined,          % the deadline timer
    %% new, lst (waiting for a handshake), rl (rate-limit queue), at the
    %% port, or waiting for a 429 retry: the one place that says where it is
    where = new :: ibkr_oauth_request:where(),
    started = 0 :: integer(),                  % monotonic us
    t0 = 0 :: integer(),                       % monotonic, native: telemetry's start
    attempt = 0 :: non_neg_integer(),          % times sent to the port
    queued_us = 0 :: non_neg_integer(),        % total wait for the rate limit
    rl_since = 0 :: integer(),                 % monotonic us, when queued there
    throttled = false :: boolean(),            % counted in rate_limited
    held = false :: boolean(),                 % this stay in the rate-limit queue had to wait
    websocket = false :: boolean(),            % a /tickle for websocket_info
    epoch = 0 :: non_neg_integer(),            % of the LST it was signed with
    retried = [] :: [ibkr_oauth_retry:kind()]
}).
