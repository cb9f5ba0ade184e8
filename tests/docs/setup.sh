#!/usr/bin/env bash
# Installs what tests/docs/check.sh needs from npm — @redocly/cli,
# playwright-core, yaml — into tests/docs/node_modules (git-ignored), exactly
# as pinned in tests/docs/package-lock.json, with install scripts disabled
# (nothing downloads a browser: the test drives Debian's /usr/bin/chromium).
# Idempotent: does nothing when node_modules already matches the lock file.
#
# Debian packages the checks use (scripts/deps.sh installs them):
#   chromium (the browser test), nginx-light (the docs server), curl
# plus Node.js >= 18.17 and npm: Debian 12's own nodejs 18 + npm 9 do
# (scripts/deps.sh installs them when there is no node), and so does a newer
# Node. The pins (@redocly/cli 1.34, playwright-core 1.61) are the last
# releases that support Node 18; docs/fresh-debian.md has the proof.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
cd "$HERE"

command -v node >/dev/null 2>&1 || { echo "docs setup: node not found" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "docs setup: npm not found" >&2; exit 1; }
major_minor=$(node -p 'process.versions.node.split(".").slice(0, 2).join(" ")')
read -r major minor <<<"$major_minor"
if [ "$major" -lt 18 ] || { [ "$major" -eq 18 ] && [ "$minor" -lt 17 ]; }; then
	echo "docs setup: node $(node --version) is too old: the pinned tools need Node.js >= 18.17 (Debian 12 ships 18.20)" >&2
	exit 1
fi

stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ ! package-lock.json -nt "$stamp" ] && [ ! package.json -nt "$stamp" ] &&
	[ -x node_modules/.bin/redocly ] && [ -f node_modules/playwright-core/package.json ]; then
	echo "docs setup: node_modules up to date"
else
	echo "docs setup: npm ci (tests/docs)"
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "${#missing[@]}" -gt 0 ]; then
	echo "docs setup: missing Debian packages: ${missing[*]} (apt-get install -y --no-install-recommends ${missing[*]})" >&2
fi
exit 0
