"""Accounts and bearer tokens (api.md "Conventions" / "Auth"; B8).

register, login, /me; what a token must be for the server to accept it
(HS256 with JWT_SECRET, not expired, stateless: any instance with the same
secret accepts it); the start-up checks of JWT_SECRET.

Argon2id costs tens of milliseconds per register/login, so the tests create
only the accounts they need; tokens for the negative cases are forged here
with Python's hmac (the claims src/core/jwt.c issues: sub as a string, iat,
exp).
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import threading
import time

import harness
from harness import ServerTestCase, db_connect, fmt_resp, is_int, request

JWT_SECRET = "auth-tests-secret-0123456789abcdef-0123456789"
JWT_TTL_S = 7200  # the class runs with JWT_TTL=2h to see that it is honoured
HS256_HEADER = {"alg": "HS256", "typ": "JWT"}
HS256_HEADER_B64 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

USER_FIELDS = ["id", "email", "name", "seller_id"]

_seq = itertools.count(1)


def b64url(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def make_token(claims, secret=JWT_SECRET, header=None, signature=None):
    """A JWT: base64url(header).base64url(claims).base64url(HMAC-SHA256).
    header None is marketd's exact header; signature overrides the MAC
    (e.g. "" for alg=none)."""
    h = HS256_HEADER_B64 if header is None else b64url(compact(header))
    signing = h + "." + b64url(compact(claims))
    if signature is None:
        signature = b64url(hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest())
    return signing + "." + signature


def token_for(user_id, secret=JWT_SECRET, iat=None, exp=None):
    now = int(time.time())
    iat = now if iat is None else iat
    exp = now + 3600 if exp is None else exp
    return make_token({"sub": str(user_id), "iat": iat, "exp": exp}, secret=secret)


def unique_email(prefix="user"):
    return "%s-%d-%d@example.test" % (prefix, os.getpid(), next(_seq))


def bearer(token):
    return {"Authorization": "Bearer " + token}


class AuthCase(ServerTestCase):

    server_env = {"JWT_SECRET": JWT_SECRET, "JWT_TTL": "2h", "DB_POOL_SIZE": "8"}

    # -- requests ---------------------------------------------------------

    def register(self, email=None, password="correct horse", name="Тест", port=None):
        body = {"email": email or unique_email(), "password": password, "name": name}
        return request(port or self.port, "POST", "/api/v1/auth/register", body=body)

    def login(self, email, password, port=None):
        return request(port or self.port, "POST", "/api/v1/auth/login",
                       body={"email": email, "password": password})

    def me(self, token=None, headers=None, port=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        return request(port or self.port, "GET", "/api/v1/me", headers=h)

    # -- database ---------------------------------------------------------

    def db(self, sql, args=()):
        return harness.db_query(sql, args)

    def user_count(self):
        return self.db("SELECT count(*) FROM users")[0][0]

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

    def assertUser(self, u, what=""):
        self.assertIsInstance(u, dict, "%s: user is not an object: %r" % (what, u))
        self.assertEqual(sorted(u.keys()), sorted(USER_FIELDS), "%s: user members %r" % (what, list(u.keys())))
        self.assertTrue(is_int(u["id"]) and u["id"] > 0, "%s: user id %r" % (what, u["id"]))
        self.assertIsInstance(u["email"], str, what)
        self.assertIsInstance(u["name"], str, what)
        self.assertTrue(u["seller_id"] is None or is_int(u["seller_id"]), "%s: seller_id %r" % (what, u["seller_id"]))

    def assertSession(self, r, status, ttl, t_before, t_after, what=""):
        """{"user","token","expires_at"}: a token marketd issued (its header,
        sub = the user id as a string, exp = iat + ttl) and expires_at = exp
        in RFC 3339 UTC. Returns the body."""
        b = self.assertJson(r, status, what)
        self.assertEqual(sorted(b.keys()), sorted(["user", "token", "expires_at"]),
                         "%s: session members\n%s" % (what, fmt_resp(r)))
        self.assertUser(b["user"], what)
        tok = b["token"]
        self.assertIsInstance(tok, str, what)
        parts = tok.split(".")
        self.assertEqual(len(parts), 3, "%s: token %r is not header.payload.signature" % (what, tok))
        self.assertEqual(json.loads(b64url_decode(parts[0])), HS256_HEADER, "%s: token header" % what)
        claims = json.loads(b64url_decode(parts[1]))
        self.assertEqual(claims.get("sub"), str(b["user"]["id"]), "%s: sub claim %r" % (what, claims))
        self.assertTrue(is_int(claims.get("iat")) and is_int(claims.get("exp")), "%s: claims %r" % (what, claims))
        self.assertTrue(int(t_before) - 1 <= claims["iat"] <= t_after + 1,
                        "%s: iat %d is not the time of the request (%.0f..%.0f)" % (what, claims["iat"], t_before, t_after))
        self.assertEqual(claims["exp"] - claims["iat"], ttl, "%s: exp - iat, expected JWT_TTL=%d s" % (what, ttl))
        # The signature is HMAC-SHA256 with JWT_SECRET over header.payload.
        mac = b64url(hmac.new(JWT_SECRET.encode(), (parts[0] + "." + parts[1]).encode(), hashlib.sha256).digest())
        self.assertEqual(parts[2], mac, "%s: the signature is not base64url(HMAC-SHA256(JWT_SECRET, header.payload))"
                         % what)
        exp_dt, _ = harness.parse_rfc3339_utc(b["expires_at"])
        self.assertEqual(exp_dt.timestamp(), claims["exp"],
                         "%s: expires_at %r differs from the token's exp %d" % (what, b["expires_at"], claims["exp"]))
        self.assertTrue(t_before + ttl - 2 <= exp_dt.timestamp() <= t_after + ttl + 2,
                        "%s: expires_at %s is not now + %d s (requested between %.0f and %.0f)"
                        % (what, b["expires_at"], ttl, t_before, t_after))
        return b


class RegisterTests(AuthCase):

    def test_register_shape_token_and_me(self):
        email = unique_email("Shape.Case")
        t0 = time.time()
        r = self.register(email, "s3cret-password", "Анна Каренина")
        t1 = time.time()
        b = self.assertSession(r, 201, JWT_TTL_S, t0, t1, "register")
        self.assertEqual(list(b.keys())[0], "user", "register answers {\"user\",\"token\",\"expires_at\"}")
        u = b["user"]
        self.assertEqual(u["email"].lower(), email.lower())
        self.assertEqual(u["name"], "Анна Каренина")
        self.assertIsNone(u["seller_id"], "a new user has no seller profile")
        row = self.db("SELECT email, name FROM users WHERE id = %s", (u["id"],))
        self.assertEqual(len(row), 1, "the user row exists")
        # The token works, and /me is the same user object.
        me = self.me(b["token"])
        self.assertEqual(self.assertJson(me, 200, "/me"), u)
        self.assertEqual(list(me.body.keys()), list(u.keys()), "/me and register render the user alike")

    def test_password_stored_only_as_argon2id(self):
        password = "plain-text-canary-%d" % os.getpid()
        r = self.register(password=password)
        uid = self.assertJson(r, 201)["user"]["id"]
        h = self.db("SELECT password_hash FROM users WHERE id = %s", (uid,))[0][0]
        self.assertTrue(h.startswith("$argon2id$"), "password_hash is not an Argon2id PHC string: %r" % h)
        self.assertNotIn(password, h)
        self.assertNotIn(password.encode().hex(), h)
        self.assertNotIn(b64url(password), h)
        row = self.db("SELECT row_to_json(u)::text FROM users u WHERE id = %s", (uid,))[0][0]
        self.assertNotIn(password, row, "the password appears in the user row")
        self.assertNotIn(password, json.dumps(r.body), "the answer echoes the password")

    def test_email_taken_409_case_insensitive(self):
        email = unique_email("Taken")
        self.assertJson(self.register(email), 201, "first")
        before = self.user_count()
        for variant in (email, email.upper(), email.lower(), email[:1].swapcase() + email[1:]):
            with self.subTest(email=variant):
                r = self.register(variant, "another-password", "Другой")
                self.assertProblem(r, 409, "register %r again" % variant)
        self.assertEqual(self.user_count(), before, "a refused registration adds no user")

    def test_concurrent_registrations_of_one_email(self):
        email = unique_email("race")
        variants = [email, email.upper(), email.lower(), "R" + email[1:]]
        barrier = threading.Barrier(len(variants))
        results = [None] * len(variants)

        def go(i):
            barrier.wait(10)
            try:
                results[i] = self.register(variants[i], "password-%d" % i, "Гонка")
            except Exception as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(variants))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(getattr(r, "status", repr(r)) for r in results)
        self.assertEqual(statuses, [201, 409, 409, 409],
                         "one account per email (case-insensitive) under concurrency: %r\n%s"
                         % (statuses, "\n".join(fmt_resp(r) if hasattr(r, "status") else repr(r) for r in results)))
        n = self.db("SELECT count(*) FROM users WHERE lower(email) = lower(%s)", (email,))[0][0]
        self.assertEqual(n, 1, "rows for %s" % email)

    def test_password_length_counted_in_characters(self):
        before = self.user_count()
        cases = [("a" * 7, "7 ASCII characters"), ("a" * 129, "129 ASCII characters"),
                 ("пароль1", "7 characters, 13 bytes"), ("я" * 129, "129 characters, 258 bytes"),
                 ("", "empty")]
        for pw, what in cases:
            with self.subTest(what=what):
                self.assertInvalid(self.register(password=pw), "password", what=what)
        self.assertEqual(self.user_count(), before, "refused registrations add no user")
        for pw, what in (("a" * 8, "8 ASCII characters"), ("b" * 128, "128 ASCII characters"),
                         ("пароль12", "8 Cyrillic characters (15 bytes)"),
                         ("ж" * 128, "128 Cyrillic characters (256 bytes)")):
            with self.subTest(what=what):
                email = unique_email("pw")
                r = self.register(email, pw)
                self.assertJson(r, 201, what)
                if pw == "пароль12":
                    # Round trip: the same characters log in.
                    self.assertJson(self.login(email, pw), 200, "login with the Cyrillic password")
                    self.assertUnauthorized(self.login(email, "пароль13"), "one character off")

    def test_register_validation_422(self):
        before = self.user_count()
        ok = {"email": unique_email("v"), "password": "long-enough", "name": "Имя"}
        cases = [
            ({}, ["email", "password", "name"]),
            ({"email": ok["email"]}, ["password", "name"]),
            ({"password": ok["password"], "name": "X"}, ["email"]),
            ({"email": ok["email"], "password": ok["password"]}, ["name"]),
            (dict(ok, name=""), ["name"]),
            (dict(ok, name=None), ["name"]),
            (dict(ok, name=5), ["name"]),
            # users.name is CHECKed to 1..200 characters: a longer one is a
            # validation error, not a database error.
            (dict(ok, name="я" * 201), ["name"]),
            (dict(ok, email="no-at-sign.example.test"), ["email"]),
            (dict(ok, email="@example.test"), ["email"]),
            (dict(ok, email="user@"), ["email"]),
            (dict(ok, email="two@@example.test"), ["email"]),
            (dict(ok, email="sp ace@example.test"), ["email"]),
            (dict(ok, email=""), ["email"]),
            (dict(ok, email="a" * 250 + "@example.test"), ["email"]),
            (dict(ok, email=42), ["email"]),
            (dict(ok, email=None), ["email"]),
            (dict(ok, password=12345678), ["password"]),
            (dict(ok, password=None), ["password"]),
            ({"email": "bad", "password": "short", "name": ""}, ["email", "password", "name"]),
        ]
        for body, fields in cases:
            with self.subTest(body={k: (v if not isinstance(v, str) or len(v) < 30 else v[:8] + "…")
                                    for k, v in body.items()}):
                r = request(self.port, "POST", "/api/v1/auth/register", body=body)
                self.assertInvalid(r, *fields)
        self.assertEqual(self.user_count(), before, "no invalid registration added a user")

    def test_malformed_bodies(self):
        before = self.user_count()
        good = json.dumps({"email": unique_email("m"), "password": "long-enough", "name": "X"})
        for path in ("/api/v1/auth/register", "/api/v1/auth/login"):
            with self.subTest(path=path):
                js = {"Content-Type": "application/json"}
                self.assertProblem(request(self.port, "POST", path, body=b"{not json", headers=js), 400, "not JSON")
                self.assertProblem(request(self.port, "POST", path, body=b"", headers=js), 400, "empty body")
                self.assertProblem(request(self.port, "POST", path, body="[" + good + "]", headers=js), 400,
                                   "a JSON array")
                self.assertProblem(request(self.port, "POST", path, body=b'"text"', headers=js), 400, "a JSON string")
                self.assertProblem(request(self.port, "POST", path, body=b"null", headers=js), 400, "JSON null")
                self.assertProblem(request(self.port, "POST", path, body=good, headers={"Content-Type": "text/plain"}),
                                   415, "text/plain")
                self.assertProblem(request(self.port, "POST", path, body=good,
                                           headers={"Content-Type": "application/x-www-form-urlencoded"}),
                                   415, "a form")
                self.assertProblem(request(self.port, "POST", path, body=good), 415, "no Content-Type")
                r = request(self.port, "GET", path)
                self.assertProblem(r, 405, "GET")
                self.assertIn("POST", r.headers.get("Allow", ""), "405 names the allowed method")
        self.assertEqual(self.user_count(), before)


class LoginTests(AuthCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.email = unique_email("Login.User")
        cls.password = "the-password-%d" % os.getpid()
        r = request(cls.server.port, "POST", "/api/v1/auth/register",
                    body={"email": cls.email, "password": cls.password, "name": "Логин"})
        if r.status != 201:
            raise AssertionError("setUpClass: register failed\n%s" % fmt_resp(r))
        cls.user = r.body["user"]

    def test_login_200_shape(self):
        t0 = time.time()
        r = self.login(self.email, self.password)
        t1 = time.time()
        b = self.assertSession(r, 200, JWT_TTL_S, t0, t1, "login")
        self.assertEqual(b["user"], self.user, "login answers the registered user")
        self.assertEqual(self.assertJson(self.me(b["token"]), 200), self.user, "/me with the login token")

    def test_login_email_case_insensitive(self):
        for variant in (self.email.upper(), self.email.lower()):
            with self.subTest(email=variant):
                b = self.assertJson(self.login(variant, self.password), 200, "login as %r" % variant)
                self.assertEqual(b["user"]["id"], self.user["id"])

    def test_wrong_password_and_unknown_email_answer_alike(self):
        wrong = self.login(self.email, self.password + "x")
        unknown = self.login(unique_email("nobody"), self.password)
        self.assertUnauthorized(wrong, "wrong password")
        self.assertUnauthorized(unknown, "unknown email")
        self.assertEqual(wrong.body, unknown.body,
                         "the answers differ, so they reveal whether the email has an account:\n"
                         "wrong password: %s\nunknown email:  %s" % (fmt_resp(wrong), fmt_resp(unknown)))
        self.assertEqual(wrong.headers.get("Content-Type"), unknown.headers.get("Content-Type"))
        self.assertEqual(wrong.headers.get("WWW-Authenticate"), unknown.headers.get("WWW-Authenticate"))
        self.assertNotIn("token", wrong.body)
        # A password that differs only in case is wrong too.
        self.assertUnauthorized(self.login(self.email, self.password.upper()), "password in upper case")

    def test_login_validation_422(self):
        for body, fields in (({}, ["email", "password"]),
                             ({"email": self.email}, ["password"]),
                             ({"password": self.password}, ["email"]),
                             ({"email": 1, "password": self.password}, ["email"]),
                             ({"email": self.email, "password": ["x"]}, ["password"])):
            with self.subTest(body=body):
                self.assertInvalid(request(self.port, "POST", "/api/v1/auth/login", body=body), *fields)


class TokenTests(AuthCase):
    """GET /me: which tokens are accepted. The users are inserted with SQL;
    only a token with marketd's header, an HMAC-SHA256 signature under
    JWT_SECRET and exp in the future is valid."""

    def new_user(self, name="Токен"):
        email = unique_email("tok")
        uid = self.db("INSERT INTO users (email, password_hash, name) VALUES (%s, 'x', %s) RETURNING id",
                      (email, name))[0][0]
        return uid, email

    def test_forged_valid_token_is_accepted(self):
        # The control for every negative case below: the forging is right.
        uid, email = self.new_user("Контроль")
        b = self.assertJson(self.me(token_for(uid)), 200, "a well-formed token")
        self.assertEqual(b, {"id": uid, "email": email, "name": "Контроль", "seller_id": None})
        self.assertEqual(list(b.keys()), USER_FIELDS)
        now = int(time.time())
        self.assertJson(self.me(token_for(uid, iat=now - 100, exp=now + 30)), 200, "expires in 30 s")
        self.assertJson(self.me(headers={"Authorization": "bearer " + token_for(uid)}), 200,
                        "the auth scheme is case-insensitive (RFC 7235)")

    def test_rejected_tokens_401(self):
        uid, _ = self.new_user()
        now = int(time.time())
        good = token_for(uid)
        h, p, s = good.split(".")
        other_uid, _ = self.new_user("Другой")
        tampered = h + "." + b64url(compact({"sub": str(other_uid), "iat": now, "exp": now + 3600})) + "." + s
        cases = [
            ("no Authorization header", None),
            ("empty Bearer", {"Authorization": "Bearer "}),
            ("Bearer only", {"Authorization": "Bearer"}),
            ("garbage", bearer("garbage")),
            ("three garbage parts", bearer("aaa.bbb.ccc")),
            ("Basic scheme", {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}),
            ("the token without a scheme", {"Authorization": good}),
            ("signed with another secret", bearer(token_for(uid, secret="another-secret-0123456789abcdef-xyz"))),
            ("signed with the secret's prefix", bearer(token_for(uid, secret=JWT_SECRET[:32]))),
            ("expired an hour ago", bearer(token_for(uid, iat=now - 7200, exp=now - 3600))),
            ("expired a few seconds ago", bearer(token_for(uid, iat=now - 100, exp=now - 5))),
            ("alg none, no signature",
             bearer(make_token({"sub": str(uid), "iat": now, "exp": now + 3600},
                               header={"alg": "none", "typ": "JWT"}, signature=""))),
            ("alg none, the HS256 signature kept",
             bearer(b64url(compact({"alg": "none", "typ": "JWT"})) + "." + p + "." + s)),
            ("alg HS512 header",
             bearer(make_token({"sub": str(uid), "iat": now, "exp": now + 3600},
                               header={"alg": "HS512", "typ": "JWT"}))),
            ("payload swapped, old signature", bearer(tampered)),
            ("signature truncated", bearer(good[:-2])),
            ("signature of another token", bearer(h + "." + p + "." + token_for(other_uid).split(".")[2])),
            ("no signature part", bearer(h + "." + p)),
            ("trailing junk", bearer(good + ".x")),
            ("sub missing", bearer(make_token({"iat": now, "exp": now + 3600}))),
            ("exp missing", bearer(make_token({"sub": str(uid), "iat": now}))),
            ("sub 0", bearer(make_token({"sub": "0", "iat": now, "exp": now + 3600}))),
            ("sub not a number", bearer(make_token({"sub": "admin", "iat": now, "exp": now + 3600}))),
            ("a user that does not exist", bearer(token_for(987654321))),
            ("payload not JSON", bearer(HS256_HEADER_B64 + "." + b64url("not json") + "." +
                                        b64url(hmac.new(JWT_SECRET.encode(),
                                                        (HS256_HEADER_B64 + "." + b64url("not json")).encode(),
                                                        hashlib.sha256).digest()))),
        ]
        for what, headers in cases:
            with self.subTest(what=what):
                self.assertUnauthorized(self.me(headers=headers), what)
        # Nothing above broke the control.
        self.assertJson(self.me(good), 200, "the untouched token")

    def test_token_for_deleted_user_401(self):
        uid, _ = self.new_user()
        tok = token_for(uid)
        self.assertJson(self.me(tok), 200)
        self.db("DELETE FROM users WHERE id = %s", (uid,))
        self.assertUnauthorized(self.me(tok), "the user was deleted")

    def test_seller_id_after_creating_a_seller_profile(self):
        uid, email = self.new_user("Продавец")
        tok = token_for(uid)
        self.assertIsNone(self.assertJson(self.me(tok))["seller_id"])
        r = request(self.port, "POST", "/api/v1/sellers", headers=bearer(tok),
                    body={"name": "Лавка", "description": "", "city_id": self.dataset.ids["msk"],
                          "district_id": self.dataset.ids["tver"]})
        s = self.assertJson(r, 201, "create the seller profile")
        me = self.assertJson(self.me(tok), 200, "/me after POST /sellers")
        self.assertEqual(me, {"id": uid, "email": email, "name": "Продавец", "seller_id": s["id"]},
                         "/me shows the new seller id at once (B2)")

    def test_login_shows_seller_id(self):
        email = unique_email("seller-login")
        r = self.register(email, "seller-password")
        b = self.assertJson(r, 201)
        r = request(self.port, "POST", "/api/v1/sellers", headers=bearer(b["token"]),
                    body={"name": "Магазин", "city_id": self.dataset.ids["msk"],
                          "district_id": self.dataset.ids["arbat"]})
        s = self.assertJson(r, 201)
        got = self.assertJson(self.login(email, "seller-password"), 200)
        self.assertEqual(got["user"]["seller_id"], s["id"], "login's user carries seller_id")

    def test_token_from_one_instance_accepted_by_another(self):
        # Issued by this class's server (JWT_TTL=2h) ...
        email = unique_email("stateless")
        b = self.assertJson(self.register(email, "stateless-pw"), 201)
        tok, uid = b["token"], b["user"]["id"]
        # ... verified by a second process with the same secret and no
        # shared memory, and refused by one with another secret.
        same = self.new_server(env={"JWT_SECRET": JWT_SECRET}, name="same-secret").start()
        other = self.new_server(env={"JWT_SECRET": "a-different-secret-0123456789abcdef!"},
                                name="other-secret").start()
        got = self.assertJson(self.me(tok, port=same.port), 200, "the token on a second instance")
        self.assertEqual(got["id"], uid)
        self.assertUnauthorized(self.me(tok, port=other.port), "another JWT_SECRET")
        # The second instance issues tokens the first accepts; its JWT_TTL is
        # the default 24 h.
        t0 = time.time()
        r = self.login(email, "stateless-pw", port=same.port)
        t1 = time.time()
        s = self.assertSession(r, 200, 24 * 3600, t0, t1, "login on the second instance (default JWT_TTL)")
        self.assertEqual(self.assertJson(self.me(s["token"]), 200)["id"], uid)
        same.stop(check=True)
        other.stop(check=True)


class JwtSecretConfigTests(ServerTestCase):
    """The server refuses to start without a usable JWT_SECRET (api.md
    "Configuration": a message naming the variable)."""

    start_server = False

    def expect_refusal(self, value, what):
        s = self.new_server(env={"JWT_SECRET": value}, name="jwt-secret")
        s.spawn()
        rc = s.wait_exit(15)
        if rc is None:
            s.kill()
            self.fail("%s: the server still runs after 15 s\n%s" % (what, s.log_banner()))
        self.assertGreater(rc, 0, "%s: exit code %d, expected a non-zero exit (not a signal)\n%s"
                           % (what, rc, s.log_banner()))
        self.assertIn("JWT_SECRET", s.log_text(), "%s: the message does not name JWT_SECRET\n%s"
                      % (what, s.log_banner()))
        self.assertFalse(s.sanitizer_report(), "%s: sanitizer report\n%s" % (what, s.log_banner()))

    def test_missing(self):
        self.expect_refusal(None, "JWT_SECRET unset")

    def test_empty(self):
        self.expect_refusal("", "JWT_SECRET empty")

    def test_31_bytes(self):
        self.expect_refusal("x" * 31, "JWT_SECRET of 31 bytes")

    def test_short_multibyte(self):
        # 10 characters, 20 bytes: still too short in bytes.
        self.expect_refusal("секретный!", "JWT_SECRET of 20 bytes")

    def test_32_bytes_starts(self):
        s = self.new_server(env={"JWT_SECRET": "y" * 32}, name="jwt-32").start()
        self.assertEqual(request(s.port, "GET", "/healthz").status, 200)
        s.stop(check=True)
