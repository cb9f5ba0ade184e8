# Shell functions shared by the scripts that run containers for real
# (tests/fresh/run.sh, tests/compose/run.sh): a private Docker daemon in a
# temp dir, a local debian:12-slim base image (no registry is reachable
# here), and a teardown that leaves the machine as it was.
#
#   . tests/lib/docker.sh
#   dk_install_tools                 # docker.io, debootstrap, iptables, docker-compose from apt
#   dk_daemon_start "$DIR"           # sets DOCKER_HOST; records ip_forward / iptables first
#   dk_base_image "$CACHE_DIR"       # debian:12-slim from debootstrap, tarball cached
#   ...
#   dk_daemon_stop                   # containers, networks, volumes, daemon, bridge, iptables
#
# The daemon is private: its own data root, exec root, socket and bridge
# (not docker0), and its own address pool, so it disturbs no other Docker on
# the host. Docker edits iptables (NAT for outgoing traffic) and turns on
# ip_forward; both are put back as they were by dk_daemon_stop. Callers set
# a trap that calls dk_daemon_stop on every exit.
# shellcheck shell=bash

DK_DOCKER=/usr/bin/docker # Debian's client (20.10), matching the daemon
DK_DIR=""
DK_PID=""
DK_ROOT=""
DK_BRIDGE=""
DK_IPT_SAVE=""
# Machine-wide: iptables and ip_forward as they were before the first of our
# private daemons started.
DK_PRISTINE=/var/tmp/marketd-docker-pristine

dk_say() { printf '%s: %s\n' "${DK_NAME:-docker}" "$*"; }

docker() { "$DK_DOCKER" "$@"; }

