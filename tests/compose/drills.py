#!/usr/bin/env python3
"""Failure drills on the running compose deployment (issue 12 items 4, 6).

Run by tests/compose/run.sh drills (`make drills`, `make swarm-drills`),
which brings the deployment up and sets DRILL_COMPOSE to the docker-compose
command line of it, DRILL_ORCH to compose or swarm (DEPLOY_ORCH) and, for
Swarm, DRILL_STACK to the stack's name. Each drill runs a bounded load through nginx — reads (product list,
product, cities) and idempotent order POSTs (an Idempotency-Key per order,
retried by the client on 502/503/504 and connection errors exactly as a
client would, up to RETRY_S seconds) — and performs one failure at LOAD_S/4:

  kill-backend       SIGKILL of one backend's process, a crash (restart: unless-stopped
                     brings it back; `docker kill` would count as a manual stop)
  rolling-restart    docker restart of each of the 5 backends in turn (SIGTERM,
                     drain, start), waiting for its health check before the next
                     (Compose has no rolling update)
  replica-down       docker stop of one PostgreSQL replica (started again after)
  redis-failover     docker stop of the Redis master of one slot range (its replica takes over)
  redis-down         docker stop of every Redis node for 30 s
  pgbouncer-restart  docker-compose restart pgbouncer
  primary-restart    docker-compose restart postgres-primary

Under Swarm (DRILL_ORCH=swarm) the orchestrator does the work:

  kill-backend       docker kill of one backend task's container; Swarm starts a new task
  rolling-restart    docker service update --force <stack>_backend: Swarm replaces the
                     tasks one at a time, start-first, each new one healthy before an old
                     one is stopped (update_config in docker-compose.prod.yml)
  replica-down       docker stop of one replica's container; Swarm starts a new task
                     (a fresh pg_basebackup)
  redis-failover     docker pause of the master of one slot range for 10 s (a stopped
                     task would be replaced by a new, empty node that is no member of
                     the cluster: Redis nodes keep their cluster state in the container)
  redis-down         docker pause of every Redis node for 30 s (same reason)
  pgbouncer-restart  docker service update --force <stack>_pgbouncer (start-first)
  primary-restart    docker service update --force <stack>_postgres-primary (stop-first:
                     one data volume)

Per drill: requests (logical requests the load made), failed (still failed
after the client's retries), duplicated_orders (an Idempotency-Key with more
than one order in the database), oversold (products whose stock went below
zero or disagrees with the orders), recovery_s (from the failure until the
later of: the last error any attempt saw, and the last moment a backend's
/readyz was not 200 "ok" — polled every second on each container). Printed as a table and written
as a JSON list with exactly those keys.
"""
import argparse
import json
import os
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

LOAD_S = float(os.environ.get("DRILL_LOAD_S", "40"))
THREADS = int(os.environ.get("DRILL_THREADS", "8"))
# Logical requests per second, all threads together: below nginx's per-address
# limit (500 r/s on /api/, all load comes from one address here) and what
# 2 shared cores serve without queueing.
RPS = float(os.environ.get("DRILL_RPS", "200"))
RETRY_S = float(os.environ.get("DRILL_RETRY_S", "20"))
COMPOSE = os.environ["DRILL_COMPOSE"]
ORCH = os.environ.get("DRILL_ORCH", "compose")
STACK = os.environ.get("DRILL_STACK", "marketdswarm")
DOCKER = os.environ.get("DRILL_DOCKER", "docker")
RETRYABLE = (502, 503, 504)


def sh(cmd, timeout=300):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    return r.stdout.strip()


def compose(args, timeout=300):
    return sh("%s %s" % (COMPOSE, args), timeout)


def ids(service):
    """The running containers of a service, under either orchestrator."""
    if ORCH == "swarm":
        return sh("%s ps -q --filter label=com.docker.swarm.service.name=%s_%s --filter status=running"
                  % (DOCKER, STACK, service)).split()
    return compose("ps -q %s" % service).split()


def psql(sql):
    return sh("%s exec -i %s psql -X -q -tA -U postgres -d marketd -c \"%s\"" % (DOCKER, ids("postgres-primary")[0], sql))


def addresses(cids):
    """Addresses of the containers that this host can reach: on Compose's
    bridge network; under Swarm, on docker_gwbridge (the overlay network's
    addresses live in Swarm's own network namespace)."""
    if not cids:
        return []
    if ORCH != "swarm":
        return sh("%s inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' %s"
                  % (DOCKER, " ".join(cids))).split()
    gw = sh("%s network inspect -f '{{range $k, $v := .Containers}}{{$k}} {{$v.IPv4Address}}\n{{end}}' docker_gwbridge" % DOCKER)
    by_id = dict(line.split() for line in gw.splitlines() if len(line.split()) == 2)
    return [by_id[c].split("/")[0] for full in cids for c in by_id if c.startswith(full)]


