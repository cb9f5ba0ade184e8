"""The outage store (src/api/outage.h; docs/cache.md "While Redis is out";
issue 11, B2, B4, B5).

While Redis is out, a read may take a body stored by an earlier read of the
same key only after a stamp — pg_current_snapshot() of a probe sent after
the read arrived — equals the stamp the body was stored under. Redis is
killed for the whole class; the first instance reaches PostgreSQL through
the counting, holding proxy of test_cache, the second directly (it makes
the writes). What is tested:

- repeated reads of a key cost one query, then only stamp probes;
- a write through the other instance, and a write made outside marketd,
  are seen by the very next read (B2), and counted as a stale check;
- a write acknowledged while a probe is held back: the read that arrived
  after it never takes the body of the probe that ran before it;
- OUTAGE_STORE_MB=0 turns the store off (every repeat queries);
- concurrent product details share `= ANY(...)` statements (src/api/batch.h)
  and each gets its own product or its own 404.
"""

import http.client
import re
import threading

import harness
from harness import db_connect, wait_until
from test_cache import RedisOutCase, Resp, fetch, show, unique, xc


def outage_metrics(port):
    """The marketd_outage_* and marketd_read_batch* series of /metrics, by
    name (and result)."""
    text = fetch(port, "GET", "/metrics").raw.decode("utf-8", "replace")
    out = {}
    for m in re.finditer(r'^(marketd_outage_\w+|marketd_read_batch\w+)(?:\{result="(\w+)"\})? (\d+)$', text, re.M):
        out[m.group(1) + ("." + m.group(2) if m.group(2) else "")] = int(m.group(3))
    return out


class OutageCase(RedisOutCase):
    """Redis killed after start; the first instance behind a DbProxy, with
    the store on."""

    outage_store_mb = "64"

    def own_product(self):
        """A new seller's new product, made through the second instance:
        (the seller's user id, the product, its path)."""
        uid, _ = self.new_seller(server=self.server2)
        p = self.new_product(uid, server=self.server2)
        return uid, p, "/api/v1/products/%d" % p["id"]

    def queries_since(self, mark, table):
        return [q for q in self.proxy.sql_since(mark) if "FROM " + table in q]

    def probes_since(self, mark):
        return [q for q in self.proxy.sql_since(mark) if "pg_current_snapshot" in q]

    def read(self, path, what):
        r = self.GET(path)
        self.expect(r, 200, what)
        self.assertEqual(xc(r), "BYPASS", "%s: Redis is down, so X-Cache is BYPASS\n%s" % (what, show(r)))
        return r

    def stored(self, path, what):
        """Reads path until a read is answered from the store (a current
        check): the first read may precede the first stamp, so its body
        is not stored (bounded)."""
        def current():
            before = outage_metrics(self.server.port).get("marketd_outage_store_checks_total.current", 0)
            self.read(path, what)
            return outage_metrics(self.server.port).get("marketd_outage_store_checks_total.current", 0) > before
        self.assertTrue(wait_until(current, 30.0, interval=0.1), "%s: never answered from the store" % what)


