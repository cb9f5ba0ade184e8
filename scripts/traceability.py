#!/usr/bin/env python3
"""Traceability: which tests check which rule (docs/traceability.md).

    python3 scripts/traceability.py                 write docs/traceability.md
    python3 scripts/traceability.py --output FILE   write it elsewhere (- for stdout)
    python3 scripts/traceability.py --check-spec [--spec DIR]
                                                    compare docs/traceability-rules.tsv with
                                                    shared/spec (default ../shared/spec)

The rules come from docs/traceability-rules.tsv (the repo's copy of the rule
list: requirements S1-S18, B1-B10, every api.md convention, rule and
endpoint), the evidence from a static scan of tests/ (nothing is run):

  cited    the test's own docstring or comments name the rule: a requirement
           ID (S9, B3), a rule id (conv-errors) or an endpoint ("GET /healthz")
  request  (integration tests) the test method itself sends that method to
           that path: a path literal ("/api/v1/orders/%d/cancel") in a call
           with a method literal or a verb-named helper (self.get), or beside
           a method literal in a tuple
  keyword  the rule's keyword regex (last column of the TSV, case-sensitive
           unless it says (?i:...)) matches the test's own name, docstring or
           comments
  helper   a helper of the same module (self.place(), a module function,
           transitively) sends the request
  class    the test's class docstring (or the comments above it) cites the rule
  file     the module docstring / the file's header comment cites the rule

Python standard library only; the output is deterministic (sorted), so that
tests/traceability/check.sh can compare it with the committed file.
"""

import argparse
import ast
import io
import os
import re
import sys
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES_TSV = os.path.join("docs", "traceability-rules.tsv")
OUTPUT = os.path.join("docs", "traceability.md")
DEFAULT_SPEC = os.path.join(ROOT, "..", "shared", "spec")

METHODS = ("GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS")
# Calls whose name says the HTTP method (harness: self.get/self.GET; test helpers).
VERB_CALLS = {"get": "GET", "GET": "GET", "head": "HEAD", "post": "POST", "POST": "POST",
              "patch": "PATCH", "PATCH": "PATCH", "delete": "DELETE", "DELETE": "DELETE",
              "put": "PUT", "PUT": "PUT"}
OPS_PATHS = ("/healthz", "/readyz", "/metrics")

# Strength of the evidence, strongest first (the order of a rule's test list).
KINDS = ("cited", "request", "keyword", "helper", "class", "file")

REQ_RE = re.compile(r"(?<![\w-])([SB])(\d{1,2})(?![\w-])")
RULE_ID_RE = re.compile(r"(?<![\w-])((?:conv|api)-[a-z0-9]+(?:-[a-z0-9]+)*)")
ENDPOINT_RE = re.compile(r"\b(GET|POST|PATCH|DELETE|PUT) (/[A-Za-z0-9_{}%/.-]+)")
MAX_NAMES = 6


# --- rules ------------------------------------------------------------------------------------

class Rule:
    def __init__(self, rid, source, anchor, text, keywords):
        self.id = rid
        self.source = source
        self.anchor = anchor
        self.text = text
        self.keywords = None if keywords in ("", "-") else re.compile(keywords)
        if re.fullmatch(r"[SB]\d{1,2}", rid):
            self.table = "requirements"
        elif rid.split(" ", 1)[0] in METHODS:
            self.table = "endpoints"
        else:
            self.table = "conventions"
        self.segments = rid.split(" ", 1)[1].strip("/").split("/") if self.table == "endpoints" else None
        self.method = rid.split(" ", 1)[0] if self.table == "endpoints" else None


