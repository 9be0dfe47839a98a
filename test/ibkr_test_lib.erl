%% Shared helpers for the test suites: where the test data lives, and the
%% vector sets copied from shared/vectors (test data only, never used at run time).
-module(ibkr_test_lib).
-export([data_dir/0, vectors/1, vector_dir/1, vector_config/1, vector_config/2]).

%% test/data in the source tree, wherever rebar3 put the compiled module.
-spec data_dir() -> file:filename().
data_dir() ->
    Src = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:join(filename:dirname(Src), "data").

%% Set = public | testcons
-spec vector_dir(public | testcons) -> file:filename().
vector_dir(Set) -> filename:join(data_dir(), "vectors_" ++ atom_to_list(Set)).

-spec vectors(public | testcons) -> map().
vectors(Set) ->
    {ok, [V]} = file:consult(filename:join(vector_dir(Set), "vectors.terms")),
    V.

%% A session config for a vector set, keys given as PEM content.
-spec vector_config(public | testcons) -> map().
vector_config(Set) -> vector_config(Set, #{}).

-spec vector_config(public | testcons, map()) -> map().
vector_config(Set, Extra) ->
    V = vectors(Set),
    Dir = vector_dir(Set),
    {ok, Enc} = file:read_file(filename:join(Dir, maps:get(encryption_key_file, V))),
    {ok, Sig} = file:read_file(filename:join(Dir, maps:get(signature_key_file, V))),
    Base = #{consumer_key => maps:get(consumer_key, V),
             access_token => maps:get(access_token, V),
             access_token_secret => maps:get(access_token_secret, V),
             dh_prime => maps:get(dh_prime, V),
             dh_generator => maps:get(dh_generator, V),
             realm => maps:get(realm, V),
             base_url => maps:get(base_url, V),
             encryption_key => {pem, Enc},
             signature_key => {pem, Sig},
             %% The suites hammer endpoints IBKR paces (e.g. 1000 GETs of
             %% /portfolio/accounts, 1 per 5 s at IBKR): no rate limit here;
             %% rate_limit_SUITE sets its own.
             rate_limit => none},
    maps:merge(Base, Extra).
