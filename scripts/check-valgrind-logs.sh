#!/bin/sh
# Fails when any valgrind log of a port process reports an error or a leak
# (logs are written with -q, so a clean process leaves an empty log).
dir=${1:?log dir}
n=$(ls "$dir"/port.*.log 2>/dev/null | wc -l)
[ "$n" -gt 0 ] || { echo "no valgrind logs in $dir: did the suites run the port under valgrind?"; exit 1; }
bad=0
for f in "$dir"/port.*.log; do
    if [ -s "$f" ]; then echo "== $f"; cat "$f"; bad=1; fi
done
[ $bad -eq 0 ] && echo "valgrind: $n port processes, no errors, no leaks"
exit $bad
