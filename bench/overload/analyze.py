#!/usr/bin/env python3
"""Helpers of bench/overload.sh (`make bench-overload`); Python standard library only.

  analyze.py scrape  --url URL --out FILE [--interval 1] [--psql 'psql args...'] [--db NAME]
      Every --interval s until SIGTERM/SIGINT: GET URL (marketd's /metrics) and
      pg_stat_database of --db (via psql, connected to the database "postgres",
      so the scrape's own transactions are not counted); one JSON line per
      scrape: {"t": epoch s, "m": {series: value}, "pg": {...}}.

  analyze.py window  --meta META.json --log PREFIX --scrape FILE --out RESULT.json
      One scenario: per 5-s window (by request start time) and per second,
      from the generator's per-request log and the scrape file.

  analyze.py report  --run RUN.json --results R1.json [R2.json ...] --out REPORT.md
                     --json OUT.json --png-dir DIR [--previous PREV.json]
      The bars of the issue, the Markdown report, the JSON of every window,
      and one gnuplot PNG per scenario.
"""
import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

TIMEOUT_STATUS, CONNECT_ERROR, CLOSED, PROTOCOL_ERROR = 0, 1, 2, 3
ERROR_NAMES = {0: "timeout", 1: "connect error", 2: "closed/reset", 3: "bad response"}


# ----------------------------------------------------------------------------- scrape
SERIES_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if line.startswith("marketd_http_request_duration_seconds"):
            continue  # per-route server latency: large and not used here
        m = SERIES_RE.match(line)
        if not m:
            continue
        try:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        except ValueError:
            pass
    return out


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_sample(pids_file, pg_pidfile, loadgen_path):
    """Cumulative CPU ticks: the machine's busy time (/proc/stat: user, nice,
    system, irq, softirq, steal) and that of our processes by role. Roles
    come from pids (marketd, redis: `pids_file`, "role pid" lines the script
    rewrites on every restart; PostgreSQL: the postmaster of `pg_pidfile` and
    its children; the generator by its path; this scraper and its psql)."""
    out = {}
    try:
        with open("/proc/stat") as f:
            v = f.readline().split()
        out["busy"] = sum(int(v[i]) for i in (1, 2, 3, 6, 7, 8))
    except (OSError, ValueError, IndexError):
        return None
    roles = {}
    try:
        for line in open(pids_file):
            r, _, pid = line.strip().partition(" ")
            if pid.isdigit():
                roles[int(pid)] = r
    except OSError:
        pass
    try:
        pm = int(open(pg_pidfile).readline().strip())
    except (OSError, ValueError):
        pm = -1
    me = os.getpid()
    ticks = {"marketd": 0, "postgres": 0, "redis": 0, "loadgen": 0, "harness": 0}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            with open("/proc/%d/stat" % pid) as f:
                st = f.read()
            rest = st[st.rindex(")") + 2:].split()
            ppid, t = int(rest[1]), int(rest[11]) + int(rest[12])
            if pid == pm:  # + the backends it has reaped (cutime, cstime)
                t += int(rest[13]) + int(rest[14])
        except (OSError, ValueError, IndexError):
            continue
        role = roles.get(pid)
        if role is None:
            if pid == pm or ppid == pm:
                role = "postgres"
            elif pid == me or ppid == me:
                role = "harness"
            elif loadgen_path:
                try:
                    with open("/proc/%d/cmdline" % pid, "rb") as f:
                        if f.read().split(b"\0", 1)[0].decode(errors="replace") == loadgen_path:
                            role = "loadgen"
                except OSError:
                    pass
        if role in ticks:
            ticks[role] += t
    out.update(ticks)
    return out


def cmd_scrape(a):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    psql = a.psql.split() if a.psql else None
    query = ("SELECT xact_commit, xact_rollback, tup_returned, numbackends FROM pg_stat_database "
             "WHERE datname = '%s'" % a.db)
    env = dict(os.environ, PGCONNECT_TIMEOUT="1")

    def pg_sample(res):
        try:
            p = subprocess.run(psql + ["-X", "-tA", "-F", " ", "-d", "postgres", "-c", query],
                               capture_output=True, text=True, timeout=3.0, env=env)
            v = p.stdout.split()
            if p.returncode == 0 and len(v) == 4:
                res["pg"] = {"xact_commit": float(v[0]), "xact_rollback": float(v[1]),
                             "tup_returned": float(v[2]), "numbackends": float(v[3])}
        except (subprocess.TimeoutExpired, OSError):
            pass

    with open(a.out, "a", buffering=1) as f:
        nxt = time.time()
        while not stop.is_set():
            t = time.time()
            rec = {"t": t}
            th = None
            if psql:
                th = threading.Thread(target=pg_sample, args=(rec,))
                th.start()
            try:
                # generous: an overloaded server answers /metrics late, and a
                # late sample is still a sample (the loop then skips ticks)
                with urllib.request.urlopen(a.url, timeout=4.0) as r:
                    rec["m"] = parse_metrics(r.read().decode("utf-8", "replace"))
                rec["metrics_ms"] = round((time.time() - t) * 1000, 1)
            except Exception as e:  # down, slow, refused: recorded as a gap
                rec["err"] = str(e)[:200]
            if a.pids:
                c = cpu_sample(a.pids, a.pg_pidfile, a.loadgen)
                if c:
                    rec["cpu"] = c
            if th:
                th.join()
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            nxt += a.interval
            while nxt < time.time():
                nxt += a.interval
            stop.wait(max(0.0, nxt - time.time()))


