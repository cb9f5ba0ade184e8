"""The binary's operator commands (issue 9 items 3 and 4, issue 12 item 2):

- `marketd migrate status` and the checksums recorded in schema_migrations;
  `marketd migrate` refusing a changed file and a newer database;
- no-transaction migrations (`-- marketd: no-transaction`), run from a
  MIGRATIONS_DIR against a private database;
- `marketd migrate new NAME --dir DIR`;
- `marketd user create | set-admin`, then a login and an admin route;
- /readyz on a database one migration ahead, compatible or not;
- order partition retention (ORDER_RETENTION_MONTHS) and the gauge
  marketd_order_partitions_ahead_months.

The commands run as subprocesses of MARKETD_BIN against DATABASE_URL (the
shared test database); whatever a test changes in schema_migrations it puts
back. Nothing waits for a time: background effects are polled for.
"""

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import psycopg2

import harness

from harness import (_SAN_DEFAULTS, CONFIG_VARS, DATABASE_URL, MARKETD_BIN, SANITIZER_MARKERS, TEST_TMPDIR,
                     Server, ServerTestCase, db_connect, load_dataset, request, wait_until)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIGRATIONS = sorted(glob.glob(os.path.join(ROOT, "migrations", "*.sql")))
CLI_TIMEOUT = 120  # s: a bound against hangs, not a speed expectation
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def latest_version():
    return max(int(os.path.basename(p)[:4]) for p in MIGRATIONS)


def cli(args, env=None, stdin=None, database_url=None):
    """Runs MARKETD_BIN args; returns (exit code, stdout, stderr) and fails
    on a sanitizer report."""
    e = {k: v for k, v in os.environ.items()
         if k not in CONFIG_VARS and k not in ("MARKETD_PASSWORD", "MIGRATIONS_DIR", "ORDER_RETENTION_MONTHS")}
    for k, v in _SAN_DEFAULTS.items():
        e.setdefault(k, v)
    e["DATABASE_URL"] = database_url or DATABASE_URL
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    io = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    p = subprocess.run([MARKETD_BIN] + list(args), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=CLI_TIMEOUT, text=True, **io)
    for m in SANITIZER_MARKERS:
        if m in p.stderr:
            raise AssertionError("marketd %s printed a sanitizer report:\n%s" % (" ".join(args), p.stderr))
    return p.returncode, p.stdout, p.stderr


def show(args, rc, out, err):
    return "marketd %s -> exit %d\n--- stdout\n%s--- stderr\n%s" % (" ".join(args), rc, out, err)


def db_exec(sql, args=(), url=None):
    return harness.db_query(sql, args, conn=psycopg2.connect(url) if url else None)


