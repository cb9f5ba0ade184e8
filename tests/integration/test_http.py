"""HTTP behaviour shared by every endpoint, and the operations endpoints
(api.md "Conventions" and "Operations")."""

import http.client
import json
import os
import re
import threading
import time

import yaml

from harness import (Dataset, ServerTestCase, fmt_resp, raw_connect, raw_headers, raw_read, raw_status,
                     request, wait_until)

# Sample names; a histogram shows up as <name>_bucket/_sum/_count.
REQUIRED_METRICS = (
    "marketd_http_requests_total", "marketd_http_request_duration_seconds_bucket", "marketd_db_pool_connections",
    "marketd_db_pool_max", "marketd_db_pool_wait_seconds_bucket", "process_resident_memory_bytes",
    "process_open_fds", "process_cpu_seconds_total",
)
HISTOGRAMS = ("marketd_http_request_duration_seconds", "marketd_db_pool_wait_seconds")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,)?')
_VALUE = re.compile(r"\s+([-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))(?:\s+-?\d+)?\s*$")


def parse_prometheus(text):
    """[(name, {label: value}, float)]; raises AssertionError on a line that
    is not valid text exposition format."""
    samples = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) != 4 or parts[3] not in ("counter", "gauge", "histogram", "summary", "untyped"):
                    raise AssertionError("line %d: bad TYPE line %r" % (n, line))
            continue
        m = _NAME.match(line)
        if not m:
            raise AssertionError("line %d: no metric name: %r" % (n, line))
        name, pos, labels = m.group(0), m.end(), {}
        if pos < len(line) and line[pos] == "{":
            pos += 1
            while True:
                if line[pos:pos + 1] == "}":
                    pos += 1
                    break
                lm = _LABEL.match(line, pos)
                if not lm:
                    raise AssertionError("line %d: bad label set: %r" % (n, line))
                labels[lm.group(1)] = re.sub(r"\\(.)", lambda x: {"n": "\n"}.get(x.group(1), x.group(1)),
                                             lm.group(2))
                pos = lm.end()
                if lm.group(3) is None and line[pos:pos + 1] != "}":
                    raise AssertionError("line %d: bad label set: %r" % (n, line))
        vm = _VALUE.match(line, pos)
        if not vm:
            raise AssertionError("line %d: bad sample value: %r" % (n, line))
        samples.append((name, labels, float(vm.group(1).replace("Inf", "inf"))))
    return samples


