"""Read replicas (S4, B2, B3, B5; docs/design.md "Read routing", docs/cache.md
"Replicas").

The class makes a real streaming replica of the test PostgreSQL
(tests/lib/pg.sh pg_tmp_replica: pg_basebackup -R into TEST_TMPDIR, a free
port) and delays it with recovery_min_apply_delay (ALTER SYSTEM + reload on
the replica) where a test needs it to lag. Two marketd instances share the
primary, the replica and one Redis. Nothing waits a fixed time: every test
polls for the state it needs (readiness, replay) and asserts outcomes, never
durations.

- which node served is read from /metrics (marketd_db_pool_queries_total{pool});
- the writer reads its own write at once through the *other* instance,
  sending only its bearer token and the cookie the write set, while the
  replica is delayed; another reader sees it once the replica replayed it;
- a cache fill made while the replica lags is not stored as fresh (B3);
- a replica beyond DB_REPLICA_MAX_LAG_MS is skipped; a stopped replica's
  reads go to the primary; a replica down at start: the server starts,
  /readyz shows it down, reads answer 200.
"""

import os
import re
import subprocess
import time
import uuid

import psycopg2

import harness
from harness import ServerTestCase, wait_until

JWT_SECRET = "replica-tests-secret-0123456789abcdef-0123456789abcdef"
PG_SH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib", "pg.sh")
POLL_TIMEOUT = 60.0  # s: generous bound for "eventually" on a loaded machine

from test_cache import token_for  # noqa: E402  (same token format)


def pg_sh(*args):
    cmd = 'source "%s" && "$@"' % PG_SH
    r = subprocess.run(["bash", "-c", cmd, "pg_sh"] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
    if r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (args[0], r.returncode, r.stdout.decode(errors="replace")))