def http(base, method, path, body=None, token=None, headers=None, timeout=10):
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if token:
        h["Authorization"] = "Bearer " + token
    r = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception:  # connection refused/reset, timeout: retryable
        return 0, b""


class Load:
    def __init__(self, edge, tokens, products):
        self.edge, self.tokens, self.products = edge, tokens, products
        self.lock = threading.Lock()
        self.requests = self.failed = 0
        self.last_error = None
        self.stop = threading.Event()
        self.keys = []  # Idempotency-Keys acknowledged with 201/200
        self.attempted = []  # every Idempotency-Key sent
        self.ryw_fail = 0
        self.codes = {}  # final status of failed logical requests (0: no answer)
        self.lat = []  # seconds per logical request

    def attempt(self, method, path, body=None, token=None, headers=None):
        """One logical request with the client's retries; True on success."""
        deadline = time.time() + RETRY_S
        while True:
            code, raw = http(self.edge, method, path, body, token, headers)
            if code and code not in RETRYABLE:
                return code, raw
            with self.lock:
                self.last_error = time.time()
            if time.time() > deadline:
                return code, raw
            time.sleep(0.2)

    def worker(self, n):
        rnd = random.Random(n)
        token = self.tokens[n % len(self.tokens)]
        period = THREADS / RPS
        next_t = time.time() + rnd.random() * period
        while not self.stop.is_set():
            delay = next_t - time.time()
            if delay > 0:
                time.sleep(delay)
            next_t = max(next_t + period, time.time() - period)
            r = rnd.random()
            t0 = time.time()
            if r < 0.2:
                key = str(uuid.uuid4())
                pid = rnd.choice(self.products)
                with self.lock:
                    self.attempted.append(key)
                code, raw = self.attempt("POST", "/api/v1/orders", {"items": [{"product_id": pid, "quantity": 1}]},
                                         token, {"Idempotency-Key": key})
                ok = code in (200, 201)
                if ok:
                    oid = json.loads(raw).get("id")
                    # Read-your-writes: the buyer sees the order at once.
                    c2, _ = self.attempt("GET", "/api/v1/orders/%s" % oid, token=token)
                    with self.lock:
                        self.keys.append(key)
                        if c2 != 200:
                            self.ryw_fail += 1
            elif r < 0.6:
                code, _ = self.attempt("GET", "/api/v1/products?limit=20")
                ok = code == 200
            elif r < 0.9:
                code, _ = self.attempt("GET", "/api/v1/products/%s" % rnd.choice(self.products))
                ok = code == 200
            else:
                code, _ = self.attempt("GET", "/api/v1/cities")
                ok = code == 200
            with self.lock:
                self.lat.append(time.time() - t0)
                self.requests += 1
                if not ok:
                    self.failed += 1
                    self.codes[code] = self.codes.get(code, 0) + 1


class Health:
    """Polls every backend's /readyz on its container address (the host is
    on the compose network's bridge) and keeps the last moment any of them
    was not fully well: unreachable, not 200, or "status" other than "ok"
    (the cache down shows as "degraded")."""

    def __init__(self):
        self.last_bad = None
        self.stop = threading.Event()
        self.seen = set()

    def run(self):
        while not self.stop.is_set():
            ips = addresses(backends())
            bad = len(ips) < 5
            for ip in ips:
                code, raw = http("http://%s:8080" % ip, "GET", "/readyz", timeout=2)
                st = (json.loads(raw).get("status") if code in (200, 503) and raw[:1] == b"{" else None) or str(code)
                if code != 200 or st != "ok":
                    bad = True
                    self.seen.add(st)
            if bad:
                self.last_bad = time.time()
            self.stop.wait(1.0)


def backends():
    return ids("backend")


def wait_healthy(cid, limit=90):
    end = time.time() + limit
    while time.time() < end:
        if sh("%s inspect -f '{{.State.Health.Status}}' %s" % (DOCKER, cid)) == "healthy":
            return True
        time.sleep(0.5)
    return False


