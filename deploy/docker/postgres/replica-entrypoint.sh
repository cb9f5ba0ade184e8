#!/bin/bash
# Entry point of a PostgreSQL streaming replica (S4) in the official
# postgres:15 image. On the first start (empty data directory) it clones the
# primary with pg_basebackup -R (which writes standby.signal and
# primary_conninfo), then hands over to the image's own entry point, which
# finds an initialised cluster and just starts it, as a hot standby.
#
# Each replica container has its own anonymous data volume, so
# `docker-compose ... --scale postgres-replica=3` gives three replicas.
# No replication slots (a removed replica would pin WAL forever): the
# primary keeps wal_keep_size of WAL for replicas that fall behind.
#
# Env (deploy/env/postgres.env): PRIMARY_HOST, PRIMARY_PORT,
# REPLICATION_USER, REPLICATION_PASSWORD.
set -euo pipefail
: "${PRIMARY_HOST:=postgres-primary}" "${PRIMARY_PORT:=5432}" "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set (deploy/env/postgres.env)}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

as_postgres() {
	if [ "$(id -u)" = 0 ]; then gosu postgres "$@"; else "$@"; fi
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	mkdir -p "$PGDATA"
	if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGDATA"; fi
	chmod 0700 "$PGDATA"
	echo "replica: waiting for the primary $PRIMARY_HOST:$PRIMARY_PORT"
	until as_postgres pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do sleep 1; done
	echo "replica: cloning the primary (pg_basebackup)"
	PGPASSWORD=$REPLICATION_PASSWORD as_postgres pg_basebackup \
		-h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" \
		-D "$PGDATA" -X stream -R --checkpoint=fast --no-password
fi

exec docker-entrypoint.sh "$@"