# ----------------------------------------------------------------------------- window
def pct(sorted_vals, p):
    """Nearest-rank percentile of a sorted list (None if empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(math.ceil(p / 100.0 * len(sorted_vals))) - 1))
    return sorted_vals[k]


def read_log(prefix):
    recs = []
    d = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    for name in sorted(os.listdir(d)):
        if not (name.startswith(base + ".") and name[len(base) + 1:].isdigit()):
            continue
        with open(os.path.join(d, name)) as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) != 7:
                    continue
                # start_us, latency_us, status, kind, line, value, flags
                recs.append((int(p[0]), int(p[1]), int(p[2]), p[3], int(p[4]), int(p[5]), p[6]))
    recs.sort()
    return recs


class Scrapes:
    """Counters interpolated at any time; gauges as the samples in an interval."""

    def __init__(self, path, t0):
        self.samples = []  # (t_rel, metrics dict or None, pg dict or None)
        if path and os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    pg = dict(r.get("pg") or {})
                    for k, v in (r.get("cpu") or {}).items():
                        pg["cpu_" + k] = v
                    self.samples.append((r["t"] - t0, r.get("m"), pg or None))
        self.samples.sort(key=lambda s: s[0])

    def _points(self, getter):
        pts = []
        for t, m, pg in self.samples:
            v = getter(m, pg)
            if v is not None:
                pts.append((t, v))
        return pts

    @staticmethod
    def _interp(pts, t):
        if not pts or t < pts[0][0] - 1.5 or t > pts[-1][0] + 1.5:
            return None
        if t <= pts[0][0]:
            return pts[0][1]
        if t >= pts[-1][0]:
            return pts[-1][1]
        lo, hi = 0, len(pts) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if pts[mid][0] <= t:
                lo = mid
            else:
                hi = mid
        (t1, v1), (t2, v2) = pts[lo], pts[hi]
        if t2 - t1 > 15:  # a long gap: no honest value
            return None
        return v1 + (v2 - v1) * (t - t1) / (t2 - t1) if t2 > t1 else v1

    def delta(self, getter, a, b):
        pts = self._points(getter)
        va, vb = self._interp(pts, a), self._interp(pts, b)
        if va is None or vb is None:
            return None
        d = vb - va
        return d if d >= 0 else None  # a reset (restart): no value

    def gauge(self, getter, a, b):
        vals = [v for t, v in self._points(getter) if a <= t < b]
        return vals


def metric_sum(prefix, must=None):
    """Sum of every series whose name is `prefix` (any labels), optionally
    whose labels contain all of `must`."""
    def get(m, pg):
        if not m:
            return None
        tot, found = 0.0, False
        for k, v in m.items():
            name = k.split("{", 1)[0]
            if name != prefix:
                continue
            if must and not all(x in k for x in must):
                continue
            tot += v
            found = True
        return tot if found else None
    return get


def pg_field(name):
    return lambda m, pg: pg.get(name) if pg else None


def lag_buckets(sc):
    """Upper bounds of marketd_event_loop_lag_seconds_bucket, if the metric exists."""
    les = set()
    for _, m, _ in sc.samples:
        if not m:
            continue
        for k in m:
            if k.startswith("marketd_event_loop_lag_seconds_bucket"):
                mm = re.search(r'le="([^"]+)"', k)
                if mm:
                    les.add(mm.group(1))
    return sorted(les, key=lambda x: math.inf if x == "+Inf" else float(x))


def lag_window(sc, les, a, b):
    """p99 (bucket upper bound) and mean of the event-loop lag over [a, b)."""
    res = {"p99_ms": None, "mean_ms": None, "max_gauge_ms": None}
    if les:
        cnt = sc.delta(metric_sum("marketd_event_loop_lag_seconds_count"), a, b)
        sm = sc.delta(metric_sum("marketd_event_loop_lag_seconds_sum"), a, b)
        if cnt and sm is not None:
            res["mean_ms"] = sm / cnt * 1000
        cum = []
        for le in les:
            d = sc.delta(metric_sum("marketd_event_loop_lag_seconds_bucket", ['le="%s"' % le]), a, b)
            cum.append((le, d))
        total = cum[-1][1] if cum and cum[-1][1] else (cnt or 0)
        if total:
            for le, d in cum:
                if d is not None and d >= 0.99 * total:
                    res["p99_ms"] = math.inf if le == "+Inf" else float(le) * 1000
                    break
    else:
        g = sc.gauge(metric_sum("marketd_event_loop_lag_seconds"), a, b)
        if g:
            res["max_gauge_ms"] = max(g) * 1000
    return res


def stats_of(recs, span_s):
    lat = sorted(r[1] for r in recs if r[2] >= 100 or r[2] == TIMEOUT_STATUS)
    statuses = {}
    ok = timeouts = errors = 0
    cache = {"H": 0, "M": 0, "B": 0}
    for r in recs:
        s = r[2]
        if 200 <= s < 300:
            ok += 1
        elif s >= 100:
            statuses[str(s)] = statuses.get(str(s), 0) + 1
        elif s == TIMEOUT_STATUS:
            timeouts += 1
        else:
            errors += 1
        for ch in "HMB":
            if ch in r[6]:
                cache[ch] += 1
    n = len(recs)
    ms = lambda v: None if v is None else v / 1000.0
    cn = cache["H"] + cache["M"] + cache["B"]
    return {
        "requests": n, "rps": n / span_s if span_s else None, "ok": ok, "goodput": ok / span_s if span_s else None,
        "p50_ms": ms(pct(lat, 50)), "p95_ms": ms(pct(lat, 95)), "p99_ms": ms(pct(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
        "non2xx": statuses, "non2xx_total": sum(statuses.values()), "timeouts": timeouts, "conn_errors": errors,
        "client_hit_ratio": cache["H"] / cn if cn else None,
    }


def distinct_keys_per_s(recs, a_us, b_us):
    """Mean over the 1-s bins of [a, b) of the distinct keys (mix line, value) started in each."""
    bins = {}
    for r in recs:
        if a_us <= r[0] < b_us:
            bins.setdefault(r[0] // 1000000, set()).add((r[4], r[5]))
    nb = max(1, int(round((b_us - a_us) / 1e6)))
    return sum(len(s) for s in bins.values()) / nb


def cmd_healthprobe(a):
    """GET each URL on a new connection every `interval` s until killed;
    one JSON line per probe: {"t", "name", "ms"} (ms null: no 200 within
    the timeout). The probe is its own process, so a busy marketd loop
    shows up as its latency, not as the probe's."""
    import http.client
    import signal as _signal
    import urllib.parse
    _signal.signal(_signal.SIGTERM, lambda *_: sys.exit(0))
    targets = []
    for spec in a.url:
        name, _, url = spec.partition("=")
        u = urllib.parse.urlsplit(url)
        targets.append((name, u.hostname, u.port, u.path or "/"))
    with open(a.out, "a", buffering=1) as out:
        while True:
            t_next = time.time() + a.interval
            for name, host, port, path in targets:
                t = time.time()
                ms = None
                try:
                    c = http.client.HTTPConnection(host, port, timeout=a.timeout)
                    c.request("GET", path, headers={"Connection": "close"})
                    r = c.getresponse()
                    r.read()
                    if r.status == 200:
                        ms = (time.time() - t) * 1000.0
                    c.close()
                except (OSError, http.client.HTTPException):
                    pass
                out.write(json.dumps({"t": t, "name": name, "ms": ms}) + "\n")
            time.sleep(max(0.0, t_next - time.time()))


