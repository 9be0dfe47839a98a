%% The fake IBKR server on its own, driven by a raw TLS client (and OTP's
%% httpc) that signs with ibkr_server_crypto's client-side helpers: so the
%% session suites can trust what the fake server says about the real client.
-module(ibkr_fake_server_tests).
-include_lib("eunit/include/eunit.hrl").

-define(C, ibkr_server_crypto).
-define(F, ibkr_fake_server).

fake_server_test_() ->
    Cases = [fun handshake_and_signed_requests/1, fun lst_request_checks/1,
             fun signed_request_checks/1, fun query_params_are_signed/1,
             fun content_length_required/1, fun brokerage_bridge/1, fun session_endpoints/1,
             fun status_and_rate_limit_faults/1, fun drop_and_slow_faults/1,
             fun lst_answer_faults/1, fun lst_expiry_and_invalidation/1, fun clock_skew/1,
             fun concurrent_keep_alive_connections/1, fun httpc_interoperates/1,
             fun json_encoding/1],
    {foreach, fun setup/0, fun cleanup/1, [instantiator(Case) || Case <- Cases]}.

instantiator(Case) ->
    {name, Name} = erlang:fun_info(Case, name),
    fun(Ctx) -> {atom_to_list(Name), {timeout, 60, fun() -> Case(Ctx) end}} end.

setup() ->
    {ok, _} = application:ensure_all_started(ssl),
    {ok, Info} = ?F:start_from_vectors(public, #{}),
    Info#{client => client_session(public)}.

cleanup(_Ctx) -> ?F:stop().

%%% ---------------------------------------------------------------- cases

handshake_and_signed_requests(Ctx) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    ?assertEqual({ok, Lst}, ?F:live_session_token()),
    {200, Headers, Body} = signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>),
    ?assertEqual(<<"application/json">>, proplists:get_value(<<"content-type">>, Headers)),
    ?assertMatch({match, _}, re:run(Body, <<"\"accountId\":\"U1234567\"">>)),
    {200, _, Positions} = signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/U1234567/positions/0">>),
    ?assertMatch({match, _}, re:run(Positions, <<"\"conid\":265598">>)),
    ?assertMatch({404, _, _}, signed(Conn, Ctx, Lst, <<"GET">>, <<"/no/such/endpoint">>)),
    #{handshakes := 1, requests := 4, by_path := ByPath} = ?F:stats(),
    ?assertEqual(1, maps:get(<<"/portfolio/accounts">>, ByPath)),
    close(Conn).

