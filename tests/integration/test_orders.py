"""Orders (api.md "Orders"; S6, B2, B6, B8).

Creating an order (stock taken in the same transaction, nothing taken on a
refusal), Idempotency-Key, no oversell under concurrency, the order
history (role, status, from/to, keyset cursor over the month partitions),
visibility (strangers get 404), cancel and the seller's status transitions.

Users, sellers and products are inserted with SQL and tokens minted here
with the server's JWT_SECRET (HS256, the claims src/core/jwt.c issues), so
any number of users costs no Argon2id. Orders are made through the API,
except where a test needs chosen created_at values: those are inserted with
marketd_order_id(created_at, n) and matching order_items rows.
"""

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import itertools
import json
import os
import random
import threading
import time
from collections import namedtuple

import harness
from harness import ServerTestCase, db_connect, fmt_resp, is_int, parallel, wait_until

JWT_SECRET = "orders-tests-secret-0123456789abcdef-0123456789"
UTC = dt.timezone.utc

ORDER_FIELDS = ["id", "buyer_id", "seller_id", "status", "items", "total", "currency", "created_at", "updated_at"]
ITEM_FIELDS = ["product_id", "title", "price", "quantity"]
STATUSES = ["new", "confirmed", "shipped", "delivered", "cancelled"]

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


def unique(prefix):
    return "%s-%d-%d" % (prefix, os.getpid(), next(_seq))


def ts(s):
    return harness.parse_rfc3339_utc(s)[0]


def rfc3339(value):
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


RawResponse = namedtuple("RawResponse", "status headers body raw")


def raw_request(port, method, path, body=None, headers=None, timeout=harness.HTTP_TIMEOUT):
    """Like harness.request, but also keeps the raw body bytes (to compare
    an idempotent replay byte for byte)."""
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray, str)):
        body = json.dumps(body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return RawResponse(resp.status, resp.headers, harness.decode_body(resp.headers, raw), raw)
    finally:
        conn.close()



def retry_503(send, patience_s=60.0):
    """send() again while it answers 503 + Retry-After, as a client does:
    on a busy machine the server's admission control may shed a burst of
    writes (api.md: 503 means overloaded, retry). Gives the last answer;
    bounded by patience_s, a hang detector."""
    deadline = time.monotonic() + patience_s
    while True:
        r = send()
        if getattr(r, "status", None) != 503 or not r.headers.get("Retry-After") or time.monotonic() > deadline:
            return r
        time.sleep(min(float(r.headers.get("Retry-After")), 1.0) * random.random())


def describe(results):
    return "\n".join(fmt_resp(r) if hasattr(r, "status") else "exception: %r" % (r,) for r in results)


class OrderCase(ServerTestCase):
    """A server with a known JWT_SECRET, and helpers that make users,
    sellers and products with SQL and act as them over HTTP."""

    server_env = {"JWT_SECRET": JWT_SECRET}

    # -- database ---------------------------------------------------------

    @staticmethod
    def db(sql, args=()):
        return harness.db_query(sql, args)

    @classmethod
    def db_one(cls, sql, args=()):
        rows = cls.db(sql, args)
        if len(rows) != 1:
            raise AssertionError("expected one row from %s %r, got %r" % (sql, args, rows))
        return rows[0]

    @classmethod
    def new_user(cls, name="Покупатель"):
        return cls.db_one("INSERT INTO users (email, password_hash, name) VALUES (%s, 'x', %s) RETURNING id",
                          (unique("u") + "@example.test", name))[0]

    @classmethod
    def new_seller(cls, name="Магазин"):
        """(user id, seller id)."""
        uid = cls.new_user(name)
        ids = cls.dataset.ids
        sid = cls.db_one("INSERT INTO sellers (user_id, name, city_id, district_id) VALUES (%s, %s, %s, %s)"
                         " RETURNING id", (uid, name, ids["msk"], ids["tver"]))[0]
        return uid, sid

    @classmethod
    def new_product(cls, seller_id, price=1000, stock=10, status="active", title=None):
        ids = cls.dataset.ids
        return cls.db_one(
            "INSERT INTO products (seller_id, category_id, category_root_id, city_id, district_id, title, price,"
            " stock, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (seller_id, ids["phones"], ids["electronics"], ids["msk"], ids["tver"],
             title or unique("Товар"), price, stock, status))[0]

    @classmethod
    def stock_db(cls, pid):
        return cls.db_one("SELECT stock FROM products WHERE id = %s", (pid,))[0]

    @classmethod
    def counts(cls):
        """(orders, order_items) rows in the whole database."""
        return cls.db_one("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items)")

    # -- requests ---------------------------------------------------------

    def call(self, method, path, uid=None, body=None, headers=None, port=None, timeout=harness.HTTP_TIMEOUT):
        h = dict(headers or {})
        if uid is not None:
            h["Authorization"] = "Bearer " + token_for(uid)
        return raw_request(port or self.port, method, path, body=body, headers=h, timeout=timeout)

    def place(self, uid, items, key=None, port=None, timeout=harness.HTTP_TIMEOUT):
        """POST /orders; items: [(product_id, quantity)] or a ready body."""
        body = items if isinstance(items, dict) else {
            "items": [{"product_id": p, "quantity": q} for p, q in items]}
        h = {"Idempotency-Key": key} if key is not None else None
        return self.call("POST", "/api/v1/orders", uid, body, headers=h, port=port, timeout=timeout)

    def place_ok(self, uid, items, what="POST /orders"):
        """An order a test needs in order to test something else: placed as
        a client would, honouring a 503 + Retry-After (a loaded machine's
        admission control may shed a write; seen once under stress-ng)."""
        return self.assertJson(retry_503(lambda: self.place(uid, items)), 201, what)

    def stock_api(self, pid):
        return self.assertJson(self.get("/api/v1/products/%d" % pid), 200, "GET product %d" % pid)["stock"]

    def get_order(self, uid, oid, port=None):
        return self.call("GET", "/api/v1/orders/%s" % oid, uid, port=port)

    # -- assertions -------------------------------------------------------

    def assertInvalid(self, r, *fields, what=""):
        """422 naming (at least) these fields in errors[]."""
        b = self.assertProblem(r, 422, what)
        self.assertIsInstance(b.get("errors"), list, "%s: 422 without errors[]\n%s" % (what, fmt_resp(r)))
        got = [e.get("field") for e in b["errors"]]
        for f in fields:
            self.assertIn(f, got, "%s: errors[] does not name %r (it names %r)\n%s" % (what, f, got, fmt_resp(r)))
        return b

    def assertUnauthorized(self, r, what=""):
        self.assertProblem(r, 401, what)
        self.assertEqual(r.headers.get("WWW-Authenticate", "").split(" ")[0], "Bearer",
                         "%s: 401 without WWW-Authenticate: Bearer\n%s" % (what, fmt_resp(r)))

    def assertOrder(self, o, what=""):
        """The shape of api.md's Order; returns it."""
        self.assertIsInstance(o, dict, what)
        self.assertEqual(list(o.keys()), ORDER_FIELDS, "%s: order members" % what)
        for k in ("id", "buyer_id", "seller_id", "total"):
            self.assertTrue(is_int(o[k]), "%s: %s=%r is not an integer" % (what, k, o[k]))
        self.assertIn(o["status"], STATUSES, what)
        self.assertEqual(o["currency"], "RUB", what)
        created = ts(o["created_at"])
        ts(o["updated_at"])
        self.assertGreaterEqual(ts(o["updated_at"]), created, "%s: updated_at before created_at" % what)
        self.assertEqual(o["id"] // 10 ** 9, created.year * 100 + created.month,
                         "%s: id %d does not carry the month of created_at %s (YYYYMM*10^9+n)"
                         % (what, o["id"], o["created_at"]))
        self.assertIsInstance(o["items"], list, what)
        self.assertTrue(o["items"], "%s: an order without items" % what)
        for it in o["items"]:
            self.assertEqual(sorted(it.keys()), sorted(ITEM_FIELDS), "%s: item members %r" % (what, it))
        self.assertEqual(o["total"], sum(i["price"] * i["quantity"] for i in o["items"]),
                         "%s: total is not the sum of price*quantity" % what)
        return o

    def assertSameOrder(self, got, want, what):
        self.assertEqual(got, want, what)
        self.assertEqual(list(got.keys()), list(want.keys()), "%s: member order" % what)


# ---------------------------------------------------------------------------
# POST /orders
# ---------------------------------------------------------------------------

