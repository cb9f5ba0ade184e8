#!/usr/bin/env bash
# Checks of the API description and the interactive docs, one line each:
#   setup    npm packages of tests/docs (setup.sh)
#   lint     Redocly lint of api/openapi.yaml (tests/docs/redocly.yaml: strict, zero findings)
#   drift    api/openapi.yaml against the route table (`marketd routes`)
#   build    docs/swagger/build.sh into a temporary folder
#   nginx    a throwaway nginx (plain process, temp prefix) serving the docs
#            through deploy/local/docs.conf.in on a free port 127.0.0.1:18090-18099
#   http     /docs → /docs/, the page, the spec and Swagger UI served as expected
#   browser  Swagger UI in headless Chromium renders every operation, loads
#            nothing from outside the loopback range (browser_test.mjs)
# Ends with "docs checks: N passed, N failed"; exits 1 on any failure.
# Leaves no process and no temp dir behind.
#
# Env: VERBOSE=1 shows each check's log; SCREENSHOT=file.png keeps a
# screenshot of the docs page; SPEC=path (default api/openapi.yaml), ROUTES=path of a
# route table as JSON (default: what `marketd routes` prints) — to run the checks on a
# modified copy; MARKETD_BIN (default build/asan/marketd, built when missing);
# NGINX_BIN (default /usr/sbin/nginx), CHROMIUM (default /usr/bin/chromium).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/../.." && pwd -P)
SPEC=$(realpath "${SPEC:-$ROOT/api/openapi.yaml}")
ROUTES=${ROUTES:+$(realpath "$ROUTES")}
MARKETD_BIN=${MARKETD_BIN:-$ROOT/build/asan/marketd}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1 NO_COLOR=1

PASSED=0
FAILED=0
TMP=$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/marketd-docs-check.XXXXXX")
NGINX_PID=""
PORT=""

