"""Login throttling per account and CORS (api.md "Conventions"; issue 10).

Throttling (src/api/throttle.h): after LOGIN_FAILURES_FREE failed logins
for one email, further attempts for that email wait (429 + Retry-After),
whatever the address, with the same answers for an existing and an unknown
email; a success resets the count. The classes:

- MemoryThrottleTests: no Redis (a process-wide table), a backoff far longer
  than any test, so "still waiting" never depends on the machine's speed.
- ShortBackoffTests: a backoff of at most one second; the test polls until
  the wait is over (never sleeps a fixed time, never asserts a timing).
- RedisThrottleTests: two instances on one Redis share the counts; the
  Redis keys carry no email.
- RedisDownThrottleTests: Redis killed: logins still answer, and the
  throttle keeps working from memory.
- DefaultsTests: the defaults let a busy client through (30 accounts
  registered and logged in from one address), no CORS headers when
  CORS_ORIGINS is unset, OPTIONS without CORS keeps its 405.
- CorsTests: CORS_ORIGINS — actual requests, preflights, disallowed origins.
"""

import http.client
import itertools
import json
import os

from harness import ServerTestCase, fmt_resp, parallel, request, wait_until

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
PASSWORD = "correct horse battery"
# Longer than any test run: a wait that started is still on when checked.
LONG_BACKOFF = {"LOGIN_FAILURES_FREE": "3", "LOGIN_BACKOFF_BASE_MS": "600000", "LOGIN_BACKOFF_MAX_S": "900"}

_seq = itertools.count(1)


def unique_email(prefix="thr"):
    return "%s-%d-%d@example.test" % (prefix, os.getpid(), next(_seq))