def health_summary(path, t0, dur):
    """Per probe name: count, failures, p50/p99/max ms, and how many over 10 ms, over [0, dur)."""
    by = {}
    if not path or not os.path.exists(path):
        return None
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not (0 <= r["t"] - t0 < dur):
            continue
        by.setdefault(r["name"], []).append(r["ms"])
    out = {}
    for name, vals in by.items():
        ok = sorted(v for v in vals if v is not None)
        out[name] = {"count": len(vals), "failed": len(vals) - len(ok), "p50_ms": pct(ok, 50),
                     "p99_ms": pct(ok, 99), "max_ms": ok[-1] if ok else None,
                     "over_10ms": sum(1 for v in ok if v >= 10)}
    return out


def cmd_window(a):
    meta = json.load(open(a.meta))
    t0 = float(open(meta["t0_file"]).read().strip())
    W = float(meta.get("window_s", 5))
    dur = float(meta["duration_s"])
    recs = read_log(a.log)
    sc = Scrapes(a.scrape, t0)
    les = lag_buckets(sc)
    has_lag = bool(les) or any(m and any(k.startswith("marketd_event_loop_lag_seconds") for k in m)
                               for _, m, _ in sc.samples)
    hit, miss, byp = (metric_sum("marketd_cache_requests_total", ['result="%s"' % x]) for x in ("hit", "miss", "bypass"))
    xact = lambda m, pg: (pg["xact_commit"] + pg["xact_rollback"]) if pg and "xact_commit" in pg else None
    ncpu = os.cpu_count() or 1
    poolq = metric_sum("marketd_db_pool_wait_seconds_count")
    waiting = metric_sum("marketd_db_pool_waiting")

    def server_side(a_s, b_s):
        span = b_s - a_s
        h, mi, by = sc.delta(hit, a_s, b_s), sc.delta(miss, a_s, b_s), sc.delta(byp, a_s, b_s)
        tot = (h or 0) + (mi or 0) + (by or 0) if None not in (h, mi, by) else None
        x = sc.delta(xact, a_s, b_s)
        q = sc.delta(poolq, a_s, b_s)
        wg = sc.gauge(waiting, a_s, b_s)
        d = {
            "cache_hit": h, "cache_miss": mi, "cache_bypass": by,
            "hit_ratio": (h / tot) if tot else None,
            "db_xact_per_s": x / span if x is not None else None,
            "db_pool_queries_per_s": q / span if q is not None else None,
            "pool_waiting_max": max(wg) if wg else None,
            "pool_waiting_mean": sum(wg) / len(wg) if wg else None,
            "scrapes": len(sc.gauge(lambda m, pg: 1 if m else None, a_s, b_s)),
        }
        lag = lag_window(sc, les, a_s, b_s) if has_lag else {"p99_ms": None, "mean_ms": None, "max_gauge_ms": None}
        d["lag_p99_ms"], d["lag_mean_ms"], d["lag_max_gauge_ms"] = lag["p99_ms"], lag["mean_ms"], lag["max_gauge_ms"]
        # CPU, % of the whole machine (all cores = 100 %)
        cpu = {}
        busy = sc.delta(pg_field("cpu_busy"), a_s, b_s)
        if busy is not None:
            ours = 0.0
            for role in ("marketd", "postgres", "redis", "loadgen", "harness"):
                v = sc.delta(pg_field("cpu_" + role), a_s, b_s)
                v = max(0.0, v or 0.0)  # a restarted process starts from 0
                ours += v
                cpu[role] = 100.0 * v / CLK_TCK / (span * ncpu)
            cpu["others"] = max(0.0, 100.0 * (busy - ours) / CLK_TCK / (span * ncpu))
            cpu["total"] = 100.0 * busy / CLK_TCK / (span * ncpu)
        d["cpu_pct"] = cpu or None
        return d

    windows = []
    nwin = int(math.ceil(dur / W - 1e-9))
    i = 0
    for k in range(nwin):
        a_s, b_s = k * W, min(dur, (k + 1) * W)
        a_us, b_us = int(a_s * 1e6), int(b_s * 1e6)
        j = i
        while j < len(recs) and recs[j][0] < b_us:
            j += 1
        wrecs = [r for r in recs[i:j] if r[0] >= a_us]
        i = j
        w = {"t_start": a_s, "t_end": b_s}
        w.update(stats_of(wrecs, b_s - a_s))
        w["distinct_keys_per_s"] = distinct_keys_per_s(wrecs, a_us, b_us)
        w.update(server_side(a_s, b_s))
        windows.append(w)

    total = stats_of(recs, dur)
    total.update(server_side(0, dur))
    # CPU over the run: the mean of the windows' (a process restarted in
    # the run would make a single whole-run delta meaningless)
    cw = [w["cpu_pct"] for w in windows if w.get("cpu_pct")]
    if cw:
        total["cpu_pct"] = {k: sum(c[k] for c in cw) / len(cw) for k in cw[0]}
    total["distinct_keys_per_s"] = distinct_keys_per_s(recs, 0, int(dur * 1e6))
    # refused requests (non-2xx answers): statuses, Retry-After, latency
    refused = [r for r in recs if r[2] >= 300 or (100 <= r[2] < 200)]
    rl = sorted(r[1] for r in refused)
    total["refused"] = {
        "count": len(refused),
        "non_503": sum(1 for r in refused if r[2] != 503),
        "without_retry_after": sum(1 for r in refused if "R" not in r[6]),
        "over_50ms": sum(1 for r in refused if r[1] >= 50000),
        "p99_ms": pct(rl, 99) / 1000 if rl else None,
        "max_ms": rl[-1] / 1000 if rl else None,
    }
    # per-kind totals
    kinds = {}
    for r in recs:
        kinds.setdefault(r[3], []).append(r)
    total["by_kind"] = {k: stats_of(v, dur) for k, v in sorted(kinds.items())}
    for v in total["by_kind"].values():
        v.pop("non2xx", None)

    # per-second series for the plots
    series = []
    i = 0
    for s in range(int(math.ceil(dur))):
        a_us, b_us = s * 1000000, (s + 1) * 1000000
        j = i
        while j < len(recs) and recs[j][0] < b_us:
            j += 1
        srecs = recs[i:j]
        i = j
        st = stats_of(srecs, 1.0)
        ss = server_side(s, s + 1) if sc.samples else {}
        series.append({"t": s, "rps": st["rps"], "goodput": st["goodput"], "p50_ms": st["p50_ms"],
                       "p95_ms": st["p95_ms"], "p99_ms": st["p99_ms"], "non2xx": st["non2xx_total"],
                       "timeouts": st["timeouts"] + st["conn_errors"], "hit_ratio": ss.get("hit_ratio"),
                       "pool_waiting": ss.get("pool_waiting_max"), "lag_p99_ms": ss.get("lag_p99_ms"),
                       "db_xact_per_s": ss.get("db_xact_per_s")})

    gen = {}
    if a.gen_out and os.path.exists(a.gen_out):
        for line in open(a.gen_out):
            if line.startswith("LOADGEN "):
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    gen[k] = v
    res = dict(meta)
    res.update({"t0_epoch": t0, "windows": windows, "total": total, "per_second": series, "lag_metric": has_lag,
                "lag_buckets": les, "loadgen": gen, "scrape_samples": len(sc.samples),
                "health": health_summary(a.health, t0, dur)})
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, default=lambda x: None)
    tt = total
    print("[overload] %s: %d requests, %.0f req/s, %.0f 2xx/s, p50 %s / p95 %s / p99 %s ms, non-2xx %s, "
          "timeouts %d, conn errors %d, hit ratio %s" % (
              meta["name"], tt["requests"], tt["rps"], tt["goodput"], f1(tt["p50_ms"]), f1(tt["p95_ms"]),
              f1(tt["p99_ms"]), fmt_status(tt["non2xx"]), tt["timeouts"], tt["conn_errors"], pctf(tt["hit_ratio"])),
          file=sys.stderr)


