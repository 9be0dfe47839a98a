%% EUnit: the doctor's pure pieces (primality, line format, the tickle
%% answer, the websocket check's decisions in ibkr_oauth_doctor_ws);
%% the checks themselves run in onboarding_SUITE against the fake server.
-module(ibkr_oauth_doctor_tests).
-include_lib("eunit/include/eunit.hrl").

-define(D, ibkr_oauth_doctor).

primes_test_() ->
    Modp14 = binary_to_integer(<<"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF">>, 16),
    [?_assert(?D:probable_prime(P)) || P <- [2, 3, 5, 7, 101, 7919, (1 bsl 61) - 1, Modp14, (Modp14 - 1) div 2]]
    ++ [?_assertNot(?D:probable_prime(N))
        || N <- [0, 1, 4, 9, 561, 41041, 825265, 3215031751,   % Carmichael and strong pseudoprimes
                 ((1 bsl 61) - 1) * ((1 bsl 31) - 1), Modp14 + 2, Modp14 * 3]].

format_line_test_() ->
    [?_assertEqual(<<"ok   dh_prime: 2048 bits"/utf8>>, ?D:format_line({ok, dh_prime, <<"2048 bits">>, <<>>})),
     ?_assertEqual(<<"FAIL realm: test_realm — use limited_poa"/utf8>>,
                   ?D:format_line({fail, realm, <<"test_realm">>, <<"use limited_poa">>})),
     ?_assertEqual(<<"warn clock: 9 s — NTP"/utf8>>, ?D:format_line({warn, clock, <<"9 s">>, <<"NTP">>}))].

not_a_map_test() ->
    ?assertMatch([{config, {fail, _}}], ibkr_oauth_doctor:run(not_a_map)),
    ?assert(ibkr_oauth_doctor:failed(ibkr_oauth_doctor:run([]))).

%%% tickle answers (decoded by the port)

