# shellcheck shell=bash
# Throwaway PostgreSQL 15 clusters for tests, benchmarks and the local stack.
# Source this file; it defines functions only and changes no shell options.
#
#   pg_tmp_start <dir> <port> [name=value ...]
#       Creates <dir> if needed, initdb's <dir>/data once (superuser
#       "postgres", trust auth, UTF8, C.UTF-8), then starts the server on
#       127.0.0.1:<port> only, unix socket in <dir>, and waits until it
#       accepts connections. Extra arguments are server settings
#       (e.g. fsync=off max_connections=300); they are rewritten on every
#       start. Server output goes to $PG_TMP_LOG (default <dir>/postgresql.log).
#       Returns 0 when the server is up, non-zero with a message otherwise
#       (the log tail is printed). Already running there: returns 0.
#   pg_tmp_stop <dir>
#       Fast shutdown (bounded), then immediate, then SIGKILL. Keeps the data.
#       Returns 0 once no server runs on <dir>.
#   pg_tmp_replica <dir> <port> <primary_port> [name=value ...]
#       A streaming replica of the server on 127.0.0.1:<primary_port>:
#       pg_basebackup -R (trust auth for replication, as initdb sets it up
#       for 127.0.0.1) into <dir>/data once, then pg_tmp_start on <port>.
#       The primary needs wal_level=replica (PostgreSQL's default) and a free
#       WAL sender (max_wal_senders, default 10).
#   pg_tmp_running <dir>    0 if a server of <dir> is alive.
#   pg_tmp_pid <dir>        prints the postmaster pid (empty if not running).
#   pg_tmp_port <dir>       prints the port the running server listens on.
#
# PostgreSQL refuses to run as root. When the caller is root, <dir> is given
# to the `postgres` system user and initdb/pg_ctl run as that user through
# runuser; <dir> must then be reachable by postgres (e.g. under /tmp or
# /var/tmp, not under /root). Clients (psql, the tests) connect over TCP as
# the database user postgres and need no such care.
#
# Tunables: PG_BIN (default /usr/lib/postgresql/15/bin), PG_TMP_LOG,
# PG_START_TIMEOUT (s, default 60), PG_STOP_TIMEOUT (s, default 30),
# PG_INITDB_NOSYNC=1 (initdb --no-sync, for disposable clusters).

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# Runs a command as the cluster owner: postgres when we are root, else us.
# cd / first so that a cwd postgres cannot read does not upset it.
pg__as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd / && runuser -u postgres -- "$@")
	else
		(cd / && "$@")
	fi
}

pg__log() { printf 'pg: %s\n' "$*" >&2; }

# A process runs: exists and is not a zombie (an exited postmaster may stay a
# zombie for a while until whoever adopted it reaps it).
pg__alive() {
	local state
	kill -0 "$1" 2>/dev/null || return 1
	state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
	[ "$state" != Z ]
}

# Quotes a value for postgresql.conf: '...' with embedded quotes doubled.
pg__conf_quote() {
	local v=${1//\'/\'\'}
	printf "'%s'" "$v"
}

pg_tmp_pid() {
	local dir=$1 pid
	[ -r "$dir/data/postmaster.pid" ] || return 0
	pid=$(head -n1 "$dir/data/postmaster.pid" 2>/dev/null) || return 0
	case $pid in '' | *[!0-9]*) return 0 ;; esac
	if pg__alive "$pid"; then
		printf '%s\n' "$pid"
	fi
}

pg_tmp_running() {
	[ -n "$(pg_tmp_pid "$1")" ]
}

pg_tmp_port() {
	local dir=$1
	pg_tmp_running "$dir" || return 1
	sed -n 4p "$dir/data/postmaster.pid"
}

