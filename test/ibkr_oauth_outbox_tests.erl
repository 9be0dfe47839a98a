%% EUnit: the sign-frame outbox (when to write, what a batch frame is).
-module(ibkr_oauth_outbox_tests).
-include_lib("eunit/include/eunit.hrl").

-define(O, ibkr_oauth_outbox).

empty_test() ->
    ?assertEqual(empty, ?O:take(?O:new())),
    ?assertEqual([], ?O:ids(?O:new())).

idle_mailbox_flushes_at_once_test() ->
    {Next, Ob} = ?O:add(7, <<"abc">>, false, ?O:new()),
    ?assertEqual(flush, Next),
    {Data, Ids, Ob1} = ?O:take(Ob),
    ?assertEqual(<<"abc">>, iolist_to_binary(Data)),
    ?assertEqual([7], Ids),
    ?assertEqual(empty, ?O:take(Ob1)).

busy_mailbox_schedules_once_then_holds_test() ->
    {N1, Ob1} = ?O:add(1, <<"a">>, true, ?O:new()),
    {N2, Ob2} = ?O:add(2, <<"bc">>, true, Ob1),
    {N3, Ob3} = ?O:add(3, <<"def">>, true, Ob2),
    ?assertEqual([schedule, hold, hold], [N1, N2, N3]),
    ?assertEqual([1, 2, 3], ?O:ids(Ob3)),
    {Data, Ids, _} = ?O:take(Ob3),
    ?assertEqual([1, 2, 3], Ids),
    ?assertEqual(<<0, 1:32, "a", 2:32, "bc", 3:32, "def">>, iolist_to_binary(Data)).

busy_mailbox_writes_when_full_test() ->
    Big = binary:copy(<<"x">>, ?O:max_bytes() div 2),
    {schedule, Ob1} = ?O:add(1, Big, true, ?O:new()),
    {hold, Ob2} = ?O:add(2, <<"y">>, true, Ob1),
    %% 4 bytes of length prefix count per frame
    {flush, Ob3} = ?O:add(3, Big, true, Ob2),
    {Data, [1, 2, 3], _} = ?O:take(Ob3),
    ?assertEqual(1 + 3 * 4 + 2 * byte_size(Big) + 1, iolist_size(Data)).

an_idle_mailbox_writes_what_was_held_test() ->
    {schedule, Ob1} = ?O:add(1, <<"a">>, true, ?O:new()),
    {flush, Ob2} = ?O:add(2, <<"b">>, false, Ob1),
    {Data, [1, 2], _} = ?O:take(Ob2),
    ?assertEqual(<<0, 1:32, "a", 1:32, "b">>, iolist_to_binary(Data)).
