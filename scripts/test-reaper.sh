#!/usr/bin/env bash
# The safety net of scripts/test.sh: started in its own session when a run
# makes its temp dir, it waits for the run to end. A run that ends normally
# (or is interrupted with Ctrl-C / SIGTERM) cleans up itself and then stops
# this script; one killed outright (SIGKILL, an OOM kill, a CI runner
# tearing down the step) cannot, and then this script does what its
# clean-up would have done: stops the throwaway PostgreSQL, ends every
# process started under the run's temp dir (servers, Redis, nginx, checks)
# and removes the dir. Nothing outside that dir is touched.
#
#   scripts/test-reaper.sh <pid of the test run> <its temp dir>
set -u
parent=$1 tmp=$2
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
case $tmp in
/tmp/marketd-test.* | /var/tmp/marketd-test.* | "${TMPDIR:-/tmp}"/marketd-test.*) ;;
*) exit 2 ;; # never anything but a test run's own dir
esac

while kill -0 "$parent" 2>/dev/null; do
	sleep 1
done
[ -d "$tmp" ] || exit 0

# shellcheck source=tests/lib/pg.sh disable=SC1091
. "$ROOT/tests/lib/pg.sh"
[ -d "$tmp/pg" ] && pg_tmp_stop "$tmp/pg" >/dev/null 2>&1

for p in /proc/[0-9]*; do
	pid=${p#/proc/}
	[ "$pid" != "$$" ] || continue
	if grep -qzxF "TEST_TMPDIR=$tmp" "$p/environ" 2>/dev/null ||
		grep -qF "$tmp" "$p/cmdline" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null
	fi
done
sleep 0.5
rm -rf "$tmp"
