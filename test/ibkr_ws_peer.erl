%% A minimal TLS websocket server side for tests of the port's websocket
%% client: a listener on 127.0.0.1 with a throw-away CA, and the pieces of
%% RFC 6455 a test needs to play the server by hand (read the upgrade,
%% answer it, send any frame, read the client's frames and check they are
%% masked). No policy and no IBKR behaviour: that is ibkr_fake_server's job.
%% The certificate is ibkr_fake_server's, the framing ibkr_fake_ws's.
%% listen_plain/0 is the same without TLS (for ws:// from an http:// base
%% URL); every other function takes either kind of socket.
-module(ibkr_ws_peer).

-export([listen/0, listen_plain/0, close/1, accept/1, read_upgrade/1, accept_key/1, answer_101/2,
         answer_101/3, answer_raw/2, send_frame/4, send_frame/5, send_raw/2, recv_frame/1,
         recv_frame/2, header/2]).

-type socket() :: ssl:sslsocket() | gen_tcp:socket().
-type peer() :: #{listen := socket(), port := inet:port_number(),
                  base_url := binary(), ca_file => binary()}.
-type frame() :: #{fin := boolean(), opcode := 0..15, masked := boolean(), payload := binary()}.
-export_type([peer/0, frame/0, socket/0]).

-define(TIMEOUT, 10000).

%% Listens with a fresh certificate for localhost/127.0.0.1 whose CA is
%% written to a temporary file (give it to the port's init as ca_file).
-spec listen() -> peer().
listen() ->
    #{cert := Cert, key := Key, ca_pem := CaPem} = ibkr_fake_server:make_certs(),
    Dir = ibkr_fake_server:fresh_dir("ibkr_ws_peer"),
    CaFile = filename:join(Dir, "ca.pem"),
    ok = filelib:ensure_dir(CaFile),
    ok = file:write_file(CaFile, CaPem),
    {ok, L} = ssl:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true},
                             {cert, Cert}, {key, Key}, {versions, ['tlsv1.3', 'tlsv1.2']}]),
    {ok, {_, Port}} = ssl:sockname(L),
    #{listen => L, port => Port, ca_file => unicode:characters_to_binary(CaFile),
      base_url => iolist_to_binary(["https://localhost:", integer_to_list(Port), "/v1/api"])}.

%% Plain TCP on 127.0.0.1: base_url http://127.0.0.1:Port/v1/api.
-spec listen_plain() -> peer().
listen_plain() ->
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, {_, Port}} = inet:sockname(L),
    #{listen => L, port => Port,
      base_url => iolist_to_binary(["http://127.0.0.1:", integer_to_list(Port), "/v1/api"])}.

-spec close(peer()) -> ok.
close(#{listen := L, ca_file := CaFile}) ->
    _ = ssl:close(L),
    _ = file:delete(CaFile),
    _ = file:del_dir(filename:dirname(CaFile)),
    ok;
close(#{listen := L}) ->
    _ = gen_tcp:close(L),
    ok.

%% The next client connection, TLS done.
-spec accept(peer()) -> socket().
accept(#{listen := L, ca_file := _}) ->
    {ok, T} = ssl:transport_accept(L, ?TIMEOUT),
    {ok, S} = ssl:handshake(T, ?TIMEOUT),
    S;
accept(#{listen := L}) ->
    {ok, S} = gen_tcp:accept(L, ?TIMEOUT),
    S.

%% The request line and headers (names lower-cased) of the upgrade.
-spec read_upgrade(socket()) -> #{method := binary(), target := binary(),
                                         headers := [{binary(), binary()}]}.
read_upgrade(S) -> read_upgrade(S, <<>>).

read_upgrade(S, Acc) ->
    case binary:split(Acc, <<"\r\n\r\n">>) of
        [Head, <<>>] ->
            [Line | Hs] = binary:split(Head, <<"\r\n">>, [global]),
            [Method, Target, <<"HTTP/1.1">>] = binary:split(Line, <<" ">>, [global]),
            #{method => Method, target => Target,
              headers => [begin
                              [N, V] = binary:split(H, <<":">>),
                              {string:lowercase(N), string:trim(V)}
                          end || H <- Hs]};
        [_] ->
            {ok, More} = recv(S, 0, ?TIMEOUT),
            read_upgrade(S, <<Acc/binary, More/binary>>)
    end.

-spec header(binary(), #{headers := [{binary(), binary()}]}) -> binary() | undefined.
header(Name, #{headers := Hs}) ->
    case lists:keyfind(Name, 1, Hs) of
        {_, V} -> V;
        false -> undefined
    end.

-spec accept_key(binary()) -> binary().
accept_key(Key) -> ibkr_fake_ws:accept_key(Key).

%% 101 with the Accept for Key (or Accept given as is), then Extra bytes in
%% the same write (frames that ride with the answer).
-spec answer_101(socket(), binary()) -> ok.
answer_101(S, Key) -> answer_101(S, Key, <<>>).

-spec answer_101(socket(), binary() | {accept, binary()}, iodata()) -> ok.
answer_101(S, {accept, Accept}, Extra) ->
    send(S, [<<"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: ">>, Accept, <<"\r\n\r\n">>,
                 Extra]);
answer_101(S, Key, Extra) ->
    answer_101(S, {accept, accept_key(Key)}, Extra).

-spec answer_raw(socket(), iodata()) -> ok.
answer_raw(S, Bytes) -> send(S, Bytes).

-spec send_raw(socket(), iodata()) -> ok.
send_raw(S, Bytes) -> send(S, Bytes).

%% A server frame: unmasked unless Opts has mask => true.
-spec send_frame(socket(), boolean(), 0..15, iodata()) -> ok.
send_frame(S, Fin, Op, Payload) -> send_frame(S, Fin, Op, Payload, #{}).

-spec send_frame(socket(), boolean(), 0..15, iodata(), map()) -> ok.
send_frame(S, Fin, Op, Payload, Opts) ->
    Mask = case maps:get(mask, Opts, false) of
               true -> crypto:strong_rand_bytes(4);
               false -> none
           end,
    send(S, ibkr_fake_ws:encode_frame(#{fin => Fin, opcode => Op, payload => Payload, mask => Mask})).

-spec recv_frame(socket()) -> frame().
recv_frame(S) -> recv_frame(S, ?TIMEOUT).

-spec recv_frame(socket(), timeout()) -> frame().
recv_frame(S, Timeout) ->
    {ok, <<Fin:1, _:3, Op:4, M:1, L0:7>>} = recv(S, 2, Timeout),
    Len = case L0 of
              126 -> {ok, <<L:16>>} = recv(S, 2, Timeout), L;
              127 -> {ok, <<L:64>>} = recv(S, 8, Timeout), L;
              _ -> L0
          end,
    Key = case M of
              1 -> {ok, K} = recv(S, 4, Timeout), K;
              0 -> none
          end,
    Raw = case Len of
              0 -> <<>>;
              _ -> {ok, B} = recv(S, Len, Timeout), B
          end,
    Payload = case Key of
                  none -> Raw;
                  _ -> ibkr_fake_ws:mask(Key, Raw)
              end,
    #{fin => Fin =:= 1, opcode => Op, masked => M =:= 1, payload => Payload}.

send(S, Data) when is_port(S) -> gen_tcp:send(S, Data);
send(S, Data) -> ssl:send(S, Data).

recv(S, N, T) when is_port(S) -> gen_tcp:recv(S, N, T);
recv(S, N, T) -> ssl:recv(S, N, T).
