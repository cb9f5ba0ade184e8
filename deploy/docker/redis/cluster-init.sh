#!/bin/sh
# One-shot job of docker-compose.prod.yml's `cluster` profile: joins the
# REDIS_CLUSTER_SIZE nodes that the name REDIS_CLUSTER_SERVICE resolves to
# into a Redis Cluster with one replica per master (6 nodes: 3 + 3, S7).
# Does nothing when the nodes already form a cluster; exits non-zero (the
# backend then does not start) when they do not show up within 120 s.
# Env: REDIS_PASSWORD, REDIS_CLUSTER_SERVICE (redis-node), REDIS_CLUSTER_SIZE (6).
set -eu
svc=${REDIS_CLUSTER_SERVICE:-redis-node}
size=${REDIS_CLUSTER_SIZE:-6}
export REDISCLI_AUTH="${REDIS_PASSWORD:?REDIS_PASSWORD must be set}"

i=0
while :; do
	ips=$(getent ahostsv4 "$svc" | awk '{print $1}' | sort -u)
	n=$(printf '%s\n' "$ips" | grep -c . || true)
	up=0
	for ip in $ips; do
		redis-cli -h "$ip" ping 2>/dev/null | grep -q PONG && up=$((up + 1))
	done
	[ "$up" -ge "$size" ] && break
	i=$((i + 1))
	if [ "$i" -ge 120 ]; then
		echo "redis-cluster-init: $up of $size nodes of $svc answer ($n resolved) after 120 s" >&2
		exit 1
	fi
	sleep 1
done

first=$(printf '%s\n' "$ips" | head -n1)
known=$(redis-cli -h "$first" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
state=$(redis-cli -h "$first" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')
if [ "$state" = ok ] && [ "${known:-0}" -ge "$size" ]; then
	echo "redis-cluster-init: cluster already formed ($known nodes, state ok)"
	exit 0
fi
nodes=""
for ip in $ips; do nodes="$nodes $ip:6379"; done
echo "redis-cluster-init: creating the cluster of$nodes"
# shellcheck disable=SC2086  # one argument per node
redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes
i=0
until [ "$(redis-cli -h "$first" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')" = ok ]; do
	i=$((i + 1))
	[ "$i" -lt 60 ] || { echo "redis-cluster-init: cluster_state not ok after 60 s" >&2; exit 1; }
	sleep 1
done
echo "redis-cluster-init: cluster ok"
redis-cli -h "$first" cluster nodes | awk '{print $2, $3}'
