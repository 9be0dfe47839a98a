%% @doc `ibkr_oauth setup DIR': everything IBKR's self-service portal wants,
%% generated into a new directory by the port (OpenSSL): two RSA-2048 key
%% pairs (private keys PKCS#8), 2048-bit DH parameters (safe prime,
%% generator 2), the prime as hex, and a session config template.
%%
%% The directory is created with mode 0700 (an existing one is used only
%% if it holds none of the files), every file with mode 0600 before
%% anything is written into it, LF line endings, and no existing file is
%% ever replaced (files are created with `exclusive').
-module(ibkr_oauth_setup).

-include_lib("kernel/include/file.hrl").

-export([run/2, files/0, consumer_key/0, valid_consumer_key/1, portal_steps/2,
         config_text/3]).

-define(DH_BITS, 2048).
-define(RSA_BITS, 2048).
%% The search for a 2048-bit safe prime takes seconds to minutes.
-define(DH_TIMEOUT, 3600000).
-define(PLACEHOLDER_TOKEN, <<"PASTE_ACCESS_TOKEN_HERE">>).
-define(PLACEHOLDER_SECRET, <<"PASTE_ACCESS_TOKEN_SECRET_HERE">>).

-type opts() :: #{consumer_key => binary(),
                  dh_bits => pos_integer(),          % tests only (default 2048)
                  progress => fun((term()) -> term())}.

%% @doc The files setup writes, in order.
-spec files() -> [string(), ...].
files() ->
    ["private_signature.pem", "public_signature.pem", "private_encryption.pem",
     "public_encryption.pem", "dhparam.pem", "dh_prime.hex", "ibkr.config"].

