#!/usr/bin/env bash
# The local stack behind `make run` / `make stop` / `make status`:
#   PostgreSQL 15  127.0.0.1:15432  cluster in .data/pg, logs .data/logs/postgresql.log
#   Redis          127.0.0.1:16379  .data/redis, logs .data/logs/redis.log (the cache)
#   marketd        127.0.0.1:8081   build/release/marketd serve, .data/logs/marketd.log
#   nginx          127.0.0.1:8080   proxy to marketd + /media/ from .data/media
# All state lives in .data/ (git-ignored) and survives `stop`; delete .data/
# to start from scratch. Plain processes only, nothing system-wide is touched,
# and a port held by anything we did not start is reported, never taken over.
#
# Usage: scripts/stack.sh start|stop|status
# Env:   MARKETD_BIN (default build/release/marketd), NGINX_BIN, PG_BIN;
#        STACK_DATA, STACK_PG_PORT, STACK_REDIS_PORT, STACK_API_PORT, STACK_WEB_PORT:
#        another state dir and ports (tests/stack/check.sh runs a second stack so);
#        EDGE_AUTH_RATE, EDGE_AUTH_BURST, EDGE_API_RATE, EDGE_API_BURST: nginx's
#        rate limits per client address (scripts/render-nginx.sh has the defaults).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=tests/lib/pg.sh
. "$ROOT/tests/lib/pg.sh"

HOST=127.0.0.1
# Below the kernel's ephemeral range (32768-60999 here): a fixed port in it
# can be taken for a moment by any outgoing connection.
PG_PORT=${STACK_PG_PORT:-15432}
API_PORT=${STACK_API_PORT:-8081}
REDIS_PORT=${STACK_REDIS_PORT:-16379}
WEB_PORT=${STACK_WEB_PORT:-8080}
DB_NAME=marketd
DB_URL="postgresql://postgres@$HOST:$PG_PORT/$DB_NAME"
BASE_URL="http://$HOST:$WEB_PORT"

DATA=${STACK_DATA:-$ROOT/.data}
LOGS=$DATA/logs
MEDIA=$DATA/media
BACKEND_PIDFILE=$DATA/marketd.pid
# The sha256 of the binary the running backend was started from: `make run`
# after a rebuild restarts the backend when it differs.
BACKEND_SHAFILE=$DATA/marketd.sha256
BACKEND_LOG=$LOGS/marketd.log
JWT_FILE=$DATA/jwt_secret
NGINX_PREFIX=$DATA/nginx
NGINX_CONF=$NGINX_PREFIX/nginx.conf
NGINX_TEMPLATE=$ROOT/deploy/local/nginx.conf.in
REDIS_DIR=$DATA/redis
REDIS_PIDFILE=$REDIS_DIR/redis.pid
REDIS_BIN=${REDIS_BIN:-/usr/bin/redis-server}

MARKETD_BIN=${MARKETD_BIN:-$ROOT/build/release/marketd}
case $MARKETD_BIN in /*) ;; *) MARKETD_BIN=$PWD/$MARKETD_BIN ;; esac
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
READY_TIMEOUT=30     # s for /readyz after starting the backend
DRAIN_TIMEOUT=15     # s between SIGTERM and SIGKILL for the backend
NGINX_QUIT_TIMEOUT=10

say() { printf 'marketd: %s\n' "$*"; }
die() {
	printf 'marketd: error: %s\n' "$*" >&2
	exit 1
}
is_root() { [ "$(id -u)" -eq 0 ]; }

# --- processes and ports ------------------------------------------------------

# pid_alive PID [WORD]: PID runs (not a zombie) and, if WORD is given, its
# command line contains WORD (guards against a recycled pid).
pid_alive() {
	local pid=$1 word=${2:-} state cmd
	case $pid in '' | *[!0-9]*) return 1 ;; esac
	kill -0 "$pid" 2>/dev/null || return 1
	state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
	[ "$state" != Z ] || return 1
	if [ -n "$word" ]; then
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
		case $cmd in *"$word"*) ;; *) return 1 ;; esac
	fi
	return 0
}

pidfile_pid() { # pidfile_pid FILE WORD → the live pid it names, or nothing
	local pid
	[ -r "$1" ] || return 0
	pid=$(head -n1 "$1" 2>/dev/null | tr -dc 0-9)
	if pid_alive "$pid" "$2"; then printf '%s\n' "$pid"; fi
}

port_in_use() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

port_holder() { # who listens on port $1, as far as we may see
	local who
	who=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n1 |
		sed -E 's/^users:\(\("([^"]*)",pid=([0-9]+).*/\1 (pid \2)/')
	printf '%s' "${who:-a process of another user}"
}

