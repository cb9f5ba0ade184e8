"""The response cache in Redis (docs/cache.md; api.md "Conventions":
X-Cache, ETag, 304; S7, S9, S10; B2, B3, B4, B5).

Every class starts its own real redis-server processes (Debian's
redis-server, `--save '' --appendonly no`, files in TEST_TMPDIR, loopback
ports 31000-31199; see harness.RedisServer / harness.RedisCluster) and stops
them in tearDownClass. What is tested:

- CacheBasicTests: MISS/BYPASS then HIT on every cacheable GET kind, no
  X-Cache elsewhere, the same ETag for the same bytes on HIT and MISS, 304
  on a HIT, marketd_cache_requests_total{result} in /metrics.
- CacheKeyTests: the normalised key (equivalent product queries share one
  entry, q folded to lower case, ASCII and Cyrillic), cursor pages BYPASS,
  unknown parameters cannot grow the key space, q's escaped characters
  cannot make two different queries share an entry.
- CacheInvalidationTests (B2, B3): every write kind, warmed entries, the
  very next GET through the same instance and through a second instance.
- CacheRaceTests (B3): a fill whose store lands after a write (the test
  hook CACHE_TEST_STORE_GATE holds stores), and a request that joins a fill which
  read the database before a write (single flight).
- CacheStampedeTests (B4): 200 concurrent requests on a cold key.
- CacheDegradeTests, CacheRedisFullTests (B5): Redis killed, stopped
  (SIGSTOP), restarted on the same port, written to while down (and back
  with its old content), full (maxmemory 1mb, noeviction).
- CacheClusterTests (S7): the core of the above on a 6-node Redis Cluster
  (3 masters + 3 replicas), a failover of the master of the tag slot during
  traffic (CLUSTER FAILOVER, then SIGKILL), and a write acknowledged just
  before that master dies with its replica behind.

The database is reached through a small TCP proxy where a test needs to
hold PostgreSQL's answers back (so that a fill is in progress for as long
as the test wants) or to count the statements the server runs (the Execute
messages it sends: pg_stat_statements is not loaded in the test
PostgreSQL, and pg_stat_database counts every session's transactions).
"""

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import os
import random
import re
import socket
import string
import tempfile
import threading
import time
import urllib.parse
from collections import namedtuple

import harness
from harness import RedisCluster, RedisError, RedisServer, Server, ServerTestCase, db_connect, parallel, wait_until

JWT_SECRET = "cache-tests-secret-0123456789abcdef-0123456789abcdef"
CDN = "https://cdn.example.test/media"
# The classes that degrade Redis on purpose wait this long for it; the
# others use the production default, so that a stall of an ASan build on a
# busy machine does not turn a lookup into a bypass by accident (a bypass is
# coalesced differently from a miss, and the stampede tests count misses).
CACHE_TIMEOUT_MS = 50
GENEROUS_CACHE_TIMEOUT_MS = 500
# A request that has not answered after this long is hung (Redis down,
# stopped or failing over must never make one wait for it). A bound on a
# state, far above any answer time, not a claim about speed: the tests
# assert behaviour (200, X-Cache, data), never how fast.
NO_HANG_S = harness.HTTP_TIMEOUT
# The longest wait for a MISS's store to land (a state, polled).
WARM_PATIENCE_S = 10.0

# SOI, APP0 (JFIF), a baseline frame header (640 x 480, 3 components): the
# header the backend parses (issue 10), then bytes standing in for the scan.
JPEG = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
        b"\xff\xc0\x00\x11\x08\x01\xe0\x02\x80\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01" + bytes(range(256)) * 4)

_seq = itertools.count(1)


def unique(prefix):
    return "%s%d%d" % (prefix, os.getpid(), next(_seq))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_for(user_id, secret=JWT_SECRET, ttl=3600):
    """A token as marketd issues it (src/core/jwt.c)."""
    now = int(time.time())
    header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}
    payload = b64url(json.dumps({"sub": str(user_id), "iat": now, "exp": now + ttl},
                                separators=(",", ":")).encode())
    signing = (header + "." + payload).encode()
    sig = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return header + "." + payload + "." + b64url(sig)


# ---------------------------------------------------------------------------
# HTTP with the raw bytes (a HIT must be byte-identical to its MISS)
# ---------------------------------------------------------------------------

Resp = namedtuple("Resp", "status headers raw body elapsed")