class OutageStoreTests(OutageCase):

    def test_repeated_reads_cost_one_query_then_only_stamp_probes(self):
        path = "/api/v1/products?city_id=%d&sort=newest&limit=5" % self.dataset.ids["msk"]
        self.stored(path, "the list")
        mark, _ = self.proxy.counts()
        m0 = outage_metrics(self.server.port)
        bodies = {self.read(path, "repeat %d" % i).raw for i in range(10)}
        self.assertEqual(len(bodies), 1, "the repeats answered different bodies")
        self.assertEqual(self.queries_since(mark, "products"), [],
                         "repeats of a stored, current key queried the products")
        self.assertGreaterEqual(len(self.probes_since(mark)), 10,
                                "each repeat must wait for a stamp taken after it arrived")
        m1 = outage_metrics(self.server.port)
        self.assertEqual(m1["marketd_outage_store_checks_total.current"]
                         - m0["marketd_outage_store_checks_total.current"], 10)
        self.assertGreaterEqual(m1["marketd_outage_probes_total"] - m0["marketd_outage_probes_total"], 10)
        self.assertGreater(m1["marketd_outage_store_entries"], 0)
        self.assertGreater(m1["marketd_outage_store_bytes"], 0)

    def test_a_write_through_another_instance_is_seen_by_the_next_read(self):
        uid, p, path = self.own_product()
        self.stored(path, "the product")
        stale0 = outage_metrics(self.server.port)["marketd_outage_store_checks_total.stale"]
        title = unique("Новое название ")
        self.expect(self.call("PATCH", path, uid, {"title": title}, server=self.server2), 200, "PATCH")
        self.assertEqual(self.read(path, "after the write").body["title"], title,
                         "a read after an acknowledged write got the stored body from before it (B2)")
        self.assertGreater(outage_metrics(self.server.port)["marketd_outage_store_checks_total.stale"], stale0)
        # And the new body is stored and served in its turn.
        self.stored(path, "the product after the write")
        self.assertEqual(self.read(path, "again").body["title"], title)

    def test_a_write_made_outside_marketd_is_seen_by_the_next_read(self):
        uid, p, path = self.own_product()
        self.stored(path, "the product")
        title = unique("Из psql ")
        self.db("UPDATE products SET title = %s WHERE id = %s", (title, p["id"]))
        self.assertEqual(self.read(path, "after the UPDATE").body["title"], title,
                         "a commit no marketd knew of did not change the stamp")

    def test_a_read_after_a_write_never_takes_a_stamp_taken_before_it(self):
        uid, p, path = self.own_product()
        self.stored(path, "the product")
        out = {}
        self.proxy.hold()
        try:
            mark, _ = self.proxy.counts()
            first = threading.Thread(target=lambda: out.setdefault("old", self.GET(path)), daemon=True)
            first.start()
            # The first read's probe ran at the database (before the write);
            # its answer is held.
            self.assertTrue(wait_until(lambda: self.probes_since(mark), 30.0), "the first read sent no probe")
            title = unique("После записи ")
            self.expect(self.call("PATCH", path, uid, {"title": title}, server=self.server2), 200, "PATCH")
            second = threading.Thread(target=lambda: out.setdefault("new", self.GET(path)), daemon=True)
            second.start()
            self.assertTrue(wait_until(lambda: outage_metrics(self.server.port).get(
                "marketd_outage_stamp_waiters", 0) >= 2, 30.0), "the second read does not wait for a stamp")
        finally:
            self.proxy.release()
        first.join(60)
        second.join(60)
        self.expect(out.get("old"), 200, "the read that arrived before the write")
        new = out.get("new")
        self.expect(new, 200, "the read that arrived after the write")
        self.assertEqual(new.body["title"], title,
                         "a read that arrived after an acknowledged write took a stamp from before it")


class OutageStoreOffTests(OutageCase):
    outage_store_mb = "0"

    def test_zero_turns_the_store_off(self):
        path = "/api/v1/products?city_id=%d&sort=price_desc&limit=4" % self.dataset.ids["msk"]
        mark, _ = self.proxy.counts()
        for i in range(3):
            self.read(path, "read %d" % i)
        self.assertEqual(len(self.queries_since(mark, "products")), 3, "without the store every repeat queries")
        self.assertEqual(self.probes_since(mark), [])
        m = outage_metrics(self.server.port)
        self.assertEqual(m["marketd_outage_store_entries"], 0)
        self.assertEqual(m["marketd_outage_probes_total"], 0)


