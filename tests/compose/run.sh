#!/usr/bin/env bash
# The production compose deployment, run for real (issue 12 items 3, 5, 6):
# docker-compose.prod.yml plus only tests/compose/docker-compose.test.yml on
# a private dockerd (tests/lib/docker.sh), with the topology of the scaling
# plan:
#
#   nginx (nginx/nginx.conf on Debian's nginx 1.22, 127.0.0.1 only)
#     -> backend x5 (each also on its own 127.0.0.1 port)
#     -> PgBouncer (transaction mode, DB_PREPARE=0)
#     -> PostgreSQL primary + 2 streaming replicas (DB_READ_REPLICA_URL via PgBouncer's marketd_ro)
#   Redis Cluster: 3 masters + 3 replicas (profile `cluster`)
#
# Modes:
#   check   (make deploy-test) topology checks, then tests/compose/http_check.py through nginx
#   drills  (make drills)      tests/compose/drills.py under load: bench/results/drills-latest.json
#   up      bring it up and wait for Enter, for poking around (DOCKER_HOST is printed)
# Every container, network, volume and the daemon are removed at the end, and
# iptables / ip_forward restored, on success, failure or interrupt.
# Env: DEPLOY_TIMEOUT (s, default 2400) bounds the whole run; DEPLOY_CACHE=0
#      builds in a temp data root instead of .data/docker/deploy-root;
#      DEPLOY_BENCH=0 skips the wrk runs; DRILLS="kill-backend ..." a subset.
# shellcheck disable=SC2317  # cleanup and the topo checks run through a trap and a wrapper
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
MODE=${1:-check}
DK_NAME=deploy-test
# shellcheck source=tests/lib/docker.sh
. "$ROOT/tests/lib/docker.sh"

T0=$SECONDS
TIMEOUT=${DEPLOY_TIMEOUT:-2400}
CACHE=$ROOT/.data/docker
BACKENDS=5
REPLICAS=2
REDIS_NODES=6
export COMPOSE_PROJECT_NAME=marketdtest COMPOSE_HTTP_TIMEOUT=300

[ "$(id -u)" -eq 0 ] || {
	echo "deploy-test: needs root (a private Docker daemon)" >&2
	exit 1
}
case $MODE in check | drills | up) ;; *)
	echo "usage: $0 check|drills|up" >&2
	exit 2
	;;
esac

