#!/usr/bin/env bash
# `make test` (and so CI): build, unit tests, integration tests against a
# throwaway PostgreSQL, fuzzing. Ends with exactly one line
#   TEST SUMMARY: PASS (...) | TEST SUMMARY: FAIL (...)
# and exits 0 / 1 accordingly. Leaves no process and no temp dir behind.
#
# Env (all optional):
#   TEST_ONLY=unit|integration|fuzz|checks   run one part (default and CI: everything)
#   T=<pattern>                              only the integration tests whose id contains it
#   FUZZ_SECONDS=10                   per fuzz target
#   FUZZ_SEED=1                       libFuzzer's -seed: a failure reproduces with the same seed
#   FUZZ_KEEP=0                       1: merge inputs that add coverage into tests/fuzz/corpus/ (make fuzz-long)
#   UNIT_TIMEOUT=300 INTEGRATION_TIMEOUT=1800 BUILD_TIMEOUT=1800   (seconds)
#   PYTHON=/usr/bin/python3           Debian's, which has python3-psycopg2
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT" || exit 1
# shellcheck source=tests/lib/pg.sh
. "$ROOT/tests/lib/pg.sh"

# T=<pattern> (make test T=stampede) runs the integration tests whose id
# contains the pattern, and only those, unless TEST_ONLY says otherwise.
if [ -n "${T:-}" ]; then
	ONLY=${TEST_ONLY:-integration}
else
	ONLY=${TEST_ONLY:-all}
fi
case $ONLY in
all | unit | integration | fuzz | checks) ;;
*)
	echo "test: TEST_ONLY must be unit, integration, fuzz or checks (got '$ONLY')" >&2
	echo "TEST SUMMARY: FAIL (bad TEST_ONLY) in 0 s"
	exit 1
	;;
