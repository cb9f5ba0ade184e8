#!/usr/bin/env python3
"""HTTP checks against the running compose deployment (issue 12 item 5).

Every route of the table once, through nginx's published port; writes
through one backend instance read back through another (each instance is
published on its own 127.0.0.1 port by tests/compose/docker-compose.test.yml);
the edge's own answers (413, 429) as application/problem+json.

Usage: http_check.py --edge http://127.0.0.1:PORT --backend URL [--backend URL ...]
       [--admin-sql CMD]   a shell command reading SQL on stdin (makes a user admin)
Prints one line per check; exits 1 if any failed.
"""
import argparse
import concurrent.futures
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

FAILED = []
PASSED = [0]


def req(base, method, path, body=None, token=None, ctype="application/json", headers=None, timeout=15):
    data = None
    h = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()
        h["Content-Type"] = ctype
    if token:
        h["Authorization"] = "Bearer " + token
    r = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, dict(resp.headers), raw
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def js(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return None


def check(name, ok, detail=""):
    if ok:
        PASSED[0] += 1
        print("PASS  %s" % name)
    else:
        FAILED.append(name)
        print("FAIL  %s %s" % (name, detail))


def expect(name, res, status, problem=False):
    code, hdr, raw = res
    ok = code == status
    ctype = {k.lower(): v for k, v in hdr.items()}.get("content-type", "")
    if problem:
        ok = ok and ctype.startswith("application/problem+json") and (js(raw) or {}).get("status") == status
    check(name, ok, "-> HTTP %s %s %r" % (code, ctype, raw[:200]))
    return js(raw) if ok else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edge", required=True)
    ap.add_argument("--backend", action="append", required=True)
    ap.add_argument("--admin-sql")
    a = ap.parse_args()
    E, B = a.edge, a.backend
    b = lambda i: B[i % len(B)]  # noqa: E731
    run = uuid.uuid4().hex[:8]

    # --- operations ----------------------------------------------------------
    expect("GET /healthz (edge)", req(E, "GET", "/healthz"), 200)
    ready = expect("GET /readyz (edge)", req(E, "GET", "/readyz"), 200)
    if ready is not None:
        print("      readyz: %s" % json.dumps(ready)[:300])
    expect("GET /metrics at the edge is 404", req(E, "GET", "/metrics"), 404)
    code, _, raw = req(B[0], "GET", "/metrics")
    check("GET /metrics (backend 1 directly)", code == 200 and b"marketd_" in raw, "-> %s" % code)
    expect("GET /openapi.yaml (edge)", req(E, "GET", "/openapi.yaml"), 200)
    expect("GET /openapi.json (edge)", req(E, "GET", "/openapi.json"), 200)
    for i, url in enumerate(B):
        expect("GET /readyz backend %d (%s)" % (i + 1, url), req(url, "GET", "/readyz"), 200)

    # --- reference data --------------------------------------------------------
    cities = expect("GET /api/v1/cities", req(E, "GET", "/api/v1/cities"), 200)
    city = (cities or {}).get("items", cities or [{}])
    city = city[0] if isinstance(city, list) and city else {}
    dists = expect("GET /api/v1/cities/{id}/districts", req(E, "GET", "/api/v1/cities/%s/districts" % city.get("id", 1)), 200)
    dist = (dists or {}).get("items", dists or [{}]) if dists is not None else [{}]
    dist = dist[0] if isinstance(dist, list) and dist else {}
    cats = expect("GET /api/v1/categories", req(E, "GET", "/api/v1/categories"), 200)
    cat = (cats or {}).get("items", cats or [{}]) if cats is not None else [{}]
    cat = cat[0] if isinstance(cat, list) and cat else {}

    # --- users: register through backend 1, log in through backend 2 ----------
    pw = "correct horse battery staple"
    seller_email, buyer_email, admin_email = ("%s-%s@example.test" % (k, run) for k in ("seller", "buyer", "admin"))
    for email in (seller_email, buyer_email, admin_email):
        expect("POST /api/v1/auth/register %s (backend 1)" % email.split("-")[0],
               req(b(0), "POST", "/api/v1/auth/register", {"email": email, "password": pw, "name": "Compose Test"}), 201)

    def login(email, i):
        r = expect("POST /api/v1/auth/login %s (backend %d)" % (email.split("-")[0], i % len(B) + 1),
                   req(b(i), "POST", "/api/v1/auth/login", {"email": email, "password": pw}), 200)
        return (r or {}).get("token") or (r or {}).get("access_token")

    st, bt = login(seller_email, 1), login(buyer_email, 2)
    me = expect("GET /api/v1/me (backend 3, token from backend 2)", req(b(2), "GET", "/api/v1/me", token=bt), 200)
    check("  /me is the buyer", (me or {}).get("email") == buyer_email, repr(me)[:200])

    # --- admin routes: 403 for a user, 201 for an admin (flag set in SQL) -----
    expect("POST /api/v1/cities as a user is 403", req(E, "POST", "/api/v1/cities", {"name": "X", "slug": "x-" + run}, token=bt), 403, problem=True)
    at = None
    if a.admin_sql:
        sql = "UPDATE users SET is_admin = true WHERE email = '%s';\n" % admin_email
        rc = subprocess.run(a.admin_sql, shell=True, input=sql.encode(), capture_output=True).returncode
        check("admin flag set in SQL", rc == 0)
        at = login(admin_email, 3)
    if at:
        c = expect("POST /api/v1/cities (admin)", req(E, "POST", "/api/v1/cities", {"name": "Город " + run, "slug": "c-" + run}, token=at), 201)
        if c:
            expect("POST /api/v1/cities/{id}/districts (admin)",
                   req(E, "POST", "/api/v1/cities/%s/districts" % c["id"], {"name": "Район " + run, "slug": "d-" + run}, token=at), 201)
        expect("POST /api/v1/categories (admin)", req(E, "POST", "/api/v1/categories", {"name": "Кат " + run, "slug": "k-" + run}, token=at), 201)

    # --- seller and product: written through one backend, read through another
    s = expect("POST /api/v1/sellers (backend 2)",
               req(b(1), "POST", "/api/v1/sellers", {"name": "Seller " + run, "city_id": city.get("id"), "district_id": dist.get("id")}, token=st), 201)
    sid = (s or {}).get("id")
    got = expect("GET /api/v1/sellers/{id} (backend 4, written on 2)", req(b(3), "GET", "/api/v1/sellers/%s" % sid), 200)
    check("  the seller read back on another instance", (got or {}).get("name") == "Seller " + run, repr(got)[:200])
    expect("PATCH /api/v1/sellers/{id} (edge)", req(E, "PATCH", "/api/v1/sellers/%s" % sid, {"description": "patched " + run}, token=st), 200)
    expect("GET /api/v1/sellers", req(E, "GET", "/api/v1/sellers?limit=5"), 200)
    expect("GET /api/v1/sellers/popular", req(E, "GET", "/api/v1/sellers/popular"), 200)

    p = expect("POST /api/v1/products (backend 3)",
               req(b(2), "POST", "/api/v1/products", {"title": "Product " + run, "price": 19900, "stock": 5, "category_id": cat.get("id")}, token=st), 201)
    pid = (p or {}).get("id")
    got = expect("GET /api/v1/products/{id} (backend 5, written on 3)", req(b(4), "GET", "/api/v1/products/%s" % pid), 200)
    check("  the product read back on another instance", (got or {}).get("title") == "Product " + run, repr(got)[:200])
    expect("PATCH /api/v1/products/{id} (backend 1)", req(b(0), "PATCH", "/api/v1/products/%s" % pid, {"title": "Product2 " + run}, token=st), 200)
    # The cache is shared (Redis Cluster): another instance sees the new title.
    got = expect("GET /api/v1/products/{id} after PATCH (backend 2)", req(b(1), "GET", "/api/v1/products/%s" % pid), 200)
    check("  no stale cache entry on another instance", (got or {}).get("title") == "Product2 " + run, repr(got)[:200])
    expect("GET /api/v1/products", req(E, "GET", "/api/v1/products?limit=5"), 200)

    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d4944415478da63f8cfc0f01f0005000201c9f6ad8f0000000049454e44ae426082")
    img = expect("POST /api/v1/products/{id}/images (edge)", req(E, "POST", "/api/v1/products/%s/images" % pid, png, token=st, ctype="image/png"), 201)
    url = None
    if img:
        imgs = img.get("images") or [img.get("url")]
        url = imgs[-1] if imgs else None
    if url:
        path = "/media/" + url.split("/media/", 1)[-1]
        code, _, raw = req(E, "GET", path)
        check("GET %s: nginx serves the upload from the shared volume" % path, code == 200 and raw == png, "-> %s" % code)

    # --- orders ----------------------------------------------------------------
    key = str(uuid.uuid4())
    body = {"items": [{"product_id": pid, "quantity": 1}]}
    o = expect("POST /api/v1/orders (backend 4, Idempotency-Key)",
               req(b(3), "POST", "/api/v1/orders", body, token=bt, headers={"Idempotency-Key": key}), 201)
    oid = (o or {}).get("id")
    code, _, raw = req(b(4), "POST", "/api/v1/orders", body, token=bt, headers={"Idempotency-Key": key})
    check("POST /api/v1/orders replayed on backend 5: same order", code in (200, 201) and (js(raw) or {}).get("id") == oid, "-> %s %r" % (code, raw[:200]))
    expect("GET /api/v1/orders/{id} (backend 1, written on 4)", req(b(0), "GET", "/api/v1/orders/%s" % oid, token=bt), 200)
    expect("GET /api/v1/orders (edge)", req(E, "GET", "/api/v1/orders", token=bt), 200)
    expect("PATCH /api/v1/orders/{id} confirmed (seller)", req(E, "PATCH", "/api/v1/orders/%s" % oid, {"status": "confirmed"}, token=st), 200)
    expect("POST /api/v1/orders/{id}/cancel (buyer)", req(E, "POST", "/api/v1/orders/%s/cancel" % oid, token=bt), 200)
    expect("DELETE /api/v1/products/{id}", req(E, "DELETE", "/api/v1/products/%s" % pid, token=st), 204)

    # --- the edge's own answers --------------------------------------------------
    big = b"\0" * (6 * 1024 * 1024)
    expect("413 at the edge (6 MiB upload): problem+json",
           req(E, "POST", "/api/v1/products/%s/images" % pid, big, token=st, ctype="image/png"), 413, problem=True)
    # 50 r/s + burst 100 on /api/v1/auth/: 300 quick requests from one address.
    # An empty object is refused by the backend before any password hashing.
    with concurrent.futures.ThreadPoolExecutor(32) as ex:
        res = list(ex.map(lambda _: req(E, "POST", "/api/v1/auth/login", {}), range(300)))
    limited = [r for r in res if r[0] == 429]
    check("429 at the edge (300 quick logins): %d limited" % len(limited), bool(limited))
    if limited:
        expect("  429 is problem+json with Retry-After", limited[0], 429, problem=True)
        check("  Retry-After present", any(k.lower() == "retry-after" for k in limited[0][1]))
    time.sleep(2)

    print("http-checks: %d passed, %d failed" % (PASSED[0], len(FAILED)))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
