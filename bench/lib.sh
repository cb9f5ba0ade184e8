# shellcheck shell=bash
# Helpers for bench/run.sh: logging, statistics, /proc sampling, wrk and
# pgbench output parsing. Source it; it defines functions only.

b_log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
b_die() {
	printf '[bench] error: %s\n' "$*" >&2
	exit 1
}

# b_median v1 v2 ...: median of the numeric arguments ("" / "-" skipped);
# prints "-" when there is none.
b_median() {
	printf '%s\n' "$@" | awk '$1 != "" && $1 != "-"' | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "-"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}

# b_port_free PORT: nothing listens on 127.0.0.1/any:PORT (TCP).
b_port_free() {
	[ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
}

# b_wait_http URL TIMEOUT_S [PID]: polls URL until it answers 2xx; fails
# after TIMEOUT_S seconds or as soon as PID (if given) has exited.
# b_claim DIE_FN PORT...: this checkout's benchmark slot and ports. One
# benchmark at a time (.data/bench.lock, held on fd LOCK_FD until exit); the
# given ports free, and PG_PORT too unless our cluster (PGDIR) runs there;
# the open-files limit raised to the hard one. Failures go to DIE_FN.
b_claim() {
	local die=$1 t hard
	shift
	exec {LOCK_FD}>"$ROOT/.data/bench.lock"
	flock -n "$LOCK_FD" || "$die" "another benchmark holds $ROOT/.data/bench.lock"
	for t in "$@"; do
		b_port_free "$t" || "$die" "port $t is in use by something else: $(ss -Htlnp "sport = :$t" | head -n1)"
	done
	if ! pg_tmp_running "$PGDIR" && ! b_port_free "$PG_PORT"; then
		"$die" "port $PG_PORT is in use by something else: $(ss -Htlnp "sport = :$PG_PORT" | head -n1)"
	fi
	hard=$(ulimit -Hn)
	ulimit -n "$hard" 2>/dev/null || b_log "could not raise ulimit -n to $hard"
}

b_wait_http() {
	local url=$1 timeout=$2 pid=${3:-} deadline=$((SECONDS + $2))
	while [ "$SECONDS" -lt "$deadline" ]; do
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			return 1
		fi
		curl -fsS --max-time 1 -o /dev/null "$url" 2>/dev/null && return 0
		sleep 0.2
	done
	return 1
}

# b_stop_pid PID NAME TIMEOUT_S [SIGNAL]: SIGNAL (default TERM), wait, then KILL.
b_stop_pid() {
	local pid=$1 name=$2 timeout=$3 sig=${4:-TERM} i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill "-$sig" "$pid" 2>/dev/null
	for ((i = 0; i < timeout * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		b_log "$name (pid $pid) did not stop in ${timeout}s; SIGKILL"
		kill -KILL "$pid" 2>/dev/null
		sleep 0.2
	fi
	wait "$pid" 2>/dev/null
	return 0
}

# --- /proc sampling ------------------------------------------------------------

B_CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# b_cpu_ticks PID...: utime+stime of the given processes (all threads), plus
# cutime+cstime (children they reaped: PostgreSQL backends that exited).
# b_finish RC KEEP LOG_FN: the common end of every bench script's EXIT
# trap — stop the PostgreSQL it started (PG_STARTED, PGDIR), keep the temp
# dir $TMP when KEEP is 1 or the run failed, else remove it — then exit RC.
b_finish() {
	local rc=$1 keep=$2 log=$3
	if [ "${PG_STARTED:-0}" = 1 ]; then
		"$log" "stopping PostgreSQL ($PGDIR)"
		pg_tmp_stop "$PGDIR" || "$log" "could not stop PostgreSQL of $PGDIR"
	fi
	if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
		if [ "$keep" = 1 ] || [ "$rc" -ne 0 ]; then
			"$log" "logs kept in $TMP"
		else
			rm -rf "$TMP"
		fi
	fi
	exit "$rc"
}

b_cpu_ticks() {
	local pid total=0 f
	for pid in "$@"; do
		f=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
		# after "comm) ": field 3 = state; utime is field 14 overall -> 12th here
		set -- $f
		total=$((total + ${12} + ${13} + ${14} + ${15}))
	done
	echo "$total"
}

# b_tree PID: PID and its direct children (nginx workers, PostgreSQL backends).
b_tree() {
	echo "$1"
	pgrep -P "$1" 2>/dev/null
}

# b_rss_kib PID...: sum of VmRSS in KiB.
b_rss_kib() {
	local pid total=0 v
	for pid in "$@"; do
		v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# b_rss_sampler OUTFILE MAX_S ROOTPID: writes the peak RSS (KiB) of ROOTPID
# and its children to OUTFILE every 0.5 s until killed or MAX_S elapsed.
b_rss_sampler() {
	local out=$1 max=$2 root=$3 peak=0 cur i
	for ((i = 0; i < max * 2; i++)); do
		# shellcheck disable=SC2046
		cur=$(b_rss_kib $(b_tree "$root"))
		if [ "$cur" -gt "$peak" ]; then
			peak=$cur
			echo "$peak" >"$out"
		fi
		sleep 0.5
	done
}

# --- output parsing ------------------------------------------------------------

# b_kv KEY LINE: value of KEY=value in a "BENCH k=v k=v" line.
b_kv() {
	local key=$1 line=$2
	printf '%s\n' "$line" | tr ' ' '\n' | awk -F= -v k="$key" '$1 == k { print $2; exit }'
}

# b_pgbench_field FILE: tps, average latency (ms) and failed transactions
# from pgbench's summary, as "tps lat_ms failed".
b_pgbench_fields() {
	awk '
		/^tps = / { tps = $3 }
		/^latency average = / { lat = $4 }
		/^number of failed transactions: / { failed = $5 }
		END { printf "%s %s %s\n", (tps == "" ? "-" : tps), (lat == "" ? "-" : lat), (failed == "" ? 0 : failed) }
	' "$1"
}

# --- PostgreSQL ------------------------------------------------------------------
# tests/lib/pg.sh (owned by the tests) provides pg_tmp_start/pg_tmp_stop. If
# it is missing, a minimal equivalent with the same interface is defined here.
b_load_pg_lib() {
	local root=$1
	if [ -r "$root/tests/lib/pg.sh" ]; then
		# shellcheck source=tests/lib/pg.sh
		. "$root/tests/lib/pg.sh"
	fi
	if declare -F pg_tmp_start >/dev/null && declare -F pg_tmp_stop >/dev/null &&
		declare -F pg_tmp_running >/dev/null; then
		return 0
	fi
	b_log "tests/lib/pg.sh not usable; using bench/lib.sh's own PostgreSQL helpers"
	PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
	b__pg_owner() {
		if [ "$(id -u)" -eq 0 ]; then
			(cd / && runuser -u postgres -- "$@")
		else
			(cd / && "$@")
		fi
	}
	pg_tmp_running() {
		local pid
		pid=$(head -n1 "$1/data/postmaster.pid" 2>/dev/null) || return 1
		[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
	}
	pg_tmp_start() {
		local dir=$1 port=$2 s conf
		shift 2
		pg_tmp_running "$dir" && return 0
		mkdir -p "$dir" || return 1
		[ "$(id -u)" -ne 0 ] || chown postgres:postgres "$dir" || return 1
		if [ ! -s "$dir/data/PG_VERSION" ]; then
			b__pg_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
				--locale=C.UTF-8 --no-instructions >>"$dir/postgresql.log" 2>&1 || return 1
			printf "\ninclude_if_exists = 'marketd.conf'\n" |
				b__pg_owner tee -a "$dir/data/postgresql.conf" >/dev/null || return 1
		fi
		conf="listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
"
		for s in "$@"; do conf+="${s%%=*} = '${s#*=}'"$'\n'; done
		printf '%s' "$conf" | b__pg_owner tee "$dir/data/marketd.conf" >/dev/null || return 1
		b__pg_owner "$PG_BIN/pg_ctl" start -D "$dir/data" -w -t "${PG_START_TIMEOUT:-60}" -s \
			</dev/null >>"$dir/postgresql.log" 2>&1
	}
	pg_tmp_stop() {
		pg_tmp_running "$1" || return 0
		b__pg_owner "$PG_BIN/pg_ctl" stop -D "$1/data" -m fast -w -t "${PG_STOP_TIMEOUT:-30}" -s \
			</dev/null >/dev/null 2>&1 ||
			b__pg_owner "$PG_BIN/pg_ctl" stop -D "$1/data" -m immediate -w -t 10 -s </dev/null >/dev/null 2>&1
	}
}

# --- whole-run CPU accounting ---------------------------------------------------
# b_measure_begin SERVER_PID PG_POSTMASTER_PID / b_measure_end: CPU ticks used
# over a run by the server (and its children), by the PostgreSQL cluster, by
# the Redis server (B_REDIS_PID, when set: it runs for the whole benchmark),
# by this shell's reaped children (wrk / pgbench and helpers), and the share
# of the machine's CPU that went to everything else (other users of the box,
# steal): M_SRV, M_PG, M_REDIS, M_CLIENT (ticks), M_SECS, M_OTHERS_PCT.
B_REDIS_PID=
b_stat_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
b_measure_begin() {
	M_SRV_PID=$1 M_PG_PID=$2
	M_T0=$(date +%s%N)
	M_B0=$(b_stat_busy)
	# shellcheck disable=SC2046
	M_S0=$([ -z "$M_SRV_PID" ] && echo 0 || b_cpu_ticks $(b_tree "$M_SRV_PID"))
	# shellcheck disable=SC2046
	M_P0=$(b_cpu_ticks $(b_tree "$M_PG_PID"))
	M_R0=$([ -z "$B_REDIS_PID" ] && echo 0 || b_cpu_ticks "$B_REDIS_PID")
	M_C0=$(b_cpu_ticks $$)
}
b_measure_end() {
	local t1 b1 s1 p1 c1 r1
	# shellcheck disable=SC2046
	s1=$([ -z "$M_SRV_PID" ] && echo 0 || b_cpu_ticks $(b_tree "$M_SRV_PID"))
	# shellcheck disable=SC2046
	p1=$(b_cpu_ticks $(b_tree "$M_PG_PID"))
	r1=$([ -z "$B_REDIS_PID" ] && echo 0 || b_cpu_ticks "$B_REDIS_PID")
	c1=$(b_cpu_ticks $$)
	b1=$(b_stat_busy)
	t1=$(date +%s%N)
	M_SRV=$((s1 - M_S0)) M_PG=$((p1 - M_P0)) M_REDIS=$((r1 - M_R0)) M_CLIENT=$((c1 - M_C0))
	# shellcheck disable=SC2034 # read by bench/run.sh
	read -r M_SECS M_OTHERS_PCT < <(awk -v t="$((t1 - M_T0))" -v b="$((b1 - M_B0))" -v ours="$((M_SRV + M_PG + M_REDIS + M_CLIENT))" \
		-v hz="$B_CLK_TCK" -v n="$(nproc)" 'BEGIN {
			secs = t / 1e9; o = (b - ours) / (secs * hz * n) * 100; if (o < 0) o = 0
			printf "%.2f %.0f\n", secs, o }')
}
