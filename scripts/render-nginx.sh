#!/usr/bin/env bash
# Renders deploy/local/nginx.conf.in (and deploy/local/docs.conf.in, which it
# includes) into PREFIX/nginx.conf and PREFIX/docs.conf, and makes the
# directories nginx writes to (PREFIX/logs, PREFIX/tmp). One rendering for
# everybody: scripts/stack.sh (`make run`) and the edge integration tests
# (tests/integration/test_edge.py) both call this script.
#
# Usage: scripts/render-nginx.sh PREFIX LISTEN UPSTREAM MEDIA_DIR DOCS_DIR
#   PREFIX     absolute directory of the instance (nginx -p PREFIX)
#   LISTEN     host:port nginx listens on
#   UPSTREAM   host:port of the backend
#   MEDIA_DIR  absolute directory served under /media/
#   DOCS_DIR   absolute directory served under /docs/ (build/docs)
# Env: the edge rate limits per client address (api.md "Conventions"); the
#   defaults let a busy legitimate client through (README "Edge limits"):
#   EDGE_AUTH_RATE=50r/s  EDGE_AUTH_BURST=100    /api/v1/auth/*
#   EDGE_API_RATE=500r/s  EDGE_API_BURST=1000    the rest of /api/
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
if [ "$#" -ne 5 ]; then
	echo "usage: $0 PREFIX LISTEN UPSTREAM MEDIA_DIR DOCS_DIR" >&2
	exit 2
fi
PREFIX=$1 LISTEN=$2 UPSTREAM=$3 MEDIA=$4 DOCS=$5
AUTH_RATE=${EDGE_AUTH_RATE:-50r/s}
AUTH_BURST=${EDGE_AUTH_BURST:-100}
API_RATE=${EDGE_API_RATE:-500r/s}
API_BURST=${EDGE_API_BURST:-1000}

fail() {
	printf 'render-nginx: %s\n' "$*" >&2
	exit 1
}
# nginx would take anything here; refuse what it would misread.
for rate in "$AUTH_RATE" "$API_RATE"; do
	[[ $rate =~ ^[1-9][0-9]*r/[sm]$ ]] || fail "a rate is N r/s or N r/m (got '$rate')"
done
for burst in "$AUTH_BURST" "$API_BURST"; do
	[[ $burst =~ ^[1-9][0-9]*$ ]] || fail "a burst is a whole number >= 1, as nginx requires (got '$burst')"
done

sed_escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

user_directive=""
# Workers need a user only when the master runs as root.
if [ "$(id -u)" -eq 0 ]; then user_directive="user root;"; fi

mkdir -p "$PREFIX/logs" "$PREFIX/tmp" || fail "cannot create $PREFIX"
if ! sed -e "s|@DOCS_DIR@|$(sed_escape "$DOCS")|g" "$ROOT/deploy/local/docs.conf.in" >"$PREFIX/docs.conf.tmp" ||
	! mv "$PREFIX/docs.conf.tmp" "$PREFIX/docs.conf"; then
	fail "cannot write $PREFIX/docs.conf"
fi
if ! sed -e "s|@USER_DIRECTIVE@|$(sed_escape "$user_directive")|" \
	-e "s|@PREFIX@|$(sed_escape "$PREFIX")|g" \
	-e "s|@MEDIA_DIR@|$(sed_escape "$MEDIA")|g" \
	-e "s|@LISTEN@|$(sed_escape "$LISTEN")|g" \
	-e "s|@UPSTREAM@|$(sed_escape "$UPSTREAM")|g" \
	-e "s|@AUTH_RATE@|$AUTH_RATE|g" -e "s|@AUTH_BURST@|$AUTH_BURST|g" \
	-e "s|@API_RATE@|$API_RATE|g" -e "s|@API_BURST@|$API_BURST|g" \
	"$ROOT/deploy/local/nginx.conf.in" >"$PREFIX/nginx.conf.tmp" ||
	! mv "$PREFIX/nginx.conf.tmp" "$PREFIX/nginx.conf"; then
	fail "cannot write $PREFIX/nginx.conf"
fi