class OutageBatchTests(OutageCase):
    """Product details read while Redis is out share statements
    (src/api/batch.h): ids that arrive while one statement runs go together
    in the next, `= ANY($1::int8[])`, and each read still gets exactly its
    own product, or its own 404."""

    N = 40

    def test_concurrent_details_share_statements_and_each_gets_its_own(self):
        uid, _ = self.new_seller(server=self.server2)
        pids = [self.new_product(uid, server=self.server2, title=unique("Партия %d " % i))["id"]
                for i in range(self.N)]
        missing = max(pids) + 1000
        paths = ["/api/v1/products/%d" % p for p in pids] + ["/api/v1/products/%d" % missing]
        want = {path: self.expect(self.GET(path, server=self.server2), 200, "through the other instance")
                for path in paths[:-1]}
        m0 = outage_metrics(self.server.port)
        # Connected first, then every request sent at once: they arrive
        # within a few milliseconds, so most gather for one statement.
        conns = [http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60) for _ in paths]
        for c in conns:
            c.connect()
        mark, _ = self.proxy.counts()
        self.proxy.hold()  # the statements are held: the reads cannot finish one by one
        out = {}
        try:
            for c, path in zip(conns, paths):
                c.request("GET", path)
            self.assertTrue(wait_until(lambda: self.queries_since(mark, "products"), 30.0), "no statement sent")
        finally:
            self.proxy.release()

        def answer(c, path):
            resp = c.getresponse()
            raw = resp.read()
            out[path] = Resp(resp.status, resp.headers, raw, harness.decode_body(resp.headers, raw), 0)

        threads = [threading.Thread(target=answer, args=(c, p), daemon=True) for c, p in zip(conns, paths)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in conns:
            c.close()
        for path in paths[:-1]:
            got = self.expect(out.get(path), 200, path)
            self.assertEqual(got, want[path], "%s: the batch answered another product's body" % path)
        r = out.get(paths[-1])
        self.expect(r, 404, "a missing id in a batch")
        self.assertEqual(r.body.get("detail"), "product %d not found" % missing)
        statements = [q for q in self.queries_since(mark, "products") if "ANY(" in q]
        self.assertTrue(statements, "no batched statement ran: %r" % self.queries_since(mark, "products"))
        self.assertLess(len(self.queries_since(mark, "products")), len(paths) // 2,
                        "%d reads by id took %d statements" % (len(paths), len(self.queries_since(mark, "products"))))
        m1 = outage_metrics(self.server.port)
        self.assertGreaterEqual(m1["marketd_read_batched_total"] - m0["marketd_read_batched_total"], len(paths) - 2)

    def test_a_batched_read_after_a_write_sees_it(self):
        uid, p, path = self.own_product()
        self.read(path, "before")
        title = unique("Пакетом ")
        self.expect(self.call("PATCH", path, uid, {"title": title}, server=self.server2), 200, "PATCH")
        self.assertEqual(self.read(path, "after").body["title"], title)

    def test_a_stuck_database_answers_batched_reads_503_not_500(self):
        """B5 with batching: a PREPARE cancelled by the statement timeout
        (it waited on a lock) and the batches pipelined behind it, which
        find their statement unprepared, are the database failing — every
        read is answered 503 + Retry-After, none 500, none left hanging."""
        s = self.new_server(env=dict(self.server_env, DATABASE_URL=harness.DATABASE_URL, DB_POOL_SIZE=1,
                                     DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT_MS=300, DB_STATEMENT_TIMEOUT_MS=1000),
                            name="stuck").start()
        paths = ["/api/v1/products/%d" % p["id"] for p in self.dataset.products][:30]
        out = {}
        lock = db_connect(autocommit=False)
        try:
            cur = lock.cursor()
            cur.execute("SET lock_timeout = 0")
            cur.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            threads = [threading.Thread(target=lambda p=p: out.setdefault(p, fetch(s.port, "GET", p, timeout=60)),
                                        daemon=True) for p in paths]
            for t in threads:
                t.start()
            for t in threads:
                t.join(45)
        finally:
            lock.rollback()
            lock.close()
        hung = [p for p in paths if p not in out]
        self.assertFalse(hung, "no answer within 45 s with the database stuck: %s" % hung)
        statuses = sorted({out[p].status for p in paths})
        self.assertEqual(statuses, [503], "with the database stuck: %s\n%s"
                         % (statuses, "\n".join(show(out[p]) for p in paths if out[p].status != 503)[:3000]))
        for p in paths:
            ra = out[p].headers.get("Retry-After")
            self.assertTrue(ra and ra.strip().isdigit(), "%s: 503 without a numeric Retry-After: %r" % (p, ra))
        for p in paths:
            self.assertEqual(self.GET(p, server=s).status, 200, "%s after the lock was released" % p)
        s.stop()
