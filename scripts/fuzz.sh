#!/usr/bin/env bash
# Builds the libFuzzer harnesses (make -C c_src fuzz) and runs each for SECONDS
# (default 60) on a temporary copy of its committed seed corpus
# c_src/fuzz/corpus/<harness>/ (never grown in place). Exits non-zero on any
# crash, leak, UB report, timeout or out-of-memory; a failing input is kept
# in _build/fuzz/ (add it to the corpus as a regression once fixed).
# Prints executions, execs/s and coverage (cov = edges, ft = features).
# Usage: scripts/fuzz.sh [SECONDS] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || read -ra harnesses <<<"$(make -s --no-print-directory -C c_src fuzz-harnesses)"

make -s -C c_src fuzz

work=$(mktemp -d "${TMPDIR:-/tmp}/ibkr_fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
keep=_build/fuzz
status=0
for h in "${harnesses[@]}"; do
    cp -r "c_src/fuzz/corpus/$h" "$work/$h"
    mkdir -p "$work/art-$h"
    dict=()
    [ -f "c_src/fuzz/$h.dict" ] && dict=(-dict="c_src/fuzz/$h.dict")
    log="$work/$h.log"
    rc=0
    # One process, one job: the machine's two cores are shared.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "c_src/build-fuzz/$h" -max_total_time="$secs" -print_final_stats=1 \
        -max_len=16384 -timeout=10 -rss_limit_mb=2048 "${dict[@]}" \
        -artifact_prefix="$work/art-$h/" "$work/$h" >"$log" 2>&1 || rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(sed -n 's/.*\(cov: [0-9]* ft: [0-9]*\).*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p' <<<"$done_line")
    if [ $rc -ne 0 ] || ls "$work/art-$h"/* >/dev/null 2>&1; then
        echo "fuzz $h: FAILED (exit $rc)"
        grep -E "ERROR|runtime error|SUMMARY|$h:|Test unit written" "$log" | head -20 || true
        tail -40 "$log"
        mkdir -p "$keep"
        cp "$work/art-$h"/* "$keep"/ 2>/dev/null && echo "fuzz $h: failing input(s) kept in $keep/"
        cp "$log" "$keep/$h.log"
        status=1
    else
        echo "fuzz $h: ${secs}s, ${execs:-?} execs, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus ${corp:-?} inputs: no failure"
    fi
done
exit $status