def fetch(port, method, path, params=None, body=None, headers=None, timeout=harness.HTTP_TIMEOUT, conn=None):
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray, str)):
        body = json.dumps(body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.monotonic()
    try:
        if params and "?" in path:
            target = path + "&" + harness.path_with_query("", params)[1:]
        else:
            target = harness.path_with_query(path, params)
        conn.request(method, target, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        elapsed = time.monotonic() - t0
        return Resp(resp.status, resp.headers, raw, harness.decode_body(resp.headers, raw), elapsed)
    finally:
        if own:
            conn.close()


def xc(r):
    return r.headers.get("X-Cache")


def show(r, limit=1500):
    """One response for a failure message: status, X-Cache, ETag, time and
    the body (cut)."""
    if isinstance(r, BaseException):
        return "exception: %r" % (r,)
    body = r.body
    if isinstance(body, (bytes, bytearray)):
        text = repr(bytes(body[:limit]))
    else:
        text = json.dumps(body, ensure_ascii=False)
        if len(text) > limit:
            text = text[:limit] + "...[%d chars cut]" % (len(text) - limit)
    return "status=%s X-Cache=%s ETag=%s %.0f ms body=%s" % (
        r.status, xc(r), r.headers.get("ETag"), 1000 * getattr(r, "elapsed", 0), text)


def flight_waiters(port):
    """Requests of the instance waiting for a shared database query."""
    text = fetch(port, "GET", "/metrics").raw.decode()
    m = re.search(r"^marketd_flight_waiters (\d+)$", text, re.M)
    return int(m.group(1)) if m else -1


def cache_metrics(port):
    """marketd_cache_requests_total by result, from /metrics."""
    r = fetch(port, "GET", "/metrics")
    text = r.raw.decode("utf-8", "replace")
    out = {}
    for m in re.finditer(r'^marketd_cache_requests_total\{result="(\w+)"\} (\d+)$', text, re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def items_of(body):
    return body.get("items", []) if isinstance(body, dict) else []


def item(body, pid):
    return next((i for i in items_of(body) if i.get("id") == pid), None)



# ---------------------------------------------------------------------------
# A TCP proxy in front of PostgreSQL that can hold the answers back
# ---------------------------------------------------------------------------

class _FrontendCounter:
    """Follows what a PostgreSQL client sends on one connection and returns
    the SQL text of every statement it runs: an Execute ('E') of a portal
    bound ('B') to a statement parsed ('P') earlier (extended protocol, as
    libpq's PQsendQueryPrepared / PQsendQueryParams), or a Query ('Q',
    simple protocol). The untyped start-up packets (SSLRequest,
    GSSENCRequest, StartupMessage) come first."""

    def __init__(self):
        self.buf = b""
        self.started = False
        self.ok = True
        self.statements = {}  # prepared statement name -> SQL
        self.portals = {}     # portal name -> statement name

    @staticmethod
    def _cstr(data, at):
        end = data.index(b"\0", at)
        return data[at:end], end + 1

    def feed(self, data):
        """The SQL (str) of each statement run by the bytes in data."""
        if not self.ok:
            return []
        self.buf += data
        out = []
        while True:
            if not self.started:
                if len(self.buf) < 8:
                    break
                length = int.from_bytes(self.buf[0:4], "big")
                code = int.from_bytes(self.buf[4:8], "big")
                if len(self.buf) < length:
                    break
                self.buf = self.buf[length:]
                if code == 196608:  # StartupMessage, protocol 3.0
                    self.started = True
                elif code not in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                    self.ok = False  # e.g. CancelRequest: nothing to count
                    return out
            else:
                if len(self.buf) < 5:
                    break
                length = int.from_bytes(self.buf[1:5], "big")
                if len(self.buf) < 1 + length:
                    break
                kind, body = self.buf[0:1], self.buf[5:1 + length]
                self.buf = self.buf[1 + length:]
                if kind == b"P":
                    name, at = self._cstr(body, 0)
                    self.statements[name] = self._cstr(body, at)[0].decode("utf-8", "replace")
                elif kind == b"B":
                    portal, at = self._cstr(body, 0)
                    self.portals[portal] = self._cstr(body, at)[0]
                elif kind == b"E":
                    portal, _ = self._cstr(body, 0)
                    out.append(self.statements.get(self.portals.get(portal), "?"))
                elif kind == b"Q":
                    out.append(self._cstr(body, 0)[0].decode("utf-8", "replace"))
        return out


class DbProxy:
    """127.0.0.1:port -> the test PostgreSQL. hold() keeps every byte
    PostgreSQL sends back until release(): statements still reach the
    database and run there (their snapshot is taken, their result is
    computed), only the server does not see the answer yet. `statements`
    counts the statements the servers ran (`sql_run` has their SQL, so that
    background statements — partition upkeep, /readyz — can be told
    apart); `held_bytes` what was held."""

    HOLD_MAX_S = 60.0

    def __init__(self):
        self.port = harness.free_port()  # outside the ephemeral range: up() binds it later
        self.target = harness.db_target()
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._socks = []
        self._running = False
        self._listener = None
        self._thread = None
        self.statements = 0
        self.sql_run = []  # the SQL of every statement run, in order
        self.held_bytes = 0
        self.counting_ok = True

    @property
    def url(self):
        return harness.database_url_via(self.port)

    def up(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(128)
        ls.settimeout(0.1)
        self._listener, self._running = ls, True
        self._thread = threading.Thread(target=self._accept_loop, args=(ls,), daemon=True)
        self._thread.start()
        return self

    def _connect_target(self):
        if self.target[0] == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.target[1])
            return s
        return socket.create_connection(self.target[1:], timeout=5)

    def _accept_loop(self, ls):
        while self._running:
            try:
                client, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = self._connect_target()
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._to_db, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._from_db, args=(upstream, client), daemon=True).start()

    def _to_db(self, src, dst):
        counter = _FrontendCounter()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                run = counter.feed(data)
                if not counter.ok and counter.started:
                    self.counting_ok = False
                with self._lock:
                    self.statements += len(run)
                    self.sql_run.extend(run)
                dst.sendall(data)
        except OSError:
            pass
        self._shut(src, dst)

    def _from_db(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self._open.is_set():
                    with self._lock:
                        self.held_bytes += len(data)
                    self._open.wait(self.HOLD_MAX_S)
                dst.sendall(data)
        except OSError:
            pass
        self._shut(src, dst)

    @staticmethod
    def _shut(a, b):
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold(self):
        with self._lock:
            self.held_bytes = 0
        self._open.clear()

    def release(self):
        self._open.set()

    def counts(self):
        with self._lock:
            return self.statements, self.held_bytes

    def sql_since(self, mark):
        """The SQL of the statements run since counts()[0] was `mark`."""
        with self._lock:
            return list(self.sql_run[mark:])

    def down(self):
        self.release()
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


# ---------------------------------------------------------------------------
# The base: Redis (single or cluster), one or two servers, helpers
# ---------------------------------------------------------------------------

class CacheCase(ServerTestCase):
    """Starts Redis (a single server, or a 6-node cluster with
    `use_cluster`), loads the dataset, starts the server with the cache on
    (and, with `second_server`, another instance sharing the database and
    Redis), and stops everything at the end."""

    use_cluster = False
    redis_args = ()
    extra_env = {}
    cache_timeout_ms = GENEROUS_CACHE_TIMEOUT_MS
    cluster = None

    @classmethod
    def cache_env(cls):
        env = {"JWT_SECRET": JWT_SECRET, "CDN_BASE_URL": CDN, "DB_POOL_SIZE": "8",
               "CACHE_TIMEOUT_MS": str(cls.cache_timeout_ms),
               "MEDIA_DIR": tempfile.mkdtemp(prefix="media-", dir=harness.TEST_TMPDIR)}
        if cls.use_cluster:
            env["REDIS_CLUSTER_NODES"] = cls.cluster.seeds
        else:
            env["REDIS_URL"] = "redis://127.0.0.1:%d" % cls.redis.port
        env.update(cls.extra_env)
        return env

    @classmethod
    def setUpClass(cls):
        cls.redis = cls.cluster = None
        try:
            if cls.use_cluster:
                cls.cluster = RedisCluster(name=cls.__name__)
                cls.cluster.start()
            else:
                cls.redis = RedisServer(name=cls.__name__, args=cls.redis_args).start()
            cls.server_env = cls.cache_env()
        except BaseException:
            cls._stop_class_processes(check=False)
            raise
        super().setUpClass()  # the server(s); on failure it stops the Redis too

    @classmethod
    def _stop_class_processes(cls, check):
        try:
            super()._stop_class_processes(check)
        finally:
            for attr in ("redis", "cluster"):
                r = getattr(cls, attr, None)
                setattr(cls, attr, None)
                if r is not None:
                    r.stop()

    # -- database ---------------------------------------------------------

    def db(self, sql, args=()):
        return harness.db_query(sql, args)

    def new_user(self, admin=False):
        return self.db("INSERT INTO users (email, password_hash, name, is_admin) VALUES (%s, 'x', 'Тест', %s)"
                       " RETURNING id", (unique("u") + "@example.test", admin))[0][0]

    def delivered_order(self, seller_id):
        """A delivered order of seller_id now (puts it on /sellers/popular)."""
        buyer = self.new_user()
        self.db("""INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)
                   VALUES (marketd_order_id(now(), nextval('orders_id_seq')), %s, %s, 'delivered', 100, 'RUB',
                           now(), now())""", (buyer, seller_id))

    # -- requests ---------------------------------------------------------

    def srv(self, server=None):
        return server or self.server

    def GET(self, path, params=None, server=None, headers=None, **kw):
        return fetch(self.srv(server).port, "GET", path, params=params, headers=headers, **kw)

    def call(self, method, path, uid=None, body=None, server=None, headers=None):
        h = dict(headers or {})
        if uid is not None:
            h["Authorization"] = "Bearer " + token_for(uid)
        return fetch(self.srv(server).port, method, path, body=body, headers=h)

    def expect(self, r, status, what):
        if isinstance(r, BaseException) or r.status != status:
            self.fail("%s: expected status %d, got\n%s" % (what, status, show(r)))
        return r.body

    def new_seller(self, city=None, district=None, name=None, server=None):
        uid = self.new_user()
        ids = self.dataset.ids
        body = {"name": name or unique("Лавка "), "description": "",
                "city_id": city or ids["msk"], "district_id": district or ids["tver"]}
        s = self.expect(self.call("POST", "/api/v1/sellers", uid, body, server=server), 201, "create a seller")
        return uid, s

    def new_product(self, uid, server=None, **fields):
        body = {"title": unique("Товар "), "price": 1000, "stock": 10, "category_id": self.dataset.ids["phones"]}
        body.update(fields)
        return self.expect(self.call("POST", "/api/v1/products", uid, body, server=server), 201,
                           "create a product %r" % body)

    # -- Redis ------------------------------------------------------------

    def masters(self):
        if self.cluster is None:
            return [self.redis]
        ports = {port for _, _, (_, port) in RedisCluster.slots_of(self.cluster.live_nodes()[0])}
        return [self.cluster.node_by_port(p) for p in sorted(ports)]

    def redis_keys(self, pattern):
        keys = set()
        for node in self.masters():
            with node.connection() as c:
                cursor = b"0"
                while True:
                    cursor, batch = c.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                    keys.update(k.decode("utf-8", "replace") for k in batch)
                    if cursor == b"0":
                        break
        return keys

    def redis_get(self, key):
        """GET key wherever it lives (single Redis, or its cluster master)."""
        for node in self.masters():
            v = node.call("GET", key, raise_errors=False)
            if isinstance(v, RedisError):
                if str(v).startswith("MOVED"):
                    continue
                raise v
            return v
        return None

    def flush_redis(self):
        for node in self.masters():
            node.call("FLUSHALL")

    # -- cache helpers ----------------------------------------------------

    def warm(self, path, server=None, patience=WARM_PATIENCE_S):
        """GETs path until it is a HIT (the first GET of a key whose tags
        are new is a BYPASS, the next a MISS that stores it). Returns the
        HIT. A MISS's store is sent before its answer but may land a little
        later: GETs go on until the HIT, for at most `patience` seconds (a
        bound on a state, not a claim about speed)."""
        seen = []
        deadline = time.monotonic() + patience
        while True:
            r = self.GET(path, server=server)
            self.expect(r, 200, "warming %s" % path)
            seen.append(r)
            if xc(r) == "HIT":
                return r
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.fail("%s never became a HIT in %d GETs over %.0f s:\n%s"
                  % (path, len(seen), patience, "\n".join(show(r) for r in seen[-6:])))

    def store_barrier(self, conn):
        """Returns once every store that requests sent earlier on the
        keep-alive `conn` caused has landed in Redis: a new list key
        fetched on the same connection (so by the same worker, whose
        commands to one Redis node go out on one connection, in order) is
        a MISS whose store lands after theirs. Needs init_list_tags()."""
        q = unique("barrier")
        r = fetch(self.server.port, "GET", "/api/v1/products", params={"q": q}, conn=conn)
        self.assertEqual(xc(r), "MISS", "the barrier's GET must store an entry\n%s" % show(r))
        landed = wait_until(lambda: any(q in k for k in self.products_keys()), WARM_PATIENCE_S, interval=0.01)
        self.assertTrue(landed, "the barrier's entry never landed")

    def wait_stored(self, key, timeout=5.0):
        v = wait_until(lambda: self.redis_get(key), timeout, interval=0.01)
        self.assertTrue(v, "the entry %s was not stored in Redis within %.0f s" % (key, timeout))
        return v

    def wait_key(self, pattern, timeout=5.0):
        """Some key matching pattern exists (the entry a MISS stores);
        returns the keys."""
        keys = wait_until(lambda: self.redis_keys(pattern), timeout, interval=0.01)
        self.assertTrue(keys, "no key %s in Redis within %.0f s" % (pattern, timeout))
        return keys

    def assertHitEqualsMiss(self, miss, hit, what):
        self.assertEqual(xc(hit), "HIT", "%s: expected a HIT\n%s" % (what, show(hit)))
        self.assertEqual(hit.raw, miss.raw, "%s: the HIT's bytes differ from the MISS's\nMISS: %s\nHIT:  %s"
                         % (what, show(miss), show(hit)))
        self.assertEqual(hit.headers.get("ETag"), miss.headers.get("ETag"),
                         "%s: the same bytes must carry the same ETag\nMISS: %s\nHIT:  %s"
                         % (what, show(miss), show(hit)))


# ---------------------------------------------------------------------------
# 1. Basic: MISS/BYPASS then HIT, X-Cache, ETag, 304, metrics
# ---------------------------------------------------------------------------

class CacheBasicMixin:
    """Tests shared by the single-Redis and the cluster classes."""

    def cacheable_paths(self):
        ids = self.dataset.ids
        return [("cities", "/api/v1/cities"),
                ("districts", "/api/v1/cities/%d/districts" % ids["msk"]),
                ("categories", "/api/v1/categories"),
                ("product list", "/api/v1/products?city_id=%d" % ids["msk"]),
                ("product list, unfiltered", "/api/v1/products"),
                ("product detail", "/api/v1/products/%d" % ids["p_s23"]),
                ("seller detail", "/api/v1/sellers/%d" % ids["s1"]),
                ("popular sellers", "/api/v1/sellers/popular")]

    def test_miss_then_hit_on_every_cacheable_kind(self):
        self.flush_redis()
        for kind, path in self.cacheable_paths():
            with self.subTest(kind=kind):
                first = self.GET(path)
                self.expect(first, 200, path)
                self.assertIn(xc(first), ("MISS", "BYPASS"),
                              "%s: the first GET of a key after FLUSHALL\n%s" % (path, show(first)))
                # BYPASS (tags were missing: they are created now), then MISS
                # (a fill that stores the entry), then HIT.
                seen = [first]
                miss = first if xc(first) == "MISS" else None
                deadline = time.monotonic() + WARM_PATIENCE_S
                while time.monotonic() < deadline:
                    r = self.GET(path)
                    self.expect(r, 200, path)
                    seen.append(r)
                    self.assertIn(xc(r), ("HIT", "MISS", "BYPASS"), "%s: X-Cache\n%s" % (path, show(r)))
                    self.assertEqual(r.raw, first.raw, "%s: the body changed without a write\nfirst: %s\nnow:   %s"
                                     % (path, show(first), show(r)))
                    if xc(r) == "MISS":
                        miss = r
                    if xc(r) == "HIT":
                        break
                    time.sleep(0.02)
                hit = seen[-1]
                self.assertEqual(xc(hit), "HIT", "%s: no HIT after %d GETs:\n%s"
                                 % (path, len(seen), "\n".join(show(r) for r in seen)))
                self.assertIsNotNone(miss, "%s: a HIT without any MISS before it:\n%s"
                                     % (path, "\n".join(show(r) for r in seen)))
                self.assertHitEqualsMiss(miss, hit, path)
                etag = hit.headers.get("ETag")
                self.assertTrue(etag and not etag.startswith("W/"), "%s: no strong ETag\n%s" % (path, show(hit)))
                # If-None-Match on a HIT: 304, same ETag, no body.
                r = self.GET(path, headers={"If-None-Match": etag})
                self.assertEqual(r.status, 304, "%s: If-None-Match %s on a cached entry\n%s" % (path, etag, show(r)))
                self.assertEqual(r.raw, b"", "%s: a 304 with a body\n%s" % (path, show(r)))
                self.assertEqual(r.headers.get("ETag"), etag, "%s: 304 with another ETag\n%s" % (path, show(r)))
                self.assertEqual(xc(r), "HIT", "%s: the 304 was not answered from the cache\n%s" % (path, show(r)))
                if self.server2 is not None:
                    # The first instance's HIT may be its lingering fill
                    # (api/flight.c) while the store is still on its way to
                    # Redis on a busy machine: poll for the shared entry.
                    r2 = self.warm(path, server=self.server2)
                    self.assertHitEqualsMiss(miss, r2, "%s through the second instance" % path)


class CacheBasicTests(CacheCase, CacheBasicMixin):

    def test_no_x_cache_on_other_answers(self):
        ids = self.dataset.ids
        uid = self.new_user()
        for method, path, body in (("GET", "/api/v1/sellers", None),
                                   ("GET", "/api/v1/sellers?city_id=%d" % ids["msk"], None),
                                   ("GET", "/healthz", None),
                                   ("GET", "/api/v1/me", None),
                                   ("POST", "/api/v1/sellers", {"name": "X", "description": "",
                                                                "city_id": ids["msk"], "district_id": ids["tver"]})):
            with self.subTest(path=path, method=method):
                # Twice: a second GET would be a HIT if it were cached.
                for _ in range(1 if method == "POST" else 2):
                    r = self.call(method, path, uid, body)
                    self.assertLess(r.status, 300, "%s %s\n%s" % (method, path, show(r)))
                    self.assertIsNone(xc(r), "%s %s is not cacheable but carries X-Cache\n%s"
                                      % (method, path, show(r)))

    def test_metrics_count_hits_misses_and_bypasses(self):
        msk = self.dataset.ids["msk"]
        # Tags of product lists of Moscow exist after this (and the key is warm).
        self.warm("/api/v1/products?city_id=%d&limit=2" % msk)
        cold = "/api/v1/products?city_id=%d&limit=3" % msk
        self.assertEqual(self.redis_keys("c1:products:*l=3&c=%d&*" % msk), set(), "the key must be cold")
        before = cache_metrics(self.port)
        for k in ("hit", "miss", "bypass"):
            self.assertIn(k, before, "marketd_cache_requests_total{result=%r} missing from /metrics: %r" % (k, before))
        r1 = self.GET(cold)
        self.assertEqual(xc(r1), "MISS", show(r1))
        self.wait_key("c1:products:*l=3&c=%d&*" % msk)
        r2 = self.GET(cold)
        r3 = self.GET(cold)
        self.assertEqual((xc(r2), xc(r3)), ("HIT", "HIT"), "%s\n%s" % (show(r2), show(r3)))
        page = self.GET(cold, params={"cursor": r1.body["next_cursor"]})
        self.assertEqual(xc(page), "BYPASS", "a page after the first is not cached\n%s" % show(page))
        after = cache_metrics(self.port)
        delta = {k: after[k] - before[k] for k in before}
        self.assertEqual(delta, {"hit": 2, "miss": 1, "bypass": 1},
                         "marketd_cache_requests_total deltas after 1 MISS, 2 HITs, 1 BYPASS (summed over the workers)\n"
                         "before %r\nafter  %r" % (before, after))


# ---------------------------------------------------------------------------
# 2. The normalised key
# ---------------------------------------------------------------------------

class CacheKeyTests(CacheCase):

    def products_keys(self):
        return self.redis_keys("c1:products:*")

    def init_list_tags(self):
        """Product lists without a city filter share the tags products:all
        and sellers: a HIT on one such list means they exist, so the next
        cold key of that kind is a MISS (not a BYPASS)."""
        self.warm("/api/v1/products?limit=7")

    def check_shared(self, variants, what, expect=None, init="/api/v1/products?limit=7"):
        """The first variant is a MISS that stores one entry; every other
        variant is a HIT with the same bytes. expect(body) checks the answer
        itself. init: another key with the same tags (warmed first, so that
        the tags exist and the first variant is a MISS, not a BYPASS)."""
        self.warm(init)
        before = self.products_keys()
        first = self.GET(variants[0])
        self.expect(first, 200, variants[0])
        self.assertEqual(xc(first), "MISS", "%s: %s must be a cold key\n%s" % (what, variants[0], show(first)))
        if expect is not None:
            expect(first.body)
        new = wait_until(lambda: self.products_keys() - before, 5.0, interval=0.01)
        self.assertEqual(len(new), 1, "%s: one MISS must store one entry, new keys: %r" % (what, new))
        for v in variants[1:]:
            r = self.GET(v)
            self.expect(r, 200, v)
            self.assertHitEqualsMiss(first, r, "%s: %s after %s" % (what, v, variants[0]))
        self.assertEqual(self.products_keys() - before, new, "%s: the variants made more entries" % what)
        return first

    def test_equivalent_product_queries_share_one_entry(self):
        self.flush_redis()
        self.check_shared(["/api/v1/products?sort=newest&limit=20", "/api/v1/products",
                           "/api/v1/products?limit=20&sort=newest&unknown=1", "/api/v1/products?limit=20",
                           "/api/v1/products?sort=newest"], "the default list")
        msk = self.dataset.ids["msk"]
        self.check_shared(["/api/v1/products?city_id=%d&max_price=2000000&sort=price_asc" % msk,
                           "/api/v1/products?sort=price_asc&max_price=2000000&city_id=%d&x=y" % msk,
                           "/api/v1/products?limit=20&max_price=2000000&city_id=%d&sort=price_asc" % msk],
                          "a filtered list", init="/api/v1/products?city_id=%d&limit=2" % msk)
        # limit above 100 is clamped to 100: the same answer.
        self.check_shared(["/api/v1/products?limit=1000", "/api/v1/products?limit=100"], "a clamped limit")

    def test_q_differing_only_in_case_shares_one_entry(self):
        ds = self.dataset

        def matching(q):
            words = q.lower().split()
            return sorted(p["id"] for p in ds.active_products() if all(w in p["title"].lower() for w in words))

        groups = [["SAMSUNG", "samsung", "SaMsUnG"],
                  ["СМАРТФОН", "смартфон", "СмартФОН"],
                  ["ЁЛОЧНАЯ", "ёлочная", "Ёлочная"],
                  ["ЯБЛОКО ЭЮЯ", "яблоко эюя"],  # Р..Я (D0 A0..AF) fold to another lead byte
                  ["Смартфон  SAMSUNG", "смартфон samsung", " СМАРТФОН   Samsung "]]
        for group in groups:
            with self.subTest(q=group[0]):
                want = matching(group[0])

                def expect(body, q=group[0], want=want):
                    got = sorted(i["id"] for i in items_of(body))
                    self.assertEqual(got, want, "q=%r: the answer itself is wrong" % q)

                self.check_shared(["/api/v1/products?" + urllib.parse.urlencode({"q": q, "limit": 100})
                                   for q in group], "q=%r" % group, expect)

    def test_q_escapes_do_not_merge_different_queries(self):
        """q's % _ \\ are escaped for LIKE (one byte becomes two). The key is
        built from the escaped words but cut at 200 bytes: whatever is cut
        must not make two different queries share an entry — above all not
        a query that matches nothing with the unfiltered list."""
        self.init_list_tags()
        full = self.warm("/api/v1/products?limit=20")
        self.assertTrue(items_of(full.body), "the unfiltered list is not empty")
        for q in ("%" * 150, "_" * 120, "%" * 90 + " " + "Смартфон", "\\" * 101):
            with self.subTest(q=q[:20] + "..."):
                r = self.GET("/api/v1/products", params={"q": q, "limit": 20})
                self.expect(r, 200, "q=%r" % q)
                want = [p["id"] for p in self.dataset.active_products()
                        if all(w.lower() in p["title"].lower() for w in q.split())]
                got = [i["id"] for i in items_of(r.body)]
                self.assertEqual(sorted(got), sorted(want),
                                 "q=%r (%d bytes) answered from another query's entry?\nunfiltered list: %s\n"
                                 "this answer: %s" % (q[:30] + "...", len(q.encode()), show(full), show(r)))
        # And the other way round: a cold q fills first, then the plain list.
        self.flush_redis()
        self.init_list_tags()
        self.redis_keys("c1:*")
        q = "%" * 150
        r = self.GET("/api/v1/products", params={"q": q, "limit": 19})
        self.expect(r, 200, "q=%*150")
        self.assertEqual(xc(r), "MISS", "the q=%%*150 list fills an entry\n%s" % show(r))
        self.assertEqual(items_of(r.body), [], "no title has 150 %% signs\n%s" % show(r))
        # Its entry must be in Redis before the plain list is asked for, or
        # the check below proves nothing.
        self.assertTrue(wait_until(lambda: self.products_keys(), WARM_PATIENCE_S, interval=0.01),
                        "the q=%*150 entry never landed")
        plain = self.GET("/api/v1/products", params={"limit": 19})
        self.expect(plain, 200, "the plain list")
        self.assertTrue(items_of(plain.body),
                        "the unfiltered list answered with the (empty) entry of q=%%*150:\n%s" % show(plain))

    def test_long_q_key_is_hashed_and_still_shared(self):
        # Every filter and a q of 195 bytes: the normalised request is longer
        # than a key may be, so the key is a hash of it.
        ids = self.dataset.ids
        words = ["Слово" + "ж" * 19 for _ in range(4)]
        filters = [("city_id", ids["msk"]), ("district_id", ids["tver"]), ("category_id", ids["phones"]),
                   ("seller_id", ids["s2"]), ("min_price", 0), ("max_price", 100000000000),
                   ("sort", "price_desc"), ("limit", 100)]
        variants = []
        for q in (" ".join(w.upper() for w in words), " ".join(w.lower() for w in words)):
            self.assertLessEqual(len(q.encode()), 200)
            variants.append("/api/v1/products?" + urllib.parse.urlencode(filters + [("q", q)]))
        before = self.redis_keys("c1:products:h:*")
        first = self.check_shared(variants, "a long normalised request",
                                  init="/api/v1/products?city_id=%d&limit=1" % ids["msk"])
        self.assertEqual(items_of(first.body), [])
        self.assertEqual(len(self.redis_keys("c1:products:h:*") - before), 1,
                         "the long key is stored under its hash (c1:products:h:...): %r"
                         % sorted(self.products_keys()))
        for k in self.products_keys():
            self.assertLessEqual(len(k.encode()), 270, "an entry key of %d bytes: %r" % (len(k.encode()), k))

    def test_cursor_pages_bypass(self):
        self.init_list_tags()
        page1 = self.warm("/api/v1/products?limit=3")
        cursor = page1.body["next_cursor"]
        self.assertTrue(cursor, show(page1))
        before = self.products_keys()
        seen = []
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=harness.HTTP_TIMEOUT)
        try:
            for _ in range(3):
                r = fetch(self.server.port, "GET", "/api/v1/products", params={"limit": 3, "cursor": cursor},
                          conn=conn)
                self.expect(r, 200, "page 2")
                seen.append(r)
                self.assertEqual(xc(r), "BYPASS", "a page after the first (cursor) is not cached\n%s" % show(r))
                self.assertEqual(r.raw, seen[0].raw)
            self.store_barrier(conn)
        finally:
            conn.close()
        stored = {k for k in self.products_keys() - before if "barrier" not in k}
        self.assertEqual(stored, set(), "a cursor page stored an entry")

    def test_unknown_parameters_do_not_grow_the_key_space(self):
        self.init_list_tags()
        self.warm("/api/v1/products?limit=5")
        before = self.redis_keys("c1:*")
        rng = random.Random(42)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            xcs = {}
            for i in range(500):
                name = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 12)))
                if name in ("q", "sort", "limit", "cursor") or name.endswith("_id") or name.endswith("_price"):
                    name += "x"
                value = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(0, 20)))
                r = fetch(self.port, "GET", "/api/v1/products", params=[("limit", 5), (name, value)], conn=conn)
                self.expect(r, 200, "unknown parameter %s=%s" % (name, value))
                xcs[xc(r)] = xcs.get(xc(r), 0) + 1
        finally:
            conn.close()
        after = self.redis_keys("c1:*")
        self.assertLessEqual(len(after - before), 0,
                             "500 requests differing only in unknown parameters added %d entries: %r"
                             % (len(after - before), sorted(after - before)[:10]))
        self.assertEqual(xcs.get("HIT", 0), 500, "they all share the warm entry: %r" % xcs)


