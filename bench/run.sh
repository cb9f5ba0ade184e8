#!/usr/bin/env bash
# marketd benchmark (`make bench`): the product read path under wrk, divided
# by references measured in the same run on the same machine:
#   - nginx (Debian's) answering a static body of the same size, with the
#     same wrk script and the same connection count;
#   - pgbench -M prepared running the same SQL as the endpoint, with as many
#     connections as marketd's pool had open.
# Then the Redis cache (docs/cache.md, issue 4): "marketd cached" (the same
# binary with REDIS_URL, pool BENCH_CACHED_POOL) against a redis-server
# started here; its cache is flushed and warmed (bench/journey.lua warm: two
# passes over every key the measurements draw) each round, then
#   - cached product detail (a 10,000-product hot set) and cached product
#     list (the same path mix as above, and its first pages only) at each
#     connection count, divided by the same nginx rows;
#   - the 10K-user journey (bench/journey.lua: lists, details with a hot set
#     and a long tail, reference data, sellers; no writes) for
#     BENCH_JOURNEY_DURATION s at BENCH_JOURNEY_CONNS connections;
#   with the cache hit ratio of each run (marketd's /metrics deltas, and per
#   request kind from X-Cache as counted by the journey script).
# Results: Markdown tables on stdout and in bench/results/<UTC time>.md and
# bench/results/latest.md (medians of BENCH_ROUNDS rounds, and ratios).
#
# One-time setup: a dedicated PostgreSQL 15 cluster in .data/bench-pg
# (127.0.0.1:15433) seeded with `marketd seed --scale bench` (1M products,
# 10M orders); later runs reuse it. Only ports 15433 (PostgreSQL),
# 18081 (marketd), 18082 (nginx) and 18083 (Redis) are used, all on
# 127.0.0.1. Every wait is bounded and every process started here is stopped
# on exit.
#
# Environment:
#   BENCH_ROUNDS=3          rounds per measurement (median reported)
#   BENCH_DURATION=10       seconds per wrk / pgbench run
#   BENCH_CONNS="100 10000" wrk connection counts
#   BENCH_POOLS="50 8"      DB_POOL_SIZE values to run marketd with
#   BENCH_QUICK=1           smoke run: 1 round, 5 s, 100 connections, ~2 min
#   BENCH_SCALE=bench       seed scale (demo for a fast dry run; own data dir)
#   BENCH_PG_DIR            cluster dir (default .data/bench-pg[-<scale>])
#   BENCH_RESEED=1          wipe and reseed the bench database
#   BENCH_PREPARE_ONLY=1    set up / seed the database, then stop
#   BENCH_DB_MAX_OVERFLOW=0 marketd's DB_MAX_OVERFLOW (0: the pool size is
#                           exactly the connection count pgbench gets)
#   BENCH_DB_PIPELINE_DEPTH (unset: marketd's default)
#   BENCH_SEED_TIMEOUT=7200 seconds allowed for seeding + VACUUM ANALYZE
#   BENCH_KEEP_TMP=1        keep the temp dir (logs, configs) for inspection
#   BENCH_CACHED=1          0: skip the Redis part (cached reads, journey)
#   BENCH_CACHED_POOL=8     DB_POOL_SIZE of "marketd cached"
#   BENCH_CACHE_TIMEOUT_MS  marketd's CACHE_TIMEOUT_MS (unset: its default)
#   BENCH_HOT_N=10000       products in the hot set (cached detail, journey)
#   BENCH_JOURNEY_HOT_PCT=90 % of the journey's product views that go to it
#   BENCH_JOURNEY_CONNS=10000, BENCH_JOURNEY_DURATION=30 (quick: 10)
#   BENCH_TAG=name          write bench/results/<UTC>-<name>.md only (an
#                           experiment: latest.md is left alone)
#   MARKETD_BIN             the binary (default build/release/marketd)
#   BENCH_BINARY_NOTE       free text on where it came from, for the report
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# --- configuration -----------------------------------------------------------
HOST=127.0.0.1
PG_PORT=15433
API_PORT=18081
NGINX_PORT=18082
REDIS_PORT=18083
DB_NAME=marketd_bench
DB_URL="postgresql://postgres@$HOST:$PG_PORT/$DB_NAME"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
	ROUNDS=${BENCH_ROUNDS:-1}
	DURATION=${BENCH_DURATION:-5}
	CONNS=${BENCH_CONNS:-100}
	WARMUP=2
	JOURNEY_DURATION=${BENCH_JOURNEY_DURATION:-10}
else
	ROUNDS=${BENCH_ROUNDS:-3}
	DURATION=${BENCH_DURATION:-10}
	CONNS=${BENCH_CONNS:-100 10000}
	WARMUP=3
	JOURNEY_DURATION=${BENCH_JOURNEY_DURATION:-30}
fi
CACHED=${BENCH_CACHED:-1}
CACHED_POOL=${BENCH_CACHED_POOL:-8}
CACHE_TIMEOUT_MS=${BENCH_CACHE_TIMEOUT_MS:-}
HOT_N=${BENCH_HOT_N:-10000}
HOT_PCT=${BENCH_JOURNEY_HOT_PCT:-90}
JOURNEY_CONNS=${BENCH_JOURNEY_CONNS:-10000}
WARM_MAX=120 # bound (s) of one cache warm-up
TAG=${BENCH_TAG:-}
[[ $TAG =~ ^[A-Za-z0-9._-]*$ ]] || { echo "BENCH_TAG: letters, digits, . _ - only" >&2; exit 2; }
POOLS=${BENCH_POOLS:-50 8}
SCALE=${BENCH_SCALE:-bench}
if [ "$SCALE" = bench ]; then
	PGDIR=${BENCH_PG_DIR:-$ROOT/.data/bench-pg}
else
	PGDIR=${BENCH_PG_DIR:-$ROOT/.data/bench-pg-$SCALE}
fi
DB_MAX_OVERFLOW=${BENCH_DB_MAX_OVERFLOW:-0}
PIPELINE_DEPTH=${BENCH_DB_PIPELINE_DEPTH:-}
SEED_TIMEOUT=${BENCH_SEED_TIMEOUT:-7200}
MARKETD=${MARKETD_BIN:-$ROOT/build/release/marketd}
NGINX=${NGINX_BIN:-/usr/sbin/nginx}
WRK=${WRK_BIN:-wrk}
PGBENCH=${PGBENCH_BIN:-pgbench}
PSQL=${PSQL_BIN:-psql}
REDIS_SERVER=${REDIS_SERVER_BIN:-redis-server}
REDIS_CLI=${REDIS_CLI_BIN:-redis-cli}

# PostgreSQL settings. Reads: sized for 2 cores / 24 GiB, durability defaults
# kept (fsync, synchronous_commit, full_page_writes stay on). Seeding only:
# durability off, restored (and checked) before anything is measured.
# max_wal_size stays 4GB: WAL segments recycled ahead while loading would stay
# on disk for good (a read benchmark never writes far enough to reach them).
PG_BENCH_SETTINGS=(
	shared_buffers=2GB max_connections=400 effective_cache_size=16GB
	max_wal_size=4GB track_activity_query_size=4096
	fsync=on synchronous_commit=on full_page_writes=on
)
PG_SEED_SETTINGS=(
	shared_buffers=2GB max_connections=400 effective_cache_size=16GB
	track_activity_query_size=4096 maintenance_work_mem=1GB
	max_wal_size=4GB checkpoint_timeout=1h autovacuum=off
	fsync=off synchronous_commit=off full_page_writes=off
)

# --- state and cleanup ---------------------------------------------------------
TMP=
PG_STARTED=0
MARKETD_PID=
NGINX_PID=
REDIS_PID=
SAMPLER_PID=
LOCK_FD=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[ -z "$SAMPLER_PID" ] || { kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; }
	if [ -n "$MARKETD_PID" ]; then
		b_stop_pid "$MARKETD_PID" marketd 10
		MARKETD_PID=
	fi
	if [ -n "$NGINX_PID" ]; then
		b_stop_pid "$NGINX_PID" nginx 10 QUIT
		NGINX_PID=
	fi
	if [ -n "$REDIS_PID" ]; then
		b_stop_pid "$REDIS_PID" redis-server 10
		REDIS_PID=
	fi
	b_finish "$rc" "${BENCH_KEEP_TMP:-0}" b_log
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

psql_db() { PGOPTIONS='-c client_min_messages=warning' timeout "${PSQL_TIMEOUT:-120}" "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"; }
q() { psql_db -d "$DB_NAME" -tA -c "$1"; }

# --- checks ------------------------------------------------------------------------
preflight() {
	local t
	for t in "$WRK" "$PGBENCH" "$PSQL" "$NGINX" curl ss pgrep timeout awk; do
		command -v "$t" >/dev/null 2>&1 || b_die "$t not found (run scripts/deps.sh)"
	done
	if [ "$CACHED" = 1 ]; then
		for t in "$REDIS_SERVER" "$REDIS_CLI"; do
			command -v "$t" >/dev/null 2>&1 || b_die "$t not found (run scripts/deps.sh, or BENCH_CACHED=0)"
		done
	fi
	[ -x "$MARKETD" ] || b_die "$MARKETD not built (make build)"
	b_load_pg_lib "$ROOT"
	mkdir -p "$ROOT/.data" "$ROOT/bench/results"
	chmod 755 "$ROOT/.data" 2>/dev/null
	# shellcheck disable=SC2046 # the optional Redis port is one word or none
	b_claim b_die "$API_PORT" "$NGINX_PORT" $([ "$CACHED" != 1 ] || echo "$REDIS_PORT")
	b_log "open files limit: $(ulimit -n)"
	TMP=$(mktemp -d /tmp/marketd-bench.XXXXXX) || b_die "mktemp failed"
	chmod 755 "$TMP"
	# A private copy: a rebuild of the shared checkout mid-run must not mix binaries.
	cp "$MARKETD" "$TMP/marketd" || b_die "cannot copy $MARKETD"
	# What was measured: the work tree and the binary as they were now (the
	# report is written minutes later, when others may have committed).
	local dirty
	REV_START=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | awk '{ print $NF }' | grep -v '^bench/' | paste -sd' ')
	DIRTY_START=${dirty:+" (+ uncommitted changes in: $dirty)"}
	BIN_DESC="$MARKETD (sha256 $(sha256sum "$MARKETD" | cut -c1-12), built $(date -u -r "$MARKETD" +'%Y-%m-%d %H:%M UTC'))"
	CACHE_TIMEOUT_SRC=$(awk -F'"' '/"CACHE_TIMEOUT_MS"/ { print $4; exit }' "$ROOT/src/core/config.c" 2>/dev/null)
	MARKETD=$TMP/marketd
}

