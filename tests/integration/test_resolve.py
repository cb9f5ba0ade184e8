"""Host names are resolved off the event loops (B5, S4, S7; issue 12 "Bad
input": a dependency that is down at start never hangs the server;
src/core/resolve.h).

hiredis and libpq resolve a host name with a blocking getaddrinfo inside
their connect functions. Docker's DNS forwards a name whose containers are
all stopped to an upstream server that may never answer, so a Redis Cluster
outage stalled every worker's loop for the resolver's timeout on each
reconnect. These tests make that DNS server real: marketd runs in a mount
namespace of its own (unshare -m) whose /etc/resolv.conf names a UDP
listener on 127.0.0.0/8 that reads queries and never answers, with a
30-second resolver timeout. A blocked loop then cannot answer for 30 s; the
tests only ask that requests are answered (within a 10 s client timeout,
three times the longest a healthy request may be expected to take on a
loaded machine, far below 30 s), never how fast.

- NameTests: names that do resolve (localhost, from /etc/hosts) work for the
  database and Redis: the cache reaches HIT.
- UnansweredDnsTests: Redis and a read replica named by host names whose
  lookups never end: the server starts, /readyz reports Redis and the
  replica down, and every read is answered (BYPASS, from the primary).
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import unittest
import urllib.parse

import harness
from harness import ServerTestCase, wait_until

POLL_TIMEOUT = 60.0
CLIENT_TIMEOUT = 10.0  # s, per request; the stalled resolver holds for 30 s


def with_host(url, host):
    """DATABASE_URL with its host replaced (port, user, db kept)."""
    u = urllib.parse.urlsplit(url)
    netloc = u.netloc.rsplit("@", 1)
    hostport = netloc[-1]
    port = hostport.rsplit(":", 1)[1] if ":" in hostport else "5432"
    new = "%s:%s" % (host, port)
    if len(netloc) == 2:
        new = netloc[0] + "@" + new
    return urllib.parse.urlunsplit((u.scheme, new, u.path, u.query, u.fragment))


class NameTests(ServerTestCase):
    start_server = False
    start_redis = True

    def test_database_and_redis_by_host_name(self):
        env = dict(self.server_env,
                   DATABASE_URL=with_host(harness.DATABASE_URL, "localhost"),
                   REDIS_URL="redis://localhost:%d" % self.redis.port)
        s = self.new_server(env=env).start()

        def hit():
            r = harness.request(s.port, "GET", "/api/v1/cities")
            self.assertEqual(r.status, 200, r.body)
            return r.headers.get("X-Cache") == "HIT"
        self.assertTrue(wait_until(hit, POLL_TIMEOUT), "no cache HIT through redis://localhost")
        s.stop(check=True)


class BlackholeDns:
    """A DNS 'server' on 127.0.0.0/8 that reads queries and never answers."""

    def __init__(self):
        self.sock = None
        for last in range(153, 200):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind(("127.0.0.%d" % last, 53))
            except OSError:
                s.close()
                continue
            self.sock, self.addr = s, "127.0.0.%d" % last
            break
        if self.sock is None:
            raise OSError("no free 127.0.0.x:53 for the unanswering DNS server")
        self.queries = 0
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                self.sock.recvfrom(4096)
                self.queries += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


def namespaces_usable():
    """unshare -m and a bind mount need CAP_SYS_ADMIN (root outside a
    container); where they are refused the test cannot build its DNS."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                           "mount --bind /etc/hostname /etc/hostname"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


class UnansweredDnsTests(ServerTestCase):
    start_server = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not namespaces_usable():
            raise unittest.SkipTest("needs root and mount namespaces (unshare -m)")
        cls.dns = BlackholeDns()
        cls.tmp = tempfile.mkdtemp(prefix="resolv-", dir=harness.TEST_TMPDIR)
        cls.resolv = os.path.join(cls.tmp, "resolv.conf")
        with open(cls.resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:30 attempts:1\n" % cls.dns.addr)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if getattr(cls, "dns", None) is not None:
                cls.dns.stop()

    def test_unanswered_lookups_never_stall_the_loop(self):
        env = dict(self.server_env,
                   REDIS_URL="redis://cache.marketd-unanswered.test:6379",
                   DB_READ_REPLICA_URL="postgresql://postgres@replica.marketd-unanswered.test:5432/marketd")
        s = self.new_server(env=env)
        s.wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                     'mount --bind "$0" /etc/resolv.conf && exec "$@"', self.resolv]
        s.start()
        # The lookups were asked for and are still unanswered.
        self.assertTrue(wait_until(lambda: self.dns.queries > 0, POLL_TIMEOUT), "no DNS query reached the server")
        for _ in range(20):
            r = harness.request(s.port, "GET", "/api/v1/cities", timeout=CLIENT_TIMEOUT)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers.get("X-Cache"), "BYPASS")
            r = harness.request(s.port, "GET", "/api/v1/products", params={"limit": "2"}, timeout=CLIENT_TIMEOUT)
            self.assertEqual(r.status, 200)
        r = harness.request(s.port, "GET", "/readyz", timeout=CLIENT_TIMEOUT)
        self.assertIsInstance(r.body, dict, r.body)
        self.assertEqual(r.body.get("cache"), "down", r.body)
        self.assertEqual(r.body.get("status"), "degraded", r.body)
        reps = r.body.get("replicas") or []
        self.assertEqual(len(reps), 1, r.body)
        self.assertFalse(reps[0].get("up"), r.body)
        s.stop(check=True)