tickle_answer_test_() ->
    Auth = fun(A, C) -> #{<<"authenticated">> => A, <<"competing">> => C, <<"connected">> => true} end,
    Tickle = fun(A, C) -> #{<<"session">> => <<"abc123">>, <<"iserver">> => #{<<"authStatus">> => Auth(A, C)}} end,
    [?_assertMatch({ok, _, <<>>, {ok, <<"abc123">>}}, ?D:tickle_answer(Tickle(true, false))),
     ?_assertMatch({warn, <<"authenticated, competing">>, _, {ok, <<"abc123">>}}, ?D:tickle_answer(Tickle(true, true))),
     ?_assertMatch({fail, <<"authenticated:false">>, _, {ok, _}}, ?D:tickle_answer(Tickle(false, false))),
     %% authenticated only counts inside iserver.authStatus
     ?_assertMatch({fail, _, _, {ok, _}},
                   ?D:tickle_answer(#{<<"session">> => <<"s">>, <<"authenticated">> => true})),
     ?_assertMatch({ok, _, _, {none, <<"the tickle answer has no session">>}},
                   ?D:tickle_answer(#{<<"iserver">> => #{<<"authStatus">> => Auth(true, false)}})),
     ?_assertMatch({ok, _, _, {none, _}},
                   ?D:tickle_answer(#{<<"session">> => <<>>, <<"iserver">> => #{<<"authStatus">> => Auth(true, false)}})),
     ?_assertMatch({fail, _, _, {none, <<"the tickle answer is not a JSON object">>}}, ?D:tickle_answer([1, 2]))].

%%% the websocket check's decisions (ibkr_oauth_doctor_ws)

-define(W, ibkr_oauth_doctor_ws).

system() -> {message, #{<<"topic">> => <<"system">>, <<"success">> => <<"user1">>, <<"isFT">> => false,
                        <<"isPaper">> => false}}.
act(Paper) -> {message, #{<<"topic">> => <<"act">>,
                          <<"args">> => #{<<"accounts">> => [<<"U1">>, <<"U2">>], <<"selectedAccount">> => <<"U1">>,
                                          <<"isPaper">> => Paper}}}.
sts(A, C) -> {message, #{<<"topic">> => <<"sts">>,
                         <<"args">> => #{<<"authenticated">> => A, <<"competing">> => C, <<"connected">> => true,
                                         <<"message">> => <<>>, <<"fail">> => <<>>}}}.
tic() -> {message, #{<<"topic">> => <<"tic">>, <<"alive">> => true, <<"id">> => <<"s">>, <<"lastAccessed">> => 1}}.
hb() -> {message, #{<<"topic">> => <<"system">>, <<"hb">> => 1}}.

%% Feeds the inputs at time 0, 1, 2, ...: {done, Lines} or {continue, St}.
feed(Inputs) -> feed(Inputs, 0, ?W:new(0)).
feed([], _T, St) -> {continue, St};
feed([I | Rest], T, St) ->
    case ?W:event(I, T, St) of
        {continue, St1} -> feed(Rest, T + 1, St1);
        {done, Lines} when Rest =:= [] -> {done, Lines};
        {done, Lines} -> {done_early, Lines, Rest}
    end.

%% Feeds, then lets the deadline pass.
expire(Inputs) ->
    {continue, St} = feed(Inputs),
    D = ?W:deadline(St),
    case ?W:timeout(D, St) of
        {continue, St1} -> {continue, St1};
        {done, Lines} -> Lines
    end.

has(Word, Text) -> binary:match(Text, Word) =/= nomatch.

ws_all_ok_test() ->
    {done, [{ok, websocket, Found, <<>>}, {ok, websocket_tic, <<"tic answered">>, <<>>}]} =
        feed([{tic_sent, ok}, system(), act(true), hb(), sts(true, false), tic()]),
    ?assert(has(<<"system (user user1)">>, Found)),
    ?assert(has(<<"act (2 accounts)">>, Found)),
    ?assert(has(<<"sts authenticated:true">>, Found)),
    %% act's isPaper wins over system's
    ?assert(has(<<"paper account (isPaper:true)">>, Found)).

ws_order_does_not_matter_test() ->
    {done, [{ok, websocket, F, _}, {ok, websocket_tic, _, _}]} = feed([tic(), sts(true, false), act(false), system()]),
    ?assert(has(<<"live account (isPaper:false)">>, F)).

ws_paper_from_system_test() ->
    Act = {message, #{<<"topic">> => <<"act">>, <<"args">> => #{<<"accounts">> => [<<"U1">>]}}},
    {done, [{ok, websocket, F, _}, _]} = feed([system(), Act, sts(true, false), tic()]),
    ?assert(has(<<"act (1 account)">>, F)),
    ?assert(has(<<"live account (isPaper:false)">>, F)).

ws_waits_for_each_part_test_() ->
    [?_assertMatch({continue, _}, feed(Is))
     || Is <- [[system(), act(true), sts(true, false)],          % no tic answer yet
               [system(), act(true), tic()],                     % no sts
               [system(), sts(true, false), tic()],              % no act
               [act(true), sts(true, false), tic()],             % no system
               [system(), act(true), sts(false, false), tic()],  % not authenticated
               [system(), act(true), sts(true, true), tic()],    % competing
               [system(), act(true), tic(), hb(), {text, <<"x">>}]]].

ws_later_sts_corrects_test() ->
    ?assertMatch({done, [{ok, websocket, _, _}, {ok, websocket_tic, _, _}]},
                 feed([system(), act(true), sts(false, false), tic(),
                       {message, #{<<"topic">> => <<"sts">>, <<"args">> => #{<<"authenticated">> => true}}}])).

ws_deadlines_test() ->
    St0 = ?W:new(1000),
    ?assertEqual(6000, ?W:deadline(St0)),
    {continue, St1} = ?W:event(system(), 1100, St0),
    {continue, St2} = ?W:event(act(true), 1200, St1),
    ?assertEqual(6000, ?W:deadline(St2)),
    {continue, St3} = ?W:event(sts(true, false), 3000, St2),
    %% the tic answer gets 5 s from the moment the socket was ready
    ?assertEqual(8000, ?W:deadline(St3)).

ws_sts_not_authenticated_test() ->
    [{fail, websocket, Found, Advice}] = expire([system(), act(true), sts(false, false), tic()]),
    ?assert(has(<<"sts authenticated:false">>, Found)),
    ?assert(has(<<"ssodh/init">>, Advice)),
    ?assert(has(ibkr_oauth_ibkr_error:advice(no_bridge), Advice)).

ws_sts_competing_test() ->
    [{fail, websocket, Found, Advice}] = expire([system(), act(true), sts(true, true)]),
    ?assert(has(<<"competing:true">>, Found)),
    ?assert(has(<<"another session">>, Advice)),
    ?assert(has(<<"took the brokerage session over">>, Advice)).

ws_nothing_test() ->
    [{fail, websocket, Found, Advice}] = expire([]),
    ?assertEqual(<<"open, but within 5 s: no system success, no act, no sts">>, Found),
    ?assert(has(<<"cookie">>, Advice)).

ws_waiting_for_session_test() ->
    [{fail, websocket, Found, Advice}] = expire([{message, #{<<"message">> => <<"waiting for session">>}}]),
    ?assert(has(<<"server said \"waiting for session\"">>, Found)),
    ?assert(has(<<"IBKR waits for a session">>, Advice)),
    [{fail, websocket, _, Advice2}] = expire([{text, <<"waiting for session">>}]),
    ?assertEqual(Advice, Advice2).

ws_no_sts_test() ->
    [{fail, websocket, Found, Advice}] = expire([system(), act(true)]),
    ?assert(has(<<"no sts">>, Found)),
    ?assert(has(<<"no sts: ">>, Advice)).

ws_no_act_is_a_warning_test() ->
    {continue, St} = expire([system(), sts(true, false)]),
    %% the tic answer now gets its own 5 s
    {done, [{warn, websocket, Found, Advice}, {ok, websocket_tic, _, _}]} = ?W:event(tic(), 5001, St),
    ?assert(has(<<"no act">>, Found)),
    ?assert(has(<<"act">>, Advice)),
    %% and an answered tic before the deadline is kept
    {continue, St2} = feed([system(), sts(true, false), tic()]),
    ?assertMatch({done, [{warn, websocket, _, _}, {ok, websocket_tic, _, _}]}, ?W:timeout(5000, St2)).

ws_no_tic_answer_test() ->
    [{ok, websocket, _, _}, {fail, websocket_tic, Found, Advice}] =
        expire([{tic_sent, ok}, system(), act(true), sts(true, false)]),
    ?assertEqual(<<"no answer to tic within 5 s">>, Found),
    ?assert(has(<<"tic">>, Advice)).

ws_tic_not_alive_test() ->
    Dead = {message, #{<<"topic">> => <<"tic">>, <<"alive">> => false}},
    ?assertMatch({done, [{ok, websocket, _, _}, {fail, websocket_tic, <<"tic answered alive:false">>, _}]},
                 feed([system(), act(true), sts(true, false), Dead])).

ws_closed_test_() ->
    Close = {closed, {close, 1000, <<"idle">>}},
    [fun() ->
             {done, [{fail, websocket, F, A}]} = feed([Close]),
             ?assertEqual(<<"the server closed the socket (close 1000 \"idle\") after: no system success, "
                            "no act, no sts">>, F),
             ?assert(has(<<"cookie">>, A))
     end,
     fun() ->
             {done, [{fail, websocket, F, A}]} = feed([system(), act(true), sts(true, true), {closed, {transport, closed}}]),
             ?assert(has(<<"ended without a close frame">>, F)),
             ?assert(has(<<"competing:true">>, A))
     end,
     fun() ->
             %% ready, then closed before the tic answer
             {done, [{ok, websocket, _, _}, {fail, websocket_tic, F, _}]} =
                 feed([system(), act(true), sts(true, false), {closed, {protocol, bad_frame}}]),
             ?assert(has(<<"protocol bad_frame">>, F))
     end].

ws_tic_send_failed_test() ->
    ?assertMatch({done, [{fail, websocket, <<"open, but tic could not be sent: ", _/binary>>, _}]},
                 feed([{tic_sent, {error, closed}}])).

ws_port_down_test() ->
    ?assertMatch({done, [{fail, websocket, _, _}]}, feed([system(), port_down])).

ws_server_text_is_clipped_test() ->
    Long = binary:copy(<<"é"/utf8>>, 500),
    [{fail, websocket, F, _}] = expire([{text, <<Long/binary, 1, 2>>}, {text, <<255, 0>>}]),
    ?assert(has(<<"...">>, F)),
    ?assert(byte_size(F) < 500),
    ?assert(has(<<"(2 bytes, not UTF-8)">>, F)),
    ?assertEqual(F, unicode:characters_to_binary(F)).

ws_open_failed_test_() ->
    Env = fun(T, S) -> iolist_to_binary(["{\"error\":\"", T, "\",\"statusCode\":", integer_to_binary(S), "}"]) end,
    [fun() ->
             {fail, websocket, F, A} = ?W:open_failed({http, 401, Env("bad session cookie", 401)}),
             ?assertEqual(<<"upgrade refused: HTTP 401 \"bad session cookie\"">>, F),
             ?assert(has(<<"POST /tickle">>, A)),
             ?assert(has(<<"access token">>, A))
     end,
     fun() ->
             {fail, websocket, F, A} = ?W:open_failed({http, 429, Env("Too many requests", 429)}),
             ?assert(has(<<"HTTP 429 rate_limited">>, F)),
             ?assertEqual(ibkr_oauth_ibkr_error:advice(rate_limited), A)
     end,
     fun() ->
             {fail, websocket, F, A} = ?W:open_failed({http, 404, <<"not found">>}),
             ?assertEqual(<<"upgrade refused: HTTP 404">>, F),
             ?assert(has(<<"base_url/ws">>, A))
     end,
     ?_assertMatch({fail, websocket, <<"the answer to the upgrade is not a websocket (ws_accept)">>, _},
                   ?W:open_failed({bad_response, ws_accept})),
     ?_assertMatch({fail, websocket, <<"cannot connect (tls)">>, _}, ?W:open_failed({transport, tls})),
     ?_assertMatch({fail, websocket, _, _}, ?W:open_failed(timeout)),
     ?_assertMatch({fail, websocket, <<"cannot open: ", _/binary>>, _}, ?W:open_failed({badarg, cookie})),
     ?_assertMatch({fail, websocket, <<"cannot open: the tickle answer has no session">>, _},
                   ?W:no_session(<<"the tickle answer has no session">>))].
