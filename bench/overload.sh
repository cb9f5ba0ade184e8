#!/usr/bin/env bash
# marketd overload benchmark (`make bench-overload`; issue "No metastable
# collapse", item 6): 10,000 keep-alive users who wait for each answer and
# then think, against the release build with Redis, on bench-scale data, in
# the scenarios below; each scenario is a fresh measured run of the load
# generator (bench/overload/loadgen.c). Per 5-s window: req/s, client-
# observed p50/p95/p99, non-2xx by status, timeouts and connection errors,
# the cache hit ratio, marketd_db_pool_waiting and the event-loop lag (marketd's
# /metrics, scraped every second), PostgreSQL transactions/s
# (pg_stat_database); the issue's bars with PASS/FAIL. Results:
# bench/results/overload-<UTC>.md (+ overload-latest.md), the JSON of every
# window (overload-<UTC>.json, overload-latest.json) and one PNG per
# scenario (overload-<UTC>-<scenario>.png).
#
# Scenarios (SCENARIOS="a b c d e f g" by default; any subset, run in this order):
#   a  warm: cache warmed first (every list, popular, districts fetched twice), 40 s
#   b  cold start: Redis FLUSHALL and marketd freshly restarted, no warm-up, 40 s
#   c  warm, then Redis restarted at t = 15 s (down ~3 s, same port, empty), 60 s
#   d  warm, then Redis stopped at t = 10 s for 30 s, 60 s
#   e  warm, then PostgreSQL restarted (pg_ctl restart -m fast) at t = 15 s, 60 s
#   f  twice the load (think 0.5–1.5 s) on a freshly started, warmed marketd, 40 s
#   g  a flood (think 0.1–0.3 s, ~10x) for 20 s, then the normal load for 20 s,
#      same marketd throughout (warmed first)
# Normal load: think 1–3 s (10,000 users ≈ 5,000 req/s offered). Mix: 55 %
# product lists (every city x newest/price_asc/price_desc), 30 % product
# detail (ids uniform over all products), 7 % cities (half) / districts of a
# city (half), 8 % popular sellers (half without, half with city_id).
#
# Set-up as bench/run.sh (and with its ports, database and lock): PostgreSQL
# in .data/bench-pg on 127.0.0.1:15433 seeded once with `marketd seed
# --scale bench` (bench/run.sh does it when the marker is missing), marketd
# on 127.0.0.1:18081 (WORKERS=2 DB_POOL_SIZE=8 DB_MAX_OVERFLOW=0
# ACCESS_LOG=0), redis-server on 127.0.0.1:18083. Everything started here
# is stopped on exit; every wait is bounded. Run time: set-up 15–30 s, then
# each scenario its duration + 2–5 s (a, b, f, g ~43 s; c, d, e ~64 s): ~6.5
# min for all seven (plus ~5 min of seeding the first time).
# The per-process open files limit (20,000 here) is raised to the hard
# limit: the generator and marketd each hold one socket per user.
#
# Environment:
#   SCENARIOS="a b c d e f g"
#   OVERLOAD_CLIENTS=10000      users (= connections)
#   OVERLOAD_TIME_SCALE=1       multiplies every duration and event time (0.25: a quick look)
#   OVERLOAD_TIMEOUT_MS=5000    a request unanswered this long counts as a timeout
#   OVERLOAD_THREADS=2          load generator threads
#   OVERLOAD_DB_POOL_SIZE=8, OVERLOAD_DB_MAX_OVERFLOW=0, OVERLOAD_WORKERS=2
#   OVERLOAD_CACHE_TIMEOUT_MS   marketd's CACHE_TIMEOUT_MS (unset: its default)
#   OVERLOAD_SCRAPE_S=1         /metrics and pg_stat_database sampling period
#   OVERLOAD_TAG=name           write overload-<UTC>-<name>.* only (latest untouched)
#   OVERLOAD_KEEP_TMP=1         keep the temp dir (logs, per-request logs)
#   MARKETD_BIN                 the binary (default build/release/marketd)
# A run with fewer clients or OVERLOAD_TIME_SCALE != 1 never replaces the
# -latest files.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
o_log() { printf '[overload %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

HOST=127.0.0.1
PG_PORT=15433
API_PORT=18081
REDIS_PORT=18083
HEALTH_PORT=18086 # marketd's HEALTH_LISTEN
DB_NAME=marketd_bench
DB_URL="postgresql://postgres@$HOST:$PG_PORT/$DB_NAME"
PGDIR=$ROOT/.data/bench-pg
MARKER=$PGDIR/seeded-bench.env

# shellcheck disable=SC2034 # read through ${!v} below
SCENARIOS_GIVEN=${SCENARIOS:-}
SCENARIOS=${SCENARIOS:-a b c d e f g}
CLIENTS=${OVERLOAD_CLIENTS:-10000}
TIME_SCALE=${OVERLOAD_TIME_SCALE:-1}
TIMEOUT_MS=${OVERLOAD_TIMEOUT_MS:-5000}
THREADS=${OVERLOAD_THREADS:-2}
POOL=${OVERLOAD_DB_POOL_SIZE:-8}
OVERFLOW=${OVERLOAD_DB_MAX_OVERFLOW:-0}
WORKERS=${OVERLOAD_WORKERS:-2}
CACHE_TIMEOUT_MS=${OVERLOAD_CACHE_TIMEOUT_MS:-}
SCRAPE_S=${OVERLOAD_SCRAPE_S:-1}
TAG=${OVERLOAD_TAG:-}
MARKETD=${MARKETD_BIN:-$ROOT/build/release/marketd}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
CC=${CC:-cc}
ANALYZE=$ROOT/bench/overload/analyze.py

[[ $TAG =~ ^[A-Za-z0-9._-]*$ ]] || { echo "OVERLOAD_TAG: letters, digits, . _ - only" >&2; exit 2; }
if ! [[ $CLIENTS =~ ^[0-9]+$ ]] || [ "$CLIENTS" -lt 1 ]; then echo "OVERLOAD_CLIENTS: a positive integer" >&2; exit 2; fi
[[ $TIME_SCALE =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "OVERLOAD_TIME_SCALE: a positive number" >&2; exit 2; }
for s in $SCENARIOS; do
	[[ $s =~ ^[a-g]$ ]] || { echo "SCENARIOS: letters a..g, got '$s'" >&2; exit 2; }
done
# run in the order a..g whatever the order given ((g) compares with (a) and (f))
# shellcheck disable=SC2086 # a word list
SCENARIOS=$(printf '%s\n' $SCENARIOS | sort -u | paste -sd' ')

PG_BENCH_SETTINGS=( # as bench/run.sh (durability on)
	shared_buffers=2GB max_connections=400 effective_cache_size=16GB
	max_wal_size=4GB track_activity_query_size=4096
	fsync=on synchronous_commit=on full_page_writes=on
)

# --- state and cleanup -----------------------------------------------------------
TMP=
PG_STARTED=0
MARKETD_PID=
REDIS_PID=
LOADGEN_PID=
SCRAPER_PID=
PROBE_PID=
LOCK_FD=

stop_bg() { # PID: SIGTERM, wait (bounded), SIGKILL
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	stop_bg "$LOADGEN_PID"
	stop_bg "$SCRAPER_PID"
	stop_bg "$PROBE_PID"
	[ -z "$MARKETD_PID" ] || b_stop_pid "$MARKETD_PID" marketd 10
	[ -z "$REDIS_PID" ] || b_stop_pid "$REDIS_PID" redis-server 10
	b_finish "$rc" "${OVERLOAD_KEEP_TMP:-0}" o_log
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
	o_log "error: $*"
	exit 1
}
psql_db() { PGOPTIONS='-c client_min_messages=warning' timeout "${PSQL_TIMEOUT:-60}" psql -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"; }
q() { psql_db -d "$DB_NAME" -tA -c "$1"; }
rcli() { timeout 10 redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"; }
now_s() { date +%s.%N; }
# sleep_until EPOCH: sleeps until then (at once if past)
sleep_until() { sleep "$(awk -v t="$1" -v n="$(now_s)" 'BEGIN { d = t - n; if (d < 0) d = 0; printf "%.3f", d }')"; }
scaled() { awk -v v="$1" -v s="$TIME_SCALE" 'BEGIN { printf "%g", v * s }'; }

# --- preflight ----------------------------------------------------------------------
preflight() {
	local t
	for t in curl psql redis-server redis-cli "$CC" awk ss flock timeout "$PYTHON"; do
		command -v "$t" >/dev/null 2>&1 || die "$t not found (run scripts/deps.sh)"
	done
	if ! command -v gnuplot >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 &&
		[ "${OVERLOAD_NO_APT:-0}" != 1 ]; then
		o_log "installing gnuplot-nox (apt) for the PNGs"
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends gnuplot-nox >/dev/null 2>&1 ||
			o_log "apt-get install gnuplot-nox failed"
	fi
	command -v gnuplot >/dev/null 2>&1 || o_log "gnuplot not found: no PNGs (apt-get install gnuplot-nox)"
	[ -x "$MARKETD" ] || die "$MARKETD not built (make build)"
	b_load_pg_lib "$ROOT"
	mkdir -p "$ROOT/.data" "$ROOT/bench/results"
	if [ ! -s "$MARKER" ]; then
		o_log "bench database not seeded yet: BENCH_PREPARE_ONLY=1 bash bench/run.sh (one-time, several minutes)"
		BENCH_PREPARE_ONLY=1 bash "$ROOT/bench/run.sh" || die "bench/run.sh could not prepare the database"
	fi
	# shellcheck disable=SC1090
	. "$MARKER"
	b_claim die "$API_PORT" "$REDIS_PORT" "$HEALTH_PORT"
	NOFILE=$(ulimit -n)
	[ "$NOFILE" -ge $((CLIENTS + 100)) ] ||
		die "open files limit $NOFILE is below $CLIENTS clients + 100 (the generator and marketd each hold one socket per user)"
	o_log "open files limit: $NOFILE per process (generator and marketd each hold $CLIENTS sockets)"
	TMP=$(mktemp -d /tmp/marketd-overload.XXXXXX)
	chmod 755 "$TMP"
	cp "$MARKETD" "$TMP/marketd" # a rebuild of the shared tree mid-run must not change the binary
	BIN_DESC="build/release/marketd (sha256 $(sha256sum "$MARKETD" | cut -c1-12), built $(date -u -r "$MARKETD" +'%Y-%m-%d %H:%M UTC'))"
	local dirty rev
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | awk '{ print $NF }' | grep -v '^bench/' | paste -sd' ' || true)
	TREE_DESC="$rev${dirty:+ + uncommitted changes in: $dirty}"
	MARKETD=$TMP/marketd
	o_log "compiling the load generator"
	"$CC" -std=c11 -O2 -Wall -Wextra -Wshadow -Wno-unused-parameter -o "$TMP/loadgen" "$ROOT/bench/overload/loadgen.c" \
		-lh2o-evloop -lpthread -lm || die "cannot compile bench/overload/loadgen.c (libh2o-evloop-dev installed?)"
}

# --- PostgreSQL ---------------------------------------------------------------------------
pg_start() {
	o_log "starting PostgreSQL on $HOST:$PG_PORT ($PGDIR)"
	PG_STARTED=1
	PG_START_TIMEOUT=120 pg_tmp_start "$PGDIR" "$PG_PORT" "${PG_BENCH_SETTINGS[@]}" ||
		die "PostgreSQL did not start (log: $PGDIR/postgresql.log)"
	local s want
	s=$(q "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
	       WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_connections')")
	for want in fsync=on full_page_writes=on synchronous_commit=on; do
		[[ " $s " == *" $want "* ]] || die "durability settings not restored (want $want): $s"
	done
	PG_SETTINGS_SHOWN="PostgreSQL $(q 'SHOW server_version' | cut -d' ' -f1), $s"
	o_log "marketd migrate (the binary may bring new migrations)"
	DATABASE_URL=$DB_URL timeout 600 "$MARKETD" migrate >"$TMP/migrate.log" 2>&1 ||
		{ cat "$TMP/migrate.log" >&2; die "marketd migrate failed"; }
	o_log "pg_prewarm: products, sellers, categories and their indexes"
	if q "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null 2>&1; then
		PSQL_TIMEOUT=600 q "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c
			WHERE c.oid IN (SELECT t.oid FROM pg_class t WHERE t.relname IN ('products', 'sellers', 'categories', 'cities', 'districts') AND t.relkind = 'r'
			                UNION SELECT t.reltoastrelid FROM pg_class t WHERE t.relname IN ('products', 'sellers') AND t.reltoastrelid <> 0
			                UNION SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
			                      JOIN pg_am am ON am.oid = ic.relam
			                WHERE t.relname IN ('products', 'sellers', 'categories') AND am.amname = 'btree')" >/dev/null ||
			o_log "pg_prewarm failed; continuing"
	fi
}

# runs a command as the cluster's owner (postgres when we are root)
pg_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd / && runuser -u postgres -- "$@")
	else
		(cd / && "$@")
	fi
}
# (e): a fast restart of the running cluster, same data directory and settings
pg_restart_fast() {
	local t0 t1
	t0=$(now_s)
	pg_owner "${PG_BIN:-/usr/lib/postgresql/15/bin}/pg_ctl" restart -D "$PGDIR/data" -m fast -w -t 60 -s </dev/null >>"$PGDIR/postgresql.log" 2>&1 ||
		o_log "pg_ctl restart failed (see $PGDIR/postgresql.log)"
	t1=$(now_s)
	o_log "    PostgreSQL restarted (pg_ctl restart -m fast took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s)"
}

# "role pid" lines for the scraper's CPU accounting (rewritten on every restart)
write_pids() {
	[ -n "$TMP" ] || return 0
	{
		[ -z "$MARKETD_PID" ] || echo "marketd $MARKETD_PID"
		[ -z "$REDIS_PID" ] || echo "redis $REDIS_PID"
	} >"$TMP/pids.tmp" && mv "$TMP/pids.tmp" "$TMP/pids"
}

# --- Redis ----------------------------------------------------------------------------------
REDIS_ARGS=(--bind "$HOST" --port "$REDIS_PORT" --protected-mode yes --save '' --appendonly no
	--maxmemory 512mb --maxmemory-policy volatile-lru --daemonize no)
REDIS_ARGS_Q=$(printf '%q ' "${REDIS_ARGS[@]}")
redis_start() {
	local d=$TMP/redis i
	mkdir -p "$d"
	redis-server "${REDIS_ARGS[@]}" --dir "$d" --logfile "$d/redis.log" >/dev/null 2>&1 &
	REDIS_PID=$!
	write_pids
	for ((i = 0; i < 50; i++)); do
		[ "$(rcli PING 2>/dev/null)" = PONG ] && return 0
		kill -0 "$REDIS_PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$d/redis.log" >&2
	die "redis-server did not start on $HOST:$REDIS_PORT"
}
redis_stop() {
	b_stop_pid "$REDIS_PID" redis-server 10
	REDIS_PID=
	write_pids
}

# --- marketd ----------------------------------------------------------------------------------
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
MARKETD_ENV=(LISTEN="$HOST:$API_PORT" WORKERS="$WORKERS" ACCESS_LOG=0 DATABASE_URL="$DB_URL"
	DB_POOL_SIZE="$POOL" DB_MAX_OVERFLOW="$OVERFLOW" SHUTDOWN_TIMEOUT_MS=2000
	REDIS_URL="redis://$HOST:$REDIS_PORT" JWT_SECRET="$JWT_SECRET" HEALTH_LISTEN="$HOST:$HEALTH_PORT")
[ -z "$CACHE_TIMEOUT_MS" ] || MARKETD_ENV+=(CACHE_TIMEOUT_MS="$CACHE_TIMEOUT_MS")
MARKETD_LOG=
marketd_start() {
	MARKETD_LOG=$TMP/marketd.log
	printf '\n==== %s start\n' "$(date -u +%FT%TZ)" >>"$MARKETD_LOG"
	env "${MARKETD_ENV[@]}" "$MARKETD" serve >>"$MARKETD_LOG" 2>&1 &
	MARKETD_PID=$!
	write_pids
	if ! b_wait_http "http://$HOST:$API_PORT/readyz" 30 "$MARKETD_PID"; then
		tail -n 20 "$MARKETD_LOG" >&2
		die "marketd did not become ready in 30 s"
	fi
}
marketd_stop() {
	b_stop_pid "$MARKETD_PID" marketd 10
	MARKETD_PID=
	write_pids
}
# waits (bounded) until /readyz says the primary and the cache are up
marketd_ready() {
	local deadline=$((SECONDS + ${1:-30})) body
	while [ "$SECONDS" -lt "$deadline" ]; do
		body=$(curl -sS --max-time 2 "http://$HOST:$API_PORT/readyz" 2>/dev/null || true)
		[[ $body == *'"status":"ok"'* ]] && return 0
		sleep 0.2
	done
	o_log "marketd not fully ready after ${1:-30} s: $body"
	return 1
}

# --- the request mix ------------------------------------------------------------------------------
MIX=
make_mix() {
	local r pmin pmax pcount cities ncities c s
	r=$(q "SELECT min(id), max(id), count(*) FROM products")
	IFS='|' read -r pmin pmax pcount <<<"$r"
	[ "$pcount" = $((pmax - pmin + 1)) ] || o_log "warning: product ids $pmin..$pmax have gaps ($pcount rows): some details will be 404"
	cities=$(q "SELECT id FROM cities ORDER BY id" | paste -sd' ')
	ncities=$(wc -w <<<"$cities")
	[ "$ncities" -gt 0 ] || die "no cities in the bench database"
	MIX=$TMP/mix.txt
	WARM_PATHS=$TMP/warm.txt
	{
		echo "# kind weight lo hi path  ({} = uniform integer in [lo, hi])"
		for c in $cities; do
			for s in newest price_asc price_desc; do
				awk -v n="$ncities" -v p="/api/v1/products?city_id=$c&sort=$s" 'BEGIN { printf "list %.6f 0 0 %s\n", 55 / (n * 3), p }'
			done
		done
		echo "detail 30 $pmin $pmax /api/v1/products/{}"
		echo "cities 3.5 0 0 /api/v1/cities"
		for c in $cities; do
			awk -v n="$ncities" -v p="/api/v1/cities/$c/districts" 'BEGIN { printf "districts %.6f 0 0 %s\n", 3.5 / n, p }'
		done
		echo "popular 4 0 0 /api/v1/sellers/popular"
		for c in $cities; do
			awk -v n="$ncities" -v p="/api/v1/sellers/popular?city_id=$c" 'BEGIN { printf "popular %.6f 0 0 %s\n", 4 / n, p }'
		done
	} >"$MIX"
	awk '$1 != "#" && $1 != "detail" { print $5 }' "$MIX" >"$WARM_PATHS"
	MIX_DESC="$ncities cities x 3 sorts = $((ncities * 3)) list keys, products $pmin..$pmax, $ncities district lists, $((ncities + 1)) popular lists"
	o_log "mix: $MIX_DESC"
}

# Every list, popular and reference key fetched twice (pass 2 should hit).
warm_cache() {
	local out
	out=$(timeout 120 "$PYTHON" - "$HOST" "$API_PORT" "$WARM_PATHS" <<'PY'
import http.client, sys, collections
host, port, paths = sys.argv[1], int(sys.argv[2]), [l.strip() for l in open(sys.argv[3]) if l.strip()]
res = []
for p in range(2):
    c = http.client.HTTPConnection(host, port, timeout=10)
    cnt = collections.Counter()
    for path in paths:
        try:
            c.request("GET", path)
            r = c.getresponse(); r.read()
            cnt["%d/%s" % (r.status, r.getheader("X-Cache", "-"))] += 1
        except Exception as e:
            cnt["error"] += 1
            c.close(); c = http.client.HTTPConnection(host, port, timeout=10)
    c.close()
    res.append("pass %d: %s" % (p + 1, " ".join("%s=%d" % kv for kv in sorted(cnt.items()))))
print("%d keys; %s" % (len(paths), "; ".join(res)))
PY
	) || out="warm-up failed"
	o_log "    warm-up: $out"
	WARM_NOTE=$out
}

# --- one scenario ---------------------------------------------------------------------------------
RUN_TIMES=()
RESULT_FILES=()
run_scenario() {
	local s=$1 title desc phases=() events=() dur event_t=0 outage="" flood=0 prep
	local t_begin t_end
	t_begin=$(date +%s)
	case $s in
	a) title="warm"; desc="Cache warmed first (every list, popular and district key fetched twice); normal load."
		dur=40; phases=("40:1000:3000"); prep=warm ;;
	b) title="cold start"; desc="Redis flushed (FLUSHALL) and marketd freshly restarted just before t = 0; no warm-up; normal load."
		dur=40; phases=("40:1000:3000"); prep=cold; event_t=0 ;;
	c) title="Redis restarted at t = 15 s"; desc="Warm; at t = 15 s redis-server is stopped (SIGTERM), and started again empty on the same port ~3 s later; normal load."
		dur=60; phases=("60:1000:3000"); prep=warm; event_t=15; events=("15|redis_stop|Redis stopped" "18|redis_start|Redis started (empty)") ;;
	d) title="Redis down 30 s from t = 10 s"; desc="Warm; redis-server stopped at t = 10 s, started again (empty) at t = 40 s; normal load."
		dur=60; phases=("60:1000:3000"); prep=warm; event_t=10; outage="10 40"; events=("10|redis_stop|Redis stopped" "40|redis_start|Redis started (empty)") ;;
	e) title="PostgreSQL restarted at t = 15 s"; desc="Warm; pg_ctl restart -m fast at t = 15 s; normal load."
		dur=60; phases=("60:1000:3000"); prep=warm; event_t=15; events=("15|pg_restart|pg_ctl restart -m fast") ;;
	f) title="twice the load"; desc="marketd freshly restarted, then warmed as in (a); think 0.5–1.5 s (~2x the offered load)."
		dur=40; phases=("40:500:1500"); prep=restart_warm; event_t=0 ;;
	g) title="flood 20 s, then normal load"; desc="Warmed; think 0.1–0.3 s (~10x the offered load) for 20 s, then think 1–3 s for 20 s, same marketd process throughout."
		dur=40; phases=("20:100:300" "20:1000:3000"); prep=warm; flood=20; events=("20|none|flood ends") ;;
	esac
	# scale durations and event times
	dur=$(scaled "$dur")
	event_t=$(scaled "$event_t")
	flood=$(scaled "$flood")
	local i p ev
	for i in "${!phases[@]}"; do
		p=${phases[i]}
		phases[i]="$(scaled "${p%%:*}"):${p#*:}"
	done
	for i in "${!events[@]}"; do
		ev=${events[i]}
		events[i]="$(scaled "${ev%%|*}")|${ev#*|}"
	done
	[ -z "$outage" ] || outage="$(scaled "${outage% *}") $(scaled "${outage#* }")"

	o_log "==== scenario ($s) $title: $dur s, $CLIENTS users"
	[ -n "$REDIS_PID" ] || redis_start
	[ -n "$MARKETD_PID" ] || marketd_start
	case $prep in
	cold)
		marketd_stop
		rcli FLUSHALL >/dev/null || die "FLUSHALL failed"
		marketd_start
		marketd_ready 30 || true
		WARM_NOTE="no warm-up (FLUSHALL, then marketd restarted)"
		;;
	restart_warm)
		marketd_stop
		marketd_start
		marketd_ready 30 || true
		warm_cache
		;;
	warm)
		marketd_ready 30 || true
		warm_cache
		;;
	esac

	local dir=$TMP/$s
	mkdir -p "$dir"
	local t0file=$dir/t0 genlog=$dir/req scrape=$dir/scrape.jsonl genout=$dir/loadgen.out generr=$dir/loadgen.err
	local cmd=("$TMP/loadgen" --host "$HOST" --port "$API_PORT" --clients "$CLIENTS" --threads "$THREADS"
		--mix "$MIX" --timeout-ms "$TIMEOUT_MS" --log "$genlog" --t0-file "$t0file" --progress-s 5)
	for p in "${phases[@]}"; do cmd+=(--phase "$p"); done

	"$PYTHON" "$ANALYZE" scrape --url "http://$HOST:$API_PORT/metrics" --out "$scrape" --interval "$SCRAPE_S" \
		--psql "psql -h $HOST -p $PG_PORT -U postgres" --db "$DB_NAME" \
		--pids "$TMP/pids" --pg-pidfile "$PGDIR/data/postmaster.pid" --loadgen "$TMP/loadgen" &
	SCRAPER_PID=$!
	# /healthz every 100 ms on both listeners, from a process of its own.
	"$PYTHON" "$ANALYZE" healthprobe --url "main_port=http://$HOST:$API_PORT/healthz" \
		--url "health_listener=http://$HOST:$HEALTH_PORT/healthz" --out "$dir/health.jsonl" &
	PROBE_PID=$!
	local limit
	limit=$(awk -v d="$dur" -v t="$TIMEOUT_MS" 'BEGIN { printf "%d", d + t / 1000 + 90 }')
	timeout -k 5 "$limit" "${cmd[@]}" >"$genout" 2> >(tee "$generr" | sed -u 's/^loadgen: /[overload]     /' >&2) &
	LOADGEN_PID=$!
	local deadline=$((SECONDS + 60))
	while [ ! -s "$t0file" ]; do
		kill -0 "$LOADGEN_PID" 2>/dev/null || { wait "$LOADGEN_PID" || true; LOADGEN_PID=; die "the load generator exited before t = 0 (see $generr)"; }
		[ "$SECONDS" -lt "$deadline" ] || die "the load generator did not reach t = 0 in 60 s"
		sleep 0.1
	done
	local T0 evt action label json_events="" redis_was_down=0
	T0=$(cat "$t0file")
	for ev in "${events[@]}"; do
		IFS='|' read -r evt action label <<<"$ev"
		json_events+="${json_events:+,}{\"t\": $evt, \"label\": \"$label\"}"
		sleep_until "$(awk -v a="$T0" -v b="$evt" 'BEGIN { printf "%.3f", a + b }')"
		case $action in
		redis_stop) redis_stop; redis_was_down=1 ;;
		redis_start) redis_start; redis_was_down=0 ;;
		pg_restart) pg_restart_fast ;;
		none) ;;
		esac
		o_log "    t = ${evt} s: $label"
	done
	local rc=0
	wait "$LOADGEN_PID" || rc=$?
	LOADGEN_PID=
	stop_bg "$SCRAPER_PID"
	SCRAPER_PID=
	stop_bg "$PROBE_PID"
	PROBE_PID=
	[ "$redis_was_down" = 0 ] || redis_start
	[ "$rc" = 0 ] || o_log "the load generator exited with status $rc (see $generr)"
	kill -0 "$MARKETD_PID" 2>/dev/null || { tail -n 30 "$MARKETD_LOG" >&2; die "marketd died during scenario ($s)"; }

	local phase_json="" cmdline
	for p in "${phases[@]}"; do phase_json+="${phase_json:+,}\"$p\""; done
	cmdline="loadgen --clients $CLIENTS --threads $THREADS --timeout-ms $TIMEOUT_MS --mix mix.txt$(printf ' --phase %s' "${phases[@]}") --log req --t0-file t0 http://$HOST:$API_PORT"
	local evcmd=""
	for ev in "${events[@]}"; do
		IFS='|' read -r evt action label <<<"$ev"
		case $action in
		redis_stop) evcmd+="; at t=$evt s: kill -TERM <redis-server pid>" ;;
		redis_start) evcmd+="; at t=$evt s: redis-server $REDIS_ARGS_Q--dir <tmp>/redis" ;;
		pg_restart) evcmd+="; at t=$evt s: pg_ctl restart -D .data/bench-pg/data -m fast -w" ;;
		esac
	done
	local prepcmd
	case $prep in
	cold) prepcmd="# before: kill -TERM marketd; redis-cli FLUSHALL; start marketd (no warm-up)" ;;
	restart_warm) prepcmd="# before: kill -TERM marketd; start marketd; warm-up: GET each of $(wc -l <"$WARM_PATHS") list/popular/reference paths twice" ;;
	*) prepcmd="# before: warm-up: GET each of $(wc -l <"$WARM_PATHS") list/popular/reference paths twice" ;;
	esac
	cat >"$dir/meta.json" <<JSON
{"name": "$s", "title": "$title", "description": "$desc", "duration_s": $dur, "window_s": 5,
 "event_t": $event_t, "outage": [${outage// /, }], "flood_s": $flood, "phases": [$phase_json],
 "events": [$json_events], "t0_file": "$t0file", "timeout_ms": $TIMEOUT_MS, "clients": $CLIENTS,
 "warm": $(printf '%s' "$WARM_NOTE" | "$PYTHON" -c 'import json,sys; print(json.dumps(sys.stdin.read()))'),
 "commands": $(printf '%s\n%s%s\n' "$prepcmd" "$cmdline" "${evcmd:+$'\n'# events${evcmd}}" | "$PYTHON" -c 'import json,sys; print(json.dumps([l for l in sys.stdin.read().splitlines() if l]))')}
JSON
	[ -n "$outage" ] || sed -i 's/"outage": \[\]/"outage": null/' "$dir/meta.json"
	"$PYTHON" "$ANALYZE" window --meta "$dir/meta.json" --log "$genlog" --scrape "$scrape" --gen-out "$genout" \
		--health "$dir/health.jsonl" \
		--out "$dir/result.json" || die "analysis of scenario ($s) failed"
	RESULT_FILES+=("$dir/result.json")
	t_end=$(date +%s)
	RUN_TIMES+=("($s) $((t_end - t_begin)) s")
	o_log "    scenario ($s) took $((t_end - t_begin)) s (measured $dur s)"
	sleep 2 # let the closed connections drain
}

# --- main ---------------------------------------------------------------------------------------
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
preflight
pg_start
make_mix
redis_start
o_log "redis-server on $HOST:$REDIS_PORT (pid $REDIS_PID): $(redis-server --version | cut -d' ' -f1-3)"
marketd_start
o_log "scenarios: $SCENARIOS; $CLIENTS users; time scale $TIME_SCALE; timeout $TIMEOUT_MS ms"
SETUP_S=$(($(date +%s) - T_START))

for s in $SCENARIOS; do
	run_scenario "$s"
done
marketd_stop

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LATEST=1
if [ -n "$TAG" ]; then
	BASE=overload-$STAMP-$TAG
	LATEST=0
else
	BASE=overload-$STAMP
	if [ "$CLIENTS" != 10000 ] || [ "$TIME_SCALE" != 1 ]; then LATEST=0; fi
fi
OUT=$ROOT/bench/results
# the command that produced this: the make target (or the script) with the
# settings that differ from the defaults
CMDLINE=""
for v in SCENARIOS_GIVEN OVERLOAD_CLIENTS OVERLOAD_TIME_SCALE OVERLOAD_TIMEOUT_MS OVERLOAD_THREADS OVERLOAD_DB_POOL_SIZE \
	OVERLOAD_DB_MAX_OVERFLOW OVERLOAD_WORKERS OVERLOAD_CACHE_TIMEOUT_MS OVERLOAD_SCRAPE_S OVERLOAD_TAG MARKETD_BIN; do
	[ -z "${!v:-}" ] || CMDLINE+="${v%_GIVEN}=\"${!v}\" "
done
if [ -n "${MAKELEVEL:-}" ]; then CMDLINE+="make bench-overload"; else CMDLINE+="bash bench/overload.sh"; fi
TOTAL_S=$(($(date +%s) - T_START))
RT=$(IFS=';'; echo "${RUN_TIMES[*]}")
RUN_TIMES_TXT="set-up (PostgreSQL start, pg_prewarm, Redis, marketd) ${SETUP_S} s; ${RT//;/; }; total ${TOTAL_S} s"
export CMDLINE STAMP TREE_DESC BIN_DESC PG_SETTINGS_SHOWN MIX_DESC RUN_TIMES_TXT
O_MARKETD_ENV="env $(printf '%s ' "${MARKETD_ENV[@]}" | sed 's/JWT_SECRET=[^ ]*/JWT_SECRET=<random>/')marketd serve"
export O_REDIS="redis-server $REDIS_ARGS_Q--dir <tmp>/redis"
export O_DATA="marketd seed --scale bench: ${SEED_SUMMARY:-?} (seeded ${SEEDED_AT:-?}); products, sellers, categories and their indexes pg_prewarm'ed; request mix: $MIX_DESC"
O_MACHINE="$(nproc) vCPU ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 '^PRETTY_NAME=' /etc/os-release | cut -d'"' -f2), load average at start $LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg); open files limit $NOFILE per process (the generator and marketd each hold $CLIENTS sockets); the ${THREADS}-thread load generator runs on the same cores"
O_GNUPLOT=0
command -v gnuplot >/dev/null 2>&1 && O_GNUPLOT=1
export O_MARKETD_ENV O_MACHINE O_GNUPLOT BASE
"$PYTHON" - "$TMP/run.json" <<'PY'
import json, os, sys, time
e = os.environ
json.dump({"stamp": e["STAMP"], "base": e["BASE"], "stamp_human": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": e["CMDLINE"], "machine": e["O_MACHINE"], "tree": e["TREE_DESC"], "binary": e["BIN_DESC"],
           "marketd_env": e["O_MARKETD_ENV"], "redis_cmd": e["O_REDIS"], "pg_settings": e["PG_SETTINGS_SHOWN"],
           "data": e["O_DATA"], "run_times": e["RUN_TIMES_TXT"], "gnuplot": e["O_GNUPLOT"] == "1"},
          open(sys.argv[1], "w"), indent=1)
PY
"$PYTHON" "$ANALYZE" report --run "$TMP/run.json" --results "${RESULT_FILES[@]}" --out "$OUT/$BASE.md.tmp" \
	--json "$OUT/$BASE.json" --png-dir "$OUT" --previous "$OUT/overload-latest.json" || die "report failed"
mv "$OUT/$BASE.md.tmp" "$OUT/$BASE.md"
if [ "$LATEST" = 1 ]; then
	cp "$OUT/$BASE.md" "$OUT/overload-latest.md"
	cp "$OUT/$BASE.json" "$OUT/overload-latest.json"
fi
echo
sed -n '/^## Summary/,/^## (/p' "$OUT/$BASE.md" | sed '$d'
o_log "results: bench/results/$BASE.md$([ "$LATEST" = 0 ] || echo " (and overload-latest.md)"), $BASE.json, $BASE-<scenario>.png"
o_log "run times: $RUN_TIMES_TXT"
