%% EUnit: ibkr_oauth_lst, the live session token policy, with an injected
%% clock (system ms).
-module(ibkr_oauth_lst_tests).
-include_lib("eunit/include/eunit.hrl").

-define(L, ibkr_oauth_lst).
-define(DAY, 86400000).
-define(T0, 1700000000000).

new() -> new(300000, false).
new(Margin, Brokerage) -> ?L:new(#{refresh_margin => Margin, brokerage_session => Brokerage}).

%% Only the actions the session acts on (no logs, no counters).
acts(Acts) -> [A || A <- Acts, not is_tuple(A) orelse not lists:member(element(1, A), [log, count, handshake_done])].
logs(Acts) -> [A || {log, _, _, _, _} = A <- Acts].

ok_lst(E) -> {ok, #{expires_at => E}}.

%% A session holding an LST from the port, obtained at ?T0.
authenticated(Life) -> authenticated(Life, new()).
authenticated(Life, L0) ->
    {[{job, lst}], L1} = ?L:authenticate(caller, ?T0, L0),
    L2 = ?L:sent(lst, 7, L1),
    {Acts, L3} = ?L:lst_done(ok_lst(?T0 + Life), ?T0, L2),
    ?assertMatch([{renew_in, _}, {reply, caller, {ok, #{expires_at := _}}}], acts(Acts)),
    L3.

handshake_flow_test() ->
    L0 = new(),
    ?assertNot(?L:usable(?T0, L0)),
    ?assertEqual(undefined, ?L:expires_at(L0)),
    {[{job, lst}], L1} = ?L:request(r1, 5000, ?T0, L0),
    ?assertEqual({lst, queued, demand}, ?L:phase(L1)),
    ?assert(?L:wants(lst, L1)),
    ?assertNot(?L:wants(ssodh, L1)),
    %% others join the single flight
    {[], L2} = ?L:request(r2, infinity, ?T0, L1),
    {[], L3} = ?L:authenticate(c1, ?T0, L2),
    ?assertEqual(2, ?L:waiting(L3)),
    L4 = ?L:sent(lst, 9, L3),
    ?assertEqual(L4, ?L:sent(lst, 10, L4)),                 % not queued any more
    ?assertEqual(9, ?L:sent_id(L4)),
    ?assertNot(?L:wants(lst, L4)),
    E = ?T0 + ?DAY,
    {Acts, L5} = ?L:lst_done(ok_lst(E), ?T0, L4),
    ?assertEqual([{renew_in, ?DAY - 300000}, {reply, c1, ok_lst(E)}, {send, r1}, {send, r2}], acts(Acts)),
    ?assertMatch([{log, info, _, _, #{event := handshake}}], logs(Acts)),
    ?assert(lists:member({count, handshakes, 1}, Acts)),
    ?assert(?L:idle(L5)),
    ?assertEqual(none, ?L:sent_id(L5)),
    ?assertEqual(1, ?L:epoch(L5)),
    ?assertEqual(E, ?L:expires_at(L5)),
    ?assert(?L:usable(?T0, L5)),
    ?assert(?L:live(?T0, L5)),
    ?assertNot(?L:expired(?T0, L5)),
    ?assert(?L:expired(E, L5)),
    ?assertNot(?L:expired(E, new())),
    {[{send, r3}], _} = ?L:request(r3, 10, ?T0, L5).

brokerage_test() ->
    {_, L1} = ?L:authenticate(c, ?T0, new(300000, true)),
    {Acts, L2} = ?L:lst_done(ok_lst(?T0 + ?DAY), ?T0, ?L:sent(lst, 1, L1)),
    ?assertEqual([{renew_in, ?DAY - 300000}, {job, ssodh}], acts(Acts)),
    ?assert(?L:wants(ssodh, L2)),
    {[], L3} = ?L:request(r, infinity, ?T0, L2),           % waits for ssodh too
    L4 = ?L:sent(ssodh, 2, L3),
    {A2, L5} = ?L:ssodh_done({ok, #{status => 200}}, L4),
    ?assertEqual([{reply, c, ok_lst(?T0 + ?DAY)}, {send, r}], acts(A2)),
    ?assertEqual([], logs(A2)),
    ?assert(?L:idle(L5)),
    ?assertEqual({[], L5}, ?L:ssodh_done(late, L5)),
    %% a refused or failed ssodh is logged; the LST is used anyway
    [begin
         {_, M1} = ?L:authenticate(c, ?T0, new(300000, true)),
         {_, M2} = ?L:lst_done(ok_lst(?T0 + ?DAY), ?T0, M1),
         {A, _} = ?L:ssodh_done(Reply, M2),
         ?assertMatch([{log, warning, _, _, _}], logs(A)),
         ?assertEqual([{reply, c, ok_lst(?T0 + ?DAY)}], acts(A))
     end || Reply <- [{ok, #{status => 500}}, {error, timeout}]].

margin_test_() ->
    L = authenticated(?DAY),
    [?_assertEqual(300000, ?L:margin(L)),
     ?_assert(?L:usable(?T0 + ?DAY - 300001, L)),
     ?_assertNot(?L:usable(?T0 + ?DAY - 300000, L)),
     ?_assert(?L:live(?T0 + ?DAY - 1, L)),
     ?_assertNot(?L:live(?T0 + ?DAY, L)),
     %% margin capped at half the lifetime
     ?_assertEqual(300000, ?L:margin(new())),
     ?_assertEqual(2000, ?L:margin(authenticated(4000, new(3000, false))))].

%% ISSUE: an LST that is expired or too short-lived is refused.
min_lifetime_test_() ->
    [?_assertEqual(60000, ?L:min_lifetime(new())),
     ?_assertEqual(4000, ?L:min_lifetime(new(4000, false))),
     ?_assertEqual(1000, ?L:min_lifetime(new(0, false)))].

refuse(E, L0) ->
    {_, L1} = ?L:request(r, 5000, ?T0, L0),
    ?L:lst_done(ok_lst(E), ?T0, ?L:sent(lst, 1, L1)).

expiration_refused_test_() ->
    Err = {error, {bad_response, lst_expiration}},
    Cases = [{"in the past", ?T0 - 1000, "already expired"},
             {"in seconds", ?T0 div 1000 + 3600, "seconds instead"},
             {"10 s ahead", ?T0 + 10000, "too short"},
             {"at the minimum", ?T0 + 60000, "too short"}],
    [{Name, fun() ->
                    {Acts, L} = refuse(E, new()),
                    ?assertEqual([{fail, r, Err}], acts(Acts)),
                    [{log, warning, Fmt, Args, Meta}] = logs(Acts),
                    Text = lists:flatten(io_lib:format(Fmt, Args)),
                    ?assertNotEqual(nomatch, string:find(Text, integer_to_list(E))),
                    ?assertNotEqual(nomatch, string:find(Text, integer_to_list(?T0))),
                    ?assertMatch(#{event := handshake_failed, expires_at := E}, Meta),
                    ?assertNot(?L:usable(?T0, L)),
                    ?assertEqual(0, ?L:epoch(L))
            end} || {Name, E, _} <- Cases]
    ++ [{"hints", fun() ->
                          [?assert(lists:prefix(Hint, hint(E))) || {_, E, Hint} <- Cases]
                  end},
        {"accepted: 60 s + 1 ms, far future", fun() ->
                 {A1, L1} = refuse(?T0 + 60001, new()),
                 ?assertEqual([{renew_in, 30001}, {send, r}], acts(A1)),
                 ?assertEqual(1, ?L:epoch(L1)),
                 {A2, _} = refuse(?T0 + 10 * 365 * ?DAY, new()),
                 ?assertMatch([{renew_in, _}, {send, r}], acts(A2))
         end},
        {"short LSTs with a short refresh_margin", fun() ->
                 {A, _} = refuse(?T0 + 3000, new(1000, false)),
                 ?assertEqual([{renew_in, 2000}, {send, r}], acts(A))
         end}].

hint(E) ->
    {Acts, _} = refuse(E, new()),
    [{log, warning, _, [E, ?T0, Hint], _}] = logs(Acts),
    Hint.

%% ISSUE: failures back off, 1 s .. 60 s, and a request can cause at most
%% one handshake per backoff step.
backoff_test() ->
    Err0 = {error, {http, 401, <<"no">>}},
    %% a 401 is one of IBKR's own errors
    Err = {error, {ibkr, unauthorized, #{status => 401, message => <<>>}}},
    {_, L1} = ?L:request(r1, 30000, ?T0, new()),
    {A1, L2} = ?L:lst_done(Err0, ?T0, ?L:sent(lst, 1, L1)),
    ?assertEqual([{fail, r1, Err}], acts(A1)),
    ?assertMatch([{log, warning, _, _, #{event := handshake_failed, origin := demand}}], logs(A1)),
    %% within the backoff: a request with time waits for its end (no handshake now)
    {[{renew_in, 1000}], L3} = ?L:request(r2, 30000, ?T0, L2),
    %% one whose deadline comes sooner gets the last error at once
    {[{fail, r3, Err}], L3} = ?L:request(r3, 999, ?T0, L3),
    %% the timer fires before the end: re-armed; at the end: one handshake
    {[{renew_in, 1}], _} = ?L:timer(?T0 + 999, L3),
    {[{job, lst}], L4} = ?L:timer(?T0 + 1000, L3),
    %% it fails again: 2 s, then 4 s ... 60 s at most
    {A2, L5} = ?L:lst_done(Err0, ?T0 + 1000, ?L:sent(lst, 2, L4)),
    ?assertEqual([{fail, r2, Err}], acts(A2)),
    {[{renew_in, 2000}], _} = ?L:request(r5, infinity, ?T0 + 1000, L5),
    Steps = lists:foldl(fun(_, {Acc, M, Now}) ->
                                {_, M1} = ?L:authenticate(c, Now, M),
                                {_, M2} = ?L:lst_done(Err0, Now, M1),
                                {[{renew_in, Ms}], _} = ?L:request(x, infinity, Now, M2),
                                {[Ms | Acc], M2, Now + Ms}
                        end, {[], L5, ?T0 + 1000}, lists:seq(1, 7)),
    ?assertEqual([4000, 8000, 16000, 32000, 60000, 60000, 60000], lists:reverse(element(1, Steps))),
    %% success resets it
    {_, M6} = ?L:authenticate(c, ?T0, element(2, Steps)),
    {_, M7} = ?L:lst_done(ok_lst(?T0 + ?DAY), ?T0, M6),
    {[{send, y}], _} = ?L:request(y, 10, ?T0, M7).

%% The step counts from the start of the failed handshake: one that took
%% longer than the step (a stopped port, a slow server) is followed at once.
backoff_from_start_test() ->
    {_, L1} = ?L:request(r1, 60000, ?T0, new()),
    {_, L2} = ?L:lst_done({error, timeout}, ?T0 + 3000, ?L:sent(lst, 1, L1)),
    {[{job, lst}], L3} = ?L:request(r2, 1000, ?T0 + 3000, L2),
    {_, L4} = ?L:lst_done({error, timeout}, ?T0 + 3010, L3),
    %% 2 s from ?T0 + 3000
    {[{renew_in, 1990}], _} = ?L:request(r3, 5000, ?T0 + 3010, L4).

%% authenticate/1 is explicit: it does not wait for the backoff.
authenticate_ignores_backoff_test() ->
    {_, L1} = ?L:authenticate(c1, ?T0, new()),
    {A, L2} = ?L:lst_done({error, timeout}, ?T0, L1),
    ?assertEqual([{reply, c1, {error, timeout}}], acts(A)),
    ?assert(lists:member({count, errors, 1}, A)),
    {[{job, lst}], _} = ?L:authenticate(c2, ?T0, L2),
    %% a reply that is no answer at all
    {_, L3} = ?L:authenticate(c3, ?T0, new()),
    {A3, _} = ?L:lst_done(garbage, ?T0, L3),
    ?assertEqual([{reply, c3, {error, bad_reply}}], acts(A3)),
    %% late answers (no handshake in flight) are ignored
    ?assertEqual({[], new()}, ?L:lst_done(ok_lst(1), ?T0, new())).

%% Renewal in the background; a failed one keeps the current LST in use.
renewal_test() ->
    L = authenticated(?DAY),
    Due = ?T0 + ?DAY - 300000,
    {[{renew_in, 1}], _} = ?L:timer(Due - 1, L),
    {[{job, lst}], L1} = ?L:timer(Due, L),
    ?assertEqual({lst, queued, renew}, ?L:phase(L1)),
    {[], L2} = ?L:request(r1, 5000, Due, L1),
    {[], L3} = ?L:retry_auth(r401, 1, 5000, Due, L2),
    {[], L3} = ?L:timer(Due, L3),                       % busy: nothing
    {A, L4} = ?L:lst_done({error, {http, 503, <<>>}}, Due, ?L:sent(lst, 3, L3)),
    %% r1 goes with the current LST; the request whose 401 started it fails
    ?assertEqual([{send, r1}, {fail, r401, {error, {http, 503, <<>>}}}, {renew_in, 1000}], acts(A)),
    ?assert(?L:usable(Due, L4)),                          % still used until it expires
    ?assertNot(?L:usable(?T0 + ?DAY, L4)),
    {[{job, lst}], L5} = ?L:timer(Due + 1000, L4),
    ?assertEqual({lst, queued, renew}, ?L:phase(L5)),
    %% a failed renewal after expiry: the waiting requests fail
    {_, L6} = ?L:request(r2, 5000, ?T0 + ?DAY, L5),
    {A6, _} = ?L:lst_done({error, timeout}, ?T0 + ?DAY, L6),
    %% (its 2 s step began when it started, long ago: at once)
    ?assertEqual([{fail, r2, {error, timeout}}, {renew_in, 0}], acts(A6)).

%% 401: signed with the current LST, one handshake; signed with an older
%% one, just again.
retry_auth_test() ->
    L = authenticated(?DAY),
    {[{job, lst}], L1} = ?L:retry_auth(r, 1, 5000, ?T0, L),
    ?assertEqual(1, ?L:waiting(L1)),
    {[{send, r}], _} = ?L:retry_auth(r, 0, 5000, ?T0, L),
    {[], L2} = ?L:retry_auth(r2, 0, 5000, ?T0, L1),
    ?assertEqual(2, ?L:waiting(L2)),
    ?assertEqual(1, ?L:waiting(?L:forget(r2, L2))).

%% lst_complete/2: a user LST, not renewed; it answers a handshake it raced.
installed_test() ->
    {[cancel_renew, {count, handshakes, 1}], L} = ?L:installed(?T0 + ?DAY, ?T0, new()),
    ?assert(?L:usable(?T0, L)),
    ?assertEqual({[], L}, ?L:timer(?T0 + ?DAY, L)),          % never renewed
    %% a port handshake fails because lst_complete took its DH exponent
    {_, H1} = ?L:authenticate(c, ?T0, new()),
    {_, H2} = ?L:request(r, 5000, ?T0, H1),
    {_, H3} = ?L:installed(?T0 + ?DAY, ?T0, H2),
    {A, H4} = ?L:lst_done({error, no_pending_handshake}, ?T0, H3),
    ?assertEqual([{reply, c, ok_lst(?T0 + ?DAY)}, {send, r}], acts(A)),
    ?assert(?L:idle(H4)),
    %% ... with an LST that is not usable
    {_, J1} = ?L:authenticate(c, ?T0, new()),
    {_, J2} = ?L:installed(?T0 + 10, ?T0, J1),
    {B, _} = ?L:lst_done({error, no_pending_handshake}, ?T0 + 10, J2),
    ?assertEqual([{reply, c, {error, not_authenticated}}], acts(B)).

%% A background handshake from the start (auto_authenticate) is retried
%% while it fails; a port LST that is not due re-arms the timer.
background_test() ->
    ?assertEqual({[], new()}, ?L:timer(?T0, new())),         % nothing wanted
    %% auto_authenticate: a background handshake from the start, retried
    %% while it fails
    {[{job, lst}], L1} = ?L:start_background(?T0, new()),
    ?assertEqual({lst, queued, renew}, ?L:phase(L1)),
    {[], L1} = ?L:start_background(?T0, L1),                      % one at a time
    {A, L2} = ?L:lst_done({error, timeout}, ?T0, L1),
    ?assertEqual([{renew_in, 1000}], acts(A)),
    {[{job, lst}], _} = ?L:timer(?T0 + 1000, L2).

%% The port died: requests waiting never left the BEAM and stay; callers
%% of a handshake the port held get port_down.
port_down_test() ->
    %% handshake still queued: nothing lost, it goes to the new port
    {_, Q1} = ?L:authenticate(c, ?T0, new()),
    {_, Q2} = ?L:request(r, 5000, ?T0, Q1),
    {[cancel_renew, {job, lst}], Q3} = ?L:port_down(?T0, Q2),
    ?assertEqual({lst, queued, demand}, ?L:phase(Q3)),
    %% handshake at the port: callers lose it, requests get a new one
    {A, S} = ?L:port_down(?T0, ?L:sent(lst, 1, Q2)),
    ?assertEqual([cancel_renew, {reply, c, {error, port_down}}, {job, lst}], acts(A)),
    ?assertEqual({lst, queued, demand}, ?L:phase(S)),
    ?assertEqual(1, ?L:waiting(S)),
    %% idle with an LST: it is gone
    {[cancel_renew], I} = ?L:port_down(?T0, authenticated(?DAY)),
    ?assertNot(?L:live(?T0, I)),
    ?assertEqual(undefined, ?L:expires_at(I)),
    %% ssodh at the port, nobody waiting but the caller
    {_, B1} = ?L:authenticate(c, ?T0, new(300000, true)),
    {_, B2} = ?L:lst_done(ok_lst(?T0 + ?DAY), ?T0, B1),
    {BA, B3} = ?L:port_down(?T0, ?L:sent(ssodh, 4, B2)),
    ?assertEqual([cancel_renew, {reply, c, {error, port_down}}], acts(BA)),
    ?assert(?L:idle(B3)).

abandon_test() ->
    {_, L1} = ?L:authenticate(c, ?T0, new()),
    {_, L2} = ?L:request(r, 5000, ?T0, L1),
    {A, L3} = ?L:abandon({error, port_down}, L2),
    ?assertEqual([{reply, c, {error, port_down}}, {fail, r, {error, port_down}}], acts(A)),
    ?assertEqual(0, ?L:waiting(L3)),
    ?assert(?L:idle(L3)).

%%--------------------------------------------------------------------
%% PropEr (proper_types and proper:forall/2 called directly: Debian's
%% erlang-proper ships no proper.hrl). Against a server whose handshakes
%% all fail: whatever requests arrive (any deadline), whenever the timer
%% fires and however long each handshake takes, handshakes run one at a
%% time and the n-th starts at least min(60 s, 2^(n-2) s) after the one
%% before it started: no request can cause a storm.

hs_op() ->
    T = proper_types,
    T:frequency([{4, {request, T:oneof([infinity, T:range(0, 70000)])}},
                 {3, {advance, T:oneof([T:range(0, 100), T:range(0, 5000), T:range(0, 70000)])}},
                 {2, timer},
                 {3, fail}]).

prop_one_handshake_per_step() ->
    proper:forall(proper_types:list(hs_op()), fun(Ops) -> hs_run(Ops, new(), ?T0, 0, []) end).

%% Starts: the times handshakes started, newest first.
hs_run([], _L, _Now, _N, Starts) ->
    spaced(lists:reverse(Starts));
hs_run([Op | Ops], L, Now, N, Starts) ->
    {Acts, L1, Now1} =
        case Op of
            {request, Left} -> erlang:append_element(?L:request(N, Left, Now, L), Now);
            {advance, Ms} -> {[], L, Now + Ms};
            timer -> erlang:append_element(?L:timer(Now, L), Now);
            fail ->
                case ?L:phase(L) of
                    {lst, _, _} -> erlang:append_element(?L:lst_done({error, x}, Now, ?L:sent(lst, N, L)), Now);
                    _ -> {[], L, Now}
                end
        end,
    New = [Now || {job, lst} <- Acts],
    %% single flight: a handshake starts only when none runs
    true = New =:= [] orelse ?L:idle(L),
    hs_run(Ops, L1, Now1, N + 1, New ++ Starts).

spaced([A, B | Rest]) -> spaced([A, B | Rest], 1);
spaced(_) -> true.

spaced([A, B | Rest], I) ->
    Step = min(60000, 1000 bsl (I - 1)),
    B - A >= Step andalso spaced([B | Rest], I + 1);
spaced(_, _) -> true.

proper_test_() ->
    {timeout, 60,
     ?_assert(proper:quickcheck(prop_one_handshake_per_step(),
                                [{numtests, 500}, {max_size, 80}, {to_file, user}, quiet]))}.

%% IBKR's own errors: the handshake fails with {ibkr, Kind, Info} for callers
%% and waiting requests, and the warning says the kind and the advice;
%% anything unrecognised stays {http, Status, Body}.
ibkr_errors_test() ->
    Body = <<"{\"error\":\"id: 4711, error: invalid consumer\",\"statusCode\":401}">>,
    {_, L1} = ?L:authenticate(c, ?T0, new()),
    {_, L2} = ?L:request(r, 30000, ?T0, L1),
    {A, _} = ?L:lst_done({error, {http, 401, Body}}, ?T0, ?L:sent(lst, 1, L2)),
    Ibkr = {error, {ibkr, invalid_consumer, #{status => 401, message => <<"invalid consumer">>,
                                             incident => 4711}}},
    ?assertEqual([{reply, c, Ibkr}, {fail, r, Ibkr}], acts(A)),
    ?assert(lists:member({handshake_done, Ibkr}, A)),
    [{log, warning, F, Args, Meta}] = logs(A),
    Text = lists:flatten(io_lib:format(F, Args)),
    ?assertNotEqual(nomatch, string:find(Text, "invalid_consumer")),
    ?assertNotEqual(nomatch, string:find(Text, "regional midnight")),   % the advice
    ?assertMatch(#{event := handshake_failed, error := {ibkr, invalid_consumer}}, Meta),
    %% unrecognised
    {_, M1} = ?L:authenticate(c, ?T0, new()),
    {B, _} = ?L:lst_done({error, {http, 503, <<"busy">>}}, ?T0, ?L:sent(lst, 1, M1)),
    ?assertEqual([{reply, c, {error, {http, 503, <<"busy">>}}}], acts(B)),
    ?assert(lists:member({handshake_done, {error, {http, 503, <<"busy">>}}}, B)).

%% A signature mismatch is logged with its likely causes.
signature_mismatch_logged_test() ->
    {_, L1} = ?L:authenticate(c, ?T0, new()),
    {A, _} = ?L:lst_done({error, lst_signature_mismatch}, ?T0, ?L:sent(lst, 1, L1)),
    ?assertEqual([{reply, c, {error, lst_signature_mismatch}}], acts(A)),
    [{log, warning, F, Args, #{error := lst_signature_mismatch}}] = logs(A),
    ?assertNotEqual(nomatch, string:find(lists:flatten(io_lib:format(F, Args)), "dh_prime")).

%% Every end of an LST request says so once (telemetry).
handshake_done_test() ->
    {_, L1} = ?L:authenticate(c, ?T0, new()),
    {A, _} = ?L:lst_done(ok_lst(?T0 + ?DAY), ?T0, ?L:sent(lst, 1, L1)),
    ?assertEqual([{handshake_done, ok}], [X || {handshake_done, _} = X <- A]),
    {B, _} = ?L:lst_done(ok_lst(?T0 + 10), ?T0, ?L:sent(lst, 1, L1)),
    ?assertEqual([{handshake_done, {error, {bad_response, lst_expiration}}}],
                 [X || {handshake_done, _} = X <- B]),
    {C, _} = ?L:lst_done({error, timeout}, ?T0, ?L:sent(lst, 1, L1)),
    ?assertEqual([{handshake_done, {error, timeout}}], [X || {handshake_done, _} = X <- C]).

%% The brokerage session refused with one of IBKR's errors: the warning names it.
ssodh_ibkr_error_test() ->
    {_, M1} = ?L:authenticate(c, ?T0, new(300000, true)),
    {_, M2} = ?L:lst_done(ok_lst(?T0 + ?DAY), ?T0, M1),
    Body = <<"{\"error\":\"failed to generate sso dh token\",\"statusCode\":500}">>,
    {A, _} = ?L:ssodh_done({ok, #{status => 500, headers => [], body => Body}}, M2),
    ?assertEqual([{reply, c, ok_lst(?T0 + ?DAY)}], acts(A)),
    [{log, warning, F, Args, #{error := {ibkr, sso_dh_failed}}}] = logs(A),
    ?assertNotEqual(nomatch, string:find(lists:flatten(io_lib:format(F, Args)), "API support")).

%% The final 401 of a request signed with the newest LST is explained, once
%% per LST, with the clock skew from the answer's Date when there is one.
first_401_after_lst_test() ->
    L = authenticated(?DAY),                              % epoch 1
    Now = 1700000000000,                                  % 2023-11-14 22:13:20 UTC
    R401 = {ok, #{status => 401, headers => [{<<"date">>, <<"Tue, 14 Nov 2023 22:12:20 GMT">>}],
                  body => <<>>}},
    {A, L1} = ?L:answered(R401, 1, Now, L),
    [{log, warning, F, Args, #{event := first_401_after_lst, epoch := 1}}] = A,
    Text = lists:flatten(io_lib:format(F, Args)),
    ?assertNotEqual(nomatch, string:find(Text, "off by 60 s")),
    %% once per LST
    ?assertEqual({[], L1}, ?L:answered(R401, 1, Now, L1)),
    %% not for an older LST, not for other answers, not without an LST
    ?assertEqual({[], L}, ?L:answered(R401, 0, Now, L)),
    ?assertEqual({[], L}, ?L:answered({ok, #{status => 200}}, 1, Now, L)),
    ?assertEqual({[], L}, ?L:answered({error, timeout}, 1, Now, L)),
    ?assertEqual({[], new()}, ?L:answered(R401, 0, Now, new())),
    %% without a Date: the text says to check the clock
    {[{log, warning, F2, Args2, _}], _} = ?L:answered({ok, #{status => 401}}, 1, Now, L),
    ?assertNotEqual(nomatch, string:find(lists:flatten(io_lib:format(F2, Args2)), "check the local clock")).
