"""The order history in the cache (GET /orders; issue 11 deliverable 3; S9,
S10, B2, B3).

First pages of a user's history are cached in Redis like any list, under a
key that names the user, the role and the normalised filters, with the tags
orders:buyer|seller:<user> and "orders" (src/cache/tags.h). Every order
write changes the tags of its buyer and of its seller's user; retention
changes "orders". The answers stay what api.md says for a private GET: no
ETag, X-Cache or Cache-Control.

- OrderHistoryCacheTests: two instances sharing one Redis. Hits are counted
  by marketd_cache_requests_total; a write through one instance shows in
  the next read through the other, for the buyer and the seller, for a new
  order and for each status change; users never see each other's entries.
- HistoryRetentionCacheTests: a month dropped by ORDER_RETENTION_MONTHS
  leaves the cached histories that showed it.
"""

import unittest

import harness
from harness import Server, db_query as db_exec, wait_until
from test_cache import cache_metrics
from test_orders import OrderCase, token_for, unique

PRIVATE_HEADERS = ("ETag", "X-Cache", "Cache-Control")


class HistoryCase(OrderCase):

    def history(self, uid, params=None, port=None):
        r = self.call("GET", harness.path_with_query("/api/v1/orders", params), uid, port=port)
        return self.assertJson(r, 200, "GET /orders %r as user %s" % (params, uid)), r

    def ids(self, uid, params=None, port=None):
        return [o["id"] for o in self.history(uid, params, port)[0]["items"]]

    def status_of(self, uid, oid, params=None, port=None):
        body, _ = self.history(uid, params, port)
        return next((o["status"] for o in body["items"] if o["id"] == oid), None)

    def hits_during(self, port, fn):
        """(fn's result, the cache results it added on the instance at port)."""
        before = cache_metrics(port)
        out = fn()
        after = cache_metrics(port)
        return out, {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


class OrderHistoryCacheTests(HistoryCase):

    start_redis = True
    second_server = True

    def setUp(self):
        super().setUp()
        self.seller_uid, self.seller = self.new_seller(unique("Лавка "))
        self.product = self.new_product(self.seller, stock=100)

    def test_a_repeated_history_is_a_hit_without_cache_headers(self):
        buyer = self.new_user()
        self.place_ok(buyer, [(self.product, 1)])
        (first, r1), d1 = self.hits_during(self.port, lambda: self.history(buyer))
        (again, r2), d2 = self.hits_during(self.port, lambda: self.history(buyer))
        self.assertEqual(d1, {"miss": 1}, "the first read fills the entry")
        self.assertEqual(d2, {"hit": 1}, "the same read again is a hit")
        self.assertEqual(r1.raw, r2.raw, "a hit answers the bytes of the fill")
        self.assertEqual(len(first["items"]), 1)
        for r in (r1, r2):
            for h in PRIVATE_HEADERS:
                self.assertIsNone(r.headers.get(h), "a private GET carries no %s (api.md)" % h)

    def test_users_never_see_each_others_entries(self):
        a, b = self.new_user(), self.new_user()
        oa = self.place_ok(a, [(self.product, 1)])["id"]
        ob = self.place_ok(b, [(self.product, 2)])["id"]
        params = {"from": "2000-01-01", "limit": "5"}
        for uid, own in ((a, oa), (b, ob), (a, oa), (b, ob)):
            self.assertEqual(self.ids(uid, params), [own], "user %s's history" % uid)
        # The seller's view of the same two orders is its own entry too.
        self.assertEqual(sorted(self.ids(self.seller_uid, dict(params, role="seller"))), sorted([oa, ob]))
        self.assertEqual(self.ids(self.seller_uid, params), [], "the seller's user bought nothing")

    def test_a_new_order_shows_through_the_other_instance_at_once(self):
        buyer = self.new_user()
        first = self.place_ok(buyer, [(self.product, 1)])["id"]
        seller_view = {"role": "seller"}
        for _ in range(2):  # cached on the second instance (the second read is a hit)
            self.assertEqual(self.ids(buyer, port=self.server2.port), [first])
            self.assertIn(first, self.ids(self.seller_uid, seller_view, port=self.server2.port))
        second = self.place_ok(buyer, [(self.product, 1)])["id"]
        self.assertEqual(self.ids(buyer, port=self.server2.port), [second, first],
                         "B2: the buyer's next read, through the other instance, shows the new order")
        self.assertEqual(self.ids(self.seller_uid, seller_view, port=self.server2.port)[:2], [second, first],
                         "B2: so does the seller's")

    def test_status_changes_show_to_buyer_and_seller(self):
        buyer = self.new_user()
        oid = self.place_ok(buyer, [(self.product, 1)])["id"]
        seller_view = {"role": "seller"}
        p1, p2 = self.port, self.server2.port
        for port in (p1, p2, p1, p2):
            self.assertEqual(self.status_of(buyer, oid, port=port), "new")
            self.assertEqual(self.status_of(self.seller_uid, oid, seller_view, port=port), "new")
        r = self.call("PATCH", "/api/v1/orders/%d" % oid, self.seller_uid, {"status": "confirmed"}, port=p1)
        self.assertJson(r, 200, "PATCH confirmed")
        self.assertEqual(self.status_of(buyer, oid, port=p2), "confirmed", "the buyer sees the seller's change")
        self.assertEqual(self.status_of(self.seller_uid, oid, seller_view, port=p2), "confirmed")
        # Cached again, then the buyer cancels through the other instance.
        self.assertEqual(self.status_of(self.seller_uid, oid, seller_view, port=p1), "confirmed")
        r = self.call("POST", "/api/v1/orders/%d/cancel" % oid, buyer, port=p2)
        self.assertJson(r, 200, "cancel")
        self.assertEqual(self.status_of(self.seller_uid, oid, seller_view, port=p1), "cancelled",
                         "the seller sees the buyer's cancel")
        self.assertEqual(self.status_of(buyer, oid, port=p1), "cancelled")
        # A status filter is an entry of its own, and it is told too.
        self.assertEqual(self.ids(buyer, {"status": "new"}), [])
        self.assertEqual(self.ids(buyer, {"status": "cancelled"}), [oid])

    def test_spellings_of_one_filter_share_an_entry_and_other_filters_do_not(self):
        buyer = self.new_user()
        self.place_ok(buyer, [(self.product, 1)])
        date = {"from": "2001-02-03"}
        _, d = self.hits_during(self.port, lambda: self.history(buyer, date))
        self.assertEqual(d, {"miss": 1})
        _, d = self.hits_during(self.port, lambda: self.history(buyer, {"from": "2001-02-03T00:00:00Z"}))
        self.assertEqual(d, {"hit": 1}, "a date is 00:00 UTC of that day: the same entry")
        for other in ({"from": "2001-02-03T00:00:00.000001Z"}, {"to": "2001-02-03"}, dict(date, limit="21"),
                      dict(date, status="new"), dict(date, role="seller")):
            _, d = self.hits_during(self.port, lambda: self.history(buyer, other))
            self.assertEqual(d, {"miss": 1}, "%r is another entry" % (other,))

    def test_pages_after_the_first_are_read_on_their_own(self):
        buyer = self.new_user()
        made = [self.place_ok(buyer, [(self.product, 1)])["id"] for _ in range(3)]
        first, _ = self.history(buyer, {"limit": "2"})
        self.assertEqual([o["id"] for o in first["items"]], made[::-1][:2])
        cursor = first["next_cursor"]
        for _ in range(2):
            (page, _), d = self.hits_during(self.port, lambda: self.history(buyer, {"limit": "2", "cursor": cursor}))
            self.assertEqual(d, {"bypass": 1}, "a cursor page is not cached")
            self.assertEqual([o["id"] for o in page["items"]], made[:1])


OLD_MONTH = "200002"  # test_cli.PartitionRetentionTests uses 200001


class HistoryRetentionCacheTests(HistoryCase):
    """The partition job's first run comes 10 s after the start; the history
    of the dropped month is cached before it."""

    server_env = dict(OrderCase.server_env, ORDER_RETENTION_MONTHS="120")
    start_server = False
    start_redis = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()  # the dataset and the Redis
        cls.buyer = cls.new_user()
        _, seller = cls.new_seller(unique("Старая лавка "))
        product = cls.new_product(seller)
        for parent in ("orders", "order_items"):
            db_exec("CREATE TABLE IF NOT EXISTS %s_%s PARTITION OF %s FOR VALUES FROM ('2000-02-01 00:00Z')"
                    " TO ('2000-03-01 00:00Z')" % (parent, OLD_MONTH, parent))
        cls.old_id = 200002000000001
        db_exec("INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)"
                " VALUES (%s, %s, %s, 'delivered', 100, 'RUB', '2000-02-15Z', '2000-02-15Z')",
                (cls.old_id, cls.buyer, seller))
        db_exec("INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)"
                " VALUES (%s, '2000-02-15Z', %s, 'old', 100, 1)", (cls.old_id, product))
        try:
            cls.server = Server(env=cls.server_env, name=cls.__name__).start()
            cls.cached_before_drop = False
            window = {"from": "2000-02-01", "to": "2000-03-01"}
            port = cls.server.port
            before = cache_metrics(port).get("hit", 0)
            seen = [harness.request(port, "GET", "/api/v1/orders", params=window,
                                    headers={"Authorization": "Bearer " + token_for(cls.buyer)}).body
                    for _ in range(2)]
            hit = cache_metrics(port).get("hit", 0) - before == 1
            shown = all([o["id"] for o in b.get("items", [])] == [cls.old_id] for b in seen)
            cls.cached_before_drop = hit and shown
        except BaseException:
            cls._stop_class_processes(check=False)
            raise

    def test_a_dropped_month_leaves_the_cached_histories(self):
        if not self.cached_before_drop:
            self.skipTest("the partition job ran before the history was cached (first run 10 s after start)")
        gone = wait_until(lambda: db_exec("SELECT to_regclass(%s) IS NULL", ("orders_" + OLD_MONTH,))[0][0],
                          timeout=120, interval=0.2)
        self.assertTrue(gone, "orders_%s still exists after 120 s" % OLD_MONTH)
        self.assertEqual(self.ids(self.buyer, {"from": "2000-02-01", "to": "2000-03-01"}), [],
                         "B3: the cached page of the dropped month is gone with it")


if __name__ == "__main__":
    unittest.main()
