#!/usr/bin/env bash
# make lint: clang-tidy (config in .clang-tidy, our headers included through
# its HeaderFilterRegex) and cppcheck over every C file we ship or test with:
# the port (c_src/*.c), the cmocka tests, the fuzz harnesses and the bench
# echo port. Any finding fails; suppressions live in .clang-tidy or inline
# (cppcheck-suppress / NOLINT) with the reason next to them.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob

ei=$(erl -noshell -eval 'io:format("~s", [code:lib_dir(erl_interface)]), halt().')
# The flags c_src/Makefile compiles with (tests and harnesses add -Ic_src).
# shellcheck disable=SC2046  # pkg-config prints several words on purpose
flags=(-std=c11 -D_GNU_SOURCE -I"$ei/include" -Ic_src
       $(pkg-config --cflags libcurl json-c openssl cmocka))
port=(c_src/*.c)
others=(c_src/tests/*.c c_src/fuzz/*.c c_src/bench/*.c)
[ "${#port[@]}" -gt 0 ] || { echo "lint: no c_src/*.c" >&2; exit 1; }

echo "== clang-tidy: ${#port[@]} port files, ${#others[@]} tests/fuzz/bench files"
# "N warnings generated." counts the system headers' warnings, which are not
# ours and not shown; drop that noise, keep everything else.
clang-tidy --quiet "${port[@]}" "${others[@]}" -- "${flags[@]}" 2> >(grep -v ' warnings\? generated\.$' >&2)

echo "== cppcheck"
# Each file on its own (the harnesses and tests all define main or
# LLVMFuzzerTestOneInput); unusedFunction is meaningless per file.
cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,style,performance,portability \
    --inline-suppr --suppress=missingIncludeSystem --suppress=unusedFunction \
    -D_GNU_SOURCE -Ic_src "${port[@]}" "${others[@]}"
echo "lint: clean"
