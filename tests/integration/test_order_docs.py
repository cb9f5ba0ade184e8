"""Stored order documents (issue 11 deliverable 3; S6, S12, B2;
migrations/0009_order_docs.sql):

- orders.doc is, byte for byte, marketd_order_json(o) after POST /orders,
  after every transition (PATCH) and after a cancel, and after a plain SQL
  UPDATE of the order; an UPDATE or DELETE of items forgets it (NULL);
- GET /orders and GET /orders/{id} answer the same bytes whether the docs
  are stored or NULL (the fallback computes them), for every filter and
  page of the keyset cursor;
- `marketd backfill order-docs` fills NULL docs with exactly
  marketd_order_json(o), leaves stored ones alone, and a second run writes
  nothing (resumable, idempotent).
"""

import datetime as dt
import json

import harness
from harness import db_connect, fmt_resp
from test_cli import cli
from test_orders import STATUSES, UTC, OrderCase, rfc3339


class OrderDocTests(OrderCase):
    """Orders made over the API and, with chosen created_at values over
    several months, with SQL (doc NULL, as before 0009)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seller_uid, cls.seller = cls.new_seller("Документы")
        cls.products = sorted(cls.new_product(cls.seller, price=50 + i, stock=1000, title=t)
                              for i, t in enumerate(['Кавычки "ёлочки"', "Tab\tи \\", "Простое"]))
        cls.buyer = cls.new_user("Покупатель документов")
        now = cls.db_one("SELECT now()")[0].astimezone(UTC)
        cls.mid, cls.late = rfc3339(now - dt.timedelta(days=60)), rfc3339(now - dt.timedelta(days=5))
        conn = db_connect(autocommit=False)
        try:
            cur = conn.cursor()
            for i in range(15):
                created = now - dt.timedelta(days=11 * i + 1, microseconds=i)
                cur.execute(
                    """INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)
                       VALUES (marketd_order_id(%s, nextval('orders_id_seq')), %s, %s, %s, %s, 'RUB', %s, %s)
                       RETURNING id""",
                    (created, cls.buyer, cls.seller, STATUSES[i % 5], 0, created, created))
                oid = cur.fetchone()[0]
                for k, pid in enumerate(cls.products[: 1 + i % 3]):
                    cur.execute("""INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)
                                   SELECT %s, %s, p.id, p.title, p.price, %s FROM products p WHERE p.id = %s""",
                                (oid, created, 1 + k, pid))
            conn.commit()
        finally:
            conn.close()

    # -- helpers ------------------------------------------------------------

    def doc_and_json(self, oid):
        """(stored doc, marketd_order_json(o)) of one order."""
        return self.db_one("SELECT o.doc, marketd_order_json(o) FROM orders o WHERE o.id = %s", (oid,))

    def assertDocStored(self, oid, what):
        doc, want = self.doc_and_json(oid)
        self.assertIsNotNone(doc, "%s: order %d has no stored doc" % (what, oid))
        self.assertEqual(doc, want, "%s: order %d: stored doc differs from marketd_order_json" % (what, oid))
        return doc

    def seller_docs(self):
        return dict(self.db("SELECT o.id, o.doc FROM orders o WHERE o.seller_id = %s", (self.seller,)))

    def raw_pages(self, uid, params):
        """Every page of GET /orders as the exact bytes of its items."""
        out, cursor = [], None
        for _ in range(50):
            q = dict(params, cursor=cursor) if cursor else params
            r = self.call("GET", harness.path_with_query("/api/v1/orders", q), uid)
            self.assertList(r, repr(q))
            text = r.raw.decode("utf-8")
            pos, dec = len('{"items":['), json.JSONDecoder()
            for _item in r.body["items"]:
                _, end = dec.raw_decode(text, pos)
                out.append(text[pos:end])
                pos = end + 1
            cursor = r.body["next_cursor"]
            if cursor is None:
                return out
        self.fail("%r: more than 50 pages" % params)

    def every_list(self):
        """The answers of a set of lists (both roles, a status, bounds, pages of 4)."""
        mid, late = self.mid, self.late
        got = {}
        for role, uid in (("buyer", self.buyer), ("seller", self.seller_uid)):
            for status in (None, "new"):
                for bounds in ({}, {"from": mid}, {"to": late}, {"from": mid, "to": late}):
                    params = dict(bounds, role=role, limit=4)
                    if status:
                        params["status"] = status
                    got[json.dumps(params, sort_keys=True)] = self.raw_pages(uid, params)
        return got

    # -- tests --------------------------------------------------------------

    def test_doc_follows_create_transitions_and_cancel(self):
        """POST /orders stores its answer; PATCH and cancel recompute it."""
        placed = self.place_ok(self.buyer, [(p, 2) for p in self.products], "POST /orders")
        oid = placed["id"]
        doc = self.assertDocStored(oid, "after POST /orders")
        self.assertEqual(json.loads(doc), placed, "the stored doc is the answer")
        for status in ("confirmed", "shipped", "delivered"):
            r = self.call("PATCH", "/api/v1/orders/%d" % oid, self.seller_uid, {"status": status})
            self.assertEqual(r.status, 200, fmt_resp(r))
            self.assertEqual(self.assertDocStored(oid, "after PATCH " + status), r.raw.decode("utf-8"),
                             "PATCH %s answers the stored doc" % status)
        second = self.place_ok(self.buyer, [(self.products[0], 1)], "POST /orders (to cancel)")["id"]
        r = self.call("POST", "/api/v1/orders/%d/cancel" % second, self.buyer)
        self.assertEqual(r.status, 200, fmt_resp(r))
        self.assertEqual(self.assertDocStored(second, "after cancel"), r.raw.decode("utf-8"))
        got = self.get_order(self.buyer, second)
        self.assertEqual(got.raw.decode("utf-8"), r.raw.decode("utf-8"), "GET /orders/{id} after cancel")

    def test_sql_updates_keep_doc_exact_and_item_changes_forget_it(self):
        """Any UPDATE of an order that does not write doc recomputes it;
        writing doc (NULL) is kept; changed items set it back to NULL."""
        oid = self.place_ok(self.buyer, [(self.products[1], 1)], "POST /orders")["id"]
        self.db("UPDATE orders SET updated_at = updated_at + interval '1 second' WHERE id = %s", (oid,))
        self.assertDocStored(oid, "after a plain UPDATE")
        self.db("UPDATE orders SET doc = NULL WHERE id = %s", (oid,))
        self.assertIsNone(self.doc_and_json(oid)[0], "an explicit doc = NULL is kept")
        self.db("UPDATE orders SET status = 'confirmed' WHERE id = %s", (oid,))
        self.assertDocStored(oid, "after UPDATE status (doc was NULL)")
        self.db("UPDATE order_items SET quantity = quantity + 1 WHERE order_id = %s", (oid,))
        self.assertIsNone(self.doc_and_json(oid)[0], "changed items forget the stored doc")
        r = self.get_order(self.buyer, oid)
        self.assertEqual(r.status, 200, fmt_resp(r))
        self.assertEqual(r.raw.decode("utf-8"), self.doc_and_json(oid)[1], "GET /orders/{id} computes it")

    def test_lists_are_the_same_bytes_with_and_without_docs(self):
        """Every list and page: stored docs, then all docs NULL, then
        backfilled: the same bytes, each item marketd_order_json(o)."""
        self.db("UPDATE orders o SET doc = marketd_order_json(o) WHERE o.seller_id = %s", (self.seller,))
        stored = self.every_list()
        want = dict(self.db("SELECT o.id, marketd_order_json(o) FROM orders o WHERE o.seller_id = %s",
                            (self.seller,)))
        seen = set()
        for key, items in stored.items():
            for raw in items:
                oid = json.loads(raw)["id"]
                seen.add(oid)
                self.assertEqual(raw, want[oid], "%s: order %d" % (key, oid))
        self.assertEqual(seen, set(want), "every order was listed")
        self.db("UPDATE orders SET doc = NULL WHERE seller_id = %s", (self.seller,))
        self.assertEqual(set(self.seller_docs().values()), {None})
        computed = self.every_list()
        for key in stored:
            self.assertEqual(computed[key], stored[key], "%s: NULL docs answer other bytes" % key)
        oid = min(want)
        r = self.get_order(self.seller_uid, oid)
        self.assertEqual(r.raw.decode("utf-8"), want[oid], "GET /orders/{id} with a NULL doc")

    def test_backfill_fills_null_docs_and_is_idempotent(self):
        """`marketd backfill order-docs` stores exactly marketd_order_json(o)
        in every NULL doc, and a second run writes nothing."""
        self.db("UPDATE orders SET doc = NULL WHERE seller_id = %s", (self.seller,))
        # A stored doc is not rewritten: a marker value survives the run.
        marker = self.db_one("SELECT min(id) FROM orders WHERE seller_id = %s", (self.seller,))[0]
        self.db("UPDATE orders SET doc = 'marker' WHERE id = %s", (marker,))
        code, out, err = cli(["backfill", "order-docs", "--batch", "100"])
        self.assertEqual(code, 0, "backfill failed:\n%s\n%s" % (out, err))
        self.assertIn("order-docs: done", err)
        docs = self.seller_docs()
        self.assertEqual(docs.pop(marker), "marker", "a stored doc was overwritten")
        self.assertEqual(self.db_one("SELECT count(*) FROM orders WHERE doc IS NULL")[0], 0, err)
        bad = self.db("SELECT o.id FROM orders o WHERE o.doc IS DISTINCT FROM marketd_order_json(o)"
                      " AND o.id <> %s", (marker,))
        self.assertEqual(bad, [], "backfilled docs that differ from marketd_order_json")
        code, out, err = cli(["backfill", "order-docs"])
        self.assertEqual(code, 0, err)
        self.assertIn("order-docs: done, 0 rows", err, "a second run wrote rows")
        code, out, err = cli(["backfill", "order-docs", "--batch", "1"])
        self.assertEqual(code, 2, "--batch below its bound is refused:\n%s" % err)
        # --months 1: the current month only; the marker order is months old.
        self.db("UPDATE orders SET doc = NULL WHERE id = %s", (marker,))
        code, out, err = cli(["backfill", "order-docs", "--months", "1"])
        self.assertEqual(code, 0, err)
        self.assertIsNone(self.doc_and_json(marker)[0], "--months 1 went past the current month")
        code, out, err = cli(["backfill", "order-docs"])
        self.assertEqual(code, 0, err)
        self.assertDocStored(marker, "a resumed run")
