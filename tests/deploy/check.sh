#!/usr/bin/env bash
# Offline validation of the deployment artefacts (issue 5): Prometheus
# configuration, alert rules and their unit tests, the Grafana dashboard,
# nginx configurations, docker-compose.prod.yml (and its Swarm stack form),
# the Dockerfiles, and the Kubernetes manifests rendered with kustomize and
# validated against the Kubernetes API schemas. Nothing here is run for real (no Docker engine, no
# cluster): each artefact goes through the tool that would consume it, plus
# the project's own rules (tests/deploy/lib/policy.cjs).
#
# Prints one line per check (PASS / FAIL / SKIP, with the tool's output under
# a FAIL), then "deploy-checks: N passed, N failed, N skipped"; exits 1 if
# anything failed. Needs no network: run tests/deploy/setup.sh once first.
#
# Usage: tests/deploy/check.sh
# Env:   DEPLOY_CHECK_ROOT  the tree to check (default: this checkout); the
#                           tools always come from this script's directory.
#        KUBECTL_NEW        a kubectl >= 1.21 to cross-check the rendering with
#                           (default: `kubectl` on PATH if it is one; else skipped)
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "${DEPLOY_CHECK_ROOT:-$HERE/../..}" && pwd -P)
NM=$HERE/node_modules
KUBECTL=$HERE/.tools/kubectl
NGINX=${NGINX_BIN:-/usr/sbin/nginx}

TMP=$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/marketd-deploy-check.XXXXXX")
HTTP_PID=""
cleanup() {
	if [ -n "$HTTP_PID" ]; then kill "$HTTP_PID" 2>/dev/null; fi
	rm -rf "$TMP"
}
trap cleanup EXIT

PASSED=0
FAILED=0
SKIPPED=0

# check NAME CMD...: runs CMD with its output captured; one line of verdict.
check() {
	local name=$1 log
	shift
	log=$TMP/check.log
	if "$@" >"$log" 2>&1; then
		printf 'PASS  %s\n' "$name"
		PASSED=$((PASSED + 1))
	else
		printf 'FAIL  %s\n' "$name"
		tail -n 40 "$log" | sed 's/^/      | /'
		FAILED=$((FAILED + 1))
	fi
}
skip() {
	printf 'SKIP  %s (%s)\n' "$1" "$2"
	SKIPPED=$((SKIPPED + 1))
}
policy() { node "$HERE/lib/policy.cjs" "$@"; }

# --- the tools --------------------------------------------------------------------------

tools_present() {
	local missing=()
	for t in promtool docker-compose node shellcheck python3 objdump pkg-config dpkg-deb; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	[ -x "$NGINX" ] || missing+=("$NGINX")
	[ -x "$KUBECTL" ] || missing+=("$KUBECTL")
	for m in yaml kubernetes-models dockerfile-utils; do
		[ -d "$NM/$m" ] || missing+=("node_modules/$m")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "missing: ${missing[*]} (run tests/deploy/setup.sh)"
		return 1
	fi
}

# --- Prometheus -------------------------------------------------------------------------

PROM=$ROOT/deploy/prometheus

prom_check_config() {
	local rc=0 f
	# In a copy with the target directory the local config's file_sd globs
	# point into, as scripts/monitoring.sh lays it out.
	mkdir -p "$TMP/prom/targets"
	echo '[]' >"$TMP/prom/targets/postgres.json"
	echo '[]' >"$TMP/prom/targets/redis.json"
	cp "$PROM"/*.yml "$TMP/prom/"
	for f in prometheus.yml prometheus.compose.yml prometheus.k8s.yml; do
		promtool check config "$TMP/prom/$f" || rc=1
	done
	return $rc
}

# --- Grafana ------------------------------------------------------------------------------

dashboard_queries() {
	policy dashboard "$ROOT/deploy/grafana/marketd.json" "$TMP/dashboard-rules.yml" &&
		promtool check rules "$TMP/dashboard-rules.yml"
}

grafana_provisioning() {
	local f
	for f in "$ROOT"/deploy/grafana/provisioning/*/*.yml; do
		node -e 'try { require(process.argv[1]).parse(require("fs").readFileSync(process.argv[2], "utf8")) }
			catch (e) { console.log(process.argv[2] + ": " + e.message); process.exit(1) }' "$NM/yaml" "$f" || return 1
	done
}