# --- database ------------------------------------------------------------------------
pg_start() { # settings...
	b_log "starting PostgreSQL on $HOST:$PG_PORT ($PGDIR)"
	PG_STARTED=1
	PG_START_TIMEOUT=120 pg_tmp_start "$PGDIR" "$PG_PORT" "$@" || b_die "PostgreSQL did not start (log: $PGDIR/postgresql.log)"
}

pg_restart() { # settings...
	pg_tmp_stop "$PGDIR" || b_die "could not stop PostgreSQL"
	sync
	pg_start "$@"
}

# Seeds once: the marker file records that seed + VACUUM ANALYZE finished.
MARKER=
prepare_db() {
	MARKER=$PGDIR/seeded-$SCALE.env
	local seeded=0 exists
	if [ -s "$MARKER" ] && [ "${BENCH_RESEED:-0}" != 1 ]; then
		seeded=1
	fi
	if [ "$seeded" = 1 ]; then
		pg_start "${PG_BENCH_SETTINGS[@]}"
	else
		pg_start "${PG_SEED_SETTINGS[@]}"
	fi
	exists=$(psql_db -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ||
		b_die "cannot query PostgreSQL"
	if [ "$exists" != 1 ]; then
		b_log "creating database $DB_NAME"
		psql_db -d postgres -c "CREATE DATABASE $DB_NAME" || b_die "CREATE DATABASE failed"
	fi
	b_log "marketd migrate"
	DATABASE_URL=$DB_URL timeout 600 "$MARKETD" migrate >"$TMP/migrate.log" 2>&1 ||
		{ cat "$TMP/migrate.log" >&2; b_die "marketd migrate failed"; }

	if [ "$seeded" = 1 ]; then
		local n
		n=$(q "SELECT count(*) FROM (SELECT 1 FROM products LIMIT 1) x") || b_die "cannot read products"
		if [ "$n" = 1 ]; then
			# shellcheck disable=SC1090
			. "$MARKER"
			b_log "database already seeded (scale $SCALE, ${SEED_SECONDS:-?} s on ${SEEDED_AT:-?}); not reseeding"
			return 0
		fi
		b_log "marker $MARKER present but products is empty: seeding again"
		rm -f "$MARKER"
		pg_restart "${PG_SEED_SETTINGS[@]}"
	fi

	local t0 t1 force=() log=$TMP/seed.log
	[ "${BENCH_RESEED:-0}" = 1 ] && force=(--force)
	b_log "seeding: marketd seed --scale $SCALE ${force[*]} (one-time; durability off while loading)"
	t0=$(date +%s)
	DATABASE_URL=$DB_URL timeout "$SEED_TIMEOUT" "$MARKETD" seed --scale "$SCALE" "${force[@]}" 2>&1 |
		tee "$log" >&2
	[ "${PIPESTATUS[0]}" = 0 ] || b_die "marketd seed failed (see above)"
	t1=$(date +%s)
	b_log "seed finished in $((t1 - t0)) s; VACUUM ANALYZE"
	PSQL_TIMEOUT=$SEED_TIMEOUT psql_db -d "$DB_NAME" -c "VACUUM (ANALYZE)" || b_die "VACUUM ANALYZE failed"
	PSQL_TIMEOUT=600 psql_db -d "$DB_NAME" -c "CHECKPOINT" || b_die "CHECKPOINT failed"
	local t2 size
	t2=$(date +%s)
	size=$(q "SELECT pg_size_pretty(pg_database_size(current_database()))")
	b_log "VACUUM ANALYZE took $((t2 - t1)) s; database size $size"
	{
		echo "SEED_SCALE=$SCALE"
		echo "SEEDED_AT='$(date -u +%Y-%m-%dT%H:%M:%SZ)'"
		echo "SEED_SECONDS=$((t1 - t0))"
		echo "VACUUM_SECONDS=$((t2 - t1))"
		echo "SEED_DB_SIZE='$size'"
		echo "SEED_SOURCE_SHA=$(sha256sum "$ROOT/src/cli/seed.c" 2>/dev/null | cut -c1-12)"
		echo "SEED_SUMMARY='$(grep -o 'done in.*' "$log" | tail -n1 | tr -d "'")'"
	} >"$MARKER.tmp" && mv "$MARKER.tmp" "$MARKER"
	# shellcheck disable=SC1090
	. "$MARKER"
	b_log "restarting PostgreSQL with the benchmark settings (durability back on)"
	pg_restart "${PG_BENCH_SETTINGS[@]}"
}

check_pg_settings() {
	local s
	s=$(q "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
	       WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_connections')")
	local want
	for want in fsync=on full_page_writes=on synchronous_commit=on; do
		[[ " $s " == *" $want "* ]] || b_die "durability settings not restored (want $want): $s"
	done
	PG_SETTINGS_SHOWN=$s
}

# Pre-loads the tables and indexes the read path touches into shared_buffers
# (a restarted cluster starts cold; the OS page cache usually is warm).
prewarm() {
	b_log "pg_prewarm: products, sellers, categories and their indexes"
	q "CREATE EXTENSION IF NOT EXISTS pg_prewarm" >/dev/null || { b_log "pg_prewarm unavailable; skipping"; return 0; }
	PSQL_TIMEOUT=600 q "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c
		WHERE c.oid IN (SELECT t.oid FROM pg_class t WHERE t.relname IN ('products', 'sellers', 'categories', 'cities', 'districts') AND t.relkind = 'r'
		                UNION SELECT t.reltoastrelid FROM pg_class t WHERE t.relname IN ('products', 'sellers') AND t.reltoastrelid <> 0
		                UNION SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
		                      JOIN pg_am am ON am.oid = ic.relam
		                WHERE t.relname IN ('products', 'sellers', 'categories') AND am.amname = 'btree')" >/dev/null ||
		b_log "pg_prewarm failed; continuing cold"
}

# --- marketd ---------------------------------------------------------------------------
MARKETD_ENV=()
MARKETD_CACHED_ENV=()
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') # throwaway, per run (64 hex)
start_marketd() { # pool_size [cached]
	local pool=$1 cached=${2:-} log=$TMP/marketd-pool$1${2:+-$2}.log deadline n env
	MARKETD_ENV=(LISTEN="$HOST:$API_PORT" WORKERS=2 ACCESS_LOG=0 DATABASE_URL="$DB_URL"
		DB_POOL_SIZE="$pool" DB_MAX_OVERFLOW="$DB_MAX_OVERFLOW" SHUTDOWN_TIMEOUT_MS=2000
		JWT_SECRET="$JWT_SECRET")
	[ -z "$PIPELINE_DEPTH" ] || MARKETD_ENV+=(DB_PIPELINE_DEPTH="$PIPELINE_DEPTH")
	env=("${MARKETD_ENV[@]}")
	if [ -n "$cached" ]; then
		MARKETD_CACHED_ENV=("${MARKETD_ENV[@]}" REDIS_URL="redis://$HOST:$REDIS_PORT")
		[ -z "$CACHE_TIMEOUT_MS" ] || MARKETD_CACHED_ENV+=(CACHE_TIMEOUT_MS="$CACHE_TIMEOUT_MS")
		env=("${MARKETD_CACHED_ENV[@]}")
	fi
	env "${env[@]}" "$MARKETD" serve >>"$log" 2>&1 &
	MARKETD_PID=$!
	MARKETD_LOG=$log
	if ! b_wait_http "http://$HOST:$API_PORT/readyz" 30 "$MARKETD_PID"; then
		tail -n 20 "$log" >&2
		b_die "marketd (DB_POOL_SIZE=$pool${cached:+, $cached}) did not become ready in 30 s"
	fi
	if [ -n "$cached" ]; then
		wait_cache_up 20 || b_die "marketd cached: /readyz does not report the cache up (log: $log)"
	fi
	# The pool connects asynchronously: wait (bounded) until all are open.
	deadline=$((SECONDS + 20))
	while [ "$SECONDS" -lt "$deadline" ]; do
		n=$(db_conns)
		[ "${n:-0}" -ge "$pool" ] && break
		sleep 0.2
	done
}

stop_marketd() {
	b_stop_pid "$MARKETD_PID" marketd 10
	MARKETD_PID=
}

# Times marketd's Redis client has given up on Redis so far (each logs one
# "redis <addr>: down (...)" line; it then serves BYPASS until reconnected).
MARKETD_LOG=
redis_down_count() { grep -c 'redis .*: down (' "$MARKETD_LOG" 2>/dev/null; }

# wait_cache_up TIMEOUT_S: until marketd's /readyz says "cache":"up" (after
# a run that made its Redis client give up, it reconnects with backoff).
wait_cache_up() {
	local deadline=$((SECONDS + $1))
	while [ "$SECONDS" -lt "$deadline" ]; do
		curl -sS --max-time 2 "http://$HOST:$API_PORT/readyz" 2>/dev/null | grep -q '"cache":"up"' && return 0
		sleep 0.2
	done
	return 1
}

# --- Redis -------------------------------------------------------------------------------
REDIS_ARGS=()
start_redis() {
	local d=$TMP/redis i
	mkdir -p "$d"
	REDIS_ARGS=(--bind "$HOST" --port "$REDIS_PORT" --protected-mode yes --save "''" --appendonly no
		--maxmemory 512mb --maxmemory-policy volatile-lru --daemonize no)
	"$REDIS_SERVER" --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes --save '' --appendonly no \
		--maxmemory 512mb --maxmemory-policy volatile-lru --daemonize no \
		--dir "$d" --logfile "$d/redis.log" >/dev/null 2>&1 &
	REDIS_PID=$!
	B_REDIS_PID=$REDIS_PID
	for ((i = 0; i < 50; i++)); do
		kill -0 "$REDIS_PID" 2>/dev/null || break
		[ "$(rcli PING 2>/dev/null)" = PONG ] && break
		sleep 0.2
	done
	[ "$(rcli PING 2>/dev/null)" = PONG ] || { tail -n 20 "$d/redis.log" >&2; b_die "redis-server did not start on $HOST:$REDIS_PORT"; }
	b_log "redis-server on $HOST:$REDIS_PORT (pid $REDIS_PID): $("$REDIS_SERVER" --version | cut -d' ' -f1-3)"
}
rcli() { timeout 10 "$REDIS_CLI" -h "$HOST" -p "$REDIS_PORT" "$@"; }
# redis_info FIELD...: values from INFO, space-separated
redis_info() {
	local info f
	info=$(rcli INFO 2>/dev/null | tr -d '\r')
	for f in "$@"; do
		printf '%s ' "$(printf '%s\n' "$info" | awk -F: -v k="$f" '$1 == k { print $2; exit }')"
	done
	echo
}

# marketd's own count of product responses by status (from /metrics); with
# an argument, of the routes that start with it (e.g. /api/v1/).
marketd_statuses() {
	curl -fsS --max-time 10 "http://$HOST:$API_PORT/metrics" 2>/dev/null | awk -v pre="route=\"${1:-/api/v1/products}" '
		/^marketd_http_requests_total\{/ && index($0, pre) {
			st = $0; sub(/.*status="/, "", st); sub(/".*/, "", st); c[st] += $NF
		}
		END { for (s in c) print s, c[s] }'
}
# status_delta BEFORE AFTER: "503:12,504:3" for the non-200 statuses that grew ("" if none).
status_delta() {
	awk -v before="$1" -v after="$2" 'BEGIN {
		n = split(before, b, "\n"); for (i = 1; i <= n; i++) { split(b[i], f, " "); v[f[1]] = f[2] }
		n = split(after, a, "\n"); out = ""
		for (i = 1; i <= n; i++) {
			split(a[i], f, " "); d = f[2] - v[f[1]]
			if (f[1] != "200" && f[1] != "" && d > 0) out = out (out == "" ? "" : ",") f[1] ":" d
		}
		print (out == "" ? "-" : out) }'
}

# marketd's marketd_cache_requests_total: "hit miss bypass".
cache_counts() {
	curl -fsS --max-time 10 "http://$HOST:$API_PORT/metrics" 2>/dev/null | awk '
		/^marketd_cache_requests_total\{result="hit"\}/ { h = $NF }
		/^marketd_cache_requests_total\{result="miss"\}/ { m = $NF }
		/^marketd_cache_requests_total\{result="bypass"\}/ { b = $NF }
		END { printf "%d %d %d\n", h, m, b }'
}
# cache_delta BEFORE AFTER: "hit:miss:bypass" over a run
cache_delta() {
	local h0 m0 b0 h1 m1 b1
	read -r h0 m0 b0 <<<"$1"
	read -r h1 m1 b1 <<<"$2"
	[ -n "$h0" ] && [ -n "$h1" ] || { echo -; return; }
	echo "$((h1 - h0)):$((m1 - m0)):$((b1 - b0))"
}

db_conns() { q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'marketd'"; }
pg_postmaster_pid() { head -n1 "$PGDIR/data/postmaster.pid" 2>/dev/null; }

# --- the request mix and the SQL it runs ---------------------------------------------------
# List shapes: name, weight, URL query, pgbench variables for $1..$n.
SHAPES=(
	"city_newest|40|city_id={city}&sort=newest|city lim"
	"category_newest|20|category_id={cat}&sort=newest|cat lim"
	"city_category_newest|15|city_id={city}&category_id={cat}&sort=newest|city cat lim"
	"city_price_asc|15|city_id={city}&sort=price_asc|city lim"
	"city_newest_page2|10|city_id={city}&sort=newest&cursor={cursor}|city ts cid lim"
)
NCURSORS=10

load_ranges() {
	local r
	r=$(q "SELECT min(id), max(id) FROM products") || b_die "cannot read products"
	PROD_MIN=${r%|*} PROD_MAX=${r#*|}
	r=$(q "SELECT min(id), max(id) FROM cities")
	CITY_MIN=${r%|*} CITY_MAX=${r#*|}
	r=$(q "SELECT min(id), max(id) FROM categories")
	CAT_MIN=${r%|*} CAT_MAX=${r#*|}
	[ -n "$PROD_MAX" ] && [ -n "$CITY_MAX" ] && [ -n "$CAT_MAX" ] || b_die "bench database has no products/cities/categories"
	[ $((CITY_MAX - CITY_MIN + 1)) -ge "$NCURSORS" ] || NCURSORS=$((CITY_MAX - CITY_MIN + 1))
}

# Page-1 cursors (from marketd) and their keys (from SQL: the 20th row of
# page 1, which is what the cursor encodes) for the first NCURSORS cities.
CURSORS=()
CURSOR_KEYS=()
load_cursors() {
	local k city body cur key
	for ((k = 0; k < NCURSORS; k++)); do
		city=$((CITY_MIN + k))
		body=$(curl -fsS --max-time 10 "http://$HOST:$API_PORT/api/v1/products?city_id=$city&sort=newest") ||
			b_die "product list for city $city failed"
		cur=$(printf '%s' "$body" | grep -o '"next_cursor":"[^"]*"' | cut -d'"' -f4)
		key=$(q "SELECT created_at::text || '|' || id FROM products WHERE status = 'active' AND city_id = $city
		         ORDER BY created_at DESC, id DESC OFFSET 19 LIMIT 1")
		if [ -z "$cur" ] || [ -z "$key" ]; then
			b_die "city $city has no second page (cursor '$cur', key '$key')"
		fi
		CURSORS+=("$cur")
		CURSOR_KEYS+=("$key")
	done
}

# Writes the wrk path list: 4000 requests drawn (fixed seed) from SHAPES.
make_list_paths() {
	local out=$1 s specs=""
	for s in "${SHAPES[@]}"; do specs+="$s"$'\n'; done
	printf '%s' "$specs" | awk -F'|' -v cmin="$CITY_MIN" -v cmax="$CITY_MAX" -v kmin="$CAT_MIN" -v kmax="$CAT_MAX" \
		-v ncur="$NCURSORS" -v curs="${CURSORS[*]}" '
		{ w[NR] = $2; tpl[NR] = $3; total += $2 }
		END {
			split(curs, cur, " ")
			srand(20261126)
			for (i = 0; i < 4000; i++) {
				r = rand() * total; s = 1
				while (r >= w[s]) { r -= w[s]; s++ }
				c = int(rand() * ncur)
				p = tpl[s]
				if (p ~ /\{cursor\}/) { sub(/\{city\}/, cmin + c, p); sub(/\{cursor\}/, cur[c + 1], p) }
				else sub(/\{city\}/, cmin + int(rand() * (cmax - cmin + 1)), p)
				sub(/\{cat\}/, kmin + int(rand() * (kmax - kmin + 1)), p)
				print "/api/v1/products?" p
			}
		}' >"$out"
}

# capture_sql PATH: requests PATH once from an idle marketd and prints the SQL
# its pool last ran (pg_stat_activity shows a prepared statement's text).
capture_sql() {
	curl -fsS --max-time 10 -o /dev/null "http://$HOST:$API_PORT$1" || return 1
	q "SELECT query FROM pg_stat_activity WHERE application_name = 'marketd' AND query LIKE '%FROM products p%'
	   ORDER BY query_start DESC LIMIT 1"
}

# to_pgbench SQL VAR...: replaces $1..$n by :VAR1..:VARn (fails if the count
# of parameters differs).
to_pgbench() {
	local sql=$1 i n
	shift
	n=$(printf '%s' "$sql" | grep -o '\$[0-9]\+' | tr -d '$' | sort -n | tail -n1)
	[ "${n:-0}" = "$#" ] || { b_log "SQL has ${n:-0} parameters, expected $#: $sql"; return 1; }
	local vars=("$@")
	for ((i = n; i >= 1; i--)); do
		sql=${sql//\$$i/:${vars[i - 1]}}
	done
	printf '%s;\n' "$sql"
}

# Captures the SQL of every shape and writes the pgbench scripts; sets
# PGB_DETAIL_ARGS / PGB_LIST_ARGS (the -f/-D arguments).
SQL_DOC=
PGB_DETAIL_ARGS=()
PGB_LIST_ARGS=()
make_pgbench_scripts() {
	local dir=$TMP/pgbench sql pgsql s name weight query vars path k
	mkdir -p "$dir"
	sql=$(capture_sql "/api/v1/products/$PROD_MIN") && [[ $sql == *'p.id = $1'* ]] ||
		b_die "could not capture the product detail SQL from pg_stat_activity"
	pgsql=$(to_pgbench "$sql" id) || b_die "unexpected product detail SQL"
	printf '\\set id random(%s, %s)\n%s\n' "$PROD_MIN" "$PROD_MAX" "$pgsql" >"$dir/detail.sql"
	PGB_DETAIL_ARGS=(-f "$dir/detail.sql")
	SQL_DOC+="-- product detail (pgbench: \\set id random($PROD_MIN, $PROD_MAX))"$'\n'"$sql;"$'\n'

	for s in "${SHAPES[@]}"; do
		IFS='|' read -r name weight query vars <<<"$s"
		path="/api/v1/products?$query"
		path=${path//\{city\}/$CITY_MIN}
		path=${path//\{cat\}/$CAT_MIN}
		path=${path//\{cursor\}/${CURSORS[0]}}
		sql=$(capture_sql "$path") && [ -n "$sql" ] || b_die "could not capture the SQL of $path"
		# shellcheck disable=SC2086
		pgsql=$(to_pgbench "$sql" $vars) || b_die "unexpected SQL for list shape $name"
		SQL_DOC+="-- list $name (weight $weight): $query"$'\n'"$sql;"$'\n'
		if [ "$name" = city_newest_page2 ]; then
			for ((k = 0; k < NCURSORS; k++)); do
				{
					printf '\\set city %s\n\\set cid %s\n\\set lim 21\n' "$((CITY_MIN + k))" "${CURSOR_KEYS[k]#*|}"
					printf '%s\n' "${pgsql//:ts::/:ts$k::}"
				} >"$dir/list_${name}_$k.sql"
				PGB_LIST_ARGS+=(-f "$dir/list_${name}_$k.sql@$weight" -D "ts$k=${CURSOR_KEYS[k]%|*}")
			done
		else
			{
				[[ " $vars " == *" city "* ]] && printf '\\set city random(%s, %s)\n' "$CITY_MIN" "$CITY_MAX"
				[[ " $vars " == *" cat "* ]] && printf '\\set cat random(%s, %s)\n' "$CAT_MIN" "$CAT_MAX"
				printf '\\set lim 21\n%s\n' "$pgsql"
			} >"$dir/list_$name.sql"
			# the page2 shape is split over NCURSORS scripts: scale the others
			PGB_LIST_ARGS+=(-f "$dir/list_$name.sql@$((weight * NCURSORS))")
		fi
	done
}

# Saves a marketd response of median size for each endpoint (the body nginx
# will serve), from 25 sample requests.
BODY_DETAIL_BYTES=
BODY_LIST_BYTES=
save_bodies() {
	local dir=$TMP/bodies i id code f
	mkdir -p "$dir"
	for ((i = 0; i < 25; i++)); do
		id=$(((RANDOM * 32768 + RANDOM) % (PROD_MAX - PROD_MIN + 1) + PROD_MIN))
		code=$(curl -sS --max-time 10 -o "$dir/detail.$i" -w '%{http_code}' "http://$HOST:$API_PORT/api/v1/products/$id")
		[ "$code" = 200 ] || b_die "GET /api/v1/products/$id answered $code"
	done
	sed -n '1,25p' "$TMP/list_paths.txt" | {
		i=0
		while read -r path; do
			code=$(curl -sS --max-time 10 -o "$dir/list.$i" -w '%{http_code}' "http://$HOST:$API_PORT$path")
			[ "$code" = 200 ] || { b_log "GET $path answered $code"; exit 1; }
			i=$((i + 1))
		done
	} || b_die "product list sample failed"
	for kind in detail list; do
		# the file of median size (13th of 25)
		f=$(for i in "$dir/$kind".*; do printf '%s %s\n' "$(stat -c %s "$i")" "$i"; done | sort -n | sed -n 13p | cut -d' ' -f2)
		cp "$f" "$dir/$kind.json"
	done
	BODY_DETAIL_BYTES=$(stat -c %s "$dir/detail.json")
	BODY_LIST_BYTES=$(stat -c %s "$dir/list.json")
	b_log "median body sizes: detail $BODY_DETAIL_BYTES B, list $BODY_LIST_BYTES B"
}

# --- nginx ---------------------------------------------------------------------------------
start_nginx() {
	local p=$TMP/nginx user=""
	mkdir -p "$p/html" "$p/logs" "$p/tmp"
	cp "$TMP/bodies/detail.json" "$TMP/bodies/list.json" "$p/html/"
	[ "$(id -u)" -ne 0 ] || user="user nobody nogroup;"
	cat >"$p/nginx.conf" <<CONF
# marketd bench reference: static bodies of the same size as marketd's.
$user
worker_processes 2;
worker_rlimit_nofile 20000;
pid $p/nginx.pid;
error_log $p/logs/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_requests 1000000;
    server_tokens off;
    etag off;
    sendfile on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    default_type application/json;
    client_body_temp_path $p/tmp/body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;
    server {
        listen $HOST:$NGINX_PORT backlog=4096;
        root $p/html;
        location = /api/v1/products { rewrite ^ /list.json break; }
        location /api/v1/products/ { rewrite ^ /detail.json break; }
        location / { return 404; }
    }
}
CONF
	chmod -R a+rX "$p"
	"$NGINX" -p "$p/" -c "$p/nginx.conf" -e "$p/logs/error.log" -g 'daemon off;' >"$p/logs/stdout.log" 2>&1 &
	NGINX_PID=$!
	b_wait_http "http://$HOST:$NGINX_PORT/api/v1/products/1" 10 "$NGINX_PID" ||
		{ cat "$p/logs/error.log" "$p/logs/stdout.log" >&2; b_die "nginx did not start"; }
	local d l
	d=$(curl -fsS --max-time 5 "http://$HOST:$NGINX_PORT/api/v1/products/7" | wc -c)
	l=$(curl -fsS --max-time 5 "http://$HOST:$NGINX_PORT/api/v1/products?city_id=1" | wc -c)
	[ "$d" = "$BODY_DETAIL_BYTES" ] && [ "$l" = "$BODY_LIST_BYTES" ] ||
		b_die "nginx serves $d/$l bytes, expected $BODY_DETAIL_BYTES/$BODY_LIST_BYTES"
}

# --- measuring -------------------------------------------------------------------------------
RESULTS=
RUN_NO=0
RUN_TOTAL=0
progress() {
	RUN_NO=$((RUN_NO + 1))
	b_log "[$RUN_NO/$RUN_TOTAL] round $ROUND: $*"
}

# Endpoints: detail, list (uncached marketd, nginx); cdetail (the hot set),
# clist (the list path mix), clist1 (its first pages only) for marketd cached.
script_of() {
	case $1 in
	detail | cdetail) echo "$ROOT/bench/product_detail.lua" ;;
	*) echo "$ROOT/bench/product_list.lua" ;;
	esac
}
args_of() {
	case $1 in
	detail) echo "$PROD_MIN $PROD_MAX" ;;
	cdetail) echo "$PROD_MIN $PROD_MAX $HOT_N" ;;
	clist1) echo "$TMP/list_paths_p1.txt" ;;
	*) echo "$TMP/list_paths.txt" ;;
	esac
}

warmup() { # port endpoint
	# shellcheck disable=SC2046
	timeout -k 5 $((WARMUP + 30)) "$WRK" -t2 -c100 -d"${WARMUP}s" -s "$(script_of "$2")" "http://$HOST:$1" \
		-- $(args_of "$2") >/dev/null 2>&1
}

# run_wrk LABEL ENDPOINT CONNS PORT ROOTPID: one measured wrk run; appends a
# row to $RESULTS (columns: see vals below).
run_wrk() {
	local label=$1 ep=$2 n=$3 port=$4 rootpid=$5
	local out=$TMP/wrk-$label-$ep-$n-r$ROUND.txt line req dur rps p99 p50 errs st rss conns=- cpu_srv cpu_pg cpu_redis
	local st0="" st1="" stdelta=- c0="" cdelta=- d0="" downs=-
	progress "wrk $ep -c$n against $label"
	if [ "$label" != nginx ]; then
		[[ $label != *cached* ]] || wait_cache_up 20 || b_log "marketd's cache is not up before this run"
		[[ $label != *cached* ]] || d0=$(redis_down_count)
		st0=$(marketd_statuses)
		c0=$(cache_counts)
	fi
	rm -f "$TMP/rss"
	b_rss_sampler "$TMP/rss" $((DURATION + 60)) "$rootpid" &
	SAMPLER_PID=$!
	b_measure_begin "$rootpid" "$(pg_postmaster_pid)"
	# shellcheck disable=SC2046
	timeout -k 5 $((DURATION + 60)) "$WRK" -t2 -c"$n" -d"${DURATION}s" --latency -s "$(script_of "$ep")" \
		"http://$HOST:$port" -- $(args_of "$ep") >"$out" 2>&1
	kill "$SAMPLER_PID" 2>/dev/null
	wait "$SAMPLER_PID" 2>/dev/null
	SAMPLER_PID=
	b_measure_end
	rss=$(cat "$TMP/rss" 2>/dev/null || echo 0)
	if [ "$label" != nginx ]; then
		conns=$(db_conns)
		st1=$(marketd_statuses)
		stdelta=$(status_delta "$st0" "$st1")
		cdelta=$(cache_delta "$c0" "$(cache_counts)")
		[ -z "$d0" ] || downs=$(($(redis_down_count) - d0))
	fi
	line=$(grep '^BENCH ' "$out" | tail -n1)
	if [ -z "$line" ]; then
		b_log "wrk produced no result:"
		tail -n 5 "$out" >&2
		printf '%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\t%s\t%s\t-\t%s\n' "$ROUND" "$ep" "$n" "$label" "$M_OTHERS_PCT" \
			"$stdelta" "$cdelta" "$downs" >>"$RESULTS"
		return 0
	fi
	req=$(b_kv requests "$line")
	dur=$(b_kv duration_us "$line")
	errs=$(($(b_kv connect "$line") + $(b_kv read "$line") + $(b_kv write "$line") + $(b_kv timeout "$line")))
	st=$(b_kv status "$line")
	read -r rps p99 p50 < <(awk -v r="$req" -v d="$dur" -v p99="$(b_kv p99_us "$line")" -v p50="$(b_kv p50_us "$line")" \
		'BEGIN { printf "%.0f %.2f %.2f\n", r / (d / 1e6), p99 / 1000, p50 / 1000 }')
	read -r cpu_srv cpu_pg cpu_redis < <(awk -v r="$req" -v a="$M_SRV" -v b="$M_PG" -v c="$M_REDIS" -v hz="$B_CLK_TCK" \
		'BEGIN { if (r > 0) printf "%.1f %.1f %.1f\n", a / hz * 1e6 / r, b / hz * 1e6 / r, c / hz * 1e6 / r; else print "- - -" }')
	[[ $label == *cached* ]] || cpu_redis=-
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$ep" "$n" "$label" "$rps" "$p99" \
		"$errs" "$st" "$rss" "$cpu_srv" "$cpu_pg" "$conns" "$p50" "$M_OTHERS_PCT" "$stdelta" "$cdelta" "$cpu_redis" "$downs" >>"$RESULTS"
	b_log "    $rps req/s, p50 $p50 ms, p99 $p99 ms, socket errors $errs, non-2xx $st (server: $stdelta), RSS $((rss / 1024)) MiB," \
		"db conns $conns, CPU µs/req $cpu_srv + PG $cpu_pg$([ "$cpu_redis" = - ] || echo " + Redis $cpu_redis")," \
		"cache hit:miss:bypass $cdelta$([ "$downs" = - ] || echo ", Redis given up $downs times"); others used $M_OTHERS_PCT % of the CPU"
	# let the closed connections drain before the next run
	[ "$n" -lt 1000 ] || sleep 2
}

# run_pgbench LABEL ENDPOINT CLIENTS
run_pgbench() {
	local label=$1 ep=$2 c=$3 out=$TMP/pgbench-$2-c$3-r$ROUND.txt tps lat failed cpu_pg
	local args=("${PGB_DETAIL_ARGS[@]}")
	[ "$ep" = detail ] || args=("${PGB_LIST_ARGS[@]}")
	progress "pgbench $ep -c$c"
	b_measure_begin "" "$(pg_postmaster_pid)"
	PGCONNECT_TIMEOUT=10 timeout -k 5 $((DURATION + 60)) "$PGBENCH" -n -M prepared -c "$c" -j 2 -T "$DURATION" \
		-h "$HOST" -p "$PG_PORT" -U postgres "${args[@]}" "$DB_NAME" >"$out" 2>&1
	sleep 0.5 # backends exit after pgbench; the postmaster reaps them (their CPU moves to cutime)
	b_measure_end
	read -r tps lat failed < <(b_pgbench_fields "$out")
	if [ "$tps" = - ]; then
		b_log "pgbench produced no result:"
		tail -n 5 "$out" >&2
	fi
	tps=$(awk -v t="$tps" 'BEGIN { if (t == "-") print "-"; else printf "%.0f\n", t }')
	cpu_pg=$(awk -v t="$tps" -v b="$M_PG" -v hz="$B_CLK_TCK" -v d="$DURATION" \
		'BEGIN { if (t != "-" && t > 0) printf "%.1f\n", b / hz * 1e6 / (t * d); else print "-" }')
	printf '%s\t%s\t-\t%s\t%s\t-\t0\t%s\t-\t-\t%s\t%s\t%s\t%s\t-\t-\t-\t-\n' "$ROUND" "$ep" "$label" "$tps" "$failed" "$cpu_pg" \
		"$c" "$lat" "$M_OTHERS_PCT" >>"$RESULTS"
	b_log "    $tps tps, latency average $lat ms, failed $failed, PG CPU µs/tx $cpu_pg; others used $M_OTHERS_PCT % of the CPU"
}

# --- the cache: warm-up and the 10K-user journey ------------------------------------------
# The journey's parameters (bench/journey.lua reads key=value lines).
JOURNEY_CONF=
write_journey_conf() {
	local r
	r=$(q "SELECT min(id), max(id) FROM sellers") || b_die "cannot read sellers"
	SELLER_MIN=${r%|*} SELLER_MAX=${r#*|}
	JOURNEY_CONF=$TMP/journey.conf
	cat >"$JOURNEY_CONF" <<CONF
prod_min=$PROD_MIN
prod_max=$PROD_MAX
hot_n=$HOT_N
hot_pct=$HOT_PCT
city_min=$CITY_MIN
city_max=$CITY_MAX
cat_min=$CAT_MIN
cat_max=$CAT_MAX
seller_min=$SELLER_MIN
seller_max=$SELLER_MAX
threads=2
cursors=$TMP/cursors
marker=$TMP/warm-done
CONF
}

# kind_counts FILE KIND: "hit miss bypass none non2xx" from the script's KIND lines.
kind_counts() {
	awk -v k="$2" '$1 == "KIND" && $2 == k {
		for (i = 3; i <= NF; i++) { split($i, f, "="); v[f[1]] = f[2] }
		printf "%d %d %d %d %d\n", v["hit"], v["miss"], v["bypass"], v["none"], v["non2xx"]; found = 1 }
		END { if (!found) print "0 0 0 0 0" }' "$1"
}

# Flushes Redis and walks every key the cached runs and the journey draw
# twice (journey.lua warm); ends wrk (SIGINT) once both threads are done.
# Appends "round seconds keys pass1(h:m:b) pass2(h:m:b) non2xx complete" to $WARM_RESULTS.
WARM_RESULTS=
warm_cache() {
	local out=$TMP/warm-r$ROUND.txt pid t0 secs deadline complete=no k h m b nn tot1="0:0:0" p2 non2xx=0 keys
	progress "cache: FLUSHALL, then warm-up (journey.lua warm, two passes over every key)"
	rcli FLUSHALL >/dev/null || b_die "redis FLUSHALL failed"
	rm -f "$TMP/warm-done".* "$TMP/cursors".*
	t0=$(date +%s%N)
	timeout -k 5 $((WARM_MAX + 10)) "$WRK" -t2 -c100 -d"${WARM_MAX}s" -s "$ROOT/bench/journey.lua" \
		"http://$HOST:$API_PORT" -- warm "$JOURNEY_CONF" >"$out" 2>&1 &
	pid=$!
	deadline=$((SECONDS + WARM_MAX + 20))
	while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
		if [ -e "$TMP/warm-done.1" ] && [ -e "$TMP/warm-done.2" ]; then
			complete=yes
			kill -INT "$pid" 2>/dev/null
			break
		fi
		sleep 0.1
	done
	wait "$pid" 2>/dev/null
	secs=$(awk -v t="$(($(date +%s%N) - t0))" 'BEGIN { printf "%.1f", t / 1e9 }')
	keys=$(cat "$TMP/warm-done".* 2>/dev/null | awk '{ s += $1 / 2 } END { print s + 0 }')
	for k in L1 DH SD RF PS; do
		read -r h m b nn non <<<"$(kind_counts "$out" "$k")"
		tot1=$(awk -v t="$tot1" -v h="$h" -v m="$m" -v b="$b" 'BEGIN { split(t, f, ":"); print f[1] + h ":" f[2] + m ":" f[3] + b }')
		non2xx=$((non2xx + non))
	done
	read -r h m b nn non <<<"$(kind_counts "$out" P2)"
	p2="$h:$m:$b"
	non2xx=$((non2xx + non))
	cat "$TMP/cursors".* >"$TMP/cursors" 2>/dev/null
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$secs" "$keys" "$tot1" "$p2" "$non2xx" "$complete" \
		"$(wc -l <"$TMP/cursors")" >>"$WARM_RESULTS"
	b_log "    warm-up $secs s ($([ "$complete" = yes ] && echo complete || echo INCOMPLETE)): $keys keys;" \
		"pass 1 hit:miss:bypass $tot1, pass 2 $p2, non-2xx $non2xx; $(wc -l <"$TMP/cursors") first pages with a next page"
	[ "$complete" = yes ] || b_log "    warm-up did not finish in ${WARM_MAX} s: the cached runs start partly cold"
}

# run_journey: the 10K-user journey against marketd cached; appends a row to
# $JOURNEY_RESULTS (round, req/s, p50, p95, p99, max ms, socket errors,
# non-2xx, peak RSS KiB, CPU µs/req server, PG, Redis, others' CPU %,
# marketd's non-200 statuses (all /api/v1 routes), cache hit:miss:bypass,
# times marketd gave up on Redis).
JOURNEY_RESULTS=
run_journey() {
	local out=$TMP/wrk-journey-r$ROUND.txt line req dur rps p50 p95 p99 mx errs st rss cpu st0 st1 stdelta c0 cdelta d0 downs
	progress "journey: wrk -c$JOURNEY_CONNS -d${JOURNEY_DURATION}s against marketd cached (pool $CACHED_POOL)"
	wait_cache_up 20 || b_log "marketd's cache is not up before the journey"
	d0=$(redis_down_count)
	st0=$(marketd_statuses /api/v1/)
	c0=$(cache_counts)
	rm -f "$TMP/rss"
	b_rss_sampler "$TMP/rss" $((JOURNEY_DURATION + 60)) "$MARKETD_PID" &
	SAMPLER_PID=$!
	b_measure_begin "$MARKETD_PID" "$(pg_postmaster_pid)"
	timeout -k 5 $((JOURNEY_DURATION + 60)) "$WRK" -t2 -c"$JOURNEY_CONNS" -d"${JOURNEY_DURATION}s" --latency \
		-s "$ROOT/bench/journey.lua" "http://$HOST:$API_PORT" -- run "$JOURNEY_CONF" >"$out" 2>&1
	kill "$SAMPLER_PID" 2>/dev/null
	wait "$SAMPLER_PID" 2>/dev/null
	SAMPLER_PID=
	b_measure_end
	rss=$(cat "$TMP/rss" 2>/dev/null || echo 0)
	st1=$(marketd_statuses /api/v1/)
	stdelta=$(status_delta "$st0" "$st1")
	cdelta=$(cache_delta "$c0" "$(cache_counts)")
	downs=$(($(redis_down_count) - d0))
	line=$(grep '^BENCH ' "$out" | tail -n1)
	if [ -z "$line" ]; then
		b_log "wrk produced no result:"
		tail -n 5 "$out" >&2
		printf '%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\t%s\t%s\t%s\n' "$ROUND" "$M_OTHERS_PCT" "$stdelta" "$cdelta" "$downs" >>"$JOURNEY_RESULTS"
		return 0
	fi
	req=$(b_kv requests "$line")
	dur=$(b_kv duration_us "$line")
	errs=$(($(b_kv connect "$line") + $(b_kv read "$line") + $(b_kv write "$line") + $(b_kv timeout "$line")))
	st=$(b_kv status "$line")
	read -r rps p50 p95 p99 mx < <(awk -v r="$req" -v d="$dur" -v a="$(b_kv p50_us "$line")" -v b="$(b_kv p95_us "$line")" \
		-v c="$(b_kv p99_us "$line")" -v m="$(b_kv max_us "$line")" \
		'BEGIN { printf "%.0f %.2f %.2f %.2f %.2f\n", r / (d / 1e6), a / 1000, b / 1000, c / 1000, m / 1000 }')
	cpu=$(awk -v r="$req" -v a="$M_SRV" -v b="$M_PG" -v c="$M_REDIS" -v hz="$B_CLK_TCK" \
		'BEGIN { if (r > 0) printf "%.1f\t%.1f\t%.1f\n", a / hz * 1e6 / r, b / hz * 1e6 / r, c / hz * 1e6 / r; else print "-\t-\t-" }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$rps" "$p50" "$p95" "$p99" "$mx" "$errs" "$st" \
		"$rss" "$cpu" "$M_OTHERS_PCT" "$stdelta" "$cdelta" "$downs" >>"$JOURNEY_RESULTS"
	b_log "    $rps req/s, p50 $p50 ms, p95 $p95 ms, p99 $p99 ms, socket errors $errs, non-2xx $st (server: $stdelta)," \
		"RSS $((rss / 1024)) MiB, CPU µs/req $(echo "$cpu" | tr '\t' '/') (server/PG/Redis), cache hit:miss:bypass $cdelta," \
		"Redis given up $downs times;" \
		"others used $M_OTHERS_PCT % of the CPU"
	sleep 2
}

# --- report ----------------------------------------------------------------------------------
# vals EP CONNS LABEL COL: that column over the rounds (RESULTS columns:
# 1 round, 2 endpoint, 3 conns, 4 label, 5 req/s, 6 p99 ms, 7 socket errors,
# 8 non-2xx (pgbench: failed), 9 peak RSS KiB, 10 server CPU µs/req,
# 11 PostgreSQL CPU µs/req, 12 DB connections, 13 p50 ms (pgbench: avg ms),
# 14 % of the machine's CPU used by processes not ours during the run,
# 15 marketd's non-200 product responses by status, from /metrics: "503:12,504:3",
# 16 marketd's marketd_cache_requests_total delta "hit:miss:bypass", 17 Redis CPU µs/req,
# 18 times marketd's Redis client gave up on Redis during the run).
vals() { awk -F'\t' -v e="$1" -v n="$2" -v l="$3" -v c="$4" '$2 == e && $3 == n && $4 == l { print $c }' "$RESULTS"; }
med() { # shellcheck disable=SC2046
	b_median $(vals "$@")
}
sum_col() { vals "$@" | awk '$1 != "-" { s += $1; k++ } END { print (k ? s : "-") }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "—"; else printf "%.2f\n", a / b }'; }
fmt_k() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "—"; else if (v >= 1000) printf "%.1fk\n", v / 1000; else printf "%.0f\n", v }'; }
fmt_int() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "—"; else printf "%.0f\n", v }'; }
fmt_mib() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "" || v == 0) print "—"; else printf "%.1f MiB\n", v / 1024 }'; }
# non2xx EP CONNS LABEL: wrk's non-2xx total, plus marketd's own breakdown.
non2xx() {
	local w srv
	w=$(sum_col "$@" 8)
	srv=$(vals "$@" 15 | tr ',' '\n' | awk -F: '$1 != "-" && $1 != "" { c[$1] += $2 }
		END { o = ""; for (s in c) o = o (o == "" ? "" : ", ") s ": " c[s]; print o }')
	if [ -n "$srv" ]; then echo "$w (server: $srv)"; else echo "$w"; fi
}
per_round() { vals "$@" | while read -r v; do fmt_k "$v"; done | paste -sd/ | sed 's|/| / |g'; }

table_for() { # endpoint
	local ep=$1 n pool lab rps p99 nginx_rps pgb_rps cpu cpu2 conns
	echo "| conns | server | req/s (median) | req/s per round | p99 (median) | ÷ nginx | ÷ pgbench | socket errors* | non-2xx* | peak RSS | CPU µs/req: server + PostgreSQL | DB conns | others' CPU** |"
	echo "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for n in $CONNS; do
		nginx_rps=$(med "$ep" "$n" nginx 5)
		for lab in nginx $(for pool in $POOLS; do echo "marketd-p$pool"; done); do
			rps=$(med "$ep" "$n" "$lab" 5)
			p99=$(med "$ep" "$n" "$lab" 6)
			cpu=$(med "$ep" "$n" "$lab" 10)
			cpu2=$(med "$ep" "$n" "$lab" 11)
			if [ "$lab" = nginx ]; then
				printf '| %s | nginx (static body) | %s | %s | %s ms | 1.00 | — | %s | %s | %s | %s | — | %s %% |\n' \
					"$n" "$(fmt_int "$rps")" "$(per_round "$ep" "$n" "$lab" 5)" "$p99" "$(sum_col "$ep" "$n" "$lab" 7)" \
					"$(sum_col "$ep" "$n" "$lab" 8)" "$(fmt_mib "$(med "$ep" "$n" "$lab" 9)")" "$cpu" "$(med "$ep" "$n" "$lab" 14)"
			else
				pool=${lab#marketd-p}
				pgb_rps=$(med "$ep" - "pgbench-p$pool" 5)
				conns=$(med "$ep" "$n" "$lab" 12)
				printf '| %s | **marketd** pool %s | **%s** | %s | %s ms | **%s** | **%s** | %s | %s | %s | %s + %s | %s | %s %% |\n' \
					"$n" "$pool" "$(fmt_int "$rps")" "$(per_round "$ep" "$n" "$lab" 5)" "$p99" "$(ratio "$rps" "$nginx_rps")" \
					"$(ratio "$rps" "$pgb_rps")" "$(sum_col "$ep" "$n" "$lab" 7)" "$(non2xx "$ep" "$n" "$lab")" \
					"$(fmt_mib "$(med "$ep" "$n" "$lab" 9)")" "$cpu" "$cpu2" "$(fmt_int "$conns")" "$(med "$ep" "$n" "$lab" 14)"
			fi
		done
	done
	for pool in $POOLS; do
		lab=pgbench-p$pool
		conns=$(med "$ep" - "$lab" 12)
		printf '| — | pgbench -M prepared -c%s -j2 (same SQL) | %s | %s | avg %s ms | — | 1.00 | — | %s failed | — | 0 + %s | %s | %s %% |\n' \
			"$(fmt_int "$conns")" "$(fmt_int "$(med "$ep" - "$lab" 5)")" "$(per_round "$ep" - "$lab" 5)" \
			"$(med "$ep" - "$lab" 13)" "$(sum_col "$ep" - "$lab" 8)" "$(med "$ep" - "$lab" 11)" "$(fmt_int "$conns")" \
			"$(med "$ep" - "$lab" 14)"
	done
}

# hit_ratio "h:m:b"...: hits ÷ (hits + misses + bypasses) over all the
# arguments, as "99.9 %" ("—" if none).
hit_ratio() {
	printf '%s\n' "$@" | awk -F: 'NF == 3 { h += $1; t += $1 + $2 + $3 }
		END { if (t > 0) printf "%.1f %%\n", 100 * h / t; else print "—" }'
}
hits_per_round() { vals "$@" 16 | while read -r v; do hit_ratio "$v"; done | paste -sd/ | sed 's|/| / |g; s/ %//g'; }
verdict() { awk -v v="$1" -v op="$2" -v bar="$3" 'BEGIN {
	if (v == "—" || v == "-" || v == "") { print "no result"; exit }
	sub(/ %$/, "", v); ok = (op == ">=" ? v + 0 >= bar : op == ">" ? v + 0 > bar : v + 0 < bar)
	print (ok ? "met" : "**not met**") }'; }

table_cached() {
	local n ep lab=marketd-cached-p$CACHED_POOL ref what rps nginx_rps unc_rps
	echo "| conns | workload | server | req/s (median) | req/s per round | p99 (median) | ÷ nginx | ÷ uncached pool $CACHED_POOL | cache hit ratio*** (per round) | Redis given up† | socket errors* | non-2xx* | peak RSS | CPU µs/req: server + PostgreSQL + Redis | others' CPU** |"
	echo "|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for n in $CONNS; do
		for ep in cdetail clist clist1; do
			case $ep in
			cdetail) ref=detail what="product detail, $(fmt_int "$HOT_N")-product hot set" ;;
			clist) ref=list what="product list, the path mix above (10 % cursor pages)" ;;
			clist1) ref=list what="product list, first pages of the mix only" ;;
			esac
			nginx_rps=$(med "$ref" "$n" nginx 5)
			if [ "$ep" != clist1 ]; then
				printf '| %s | %s (%s B) | nginx (static body) | %s | %s | %s ms | 1.00 | — | — | — | %s | %s | %s | %s | %s %% |\n' \
					"$n" "${what%%,*}" "$([ "$ref" = detail ] && echo "$BODY_DETAIL_BYTES" || echo "$BODY_LIST_BYTES")" \
					"$(fmt_int "$nginx_rps")" "$(per_round "$ref" "$n" nginx 5)" "$(med "$ref" "$n" nginx 6)" \
					"$(sum_col "$ref" "$n" nginx 7)" "$(sum_col "$ref" "$n" nginx 8)" "$(fmt_mib "$(med "$ref" "$n" nginx 9)")" \
					"$(med "$ref" "$n" nginx 10)" "$(med "$ref" "$n" nginx 14)"
			fi
			rps=$(med "$ep" "$n" "$lab" 5)
			unc_rps=$(med "$ref" "$n" "marketd-p$CACHED_POOL" 5)
			# shellcheck disable=SC2046
			printf '| %s | %s | **marketd cached** pool %s | **%s** | %s | %s ms | **%s** | %s | %s (%s) | %s | %s | %s | %s | %s + %s + %s | %s %% |\n' \
				"$n" "$what" "$CACHED_POOL" "$(fmt_int "$rps")" "$(per_round "$ep" "$n" "$lab" 5)" "$(med "$ep" "$n" "$lab" 6)" \
				"$(ratio "$rps" "$nginx_rps")" "$(ratio "$rps" "$unc_rps")" "$(hit_ratio $(vals "$ep" "$n" "$lab" 16))" \
				"$(hits_per_round "$ep" "$n" "$lab")" "$(vals "$ep" "$n" "$lab" 18 | paste -sd/ | sed 's|/| / |g')" \
				"$(sum_col "$ep" "$n" "$lab" 7)" "$(non2xx "$ep" "$n" "$lab")" \
				"$(fmt_mib "$(med "$ep" "$n" "$lab" 9)")" "$(med "$ep" "$n" "$lab" 10)" "$(med "$ep" "$n" "$lab" 11)" \
				"$(med "$ep" "$n" "$lab" 17)" "$(med "$ep" "$n" "$lab" 14)"
		done
	done
}

