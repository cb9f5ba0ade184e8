#!/usr/bin/env bash
# marketd orders benchmark (issue 3's bars): the write path and the order
# history, each divided by pgbench running the same SQL in the same run on
# the same machine, and the cost of a login.
#
#   1. Order creation: wrk POST /api/v1/orders, a random buyer token (users
#      ORDERS_BUYER_LO..HI, tokens minted here) and a random body per
#      request, quantity 1, drawn from products pre-selected in the bench
#      database (active, stock >= 100, sellers with >= 3 such products;
#      restocked to their original stock before each round):
#        wrk 1 item        {"items":[{"product_id":P,"quantity":1}]}
#        wrk 1-3 items     1, 2 or 3 (uniform) products of one seller
#      against pgbench -M prepared with as many connections:
#        pgbench literal   SELECT * FROM marketd_place_order(:buyer, '[{"product_id":P,"quantity":1}]', NULL, NULL)
#                          (bench/orders_place_literal.sql; issue 3's statement)
#        pgbench exact     marketd's own statement (captured from
#                          pg_stat_activity) with the same 1 / 1-3 item lists
#        pgbench literal c<pool>: the literal statement with as many
#                          connections as marketd's pool (DB_POOL_SIZE)
#      orders/s counts 201s only (wrk: per status, from bench/orders_wrk.lua;
#      pgbench: orders_id_seq's advance, i.e. orders actually inserted).
#   2. Order history: wrk GET /api/v1/orders?from=<3 months ago>&to=<start>
#      with random tokens of buyers that have orders in that window, and
#      pgbench running marketd's list SQL (captured) with as many connections.
#      Three marketd runs: without Redis (every request reads PostgreSQL),
#      and a second marketd with a Redis of its own (the first pages are
#      cached per user, docs/cache.md) — cold (restarted just before: a new
#      cache epoch, no warm-up) and warm (after the warm-up) — each with
#      its hit ratio from marketd_cache_requests_total.
#   3. Login: ORDERS_LOGIN_N sequential POST /api/v1/auth/login (curl), and
#      wrk -t2 -c4 for throughput; with ORDERS_LOGIN_USERS accounts
#      registered through marketd at the start (the server's Argon2id
#      parameters) and, separately, with seeded accounts (whatever
#      parameters the seed used).
# Results: bench/results/orders-<UTC>.md and bench/results/orders-latest.md
# (medians of ORDERS_ROUNDS rounds and same-round ratios).
#
# Uses the cluster of bench/run.sh (.data/bench-pg, 127.0.0.1:15433, seeded
# by `make bench` / BENCH_PREPARE_ONLY=1 bench/run.sh) and its lock file
# .data/bench.lock: waits for it (up to ORDERS_LOCK_WAIT s) instead of
# failing. marketd listens on 127.0.0.1:18091 (the one with Redis on 18092,
# Redis on 18093) only. Every wait is bounded;
# every process started here is stopped on exit, and the database is put
# back (orders and login accounts created here deleted, stock restored,
# orders_id_seq reset, helper schema bench_orders dropped, the touched
# tables vacuumed).
#
# Environment:
#   ORDERS_ROUNDS=3 ORDERS_DURATION=10 ORDERS_WARMUP=3
#   ORDERS_CONNS=50 (creation) ORDERS_HIST_CONNS=100 (history)
#   ORDERS_POOL=8 (marketd DB_POOL_SIZE; DB_MAX_OVERFLOW=0)
#   ORDERS_BUYER_LO=2 ORDERS_BUYER_HI=5001 (token holders, as buyers)
#   ORDERS_SELLER_MOD=37 (products of sellers with id % MOD = 5: ~19k)
#   ORDERS_LOGIN_N=50 ORDERS_LOGIN_CONNS=4 ORDERS_LOGIN_USERS=20
#   ORDERS_LOCK_WAIT=1800 (s)  ORDERS_KEEP_TMP=1 (keep logs)
#   ORDERS_TAG=name (write bench/results/orders-<UTC>-<name>.md only)
#   ORDERS_PARTS="create history login" (the parts to run and report)
#   ORDERS_DEPTH=N (marketd's DB_PIPELINE_DEPTH; unset: the server's default)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

HOST=127.0.0.1
PG_PORT=15433
API_PORT=18091
CACHED_PORT=18092
REDIS_PORT=18093
DB_NAME=marketd_bench
DB_URL="postgresql://postgres@$HOST:$PG_PORT/$DB_NAME"
PGDIR=${BENCH_PG_DIR:-$ROOT/.data/bench-pg}

ROUNDS=${ORDERS_ROUNDS:-3}
DURATION=${ORDERS_DURATION:-10}
WARMUP=${ORDERS_WARMUP:-3}
CONNS=${ORDERS_CONNS:-50}
HIST_CONNS=${ORDERS_HIST_CONNS:-100}
POOL=${ORDERS_POOL:-8}
BUYER_LO=${ORDERS_BUYER_LO:-2}
BUYER_HI=${ORDERS_BUYER_HI:-5001}
SELLER_MOD=${ORDERS_SELLER_MOD:-37}
LOGIN_N=${ORDERS_LOGIN_N:-50}
LOGIN_CONNS=${ORDERS_LOGIN_CONNS:-4}
LOCK_WAIT=${ORDERS_LOCK_WAIT:-1800}
TAG=${ORDERS_TAG:-}
PARTS=" ${ORDERS_PARTS:-create history login} "
DEPTH=${ORDERS_DEPTH:-}
[[ $DEPTH =~ ^[0-9]*$ ]] || { echo "ORDERS_DEPTH: a number" >&2; exit 2; }
for p in $PARTS; do
	case $p in create | history | login) ;; *) echo "ORDERS_PARTS: create, history and/or login, not $p" >&2; exit 2 ;; esac
done
part_on() { [[ $PARTS == *" $1 "* ]]; }
[[ $TAG =~ ^[A-Za-z0-9._-]*$ ]] || { echo "ORDERS_TAG: letters, digits, . _ - only" >&2; exit 2; }
MARKETD=${MARKETD_BIN:-$ROOT/build/release/marketd}
WRK=${WRK_BIN:-wrk}
PGBENCH=${PGBENCH_BIN:-pgbench}
PSQL=${PSQL_BIN:-psql}
PYTHON=${PYTHON_BIN:-python3}
LUA=$ROOT/bench/orders_wrk.lua
PGB_LITERAL=$ROOT/bench/orders_place_literal.sql

# Same settings as bench/run.sh's PG_BENCH_SETTINGS (durability on), used
# when this script has to start the cluster itself.
PG_BENCH_SETTINGS=(
	shared_buffers=2GB max_connections=400 effective_cache_size=16GB
	max_wal_size=4GB track_activity_query_size=4096
	fsync=on synchronous_commit=on full_page_writes=on
)

# --- state and cleanup ----------------------------------------------------------
TMP=
LOCK_FD=
PG_STARTED=0
MARKETD_PID=
CACHED_PID=
REDIS_PID=
DB_TOUCHED=0

psql_db() { PGOPTIONS='-c client_min_messages=warning' timeout "${PSQL_TIMEOUT:-120}" "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"; }
q() { psql_db -d "$DB_NAME" -tA -c "$1"; }

