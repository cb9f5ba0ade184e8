#!/usr/bin/env bash
# The two commands on a truly fresh Debian 12 (issue 9): a debian:12-slim
# container (made here with debootstrap, no registry needed) gets the
# repository as committed (git archive of HEAD: no build/, no node_modules,
# no .data/) and runs, as a new user would:
#
#   apt-get install make             the one thing to install by hand
#   make run                         installs the rest from Debian's apt + npm
#   make status
#   curl http://127.0.0.1:8080/api/v1/cities     (through nginx)
#   make stop
#   make test
#
# Everything runs on a private dockerd (tests/lib/docker.sh) that is torn
# down at the end with its containers, networks and volumes; iptables and
# ip_forward are put back as they were. Bounded: FRESH_TIMEOUT (default 5400 s)
# for the whole run in the container.
#
# Usage: make fresh-debian-test        (root; not part of `make test`: ~7 min)
# Env:   FRESH_REF (default HEAD)  the commit to test
#        FRESH_STEPS (default "run status curl stop test")  a subset, e.g. "run status curl stop"
#        FRESH_TIMEOUT (s), KEEP_LOG (default .data/fresh-debian/last.log)
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
DK_NAME=fresh-debian
# shellcheck source=tests/lib/docker.sh
. "$ROOT/tests/lib/docker.sh"

REF=${FRESH_REF:-HEAD}
STEPS=${FRESH_STEPS:-run status curl stop test}
TIMEOUT=${FRESH_TIMEOUT:-5400}
OUT=$ROOT/.data/fresh-debian
LOG=${KEEP_LOG:-$OUT/last.log}
CACHE=$ROOT/.data/docker
T0=$SECONDS

[ "$(id -u)" -eq 0 ] || {
	echo "fresh-debian: needs root (a private Docker daemon)" >&2
	exit 1
}
mkdir -p "$OUT" "$CACHE"
WORK=$(mktemp -d /var/tmp/marketd-fresh.XXXXXX)
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	dk_say "teardown: container, daemon, bridge, iptables, ip_forward"
	dk_daemon_stop
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

dk_install_tools || exit 1
dk_daemon_start "$WORK/docker" || exit 1
t=$SECONDS
dk_base_image "$CACHE" || exit 1
dk_say "base image debian:12-slim ready ($((SECONDS - t)) s)"

git -C "$ROOT" archive --format=tar --prefix=marketd/ "$REF" >"$WORK/src.tar" || exit 1
commit=$(git -C "$ROOT" rev-parse --short "$REF")

# SYS_PTRACE: LeakSanitizer (make test's ASan builds) stops the world with
# ptrace. A bigger /dev/shm for Chromium and PostgreSQL. The machine's limits:
# 2 CPUs, nofile <= 20000 (the daemon's default ulimit).
docker run -d --name marketd-fresh --hostname fresh-debian --cpus 2 --memory 8g --shm-size 1g \
	--cap-add SYS_PTRACE debian:12-slim sleep infinity >/dev/null || exit 1
docker exec -i marketd-fresh tar -x -C /root <"$WORK/src.tar" || exit 1
# This host's network: HTTPS leaves through a proxy whose CA the host trusts
# (/usr/local/share/ca-certificates, NODE_EXTRA_CA_CERTS). The container gets
# the same trust — nothing else of the host — or npm cannot reach the
# registry. On a host with direct access there is nothing to copy.
EXTRA_CA=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
	docker exec marketd-fresh mkdir -p /usr/local/share/ca-certificates || exit 1
	for f in /usr/local/share/ca-certificates/*.crt; do
		docker cp "$f" "marketd-fresh:/usr/local/share/ca-certificates/" >/dev/null || exit 1
	done
	EXTRA_CA=(-e NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt)
	dk_say "the host's extra CA certificates copied in (HTTPS egress proxy): $(cd /usr/local/share/ca-certificates && echo *.crt)"
fi

# The steps inside: each prints a marker with its exit status and duration,
# and the summary at the end is what docs/fresh-debian.md records.
cat >"$WORK/inner.sh" <<'INNER'
set -u
cd /root/marketd
declare -A RC DUR
step() {
	local name=$1 t=$SECONDS rc
	shift
	printf '\n######## %s: %s\n' "$name" "$*"
	"$@"
	rc=$?
	RC[$name]=$rc
	DUR[$name]=$((SECONDS - t))
	printf '######## %s: exit %s in %s s\n' "$name" "$rc" "$((SECONDS - t))"
	return "$rc"
}
bootstrap() {
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q && apt-get install -y -q --no-install-recommends make || return 1
	# Only when the host handed over extra CAs (see run.sh): trust them.
	if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
		apt-get install -y -q --no-install-recommends ca-certificates && update-ca-certificates
	fi
}
cities() {
	curl -fsS -D - -o /tmp/cities.json http://127.0.0.1:8080/api/v1/cities && head -c 300 /tmp/cities.json && echo
}
step bootstrap bootstrap
for s in $STEPS; do
	case $s in
	run) step "make run" make run ;;
	status) step "make status" make status ;;
	curl) step "curl /api/v1/cities" cities ;;
	stop) step "make stop" make stop ;;
	test) step "make test" make test ;;
	esac
done
printf '\n######## SUMMARY\n'
printf 'debian %s, kernel %s\n' "$(cat /etc/debian_version)" "$(uname -r)"
printf 'node %s (%s), npm %s\n' "$(node --version 2>/dev/null)" "$(dpkg-query -W -f='${Version}' nodejs 2>/dev/null)" "$(npm --version 2>/dev/null)"
printf 'chromium %s, nginx %s\n' "$(dpkg-query -W -f='${Version}' chromium 2>/dev/null)" "$(dpkg-query -W -f='${Version}' nginx-light 2>/dev/null)"
fail=0
for s in bootstrap "make run" "make status" "curl /api/v1/cities" "make stop" "make test"; do
	[ -n "${RC[$s]+x}" ] || continue
	printf '%-22s exit %-3s %5s s\n' "$s" "${RC[$s]}" "${DUR[$s]}"
	[ "${RC[$s]}" = 0 ] || fail=1
done
exit $fail
INNER
docker cp "$WORK/inner.sh" marketd-fresh:/root/inner.sh >/dev/null || exit 1

dk_say "running in the container (commit $commit; steps: bootstrap $STEPS; log: $LOG)"
t=$SECONDS
timeout -k 30 "$TIMEOUT" "$DK_DOCKER" exec -e STEPS="$STEPS" "${EXTRA_CA[@]}" marketd-fresh bash /root/inner.sh 2>&1 |
	tee "$LOG"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && dk_say "timed out after $TIMEOUT s"
{
	echo
	echo "fresh-debian: commit $commit, container run $((SECONDS - t)) s, total $((SECONDS - T0)) s, exit $rc"
} | tee -a "$LOG"
exit "$rc"