# --- nginx ----------------------------------------------------------------------------------

# nginx -t on a config whose upstream is a name only the deployment resolves:
# render it into a temp prefix with a stub upstream on loopback and the /tmp
# paths moved into the prefix.
nginx_test() {
	local src=$1 dir
	dir=$(mktemp -d "$TMP/nginx.XXXX")
	sed -e 's|^\([[:space:]]*server\) backend:8080\( resolve\)\{0,1\};|\1 127.0.0.1:9;|' \
		-e 's|^\([[:space:]]*set [$]marketd_backend\) backend:8080;|\1 127.0.0.1:9;|' \
		-e "s|/tmp/|$dir/|g" "$src" >"$dir/nginx.conf"
	if grep -q 'backend:8080' "$dir/nginx.conf"; then
		echo "the backend ('server backend:8080;' or 'set \$marketd_backend backend:8080;') was not found to stub"
		return 1
	fi
	"$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -g "error_log $dir/error.log;"
}

# nginx/nginx.conf has what S2 and the deployment need, and the Kubernetes
# copy differs from it only in the upstream.
nginx_in_step() {
	local a=$ROOT/nginx/nginx.conf b=$ROOT/deploy/k8s/base/nginx.conf rc=0 want
	# nginx 1.22 (Debian 12) and current: a variable target, re-resolved
	# through Docker's DNS, instead of `server ... resolve` (>= 1.27.3).
	grep -q 'resolve;' "$a" && {
		echo "nginx/nginx.conf: 'server ... resolve' needs nginx >= 1.27.3; Debian 12 has 1.22"
		rc=1
	}
	grep -q 'keepalive [0-9]' "$b" || {
		echo "deploy/k8s/base/nginx.conf lacks the keep-alive pool to the backend Service"
		rc=1
	}
	for want in 'resolver 127.0.0.11 valid=5s' 'set [$]marketd_backend backend:8080;' 'proxy_pass http://[$]marketd_backend;' \
		'proxy_http_version 1.1;' 'proxy_set_header Connection "";' 'proxy_set_header X-Request-Id ' \
		'proxy_set_header X-Forwarded-For ' 'add_header Cache-Control "public, max-age=31536000, immutable";' \
		'client_max_body_size 5m;' 'location /media/' \
		'limit_req_zone [$]binary_remote_addr zone=marketd_auth' 'error_page 413 /_edge/413;' 'error_page 502 /_edge/502;'; do
		grep -q -- "$want" "$a" || {
			echo "nginx/nginx.conf lacks: $want"
			rc=1
		}
	done
	grep -q 'server backend:8080;' "$b" || {
		echo "deploy/k8s/base/nginx.conf: upstream is not the backend Service"
		rc=1
	}
	# Apart from the header comment: the resolver (compose), the upstream
	# block (Kubernetes) and the line that picks one of them.
	body() {
		sed -e '1,/^[^#]/{/^#/d}' -e '/^[[:space:]]*resolver/d' -e '/^    upstream marketd_backend {/,/^    }/d' \
			-e '/set [$]marketd_backend/d' -e '/^[[:space:]]*# \(The backends\|The upstream block\|not looked up\)/d' "$1" | cat -s
	}
	if ! diff -u <(body "$a") <(body "$b") >"$TMP/nginx.diff"; then
		echo "nginx/nginx.conf and deploy/k8s/base/nginx.conf differ beyond the upstream:"
		cat "$TMP/nginx.diff"
		rc=1
	fi
	return $rc
}

