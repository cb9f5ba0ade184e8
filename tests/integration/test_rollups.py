"""Popular sellers from precomputed counts (migrations/0006_precomputed_reads.sql).

GET /sellers/popular reads seller_popularity (counts as of the last
refresh) plus seller_popularity_log (what changed since, written by
triggers on orders and sellers) minus the delivered orders that left the
30-day window since the last refresh. These tests check that the ranking
is the one api.md defines ("orders in status delivered created in the last
30 days, ties by id", per city by the seller's city) at every step: after
deliveries through the API, after changes made in SQL behind the server's
back, as the window slides with no write at all, after a seller moves city,
across refreshes (marketd_refresh_popular, which the server also runs every
10 s), after a rebuild, and with deliveries and refreshes running at once.

The expected ranking is always computed by the definition itself: an
aggregate over orders, in SQL, next to the request. The servers here run
without Redis, so every GET reads the database.
"""

import datetime as dt

from harness import db_connect, fmt_resp, parallel, wait_until
from test_orders import OrderCase, unique

DEFINITION = """
    SELECT s.id, o.n FROM (SELECT seller_id, count(*) AS n FROM orders
                            WHERE status = 'delivered' AND created_at >= now() - interval '30 days'
                            GROUP BY seller_id) o
      JOIN sellers s ON s.id = o.seller_id
     WHERE %s
     ORDER BY o.n DESC, s.id"""