# ---------------------------------------------------------------------------
# 3. Invalidation: never stale, read-your-writes across instances (B2, B3)
# ---------------------------------------------------------------------------

Check = namedtuple("Check", "path ok what")


class CacheInvalidationMixin:
    """For every write kind: warm every affected cached resource (the last
    GET before the write must be a HIT, and must not show the change yet:
    otherwise a missing invalidation would go unnoticed), write, then the
    very next GET of each resource shows the change — through the instance
    that wrote, and through a second instance sharing the database and
    Redis. Each kind runs twice: once read first through the writer, once
    read first through the other instance."""

    def run_write(self, what, make):
        """make(round) -> (checks, write): write() does the write through
        self.server and returns its response (asserted 2xx)."""
        for first, second in ((self.server, self.server2), (self.server2, self.server)):
            order = "read first through the %s instance" % ("writing" if first is self.server else "other")
            with self.subTest(write=what, order=order):
                self.write_round(what, make, first, second, order)

    def write_round(self, what, make, first, second, order):
        checks, write = make(0 if first is self.server else 1)
        before = {}
        for c in checks:
            self.warm(c.path, server=second)
            r = self.warm(c.path, server=first)
            self.assertFalse(c.ok(r.body), "%s: %s already shows the change before the write (the test "
                             "would prove nothing)\n%s" % (what, c.path, show(r)))
            before[c.path] = r
        w = write()
        self.assertTrue(200 <= w.status < 300, "%s: the write failed\n%s" % (what, show(w)))
        for server, which in ((first, "first reader"), (second, "second reader")):
            for c in checks:
                r = self.GET(c.path, server=server)
                if r.status != 200 or not c.ok(r.body):
                    self.fail("%s (%s): the next GET %s through the %s (%s instance) does not show "
                              "the write: %s\nbefore the write: %s\nthe write: %s\nafter the write: %s"
                              % (what, order, c.path, which,
                                 "writing" if server is self.server else "other", c.what,
                                 show(before[c.path]), show(w), show(r)))

    def test_control_a_write_behind_the_cache_is_seen_stale(self):
        """The checks above can fail: a change made in the database behind
        the server's back (no invalidation) is not shown by the next GET —
        the warmed entry is served."""
        def make(rnd):
            uid, s = self.new_seller()
            pid = self.new_product(uid)["id"]
            title = unique("Тайком ")

            def write():
                self.db("UPDATE products SET title = %s WHERE id = %s", (title, pid))
                return self.GET("/healthz")
            return [Check("/api/v1/products/%d" % pid, lambda b: b.get("title") == title, "title")], write
        with self.assertRaises(AssertionError):
            self.write_round("UPDATE behind the cache", make, self.server, self.server2, "control")

    # -- products ---------------------------------------------------------

    def test_product_create(self):
        msk = self.dataset.ids["msk"]

        def make(rnd):
            uid, s = self.new_seller()
            word = unique("novinka")
            title = "Товар " + word

            def has(body):
                return any(i.get("title") == title for i in items_of(body))
            checks = [Check("/api/v1/products", has, "the new product is the newest"),
                      Check("/api/v1/products?city_id=%d" % msk, has, "listed in its city"),
                      Check("/api/v1/products?seller_id=%d" % s["id"], has, "listed for its seller"),
                      Check("/api/v1/products?q=%s" % word, has, "found by q")]
            body = {"title": title, "price": 5000, "stock": 3, "category_id": self.dataset.ids["phones"]}
            return checks, lambda: self.call("POST", "/api/v1/products", uid, body)
        self.run_write("POST /products", make)

    def test_product_patch(self):
        msk = self.dataset.ids["msk"]

        def make(rnd):
            uid, s = self.new_seller()
            old, new = unique("staroe"), unique("novoe")
            p = self.new_product(uid, title="Товар " + old, price=1000 + rnd, stock=5)
            price = 4321000 + rnd
            pid = p["id"]

            def shows(i):
                return i is not None and i.get("title") == "Товар " + new and i.get("price") == price \
                    and i.get("stock") == 42
            checks = [Check("/api/v1/products/%d" % pid, shows, "detail: title, price, stock"),
                      Check("/api/v1/products", lambda b: shows(item(b, pid)), "unfiltered list"),
                      Check("/api/v1/products?city_id=%d" % msk, lambda b: shows(item(b, pid)), "city list"),
                      Check("/api/v1/products?seller_id=%d" % s["id"], lambda b: shows(item(b, pid)),
                            "seller's list"),
                      Check("/api/v1/products?q=%s" % old, lambda b: item(b, pid) is None, "old title no longer "
                            "matches q"),
                      Check("/api/v1/products?q=%s" % new.upper(), lambda b: shows(item(b, pid)),
                            "new title matches q"),
                      Check("/api/v1/products?seller_id=%d&min_price=%d&max_price=%d" % (s["id"], price, price),
                            lambda b: shows(item(b, pid)), "the new price is in the price range")]
            body = {"title": "Товар " + new, "price": price, "stock": 42}
            return checks, lambda: self.call("PATCH", "/api/v1/products/%d" % pid, uid, body)
        self.run_write("PATCH /products/{id}", make)

    def test_product_delete(self):
        msk = self.dataset.ids["msk"]

        def make(rnd):
            uid, s = self.new_seller()
            pid = self.new_product(uid)["id"]
            gone = lambda b: item(b, pid) is None  # noqa: E731
            checks = [Check("/api/v1/products/%d" % pid, lambda b: b.get("status") == "archived",
                            "detail: archived"),
                      Check("/api/v1/products", gone, "not in the unfiltered list"),
                      Check("/api/v1/products?city_id=%d" % msk, gone, "not in the city list"),
                      Check("/api/v1/products?seller_id=%d" % s["id"], gone, "not in the seller's list")]
            return checks, lambda: self.call("DELETE", "/api/v1/products/%d" % pid, uid)
        self.run_write("DELETE /products/{id}", make)

    def test_product_image(self):
        msk = self.dataset.ids["msk"]

        def make(rnd):
            uid, s = self.new_seller()
            pid = self.new_product(uid)["id"]
            data = JPEG + unique("img").encode()
            h = hashlib.sha256(data).hexdigest()
            url = "%s/%s/%s/%s.jpg" % (CDN, h[:2], h[2:4], h)

            def has(i):
                return i is not None and url in (i.get("images") or [])
            checks = [Check("/api/v1/products/%d" % pid, has, "detail: images has %s" % url),
                      Check("/api/v1/products", lambda b: has(item(b, pid)), "unfiltered list"),
                      Check("/api/v1/products?city_id=%d" % msk, lambda b: has(item(b, pid)), "city list"),
                      Check("/api/v1/products?seller_id=%d" % s["id"], lambda b: has(item(b, pid)),
                            "seller's list")]
            return checks, lambda: self.call("POST", "/api/v1/products/%d/images" % pid, uid, data,
                                             headers={"Content-Type": "image/jpeg"})
        self.run_write("POST /products/{id}/images", make)

    # -- sellers ----------------------------------------------------------

    def test_seller_rename(self):
        msk = self.dataset.ids["msk"]

        def make(rnd):
            uid, s = self.new_seller()
            sid = s["id"]
            pid = self.new_product(uid)["id"]
            self.delivered_order(sid)  # on /sellers/popular
            name = unique("Переименован ")

            def named(i):
                return i is not None and (i.get("seller") or {}).get("name") == name
            checks = [Check("/api/v1/sellers/%d" % sid, lambda b: b.get("name") == name, "seller detail"),
                      Check("/api/v1/products/%d" % pid, named, "product detail embeds the seller's name"),
                      Check("/api/v1/products", lambda b: named(item(b, pid)), "unfiltered list"),
                      Check("/api/v1/products?city_id=%d" % msk, lambda b: named(item(b, pid)), "city list"),
                      Check("/api/v1/products?seller_id=%d" % sid, lambda b: named(item(b, pid)), "seller's list"),
                      Check("/api/v1/sellers/popular?limit=100",
                            lambda b: (item(b, sid) or {}).get("name") == name, "popular sellers")]
            return checks, lambda: self.call("PATCH", "/api/v1/sellers/%d" % sid, uid, {"name": name})
        self.run_write("PATCH /sellers/{id} (name)", make)

    def test_seller_moves_city(self):
        ids = self.dataset.ids
        msk, kzn = ids["msk"], ids["kzn"]

        def make(rnd):
            uid, s = self.new_seller(city=msk, district=ids["tver"])
            sid = s["id"]
            pid = self.new_product(uid)["id"]

            def moved(i):
                return i is not None and i.get("city_id") == kzn and i.get("district_id") == ids["vakh"]
            checks = [Check("/api/v1/sellers/%d" % sid, lambda b: b.get("city_id") == kzn, "seller detail"),
                      Check("/api/v1/products/%d" % pid, moved, "product detail: the seller's city"),
                      Check("/api/v1/products?city_id=%d" % msk, lambda b: item(b, pid) is None,
                            "gone from the old city's list"),
                      Check("/api/v1/products?city_id=%d" % kzn, lambda b: moved(item(b, pid)),
                            "in the new city's list"),
                      Check("/api/v1/products", lambda b: moved(item(b, pid)), "unfiltered list"),
                      Check("/api/v1/products?seller_id=%d" % sid, lambda b: moved(item(b, pid)), "seller's list")]
            body = {"city_id": kzn, "district_id": ids["vakh"]}
            return checks, lambda: self.call("PATCH", "/api/v1/sellers/%d" % sid, uid, body)
        self.run_write("PATCH /sellers/{id} (city)", make)

    # -- reference data ---------------------------------------------------

    def test_reference_writes(self):
        msk = self.dataset.ids["msk"]
        admin = self.new_user(admin=True)
        for kind, path, list_path in (("city", "/api/v1/cities", "/api/v1/cities"),
                                      ("district", "/api/v1/cities/%d/districts" % msk,
                                       "/api/v1/cities/%d/districts" % msk),
                                      ("category", "/api/v1/categories", "/api/v1/categories")):
            def make(rnd, path=path, list_path=list_path):
                slug = unique("slug-")
                name = unique("Новое ")
                has = lambda b: any(i.get("slug") == slug and i.get("name") == name  # noqa: E731
                                    for i in items_of(b))
                return ([Check(list_path, has, "the new row is listed")],
                        lambda: self.call("POST", path, admin, {"name": name, "slug": slug}))
            self.run_write("admin POST %s" % kind, make)

    # -- orders (stock) ---------------------------------------------------

    def order_checks(self, pid, sid, stock):
        msk = self.dataset.ids["msk"]

        def has(i):
            return i is not None and i.get("stock") == stock
        return [Check("/api/v1/products/%d" % pid, has, "detail: stock %d" % stock),
                Check("/api/v1/products", lambda b: has(item(b, pid)), "unfiltered list: stock %d" % stock),
                Check("/api/v1/products?city_id=%d" % msk, lambda b: has(item(b, pid)), "city list"),
                Check("/api/v1/products?seller_id=%d" % sid, lambda b: has(item(b, pid)), "seller's list")]

    def test_order_takes_stock(self):
        def make(rnd):
            uid, s = self.new_seller()
            pid = self.new_product(uid, stock=10)["id"]
            buyer = self.new_user()
            body = {"items": [{"product_id": pid, "quantity": 3}]}
            return self.order_checks(pid, s["id"], 7), lambda: self.call("POST", "/api/v1/orders", buyer, body)
        self.run_write("POST /orders", make)

    def test_order_cancel_returns_stock(self):
        def make(rnd):
            uid, s = self.new_seller()
            pid = self.new_product(uid, stock=10)["id"]
            buyer = self.new_user()
            o = self.expect(self.call("POST", "/api/v1/orders", buyer, {"items": [{"product_id": pid, "quantity": 4}]}),
                            201, "order")
            return (self.order_checks(pid, s["id"], 10),
                    lambda: self.call("POST", "/api/v1/orders/%d/cancel" % o["id"], buyer))
        self.run_write("POST /orders/{id}/cancel", make)

    def test_order_cancelled_by_seller_returns_stock(self):
        def make(rnd):
            uid, s = self.new_seller()
            pid = self.new_product(uid, stock=10)["id"]
            buyer = self.new_user()
            o = self.expect(self.call("POST", "/api/v1/orders", buyer, {"items": [{"product_id": pid, "quantity": 2}]}),
                            201, "order")
            return (self.order_checks(pid, s["id"], 10),
                    lambda: self.call("PATCH", "/api/v1/orders/%d" % o["id"], uid, {"status": "cancelled"}))
        self.run_write("PATCH /orders/{id} cancelled (seller)", make)


