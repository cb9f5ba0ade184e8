#!/bin/bash
# Writes PgBouncer's configuration from the environment, then runs it in the
# foreground (PID 1; SIGTERM = immediate shutdown, SIGINT = safe shutdown).
#
# Env: PGBOUNCER_DB_NAME (marketd), PGBOUNCER_PRIMARY_HOST (required),
# PGBOUNCER_PRIMARY_PORT (5432), PGBOUNCER_REPLICA_HOST / _PORT (optional:
# a read-only pool "<db>_ro"), PGBOUNCER_AUTH_USER (marketd),
# PGBOUNCER_AUTH_PASSWORD (required), PGBOUNCER_DEFAULT_POOL_SIZE,
# PGBOUNCER_MAX_CLIENT_CONN, PGBOUNCER_SERVER_TLS_SSLMODE,
# PGBOUNCER_SERVER_TLS_CA_FILE; PGBOUNCER_RUNDIR (/tmp/pgbouncer),
# PGBOUNCER_BASE_INI (/etc/pgbouncer/pgbouncer-base.ini).
set -euo pipefail

db=${PGBOUNCER_DB_NAME:-marketd}
user=${PGBOUNCER_AUTH_USER:-marketd}
primary=${PGBOUNCER_PRIMARY_HOST:?PGBOUNCER_PRIMARY_HOST must be set}
password=${PGBOUNCER_AUTH_PASSWORD:?PGBOUNCER_AUTH_PASSWORD must be set}
run=${PGBOUNCER_RUNDIR:-/tmp/pgbouncer}
base=${PGBOUNCER_BASE_INI:-/etc/pgbouncer/pgbouncer-base.ini}

valid_word() { # host names, ports, database and role names: no quoting games
	case $2 in
	'' | *[!A-Za-z0-9._-]*)
		echo "pgbouncer-entrypoint: $1: unexpected value \"$2\"" >&2
		exit 2
		;;
	esac
}
valid_word PGBOUNCER_DB_NAME "$db"
valid_word PGBOUNCER_AUTH_USER "$user"
valid_word PGBOUNCER_PRIMARY_HOST "$primary"
valid_word PGBOUNCER_PRIMARY_PORT "${PGBOUNCER_PRIMARY_PORT:-5432}"

umask 077
mkdir -p "$run"
ini=$run/pgbouncer.ini
{
	echo "[databases]"
	echo "$db = host=$primary port=${PGBOUNCER_PRIMARY_PORT:-5432} dbname=$db"
	if [ -n "${PGBOUNCER_REPLICA_HOST:-}" ]; then
		valid_word PGBOUNCER_REPLICA_HOST "$PGBOUNCER_REPLICA_HOST"
		valid_word PGBOUNCER_REPLICA_PORT "${PGBOUNCER_REPLICA_PORT:-5432}"
		echo "${db}_ro = host=$PGBOUNCER_REPLICA_HOST port=${PGBOUNCER_REPLICA_PORT:-5432} dbname=$db"
	fi
	echo
	cat "$base"
	echo
	echo "; from the environment"
	echo "auth_file = $run/userlist.txt"
	if [ -n "${PGBOUNCER_DEFAULT_POOL_SIZE:-}" ]; then
		valid_word PGBOUNCER_DEFAULT_POOL_SIZE "$PGBOUNCER_DEFAULT_POOL_SIZE"
		echo "default_pool_size = $PGBOUNCER_DEFAULT_POOL_SIZE"
	fi
	if [ -n "${PGBOUNCER_MAX_CLIENT_CONN:-}" ]; then
		valid_word PGBOUNCER_MAX_CLIENT_CONN "$PGBOUNCER_MAX_CLIENT_CONN"
		echo "max_client_conn = $PGBOUNCER_MAX_CLIENT_CONN"
	fi
	if [ -n "${PGBOUNCER_SERVER_TLS_SSLMODE:-}" ]; then
		valid_word PGBOUNCER_SERVER_TLS_SSLMODE "$PGBOUNCER_SERVER_TLS_SSLMODE"
		echo "server_tls_sslmode = $PGBOUNCER_SERVER_TLS_SSLMODE"
	fi
	if [ -n "${PGBOUNCER_SERVER_TLS_CA_FILE:-}" ]; then
		echo "server_tls_ca_file = $PGBOUNCER_SERVER_TLS_CA_FILE"
	fi
} >"$ini.tmp"
mv "$ini.tmp" "$ini"

# userlist.txt: "user" "password"; a plain password lets PgBouncer answer
# SCRAM towards clients and log in to PostgreSQL with SCRAM too.
esc=${password//\"/\"\"}
printf '"%s" "%s"\n' "$user" "$esc" >"$run/userlist.txt.tmp"
mv "$run/userlist.txt.tmp" "$run/userlist.txt"

exec pgbouncer "$ini"