# Installs the Debian packages the container scripts need, only the missing ones.
dk_install_tools() {
	local need=() p
	for p in docker.io:dockerd debootstrap:debootstrap iptables:iptables docker-compose:docker-compose; do
		command -v "${p#*:}" >/dev/null 2>&1 || [ -x "/usr/sbin/${p#*:}" ] || need+=("${p%%:*}")
	done
	[ -x "$DK_DOCKER" ] || need+=(docker.io)
	[ "${#need[@]}" -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || {
		dk_say "needs root (a private dockerd); as root: apt-get install -y ${need[*]}" >&2
		return 1
	}
	dk_say "installing ${need[*]} (apt)"
	# Debian's docker.io would start its system service on systemd hosts:
	# the private daemon below is all we use; a policy-rc.d keeps it stopped.
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q update >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q install -y \
			--no-install-recommends "${need[@]}" >/dev/null
}

# dk_daemon_start DIR [DATA_ROOT]: a private dockerd with everything under
# DIR; images and build cache in DATA_ROOT if given (kept between runs, so
# a second run builds from cache; containers, networks and volumes are
# still removed by dk_daemon_stop).
dk_daemon_start() {
	local sub
	DK_DIR=$1
	DK_ROOT=${2:-$DK_DIR/root}
	mkdir -p "$DK_ROOT" "$DK_DIR/exec"
	# The state before any of our daemons: saved by the first one, restored
	# by the last one to stop (two runs may overlap, e.g. make drills while
	# make fresh-debian-test runs; another Docker's dockerd counts too).
	DK_IPT_SAVE=$DK_PRISTINE.iptables
	if ! pgrep -x dockerd >/dev/null 2>&1 || [ ! -f "$DK_IPT_SAVE" ]; then
		if pgrep -x dockerd >/dev/null 2>&1; then
			dk_say "another dockerd runs: iptables/ip_forward will be left to it" >&2
			DK_IPT_SAVE=""
		else
			cat /proc/sys/net/ipv4/ip_forward >"$DK_PRISTINE.ip_forward"
			iptables-save >"$DK_IPT_SAVE.tmp" 2>/dev/null || : >"$DK_IPT_SAVE.tmp"
			mv "$DK_IPT_SAVE.tmp" "$DK_IPT_SAVE"
		fi
	fi
	# Our own bridge and address range: another Docker on this host keeps
	# docker0 and 172.17/16. 10.213.N.0/24 with N from the pid keeps two
	# concurrent runs apart too.
	sub=$((($$ % 200) + 20))
	DK_BRIDGE=mkd$$
	DK_BRIDGE=${DK_BRIDGE:0:15}
	ip link add name "$DK_BRIDGE" type bridge || return 1
	ip addr add "10.213.$sub.1/24" dev "$DK_BRIDGE" && ip link set "$DK_BRIDGE" up || return 1
	export DOCKER_HOST=unix://$DK_DIR/docker.sock
	# nofile/nproc: the host's hard limits are lower than Docker's defaults.
	dockerd --data-root "$DK_ROOT" --exec-root "$DK_DIR/exec" -H "$DOCKER_HOST" \
		--pidfile "$DK_DIR/docker.pid" --bridge "$DK_BRIDGE" \
		--default-address-pool "base=10.214.0.0/16,size=24" \
		--default-ulimit nofile=20000:20000 --default-ulimit nproc=32768:32768 \
		--log-level warn </dev/null >"$DK_DIR/dockerd.log" 2>&1 &
	DK_PID=$!
	for _ in $(seq 1 300); do
		if docker info >/dev/null 2>&1; then
			dk_say "private dockerd $(docker version -f '{{.Server.Version}}') (pid $DK_PID, $DOCKER_HOST)"
			return 0
		fi
		kill -0 "$DK_PID" 2>/dev/null || break
		sleep 0.2
	done
	dk_say "dockerd did not start; its log:" >&2
	tail -n 30 "$DK_DIR/dockerd.log" >&2
	return 1
}

# Everything the daemon holds, then the daemon, the bridge, iptables and
# ip_forward as they were. Safe to call twice and after a partial start.
dk_daemon_stop() {
	local ids t
	if [ -n "$DK_PID" ] && kill -0 "$DK_PID" 2>/dev/null; then
		ids=$(docker ps -aq 2>/dev/null)
		# shellcheck disable=SC2086
		[ -n "$ids" ] && timeout 60 "$DK_DOCKER" rm -f $ids >/dev/null 2>&1
		timeout 60 "$DK_DOCKER" network prune -f >/dev/null 2>&1
		timeout 60 "$DK_DOCKER" volume prune -f >/dev/null 2>&1
		kill -TERM "$DK_PID" 2>/dev/null
		for _ in $(seq 1 150); do
			kill -0 "$DK_PID" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$DK_PID" 2>/dev/null
		wait "$DK_PID" 2>/dev/null
	fi
	DK_PID=""
	# containerd-shim processes of ours, if the daemon died under them.
	if [ -n "$DK_DIR" ]; then
		for p in $(pgrep -f "$DK_DIR/exec" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
		umount -R "$DK_ROOT" 2>/dev/null
		umount -R "$DK_DIR/exec" 2>/dev/null
	fi
	if [ -n "$DK_BRIDGE" ]; then
		ip link del "$DK_BRIDGE" 2>/dev/null
		DK_BRIDGE=""
	fi
	if [ -n "$DK_IPT_SAVE" ] && [ -f "$DK_IPT_SAVE" ]; then
		if pgrep -x dockerd >/dev/null 2>&1; then
			dk_say "another dockerd still runs: iptables and ip_forward are restored when the last one stops" >&2
		else
			# The tables as saved; a table docker made from nothing is emptied.
			iptables-restore <"$DK_IPT_SAVE" 2>/dev/null
			for t in filter nat; do
				grep -q "^\*$t" "$DK_IPT_SAVE" && continue
				iptables -t "$t" -F 2>/dev/null
				iptables -t "$t" -X 2>/dev/null
			done
			if grep -q '^:FORWARD DROP' "$DK_IPT_SAVE"; then iptables -P FORWARD DROP; else iptables -P FORWARD ACCEPT 2>/dev/null; fi
			cat "$DK_PRISTINE.ip_forward" >/proc/sys/net/ipv4/ip_forward 2>/dev/null
			rm -f "$DK_IPT_SAVE" "$DK_PRISTINE.ip_forward"
		fi
		DK_IPT_SAVE=""
	fi
}

# dk_base_image CACHE_DIR: the image debian:12-slim, made with debootstrap
# (minbase) from the configured Debian mirror and kept as a tarball in
# CACHE_DIR, so that only the first run pays the ~2 minutes.
dk_base_image() {
	local cache=$1 tar rootfs mirror
	tar=$cache/debian-12-minbase.tar
	if docker image inspect debian:12-slim >/dev/null 2>&1; then
		return 0
	fi
	if [ ! -s "$tar" ]; then
		mkdir -p "$cache"
		rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
		mirror=$(dk_mirror)
		dk_say "debootstrap --variant=minbase bookworm ($mirror), once; cached in $tar"
		if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1; then
			tail -n 20 "$cache/debootstrap.log" >&2
			rm -rf "$rootfs"
			return 1
		fi
		# The host's apt sources (same mirror), no package caches.
		cp /etc/apt/sources.list.d/*.sources "$rootfs/etc/apt/sources.list.d/" 2>/dev/null &&
			rm -f "$rootfs/etc/apt/sources.list"
		rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
		tar -C "$rootfs" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
		rm -rf "$rootfs"
	fi
	docker import "$tar" debian:12-slim >/dev/null &&
		docker tag debian:12-slim debian:12 &&
		docker tag debian:12-slim debian:bookworm-slim
}

# The Debian mirror apt uses on this host (deb822 or one-line sources).
dk_mirror() {
	local m
	m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
	[ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1)
	printf '%s\n' "${m:-http://deb.debian.org/debian}"
}