esac
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
FUZZ_SEED=${FUZZ_SEED:-1}
FUZZ_KEEP=${FUZZ_KEEP:-0}
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
INTEGRATION_TIMEOUT=${INTEGRATION_TIMEOUT:-1800}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
PYTHON=${PYTHON:-/usr/bin/python3}
MAKE=${MAKE:-make}
SAN_ENV=(
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
)
if [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
	SAN_ENV+=(ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer)
fi

T0=$SECONDS
TMP=""          # this run's temp dir (TEST_TMPDIR)
PG_DIR=""       # the throwaway cluster, once started
BG_PID=""       # the bounded command running now (leader of its own group)
REAPER_PID=""   # scripts/test-reaper.sh: cleans up if this run is killed outright
SUMMARY_DONE=0

# Results: one entry per step for the report; counts for the summary line.
REPORT=()       # lines "step   result"
SUMMARY=()      # pieces of the summary line
FAILED=0
SUITES_PASS=0
SUITES_FAIL=0

want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
log() { printf '\n==== %s\n' "$*"; }
note() { printf 'test: %s\n' "$*"; }

# --- processes ------------------------------------------------------------------

# pid_alive PID: runs and is not a zombie (dead, just not reaped yet).
pid_alive() {
	local state
	state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# group_alive PGID: some process of the group still runs.
group_alive() {
	local pid
	for pid in $(pgrep -g "$1" 2>/dev/null); do
		pid_alive "$pid" && return 0
	done
	return 1
}

# kill_group PGID: TERM the whole process group, KILL whatever is left after 5 s.
kill_group() {
	local pgid=$1
	group_alive "$pgid" || return 0
	kill -TERM -- "-$pgid" 2>/dev/null
	for _ in $(seq 1 50); do
		group_alive "$pgid" || return 0
		sleep 0.1
	done
	note "processes of group $pgid still alive 5 s after SIGTERM: killing"
	kill -KILL -- "-$pgid" 2>/dev/null
}

# cmd_label CMD...: CMD without a leading `env NAME=value ...`, for messages.
cmd_label() {
	if [ "${1:-}" = env ]; then
		shift
		while [ $# -gt 0 ] && [[ $1 == [A-Za-z_]*=* ]]; do shift; done
	fi
	printf '%s' "$*"
}

# run_bounded [-o FILE] SECONDS CMD...: runs CMD under `timeout` in its own
# process group (timeout makes one), so that an interrupt, a timeout or a
# straggler left by CMD can be ended as a whole. -o sends CMD's output to FILE
# (not the caller's redirection: the traps print while this function waits).
# Returns CMD's exit status (124: timed out).
run_bounded() {
	local secs rc out=/dev/stdout
	if [ "$1" = -o ]; then
		out=$2
		shift 2
	fi
	secs=$1
	shift
	if [ "$out" = /dev/stdout ]; then
		timeout -k 10 "$secs" "$@" &
	else
		timeout -k 10 "$secs" "$@" >"$out" 2>&1 &
	fi
	BG_PID=$!
	wait "$BG_PID"
	rc=$?
	if group_alive "$BG_PID"; then
		note "ending processes left behind by: $(cmd_label "$@")"
		kill_group "$BG_PID"
	fi
	BG_PID=""
	if [ "$rc" -eq 124 ]; then
		note "timed out after ${secs} s: $(cmd_label "$@")"
	fi
	return "$rc"
}

# Processes started under this run's temp dir that outlived their parents
# (e.g. a server a test forgot): their environment names TEST_TMPDIR=$TMP or
# their command line mentions $TMP.
sweep_tmp_processes() {
	local p pid pids=()
	[ -n "$TMP" ] || return 0
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		[ "$pid" != "$$" ] && [ "$pid" != "$REAPER_PID" ] || continue
		if grep -qzxF "TEST_TMPDIR=$TMP" "$p/environ" 2>/dev/null ||
			grep -qF "$TMP" "$p/cmdline" 2>/dev/null; then
			pids+=("$pid")
		fi
	done
	[ "${#pids[@]}" -gt 0 ] || return 0
	note "ending leftover processes: ${pids[*]}"
	kill -TERM "${pids[@]}" 2>/dev/null
	for _ in $(seq 1 30); do
		for pid in "${pids[@]}"; do
			pid_alive "$pid" && break
			pid=""
		done
		[ -n "$pid" ] || return 0
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null
	return 0
}

cleanup() {
	if [ -n "$BG_PID" ]; then
		kill_group "$BG_PID"
		BG_PID=""
	fi
	if [ -n "$PG_DIR" ]; then
		pg_tmp_stop "$PG_DIR" || note "could not stop the test PostgreSQL in $PG_DIR"
		PG_DIR=""
	fi
	sweep_tmp_processes
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		rm -rf "$TMP"
	fi
	TMP=""
	if [ -n "$REAPER_PID" ]; then
		kill "$REAPER_PID" 2>/dev/null
		REAPER_PID=""
	fi
}

# shellcheck disable=SC2317  # reached through the EXIT trap
on_exit() {
	local rc=$?
	trap - EXIT INT TERM HUP
	cleanup
	if [ "$SUMMARY_DONE" = 0 ]; then
		echo "TEST SUMMARY: FAIL (interrupted) in $((SECONDS - T0)) s"
		[ "$rc" -ne 0 ] || rc=1
	fi
	exit "$rc"
}
trap on_exit EXIT
trap 'note "interrupted"; exit 130' INT
trap 'note "terminated"; exit 143' TERM HUP

record() { # record STEP RESULT SUMMARY-PIECE
	REPORT+=("$(printf '%-12s %s' "$1" "$2")")
	SUMMARY+=("$3")
}

# --- temp dir and PostgreSQL -------------------------------------------------------

make_tmp() {
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/marketd-test.XXXXXX") || return 1
	# The postgres user (when we are root) must traverse into $TMP/pg.
	chmod 755 "$TMP"
	if [ "$(id -u)" -eq 0 ] && ! (cd / && runuser -u postgres -- test -x "$TMP"); then
		rm -rf "$TMP"
		TMP=$(mktemp -d /var/tmp/marketd-test.XXXXXX) || return 1
		chmod 755 "$TMP"
	fi
	# Its own session: a kill of this run's process group spares it.
	setsid bash "$ROOT/scripts/test-reaper.sh" "$$" "$TMP" </dev/null >/dev/null 2>&1 &
	REAPER_PID=$!
}

port_in_use() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

# A free loopback port in 31200–31999, from a random start so that parallel
# runs rarely collide (a collision still fails cleanly and is retried). Below
# Linux's ephemeral range (32768–60999), where any outgoing connection may
# take a port between this check and the postmaster's bind; the harness keeps
# its servers in 30000–31199 for the same reason.
pick_port() {
	local i port start=$((RANDOM % 800))
	for i in $(seq 0 799); do
		port=$((31200 + (start + i) % 800))
		if ! port_in_use "$port"; then
			printf '%s\n' "$port"
			return 0
		fi
	done
	return 1
}

# Sets PG_PORT; returns non-zero with a message if PostgreSQL cannot start.
start_test_pg() {
	local attempt dir=$TMP/pg
	for attempt in 1 2 3; do
		PG_PORT=$(pick_port) || {
			note "no free port in 31200-31999"
			return 1
		}
		note "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT in $dir"
		PG_DIR=$dir
		if PG_INITDB_NOSYNC=1 pg_tmp_start "$dir" "$PG_PORT" \
			fsync=off synchronous_commit=off full_page_writes=off max_connections=300; then
			return 0
		fi
		# Most likely a lost race for the port (another process bound it
		# between pick_port and the postmaster): try another one.
		note "PostgreSQL did not start on port $PG_PORT (attempt $attempt of 3)"
	done
	return 1
}

# --- steps ----------------------------------------------------------------------------

# Separate make runs, so that e.g. a unit test that does not compile still
# lets the integration tests run (and fails the build step all the same).
BUILD_ASAN=skip BUILD_UNIT=skip BUILD_FUZZ=skip
step_build() {
	local failed=() t=$SECONDS
	if want unit || want integration || want checks; then
		log "build: $MAKE -j2 asan"
		if run_bounded "$BUILD_TIMEOUT" "$MAKE" -j2 asan; then
			BUILD_ASAN=ok
		else
			BUILD_ASAN=fail
			failed+=(asan)
		fi
	fi
	if want unit && [ "$BUILD_ASAN" = ok ]; then
		log "build: $MAKE -j2 unit"
		if run_bounded "$BUILD_TIMEOUT" "$MAKE" -j2 unit; then
			BUILD_UNIT=ok
		else
			BUILD_UNIT=fail
			failed+=(unit)
		fi
	fi
	if want fuzz; then
		log "build: $MAKE -j2 fuzz"
		if run_bounded "$BUILD_TIMEOUT" "$MAKE" -j2 fuzz; then
			BUILD_FUZZ=ok
		else
			BUILD_FUZZ=fail
			failed+=(fuzz)
		fi
	fi
	if [ "$ONLY" = all ]; then
		log "build: $MAKE -j2 build"
		run_bounded "$BUILD_TIMEOUT" "$MAKE" -j2 build || failed+=(build)
	fi
	if [ "${#failed[@]}" -eq 0 ]; then
		record build "ok ($((SECONDS - t)) s)" "build ok"
	else
		FAILED=1
		record build "FAILED: make ${failed[*]}" "build FAILED"
	fi
}

step_unit() {
	local src name bin rc pass=0 total=0 failed=() t=$SECONDS
	local sources=(tests/unit/test_*.c)
	[ -e "${sources[0]}" ] || sources=()
	total=${#sources[@]}
	if [ "$total" -eq 0 ]; then
		FAILED=1
		record unit "FAILED: no tests/unit/test_*.c" "unit 0/0"
		return
	fi
	if [ "$BUILD_UNIT" != ok ]; then
		FAILED=1
		SUITES_FAIL=$((SUITES_FAIL + total))
		record unit "FAILED: not run, the build failed" "unit 0/$total"
		return
	fi
	for src in "${sources[@]}"; do
		name=$(basename "$src" .c)
		bin=build/asan/tests/$name
		log "unit: $name"
		if [ ! -x "$bin" ]; then
			note "$bin was not built"
			rc=127
		else
			run_bounded "$UNIT_TIMEOUT" env "${SAN_ENV[@]}" "$bin"
			rc=$?
		fi
		if [ "$rc" -eq 0 ]; then
			pass=$((pass + 1))
		else
			note "$name FAILED (exit $rc)"
			failed+=("$name")
		fi
	done
	SUITES_PASS=$((SUITES_PASS + pass))
	SUITES_FAIL=$((SUITES_FAIL + total - pass))
	if [ "$pass" -eq "$total" ]; then
		record unit "$pass/$total passed ($((SECONDS - t)) s)" "unit $pass/$total"
	else
		FAILED=1
		record unit "$pass/$total passed; FAILED: ${failed[*]}" "unit $pass/$total"
	fi
}

integration_fail() {
	FAILED=1
	SUITES_FAIL=$((SUITES_FAIL + 1))
	record integration "FAILED: $1" "integration 0/1"
}

step_integration() {
	local t=$SECONDS rc db_url bin=$ROOT/build/asan/marketd
	if [ "$BUILD_ASAN" != ok ]; then
		integration_fail "not run, the build failed"
		return
	fi
	log "integration: throwaway PostgreSQL"
	if ! start_test_pg; then
		integration_fail "could not start PostgreSQL (see above)"
		return
	fi
	db_url="postgresql://postgres@127.0.0.1:$PG_PORT/marketd_test"
	if ! "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres marketd_test; then
		integration_fail "createdb marketd_test failed"
		return
	fi
	log "integration: marketd migrate"
	if ! run_bounded 120 env "${SAN_ENV[@]}" DATABASE_URL="$db_url" "$bin" migrate; then
		integration_fail "build/asan/marketd migrate failed"
		return
	fi
	if [ ! -f tests/integration/run.py ]; then
		integration_fail "tests/integration/run.py missing"
		return
	fi
	log "integration: $PYTHON tests/integration/run.py"
	run_bounded "$INTEGRATION_TIMEOUT" env "${SAN_ENV[@]}" \
		MARKETD_BIN="$bin" DATABASE_URL="$db_url" \
		PGHOST=127.0.0.1 PGPORT="$PG_PORT" PGUSER=postgres PGDATABASE=marketd_test \
		TEST_TMPDIR="$TMP" TEST_PATTERN="${T:-}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
		"$PYTHON" tests/integration/run.py
	rc=$?
	if [ "$rc" -eq 0 ]; then
		SUITES_PASS=$((SUITES_PASS + 1))
		record integration "1/1 passed ($((SECONDS - t)) s)" "integration 1/1"
	else
		integration_fail "tests/integration/run.py exited $rc"
	fi
}

step_fuzz() {
	local src name bin corpus work art rc f pass=0 total failed=() t=$SECONDS
	local sources=(tests/fuzz/fuzz_*.c)
	[ -e "${sources[0]}" ] || sources=()
	total=${#sources[@]}
	if [ "$total" -eq 0 ]; then
		FAILED=1
		record fuzz "FAILED: no tests/fuzz/fuzz_*.c" "fuzz 0/0"
		return
	fi
	if [ "$BUILD_FUZZ" != ok ]; then
		FAILED=1
		SUITES_FAIL=$((SUITES_FAIL + total))
		record fuzz "FAILED: not run, the build failed" "fuzz 0/$total"
		return
	fi
	for src in "${sources[@]}"; do
		name=$(basename "$src" .c)
		name=${name#fuzz_}
		bin=build/fuzz/fuzz_$name
		log "fuzz: fuzz_$name for ${FUZZ_SECONDS}s"
		# New inputs go to a scratch copy; crash files to build/ (git-ignored)
		# where they outlive this run.
		work=$TMP/fuzz/$name
		art=$ROOT/build/fuzz/artifacts/$name
		mkdir -p "$work/corpus" "$art"
		rm -f "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-* "$art"/slow-unit-*
		corpus=tests/fuzz/corpus/$name
		[ -d "$corpus" ] || corpus=tests/fuzz/corpus/fuzz_$name
		if [ -d "$corpus" ]; then
			cp -R "$corpus/." "$work/corpus/"
		else
			note "no corpus tests/fuzz/corpus/$name/: starting from an empty one"
		fi
		if [ ! -x "$bin" ]; then
			note "$bin was not built"
			rc=127
		else
			run_bounded -o "$art/last-run.log" $((FUZZ_SECONDS + 120)) env "${SAN_ENV[@]}" "$bin" \
				-max_total_time="$FUZZ_SECONDS" -timeout=5 -rss_limit_mb=2048 -seed="$FUZZ_SEED" \
				-artifact_prefix="$art/" "$work/corpus/"
			rc=$?
		fi
		if [ "$rc" -eq 0 ] && [ "$FUZZ_KEEP" = 1 ]; then
			# Only inputs that add coverage go into the repo's corpus.
			keep=tests/fuzz/corpus/$name
			mkdir -p "$keep"
			before=$(find "$keep" -type f | wc -l)
			run_bounded -o "$art/merge.log" 600 env "${SAN_ENV[@]}" "$bin" -merge=1 "$keep" "$work/corpus/" ||
				note "fuzz_$name: merging the corpus failed (see $art/merge.log)"
			note "fuzz_$name: corpus $keep: $before -> $(find "$keep" -type f | wc -l) files (commit the new ones)"
		fi
		if [ "$rc" -eq 0 ]; then
			pass=$((pass + 1))
			note "fuzz_$name ok: $(grep -E '^Done [0-9]+ runs' "$art/last-run.log" | tail -n1)"
		else
			failed+=("fuzz_$name")
			note "fuzz_$name FAILED (exit $rc); last lines of $art/last-run.log:"
			tail -n 60 "$art/last-run.log" 2>/dev/null
			for f in "$art"/crash-* "$art"/leak-* "$art"/timeout-* "$art"/oom-*; do
				[ -e "$f" ] && note "reproducer: $f  (rerun: $bin $f; the run used -seed=$FUZZ_SEED)"
			done
		fi
	done
	SUITES_PASS=$((SUITES_PASS + pass))
	SUITES_FAIL=$((SUITES_FAIL + total - pass))
	if [ "$pass" -eq "$total" ]; then
		record fuzz "$pass/$total passed ($((SECONDS - t)) s)" "fuzz $pass/$total"
	else
		FAILED=1
		record fuzz "$pass/$total passed; FAILED: ${failed[*]}" "fuzz $pass/$total"
	fi
}

# Self-contained suites beside the C tests, one script each: the Redis client
# against real Redis and Redis Cluster processes, the API docs (OpenAPI lint,
# drift against the route table, Swagger UI in headless Chromium), and the
# deploy artefacts (Prometheus rules, compose, Kubernetes), and that
# docs/traceability.md is up to date. A setup.sh beside
# a check installs what it needs (npm packages into a git-ignored folder).
CHECKS=(tests/style/check.sh tests/traceability/check.sh tests/redis/run.sh tests/docs/check.sh tests/deploy/check.sh
	tests/stack/check.sh)
CHECKS_TIMEOUT=${CHECKS_TIMEOUT:-900}
step_checks() {
	local check dir pass=0 total=0 failed=() t=$SECONDS
	for check in "${CHECKS[@]}"; do
		total=$((total + 1))
		if [ ! -f "$check" ]; then
			failed+=("$check (missing)")
			continue
		fi
		dir=$(dirname "$check")
		if [ -f "$dir/setup.sh" ]; then
			log "checks: $dir/setup.sh"
			if ! run_bounded "$CHECKS_TIMEOUT" bash "$dir/setup.sh"; then
				failed+=("$dir/setup.sh")
				continue
			fi
		fi
		log "checks: $check"
		if run_bounded "$CHECKS_TIMEOUT" env "${SAN_ENV[@]}" TEST_TMPDIR="$TMP" bash "$check"; then
			pass=$((pass + 1))
		else
			failed+=("$check")
		fi
	done
	SUITES_PASS=$((SUITES_PASS + pass))
	SUITES_FAIL=$((SUITES_FAIL + total - pass))
	if [ "$pass" -eq "$total" ]; then
		record checks "$pass/$total passed ($((SECONDS - t)) s)" "checks $pass/$total"
	else
		FAILED=1
		record checks "$pass/$total passed; FAILED: ${failed[*]}" "checks $pass/$total"
	fi
}

# --- main --------------------------------------------------------------------------

note "TEST_ONLY=$ONLY FUZZ_SECONDS=$FUZZ_SECONDS in $ROOT"
if ! make_tmp; then
	echo "TEST SUMMARY: FAIL (cannot create a temp dir) in $((SECONDS - T0)) s"
	SUMMARY_DONE=1
	exit 1
fi
note "temp dir $TMP"

step_build
want unit && step_unit
want integration && step_integration
want fuzz && step_fuzz
want checks && step_checks

log "cleanup"
cleanup

log "results"
for line in "${REPORT[@]}"; do
	printf '%s\n' "$line"
done
echo "suites: $SUITES_PASS passed, $SUITES_FAIL failed"
pieces=""
for piece in "${SUMMARY[@]}"; do
	pieces+="${pieces:+, }$piece"
done
SUMMARY_DONE=1
if [ "$FAILED" = 0 ]; then
	echo "TEST SUMMARY: PASS ($pieces) in $((SECONDS - T0)) s"
	exit 0
fi
echo "TEST SUMMARY: FAIL ($pieces) in $((SECONDS - T0)) s"
exit 1
