%% EUnit for ibkr_oauth_api_policy: the confirmation loop step, the snapshot
%% "ask again", batches, paging, the field table and value conversion.
-module(ibkr_oauth_api_policy_tests).
-include_lib("eunit/include/eunit.hrl").

-define(P, ibkr_oauth_api_policy).

question(Id, MessageIds) ->
    #{<<"id">> => Id, <<"message">> => [<<"Are you sure?">>], <<"isSuppressed">> => false,
      <<"messageIds">> => MessageIds}.

ack(Id) -> #{<<"order_id">> => Id, <<"order_status">> => <<"Submitted">>}.

%%% ------------------------------------------------------- confirmation loop

acks_are_done_test() ->
    Acks = [ack(<<"1">>), ack(<<"2">>)],
    ?assertEqual({done, Acks}, ?P:confirm_step(Acks, [], 5)),
    ?assertEqual({done, Acks}, ?P:confirm_step(Acks, [<<"o354">>], 0)).

listed_question_is_confirmed_test() ->
    Q = question(<<"a1b2-c3">>, [<<"o354">>]),
    ?assertEqual({confirm, <<"a1b2-c3">>, [Q]}, ?P:confirm_step([Q], [<<"o163">>, <<"o354">>], 5)),
    ?assertEqual({confirm, <<"a1b2-c3">>, [Q]}, ?P:confirm_step([Q], [<<"o354">>], 1)).

unlisted_question_is_refused_test() ->
    Q = question(<<"r1">>, [<<"o354">>]),
    ?assertEqual({refuse, <<"r1">>, {confirm_required, [Q]}}, ?P:confirm_step([Q], [], 5)),
    ?assertEqual({refuse, <<"r1">>, {confirm_required, [Q]}}, ?P:confirm_step([Q], [<<"o163">>], 5)).

every_message_id_must_be_listed_test() ->
    Q = question(<<"r1">>, [<<"o354">>, <<"o163">>]),
    ?assertEqual({refuse, <<"r1">>, {confirm_required, [Q]}}, ?P:confirm_step([Q], [<<"o354">>], 5)),
    ?assertMatch({confirm, <<"r1">>, _}, ?P:confirm_step([Q], [<<"o163">>, <<"o354">>], 5)).

question_without_ids_is_never_confirmed_test() ->
    NoIds = maps:remove(<<"messageIds">>, question(<<"r1">>, [])),
    ?assertMatch({refuse, <<"r1">>, {confirm_required, _}}, ?P:confirm_step([NoIds], [<<"o354">>], 5)),
    Empty = question(<<"r2">>, []),
    ?assertMatch({refuse, <<"r2">>, {confirm_required, _}}, ?P:confirm_step([Empty], [<<"o354">>], 5)),
    BadIds = question(<<"r3">>, [354]),
    ?assertMatch({refuse, <<"r3">>, {confirm_required, _}}, ?P:confirm_step([BadIds], [<<"o354">>], 5)).

rounds_are_bounded_test() ->
    Q = question(<<"r9">>, [<<"o354">>]),
    ?assertEqual({refuse, <<"r9">>, {too_many_questions, [Q]}}, ?P:confirm_step([Q], [<<"o354">>], 0)).

