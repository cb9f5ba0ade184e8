#!/usr/bin/env bash
# Monitoring for the local stack (S14), next to scripts/stack.sh:
#   Prometheus            127.0.0.1:9090  Debian's `prometheus`, data in .data/prometheus/data
#   postgres_exporter     127.0.0.1:9187  Debian's `prometheus-postgres-exporter`, when installed
#   redis_exporter        127.0.0.1:9121  Debian's `prometheus-redis-exporter`, when installed
#                                         and a Redis answers on $MONITORING_REDIS_ADDR
# Prometheus scrapes the backend at 127.0.0.1:8081 (not nginx: the numbers
# are per instance) with deploy/prometheus/prometheus.yml and evaluates
# deploy/prometheus/alerts.yml; both are copied into .data/prometheus/ on
# every start, and a running Prometheus is told to reload them (SIGHUP).
# Import deploy/grafana/marketd.json into a Grafana pointed at
# http://127.0.0.1:9090 for the dashboard.
#
# Plain processes on loopback only, nothing system-wide; a port held by a
# process we did not start is reported, never taken over. Exporters are
# optional: a missing one is skipped with a note.
#
# Usage: scripts/monitoring.sh start|stop|status
# Env:   PROMETHEUS_BIN (default /usr/bin/prometheus),
#        MONITORING_REDIS_ADDR (default 127.0.0.1:16379, the stack's Redis)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

HOST=127.0.0.1
PROM_PORT=9090
PG_EXPORTER_PORT=9187
REDIS_EXPORTER_PORT=9121
PG_PORT=15432 # scripts/stack.sh
DB_NAME=marketd
REDIS_ADDR=${MONITORING_REDIS_ADDR:-127.0.0.1:16379} # scripts/stack.sh

DATA=$ROOT/.data
LOGS=$DATA/logs
PROM_DIR=$DATA/prometheus
PROM_CONF=$PROM_DIR/prometheus.yml
TARGETS=$PROM_DIR/targets
SRC_DIR=$ROOT/deploy/prometheus

PROMETHEUS_BIN=${PROMETHEUS_BIN:-/usr/bin/prometheus}
PG_EXPORTER_BIN=/usr/bin/prometheus-postgres-exporter
REDIS_EXPORTER_BIN=/usr/bin/prometheus-redis-exporter
READY_TIMEOUT=30

say() { printf 'monitoring: %s\n' "$*"; }
die() {
	printf 'monitoring: error: %s\n' "$*" >&2
	exit 1
}

# --- processes and ports (as in scripts/stack.sh) -------------------------------

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

port_holder() {
	local who
	who=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n1 |
		sed -E 's/^users:\(\("([^"]*)",pid=([0-9]+).*/\1 (pid \2)/')
	printf '%s' "${who:-a process of another user}"
}

