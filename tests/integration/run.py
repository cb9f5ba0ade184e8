#!/usr/bin/env python3
"""Runs the integration suite: the real marketd binary against PostgreSQL.

    python3 tests/integration/run.py [NAME ...]

NAME selects tests as unittest names relative to this folder
("test_http", "test_products.ProductListTests",
"test_http.HttpTests.test_unknown_route_404"); without NAME every
tests/integration/test_*.py runs. Environment: MARKETD_BIN (the server
binary, an ASan+UBSan build), DATABASE_URL (an empty, migrated database: its
tables are TRUNCATEd), TEST_TMPDIR (scratch: server logs). Optional:
MARKETD_SERVE_ARGS (argv that makes the binary serve, default "serve"),
IT_TEST_TIMEOUT (seconds one test may take before the run is aborted with a
traceback; default 300).

Prints per-test results, the failures with the server output captured while
each failing test ran, and as the last line
`integration: N passed, M failed`. Exits 1 if anything failed.
"""

import faulthandler
import os
import re
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def _ensure_psycopg2():
    try:
        import psycopg2  # noqa: F401
        return
    except ImportError:
        pass
    # Debian's python3-psycopg2 lives in the system interpreter's
    # dist-packages; a python3 earlier on PATH (pyenv, venv) does not see it.
    system = "/usr/bin/python3"
    if (os.path.exists(system) and not os.environ.get("MARKETD_IT_REEXEC")
            and os.path.realpath(sys.executable) != os.path.realpath(system)):
        os.environ["MARKETD_IT_REEXEC"] = "1"
        os.execv(system, [system] + sys.argv)
    print("integration: psycopg2 is missing (apt-get install python3-psycopg2)")
    print("integration: 0 passed, 1 failed")
    sys.exit(1)


class Result(unittest.TextTestResult):
    """Counts tests, not events: a test with failing subtests counts once,
    a failing setUpClass counts every test of its class as failed, a
    failing tearDownClass (e.g. the server leaked at exit) counts once."""

    def __init__(self, *args, class_sizes=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_sizes = class_sizes or {}
        self.passed_ids = set()
        self.failed_ids = set()
        self.skipped_ids = set()
        self.contexts = []  # (test id, server output)
        self._started = {}

    def startTest(self, test):
        self._started[test.id()] = time.monotonic()
        timeout = float(os.environ.get("IT_TEST_TIMEOUT", "300"))
        faulthandler.dump_traceback_later(timeout, exit=True)
        super().startTest(test)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)

    def _record_failure(self, test):
        tid = test.id() if hasattr(test, "id") else str(test)
        desc = getattr(test, "description", None)
        if isinstance(test, unittest.suite._ErrorHolder) and desc:
            m = re.match(r"(setUpClass|tearDownClass|setUpModule|tearDownModule) \((.+)\)$", desc)
            if m and m.group(1) == "setUpClass":
                size = self.class_sizes.get(m.group(2), 1)
                for i in range(size):
                    self.failed_ids.add("%s#%d" % (m.group(2), i))
                return
            self.failed_ids.add(desc)
            return
        self.failed_ids.add(tid)
        self.passed_ids.discard(tid)
        ctx = getattr(test, "failure_context", None)
        if callable(ctx):
            try:
                text = ctx()
            except Exception as e:  # the report must not break the run
                text = "(no server output: %r)" % (e,)
            if text:
                self.contexts.append((tid, text))

    def addSuccess(self, test):
        super().addSuccess(test)
        if test.id() not in self.failed_ids:
            self.passed_ids.add(test.id())

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record_failure(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._record_failure(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._record_failure(test)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_ids.add(test.id())

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.passed_ids.add(test.id())

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.failed_ids.add(test.id())

    def printErrors(self):
        super().printErrors()
        for tid, text in self.contexts:
            self.stream.writeln(self.separator1)
            self.stream.writeln("SERVER OUTPUT during %s" % tid)
            self.stream.writeln(self.separator2)
            self.stream.writeln(text)
        self.stream.flush()


def class_sizes(suite):
    sizes = {}

    def visit(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                visit(t)
            elif isinstance(t, unittest.TestCase):
                key = "%s.%s" % (type(t).__module__, type(t).__qualname__)
                sizes[key] = sizes.get(key, 0) + 1
    visit(suite)
    return sizes


def main(argv):
    _ensure_psycopg2()
    sys.path.insert(0, HERE)
    import harness  # noqa: E402  (after sys.path and psycopg2 are sorted out)

    loader = unittest.TestLoader()
    # `make test T=<pattern>`: only tests whose id contains the pattern (as
    # pytest -k / unittest -k); classes left without tests start nothing.
    pattern = os.environ.get("TEST_PATTERN", "")
    if pattern:
        loader.testNamePatterns = ["*%s*" % pattern]
    if argv:
        suite = unittest.TestSuite(loader.loadTestsFromName(name) for name in argv)
    else:
        suite = loader.discover(start_dir=HERE, pattern="test_*.py", top_level_dir=HERE)

    # An import error in a module shows up as a failing _FailedTest: counted.
    sizes = class_sizes(suite)
    total = sum(sizes.values())
    print("integration: %d tests; MARKETD_BIN=%s; DATABASE_URL=%s; TEST_TMPDIR=%s"
          % (total, harness.MARKETD_BIN or "(unset)",
             re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", harness.DATABASE_URL) or "(unset)",
             harness.TEST_TMPDIR), flush=True)

    runner = unittest.TextTestRunner(
        stream=sys.stdout, verbosity=2,
        resultclass=lambda *a, **k: Result(*a, class_sizes=sizes, **k))
    result = runner.run(suite)
    passed = len(result.passed_ids - result.failed_ids)
    failed = len(result.failed_ids)
    line = "integration: %d passed, %d failed" % (passed, failed)
    if result.skipped_ids:
        line += ", %d skipped" % len(result.skipped_ids)
    sys.stdout.flush()
    print(line, flush=True)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
