"""HTTP caching of the cacheable GETs (api.md "Conventions": X-Cache, a
strong ETag, If-None-Match -> 304; "Products": which GETs are cacheable).

The server runs without Redis here, so X-Cache may well be BYPASS; the ETag
and 304 behaviour do not depend on a cache being configured."""

import re

from harness import ServerTestCase, fmt_resp

ETAG_RE = re.compile(r'"[\x21\x23-\x7e]*"')


class CachingHeadersTests(ServerTestCase):

    def cacheable_paths(self):
        ids = self.dataset.ids
        return ["/api/v1/cities", "/api/v1/categories", "/api/v1/cities/%d/districts" % ids["msk"],
                "/api/v1/products?city_id=%d" % ids["msk"], "/api/v1/products/%d" % ids["p_s23"],
                "/api/v1/sellers/%d" % ids["s1"], "/api/v1/sellers/popular"]

    def test_cacheable_gets_have_strong_etag_and_x_cache(self):
        for path in self.cacheable_paths():
            with self.subTest(path=path):
                r1 = self.get(path)
                self.assertStatus(r1, 200, path)
                etag = r1.headers.get("ETag")
                self.assertTrue(etag, "%s: no ETag\n%s" % (path, fmt_resp(r1)))
                self.assertFalse(etag.startswith("W/"), "%s: ETag %r is weak" % (path, etag))
                self.assertTrue(ETAG_RE.fullmatch(etag), "%s: ETag %r is not a quoted entity-tag" % (path, etag))
                self.assertIn(r1.headers.get("X-Cache"), ("HIT", "MISS", "BYPASS"),
                              "%s: X-Cache\n%s" % (path, fmt_resp(r1)))
                r2 = self.get(path)
                self.assertEqual(r2.headers.get("ETag"), etag, "%s: ETag changed without a write" % path)
                self.assertEqual(r2.body, r1.body, "%s: body changed without a write" % path)

    def test_if_none_match_304(self):
        for path in self.cacheable_paths():
            with self.subTest(path=path):
                r1 = self.get(path)
                etag = r1.headers.get("ETag")
                self.assertTrue(etag, "%s: no ETag\n%s" % (path, fmt_resp(r1)))
                r3 = self.get(path, headers={"If-None-Match": etag})
                self.assertStatus(r3, 304, "%s If-None-Match: %s" % (path, etag))
                self.assertEqual(r3.body, b"", "%s: 304 with a body" % path)
                self.assertEqual(r3.headers.get("ETag"), etag, "%s: 304 without the ETag" % path)
                self.assertTrue(r3.headers.get("X-Request-Id"), "%s: 304 without X-Request-Id" % path)
                r4 = self.get(path, headers={"If-None-Match": '"not-the-etag", %s' % etag})
                self.assertStatus(r4, 304, "%s If-None-Match list containing the ETag" % path)
                r5 = self.get(path, headers={"If-None-Match": '"not-the-etag"'})
                self.assertStatus(r5, 200, "%s If-None-Match: another tag" % path)
                self.assertEqual(r5.body, r1.body)

    def test_etag_differs_between_resources(self):
        ids = self.dataset.ids
        tags = {}
        for path in ("/api/v1/products/%d" % ids["p_s23"], "/api/v1/products/%d" % ids["p_redmi"],
                     "/api/v1/products?limit=2", "/api/v1/products?limit=3",
                     "/api/v1/sellers/%d" % ids["s1"], "/api/v1/sellers/%d" % ids["s2"]):
            r = self.get(path)
            self.assertStatus(r, 200, path)
            self.assertTrue(r.headers.get("ETag"), "%s: no ETag" % path)
            tags[path] = r.headers.get("ETag")
        self.assertEqual(len(set(tags.values())), len(tags), "ETags collide: %r" % tags)