# The issue-4 throughput bar: cached product list >= 50 % of nginx at 100 and 10,000 connections.
bar_cached_list() {
	local n ep lab=marketd-cached-p$CACHED_POOL r out="" v
	for ep in clist1 clist; do
		out+="$([ "$ep" = clist1 ] && echo "first pages only" || echo "path mix with cursor pages"):"
		for n in $CONNS; do
			r=$(ratio "$(med "$ep" "$n" "$lab" 5)" "$(med list "$n" nginx 5)")
			v=$(verdict "$r" ">=" 0.5)
			out+=" $r at $n connections ($v),"
		done
		out="${out%,}; "
	done
	echo "${out%; }"
}

# jvals COL: that column of the journey rows; jmed COL: its median.
jvals() { awk -F'\t' -v c="$1" '{ print $c }' "$JOURNEY_RESULTS"; }
jmed() { # shellcheck disable=SC2046
	b_median $(jvals "$1")
}
# journey_kind KIND...: "hit miss bypass none non2xx" summed over the rounds and kinds
journey_kind() {
	local f k
	for f in "$TMP"/wrk-journey-r*.txt; do
		[ -e "$f" ] || continue
		for k in "$@"; do kind_counts "$f" "$k"; done
	done | awk '{ for (i = 1; i <= 5; i++) v[i] += $i } END { printf "%d %d %d %d %d\n", v[1], v[2], v[3], v[4], v[5] }'
}
# kind_ratio "h m b none non2xx": hits ÷ all answers of the kind
kind_ratio() { awk -v s="$1" 'BEGIN { split(s, v, " "); t = v[1] + v[2] + v[3] + v[4]; if (t > 0) printf "%.1f %%\n", 100 * v[1] / t; else print "—" }'; }
kind_per_round() {
	local f
	for f in "$TMP"/wrk-journey-r*.txt; do
		[ -e "$f" ] || continue
		kind_ratio "$(for k in "$@"; do kind_counts "$f" "$k"; done |
			awk '{ for (i = 1; i <= 5; i++) v[i] += $i } END { printf "%d %d %d %d %d\n", v[1], v[2], v[3], v[4], v[5] }')"
	done | paste -sd/ | sed 's|/| / |g; s/ %//g'
}

