"""Reference data: cities, districts, categories (api.md "Reference data")."""

from harness import ServerTestCase, fmt_resp, is_int

INVALID_IDS = ("abc", "0", "-1", "99999999999999999999", "1.5", "1e3")


class ReferenceTests(ServerTestCase):

    def test_cities_all_sorted_by_name(self):
        r = self.get("/api/v1/cities")
        b = self.assertJson(r, 200, "GET /api/v1/cities")
        items = b.get("items")
        self.assertIsInstance(items, list, fmt_resp(r))
        for it in items:
            self.assertEqual(set(it.keys()), {"id", "name", "slug"}, "city item fields: %r" % it)
            self.assertTrue(is_int(it["id"]), "city id is not an integer: %r" % it)
        expected = sorted(self.dataset.cities, key=lambda c: (c["name"], c["id"]))
        # The fixture inserts cities out of name order; make sure that
        # stays so, or this test could not tell "by name" from "by id".
        self.assertNotEqual([c["id"] for c in expected], sorted(c["id"] for c in expected))
        self.assertEqual(items, expected)

    def test_districts_of_city(self):
        msk = self.dataset.ids["msk"]
        r = self.get("/api/v1/cities/%d/districts" % msk)
        b = self.assertJson(r, 200, "districts of Moscow")
        items = b.get("items")
        self.assertIsInstance(items, list, fmt_resp(r))
        for it in items:
            self.assertEqual(set(it.keys()), {"id", "city_id", "name", "slug"},
                             "district item fields: %r" % it)
        expected = [d for d in self.dataset.districts if d["city_id"] == msk]
        self.assertEqual(len(expected), 3)
        self.assertEqual(sorted(items, key=lambda d: d["id"]), expected)

    def test_districts_of_city_without_districts_is_empty(self):
        r = self.get("/api/v1/cities/%d/districts" % self.dataset.ids["abk"])
        b = self.assertJson(r, 200, "districts of a city that has none")
        self.assertEqual(b.get("items"), [], fmt_resp(r))

    def test_districts_unknown_city_404(self):
        r = self.get("/api/v1/cities/999999/districts")
        self.assertProblem(r, 404, "districts of unknown city 999999")

    def test_districts_invalid_city_id_404(self):
        for bad in INVALID_IDS:
            with self.subTest(city_id=bad):
                r = self.get("/api/v1/cities/%s/districts" % bad)
                self.assertProblem(r, 404, "districts of city %r" % bad)

    def test_categories_all_with_null_parent_for_roots(self):
        r = self.get("/api/v1/categories")
        b = self.assertJson(r, 200, "GET /api/v1/categories")
        items = b.get("items")
        self.assertIsInstance(items, list, fmt_resp(r))
        for it in items:
            self.assertEqual(set(it.keys()), {"id", "parent_id", "name", "slug"},
                             "category item fields: %r" % it)
        self.assertEqual(sorted(items, key=lambda c: c["id"]), self.dataset.categories)
        roots = [c for c in items if c["parent_id"] is None]
        self.assertEqual(sorted(c["slug"] for c in roots), ["clothes", "electronics", "misc"])
