"""Process lifecycle: configuration errors, SIGTERM drain, pool exhaustion,
database outages (requirements B5, B7; api.md "Configuration").

Every test here starts its own server(s)."""

import signal
import socket
import threading
import time

from harness import (ServerTestCase, TcpProxy, closed_port, database_url_via, db_connect, fmt_resp,
                     request, status_of, wait_until)


def lock_products():
    """An open transaction holding ACCESS EXCLUSIVE on products: every
    query of the server that reads products waits until release()."""
    conn = db_connect(autocommit=False)
    cur = conn.cursor()
    cur.execute("SET lock_timeout = 0")
    cur.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
    return conn


def lock_waiters():
    conn = db_connect()
    try:
        cur = conn.cursor()
        cur.execute("""SELECT count(*) FROM pg_stat_activity
                        WHERE datname = current_database() AND wait_event_type = 'Lock'
                          AND pid <> pg_backend_pid()""")
        return cur.fetchone()[0]
    finally:
        conn.close()


class Call(threading.Thread):
    """One HTTP request in a thread; .result is a Response or an exception."""

    def __init__(self, port, path, timeout=60.0):
        super().__init__(daemon=True)
        self.port, self.path, self.timeout = port, path, timeout
        self.result = None
        self.done_at = None

    def run(self):
        try:
            self.result = request(self.port, "GET", self.path, timeout=self.timeout)
        except Exception as e:  # reported by the test
            self.result = e
        self.done_at = time.monotonic()


def connection_refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    s.close()
    return False


class ConfigTests(ServerTestCase):
    """Bad configuration stops start-up with a non-zero exit and a message
    naming the variable (api-config)."""

    start_server = False

    def expect_startup_failure(self, env, variable):
        s = self.new_server(env=env, name="badconfig-" + variable)
        s.spawn()
        rc = s.wait_exit(15)
        if rc is None:
            health = None
            try:
                health = request(s.port, "GET", "/healthz", timeout=2).status
            except OSError as e:
                health = repr(e)
            s.kill()
            self.fail("with %s the server still runs after 15 s (GET /healthz: %s)\n%s"
                      % (env, health, s.log_banner()))
        self.assertNotEqual(rc, 0, "with %s the server exited 0\n%s" % (env, s.log_banner()))
        self.assertGreater(rc, 0, "with %s the server died of signal %d\n%s" % (env, -rc, s.log_banner()))
        text = s.log_text()
        self.assertIn(variable, text, "the start-up error does not name %s\n%s" % (variable, s.log_banner()))
        self.assertFalse(s.sanitizer_report(), "sanitizer report on the config-error path\n%s" % s.log_banner())

    def test_db_pool_size_not_a_number(self):
        self.expect_startup_failure({"DB_POOL_SIZE": "abc"}, "DB_POOL_SIZE")

    def test_db_pool_size_zero(self):
        self.expect_startup_failure({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE")

    def test_db_max_overflow_negative(self):
        self.expect_startup_failure({"DB_MAX_OVERFLOW": "-1"}, "DB_MAX_OVERFLOW")

    def test_db_pool_timeout_not_a_number(self):
        self.expect_startup_failure({"DB_POOL_TIMEOUT_MS": "soon"}, "DB_POOL_TIMEOUT_MS")

    def test_workers_negative(self):
        self.expect_startup_failure({"WORKERS": "-1"}, "WORKERS")

    def test_workers_trailing_garbage(self):
        self.expect_startup_failure({"WORKERS": "2x"}, "WORKERS")

    def test_listen_nonsense(self):
        self.expect_startup_failure({"LISTEN": "nonsense"}, "LISTEN")

    def test_listen_port_out_of_range(self):
        self.expect_startup_failure({"LISTEN": "127.0.0.1:70000"}, "LISTEN")

    def test_database_url_missing(self):
        # Without the PG* variables too, so libpq defaults cannot stand in.
        self.expect_startup_failure({"DATABASE_URL": None, "PGHOST": None, "PGPORT": None,
                                     "PGUSER": None, "PGDATABASE": None}, "DATABASE_URL")

    def test_http_header_timeout_not_a_number(self):
        self.expect_startup_failure({"HTTP_HEADER_TIMEOUT_MS": "x"}, "HTTP_HEADER_TIMEOUT_MS")

    def test_listen_port_in_use(self):
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen(1)
            port = blocker.getsockname()[1]
            s = self.new_server(env={"LISTEN": "127.0.0.1:%d" % port}, name="port-in-use")
            s.spawn()
            rc = s.wait_exit(15)
            if rc is None:
                s.kill()
                self.fail("LISTEN on a port in use: still running after 15 s\n%s" % s.log_banner())
            self.assertGreater(rc, 0, "LISTEN on a port in use: exit code %d\n%s" % (rc, s.log_banner()))
        finally:
            blocker.close()


class ShutdownTests(ServerTestCase):
    start_server = False

    # B7: SIGTERM stops accepting, finishes the request in flight, then exits.
    def test_sigterm_drains_in_flight_request(self):
        # A statement timeout (marketd's DB_STATEMENT_TIMEOUT_MS) must not end
        # the request before the lock is released.
        s = self.new_server(env={"DB_STATEMENT_TIMEOUT_MS": 120000}, name="drain").start()
        pid = self.dataset.ids["p_s23"]
        lock = lock_products()
        call = None
        try:
            call = Call(s.port, "/api/v1/products/%d" % pid)
            call.start()
            blocked = wait_until(lambda: lock_waiters() > 0 or not call.is_alive(), 10)
            self.assertTrue(blocked, "the request never waited on the table lock")
            self.assertTrue(call.is_alive(), "the request finished while products was locked: %s"
                            % (fmt_resp(call.result) if hasattr(call.result, "status") else call.result))
            s.signal(signal.SIGTERM)
            refused = wait_until(lambda: connection_refused(s.port), 10)
            self.assertTrue(refused, "new connections still accepted 10 s after SIGTERM")
            self.assertTrue(s.alive(), "the process exited with a request in flight\n%s" % s.log_banner())
            self.assertTrue(call.is_alive(), "the in-flight request ended before the lock was released: %r"
                            % (call.result,))
        finally:
            lock.rollback()
            lock.close()
        call.join(30)
        self.assertFalse(call.is_alive(), "the in-flight request did not finish after the lock was released")
        r = call.result
        self.assertTrue(hasattr(r, "status"), "in-flight request failed: %r\n%s" % (r, s.log_banner()))
        self.assertStatus(r, 200, "in-flight request during drain")
        self.assertEqual(r.body.get("id"), pid)
        rc = s.wait_exit(15)
        self.assertIsNotNone(rc, "no exit within 15 s of the drain\n%s" % s.log_banner())
        s.check_exit(rc)

    def test_idle_keepalive_connection_does_not_block_shutdown(self):
        import http.client
        s = self.new_server(name="idle-keepalive").start()
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        try:
            r = request(s.port, "GET", "/api/v1/cities", conn=conn)
            self.assertStatus(r, 200)
            self.assertIsNotNone(conn.sock, "connection not kept alive")
            s.signal(signal.SIGTERM)
            rc = s.wait_exit(15)
            self.assertIsNotNone(rc, "an idle keep-alive connection kept the server from exiting\n%s"
                                 % s.log_banner())
            s.check_exit(rc)
        finally:
            conn.close()

    def test_sigint_also_exits_cleanly(self):
        s = self.new_server(name="sigint").start()
        self.assertStatus(request(s.port, "GET", "/api/v1/products", params={"limit": 2}), 200)
        s.signal(signal.SIGINT)
        rc = s.wait_exit(15)
        self.assertIsNotNone(rc, "no exit within 15 s of SIGINT\n%s" % s.log_banner())
        s.check_exit(rc)


class OverloadTests(ServerTestCase):
    start_server = False

    def test_pool_exhaustion_503_with_retry_after(self):
        s = self.new_server(env={"DB_POOL_SIZE": 1, "DB_MAX_OVERFLOW": 0, "DB_POOL_TIMEOUT_MS": 300},
                            name="pool-exhaustion").start()
        # Distinct resources, so no request can piggy-back on another's
        # query (stampede protection) instead of asking the pool; more of
        # them than one connection can carry even if queries are pipelined.
        products = [p["id"] for p in self.dataset.products][:40]
        lock = lock_products()
        calls = []
        try:
            calls = [Call(s.port, "/api/v1/products/%d" % pid, timeout=60) for pid in products]
            for c in calls:
                c.start()
            answered = wait_until(lambda: any(not c.is_alive() for c in calls), 10)
            self.assertTrue(answered, "none of %d requests answered within 10 s with the pool exhausted "
                            "(a hang: B5 wants 503 after a bounded wait)" % len(calls))
            self.assertEqual(status_of(s.port, "/healthz", timeout=5), 200,
                             "/healthz while the pool is exhausted")
            # What was answered while the lock is held can only be a 503.
            for c in [c for c in calls if not c.is_alive()]:
                self.check_503(c)
        finally:
            lock.rollback()
            lock.close()
        for c in calls:
            c.join(30)
        hung = [c.path for c in calls if c.is_alive()]
        self.assertFalse(hung, "still no answer 30 s after the lock was released: %s" % hung)
        statuses = {}
        for c in calls:
            self.assertTrue(hasattr(c.result, "status"), "%s failed: %r" % (c.path, c.result))
            statuses[c.result.status] = statuses.get(c.result.status, 0) + 1
        self.assertGreater(statuses.get(503, 0), 0, "no 503 at all with the pool exhausted: %s" % statuses)
        for c in calls:
            if c.result.status != 200:
                self.check_503(c)
        ok = wait_until(lambda: status_of(s.port, "/api/v1/products/%d" % products[0]) == 200, 10)
        self.assertTrue(ok, "no 200 within 10 s after the pool was released: %s"
                        % status_of(s.port, "/api/v1/products/%d" % products[0]))
        for pid in products:
            self.assertEqual(status_of(s.port, "/api/v1/products/%d" % pid), 200,
                             "product %d after the pool was released" % pid)
        self.assertTrue(s.alive(), "the server died\n%s" % s.log_banner())
        s.stop()

    def check_503(self, call):
        r = call.result
        self.assertTrue(hasattr(r, "status"), "%s failed: %r" % (call.path, r))
        self.assertProblem(r, 503, "%s with the pool exhausted" % call.path)
        ra = r.headers.get("Retry-After")
        self.assertTrue(ra and ra.strip().isdigit(), "%s: 503 without a numeric Retry-After: %r"
                        % (call.path, ra))


class DatabaseOutageTests(ServerTestCase):
    start_server = False

    API_PATHS = ("/api/v1/cities", "/api/v1/products", "/api/v1/products/1", "/api/v1/sellers/popular",
                 "/api/v1/sellers/1")

    def assert_unavailable(self, s, what):
        r = request(s.port, "GET", "/healthz")
        self.assertStatus(r, 200, "/healthz %s" % what)
        r = request(s.port, "GET", "/readyz")
        self.assertStatus(r, 503, "/readyz %s" % what)
        self.assertIsInstance(r.body, dict, fmt_resp(r))
        self.assertEqual(r.body.get("primary"), "down", fmt_resp(r))
        self.assertEqual(r.body.get("status"), "down", fmt_resp(r))
        for path in self.API_PATHS:
            r = request(s.port, "GET", path)
            self.assertProblem(r, 503, "GET %s %s" % (path, what))
            ra = r.headers.get("Retry-After")
            self.assertTrue(ra and ra.strip().isdigit(), "GET %s: 503 without a numeric Retry-After: %r"
                            % (path, ra))
        self.assertTrue(s.alive(), "the server died %s\n%s" % (what, s.log_banner()))

    def test_database_down_at_start(self):
        url = "postgresql://postgres@127.0.0.1:%d/marketd" % closed_port()
        s = self.new_server(env={"DATABASE_URL": url}, name="db-down").start()
        self.assert_unavailable(s, "with the database down")
        # Asked again: still answers (nothing got stuck after the first failures).
        self.assert_unavailable(s, "with the database still down")
        s.stop()

    def test_database_comes_back(self):
        proxy = TcpProxy()
        try:
            s = self.new_server(env={"DATABASE_URL": database_url_via(proxy.port)}, name="db-back").start()
            self.assert_unavailable(s, "before the database is reachable")
            proxy.up()
            ready = wait_until(lambda: status_of(s.port, "/readyz") == 200, 20, interval=0.2)
            self.assertTrue(ready, "/readyz not 200 within 20 s of the database coming up: %s\n%s"
                            % (status_of(s.port, "/readyz"), s.log_banner()))
            for path in self.API_PATHS:
                self.assertStatus(request(s.port, "GET", path), 200, "GET %s after the database came up" % path)
            s.stop()
        finally:
            proxy.down()

    def test_database_lost_and_restored(self):
        proxy = TcpProxy().up()
        try:
            s = self.new_server(env={"DATABASE_URL": database_url_via(proxy.port)}, name="db-lost").start()
            for path in self.API_PATHS:
                self.assertStatus(request(s.port, "GET", path), 200, "GET %s with the database up" % path)
            proxy.down()  # cuts every pooled connection
            # Distinct queries so that no cache can answer them.
            for n in (5, 6, 7):
                path = "/api/v1/products?limit=%d" % n
                r = request(s.port, "GET", path)
                self.assertProblem(r, 503, "GET %s with the database gone" % path)
                self.assertTrue(r.headers.get("Retry-After"), fmt_resp(r))
            r = request(s.port, "GET", "/readyz")
            self.assertStatus(r, 503, "/readyz with the database gone")
            proxy.up()
            ok = wait_until(lambda: status_of(s.port, "/api/v1/products?limit=11") == 200, 20, interval=0.2)
            self.assertTrue(ok, "no 200 within 20 s of the database coming back: %s (alive: %s)\n%s"
                            % (status_of(s.port, "/api/v1/products?limit=11"), s.alive(), s.log_banner()))
            # /readyz may reach the other worker, whose pool can have failed a
            # reconnect within the last 100 ms (it then refuses at once
            # instead of hammering the database): it must turn ready by itself.
            ready = wait_until(lambda: status_of(s.port, "/readyz") == 200, 10, interval=0.1)
            self.assertTrue(ready, "/readyz not 200 within 10 s of the database coming back: %s"
                            % fmt_resp(request(s.port, "GET", "/readyz")))
            s.stop()
        finally:
            proxy.down()
