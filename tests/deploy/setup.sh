#!/usr/bin/env bash
# Installs what tests/deploy/check.sh needs, so that the check itself runs
# with no network. Idempotent and quiet when everything is there.
#
#   Debian packages (apt, only the missing ones; root or sudo):
#     prometheus      promtool: check config / check rules / test rules
#     docker-compose  1.29: `config -q` needs no Docker engine
#     nginx-light     nginx -t
#     nodejs npm      the validators below (any Node >= 18; an existing node is used)
#     binutils pkg-config dpkg-dev   library → package checks of the Dockerfile
#     package shellcheck: lints the shell scripts
#     python3         a stand-in HTTP server for the health-check script
#   Debian's kubectl (package kubernetes-client 1.20, with kustomize v2.0.3):
#     fetched with `apt-get download` and unpacked into tests/deploy/.tools/
#     instead of installed, because it ships /usr/bin/kubectl, which another
#     kubectl (e.g. a cloud SDK's) may already own.
#   npm packages (tests/deploy/package.json + package-lock.json, `npm ci`
#     into tests/deploy/node_modules/, git-ignored):
#     yaml, kubernetes-models (Kubernetes API schemas), dockerfile-utils (lint).
#
# Usage: tests/deploy/setup.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
TOOLS=$HERE/.tools
KUBECTL_PKG=kubernetes-client

say() { printf 'deploy-setup: %s\n' "$*"; }
die() {
	printf 'deploy-setup: error: %s\n' "$*" >&2
	exit 1
}

SUDO=()
CAN_INSTALL=1
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else CAN_INSTALL=0; fi
fi
APT=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
APT_UPDATED=0
apt_update() {
	if [ "$APT_UPDATED" = 0 ]; then
		"${SUDO[@]}" "${APT[@]}" update -q >/dev/null
		APT_UPDATED=1
	fi
}

# --- Debian packages ------------------------------------------------------------------

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have promtool || need+=(prometheus)
have docker-compose || need+=(docker-compose)
[ -x /usr/sbin/nginx ] || have nginx || need+=(nginx-light)
have node || need+=(nodejs)
have npm || need+=(npm)
have objdump || need+=(binutils)
have pkg-config || need+=(pkg-config)
have dpkg-deb || need+=(dpkg-dev)
have shellcheck || need+=(shellcheck)
have python3 || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
	[ "$CAN_INSTALL" = 1 ] || die "not root and no sudo; as root run: apt-get install -y --no-install-recommends ${need[*]}"
	say "installing ${need[*]}"
	apt_update
	"${SUDO[@]}" "${APT[@]}" install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# --- Debian's kubectl, unpacked -------------------------------------------------------------

kubectl_ok() { [ -x "$TOOLS/kubectl" ] && "$TOOLS/kubectl" version --client >/dev/null 2>&1; }
if ! kubectl_ok; then
	say "fetching Debian's $KUBECTL_PKG into ${TOOLS#"$PWD"/}"
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	# apt-get download writes into the current directory, as the _apt user
	# when it can: let it.
	chmod 0755 "$work"
	if ! (cd "$work" && apt-get download -q "$KUBECTL_PKG" >/dev/null 2>&1); then
		apt_update
		(cd "$work" && apt-get download -q "$KUBECTL_PKG" >/dev/null) || die "apt-get download $KUBECTL_PKG failed"
	fi
	dpkg-deb -x "$work"/"$KUBECTL_PKG"_*.deb "$work/root"
	mkdir -p "$TOOLS"
	install -m 0755 "$work/root/usr/bin/kubectl" "$TOOLS/kubectl.tmp"
	mv "$TOOLS/kubectl.tmp" "$TOOLS/kubectl"
	dpkg-deb -f "$work"/"$KUBECTL_PKG"_*.deb Version >"$TOOLS/kubectl.version"
	kubectl_ok || die "$TOOLS/kubectl does not run"
fi

# --- npm packages ---------------------------------------------------------------------------

stamp=$HERE/node_modules/.setup-stamp
want=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	say "npm ci (tests/deploy/node_modules)"
	(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed"
	printf '%s\n' "$want" >"$stamp"
fi

say "ready: $(promtool --version 2>&1 | head -n1 | cut -d' ' -f1-3), docker-compose $(docker-compose version --short 2>/dev/null), kubectl $(cat "$TOOLS/kubectl.version"), node $(node --version)"