# Puts the bench database back: the orders this script created (after
# bench_orders.meta's t0 and with a sequence number past its seq_last)
# deleted, pool stock and updated_at restored, orders_id_seq reset, the
# schema dropped. Also repairs what an earlier, interrupted run left.
restore_db() {
	local have meta t0 seq_last seq_called parts n
	have=$(q "SELECT count(*) FROM pg_namespace WHERE nspname = 'bench_orders'") || return 1
	[ "$have" = 1 ] || return 0
	meta=$(q "SELECT t0, seq_last, seq_called, users_max FROM bench_orders.meta") || return 1
	IFS='|' read -r t0 seq_last seq_called users_max <<<"$meta"
	b_log "restoring the bench database: orders since $t0 (orders_id_seq past $seq_last), pool stock"
	n=$(PSQL_TIMEOUT=900 psql_db -d "$DB_NAME" -tA -v t0="$t0" -v seq="$seq_last" -v called="$seq_called" \
		-v umax="$users_max" <<'SQL'
BEGIN;
-- the accounts registered for the login measurement
DELETE FROM users WHERE id > :umax::int8 AND email LIKE 'ordersbench-%@example.com';
SELECT setval(pg_get_serial_sequence('users', 'id'), greatest(:umax::int8, (SELECT max(id) FROM users), 1)) \g /dev/null
UPDATE products p SET stock = s.stock, updated_at = s.updated_at
  FROM bench_orders.pool s
 WHERE p.id = s.id AND (p.stock <> s.stock OR p.updated_at <> s.updated_at);
-- ids = YYYYMM * 10^9 + (sequence value % 10^9): ours are past seq_last
DELETE FROM order_items WHERE created_at >= :'t0'::timestamptz
   AND order_id % 1000000000 > (:seq::int8 - CASE WHEN :'called'::bool THEN 0 ELSE 1 END) % 1000000000;
WITH d AS (DELETE FROM orders WHERE created_at >= :'t0'::timestamptz
              AND id % 1000000000 > (:seq::int8 - CASE WHEN :'called'::bool THEN 0 ELSE 1 END) % 1000000000 RETURNING 1)
SELECT count(*) FROM d;
SELECT setval('orders_id_seq', :seq::int8, :'called'::bool) \g /dev/null
DROP SCHEMA bench_orders CASCADE;
COMMIT;
SQL
	) || { b_log "restoring the bench database FAILED (schema bench_orders kept; rerun to retry)"; return 1; }
	b_log "deleted $n orders (and their items) and the login accounts; stock restored; orders_id_seq back at $seq_last"
	RESTORED_ORDERS=$n
	# The partitions that received the orders, and products: vacuum them.
	parts=$(q "SELECT string_agg(format('%I, %I', 'orders_' || m, 'order_items_' || m), ', ')
	           FROM (SELECT DISTINCT to_char(d AT TIME ZONE 'UTC', 'YYYYMM') AS m
	                 FROM generate_series(date_trunc('month', '$t0'::timestamptz AT TIME ZONE 'UTC'),
	                                      date_trunc('month', now() AT TIME ZONE 'UTC'), interval '1 month') d) x
	           WHERE to_regclass('orders_' || m) IS NOT NULL")
	PSQL_TIMEOUT=900 q "VACUUM products${parts:+, $parts}" >/dev/null || b_log "VACUUM failed (harmless)"
	b_log "VACUUM products${parts:+, $parts} done"
}
RESTORED_ORDERS=-

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$MARKETD_PID" ]; then
		b_stop_pid "$MARKETD_PID" marketd 10
		MARKETD_PID=
	fi
	[ -z "$CACHED_PID" ] || b_stop_pid "$CACHED_PID" marketd 10
	[ -z "$REDIS_PID" ] || b_stop_pid "$REDIS_PID" redis-server 10
	CACHED_PID= REDIS_PID=
	if [ "$DB_TOUCHED" = 1 ]; then
		restore_db || rc=1
	fi
	b_finish "$rc" "${ORDERS_KEEP_TMP:-0}" b_log
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight, lock, database ----------------------------------------------------
preflight() {
	local t
	for t in "$WRK" "$PGBENCH" "$PSQL" "$PYTHON" curl ss flock timeout awk redis-server redis-cli; do
		command -v "$t" >/dev/null 2>&1 || b_die "$t not found"
	done
	[ -x "$MARKETD" ] || b_die "$MARKETD not built (make build)"
	b_load_pg_lib "$ROOT"
	mkdir -p "$ROOT/.data" "$ROOT/bench/results"
	exec {LOCK_FD}>"$ROOT/.data/bench.lock"
	if ! flock -n "$LOCK_FD"; then
		b_log "another benchmark holds .data/bench.lock; waiting for it (at most $LOCK_WAIT s)"
		flock -w "$LOCK_WAIT" "$LOCK_FD" || b_die "still locked after $LOCK_WAIT s: giving up"
		b_log "lock acquired"
	fi
	b_port_free "$API_PORT" || b_die "port $API_PORT is in use: $(ss -Htlnp "sport = :$API_PORT" | head -n1)"
	if ! pg_tmp_running "$PGDIR" && ! b_port_free "$PG_PORT"; then
		b_die "port $PG_PORT is in use by something else: $(ss -Htlnp "sport = :$PG_PORT" | head -n1)"
	fi
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	TMP=$(mktemp -d /tmp/marketd-orders.XXXXXX) || b_die "mktemp failed"
	chmod 755 "$TMP"
	cp "$MARKETD" "$TMP/marketd" || b_die "cannot copy $MARKETD"
	MARKETD=$TMP/marketd
}

pg_up() {
	[ -s "$PGDIR/seeded-bench.env" ] || b_die "no seeded bench cluster in $PGDIR (run: BENCH_PREPARE_ONLY=1 bench/run.sh)"
	# shellcheck disable=SC1091
	. "$PGDIR/seeded-bench.env"
	if pg_tmp_running "$PGDIR"; then
		b_log "PostgreSQL of $PGDIR already runs; using it as it is (not stopping it afterwards)"
	else
		b_log "starting PostgreSQL on $HOST:$PG_PORT ($PGDIR)"
		PG_STARTED=1
		PG_START_TIMEOUT=120 pg_tmp_start "$PGDIR" "$PG_PORT" "${PG_BENCH_SETTINGS[@]}" ||
			b_die "PostgreSQL did not start (log: $PGDIR/postgresql.log)"
	fi
	local s want
	s=$(q "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings
	       WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_connections', 'wal_level', 'max_wal_size')") ||
		b_die "cannot query $DB_NAME"
	for want in fsync=on full_page_writes=on synchronous_commit=on; do
		[[ " $s " == *" $want "* ]] || b_die "durability setting not on (want $want): $s"
	done
	PG_SETTINGS_SHOWN=$s
	[ "$(q "SELECT count(*) FROM (SELECT 1 FROM products LIMIT 1) x")" = 1 ] || b_die "bench database has no products"
	b_log "marketd migrate"
	DATABASE_URL=$DB_URL timeout 600 "$MARKETD" migrate >"$TMP/migrate.log" 2>&1 ||
		{ cat "$TMP/migrate.log" >&2; b_die "marketd migrate failed"; }
	SCHEMA_VERSION=$("$MARKETD" version)
	# An interrupted earlier run of this script: put its changes back first.
	restore_db || b_die "could not restore what an earlier run left"
}

# --- the data the runs draw from ----------------------------------------------------
prepare_data() {
	local r
	b_log "selecting the product pool (active, stock >= 100, sellers with id % $SELLER_MOD = 5 and >= 3 such products)"
	DB_TOUCHED=1
	PSQL_TIMEOUT=600 psql_db -d "$DB_NAME" -v mod="$SELLER_MOD" <<'SQL' || b_die "building the pool failed"
BEGIN;
CREATE SCHEMA bench_orders;
COMMENT ON SCHEMA bench_orders IS 'bench/orders.sh helper data; dropped (and its changes undone) when the run ends';
CREATE TABLE bench_orders.meta AS
    SELECT now() AS t0, last_value AS seq_last, is_called AS seq_called,
           (SELECT coalesce(max(id), 0) FROM users) AS users_max FROM orders_id_seq;
CREATE TABLE bench_orders.pool AS
    SELECT p.id, p.seller_id, p.stock, p.updated_at FROM products p
     WHERE p.status = 'active' AND p.stock >= 100 AND p.seller_id % :mod = 5;
DELETE FROM bench_orders.pool WHERE seller_id IN (SELECT seller_id FROM bench_orders.pool GROUP BY 1 HAVING count(*) < 3);
ALTER TABLE bench_orders.pool ADD PRIMARY KEY (id);
COMMIT;
CREATE TABLE bench_orders.seq AS
    SELECT id, seller_id, row_number() OVER w - 1 AS rn, count(*) OVER (PARTITION BY seller_id) AS cnt
      FROM bench_orders.pool WINDOW w AS (PARTITION BY seller_id ORDER BY id);
CREATE INDEX ON bench_orders.seq (seller_id);
SELECT setseed(0.42) \g /dev/null
CREATE TABLE bench_orders.pids AS
    SELECT (row_number() OVER (ORDER BY random()))::int AS n, id AS pid FROM bench_orders.pool;
ALTER TABLE bench_orders.pids ADD PRIMARY KEY (n);
-- Group n: product pids[n] and the next 0, 1 or 2 (n % 3) pool products of
-- its seller (cyclically, by id); items sorted by product id as marketd
-- sends them.
CREATE TABLE bench_orders.groups AS
    SELECT p.n,
           (SELECT '[' || string_agg(format('{"product_id":%s,"quantity":1}', s2.id), ',' ORDER BY s2.id) || ']'
              FROM bench_orders.seq s2
             WHERE s2.seller_id = s1.seller_id AND (s2.rn - s1.rn + s1.cnt) % s1.cnt < 1 + p.n % 3) AS items
      FROM bench_orders.pids p JOIN bench_orders.seq s1 ON s1.id = p.pid;
ALTER TABLE bench_orders.groups ADD PRIMARY KEY (n);
ANALYZE bench_orders.pool, bench_orders.pids, bench_orders.groups;
SQL
	r=$(q "SELECT count(*), count(DISTINCT seller_id), min(stock), round(avg(stock)) FROM bench_orders.pool")
	IFS='|' read -r NPIDS NSELLERS POOL_MIN_STOCK POOL_AVG_STOCK <<<"$r"
	[ "${NPIDS:-0}" -ge 100 ] || b_die "product pool too small ($NPIDS)"
	GROUP_MIX=$(q "SELECT string_agg(k || ' item' || (CASE WHEN k > 1 THEN 's' ELSE '' END) || ' ' || c, ', ' ORDER BY k)
	               FROM (SELECT json_array_length(items::json) k, count(*) c FROM bench_orders.groups GROUP BY 1) x")
	b_log "pool: $NPIDS products of $NSELLERS sellers (stock min $POOL_MIN_STOCK, avg $POOL_AVG_STOCK); groups: $GROUP_MIX"
	q "SELECT '{\"items\":[{\"product_id\":' || pid || ',\"quantity\":1}]}' FROM bench_orders.pids ORDER BY n" >"$TMP/bodies1.txt"
	q "SELECT '{\"items\":' || items || '}' FROM bench_orders.groups ORDER BY n" >"$TMP/bodies13.txt"
	[ "$(wc -l <"$TMP/bodies1.txt")" = "$NPIDS" ] && [ "$(wc -l <"$TMP/bodies13.txt")" = "$NPIDS" ] ||
		b_die "exporting the bodies failed"

	# History window: from 3 months before the start (a date: 00:00 UTC) to
	# the start (RFC 3339), fixed for the whole run.
	HIST_FROM=$(date -u -d '3 months ago' +%F)
	HIST_TO=$(q "SELECT to_char(t0 AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM bench_orders.meta")
	HIST_PATH="/api/v1/orders?from=$HIST_FROM&to=$HIST_TO"
	b_log "history window [$HIST_FROM, $HIST_TO): buyers with orders in it"
	PSQL_TIMEOUT=600 q "CREATE TABLE bench_orders.hbuyers AS
		SELECT (row_number() OVER (ORDER BY buyer_id))::int AS k, buyer_id AS buyer, count(*) AS n
		  FROM orders WHERE created_at >= '${HIST_FROM}T00:00:00Z' AND created_at < '$HIST_TO'
		   AND buyer_id BETWEEN $BUYER_LO AND $BUYER_HI GROUP BY buyer_id;
		ALTER TABLE bench_orders.hbuyers ADD PRIMARY KEY (k)" >/dev/null || b_die "selecting history buyers failed"
	r=$(q "SELECT count(*), min(buyer), max(buyer), round(avg(n), 1), min(n), max(n), count(*) FILTER (WHERE n > 20) FROM bench_orders.hbuyers")
	IFS='|' read -r NHB HB_MIN HB_MAX HB_AVG HB_NMIN HB_NMAX HB_FULL <<<"$r"
	[ "${NHB:-0}" -ge 1 ] || b_die "no buyer in $BUYER_LO..$BUYER_HI has orders in the window"
	b_log "history buyers: $NHB (ids $HB_MIN..$HB_MAX), orders in the window each: avg $HB_AVG, min $HB_NMIN, max $HB_NMAX; $HB_FULL have more than a page (20)"
	# Contiguous ids: pgbench draws them with random(); else from the table.
	if [ "$((HB_MAX - HB_MIN + 1))" = "$NHB" ]; then
		HB_CONTIGUOUS=1
	else
		HB_CONTIGUOUS=0
	fi

	# Tokens: HS256 JWTs for the buyers, signed with this run's JWT_SECRET.
	seq "$BUYER_LO" "$BUYER_HI" | mint_tokens >"$TMP/tokens_create.txt" || b_die "minting tokens failed"
	q "SELECT buyer FROM bench_orders.hbuyers ORDER BY k" | mint_tokens >"$TMP/tokens_hist.txt" || b_die "minting tokens failed"
	local u
	for ((u = BUYER_LO; u <= BUYER_HI; u++)); do
		printf '{"email":"user%d@example.com","password":"password123"}\n' "$u"
	done >"$TMP/bodies_login_seeded.txt"
	LOGIN_HASH_SEEDED=$(q "SELECT split_part(password_hash, '\$', 2) || ' ' || split_part(password_hash, '\$', 4) FROM users WHERE id = $BUYER_LO")
}

JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') # throwaway, per run (64 hex)
mint_tokens() { # user ids on stdin, one token a line on stdout
	JWT_SECRET=$JWT_SECRET "$PYTHON" -c '
import base64, hashlib, hmac, os, sys, time
secret = os.environ["JWT_SECRET"].encode()
header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # base64url({"alg":"HS256","typ":"JWT"})
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
for line in sys.stdin:
    uid = int(line)
    s = header + "." + b64(("{\"sub\":\"%d\",\"iat\":%d,\"exp\":%d}" % (uid, now, now + 4 * 3600)).encode())
    print(s + "." + b64(hmac.new(secret, s.encode(), hashlib.sha256).digest()))
'
}

# --- marketd -------------------------------------------------------------------------
MARKETD_ENV=()
start_marketd() {
	local log=$TMP/marketd.log deadline n
	MARKETD_ENV=(LISTEN="$HOST:$API_PORT" WORKERS=2 ACCESS_LOG=0 DATABASE_URL="$DB_URL"
		DB_POOL_SIZE="$POOL" DB_MAX_OVERFLOW=0 JWT_SECRET="$JWT_SECRET" ${DEPTH:+DB_PIPELINE_DEPTH="$DEPTH"})
	env "${MARKETD_ENV[@]}" "$MARKETD" serve >>"$log" 2>&1 &
	MARKETD_PID=$!
	if ! b_wait_http "http://$HOST:$API_PORT/readyz" 30 "$MARKETD_PID"; then
		tail -n 20 "$log" >&2
		b_die "marketd did not become ready in 30 s"
	fi
	deadline=$((SECONDS + 20))
	while [ "$SECONDS" -lt "$deadline" ]; do
		n=$(db_conns)
		[ "${n:-0}" -ge "$POOL" ] && break
		sleep 0.2
	done
	b_log "marketd (pid $MARKETD_PID) ready, $(db_conns) database connections"
}
db_conns() { q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'marketd'"; }

# The history's second marketd: the same settings plus a Redis of its own
# (volatile-lru as scripts/stack.sh: entries may be evicted, tag versions
# never). Started again for the cold run: a new process sets a new cache
# epoch, so no entry of before is served.
start_redis() {
	local d=$TMP/redis i
	mkdir -p "$d"
	redis-server --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes --save '' --appendonly no \
		--maxmemory 512mb --maxmemory-policy volatile-lru --daemonize no --dir "$d" \
		--logfile "$d/redis.log" >/dev/null 2>&1 &
	REDIS_PID=$!
	for ((i = 0; i < 50; i++)); do
		[ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	b_die "redis-server did not start on $HOST:$REDIS_PORT (log: $d/redis.log)"
}
start_cached() {
	[ -z "$CACHED_PID" ] || b_stop_pid "$CACHED_PID" marketd 10
	local log=$TMP/marketd-cached.log deadline
	env "${MARKETD_ENV[@]}" LISTEN="$HOST:$CACHED_PORT" REDIS_URL="redis://$HOST:$REDIS_PORT" \
		"$MARKETD" serve >>"$log" 2>&1 &
	CACHED_PID=$!
	b_wait_http "http://$HOST:$CACHED_PORT/readyz" 30 "$CACHED_PID" || { tail -n 20 "$log" >&2; b_die "marketd with Redis did not become ready"; }
	deadline=$((SECONDS + 20))
	until [ "$(db_conns)" -ge $((2 * POOL)) ] || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.2; done
}
# cache_counts PORT: "hits misses bypasses" of the instance so far.
cache_counts() {
	curl -sS --max-time 10 "http://$HOST:$1/metrics" | awk '
		/^marketd_cache_requests_total\{result="hit"\}/ { h = $2 }
		/^marketd_cache_requests_total\{result="miss"\}/ { m = $2 }
		/^marketd_cache_requests_total\{result="bypass"\}/ { b = $2 }
		END { print h + 0, m + 0, b + 0 }'
}
pg_postmaster_pid() { head -n1 "$PGDIR/data/postmaster.pid" 2>/dev/null; }
seq_now() { q "SELECT last_value FROM orders_id_seq"; }

# capture_sql PATTERN: the statement marketd's pool last ran that matches.
capture_sql() {
	q "SELECT query FROM pg_stat_activity WHERE application_name = 'marketd' AND query LIKE '$1'
	   ORDER BY query_start DESC LIMIT 1"
}

# Sanity checks through marketd, then the statements it runs, rewritten
# for pgbench.
PLACE_SQL=
LIST_SQL=
make_pgbench_scripts() {
	local tok body code sql
	tok=$(head -n1 "$TMP/tokens_create.txt")
	code=$(curl -sS --max-time 10 -o "$TMP/me.json" -w '%{http_code}' -H "Authorization: Bearer $tok" "http://$HOST:$API_PORT/api/v1/me")
	[ "$code" = 200 ] || b_die "GET /api/v1/me with a minted token answered $code: $(cat "$TMP/me.json")"
	body=$(sed -n 2p "$TMP/bodies13.txt")
	code=$(curl -sS --max-time 10 -o "$TMP/order.json" -w '%{http_code}' -H "Authorization: Bearer $tok" \
		-H 'Content-Type: application/json' --data "$body" "http://$HOST:$API_PORT/api/v1/orders")
	[ "$code" = 201 ] || b_die "POST /api/v1/orders answered $code: $(cat "$TMP/order.json")"
	PLACE_SQL=$(capture_sql '%FROM marketd_place_order(%')
	[[ $PLACE_SQL == *'$1::int8, $2::jsonb, $3::text, $4::text'* ]] || b_die "could not capture the order SQL: $PLACE_SQL"
	tok=$(head -n1 "$TMP/tokens_hist.txt")
	code=$(curl -sS --max-time 10 -o "$TMP/hist.json" -w '%{http_code}' -H "Authorization: Bearer $tok" "http://$HOST:$API_PORT$HIST_PATH")
	[ "$code" = 200 ] || b_die "GET $HIST_PATH answered $code: $(cat "$TMP/hist.json")"
	HIST_BODY_BYTES=$(stat -c %s "$TMP/hist.json")
	HIST_ITEMS=$(grep -o '"buyer_id"' "$TMP/hist.json" | wc -l)
	# Schema 9 on (migrations/0009_order_docs.sql): one statement over
	# marketd_order_page, an absent filter a NULL; rewritten here to the
	# parameters of the earlier statement ($1 buyer, $2 from, $3 to, $4 limit).
	LIST_SQL=$(capture_sql '%FROM marketd_order_page($1::int8,%')
	if [ -n "$LIST_SQL" ]; then
		[[ $LIST_SQL == *'($1::int8, $2::bool, $3::text, $4::timestamptz, $5::timestamptz, $6::timestamptz, $7::int8, $8::int4)'* ]] ||
			b_die "could not capture the order list SQL: $LIST_SQL"
		LIST_SQL=${LIST_SQL/'($1::int8, $2::bool, $3::text, $4::timestamptz, $5::timestamptz, $6::timestamptz, $7::int8, $8::int4)'/'($1::int8, false, NULL, $2::timestamptz, $3::timestamptz, NULL, NULL, $4::int4)'}
	else
		LIST_SQL=$(capture_sql '%FROM orders o WHERE o.buyer_id = $1::int8 AND o.created_at >= $2::timestamptz AND o.created_at < $3::timestamptz ORDER BY%')
		[[ $LIST_SQL == *'LIMIT $4::int4'* ]] || b_die "could not capture the order list SQL: $LIST_SQL"
	fi

	mkdir -p "$TMP/pgbench"
	# $2 (the items) from the same lists as wrk's bodies
	local items1 items13
	items1=$(cat <<'EOS'
(SELECT '[{"product_id":' || pid || ',"quantity":1}]' FROM bench_orders.pids WHERE n = :n)
EOS
	)
	items13='(SELECT items FROM bench_orders.groups WHERE n = :n)'
	sql=${PLACE_SQL//\$1/:buyer}
	sql=${sql//\$3/NULL}
	sql=${sql//\$4/NULL}
	{
		printf '\\set buyer random(:buyer_lo, :buyer_hi)\n\\set n random(1, :npids)\n'
		printf '%s;\n' "${sql//\$2/"$items1"}"
	} >"$TMP/pgbench/place_exact_1.sql"
	{
		printf '\\set buyer random(:buyer_lo, :buyer_hi)\n\\set n random(1, :npids)\n'
		printf '%s;\n' "${sql//\$2/"$items13"}"
	} >"$TMP/pgbench/place_exact_13.sql"
	sql=${LIST_SQL//\$1/:buyer}
	sql=${sql//\$2/:hfrom}
	sql=${sql//\$3/:hto}
	sql=${sql//\$4/:lim}
	{
		if [ "$HB_CONTIGUOUS" = 1 ]; then
			printf '\\set buyer random(%s, %s)\n' "$HB_MIN" "$HB_MAX"
		else
			printf '\\set k random(1, %s)\n' "$NHB"
			local hb='(SELECT buyer FROM bench_orders.hbuyers WHERE k = :k)'
			sql=${sql//:buyer/"$hb"}
		fi
		printf '\\set lim 21\n%s;\n' "$sql"
	} >"$TMP/pgbench/history.sql"
	PGB_VARS=(-D "buyer_lo=$BUYER_LO" -D "buyer_hi=$BUYER_HI" -D "npids=$NPIDS"
		-D "hfrom=${HIST_FROM}T00:00:00Z" -D "hto=$HIST_TO")
}

# Accounts for the login measurement, registered through marketd (so
# their hashes have the server's Argon2id parameters); deleted afterwards.
LOGIN_USERS=${ORDERS_LOGIN_USERS:-20}
make_login_users() {
	local i email code t times=()
	: >"$TMP/bodies_login_new.txt"
	for ((i = 1; i <= LOGIN_USERS; i++)); do
		email="ordersbench-$$-$i@example.com"
		read -r code t < <(curl -sS --max-time 10 -o "$TMP/register.json" -w '%{http_code} %{time_total}\n' \
			-H 'Content-Type: application/json' \
			--data "{\"email\":\"$email\",\"password\":\"password123\",\"name\":\"orders bench\"}" \
			"http://$HOST:$API_PORT/api/v1/auth/register")
		[ "$code" = 201 ] || b_die "POST /api/v1/auth/register answered $code: $(cat "$TMP/register.json")"
		times+=("$(awk -v t="$t" 'BEGIN { printf "%.2f", t * 1000 }')")
		printf '{"email":"%s","password":"password123"}\n' "$email" >>"$TMP/bodies_login_new.txt"
	done
	REGISTER_MED=$(b_median "${times[@]}")
	LOGIN_HASH_NEW=$(q "SELECT split_part(password_hash, '\$', 2) || ' ' || split_part(password_hash, '\$', 4) FROM users WHERE email = '$email'")
	b_log "registered $LOGIN_USERS accounts for the logins (median $REGISTER_MED ms each; hash $LOGIN_HASH_NEW); seeded accounts' hash: $LOGIN_HASH_SEEDED"
}

# --- measuring -------------------------------------------------------------------------
RESULTS=
ROUND=0
# Columns of $RESULTS: round part label conns req/s ok/s p50 p90 p99 non_ok
# socket_errors srv_cpu_us pg_cpu_us db_orders others_pct ok_n total_n
row() { local IFS=$'\t'; echo "$*" >>"$RESULTS"; }

checkpoint() { PSQL_TIMEOUT=300 q "CHECKPOINT" >/dev/null || b_log "CHECKPOINT failed"; }

# run_wrk PART LABEL CONNS OK_STATUS METHOD PATH TOKENS BODIES
run_wrk() {
	local part=$1 label=$2 n=$3 ok=$4 method=$5 path=$6 tokens=$7 bodies=$8 t
	t=$((n < 2 ? n : 2))
	local out=$TMP/wrk-$label-r$ROUND.txt line s0 s1 req dur okn rps okps p50 p90 p99 errs nonok cpu
	b_log "round $ROUND: wrk $label -c$n ${DURATION}s"
	local port=${WRK_PORT:-$API_PORT} c0 c1
	s0=$(seq_now)
	[ "$port" = "$API_PORT" ] || c0=$(cache_counts "$port")
	b_measure_begin "${WRK_PID:-$MARKETD_PID}" "$(pg_postmaster_pid)"
	timeout -k 5 $((DURATION + 60)) "$WRK" -t"$t" -c"$n" -d"${DURATION}s" --latency -s "$LUA" \
		"http://$HOST:$port" -- "$method" "$path" "$tokens" "$bodies" >"$out" 2>&1
	b_measure_end
	s1=$(seq_now)
	if [ "$port" != "$API_PORT" ]; then
		# Hit ratio of the run: hits ÷ (hits + misses + bypasses), in %.
		c1=$(cache_counts "$port")
		awk -v a="$c0" -v b="$c1" -v l="$label" -v r="$ROUND" 'BEGIN {
			split(a, x, " "); split(b, y, " "); h = y[1] - x[1]; m = y[2] - x[2]; p = y[3] - x[3]
			n = h + m + p
			printf "%s\t%s\t%.1f\t%d\t%d\t%d\n", r, l, (n ? 100 * h / n : 0), h, m, p }' \
			>>"$TMP/hits.tsv"
		b_log "    cache: $(tail -n1 "$TMP/hits.tsv" | awk -F'\t' '{ printf "%s %% hits (%s hits, %s misses, %s bypasses)", $3, $4, $5, $6 }')"
	fi
	line=$(grep '^BENCH ' "$out" | tail -n1)
	if [ -z "$line" ]; then
		b_log "wrk produced no result:"
		tail -n 5 "$out" >&2
		row "$ROUND" "$part" "$label" "$n" - - - - - - - - - - "$M_OTHERS_PCT" - -
		return 0
	fi
	req=$(b_kv requests "$line") dur=$(b_kv duration_us "$line") okn=$(b_kv "s$ok" "$line")
	errs=$(($(b_kv connect "$line") + $(b_kv read "$line") + $(b_kv write "$line") + $(b_kv timeout "$line")))
	nonok=$(for k in s200 s201 s401 s409 s422 s4xx s5xx sother; do
		[ "$k" = "s$ok" ] || [ "$(b_kv "$k" "$line")" = 0 ] || printf '%s:%s,' "${k#s}" "$(b_kv "$k" "$line")"
	done | sed 's/,$//')
	read -r rps okps p50 p90 p99 < <(awk -v r="$req" -v o="$okn" -v d="$dur" -v a="$(b_kv p50_us "$line")" \
		-v b="$(b_kv p90_us "$line")" -v c="$(b_kv p99_us "$line")" \
		'BEGIN { printf "%.0f %.0f %.2f %.2f %.2f\n", r / (d / 1e6), o / (d / 1e6), a / 1000, b / 1000, c / 1000 }')
	read -r cpu < <(awk -v r="$req" -v a="$M_SRV" -v b="$M_PG" -v hz="$B_CLK_TCK" \
		'BEGIN { if (r > 0) printf "%.0f\t%.0f\n", a / hz * 1e6 / r, b / hz * 1e6 / r; else print "-\t-" }')
	row "$ROUND" "$part" "$label" "$n" "$rps" "$okps" "$p50" "$p90" "$p99" "${nonok:--}" "$errs" "$cpu" \
		"$((s1 - s0))" "$M_OTHERS_PCT" "$okn" "$req"
	b_log "    $okps ok/s ($rps req/s), p50 $p50 ms, p99 $p99 ms, non-$ok ${nonok:-none}, socket errors $errs," \
		"CPU µs/req marketd+PG ${cpu/$'\t'/ + }, orders inserted $((s1 - s0)); others used $M_OTHERS_PCT % of the CPU"
}

# run_pgb PART LABEL CLIENTS SCRIPT: orders/s from orders_id_seq (create),
# p50/p90/p99 from pgbench's per-transaction log.
run_pgb() {
	local part=$1 label=$2 c=$3 script=$4 out=$TMP/pgbench-$2-r$ROUND.txt logp=$TMP/pgblog/$2-r$ROUND
	local s0 s1 tps _lat failed ntx okps pcts cpu
	mkdir -p "$TMP/pgblog"
	b_log "round $ROUND: pgbench $label -c$c ${DURATION}s"
	s0=$(seq_now)
	b_measure_begin "" "$(pg_postmaster_pid)"
	PGCONNECT_TIMEOUT=10 timeout -k 5 $((DURATION + 60)) "$PGBENCH" -n -M prepared -c "$c" -j 2 -T "$DURATION" \
		-l --log-prefix="$logp" -h "$HOST" -p "$PG_PORT" -U postgres "${PGB_VARS[@]}" -f "$script" "$DB_NAME" >"$out" 2>&1
	sleep 0.5 # backends exit after pgbench; the postmaster reaps them
	b_measure_end
	s1=$(seq_now)
	read -r tps _lat failed < <(b_pgbench_fields "$out")
	ntx=$(awk '/^number of transactions actually processed: / { split($6, a, "/"); print a[1] }' "$out")
	if [ "$tps" = - ] || [ -z "$ntx" ]; then
		b_log "pgbench produced no result:"
		tail -n 5 "$out" >&2
		row "$ROUND" "$part" "$label" "$c" - - - - - - - - - - "$M_OTHERS_PCT" - -
		return 0
	fi
	if [ "$part" = create ]; then
		okps=$(awk -v t="$tps" -v o="$((s1 - s0))" -v n="$ntx" 'BEGIN { printf "%.0f\n", t * o / n }')
	else
		okps=$(awk -v t="$tps" 'BEGIN { printf "%.0f\n", t }')
	fi
	pcts=$(cat "$logp".* 2>/dev/null | awk '{ print $3 }' | sort -n | awk '
		function pct(p, i) { i = int(NR * p + 0.5); if (i < 1) i = 1; return v[i] / 1000 }
		{ v[NR] = $1 }
		END { if (NR == 0) print "- - -"; else printf "%.2f %.2f %.2f\n", pct(0.50), pct(0.90), pct(0.99) }')
	rm -f "$logp".*
	cpu=$(awk -v t="$tps" -v b="$M_PG" -v hz="$B_CLK_TCK" -v d="$DURATION" \
		'BEGIN { if (t > 0) printf "%.0f\n", b / hz * 1e6 / (t * d); else print "-" }')
	read -r p50 p90 p99 <<<"$pcts"
	row "$ROUND" "$part" "$label" "$c" "$(printf '%.0f' "$tps")" "$okps" "$p50" "$p90" "$p99" \
		"$([ "$part" = create ] && echo "not-inserted:$((ntx - (s1 - s0)))" || echo "failed:$failed")" 0 - "$cpu" \
		"$((s1 - s0))" "$M_OTHERS_PCT" "$([ "$part" = create ] && echo $((s1 - s0)) || echo "$ntx")" "$ntx"
	b_log "    $okps ok/s ($(printf '%.0f' "$tps") tps), latency p50 $p50 ms, p99 $p99 ms, failed $failed," \
		"orders inserted $((s1 - s0)) of $ntx transactions, PG CPU µs/tx $cpu; others used $M_OTHERS_PCT % of the CPU"
}

restock() {
	local n
	n=$(q "WITH u AS (UPDATE products p SET stock = s.stock, updated_at = s.updated_at FROM bench_orders.pool s
	                 WHERE p.id = s.id AND (p.stock <> s.stock OR p.updated_at <> s.updated_at) RETURNING 1)
	       SELECT count(*) FROM u") || b_die "restock failed"
	b_log "round $ROUND: restocked $n pool products to their original stock"
}

warm() { # METHOD PATH TOKENS BODIES CONNS
	timeout -k 5 $((WARMUP + 30)) "$WRK" -t2 -c"$5" -d"${WARMUP}s" -s "$LUA" "http://$HOST:${WRK_PORT:-$API_PORT}" -- "$1" "$2" "$3" "$4" >/dev/null 2>&1
}

create_runs() {
	local order=(wrk1 pgl pge1 pglpool wrk13 pge13) i k
	[ $((ROUND % 2)) = 1 ] || order=(pge13 wrk13 pglpool pge1 pgl wrk1)
	restock
	warm POST /api/v1/orders "$TMP/tokens_create.txt" "$TMP/bodies13.txt" "$CONNS"
	for k in "${order[@]}"; do
		checkpoint
		case $k in
		wrk1) run_wrk create "marketd-1item" "$CONNS" 201 POST /api/v1/orders "$TMP/tokens_create.txt" "$TMP/bodies1.txt" ;;
		wrk13) run_wrk create "marketd-1to3items" "$CONNS" 201 POST /api/v1/orders "$TMP/tokens_create.txt" "$TMP/bodies13.txt" ;;
		pgl) run_pgb create "pgbench-literal-1item" "$CONNS" "$PGB_LITERAL" ;;
		pglpool) run_pgb create "pgbench-literal-1item-c$POOL" "$POOL" "$PGB_LITERAL" ;;
		pge1) run_pgb create "pgbench-exact-1item" "$CONNS" "$TMP/pgbench/place_exact_1.sql" ;;
		pge13) run_pgb create "pgbench-exact-1to3items" "$CONNS" "$TMP/pgbench/place_exact_13.sql" ;;
		esac
	done
	i=$(q "SELECT count(*) FROM bench_orders.pool s JOIN products p ON p.id = s.id WHERE p.stock < 1")
	[ "$i" = 0 ] || b_log "WARNING: $i pool products ran out of stock this round (409s)"
}

history_runs() {
	warm GET "$HIST_PATH" "$TMP/tokens_hist.txt" - "$HIST_CONNS"
	if [ $((ROUND % 2)) = 1 ]; then
		run_wrk history "marketd-history" "$HIST_CONNS" 200 GET "$HIST_PATH" "$TMP/tokens_hist.txt" -
		run_pgb history "pgbench-history" "$HIST_CONNS" "$TMP/pgbench/history.sql"
	else
		run_pgb history "pgbench-history" "$HIST_CONNS" "$TMP/pgbench/history.sql"
		run_wrk history "marketd-history" "$HIST_CONNS" 200 GET "$HIST_PATH" "$TMP/tokens_hist.txt" -
	fi
	# With Redis: cold first (a fresh process, a new epoch, no warm-up),
	# then warm (the same process after the warm-up).
	b_log "round $ROUND: restarting the marketd with Redis (cold cache)"
	start_cached
	WRK_PORT=$CACHED_PORT WRK_PID=$CACHED_PID \
		run_wrk history "marketd-history-cold" "$HIST_CONNS" 200 GET "$HIST_PATH" "$TMP/tokens_hist.txt" -
	WRK_PORT=$CACHED_PORT warm GET "$HIST_PATH" "$TMP/tokens_hist.txt" - "$HIST_CONNS"
	WRK_PORT=$CACHED_PORT WRK_PID=$CACHED_PID \
		run_wrk history "marketd-history-warm" "$HIST_CONNS" 200 GET "$HIST_PATH" "$TMP/tokens_hist.txt" -
}

# seq_logins LABEL BODIES: LOGIN_N sequential logins (curl), random bodies.
seq_logins() {
	local label=$1 i code t ok=0 times=() bodies=()
	mapfile -t bodies <"$2"
	b_log "round $ROUND: $LOGIN_N sequential logins ($label)"
	for ((i = 0; i < LOGIN_N; i++)); do
		read -r code t < <(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{time_total}\n' \
			-H 'Content-Type: application/json' --data "${bodies[(RANDOM * 32768 + RANDOM) % ${#bodies[@]}]}" \
			"http://$HOST:$API_PORT/api/v1/auth/login")
		[ "$code" = 200 ] && ok=$((ok + 1))
		times+=("$(awk -v t="$t" 'BEGIN { printf "%.2f", t * 1000 }')")
	done
	local med p90 max
	med=$(b_median "${times[@]}")
	p90=$(printf '%s\n' "${times[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int(NR * 0.9 + 0.5)] }')
	max=$(printf '%s\n' "${times[@]}" | sort -g | tail -n1)
	row "$ROUND" login "$label" 1 - - "$med" "$p90" "$max" "non-200:$((LOGIN_N - ok))" 0 - - - - "$ok" "$LOGIN_N"
	b_log "    median $med ms, p90 $p90 ms, max $max ms; $ok of $LOGIN_N answered 200"
}

login_runs() {
	seq_logins login-sequential "$TMP/bodies_login_new.txt"
	run_wrk login login-wrk "$LOGIN_CONNS" 200 POST /api/v1/auth/login - "$TMP/bodies_login_new.txt"
	seq_logins login-seeded-sequential "$TMP/bodies_login_seeded.txt"
	run_wrk login login-seeded-wrk "$LOGIN_CONNS" 200 POST /api/v1/auth/login - "$TMP/bodies_login_seeded.txt"
}

# --- report ----------------------------------------------------------------------------
# hits_of LABEL: "r1 / r2 / …" of the cache's hit ratio over that label's runs.
hits_of() {
	awk -F'\t' -v l="$1" '$2 == l { printf "%s%s %% (%s hits, %s misses)", (n++ ? " / " : ""), $3, $4, $5 }' "$TMP/hits.tsv"
}
# med LABEL COLUMN: median over rounds of a column of $RESULTS.
med() {
	# shellcheck disable=SC2046
	b_median $(awk -F'\t' -v l="$1" -v c="$2" '$3 == l { print $c }' "$RESULTS")
}
# ratios A B COLUMN: per-round A/B of a column, and their median ("r1 r2 r3|median").
ratios() {
	local list
	list=$(awk -F'\t' -v a="$1" -v b="$2" -v c="$3" '
		$3 == a { va[$1] = $c } $3 == b { vb[$1] = $c }
		END { for (r = 1; r <= 1000; r++) if ((r in va) && (r in vb) && vb[r] > 0 && va[r] != "-")
		          printf "%.2f ", va[r] / vb[r] }' "$RESULTS")
	# shellcheck disable=SC2086
	echo "${list% }|$(b_median $list)"
}
percol() { awk -F'\t' -v l="$1" -v c="$2" '$3 == l { printf "%s%s", (n++ ? ", " : ""), $c }' "$RESULTS"; }
sumcol() { awk -F'\t' -v l="$1" -v c="$2" '$3 == l && $c != "-" { s += $c } END { print s + 0 }' "$RESULTS"; }
nonok_all() { awk -F'\t' -v l="$1" '$3 == l { printf "%s%s", (n++ ? " / " : ""), $10 }' "$RESULTS"; }

line_for() { # LABEL what
	local l=$1
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$(awk -F'\t' -v l="$l" '$3 == l { print $4; exit }' "$RESULTS")" \
		"$(med "$l" 6)" "$(med "$l" 5)" "$(med "$l" 7)" "$(med "$l" 9)" "$(nonok_all "$l")" "$(sumcol "$l" 11)" \
		"$(med "$l" 12)" "$(med "$l" 13)"
}

verdict() { # value op bar
	awk -v v="$1" -v op="$2" -v b="$3" 'BEGIN {
		if (v == "-" || v == "") { print "no data"; exit }
		ok = (op == ">=") ? (v >= b) : (op == "<") ? (v < b) : (v > b)
		print (ok ? "met" : "NOT met") }'
}

write_report() {
	local f=$1 r1 r2 r3 r4 r5 rh pgver
	pgver=$(q "SHOW server_version")
	r1=$(ratios marketd-1item pgbench-literal-1item 6)
	r2=$(ratios marketd-1item pgbench-exact-1item 6)
	r3=$(ratios marketd-1to3items pgbench-exact-1to3items 6)
	r4=$(ratios marketd-1item "pgbench-literal-1item-c$POOL" 6)
	r5=$(ratios pgbench-exact-1item pgbench-literal-1item 6)
	rh=$(ratios marketd-history pgbench-history 6)
	{
		echo "# marketd orders benchmark — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo
		echo "\`bench/orders.sh\`: $ROUNDS rounds of ${DURATION} s per run; medians over the rounds; ratios computed within each round"
		echo "(then their median). Git HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- src migrations 2>/dev/null || echo ' (src/ or migrations/ modified in the work tree)'); $SCHEMA_VERSION."
		echo "marketd: release build, WORKERS=2, DB_POOL_SIZE=$POOL, DB_MAX_OVERFLOW=0, ${DEPTH:+DB_PIPELINE_DEPTH=$DEPTH, }no Redis (but see part 2), access log off; PostgreSQL, marketd and the"
		echo "load generators share the machine's $(nproc) CPUs.$([ "$PARTS" = " create history login " ] || echo " Parts run:$PARTS(ORDERS_PARTS).")"
		echo
		part_on create && {
		echo "## 1. Order creation — POST /api/v1/orders, -c$CONNS"
		echo
		echo "Buyers: $(fmt_n $((BUYER_HI - BUYER_LO + 1))) seeded users ($BUYER_LO..$BUYER_HI), a random one per request (a pre-minted token each)."
		echo "Products: $(fmt_n "$NPIDS") active products with stock ≥ 100 (min $POOL_MIN_STOCK, avg $POOL_AVG_STOCK) of $NSELLERS sellers (seller id % $SELLER_MOD = 5,"
		echo "≥ 3 such products), restocked to their original stock (one UPDATE) before each round; quantity 1 always."
		echo "*1 item*: a random pool product. *1–3 items*: group n = pool product n and the next 0–2 pool products of its seller ($GROUP_MIX)."
		echo "pgbench draws from the same lists (a primary-key lookup in \`bench_orders.pids\` / \`bench_orders.groups\` inside the statement)"
		echo "and the same buyers. A CHECKPOINT precedes every run; run order alternates between rounds."
		echo
		echo "| run | conns | orders/s (201 / inserted) | req/s | p50 ms | p99 ms | not 201 (per round) | socket errors Σ | marketd CPU µs/req | PG CPU µs/req |"
		echo "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|"
		line_for marketd-1item "marketd, 1 item"
		line_for pgbench-literal-1item "pgbench literal, 1 item"
		line_for pgbench-exact-1item "pgbench marketd's statement, 1 item"
		line_for "pgbench-literal-1item-c$POOL" "pgbench literal, 1 item, $POOL conns (= marketd's pool)"
		line_for marketd-1to3items "marketd, 1–3 items"
		line_for pgbench-exact-1to3items "pgbench marketd's statement, 1–3 items"
		echo
		echo "Ratios of orders/s (same round; per round → median):"
		echo
		echo "| ratio | per round | median | bar ≥ 0.5 |"
		echo "|---|---|--:|---|"
		echo "| **marketd 1 item ÷ pgbench literal 1 item (-c$CONNS)** — issue 3's | ${r1%|*} | **${r1#*|}** | $(verdict "${r1#*|}" ">=" 0.5) |"
		echo "| marketd 1 item ÷ pgbench marketd's statement 1 item | ${r2%|*} | ${r2#*|} | $(verdict "${r2#*|}" ">=" 0.5) |"
		echo "| marketd 1–3 items ÷ pgbench marketd's statement 1–3 items | ${r3%|*} | ${r3#*|} | $(verdict "${r3#*|}" ">=" 0.5) |"
		echo "| marketd 1 item ÷ pgbench literal with $POOL conns | ${r4%|*} | ${r4#*|} | – |"
		echo "| pgbench marketd's statement ÷ pgbench literal (1 item) | ${r5%|*} | ${r5#*|} | – |"
		echo
		echo "orders/s: marketd rows count wrk's 201 answers (bench/orders_wrk.lua counts statuses); pgbench rows count the orders actually"
		echo "inserted (orders_id_seq's advance over the run × tps ÷ transactions). Orders inserted during the marketd runs per round"
		echo "(orders_id_seq) vs 201s counted by wrk: $(awk -F'\t' '$2 == "create" && $3 ~ /^marketd/ { printf "%s%s %s/%s", (n++ ? ", " : ""), $3 "-r" $1, $14, $16 }' "$RESULTS")."
		echo "p50/p99: wrk's latency over all answers (2 s timeout); pgbench's from its per-transaction log (-l)."
		echo
		}
		part_on history && {
		echo "## 2. Order history — GET $HIST_PATH, -c$HIST_CONNS"
		echo
		echo "Tokens of the $(fmt_n "$NHB") buyers among $BUYER_LO..$BUYER_HI with orders in the window (ids $HB_MIN..$HB_MAX$([ "$HB_CONTIGUOUS" = 1 ] && echo ', all of them' || echo ', pgbench draws them from bench_orders.hbuyers')):"
		echo "orders each in the window: avg $HB_AVG, min $HB_NMIN, max $HB_NMAX; $HB_FULL of them have more than one page (limit 20, the default)."
		echo "A sample answer: $HIST_ITEMS orders, $HIST_BODY_BYTES bytes."
		echo
		echo "| run | conns | req/s (200) | req/s all | p50 ms | p99 ms | non-200 / failed (per round) | socket errors Σ | marketd CPU µs/req | PG CPU µs/req |"
		echo "|---|--:|--:|--:|--:|--:|---|--:|--:|--:|"
		line_for marketd-history "marketd, no Redis (every request reads PostgreSQL)"
		line_for marketd-history-cold "marketd + Redis, cold (restarted just before, no warm-up)"
		line_for marketd-history-warm "marketd + Redis, warm"
		line_for pgbench-history "pgbench marketd's list SQL"
		echo
		echo "Cache hits per round (marketd_cache_requests_total; first pages cached per user, docs/cache.md):"
		echo "cold $(hits_of marketd-history-cold); warm $(hits_of marketd-history-warm)."
		echo "The marketd + Redis rows' CPU columns leave out Redis's own CPU."
		echo
		echo "- marketd (no Redis) ÷ pgbench (req/s, same round): ${rh%|*} → median **${rh#*|}**"
		echo "- bar p99 < 20 ms at $HIST_CONNS connections, median p99: no Redis $(med marketd-history 9) ms — **$(verdict "$(med marketd-history 9)" "<" 20)**;" \
			"with Redis, cold $(med marketd-history-cold 9) ms — **$(verdict "$(med marketd-history-cold 9)" "<" 20)**;" \
			"warm $(med marketd-history-warm 9) ms — **$(verdict "$(med marketd-history-warm 9)" "<" 20)**"
		echo
		}
		part_on login && {
		echo "## 3. Login — POST /api/v1/auth/login"
		echo
		echo "*Registered*: $LOGIN_USERS accounts registered through marketd at the start of the run (POST /api/v1/auth/register, median"
		echo "$REGISTER_MED ms each), i.e. hashed with the server's parameters: \`$LOGIN_HASH_NEW\`. *Seeded*: users $BUYER_LO..$BUYER_HI of the bench"
		echo "database, whose hash is the one \`marketd seed\` wrote when the cluster was seeded: \`$LOGIN_HASH_SEEDED\`."
		echo "A random account of the set per login; sequential = one curl after another (a new connection each, included)."
		echo
		echo "| measure (median of $ROUNDS rounds) | registered | per round | seeded | per round |"
		echo "|---|--:|---|--:|---|"
		echo "| $LOGIN_N sequential logins: median ms | **$(med login-sequential 7)** | $(percol login-sequential 7) | $(med login-seeded-sequential 7) | $(percol login-seeded-sequential 7) |"
		echo "| … p90 ms | $(med login-sequential 8) | $(percol login-sequential 8) | $(med login-seeded-sequential 8) | $(percol login-seeded-sequential 8) |"
		echo "| wrk -t2 -c$LOGIN_CONNS ${DURATION} s: logins/s (200) | **$(med login-wrk 6)** | $(percol login-wrk 6) | $(med login-seeded-wrk 6) | $(percol login-seeded-wrk 6) |"
		echo "| … p50 ms | $(med login-wrk 7) | $(percol login-wrk 7) | $(med login-seeded-wrk 7) | $(percol login-seeded-wrk 7) |"
		echo "| … p99 ms | $(med login-wrk 9) | $(percol login-wrk 9) | $(med login-seeded-wrk 9) | $(percol login-seeded-wrk 9) |"
		echo "| … marketd CPU µs/login | $(med login-wrk 12) | $(percol login-wrk 12) | $(med login-seeded-wrk 12) | $(percol login-seeded-wrk 12) |"
		echo
		echo "Not 200: registered sequential $(nonok_all login-sequential), wrk $(nonok_all login-wrk); seeded sequential $(nonok_all login-seeded-sequential), wrk $(nonok_all login-seeded-wrk)."
		echo
		}
		echo "## Machine and database"
		echo
		echo "- $(nproc) CPUs ($(lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }')), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "- others' CPU (share of the machine used by processes this script did not start), per run: $(awk -F'\t' '{ printf "%s%s", (n++ ? " " : ""), $15 }' "$RESULTS") %"
		echo "- PostgreSQL $pgver, cluster .data/bench-pg on $HOST:$PG_PORT: $PG_SETTINGS_SHOWN (shared_buffers in 8 kB pages)"
		echo "- bench data: ${SEED_SUMMARY:-?} (seeded ${SEEDED_AT:-?})"
		echo "- $("$WRK" -v 2>&1 | head -n1 | cut -d' ' -f1-2); $("$PGBENCH" --version)"
		echo "- clean-up: $RESTORED_ORDERS orders created by this run (and their items) deleted afterwards, pool stock and updated_at restored,"
		echo "  orders_id_seq reset, helper schema bench_orders dropped, products and the current month's partitions vacuumed."
		echo
		echo "## Commands"
		echo
		echo '```sh'
		echo "build/release/marketd migrate   # DATABASE_URL=$DB_URL"
		echo "env $(printf '%s ' "${MARKETD_ENV[@]}" | sed 's/JWT_SECRET=[^ ]*/JWT_SECRET=<random 64 hex>/')build/release/marketd serve"
		echo "# before each creation run: psql -c CHECKPOINT; before each round: UPDATE products ... (restock the pool)"
		echo "wrk -t2 -c$CONNS -d${DURATION}s --latency -s bench/orders_wrk.lua http://$HOST:$API_PORT -- POST /api/v1/orders tokens_create.txt bodies1.txt   # or bodies13.txt"
		echo "pgbench -n -M prepared -c $CONNS -j 2 -T $DURATION -l -h $HOST -p $PG_PORT -U postgres -D buyer_lo=$BUYER_LO -D buyer_hi=$BUYER_HI -D npids=$NPIDS -f bench/orders_place_literal.sql $DB_NAME"
		echo "pgbench -n -M prepared -c $CONNS -j 2 -T $DURATION -l ... -f place_exact_1.sql | place_exact_13.sql $DB_NAME   # below"
		echo "pgbench -n -M prepared -c $POOL -j 2 -T $DURATION -l ... -f bench/orders_place_literal.sql $DB_NAME"
		echo "wrk -t2 -c$HIST_CONNS -d${DURATION}s --latency -s bench/orders_wrk.lua http://$HOST:$API_PORT -- GET '$HIST_PATH' tokens_hist.txt -"
		echo "redis-server --bind $HOST --port $REDIS_PORT --save '' --appendonly no --maxmemory 512mb --maxmemory-policy volatile-lru"
		echo "# the same marketd with LISTEN=$HOST:$CACHED_PORT REDIS_URL=redis://$HOST:$REDIS_PORT, started again before each cold run"
		echo "wrk -t2 -c$HIST_CONNS -d${DURATION}s --latency -s bench/orders_wrk.lua http://$HOST:$CACHED_PORT -- GET '$HIST_PATH' tokens_hist.txt -   # cold, then warm after a ${WARMUP} s warm-up"
		echo "pgbench -n -M prepared -c $HIST_CONNS -j 2 -T $DURATION -l -h $HOST -p $PG_PORT -U postgres -D hfrom=${HIST_FROM}T00:00:00Z -D hto=$HIST_TO -f history.sql $DB_NAME"
		printf '%s\n' "for i in \$(seq $LOGIN_N); do curl -s -o /dev/null -w '%{time_total}\\n' -H 'Content-Type: application/json' --data '<random line of bodies_login_*.txt>' http://$HOST:$API_PORT/api/v1/auth/login; done"
		echo "wrk -t2 -c$LOGIN_CONNS -d${DURATION}s --latency -s bench/orders_wrk.lua http://$HOST:$API_PORT -- POST /api/v1/auth/login - bodies_login_new.txt   # or bodies_login_seeded.txt"
		echo '```'
		echo
		echo "Statements captured from pg_stat_activity after one request to marketd, and the pgbench scripts made from them:"
		echo
		echo '```sql'
		echo "-- marketd, POST /api/v1/orders"
		echo "$PLACE_SQL;"
		echo "-- marketd, GET /api/v1/orders?from&to"
		echo "$LIST_SQL;"
		echo "-- place_exact_1.sql"
		cat "$TMP/pgbench/place_exact_1.sql"
		echo "-- place_exact_13.sql"
		cat "$TMP/pgbench/place_exact_13.sql"
		echo "-- history.sql"
		cat "$TMP/pgbench/history.sql"
		echo "-- bench/orders_place_literal.sql"
		grep -v '^--' "$PGB_LITERAL"
		echo '```'
		echo
		echo "<details><summary>Raw rows (round, part, run, conns, req/s, ok/s, p50, p90, p99 ms, not ok, socket errors, marketd CPU µs/req, PG CPU µs/req, orders inserted, others' CPU %, ok, total)</summary>"
		echo
		echo '```'
		cat "$RESULTS"
		echo '```'
		echo
		echo "</details>"
	} >"$f"
}
fmt_n() { printf "%'d" "$1" 2>/dev/null || echo "$1"; }

# --- main -----------------------------------------------------------------------------------
preflight
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
pg_up
prepare_data
RESULTS=$TMP/results.tsv
: >"$RESULTS"
start_marketd
start_redis
: >"$TMP/hits.tsv"
make_pgbench_scripts
part_on login && make_login_users
b_log "$ROUNDS rounds:$PARTS(create: 6 runs, history: 4 runs, login: $LOGIN_N sequential logins and 1 run)"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	part_on create && create_runs
	part_on history && history_runs
	part_on login && login_runs
done
b_stop_pid "$MARKETD_PID" marketd 10
MARKETD_PID=
b_stop_pid "$CACHED_PID" marketd 10
b_stop_pid "$REDIS_PID" redis-server 10
CACHED_PID= REDIS_PID=
restore_db || b_log "restore failed; see above"
DB_TOUCHED=0

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [ -n "$TAG" ]; then
	OUT=$ROOT/bench/results/orders-$STAMP-$TAG.md
else
	OUT=$ROOT/bench/results/orders-$STAMP.md
fi
write_report "$OUT.tmp" && mv "$OUT.tmp" "$OUT" || b_die "writing the report failed"
[ -n "$TAG" ] || cp "$OUT" "$ROOT/bench/results/orders-latest.md"
echo
sed '/^## Commands/,$d' "$OUT"
b_log "results: ${OUT#"$ROOT"/}$([ -n "$TAG" ] || echo " and bench/results/orders-latest.md")"