table_journey() {
	local r
	echo "| round | req/s | p50 | p95 | p99 | max | socket errors* | non-2xx* (server's non-200) | peak RSS | CPU µs/req: server + PostgreSQL + Redis | cache hit ratio*** (hit:miss:bypass) | Redis given up† | others' CPU** |"
	echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	while IFS=$'\t' read -r r rps p50 p95 p99 mx errs st rss c1 c2 c3 oth stdelta cdelta downs; do
		printf '| %s | %s | %s ms | %s ms | %s ms | %s ms | %s | %s (%s) | %s | %s + %s + %s | %s (%s) | %s | %s %% |\n' \
			"$r" "$(fmt_int "$rps")" "$p50" "$p95" "$p99" "$mx" "$errs" "$st" "$stdelta" "$(fmt_mib "$rss")" "$c1" "$c2" "$c3" \
			"$(hit_ratio "$cdelta")" "$cdelta" "$downs" "$oth"
	done <"$JOURNEY_RESULTS"
	# shellcheck disable=SC2046
	printf '| **median** | **%s** | %s ms | **%s ms** | **%s ms** | %s ms | %s (total) | %s (total) | %s | %s + %s + %s | %s (all rounds) | %s (total) | %s %% |\n' \
		"$(fmt_int "$(jmed 2)")" "$(jmed 3)" "$(jmed 4)" "$(jmed 5)" "$(jmed 6)" \
		"$(jvals 7 | awk '$1 != "-" { s += $1 } END { print s + 0 }')" "$(jvals 8 | awk '$1 != "-" { s += $1 } END { print s + 0 }')" \
		"$(fmt_mib "$(jmed 9)")" "$(jmed 10)" "$(jmed 11)" "$(jmed 12)" "$(hit_ratio $(jvals 15))" \
		"$(jvals 16 | awk '$1 != "-" { s += $1 } END { print s + 0 }')" "$(jmed 13)"
}