pgbouncer_in_step() {
	local a=$ROOT/deploy/docker/pgbouncer/pgbouncer.ini b=$ROOT/deploy/k8s/base/pgbouncer.ini
	diff -u "$a" "$b" || {
		echo "deploy/k8s/base/pgbouncer.ini must equal deploy/docker/pgbouncer/pgbouncer.ini"
		return 1
	}
	grep -Eq '^pool_mode[[:space:]]*=[[:space:]]*transaction[[:space:]]*$' "$a" || {
		echo "pgbouncer.ini: pool_mode = transaction (S5)"
		return 1
	}
}

# --- docker-compose -------------------------------------------------------------------------

# In a copy of the files compose reads, with the env files made from their
# *.env.example (compose refuses a missing env_file).
compose_tree() {
	local d=$TMP/compose f
	[ -d "$d" ] && return 0
	mkdir -p "$d/deploy"
	cp "$ROOT/docker-compose.prod.yml" "$ROOT/Dockerfile" "$d/" &&
		cp -r "$ROOT/nginx" "$d/" &&
		cp -r "$ROOT/deploy/env" "$ROOT/deploy/docker" "$ROOT/deploy/prometheus" "$ROOT/deploy/grafana" "$d/deploy/" || return 1
	for f in "$d"/deploy/env/*.env.example; do
		cp "$f" "${f%.example}"
	done
}

compose() { (cd "$TMP/compose" && env COMPOSE_PROJECT_NAME=marketd docker-compose -f docker-compose.prod.yml "$@"); }

compose_config() { compose_tree && compose config -q && compose --profile monitoring config -q; }

compose_policy() {
	compose_tree && compose config >"$TMP/compose.yml" &&
		policy compose "$TMP/compose.yml" "$TMP/compose/docker-compose.prod.yml"
}

# The same file for `docker stack deploy` (issue 12 item 4; S1 Docker Swarm,
# S17 deployment): the `docker-compose config` outputs (with
# deploy/swarm/docker-compose.swarm.yml) that tests/compose/run.sh and users
# feed to deploy/swarm/compose-to-stack.py, transformed and checked by
# tests/deploy/test_compose_to_stack.py (no Swarm-unsupported key survives;
# the rolling-update settings, dnsrr, replicas and one-shot restart policies
# are there).
swarm_stack() {
	local d=$TMP/compose sw=(-f deploy/swarm/docker-compose.swarm.yml)
	compose_tree || return 1
	mkdir -p "$d/deploy/swarm"
	cp "$ROOT/tests/compose/docker-compose.test.yml" "$d/docker-compose.test.yml"
	cp "$ROOT/deploy/swarm/docker-compose.swarm.yml" "$d/deploy/swarm/"
	compose config >"$TMP/compose-prod.yml" &&
		compose "${sw[@]}" config >"$TMP/swarm-prod.yml" &&
		compose "${sw[@]}" --profile cluster config >"$TMP/swarm-cluster.yml" &&
		(cd "$d" && MARKETD_HTTP_PORT=127.0.0.1:18080 COMPOSE_PROJECT_NAME=marketd docker-compose -f docker-compose.prod.yml \
			-f docker-compose.test.yml "${sw[@]}" --profile cluster config) >"$TMP/swarm-test.yml" || return 1
	COMPOSE_CONFIG=$TMP/compose-prod.yml \
		STACK_CONFIGS="prod||$TMP/swarm-prod.yml:prod+cluster|cluster|$TMP/swarm-cluster.yml:prod+test override|cluster|$TMP/swarm-test.yml" \
		python3 "$HERE/test_compose_to_stack.py" || return 1
	python3 "$ROOT/deploy/swarm/compose-to-stack.py" --profile cluster --check "$TMP/swarm-cluster.yml" >"$TMP/stack.yml"
}

# A Docker CLI with `docker stack config` (>= 23; Debian 12's 20.10 has
# none) loads the stack file with its own compose loader and schema, without
# a daemon: a cross-check of the transform's output.
stack_cli() {
	local d
	for d in ${DOCKER_CLI:-} $(type -ap docker); do
		if "$d" stack config --help >/dev/null 2>&1; then
			echo "$d"
			return 0
		fi
	done
	return 1
}
stack_load() { DOCKER_HOST=unix:///nonexistent "$1" stack config -c "$TMP/stack.yml" >/dev/null; }

# --- Dockerfiles ------------------------------------------------------------------------------

dockerfile_lint() {
	local f out rc=0
	for f in "$ROOT/Dockerfile" "$ROOT/deploy/docker/pgbouncer/Dockerfile" "$ROOT"/deploy/docker/standins/*/Dockerfile; do
		out=$("$NM/.bin/dockerfile-utils" lint -j "$f") || rc=1
		if [ "$out" != "[]" ]; then
			echo "${f#"$ROOT"/}: $out"
			rc=1
		fi
	done
	return $rc
}

