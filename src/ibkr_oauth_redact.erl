%% @doc Redaction: what may reach a log, an error reason, a crash report or
%% `sys:get_status/1'. Pure functions, the only place that decides what is
%% hidden.
%%
%% <ul>
%% <li>{@link scrub/1}: every binary (a token, a key, a body could be any of
%% them) becomes `{binary, Size}', funs become `fun_redacted', lists are cut
%% after 100 elements.</li>
%% <li>{@link scrub_error/1}: an error for a log line; IBKR's answer text in
%% `{http, Status, Body}' is kept (it says why) but cut to 200 bytes;
%% {@link scrub_reason/1} the same for the `Reason' of `{error, Reason}'.</li>
%% <li>{@link config/1}: a config map (validated or raw) with the access-token
%% secret and PEM contents replaced by `redacted' (file names are kept).</li>
%% </ul>
-module(ibkr_oauth_redact).

-export([scrub/1, scrub_error/1, scrub_reason/1, config/1]).

-define(LIST_MAX, 100).
-define(BODY_MAX, 200).

%% @doc Binaries become their size, recursively through lists, tuples and
%% maps; funs (the session keeps its config in one) become `fun_redacted'.
-spec scrub(term()) -> term().
scrub(B) when is_binary(B) -> {binary, byte_size(B)};
scrub(L) when is_list(L) -> scrub_list(L, 0);
scrub(T) when is_tuple(T) -> list_to_tuple([scrub(E) || E <- tuple_to_list(T)]);
scrub(M) when is_map(M) -> maps:map(fun(_, V) -> scrub(V) end, M);
scrub(F) when is_function(F) -> fun_redacted;
scrub(X) -> X.

-spec scrub_list(term(), non_neg_integer()) -> term().
scrub_list([], _) -> [];
scrub_list(_, N) when N >= ?LIST_MAX -> ['...'];
scrub_list([H | T], N) -> [scrub(H) | scrub_list(T, N + 1)];
scrub_list(Tail, _) -> scrub(Tail).

%% @doc An error for a log line. Errors from the port carry no secret by
%% contract, but an HTTP body is IBKR's text: keep its start only.
-spec scrub_error(term()) -> term().
scrub_error({error, {http, Status, Body}}) when is_binary(Body) ->
    {error, {http, Status, binary:part(Body, 0, min(?BODY_MAX, byte_size(Body)))}};
scrub_error(Other) -> scrub(Other).

%% @doc The reason of an `{error, Reason}' for a log line, as {@link
%% scrub_error/1} leaves it.
-spec scrub_reason(term()) -> term().
scrub_reason(Reason) ->
    {error, R} = scrub_error({error, Reason}),
    R.

%% @doc A copy of a (validated or raw) config safe to log or show: the
%% access-token secret and PEM contents are replaced by `redacted'.
-spec config(term()) -> term().
config(#{} = C) ->
    maps:map(fun(access_token_secret, _) -> redacted;
                (K, {pem, _}) when K =:= encryption_key; K =:= signature_key ->
                     {pem, redacted};
                (_, V) -> V
             end, C);
config(Other) -> Other.