# ----------------------------------------------------------------------------- report
def f1(v, nd=1):
    if v is None:
        return "–"
    if v == math.inf:
        return "∞"
    if abs(v) >= 100:
        return "%.0f" % v
    return ("%." + str(nd) + "f") % v


def pctf(v):
    return "–" if v is None else "%.1f %%" % (100 * v)


def fmt_status(d):
    if not d:
        return "0"
    return " ".join("%s:%d" % (k, v) for k, v in sorted(d.items()))


def median(vals):
    v = sorted(x for x in vals if x is not None)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def check(name, ok, value):
    return {"bar": name, "pass": ok, "value": value}


def eval_checks(res, by_name, prev):
    """The bars of the issue for one scenario: list of {bar, pass, value}."""
    n = res["name"]
    t = res["total"]
    out = []
    reqs = max(1, t["requests"])
    fails = t["timeouts"] + t["conn_errors"]

    def ref(name):
        if name in by_name:
            return by_name[name], "this run"
        if prev and name in prev:
            return prev[name], "previous run %s" % prev[name].get("stamp", "?")
        return None, None

    def recovery_bars(event_t, informational=False):
        out.append(check("zero socket timeouts / connection errors", fails == 0,
                         "%d timeouts, %d connection errors" % (t["timeouts"], t["conn_errors"])))
        out.append(check("non-2xx < 1 % of requests", t["non2xx_total"] / reqs < 0.01,
                         "%.3f %% (%s of %d)" % (100.0 * t["non2xx_total"] / reqs, fmt_status(t["non2xx"]), reqs)))
        out.append(check("p99 < 500 ms over the run", t["p99_ms"] is not None and t["p99_ms"] < 500,
                         "%s ms" % f1(t["p99_ms"])))
        late = [w for w in res["windows"] if w["t_start"] >= event_t + 10 - 1e-9]
        bad = [w for w in late if w["p99_ms"] is None or w["p99_ms"] >= 100]
        worst = max((w["p99_ms"] or 0 for w in late), default=None)
        out.append(check("p99 < 100 ms in every 5-s window from t = %g s (event + 10 s)" % (event_t + 10),
                         bool(late) and not bad,
                         "%d of %d windows over; worst %s ms; median %s ms" % (
                             len(bad), len(late), f1(worst), f1(median(w["p99_ms"] for w in late)))))
        if informational:
            for c in out:
                c["informational"] = True

    if n == "a":
        out.append(check("p95 < 50 ms", t["p95_ms"] is not None and t["p95_ms"] < 50, "%s ms" % f1(t["p95_ms"])))
        out.append(check("p99 < 100 ms", t["p99_ms"] is not None and t["p99_ms"] < 100, "%s ms" % f1(t["p99_ms"])))
        out.append(check("zero errors (non-2xx, timeouts, connection errors)", t["non2xx_total"] + fails == 0,
                         "non-2xx %s, timeouts %d, connection errors %d" % (
                             fmt_status(t["non2xx"]), t["timeouts"], t["conn_errors"])))
    elif n in ("b", "c", "d", "f"):
        recovery_bars(res.get("event_t", 0))
        if n == "d":
            a_t, b_t = res.get("outage", [10, 40])
            ws = [w for w in res["windows"] if w["t_start"] >= a_t - 1e-9 and w["t_end"] <= b_t + 1e-9]
            bad = [w for w in ws if w["db_xact_per_s"] is None or w["db_xact_per_s"] >= w["distinct_keys_per_s"]]
            desc = "; ".join("%g–%g s: %s vs %s" % (w["t_start"], w["t_end"], f1(w["db_xact_per_s"]),
                                                  f1(w["distinct_keys_per_s"])) for w in ws)
            out.append(check("while Redis is down (%g–%g s): DB transactions/s < distinct keys requested/s, "
                             "every window" % (a_t, b_t), bool(ws) and not bad,
                             "%d of %d windows over — %s" % (len(bad), len(ws), desc)))
            q = [w["db_pool_queries_per_s"] for w in ws]
            if any(x is not None for x in q):
                out[-1]["value"] += " (the backend's own count, marketd_db_pool_wait_seconds_count/s: median %s)" % f1(
                    median(q))
    elif n == "e":
        recovery_bars(res.get("event_t", 15), informational=True)
    elif n == "g":
        flood = res.get("flood_s", 20)
        fw = [w for w in res["windows"] if w["t_end"] <= flood + 1e-9]
        gp = sum(w["ok"] for w in fw) / flood if fw else None
        fres, src = ref("f")
        if fres:
            fg = fres["total"]["goodput"]
            r = ratio(gp, fg)
            out.append(check("goodput during the flood ≥ 90 % of (f)'s", r is not None and r >= 0.9,
                             "%s 2xx/s vs (f) %s 2xx/s (%s): ratio %s" % (f1(gp), f1(fg), src, f1(r, 2))))
        else:
            out.append(check("goodput during the flood ≥ 90 % of (f)'s", None,
                             "%s 2xx/s; (f) not measured (run SCENARIOS including f)" % f1(gp)))
        rf = t["refused"]
        out.append(check("every refused request a 503 with Retry-After, answered in < 50 ms",
                         rf["non_503"] == 0 and rf["without_retry_after"] == 0 and rf["over_50ms"] == 0,
                         "%d refused: %d not 503, %d without Retry-After, %d took ≥ 50 ms (p99 %s ms, max %s ms)" % (
                             rf["count"], rf["non_503"], rf["without_retry_after"], rf["over_50ms"],
                             f1(rf["p99_ms"]), f1(rf["max_ms"]))))
        out.append(check("no timeouts / connection errors", fails == 0,
                         "%d timeouts, %d connection errors" % (t["timeouts"], t["conn_errors"])))
        late = [w for w in res["windows"] if w["t_start"] >= flood + 5 - 1e-9]
        ares, asrc = ref("a")
        bad = [w for w in late if w["p95_ms"] is None or w["p95_ms"] >= 50 or w["p99_ms"] >= 100]
        extra = ""
        if ares:
            r99 = ratio(median(w["p99_ms"] for w in late), median(w["p99_ms"] for w in ares["windows"]))
            extra = "; median window p99 ÷ (a)'s (%s) = %s" % (asrc, f1(r99, 2))
        out.append(check("back to (a)'s latencies (p95 < 50 ms, p99 < 100 ms) in every window from t = %g s "
                         "(5 s after the load drops)" % (flood + 5), bool(late) and not bad,
                         "%d of %d windows over; p99 per window: %s ms%s" % (
                             len(bad), len(late), ", ".join(f1(w["p99_ms"]) for w in late), extra)))
    hs = (res.get("health") or {}).get("health_listener")
    if hs is not None:
        out.append(check("/healthz on HEALTH_LISTEN within 10 ms (probe every 100 ms: all answered, p99 < 10 ms)",
                         hs["failed"] == 0 and hs["p99_ms"] is not None and hs["p99_ms"] < 10,
                         "%d probes, %d failed, p50 %s / p99 %s / max %s ms, %d over 10 ms" % (
                             hs["count"], hs["failed"], f1(hs["p50_ms"], 2), f1(hs["p99_ms"], 2), f1(hs["max_ms"], 2),
                             hs["over_10ms"])))
    hm = (res.get("health") or {}).get("main_port")
    if hm is not None:
        c = check("/healthz on the main port (the workers' loops), for comparison", None,
                  "%d probes, %d failed, p50 %s / p99 %s / max %s ms" % (
                      hm["count"], hm["failed"], f1(hm["p50_ms"], 2), f1(hm["p99_ms"], 2), f1(hm["max_ms"], 2)))
        c["informational"] = True
        out.append(c)
    return out


