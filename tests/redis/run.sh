#!/usr/bin/env bash
# The Redis client (src/cache/redis.c) against real servers: builds
# tests/redis/redis_driver.c against build/asan/libmarketd.a, starts Debian's
# redis-server as plain processes in a temp dir on 127.0.0.1 — one single
# Redis (a port in 57000–57009) and a cluster of 3 masters + 3 replicas
# (ports in 57010–57049, bus ports +50) — runs the driver against each, and
# stops everything on exit. One line per check ("ok - …" / "FAIL - …"); the last line is
#   REDIS TESTS: PASS (n checks) | REDIS TESTS: FAIL (…)
# and the exit status is 0 / 1 accordingly.
#
# Env (optional): REDIS_TEST_TIMEOUT=300 (seconds per driver run), CC,
# REDIS_DRIVER_LOG=debug (the client's log: redirections, topology),
# REDIS_DRIVER=path (a prebuilt driver, e.g. an -O2 one for throughput).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$ROOT" || exit 1

CC=${CC:-cc}
RUN_TIMEOUT=${REDIS_TEST_TIMEOUT:-300}
BUS_OFFSET=50 # cluster bus = port + 50 (the default +10000 is past 65535)
SINGLE_PASSWORD=single-pw-1
CLUSTER_PASSWORD=cluster-pw-1

TMP=""
FAILED=0
CHECKS=0

ok() {
	CHECKS=$((CHECKS + 1))
	echo "ok - $*"
}
fail() {
	CHECKS=$((CHECKS + 1))
	FAILED=$((FAILED + 1))
	echo "FAIL - $*"
}

