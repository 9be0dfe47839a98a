%% @doc What to do with the answer to one attempt of a `request/4': the
%% retry policy. Pure: no process, no clock (the time left before the
%% caller's deadline is passed in).
%%
%% {@link decide/2} is the only place that decides to send a request again.
%% <ul>
%% <li>`401', or a port without an LST (`{error, not_authenticated}'): one
%% new LST and one retry (`retry_auth').</li>
%% <li>`429' with a `Retry-After' of 0..3600 s that ends before the deadline:
%% one retry after it (`{retry_in, Ms}'; a 429 was not processed, so a POST
%% too).</li>
%% <li>A transport failure: one resend if the deadline has not passed and
%% either the request cannot have reached the server (nothing was sent) or
%% it is a `get'/`head'. <b>A request that may have reached the server and is
%% not a `get'/`head' (e.g. a POST that places an order) is never resent</b>:
%% the caller gets the error and decides.</li>
%% <li>The port died while it held the request (`{error, port_down}'): not
%% resent, whatever the method; the caller is told. (Requests the session
%% still held, in its queues, are not affected: they go to the new port.)</li>
%% <li>Anything else is the answer (`{finish, Reply}').</li>
%% </ul>
%%
%% <h3>Transport failures as facts</h3>
%% The port reports `{error, {transport, Kind, #{sent => boolean()}}}': the
%% failure class and whether any byte of the request may have reached the
%% server. An older port reports `{error, {transport, Kind}}', read as
%% "not sent" for `resolve'/`connect'/`tls' and "may have been sent"
%% otherwise. The caller always sees `{error, {transport, Kind}}', with
%% `resolve'/`connect'/`tls' shown as `recv' when the request may have been
%% sent (so "connect" keeps meaning "never reached the server").
-module(ibkr_oauth_retry).

-export([decide/2, retry_after/1, caller_reply/1, transport/1, describe/1]).

-export_type([attempt/0, decision/0, kind/0]).

%% What the policy needs to know about the request: its method, the ms left
%% before its deadline, and the retries it already had.
-type attempt() :: #{method := atom(), left := integer() | infinity, retried := [kind()]}.
-type kind() :: auth | rate | transport.
-type decision() :: {finish, term()} | retry_auth | {retry_in, non_neg_integer()} | resend.

-define(RETRY_AFTER_MAX_S, 3600).

%% @doc The decision for `Reply' (the port's answer to one attempt) and the
%% retries the request has had afterwards.
-spec decide(term(), attempt()) -> {decision(), [kind()]}.
decide(Reply, #{retried := Retried} = A) ->
    case decide1(Reply, A) of
        {finish, _} = D -> {D, Retried};
        D -> {D, [kind(D) | Retried]}
    end.

-spec decide1(term(), attempt()) -> decision().
decide1({ok, #{status := 401}} = Reply, A) ->
    once(auth, A, retry_auth, Reply);
decide1({error, not_authenticated} = Reply, A) ->
    once(auth, A, retry_auth, Reply);
decide1({ok, #{status := 429, headers := H}} = Reply, #{left := Left} = A) ->
    case retry_after(H) of
        {ok, Ms} when Left =:= infinity; Ms < Left -> once(rate, A, {retry_in, Ms}, Reply);
        _ -> {finish, Reply}
    end;
decide1({ok, #{status := _, headers := _, body := _}} = Reply, _A) ->
    {finish, Reply};
decide1({error, _} = Reply, #{method := M, left := Left} = A) ->
    case transport(Reply) of
        {_Kind, Sent} when Left =:= infinity orelse Left > 0 ->
            case not Sent orelse M =:= get orelse M =:= head of
                true -> once(transport, A, resend, Reply);
                false -> {finish, caller_reply(Reply)}
            end;
        _ -> {finish, caller_reply(Reply)}
    end;
decide1(_Other, _A) ->
    {finish, {error, bad_reply}}.

-spec once(kind(), attempt(), decision(), term()) -> decision().
once(Kind, #{retried := Retried}, Decision, Reply) ->
    case lists:member(Kind, Retried) of
        true -> {finish, caller_reply(Reply)};
        false -> Decision
    end.

-spec kind(decision()) -> kind().
kind(retry_auth) -> auth;
kind({retry_in, _}) -> rate;
kind(resend) -> transport.

%% @doc The facts of a transport failure (both formats): `{Kind, Sent}';
%% `none' for any other answer.
-spec transport(term()) -> {atom(), boolean()} | none.
transport({error, {transport, K, #{sent := Sent}}}) when is_boolean(Sent) -> {K, Sent};
transport({error, {transport, K}}) -> {K, not never_sent(K)};
transport(_) -> none.

%% @doc The answer a caller sees: a transport failure as
%% `{error, {transport, Kind}}', where `resolve'/`connect'/`tls' of a
%% request that may have been sent read `recv'.
-spec caller_reply(term()) -> term().
caller_reply({error, {transport, K, #{sent := true}}}) ->
    case never_sent(K) of
        true -> {error, {transport, recv}};
        false -> {error, {transport, K}}
    end;
caller_reply({error, {transport, K, #{}}}) -> {error, {transport, K}};
caller_reply(Reply) -> Reply.

-spec never_sent(term()) -> boolean().
never_sent(K) -> K =:= resolve orelse K =:= connect orelse K =:= tls.

%% @doc `Retry-After' in whole seconds (0..3600), as ms.
-spec retry_after([{binary(), binary()}]) -> {ok, non_neg_integer()} | error.
retry_after(Headers) ->
    case [V || {N, V} <- Headers, is_binary(N), string:lowercase(N) =:= <<"retry-after">>] of
        [V | _] when is_binary(V) ->
            try binary_to_integer(string:trim(V)) of
                S when S >= 0, S =< ?RETRY_AFTER_MAX_S -> {ok, S * 1000};
                _ -> error
            catch
                error:badarg -> error
            end;
        _ -> error
    end.

%% @doc A short text for the warning logged with a retry.
-spec describe({decision(), term()}) -> iolist().
describe({retry_auth, {ok, #{status := 401}}}) ->
    "answered 401: new live session token, one retry";
describe({retry_auth, _}) ->
    "found no live session token in the port: new one, one retry";
describe({{retry_in, Ms}, _}) ->
    io_lib:format("answered 429: retry in ~b ms", [Ms]);
describe({resend, Reply}) ->
    {K, _} = transport(Reply),
    io_lib:format("failed (transport ~p): one retry", [K]).
