%% @doc IBKR's own error answers, recognised and explained (pure functions).
%%
%% IBKR wraps most errors in a small JSON envelope,
%% `{"error":"id: <N>, error: <text>","statusCode":<code>}' or
%% `{"error":"<text>","statusCode":<code>}', where `id: N' is an incident
%% counter that changes with every answer (kept for IBKR support). {@link
%% classify/3} turns an answer into
%% `{ibkr, Kind, #{status, message, incident}}' when it recognises it, and
%% answers `http' otherwise (the caller then keeps `{http, Status, Body}').
%%
%% Kinds (see `README.md', "IBKR's own errors"):
%% <ul>
%% <li>`invalid_consumer': 401 "invalid consumer" (key not active yet,
%%     mistyped, or made on another portal region);</li>
%% <li>`no_access_secret': 401 "No access secret key found" (IBKR lost the
%%     stored secret: generate a new token);</li>
%% <li>`no_bridge': 400 "no bridge" (no brokerage session);</li>
%% <li>`sso_dh_failed': 500 "failed to generate sso dh token";</li>
%% <li>`gone': 410 (paper account credentials over OAuth);</li>
%% <li>`misconfigured_session': "Session is misconfigured" (read-only
%%     username);</li>
%% <li>`rate_limited': 429;</li>
%% <li>`unauthorized': any other 401.</li>
%% </ul>
%% No atom is created from the input: kinds are literals of this module, the
%% body is matched as bytes.
-module(ibkr_oauth_ibkr_error).

-export([classify/3, from_reason/1, advice/1, kinds/0, describe/1,
         lst_signature_mismatch_text/0, first_401_after_lst_text/1,
         parse_envelope/1]).

-export_type([kind/0, info/0, error/0]).

-type kind() :: invalid_consumer | no_access_secret | no_bridge | sso_dh_failed | gone
              | misconfigured_session | rate_limited | unauthorized.
-type info() :: #{status := integer(), message := binary(), incident => non_neg_integer(),
                  retry_after => non_neg_integer()}.
-type error() :: {ibkr, kind(), info()}.

%% Bodies longer than this are not IBKR's envelope (it is a few dozen bytes).
-define(BODY_MAX, 4096).

%% @doc The kinds {@link classify/3} can return.
-spec kinds() -> [kind(), ...].
kinds() ->
    [invalid_consumer, no_access_secret, no_bridge, sso_dh_failed, gone,
     misconfigured_session, rate_limited, unauthorized].

%% @doc Recognises one of IBKR's error answers. `Headers' are the answer's
%% headers: a 429's `Retry-After' (seconds) is kept as `retry_after'.
%% `http' when the answer is not a recognised IBKR error.
-spec classify(integer(), [{binary(), binary()}], binary()) -> error() | http.
classify(Status, Headers, Body) when is_integer(Status), is_binary(Body) ->
    {Message, Incident} = case parse_envelope(Body) of
                              {ok, Text, Id} -> {Text, Id};
                              error -> {<<>>, none}
                          end,
    case kind(Status, string:lowercase(Message)) of
        http -> http;
        Kind ->
            Info0 = #{status => Status, message => Message},
            Info = case Incident of
                       none -> Info0;
                       N -> Info0#{incident => N}
                   end,
            {ibkr, Kind, retry_after(Kind, Headers, Info)}
    end;
classify(_, _, _) -> http.

%% A 429 keeps its `Retry-After' (whole seconds, 0..3600) as `retry_after'.
-spec retry_after(kind(), term(), info()) -> info().
retry_after(rate_limited, Headers, Info) when is_list(Headers) ->
    case ibkr_oauth_retry:retry_after(Headers) of
        {ok, Ms} -> Info#{retry_after => Ms div 1000};
        error -> Info
    end;
retry_after(_, _, Info) -> Info.

-spec kind(integer(), binary()) -> kind() | http.
kind(Status, Lower) ->
    Has = fun(Pattern) -> binary:match(Lower, Pattern) =/= nomatch end,
    if
        Status =:= 429 -> rate_limited;
        Status =:= 410 -> gone;
        Status >= 400 ->
            case {Has(<<"invalid consumer">>), Has(<<"no access secret key found">>),
                  Has(<<"no bridge">>), Has(<<"failed to generate sso dh token">>),
                  Has(<<"session is misconfigured">>)} of
                {true, _, _, _, _} -> invalid_consumer;
                {_, true, _, _, _} -> no_access_secret;
                {_, _, true, _, _} -> no_bridge;
                {_, _, _, true, _} -> sso_dh_failed;
                {_, _, _, _, true} -> misconfigured_session;
                _ when Status =:= 401 -> unauthorized;
                _ -> http
            end;
        %% "Session is misconfigured" has been seen inside 200 order answers.
        true ->
            case Has(<<"session is misconfigured">>) of
                true -> misconfigured_session;
                false -> http
            end
    end.

