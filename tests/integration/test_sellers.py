"""Sellers: list, detail, popular (api.md "Sellers")."""

from harness import db_connect, ServerTestCase, fmt_resp, is_int

SELLER_FIELDS = {"id", "user_id", "name", "description", "city_id", "district_id", "rating", "created_at"}


class SellerAssertions:

    def check_seller(self, got, s, extra=()):
        what = "seller %d" % s["id"]
        self.assertIsInstance(got, dict, what)
        self.assertEqual(set(got.keys()), SELLER_FIELDS | set(extra), "%s fields: %r" % (what, got))
        for k in ("id", "user_id", "name", "description", "city_id", "district_id"):
            self.assertEqual(got[k], s[k], "%s.%s" % (what, k))
        self.assertTrue(is_int(got["id"]) and is_int(got["user_id"]) and is_int(got["city_id"]),
                        "%s: ids must be JSON integers: %r" % (what, got))
        self.assertRating(got["rating"], s["rating"], "%s.rating" % what)
        self.assertTimestamp(got["created_at"], s["created_at"], "%s.created_at" % what)

    def assertSellerIds(self, items, expected, what):
        got = [i.get("id") for i in items]
        exp = [s["id"] for s in expected]
        self.assertEqual(got, exp, "%s: seller ids\n got      %s\n expected %s" % (what, got, exp))