%% @doc Generates everything into `Dir'. `progress' gets `{stage, rsa |
%% dh}' when a step starts and the port's `{progress, Id, Stage}' events
%% during the prime search.
-spec run(file:filename(), opts()) ->
    {ok, #{dir := file:filename(), consumer_key := binary(), files := [file:filename()]}}
    | {error, term()}.
run(Dir0, Opts) ->
    Dir = filename:absname(Dir0),
    Progress = maps:get(progress, Opts, fun(_) -> ok end),
    Key = case Opts of
              #{consumer_key := K} -> K;
              _ -> consumer_key()
          end,
    case valid_consumer_key(Key) of
        false -> {error, {bad_consumer_key, Key}};
        true ->
            case prepare_dir(Dir) of
                ok -> generate(Dir, Key, maps:get(dh_bits, Opts, ?DH_BITS), Progress);
                {error, _} = E -> E
            end
    end.

%% @doc A fresh consumer key: 9 letters A-Z from `crypto:strong_rand_bytes'
%% (OpenSSL's RAND), uniform (bytes of 234 and above are drawn again).
-spec consumer_key() -> binary().
consumer_key() -> consumer_key(<<>>).

-spec consumer_key(binary()) -> binary().
consumer_key(Acc) when byte_size(Acc) =:= 9 -> Acc;
consumer_key(Acc) ->
    <<B>> = crypto:strong_rand_bytes(1),
    case B < 234 of
        true -> consumer_key(<<Acc/binary, ($A + B rem 26)>>);
        false -> consumer_key(Acc)
    end.

%% @doc IBKR's rule for a consumer key: exactly 9 letters A-Z.
-spec valid_consumer_key(term()) -> boolean().
valid_consumer_key(<<_:9/binary>> = K) -> lists:all(fun(C) -> C >= $A andalso C =< $Z end, binary_to_list(K));
valid_consumer_key(_) -> false.

-spec prepare_dir(file:filename()) -> ok | {error, term()}.
prepare_dir(Dir) ->
    case file:read_file_info(Dir) of
        {error, enoent} ->
            case filelib:ensure_dir(filename:join(Dir, "x")) of
                ok -> file:change_mode(Dir, 8#700);
                {error, Why} -> {error, {mkdir, Dir, Why}}
            end;
        {ok, #file_info{type = directory, mode = Mode}} ->
            case [F || F <- files(), filelib:is_file(filename:join(Dir, F))] of
                %% A file is created with the umask's mode and made 0600 just
                %% after: in a directory others may enter, they could open a
                %% key file in that gap and read the key written later.
                [] when Mode band 8#077 =/= 0 -> {error, {dir_open_to_others, Dir}};
                [] -> ok;
                [F | _] -> {error, {exists, filename:join(Dir, F)}}
            end;
        {ok, _} -> {error, {not_a_directory, Dir}};
        {error, Why} -> {error, {mkdir, Dir, Why}}
    end.

-spec generate(file:filename(), binary(), pos_integer(), fun((term()) -> term())) ->
    {ok, map()} | {error, term()}.
generate(Dir, Key, DhBits, Progress) ->
    case ibkr_oauth_port_call:open() of
        {ok, Port} ->
            try
                _ = Progress({stage, rsa}),
                {ok, #{private_pem := SigPriv, public_pem := SigPub}} = rsa(Port),
                {ok, #{private_pem := EncPriv, public_pem := EncPub}} = rsa(Port),
                _ = Progress({stage, dh}),
                {ok, #{pem := DhPem, prime_hex := Hex}} = dh(Port, DhBits, Progress),
                Contents = [{"private_signature.pem", SigPriv}, {"public_signature.pem", SigPub},
                            {"private_encryption.pem", EncPriv}, {"public_encryption.pem", EncPub},
                            {"dhparam.pem", DhPem}, {"dh_prime.hex", [Hex, $\n]},
                            {"ibkr.config", config_text(Dir, Key, calendar:universal_time())}],
                Written = write_all(Dir, Contents),
                {ok, #{dir => Dir, consumer_key => Key, files => Written}}
            catch
                throw:{setup_error, Why} -> {error, Why};
                error:{badmatch, {error, Why}} -> {error, Why}
            after
                ibkr_oauth_port_call:close(Port)
            end;
        {error, _} = E -> E
    end.

-spec rsa(port()) -> term().
rsa(Port) -> ibkr_oauth_port_call:call(Port, {generate_rsa, ?RSA_BITS}, 60000).

-spec dh(port(), pos_integer(), fun((term()) -> term())) -> term().
dh(Port, Bits, Progress) ->
    ibkr_oauth_port_call:call(Port, {generate_dh, Bits}, ?DH_TIMEOUT, Progress).

-spec write_all(file:filename(), [{string(), iodata()}]) -> [file:filename()].
write_all(Dir, Contents) ->
    [begin
         File = filename:join(Dir, Name),
         case write_new(File, Data) of
             ok -> File;
             {error, Why} -> throw({setup_error, {write, File, Why}})
         end
     end || {Name, Data} <- Contents].

%% Created exclusively (never replaces a file), 0600 before any byte.
-spec write_new(file:filename(), iodata()) -> ok | {error, term()}.
write_new(File, Data) ->
    case file:open(File, [write, exclusive, raw, binary]) of
        {ok, Fd} ->
            R = case file:change_mode(File, 8#600) of
                    ok -> file:write(Fd, Data);
                    E -> E
                end,
            ok = file:close(Fd),
            R;
        {error, eexist} -> {error, exists};
        {error, _} = E -> E
    end.

%% @doc The `ibkr.config' template: the start_link/1 map with `{file, _}'
%% keys (absolute paths) and placeholders for what the portal issues.
-spec config_text(file:filename(), binary(), calendar:datetime()) -> iodata().
config_text(Dir, Key, {{Y, Mo, D}, _}) ->
    F = fun(Name) -> io_lib:format("~p", [filename:join(Dir, Name)]) end,
    [io_lib:format("%% ibkr_oauth session config, written by `ibkr_oauth setup' on ~4..0b-~2..0b-~2..0b.~n",
                   [Y, Mo, D]),
     "%% Paste the access token and secret the portal shows after Generate Token,\n"
     "%% then check everything with: ibkr_oauth doctor --config THIS_FILE\n",
     "#{consumer_key => <<\"", Key, "\">>,\n",
     "  access_token => <<\"", ?PLACEHOLDER_TOKEN, "\">>,\n",
     "  access_token_secret => <<\"", ?PLACEHOLDER_SECRET, "\">>,\n",
     "  dh_prime => {file, ", F("dhparam.pem"), "},\n",
     "  encryption_key => {file, ", F("private_encryption.pem"), "},\n",
     "  signature_key => {file, ", F("private_signature.pem"), "},\n",
     "  brokerage_session => true}.\n"].

%% @doc The portal steps, in order, for the files in `Dir'.
-spec portal_steps(file:filename(), binary()) -> iodata().
portal_steps(Dir, Key) ->
    P = fun(Name) -> filename:join(Dir, Name) end,
    ["Next steps in IBKR's self-service OAuth portal:\n",
     "  1. Log in on the US host (other regional hosts have failed):\n",
     "       https://ndcdyn.interactivebrokers.com/sso/Login?action=OAUTH&RL=1&ip2loc=US\n",
     "  2. Enter the consumer key ", Key, " (9 letters A-Z).\n",
     "  3. Upload these three files (and nothing else; the private keys never leave this machine):\n",
     "       public signing key:    ", P("public_signature.pem"), "\n",
     "       public encryption key: ", P("public_encryption.pem"), "\n",
     "       DH parameters:         ", P("dhparam.pem"), "\n",
     "  4. Press Generate Token: the access token and its secret are shown ONCE.\n",
     "     Paste them into ", P("ibkr.config"), " (access_token, access_token_secret).\n",
     "  5. Enable OAuth access for the consumer key and save.\n",
     "  6. Wait: the key becomes valid after IBKR's next regional midnight (New York, Zug or\n",
     "     Hong Kong), sometimes only after the weekend restart; until then IBKR answers 401\n",
     "     \"invalid consumer\". Then run: ibkr_oauth doctor --config ", P("ibkr.config"), "\n"].