# The apt lines of one stage of the Dockerfile (1 = build, 2 = runtime).
stage_text() { awk -v n="$1" '/^FROM /{s++} s==n' "$ROOT/Dockerfile"; }

# Every library the Makefile links (PKGS + -lssl -lcrypto) has its -dev
# package in the build stage and its runtime package in the runtime stage.
docker_packages() {
	local mods pc devpkg lib so rtpkg rc=0 build runtime
	mods=$(sed -n 's/^PKGS[[:space:]]*:=[[:space:]]*//p' "$ROOT/Makefile")
	[ -n "$mods" ] || {
		echo "no PKGS in the Makefile"
		return 1
	}
	build=$(stage_text 1)
	runtime=$(stage_text 2)
	for mod in $mods; do
		pc=$(pkg-config --variable=pcfiledir "$mod")/$mod.pc || {
			echo "pkg-config does not know $mod (install the build dependencies: scripts/deps.sh)"
			rc=1
			continue
		}
		devpkg=$(dpkg -S "$(readlink -f "$pc")" 2>/dev/null | head -n1 | cut -d: -f1)
		if [ -z "$devpkg" ] || ! grep -qw -- "$devpkg" <<<"$build"; then
			echo "build stage lacks ${devpkg:-the package of $pc} (for $mod)"
			rc=1
		fi
		for lib in $(pkg-config --libs-only-l "$mod") -lssl -lcrypto; do
			so=$(cc -print-file-name="lib${lib#-l}.so")
			so=$(readlink -f "$so")
			rtpkg=$(dpkg -S "$so" 2>/dev/null | head -n1 | cut -d: -f1)
			if [ -z "$rtpkg" ]; then
				echo "no package owns $so (-${lib#-})"
				rc=1
			elif [ "$rtpkg" != libc6 ] && ! grep -qw -- "$rtpkg" <<<"$runtime"; then
				echo "runtime stage lacks $rtpkg (for ${lib}, $so)"
				rc=1
			fi
		done
	done
	return $rc
}

