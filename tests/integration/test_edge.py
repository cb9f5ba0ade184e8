"""The edge (issue 10, defect 4, B8, S2): nginx in front of marketd, rendered
from deploy/local/nginx.conf.in by scripts/render-nginx.sh exactly as
`make run` renders it, answers its own 413, 429 and 502 as RFC 9457
problem+json, limits request rates per client address, and lets a busy
legitimate client through.

`Edge` is the fixture: one nginx as a plain foreground process (-p prefix,
daemon off) on a free port, in its own directory under TEST_TMPDIR, in
front of a harness Server. The rate-limit tests never measure time: the
small limit is one request per minute with a burst of one (nginx's least),
so of 20 sequential requests at most three can pass however slow the
machine is; the default
limit has a burst larger than the requests sent.
"""

import http.client
import os
import signal
import socket
import subprocess
import time

import harness
from harness import ServerTestCase, fmt_resp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RENDER = os.path.join(ROOT, "scripts", "render-nginx.sh")
NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


class Edge:
    """One nginx of deploy/local/nginx.conf.in in front of 127.0.0.1:upstream.
    limits: EDGE_* variables for scripts/render-nginx.sh (defaults else)."""

    _seq = 0

    def __init__(self, upstream_port, limits=None, name="edge"):
        Edge._seq += 1
        self.port = harness.free_port()
        self.prefix = os.path.join(harness.TEST_TMPDIR, "nginx-%s-%d" % (name, Edge._seq))
        self.media = os.path.join(self.prefix, "media")
        os.makedirs(self.media, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        env.update(limits or {})
        out = subprocess.run(["bash", RENDER, self.prefix, "127.0.0.1:%d" % self.port,
                              "127.0.0.1:%d" % upstream_port, self.media, os.path.join(self.prefix, "docs")],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=30)
        if out.returncode != 0:
            raise AssertionError("render-nginx.sh failed (exit %d)\n%s"
                                 % (out.returncode, out.stdout.decode("utf-8", "replace")))
        self.conf = os.path.join(self.prefix, "nginx.conf")
        self.error_log = os.path.join(self.prefix, "logs", "error.log")
        self.proc = None

    def start(self):
        if not os.access(NGINX_BIN, os.X_OK):
            raise AssertionError("%s not found (apt-get install nginx-light)" % NGINX_BIN)
        self._out = open(os.path.join(self.prefix, "logs", "stderr.log"), "ab")
        self.proc = subprocess.Popen([NGINX_BIN, "-p", self.prefix, "-c", self.conf, "-e", self.error_log,
                                      "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                                     preexec_fn=harness._die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with code %d at start\n%s" % (self.proc.returncode, self.log()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("nginx did not listen on %d within %.0f s\n%s"
                             % (self.port, START_TIMEOUT, self.log()))

    def stop(self):
        """SIGQUIT (graceful), SIGKILL after a bounded wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = getattr(self, "_out", None)
        if out is not None and not out.closed:
            out.close()

    def log(self):
        try:
            with open(self.error_log, "rb") as f:
                return harness.tail(f.read().decode("utf-8", "replace"), 4000)
        except OSError:
            return "(no error log)"

    def request(self, method, path, **kw):
        return harness.request(self.port, method, path, **kw)

    def declared_body(self, method, path, length, headers):
        """Sends the request line and headers of a `length`-byte body, then
        the body until nginx stops reading; returns the response. nginx
        answers 413 from Content-Length alone and may close before the body
        is in (a reset is not a failure of the edge)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=harness.HTTP_TIMEOUT)
        try:
            head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\nConnection: close\r\n" % (
                method, path, length)
            head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
            s.sendall(head.encode())
            chunk = b"\0" * 65536
            try:
                sent = 0
                s.settimeout(0.5)
                while sent < length:
                    sent += s.send(chunk[:min(len(chunk), length - sent)])
            except OSError:
                pass  # nginx answered and stopped reading
            s.settimeout(harness.HTTP_TIMEOUT)
            resp = http.client.HTTPResponse(s, method=method)
            resp.begin()
            raw = resp.read()
            return harness.Response(resp.status, resp.headers, harness.decode_body(resp.headers, raw))
        finally:
            s.close()


class EdgeCase(ServerTestCase):
    """nginx with the default limits in front of the class's server."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.edge = Edge(cls.server.port, name="defaults")
        try:
            cls.edge.start()
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        edge = getattr(cls, "edge", None)
        if edge is not None:
            edge.stop()
        super().tearDownClass()

    def assertEdgeProblem(self, r, status, what):
        b = self.assertProblem(r, status, what)
        self.assertEqual(b.get("type"), "about:blank", "%s\n%s" % (what, fmt_resp(r)))
        return b


class EdgeErrorTests(EdgeCase):

    def test_image_above_5_mib_is_413_problem(self):
        r = self.edge.declared_body("POST", "/api/v1/products/1/images", 6 * 1024 * 1024,
                                    {"Content-Type": "image/jpeg", "Authorization": "Bearer x"})
        b = self.assertEdgeProblem(r, 413, "6 MiB image through nginx")
        self.assertEqual(b["title"], "Payload Too Large")

    def test_body_between_backend_and_edge_limits_is_413_problem(self):
        """5 MiB + 64 KiB ... 8 MiB once reached the backend's transport
        limit behind nginx's: an HTML 502 (defect 4)."""
        for size in (5 * 1024 * 1024 + 1, 5 * 1024 * 1024 + 64 * 1024 + 1, 8 * 1024 * 1024):
            with self.subTest(size=size):
                r = self.edge.declared_body("POST", "/api/v1/products/1/images", size,
                                            {"Content-Type": "image/png"})
                self.assertEdgeProblem(r, 413, "%d bytes through nginx" % size)

    def test_json_above_1_mib_is_the_backends_413(self):
        body = b'{"email":"' + b"a" * (2 * 1024 * 1024) + b'"}'
        r = self.edge.request("POST", "/api/v1/auth/login", body=body,
                              headers={"Content-Type": "application/json"})
        self.assertEdgeProblem(r, 413, "2 MiB of JSON through nginx")

    def test_backend_down_is_502_problem(self):
        backend = self.new_server(name="edge-down").start()
        edge = Edge(backend.port, name="down")
        try:
            edge.start()
            self.assertEqual(edge.request("GET", "/healthz").status, 200, edge.log())
            backend.stop(check=True)
            r = edge.request("GET", "/api/v1/cities")
            b = self.assertEdgeProblem(r, 502, "backend stopped")
            self.assertEqual(b["title"], "Bad Gateway")
        finally:
            edge.stop()

    def test_busy_legitimate_client_is_not_limited(self):
        """api.md: tens of logins per second from one address pass. 60
        requests as fast as they go stay inside the default burst (100),
        whatever the machine's speed."""
        statuses = []
        conn = http.client.HTTPConnection("127.0.0.1", self.edge.port, timeout=harness.HTTP_TIMEOUT)
        try:
            for i in range(60):
                r = self.edge.request("POST", "/api/v1/auth/login", conn=conn,
                                      body={"email": "nobody%d@example.com" % i, "password": "wrong-password"})
                statuses.append(r.status)
        finally:
            conn.close()
        self.assertNotIn(429, statuses, "default edge limits refused a busy legitimate client")
        for i in range(60):
            r = self.edge.request("GET", "/api/v1/cities")
            self.assertEqual(r.status, 200, fmt_resp(r))


class EdgeRateLimitTests(EdgeCase):
    """A tiny auth limit, set through the template's variables."""

    LIMITS = {"EDGE_AUTH_RATE": "1r/m", "EDGE_AUTH_BURST": "1"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.small = Edge(cls.server.port, limits=cls.LIMITS, name="small")
        try:
            cls.small.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        small = getattr(cls, "small", None)
        if small is not None:
            small.stop()
        super().tearDownClass()

    def test_auth_flood_gets_429_problem_with_retry_after(self):
        limited = []
        for i in range(20):
            r = self.small.request("POST", "/api/v1/auth/login",
                                   body={"email": "flood%d@example.com" % i, "password": "wrong-password"})
            self.assertIn(r.status, (401, 429), fmt_resp(r))
            if r.status == 429:
                limited.append(r)
        # 1 r/min, burst 1: at most three of the twenty can pass.
        self.assertGreaterEqual(len(limited), 17, "the auth flood was not limited\n%s" % self.small.log())
        for r in limited:
            b = self.assertEdgeProblem(r, 429, "flood")
            self.assertEqual(b["title"], "Too Many Requests")
            ra = r.headers.get("Retry-After")
            self.assertTrue(ra and ra.isdigit() and int(ra) >= 1, "Retry-After %r\n%s" % (ra, fmt_resp(r)))

    def test_the_rest_of_the_api_has_its_own_zone(self):
        for _ in range(30):
            r = self.small.request("GET", "/api/v1/cities")
            self.assertEqual(r.status, 200, fmt_resp(r))