class SellerListTests(SellerAssertions, ServerTestCase):

    def test_list_default(self):
        r = self.get("/api/v1/sellers")
        b = self.assertList(r, "GET /api/v1/sellers")
        exp = sorted(self.dataset.sellers, key=lambda s: s["id"])
        self.assertGreater(len(exp), 20)
        self.assertSellerIds(b["items"], exp[:20], "default list (limit 20, by id)")
        for it in b["items"]:
            self.check_seller(it, self.dataset.seller(it["id"]))
        self.assertIsNotNone(b["next_cursor"])

    def test_walk_all(self):
        exp = sorted(self.dataset.sellers, key=lambda s: s["id"])
        for limit in (2, 3, 100):
            with self.subTest(limit=limit):
                items, _ = self.walk("/api/v1/sellers", {}, limit=limit, expect_total=len(exp))
                self.assertSellerIds(items, exp, "walk limit=%d" % limit)

    def test_filter_city_id_walk(self):
        c = self.dataset.ids["kzn"]
        exp = [s for s in sorted(self.dataset.sellers, key=lambda s: s["id"]) if s["city_id"] == c]
        self.assertGreater(len(exp), 3)
        for limit in (2, 100):
            with self.subTest(limit=limit):
                items, _ = self.walk("/api/v1/sellers", {"city_id": c}, limit=limit, expect_total=len(exp))
                self.assertSellerIds(items, exp, "city_id=%d limit=%d" % (c, limit))

    def test_filter_district_id_walk(self):
        d = self.dataset.ids["vakh"]
        exp = [s for s in sorted(self.dataset.sellers, key=lambda s: s["id"]) if s["district_id"] == d]
        self.assertGreater(len(exp), 2)
        # Some sellers of the same city have no district: the filter is
        # on the district, not the city.
        self.assertTrue(any(s["city_id"] == self.dataset.ids["kzn"] and s["district_id"] is None
                            for s in self.dataset.sellers))
        for limit in (2, 100):
            with self.subTest(limit=limit):
                items, _ = self.walk("/api/v1/sellers", {"district_id": d}, limit=limit, expect_total=len(exp))
                self.assertSellerIds(items, exp, "district_id=%d limit=%d" % (d, limit))

    def test_filter_unknown_city_is_empty(self):
        b = self.assertList(self.get("/api/v1/sellers", {"city_id": 999999}))
        self.assertEqual(b["items"], [])
        self.assertIsNone(b["next_cursor"])

    def test_limit_invalid(self):
        for bad in ("0", "-1", "x"):
            with self.subTest(limit=bad):
                self.assertProblem(self.get("/api/v1/sellers", {"limit": bad}), 422, "limit=%s" % bad)

    def test_bad_filters_422(self):
        for field, bad in (("city_id", "abc"), ("city_id", "-3"), ("district_id", "1.5")):
            with self.subTest(**{field: bad}):
                self.assertProblem(self.get("/api/v1/sellers", {field: bad}), 422, "%s=%s" % (field, bad))

    def test_malformed_cursor_422(self):
        b = self.assertList(self.get("/api/v1/sellers", {"limit": 2}))
        good = b["next_cursor"]
        self.assertIsNotNone(good)
        for c in ("garbage", "!!!", good[: max(1, len(good) // 2)]):
            if c == good:
                continue
            with self.subTest(cursor=c):
                self.assertProblem(self.get("/api/v1/sellers", {"limit": 2, "cursor": c}), 422,
                                   "cursor=%r" % c)


class SellerDetailTests(SellerAssertions, ServerTestCase):

    def test_detail_fields(self):
        s = self.dataset.seller(self.dataset.ids["s1"])
        r = self.get("/api/v1/sellers/%d" % s["id"])
        b = self.assertJson(r, 200, "GET /api/v1/sellers/%d" % s["id"])
        self.check_seller(b, s)
        self.assertEqual(b["description"], "Электроника с гарантией")
        self.assertEqual(b["rating"], 4.5)

    def test_detail_every_seller(self):
        for s in self.dataset.sellers:
            r = self.get("/api/v1/sellers/%d" % s["id"])
            self.check_seller(self.assertJson(r, 200, "seller %d" % s["id"]), s)

    def test_detail_null_district_zero_rating(self):
        s = self.dataset.seller(self.dataset.ids["s4"])
        r = self.get("/api/v1/sellers/%d" % s["id"])
        b = self.assertJson(r)
        self.assertIsNone(b["district_id"], fmt_resp(r))
        self.assertRating(b["rating"], 0, "rating 0.00")

    def test_detail_404(self):
        for bad in ("999999", "abc", "0", "-1", "99999999999999999999"):
            with self.subTest(id=bad):
                self.assertProblem(self.get("/api/v1/sellers/%s" % bad), 404, "seller %r" % bad)


class PopularSellersTests(SellerAssertions, ServerTestCase):

    def check_popular(self, items, expected, what):
        self.assertSellerIds(items, [s for s, _ in expected], what)
        for it, (s, n) in zip(items, expected):
            self.check_seller(it, s, extra=("orders_30d",))
            self.assertTrue(is_int(it["orders_30d"]), "%s: orders_30d %r" % (what, it["orders_30d"]))
            self.assertEqual(it["orders_30d"], n, "%s: seller %d orders_30d" % (what, s["id"]))

    def test_ranking(self):
        exp = self.dataset.popular_sellers()
        ids = self.dataset.ids
        # The model: 5, 3, 3 (tie by id), 1, and twelve more with 1.
        self.assertEqual([(s["id"], n) for s, n in exp[:4]],
                         [(ids["s3"], 5), (ids["s1"], 3), (ids["s2"], 3), (ids["s5"], 1)])
        self.assertEqual(len(exp), 16)
        r = self.get("/api/v1/sellers/popular", {"limit": 100})
        b = self.assertJson(r, 200, "popular limit=100")
        self.assertIsInstance(b.get("items"), list, fmt_resp(r))
        self.check_popular(b["items"], exp, "popular limit=100")

    def test_sellers_without_recent_delivered_orders_not_listed(self):
        r = self.get("/api/v1/sellers/popular", {"limit": 100})
        got = {i["id"] for i in self.assertJson(r)["items"]}
        ids = self.dataset.ids
        # s4: cancelled, confirmed, and one delivered 40 days ago.
        self.assertNotIn(ids["s4"], got)
        for q in ids["quiet"]:
            self.assertNotIn(q, got)

    def test_default_limit_10(self):
        r = self.get("/api/v1/sellers/popular")
        b = self.assertJson(r, 200, "popular")
        self.check_popular(b["items"], self.dataset.popular_sellers()[:10], "popular default limit")

    def test_limit(self):
        b = self.assertJson(self.get("/api/v1/sellers/popular", {"limit": 2}))
        self.check_popular(b["items"], self.dataset.popular_sellers()[:2], "popular limit=2")
        b = self.assertJson(self.get("/api/v1/sellers/popular", {"limit": 1000}), 200, "limit=1000 clamps")
        self.check_popular(b["items"], self.dataset.popular_sellers(), "popular limit=1000")
        for bad in ("0", "-1", "x"):
            with self.subTest(limit=bad):
                self.assertProblem(self.get("/api/v1/sellers/popular", {"limit": bad}), 422, "limit=%s" % bad)

    def test_city_filter(self):
        for key in ("msk", "abk", "kzn", "nsk"):
            c = self.dataset.ids[key]
            exp = self.dataset.popular_sellers(city_id=c)
            with self.subTest(city=key):
                b = self.assertJson(self.get("/api/v1/sellers/popular", {"city_id": c, "limit": 100}))
                self.check_popular(b["items"], exp, "popular city_id=%d" % c)
        self.assertEqual([s["id"] for s, _ in self.dataset.popular_sellers(self.dataset.ids["msk"])],
                         [self.dataset.ids["s1"], self.dataset.ids["s2"]])

    def test_bad_city_422(self):
        self.assertProblem(self.get("/api/v1/sellers/popular", {"city_id": "abc"}), 422, "city_id=abc")


class SellerLimitClampTests(SellerAssertions, ServerTestCase):
    """api.md: limit above 100 is clamped to 100 — checked on more than 100
    sellers (the shared dataset has fewer); this class's dataset is its own."""

    MANY = 105

    # A hard cap on rows returned (S12, conv-lists).
    def test_limit_clamped_to_100(self):
        conn = db_connect()
        try:
            cur = conn.cursor()
            cur.execute("INSERT INTO users (email, password_hash, name) SELECT 'clamp-' || g || '@example.test', 'x',"
                        " 'Продавец ' || g FROM generate_series(1, %s) g RETURNING id", (self.MANY,))
            uids = [r[0] for r in cur.fetchall()]
            d = self.dataset.ids["tver"]
            cur.execute("INSERT INTO sellers (user_id, name, city_id, district_id)"
                        " SELECT u, 'Лавка ' || u, (SELECT city_id FROM districts WHERE id = %s), %s"
                        " FROM unnest(%s::bigint[]) u", (d, d, uids))
            cur.execute("SELECT id FROM sellers ORDER BY id")
            all_ids = [r[0] for r in cur.fetchall()]
            # One delivered order for each new seller: more than 100 sellers
            # are popular.
            cur.execute("INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)"
                        " SELECT marketd_order_id(now(), nextval('orders_id_seq')), %s, s.id, 'delivered', 100,"
                        " 'RUB', now(), now() FROM sellers s WHERE s.user_id = ANY(%s::bigint[])", (uids[0], uids))
            cur.execute("SELECT count(DISTINCT seller_id) FROM orders WHERE status = 'delivered'"
                        " AND created_at >= now() - interval '30 days'")
            popular = cur.fetchone()[0]
        finally:
            conn.close()
        self.assertGreater(len(all_ids), 100)
        for limit in (101, 1000, 2147483648):
            b = self.assertList(self.get("/api/v1/sellers", {"limit": limit}), "limit=%d" % limit)
            self.assertEqual([it["id"] for it in b["items"]], all_ids[:100], "limit=%d is clamped to 100" % limit)
            self.assertIsNotNone(b["next_cursor"], "more sellers follow")
        self.assertGreater(popular, 100)
        for limit in (101, 1000):
            b = self.assertJson(self.get("/api/v1/sellers/popular", {"limit": limit}), 200, "popular limit=%d" % limit)
            self.assertEqual(len(b["items"]), 100, "popular limit=%d is clamped to 100" % limit)
