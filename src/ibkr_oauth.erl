%% @doc Interactive Brokers Web API authentication ("OAuth 1.0a extended"):
%% the public API.
%%
%% One session process = one IBKR OAuth session (one consumer key and access
%% token). It owns one `priv/ibkr_oauth_port' process: private keys, the
%% decrypted access-token secret, the DH exponent and the live session token
%% (LST) live there; the BEAM sees the LST only through
%% {@link live_session_token/1}.
%%
%% ```
%% {ok, _} = application:ensure_all_started(ibkr_oauth),
%% {ok, S} = ibkr_oauth:start_link(Config),
%% {ok, #{status := 200, body := Json}} =
%%     ibkr_oauth:request(S, get, <<"/portfolio/accounts">>, #{}),
%% {ok, Authorization} = ibkr_oauth:sign(S, get, Url).
%% '''
%%
%% <h3>Errors</h3>
%% Every function returns `{error, Reason}' rather than raising or exiting
%% in the caller. Arguments are checked in the calling process first
%% (`{error, {badarg, What}}'). Calls to the session are bounded; when the
%% session is not running, `{error, noproc}'; when the caller's wait ran
%% out, `{error, timeout}'; when the port program died before answering,
%% `{error, port_down}' (the session then restarts the port by itself; it
%% is unauthenticated afterwards and authenticates again on the next
%% {@link request/4}). Other reasons: `{bad_config, Field, Why}',
%% `not_authenticated', `lst_expired', `no_pending_handshake', `bad_dh_response',
%% `lst_signature_mismatch', `{ibkr, Kind, #{status, message, incident}}'
%% (IBKR answered with one of its own errors: see {@link
%% ibkr_oauth_ibkr_error}), `{http, Status, Body}' (handshake refused
%% otherwise),
%% `{bad_response, not_json | missing_field | lst_expiration}',
%% `{transport, Kind}' (`Kind' e.g. `connect', `recv', `bad_status': a
%% status line outside 100..599),
%% `too_large', `cancelled', `rate_limited' (request/4: the rate limit
%% cannot let it go before its deadline; not sent). No reason contains a key, the decrypted secret
%% or the LST.
-module(ibkr_oauth).

-export([start_link/1, start_link/2, start_session/1, start_session/2,
         child_spec/1, child_spec/2, stop/1,
         authenticate/1, lst_request/1, lst_request/2, lst_complete/2,
         live_session_token/1,
         sign/3, sign/4,
         request/3, request/4,
         websocket_info/1,
         subscribe/2, subscribe/3, unsubscribe/2,
         stats/1, os_pid/1]).
-export([doctor/1, doctor/2]).

-export_type([server/0, name/0, key/0, config/0, method/0, pins/0, request_opts/0,
              sign_opts/0, response/0, stats/0, rate_limit/0, websocket/0, json/0,
              json_error/0, topic/0, sub/0]).

-type server() :: pid() | atom() | {via, module(), term()} | {global, term()}.
%% How a session is registered: as for `gen_server', or `{cluster, Name}':
%% one session in the whole cluster, registered as `{global, Name}' (see
%% {@link ibkr_oauth_cluster}).
-type name() :: ibkr_oauth_session:name() | {cluster, term()}.
-type key() :: {file, file:filename_all()} | {pem, binary()}.
-type config() :: #{
    consumer_key        := binary(),
    access_token        := binary(),
    access_token_secret := binary(),
    dh_prime            := binary(),
    encryption_key      := key(),
    signature_key       := key(),
    dh_generator        => pos_integer(),
    realm               => binary(),
    base_url            => binary(),
    ca_file             => file:filename_all(),
    request_timeout     => timeout(),
    auto_authenticate   => boolean(),
    brokerage_session   => boolean(),
    tickle_interval     => pos_integer() | infinity,
    refresh_margin      => non_neg_integer(),
    query_signing       => params | none,
    rate_limit          => rate_limit(),
    smd_refresh_interval => pos_integer()}.
%% `none', or requests per second for the session (`global', default 50)
%% and per endpoint (`{PathPrefix, Limit, PeriodMs}', default IBKR's table,
%% see {@link ibkr_oauth_ratelimit}).
-type rate_limit() :: none | #{global => pos_integer() | none,
                               endpoints => [{binary(), pos_integer(), pos_integer()}]}.
-type method() :: get | post | put | delete | patch | head.
-type pins() :: #{nonce => binary(), timestamp => non_neg_integer(), dh_random => binary()}.
-type request_opts() :: #{query => [{binary(), binary()}], body => iodata(),
                          json => json(), decode => json,
                          headers => [{binary(), binary()}], timeout => timeout()}.
%% A term that maps to JSON (see {@link request/4}).
-type json() :: #{binary() | atom() => json()} | [json()] | binary() | number()
              | true | false | null.
-type sign_opts() :: #{nonce => binary(), timestamp => non_neg_integer(), lst => binary()}.
-type response() :: #{status := 100..599, headers := [{binary(), binary()}], body := binary(),
                      queued_ms := non_neg_integer(),
                      json => json(), json_error => json_error()}.
-type json_error() :: empty | syntax | utf8 | depth | too_large | number | nomem.
-type websocket() :: #{url := binary(), session := binary(), cookie := binary(),
                       headers := [{binary(), binary()}]}.
%% A websocket stream (see {@link subscribe/3}).
-type topic() :: ibkr_oauth_stream:topic().
-type sub() :: reference().
-type stats() :: #{requests := non_neg_integer(), handshakes := non_neg_integer(),
                   errors := non_neg_integer(), port_restarts := non_neg_integer(),
                   in_flight := non_neg_integer(), queued := non_neg_integer(),
                   rate_limited := non_neg_integer(), rate_limit_queued := non_neg_integer(),
                   authenticated := boolean(), handshake_in_flight := boolean(),
                   expires_at := integer() | undefined, epoch := non_neg_integer(),
                   os_pid := non_neg_integer() | undefined, node := node(),
                   stream_subscriptions := non_neg_integer(), stream_topics := non_neg_integer(),
                   stream_state := idle | connecting | up, stream_connects := non_neg_integer(),
                   stream_downs := non_neg_integer(), stream_messages := non_neg_integer(),
                   stream_delivered := non_neg_integer(),
                   stream_subscribe_frames := non_neg_integer(),
                   stream_smd_refreshes := non_neg_integer()}.

%% Waits for calls answered by the port without network (sign, lst_request...).
-define(CALL_TIMEOUT, 15000).
%% Backstop for calls bounded by the session itself (request/4 without an
%% explicit timeout, authenticate/1): the session always answers first.
-define(BACKSTOP, 300000).
%% A request's own timeout plus this margin: the session's {error, timeout}
%% arrives before the call gives up.
-define(CALL_MARGIN, 5000).
-define(STOP_TIMEOUT, 15000).
%% A cluster claimant stops its session (up to ?STOP_TIMEOUT) first.
-define(CLAIMANT_SHUTDOWN, 20000).
-define(MAX_BODY, 16777216).
%% The port's limits (c_src/PROTOCOL.md), checked here first so that bad
%% input is refused before anything is copied or sent: a URL (and so a
%% path with its query) of at most 64 KiB, at most 100 request headers of
%% at most 64 KiB together.
-define(MAX_URL, 65536).
-define(MAX_HEADERS, 100).
-define(MAX_HEADER_BYTES, 65536).
-define(MAX_TIMEOUT, 4294967295).   % the longest Erlang timer, ms
%% The port's JSON limits (c_src/json_etf.h): nesting; integers strictly
%% between the ends of int64 and uint64 (json-c clamps to those ends).
-define(JSON_MAX_DEPTH, 128).
-define(JSON_INT_MIN, -(1 bsl 63)).
-define(JSON_INT_MAX, (1 bsl 64) - 1).
-define(METHODS, [get, post, put, delete, patch, head]).

%%====================================================================
%% Lifecycle
%%====================================================================

%% @doc Starts a session linked to the caller. The whole config is validated
%% before this returns: types here, then keys, secret and prime in the port.
%% A bad config returns `{error, {bad_config, Field, Why}}' (the caller is
%% never killed by it, trapping exits or not). Unknown atom keys are refused
%% (`{bad_config, Key, unknown_key}'), other keys ignored. With
%% `auto_authenticate => true' the first handshake starts right after the
%% start, in the background.
%%
%% `Why' is one of `missing', `badarg', `too_long', `unknown_key',
%% `bad_url', `too_small' (checked in Erlang) or, from the port, `enoent',
%% `eacces', `eisdir', `file_error', `not_pem', `not_rsa', `not_base64',
%% `decrypt_failed', `not_hex', `not_prime', `too_small'. A port program that
%% cannot start gives `{port_open, Posix}', one that exits at once
%% `{port_exit, Status}'.
-spec start_link(config()) -> {ok, pid()} | {error, term()}.
start_link(Config) ->
    ibkr_oauth_session:start_link(Config).

%% @doc Like {@link start_link/1}, registering the session as `Name'
%% (`{local, Atom}', `{global, Term}' or `{via, Module, Term}', as for
%% `gen_server').
-spec start_link(ibkr_oauth_session:name(), config()) -> {ok, pid()} | {error, term()}.
start_link(Name, Config) ->
    ibkr_oauth_session:start_link(Name, Config).

%% @doc Starts a session under the application's supervisor
%% (`ibkr_oauth_sup', temporary children: a session that stops is not
%% restarted). Stop it with {@link stop/1}.
-spec start_session(config()) -> {ok, pid()} | {error, term()}.
start_session(Config) ->
    ibkr_oauth_sup:start_session([Config]).

%% @doc {@link start_session/1} with a registered name. With
%% `{cluster, Name}' the child is this node's claimant for the cluster
%% session `{global, Name}' (see {@link child_spec/2}); the pid returned is
%% the claimant's: stop it with {@link stop/1} (the session moves to another
%% node), call the session as `{global, Name}'.
-spec start_session(name(), config()) -> {ok, pid()} | {error, term()}.
start_session(Name, Config) ->
    ibkr_oauth_sup:start_session([Name, Config]).

%% @doc A child spec for your own supervisor (`{ibkr_oauth, Config}' in an
%% Elixir child list). Id `ibkr_oauth', permanent worker, 10 s shutdown
%% (room for `POST /logout'). Override `id' to run several sessions under
%% one supervisor.
-spec child_spec(config()) -> supervisor:child_spec().
child_spec(Config) ->
    #{id => ?MODULE,
      %% sealed: a supervisor report shows the start arguments
      start => {?MODULE, start_link, [ibkr_oauth_config:seal(Config)]},
      restart => permanent,
      shutdown => 10000,
      type => worker,
      modules => [ibkr_oauth_session]}.

%% @doc {@link child_spec/1} for a session registered as `Name' (as for
%% {@link start_link/2}); the child id is the name (`Atom' for
%% `{local, Atom}', else `Name' itself), so several named sessions can live
%% under one supervisor. Elixir:
%% `:ibkr_oauth.child_spec({:local, MyApp.IBKR}, config)'.
%%
%% `{cluster, Name}': put this child in the supervision tree of every node
%% of a cluster; exactly one session, registered as `{global, Name}', runs
%% in the connected cluster, and another node starts a new one (its own
%% handshake) when it goes down. The child is a claimant
%% ({@link ibkr_oauth_cluster}), id `{cluster, Name}', 20 s shutdown (the
%% owner's claimant stops its session first, which logs out). The key files
%% must exist on every node. Elixir:
%% `:ibkr_oauth.child_spec({:cluster, MyApp.IBKR}, config)'.
-spec child_spec(name(), config()) -> supervisor:child_spec().
child_spec({cluster, Name} = Id, Config) ->
    #{id => Id,
      start => {ibkr_oauth_cluster, start_link, [Name, ibkr_oauth_config:seal(Config)]},
      restart => permanent,
      shutdown => ?CLAIMANT_SHUTDOWN,
      type => worker,
      modules => [ibkr_oauth_cluster]};
child_spec(Name, Config) ->
    Spec = #{start := {M, F, [Sealed]}} = child_spec(Config),
    Id = case Name of
             {local, Atom} -> Atom;
             _ -> Name
         end,
    Spec#{id := Id, start := {M, F, [Name, Sealed]}}.

%% @doc Stops the session: `POST /logout' if an LST is held (bounded wait),
%% then the port program is closed. Callers still waiting get
%% `{error, port_down}'.
-spec stop(server()) -> ok | {error, term()}.
stop(Server) ->
    case valid_server(Server) of
        true ->
            try gen_server:stop(Server, normal, ?STOP_TIMEOUT)
            catch
                exit:Reason -> {error, exit_reason(Reason)};
                %% {via, M, _} with an M that has no whereis_name/1
                error:undef -> {error, noproc}
            end;
        false -> {error, {badarg, server}}
    end.

%%====================================================================
%% Live session token
%%====================================================================

%% @doc The full handshake done by the port over HTTPS (`POST
%% {base_url}/oauth/live_session_token'); the LST is derived, validated and
%% kept in the port. Concurrent calls, and requests needing an LST, share one
%% handshake. With `brokerage_session => true' the brokerage session is
%% opened (`POST /iserver/auth/ssodh/init') before this returns. An LST the
%% server says is expired, or expires within the minimum lifetime (60 s, or
%% `refresh_margin' if smaller), is refused: `{error, {bad_response,
%% lst_expiration}}' (a clock skew, or seconds sent as milliseconds; the
%% warning logged shows both clocks). Each call starts a handshake if none
%% runs, even during the backoff that follows a failed one. A handshake IBKR
%% refuses with one of its own errors returns `{error, {ibkr, Kind, #{status,
%% message, incident}}}' (e.g. `invalid_consumer', `no_access_secret'), any
%% other refusal `{error, {http, Status, Body}}'.
-spec authenticate(server()) -> {ok, #{expires_at := integer()}} | {error, term()}.
authenticate(Server) ->
    call(Server, authenticate, ?BACKSTOP).

%% @doc {@link lst_request/2} without pins.
-spec lst_request(server()) ->
    {ok, #{method := binary(), url := binary(), authorization := binary()}} | {error, term()}.
lst_request(Server) -> lst_request(Server, #{}).

%% @doc First half of a handshake done with your own HTTP client: the
%% method, URL and `Authorization' of the LST request. Pins fix the random
%% parts (tests and reproductions only). The DH exponent stays in the port
%% as the pending handshake.
-spec lst_request(server(), pins()) ->
    {ok, #{method := binary(), url := binary(), authorization := binary()}} | {error, term()}.
lst_request(Server, Pins) ->
    case check_opts(Pins, [{nonce, fun is_nonempty_binary/1},
                           {timestamp, fun is_non_neg_integer/1},
                           {dh_random, fun is_nonempty_binary/1}], pins) of
        {ok, P} -> call(Server, {port, {lst_request, P}}, ?CALL_TIMEOUT);
        {error, _} = E -> E
    end.

%% @doc Second half: IBKR's JSON answer to the LST request. On success the
%% LST becomes the session's (used by {@link request/4} too; not renewed in
%% the background, see {@link ibkr_oauth_session}).
-spec lst_complete(server(), #{diffie_hellman_response := binary(),
                               live_session_token_signature := binary(),
                               live_session_token_expiration := integer()}) ->
    {ok, #{expires_at := integer()}} | {error, term()}.
lst_complete(Server, Answer) when is_map(Answer) ->
    Fields = [{diffie_hellman_response, fun is_binary/1},
              {live_session_token_signature, fun is_binary/1},
              {live_session_token_expiration, fun is_non_neg_integer/1}],
    case [K || {K, Ok} <- Fields, not (is_map_key(K, Answer) andalso Ok(maps:get(K, Answer)))] of
        [] -> call(Server, {lst_complete, maps:with([K || {K, _} <- Fields], Answer)},
                   ?CALL_TIMEOUT);
        [K | _] -> {error, {badarg, K}}
    end;
lst_complete(_Server, _) ->
    {error, {badarg, answer}}.

%% @doc The LST (base64) and its expiry (epoch ms), for callers that need it
%% (e.g. to sign elsewhere). The only function that returns the token.
-spec live_session_token(server()) ->
    {ok, #{token := binary(), expires_at := integer()}} | {error, term()}.
live_session_token(Server) ->
    call(Server, {port, live_session_token}, ?CALL_TIMEOUT).

%%====================================================================
%% Signing
%%====================================================================

%% @doc {@link sign/4} with no options.
-spec sign(server(), method() | binary(), binary()) -> {ok, binary()} | {error, term()}.
sign(Server, Method, Url) -> sign(Server, Method, Url, #{}).

%% @doc The `Authorization' value for a request made with your own HTTP
%% client (HMAC-SHA256 with the LST). `Method' is an atom or a binary (any
%% case). `Url' is an absolute `http://' or `https://' URL with a host, at
%% most 64 KiB of valid UTF-8 without control characters (else
%% `{error, {badarg, url}}'); a query in it is signed as IBKR specifies
%% (decoded parameters in the base string, see `query_signing'). Options: `nonce', `timestamp'
%% (pins, for tests), `lst' (sign with this LST instead of the session's).
%% When the session's own LST has expired the answer is
%% `{error, lst_expired}' (call {@link authenticate/1}); an LST passed as
%% `lst' is used as is. Without any LST: `{error, not_authenticated}'.
-spec sign(server(), method() | binary(), binary(), sign_opts()) ->
    {ok, binary()} | {error, term()}.
sign(Server, Method, Url, Opts) ->
    case {method_bin(Method), abs_url(Url)} of
        {error, _} -> {error, {badarg, method}};
        {_, false} -> {error, {badarg, url}};
        {M, true} ->
            case check_opts(Opts, [{nonce, fun is_nonempty_binary/1},
                                   {timestamp, fun is_non_neg_integer/1},
                                   {lst, fun is_nonempty_binary/1}], opts) of
                {ok, O} -> call(Server, {port, {sign, M, Url, O}}, ?CALL_TIMEOUT);
                {error, _} = E -> E
            end
    end.

%% `http(s)://host[:port]', then nothing or `/', `?', `#' and the rest;
%% valid UTF-8 without control characters; size checked first. The port
%% checks the same (host and port in detail).
-spec abs_url(term()) -> boolean().
abs_url(Url) when is_binary(Url), byte_size(Url) =< ?MAX_URL ->
    case after_scheme(Url) of
        {ok, Rest} -> after_authority(Rest) andalso utf8_text(Url);
        error -> false
    end;
abs_url(_) -> false.

-spec after_scheme(binary()) -> {ok, binary()} | error.
after_scheme(<<H, T1, T2, P, "://", Rest/binary>>)
  when H bor 32 =:= $h, T1 bor 32 =:= $t, T2 bor 32 =:= $t, P bor 32 =:= $p ->
    {ok, Rest};
after_scheme(<<H, T1, T2, P, S, "://", Rest/binary>>)
  when H bor 32 =:= $h, T1 bor 32 =:= $t, T2 bor 32 =:= $t, P bor 32 =:= $p,
       S bor 32 =:= $s ->
    {ok, Rest};
after_scheme(_) -> error.

%% A non-empty host (name, IPv4 or [IPv6]), an optional port, then the end
%% or a path, query or fragment.
-spec after_authority(binary()) -> boolean().
after_authority(<<"[", Rest/binary>>) -> ipv6(Rest, 0);
after_authority(Bin) -> host(Bin, 0).

-spec ipv6(binary(), non_neg_integer()) -> boolean().
ipv6(<<"]", Rest/binary>>, N) -> N >= 2 andalso after_host(Rest);
ipv6(<<C, Rest/binary>>, N)
  when C >= $0, C =< $9; C >= $a, C =< $f; C >= $A, C =< $F; C =:= $:; C =:= $. ->
    ipv6(Rest, N + 1);
ipv6(_, _) -> false.

-spec host(binary(), non_neg_integer()) -> boolean().
host(<<C, Rest/binary>>, N)
  when C >= $a, C =< $z; C >= $A, C =< $Z; C >= $0, C =< $9; C =:= $-; C =:= $.; C =:= $_ ->
    host(Rest, N + 1);
host(Rest, N) -> N >= 1 andalso N =< 253 andalso after_host(Rest).

-spec after_host(binary()) -> boolean().
after_host(<<":", Rest/binary>>) -> port(Rest, 0, 0);
after_host(Rest) -> after_port(Rest).

-spec port(binary(), non_neg_integer(), non_neg_integer()) -> boolean().
port(<<C, Rest/binary>>, Digits, P) when C >= $0, C =< $9, Digits < 5 ->
    port(Rest, Digits + 1, P * 10 + C - $0);
port(Rest, _Digits, P) -> P >= 1 andalso P =< 65535 andalso after_port(Rest).

-spec after_port(binary()) -> boolean().
after_port(<<>>) -> true;
after_port(<<C, _/binary>>) -> C =:= $/ orelse C =:= $? orelse C =:= $#.

%% Valid UTF-8 without ASCII control characters, matched in place.
-spec utf8_text(binary()) -> boolean().
utf8_text(<<C, Rest/binary>>) when C >= 32, C < 127 -> utf8_text(Rest);
utf8_text(<<C/utf8, Rest/binary>>) when C >= 128 -> utf8_text(Rest);
utf8_text(<<>>) -> true;
utf8_text(_) -> false.

%%====================================================================
%% Requests
%%====================================================================

%% @doc {@link request/4} with no options.
-spec request(server(), method(), binary()) -> {ok, response()} | {error, term()}.
request(Server, Method, Path) -> request(Server, Method, Path, #{}).

%% @doc An HTTPS request done by the port, signed with the session's LST.
%%
%% `Path' is relative to `base_url' and starts with `/'. Options: `query'
%% (pairs of binaries, percent-encoded here: RFC 3986 unreserved characters
%% kept, everything else `%XX'), `body' (iodata: JSON text; a non-empty body
%% goes out with `Content-Type: application/json' unless `headers' has a
%% `content-type'), `json' (instead of `body': a term the port encodes as
%% the JSON body, same `Content-Type' rule), `decode => json' (the answer
%% gains `json', see below), `headers' (at most 100 `{Name, Value}'
%% binaries, 64 KiB together, else `{error, {badarg, headers}}'), `timeout'
%% (ms or `infinity', default the session's `request_timeout'; the whole
%% request including waiting for a handshake and retries; `0' is a deadline
%% already passed: `{error, timeout}' at once, nothing sent). A path with its
%% query over 64 KiB is `{error, {badarg, url}}'. Every bad argument is
%% refused before anything is copied or sent, its sizes checked first.
%%
%% JSON mapping, both ways (done in the port): object = map with binary keys
%% (atom keys accepted when encoding), array = list, string = UTF-8 binary,
%% integer = integer (strictly between -2^63 and 2^64-1), other number =
%% float, `true'/`false'/`null' = those atoms (Elixir: `:null', not `nil').
%% A `json' term that does not map (tuples, pids, other atoms, invalid
%% UTF-8, bitstrings, improper lists, integers outside that range, a key
%% with a NUL byte, a map with `a' and `<<"a">>' as keys, more than 128
%% levels of nesting) is `{error, {badarg, json}}', before anything is sent;
%% `json' together with
%% `body' is `{error, {badarg, json}}'. With `decode => json' the answer of a
%% complete exchange (any status) carries `json := Term', or, when the body
%% is not JSON, `json_error := Why' (`empty', `syntax', `utf8', `depth',
%% `too_large', `number': an integer outside that range, `NaN',
%% `Infinity' or a float beyond the double range); the raw `body' is always
%% there. A `POST /tickle' is always decoded this way (its `session' feeds
%% {@link websocket_info/1} and the streams), so its answer carries `json'
%% even without the option. Duplicate keys in an object: the last one wins. The port parses
%% with json-c (strict mode), which also takes a few things RFC 8259 does
%% not, such as `1.' and `-01' (c_src/PROTOCOL.md, "JSON mapping").
%%
%% Without a usable LST (none, or expiring within `refresh_margin') the
%% session authenticates first, one handshake for all waiting requests.
%% After a failed handshake the next one starts 1 s, 2 s, 4 s ... 60 s after
%% the failed one started: a request needing an LST meanwhile waits for it,
%% or, if its deadline comes first, gets that handshake's error at once. A
%% `401' triggers one fresh LST and one retry; a second `401' is returned.
%% A `429' with `Retry-After' is retried once if that fits in the timeout.
%% Transport errors are retried once when the request cannot have reached
%% the server (`{transport, resolve | connect | tls}'), or for `get'/`head'.
%% If the port program dies while it holds the request, the answer is
%% `{error, port_down}' (not resent); a request still waiting in the session
%% (rate limit, handshake) goes out on the new port within its timeout.
%% Any complete HTTP exchange is `{ok, #{status, headers, body,
%% queued_ms}}' (header names lower-case; `queued_ms': how long the request
%% waited for the session's rate limit, all attempts together), except one
%% of IBKR's own errors: a final answer outside 2xx that {@link
%% ibkr_oauth_ibkr_error:classify/3} recognises (after the retries above;
%% any `401', `410' or `429', and bodies such as "no bridge") is
%% `{error, {ibkr, Kind, #{status, message, incident}}}' (a `429' also
%% carries `retry_after', seconds). A request that waited for a handshake
%% IBKR refused gets the handshake's error.
%%
%% Rate limit (config `rate_limit'): every request waits, in order, until
%% the session's global limit (default 50 per second) and its endpoint's
%% limit (default IBKR's documented table, e.g. `/portfolio/accounts' 1 per
%% 5 s) have room, so IBKR never sees more than that. Nothing is dropped
%% silently: a request the limit cannot let go before its deadline (the
%% least wait for a slot reaches it) is answered `{error, rate_limited}' as
%% soon as the session knows, and was never sent (safe to retry, even a
%% `post'); `{error, timeout}' when its deadline passes otherwise.
-spec request(server(), method(), binary(), request_opts()) ->
    {ok, response()} | {error, term()}.
request(Server, Method, Path, Opts) ->
    try
        lists:member(Method, ?METHODS) orelse throw({badarg, method}),
        is_map(Opts) orelse throw({badarg, opts}),
        PathQuery = path_query(Path, maps:get(query, Opts, [])),
        Headers = headers(maps:get(headers, Opts, [])),
        Body = body(maps:get(body, Opts, <<>>)),
        PortOpts = json_opts(Opts),
        Timeout = case maps:get(timeout, Opts, default) of
                      default -> default;
                      infinity -> infinity;
                      T when is_integer(T), T >= 0, T =< ?MAX_TIMEOUT -> T;
                      _ -> throw({badarg, timeout})
                  end,
        CallTimeout = case Timeout of
                          default -> ?BACKSTOP;
                          infinity -> infinity;
                          %% above the longest timer: the session's own
                          %% deadline answers anyway
                          _ when Timeout + ?CALL_MARGIN > ?MAX_TIMEOUT -> infinity;
                          _ -> Timeout + ?CALL_MARGIN
                      end,
        {PathQuery, Headers, Body, Timeout, CallTimeout, PortOpts}
    of
        {PQ, H, B, TO, CT, PO} ->
            call(Server, {request, Method, PQ, H, B, TO, PO}, CT)
    catch
        throw:{badarg, _} = Why -> {error, Why};
        throw:too_large -> {error, too_large}
    end.

%% Sizes first (the path, then the query pairs' bytes in one bounded walk),
%% then the bytes scanned in place: a huge path or query is refused at once.
-spec path_query(term(), term()) -> binary().
path_query(<<"/", _/binary>> = Path, _) when byte_size(Path) > ?MAX_URL ->
    throw({badarg, url});
path_query(<<"/", _/binary>> = Path, Query) ->
    no_ctl(Path) orelse throw({badarg, path}),
    query_fits(Query, byte_size(Path)),
    case encode_query(Query) of
        <<>> -> Path;
        Q ->
            Sep = case binary:match(Path, <<"?">>) of
                      nomatch -> <<"?">>;
                      _ -> <<"&">>
                  end,
            PQ = <<Path/binary, Sep/binary, Q/binary>>,
            byte_size(PQ) =< ?MAX_URL orelse throw({badarg, url}),
            PQ
    end;
path_query(_, _) -> throw({badarg, path}).

%% No whitespace or control characters in a path given as is.
-spec no_ctl(binary()) -> boolean().
no_ctl(<<C, _/binary>>) when C =< 32; C =:= 127 -> false;
no_ctl(<<_, Rest/binary>>) -> no_ctl(Rest);
no_ctl(<<>>) -> true.

%% A proper list of {Key, Value} binaries ({badarg, query} otherwise) whose
%% encoding can fit in a URL: each pair takes at least its bytes plus `='
%% and a separator, so the walk stops ({badarg, url}) as soon as the total
%% passes the limit, however long the list.
-spec query_fits(term(), non_neg_integer()) -> ok.
query_fits([], _Bytes) -> ok;
query_fits([{K, V} | Rest], Bytes) when is_binary(K), is_binary(V) ->
    Bytes1 = Bytes + byte_size(K) + byte_size(V) + 2,
    Bytes1 =< ?MAX_URL orelse throw({badarg, url}),
    query_fits(Rest, Bytes1);
query_fits(_, _) -> throw({badarg, query}).

-spec encode_query([{binary(), binary()}]) -> binary().
encode_query(Pairs) ->
    iolist_to_binary(lists:join($&, [[pct(K), $=, pct(V)] || {K, V} <- Pairs])).

%% RFC 3986 percent-encoding: unreserved characters kept, every other byte
%% %XX (upper-case hex).
-spec pct(binary()) -> binary().
pct(Bin) -> << <<(pct_char(C))/binary>> || <<C>> <= Bin >>.

-spec pct_char(byte()) -> binary().
pct_char(C) when C >= $A, C =< $Z; C >= $a, C =< $z; C >= $0, C =< $9;
                 C =:= $-; C =:= $.; C =:= $_; C =:= $~ -> <<C>>;
pct_char(C) -> <<$%, (hex(C bsr 4)), (hex(C band 15))>>.

-spec hex(0..15) -> byte().
hex(N) when N < 10 -> $0 + N;
hex(N) -> $A + N - 10.

%% At most ?MAX_HEADERS {Name, Value} binaries of ?MAX_HEADER_BYTES
%% together: the walk stops at the first one over, however long the list.
-spec headers(term()) -> [{binary(), binary()}].
headers(H) -> headers(H, 0, 0), H.

-spec headers(term(), non_neg_integer(), non_neg_integer()) -> ok.
headers([], _Count, _Bytes) -> ok;
headers([{N, V} | Rest], Count, Bytes)
  when is_binary(N), is_binary(V), byte_size(N) > 0, Count < ?MAX_HEADERS ->
    Bytes1 = Bytes + byte_size(N) + byte_size(V),
    Bytes1 =< ?MAX_HEADER_BYTES orelse throw({badarg, headers}),
    headers(Rest, Count + 1, Bytes1);
headers(_, _, _) -> throw({badarg, headers}).

%% The `json' and `decode' options, as fields of the port's http command.
%% The port checks the term again; checking it here answers at once, before
%% a handshake or a rate-limit slot is spent on a request that cannot go.
-spec json_opts(map()) -> map().
json_opts(#{json := _, body := _}) -> throw({badarg, json});
json_opts(Opts) ->
    Json = case Opts of
               #{json := T} ->
                   is_json(T, ?JSON_MAX_DEPTH) orelse throw({badarg, json}),
                   #{json => T};
               #{} -> #{}
           end,
    case Opts of
        #{decode := json} -> Json#{decode => json};
        #{decode := _} -> throw({badarg, decode});
        #{} -> Json
    end.

%% The rules of c_src/json_etf.h (json_etf_encode); Depth: containers that
%% may still open.
-spec is_json(term(), non_neg_integer()) -> boolean().
is_json(B, _) when is_binary(B) -> is_utf8(B);
is_json(I, _) when is_integer(I) -> I > ?JSON_INT_MIN andalso I < ?JSON_INT_MAX;
is_json(F, _) when is_float(F) -> true;   % Erlang floats are always finite
is_json(A, _) when A =:= true; A =:= false; A =:= null -> true;
is_json(_, 0) -> false;
is_json(L, Depth) when is_list(L) -> is_json_list(L, Depth - 1);
is_json(M, Depth) when is_map(M) ->
    Names = [json_name(K) || K <- maps:keys(M)],
    not lists:member(error, Names)
        andalso length(lists:usort(Names)) =:= map_size(M)
        andalso lists:all(fun(V) -> is_json(V, Depth - 1) end, maps:values(M));
is_json(_, _) -> false.

-spec is_json_list(term(), non_neg_integer()) -> boolean().
is_json_list([], _) -> true;
is_json_list([H | T], Depth) -> is_json(H, Depth) andalso is_json_list(T, Depth);
is_json_list(_, _) -> false.   % improper

%% A map key's JSON name: binaries (UTF-8) and atoms only, without a NUL
%% byte (json-c's keys are C strings).
-spec json_name(term()) -> binary() | error.
json_name(K) when is_atom(K) -> json_name(atom_to_binary(K, utf8));
json_name(K) when is_binary(K) ->
    case is_utf8(K) andalso binary:match(K, <<0>>) =:= nomatch of
        true -> K;
        false -> error
    end;
json_name(_) -> error.

%% Strict UTF-8 (the utf8 segment refuses overlong forms and surrogates).
-spec is_utf8(binary()) -> boolean().
is_utf8(<<_/utf8, Rest/binary>>) -> is_utf8(Rest);
is_utf8(<<>>) -> true;
is_utf8(_) -> false.

%% The size first: no 1 GiB copy just to refuse it.
-spec body(term()) -> binary().
body(B) ->
    Size = try iolist_size(B)
           catch error:badarg -> throw({badarg, body})
           end,
    Size =< ?MAX_BODY orelse throw(too_large),
    iolist_to_binary(B).

%%====================================================================
%% Websocket
%%====================================================================

%% @doc What a websocket client needs to open IBKR's websocket with this
%% session (bring your own client, e.g. Mint.WebSocket, gun, websocat):
%% ```
%% {ok, #{url := Url, headers := Headers}} = ibkr_oauth:websocket_info(S)
%% '''
%% `url' is `base_url' with `wss://' (or `ws://') and `/ws?oauth_token='
%% plus the access token, e.g.
%% `wss://api.ibkr.com/v1/api/ws?oauth_token=...'; `session' is the
%% `session' field of a `POST /tickle' answer and `cookie' is
%% `api=' plus it; `headers' are the `cookie' and a `user-agent' to send
%% with the upgrade request. IBKR also accepts `{"session":"..."}' as the
%% first message instead of the cookie. The session reuses a tickle answer
%% less than a minute old obtained with the current LST, else it sends
%% `POST /tickle' (authenticating first if needed, as {@link request/4}
%% does, within the session's `request_timeout'). Keep the HTTP session
%% alive (`tickle_interval') and send `tic' on the websocket about every
%% minute; after a new LST, fetch this again and reconnect.
%% Errors: as {@link request/4}, plus `{http, Status, Body}' (or IBKR's own
%% `{ibkr, Kind, Info}') when `/tickle'
%% is refused and `{bad_response, missing_field}' when its answer has no
%% session.
-spec websocket_info(server()) -> {ok, websocket()} | {error, term()}.
websocket_info(Server) ->
    call(Server, websocket_info, ?BACKSTOP).

%% @doc {@link subscribe/3} for the calling process.
-spec subscribe(server(), topic()) -> {ok, sub()} | {error, term()}.
subscribe(Server, Topic) -> subscribe(Server, Topic, #{}).

%% @doc Subscribes a process (the caller, or `to') to an IBKR websocket
%% stream held by the session. `Topic':
%% ```
%% {market_data, Conid, Fields}    smd+Conid+{"fields":Fields}, e.g. {market_data, 265598, [<<"31">>, <<"84">>]}
%% orders | trades | pnl           sor+{} | str+{} | spl{}
%% {account_summary, Account}      ssd+Account+{}
%% {account_ledger, Account}       sld+Account+{}
%% {raw, SubscribeFrame, UnsubscribeFrame | none, RouteTopic}
%% '''
%% The subscriber receives `{ibkr_oauth, Sub, {data, Msg}}' for each server
%% frame whose `topic' is the stream's (`smd+Conid', `sor', `str', `spl',
%% `ssd+Account', `sld+Account', or `RouteTopic'), `Msg' the frame's JSON
%% decoded by the port (objects as maps with binary keys), and
%% `{ibkr_oauth, Sub, {status, up}}' / `{ibkr_oauth, Sub, {status, {down,
%% Reason}}}' when the stream becomes usable / stops being usable (then data
%% may have been missed: resynchronise by REST when that matters). Statuses
%% alternate, starting with `up'.
%%
%% The session opens the websocket on the first subscription (tickle for
%% the cookie, the brokerage session for `smd', `sor', `str'), sends `tic'
%% every 30 s, treats 25 s without a frame as a dead socket, reconnects
%% with backoff (1 s to 60 s, jittered) and resubscribes, sends each `smd'
%% again every `smd_refresh_interval', and reconnects after a new LST, a new
%% port, a changed tickle session or a lost brokerage session. Subscribers
%% of the same stream share one IBKR subscription (market data: the union
%% of the fields; each subscriber gets whole frames). Subscribers are
%% monitored; the last one to leave or die unsubscribes at IBKR, and the
%% socket closes when no stream is left. Errors: `{badarg, topic}' (e.g. a
%% conid that is not a positive integer, a field or account with characters
%% other than letters, digits, `_' (and `.', `-' for accounts)),
%% `{badarg, to}', `{badarg, opts}', and those of any call to the session.
-spec subscribe(server(), topic(), #{to => pid()}) -> {ok, sub()} | {error, term()}.
subscribe(Server, Topic, Opts) ->
    case {ibkr_oauth_stream:validate(Topic), Opts} of
        {{error, _} = E, _} -> E;
        {ok, #{to := Pid}} when is_pid(Pid) -> call(Server, {subscribe, Topic, Pid}, ?CALL_TIMEOUT);
        {ok, #{to := _}} -> {error, {badarg, to}};
        {ok, #{}} -> call(Server, {subscribe, Topic, self()}, ?CALL_TIMEOUT);
        {ok, _} -> {error, {badarg, opts}}
    end.

%% @doc Ends a subscription (an unknown or finished one: `ok' too). No
%% message for it is sent after this returns, and when the caller is the
%% subscriber, those already in its mailbox are removed.
-spec unsubscribe(server(), sub()) -> ok | {error, term()}.
unsubscribe(Server, Sub) when is_reference(Sub) ->
    case call(Server, {unsubscribe, Sub}, ?CALL_TIMEOUT) of
        ok -> flush_sub(Sub);
        {error, _} = E -> E;
        _ -> {error, {badarg, server}}
    end;
unsubscribe(_Server, _Sub) ->
    {error, {badarg, sub}}.

-spec flush_sub(sub()) -> ok.
flush_sub(Sub) ->
    receive {ibkr_oauth, Sub, _} -> flush_sub(Sub)
    after 0 -> ok
    end.

%%====================================================================
%% Introspection
%%====================================================================

%% @doc Counters and state of the session: `requests' (request/4 calls),
%% `handshakes' (LSTs obtained), `errors' (error replies), `port_restarts',
%% `in_flight' (commands at the port), `queued' (requests waiting for a
%% handshake), `rate_limited' (requests that had to wait for the rate
%% limit, including those it refused with `{error, rate_limited}'),
%% `rate_limit_queued' (requests waiting for it now),
%% `authenticated' (an unexpired LST is held),
%% `handshake_in_flight', `expires_at' (epoch ms or `undefined'), `epoch'
%% (number of LSTs so far), `os_pid' (of the port program), `node' (where
%% the session runs: with `{global, Name}', e.g. a cluster session, the node
%% that owns it now). Streams
%% ({@link subscribe/3}): `stream_subscriptions' (subscribers' subscriptions),
%% `stream_topics' (IBKR-side subscriptions), `stream_state' (`idle', `connecting'
%% or `up'), `stream_connects' (websockets opened), `stream_downs' (sockets
%% lost), `stream_messages' (JSON frames received), `stream_delivered'
%% (data messages sent to subscribers), `stream_subscribe_frames',
%% `stream_smd_refreshes'.
-spec stats(server()) -> stats() | {error, term()}.
stats(Server) ->
    case valid_server(Server) andalso whereis_server(Server) of
        false -> {error, {badarg, server}};
        undefined -> {error, noproc};
        Pid ->
            %% the pid found answers, so `node' is the node that answered
            case call(Pid, stats, ?CALL_TIMEOUT) of
                #{epoch := _} = Stats -> Stats#{node => node(Pid)};
                {error, _} = E -> E;
                _ -> {error, {badarg, server}}   % not a session
            end
    end.

%% @doc The OS pid of the session's port program.
-spec os_pid(server()) -> non_neg_integer() | {error, term()}.
os_pid(Server) ->
    case call(Server, os_pid, ?CALL_TIMEOUT) of
        Pid when is_integer(Pid), Pid >= 0 -> Pid;
        undefined -> {error, port_down};
        {error, _} = E -> E;
        _ -> {error, {badarg, server}}           % not a session
    end.

%%====================================================================
%% Helpers
%%====================================================================

-spec call(server(), term(), timeout()) -> term().
call(Server, Request, Timeout) ->
    case valid_server(Server) of
        true ->
            try gen_server:call(Server, Request, Timeout)
            catch
                exit:{Reason, {gen_server, call, _}} -> {error, exit_reason(Reason)};
                exit:Reason -> {error, exit_reason(Reason)}
            end;
        false -> {error, {badarg, server}}
    end.

-spec exit_reason(term()) -> timeout | noproc | port_down.
exit_reason(timeout) -> timeout;
exit_reason(noproc) -> noproc;
exit_reason(normal) -> noproc;
exit_reason(shutdown) -> noproc;
exit_reason({shutdown, _}) -> noproc;
exit_reason({nodedown, _}) -> noproc;
exit_reason({undef, _}) -> noproc;              % {via, M, _}: M has no whereis_name/1
exit_reason(killed) -> port_down;
exit_reason(_) -> port_down.

-spec whereis_server(server()) -> pid() | undefined.
whereis_server(Pid) when is_pid(Pid) -> Pid;
whereis_server(Atom) when is_atom(Atom) -> whereis(Atom);
whereis_server({global, Name}) -> global:whereis_name(Name);
whereis_server({via, M, Name}) ->
    try M:whereis_name(Name) of
        Pid when is_pid(Pid) -> Pid;
        _ -> undefined
    catch
        _:_ -> undefined
    end.

-spec valid_server(term()) -> boolean().
valid_server(P) when is_pid(P); is_atom(P) -> true;
valid_server({global, _}) -> true;
valid_server({via, M, _}) when is_atom(M) -> true;
valid_server(_) -> false.

-spec method_bin(term()) -> binary() | error.
method_bin(get) -> <<"GET">>;
method_bin(post) -> <<"POST">>;
method_bin(put) -> <<"PUT">>;
method_bin(delete) -> <<"DELETE">>;
method_bin(patch) -> <<"PATCH">>;
method_bin(head) -> <<"HEAD">>;
method_bin(<<_, _/binary>> = M) ->
    Up = << <<(upper(C))>> || <<C>> <= M >>,
    case lists:all(fun(C) -> C >= $A andalso C =< $Z end, binary_to_list(Up)) of
        true -> Up;
        false -> error
    end;
method_bin(_) -> error.

-spec upper(byte()) -> byte().
upper(C) when C >= $a, C =< $z -> C - 32;
upper(C) -> C.

%% Known option keys with a type check each; unknown keys are dropped.
-spec check_opts(term(), [{atom(), fun((term()) -> boolean())}], atom()) ->
    {ok, map()} | {error, {badarg, atom()}}.
check_opts(Opts, Spec, _What) when is_map(Opts) ->
    case [K || {K, Ok} <- Spec, is_map_key(K, Opts), not Ok(maps:get(K, Opts))] of
        [] -> {ok, maps:with([K || {K, _} <- Spec], Opts)};
        [K | _] -> {error, {badarg, K}}
    end;
check_opts(_, _, What) -> {error, {badarg, What}}.

-spec is_nonempty_binary(term()) -> boolean().
is_nonempty_binary(B) -> is_binary(B) andalso byte_size(B) > 0.
-spec is_non_neg_integer(term()) -> boolean().
is_non_neg_integer(I) -> is_integer(I) andalso I >= 0.

%% @doc Checks a config the way IBKR will (key files, DH parameters,
%% consumer key, realm, secret, then the live session token, the brokerage
%% session, `/tickle', `/iserver/accounts' and the websocket), see {@link ibkr_oauth_doctor}.
%% @equiv doctor(Config, #{})
-spec doctor(config()) -> [{atom(), ok | {warn, binary()} | {fail, binary()}}].
doctor(Config) -> ibkr_oauth_doctor:run(Config, #{}).

%% @doc {@link doctor/1} with `#{offline => true}' to skip the network.
-spec doctor(config(), #{offline => boolean()}) -> [{atom(), ok | {warn, binary()} | {fail, binary()}}].
doctor(Config, Opts) -> ibkr_oauth_doctor:run(Config, Opts).