cleanup() {
	if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
		kill -QUIT "$NGINX_PID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$NGINX_PID" 2>/dev/null
		wait "$NGINX_PID" 2>/dev/null
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# result NAME OK DETAIL [LOGFILE]: one line; on failure (or with VERBOSE=1)
# the log's tail follows, indented.
result() {
	local name=$1 ok=$2 detail=$3 log=${4:-}
	if [ "$ok" = 1 ]; then
		PASSED=$((PASSED + 1))
		printf 'docs: %-8s PASS  %s\n' "$name" "$detail"
		if [ "${VERBOSE:-0}" = 1 ] && [ -n "$log" ] && [ -s "$log" ]; then tail -n 40 "$log" | sed 's/^/    | /'; fi
	else
		FAILED=$((FAILED + 1))
		printf 'docs: %-8s FAIL  %s\n' "$name" "$detail"
		if [ -n "$log" ] && [ -s "$log" ]; then tail -n 40 "$log" | sed 's/^/    | /'; fi
	fi
}
skip() { FAILED=$((FAILED + 1)); printf 'docs: %-8s FAIL  not run: %s\n' "$1" "$2"; }

# --- setup ----------------------------------------------------------------------
if bash "$HERE/setup.sh" >"$TMP/setup.log" 2>&1; then
	result setup 1 "$(tail -n 1 "$TMP/setup.log" | head -c 200)"
	SETUP_OK=1
else
	result setup 0 "tests/docs/setup.sh failed" "$TMP/setup.log"
	SETUP_OK=0
fi

# --- lint -----------------------------------------------------------------------
if [ "$SETUP_OK" = 1 ]; then
	# (Redocly's boxed Node.js-version banner is dropped from the log.)
	if "$HERE/node_modules/.bin/redocly" lint --config "$HERE/redocly.yaml" --format=stylish "$SPEC" 2>&1 |
		grep -vE '^\s*$|[║╔╚]' >"$TMP/lint.log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
		result lint 1 "redocly $("$HERE/node_modules/.bin/redocly" --version 2>/dev/null | head -n 1): 0 errors, 0 warnings ($(basename "$SPEC"))"
	else
		n=$(grep -cE '^\s+[0-9]+:[0-9]+\s+(error|warning)' "$TMP/lint.log")
		result lint 0 "redocly lint: $n finding(s)" "$TMP/lint.log"
	fi
else
	skip lint "setup failed"
fi

# --- drift ----------------------------------------------------------------------
if [ "$SETUP_OK" = 1 ] && [ -z "$ROUTES" ]; then
	# The table as the binary holds it: modules register their rows in C.
	ROUTES=$TMP/routes.json
	if ! { [ -x "$MARKETD_BIN" ] || make -s -C "$ROOT" asan >"$TMP/drift-build.log" 2>&1; } ||
		! "$MARKETD_BIN" routes >"$ROUTES" 2>"$TMP/drift-routes.log"; then
		echo "drift: cannot print the route table with $MARKETD_BIN" >"$TMP/drift.log"
		cat "$TMP/drift-build.log" "$TMP/drift-routes.log" >>"$TMP/drift.log" 2>/dev/null
		ROUTES=
	fi
fi
if [ "$SETUP_OK" = 1 ] && [ -n "$ROUTES" ]; then
	if node "$HERE/drift_check.mjs" --spec "$SPEC" --routes "$ROUTES" >"$TMP/drift.log" 2>&1; then
		result drift 1 "$(tail -n 1 "$TMP/drift.log" | sed 's/^drift: OK — //')"
	else
		result drift 0 "$(tail -n 1 "$TMP/drift.log" | sed 's/^drift: FAIL — //')" "$TMP/drift.log"
	fi
elif [ "$SETUP_OK" = 1 ]; then
	result drift 0 "no route table" "$TMP/drift.log"
else
	skip drift "setup failed"
fi

# --- build ----------------------------------------------------------------------
DOCS=$TMP/www/docs
mkdir -p "$TMP/www"
BUILD_OK=0
if [ "$SPEC" != "$ROOT/api/openapi.yaml" ]; then
	# build.sh always takes api/openapi.yaml; serve the copy under test instead.
	BUILD_NOTE=" (serving $SPEC)"
else
	BUILD_NOTE=""
fi
if bash "$ROOT/docs/swagger/build.sh" "$DOCS" >"$TMP/build.log" 2>&1; then
	[ -n "$BUILD_NOTE" ] && cp "$SPEC" "$DOCS/openapi.yaml"
	result build 1 "$(tail -n 1 "$TMP/build.log" | sed 's/^docs build: //')$BUILD_NOTE"
	BUILD_OK=1
else
	result build 0 "docs/swagger/build.sh failed" "$TMP/build.log"
fi

# --- nginx ----------------------------------------------------------------------
port_free() {
	# Nothing listens there (bash's /dev/tcp connect fails).
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
start_nginx() {
	local prefix=$TMP/nginx user_directive=""
	mkdir -p "$prefix/logs" "$prefix/tmp"
	# Like scripts/stack.sh: workers need a user only when the master runs as root.
	[ "$(id -u)" -eq 0 ] && user_directive="user root;"
	sed -e "s|@DOCS_DIR@|$DOCS|g" "$ROOT/deploy/local/docs.conf.in" >"$prefix/docs.conf" || return 1
	for p in $(seq 18090 18099); do
		port_free "$p" || continue
		cat >"$prefix/nginx.conf" <<-EOF
			$user_directive
			worker_processes 1;
			pid "$prefix/nginx.pid";
			error_log "$prefix/logs/error.log" warn;
			events { worker_connections 64; }
			http {
			    types { application/json json; }
			    default_type application/octet-stream;
			    client_body_temp_path "$prefix/tmp/client_body";
			    proxy_temp_path       "$prefix/tmp/proxy";
			    fastcgi_temp_path     "$prefix/tmp/fastcgi";
			    uwsgi_temp_path       "$prefix/tmp/uwsgi";
			    scgi_temp_path        "$prefix/tmp/scgi";
			    access_log "$prefix/logs/access.log";
			    server_tokens off;
			    server {
			        listen 127.0.0.1:$p;
			        server_name _;
			        include "$prefix/docs.conf";
			    }
			}
		EOF
		"$NGINX_BIN" -t -q -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" >>"$TMP/nginx.log" 2>&1 || return 1
		"$NGINX_BIN" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/logs/error.log" -g 'daemon off;' \
			</dev/null >>"$TMP/nginx.log" 2>&1 &
		NGINX_PID=$!
		for _ in $(seq 50); do
			if ! kill -0 "$NGINX_PID" 2>/dev/null; then break; fi
			if ! port_free "$p"; then PORT=$p; return 0; fi
			sleep 0.1
		done
		# Lost a race for the port, or failed: try the next one.
		kill -QUIT "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; NGINX_PID=""
		cat "$prefix/logs/error.log" >>"$TMP/nginx.log" 2>/dev/null
	done
	echo "no free port in 18090-18099, or nginx would not start" >>"$TMP/nginx.log"
	return 1
}
NGINX_OK=0
if [ "$BUILD_OK" != 1 ]; then
	skip nginx "no docs build"
elif [ ! -x "$NGINX_BIN" ]; then
	result nginx 0 "$NGINX_BIN not found (Debian package nginx-light)"
elif start_nginx; then
	result nginx 1 "pid $NGINX_PID on 127.0.0.1:$PORT, deploy/local/docs.conf.in"
	NGINX_OK=1
else
	result nginx 0 "could not start" "$TMP/nginx.log"
fi

# --- http -----------------------------------------------------------------------
http_checks() {
	local base="http://127.0.0.1:$PORT" h
	# /docs → 301 to /docs/
	h=$(curl -sS -o /dev/null -D - "$base/docs") || return 1
	grep -qE '^HTTP/1\.1 301' <<<"$h" || { echo "/docs: not a 301:"; echo "$h"; return 1; }
	grep -qiE '^location: (http://127\.0\.0\.1:[0-9]+)?/docs/\s*$' <<<"$h" || { echo "/docs: Location is not /docs/:"; echo "$h"; return 1; }
	# The page: HTML with a CSP, and no reference to another host.
	h=$(curl -sS -D "$TMP/page.h" -o "$TMP/page.html" -w '%{http_code}' "$base/docs/") || return 1
	[ "$h" = 200 ] || { echo "/docs/: HTTP $h"; return 1; }
	grep -qi '^content-type: text/html' "$TMP/page.h" || { echo "/docs/: not text/html"; cat "$TMP/page.h"; return 1; }
	grep -qi "^content-security-policy: default-src 'none'" "$TMP/page.h" || { echo "/docs/: no CSP"; cat "$TMP/page.h"; return 1; }
	if grep -nE '(src|href)=["'"'"']?(https?:)?//' "$TMP/page.html"; then echo "/docs/: the page loads from another host"; return 1; fi
	# The spec, byte for byte, as YAML.
	h=$(curl -sS -D "$TMP/spec.h" -o "$TMP/spec.yaml" -w '%{http_code}' "$base/docs/openapi.yaml") || return 1
	[ "$h" = 200 ] || { echo "/docs/openapi.yaml: HTTP $h"; return 1; }
	grep -qi '^content-type: application/yaml' "$TMP/spec.h" || { echo "/docs/openapi.yaml: not application/yaml"; cat "$TMP/spec.h"; return 1; }
	cmp -s "$TMP/spec.yaml" "$SPEC" || { echo "/docs/openapi.yaml differs from $SPEC"; return 1; }
	# Swagger UI itself, as JavaScript / CSS.
	for f in swagger-ui-bundle.js:application/javascript swagger-ui.css:text/css swagger-initializer.js:application/javascript; do
		h=$(curl -sS -D "$TMP/f.h" -o /dev/null -w '%{http_code}' "$base/docs/${f%%:*}") || return 1
		[ "$h" = 200 ] || { echo "/docs/${f%%:*}: HTTP $h"; return 1; }
		grep -qi "^content-type: ${f#*:}" "$TMP/f.h" || { echo "/docs/${f%%:*}: not ${f#*:}"; cat "$TMP/f.h"; return 1; }
	done
	h=$(curl -sS -o /dev/null -w '%{http_code}' "$base/docs/nope.js") || return 1
	[ "$h" = 404 ] || { echo "/docs/nope.js: HTTP $h, want 404"; return 1; }
	return 0
}
if [ "$NGINX_OK" != 1 ]; then
	skip http "no nginx"
elif ! command -v curl >/dev/null 2>&1; then
	result http 0 "curl not found (Debian package curl)"
elif http_checks >"$TMP/http.log" 2>&1; then
	result http 1 "/docs → /docs/ (301), page + CSP, openapi.yaml identical, Swagger UI assets"
else
	result http 0 "$(head -n 1 "$TMP/http.log")" "$TMP/http.log"
fi

# --- browser --------------------------------------------------------------------
if [ "$NGINX_OK" != 1 ] || [ "$SETUP_OK" != 1 ]; then
	skip browser "no nginx or no npm packages"
elif [ ! -x "$CHROMIUM" ]; then
	result browser 0 "$CHROMIUM not found (Debian package chromium)"
elif timeout 180 node "$HERE/browser_test.mjs" --url "http://127.0.0.1:$PORT/docs" --spec "$SPEC" \
	--chromium "$CHROMIUM" ${SCREENSHOT:+--screenshot "$SCREENSHOT"} >"$TMP/browser.log" 2>&1; then
	result browser 1 "$(grep -m1 'operation blocks' "$TMP/browser.log" | sed 's/^browser: PASS //'); no non-loopback requests" "$TMP/browser.log"
else
	result browser 0 "$(grep -m1 -E 'FAIL|Error' "$TMP/browser.log" | sed 's/^browser: \(FAIL \)\?//')" "$TMP/browser.log"
fi

echo "docs checks: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
