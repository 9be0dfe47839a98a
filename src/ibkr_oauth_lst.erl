%% @doc The live session token policy: when an LST is usable, when a
%% handshake starts, who waits for it, what happens when it ends, when the
%% LST is renewed and how failures back off. Pure: no process, no clock (the
%% time, system ms, is passed in); every function returns the new state and
%% the {@link action()}s the session carries out.
%%
%% <h3>State</h3>
%% `auth' is `none' or `{lst, ExpiresAt, ObtainedAt, Source}' (`port': a
%% handshake the port did, renewed in the background; `user': installed with
%% `lst_complete/2', never renewed). `epoch' counts LSTs. `phase' is `idle',
%% `{lst, Step, Origin}' (the LST request) or `{ssodh, Step, Origin}' (the
%% brokerage session after a new LST), `Step' being `queued' (waiting for
%% the rate limit) or `{sent, Id}' (at the port); `Origin' is `demand' (a
%% caller needs it) or `renew' (background). One handshake at a time:
%% `authenticate/1' callers and requests wait for it.
%%
%% <h3>Rules</h3>
%% <ul>
%% <li>Usable: `Now + margin < ExpiresAt', `margin' being `refresh_margin'
%% capped at half the token's lifetime; while a renewal fails, the LST is
%% still used until it expires.</li>
%% <li>An LST from the port that is already expired, or expires within the
%% minimum lifetime (60 s, lowered to `refresh_margin' when that is smaller,
%% never below 1 s) is refused: `{error, {bad_response, lst_expiration}}'
%% (a clock skew, or seconds sent instead of milliseconds).</li>
%% <li>A failed handshake, of any origin, backs off: the next one starts no
%% sooner than 1 s, 2 s, 4 s ... 60 s after the failed one started. Until
%% then, requests that need an LST wait for the next handshake (or, when
%% their deadline comes first, get the last handshake's error at once): a
%% caller never causes more than one handshake per backoff step. Only an explicit `authenticate/1' starts one
%% at once. A failed background renewal is retried at the end of each step.</li>
%% <li>A 401 to a request signed with the current LST starts one handshake;
%% signed with an older LST, the request just goes again.</li>
%% <li>A handshake refused with one of IBKR's own errors fails with
%% `{error, {ibkr, Kind, Info}}' (see {@link ibkr_oauth_ibkr_error}), for
%% `authenticate/1' callers and the requests that waited for it alike; the
%% warning logged says the kind and what to do. `lst_signature_mismatch' is
%% logged with its likely causes; so is the final 401 of a request signed
%% with the newest LST ({@link answered/4}), once per LST.</li>
%% <li>When the port dies, the LST is gone. Requests waiting for a handshake
%% never left the BEAM: they stay, and a new handshake is started on the new
%% port. `authenticate/1' callers whose handshake was at the port get
%% `{error, port_down}'.</li>
%% </ul>
-module(ibkr_oauth_lst).

-export([new/1, usable/2, live/2, expired/2, epoch/1, expires_at/1, phase/1, idle/1,
         waiting/1, margin/1]).
-export([start_background/2, authenticate/3, request/4, retry_auth/5, forget/2, wants/2, sent/3,
         sent_id/1, lst_done/3, ssodh_done/2, installed/3, timer/2, port_down/2, abandon/2,
         min_lifetime/1, answered/4]).

-export_type([lst/0, action/0, origin/0, phase/0]).

-type origin() :: demand | renew.
-type step() :: queued | {sent, term()}.
-type phase() :: idle | {lst | ssodh, step(), origin()}.
-type auth() :: none | {lst, ExpiresAt :: integer(), ObtainedAt :: integer(), port | user}.
-type ref() :: term().
-type left() :: integer() | infinity.

%% What the session does for the policy:
%% `{reply, From, Reply}' answers an `authenticate/1' caller;
%% `{send, Ref}' lets a waiting request go (to the rate limit);
%% `{fail, Ref, Error}' answers a waiting request with an error;
%% `{job, lst | ssodh}' queues the session's own handshake step (rate limit,
%% then the port); `{renew_in, Ms}' (re)arms the one renewal timer, which
%% calls {@link timer/2}; `cancel_renew' stops it; `{log, Level, Format,
%% Args, Meta}' and `{count, Counter, N}' are for logs and stats;
%% `{handshake_done, ok | {error, Reason}}' says an LST request ended (for
%% telemetry).
-type action() :: {reply, gen_server:from(), term()}
                | {send, ref()}
                | {fail, ref(), {error, term()}}
                | {job, lst | ssodh}
                | {renew_in, non_neg_integer()}
                | cancel_renew
                | {log, logger:level(), io:format(), [term()], map()}
                | {count, atom(), non_neg_integer()}
                | {handshake_done, ok | {error, term()}}.

-record(lst, {
    auth = none :: auth(),
    epoch = 0 :: non_neg_integer(),
    margin = 0 :: non_neg_integer(),             % configured refresh_margin, ms
    brokerage = false :: boolean(),
    phase = idle :: phase(),
    hs_epoch = 0 :: non_neg_integer(),           % epoch when the handshake started
    backoff = 0 :: non_neg_integer(),            % ms, 0: the last handshake worked
    started = 0 :: integer(),                    % when the last handshake started
    retry_at :: integer() | undefined,           % no implicit handshake before
    last_error = {error, not_authenticated} :: {error, term()},
    warned_401 = 0 :: non_neg_integer(),         % epoch whose final 401 was explained
    background = false :: boolean(),             % keep an LST without demand
    callers = [] :: [gen_server:from()],         % authenticate/1, newest first
    reqs = [] :: [{ref(), boolean()}]            % newest first; true: after its 401
}).

-opaque lst() :: #lst{}.

-define(BACKOFF_MIN, 1000).
-define(BACKOFF_MAX, 60000).
-define(MIN_LIFETIME, 60000).
-define(MIN_LIFETIME_FLOOR, 1000).
-define(RENEW_MIN, 1000).
-define(LOG, #{event => handshake}).
-define(UNIX_EPOCH_S, 62167219200).   % calendar:datetime_to_gregorian_seconds({{1970,1,1},{0,0,0}})

%%====================================================================
%% State
%%====================================================================

-spec new(#{refresh_margin := non_neg_integer(), brokerage_session := boolean()}) -> lst().
new(#{refresh_margin := M, brokerage_session := B}) ->
    #lst{margin = M, brokerage = B}.

%% @doc The LST may sign a request now.
-spec usable(integer(), lst()) -> boolean().
usable(Now, #lst{auth = {lst, E, _, _}, backoff = B} = L) ->
    Now + margin(L) < E orelse (B > 0 andalso Now < E);
usable(_, _) -> false.

%% @doc An unexpired LST is held.
-spec live(integer(), lst()) -> boolean().
live(Now, #lst{auth = {lst, E, _, _}}) -> Now < E;
live(_, _) -> false.

%% @doc An LST is held and has expired: `sign/3' with it would only earn a
%% 401 later, so the caller is told `{error, lst_expired}' now.
-spec expired(integer(), lst()) -> boolean().
expired(Now, #lst{auth = {lst, E, _, _}}) -> Now >= E;
expired(_, _) -> false.

-spec epoch(lst()) -> non_neg_integer().
epoch(#lst{epoch = E}) -> E.

-spec expires_at(lst()) -> integer() | undefined.
expires_at(#lst{auth = {lst, E, _, _}}) -> E;
expires_at(_) -> undefined.

-spec phase(lst()) -> phase().
phase(#lst{phase = P}) -> P.

-spec idle(lst()) -> boolean().
idle(#lst{phase = P}) -> P =:= idle.

%% @doc The number of requests waiting for a handshake.
-spec waiting(lst()) -> non_neg_integer().
waiting(#lst{reqs = R}) -> length(R).

%% @doc `refresh_margin', at most half of the current LST's lifetime (a
%% short-lived LST cannot cause a handshake per request).
-spec margin(lst()) -> non_neg_integer().
margin(#lst{auth = {lst, E, Obtained, _}, margin = M}) -> min(M, max(0, E - Obtained) div 2);
margin(#lst{margin = M}) -> M.

%% @doc The least lifetime an LST from the port must have.
-spec min_lifetime(lst()) -> pos_integer().
min_lifetime(#lst{margin = M}) -> max(?MIN_LIFETIME_FLOOR, min(M, ?MIN_LIFETIME)).

%%====================================================================
%% Events
%%====================================================================

%% @doc A handshake in the background (`auto_authenticate'); renewed and
%% retried like a renewal.
-spec start_background(integer(), lst()) -> {[action()], lst()}.
start_background(Now, #lst{phase = idle} = L) -> start(renew, Now, L);
start_background(_Now, L) -> {[], L}.

%% @doc An `authenticate/1' call: joins the handshake in flight, or starts
%% one at once (explicit: the backoff does not delay it).
-spec authenticate(gen_server:from(), integer(), lst()) -> {[action()], lst()}.
authenticate(From, Now, #lst{callers = C, phase = idle} = L) ->
    start(demand, Now, L#lst{callers = [From | C]});
authenticate(From, _Now, #lst{callers = C} = L) ->
    {[], L#lst{callers = [From | C]}}.

%% @doc A request wants to go; `Left': ms before its deadline.
-spec request(ref(), left(), integer(), lst()) -> {[action()], lst()}.
request(Ref, Left, Now, #lst{phase = idle} = L) ->
    case usable(Now, L) of
        true -> {[{send, Ref}], L};
        false -> need(Ref, false, Left, Now, L)
    end;
request(Ref, _Left, _Now, L) ->
    {[], enqueue(Ref, false, L)}.

%% @doc A request signed with the LST of `ReqEpoch' was refused (401, or no
%% LST in the port).
-spec retry_auth(ref(), non_neg_integer(), left(), integer(), lst()) -> {[action()], lst()}.
retry_auth(Ref, ReqEpoch, Left, Now, #lst{phase = idle, epoch = ReqEpoch} = L) ->
    need(Ref, true, Left, Now, L);
retry_auth(Ref, _ReqEpoch, _Left, _Now, #lst{phase = {_, _, _}} = L) ->
    {[], enqueue(Ref, true, L)};
retry_auth(Ref, _ReqEpoch, Left, Now, L) ->
    request(Ref, Left, Now, L).                 % a newer LST exists

%% No handshake runs and the request needs one: start it, unless the
%% backoff holds (then wait for its end, or fail now if the deadline is
%% sooner).
-spec need(ref(), boolean(), left(), integer(), lst()) -> {[action()], lst()}.
need(Ref, After401, Left, Now, #lst{retry_at = At, last_error = E} = L)
  when is_integer(At), At > Now ->
    case Left =/= infinity andalso Now + Left < At of
        true -> {[{fail, Ref, E}], L};
        false -> {[{renew_in, At - Now}], enqueue(Ref, After401, L)}
    end;
need(Ref, After401, _Left, Now, L) ->
    start(demand, Now, enqueue(Ref, After401, L)).

-spec enqueue(ref(), boolean(), lst()) -> lst().
enqueue(Ref, After401, #lst{reqs = R} = L) -> L#lst{reqs = [{Ref, After401} | R]}.

-spec start(origin(), integer(), lst()) -> {[action()], lst()}.
start(Origin, Now, #lst{epoch = Ep} = L) ->
    {[{job, lst}], L#lst{phase = {lst, queued, Origin}, hs_epoch = Ep, started = Now,
                         background = L#lst.background orelse Origin =:= renew}}.

%% @doc A waiting request is gone (its deadline passed).
-spec forget(ref(), lst()) -> lst().
forget(Ref, #lst{reqs = R} = L) -> L#lst{reqs = lists:keydelete(Ref, 1, R)}.

%% @doc Whether the handshake step `Kind' waits to be sent (the rate limit
%% let its job go).
-spec wants(lst | ssodh, lst()) -> boolean().
wants(Kind, #lst{phase = {Kind, queued, _}}) -> true;
wants(_, _) -> false.

%% @doc The step `Kind' went to the port as `Id'.
-spec sent(lst | ssodh, term(), lst()) -> lst().
sent(Kind, Id, #lst{phase = {Kind, queued, O}} = L) -> L#lst{phase = {Kind, {sent, Id}, O}};
sent(_, _, L) -> L.

%% @doc The port id of the step in flight, if any.
-spec sent_id(lst()) -> term() | none.
sent_id(#lst{phase = {_, {sent, Id}, _}}) -> Id;
sent_id(_) -> none.

%% @doc The port answered the LST request.
-spec lst_done(term(), integer(), lst()) -> {[action()], lst()}.
lst_done({ok, #{expires_at := E}}, Now, #lst{phase = {lst, _, O}} = L) when is_integer(E) ->
    case E - Now > min_lifetime(L) of
        true -> accept(E, O, Now, L);
        false ->
            Log = {log, warning,
                   "ibkr_oauth: live session token refused: the server says it expires at ~b, "
                   "the local clock is ~b (~s)",
                   [E, Now, expiry_hint(E, Now)],
                   ?LOG#{event => handshake_failed, origin => O, expires_at => E, now => Now}},
            Error = {error, {bad_response, lst_expiration}},
            {Acts, L1} = failure(Error, O, Now, L),
            {[Log, {handshake_done, Error} | Acts], L1}
    end;
lst_done(_Reply, Now, #lst{phase = {lst, _, _}, epoch = Ep, hs_epoch = HsEp} = L) when Ep > HsEp ->
    %% lst_complete/2 installed an LST meanwhile (taking the DH exponent of
    %% this handshake, which then failed): waiters get that one.
    {Acts, L1} = case usable(Now, L) of
                     true -> release(L);
                     false -> release_error({error, not_authenticated}, demand, Now, L)
                 end,
    {[{handshake_done, {error, superseded}} | Acts], L1};
lst_done(Reply, Now, #lst{phase = {lst, _, O}} = L) ->
    Error = case Reply of
                {error, Why} -> {error, ibkr_oauth_ibkr_error:from_reason(Why)};
                _ -> {error, bad_reply}
            end,
    {Acts, L1} = failure(Error, O, Now, L),
    {[failed_log(Error, O), {handshake_done, Error} | Acts], L1};
lst_done(_Reply, _Now, L) ->
    {[], L}.

%% The warning for a failed LST request: IBKR's own errors with their kind
%% and advice, a signature mismatch with its likely causes; otherwise the
%% error (IBKR's text, the start of it, says why, e.g. a clock skew).
-spec failed_log({error, term()}, origin()) -> action().
failed_log({error, {ibkr, Kind, _} = Ibkr}, O) ->
    {log, warning, "ibkr_oauth: live session token handshake failed: ~ts",
     [ibkr_oauth_ibkr_error:describe(Ibkr)],
     ?LOG#{event => handshake_failed, origin => O, error => {ibkr, Kind}}};
failed_log({error, lst_signature_mismatch}, O) ->
    {log, warning, "ibkr_oauth: live session token handshake failed: ~ts",
     [ibkr_oauth_ibkr_error:lst_signature_mismatch_text()],
     ?LOG#{event => handshake_failed, origin => O, error => lst_signature_mismatch}};
failed_log(Error, O) ->
    {log, warning, "ibkr_oauth: live session token handshake failed: ~0p",
     [ibkr_oauth_redact:scrub_error(Error)], ?LOG#{event => handshake_failed, origin => O}}.

-spec expiry_hint(integer(), integer()) -> string().
expiry_hint(E, Now) when abs(E * 1000 - Now) < 86400000 ->
    "seconds instead of milliseconds?";
expiry_hint(E, Now) when E =< Now -> "already expired: a clock skew?";
expiry_hint(_, _) -> "too short-lived: a clock skew?".

-spec accept(integer(), origin(), integer(), lst()) -> {[action()], lst()}.
accept(E, O, Now, L0) ->
    L = L0#lst{auth = {lst, E, Now, port}, epoch = L0#lst.epoch + 1, backoff = 0,
               retry_at = undefined, background = true},
    Acts = [{log, info, "ibkr_oauth: new live session token (~p), expires at ~b", [O, E],
             ?LOG#{origin => O, expires_at => E}},
            {count, handshakes, 1},
            {handshake_done, ok},
            {renew_in, max(?RENEW_MIN, E - margin(L) - Now)}],
    case L#lst.brokerage of
        true -> {Acts ++ [{job, ssodh}], L#lst{phase = {ssodh, queued, O}}};
        false ->
            {Acts2, L2} = release(L),
            {Acts ++ Acts2, L2}
    end.

%% @doc The port answered the brokerage-session call: whatever it says, the
%% LST is there; the waiters go.
-spec ssodh_done(term(), lst()) -> {[action()], lst()}.
ssodh_done(Reply, #lst{phase = {ssodh, _, _}} = L) ->
    Log = case Reply of
              {ok, #{status := S}} when S >= 200, S < 300 -> [];
              {ok, #{status := S} = Resp} ->
                  case ibkr_oauth_ibkr_error:classify(S, maps:get(headers, Resp, []),
                                                      maps:get(body, Resp, <<>>)) of
                      http ->
                          [{log, warning, "ibkr_oauth: POST /iserver/auth/ssodh/init answered ~b",
                            [S], #{}}];
                      {ibkr, Kind, _} = Ibkr ->
                          [{log, warning, "ibkr_oauth: POST /iserver/auth/ssodh/init: ~ts",
                            [ibkr_oauth_ibkr_error:describe(Ibkr)],
                            #{event => ssodh_failed, error => {ibkr, Kind}}}]
                  end;
              Other ->
                  [{log, warning, "ibkr_oauth: POST /iserver/auth/ssodh/init failed: ~p",
                    [ibkr_oauth_redact:scrub_error(Other)], #{}}]
          end,
    {Acts, L1} = release(L),
    {Log ++ Acts, L1};
ssodh_done(_, L) -> {[], L}.

%% @doc A request signed with the LST of `ReqEpoch' got its final answer
%% `Reply' at `Now' (system ms). A 401 there, signed with the newest LST (it
%% had its new LST and its retry), almost always means a local cause: it is
%% logged with the likely causes (and the clock skew against the answer's
%% `Date'), once per LST.
-spec answered(term(), non_neg_integer(), integer(), lst()) -> {[action()], lst()}.
answered({ok, #{status := 401} = Resp}, Ep, Now, #lst{epoch = Ep, warned_401 = W} = L)
  when Ep > 0, W =/= Ep ->
    Info = case date_skew(maps:get(headers, Resp, []), Now) of
               {ok, Skew} -> #{skew_s => Skew};
               error -> #{}
           end,
    {[{log, warning, "ibkr_oauth: ~ts", [ibkr_oauth_ibkr_error:first_401_after_lst_text(Info)],
       ?LOG#{event => first_401_after_lst, epoch => Ep}}],
     L#lst{warned_401 = Ep}};
answered(_Reply, _Ep, _Now, L) -> {[], L}.

%% Local clock minus the server's `Date', in s.
-spec date_skew(term(), integer()) -> {ok, integer()} | error.
date_skew(Headers, Now) when is_list(Headers) ->
    case [V || {<<"date">>, V} <- Headers] of
        [Date | _] when is_binary(Date) ->
            case ibkr_oauth_http_date:parse(Date) of
                {ok, DateTime} ->
                    Server = calendar:datetime_to_gregorian_seconds(DateTime) - ?UNIX_EPOCH_S,
                    {ok, Now div 1000 - Server};
                error -> error
            end;
        _ -> error
    end;
date_skew(_, _) -> error.

%% @doc `lst_complete/2' installed an LST (expiring at `E') in the port.
-spec installed(integer(), integer(), lst()) -> {[action()], lst()}.
installed(E, Now, #lst{epoch = Ep} = L) ->
    {[cancel_renew, {count, handshakes, 1}],
     L#lst{auth = {lst, E, Now, user}, epoch = Ep + 1, backoff = 0, retry_at = undefined,
           background = false}}.

%% @doc The renewal timer fired: renew a port LST that is due, retry a
%% failed handshake whose backoff has passed, or start the handshake that
%% requests wait for.
-spec timer(integer(), lst()) -> {[action()], lst()}.
timer(Now, #lst{phase = idle, reqs = R, callers = C} = L) when R =/= []; C =/= [] ->
    case L#lst.retry_at of
        At when is_integer(At), At > Now -> {[{renew_in, At - Now}], L};
        _ -> start(demand, Now, L)
    end;
timer(Now, #lst{phase = idle, auth = {lst, E, _, port}, backoff = 0} = L) ->
    case E - margin(L) - Now of
        Due when Due > 0 -> {[{renew_in, Due}], L};
        _ -> start(renew, Now, L)
    end;
timer(Now, #lst{phase = idle, background = true, auth = A} = L) when A =:= none;
                                                                  element(4, A) =:= port ->
    start(renew, Now, L);
timer(_Now, L) ->
    {[], L}.

%% @doc The port died: its LST and any handshake step it held are gone.
%% Requests waiting never left the BEAM: they stay, and a new handshake
%% (queued, it goes to the new port) is started for them.
-spec port_down(integer(), lst()) -> {[action()], lst()}.
port_down(Now, #lst{phase = Phase, callers = C, reqs = R} = L0) ->
    L = L0#lst{auth = none, backoff = 0, retry_at = undefined, background = false},
    case Phase of
        {lst, queued, _} ->
            {[cancel_renew, {job, lst}], L};
        _ ->
            Lost = case Phase of
                       idle -> [];
                       _ -> [{reply, F, {error, port_down}} || F <- lists:reverse(C)]
                              ++ [{count, errors, length(C)}]
                   end,
            L1 = L#lst{phase = idle, callers = case Phase of idle -> C; _ -> [] end},
            case R of
                [] -> {[cancel_renew | Lost], L1};
                _ ->
                    {Acts, L2} = start(demand, Now, L1),
                    {[cancel_renew | Lost] ++ Acts, L2}
            end
    end.

%% @doc The session stops: every `authenticate/1' caller and waiting request
%% gets `Error'.
-spec abandon({error, term()}, lst()) -> {[action()], lst()}.
abandon(Error, #lst{callers = C, reqs = R} = L) ->
    {[{reply, F, Error} || F <- lists:reverse(C)] ++ [{count, errors, length(C)}]
     ++ [{fail, Ref, Error} || {Ref, _} <- lists:reverse(R)],
     L#lst{phase = idle, callers = [], reqs = []}}.

%%====================================================================
%% Ends of a handshake
%%====================================================================

%% Success (an LST is held): callers get the expiry, waiting requests go.
-spec release(lst()) -> {[action()], lst()}.
release(#lst{auth = {lst, E, _, _}, callers = C, reqs = R} = L) ->
    {[{reply, F, {ok, #{expires_at => E}}} || F <- lists:reverse(C)]
     ++ [{send, Ref} || {Ref, _} <- lists:reverse(R)],
     L#lst{phase = idle, callers = [], reqs = []}}.

%% Failure: back off; callers get the error; waiting requests get it too,
%% except, after a failed renewal, those the current LST can still sign.
-spec failure({error, term()}, origin(), integer(), lst()) -> {[action()], lst()}.
failure(Error, Origin, Now, #lst{backoff = B0, started = Started} = L) ->
    B = min(?BACKOFF_MAX, max(?BACKOFF_MIN, 2 * B0)),
    At = Started + B,
    L1 = L#lst{backoff = B, retry_at = At, last_error = Error},
    {Acts, L2} = release_error(Error, Origin, Now, L1),
    Renew = case Origin of
                renew -> [{renew_in, max(0, At - Now)}];
                demand -> []
            end,
    {Acts ++ Renew, L2}.

-spec release_error({error, term()}, origin(), integer(), lst()) -> {[action()], lst()}.
release_error(Error, Origin, Now, #lst{callers = C, reqs = R} = L) ->
    Live = Origin =:= renew andalso live(Now, L),
    Reqs = [case Live andalso not After401 of
                true -> {send, Ref};
                false -> {fail, Ref, Error}
            end || {Ref, After401} <- lists:reverse(R)],
    {[{reply, F, Error} || F <- lists:reverse(C)] ++ [{count, errors, length(C)} | Reqs],
     L#lst{phase = idle, callers = [], reqs = []}}.
