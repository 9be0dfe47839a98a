%% @doc Low-level access to the `ibkr_oauth_port' C program (see
%% `c_src/PROTOCOL.md'): where the executable is, how the port is opened, how
%% frames are encoded (with the 16 MiB size check) and decoded (with
%% `binary_to_term(Bin, [safe])', so only atoms that already exist can come
%% back; {@link known_atoms/0} keeps every atom the C side may send alive as a
%% literal of this module).
%%
%% Frames are `{Id, Command}' from Erlang and `{Id, Reply}' or
%% `{0, Event}' from C. This module has no state; {@link ibkr_oauth_session}
%% owns the port and routes the replies.
-module(ibkr_oauth_port).

-export([path/0, open/0, open/1, close/1, os_pid/1,
         encode/2, send/3, cancel/2, decode/1,
         max_frame/0, known_atoms/0]).

-export_type([id/0, command/0]).

%% Request ids: 1 .. 2^64-1; 0 is reserved for unprompted events and
%% fire-and-forget commands.
-type id() :: non_neg_integer().
-type command() :: term().

%% IBKR_MAX_FRAME in c_src/erlcmd.h.
-define(MAX_FRAME, 16777216).

%% @doc The largest frame (the term bytes, without the 4-byte length) the C
%% side accepts: 16 MiB.
-spec max_frame() -> pos_integer().
max_frame() -> ?MAX_FRAME.

%% @doc The port executable: `$IBKR_OAUTH_PORT' when set (e.g. the ASan build
%% or the valgrind wrapper), else `priv/ibkr_oauth_port' of the application.
-spec path() -> file:filename().
path() ->
    case os:getenv("IBKR_OAUTH_PORT") of
        Env when is_list(Env), Env =/= "" -> Env;
        _ -> filename:join(priv_dir(), "ibkr_oauth_port")
    end.

-spec priv_dir() -> file:filename().
priv_dir() ->
    case code:priv_dir(ibkr_oauth) of
        Dir when is_list(Dir) -> Dir;
        {error, bad_name} ->
            %% Not loaded as an application (e.g. plain erlc in a test):
            %% the priv directory next to this module's ebin.
            case code:which(?MODULE) of
                Beam when is_list(Beam) ->
                    filename:join(filename:dirname(filename:dirname(Beam)), "priv");
                _ -> "priv"
            end
    end.

%% @doc Opens the port program at {@link path/0}.
%% @equiv open(path())
-spec open() -> {ok, port(), OsPid :: non_neg_integer() | undefined} | {error, term()}.
open() -> open(path()).

%% @doc Opens a port program with the protocol's options: `{packet, 4}',
%% binaries, fds 3/4 (`nouse_stdio'), `exit_status'. The caller becomes the
%% port's owner (and is linked to it). Never raises.
-spec open(file:filename_all()) ->
    {ok, port(), OsPid :: non_neg_integer() | undefined} | {error, term()}.
open(Path) ->
    try open_port({spawn_executable, Path},
                  [{packet, 4}, binary, nouse_stdio, exit_status]) of
        Port -> {ok, Port, os_pid(Port)}
    catch
        error:Reason -> {error, {port_open, Reason}}
    end.

%% @doc Closes a port (the C program sees EOF on fd 3 and exits). Never raises.
-spec close(port() | undefined) -> ok.
close(undefined) -> ok;
close(Port) ->
    try port_close(Port) of
        true -> ok
    catch
        error:badarg -> ok
    end.

%% @doc The OS pid of the port program, `undefined' when the port is closed.
-spec os_pid(port()) -> non_neg_integer() | undefined.
os_pid(Port) ->
    case erlang:port_info(Port, os_pid) of
        {os_pid, Pid} -> Pid;
        undefined -> undefined
    end.

%% @doc Encodes `{Id, Command}' as one frame body, refusing anything larger
%% than {@link max_frame/0}.
-spec encode(id(), command()) -> {ok, binary()} | {error, too_large}.
encode(Id, Command) ->
    Bin = term_to_binary({Id, Command}),
    case byte_size(Bin) =< ?MAX_FRAME of
        true -> {ok, Bin};
        false -> {error, too_large}
    end.

%% @doc Sends `{Id, Command}' to the port. `{error, too_large}' when the frame
%% exceeds {@link max_frame/0} (nothing is sent), `{error, port_down}' when
%% the port is closed. Never raises.
-spec send(port(), id(), command()) -> ok | {error, too_large | port_down}.
send(Port, Id, Command) ->
    case encode(Id, Command) of
        {ok, Bin} ->
            try erlang:port_command(Port, Bin) of
                true -> ok
            catch
                error:_ -> {error, port_down}
            end;
        {error, _} = E -> E
    end.

%% @doc Asks the port to abort the in-flight request `Id' (`{0, {cancel, Id}}',
%% no reply; the request itself then answers `{error, cancelled}').
-spec cancel(port(), id()) -> ok.
cancel(Port, Id) ->
    _ = send(Port, 0, {cancel, Id}),
    ok.

%% @doc Decodes one frame from the port. Only existing atoms are accepted
%% (`[safe]'); anything that is not `{Id, Term}' with an integer `Id' is
%% `{error, bad_frame}'.
-spec decode(binary()) -> {ok, id(), term()} | {error, bad_term | bad_frame}.
decode(Bin) when is_binary(Bin) ->
    try binary_to_term(Bin, [safe]) of
        {Id, Msg} when is_integer(Id), Id >= 0 -> {ok, Id, Msg};
        _ -> {error, bad_frame}
    catch
        error:badarg -> {error, bad_term}
    end.

%% @doc Every atom the C side can send, as literals: loading this module
%% creates them, so `binary_to_term(_, [safe])' accepts every legitimate
%% reply. Keep in sync with `c_src/PROTOCOL.md'.
-spec known_atoms() -> [atom(), ...].
known_atoms() ->
    [%% reply shapes
     ok, error, true, false, undefined,
     %% oauth status atoms
     nomem, missing, badarg, too_long, not_pem, not_rsa, not_base64,
     decrypt_failed, not_hex, not_prime, too_small, not_authenticated,
     no_pending_handshake, bad_dh_response, lst_signature_mismatch,
     crypto_error, bad_config, unknown_key,
     %% files
     eacces, enoent, eisdir, enotdir, eloop, enametoolong, file_error,
     %% urls
     bad_url, url, method, headers, header, body, sign, timeout_ms,
     %% protocol
     frame_too_large, bad_term, bad_frame, protocol_error, unknown_command,
     not_initialized,
     %% events
     log, debug, info, notice, warning, emergency, alert, critical,
     %% transport
     resolve, connect, tls, send, recv, too_large, other, cancelled, timeout,
     http, transport, bad_response, not_json, missing_field, sent, bad_status,
     lst_expiration,
     %% JSON (http with json/decode): literals, json_error reasons
     json, decode, json_error, null, empty, syntax, utf8, depth, number,
     %% commands
     init, echo, cancel, stats, lst_request, lst_complete,
     live_session_token, authenticate,
     %% key generation (setup)
     generate_rsa, generate_dh, private_pem, public_pem, prime_hex, bits,
     progress, candidate, testing, passed,
     %% map keys
     inflight, requests, handshakes, errors, expires_at, token,
     authorization, status, nonce, timestamp, dh_random, lst,
     diffie_hellman_response, live_session_token_signature,
     live_session_token_expiration, consumer_key, access_token,
     access_token_secret, dh_prime, dh_generator, realm, encryption_key,
     signature_key, base_url, ca_file, query_signing, params, none, file,
     pem, opts, field, id,
     %% websocket commands, events and reasons
     ws_open, ws_send, ws_close, ws, message, text, closed, replaced, close,
     protocol, ws_accept, ws_upgrade, busy, conn, cookie, user_agent,
     max_message].