# Stops every server this run started (and any the driver restarted): the
# pids come from our own pidfiles, and are checked to be redis-server.
cleanup() {
	local pf pid
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		for pf in "$TMP"/*/redis.pid; do
			[ -f "$pf" ] || continue
			pid=$(cat "$pf" 2>/dev/null) || continue
			if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server; then
				kill -KILL "$pid" 2>/dev/null
			fi
		done
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
	if [ "$FAILED" -eq 0 ] && [ "$CHECKS" -gt 0 ]; then
		echo "REDIS TESTS: PASS ($CHECKS checks)"
		exit 0
	fi
	echo "REDIS TESTS: FAIL ($FAILED of $CHECKS checks failed)"
	exit 1
}

for tool in redis-server redis-cli pkg-config; do
	if ! command -v "$tool" >/dev/null; then
		fail "tool $tool not found (apt-get install redis-server pkg-config)"
		finish
	fi
done

# --- build -------------------------------------------------------------------
PKGS="libpq libh2o-evloop libsodium jansson hiredis"
# The Makefile's asan flags (BASE + SANITIZE + PKG_CFLAGS / PKG_LIBS).
CFLAGS="-std=c11 -D_GNU_SOURCE -Isrc -Ibuild/gen -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
 -Wno-missing-field-initializers -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all
 -fno-omit-frame-pointer $(pkg-config --cflags $PKGS) -DH2O_USE_LIBUV=0"
LIBS="$(pkg-config --libs $PKGS) -lssl -lcrypto -lpthread -lm"
DRIVER=build/asan/tests/redis_driver
mkdir -p build/asan/tests
# shellcheck disable=SC2086
if [ -n "${REDIS_DRIVER:-}" ]; then
	DRIVER=$REDIS_DRIVER
	ok "use prebuilt $DRIVER"
elif make -s build/asan/libmarketd.a >/tmp/redis-build.$$ 2>&1 &&
	$CC $CFLAGS tests/redis/redis_driver.c build/asan/libmarketd.a $LIBS -o "$DRIVER" >>/tmp/redis-build.$$ 2>&1; then
	ok "build $DRIVER"
	rm -f /tmp/redis-build.$$
else
	cat /tmp/redis-build.$$
	rm -f /tmp/redis-build.$$
	fail "build $DRIVER"
	finish
fi

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
if [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
	export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi

# --- servers -----------------------------------------------------------------
TMP=$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/marketd-redis.XXXXXX") || exit 1

# write_conf PORT PASSWORD [cluster]
write_conf() {
	local port=$1 pw=$2 dir="$TMP/$1"
	mkdir -p "$dir"
	{
		echo "port $port"
		echo "bind 127.0.0.1"
		echo "daemonize yes"
		echo "pidfile $dir/redis.pid"
		echo "logfile $dir/redis.log"
		echo "dir $dir"
		echo 'save ""'
		echo "appendonly no"
		echo "requirepass $pw"
		if [ "${3:-}" = cluster ]; then
			echo "masterauth $pw"
			echo "cluster-enabled yes"
			echo "cluster-port $((port + BUS_OFFSET))"
			echo "cluster-config-file $dir/nodes.conf"
			echo "cluster-node-timeout 1000"
		fi
	} >"$dir/redis.conf"
}

# listening PORT: something accepts connections on 127.0.0.1:PORT.
listening() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_server PORT PASSWORD: starts it and waits (≤ 5 s) for PONG.
start_server() {
	local port=$1 pw=$2 i
	redis-server "$TMP/$port/redis.conf" >/dev/null 2>&1 || return 1
	for ((i = 0; i < 50; i++)); do
		[ "$(redis-cli -p "$port" -a "$pw" --no-auth-warning ping 2>/dev/null)" = PONG ] && return 0
		grep -q 'Address already in use' "$TMP/$port/redis.log" 2>/dev/null && return 1
		sleep 0.1
	done
	return 1
}

# start_in_range FIRST LAST PASSWORD [cluster]: starts a server on the first
# port of FIRST..LAST that works and prints that port. 57000–57099 lie in
# Linux's ephemeral range (32768–60999), so another process's outgoing
# connection may hold one of them for a while: skip it rather than fail.
start_in_range() {
	local first=$1 last=$2 pw=$3 kind=${4:-} port
	for ((port = first; port <= last; port++)); do
		listening "$port" && continue
		if [ "$kind" = cluster ]; then
			listening $((port + BUS_OFFSET)) && continue
		fi
		write_conf "$port" "$pw" "$kind"
		if start_server "$port" "$pw"; then
			echo "$port"
			return 0
		fi
		echo "start_in_range: port $port: $(grep -h '#' "$TMP/$port/redis.log" 2>/dev/null | tail -1)" >&2
	done
	return 1
}

if SINGLE_PORT=$(start_in_range 57000 57009 "$SINGLE_PASSWORD"); then
	ok "start single redis-server on $SINGLE_PORT"
else
	fail "start single redis-server in 57000–57009"
	finish
fi

cluster_ok=1
CLUSTER_PORTS=()
next=57010
for ((i = 0; i < 6; i++)); do
	# data ports 57010–57049, bus ports (+50) 57060–57099
	if port=$(start_in_range "$next" 57049 "$CLUSTER_PASSWORD" cluster); then
		CLUSTER_PORTS+=("$port")
		next=$((port + 1))
	else
		fail "start cluster node $((i + 1)) of 6 in $next–57049"
		cluster_ok=0
		break
	fi
done
if [ "$cluster_ok" = 1 ]; then
	ok "start 6 cluster nodes on ${CLUSTER_PORTS[*]}"
	addrs=()
	for port in "${CLUSTER_PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
	if redis-cli -a "$CLUSTER_PASSWORD" --no-auth-warning --cluster create "${addrs[@]}" \
		--cluster-replicas 1 --cluster-yes >"$TMP/cluster-create.log" 2>&1; then
		ok "redis-cli --cluster create (3 masters + 3 replicas)"
	else
		tail -20 "$TMP/cluster-create.log"
		fail "redis-cli --cluster create"
		cluster_ok=0
	fi
fi

# cluster_ready: every node says cluster_state:ok and every replica's link
# to its master is up (a manual failover needs a synced replica).
cluster_ready() {
	local port info repl
	for port in "${CLUSTER_PORTS[@]}"; do
		info=$(redis-cli -p "$port" -a "$CLUSTER_PASSWORD" --no-auth-warning cluster info 2>/dev/null) || return 1
		grep -q '^cluster_state:ok' <<<"$info" || return 1
		grep -q '^cluster_known_nodes:6' <<<"$info" || return 1
		repl=$(redis-cli -p "$port" -a "$CLUSTER_PASSWORD" --no-auth-warning info replication 2>/dev/null) || return 1
		if grep -q '^role:slave' <<<"$repl"; then
			grep -q '^master_link_status:up' <<<"$repl" || return 1
		fi
	done
	return 0
}
if [ "$cluster_ok" = 1 ]; then
	t0=$SECONDS
	until cluster_ready; do
		if [ $((SECONDS - t0)) -ge 30 ]; then
			cluster_ok=0
			break
		fi
		sleep 0.2
	done
	if [ "$cluster_ok" = 1 ]; then
		ok "cluster ready (state ok on all 6 nodes, replicas in sync) in $((SECONDS - t0)) s"
	else
		fail "cluster not ready within 30 s"
	fi
fi

# --- the driver ----------------------------------------------------------------

# run_driver ARGS…: the driver's own lines pass through; its checks count.
run_driver() {
	local out rc
	out="$TMP/driver-$1.out"
	timeout -k 5 "$RUN_TIMEOUT" "$DRIVER" "$@" 2>"$TMP/driver-$1.err" | tee "$out"
	rc=${PIPESTATUS[0]}
	CHECKS=$((CHECKS + $(grep -c -E '^(ok|FAIL) - ' "$out")))
	FAILED=$((FAILED + $(grep -c -E '^FAIL - ' "$out")))
	if [ "$rc" -ne 0 ]; then
		if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			fail "redis_driver $1 did not finish within $RUN_TIMEOUT s"
		elif ! grep -q '^FAIL - ' "$out"; then
			fail "redis_driver $1 exited with status $rc"
		fi
		# sanitizer reports and logs, if any
		tail -40 "$TMP/driver-$1.err"
	elif [ -s "$TMP/driver-$1.err" ]; then
		# what the client logged (reconnect warnings are expected here);
		# all of it with REDIS_DRIVER_LOG=debug
		if [ -n "${REDIS_DRIVER_LOG:-}" ]; then
			sed 's/^/  log: /' "$TMP/driver-$1.err"
		else
			sed 's/^/  log: /' "$TMP/driver-$1.err" | tail -20
		fi
	fi
}

run_driver single "$SINGLE_PORT" "$SINGLE_PASSWORD" "$TMP"
if [ "$cluster_ok" = 1 ]; then
	seeds=$(
		IFS=,
		echo "${CLUSTER_PORTS[*]}"
	)
	run_driver cluster "$seeds" "$CLUSTER_PASSWORD" "$TMP"
fi

finish