# The build context that .dockerignore lets through holds every COPY source
# and what `make build` needs (dry run: every source file present).
docker_context() {
	local ctx=$TMP/context p src rc=0
	mkdir -p "$ctx"
	grep -q '^\*$' "$ROOT/.dockerignore" || {
		echo ".dockerignore is expected to start from '*' (allow-list)"
		return 1
	}
	while IFS= read -r p; do
		p=${p#!}
		p=${p%/}
		[ -e "$ROOT/$p" ] || continue
		mkdir -p "$ctx/$(dirname "$p")" && cp -r "$ROOT/$p" "$ctx/$p"
	done < <(grep '^!' "$ROOT/.dockerignore")
	while read -r src; do
		[ -e "$ctx/$src" ] || {
			echo "COPY $src: not in the build context (.dockerignore)"
			rc=1
		}
	done < <(awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$ROOT/Dockerfile")
	compgen -G "$ctx/migrations/*.sql" >/dev/null || {
		echo "no migrations/*.sql in the build context"
		rc=1
	}
	make -n -C "$ctx" build >"$TMP/make-n.log" 2>&1 || {
		cat "$TMP/make-n.log"
		echo "make -n build fails in the build context"
		rc=1
	}
	return $rc
}

# The image's HEALTHCHECK script against a stand-in HTTP server: 200 on
# /healthz passes, 404 and a closed port fail.
healthcheck_script() {
	local port www=$TMP/www hc=$ROOT/deploy/docker/healthcheck.sh
	mkdir -p "$www" && echo ok >"$www/healthz"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	python3 -m http.server --bind 127.0.0.1 --directory "$www" "$port" >"$TMP/http.log" 2>&1 &
	HTTP_PID=$!
	for _ in $(seq 1 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
	LISTEN=0.0.0.0:$port bash "$hc" || {
		echo "GET /healthz answered 200 but the script failed"
		return 1
	}
	if LISTEN=0.0.0.0:$port bash "$hc" /missing; then
		echo "a 404 passed"
		return 1
	fi
	kill "$HTTP_PID" 2>/dev/null
	wait "$HTTP_PID" 2>/dev/null
	HTTP_PID=""
	if LISTEN=0.0.0.0:$port bash "$hc" 2>/dev/null; then
		echo "a closed port passed"
		return 1
	fi
}

# --- Kubernetes -------------------------------------------------------------------------------

K8S=$ROOT/deploy/k8s

render() { "$KUBECTL" kustomize "$K8S/$1" >"$TMP/k8s-$2.yaml"; }

k8s_schema() {
	local rc=0
	node "$HERE/lib/k8s-validate.cjs" "$TMP/k8s-base.yaml" "$TMP/k8s-prod.yaml" "$K8S/base/secret.example.yaml" \
		>"$TMP/k8s-schema.log" || rc=1
	grep -v '^ok ' "$TMP/k8s-schema.log"
	return $rc
}

k8s_policy() { policy k8s "$TMP/k8s-base.yaml" base && policy k8s "$TMP/k8s-prod.yaml" prod; }

# A kubectl >= 1.21 (kustomize v4/v5) renders the same objects as Debian's
# 1.20 (kustomize v2.0.3): the manifests work with old and current tooling.
kubectl_new() {
	local k=${KUBECTL_NEW:-kubectl} minor
	command -v "$k" >/dev/null 2>&1 || return 1
	# prints "MINOR GITVERSION", e.g. "32 v1.32.4"
	minor=$("$k" version --client -o json 2>/dev/null | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
		try { const v = JSON.parse(s).clientVersion; console.log((parseInt(v.minor, 10) || 0) + " " + v.gitVersion) } catch (e) { console.log("0 ?") } })')
	[ "${minor%% *}" -ge 21 ] && printf '%s %s\n' "$k" "${minor#* }"
}

k8s_same() {
	local k=$1
	"$k" kustomize "$K8S/overlays/prod" >"$TMP/k8s-prod-new.yaml" 2>"$TMP/kustomize-new.err" || {
		cat "$TMP/kustomize-new.err"
		return 1
	}
	policy k8s-same "$TMP/k8s-prod.yaml" "$TMP/k8s-prod-new.yaml"
}

# --- shell ------------------------------------------------------------------------------------

shell_lint() {
	shellcheck "$ROOT/scripts/monitoring.sh" "$ROOT/deploy/docker/healthcheck.sh" \
		"$ROOT/deploy/docker/pgbouncer/entrypoint.sh" "$ROOT"/deploy/docker/postgres/*.sh \
		"$ROOT/deploy/docker/redis/cluster-init.sh" "$ROOT/deploy/docker/standins/postgres/docker-entrypoint.sh" \
		"$ROOT/tests/lib/docker.sh" "$ROOT/tests/compose/run.sh" "$ROOT/tests/fresh/run.sh" \
		"$HERE/setup.sh" "$HERE/check.sh" "$ROOT/tests/stack/check.sh" "$ROOT/scripts/test-loaded.sh" \
		"$ROOT/scripts/test-reaper.sh"
}

# --- run ----------------------------------------------------------------------------------------

echo "deploy-checks: $ROOT"
check "tools installed (tests/deploy/setup.sh)" tools_present
if [ "$FAILED" -gt 0 ]; then
	echo "deploy-checks: 0 passed, 1 failed"
	exit 1
fi

check "prometheus: promtool check config (local, compose, k8s)" prom_check_config
check "prometheus: promtool check rules alerts.yml" promtool check rules "$PROM/alerts.yml"
check "prometheus: promtool test rules alerts_test.yml" promtool test rules "$PROM/alerts_test.yml"
check "prometheus: the document's alerts, thresholds and actions (S14)" policy alerts "$PROM/alerts.yml"
check "metrics: every metric in alerts and dashboard is exported by src/" \
	policy metrics "$ROOT/src" "$PROM/alerts.yml" "$ROOT/deploy/grafana/marketd.json"
check "grafana: dashboard JSON, panels, PromQL of every query" dashboard_queries
check "grafana: provisioning files are YAML" grafana_provisioning
check "nginx: nginx -t nginx/nginx.conf (stub upstream)" nginx_test "$ROOT/nginx/nginx.conf"
check "nginx: nginx -t deploy/k8s/base/nginx.conf (stub upstream)" nginx_test "$ROOT/deploy/k8s/base/nginx.conf"
check "nginx: required directives; k8s copy in step" nginx_in_step
check "pgbouncer: transaction mode; k8s copy in step" pgbouncer_in_step
check "compose: docker-compose config -q (with and without --profile monitoring)" compose_config
check "compose: scalable backend, migrate gate, healthchecks, env files" compose_policy
check "swarm: compose-to-stack.py leaves no Swarm-unsupported key; rolling update, dnsrr, replicas kept" swarm_stack
if [ -s "$TMP/stack.yml" ] && cli=$(stack_cli); then
	check "swarm: $cli stack config loads the stack file" stack_load "$cli"
else
	skip "swarm: docker stack config loads the stack file" "no docker CLI >= 23 on PATH, or no stack file"
fi
check "docker: dockerfile-utils lint (Dockerfile, pgbouncer)" dockerfile_lint
check "docker: multi-stage, slim non-root runtime, HEALTHCHECK, entrypoint" policy dockerfile "$ROOT/Dockerfile"
check "docker: build/runtime packages cover the Makefile's libraries" docker_packages
check "docker: build context (.dockerignore) holds COPY sources and make build's inputs" docker_context
check "docker: health-check script (200 passes; 404, closed port fail)" healthcheck_script
check "k8s: kubectl kustomize deploy/k8s/base (Debian kubectl $(cut -d+ -f1 "$HERE/.tools/kubectl.version" 2>/dev/null))" render base base
check "k8s: kubectl kustomize deploy/k8s/overlays/prod" render overlays/prod prod
if [ -s "$TMP/k8s-base.yaml" ] && [ -s "$TMP/k8s-prod.yaml" ]; then
	check "k8s: Kubernetes API schemas, strict (base, prod, secret template)" k8s_schema
	check "k8s: probes, resources, HPA as the document, drain timing, security" k8s_policy
	if knew=$(kubectl_new); then
		check "k8s: kubectl ${knew#* } on PATH renders the same objects as Debian's" k8s_same "${knew%% *}"
	else
		skip "k8s: cross-render with kubectl >= 1.21" "none on PATH"
	fi
else
	skip "k8s: schemas, policy, cross-render" "the render failed"
fi
check "shell: shellcheck" shell_lint

echo "deploy-checks: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