def wait_backends_healthy(n=5, limit=120):
    """Swarm: until n backend tasks run and are healthy (a new task replaces a dead one)."""
    end = time.time() + limit
    while time.time() < end:
        cids = backends()
        if len(cids) >= n and all(sh("%s inspect -f '{{.State.Health.Status}}' %s" % (DOCKER, c)) == "healthy" for c in cids):
            return True
        time.sleep(0.5)
    return False


def redis_nodes():
    return ids("redis-node")


def redis_master():
    for cid in redis_nodes():
        role = sh("%s exec %s sh -c 'REDISCLI_AUTH=$REDIS_PASSWORD redis-cli role' | head -n1" % (DOCKER, cid))
        if role == "master":
            return cid
    return None


def service_update(service):
    """Swarm's rolling replacement of every task of a service, as configured
    by its update_config; returns when Swarm reports it converged."""
    out = sh("%s service update --force --detach=false --quiet %s_%s 2>&1; echo rc=$?" % (DOCKER, STACK, service), timeout=900)
    print("  docker service update --force %s_%s: %s" % (STACK, service, out.splitlines()[-1] if out else "?"), flush=True)


def swarm_action(name):
    """The drills under Swarm: the orchestrator restarts and replaces."""
    if name == "kill-backend":
        sh("%s kill %s" % (DOCKER, backends()[0]))
        return wait_backends_healthy
    if name == "rolling-restart":
        t = time.time()
        service_update("backend")
        print("  rolling update of %d backends took %.1f s" % (len(backends()), time.time() - t), flush=True)
        return None
    if name == "replica-down":
        sh("%s stop %s" % (DOCKER, ids("postgres-replica")[0]))
        return None
    if name == "redis-failover":
        cid = redis_master()
        sh("%s pause %s" % (DOCKER, cid))
        time.sleep(5)  # + the 5 s before undo: past cluster-node-timeout (5 s)
        return lambda: sh("%s unpause %s" % (DOCKER, cid))
    if name == "redis-down":
        cids = redis_nodes()
        sh("%s pause %s" % (DOCKER, " ".join(cids)))
        time.sleep(30)
        sh("%s unpause %s" % (DOCKER, " ".join(cids)))
        return None
    if name == "pgbouncer-restart":
        service_update("pgbouncer")
        return None
    if name == "primary-restart":
        service_update("postgres-primary")
        return None
    raise ValueError(name)


def action(name):
    """Performs the failure; returns a function that undoes it (or None)."""
    if ORCH == "swarm":
        return swarm_action(name)
    if name == "kill-backend":
        # A crash: SIGKILL to the container's process from the host. (`docker
        # kill` counts as a manual stop, which `restart: unless-stopped` does
        # not undo; a crash it does — Docker itself restarts the container.)
        cid = backends()[0]
        sh("kill -KILL $(docker inspect -f '{{.State.Pid}}' %s)" % cid)
        return lambda: wait_healthy(cid)
    if name == "rolling-restart":
        for cid in backends():
            sh("docker restart -t 15 %s" % cid, timeout=60)
            wait_healthy(cid)
        return None
    if name == "replica-down":
        cid = compose("ps -q postgres-replica").split()[0]
        sh("docker stop %s" % cid)
        return lambda: sh("docker start %s" % cid)
    if name == "redis-failover":
        cid = redis_master()
        sh("docker stop %s" % cid)
        return lambda: sh("docker start %s" % cid)
    if name == "redis-down":
        ids = redis_nodes()
        sh("docker stop %s" % " ".join(ids))
        time.sleep(30)
        sh("docker start %s" % " ".join(ids))
        return None
    if name == "pgbouncer-restart":
        compose("restart pgbouncer")
        return None
    if name == "primary-restart":
        compose("restart postgres-primary")
        return None
    raise ValueError(name)


def setup(edge):
    pw = "drill password 1234"
    run = uuid.uuid4().hex[:6]
    tokens = []
    for i in range(THREADS):
        email = "drill-%s-%d@example.test" % (run, i)
        http(edge, "POST", "/api/v1/auth/register", {"email": email, "password": pw, "name": "Drill"})
        code, raw = http(edge, "POST", "/api/v1/auth/login", {"email": email, "password": pw})
        tokens.append(json.loads(raw)["token"])
    email = "drill-seller-%s@example.test" % run
    http(edge, "POST", "/api/v1/auth/register", {"email": email, "password": pw, "name": "Drill seller"})
    st = json.loads(http(edge, "POST", "/api/v1/auth/login", {"email": email, "password": pw})[1])["token"]
    city = json.loads(http(edge, "GET", "/api/v1/cities")[1])
    city = (city.get("items") if isinstance(city, dict) else city)[0]["id"]
    dist = json.loads(http(edge, "GET", "/api/v1/cities/%s/districts" % city)[1])
    dist = (dist.get("items") if isinstance(dist, dict) else dist)[0]["id"]
    cat = json.loads(http(edge, "GET", "/api/v1/categories")[1])
    cat = (cat.get("items") if isinstance(cat, dict) else cat)[0]["id"]
    http(edge, "POST", "/api/v1/sellers", {"name": "Drill " + run, "city_id": city, "district_id": dist}, st)
    products = []
    for i in range(10):
        code, raw = http(edge, "POST", "/api/v1/products",
                         {"title": "Drill %s %d" % (run, i), "price": 1000, "stock": 100000, "category_id": cat}, st)
        products.append(json.loads(raw)["id"])
    return tokens, products