def load_rules(root):
    rules = []
    with open(os.path.join(root, RULES_TSV), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 5:
                raise SystemExit("%s:%d: expected 5 tab-separated columns, got %d" % (RULES_TSV, n, len(cols)))
            rules.append(Rule(*cols))
    ids = [r.id for r in rules]
    dup = sorted(set(i for i in ids if ids.count(i) > 1))
    if dup:
        raise SystemExit("%s: duplicate rule ids: %s" % (RULES_TSV, ", ".join(dup)))
    return rules


def valid_req(letter, number):
    n = int(number)
    return 1 <= n <= (18 if letter == "S" else 10)


def normalize_path(path):
    """'/api/v1/orders/%d/cancel?x=1' -> '/api/v1/orders/{id}/cancel'; None if not an API path."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = re.sub(r"%[-#0-9.]*[sdrifx]", "{id}", path)
    path = re.sub(r"\{[^}]*\}", "{id}", path)
    path = path.rstrip("/") or "/"
    if path.startswith("/api/v1/") or path in OPS_PATHS:
        return path
    return None


def match_endpoint(rules, method, path):
    """The endpoint rule for METHOD path (a literal segment beats {id}), or None."""
    segs = path.strip("/").split("/")
    best, best_score = None, -1
    for r in rules:
        if r.table != "endpoints" or r.method != method or len(r.segments) != len(segs):
            continue
        score = 0
        for want, got in zip(r.segments, segs):
            if want.startswith("{"):
                continue
            if want != got:
                break
            score += 1
        else:
            if score > best_score:
                best, best_score = r, score
    return best


def citations(rules, text):
    """Rule ids that `text` names explicitly."""
    by_id = {r.id: r for r in rules}
    found = set()
    for m in REQ_RE.finditer(text):
        if valid_req(m.group(1), m.group(2)):
            found.add(m.group(1) + str(int(m.group(2))))
    for m in RULE_ID_RE.finditer(text):
        if m.group(1) in by_id:
            found.add(m.group(1))
    for m in ENDPOINT_RE.finditer(text):
        path = normalize_path(m.group(2).rstrip("."))
        r = match_endpoint(rules, m.group(1), path) if path else None
        if r:
            found.add(r.id)
    return found & set(by_id)


# --- tests --------------------------------------------------------------------------------------

class Test:
    def __init__(self, name, suite, path):
        self.name = name
        self.suite = suite
        self.path = path
        self.own_text = ""       # docstring and comments of the test itself
        self.cite_text = ""      # more of its own text, for citations only (policy.cjs messages)
        self.class_text = ""
        self.file_text = ""
        self.requests = set()    # (method, path) the test sends itself
        self.helper_requests = set()


# Python: integration tests --------------------------------------------------------------

def py_comments(src):
    """{line number: comment text} of every # comment."""
    out = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return out


def comments_above(node, lines, comments):
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    n, out = first - 1, []
    while n >= 1 and n in comments and lines[n - 1].lstrip().startswith("#"):
        out.append(comments[n])
        n -= 1
    return "\n".join(reversed(out))


def comments_within(node, comments):
    return "\n".join(comments[n] for n in sorted(comments) if node.lineno <= n <= node.end_lineno)


def path_of(expr):
    """The API path an expression builds, normalized, or None."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return normalize_path(expr.value) if expr.value.startswith("/") else None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):
        return path_of(expr.left)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left = expr.left
        if isinstance(left, ast.Constant) and isinstance(left.value, str) and left.value.startswith("/"):
            right = expr.right
            tail = right.value if isinstance(right, ast.Constant) and isinstance(right.value, str) else "{id}"
            return normalize_path(left.value + tail)
        return None
    if isinstance(expr, ast.JoinedStr):
        parts = []
        for v in expr.values:
            parts.append(v.value if isinstance(v, ast.Constant) else "{id}")
        s = "".join(parts)
        return normalize_path(s) if s.startswith("/") else None
    if isinstance(expr, ast.Call):
        f = expr.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        if name == "format" and isinstance(f, ast.Attribute):
            return path_of(f.value)
        if name == "path_with_query" and expr.args:
            return path_of(expr.args[0])
    return None


def method_literal(expr):
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str) and expr.value in METHODS:
        return expr.value
    return None


def call_name(call):
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


class PyFunc:
    """What one function body does: requests with a known method and path,
    bare paths, methods sent to a computed path, and the helpers it calls."""

    def __init__(self, node):
        self.requests = set()
        self.bare = set()
        self.var_methods = set()
        self.calls = set()  # ("self", name) or ("module", name)
        used = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                name = call_name(sub)
                f = sub.func
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ("self", "cls"):
                    self.calls.add(("self", name))
                elif isinstance(f, ast.Name):
                    self.calls.add(("module", name))
                args = list(sub.args) + [k.value for k in sub.keywords]
                method = None
                for a in args[:4]:
                    method = method_literal(a)
                    if method:
                        break
                if method is None:
                    method = VERB_CALLS.get(name)
                if method is None:
                    continue
                paths = [(a, path_of(a)) for a in args]
                paths = [(a, p) for a, p in paths if p]
                for a, p in paths:
                    self.requests.add((method, p))
                    used.add(id(a))
                if not paths:
                    self.var_methods.add(method)
            elif isinstance(sub, (ast.Tuple, ast.List)):
                methods = [m for m in map(method_literal, sub.elts) if m]
                if len(methods) == 1:
                    for a in sub.elts:
                        p = path_of(a)
                        if p:
                            self.requests.add((methods[0], p))
                            used.add(id(a))
        for sub in ast.walk(node):
            if id(sub) in used:
                continue
            if isinstance(sub, (ast.Constant, ast.BinOp, ast.JoinedStr)):
                p = path_of(sub)
                if p:
                    self.bare.add(p)


def scan_python(root, rules):
    """tests/integration/test_*.py: one Test per test method (module.Class.method)."""
    idir = os.path.join(root, "tests", "integration")
    modules = {}
    for fn in sorted(os.listdir(idir)):
        if fn.startswith("test_") and fn.endswith(".py"):
            path = os.path.join(idir, fn)
            with open(path, encoding="utf-8") as f:
                src = f.read()
            modules[fn[:-3]] = (path, src, ast.parse(src, filename=path))
    # Every class and module function of every test module, for helper lookup
    # (a class may derive from one of another test module: test_upkeep.OrderCase).
    classes = {}
    for mod, (_, _, tree) in modules.items():
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, (mod, node))
    funcs = {}

    def analyse(key, node):
        if key not in funcs:
            funcs[key] = PyFunc(node)
        return funcs[key]

    def method_lookup(cls_node, name, seen=None):
        seen = seen or set()
        if cls_node.name in seen:
            return None
        seen.add(cls_node.name)
        for item in cls_node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                return (cls_node.name, name), item
        for base in cls_node.bases:
            bname = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if bname in classes:
                found = method_lookup(classes[bname][1], name, seen)
                if found:
                    return found
        return None

    def module_func(mod, name):
        for node in modules[mod][2].body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return (mod, name), node
        return None

    def closure(mod, cls_node, key, node):
        """Requests and computed-path methods of the helpers `node` calls, transitively."""
        requests, var_methods, seen, todo = set(), set(), {key}, [(mod, cls_node, node)]
        first = True
        while todo:
            m, c, n = todo.pop()
            info = analyse(("%s.%s" % (m, c.name if c else ""), n.name, n.lineno), n)
            if not first:
                requests |= info.requests
                for p in info.bare:
                    for meth in info.var_methods or {"GET"}:
                        requests.add((meth, p))
            var_methods |= info.var_methods
            first = False
            for kind, name in sorted(info.calls):
                found = method_lookup(c, name) if kind == "self" and c is not None else None
                owner = c
                if found is None and kind == "module":
                    found = module_func(m, name)
                    owner = None
                if found is None or found[0] in seen:
                    continue
                seen.add(found[0])
                todo.append((m, owner, found[1]))
        return requests, var_methods

    tests = []
    for mod, (path, src, tree) in sorted(modules.items()):
        lines = src.splitlines()
        comments = py_comments(src)
        file_text = ast.get_docstring(tree) or ""
        for cls in tree.body:
            if not isinstance(cls, ast.ClassDef):
                continue
            class_text = "\n".join([ast.get_docstring(cls) or "", comments_above(cls, lines, comments)])
            for node in cls.body:
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.name.startswith("test"):
                    continue
                t = Test("%s.%s.%s" % (mod, cls.name, node.name), "integration", path)
                t.own_text = "\n".join([node.name, ast.get_docstring(node) or "",
                                        comments_above(node, lines, comments), comments_within(node, comments)])
                t.class_text = class_text
                t.file_text = file_text
                own = analyse(("%s.%s" % (mod, cls.name), node.name, node.lineno), node)
                helper_requests, helper_vars = closure(mod, cls, (cls.name, node.name), node)
                t.requests = set(own.requests)
                for p in own.bare:
                    for meth in (own.var_methods | helper_vars) or {"GET"}:
                        t.requests.add((meth, p))
                t.helper_requests = helper_requests - t.requests
                tests.append(t)
    return tests


# C, shell and JavaScript: comments -------------------------------------------------------

def c_comments(src):
    """[(first line, last line, text)] of the C comments of src (strings skipped)."""
    out, i, n, line = [], 0, len(src), 1
    while i < n:
        ch = src[i]
        if ch == "\n":
            line += 1
            i += 1
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            body = src[i + 2:j - 2]
            text = "\n".join(re.sub(r"^\s*\*?\s?", "", ln) for ln in body.split("\n"))
            out.append((line, line + body.count("\n"), text))
            line += src.count("\n", i, j)
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append((line, line, src[i + 2:j].strip()))
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and src[j] != ch and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            i = j + 1
        else:
            i += 1
    return out


def header_comment(comments):
    return comments[0][2] if comments and comments[0][0] <= 3 else ""


def scan_c_functions(root, rel, suite, name_prefix):
    """One Test per `void test_*(` function of a C file."""
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        src = f.read()
    lines = src.split("\n")
    comments = c_comments(src)
    file_text = header_comment(comments)
    tests = []
    for idx, ln in enumerate(lines):
        m = re.match(r"^(?:static\s+)?void\s+(test_\w+)\s*\([^;]*$", ln)
        if not m:
            continue
        start = idx + 1
        end = start
        while end < len(lines) and lines[end - 1] != "}":
            end += 1
        above, want = [], start - 1
        for c in reversed(comments):
            if c[1] == want:
                above.append(c[2])
                want = c[0] - 1
            elif c[1] < want:
                break
        within = [c[2] for c in comments if start <= c[0] <= end]
        t = Test("%s:%s" % (name_prefix, m.group(1)), suite, path)
        t.own_text = "\n".join([m.group(1)] + list(reversed(above)) + within)
        t.file_text = file_text
        tests.append(t)
    return tests


def scan_whole_file(root, rel, suite, name, line_comment=None):
    """One Test for a whole file (a fuzz target, a check script): all its comments are its own."""
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        src = f.read()
    t = Test(name, suite, path)
    if line_comment:
        texts = [ln.strip()[len(line_comment):] for ln in src.split("\n") if ln.strip().startswith(line_comment)]
    else:
        texts = [c[2] for c in c_comments(src)]
    t.own_text = "\n".join([name] + texts)
    return t


def shell_functions(lines):
    """{function name: (comments above it, comments inside it)} of a shell script."""
    out = {}
    for idx, ln in enumerate(lines):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\(\)\s*\{", ln)
        if not m:
            continue
        above, j = [], idx - 1
        while j >= 0 and lines[j].startswith("#"):
            above.append(lines[j].lstrip("#").strip())
            j -= 1
        inside, k = [], idx + 1
        if not ln.rstrip().endswith("}"):
            while k < len(lines) and lines[k] != "}":
                if lines[k].strip().startswith("#"):
                    inside.append(lines[k].strip().lstrip("#").strip())
                k += 1
        out[m.group(1)] = "\n".join(list(reversed(above)) + inside)
    return out


def scan_deploy(root):
    """tests/deploy/check.sh: one Test per `check "NAME" CMD ...` line."""
    rel = os.path.join("tests", "deploy", "check.sh")
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    funcs = shell_functions(lines)
    head = []
    for ln in lines[1:]:
        if not ln.startswith("#"):
            break
        head.append(ln.lstrip("#").strip())
    bodies = shell_function_bodies(lines)
    policies = policy_functions(root)
    tests, seen = [], set()
    for ln in lines:
        m = re.match(r'^\s*check "([^"]+)"\s*(\S*)(.*)$', ln)
        if not m or m.group(1) in seen:
            continue
        seen.add(m.group(1))
        t = Test('deploy/check.sh "%s"' % m.group(1), "checks", path)
        t.own_text = "\n".join([m.group(1), funcs.get(m.group(2), "")])
        t.file_text = "\n".join(head)
        # `policy SUB` (tests/deploy/lib/policy.cjs), here or in the check's
        # function: the IDs its messages and comments cite are the check's.
        command = m.group(2) + m.group(3) + "\n" + bodies.get(m.group(2), "")
        for sub in re.findall(r"\bpolicy\s+([\w-]+)", command):
            t.cite_text += "\n" + policies.get(sub, "")
        tests.append(t)
    return tests


def shell_function_bodies(lines):
    """{function name: its body} of a shell script."""
    out = {}
    for idx, ln in enumerate(lines):
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\(\)\s*\{(.*)$", ln)
        if not m:
            continue
        body, k = [m.group(2)], idx + 1
        if not ln.rstrip().endswith("}"):
            while k < len(lines) and lines[k] != "}":
                body.append(lines[k])
                k += 1
        out[m.group(1)] = "\n".join(body)
    return out


def policy_functions(root):
    """{policy.cjs subcommand: the text of the function it runs}."""
    path = os.path.join(root, "tests", "deploy", "lib", "policy.cjs")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    funcs, name = {}, None
    for ln in lines:
        m = re.match(r"^function (\w+)\(", ln)
        if m:
            name = m.group(1)
            funcs[name] = []
        if name:
            funcs[name].append(ln)
            if ln == "}":
                name = None
    out = {}
    for ln in lines:
        m = re.match(r'^\s*"?([\w-]+)"?:\s*\(\)\s*=>\s*(\w+)\(', ln)
        if m and m.group(2) in funcs:
            out[m.group(1)] = "\n".join(funcs[m.group(2)])
    return out


def scan_docs(root):
    """tests/docs/check.sh: one Test per `# --- NAME ---` section."""
    rel = os.path.join("tests", "docs", "check.sh")
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    head = {}
    for ln in lines[1:]:
        if not ln.startswith("#"):
            break
        m = re.match(r"^#\s{2,}(\w+)\s{2,}(.*)$", ln)
        if m:
            head[m.group(1)] = m.group(2)
    tests, current = [], None
    for ln in lines:
        m = re.match(r"^# --- (\w+) -+$", ln)
        if m:
            current = Test('docs/check.sh "%s"' % m.group(1), "checks", path)
            current.own_text = "\n".join([m.group(1), head.get(m.group(1), "")])
            tests.append(current)
        elif current is not None and ln.strip().startswith("#"):
            current.own_text += "\n" + ln.strip().lstrip("#").strip()
    return tests


def scan_all(root, rules):
    tests = scan_python(root, rules)
    for fn in sorted(os.listdir(os.path.join(root, "tests", "unit"))):
        if fn.startswith("test_") and fn.endswith(".c"):
            tests += scan_c_functions(root, os.path.join("tests", "unit", fn), "unit", fn)
    for fn in sorted(os.listdir(os.path.join(root, "tests", "fuzz"))):
        if fn.startswith("fuzz_") and fn.endswith(".c"):
            tests.append(scan_whole_file(root, os.path.join("tests", "fuzz", fn), "fuzz", fn))
    if os.path.exists(os.path.join(root, "tests", "redis", "redis_driver.c")):
        tests += scan_c_functions(root, os.path.join("tests", "redis", "redis_driver.c"), "redis",
                                  "redis_driver.c")
    if os.path.exists(os.path.join(root, "tests", "deploy", "check.sh")):
        tests += scan_deploy(root)
    if os.path.exists(os.path.join(root, "tests", "docs", "check.sh")):
        tests += scan_docs(root)
    for rel, style in (("tests/docs/drift_check.mjs", "//"), ("tests/docs/browser_test.mjs", "//"),
                       ("tests/style/check.sh", "#"), ("tests/traceability/check.sh", "#")):
        if os.path.exists(os.path.join(root, rel)):
            tests.append(scan_whole_file(root, rel, "checks", rel[len("tests/"):], line_comment=style))
    return tests


# --- evidence --------------------------------------------------------------------------------------

def evidence(rules, tests):
    """{rule id: {test name: kind}} with the strongest kind per (rule, test)."""
    ev = {r.id: {} for r in rules}

    def add(rid, test, kind):
        cur = ev[rid].get(test.name)
        if cur is None or KINDS.index(kind) < KINDS.index(cur):
            ev[rid][test.name] = kind

    for t in tests:
        for rid in citations(rules, t.own_text + "\n" + t.cite_text):
            add(rid, t, "cited")
        for method, path in sorted(t.requests):
            r = match_endpoint(rules, method, path)
            if r:
                add(r.id, t, "request")
        for r in rules:
            if r.keywords and r.keywords.search(t.own_text):
                add(r.id, t, "keyword")
        for method, path in sorted(t.helper_requests):
            r = match_endpoint(rules, method, path)
            if r:
                add(r.id, t, "helper")
        for rid in citations(rules, t.class_text):
            add(rid, t, "class")
        for rid in citations(rules, t.file_text):
            add(rid, t, "file")
    return ev


# --- output ----------------------------------------------------------------------------------------

TABLES = (("requirements", "Requirements (shared/spec/requirements.md)"),
          ("conventions", "api.md: conventions and section rules"),
          ("endpoints", "api.md: endpoints"))

SUITES = (("integration", "integration"), ("unit", "unit"), ("fuzz", "fuzz"), ("redis", "redis"),
          ("checks", "docs/deploy/style checks"))


def cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def render(rules, tests, ev):
    out = []
    w = out.append
    covered = [r for r in rules if ev[r.id]]
    traced = set(name for per in ev.values() for name in per)
    w("# Traceability: rules → tests")
    w("")
    w("<!-- Generated by scripts/traceability.py from docs/traceability-rules.tsv and tests/;")
    w("     do not edit: run `make traceability`. tests/traceability/check.sh fails when it is stale. -->")
    w("")
    w("**%d of %d rules have at least one test**: %s." % (
        len(covered), len(rules), "; ".join(
            "%s %d of %d" % (table, sum(1 for r in rules if r.table == table and ev[r.id]),
                             sum(1 for r in rules if r.table == table)) for table, _ in TABLES)))
    missing = [r.id for r in rules if not ev[r.id]]
    w("")
    w("Rules with **NO TEST**: %s." % (", ".join("`%s`" % m for m in missing) if missing else "none"))
    w("")
    w("Tests scanned: %d (%s); %d of them trace to no rule." % (
        len(tests), ", ".join("%s %d" % (label, sum(1 for t in tests if t.suite == suite))
                              for suite, label in SUITES), len([t for t in tests if t.name not in traced])))
    w("")
    w("## How this table is made")
    w("")
    w("`make traceability` runs `scripts/traceability.py`, which reads the rule list from")
    w("`docs/traceability-rules.tsv` and scans `tests/` statically (nothing is run). The rule list")
    w("is the repo's own copy of `shared/spec` (which lives outside the repo): the table is built")
    w("from the repo alone, so `make test` never depends on the spec. When the spec changes,")
    w("`python3 scripts/traceability.py --check-spec` (default spec folder `../shared/spec`) lists")
    w("requirements, conventions and endpoints missing from the TSV, and rows of the TSV the spec")
    w("no longer has; `tests/traceability/check.sh` prints that list as a warning when the spec")
    w("folder exists. Evidence, strongest first (the *Evidence* column counts tests by kind):")
    w("")
    w("- **cited**: the test's own docstring or comments name the rule — a requirement ID (`B6`),")
    w("  a rule id of the tables below (`conv-errors`) or an endpoint (`POST /api/v1/orders`);")
    w("- **request**: an integration test method sends that method to that path itself: a path")
    w("  literal (`\"/api/v1/orders/%d/cancel\"`, f-strings, `+`) in a call with a method literal")
    w("  (`self.call(\"POST\", …)`, `fetch(port, \"GET\", …)`) or a verb-named helper (`self.get`),")
    w("  or beside a method literal in a tuple; a path with neither counts as sent with the methods")
    w("  the test sends to computed paths (GET if none);")
    w("- **keyword**: the rule's keyword regex (TSV, last column) matches the test's name,")
    w("  docstring or comments;")
    w("- **helper**: a function or method of the same module that the test calls (transitively)")
    w("  sends the request (`self.place()` → `POST /api/v1/orders`);")
    w("- **class** / **file**: the class docstring or the module docstring / file header cites it.")
    w("")
    w("Limits: the scan sees literals, not values — a path built elsewhere (a table of paths")
    w("in another module, `\"/api/v1/\" + kind`) or a method held in a variable is missed, and a")
    w("bare path may be credited to a method the test sends only to another path. Keyword and")
    w("class/file evidence says a test is *about* a rule, not that it asserts all of it. Unit,")
    w("fuzz and check scripts count only by citation and keyword. A rule with few *cited* tests")
    w("is the place to add a citation (in a docstring or comment, never by changing a test).")
    w("")
    w("Test names: integration `module.Class.test_method` (`make test T=<name>` runs it), unit")
    w("`file.c:function`, fuzz targets by file, checks by script and check name.")
    for table, title in TABLES:
        w("")
        w("## %s" % title)
        w("")
        w("| Rule | What | Tests | Evidence | Tests (strongest evidence first) |")
        w("|---|---|---:|---|---|")
        for r in rules:
            if r.table != table:
                continue
            per = ev[r.id]
            rid = "`%s`" % r.id
            if not per:
                w("| %s | %s | 0 | | **NO TEST** |" % (rid, cell(r.text)))
                continue
            counts = {k: 0 for k in KINDS}
            for kind in per.values():
                counts[kind] += 1
            how = ", ".join("%d %s" % (counts[k], k) for k in KINDS if counts[k])
            names = sorted(per, key=lambda n: (KINDS.index(per[n]), n))
            shown = ", ".join("`%s`" % cell(n) for n in names[:MAX_NAMES])
            if len(names) > MAX_NAMES:
                shown += ", … %d more" % (len(names) - MAX_NAMES)
            w("| %s | %s | %d | %s | %s |" % (rid, cell(r.text), len(per), how, shown))
    w("")
    return "\n".join(out)


# --- --check-spec ---------------------------------------------------------------------------------

def squash(text):
    return re.sub(r"\s+", " ", text).strip()


def table_cells(line):
    """The cells of a Markdown table row ('|' inside `code` does not split), or []."""
    if not line.startswith("|"):
        return []
    cells, cur, code = [], "", False
    for ch in line.strip()[1:]:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return cells


def spec_gaps(rules, spec_dir):
    """Lines describing where the TSV and the spec differ (empty: in step)."""
    gaps = []
    with open(os.path.join(spec_dir, "requirements.md"), encoding="utf-8") as f:
        req_text = f.read()
    with open(os.path.join(spec_dir, "api.md"), encoding="utf-8") as f:
        api_text = f.read()
    ids = set(r.id for r in rules)
    spec_reqs = re.findall(r"^\|\s*([SB]\d{1,2})\s*\|", req_text, re.M)
    for rid in spec_reqs:
        if rid not in ids:
            gaps.append("requirement %s of requirements.md is not in %s" % (rid, RULES_TSV))
    for r in rules:
        if r.table == "requirements" and r.id not in spec_reqs:
            gaps.append("requirement %s of %s is not in requirements.md" % (r.id, RULES_TSV))
    # Conventions: one bullet each (continuation lines are indented).
    conv = re.search(r"^## Conventions\n(.*?)(?=^## )", api_text, re.M | re.S)
    bullets = []
    if conv:
        for ln in conv.group(1).split("\n"):
            if ln.startswith("- "):
                bullets.append(ln[2:])
            elif ln.startswith("  ") and bullets:
                bullets[-1] += " " + ln.strip()
    anchors = [(r, squash(r.anchor)) for r in rules if r.table == "conventions"]
    for b in bullets:
        b = squash(b)
        if not any(a in b for _, a in anchors):
            gaps.append("api.md convention not in %s: %s" % (RULES_TSV, b[:100]))
    flat = squash(api_text)
    for r, a in anchors:
        if a not in flat:
            gaps.append("%s: its anchor is no longer in api.md: %s" % (r.id, a))
    # Endpoints: table rows "| METHOD | `path`, `path` | ..." and "| GET `/healthz` | ...".
    spec_eps = set()
    for ln in api_text.split("\n"):
        cols = table_cells(ln)
        if len(cols) >= 2 and cols[0] in METHODS:
            for p in re.findall(r"`(/[^`]*)`", cols[1]):
                spec_eps.add("%s %s" % (cols[0], p.split("?", 1)[0]))
            continue
        m = re.match(r"^(GET|POST|PATCH|DELETE|PUT)\s+`(/[^`]*)`$", cols[0]) if cols else None
        if m:
            spec_eps.add("%s %s" % (m.group(1), m.group(2).split("?", 1)[0]))
    for ep in sorted(spec_eps):
        if ep not in ids:
            gaps.append("api.md endpoint not in %s: %s" % (RULES_TSV, ep))
    for r in rules:
        if r.table == "endpoints" and r.id not in spec_eps:
            gaps.append("%s of %s is not an endpoint of api.md" % (r.id, RULES_TSV))
    return gaps


def explain(rules, tests, rid):
    """The evidence of one rule, test by test, with what matched (for tuning the TSV)."""
    rule = next((r for r in rules if r.id == rid), None)
    if rule is None:
        print("traceability: no rule %r" % rid)
        return 1
    per = evidence(rules, tests)[rid]
    by_name = {t.name: t for t in tests}
    for name in sorted(per, key=lambda n: (KINDS.index(per[n]), n)):
        t, kind, why = by_name[name], per[name], ""
        if kind == "keyword":
            m = rule.keywords.search(t.own_text)
            line = t.own_text[t.own_text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0]
            why = "%r in: %s" % (m.group(0), line.strip())
        elif kind in ("request", "helper"):
            reqs = t.requests if kind == "request" else t.helper_requests
            why = ", ".join(sorted("%s %s" % mp for mp in reqs if match_endpoint(rules, *mp) is rule))
        print("%-8s %s  %s" % (kind, name, why))
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", "-o", default=None, help="where to write (default docs/traceability.md; - stdout)")
    ap.add_argument("--check-spec", action="store_true", help="compare the rule list with the spec and exit")
    ap.add_argument("--spec", default=DEFAULT_SPEC, help="the spec folder (default ../shared/spec)")
    ap.add_argument("--explain", metavar="RULE", help="print the tests of RULE with the text that matched")
    args = ap.parse_args(argv)
    rules = load_rules(ROOT)
    if args.check_spec:
        if not os.path.isfile(os.path.join(args.spec, "api.md")):
            print("traceability: no spec at %s (nothing to compare)" % os.path.normpath(args.spec))
            return 0
        gaps = spec_gaps(rules, args.spec)
        for g in gaps:
            print("traceability: %s" % g)
        if gaps:
            print("traceability: %d difference(s) between %s and %s" % (len(gaps), RULES_TSV,
                                                                        os.path.normpath(args.spec)))
            return 1
        print("traceability: %s is in step with %s (%d rules)" % (RULES_TSV, os.path.normpath(args.spec),
                                                                  len(rules)))
        return 0
    tests = scan_all(ROOT, rules)
    if args.explain:
        return explain(rules, tests, args.explain)
    text = render(rules, tests, evidence(rules, tests))
    target = args.output or os.path.join(ROOT, OUTPUT)
    if target == "-":
        sys.stdout.write(text)
    else:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
