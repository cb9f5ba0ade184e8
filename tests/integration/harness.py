"""Integration-test harness for marketd.

What lives here (the test modules import it as `harness`):

- configuration from the environment (MARKETD_BIN, DATABASE_URL, TEST_TMPDIR);
- `Server`: the real binary as a subprocess on a free 127.0.0.1 port in
  30000-30999 (below Linux's ephemeral range), readiness by polling GET /healthz (bounded), stop by SIGTERM
  with an exit-code-0 check (ASan/LeakSanitizer turn leaks and memory errors
  into a non-zero exit code, so a leak fails the test that stopped it); its
  stdout+stderr go to a file under TEST_TMPDIR and are printed on failure;
- `request()`: a small HTTP client returning (status, headers, body) where
  body is the parsed JSON for JSON responses and raw bytes otherwise;
- `load_dataset()`: TRUNCATE every table RESTART IDENTITY CASCADE and insert
  one small, known dataset with psycopg2; it returns a Python model of what
  it inserted, from which the tests compute expected answers;
- `ServerTestCase`: a TestCase base that loads the dataset, starts one server
  for the class, stops it (checking the exit code) at the end, and offers
  assertion helpers that print both sides and the request on mismatch.

Only the Python standard library and psycopg2 are used.
"""

import ctypes
import datetime as dt
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
from collections import namedtuple
from decimal import Decimal

import psycopg2

UTC = dt.timezone.utc

# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------

MARKETD_BIN = os.environ.get("MARKETD_BIN", "")
DATABASE_URL = os.environ.get("DATABASE_URL", "")
# How the binary is told to serve (STYLE.md: one binary, modes from argv).
SERVE_ARGS = os.environ.get("MARKETD_SERVE_ARGS", "serve").split()

_tmpdir = os.environ.get("TEST_TMPDIR")
if not _tmpdir:
    _tmpdir = tempfile.mkdtemp(prefix="marketd-it-")
os.makedirs(_tmpdir, exist_ok=True)
TEST_TMPDIR = _tmpdir

START_TIMEOUT = 20.0  # s, until GET /healthz answers 200
STOP_TIMEOUT = 15.0   # s, from SIGTERM to exit
HTTP_TIMEOUT = 10.0   # s, default for one request: "does not hang" bound

# Configuration variables of marketd (api.md "Configuration") plus the ones
# the tests use. They are removed from the inherited environment so that only
# what a test sets reaches the server.
CONFIG_VARS = (
    "LISTEN", "WORKERS", "DATABASE_URL", "DB_READ_REPLICA_URL", "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT_MS", "REDIS_URL", "REDIS_CLUSTER_NODES",
    "DB_REPLICA_POOL_SIZE", "DB_REPLICA_MAX_LAG_MS",
    "CACHE_TTL_PRODUCTS", "CACHE_TTL_REFERENCE", "CACHE_TTL_POPULAR_SELLERS",
    "CDN_BASE_URL", "MEDIA_DIR", "JWT_SECRET", "JWT_TTL", "LOG_LEVEL",
    "ACCESS_LOG", "HTTP_HEADER_TIMEOUT_MS",
    # marketd's own tuning knobs beyond api.md (src/core/config.c)
    "DB_POOL_IDLE_MS", "DB_POOL_QUEUE", "DB_PIPELINE_DEPTH", "DB_PREPARE",
    "DB_STATEMENT_TIMEOUT_MS", "SHUTDOWN_TIMEOUT_MS",
    "CACHE_TIMEOUT_MS", "CACHE_WAIT_REPLICAS", "CACHE_TEST_STORE_GATE", "TEST_STALL_SIGNAL", "OUTAGE_STORE_MB",
    "IDEMPOTENCY_CLEANUP_EVERY",
    "LOGIN_FAILURES_FREE", "LOGIN_BACKOFF_BASE_MS", "LOGIN_BACKOFF_MAX_S", "LOGIN_FAILURES_TTL",
    "CORS_ORIGINS", "ORDER_RETENTION_MONTHS", "MIGRATIONS_DIR", "MARKETD_PASSWORD",
)

# Sanitizer defaults; anything already set in the environment wins.
_SAN_DEFAULTS = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": "suppressions=" + os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                   "lsan.supp") + ":print_suppressions=0",
}

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",  # UBSan
    "SUMMARY: AddressSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
)

# ---------------------------------------------------------------------------
# Ports and processes
# ---------------------------------------------------------------------------

_used_ports = set()
_port_lock = threading.Lock()