class PopularRollupTests(OrderCase):

    # -- helpers ----------------------------------------------------------

    @classmethod
    def new_shop(cls, name="Лавка"):
        """(user id, seller id, product id) of a new seller in Moscow."""
        uid, sid = cls.new_seller(unique(name))
        return uid, sid, cls.new_product(sid, price=500, stock=1000)

    @classmethod
    def insert_order(cls, seller_id, product, status, age, buyer=None):
        """An order created `age` (a timedelta, by the database's clock)
        ago, inserted with SQL as a fixture would; returns its id."""
        buyer = buyer or cls.new_user()
        oid = cls.db_one(
            "INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)"
            " SELECT marketd_order_id(t, nextval('orders_id_seq')), %s, %s, %s, 500, 'RUB', t, t"
            " FROM (SELECT now() - %s::interval AS t) x RETURNING id",
            (buyer, seller_id, status, age))[0]
        cls.db("INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)"
               " SELECT id, created_at, %s, 'Товар', 500, 1 FROM orders WHERE id = %s", (product, oid))
        return oid

    def expected(self, city_id=None):
        where = "s.city_id = %d" % city_id if city_id is not None else "true"
        return [tuple(r) for r in self.db(DEFINITION % where)]

    def popular(self, city_id=None):
        params = {"limit": 100}
        if city_id is not None:
            params["city_id"] = city_id
        r = self.get("/api/v1/sellers/popular", params)
        b = self.assertJson(r, 200, "GET /sellers/popular %r" % params)
        return [(i["id"], i["orders_30d"]) for i in b["items"]]

    def assertRanking(self, what, cities=()):
        """The API's ranking (all sellers, then each city) is the definition's."""
        for city in (None,) + tuple(cities):
            got, want = self.popular(city), self.expected(city)[:100]
            self.assertEqual(got, want, "%s, city_id=%s: popular sellers\n got      %s\n expected %s"
                             % (what, city, got, want))

    def count_of(self, sid, city_id=None):
        return dict(self.popular(city_id)).get(sid)

    def refresh(self, before=None):
        """Runs marketd_refresh_popular now, in one transaction after the
        statement `before` (if any); returns its action. The server runs it
        every 10 s too: a run of the server's that holds it ('busy') or
        just finished ('recent', refreshed_at is set back for that) makes
        the transaction roll back and start again."""
        for _ in range(100):
            conn = db_connect(autocommit=False)
            try:
                cur = conn.cursor()
                if before:
                    cur.execute(before)
                cur.execute("UPDATE seller_popularity_window SET refreshed_at = now() - interval '1 minute'")
                cur.execute("SELECT action FROM marketd_refresh_popular()")
                action = cur.fetchone()[0]
                if action in ("busy", "recent"):
                    conn.rollback()
                    continue
                conn.commit()
                return action
            finally:
                conn.close()
        self.fail("marketd_refresh_popular stayed busy")

    def transition(self, uid, oid, status):
        r = self.call("PATCH", "/api/v1/orders/%d" % oid, uid, {"status": status})
        self.assertJson(r, 200, "PATCH order %d to %s" % (oid, status))
        return r

    def deliver(self, seller_uid, oid):
        for st in ("confirmed", "shipped", "delivered"):
            self.transition(seller_uid, oid, st)

    # -- tests ------------------------------------------------------------

    def test_deliveries_through_the_api_rank_at_once(self):
        msk = self.dataset.ids["msk"]
        s_uid, sid, pid = self.new_shop()
        buyer = self.new_user()
        orders = [self.place_ok(buyer, [(pid, 1)])["id"] for _ in range(4)]
        self.assertIsNone(self.count_of(sid), "new orders do not count")
        self.deliver(s_uid, orders[0])
        self.assertEqual(self.count_of(sid), 1, "one delivered order")
        self.assertRanking("after one delivery", cities=(msk,))
        for oid in orders[1:3]:
            self.deliver(s_uid, oid)
        self.assertEqual(self.count_of(sid), 3)
        self.assertEqual(self.count_of(sid, msk), 3, "also in its city's ranking")
        self.assertRanking("after three deliveries (ties by id)", cities=(msk,))
        # Cancelled orders never count; a delivered order cannot be cancelled.
        self.assertJson(self.call("POST", "/api/v1/orders/%d/cancel" % orders[3], buyer), 200, "cancel new")
        r = self.call("POST", "/api/v1/orders/%d/cancel" % orders[0], buyer)
        self.assertProblem(r, 409, "cancel a delivered order")
        r = self.call("PATCH", "/api/v1/orders/%d" % orders[1], s_uid, {"status": "cancelled"})
        self.assertProblem(r, 409, "the seller cancels a delivered order")
        self.assertEqual(self.count_of(sid), 3, "refused cancels change nothing")
        # A refresh folds the changes into the counts; the answer stays.
        before = self.popular()
        self.assertIn(self.refresh(), ("folded", "rebuilt"))
        self.assertEqual(self.db_one("SELECT orders_30d FROM seller_popularity WHERE seller_id = %s", (sid,))[0], 3)
        self.assertEqual(self.popular(), before, "a refresh does not change the answer")
        self.assertRanking("after a refresh", cities=(msk,))

    def test_the_30_day_window(self):
        s_uid, sid, pid = self.new_shop()
        old = self.insert_order(sid, pid, "shipped", "31 days")
        inside = self.insert_order(sid, pid, "shipped", "29 days")
        way_old = self.insert_order(sid, pid, "delivered", "40 days")
        self.assertIsNone(self.count_of(sid), "shipped and 40-day-old orders do not count")
        self.transition(s_uid, old, "delivered")
        self.assertIsNone(self.count_of(sid), "delivered now, but created 31 days ago: outside the window")
        self.transition(s_uid, inside, "delivered")
        self.assertEqual(self.count_of(sid), 1, "created 29 days ago: inside")
        self.refresh()
        self.assertEqual(self.count_of(sid), 1, "after a refresh")
        self.assertEqual(self.db("SELECT orders_30d FROM seller_popularity WHERE seller_id = %s", (sid,)), [(1,)])
        self.assertRanking("31, 29 and 40 days old")
        self.assertTrue(way_old)

    def test_the_window_slides_without_a_write(self):
        _, sid, pid = self.new_shop()
        # Created 30 days minus 3 s ago: counted now, outside the window 3 s
        # later, with nothing written in between.
        self.insert_order(sid, pid, "delivered", "30 days -3 seconds")
        self.insert_order(sid, pid, "delivered", "10 days")
        self.assertEqual(self.count_of(sid), 2, "both inside the window")
        self.assertTrue(wait_until(lambda: self.count_of(sid) == 1, 15),
                        "the older order did not leave the ranking: %r" % self.count_of(sid))
        self.assertRanking("an order left the window")
        # The refresh moves the window and subtracts it from the count.
        self.refresh()
        self.assertEqual(self.db("SELECT orders_30d FROM seller_popularity WHERE seller_id = %s", (sid,)), [(1,)])
        self.assertEqual(self.count_of(sid), 1)
        lag = self.db_one("SELECT now() - interval '30 days' - since FROM seller_popularity_window")[0]
        self.assertLess(lag, dt.timedelta(seconds=5), "the refresh moved the window to now() - 30 days")

    def test_changes_made_in_sql_count_at_once(self):
        """Fixtures, scripts and the seeder write orders without the API."""
        _, a, pa = self.new_shop("Альфа")
        _, b, pb = self.new_shop("Бета")
        ids = [self.insert_order(a, pa, "delivered", "%d days" % d) for d in (1, 2, 3)]
        self.insert_order(b, pb, "delivered", "1 day")
        self.assertEqual((self.count_of(a), self.count_of(b)), (3, 1))
        self.db("UPDATE orders SET status = 'shipped' WHERE id = %s", (ids[0],))
        self.assertEqual(self.count_of(a), 2, "delivered -> shipped in SQL")
        self.db("DELETE FROM orders WHERE id = %s", (ids[1],))
        self.assertEqual(self.count_of(a), 1, "a delivered order deleted")
        self.db("UPDATE orders SET seller_id = %s WHERE id = %s", (b, ids[2]))
        self.assertEqual((self.count_of(a), self.count_of(b)), (None, 2), "an order moved to another seller")
        self.db("UPDATE orders SET created_at = created_at - interval '35 days' WHERE seller_id = %s", (b,))
        self.assertIsNone(self.count_of(b), "orders moved out of the window (and partition)")
        self.assertRanking("after SQL changes", cities=(self.dataset.ids["msk"],))
        self.refresh()
        self.assertRanking("after SQL changes and a refresh", cities=(self.dataset.ids["msk"],))

    def test_seller_moves_city(self):
        ids = self.dataset.ids
        msk, kzn = ids["msk"], ids["kzn"]
        s_uid, sid, pid = self.new_shop()
        for d in (1, 2):
            self.insert_order(sid, pid, "delivered", "%d days" % d)
        self.refresh()  # the count now lives in the per-city index under Moscow
        self.assertEqual((self.count_of(sid, msk), self.count_of(sid, kzn)), (2, None))
        r = self.call("PATCH", "/api/v1/sellers/%d" % sid, s_uid, {"city_id": kzn, "district_id": ids["vakh"]})
        self.assertJson(r, 200, "move the seller")
        self.assertEqual((self.count_of(sid, msk), self.count_of(sid, kzn)), (None, 2), "ranked in its new city")
        self.assertRanking("after the move", cities=(msk, kzn))
        self.refresh()
        self.assertEqual((self.count_of(sid, msk), self.count_of(sid, kzn)), (None, 2), "and after a refresh")
        self.assertEqual(self.db("SELECT city_id FROM seller_popularity WHERE seller_id = %s", (sid,)), [(kzn,)])

    def test_rebuild_when_the_window_is_missing(self):
        _, sid, pid = self.new_shop()
        self.insert_order(sid, pid, "delivered", "2 days")
        self.refresh()
        want = self.popular()
        # Counts that can no longer be trusted and no window (what a TRUNCATE
        # of every table but orders would leave): a rebuild starts over.
        self.assertEqual(self.refresh(before="UPDATE seller_popularity SET orders_30d = orders_30d + 7;"
                                             " DELETE FROM seller_popularity_window"), "rebuilt")
        self.assertEqual(self.popular(), want)
        self.assertRanking("after a rebuild")
        self.assertEqual(self.refresh(), "folded", "then it folds again")

    def test_deliveries_and_refreshes_at_once(self):
        """Folding takes no lock deliveries wait for: whatever interleaving,
        the answer and the counts are the definition's."""
        shops = [self.new_shop("Параллель") for _ in range(4)]
        buyer = self.new_user()
        work = []
        for s_uid, sid, pid in shops:
            for i in range(6):
                oid = self.insert_order(sid, pid, "shipped", "%d days %d seconds" % (i * 5, i), buyer=buyer)
                work.append((s_uid, oid))

        def deliver(batch):
            def run():
                for s_uid, oid in batch:
                    r = self.call("PATCH", "/api/v1/orders/%d" % oid, s_uid, {"status": "delivered"})
                    if r.status != 200:
                        return "order %d: %s" % (oid, fmt_resp(r))
                return None
            return run

        def refresher():
            return {self.refresh() for _ in range(20)}

        results = parallel([deliver(work[k::4]) for k in range(4)] + [refresher])
        for r in results[:4]:
            self.assertIsNone(r)
        self.assertIsInstance(results[4], set, repr(results[4]))
        self.assertRanking("after concurrent deliveries and refreshes", cities=(self.dataset.ids["msk"],))
        for _, sid, _ in shops:
            self.assertEqual(self.count_of(sid), 6)
        self.refresh()
        mismatched = self.db(
            "SELECT coalesce(o.seller_id, p.seller_id), o.n, p.orders_30d FROM"
            " (SELECT seller_id, count(*)::int AS n FROM orders WHERE status = 'delivered'"
            "   AND created_at >= (SELECT since FROM seller_popularity_window) GROUP BY seller_id) o"
            " FULL JOIN (SELECT * FROM seller_popularity WHERE orders_30d <> 0) p ON p.seller_id = o.seller_id"
            " WHERE o.n IS DISTINCT FROM p.orders_30d")
        self.assertEqual(mismatched, [], "counts after the last refresh differ from the orders")
        self.assertEqual(self.db_one("SELECT count(*) FROM seller_popularity_log")[0], 0, "the log was folded")
