%% Invariants of the streaming policy under random sequences of subscribes,
%% unsubscribes, subscriber deaths, dropped sockets, port deaths, LST
%% renewals, session rotations, lost brokerage sessions, time passing and
%% answers from a simulated port and IBKR server (given at random points):
%% - after the environment settles, the topics subscribed at IBKR on the
%%   open socket are exactly those with at least one live subscriber, every
%%   live subscriber is up, and the monitored pids are exactly the pids with
%%   a subscription;
%% - a message for a topic reaches each of its subscribers once, and only
%%   them;
%% - each subscriber's statuses alternate up, down, up, ... (never two of a
%%   kind in a row), data only arrives while it is up, and nothing is ever
%%   sent on a socket other than the current one.
-module(ibkr_oauth_stream_prop_tests).
-include_lib("proper/include/proper.hrl").
-include_lib("eunit/include/eunit.hrl").

-define(S, ibkr_oauth_stream).

stream_invariants_test_() ->
    {timeout, 300,
     fun() -> ?assert(proper:quickcheck(prop_invariants(), [{numtests, 500}, {to_file, user}])) end}.

%%% ---------------------------------------------------------- generators

topic() ->
    oneof([{market_data, choose(1, 3),
            ?LET(F, non_empty(list(elements([<<"31">>, <<"84">>, <<"86">>]))), lists:usort(F))},
           orders, trades, pnl, {account_summary, <<"U1">>}, {account_ledger, <<"U1">>},
           {raw, <<"smh+5+{}">>, <<"umh+5">>, <<"smh+5">>}]).

command() ->
    frequency([{6, {subscribe, choose(1, 3), topic()}},
               {3, {unsubscribe, choose(1, 1000)}},
               {1, {die, choose(1, 3)}},
               {1, drop},
               {1, port_down},
               {1, lst_renewed},
               {1, rotate},
               {1, sts_lost},
               {2, {wait, choose(0, 70000), boolean()}},
               {3, settle},
               {3, answer_one}]).

prop_invariants() ->
    ?FORALL(Cmds, list(command()),
            %% Debian's PropEr 1.2 calls erlang:get_stacktrace/0 (gone since
            %% OTP 23) when a property raises: a broken invariant is false.
            try check_settled(settle(run(Cmds, env())))
            catch Class:Why:Stack ->
                    io:format(user, "~p:~p~n~p~n", [Class, Why, Stack]),
                    false
            end).

%%% --------------------------------------------------------- environment

env() ->
    #{st => ?S:new(#{smd_refresh_interval => 30000, seed => {3, 1, 4}}),
      now => 0, conn => undefined, next_conn => 1, ibkr => [], session => <<"s0">>,
      want => [], pids => #{1 => pid(), 2 => pid(), 3 => pid()}, subs => [],
      status => #{}, monitored => [], data => #{}, timer => infinity}.

%% A distinct pid per subscriber identity (never alive: the policy does
%% not care).
pid() -> list_to_pid("<0." ++ integer_to_list(erlang:unique_integer([positive])) ++ ".0>").

run([], Env) -> Env;
run([Cmd | Rest], Env) -> run(Rest, command(Cmd, Env)).

