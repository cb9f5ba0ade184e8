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
#   swarm   (make swarm-test)  check, with DEPLOY_ORCH=swarm
# Orchestrators (DEPLOY_ORCH):
#   compose (default) docker-compose 1.29 up, as above
#   swarm   the same files on a single-node Docker Swarm (issue 12 item 4):
#           `docker-compose config` of them through
#           deploy/swarm/compose-to-stack.py, then `docker stack deploy`; the
#           drills' rolling restart is `docker service update --force`
#           (make swarm-test, make swarm-drills)
# Every container, network, volume and the daemon are removed at the end (the
# stack removed and the swarm left first), and iptables / ip_forward
# restored, on success, failure or interrupt.
# Env: DEPLOY_TIMEOUT (s, default 2400) bounds the whole run; DEPLOY_CACHE=0
#      builds in a temp data root instead of .data/docker/deploy-root;
#      DEPLOY_BENCH=0 skips the wrk runs; DRILLS="kill-backend ..." a subset;
#      DRILLS_OUT the drills' JSON (default bench/results/drills-latest.json,
#      under Swarm bench/results/drills-swarm-latest.json).
# shellcheck disable=SC2317  # cleanup and the topo checks run through a trap and a wrapper
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
MODE=${1:-check}
ORCH=${DEPLOY_ORCH:-compose}
if [ "$MODE" = swarm ]; then
	MODE=check
	ORCH=swarm
fi
STACK=marketdswarm
# Compose's drills in drills-latest.json (the issue's file), Swarm's beside it.
if [ "$ORCH" = swarm ]; then
	DRILLS_OUT=${DRILLS_OUT:-$ROOT/bench/results/drills-swarm-latest.json}
else
	DRILLS_OUT=${DRILLS_OUT:-$ROOT/bench/results/drills-latest.json}
fi
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
	echo "usage: [DEPLOY_ORCH=compose|swarm] $0 check|drills|up|swarm" >&2
	exit 2
	;;
esac
case $ORCH in compose | swarm) ;; *)
	echo "DEPLOY_ORCH: compose or swarm, not $ORCH" >&2
	exit 2
	;;
esac