wait_gone() { # wait_gone PID SECONDS → 0 once PID has exited
	local pid=$1 n=$(($2 * 10))
	while [ "$n" -gt 0 ]; do
		pid_alive "$pid" || return 0
		sleep 0.1
		n=$((n - 1))
	done
	! pid_alive "$pid"
}

# --- PostgreSQL ---------------------------------------------------------------

# The cluster directory: .data/pg, or — when we are root and the postgres user
# cannot reach the checkout (e.g. under /root) — /var/tmp/marketd-<hash>/pg
# with .data/pg a symlink to it. Prints nothing if it does not exist yet.
pg_dir_lookup() {
	if [ -L "$DATA/pg" ]; then
		readlink "$DATA/pg"
	elif [ -d "$DATA/pg" ]; then
		printf '%s\n' "$DATA/pg"
	fi
}

pg_dir_prepare() {
	local dir hash base
	dir=$(pg_dir_lookup)
	if [ -n "$dir" ]; then
		if [ -L "$DATA/pg" ] && [ ! -d "$dir" ]; then
			# The symlink's target was cleaned away: make a new, empty cluster.
			pg_dir_make_fallback "$dir" || return 1
		fi
		printf '%s\n' "$dir"
		return 0
	fi
	mkdir -p "$DATA/pg" || return 1
	if ! is_root; then
		printf '%s\n' "$DATA/pg"
		return 0
	fi
	chmod go+x "$DATA" && chown postgres:postgres "$DATA/pg" || return 1
	if (cd / && runuser -u postgres -- test -w "$DATA/pg"); then
		printf '%s\n' "$DATA/pg"
		return 0
	fi
	rmdir "$DATA/pg"
	hash=$(printf '%s' "$DATA" | sha256sum | cut -c1-12)
	base=/var/tmp/marketd-$hash
	pg_dir_make_fallback "$base/pg" || return 1
	ln -s "$base/pg" "$DATA/pg" || return 1
	say "postgres cannot reach $ROOT; cluster kept in $base/pg (.data/pg links to it)" >&2
	printf '%s\n' "$base/pg"
}

pg_dir_make_fallback() { # $1 = /var/tmp/marketd-<hash>/pg
	local base
	base=$(dirname "$1")
	if [ ! -d "$base" ]; then
		mkdir -m 755 "$base" || return 1
	fi
	# /var/tmp is world-writable: use the directory only if it is really ours.
	if [ -L "$base" ] || [ "$(stat -c %u "$base")" != "$(id -u)" ]; then
		printf 'marketd: error: %s exists and is not owned by us\n' "$base" >&2
		return 1
	fi
	mkdir -p "$1" && chown postgres:postgres "$1"
}

pg_status_pid() {
	local dir
	dir=$(pg_dir_lookup)
	[ -n "$dir" ] || return 0
	pg_tmp_pid "$dir"
}

psql_q() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"; }