class HttpTests(ServerTestCase):

    # -- routing and errors --------------------------------------------------

    def test_unknown_route_404(self):
        for path in ("/api/v1/nope", "/nope", "/", "/api/v2/cities", "/api/v1/cities/1/districts/extra",
                     "/api/v1/cities/", "/api/v1//cities"):
            with self.subTest(path=path):
                self.assertProblem(self.get(path), 404, "GET %s" % path)

    def test_wrong_method_405_with_allow(self):
        for method, path in (("DELETE", "/api/v1/cities"), ("PUT", "/api/v1/products/1"),
                             ("DELETE", "/api/v1/categories"), ("POST", "/api/v1/sellers/popular")):
            with self.subTest(method=method, path=path):
                r = self.req(method, path)
                self.assertProblem(r, 405, "%s %s" % (method, path))
                allow = r.headers.get("Allow")
                self.assertTrue(allow, "405 without Allow header\n%s" % fmt_resp(r))
                methods = {m.strip().upper() for m in allow.split(",")}
                self.assertIn("GET", methods, "Allow: %r" % allow)
                self.assertNotIn(method, methods, "Allow: %r lists the refused method" % allow)

    def test_validation_error_is_problem_json(self):
        r = self.get("/api/v1/products", {"limit": "x"})
        b = self.assertProblem(r, 422, "limit=x")
        self.assertIn(b["title"], ("Unprocessable Entity", "Unprocessable Content"), fmt_resp(r))

    def test_not_found_problem_detail(self):
        r = self.get("/api/v1/products/987654")
        b = self.assertProblem(r, 404, "unknown product")
        self.assertEqual(b["title"], "Not Found")
        self.assertEqual(b["type"], "about:blank")
        self.assertTrue(b["detail"], "detail is empty")

    def test_bad_percent_encoding(self):
        # A query string that cannot be decoded (a broken escape) is a
        # malformed request, like a body that is not JSON: 400. A value that
        # decodes to bytes that are not UTF-8 is a well-formed request with
        # an invalid value: 422 naming the parameter.
        for path in ("/api/v1/products?q=%zz", "/api/v1/products?limit=%"):
            with self.subTest(path=path):
                self.assertProblem(self.get(path), 400, "GET %s" % path)
        for path in ("/api/v1/products?q=%ff%fe", "/api/v1/products?q=%C3"):
            with self.subTest(path=path):
                b = self.assertProblem(self.get(path), 422, "GET %s" % path)
                self.assertEqual([e.get("field") for e in b.get("errors", [])], ["q"], b)
        self.assertStatus(self.get("/healthz"), 200)

    # -- request ids ------------------------------------------------------------

    def test_request_id_on_every_response(self):
        seen = set()
        for method, path, params in (("GET", "/api/v1/cities", None), ("GET", "/api/v1/nope", None),
                                     ("DELETE", "/api/v1/cities", None),
                                     ("GET", "/api/v1/products", {"limit": "0"}),
                                     ("GET", "/healthz", None), ("GET", "/readyz", None),
                                     ("GET", "/metrics", None), ("GET", "/api/v1/cities", None)):
            r = request(self.port, method, path, params=params)
            rid = r.headers.get("X-Request-Id")
            self.assertTrue(rid, "%s %s: no X-Request-Id\n%s" % (method, path, fmt_resp(r)))
            self.assertNotIn(rid, seen, "X-Request-Id %r repeated" % rid)
            seen.add(rid)

    def test_request_id_echoed(self):
        for path in ("/api/v1/cities", "/api/v1/nope", "/healthz"):
            rid = "it-%s-0123456789abcdef" % path.strip("/").replace("/", "-")
            r = self.get(path, headers={"X-Request-Id": rid})
            self.assertEqual(r.headers.get("X-Request-Id"), rid, "GET %s\n%s" % (path, fmt_resp(r)))

    # -- operations ---------------------------------------------------------------

    def test_openapi_served_is_the_repository_file(self):
        spec_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "api", "openapi.yaml")
        with open(spec_path, "rb") as f:
            raw = f.read()
        r = self.get("/openapi.yaml")
        self.assertStatus(r, 200)
        self.assertEqual(r.headers.get("Content-Type"), "application/yaml")
        self.assertEqual(r.body if isinstance(r.body, bytes) else r.body.encode(), raw,
                         "/openapi.yaml is not api/openapi.yaml (rebuild embeds it)")
        j = self.get("/openapi.json")
        self.assertStatus(j, 200)
        self.assertEqual(j.body, json.loads(json.dumps(yaml.safe_load(raw), default=str)),
                         "/openapi.json is not the YAML document as JSON")
        self.assertTrue(j.body["openapi"].startswith("3."))

    def test_healthz(self):
        self.assertStatus(self.get("/healthz"), 200)

    def test_readyz(self):
        r = self.get("/readyz")
        b = self.assertJson(r, 200, "GET /readyz")
        self.assertIn(b.get("status"), ("ok", "degraded"), fmt_resp(r))
        self.assertEqual(b.get("primary"), "up", fmt_resp(r))
        # No DB_READ_REPLICA_URL here: no replica to report.
        self.assertEqual(b.get("replicas"), [], fmt_resp(r))
        self.assertIn(b.get("cache"), ("up", "down", "disabled"), fmt_resp(r))

    def metrics(self):
        r = self.get("/metrics")
        self.assertStatus(r, 200, "GET /metrics")
        ctype = r.headers.get("Content-Type", "")
        self.assertTrue(ctype.startswith("text/plain"), "Content-Type %r" % ctype)
        self.assertIsInstance(r.body, bytes)
        text = r.body.decode("utf-8")
        return text, parse_prometheus(text)

    def test_metrics_names_and_format(self):
        self.get("/api/v1/cities")
        self.get("/api/v1/products/1")
        text, samples = self.metrics()
        names = {n for n, _, _ in samples}
        missing = [m for m in REQUIRED_METRICS if m not in names]
        self.assertFalse(missing, "metrics missing %s\n%s" % (missing, text[:5000]))
        for h in HISTOGRAMS:
            self.assertIn("# TYPE %s histogram" % h, text, "%s is not declared a histogram" % h)
            for suffix in ("_sum", "_count"):
                self.assertIn(h + suffix, names, "histogram %s lacks %s%s" % (h, h, suffix))
        reqs = [l for n, l, _ in samples if n == "marketd_http_requests_total"]
        self.assertTrue(all({"method", "route", "status"} <= set(l) for l in reqs),
                        "marketd_http_requests_total labels: %r" % reqs[:5])
        buckets = [(l, v) for n, l, v in samples if n == "marketd_http_request_duration_seconds_bucket"]
        self.assertTrue(any(l.get("le") == "+Inf" for l, _ in buckets), "no le=\"+Inf\" bucket")
        self.assertTrue(all("route" in l for l, _ in buckets), "duration histogram has no route label")
        for n, l, v in samples:
            if n == "marketd_db_pool_max":
                self.assertIn("pool", l)
                self.assertGreater(v, 0)
            if n == "process_resident_memory_bytes":
                self.assertGreater(v, 1 << 20)
            if n == "process_open_fds":
                self.assertGreater(v, 2)

    def test_metrics_follow_prometheus_conventions(self):
        """Issue 9: every family is prefixed marketd_ (process_* are the
        standard process collector's names), has one HELP and one TYPE
        line, and marketd_build_info / process_start_time_seconds exist."""
        text, samples = self.metrics()
        helps = re.findall(r"^# HELP (\S+) \S", text, re.M)
        types = re.findall(r"^# TYPE (\S+) ", text, re.M)
        self.assertEqual(len(helps), len(set(helps)), "a HELP line repeated: %r" % helps)
        self.assertEqual(sorted(helps), sorted(types), "families with a TYPE but no HELP (or the reverse)")
        for family in types:
            self.assertTrue(family.startswith(("marketd_", "process_")), "unprefixed family %s" % family)
        suffixes = ("_bucket", "_sum", "_count")
        for n, _, _ in samples:
            base = next((n[:-len(x)] for x in suffixes if n.endswith(x) and n[:-len(x)] in types), n)
            self.assertIn(base, types, "sample %s belongs to no declared family" % n)
        info = [(l, v) for n, l, v in samples if n == "marketd_build_info"]
        self.assertEqual(len(info), 1, info)
        self.assertEqual(info[0][1], 1)
        self.assertRegex(info[0][0].get("version", ""), r"^\d+\.\d+\.\d+")
        self.assertTrue(info[0][0].get("schema", "").isdigit(), info)
        start = [v for n, _, v in samples if n == "process_start_time_seconds"]
        self.assertEqual(len(start), 1)
        self.assertTrue(time.time() - 86400 < start[0] <= time.time() + 5,
                        "process_start_time_seconds %r is not this process's start" % start)

    def test_metrics_requests_total_increases(self):
        def totals():
            _, samples = self.metrics()
            all_ = sum(v for n, _, v in samples if n == "marketd_http_requests_total")
            cities = sum(v for n, l, v in samples
                         if n == "marketd_http_requests_total" and "cities" in l.get("route", "")
                         and l.get("status") == "200" and l.get("method") == "GET")
            return all_, cities

        before_all, before_cities = totals()
        for _ in range(5):
            self.assertStatus(self.get("/api/v1/cities"), 200)
        # Counters may be per worker and merged on scrape; poll briefly.
        after = wait_until(lambda: (lambda t: t if t[1] >= before_cities + 5 else None)(totals()), 5)
        after_all, after_cities = after or totals()
        self.assertGreaterEqual(after_cities - before_cities, 5,
                                "marketd_http_requests_total{method=GET,route~cities,status=200}: %s -> %s"
                                % (before_cities, after_cities))
        self.assertGreaterEqual(after_all - before_all, 5, "marketd_http_requests_total sum: %s -> %s"
                                % (before_all, after_all))

    # -- malformed and oversized input ------------------------------------------

    def test_malformed_request_line(self):
        for junk in (b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                     b"\x00\x01\x02\xff\r\n\r\n", b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n"):
            with self.subTest(junk=junk):
                s = raw_connect(self.port)
                try:
                    s.sendall(junk)
                    res = raw_read(s, 5.0)
                finally:
                    s.close()
                self.assertFalse(res.timed_out and not res.data,
                                 "no answer and no close within 5 s to %r" % junk)
                if res.data:
                    self.assertIn(raw_status(res.data), (400, 505) if b"9.9" in junk else (400,),
                                  "answer to %r: %r" % (junk, res.data[:300]))
        self.assertStatus(self.get("/healthz"), 200, "server after malformed requests")

    def send_big(self, head, body, timeout=10.0):
        """Send head and body on a raw socket, tolerating the server closing
        early; returns what came back."""
        s = raw_connect(self.port, timeout=timeout)
        try:
            try:
                s.sendall(head)
                if body:
                    s.sendall(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return raw_read(s, timeout)
        finally:
            s.close()

    def assert_too_large(self, method, path, res, what):
        """api.md: a body over 1 MiB gets 413. A route that takes no body
        with this method (404, or 405 whose Allow lacks the method) may say
        so instead; the server must answer either way."""
        self.assertTrue(res.data, "%s: no answer (closed=%s, timed out=%s, error=%r)"
                        % (what, res.closed, res.timed_out, res.error))
        status = raw_status(res.data)
        allow = raw_headers(res.data).get("allow", "")
        takes_no_body = status == 404 or (status == 405 and method not in
                                          {m.strip().upper() for m in allow.split(",")})
        if not takes_no_body:
            self.assertEqual(status, 413, "%s: %r" % (what, res.data[:300]))
        headers = raw_headers(res.data)
        self.assertIn("x-request-id", headers, "%s: %r" % (what, res.data[:300]))
        self.assertTrue(headers.get("content-type", "").startswith("application/problem+json"),
                        "%s: an error that is not application/problem+json: %r" % (what, res.data[:300]))

    def test_body_larger_than_1mib(self):
        body = b'{"name":"' + b"x" * (1 << 20) + b'","slug":"x"}'
        for method, path in (("POST", "/api/v1/cities"), ("POST", "/api/v1/auth/login"),
                             ("POST", "/api/v1/sellers"), ("PATCH", "/api/v1/products/1"),
                             ("DELETE", "/api/v1/cities")):
            with self.subTest(method=method, path=path):
                head = (b"%s %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % (method.encode(), path.encode(), len(body)))
                self.assert_too_large(method, path, self.send_big(head, body),
                                      "%s %s with a %d-byte body" % (method, path, len(body)))
                self.assertStatus(self.get("/healthz"), 200, "server after %s %s" % (method, path))

    def test_huge_content_length_answered_without_reading_body(self):
        for method, path in (("POST", "/api/v1/cities"), ("POST", "/api/v1/auth/register"),
                             ("GET", "/api/v1/products")):
            with self.subTest(method=method, path=path):
                head = (b"%s %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 10737418240\r\n\r\n{" % (method.encode(), path.encode()))
                res = self.send_big(head, b"", timeout=10.0)
                # Above the largest body any route takes (5 MiB images), the
                # HTTP layer (h2o) refuses before marketd sees the request:
                # 413 in plain text, connection closed (docs/design.md).
                what = "%s %s with Content-Length: 10 GiB" % (method, path)
                self.assertTrue(res.data, "%s: no answer (closed=%s, timed out=%s, error=%r)"
                                % (what, res.closed, res.timed_out, res.error))
                self.assertEqual(raw_status(res.data), 413, "%s: %r" % (what, res.data[:300]))
                self.assertStatus(self.get("/healthz"), 200)

    def test_chunked_body_larger_than_1mib(self):
        chunk = b"x" * 65536
        body = (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 17 + b"0\r\n\r\n"
        for method, path in (("POST", "/api/v1/cities"), ("POST", "/api/v1/auth/login")):
            with self.subTest(method=method, path=path):
                head = (b"%s %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n" % (method.encode(), path.encode()))
                self.assert_too_large(method, path, self.send_big(head, body),
                                      "%s %s with a 1.06 MiB chunked body" % (method, path))
                self.assertStatus(self.get("/healthz"), 200)

    # -- connections ---------------------------------------------------------------

    def test_keepalive_200_requests_one_connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            paths = [("/api/v1/cities", 200), ("/healthz", 200), ("/api/v1/products?limit=2", 200),
                     ("/api/v1/nope", 404), ("/api/v1/products?limit=0", 422)]
            first = None
            for i in range(200):
                path, status = paths[i % len(paths)]
                r = request(self.port, "GET", path, conn=conn)
                self.assertStatus(r, status, "request %d on the keep-alive connection: %s" % (i + 1, path))
                if first is None:
                    first = conn.sock
                self.assertIsNotNone(conn.sock, "server closed the connection after request %d (%s)\n%s"
                                     % (i + 1, path, fmt_resp(r)))
                self.assertIs(conn.sock, first, "a new connection was opened at request %d" % (i + 1))
        finally:
            conn.close()

    def test_pipelined_requests(self):
        s = raw_connect(self.port)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" * 3
                      + b"GET /api/v1/cities HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            res = raw_read(s, 10.0, until_head=False)
        finally:
            s.close()
        self.assertTrue(res.closed, "Connection: close was not honoured (timed out=%s)" % res.timed_out)
        self.assertEqual(len(re.findall(rb"HTTP/1\.1 200", res.data)), 4, repr(res.data[:1000]))

    def test_concurrent_clients(self):
        results, lock = [], threading.Lock()

        sorts = ("newest", "price_asc", "price_desc")
        want = {s: [p["id"] for p in Dataset.sort_products(self.dataset.active_products(), s)[:5]] for s in sorts}

        def client(i):
            sort = sorts[i % 3]
            try:
                r = self.get("/api/v1/products", {"limit": 5, "sort": sort})
                ids = [it.get("id") for it in r.body.get("items", [])] if isinstance(r.body, dict) else None
                out = (sort, r.status, ids)
            except Exception as e:  # reported below
                out = (sort, repr(e), None)
            with lock:
                results.append(out)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(results), 64, "some clients hung")
        wrong = [r for r in results if r[1] != 200 or r[2] != want[r[0]]]
        self.assertEqual(wrong, [], "answers under concurrency that are not 200 with the right page (want %r)" % want)


class TraceContextTests(ServerTestCase):
    """W3C traceparent (issue 9, S14): a caller's trace id is kept — in the
    access log and, when the client sent no X-Request-Id, as the answer's
    X-Request-Id; an invalid one is ignored (a new trace starts); the
    access log is one JSON object per line with OpenTelemetry/ECS names."""

    server_env = {"ACCESS_LOG": "1"}
    TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
    PARENT = "00f067aa0ba902b7"

    def access_lines(self):
        """The access-log lines (JSON objects with event.dataset
        marketd.access) written since this test started."""
        out = []
        for line in self.server.log_since(self._log_mark).splitlines():
            if not line.startswith("{"):
                continue
            obj = json.loads(line)  # every JSON-looking line must parse
            if obj.get("event.dataset") == "marketd.access":
                out.append(obj)
        return out

    def line_for(self, request_id):
        found = []
        ok = wait_until(lambda: found.extend(l for l in self.access_lines() if l["http.request.id"] == request_id)
                        or found, 10.0, interval=0.05)
        self.assertTrue(ok, "no access-log line with http.request.id %s" % request_id)
        return found[0]

    def test_incoming_trace_is_kept(self):
        tp = "00-%s-%s-01" % (self.TRACE, self.PARENT)
        r = self.get("/api/v1/cities", headers={"traceparent": tp})
        self.assertStatus(r, 200)
        self.assertEqual(r.headers.get("X-Request-Id"), self.TRACE, "the trace id answers as X-Request-Id")
        line = self.line_for(self.TRACE)
        self.assertEqual(line["trace.id"], self.TRACE)
        self.assertRegex(line["span.id"], r"^[0-9a-f]{16}$")
        self.assertNotEqual(line["span.id"], self.PARENT, "marketd's span is its own, not the caller's")
        self.assertEqual((line["http.request.method"], line["url.path"], line["http.response.status_code"]),
                         ("GET", "/api/v1/cities", 200))
        self.assertEqual(line["http.route"], "/api/v1/cities")
        self.assertRegex(line["@timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(line["log.level"], "info")
        self.assertIsInstance(line["event.duration"], int)

    def test_client_request_id_wins_and_trace_still_logged(self):
        tp = "00-%s-%s-00" % (self.TRACE, self.PARENT)
        r = self.get("/api/v1/cities", headers={"traceparent": tp, "X-Request-Id": "client-chosen-1"})
        self.assertEqual(r.headers.get("X-Request-Id"), "client-chosen-1")
        self.assertEqual(self.line_for("client-chosen-1")["trace.id"], self.TRACE)

    def test_invalid_or_missing_traceparent_starts_a_trace(self):
        seen = set()
        for tp in (None, "00-%s-%s-01" % ("0" * 32, self.PARENT), "zz-not-a-trace",
                   "00-%s-%s-01" % (self.TRACE.upper(), self.PARENT)):
            r = self.get("/api/v1/nope", headers={"traceparent": tp} if tp else None)
            self.assertProblem(r, 404)
            rid = r.headers.get("X-Request-Id")
            self.assertRegex(rid, r"^[0-9a-f]{32}$", "a new trace id answers as X-Request-Id (traceparent %r)" % tp)
            self.assertNotEqual(rid, self.TRACE)
            self.assertNotIn(rid, seen)
            seen.add(rid)
            self.assertEqual(self.line_for(rid)["trace.id"], rid)


class SlowClientTests(ServerTestCase):
    server_env = {"HTTP_HEADER_TIMEOUT_MS": "1000"}

    def test_slowloris_does_not_block_others_and_is_closed(self):
        socks = []
        try:
            for _ in range(20):
                s = raw_connect(self.port)
                s.sendall(b"GET /api/v1/cities HTTP/1.1\r\nHost: t\r\nX-Slow: aaaa")
                socks.append(s)
            t0 = time.monotonic()
            # Others are served while the partial requests are open.
            for path in ("/healthz", "/api/v1/cities", "/api/v1/products?limit=3"):
                self.assertStatus(self.get(path, timeout=5), 200, "%s while 20 slow clients are open" % path)
            for i, s in enumerate(socks):
                res = raw_read(s, max(0.5, 10.0 - (time.monotonic() - t0)), until_head=False)
                self.assertFalse(res.timed_out,
                                 "slow connection %d still open 10 s after it stalled (header timeout 1 s); "
                                 "got %r" % (i, res.data[:200]))
                if res.data:
                    self.assertIn(raw_status(res.data), (400, 408), repr(res.data[:300]))
        finally:
            for s in socks:
                s.close()
        self.assertStatus(self.get("/healthz"), 200)

    def test_idle_connection_is_closed(self):
        s = raw_connect(self.port)
        try:
            res = raw_read(s, 10.0, until_head=False)
        finally:
            s.close()
        self.assertFalse(res.timed_out, "a connection that sends nothing stays open > 10 s")
        self.assertStatus(self.get("/healthz"), 200)

    def test_slow_but_steady_headers_complete(self):
        """A client that sends its request in pieces within the timeout is
        served (the timeout is not a per-read one that resets nothing)."""
        s = raw_connect(self.port)
        try:
            for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"):
                s.sendall(piece)
                time.sleep(0.1)  # pieces must arrive as separate reads
            res = raw_read(s, 5.0)
        finally:
            s.close()
        self.assertEqual(raw_status(res.data), 200, repr(res.data[:300]))
