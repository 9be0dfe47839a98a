#!/usr/bin/env bash
# Installs the Debian packages a target needs, only those that are missing,
# and says what it installs. Usage: scripts/ensure-deps.sh [build|test|dev]...
#   build: compile the port and the OTP application (and run make demo)
#   test:  build + test frameworks (cmocka, Common Test, ExUnit, valgrind)
#   dev:   test + fuzzing and lint tools (clang/libFuzzer, clang-tidy, cppcheck)
set -euo pipefail

build_pkgs=(gcc make pkg-config ca-certificates
    erlang-base erlang-dev erlang-crypto erlang-public-key erlang-ssl erlang-inets
    erlang-syntax-tools erlang-tools rebar3
    libssl-dev libcurl4-openssl-dev libjson-c-dev libwslay-dev)
test_pkgs=(libcmocka-dev erlang-common-test erlang-eunit erlang-dialyzer erlang-edoc
    erlang-proper erlang-proper-dev
    elixir valgrind)
dev_pkgs=(clang libclang-rt-14-dev clang-tidy cppcheck)

want=()
for group in "${@:-build}"; do
    case "$group" in
        build) want+=("${build_pkgs[@]}") ;;
        test)  want+=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
        dev)   want+=("${build_pkgs[@]}" "${test_pkgs[@]}" "${dev_pkgs[@]}") ;;
        *) echo "ensure-deps: unknown group '$group'" >&2; exit 2 ;;
    esac
done

missing=()
for p in $(printf '%s\n' "${want[@]}" | sort -u); do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ensure-deps: installing missing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "ensure-deps: not root and no sudo; install them by hand" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
