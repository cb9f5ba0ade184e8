"""The catalogue write path (api.md "Reference data", "Sellers", "Products"):
admin reference writes, seller profiles, products, product images (S13).

Tokens are minted here with the server's JWT_SECRET (HS256, the claims
marketd issues), so tests act as any user of the dataset without a password.
Every test makes its own users, sellers and products (unique slugs and
emails), so the tests of a class do not depend on their order even though
they share one database.
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import stat
import struct
import tempfile
import time
import zlib

import harness
from harness import ServerTestCase, db_connect, fmt_resp, is_int

JWT_SECRET = "0123456789abcdef0123456789abcdef"
CDN = "https://cdn.example.test/media"

SELLER_FIELDS = ["id", "user_id", "name", "description", "city_id", "district_id", "rating", "created_at"]
PRODUCT_FIELDS = ["id", "seller_id", "seller", "category_id", "title", "description", "price", "currency",
                  "stock", "city_id", "district_id", "images", "status", "created_at", "updated_at"]

def jpeg_bytes(width=640, height=480, tail=bytes(range(256)) * 4):
    """SOI, APP0 (JFIF), a baseline frame header (SOF0, 3 components), then
    `tail` standing in for the tables and the scan: what the backend parses."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof0 + tail


def png_bytes(width=640, height=480, tail=bytes(range(255, -1, -1)) * 4):
    """The signature and an IHDR chunk (8-bit RGB) with its CRC, then `tail`."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
            + tail)


def webp_bytes(width=640, height=480, tail=bytes(range(128)) * 8):
    """RIFF/WEBP with a lossy key frame header (VP8 chunk), then `tail`."""
    frame = b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", width, height) + tail
    chunk = b"VP8 " + struct.pack("<I", len(frame)) + frame
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


JPEG = jpeg_bytes()
PNG = png_bytes()
WEBP = webp_bytes()

_seq = itertools.count(1)


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


def ts(s):
    """An RFC 3339 timestamp of an answer, comparable."""
    return harness.parse_rfc3339_utc(s)[0]


def unique(prefix):
    return "%s-%d-%d" % (prefix, os.getpid(), next(_seq))


class CatalogueWriteCase(ServerTestCase):
    """Starts the server with a JWT_SECRET (the harness sets none) and a
    private MEDIA_DIR, and offers helpers for acting as users."""

    @classmethod
    def make_media_dir(cls):
        return tempfile.mkdtemp(prefix="media-", dir=harness.TEST_TMPDIR)

    @classmethod
    def setUpClass(cls):
        cls.media_dir = cls.make_media_dir()
        cls.server_env = {"JWT_SECRET": JWT_SECRET, "MEDIA_DIR": cls.media_dir, "CDN_BASE_URL": CDN,
                          "DB_POOL_SIZE": "8"}
        super().setUpClass()

    # -- database ---------------------------------------------------------

    def db(self, sql, args=()):
        return harness.db_query(sql, args)

    def db_one(self, sql, args=()):
        rows = self.db(sql, args)
        self.assertEqual(len(rows), 1, "expected one row from %s %r, got %r" % (sql, args, rows))
        return rows[0]

    def new_user(self, admin=False):
        email = unique("u") + "@example.test"
        return self.db_one(
            "INSERT INTO users (email, password_hash, name, is_admin) VALUES (%s, 'x', 'Тест', %s) RETURNING id",
            (email, admin))[0]

    def counts(self):
        return self.db_one("SELECT (SELECT count(*) FROM cities), (SELECT count(*) FROM districts),"
                           " (SELECT count(*) FROM categories), (SELECT count(*) FROM sellers),"
                           " (SELECT count(*) FROM products)")

    # -- requests ---------------------------------------------------------

    def call(self, method, path, uid=None, body=None, headers=None):
        h = dict(headers or {})
        if uid is not None:
            h["Authorization"] = "Bearer " + token_for(uid)
        return self.req(method, path, body=body, headers=h)

    def new_seller(self, uid=None, city=None, district=None, name="Магазин"):
        uid = uid or self.new_user()
        city = city or self.dataset.ids["msk"]
        district = district or self.dataset.ids["tver"]
        r = self.call("POST", "/api/v1/sellers", uid,
                      {"name": name, "description": "", "city_id": city, "district_id": district})
        b = self.assertJson(r, 201, "create seller")
        return uid, b

    def new_product(self, uid, **fields):
        body = {"title": "Товар", "price": 1000, "stock": 5, "category_id": self.dataset.ids["phones"]}
        body.update(fields)
        r = self.call("POST", "/api/v1/products", uid, body)
        return self.assertJson(r, 201, "create product %r" % body)

    def assertInvalid(self, r, *fields, what=""):
        """422 naming (at least) these fields in errors[]."""
        b = self.assertProblem(r, 422, what)
        got = {e.get("field") for e in b.get("errors", [])}
        for f in fields:
            self.assertIn(f, got, "%s: errors[] does not name %r\n%s" % (what, f, fmt_resp(r)))
        return b

    def assertSameDocument(self, a, b, what):
        """Same members, same order, same values (what a client or a cache
        comparing bytes would see)."""
        self.assertEqual(list(a.items()), list(b.items()), what)


# ---------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------

class ReferenceWriteTests(CatalogueWriteCase):

    def setUp(self):
        super().setUp()
        self.admin = self.new_user(admin=True)

    def test_city_create_listed_and_duplicate_409(self):
        slug = unique("city")
        r = self.call("POST", "/api/v1/cities", self.admin, {"name": "Тула", "slug": slug})
        b = self.assertJson(r, 201, "POST /cities")
        self.assertEqual(list(b.keys()), ["id", "name", "slug"])
        self.assertTrue(is_int(b["id"]))
        self.assertEqual((b["name"], b["slug"]), ("Тула", slug))
        items = self.assertJson(self.get("/api/v1/cities"))["items"]
        self.assertIn(b, items, "the new city is in GET /cities in the same shape")
        before = self.counts()
        r = self.call("POST", "/api/v1/cities", self.admin, {"name": "Другая", "slug": slug})
        self.assertProblem(r, 409, "same slug")
        self.assertEqual(self.counts(), before, "a refused write changes nothing")

    def test_reference_writes_need_an_admin(self):
        user = self.new_user()
        city = self.dataset.ids["msk"]
        before = self.counts()
        for path, body in (("/api/v1/cities", {"name": "X", "slug": unique("c")}),
                           ("/api/v1/cities/%d/districts" % city, {"name": "X", "slug": unique("d")}),
                           ("/api/v1/categories", {"name": "X", "slug": unique("k")})):
            with self.subTest(path=path):
                r = self.call("POST", path, None, body)
                self.assertProblem(r, 401, "no token")
                self.assertIn("Bearer", r.headers.get("WWW-Authenticate", ""))
                self.assertProblem(self.call("POST", path, user, body), 403, "not an admin")
                self.assertProblem(self.call("POST", path, 987654321, body), 403, "a user that does not exist")
                bad = dict(Authorization="Bearer " + token_for(self.admin, secret="x" * 32))
                self.assertProblem(self.req("POST", path, body=body, headers=bad), 401, "foreign signature")
        self.assertEqual(self.counts(), before)

    def test_district_create(self):
        msk, kzn = self.dataset.ids["msk"], self.dataset.ids["kzn"]
        slug = unique("dist")
        r = self.call("POST", "/api/v1/cities/%d/districts" % msk, self.admin, {"name": "Новый", "slug": slug})
        b = self.assertJson(r, 201)
        self.assertEqual(list(b.keys()), ["id", "city_id", "name", "slug"])
        self.assertEqual((b["city_id"], b["name"], b["slug"]), (msk, "Новый", slug))
        items = self.assertJson(self.get("/api/v1/cities/%d/districts" % msk))["items"]
        self.assertIn(b, items)
        # The same slug in another city is another scope; in the same city a conflict.
        r = self.call("POST", "/api/v1/cities/%d/districts" % kzn, self.admin, {"name": "Новый", "slug": slug})
        self.assertJson(r, 201, "same slug, other city")
        r = self.call("POST", "/api/v1/cities/%d/districts" % msk, self.admin, {"name": "Ещё", "slug": slug})
        self.assertProblem(r, 409, "same slug, same city")
        before = self.counts()
        r = self.call("POST", "/api/v1/cities/999999/districts", self.admin, {"name": "X", "slug": unique("d")})
        self.assertProblem(r, 404, "unknown city")
        r = self.call("POST", "/api/v1/cities/abc/districts", self.admin, {"name": "X", "slug": unique("d")})
        self.assertProblem(r, 404, "malformed city id")
        self.assertEqual(self.counts(), before)

    def test_category_create_two_levels(self):
        slug = unique("cat")
        r = self.call("POST", "/api/v1/categories", self.admin, {"name": "Книги", "slug": slug})
        root = self.assertJson(r, 201, "root, parent_id absent")
        self.assertEqual(list(root.keys()), ["id", "parent_id", "name", "slug"])
        self.assertIsNone(root["parent_id"])
        r = self.call("POST", "/api/v1/categories", self.admin, {"name": "К", "slug": slug, "parent_id": None})
        self.assertProblem(r, 409, "a root with the same slug (parent_id null)")
        r = self.call("POST", "/api/v1/categories", self.admin,
                      {"name": "Фантастика", "slug": slug, "parent_id": root["id"]})
        child = self.assertJson(r, 201, "the same slug under a parent is another scope")
        self.assertEqual(child["parent_id"], root["id"])
        items = self.assertJson(self.get("/api/v1/categories"))["items"]
        self.assertIn(root, items)
        self.assertIn(child, items)
        r = self.call("POST", "/api/v1/categories", self.admin,
                      {"name": "Ф2", "slug": slug, "parent_id": root["id"]})
        self.assertProblem(r, 409, "same slug, same parent")
        before = self.counts()
        r = self.call("POST", "/api/v1/categories", self.admin,
                      {"name": "Глубже", "slug": unique("deep"), "parent_id": child["id"]})
        self.assertInvalid(r, "parent_id", what="a parent that has a parent")
        r = self.call("POST", "/api/v1/categories", self.admin,
                      {"name": "Глубже", "slug": unique("deep"), "parent_id": self.dataset.ids["phones"]})
        self.assertInvalid(r, "parent_id", what="a sub-category of the dataset as parent")
        r = self.call("POST", "/api/v1/categories", self.admin,
                      {"name": "Сирота", "slug": unique("orphan"), "parent_id": 999999})
        self.assertInvalid(r, "parent_id", what="unknown parent")
        r = self.call("POST", "/api/v1/categories", self.admin,
                      {"name": "Сирота", "slug": unique("orphan"), "parent_id": "1"})
        self.assertInvalid(r, "parent_id", what="parent_id as a string")
        self.assertEqual(self.counts(), before)

    # 422 naming each bad field, 400 for a body that is not JSON or not an
    # object, 415 for one that is not application/json, and nothing created
    # (conv-bad-body, conv-base-path, conv-errors).
    def test_validation(self):
        before = self.counts()
        cases = [
            ({"slug": "ok"}, ["name"]),
            ({"name": "X"}, ["slug"]),
            ({"name": "", "slug": "ok"}, ["name"]),
            ({"name": "я" * 201, "slug": "ok"}, ["name"]),
            ({"name": "X", "slug": ""}, ["slug"]),
            ({"name": "X", "slug": "Upper"}, ["slug"]),
            ({"name": "X", "slug": "-lead"}, ["slug"]),
            ({"name": "X", "slug": "under_score"}, ["slug"]),
            ({"name": "X", "slug": "тула"}, ["slug"]),
            ({"name": "X", "slug": "a" * 101}, ["slug"]),
            ({"name": 5, "slug": 6}, ["name", "slug"]),
            ({"name": "X", "slug": "ok-" + unique("s"), "extra": 1}, ["extra"]),
        ]
        for body, fields in cases:
            with self.subTest(body=body):
                self.assertInvalid(self.call("POST", "/api/v1/cities", self.admin, body), *fields)
        self.assertInvalid(self.call("POST", "/api/v1/cities/%d/districts" % self.dataset.ids["msk"], self.admin,
                                     {"name": "X", "slug": "ok", "parent_id": None}), "parent_id")
        self.assertProblem(self.call("POST", "/api/v1/cities", self.admin, [1]), 400, "not an object")
        self.assertProblem(self.call("POST", "/api/v1/cities", self.admin, "{",
                                     headers={"Content-Type": "application/json"}), 400, "not JSON")
        r = self.call("POST", "/api/v1/cities", self.admin, b'{"name":"X","slug":"ok"}',
                      headers={"Content-Type": "text/plain"})
        self.assertProblem(r, 415, "not application/json")
        self.assertEqual(self.counts(), before)
        # The edges that are allowed.
        r = self.call("POST", "/api/v1/cities", self.admin, {"name": "я" * 200, "slug": "9" + "a-" * 49 + "z"})
        self.assertJson(r, 201, "200-character name, 100-character slug")


# ---------------------------------------------------------------------------
# Sellers
# ---------------------------------------------------------------------------

class SellerWriteTests(CatalogueWriteCase):

    def test_create_matches_get_and_one_per_user(self):
        uid = self.new_user()
        msk, tver = self.dataset.ids["msk"], self.dataset.ids["tver"]
        body = {"name": "Лавка", "description": "Книги", "city_id": msk, "district_id": tver}
        r = self.call("POST", "/api/v1/sellers", uid, body)
        s = self.assertJson(r, 201)
        self.assertEqual(list(s.keys()), SELLER_FIELDS)
        self.assertEqual((s["user_id"], s["name"], s["description"], s["city_id"], s["district_id"]),
                         (uid, "Лавка", "Книги", msk, tver))
        self.assertRating(s["rating"], 0, "new seller rating")
        self.assertEqual(r.headers.get("Location"), "/api/v1/sellers/%d" % s["id"])
        self.assertSameDocument(self.assertJson(self.get("/api/v1/sellers/%d" % s["id"])), s, "GET = POST answer")
        before = self.counts()
        r = self.call("POST", "/api/v1/sellers", uid, body)
        self.assertProblem(r, 409, "a second profile")
        self.assertEqual(self.counts(), before)
        # The description is optional and defaults to "".
        _, s2 = self.new_seller()
        self.assertEqual(s2["description"], "")

    def test_create_validation(self):
        uid = self.new_user()
        ids = self.dataset.ids
        ok = {"name": "Лавка", "city_id": ids["msk"], "district_id": ids["tver"]}
        before = self.counts()
        cases = [
            ({k: v for k, v in ok.items() if k != "district_id"}, ["district_id"]),
            ({k: v for k, v in ok.items() if k != "city_id"}, ["city_id"]),
            ({k: v for k, v in ok.items() if k != "name"}, ["name"]),
            (dict(ok, name=""), ["name"]),
            (dict(ok, name="я" * 201), ["name"]),
            (dict(ok, description="я" * 5001), ["description"]),
            (dict(ok, description=None), ["description"]),
            (dict(ok, city_id="1"), ["city_id"]),
            (dict(ok, district_id=None), ["district_id"]),
            (dict(ok, district_id=0), ["district_id"]),
            (dict(ok, rating=5), ["rating"]),
            (dict(ok, user_id=1), ["user_id"]),
            (dict(ok, city_id=999999), ["city_id"]),
            (dict(ok, district_id=ids["vakh"]), ["district_id"]),  # a district of Kazan
            (dict(ok, district_id=999999), ["district_id"]),
        ]
        for body, fields in cases:
            with self.subTest(body={k: (v if not isinstance(v, str) or len(v) < 20 else v[:5] + "…")
                                    for k, v in body.items()}):
                self.assertInvalid(self.call("POST", "/api/v1/sellers", uid, body), *fields)
        self.assertProblem(self.call("POST", "/api/v1/sellers", None, ok), 401)
        self.assertProblem(self.call("POST", "/api/v1/sellers", 987654321, ok), 401, "the token's user is gone")
        self.assertEqual(self.counts(), before)
        r = self.call("POST", "/api/v1/sellers", uid, dict(ok, description="я" * 5000, name="я" * 200))
        self.assertJson(r, 201, "the longest name and description")

    def test_patch_owner_only(self):
        uid, s = self.new_seller()
        other = self.new_user()
        r = self.call("PATCH", "/api/v1/sellers/%d" % s["id"], uid, {"name": "Новое имя", "description": "Описание"})
        got = self.assertJson(r, 200)
        self.assertEqual(list(got.keys()), SELLER_FIELDS)
        self.assertEqual((got["name"], got["description"]), ("Новое имя", "Описание"))
        self.assertEqual((got["id"], got["created_at"], got["city_id"]), (s["id"], s["created_at"], s["city_id"]))
        self.assertSameDocument(self.assertJson(self.get("/api/v1/sellers/%d" % s["id"])), got, "GET = PATCH")
        r = self.call("PATCH", "/api/v1/sellers/%d" % s["id"], other, {"name": "Захват"})
        self.assertProblem(r, 403, "someone else's profile")
        self.assertProblem(self.call("PATCH", "/api/v1/sellers/999999", uid, {"name": "X"}), 404)
        self.assertProblem(self.call("PATCH", "/api/v1/sellers/%d" % s["id"], None, {"name": "X"}), 401)
        self.assertInvalid(self.call("PATCH", "/api/v1/sellers/%d" % s["id"], uid, {"user_id": other}), "user_id")
        self.assertInvalid(self.call("PATCH", "/api/v1/sellers/%d" % s["id"], uid, {"name": ""}), "name")
        self.assertInvalid(self.call("PATCH", "/api/v1/sellers/%d" % s["id"], uid, {"district_id": None}),
                           "district_id")
        self.assertEqual(self.assertJson(self.get("/api/v1/sellers/%d" % s["id"]))["name"], "Новое имя")
        # An empty PATCH changes nothing and answers the profile.
        self.assertSameDocument(self.assertJson(self.call("PATCH", "/api/v1/sellers/%d" % s["id"], uid, {})), got,
                                "empty PATCH")

    def test_move_keeps_products_in_step(self):
        ids = self.dataset.ids
        uid, s = self.new_seller(city=ids["msk"], district=ids["tver"])
        p1 = self.new_product(uid, title="Первый")
        p2 = self.new_product(uid, title="Второй")
        path = "/api/v1/sellers/%d" % s["id"]
        before = self.counts()
        # The old district belongs to the old city: a new city needs a district.
        self.assertInvalid(self.call("PATCH", path, uid, {"city_id": ids["kzn"]}), "district_id")
        self.assertInvalid(self.call("PATCH", path, uid, {"city_id": ids["kzn"], "district_id": ids["arbat"]}),
                           "district_id")
        self.assertInvalid(self.call("PATCH", path, uid, {"district_id": ids["vakh"]}), "district_id")
        self.assertInvalid(self.call("PATCH", path, uid, {"city_id": 999999, "district_id": ids["vakh"]}), "city_id")
        self.assertEqual(self.counts(), before)
        self.assertEqual(self.assertJson(self.get(path))["city_id"], ids["msk"], "failed moves change nothing")
        # Same city, another district of it.
        got = self.assertJson(self.call("PATCH", path, uid, {"district_id": ids["arbat"]}))
        self.assertEqual((got["city_id"], got["district_id"]), (ids["msk"], ids["arbat"]))
        # Another city with one of its districts: the products follow.
        got = self.assertJson(self.call("PATCH", path, uid, {"city_id": ids["kzn"], "district_id": ids["vakh"]}))
        self.assertEqual((got["city_id"], got["district_id"]), (ids["kzn"], ids["vakh"]))
        for p in (p1, p2):
            d = self.assertJson(self.get("/api/v1/products/%d" % p["id"]))
            self.assertEqual((d["city_id"], d["district_id"]), (ids["kzn"], ids["vakh"]), "product %d" % p["id"])
            self.assertGreater(ts(d["updated_at"]), ts(p["updated_at"]), "its JSON changed, so did updated_at")
        rows = self.db("SELECT count(*) FROM products WHERE seller_id = %s AND (city_id, district_id) = (%s, %s)",
                       (s["id"], ids["kzn"], ids["vakh"]))
        self.assertEqual(rows[0][0], 2)
        listed = self.assertJson(self.get("/api/v1/products", {"district_id": ids["vakh"], "seller_id": s["id"]}))
        self.assertEqual(sorted(i["id"] for i in listed["items"]), sorted([p1["id"], p2["id"]]))
        listed = self.assertJson(self.get("/api/v1/products", {"city_id": ids["msk"], "seller_id": s["id"]}))
        self.assertEqual(listed["items"], [], "nothing left in the old city")


# ---------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------

class ProductWriteTests(CatalogueWriteCase):

    # The product as api.md has it: price in kopecks with currency RUB (conv-money).
    def test_create_matches_get(self):
        ids = self.dataset.ids
        uid, s = self.new_seller(city=ids["kzn"], district=ids["vakh"], name="Продавец книг")
        body = {"title": "Дюна", "description": "Роман\nв двух томах", "price": 59900, "stock": 3,
                "category_id": ids["phones"]}
        r = self.call("POST", "/api/v1/products", uid, body)
        p = self.assertJson(r, 201)
        self.assertEqual(list(p.keys()), PRODUCT_FIELDS)
        self.assertEqual(r.headers.get("Location"), "/api/v1/products/%d" % p["id"])
        for k, v in body.items():
            self.assertEqual(p[k], v, k)
        self.assertEqual((p["seller_id"], p["city_id"], p["district_id"]), (s["id"], ids["kzn"], ids["vakh"]))
        self.assertEqual(p["seller"], {"id": s["id"], "name": "Продавец книг", "rating": s["rating"]})
        self.assertEqual((p["currency"], p["images"], p["status"]), ("RUB", [], "active"))
        self.assertEqual(p["created_at"], p["updated_at"])
        self.assertSameDocument(self.assertJson(self.get("/api/v1/products/%d" % p["id"])), p, "GET = POST")
        root = self.db_one("SELECT category_root_id FROM products WHERE id = %s", (p["id"],))[0]
        self.assertEqual(root, ids["electronics"], "category_root_id is the parent of a sub-category")
        p2 = self.new_product(uid, category_id=ids["misc"])
        self.assertEqual(p2["description"], "", "description defaults to empty")
        root = self.db_one("SELECT category_root_id FROM products WHERE id = %s", (p2["id"],))[0]
        self.assertEqual(root, ids["misc"], "a root category is its own root")
        listed = self.assertJson(self.get("/api/v1/products", {"category_id": ids["electronics"],
                                                               "seller_id": s["id"]}))
        self.assertEqual([i["id"] for i in listed["items"]], [p["id"]], "found through the parent category")

    def test_create_needs_a_seller_profile(self):
        before = self.counts()
        r = self.call("POST", "/api/v1/products", self.new_user(),
                      {"title": "X", "price": 1, "stock": 1, "category_id": self.dataset.ids["misc"]})
        self.assertProblem(r, 403, "no seller profile")
        r = self.call("POST", "/api/v1/products", None,
                      {"title": "X", "price": 1, "stock": 1, "category_id": self.dataset.ids["misc"]})
        self.assertProblem(r, 401)
        self.assertEqual(self.counts(), before)

    def test_create_validation(self):
        uid, _ = self.new_seller()
        ok = {"title": "X", "price": 1, "stock": 0, "category_id": self.dataset.ids["misc"]}
        before = self.counts()
        cases = [
            ({}, ["title", "price", "stock", "category_id"]),
            (dict(ok, title=""), ["title"]),
            (dict(ok, title="я" * 201), ["title"]),
            (dict(ok, description="я" * 5001), ["description"]),
            (dict(ok, price=0), ["price"]),
            (dict(ok, price=10 ** 11 + 1), ["price"]),
            (dict(ok, price=1.5), ["price"]),
            (dict(ok, price="100"), ["price"]),
            (dict(ok, stock=-1), ["stock"]),
            (dict(ok, stock=10 ** 6 + 1), ["stock"]),
            (dict(ok, stock=None), ["stock"]),
            (dict(ok, category_id=999999), ["category_id"]),
            (dict(ok, category_id=0), ["category_id"]),
            (dict(ok, status="active"), ["status"]),
            (dict(ok, seller_id=1), ["seller_id"]),
            (dict(ok, images=[]), ["images"]),
        ]
        for body, fields in cases:
            with self.subTest(body={k: (v if not isinstance(v, str) or len(v) < 20 else v[:5] + "…")
                                    for k, v in body.items()}):
                self.assertInvalid(self.call("POST", "/api/v1/products", uid, body), *fields)
        self.assertProblem(self.call("POST", "/api/v1/products", uid, [ok]), 400)
        self.assertEqual(self.counts(), before)
        p = self.new_product(uid, title="я" * 200, description="я" * 5000, price=10 ** 11, stock=10 ** 6)
        self.assertEqual((p["price"], p["stock"]), (10 ** 11, 10 ** 6))

    def test_patch(self):
        ids = self.dataset.ids
        uid, _ = self.new_seller()
        p = self.new_product(uid, category_id=ids["phones"])
        path = "/api/v1/products/%d" % p["id"]
        time.sleep(0.002)  # updated_at has microseconds; make "later" observable
        r = self.call("PATCH", path, uid, {"title": "Новое", "description": "Д", "price": 777, "stock": 9,
                                           "category_id": ids["shoes"]})
        got = self.assertJson(r, 200)
        self.assertEqual(list(got.keys()), PRODUCT_FIELDS)
        self.assertEqual((got["title"], got["description"], got["price"], got["stock"], got["category_id"]),
                         ("Новое", "Д", 777, 9, ids["shoes"]))
        self.assertEqual(got["created_at"], p["created_at"])
        self.assertGreater(ts(got["updated_at"]), ts(p["updated_at"]))
        self.assertSameDocument(self.assertJson(self.get(path)), got, "GET = PATCH")
        root = self.db_one("SELECT category_root_id FROM products WHERE id = %s", (p["id"],))[0]
        self.assertEqual(root, ids["clothes"], "the root follows the new category")
        # status both ways
        got = self.assertJson(self.call("PATCH", path, uid, {"status": "archived"}))
        self.assertEqual(got["status"], "archived")
        got = self.assertJson(self.call("PATCH", path, uid, {"status": "active"}))
        self.assertEqual(got["status"], "active")
        # An empty PATCH changes nothing, not even updated_at.
        self.assertSameDocument(self.assertJson(self.call("PATCH", path, uid, {})), got, "empty PATCH")
        # Refusals change nothing, even when some fields were valid.
        for body, fields in (({"price": 5, "category_id": 999999}, ["category_id"]),
                             ({"price": 5, "status": "deleted"}, ["status"]),
                             ({"price": 0}, ["price"]),
                             ({"stock": 10 ** 6 + 1}, ["stock"]),
                             ({"title": None}, ["title"]),
                             ({"seller_id": 1}, ["seller_id"]),
                             ({"images": []}, ["images"])):
            with self.subTest(body=body):
                self.assertInvalid(self.call("PATCH", path, uid, body), *fields)
        self.assertProblem(self.call("PATCH", path, self.new_user(), {"price": 5}), 403, "not the owner")
        other_uid, _ = self.new_seller()
        self.assertProblem(self.call("PATCH", path, other_uid, {"price": 5}), 403, "another seller")
        self.assertProblem(self.call("PATCH", path, None, {"price": 5}), 401)
        self.assertProblem(self.call("PATCH", "/api/v1/products/999999", uid, {"price": 5}), 404)
        self.assertSameDocument(self.assertJson(self.get(path)), got, "nothing changed")

    def test_patch_does_not_undo_concurrent_stock_changes(self):
        uid, _ = self.new_seller()
        p = self.new_product(uid, stock=10)
        # An order took stock after the client read the product: a PATCH that
        # does not name stock must not write the old value back.
        self.db("UPDATE products SET stock = 7 WHERE id = %s", (p["id"],))
        got = self.assertJson(self.call("PATCH", "/api/v1/products/%d" % p["id"], uid, {"price": 1234}))
        self.assertEqual((got["price"], got["stock"]), (1234, 7))

    def test_delete_archives(self):
        uid, s = self.new_seller()
        p = self.new_product(uid)
        path = "/api/v1/products/%d" % p["id"]
        self.assertProblem(self.call("DELETE", path, self.new_user()), 403, "not the owner")
        self.assertProblem(self.call("DELETE", path, None), 401)
        self.assertProblem(self.call("DELETE", "/api/v1/products/999999", uid), 404)
        self.assertEqual(self.assertJson(self.get(path))["status"], "active")
        r = self.call("DELETE", path, uid)
        self.assertStatus(r, 204)
        self.assertEqual(r.body, b"")
        got = self.assertJson(self.get(path))
        self.assertEqual(got["status"], "archived", "the product stays, archived")
        self.assertGreater(ts(got["updated_at"]), ts(p["updated_at"]))
        listed = self.assertJson(self.get("/api/v1/products", {"seller_id": s["id"]}))
        self.assertEqual(listed["items"], [], "archived products are not listed")
        self.assertStatus(self.call("DELETE", path, uid), 204, "deleting again")
        self.assertSameDocument(self.assertJson(self.get(path)), got, "a second DELETE changes nothing")


# ---------------------------------------------------------------------------
# Images (S13)
# ---------------------------------------------------------------------------

class ProductImageTests(CatalogueWriteCase):

    def media_files(self):
        out = []
        for root, _, files in os.walk(self.media_dir):
            out += [os.path.join(root, f) for f in files]
        return sorted(out)

    def upload(self, pid, uid, data, ctype):
        h = {"Content-Type": ctype} if ctype else {}
        return self.call("POST", "/api/v1/products/%d/images" % pid, uid, data, headers=h)

    def test_upload_each_type(self):
        uid, _ = self.new_seller()
        p = self.new_product(uid)
        urls = []
        for data, ctype, ext in ((JPEG, "image/jpeg", "jpg"), (PNG, "image/png", "png"),
                                 (WEBP, "Image/WebP; q=1", "webp")):
            with self.subTest(ctype=ctype):
                r = self.upload(p["id"], uid, data, ctype)
                b = self.assertJson(r, 201)
                self.assertEqual(list(b.keys()), ["url"])
                h = hashlib.sha256(data).hexdigest()
                rel = "/%s/%s/%s.%s" % (h[:2], h[2:4], h, ext)
                self.assertEqual(b["url"], CDN + rel)
                path = self.media_dir + rel
                with open(path, "rb") as f:
                    self.assertEqual(f.read(), data, "stored bytes")
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o444, 0o444, "readable by nginx")
                urls.append(b["url"])
                stored = self.db_one("SELECT images FROM products WHERE id = %s", (p["id"],))[0]
                self.assertEqual(stored[-1], rel, "the database keeps the path, not the CDN URL")
        got = self.assertJson(self.get("/api/v1/products/%d" % p["id"]))
        self.assertEqual(got["images"], urls)
        self.assertEqual([f for f in self.media_files() if "/.upload-" in f], [], "no temporary files left")

    def test_reupload_is_idempotent_and_deduplicated(self):
        uid, _ = self.new_seller()
        p1 = self.new_product(uid)
        p2 = self.new_product(uid)
        data = JPEG + b"unique" + unique("img").encode()
        a = self.assertJson(self.upload(p1["id"], uid, data, "image/jpeg"), 201)
        files = self.media_files()
        after_first = self.assertJson(self.get("/api/v1/products/%d" % p1["id"]))
        b = self.assertJson(self.upload(p1["id"], uid, data, "image/jpeg"), 201)
        self.assertEqual(a, b)
        self.assertSameDocument(self.assertJson(self.get("/api/v1/products/%d" % p1["id"])), after_first,
                                "the same image again: listed once, updated_at unchanged")
        c = self.assertJson(self.upload(p2["id"], uid, data, "image/jpeg"), 201)
        self.assertEqual(c, a, "another product, the same bytes: the same URL")
        self.assertEqual(self.media_files(), files, "one file for the same bytes")

    def test_rejections_store_nothing(self):
        uid, _ = self.new_seller()
        p = self.new_product(uid)
        path = "/api/v1/products/%d" % p["id"]
        files = self.media_files()
        before = self.assertJson(self.get(path))
        self.assertProblem(self.upload(p["id"], uid, PNG, "image/jpeg"), 415, "PNG bytes declared JPEG")
        self.assertProblem(self.upload(p["id"], uid, JPEG, "image/webp"), 415, "JPEG bytes declared WebP")
        self.assertProblem(self.upload(p["id"], uid, b"GIF89a" + bytes(100), "image/gif"), 415, "GIF")
        self.assertProblem(self.upload(p["id"], uid, b"GIF89a" + bytes(100), "image/jpeg"), 415, "GIF as JPEG")
        self.assertProblem(self.upload(p["id"], uid, b"RIFF\0\0\0\0WAVEfmt ", "image/webp"), 415, "RIFF, not WebP")
        self.assertProblem(self.upload(p["id"], uid, b"\xff\xd8", "image/jpeg"), 415, "two bytes")
        self.assertProblem(self.upload(p["id"], uid, JPEG, "application/octet-stream"), 415)
        self.assertProblem(self.upload(p["id"], uid, JPEG, None), 415, "no Content-Type")
        self.assertProblem(self.upload(p["id"], uid, b"", "image/jpeg"), 400, "empty body")
        big = b"\xff\xd8\xff" + bytes(5 * 1024 * 1024 - 2)
        self.assertProblem(self.upload(p["id"], uid, big, "image/jpeg"), 413, "5 MiB + 1 byte")
        self.assertProblem(self.upload(p["id"], self.new_user(), JPEG, "image/jpeg"), 403, "not the owner")
        self.assertProblem(self.upload(p["id"], None, JPEG, "image/jpeg"), 401)
        self.assertProblem(self.upload(999999, uid, JPEG, "image/jpeg"), 404)
        self.assertEqual(self.media_files(), files, "nothing stored")
        self.assertSameDocument(self.assertJson(self.get(path)), before, "product unchanged")
        r = self.req("GET", path + "/images")
        self.assertProblem(r, 405)
        # Exactly 5 MiB is accepted.
        five = JPEG + bytes(5 * 1024 * 1024 - len(JPEG))
        self.assertJson(self.upload(p["id"], uid, five, "image/jpeg"), 201, "exactly 5 MiB")

    def test_image_count_is_bounded(self):
        uid, _ = self.new_seller()
        p = self.new_product(uid)
        full = ["/00/00/%064x.jpg" % i for i in range(50)]
        self.db("UPDATE products SET images = %s WHERE id = %s", (full, p["id"]))
        files = self.media_files()
        self.assertProblem(self.upload(p["id"], uid, PNG + b"x", "image/png"), 409, "51st image")
        self.assertEqual(self.db_one("SELECT images FROM products WHERE id = %s", (p["id"],))[0], full)
        self.assertEqual(self.media_files(), files, "a refused 51st image leaves no file (issue 10)")

    def test_archived_product_takes_no_image(self):
        uid, _ = self.new_seller()
        p = self.new_product(uid)
        self.assertStatus(self.call("DELETE", "/api/v1/products/%d" % p["id"], uid), 204)
        files = self.media_files()
        r = self.upload(p["id"], uid, JPEG + unique("archived").encode(), "image/jpeg")
        self.assertProblem(r, 409, "an archived product")
        self.assertIn("archived", r.body["detail"])
        self.assertEqual(self.db_one("SELECT images FROM products WHERE id = %s", (p["id"],))[0], [])
        self.assertEqual(self.media_files(), files, "a refused upload leaves no file")

    def test_header_beyond_magic_bytes(self):
        """The magic bytes are not enough: the header must parse and give
        plausible dimensions (issue 10)."""
        uid, _ = self.new_seller()
        p = self.new_product(uid)
        files = self.media_files()
        html = b"<!doctype html><script>alert(document.cookie)</script>" * 10
        bad = (
            (b"\xff\xd8\xff" + html, "image/jpeg", "JPEG magic, then HTML"),
            (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + html, "image/jpeg", "JFIF segment, then HTML"),
            (jpeg_bytes(tail=b"")[:30], "image/jpeg", "JPEG cut inside the frame header"),
            (jpeg_bytes(0, 480), "image/jpeg", "JPEG zero width"),
            (jpeg_bytes(65535, 65535), "image/jpeg", "JPEG 65535 x 65535"),
            (png_bytes(tail=b"")[:24], "image/png", "PNG cut inside IHDR"),
            (png_bytes(640, 0), "image/png", "PNG zero height"),
            (png_bytes(1 << 30, 1 << 30), "image/png", "PNG 2^30 x 2^30"),
            (b"\x89PNG\r\n\x1a\n" + html, "image/png", "PNG signature, then HTML"),
            (webp_bytes(0, 10), "image/webp", "WebP zero width"),
            (b"RIFF\x24\x04\x00\x00WEBPVP8 " + html, "image/webp", "WebP chunk without a frame header"),
            (webp_bytes(tail=b"")[:24], "image/webp", "WebP cut inside VP8"),
        )
        for data, ctype, what in bad:
            with self.subTest(what):
                r = self.upload(p["id"], uid, data, ctype)
                self.assertProblem(r, 415, what)
        self.assertEqual(self.db_one("SELECT images FROM products WHERE id = %s", (p["id"],))[0], [])
        self.assertEqual(self.media_files(), files, "nothing stored")
        for data, ctype in ((jpeg_bytes(1, 1), "image/jpeg"), (png_bytes(16384, 1), "image/png"),
                            (webp_bytes(16383, 16383), "image/webp")):
            self.assertJson(self.upload(p["id"], uid, data, ctype), 201, "a valid header at the bounds")


class ProductImageStorageFailureTests(CatalogueWriteCase):
    """MEDIA_DIR that cannot hold directories: the upload fails with 500
    and the product is unchanged."""

    @classmethod
    def make_media_dir(cls):
        fd, blocker = tempfile.mkstemp(prefix="not-a-dir-", dir=harness.TEST_TMPDIR)
        os.close(fd)
        return blocker

    def test_unwritable_media_dir_500(self):
        uid, _ = self.new_seller()
        p = self.new_product(uid)
        before = self.assertJson(self.get("/api/v1/products/%d" % p["id"]))
        r = self.call("POST", "/api/v1/products/%d/images" % p["id"], uid, JPEG,
                      headers={"Content-Type": "image/jpeg"})
        self.assertProblem(r, 500)
        self.assertSameDocument(self.assertJson(self.get("/api/v1/products/%d" % p["id"])), before,
                                "a failed upload changes nothing")
