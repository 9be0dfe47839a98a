#!/usr/bin/env bash
# The hex package, built and run as a user who installs it would: exactly the
# files the package ships, built with rebar3 offline (the port too, by the
# pre_hook's `make -C c_src`), then a session that authenticates and signs a
# request against the local fake IBKR server. A file the build or the session
# needs that `files` in src/ibkr_oauth.app.src leaves out fails here.
#
# The file list is computed as rebar3_hex (rebar3_hex_build:include_files/3
# and rebar3_hex_file:expand_paths/2) does: each `files` entry (or hex's
# default list when there is none) is a filelib:wildcard/1 pattern under the
# project; a directory that matches stands for everything below it; only
# regular files are kept; `exclude_files`, `exclude_regexps` and hex's own
# excludes (~$, \.o$, \.so$, \.swp$) are removed, `include_files` added back;
# src/ibkr_oauth.app.src is replaced by the term hex writes. It is applied to
# a clean copy of the sources (tracked and untracked, not ignored files), as
# a package published from a fresh clone would be: no priv/, no C objects.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v rebar3 >/dev/null || { echo "package-test: rebar3 not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ibkr_package.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The port of the package, not one named in the environment (ASan, valgrind).
unset IBKR_OAUTH_PORT
# No rebar3 cache, global config or plugins from this machine; nothing fetched.
export REBAR_CACHE_DIR=$work/rebar_cache REBAR_GLOBAL_CONFIG_DIR=$work/rebar_global REBAR_OFFLINE=1 REBAR_COLOR=none
mkdir -p "$REBAR_GLOBAL_CONFIG_DIR"