pg_tmp_start() {
	if [ $# -lt 2 ]; then
		pg__log "usage: pg_tmp_start <dir> <port> [name=value ...]"
		return 2
	fi
	local dir=$1 port=$2
	shift 2
	local data="$dir/data" log="${PG_TMP_LOG:-$dir/postgresql.log}"

	if [ ! -x "$PG_BIN/pg_ctl" ]; then
		pg__log "$PG_BIN/pg_ctl not found (is postgresql-15 installed? run scripts/deps.sh)"
		return 1
	fi
	if pg_tmp_running "$dir"; then
		local running_port
		running_port=$(pg_tmp_port "$dir")
		if [ "$running_port" != "$port" ]; then
			pg__log "a server of $dir already runs on port $running_port, not $port"
			return 1
		fi
		return 0
	fi

	mkdir -p "$dir" || return 1
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres:postgres "$dir" || return 1
	fi
	if ! pg__as_owner test -w "$dir"; then
		pg__log "the postgres user cannot write $dir (a parent directory is not traversable?);" \
			"use a directory under /tmp or /var/tmp"
		return 1
	fi
	touch "$log" || return 1

	if [ ! -s "$data/PG_VERSION" ]; then
		local initdb_opts=(-D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-instructions)
		if [ "${PG_INITDB_NOSYNC:-0}" = 1 ]; then
			initdb_opts+=(--no-sync)
		fi
		if ! pg__as_owner "$PG_BIN/initdb" "${initdb_opts[@]}" >>"$log" 2>&1; then
			pg__log "initdb failed in $data; log: $log"
			tail -n 20 "$log" >&2
			return 1
		fi
		# Our settings live in a file rewritten on every start.
		printf "\ninclude_if_exists = 'marketd.conf'\n" |
			pg__as_owner tee -a "$data/postgresql.conf" >/dev/null || return 1
	fi

	# A unix socket path is limited to 107 bytes; past that, TCP only.
	local sockdir=$dir
	if [ $((${#dir} + ${#port} + 10)) -gt 107 ]; then
		pg__log "socket path under $dir too long; unix socket disabled (TCP only)"
		sockdir=
	fi

	local setting conf
	conf="# written by tests/lib/pg.sh on every start; edits are lost
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = $(pg__conf_quote "$sockdir")
log_line_prefix = '%m [%p] %q%u@%d '
"
	for setting in "$@"; do
		case $setting in
		*=*) conf+="${setting%%=*} = $(pg__conf_quote "${setting#*=}")"$'\n' ;;
		*)
			pg__log "bad setting '$setting' (want name=value)"
			return 2
			;;
		esac
	done
	printf '%s' "$conf" | pg__as_owner tee "$data/marketd.conf" >/dev/null || return 1

	# Without -l the server writes to pg_ctl's stdout, i.e. $log opened by
	# this (possibly root) shell: the postgres user needs no access to it.
	# pg_ctl -w returns once the server accepts connections, or fails after
	# the timeout (then the server may still be starting: stop it).
	if ! pg__as_owner "$PG_BIN/pg_ctl" start -D "$data" -w -t "${PG_START_TIMEOUT:-60}" -s \
		</dev/null >>"$log" 2>&1; then
		pg__log "PostgreSQL failed to start on 127.0.0.1:$port (data $data); log tail ($log):"
		tail -n 20 "$log" >&2
		pg_tmp_stop "$dir" >/dev/null 2>&1
		return 1
	fi
	return 0
}

pg_tmp_replica() {
	if [ $# -lt 3 ]; then
		pg__log "usage: pg_tmp_replica <dir> <port> <primary_port> [name=value ...]"
		return 2
	fi
	local dir=$1 port=$2 primary=$3
	shift 3
	if [ ! -s "$dir/data/PG_VERSION" ]; then
		mkdir -p "$dir" || return 1
		if [ "$(id -u)" -eq 0 ]; then
			chown postgres:postgres "$dir" || return 1
		fi
		if ! pg__as_owner "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres \
			-D "$dir/data" -R -X stream --no-sync -c fast >>"${PG_TMP_LOG:-$dir/postgresql.log}" 2>&1; then
			pg__log "pg_basebackup from 127.0.0.1:$primary into $dir/data failed"
			tail -n 20 "${PG_TMP_LOG:-$dir/postgresql.log}" >&2
			return 1
		fi
	fi
	pg_tmp_start "$dir" "$port" hot_standby=on "$@"
}

pg_tmp_stop() {
	local dir=$1 data="$1/data" pid
	pid=$(pg_tmp_pid "$dir")
	[ -n "$pid" ] || return 0
	# pg_ctl -w returns when the pid file is gone, a moment before the
	# postmaster has exited: wait for the process itself too.
	pg__as_owner "$PG_BIN/pg_ctl" stop -D "$data" -m fast -w -t "${PG_STOP_TIMEOUT:-30}" -s \
		</dev/null >/dev/null 2>&1
	pg__wait_gone "$pid" 100 && return 0
	pg__as_owner "$PG_BIN/pg_ctl" stop -D "$data" -m immediate -w -t 10 -s \
		</dev/null >/dev/null 2>&1
	pg__wait_gone "$pid" 50 && return 0
	# pg_ctl can fail (e.g. the data directory vanished): make sure.
	kill -KILL "$pid" 2>/dev/null
	pg__wait_gone "$pid" 50 && return 0
	pg__log "could not stop PostgreSQL (pid $pid) of $dir"
	return 1
}

# pg__wait_gone PID TENTHS: 0 once PID has exited, 1 if it still runs after
# TENTHS tenths of a second.
pg__wait_gone() {
	local n=$2
	while pg__alive "$1"; do
		[ "$n" -gt 0 ] || return 1
		sleep 0.1
		n=$((n - 1))
	done
	return 0
}