table_journey_kinds() {
	local total row label kinds c
	total=$(journey_kind L1 L2 DH DT RF SD PS | awk '{ print $1 + $2 + $3 + $4 }')
	echo "| request kind (share of the mix) | answers | share | HIT | MISS | BYPASS | no X-Cache | non-2xx | hit ratio (per round) |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for row in "L1|product list, first pages (45 % × 90 %)" "L2|product list, cursor pages (45 % × 10 %; never cached: docs/cache.md)" \
		"L1 L2|**product lists, all**" \
		"DH|product detail, hot set of $(fmt_int "$HOT_N") (35 % × $HOT_PCT %)" "DT|product detail, long tail: any product (35 % × $((100 - HOT_PCT)) %)" \
		"DH DT|**product details, all**" \
		"RF|reference: cities, categories, districts (10 %)" "SD|seller detail (5 %)" "PS|popular sellers (5 %)" \
		"L1 L2 DH DT RF SD PS|**all**"; do
		kinds=${row%%|*} label=${row#*|}
		# shellcheck disable=SC2086
		c=$(journey_kind $kinds)
		read -r h m b nn non <<<"$c"
		# shellcheck disable=SC2086
		printf '| %s | %s | %s | %s | %s | %s | %s | %s | **%s** (%s) |\n' "$label" "$((h + m + b + nn))" \
			"$(awk -v a="$((h + m + b + nn))" -v t="$total" 'BEGIN { if (t > 0) printf "%.1f %%", 100 * a / t; else print "—" }')" \
			"$h" "$m" "$b" "$nn" "$non" "$(kind_ratio "$c")" "$(kind_per_round $kinds)"
	done
}

write_report() { # file
	local f=$1 rev pgver
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	pgver=$(q "SHOW server_version")
	{
		echo "# marketd benchmark — $(date -u +'%Y-%m-%d %H:%M UTC')"
		echo
		echo "\`make bench\` (bench/run.sh)$([ "$QUICK" = 1 ] && echo ', **BENCH_QUICK=1 smoke run**'): $ROUNDS round(s) × ${DURATION} s per measurement, medians over rounds;"
		echo "ratios are marketd's median req/s divided by the reference's median measured in the same run."
		echo "Work tree at the start: commit $REV_START${DIRTY_START}$([ "$rev" = "$REV_START" ] || echo "; HEAD moved to $rev during the run")."
		echo "Binary: $BIN_DESC${BENCH_BINARY_NOTE:+; $BENCH_BINARY_NOTE}."
		echo "Total wall time $(( ($(date +%s) - T_START) / 60 )) min $(( ($(date +%s) - T_START) % 60 )) s (seeding excluded)."
		echo
		echo "## Product detail — \`GET /api/v1/products/{id}\`, id uniformly random in $PROD_MIN..$PROD_MAX"
		echo
		echo "marketd body: median $BODY_DETAIL_BYTES bytes (nginx serves a saved response of that size). pgbench: the same SELECT (product ⋈ seller by id)."
		echo
		table_for detail
		echo
		echo "## Product list — \`GET /api/v1/products?…\` (20 per page, LIMIT 21), weighted mix"
		echo
		echo "Mix (wrk cycles through 4,000 pre-drawn paths; pgbench runs the same statements with the same weights and random parameters):"
		local s name weight query vars
		for s in "${SHAPES[@]}"; do
			IFS='|' read -r name weight query vars <<<"$s"
			echo "$weight % \`$query\`" | sed 's/{cursor}/<page-1 cursor of one of the first '"$NCURSORS"' cities>/' | sed 's/^/- /'
		done
		echo
		echo "marketd body: median $BODY_LIST_BYTES bytes (nginx serves a saved response of that size)."
		echo
		table_for list
		echo
		if [ "$CACHED" = 1 ]; then
			local jl wl
			echo "## Cached reads — marketd with Redis (\`REDIS_URL\`), pool $CACHED_POOL"
			echo
			echo "The same binary with \`REDIS_URL=redis://$HOST:$REDIS_PORT\`$([ -z "$CACHE_TIMEOUT_MS" ] || echo " and \`CACHE_TIMEOUT_MS=$CACHE_TIMEOUT_MS\`") (otherwise marketd's defaults:"
			echo "\`CACHE_TIMEOUT_MS\` $([ -n "$CACHE_TIMEOUT_MS" ] && echo "$CACHE_TIMEOUT_MS ms" || echo "default — ${CACHE_TIMEOUT_SRC:-?} ms in src/core/config.c at the start"), TTL 300 s for products); redis-server $("$REDIS_SERVER" --version | awk '{ print $3 }' | sed 's/v=//') on $HOST:$REDIS_PORT,"
			echo "\`--save '' --appendonly no --maxmemory 512mb --maxmemory-policy volatile-lru\`, started by this script."
			echo "Each round: marketd cached started, Redis \`FLUSHALL\`, then warmed by \`bench/journey.lua warm\` (below), then the runs."
			echo "Detail ids are uniformly random among the $(fmt_int "$HOT_N") products of the journey's hot set (a prime-stride spread over $PROD_MIN..$PROD_MAX);"
			echo "the list runs use the 4,000 paths above (its 10 % cursor pages are never cached, by design) and, separately, only its first pages."
			echo "÷ nginx divides by the nginx rows of the tables above (same body size, same connections, same run); ÷ uncached by marketd pool $CACHED_POOL without Redis"
			echo "(whose detail ids were uniform over the whole catalogue)."
			echo
			table_cached
			echo
			echo "Issue 4 bar, cached product list ≥ 0.50 × nginx at ${CONNS// / and } connections in the same run: $(bar_cached_list)."
			echo
			wl=$(awk -F'\t' '{ printf "%s%s s (%s)", (NR > 1 ? ", " : ""), $2, ($7 == "yes" ? "complete" : "INCOMPLETE") }' "$WARM_RESULTS")
			echo "Warm-up per round: two passes over $(awk -F'\t' 'NR == 1 { print $3 }' "$WARM_RESULTS") keys (every first-page list the journey can draw — a superset of the list mix's first pages —,"
			echo "the $(fmt_int "$HOT_N") hot products, all $(fmt_int "$((SELLER_MAX - SELLER_MIN + 1))") sellers, reference and popular lists), -c100: $wl."
			echo "A product's or seller's first request only creates its version tag in Redis (BYPASS), the second fills the entry (MISS):"
			echo "pass 1 hit:miss:bypass $(awk -F'\t' '{ printf "%s%s", (NR > 1 ? " / " : ""), $4 }' "$WARM_RESULTS"), pass 2 $(awk -F'\t' '{ printf "%s%s", (NR > 1 ? " / " : ""), $5 }' "$WARM_RESULTS");"
			echo "non-2xx $(awk -F'\t' '{ printf "%s%s", (NR > 1 ? " / " : ""), $6 }' "$WARM_RESULTS")."
			echo "Redis after the last round: used_memory $(echo "$REDIS_END" | awk '{ print $1 }') (peak $(echo "$REDIS_END" | awk '{ print $2 }')), $REDIS_KEYS keys, evicted_keys $(echo "$REDIS_END" | awk '{ print $3 }'), RSS $(fmt_mib "$REDIS_RSS")."
			echo
			echo "## 10K-user journey — \`bench/journey.lua\`, $(fmt_int "$JOURNEY_CONNS") connections × ${JOURNEY_DURATION} s, marketd cached (pool $CACHED_POOL)"
			echo
			echo "Each connection is a user who browses; every request is drawn independently, without think time (a closed loop: far heavier than"
			echo "$(fmt_int "$JOURNEY_CONNS") people). 45 % product list — 90 % first pages (city newest 30, city price ↑ 15, city price ↓ 5, category newest 20,"
			echo "city + category newest 20, all newest 10; cities and categories uniform), 10 % the second page of one of them (its cursor harvested"
			echo "during the warm-up); 35 % product detail — $HOT_PCT % one of the hot set of $(fmt_int "$HOT_N") products (uniform within), $((100 - HOT_PCT)) % any of the"
			echo "$(fmt_int "$((PROD_MAX - PROD_MIN + 1))") products (the long tail); 10 % reference data (cities 30 %, categories 30 %, a city's districts 40 %);"
			echo "5 % seller detail (uniform over all sellers); 5 % popular sellers (all / one city). **No orders or other writes**: a read-only journey,"
			echo "so no invalidations happen during it. Latency is wrk's (request sent → response read, 2 s timeout)."
			echo
			table_journey
			echo
			jl="p95 $(jmed 4) ms ($(verdict "$(jmed 4)" "<" 500)), p99 $(jmed 5) ms ($(verdict "$(jmed 5)" "<" 1000))"
			echo "S18 bound (p95 < 500 ms, p99 < 1 s), on the medians: $jl."
			echo
			echo "Cache results by request kind: X-Cache of every answer, counted by the script per kind (each request carries"
			echo "\`X-Request-Id: jrn-<kind>\`, which marketd echoes), all rounds summed. Hit ratio = HIT ÷ all answers of the kind."
			echo
			table_journey_kinds
			echo
			local lr dr l1 dh
			lr=$(kind_ratio "$(journey_kind L1 L2)") dr=$(kind_ratio "$(journey_kind DH DT)")
			l1=$(kind_ratio "$(journey_kind L1)") dh=$(kind_ratio "$(journey_kind DH)")
			echo "Issue 4 bar, journey hit ratio > 95 % for lists and details: lists $lr ($(verdict "$lr" ">" 95)), details $dr ($(verdict "$dr" ">" 95))."
			echo "Of the requests the cache is built to serve: first-page lists $l1, hot-set details $dh. The totals also count cursor pages,"
			echo "never cached (docs/cache.md), and long-tail products, seen too rarely to be cached (a product's first request only creates its tag)."
			echo
		fi
		echo "\\* socket errors (connect + read + write + timeout, wrk's 2 s timeout) and non-2xx responses are totals over all rounds."
		echo "Peak RSS: VmRSS of marketd (of nginx master + workers) sampled every 0.5 s during the run."
		echo "CPU µs/req: utime+stime of the server process (all threads) and of the PostgreSQL cluster (postmaster, its"
		echo "children, reaped backends) over the run, divided by the requests completed. wrk shares the same 2 cores."
		echo "\*\* others' CPU: share of the machine's CPU (all $(nproc) cores, /proc/stat, steal included) used during the run by"
		echo "processes this benchmark did not start — other work on the box. Above a few % the run is disturbed: compare rounds."
		if [ "$CACHED" = 1 ]; then
			echo "\*\*\* cache hit ratio: marketd's own \`marketd_cache_requests_total\` over the run (/metrics before and after): hit ÷ (hit + miss + bypass)."
			echo "† Redis given up: times marketd's Redis client declared Redis down during the run (its log's \"redis …: down (…)\" lines; per round)."
			echo "Until it has reconnected (with backoff), every cacheable request is a BYPASS served from PostgreSQL."
		fi
		echo
		echo "## Machine and software"
		echo
		echo "- $(nproc) CPUs ($(lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }')), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r), Debian $(cat /etc/debian_version 2>/dev/null)"
		echo "- load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the box adds noise)"
		echo "- PostgreSQL $pgver; $("$NGINX" -v 2>&1 | sed 's/.*: //'); $("$WRK" -v 2>&1 | head -n1 | cut -d' ' -f1-2); $("$PGBENCH" --version); $("$MARKETD" version)$(
			[ "$CACHED" != 1 ] || echo "; Redis $("$REDIS_SERVER" --version | awk '{ print $3 }' | sed 's/v=//')")"
		echo "- ulimit -n $(ulimit -n); net.core.somaxconn $(cat /proc/sys/net/core/somaxconn)"
		echo
		echo "## Database"
		echo
		echo "- dedicated cluster .data/bench-pg on $HOST:$PG_PORT, settings: $PG_SETTINGS_SHOWN (shared_buffers in 8 kB pages), effective_cache_size=16GB, track_activity_query_size=4096; other settings default"
		echo "- \`marketd seed --scale $SCALE\`: ${SEED_SUMMARY:-?}"
		echo "- seeding took ${SEED_SECONDS:-?} s + VACUUM ANALYZE ${VACUUM_SECONDS:-?} s (on ${SEEDED_AT:-?}; fsync/synchronous_commit/full_page_writes off while loading only); database size now $(q "SELECT pg_size_pretty(pg_database_size(current_database()))")"
		echo "- products, sellers, categories and their B-tree indexes pre-warmed with pg_prewarm before measuring"
		echo
		echo "## Commands"
		echo
		echo '```sh'
		echo "# marketd (restarted for each pool size, warmed up ${WARMUP} s per endpoint at -c100 before measuring)"
		echo "env $(printf '%s ' "${MARKETD_ENV[@]}" | sed 's/DB_POOL_SIZE=[0-9]*/DB_POOL_SIZE=<pool>/; s/JWT_SECRET=[^ ]*/JWT_SECRET=<random>/')build/release/marketd serve"
		echo "# nginx reference: $NGINX -p <tmp>/ -c <tmp>/nginx.conf -g 'daemon off;'  (2 workers, keepalive_requests 1000000,"
		echo "#   access_log off, open_file_cache, etag off; the saved bodies served from files on $HOST:$NGINX_PORT)"
		echo "ulimit -n $(ulimit -n)"
		echo "wrk -t2 -c<N> -d${DURATION}s --latency -s bench/product_detail.lua http://$HOST:<port> -- $PROD_MIN $PROD_MAX"
		echo "wrk -t2 -c<N> -d${DURATION}s --latency -s bench/product_list.lua http://$HOST:<port> -- <list_paths.txt>"
		echo "pgbench -n -M prepared -c <DB conns> -j 2 -T $DURATION -h $HOST -p $PG_PORT -U postgres -f detail.sql $DB_NAME"
		echo "pgbench -n -M prepared -c <DB conns> -j 2 -T $DURATION -h $HOST -p $PG_PORT -U postgres -f <list_shape>.sql@<weight> ... -D ts<k>=<cursor key> $DB_NAME"
		if [ "$CACHED" = 1 ]; then
			echo "# the cache"
			echo "$REDIS_SERVER ${REDIS_ARGS[*]} --dir <tmp>/redis --logfile <tmp>/redis/redis.log"
			echo "env $(printf '%s ' "${MARKETD_CACHED_ENV[@]}" | sed 's/JWT_SECRET=[^ ]*/JWT_SECRET=<random>/')build/release/marketd serve"
			echo "redis-cli -h $HOST -p $REDIS_PORT FLUSHALL"
			echo "wrk -t2 -c100 -d${WARM_MAX}s -s bench/journey.lua http://$HOST:$API_PORT -- warm <journey.conf>   # SIGINT once both threads wrote their marker"
			echo "wrk -t2 -c<N> -d${DURATION}s --latency -s bench/product_detail.lua http://$HOST:$API_PORT -- $PROD_MIN $PROD_MAX $HOT_N"
			echo "wrk -t2 -c<N> -d${DURATION}s --latency -s bench/product_list.lua http://$HOST:$API_PORT -- <list_paths.txt | list_paths_p1.txt>"
			echo "wrk -t2 -c$JOURNEY_CONNS -d${JOURNEY_DURATION}s --latency -s bench/journey.lua http://$HOST:$API_PORT -- run <journey.conf>"
			echo "# journey.conf: $(grep -v -e '^cursors=' -e '^marker=' "$JOURNEY_CONF" | paste -sd' ') cursors=<file> marker=<prefix>"
		fi
		echo '```'
		echo
		echo "SQL (captured from pg_stat_activity after one request of each kind to marketd, i.e. exactly what it runs;"
		echo "pgbench gets the same text with :variables, and numbers each occurrence as its own parameter):"
		echo
		echo '```sql'
		printf '%s' "$SQL_DOC"
		echo '```'
		echo
		echo "<details><summary>Raw rows (round, endpoint, conns, server, req/s, p99 ms, socket errors, non-2xx/failed, peak RSS KiB, server CPU µs/req, PG CPU µs/req, DB conns, p50/avg ms, others' CPU %, marketd's non-200 statuses, cache hit:miss:bypass, Redis CPU µs/req, Redis given up)</summary>"
		echo
		echo '```'
		cat "$RESULTS"
		echo '```'
		if [ "$CACHED" = 1 ]; then
			echo
			echo "Journey (round, req/s, p50, p95, p99, max ms, socket errors, non-2xx, peak RSS KiB, CPU µs/req server, PG, Redis, others' CPU %, server's non-200, cache hit:miss:bypass, Redis given up):"
			echo
			echo '```'
			cat "$JOURNEY_RESULTS"
			local jf
			for jf in "$TMP"/wrk-journey-r*.txt; do
				[ -e "$jf" ] || continue
				echo "# ${jf##*/}"
				grep -e '^BENCH' -e '^KIND' "$jf"
			done
			echo '```'
			echo
			echo "Warm-up (round, seconds, keys, pass 1 hit:miss:bypass, pass 2, non-2xx, complete, first pages with a cursor):"
			echo
			echo '```'
			cat "$WARM_RESULTS"
			echo '```'
		fi
		echo
		echo "</details>"
	} >"$f"
}

# --- main ------------------------------------------------------------------------------------
preflight
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
prepare_db
check_pg_settings
b_log "PostgreSQL settings: $PG_SETTINGS_SHOWN"
if [ "${BENCH_PREPARE_ONLY:-0}" = 1 ]; then
	b_log "BENCH_PREPARE_ONLY=1: database ready; stopping"
	exit 0
fi
T_START=$(date +%s) # wall time of the benchmark proper, seeding excluded
prewarm
load_ranges
b_log "products $PROD_MIN..$PROD_MAX, cities $CITY_MIN..$CITY_MAX, categories $CAT_MIN..$CAT_MAX"

RESULTS=$TMP/results.tsv
WARM_RESULTS=$TMP/warm.tsv
JOURNEY_RESULTS=$TMP/journey.tsv
: >"$RESULTS"
: >"$WARM_RESULTS"
: >"$JOURNEY_RESULTS"
# shellcheck disable=SC2086 # word lists
set -- $POOLS
FIRST_POOL=$1
start_marketd "$FIRST_POOL"
load_cursors
make_list_paths "$TMP/list_paths.txt"
grep -v 'cursor=' "$TMP/list_paths.txt" >"$TMP/list_paths_p1.txt"
make_pgbench_scripts
save_bodies
start_nginx
if [ "$CACHED" = 1 ]; then
	start_redis
	write_journey_conf
fi

npools=$#
nconns=$(wc -w <<<"$CONNS")
RUN_TOTAL=$((ROUNDS * (2 * nconns + npools * 2 * nconns + npools * 2)))
[ "$CACHED" != 1 ] || RUN_TOTAL=$((RUN_TOTAL + ROUNDS * (3 * nconns + 2)))
b_log "$RUN_TOTAL measured runs of ${DURATION} s: rounds $ROUNDS, connections ($CONNS), pools ($POOLS)$(
	[ "$CACHED" != 1 ] || echo "; cached pool $CACHED_POOL, journey -c$JOURNEY_CONNS ${JOURNEY_DURATION} s")"

