#!/usr/bin/env bash
# make lint: clang-tidy (config in .clang-tidy) and cppcheck over c_src/.
set -euo pipefail
cd "$(dirname "$0")/.."
ei=$(erl -noshell -eval 'io:format("~s", [code:lib_dir(erl_interface)]), halt().')
flags=(-std=c11 -D_GNU_SOURCE -I"$ei/include" -Ic_src $(pkg-config --cflags libcurl json-c openssl cmocka))
srcs=(c_src/*.c)
echo "== clang-tidy (${#srcs[@]} files)"
clang-tidy --quiet "${srcs[@]}" -- "${flags[@]}"
echo "== cppcheck"
cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,style,performance,portability \
    --inline-suppr --suppress=missingIncludeSystem --suppress=unusedFunction \
    -D_GNU_SOURCE -Ic_src "${srcs[@]}" c_src/bench/*.c
echo "lint: clean"