def write_plot_data(res, path):
    cols = ["t", "rps", "goodput", "non2xx", "timeouts", "p50_ms", "p95_ms", "p99_ms", "hit_ratio",
            "pool_waiting", "lag_p99_ms", "db_xact_per_s"]
    with open(path, "w") as f:
        f.write("# " + " ".join(cols) + "\n")
        for s in res["per_second"]:
            row = []
            for c in cols:
                v = s.get(c)
                if c == "hit_ratio" and v is not None:
                    v = 100 * v
                row.append("NaN" if v is None or v == math.inf else ("%.4g" % v if isinstance(v, float) else str(v)))
            # the second's midpoint
            row[0] = "%.1f" % (s["t"] + 0.5)
            f.write(" ".join(row) + "\n")


def plot(res, datafile, png, gp_script):
    events = ";".join("%g|%s" % (e["t"], e["label"]) for e in res.get("events", []))
    title = "(%s) %s" % (res["name"], res["title"])
    ps = res["per_second"]
    has = lambda k: int(any(s.get(k) is not None and s.get(k) != math.inf for s in ps))
    cmd = ["gnuplot", "-e", "datafile='%s'; outfile='%s'; plottitle='%s'; events='%s'; duration=%g; "
           "hashit=%d; haspool=%d; haslag=%d; hasdb=%d" % (
               datafile, png, title.replace("'", ""), events.replace("'", ""), res["duration_s"],
               has("hit_ratio"), has("pool_waiting"), has("lag_p99_ms"), has("db_xact_per_s")), gp_script]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            print("[overload] gnuplot failed for %s: %s" % (res["name"], p.stderr.strip()[-500:]), file=sys.stderr)
            return False
        return True
    except (OSError, subprocess.TimeoutExpired) as e:
        print("[overload] gnuplot not run for %s: %s" % (res["name"], e), file=sys.stderr)
        return False


