#!/usr/bin/env bash
# Builds the interactive API docs: Swagger UI from npm's swagger-ui-dist
# (pinned in docs/swagger/package-lock.json) + api/openapi.yaml + our
# index.html, into a git-ignored folder that nginx serves at /docs/
# (deploy/local/docs.conf.in). Everything the page loads is in that folder:
# no CDN, no request leaves the host at run time.
#
# Usage: docs/swagger/build.sh [OUT_DIR]     (default: build/docs)
# Needs node + npm (installs swagger-ui-dist into docs/swagger/node_modules
# on first use, from the lock file, with install scripts disabled).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/../.." && pwd -P)
OUT=${1:-$ROOT/build/docs}
SPEC=$ROOT/api/openapi.yaml
DIST=$HERE/node_modules/swagger-ui-dist

die() { echo "docs build: $*" >&2; exit 1; }

[ -f "$SPEC" ] || die "$SPEC not found"
command -v npm >/dev/null 2>&1 || die "npm not found (Debian: nodejs + npm, or the machine's Node.js)"

# (Re)install when node_modules is missing or older than the lock file.
stamp=$HERE/node_modules/.package-lock.json
if [ ! -f "$DIST/package.json" ] || [ ! -f "$stamp" ] || [ "$HERE/package-lock.json" -nt "$stamp" ]; then
	echo "docs build: npm ci in docs/swagger" >&2
	(cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) ||
		die "npm ci failed in $HERE"
fi
want=$(node -p 'require(process.argv[1]).packages["node_modules/swagger-ui-dist"].version' "$HERE/package-lock.json")
have=$(node -p 'require(process.argv[1]).version' "$DIST/package.json")
[ "$want" = "$have" ] || die "swagger-ui-dist $have installed, lock file wants $want (rm -rf $HERE/node_modules)"

# Build next to OUT, then swap, so nginx never serves a half-written folder.
mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d "$OUT.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for f in swagger-ui-bundle.js swagger-ui.css favicon-16x16.png favicon-32x32.png LICENSE NOTICE; do
	[ -f "$DIST/$f" ] || die "swagger-ui-dist lacks $f"
	cp "$DIST/$f" "$tmp/$f"
done
# The bundle names a source map that is not shipped here; drop the comment so
# developer tools do not ask for it.
sed -i -e '/^\/\/# sourceMappingURL=/d' "$tmp/swagger-ui-bundle.js"
cp "$HERE/index.html" "$HERE/swagger-initializer.js" "$tmp/"
cp "$SPEC" "$tmp/openapi.yaml"
printf 'swagger-ui-dist %s\n' "$have" >"$tmp/VERSION.txt"

# No file of the page may name an outside host to load from.
if grep -nE '(src|href)=["'"'"']?(https?:)?//' "$tmp/index.html"; then
	die "index.html loads something from another host"
fi
chmod 0755 "$tmp"
chmod 0644 "$tmp"/*

if [ -d "$OUT" ]; then
	old=$(mktemp -d "$OUT.old.XXXXXX")
	mv "$OUT" "$old/docs"
	mv "$tmp" "$OUT"
	rm -rf "$old"
else
	mv "$tmp" "$OUT"
fi
trap - EXIT
echo "docs build: $OUT (swagger-ui-dist $have, $(grep -c '' "$SPEC") lines of api/openapi.yaml)"
