#!/usr/bin/env bash
# Installs the Debian 12 packages that building, running and testing marketd
# need — only the missing ones. Idempotent and quiet when nothing is missing.
#
# Usage: scripts/deps.sh            (as root, or as a user with sudo)
set -euo pipefail

PACKAGES=(
	# build: gcc/make, clang with libFuzzer + sanitizer runtimes
	build-essential pkg-config clang libclang-rt-14-dev
	# the format check of make test (.clang-format)
	clang-format
	# llvm-symbolizer: file:line in sanitizer reports of the fuzz builds
	llvm-14
	# libraries the binary links (see PKGS in the Makefile) and unit tests
	libpq-dev libh2o-evloop-dev libsodium-dev libjansson-dev libssl-dev
	libhiredis-dev libcmocka-dev
	# the local stack and the throwaway test databases
	postgresql-15 postgresql-client-15 nginx-light redis-server
	# integration tests and benchmarks
	python3 python3-psycopg2 python3-yaml wrk curl
	# make test-loaded: the suite under CPU load
	stress-ng
	# the API docs check: Swagger UI rendered in headless Chromium (Node.js
	# and npm: see below; npm packages are pinned by lock files)
	chromium
	# the deploy checks: promtool, docker-compose config, shellcheck
	prometheus docker-compose shellcheck
	# what scripts/*.sh and tests/lib/pg.sh call: ss, ps/pkill, runuser,
	# setsid, timeout, sha256sum, od, find, sed, awk
	iproute2 procps util-linux coreutils findutils sed mawk
)

# Node.js and npm (Swagger UI at /docs, the docs and deploy checks): a node
# already on PATH is kept (e.g. NodeSource's, which bundles npm); without
# one, Debian's nodejs 18 and npm 9 — the npm tooling is pinned to versions
# that run on Node 18 (tests/docs/package.json, docs/fresh-debian.md).
if ! command -v node >/dev/null 2>&1; then
	PACKAGES+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
	case $(dpkg-query -W -f='${Version}' nodejs 2>/dev/null) in
	*dfsg*) PACKAGES+=(npm) ;; # Debian's own nodejs: its npm is a separate package
	*) echo "deps: node $(node --version) has no npm next to it; install the npm of that Node.js" >&2 ;;
	esac
fi

# Everything dpkg reports as fully installed; a package dpkg has never heard of
# is simply absent from the output (its error goes to /dev/null).
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null |
	awk '$2 == "installed" { print $1 }' || true)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! grep -qxF -- "$p" <<<"$installed"; then
		missing+=("$p")
	fi
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "deps: all ${#PACKAGES[@]} packages present"
	exit 0
fi

echo "deps: installing ${#missing[@]} missing package(s): ${missing[*]}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "deps: not root and sudo is not installed; as root run:" >&2
		echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
	SUDO=(sudo)
fi

# Wait for a dpkg lock held by another apt run instead of failing at once.
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
export DEBIAN_FRONTEND=noninteractive

"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q \
	--no-install-recommends "${missing[@]}"

# Installing postgresql-15 may create and start Debian's own cluster on port
# 5432. We never use it (our clusters live in .data/pg and temp dirs) and
# leave it exactly as the package set it up.

still=()
for p in "${missing[@]}"; do
	if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
		still+=("$p")
	fi
done
if [ "${#still[@]}" -ne 0 ]; then
	echo "deps: still missing after apt-get install: ${still[*]}" >&2
	exit 1
fi
echo "deps: installed ${missing[*]}"
