#!/usr/bin/env bash
# The README's Elixir example, run as a user would: a fresh `mix new` project
# that depends on this package by path (the README's own deps line), compiled
# offline with Debian's rebar3, running exactly the README block between the
# `readme-test:elixir-example` markers against the local fake IBKR server.
#
# The package is a copy of this working tree (tracked and untracked, not
# ignored files: no priv/, no C objects), as a fresh clone or git dep would
# be, so the port binary must be built by the dep compile into _build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export MIX_REBAR3=${MIX_REBAR3:-$(command -v rebar3)}
[ -x "$MIX_REBAR3" ] || { echo "mix-consumer-test: rebar3 not found (MIX_REBAR3)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ibkr_mix_consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT
# A fresh Mix home: no Hex, no cached archives, nothing fetched.
export MIX_HOME=$work/mix_home HEX_HOME=$work/hex_home HEX_OFFLINE=1 MIX_ENV=dev

# The text between <!-- readme-test:NAME --> and its closing marker, without
# the code fence lines.
readme_block() {
    awk -v start="<!-- readme-test:$1 -->" -v stop="<!-- /readme-test:$1 -->" '
        $0 == start { inside = 1; next }
        $0 == stop { inside = 0; found = 1; next }
        inside && !/^```/ { print }
        END { if (!found) exit 1 }' "$root/README.md"
}
deps_line=$(readme_block elixir-deps) || { echo "README: no elixir-deps block" >&2; exit 1; }
example=$(readme_block elixir-example) || { echo "README: no elixir-example block" >&2; exit 1; }

echo "== copy of the package (working tree, ignored files left out)"
mkdir "$work/ibkr_oauth"
(cd "$root" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$work/ibkr_oauth"
[ ! -e "$work/ibkr_oauth/priv/ibkr_oauth_port" ] || { echo "copy holds a port binary" >&2; exit 1; }

echo "== mix new consumer, deps from the README: $(echo "$deps_line" | sed 's/^ *//')"
(cd "$work" && mix new consumer >/dev/null)
cd "$work/consumer"
DEPS_LINE=$deps_line perl -0pi -e '
    s/  defp deps do\n.*?\n  end\n/$ENV{DEPS_LINE}\n/s or die "no deps block\n";
    s/extra_applications: \[:logger\]/extra_applications: [:logger, :inets, :ssl]/ or die "no extra_applications\n";
' mix.exs

echo "== mix compile (offline, MIX_REBAR3=$MIX_REBAR3)"
mix compile 2>&1 | sed 's/^/   /'
port=_build/dev/lib/ibkr_oauth/priv/ibkr_oauth_port
[ -x "$port" ] || { echo "the dep compile did not build $port" >&2; exit 1; }

# The fake server and its helpers are Erlang test modules of the package;
# `config` is the session config pointing at it, brokerage session on.
cat > readme_example.exs <<'EOF'
test_dir = Path.expand("../ibkr_oauth/test")
out = Path.expand("_build/fake_server_ebin")
File.mkdir_p!(out)

for mod <- ~w(ibkr_test_lib ibkr_server_crypto ibkr_fake_json ibkr_fake_api ibkr_fake_ws ibkr_fake_server) do
  {:ok, _} = :compile.file(to_charlist(Path.join(test_dir, mod <> ".erl")), [:report, outdir: to_charlist(out)])
end

true = Code.prepend_path(out)
{:ok, %{config: config}} = :ibkr_fake_server.start_from_vectors(:public, %{})
config = Map.put(config, :brokerage_session, true)
Logger.configure(level: :warning)
EOF
printf '\n# ---- README.md, readme-test:elixir-example ----\n%s\n# ---- end of the README block ----\n' \
    "$example" >> readme_example.exs
cat >> readme_example.exs <<'EOF'

priv = to_string(:code.priv_dir(:ibkr_oauth))
true = String.starts_with?(priv, Path.expand("_build"))
%{handshakes: 1, ssodh_inits: 1, bad_signatures: 0, nonce_reuse: 0, by_path: by_path} = :ibkr_fake_server.stats()
%{"/portfolio/accounts" => 2, "/iserver/account/U1234567/orders" => 1} = by_path
IO.puts("README example ran: the port from #{priv}, the fake server saw #{inspect(by_path)}")
EOF

echo "== mix run readme_example.exs"
mix run readme_example.exs
echo "mix-consumer-test: passed"