class Replica:
    """A streaming replica of the test primary."""

    def __init__(self):
        self.dir = os.path.join(harness.TEST_TMPDIR, "pg-replica-%s" % uuid.uuid4().hex[:8])
        self.port = harness.free_port()
        self.dbname = os.environ.get("PGDATABASE", "marketd_test")

    @property
    def url(self):
        return "postgresql://postgres@127.0.0.1:%d/%s" % (self.port, self.dbname)

    def start(self):
        pg_sh("pg_tmp_replica", self.dir, self.port, os.environ.get("PGPORT", "5432"), "fsync=off",
              "max_connections=300")
        return self

    def stop(self):
        pg_sh("pg_tmp_stop", self.dir)

    def connect(self):
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=self.dbname,
                             connect_timeout=5)
        c.autocommit = True
        return c

    def query(self, sql, args=None):
        c = self.connect()
        try:
            with c.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            c.close()

    def set_delay(self, delay):
        c = self.connect()
        try:
            with c.cursor() as cur:
                cur.execute("ALTER SYSTEM SET recovery_min_apply_delay = %s", (delay,))
                cur.execute("SELECT pg_reload_conf()")
        finally:
            c.close()

    def caught_up(self):
        """The replica has replayed everything the primary has written now."""
        p = harness.db_connect()
        try:
            with p.cursor() as cur:
                cur.execute("SELECT pg_current_wal_insert_lsn()::text")
                target = cur.fetchone()[0]
        finally:
            p.close()
        return wait_until(lambda: self.query("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                             (target,))[0][0], POLL_TIMEOUT, 0.1)


def metric(port, name, labels):
    r = harness.request(port, "GET", "/metrics")
    pat = re.compile(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(labels)), re.M)
    m = pat.search(r.body.decode() if isinstance(r.body, bytes) else r.body)
    return float(m.group(1)) if m else None


def served(port, pool):
    return metric(port, "marketd_db_pool_queries_total", 'pool="%s"' % pool) or 0.0


def replica_state(port, i=0):
    r = harness.request(port, "GET", "/readyz")
    reps = r.body.get("replicas", []) if isinstance(r.body, dict) else []
    return reps[i] if len(reps) > i else None


class ReplicaCase(ServerTestCase):
    """A class with a streaming replica of its own (`cls.replica`), which
    its servers read from (DB_READ_REPLICA_URL), stopped with them."""

    start_redis = True
    replica = None

    @classmethod
    def setUpClass(cls):
        cls.replica = Replica().start()
        cls.server_env = {
            "JWT_SECRET": JWT_SECRET, "DB_POOL_SIZE": "4",
            "DB_READ_REPLICA_URL": cls.replica.url,
            # Large: a delayed replica stays in use (reads must avoid it by
            # LSN, not by lag); a test of ReplicaTests uses a small one.
            "DB_REPLICA_MAX_LAG_MS": "600000",
        }
        super().setUpClass()  # on failure it stops the replica too

    @classmethod
    def _stop_class_processes(cls, check):
        try:
            super()._stop_class_processes(check)
        finally:
            if cls.replica is not None:
                cls.replica.stop()
                cls.replica = None


class ReplicaTests(ReplicaCase):
    second_server = True

    def setUp(self):
        super().setUp()
        self.replica.set_delay("0")
        self.assertTrue(self.replica.caught_up(), "the replica never caught up with the primary")
        for s in (self.server, self.server2):
            self.assertTrue(wait_until(lambda: (replica_state(s.port) or {}).get("up") is True, POLL_TIMEOUT),
                            "replica never up in /readyz of %s: %r" % (s.name, replica_state(s.port)))

    def tearDown(self):
        self.replica.set_delay("0")
        super().tearDown()

    # -- helpers --------------------------------------------------------------

    def owned_product(self):
        p = self.dataset.active_products()[0]
        uid = self.dataset.seller(p["seller_id"])["user_id"]
        return p, uid

    def patch_product(self, port, pid, uid, title):
        r = harness.request(port, "PATCH", "/api/v1/products/%d" % pid, body={"title": title},
                            headers={"Authorization": "Bearer " + token_for(uid, JWT_SECRET)})
        self.assertEqual(r.status, 200, "PATCH product: %r" % (r,))
        return r

    def patch_seller(self, port, sid, uid, name):
        r = harness.request(port, "PATCH", "/api/v1/sellers/%d" % sid, body={"name": name},
                            headers={"Authorization": "Bearer " + token_for(uid, JWT_SECRET)})
        self.assertEqual(r.status, 200, "PATCH seller: %r" % (r,))
        return r

    @staticmethod
    def cookie_of(r):
        sc = r.headers.get("Set-Cookie") or ""
        m = re.match(r"(mkd_lsn=[^;]+)", sc)
        return m.group(1) if m else None

    def seller_name_in_list(self, port, sid, headers=None):
        r = harness.request(port, "GET", "/api/v1/sellers", params={"limit": 100}, headers=headers)
        self.assertEqual(r.status, 200, repr(r))
        for s in r.body["items"]:
            if s["id"] == sid:
                return s["name"]
        self.fail("seller %d not in the first page of /api/v1/sellers" % sid)

    def replica_seller_name(self, sid):
        return self.replica.query("SELECT name FROM sellers WHERE id = %s", (sid,))[0][0]

    # -- tests ------------------------------------------------------------------

    def test_reads_go_to_the_replica_when_in_sync(self):
        before_r, before_p = served(self.port, "replica0"), served(self.port, "primary")
        for _ in range(20):
            self.assertEqual(harness.request(self.port, "GET", "/api/v1/sellers").status, 200)
        after_r = served(self.port, "replica0")
        self.assertGreaterEqual(after_r - before_r, 20,
                                "uncached DB_READ reads should run on the in-sync replica "
                                "(replica %s -> %s, primary %s)" % (before_r, after_r, before_p))
        # Lag is 0 once the replica has replayed what the primary had at
        # the last poll; background jobs write on the primary now and then,
        # so a single sample may catch it a moment behind: wait for 0.
        states = []
        caught_up = wait_until(lambda: states.append(replica_state(self.port)) or states[-1]["lag_ms"] == 0,
                               POLL_TIMEOUT, interval=0.1)
        st = states[-1]
        self.assertTrue(caught_up, "the in-sync replica never reported lag 0: %r" % st)
        self.assertRegex(st["replay_lsn"], r"^[0-9A-F]+/[0-9A-F]+$")
        self.assertEqual(set(st["in_pool"]), {"busy", "idle", "connecting"})

    def test_writer_reads_own_write_through_another_instance_while_the_replica_lags(self):
        s = self.dataset.sellers[0]
        old = self.replica_seller_name(s["id"])
        self.replica.set_delay("1h")
        new = "Replica-" + uuid.uuid4().hex[:8]
        w = self.patch_seller(self.port, s["id"], s["user_id"], new)
        cookie = self.cookie_of(w)
        self.assertIsNotNone(cookie, "the write set no mkd_lsn cookie: %r" % (w.headers.items(),))
        self.assertIn("HttpOnly", w.headers.get("Set-Cookie"))
        headers = {"Authorization": "Bearer " + token_for(s["user_id"], JWT_SECRET), "Cookie": cookie}
        # The writer, through the other instance: its write at once, every time.
        for _ in range(5):
            self.assertEqual(self.seller_name_in_list(self.server2.port, s["id"], headers), new)
            self.assertEqual(harness.request(self.server2.port, "GET", "/api/v1/sellers/%d" % s["id"],
                                             headers=headers).body["name"], new)
        # Someone else, while the replica has not replayed it (checked before
        # and after the read): the replica's answer.
        self.assertEqual(self.replica_seller_name(s["id"]), old)
        anon = self.seller_name_in_list(self.server2.port, s["id"])
        if self.replica_seller_name(s["id"]) == old:
            self.assertEqual(anon, old, "an anonymous uncached read should be served by the lagging replica")
        # ... and the write once the replica has replayed it.
        self.replica.set_delay("0")
        self.assertTrue(wait_until(lambda: self.seller_name_in_list(self.server2.port, s["id"]) == new,
                                   POLL_TIMEOUT), "the other reader never saw the write")

    def test_no_stale_cache_entry_from_a_lagging_replica(self):
        p, uid = self.owned_product()
        path = "/api/v1/products/%d" % p["id"]
        # A miss under an epoch without an LSN reads the primary and asks for
        # an epoch carrying one; wait for it, or the test proves nothing.
        def epoch_has_lsn():
            harness.request(self.server2.port, "GET", path)
            v = self.redis.call("GET", "{t}:epoch")
            v = v.decode() if isinstance(v, bytes) else (v or "")
            return re.match(r"^[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$", v) is not None
        self.assertTrue(wait_until(epoch_has_lsn, POLL_TIMEOUT), "the epoch never got an LSN")
        # Warm the entry on both instances.
        for s in (self.server, self.server2):
            self.assertEqual(harness.request(s.port, "GET", path).status, 200)
            self.assertEqual(harness.request(s.port, "GET", path).headers.get("X-Cache"), "HIT")
        self.replica.set_delay("1h")
        new = "Реплика " + uuid.uuid4().hex[:8]
        self.patch_product(self.port, p["id"], uid, new)
        self.assertNotEqual(self.replica.query("SELECT title FROM products WHERE id = %s", (p["id"],))[0][0], new)
        # Anonymous readers (no cookie) on both instances: the fill after the
        # write must not come from the lagging replica, and what it stores
        # must be the new title (a HIT afterwards).
        for s in (self.server2, self.server, self.server2):
            r = harness.request(s.port, "GET", path)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body["title"], new, "X-Cache %s on %s" % (r.headers.get("X-Cache"), s.name))
        self.assertEqual(harness.request(self.server2.port, "GET", path).headers.get("X-Cache"), "HIT")
        self.assertNotEqual(self.replica.query("SELECT title FROM products WHERE id = %s", (p["id"],))[0][0], new,
                            "the replica replayed early: the test proved nothing")

    def test_replica_beyond_max_lag_is_skipped(self):
        srv = self.new_server(env=dict(self.server_env, DB_REPLICA_MAX_LAG_MS="500"), name="small-lag").start()
        self.assertTrue(wait_until(lambda: (replica_state(srv.port) or {}).get("up") is True, POLL_TIMEOUT))
        s = self.dataset.sellers[1]
        self.replica.set_delay("1h")
        new = "Lagging-" + uuid.uuid4().hex[:8]
        self.patch_seller(self.port, s["id"], s["user_id"], new)
        self.assertTrue(wait_until(lambda: (replica_state(srv.port) or {}).get("state") == "lagging",
                                   POLL_TIMEOUT), "replica not reported lagging: %r" % replica_state(srv.port))
        self.assertFalse(replica_state(srv.port)["up"])
        before = served(srv.port, "replica0")
        # Anonymous reads without the cookie: from the primary, so new.
        self.assertEqual(self.seller_name_in_list(srv.port, s["id"]), new)
        self.assertEqual(served(srv.port, "replica0"), before, "a lagging replica served a read")
        self.assertEqual(metric(srv.port, "marketd_db_replica_up", 'replica="replica0"'), 0)
        srv.stop()

    def test_stopped_replica_reads_go_to_the_primary(self):
        try:
            self.replica.stop()
            for _ in range(10):
                r = harness.request(self.server2.port, "GET", "/api/v1/sellers")
                self.assertEqual(r.status, 200, "a read while the replica stops: %r" % (r,))
            self.assertTrue(wait_until(lambda: replica_state(self.server2.port)["up"] is False, POLL_TIMEOUT))
            self.assertEqual(replica_state(self.server2.port)["state"], "down")
            r = harness.request(self.server2.port, "GET", "/readyz")
            self.assertEqual(r.status, 200, "a replica down must not make the instance unready: %r" % (r,))
            for _ in range(10):
                self.assertEqual(harness.request(self.server2.port, "GET", "/api/v1/sellers").status, 200)
        finally:
            self.replica.start()

    def test_replica_down_at_start(self):
        url = "postgresql://postgres:s3cret@127.0.0.1:%d/%s" % (harness.closed_port(), self.replica.dbname)
        srv = self.new_server(env=dict(self.server_env, DB_READ_REPLICA_URL=url), name="replica-down").start()
        r = harness.request(srv.port, "GET", "/readyz")
        self.assertEqual(r.status, 200, repr(r))
        st = r.body["replicas"][0]
        self.assertFalse(st["up"], st)
        self.assertNotIn("s3cret", st["url"])
        self.assertIn("127.0.0.1", st["url"])
        self.assertEqual(harness.request(srv.port, "GET", "/api/v1/sellers").status, 200)
        self.assertEqual(harness.request(srv.port, "GET", "/api/v1/cities").status, 200)
        self.assertIn("replica", srv.log_text())
        srv.stop()