start_postgres() {
	local dir
	dir=$(pg_dir_prepare) || die "cannot prepare the PostgreSQL directory .data/pg"
	if pg_tmp_running "$dir"; then
		return 0
	fi
	say "starting PostgreSQL 15 on $HOST:$PG_PORT (cluster $dir)"
	# shared_buffers 512MB needs no kernel tuning: PostgreSQL 15 uses mmap.
	PG_TMP_LOG=$LOGS/postgresql.log pg_tmp_start "$dir" "$PG_PORT" \
		max_connections=400 shared_buffers=512MB ||
		die "PostgreSQL did not start (log: $LOGS/postgresql.log)"
}

ensure_database() {
	local exists
	exists=$(psql_q -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ||
		die "cannot query PostgreSQL on $HOST:$PG_PORT"
	if [ "$exists" != 1 ]; then
		say "creating database $DB_NAME"
		psql_q -d postgres -c "CREATE DATABASE $DB_NAME" >/dev/null ||
			die "CREATE DATABASE $DB_NAME failed"
	fi
}

migrate_and_seed() {
	local log=$LOGS/setup.log has_data
	say "migrate (log: $log)"
	if ! DATABASE_URL=$DB_URL "$MARKETD_BIN" migrate </dev/null >>"$log" 2>&1; then
		tail -n 20 "$log" >&2
		die "marketd migrate failed"
	fi
	# Seed only an empty database: a restart must not duplicate demo data.
	has_data=$(psql_q -d "$DB_NAME" -tAc "SELECT EXISTS (SELECT 1 FROM users)" 2>/dev/null)
	if [ "$has_data" = t ]; then
		return 0
	fi
	say "seed --scale demo (log: $log)"
	if ! DATABASE_URL=$DB_URL "$MARKETD_BIN" seed --scale demo </dev/null >>"$log" 2>&1; then
		tail -n 20 "$log" >&2
		die "marketd seed --scale demo failed"
	fi
}

# --- the backend ----------------------------------------------------------------

redis_pid() { pidfile_pid "$REDIS_PIDFILE" "redis-server"; }

start_redis() {
	mkdir -p "$REDIS_DIR" || die "cannot create $REDIS_DIR"
	say "starting Redis on $HOST:$REDIS_PORT (log: $LOGS/redis.log)"
	# volatile-lru: Redis may evict cache entries (they have TTLs) but never
	# the tag versions (no TTL) — docs/cache.md.
	"$REDIS_BIN" --bind "$HOST" --port "$REDIS_PORT" --dir "$REDIS_DIR" --pidfile "$REDIS_PIDFILE" \
		--logfile "$LOGS/redis.log" --daemonize yes --save '' --appendonly no \
		--maxmemory 256mb --maxmemory-policy volatile-lru ||
		die "redis-server failed to start; see $LOGS/redis.log"
	local deadline=$((SECONDS + 10))
	until redis-cli -h "$HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || die "Redis not answering on $HOST:$REDIS_PORT; see $LOGS/redis.log"
		sleep 0.1
	done
}

stop_redis() {
	local pid
	pid=$(redis_pid)
	if [ -z "$pid" ]; then
		say "redis: not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null
	wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null
	say "redis: stopped (pid $pid)"
}

backend_pid() { pidfile_pid "$BACKEND_PIDFILE" "$MARKETD_BIN serve"; }

backend_ready() { curl -fsS -o /dev/null -m 1 "http://$HOST:$API_PORT/readyz" 2>/dev/null; }

jwt_secret() {
	if [ ! -s "$JWT_FILE" ]; then
		if ! (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$JWT_FILE.tmp" &&
			mv "$JWT_FILE.tmp" "$JWT_FILE"); then
			die "cannot write $JWT_FILE"
		fi
	fi
	cat "$JWT_FILE"
}

start_backend() {
	local secret pid
	secret=$(jwt_secret) || exit 1
	say "starting backend on $HOST:$API_PORT (log: $BACKEND_LOG)"
	printf '\n==== %s marketd serve\n' "$(date -u +%FT%TZ)" >>"$BACKEND_LOG"
	# setsid: the server does not get the terminal's Ctrl-C meant for make.
	# Variables not set here keep their defaults or the caller's values; the
	# drain is kept shorter than `stop`'s patience before SIGKILL.
	(
		cd "$ROOT" || exit 1
		exec env LISTEN="$HOST:$API_PORT" DATABASE_URL="$DB_URL" MEDIA_DIR="$MEDIA" \
			CDN_BASE_URL="$BASE_URL/media" JWT_SECRET="$secret" REDIS_URL="redis://$HOST:$REDIS_PORT" \
			SHUTDOWN_TIMEOUT_MS="${SHUTDOWN_TIMEOUT_MS:-$(((DRAIN_TIMEOUT - 3) * 1000))}" \
			setsid "$MARKETD_BIN" serve </dev/null >>"$BACKEND_LOG" 2>&1
	) &
	pid=$!
	printf '%s\n' "$pid" >"$BACKEND_PIDFILE"
	binary_sha >"$BACKEND_SHAFILE"
}

binary_sha() { sha256sum "$MARKETD_BIN" | cut -d' ' -f1; }

# The running backend was started from another binary than the current build.
backend_outdated() {
	[ "$(cat "$BACKEND_SHAFILE" 2>/dev/null)" != "$(binary_sha)" ]
}

wait_backend_ready() {
	local pid=$1 deadline=$((SECONDS + READY_TIMEOUT))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if backend_ready; then
			return 0
		fi
		if ! pid_alive "$pid"; then
			say "backend exited during start-up; last lines of $BACKEND_LOG:" >&2
			tail -n 30 "$BACKEND_LOG" >&2
			rm -f "$BACKEND_PIDFILE"
			exit 1
		fi
		sleep 0.2
	done
	say "backend not ready after ${READY_TIMEOUT}s (GET /readyz); last lines of $BACKEND_LOG:" >&2
	tail -n 30 "$BACKEND_LOG" >&2
	exit 1
}

stop_backend() {
	local pid
	pid=$(backend_pid)
	if [ -z "$pid" ]; then
		rm -f "$BACKEND_PIDFILE"
		say "backend: not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null
	if wait_gone "$pid" "$DRAIN_TIMEOUT"; then
		say "backend: stopped (pid $pid)"
	else
		kill -KILL "$pid" 2>/dev/null
		wait_gone "$pid" 5
		say "backend: did not drain within ${DRAIN_TIMEOUT}s, killed (pid $pid)"
	fi
	rm -f "$BACKEND_PIDFILE"
}

# --- nginx ----------------------------------------------------------------------

nginx_pid() { pidfile_pid "$NGINX_PREFIX/nginx.pid" "nginx -p $NGINX_PREFIX "; }

write_nginx_conf() {
	[ -r "$NGINX_TEMPLATE" ] || die "$NGINX_TEMPLATE missing"
	# API docs at /docs: Swagger UI vendored from npm at build time. Optional:
	# without Node.js/npm or without the npm registry the API still runs, and
	# /docs/ says why it has no Swagger UI (the contract is served anyway).
	if ! bash "$ROOT/docs/swagger/build.sh" "$ROOT/build/docs" >>"$LOGS/setup.log" 2>&1; then
		say "warning: Swagger UI not built (npm failed; see $LOGS/setup.log): /docs/ serves a plain page and api/openapi.yaml" >&2
		docs_fallback "$ROOT/build/docs" || die "cannot write $ROOT/build/docs"
	fi
	# The EDGE_* rate limits of the environment reach the template here.
	bash "$ROOT/scripts/render-nginx.sh" "$NGINX_PREFIX" "$HOST:$WEB_PORT" "$HOST:$API_PORT" "$MEDIA" \
		"$ROOT/build/docs" || die "cannot write $NGINX_CONF"
}

# docs_fallback DIR: /docs/ without Swagger UI — a page saying why, and the
# contract itself. A previous successful build is kept as it is.
docs_fallback() {
	local out=$1
	[ -f "$out/swagger-ui-bundle.js" ] && return 0
	mkdir -p "$out" || return 1
	cp "$ROOT/api/openapi.yaml" "$out/openapi.yaml" || return 1
	cat >"$out/index.html" <<'HTML'
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>marketd API</title></head>
<body>
<h1>marketd API</h1>
<p>Swagger UI was not built: <code>docs/swagger/build.sh</code> needs Node.js, npm and the npm registry
(see <code>.data/logs/setup.log</code>). The API works without it.</p>
<p>The contract: <a href="openapi.yaml">openapi.yaml</a> (also served by the backend at <code>/openapi.yaml</code> and <code>/openapi.json</code>).</p>
</body></html>
HTML
}

nginx_cmd() { "$NGINX_BIN" -p "$NGINX_PREFIX" -c "$NGINX_CONF" -e "$NGINX_PREFIX/logs/error.log" "$@"; }

start_nginx() {
	[ -x "$NGINX_BIN" ] || die "$NGINX_BIN not found (nginx-light; run scripts/deps.sh)"
	write_nginx_conf
	say "starting nginx on $HOST:$WEB_PORT (logs: $NGINX_PREFIX/logs/)"
	if ! nginx_cmd -g 'daemon on;' </dev/null >>"$NGINX_PREFIX/logs/error.log" 2>&1; then
		tail -n 20 "$NGINX_PREFIX/logs/error.log" >&2
		die "nginx did not start"
	fi
	for _ in $(seq 1 50); do
		[ -n "$(nginx_pid)" ] && return 0
		sleep 0.1
	done
	die "nginx started but wrote no pid file within 5 s"
}

stop_nginx() {
	local pid
	pid=$(nginx_pid)
	if [ -z "$pid" ]; then
		say "nginx: not running"
		return 0
	fi
	# -s quit: finish the requests in flight, then exit.
	if [ -r "$NGINX_CONF" ]; then
		nginx_cmd -s quit </dev/null >/dev/null 2>&1 || kill -QUIT "$pid" 2>/dev/null
	else
		kill -QUIT "$pid" 2>/dev/null
	fi
	if ! wait_gone "$pid" "$NGINX_QUIT_TIMEOUT"; then
		kill -TERM "$pid" 2>/dev/null
		wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null
	fi
	say "nginx: stopped (pid $pid)"
}

# --- commands -------------------------------------------------------------------

cmd_start() {
	local pg_pid be_pid ng_pid rd_pid pid conflicts=()
	[ -x "$MARKETD_BIN" ] || die "$MARKETD_BIN not found: run 'make build' first ('make run' does both)"
	mkdir -p "$DATA" "$LOGS" "$MEDIA" || die "cannot create $DATA"

	pg_pid=$(pg_status_pid)
	be_pid=$(backend_pid)
	ng_pid=$(nginx_pid)
	rd_pid=$(redis_pid)
	if [ -n "$be_pid" ] && backend_outdated; then
		# A rebuilt binary: drain the old backend, migrate, start the new one.
		say "the backend binary changed since it started: restarting it"
		stop_backend
		be_pid=""
	fi
	if [ -n "$ng_pid" ]; then
		# nginx picks up a changed template or EDGE_* settings by a reload.
		write_nginx_conf
		nginx_cmd -s reload </dev/null >>"$NGINX_PREFIX/logs/error.log" 2>&1 || say "nginx: reload failed (see its error.log)"
	fi
	if [ -n "$pg_pid" ] && [ -n "$be_pid" ] && [ -n "$ng_pid" ] && [ -n "$rd_pid" ] && backend_ready; then
		say "already running at $BASE_URL (the backend runs the current build)"
		exit 0
	fi

	# Refuse before starting anything if a port we need is someone else's.
	if [ -z "$pg_pid" ] && port_in_use "$PG_PORT"; then
		conflicts+=("port $PG_PORT (PostgreSQL) is in use by $(port_holder "$PG_PORT")")
	fi
	if [ -z "$rd_pid" ] && port_in_use "$REDIS_PORT"; then
		conflicts+=("port $REDIS_PORT (Redis) is in use by $(port_holder "$REDIS_PORT")")
	fi
	if [ -z "$be_pid" ] && port_in_use "$API_PORT"; then
		conflicts+=("port $API_PORT (backend) is in use by $(port_holder "$API_PORT")")
	fi
	if [ -z "$ng_pid" ] && port_in_use "$WEB_PORT"; then
		conflicts+=("port $WEB_PORT (nginx) is in use by $(port_holder "$WEB_PORT")")
	fi
	if [ "${#conflicts[@]}" -gt 0 ]; then
		printf 'marketd: error: %s, not started by this stack\n' "${conflicts[@]}" >&2
		die "free the port(s) above (we never stop processes we did not start), then retry"
	fi

	if [ -z "$pg_pid" ]; then
		start_postgres
	fi
	if [ -z "$rd_pid" ]; then
		start_redis
	fi
	if [ -z "$be_pid" ]; then
		ensure_database
		migrate_and_seed
		start_backend
		be_pid=$(head -n1 "$BACKEND_PIDFILE")
	fi
	wait_backend_ready "$be_pid"
	if [ -z "$ng_pid" ]; then
		start_nginx
	fi
	pid=$(nginx_pid)
	curl -fsS -o /dev/null -m 5 "$BASE_URL/readyz" ||
		die "nginx (pid $pid) does not reach the backend: see $NGINX_PREFIX/logs/error.log"

	cat <<EOF

marketd is running.
  API       $BASE_URL/api/v1/...   (nginx -> backend $HOST:$API_PORT)
  try       curl -s '$BASE_URL/api/v1/products?limit=3'
  log in    curl -s -X POST $BASE_URL/api/v1/auth/login -H 'Content-Type: application/json' \\
              -d '{"email":"admin@example.com","password":"password123"}'
  admin     admin@example.com / password123
  database  $DB_URL
  cache     redis://$HOST:$REDIS_PORT
  logs      $LOGS/ (marketd.log, postgresql.log, setup.log), $NGINX_PREFIX/logs/
  state     make status; stop with: make stop (data is kept in .data/)
EOF
}

cmd_stop() {
	local dir
	# Edge first, then the backend drains, then its database.
	stop_nginx
	stop_backend
	stop_redis
	dir=$(pg_dir_lookup)
	if [ -n "$dir" ] && pg_tmp_running "$dir"; then
		if pg_tmp_stop "$dir"; then
			say "postgres: stopped"
		else
			die "postgres: could not stop the cluster in $dir"
		fi
	else
		say "postgres: not running"
	fi
}

cmd_status() {
	local pid all_up=1 ready
	line() { printf '%-9s %-5s %-12s %s\n' "$1" "$2" "${3:+pid $3}" "$4"; }

	pid=$(pg_status_pid)
	if [ -n "$pid" ]; then line postgres up "$pid" "$HOST:$PG_PORT"; else
		line postgres down "" "$HOST:$PG_PORT"
		all_up=0
	fi
	pid=$(redis_pid)
	if [ -n "$pid" ]; then line redis up "$pid" "$HOST:$REDIS_PORT"; else
		line redis down "" "$HOST:$REDIS_PORT"
		all_up=0
	fi
	pid=$(backend_pid)
	if [ -n "$pid" ]; then
		ready=ready
		backend_ready || ready="not ready (/readyz)"
		line backend up "$pid" "$HOST:$API_PORT $ready"
		[ "$ready" = ready ] || all_up=0
	else
		line backend down "" "$HOST:$API_PORT"
		all_up=0
	fi
	pid=$(nginx_pid)
	if [ -n "$pid" ]; then line nginx up "$pid" "$HOST:$WEB_PORT"; else
		line nginx down "" "$HOST:$WEB_PORT"
		all_up=0
	fi
	[ "$all_up" = 1 ] || exit 3
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac
