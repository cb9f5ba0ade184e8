"""Hardening (issue 10): the defects found in review, one class each.

- Defect 5: numbers outside the 64-bit range (or the double range) are a
  value out of range → 422 naming the field, not 400 "not valid JSON".
- Defect 6: PATCH /orders/{id} {"status":"new"} is a known status and a
  wrong transition → 409; an unknown status stays 422.
- Defect 9: single-line text fields refuse C0 control characters, a
  description accepts \\n and \\t only; the diagnostic log is one JSON
  object per line and never carries PostgreSQL's DETAIL (row data).
- Defect 10: a seller may not order its own products (422, in the SQL
  function, so no path bypasses it).
- Defects 1 and 2 (fixed in migrations/0005_outcomes.sql): a cancel above
  the stock ceiling succeeds; concurrent creates and cancels over the same
  products never answer 500 and conserve stock.

Every refusal is checked for its problem+json status, errors[].field, and
for having changed nothing (row counts, stock). Users, sellers and
products are made with SQL, tokens minted with the server's secret
(test_orders.OrderCase).
"""

import json

import harness
from harness import fmt_resp, parallel
from test_orders import JWT_SECRET, OrderCase, describe, retry_503, unique

JSON = {"Content-Type": "application/json"}



class HardeningCase(OrderCase):

    def raw(self, method, path, uid, text):
        """A request whose body is sent exactly as written (numbers JSON
        libraries would refuse to produce)."""
        return self.call(method, path, uid, text, headers=JSON)

    def product_row(self, pid):
        return self.db_one("SELECT title, description, price, stock, category_id, status, updated_at"
                           " FROM products WHERE id = %s", (pid,))

    def product_count(self):
        return self.db_one("SELECT count(*) FROM products")[0]

    def order_status(self, oid):
        return self.db_one("SELECT status FROM orders WHERE id = %s", (oid,))[0]


# ---------------------------------------------------------------------------
# Defect 6: PATCH to "new"
# ---------------------------------------------------------------------------

class PatchStatusTests(HardeningCase):

    def setUp(self):
        super().setUp()
        self.seller_user, sid = self.new_seller()
        self.pid = self.new_product(sid, stock=10)
        self.buyer = self.new_user()

    def patch(self, oid, status):
        return self.call("PATCH", "/api/v1/orders/%d" % oid, self.seller_user, {"status": status})

    def test_back_to_new_is_a_wrong_transition_409(self):
        o = self.place_ok(self.buyer, [(self.pid, 2)])
        r = self.patch(o["id"], "new")
        b = self.assertProblem(r, 409, "PATCH new -> new")
        self.assertEqual(b.get("current_status"), "new", fmt_resp(r))
        self.assertEqual(self.order_status(o["id"]), "new")
        self.assertJson(self.patch(o["id"], "confirmed"), 200, "confirm")
        r = self.patch(o["id"], "new")
        b = self.assertProblem(r, 409, "PATCH confirmed -> new")
        self.assertEqual(b.get("current_status"), "confirmed", fmt_resp(r))
        self.assertEqual(self.order_status(o["id"]), "confirmed")
        self.assertEqual(self.stock_db(self.pid), 8, "stock untouched by the refusals")

    def test_unknown_status_stays_422(self):
        o = self.place_ok(self.buyer, [(self.pid, 1)])
        for bad in ("NEW", "bogus", "", "cancel"):
            self.assertInvalid(self.patch(o["id"], bad), "status", what="PATCH status %r" % bad)
        self.assertEqual(self.order_status(o["id"]), "new")
        self.assertEqual(self.stock_db(self.pid), 9)


# ---------------------------------------------------------------------------
# Defect 10: self-orders
# ---------------------------------------------------------------------------

class SelfOrderTests(HardeningCase):

    def test_a_seller_cannot_order_its_own_product_422(self):
        seller_user, sid = self.new_seller()
        own = self.new_product(sid, stock=10)
        own2 = self.new_product(sid, stock=10)
        before = self.counts()
        r = self.place(seller_user, [(own, 1)])
        self.assertInvalid(r, "items[0].product_id", what="one own product")
        # The field names the item as the client sent it, not as sorted.
        hi, lo = max(own, own2), min(own, own2)
        r = self.place(seller_user, {"items": [{"product_id": hi, "quantity": 1},
                                               {"product_id": lo, "quantity": 2}]})
        b = self.assertInvalid(r, what="two own products")
        self.assertIn(b["errors"][0]["field"], ("items[0].product_id", "items[1].product_id"), fmt_resp(r))
        self.assertEqual(self.counts(), before, "no order row")
        self.assertEqual((self.stock_db(own), self.stock_db(own2)), (10, 10), "stock unchanged")

    def test_refusal_is_replayed_with_its_key_and_takes_nothing(self):
        seller_user, sid = self.new_seller()
        own = self.new_product(sid, stock=5)
        before = self.counts()
        key = unique("self")
        first = self.place(seller_user, [(own, 1)], key=key)
        self.assertInvalid(first, "items[0].product_id", what="first")
        again = self.place(seller_user, [(own, 1)], key=key)
        self.assertInvalid(again, "items[0].product_id", what="replay")
        self.assertEqual(again.raw, first.raw)
        self.assertEqual(self.counts(), before)
        self.assertEqual(self.stock_db(own), 5)

    def test_the_seller_may_still_buy_from_others_and_others_from_it(self):
        seller_user, sid = self.new_seller()
        _, other_sid = self.new_seller("Другой")
        own = self.new_product(sid, stock=5)
        theirs = self.new_product(other_sid, stock=5)
        self.place_ok(seller_user, [(theirs, 1)], "a seller buys from another seller")
        self.place_ok(self.new_user(), [(own, 1)], "a buyer buys from the seller")
        self.assertEqual((self.stock_db(own), self.stock_db(theirs)), (4, 4))


# ---------------------------------------------------------------------------
# Defect 5: numbers outside the 64-bit (or double) range
# ---------------------------------------------------------------------------

# Out of range for every integer field, as JSON texts. The last two are
# floats: parsed fine, but not an integer.
OUT_OF_RANGE = ["9223372036854775808", "-9223372036854775809", "1e400", "-1e400",
                "123456789012345678901234567890", "1e300", "1.5e19"]