class PromotedReplicaTests(ReplicaCase):
    """A replica that is promoted (a failover elsewhere, an operator's
    mistake) is no longer a copy of the primary: its writes diverge. It must
    leave the read rotation — /readyz "promoted", a warning in the log — and
    every read, the writer's own included, goes to the primary (issue 12
    "Bad input": continue in degraded mode with a clear log line)."""

    def test_promoted_replica_leaves_the_rotation(self):
        self.assertTrue(self.replica.caught_up(), "the replica never caught up with the primary")
        self.assertTrue(wait_until(lambda: (replica_state(self.port) or {}).get("up") is True, POLL_TIMEOUT),
                        "replica never up: %r" % (replica_state(self.port),))
        self.assertTrue(self.replica.query("SELECT pg_promote(true, 60)")[0][0], "pg_promote failed")
        self.assertTrue(wait_until(lambda: (replica_state(self.port) or {}).get("state") == "promoted",
                                   POLL_TIMEOUT), "never reported promoted: %r" % (replica_state(self.port),))
        self.assertFalse(replica_state(self.port)["up"])
        r = harness.request(self.port, "GET", "/readyz")
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(r.body["status"], "degraded", r.body)
        self.assertIn("no longer in recovery", self.server.log_text())

        # A write, then reads: they see it, and the promoted node (which
        # never got it) served none of them.
        p = self.dataset.active_products()[0]
        sid = p["seller_id"]
        uid = self.dataset.seller(sid)["user_id"]
        name = "Promoted-%s" % uuid.uuid4().hex[:8]
        r = harness.request(self.port, "PATCH", "/api/v1/sellers/%d" % sid, body={"name": name},
                            headers={"Authorization": "Bearer " + token_for(uid, JWT_SECRET)})
        self.assertEqual(r.status, 200, repr(r))
        before = served(self.port, "replica0")
        for _ in range(10):
            r = harness.request(self.port, "GET", "/api/v1/sellers/%d" % sid)
            self.assertEqual(r.status, 200, repr(r))
            self.assertEqual(r.body["name"], name)
        self.assertNotEqual(self.replica.query("SELECT name FROM sellers WHERE id = %s", (sid,))[0][0], name)
        self.assertEqual(served(self.port, "replica0"), before, "the promoted node served a read")
