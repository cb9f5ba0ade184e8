"""Products: list, filters, sorts, keyset cursors, detail (api.md "Products").

Expected answers are computed from the model that harness.load_dataset()
returns, never from the database the server reads.
"""

import base64

from harness import Dataset, ServerTestCase, fmt_resp, is_int

LIST_FIELDS = {"id", "seller_id", "seller", "category_id", "title", "price", "currency",
               "stock", "city_id", "district_id", "images", "status", "created_at", "updated_at"}
DETAIL_FIELDS = LIST_FIELDS | {"description"}
SORTS = ("newest", "price_asc", "price_desc")


class ProductAssertions:

    def check_product(self, got, p, detail):
        what = "product %d" % p["id"]
        self.assertIsInstance(got, dict, what)
        keys = set(got.keys())
        missing = (DETAIL_FIELDS if detail else LIST_FIELDS) - keys
        self.assertFalse(missing, "%s lacks %s: %r" % (what, sorted(missing), got))
        if not detail:
            self.assertNotIn("description", got, "%s: list items omit description" % what)
        s = self.dataset.seller(p["seller_id"])
        for k in ("id", "seller_id", "category_id", "title", "price", "currency", "stock",
                  "city_id", "district_id", "status"):
            self.assertEqual(got[k], p[k], "%s.%s" % (what, k))
        for k in ("id", "seller_id", "category_id", "price", "stock", "city_id"):
            self.assertTrue(is_int(got[k]), "%s.%s is not a JSON integer: %r" % (what, k, got[k]))
        if detail:
            self.assertEqual(got["description"], p["description"], "%s.description" % what)
        seller = got["seller"]
        self.assertIsInstance(seller, dict, "%s.seller" % what)
        self.assertEqual(set(seller.keys()), {"id", "name", "rating"}, "%s.seller fields" % what)
        self.assertEqual(seller["id"], s["id"], "%s.seller.id" % what)
        self.assertEqual(seller["name"], s["name"], "%s.seller.name" % what)
        self.assertRating(seller["rating"], s["rating"], "%s.seller.rating" % what)
        images = got["images"]
        self.assertIsInstance(images, list, "%s.images" % what)
        self.assertEqual(len(images), len(p["images"]), "%s.images %r vs stored %r" % (what, images, p["images"]))
        for url, stored in zip(images, p["images"]):
            self.assertIsInstance(url, str)
            self.assertTrue(url.endswith(stored),
                            "%s: image URL %r does not end with the stored path %r" % (what, url, stored))
        self.assertTimestamp(got["created_at"], p["created_at"], "%s.created_at" % what)
        self.assertTimestamp(got["updated_at"], p["updated_at"], "%s.updated_at" % what)

    def expected(self, sort="newest", pred=lambda p: True):
        return Dataset.sort_products([p for p in self.dataset.active_products() if pred(p)], sort)

    def list_all(self, params, sort=None):
        """Every item of a filtered list, following cursors with limit=100."""
        params = dict(params)
        if sort:
            params["sort"] = sort
        items, _ = self.walk("/api/v1/products", params, limit=100)
        return items

    def assertIds(self, items, expected_rows, what):
        got = [it.get("id") for it in items]
        exp = [p["id"] for p in expected_rows]
        if got != exp:
            titles = {p["id"]: p["title"] for p in self.dataset.products}
            self.fail("%s: ids differ\n got      %s\n expected %s\n got titles      %s\n expected titles %s"
                      % (what, got, exp, [titles.get(i) for i in got], [titles.get(i) for i in exp]))