def integrity(acked, attempted, products):
    """(duplicated orders, oversold products, lost acknowledged orders).

    Every order of the drill products comes from one Idempotency-Key; a
    key is retried, never reused. More orders than keys sent means a retry
    made a second order; fewer than acknowledged means one was lost."""
    ids = ",".join(map(str, products))
    n = int(psql("SELECT count(DISTINCT o.id) FROM orders o JOIN order_items i ON i.order_id = o.id "
                 "WHERE i.product_id IN (%s)" % ids) or 0)
    dup = max(0, n - len(attempted))
    lost = max(0, len(acked) - n)
    oversold = int(psql("SELECT count(*) FROM products p WHERE p.id IN (%s) AND (p.stock < 0 OR p.stock + "
                        "(SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id "
                        "WHERE i.product_id = p.id AND o.status <> 'cancelled') <> 100000)" % ids) or 0)
    return dup, oversold, lost


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edge", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--drills", default=os.environ.get("DRILLS", "kill-backend rolling-restart replica-down redis-failover redis-down pgbouncer-restart primary-restart"))
    a = ap.parse_args()
    tokens, products = setup(a.edge)
    results = []
    all_acked, all_attempted = [], []
    for name in a.drills.split():
        load = Load(a.edge, tokens, products)
        threads = [threading.Thread(target=load.worker, args=(i,), daemon=True) for i in range(THREADS)]
        health = Health()
        threads.append(threading.Thread(target=health.run, daemon=True))
        t_start = time.time()
        for t in threads:
            t.start()
        time.sleep(LOAD_S / 4)
        t_fail = time.time()
        print("drill %s: failure at %.0f s of load" % (name, LOAD_S / 4), flush=True)
        undo = action(name)
        if undo:
            time.sleep(5)
            undo()
        rest = LOAD_S - (time.time() - t_fail) - LOAD_S / 4
        if rest > 0:
            time.sleep(rest)
        # Past the load window, wait (bounded) until every backend is well
        # again, so that recovery_s covers the whole way back.
        end = time.time() + 120
        while time.time() < end and health.last_bad and time.time() - health.last_bad < 3:
            time.sleep(0.5)
        load.stop.set()
        health.stop.set()
        for t in threads:
            t.join(RETRY_S + 15)
        dur = time.time() - t_start
        all_acked += load.keys
        all_attempted += load.attempted
        dup, oversold, lost = integrity(all_acked, all_attempted, products)
        rec = round(max(0.0, max(load.last_error or t_fail, health.last_bad or t_fail) - t_fail), 1)
        lat = sorted(load.lat) or [0]
        r = {"drill": name, "requests": load.requests, "failed": load.failed, "duplicated_orders": dup,
             "oversold": oversold, "recovery_s": rec}
        results.append(r)
        print("drill %s: %s" % (name, json.dumps(r)), flush=True)
        print("  %.0f s of load, %.0f req/s, latency p50 %.0f ms, p99 %.0f ms, max %.0f ms; read-your-writes misses %d; "
              "lost acknowledged orders %d; failed by status %s; /readyz states seen %s"
              % (dur, load.requests / dur, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000, lat[-1] * 1000,
                 load.ryw_fail, lost, load.codes, sorted(health.seen)), flush=True)
        time.sleep(3)
    print("\n%-18s %9s %7s %18s %9s %11s" % ("drill", "requests", "failed", "duplicated_orders", "oversold", "recovery_s"))
    for r in results:
        print("%-18s %9d %7d %18d %9d %11.1f" % (r["drill"], r["requests"], r["failed"], r["duplicated_orders"], r["oversold"], r["recovery_s"]))
    with open(a.out + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    os.replace(a.out + ".tmp", a.out)
    print("written: %s" % a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
