#!/bin/sh
# Stand-in for priv/ibkr_oauth_port under `make valgrind` (IBKR_OAUTH_PORT points
# here): exec keeps the pid and the inherited fds 3/4, so the port protocol is
# unchanged. One log per process; scripts/check-valgrind-logs.sh reads them.
dir=${VALGRIND_LOG_DIR:-/tmp}
exec valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    --log-file="$dir/port.%p.log" "$(dirname "$0")/../priv/ibkr_oauth_port" "$@"