class CacheInvalidationTests(CacheCase, CacheInvalidationMixin):
    second_server = True


class CacheLostInvalidationTests(CacheCase):
    """Issue 10, defect 8: an instance that dies between a commit and its
    invalidation. The write below goes straight to the database, which is
    exactly what such a commit looks like to the cache: the row changed, no
    tag version did."""

    def product_title(self, r):
        return r.body.get("title") if isinstance(r.body, dict) else None

    def test_nothing_cached_before_a_crash_is_served_after_a_restart(self):
        env = dict(self.server_env)
        doomed = self.new_server(env=env, name="doomed").start()
        uid, _ = self.new_seller(server=doomed)
        p = self.new_product(uid, server=doomed)
        path = "/api/v1/products/%d" % p["id"]
        self.warm(path, server=doomed)
        self.warm(path)  # the class's instance shares the entry
        new_title = unique("После сбоя ")
        self.db("UPDATE products SET title = %s WHERE id = %s", (new_title, p["id"]))
        # Control: without an invalidation, the entry still answers.
        r = self.GET(path, server=doomed)
        self.assertEqual((xc(r), self.product_title(r)), ("HIT", p["title"]),
                         "control: the write behind the cache is not seen yet\n%s" % show(r))
        doomed.kill()  # SIGKILL: no clean shutdown, nothing flushed
        restarted = self.new_server(env=env, name="restarted").start()
        for name, server in (("the restarted instance", restarted), ("another instance", None)):
            r = self.GET(path, server=server)
            self.expect(r, 200, "GET through %s" % name)
            self.assertEqual(self.product_title(r), new_title,
                             "%s served an entry cached before the restart\n%s" % (name, show(r)))
        self.assertIn("new epoch set at start-up", restarted.log_text())
        restarted.stop()

    def test_an_idempotent_replay_invalidates_again(self):
        uid, _ = self.new_seller()
        p = self.new_product(uid, stock=10)
        buyer = self.new_user()
        key = unique("replay-")
        body = {"items": [{"product_id": p["id"], "quantity": 2}]}
        first = self.call("POST", "/api/v1/orders", buyer, body, headers={"Idempotency-Key": key})
        self.expect(first, 201, "the order")
        path = "/api/v1/products/%d" % p["id"]
        self.assertEqual(self.warm(path).body["stock"], 8)
        # The order's invalidation "was lost": the stock moved again behind
        # the cache, as if this commit's invalidation had never happened.
        self.db("UPDATE products SET stock = 5 WHERE id = %s", (p["id"],))
        self.assertEqual(self.GET(path).body["stock"], 8, "control: the cache does not know yet")
        again = self.call("POST", "/api/v1/orders", buyer, body, headers={"Idempotency-Key": key})
        self.expect(again, 201, "the replay")
        self.assertEqual(again.headers.get("Idempotent-Replayed"), "true", show(again))
        self.assertEqual(again.raw, first.raw, "a replay answers the first answer's bytes")
        r = self.GET(path)
        self.assertEqual(r.body["stock"], 5, "the replay did not invalidate the product\n%s" % show(r))