class OverflowNumberTests(HardeningCase):

    def setUp(self):
        super().setUp()
        self.seller_user, self.sid = self.new_seller()
        self.pids = [self.new_product(self.sid, stock=10) for _ in range(3)]
        self.buyer = self.new_user()

    def assertNothingChanged(self, before, what):
        self.assertEqual(self.counts(), before, "%s: orders created" % what)
        for p in self.pids:
            self.assertEqual(self.stock_db(p), 10, "%s: stock of %d changed" % (what, p))

    def test_order_items_quantity_and_product_id_422_named(self):
        p0, p1, p2 = self.pids
        before = self.counts()
        for n in OUT_OF_RANGE:
            text = ('{"items":[{"product_id":%d,"quantity":1},{"product_id":%d,"quantity":1},'
                    '{"product_id":%d,"quantity":%s}]}' % (p0, p1, p2, n))
            self.assertInvalid(self.raw("POST", "/api/v1/orders", self.buyer, text), "items[2].quantity",
                               what="quantity %s" % n)
            text = '{"items":[{"product_id":%s,"quantity":1},{"product_id":%d,"quantity":1}]}' % (n, p1)
            self.assertInvalid(self.raw("POST", "/api/v1/orders", self.buyer, text), "items[0].product_id",
                               what="product_id %s" % n)
        self.assertNothingChanged(before, "POST /orders")

    def test_every_out_of_range_number_is_named(self):
        p0, p1, _ = self.pids
        before = self.counts()
        text = ('{"items":[{"product_id":%d,"quantity":1e400},{"product_id":99999999999999999999,'
                '"quantity":-9223372036854775809}]}' % p0)
        b = self.assertInvalid(self.raw("POST", "/api/v1/orders", self.buyer, text),
                               "items[0].quantity", "items[1].product_id", "items[1].quantity")
        self.assertEqual(len(b["errors"]), 3, b)
        self.assertNothingChanged(before, "POST /orders")

    def test_products_create_and_patch_422_named(self):
        cat = self.dataset.ids["phones"]
        count = self.product_count()
        for field in ("price", "stock", "category_id"):
            for n in OUT_OF_RANGE:
                body = {"title": "Ok", "description": "", "price": "PRICE", "stock": "STOCK",
                        "category_id": "CAT"}
                text = json.dumps(body).replace('"PRICE"', n if field == "price" else "100") \
                    .replace('"STOCK"', n if field == "stock" else "1") \
                    .replace('"CAT"', n if field == "category_id" else str(cat))
                r = self.raw("POST", "/api/v1/products", self.seller_user, text)
                self.assertInvalid(r, field, what="POST /products %s=%s" % (field, n))
        self.assertEqual(self.product_count(), count, "no product created")
        pid = self.pids[0]
        row = self.product_row(pid)
        for field in ("price", "stock", "category_id"):
            for n in OUT_OF_RANGE:
                r = self.raw("PATCH", "/api/v1/products/%d" % pid, self.seller_user, '{"%s": %s}' % (field, n))
                self.assertInvalid(r, field, what="PATCH /products %s=%s" % (field, n))
        self.assertEqual(self.product_row(pid), row, "the product is unchanged")

    def test_text_fields_and_unknown_fields_and_sellers(self):
        pid = self.pids[0]
        row = self.product_row(pid)
        r = self.raw("PATCH", "/api/v1/products/%d" % pid, self.seller_user, '{"title": 1e400}')
        self.assertInvalid(r, "title", what="a title that is an out-of-range number")
        r = self.raw("PATCH", "/api/v1/products/%d" % pid, self.seller_user, '{"nonsense": 1e400}')
        self.assertInvalid(r, "nonsense", what="an unknown field")
        self.assertEqual(self.product_row(pid), row)
        seller = self.db_one("SELECT name, city_id, district_id FROM sellers WHERE id = %s", (self.sid,))
        r = self.raw("PATCH", "/api/v1/sellers/%d" % self.sid, self.seller_user,
                     '{"city_id": 9223372036854775808, "district_id": -1e400}')
        self.assertInvalid(r, "city_id", "district_id", what="PATCH /sellers")
        self.assertEqual(self.db_one("SELECT name, city_id, district_id FROM sellers WHERE id = %s",
                                     (self.sid,)), seller)

    def test_malformed_bodies_stay_400(self):
        before = self.counts()
        for text in ('{"items": [{"product_id": 1e400, "quantity": 1}]',      # unterminated
                     '{"items": [{"product_id": 1e400 "quantity": 1}]}',      # missing comma
                     '{"items": [{"product_id": 01e400, "quantity": 1}]}',    # not a JSON number
                     '{"items": [{"product_id": 1e400, "quantity": 1}]} x',   # trailing garbage
                     '[1e400]',                                               # not an object
                     '{"a": 1e400, "a": 2}'):                                 # duplicate key
            r = self.raw("POST", "/api/v1/orders", self.buyer, text)
            self.assertProblem(r, 400, "malformed body %r" % text)
        self.assertNothingChanged(before, "malformed bodies")

    def test_in_range_extremes_still_work(self):
        p0 = self.pids[0]
        before = self.counts()
        r = self.raw("POST", "/api/v1/orders", self.buyer,
                     '{"items":[{"product_id":9223372036854775807,"quantity":1}]}')
        self.assertInvalid(r, "items", what="the largest id is an unknown product, not out of range")
        r = self.raw("POST", "/api/v1/orders", self.buyer,
                     '{"items":[{"product_id":%d,"quantity":1e-400}]}' % p0)
        self.assertInvalid(r, "items[0].quantity", what="an underflowing float is not an integer")
        self.assertNothingChanged(before, "extremes")
        self.place_ok(self.buyer, [(p0, 1)])


