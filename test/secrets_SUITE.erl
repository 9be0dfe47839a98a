%% No secret ever leaves the port program except through
%% live_session_token/1: a whole lifecycle (handshakes, requests, a 401
%% re-handshake, every handshake fault, bad configs, a crashing session with
%% secret-bearing calls in its mailbox, a supervised session killed and
%% restarted, the port killed) runs with a logger handler keeping every event
%% (crash, supervisor and error reports included) and the port's stderr in a
%% file; then those, every error reason returned, sys:get_status/1 and
%% sys:get_state/1 are searched for the private keys (any 32 characters of
%% their PEM bodies), the access token secret, the prepend, every LST (base64
%% and its bytes) and the pinned DH exponent.
%%
%% Also here: the warning for key files readable by group or others.
-module(secrets_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([lifecycle_leaks_nothing/1, key_file_permissions/1]).
-export([init/1]).

-define(F, ibkr_fake_server).
-define(L, ibkr_check_lib).
-define(API, <<"/portfolio/U1234567/positions/0">>).
-define(WINDOW, 32).

suite() -> [{timetrap, {minutes, 2}}].

all() -> [lifecycle_leaks_nothing, key_file_permissions].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Config.

end_per_suite(_Config) -> ok.

%%% ----------------------------------------------------------------- cases

lifecycle_leaks_nothing(Config) ->
    Dir = ?config(priv_dir, Config),
    Stderr = filename:join(Dir, "port_stderr.log"),
    OldPort = os:getenv("IBKR_OAUTH_PORT"),
    os:putenv("IBKR_OAUTH_PORT", stderr_wrapper(Dir, Stderr)),
    Cap = ?L:capture_logs(),
    {ok, #{config := Client}} = ?F:start_from_vectors(public, #{ca_dir => Dir}),
    try
        Seen = lifecycle(Client, key_files(Client, Dir)),
        Logs = ?L:captured(Cap),
        {ok, PortStderr} = file:read_file(Stderr),
        ct:log("~b bytes of log events, ~b bytes of port stderr, ~b LSTs issued",
               [byte_size(Logs), byte_size(PortStderr), length(maps:get(lsts, Seen))]),
        Secrets = secrets(Client, maps:get(lsts, Seen)),
        Patterns = binary:compile_pattern(windows(Secrets)),
        %% the search finds a secret when there is one
        {pem, SigPem} = maps:get(signature_key, Client),
        ?assertNotEqual(nomatch, binary:match(normalize(io_lib:format("~p", [{x, SigPem}])), Patterns)),
        ?assertNotEqual(nomatch, binary:match(normalize(io_lib:format("~p", [hd(maps:get(lsts, Seen))])), Patterns)),
        [?assertEqual({What, nomatch}, {What, leak(binary:match(normalize(Text), Patterns), normalize(Text))})
         || {What, Text} <- [{log_events, Logs}, {port_stderr, PortStderr},
                             {results, io_lib:format("~p", [maps:get(results, Seen)])},
                             {status, maps:get(status, Seen)}]],
        %% the reports that matter were there to be searched
        [?assertNotEqual({What, nomatch}, {What, binary:match(Logs, Needle)})
         || {What, Needle} <- [{supervisor_report, <<"child_terminated">>},
                               {crash_report, <<"crasher">>},
                               {handshake_warning, <<"handshake failed">>},
                               {port_exit, <<"the port program exited">>}]]
    after
        ?L:stop_capture(Cap),
        case OldPort of
            false -> os:unsetenv("IBKR_OAUTH_PORT");
            _ -> os:putenv("IBKR_OAUTH_PORT", OldPort)
        end,
        ?F:stop()
    end.

%% A key file with any group/other permission bit gets a warning naming the
%% file (never its content) when the session starts; 0600 and PEM content
%% given inline get none.
key_file_permissions(Config) ->
    Dir = ?config(priv_dir, Config),
    Base = ibkr_test_lib:vector_config(public),
    {pem, Pem} = maps:get(signature_key, Base),
    Cap = ?L:capture_logs(),
    try
        Warnings = [begin
                        File = filename:join(Dir, "sig_" ++ integer_to_list(Mode, 8) ++ ".pem"),
                        ok = file:write_file(File, Pem),
                        ok = file:change_mode(File, Mode),
                        ets:delete_all_objects(element(2, Cap)),
                        {ok, S} = ibkr_oauth:start_link(Base#{signature_key => {file, File}}),
                        Logs = ?L:captured(Cap),
                        ok = ibkr_oauth:stop(S),
                        ?assertEqual(nomatch, binary:match(normalize(Logs), pem_body(Pem))),
                        {Mode, warned(Logs, File)}
                    end || Mode <- [8#600, 8#400, 8#640, 8#604, 8#620, 8#644, 8#666]],
        ?assertEqual([{8#600, false}, {8#400, false}, {8#640, true}, {8#604, true},
                      {8#620, true}, {8#644, true}, {8#666, true}], Warnings),
        ets:delete_all_objects(element(2, Cap)),
        {ok, S} = ibkr_oauth:start_link(Base),
        ok = ibkr_oauth:stop(S),
        ?assertEqual(nomatch, binary:match(?L:captured(Cap), <<"readable by group or others">>))
    after
        ?L:stop_capture(Cap)
    end.

%%% ------------------------------------------------------------- lifecycle

%% Runs everything; returns #{results => [every value returned by the API,
%% except live_session_token/1's], lsts => [every LST issued, newest first],
%% status => text of sys:get_status/1 and sys:get_state/1 along the way}.
lifecycle(Client, FileClient) ->
    Acc0 = #{results => [], lsts => [], status => []},
    {ok, S} = ibkr_oauth:start_link(FileClient#{brokerage_session => true, tickle_interval => 200}),
    Steps =
        [fun(A) -> keep(ibkr_oauth:authenticate(S), lst(A)) end,
         fun(A) -> keep(ibkr_oauth:request(S, get, ?API, #{}), A) end,
         fun(A) -> keep(ibkr_oauth:request(S, post, <<"/echo">>, #{body => <<"{\"a\":1}">>}), A) end,
         fun(A) -> keep(ibkr_oauth:request(S, get, <<"/nothing/here">>, #{}), A) end,
         fun(A) -> status(S, A) end,
         %% a 401: one new handshake
         fun(A) -> ok = ?F:set_fault(invalidate_lst), keep(ibkr_oauth:request(S, get, ?API, #{}), lst(A)) end,
         %% every handshake fault, through authenticate/1 (each logs a warning)
         fun(A) -> lists:foldl(fun(Fault, A1) ->
                                       ok = ?F:set_fault(Fault),
                                       keep(ibkr_oauth:authenticate(S), A1)
                               end, A, [wrong_lst_signature, malformed_json, bad_dh_response,
                                        {reject_lst, 1}, {status, 503, 1}, {drop, 1}])
         end,
         fun(A) -> keep(ibkr_oauth:authenticate(S), lst(A)) end,
         fun(A) -> ok = ?F:set_fault({status, 500, 1}), keep(ibkr_oauth:request(S, get, ?API, #{}), A) end,
         fun(A) -> ok = ?F:set_fault({drop, 1}), keep(ibkr_oauth:request(S, post, <<"/echo">>, #{}), A) end,
         %% signing, with the session's LST and with one passed in
         fun(A) ->
                 {ok, #{token := Lst}} = ibkr_oauth:live_session_token(S),
                 A1 = keep(ibkr_oauth:sign(S, get, <<"https://localhost/x?a=1">>), A),
                 keep(ibkr_oauth:sign(S, post, <<"https://localhost/y">>, #{lst => Lst}), A1)
         end,
         fun(A) -> status(S, A) end,
         %% the port killed: the next request handshakes on a new port
         fun(A) ->
                 Old = ibkr_oauth:os_pid(S),
                 ok = ?L:kill_os(Old),
                 ok = ?L:wait_until(fun() -> ibkr_oauth:os_pid(S) =/= Old end, 5000),
                 keep(ibkr_oauth:request(S, get, ?API, #{}), lst(A))
         end,
         fun(A) -> status(S, A) end,
         fun(A) -> bad_configs(Client, A) end,
         fun(A) -> crash_with_secrets_queued(A) end,
         fun(A) -> supervised_kill(Client, A) end,
         fun(A) -> unlink(S), keep(ibkr_oauth:stop(S), A) end],
    lists:foldl(fun(Step, A) -> Step(A) end, Acc0, Steps).

keep(Result, A = #{results := R}) -> A#{results := [Result | R]}.

%% The LST the server issued last (its client holds the same).
lst(A = #{lsts := L}) ->
    {ok, Lst} = ?F:live_session_token(),
    A#{lsts := [Lst | L]}.

status(S, A = #{status := T}) ->
    A#{status := [io_lib:format("~p~n~p~n", [sys:get_status(S), sys:get_state(S)]) | T]}.

%% Configs refused with secrets nearby: the reasons name the field only.
bad_configs(Client, A) ->
    {pem, Enc} = maps:get(encryption_key, Client),
    {pem, Sig} = maps:get(signature_key, Client),
    Secret = maps:get(access_token_secret, Client),
    Bad = [#{encryption_key => {pem, binary:part(Enc, 0, byte_size(Enc) - 40)}},
           #{signature_key => {pem, <<Sig/binary, Sig/binary>>}},
           #{encryption_key => {pem, Sig}},
           #{dh_prime => Secret},
           #{access_token_secret => <<Secret/binary, "!">>},
           #{consumer_key => Sig},
           #{realm => Enc},
           #{base_url => <<"https://", Secret/binary>>},
           #{encryption_key => {file, Sig}},
           #{ca_file => Enc}],
    lists:foldl(fun(Extra, A1) -> keep(ibkr_oauth:start_link(maps:merge(Client, Extra)), A1) end, A, Bad).

%% A session (no network: the vector LST handed in, the DH exponent pinned)
%% is suspended while calls carrying the LST queue up in its mailbox, then
%% crashes (its parent exits it): the gen_server error report and the
%% proc_lib crash report must not show them.
crash_with_secrets_queued(A) ->
    [Case | _] = maps:get(cases, ibkr_test_lib:vectors(public)),
    {ok, S} = ibkr_oauth:start_link(ibkr_test_lib:vector_config(public)),
    Answer = #{diffie_hellman_response => maps:get(diffie_hellman_response, Case),
               live_session_token_signature => maps:get(live_session_token_signature, Case),
               live_session_token_expiration => erlang:system_time(millisecond) + 60000},
    A1 = keep(ibkr_oauth:lst_request(S, maps:with([nonce, timestamp, dh_random], Case)), A),
    A2 = keep(ibkr_oauth:lst_complete(S, Answer), A1),
    Lst = maps:get(live_session_token, Case),
    A3 = status(S, A2),
    ok = sys:suspend(S),
    Callers = ?L:spawn_callers([fun() -> ibkr_oauth:sign(S, get, <<"https://localhost/z">>, #{lst => Lst}) end,
                                fun() -> ibkr_oauth:lst_request(S, maps:with([dh_random], Case)) end,
                                fun() -> ibkr_oauth:lst_complete(S, Answer) end]),
    ok = ?L:wait_until(fun() -> element(2, process_info(S, message_queue_len)) >= 3 end, 5000),
    unlink(S),
    MRef = monitor(process, S),
    exit(S, crashed_on_purpose),
    receive {'DOWN', MRef, _, _, _} -> ok end,
    Results = ?L:collect(Callers, 5000),
    ?assertEqual([{error, port_down}], lists:usort(Results)),
    keep(Results, A3#{lsts := [Lst | maps:get(lsts, A3)]}).

%% A session given its keys as PEM content, under a supervisor of ours,
%% authenticated and killed: the supervisor's report (which shows the child's
%% start arguments) must not show the config. Also a start_session/1 session.
supervised_kill(Client, A) ->
    {ok, Sup} = supervisor:start_link(?MODULE, []),
    {ok, C} = supervisor:start_child(Sup, ibkr_oauth:child_spec(Client)),
    A1 = keep(ibkr_oauth:authenticate(C), lst(A)),
    exit(C, kill),
    ok = ?L:wait_until(fun() -> [{_, P, _, _}] = supervisor:which_children(Sup), is_pid(P) andalso P =/= C end,
                       5000),
    unlink(Sup),
    exit(Sup, shutdown),
    {ok, T} = ibkr_oauth:start_session(Client),
    A2 = keep(ibkr_oauth:authenticate(T), lst(A1)),
    exit(T, kill),
    A2.

%% supervisor callback for supervised_kill/2.
init([]) -> {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, []}}.

%%% ------------------------------------------------------------- secrets

%% What must never show, each as text that may appear: the PEM bodies, the
%% access token secret (as configured, base64), the prepend (hex), every LST
%% (base64, hex of its bytes, its bytes as decimals), the pinned DH exponent.
secrets(Client, Lsts) ->
    [Case | _] = maps:get(cases, ibkr_test_lib:vectors(public)),
    {pem, Enc} = maps:get(encryption_key, Client),
    {pem, Sig} = maps:get(signature_key, Client),
    Raw = [base64:decode(L) || L <- Lsts],
    [pem_body(Enc), pem_body(Sig), maps:get(access_token_secret, Client),
     maps:get(prepend, Case), maps:get(dh_random, Case)]
        ++ Lsts
        ++ [binary:encode_hex(R) || R <- Raw]
        ++ [string:lowercase(binary:encode_hex(R)) || R <- Raw]
        ++ [normalize(io_lib:format("~w", [R])) || R <- Raw].

%% Every 32-character slice (shorter secrets whole), normalized.
windows(Secrets) ->
    lists:usort(lists:append(
                  [case normalize(S) of
                       N when byte_size(N) =< ?WINDOW -> [N];
                       N -> [binary:part(N, I, ?WINDOW) || I <- lists:seq(0, byte_size(N) - ?WINDOW)]
                   end || S <- Secrets])).

%% Only the base64/hex alphabet is kept (both sides), so line breaks, quotes
%% and `~p' continuation lines cannot hide a match.
normalize(Text) ->
    << <<C>> || <<C>> <= unicode:characters_to_binary(Text),
                (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z)
                    orelse (C >= $0 andalso C =< $9) orelse C =:= $+ orelse C =:= $/ >>.

pem_body(Pem) ->
    Lines = [L || L <- binary:split(Pem, <<"\n">>, [global, trim_all]), binary:first(L) =/= $-],
    normalize(Lines).

%% A match, with some context, for the failure message.
leak(nomatch, _) -> nomatch;
leak({At, Len}, Text) ->
    From = max(0, At - 60),
    {leak, binary:part(Text, From, min(byte_size(Text) - From, Len + 120))}.

warned(Logs, File) ->
    lists:any(fun(Line) ->
                      binary:match(Line, <<"readable by group or others">>) =/= nomatch
                          andalso binary:match(Line, unicode:characters_to_binary(File)) =/= nomatch
              end, binary:split(Logs, <<"\n">>, [global])).

%%% ------------------------------------------------------------- helpers

%% The client config with both keys in 0600 files.
key_files(Client, Dir) ->
    maps:map(fun(K, {pem, Pem}) when K =:= encryption_key; K =:= signature_key ->
                     File = filename:join(Dir, atom_to_list(K) ++ ".pem"),
                     ok = file:write_file(File, Pem),
                     ok = file:change_mode(File, 8#600),
                     {file, File};
                (_, V) -> V
             end, Client).

%% A stand-in for the port program that appends its stderr to File (exec
%% keeps the pid and fds 3/4).
stderr_wrapper(Dir, File) ->
    Script = filename:join(Dir, "port_with_stderr.sh"),
    ok = file:write_file(Script, ["#!/bin/sh\nexec '", ibkr_oauth_port:path(), "' \"$@\" 2>>'", File, "'\n"]),
    ok = file:change_mode(Script, 8#700),
    ok = file:write_file(File, <<>>),
    Script.