command({subscribe, P, Topic}, Env = #{pids := Pids, subs := Subs}) ->
    Sub = make_ref(),
    Pid = maps:get(P, Pids),
    input({subscribe, Sub, Pid, Topic}, Env#{subs := Subs ++ [{Sub, Pid, route(Topic)}]});
command({unsubscribe, _}, Env = #{subs := []}) ->
    Env;
command({unsubscribe, N}, Env = #{subs := Subs}) ->
    {Sub, _, _} = lists:nth(1 + N rem length(Subs), Subs),
    input({unsubscribe, Sub}, Env#{subs := lists:keydelete(Sub, 1, Subs)});
command({die, P}, Env = #{pids := Pids, subs := Subs}) ->
    Pid = maps:get(P, Pids),
    Env1 = Env#{pids := Pids#{P := pid()}, subs := [S || S = {_, Q, _} <- Subs, Q =/= Pid]},
    input({subscriber_down, Pid}, Env1);
command(drop, Env = #{conn := undefined}) -> Env;
command(drop, Env = #{conn := C}) ->
    input({ws_event, C, {closed, {transport, closed}}}, Env#{conn := undefined, ibkr := []});
command(port_down, Env = #{want := Want}) ->
    %% the port's socket is gone, and so are the answers it owed
    Env1 = input(port_down, Env#{conn := undefined, ibkr := [], want := []}),
    lists:foldl(fun(tickle, E) -> input({tickle_result, {error, port_down}}, E);
                   (ssodh, E) -> input({ssodh_result, {error, port_down}}, E);
                   (open, E) -> input({ws_open_failed, port_down}, E)
                end, Env1, Want);
command(lst_renewed, Env) ->
    input(lst_renewed, Env);
command(rotate, Env = #{session := S}) ->
    New = <<S/binary, "r">>,
    input({tickle_result, {ok, #{session => New, iserver => true}}}, Env#{session := New});
command(sts_lost, Env = #{conn := undefined}) -> Env;
command(sts_lost, Env = #{conn := C}) ->
    input({ws_event, C, sts(false)}, Env);
command({wait, Ms, Hb}, Env = #{now := Now, conn := C}) ->
    Env1 = case {Hb, C} of
               {true, undefined} -> Env;
               {true, _} -> input({ws_event, C, hb()}, Env);
               {false, _} -> Env
           end,
    input(tick, Env1#{now := Now + Ms});
command(settle, Env) ->
    settle(Env);
command(answer_one, Env) ->
    case answer(Env) of
        {ok, Env1} -> Env1;
        none -> Env
    end.

sts(Auth) ->
    {message, #{<<"topic">> => <<"sts">>, <<"args">> => #{<<"authenticated">> => Auth}}}.
hb() -> {message, #{<<"topic">> => <<"system">>, <<"hb">> => 1}}.

route({market_data, C, _}) -> <<"smd+", (integer_to_binary(C))/binary>>;
route(orders) -> <<"sor">>;
route(trades) -> <<"str">>;
route(pnl) -> <<"spl">>;
route({account_summary, A}) -> <<"ssd+", A/binary>>;
route({account_ledger, A}) -> <<"sld+", A/binary>>;
route({raw, _, _, R}) -> R.

input(Input, Env = #{st := St, now := Now}) ->
    {Actions, St1} = ?S:handle(Input, Now, St),
    lists:foldl(fun action/2, Env#{st := St1}, Actions).

action(tickle, Env = #{want := W}) -> Env#{want := W ++ [tickle]};
action(ssodh_init, Env = #{want := W}) -> Env#{want := W ++ [ssodh]};
%% A new open supersedes an unanswered one (the session drops late answers
%% to it, and the port's new socket replaces the old).
action({ws_open, #{cookie := _}}, Env = #{want := W}) -> Env#{want := (W -- [open]) ++ [open]};
action({ws_send, C, Frame}, Env = #{conn := Conn, ibkr := Ibkr}) ->
    C =:= Conn orelse error({sent_on_other_socket, C, Conn}),
    Env#{ibkr := ibkr_frame(Frame, Ibkr)};
action({ws_close, C}, Env = #{conn := C}) -> Env#{conn := undefined, ibkr := []};
action({ws_close, _}, Env) -> Env;
action({deliver, _P, Sub, {status, up}}, Env = #{status := St}) ->
    maps:get(Sub, St, down) =:= up andalso error({up_twice, Sub}),
    Env#{status := St#{Sub => up}};
action({deliver, _P, Sub, {status, {down, _}}}, Env = #{status := St}) ->
    maps:get(Sub, St, down) =:= up orelse error({down_without_up, Sub}),
    Env#{status := St#{Sub => down}};
action({deliver, _P, Sub, {data, _}}, Env = #{status := St, data := D}) ->
    maps:get(Sub, St, down) =:= up orelse error({data_while_down, Sub}),
    Env#{data := D#{Sub => maps:get(Sub, D, 0) + 1}};
action({monitor, P}, Env = #{monitored := M}) ->
    lists:member(P, M) andalso error({monitored_twice, P}),
    Env#{monitored := [P | M]};
action({demonitor, P}, Env = #{monitored := M}) ->
    lists:member(P, M) orelse error({demonitor_unknown, P}),
    Env#{monitored := lists:delete(P, M)};
action({log, _, _, _}, Env) -> Env;
action({timer, tick, T}, Env) -> Env#{timer := T}.

%% What the IBKR server makes of a frame.
ibkr_frame(<<"tic">>, I) -> I;
ibkr_frame(<<"smd+", R/binary>>, I) -> add(<<"smd+", (target(R))/binary>>, I);
ibkr_frame(<<"umd+", R/binary>>, I) -> lists:delete(<<"smd+", (target(R))/binary>>, I);
ibkr_frame(<<"smh+", R/binary>>, I) -> add(<<"smh+", (target(R))/binary>>, I);
ibkr_frame(<<"umh+", R/binary>>, I) -> lists:delete(<<"smh+", R/binary>>, I);
ibkr_frame(<<"sor+{}">>, I) -> add(<<"sor">>, I);
ibkr_frame(<<"uor+{}">>, I) -> lists:delete(<<"sor">>, I);
ibkr_frame(<<"str+{}">>, I) -> add(<<"str">>, I);
ibkr_frame(<<"utr{}">>, I) -> lists:delete(<<"str">>, I);
ibkr_frame(<<"spl{}">>, I) -> add(<<"spl">>, I);
ibkr_frame(<<"upl{}">>, I) -> lists:delete(<<"spl">>, I);
ibkr_frame(<<"ssd+", R/binary>>, I) -> add(<<"ssd+", (target(R))/binary>>, I);
ibkr_frame(<<"usd+", R/binary>>, I) -> lists:delete(<<"ssd+", (target(R))/binary>>, I);
ibkr_frame(<<"sld+", R/binary>>, I) -> add(<<"sld+", (target(R))/binary>>, I);
ibkr_frame(<<"uld+", R/binary>>, I) -> lists:delete(<<"sld+", (target(R))/binary>>, I);
ibkr_frame(Other, _I) -> error({unexpected_frame, Other}).

target(R) -> hd(binary:split(R, <<"+">>)).

add(R, I) -> lists:usort([R | I]).

%% Answer every outstanding request, greet every new socket, let every
%% backoff run out, until nothing is pending.
settle(Env) -> settle(Env, 100).

settle(_Env, 0) -> error(does_not_settle);
settle(Env, N) ->
    case answer(Env) of
        {ok, Env1} -> settle(Env1, N - 1);
        none -> Env
    end.

%% Answers the first outstanding request, or runs out the backoff.
answer(Env = #{want := [tickle | W], session := S}) ->
    {ok, input({tickle_result, {ok, #{session => S, iserver => true}}}, Env#{want := W})};
answer(Env = #{want := [ssodh | W]}) ->
    {ok, input({ssodh_result, ok}, Env#{want := W})};
answer(Env = #{want := [open | W], next_conn := C}) ->
    Env1 = input({ws_opened, C}, Env#{want := W, conn := C, next_conn := C + 1, ibkr := []}),
    System = {message, #{<<"topic">> => <<"system">>, <<"success">> => <<"u">>}},
    Env2 = input({ws_event, C, System}, Env1),
    {ok, input({ws_event, C, sts(true)}, Env2)};
answer(Env = #{st := St, now := Now, timer := T}) ->
    case maps:get(stream_state, ?S:stats(St)) of
        connecting when is_integer(T) -> {ok, input(tick, Env#{now := Now + T})};
        _ -> none
    end.

check_settled(Env = #{st := St, subs := Subs, ibkr := Ibkr, status := Status, monitored := M,
                      conn := C}) ->
    Live = lists:usort([R || {_, _, R} <- Subs]),
    Pids = lists:usort([P || {_, P, _} <- Subs]),
    State = maps:get(stream_state, ?S:stats(St)),
    Ok = Live =:= Ibkr
        andalso Live =:= ?S:ibkr_subscriptions(St)
        andalso lists:all(fun({S, _, _}) -> maps:get(S, Status, down) =:= up end, Subs)
        andalso lists:sort(M) =:= Pids
        andalso (Subs =:= [] orelse (State =:= up andalso C =/= undefined))
        andalso (Subs =/= [] orelse (State =:= idle andalso C =:= undefined))
        andalso routes_deliver(Live, Env),
    Ok orelse io:format(user, "live ~p~nibkr ~p~npolicy ~p~nstate ~p~n",
                        [Live, Ibkr, ?S:ibkr_subscriptions(St), State]),
    Ok.

%% One message per live route reaches exactly that route's subscribers.
routes_deliver(Routes, Env0 = #{subs := Subs, conn := C}) ->
    lists:all(fun(R) ->
                      Env = input({ws_event, C, {message, #{<<"topic">> => R}}}, Env0#{data := #{}}),
                      Want = lists:sort([S || {S, _, R1} <- Subs, R1 =:= R]),
                      Got = maps:get(data, Env),
                      Want =:= lists:sort(maps:keys(Got))
                          andalso lists:all(fun(V) -> V =:= 1 end, maps:values(Got))
              end, Routes).