class OrderCreateTests(OrderCase):

    # assertOrder: integer ids, money in kopecks with currency RUB, RFC 3339
    # timestamps (conv-ids, conv-money, conv-timestamps).
    def test_create_shape_and_stock_taken(self):
        suid, sid = self.new_seller()
        a = self.new_product(sid, price=129900, stock=10, title="Чайник электрический")
        b = self.new_product(sid, price=5000, stock=3, title="Фильтр")
        buyer = self.new_user()
        db_before = self.db_one("SELECT now()")[0]
        r = self.place(buyer, [(b, 3), (a, 2)])
        db_after = self.db_one("SELECT now()")[0]
        o = self.assertOrder(self.assertJson(r, 201, "POST /orders"), "created order")
        self.assertEqual((o["buyer_id"], o["seller_id"], o["status"]), (buyer, sid, "new"))
        self.assertEqual(sorted(o["items"], key=lambda i: i["product_id"]),
                         sorted([{"product_id": a, "title": "Чайник электрический", "price": 129900, "quantity": 2},
                                 {"product_id": b, "title": "Фильтр", "price": 5000, "quantity": 3}],
                                key=lambda i: i["product_id"]))
        self.assertEqual(o["total"], 2 * 129900 + 3 * 5000)
        self.assertEqual(o["created_at"], o["updated_at"], "a new order: updated_at = created_at")
        self.assertTrue(db_before - dt.timedelta(seconds=1) <= ts(o["created_at"]) <= db_after + dt.timedelta(seconds=1),
                        "created_at %s is not the time of the request (%s..%s)" % (o["created_at"], db_before, db_after))
        # The stock was taken, exactly (the last 3 of b: stock 0 is allowed).
        self.assertEqual((self.stock_api(a), self.stock_api(b)), (8, 0), "GET /products after the order")
        self.assertEqual((self.stock_db(a), self.stock_db(b)), (8, 0))
        row = self.db_one("SELECT buyer_id, seller_id, status, total, currency FROM orders WHERE id = %s", (o["id"],))
        self.assertEqual(row, (buyer, sid, "new", o["total"], "RUB"))
        items = self.db("SELECT product_id, quantity, price FROM order_items WHERE order_id = %s ORDER BY product_id",
                        (o["id"],))
        self.assertEqual(items, sorted([(a, 2, 129900), (b, 3, 5000)]))
        # The seller's user can see it as well, identical.
        self.assertSameOrder(self.assertJson(self.get_order(suid, o["id"])), o, "seller's GET = POST answer")

    def test_order_keeps_title_and_price_at_order_time(self):
        _, sid = self.new_seller()
        p = self.new_product(sid, price=777, stock=5, title="Старое название")
        buyer = self.new_user()
        o = self.place_ok(buyer, [(p, 2)])
        self.db("UPDATE products SET title = 'Новое название', price = 999 WHERE id = %s", (p,))
        got = self.assertJson(self.get_order(buyer, o["id"]), 200)
        self.assertSameOrder(got, o, "the order is a snapshot: the product's later edits do not change it")

    def test_not_enough_stock_409_nothing_taken(self):
        _, sid = self.new_seller()
        a = self.new_product(sid, stock=5)
        b = self.new_product(sid, stock=1)
        buyer = self.new_user()
        before = self.counts()
        for items, short in (([(a, 1), (b, 2)], b), ([(b, 2), (a, 1)], b), ([(a, 6)], a), ([(a, 6), (b, 1)], a)):
            with self.subTest(items=items):
                r = self.place(buyer, items)
                pb = self.assertProblem(r, 409, "not enough stock")
                self.assertIn(str(short), pb["detail"], "the 409 names the product short of stock\n%s" % fmt_resp(r))
                self.assertEqual((self.stock_db(a), self.stock_db(b)), (5, 1), "nothing taken")
                self.assertEqual(self.counts(), before, "no order, no order_items")
        self.assertEqual((self.stock_api(a), self.stock_api(b)), (5, 1))
        # Exactly the stock is fine; then it is gone.
        self.place_ok(buyer, [(a, 5), (b, 1)], "the whole stock")
        self.assertEqual((self.stock_api(a), self.stock_api(b)), (0, 0))
        r = self.place(buyer, [(a, 1)])
        self.assertIn(str(a), self.assertProblem(r, 409, "stock 0")["detail"])
        self.assertEqual(self.counts(), (before[0] + 1, before[1] + 2))

    def test_items_validation_422(self):
        _, sid = self.new_seller()
        a = self.new_product(sid, stock=100)
        b = self.new_product(sid, stock=100)
        archived = self.new_product(sid, stock=100, status="archived")
        _, other_sid = self.new_seller("Другой")
        foreign = self.new_product(other_sid, stock=100)
        missing = 987654321
        buyer = self.new_user()
        watched = (a, b, archived, foreign)
        stocks = [self.stock_db(p) for p in watched]
        before = self.counts()

        def it(p, q):
            return {"product_id": p, "quantity": q}

        cases = [
            ({"items": [it(a, 1), it(b, 0)]}, ["items[1].quantity"]),
            ({"items": [it(a, 1), it(b, 1001)]}, ["items[1].quantity"]),
            ({"items": [it(a, 1), it(b, "2")]}, ["items[1].quantity"]),
            ({"items": [it(a, 1), it(b, 1.5)]}, ["items[1].quantity"]),
            ({"items": [it(a, 1), it(b, -1)]}, ["items[1].quantity"]),
            ({"items": [it(a, 1), it(b, None)]}, ["items[1].quantity"]),
            ({"items": [it(a, 1), {"product_id": b}]}, ["items[1].quantity"]),
            ({"items": [it(a, 1), {"quantity": 1}]}, ["items[1].product_id"]),
            ({"items": [it(a, 1), it(str(b), 1)]}, ["items[1].product_id"]),
            ({"items": [it(a, 1), it(0, 1)]}, ["items[1].product_id"]),
            ({"items": [it(a, 1), it(-5, 1)]}, ["items[1].product_id"]),
            ({"items": [it(a, 1), it(None, 1)]}, ["items[1].product_id"]),
            ({"items": [it(a, 1), it(a, 2)]}, ["items[1].product_id"]),
            ({"items": [it(a, 1), it(b, 1), it(a, 1)]}, ["items[2].product_id"]),
            ({"items": [it(a, 0), {}]}, ["items[0].quantity", "items[1].product_id", "items[1].quantity"]),
            ({"items": [it(a, 1), 5]}, ["items[1]"]),
            ({"items": []}, ["items"]),
            ({"items": [it(10 ** 6 + i, 1) for i in range(51)]}, ["items"]),
            ({"items": {"product_id": a, "quantity": 1}}, ["items"]),
            ({"items": None}, ["items"]),
            ({"items": "a,b"}, ["items"]),
            ({}, ["items"]),
        ]
        for body, fields in cases:
            with self.subTest(body=json.dumps(body)[:120]):
                self.assertInvalid(self.place(buyer, body), *fields)
        # Rules the database decides: one seller, active, existing products.
        # The field may be the item's product_id or "items"; the product is named.
        for body, bad_index, bad_pid, what in (
                ({"items": [it(a, 1), it(foreign, 1)]}, 1, foreign, "products of two sellers"),
                ({"items": [it(a, 1), it(archived, 1)]}, 1, archived, "an archived product"),
                ({"items": [it(archived, 1)]}, 0, archived, "only an archived product"),
                ({"items": [it(a, 1), it(missing, 1)]}, 1, missing, "a product that does not exist"),
                ({"items": [it(missing, 1)]}, 0, missing, "only a product that does not exist")):
            with self.subTest(what=what):
                r = self.place(buyer, body)
                pb = self.assertProblem(r, 422, what)
                fields = [e.get("field") for e in pb.get("errors", [])]
                allowed = {"items", "items[%d].product_id" % bad_index, "items[%d]" % bad_index}
                if what == "products of two sellers":  # either item may be the one blamed
                    allowed |= {"items[0].product_id", "items[1].product_id"}
                self.assertTrue(fields and set(fields) <= allowed,
                                "%s: errors[] fields %r, expected among %r\n%s" % (what, fields, sorted(allowed),
                                                                                 fmt_resp(r)))
                if what != "products of two sellers":
                    self.assertIn(str(bad_pid), json.dumps(pb, ensure_ascii=False),
                                  "%s: the answer does not name product %d\n%s" % (what, bad_pid, fmt_resp(r)))
        self.assertEqual([self.stock_db(p) for p in watched], stocks, "no stock taken by a refused order")
        self.assertEqual(self.counts(), before, "no order created by a refused order")

    def test_item_count_and_quantity_bounds(self):
        _, sid = self.new_seller()
        pids = [self.new_product(sid, price=100 + i, stock=2) for i in range(51)]
        big = self.new_product(sid, price=1, stock=1000)
        buyer = self.new_user()
        before = self.counts()
        self.assertInvalid(self.place(buyer, [(p, 1) for p in pids]), "items", what="51 items")
        self.assertEqual(self.counts(), before)
        self.assertEqual(sum(self.stock_db(p) for p in pids), 2 * 51)
        o = self.place_ok(buyer, [(p, 1) for p in pids[:50]], "50 items")
        self.assertEqual(len(o["items"]), 50)
        self.assertEqual(o["total"], sum(100 + i for i in range(50)))
        self.assertEqual([self.stock_db(p) for p in pids], [1] * 50 + [2])
        o = self.place_ok(buyer, [(big, 1000)], "quantity 1000")
        self.assertEqual((o["items"][0]["quantity"], o["total"]), (1000, 1000))
        self.assertEqual(self.stock_api(big), 0)

    def test_malformed_bodies_and_auth(self):
        _, sid = self.new_seller()
        a = self.new_product(sid, stock=10)
        buyer = self.new_user()
        before = self.counts()
        good = json.dumps({"items": [{"product_id": a, "quantity": 1}]})
        js = {"Content-Type": "application/json"}
        self.assertProblem(self.call("POST", "/api/v1/orders", buyer, b"{items", headers=js), 400, "not JSON")
        self.assertProblem(self.call("POST", "/api/v1/orders", buyer, "[" + good + "]", headers=js), 400, "an array")
        self.assertProblem(self.call("POST", "/api/v1/orders", buyer, b"", headers=js), 400, "empty")
        self.assertProblem(self.call("POST", "/api/v1/orders", buyer, good, headers={"Content-Type": "text/plain"}),
                           415, "text/plain")
        self.assertUnauthorized(self.call("POST", "/api/v1/orders", None, json.loads(good)), "no token")
        self.assertUnauthorized(self.call("POST", "/api/v1/orders", None, json.loads(good),
                                          headers={"Authorization": "Bearer " + token_for(buyer, secret="x" * 40)}),
                                "a token signed with another secret")
        self.assertEqual(self.counts(), before)
        self.assertEqual(self.stock_db(a), 10)

    def test_token_of_a_user_that_does_not_exist_401(self):
        # The signature is valid but there is no such user (as POST /sellers
        # and GET /me answer): no order may be created for a phantom buyer.
        _, sid = self.new_seller()
        a = self.new_product(sid, stock=10)
        before = self.counts()
        r = self.place(987654321, [(a, 1)])
        self.assertUnauthorized(r, "the token's user does not exist")
        self.assertEqual(self.counts(), before, "an order was created for a user that does not exist")
        self.assertEqual(self.stock_db(a), 10)

    def test_read_your_writes(self):
        # B2: the writer's next read sees the write, on this instance and on
        # another one.
        suid, sid = self.new_seller()
        p = self.new_product(sid, stock=9)
        buyer = self.new_user()
        other = self.new_server(env={"JWT_SECRET": JWT_SECRET}, name="second-instance").start()
        self.assertEqual(self.stock_api(p), 9)
        for port in (self.port, other.port):
            with self.subTest(read_from="second instance" if port == other.port else "same instance"):
                start = self.stock_db(p)
                o = self.place_ok(buyer, [(p, 2)])
                got = self.assertJson(self.get_order(buyer, o["id"], port=port), 200, "GET right after POST")
                self.assertSameOrder(got, o, "GET /orders/{id} right after POST")
                d = self.assertJson(request_get(port, "/api/v1/products/%d" % p), 200)
                self.assertEqual(d["stock"], start - 2, "product stock right after the order")
                lst = self.assertJson(self.call("GET", "/api/v1/orders", buyer, port=port), 200)
                self.assertEqual(lst["items"][0]["id"], o["id"], "the new order heads the buyer's list")
                lst = self.assertJson(self.call("GET", "/api/v1/orders?role=seller", suid, port=port), 200)
                self.assertEqual(lst["items"][0]["id"], o["id"], "the new order heads the seller's list")
                c = self.assertJson(self.call("POST", "/api/v1/orders/%d/cancel" % o["id"], buyer), 200)
                self.assertEqual(c["status"], "cancelled")
                got = self.assertJson(self.get_order(buyer, o["id"], port=port), 200, "GET right after cancel")
                self.assertEqual(got["status"], "cancelled")
                d = self.assertJson(request_get(port, "/api/v1/products/%d" % p), 200)
                self.assertEqual(d["stock"], start, "stock returned, seen right after the cancel")
        other.stop(check=True)