# Below Linux's ephemeral range (32768-60999 by default): a port there can be
# taken at any moment as the local end of somebody's outgoing connection (a
# test's own client, marketd's pool), between the check below and the
# server's bind. One CI run lost a server's start-up to exactly that.
SERVER_PORTS = range(30000, 31000)


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return range(lo, hi + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _pick_port(ports, used):
    """A port of `ports` that nobody listens on now and that this run has not
    handed out before (so a TIME_WAIT leftover of an earlier server is never
    mistaken for a new one). Ports inside the ephemeral range are skipped."""
    eph = _ephemeral_range()
    with _port_lock:
        candidates = [p for p in ports if p not in used and p not in eph]
        random.shuffle(candidates)
        for port in candidates:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                s.close()
            used.add(port)
            return port
    raise RuntimeError("no free port in %d-%d outside the ephemeral range %d-%d"
                       % (ports[0], ports[-1], eph[0], eph[-1]))


def free_port():
    """A free port for a marketd under test (SERVER_PORTS)."""
    return _pick_port(SERVER_PORTS, _used_ports)


def closed_port():
    """A local port with no listener (for "database down")."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_libc = None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    pass


def _die_with_parent():
    # PR_SET_PDEATHSIG: if the test runner dies (watchdog, ^C), the server
    # gets SIGKILL instead of living on and holding its port.
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def wait_until(predicate, timeout, interval=0.05):
    """Poll predicate() until it returns a truthy value or timeout passes.
    Returns the last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def status_of(port, path, **kw):
    """The status of GET path, or a string describing why there is none
    (for polling loops that must not die on a reset connection)."""
    try:
        return request(port, "GET", path, **kw).status
    except (OSError, http.client.HTTPException) as e:
        return repr(e)


def tail(text, max_chars=20000):
    if len(text) <= max_chars:
        return text
    return "...[%d chars cut]...\n" % (len(text) - max_chars) + text[-max_chars:]


class Server:
    """One marketd process.

    env: overrides on top of the defaults (LISTEN, DATABASE_URL, WORKERS=2,
    ACCESS_LOG=0, JWT_SECRET); a value of None removes the variable."""

    _seq = 0

    def __init__(self, env=None, name="server", args=None):
        Server._seq += 1
        self.name = "%s-%d" % (re.sub(r"[^A-Za-z0-9_.-]", "_", name), Server._seq)
        self.port = free_port()
        self.args = list(args) if args is not None else list(SERVE_ARGS)
        self.log_path = os.path.join(TEST_TMPDIR, "marketd-%s.log" % self.name)
        self.proc = None
        # argv in front of marketd's, e.g. to run it in a namespace (exec'ing it)
        self.wrapper = []
        self.env = self._build_env(env or {})

    def _build_env(self, overrides):
        env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
        for k, v in _SAN_DEFAULTS.items():
            if k not in env and v:
                env[k] = v
        env.update({
            "LISTEN": "127.0.0.1:%d" % self.port,
            "DATABASE_URL": DATABASE_URL,
            "WORKERS": "2",
            "ACCESS_LOG": "0",
            # Required by the write path (tokens); any value of this length.
            "JWT_SECRET": "integration-tests-jwt-secret-0123456789abcdef0123456789",
        })
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    # -- process ----------------------------------------------------------

    def spawn(self):
        """Start the process without waiting for readiness."""
        if not MARKETD_BIN:
            raise AssertionError("MARKETD_BIN is not set")
        if not (os.path.isfile(MARKETD_BIN) and os.access(MARKETD_BIN, os.X_OK)):
            raise AssertionError("MARKETD_BIN=%r is not an executable file" % MARKETD_BIN)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.wrapper + [MARKETD_BIN] + self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        return self

    def start(self):
        """Start and wait until GET /healthz answers 200 (bounded). A first
        start that lost its port to another process between free_port() and
        marketd's bind moves to another port (at most twice); a restart, or a
        LISTEN the test chose itself, keeps its address."""
        for attempt in range(3):
            try:
                return self._start()
            except AssertionError:
                ours = self.env.get("LISTEN") == "127.0.0.1:%d" % self.port
                if not (ours and attempt < 2 and not getattr(self, "_started_once", False)
                        and "Address already in use" in self.log_text()):
                    raise
                self._log.close()
                self.port = free_port()
                self.env["LISTEN"] = "127.0.0.1:%d" % self.port
        raise AssertionError("unreachable")

    def _start(self):
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(
                    "marketd exited with code %d during start-up (LISTEN=%s)\n%s"
                    % (rc, self.env.get("LISTEN"), self.log_banner()))
            try:
                r = request(self.port, "GET", "/healthz", timeout=2)
                if r.status == 200:
                    self._started_once = True
                    return self
                last = "status %d" % r.status
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill()
        raise AssertionError(
            "marketd did not answer GET /healthz with 200 within %.0f s (last: %s)\n%s"
            % (START_TIMEOUT, last, self.log_banner()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Exit code, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self):
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def stop(self, check=True):
        """SIGTERM; with check, assert that it exits with code 0 within
        STOP_TIMEOUT and printed no sanitizer report."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(STOP_TIMEOUT)
        if rc is None:
            self.kill()
            if check:
                raise AssertionError(
                    "marketd did not exit within %.0f s of SIGTERM (killed)\n%s"
                    % (STOP_TIMEOUT, self.log_banner()))
            return None
        self._close_log()
        if check:
            self.check_exit(rc)
        return rc

    def check_exit(self, rc):
        if rc != 0:
            summary = [l.strip() for l in self.log_text().splitlines() if l.startswith("SUMMARY:")]
            raise AssertionError(
                "marketd exited with code %r on shutdown, expected 0 (%s)\n%s"
                % (rc, "; ".join(summary) or "a crash or a failed shutdown?", self.log_banner()))
        report = self.sanitizer_report()
        if report:
            raise AssertionError("marketd exited 0 but printed a sanitizer report\n%s"
                                 % self.log_banner())

    # -- log --------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def sanitizer_report(self):
        text = self.log_text()
        return any(m in text for m in SANITIZER_MARKERS)

    def log_banner(self, text=None):
        if text is None:
            text = self.log_text()
        return ("---- marketd output (%s) ----\n%s\n---- end of marketd output ----"
                % (self.log_path, tail(text).rstrip()))


# ---------------------------------------------------------------------------
# HTTP client
# ---------------------------------------------------------------------------

Response = namedtuple("Response", "status headers body")


def path_with_query(path, params=None):
    if not params:
        return path
    if isinstance(params, dict):
        params = list(params.items())
    return path + "?" + urllib.parse.urlencode([(k, str(v)) for k, v in params])


def decode_body(headers, raw):
    ctype = (headers.get("Content-Type") or "").lower()
    if raw and "json" in ctype:
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise AssertionError("response claims %s but is not valid JSON (%s): %r"
                                 % (ctype, e, raw[:2000]))
    return raw


def request(port, method, path, params=None, body=None, headers=None,
            timeout=HTTP_TIMEOUT, conn=None):
    """One HTTP request to 127.0.0.1:port. body: bytes, str, or an object
    that is sent as JSON. With conn (an http.client.HTTPConnection) the
    connection is reused and left open; otherwise a new one is closed after
    the response. Returns Response(status, headers, body)."""
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray, str)):
        body = json.dumps(body).encode("utf-8")
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path_with_query(path, params), body=body, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return Response(resp.status, resp.headers, decode_body(resp.headers, raw))
    finally:
        if own:
            conn.close()


# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------

RFC3339_UTC_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")


def parse_rfc3339_utc(s):
    """(datetime, fraction digits) or raise AssertionError."""
    if not isinstance(s, str):
        raise AssertionError("timestamp is not a string: %r" % (s,))
    m = RFC3339_UTC_RE.match(s)
    if not m:
        raise AssertionError("not an RFC 3339 UTC timestamp ending in Z: %r" % s)
    y, mo, d, h, mi, sec, frac = m.groups()
    frac = frac or ""
    micro = int((frac + "000000")[:6])
    return (dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), micro,
                        tzinfo=UTC), len(frac))


def truncate_to_digits(value, digits):
    if digits >= 6:
        return value
    q = 10 ** (6 - digits)
    return value.replace(microsecond=(value.microsecond // q) * q)


# ---------------------------------------------------------------------------
# Database fixtures
# ---------------------------------------------------------------------------

# Tables that describe the schema rather than hold data.
KEEP_TABLES = ("schema_migrations",)


def db_connect(autocommit=True):
    if not DATABASE_URL:
        raise AssertionError("DATABASE_URL is not set")
    conn = psycopg2.connect(DATABASE_URL)
    conn.autocommit = autocommit
    return conn


def db_query(sql, args=(), conn=None):
    """One statement in autocommit on a new connection (or `conn`, then
    closed): its rows, or None when it returns none."""
    conn = conn or db_connect()
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def truncate_all(cur):
    cur.execute(
        """SELECT format('%%I.%%I', n.nspname, c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
              AND NOT c.relispartition AND c.relname <> ALL(%s)""",
        (list(KEEP_TABLES),))
    tables = [r[0] for r in cur.fetchall()]
    if tables:
        cur.execute("TRUNCATE %s RESTART IDENTITY CASCADE" % ", ".join(tables))


class Dataset:
    """What load_dataset() inserted, as plain dicts keyed by column name."""

    def __init__(self):
        self.cities = []
        self.districts = []
        self.categories = []
        self.users = []
        self.sellers = []
        self.products = []
        self.orders = []
        self.now = None  # the database's now() when the orders were made
        self.ids = {}    # symbolic name -> id

    # lookups
    def seller(self, sid):
        return next(s for s in self.sellers if s["id"] == sid)

    def product(self, pid):
        return next(p for p in self.products if p["id"] == pid)

    def category_descendants(self, cid):
        """cid and all categories below it."""
        out, frontier = {cid}, [cid]
        while frontier:
            parent = frontier.pop()
            for c in self.categories:
                if c["parent_id"] == parent and c["id"] not in out:
                    out.add(c["id"])
                    frontier.append(c["id"])
        return out

    def active_products(self):
        return [p for p in self.products if p["status"] == "active"]

    # the orders of api.md
    @staticmethod
    def sort_products(rows, sort="newest"):
        if sort == "newest":
            return sorted(rows, key=lambda p: (p["created_at"], p["id"]), reverse=True)
        if sort == "price_asc":
            return sorted(rows, key=lambda p: (p["price"], p["id"]))
        if sort == "price_desc":
            return sorted(rows, key=lambda p: (-p["price"], p["id"]))
        raise ValueError(sort)

    def popular_sellers(self, city_id=None):
        """[(seller, orders_30d)] ranked as api.md says."""
        window_start = self.now - dt.timedelta(days=30)
        counts = {}
        for o in self.orders:
            if o["status"] == "delivered" and o["created_at"] >= window_start:
                counts[o["seller_id"]] = counts.get(o["seller_id"], 0) + 1
        rows = [(self.seller(sid), n) for sid, n in counts.items()]
        if city_id is not None:
            rows = [(s, n) for s, n in rows if s["city_id"] == city_id]
        rows.sort(key=lambda r: (-r[1], r[0]["id"]))
        return rows


BASE_TIME = dt.datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


def _insert(cur, table, row):
    cols = list(row.keys())
    cur.execute(
        "INSERT INTO %s (%s) VALUES (%s) RETURNING *"
        % (table, ", ".join(cols), ", ".join(["%s"] * len(cols))),
        [row[c] for c in cols])
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone()))


def load_dataset():
    """TRUNCATE everything and insert the known dataset. Returns a Dataset.

    Shape (ids are insertion order after RESTART IDENTITY):
    - cities: Москва, Казань, Абакан (no districts), Новосибирск (no sellers);
      inserted out of name order so "by name" differs from "by id";
    - categories: Электроника > Смартфоны > Аксессуары для смартфонов,
      Электроника > Ноутбуки, Одежда > Обувь, Прочее;
    - 23 sellers: 5 named ones, 12 "Продавец N" (one delivered order each),
      6 "Тихий N" (no orders);
    - ~160 products: named ones for the q/price/detail tests, tie groups
      (same price, same created_at, both), a few archived, and filler rows
      spread over sellers and categories with many equal prices and equal
      created_at values (so keyset pagination has ties to get wrong);
    - orders relative to the database's now() for /sellers/popular.
    """
    ds = Dataset()
    conn = db_connect(autocommit=False)
    try:
        cur = conn.cursor()
        truncate_all(cur)

        def city(key, name, slug):
            row = _insert(cur, "cities", {"name": name, "slug": slug})
            ds.cities.append({k: row[k] for k in ("id", "name", "slug")})
            ds.ids[key] = row["id"]
            return row["id"]

        def district(key, city_id, name, slug):
            row = _insert(cur, "districts", {"city_id": city_id, "name": name, "slug": slug})
            ds.districts.append({k: row[k] for k in ("id", "city_id", "name", "slug")})
            ds.ids[key] = row["id"]
            return row["id"]

        def category(key, parent_id, name, slug):
            row = _insert(cur, "categories", {"parent_id": parent_id, "name": name, "slug": slug})
            ds.categories.append({k: row[k] for k in ("id", "parent_id", "name", "slug")})
            ds.ids[key] = row["id"]
            return row["id"]

        msk = city("msk", "Москва", "moskva")
        kzn = city("kzn", "Казань", "kazan")
        abk = city("abk", "Абакан", "abakan")
        nsk = city("nsk", "Новосибирск", "novosibirsk")

        tver = district("tver", msk, "Тверской", "tverskoy")
        arbat = district("arbat", msk, "Арбат", "arbat")
        district("basm", msk, "Басманный", "basmanny")
        vakh = district("vakh", kzn, "Вахитовский", "vakhitovsky")
        district("nsk_center", nsk, "Центральный", "centralny")

        electronics = category("electronics", None, "Электроника", "electronics")
        clothes = category("clothes", None, "Одежда", "clothes")
        phones = category("phones", electronics, "Смартфоны", "phones")
        laptops = category("laptops", electronics, "Ноутбуки", "laptops")
        shoes = category("shoes", clothes, "Обувь", "shoes")
        misc = category("misc", None, "Прочее", "misc")
        # The category tree is two levels deep (api.md; POST /categories
        # refuses a parent that has a parent).
        phone_acc = category("phone_acc", electronics, "Аксессуары для смартфонов", "phone-accessories")

        roots = {}
        for c in ds.categories:
            r = c
            while r["parent_id"] is not None:
                r = next(x for x in ds.categories if x["id"] == r["parent_id"])
            roots[c["id"]] = r["id"]

        def user(email, name):
            row = _insert(cur, "users", {"email": email, "password_hash": "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
                                         "name": name})
            ds.users.append(row)
            return row["id"]

        def seller(key, name, city_id, district_id, rating, days_ago, description=""):
            uid = user("%s@example.test" % key, name)
            row = _insert(cur, "sellers", {
                "user_id": uid, "name": name, "description": description,
                "city_id": city_id, "district_id": district_id,
                "rating": Decimal(rating),
                "created_at": BASE_TIME - dt.timedelta(days=days_ago, microseconds=days_ago * 7),
            })
            ds.sellers.append(row)
            ds.ids[key] = row["id"]
            return row["id"]

        s1 = seller("s1", "Альфа", msk, arbat, "4.50", 300, "Электроника с гарантией")
        s2 = seller("s2", "Бета", msk, tver, "3.00", 250)
        s3 = seller("s3", "Гамма", kzn, vakh, "5.00", 200, "Казанский магазин")
        s4 = seller("s4", "Дельта", msk, None, "0.00", 150)
        s5 = seller("s5", "Эпсилон", abk, None, "4.25", 100)
        busy = [seller("busy%d" % i, "Продавец %d" % i, abk, None, "1.%02d" % i, 90 - i)
                for i in range(1, 13)]
        quiet = [seller("quiet%d" % i, "Тихий %d" % i, kzn, vakh if i % 2 else None, "2.00", 50 - i)
                 for i in range(1, 7)]
        ds.ids["busy"] = busy
        ds.ids["quiet"] = quiet

        def product(title, seller_id, category_id, price, created_at, stock=10,
                    status="active", description="", images=(), key=None):
            s = ds.seller(seller_id)
            row = _insert(cur, "products", {
                "seller_id": seller_id, "category_id": category_id,
                "category_root_id": roots[category_id],
                "city_id": s["city_id"], "district_id": s["district_id"],
                "title": title, "description": description, "price": price,
                "currency": "RUB", "stock": stock, "images": list(images),
                "status": status, "created_at": created_at,
                "updated_at": created_at + dt.timedelta(hours=1, microseconds=123),
            })
            row["currency"] = row["currency"].strip()
            ds.products.append(row)
            if key:
                ds.ids[key] = row["id"]
            return row["id"]

        t = BASE_TIME
        us = lambda n: dt.timedelta(microseconds=n)
        mins = lambda n: dt.timedelta(minutes=n)

        # Named products (q, price bounds, detail).
        product("Смартфон Samsung Galaxy S23", s1, phones, 7999000, t - mins(1) + us(250001),
                stock=5, description="Флагман 2023 года.\nДва цвета.",
                images=["/3f/3fa2c1e0d4.webp", "/9b/9b01ee77aa.jpg"],
                key="p_s23")
        product("Смартфон Xiaomi Redmi Note 12", s2, phones, 1899000, t - mins(2), key="p_redmi")
        product("Чехол для смартфона Samsung", s1, electronics, 99000, t - mins(3), key="p_case")
        product("SAMSUNG Galaxy Buds2", s3, electronics, 999000, t - mins(4), key="p_buds")
        product("Ноутбук Lenovo ThinkPad X1", s2, laptops, 15999000, t - mins(5), key="p_lenovo")
        product("Ноутбук Apple MacBook Air", s3, laptops, 12999000, t - mins(6),
                status="archived", description="Снят с продажи", key="p_macbook")
        product("Кроссовки Nike Air Max", s4, shoes, 1299000, t - mins(7), key="p_nike")
        # Paths that PostgreSQL quotes in an array's text form.
        product("Куртка зимняя", s5, clothes, 899000, t - mins(8), key="p_jacket",
                images=['/a b/c,d{e}.jpg', '/q"x\\y.png', '/NULL'])
        product("Скидка 50% на носки", s5, clothes, 100, t - mins(9), key="p_socks")
        product("Товар_с_подчёркиванием", s4, clothes, 1, t - mins(10), stock=0, key="p_underscore")
        product("Ёлочная гирлянда LED", s1, electronics, 100000000000, t - mins(11), key="p_garland")
        product("Гирлянда ёлочная мини", s2, electronics, 150000, t - mins(12), key="p_garland_mini")
        product("Защитное стекло для смартфона", s2, phone_acc, 50000, t - mins(13), key="p_glass")

        # Same price, distinct created_at, one archived.
        for i, (sid, st) in enumerate([(s1, "active"), (s3, "active"), (s2, "archived"),
                                       (s5, "active"), (s2, "active"), (s4, "active")]):
            product("Наушники проводные %s" % "ABCDEF"[i], sid, electronics, 250000,
                    t - mins(20 + i), status=st)
        # Same created_at, distinct prices, one archived.
        t_tie = t - mins(30)
        for i, (sid, price, st) in enumerate([(s1, 300000, "active"), (s2, 100000, "active"),
                                              (s3, 500000, "archived"), (s4, 200000, "active")]):
            product("Зарядка быстрая %d" % (i + 1), sid, electronics, price, t_tie, status=st)
        # Microseconds apart from the group above: a cursor that keeps only
        # seconds (or milliseconds) loses or repeats these.
        product("Зарядка быстрая 5", s5, electronics, 200000, t_tie + us(1))
        product("Зарядка быстрая 6", s1, electronics, 200000, t_tie + us(2))
        product("Зарядка быстрая 7", s2, electronics, 200000, t_tie - us(1))
        product("Зарядка быстрая 8", s3, electronics, 200000, t_tie + us(1000))
        # Same created_at and same price: only the id orders them.
        t_cable = t - mins(40)
        for i, sid in enumerate([s3, s1, s4, s2, s5, s1, s2]):
            product("Кабель USB-C вариант %d" % (i + 1), sid, phone_acc, 79000, t_cable,
                    status="archived" if i == 3 else "active")

        # Filler: many ties in both price and created_at, across sellers and
        # categories, so that every filter has several pages.
        filler_sellers = [s1, s2, s3, s4, s5, busy[0]]
        filler_categories = [misc, shoes, laptops, phones, clothes]
        for i in range(1, 131):
            product("Товар №%d" % i, filler_sellers[i % len(filler_sellers)],
                    filler_categories[i % len(filler_categories)],
                    10000 + (i % 7) * 10000,
                    t - dt.timedelta(hours=1 + i // 3),
                    stock=i % 50,
                    status="archived" if i % 17 == 0 else "active")

        # Orders relative to the database clock (the server's notion of
        # "the last 30 days" is the database's or its own; both agree with
        # it to well within the one-day margins used here).
        cur.execute("SELECT now()")
        ds.now = cur.fetchone()[0]
        buyer = user("buyer@example.test", "Покупатель")

        def order(seller_id, status, days_ago):
            created = ds.now - dt.timedelta(days=days_ago)
            cur.execute(
                """INSERT INTO orders (id, buyer_id, seller_id, status, total, currency, created_at, updated_at)
                   VALUES (marketd_order_id(%s, nextval('orders_id_seq')), %s, %s, %s, %s, 'RUB', %s, %s)
                   RETURNING id""",
                (created, buyer, seller_id, status, 100000, created, created))
            oid = cur.fetchone()[0]
            pid = next((p["id"] for p in ds.products if p["seller_id"] == seller_id), None)
            if pid is not None:
                cur.execute(
                    """INSERT INTO order_items (order_id, created_at, product_id, title, price, quantity)
                       VALUES (%s, %s, %s, %s, %s, 1)""",
                    (oid, created, pid, ds.product(pid)["title"], 100000))
            ds.orders.append({"id": oid, "seller_id": seller_id, "status": status,
                              "created_at": created})

        for d in (1, 5, 29):
            order(s1, "delivered", d)
        order(s1, "delivered", 31)      # outside the window
        order(s1, "new", 2)             # not delivered
        order(s1, "shipped", 3)
        for d in (2, 6, 28):
            order(s2, "delivered", d)   # ties with s1: s1 first (smaller id)
        for d in (1, 2, 3, 4, 5):
            order(s3, "delivered", d)
        order(s4, "cancelled", 1)
        order(s4, "cancelled", 2)
        order(s4, "delivered", 40)      # only outside the window: not listed
        order(s4, "confirmed", 3)
        order(s5, "delivered", 10)
        for sid in busy:
            order(sid, "delivered", 2)
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()
    return ds


# ---------------------------------------------------------------------------
# Test-case base
# ---------------------------------------------------------------------------

def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_resp(r):
    body = r.body
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body[:2000])
    else:
        body = json.dumps(body, ensure_ascii=False)[:4000]
    return "status=%s headers=%s body=%s" % (r.status, dict(r.headers.items()), body)


class ServerTestCase(unittest.TestCase):
    """One server per class, started after the dataset is loaded (so no
    cache of the server ever sees other data) and stopped, with its exit
    code checked, when the class is done. With `start_redis` the class gets
    a Redis of its own (`cls.redis`, REDIS_URL in `server_env`); with
    `second_server` another instance of the same environment
    (`cls.server2`)."""

    server_env = {}
    start_server = True
    start_redis = False
    second_server = False
    dataset = None
    server = None
    server2 = None
    redis = None
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.dataset = load_dataset()
        try:
            if cls.start_redis:
                cls.redis = RedisServer(name=cls.__name__).start()
                cls.server_env = dict(cls.server_env, REDIS_URL="redis://127.0.0.1:%d" % cls.redis.port)
            if cls.start_server:
                cls.server = Server(env=cls.server_env, name=cls.__name__).start()
                if cls.second_server:
                    cls.server2 = Server(env=cls.server_env, name=cls.__name__ + "-second").start()
        except BaseException:
            cls._stop_class_processes(check=False)
            raise

    @classmethod
    def tearDownClass(cls):
        cls._stop_class_processes(check=True)

    @classmethod
    def _stop_class_processes(cls, check):
        """server2, server (exit codes checked with `check`), then the
        class's Redis; the first failed check is raised once all are down."""
        errors = []
        for attr in ("server2", "server"):
            s = getattr(cls, attr, None)
            setattr(cls, attr, None)
            if s is not None:
                try:
                    s.stop(check=check)
                except AssertionError as e:
                    errors.append(e)
        if cls.start_redis and cls.redis is not None:
            cls.redis.stop()
            cls.redis = None
        if errors:
            raise errors[0]

    def setUp(self):
        self._log_mark = self.server.log_size() if self.server else 0
        self._log_mark2 = self.server2.log_size() if self.server2 else 0
        self._extra_servers = []

    def tearDown(self):
        # Servers a test started itself and did not stop: kill, no check.
        for s in self._extra_servers:
            s.kill()

    def new_server(self, env=None, name=None):
        """A server private to this test (stopped by the test, killed in
        tearDown if it forgot)."""
        s = Server(env=env, name=name or self.id().split(".")[-1])
        self._extra_servers.append(s)
        return s

    def failure_context(self):
        """Server output written while this test ran (run.py prints it when
        the test fails)."""
        parts = []
        for server, mark in ((self.server, getattr(self, "_log_mark", 0)),
                             (self.server2, getattr(self, "_log_mark2", 0))):
            if server is not None:
                text = server.log_since(mark)
                if text.strip():
                    parts.append(server.log_banner(text))
        for s in getattr(self, "_extra_servers", []):
            text = s.log_text()
            if text.strip():
                parts.append(s.log_banner(text))
        return "\n".join(parts)

    # -- requests -----------------------------------------------------------

    @property
    def port(self):
        return self.server.port

    def get(self, path, params=None, headers=None, **kw):
        return request(self.port, "GET", path, params=params, headers=headers, **kw)

    def req(self, method, path, **kw):
        return request(self.port, method, path, **kw)

    # -- assertions ------------------------------------------------------

    def assertStatus(self, r, status, what=""):
        if r.status != status:
            self.fail("%sexpected status %d, got %d\n%s"
                      % (what + ": " if what else "", status, r.status, fmt_resp(r)))

    def assertJson(self, r, status=200, what=""):
        """Status, a JSON content type, and a JSON object body."""
        self.assertStatus(r, status, what)
        ctype = r.headers.get("Content-Type", "")
        self.assertTrue(ctype.lower().startswith("application/json"),
                        "%s: Content-Type %r, expected application/json\n%s" % (what, ctype, fmt_resp(r)))
        self.assertIsInstance(r.body, dict, "%s: body is not a JSON object\n%s" % (what, fmt_resp(r)))
        return r.body

    def assertProblem(self, r, status, what=""):
        """An RFC 9457 problem document with the given status."""
        self.assertStatus(r, status, what)
        ctype = r.headers.get("Content-Type", "")
        self.assertTrue(ctype.lower().startswith("application/problem+json"),
                        "%s: Content-Type %r, expected application/problem+json\n%s"
                        % (what, ctype, fmt_resp(r)))
        b = r.body
        self.assertIsInstance(b, dict, "%s: problem body is not a JSON object\n%s" % (what, fmt_resp(r)))
        for key in ("type", "title", "detail"):
            self.assertIsInstance(b.get(key), str,
                                  "%s: problem member %r missing or not a string\n%s"
                                  % (what, key, fmt_resp(r)))
        self.assertEqual(b.get("status"), status,
                         "%s: problem 'status' member differs from the HTTP status\n%s" % (what, fmt_resp(r)))
        self.assertTrue(is_int(b.get("status")), "%s: problem 'status' is not an integer" % what)
        self.assertTrue(r.headers.get("X-Request-Id"),
                        "%s: error response without X-Request-Id\n%s" % (what, fmt_resp(r)))
        if status == 422:
            # api.md: validation errors name what is wrong.
            errors = b.get("errors")
            self.assertTrue(isinstance(errors, list) and errors, "%s: a 422 without errors[]\n%s"
                            % (what, fmt_resp(r)))
            for e in errors:
                self.assertTrue(isinstance(e, dict) and isinstance(e.get("field"), str) and e["field"]
                                and isinstance(e.get("message"), str) and e["message"],
                                "%s: errors[] entry without field/message: %r\n%s" % (what, e, fmt_resp(r)))
        return b

    def assertList(self, r, what=""):
        """200 {"items": [...], "next_cursor": str|null}; returns the body."""
        b = self.assertJson(r, 200, what)
        self.assertIsInstance(b.get("items"), list, "%s: no items list\n%s" % (what, fmt_resp(r)))
        self.assertIn("next_cursor", b, "%s: no next_cursor member\n%s" % (what, fmt_resp(r)))
        nc = b["next_cursor"]
        self.assertTrue(nc is None or (isinstance(nc, str) and nc != ""),
                        "%s: next_cursor must be a non-empty string or null, got %r" % (what, nc))
        return b

    def assertTimestamp(self, got, expected, what=""):
        """got is RFC 3339 UTC with Z and equals expected to the precision
        it carries (fractions are allowed, not required)."""
        try:
            value, digits = parse_rfc3339_utc(got)
        except AssertionError as e:
            self.fail("%s: %s" % (what, e))
        exp = truncate_to_digits(expected.astimezone(UTC), digits)
        self.assertEqual(value, exp, "%s: timestamp %r, expected %s" % (what, got, expected.isoformat()))

    def assertRating(self, got, expected, what=""):
        self.assertTrue(is_number(got), "%s: rating %r is not a JSON number" % (what, got))
        self.assertAlmostEqual(float(got), float(expected), places=6,
                               msg="%s: rating %r, expected %s" % (what, got, expected))

    def walk(self, path, params=None, limit=3, max_pages=None, expect_total=None):
        """Follow next_cursor until null. Returns (items, pages). Fails on a
        non-200 page, on an empty page that still has a cursor, or when it
        takes more pages than there can be."""
        params = dict(params or {})
        params["limit"] = limit
        if max_pages is None:
            bound = expect_total if expect_total is not None else 1000
            max_pages = bound // limit + 2
        items, cursor, pages = [], None, 0
        while True:
            q = dict(params)
            if cursor is not None:
                q["cursor"] = cursor
            r = self.get(path, q)
            b = self.assertList(r, "page %d of %s %s" % (pages + 1, path, q))
            pages += 1
            self.assertLessEqual(len(b["items"]), limit,
                                 "page %d has more than limit=%d items" % (pages, limit))
            items.extend(b["items"])
            cursor = b["next_cursor"]
            if cursor is None:
                return items, pages
            self.assertTrue(b["items"], "page %d is empty but next_cursor=%r (params %s)"
                            % (pages, cursor, q))
            if pages >= max_pages:
                self.fail("no end after %d pages of %s %s (%d items so far): the cursor loops?"
                          % (pages, path, params, len(items)))


# ---------------------------------------------------------------------------
# Raw sockets (for what http.client will not send)
# ---------------------------------------------------------------------------

RawResult = namedtuple("RawResult", "data closed timed_out error")


def raw_connect(port, timeout=5.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def raw_read(sock, timeout, until_head=True):
    """Read until the peer closes, or (until_head) a complete response head
    arrived, or timeout passes. Never raises for a reset connection."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return RawResult(data, False, True, None)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return RawResult(data, False, True, None)
        except (ConnectionResetError, BrokenPipeError) as e:
            return RawResult(data, True, False, e)
        if not chunk:
            return RawResult(data, True, False, None)
        data += chunk
        if until_head and b"\r\n\r\n" in data:
            return RawResult(data, False, False, None)


def raw_status(data):
    """The status code of the first response line in data, or None."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def raw_headers(data):
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out = {}
    for line in head.split("\r\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip().lower()] = v.strip()
    return out


# ---------------------------------------------------------------------------
# A TCP proxy in front of PostgreSQL (to take "the database" away and back)
# ---------------------------------------------------------------------------

def db_target():
    """Where DATABASE_URL points: ("tcp", host, port) or ("unix", path)."""
    conn = db_connect()
    try:
        host, port = conn.info.host, conn.info.port
    finally:
        conn.close()
    if host.startswith("/"):
        return ("unix", "%s/.s.PGSQL.%d" % (host, port))
    return ("tcp", host, port)


def database_url_via(port):
    """DATABASE_URL with host and port replaced by 127.0.0.1:port."""
    from psycopg2.extensions import parse_dsn
    d = parse_dsn(DATABASE_URL)
    user = d.get("user") or os.environ.get("PGUSER") or "postgres"
    dbname = d.get("dbname") or os.environ.get("PGDATABASE") or user
    auth = urllib.parse.quote(user, safe="")
    password = d.get("password") or os.environ.get("PGPASSWORD")
    if password:
        auth += ":" + urllib.parse.quote(password, safe="")
    return "postgresql://%s@127.0.0.1:%d/%s" % (auth, port, urllib.parse.quote(dbname, safe=""))


class TcpProxy:
    """127.0.0.1:port -> the database. up() listens, down() stops listening
    and cuts every proxied connection (as a database restart would)."""

    def __init__(self, port=None):
        self.port = port or free_port()  # outside the ephemeral range: up() binds it later
        self.target = db_target()
        self._listener = None
        self._running = False
        self._lock = threading.Lock()
        self._socks = []
        self._thread = None

    def _connect_target(self):
        if self.target[0] == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.target[1])
            return s
        return socket.create_connection(self.target[1:], timeout=5)

    def up(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        ls.settimeout(0.1)
        self._listener, self._running = ls, True
        self._thread = threading.Thread(target=self._accept_loop, args=(ls,), daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self, ls):
        while self._running:
            try:
                client, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = self._connect_target()
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self):
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


# ---------------------------------------------------------------------------
# Redis servers (for the cache tests): real redis-server processes
# ---------------------------------------------------------------------------

REDIS_SERVER_BIN = os.environ.get("REDIS_SERVER_BIN", "/usr/bin/redis-server")
REDIS_CLI_BIN = os.environ.get("REDIS_CLI_BIN", "/usr/bin/redis-cli")
REDIS_PORTS = range(31000, 31200)  # below the ephemeral range, like SERVER_PORTS
REDIS_START_TIMEOUT = 10.0  # s, until PING answers
REDIS_STOP_TIMEOUT = 10.0   # s, from SIGTERM to exit

_used_redis_ports = set()


def free_redis_port():
    """A free port for a Redis under test (REDIS_PORTS), cluster bus ports
    included."""
    return _pick_port(REDIS_PORTS, _used_redis_ports)


class RedisError(Exception):
    """An error reply (-ERR ..., -OOM ..., -MOVED ...) from Redis."""


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode("utf-8")
        elif not isinstance(a, (bytes, bytearray)):
            a = str(a).encode("ascii")
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RedisConnection:
    """A minimal blocking RESP2 client (one connection; bounded waits).
    Replies: bytes (bulk/simple strings), int, None, list; an error reply
    raises RedisError unless raise_errors=False (then it is returned)."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise ConnectionError("bad RESP line %r" % line[:100])

    def pipeline(self, commands, raise_errors=True):
        """Sends every command at once; returns the replies in order."""
        self.sock.sendall(b"".join(_resp_encode(c) for c in commands))
        replies = [self._reply() for _ in commands]
        if raise_errors:
            for r in replies:
                if isinstance(r, RedisError):
                    raise r
        return replies

    def call(self, *args, raise_errors=True):
        return self.pipeline([args], raise_errors=raise_errors)[0]


def redis_call(port, *args, timeout=5.0, raise_errors=True):
    """One command on a new connection to 127.0.0.1:port."""
    with RedisConnection(port, timeout=timeout) as c:
        return c.call(*args, raise_errors=raise_errors)


class RedisServer:
    """One redis-server process on 127.0.0.1 (no persistence unless asked:
    `--save '' --appendonly no`), its files in TEST_TMPDIR. It can be
    killed, paused (SIGSTOP), resumed and started again on the same port
    (its dir is kept, so a dump.rdb written by an explicit SAVE is loaded
    again on restart)."""

    _seq = 0

    def __init__(self, port=None, args=(), name="redis", cluster=False):
        RedisServer._seq += 1
        self.name = "%s-%d" % (re.sub(r"[^A-Za-z0-9_.-]", "_", name), RedisServer._seq)
        self.port = port or free_redis_port()
        self.cluster = cluster
        # Redis Cluster's bus port defaults to port + 10000 (> 65535 here):
        # give it its own port from the range.
        self.bus_port = free_redis_port() if cluster else None
        # A fresh directory (an old nodes.conf or dump.rdb must not be loaded).
        self.dir = tempfile.mkdtemp(prefix="redis-%s-%d-" % (self.name, self.port), dir=TEST_TMPDIR)
        self.log_path = os.path.join(self.dir, "redis.log")
        self.extra_args = [str(a) for a in args]
        self.proc = None
        self.paused = False

    def argv(self):
        a = [REDIS_SERVER_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--protected-mode", "no", "--logfile", ""]
        if self.cluster:
            a += ["--cluster-enabled", "yes", "--cluster-config-file", os.path.join(self.dir, "nodes.conf"),
                  "--cluster-port", str(self.bus_port)]
        return a + self.extra_args

    def start(self, timeout=REDIS_START_TIMEOUT):
        """Start and wait for PING. The first start of a server moves to other
        ports if its own were taken meanwhile (another run on this machine);
        a restart keeps them."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except AssertionError:
                first_start = not getattr(self, "_started_once", False)
                if not (first_start and attempt < 2 and "Address already in use" in self.log_tail()):
                    raise
                self.port = free_redis_port()
                if self.cluster:
                    self.bus_port = free_redis_port()
        raise AssertionError("unreachable")

    def _start(self, timeout):
        if not os.access(REDIS_SERVER_BIN, os.X_OK):
            raise AssertionError("%s not found (apt-get install redis-server)" % REDIS_SERVER_BIN)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.dir, preexec_fn=_die_with_parent)
        self.paused = False
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server on port %d exited with code %d at start\n%s"
                                     % (self.port, self.proc.returncode, self.log_tail()))
            try:
                # LOADING (a dump being read) is an error reply: not ready yet.
                if redis_call(self.port, "PING", timeout=1.0) == b"PONG":
                    self._started_once = True
                    return self
            except (OSError, RedisError, ConnectionError) as e:
                last = e
            time.sleep(0.02)
        self.kill()
        raise AssertionError("redis-server on port %d did not answer PING within %.0f s (last: %r)\n%s"
                             % (self.port, timeout, last, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def call(self, *args, timeout=5.0, raise_errors=True):
        return redis_call(self.port, *args, timeout=timeout, raise_errors=raise_errors)

    def connection(self, timeout=5.0):
        return RedisConnection(self.port, timeout=timeout)

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def pause(self):
        """SIGSTOP: the port still accepts connections (in the kernel), but
        nothing is answered."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self):
        """SIGKILL and reap (bounded)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=REDIS_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self.paused = False
        self._close_log()

    def stop(self):
        """SIGTERM (no save: persistence is off), SIGKILL after a bounded
        wait. A paused server is resumed first."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=REDIS_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def restart(self, timeout=REDIS_START_TIMEOUT):
        """Kill (if running) and start again on the same port and dir."""
        self.kill()
        # The port was ours a moment ago: wait until it can be bound again.
        wait_until(lambda: _port_bindable(self.port), 5.0)
        return self.start(timeout=timeout)

    def _close_log(self):
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def log_tail(self, max_chars=4000):
        try:
            with open(self.log_path, "rb") as f:
                return tail(f.read().decode("utf-8", "replace"), max_chars)
        except OSError:
            return ""


def _port_bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class RedisCluster:
    """A Redis Cluster of `masters` masters with one replica each, created
    with `redis-cli --cluster create ... --cluster-replicas 1`; start()
    returns once every node reports cluster_state:ok and agrees on the
    slots. node_timeout_ms is cluster-node-timeout (failure detection)."""

    def __init__(self, masters=3, node_timeout_ms=2000, name="cluster", args=()):
        # No 5 s wait before a replica's first (diskless) sync.
        self.nodes = [RedisServer(name="%s-n%d" % (name, i), cluster=True,
                                  args=["--cluster-node-timeout", str(node_timeout_ms),
                                        "--repl-diskless-sync-delay", "0"] + list(args))
                      for i in range(2 * masters)]

    @property
    def seeds(self):
        return ",".join("127.0.0.1:%d" % n.port for n in self.nodes)

    def start(self, timeout=60.0):
        for n in self.nodes:
            n.start()
        cmd = [REDIS_CLI_BIN, "--cluster", "create"] + ["127.0.0.1:%d" % n.port for n in self.nodes] + \
              ["--cluster-replicas", "1", "--cluster-yes"]
        try:
            out = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("redis-cli --cluster create did not finish within %.0f s\n%s"
                                 % (timeout, (e.output or b"").decode("utf-8", "replace")))
        text = out.stdout.decode("utf-8", "replace")
        if out.returncode != 0:
            raise AssertionError("redis-cli --cluster create failed (exit %d)\n%s" % (out.returncode, text))
        if not self.wait_ok(timeout):
            raise AssertionError("the cluster did not reach cluster_state:ok on every node within %.0f s\n"
                                 "%s\n%s" % (timeout, text, self.describe()))
        if not self.wait_replicas_synced(timeout):
            raise AssertionError("the replicas did not finish their first sync within %.0f s\n%s"
                                 % (timeout, self.describe()))
        return self

    def replicas_synced(self):
        """Every live replica's link to its master is up, no sync running."""
        for n in self.live_nodes():
            try:
                info = n.call("INFO", "replication", timeout=2).decode()
            except (OSError, RedisError, ConnectionError):
                return False
            if "role:slave" in info and ("master_link_status:up" not in info
                                         or "master_sync_in_progress:0" not in info):
                return False
        return True

    def wait_replicas_synced(self, timeout=60.0):
        return wait_until(self.replicas_synced, timeout, interval=0.1)

    def live_nodes(self):
        return [n for n in self.nodes if n.alive() and not n.paused]

    def state_ok(self, nodes=None):
        """Every given (default: live) node says cluster_state:ok, they all
        report the same slot owners, and they agree on every live node's
        role (no node flagged fail, the same master for each replica)."""
        nodes = nodes or self.live_nodes()
        live_ports = {n.port for n in nodes}
        views, roles = set(), set()
        for n in nodes:
            try:
                info = n.call("CLUSTER", "INFO", timeout=2).decode()
                if "cluster_state:ok" not in info:
                    return False
                views.add(tuple(sorted((tuple(e[:2]), e[2][1]) for e in self.slots_of(n))))
                rows = self.cluster_nodes(via=n)
            except (OSError, RedisError, ConnectionError):
                return False
            view = []
            for r in rows:
                if r["port"] not in live_ports:
                    continue
                if r["flags"] & {"fail", "fail?", "handshake", "noaddr"}:
                    return False
                view.append((r["port"], "master" if "master" in r["flags"] else "replica", r["master_id"]))
            roles.add(tuple(sorted(view)))
        return len(views) == 1 and len(roles) == 1

    def wait_ok(self, timeout=60.0, nodes=None):
        return wait_until(lambda: self.state_ok(nodes), timeout, interval=0.1)

    @staticmethod
    def slots_of(node):
        """CLUSTER SLOTS of node: [(lo, hi, (host, port)), ...] (masters)."""
        out = []
        for e in node.call("CLUSTER", "SLOTS", timeout=2):
            out.append((int(e[0]), int(e[1]), (e[2][0].decode(), int(e[2][1]))))
        return out

    def node_by_port(self, port):
        return next(n for n in self.nodes if n.port == port)

    def cluster_nodes(self, via=None):
        """CLUSTER NODES as dicts: id, port, flags (set), master_id, slots."""
        via = via or self.live_nodes()[0]
        rows = []
        for line in via.call("CLUSTER", "NODES", timeout=2).decode().splitlines():
            f = line.split()
            if len(f) < 8:
                continue
            addr = f[1].split("@")[0]
            rows.append({"id": f[0], "port": int(addr.rsplit(":", 1)[1]) if ":" in addr else 0,
                         "flags": set(f[2].split(",")), "master_id": f[3], "slots": f[8:]})
        return rows

    def master_of_key(self, key):
        """The node that serves key's slot now (CLUSTER KEYSLOT + SLOTS)."""
        via = self.live_nodes()[0]
        slot = int(via.call("CLUSTER", "KEYSLOT", key, timeout=2))
        for lo, hi, (_, port) in self.slots_of(via):
            if lo <= slot <= hi:
                return self.node_by_port(port), slot
        raise AssertionError("no node serves slot %d" % slot)

    def replicas_of(self, master):
        rows = self.cluster_nodes()
        mid = next(r["id"] for r in rows if r["port"] == master.port)
        return [self.node_by_port(r["port"]) for r in rows
                if r["master_id"] == mid and "fail" not in r["flags"]]

    def describe(self):
        parts = []
        for n in self.nodes:
            try:
                state = n.call("CLUSTER", "NODES", timeout=1).decode() if n.alive() and not n.paused else "(down)"
            except (OSError, RedisError, ConnectionError) as e:
                state = repr(e)
            parts.append("node %d:\n%s" % (n.port, state))
        return "\n".join(parts)

    def stop(self):
        for n in self.nodes:
            n.stop()

def parallel(fns, timeout=120):
    """Runs the callables in threads released together by a barrier;
    returns their results (an exception counts as a result)."""
    barrier = threading.Barrier(len(fns))
    results = [None] * len(fns)

    def run(i):
        try:
            barrier.wait(30)
            results[i] = fns[i]()
        except Exception as e:  # reported by the caller
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise AssertionError("%d of %d concurrent requests did not finish within %d s"
                             % (sum(t.is_alive() for t in threads), len(threads), timeout))
    return results