tcp_answers() { # tcp_answers HOST:PORT → 0 if something accepts a connection
	local h=${1%:*} p=${1##*:}
	timeout 2 bash -c "exec 3<>/dev/tcp/$h/$p" 2>/dev/null
}

wait_gone() {
	local pid=$1 n=$(($2 * 10))
	while [ "$n" -gt 0 ]; do
		pid_alive "$pid" || return 0
		sleep 0.1
		n=$((n - 1))
	done
	! pid_alive "$pid"
}

# start_bg NAME PIDFILE LOG CMD... : runs CMD detached (own session, no
# terminal, no stdin), appending to LOG, and records its pid.
start_bg() {
	local name=$1 pidfile=$2 log=$3
	shift 3
	printf '\n==== %s %s\n' "$(date -u +%FT%TZ)" "$name" >>"$log"
	(
		cd "$PROM_DIR" || exit 1
		exec setsid "$@" </dev/null >>"$log" 2>&1
	) &
	printf '%s\n' "$!" >"$pidfile"
}

stop_pidfile() { # stop_pidfile NAME PIDFILE WORD
	local name=$1 pidfile=$2 word=$3 pid
	pid=$(pidfile_pid "$pidfile" "$word")
	if [ -z "$pid" ]; then
		rm -f "$pidfile"
		say "$name: not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null
	if ! wait_gone "$pid" 15; then
		kill -KILL "$pid" 2>/dev/null
		wait_gone "$pid" 5
	fi
	rm -f "$pidfile"
	say "$name: stopped (pid $pid)"
}

# --- the components ---------------------------------------------------------------

PROM_PIDFILE=$PROM_DIR/prometheus.pid
PG_EXP_PIDFILE=$PROM_DIR/postgres_exporter.pid
REDIS_EXP_PIDFILE=$PROM_DIR/redis_exporter.pid
# The words that identify our processes on their command lines.
PROM_WORD="--config.file=$PROM_CONF"
PG_EXP_WORD="--web.listen-address=$HOST:$PG_EXPORTER_PORT"
REDIS_EXP_WORD="-web.listen-address=$HOST:$REDIS_EXPORTER_PORT"

prom_pid() { pidfile_pid "$PROM_PIDFILE" "$PROM_WORD"; }
pg_exp_pid() { pidfile_pid "$PG_EXP_PIDFILE" "$PG_EXP_WORD"; }
redis_exp_pid() { pidfile_pid "$REDIS_EXP_PIDFILE" "$REDIS_EXP_WORD"; }

prom_ready() { curl -fsS -o /dev/null -m 1 "http://$HOST:$PROM_PORT/-/ready" 2>/dev/null; }

write_target() { # write_target NAME ADDR
	printf '[{"targets": ["%s"]}]\n' "$2" >"$TARGETS/$1.json.tmp" &&
		mv "$TARGETS/$1.json.tmp" "$TARGETS/$1.json"
}

install_config() {
	mkdir -p "$PROM_DIR/data" "$TARGETS" "$LOGS" || die "cannot create $PROM_DIR"
	for f in prometheus.yml alerts.yml; do
		[ -r "$SRC_DIR/$f" ] || die "$SRC_DIR/$f missing"
		if ! cp "$SRC_DIR/$f" "$PROM_DIR/$f.tmp" || ! mv "$PROM_DIR/$f.tmp" "$PROM_DIR/$f"; then
			die "cannot write $PROM_DIR/$f"
		fi
	done
	if [ -x /usr/bin/promtool ] && ! /usr/bin/promtool check config "$PROM_CONF" >/dev/null 2>&1; then
		/usr/bin/promtool check config "$PROM_CONF" >&2
		die "$PROM_CONF does not pass promtool check config"
	fi
}

start_pg_exporter() {
	local pid
	pid=$(pg_exp_pid)
	if [ -n "$pid" ]; then
		write_target postgres "$HOST:$PG_EXPORTER_PORT"
		return 0
	fi
	if [ ! -x "$PG_EXPORTER_BIN" ]; then
		rm -f "$TARGETS/postgres.json"
		say "postgres_exporter: skipped (apt-get install prometheus-postgres-exporter to add it)"
		return 0
	fi
	if port_in_use "$PG_EXPORTER_PORT"; then
		rm -f "$TARGETS/postgres.json"
		say "postgres_exporter: skipped, port $PG_EXPORTER_PORT is in use by $(port_holder "$PG_EXPORTER_PORT")"
		return 0
	fi
	say "starting postgres_exporter on $HOST:$PG_EXPORTER_PORT (PostgreSQL $HOST:$PG_PORT)"
	# The local cluster trusts loopback connections (tests/lib/pg.sh): no secret here.
	start_bg postgres_exporter "$PG_EXP_PIDFILE" "$LOGS/postgres_exporter.log" \
		env DATA_SOURCE_NAME="postgresql://postgres@$HOST:$PG_PORT/$DB_NAME?sslmode=disable" \
		"$PG_EXPORTER_BIN" "$PG_EXP_WORD"
	write_target postgres "$HOST:$PG_EXPORTER_PORT"
}

start_redis_exporter() {
	local pid
	pid=$(redis_exp_pid)
	if [ -n "$pid" ]; then
		write_target redis "$HOST:$REDIS_EXPORTER_PORT"
		return 0
	fi
	rm -f "$TARGETS/redis.json"
	if [ ! -x "$REDIS_EXPORTER_BIN" ]; then
		say "redis_exporter: skipped (apt-get install prometheus-redis-exporter to add it)"
		return 0
	fi
	if ! tcp_answers "$REDIS_ADDR"; then
		say "redis_exporter: skipped, no Redis answers on $REDIS_ADDR (MONITORING_REDIS_ADDR)"
		return 0
	fi
	if port_in_use "$REDIS_EXPORTER_PORT"; then
		say "redis_exporter: skipped, port $REDIS_EXPORTER_PORT is in use by $(port_holder "$REDIS_EXPORTER_PORT")"
		return 0
	fi
	say "starting redis_exporter on $HOST:$REDIS_EXPORTER_PORT (Redis $REDIS_ADDR)"
	start_bg redis_exporter "$REDIS_EXP_PIDFILE" "$LOGS/redis_exporter.log" \
		"$REDIS_EXPORTER_BIN" -redis.addr "redis://$REDIS_ADDR" "$REDIS_EXP_WORD"
	write_target redis "$HOST:$REDIS_EXPORTER_PORT"
}

start_prometheus() {
	local pid deadline
	pid=$(prom_pid)
	if [ -n "$pid" ]; then
		# Running: pick up the freshly copied configuration and rules.
		kill -HUP "$pid" 2>/dev/null
		say "prometheus: already running (pid $pid), configuration reloaded"
		return 0
	fi
	if port_in_use "$PROM_PORT"; then
		die "port $PROM_PORT (Prometheus) is in use by $(port_holder "$PROM_PORT"), not started by this script (Debian's prometheus service? systemctl disable --now prometheus)"
	fi
	say "starting prometheus on $HOST:$PROM_PORT (data $PROM_DIR/data, log $LOGS/prometheus.log)"
	start_bg prometheus "$PROM_PIDFILE" "$LOGS/prometheus.log" \
		"$PROMETHEUS_BIN" "$PROM_WORD" \
		--storage.tsdb.path="$PROM_DIR/data" \
		--storage.tsdb.retention.time=7d \
		--web.listen-address="$HOST:$PROM_PORT"
	pid=$(head -n1 "$PROM_PIDFILE")
	deadline=$((SECONDS + READY_TIMEOUT))
	while [ "$SECONDS" -lt "$deadline" ]; do
		prom_ready && return 0
		if ! pid_alive "$pid"; then
			tail -n 20 "$LOGS/prometheus.log" >&2
			rm -f "$PROM_PIDFILE"
			die "prometheus exited during start-up (log: $LOGS/prometheus.log)"
		fi
		sleep 0.2
	done
	die "prometheus not ready after ${READY_TIMEOUT}s (log: $LOGS/prometheus.log)"
}

# --- commands ---------------------------------------------------------------------

cmd_start() {
	if [ ! -x "$PROMETHEUS_BIN" ]; then
		die "$PROMETHEUS_BIN not found: apt-get install --no-install-recommends prometheus"
	fi
	install_config
	start_pg_exporter
	start_redis_exporter
	start_prometheus
	cat <<EOF

monitoring is running.
  Prometheus  http://$HOST:$PROM_PORT   (targets: /targets, alerts: /alerts)
  scrapes     marketd $HOST:8081$([ -f "$TARGETS/postgres.json" ] && printf ', postgres_exporter %s:%s' "$HOST" "$PG_EXPORTER_PORT")$([ -f "$TARGETS/redis.json" ] && printf ', redis_exporter %s:%s' "$HOST" "$REDIS_EXPORTER_PORT")
  dashboard   import deploy/grafana/marketd.json into Grafana (data source: this Prometheus)
  stop with   scripts/monitoring.sh stop (data is kept in $PROM_DIR/data)
EOF
}

cmd_stop() {
	stop_pidfile prometheus "$PROM_PIDFILE" "$PROM_WORD"
	stop_pidfile postgres_exporter "$PG_EXP_PIDFILE" "$PG_EXP_WORD"
	stop_pidfile redis_exporter "$REDIS_EXP_PIDFILE" "$REDIS_EXP_WORD"
	rm -f "$TARGETS/postgres.json" "$TARGETS/redis.json"
}

cmd_status() {
	local pid ready up=1
	line() { printf '%-18s %-5s %-12s %s\n' "$1" "$2" "${3:+pid $3}" "$4"; }
	pid=$(prom_pid)
	if [ -n "$pid" ]; then
		ready=ready
		prom_ready || {
			ready="not ready (/-/ready)"
			up=0
		}
		line prometheus up "$pid" "$HOST:$PROM_PORT $ready"
	else
		line prometheus down "" "$HOST:$PROM_PORT"
		up=0
	fi
	pid=$(pg_exp_pid)
	if [ -n "$pid" ]; then line postgres_exporter up "$pid" "$HOST:$PG_EXPORTER_PORT"; else
		line postgres_exporter down "" "$HOST:$PG_EXPORTER_PORT (optional)"
	fi
	pid=$(redis_exp_pid)
	if [ -n "$pid" ]; then line redis_exporter up "$pid" "$HOST:$REDIS_EXPORTER_PORT"; else
		line redis_exporter down "" "$HOST:$REDIS_EXPORTER_PORT (optional)"
	fi
	[ "$up" = 1 ] || exit 3
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