def request_get(port, path):
    return harness.request(port, "GET", path)


# ---------------------------------------------------------------------------
# Idempotency-Key
# ---------------------------------------------------------------------------

class IdempotencyTests(OrderCase):

    def setUp(self):
        super().setUp()
        _, self.sid = self.new_seller()
        self.p = self.new_product(self.sid, price=2500, stock=20)
        self.buyer = self.new_user()

    def keys(self):
        return self.db_one("SELECT count(*) FROM idempotency_keys")[0]

    def test_replay_is_byte_identical_and_creates_nothing(self):
        key = unique("key")
        first = self.place(self.buyer, [(self.p, 2)], key=key)
        o = self.assertJson(first, 201, "first request")
        self.assertIsNone(first.headers.get("Idempotent-Replayed"), "the first answer is not a replay")
        before, stock = self.counts(), self.stock_db(self.p)
        self.assertEqual(stock, 18)
        for i in range(3):
            again = self.place(self.buyer, [(self.p, 2)], key=key)
            self.assertEqual(again.status, 201, "replay %d\n%s" % (i, fmt_resp(again)))
            self.assertEqual(again.raw, first.raw, "replay %d body differs:\nfirst:  %r\nreplay: %r"
                             % (i, first.raw, again.raw))
            self.assertEqual(again.headers.get("Idempotent-Replayed"), "true", "replay %d header\n%s"
                             % (i, fmt_resp(again)))
            self.assertEqual(again.headers.get("Content-Type"), first.headers.get("Content-Type"))
        self.assertEqual(self.counts(), before, "a replay creates no order")
        self.assertEqual(self.stock_db(self.p), stock, "a replay takes no stock")
        # The replay is the first response even after the order changed.
        self.assertJson(self.call("POST", "/api/v1/orders/%d/cancel" % o["id"], self.buyer), 200)
        again = self.place(self.buyer, [(self.p, 2)], key=key)
        self.assertEqual((again.status, again.raw), (201, first.raw), "replay after cancel\n%s" % fmt_resp(again))
        self.assertEqual(self.counts(), before)

    def test_same_request_in_another_form_replays(self):
        # Whitespace, member order and item order do not make another request.
        q = self.new_product(self.sid, price=100, stock=20)
        key = unique("form")
        first = self.place(self.buyer, [(self.p, 1), (q, 2)], key=key)
        self.assertJson(first, 201)
        before = self.counts()
        variant = ('{ "items" : [ {"quantity": 2, "product_id": %d},\n {"product_id": %d, "quantity": 1} ] }'
                   % (q, self.p))
        again = self.call("POST", "/api/v1/orders", self.buyer, variant,
                          headers={"Content-Type": "application/json", "Idempotency-Key": key})
        self.assertEqual((again.status, again.raw), (201, first.raw), "the same items written differently\n%s"
                         % fmt_resp(again))
        self.assertEqual(again.headers.get("Idempotent-Replayed"), "true")
        self.assertEqual(self.counts(), before)

    def test_same_key_different_body_422(self):
        key = unique("diff")
        first = self.place(self.buyer, [(self.p, 1)], key=key)
        self.assertJson(first, 201)
        before, stock = self.counts(), self.stock_db(self.p)
        q = self.new_product(self.sid, stock=5)
        for items in ([(self.p, 2)], [(q, 1)], [(self.p, 1), (q, 1)]):
            with self.subTest(items=items):
                r = self.place(self.buyer, items, key=key)
                self.assertProblem(r, 422, "the key with another body")
                self.assertIsNone(r.headers.get("Idempotent-Replayed"))
        self.assertEqual(self.counts(), before)
        self.assertEqual((self.stock_db(self.p), self.stock_db(q)), (stock, 5))
        # The key still replays its own request.
        again = self.place(self.buyer, [(self.p, 1)], key=key)
        self.assertEqual((again.status, again.raw), (201, first.raw))

    def test_key_format_400(self):
        before, keys, stock = self.counts(), self.keys(), self.stock_db(self.p)
        for key, what in (("k" * 256, "256 characters"),
                          ("ab\tcd", "a tab inside"),
                          (b"caf\xc3\xa9", "non-ASCII (UTF-8) bytes"),
                          (b"\xff\xfe", "non-ASCII bytes"),
                          ("", "empty")):
            with self.subTest(what=what):
                r = self.place(self.buyer, [(self.p, 1)], key=key)
                self.assertProblem(r, 400, "Idempotency-Key %s" % what)
        # A DEL byte is refused as well (by the HTTP parser or the handler).
        r = self.place(self.buyer, [(self.p, 1)], key=b"ab\x7fcd")
        self.assertEqual(r.status, 400, "Idempotency-Key with DEL\n%s" % fmt_resp(r))
        self.assertEqual((self.counts(), self.keys(), self.stock_db(self.p)), (before, keys, stock),
                         "a refused key creates nothing")
        # The edges that are allowed: 255 printable characters, spaces and
        # punctuation included; 1 character.
        k255 = ("A b~!" * 51)[:255]
        self.assertEqual(len(k255), 255)
        first = self.place(self.buyer, [(self.p, 1)], key=k255)
        self.assertJson(first, 201, "a 255-character key")
        again = self.place(self.buyer, [(self.p, 1)], key=k255)
        self.assertEqual((again.status, again.raw, again.headers.get("Idempotent-Replayed")),
                         (201, first.raw, "true"), "replay of the 255-character key\n%s" % fmt_resp(again))
        self.assertJson(self.place(self.buyer, [(self.p, 1)], key="Z"), 201, "a 1-character key")

    def test_keys_are_per_user(self):
        key = unique("shared")
        other = self.new_user("Другой покупатель")
        a = self.place(self.buyer, [(self.p, 1)], key=key)
        b = self.place(other, [(self.p, 1)], key=key)
        oa, ob = self.assertJson(a, 201), self.assertJson(b, 201)
        self.assertIsNone(b.headers.get("Idempotent-Replayed"), "another user's key is not a replay")
        self.assertNotEqual(oa["id"], ob["id"])
        self.assertEqual((oa["buyer_id"], ob["buyer_id"]), (self.buyer, other))
        self.assertEqual(self.stock_db(self.p), 18, "two orders, two units")
        # Each replays its own.
        self.assertEqual(self.place(other, [(self.p, 1)], key=key).raw, b.raw)
        self.assertEqual(self.place(self.buyer, [(self.p, 1)], key=key).raw, a.raw)
        # A different body under the same key is judged per user too.
        self.assertProblem(self.place(other, [(self.p, 3)], key=key), 422)

    def test_a_409_is_replayed_too(self):
        scarce = self.new_product(self.sid, stock=1)
        key = unique("scarce")
        first = self.place(self.buyer, [(scarce, 2)], key=key)
        self.assertProblem(first, 409, "not enough stock")
        before = self.counts()
        again = self.place(self.buyer, [(scarce, 2)], key=key)
        self.assertEqual((again.status, again.raw), (409, first.raw), "replayed 409\n%s" % fmt_resp(again))
        self.assertEqual(again.headers.get("Idempotent-Replayed"), "true")
        # Even when the stock has come back: the first completed answer stands.
        self.db("UPDATE products SET stock = 5 WHERE id = %s", (scarce,))
        again = self.place(self.buyer, [(scarce, 2)], key=key)
        self.assertEqual((again.status, again.raw), (409, first.raw), "replayed 409 after a restock\n%s"
                         % fmt_resp(again))
        self.assertEqual(self.counts(), before)
        self.assertEqual(self.stock_db(scarce), 5)
        # A new key is a new request.
        self.assertJson(self.place(self.buyer, [(scarce, 2)], key=key + "-2"), 201)
        self.assertEqual(self.stock_db(scarce), 3)

    def test_validation_failure_does_not_burn_the_key(self):
        # A 422 from validation changes nothing, not even the key.
        key = unique("burn")
        keys = self.keys()
        self.assertInvalid(self.place(self.buyer, [(self.p, 0)], key=key), "items[0].quantity")
        self.assertEqual(self.keys(), keys)
        r = self.place(self.buyer, [(self.p, 1)], key=key)
        self.assertJson(r, 201, "the key after a refused request")
        self.assertIsNone(r.headers.get("Idempotent-Replayed"))

    def test_expired_key_starts_afresh(self):
        key = unique("old")
        first = self.place(self.buyer, [(self.p, 1)], key=key)
        o1 = self.assertJson(first, 201)
        n = self.db("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
                    " WHERE user_id = %s AND key = %s RETURNING 1", (self.buyer, key))
        self.assertEqual(len(n), 1, "the key is stored per (user, key)")
        again = self.place(self.buyer, [(self.p, 1)], key=key)
        o2 = self.assertJson(again, 201, "the same key after 24 h")
        self.assertIsNone(again.headers.get("Idempotent-Replayed"), "a key older than 24 h does not replay")
        self.assertNotEqual(o1["id"], o2["id"])
        self.assertEqual(self.stock_db(self.p), 18)
        # ... and the fresh use replays from now on.
        self.assertEqual(self.place(self.buyer, [(self.p, 1)], key=key).raw, again.raw)

    def test_retry_while_first_is_running_409(self):
        # api.md: "a retry while the first is still running → 409". The first
        # request is held inside its transaction by a lock on the product row.
        key = unique("running")
        lock = db_connect(autocommit=False)
        first_box = {}
        try:
            cur = lock.cursor()
            cur.execute("SELECT 1 FROM products WHERE id = %s FOR UPDATE", (self.p,))

            def first():
                first_box["r"] = self.place(self.buyer, [(self.p, 1)], key=key, timeout=60)

            t1 = threading.Thread(target=first, daemon=True)
            t1.start()
            blocked = wait_until(lambda: self.db_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%%marketd_place_order%%'")[0] >= 1, 10)
            self.assertTrue(blocked, "the first request never waited on the product lock")
            retry_box = {}

            def retry():
                retry_box["r"] = self.place(self.buyer, [(self.p, 1)], key=key, timeout=60)

            # The lock stays held until the retry has answered (or 30 s, a
            # hang): an answer is then surely one given while the first
            # request was still running, however slow the machine.
            t2 = threading.Thread(target=retry, daemon=True)
            t2.start()
            t2.join(30)
            answered_in_time = not t2.is_alive()
            first_still_running = t1.is_alive()
        finally:
            lock.rollback()
            lock.close()
        t1.join(30)
        t2.join(30)
        first_r, retry_r = first_box.get("r"), retry_box.get("r")
        self.assertJson(first_r, 201, "the first request, after the lock was released")
        self.assertTrue(answered_in_time,
                        "the retry did not answer while the first request was still running (it waited for it "
                        "and then got: %s)" % (fmt_resp(retry_r) if retry_r else "nothing"))
        self.assertTrue(first_still_running, "the first request finished while its product row was locked")
        b = self.assertProblem(retry_r, 409, "retry while the first is running")
        self.assertIn("processed", b["detail"], "the 409 says the request is still being processed")
        self.assertEqual(self.db_one("SELECT count(*) FROM orders WHERE buyer_id = %s", (self.buyer,))[0], 1)
        again = self.place(self.buyer, [(self.p, 1)], key=key)
        self.assertEqual((again.status, again.raw), (201, first_r.raw), "after the first completed: a replay")


# ---------------------------------------------------------------------------
# Concurrency (B6)
# ---------------------------------------------------------------------------

class OrderConcurrencyTests(OrderCase):

    server_env = {"JWT_SECRET": JWT_SECRET, "WORKERS": "2"}

    def new_users(self, n):
        rows = self.db("INSERT INTO users (email, password_hash, name)"
                       " SELECT %s || '-' || g || '@example.test', 'x', 'Покупатель ' || g"
                       " FROM generate_series(1, %s) g RETURNING id", (unique("many"), n))
        return [r[0] for r in rows]

    # B6: concurrent orders never drive stock below zero.
    def test_no_oversell_50_buyers_stock_7(self):
        _, sid = self.new_seller()
        p = self.new_product(sid, price=4900, stock=7)
        users = self.new_users(50)
        before = self.counts()
        results = parallel([lambda u=u: self.place(u, [(p, 1)], timeout=60) for u in users])
        statuses = [getattr(r, "status", None) for r in results]
        self.assertEqual((statuses.count(201), statuses.count(409)), (7, 43),
                         "expected exactly 7×201 and 43×409, got %r\n%s"
                         % (sorted(statuses, key=str), describe([r for r in results
                                                                 if getattr(r, "status", None) not in (201, 409)][:5])))
        for r in results:
            if r.status == 409:
                self.assertIn(str(p), r.body.get("detail", ""), "the 409 names the product\n%s" % fmt_resp(r))
            else:
                self.assertOrder(r.body, "concurrent order")
        winners = [r.body for r in results if r.status == 201]
        self.assertEqual(len({o["id"] for o in winners}), 7, "distinct order ids")
        self.assertEqual(len({o["buyer_id"] for o in winners}), 7)
        self.assertEqual(self.stock_db(p), 0, "final stock")
        self.assertEqual(self.stock_api(p), 0)
        self.assertEqual(self.db_one("SELECT count(*), coalesce(sum(quantity), 0) FROM order_items"
                                     " WHERE product_id = %s", (p,)), (7, 7))
        self.assertEqual(self.db_one("SELECT count(*) FROM orders WHERE seller_id = %s", (sid,))[0], 7)
        self.assertEqual(self.counts(), (before[0] + 7, before[1] + 7))

    def test_opposite_item_order_no_deadlock_and_concurrent_cancels(self):
        _, sid = self.new_seller()
        a = self.new_product(sid, stock=30)
        b = self.new_product(sid, stock=30)
        users = self.new_users(30)
        results = parallel([lambda i=i, u=u: self.place(u, [(a, 1), (b, 1)] if i % 2 else [(b, 1), (a, 1)],
                                                         timeout=60)
                            for i, u in enumerate(users)])
        self.assertEqual([getattr(r, "status", None) for r in results], [201] * 30,
                         "every order fits the stock\n%s" % describe([r for r in results
                                                                      if getattr(r, "status", None) != 201][:5]))
        self.assertEqual((self.stock_db(a), self.stock_db(b)), (0, 0))
        orders = [(u, r.body["id"]) for u, r in zip(users, results)]
        cancels = parallel([lambda u=u, oid=oid: self.call("POST", "/api/v1/orders/%d/cancel" % oid, u, timeout=60)
                            for u, oid in orders])
        self.assertEqual([getattr(r, "status", None) for r in cancels], [200] * 30,
                         "every cancel succeeds\n%s" % describe([r for r in cancels
                                                                 if getattr(r, "status", None) != 200][:5]))
        self.assertEqual((self.stock_db(a), self.stock_db(b)), (30, 30), "all stock returned, once")

    def test_concurrent_cancels_of_one_order_return_stock_once(self):
        _, sid = self.new_seller()
        p = self.new_product(sid, stock=10)
        buyer = self.new_user()
        o = self.place_ok(buyer, [(p, 4)])
        self.assertEqual(self.stock_db(p), 6)
        results = parallel([lambda: self.call("POST", "/api/v1/orders/%d/cancel" % o["id"], buyer, timeout=60)
                            for _ in range(10)])
        statuses = sorted(getattr(r, "status", None) for r in results)
        self.assertEqual(statuses, [200] + [409] * 9, "one cancel wins\n%s" % describe(results))
        self.assertEqual(self.stock_db(p), 10, "stock returned exactly once")

    def test_same_idempotency_key_20_concurrent(self):
        _, sid = self.new_seller()
        p = self.new_product(sid, price=300, stock=100)
        buyer = self.new_user()
        key = unique("burst")
        before = self.counts()
        results = parallel([lambda: self.place(buyer, [(p, 3)], key=key, timeout=60) for _ in range(20)])
        bad = [r for r in results if getattr(r, "status", None) not in (201, 409)]
        self.assertEqual(bad, [], "answers other than 201/409:\n%s" % describe(bad))
        created = [r for r in results if r.status == 201]
        self.assertTrue(created, "no 201 at all:\n%s" % describe(results))
        for r in created:
            self.assertEqual(r.raw, created[0].raw, "201 answers differ:\n%r\n%r" % (r.raw, created[0].raw))
        fresh = [r for r in created if r.headers.get("Idempotent-Replayed") != "true"]
        self.assertEqual(len(fresh), 1, "exactly one 201 is not marked as a replay\n%s" % describe(fresh))
        for r in results:
            if r.status == 409:
                self.assertIn("processed", r.body.get("detail", ""), "a 409 other than 'still being processed'\n%s"
                              % fmt_resp(r))
        self.assertEqual(self.db_one("SELECT count(*) FROM orders WHERE buyer_id = %s", (buyer,))[0], 1,
                         "one order for one key")
        self.assertEqual(self.counts(), (before[0] + 1, before[1] + 1))
        self.assertEqual(self.stock_db(p), 97, "stock taken once")


# ---------------------------------------------------------------------------
# GET /orders
# ---------------------------------------------------------------------------

class OrderListTests(OrderCase):
    """Orders with chosen created_at values inserted with SQL across several
    month partitions, with ties in created_at and exact boundary values."""

    @classmethod
    def insert_order(cls, cur, buyer, seller_id, product, status, created, qty=1, price=1000):
        cur.execute(
            """INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)
               VALUES (marketd_order_id(%s, nextval('orders_id_seq')), %s, %s, %s, %s, 'RUB', %s, %s)
               RETURNING id""",
            (created, buyer, seller_id, status, price * qty, created, created))
        oid = cur.fetchone()[0]
        cur.execute("""INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)
                       VALUES (%s, %s, %s, 'Товар', %s, %s)""", (oid, created, product, price, qty))
        return {"id": oid, "buyer_id": buyer, "seller_id": seller_id, "status": status, "created_at": created,
                "total": price * qty}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seller_a_uid, cls.seller_a = cls.new_seller("Продавец А")
        cls.seller_b_uid, cls.seller_b = cls.new_seller("Продавец Б")
        pa = cls.new_product(cls.seller_a)
        pb = cls.new_product(cls.seller_b)
        cls.buyer = cls.new_user("Главный покупатель")
        cls.buyer2 = cls.new_user("Второй покупатель")
        cls.many_buyer = cls.new_user("Сто покупок")
        cls.nobody = cls.new_user("Без заказов")
        now = cls.db_one("SELECT now()")[0].astimezone(UTC)
        base = now.replace(microsecond=0) - dt.timedelta(hours=1)
        conn = db_connect(autocommit=False)
        try:
            cur = conn.cursor()
            created = [base - dt.timedelta(days=4 * i, microseconds=37 * i) for i in range(45)]
            # Ties: three orders with one created_at (only the id orders them).
            created[11] = created[12] = created[10]
            created[31] = created[30]
            # The oldest one almost two years back (partitions exist for 25 months).
            created[44] = base - dt.timedelta(days=690)
            # Exact boundaries: an order at midnight UTC and one a microsecond before.
            cls.midnight = (base - dt.timedelta(days=80)).replace(hour=0, minute=0, second=0, microsecond=0)
            created[20] = cls.midnight
            created[21] = cls.midnight - dt.timedelta(microseconds=1)
            cls.orders = []
            for i, c in enumerate(created):
                seller, product = (cls.seller_a, pa) if i % 3 else (cls.seller_b, pb)
                cls.orders.append(cls.insert_order(cur, cls.buyer, seller, product, STATUSES[i % 5], c,
                                                   qty=i % 4 + 1, price=1000 + i))
            cls.orders2 = [cls.insert_order(cur, cls.buyer2, cls.seller_a, pa, "new", base - dt.timedelta(days=d))
                           for d in (1, 33, 95)]
            for i in range(105):
                cls.insert_order(cur, cls.many_buyer, cls.seller_b, pb, "new", base - dt.timedelta(minutes=i))
            conn.commit()
        finally:
            conn.close()
        months = {o["id"] // 10 ** 9 for o in cls.orders}
        if len(months) < 5:
            raise AssertionError("the fixture should span several month partitions, got %r" % months)

    @staticmethod
    def newest_first(rows):
        return [o["id"] for o in sorted(rows, key=lambda o: (o["created_at"], o["id"]), reverse=True)]

    def list(self, uid, params=None):
        return self.call("GET", harness.path_with_query("/api/v1/orders", params), uid)

    def walk_ids(self, uid, params, limit, expect_total):
        """Follows next_cursor to the end; returns (ids, pages)."""
        ids, cursor, pages = [], None, 0
        while True:
            q = dict(params, limit=limit)
            if cursor is not None:
                q["cursor"] = cursor
            b = self.assertList(self.list(uid, q), "page %d %s" % (pages + 1, q))
            pages += 1
            self.assertLessEqual(len(b["items"]), limit)
            ids += [o["id"] for o in b["items"]]
            cursor = b["next_cursor"]
            if cursor is None:
                return ids, pages
            self.assertTrue(b["items"], "an empty page with a cursor")
            if pages > expect_total // limit + 2:
                self.fail("no end after %d pages: the cursor loops? (%r)" % (pages, ids))

    def test_default_is_buyer_newest_first(self):
        expected = self.newest_first(self.orders)
        b = self.assertList(self.list(self.buyer))
        self.assertEqual([o["id"] for o in b["items"]], expected[:20], "default: role buyer, newest first, limit 20")
        self.assertIsNotNone(b["next_cursor"], "45 orders: more pages follow")
        for o in b["items"]:
            self.assertOrder(o, "list item")
        self.assertEqual(self.assertList(self.list(self.buyer, {"role": "buyer"}))["items"], b["items"],
                         "role=buyer is the default")
        # A list item is the order as GET /orders/{id} shows it.
        for o in b["items"][:3]:
            self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), o, "list item = GET")
        # Values of the inserted rows.
        by_id = {o["id"]: o for o in self.orders}
        for o in b["items"]:
            want = by_id[o["id"]]
            self.assertEqual((o["buyer_id"], o["seller_id"], o["status"], o["total"]),
                             (self.buyer, want["seller_id"], want["status"], want["total"]))
            self.assertTimestamp(o["created_at"], want["created_at"], "created_at of %d" % o["id"])

    def test_cursor_walk_visits_each_once_in_order(self):
        expected = self.newest_first(self.orders)
        ids, pages = self.walk_ids(self.buyer, {}, 7, 45)
        self.assertEqual(ids, expected, "limit 7 walk over 45 orders")
        self.assertEqual(pages, 7)
        ids, _ = self.walk_ids(self.buyer, {}, 1, 45)
        self.assertEqual(ids, expected, "limit 1 walk (every tie is a page boundary)")
        ids, pages = self.walk_ids(self.buyer, {}, 45, 45)
        self.assertEqual((ids, pages), (expected, 1), "limit = count: one page, next_cursor null")

    def test_role_seller(self):
        mine = [o for o in self.orders + self.orders2 if o["seller_id"] == self.seller_a]
        ids, _ = self.walk_ids(self.seller_a_uid, {"role": "seller"}, 4, len(mine))
        self.assertEqual(ids, self.newest_first(mine), "the seller's orders from every buyer")
        self.assertTrue(any(o["buyer_id"] == self.buyer2 for o in mine))
        b = self.assertList(self.list(self.seller_a_uid))
        self.assertEqual(b["items"], [], "as buyer the seller's user has no orders")
        b = self.assertList(self.list(self.buyer, {"role": "seller"}))
        self.assertEqual((b["items"], b["next_cursor"]), ([], None), "a user without a seller profile")
        b = self.assertList(self.list(self.nobody))
        self.assertEqual((b["items"], b["next_cursor"]), ([], None), "a user without orders")

    def test_status_filter(self):
        for st in STATUSES:
            with self.subTest(status=st):
                want = self.newest_first([o for o in self.orders if o["status"] == st])
                ids, _ = self.walk_ids(self.buyer, {"status": st}, 4, len(want))
                self.assertEqual(ids, want)
                want = self.newest_first([o for o in self.orders + self.orders2
                                          if o["status"] == st and o["seller_id"] == self.seller_a])
                ids, _ = self.walk_ids(self.seller_a_uid, {"status": st, "role": "seller"}, 100, len(want))
                self.assertEqual(ids, want, "role=seller&status=%s" % st)

    def test_from_to_bounds(self):
        rows = self.orders
        mid = self.midnight
        day = mid.strftime("%Y-%m-%d")
        o5 = rows[5]["created_at"]
        o30 = rows[30]["created_at"]  # a tie of two orders
        cases = [
            ({"from": day}, lambda c: c >= mid, "from a date: 00:00 UTC, inclusive"),
            ({"to": day}, lambda c: c < mid, "to a date: exclusive"),
            ({"from": rfc3339(mid)}, lambda c: c >= mid, "from RFC 3339, exactly an order's created_at"),
            ({"to": rfc3339(mid)}, lambda c: c < mid, "to RFC 3339, exactly an order's created_at"),
            ({"from": mid.strftime("%Y-%m-%dT%H:%M:%SZ")}, lambda c: c >= mid, "without a fraction"),
            ({"from": (mid + dt.timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S+03:00")}, lambda c: c >= mid,
             "with a +03:00 offset"),
            ({"to": (mid - dt.timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S-05:30")},
             lambda c: c < mid, "with a -05:30 offset"),
            ({"from": rfc3339(o30), "to": rfc3339(o5)}, lambda c: o30 <= c < o5, "a range over several months"),
            ({"from": rfc3339(o5), "to": rfc3339(o5)}, lambda c: False, "from = to: empty"),
            ({"from": rfc3339(o5), "to": rfc3339(o30)}, lambda c: False, "from after to: empty"),
            ({"from": rfc3339(o5 + dt.timedelta(microseconds=1))}, lambda c: c > o5, "a microsecond later"),
            ({"from": "2000-01-01", "to": "2999-01-01"}, lambda c: True, "far bounds, outside the partitions"),
        ]
        for params, pred, what in cases:
            with self.subTest(what=what, params=params):
                want = self.newest_first([o for o in rows if pred(o["created_at"])])
                ids, _ = self.walk_ids(self.buyer, params, 5, len(want))
                self.assertEqual(ids, want, "%s %r" % (what, params))
        self.assertIn(rows[20]["id"], self.walk_ids(self.buyer, {"from": day}, 50, 45)[0])
        self.assertNotIn(rows[21]["id"], self.walk_ids(self.buyer, {"from": day}, 50, 45)[0])

    def test_everything_combined_with_the_cursor(self):
        lo, hi = self.orders[40]["created_at"], self.orders[2]["created_at"]
        for role, uid, rows in (("buyer", self.buyer, self.orders),
                                ("seller", self.seller_a_uid, self.orders + self.orders2)):
            for st in ("new", "shipped"):
                with self.subTest(role=role, status=st):
                    params = {"role": role, "status": st, "from": rfc3339(lo), "to": rfc3339(hi)}
                    want = self.newest_first([o for o in rows if o["status"] == st and lo <= o["created_at"] < hi
                                              and (role == "buyer" or o["seller_id"] == self.seller_a)])
                    self.assertTrue(len(want) >= 2, "the case should need pages")
                    ids, _ = self.walk_ids(uid, params, 2, len(want))
                    self.assertEqual(ids, want, repr(params))

    def test_limit(self):
        b = self.assertList(self.list(self.many_buyer, {"limit": 1000}))
        self.assertEqual(len(b["items"]), 100, "limit is clamped to 100")
        self.assertIsNotNone(b["next_cursor"])
        b2 = self.assertList(self.list(self.many_buyer, {"limit": 100, "cursor": b["next_cursor"]}))
        self.assertEqual(len(b2["items"]), 5)
        self.assertIsNone(b2["next_cursor"])
        self.assertEqual(len(self.assertList(self.list(self.buyer, {"limit": 3}))["items"]), 3)

    def test_invalid_parameters_422(self):
        products_cursor = self.assertList(harness.request(self.port, "GET", "/api/v1/products",
                                                          params={"limit": 1}))["next_cursor"]
        self.assertIsNotNone(products_cursor)
        good_cursor = self.assertList(self.list(self.buyer, {"limit": 2}))["next_cursor"]
        cases = [
            ({"cursor": "garbage"}, "cursor"),
            ({"cursor": ""}, "cursor"),
            ({"cursor": good_cursor[:-1]}, "cursor"),
            ({"cursor": good_cursor + "A"}, "cursor"),
            ({"cursor": products_cursor}, "cursor"),
            ({"from": "yesterday"}, "from"),
            ({"from": "2025-02-30"}, "from"),
            ({"from": "2025-01-01T00:00:00"}, "from"),
            ({"from": "2025-1-1"}, "from"),
            ({"to": "2025-13-01"}, "to"),
            ({"to": "1700000000"}, "to"),
            ({"status": "unknown"}, "status"),
            ({"status": ""}, "status"),
            ({"role": "admin"}, "role"),
            ({"role": ""}, "role"),
            ({"limit": 0}, "limit"),
            ({"limit": -1}, "limit"),
            ({"limit": "ten"}, "limit"),
        ]
        for params, field in cases:
            with self.subTest(params=params):
                self.assertInvalid(self.list(self.buyer, params), field, what=repr(params))
        self.assertUnauthorized(self.list(None), "no token")
        # The good cursor still works.
        self.assertList(self.list(self.buyer, {"limit": 2, "cursor": good_cursor}))


class OrderListBytesTests(OrderCase):
    """GET /orders renders its page in one statement (orders, then each
    order's items by a LATERAL aggregate); GET /orders/{id} and the write
    answers render one order with marketd_order_json. Both are built from
    marketd_order_doc and marketd_order_item_json
    (migrations/0006_precomputed_reads.sql): every list item must be, byte
    for byte, the body of GET /orders/{id} and marketd_order_json's text,
    whatever the filters and the page. Items here have several products and
    titles that need JSON escaping."""

    TITLES = ['Кавычки "ёлочки" и \\обратная\\ черта', "Emoji 🚀 и ß", "Tab\tи / слэш", "Простое"]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.seller_uid, cls.seller = cls.new_seller("Байты")
        cls.products = sorted(cls.new_product(cls.seller, price=100 + i, stock=1000, title=t)
                              for i, t in enumerate(cls.TITLES))
        cls.buyer = cls.new_user("Байтовый покупатель")
        now = cls.db_one("SELECT now()")[0].astimezone(UTC)
        conn = db_connect(autocommit=False)
        try:
            cur = conn.cursor()
            for i in range(24):
                created = now - dt.timedelta(days=9 * i, microseconds=i)
                cur.execute(
                    """INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)
                       VALUES (marketd_order_id(%s, nextval('orders_id_seq')), %s, %s, %s, 0, 'RUB', %s, %s)
                       RETURNING id""",
                    (created, cls.buyer, cls.seller, STATUSES[i % 5], created, created + dt.timedelta(hours=i)))
                oid = cur.fetchone()[0]
                # Items inserted out of product order; the document sorts them.
                for k, (pid, title) in enumerate(reversed(list(zip(cls.products, cls.TITLES))[: 1 + i % 4])):
                    cur.execute("""INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)
                                   VALUES (%s, %s, %s, %s, %s, %s)""", (oid, created, pid, title, 100 + k, 1 + k))
                cur.execute("UPDATE orders SET total = (SELECT sum(price * quantity) FROM order_items"
                            " WHERE order_id = %s) WHERE id = %s", (oid, oid))
            conn.commit()
        finally:
            conn.close()

    def raw_items(self, uid, params):
        """The items of one page as the exact bytes the server sent, and the next cursor."""
        r = self.call("GET", harness.path_with_query("/api/v1/orders", params), uid)
        self.assertList(r, repr(params))
        text = r.raw.decode("utf-8")
        prefix = '{"items":['
        self.assertTrue(text.startswith(prefix), text[:200])
        items, pos, dec = [], len(prefix), json.JSONDecoder()
        for _ in r.body["items"]:
            _, end = dec.raw_decode(text, pos)
            items.append(text[pos:end])
            pos = end + 1
        return items, r.body["next_cursor"]

    def test_list_items_are_byte_identical_to_the_single_order(self):
        docs = dict(self.db("SELECT o.id, marketd_order_json(o) FROM orders o WHERE o.seller_id = %s",
                            (self.seller,)))
        self.assertEqual(len(docs), 24)
        mid = rfc3339(self.db_one("SELECT now() - interval '100 days'")[0])
        late = rfc3339(self.db_one("SELECT now() - interval '10 days'")[0])
        seen = set()
        for role, uid in (("buyer", self.buyer), ("seller", self.seller_uid)):
            for status in (None, "delivered"):
                for bounds in ({}, {"from": mid}, {"to": late}, {"from": mid, "to": late}):
                    for limit in (3, 100):
                        params = dict(bounds, role=role, limit=limit)
                        if status:
                            params["status"] = status
                        cursor, pages = None, 0
                        while True:
                            q = dict(params, cursor=cursor) if cursor else params
                            items, cursor = self.raw_items(uid, q)
                            pages += 1
                            for raw in items:
                                oid = json.loads(raw)["id"]
                                seen.add(oid)
                                self.assertEqual(raw, docs[oid], "%r: order %d in the list" % (q, oid))
                            if cursor is None or pages > 20:
                                break
        self.assertEqual(seen, set(docs), "every order was compared")
        for oid in sorted(docs)[:6]:
            r = self.get_order(self.buyer, oid)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.raw.decode("utf-8"), docs[oid], "GET /orders/%d" % oid)
        several = [d for d in docs.values() if d.count('"product_id"') == 4]
        self.assertTrue(several and all('\\"ёлочки\\"' in d and "\\t" in d for d in several),
                        "titles are escaped: %r" % several[:1])

    def test_the_write_answers_are_the_same_document(self):
        items = [(p, 1) for p in self.products[:3]]
        placed = self.place(self.buyer, items)
        self.assertEqual(placed.status, 201, fmt_resp(placed))
        oid = placed.body["id"]
        doc = self.db_one("SELECT marketd_order_json(o) FROM orders o WHERE o.id = %s", (oid,))[0]
        self.assertEqual(placed.raw.decode("utf-8"), doc, "POST /orders answers marketd_order_json")
        self.assertEqual([i["product_id"] for i in placed.body["items"]], sorted(self.products[:3]))
        listed, _ = self.raw_items(self.buyer, {"limit": 1})
        self.assertEqual(listed, [doc], "the newest order in the list")
        moved = self.call("PATCH", "/api/v1/orders/%d" % oid, self.seller_uid, {"status": "confirmed"})
        self.assertEqual(moved.status, 200, fmt_resp(moved))
        listed, _ = self.raw_items(self.buyer, {"limit": 1})
        self.assertEqual(listed, [moved.raw.decode("utf-8")], "a transition answers what the list shows")


# ---------------------------------------------------------------------------
# GET /orders/{id}, cancel, PATCH
# ---------------------------------------------------------------------------

class OrderAccessTests(OrderCase):

    def setUp(self):
        super().setUp()
        self.seller_uid, self.sid = self.new_seller()
        self.p = self.new_product(self.sid, price=1500, stock=50)
        self.buyer = self.new_user("Покупатель")
        self.stranger = self.new_user("Посторонний")
        self.other_seller_uid, _ = self.new_seller("Чужой продавец")

    def new_order(self, qty=2):
        return self.place_ok(self.buyer, [(self.p, qty)])

    def patch(self, uid, oid, body):
        return self.call("PATCH", "/api/v1/orders/%s" % oid, uid, body)

    def cancel(self, uid, oid):
        return self.call("POST", "/api/v1/orders/%s/cancel" % oid, uid)

    def endpoints(self, oid):
        """(what, callable(uid)) for every order endpoint on oid."""
        return [("GET", lambda uid: self.get_order(uid, oid)),
                ("cancel", lambda uid: self.cancel(uid, oid)),
                ("PATCH", lambda uid: self.patch(uid, oid, {"status": "confirmed"}))]

    def test_get_by_buyer_and_seller(self):
        o = self.new_order()
        self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), o, "buyer GET")
        self.assertSameOrder(self.assertJson(self.get_order(self.seller_uid, o["id"])), o, "seller GET")
        self.assertUnauthorized(self.get_order(None, o["id"]), "no token")

    def test_strangers_get_404_like_a_missing_order(self):
        o = self.new_order()
        before = self.assertJson(self.get_order(self.buyer, o["id"]))
        stock = self.stock_db(self.p)
        missing = o["id"] + 500000  # the same month, no such order
        for what, fn in self.endpoints(o["id"]):
            for who, uid in (("stranger", self.stranger), ("another seller", self.other_seller_uid),
                             ("a user that does not exist", 987654321)):
                with self.subTest(endpoint=what, who=who):
                    r = fn(uid)
                    b = self.assertProblem(r, 404, "%s by %s" % (what, who))
                    # Existence is not revealed: the answer is that of an id
                    # that does not exist (with the id swapped).
                    ref = dict(self.endpoints(missing))[what](uid)
                    self.assertEqual(ref.status, 404, "%s of a missing order\n%s" % (what, fmt_resp(ref)))
                    self.assertEqual(json.dumps(b, sort_keys=True).replace(str(o["id"]), "ID"),
                                     json.dumps(ref.body, sort_keys=True).replace(str(missing), "ID"),
                                     "%s: a stranger's 404 differs from a missing order's 404" % what)
        self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), before, "nothing changed")
        self.assertEqual(self.stock_db(self.p), stock)

    def test_unknown_and_impossible_ids_404(self):
        o = self.new_order()
        n = o["id"] % 10 ** 9
        month = o["id"] // 10 ** 9
        prev_month = month - 1 if month % 100 != 1 else month - 89
        ids = [5, 0, -1, "abc", "1e3", "%%20%d" % o["id"], "%d.0" % o["id"],
               o["id"] + 1000,                         # the right month, no such order
               prev_month * 10 ** 9 + n,               # its n under another month
               (month // 100 * 100 + 13) * 10 ** 9 + n,  # month 13
               (month // 100 * 100) * 10 ** 9 + n,       # month 00
               200001 * 10 ** 9 + 1,                   # a month with no partition
               999912 * 10 ** 9 + 1,                   # the last representable month
               2 ** 63 - 1, "9" * 25]
        stock = self.stock_db(self.p)
        for oid in ids:
            for what, fn in self.endpoints(oid):
                with self.subTest(id=oid, endpoint=what):
                    self.assertProblem(fn(self.buyer), 404, "%s /orders/%s" % (what, oid))
        self.assertEqual(self.assertJson(self.get_order(self.buyer, o["id"]))["status"], "new")
        self.assertEqual(self.stock_db(self.p), stock)

    def test_cancel_by_buyer_returns_stock(self):
        start = self.stock_db(self.p)
        o = self.new_order(qty=3)
        self.assertEqual(self.stock_api(self.p), start - 3)
        r = self.cancel(self.buyer, o["id"])
        c = self.assertOrder(self.assertJson(r, 200, "cancel"), "cancelled order")
        self.assertEqual(c["status"], "cancelled")
        self.assertEqual({k: v for k, v in c.items() if k not in ("status", "updated_at")},
                         {k: v for k, v in o.items() if k not in ("status", "updated_at")},
                         "cancel changes only status and updated_at")
        self.assertGreater(ts(c["updated_at"]), ts(o["updated_at"]))
        self.assertEqual(self.stock_api(self.p), start, "stock returned")
        self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), c, "GET after cancel")
        r = self.cancel(self.buyer, o["id"])
        self.assertProblem(r, 409, "cancel twice")
        self.assertEqual(self.stock_db(self.p), start, "the second cancel returns nothing")
        self.assertProblem(self.patch(self.seller_uid, o["id"], {"status": "confirmed"}), 409, "cancelled → confirmed")
        self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), c, "refusals change nothing")

    def test_cancel_states(self):
        start = self.stock_db(self.p)
        o = self.new_order(qty=1)
        self.assertJson(self.patch(self.seller_uid, o["id"], {"status": "confirmed"}), 200)
        c = self.assertJson(self.cancel(self.buyer, o["id"]), 200, "the buyer cancels a confirmed order")
        self.assertEqual(c["status"], "cancelled")
        self.assertEqual(self.stock_db(self.p), start)
        for path in (["confirmed", "shipped"], ["confirmed", "shipped", "delivered"]):
            with self.subTest(path=path):
                o = self.new_order(qty=1)
                for st in path:
                    self.assertJson(self.patch(self.seller_uid, o["id"], {"status": st}), 200, st)
                before = self.assertJson(self.get_order(self.buyer, o["id"]))
                self.assertProblem(self.cancel(self.buyer, o["id"]), 409, "cancel when %s" % path[-1])
                self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), before, "unchanged")
        self.assertEqual(self.stock_db(self.p), start - 2, "the shipped and delivered orders keep their stock")

    def test_cancel_is_the_buyers(self):
        o = self.new_order()
        stock = self.stock_db(self.p)
        self.assertProblem(self.cancel(self.seller_uid, o["id"]), 403, "the seller via POST /cancel")
        self.assertProblem(self.cancel(self.stranger, o["id"]), 404, "a stranger")
        self.assertUnauthorized(self.cancel(None, o["id"]), "no token")
        got = self.assertJson(self.get_order(self.buyer, o["id"]))
        self.assertSameOrder(got, o, "nothing changed")
        self.assertEqual(self.stock_db(self.p), stock)

    def test_seller_moves_the_order_along(self):
        o = self.new_order()
        last = o
        for st in ("confirmed", "shipped", "delivered"):
            r = self.patch(self.seller_uid, o["id"], {"status": st})
            got = self.assertOrder(self.assertJson(r, 200, "PATCH %s" % st), st)
            self.assertEqual(got["status"], st)
            self.assertEqual((got["id"], got["items"], got["total"], got["created_at"]),
                             (o["id"], o["items"], o["total"], o["created_at"]))
            self.assertGreaterEqual(ts(got["updated_at"]), ts(last["updated_at"]))
            self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), got, "buyer sees %s" % st)
            last = got
        stock = self.stock_db(self.p)
        for st in ("cancelled", "shipped", "confirmed", "delivered"):
            with self.subTest(status=st):
                self.assertProblem(self.patch(self.seller_uid, o["id"], {"status": st}), 409, "delivered → %s" % st)
        self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), last, "unchanged")
        self.assertEqual(self.stock_db(self.p), stock, "a delivered order keeps its stock")

    def test_wrong_transitions_409(self):
        for path, bad in (([], "delivered"), ([], "shipped"), (["confirmed"], "delivered"),
                          (["confirmed"], "confirmed"), (["confirmed", "shipped"], "confirmed"),
                          (["confirmed", "shipped"], "cancelled"), (["cancelled"], "shipped"),
                          (["cancelled"], "cancelled")):
            with self.subTest(path=path, to=bad):
                o = self.new_order(qty=1)
                for st in path:
                    self.assertJson(self.patch(self.seller_uid, o["id"], {"status": st}), 200)
                before = self.assertJson(self.get_order(self.buyer, o["id"]))
                stock = self.stock_db(self.p)
                self.assertProblem(self.patch(self.seller_uid, o["id"], {"status": bad}), 409,
                                   "%s → %s" % (before["status"], bad))
                self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), before, "unchanged")
                self.assertEqual(self.stock_db(self.p), stock)

    def test_patch_is_the_sellers(self):
        o = self.new_order()
        self.assertProblem(self.patch(self.buyer, o["id"], {"status": "confirmed"}), 403, "the buyer")
        self.assertProblem(self.patch(self.buyer, o["id"], {"status": "cancelled"}), 403, "the buyer, cancelled")
        self.assertProblem(self.patch(self.stranger, o["id"], {"status": "confirmed"}), 404, "a stranger")
        self.assertProblem(self.patch(self.other_seller_uid, o["id"], {"status": "confirmed"}), 404, "another seller")
        self.assertUnauthorized(self.patch(None, o["id"], {"status": "confirmed"}), "no token")
        self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), o, "nothing changed")

    def test_patch_validation(self):
        o = self.new_order()
        for body, field in (({"status": "bogus"}, "status"), ({"status": "Confirmed"}, "status"),
                            ({"status": ""}, "status"), ({"status": 2}, "status"), ({"status": None}, "status"),
                            ({}, "status"), ({"status": "confirmed", "total": 1}, "total")):
            with self.subTest(body=body):
                self.assertInvalid(self.patch(self.seller_uid, o["id"], body), field, what=repr(body))
        r = self.patch(self.seller_uid, o["id"], {"status": "new"})
        # api.md: a known status along no arrow is a wrong transition, 409.
        self.assertProblem(r, 409, "PATCH to new (no arrow leads there)")
        js = {"Content-Type": "application/json"}
        self.assertProblem(self.call("PATCH", "/api/v1/orders/%d" % o["id"], self.seller_uid, b"{", headers=js), 400)
        self.assertProblem(self.call("PATCH", "/api/v1/orders/%d" % o["id"], self.seller_uid, b'["confirmed"]',
                                     headers=js), 400)
        self.assertProblem(self.call("PATCH", "/api/v1/orders/%d" % o["id"], self.seller_uid,
                                     b'{"status":"confirmed"}', headers={"Content-Type": "text/plain"}), 415)
        self.assertSameOrder(self.assertJson(self.get_order(self.buyer, o["id"])), o, "nothing changed")

    def test_seller_cancels_a_confirmed_order_stock_returned(self):
        start = self.stock_db(self.p)
        o = self.new_order(qty=5)
        self.assertJson(self.patch(self.seller_uid, o["id"], {"status": "confirmed"}), 200)
        self.assertEqual(self.stock_api(self.p), start - 5)
        c = self.assertJson(self.patch(self.seller_uid, o["id"], {"status": "cancelled"}), 200, "seller cancels")
        self.assertEqual(c["status"], "cancelled")
        self.assertEqual(self.stock_api(self.p), start, "stock returned")
        self.assertProblem(self.cancel(self.buyer, o["id"]), 409, "the buyer cannot cancel it again")
        self.assertEqual(self.stock_db(self.p), start)

    def test_method_not_allowed(self):
        o = self.new_order()
        r = self.call("DELETE", "/api/v1/orders/%d" % o["id"], self.buyer)
        self.assertProblem(r, 405)
        allow = {m.strip() for m in r.headers.get("Allow", "").split(",")}
        self.assertTrue({"GET", "PATCH"} <= allow and "DELETE" not in allow, "Allow: %r" % r.headers.get("Allow"))
        r = self.call("GET", "/api/v1/orders/%d/cancel" % o["id"], self.buyer)
        self.assertProblem(r, 405)
        self.assertEqual(self.assertJson(self.get_order(self.buyer, o["id"]))["status"], "new")
