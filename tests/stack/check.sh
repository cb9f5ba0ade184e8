#!/usr/bin/env bash
# The local stack of `make run` / `make stop` / `make status` (issue 9: the
# README tells the truth): a second stack from scripts/stack.sh, in this
# test run's temp dir on free ports, checked for what the README promises:
#   - start brings up PostgreSQL, Redis, the backend and nginx; the API
#     answers through nginx;
#   - start again with the same binary: "already running", nothing restarted;
#   - start after the binary changed (a rebuild): the backend is drained and
#     restarted on the new binary, the others keep running;
#   - status exits 0 while up, non-zero after stop; stop leaves no process.
# One line per check; the last line: STACK CHECKS: PASS|FAIL (...).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT" || exit 1
TMP=$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/marketd-stack-check.XXXXXX") || exit 1
chmod 755 "$TMP"
PASS=0
FAIL=0
check() { # name ok detail
	if [ "$2" = 0 ]; then
		PASS=$((PASS + 1))
		echo "PASS  $1"
	else
		FAIL=$((FAIL + 1))
		echo "FAIL  $1"
		[ -z "${3:-}" ] || printf '%s\n' "$3" | sed 's/^/      | /' | tail -n 20
	fi
}

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
# Four free ports below the ephemeral range, from a random start.
pick_ports() {
	local start=$((20000 + RANDOM % 9000)) p found=()
	for ((p = start; p < 29900 && ${#found[@]} < 4; p++)); do
		port_free "$p" && found+=("$p")
	done
	echo "${found[@]}"
}
read -r PGP RDP APIP WEBP < <(pick_ports)
export STACK_DATA=$TMP/data STACK_PG_PORT=$PGP STACK_REDIS_PORT=$RDP STACK_API_PORT=$APIP STACK_WEB_PORT=$WEBP
BIN=$TMP/marketd
[ -x build/release/marketd ] || make -s build >/dev/null 2>&1
cp build/release/marketd "$BIN"
export MARKETD_BIN=$BIN
stack() { timeout 300 bash scripts/stack.sh "$@" 2>&1; }
backend_pid() { head -n1 "$STACK_DATA/marketd.pid" 2>/dev/null; }
# Running and not a zombie (an exited process whose parent is gone may wait
# a while for init to reap it).
alive() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st#Z}" = "$st" ]
}
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
	stack stop >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT

out=$(stack start)
rc=$?
check "start: every component up (ports $PGP $RDP $APIP $WEBP)" "$rc" "$out"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 "http://127.0.0.1:$WEBP/api/v1/cities")
[ "$code" = 200 ]
check "the API answers through nginx (GET /api/v1/cities: $code)" $? ""
pid1=$(backend_pid)

out=$(stack start)
grep -q "already running" <<<"$out" && [ "$(backend_pid)" = "$pid1" ]
check "start again, same binary: already running, backend not restarted" $? "$out"

# Another build: the same program, other bytes, written as the linker does
# (a new file in place of the old; the running one cannot be written to).
cp "$BIN" "$BIN.new" && printf '\n' >>"$BIN.new" && mv "$BIN.new" "$BIN"
out=$(stack start)
pid2=$(backend_pid)
grep -q "binary changed since it started: restarting it" <<<"$out" && [ -n "$pid2" ] && [ "$pid2" != "$pid1" ] &&
	! alive "$pid1"
check "start after a rebuild: the old backend drained, the new one started (pid $pid1 -> $pid2)" $? "$out"
code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 "http://127.0.0.1:$WEBP/api/v1/cities")
[ "$code" = 200 ]
check "the API answers through nginx after the restart ($code)" $? ""

out=$(stack status)
check "status: exit 0 while everything is up" $? "$out"
out=$(stack stop)
check "stop" $? "$out"
out=$(stack status)
rc=$?
[ "$rc" -ne 0 ]
check "status: non-zero after stop (exit $rc)" $? "$out"
sleep 0.5
left=$(pgrep -af "$TMP" | grep -v "pgrep\|check.sh" || true)
[ -z "$left" ]
check "no process of the stack left after stop" $? "$left"

if [ "$FAIL" -eq 0 ]; then
	echo "STACK CHECKS: PASS ($PASS checks)"
	exit 0
fi
echo "STACK CHECKS: FAIL ($FAIL of $((PASS + FAIL)) checks failed)"
exit 1