def raw_login(port, email, password):
    """POST /auth/login; (status, headers, raw body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", LOGIN, body=json.dumps({"email": email, "password": password}).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


class ThrottleCase(ServerTestCase):

    def register(self, email, password=PASSWORD, port=None):
        r = request(port or self.port, "POST", REGISTER, body={"email": email, "password": password, "name": "Т"})
        self.assertStatus(r, 201, "register %s" % email)
        return r.body["user"]

    def login(self, email, password=PASSWORD, port=None):
        return request(port or self.port, "POST", LOGIN, body={"email": email, "password": password})

    def assertThrottled(self, r, what=""):
        self.assertProblem(r, 429, what)
        ra = r.headers.get("Retry-After", "")
        self.assertTrue(ra.isdigit() and 1 <= int(ra) <= 900,
                        "%s: Retry-After %r is not a number of seconds in 1..900\n%s" % (what, ra, fmt_resp(r)))
        self.assertNotIn("token", r.body)
        return int(ra)

    def fail_logins(self, email, n, port=None, what=""):
        for i in range(n):
            r = self.login(email, "wrong-password-%d" % i, port=port)
            self.assertProblem(r, 401, "%s: wrong password %d of %d" % (what or email, i + 1, n))


class MemoryThrottleTests(ThrottleCase):
    server_env = dict(LONG_BACKOFF)

    def test_failures_then_429_even_with_the_right_password(self):
        email = unique_email()
        self.register(email)
        self.fail_logins(email, 3)
        self.assertThrottled(self.login(email, "wrong-again"), "a 4th wrong password")
        # That is the point: during the wait even the right password is not
        # checked, so guessing cannot go on.
        self.assertThrottled(self.login(email), "the right password during the wait")
        self.assertThrottled(self.login(email.upper()), "the email in another case")
        self.assertThrottled(self.login("  %s " % email), "the email with spaces around it")

    def test_unknown_email_answers_alike(self):
        known, unknown = unique_email("known"), unique_email("unknown")
        self.register(known)
        seq_known = [raw_login(self.port, known, "wrong-%d" % i) for i in range(5)]
        seq_unknown = [raw_login(self.port, unknown, "wrong-%d" % i) for i in range(5)]
        self.assertEqual([s for s, _, _ in seq_known], [401, 401, 401, 429, 429], "statuses for a known email")
        self.assertEqual([s for s, _, _ in seq_unknown], [s for s, _, _ in seq_known],
                         "an unknown email gets other statuses than a known one")
        for i, ((_, hk, bk), (_, hu, bu)) in enumerate(zip(seq_known, seq_unknown)):
            self.assertEqual(bk, bu, "attempt %d: the bodies differ, so they tell whether the email exists" % (i + 1))
            for h in ("Content-Type", "WWW-Authenticate"):
                self.assertEqual(hk.get(h), hu.get(h), "attempt %d: %s differs" % (i + 1, h))
            self.assertEqual(hk.get("Retry-After") is None, hu.get("Retry-After") is None,
                             "attempt %d: Retry-After on one only" % (i + 1))
            self.assertNotIn(b"request id", bk)

    def test_success_resets_the_count(self):
        email = unique_email("reset")
        self.register(email)
        self.fail_logins(email, 2)
        self.assertJson(self.login(email), 200, "the right password before the limit")
        # Without the reset, the 3rd of these failures would start a wait.
        self.fail_logins(email, 2, what="after a success")
        self.assertJson(self.login(email), 200, "the right password again")

    def test_other_accounts_unaffected(self):
        victim, other = unique_email("victim"), unique_email("other")
        self.register(victim)
        self.register(other)
        self.fail_logins(victim, 3)
        self.assertThrottled(self.login(victim))
        self.assertJson(self.login(other), 200, "another account from the same address")
        self.assertProblem(self.login(unique_email("nobody")), 401, "a third email")


class ShortBackoffTests(ThrottleCase):
    server_env = {"LOGIN_FAILURES_FREE": "2", "LOGIN_BACKOFF_BASE_MS": "300", "LOGIN_BACKOFF_MAX_S": "1"}

    def test_after_the_wait_the_right_password_logs_in(self):
        email = unique_email("short")
        self.register(email)
        self.fail_logins(email, 2)
        seen = []

        def logged_in():
            r = self.login(email)
            seen.append(r.status)
            if r.status == 429:
                self.assertEqual(self.assertThrottled(r, "during the wait"), 1,
                                 "Retry-After above LOGIN_BACKOFF_MAX_S=1")
            return r.status == 200

        self.assertTrue(wait_until(logged_in, 30, interval=0.1),
                        "no 200 within 30 s of a wait of at most 1 s: %r" % seen[-10:])
        self.assertEqual(set(seen) - {429, 200}, set(), "answers while waiting: %r" % seen)
        # The success reset the count: one failure is free again.
        self.fail_logins(email, 1, what="after the wait")


class RedisThrottleTests(ThrottleCase):
    """Two instances on one Redis."""

    start_redis = True
    second_server = True
    server_env = LONG_BACKOFF

    def test_counts_shared_by_instances(self):
        email = unique_email("shared")
        self.register(email)
        a, b = self.port, self.server2.port
        self.fail_logins(email, 1, port=a)
        self.fail_logins(email, 1, port=b)
        self.fail_logins(email, 1, port=a)
        self.assertThrottled(self.login(email, port=b), "the right password on the other instance")
        self.assertThrottled(self.login(email, port=a), "and on the first")

    def test_unknown_email_alike_across_instances(self):
        known, unknown = unique_email("rknown"), unique_email("runknown")
        self.register(known)
        ports = [self.port, self.server2.port] * 3
        seq_known = [raw_login(p, known, "wrong") for p in ports[:5]]
        seq_unknown = [raw_login(p, unknown, "wrong") for p in ports[:5]]
        self.assertEqual([s for s, _, _ in seq_known], [401, 401, 401, 429, 429])
        self.assertEqual([(s, body) for s, _, body in seq_unknown], [(s, body) for s, _, body in seq_known])

    def test_success_on_one_instance_resets_on_the_other(self):
        email = unique_email("rreset")
        self.register(email)
        self.fail_logins(email, 2, port=self.port)
        self.assertJson(self.login(email, port=self.server2.port), 200)
        self.fail_logins(email, 2, port=self.port, what="after a success elsewhere")

    def test_keys_carry_no_email(self):
        email = unique_email("Secret.Person")
        self.fail_logins(email, 3)
        keys = [k.decode() for k in self.redis.call("KEYS", "l[fb]:*")]
        self.assertTrue(keys, "no throttle keys in Redis")
        local = email.split("@")[0].lower()
        for k in keys:
            self.assertRegex(k, r"^l[fb]:\{[0-9a-f]{32}\}$")
            self.assertNotIn(local, k.lower())
        # Every key expires.
        for k in keys:
            self.assertGreater(self.redis.call("PTTL", k), 0, "%s has no TTL" % k)


class RedisDownThrottleTests(ThrottleCase):
    """Redis configured but dead: logins neither fail nor hang, and the
    throttle works from memory."""

    start_redis = True
    server_env = dict(LONG_BACKOFF, CACHE_TIMEOUT_MS="200")

    def test_falls_back_to_memory(self):
        email = unique_email("down")
        self.register(email)
        self.redis.kill()
        self.assertJson(self.login(email), 200, "login with Redis down")
        self.fail_logins(email, 3, what="Redis down")
        self.assertThrottled(self.login(email), "Redis down: the wait is kept in memory")
        self.assertThrottled(self.login(email.upper()), "Redis down: the same account")


class DefaultsTests(ThrottleCase):
    """No LOGIN_* and no CORS_ORIGINS set."""

    def test_busy_client_is_never_throttled(self):
        emails = [unique_email("busy") for _ in range(30)]

        def one(email):
            def run():
                r = request(self.port, "POST", REGISTER, body={"email": email, "password": PASSWORD, "name": "Б"},
                            timeout=60)
                if r.status != 201:
                    return "register %s: %d %r" % (email, r.status, r.body)
                r = request(self.port, "POST", LOGIN, body={"email": email, "password": PASSWORD}, timeout=60)
                if r.status != 200:
                    return "login %s: %d %r" % (email, r.status, r.body)
                return None
            return run

        # Six at a time: quick, but within the offload queue whatever the
        # machine's speed (a full queue is a 503, not the throttle).
        results = []
        for i in range(0, len(emails), 6):
            results += parallel([one(e) for e in emails[i:i + 6]], timeout=300)
        self.assertEqual([r for r in results if r is not None], [], "a legitimate client was refused")

    def test_a_few_typos_are_not_throttled(self):
        email = unique_email("typo")
        self.register(email)
        self.fail_logins(email, 4)
        self.assertJson(self.login(email), 200, "4 typos are below the default limit of 5")

    def test_no_cors_headers_without_cors_origins(self):
        r = request(self.port, "GET", "/api/v1/cities", headers={"Origin": "https://shop.example"})
        self.assertStatus(r, 200)
        cors = [h for h in r.headers.keys() if h.lower().startswith("access-control-")]
        self.assertEqual(cors, [], "CORS headers without CORS_ORIGINS")
        r = request(self.port, "OPTIONS", LOGIN,
                    headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        self.assertProblem(r, 405, "a preflight without CORS_ORIGINS")
        self.assertIsNone(r.headers.get("Access-Control-Allow-Origin"))


ALLOWED = "https://shop.example"
SECOND = "http://localhost:3000"


class CorsTests(ServerTestCase):
    server_env = {"CORS_ORIGINS": "%s, %s" % (ALLOWED, SECOND)}

    def preflight(self, path, origin, method="POST", headers=None):
        h = {"Origin": origin, "Access-Control-Request-Method": method}
        if headers is not None:
            h["Access-Control-Request-Headers"] = headers
        return request(self.port, "OPTIONS", path, headers=h)

    def assertVaryOrigin(self, r):
        vary = [v.strip().lower() for v in ",".join(r.headers.get_all("Vary") or []).split(",")]
        self.assertIn("origin", vary, "no Vary: Origin\n%s" % fmt_resp(r))

    def test_actual_request_from_allowed_origins(self):
        for origin in (ALLOWED, SECOND):
            with self.subTest(origin=origin):
                r = self.get("/api/v1/cities", headers={"Origin": origin})
                self.assertStatus(r, 200)
                self.assertEqual(r.headers.get("Access-Control-Allow-Origin"), origin)
                self.assertVaryOrigin(r)
                exposed = [h.strip().lower() for h in r.headers.get("Access-Control-Expose-Headers", "").split(",")]
                for h in ("etag", "x-request-id", "retry-after", "idempotent-replayed", "location"):
                    self.assertIn(h, exposed, "%s is not exposed" % h)
                self.assertIsNone(r.headers.get("Access-Control-Allow-Credentials"))

    def test_errors_carry_cors_headers_too(self):
        r = self.get("/api/v1/no-such-thing", headers={"Origin": ALLOWED})
        self.assertProblem(r, 404)
        self.assertEqual(r.headers.get("Access-Control-Allow-Origin"), ALLOWED)
        r = request(self.port, "POST", LOGIN, body={"email": unique_email("cors"), "password": "x"},
                    headers={"Origin": ALLOWED})
        self.assertProblem(r, 401)
        self.assertEqual(r.headers.get("Access-Control-Allow-Origin"), ALLOWED)

    def test_actual_request_from_other_origin(self):
        for origin in ("https://evil.example", "https://shop.example.evil", "null", ALLOWED + "/", "HTTPS://SHOP.EXAMPLE"):
            with self.subTest(origin=origin):
                r = self.get("/api/v1/cities", headers={"Origin": origin})
                self.assertStatus(r, 200, "the request is served; the browser hides it")
                cors = [h for h in r.headers.keys() if h.lower().startswith("access-control-")]
                self.assertEqual(cors, [], "CORS headers for a disallowed origin")
                self.assertVaryOrigin(r)

    def test_no_origin_no_cors_headers(self):
        r = self.get("/api/v1/cities")
        self.assertStatus(r, 200)
        self.assertIsNone(r.headers.get("Access-Control-Allow-Origin"))

    def test_preflight_allowed(self):
        r = self.preflight(LOGIN, ALLOWED, headers="Content-Type, X-Request-Id, X-Evil, Cookie")
        self.assertStatus(r, 204)
        self.assertEqual(r.headers.get("Access-Control-Allow-Origin"), ALLOWED)
        methods = [m.strip() for m in r.headers.get("Access-Control-Allow-Methods", "").split(",")]
        self.assertEqual(methods, ["POST"], "the methods of /auth/login")
        allowed = [h.strip().lower() for h in r.headers.get("Access-Control-Allow-Headers", "").split(",")]
        self.assertEqual(sorted(allowed), ["content-type", "x-request-id"], "only allowed headers are echoed")
        self.assertTrue(r.headers.get("Access-Control-Max-Age", "").isdigit())
        self.assertVaryOrigin(r)
        self.assertEqual(r.body, b"")

    def test_preflight_methods_are_the_paths(self):
        r = self.preflight("/api/v1/products/1", SECOND, method="PATCH",
                           headers="authorization, content-type, idempotency-key, if-none-match")
        self.assertStatus(r, 204)
        methods = {m.strip() for m in r.headers.get("Access-Control-Allow-Methods", "").split(",")}
        self.assertTrue({"GET", "PATCH"} <= methods, "methods of /products/{id}: %r" % methods)
        self.assertNotIn("POST", methods)
        allowed = {h.strip().lower() for h in r.headers.get("Access-Control-Allow-Headers", "").split(",")}
        self.assertEqual(allowed, {"authorization", "content-type", "idempotency-key", "if-none-match"})

    def test_preflight_from_other_origin_403(self):
        r = self.preflight(LOGIN, "https://evil.example", headers="content-type")
        self.assertProblem(r, 403)
        cors = [h for h in r.headers.keys() if h.lower().startswith("access-control-")]
        self.assertEqual(cors, [], "CORS headers on a refused preflight")

    def test_options_without_origin_is_405(self):
        r = request(self.port, "OPTIONS", LOGIN)
        self.assertProblem(r, 405)
        self.assertIn("POST", r.headers.get("Allow", ""))
        # An OPTIONS from a page that is not a preflight: 405, readable.
        r = request(self.port, "OPTIONS", LOGIN, headers={"Origin": ALLOWED})
        self.assertProblem(r, 405)
        self.assertEqual(r.headers.get("Access-Control-Allow-Origin"), ALLOWED)

    def test_preflight_of_unknown_path_404(self):
        self.assertProblem(self.preflight("/api/v1/nothing-here", ALLOWED), 404)