# ---------------------------------------------------------------------------
# Defect 9: control characters in text, and a log that cannot be forged
# ---------------------------------------------------------------------------

# Every C0 control character and DEL; a description may hold \n and \t.
C0 = [chr(c) for c in range(0x20)] + ["\x7f"]
MULTILINE_OK = ["\n", "\t"]
TS_MS_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


class ControlCharacterTests(HardeningCase):

    def setUp(self):
        super().setUp()
        self.seller_user, self.sid = self.new_seller()
        self.pid = self.new_product(self.sid)

    def product_body(self, **kw):
        body = {"title": "Ok", "description": "", "price": 100, "stock": 1,
                "category_id": self.dataset.ids["phones"]}
        body.update(kw)
        return body

    def test_single_line_fields_refuse_c0_and_del(self):
        count = self.product_count()
        row = self.product_row(self.pid)
        seller = self.db_one("SELECT name, description FROM sellers WHERE id = %s", (self.sid,))
        users = self.db_one("SELECT count(*) FROM users")[0]
        for ch in C0:
            what = "U+%04X" % ord(ch)
            title = "a" + ch + "b"
            r = self.call("POST", "/api/v1/products", self.seller_user, self.product_body(title=title))
            self.assertInvalid(r, "title", what="POST /products title with " + what)
            r = self.call("PATCH", "/api/v1/products/%d" % self.pid, self.seller_user, {"title": title})
            self.assertInvalid(r, "title", what="PATCH /products title with " + what)
            r = self.call("PATCH", "/api/v1/sellers/%d" % self.sid, self.seller_user, {"name": title})
            self.assertInvalid(r, "name", what="PATCH /sellers name with " + what)
            r = self.call("POST", "/api/v1/auth/register", None,
                          {"email": unique("c0") + ch + "@example.test", "password": "password123", "name": "Ok"})
            self.assertInvalid(r, "email", what="register email with " + what)
            r = self.call("POST", "/api/v1/auth/register", None,
                          {"email": unique("c0") + "@example.test", "password": "password123", "name": title})
            self.assertInvalid(r, "name", what="register name with " + what)
        self.assertEqual(self.product_count(), count, "no product created")
        self.assertEqual(self.product_row(self.pid), row, "product unchanged")
        self.assertEqual(self.db_one("SELECT name, description FROM sellers WHERE id = %s", (self.sid,)), seller)
        self.assertEqual(self.db_one("SELECT count(*) FROM users")[0], users, "no user registered")

    def test_reference_names_refuse_c0(self):
        admin = self.db_one("INSERT INTO users (email, password_hash, name, is_admin) VALUES (%s, 'x', 'Админ', true)"
                            " RETURNING id", (unique("admin") + "@example.test",))[0]
        cities = self.db_one("SELECT count(*) FROM cities")[0]
        for ch in ("\x00", "\x01", "\x1b", "\n", "\x7f"):
            r = self.call("POST", "/api/v1/cities", admin, {"name": "Город" + ch, "slug": unique("c").lower()})
            self.assertInvalid(r, "name", what="city name with U+%04X" % ord(ch))
        self.assertEqual(self.db_one("SELECT count(*) FROM cities")[0], cities)

    def test_descriptions_take_newline_and_tab_only(self):
        count = self.product_count()
        row = self.product_row(self.pid)
        for ch in C0:
            if ch in MULTILINE_OK:
                continue
            what = "description with U+%04X" % ord(ch)
            r = self.call("POST", "/api/v1/products", self.seller_user, self.product_body(description="a" + ch))
            self.assertInvalid(r, "description", what="POST /products " + what)
            r = self.call("PATCH", "/api/v1/products/%d" % self.pid, self.seller_user, {"description": ch})
            self.assertInvalid(r, "description", what="PATCH /products " + what)
            r = self.call("PATCH", "/api/v1/sellers/%d" % self.sid, self.seller_user, {"description": ch})
            self.assertInvalid(r, "description", what="PATCH /sellers " + what)
        self.assertEqual(self.product_count(), count)
        self.assertEqual(self.product_row(self.pid), row)
        text = "Первая строка\n\tвторая строка"
        p = self.assertJson(self.call("POST", "/api/v1/products", self.seller_user,
                                      self.product_body(description=text)), 201, "multi-line description")
        self.assertEqual(p["description"], text)
        self.assertJson(self.call("PATCH", "/api/v1/sellers/%d" % self.sid, self.seller_user,
                                  {"description": text}), 200, "multi-line seller description")