# ---------------------------------------------------------------------------
# 4. The race of a fill and a write (B3)
# ---------------------------------------------------------------------------

class CacheRaceTests(CacheCase):
    """docs/cache.md "Why a stale entry can never be served": a fill reads
    the versions of its tags before the database; a write changes them
    after its commit. So a fill that read the database before the write
    stores the old versions, and however late its store lands, the next
    lookup (which reads the new versions) misses."""

    # While this file exists the server's cache stores wait (a test hook):
    # the test opens and closes the window between a fill and its store.
    store_gate = None

    @classmethod
    def cache_env(cls):
        cls.store_gate = os.path.join(tempfile.mkdtemp(prefix="gate-", dir=harness.TEST_TMPDIR), "hold-stores")
        env = super().cache_env()
        env["CACHE_TEST_STORE_GATE"] = cls.store_gate
        return env

    def hold_stores(self):
        open(self.store_gate, "w").close()

    def release_stores(self):
        os.unlink(self.store_gate)

    def entry_key(self, pid):
        return "c1:product:%d" % pid

    def product_with_tags(self, server=None):
        """A new product whose detail's tags ({t}:epoch, {t}:product:<id>,
        {t}:sellers) all exist — so its first GET is a fill (MISS), not a
        BYPASS — and which nobody has read yet."""
        fetch(self.srv(server).port, "GET", "/api/v1/categories")  # creates {t}:epoch if missing
        uid, _ = self.new_seller()  # sets {t}:sellers
        p = self.new_product(uid, title=unique("До "))  # sets {t}:product:<id>
        for tag in ("epoch", "product:%d" % p["id"], "sellers"):
            self.assertTrue(wait_until(lambda: self.redis_get("{t}:" + tag), 2.0), "tag %s missing" % tag)
        self.assertIsNone(self.redis_get(self.entry_key(p["id"])))
        return uid, p

    def test_store_landing_after_a_write_is_not_served(self):
        uid, p = self.product_with_tags()
        pid, old_title = p["id"], p["title"]
        path = "/api/v1/products/%d" % pid
        key = self.entry_key(pid)
        self.hold_stores()
        try:
            fill = self.GET(path)
            self.assertEqual(xc(fill), "MISS", show(fill))
            self.assertEqual(fill.body["title"], old_title)
            new_title = unique("После ")
            w = self.call("PATCH", path, uid, {"title": new_title})
            self.expect(w, 200, "PATCH")
            # The fill's store is held: it lands only after the write.
            self.assertIsNone(self.redis_get(key), "the fill's store landed while stores were held")
        finally:
            self.release_stores()
        value = self.wait_stored(key)
        self.assertIn(json.dumps(old_title, ensure_ascii=False).encode(), value,
                      "the late store holds the data read before the write (a stale entry now sits in Redis)")
        after = self.GET(path)
        self.expect(after, 200, "GET after the store landed")
        self.assertEqual(after.body["title"], new_title,
                         "a fill that read the database before the PATCH stored its entry after it, and that "
                         "entry was served\nPATCH: %s\nGET:   %s" % (show(w), show(after)))
        self.assertNotEqual(xc(after), "HIT", show(after))

        # Why this test can fail: had the fill read the versions *after* its
        # database query (i.e. after the PATCH changed them), it would have
        # stored the new versions beside the old body, and the GET above
        # would have been a HIT with the old title. Stage exactly that — put
        # the current versions into the landed entry's header — and the
        # same check sees the stale HIT.
        # The GET above was a fill too: wait until its store (the new title)
        # has landed, so that it cannot overwrite the staged entry.
        landed = wait_until(lambda: json.dumps(new_title, ensure_ascii=False).encode() in (self.redis_get(key) or b""),
                            10.0, interval=0.01)
        self.assertTrue(landed, "the second fill's store never landed")
        versions = self.redis.call("MGET", "{t}:epoch", "{t}:product:%d" % pid, "{t}:sellers")
        stale_body = value.split(b"\n", 1)[1]
        header = b"mkd1 %d 1 3 %s\n" % (int(time.time() * 1000) + 300000, b" ".join(versions))
        self.redis.call("SET", key, header + stale_body, "EX", 300)
        control = self.GET(path)
        self.assertEqual((xc(control), control.body.get("title")), ("HIT", old_title),
                         "control: an entry carrying versions read after the write must be served as a stale "
                         "HIT (else the check above could not fail)\n%s" % show(control))
        self.redis.call("DEL", key)

    def test_waiter_does_not_share_a_fill_that_read_before_a_write(self):
        """Single flight vs B2: request A misses and fills, its database
        read happens before a write W; W commits and changes the versions;
        request B — sent after W answered — reads the new versions, misses,
        and finds A's fill still in progress. B must not be answered with
        A's body (read before W): B is the writer's next read."""
        proxy = DbProxy().up()
        s = None
        try:
            env = dict(self.server_env, DATABASE_URL=proxy.url)
            del env["CACHE_TEST_STORE_GATE"]
            s = self.new_server(env=env, name="held-db")
            s.start()
            uid, p = self.product_with_tags(server=s)
            pid = p["id"]
            path = "/api/v1/products/%d" % pid
            results = {}

            def get(name):
                try:
                    results[name] = fetch(s.port, "GET", path, timeout=30)
                except Exception as e:  # reported below
                    results[name] = e

            # Nobody has read this product: A's lookup misses and A leads a
            # new flight (no finished fill of it lingers).
            stmts0, _ = proxy.counts()
            proxy.hold()
            ta = threading.Thread(target=get, args=("A",), daemon=True)
            ta.start()
            # PostgreSQL has run A's query (its answer is held here).
            ok = wait_until(lambda: any("FROM products" in q for q in proxy.sql_since(stmts0))
                            and proxy.counts()[1] > 0, 10.0, interval=0.01)
            self.assertTrue(ok, "A's query never reached the database (statements %r)" % (proxy.sql_since(stmts0),))
            new_title = unique("После ")
            w = self.call("PATCH", path, uid, {"title": new_title})  # through the other instance
            self.expect(w, 200, "PATCH")
            tb = threading.Thread(target=get, args=("B",), daemon=True)
            tb.start()
            # B has either joined A's flight (the bug) or sent a query of
            # its own (right): wait for one of the two, observably.
            decided = wait_until(lambda: flight_waiters(s.port) > 0 or
                                 len([q for q in proxy.sql_since(stmts0) if "FROM products" in q]) > 1,
                                 30.0, interval=0.01)
            self.assertTrue(decided, "B neither joined A's fill nor sent its own query within 30 s")
            stmts_during = len([q for q in proxy.sql_since(stmts0) if "FROM products" in q])
            proxy.release()
            ta.join(30)
            tb.join(30)
            a, b = results.get("A"), results.get("B")
            self.expect(a, 200, "A")
            self.expect(b, 200, "B")
            self.assertEqual(b.body.get("title"), new_title,
                             "B was sent after the PATCH had answered, yet it got the body of a fill that read the "
                             "database before the PATCH (single flight joined a fill across a write; product "
                             "queries run while A's answer was held: %d — 1 means B ran none of its own)\n"
                             "A: %s\nPATCH: %s\nB: %s" % (stmts_during, show(a), show(w), show(b)))
            self.assertEqual(xc(a), "MISS", "A was the fill\n%s" % show(a))
            self.assertGreaterEqual(stmts_during, 2, "B ran no product query of its own while A's was held")
            c = fetch(s.port, "GET", path)
            self.assertEqual(c.body.get("title"), new_title, show(c))
            s.stop()
        finally:
            if s is not None:
                s.kill()  # before its database goes away (a no-op after stop())
            proxy.down()


# ---------------------------------------------------------------------------
# 5. Stampede: one database query per hot key (B4)
# ---------------------------------------------------------------------------

# Cache stampede protection (B4): one miss on a hot key, one database query.
class CacheStampedeMixin:
    N = 200

    def stampede(self, port, path, proxy, hold):
        """N concurrent GETs of path (connections opened beforehand). With
        hold, PostgreSQL's answers are held until every other request waits
        for the fill (marketd_flight_waiters = N - 1, or 30 s at most): the
        fill is then surely still in progress when the others miss."""
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(self.N)]
        sent = [threading.Event() for _ in range(self.N)]
        try:
            for c in conns:
                c.connect()

            def one(i):
                def run():
                    c = conns[i]
                    c.request("GET", path)
                    sent[i].set()
                    resp = c.getresponse()
                    raw = resp.read()
                    return Resp(resp.status, resp.headers, raw, harness.decode_body(resp.headers, raw), 0)
                return run

            if hold:
                proxy.hold()
                out = {}
                runner = threading.Thread(target=lambda: out.setdefault("r", parallel([one(i) for i in range(self.N)])),
                                          daemon=True)
                runner.start()
                all_sent = wait_until(lambda: all(e.is_set() for e in sent), 30.0)
                wait_until(lambda: flight_waiters(port) >= self.N - 1, 30.0, interval=0.02)
                proxy.release()
                runner.join(120)
                self.assertTrue(all_sent, "not every request was sent within 30 s")
                self.assertIn("r", out, "the requests did not finish")
                return out["r"]
            return parallel([one(i) for i in range(self.N)])
        finally:
            proxy.release()
            for c in conns:
                c.close()

    def check_stampede(self, hold):
        ids = self.dataset.ids
        port = self.server.port
        # The tags of unfiltered product lists exist (and another key with
        # them is warm); the key itself is cold.
        self.warm("/api/v1/products?q=%s&limit=3" % urllib.parse.quote("смартфон"))
        word = "samsung" if hold else "galaxy"
        path = "/api/v1/products?q=%s&limit=%d&category_id=%d" % (word, 5 if hold else 6, ids["electronics"])
        self.assertEqual(self.redis_keys("c1:products:*q=%s*" % word), set(), "the key must be cold")
        m0 = cache_metrics(port)
        st0, _ = self.proxy.counts()
        results = self.stampede(port, path, self.proxy, hold)
        m1 = cache_metrics(port)
        # The statements on products run meanwhile (anything else is
        # background work: partition upkeep, another instance's /readyz).
        run = [q for q in self.proxy.sql_since(st0) if "FROM products" in q]
        bad = [r for r in results if isinstance(r, BaseException) or r.status != 200]
        self.assertFalse(bad, "%d of %d requests failed:\n%s" % (len(bad), self.N, "\n".join(show(r) for r in bad[:5])))
        bodies = {r.raw for r in results}
        self.assertEqual(len(bodies), 1, "the concurrent answers differ")
        got = {}
        for r in results:
            got[xc(r)] = got.get(xc(r), 0) + 1
        delta = {k: m1[k] - m0[k] for k in m0}
        self.assertTrue(self.proxy.counting_ok, "the proxy could not count statements")
        if not hold:
            # Free-running, the exact split depends on the machine's pace (a
            # request may look up after the fill's store landed, or bypass a
            # Redis answer late under load); what holds whatever the pace:
            # every query is a MISS's or a BYPASS's, and they coalesce.
            self.assertEqual(delta["hit"] + delta["miss"] + delta["bypass"], self.N, delta)
            self.assertGreaterEqual(len(run), 1)
            self.assertLessEqual(len(run), delta["miss"] + delta["bypass"],
                                 "more product queries than requests that missed or bypassed: %d, %r"
                                 % (len(run), delta))
            self.assertEqual(delta["miss"], got.get("MISS", 0), (got, delta))
            return
        self.assertEqual((got, len(run), delta), ({"MISS": 1, "HIT": self.N - 1}, 1,
                                                  {"hit": self.N - 1, "miss": 1, "bypass": 0}),
                         "%d concurrent GETs of a cold key (WORKERS=2, %s): X-Cache counts, product queries the "
                         "server ran on the database, marketd_cache_requests_total deltas"
                         % (self.N, "fill held in the database" if hold else "free-running"))

    def test_stampede_one_fill_while_the_fill_is_held(self):
        self.check_stampede(hold=True)

    def test_stampede_one_fill_free_running(self):
        """The same without holding the database: the requests arrive over
        some milliseconds while the fill runs. A request whose lookup found
        no entry after the fill had answered — the fill leaves the
        single-flight table when it answers, its SET may not have reached
        Redis yet — becomes a second fill: a second database query."""
        self.check_stampede(hold=False)


