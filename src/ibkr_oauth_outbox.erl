%% @doc The session's outbox of sign frames (pure). Signing is the hot path:
%% one write(2) per call would cap it at the pipe's round-trip rate. A sign
%% frame goes out at once when nothing else waits in the session's mailbox;
%% otherwise it joins the outbox, which leaves as one batch frame
%% (PROTOCOL.md) when the `flush_outbox' message sent behind the waiting
%% calls comes up, or when it reaches {@link max_bytes/0} bytes.
%%
%% {@link add/4} says which of these applies; {@link take/1} gives the bytes
%% to write and the ids they carry. The session does the writing.
-module(ibkr_oauth_outbox).

-export([new/0, add/4, take/1, ids/1, max_bytes/0]).
-export_type([outbox/0, next/0]).

-define(BATCH_MAX, 1048576).    % bytes of sign frames per batch frame

-record(ob, {frames = [] :: [{non_neg_integer(), binary()}],   % newest first
             bytes = 0 :: non_neg_integer()}).
-opaque outbox() :: #ob{}.
%% `flush': write now; `schedule': the first frame of a batch, send
%% `flush_outbox' to self; `hold': a flush is already on its way.
-type next() :: flush | schedule | hold.

%% @doc An empty outbox.
-spec new() -> outbox().
new() -> #ob{}.

%% @doc Adds frame `Bin' (the encoded command with id `Id'); `Waiting' is
%% whether other messages wait in the mailbox.
-spec add(non_neg_integer(), binary(), boolean(), outbox()) -> {next(), outbox()}.
add(Id, Bin, Waiting, #ob{frames = Out, bytes = N}) ->
    Ob = #ob{frames = [{Id, Bin} | Out], bytes = N + 4 + byte_size(Bin)},
    if
        not Waiting -> {flush, Ob};
        Ob#ob.bytes >= ?BATCH_MAX -> {flush, Ob};
        Out =:= [] -> {schedule, Ob};
        true -> {hold, Ob}
    end.

%% @doc What to write for the frames held, oldest first: the one frame as it
%% is, or several in one batch frame (tag 0, then each frame length-prefixed);
%% `empty' when nothing is held.
-spec take(outbox()) -> {iodata(), [non_neg_integer()], outbox()} | empty.
take(#ob{frames = []}) -> empty;
take(#ob{frames = [{Id, Bin}]}) -> {Bin, [Id], #ob{}};
take(#ob{frames = Out}) ->
    In = lists:reverse(Out),
    {[0 | [[<<(byte_size(B)):32>>, B] || {_, B} <- In]], [Id || {Id, _} <- In], #ob{}}.

%% @doc The ids held, oldest first.
-spec ids(outbox()) -> [non_neg_integer()].
ids(#ob{frames = Out}) -> lists:reverse([Id || {Id, _} <- Out]).

%% @doc The size at which a batch is written without waiting for the flush.
-spec max_bytes() -> pos_integer().
max_bytes() -> ?BATCH_MAX.
