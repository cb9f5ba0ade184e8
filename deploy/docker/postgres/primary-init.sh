#!/bin/bash
# First start of the PostgreSQL primary (official postgres:15 image, mounted
# into /docker-entrypoint-initdb.d/): the application role and database and
# the replication role (S4). Runs once, when the data directory is empty,
# as the postgres user against the image's temporary local server.
#
# Env (deploy/env/postgres.env): POSTGRES_USER, MARKETD_DB_NAME,
# MARKETD_DB_USER, MARKETD_DB_PASSWORD, REPLICATION_USER, REPLICATION_PASSWORD.
set -euo pipefail
: "${MARKETD_DB_NAME:=marketd}" "${MARKETD_DB_USER:=marketd}" "${REPLICATION_USER:=replicator}"
: "${MARKETD_DB_PASSWORD:?MARKETD_DB_PASSWORD must be set (deploy/env/postgres.env)}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set (deploy/env/postgres.env)}"

psql -v ON_ERROR_STOP=1 -X -q --username "${POSTGRES_USER:-postgres}" --dbname postgres \
	-v app_db="$MARKETD_DB_NAME" -v app_user="$MARKETD_DB_USER" -v app_pass="$MARKETD_DB_PASSWORD" \
	-v repl_user="$REPLICATION_USER" -v repl_pass="$REPLICATION_PASSWORD" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_pass';
-- Behind PgBouncer (DB_PREPARE=0) marketd sends no startup options, so the
-- statement timeout lives on the role (docs/design.md, S5).
ALTER ROLE :"app_user" SET statement_timeout = '5s';
CREATE DATABASE :"app_db" OWNER :"app_user" ENCODING 'UTF8'
	LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0;
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_pass';
SQL

# Streaming replication connections match no "all" database line.
printf 'host replication %s all scram-sha-256\n' "$REPLICATION_USER" >>"$PGDATA/pg_hba.conf"
echo "primary-init: role $MARKETD_DB_USER, database $MARKETD_DB_NAME, replication role $REPLICATION_USER created"