class ProductListTests(ProductAssertions, ServerTestCase):

    def test_default_list(self):
        r = self.get("/api/v1/products")
        b = self.assertList(r, "GET /api/v1/products")
        items = b["items"]
        exp = self.expected("newest")
        self.assertGreater(len(exp), 100)  # the fixture has more than a page
        self.assertEqual(len(items), 20, "default limit is 20")
        self.assertIds(items, exp[:20], "default list (newest)")
        for it in items:
            self.check_product(it, self.dataset.product(it["id"]), detail=False)
        self.assertIsNotNone(b["next_cursor"], "more rows follow, next_cursor must be set")

    def test_list_item_fields_match_detail_fields(self):
        """The product with images and a description, as a list item."""
        pid = self.dataset.ids["p_s23"]
        items = self.list_all({"seller_id": self.dataset.ids["s1"]})
        it = next((i for i in items if i["id"] == pid), None)
        self.assertIsNotNone(it, "product %d not in its seller's list" % pid)
        self.check_product(it, self.dataset.product(pid), detail=False)
        self.assertEqual(it["currency"], "RUB")
        self.assertEqual(len(it["images"]), 2)

    def test_sort_newest_is_default(self):
        a = self.get("/api/v1/products", {"limit": 50})
        b = self.get("/api/v1/products", {"limit": 50, "sort": "newest"})
        self.assertIds(self.assertList(b)["items"], self.expected("newest")[:50], "sort=newest")
        self.assertEqual([i["id"] for i in self.assertList(a)["items"]],
                         [i["id"] for i in b.body["items"]], "default sort vs sort=newest")

    def test_sort_price_asc(self):
        self.assertIds(self.list_all({}, "price_asc"), self.expected("price_asc"), "sort=price_asc")

    def test_sort_price_desc(self):
        self.assertIds(self.list_all({}, "price_desc"), self.expected("price_desc"), "sort=price_desc")

    def test_archived_not_listed(self):
        archived = [p["id"] for p in self.dataset.products if p["status"] == "archived"]
        self.assertTrue(archived)
        for sort in SORTS:
            got = {i["id"] for i in self.list_all({}, sort)}
            self.assertFalse(got & set(archived), "sort=%s lists archived products %s"
                             % (sort, sorted(got & set(archived))))

    # -- filters ---------------------------------------------------------

    def check_filter(self, params, pred, what, sorts=SORTS, min_expected=1):
        for sort in sorts:
            exp = self.expected(sort, pred)
            self.assertGreaterEqual(len(exp), min_expected, "fixture: %s matches too few rows" % what)
            self.assertLess(len(exp), len(self.dataset.active_products()),
                            "fixture: %s matches everything, the filter would be untested" % what)
            self.assertIds(self.list_all(params, sort), exp, "%s sort=%s" % (what, sort))

    def test_filter_city_id(self):
        c = self.dataset.ids["msk"]
        self.check_filter({"city_id": c}, lambda p: p["city_id"] == c, "city_id=%d" % c)

    def test_filter_district_id(self):
        d = self.dataset.ids["arbat"]
        self.check_filter({"district_id": d}, lambda p: p["district_id"] == d, "district_id=%d" % d)

    def test_filter_category_root_includes_subcategories(self):
        c = self.dataset.ids["electronics"]
        subtree = self.dataset.category_descendants(c)
        self.assertGreaterEqual(len(subtree), 4)
        exp = self.expected("newest", lambda p: p["category_id"] in subtree)
        self.assertTrue({p["category_id"] for p in exp} - {c}, "fixture: no product in a sub-category")
        self.check_filter({"category_id": c}, lambda p: p["category_id"] in subtree,
                          "category_id=%d (root)" % c)

    def test_filter_category_leaf_sibling_excluded(self):
        c = self.dataset.ids["phone_acc"]  # a leaf beside "phones" under the same root
        self.check_filter({"category_id": c}, lambda p: p["category_id"] == c,
                          "category_id=%d (leaf with siblings)" % c)

    def test_filter_category_leaf(self):
        c = self.dataset.ids["laptops"]
        self.check_filter({"category_id": c}, lambda p: p["category_id"] == c, "category_id=%d (leaf)" % c)

    def test_filter_seller_id(self):
        s = self.dataset.ids["s3"]
        self.check_filter({"seller_id": s}, lambda p: p["seller_id"] == s, "seller_id=%d" % s)

    def test_filter_min_price_inclusive(self):
        self.check_filter({"min_price": 250000}, lambda p: p["price"] >= 250000, "min_price=250000")
        got = self.list_all({"min_price": 250000})
        self.assertIn(250000, [i["price"] for i in got], "min_price is inclusive")

    def test_filter_max_price_inclusive(self):
        self.check_filter({"max_price": 79000}, lambda p: p["price"] <= 79000, "max_price=79000")
        got = self.list_all({"max_price": 79000})
        self.assertIn(79000, [i["price"] for i in got], "max_price is inclusive")

    def test_filter_price_range_exact(self):
        self.check_filter({"min_price": 250000, "max_price": 250000},
                          lambda p: p["price"] == 250000, "min_price=max_price=250000")

    def test_filter_price_extremes(self):
        self.check_filter({"min_price": 100000000000}, lambda p: p["price"] >= 100000000000,
                          "min_price=10^11")
        self.check_filter({"max_price": 1}, lambda p: p["price"] <= 1, "max_price=1")

    def test_filters_combined(self):
        c, cat = self.dataset.ids["msk"], self.dataset.ids["electronics"]
        subtree = self.dataset.category_descendants(cat)
        self.check_filter(
            {"city_id": c, "category_id": cat, "min_price": 100000, "max_price": 7999000},
            lambda p: (p["city_id"] == c and p["category_id"] in subtree
                       and 100000 <= p["price"] <= 7999000),
            "city+category+price range")

    def test_filter_unknown_city_is_empty(self):
        r = self.get("/api/v1/products", {"city_id": 999999})
        b = self.assertList(r, "city_id=999999")
        self.assertEqual(b["items"], [])
        self.assertIsNone(b["next_cursor"])

    # -- q ----------------------------------------------------------------

    def q_matches(self, q):
        words = q.split()
        return lambda p: all(w.lower() in p["title"].lower() for w in words)

    def check_q(self, q, expected_titles):
        pred = self.q_matches(q)
        exp = self.expected("newest", pred)
        # The model and the hand-written expectation agree, so neither is
        # silently wrong.
        self.assertEqual(sorted(p["title"] for p in exp), sorted(expected_titles), "model for q=%r" % q)
        for sort in SORTS:
            self.assertIds(self.list_all({"q": q}, sort), self.expected(sort, pred), "q=%r sort=%s" % (q, sort))

    def test_q_every_word_case_insensitive_cyrillic(self):
        self.check_q("смартфон SAMSUNG", ["Смартфон Samsung Galaxy S23", "Чехол для смартфона Samsung"])

    def test_q_single_word(self):
        # The MacBook is archived.
        self.check_q("НОУТБУК", ["Ноутбук Lenovo ThinkPad X1"])

    def test_q_yo(self):
        self.check_q("ЁЛОЧН", ["Ёлочная гирлянда LED", "Гирлянда ёлочная мини"])

    def test_q_extra_whitespace(self):
        self.check_q("  galaxy \t samsung  ", ["Смартфон Samsung Galaxy S23", "SAMSUNG Galaxy Buds2"])

    def test_q_like_wildcards_are_literal(self):
        self.check_q("50%", ["Скидка 50% на носки"])
        self.check_q("%", ["Скидка 50% на носки"])
        self.check_q("_с_", ["Товар_с_подчёркиванием"])
        self.check_q("\\", [])

    def test_q_no_match(self):
        r = self.get("/api/v1/products", {"q": "несуществующий товар"})
        b = self.assertList(r)
        self.assertEqual(b["items"], [])
        self.assertIsNone(b["next_cursor"])

    def test_q_with_other_filters(self):
        s = self.dataset.ids["s1"]
        pred = lambda p: p["seller_id"] == s and "samsung" in p["title"].lower()
        exp = self.expected("price_desc", pred)
        self.assertEqual(len(exp), 2)
        self.assertIds(self.list_all({"q": "samsung", "seller_id": s}, "price_desc"), exp, "q+seller_id")

    # -- limit and validation ----------------------------------------------

    def test_limit(self):
        for limit in (1, 7, 100):
            r = self.get("/api/v1/products", {"limit": limit})
            b = self.assertList(r, "limit=%d" % limit)
            self.assertIds(b["items"], self.expected("newest")[:limit], "limit=%d" % limit)

    # A hard cap on rows returned (S12, conv-lists).
    def test_limit_clamped_to_100(self):
        self.assertGreater(len(self.dataset.active_products()), 101)
        for limit in (101, 1000, 2147483648):
            r = self.get("/api/v1/products", {"limit": limit})
            b = self.assertList(r, "limit=%d" % limit)
            self.assertIds(b["items"], self.expected("newest")[:100], "limit=%d (clamped)" % limit)
            self.assertIsNotNone(b["next_cursor"])

    def assert422(self, params, field=None):
        r = self.get("/api/v1/products", params)
        b = self.assertProblem(r, 422, "GET /api/v1/products %s" % params)
        if field is not None and "errors" in b:
            fields = [e.get("field") for e in b["errors"] if isinstance(e, dict)]
            self.assertIn(field, fields, "422 errors[] should name %r: %r" % (field, b["errors"]))
        return b

    def test_limit_invalid_422(self):
        for bad in ("0", "-1", "x", "1.5", "10abc"):
            with self.subTest(limit=bad):
                self.assert422({"limit": bad}, "limit")

    def test_unknown_sort_422(self):
        for bad in ("cheapest", "price", "newest;DROP", "price_asc,price_desc"):
            with self.subTest(sort=bad):
                self.assert422({"sort": bad}, "sort")

    def test_bad_numbers_422(self):
        cases = [("min_price", "abc"), ("max_price", "1e3"), ("max_price", "12.50"),
                 ("city_id", "1.5"), ("city_id", "-3"), ("city_id", "0"), ("city_id", "0x10"),
                 ("district_id", "x"), ("category_id", "1,2"), ("seller_id", "99999999999999999999"),
                 ("min_price", "99999999999999999999")]
        for field, bad in cases:
            with self.subTest(**{field: bad}):
                self.assert422({field: bad}, field)

    # -- cursors -------------------------------------------------------------

    def a_cursor(self, sort, params=None):
        q = dict(params or {})
        q.update({"sort": sort, "limit": 3})
        b = self.assertList(self.get("/api/v1/products", q), "first page sort=%s" % sort)
        self.assertIsNotNone(b["next_cursor"])
        return b["next_cursor"]

    def test_malformed_cursor_422(self):
        good = self.a_cursor("newest")
        bad = ["garbage", "!!!", "AAAA", good[: max(1, len(good) // 2)], good[:-1],
               base64.urlsafe_b64encode(b'{"x":1}').decode(), "%00", "x" * 2000]
        for c in bad:
            if c == good:
                continue
            with self.subTest(cursor=c[:40]):
                self.assert422({"sort": "newest", "limit": 3, "cursor": c}, "cursor")

    def test_cursor_from_another_sort_422(self):
        cursors = {s: self.a_cursor(s) for s in SORTS}
        for made_for, c in cursors.items():
            for used_with in SORTS:
                if used_with == made_for:
                    continue
                with self.subTest(made_for=made_for, used_with=used_with):
                    self.assert422({"sort": used_with, "limit": 3, "cursor": c}, "cursor")

    def check_walk(self, params, sort, limit, pred=lambda p: True):
        exp = self.expected(sort, pred)
        q = dict(params)
        q["sort"] = sort
        items, pages = self.walk("/api/v1/products", q, limit=limit, expect_total=len(exp))
        ids = [i["id"] for i in items]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        self.assertFalse(dupes, "walk %s limit=%d visits ids twice: %s" % (q, limit, dupes))
        self.assertIds(items, exp, "walk %s limit=%d (%d pages)" % (q, limit, pages))
        self.assertGreaterEqual(pages, len(exp) // limit, "walk %s limit=%d" % (q, limit))

    def test_walk_newest_page_size_3(self):
        self.check_walk({}, "newest", 3)

    def test_walk_price_asc_page_size_3(self):
        self.check_walk({}, "price_asc", 3)

    def test_walk_price_desc_page_size_3(self):
        self.check_walk({}, "price_desc", 3)

    def test_walk_other_page_sizes(self):
        for sort in SORTS:
            for limit in (1, 7, 20):
                with self.subTest(sort=sort, limit=limit):
                    self.check_walk({}, sort, limit)

    def test_walk_with_filters(self):
        msk, elec = self.dataset.ids["msk"], self.dataset.ids["electronics"]
        subtree = self.dataset.category_descendants(elec)
        cases = [
            ({"city_id": msk}, lambda p: p["city_id"] == msk),
            ({"category_id": elec}, lambda p: p["category_id"] in subtree),
            ({"q": "товар"}, lambda p: "товар" in p["title"].lower()),
            ({"min_price": 30000, "max_price": 250000}, lambda p: 30000 <= p["price"] <= 250000),
        ]
        for params, pred in cases:
            for sort in SORTS:
                with self.subTest(params=params, sort=sort):
                    self.check_walk(params, sort, 3, pred)

    def test_walk_ties_same_created_at_and_price(self):
        # Same created_at and price: the id alone orders them; page size 1
        # and 2 put a page boundary between every pair of them.
        pred = lambda p: p["title"].startswith("Кабель USB-C")
        self.assertEqual(len(self.expected("newest", pred)), 6)
        for sort in SORTS:
            for limit in (1, 2):
                with self.subTest(sort=sort, limit=limit):
                    self.check_walk({"q": "кабель"}, sort, limit, pred)

    def test_walk_ties_created_at_microseconds(self):
        pred = lambda p: p["title"].startswith("Зарядка быстрая")
        self.assertEqual(len(self.expected("newest", pred)), 7)
        for sort in SORTS:
            for limit in (1, 2, 3):
                with self.subTest(sort=sort, limit=limit):
                    self.check_walk({"q": "зарядка"}, sort, limit, pred)

    def test_walk_ties_same_price(self):
        pred = lambda p: p["title"].startswith("Наушники проводные")
        self.assertEqual(len(self.expected("newest", pred)), 5)
        for sort in SORTS:
            for limit in (1, 2):
                with self.subTest(sort=sort, limit=limit):
                    self.check_walk({"q": "наушники"}, sort, limit, pred)


class ProductDetailTests(ProductAssertions, ServerTestCase):

    def test_detail_all_fields(self):
        pid = self.dataset.ids["p_s23"]
        r = self.get("/api/v1/products/%d" % pid)
        b = self.assertJson(r, 200, "GET /api/v1/products/%d" % pid)
        p = self.dataset.product(pid)
        self.check_product(b, p, detail=True)
        self.assertEqual(b["description"], "Флагман 2023 года.\nДва цвета.")
        self.assertEqual(b["currency"], "RUB")
        self.assertEqual(b["city_id"], self.dataset.ids["msk"])
        self.assertEqual(b["district_id"], self.dataset.ids["arbat"])

    def test_detail_every_product(self):
        """Each product's detail matches the fixture (null district, price
        10^11, empty description, stock 0, ...)."""
        for p in self.dataset.products:
            r = self.get("/api/v1/products/%d" % p["id"])
            self.check_product(self.assertJson(r, 200, "product %d" % p["id"]), p, detail=True)

    def test_detail_archived_visible(self):
        pid = self.dataset.ids["p_macbook"]
        r = self.get("/api/v1/products/%d" % pid)
        b = self.assertJson(r, 200, "archived product %d" % pid)
        self.assertEqual(b["status"], "archived")
        self.check_product(b, self.dataset.product(pid), detail=True)

    def test_detail_large_price_is_exact_integer(self):
        pid = self.dataset.ids["p_garland"]
        r = self.get("/api/v1/products/%d" % pid)
        self.assertJson(r, 200)
        self.assertTrue(is_int(r.body["price"]) and r.body["price"] == 100000000000, fmt_resp(r))

    def test_detail_unknown_404(self):
        maxid = max(p["id"] for p in self.dataset.products)
        for pid in (maxid + 1, 999999, 9223372036854775807):
            with self.subTest(id=pid):
                self.assertProblem(self.get("/api/v1/products/%d" % pid), 404, "product %d" % pid)

    def test_detail_invalid_id_404(self):
        for bad in ("abc", "0", "-1", "99999999999999999999", "1.5", "1abc", "%20"):
            with self.subTest(id=bad):
                self.assertProblem(self.get("/api/v1/products/%s" % bad), 404, "product %r" % bad)