WORK=$(mktemp -d /var/tmp/marketd-deploy.XXXXXX)
TREE=$WORK/tree
WATCHDOG=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	[ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
	if [ -n "$DK_PID" ] && [ -d "$TREE" ]; then
		dk_say "teardown: docker-compose down -v"
		(cd "$TREE" && timeout 120 docker-compose "${FILES[@]}" --profile cluster down -v --remove-orphans >/dev/null 2>&1)
	fi
	dk_say "teardown: daemon, bridge, iptables, ip_forward"
	dk_daemon_stop
	rm -rf "$WORK"
	dk_say "done in $((SECONDS - T0)) s (exit $rc)"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
# The bound: past it, this script is sent SIGTERM (its trap cleans up).
(sleep "$TIMEOUT" && dk_say "timed out after $TIMEOUT s" >&2 && kill -TERM $$) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

FILES=(-f docker-compose.prod.yml -f tests/compose/docker-compose.test.yml)
compose() { (cd "$TREE" && docker-compose "${FILES[@]}" --profile cluster "$@"); }
phase() { dk_say "$(printf '[%4d s] %s' "$((SECONDS - T0))" "$*")"; }

dk_install_tools || exit 1

# The checkout's tracked files as they are now (uncommitted edits included,
# no build/, node_modules or .data), and env files made from the examples
# with fresh random secrets (one per CHANGE-ME placeholder, the same in
# every file that names it).
mkdir -p "$TREE"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -xf - -C "$TREE" || exit 1
python3 - "$TREE/deploy/env" <<'EOF' || exit 1
import glob, os, re, secrets, sys
d = sys.argv[1]
seen = {}
for ex in sorted(glob.glob(os.path.join(d, "*.env.example"))):
    s = open(ex).read()
    s = re.sub(r"CHANGE-ME[A-Za-z0-9-]*", lambda m: seen.setdefault(m.group(0), secrets.token_hex(32)), s)
    open(ex[: -len(".example")], "w").write(s)
# The backends use the Redis Cluster: its password as REDIS_PASSWORD.
redis = seen["CHANGE-ME-redis-password"]
with open(os.path.join(d, "backend.secrets.env"), "a") as f:
    f.write("REDIS_PASSWORD=%s\n" % redis)
EOF

# Images and build cache kept in .data/docker/deploy-root (DEPLOY_CACHE=0:
# a temp one); one run at a time uses it.
DATA_ROOT=""
if [ "${DEPLOY_CACHE:-1}" = 1 ]; then
	DATA_ROOT=$CACHE/deploy-root
	mkdir -p "$DATA_ROOT"
	exec 9>"$CACHE/deploy-root.lock"
	flock -w 600 9 || {
		dk_say "another run holds $CACHE/deploy-root.lock" >&2
		exit 1
	}
fi
dk_daemon_start "$WORK/docker" "$DATA_ROOT" || exit 1
phase "base image"
dk_base_image "$CACHE" || exit 1

phase "docker-compose build (marketd, PgBouncer, stand-ins: nginx 1.22, PostgreSQL 15, Redis 7.0)"
t=$SECONDS
compose build -q >"$WORK/build.log" 2>&1 || {
	tail -n 40 "$WORK/build.log"
	exit 1
}
BUILD_S=$((SECONDS - t))
phase "built in $BUILD_S s"

# nginx on a free loopback port.
for p in $(seq 18080 18099); do
	(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
		EDGE_PORT=$p
		break
	}
done
export MARKETD_HTTP_PORT=127.0.0.1:$EDGE_PORT
phase "docker-compose up -d --scale backend=$BACKENDS --scale postgres-replica=$REPLICAS --scale redis-node=$REDIS_NODES"
t=$SECONDS
if ! compose up -d --scale backend=$BACKENDS --scale postgres-replica=$REPLICAS --scale redis-node=$REDIS_NODES \
	>"$WORK/up.log" 2>&1; then
	tail -n 40 "$WORK/up.log"
	compose ps
	compose logs --tail=30 migrate redis-cluster-init postgres-primary pgbouncer backend nginx 2>&1 | tail -n 120
	exit 1
fi
UP_S=$((SECONDS - t))
phase "up in $UP_S s"
compose ps

EDGE=http://127.0.0.1:$EDGE_PORT
BACKEND_URLS=()
for id in $(compose ps -q backend); do
	hp=$(docker port "$id" 8080/tcp | head -n1)
	BACKEND_URLS+=("http://$hp")
done
deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null -m 2 "$EDGE/readyz"; do
	[ "$SECONDS" -lt "$deadline" ] || {
		phase "nginx $EDGE/readyz not 200 after 120 s"
		compose logs --tail=40 nginx backend
		exit 1
	}
	sleep 1
done

psql_primary() { compose exec -T postgres-primary psql -X -q -tA -U postgres -d marketd "$@"; }
phase "seed --scale demo (docker-compose run --rm migrate seed)"
compose run --rm -T migrate seed --scale demo >"$WORK/seed.log" 2>&1 || {
	tail -n 20 "$WORK/seed.log"
	exit 1
}

FAILS=0
topo() { # topo NAME CMD...: one line per topology fact
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		printf 'PASS  %s: %s\n' "$name" "$(tr '\n' ' ' <<<"$out" | head -c 200)"
	else
		printf 'FAIL  %s: %s\n' "$name" "$(tr '\n' ' ' <<<"$out" | head -c 300)"
		FAILS=$((FAILS + 1))
	fi
}
n_streaming() {
	local n
	n=$(psql_primary -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
	echo "$n replicas streaming"
	[ "$n" = "$REPLICAS" ]
}
replicas_in_recovery() {
	local id r ok=0
	for id in $(compose ps -q postgres-replica); do
		r=$(docker exec "$id" psql -X -tA -U postgres -d marketd -c "SELECT pg_is_in_recovery(), (SELECT count(*) FROM products)")
		echo "$r"
		[[ $r == t\|* ]] || ok=1
	done
	return "$ok"
}
redis_cluster() {
	local id info masters
	id=$(compose ps -q redis-node | head -n1)
	info=$(docker exec "$id" sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli cluster info' | tr -d '\r')
	masters=$(docker exec "$id" sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli cluster nodes' | grep -c master)
	grep -E '^cluster_(state|known_nodes|size):' <<<"$info" | tr '\n' ' '
	echo "masters=$masters"
	grep -q '^cluster_state:ok' <<<"$info" && grep -q '^cluster_known_nodes:6' <<<"$info" && [ "$masters" = 3 ]
}
pgbouncer_mode() {
	local id
	id=$(compose ps -q pgbouncer)
	docker exec "$id" grep -E '^(pool_mode|marketd|marketd_ro) ' /tmp/pgbouncer/pgbouncer.ini &&
		docker exec "$id" grep -q '^pool_mode = transaction' /tmp/pgbouncer/pgbouncer.ini
}
backend_env() {
	local id
	id=$(compose ps -q backend | head -n1)
	docker exec "$id" sh -c 'echo "DB_PREPARE=$DB_PREPARE DATABASE_URL=$DATABASE_URL DB_READ_REPLICA_URL=$DB_READ_REPLICA_URL REDIS_CLUSTER_NODES=$REDIS_CLUSTER_NODES"' &&
		docker exec "$id" sh -c '[ "$DB_PREPARE" = 0 ] && case $DATABASE_URL in *@pgbouncer:6432/*) ;; *) exit 1 ;; esac'
}
nginx_version() {
	local id
	id=$(compose ps -q nginx)
	docker exec "$id" nginx -v 2>&1 && docker exec -i "$id" cmp -s /etc/nginx/nginx.conf - <"$ROOT/nginx/nginx.conf" &&
		echo "runs nginx/nginx.conf unchanged"
}
phase "topology"
topo "backends running" bash -c "n=\$(cd '$TREE' && docker-compose ${FILES[*]} --profile cluster ps -q backend | wc -l); echo \$n; [ \$n = $BACKENDS ]"
topo "nginx" nginx_version
topo "PgBouncer" pgbouncer_mode
topo "backend env" backend_env
topo "PostgreSQL streaming replication" n_streaming
topo "replicas in recovery, data replicated" replicas_in_recovery
topo "Redis Cluster 3 masters + 3 replicas" redis_cluster

RC=0
case $MODE in
check)
	phase "HTTP checks through nginx $EDGE and ${#BACKEND_URLS[@]} backends"
	args=()
	for u in "${BACKEND_URLS[@]}"; do args+=(--backend "$u"); done
	python3 "$ROOT/tests/compose/http_check.py" --edge "$EDGE" "${args[@]}" \
		--admin-sql "cd '$TREE' && docker-compose ${FILES[*]} --profile cluster exec -T postgres-primary psql -X -q -U postgres -d marketd -v ON_ERROR_STOP=1" ||
		RC=1
	if [ "${DEPLOY_BENCH:-1}" = 1 ] && command -v wrk >/dev/null 2>&1; then
		# Throughput, 10 s each, 2 wrk threads, 32 connections. Through nginx
		# only on an unlimited path: the edge limits /api/ to 500 r/s per
		# client address, and all load here comes from one address.
		phase "throughput (wrk -t2 -c32 -d10s)"
		pid=$(psql_primary -c "SELECT min(id) FROM products WHERE status = 'active'")
		for target in "edge /healthz (nginx -> 5 backends)|$EDGE/healthz" \
			"one backend /healthz (direct)|${BACKEND_URLS[0]}/healthz" \
			"one backend GET /api/v1/products/{id} (direct, cached)|${BACKEND_URLS[0]}/api/v1/products/$pid" \
			"one backend GET /api/v1/products?limit=20 (direct)|${BACKEND_URLS[0]}/api/v1/products?limit=20"; do
			out=$(wrk -t2 -c32 -d10s "${target#*|}" 2>&1)
			printf 'BENCH %-55s %s req/s, mean latency %s, non-2xx %s\n' "${target%%|*}" \
				"$(awk '/^Requests\/sec/ {print $2}' <<<"$out")" \
				"$(awk '/Latency/ {print $2; exit}' <<<"$out")" \
				"$(awk '/Non-2xx/ {print $5}' <<<"$out" | grep . || echo 0)"
		done
	fi
	;;
drills)
	phase "drills"
	DRILL_COMPOSE="cd '$TREE' && docker-compose ${FILES[*]} --profile cluster" \
		python3 "$ROOT/tests/compose/drills.py" --edge "$EDGE" --out "$ROOT/bench/results/drills-latest.json" || RC=1
	;;
up)
	dk_say "up: $EDGE; export DOCKER_HOST=$DOCKER_HOST; (cd $TREE && docker-compose ${FILES[*]} --profile cluster ps)"
	dk_say "press Enter to tear down"
	read -r _ || true
	;;
esac
[ "$FAILS" -eq 0 ] || RC=1
phase "summary: build $BUILD_S s, up $UP_S s, topology failures $FAILS, mode $MODE exit $RC"
exit "$RC"