lst_request_checks(Ctx = #{client := Client}) ->
    Conn = connect(Ctx),
    Post = fun(Auth) -> request(Conn, <<"POST">>, lst_path(Ctx), [{<<"authorization">>, Auth}], <<>>) end,
    Url = lst_url(Ctx),
    {Good, _} = ?C:lst_authorization(Url, Client),
    ?assertMatch({200, _, _}, Post(Good)),
    ?assertMatch({401, _, _}, Post(Good)),                                  % nonce reused
    {OtherUrl, _} = ?C:lst_authorization(<<Url/binary, "x">>, Client),
    ?assertMatch({401, _, _}, Post(OtherUrl)),                              % signed another URL
    {BadPrepend, _} = ?C:lst_authorization(Url, Client#{prepend := <<"00">>}),
    ?assertMatch({401, _, _}, Post(BadPrepend)),
    {WrongRealm, _} = ?C:lst_authorization(Url, Client#{realm := <<"test_realm">>}),
    ?assertMatch({401, _, _}, Post(WrongRealm)),
    {Old, _} = ?C:lst_authorization(Url, Client#{timestamp => erlang:system_time(second) - 301}),
    ?assertMatch({401, _, _}, Post(Old)),
    {ShortNonce, _} = ?C:lst_authorization(Url, Client#{nonce => <<"abc">>}),
    ?assertMatch({401, _, _}, Post(ShortNonce)),
    {BadChallenge, _} = ?C:lst_authorization(Url, Client#{dh_random => 0}),     % A = 1
    ?assertMatch({401, _, _}, Post(BadChallenge)),
    ?assertMatch({401, _, _}, Post(<<"OAuth realm=\"limited_poa\"">>)),
    #{handshakes := 1, lst_requests := 9, nonce_reuse := 1, bad_signatures := 2,
      bad_timestamps := 1} = ?F:stats(),
    close(Conn).

signed_request_checks(Ctx = #{client := Client}) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    Path = <<"/portfolio/accounts">>,
    Get = fun(Auth) -> request(Conn, <<"GET">>, full_path(Ctx, Path), [{<<"authorization">>, Auth}], <<>>) end,
    Url = url(Ctx, Path),
    Auth = ?C:hmac_authorization(get, Url, Lst, Client),
    ?assertMatch({200, _, _}, Get(Auth)),
    ?assertMatch({401, _, _}, Get(Auth)),                                           % nonce reused
    ?assertMatch({401, _, _}, Get(?C:hmac_authorization(get, Url, base64:encode(<<"x">>), Client))),
    ?assertMatch({401, _, _}, Get(?C:hmac_authorization(post, Url, Lst, Client))),  % other method
    Late = Client#{timestamp => erlang:system_time(second) + 301},
    ?assertMatch({401, _, _}, Get(?C:hmac_authorization(get, Url, Lst, Late))),
    ?assertMatch({401, _, _}, Get(<<>>)),
    ?assertMatch({200, _, _}, Get(?C:hmac_authorization(get, Url, Lst, Client))),
    #{nonce_reuse := 1, bad_signatures := 2, bad_timestamps := 1} = ?F:stats(),
    close(Conn).

query_params_are_signed(Ctx = #{client := Client}) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    Query = <<"symbol=BRK%20B&name=a%2Bb%2Fc~d%3De%26f&u=%C3%A9">>,
    Path = <<"/echo?", Query/binary>>,
    WithQuery = ?C:hmac_authorization(get, url(Ctx, Path), Lst, Client),
    {200, _, Echo} = request(Conn, <<"GET">>, full_path(Ctx, Path), [{<<"authorization">>, WithQuery}], <<>>),
    ?assertMatch({match, _}, re:run(Echo, <<"\\[\"name\",\"a\\+b/c~d=e&f\"\\]">>)),
    ?assertMatch({match, _}, re:run(Echo, <<"\\[\"symbol\",\"BRK B\"\\]">>)),
    WithoutQuery = ?C:hmac_authorization(get, url(Ctx, <<"/echo">>), Lst, Client),
    ?assertMatch({401, _, _},
                 request(Conn, <<"GET">>, full_path(Ctx, Path), [{<<"authorization">>, WithoutQuery}], <<>>)),
    close(Conn).

content_length_required(Ctx = #{client := Client}) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    Path = <<"/iserver/auth/ssodh/init">>,
    Auth = fun() -> [{<<"authorization">>, ?C:hmac_authorization(post, url(Ctx, Path), Lst, Client)}] end,
    ?assertMatch({411, _, _}, request(Conn, <<"POST">>, full_path(Ctx, Path), Auth(), no_length)),
    ?assertMatch({200, _, _}, request(Conn, <<"POST">>, full_path(Ctx, Path), Auth(), <<>>)),
    {LstAuth, _} = ?C:lst_authorization(lst_url(Ctx), Client),
    ?assertMatch({411, _, _}, request(Conn, <<"POST">>, lst_path(Ctx),
                                      [{<<"authorization">>, LstAuth}], no_length)),
    close(Conn).

brokerage_bridge(Ctx) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    Order = <<"{\"orders\":[{\"conid\":265598,\"side\":\"BUY\",\"quantity\":1}]}">>,
    OrderPath = <<"/iserver/account/U1234567/orders">>,
    {400, _, NoBridge} = signed(Conn, Ctx, Lst, <<"POST">>, OrderPath, Order),
    ?assertMatch({match, _}, re:run(NoBridge, <<"no bridge">>)),
    {200, _, Status0} = signed(Conn, Ctx, Lst, <<"GET">>, <<"/iserver/auth/status">>),
    ?assertMatch({match, _}, re:run(Status0, <<"\"authenticated\":false">>)),
    ?assertMatch({200, _, _}, signed(Conn, Ctx, Lst, <<"POST">>, <<"/iserver/auth/ssodh/init">>, <<"{}">>)),
    {200, _, Status1} = signed(Conn, Ctx, Lst, <<"GET">>, <<"/iserver/auth/status">>),
    ?assertMatch({match, _}, re:run(Status1, <<"\"authenticated\":true">>)),
    {200, _, Placed} = signed(Conn, Ctx, Lst, <<"POST">>, OrderPath, Order),
    ?assertMatch({match, _}, re:run(Placed, <<"\"order_status\":\"Submitted\"">>)),
    ?assertMatch({400, _, _}, signed(Conn, Ctx, Lst, <<"POST">>, OrderPath, <<"not json">>)),
    {200, _, Orders} = signed(Conn, Ctx, Lst, <<"GET">>, <<"/iserver/account/orders">>),
    ?assertMatch({match, _}, re:run(Orders, <<"\"order_id\":\"1000\"">>)),
    #{ssodh_inits := 1} = ?F:stats(),
    close(Conn).

session_endpoints(Ctx) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    {200, Headers, Tickle} = signed(Conn, Ctx, Lst, <<"POST">>, <<"/tickle">>),
    ?assertMatch(<<"api=", _/binary>>, proplists:get_value(<<"set-cookie">>, Headers)),
    ?assertMatch({match, _}, re:run(Tickle, <<"\"session\":\"[0-9a-f]{32}\"">>)),
    ?assertMatch({200, _, <<"{\"status\":true}">>}, signed(Conn, Ctx, Lst, <<"POST">>, <<"/logout">>)),
    #{tickles := 1, logouts := 1, last_headers := Last} = ?F:stats(),
    ?assertMatch(<<"OAuth ", _/binary>>, proplists:get_value(<<"authorization">>, Last)),
    ok = ?F:reset_stats(),
    #{requests := 0, handshakes := 0, by_path := ByPath} = ?F:stats(),
    ?assertEqual(#{}, ByPath),
    close(Conn).

status_and_rate_limit_faults(Ctx) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    Get = fun() -> signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>) end,
    ok = ?F:set_fault({status, 503, 2}),
    ?assertMatch({503, _, _}, Get()),
    ?assertMatch({503, _, _}, Get()),
    ?assertMatch({200, _, _}, Get()),
    ok = ?F:set_fault({rate_limit, 7, 1}),
    {429, Headers, _} = Get(),
    ?assertEqual(<<"7">>, proplists:get_value(<<"retry-after">>, Headers)),
    ?assertMatch({200, _, _}, Get()),
    ok = ?F:set_fault({status, 500, infinity}),
    ?assertMatch({500, _, _}, Get()),
    ?assertMatch({500, _, _}, Get()),
    ok = ?F:clear_faults(),
    ?assertMatch({200, _, _}, Get()),
    ?assertEqual({error, {bad_fault, nonsense}}, ?F:set_fault(nonsense)),
    #{statuses := #{503 := 2, 429 := 1, 500 := 2}} = ?F:stats(),
    close(Conn).

drop_and_slow_faults(Ctx = #{client := Client}) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    ok = ?F:set_fault({drop, 1}),
    Path = <<"/portfolio/accounts">>,
    Auth = [{<<"authorization">>, ?C:hmac_authorization(get, url(Ctx, Path), Lst, Client)}],
    ?assertEqual({error, closed}, request(Conn, <<"GET">>, full_path(Ctx, Path), Auth, <<>>)),
    Conn2 = connect(Ctx),
    %% the dropped request counts as received: the same bytes again are a replay
    ?assertMatch({401, _, _}, request(Conn2, <<"GET">>, full_path(Ctx, Path), Auth, <<>>)),
    #{nonce_reuse := 1} = ?F:stats(),
    %% a one-shot slow fault: the first answer waits, the next does not (the
    %% delay is long so that "did not wait" holds on a loaded machine too)
    ok = ?F:set_fault({slow, 1500, 1}),
    T0 = erlang:monotonic_time(millisecond),
    ?assertMatch({200, _, _}, signed(Conn2, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>)),
    ?assert(erlang:monotonic_time(millisecond) - T0 >= 1500),
    T1 = erlang:monotonic_time(millisecond),
    ?assertMatch({200, _, _}, signed(Conn2, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>)),
    ?assert(erlang:monotonic_time(millisecond) - T1 < 1500),
    close(Conn2).

lst_answer_faults(Ctx = #{client := Client}) ->
    Conn = connect(Ctx),
    Post = fun() ->
                   {Auth, _} = ?C:lst_authorization(lst_url(Ctx), Client),
                   request(Conn, <<"POST">>, lst_path(Ctx), [{<<"authorization">>, Auth}], <<>>)
           end,
    ok = ?F:set_fault({reject_lst, 1}),
    ?assertMatch({401, _, _}, Post()),
    ok = ?F:set_fault(bad_dh_response),
    {200, _, BadB} = Post(),
    ?assertEqual(<<"1">>, json_string(<<"diffie_hellman_response">>, BadB)),
    ok = ?F:set_fault({bad_dh_response, p_minus_1}),
    {200, _, PMinus1} = Post(),
    ?assertEqual(?C:dh_prime(maps:get(dh_prime, Client)) - 1,
                 binary_to_integer(json_string(<<"diffie_hellman_response">>, PMinus1), 16)),
    ok = ?F:set_fault(malformed_json),
    {200, _, NotJson} = Post(),
    ?assertNotMatch(<<"{", _/binary>>, NotJson),
    ok = ?F:set_fault(wrong_lst_signature),
    ?assertError({lst_signature_mismatch, _, _}, handshake(Conn, Ctx)),
    ?assert(is_binary(handshake(Conn, Ctx))),
    close(Conn).

lst_expiry_and_invalidation(Ctx) ->
    Conn = connect(Ctx),
    ok = ?F:set_fault({expire_lst_in_ms, 300}),
    {Lst, ExpiresAt} = handshake_with_expiry(Conn, Ctx),
    ?assert(ExpiresAt =< erlang:system_time(millisecond) + 300),
    ?assertMatch({200, _, _}, signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>)),
    ok = wait_until(fun() -> erlang:system_time(millisecond) > ExpiresAt end),
    {401, _, Expired} = signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>),
    ?assertMatch({match, _}, re:run(Expired, <<"expired">>)),
    Lst2 = handshake(Conn, Ctx),
    {Lst3, _} = handshake_with_expiry(Conn, Ctx),
    %% the previous LST stays valid for a grace time after a new handshake
    ?assertMatch({200, _, _}, signed(Conn, Ctx, Lst2, <<"GET">>, <<"/portfolio/accounts">>)),
    ?assertMatch({200, _, _}, signed(Conn, Ctx, Lst3, <<"GET">>, <<"/portfolio/accounts">>)),
    ok = ?F:set_fault(invalidate_lst),
    ?assertMatch({401, _, _}, signed(Conn, Ctx, Lst3, <<"GET">>, <<"/portfolio/accounts">>)),
    ?assertMatch({401, _, _}, signed(Conn, Ctx, Lst2, <<"GET">>, <<"/portfolio/accounts">>)),
    Lst4 = handshake(Conn, Ctx),
    ?assertMatch({200, _, _}, signed(Conn, Ctx, Lst4, <<"GET">>, <<"/portfolio/accounts">>)),
    close(Conn).

clock_skew(Ctx) ->
    Conn = connect(Ctx),
    Lst = handshake(Conn, Ctx),
    ok = ?F:set_fault({skew_s, 3600}),
    ?assertMatch({401, _, _}, signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>)),
    ok = ?F:set_fault({skew_s, 100}),
    ?assertMatch({200, _, _}, signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>)),
    ok = ?F:set_fault({skew_s, -3600}),
    ?assertMatch({401, _, _}, signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>)),
    ok = ?F:clear_faults(),
    ?assertMatch({200, _, _}, signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>)),
    close(Conn).

concurrent_keep_alive_connections(Ctx) ->
    Lst = handshake(connect(Ctx), Ctx),
    Self = self(),
    Workers = 60,
    PerWorker = 10,
    Pids = [spawn_link(fun() -> Self ! {done, self(), keep_alive_worker(Ctx, Lst, PerWorker)} end)
            || _ <- lists:seq(1, Workers)],
    Results = [receive {done, P, R} -> R after 30000 -> timeout end || P <- Pids],
    ?assertEqual(lists:duplicate(Workers, lists:duplicate(PerWorker, 200)), Results),
    #{by_path := #{<<"/portfolio/accounts">> := N}} = ?F:stats(),
    ?assertEqual(Workers * PerWorker, N).

keep_alive_worker(Ctx, Lst, N) ->
    Conn = connect(Ctx),
    Statuses = [element(1, signed(Conn, Ctx, Lst, <<"GET">>, <<"/portfolio/accounts">>))
                || _ <- lists:seq(1, N)],
    close(Conn),
    Statuses.

%% A standard client (httpc, peer verified against the fake CA) gets in.
httpc_interoperates(Ctx = #{ca_file := CaFile, client := Client}) ->
    Lst = handshake(connect(Ctx), Ctx),
    {ok, _} = application:ensure_all_started(inets),
    Url = url(Ctx, <<"/portfolio/accounts?x=1">>),
    Auth = ?C:hmac_authorization(get, Url, Lst, Client),
    Ssl = [{verify, verify_peer}, {cacertfile, binary_to_list(CaFile)},
           {customize_hostname_check, [{match_fun, public_key:pkix_verify_hostname_match_fun(https)}]}],
    {ok, {{_, Status, _}, _, Body}} =
        httpc:request(get, {binary_to_list(Url), [{"authorization", binary_to_list(Auth)}]},
                      [{ssl, Ssl}], [{body_format, binary}]),
    ?assertEqual(200, Status),
    ?assertMatch({match, _}, re:run(Body, <<"U7654321">>)).

json_encoding(_Ctx) ->
    ?assertEqual(<<"{\"a\":[1,2.5,true,null,\"x\\\"y\\\\z\\n\\u0001\"],\"b\":{}}">>,
                 ?F:json(#{b => #{}, a => [1, 2.5, true, null, <<"x\"y\\z\n", 1>>]})).

%%% ---------------------------------------------------- a tiny TLS client

connect(#{port := Port, ca_file := CaFile}) ->
    {ok, Socket} = ssl:connect("localhost", Port,
                               [binary, {active, false}, {verify, verify_peer},
                                {cacertfile, binary_to_list(CaFile)},
                                {server_name_indication, "localhost"}], 5000),
    #{socket => Socket, host => <<"localhost:", (integer_to_binary(Port))/binary>>}.

close(#{socket := Socket}) -> ssl:close(Socket).

%% Body = binary (sent with Content-Length) | no_length (sent without).
%% -> {Status, Headers, Body} | {error, closed}
request(#{socket := Socket, host := Host}, Method, Target, Headers, Body) ->
    Length = case Body of
                 no_length -> [];
                 _ -> [{<<"content-length">>, integer_to_binary(byte_size(Body))}]
             end,
    Lines = [[Name, <<": ">>, Value, <<"\r\n">>]
             || {Name, Value} <- [{<<"host">>, Host} | Length ++ Headers]],
    ok = ssl:send(Socket, [Method, $\s, Target, <<" HTTP/1.1\r\n">>, Lines, <<"\r\n">>,
                           case Body of no_length -> <<>>; _ -> Body end]),
    read_response(Socket, <<>>).

read_response(Socket, Buf) ->
    case parse_response(Buf) of
        {ok, Response} -> Response;
        more ->
            case ssl:recv(Socket, 0, 10000) of
                {ok, Data} -> read_response(Socket, <<Buf/binary, Data/binary>>);
                {error, closed} -> {error, closed}
            end
    end.

parse_response(Buf) ->
    case erlang:decode_packet(http_bin, Buf, []) of
        {ok, {http_response, _, Status, _}, Rest} -> parse_response_headers(Rest, Status, []);
        {more, _} -> more
    end.

parse_response_headers(Buf, Status, Acc) ->
    case erlang:decode_packet(httph_bin, Buf, []) of
        {ok, {http_header, _, Name, _, Value}, Rest} ->
            parse_response_headers(Rest, Status, [{lower(Name), Value} | Acc]);
        {ok, http_eoh, Rest} ->
            Length = binary_to_integer(proplists:get_value(<<"content-length">>, Acc)),
            case Rest of
                <<Body:Length/binary>> -> {ok, {Status, lists:reverse(Acc), Body}};
                _ -> more
            end;
        {more, _} -> more
    end.

lower(Name) when is_atom(Name) -> string:lowercase(atom_to_binary(Name));
lower(Name) -> string:lowercase(Name).

%%% ----------------------------------------------------- OAuth, client side

%% The handshake over Conn, done like a client; returns the LST after checking
%% its signature.
handshake(Conn, Ctx) -> element(1, handshake_with_expiry(Conn, Ctx)).

handshake_with_expiry(Conn, Ctx = #{client := Client}) ->
    {Auth, A} = ?C:lst_authorization(lst_url(Ctx), Client),
    {200, _, Body} = request(Conn, <<"POST">>, lst_path(Ctx), [{<<"authorization">>, Auth}], <<>>),
    B = binary_to_integer(json_string(<<"diffie_hellman_response">>, Body), 16),
    P = ?C:dh_prime(maps:get(dh_prime, Client)),
    Lst = ?C:live_session_token(?C:dh_shared(B, A, P), maps:get(prepend, Client)),
    Sig = json_string(<<"live_session_token_signature">>, Body),
    case ?C:lst_signature(Lst, maps:get(consumer_key, Client)) of
        Sig -> {Lst, json_integer(<<"live_session_token_expiration">>, Body)};
        Other -> error({lst_signature_mismatch, Sig, Other})
    end.

signed(Conn, Ctx, Lst, Method, Path) -> signed(Conn, Ctx, Lst, Method, Path, <<>>).

signed(Conn, Ctx = #{client := Client}, Lst, Method, Path, Body) ->
    Auth = ?C:hmac_authorization(Method, url(Ctx, Path), Lst, Client),
    request(Conn, Method, full_path(Ctx, Path), [{<<"authorization">>, Auth}], Body).

client_session(Set) ->
    V = ibkr_test_lib:vectors(Set),
    Dir = ibkr_test_lib:vector_dir(Set),
    EncKey = ?C:private_key(filename:join(Dir, "private_encryption.pem")),
    #{consumer_key => maps:get(consumer_key, V), access_token => maps:get(access_token, V),
      realm => maps:get(realm, V), dh_prime => maps:get(dh_prime, V),
      dh_generator => maps:get(dh_generator, V),
      prepend => ?C:prepend(?C:decrypt_secret(maps:get(access_token_secret, V), EncKey)),
      signature_key => ?C:private_key(filename:join(Dir, "private_signature.pem"))}.

url(#{base_url := Base}, Path) -> <<Base/binary, Path/binary>>.
full_path(_Ctx, Path) -> <<"/v1/api", Path/binary>>.
lst_url(Ctx) -> url(Ctx, <<"/oauth/live_session_token">>).
lst_path(Ctx) -> full_path(Ctx, <<"/oauth/live_session_token">>).

json_string(Key, Body) ->
    {match, [V]} = re:run(Body, <<"\"", Key/binary, "\":\"([^\"]*)\"">>, [{capture, all_but_first, binary}]),
    V.

json_integer(Key, Body) ->
    {match, [V]} = re:run(Body, <<"\"", Key/binary, "\":(-?[0-9]+)">>, [{capture, all_but_first, binary}]),
    binary_to_integer(V).

wait_until(Pred) -> wait_until(Pred, erlang:monotonic_time(millisecond) + 5000).

wait_until(Pred, Deadline) ->
    case Pred() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> timeout;
                false -> receive after 10 -> wait_until(Pred, Deadline) end
            end
    end.