class CacheStampedeTests(CacheCase, CacheStampedeMixin):
    proxy = None

    @classmethod
    def setUpClass(cls):
        cls.proxy = DbProxy().up()
        try:
            super().setUpClass()
        except BaseException:
            cls.proxy.down()
            raise

    @classmethod
    def cache_env(cls):
        env = super().cache_env()
        env["DATABASE_URL"] = cls.proxy.url
        env["WORKERS"] = "2"
        return env

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.proxy.down()


# ---------------------------------------------------------------------------
# 6. Degrading: Redis down, slow, back, full (B5)
# ---------------------------------------------------------------------------

class CacheDegradeTests(CacheCase):
    """The class's Redis is killed, stopped and restarted by the tests;
    each test leaves it running (and waits for the server to use it)."""

    RECONNECT_S = 15.0  # backoff is at most 2 s; generous for ASan
    cache_timeout_ms = CACHE_TIMEOUT_MS

    def setUp(self):
        super().setUp()
        if not self.redis.alive():
            self.redis.restart()
        self.redis.resume()
        self.wait_cache_up()

    def tearDown(self):
        try:
            if self.redis is not None:
                self.redis.resume()
                if not self.redis.alive():
                    self.redis.restart()
        finally:
            super().tearDown()

    def wait_cache_up(self, path=None, timeout=None):
        """Until GET path is a HIT again (the server reconnected by itself)."""
        path = path or "/api/v1/categories"
        seen = []

        def hit():
            r = self.GET(path)
            seen.append(r)
            return r.status == 200 and xc(r) == "HIT"
        t0 = time.monotonic()
        ok = wait_until(hit, timeout or self.RECONNECT_S, interval=0.05)
        self.assertTrue(ok, "no HIT on %s within %.0f s of Redis being available again; last answers:\n%s"
                        % (path, timeout or self.RECONNECT_S, "\n".join(show(r) for r in seen[-3:])))
        return time.monotonic() - t0

    def readyz(self):
        return self.GET("/readyz")

    def wait_readyz(self, status, cache, timeout=10.0, samples=8):
        """/readyz says (status, cache) on every worker: `samples` answers in
        a row (new connections, spread over the workers) say so, within
        timeout."""
        seen = []

        def says(r):
            return r.status == 200 and isinstance(r.body, dict) and \
                (r.body.get("status"), r.body.get("cache")) == (status, cache)

        def ok():
            for _ in range(samples):
                r = self.readyz()
                seen.append(r)
                if not says(r):
                    return False
            return True
        self.assertTrue(wait_until(ok, timeout, interval=0.05),
                        "/readyz did not say 200 status=%s cache=%s on every worker within %.0f s; last:\n%s"
                        % (status, cache, timeout, show(seen[-1])))

    def paths(self):
        ids = self.dataset.ids
        return ["/api/v1/products/%d" % ids["p_s23"], "/api/v1/products?city_id=%d" % ids["msk"],
                "/api/v1/cities", "/api/v1/sellers/%d" % ids["s2"]]

    def check_served_without_redis(self, warm, what, rounds=3):
        """Every path answers 200 BYPASS, with the warm bytes (and does not
        hang: NO_HANG_S is the request's timeout)."""
        for _ in range(rounds):
            for path in self.paths():
                r = self.GET(path, timeout=NO_HANG_S)
                self.expect(r, 200, "%s: %s" % (what, path))
                self.assertEqual(xc(r), "BYPASS", "%s: %s\n%s" % (what, path, show(r)))
                self.assertEqual(r.raw, warm[path].raw, "%s: %s answered other data\n%s" % (what, path, show(r)))

    def test_redis_killed_then_restarted(self):
        warm = {p: self.warm(p) for p in self.paths()}
        self.wait_readyz("ok", "up")
        self.redis.kill()
        self.check_served_without_redis(warm, "Redis killed")
        self.wait_readyz("degraded", "down")
        self.redis.restart()  # same port, empty
        self.wait_cache_up(self.paths()[0])
        for p in self.paths():
            r = self.warm(p)
            self.assertEqual(r.raw, warm[p].raw, p)
        self.wait_readyz("ok", "up")

    def test_redis_stopped_answers_within_the_timeout(self):
        warm = {p: self.warm(p) for p in self.paths()}
        self.redis.pause()  # SIGSTOP: connections stay open, nothing answers
        try:
            self.check_served_without_redis(warm, "Redis stopped (SIGSTOP)", rounds=4)
            self.wait_readyz("degraded", "down", timeout=10.0)
            # A write while Redis does not answer: succeeds (the invalidation
            # gives up after its bounded retries; HTTP_TIMEOUT catches a hang).
            uid, _ = self.new_seller()
            p = self.new_product(uid)
            r = self.call("PATCH", "/api/v1/products/%d" % p["id"], uid, {"title": unique("Пока стоит ")})
            self.expect(r, 200, "PATCH while Redis is stopped")
        finally:
            self.redis.resume()
        self.wait_cache_up(self.paths()[0])
        self.wait_readyz("ok", "up")

    def test_an_instance_that_lost_redis_trusts_no_entry_from_before(self):
        """While Redis is away another instance may commit a write whose
        invalidation cannot reach it (here: the row changes behind the
        cache). When Redis is back with its old content, an instance that
        lost it must not serve the old entry — it bumps the epoch first —
        whatever the writer does. (The writer flushes too, but may reconnect
        later than a reader.)"""
        uid, _ = self.new_seller()
        p = self.new_product(uid, title=unique("До паузы "))
        path = "/api/v1/products/%d" % p["id"]
        self.warm(path)
        self.redis.pause()  # SIGSTOP: the entry and the versions survive
        try:
            self.wait_readyz("degraded", "down", timeout=10.0)
            new_title = unique("Во время паузы ")
            self.db("UPDATE products SET title = %s WHERE id = %s", (new_title, p["id"]))
        finally:
            self.redis.resume()
        self.wait_readyz("ok", "up")
        for _ in range(3):
            r = self.GET(path)
            self.expect(r, 200, "GET after Redis came back")
            self.assertEqual(r.body.get("title"), new_title,
                             "an entry cached before the outage was served after it\n%s" % show(r))
        self.assertIn("lost Redis", self.server.log_text())

    def test_write_while_redis_is_down_leaves_no_stale_entry(self):
        """The PATCH cannot change the versions (Redis is down); when Redis
        is back with its old content — the old entry and the old versions
        (here: restarted from a dump taken before the outage, as after a
        network partition) — the instance must bump the epoch before using
        the cache again, on every worker."""
        uid, _ = self.new_seller()
        p = self.new_product(uid, title=unique("До "))
        pid = p["id"]
        path = "/api/v1/products/%d" % pid
        before = self.warm(path)
        self.assertEqual(before.body["title"], p["title"])
        self.redis.call("SAVE")
        self.redis.kill()
        new_title = unique("После ")
        w = self.call("PATCH", path, uid, {"title": new_title})
        self.expect(w, 200, "PATCH while Redis is down")
        r = self.GET(path)
        self.assertEqual((r.body.get("title"), xc(r)), (new_title, "BYPASS"), show(r))
        self.redis.restart()
        stale = self.redis.call("GET", "c1:product:%d" % pid)
        self.assertTrue(stale and p["title"].encode() in stale,
                        "Redis came back with the pre-outage entry (else this test proves nothing): %r" % (stale,))
        # Many reads on new connections (spread over both workers) from the
        # moment Redis is back, for at least 2 s and until HITs are served.
        t_back = time.monotonic()
        answers, lock, stop = [], threading.Lock(), threading.Event()

        def reader():
            while not stop.is_set():
                t = time.monotonic() - t_back
                try:
                    a = self.GET(path, timeout=10)
                except (OSError, http.client.HTTPException) as e:
                    a = e
                with lock:
                    answers.append((t, a))

        def hits():
            with lock:
                return sum(1 for _, a in answers if not isinstance(a, Exception) and xc(a) == "HIT")

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(2.0)
            resumed = wait_until(lambda: hits() >= 20, self.RECONNECT_S, interval=0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        bad = [(t, a) for t, a in answers if isinstance(a, Exception) or a.status != 200
               or a.body.get("title") != new_title]
        if bad:
            self.fail("%d of %d reads after Redis came back did not show the PATCH made while it was down: the "
                      "pre-outage entry was served from %.0f ms to %.0f ms after Redis was back (X-Cache of the "
                      "stale answers: %s)\nPATCH: %s\nfirst stale answer: %s"
                      % (len(bad), len(answers), 1000 * bad[0][0], 1000 * bad[-1][0],
                         sorted({xc(a) for _, a in bad if not isinstance(a, Exception)}), show(w), show(bad[0][1])))
        self.assertTrue(resumed, "HITs did not resume within %.0f s of Redis coming back" % self.RECONNECT_S)


class CacheRedisFullTests(CacheCase):
    """A Redis that refuses writes (maxmemory 1mb, noeviction, filled up):
    reads still answer 200 with correct data (BYPASS or MISS), and a write
    whose invalidation is refused (OOM) leaves no stale entry served."""

    redis_args = ("--maxmemory", "1mb", "--maxmemory-policy", "noeviction")
    second_server = True

    def setUp(self):
        super().setUp()
        # Room to warm entries first (the limit is put back by make_full).
        self.redis.call("CONFIG", "SET", "maxmemory", "0")
        self.redis.call("FLUSHALL")

    def make_full(self):
        """maxmemory 1mb again, and SETs until Redis answers OOM (bounded)."""
        self.redis.call("CONFIG", "SET", "maxmemory", "1mb")
        with self.redis.connection() as c:
            for i in range(2000):
                reply = c.call("SET", "junk:%d" % i, "x" * 8192, raise_errors=False)
                if isinstance(reply, RedisError):
                    self.assertIn("OOM", str(reply))
                    return i
        self.fail("Redis with maxmemory 1mb took 16 MB without an OOM")

    def test_full_redis_reads_answer_from_the_database(self):
        ids = self.dataset.ids
        warm_path = "/api/v1/products/%d" % ids["p_redmi"]
        warm = self.warm(warm_path)
        self.make_full()
        cold = ["/api/v1/products?city_id=%d&limit=4" % ids["kzn"], "/api/v1/products/%d" % ids["p_buds"],
                "/api/v1/cities", "/api/v1/sellers/%d" % ids["s3"]]
        # The database's answers, for comparison (a server without Redis).
        plain = self.new_server(env=dict(self.server_env, REDIS_URL=None), name="no-redis").start()
        try:
            for path in cold:
                want = fetch(plain.port, "GET", path)
                for _ in range(3):
                    r = self.GET(path)
                    self.expect(r, 200, path)
                    self.assertIn(xc(r), ("MISS", "BYPASS"), "%s: nothing can be stored in a full Redis\n%s"
                                  % (path, show(r)))
                    self.assertEqual(r.raw, want.raw, "%s: other data than the database's\n%s\n%s"
                                     % (path, show(want), show(r)))
            r = self.GET(warm_path)
            self.assertEqual((r.status, r.raw), (200, warm.raw), show(r))
        finally:
            plain.stop()

    def check_write_while_full(self, reader, what):
        uid, _ = self.new_seller()
        p = self.new_product(uid, title=unique("До "))
        path = "/api/v1/products/%d" % p["id"]
        self.warm(path)
        self.warm(path, server=self.server2)
        self.make_full()
        new_title = unique("После ")
        w = self.call("PATCH", path, uid, {"title": new_title})
        self.expect(w, 200, "PATCH while Redis is full")
        bad, seen = [], []
        for _ in range(20):  # new connections: both workers
            r = self.GET(path, server=reader)
            seen.append(xc(r))
            if r.status != 200 or r.body.get("title") != new_title:
                bad.append(r)
        if bad:
            self.fail("%s: %d of 20 GETs after a PATCH whose invalidation Redis refused (OOM) served the entry "
                      "from before it (X-Cache of the 20: %s)\nPATCH: %s\nstale: %s"
                      % (what, len(bad), " ".join(seen), show(w), show(bad[0])))

    def test_write_while_full_same_instance(self):
        self.check_write_while_full(self.server, "through the writing instance (WORKERS=2)")

    def test_write_while_full_other_instance(self):
        self.check_write_while_full(self.server2, "through another instance")


def inval_failures(port):
    """marketd_cache_invalidation_failures_total by `waited`, from /metrics."""
    text = fetch(port, "GET", "/metrics").raw.decode("utf-8", "replace")
    out = {}
    for m in re.finditer(r'^marketd_cache_invalidation_failures_total\{waited="(\w+)"\} (\d+)$', text, re.M):
        out[m.group(1)] = int(m.group(2))
    return out


class CacheRefusingRedisTests(CacheCase):
    """A Redis that answers but refuses every write (min-replicas-to-write 1
    with no replica: NOREPLICAS), as a cluster that lost its slots or its
    replicas does. A write whose invalidation fails waits out the patience
    (a failover may be under way); once invalidations have failed for longer
    than a failover takes (10 s), writes stop waiting until one succeeds —
    every write 1.5 s late helps nobody, and the flush covers the rest
    (docs/cache.md "Degrading"). Each write is still seen by the next read
    through the writing instance (B2)."""

    def refuse_writes(self, on):
        self.redis.call("CONFIG", "SET", "min-replicas-to-write", "1" if on else "0")

    def patch(self, uid, path):
        title = unique("Отказ ")
        self.expect(self.call("PATCH", path, uid, {"title": title}), 200, "PATCH")
        r = self.GET(path)
        self.expect(r, 200, "GET after the PATCH")
        self.assertEqual(r.body["title"], title, "the writing instance served the entry from before its write")

    def test_writes_stop_waiting_once_invalidations_fail_and_wait_again_after_one_succeeds(self):
        uid, _ = self.new_seller()
        path = "/api/v1/products/%d" % self.new_product(uid)["id"]
        self.warm(path)
        f0 = inval_failures(self.server.port)
        self.refuse_writes(True)
        try:
            self.patch(uid, path)
            f1 = inval_failures(self.server.port)
            self.assertEqual(f1["yes"] - f0["yes"], 1, "the first failing invalidation waits its patience")
            # Longer than a failover takes (10 s from the first failure):
            # an outage, so the writes stop waiting.
            time.sleep(10.5)
            self.patch(uid, path)
            self.patch(uid, path)
            f2 = inval_failures(self.server.port)
            self.assertEqual(f2["yes"], f1["yes"], "later writes waited for a Redis that keeps refusing")
            self.assertEqual(f2["no"] - f1["no"], 2)
        finally:
            self.refuse_writes(False)
        # An invalidation succeeds again (or the flush's new epoch does):
        # from then on a failing one waits its patience again.
        self.assertTrue(wait_until(lambda: self.call("PATCH", path, uid, {"title": unique("Снова ")}).status == 200
                                   and inval_failures(self.server.port)["no"] == f2["no"]
                                   and inval_failures(self.server.port)["yes"] == f2["yes"], 30.0, interval=0.5),
                        "no invalidation succeeded after Redis took writes again")
        self.refuse_writes(True)
        try:
            self.patch(uid, path)
            f3 = inval_failures(self.server.port)
            self.assertEqual(f3["yes"] - f2["yes"], 1, "after a success, a failing invalidation waits again")
        finally:
            self.refuse_writes(False)


# ---------------------------------------------------------------------------
# 7. Redis Cluster (S7): the core of the above, and failovers
# ---------------------------------------------------------------------------

class CacheClusterTests(CacheCase, CacheBasicMixin, CacheInvalidationMixin):
    """A 6-node Redis Cluster (3 masters, 3 replicas, cluster-node-timeout
    2 s) through REDIS_CLUSTER_NODES; two instances share it and the
    database (the first through the counting proxy)."""

    use_cluster = True
    second_server = True
    proxy = None
    FAILOVER_S = 30.0
    RESUME_S = 20.0

    @classmethod
    def setUpClass(cls):
        cls.proxy = DbProxy().up()
        try:
            super().setUpClass()
        except BaseException:
            cls.proxy.down()
            raise

    @classmethod
    def cache_env(cls):
        env = super().cache_env()
        env["DATABASE_URL"] = cls.proxy.url
        return env

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.proxy.down()

    def setUp(self):
        super().setUp()
        # A failover test that failed half-way may have left a node down.
        dead = [n for n in self.cluster.nodes if not n.alive()]
        for n in dead:
            n.start()
        for n in self.cluster.nodes:
            n.resume()
        if dead:
            self.wait_cluster_ok("restarting nodes %s" % [n.port for n in dead])
        # Both instances use the cluster (HITs) before the test starts.
        for server in (self.server, self.server2):
            seen = []

            def hit():
                r = self.GET("/api/v1/categories", server=server)
                seen.append(r)
                return xc(r) == "HIT"
            self.assertTrue(wait_until(hit, self.RESUME_S, interval=0.1),
                            "%s: no HIT on /api/v1/categories within %.0f s before the test; last: %s"
                            % (server.name, self.RESUME_S, show(seen[-1])))

    def failure_context(self):
        text = super().failure_context()
        if self.cluster is not None:
            text += "\n---- CLUSTER NODES ----\n" + self.cluster.describe()
        return text

    test_stampede_one_fill_while_the_fill_is_held = CacheStampedeMixin.test_stampede_one_fill_while_the_fill_is_held
    check_stampede = CacheStampedeMixin.check_stampede
    stampede = CacheStampedeMixin.stampede
    N = CacheStampedeMixin.N

    # -- helpers ----------------------------------------------------------

    @staticmethod
    def is_master(node):
        try:
            return node.call("ROLE", timeout=1)[0] == b"master"
        except (OSError, RedisError, ConnectionError):
            return False

    def wait_cluster_ok(self, what):
        ok = self.cluster.wait_ok(self.FAILOVER_S) and self.cluster.wait_replicas_synced(self.FAILOVER_S)
        self.assertTrue(ok, "%s: the cluster did not settle (cluster_state:ok, one view of the slots, replicas "
                        "in sync) within %.0f s\n%s" % (what, self.FAILOVER_S, self.cluster.describe()))

    class Traffic:
        """Threads GETting paths through both servers on new connections,
        recording (start time, path, server, response or exception)."""

        def __init__(self, case, paths, threads=3):
            self.case, self.paths = case, paths
            self.log, self.lock, self.stop_ev = [], threading.Lock(), threading.Event()
            self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

        def run(self, i):
            servers = (self.case.server, self.case.server2)
            n = i
            while not self.stop_ev.is_set():
                path = self.paths[n % len(self.paths)]
                server = servers[(n // len(self.paths)) % 2]
                n += 1
                t = time.monotonic()
                try:
                    r = fetch(server.port, "GET", path, timeout=NO_HANG_S)
                except (OSError, http.client.HTTPException) as e:
                    r = e
                with self.lock:
                    self.log.append((t, path, server.name, r))
                time.sleep(0.005)

        def __enter__(self):
            for t in self.threads:
                t.start()
            return self

        def __exit__(self, *exc):
            self.stop_ev.set()
            for t in self.threads:
                t.join(40)

        def entries(self):
            with self.lock:
                return list(self.log)

        def wait_flowing(self, n=20):
            """Until n requests have been answered: traffic before the event."""
            ok = wait_until(lambda: len(self.entries()) >= n, NO_HANG_S, interval=0.01)
            self.case.assertTrue(ok, "the traffic did not start")

        def hit_after(self, t0, path, ok=lambda b: True):
            return any(t >= t0 and p == path and not isinstance(r, Exception) and r.status == 200
                       and xc(r) == "HIT" and ok(r.body) for t, p, _, r in self.entries())

    def check_traffic(self, traffic, what, t_write=None, pid=None, new_title=None):
        """Every request answered 200 (none hung: NO_HANG_S); none started after
        the write (t_write) shows the product's old title."""
        entries = traffic.entries()
        self.assertTrue(entries, "no traffic")
        failed = [(p, s, r) for _, p, s, r in entries
                  if isinstance(r, Exception) or r.status != 200
                  or xc(r) not in ("HIT", "MISS", "BYPASS")]
        counts = {}
        for _, _, _, r in entries:
            k = "exception" if isinstance(r, Exception) else "%s %s" % (r.status, xc(r))
            counts[k] = counts.get(k, 0) + 1
        if failed:
            self.fail("%s: %d of %d requests during the failover failed, hung or lacked X-Cache (answers: %r)\n%s"
                      % (what, len(failed), len(entries), counts,
                         "\n".join("%s via %s: %s" % (p, s, show(r)) for p, s, r in failed[:5])))
        if t_write is not None:
            detail = "/api/v1/products/%d" % pid
            stale = [(t - t_write, s, r) for t, p, s, r in entries if t >= t_write and p == detail
                     and r.body.get("title") != new_title]
            if stale:
                self.fail("%s: %d reads started after the PATCH answered showed the old title (first %.0f ms "
                          "after it, via %s)\n%s" % (what, len(stale), 1000 * stale[0][0], stale[0][1],
                                                     show(stale[0][2])))
        return counts

    def write_and_check(self, uid, pid, what):
        """PATCH now; the next GET through both instances shows it."""
        new_title = unique("После ")
        w = self.call("PATCH", "/api/v1/products/%d" % pid, uid, {"title": new_title})
        self.expect(w, 200, "%s: PATCH" % what)
        t_write = time.monotonic()
        for server in (self.server, self.server2):
            r = self.GET("/api/v1/products/%d" % pid, server=server)
            self.assertEqual(r.body.get("title") if r.status == 200 else r.status, new_title,
                             "%s: the GET right after the PATCH (via %s)\nPATCH: %s\nGET: %s"
                             % (what, server.name, show(w), show(r)))
        return t_write, new_title

    # -- failovers --------------------------------------------------------

    def test_a_dead_seed_is_skipped(self):
        """Issue 12, bad input: a seed list whose first node is dead (a
        port nobody listens on): the instance starts, learns the cluster from the live seeds, and
        caches; the dead seed is logged, never fatal."""
        bad = "127.0.0.1:%d" % harness.closed_port()
        env = dict(self.server_env, REDIS_CLUSTER_NODES="%s,%s" % (bad, self.cluster.seeds))
        s = self.new_server(env=env, name="dead-seed").start()
        try:
            uid, _ = self.new_seller()
            p = self.new_product(uid)
            path = "/api/v1/products/%d" % p["id"]
            self.warm(path, server=s)
            ok = wait_until(lambda: self.GET("/readyz", server=s).body.get("cache") == "up", NO_HANG_S)
            self.assertTrue(ok, "the cache never came up with a dead seed first in the list")
            self.assertIn(bad, s.log_text(), "the dead seed is not named in the log")
        finally:
            s.stop()

    def test_failover_of_the_tag_master_during_traffic(self):
        uid, s = self.new_seller()
        pid = self.new_product(uid, title=unique("До "))["id"]
        detail = "/api/v1/products/%d" % pid
        paths = [detail, "/api/v1/products?seller_id=%d" % s["id"], "/api/v1/categories"]
        for p in paths:
            self.warm(p)
        master, slot = self.cluster.master_of_key("{t}")
        replicas = self.cluster.replicas_of(master)
        self.assertTrue(replicas, "the master of slot %d ({t}) has no replica\n%s" % (slot, self.cluster.describe()))
        replica = replicas[0]

        # 1. A graceful failover (CLUSTER FAILOVER on the replica).
        with self.Traffic(self, paths) as traffic:
            traffic.wait_flowing()
            replica.call("CLUSTER", "FAILOVER")
            self.assertTrue(wait_until(lambda: self.is_master(replica), self.FAILOVER_S, interval=0.05),
                            "CLUSTER FAILOVER: %d did not become master\n%s" % (replica.port, self.cluster.describe()))
            self.wait_cluster_ok("after CLUSTER FAILOVER")
            t_write, new_title = self.write_and_check(uid, pid, "right after CLUSTER FAILOVER")
            resumed = wait_until(lambda: traffic.hit_after(t_write, detail, lambda b: b.get("title") == new_title),
                                 self.RESUME_S, interval=0.1)
        counts = self.check_traffic(traffic, "CLUSTER FAILOVER", t_write, pid, new_title)
        self.assertTrue(resumed, "no HIT (with the new title) within %.0f s after the failover; answers: %r"
                        % (self.RESUME_S, counts))

        # 2. The new master dies (SIGKILL): the cluster promotes the old one
        # (now its replica) after cluster-node-timeout. Both instances lost
        # a master, so they trust no entry until they have set a new epoch,
        # and the promoted master has no replica to confirm one (WAIT): the
        # cache is bypassed — never stale — until the killed node rejoins
        # as its replica; then HITs come back.
        victim, old = replica, master
        try:
            with self.Traffic(self, paths) as traffic:
                traffic.wait_flowing()
                victim.kill()
                self.assertTrue(wait_until(lambda: self.is_master(old), self.FAILOVER_S, interval=0.1),
                                "after SIGKILL of master %d, %d was not promoted\n%s"
                                % (victim.port, old.port, self.cluster.describe()))
                self.wait_cluster_ok("after the master was killed")
                t_write, new_title = self.write_and_check(uid, pid, "right after the killed master's failover")
                # The killed node comes back as a replica (its nodes.conf is kept).
                victim.start()
                self.wait_cluster_ok("after the killed node rejoined")
                resumed = wait_until(lambda: traffic.hit_after(t_write, detail,
                                                               lambda b: b.get("title") == new_title),
                                     self.RESUME_S, interval=0.1)
            counts = self.check_traffic(traffic, "master killed", t_write, pid, new_title)
            self.assertTrue(resumed, "no HIT (with the new title) within %.0f s after the killed master "
                            "rejoined; answers: %r" % (self.RESUME_S, counts))
        finally:
            if not victim.alive():
                victim.start()
                self.wait_cluster_ok("after the killed node rejoined")

    def test_write_acknowledged_just_before_the_tag_master_dies(self):
        """Replication is asynchronous: a write's version change that the
        master acknowledged but had not yet sent to its replica is lost
        when the replica takes over — the tag key then holds the *previous*
        version (it is not missing), which matches entries filled before
        the write. Staged here by stopping the replica (SIGSTOP) while the
        PATCH's MSET is acknowledged — its link to the master cut first
        (CLIENT KILL TYPE replica), so that the MSET cannot even wait in
        its socket buffer — then killing the master."""
        uid, s = self.new_seller()
        pid = self.new_product(uid, title=unique("До "))["id"]
        detail = "/api/v1/products/%d" % pid
        before = self.warm(detail)
        self.warm(detail, server=self.server2)
        master, slot = self.cluster.master_of_key("{t}")
        replicas = self.cluster.replicas_of(master)
        self.assertTrue(replicas, "the master of slot %d ({t}) has no replica\n%s" % (slot, self.cluster.describe()))
        replica = replicas[0]
        # The replica has the versions (replication caught up).
        self.assertTrue(wait_until(lambda: self.replica_has(replica, pid), 5.0, interval=0.05),
                        "the replica never got the tag of the product")
        replica.pause()
        try:
            master.call("CLIENT", "KILL", "TYPE", "replica")
            new_title = unique("После ")
            w = self.call("PATCH", detail, uid, {"title": new_title})
            self.expect(w, 200, "PATCH")
            master.kill()
        finally:
            replica.resume()
        self.assertTrue(wait_until(lambda: self.is_master(replica), self.FAILOVER_S, interval=0.1),
                        "the replica %d was not promoted after its master died\n%s"
                        % (replica.port, self.cluster.describe()))
        self.wait_cluster_ok("after the failover")
        try:
            # Until the server uses the new master again, BYPASS is fine;
            # a HIT must never carry the old title.
            seen = []

            def settled():
                r = self.GET(detail)
                seen.append(r)
                return r.status == 200 and xc(r) in ("HIT", "MISS")
            wait_until(settled, self.RESUME_S, interval=0.1)
            for _ in range(5):
                seen.append(self.GET(detail))
                seen.append(self.GET(detail, server=self.server2))
            stale = [r for r in seen if r.status != 200 or r.body.get("title") != new_title]
            if stale:
                self.fail("%d of %d GETs after the failover showed the product from before a PATCH that had "
                          "answered 200 before the master died (the tag's version change was lost with the "
                          "master; the replica's older version matches the old entry)\nbefore: %s\nPATCH: %s\n"
                          "after: %s" % (len(stale), len(seen), show(before), show(w), show(stale[0])))
        finally:
            master.start()
            self.wait_cluster_ok("after the killed master rejoined")

    def replica_has(self, replica, pid):
        with replica.connection() as c:
            c.call("READONLY")
            return c.call("GET", "{t}:product:%d" % pid) is not None


# ---------------------------------------------------------------------------
# 9. Redis down: still one database query per key at a time (B4, B2)
# ---------------------------------------------------------------------------

class RedisOutCase(CacheCase):
    """Redis is killed for the whole class: every read bypasses the cache.
    Two instances; the first reaches PostgreSQL through the counting,
    holding proxy, the second directly (it writes past the proxy, so that a
    write commits while the first instance's reads are held).
    `outage_store_mb` is the first instance's OUTAGE_STORE_MB."""

    proxy = None
    outage_store_mb = "0"

    @classmethod
    def setUpClass(cls):
        cls.proxy = DbProxy().up()
        try:
            super().setUpClass()
            cls.server2 = Server(env=dict(cls.server_env, DATABASE_URL=harness.DATABASE_URL),
                                 name=cls.__name__ + "-direct").start()
            cls.redis.kill()
        except BaseException:
            cls._stop_class_processes(check=False)
            cls.proxy.down()
            raise

    @classmethod
    def cache_env(cls):
        env = super().cache_env()
        env["DATABASE_URL"] = cls.proxy.url
        env["WORKERS"] = "2"
        env["OUTAGE_STORE_MB"] = cls.outage_store_mb
        return env

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.proxy.down()


class CacheOutageCoalescingTests(RedisOutCase):
    """Concurrent reads of one key must still share database work while
    Redis is out (issue 11: an outage must not multiply the database's
    load), and sharing must never hand out a result read before a write
    that was acknowledged when the request arrived (B2). The flights alone:
    the outage store (test_outage_store) would answer repeats without the
    queries these tests count."""

    N = 120

    def product_queries_since(self, mark):
        return [q for q in self.proxy.sql_since(mark) if "FROM products" in q]

    def test_concurrent_reads_of_one_key_share_queries_while_redis_is_down(self):
        path = "/api/v1/products?city_id=%d&sort=price_asc&limit=7" % self.dataset.ids["msk"]
        conns = [http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60) for _ in range(self.N)]
        sent = [threading.Event() for _ in range(self.N)]
        for c in conns:
            c.connect()

        def one(i):
            def run():
                conns[i].request("GET", path)
                sent[i].set()
                resp = conns[i].getresponse()
                raw = resp.read()
                return Resp(resp.status, resp.headers, raw, harness.decode_body(resp.headers, raw), 0)
            return run

        st0, _ = self.proxy.counts()
        self.proxy.hold()
        out = {}
        try:
            runner = threading.Thread(target=lambda: out.setdefault("r", parallel([one(i) for i in range(self.N)])),
                                      daemon=True)
            runner.start()
            # Every request sent, and the first query surely at the database.
            self.assertTrue(wait_until(lambda: all(e.is_set() for e in sent), 30.0), "requests not sent")
            self.assertTrue(wait_until(lambda: self.product_queries_since(st0), 30.0), "no query reached the database")
            # The server says every other request waits for a shared query.
            self.assertTrue(wait_until(lambda: flight_waiters(self.server.port) >= self.N - 1, 30.0),
                            "only %d of %d requests wait for the running query"
                            % (flight_waiters(self.server.port), self.N - 1))
            self.assertEqual(len(self.product_queries_since(st0)), 1,
                             "while one query for the key runs, the others wait for it")
        finally:
            self.proxy.release()
        runner.join(120)
        for c in conns:
            c.close()
        results = out.get("r")
        self.assertIsNotNone(results, "the requests did not finish")
        bad = [r for r in results if isinstance(r, BaseException) or r.status != 200]
        self.assertFalse(bad, "%d of %d failed:\n%s" % (len(bad), self.N, "\n".join(show(r) for r in bad[:3])))
        self.assertEqual({xc(r) for r in results}, {"BYPASS"})
        self.assertEqual(len({r.raw for r in results}), 1, "the answers differ")
        run = self.product_queries_since(st0)
        # One query was running when the others arrived; they shared the
        # next one, sent after they arrived (B2): two in all, never N.
        self.assertEqual(len(run), 2, "product queries for %d concurrent reads of one key: %r" % (self.N, run))

    def test_a_write_acknowledged_before_a_read_arrives_is_seen_while_an_older_read_runs(self):
        uid, _ = self.new_seller(server=self.server2)
        p = self.new_product(uid, server=self.server2)
        path = "/api/v1/products/%d" % p["id"]
        self.expect(self.GET(path), 200, "the product through the first instance")
        self.proxy.hold()
        out = {}
        try:
            first = threading.Thread(target=lambda: out.setdefault("old", self.GET(path)), daemon=True)
            st0, _ = self.proxy.counts()
            first.start()
            self.assertTrue(wait_until(lambda: self.product_queries_since(st0), 30.0), "the first read did not start")
            # The write goes through the second instance, straight to the
            # database, and is acknowledged while the first read is held.
            title = unique("После записи ")
            self.expect(self.call("PATCH", path, uid, {"title": title}, server=self.server2), 200, "PATCH")
            second = threading.Thread(target=lambda: out.setdefault("new", self.GET(path)), daemon=True)
            second.start()
            self.assertTrue(wait_until(lambda: flight_waiters(self.server.port) >= 1, 30.0),
                            "the second read does not wait")
        finally:
            self.proxy.release()
        first.join(60)
        second.join(60)
        new = out.get("new")
        self.expect(new, 200, "the read that arrived after the write")
        self.assertEqual(new.body["title"], title,
                         "a read that arrived after an acknowledged write got the result of an older query")
        self.expect(out.get("old"), 200, "the read that started before the write")