%% @doc The same for an error reason: `{http, Status, Body}' (as
%% `authenticate' and `request/4' return it) becomes `{ibkr, Kind, Info}'
%% when recognised; any other reason is returned unchanged.
-spec from_reason(term()) -> term().
from_reason({http, Status, Body} = Reason) when is_integer(Status), is_binary(Body) ->
    case classify(Status, [], Body) of
        http -> Reason;
        Ibkr -> Ibkr
    end;
from_reason(Reason) -> Reason.

%% @doc The envelope's error text and incident number (`none' without an
%% `id: N, ' prefix). `error' when the body is not the envelope: a flat JSON
%% object with a string `error' member (other members: strings, numbers,
%% booleans or null).
-spec parse_envelope(binary()) -> {ok, binary(), non_neg_integer() | none} | error.
parse_envelope(Body) when byte_size(Body) =< ?BODY_MAX ->
    case flat_object(Body) of
        {ok, Members} ->
            case lists:keyfind(<<"error">>, 1, Members) of
                {_, {string, Text}} -> {ok, Msg, Id} = incident(Text), {ok, Msg, Id};
                _ -> error
            end;
        error -> error
    end;
parse_envelope(_) -> error.

%% "id: 123, error: invalid consumer" -> {<<"invalid consumer">>, 123};
%% "id: 7, LST failed, error: No access ..." -> {<<"LST failed, error: No access ...">>, 7}.
-spec incident(binary()) -> {ok, binary(), non_neg_integer() | none}.
incident(<<"id: ", Rest/binary>> = Text) ->
    case digits(Rest, 0, 0) of
        {N, <<", error: ", Msg/binary>>} -> {ok, Msg, N};
        {N, <<", ", Msg/binary>>} -> {ok, Msg, N};
        _ -> {ok, Text, none}
    end;
incident(Text) -> {ok, Text, none}.

-spec digits(binary(), non_neg_integer(), non_neg_integer()) ->
    {non_neg_integer(), binary()} | error.
digits(<<D, Rest/binary>>, N, Len) when D >= $0, D =< $9, Len < 19 ->
    digits(Rest, N * 10 + (D - $0), Len + 1);
digits(_, _, 0) -> error;
digits(Rest, N, _) -> {N, Rest}.

%%% A flat JSON object: {"k": scalar, ...}. Bounded by ?BODY_MAX.

-type scalar() :: {string, binary()} | number | literal.

-spec flat_object(binary()) -> {ok, [{binary(), scalar()}]} | error.
flat_object(Bin) ->
    try
        <<${, R0/binary>> = ws(Bin),
        {Members, R1} = case ws(R0) of
                            <<$}, R/binary>> -> {[], R};
                            R -> members(R, [])
                        end,
        <<>> = ws(R1),
        {ok, Members}
    catch
        error:_ -> error
    end.

-spec members(binary(), [{binary(), scalar()}]) -> {[{binary(), scalar()}], binary()}.
members(Bin, Acc) ->
    {Key, R0} = string(ws(Bin)),
    <<$:, R1/binary>> = ws(R0),
    {Value, R2} = scalar(ws(R1)),
    case ws(R2) of
        <<$,, R3/binary>> -> members(R3, [{Key, Value} | Acc]);
        <<$}, R3/binary>> -> {lists:reverse([{Key, Value} | Acc]), R3}
    end.

-spec scalar(binary()) -> {scalar(), binary()}.
scalar(<<$", _/binary>> = Bin) ->
    {S, R} = string(Bin),
    {{string, S}, R};
scalar(<<"true", R/binary>>) -> {literal, R};
scalar(<<"false", R/binary>>) -> {literal, R};
scalar(<<"null", R/binary>>) -> {literal, R};
scalar(<<C, _/binary>> = Bin) when C =:= $-; C >= $0, C =< $9 ->
    {number, number(Bin)}.

-spec number(binary()) -> binary().
number(<<C, R/binary>>) when C =:= $-; C =:= $+; C =:= $.; C =:= $e; C =:= $E;
                              C >= $0, C =< $9 -> number(R);
number(R) -> R.

-spec ws(binary()) -> binary().
ws(<<C, R/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> ws(R);
ws(R) -> R.

-spec string(binary()) -> {binary(), binary()}.
string(<<$", R/binary>>) -> string(R, <<>>).

-spec string(binary(), binary()) -> {binary(), binary()}.
string(<<$", R/binary>>, Acc) -> {Acc, R};
string(<<$\\, E, R/binary>>, Acc) when E =/= $u ->
    C = case E of
            $" -> $";
            $\\ -> $\\;
            $/ -> $/;
            $b -> $\b;
            $f -> $\f;
            $n -> $\n;
            $r -> $\r;
            $t -> $\t
        end,
    string(R, <<Acc/binary, C>>);
string(<<$\\, $u, H:4/binary, R/binary>>, Acc) ->
    Code = binary_to_integer(H, 16),
    %% Surrogates (outside the BMP) are kept as U+FFFD: messages are ASCII.
    Char = if Code >= 16#D800, Code =< 16#DFFF -> 16#FFFD;
              true -> Code
           end,
    string(R, <<Acc/binary, Char/utf8>>);
string(<<C, R/binary>>, Acc) when C >= 16#20 -> string(R, <<Acc/binary, C>>).

%%% Advice

%% @doc What to tell the user about an IBKR error kind (one sentence or
%% two, UTF-8).
-spec advice(kind()) -> binary().
advice(invalid_consumer) ->
    <<"check the 9-letter consumer key (A-Z) and the realm; a new key becomes valid only after "
      "IBKR's next regional midnight (New York, Zug or Hong Kong) or weekend restart, and waits "
      "of days are normal">>;
advice(no_access_secret) ->
    <<"IBKR lost the stored access-token secret: press Generate Token in the self-service portal "
      "and use the new access token and secret">>;
advice(no_bridge) ->
    <<"no brokerage session: POST /iserver/auth/ssodh/init first (config brokerage_session => "
      "true)">>;
advice(sso_dh_failed) ->
    <<"IBKR could not open the brokerage session (seen on paper and individual accounts): "
      "contact IBKR API support">>;
advice(gone) ->
    <<"410 Gone: paper account credentials over OAuth; a paper account needs its own consumer "
      "key and keys, made while logged in as the paper user">>;
advice(misconfigured_session) ->
    <<"the username is read-only: use a trading-enabled username for OAuth">>;
advice(rate_limited) ->
    <<"over IBKR's limits (50 requests/s per username, or an endpoint's own limit): slow down; "
      "repeat offenders get a 10-minute penalty box or are blocked">>;
advice(unauthorized) ->
    <<"check the realm (limited_poa for your own keys, test_realm only with TESTCONS), the "
      "signature key uploaded to the portal, the DH prime (generator 2, positive) and the "
      "clock">>.

%% @doc One line for an IBKR error: kind, status, IBKR's text, incident and
%% advice, e.g. `IBKR: invalid consumer (HTTP 401, incident 123): check ...'.
-spec describe(error()) -> binary().
describe({ibkr, Kind, #{status := Status} = Info}) ->
    Msg = case maps:get(message, Info, <<>>) of
              <<>> -> [];
              M -> [" \"", M, "\""]
          end,
    Incident = case Info of
                   #{incident := N} -> [", incident ", integer_to_binary(N)];
                   _ -> []
               end,
    unicode:characters_to_binary(
      ["IBKR ", atom_to_binary(Kind), Msg, " (HTTP ", integer_to_binary(Status), Incident,
       "): ", advice(Kind)]).

%%% Log texts for the handshake failures that are almost always local.

%% @doc The text to log when the LST IBKR returned does not validate
%% (`lst_signature_mismatch').
-spec lst_signature_mismatch_text() -> binary().
lst_signature_mismatch_text() ->
    <<"the live session token computed here does not match IBKR's signature of it "
      "(lst_signature_mismatch); likely causes: dh_prime is not the prime in the dhparam.pem "
      "uploaded to the portal (or was written as a negative DER INTEGER), dh_generator is not "
      "the generator uploaded (it must be 2), or encryption_key / access_token_secret are not "
      "the pair the portal issued the secret for">>.

%% @doc The text to log when the first signed request after a fresh live
%% session token is answered 401. `Info' may carry `skew_s' (local clock
%% minus the server's `Date', seconds) when known.
-spec first_401_after_lst_text(#{skew_s => integer()}) -> binary().
first_401_after_lst_text(Info) ->
    Clock = case Info of
                #{skew_s := S} when abs(S) > 5 ->
                    [" The local clock is off by ", integer_to_binary(S),
                     " s against the server's Date header: fix the clock (NTP)."];
                #{skew_s := _} -> [];
                _ -> [" Also check the local clock against the server's Date header."]
            end,
    unicode:characters_to_binary(
      ["the first signed request after a new live session token was answered 401; likely causes: "
       "a DH prime or generator that differs from the uploaded dhparam.pem (g must be 2, the "
       "prime positive), or an encryption key that is not the one the secret was issued for.",
       Clock]).