def verdict(checks):
    bars = [c for c in checks if not c.get("informational")]
    if not bars:
        return "no bar" if checks else "–"
    if any(c["pass"] is False for c in bars):
        return "**FAIL**"
    if any(c["pass"] is None for c in bars):
        return "incomplete"
    return "PASS"


def mark(c):
    if c.get("informational"):
        return "(info) " + ("met" if c["pass"] else "not met")
    return "–" if c["pass"] is None else ("PASS" if c["pass"] else "**FAIL**")


def cmd_report(a):
    run = json.load(open(a.run))
    results = [json.load(open(p)) for p in a.results]
    results.sort(key=lambda r: r["name"])
    by_name = {r["name"]: r for r in results}
    prev = {}
    if a.previous and os.path.exists(a.previous):
        try:
            pj = json.load(open(a.previous))
            for r in pj.get("scenarios", []):
                r["stamp"] = pj.get("stamp", "?")
                prev[r["name"]] = r
        except ValueError:
            pass
    for r in results:
        r["checks"] = eval_checks(r, by_name, prev)
        r["verdict"] = verdict(r["checks"])
    gp_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot.gp")
    stamp = run["stamp"]
    pngs = {}
    for r in results:
        dat = os.path.join(a.png_dir, "%s-%s.dat" % (run["base"], r["name"]))
        png = os.path.join(a.png_dir, "%s-%s.png" % (run["base"], r["name"]))
        write_plot_data(r, dat)
        if run.get("gnuplot", True) and plot(r, dat, png, gp_script):
            pngs[r["name"]] = os.path.basename(png)
        os.unlink(dat)
    a_res = by_name.get("a") or prev.get("a")

    L = []
    w = L.append
    w("# marketd overload benchmark (%s)" % run["stamp_human"])
    w("")
    w("Produced by:")
    w("")
    w("```sh")
    w(run["command"])
    w("```")
    w("")
    w("Scenario command lines (loadgen: `bench/overload/loadgen.c`, compiled by the script):")
    w("")
    w("```sh")
    for r in results:
        w("# (%s) %s" % (r["name"], r["title"]))
        for c in r.get("commands", []):
            w(c)
    w("```")
    w("")
    w("Machine: %s. Tree: %s. Binary: %s." % (run["machine"], run["tree"], run["binary"]))
    w("Server: `%s`. Redis: `%s`. PostgreSQL: %s." % (run["marketd_env"], run["redis_cmd"], run["pg_settings"]))
    w("Data: %s." % run["data"])
    w("")
    w("The machine is a shared 2-core VM that also runs the load generator, PostgreSQL and Redis; single runs "
      "move by ±10–40 %. Read the medians over windows and the ratios, not one absolute time.")
    w("")
    w("## Summary")
    w("")
    w("| scenario | req/s (median of windows) | 2xx/s (run) | p50 / p95 / p99 over the run (ms) | median window p99 (ms) "
      "| window p99 ÷ (a) | non-2xx | timeouts + conn errors | cache hit (server) | others' CPU % (median) | bars |")
    w("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    a_med = median(x["p99_ms"] for x in a_res["windows"]) if a_res else None
    for r in results:
        t = r["total"]
        medp99 = median(x["p99_ms"] for x in r["windows"])
        oth = median((x.get("cpu_pct") or {}).get("others") for x in r["windows"])
        w("| (%s) %s | %s | %s | %s / %s / %s | %s | %s | %s | %d | %s | %s | %s |" % (
            r["name"], r["title"], f1(median(x["rps"] for x in r["windows"])), f1(t["goodput"]),
            f1(t["p50_ms"]), f1(t["p95_ms"]), f1(t["p99_ms"]), f1(medp99), f1(ratio(medp99, a_med), 2),
            fmt_status(t["non2xx"]), t["timeouts"] + t["conn_errors"], pctf(t["hit_ratio"]),
            "–" if oth is None else "%.0f" % oth, r["verdict"]))
    w("")
    if a_res and "a" not in by_name:
        w("(a) was not run this time: ratios use (a) of %s." % a_res.get("stamp", "a previous run"))
        w("")
    w("## Bars of the issue (\"No metastable collapse\")")
    w("")
    for r in results:
        w("**(%s) %s** — %s" % (r["name"], r["title"], r["verdict"]))
        if r["name"] == "e":
            w("")
            w("The issue sets no bar for (e); the (b)/(c)/(d)/(f) bars are shown for information.")
        w("")
        if not r["checks"]:
            w("- no bar")
        for c in r["checks"]:
            w("- %s — %s: %s" % (mark(c), c["bar"], c["value"]))
        w("")
    for r in results:
        t = r["total"]
        w("## (%s) %s" % (r["name"], r["title"]))
        w("")
        w(r.get("description", ""))
        w("")
        ev = ", ".join("t = %g s: %s" % (e["t"], e["label"]) for e in r.get("events", []))
        lg = r.get("loadgen", {})
        w("Events: %s. Users: %s, connected at t = 0: %s; new connections during the run: %s; "
          "connections closed by the server while idle: %s. Scrapes of /metrics: %d." % (
              ev or "none", lg.get("clients", "?"), lg.get("connected_at_start", "?"),
              int(lg.get("connects", 0) or 0) - int(lg.get("connected_at_start", 0) or 0),
              lg.get("idle_closed_by_server", "?"), r.get("scrape_samples", 0)))
        w("")
        if r["name"] in pngs:
            w("![(%s)](%s)" % (r["name"], pngs[r["name"]]))
            w("")
        w("| window (s) | req/s | 2xx/s | p50 | p95 | p99 (ms) | non-2xx | timeouts | conn errors | cache hit "
          "| pool waiting (max) | loop lag p99 (ms) | DB xact/s | distinct keys/s "
          "| CPU %: marketd / PG / Redis / loadgen / others |")
        w("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for x in r["windows"] + [dict(t, t_start=None)]:
            lag = x.get("lag_p99_ms")
            if lag is None and x.get("lag_max_gauge_ms") is not None:
                lag = x["lag_max_gauge_ms"]
            label = "%g–%g" % (x["t_start"], x["t_end"]) if x["t_start"] is not None else "**run**"
            c = x.get("cpu_pct")
            cpu = " / ".join("%.0f" % c[k] for k in ("marketd", "postgres", "redis", "loadgen", "others")) if c else "–"
            w("| %s | %s | %s | %s | %s | %s | %s | %d | %d | %s | %s | %s | %s | %s | %s |" % (
                label, f1(x["rps"]), f1(x["goodput"]), f1(x["p50_ms"]), f1(x["p95_ms"]), f1(x["p99_ms"]),
                fmt_status(x["non2xx"]), x["timeouts"], x["conn_errors"], pctf(x["hit_ratio"]),
                f1(x["pool_waiting_max"], 0) if x["pool_waiting_max"] is not None else "–",
                f1(lag) if r.get("lag_metric") else "n/a", f1(x["db_xact_per_s"]), f1(x["distinct_keys_per_s"]), cpu))
        w("")
        w("Per kind over the run: " + "; ".join(
            "%s %d req, p99 %s ms, non-2xx %d, client-seen X-Cache hit %s" % (
                k, v["requests"], f1(v["p99_ms"]), v["non2xx_total"], pctf(v["client_hit_ratio"]))
            for k, v in t["by_kind"].items()) + ".")
        if t["refused"]["count"]:
            rf = t["refused"]
            w("")
            w("Refused (non-2xx) answers: %d — %d not 503, %d without Retry-After, %d took ≥ 50 ms; "
              "p99 %s ms, max %s ms." % (rf["count"], rf["non_503"], rf["without_retry_after"], rf["over_50ms"],
                                         f1(rf["p99_ms"]), f1(rf["max_ms"])))
        w("")
    w("## How each number is computed")
    w("")
    for line in METHOD:
        w(line)
    w("")
    w("Run time: %s." % run.get("run_times", "?"))
    w("")
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    with open(a.json, "w") as f:
        json.dump({"stamp": stamp, "run": run, "scenarios": results}, f, indent=1, default=lambda x: None)
    for r in results:
        print("[overload] (%s) %s: %s" % (r["name"], r["title"], r["verdict"]), file=sys.stderr)


METHOD = [
    "- **Load**: `loadgen` (C, epoll, picohttpparser from libh2o) opens one keep-alive HTTP/1.1 connection per "
    "user before t = 0; each user sends a GET, waits for the whole answer, thinks for a uniform random time, "
    "and sends the next (no pipelining). The first request of each user is spread as in steady state, so the "
    "offered rate is flat from t = 0. After the duration no request starts; those in flight finish or time out.",
    "- **Windows** are 5 s of request *start* time (t = 0 when every user is connected). A request belongs to "
    "the window in which it was sent, whatever happened to it later.",
    "- **req/s** = requests started in the window ÷ 5 s; **2xx/s** (goodput) = those answered 2xx ÷ 5 s.",
    "- **p50/p95/p99**: nearest-rank percentiles of the client-observed latency (send → last byte of the "
    "answer, including a reconnect when one was needed) of every answered request and of every timeout "
    "(counted at the timeout); connection errors carry no latency.",
    "- **non-2xx**: HTTP answers outside 200–299, by status. **timeouts**: requests unanswered within the "
    "generator's timeout (the connection is then reset and the user reconnects for its next request). "
    "**conn errors**: connect refused/failed, connection closed or reset before the whole answer, unparsable "
    "answer. The bars' \"timeouts\" are timeouts + conn errors.",
    "- **cache hit**: from marketd's /metrics, `marketd_cache_requests_total{result=\"hit\"}` ÷ (hit + miss + bypass), "
    "counter deltas over the window. /metrics is scraped every second (1 s, not 5, so that the counters can be "
    "interpolated linearly at the window boundaries); a window whose boundaries fall in a gap of > 15 s "
    "shows –. The client-side X-Cache hit share per request kind is given below each table as a cross-check.",
    "- **pool waiting**: `marketd_db_pool_waiting` (a gauge: queries waiting for a pool connection), the largest "
    "sample in the window.",
    "- **loop lag p99**: `marketd_event_loop_lag_seconds` histogram, bucket deltas over the window: the upper "
    "bound of the bucket holding the 99th percentile (n/a while the server does not export the metric; a "
    "gauge of that name is shown as its largest sample).",
    "- **DB xact/s**: the database side, `pg_stat_database.xact_commit + xact_rollback` of the bench database "
    "(pg_stat_statements is not installed), deltas ÷ 5 s, read by psql every second from the database "
    "`postgres` (so the scrape itself is not counted). marketd runs every query in its own implicit "
    "transaction (pipeline mode, one Sync per query), so this is its queries per second. PostgreSQL publishes "
    "these counters with up to ~1 s delay. The backend's own count, `marketd_db_pool_wait_seconds_count` (one "
    "observation per query given a connection), is in the JSON as `db_pool_queries_per_s`.",
    "- **CPU %**: share of the whole machine (all cores = 100 %) over the window, from /proc sampled with "
    "each scrape: marketd, PostgreSQL (postmaster and its children), Redis, the load generator by pid; "
    "*others* = the machine's busy time (incl. steal) minus ours (and minus the scraper): other work on the "
    "box, which makes a window noisy when it is high.",
    "- **distinct keys/s**: per 1-s bin, the number of different resources requested (mix line + id), "
    "averaged over the window's bins — what a perfect per-instance coalescing layer would have to fetch.",
    "- **Bars**: (b)(c)(d)(f) zero timeouts + connection errors, non-2xx < 1 % of requests, p99 < 500 ms over "
    "the run, p99 < 100 ms in every window that starts ≥ 10 s after the event (t = 0 for (b) and (f)); "
    "(d) also DB xact/s < distinct keys/s in every window while Redis is down; (a) p95 < 50 ms, p99 < 100 ms, "
    "no error of any kind; (g) 2xx/s over the 20-s flood ≥ 0.9 × (f)'s 2xx/s over its run (from this run, "
    "else the previous overload-latest.json), every non-2xx answer a 503 with Retry-After in < 50 ms, no "
    "timeouts, and from 5 s after the flood every window back to (a)'s bars (p95 < 50, p99 < 100 ms). (e) has "
    "no bar in the issue: the (b)-style checks are shown for information.",
]


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("scrape")
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--psql", default="")
    p.add_argument("--db", default="marketd_bench")
    p.add_argument("--pids", help="file of 'role pid' lines (marketd, redis)")
    p.add_argument("--pg-pidfile", default="")
    p.add_argument("--loadgen", default="", help="path of the generator binary")
    p = sp.add_parser("window")
    p.add_argument("--meta", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--scrape", required=True)
    p.add_argument("--gen-out")
    p.add_argument("--health", help="the healthprobe's output")
    p.add_argument("--out", required=True)
    p = sp.add_parser("healthprobe")
    p.add_argument("--url", action="append", required=True, help="name=http://host:port/path")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--out", required=True)
    p = sp.add_parser("report")
    p.add_argument("--run", required=True)
    p.add_argument("--results", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--png-dir", required=True)
    p.add_argument("--previous")
    a = ap.parse_args()
    {"scrape": cmd_scrape, "window": cmd_window, "report": cmd_report, "healthprobe": cmd_healthprobe}[a.cmd](a)


if __name__ == "__main__":
    main()