ibkr_error_is_rejected_test() ->
    ?assertEqual({error, {rejected, <<"no">>}}, ?P:confirm_step(#{<<"error">> => <<"no">>}, [], 5)),
    ?assertEqual({error, {rejected, <<"no">>}}, ?P:confirm_step([#{<<"error">> => <<"no">>}], [], 5)).

bad_answers_test() ->
    ?assertMatch({error, {bad_response, _}}, ?P:confirm_step([], [], 5)),
    ?assertMatch({error, {bad_response, _}}, ?P:confirm_step(#{<<"x">> => 1}, [], 5)),
    ?assertMatch({error, {bad_response, _}}, ?P:confirm_step([ack(<<"1">>), 7], [], 5)),
    ?assertMatch({error, {bad_response, _}}, ?P:confirm_step(null, [], 5)),
    %% the reply id goes into a path
    [?assertEqual({error, {bad_response, reply_id}},
                  ?P:confirm_step([question(Id, [<<"o354">>])], [<<"o354">>], 5))
     || Id <- [<<"../orders">>, <<"a/b">>, <<>>, <<"a?b">>, binary:copy(<<"a">>, 129)]].

%%% ---------------------------------------------------------------- snapshot

snapshot_ready_test() ->
    ?assert(?P:snapshot_ready(#{<<"31">> => <<"1">>}, [<<"31">>, <<"84">>])),
    ?assertNot(?P:snapshot_ready(#{}, [<<"31">>])),
    ?assertNot(?P:snapshot_ready(#{<<"6119">> => <<"q0">>}, [<<"31">>])).

snapshot_asks_again_for_empty_conids_test() ->
    Fields = [<<"31">>, <<"84">>],
    Got = #{1 => #{<<"31">> => <<"10">>}, 2 => #{}},
    ?assertEqual({again, [2, 3]}, ?P:snapshot_step([1, 2, 3], Got, Fields, 4)),
    ?assertEqual(done, ?P:snapshot_step([1, 2, 3], Got, Fields, 0)),
    ?assertEqual(done, ?P:snapshot_step([1], Got, Fields, 4)),
    %% one requested field is enough: IBKR never sends those that do not apply
    ?assertEqual(done, ?P:snapshot_step([1], #{1 => #{<<"84">> => <<"9">>}}, Fields, 4)).

batches_test() ->
    ?assertEqual([], ?P:batches([], 100)),
    ?assertEqual([[1, 2, 3]], ?P:batches([1, 2, 3], 100)),
    ?assertEqual([[1, 2], [3, 4], [5]], ?P:batches([1, 2, 3, 4, 5], 2)),
    L = lists:seq(1, 250),
    B = ?P:batches(L, 100),
    ?assertEqual([100, 100, 50], [length(X) || X <- B]),
    ?assertEqual(L, lists:append(B)).

%%% ------------------------------------------------------------------ paging

paging_test() ->
    ?assertEqual(done, ?P:next_page(0, 0, 100, 100)),
    ?assertEqual(done, ?P:next_page(0, 99, 100, 100)),
    ?assertEqual({next, 1}, ?P:next_page(0, 100, 100, 100)),
    ?assertEqual({next, 3}, ?P:next_page(2, 100, 100, 100)),
    ?assertEqual(done, ?P:next_page(3, 7, 100, 100)),
    ?assertEqual({error, {too_many_pages, 4}}, ?P:next_page(3, 100, 100, 4)).

%%% ------------------------------------------------------------- field table

field_table_both_directions_test() ->
    Expected = [{last, <<"31">>}, {bid, <<"84">>}, {ask, <<"86">>}, {bid_size, <<"88">>},
                {ask_size, <<"85">>}, {volume, <<"87">>}, {high, <<"70">>}, {low, <<"71">>},
                {change, <<"82">>}, {change_pct, <<"83">>}, {open, <<"7295">>}, {close, <<"7296">>}],
    [begin
         ?assertEqual({ok, Id}, ?P:field_id(Name)),
         ?assertEqual(Name, ?P:field_name(Id))
     end || {Name, Id} <- Expected],
    %% every row round-trips, ids and names are unique
    Rows = ?P:fields(),
    ?assertEqual(length(Rows), length(lists:usort([I || {I, _, _} <- Rows]))),
    ?assertEqual(length(Rows), length(lists:usort([N || {_, N, _} <- Rows]))),
    [?assertEqual({ok, I}, ?P:field_id(N)) || {I, N, _} <- Rows].

unknown_fields_test() ->
    ?assertEqual(<<"9999">>, ?P:field_name(<<"9999">>)),
    ?assertEqual({ok, <<"9999">>}, ?P:field_id(<<"9999">>)),
    ?assertEqual(error, ?P:field_id(no_such_field)),
    [?assertEqual(error, ?P:field_id(X))
     || X <- [<<>>, <<"31a">>, <<"last">>, <<"-1">>, 31, "31", <<"12345678901">>]].

field_values_test() ->
    V = fun(Name, Value) -> {ok, Id} = ?P:field_id(Name), ?P:field_value(Id, Value) end,
    ?assertEqual(187.5, V(last, <<"187.5">>)),
    ?assertEqual(187.0, V(last, <<"187">>)),
    ?assertEqual(-1.25, V(change, <<"-1.25">>)),
    ?assertEqual(1.25, V(change, <<"+1.25">>)),
    ?assertEqual(0.67, V(change_pct, <<"0.67">>)),
    ?assertEqual(1234.5, V(bid, <<"1,234.5">>)),
    ?assertEqual(1200, V(bid_size, <<"1,200">>)),
    ?assertEqual(300, V(ask_size, <<"300">>)),
    ?assertEqual(0.5, V(ask_size, <<"0.5">>)),
    ?assertEqual(52300000, V(volume_long, <<"52300000">>)),
    %% kept as IBKR sent them
    ?assertEqual(<<"C187.5">>, V(last, <<"C187.5">>)),
    ?assertEqual(<<"H187.5">>, V(last, <<"H187.5">>)),
    ?assertEqual(<<"52.3M">>, V(volume, <<"52.3M">>)),
    ?assertEqual(<<"2.9T">>, V(market_cap, <<"2.9T">>)),
    ?assertEqual(<<"AAPL">>, V(symbol, <<"AAPL">>)),
    ?assertEqual(<<"1">>, V(can_be_traded, <<"1">>)),
    [?assertEqual(X, V(bid, X))
     || X <- [<<>>, <<"N/A">>, <<"1,20">>, <<"1,2345">>, <<".5">>, <<"5.">>, <<"1e5">>, <<" 1">>,
              <<"--1">>, <<"1.2.3">>]],
    %% JSON numbers and unknown ids are left alone
    ?assertEqual(265598, V(conid, 265598)),
    ?assertEqual(<<"12.5">>, ?P:field_value(<<"9999">>, <<"12.5">>)).

%%% -------------------------------------------------------------- properties
%% PropEr through its functions (Debian's erlang-proper ships no header).

-define(T, proper_types).

message_id() -> ?T:oneof([<<"o354">>, <<"o163">>, <<"o451">>, <<"o10331">>]).

%% Safety: a question is confirmed only when every one of its message ids is
%% listed, it has some, and rounds are left; otherwise it is refused.
prop_never_confirms_unlisted() ->
    proper:forall({?T:list(message_id()), ?T:list(message_id()), ?T:range(0, 3)},
                  fun({Ids, Confirm, Rounds}) ->
                          Q = question(<<"r1">>, Ids),
                          Listed = Ids =/= [] andalso lists:all(fun(I) -> lists:member(I, Confirm) end, Ids),
                          case ?P:confirm_step([Q], Confirm, Rounds) of
                              {confirm, <<"r1">>, [Q]} -> Listed andalso Rounds > 0;
                              {refuse, <<"r1">>, {confirm_required, [Q]}} -> not Listed;
                              {refuse, <<"r1">>, {too_many_questions, [Q]}} -> Listed andalso Rounds =:= 0;
                              _ -> false
                          end
                  end).

prop_batches_keep_order() ->
    proper:forall({?T:list(?T:integer()), ?T:range(1, 7)},
                  fun({L, Size}) ->
                          B = ?P:batches(L, Size),
                          lists:append(B) =:= L andalso
                              lists:all(fun(X) -> X =/= [] andalso length(X) =< Size end, B)
                  end).

%% Any string: the same binary back, or a number.
prop_field_value_total() ->
    proper:forall({?T:elements([I || {I, _, _} <- ?P:fields()]),
                   ?T:oneof([?T:binary(), ?T:list(?T:elements("0123456789,.+-CH"))])},
                  fun({Id, V0}) ->
                          V = iolist_to_binary(V0),
                          case ?P:field_value(Id, V) of
                              V -> true;
                              N -> is_number(N)
                          end
                  end).

proper_test_() ->
    {timeout, 60,
     [?_assert(proper:quickcheck(P, [{numtests, 1000}, {to_file, user}]))
      || P <- [prop_never_confirms_unlisted(), prop_batches_keep_order(), prop_field_value_total()]]}.