for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	for pool in $POOLS; do
		[ -n "$MARKETD_PID" ] || start_marketd "$pool"
		b_log "round $ROUND: marketd DB_POOL_SIZE=$pool ($(db_conns) connections); warming up"
		warmup "$API_PORT" detail
		warmup "$API_PORT" list
		# Fewer connections first: marketd's RSS at 100 connections is then not
		# that left over from 10,000 (freed memory is not returned to the OS).
		for n in $CONNS; do
			for ep in detail list; do
				[ "$pool" != "$FIRST_POOL" ] || run_wrk nginx "$ep" "$n" "$NGINX_PORT" "$NGINX_PID"
				run_wrk "marketd-p$pool" "$ep" "$n" "$API_PORT" "$MARKETD_PID"
			done
		done
		# pgbench gets as many connections as marketd had open (the pool, plus
		# any overflow connections it opened under load).
		c=$(awk -F'\t' -v r="$ROUND" -v l="marketd-p$pool" -v p="$pool" \
			'$1 == r && $4 == l && $12 != "-" && $12 > m { m = $12 } END { print (m > 0 ? m : p) }' "$RESULTS")
		stop_marketd
		for ep in detail list; do
			run_pgbench "pgbench-p$pool" "$ep" "$c"
		done
	done
	if [ "$CACHED" = 1 ]; then
		start_marketd "$CACHED_POOL" cached
		b_log "round $ROUND: marketd cached, DB_POOL_SIZE=$CACHED_POOL ($(db_conns) connections), Redis $HOST:$REDIS_PORT"
		warm_cache
		for n in $CONNS; do
			for ep in cdetail clist clist1; do
				run_wrk "marketd-cached-p$CACHED_POOL" "$ep" "$n" "$API_PORT" "$MARKETD_PID"
			done
		done
		run_journey
		REDIS_END=$(redis_info used_memory_human used_memory_peak_human evicted_keys expired_keys)
		REDIS_KEYS=$(rcli DBSIZE 2>/dev/null)
		REDIS_RSS=$(b_rss_kib "$REDIS_PID")
		stop_marketd
	fi
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LATEST=1
if [ -n "$TAG" ]; then
	OUT=$ROOT/bench/results/$STAMP-$TAG.md
	LATEST=0
elif [ "$QUICK" = 1 ]; then
	OUT=$ROOT/bench/results/latest-quick.md
	LATEST=0
else
	OUT=$ROOT/bench/results/$STAMP.md
fi
write_report "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
[ "$LATEST" = 0 ] || cp "$OUT" "$ROOT/bench/results/latest.md"
echo
sed '/^## Commands/,$d' "$OUT"
b_log "results: ${OUT#"$ROOT"/}$([ "$LATEST" = 0 ] || echo " and bench/results/latest.md")"