WORK=$(mktemp -d /var/tmp/marketd-deploy.XXXXXX)
TREE=$WORK/tree
WATCHDOG=""
SWARM=""
GW_BRIDGE=""
# The run's own stdout/stderr, for the teardown's lines even when the trap
# fires inside a redirected step.
exec 7>&1 8>&2
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	exec 1>&7 2>&8
	[ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
	if [ -n "$DK_PID" ] && [ -n "$SWARM" ]; then
		swarm_down
	elif [ -n "$DK_PID" ] && [ -d "$TREE" ]; then
		dk_say "teardown: docker-compose down -v"
		(cd "$TREE" && timeout 120 docker-compose "${FILES[@]}" --profile cluster down -v --remove-orphans >/dev/null 2>&1)
	fi
	dk_say "teardown: daemon, bridge, iptables, ip_forward"
	dk_daemon_stop
	# docker_gwbridge's Linux bridge (ours, named by swarm_up) outlives the daemon.
	[ -n "$GW_BRIDGE" ] && ip link del "$GW_BRIDGE" 2>/dev/null
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

# --- Swarm (DEPLOY_ORCH=swarm) ---------------------------------------------------------
# The service's running containers (tasks), by Swarm's label.
swarm_ids() { docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$1" --filter status=running; }
swarm_up() {
	local sub=$((($$ % 200) + 20))
	# A run killed before its teardown may have left the cached data root in
	# a swarm: leave it first.
	if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" != inactive ]; then
		docker swarm leave --force >/dev/null 2>&1
	fi
	docker network rm docker_gwbridge >/dev/null 2>&1
	# docker_gwbridge is made before `swarm init` would make it, so that
	# Swarm's host-mode ports bind 127.0.0.1 (its host_binding_ipv4) and its
	# Linux bridge has a name of ours (removed after the daemon).
	GW_BRIDGE=mkgw$$
	GW_BRIDGE=${GW_BRIDGE:0:15}
	docker network create --driver bridge --subnet "10.215.$sub.0/24" \
		-o com.docker.network.bridge.name="$GW_BRIDGE" \
		-o com.docker.network.bridge.enable_icc=false \
		-o com.docker.network.bridge.enable_ip_masquerade=true \
		-o com.docker.network.bridge.host_binding_ipv4=127.0.0.1 docker_gwbridge >/dev/null || return 1
	SWARM=1
	docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 \
		--default-addr-pool "10.216.0.0/16" --default-addr-pool-mask-length 24 >/dev/null || return 1
	# The stack file: the same files as Compose's plus the Swarm-only deploy
	# keys (deploy/swarm/docker-compose.swarm.yml), merged and interpolated
	# by `docker-compose config`, mechanically made Swarm's (only the port:
	# the host address comes from docker_gwbridge above).
	(cd "$TREE" && MARKETD_HTTP_PORT=$EDGE_PORT docker-compose "${FILES[@]}" -f deploy/swarm/docker-compose.swarm.yml \
		--profile cluster config) >"$WORK/config.yml" &&
		python3 "$TREE/deploy/swarm/compose-to-stack.py" --profile cluster --check "$WORK/config.yml" >"$WORK/stack.yml" || return 1
	docker stack deploy --resolve-image never --prune -c "$WORK/stack.yml" "$STACK" || return 1
	# Converged: every long-running service (each has a health check) at its
	# replica count with every task healthy, and both one-shot jobs completed.
	local deadline=$((SECONDS + 300)) svc want have done_jobs
	while :; do
		have=0 want=0 done_jobs=0
		for svc in backend:$BACKENDS postgres-replica:$REPLICAS redis-node:$REDIS_NODES nginx:1 pgbouncer:1 postgres-primary:1 redis:1; do
			want=$((want + ${svc#*:}))
			have=$((have + $(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_${svc%%:*}" --filter health=healthy | wc -l)))
		done
		for svc in migrate redis-cluster-init; do
			docker service ps --filter desired-state=shutdown --format '{{.CurrentState}}' "${STACK}_$svc" 2>/dev/null | grep -q '^Complete' &&
				done_jobs=$((done_jobs + 1))
		done
		[ "$have" -eq "$want" ] && [ "$done_jobs" -eq 2 ] && return 0
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "not converged after 300 s: $have of $want tasks healthy, $done_jobs of 2 jobs complete"
			return 1
		fi
		sleep 2
	done
}
# Stack, swarm, then what the daemon's teardown does not know: each step
# bounded, so that an interrupt always ends.
swarm_down() {
	local i
	dk_say "teardown: docker stack rm, docker swarm leave --force"
	timeout 60 "$DK_DOCKER" stack rm "$STACK" >/dev/null 2>&1
	for i in $(seq 1 60); do
		[ -z "$(timeout 10 "$DK_DOCKER" ps -aq --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null)" ] && break
		[ "$i" -eq 60 ] || sleep 1
	done
	timeout 60 "$DK_DOCKER" swarm leave --force >/dev/null 2>&1
	timeout 30 "$DK_DOCKER" network rm docker_gwbridge >/dev/null 2>&1
	SWARM=""
}
swarm_logs() {
	local svc
	docker service ls
	for svc in migrate redis-cluster-init postgres-primary pgbouncer backend nginx; do
		echo "--- $svc"
		docker service ps --no-trunc --format '{{.Name}} {{.CurrentState}} {{.Error}}' "${STACK}_$svc" | head -n 8
		docker service logs --tail 15 "${STACK}_$svc" 2>&1 | tail -n 15
	done
}

# A service's running containers, whichever orchestrator runs them.
ids() { if [ "$ORCH" = swarm ]; then swarm_ids "$1"; else compose ps -q "$1"; fi; }

if [ "$ORCH" = swarm ]; then
	phase "docker swarm init; docker stack deploy $STACK (docker-compose config | deploy/swarm/compose-to-stack.py)"
	t=$SECONDS
	if ! swarm_up >"$WORK/up.log" 2>&1; then
		tail -n 40 "$WORK/up.log"
		swarm_logs 2>&1 | tail -n 150
		exit 1
	fi
	UP_S=$((SECONDS - t))
	phase "converged in $UP_S s"
	docker service ls
	EDGE_PORT_NOTE="Swarm host-mode port on docker_gwbridge's 127.0.0.1"
else
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
	EDGE_PORT_NOTE="published on 127.0.0.1"
fi

EDGE=http://127.0.0.1:$EDGE_PORT
BACKEND_URLS=()
for id in $(ids backend); do
	hp=$(docker port "$id" 8080/tcp | grep '^127\.0\.0\.1:' | head -n1)
	BACKEND_URLS+=("http://$hp")
done
deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null -m 2 "$EDGE/readyz"; do
	[ "$SECONDS" -lt "$deadline" ] || {
		phase "nginx $EDGE/readyz ($EDGE_PORT_NOTE) not 200 after 120 s"
		if [ "$ORCH" = swarm ]; then swarm_logs; else compose logs --tail=40 nginx backend; fi
		exit 1
	}
	sleep 1
done

# SQL on the primary as postgres; the seed with the migrate job's
# environment (straight to the primary), in a container of the image.
primary_id() { ids postgres-primary | head -n1; }
psql_primary() { docker exec -i "$(primary_id)" psql -X -q -tA -U postgres -d marketd "$@"; }
if [ "$ORCH" = swarm ]; then
	phase "seed --scale demo (docker exec in a backend task, DATABASE_URL of migrate)"
	docker exec -i "$(ids backend | head -n1)" env \
		DATABASE_URL="postgresql://marketd@postgres-primary:5432/marketd?sslmode=disable" \
		marketd seed --scale demo >"$WORK/seed.log" 2>&1
else
	phase "seed --scale demo (docker-compose run --rm migrate seed)"
	compose run --rm -T migrate seed --scale demo >"$WORK/seed.log" 2>&1
fi || {
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
	for id in $(ids postgres-replica); do
		r=$(docker exec "$id" psql -X -tA -U postgres -d marketd -c "SELECT pg_is_in_recovery(), (SELECT count(*) FROM products)")
		echo "$r"
		[[ $r == t\|* ]] || ok=1
	done
	return "$ok"
}
redis_cluster() {
	local id info masters
	id=$(ids redis-node | head -n1)
	info=$(docker exec "$id" sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli cluster info' | tr -d '\r')
	masters=$(docker exec "$id" sh -c 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli cluster nodes' | grep -c master)
	grep -E '^cluster_(state|known_nodes|size):' <<<"$info" | tr '\n' ' '
	echo "masters=$masters"
	grep -q '^cluster_state:ok' <<<"$info" && grep -q '^cluster_known_nodes:6' <<<"$info" && [ "$masters" = 3 ]
}
pgbouncer_mode() {
	local id
	id=$(ids pgbouncer)
	docker exec "$id" grep -E '^(pool_mode|marketd|marketd_ro) ' /tmp/pgbouncer/pgbouncer.ini &&
		docker exec "$id" grep -q '^pool_mode = transaction' /tmp/pgbouncer/pgbouncer.ini
}
backend_env() {
	local id
	id=$(ids backend | head -n1)
	docker exec "$id" sh -c 'echo "DB_PREPARE=$DB_PREPARE DATABASE_URL=$DATABASE_URL DB_READ_REPLICA_URL=$DB_READ_REPLICA_URL REDIS_CLUSTER_NODES=$REDIS_CLUSTER_NODES"' &&
		docker exec "$id" sh -c '[ "$DB_PREPARE" = 0 ] && case $DATABASE_URL in *@pgbouncer:6432/*) ;; *) exit 1 ;; esac'
}
nginx_version() {
	local id
	id=$(ids nginx)
	docker exec "$id" nginx -v 2>&1 && docker exec -i "$id" cmp -s /etc/nginx/nginx.conf - <"$ROOT/nginx/nginx.conf" &&
		echo "runs nginx/nginx.conf unchanged"
}
phase "topology"
backends_running() {
	local n
	n=$(ids backend | wc -l)
	echo "$n"
	[ "$n" = "$BACKENDS" ]
}
topo "backends running ($ORCH)" backends_running
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
		--admin-sql "$DK_DOCKER exec -i $(primary_id) psql -X -q -U postgres -d marketd -v ON_ERROR_STOP=1" ||
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
	DRILL_COMPOSE="cd '$TREE' && docker-compose ${FILES[*]} --profile cluster" DRILL_ORCH=$ORCH DRILL_STACK=$STACK \
		DRILL_DOCKER=$DK_DOCKER python3 "$ROOT/tests/compose/drills.py" --edge "$EDGE" \
		--out "$DRILLS_OUT" || RC=1
	;;
up)
	if [ "$ORCH" = swarm ]; then
		dk_say "up: $EDGE; export DOCKER_HOST=$DOCKER_HOST; $DK_DOCKER stack ps $STACK"
	else
		dk_say "up: $EDGE; export DOCKER_HOST=$DOCKER_HOST; (cd $TREE && docker-compose ${FILES[*]} --profile cluster ps)"
	fi
	dk_say "press Enter to tear down"
	read -r _ || true
	;;
esac
[ "$FAILS" -eq 0 ] || RC=1
phase "summary: $ORCH, build $BUILD_S s, up $UP_S s, topology failures $FAILS, mode $MODE exit $RC"
exit "$RC"