class MigrateStatusTests(unittest.TestCase):
    """migrate status, checksums, and the refusals of migrate."""

    def run_cli(self, *args, **kw):
        rc, out, err = cli(args, **kw)
        return rc, out, err, show(args, rc, out, err)

    def test_status_lists_every_migration_as_applied_with_its_checksum(self):
        rc, out, err, ctx = self.run_cli("migrate", "status")
        self.assertEqual(rc, 0, ctx)
        recorded = dict(db_exec("SELECT name, checksum FROM schema_migrations"))
        for path in MIGRATIONS:
            name = os.path.basename(path)[:-4]
            want = file_sha256(path)
            line = next((l for l in out.splitlines() if l.split()[:1] == [name]), None)
            self.assertIsNotNone(line, "no status line for %s\n%s" % (name, ctx))
            self.assertRegex(line, r"^%s\s+applied\s+(compatible|incompatible)\s+"
                                   r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+%s$" % (name, want), ctx)
            self.assertEqual(recorded.get(name), want, "schema_migrations.checksum of %s" % name)
        self.assertIn("database at version %d" % latest_version(), out, ctx)
        self.assertIn("0 pending", out, ctx)

    def test_compatibility_is_recorded_from_the_marker(self):
        rows = dict(db_exec("SELECT name, compatible FROM schema_migrations"))
        for path in MIGRATIONS:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            header = []
            for line in text.splitlines():
                if line.strip() and not line.lstrip().startswith("--"):
                    break
                header.append(line)
            declared = any(re.match(r"^\s*--\s*marketd:\s*compatible-with-previous\s*$", l) for l in header)
            name = os.path.basename(path)[:-4]
            self.assertEqual(rows.get(name), declared, "schema_migrations.compatible of %s" % name)

    def test_migrate_refuses_a_changed_migration_and_names_the_file(self):
        (original,) = db_exec("SELECT checksum FROM schema_migrations WHERE version = 1")[0]
        db_exec("UPDATE schema_migrations SET checksum = %s WHERE version = 1", ("0" * 64,))
        try:
            rc, out, err, ctx = self.run_cli("migrate")
            self.assertNotEqual(rc, 0, ctx)
            self.assertIn("0001_init.sql has changed since it was applied", err, ctx)
            self.assertIn(original, err, "the message gives the file's checksum\n" + ctx)
            rc, out, err, ctx = self.run_cli("migrate", "status")
            self.assertEqual(rc, 0, ctx)
            self.assertRegex(out, r"(?m)^0001_init\s+CHANGED\s", ctx)
        finally:
            db_exec("UPDATE schema_migrations SET checksum = %s WHERE version = 1", (original,))
        rc, out, err, ctx = self.run_cli("migrate")
        self.assertEqual(rc, 0, "restored, migrate runs again\n" + ctx)

    def test_migrate_refuses_a_newer_database(self):
        v = latest_version() + 1
        db_exec("INSERT INTO schema_migrations (version, name, checksum, compatible) VALUES (%s, %s, %s, true)",
                (v, "%04d_from_the_future" % v, "f" * 64))
        try:
            rc, out, err, ctx = self.run_cli("migrate")
            self.assertNotEqual(rc, 0, ctx)
            self.assertIn("refusing to touch it", err, ctx)
            rc, out, err, ctx = self.run_cli("migrate", "status")
            self.assertEqual(rc, 0, ctx)
            self.assertRegex(out, r"(?m)^%04d_from_the_future\s+unknown\s" % v, ctx)
        finally:
            db_exec("DELETE FROM schema_migrations WHERE version = %s", (v,))

    def test_a_database_migrated_before_checksums_gets_them_recorded(self):
        # What a binary before this change left: no checksum, no compatible.
        db_exec("ALTER TABLE schema_migrations DROP COLUMN checksum, DROP COLUMN compatible")
        rc, out, err, ctx = self.run_cli("migrate")
        self.assertEqual(rc, 0, ctx)
        self.assertIn("recorded the checksums of %d migration(s)" % len(MIGRATIONS), err, ctx)
        rows = dict(db_exec("SELECT name, checksum FROM schema_migrations"))
        for path in MIGRATIONS:
            self.assertEqual(rows.get(os.path.basename(path)[:-4]), file_sha256(path), path)


class NoTransactionMigrationTests(unittest.TestCase):
    """A MIGRATIONS_DIR with the real migrations plus test-only ones, applied
    to a private database (the shared one keeps the binary's schema)."""

    @classmethod
    def setUpClass(cls):
        cls.dbname = "marketd_cli_%d" % os.getpid()
        db_exec('DROP DATABASE IF EXISTS "%s"' % cls.dbname)
        db_exec('CREATE DATABASE "%s"' % cls.dbname)
        from psycopg2.extensions import make_dsn, parse_dsn
        cls.url = make_dsn(**dict(parse_dsn(DATABASE_URL), dbname=cls.dbname))
        cls.dir = tempfile.mkdtemp(prefix="migrations-", dir=TEST_TMPDIR)
        for path in MIGRATIONS:
            shutil.copy(path, cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)
        db_exec('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % cls.dbname)

    def migrate(self, *args):
        rc, out, err = cli(("migrate",) + args, env={"MIGRATIONS_DIR": self.dir}, database_url=self.url)
        return rc, out, err, show(("migrate",) + args, rc, out, err)

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def indexes(self, *names):
        return dict(db_exec("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                            " WHERE c.relname = ANY(%s)", (list(names),), url=self.url))

    def test_a_no_transaction_migration_runs_statement_by_statement(self):
        rc, out, err, ctx = self.migrate()
        self.assertEqual(rc, 0, ctx)
        path = self.write("9001_concurrent_indexes.sql",
                          "-- marketd: no-transaction\n"
                          "-- marketd: compatible-with-previous\n"
                          "-- two statements that refuse a transaction block; a ';' in a string\n"
                          "CREATE INDEX CONCURRENTLY IF NOT EXISTS it_users_name_idx ON users (name);\n"
                          "COMMENT ON TABLE users IS 'accounts; see api.md';\n"
                          "CREATE INDEX CONCURRENTLY IF NOT EXISTS it_users_created_idx ON users (created_at);\n")
        rc, out, err, ctx = self.migrate()
        self.assertEqual(rc, 0, ctx)
        self.assertIn("applied 9001_concurrent_indexes without a transaction", err, ctx)
        self.assertEqual(self.indexes("it_users_name_idx", "it_users_created_idx"),
                         {"it_users_name_idx": True, "it_users_created_idx": True})
        row = db_exec("SELECT checksum, compatible FROM schema_migrations WHERE version = 9001", url=self.url)
        self.assertEqual(row, [(file_sha256(path), True)])

        # The same kind of file without the marker runs in a transaction,
        # which PostgreSQL refuses for CONCURRENTLY: the marker is what works.
        self.write("9002_unmarked.sql",
                   "-- 9002: no marker\nCREATE INDEX CONCURRENTLY it_users_email_idx ON users (email);\n")
        rc, out, err, ctx = self.migrate()
        self.assertNotEqual(rc, 0, ctx)
        self.assertIn("cannot run inside a transaction block", err, ctx)
        self.assertEqual(db_exec("SELECT max(version) FROM schema_migrations", url=self.url), [(9001,)])

        rc, out, err, ctx = self.migrate("status")
        self.assertEqual(rc, 0, ctx)
        self.assertRegex(out, r"(?m)^9001_concurrent_indexes\s+applied\s+compatible\s", ctx)
        self.assertRegex(out, r"(?m)^9002_unmarked\s+pending\s+incompatible\s", ctx)
        os.unlink(os.path.join(self.dir, "9002_unmarked.sql"))

    def test_an_unknown_marker_is_refused_before_anything_runs(self):
        self.write("9500_typo.sql", "-- marketd: no-transation\nCREATE TABLE it_never (a int);\n")
        try:
            rc, out, err, ctx = self.migrate()
            self.assertNotEqual(rc, 0, ctx)
            self.assertIn("9500_typo.sql: line 1: unknown marker \"no-transation\"", err, ctx)
            self.assertEqual(db_exec("SELECT to_regclass('it_never')", url=self.url), [(None,)])
        finally:
            os.unlink(os.path.join(self.dir, "9500_typo.sql"))


class MigrateNewTests(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="migrate-new-", dir=TEST_TMPDIR)
        for name in ("0001_init.sql", "0003_more.sql", "README.md"):
            open(os.path.join(self.dir, name), "w").close()

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_creates_the_next_numbered_file_with_the_template(self):
        args = ("migrate", "new", "Add Orders-Index!", "--dir", self.dir)
        rc, out, err = cli(args, env={"DATABASE_URL": None})
        ctx = show(args, rc, out, err)
        self.assertEqual(rc, 0, ctx)
        path = os.path.join(self.dir, "0004_add_orders_index.sql")
        self.assertEqual(out.strip(), path, ctx)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        self.assertTrue(text.startswith("-- 0004: add_orders_index: "), text)
        self.assertIn("\n-- marketd: incompatible-with-previous\n", text)
        self.assertIn("compatible-with-previous", text)
        self.assertIn("no-transaction", text)

        # The same name again: refused, nothing written.
        rc, out, err = cli(args)
        self.assertNotEqual(rc, 0, show(args, rc, out, err))
        self.assertIn("0004_add_orders_index.sql already exists", err)
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ["0001_init.sql", "0003_more.sql", "0004_add_orders_index.sql", "README.md"])

    def test_refuses_a_name_with_nothing_usable_and_a_missing_dir(self):
        for args, msg in ((("migrate", "new", "!!!", "--dir", self.dir), "makes no file name"),
                          (("migrate", "new", "x", "--dir", os.path.join(self.dir, "nope")), "cannot read"),
                          (("migrate", "new"), "usage")):
            rc, out, err = cli(args)
            self.assertNotEqual(rc, 0, show(args, rc, out, err))
            self.assertIn(msg, err, show(args, rc, out, err))
        self.assertEqual(sorted(os.listdir(self.dir)), ["0001_init.sql", "0003_more.sql", "README.md"])


class UserCliTests(ServerTestCase):
    """marketd user create / set-admin, checked through the API."""

    _n = 0

    def email(self):
        UserCliTests._n += 1
        return "cli-%d-%d@example.test" % (os.getpid(), UserCliTests._n)

    def user(self, *args, stdin=None, env=None):
        rc, out, err = cli(("user",) + args, stdin=stdin, env=env)
        return rc, out, err, show(("user",) + args, rc, out, err)

    def login(self, email, password):
        return request(self.port, "POST", "/api/v1/auth/login", body={"email": email, "password": password})

    def create_city(self, token):
        slug = "cli-city-%d-%d" % (os.getpid(), UserCliTests._n)
        UserCliTests._n += 1
        return request(self.port, "POST", "/api/v1/cities", body={"name": "Тула", "slug": slug},
                       headers={"Authorization": "Bearer " + token})

    def test_create_an_admin_with_the_password_on_stdin(self):
        email = self.email()
        rc, out, err, ctx = self.user("create", "--email", email, "--name", "Первый админ", "--admin",
                                      stdin="s3cret passphrase\n")
        self.assertEqual(rc, 0, ctx)
        self.assertIn("as an administrator", out, ctx)
        r = self.login(email, "s3cret passphrase")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["user"]["name"], "Первый админ", r)
        self.assertEqual(self.create_city(r.body["token"]).status, 201, "the admin route accepts the new admin")
        self.assertEqual(self.login(email, "s3cret passphrase\n").status, 401, "the line end is not the password")

    def test_create_from_the_environment_then_grant_and_revoke(self):
        email = self.email()
        rc, out, err, ctx = self.user("create", "--email", email, env={"MARKETD_PASSWORD": "env password 1"})
        self.assertEqual(rc, 0, ctx)
        r = self.login(email, "env password 1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["user"]["name"], email.split("@")[0], "default name: the local part")
        token = r.body["token"]
        self.assertEqual(self.create_city(token).status, 403, "not an admin yet")
        rc, out, err, ctx = self.user("set-admin", "--email", email.upper())
        self.assertEqual(rc, 0, ctx)
        self.assertEqual(self.create_city(token).status, 201, "admin now, with the same token")
        rc, out, err, ctx = self.user("set-admin", "--email", email, "--revoke")
        self.assertEqual(rc, 0, ctx)
        self.assertEqual(self.create_city(token).status, 403, "revoked")

    def test_errors_and_exit_codes(self):
        email = self.email()
        rc, out, err, ctx = self.user("create", "--email", email, stdin="first password\n")
        self.assertEqual(rc, 0, ctx)
        before = self.cli_accounts()
        cases = [
            (("create", "--email", email.upper()), "another password", 3, "already exists"),
            (("create", "--email", self.email(), "--password", "x"), "", 2, "never taken from the command line"),
            (("create", "--email", self.email(), "--password=x"), "", 2, "never taken from the command line"),
            (("create", "--email", "not-an-email"), "long enough pw", 2, "not an email address"),
            (("create", "--email", self.email()), "short", 2, "8 to 128 bytes"),
            (("create", "--email", self.email()), "", 2, "no password"),
            (("create",), "long enough pw", 2, "--email is required"),
            (("set-admin", "--email", self.email()), None, 4, "no account with the email"),
            (("set-admin", "--email", email, "--admin"), None, 2, "unexpected argument"),
            (("rename",), None, 2, "unknown command"),
        ]
        for args, stdin, want_rc, msg in cases:
            with self.subTest(args=args):
                rc, out, err, ctx = self.user(*args, stdin=stdin)
                self.assertEqual(rc, want_rc, ctx)
                self.assertIn(msg, err, ctx)
        self.assertEqual(self.cli_accounts(), before, "a refused create made an account")
        self.assertEqual(self.login(email, "first password").status, 200, "the first password still works")

    def cli_accounts(self):
        return db_exec("SELECT count(*) FROM users WHERE email LIKE %s", ("cli-%d-%%" % os.getpid(),))[0][0]


class ReadinessAcrossSchemaVersionsTests(ServerTestCase):
    """/readyz with a database one migration ahead of the binary."""

    def readyz(self):
        return request(self.port, "GET", "/readyz")

    def wait_status(self, status):
        last = []

        def check():
            r = self.readyz()
            last[:] = [r]
            return r.status == status

        ok = wait_until(check, timeout=30, interval=0.1)
        self.assertTrue(ok, "GET /readyz never answered %d; last: %r" % (status, last and last[0]))
        return last[0]

    def test_ready_when_every_newer_migration_is_compatible(self):
        n = latest_version()
        r = self.wait_status(200)
        self.assertEqual(r.body["schema"], {"database": n, "binary": n, "compatible": True}, r)
        db_exec("INSERT INTO schema_migrations (version, name, checksum, compatible) VALUES (%s, %s, %s, true)",
                (n + 1, "%04d_expand" % (n + 1), "e" * 64))
        try:
            r = self.wait_status(200)
            self.assertEqual(r.body["schema"], {"database": n + 1, "binary": n, "compatible": True}, r)
            self.assertEqual(r.body["status"] in ("ok", "degraded"), True, r)

            db_exec("INSERT INTO schema_migrations (version, name, checksum, compatible) VALUES (%s, %s, %s, false)",
                    (n + 2, "%04d_contract" % (n + 2), "c" * 64))
            r = self.wait_status(503)
            self.assertEqual(r.body["schema"], {"database": n + 2, "binary": n, "compatible": False}, r)
            self.assertEqual(r.headers.get("Retry-After"), "1", r)

            db_exec("DELETE FROM schema_migrations WHERE version = %s", (n + 2,))
            db_exec("UPDATE schema_migrations SET compatible = false WHERE version = %s", (n + 1,))
            r = self.wait_status(503)
            self.assertEqual(r.body["schema"], {"database": n + 1, "binary": n, "compatible": False}, r)
        finally:
            db_exec("DELETE FROM schema_migrations WHERE version > %s", (n,))
        self.wait_status(200)


OLD_MONTH = "200001"  # far outside any retention the tests use


class PartitionRetentionTests(ServerTestCase):
    """ORDER_RETENTION_MONTHS: the partition job (first run 10 s after the
    start) drops the months entirely older than that; the gauge of the
    months ahead is exported."""

    server_env = {"ORDER_RETENTION_MONTHS": "120"}

    @classmethod
    def setUpClass(cls):
        # Before the server starts, so its first run sees them.
        cls.dataset = load_dataset()
        for parent in ("orders", "order_items"):
            db_exec("CREATE TABLE IF NOT EXISTS %s_%s PARTITION OF %s FOR VALUES FROM ('2000-01-01 00:00Z')"
                    " TO ('2000-02-01 00:00Z')" % (parent, OLD_MONTH, parent))
        db_exec("INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)"
                " VALUES (200001000000001, 1, 1, 'cancelled', 100, 'RUB', '2000-01-15Z', '2000-01-15Z')")
        db_exec("INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)"
                " VALUES (200001000000001, '2000-01-15Z', 1, 'old', 100, 1)")
        cls.server = Server(env=cls.server_env, name=cls.__name__)
        cls.server.start()

    def exists(self, name):
        return db_exec("SELECT to_regclass(%s) IS NOT NULL", (name,))[0][0]

    def test_old_partitions_are_dropped_and_recent_ones_kept(self):
        gone = wait_until(lambda: not self.exists("orders_" + OLD_MONTH) and not self.exists("order_items_" + OLD_MONTH),
                          timeout=120, interval=0.2)
        self.assertTrue(gone, "orders_%s / order_items_%s still exist after 120 s" % (OLD_MONTH, OLD_MONTH))
        log = self.server.log_text()
        for parent in ("orders", "order_items"):
            self.assertIn("partition upkeep: dropped %s_%s (older than ORDER_RETENTION_MONTHS=120)"
                          % (parent, OLD_MONTH), log)
        months = db_exec("SELECT count(*) FROM pg_inherits WHERE inhparent = 'orders'::regclass")[0][0]
        self.assertGreaterEqual(months, 25, "the months inside the retention stay")
        self.assertEqual(db_exec("SELECT count(*) FROM orders WHERE id = 200001000000001")[0][0], 0)

    def test_the_months_ahead_gauge(self):
        def gauge():
            body = request(self.port, "GET", "/metrics").body.decode()
            m = re.search(r"(?m)^marketd_order_partitions_ahead_months (\d+)$", body)
            return m and int(m.group(1))

        value = wait_until(gauge, timeout=120, interval=0.2)
        self.assertEqual(value, 3, "marketd_order_partitions_ahead_months after the first upkeep run")
        body = request(self.port, "GET", "/metrics").body.decode()
        self.assertIn("# TYPE marketd_order_partitions_ahead_months gauge", body)


if __name__ == "__main__":
    unittest.main()
