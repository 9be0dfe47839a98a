%% A minimal programmable HTTP/1.1 server for the session tests (plain
%% HTTP on 127.0.0.1, keep-alive). Every request is recorded; a handler fun
%% decides each answer:
%%   Handler(Req, N) -> {Status, Headers, Body}
%%                    | {delay, Ms, {Status, Headers, Body}}
%%                    | noreply        (never answer; the connection stays open)
%%                    | close          (close the connection without answering)
%%                    | partial        (half an answer, then close)
%% where Req = #{method, path, query, headers, body, at} (header names lower
%% case, `at' the monotonic ms of arrival) and N counts the requests to the same path (1 for the first).
%% lst_response/3 plays IBKR's side of the DH handshake for a vector set.
-module(ibkr_http_stub).
-export([start/1, stop/1, url/1, requests/1, requests/2, count/2, set_handler/2,
         lst_response/3, ibkr_handler/2]).

-spec start(fun()) -> {ok, pid()}.
start(Handler) ->
    Parent = self(),
    Pid = spawn(fun() -> init(Parent, Handler) end),
    receive
        {Pid, started} -> {ok, Pid}
    after 5000 -> error(stub_start_timeout)
    end.

-spec stop(pid()) -> ok.
stop(Pid) ->
    MRef = monitor(process, Pid),
    exit(Pid, kill),
    receive {'DOWN', MRef, _, _, _} -> ok end.

-spec url(pid()) -> binary().
url(Pid) -> call(Pid, url).

-spec requests(pid()) -> [map()].
requests(Pid) -> call(Pid, requests).

-spec requests(pid(), binary()) -> [map()].
requests(Pid, Path) -> [R || #{path := P} = R <- requests(Pid), P =:= Path].

-spec count(pid(), binary()) -> non_neg_integer().
count(Pid, Path) -> length(requests(Pid, Path)).

-spec set_handler(pid(), fun()) -> ok.
set_handler(Pid, Handler) -> call(Pid, {set_handler, Handler}).

call(Pid, Msg) ->
    Ref = make_ref(),
    Pid ! {call, self(), Ref, Msg},
    receive
        {Ref, Reply} -> Reply
    after 5000 -> error(stub_call_timeout)
    end.

init(Parent, Handler) ->
    {ok, L} = gen_tcp:listen(0, [binary, {ip, {127, 0, 0, 1}}, {active, false},
                                 {reuseaddr, true}, {backlog, 1024}]),
    {ok, Port} = inet:port(L),
    Self = self(),
    spawn_link(fun() -> accept(Self, L) end),
    Parent ! {self(), started},
    loop(#{port => Port, handler => Handler, reqs => [], counts => #{}}).

loop(#{reqs := Reqs, counts := Counts, handler := H} = S) ->
    receive
        {call, From, Ref, url} ->
            From ! {Ref, iolist_to_binary(["http://127.0.0.1:", integer_to_list(maps:get(port, S))])},
            loop(S);
        {call, From, Ref, requests} ->
            From ! {Ref, lists:reverse(Reqs)},
            loop(S);
        {call, From, Ref, {set_handler, H1}} ->
            From ! {Ref, ok},
            loop(S#{handler := H1});
        {request, From, #{path := Path} = Req} ->
            N = maps:get(Path, Counts, 0) + 1,
            From ! {handler, H, N},
            loop(S#{reqs := [Req | Reqs], counts := Counts#{Path => N}})
    end.

accept(Server, L) ->
    {ok, Sock} = gen_tcp:accept(L),
    Pid = spawn(fun() -> receive go -> conn(Server, Sock) end end),
    ok = gen_tcp:controlling_process(Sock, Pid),
    Pid ! go,
    accept(Server, L).

conn(Server, Sock) ->
    ok = inet:setopts(Sock, [{packet, http_bin}]),
    case gen_tcp:recv(Sock, 0) of
        {ok, {http_request, Method, {abs_path, Target}, _}} ->
            Headers = headers(Sock, []),
            ok = inet:setopts(Sock, [{packet, raw}]),
            Len = binary_to_integer(proplists:get_value(<<"content-length">>, Headers, <<"0">>)),
            Body = case Len of
                       0 -> <<>>;
                       _ -> {ok, B} = gen_tcp:recv(Sock, Len), B
                   end,
            {Path, Query} = case binary:split(Target, <<"?">>) of
                                [P] -> {P, <<>>};
                                [P, Q] -> {P, Q}
                            end,
            Req = #{method => method(Method), path => Path, query => Query,
                    headers => Headers, body => Body,
                    at => erlang:monotonic_time(millisecond)},
            Server ! {request, self(), Req},
            receive
                {handler, H, N} -> answer(Server, Sock, H(Req, N))
            end;
        _ ->
            gen_tcp:close(Sock)
    end.

answer(Server, Sock, {delay, Ms, Resp}) ->
    timer:sleep(Ms),
    answer(Server, Sock, Resp);
answer(_Server, Sock, noreply) ->
    receive after infinity -> gen_tcp:close(Sock) end;
answer(_Server, Sock, close) ->
    gen_tcp:close(Sock);
answer(_Server, Sock, partial) ->
    _ = gen_tcp:send(Sock, <<"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc">>),
    gen_tcp:close(Sock);
answer(Server, Sock, {Status, Headers, Body}) ->
    Resp = [<<"HTTP/1.1 ">>, integer_to_binary(Status), <<" X\r\n">>,
            [[N, <<": ">>, V, <<"\r\n">>] || {N, V} <- Headers],
            <<"content-length: ">>, integer_to_binary(iolist_size(Body)), <<"\r\n\r\n">>,
            Body],
    case gen_tcp:send(Sock, Resp) of
        ok -> conn(Server, Sock);
        {error, _} -> gen_tcp:close(Sock)
    end.

headers(Sock, Acc) ->
    case gen_tcp:recv(Sock, 0) of
        {ok, {http_header, _, Name, _, Value}} ->
            N = string:lowercase(if is_atom(Name) -> atom_to_binary(Name);
                                    true -> Name end),
            headers(Sock, [{N, Value} | Acc]);
        {ok, http_eoh} -> lists:reverse(Acc)
    end.

method(M) when is_atom(M) -> atom_to_binary(M);
method(M) -> M.

%% IBKR's answer to POST /oauth/live_session_token for vector set Set: a
%% fresh DH key pair, the LST derived like IBKR does, and its signature.
-spec lst_response(map(), public | testcons, integer()) -> {200, list(), binary()} | {400, list(), binary()}.
lst_response(#{headers := H}, Set, ExpiresAt) ->
    V = ibkr_test_lib:vectors(Set),
    [C | _] = maps:get(cases, V),
    Auth = proplists:get_value(<<"authorization">>, H, <<>>),
    case re:run(Auth, <<"diffie_hellman_challenge=\"([0-9a-f]+)\"">>,
                [{capture, all_but_first, binary}]) of
        {match, [AHex]} ->
            P = binary_to_integer(maps:get(dh_prime, V), 16),
            B = binary:decode_unsigned(crypto:strong_rand_bytes(32)),
            BPub = crypto:mod_pow(2, B, P),
            K0 = crypto:mod_pow(binary_to_integer(AHex, 16), B, P),
            K = case K0 of
                    <<1:1, _/bitstring>> -> <<0, K0/binary>>;
                    _ -> K0
                end,
            Prepend = binary:decode_hex(maps:get(prepend, C)),
            Lst = crypto:mac(hmac, sha, K, Prepend),
            Sig = string:lowercase(binary:encode_hex(crypto:mac(hmac, sha, Lst, maps:get(consumer_key, V)))),
            BHex = string:lowercase(integer_to_binary(binary:decode_unsigned(BPub), 16)),
            Body = iolist_to_binary(["{\"diffie_hellman_response\":\"", BHex,
                                     "\",\"live_session_token_signature\":\"", Sig,
                                     "\",\"live_session_token_expiration\":",
                                     integer_to_list(ExpiresAt), "}"]),
            {200, [{<<"content-type">>, <<"application/json">>}], Body};
        nomatch ->
            {400, [], <<"{\"error\":\"no challenge\"}">>}
    end.

%% A default handler: the LST endpoint (public vectors, 24 h), 200 with a
%% JSON echo of the path for everything else.
-spec ibkr_handler(map(), pos_integer()) -> tuple().
ibkr_handler(#{path := <<"/oauth/live_session_token">>} = Req, _N) ->
    lst_response(Req, public, erlang:system_time(millisecond) + 86400000);
ibkr_handler(#{path := Path}, _N) ->
    {200, [{<<"content-type">>, <<"application/json">>}],
     <<"{\"path\":\"", Path/binary, "\"}">>}.