echo "== clean copy of the sources"
mkdir "$work/tree"
(cd "$root" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$work/tree"

cat > "$work/hex_files.escript" <<'EOF'
%% hex_files.escript TREE PKG: copies the files rebar3_hex would put in the
%% package of the application in TREE into PKG and prints their names.
-include_lib("kernel/include/file.hrl").

main([Tree, Pkg]) ->
    AppSrcPath = filename:join([Tree, "src", "ibkr_oauth.app.src"]),
    {ok, [{application, Name, Details}]} = file:consult(AppSrcPath),
    Defaults = ["src", "c_src", "include", "rebar.config.script", "priv", "rebar.config",
                "rebar.lock", "CHANGELOG*", "changelog*", "README*", "readme*",
                "LICENSE*", "license*", "NOTICE"],
    All = expand(proplists:get_value(files, Details, Defaults), Tree),
    Include = expand(proplists:get_value(include_files, Details, []), Tree),
    Exclude = expand(proplists:get_value(exclude_files, Details, []), Tree),
    Res = ["~$", "\\.o$", "\\.so$", "\\.swp$"] ++ proplists:get_value(exclude_regexps, Details, []),
    %% hex matches the regexps against absolute paths.
    AbsTree = filename:absname(Tree),
    Kept = [F || F <- All, not lists:member(F, Exclude),
                 not lists:any(fun(Re) -> re:run(filename:join(AbsTree, F), Re) =/= nomatch end, Res)],
    AppSrc = filename:join("src", atom_to_list(Name) ++ ".app.src"),
    Files = lists:usort(Kept ++ Include) -- [AppSrc],
    lists:foreach(fun(F) ->
                      Dest = filename:join(Pkg, F),
                      ok = filelib:ensure_dir(Dest),
                      {ok, _} = file:copy(filename:join(Tree, F), Dest),
                      {ok, #file_info{mode = Mode}} = file:read_file_info(filename:join(Tree, F)),
                      ok = file:change_mode(Dest, Mode),
                      io:format("   ~ts~n", [F])
                  end, Files),
    ok = filelib:ensure_dir(filename:join(Pkg, AppSrc)),
    ok = file:write_file(filename:join(Pkg, AppSrc),
                         io_lib:format("~tp.~n", [{application, Name, Details}])),
    io:format("   ~ts (written by hex)~n", [AppSrc]).

%% rebar3_hex_file:expand_paths/2: relative names of the regular files.
expand(Patterns, Dir) ->
    Abs = filename:absname(Dir),
    Matches = lists:flatmap(fun(P) -> filelib:wildcard(filename:join(Abs, P)) end, Patterns),
    Below = lists:flatmap(fun(M) ->
                              case filelib:is_dir(M) of
                                  true -> filelib:wildcard(filename:join(M, "**"));
                                  false -> [M]
                              end
                          end, Matches),
    [string:prefix(F, Abs ++ "/") || F <- Below, filelib:is_regular(F)].
EOF

echo "== the package: files of src/ibkr_oauth.app.src, as rebar3_hex expands them"
mkdir "$work/pkg"
escript "$work/hex_files.escript" "$work/tree" "$work/pkg"
[ ! -e "$work/pkg/priv/ibkr_oauth_port" ] || { echo "the package holds a port binary" >&2; exit 1; }
for doc in LICENSE README.md CHANGELOG.md; do
    [ -f "$work/pkg/$doc" ] || { echo "the package does not ship $doc" >&2; exit 1; }
done

echo "== rebar3 compile in the unpacked package (offline; pre_hook: make -C c_src)"
(cd "$work/pkg" && rebar3 compile) 2>&1 | sed 's/^/   /'
ebin=$work/pkg/_build/default/lib/ibkr_oauth/ebin
[ -f "$ebin/ibkr_oauth.app" ] || { echo "the build made no $ebin/ibkr_oauth.app" >&2; exit 1; }
port=$work/pkg/_build/default/lib/ibkr_oauth/priv/ibkr_oauth_port
[ -x "$port" ] || { echo "the build made no port program ($port)" >&2; exit 1; }

# The fake IBKR server and its helpers are test code of this repository, not
# of the package: compiled from here, apart from the package's code path.
mkdir "$work/test_ebin"
erlc -o "$work/test_ebin" "$root/test/ibkr_test_lib.erl" "$root/test/ibkr_server_crypto.erl" \
    "$root/test/ibkr_fake_json.erl" "$root/test/ibkr_fake_api.erl" "$root/test/ibkr_fake_ws.erl" \
    "$root/test/ibkr_fake_server.erl"

cat > "$work/session.escript" <<'EOF'
%% session.escript PKG: starts the packaged application, a session against the
%% fake server, authenticates, signs a request and sends it with httpc (the
%% server checks the signature), and one request/4 through the port's HTTPS.
main([Pkg]) ->
    logger:set_primary_config(level, warning),
    try run(Pkg) of
        ok -> io:format("   session: authenticated, signed, requested~n")
    catch C:E:St ->
        io:format(standard_error, "package-test: ~p:~tp~n~tp~n", [C, E, St]),
        halt(1)
    end.

run(Pkg) ->
    {ok, _} = application:ensure_all_started(ibkr_oauth),
    Priv = code:priv_dir(ibkr_oauth),
    {Priv, true} = {Priv, lists:prefix(Pkg, Priv)},
    {ok, _} = application:ensure_all_started(inets),
    {ok, #{config := Config, base_url := BaseUrl, ca_file := CaFile}} =
        ibkr_fake_server:start_from_vectors(public, #{}),
    {ok, S} = ibkr_oauth:start_link(Config),
    {ok, #{expires_at := _}} = ibkr_oauth:authenticate(S),
    Url = <<BaseUrl/binary, "/portfolio/accounts">>,
    {ok, Auth} = ibkr_oauth:sign(S, get, Url),
    Ssl = [{verify, verify_peer}, {cacertfile, binary_to_list(CaFile)}],
    {ok, {{_, 200, _}, _, _}} =
        httpc:request(get, {binary_to_list(Url), [{"authorization", binary_to_list(Auth)}]},
                      [{ssl, Ssl}], [{body_format, binary}]),
    {ok, #{status := 200}} = ibkr_oauth:request(S, get, <<"/portfolio/accounts">>, #{}),
    #{handshakes := 1, bad_signatures := 0, by_path := #{<<"/portfolio/accounts">> := 2}} =
        ibkr_fake_server:stats(),
    ok = ibkr_oauth:stop(S).
EOF

echo "== a session from the package: authenticate, sign, request (fake IBKR server)"
ERL_FLAGS="-pa $ebin -pa $work/test_ebin" escript "$work/session.escript" "$work/pkg"
echo "package-test: passed"