class LogTests(HardeningCase):
    """The diagnostic log (stderr): one JSON object per line, and no row
    data from PostgreSQL. LOG_LEVEL=debug logs every database error."""

    server_env = {"JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "debug"}

    def log_lines(self):
        text = self.server.log_since(self._log_mark)
        return [l for l in text.split("\n") if l]

    def assertJsonLines(self, lines):
        out = []
        for line in lines:
            try:
                doc = json.loads(line)
            except ValueError as e:
                self.fail("a log line that is not JSON (%s): %r" % (e, line))
            self.assertIsInstance(doc, dict, line)
            self.assertRegex(doc.get("@timestamp", ""), TS_MS_RE, line)
            self.assertIn(doc.get("log.level"), ("debug", "info", "warn", "error"), line)
            self.assertIsInstance(doc.get("message"), str, line)
            out.append(doc)
        return out

    def test_every_line_is_json_including_start_up(self):
        # The class's server has logged its start-up; a fresh one logs start
        # and stop, read whole.
        s = self.new_server(env={"JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "debug"})
        s.start()
        self.assertStatus(harness.request(s.port, "GET", "/healthz"), 200)
        s.stop()
        lines = [l for l in s.log_text().split("\n") if l]
        self.assertTrue(lines, "nothing logged at debug level")
        self.assertJsonLines(lines)

    def test_control_characters_never_reach_the_log_raw(self):
        seller_user, sid = self.new_seller()
        count = self.product_count()
        r = self.call("POST", "/api/v1/products", seller_user,
                      {"title": "x\x1b[2J\nforged line\x01", "description": "", "price": 1, "stock": 1,
                       "category_id": self.dataset.ids["phones"]})
        self.assertInvalid(r, "title")
        self.assertEqual(self.product_count(), count)
        raw = self.server.log_since(self._log_mark)
        for ch in C0:
            if ch != "\n":
                self.assertNotIn(ch, raw, "a raw U+%04X in the log" % ord(ch))
        self.assertNotIn("forged line", [l.strip() for l in raw.split("\n")])
        self.assertJsonLines(self.log_lines())

    def test_constraint_violation_logs_no_row_data_and_is_not_500(self):
        """A CHECK the server does not validate itself (added here, as a
        future constraint or a trigger would be): the INSERT fails with
        SQLSTATE 23514, whose DETAIL quotes the whole row."""
        seller_user, sid = self.new_seller()
        secret = unique("row-secret")
        self.db("ALTER TABLE products ADD CONSTRAINT hardening_test_check"
                " CHECK (title NOT LIKE 'row-secret%%') NOT VALID")
        try:
            count = self.product_count()
            r = self.call("POST", "/api/v1/products", seller_user,
                          {"title": secret, "description": "описание-" + secret, "price": 4242, "stock": 1,
                           "category_id": self.dataset.ids["phones"]})
            b = self.assertProblem(r, 409, "a broken constraint is a conflict, not a 500")
            self.assertIn("hardening_test_check", b["detail"], "the detail names the constraint\n%s" % fmt_resp(r))
            self.assertNotIn(secret, json.dumps(b, ensure_ascii=False))
            self.assertEqual(self.product_count(), count, "no product created")
        finally:
            self.db("ALTER TABLE products DROP CONSTRAINT hardening_test_check")
        raw = self.server.log_since(self._log_mark)
        self.assertNotIn(secret, raw, "row data in the log")
        self.assertNotIn("Failing row", raw)
        self.assertNotIn("4242", raw)
        docs = self.assertJsonLines(self.log_lines())
        db = [d for d in docs if d.get("db.response.status_code") == "23514"]
        self.assertTrue(db, "no log line with the SQLSTATE:\n%s" % raw)
        self.assertEqual(db[0].get("db.constraint.name"), "hardening_test_check", db[0])
        self.assertTrue(db[0].get("db.statement.name"), db[0])


# ---------------------------------------------------------------------------
# Defect 1: a cancel above the stock ceiling; constraint violations
# ---------------------------------------------------------------------------

class StockCeilingTests(HardeningCase):

    def setUp(self):
        super().setUp()
        self.seller_user, self.sid = self.new_seller()
        self.pid = self.new_product(self.sid, stock=10)
        self.buyer = self.new_user()

    def raise_to_ceiling(self):
        r = self.call("PATCH", "/api/v1/products/%d" % self.pid, self.seller_user, {"stock": 1000000})
        self.assertEqual(self.assertJson(r, 200, "seller raises stock")["stock"], 1000000)

    def test_buyer_cancel_returns_stock_above_the_ceiling(self):
        o = self.place_ok(self.buyer, [(self.pid, 5)])
        self.raise_to_ceiling()
        r = self.call("POST", "/api/v1/orders/%d/cancel" % o["id"], self.buyer)
        self.assertEqual(self.assertJson(r, 200, "buyer cancels")["status"], "cancelled")
        self.assertEqual(self.stock_db(self.pid), 1000005)
        self.assertEqual(self.stock_api(self.pid), 1000005)

    def test_seller_cancel_returns_stock_above_the_ceiling(self):
        o = self.place_ok(self.buyer, [(self.pid, 5)])
        self.assertJson(self.call("PATCH", "/api/v1/orders/%d" % o["id"], self.seller_user,
                                  {"status": "confirmed"}), 200, "confirm")
        self.raise_to_ceiling()
        r = self.call("PATCH", "/api/v1/orders/%d" % o["id"], self.seller_user, {"status": "cancelled"})
        self.assertEqual(self.assertJson(r, 200, "seller cancels")["status"], "cancelled")
        self.assertEqual(self.stock_db(self.pid), 1000005)

    def test_the_api_bound_still_holds_for_writes(self):
        r = self.call("PATCH", "/api/v1/products/%d" % self.pid, self.seller_user, {"stock": 1000001})
        self.assertInvalid(r, "stock")
        self.assertEqual(self.stock_db(self.pid), 10)

    def test_a_constraint_violation_is_409_and_changes_nothing(self):
        """The situation before 0005: a CHECK capping stock at 10^6 (put
        back here for this test) makes the cancel's UPDATE fail with SQLSTATE
        23514. That answer is a 409 naming the constraint, never a 500, and
        the whole transaction is gone: the order is still new, stock as it
        was."""
        o = self.place_ok(self.buyer, [(self.pid, 5)])
        self.raise_to_ceiling()
        self.db("ALTER TABLE products ADD CONSTRAINT hardening_ceiling_check CHECK (stock <= 1000000) NOT VALID")
        try:
            r = self.call("POST", "/api/v1/orders/%d/cancel" % o["id"], self.buyer)
            b = self.assertProblem(r, 409, "cancel against a ceiling constraint")
            self.assertIn("hardening_ceiling_check", b["detail"], fmt_resp(r))
            self.assertEqual(self.order_status(o["id"]), "new")
            self.assertEqual(self.stock_db(self.pid), 1000000)
        finally:
            self.db("ALTER TABLE products DROP CONSTRAINT hardening_ceiling_check")
        r = self.call("POST", "/api/v1/orders/%d/cancel" % o["id"], self.buyer)
        self.assertJson(r, 200, "the same cancel without the constraint")
        self.assertEqual(self.stock_db(self.pid), 1000005)


# ---------------------------------------------------------------------------
# Defect 2: concurrent creates and cancels over the same products
# ---------------------------------------------------------------------------

class ConcurrentStockTests(HardeningCase):

    server_env = {"JWT_SECRET": JWT_SECRET, "WORKERS": "2"}
    STOCK = 1000

    def new_users(self, n):
        rows = self.db("INSERT INTO users (email, password_hash, name)"
                       " SELECT %s || '-' || g || '@example.test', 'x', 'Покупатель ' || g"
                       " FROM generate_series(1, %s) g RETURNING id", (unique("many"), n))
        return [r[0] for r in rows]

    def assertConserved(self, pids, what):
        """stock + what live (not cancelled) orders hold == the start."""
        for p in pids:
            held = self.db_one("SELECT coalesce(sum(i.quantity), 0) FROM order_items i"
                               " JOIN orders o ON o.id = i.order_id AND o.created_at = i.created_at"
                               " WHERE i.product_id = %s AND o.status <> 'cancelled'", (p,))[0]
            stock = self.stock_db(p)
            self.assertGreaterEqual(stock, 0, "%s: negative stock of %d" % (what, p))
            self.assertEqual(stock + held, self.STOCK,
                             "%s: product %d: stock %d + held %d != %d" % (what, p, stock, held, self.STOCK))

    def test_creates_and_cancels_interleaved_no_500_stock_conserved(self):
        seller_user, sid = self.new_seller()
        pids = [self.new_product(sid, stock=self.STOCK) for _ in range(3)]
        users = self.new_users(60)
        orders_of = [[(pids[(i + k) % 3], 1 + (i + k) % 3) for k in range(1 + i % 3)] for i in range(60)]
        for items in orders_of[1::2]:
            items.reverse()  # the same products named in the opposite order
        # A first wave of orders to cancel while the second wave is placed.
        first = []
        for u, items in zip(users[:30], orders_of[:30]):
            first.append((u, self.place_ok(u, items)["id"]))
        self.assertConserved(pids, "after the first wave")

        def cancel(u, oid, i):
            if i % 3 == 0:  # the seller cancels some, the buyer the others
                return self.call("PATCH", "/api/v1/orders/%d" % oid, seller_user, {"status": "cancelled"},
                                 timeout=60)
            return self.call("POST", "/api/v1/orders/%d/cancel" % oid, u, timeout=60)

        jobs = [lambda u=u, oid=oid, i=i: retry_503(lambda: cancel(u, oid, i)) for i, (u, oid) in enumerate(first)]
        jobs += [lambda u=u, items=items: retry_503(lambda: self.place(u, items, timeout=60))
                 for u, items in zip(users[30:], orders_of[30:])]
        results = parallel(jobs)
        statuses = [getattr(r, "status", None) for r in results]
        bad = [r for r in results if getattr(r, "status", None) not in (200, 201)]
        self.assertEqual(bad, [], "answers other than 200/201:\n%s" % describe(bad[:5]))
        self.assertEqual(statuses[:30], [200] * 30, "every cancel succeeds")
        self.assertEqual(statuses[30:], [201] * 30, "every order fits the stock")
        self.assertEqual(self.db_one("SELECT count(*) FROM orders WHERE seller_id = %s AND status = 'cancelled'",
                                     (sid,))[0], 30)
        self.assertConserved(pids, "after creates and cancels")
        # And cancelling the second wave returns everything.
        second = [(u, r.body["id"]) for u, r in zip(users[30:], results[30:])]
        results = parallel([lambda u=u, oid=oid: retry_503(lambda: self.call("POST", "/api/v1/orders/%d/cancel" % oid,
                                                                             u, timeout=60)) for u, oid in second])
        bad = [r for r in results if getattr(r, "status", None) != 200]
        self.assertEqual(bad, [], "cancels of the second wave:\n%s" % describe(bad[:5]))
        self.assertEqual([self.stock_db(p) for p in pids], [self.STOCK] * 3, "all stock back")
